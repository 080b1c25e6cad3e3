//! Drift and backfill end to end (issue 12, SPEC §5 "Drift" and "Backfill"): the real daemon,
//! the fake BoA (the 2026-05-22 page: main table 2026-05-22, minor table 2026-05-15) and the
//! fake Intuit. Each test asserts on the answer and on what the daemon *sent* (rows, read and
//! write counts, the query text).

use std::str::FromStr;

use crate::support::backend::Backend;
use crate::support::eventually::eventually_async;
use crate::support::fake_intuit::CompanySpec;
use crate::support::world::{Answer, World};
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde_json::{json, Value};

const FRIDAY: &str = "2026-05-22";
const SATURDAY: &str = "2026-05-23";
const SUNDAY: &str = "2026-05-24";

fn d(s: &str) -> NaiveDate {
    NaiveDate::from_str(s).unwrap()
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn spec(realm: &str, active: &[&str]) -> CompanySpec {
    let mut s = CompanySpec::new(realm, format!("Company {realm}"));
    s.home_currency = "ALL".into();
    s.active_currencies = active.iter().map(|c| c.to_string()).collect();
    s
}

async fn world_with(companies: &[CompanySpec]) -> World {
    world_on(&Backend::Sled, companies).await
}

/// [`world_with`] on `backend`.
async fn world_on(backend: &Backend, companies: &[CompanySpec]) -> World {
    let w = World::start_on(backend, "").await;
    let f = w.fetch();
    assert_eq!(f["ok"], true, "{f}");
    for c in companies {
        let a = w.connect(c.clone()).await;
        assert_eq!(a.status, 200, "connect {}: {}", c.realm_id, a.text);
    }
    w
}

async fn sync(w: &World, realm: &str, date: &str) -> Value {
    let a = w
        .admin_post(&format!(
            "/api/v1/companies/{realm}/sync?target_date={date}"
        ))
        .await;
    assert_eq!(a.status, 200, "sync {date}: {}", a.text);
    a.json()
}

async fn backfill(w: &World, realm: &str, query: &str) -> Answer {
    w.admin_post(&format!("/api/v1/companies/{realm}/backfill?{query}"))
        .await
}

fn rate(w: &World, realm: &str, cur: &str, date: &str) -> Option<Decimal> {
    w.intuit.exchange_rate(realm, cur, d(date)).map(|r| r.rate)
}

fn drift_logs(w: &World, realm: &str) -> Vec<Value> {
    let v = w.control("logs", json!({"realm": realm, "limit": 100}));
    assert_eq!(v["ok"], true, "{v}");
    v["data"]["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "drift")
        .cloned()
        .collect()
}

async fn metric(w: &World, name: &str) -> f64 {
    let a = w.get("/metrics").await;
    assert_eq!(a.status, 200, "{}", a.text);
    a.text
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {}", a.text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_edited_in_quickbooks_is_put_back_by_the_next_sync_with_one_read() {
    a_rate_edited_in_quickbooks_is_put_back_by_the_next_sync_with_one_read_on(Backend::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_edited_in_quickbooks_is_put_back_by_the_next_sync_with_one_read_on_postgres() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    a_rate_edited_in_quickbooks_is_put_back_by_the_next_sync_with_one_read_on(backend).await;
}

async fn a_rate_edited_in_quickbooks_is_put_back_by_the_next_sync_with_one_read_on(
    backend: Backend,
) {
    let w = world_on(&backend, &[spec("1001", &["EUR", "USD"])]).await;
    sync(&w, "1001", FRIDAY).await;
    sync(&w, "1001", SATURDAY).await;
    // A user edits Friday's EUR and deletes nothing; Saturday's USD is edited too.
    w.intuit
        .set_exchange_rate("1001", "EUR", d(FRIDAY), dec("99.1"));
    w.intuit
        .set_exchange_rate("1001", "USD", d(SATURDAY), dec("80"));
    let (reads, writes) = (w.intuit.reads("1001"), w.intuit.writes("1001"));
    let v = sync(&w, "1001", SUNDAY).await;
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(
        (v["rates_synced"].as_u64(), v["rates_written"].as_u64()),
        (Some(2), Some(2)),
        "the counts are Sunday's: {v}"
    );
    assert_eq!(w.intuit.reads("1001") - reads, 1, "still one metered read");
    assert_eq!(
        w.intuit.writes("1001") - writes,
        4,
        "Sunday's two rates and the two corrections"
    );
    assert_eq!(rate(&w, "1001", "EUR", FRIDAY), Some(dec("95.40")));
    assert_eq!(rate(&w, "1001", "USD", SATURDAY), Some(dec("82.24")));
    let q = w.intuit.exchange_rate_queries("1001");
    let last = q.last().unwrap().to_ascii_lowercase();
    assert!(
        last.contains("asofdate >= '2026-05-18'")
            && last.contains("asofdate <= '2026-05-24'")
            && last.contains("maxresults 1000")
            && !last.contains("startposition"),
        "one query over D-6…D: {last}"
    );
    let drifts = drift_logs(&w, "1001");
    assert_eq!(drifts.len(), 2, "{drifts:?}");
    let eur = drifts.iter().find(|r| r["currency"] == "EUR").unwrap();
    assert_eq!(
        (&eur["date"], &eur["theirs"], &eur["ours"]),
        (&json!(FRIDAY), &json!("99.1"), &json!("95.4"))
    );
    assert_eq!(metric(&w, "boa_exchange_drifts_total").await, 2.0);

    // Nothing drifted since: the next sync finds nothing and writes nothing.
    let writes = w.intuit.writes("1001");
    let v = sync(&w, "1001", SUNDAY).await;
    assert_eq!(v["rates_written"], 0, "{v}");
    assert_eq!(w.intuit.writes("1001"), writes);
    assert_eq!(drift_logs(&w, "1001").len(), 2);

    // The same currency drifts again within 7 days: an alert.
    w.intuit
        .set_exchange_rate("1001", "EUR", d(SATURDAY), dec("1"));
    sync(&w, "1001", SUNDAY).await;
    assert_eq!(rate(&w, "1001", "EUR", SATURDAY), Some(dec("95.40")));
    assert_eq!(drift_logs(&w, "1001").len(), 3);
    let stderr = w.daemon.stderr();
    assert!(
        stderr.contains("ALERT Company 1001: EUR drifted again"),
        "repeat drift alerts: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_leaves_a_drift_in_place_and_logs_it_once() {
    report_leaves_a_drift_in_place_and_logs_it_once_on(Backend::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_leaves_a_drift_in_place_and_logs_it_once_on_postgres() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    report_leaves_a_drift_in_place_and_logs_it_once_on(backend).await;
}

async fn report_leaves_a_drift_in_place_and_logs_it_once_on(backend: Backend) {
    let w = world_on(&backend, &[spec("1001", &["EUR", "USD"])]).await;
    let a = w
        .admin_put("/api/v1/companies/1001/settings", r#"{"drift": "report"}"#)
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json()["company"]["drift"], "report");
    let bad = w
        .admin_put("/api/v1/companies/1001/settings", r#"{"drift": "fix"}"#)
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    sync(&w, "1001", FRIDAY).await;
    w.intuit
        .set_exchange_rate("1001", "EUR", d(FRIDAY), dec("99.1"));
    let (reads, writes) = (w.intuit.reads("1001"), w.intuit.writes("1001"));
    let v = sync(&w, "1001", SATURDAY).await;
    assert_eq!(v["rates_written"], 2, "Saturday's rates are written: {v}");
    assert_eq!(w.intuit.reads("1001") - reads, 1);
    assert_eq!(w.intuit.writes("1001") - writes, 2, "no correction");
    assert_eq!(rate(&w, "1001", "EUR", FRIDAY), Some(dec("99.1")));
    // A repeat sync of Friday itself leaves it too.
    sync(&w, "1001", FRIDAY).await;
    assert_eq!(rate(&w, "1001", "EUR", FRIDAY), Some(dec("99.1")));
    let drifts = drift_logs(&w, "1001");
    assert_eq!(
        drifts.len(),
        1,
        "seen three times, recorded once: {drifts:?}"
    );
    assert_eq!(drifts[0]["theirs"], "99.1");
    assert_eq!(drifts[0]["ours"], "95.4");
    assert_eq!(drifts[0]["date"], FRIDAY);
    // The CLI sets it back.
    let (code, _, err) =
        tokio::task::block_in_place(|| w.daemon.cli(&["set", "1001", "--drift", "correct"]));
    assert_eq!(code, 0, "{err}");
    sync(&w, "1001", SATURDAY).await;
    assert_eq!(rate(&w, "1001", "EUR", FRIDAY), Some(dec("95.40")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_query_falls_back_to_single_gets_and_still_syncs() {
    let w = world_with(&[spec("1001", &["EUR", "USD", "GBP"])]).await;
    sync(&w, "1001", FRIDAY).await;
    w.intuit
        .set_exchange_rate("1001", "EUR", d(FRIDAY), dec("99.1"));
    w.intuit.set_exchange_rate_query_fault(true);
    let (reads, writes) = (w.intuit.reads("1001"), w.intuit.writes("1001"));
    let v = sync(&w, "1001", SATURDAY).await;
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(v["rates_synced"], 3);
    assert_eq!(
        w.intuit.reads("1001") - reads,
        4,
        "the refused query and one GET per currency"
    );
    assert_eq!(w.intuit.writes("1001") - writes, 3, "no drift check");
    assert!(rate(&w, "1001", "GBP", SATURDAY).is_some());
    assert_eq!(rate(&w, "1001", "EUR", FRIDAY), Some(dec("99.1")));
    let gets = w
        .intuit
        .requests_for("1001")
        .into_iter()
        .filter(|r| r.method == "GET" && r.path().ends_with("/exchangerate"))
        .count();
    assert_eq!(gets, 3);
    assert_eq!(
        metric(&w, "boa_exchange_rate_read_fallbacks_total").await,
        1.0
    );
    // A repeat with the fallback writes nothing.
    let writes = w.intuit.writes("1001");
    assert_eq!(sync(&w, "1001", SATURDAY).await["rates_written"], 0);
    assert_eq!(w.intuit.writes("1001"), writes);
    assert!(drift_logs(&w, "1001").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_writes_fridays_rates_over_the_weekend_once() {
    let w = world_with(&[spec("1001", &["EUR", "USD", "JPY", "HUF"])]).await;
    let q = format!("from=2026-05-20&to={SUNDAY}");

    // Dry run: the reads and the plan, nothing written.
    let (reads, writes) = (w.intuit.reads("1001"), w.intuit.writes("1001"));
    let a = backfill(&w, "1001", &format!("{q}&dry_run=true")).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let v = a.json();
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["dates"], 5);
    assert_eq!(v["plan"].as_array().unwrap().len(), 12, "{v}");
    assert!(v["plan"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["action"] == "write" && p["quickbooks"].is_null()));
    assert_eq!(w.intuit.reads("1001") - reads, 1);
    assert_eq!(w.intuit.writes("1001"), writes, "a dry run writes nothing");

    let a = backfill(&w, "1001", &q).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let v = a.json();
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(
        (
            &v["company_id"],
            &v["from"],
            &v["to"],
            &v["dry_run"],
            &v["dates"]
        ),
        (
            &json!("1001"),
            &json!("2026-05-20"),
            &json!(SUNDAY),
            &json!(false),
            &json!(5)
        )
    );
    assert_eq!(v["rates_written"], 12);
    assert_eq!(v["rates_unchanged"], 0);
    let skipped: Vec<&str> = v["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["date"].as_str().unwrap())
        .collect();
    assert_eq!(
        skipped,
        vec!["2026-05-20", "2026-05-21"],
        "before the oldest fixing"
    );
    assert!(v["skipped"][0]["reason"].as_str().unwrap().contains(FRIDAY));
    let eur_sat = v["plan"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["date"] == SATURDAY && p["currency"] == "EUR")
        .unwrap();
    assert_eq!(eur_sat["ours"], "95.4");
    assert_eq!(eur_sat["action"], "write");
    for day in [FRIDAY, SATURDAY, SUNDAY] {
        assert_eq!(rate(&w, "1001", "EUR", day), Some(dec("95.40")), "{day}");
        assert_eq!(rate(&w, "1001", "JPY", day), Some(dec("0.5168")), "{day}");
        assert_eq!(rate(&w, "1001", "HUF", day), Some(dec("0.2647")), "{day}");
    }
    let st = w
        .admin_get("/api/v1/companies/1001/sync/status")
        .await
        .json();
    assert_eq!(st["exchange_rates"]["synced"], 12, "{st}");

    // A repeat writes nothing.
    let writes = w.intuit.writes("1001");
    let v = backfill(&w, "1001", &q).await.json();
    assert_eq!(
        (v["rates_written"].as_u64(), v["rates_unchanged"].as_u64()),
        (Some(0), Some(12))
    );
    assert!(v["plan"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["action"] == "keep"));
    assert_eq!(w.intuit.writes("1001"), writes);

    // A user edit shows in the plan as QuickBooks → ours, and only it is written.
    w.intuit
        .set_exchange_rate("1001", "USD", d(SUNDAY), dec("81"));
    let v = backfill(&w, "1001", &q).await.json();
    assert_eq!(v["rates_written"], 1);
    let usd = v["plan"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["action"] == "write")
        .unwrap()
        .clone();
    assert_eq!(
        usd,
        json!({"date": SUNDAY, "currency": "USD", "quickbooks": "81", "ours": "82.24", "action": "write"})
    );

    // Without the fill policy, the weekend is skipped with the reason.
    let a = w
        .admin_put(
            "/api/v1/companies/1001/settings",
            r#"{"fill_non_business_days": false}"#,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let v = backfill(&w, "1001", &format!("from={FRIDAY}&to={SUNDAY}&dry_run=1"))
        .await
        .json();
    assert_eq!(v["skipped"][0]["date"], SATURDAY);
    assert!(v["skipped"][1]["reason"]
        .as_str()
        .unwrap()
        .starts_with("weekend"));
    assert_eq!(v["plan"].as_array().unwrap().len(), 4);

    // The CLI: a table and a summary line; --json prints the answer unchanged.
    let (code, out, err) = tokio::task::block_in_place(|| {
        w.daemon.cli(&[
            "backfill",
            "1001",
            "--from",
            FRIDAY,
            "--to",
            SUNDAY,
            "--dry-run",
        ])
    });
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("QUICKBOOKS → OURS"), "{out}");
    assert!(out.contains("95.4 → 95.4"), "{out}");
    assert!(out.contains("dry run, 0 would be written"), "{out}");
    let (code, out, _) = tokio::task::block_in_place(|| {
        w.daemon.cli(&[
            "--json", "backfill", "1001", "--from", FRIDAY, "--to", SUNDAY,
        ])
    });
    assert_eq!(code, 0);
    let j: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(j["dates"], 3);
    let (code, _, err) = tokio::task::block_in_place(|| {
        w.daemon
            .cli(&["backfill", "1001", "--from", SUNDAY, "--to", FRIDAY])
    });
    assert_eq!(code, 2, "a reversed range is bad input: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_backfill_requests_are_refused() {
    let w = world_with(&[spec("1001", &["EUR"])]).await;
    let writes = w.intuit.writes("1001");
    let reads = w.intuit.reads("1001");
    for q in [
        format!("from={SUNDAY}&to={FRIDAY}"),
        "from=2026-5-22&to=2026-05-24".to_string(),
        "from=2026-05-22&to=tomorrow".to_string(),
        "to=2026-05-24".to_string(),
        "from=2025-05-23&to=2026-05-24".to_string(),
        "from=2026-05-22&to=2099-01-01".to_string(),
        format!("from={FRIDAY}&to={SUNDAY}&dry_run=maybe"),
    ] {
        let a = backfill(&w, "1001", &q).await;
        assert_eq!(a.status, 400, "{q}: {}", a.text);
        assert_eq!(a.json()["success"], false);
    }
    let ok = backfill(&w, "1001", "from=2025-05-24&to=2026-05-24&dry_run=true").await;
    assert_eq!(ok.status, 200, "366 dates are allowed: {}", ok.text);
    assert_eq!(ok.json()["dates"], 366);
    assert_eq!(
        w.intuit.reads("1001") - reads,
        1,
        "only the last window has dates to read"
    );
    let a = backfill(&w, "9999", &format!("from={FRIDAY}&to={SUNDAY}")).await;
    assert_eq!(a.status, 404, "{}", a.text);
    let a = w
        .http
        .post(w.url("/api/v1/companies/1001/backfill?from=2026-05-22&to=2026-05-24"))
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), 401, "admin only");
    assert_eq!(w.intuit.writes("1001"), writes);

    // A sync of the company running: 409.
    w.intuit
        .set_realm_latency("1001", std::time::Duration::from_millis(600));
    let before = w.intuit.reads("1001");
    let (s, b) = tokio::join!(sync(&w, "1001", FRIDAY), async {
        eventually_async(
            std::time::Duration::from_secs(10),
            "the sync's first read at the fake",
            async || w.intuit.reads("1001") != before,
        )
        .await;
        backfill(&w, "1001", &format!("from={FRIDAY}&to={SUNDAY}")).await
    });
    assert_eq!(s["success"], true);
    assert_eq!(b.status, 409, "{}", b.text);
    assert_eq!(b.json()["error"]["code"], "sync_in_progress");
}
