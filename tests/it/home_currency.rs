//! SPEC §5 "Home currency is QuickBooks'" (issue 21), end to end: the real daemon, the fake
//! BoA (the real 2026-05-22 page) and the fake Intuit. A home currency that QuickBooks does
//! not hold is refused (settings, `set`) or not applied (adopt, import), nothing is written
//! computed for it, and a company whose QuickBooks home changed is re-read and synced
//! exactly in the same call.

use std::str::FromStr;

use crate::migrate::cli_stdin;
use crate::support::fake_intuit::CompanySpec;
use crate::support::world::World;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde_json::{json, Value};

const FRIDAY: &str = "2026-05-22";
const SATURDAY: &str = "2026-05-23";

fn spec(realm: &str, name: &str, home: &str, active: &[&str]) -> CompanySpec {
    let mut s = CompanySpec::new(realm, name);
    s.home_currency = home.into();
    s.active_currencies = active.iter().map(|c| c.to_string()).collect();
    s
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn rate(w: &World, realm: &str, cur: &str, date: &str) -> Option<Decimal> {
    w.intuit
        .exchange_rate(realm, cur, NaiveDate::from_str(date).unwrap())
        .map(|r| r.rate)
}

async fn world_with(companies: &[CompanySpec]) -> World {
    let w = World::start("").await;
    let f = w.fetch();
    assert_eq!(f["ok"], true, "{f}");
    for c in companies {
        let a = w.connect(c.clone()).await;
        assert_eq!(a.status, 200, "connect {}: {}", c.realm_id, a.text);
    }
    w
}

fn company(w: &World, realm: &str) -> Value {
    let v = w.control("company", json!({"realm": realm}));
    assert_eq!(v["ok"], true, "{v}");
    let list = w.control("companies", json!({"all": true}));
    list["data"]["companies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["company_id"] == realm)
        .cloned()
        .unwrap_or_else(|| panic!("{realm} not listed: {list}"))
}

/// Preferences reads the fake received for `realm`.
fn preference_reads(w: &World, realm: &str) -> usize {
    w.intuit
        .requests_for(realm)
        .iter()
        .filter(|r| r.path().ends_with("/preferences"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_currency_quickbooks_does_not_hold_is_refused_and_the_next_sync_is_exact() {
    let w = world_with(&[spec("1001", "Lek Co", "ALL", &["EUR", "USD"])]).await;
    let path = "/api/v1/companies/1001/settings";

    // Told EUR (alone, or with another setting): 409 naming QuickBooks' ALL, one
    // Preferences read, nothing changed.
    let before = preference_reads(&w, "1001");
    let a = w
        .admin_put(path, r#"{"home_currency": "EUR", "sync_enabled": false}"#)
        .await;
    assert_eq!(a.status, 409, "{}", a.text);
    let v = a.json();
    assert_eq!(v["error"]["code"], "home_currency_mismatch", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("ALL") && message.contains("EUR"),
        "{message}"
    );
    assert_eq!(preference_reads(&w, "1001"), before + 1, "one read");
    let c = company(&w, "1001");
    assert_eq!(c["home_currency"], "ALL", "{c}");
    assert_eq!(
        c["sync_enabled"], true,
        "the other setting was not applied either"
    );

    // The CLI: exit 1 with the reason.
    let (code, out, err) =
        tokio::task::block_in_place(|| w.daemon.cli(&["set", "1001", "--home-currency", "EUR"]));
    assert_eq!(code, 1, "{out} / {err}");
    assert!(err.contains("ALL"), "{err}");
    assert_eq!(company(&w, "1001")["home_currency"], "ALL");

    // The matching value is accepted, with no read (it is what we hold).
    let before = preference_reads(&w, "1001");
    let a = w.admin_put(path, r#"{"home_currency": "ALL"}"#).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        preference_reads(&w, "1001"),
        before,
        "no read for our own value"
    );

    // The next sync is exact: ALL per unit, with ALL as the target.
    let a = w
        .admin_post(&format!("/api/v1/companies/1001/sync?target_date={FRIDAY}"))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(rate(&w, "1001", "EUR", FRIDAY), Some(dec("95.40")));
    assert_eq!(rate(&w, "1001", "USD", FRIDAY), Some(dec("82.24")));
    for r in w.intuit.exchange_rates("1001") {
        assert_eq!(r.target, "ALL", "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickbooks_own_home_currency_is_accepted_when_our_copy_is_stale() {
    let w = world_with(&[spec("1002", "Moved Co", "ALL", &["EUR", "USD"])]).await;
    // QuickBooks now says EUR (the fake lets a test change what a real company cannot):
    // the same value from the admin is QuickBooks' own, so it is accepted.
    w.intuit.set_home_currency("1002", "EUR");
    w.intuit.set_currency_active("1002", "ALL", true);
    let a = w
        .admin_put(
            "/api/v1/companies/1002/settings",
            r#"{"home_currency": "EUR"}"#,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(company(&w, "1002")["home_currency"], "EUR");
    let a = w
        .admin_post(&format!("/api/v1/companies/1002/sync?target_date={FRIDAY}"))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(rate(&w, "1002", "USD", FRIDAY), Some(dec("0.862055")));
    assert_eq!(rate(&w, "1002", "ALL", FRIDAY), Some(dec("0.010482")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopt_and_import_take_quickbooks_home_currency_with_a_warning() {
    let w = world_with(&[]).await;
    // adopt --home-currency EUR for an ALL-home company: taken over with ALL, warned.
    let rt = w
        .intuit
        .grant_from_other_deployment(spec("3003", "Lek Co", "ALL", &["EUR", "USD"]));
    let (code, out, err) = cli_stdin(
        &w,
        &["--json", "adopt", "3003", "--home-currency", "EUR"],
        Some(&rt),
    );
    assert_eq!(code, 0, "{out} / {err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["home_currency"], "ALL", "{v}");
    assert_eq!(v["details_read"], true, "{v}");
    let warning = v["warning"].as_str().unwrap_or_default();
    assert!(warning.contains("ALL") && warning.contains("EUR"), "{v}");
    assert_eq!(company(&w, "3003")["home_currency"], "ALL");
    let a = w
        .admin_post(&format!("/api/v1/companies/3003/sync?target_date={FRIDAY}"))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(rate(&w, "3003", "EUR", FRIDAY), Some(dec("95.40")));

    // The same value as QuickBooks': no warning.
    let rt = w
        .intuit
        .grant_from_other_deployment(spec("3004", "Lek Two", "ALL", &["EUR"]));
    let (code, out, err) = cli_stdin(
        &w,
        &["--json", "adopt", "3004", "--home-currency", "ALL"],
        Some(&rt),
    );
    assert_eq!(code, 0, "{out} / {err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["warning"], Value::Null, "{v}");

    // An imported line saying EUR for an ALL-home company: imported with ALL, warned.
    let rt =
        w.intuit
            .grant_from_other_deployment(spec("3005", "Lek Three", "ALL", &["EUR", "USD"]));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("companies.jsonl");
    std::fs::write(
        &file,
        format!(
            "{}\n",
            json!({"realm_id": "3005", "refresh_token": rt, "home_currency": "EUR"})
        ),
    )
    .unwrap();
    let file = file.display().to_string();
    let (code, out, err) = cli_stdin(&w, &["--json", "import-connections", &file], None);
    assert_eq!(code, 0, "{out} / {err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let line = &v["results"][0];
    assert_eq!(line["action"], "imported", "{v}");
    let warning = line["warning"].as_str().unwrap_or_default();
    assert!(warning.contains("ALL"), "{v}");
    assert_eq!(company(&w, "3005")["home_currency"], "ALL");
    let a = w
        .admin_post(&format!("/api/v1/companies/3005/sync?target_date={FRIDAY}"))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(rate(&w, "3005", "USD", FRIDAY), Some(dec("82.24")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_currency_changed_in_quickbooks_is_re_read_and_synced_in_the_same_call() {
    let w = world_with(&[spec("2002", "Switch Co", "ALL", &["EUR", "USD"])]).await;
    let a = w
        .admin_post(&format!("/api/v1/companies/2002/sync?target_date={FRIDAY}"))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(rate(&w, "2002", "EUR", FRIDAY), Some(dec("95.40")));

    // Between two days QuickBooks' home becomes EUR (our cached Preferences are an hour
    // old, so the sync writes for ALL first and QuickBooks refuses each write).
    w.intuit.set_home_currency("2002", "EUR");
    w.intuit.set_currency_active("2002", "ALL", true);
    let a = w
        .admin_post(&format!(
            "/api/v1/companies/2002/sync?target_date={SATURDAY}"
        ))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let v = a.json();
    assert_eq!(v["success"], true, "{v}");
    // Saturday: Friday's fixing in force, crossed through EUR; ALL itself is 1/EUR.
    assert_eq!(rate(&w, "2002", "USD", SATURDAY), Some(dec("0.862055")));
    assert_eq!(rate(&w, "2002", "ALL", SATURDAY), Some(dec("0.010482")));
    let saturday = NaiveDate::from_str(SATURDAY).unwrap();
    for r in w.intuit.exchange_rates("2002") {
        if r.date == saturday {
            assert_eq!(r.target, "EUR", "{r:?}");
        }
    }
    assert_eq!(company(&w, "2002")["home_currency"], "EUR");
}
