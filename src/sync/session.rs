//! One company sync's connection to QuickBooks ([`Session`]): the access token it holds (one
//! refresh after a 401, shared by every call in flight), the realm's throttle (a 429 pauses
//! every call of the company), bounded retries of 5xx and network failures, the daemon's
//! shutdown, and the `intuit_tid`s seen. The QuickBooks reads and writes of a sync live here:
//! the company's preferences and currencies, the exchange-rate window (paged), single GETs,
//! and the writes of a plan (several at once, a stale SyncToken re-read once).

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use chrono::NaiveDate;
use futures_util::StreamExt;

use super::engine::SyncEngine;
use super::error::{upstream, Error};
use super::plan::{self, Action, Held, Holdings, Step};
use crate::currency::Currency;
use crate::locks::lock;
use crate::metrics::CallKind;
use crate::qbo::model::rate_body;
use crate::qbo::tokens::TokenError;
use crate::qbo::{self, QboClient, Traced, PAGE_SIZE};
use crate::store::records::Company;

/// Retries after 429 within one call.
pub(super) const MAX_THROTTLE_RETRIES: u32 = 3;
/// Retries after 5xx/network within one call.
pub(super) const MAX_TRANSIENT_RETRIES: u32 = 3;
/// Longest wait honoured for a Retry-After.
pub(super) const MAX_RETRY_AFTER: u64 = 120;
/// The routine read: what QuickBooks holds, and whether it covered the whole window (so
/// drift was checked) or only D (the single-GET fallback).
pub(super) struct WindowRead {
    pub(super) holdings: Holdings,
    pub(super) drift_checked: bool,
}

/// What the write loop did, per (date, currency).
#[derive(Debug, Default)]
pub(super) struct Written {
    /// Written (now equal in QuickBooks).
    pub(super) written: Vec<(NaiveDate, Currency)>,
    /// Already equal.
    pub(super) unchanged: Vec<(NaiveDate, Currency)>,
    /// Refused as inactive or home currency.
    pub(super) rejected: Vec<((NaiveDate, Currency), String)>,
    /// Failed otherwise.
    pub(super) failures: Vec<((NaiveDate, Currency), String)>,
    /// A failure that ends the whole sync (the grant is gone).
    pub(super) fatal: Option<Error>,
}

impl Written {
    /// Each failed write as `CUR: reason` (`CUR DATE: reason` for a date other than `date`).
    pub(super) fn failure_lines(&self, date: NaiveDate) -> Vec<String> {
        self.failures
            .iter()
            .map(|((d, c), e)| {
                if *d == date {
                    format!("{c}: {e}")
                } else {
                    format!("{c} {d}: {e}")
                }
            })
            .collect()
    }

    /// The (date, currency) pairs whose QuickBooks rate now equals ours.
    pub(super) fn confirmed(&self) -> HashSet<(NaiveDate, Currency)> {
        self.written
            .iter()
            .chain(self.unchanged.iter())
            .copied()
            .collect()
    }
}

pub(super) enum WriteResult {
    Written,
    AlreadyThere,
    Rejected(String),
    Failed(String),
    Fatal(Error),
}

/// One company sync's connection to QuickBooks: the current access token (replaced after
/// a 401 by one refresh for all writes in flight), the realm's throttle (a 429 pauses every
/// write of the company), and the `intuit_tid`s seen.
pub(super) struct Session<'a> {
    pub(super) engine: &'a SyncEngine,
    pub(super) realm: String,
    pub(super) qbo: QboClient,
    pub(super) token: Mutex<String>,
    pub(super) tids: Mutex<Vec<String>>,
    pub(super) paused_until: Mutex<Option<tokio::time::Instant>>,
    pub(super) pressure: AtomicUsize,
    /// Whether this sync already refreshed the token after a 401.
    pub(super) refreshed: std::sync::atomic::AtomicBool,
    /// The company was disconnected while this sync ran (its tokens are gone): the sync
    /// ends as [`Error::Disconnected`], not as an upstream failure.
    pub(super) disconnected: std::sync::atomic::AtomicBool,
}

impl<'a> Session<'a> {
    pub(super) fn new(engine: &'a SyncEngine, realm: &str, token: String) -> Self {
        Session {
            engine,
            realm: realm.to_string(),
            qbo: engine.qbo(),
            token: Mutex::new(token),
            tids: Mutex::new(Vec::new()),
            paused_until: Mutex::new(None),
            pressure: AtomicUsize::new(0),
            refreshed: std::sync::atomic::AtomicBool::new(false),
            disconnected: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Waits out the realm's 429 pause; `false` when the daemon starts stopping meanwhile
    /// (a pause can outlast the 20 s drain: the sync then records what it has instead).
    pub(super) async fn wait_if_paused(&self) -> bool {
        loop {
            let until = *lock(&self.paused_until);
            match until {
                Some(u) if u > tokio::time::Instant::now() => {
                    if !self.sleep_or_stop(tokio::time::sleep_until(u)).await {
                        return false;
                    }
                }
                _ => return true,
            }
        }
    }

    /// Sleeps unless the daemon starts stopping first (`false` then).
    pub(super) async fn sleep_or_stop(&self, sleep: tokio::time::Sleep) -> bool {
        tokio::select! {
            _ = sleep => true,
            _ = self.engine.shutdown.cancelled() => false,
        }
    }

    pub(super) fn pause(&self, wait: Duration) {
        let until = tokio::time::Instant::now() + wait;
        let mut p = lock(&self.paused_until);
        if p.is_none_or(|u| u < until) {
            *p = Some(until);
        }
    }

    /// Calls QuickBooks with the SPEC's handling: 401 → refresh once and retry once; 429 →
    /// pause the realm (Retry-After or 60 s) and retry, bounded; 5xx/network → bounded
    /// backoff.
    pub(super) async fn call<T, F, Fut>(&self, kind: CallKind, f: F) -> Result<T, qbo::Error>
    where
        F: Fn(QboClient, String) -> Fut,
        Fut: Future<Output = Result<Traced<T>, qbo::Error>>,
    {
        let engine = self.engine;
        let realm = self.realm.as_str();
        let (mut refreshed, mut throttled, mut transient) = (false, 0u32, 0u32);
        loop {
            if !self.wait_if_paused().await {
                return Err(qbo::Error::Network(
                    "not sent: the daemon is stopping".into(),
                ));
            }
            let token = lock(&self.token).clone();
            let r = f(self.qbo.clone(), token.clone()).await;
            engine.metrics.call(kind, &status_label(&r));
            match r {
                Ok(t) => {
                    lock(&self.tids).extend(t.tid);
                    return Ok(t.value);
                }
                Err(qbo::Error::Unauthorized) if !refreshed => {
                    refreshed = true;
                    // Another write of this sync refreshed meanwhile: retry with its token.
                    if *lock(&self.token) != token {
                        continue;
                    }
                    // One refresh per sync: a 401 that outlives it is final, not a reason to
                    // rotate the refresh token once per currency.
                    if self.refreshed.swap(true, Relaxed) {
                        return Err(qbo::Error::Unauthorized);
                    }
                    let fresh = match engine.tokens.after_unauthorized(realm, &token).await {
                        Ok(t) => t,
                        Err(TokenError::ReconnectNeeded) => {
                            return Err(qbo::Error::InvalidGrant(
                                "refresh refused after 401".into(),
                            ))
                        }
                        Err(TokenError::Upstream(e)) => return Err(e),
                        Err(TokenError::NotConnected) => {
                            self.disconnected.store(true, Relaxed);
                            return Err(qbo::Error::Network(
                                "not sent: the company was disconnected during the sync".into(),
                            ));
                        }
                        Err(e) => return Err(qbo::Error::Network(e.to_string())),
                    };
                    *lock(&self.token) = fresh;
                }
                Err(qbo::Error::RateLimited { retry_after })
                    if throttled < MAX_THROTTLE_RETRIES =>
                {
                    throttled += 1;
                    self.pressure.fetch_add(1, Relaxed);
                    let wait = retry_after.clamp(1, MAX_RETRY_AFTER);
                    tracing::warn!(
                        realm_id = realm,
                        wait,
                        "Company {realm}: QuickBooks throttled (429); retrying in {wait} s"
                    );
                    self.pause(Duration::from_secs(wait));
                }
                Err(e) if e.is_retryable() && transient < MAX_TRANSIENT_RETRIES => {
                    // A 5xx ridden out by a retry is noise, not overload: only 429s and
                    // failures that outlast the retries lower the sync-all level.
                    transient += 1;
                    let wait = engine.backoff_base * 2u32.pow(transient - 1);
                    tracing::warn!(realm_id = realm, error = %e, "Company {realm}: QuickBooks call failed; retrying in {wait:?}");
                    if !self.sleep_or_stop(tokio::time::sleep(wait)).await {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

pub(super) fn status_label<T>(r: &Result<T, qbo::Error>) -> String {
    match r {
        Ok(_) => "200".into(),
        Err(qbo::Error::Unauthorized) => "401".into(),
        Err(qbo::Error::RateLimited { .. }) => "429".into(),
        Err(qbo::Error::Server { status }) => status.to_string(),
        Err(qbo::Error::Fault { .. }) => "400".into(),
        Err(_) => "error".into(),
    }
}

impl Session<'_> {
    /// Re-reads preferences and the currency list, and stores them into the company's
    /// *current* record: the sync works on a copy taken when it started, and saving that
    /// whole copy would undo a settings change, a token refresh or a disconnect made
    /// meanwhile.
    pub(super) async fn refresh_company_cache(&self, company: &mut Company) -> Result<(), Error> {
        let realm = company.realm_id.clone();
        let prefs = self
            .call(CallKind::Read, |q, t| {
                let r = realm.clone();
                async move { q.preferences(&r, &t).await }
            })
            .await
            .map_err(|e| upstream(&e, "reading Preferences"))?;
        let currencies = self
            .call(CallKind::Read, |q, t| {
                let r = realm.clone();
                async move { q.company_currencies(&r, &t).await }
            })
            .await
            .map_err(|e| upstream(&e, "reading company currencies"))?;
        company.multicurrency = prefs.multicurrency;
        if let Some(home) = prefs.home {
            company.home_currency = home;
        }
        let home = company.home_currency;
        company.active_currencies = crate::qbo::model::active_foreign(&currencies, home);
        let now = self.engine.clock.now();
        company.currencies_checked_at = Some(now);
        let fresh = company.clone();
        self.engine
            .store
            .update_company(&realm, |c| {
                c.multicurrency = fresh.multicurrency;
                c.home_currency = fresh.home_currency;
                c.active_currencies.clone_from(&fresh.active_currencies);
                c.currencies_checked_at = fresh.currencies_checked_at;
                c.updated_at = now;
            })
            .await?;
        Ok(())
    }

    /// What QuickBooks holds for `codes` dated `from` to `to`: one metered read, a further
    /// page (another read) only beyond [`PAGE_SIZE`] rows.
    pub(super) async fn read_range(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        codes: &[Currency],
    ) -> Result<Holdings, qbo::Error> {
        let realm = self.realm.clone();
        let mut holdings = Holdings::new();
        let mut start = 1;
        loop {
            let page = self
                .call(CallKind::Read, |q, t| {
                    let r = realm.clone();
                    let c = codes.to_vec();
                    async move { q.rates_page(&r, &t, &c, from, to, start).await }
                })
                .await?;
            for r in page.rates {
                holdings.insert(
                    (r.date, r.currency),
                    Held {
                        rate: r.rate,
                        sync_token: r.sync_token,
                    },
                );
            }
            if !page.full {
                return Ok(holdings);
            }
            start += PAGE_SIZE;
        }
    }

    /// The routine read: `from..=to` in one query; when QuickBooks refuses the query with
    /// a Fault, one GET per currency for `to` only (logged, counted; no drift check).
    pub(super) async fn read_window(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        codes: &[Currency],
    ) -> Result<WindowRead, Error> {
        match self.read_range(from, to, codes).await {
            Ok(holdings) => Ok(WindowRead {
                holdings,
                drift_checked: true,
            }),
            Err(e) if e.is_fault() => {
                let realm = &self.realm;
                self.engine.metrics.read_fallbacks.inc();
                tracing::warn!(realm_id = %realm, error = %e, "Company {realm}: QuickBooks refused the exchange-rate query; reading {to} with one GET per currency (drift not checked)");
                let mut holdings = Holdings::new();
                for c in codes {
                    if let Some(h) = self.read_one(*c, to).await? {
                        holdings.insert((to, *c), h);
                    }
                }
                Ok(WindowRead {
                    holdings,
                    drift_checked: false,
                })
            }
            Err(e) => Err(upstream(&e, "reading QuickBooks exchange rates")),
        }
    }

    /// One currency on one date by a single GET (one metered read).
    pub(super) async fn read_one(
        &self,
        currency: Currency,
        date: NaiveDate,
    ) -> Result<Option<Held>, Error> {
        let realm = self.realm.clone();
        let rate = self
            .call(CallKind::Read, |q, t| {
                let r = realm.clone();
                async move { q.rate_on(&r, &t, currency, date).await }
            })
            .await
            .map_err(|e| upstream(&e, "reading a QuickBooks exchange rate"))?;
        Ok(rate.map(|r| Held {
            rate: r.rate,
            sync_token: r.sync_token,
        }))
    }

    /// Runs the plan's writes, at most `writes_in_flight_per_company` at once.
    pub(super) async fn write_steps(&self, home: Currency, steps: Vec<Step>) -> Written {
        let mut out = Written::default();
        let mut writes = Vec::new();
        for s in steps {
            match s.action {
                Action::Keep => out.unchanged.push((s.want.date, s.want.currency)),
                Action::Write { .. } => writes.push(s),
            }
        }
        let mut results = futures_util::stream::iter(writes)
            .map(|s| async move {
                let key = (s.want.date, s.want.currency);
                (key, self.write_one(home, s).await)
            })
            .buffer_unordered(self.engine.writes_in_flight());
        while let Some((key, r)) = results.next().await {
            match r {
                WriteResult::Written => out.written.push(key),
                WriteResult::AlreadyThere => out.unchanged.push(key),
                WriteResult::Rejected(e) => out.rejected.push((key, e)),
                WriteResult::Failed(e) => out.failures.push((key, e)),
                WriteResult::Fatal(e) => {
                    out.fatal.get_or_insert(e);
                }
            }
        }
        out
    }

    /// One write, retried once with a fresh SyncToken when QuickBooks says ours is stale.
    pub(super) async fn write_one(&self, home: Currency, mut step: Step) -> WriteResult {
        let want = step.want;
        let mut stale_retry = false;
        loop {
            let Action::Write {
                sync_token,
                request_id,
            } = &step.action
            else {
                return WriteResult::AlreadyThere;
            };
            let body = rate_body(want.currency, home, want.rate, want.date, sync_token);
            let realm = self.realm.clone();
            let res = self
                .call(CallKind::Write, |q, t| {
                    let r = realm.clone();
                    let b = body.clone();
                    let id = request_id.clone();
                    async move { q.write_rate(&r, &t, b, &id).await }
                })
                .await;
            match res {
                Ok(_) => return WriteResult::Written,
                Err(e) if e.is_stale() && !stale_retry => {
                    // Someone changed the rate meanwhile: re-read the date once and retry
                    // with the new SyncToken (a new requestid).
                    stale_retry = true;
                    match self.read_one(want.currency, want.date).await {
                        Ok(held) => {
                            let h: Holdings = held
                                .map(|h| ((want.date, want.currency), h))
                                .into_iter()
                                .collect();
                            step = plan::step(&self.realm, want, &h);
                        }
                        // A failed re-read fails this currency only, like a failed write;
                        // the grant being gone still ends the sync.
                        Err(
                            e
                            @ (Error::ReconnectNeeded | Error::Disconnected | Error::NotConnected),
                        ) => return WriteResult::Fatal(e),
                        Err(e) => return WriteResult::Failed(e.to_string()),
                    }
                }
                Err(e) if e.is_currency_rejection() => return WriteResult::Rejected(e.to_string()),
                Err(e) if e.is_invalid_grant() || e.is_unauthorized() => {
                    return WriteResult::Fatal(upstream(&e, "writing exchange rates"))
                }
                Err(e) => return WriteResult::Failed(e.to_string()),
            }
        }
    }
}
