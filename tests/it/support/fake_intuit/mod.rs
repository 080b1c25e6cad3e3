//! A faithful fake of Intuit OAuth 2.0 and the QuickBooks Online accounting API, for
//! integration tests (`docs/quickbooks-api.md` is the behaviour it reproduces).
//!
//! One hyper server on `127.0.0.1:0` serves the discovery document, the browser authorize
//! endpoint (auto-approving), the token and revoke endpoints, and `/v3/company/{realm}/...`.
//! It follows reqwest's `tests/support/server` pattern: the server runs on its own thread
//! with its own runtime (so a test that blocks its runtime, e.g. on a child process, cannot
//! starve it, and `tokio::time::pause` in a test does not freeze it), it is torn down on
//! `Drop`, and a panic inside a handler is answered with 500, recorded, and re-raised when the
//! fake is dropped, so it fails the test.
//!
//! All state lives in one `std::sync::Mutex`, never held across an `.await`; every call is
//! O(1)/O(log n) in the number of realms (the sync benchmark drives 10,000 realms). Time is
//! the fake's own clock (`now()`): wall time plus whatever `advance` added, so tokens and codes
//! expire without sleeping.
//!
//! The fake must not grow behaviour that the doc contradicts just because our client would
//! like it. Where Intuit's behaviour is UNCERTAIN in the doc, this is what the fake does
//! (switches in [`FakeIntuitConfig`] / knobs on [`FakeIntuit`] where either answer is
//! plausible):
//!
//! - Denied consent: `redirect_uri?error=access_denied&state=...` (no realmId, no description).
//! - Codes live `code_lifetime` (300 s). A reused code is `invalid_grant`; tokens already issued
//!   from it stay valid. A wrong `redirect_uri` at exchange does not burn the code.
//! - Bad client credentials: 401 `{"error":"invalid_client"}` with `WWW-Authenticate: Basic`.
//! - PKCE parameters are ignored, not rejected.
//! - A refresh with the previous token (inside its grace) answers the *current* refresh token.
//!   The rolling window restarts on every successful refresh, capped by the hard expiry
//!   (default 5 × 365 + 1 days from the code exchange).
//! - Concurrent refreshes of one grant are counted; they break the chain only with
//!   `concurrent_refresh_revokes`.
//! - Revoke with an unknown token: 200 (RFC 7009). Revoke needs a JSON body. A new code exchange
//!   for an already connected realm adds a grant; the old one keeps working.
//! - `x_refresh_token_hard_expires_in` is sent whenever the opt-in header is (never omitted).
//! - `minorversion` is accepted with any value, or none.
//! - An access token of another realm gets 401 (not 403).
//! - 401 bodies: lower-case gateway JSON (`xml_401` for the XML flavour). 429 bodies: Intuit's
//!   XML ThrottleExceeded (`xml_429 = false` for JSON); no `Retry-After` unless `retry_after`.
//! - `GET exchangerate` for a date without a row: nearest earlier row (`missing_rate`), or
//!   400 Fault 610. Without `asofdate`, "today" is the fake clock's UTC date.
//! - Queries: no matches → `"QueryResponse":{}`; `maxResults` = entities returned; `totalCount`
//!   = the same page count (never the overall total); MAXRESULTS over 1000 → 400 Fault 4001;
//!   parse errors → 4000; unknown fields → 4001. Field projections are not implemented (the
//!   test fails loudly). CompanyCurrency never lists the home currency; inactive ones are listed
//!   with `Active:false`. A company without multicurrency lists no currencies and no rates.
//! - ExchangeRate POST: inactive or unknown currency → 400 ValidationFault **610**; source =
//!   home, target ≠ home, rate ≤ 0, multicurrency off → 400 ValidationFault **6000**; stale
//!   SyncToken → 5010; no row and no SyncToken → 2020 (`require_sync_token = false` creates);
//!   any SyncToken on a date without a row creates it with "0". `Rate` must be a JSON number
//!   and `SyncToken` a JSON string, unknown fields and a non-JSON Content-Type get 2010 (the fake
//!   is strict where the doc states the type). Rates are stored exactly as sent, optionally
//!   rounded to `rate_scale`.
//! - `requestid`: 1–50 characters or 400 Fault 2010. Only answers the write handler produced
//!   (200 and 400 Faults) are cached; gateway answers (401, 429, injected 5xx) are not, so a
//!   retry after them runs. Reusing an id with a different body replays the first answer and is
//!   reported by `requestid_conflicts()`.
//! - Without `Accept: application/json` QuickBooks answers XML; the fake answers an XML
//!   placeholder (it does not render entities as XML).
//! - `exchange_rate_query_fault`: every ExchangeRate query gets 400 ValidationFault 4001
//!   while single GETs work (the period a client library reported, doc §4).
//! - Batch and every entity not listed above: 400 Fault 500 "Unsupported Operation".
//!
//! Test-only route: `GET /__fake/panic` panics inside a handler (to test the panic plumbing).
//!
//! # Layout
//! This file holds the public value types and constants; [`FakeIntuit`] (the handle and its
//! knobs) is in `handle.rs`, the internal state under the one lock in `state.rs`, the accept
//! loop and routing in `server.rs`, OAuth in `oauth.rs`, the accounting gateway (latency,
//! injected and random failures, throttling, bearer checks) in `faults.rs`, the entities in
//! `accounting.rs`, the query language in `query.rs`, and response helpers in `respond.rs`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rand::RngCore;
use rust_decimal::Decimal;
use serde_json::{json, Value};

/// The OAuth scope our daemon asks for; the authorize endpoint insists on it.
pub const ACCOUNTING_SCOPE: &str = "com.intuit.quickbooks.accounting";

/// Scopes Intuit knows; anything else in `scope` is refused at authorize time.
const KNOWN_SCOPES: &[&str] = &[
    ACCOUNTING_SCOPE,
    "com.intuit.quickbooks.payment",
    "openid",
    "profile",
    "email",
    "phone",
    "address",
];

/// A refresh while the grant's newest access token has more than this left is "early".
const EARLY_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Longest `requestid` Intuit accepts (doc §3).
const MAX_REQUEST_ID_LEN: usize = 50;

/// Query paging defaults and cap (doc §4; the cap's error text is Intuit's).
const DEFAULT_MAX_RESULTS: usize = 100;
const MAX_MAX_RESULTS: usize = 1000;

mod accounting;
mod faults;
mod handle;
mod oauth;
mod query;
mod respond;
mod server;
mod state;

use accounting::*;
use faults::*;
pub use handle::FakeIntuit;
use oauth::*;
use query::*;
use respond::*;
use server::*;
use state::*;

// ---------------------------------------------------------------------------------------------
// Configuration and public value types
// ---------------------------------------------------------------------------------------------

/// What the fake does when `GET .../exchangerate` names a date that has no row for that
/// currency. Intuit's behaviour is UNCERTAIN (doc §4), so both plausible answers exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingRate {
    /// Answer with the latest row dated before the requested date (its `AsOfDate` differs
    /// from the one asked for, which the client must notice); 400 Fault 610 when there is none.
    #[default]
    NearestEarlier,
    /// Answer 400 Fault 610 "Object Not Found".
    NotFound,
}

/// A per-realm token bucket: at most `requests` calls per `per`, refilled continuously.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Bucket size (and the number of calls allowed per `per`).
    pub requests: u32,
    /// The window the bucket refills over.
    pub per: Duration,
}

impl RateLimit {
    /// `n` calls per second (Intuit: 10 per second per realm and app).
    pub fn per_second(n: u32) -> Self {
        RateLimit {
            requests: n,
            per: Duration::from_secs(1),
        }
    }

    /// `n` calls per minute (Intuit: 500 per minute per realm).
    pub fn per_minute(n: u32) -> Self {
        RateLimit {
            requests: n,
            per: Duration::from_secs(60),
        }
    }

    /// Intuit's published accounting limits: 10/s and 500/min per realm.
    pub fn intuit() -> Vec<RateLimit> {
        vec![RateLimit::per_second(10), RateLimit::per_minute(500)]
    }
}

/// Everything about the fake that a test may want to change before it starts. Most of it can
/// also be changed later through the knobs on [`FakeIntuit`].
#[derive(Debug, Clone)]
pub struct FakeIntuitConfig {
    /// The registered app's client id (Basic auth user, `client_id` at authorize).
    pub client_id: String,
    /// The registered app's client secret (Basic auth password).
    pub client_secret: String,
    /// The registered redirect URI; authorize and code exchange require an exact match.
    /// More can be registered later with [`FakeIntuit::register_redirect_uri`].
    pub redirect_uri: String,
    /// How long an authorization code can be exchanged (UNCERTAIN at Intuit; about 5 min).
    pub code_lifetime: Duration,
    /// Access token lifetime (`expires_in`).
    pub access_token_lifetime: Duration,
    /// Rolling refresh token validity, restarted by each successful refresh
    /// (`x_refresh_token_expires_in`).
    pub refresh_token_lifetime: Duration,
    /// A refresh returns a new refresh token only once the current one is at least this old.
    pub rotation_interval: Duration,
    /// How long the previous refresh token keeps working after a rotation.
    pub previous_token_grace: Duration,
    /// Hard cap on a grant's life, from the original authorization (Intuit: 5 years).
    pub hard_expiry: Duration,
    /// The fake clock's starting instant (default: the real now).
    pub start_time: Option<DateTime<Utc>>,
    /// `GET exchangerate` for a date without a row.
    pub missing_rate: MissingRate,
    /// Round stored rates to this many decimals (half to even); `None` stores them as sent.
    pub rate_scale: Option<u32>,
    /// Whether a POST for a date without a row must carry a `SyncToken` (UNCERTAIN at Intuit;
    /// `true` answers 400 Fault 2020 when it is missing, `false` creates the row).
    pub require_sync_token: bool,
    /// 429 bodies are Intuit's XML `ThrottleExceeded` fault (the common case) instead of the
    /// gateway JSON.
    pub xml_429: bool,
    /// 401 bodies are the XML `AuthenticationFault` instead of the lower-case gateway JSON.
    pub xml_401: bool,
    /// Add `Retry-After: <secs>` to every 429 (its presence at Intuit is UNCERTAIN).
    pub retry_after: Option<Duration>,
    /// Per-realm cap on in-flight accounting calls; over it, 429 (Intuit: 10).
    pub concurrency_cap: Option<usize>,
    /// Per-realm token buckets; a call needs a token from every bucket or gets 429.
    /// Off by default so tests are not slowed by Intuit's 60 s back-off; see
    /// [`RateLimit::intuit`].
    pub rate_limits: Vec<RateLimit>,
    /// Delay added to every request (OAuth and API); per-realm values override it for the API.
    pub latency: Duration,
    /// Keep a log of every request (headers and body included). Turn off for benchmarks.
    pub record_requests: bool,
    /// A third party reports (unverified, doc §2) that concurrent refreshes can invalidate
    /// the token chain. The fake always counts overlapping refreshes of one grant
    /// ([`FakeIntuit::concurrent_refreshes`]); with this on, an overlap also revokes the grant.
    /// Overlaps are only observable while a refresh is in flight, so give the fake some
    /// `latency` in tests that rely on this.
    pub concurrent_refresh_revokes: bool,
    /// Refuse every ExchangeRate *query* with 400 ValidationFault 4001 while single GETs
    /// keep working (doc §4: a client library reported such a period at QuickBooks).
    pub exchange_rate_query_fault: bool,
}

impl Default for FakeIntuitConfig {
    fn default() -> Self {
        FakeIntuitConfig {
            client_id: "fake-client-id".to_string(),
            client_secret: "fake-client-secret".to_string(),
            redirect_uri: "http://localhost:8000/api/v1/oauth/callback".to_string(),
            code_lifetime: Duration::from_secs(300),
            access_token_lifetime: Duration::from_secs(3600),
            refresh_token_lifetime: Duration::from_secs(8_726_400),
            rotation_interval: Duration::from_secs(24 * 3600),
            previous_token_grace: Duration::from_secs(24 * 3600),
            hard_expiry: Duration::from_secs(5 * 365 * 24 * 3600 + 24 * 3600),
            start_time: None,
            missing_rate: MissingRate::default(),
            rate_scale: None,
            require_sync_token: true,
            xml_429: true,
            xml_401: false,
            retry_after: None,
            concurrency_cap: Some(10),
            rate_limits: Vec::new(),
            latency: Duration::ZERO,
            record_requests: true,
            concurrent_refresh_revokes: false,
            exchange_rate_query_fault: false,
        }
    }
}

/// A QuickBooks company the fake can hand out at authorize time.
#[derive(Debug, Clone)]
pub struct CompanySpec {
    /// The realm id (company id), digits.
    pub realm_id: String,
    /// `CompanyInfo.CompanyName` (and `LegalName`).
    pub name: String,
    /// `Preferences.CurrencyPrefs.HomeCurrency.value`.
    pub home_currency: String,
    /// `Preferences.CurrencyPrefs.MultiCurrencyEnabled`.
    pub multicurrency: bool,
    /// CompanyCurrency rows with `Active: true` (the home currency is never listed).
    pub active_currencies: Vec<String>,
    /// CompanyCurrency rows with `Active: false`.
    pub inactive_currencies: Vec<String>,
    /// `CompanyInfo.Country`.
    pub country: String,
}

impl Default for CompanySpec {
    fn default() -> Self {
        CompanySpec {
            realm_id: "9341453199574798".to_string(),
            name: "Fake Tregtia Sh.p.k.".to_string(),
            home_currency: "ALL".to_string(),
            multicurrency: true,
            active_currencies: vec!["EUR".to_string(), "USD".to_string()],
            inactive_currencies: Vec::new(),
            country: "AL".to_string(),
        }
    }
}

impl CompanySpec {
    /// An ALL-home multicurrency company with EUR and USD active, under this realm and name.
    pub fn new(realm_id: impl Into<String>, name: impl Into<String>) -> Self {
        CompanySpec {
            realm_id: realm_id.into(),
            name: name.into(),
            ..CompanySpec::default()
        }
    }
}

/// One exchange-rate row as the fake stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRate {
    /// `SourceCurrencyCode`.
    pub source: String,
    /// `TargetCurrencyCode` (the home currency when the row was written).
    pub target: String,
    /// `AsOfDate`.
    pub date: NaiveDate,
    /// `Rate`, exactly as sent (or rounded to `rate_scale`).
    pub rate: Decimal,
    /// `SyncToken` ("0" on create, incremented on each update).
    pub sync_token: String,
    /// `MetaData.LastUpdatedTime` on the fake clock.
    pub last_updated: DateTime<Utc>,
}

/// One request as the fake received it, so tests can assert what the client *sent*.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path plus query, as sent (still percent-encoded).
    pub path_and_query: String,
    /// The realm for `/v3/company/{realm}/...` calls; `None` for OAuth endpoints.
    pub realm: Option<String>,
    /// Every header, names lower-case, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body as (lossy) UTF-8.
    pub body: String,
    /// The status answered; `None` while the request is still in flight.
    pub status: Option<u16>,
}

impl RecordedRequest {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The decoded value of a query parameter (name case-insensitive).
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.path_and_query.split_once('?')?.1;
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.into_owned())
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.path_and_query
            .split_once('?')
            .map_or(self.path_and_query.as_str(), |(p, _)| p)
    }
}
