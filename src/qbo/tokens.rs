//! The token manager: a valid access token per company, refreshing when under 5 minutes of
//! life remain or after a 401, one refresh at a time per company, the rotated refresh token
//! stored (and flushed) before the new access token is used. `invalid_grant` flags the
//! company "reconnect needed" — never a retry loop.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::error::Error;
use super::oauth::OAuthClient;
use crate::locks::{lock, KeyLock, KeyedLocks};
use crate::metrics::{Metrics, RefreshOutcome};
use crate::store::records::{Connection, LogRecord, TokenSet};
use crate::store::Store;
use crate::time::clock::Clock;

/// Refresh when less than this much access-token life remains.
pub const REFRESH_SKEW: chrono::Duration = chrono::Duration::minutes(5);

/// Keep-alive refreshes a grant not refreshed for this long (the rolling window is ~100 days).
pub const KEEP_ALIVE_AFTER: chrono::Duration = chrono::Duration::days(7);

/// Warn this long before the grant's hard expiry.
pub const HARD_EXPIRY_WARNING: chrono::Duration = chrono::Duration::days(30);

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No tokens stored (never connected, or disconnected).
    #[error("company is not connected to QuickBooks")]
    NotConnected,
    /// Intuit refused the refresh token: the customer must reconnect.
    #[error("QuickBooks connection expired or was revoked; the company must reconnect")]
    ReconnectNeeded,
    /// Intuit could not be reached or failed.
    #[error("token refresh failed: {0}")]
    Upstream(Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

/// Hands out access tokens per realm.
pub struct TokenManager {
    store: Arc<Store>,
    oauth: Mutex<OAuthClient>,
    /// One lock per realm (see [`TokenManager::lock_for`]).
    locks: KeyedLocks,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    /// Backoff between transient refresh failures.
    retry_base: Duration,
}

impl TokenManager {
    /// A manager over the store and the Intuit OAuth client.
    pub fn new(
        store: Arc<Store>,
        oauth: OAuthClient,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        TokenManager {
            store,
            oauth: Mutex::new(oauth),
            locks: KeyedLocks::new(),
            clock,
            metrics,
            retry_base: Duration::from_millis(500),
        }
    }

    /// Swaps the OAuth client (config reload).
    pub fn set_oauth(&self, oauth: OAuthClient) {
        *lock(&self.oauth) = oauth;
    }

    /// The OAuth client in use.
    pub fn oauth(&self) -> OAuthClient {
        lock(&self.oauth).clone()
    }

    /// The realm's lock: held across a refresh, and by connect and disconnect, so a refresh
    /// in flight never writes tokens onto a disconnected company or over a new grant.
    pub fn lock_for(&self, realm: &str) -> KeyLock<'_> {
        self.locks.get(realm)
    }

    /// A valid access token, refreshed first when under [`REFRESH_SKEW`] of life remains.
    ///
    /// # Errors
    /// [`TokenError`].
    pub async fn access_token(&self, realm: &str) -> Result<String, TokenError> {
        self.token(realm, None, false).await
    }

    /// After a 401 with `rejected`: refreshes unless another caller already did.
    ///
    /// # Errors
    /// [`TokenError`].
    pub async fn after_unauthorized(
        &self,
        realm: &str,
        rejected: &str,
    ) -> Result<String, TokenError> {
        self.token(realm, Some(rejected), false).await
    }

    /// Refreshes now whatever the access token's age (keep-alive).
    ///
    /// # Errors
    /// [`TokenError`].
    pub async fn force_refresh(&self, realm: &str) -> Result<(), TokenError> {
        self.token(realm, None, true).await.map(|_| ())
    }

    async fn token(
        &self,
        realm: &str,
        rejected: Option<&str>,
        force: bool,
    ) -> Result<String, TokenError> {
        // Held across the refresh so only one refresh per company runs; waiters then read
        // the fresh token from the store.
        let lock = self.lock_for(realm);
        let _guard = lock.lock().await;
        let company = self
            .store
            .company(realm)
            .await?
            .ok_or(TokenError::NotConnected)?;
        match company.connection {
            Connection::Connected if company.is_active => {}
            Connection::ReconnectNeeded { .. } => return Err(TokenError::ReconnectNeeded),
            _ => return Err(TokenError::NotConnected),
        }
        // The store's token lock (on PostgreSQL a row lock every node honours) is held from
        // reading the tokens to storing their rotation: a caller that waited for another
        // node's refresh reads the rotated tokens, finds them fresh and does not refresh.
        let mut refreshed: Option<(TokenSet, Option<String>)> = None;
        let mut flagged: Option<Result<(), crate::store::Error>> = None;
        let now = self.clock.now();
        let outcome = self
            .store
            .with_token_lock(realm, |tokens| {
                let (refreshed, flagged) = (&mut refreshed, &mut flagged);
                async move {
                    let stale = tokens.expiry.access_expires_at - now < REFRESH_SKEW;
                    let was_rejected = rejected.is_some_and(|r| r == tokens.access_token);
                    if !(force || stale || was_rejected) {
                        return Ok(None);
                    }
                    let (new, tid) = match self
                        .refresh_with_retries(
                            &tokens.refresh_token,
                            tokens.expiry.hard_expires_at,
                            now,
                        )
                        .await
                    {
                        Ok(done) => done,
                        Err(e) => {
                            // The grant is dead: flagged while the lock is still held, so
                            // that a reconnect waiting for it (an OAuth callback on another
                            // node storing a new grant) lands after the flag and stands,
                            // instead of being flagged as needing a reconnect itself.
                            if e.is_invalid_grant() {
                                *flagged = Some(self.flag_reconnect(realm, &e).await);
                            }
                            return Err(e);
                        }
                    };
                    *refreshed = Some((tokens, tid));
                    Ok(Some(new))
                }
            })
            .await?;
        match outcome {
            None => Err(TokenError::NotConnected),
            Some(Ok(current)) => match refreshed {
                Some((old, tid)) => self.stored_rotation(realm, &old, current, tid).await,
                None => Ok(current.access_token),
            },
            Some(Err(e)) => self.refresh_failed(realm, e, flagged).await,
        }
    }

    /// One refresh at Intuit, transient failures (network, 5xx) retried twice with backoff.
    /// Stores nothing: the caller holds the realm's lock and stores the rotation first.
    ///
    /// # Errors
    /// Intuit's refusal, or the last transient failure.
    pub async fn refresh_with_retries(
        &self,
        refresh_token: &str,
        previous_hard: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<(TokenSet, Option<String>), Error> {
        let oauth = self.oauth();
        let mut attempt = 0u32;
        loop {
            match oauth.refresh(refresh_token, previous_hard, now).await {
                Err(e) if e.is_retryable() && attempt < 2 => {
                    attempt += 1;
                    tokio::time::sleep(self.retry_base * 2u32.pow(attempt - 1)).await;
                }
                other => return other,
            }
        }
    }

    /// After the store holds `new` (rotated from `old`): the expiries on the company's
    /// current record (compare-and-swap, so a settings change made meanwhile is kept), which
    /// flushes the tokens with it on sled, before anyone uses the new access token.
    async fn stored_rotation(
        &self,
        realm: &str,
        old: &TokenSet,
        new: TokenSet,
        tid: Option<String>,
    ) -> Result<String, TokenError> {
        let expiry = new.expiry.clone();
        let now = self.clock.now();
        self.store
            .update_company(realm, |c| {
                c.tokens = Some(expiry.clone());
                c.updated_at = now;
            })
            .await?;
        self.metrics.refresh(RefreshOutcome::Success);
        let rotated = new.refresh_token != old.refresh_token;
        tracing::info!(
            realm_id = realm,
            rotated,
            intuit_tid = tid.as_deref().unwrap_or(""),
            "Company {realm}: token refreshed"
        );
        Ok(new.access_token)
    }

    /// A refresh Intuit refused (`invalid_grant`: the company needs a reconnect, flagged by
    /// [`Self::flag_reconnect`] under the token lock, `flagged` its outcome) or that failed
    /// for good after its retries.
    async fn refresh_failed(
        &self,
        realm: &str,
        e: Error,
        flagged: Option<Result<(), crate::store::Error>>,
    ) -> Result<String, TokenError> {
        tracing::error!(realm_id = realm, error = %e, "Company {realm}: Token refresh failed");
        match flagged {
            None => {
                self.metrics.refresh(RefreshOutcome::Failure);
                Err(TokenError::Upstream(e))
            }
            Some(flagged) => {
                self.metrics.refresh(RefreshOutcome::InvalidGrant);
                flagged?;
                Err(TokenError::ReconnectNeeded)
            }
        }
    }

    /// Records that the company's grant is dead (Intuit answered `invalid_grant`): a log
    /// record and the company flagged reconnect-needed (committed, and on sled flushed with
    /// it, before the caller answers).
    async fn flag_reconnect(&self, realm: &str, e: &Error) -> Result<(), crate::store::Error> {
        let now = self.clock.now();
        self.store
            .append_log(
                realm,
                &LogRecord::connection(
                    now,
                    false,
                    format!("token refresh failed: {e}; reconnect needed"),
                    vec![],
                ),
            )
            .await?;
        let reason = e.to_string();
        self.store
            .update_company(realm, |c| {
                c.connection = Connection::ReconnectNeeded {
                    since: now,
                    reason: reason.clone(),
                };
                c.updated_at = now;
            })
            .await?;
        Ok(())
    }

    /// One keep-alive pass: refreshes every active, connected company whose grant was not
    /// refreshed for [`KEEP_ALIVE_AFTER`], so no refresh token reaches its rolling expiry even
    /// when no sync uses it. Returns how many were refreshed.
    ///
    /// # Errors
    /// Store failure listing companies.
    pub async fn keep_alive_pass(&self) -> Result<usize, crate::store::Error> {
        let now = self.clock.now();
        // The realms due, one record decoded at a time (not every record at once).
        let mut due = Vec::new();
        self.store
            .each_company(|c| {
                let stale = c.tokens.as_ref().is_some_and(|t| {
                    now - t.refreshed_at > KEEP_ALIVE_AFTER
                        || t.refresh_expires_at - now < chrono::Duration::days(30)
                });
                if c.is_connected() && stale {
                    due.push(c.realm_id);
                }
            })
            .await?;
        let mut n = 0;
        for realm in due {
            if self.force_refresh(&realm).await.is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unused_realm_locks_are_dropped_and_held_ones_kept() {
        let env: std::collections::HashMap<String, String> = Default::default();
        let config = crate::config::Config::load_with_env(None, &env).unwrap();
        let http = crate::qbo::http_client(std::time::Duration::from_secs(1)).unwrap();
        let tm = TokenManager::new(
            Arc::new(Store::open_temporary().unwrap()),
            OAuthClient::new(http, &config.quickbooks),
            Arc::new(crate::time::clock::ManualClock::new(chrono::Utc::now())),
            Arc::new(Metrics::new()),
        );
        let held = tm.lock_for("held");
        for i in 0..10_000 {
            drop(tm.lock_for(&format!("r{i}")));
        }
        assert_eq!(tm.locks.len(), 1, "only the held realm's lock is kept");
        // The held lock is still the one handed out for its realm.
        assert!(held.same_as(&tm.lock_for("held")));
    }
}
