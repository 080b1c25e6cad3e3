//! Backfill benchmark (issue 12; results in BENCHMARKS.md): one company, 366 days × 15
//! currencies, against the fake Intuit at a fixed latency per call (100 ms by default).
//!
//! 1. seeds a data dir with the library's store API: the company (ALL home, 15 currencies of
//!    the real 2026-05-22 page active, currency list marked as read now) and its tokens, and
//!    a main table for every business day from 2025-05-24 to 2026-05-22 (the real page's
//!    main table with small daily moves) plus its minor table;
//! 2. starts the real daemon (bench profile) and runs `backfill --from 2025-05-24 --to
//!    2026-05-24` over the control socket, then the same backfill again;
//! 3. prints reads, writes and wall time of both runs.
//!
//! Environment: `BENCH_LATENCY_MS` (100), `BENCH_WRITES_IN_FLIGHT` (4, the default of
//! `quickbooks.writes_in_flight_per_company`). Exits non-zero when a run is incorrect.

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/it/support/fake_intuit/mod.rs"]
#[allow(dead_code)]
mod fake_intuit;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use boa_exchange::boa::{parse_page, FixingSource};
use boa_exchange::currency::Currency;
use boa_exchange::fixing::TableKind;
use boa_exchange::store::records::{Company, Connection, DriftPolicy, TokenExpiry, TokenSet};
use boa_exchange::store::Store;
use chrono::{Datelike, NaiveDate, Utc, Weekday};
use common::{control, env_u64, wait_ready};
use fake_intuit::{CompanySpec, FakeIntuit, FakeIntuitConfig};
use rust_decimal::Decimal;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_boa-exchange");
const PAGE: &str = "tests/fixtures/boa/official-rate-en-2026-05-22.html";
const REALM: &str = "4620816365999001";
const FROM: &str = "2025-05-24";
const TO: &str = "2026-05-24";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let latency_ms = env_u64("BENCH_LATENCY_MS", 100);
    let in_flight = env_u64("BENCH_WRITES_IN_FLIGHT", 4);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let socket = dir.path().join("control.sock");
    let intuit = FakeIntuit::start(FakeIntuitConfig {
        record_requests: false,
        latency: Duration::ZERO,
        ..FakeIntuitConfig::default()
    })
    .await;

    // Seed the store.
    let html = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(PAGE))
        .expect("fixture page");
    let page = parse_page(&html).expect("parse fixture");
    let main = page
        .tables
        .iter()
        .find(|t| t.kind == TableKind::Main)
        .expect("main table")
        .clone();
    let codes: Vec<Currency> = main
        .rates
        .iter()
        .map(|r| r.iso_code())
        .filter(|c| *c != Currency::ALL)
        .take(15)
        .collect();
    assert_eq!(codes.len(), 15, "the page has 15 main currencies");
    let mut spec = CompanySpec::new(REALM, "Backfill Co");
    spec.home_currency = "ALL".into();
    spec.active_currencies = codes.iter().map(|c| c.to_string()).collect();
    let (at, rt) = intuit.add_connected_company(spec);
    let store = Store::open_sled(&data, &data.join("identity.txt")).expect("open store");
    let now = Utc::now();
    let expiry = TokenExpiry {
        access_expires_at: now + chrono::Duration::hours(1),
        refresh_expires_at: now + chrono::Duration::days(100),
        hard_expires_at: None,
        refreshed_at: now,
    };
    let company = Company {
        realm_id: REALM.into(),
        company_name: "Backfill Co".into(),
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
        active_currencies: codes.clone(),
        currencies_checked_at: Some(now),
        drift: DriftPolicy::Correct,
    };
    store
        .save_company_and_tokens(
            &company,
            &TokenSet {
                access_token: at,
                refresh_token: rt,
                expiry,
            },
        )
        .await
        .expect("save");
    let source = FixingSource::Page {
        url: "https://www.bankofalbania.org/Tregjet/Kursi_zyrtar_i_kembimit/".into(),
        sha256: "bench".into(),
        fetched_at: now,
    };
    let last = NaiveDate::from_ymd_opt(2026, 5, 22).unwrap();
    let mut day = NaiveDate::parse_from_str(FROM, "%Y-%m-%d").unwrap();
    let mut tables = 0;
    while day <= last {
        if !matches!(day.weekday(), Weekday::Sat | Weekday::Sun) {
            let mut t = main.clone();
            t.date = day;
            let bump = Decimal::new(i64::from(day.ordinal() % 13), 2);
            for r in &mut t.rates {
                r.published += bump;
            }
            store.put_table(&t, &source, now).await.expect("put table");
            tables += 1;
        }
        day = day.succ_opt().unwrap();
    }
    for t in page.tables.iter().filter(|t| t.kind == TableKind::Minor) {
        store
            .put_table(t, &source, now)
            .await
            .expect("put minor table");
    }
    store.flush().await.expect("flush");
    drop(store);
    eprintln!("seeded {tables} main tables");

    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\
             [storage]\ndata_dir = \"{data}\"\n\
             [control]\nsocket = \"{sock}\"\n\
             [quickbooks]\nclient_id = \"{cid}\"\nclient_secret = \"{cs}\"\n\
             redirect_uri = \"http://127.0.0.1:9/api/v1/oauth/callback\"\n\
             authorize_url = \"{au}\"\ntoken_url = \"{tu}\"\nrevoke_url = \"{ru}\"\napi_base = \"{api}\"\n\
             writes_in_flight_per_company = {in_flight}\ntimeout_secs = 30\n\
             [boa]\nurl = \"http://127.0.0.1:9/\"\n\
             [schedule]\nenabled = false\n\
             [log]\nlevel = \"warn\"\n",
            data = data.display(),
            sock = socket.display(),
            cid = intuit.client_id(),
            cs = intuit.client_secret(),
            au = intuit.authorize_url(),
            tu = intuit.token_url(),
            ru = intuit.revoke_url(),
            api = intuit.api_base(),
        ),
    )
    .expect("write config");
    let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log file");
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("ADMIN_API_KEY")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn daemon");
    wait_ready(&socket, &mut child, dir.path());
    intuit.set_latency(Duration::from_millis(latency_ms));

    println!("| run | dates | writes in flight | latency | metered reads | writes | wall |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut failed = false;
    for run in ["first (empty QuickBooks)", "repeat (nothing differs)"] {
        let (r0, w0) = (intuit.total_reads(), intuit.total_writes());
        let t0 = Instant::now();
        let a = control(
            &socket,
            "backfill",
            json!({"realm": REALM, "from": FROM, "to": TO, "dry_run": false}),
        );
        let wall = t0.elapsed();
        let (reads, writes) = (intuit.total_reads() - r0, intuit.total_writes() - w0);
        let data = &a["data"];
        if a["ok"] != true || data["success"] != true {
            eprintln!("backfill failed: {a}");
            failed = true;
        }
        eprintln!(
            "{run}: written {}, unchanged {}, skipped {}",
            data["rates_written"],
            data["rates_unchanged"],
            data["skipped"].as_array().map_or(0, Vec::len)
        );
        println!(
            "| {run} | {} | {in_flight} | {latency_ms} ms | {reads} | {writes} | {:.2} s |",
            data["dates"],
            wall.as_secs_f64()
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    if failed {
        std::process::exit(1);
    }
}
