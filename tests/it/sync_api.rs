//! The sync endpoints end to end (issue 5): the real daemon binary, the fake BoA (the real
//! 2026-05-22 page: main table 2026-05-22, minor table 2026-05-15) and the fake Intuit.
//!
//! Every test asserts on what the daemon *answered* and on what it *sent* to QuickBooks (the
//! fake's rows, counters and recorded requests), so each one fails when the daemon drifts
//! from SPEC §5–§6.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::support::eventually::eventually_async;
use crate::support::fake_intuit::{CompanySpec, RecordedRequest};
use crate::support::world::{Answer, World};
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde_json::{json, Value};

const FRIDAY: &str = "2026-05-22";

fn d(s: &str) -> NaiveDate {
    NaiveDate::from_str(s).unwrap()
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn spec(realm: &str, name: &str, home: &str, active: &[&str]) -> CompanySpec {
    let mut s = CompanySpec::new(realm, name);
    s.home_currency = home.into();
    s.active_currencies = active.iter().map(|c| c.to_string()).collect();
    s
}

/// A world with the fixing fetched and the given companies connected through OAuth.
async fn world_with(companies: &[CompanySpec]) -> World {
    world_with_config("", companies).await
}

/// One company's writes one at a time, so "the first write" of a sync is one currency's
/// (the retry tests follow one write's requestid through its failures).
const ONE_WRITE_AT_A_TIME: &str = "[quickbooks]\nwrites_in_flight_per_company = 1\n";

async fn world_with_config(extra: &str, companies: &[CompanySpec]) -> World {
    let w = World::start(extra).await;
    let f = w.fetch();
    assert_eq!(f["ok"], true, "{f}");
    for c in companies {
        let a = w.connect(c.clone()).await;
        assert_eq!(a.status, 200, "connect {}: {}", c.realm_id, a.text);
    }
    w
}

async fn sync(w: &World, realm: &str, date: &str) -> Answer {
    w.admin_post(&format!(
        "/api/v1/companies/{realm}/sync?target_date={date}"
    ))
    .await
}

async fn sync_all(w: &World, date: &str) -> Answer {
    w.admin_post(&format!("/api/v1/companies/sync-all?target_date={date}"))
        .await
}

async fn status(w: &World, realm: &str) -> Value {
    let a = w
        .admin_get(&format!("/api/v1/companies/{realm}/sync/status"))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    a.json()
}

fn rate(w: &World, realm: &str, cur: &str, date: &str) -> Option<Decimal> {
    w.intuit.exchange_rate(realm, cur, d(date)).map(|r| r.rate)
}

/// The error code of a SPEC §6 error answer (and checks its shape).
fn error_code(a: &Answer) -> String {
    let v = a.json();
    assert_eq!(v["success"], false, "{}", a.text);
    assert!(v["error"]["message"].as_str().is_some(), "{}", a.text);
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

/// The exchange-rate POSTs the fake received for a realm.
fn rate_posts(w: &World, realm: &str) -> Vec<RecordedRequest> {
    w.intuit
        .requests_for(realm)
        .into_iter()
        .filter(|r| r.method == "POST" && r.path().ends_with("/exchangerate"))
        .collect()
}

fn body_json(r: &RecordedRequest) -> Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("POST body not JSON ({e}): {}", r.body))
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    eventually_async(Duration::from_secs(30), what, async || cond()).await;
}

/// Runs a single sync of `realm` for `date` and, while its first exchange-rate write is
/// in flight at the fake (held there by a per-realm latency), queues `n` failures with
/// `status` for that realm, so exactly the first write (and its retries) fail.
async fn sync_failing_first_write(
    w: &World,
    realm: &str,
    date: &str,
    n: usize,
    status: u16,
) -> Answer {
    w.intuit
        .set_realm_latency(realm, Duration::from_millis(400));
    let writes = w.intuit.writes(realm);
    let (answer, ()) = tokio::join!(sync(w, realm, date), async {
        wait_until("the first write", || w.intuit.writes(realm) > writes).await;
        w.intuit.fail_next_api_calls_for(realm, n, status);
    });
    w.intuit.set_realm_latency(realm, Duration::ZERO);
    answer
}

/// Every POST with the same `requestid` carried the same body; returns requestid → statuses.
fn requestids(posts: &[RecordedRequest]) -> BTreeMap<String, Vec<u16>> {
    let mut bodies: BTreeMap<String, String> = BTreeMap::new();
    let mut out: BTreeMap<String, Vec<u16>> = BTreeMap::new();
    for p in posts {
        let id = p
            .query_param("requestid")
            .expect("every write carries a requestid");
        assert!(!id.is_empty() && id.len() <= 50, "requestid {id:?}");
        let prev = bodies.entry(id.clone()).or_insert_with(|| p.body.clone());
        assert_eq!(*prev, p.body, "requestid {id} reused with another body");
        out.entry(id).or_default().push(p.status.unwrap_or(0));
    }
    out
}

// ------------------------------------------------------------------------ what is written

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minor_currencies_come_from_the_minor_table_dated_the_sync_date() {
    let w = world_with(&[
        spec(
            "1001",
            "Lek Co",
            "ALL",
            &["HUF", "RUB", "CZK", "MKD", "EUR"],
        ),
        spec("2002", "Euro Co", "EUR", &["ALL", "HUF", "CZK"]),
    ])
    .await;
    let a = sync(&w, "1001", FRIDAY).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json()["rates_synced"], 5);
    // Minor table of 2026-05-15: HUF 26.47/100, RUB 111.96/100, CZK 3.92, MKD 1.55.
    assert_eq!(rate(&w, "1001", "HUF", FRIDAY), Some(dec("0.2647")));
    assert_eq!(rate(&w, "1001", "RUB", FRIDAY), Some(dec("1.1196")));
    assert_eq!(rate(&w, "1001", "CZK", FRIDAY), Some(dec("3.92")));
    assert_eq!(rate(&w, "1001", "MKD", FRIDAY), Some(dec("1.55")));
    assert_eq!(rate(&w, "1001", "EUR", FRIDAY), Some(dec("95.40")));
    // Written for the sync date, never for the minor fixing's own date.
    for r in w.intuit.exchange_rates("1001") {
        assert_eq!(r.date, d(FRIDAY), "{r:?}");
        assert_eq!(r.target, "ALL", "{r:?}");
    }
    assert_eq!(w.intuit.exchange_rates("1001").len(), 5);
    for p in rate_posts(&w, "1001") {
        let b = body_json(&p);
        assert_eq!(b["AsOfDate"], FRIDAY, "{}", p.body);
        assert!(b["Rate"].is_number(), "Rate is a JSON number: {}", p.body);
        assert!(
            b["SyncToken"].is_string(),
            "SyncToken is a string: {}",
            p.body
        );
    }

    // EUR home: minor currencies crossed through EUR.
    let a = sync(&w, "2002", FRIDAY).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(rate(&w, "2002", "HUF", FRIDAY), Some(dec("0.002775"))); // 0.2647/95.40
    assert_eq!(rate(&w, "2002", "CZK", FRIDAY), Some(dec("0.041090"))); // 3.92/95.40 = 0.0410901…
    assert_eq!(rate(&w, "2002", "ALL", FRIDAY), Some(dec("0.010482")));
    assert!(w
        .intuit
        .exchange_rate("2002", "HUF", d("2026-05-15"))
        .is_none());

    // The store's rows carry the source fixing: status counts them per date.
    let s = status(&w, "1001").await;
    assert_eq!(
        s["exchange_rates"],
        json!({"total": 5, "synced": 5, "pending": 0})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weekend_dates_get_fridays_fixing_with_their_own_as_of_date() {
    let w = world_with(&[spec("1001", "Lek Co", "ALL", &["EUR", "USD", "JPY", "HUF"])]).await;
    for day in ["2026-05-23", "2026-05-24"] {
        let a = sync(&w, "1001", day).await;
        assert_eq!(a.status, 200, "{day}: {}", a.text);
        let v = a.json();
        assert_eq!(v["date"], day);
        assert_eq!(v["rates_synced"], 4);
        assert_eq!(rate(&w, "1001", "EUR", day), Some(dec("95.40")));
        assert_eq!(rate(&w, "1001", "USD", day), Some(dec("82.24")));
        assert_eq!(rate(&w, "1001", "JPY", day), Some(dec("0.5168")));
        assert_eq!(rate(&w, "1001", "HUF", day), Some(dec("0.2647")));
    }
    // Nothing was written for Friday itself.
    assert!(rate(&w, "1001", "EUR", FRIDAY).is_none());
    let dates: BTreeSet<NaiveDate> = w
        .intuit
        .exchange_rates("1001")
        .iter()
        .map(|r| r.date)
        .collect();
    assert_eq!(dates, BTreeSet::from([d("2026-05-23"), d("2026-05-24")]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_date_without_a_fixing_is_422_naming_the_nearest_and_touches_nothing() {
    let w = world_with(&[spec("1001", "Lek Co", "ALL", &["EUR", "USD"])]).await;
    let reads = w.intuit.reads("1001");
    // 2026-05-21: a business day before the oldest stored fixing; 2026-05-26: a business
    // day after it whose own fixing was never stored.
    for day in ["2026-05-21", "2026-05-26"] {
        let a = sync(&w, "1001", day).await;
        assert_eq!(a.status, 422, "{day}: {}", a.text);
        assert_eq!(error_code(&a), "no_fixing", "{}", a.text);
        assert!(
            a.text.contains(FRIDAY),
            "names the nearest fixing: {}",
            a.text
        );
        let a = sync_all(&w, day).await;
        assert_eq!(a.status, 200, "{day}: {}", a.text);
        let v = a.json();
        assert_eq!(v["failed"], 1, "{v}");
        assert_eq!(v["results"][0]["error"]["code"], "no_fixing", "{v}");
    }
    // Far in the future (after today in Europe/Tirane).
    let a = sync(&w, "1001", "2099-01-01").await;
    assert_eq!(a.status, 422, "{}", a.text);
    assert_eq!(error_code(&a), "no_fixing");
    assert!(a.text.contains("future"), "{}", a.text);
    assert!(a.text.contains(FRIDAY), "{}", a.text);

    assert_eq!(
        w.intuit.reads("1001"),
        reads,
        "no QuickBooks call without a fixing"
    );
    assert_eq!(w.intuit.writes("1001"), 0);
    // Each call was one failed scraping attempt and one failed syncing attempt.
    let s = status(&w, "1001").await;
    assert_eq!(
        s["scraping"],
        json!({"total_attempts": 5, "successful": 0, "failed": 5})
    );
    assert_eq!(
        s["syncing"],
        json!({"total_attempts": 5, "successful": 0, "failed": 5})
    );
    assert_eq!(s["exchange_rates"]["total"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_dates_are_400_and_not_recorded() {
    let w = world_with(&[spec("1001", "Lek Co", "ALL", &["EUR"])]).await;
    let calls = w.intuit.reads("1001") + w.intuit.writes("1001");
    for bad in [
        "2026-13-01",
        "22-05-2026",
        "2026-5-22",
        "tomorrow",
        "2026-05-22T00:00:00Z",
        "2026-02-30",
    ] {
        let q = urlencoding::encode(bad);
        for a in [sync(&w, "1001", &q).await, sync_all(&w, &q).await] {
            assert_eq!(a.status, 400, "{bad}: {}", a.text);
            assert_eq!(error_code(&a), "bad_date", "{}", a.text);
            assert!(a.text.contains("YYYY-MM-DD"), "{}", a.text);
        }
    }
    // Unknown company: 404 before anything else.
    let a = sync(&w, "999", FRIDAY).await;
    assert_eq!(a.status, 404, "{}", a.text);
    assert_eq!(error_code(&a), "company_not_found");
    let s = status(&w, "1001").await;
    assert_eq!(s["syncing"]["total_attempts"], 0, "{s}");
    assert_eq!(w.intuit.reads("1001") + w.intuit.writes("1001"), calls);
}

// ------------------------------------------------------------------ 401 / 429 / 5xx / 5010

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_and_failing_reads_are_ridden_out() {
    let w = world_with(&[spec("1001", "Lek Co", "ALL", &["EUR", "USD"])]).await;
    w.intuit.set_retry_after(Some(Duration::from_secs(1)));
    let mut expected_reads = w.intuit.reads("1001");
    for (status, n) in [(429, 1), (500, 1), (503, 2), (401, 1)] {
        // Reset the rows so every round has writes to make.
        for c in ["EUR", "USD"] {
            w.intuit.set_exchange_rate("1001", c, d(FRIDAY), dec("1"));
        }
        w.intuit.fail_next_api_calls_for("1001", n, status);
        let t0 = Instant::now();
        let a = sync(&w, "1001", FRIDAY).await;
        assert_eq!(a.status, 200, "after {n}× {status}: {}", a.text);
        let v = a.json();
        assert_eq!(v["success"], true);
        assert_eq!(v["rates_synced"], 2);
        assert_eq!(v["rates_written"], 2);
        assert_eq!(rate(&w, "1001", "EUR", FRIDAY), Some(dec("95.40")));
        assert_eq!(rate(&w, "1001", "USD", FRIDAY), Some(dec("82.24")));
        expected_reads += 1 + n as u64;
        assert_eq!(
            w.intuit.reads("1001"),
            expected_reads,
            "after {status}: one read plus one per retry"
        );
        if status == 429 {
            let waited = t0.elapsed();
            assert!(
                waited >= Duration::from_millis(950),
                "Retry-After honoured: {waited:?}"
            );
            assert!(
                waited < Duration::from_secs(30),
                "not Intuit's default 60 s: {waited:?}"
            );
        }
    }
    // Retries inside one call are not extra attempts.
    let s = status(&w, "1001").await;
    assert_eq!(
        s["syncing"],
        json!({"total_attempts": 4, "successful": 4, "failed": 0})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_write_reuses_its_requestid_and_succeeds() {
    let w = world_with_config(
        ONE_WRITE_AT_A_TIME,
        &[spec("1001", "Lek Co", "ALL", &["EUR", "USD", "GBP"])],
    )
    .await;
    w.intuit.set_retry_after(Some(Duration::from_secs(1)));
    let a = sync_failing_first_write(&w, "1001", FRIDAY, 1, 429).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json()["rates_written"], 3);
    assert_eq!(rate(&w, "1001", "EUR", FRIDAY), Some(dec("95.40")));
    assert_eq!(rate(&w, "1001", "USD", FRIDAY), Some(dec("82.24")));
    assert_eq!(rate(&w, "1001", "GBP", FRIDAY), Some(dec("110.38")));
    let posts = rate_posts(&w, "1001");
    assert_eq!(posts.len(), 4, "three writes plus one retry");
    let ids = requestids(&posts);
    assert_eq!(ids.len(), 3, "one requestid per currency: {ids:?}");
    assert_eq!(
        ids.values().filter(|s| **s == vec![429, 200]).count(),
        1,
        "{ids:?}"
    );

    // 500 then 503 on the first write of another date: bounded backoff, same requestid.
    let a = sync_failing_first_write(&w, "1001", "2026-05-23", 2, 503).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(rate(&w, "1001", "EUR", "2026-05-23"), Some(dec("95.40")));
    let posts: Vec<_> = rate_posts(&w, "1001")
        .into_iter()
        .filter(|p| body_json(p)["AsOfDate"] == "2026-05-23")
        .collect();
    let ids = requestids(&posts);
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert_eq!(
        ids.values().filter(|s| **s == vec![503, 503, 200]).count(),
        1,
        "{ids:?}"
    );

    assert!(
        w.intuit.requestid_conflicts().is_empty(),
        "{:?}",
        w.intuit.requestid_conflicts()
    );
    assert_eq!(
        w.intuit.exchange_rates("1001").len(),
        6,
        "nothing duplicated"
    );
    // Fresh rows were created with SyncToken "0": none was written twice.
    assert!(w
        .intuit
        .exchange_rates("1001")
        .iter()
        .all(|r| r.sync_token == "0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_throttling_gives_up_and_is_recorded() {
    let w = world_with(&[spec("1001", "Lek Co", "ALL", &["EUR"])]).await;
    w.intuit.set_retry_after(Some(Duration::from_secs(1)));
    // The first try and every bounded retry are throttled.
    w.intuit.fail_next_api_calls_for("1001", 4, 429);
    let reads = w.intuit.reads("1001");
    let t0 = Instant::now();
    let a = sync(&w, "1001", FRIDAY).await;
    let took = t0.elapsed();
    assert_eq!(a.status, 502, "{}", a.text);
    assert_eq!(error_code(&a), "throttled", "{}", a.text);
    assert!(took < Duration::from_secs(20), "bounded: {took:?}");
    assert_eq!(w.intuit.reads("1001") - reads, 4);
    assert_eq!(w.intuit.writes("1001"), 0);
    let s = status(&w, "1001").await;
    assert_eq!(
        s["syncing"],
        json!({"total_attempts": 1, "successful": 0, "failed": 1})
    );
    assert_eq!(s["scraping"]["successful"], 1, "the fixing was in force");
    // Nothing is left queued: the next sync succeeds at once.
    let a = sync(&w, "1001", FRIDAY).await;
    assert_eq!(a.status, 200, "{}", a.text);
}

/// SPEC §3 / issue 15: a sync-all where every company is throttled lowers the number of
/// companies in flight (seen in `status` and `/metrics`); the next run starts at the
/// configured level again, and every company is still synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_of_every_company_lowers_the_companies_in_flight() {
    let realms: Vec<String> = (0..8).map(|i| format!("20{i:02}")).collect();
    let specs: Vec<CompanySpec> = realms
        .iter()
        .map(|r| spec(r, &format!("Co {r}"), "ALL", &["EUR"]))
        .collect();
    let w = world_with_config("[quickbooks]\nmax_concurrent_companies = 4\n", &specs).await;
    let level = |w: &World| {
        let s = w.control("status", json!({}));
        s["data"]["sync_all"]["companies_in_flight"].clone()
    };
    assert_eq!(level(&w), 4, "starts at the configured level");
    w.intuit.set_retry_after(Some(Duration::from_secs(1)));
    for r in &realms {
        w.intuit.fail_next_api_calls_for(r, 1, 429);
    }
    let a = sync_all(&w, FRIDAY).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json()["failed"], 0, "{}", a.text);
    for r in &realms {
        assert_eq!(rate(&w, r, "EUR", FRIDAY), Some(dec("95.40")), "{r}");
    }
    let lowered = level(&w).as_u64().expect("a number");
    assert!(
        (1..4).contains(&lowered),
        "every company throttled: the level falls below 4 ({lowered})"
    );
    let metrics = w.get("/metrics").await.text;
    assert!(
        metrics
            .lines()
            .any(|l| l == format!("boa_exchange_sync_companies_in_flight_limit {lowered}")),
        "{metrics}"
    );
    // A clean run starts at the configured level and stays there.
    let a = sync_all(&w, FRIDAY).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(level(&w), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_edited_in_quickbooks_is_corrected_with_its_synctoken() {
    let w = world_with(&[spec("1001", "Lek Co", "ALL", &["EUR", "USD"])]).await;
    assert_eq!(sync(&w, "1001", FRIDAY).await.status, 200);
    // Someone edits EUR in QuickBooks: its SyncToken becomes "1".
    w.intuit
        .set_exchange_rate("1001", "EUR", d(FRIDAY), dec("99.99"));
    let before = rate_posts(&w, "1001").len();
    let a = sync(&w, "1001", FRIDAY).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let v = a.json();
    assert_eq!(
        (
            v["rates_synced"].as_u64(),
            v["rates_written"].as_u64(),
            v["rates_unchanged"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    let eur = w.intuit.exchange_rate("1001", "EUR", d(FRIDAY)).unwrap();
    assert_eq!(eur.rate, dec("95.40"));
    assert_eq!(eur.sync_token, "2");
    let posts = rate_posts(&w, "1001");
    assert_eq!(posts.len(), before + 1, "only EUR is rewritten");
    let last = posts.last().unwrap();
    assert_eq!(
        body_json(last)["SyncToken"],
        "1",
        "the SyncToken QuickBooks returned"
    );
    assert_eq!(body_json(last)["SourceCurrencyCode"], "EUR");
    assert_eq!(last.status, Some(200), "no 5010");

    // An edit that lands between the daemon's read and its write: 5010, re-read, retry with
    // the new SyncToken under a new requestid.
    w.intuit
        .set_exchange_rate("1001", "EUR", d(FRIDAY), dec("90"));
    w.intuit
        .set_exchange_rate("1001", "USD", d(FRIDAY), dec("80"));
    w.intuit
        .set_realm_latency("1001", Duration::from_millis(400));
    let writes = w.intuit.writes("1001");
    let (a, edited) = tokio::join!(sync(&w, "1001", FRIDAY), async {
        wait_until("the first write", || w.intuit.writes("1001") > writes).await;
        let inflight = rate_posts(&w, "1001").into_iter().last().unwrap();
        let cur = body_json(&inflight)["SourceCurrencyCode"]
            .as_str()
            .unwrap()
            .to_string();
        w.intuit
            .set_exchange_rate("1001", &cur, d(FRIDAY), dec("91"));
        cur
    });
    w.intuit.set_realm_latency("1001", Duration::ZERO);
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(rate(&w, "1001", "EUR", FRIDAY), Some(dec("95.40")));
    assert_eq!(rate(&w, "1001", "USD", FRIDAY), Some(dec("82.24")));
    let mine: Vec<_> = rate_posts(&w, "1001")
        .into_iter()
        .filter(|p| body_json(p)["SourceCurrencyCode"] == edited.as_str())
        .collect();
    let n = mine.len();
    assert!(n >= 2);
    assert_eq!(mine[n - 2].status, Some(400), "the stale write");
    assert_eq!(mine[n - 1].status, Some(200), "the retry");
    assert_ne!(
        mine[n - 2].query_param("requestid"),
        mine[n - 1].query_param("requestid"),
        "a new SyncToken is a new write"
    );
    assert!(w.intuit.requestid_conflicts().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multicurrency_off_is_a_clear_recorded_failure() {
    let mut off = spec("3003", "Single Currency Co", "ALL", &[]);
    off.multicurrency = false;
    let w = world_with(&[off, spec("1001", "Lek Co", "ALL", &["EUR", "USD"])]).await;
    let a = sync(&w, "3003", FRIDAY).await;
    assert_eq!(a.status, 422, "{}", a.text);
    assert_eq!(error_code(&a), "multicurrency_disabled");
    assert!(a.text.contains("multicurrency"), "{}", a.text);
    assert_eq!(w.intuit.writes("3003"), 0);
    let s = status(&w, "3003").await;
    assert_eq!(
        s["syncing"],
        json!({"total_attempts": 1, "successful": 0, "failed": 1})
    );

    // Switched off after the company was connected and synced (the cached preferences still
    // say on): the write is refused, the daemon re-reads and reports it, not "0 rates synced".
    assert_eq!(sync(&w, "1001", FRIDAY).await.status, 200);
    w.intuit.set_multicurrency("1001", false);
    let a = sync(&w, "1001", "2026-05-23").await;
    assert_eq!(a.status, 422, "{}", a.text);
    assert_eq!(error_code(&a), "multicurrency_disabled", "{}", a.text);
    let s = status(&w, "1001").await;
    assert_eq!(
        s["syncing"],
        json!({"total_attempts": 2, "successful": 1, "failed": 1})
    );
    let logs = w.control("logs", json!({"realm": "1001", "limit": 1}));
    let last = &logs["data"]["logs"][0];
    assert_eq!(last["kind"], "syncing");
    assert_eq!(last["success"], false);
    assert!(
        last["message"].as_str().unwrap().contains("multicurrency"),
        "{last}"
    );
}

// ------------------------------------------------------------------------------- sync-all

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_all_isolates_a_revoked_company_and_then_skips_it() {
    let w = world_with(&[
        spec("1001", "Lek Co", "ALL", &["EUR", "USD"]),
        spec("2002", "Revoked Co", "ALL", &["EUR", "USD"]),
        spec("3003", "Euro Co", "EUR", &["ALL", "USD"]),
    ])
    .await;
    w.intuit.revoke_grant("2002");
    let a = sync_all(&w, FRIDAY).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let v = a.json();
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(v["date"], FRIDAY);
    assert_eq!(
        (
            v["total_companies"].as_u64(),
            v["successful"].as_u64(),
            v["failed"].as_u64()
        ),
        (Some(3), Some(2), Some(1)),
        "{v}"
    );
    assert_eq!(v["message"], "Synced 2/3 companies successfully");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    let by: BTreeMap<&str, &Value> = results
        .iter()
        .map(|r| (r["company_id"].as_str().unwrap(), r))
        .collect();
    assert_eq!(by["1001"]["success"], true);
    assert_eq!(by["1001"]["rates_synced"], 2);
    assert_eq!(by["3003"]["success"], true);
    assert_eq!(by["3003"]["rates_synced"], 2);
    assert_eq!(by["2002"]["success"], false);
    assert_eq!(by["2002"]["company_name"], "Revoked Co");
    assert_eq!(by["2002"]["error"]["code"], "reconnect_needed", "{v}");
    assert_eq!(rate(&w, "3003", "USD", FRIDAY), Some(dec("0.862055")));
    assert!(w.intuit.exchange_rates("2002").is_empty());

    let st = w.admin_get("/api/v1/oauth/status/2002").await;
    assert_eq!(st.status, 200, "{}", st.text);
    let st = st.json();
    assert_eq!(st["status"], "reconnect_needed", "{st}");
    assert_eq!(st["reconnect_needed"], true);
    assert_eq!(
        w.admin_get("/api/v1/oauth/status/1001").await.json()["status"],
        "connected"
    );
    let h = w.get("/health").await.json();
    assert_eq!(h["companies_with_expired_tokens"], 1, "{h}");
    // Still listed, marked.
    let list = w.admin_get("/api/v1/companies/list").await.json();
    assert_eq!(list["count"], 3);
    let listed: Vec<&Value> = list["companies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["company_id"] == "2002")
        .collect();
    assert_eq!(listed[0]["connection"], "reconnect_needed");

    // The next run leaves it out, and never calls QuickBooks for it.
    let reads = w.intuit.reads("2002");
    let token_calls = w.intuit.token_calls();
    let v = sync_all(&w, "2026-05-23").await.json();
    assert_eq!(
        (
            v["total_companies"].as_u64(),
            v["successful"].as_u64(),
            v["failed"].as_u64()
        ),
        (Some(2), Some(2), Some(0)),
        "{v}"
    );
    assert!(v["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["company_id"] != "2002"));
    assert_eq!(w.intuit.reads("2002"), reads);
    assert_eq!(
        w.intuit.token_calls(),
        token_calls,
        "no refresh attempts for it"
    );
    // A single sync of it says why.
    let a = sync(&w, "2002", FRIDAY).await;
    assert_eq!(a.status, 409, "{}", a.text);
    assert_eq!(error_code(&a), "reconnect_needed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_disabled_is_409_and_left_out_of_sync_all() {
    let w = world_with(&[
        spec("1001", "Lek Co", "ALL", &["EUR"]),
        spec("2002", "Paused Co", "ALL", &["EUR"]),
    ])
    .await;
    let calls = w.intuit.reads("2002") + w.intuit.writes("2002");
    let a = w
        .admin_put(
            "/api/v1/companies/2002/settings",
            r#"{"sync_enabled": false}"#,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json()["company"]["sync_enabled"], false);
    let a = sync(&w, "2002", FRIDAY).await;
    assert_eq!(a.status, 409, "{}", a.text);
    assert_eq!(error_code(&a), "sync_disabled");
    let v = sync_all(&w, FRIDAY).await.json();
    assert_eq!(
        (v["total_companies"].as_u64(), v["successful"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    assert_eq!(v["results"][0]["company_id"], "1001");
    assert_eq!(w.intuit.reads("2002") + w.intuit.writes("2002"), calls);
    assert_eq!(status(&w, "2002").await["syncing"]["total_attempts"], 0);
    // Re-enabled: syncs again.
    let a = w
        .admin_put(
            "/api/v1/companies/2002/settings",
            r#"{"sync_enabled": true}"#,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let a = sync(&w, "2002", FRIDAY).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(rate(&w, "2002", "EUR", FRIDAY), Some(dec("95.40")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sync_all_joins_the_running_one_and_another_date_is_409() {
    let w = world_with(&[
        spec("1001", "A Co", "ALL", &["EUR", "USD"]),
        spec("2002", "B Co", "ALL", &["EUR", "USD"]),
        spec("3003", "C Co", "EUR", &["ALL", "USD"]),
    ])
    .await;
    let reads: Vec<u64> = ["1001", "2002", "3003"]
        .iter()
        .map(|r| w.intuit.reads(r))
        .collect();
    // Each call takes 200 ms: the run lasts ≥ 600 ms.
    w.intuit.set_latency(Duration::from_millis(200));
    // The other callers come while the first run is at the fake (it has read something).
    let running = || async {
        eventually_async(
            Duration::from_secs(10),
            "the first sync-all's first read at the fake",
            async || {
                ["1001", "2002", "3003"]
                    .iter()
                    .zip(&reads)
                    .any(|(r, n)| w.intuit.reads(r) > *n)
            },
        )
        .await
    };
    let (first, second, other) = tokio::join!(
        sync_all(&w, FRIDAY),
        async {
            running().await;
            sync_all(&w, FRIDAY).await
        },
        async {
            running().await;
            sync_all(&w, "2026-05-23").await
        },
    );
    w.intuit.set_latency(Duration::ZERO);
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(second.status, 200, "{}", second.text);
    assert_eq!(
        first.json(),
        second.json(),
        "the joined caller gets the same answer"
    );
    assert_eq!(first.json()["successful"], 3);
    assert_eq!(other.status, 409, "{}", other.text);
    assert_eq!(error_code(&other), "sync_in_progress");
    assert!(other.text.contains(FRIDAY), "{}", other.text);
    for (realm, before) in ["1001", "2002", "3003"].into_iter().zip(reads) {
        assert_eq!(
            w.intuit.reads(realm) - before,
            1,
            "{realm}: one run, one read"
        );
        assert_eq!(w.intuit.writes(realm), 2, "{realm}: each rate written once");
        assert_eq!(status(&w, realm).await["syncing"]["total_attempts"], 1);
    }
    // Once it finished, another date runs.
    let a = sync_all(&w, "2026-05-23").await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json()["successful"], 3);
}

// ------------------------------------------------------------------------------- settings

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_settings_change_nothing() {
    let w = world_with(&[
        spec("1001", "Lek Co", "ALL", &["EUR"]),
        spec("2002", "Other Co", "ALL", &["EUR"]),
    ])
    .await;
    let list = || async {
        w.admin_get("/api/v1/companies/list?active_only=false")
            .await
            .text
    };
    let before = list().await;
    let big = format!(r#"{{"company_name": "{}"}}"#, "a".repeat(70 * 1024));
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "unknown field",
            r#"{"colour": "red"}"#.into(),
            400,
            "unknown_field",
        ),
        (
            "unknown among valid",
            r#"{"company_name": "New", "colour": "red"}"#.into(),
            400,
            "unknown_field",
        ),
        (
            "bad currency",
            r#"{"home_currency": "XYZ"}"#.into(),
            400,
            "bad_currency",
        ),
        (
            "lower-case currency",
            r#"{"home_currency": "eur"}"#.into(),
            400,
            "bad_currency",
        ),
        (
            "four letters",
            r#"{"home_currency": "EURO"}"#.into(),
            400,
            "bad_currency",
        ),
        (
            "valid then bad",
            r#"{"sync_enabled": false, "home_currency": "XYZ"}"#.into(),
            400,
            "bad_currency",
        ),
        (
            "wrong type",
            r#"{"sync_enabled": "yes"}"#.into(),
            400,
            "bad_settings",
        ),
        (
            "empty name",
            r#"{"company_name": "   "}"#.into(),
            400,
            "bad_settings",
        ),
        ("empty object", "{}".into(), 400, "bad_settings"),
        ("array", "[1, 2]".into(), 400, "bad_settings"),
        ("string", r#""sync_enabled""#.into(), 400, "bad_settings"),
        (
            "bad JSON",
            r#"{"sync_enabled": tru"#.into(),
            400,
            "bad_json",
        ),
        ("empty body", String::new(), 400, "bad_json"),
        ("over 64 KiB", big, 413, "body_too_large"),
    ];
    for (what, body, want_status, want_code) in cases {
        let a = w.admin_put("/api/v1/companies/1001/settings", &body).await;
        assert_eq!(a.status, want_status, "{what}: {}", a.text);
        assert_eq!(error_code(&a), want_code, "{what}: {}", a.text);
        assert_eq!(list().await, before, "{what} changed something");
    }
    let a = w
        .admin_put(
            "/api/v1/companies/999/settings",
            r#"{"sync_enabled": false}"#,
        )
        .await;
    assert_eq!(a.status, 404, "{}", a.text);
    let a = w.admin_post("/api/v1/companies/1001/settings").await;
    assert_eq!(a.status, 405, "{}", a.text);
    let no_key = w
        .http
        .put(w.url("/api/v1/companies/1001/settings"))
        .body(r#"{"sync_enabled": false}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status().as_u16(), 401);
    assert_eq!(list().await, before);

    // A valid change applies to that company only, and survives a restart of the answer path.
    let a = w
        .admin_put(
            "/api/v1/companies/1001/settings",
            r#"{"company_name": "Lek Co Sh.p.k.", "fill_non_business_days": false}"#,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let v: Value = serde_json::from_str(&list().await).unwrap();
    let by: BTreeMap<&str, &Value> = v["companies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["company_id"].as_str().unwrap(), c))
        .collect();
    assert_eq!(by["1001"]["company_name"], "Lek Co Sh.p.k.");
    assert_eq!(by["1001"]["fill_non_business_days"], false);
    assert_eq!(by["2002"]["company_name"], "Other Co");
    assert_eq!(by["2002"]["fill_non_business_days"], true);
    assert_eq!(status(&w, "1001").await["company_name"], "Lek Co Sh.p.k.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settings_change_during_a_sync_is_not_lost() {
    let w = world_with(&[spec("1001", "Lek Co", "ALL", &["EUR", "USD"])]).await;
    w.intuit
        .set_realm_latency("1001", Duration::from_millis(300));
    let reads = w.intuit.reads("1001");
    let (a, put) = tokio::join!(sync(&w, "1001", FRIDAY), async {
        wait_until("the sync's read", || w.intuit.reads("1001") > reads).await;
        w.admin_put(
            "/api/v1/companies/1001/settings",
            r#"{"company_name": "Renamed During Sync", "fill_non_business_days": false}"#,
        )
        .await
    });
    w.intuit.set_realm_latency("1001", Duration::ZERO);
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(put.status, 200, "{}", put.text);
    let s = status(&w, "1001").await;
    assert_eq!(
        s["company_name"], "Renamed During Sync",
        "the sync overwrote the settings: {s}"
    );
    let list = w.admin_get("/api/v1/companies/list").await.json();
    assert_eq!(
        list["companies"][0]["fill_non_business_days"], false,
        "{list}"
    );
    assert!(
        s["last_sync_at"].is_string(),
        "and the sync's own result is kept: {s}"
    );
}

// ------------------------------------------------------------------------------ isolation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_companys_answers_never_contain_anothers_data() {
    // 10011 starts with 1001: a prefix scan without a terminator would mix them up.
    let w = world_with(&[
        spec("1001", "Alpha Lek", "ALL", &["USD", "GBP"]),
        spec("10011", "Beta Euro", "EUR", &["ALL", "CHF"]),
    ])
    .await;
    let a1 = sync(&w, "1001", FRIDAY).await;
    let b1 = sync(&w, "10011", FRIDAY).await;
    assert_eq!(
        (a1.status, b1.status),
        (200, 200),
        "{} {}",
        a1.text,
        b1.text
    );
    assert_eq!(sync(&w, "10011", "2026-05-23").await.status, 200);
    let all = sync_all(&w, "2026-05-24").await.json();
    assert_eq!(all["successful"], 2, "{all}");
    for r in all["results"].as_array().unwrap() {
        let want = if r["company_id"] == "1001" {
            "Alpha Lek"
        } else {
            "Beta Euro"
        };
        assert_eq!(r["company_name"], want, "{r}");
    }

    let foreign = |text: &str, realm: &str| {
        let (other_realm, other_name, other_cur) = if realm == "1001" {
            ("10011", "Beta", "CHF")
        } else {
            ("\"1001\"", "Alpha", "GBP")
        };
        assert!(
            !text.contains(other_realm),
            "{realm}'s answer names {other_realm}: {text}"
        );
        assert!(
            !text.contains(other_name),
            "{realm}'s answer names {other_name}: {text}"
        );
        assert!(
            !text.contains(other_cur),
            "{realm}'s answer has {other_cur}: {text}"
        );
    };
    foreign(&a1.text, "1001");
    foreign(&b1.text, "10011");

    let sa = status(&w, "1001").await;
    let sb = status(&w, "10011").await;
    foreign(&sa.to_string(), "1001");
    foreign(&sb.to_string(), "10011");
    assert_eq!(
        sa["exchange_rates"]["total"], 4,
        "2 currencies × 2 dates: {sa}"
    );
    assert_eq!(
        sb["exchange_rates"]["total"], 6,
        "2 currencies × 3 dates: {sb}"
    );
    assert_eq!(sa["syncing"]["total_attempts"], 2);
    assert_eq!(sb["syncing"]["total_attempts"], 3);

    let la = w.control("logs", json!({"realm": "1001", "limit": 100}));
    let lb = w.control("logs", json!({"realm": "10011", "limit": 100}));
    foreign(&la.to_string(), "1001");
    foreign(&lb.to_string(), "10011");
    assert_eq!(la["data"]["company_id"], "1001");
    // connection + 2 × (scraping, syncing) / connection + 3 × (scraping, syncing)
    assert_eq!(la["data"]["logs"].as_array().unwrap().len(), 5, "{la}");
    assert_eq!(lb["data"]["logs"].as_array().unwrap().len(), 7, "{lb}");

    // A realm that is a prefix of both is unknown, not a merge of them.
    for path in [
        "/api/v1/companies/100/sync/status",
        "/api/v1/oauth/status/100",
    ] {
        assert_eq!(w.admin_get(path).await.status, 404, "{path}");
    }
    assert_eq!(w.control("logs", json!({"realm": "100"}))["ok"], false);

    // What was written: each company its own currencies, in its own home currency, with its
    // own token.
    let cur = |realm| -> BTreeSet<(String, String)> {
        w.intuit
            .exchange_rates(realm)
            .into_iter()
            .map(|r| (r.source, r.target))
            .collect()
    };
    assert_eq!(
        cur("1001"),
        BTreeSet::from([("GBP".into(), "ALL".into()), ("USD".into(), "ALL".into())])
    );
    assert_eq!(
        cur("10011"),
        BTreeSet::from([("ALL".into(), "EUR".into()), ("CHF".into(), "EUR".into())])
    );
    let tokens = |realm| -> BTreeSet<String> {
        w.intuit
            .requests_for(realm)
            .iter()
            .filter_map(|r| r.header("authorization").map(str::to_string))
            .collect()
    };
    assert!(tokens("1001").is_disjoint(&tokens("10011")));
    assert!(
        w.intuit
            .requests_for("1001")
            .iter()
            .all(|r| r.status != Some(401)),
        "never another realm's token"
    );
}

// ------------------------------------------------------------------- list and disconnected

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_includes_a_disconnected_company_only_when_asked() {
    let w = world_with(&[
        spec("1001", "Lek Co", "ALL", &["EUR"]),
        spec("2002", "Gone Co", "ALL", &["EUR"]),
    ])
    .await;
    assert_eq!(sync(&w, "2002", FRIDAY).await.status, 200);
    let a = w.admin_get("/api/v1/oauth/disconnect/2002").await;
    assert_eq!(a.status, 200, "{}", a.text);
    let v = a.json();
    assert_eq!(v["is_active"], false, "{v}");

    let ids = |v: &Value| -> Vec<String> {
        v["companies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["company_id"].as_str().unwrap().to_string())
            .collect()
    };
    let active = w.admin_get("/api/v1/companies/list").await.json();
    assert_eq!(active["count"], 1);
    assert_eq!(ids(&active), vec!["1001"]);
    assert_eq!(
        w.admin_get("/api/v1/companies/list?active_only=true")
            .await
            .json(),
        active
    );
    let every = w
        .admin_get("/api/v1/companies/list?active_only=false")
        .await
        .json();
    assert_eq!(every["count"], 2, "{every}");
    assert_eq!(ids(&every), vec!["1001", "2002"]);
    let gone = &every["companies"][1];
    assert_eq!(gone["is_active"], false);
    assert_eq!(gone["connection"], "disconnected");
    assert_eq!(gone["company_name"], "Gone Co");
    assert!(gone["last_sync_at"].is_string(), "history kept: {gone}");
    assert_eq!(
        w.admin_get("/api/v1/companies/list?active_only=maybe")
            .await
            .status,
        400
    );

    // Every company answer still works for it; syncing it does not.
    let s = status(&w, "2002").await;
    assert_eq!(s["is_active"], false);
    assert_eq!(s["exchange_rates"]["total"], 1);
    let a = sync(&w, "2002", FRIDAY).await;
    assert_eq!(a.status, 409, "{}", a.text);
    let v = sync_all(&w, FRIDAY).await.json();
    assert_eq!(v["total_companies"], 1, "{v}");
}

// ------------------------------------------------------------------------------------ CLI

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_cli_drives_syncs_and_settings() {
    let w = world_with(&[
        spec("1001", "Lek Co", "ALL", &["EUR", "USD"]),
        spec("2002", "Euro Co", "EUR", &["ALL"]),
    ])
    .await;
    let cli = |args: &[&str]| tokio::task::block_in_place(|| w.daemon.cli(args));

    let (code, out, err) = cli(&["--json", "companies"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["count"], 2, "--json prints the HTTP answer: {v}");

    let (code, out, err) = cli(&["companies"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("COMPANY"), "{out}");
    assert!(
        out.contains("Lek Co") && out.contains("Euro Co") && out.contains("EUR"),
        "{out}"
    );

    let (code, out, err) = cli(&["sync", "1001", "--date", FRIDAY]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Synced 2 rates for Lek Co"), "{out}");
    assert_eq!(rate(&w, "1001", "EUR", FRIDAY), Some(dec("95.40")));

    let (code, out, err) = cli(&["sync", "--all", "--date", FRIDAY]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Synced 2/2 companies successfully"), "{out}");
    assert!(out.contains("1001") && out.contains("2002"), "{out}");
    assert_eq!(rate(&w, "2002", "ALL", FRIDAY), Some(dec("0.010482")));

    let (code, out, err) = cli(&["company", "1001"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Lek Co"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("syncing.total_attempts") && l.trim_end().ends_with('2')),
        "{out}"
    );

    let (code, out, err) = cli(&["logs", "1001", "--limit", "2"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "header and two records: {out}");
    assert!(
        lines[0].contains("KIND") && lines[0].contains("MESSAGE"),
        "{out}"
    );
    assert!(out.contains("syncing"), "{out}");

    let (code, out, err) = cli(&[
        "set",
        "1001",
        "--name",
        "Lek Co Renamed",
        "--sync-enabled",
        "false",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Lek Co Renamed"), "{out}");
    let (code, _, err) = cli(&["sync", "1001", "--date", FRIDAY]);
    assert_eq!(code, 1);
    assert!(err.contains("sync_disabled"), "{err}");

    // Failures: exit 1, a readable message on stderr; --json prints the error answer.
    // A bad value is the caller's mistake (`bad_input`): exit 2.
    let (code, out, err) = cli(&["set", "2002", "--home-currency", "XYZ"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        err.starts_with("error: ") && err.contains("home_currency"),
        "{err}"
    );
    let (code, _, err) = cli(&["sync", "2002", "--date", "2026-05-21"]);
    assert_eq!(code, 1);
    assert!(err.contains(FRIDAY) && err.contains("no_fixing"), "{err}");
    let (code, _, err) = cli(&["sync", "999"]);
    assert_eq!(code, 1);
    assert!(err.contains("company_not_found"), "{err}");
    let (code, out, _) = cli(&["--json", "sync", "999"]);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["success"], false);
    assert_eq!(v["error"]["code"], "company_not_found");
    // A malformed --date: the daemon classes it `bad_input`, exit 2 (SPEC §2, §7).
    let (code, _, err) = cli(&["sync", "2002", "--date", "2026-5-22"]);
    assert_eq!(code, 2);
    assert!(err.contains("bad_date"), "{err}");

    // Usage errors: exit 2, the daemon is not asked.
    assert_eq!(cli(&["set", "1001"]).0, 2);
    assert_eq!(cli(&["sync"]).0, 2);
    assert_eq!(cli(&["sync", "1001", "--all"]).0, 2);

    let (code, out, _) = cli(&["--json", "companies", "--all"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let names: BTreeSet<&str> = v["companies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["company_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, BTreeSet::from(["Lek Co Renamed", "Euro Co"]));
}

// ------------------------------------------------------------- currencies and concurrency

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_currency_deactivated_in_quickbooks_is_skipped_after_one_reread() {
    let w = world_with(&[spec("1001", "Lek Co", "ALL", &["EUR", "USD", "GBP"])]).await;
    w.intuit.set_currency_active("1001", "USD", false);
    let reads = w.intuit.reads("1001");
    let a = sync(&w, "1001", FRIDAY).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let v = a.json();
    assert_eq!(v["rates_synced"], 2, "{v}");
    assert_eq!(v["rates_written"], 2, "{v}");
    assert!(rate(&w, "1001", "USD", FRIDAY).is_none());
    assert_eq!(rate(&w, "1001", "GBP", FRIDAY), Some(dec("110.38")));
    // The rate query, then Preferences and CompanyCurrency once.
    assert_eq!(w.intuit.reads("1001") - reads, 3);
    // The re-read is cached: the next sync is one read and no write.
    let reads = w.intuit.reads("1001");
    let writes = w.intuit.writes("1001");
    let v = sync(&w, "1001", FRIDAY).await.json();
    assert_eq!(
        (v["rates_synced"].as_u64(), v["rates_written"].as_u64()),
        (Some(2), Some(0)),
        "{v}"
    );
    assert_eq!(w.intuit.reads("1001") - reads, 1);
    assert_eq!(w.intuit.writes("1001"), writes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_keeps_failing_is_reported_and_left_pending() {
    let w = world_with_config(
        ONE_WRITE_AT_A_TIME,
        &[spec("1001", "Lek Co", "ALL", &["EUR", "USD", "GBP"])],
    )
    .await;
    w.intuit.set_retry_after(Some(Duration::from_secs(1)));
    // The first write and its three retries are throttled; the other two go through.
    let a = sync_failing_first_write(&w, "1001", FRIDAY, 4, 429).await;
    assert_eq!(a.status, 502, "{}", a.text);
    assert_eq!(error_code(&a), "quickbooks_write_failed", "{}", a.text);
    assert!(a.text.contains("1 of 3"), "{}", a.text);
    let failed_cur = {
        let posts = rate_posts(&w, "1001");
        body_json(&posts[0])["SourceCurrencyCode"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        a.text.contains(&failed_cur),
        "names {failed_cur}: {}",
        a.text
    );
    assert_eq!(w.intuit.exchange_rates("1001").len(), 2);
    let s = status(&w, "1001").await;
    assert_eq!(
        s["exchange_rates"],
        json!({"total": 3, "synced": 2, "pending": 1}),
        "{s}"
    );
    assert_eq!(
        s["syncing"],
        json!({"total_attempts": 1, "successful": 0, "failed": 1})
    );
    assert!(s["last_sync_at"].is_null(), "not a successful sync: {s}");
    // The next sync writes only what is missing.
    let writes = w.intuit.writes("1001");
    let a = sync(&w, "1001", FRIDAY).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        (
            a.json()["rates_written"].as_u64(),
            a.json()["rates_synced"].as_u64()
        ),
        (Some(1), Some(3))
    );
    assert_eq!(w.intuit.writes("1001") - writes, 1);
    assert_eq!(status(&w, "1001").await["exchange_rates"]["pending"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_syncs_of_one_company_at_once_write_each_rate_once() {
    let w = world_with(&[spec("1001", "Lek Co", "ALL", &["EUR", "USD"])]).await;
    w.intuit
        .set_realm_latency("1001", Duration::from_millis(100));
    let (a, b) = tokio::join!(sync(&w, "1001", FRIDAY), sync(&w, "1001", FRIDAY));
    w.intuit.set_realm_latency("1001", Duration::ZERO);
    assert_eq!((a.status, b.status), (200, 200), "{} {}", a.text, b.text);
    assert_eq!(a.json()["rates_synced"], 2);
    assert_eq!(b.json()["rates_synced"], 2);
    let written: u64 = [a.json(), b.json()]
        .iter()
        .map(|v| v["rates_written"].as_u64().unwrap())
        .sum();
    assert_eq!(written, 2, "one of them wrote, the other found them equal");
    assert_eq!(w.intuit.writes("1001"), 2);
    // One sync at a time per company: its two writes may go out together, but the second
    // sync's calls never overlap the first's (that would be 3 or 4 in flight).
    assert!(
        w.intuit.peak_in_flight("1001") <= 2,
        "one sync at a time per company: peak {}",
        w.intuit.peak_in_flight("1001")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_companys_writes_go_out_together_bounded_and_once_each() {
    let ten = [
        "EUR", "USD", "GBP", "CHF", "JPY", "CAD", "AUD", "SEK", "NOK", "DKK",
    ];
    let w = world_with(&[spec("1001", "Lek Co", "ALL", &ten)]).await;
    w.intuit
        .set_realm_latency("1001", Duration::from_millis(100));
    let a = sync(&w, "1001", FRIDAY).await;
    w.intuit.set_realm_latency("1001", Duration::ZERO);
    assert_eq!(a.status, 200, "{}", a.text);
    let written = a.json()["rates_written"].as_u64().unwrap();
    assert_eq!(w.intuit.writes("1001"), written, "each rate written once");
    assert!(written >= 9, "{}", a.text);
    let peak = w.intuit.peak_in_flight("1001");
    assert!(
        (2..=4).contains(&peak),
        "writes_in_flight_per_company = 4 (default): peak {peak}"
    );
    let ids = requestids(&rate_posts(&w, "1001"));
    assert_eq!(ids.len() as u64, written, "one requestid per currency");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_during_a_sync_is_not_undone() {
    let w = world_with(&[spec("1001", "Lek Co", "ALL", &["EUR", "USD"])]).await;
    w.intuit
        .set_realm_latency("1001", Duration::from_millis(300));
    let writes = w.intuit.writes("1001");
    let (a, gone) = tokio::join!(sync(&w, "1001", FRIDAY), async {
        wait_until("the first write", || w.intuit.writes("1001") > writes).await;
        w.control("disconnect", json!({"realm": "1001"}))
    });
    w.intuit.set_realm_latency("1001", Duration::ZERO);
    assert_eq!(gone["ok"], true, "{gone}");
    assert_ne!(a.status, 200, "the grant was revoked under it: {}", a.text);
    let list = w.admin_get("/api/v1/companies/list").await.json();
    assert_eq!(list["count"], 0, "the sync re-activated it: {list}");
    let st = w.admin_get("/api/v1/oauth/status/1001").await.json();
    assert_eq!(st["status"], "disconnected", "{st}");
    assert_eq!(sync_all(&w, FRIDAY).await.json()["total_companies"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wide_sync_all_finishes_and_every_company_is_synced() {
    // Many companies finishing at once flush the store at once. sled's flush_async parked
    // every caller on sled's own small IO pool, starving the write they waited for: the
    // daemon hung for good (found by the sync-all benchmark).
    let w = World::start("[quickbooks]\nmax_concurrent_companies = 64\n").await;
    assert_eq!(w.fetch()["ok"], true);
    let n = 160;
    for i in 0..n {
        let a = w
            .connect(spec(
                &format!("{}", 7_000 + i),
                &format!("Co {i}"),
                "ALL",
                &["EUR", "USD"],
            ))
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
    }
    // As on a real daily run, every access token has expired: each sync also refreshes (and
    // stores) its token.
    for i in 0..n {
        w.intuit.expire_access_tokens(&format!("{}", 7_000 + i));
    }
    w.intuit.set_latency(Duration::from_millis(20));
    let a = tokio::time::timeout(Duration::from_secs(120), sync_all(&w, FRIDAY))
        .await
        .expect("the sync-all finished (the daemon did not hang)");
    w.intuit.set_latency(Duration::ZERO);
    assert_eq!(a.status, 200, "{}", a.text);
    let v = a.json();
    assert_eq!(
        (v["successful"].as_u64(), v["failed"].as_u64()),
        (Some(n), Some(0)),
        "{}",
        v["message"]
    );
    for i in [0, n / 2, n - 1] {
        assert_eq!(
            rate(&w, &format!("{}", 7_000 + i), "USD", FRIDAY),
            Some(dec("82.24"))
        );
    }
    // And it still answers.
    assert_eq!(w.control("status", json!({}))["ok"], true);
}

/// SPEC §9: one undecodable company record is skipped, logged, counted and alerted; every
/// other company syncs; the run counts it as failed; health says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_company_record_is_skipped_and_the_others_sync() {
    let mut w = world_with(&[
        spec("1001", "Lek Co", "ALL", &["EUR", "USD"]),
        spec("2002", "Euro Co", "EUR", &["USD"]),
    ])
    .await;
    w.daemon.signal(libc::SIGTERM);
    w.daemon.wait_exit(Duration::from_secs(20));
    {
        let db = sled::open(w.daemon.data_dir().join("db")).expect("open the stopped store");
        let companies = db.open_tree("companies").expect("tree");
        companies
            .insert("1500", &b"\xff\x00garbage, not a record"[..])
            .expect("insert");
        db.flush().expect("flush");
    }
    tokio::task::block_in_place(|| w.daemon.spawn_and_wait_ready());
    let a = sync_all(&w, FRIDAY).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let v = a.json();
    assert_eq!(v["successful"], 2, "{v}");
    assert_eq!(v["failed"], 1, "{v}");
    let bad: Vec<&Value> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["error"]["code"] == "bad_record")
        .collect();
    assert_eq!(bad.len(), 1, "{v}");
    assert_eq!(bad[0]["company_id"], "1500");
    assert_eq!(rate(&w, "1001", "USD", FRIDAY), Some(dec("82.24")));
    let st = w.control("status", json!({}));
    assert_eq!(
        st["data"]["bad_records"]["current"][0]["key"], "1500",
        "{st}"
    );
    let h = w.get("/health").await.json();
    assert!(
        h["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains("1500")),
        "{h}"
    );
    let list = w.admin_get("/api/v1/companies/list").await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(list.json()["count"], 2);
}

/// SPEC §6/§16.6: a client that goes away mid-sync cancels nothing: the token rotated on
/// the way and the attempt's records are stored, and the next sync uses the new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_mid_refresh_loses_nothing() {
    let w = world_with(&[spec("1001", "Lek Co", "ALL", &["EUR", "USD"])]).await;
    let logs_before = w.control("logs", json!({"realm": "1001", "limit": 100}))["data"]["logs"]
        .as_array()
        .unwrap()
        .len();
    // The stored access token is refused: the sync refreshes, and the refresh rotates.
    w.intuit.expire_access_tokens("1001");
    w.intuit.rotate_now("1001");
    w.intuit.set_latency(Duration::from_millis(400));
    let refreshes = w.intuit.refreshes("1001");
    let aborted = w
        .http
        .post(w.url(&format!("/api/v1/companies/1001/sync?target_date={FRIDAY}")))
        .bearer_auth(crate::support::world::ADMIN_KEY)
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(aborted.is_err(), "the client gave up before the answer");
    // The sync goes on without its client and records its attempt.
    eventually_async(
        Duration::from_secs(20),
        "the abandoned sync's attempt in 1001's logs",
        async || {
            let n = w.control("logs", json!({"realm": "1001", "limit": 100}))["data"]["logs"]
                .as_array()
                .unwrap()
                .len();
            n >= logs_before + 2
        },
    )
    .await;
    w.intuit.set_latency(Duration::ZERO);
    assert_eq!(w.intuit.refreshes("1001"), refreshes + 1);
    assert_eq!(rate(&w, "1001", "USD", FRIDAY), Some(dec("82.24")));
    // The old refresh token dies after Intuit's grace: only the stored rotation works now.
    w.intuit.advance(Duration::from_secs(2 * 24 * 3600));
    w.intuit.expire_access_tokens("1001");
    let a = sync(&w, "1001", "2026-05-23").await;
    assert_eq!(a.status, 200, "the rotated token was stored: {}", a.text);
}
