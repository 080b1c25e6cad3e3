//! The scheduler end to end (issue 6): the daemon's real `app::run` in-process with a manual
//! clock, wired to the fake BoA and the fake Intuit. The clock is moved, never slept on: each
//! test sets the calendar and waits (in real time, bounded) for what the daemon does on its
//! own — the daily run, polling, giving up, weekends, catch-up after an outage — and for what
//! `/health`, `status`, `/metrics` and the alert webhook report.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Europe::Tirane;
use http_body_util::{BodyExt, Full};
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::support::eventually::eventually_async;
use crate::support::fake_boa::{self, FakeBoa, Mode, FRIDAY};
use crate::support::fake_intuit::{CompanySpec, FakeIntuit, FakeIntuitConfig};
use crate::support::inproc::InProcDaemon;
use crate::support::world::{ADMIN_KEY, REDIRECT};
use boa_exchange::time::clock::{Clock, ManualClock};

const THU: &str = "2026-05-21";
const FRI: &str = "2026-05-22";
const SAT: &str = "2026-05-23";
const SUN: &str = "2026-05-24";
const MON: &str = "2026-05-25";

/// The EUR cell of the main table on the Friday capture (95.40 ALL per EUR).
const EUR_CELL: &str = "<td align=\"right\" nowrap>95.40</td>";

// ------------------------------------------------------------------------------ helpers

fn day(s: &str) -> NaiveDate {
    NaiveDate::from_str(s).expect("date")
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).expect("decimal")
}

/// The instant the Tirana wall clock shows `date` `hh:mm:ss`.
fn tirane(date: &str, hh: u32, mm: u32, ss: u32) -> DateTime<Utc> {
    Tirane
        .from_local_datetime(&day(date).and_hms_opt(hh, mm, ss).expect("time"))
        .single()
        .expect("unambiguous local time")
        .with_timezone(&Utc)
}

/// The Friday capture re-dated to `date` (`YYYY-MM-DD`) with the main table's EUR at `eur`
/// (the minor table keeps its 15.05.2026 date).
fn page(date: &str, eur: &str) -> Vec<u8> {
    let text = String::from_utf8(fake_boa::fixture(FRIDAY)).expect("utf-8 capture");
    assert_eq!(text.matches(EUR_CELL).count(), 1, "one EUR cell");
    let d = day(date).format("%d.%m.%Y").to_string();
    text.replace("22.05.2026", &d)
        .replace(EUR_CELL, &format!("<td align=\"right\" nowrap>{eur}</td>"))
        .into_bytes()
}

fn thursday_page() -> Vec<u8> {
    page(THU, "95.30")
}

fn friday_page() -> Vec<u8> {
    fake_boa::fixture(FRIDAY)
}

fn monday_page() -> Vec<u8> {
    page(MON, "95.50")
}

/// The fakes of one test.
struct Fakes {
    boa: FakeBoa,
    intuit: FakeIntuit,
}

async fn fakes(first_page: Vec<u8>) -> Fakes {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let boa = FakeBoa::start().await;
    boa.set_page(first_page);
    let intuit = FakeIntuit::start(FakeIntuitConfig {
        redirect_uri: REDIRECT.to_string(),
        ..FakeIntuitConfig::default()
    })
    .await;
    Fakes { boa, intuit }
}

/// Daemon config against the fakes; the schedule as in the issue when `schedule` is true.
fn config(f: &Fakes, schedule: bool, extra: &str) -> String {
    let schedule = if schedule {
        "[schedule]\nenabled = true\ntime = \"13:00\"\ntimezone = \"Europe/Tirane\"\n\
         retry_every_minutes = 15\ngive_up_at = \"18:00\"\n"
    } else {
        "[schedule]\nenabled = false\n"
    };
    format!(
        "[server]\nadmin_api_key = \"{ADMIN_KEY}\"\nrate_limit_per_minute = 100000\n\
         [quickbooks]\nclient_id = \"{}\"\nclient_secret = \"{}\"\nredirect_uri = \"{REDIRECT}\"\n\
         authorize_url = \"{}\"\ntoken_url = \"{}\"\nrevoke_url = \"{}\"\napi_base = \"{}\"\ntimeout_secs = 10\n\
         [boa]\nurl = \"{}\"\ntimeout_secs = 5\n{schedule}{extra}",
        f.intuit.client_id(),
        f.intuit.client_secret(),
        f.intuit.authorize_url(),
        f.intuit.token_url(),
        f.intuit.revoke_url(),
        f.intuit.api_base(),
        f.boa.url(),
    )
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// The browser side of the OAuth flow against the in-process daemon for `realm`: connect →
/// the fake's authorize (auto-approve) → the daemon's callback with the state cookie.
async fn connect(d: &InProcDaemon, intuit: &FakeIntuit, realm: &str) {
    intuit.set_next_realm(realm);
    let http = browser();
    let a = http
        .get(format!("{}/api/v1/oauth/connect", d.http))
        .send()
        .await
        .expect("connect");
    assert_eq!(a.status(), 302);
    let cookie = a.headers()[SET_COOKIE]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("cookie pair")
        .to_string();
    let to_intuit = a.headers()[LOCATION]
        .to_str()
        .expect("location")
        .to_string();
    let b = http.get(&to_intuit).send().await.expect("authorize");
    assert_eq!(b.status(), 302, "authorize at the fake");
    let back = b.headers()[LOCATION]
        .to_str()
        .expect("location")
        .to_string();
    assert!(back.starts_with(REDIRECT), "{back}");
    let query = back.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let c = http
        .get(format!("{}/api/v1/oauth/callback?{query}", d.http))
        .header(COOKIE, cookie)
        .send()
        .await
        .expect("callback");
    let status = c.status().as_u16();
    let text = c.text().await.unwrap_or_default();
    assert_eq!(status, 200, "callback: {text}");
}

/// Registers `realm` at the fake (ALL home, EUR and USD active) and connects it.
async fn add_and_connect(d: &InProcDaemon, intuit: &FakeIntuit, realm: &str) {
    intuit.add_company(CompanySpec::new(realm, format!("Company {realm}")));
    connect(d, intuit, realm).await;
}

/// Polls `check` until it holds; panics with `what` after `secs` seconds.
async fn wait_for(what: &str, secs: u64, mut check: impl FnMut() -> bool) {
    eventually_async(Duration::from_secs(secs), what, async || check()).await;
}

/// The EUR rate the fake QuickBooks company holds for `date`.
fn eur(intuit: &FakeIntuit, realm: &str, date: &str) -> Option<Decimal> {
    intuit
        .exchange_rate(realm, "EUR", day(date))
        .map(|r| r.rate)
}

async fn wait_eur(intuit: &FakeIntuit, realm: &str, date: &str, want: &str) {
    let want = dec(want);
    let what = format!("EUR {want} on {date} in company {realm}");
    wait_for(&what, 15, || eur(intuit, realm, date) == Some(want)).await;
}

/// `status` data over the control socket.
async fn status(d: &InProcDaemon) -> Value {
    let a = d.control("status", json!({})).await;
    assert_eq!(a["ok"], true, "{a}");
    a["data"].clone()
}

/// Waits until `realm` has been synced (its sync status shows a `last_sync_at`).
async fn wait_synced(d: &InProcDaemon, realm: &str) {
    eventually_async(
        Duration::from_secs(15),
        format!("a finished sync of {realm} (last_sync_at in its sync status)"),
        async || {
            let a = d.control("company", json!({"realm": realm})).await;
            assert_eq!(a["ok"], true, "{a}");
            a["data"]["last_sync_at"].is_string()
        },
    )
    .await;
}

/// Waits until `status` shows a finished daily run for `date`; returns the status.
async fn wait_last_run(d: &InProcDaemon, date: &str) -> Value {
    eventually_async(
        Duration::from_secs(15),
        format!("a finished daily run for {date} in status"),
        async || {
            let s = status(d).await;
            (s["schedule"]["last_run"]["date"] == date).then_some(s)
        },
    )
    .await
}

/// Waits until `status` shows the next run at `at` (RFC 3339 UTC).
async fn wait_next_run(d: &InProcDaemon, at: &str) -> Value {
    eventually_async(
        Duration::from_secs(15),
        format!("the next run at {at} in status"),
        async || status(d).await["schedule"]["next_run"] == at,
    )
    .await;
    // `next_run` is shown from the start (computed before the loop plans it): the loop has
    // come round only once it has acted on the clock's reading too.
    settle(d).await;
    status(d).await
}

/// Waits until the scheduler has fully acted on the clock's current reading (`status` →
/// `schedule.clock_seen` equals it): whatever is due by now has happened, so "nothing
/// happened" can be asserted at once, without sleeping and hoping.
async fn settle(d: &InProcDaemon) {
    let now = d
        .clock
        .now()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    eventually_async(
        Duration::from_secs(15),
        format!("the scheduler to settle at {now} (status: schedule.clock_seen)"),
        async || status(d).await["schedule"]["clock_seen"] == now.as_str(),
    )
    .await;
}

/// Waits until the daemon has recorded a scrape stamped with the clock's current time (the
/// fetch is done and stored), then until the scheduler has acted on it (e.g. computed its
/// next poll from the clock).
async fn wait_scrape(d: &InProcDaemon) {
    let at = d
        .clock
        .now()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    eventually_async(
        Duration::from_secs(15),
        format!("a scrape recorded at {at}"),
        async || {
            let a = d.control("scrapes", json!({"limit": 1})).await;
            a["data"][0]["at"] == at.as_str()
        },
    )
    .await;
    settle(d).await;
}

/// `GET /health`: (status, body).
async fn health(d: &InProcDaemon) -> (u16, Value) {
    let r = browser()
        .get(format!("{}/health", d.http))
        .send()
        .await
        .expect("health");
    let code = r.status().as_u16();
    (code, r.json().await.expect("health JSON"))
}

fn reasons(v: &Value) -> Vec<String> {
    v["reasons"]
        .as_array()
        .unwrap_or_else(|| panic!("no reasons list: {v}"))
        .iter()
        .map(|r| r.as_str().expect("reason text").to_string())
        .collect()
}

/// Asserts `/health` and `status` agree, and returns the reasons.
async fn health_reasons(d: &InProcDaemon) -> Vec<String> {
    let (code, h) = health(d).await;
    assert_eq!(code, 200, "{h}");
    let r = reasons(&h);
    let want = if r.is_empty() { "healthy" } else { "degraded" };
    assert_eq!(h["status"], want, "{h}");
    let s = status(d).await;
    assert_eq!(s["health"]["status"], want, "{}", s["health"]);
    assert_eq!(reasons(&s["health"]), r, "status and /health disagree");
    r
}

/// The `AsOfDate`s of the exchange-rate writes `realm` received, in arrival order, with
/// repeats of the same date collapsed.
fn written_dates(intuit: &FakeIntuit, realm: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in intuit.requests_for(realm) {
        if r.method != "POST" || !r.path().ends_with("/exchangerate") {
            continue;
        }
        let body: Value = serde_json::from_str(&r.body).expect("write body is JSON");
        let d = body["AsOfDate"].as_str().expect("AsOfDate").to_string();
        if out.last() != Some(&d) {
            out.push(d);
        }
    }
    out
}

async fn set_fill(d: &InProcDaemon, realm: &str, fill: bool) {
    let a = d
        .control(
            "set",
            json!({"realm": realm, "settings": {"fill_non_business_days": fill}}),
        )
        .await;
    assert_eq!(a["ok"], true, "{a}");
}

// ------------------------------------------------------------------------------ daily run

/// (1) The daemon syncs on its own at the scheduled instant: nothing for Friday exists
/// before 13:00; one tick past it Friday's fixing is in QuickBooks with AsOfDate Friday, and
/// `status` shows that run and the next one (Saturday 13:00 Tirana = 11:00 UTC).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_on_its_own_at_the_scheduled_instant() {
    let f = fakes(thursday_page()).await;
    let clock = ManualClock::new(tirane(FRI, 12, 59, 50));
    let d = InProcDaemon::start(&config(&f, true, ""), clock.clone()).await;
    let s = wait_next_run(&d, "2026-05-22T11:00:00Z").await;
    assert_eq!(s["schedule"]["last_run"], Value::Null, "{}", s["schedule"]);

    // Connecting syncs at once: Thursday's fixing is the newest, so Thursday's date.
    add_and_connect(&d, &f.intuit, "1001").await;
    wait_eur(&f.intuit, "1001", THU, "95.30").await;
    // That sync is over (its `last_sync_at` is set after its last write) and the scheduler
    // has acted on the clock: whatever either would write is written.
    wait_synced(&d, "1001").await;
    settle(&d).await;
    assert_eq!(eur(&f.intuit, "1001", FRI), None, "nothing for Friday yet");

    // BoA publishes; a second before 13:00 the daemon still waits.
    f.boa.set_page(friday_page());
    f.intuit.clear_requests();
    let n = f.boa.requests();
    clock.set(tirane(FRI, 12, 59, 59));
    settle(&d).await;
    assert_eq!(f.boa.requests(), n, "fetched before the scheduled time");
    assert_eq!(eur(&f.intuit, "1001", FRI), None);
    clock.set(tirane(FRI, 13, 0, 1));
    wait_eur(&f.intuit, "1001", FRI, "95.40").await;
    assert_eq!(
        eur(&f.intuit, "1001", THU),
        Some(dec("95.30")),
        "Thursday kept"
    );
    // Currencies are written one after another: wait for the last one too.
    wait_for("USD for Friday", 15, || {
        f.intuit
            .exchange_rate("1001", "USD", day(FRI))
            .map(|r| r.rate)
            == Some(dec("82.24"))
    })
    .await;
    assert_eq!(written_dates(&f.intuit, "1001"), vec![FRI.to_string()]);

    let s = wait_last_run(&d, FRI).await;
    let run = &s["schedule"]["last_run"];
    assert_eq!(run["started_at"], "2026-05-22T11:00:01Z", "{run}");
    let outcome = run["outcome"].as_str().expect("outcome");
    assert!(outcome.contains("Synced 1/1"), "{outcome}");
    wait_next_run(&d, "2026-05-23T11:00:00Z").await;
    d.stop().await;
}

/// (2) On a business day the run keeps polling every `retry_every_minutes` by the clock
/// until the day's fixing appears, and syncs right after the poll that finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_every_fifteen_minutes_until_the_fixing_appears() {
    let f = fakes(thursday_page()).await;
    let clock = ManualClock::new(tirane(FRI, 12, 59, 50));
    let d = InProcDaemon::start(&config(&f, true, ""), clock.clone()).await;
    wait_next_run(&d, "2026-05-22T11:00:00Z").await;
    add_and_connect(&d, &f.intuit, "2002").await;
    wait_eur(&f.intuit, "2002", THU, "95.30").await;

    // 13:00: the run fetches, finds Thursday's page, syncs nothing.
    clock.set(tirane(FRI, 13, 0, 1));
    wait_scrape(&d).await;
    assert_eq!(eur(&f.intuit, "2002", FRI), None);

    // Not yet time for the next poll: nothing is fetched.
    let n = f.boa.requests();
    clock.advance(chrono::Duration::minutes(14));
    settle(&d).await;
    assert_eq!(f.boa.requests(), n, "polled before 15 minutes had passed");

    // 13:15: the first poll, still Thursday.
    clock.advance(chrono::Duration::minutes(1));
    wait_scrape(&d).await;
    assert_eq!(eur(&f.intuit, "2002", FRI), None);
    let s = status(&d).await;
    assert_eq!(s["schedule"]["last_run"], Value::Null, "run still polling");

    // BoA publishes; the 13:30 poll finds it and the company gets Friday's rates.
    f.boa.set_page(friday_page());
    clock.advance(chrono::Duration::minutes(15));
    wait_scrape(&d).await;
    wait_eur(&f.intuit, "2002", FRI, "95.40").await;
    let s = wait_last_run(&d, FRI).await;
    let outcome = s["schedule"]["last_run"]["outcome"]
        .as_str()
        .expect("outcome");
    assert!(!outcome.contains("no fixing"), "{outcome}");
    assert!(outcome.contains("Synced 1/1"), "{outcome}");
    d.stop().await;
}

/// (3) No fixing by `give_up_at` (the page was read each time): the day is recorded as a
/// holiday ("no fixing today"), the rate in force (Thursday's) is written for Friday to the
/// companies that fill non-business days and not to the others, and health stays healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gives_up_at_six_and_fills_the_holiday() {
    let f = fakes(thursday_page()).await;
    let clock = ManualClock::new(tirane(FRI, 12, 59, 50));
    let d = InProcDaemon::start(&config(&f, true, ""), clock.clone()).await;
    wait_next_run(&d, "2026-05-22T11:00:00Z").await;
    add_and_connect(&d, &f.intuit, "3001").await;
    add_and_connect(&d, &f.intuit, "3002").await;
    wait_eur(&f.intuit, "3001", THU, "95.30").await;
    wait_eur(&f.intuit, "3002", THU, "95.30").await;
    set_fill(&d, "3002", false).await;

    clock.set(tirane(FRI, 13, 0, 1));
    wait_scrape(&d).await;
    clock.set(tirane(FRI, 18, 0, 1));
    let s = wait_last_run(&d, FRI).await;
    let outcome = s["schedule"]["last_run"]["outcome"]
        .as_str()
        .expect("outcome");
    assert!(outcome.contains("no fixing today"), "{outcome}");

    wait_eur(&f.intuit, "3001", FRI, "95.30").await;
    // The loop marks the clock seen again only after the run and the catch-up that follows
    // it: neither can still write the holiday to 3002.
    settle(&d).await;
    assert_eq!(
        eur(&f.intuit, "3002", FRI),
        None,
        "a company that does not fill non-business days got the holiday"
    );
    assert_eq!(health_reasons(&d).await, Vec::<String>::new());

    // The holiday is remembered, not just inferred from today's clock: on Saturday the
    // fixing in force on Friday is still Thursday's.
    clock.set(tirane(SAT, 9, 0, 0));
    let r = d.control("rates", json!({"date": FRI})).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["data"]["tables"][0]["date"], THU, "{r}");
    d.stop().await;
}

/// (4) Saturday's run fetches once (nothing new) and writes Saturday with Friday's rates to
/// the companies that fill non-business days, not to one that opted out; no polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weekend_run_fetches_once_and_fills() {
    let f = fakes(friday_page()).await;
    // Friday afternoon: the missed 13:00 run runs at start.
    let clock = ManualClock::new(tirane(FRI, 13, 30, 0));
    let d = InProcDaemon::start(&config(&f, true, ""), clock.clone()).await;
    wait_last_run(&d, FRI).await;
    wait_next_run(&d, "2026-05-23T11:00:00Z").await;
    add_and_connect(&d, &f.intuit, "4001").await;
    add_and_connect(&d, &f.intuit, "4002").await;
    wait_eur(&f.intuit, "4001", FRI, "95.40").await;
    wait_eur(&f.intuit, "4002", FRI, "95.40").await;
    set_fill(&d, "4002", false).await;

    clock.set(tirane(SAT, 12, 59, 0));
    settle(&d).await;
    let n = f.boa.requests();
    clock.set(tirane(SAT, 13, 0, 1));
    let s = wait_last_run(&d, SAT).await;
    let outcome = s["schedule"]["last_run"]["outcome"]
        .as_str()
        .expect("outcome");
    assert!(outcome.contains("non-business day"), "{outcome}");
    wait_eur(&f.intuit, "4001", SAT, "95.40").await;
    assert_eq!(
        f.intuit
            .exchange_rate("4001", "USD", day(SAT))
            .map(|r| r.rate),
        Some(dec("82.24"))
    );
    assert_eq!(eur(&f.intuit, "4002", SAT), None, "fill disabled");
    assert_eq!(f.boa.requests(), n + 1, "one fetch on a weekend");

    // No polling on a weekend: an hour later nothing more was fetched.
    clock.advance(chrono::Duration::minutes(61));
    settle(&d).await;
    assert_eq!(f.boa.requests(), n + 1, "polled on a weekend");
    assert_eq!(eur(&f.intuit, "4002", SAT), None, "fill disabled");
    d.stop().await;
}

// ------------------------------------------------------------------------------ catch-up

/// (5) Down from Thursday afternoon to Monday afternoon (Friday's fixing reached the store
/// meanwhile without being synced): at start the missed Monday run runs at once and the
/// company receives Friday, Saturday, Sunday and Monday, oldest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_up_after_a_three_day_outage_oldest_first() {
    let f = fakes(thursday_page()).await;
    let clock = ManualClock::new(tirane(THU, 14, 0, 0));
    let d = InProcDaemon::start(&config(&f, true, ""), clock.clone()).await;
    wait_last_run(&d, THU).await;
    add_and_connect(&d, &f.intuit, "5005").await;
    wait_eur(&f.intuit, "5005", THU, "95.30").await;
    let dir = d.stop().await;

    // Friday: the fixing is stored (an admin fetch, automatic syncs off) but not synced.
    f.boa.set_page(friday_page());
    clock.set(tirane(FRI, 14, 0, 0));
    let d = InProcDaemon::start_in(dir, &config(&f, false, ""), clock.clone()).await;
    let a = d.control("fetch", json!({})).await;
    assert_eq!(a["ok"], true, "{a}");
    let dir = d.stop().await;
    assert_eq!(
        eur(&f.intuit, "5005", FRI),
        None,
        "Friday must not be synced yet"
    );

    // Monday 14:00, after the 13:00 run time: back up.
    f.boa.set_page(monday_page());
    f.intuit.clear_requests();
    clock.set(tirane(MON, 14, 0, 0));
    let d = InProcDaemon::start_in(dir, &config(&f, true, ""), clock.clone()).await;
    wait_eur(&f.intuit, "5005", MON, "95.50").await;
    let s = wait_last_run(&d, MON).await;
    assert_eq!(
        s["schedule"]["last_run"]["started_at"], "2026-05-25T12:00:00Z",
        "the missed run ran at start"
    );
    wait_for("the weekend to be caught up", 15, || {
        eur(&f.intuit, "5005", SUN).is_some()
    })
    .await;
    for date in [FRI, SAT, SUN] {
        assert_eq!(eur(&f.intuit, "5005", date), Some(dec("95.40")), "{date}");
    }
    assert_eq!(
        written_dates(&f.intuit, "5005"),
        vec![FRI, SAT, SUN, MON],
        "dates must be caught up oldest first"
    );
    wait_next_run(&d, "2026-05-26T11:00:00Z").await;
    d.stop().await;
}

/// (5b) The wall clock jumps over several run times while the daemon runs (host suspended
/// over the weekend, clock stepped): the run due now is today's, not the first one that was
/// skipped, and the skipped dates are caught up, oldest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_jump_over_the_weekend_runs_todays_run() {
    let f = fakes(friday_page()).await;
    let clock = ManualClock::new(tirane(FRI, 14, 0, 0));
    let d = InProcDaemon::start(&config(&f, true, ""), clock.clone()).await;
    wait_last_run(&d, FRI).await;
    add_and_connect(&d, &f.intuit, "5105").await;
    wait_eur(&f.intuit, "5105", FRI, "95.40").await;
    wait_next_run(&d, "2026-05-23T11:00:00Z").await;

    f.boa.set_page(monday_page());
    f.intuit.clear_requests();
    clock.set(tirane(MON, 14, 0, 0));
    wait_eur(&f.intuit, "5105", MON, "95.50").await;
    let s = wait_last_run(&d, MON).await;
    let outcome = s["schedule"]["last_run"]["outcome"]
        .as_str()
        .expect("outcome");
    assert!(outcome.contains("Synced 1/1"), "{outcome}");
    assert_eq!(written_dates(&f.intuit, "5105"), vec![SAT, SUN, MON]);
    wait_next_run(&d, "2026-05-26T11:00:00Z").await;
    d.stop().await;
}

// ------------------------------------------------------------------------------ health

/// (6) Degraded reasons appear and clear, in `/health` and `status` alike: a failed scrape,
/// a company needing a reconnect, and a stale fixing (BoA unreadable all of Monday, so
/// Monday cannot be taken for a holiday).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degraded_health_reasons_appear_and_clear() {
    let f = fakes(friday_page()).await;
    let clock = ManualClock::new(tirane(FRI, 14, 0, 0));
    let d = InProcDaemon::start(&config(&f, true, ""), clock.clone()).await;
    wait_last_run(&d, FRI).await;
    add_and_connect(&d, &f.intuit, "6006").await;
    wait_eur(&f.intuit, "6006", FRI, "95.40").await;
    assert_eq!(health_reasons(&d).await, Vec::<String>::new());

    // The last scrape failed.
    f.boa.set_mode(Mode::Status(503));
    let a = d.control("fetch", json!({})).await;
    assert_eq!(a["ok"], false, "{a}");
    let r = health_reasons(&d).await;
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(r[0].contains("last BoA scrape failed"), "{r:?}");
    f.boa.set_mode(Mode::Ok);
    let a = d.control("fetch", json!({})).await;
    assert_eq!(a["ok"], true, "{a}");
    assert_eq!(health_reasons(&d).await, Vec::<String>::new());

    // A company whose grant was revoked needs a reconnect.
    f.intuit.revoke_grant("6006");
    let a = d
        .control("sync", json!({"realm": "6006", "date": FRI}))
        .await;
    assert_eq!(a["ok"], false, "{a}");
    assert_eq!(a["error"]["code"], "reconnect_needed", "{a}");
    let r = health_reasons(&d).await;
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(r[0].contains("reconnect"), "{r:?}");
    let (_, h) = health(&d).await;
    assert_eq!(h["companies_with_expired_tokens"], 1, "{h}");
    connect(&d, &f.intuit, "6006").await;
    assert_eq!(health_reasons(&d).await, Vec::<String>::new());

    // The weekend runs (page readable, nothing new) leave it healthy.
    for date in [SAT, SUN] {
        clock.set(tirane(date, 13, 0, 1));
        wait_last_run(&d, date).await;
        assert_eq!(health_reasons(&d).await, Vec::<String>::new(), "{date}");
    }
    // Monday: BoA unreadable all day (a Cloudflare 403 is refused at once, without the
    // retries a 503 gets). After 18:00 Monday's fixing should be stored.
    f.boa.set_mode(Mode::Status(403));
    clock.set(tirane(MON, 13, 0, 1));
    wait_scrape(&d).await;
    clock.set(tirane(MON, 18, 0, 1));
    wait_last_run(&d, MON).await;
    let r = health_reasons(&d).await;
    assert!(
        r.iter().any(
            |r| r.contains("newest BoA fixing is dated 2026-05-22") && r.contains("2026-05-25")
        ),
        "stale fixing not reported: {r:?}"
    );
    assert!(
        r.iter().any(|r| r.contains("last BoA scrape failed")),
        "{r:?}"
    );

    // BoA is back with Monday's fixing: every reason clears.
    f.boa.set_mode(Mode::Ok);
    f.boa.set_page(monday_page());
    let a = d.control("fetch", json!({})).await;
    assert_eq!(a["ok"], true, "{a}");
    assert_eq!(health_reasons(&d).await, Vec::<String>::new());
    d.stop().await;
}

// ------------------------------------------------------------------------------ metrics

/// One sample of the metrics text: the value of the line `name{labels}` (exact match).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
        .trim()
        .parse()
        .expect("sample value")
}

async fn metrics(d: &InProcDaemon) -> String {
    let r = browser()
        .get(format!("{}/metrics", d.http))
        .send()
        .await
        .expect("metrics");
    assert_eq!(r.status(), 200, "loopback needs no key");
    let ct = r.headers()[CONTENT_TYPE].to_str().expect("ct").to_string();
    assert!(
        ct.starts_with("application/openmetrics-text; version=1.0.0"),
        "{ct}"
    );
    r.text().await.expect("text")
}

/// (7) `/metrics` in the Prometheus text format; counters move after a fetch and a sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_in_prometheus_text_format_count_fetches_and_syncs() {
    let f = fakes(friday_page()).await;
    let clock = ManualClock::new(tirane(FRI, 14, 0, 0));
    let d = InProcDaemon::start(&config(&f, false, ""), clock.clone()).await;
    let m = metrics(&d).await;
    // OpenMetrics text (prometheus-client): a counter family is typed without `_total`,
    // its samples carry it, and the exposition ends with `# EOF`.
    assert!(m.contains("# TYPE boa_exchange_scrapes counter\n"), "{m}");
    assert!(m.contains("# HELP boa_exchange_scrapes "), "{m}");
    assert!(m.ends_with("# EOF\n"), "{m}");
    for line in m.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix('#') {
            assert!(
                rest.starts_with(" HELP ") || rest.starts_with(" TYPE ") || rest == " EOF",
                "{line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("series and value");
        assert!(series.starts_with("boa_exchange_"), "{line}");
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
    let ok = "boa_exchange_scrapes_total{outcome=\"success\"}";
    let synced = "boa_exchange_company_syncs_total{outcome=\"success\"}";
    assert_eq!(sample(&m, ok), 0.0);
    assert_eq!(sample(&m, synced), 0.0);

    let a = d.control("fetch", json!({})).await;
    assert_eq!(a["ok"], true, "{a}");
    let m = metrics(&d).await;
    assert_eq!(sample(&m, ok), 1.0);
    assert_eq!(
        sample(&m, "boa_exchange_scrapes_total{outcome=\"failure\"}"),
        0.0
    );

    add_and_connect(&d, &f.intuit, "7007").await;
    let a = d
        .control("sync", json!({"realm": "7007", "date": FRI}))
        .await;
    assert_eq!(a["ok"], true, "{a}");
    let m = metrics(&d).await;
    assert_eq!(sample(&m, synced), 1.0);
    assert_eq!(
        sample(&m, "boa_exchange_rates_written_total"),
        2.0,
        "EUR, USD"
    );
    assert_eq!(
        sample(&m, "boa_exchange_companies{state=\"connected\"}"),
        1.0
    );
    d.stop().await;
}

// ------------------------------------------------------------------------------ alerts

/// A webhook receiver: records each POSTed JSON body.
struct Hook {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn hook() -> Hook {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/alerts", listener.local_addr().expect("addr"));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let method = req.method().clone();
                            let body = req.into_body().collect().await?.to_bytes();
                            let v: Value = serde_json::from_slice(&body).unwrap_or_else(
                                |_| json!({"not_json": String::from_utf8_lossy(&body)}),
                            );
                            seen.lock()
                                .unwrap()
                                .push(json!({"method": method.as_str(), "body": v}));
                            Ok::<_, hyper::Error>(hyper::Response::new(Full::new(
                                Bytes::from_static(b"ok"),
                            )))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Hook { url, bodies, task }
}

/// (8) A revoked grant: the failed sync raises one JSON alert at the webhook, naming the
/// company; the same condition (another failed sync, the periodic check) is not sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_webhook_gets_one_alert_per_condition() {
    let f = fakes(friday_page()).await;
    let h = hook().await;
    let extra = format!("[alerts]\nwebhook_url = \"{}\"\n", h.url);
    let clock = ManualClock::new(tirane(FRI, 14, 0, 0));
    let d = InProcDaemon::start(&config(&f, true, &extra), clock.clone()).await;
    wait_last_run(&d, FRI).await;
    add_and_connect(&d, &f.intuit, "8008").await;
    wait_eur(&f.intuit, "8008", FRI, "95.40").await;
    assert!(
        h.bodies.lock().unwrap().is_empty(),
        "no alert while healthy"
    );

    f.intuit.revoke_grant("8008");
    let a = d
        .control("sync", json!({"realm": "8008", "date": FRI}))
        .await;
    assert_eq!(a["error"]["code"], "reconnect_needed", "{a}");
    wait_for("the alert", 10, || !h.bodies.lock().unwrap().is_empty()).await;
    let got = h.bodies.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["method"], "POST");
    let alert = &got[0]["body"];
    assert_eq!(alert["alert"], "token_refresh_failed", "{alert}");
    assert_eq!(alert["company_id"], "8008", "{alert}");
    assert_eq!(alert["source"], "boa-exchange", "{alert}");
    assert!(
        alert["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{alert}"
    );

    // Same condition again: another failed sync, and the hourly health check.
    let a = d
        .control("sync", json!({"realm": "8008", "date": FRI}))
        .await;
    assert_eq!(a["ok"], false, "{a}");
    clock.advance(chrono::Duration::minutes(70));
    settle(&d).await;
    let got = h.bodies.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "the same alert was sent again: {got:?}");
    d.stop().await;
}

/// (8b) A webhook that accepts connections and never answers: failing syncs (which raise
/// alerts) and healthy ones answer promptly, and the daemon still stops promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_webhook_never_blocks_a_sync() {
    let f = fakes(friday_page()).await;
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/alerts", black_hole.local_addr().expect("addr"));
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = black_hole.accept().await {
            conns.push(s);
        }
    });
    let extra = format!("[alerts]\nwebhook_url = \"{url}\"\n");
    let clock = ManualClock::new(tirane(FRI, 14, 0, 0));
    let d = InProcDaemon::start(&config(&f, false, &extra), clock.clone()).await;
    let a = d.control("fetch", json!({})).await;
    assert_eq!(a["ok"], true, "{a}");
    for realm in ["8101", "8102", "8103"] {
        add_and_connect(&d, &f.intuit, realm).await;
    }
    f.intuit.revoke_grant("8101");
    f.intuit.revoke_grant("8102");

    // Two companies fail: a token alert each, plus "sync failures for several companies".
    let t = Instant::now();
    let a = d.control("sync_all", json!({"date": FRI})).await;
    assert_eq!(a["ok"], true, "{a}");
    assert_eq!(a["data"]["failed"], 2, "{a}");
    assert_eq!(a["data"]["successful"], 1, "{a}");
    let a = d
        .control("sync", json!({"realm": "8101", "date": FRI}))
        .await;
    assert_eq!(a["error"]["code"], "reconnect_needed", "{a}");
    let a = d
        .control("sync", json!({"realm": "8103", "date": FRI}))
        .await;
    assert_eq!(a["ok"], true, "{a}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "syncs waited for the webhook: {:?}",
        t.elapsed()
    );

    // The alerts still hang at the webhook; stopping must not wait for them.
    let t = Instant::now();
    d.stop().await;
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "stopping waited {:?} for the webhook",
        t.elapsed()
    );
    held.abort();
}

/// A fixing BoA revises after it was synced is re-synced to every company that got the old
/// figure (a superseded rate must not stay in a ledger).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revised_fixing_is_resynced() {
    let f = fakes(friday_page()).await;
    let clock = ManualClock::new(tirane(FRI, 14, 0, 0));
    let d = InProcDaemon::start(&config(&f, true, ""), clock.clone()).await;
    add_and_connect(&d, &f.intuit, "5001").await;
    wait_eur(&f.intuit, "5001", FRI, "95.40").await;

    // BoA republishes Friday with EUR 95.45; an admin fetch stores it as revision 2.
    f.boa.set_page(page(FRI, "95.45"));
    let r = d.control("fetch", json!({})).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["data"]["tables"][0]["outcome"], "revised", "{r}");
    wait_eur(&f.intuit, "5001", FRI, "95.45").await;
    let usd = f
        .intuit
        .exchange_rate("5001", "USD", day(FRI))
        .expect("USD");
    assert_eq!(
        usd.rate,
        dec("82.24"),
        "unchanged currencies keep their value"
    );
    d.stop().await;
}

/// A fixing that appears after its day was filled as a holiday replaces the filled rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_fixing_replaces_a_holiday_fill() {
    let f = fakes(thursday_page()).await;
    let clock = ManualClock::new(tirane(FRI, 12, 59, 50));
    let d = InProcDaemon::start(&config(&f, true, ""), clock.clone()).await;
    wait_next_run(&d, "2026-05-22T11:00:00Z").await;
    add_and_connect(&d, &f.intuit, "5101").await;
    wait_eur(&f.intuit, "5101", THU, "95.30").await;
    clock.set(tirane(FRI, 13, 0, 1));
    wait_scrape(&d).await;
    clock.set(tirane(FRI, 18, 0, 1));
    wait_last_run(&d, FRI).await;
    wait_eur(&f.intuit, "5101", FRI, "95.30").await;

    // Friday's fixing turns up late (Saturday morning): Friday is re-synced with it.
    clock.set(tirane(SAT, 9, 0, 0));
    f.boa.set_page(friday_page());
    let r = d.control("fetch", json!({})).await;
    assert_eq!(r["ok"], true, "{r}");
    wait_eur(&f.intuit, "5101", FRI, "95.40").await;
    let r = d.control("rates", json!({"date": FRI})).await;
    assert_eq!(
        r["data"]["tables"][0]["date"], FRI,
        "no longer a holiday: {r}"
    );
    d.stop().await;
}

/// (issue 24) With the schedule on, `status` shows the next run while the first BoA fetch
/// at start (the catch-up's) is still in flight: the loop has not planned a run yet
/// (`clock_seen` is null), and the next run is still computed from the config and the clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_run_is_shown_while_the_first_fetch_is_still_retrying() {
    let f = fakes(thursday_page()).await;
    // The first fetch hangs (well past the test) instead of answering.
    f.boa.set_mode(Mode::Slow(Duration::from_secs(600)));
    let clock = ManualClock::new(tirane(FRI, 12, 59, 50));
    let toml = config(&f, true, "").replace("timeout_secs = 5", "timeout_secs = 600");
    let d = InProcDaemon::start(&toml, clock.clone()).await;
    wait_for("the first BoA fetch to start", 15, || f.boa.requests() > 0).await;
    let s = status(&d).await;
    assert_eq!(
        s["schedule"]["clock_seen"],
        Value::Null,
        "the loop already runs: {}",
        s["schedule"]
    );
    assert_eq!(
        s["schedule"]["next_run"], "2026-05-22T11:00:00Z",
        "{}",
        s["schedule"]
    );
    // The CLI's readable form says it in Tirana time, ten seconds away.
    let out = boa_exchange::cli::status::render(&s, false);
    assert!(
        out.contains("Next run:    Fri 22 May 13:00 Europe/Tirane (in 10 s)"),
        "{out}"
    );
    d.stop().await;
}
