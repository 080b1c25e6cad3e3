//! Intuit OAuth 2.0 calls: the authorize URL, code exchange, refresh and revoke.
//!
//! The `oauth2` crate builds the authorize URL (client id, `response_type=code`, our scope,
//! redirect URI and the caller's `state` as the CSRF token) and the two token-endpoint calls
//! (form body, `Accept: application/json`, client id/secret as HTTP Basic auth), and parses
//! the answers: [`IntuitFields`] declares Intuit's extra lifetimes
//! (`x_refresh_token_expires_in`, `x_refresh_token_hard_expires_in`), which the crate would
//! otherwise drop. It is used without its reqwest feature (that would pull reqwest 0.12 next
//! to our 0.13): [`Transport`] adapts our own client, so Intuit calls keep following no
//! redirect, reading at most [`super::MAX_ANSWER_BYTES`], sending the opt-in
//! `x-include-refresh-token-hard-expires-in` header (the crate has no per-request headers) and
//! recording the HTTP status and the `intuit_tid` header, which the crate's typed results
//! hide and which our error mapping and logs need.
//!
//! Hand-written here: revoke (Intuit wants JSON `{"token": …}`, not the RFC 7009 form the
//! crate sends), the error mapping onto [`Error`], the lifetime clamps, the hard-expiry rule
//! `min(previous, now + value)` and keeping the sent refresh token when an answer has none.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use oauth2::basic::{
    BasicErrorResponse, BasicErrorResponseType, BasicRevocationErrorResponse,
    BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AsyncHttpClient, AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    EndpointNotSet, EndpointSet, ExtraTokenFields, HttpRequest, HttpResponse, RedirectUrl,
    RefreshToken, RequestTokenError, Scope, StandardRevocableToken, StandardTokenResponse,
    TokenResponse as _, TokenUrl,
};
use serde::{Deserialize, Serialize};
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

/// Intuit's additions to the standard token answer, which `oauth2` keeps only when declared.
/// Signed, so an absurd negative lifetime reaches the clamp instead of failing the parse.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
struct IntuitFields {
    /// Seconds left in the rolling refresh-token window (about 100 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    x_refresh_token_expires_in: Option<i64>,
    /// Seconds left before the grant's hard end (5 years); only with the opt-in header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    x_refresh_token_hard_expires_in: Option<i64>,
}

impl ExtraTokenFields for IntuitFields {}

type IntuitTokenResponse = StandardTokenResponse<IntuitFields, BasicTokenType>;

/// `oauth2`'s client with Intuit's token answer, as built by [`OAuthClient::new`]: authorize
/// and token endpoints set, no device, introspection or revocation endpoint.
type IntuitClient<HasAuthUrl = EndpointSet, HasTokenUrl = EndpointSet> = oauth2::Client<
    BasicErrorResponse,
    IntuitTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    HasAuthUrl,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    HasTokenUrl,
>;

type TokenError = RequestTokenError<Error, BasicErrorResponse>;

/// What a call through a [`Transport`] saw: the status and `intuit_tid` of the answer.
#[derive(Default)]
struct Seen {
    status: Option<u16>,
    tid: Option<String>,
}

/// `oauth2`'s HTTP client for one token call, over our reqwest client (which follows no
/// redirect). Adds the hard-expiry opt-in header, refuses redirects, caps the body and
/// records what [`Seen`] needs for the error mapping and the logs.
struct Transport {
    http: reqwest::Client,
    seen: Mutex<Seen>,
}

impl Transport {
    fn new(http: &reqwest::Client) -> Self {
        Transport {
            http: http.clone(),
            seen: Mutex::new(Seen::default()),
        }
    }

    fn seen(self) -> Seen {
        self.seen
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, Error> {
        let (parts, body) = request.into_parts();
        let resp = self
            .http
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .header("x-include-refresh-token-hard-expires-in", "true")
            .body(body)
            .send()
            .await
            .map_err(from_reqwest)?;
        let status = resp.status();
        {
            let mut seen = crate::locks::lock(&self.seen);
            seen.status = Some(status.as_u16());
            seen.tid = intuit_tid(resp.headers());
        }
        if status.is_redirection() {
            return Err(Error::Redirect {
                status: status.as_u16(),
            });
        }
        let headers = resp.headers().clone();
        let body = crate::outbound::read_capped(resp, super::MAX_ANSWER_BYTES)
            .await
            .map_err(from_cap)?;
        let mut answer = HttpResponse::new(body);
        *answer.status_mut() = status;
        *answer.headers_mut() = headers;
        Ok(answer)
    }
}

impl<'c> AsyncHttpClient<'c> for Transport {
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, Error>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

/// The Intuit OAuth endpoints for our app.
#[derive(Clone)]
pub struct OAuthClient {
    http: reqwest::Client,
    oauth: IntuitClient,
    client_id: String,
    client_secret: String,
    revoke_url: Url,
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
        let oauth =
            IntuitClient::<EndpointNotSet, EndpointNotSet>::new(ClientId::new(q.client_id.clone()))
                .set_client_secret(ClientSecret::new(q.client_secret.expose().to_string()))
                .set_auth_type(AuthType::BasicAuth)
                .set_auth_uri(AuthUrl::from_url(q.authorize_url.clone()))
                .set_token_uri(TokenUrl::from_url(q.token_url.clone()))
                .set_redirect_uri(RedirectUrl::from_url(q.redirect_uri.clone()));
        OAuthClient {
            http,
            oauth,
            client_id: q.client_id.clone(),
            client_secret: q.client_secret.expose().to_string(),
            revoke_url: q.revoke_url.clone(),
        }
    }

    /// The browser redirect to Intuit's consent page.
    pub fn authorize_url(&self, state: &str) -> Url {
        let (url, _state) = self
            .oauth
            .authorize_url(|| CsrfToken::new(state.to_string()))
            .add_scope(Scope::new(SCOPE.to_string()))
            .url();
        url
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
        let transport = Transport::new(&self.http);
        let answer = self
            .oauth
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .request_async(&transport)
            .await;
        token_set(answer, transport.seen(), None, None, now)
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
        let transport = Transport::new(&self.http);
        let sent = RefreshToken::new(refresh_token.to_string());
        let answer = self
            .oauth
            .exchange_refresh_token(&sent)
            .request_async(&transport)
            .await;
        token_set(
            answer,
            transport.seen(),
            previous_hard,
            Some(refresh_token),
            now,
        )
    }

    /// Revokes a grant (refresh or access token). Intuit answers 200.
    ///
    /// Written by hand over reqwest: Intuit's revoke endpoint takes a JSON body
    /// `{"token": …}`, while `oauth2`'s revocation request sends the RFC 7009 form
    /// (`token=…&token_type_hint=…`).
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

/// Turns a token answer into our token set plus its `intuit_tid`: lifetimes clamped, the
/// hard expiry kept at `min(previous, now + value)`, the sent refresh token kept when the
/// answer has none (a code exchange without one is an error).
fn token_set(
    answer: Result<IntuitTokenResponse, TokenError>,
    seen: Seen,
    previous_hard: Option<DateTime<Utc>>,
    sent_refresh: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(TokenSet, Option<String>), Error> {
    let t = answer.map_err(|e| token_error(e, seen.status))?;
    let expires_in = t
        .expires_in()
        .ok_or_else(|| Error::Decode("token response: missing field `expires_in`".into()))?;
    let expires_in = i64::try_from(expires_in.as_secs()).unwrap_or(i64::MAX);
    let extra = t.extra_fields();
    let hard = extra
        .x_refresh_token_hard_expires_in
        .map(|s| expires_at(now, s, MAX_REFRESH_LIFETIME_SECS));
    let hard = match (hard, previous_hard) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let refresh_token = match (t.refresh_token(), sent_refresh) {
        (Some(rt), _) => rt.secret().clone(),
        (None, Some(old)) => old.to_string(),
        (None, None) => return Err(Error::Decode("token response without refresh_token".into())),
    };
    let set = TokenSet {
        access_token: t.access_token().secret().clone(),
        refresh_token,
        expiry: TokenExpiry {
            access_expires_at: expires_at(now, expires_in, MAX_ACCESS_LIFETIME_SECS),
            // Intuit always sends it; 100 days is its documented rolling window.
            refresh_expires_at: expires_at(
                now,
                extra.x_refresh_token_expires_in.unwrap_or(8_640_000),
                MAX_REFRESH_LIFETIME_SECS,
            ),
            hard_expires_at: hard,
            refreshed_at: now,
        },
    };
    Ok((set, seen.tid))
}

/// Maps `oauth2`'s failure onto ours, with the status the [`Transport`] saw (`None`: no
/// answer, the request could not even be built).
fn token_error(e: TokenError, status: Option<u16>) -> Error {
    match e {
        // Network, redirect, oversized answer: already ours.
        RequestTokenError::Request(e) => e,
        RequestTokenError::ServerResponse(r) => match r.error() {
            BasicErrorResponseType::InvalidGrant => Error::InvalidGrant(
                r.error_description()
                    .filter(|d| !d.is_empty())
                    .cloned()
                    .unwrap_or_else(|| "invalid_grant".into()),
            ),
            BasicErrorResponseType::InvalidClient => Error::InvalidClient,
            other => status_error(status.unwrap_or(0), Some(other.as_ref())),
        },
        // A 200 that is not a token answer (not JSON, wrong content type, fields missing).
        RequestTokenError::Parse(e, _) if status == Some(200) => {
            Error::Decode(format!("token response: {e}"))
        }
        RequestTokenError::Other(m) if status == Some(200) => {
            Error::Decode(format!("token response: {m}"))
        }
        // An error status whose body is empty or not an OAuth error.
        RequestTokenError::Parse(..) | RequestTokenError::Other(_) if status.is_some() => {
            status_error(status.unwrap_or(0), None)
        }
        RequestTokenError::Parse(e, _) => Error::Decode(format!("token request: {e}")),
        RequestTokenError::Other(m) => Error::Decode(format!("token request: {m}")),
    }
}

/// An error status without a known OAuth error code.
fn status_error(status: u16, error: Option<&str>) -> Error {
    match status {
        401 => Error::InvalidClient,
        s if s >= 500 => Error::Server { status: s },
        s => Error::Http {
            status: s,
            message: error
                .unwrap_or("token endpoint refused the request")
                .to_string(),
        },
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
    use base64::Engine as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const CLIENT_ID: &str = "cid";
    const CLIENT_SECRET: &str = "s3cret";

    /// A server on 127.0.0.1:0 that answers every connection with `status`, `headers` and
    /// `body` (with a Content-Length) and sends each request it read (head and body, as text)
    /// on the returned channel.
    async fn serve_recording(
        status: u16,
        headers: &str,
        body: &str,
    ) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        crate::outbound::install_crypto_provider();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let answer = format!(
            "HTTP/1.1 {status} X\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                // Read the head, then as many body bytes as its Content-Length says.
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    req.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&req).to_ascii_lowercase();
                    let done = text.find("\r\n\r\n").is_some_and(|end| {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        req.len() >= end + 4 + len
                    });
                    if n == 0 || done {
                        break;
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&req).into_owned());
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        (format!("http://{addr}"), rx)
    }

    fn secs(s: i64) -> chrono::TimeDelta {
        chrono::TimeDelta::try_seconds(s).unwrap()
    }

    #[test]
    fn the_authorize_url_carries_the_five_parameters() {
        let u = client("http://127.0.0.1:9/token").authorize_url("st-4/2");
        assert!(u
            .as_str()
            .starts_with("https://appcenter.example/connect/oauth2?"));
        let mut q: Vec<(String, String)> = u.query_pairs().into_owned().collect();
        q.sort();
        let want = [
            ("client_id", CLIENT_ID),
            ("redirect_uri", "https://app.example/callback"),
            ("response_type", "code"),
            ("scope", SCOPE),
            ("state", "st-4/2"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(q, want);
    }

    #[tokio::test]
    async fn refresh_reads_intuit_fields_and_tid() {
        let body = r#"{"token_type":"bearer","access_token":"at2","expires_in":3600,"refresh_token":"rt2","x_refresh_token_expires_in":8726400,"x_refresh_token_hard_expires_in":156032154}"#;
        let (url, mut requests) = serve_recording(
            200,
            "content-type: application/json;charset=UTF-8\r\nintuit_tid: 1-abc-2\r\n",
            body,
        )
        .await;
        let c = client(&url);
        let now = Utc::now();
        let (set, tid) = c.refresh("rt1", None, now).await.unwrap();
        assert_eq!(tid.as_deref(), Some("1-abc-2"));
        assert_eq!(set.access_token, "at2");
        assert_eq!(set.refresh_token, "rt2");
        assert_eq!(set.expiry.access_expires_at, now + secs(3600));
        assert_eq!(set.expiry.refresh_expires_at, now + secs(8_726_400));
        assert_eq!(set.expiry.hard_expires_at, Some(now + secs(156_032_154)));
        assert_eq!(set.expiry.refreshed_at, now);

        let req = requests.recv().await.unwrap();
        let lower = req.to_ascii_lowercase();
        assert!(lower.starts_with("post / http/1.1\r\n"), "{req}");
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
        assert!(
            req.contains(&format!("authorization: Basic {basic}\r\n")),
            "{req}"
        );
        assert!(lower.contains("accept: application/json\r\n"), "{req}");
        assert!(
            lower.contains("content-type: application/x-www-form-urlencoded\r\n"),
            "{req}"
        );
        assert!(
            lower.contains("x-include-refresh-token-hard-expires-in: true\r\n"),
            "{req}"
        );
        assert!(
            req.ends_with("\r\n\r\ngrant_type=refresh_token&refresh_token=rt1"),
            "{req}"
        );
        assert!(
            !req.contains(CLIENT_SECRET),
            "the secret is only in Basic auth: {req}"
        );

        // The hard expiry never moves later than one already known.
        let earlier = now + secs(1000);
        let (set, _) = c.refresh("rt2", Some(earlier), now).await.unwrap();
        assert_eq!(set.expiry.hard_expires_at, Some(earlier));
        let later = now + secs(200_000_000);
        let (set, _) = c.refresh("rt2", Some(later), now).await.unwrap();
        assert_eq!(set.expiry.hard_expires_at, Some(now + secs(156_032_154)));
    }

    #[tokio::test]
    async fn code_exchange_sends_the_code_and_redirect_uri() {
        let body = r#"{"token_type":"bearer","access_token":"a","expires_in":3600,"refresh_token":"r","x_refresh_token_expires_in":8726400}"#;
        let (url, mut requests) =
            serve_recording(200, "content-type: application/json\r\n", body).await;
        let now = Utc::now();
        let (set, tid) = client(&url).exchange_code("c/1", now).await.unwrap();
        assert_eq!((set.refresh_token.as_str(), tid), ("r", None));
        // Without the hard-expiry field, none is known.
        assert_eq!(set.expiry.hard_expires_at, None);
        let req = requests.recv().await.unwrap();
        assert!(
            req.ends_with(
                "\r\n\r\ngrant_type=authorization_code&code=c%2F1\
                 &redirect_uri=https%3A%2F%2Fapp.example%2Fcallback"
            ),
            "{req}"
        );
    }

    #[tokio::test]
    async fn an_answer_without_refresh_token_keeps_the_sent_one() {
        let body = r#"{"token_type":"bearer","access_token":"a","expires_in":3600}"#;
        let (url, _requests) =
            serve_recording(200, "content-type: application/json\r\n", body).await;
        let c = client(&url);
        let now = Utc::now();
        let (set, _) = c.refresh("rt-old", None, now).await.unwrap();
        assert_eq!(set.refresh_token, "rt-old");
        // Intuit's documented 100-day window when the field is missing.
        assert_eq!(set.expiry.refresh_expires_at, now + secs(8_640_000));
        // A code exchange has no refresh token to keep.
        let e = c.exchange_code("c", now).await.unwrap_err();
        assert!(
            matches!(&e, Error::Decode(m) if m.contains("refresh_token")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn invalid_grant_carries_the_description() {
        let (url, _r) = serve_recording(
            400,
            "content-type: application/json\r\nintuit_tid: t\r\n",
            r#"{"error":"invalid_grant","error_description":"Token invalid"}"#,
        )
        .await;
        let e = client(&url)
            .refresh("rt", None, Utc::now())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::InvalidGrant(d) if d == "Token invalid"),
            "{e}"
        );
        assert!(e.is_invalid_grant());

        let (url, _r) = serve_recording(400, "", r#"{"error":"invalid_grant"}"#).await;
        let e = client(&url)
            .exchange_code("c", Utc::now())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::InvalidGrant(d) if d == "invalid_grant"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn invalid_client_and_401_are_invalid_client() {
        let (url, _r) = serve_recording(
            401,
            "content-type: application/json\r\nwww-authenticate: Basic realm=\"Intuit\"\r\n",
            r#"{"error":"invalid_client"}"#,
        )
        .await;
        let e = client(&url)
            .refresh("rt", None, Utc::now())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidClient), "{e}");
        // A bare 401, and invalid_client under another status.
        let (url, _r) = serve_recording(401, "", "").await;
        let e = client(&url)
            .refresh("rt", None, Utc::now())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidClient), "{e}");
        let (url, _r) = serve_recording(400, "", r#"{"error":"invalid_client"}"#).await;
        let e = client(&url)
            .refresh("rt", None, Utc::now())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidClient), "{e}");
    }

    #[tokio::test]
    async fn other_statuses_map_to_server_and_http() {
        let (url, _r) = serve_recording(503, "content-type: text/html\r\n", "<h1>down</h1>").await;
        let e = client(&url)
            .refresh("rt", None, Utc::now())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Server { status: 503 }), "{e}");
        assert!(e.is_retryable());
        // Even with an OAuth error body, a 5xx is a server failure.
        let (url, _r) = serve_recording(500, "", r#"{"error":"server_error"}"#).await;
        let e = client(&url)
            .refresh("rt", None, Utc::now())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Server { status: 500 }), "{e}");

        let (url, _r) = serve_recording(400, "", r#"{"error":"invalid_request"}"#).await;
        let e = client(&url)
            .refresh("rt", None, Utc::now())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::Http { status: 400, message } if message == "invalid_request"),
            "{e}"
        );
        let (url, _r) = serve_recording(403, "", "forbidden").await;
        let e = client(&url)
            .refresh("rt", None, Utc::now())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::Http { status: 403, message } if message == "token endpoint refused the request"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_200_that_is_not_a_token_answer_is_a_decode_error() {
        let (url, _r) = serve_recording(200, "", "<html>hello</html>").await;
        let e = client(&url)
            .refresh("rt", None, Utc::now())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::Decode(m) if m.starts_with("token response")),
            "{e}"
        );
        let (url, _r) = serve_recording(200, "content-type: text/html\r\n", "{}").await;
        let e = client(&url)
            .refresh("rt", None, Utc::now())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Decode(_)), "{e}");
        let (url, _r) =
            serve_recording(200, "", r#"{"token_type":"bearer","access_token":"a"}"#).await;
        let e = client(&url)
            .refresh("rt", None, Utc::now())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::Decode(m) if m.contains("expires_in")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn network_failures_are_network_errors() {
        // Nothing listens on a port just released.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        drop(l);
        let e = client(&url)
            .refresh("rt", None, Utc::now())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Network(_)), "{e}");
        assert!(e.is_retryable());
    }

    fn client(token_url: &str) -> OAuthClient {
        crate::outbound::install_crypto_provider();
        let c = crate::config::Config::from_toml(
            &format!(
                "[quickbooks]\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\n\
                 token_url = \"{token_url}\"\nrevoke_url = \"{token_url}\"\n\
                 authorize_url = \"https://appcenter.example/connect/oauth2\"\n\
                 redirect_uri = \"https://app.example/callback\"\n"
            ),
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
