//! The sync engine as a unit, without a daemon: `SyncEngine` built from a temporary store,
//! the archive, a manual clock and the fake QuickBooks — the same parts `app::build` hands
//! it. What a sync writes and records is checked at the fake and in the store.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use boa_exchange::alerts::{Alerts, LogOnly};
use boa_exchange::archive::Archive;
use boa_exchange::config::{Config, ProcessEnv};
use boa_exchange::currency::Currency;
use boa_exchange::fixing::FixingSource;
use boa_exchange::metrics::Metrics;
use boa_exchange::qbo::oauth::OAuthClient;
use boa_exchange::qbo::tokens::TokenManager;
use boa_exchange::store::records::{Company, Connection, LogKind, TokenExpiry, TokenSet};
use boa_exchange::store::Store;
use boa_exchange::sync::engine::Parts;
use boa_exchange::sync::{Error, SyncEngine};
use boa_exchange::time::clock::{Clock, ManualClock};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::support::eventually::eventually_async;
use crate::support::fake_boa::{fixture, FRIDAY};
use crate::support::fake_intuit::{CompanySpec, FakeIntuit, FakeIntuitConfig};

struct Bench {
    engine: Arc<SyncEngine>,
    store: Arc<Store>,
    intuit: FakeIntuit,
    metrics: Arc<Metrics>,
}

fn friday() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 5, 22).unwrap()
}

/// Friday 2026-05-22 14:00 in Tirana: the fixing of the day is published.
fn friday_afternoon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 22, 12, 0, 0).unwrap()
}

async fn bench(extra: &str, realm: &str, home: &str, active: &[&str]) -> Bench {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let intuit = FakeIntuit::start(FakeIntuitConfig::default()).await;
    let mut spec = CompanySpec::new(realm, "Unit Co");
    spec.home_currency = home.into();
    spec.active_currencies = active.iter().map(|c| c.to_string()).collect();
    let (access, refresh) = intuit.add_connected_company(spec);
    let toml = format!(
        "[quickbooks]\nclient_id = \"{}\"\nclient_secret = \"{}\"\ntoken_url = \"{}\"\napi_base = \"{}\"\n{extra}\n[schedule]\nenabled = false\n",
        intuit.client_id(),
        intuit.client_secret(),
        intuit.token_url(),
        intuit.api_base(),
    );
    let config = Config::from_toml(&toml, "engine.toml", None, &ProcessEnv).expect("config");
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(config.clone()));
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(friday_afternoon()));
    let now = clock.now();
    let store = Arc::new(Store::open_temporary().expect("store"));
    // The Friday fixing, parsed from the real capture and stored as a fetch would.
    let page = String::from_utf8(fixture(FRIDAY)).unwrap();
    let parsed = boa_exchange::boa::parse_page(&page).expect("capture parses");
    let source = FixingSource::Page {
        url: "https://www.bankofalbania.org/".into(),
        sha256: "test".into(),
        fetched_at: now,
    };
    for t in &parsed.tables {
        store
            .put_table(t, &source, now)
            .await
            .expect("store fixing");
    }
    let cur = |c: &str| Currency::new(c).unwrap();
    let expiry = TokenExpiry {
        access_expires_at: now + chrono::Duration::hours(1),
        refresh_expires_at: now + chrono::Duration::days(100),
        hard_expires_at: None,
        refreshed_at: now,
    };
    let company = Company {
        realm_id: realm.into(),
        company_name: "Unit Co".into(),
        home_currency: cur(home),
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
        active_currencies: active.iter().map(|c| cur(c)).collect(),
        currencies_checked_at: Some(now),
        drift: Default::default(),
    };
    let tokens = TokenSet {
        access_token: access,
        refresh_token: refresh,
        expiry,
    };
    store
        .save_company_and_tokens(&company, &tokens)
        .await
        .expect("company");
    let http = boa_exchange::qbo::http_client(Duration::from_secs(10)).expect("http");
    let metrics = Arc::new(Metrics::new());
    let token_manager = Arc::new(TokenManager::new(
        store.clone(),
        OAuthClient::new(http.clone(), &config.quickbooks),
        clock.clone(),
        metrics.clone(),
    ));
    let alerts = Arc::new(Alerts::new(Arc::new(LogOnly), clock.clone()));
    let archive = Arc::new(Archive::new(
        store.clone(),
        clock.clone(),
        rx.clone(),
        metrics.clone(),
    ));
    let engine = SyncEngine::new(Parts {
        store: store.clone(),
        tokens: token_manager,
        http,
        archive,
        clock,
        alerts,
        metrics: metrics.clone(),
        config: rx,
        tasks: TaskTracker::new(),
        shutdown: CancellationToken::new(),
    })
    .with_backoff_base(Duration::from_millis(5));
    Bench {
        engine: Arc::new(engine),
        store,
        intuit,
        metrics,
    }
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_writes_the_fixing_exactly_and_records_the_attempt() {
    let b = bench("", "5005", "ALL", &["EUR", "USD", "JPY"]).await;
    let out = b.engine.sync_company("5005", friday()).await;
    assert_eq!(out.error, None);
    assert_eq!((out.rates_written, out.rates_unchanged), (3, 0));
    let rate = |c: &str| b.intuit.exchange_rate("5005", c, friday()).map(|r| r.rate);
    assert_eq!(rate("USD"), Some(dec("82.24")));
    assert_eq!(rate("JPY"), Some(dec("0.5168")), "per 100 on the page");
    assert_eq!(b.intuit.reads("5005"), 1, "one metered read");
    let logs = b.store.logs("5005", 10).await.unwrap();
    assert!(logs.iter().any(|l| l.kind == LogKind::Syncing && l.success));
    assert_eq!(b.metrics.company_syncs_of(true), 1);

    // A repeat finds everything equal: one read, no write.
    let again = b.engine.sync_company("5005", friday()).await;
    assert_eq!((again.rates_written, again.rates_unchanged), (0, 3));
    assert_eq!(b.intuit.writes("5005"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_all_home_gets_cross_rates_and_all_itself() {
    let b = bench("", "6006", "EUR", &["USD", "ALL"]).await;
    let out = b.engine.sync_company("6006", friday()).await;
    assert_eq!(out.error, None, "{out:?}");
    let rate = |c: &str| b.intuit.exchange_rate("6006", c, friday()).map(|r| r.rate);
    assert_eq!(rate("USD"), Some(dec("0.862055")));
    assert!(rate("ALL").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_errors_say_what_went_wrong_in_the_domains_words() {
    let b = bench("", "7007", "ALL", &["EUR"]).await;
    assert_eq!(
        b.engine.sync_now("404", friday()).await.err(),
        Some(Error::UnknownCompany("404".into()))
    );
    let out = b
        .engine
        .sync_company("7007", NaiveDate::from_ymd_opt(2026, 5, 30).unwrap())
        .await;
    assert!(
        matches!(out.error, Some(Error::Archive(_))),
        "a future date has no fixing: {out:?}"
    );
    b.intuit.set_multicurrency("7007", false);
    b.intuit.set_currency_active("7007", "EUR", false);
    let out = b.engine.sync_company("7007", friday()).await;
    // QuickBooks refuses the write; the engine re-reads the company and says why.
    assert_eq!(out.error, Some(Error::MulticurrencyOff), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_of_one_company_are_bounded_by_the_setting() {
    let ten = [
        "EUR", "USD", "GBP", "CHF", "JPY", "CAD", "AUD", "SEK", "NOK", "DKK",
    ];
    let b = bench("writes_in_flight_per_company = 3", "8008", "ALL", &ten).await;
    b.intuit
        .set_realm_latency("8008", Duration::from_millis(50));
    let out = b.engine.sync_company("8008", friday()).await;
    assert_eq!(out.error, None, "{out:?}");
    assert_eq!(b.intuit.writes("8008") as usize, out.rates_written);
    let peak = b.intuit.peak_in_flight("8008");
    assert!((2..=3).contains(&peak), "peak {peak}");
}

/// A company disconnected while its sync waits on QuickBooks: the 401 that follows (its
/// token is gone) ends the sync as "disconnected", not as an upstream failure, and its
/// tokens are not brought back by a refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_company_disconnected_during_its_sync_ends_as_disconnected() {
    let b = bench("", "8010", "ALL", &["EUR"]).await;
    b.intuit
        .set_realm_latency("8010", Duration::from_millis(400));
    b.intuit.fail_next_api_calls_for("8010", 1, 401);
    let engine = b.engine.clone();
    let sync = tokio::spawn(async move { engine.sync_company("8010", friday()).await });
    // Wait until the read is at the fake, then disconnect.
    eventually_async(
        Duration::from_secs(10),
        "a call for 8010 at the fake",
        async || !b.intuit.requests_for("8010").is_empty(),
    )
    .await;
    b.store
        .disconnect_company("8010", |c| c.is_active = false)
        .await
        .expect("disconnect");
    let out = sync.await.expect("joined");
    assert_eq!(out.error, Some(Error::Disconnected), "{out:?}");
    assert_eq!(b.store.tokens("8010").await.expect("read"), None);
    assert_eq!(b.intuit.writes("8010"), 0);
}

/// The main table of the real capture, re-dated to every business day of the year before
/// it (with small daily moves), stored as fetches would have: a year of history.
async fn store_a_year_of_fixings(store: &Store, first: NaiveDate) -> Vec<Currency> {
    use boa_exchange::fixing::TableKind;
    use chrono::{Datelike, Weekday};
    let page = String::from_utf8(fixture(FRIDAY)).unwrap();
    let parsed = boa_exchange::boa::parse_page(&page).expect("capture parses");
    let main = parsed
        .tables
        .iter()
        .find(|t| t.kind == TableKind::Main)
        .expect("main table")
        .clone();
    let now = friday_afternoon();
    let source = FixingSource::Page {
        url: "https://www.bankofalbania.org/".into(),
        sha256: "year".into(),
        fetched_at: now,
    };
    let mut day = first;
    while day < friday() {
        if !matches!(day.weekday(), Weekday::Sat | Weekday::Sun) {
            let mut t = main.clone();
            t.date = day;
            let bump = Decimal::new(i64::from(day.ordinal() % 13), 2);
            for r in &mut t.rates {
                r.published += bump;
            }
            store.put_table(&t, &source, now).await.expect("put table");
        }
        day = day.succ_opt().unwrap();
    }
    main.rates
        .iter()
        .map(|r| r.iso_code())
        .filter(|c| *c != Currency::ALL)
        .take(15)
        .collect()
}

/// A year of 15 currencies (5,490 rows): one range query per 31 days, every row compared,
/// and only the rows QuickBooks holds differently (or not at all) written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_year_backfill_of_fifteen_currencies_writes_only_what_differs() {
    let first = NaiveDate::from_ymd_opt(2025, 5, 21).unwrap();
    let codes = {
        let probe = Store::open_temporary().unwrap();
        store_a_year_of_fixings(&probe, first).await
    };
    assert_eq!(codes.len(), 15);
    let names: Vec<String> = codes.iter().map(|c| c.to_string()).collect();
    let active: Vec<&str> = names.iter().map(String::as_str).collect();
    let b = bench("", "9009", "ALL", &active).await;
    store_a_year_of_fixings(&b.store, first).await;
    let from = NaiveDate::from_ymd_opt(2025, 5, 22).unwrap();

    // A dry run: the whole plan (everything to write, QuickBooks holds nothing yet).
    let plan = b
        .engine
        .backfill("9009", from, friday(), true)
        .await
        .expect("dry run");
    assert_eq!(plan.dates, 366);
    assert_eq!(plan.plan.len(), 366 * 15, "{:?}", plan.skipped);
    assert_eq!(plan.reads, 12, "one read per 31 days");
    assert_eq!(b.intuit.writes("9009"), 0);

    // QuickBooks already holds ours for all but 20 rows: 10 differ, 10 are missing.
    let mut expected_writes = 0;
    for (i, s) in plan.plan.iter().enumerate() {
        let w = s.want;
        let code = w.currency.to_string();
        match i % 274 {
            0 => {
                b.intuit
                    .set_exchange_rate("9009", &code, w.date, w.rate + dec("0.5"));
                expected_writes += 1;
            }
            137 => expected_writes += 1,
            _ => b.intuit.set_exchange_rate("9009", &code, w.date, w.rate),
        }
    }
    assert_eq!(expected_writes, 41);
    let queries = b.intuit.exchange_rate_queries("9009").len();
    let report = b
        .engine
        .backfill("9009", from, friday(), false)
        .await
        .expect("backfill");
    assert_eq!(report.error, None, "{:?}", report.failed);
    assert_eq!(report.reads, 12);
    assert_eq!(b.intuit.exchange_rate_queries("9009").len(), queries + 12);
    assert_eq!(report.rates_written, expected_writes);
    assert_eq!(report.rates_unchanged, 366 * 15 - expected_writes);
    assert_eq!(b.intuit.writes("9009") as usize, expected_writes);
    for s in &plan.plan {
        let held = b
            .intuit
            .exchange_rate("9009", &s.want.currency.to_string(), s.want.date)
            .map(|r| r.rate);
        assert_eq!(held, Some(s.want.rate), "{:?}", s.want);
    }
}

/// A backfill whose range query QuickBooks refuses names the range, not "upstream".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_backfill_range_query_names_the_range() {
    let b = bench("", "9010", "ALL", &["EUR", "USD"]).await;
    b.intuit.set_exchange_rate_query_fault(true);
    let from = NaiveDate::from_ymd_opt(2026, 5, 18).unwrap();
    let err = b
        .engine
        .backfill("9010", from, friday(), false)
        .await
        .expect_err("refused");
    assert!(
        matches!(err, Error::RangeQueryRefused { from: f, to, .. } if f == from && to == friday()),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("2026-05-18 to 2026-05-22"), "{text}");
    assert_eq!(err.code(), "range_query_refused");
    assert_eq!(b.intuit.writes("9010"), 0);
}
