//! The sync engine end to end: the real daemon, fake BoA (real 2026-05-22 page) and fake
//! Intuit/QuickBooks.

use std::str::FromStr;

use crate::support::backend::Backend;
use crate::support::fake_intuit::CompanySpec;
use crate::support::world::World;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde_json::json;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_and_eur_home_companies_get_exact_rates() {
    all_and_eur_home_companies_get_exact_rates_on(Backend::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_and_eur_home_companies_get_exact_rates_on_postgres() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    all_and_eur_home_companies_get_exact_rates_on(backend).await;
}

async fn all_and_eur_home_companies_get_exact_rates_on(backend: Backend) {
    let w = World::start_on(&backend, "").await;
    assert_eq!(w.fetch()["ok"], true);
    let a = w
        .connect(spec(
            "1001",
            "Lek Co",
            "ALL",
            &["EUR", "USD", "JPY", "HUF", "RUB", "XDR"],
        ))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let b = w
        .connect(spec(
            "2002",
            "Euro Co",
            "EUR",
            &["ALL", "USD", "JPY", "HUF", "GBP"],
        ))
        .await;
    assert_eq!(b.status, 200, "{}", b.text);

    let reads_before = w.intuit.reads("1001");
    let r = w
        .admin_post("/api/v1/companies/1001/sync?target_date=2026-05-22")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["success"], true);
    assert_eq!(v["rates_synced"], 6);
    assert_eq!(v["company_name"], "Lek Co");
    let rate = |realm: &str, c: &str| {
        w.intuit
            .exchange_rate(realm, c, d("2026-05-22"))
            .map(|r| r.rate)
    };
    assert_eq!(rate("1001", "EUR"), Some(dec("95.40")));
    assert_eq!(rate("1001", "USD"), Some(dec("82.24")));
    assert_eq!(rate("1001", "JPY"), Some(dec("0.5168")));
    assert_eq!(rate("1001", "HUF"), Some(dec("0.2647")));
    assert_eq!(rate("1001", "RUB"), Some(dec("1.1196")));
    assert_eq!(rate("1001", "XDR"), Some(dec("112.40")));
    assert_eq!(
        w.intuit.reads("1001") - reads_before,
        1,
        "one metered read per sync"
    );

    let r = w
        .admin_post("/api/v1/companies/2002/sync?target_date=2026-05-22")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // EUR home: cross rates, 6 decimals, half to even.
    assert_eq!(rate("2002", "USD"), Some(dec("0.862055"))); // 82.24/95.40 = 0.8620545...
    assert_eq!(rate("2002", "ALL"), Some(dec("0.010482"))); // 1/95.40 = 0.0104821...
    assert_eq!(rate("2002", "JPY"), Some(dec("0.005417"))); // 0.5168/95.40 = 0.00541719...
    assert_eq!(rate("2002", "HUF"), Some(dec("0.002775"))); // 0.2647/95.40 = 0.00277463...
    assert_eq!(rate("2002", "GBP"), Some(dec("1.157023"))); // 110.38/95.40 = 1.15702306...
    assert_eq!(rate("2002", "EUR"), None, "never the home currency");

    // A second identical sync writes nothing and reports the same count.
    let writes = w.intuit.writes("2002");
    let r = w
        .admin_post("/api/v1/companies/2002/sync?target_date=2026-05-22")
        .await;
    let v = r.json();
    assert_eq!(v["rates_synced"], 5);
    assert_eq!(v["rates_written"], 0);
    assert_eq!(w.intuit.writes("2002"), writes);

    // Status counts.
    let s = w
        .admin_get("/api/v1/companies/2002/sync/status")
        .await
        .json();
    assert_eq!(
        s["exchange_rates"],
        json!({"total": 5, "synced": 5, "pending": 0})
    );
    assert_eq!(s["syncing"]["total_attempts"], 2);
    assert_eq!(s["scraping"]["successful"], 2);
}
