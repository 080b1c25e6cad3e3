//! OAuth end to end (issue 4): the real daemon (binary, or `app::run` in-process where the
//! daemon's clock must move) wired to the fake Intuit and fake BoA, driven the way a browser
//! and an admin drive it. Every test asserts on what the daemon answered or stored and on
//! what the fake saw.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use boa_exchange::config::{Config, ProcessEnv};
use boa_exchange::currency::Currency;
use boa_exchange::qbo::oauth::OAuthClient;
use boa_exchange::qbo::tokens::TokenManager;
use boa_exchange::store::records::{Company, Connection, DriftPolicy, TokenExpiry, TokenSet};
use boa_exchange::store::Store;
use boa_exchange::time::clock::{Clock, ManualClock};
use chrono::{DateTime, Utc};
use reqwest::header::{
    HeaderName, ACCEPT, CONTENT_TYPE, COOKIE, LOCATION, RETRY_AFTER, SET_COOKIE,
};
use serde_json::{json, Value};

use crate::support::backend::Backend;
use crate::support::daemon::{contains, TestDaemon};
use crate::support::eventually::eventually_async;
use crate::support::fake_intuit::{CompanySpec, FakeIntuit, FakeIntuitConfig};
use crate::support::inproc::InProcDaemon;
use crate::support::world::{Answer, World, ADMIN_KEY, REDIRECT};

/// The BoA fixing the fake BoA serves (`w.fetch()` stores it).
const DATE: &str = "2026-05-22";
const TOKEN_PATH: &str = "/oauth2/v1/tokens/bearer";

// ------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------

fn spec(realm: &str, name: &str) -> CompanySpec {
    CompanySpec::new(realm, name)
}

fn sync_path(realm: &str) -> String {
    format!("/api/v1/companies/{realm}/sync?target_date={DATE}")
}

fn browser() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

async fn send(rb: reqwest::RequestBuilder) -> Answer {
    let r = rb.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    Answer {
        status,
        headers,
        text,
    }
}

fn header(a: &Answer, name: HeaderName) -> Option<String> {
    a.headers
        .get(&name)
        .map(|v| v.to_str().expect("ascii header").to_string())
}

fn param(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `query` with `name` set to `value` (`None`: removed).
fn with_param(query: &str, name: &str, value: Option<&str>) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    let mut seen = false;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if k == name {
            seen = true;
            if let Some(value) = value {
                out.append_pair(&k, value);
            }
        } else {
            out.append_pair(&k, &v);
        }
    }
    if let (false, Some(value)) = (seen, value) {
        out.append_pair(name, value);
    }
    out.finish()
}

/// The browser side of a connect started at `connect_url` (a full URL on the daemon):
/// daemon → Intuit (auto-approve) → back. Returns (cookie pair, callback query).
async fn authorize_at(http: &reqwest::Client, connect_url: &str) -> (String, String) {
    let a = send(http.get(connect_url)).await;
    assert_eq!(a.status, 302, "connect: {}", a.text);
    let cookie = header(&a, SET_COOKIE)
        .expect("state cookie")
        .split(';')
        .next()
        .expect("cookie pair")
        .to_string();
    let to_intuit = header(&a, LOCATION).expect("location");
    let b = send(http.get(&to_intuit)).await;
    assert_eq!(b.status, 302, "authorize at the fake: {}", b.text);
    let back = header(&b, LOCATION).expect("redirect back");
    assert!(back.starts_with(REDIRECT), "{back}");
    let query = back
        .split_once('?')
        .map(|(_, q)| q.to_string())
        .unwrap_or_default();
    (cookie, query)
}

/// The callback as a client asking for JSON.
async fn callback_json(w: &World, query: &str, cookie: Option<&str>) -> Answer {
    let mut rb = w
        .http
        .get(w.url(&format!("/api/v1/oauth/callback?{query}")))
        .header(ACCEPT, "application/json");
    if let Some(c) = cookie {
        rb = rb.header(COOKIE, c);
    }
    send(rb).await
}

/// Asserts a refused callback: 400, the SPEC error JSON with `code`.
fn assert_refused_json(a: &Answer, code: &str) {
    assert_eq!(a.status, 400, "{}", a.text);
    let v = a.json();
    assert_eq!(v["success"], false, "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
}

/// Asserts a refused callback seen by a browser: 400 and an HTML page.
fn assert_refused_page(a: &Answer) {
    assert_eq!(a.status, 400, "{}", a.text);
    let ct = header(a, CONTENT_TYPE).unwrap_or_default();
    assert!(ct.starts_with("text/html"), "{ct}: {}", a.text);
    assert!(a.text.contains("<html"), "{}", a.text);
}

async fn company_count(w: &World) -> u64 {
    let v = w
        .admin_get("/api/v1/companies/list?active_only=false")
        .await
        .json();
    v["count"].as_u64().expect("count")
}

fn ts(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}")))
        .unwrap_or_else(|e| panic!("{v}: {e}"))
        .with_timezone(&Utc)
}

fn assert_near(what: &str, got: DateTime<Utc>, want: DateTime<Utc>, within_secs: i64) {
    let diff = (got - want).num_seconds().abs();
    assert!(
        diff <= within_secs,
        "{what}: {got} is {diff} s from the expected {want}"
    );
}

fn refresh_requests(intuit: &FakeIntuit) -> Vec<String> {
    intuit
        .requests()
        .into_iter()
        .filter(|r| r.path() == TOKEN_PATH && r.body.contains("grant_type=refresh_token"))
        .map(|r| r.body)
        .collect()
}

/// The refresh token the last refresh request carried.
fn last_refresh_sent(intuit: &FakeIntuit) -> String {
    let body = refresh_requests(intuit).pop().expect("a refresh request");
    param(&body, "refresh_token").expect("refresh_token in the form")
}

/// Waits until the fake has received an accounting call for `realm` (a sync is in flight).
async fn wait_for_api_call(intuit: &FakeIntuit, realm: &str) {
    eventually_async(
        Duration::from_secs(5),
        format!("a QuickBooks call for {realm}"),
        async || !intuit.requests_for(realm).is_empty(),
    )
    .await;
}

/// SIGTERM, and wait for a clean exit.
fn stop(w: &mut World) {
    tokio::task::block_in_place(|| {
        w.daemon.signal(libc::SIGTERM);
        let st = w.daemon.wait_exit(Duration::from_secs(25));
        assert!(st.success(), "exit {st}: {}", w.daemon.stderr());
    });
}

fn start_again(w: &mut World) {
    tokio::task::block_in_place(|| w.daemon.spawn_and_wait_ready());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let dst = to.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).expect("copy");
        }
    }
}

/// Replaces the (stopped) daemon's data dir with `saved`.
fn restore_data_dir(w: &World, saved: &Path) {
    let dd = w.daemon.data_dir();
    std::fs::remove_dir_all(&dd).expect("remove data dir");
    copy_dir(saved, &dd);
}

/// The refresh token in the (stopped) daemon's store, decrypted with its identity.
fn stored_refresh_token(w: &World, realm: &str) -> String {
    let dd = w.daemon.data_dir();
    let store = boa_exchange::store::SledStore::open(&dd, &dd.join("identity.txt"))
        .expect("open the store");
    let t = store
        .tokens(realm)
        .expect("read tokens")
        .expect("tokens stored");
    t.refresh_token
}

fn assert_no_plaintext(place: &str, hay: &[u8], secrets: &[String]) {
    for s in secrets {
        assert!(
            !contains(hay, s),
            "{place} contains the plaintext token {s}"
        );
    }
}

/// Config for an in-process daemon wired to `intuit` (`server_extra` goes into `[server]`).
fn inproc_toml(intuit: &FakeIntuit, server_extra: &str) -> String {
    format!(
        "[server]\nadmin_api_key = \"{ADMIN_KEY}\"\nrate_limit_per_minute = 100000\n{server_extra}\
         [quickbooks]\nclient_id = \"{}\"\nclient_secret = \"{}\"\nredirect_uri = \"{REDIRECT}\"\n\
         authorize_url = \"{}\"\ntoken_url = \"{}\"\nrevoke_url = \"{}\"\napi_base = \"{}\"\n\
         [schedule]\nenabled = false\n",
        intuit.client_id(),
        intuit.client_secret(),
        intuit.authorize_url(),
        intuit.token_url(),
        intuit.revoke_url(),
        intuit.api_base(),
    )
}

async fn inproc_intuit() -> FakeIntuit {
    let _ = rustls::crypto::ring::default_provider().install_default();
    FakeIntuit::start(FakeIntuitConfig {
        redirect_uri: REDIRECT.to_string(),
        ..FakeIntuitConfig::default()
    })
    .await
}

// ------------------------------------------------------------------------------------------
// The connect flow and the state
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_flow_with_cookie_creates_the_company() {
    connect_flow_with_cookie_creates_the_company_on(Backend::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_flow_with_cookie_creates_the_company_on_postgres() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    connect_flow_with_cookie_creates_the_company_on(backend).await;
}

async fn connect_flow_with_cookie_creates_the_company_on(backend: Backend) {
    let w = World::start_on(&backend, "").await;

    // Open enrollment: the landing page links to the connect endpoint.
    let home = w.get("/").await;
    assert_eq!(home.status, 200);
    assert!(home.text.contains("Connect to QuickBooks"), "{}", home.text);
    assert!(
        home.text.contains("href=\"/api/v1/oauth/connect\""),
        "{}",
        home.text
    );

    w.intuit.add_company(spec("1001", "Lek Co"));
    w.intuit.set_next_realm("1001");

    let a = w.get("/api/v1/oauth/connect").await;
    assert_eq!(a.status, 302, "{}", a.text);
    let set_cookie = header(&a, SET_COOKIE).expect("Set-Cookie");
    assert!(set_cookie.starts_with("boa_oauth_state="), "{set_cookie}");
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Lax"), "{set_cookie}");
    assert!(
        !set_cookie.contains("Secure"),
        "public_url is http: {set_cookie}"
    );
    let to_intuit = url::Url::parse(&header(&a, LOCATION).expect("Location")).expect("URL");
    assert!(
        to_intuit.as_str().starts_with(&w.intuit.authorize_url()),
        "{to_intuit}"
    );
    let q = to_intuit.query().unwrap_or_default().to_string();
    assert_eq!(param(&q, "client_id"), Some(w.intuit.client_id()));
    assert_eq!(param(&q, "response_type").as_deref(), Some("code"));
    assert_eq!(
        param(&q, "scope").as_deref(),
        Some("com.intuit.quickbooks.accounting")
    );
    assert_eq!(param(&q, "redirect_uri").as_deref(), Some(REDIRECT));
    let state = param(&q, "state").expect("state");
    assert!(state.len() >= 32, "state too short to be random: {state}");
    let cookie = set_cookie.split(';').next().expect("pair").to_string();
    assert!(
        cookie.contains(&state),
        "the cookie binds this state: {cookie}"
    );

    // A second start gets another state.
    let other = w.get("/api/v1/oauth/connect").await;
    let other_loc = header(&other, LOCATION).expect("Location");
    let other_state = param(other_loc.split_once('?').expect("query").1, "state");
    assert_ne!(other_state.as_deref(), Some(state.as_str()));

    // Intuit approves and sends the browser back.
    let b = send(w.http.get(to_intuit.as_str())).await;
    assert_eq!(b.status, 302, "{}", b.text);
    let back = header(&b, LOCATION).expect("back");
    let query = back.split_once('?').expect("query").1.to_string();
    assert_eq!(param(&query, "state").as_deref(), Some(state.as_str()));
    assert_eq!(w.intuit.token_calls(), 0);

    let c = w.callback(&query, Some(&cookie)).await;
    assert_eq!(c.status, 200, "{}", c.text);
    assert!(
        header(&c, CONTENT_TYPE)
            .unwrap_or_default()
            .starts_with("text/html"),
        "a success page"
    );
    assert!(c.text.contains("Lek Co"), "{}", c.text);

    // One code exchange, as Intuit wants it.
    assert_eq!(w.intuit.token_calls(), 1);
    let tok: Vec<_> = w
        .intuit
        .requests()
        .into_iter()
        .filter(|r| r.path() == TOKEN_PATH)
        .collect();
    assert_eq!(tok.len(), 1);
    assert_eq!(
        tok[0].header("x-include-refresh-token-hard-expires-in"),
        Some("true")
    );
    assert_eq!(
        param(&tok[0].body, "grant_type").as_deref(),
        Some("authorization_code")
    );
    assert_eq!(param(&tok[0].body, "code"), param(&query, "code"));
    assert_eq!(
        param(&tok[0].body, "redirect_uri").as_deref(),
        Some(REDIRECT)
    );

    // The company exists, read from QuickBooks.
    let list = w.admin_get("/api/v1/companies/list").await.json();
    assert_eq!(list["count"], 1, "{list}");
    let co = &list["companies"][0];
    assert_eq!(co["company_id"], "1001");
    assert_eq!(co["company_name"], "Lek Co");
    assert_eq!(co["home_currency"], "ALL");
    assert_eq!(co["is_active"], true);
    assert_eq!(co["connection"], "connected");

    let s = w.admin_get("/api/v1/oauth/status/1001").await.json();
    assert_eq!(s["status"], "connected", "{s}");
    assert_eq!(s["connected"], true);
    assert_eq!(s["reconnect_needed"], false);
    // Default fake: the 5-year hard cap is far away, no warning.
    assert_eq!(s["hard_expiry_warning"], false, "{s}");
    assert_near(
        "hard expiry",
        ts(&s["refresh_token_hard_expires_at"]),
        w.intuit.now() + chrono::Duration::days(5 * 365 + 1),
        5,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_cookie_is_secure_when_public_url_is_https() {
    let w = World::start("[server]\npublic_url = \"https://rates.example.com\"\n").await;
    let a = w.get("/api/v1/oauth/connect").await;
    assert_eq!(a.status, 302, "{}", a.text);
    let set_cookie = header(&a, SET_COOKIE).expect("Set-Cookie");
    assert!(set_cookie.contains("; Secure"), "{set_cookie}");
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Lax"), "{set_cookie}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_wrong_foreign_and_reused_state_are_refused_and_store_nothing() {
    let w = World::start("").await;
    w.intuit.add_company(spec("2002", "State Co"));
    w.intuit.set_next_realm("2002");
    let (cookie_a, query_a) = w.authorize().await;
    let (cookie_b, _query_b) = w.authorize().await;

    // Missing state.
    let no_state = with_param(&query_a, "state", None);
    assert_refused_page(&w.callback(&no_state, Some(&cookie_a)).await);
    assert_refused_json(
        &callback_json(&w, &no_state, Some(&cookie_a)).await,
        "missing_state",
    );
    let empty_state = with_param(&query_a, "state", Some(""));
    assert_refused_json(
        &callback_json(&w, &empty_state, Some(&cookie_a)).await,
        "missing_state",
    );

    // Right state, no cookie (another browser).
    assert_refused_page(&w.callback(&query_a, None).await);
    assert_refused_json(&callback_json(&w, &query_a, None).await, "invalid_state");

    // Right state, another flow's cookie (foreign state).
    assert_refused_json(
        &callback_json(&w, &query_a, Some(&cookie_b)).await,
        "invalid_state",
    );

    // Wrong state with a valid cookie.
    let forged = with_param(&query_a, "state", Some("forged-state-value"));
    assert_refused_json(
        &callback_json(&w, &forged, Some(&cookie_a)).await,
        "invalid_state",
    );

    // A cookie whose signature was tampered with.
    let mut tampered = cookie_a.clone();
    let last = tampered.pop().expect("non-empty");
    tampered.push(if last == '0' { '1' } else { '0' });
    assert_refused_json(
        &callback_json(&w, &query_a, Some(&tampered)).await,
        "invalid_state",
    );

    // None of that exchanged a code or stored anything.
    assert_eq!(w.intuit.token_calls(), 0);
    assert_eq!(company_count(&w).await, 0);

    // The genuine browser still completes (refused attempts did not burn its state)…
    let ok = w.callback(&query_a, Some(&cookie_a)).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(w.intuit.token_calls(), 1);
    assert_eq!(company_count(&w).await, 1);

    // …once: a replay of the same callback is refused before any code exchange.
    assert_refused_page(&w.callback(&query_a, Some(&cookie_a)).await);
    assert_refused_json(
        &callback_json(&w, &query_a, Some(&cookie_a)).await,
        "invalid_state",
    );
    assert_eq!(
        w.intuit.token_calls(),
        1,
        "a reused state never reaches Intuit"
    );
}

/// OAuth `state` expiry runs on the daemon's clock: the in-process daemon with a manual clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_expires_after_ten_minutes_by_the_daemon_clock() {
    let intuit = inproc_intuit().await;
    intuit.add_company(spec("3003", "Slow Co"));
    intuit.set_next_realm("3003");
    let toml = inproc_toml(&intuit, "");
    let clock = ManualClock::new(Utc::now());
    let d = InProcDaemon::start(&toml, clock.clone()).await;
    let http = browser();
    let connect = format!("{}/api/v1/oauth/connect", d.http);
    let callback = |q: &str, cookie: &str| {
        let rb = http
            .get(format!("{}/api/v1/oauth/callback?{q}", d.http))
            .header(COOKIE, cookie.to_string())
            .header(ACCEPT, "application/json");
        send(rb)
    };

    // Eleven minutes between connect and callback: refused, nothing exchanged or stored.
    let (cookie, query) = authorize_at(&http, &connect).await;
    clock.advance(chrono::Duration::minutes(11));
    let a = callback(&query, &cookie).await;
    assert_refused_json(&a, "expired_state");
    assert_eq!(intuit.token_calls(), 0);
    let list = d.control("companies", json!({"all": true})).await;
    assert_eq!(list["data"]["count"], 0, "{list}");
    // …and the expired state is gone for good.
    let again = callback(&query, &cookie).await;
    assert_refused_json(&again, "invalid_state");

    // Nine minutes is within the window: the same flow connects.
    let (cookie, query) = authorize_at(&http, &connect).await;
    clock.advance(chrono::Duration::minutes(9));
    let b = callback(&query, &cookie).await;
    assert_eq!(b.status, 200, "{}", b.text);
    assert_eq!(b.json()["company_id"], "3003");
    assert_eq!(intuit.token_calls(), 1);
    let list = d.control("companies", json!({"all": true})).await;
    assert_eq!(list["data"]["count"], 1, "{list}");
    d.stop().await;
}

/// Anyone may start a connect (open enrollment); abandoned states must not pile up in the
/// store forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_states_do_not_pile_up_in_the_store() {
    let intuit = inproc_intuit().await;
    let clock = ManualClock::new(Utc::now());
    let d = InProcDaemon::start(&inproc_toml(&intuit, ""), clock.clone()).await;
    let http = browser();
    let connect = format!("{}/api/v1/oauth/connect", d.http);
    for _ in 0..5 {
        assert_eq!(send(http.get(&connect)).await.status, 302);
    }
    clock.advance(chrono::Duration::minutes(11));
    // One more visitor, who is still within their 10 minutes when the daemon stops.
    assert_eq!(send(http.get(&connect)).await.status, 302);
    let dir = d.stop().await;

    let data = dir.path().join("data");
    let store = Store::open_sled(&data, &data.join("identity.txt")).expect("store");
    let left = store
        .purge_expired_pending(clock.now() + chrono::Duration::minutes(11))
        .await
        .expect("purge");
    assert_eq!(left, 1, "only the live state is still stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_is_refused_stores_nothing_and_burns_the_state() {
    let w = World::start("").await;
    w.intuit.add_company(spec("3113", "Denied Co"));
    w.intuit.set_next_realm("3113");
    w.intuit.deny_next();
    let (cookie, query) = w.authorize().await;
    assert_eq!(param(&query, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&query, "code"), None);
    let state = param(&query, "state").expect("state comes back");

    let page = w.callback(&query, Some(&cookie)).await;
    assert_refused_page(&page);
    assert!(page.text.contains("denied"), "{}", page.text);
    assert_refused_json(
        &callback_json(&w, &query, Some(&cookie)).await,
        "access_denied",
    );
    assert_eq!(w.intuit.token_calls(), 0);
    assert_eq!(company_count(&w).await, 0);

    // That state cannot be turned into a connection afterwards.
    let forged = format!("code=someone-elses-code&state={state}&realmId=3113");
    assert_refused_json(
        &callback_json(&w, &forged, Some(&cookie)).await,
        "invalid_state",
    );
    assert_eq!(w.intuit.token_calls(), 0);
    assert_eq!(company_count(&w).await, 0);
}

/// A denial that does not come from the browser that started the flow (no or another
/// cookie) is refused and cannot cancel that browser's flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_denial_does_not_cancel_someone_elses_flow() {
    let w = World::start("").await;
    w.intuit.add_company(spec("3223", "Victim Co"));
    w.intuit.set_next_realm("3223");
    let (cookie_a, query_a) = w.authorize().await;
    let (cookie_b, _) = w.authorize().await;
    let state = param(&query_a, "state").expect("state");
    let denial = format!("error=access_denied&state={state}");
    assert_refused_json(&callback_json(&w, &denial, None).await, "access_denied");
    assert_refused_json(
        &callback_json(&w, &denial, Some(&cookie_b)).await,
        "access_denied",
    );

    let ok = w.callback(&query_a, Some(&cookie_a)).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(company_count(&w).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_authorization_code_is_refused_and_changes_nothing() {
    let w = World::start("").await;
    w.intuit.add_company(spec("4004", "Code Co"));
    w.intuit.set_next_realm("4004");
    let (cookie1, query1) = w.authorize().await;
    let ok = w.callback(&query1, Some(&cookie1)).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(w.intuit.token_calls(), 1);
    let status_before = w.admin_get("/api/v1/oauth/status/4004").await.json();
    let logs_before = w.control("logs", json!({"realm": "4004", "limit": 100}));
    let rt_before = w.intuit.current_refresh_token("4004");

    // A fresh, valid state carrying the already used code.
    let (cookie2, query2) = w.authorize().await;
    let replay = with_param(&query2, "code", param(&query1, "code").as_deref());
    let a = callback_json(&w, &replay, Some(&cookie2)).await;
    assert_refused_json(&a, "invalid_code");
    assert!(a.text.contains("already used"), "{}", a.text);
    assert_eq!(
        w.intuit.token_calls(),
        2,
        "the daemon asked Intuit, which refused"
    );

    // Nothing changed: same expiries, same log, same grant at the fake.
    let status_after = w.admin_get("/api/v1/oauth/status/4004").await.json();
    assert_eq!(status_after, status_before);
    let logs_after = w.control("logs", json!({"realm": "4004", "limit": 100}));
    assert_eq!(logs_after, logs_before);
    assert_eq!(w.intuit.current_refresh_token("4004"), rt_before);
    assert_eq!(company_count(&w).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quickbooks_failure_after_the_code_exchange_stores_nothing() {
    let w = World::start("").await;
    w.intuit.add_company(spec("4114", "Flaky Co"));
    w.intuit.set_next_realm("4114");
    let (cookie, query) = w.authorize().await;
    w.intuit.fail_next_api_calls(1, 503);
    let a = callback_json(&w, &query, Some(&cookie)).await;
    assert_eq!(a.status, 502, "{}", a.text);
    assert_eq!(a.json()["success"], false);
    assert_eq!(w.intuit.token_calls(), 1);
    assert_eq!(company_count(&w).await, 0);
    let h = w.get("/health").await.json();
    assert_eq!(h["total_companies"], 0, "{h}");

    // Starting again works.
    let (cookie, query) = w.authorize().await;
    let b = w.callback(&query, Some(&cookie)).await;
    assert_eq!(b.status, 200, "{}", b.text);
    assert_eq!(company_count(&w).await, 1);
}

// ------------------------------------------------------------------------------------------
// Tokens: secrecy, refresh, rotation, crashes
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_the_store_files_the_log_or_any_answer() {
    let mut w = World::start("").await;
    assert_eq!(w.fetch()["ok"], true);
    let c = w.connect(spec("5005", "Secret Co")).await;
    let mut answers = vec![c.text.clone()];

    let s = w.admin_post(&sync_path("5005")).await;
    assert_eq!(s.status, 200, "{}", s.text);
    answers.push(s.text);
    // A rotation, so the store has held more than one refresh token.
    w.intuit.rotate_now("5005");
    w.intuit.expire_access_tokens("5005");
    let s = w.admin_post(&sync_path("5005")).await;
    assert_eq!(s.status, 200, "{}", s.text);
    answers.push(s.text);
    assert_eq!(w.intuit.refreshes("5005"), 1);

    for path in [
        "/api/v1/oauth/status/5005",
        "/api/v1/companies/list?active_only=false",
        "/api/v1/companies/5005/sync/status",
    ] {
        let a = w.admin_get(path).await;
        assert_eq!(a.status, 200, "{path}: {}", a.text);
        answers.push(a.text);
    }
    for path in ["/health", "/", "/api/v1/rates"] {
        answers.push(w.get(path).await.text);
    }
    for (cmd, args) in [
        ("status", json!({})),
        ("companies", json!({"all": true})),
        ("company", json!({"realm": "5005"})),
        ("logs", json!({"realm": "5005", "limit": 100})),
    ] {
        let v = w.control(cmd, args);
        assert_eq!(v["ok"], true, "{cmd}: {v}");
        answers.push(v.to_string());
    }
    let d = w.admin_get("/api/v1/oauth/disconnect/5005").await;
    assert_eq!(d.status, 200, "{}", d.text);
    answers.push(d.text);
    stop(&mut w);

    let rts = w.intuit.issued_refresh_tokens();
    let ats = w.intuit.issued_access_tokens();
    assert!(rts.len() >= 2, "a rotation happened: {rts:?}");
    assert!(ats.len() >= 2, "{ats:?}");
    let mut secrets = rts.clone();
    secrets.extend(ats);
    secrets.push(w.intuit.client_secret());

    let log = w.daemon.stderr();
    assert!(
        log.contains("token refreshed"),
        "the refresh was logged: {log}"
    );
    assert_no_plaintext("the daemon log", log.as_bytes(), &secrets);
    let data = w.daemon.data_bytes();
    assert!(data.len() > 1000, "the store files were read");
    assert_no_plaintext("the store files", &data, &secrets);
    assert_no_plaintext("an answer", answers.join("\n").as_bytes(), &secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_refresh_while_fresh_then_one_refresh_after_a_401() {
    no_refresh_while_fresh_then_one_refresh_after_a_401_on(Backend::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_refresh_while_fresh_then_one_refresh_after_a_401_on_postgres() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    no_refresh_while_fresh_then_one_refresh_after_a_401_on(backend).await;
}

async fn no_refresh_while_fresh_then_one_refresh_after_a_401_on(backend: Backend) {
    let w = World::start_on(&backend, "").await;
    assert_eq!(w.fetch()["ok"], true);
    assert_eq!(w.connect(spec("6006", "Fresh Co")).await.status, 200);
    let rt = w.intuit.current_refresh_token("6006").expect("rt");

    let s = w.admin_post(&sync_path("6006")).await;
    assert_eq!(s.status, 200, "{}", s.text);
    assert_eq!(
        w.intuit.refreshes("6006"),
        0,
        "a fresh access token is used as is"
    );
    assert_eq!(w.intuit.token_calls(), 1);

    // Intuit expires the access token early: the sync gets a 401, refreshes once, retries.
    w.intuit.expire_access_tokens("6006");
    w.intuit.clear_requests();
    let s = w.admin_post(&sync_path("6006")).await;
    assert_eq!(s.status, 200, "{}", s.text);
    assert_eq!(w.intuit.refreshes("6006"), 1);
    assert_eq!(w.intuit.token_calls(), 2);
    assert_eq!(w.intuit.early_refreshes(), 0);
    assert_eq!(last_refresh_sent(&w.intuit), rt);
    let statuses: Vec<Option<u16>> = w
        .intuit
        .requests_for("6006")
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == Some(401)).count(),
        1,
        "one 401, then the retried call: {statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&Some(200)), "{statuses:?}");

    // The new access token is used: another sync needs no refresh.
    let s = w.admin_post(&sync_path("6006")).await;
    assert_eq!(s.status, 200, "{}", s.text);
    assert_eq!(w.intuit.refreshes("6006"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_before_use_when_under_five_minutes_remain() {
    // Intuit hands out access tokens living 4 minutes: every one is "about to expire".
    let cfg = FakeIntuitConfig {
        access_token_lifetime: Duration::from_secs(240),
        ..FakeIntuitConfig::default()
    };
    let w = World::start_with(cfg, "").await;
    assert_eq!(w.fetch()["ok"], true);
    assert_eq!(w.connect(spec("6116", "Short Co")).await.status, 200);
    w.intuit.clear_requests();

    let s = w.admin_post(&sync_path("6116")).await;
    assert_eq!(s.status, 200, "{}", s.text);
    assert_eq!(w.intuit.refreshes("6116"), 1);
    let reqs = w.intuit.requests();
    let first_refresh = reqs
        .iter()
        .position(|r| r.path() == TOKEN_PATH)
        .expect("a refresh");
    let first_api = reqs
        .iter()
        .position(|r| r.realm.as_deref() == Some("6116"))
        .expect("an API call");
    assert!(
        first_refresh < first_api,
        "refreshed before the first QuickBooks call"
    );
    assert!(
        reqs.iter().all(|r| r.status != Some(401)),
        "no call was made with the old token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_survives_kill_9_and_restart() {
    a_rotated_refresh_token_survives_kill_9_and_restart_on(Backend::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_survives_kill_9_and_restart_on_postgres() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    a_rotated_refresh_token_survives_kill_9_and_restart_on(backend).await;
}

async fn a_rotated_refresh_token_survives_kill_9_and_restart_on(backend: Backend) {
    let mut w = World::start_on(&backend, "").await;
    assert_eq!(w.fetch()["ok"], true);
    assert_eq!(w.connect(spec("7117", "Rotate Co")).await.status, 200);
    let rt1 = w.intuit.current_refresh_token("7117").expect("rt");

    w.intuit.rotate_now("7117");
    w.intuit.expire_access_tokens("7117");
    let s = w.admin_post(&sync_path("7117")).await;
    assert_eq!(s.status, 200, "{}", s.text);
    let rt2 = w.intuit.current_refresh_token("7117").expect("rt");
    assert_ne!(rt1, rt2, "the fake rotated");

    // Killed right after the answer: the rotation was flushed before it.
    tokio::task::block_in_place(|| w.daemon.kill9());
    start_again(&mut w);

    // A day later the previous token is dead; only the rotated one can refresh.
    w.intuit.advance(Duration::from_secs(25 * 3600));
    let s = w.admin_post(&sync_path("7117")).await;
    assert_eq!(s.status, 200, "{}", s.text);
    assert_eq!(w.intuit.refreshes("7117"), 2);
    assert_eq!(last_refresh_sent(&w.intuit), rt2);
    let st = w.admin_get("/api/v1/oauth/status/7117").await.json();
    assert_eq!(st["status"], "connected", "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_before_storing_a_rotated_token_recovers_within_grace_and_not_after() {
    let mut w = World::start("").await;
    assert_eq!(w.fetch()["ok"], true);
    assert_eq!(w.connect(spec("8008", "Crash Co")).await.status, 200);
    let s = w.admin_post(&sync_path("8008")).await;
    assert_eq!(s.status, 200, "{}", s.text);
    let rt1 = w.intuit.current_refresh_token("8008").expect("rt");

    // The store as it was before the rotation.
    stop(&mut w);
    let saved = tempfile::tempdir().expect("tempdir");
    copy_dir(&w.daemon.data_dir(), saved.path());
    start_again(&mut w);

    // Intuit rotates; the daemon gets the new token and stores it…
    w.intuit.rotate_now("8008");
    w.intuit.expire_access_tokens("8008");
    let s = w.admin_post(&sync_path("8008")).await;
    assert_eq!(s.status, 200, "{}", s.text);
    let rt2 = w.intuit.current_refresh_token("8008").expect("rt");
    assert_ne!(rt1, rt2);
    stop(&mut w);
    assert_eq!(stored_refresh_token(&w, "8008"), rt2);

    // …but "crashes" before the write reached the disk: the store still holds the old one.
    restore_data_dir(&w, saved.path());
    assert_eq!(stored_refresh_token(&w, "8008"), rt1);
    start_again(&mut w);
    let s = w.admin_post(&sync_path("8008")).await;
    assert_eq!(s.status, 200, "within the grace window: {}", s.text);
    assert_eq!(last_refresh_sent(&w.intuit), rt1);
    assert_eq!(w.intuit.refreshes("8008"), 2);
    stop(&mut w);
    assert_eq!(
        stored_refresh_token(&w, "8008"),
        rt2,
        "the store now holds the newest refresh token"
    );

    // The same crash, noticed only after the grace has passed: reconnect needed.
    restore_data_dir(&w, saved.path());
    w.intuit.advance(Duration::from_secs(25 * 3600));
    start_again(&mut w);
    let s = w.admin_post(&sync_path("8008")).await;
    assert_eq!(s.status, 409, "{}", s.text);
    assert_eq!(s.json()["error"]["code"], "reconnect_needed", "{}", s.text);
    assert_eq!(last_refresh_sent(&w.intuit), rt1);

    let h = w.get("/health").await.json();
    assert_eq!(h["companies_with_expired_tokens"], 1, "{h}");
    assert_eq!(h["active_companies"], 1, "{h}");
    let st = w.admin_get("/api/v1/oauth/status/8008").await.json();
    assert_eq!(st["status"], "reconnect_needed", "{st}");
    assert_eq!(st["reconnect_needed"], true, "{st}");
    assert_eq!(st["connected"], false, "{st}");
    let list = w.admin_get("/api/v1/companies/list").await.json();
    assert_eq!(list["count"], 1, "still listed: {list}");
    assert_eq!(list["companies"][0]["connection"], "reconnect_needed");

    // No retry loop: the next sync does not ask Intuit again.
    let calls = w.intuit.token_calls();
    let s = w.admin_post(&sync_path("8008")).await;
    assert_eq!(s.status, 409, "{}", s.text);
    assert_eq!(w.intuit.token_calls(), calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_syncs_after_expiry_cause_one_refresh() {
    let w = World::start("").await;
    assert_eq!(w.fetch()["ok"], true);
    assert_eq!(w.connect(spec("9009", "Busy Co")).await.status, 200);
    let s = w.admin_post(&sync_path("9009")).await;
    assert_eq!(s.status, 200, "{}", s.text);
    assert_eq!(w.intuit.refreshes("9009"), 0);

    // Slow Intuit, so overlapping refreshes would be seen.
    w.intuit.set_latency(Duration::from_millis(100));
    w.intuit.expire_access_tokens("9009");
    let calls = w.intuit.token_calls();
    let mut tasks = Vec::new();
    for i in 0..10 {
        let http = w.http.clone();
        let all = i % 4 == 3;
        let url = if all {
            w.url(&format!("/api/v1/companies/sync-all?target_date={DATE}"))
        } else {
            w.url(&sync_path("9009"))
        };
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(ADMIN_KEY)
                .send()
                .await
                .expect("send");
            (all, r.status().as_u16(), r.text().await.unwrap_or_default())
        }));
    }
    for t in tasks {
        let (all, status, body) = t.await.expect("join");
        assert_eq!(status, 200, "{body}");
        if all {
            let v: Value = serde_json::from_str(&body).expect("json");
            assert_eq!(v["failed"], 0, "{v}");
        }
    }
    assert_eq!(w.intuit.refreshes("9009"), 1);
    assert_eq!(w.intuit.token_calls() - calls, 1);
    assert_eq!(w.intuit.concurrent_refreshes(), 0);
}

/// The syncs above are also serialised per company by the engine, which would hide a
/// TokenManager without single flight; here ten callers hit the daemon's TokenManager
/// directly (its store and OAuth client, the fake behind them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_manager_gives_ten_concurrent_callers_one_refresh() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let intuit = FakeIntuit::start(FakeIntuitConfig {
        latency: Duration::from_millis(150),
        ..FakeIntuitConfig::default()
    })
    .await;
    let (at, rt) = intuit.add_connected_company(spec("9119", "Flight Co"));
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let store = Arc::new(Store::open_sled(&data, &data.join("identity.txt")).expect("store"));
    let now = Utc::now();
    let expiry = TokenExpiry {
        // Expired by our clock: every caller, alone, would refresh.
        access_expires_at: now - chrono::Duration::minutes(1),
        refresh_expires_at: now + chrono::Duration::days(90),
        hard_expires_at: None,
        refreshed_at: now - chrono::Duration::hours(1),
    };
    let company = Company {
        realm_id: "9119".into(),
        company_name: "Flight Co".into(),
        home_currency: Currency::ALL,
        is_active: true,
        sync_enabled: true,
        is_sandbox: true,
        fill_non_business_days: true,
        created_at: now,
        updated_at: now,
        last_sync_at: None,
        connection: Connection::Connected,
        tokens: Some(expiry.clone()),
        multicurrency: true,
        active_currencies: vec![],
        currencies_checked_at: None,
        drift: DriftPolicy::default(),
    };
    store
        .save_company_and_tokens(
            &company,
            &TokenSet {
                access_token: at.clone(),
                refresh_token: rt.clone(),
                expiry,
            },
        )
        .await
        .expect("save");
    let config = Config::from_toml(
        &format!(
            "[quickbooks]\nclient_id = \"{}\"\nclient_secret = \"{}\"\nredirect_uri = \"{REDIRECT}\"\n\
             authorize_url = \"{}\"\ntoken_url = \"{}\"\nrevoke_url = \"{}\"\napi_base = \"{}\"\n",
            intuit.client_id(),
            intuit.client_secret(),
            intuit.authorize_url(),
            intuit.token_url(),
            intuit.revoke_url(),
            intuit.api_base(),
        ),
        "test.toml",
        None,
        &ProcessEnv,
    )
    .expect("config");
    let http = boa_exchange::qbo::http_client(Duration::from_secs(10)).expect("http");
    let tm = Arc::new(TokenManager::new(
        store.clone(),
        OAuthClient::new(http, &config.quickbooks),
        Arc::new(boa_exchange::time::clock::SystemClock),
        Arc::new(boa_exchange::metrics::Metrics::new()),
    ));

    let mut tasks = Vec::new();
    for _ in 0..10 {
        let tm = tm.clone();
        tasks.push(tokio::spawn(async move { tm.access_token("9119").await }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.expect("join").expect("a token"));
    }
    assert!(got.iter().all(|t| *t == got[0]), "one token for all");
    assert_ne!(got[0], at, "a new access token");
    assert_eq!(intuit.refreshes("9119"), 1);
    assert_eq!(intuit.token_calls(), 1);
    assert_eq!(intuit.concurrent_refreshes(), 0);
    let stored = store.tokens("9119").await.expect("read").expect("tokens");
    assert_eq!(stored.access_token, got[0], "stored before use");
    assert_eq!(
        Some(stored.refresh_token),
        intuit.current_refresh_token("9119")
    );
    assert!(
        stored.expiry.hard_expires_at.is_some(),
        "hard expiry tracked from the response"
    );

    // Ten callers that all saw a 401 with the new token: one refresh between them.
    let rejected = got[0].clone();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let tm = tm.clone();
        let rejected = rejected.clone();
        tasks.push(tokio::spawn(async move {
            tm.after_unauthorized("9119", &rejected).await
        }));
    }
    for t in tasks {
        let t = t.await.expect("join").expect("a token");
        assert_ne!(t, rejected);
    }
    assert_eq!(intuit.refreshes("9119"), 2);
    assert_eq!(intuit.concurrent_refreshes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_token_endpoint_is_not_a_revoked_grant() {
    let w = World::start("").await;
    assert_eq!(w.fetch()["ok"], true);
    assert_eq!(w.connect(spec("1818", "Patient Co")).await.status, 200);

    // Intuit's token endpoint fails three times (the first refresh and its two retries).
    w.intuit.expire_access_tokens("1818");
    w.intuit.fail_next_token_calls(3, 500);
    let calls = w.intuit.token_calls();
    let s = w.admin_post(&sync_path("1818")).await;
    assert_eq!(s.status, 502, "{}", s.text);
    assert_eq!(w.intuit.token_calls() - calls, 3, "bounded retries");
    let st = w.admin_get("/api/v1/oauth/status/1818").await.json();
    assert_eq!(st["status"], "connected", "{st}");

    // Our app's credentials refused: not the company's fault either.
    w.intuit.fail_next_token_calls(1, 401);
    let s = w.admin_post(&sync_path("1818")).await;
    assert_eq!(s.status, 502, "{}", s.text);
    let st = w.admin_get("/api/v1/oauth/status/1818").await.json();
    assert_eq!(st["status"], "connected", "{st}");
    let h = w.get("/health").await.json();
    assert_eq!(h["companies_with_expired_tokens"], 0, "{h}");

    // Once Intuit is back, the same grant works.
    let s = w.admin_post(&sync_path("1818")).await;
    assert_eq!(s.status, 200, "{}", s.text);
    assert_eq!(w.intuit.refreshes("1818"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_started_before_a_restart_completes_after_it() {
    let mut w = World::start("").await;
    w.intuit.add_company(spec("1919", "Patient Browser Co"));
    w.intuit.set_next_realm("1919");
    let (cookie, query) = w.authorize().await;
    stop(&mut w);
    start_again(&mut w);
    let c = w.callback(&query, Some(&cookie)).await;
    assert_eq!(c.status, 200, "{}", c.text);
    assert_eq!(company_count(&w).await, 1);
}

// ------------------------------------------------------------------------------------------
// Revocation, disconnect, reconnect
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_grant_makes_the_company_need_a_reconnect() {
    a_revoked_grant_makes_the_company_need_a_reconnect_on(Backend::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_grant_makes_the_company_need_a_reconnect_on_postgres() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    a_revoked_grant_makes_the_company_need_a_reconnect_on(backend).await;
}

async fn a_revoked_grant_makes_the_company_need_a_reconnect_on(backend: Backend) {
    let w = World::start_on(&backend, "").await;
    assert_eq!(w.fetch()["ok"], true);
    assert_eq!(w.connect(spec("1212", "Revoked Co")).await.status, 200);
    assert_eq!(w.admin_post(&sync_path("1212")).await.status, 200);

    // The customer disconnects the app inside QuickBooks.
    w.intuit.revoke_grant("1212");
    let writes = w.intuit.writes("1212");
    let s = w.admin_post(&sync_path("1212")).await;
    assert_eq!(s.status, 409, "{}", s.text);
    assert_eq!(s.json()["error"]["code"], "reconnect_needed");
    assert_eq!(w.intuit.writes("1212"), writes);
    assert_eq!(w.intuit.token_calls(), 2, "one refresh attempt");

    let st = w.admin_get("/api/v1/oauth/status/1212").await.json();
    assert_eq!(st["status"], "reconnect_needed", "{st}");
    assert_eq!(st["reconnect_needed"], true);
    assert!(st["reconnect_reason"]["reason"].is_string(), "{st}");
    let h = w.get("/health").await.json();
    assert_eq!(h["companies_with_expired_tokens"], 1, "{h}");
    let list = w.admin_get("/api/v1/companies/list").await.json();
    assert_eq!(list["count"], 1, "still listed: {list}");
    assert_eq!(list["companies"][0]["connection"], "reconnect_needed");
    let logs = w.control("logs", json!({"realm": "1212", "limit": 100}));
    assert!(
        logs.to_string().contains("reconnect needed"),
        "the failure is logged: {logs}"
    );

    // Not synced any more, and no refresh loop.
    let s = w.admin_post(&sync_path("1212")).await;
    assert_eq!(s.status, 409, "{}", s.text);
    let sa = w
        .admin_post(&format!("/api/v1/companies/sync-all?target_date={DATE}"))
        .await
        .json();
    assert_eq!(sa["successful"], 0, "{sa}");
    assert_eq!(w.intuit.token_calls(), 2);

    // Reconnecting heals it.
    w.intuit.set_next_realm("1212");
    let (cookie, query) = w.authorize().await;
    let c = w.callback(&query, Some(&cookie)).await;
    assert_eq!(c.status, 200, "{}", c.text);
    let h = w.get("/health").await.json();
    assert_eq!(h["companies_with_expired_tokens"], 0, "{h}");
    assert_eq!(w.admin_post(&sync_path("1212")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_revokes_at_intuit_and_keeps_the_data() {
    let w = World::start("").await;
    assert_eq!(w.fetch()["ok"], true);
    assert_eq!(w.connect(spec("1313", "Leaving Co")).await.status, 200);
    assert_eq!(w.admin_post(&sync_path("1313")).await.status, 200);
    let before = w
        .admin_get("/api/v1/companies/1313/sync/status")
        .await
        .json();
    assert_eq!(before["exchange_rates"]["total"], 2, "{before}");
    let rt = w.intuit.current_refresh_token("1313").expect("rt");

    // Not without the admin key.
    let anon = w.get("/api/v1/oauth/disconnect/1313").await;
    assert_eq!(anon.status, 401, "{}", anon.text);
    assert_eq!(w.intuit.revoke_calls(), 0);

    let d = w.admin_get("/api/v1/oauth/disconnect/1313").await;
    assert_eq!(d.status, 200, "{}", d.text);
    let v = d.json();
    assert_eq!(v["success"], true);
    assert_eq!(v["company_id"], "1313");
    assert_eq!(v["is_active"], false);
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");

    // Revoked at the fake, with the grant's refresh token.
    assert_eq!(w.intuit.revoke_calls(), 1);
    assert_eq!(w.intuit.revoked_tokens(), vec![rt]);
    assert!(w.intuit.is_grant_revoked("1313"));
    assert!(!w.intuit.is_connected("1313"));

    // Soft-deleted here: hidden from the active list, history kept, answers still work.
    let active = w.admin_get("/api/v1/companies/list").await.json();
    assert_eq!(active["count"], 0, "{active}");
    let all = w
        .admin_get("/api/v1/companies/list?active_only=false")
        .await
        .json();
    assert_eq!(all["count"], 1, "{all}");
    assert_eq!(all["companies"][0]["is_active"], false);
    let after = w
        .admin_get("/api/v1/companies/1313/sync/status")
        .await
        .json();
    assert_eq!(after["is_active"], false);
    assert_eq!(after["exchange_rates"], before["exchange_rates"]);
    assert_eq!(after["syncing"], before["syncing"]);
    let st = w.admin_get("/api/v1/oauth/status/1313").await;
    assert_eq!(st.status, 200, "{}", st.text);
    let st = st.json();
    assert_eq!(st["is_active"], false);
    assert_eq!(st["connected"], false);
    assert_eq!(st["status"], "disconnected");
    assert_eq!(st["access_token_expires_at"], Value::Null, "{st}");
    let h = w.get("/health").await.json();
    assert_eq!(h["total_companies"], 1, "{h}");
    assert_eq!(h["active_companies"], 0, "{h}");
    let put = w
        .admin_put(
            "/api/v1/companies/1313/settings",
            r#"{"fill_non_business_days": false}"#,
        )
        .await;
    assert_eq!(
        put.status, 200,
        "settings of a disconnected company: {}",
        put.text
    );

    // A sync of a disconnected company is refused without calling QuickBooks.
    let reqs = w.intuit.requests_for("1313").len();
    let s = w.admin_post(&sync_path("1313")).await;
    assert_eq!(s.status, 409, "{}", s.text);
    assert_eq!(w.intuit.requests_for("1313").len(), reqs);

    // A browser gets a page.
    let page = send(
        w.http
            .get(w.url("/api/v1/oauth/disconnect/1313"))
            .bearer_auth(ADMIN_KEY)
            .header(ACCEPT, "text/html"),
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("<html"), "{}", page.text);
}

/// A sync that is running when the admin disconnects must not bring the company back when
/// it saves its results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_during_a_running_sync_stays_disconnected() {
    let w = World::start("").await;
    assert_eq!(w.fetch()["ok"], true);
    assert_eq!(w.connect(spec("1323", "Racing Co")).await.status, 200);
    w.intuit
        .set_realm_latency("1323", Duration::from_millis(400));
    w.intuit.clear_requests();
    let http = w.http.clone();
    let url = w.url(&sync_path("1323"));
    let sync = tokio::spawn(async move {
        let r = http
            .post(url)
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .expect("send");
        r.status().as_u16()
    });
    // The sync is waiting on QuickBooks.
    wait_for_api_call(&w.intuit, "1323").await;
    let d = w.admin_get("/api/v1/oauth/disconnect/1323").await;
    assert_eq!(d.status, 200, "{}", d.text);
    let _ = sync.await.expect("join");

    let st = w.admin_get("/api/v1/oauth/status/1323").await.json();
    assert_eq!(st["is_active"], false, "{st}");
    assert_eq!(st["status"], "disconnected", "{st}");
    let list = w.admin_get("/api/v1/companies/list").await.json();
    assert_eq!(list["count"], 0, "{list}");
    let h = w.get("/health").await.json();
    assert_eq!(h["active_companies"], 0, "{h}");
    let s = w.admin_post(&sync_path("1323")).await;
    assert_eq!(s.status, 409, "{}", s.text);
    assert_eq!(
        s.json()["error"]["code"],
        "company_disconnected",
        "{}",
        s.text
    );
}

/// A sync saves the company record when it ends; it must not put back what changed while it
/// ran (here an acknowledged settings change; the token expiries case is in
/// `oauth_status_shows_expiries_and_hard_expiry_never_tokens`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settings_change_during_a_running_sync_is_kept() {
    let w = World::start("").await;
    assert_eq!(w.fetch()["ok"], true);
    assert_eq!(
        w.connect(spec("1333", "Busy Settings Co")).await.status,
        200
    );
    w.intuit
        .set_realm_latency("1333", Duration::from_millis(300));
    w.intuit.clear_requests();
    let http = w.http.clone();
    let url = w.url(&sync_path("1333"));
    let sync = tokio::spawn(async move {
        let r = http
            .post(url)
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .expect("send");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    });
    wait_for_api_call(&w.intuit, "1333").await;
    let set = w
        .admin_put(
            "/api/v1/companies/1333/settings",
            r#"{"sync_enabled": false, "fill_non_business_days": false}"#,
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.text);
    let (status, body) = sync.await.expect("join");
    assert_eq!(status, 200, "{body}");

    let list = w
        .admin_get("/api/v1/companies/list?active_only=false")
        .await
        .json();
    let co = &list["companies"][0];
    assert_eq!(co["sync_enabled"], false, "{co}");
    assert_eq!(co["fill_non_business_days"], false, "{co}");
    assert!(
        co["last_sync_at"].is_string(),
        "the sync's own result is saved: {co}"
    );
}

/// When Intuit cannot be reached, a disconnect changes nothing (and says so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_that_cannot_revoke_changes_nothing() {
    let mut w = World::start("").await;
    assert_eq!(w.fetch()["ok"], true);
    assert_eq!(w.connect(spec("1343", "Unreachable Co")).await.status, 200);

    // Point the revoke endpoint at a closed port (config reload).
    let revoke = w.intuit.revoke_url();
    assert!(w.daemon.extra_config.contains(&revoke));
    w.daemon.extra_config = w
        .daemon
        .extra_config
        .replace(&revoke, "http://127.0.0.1:9/v2/oauth2/tokens/revoke");
    w.daemon.write_config();
    tokio::task::block_in_place(|| {
        w.daemon.signal(libc::SIGHUP);
        assert!(w
            .daemon
            .notifications_until(|m| m.contains("READY=1"), Duration::from_secs(10)));
    });

    let d = w.admin_get("/api/v1/oauth/disconnect/1343").await;
    assert_eq!(d.status, 502, "{}", d.text);
    assert_eq!(d.json()["success"], false);
    let st = w.admin_get("/api/v1/oauth/status/1343").await.json();
    assert_eq!(st["status"], "connected", "{st}");
    assert_eq!(st["is_active"], true, "{st}");
    assert!(w.intuit.is_connected("1343"));
    let s = w.admin_post(&sync_path("1343")).await;
    assert_eq!(s.status, 200, "the tokens are still there: {}", s.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_the_same_realm_reactivates_the_same_record() {
    let w = World::start("").await;
    assert_eq!(w.fetch()["ok"], true);
    assert_eq!(w.connect(spec("1414", "Return Co")).await.status, 200);
    assert_eq!(w.admin_post(&sync_path("1414")).await.status, 200);
    let set = w
        .admin_put(
            "/api/v1/companies/1414/settings",
            r#"{"fill_non_business_days": false}"#,
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.text);
    let first = w
        .admin_get("/api/v1/companies/list?active_only=false")
        .await
        .json()["companies"][0]
        .clone();
    assert_eq!(
        w.admin_get("/api/v1/oauth/disconnect/1414").await.status,
        200
    );

    w.intuit.set_company_name("1414", "Return Co (renamed)");
    w.intuit.set_next_realm("1414");
    let (cookie, query) = w.authorize().await;
    let c = w.callback(&query, Some(&cookie)).await;
    assert_eq!(c.status, 200, "{}", c.text);

    let all = w
        .admin_get("/api/v1/companies/list?active_only=false")
        .await
        .json();
    assert_eq!(all["count"], 1, "the same record, not a second one: {all}");
    let again = &all["companies"][0];
    assert_eq!(again["is_active"], true);
    assert_eq!(again["connection"], "connected");
    assert_eq!(again["created_at"], first["created_at"]);
    assert_eq!(again["last_sync_at"], first["last_sync_at"]);
    assert_eq!(again["fill_non_business_days"], false, "settings kept");
    assert_eq!(
        again["company_name"], "Return Co (renamed)",
        "re-read from QuickBooks"
    );
    let status = w
        .admin_get("/api/v1/companies/1414/sync/status")
        .await
        .json();
    assert_eq!(
        status["exchange_rates"]["total"], 2,
        "history kept: {status}"
    );
    assert_eq!(status["syncing"]["total_attempts"], 1, "{status}");
    let logs = w.control("logs", json!({"realm": "1414", "limit": 100}));
    assert!(logs.to_string().contains("reconnected"), "{logs}");

    // Working again, with the new grant.
    assert_eq!(w.admin_post(&sync_path("1414")).await.status, 200);
    assert!(w.intuit.is_connected("1414"));
}

// ------------------------------------------------------------------------------------------
// Admin auth, rate limit, enrollment, status
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_key_the_admin_endpoints_answer_401() {
    let d = tokio::task::block_in_place(|| {
        TestDaemon::start("[server]\nrate_limit_per_minute = 100000\n")
    });
    let http = browser();
    let endpoints = [
        ("GET", "/api/v1/companies/list"),
        ("POST", "/api/v1/companies/1/sync"),
        ("POST", "/api/v1/companies/sync-all"),
        ("GET", "/api/v1/companies/1/sync/status"),
        ("PUT", "/api/v1/companies/1/settings"),
        ("GET", "/api/v1/oauth/status/1"),
        ("GET", "/api/v1/oauth/disconnect/1"),
    ];
    for (method, path) in endpoints {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        for auth in [None, Some("Bearer "), Some("Bearer anything"), Some("X")] {
            let mut rb = http.request(m.clone(), d.url(path)).body("{}");
            match auth {
                Some("X") => rb = rb.header("X-API-Key", ""),
                Some(a) => rb = rb.header("Authorization", a),
                None => {}
            }
            let a = send(rb).await;
            assert_eq!(a.status, 401, "{method} {path} {auth:?}: {}", a.text);
            let v = a.json();
            assert_eq!(v["success"], false);
            assert_eq!(v["error"]["code"], "unauthorized", "{v}");
        }
    }
    // Public endpoints stay public.
    assert_eq!(send(http.get(d.url("/health"))).await.status, 200);
    assert_eq!(send(http.get(d.url("/"))).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_key_by_bearer_or_x_api_key_and_wrong_keys_refused() {
    let w = World::start("").await;
    assert_eq!(w.connect(spec("1515", "Auth Co")).await.status, 200);
    let get = |path: &str, name: &'static str, value: String| {
        send(w.http.get(w.url(path)).header(name, value))
    };
    for path in ["/api/v1/companies/list", "/api/v1/oauth/status/1515"] {
        assert_eq!(send(w.http.get(w.url(path))).await.status, 401, "{path}");
        for (name, value) in [
            ("Authorization", "Bearer wrong-key".to_string()),
            ("Authorization", format!("Bearer {ADMIN_KEY}x")),
            ("Authorization", format!("Basic {ADMIN_KEY}")),
            ("Authorization", ADMIN_KEY.to_string()),
            ("X-API-Key", "wrong-key".to_string()),
            ("X-API-Key", ADMIN_KEY[..ADMIN_KEY.len() - 1].to_string()),
        ] {
            let a = get(path, name, value.clone()).await;
            assert_eq!(a.status, 401, "{path} {name}: {value}: {}", a.text);
            assert_eq!(a.json()["error"]["code"], "unauthorized");
            assert!(!a.text.contains(ADMIN_KEY), "{}", a.text);
        }
        let a = get(path, "Authorization", format!("Bearer {ADMIN_KEY}")).await;
        assert_eq!(a.status, 200, "{path} bearer: {}", a.text);
        let a = get(path, "X-API-Key", ADMIN_KEY.to_string()).await;
        assert_eq!(a.status, 200, "{path} x-api-key: {}", a.text);
    }
    // Past the auth check, an unknown company is a 404.
    let a = w.admin_get("/api/v1/oauth/status/999").await;
    assert_eq!(a.status, 404, "{}", a.text);
    // A wrong key cannot disconnect.
    let a = get("/api/v1/oauth/disconnect/1515", "X-API-Key", "wrong".into()).await;
    assert_eq!(a.status, 401);
    assert_eq!(w.intuit.revoke_calls(), 0);
    assert!(w.intuit.is_connected("1515"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_per_client_ip_answers_429_with_retry_after() {
    let w = World::start("[server]\nrate_limit_per_minute = 3\n").await;
    for i in 0..3 {
        let a = w.get("/").await;
        assert_eq!(a.status, 200, "request {i}: {}", a.text);
    }
    for path in ["/", "/api/v1/oauth/connect", "/api/v1/rates"] {
        let a = w.get(path).await;
        assert_eq!(a.status, 429, "{path}: {}", a.text);
        let wait: u64 = header(&a, RETRY_AFTER)
            .expect("Retry-After")
            .parse()
            .expect("seconds");
        assert!((1..=60).contains(&wait), "Retry-After {wait}");
        assert_eq!(a.json()["error"]["code"], "rate_limited", "{}", a.text);
    }
    let a = w.admin_post(&sync_path("1")).await;
    assert_eq!(a.status, 429, "the sync endpoints too: {}", a.text);
    // /health is exempt.
    for _ in 0..5 {
        assert_eq!(w.get("/health").await.status, 200);
    }
    // Another client address has its own budget.
    let other = reqwest::Client::builder()
        .local_address(Some("127.0.0.2".parse::<IpAddr>().expect("ip")))
        .build()
        .expect("client");
    let a = send(other.get(w.url("/"))).await;
    assert_eq!(a.status, 200, "another IP: {}", a.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_enrollment_needs_a_single_use_link() {
    let w = World::start("[server]\nenrollment = \"invite\"\n").await;

    let home = w.get("/").await;
    assert_eq!(home.status, 200);
    assert!(
        !home.text.contains("/api/v1/oauth/connect"),
        "no connect link: {}",
        home.text
    );
    assert!(
        !home.text.contains("Connect to QuickBooks"),
        "{}",
        home.text
    );

    // Without a link, or with a made-up one: refused, no state handed out.
    for path in [
        "/api/v1/oauth/connect",
        "/api/v1/oauth/connect?invite=",
        "/api/v1/oauth/connect?invite=made-up",
    ] {
        let a = w.get(path).await;
        assert_eq!(a.status, 403, "{path}: {}", a.text);
        assert!(header(&a, SET_COOKIE).is_none(), "{path}");
        assert!(header(&a, LOCATION).is_none(), "{path}");
    }
    let a = send(
        w.http
            .get(w.url("/api/v1/oauth/connect"))
            .header(ACCEPT, "application/json"),
    )
    .await;
    assert_eq!(a.status, 403);
    assert_eq!(a.json()["error"]["code"], "invite_required", "{}", a.text);

    // An admin makes a link; it works once.
    let link = w.control("connect_url", json!({}));
    assert_eq!(link["ok"], true, "{link}");
    assert_eq!(link["data"]["single_use"], true);
    let url = url::Url::parse(link["data"]["url"].as_str().expect("url")).expect("URL");
    assert_eq!(url.path(), "/api/v1/oauth/connect");
    let query = url.query().expect("invite query").to_string();
    assert!(
        param(&query, "invite").is_some_and(|c| c.len() >= 32),
        "{url}"
    );
    let other = w.control("connect_url", json!({}));
    assert_ne!(other["data"]["url"], link["data"]["url"]);

    w.intuit.add_company(spec("1616", "Invited Co"));
    w.intuit.set_next_realm("1616");
    let local = w.url(&format!("/api/v1/oauth/connect?{query}"));
    let (cookie, cb) = authorize_at(&w.http, &local).await;
    let c = w.callback(&cb, Some(&cookie)).await;
    assert_eq!(c.status, 200, "{}", c.text);
    assert_eq!(company_count(&w).await, 1);

    // The same link again: refused.
    let a = w.get(&format!("/api/v1/oauth/connect?{query}")).await;
    assert_eq!(a.status, 403, "{}", a.text);
    assert!(header(&a, SET_COOKIE).is_none());
    assert_eq!(w.intuit.token_calls(), 1);
}

/// Invite links expire after 7 days by the daemon's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_link_expires_after_seven_days() {
    let intuit = inproc_intuit().await;
    intuit.add_company(spec("1626", "Late Co"));
    intuit.set_next_realm("1626");
    let clock = ManualClock::new(Utc::now());
    let d = InProcDaemon::start(
        &inproc_toml(&intuit, "enrollment = \"invite\"\n"),
        clock.clone(),
    )
    .await;
    let http = browser();
    let invite = |v: &Value| {
        let url = url::Url::parse(v["data"]["url"].as_str().expect("url")).expect("URL");
        format!(
            "{}/api/v1/oauth/connect?{}",
            d.http,
            url.query().expect("query")
        )
    };
    let late = invite(&d.control("connect_url", json!({})).await);
    let timely = invite(&d.control("connect_url", json!({})).await);

    clock.advance(chrono::Duration::days(6));
    let (cookie, query) = authorize_at(&http, &timely).await;
    let ok = send(
        http.get(format!("{}/api/v1/oauth/callback?{query}", d.http))
            .header(COOKIE, cookie),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text);

    clock.advance(chrono::Duration::days(2));
    let a = send(http.get(&late)).await;
    assert_eq!(a.status, 403, "{}", a.text);
    assert!(header(&a, SET_COOKIE).is_none());
    assert_eq!(intuit.token_calls(), 1);
    d.stop().await;
}

/// SIGHUP applies a new enrollment mode and rate limit without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_and_rate_limit_change_on_sighup() {
    let mut w = World::start("").await;
    assert_eq!(w.get("/api/v1/oauth/connect").await.status, 302);

    w.daemon.extra_config = w.daemon.extra_config.replacen(
        "rate_limit_per_minute = 100000\n",
        "rate_limit_per_minute = 3\nenrollment = \"invite\"\n",
        1,
    );
    w.daemon.write_config();
    tokio::task::block_in_place(|| {
        w.daemon.signal(libc::SIGHUP);
        assert!(
            w.daemon
                .notifications_until(|m| m.contains("READY=1"), Duration::from_secs(10)),
            "reloaded: {}",
            w.daemon.stderr()
        );
    });
    let home = w.get("/").await;
    assert_eq!(home.status, 200, "{}", home.text);
    assert!(
        !home.text.contains("/api/v1/oauth/connect"),
        "{}",
        home.text
    );
    let a = w.get("/api/v1/oauth/connect").await;
    assert_eq!(a.status, 403, "{}", a.text);
    // The minute's window already holds three requests (one before the reload).
    let a = w.get("/").await;
    assert_eq!(a.status, 429, "{}", a.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_status_shows_expiries_and_hard_expiry_never_tokens() {
    // A grant 20 days from its hard cap: inside the 30-day warning.
    let cfg = FakeIntuitConfig {
        hard_expiry: Duration::from_secs(20 * 24 * 3600),
        ..FakeIntuitConfig::default()
    };
    let w = World::start_with(cfg, "").await;
    assert_eq!(w.fetch()["ok"], true);
    assert_eq!(w.connect(spec("1717", "Expiry Co")).await.status, 200);
    let hard = w.intuit.now() + chrono::Duration::days(20);

    let a = w.admin_get("/api/v1/oauth/status/1717").await;
    assert_eq!(a.status, 200, "{}", a.text);
    let s = a.json();
    assert_eq!(s["company_id"], "1717");
    assert_near(
        "access expiry",
        ts(&s["access_token_expires_at"]),
        Utc::now() + chrono::Duration::hours(1),
        5,
    );
    // The rolling window is capped by the hard expiry.
    assert_near(
        "refresh expiry",
        ts(&s["refresh_token_expires_at"]),
        hard,
        5,
    );
    assert_near(
        "hard expiry",
        ts(&s["refresh_token_hard_expires_at"]),
        hard,
        5,
    );
    assert_eq!(s["hard_expiry_warning"], true, "{s}");
    assert!(s["last_refreshed_at"].is_string(), "{s}");

    // Two days later Intuit says two days fewer remain (the fake's clock moved, the daemon's
    // did not): the refresh tracks min(previous, now + value), and the status shows it.
    w.intuit.advance(Duration::from_secs(2 * 24 * 3600));
    w.intuit.expire_access_tokens("1717");
    let synced = w.admin_post(&sync_path("1717")).await;
    assert_eq!(synced.status, 200, "{}", synced.text);
    assert_eq!(w.intuit.refreshes("1717"), 1);
    let b = w.admin_get("/api/v1/oauth/status/1717").await;
    let s2 = b.json();
    let earlier = hard - chrono::Duration::days(2);
    assert_near(
        "hard expiry after refresh",
        ts(&s2["refresh_token_hard_expires_at"]),
        earlier,
        5,
    );
    assert_near(
        "refresh expiry after refresh",
        ts(&s2["refresh_token_expires_at"]),
        earlier,
        5,
    );
    assert_eq!(s2["hard_expiry_warning"], true);

    // Never a token: no token-valued field, no token text.
    for v in [&s, &s2] {
        let obj = v.as_object().expect("object");
        for k in obj.keys() {
            assert!(
                !matches!(
                    k.as_str(),
                    "access_token" | "refresh_token" | "token" | "tokens"
                ),
                "{k} in {v}"
            );
        }
    }
    let mut secrets = w.intuit.issued_refresh_tokens();
    secrets.extend(w.intuit.issued_access_tokens());
    assert_no_plaintext(
        "the status answer",
        format!("{}{}", a.text, b.text).as_bytes(),
        &secrets,
    );
}

/// SPEC §9: an invite is consumed when its connection succeeds, not when the flow starts —
/// an abandoned flow does not burn the link; two flows started from one link connect once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_flow_does_not_burn_the_invite() {
    let w = World::start("[server]\nenrollment = \"invite\"\n").await;
    let link = w.control("connect_url", json!({}));
    let url = url::Url::parse(link["data"]["url"].as_str().expect("url")).expect("URL");
    let query = url.query().expect("invite query").to_string();
    let local = w.url(&format!("/api/v1/oauth/connect?{query}"));

    // Started and abandoned at Intuit's consent page: the link still works.
    let a = w.get(&format!("/api/v1/oauth/connect?{query}")).await;
    assert_eq!(a.status, 302, "{}", a.text);

    // Two flows from the same link: the first to come back connects, the other is refused.
    w.intuit.add_company(spec("1717", "First Co"));
    w.intuit.set_next_realm("1717");
    let (cookie1, cb1) = authorize_at(&w.http, &local).await;
    w.intuit.add_company(spec("1818", "Second Co"));
    w.intuit.set_next_realm("1818");
    let (cookie2, cb2) = authorize_at(&w.http, &local).await;
    let c1 = w.callback(&cb1, Some(&cookie1)).await;
    assert_eq!(c1.status, 200, "{}", c1.text);
    let c2 = w.callback(&cb2, Some(&cookie2)).await;
    assert_eq!(
        c2.status, 403,
        "the invite was used by the first: {}",
        c2.text
    );
    assert_eq!(company_count(&w).await, 1);
    assert_eq!(
        w.intuit.token_calls(),
        1,
        "the second code is not even exchanged"
    );
    let a = w.get(&format!("/api/v1/oauth/connect?{query}")).await;
    assert_eq!(a.status, 403, "used up: {}", a.text);
}

/// SPEC §6: a browser that goes away while the callback waits on Intuit cancels nothing:
/// Intuit consumed the code, and the grant it issued is stored (the company connected), not
/// lost with the dropped request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_that_leaves_mid_callback_loses_no_grant() {
    let w = World::start("").await;
    let spec = CompanySpec::new("4620816365210001", "Left Early Co");
    w.intuit.add_company(spec);
    w.intuit.set_next_realm("4620816365210001");
    let (cookie, query) = w.authorize().await;
    // The code exchange (and everything after it) is slow at Intuit; the browser gives up.
    w.intuit.set_latency(Duration::from_millis(800));
    let gave_up = reqwest::Client::new()
        .get(w.url(&format!("/api/v1/oauth/callback?{query}")))
        .header(COOKIE, cookie)
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(gave_up.is_err(), "the browser left before the answer");
    eventually_async(
        Duration::from_secs(20),
        "the connection to be kept after the browser left (the grant lost with the request?)",
        async || {
            let s = w
                .admin_get("/api/v1/oauth/status/4620816365210001")
                .await
                .json();
            s["connected"] == true
        },
    )
    .await;
    assert_eq!(w.intuit.token_calls(), 1, "one code exchange, no refresh");
}
