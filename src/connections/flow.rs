//! The browser side of a connection (SPEC §6 "OAuth"): the `state` (random, single-use,
//! 10-minute expiry, bound to the browser by an HMAC-signed cookie), invite links (checked
//! when the flow starts, consumed when its connection succeeds), and the callback that
//! exchanges the code, reads the company and stores it with its tokens. Stores nothing on
//! any failure.

use chrono::Duration;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{is_realm_id, Connections, Error, Overrides};
use crate::config::Enrollment;
use crate::store::records::{Company, PendingAuth};

/// Name of the cookie that binds a `state` to the browser that started the flow.
pub const STATE_COOKIE: &str = "boa_oauth_state";

/// Lifetime of a `state`.
pub const STATE_TTL: Duration = Duration::minutes(10);

/// Lifetime of an invite link from `connect-url`.
pub const INVITE_TTL: Duration = Duration::days(7);

fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
}

fn sign(key: &[u8], msg: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(msg.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn verify(key: &[u8], msg: &str, sig_hex: &str) -> bool {
    let Ok(sig) = hex::decode(sig_hex) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return false;
    };
    mac.update(msg.as_bytes());
    mac.verify_slice(&sig).is_ok()
}

/// What `/oauth/connect` answers: where to send the browser and the cookie to set.
#[derive(Debug)]
pub struct ConnectStart {
    /// Intuit's authorize URL with our `state`.
    pub redirect: String,
    /// `Set-Cookie` value.
    pub cookie: String,
}

fn cookie_value(cookie_header: Option<&str>) -> Option<&str> {
    cookie_header?.split(';').map(str::trim).find_map(|c| {
        c.strip_prefix(STATE_COOKIE)
            .and_then(|r| r.strip_prefix('='))
    })
}

/// The callback's query parameters.
#[derive(Debug, Default)]
pub struct CallbackParams<'a> {
    /// Authorization code.
    pub code: Option<&'a str>,
    /// Our state.
    pub state: Option<&'a str>,
    /// The company id.
    pub realm_id: Option<&'a str>,
    /// `access_denied` etc.
    pub error: Option<&'a str>,
}

fn refuse(code: &'static str, msg: &str) -> Error {
    Error::Refused {
        code,
        message: msg.to_string(),
    }
}

/// A fixed message for an OAuth `error` code; unknown codes are not echoed.
fn denial_message(err: &str) -> String {
    let why = match err {
        "access_denied" => {
            return "the connection was not authorized in QuickBooks (access denied)".to_string()
        }
        "invalid_scope" => "the requested permission was refused",
        "server_error" | "temporarily_unavailable" => {
            "Intuit could not complete the request; try again later"
        }
        "invalid_request" | "unauthorized_client" | "unsupported_response_type" => {
            "the request was refused by Intuit (check the app's keys and redirect URI)"
        }
        _ => "Intuit reported an error",
    };
    format!("QuickBooks did not authorize the connection: {why}")
}

impl Connections {
    /// Starts a connection. Under `enrollment = "invite"` a valid, unused invite is required.
    ///
    /// # Errors
    /// 403 without a valid invite; 503 when the Intuit app is not configured.
    pub async fn start(&self, invite: Option<&str>) -> Result<ConnectStart, Error> {
        let config = self.config();
        if config.quickbooks.client_id.is_empty() {
            return Err(Error::NotConfigured);
        }
        let now = self.now();
        if config.server.enrollment == Enrollment::Invite {
            let Some(code) = invite else {
                return Err(Error::InviteRequired);
            };
            // Checked here, consumed only when the connection succeeds: an abandoned flow
            // does not burn the link.
            match self.store.pending(&format!("invite:{code}")).await? {
                Some(PendingAuth::Invite { expires_at, .. }) if expires_at > now => {}
                _ => return Err(Error::InvalidInvite),
            }
        }
        // Anyone may start a flow and most abandoned ones are never seen again: drop expired
        // states and invites here so the store does not grow without bound.
        if let Err(e) = self.store.purge_expired_pending(now).await {
            tracing::warn!(error = %e, "purging expired OAuth states failed");
        }
        let st = random_token();
        let nonce = random_token();
        let pending = match invite.filter(|_| config.server.enrollment == Enrollment::Invite) {
            Some(code) => PendingAuth::InvitedState {
                created_at: now,
                expires_at: now + STATE_TTL,
                browser_nonce: nonce.clone(),
                invite: code.to_string(),
            },
            None => PendingAuth::State {
                created_at: now,
                expires_at: now + STATE_TTL,
                browser_nonce: nonce.clone(),
            },
        };
        self.store
            .put_pending(&format!("state:{st}"), &pending)
            .await?;
        let value = format!("{st}.{nonce}");
        let sig = sign(&self.hmac_key, &value);
        let secure = if config.server.public_url.scheme() == "https" {
            "; Secure"
        } else {
            ""
        };
        let cookie = format!(
            "{STATE_COOKIE}={value}.{sig}; Path=/api/v1/oauth; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
            STATE_TTL.num_seconds()
        );
        let redirect = self.tokens.oauth().authorize_url(&st).to_string();
        Ok(ConnectStart { redirect, cookie })
    }

    pub async fn complete(
        &self,
        p: &CallbackParams<'_>,
        cookie_header: Option<&str>,
    ) -> Result<Company, Error> {
        let now = self.now();
        let invite = self.verify_state(p, cookie_header).await?;
        let (Some(code), Some(realm)) = (
            p.code.filter(|c| !c.is_empty()),
            p.realm_id.filter(|r| !r.is_empty()),
        ) else {
            return Err(refuse(
                "missing_code",
                "the authorization answer has no code or realmId",
            ));
        };
        if !is_realm_id(realm) {
            return Err(refuse(
                "bad_realm",
                "realmId is not a QuickBooks company id",
            ));
        }
        // An invite used meanwhile by another flow: refused before the code is exchanged.
        if let Some(code) = &invite {
            match self.store.pending(&format!("invite:{code}")).await? {
                Some(PendingAuth::Invite { expires_at, .. }) if expires_at > now => {}
                _ => return Err(Error::InvalidInvite),
            }
        }
        let (tokens, tid) = self
            .tokens
            .oauth()
            .exchange_code(code, now)
            .await
            .map_err(|e| {
                if e.is_invalid_grant() {
                    refuse(
                        "invalid_code",
                        "the authorization code was refused (already used or expired); start again",
                    )
                } else {
                    Error::Upstream {
                        code: e.code(),
                        message: format!("exchanging the authorization code: {e}"),
                    }
                }
            })?;
        let read = self.read_company(realm, &tokens.access_token).await?;
        if let Some(code) = invite {
            match self.store.take_pending(&format!("invite:{code}")).await? {
                Some(PendingAuth::Invite { expires_at, .. }) if expires_at > now => {}
                _ => return Err(Error::InvalidInvite),
            }
        }
        let company = self
            .store_connection(realm, read, &tokens, tid, &Overrides::default())
            .await?;
        Ok(company)
    }

    /// Checks the callback's `state` against the browser's signed cookie and consumes it.
    /// Returns the invite that started the flow, if any.
    async fn verify_state(
        &self,
        p: &CallbackParams<'_>,
        cookie_header: Option<&str>,
    ) -> Result<Option<String>, Error> {
        let now = self.now();
        let Some(st) = p.state.filter(|s| !s.is_empty()) else {
            return Err(refuse(
                "missing_state",
                "the authorization answer has no state; start again from the Connect button",
            ));
        };
        // The cookie proves this browser started this flow.
        let bound = cookie_value(cookie_header).and_then(|v| {
            let (value, sig) = v.rsplit_once('.')?;
            verify(&self.hmac_key, value, sig).then_some(value)
        });
        if let Some(err) = p.error {
            // Consume the state so it cannot be replayed, but only for the browser that started
            // the flow: a forged denial must not cancel someone else's connection.
            if bound
                .and_then(|b| b.split_once('.'))
                .is_some_and(|(s, _)| s == st)
            {
                let _ = self.store.take_pending(&format!("state:{st}")).await?;
            }
            return Err(refuse("access_denied", &denial_message(err)));
        }
        let Some(bound) = bound else {
            return Err(refuse("invalid_state", "this authorization was not started from this browser (missing or invalid state cookie); start again"));
        };
        let Some((cookie_state, nonce)) = bound.split_once('.') else {
            return Err(refuse(
                "invalid_state",
                "malformed state cookie; start again",
            ));
        };
        if cookie_state != st {
            return Err(refuse(
                "invalid_state",
                "the state does not match this browser's; start again",
            ));
        }
        let (expires_at, browser_nonce, invite) =
            match self.store.take_pending(&format!("state:{st}")).await? {
                Some(PendingAuth::State {
                    expires_at,
                    browser_nonce,
                    ..
                }) => (expires_at, browser_nonce, None),
                Some(PendingAuth::InvitedState {
                    expires_at,
                    browser_nonce,
                    invite,
                    ..
                }) => (expires_at, browser_nonce, Some(invite)),
                _ => {
                    return Err(refuse(
                        "invalid_state",
                        "unknown or already used state; start again",
                    ))
                }
            };
        if browser_nonce != nonce {
            return Err(refuse(
                "invalid_state",
                "the state does not match this browser's; start again",
            ));
        }
        if expires_at < now {
            return Err(refuse(
                "expired_state",
                "the authorization took longer than 10 minutes; start again",
            ));
        }
        Ok(invite)
    }

    /// A fresh single-use invite code and when it expires (`connect-url`).
    ///
    /// # Errors
    /// Store failure.
    pub async fn new_invite(&self) -> Result<(String, chrono::DateTime<chrono::Utc>), Error> {
        let now = self.now();
        let code = random_token();
        let expires_at = now + INVITE_TTL;
        self.store
            .put_pending(
                &format!("invite:{code}"),
                &PendingAuth::Invite {
                    created_at: now,
                    expires_at,
                },
            )
            .await?;
        Ok((code, expires_at))
    }
}
