//! Fetching BoA pages and workbooks over HTTP.
//!
//! Owns the one `reqwest::Client` used for BoA (browser-like User-Agent, per-request
//! timeout) and the retry policy: bounded attempts with exponential backoff on 5xx,
//! timeouts and network errors, never on 4xx. It hashes the exact bytes received (the store
//! keeps the page's sha256). It does not parse anything: see [`crate::boa::parse`].

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::outbound::CapError;
use crate::time::clock::Clock;

/// The official rate page, in Albanian (the default of `boa.url`).
pub const DEFAULT_URL: &str = "https://www.bankofalbania.org/Tregjet/Kursi_zyrtar_i_kembimit/";

/// A current desktop Firefox: BoA sits behind Cloudflare, which answers an ordinary
/// browser-like GET with 200.
pub const DEFAULT_USER_AGENT: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";

/// Attempts per fetch (the first try included).
pub const DEFAULT_ATTEMPTS: u32 = 3;

/// Wait before the first retry; doubled for each later one.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(2);

/// Per-request timeout when none is configured (`boa.timeout_secs`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest page (the rate page, the archive index) read from BoA.
pub const MAX_PAGE_BYTES: usize = 4 << 20;

/// Largest yearly workbook downloaded from BoA.
pub const MAX_WORKBOOK_BYTES: usize = 32 << 20;

/// The wait before retry number `retry` (1 for the first retry): `base × 2^(retry−1)`.
pub fn backoff_delay(base: Duration, retry: u32) -> Duration {
    base.saturating_mul(1u32 << retry.saturating_sub(1).min(16))
}

/// Why a fetch failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The server answered with a non-success status.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The URL requested.
        url: String,
    },
    /// No complete answer within the configured timeout.
    #[error("request timed out")]
    Timeout,
    /// Connection refused, DNS failure, TLS failure, reset…
    #[error("network error: {0}")]
    Network(String),
    /// The body could not be read, or is not the UTF-8 text a page must be.
    #[error("reading the response body failed: {0}")]
    Body(String),
    /// The HTTP client could not be built (bad configuration).
    #[error("building the HTTP client failed: {0}")]
    Client(String),
    /// The answer is larger than the cap for its kind; nothing more was read.
    #[error("{url}: the answer is larger than {} (the cap for a BoA {what}); refused", crate::outbound::human(*limit))]
    TooLarge {
        /// The URL requested.
        url: String,
        /// `page` or `workbook`.
        what: &'static str,
        /// The cap in bytes.
        limit: usize,
    },
    /// A workbook link (or where it redirected to) is not on BoA's host.
    #[error("{url} is not on BoA's host {expected}; workbooks are only downloaded from BoA")]
    ForeignHost {
        /// The URL refused.
        url: String,
        /// The host of `boa.url`.
        expected: String,
    },
}

impl FetchError {
    /// Whether trying again may help: 5xx, timeouts, network and body-read errors.
    pub fn is_retryable(&self) -> bool {
        match self {
            FetchError::Status { status, .. } => (500..=599).contains(status),
            FetchError::Timeout | FetchError::Network(_) | FetchError::Body(_) => true,
            FetchError::Client(_)
            | FetchError::TooLarge { .. }
            | FetchError::ForeignHost { .. } => false,
        }
    }

    /// Whether the failure was a timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, FetchError::Timeout)
    }
}

/// A page as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedPage {
    /// The URL the body came from (after redirects).
    pub url: String,
    /// The body, decoded as UTF-8 (BoA serves UTF-8).
    pub body: String,
    /// sha256 (lower-case hex) of the exact body bytes received.
    pub sha256: String,
    /// When the answer was received.
    pub fetched_at: DateTime<Utc>,
}

/// A binary file (a yearly workbook) as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedFile {
    /// The URL the bytes came from (after redirects).
    pub url: String,
    /// The exact bytes.
    pub bytes: Vec<u8>,
    /// sha256 (lower-case hex) of `bytes`.
    pub sha256: String,
    /// When the answer was received.
    pub fetched_at: DateTime<Utc>,
}

/// How to reach BoA. Tests point `url` at a fake and shrink the timeout and backoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoaClientConfig {
    /// The official rate page.
    pub url: String,
    /// Whole-request timeout (connect, headers and body).
    pub timeout: Duration,
    /// User-Agent sent with every request.
    pub user_agent: String,
    /// Attempts per fetch, at least 1.
    pub attempts: u32,
    /// Wait before the first retry; doubled for each later one.
    pub backoff_base: Duration,
}

impl BoaClientConfig {
    /// Defaults for everything but the page URL.
    pub fn new(url: impl Into<String>) -> Self {
        BoaClientConfig {
            url: url.into(),
            timeout: DEFAULT_TIMEOUT,
            user_agent: DEFAULT_USER_AGENT.to_string(),
            attempts: DEFAULT_ATTEMPTS,
            backoff_base: DEFAULT_BACKOFF_BASE,
        }
    }
}

impl Default for BoaClientConfig {
    fn default() -> Self {
        BoaClientConfig::new(DEFAULT_URL)
    }
}

/// Fetches BoA pages and files with one reused HTTP client.
#[derive(Clone)]
pub struct BoaClient {
    /// Reused for every request (connection pool, TLS sessions).
    http: reqwest::Client,
    config: BoaClientConfig,
    /// Stamps `fetched_at` (the daemon's injected clock: a test's manual time is the
    /// fetch time too).
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for BoaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoaClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl BoaClient {
    /// Builds the client. Installs the ring TLS provider if no process default exists.
    ///
    /// # Errors
    /// [`FetchError::Client`] when the HTTP client cannot be built (e.g. a User-Agent that
    /// is not a valid header value).
    pub fn new(config: BoaClientConfig, clock: Arc<dyn Clock>) -> Result<Self, FetchError> {
        // Harmless when a provider is already installed (then this returns Err).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(config.user_agent.clone())
            .timeout(config.timeout)
            .default_headers(default_headers())
            .build()
            .map_err(|e| FetchError::Client(error_chain(&e)))?;
        Ok(BoaClient {
            http,
            config,
            clock,
        })
    }

    /// The configured page URL.
    pub fn url(&self) -> &str {
        &self.config.url
    }

    /// The configuration in use.
    pub fn config(&self) -> &BoaClientConfig {
        &self.config
    }

    /// Fetches the official rate page (the configured URL).
    ///
    /// # Errors
    /// The last attempt's [`FetchError`] once retries are exhausted, or at once for a
    /// non-retryable one (4xx, a body that is not UTF-8).
    pub async fn fetch(&self) -> Result<FetchedPage, FetchError> {
        self.fetch_url(&self.config.url).await
    }

    /// Fetches any BoA page as text (e.g. the workbook archive index), with retries.
    ///
    /// # Errors
    /// As [`BoaClient::fetch`].
    pub async fn fetch_url(&self, url: &str) -> Result<FetchedPage, FetchError> {
        let file = self.fetch_retrying(url, "page", MAX_PAGE_BYTES).await?;
        let body = String::from_utf8(file.bytes)
            .map_err(|e| FetchError::Body(format!("{} is not UTF-8: {e}", file.url)))?;
        Ok(FetchedPage {
            url: file.url,
            body,
            sha256: file.sha256,
            fetched_at: file.fetched_at,
        })
    }

    /// Fetches a binary file (a yearly workbook), with retries. Only from BoA's host (the
    /// host of the configured page URL), and at most [`MAX_WORKBOOK_BYTES`].
    ///
    /// # Errors
    /// As [`BoaClient::fetch`]; [`FetchError::ForeignHost`] for a link elsewhere (nothing is
    /// requested) or a redirect elsewhere (nothing is read); [`FetchError::TooLarge`].
    pub async fn fetch_bytes(&self, url: &str) -> Result<FetchedFile, FetchError> {
        self.check_boa_host(url)?;
        self.fetch_retrying(url, "workbook", MAX_WORKBOOK_BYTES)
            .await
    }

    /// Refuses a URL whose host is not the configured page's host.
    fn check_boa_host(&self, url: &str) -> Result<(), FetchError> {
        let host = |u: &str| {
            url::Url::parse(u)
                .ok()
                .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        };
        let expected = host(&self.config.url).unwrap_or_default();
        match host(url) {
            Some(h) if !expected.is_empty() && h == expected => Ok(()),
            _ => Err(FetchError::ForeignHost {
                url: url.to_string(),
                expected,
            }),
        }
    }

    /// GET with retries; the body read up to `limit`.
    async fn fetch_retrying(
        &self,
        url: &str,
        what: &'static str,
        limit: usize,
    ) -> Result<FetchedFile, FetchError> {
        let attempts = self.config.attempts.max(1);
        let mut retry = 0;
        loop {
            match self.fetch_once(url, what, limit).await {
                Ok(file) => return Ok(file),
                Err(err) if err.is_retryable() && retry + 1 < attempts => {
                    retry += 1;
                    let wait = backoff_delay(self.config.backoff_base, retry);
                    tracing::warn!(%url, error = %err, attempt = retry, retry_in = ?wait, "BoA fetch failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// One GET, no retry.
    async fn fetch_once(
        &self,
        url: &str,
        what: &'static str,
        limit: usize,
    ) -> Result<FetchedFile, FetchError> {
        let resp = self.http.get(url).send().await.map_err(classify)?;
        let status = resp.status();
        let final_url = resp.url().to_string();
        if !status.is_success() {
            return Err(FetchError::Status {
                status: status.as_u16(),
                url: final_url,
            });
        }
        if what == "workbook" {
            // A redirect may have left BoA: read nothing from elsewhere.
            self.check_boa_host(&final_url)?;
        }
        let bytes = crate::outbound::read_capped(resp, limit)
            .await
            .map_err(|e| match e {
                CapError::TooLarge { limit } => FetchError::TooLarge {
                    url: final_url.clone(),
                    what,
                    limit,
                },
                CapError::Read(e) if e.is_timeout() => FetchError::Timeout,
                CapError::Read(e) => FetchError::Body(error_chain(&e)),
            })?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        Ok(FetchedFile {
            url: final_url,
            bytes: bytes.to_vec(),
            sha256,
            fetched_at: self.clock.now(),
        })
    }
}

/// What a browser asks for, so the request looks ordinary to Cloudflare.
fn default_headers() -> reqwest::header::HeaderMap {
    use reqwest::header::{HeaderValue, ACCEPT, ACCEPT_LANGUAGE};
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        ACCEPT,
        HeaderValue::from_static("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    );
    h.insert(ACCEPT_LANGUAGE, HeaderValue::from_static("sq,en;q=0.7"));
    h
}

/// Maps a send error to timeout / network.
fn classify(e: reqwest::Error) -> FetchError {
    if e.is_timeout() {
        FetchError::Timeout
    } else {
        FetchError::Network(error_chain(&e))
    }
}

/// The error and its sources, `: `-joined (reqwest's own Display hides the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::clock::SystemClock;

    #[test]
    fn backoff_doubles() {
        let base = Duration::from_millis(100);
        assert_eq!(backoff_delay(base, 1), Duration::from_millis(100));
        assert_eq!(backoff_delay(base, 2), Duration::from_millis(200));
        assert_eq!(backoff_delay(base, 3), Duration::from_millis(400));
        // Never overflows.
        assert!(backoff_delay(Duration::from_secs(u64::MAX / 2), 40) >= Duration::from_secs(1));
    }

    #[test]
    fn retryable() {
        let status = |s| FetchError::Status {
            status: s,
            url: "u".into(),
        };
        assert!(status(500).is_retryable());
        assert!(status(503).is_retryable());
        assert!(!status(404).is_retryable());
        assert!(!status(403).is_retryable());
        assert!(!status(429).is_retryable());
        assert!(FetchError::Timeout.is_retryable());
        assert!(FetchError::Timeout.is_timeout());
        assert!(FetchError::Network("reset".into()).is_retryable());
        assert!(FetchError::Body("cut".into()).is_retryable());
        assert!(!FetchError::Client("bad".into()).is_retryable());
        assert_eq!(status(503).to_string(), "u answered HTTP 503");
    }

    #[test]
    fn config_defaults() {
        let c = BoaClientConfig::default();
        assert_eq!(c.url, DEFAULT_URL);
        assert_eq!(c.attempts, 3);
        assert!(c.user_agent.starts_with("Mozilla/5.0") && c.user_agent.contains("Firefox/"));
        assert!(BoaClient::new(c, Arc::new(SystemClock)).is_ok());
        let bad = BoaClientConfig {
            user_agent: "bad\nagent".into(),
            ..BoaClientConfig::default()
        };
        assert!(matches!(
            BoaClient::new(bad, Arc::new(SystemClock)),
            Err(FetchError::Client(_))
        ));
    }

    fn quick(url: &str) -> BoaClient {
        BoaClient::new(
            BoaClientConfig {
                attempts: 3,
                backoff_base: Duration::from_millis(1),
                timeout: Duration::from_secs(5),
                ..BoaClientConfig::new(url)
            },
            Arc::new(SystemClock),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn pages_over_4_mib_are_refused_and_not_retried() {
        let base =
            crate::outbound::tests::serve_once(200, "", vec![b'a'; MAX_PAGE_BYTES + 1]).await;
        let err = quick(&format!("{base}/")).fetch().await.unwrap_err();
        assert!(
            matches!(err, FetchError::TooLarge { limit, what: "page", .. } if limit == MAX_PAGE_BYTES),
            "{err}"
        );
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("larger than 4 MiB"), "{err}");
        let base = crate::outbound::tests::serve_once(200, "", vec![b'a'; 1000]).await;
        assert_eq!(
            quick(&format!("{base}/")).fetch().await.unwrap().body.len(),
            1000
        );
    }

    #[tokio::test]
    async fn workbooks_only_from_boa_host_and_at_most_32_mib() {
        let base =
            crate::outbound::tests::serve_once(200, "", vec![b'w'; MAX_WORKBOOK_BYTES + 10]).await;
        let client = quick(&format!("{base}/Tregjet/"));
        let err = client
            .fetch_bytes(&format!("{base}/rc/doc/2024.xlsx"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                FetchError::TooLarge {
                    what: "workbook",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("32 MiB"), "{err}");

        // Same port, other host name: refused before any request.
        let foreign = base.replace("127.0.0.1", "localhost");
        let err = client
            .fetch_bytes(&format!("{foreign}/rc/doc/2024.xlsx"))
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::ForeignHost { .. }), "{err}");
        assert!(!err.is_retryable());
        assert!(
            err.to_string().contains("is not on BoA's host 127.0.0.1"),
            "{err}"
        );
        let err = client.fetch_bytes("not a url").await.unwrap_err();
        assert!(matches!(err, FetchError::ForeignHost { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_workbook_redirected_off_host_is_not_read() {
        let elsewhere = crate::outbound::tests::serve_once(200, "", vec![b'w'; 10]).await;
        let elsewhere = elsewhere.replace("127.0.0.1", "localhost");
        let boa = crate::outbound::tests::serve_once(
            302,
            &format!("location: {elsewhere}/x.xlsx\r\ncontent-length: 0\r\n"),
            Vec::new(),
        )
        .await;
        let err = quick(&format!("{boa}/"))
            .fetch_bytes(&format!("{boa}/rc/doc/2024.xlsx"))
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::ForeignHost { .. }), "{err}");
    }

    #[tokio::test]
    async fn connection_refused_is_a_network_error_after_all_attempts() {
        // Bind then drop a listener to get a port nobody listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let client = BoaClient::new(
            BoaClientConfig {
                attempts: 2,
                backoff_base: Duration::from_millis(1),
                timeout: Duration::from_secs(5),
                ..BoaClientConfig::new(format!("http://127.0.0.1:{port}/"))
            },
            Arc::new(SystemClock),
        )
        .unwrap();
        let err = client.fetch().await.unwrap_err();
        assert!(matches!(err, FetchError::Network(_)), "{err}");
    }
}
