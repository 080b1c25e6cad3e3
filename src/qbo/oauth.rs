//! Intuit OAuth 2.0 calls: the authorize URL, code exchange, refresh and revoke.
//!
//! Three small calls written directly over our reqwest client rather than through the
//! `oauth2` crate: Intuit needs an opt-in request header for the hard-expiry field, extra
//! response fields (`x_refresh_token_expires_in`, `x_refresh_token_hard_expires_in`) and the
//! `intuit_tid` response header for support, which the crate's typed flow hides.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use url::Url;

use super::error::{from_cap, from_reqwest, Error};
use crate::config::QuickbooksConfig;
use crate::store::records::{TokenExpiry, TokenSet};

/// The scope we ask for.
pub const SCOPE: &str = "com.intuit.quickbooks.accounting";

/// Longest access-token lifetime believed (Intuit's is one hour).
pub const MAX_ACCESS_LIFETIME_SECS: i64 = 24 * 3600;

/// Longest refresh-token lifetime believed, rolling or hard (Intuit's are 100 days and 5 years).
pub const MAX_REFRESH_LIFETIME_SECS: i64 = 5 * 366 * 24 * 3600;

/// `now + secs`, with `secs` clamped to `0..=max`: an absurd lifetime from Intuit (negative,
/// 10^18) is bounded, never a panic or an overflow.
pub fn expires_at(now: DateTime<Utc>, secs: i64, max: i64) -> DateTime<Utc> {
    chrono::TimeDelta::try_seconds(secs.clamp(0, max.max(0)))
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(now)
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    /// Intuit always sends it; an answer without one keeps the refresh token we sent.
    refresh_token: Option<String>,
    expires_in: i64,
    x_refresh_token_expires_in: Option<i64>,
    x_refresh_token_hard_expires_in: Option<i64>,
}

#[derive(Deserialize)]
struct OAuthErrorBody {
    error: String,
    #[serde(default)]
    error_description: String,
}

/// The Intuit OAuth endpoints for our app.
#[derive(Clone)]
pub struct OAuthClient {
    http: reqwest::Client,
    client_id: String,
    client_secret: String,
    authorize_url: Url,
    token_url: Url,
    revoke_url: Url,
    redirect_uri: Url,
}

impl std::fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthClient")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl OAuthClient {
    /// Builds the client from config, reusing `http`.
    pub fn new(http: reqwest::Client, q: &QuickbooksConfig) -> Self {
        OAuthClient {
            http,
            client_id: q.client_id.clone(),
            client_secret: q.client_secret.expose().to_string(),
            authorize_url: q.authorize_url.clone(),
            token_url: q.token_url.clone(),
            revoke_url: q.revoke_url.clone(),
            redirect_uri: q.redirect_uri.clone(),
        }
    }

    /// The browser redirect to Intuit's consent page.
    pub fn authorize_url(&self, state: &str) -> Url {
        let mut u = self.authorize_url.clone();
        u.query_pairs_mut()
            .append_pair("client_id", &self.client_id)
            .append_pair("response_type", "code")
            .append_pair("scope", SCOPE)
            .append_pair("redirect_uri", self.redirect_uri.as_str())
            .append_pair("state", state);
        u
    }

    /// Exchanges an authorization code for tokens.
    ///
    /// # Errors
    /// `InvalidGrant` for a reused/expired code, `InvalidClient`, network/5xx.
    pub async fn exchange_code(
        &self,
        code: &str,
        now: DateTime<Utc>,
    ) -> Result<(TokenSet, Option<String>), Error> {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_uri.as_str()),
        ];
        self.token_call(&form, None, None, now).await
    }

    /// Refreshes with the latest refresh token. `previous_hard` keeps the earliest known
    /// hard expiry (`min(previous, now + value)`).
    ///
    /// # Errors
    /// `InvalidGrant` (reconnect needed), `InvalidClient`, network/5xx.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        previous_hard: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<(TokenSet, Option<String>), Error> {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        self.token_call(&form, previous_hard, Some(refresh_token), now)
            .await
    }

    async fn token_call(
        &self,
        form: &[(&str, &str)],
        previous_hard: Option<DateTime<Utc>>,
        sent_refresh: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(TokenSet, Option<String>), Error> {
        let resp = self
            .http
            .post(self.token_url.clone())
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .header("Accept", "application/json")
            .header("x-include-refresh-token-hard-expires-in", "true")
            .form(form)
            .send()
            .await
            .map_err(from_reqwest)?;
        let tid = intuit_tid(resp.headers());
        let status = resp.status().as_u16();
        if (300..400).contains(&status) {
            return Err(Error::Redirect { status });
        }
        let body = crate::outbound::read_capped(resp, super::MAX_ANSWER_BYTES)
            .await
            .map_err(from_cap)?;
        if status == 200 {
            let t: TokenResponse = serde_json::from_slice(&body)
                .map_err(|e| Error::Decode(format!("token response: {e}")))?;
            let hard = t
                .x_refresh_token_hard_expires_in
                .map(|s| expires_at(now, s, MAX_REFRESH_LIFETIME_SECS));
            let hard = match (hard, previous_hard) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let set = TokenSet {
                access_token: t.access_token,
                refresh_token: match (t.refresh_token, sent_refresh) {
                    (Some(rt), _) => rt,
                    (None, Some(old)) => old.to_string(),
                    (None, None) => {
                        return Err(Error::Decode("token response without refresh_token".into()))
                    }
                },
                expiry: TokenExpiry {
                    access_expires_at: expires_at(now, t.expires_in, MAX_ACCESS_LIFETIME_SECS),
                    // Intuit always sends it; 100 days is its documented rolling window.
                    refresh_expires_at: expires_at(
                        now,
                        t.x_refresh_token_expires_in.unwrap_or(8_640_000),
                        MAX_REFRESH_LIFETIME_SECS,
                    ),
                    hard_expires_at: hard,
                    refreshed_at: now,
                },
            };
            return Ok((set, tid));
        }
        let err: Option<OAuthErrorBody> = serde_json::from_slice(&body).ok();
        Err(match (status, err) {
            (_, Some(e)) if e.error == "invalid_grant" => {
                Error::InvalidGrant(if e.error_description.is_empty() {
                    "invalid_grant".into()
                } else {
                    e.error_description
                })
            }
            (_, Some(e)) if e.error == "invalid_client" => Error::InvalidClient,
            (401, _) => Error::InvalidClient,
            (s, _) if s >= 500 => Error::Server { status: s },
            (s, Some(e)) => Error::Http {
                status: s,
                message: e.error,
            },
            (s, None) => Error::Http {
                status: s,
                message: "token endpoint refused the request".into(),
            },
        })
    }

    /// Revokes a grant (refresh or access token). Intuit answers 200.
    ///
    /// # Errors
    /// Non-2xx or network failure.
    pub async fn revoke(&self, token: &str) -> Result<(), Error> {
        let resp = self
            .http
            .post(self.revoke_url.clone())
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .header("Accept", "application/json")
            .json(&serde_json::json!({ "token": token }))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(from_reqwest)?;
        let status = resp.status().as_u16();
        match status {
            200..=299 => Ok(()),
            300..=399 => Err(Error::Redirect { status }),
            400 => {
                // Already revoked / unknown token: the grant is gone either way.
                Ok(())
            }
            s if s >= 500 => Err(Error::Server { status: s }),
            s => Err(Error::Http {
                status: s,
                message: "revoke refused".into(),
            }),
        }
    }
}

/// The `intuit_tid` response header, for logs.
pub fn intuit_tid(h: &reqwest::header::HeaderMap) -> Option<String> {
    h.get("intuit_tid")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::tests::serve_once;

    fn client(token_url: &str) -> OAuthClient {
        crate::install_crypto_provider();
        let c = crate::config::Config::from_toml(
            &format!("[quickbooks]\ntoken_url = \"{token_url}\"\nrevoke_url = \"{token_url}\"\n"),
            "t",
            None,
            &std::collections::HashMap::new(),
        )
        .unwrap();
        let http = super::super::http_client(Duration::from_secs(5)).unwrap();
        OAuthClient::new(http, &c.quickbooks)
    }

    #[test]
    fn lifetimes_are_clamped() {
        let now = Utc::now();
        let h = |s| chrono::TimeDelta::try_seconds(s).unwrap();
        assert_eq!(
            expires_at(now, 3600, MAX_ACCESS_LIFETIME_SECS),
            now + h(3600)
        );
        assert_eq!(
            expires_at(now, 1_000_000_000_000_000_000, MAX_ACCESS_LIFETIME_SECS),
            now + h(86_400)
        );
        assert_eq!(
            expires_at(now, i64::MAX, MAX_REFRESH_LIFETIME_SECS),
            now + h(MAX_REFRESH_LIFETIME_SECS)
        );
        assert_eq!(expires_at(now, -5, MAX_ACCESS_LIFETIME_SECS), now);
        assert_eq!(expires_at(now, i64::MIN, MAX_REFRESH_LIFETIME_SECS), now);
        // Even an absurd cap cannot overflow the calendar.
        let far = DateTime::<Utc>::MAX_UTC - h(10);
        assert_eq!(expires_at(far, 3600, i64::MAX), far);
    }

    #[tokio::test]
    async fn absurd_token_lifetimes_from_intuit_are_clamped() {
        let body = br#"{"access_token":"a","refresh_token":"r","token_type":"bearer","expires_in":1000000000000000000,"x_refresh_token_expires_in":-86400,"x_refresh_token_hard_expires_in":9223372036854775807}"#;
        let url = serve_once(200, "content-type: application/json\r\n", body.to_vec()).await;
        let now = Utc::now();
        let (set, _) = client(&url).exchange_code("c", now).await.unwrap();
        assert_eq!(
            set.expiry.access_expires_at,
            now + chrono::TimeDelta::try_seconds(MAX_ACCESS_LIFETIME_SECS).unwrap()
        );
        assert_eq!(set.expiry.refresh_expires_at, now);
        assert_eq!(
            set.expiry.hard_expires_at,
            Some(now + chrono::TimeDelta::try_seconds(MAX_REFRESH_LIFETIME_SECS).unwrap())
        );
    }

    #[tokio::test]
    async fn token_endpoint_redirects_are_refused() {
        let url = serve_once(
            307,
            "location: http://127.0.0.1:9/steal\r\ncontent-length: 0\r\n",
            Vec::new(),
        )
        .await;
        let c = client(&url);
        let e = c.exchange_code("c", Utc::now()).await.unwrap_err();
        assert!(matches!(e, Error::Redirect { status: 307 }), "{e}");
        assert!(matches!(
            c.revoke("t").await.unwrap_err(),
            Error::Redirect { status: 307 }
        ));
    }

    #[tokio::test]
    async fn token_answers_over_4_mib_are_refused() {
        let mut body = br#"{"access_token":""#.to_vec();
        body.extend(std::iter::repeat_n(b'x', super::super::MAX_ANSWER_BYTES));
        body.extend(br#"","expires_in":3600}"#);
        let url = serve_once(200, "", body).await;
        let e = client(&url)
            .exchange_code("c", Utc::now())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains("larger than 4 MiB"), "{e}");
    }
}
