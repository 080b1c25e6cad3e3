//! The demo's sandbox: the Bank of Albania page (the real 22.05.2026 capture, embedded) and
//! a small QuickBooks Online + Intuit OAuth stand-in with sample companies, served over HTTP
//! on loopback.
//!
//! Only `boa-exchange demo` starts it; `serve` never reaches it. It is deliberately small:
//! an authorize page where the visitor picks a company, a token endpoint (code exchange and
//! refresh with rotation), revoke, CompanyInfo, Preferences, the CompanyCurrency and
//! ExchangeRate queries, the single ExchangeRate GET and the ExchangeRate write (idempotent
//! by `requestid`). It keeps everything in memory and checks what a real server would refuse
//! (wrong client, reused code, unknown token, home or inactive currency, stale SyncToken).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::NaiveDate;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, LOCATION};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::http::pages::esc;
use crate::locks::lock;
use crate::time::clock::Clock;

/// The real BoA page of Friday 22 May 2026 (English), byte for byte.
pub const BOA_PAGE: &str =
    include_str!("../../tests/fixtures/boa/official-rate-en-2026-05-22.html");
/// The main fixing date of [`BOA_PAGE`].
pub const FIXING_DATE: &str = "2026-05-22";
/// Where the sandbox serves the BoA page.
pub const BOA_PATH: &str = "/Markets/Official_exchange_rate/";
/// The demo app's client id and secret (the sandbox accepts only these).
pub const CLIENT_ID: &str = "demo-client-id";
/// See [`CLIENT_ID`].
pub const CLIENT_SECRET: &str = "demo-client-secret";

/// A sample QuickBooks company.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleCompany {
    /// Realm id.
    pub realm: &'static str,
    /// `CompanyInfo.CompanyName`.
    pub name: &'static str,
    /// Home currency.
    pub home: &'static str,
    /// Active currencies besides the home one.
    pub active: &'static [&'static str],
}

/// The sample companies. The demo connects the first three; the fourth is left for the
/// visitor's own Connect.
pub const COMPANIES: [SampleCompany; 4] = [
    SampleCompany {
        realm: "9341453100000001",
        name: "Tirana Trading sh.p.k.",
        home: "ALL",
        active: &["USD", "EUR", "GBP"],
    },
    SampleCompany {
        realm: "9341453100000002",
        name: "Adriatic Holdings GmbH",
        home: "EUR",
        active: &["USD", "GBP", "ALL"],
    },
    SampleCompany {
        realm: "9341453100000003",
        name: "Balkan Exports Inc.",
        home: "USD",
        active: &["EUR", "GBP", "ALL"],
    },
    SampleCompany {
        realm: "9341453100000004",
        name: "Skanderbeg Imports Ltd",
        home: "GBP",
        active: &["USD", "EUR", "ALL"],
    },
];

/// How many of [`COMPANIES`] the demo connects itself.
pub const CONNECTED_BY_DEMO: usize = 3;

/// One stored QuickBooks exchange rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRate {
    /// `Rate` exactly as the last write sent it (JSON number text).
    pub rate: String,
    /// Incremented on every update.
    pub sync_token: u64,
}

/// One accepted ExchangeRate write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// Realm.
    pub realm: String,
    /// `SourceCurrencyCode`.
    pub currency: String,
    /// `AsOfDate`.
    pub date: NaiveDate,
    /// `Rate` as sent.
    pub rate: String,
}

#[derive(Default)]
struct Inner {
    /// code → (realm, redirect_uri); removed when used.
    codes: HashMap<String, (String, String)>,
    /// Every refresh token still accepted → realm (a rotated-out one keeps working, as
    /// Intuit's 24 h grace does).
    refresh: HashMap<String, String>,
    /// Access token → realm.
    access: HashMap<String, String>,
    /// (realm, currency, date) → rate.
    rates: BTreeMap<(String, String, NaiveDate), StoredRate>,
    /// (realm, requestid) → the first answer.
    requests: HashMap<(String, String), (u16, String)>,
    writes: Vec<Write>,
    counter: u64,
}

impl Inner {
    fn mint(&mut self, kind: &str) -> String {
        self.counter += 1;
        let r: u64 = rand::random();
        format!("{kind}-{}-{r:016x}", self.counter)
    }
}

/// A running sandbox; stops serving when dropped.
pub struct Sandbox {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    stop: CancellationToken,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

type Shared = (Arc<Mutex<Inner>>, Arc<dyn Clock>);

impl Sandbox {
    /// Starts serving on 127.0.0.1 (a free port). `clock` dates the answers' `time`.
    ///
    /// # Errors
    /// The port cannot be bound.
    pub async fn start(clock: Arc<dyn Clock>) -> std::io::Result<Sandbox> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Mutex::new(Inner::default()));
        let stop = CancellationToken::new();
        let shared: Shared = (inner.clone(), clock);
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let shared = shared.clone();
                        let svc = service_fn(move |req| {
                            let shared = shared.clone();
                            async move { Ok::<_, Infallible>(handle(&shared, req).await) }
                        });
                        tokio::spawn(hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc));
                    }
                }
            }
        });
        Ok(Sandbox { addr, inner, stop })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The BoA page's URL.
    pub fn boa_url(&self) -> String {
        format!("{}{BOA_PATH}", self.base())
    }

    /// Intuit's authorize page.
    pub fn authorize_url(&self) -> String {
        format!("{}/connect/oauth2", self.base())
    }

    /// Intuit's token endpoint.
    pub fn token_url(&self) -> String {
        format!("{}/oauth2/v1/tokens/bearer", self.base())
    }

    /// Intuit's revoke endpoint.
    pub fn revoke_url(&self) -> String {
        format!("{}/v2/oauth2/tokens/revoke", self.base())
    }

    /// The accounting API base.
    pub fn api_base(&self) -> String {
        format!("{}/", self.base())
    }

    /// Every accepted write, in order.
    pub fn writes(&self) -> Vec<Write> {
        lock(&self.inner).writes.clone()
    }

    /// The rate a company holds for a currency and date.
    pub fn rate(&self, realm: &str, currency: &str, date: NaiveDate) -> Option<StoredRate> {
        lock(&self.inner)
            .rates
            .get(&(realm.to_string(), currency.to_string(), date))
            .cloned()
    }
}

fn company(realm: &str) -> Option<&'static SampleCompany> {
    COMPANIES.iter().find(|c| c.realm == realm)
}

fn respond(status: u16, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert("intuit_tid", HeaderValue::from_static("demo-sandbox"));
    r
}

fn json_answer(status: u16, v: &Value) -> Response<Full<Bytes>> {
    respond(status, "application/json", v.to_string())
}

fn redirect(to: &str) -> Response<Full<Bytes>> {
    let mut r = respond(302, "text/plain", String::new());
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

fn fault(status: u16, kind: &str, code: &str, message: &str) -> Response<Full<Bytes>> {
    json_answer(
        status,
        &json!({"Fault": {"type": kind, "Error": [{"Message": message, "Detail": message, "code": code}]}}),
    )
}

fn page(title: &str, body: &str) -> Response<Full<Bytes>> {
    respond(
        200,
        "text/html; charset=utf-8",
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
             <title>{t}</title><style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem}}\
             a.pick{{display:block;border:1px solid #2CA01C;border-radius:4px;padding:.6rem 1rem;margin:.5rem 0;color:#222;text-decoration:none}}\
             a.pick:hover{{background:#eef8ec}}</style></head><body><h1>{t}</h1>{body}</body></html>",
            t = esc(title)
        ),
    )
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, 64 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return respond(413, "text/plain", "body too large".into()),
    };
    let query: HashMap<String, String> = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let auth = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let (inner, clock) = shared;
    let time = clock.now().to_rfc3339();
    let path = parts.uri.path().to_string();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let m = &parts.method;
    match segs.as_slice() {
        ["Markets", "Official_exchange_rate"] if m == Method::GET => {
            respond(200, "text/html; charset=utf-8", BOA_PAGE.to_string())
        }
        ["connect", "oauth2"] if m == Method::GET => authorize_page(&query),
        ["connect", "oauth2", "approve"] if m == Method::GET => approve(inner, &query),
        ["oauth2", "v1", "tokens", "bearer"] if m == Method::POST => token(inner, &auth, &body),
        ["v2", "oauth2", "tokens", "revoke"] if m == Method::POST => {
            if !client_ok(&auth) {
                return json_answer(401, &json!({"error": "invalid_client"}));
            }
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if let Some(t) = v["token"].as_str() {
                let mut g = lock(inner);
                if let Some(realm) = g.refresh.remove(t).or_else(|| g.access.remove(t)) {
                    g.refresh.retain(|_, r| *r != realm);
                    g.access.retain(|_, r| *r != realm);
                }
            }
            respond(200, "application/json", String::new())
        }
        ["v3", "company", realm, rest @ ..] => {
            let authorized = auth
                .strip_prefix("Bearer ")
                .and_then(|t| lock(inner).access.get(t).cloned())
                .is_some_and(|r| r == *realm);
            let Some(c) = company(realm).filter(|_| authorized) else {
                return json_answer(
                    401,
                    &json!({"fault": {"error": [{"message": "message=AuthenticationFailed; errorCode=003200; statusCode=401", "code": "3200"}], "type": "AUTHENTICATION"}}),
                );
            };
            accounting(inner, c, m, rest, &query, &body, &time)
        }
        _ => respond(404, "text/plain", format!("no sandbox endpoint {m} {path}")),
    }
}

fn client_ok(auth: &str) -> bool {
    let expected = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{CLIENT_ID}:{CLIENT_SECRET}"),
    );
    auth.strip_prefix("Basic ") == Some(expected.as_str())
}

/// Intuit's consent page, reduced to "pick a sample company".
fn authorize_page(q: &HashMap<String, String>) -> Response<Full<Bytes>> {
    let (Some(client), Some(redirect_uri), Some(state)) =
        (q.get("client_id"), q.get("redirect_uri"), q.get("state"))
    else {
        return respond(
            400,
            "text/plain",
            "client_id, redirect_uri and state are required".into(),
        );
    };
    if client != CLIENT_ID || q.get("response_type").map(String::as_str) != Some("code") {
        return respond(400, "text/plain", "unknown client or response_type".into());
    }
    let link = |extra: &[(&str, &str)]| {
        let mut u = url::form_urlencoded::Serializer::new(String::new());
        u.append_pair("redirect_uri", redirect_uri)
            .append_pair("state", state);
        for (k, v) in extra {
            u.append_pair(k, v);
        }
        format!("/connect/oauth2/approve?{}", u.finish())
    };
    let mut body = String::from(
        "<p>This is the demo's stand-in for Intuit's sign-in and consent page. Pick the sample \
         QuickBooks company to connect to <strong>boa-exchange</strong>:</p>",
    );
    for c in &COMPANIES {
        body.push_str(&format!(
            "<a class=\"pick\" href=\"{}\"><strong>{}</strong><br>home currency {}, also uses {}</a>",
            esc(&link(&[("realmId", c.realm)])),
            esc(c.name),
            esc(c.home),
            esc(&c.active.join(", ")),
        ));
    }
    body.push_str(&format!(
        "<p><a href=\"{}\">Cancel (deny access)</a></p>",
        esc(&link(&[("error", "access_denied")]))
    ));
    page("Connect to QuickBooks (demo sandbox)", &body)
}

/// The visitor picked a company (or denied): back to the app with a code.
fn approve(inner: &Mutex<Inner>, q: &HashMap<String, String>) -> Response<Full<Bytes>> {
    let (Some(redirect_uri), Some(state)) = (q.get("redirect_uri"), q.get("state")) else {
        return respond(
            400,
            "text/plain",
            "redirect_uri and state are required".into(),
        );
    };
    let Ok(mut back) = url::Url::parse(redirect_uri) else {
        return respond(400, "text/plain", "bad redirect_uri".into());
    };
    if q.get("error").is_some() {
        back.query_pairs_mut()
            .append_pair("error", "access_denied")
            .append_pair("state", state);
        return redirect(back.as_str());
    }
    let Some(c) = q.get("realmId").and_then(|r| company(r)) else {
        return respond(400, "text/plain", "unknown sample company".into());
    };
    let mut g = lock(inner);
    let code = g.mint("code");
    g.codes
        .insert(code.clone(), (c.realm.to_string(), redirect_uri.clone()));
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", state)
        .append_pair("realmId", c.realm);
    redirect(back.as_str())
}

fn token(inner: &Mutex<Inner>, auth: &str, body: &[u8]) -> Response<Full<Bytes>> {
    if !client_ok(auth) {
        return json_answer(401, &json!({"error": "invalid_client"}));
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let invalid_grant = || {
        json_answer(
            400,
            &json!({"error": "invalid_grant", "error_description": "Token invalid"}),
        )
    };
    let mut g = lock(inner);
    let realm = match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let code = form.get("code").cloned().unwrap_or_default();
            match g.codes.remove(&code) {
                Some((realm, uri)) if form.get("redirect_uri") == Some(&uri) => realm,
                _ => return invalid_grant(),
            }
        }
        Some("refresh_token") => {
            let rt = form.get("refresh_token").cloned().unwrap_or_default();
            match g.refresh.get(&rt) {
                Some(realm) => realm.clone(),
                None => return invalid_grant(),
            }
        }
        _ => {
            return json_answer(400, &json!({"error": "unsupported_grant_type"}));
        }
    };
    // Every grant and refresh issues a new refresh token (rotation); earlier ones stay
    // accepted, as during Intuit's grace period.
    let access = g.mint("at");
    let refresh = g.mint("rt");
    g.access.insert(access.clone(), realm.clone());
    g.refresh.insert(refresh.clone(), realm);
    json_answer(
        200,
        &json!({"token_type": "bearer", "access_token": access, "expires_in": 3600,
                "refresh_token": refresh, "x_refresh_token_expires_in": 8_726_400}),
    )
}

fn accounting(
    inner: &Mutex<Inner>,
    c: &SampleCompany,
    m: &Method,
    rest: &[&str],
    q: &HashMap<String, String>,
    body: &[u8],
    time: &str,
) -> Response<Full<Bytes>> {
    match rest {
        ["companyinfo", _] if m == Method::GET => json_answer(
            200,
            &json!({"CompanyInfo": {"Id": "1", "SyncToken": "0", "CompanyName": c.name, "LegalName": c.name,
                    "Country": if c.home == "ALL" { "AL" } else { "" }}, "time": time}),
        ),
        ["preferences"] if m == Method::GET => json_answer(
            200,
            &json!({"Preferences": {"CurrencyPrefs": {"MultiCurrencyEnabled": true,
                    "HomeCurrency": {"value": c.home}}}, "time": time}),
        ),
        ["query"] if m == Method::GET => {
            let text = q.get("query").map(String::as_str).unwrap_or("");
            query(inner, c, text, time)
        }
        ["exchangerate"] if m == Method::GET => {
            let code = q.get("sourcecurrencycode").cloned().unwrap_or_default();
            let date = q
                .get("asofdate")
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
            let g = lock(inner);
            let found = date.and_then(|d| {
                g.rates
                    .get(&(c.realm.to_string(), code.to_uppercase(), d))
                    .map(|r| rate_json(c, &code.to_uppercase(), d, r))
            });
            match found {
                Some(r) => json_answer(200, &json!({"ExchangeRate": r, "time": time})),
                None => fault(400, "ValidationFault", "610", "Object Not Found"),
            }
        }
        ["exchangerate"] if m == Method::POST => {
            let Some(request_id) = q.get("requestid").cloned() else {
                return fault(
                    400,
                    "ValidationFault",
                    "2020",
                    "Required param missing: requestid",
                );
            };
            let key = (c.realm.to_string(), request_id);
            if let Some((status, body)) = lock(inner).requests.get(&key) {
                return respond(*status, "application/json", body.clone());
            }
            let (status, answer) = write(inner, c, body, time);
            let text = answer.to_string();
            lock(inner).requests.insert(key, (status, text.clone()));
            respond(status, "application/json", text)
        }
        _ => fault(
            400,
            "ValidationFault",
            "2020",
            "Unsupported operation in the demo sandbox",
        ),
    }
}

fn rate_json(c: &SampleCompany, code: &str, date: NaiveDate, r: &StoredRate) -> Value {
    let rate: Value = serde_json::from_str(&r.rate).unwrap_or(Value::Null);
    json!({"SyncToken": r.sync_token.to_string(), "domain": "QBO", "sparse": false,
           "AsOfDate": date.to_string(), "SourceCurrencyCode": code, "TargetCurrencyCode": c.home,
           "Rate": rate, "MetaData": {"LastUpdatedTime": "2026-05-22T05:00:00-07:00"}})
}

fn write(inner: &Mutex<Inner>, c: &SampleCompany, body: &[u8], time: &str) -> (u16, Value) {
    let fault_v = |code: &str, msg: &str| json!({"Fault": {"type": "ValidationFault", "Error": [{"Message": msg, "Detail": msg, "code": code}]}, "time": time});
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return (
            400,
            fault_v("2020", "Request has invalid or unsupported JSON"),
        );
    };
    let code = v["SourceCurrencyCode"]
        .as_str()
        .unwrap_or("")
        .to_uppercase();
    let date = v["AsOfDate"]
        .as_str()
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
    let (Some(date), Some(rate)) = (date, v.get("Rate").filter(|r| r.is_number())) else {
        return (
            400,
            fault_v("2020", "Required param missing: Rate and AsOfDate"),
        );
    };
    if code == c.home {
        return (
            400,
            fault_v("6000", "The source currency is the home currency"),
        );
    }
    if !c.active.contains(&code.as_str()) {
        return (
            400,
            fault_v(
                "6000",
                &format!("{code} is not an active currency in this company"),
            ),
        );
    }
    if let Some(t) = v["TargetCurrencyCode"].as_str() {
        if t != c.home {
            return (
                400,
                fault_v("6000", "TargetCurrencyCode must be the home currency"),
            );
        }
    }
    let sent: u64 = v["SyncToken"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // Keep `Rate` exactly as sent (the JSON number's text), not as an f64 would print it.
    let rate_text = raw_number(body, "Rate").unwrap_or_else(|| rate.to_string());
    let key = (c.realm.to_string(), code.clone(), date);
    let mut g = lock(inner);
    let stored = match g.rates.get(&key) {
        None => StoredRate {
            rate: rate_text,
            sync_token: 0,
        },
        Some(old) if old.sync_token == sent => StoredRate {
            rate: rate_text,
            sync_token: old.sync_token + 1,
        },
        Some(_) => return (
            400,
            fault_v(
                "5010",
                "Stale Object Error : You and someone else were working on this at the same time",
            ),
        ),
    };
    g.rates.insert(key, stored.clone());
    g.writes.push(Write {
        realm: c.realm.to_string(),
        currency: code.clone(),
        date,
        rate: stored.rate.clone(),
    });
    (
        200,
        json!({"ExchangeRate": rate_json(c, &code, date, &stored), "time": time}),
    )
}

/// The text of a top-level JSON number field, as written (`"Rate":0.012160` → `0.012160`).
fn raw_number(body: &[u8], field: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let key = format!("\"{field}\"");
    let after = text[text.find(&key)? + key.len()..].trim_start();
    let value = after.strip_prefix(':')?.trim_start();
    let end = value
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(value.len());
    let number = &value[..end];
    serde_json::from_str::<serde_json::Number>(number).ok()?;
    Some(number.to_string())
}

/// What an ExchangeRate query asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateQuery {
    /// `sourcecurrencycode in (...)` or `= '...'`; `None` = every code.
    pub codes: Option<Vec<String>>,
    /// Lowest `asofdate` (inclusive).
    pub from: Option<NaiveDate>,
    /// Highest `asofdate` (inclusive).
    pub to: Option<NaiveDate>,
    /// `STARTPOSITION` (1-based).
    pub start: usize,
    /// `MAXRESULTS` (QuickBooks' default is 100, its ceiling 1000).
    pub max: usize,
}

/// Parses the subset of QuickBooks' query language the daemon uses for exchange rates:
/// `sourcecurrencycode in ('EUR','USD')` (or `=`), `asofdate` compared with `=`, `>=`, `<=`,
/// `>` or `<`, joined by `and`, then optional `STARTPOSITION n` and `MAXRESULTS n`.
pub fn parse_rate_query(q: &str) -> RateQuery {
    let lower = q.to_ascii_lowercase();
    let mut out = RateQuery {
        codes: None,
        from: None,
        to: None,
        start: 1,
        max: 100,
    };
    let quoted = |s: &str| -> Vec<String> {
        s.split(',')
            .map(|p| {
                p.trim()
                    .trim_matches(|c| c == '\'' || c == '"')
                    .to_ascii_uppercase()
            })
            .filter(|p| !p.is_empty())
            .collect()
    };
    if let Some(i) = lower.find("sourcecurrencycode") {
        let rest = lower[i + "sourcecurrencycode".len()..].trim_start();
        if let Some(list) = rest.strip_prefix("in") {
            if let (Some(a), Some(b)) = (list.find('('), list.find(')')) {
                out.codes = Some(quoted(&list[a + 1..b]));
            }
        } else if let Some(one) = rest.strip_prefix('=') {
            out.codes = Some(quoted(one.split_whitespace().next().unwrap_or("")));
        }
    }
    let mut from = lower.as_str();
    while let Some(i) = from.find("asofdate") {
        from = &from[i + "asofdate".len()..];
        let rest = from.trim_start();
        let (op, rest) = [">=", "<=", "=", ">", "<"]
            .iter()
            .find_map(|op| rest.strip_prefix(op).map(|r| (*op, r.trim_start())))
            .unwrap_or(("", rest));
        let date = rest
            .strip_prefix('\'')
            .and_then(|r| r.get(..10))
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
        let Some(date) = date else { continue };
        match op {
            "=" => {
                out.from = Some(date);
                out.to = Some(date);
            }
            ">=" => out.from = Some(date),
            ">" => out.from = date.succ_opt(),
            "<=" => out.to = Some(date),
            "<" => out.to = date.pred_opt(),
            _ => {}
        }
    }
    let number_after = |word: &str| -> Option<usize> {
        let i = lower.find(word)?;
        lower[i + word.len()..]
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    if let Some(n) = number_after("startposition") {
        out.start = n.max(1);
    }
    if let Some(n) = number_after("maxresults") {
        out.max = n.clamp(1, 1000);
    }
    out
}

fn query(inner: &Mutex<Inner>, c: &SampleCompany, text: &str, time: &str) -> Response<Full<Bytes>> {
    let lower = text.to_ascii_lowercase();
    if lower.contains("from companycurrency") {
        let list: Vec<Value> = c
            .active
            .iter()
            .enumerate()
            .map(|(i, code)| {
                json!({"Id": (i + 1).to_string(), "SyncToken": "0", "Code": code,
                       "Name": crate::http::pages::currency_name(code), "Active": true})
            })
            .collect();
        return json_answer(
            200,
            &json!({"QueryResponse": {"CompanyCurrency": list, "startPosition": 1, "maxResults": list.len()}, "time": time}),
        );
    }
    if !lower.contains("from exchangerate") {
        return fault(
            400,
            "ValidationFault",
            "4000",
            "The demo sandbox answers only CompanyCurrency and ExchangeRate queries",
        );
    }
    let rq = parse_rate_query(text);
    let g = lock(inner);
    let rows: Vec<Value> = g
        .rates
        .iter()
        .filter(|((realm, code, date), _)| {
            realm == c.realm
                && rq.codes.as_ref().is_none_or(|cs| cs.contains(code))
                && rq.from.is_none_or(|f| *date >= f)
                && rq.to.is_none_or(|t| *date <= t)
        })
        .skip(rq.start - 1)
        .take(rq.max)
        .map(|((_, code, date), r)| rate_json(c, code, *date, r))
        .collect();
    let answer = if rows.is_empty() {
        json!({"QueryResponse": {}, "time": time})
    } else {
        json!({"QueryResponse": {"ExchangeRate": rows, "startPosition": rq.start, "maxResults": rows.len()}, "time": time})
    };
    json_answer(200, &answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn parses_the_query_the_daemon_sends_today() {
        let q = parse_rate_query(
            "select * from exchangerate where sourcecurrencycode in ('EUR','USD') and asofdate='2026-05-22'",
        );
        assert_eq!(q.codes, Some(vec!["EUR".to_string(), "USD".to_string()]));
        assert_eq!(
            (q.from, q.to),
            (Some(d("2026-05-22")), Some(d("2026-05-22")))
        );
        assert_eq!((q.start, q.max), (1, 100));
    }

    #[test]
    fn parses_a_date_range_with_paging() {
        let q = parse_rate_query(
            "SELECT * FROM ExchangeRate WHERE SourceCurrencyCode IN ('gbp') AND AsOfDate >= '2026-05-16' \
             AND AsOfDate <= '2026-05-22' STARTPOSITION 1001 MAXRESULTS 1000",
        );
        assert_eq!(q.codes, Some(vec!["GBP".to_string()]));
        assert_eq!(
            (q.from, q.to),
            (Some(d("2026-05-16")), Some(d("2026-05-22")))
        );
        assert_eq!((q.start, q.max), (1001, 1000));
        let open = parse_rate_query("select * from exchangerate where asofdate > '2026-05-20'");
        assert_eq!(
            (open.codes, open.from, open.to),
            (None, Some(d("2026-05-21")), None)
        );
    }

    #[test]
    fn keeps_the_rate_text_as_sent() {
        let body = br#"{"SourceCurrencyCode":"ALL","Rate": 0.012160,"AsOfDate":"2026-05-22"}"#;
        assert_eq!(raw_number(body, "Rate").as_deref(), Some("0.012160"));
        assert_eq!(raw_number(br#"{"Rate":"x"}"#, "Rate"), None);
    }

    #[test]
    fn the_embedded_page_is_the_capture() {
        assert!(BOA_PAGE.contains("22.05.2026"));
        assert!(BOA_PAGE.contains("82.24"));
    }
}
