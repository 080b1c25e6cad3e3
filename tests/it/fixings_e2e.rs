//! The BoA fixing archive end to end, through the real daemon binary: the fake BoA site
//! (real HTTP on 127.0.0.1:0, the real 2026-05-22 capture and broken variants of it) →
//! `fetch` → the store → `GET /api/v1/rates`, `rates` on the CLI, the scrape log, revisions,
//! validation (jump limit, future dates), and the 2024 workbook import.
//!
//! The daemon runs on the real calendar (today is after 2026-05-22); pages dated otherwise
//! are crafted from the capture by replacing its date text and rate cells.

use std::time::{Duration, Instant};

use crate::support::eventually::{eventually_async, lazy};
use crate::support::fake_boa::{self, Mode, FRIDAY, SUNDAY, WORKBOOK_2024};
use crate::support::world::World;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

// ------------------------------------------------------------------------------ fixtures

/// (code, iso_code, units, published, per_unit) of the 2026-05-22 main table, page order.
const MAIN_2026_05_22: [(&str, &str, u32, &str, &str); 16] = [
    ("USD", "USD", 1, "82.24", "82.24"),
    ("EUR", "EUR", 1, "95.40", "95.40"),
    ("GBP", "GBP", 1, "110.38", "110.38"),
    ("CHF", "CHF", 1, "104.60", "104.60"),
    ("JPY", "JPY", 100, "51.68", "0.5168"),
    ("AUD", "AUD", 1, "58.60", "58.60"),
    ("CAD", "CAD", 1, "59.63", "59.63"),
    ("SEK", "SEK", 1, "8.79", "8.79"),
    ("NOK", "NOK", 1, "8.90", "8.90"),
    ("DKK", "DKK", 1, "12.77", "12.77"),
    ("SDR", "XDR", 1, "112.40", "112.40"),
    ("XAU", "XAU", 1, "371473.97", "371473.97"),
    ("XAG", "XAG", 1, "6223.96", "6223.96"),
    ("CNY", "CNY", 1, "12.10", "12.10"),
    ("CNH", "CNH", 1, "12.10", "12.10"),
    ("TRY", "TRY", 1, "1.80", "1.80"),
];

/// The minor table of the same page, dated 2026-05-15 (HUF and RUB per 100 units).
const MINOR_2026_05_15: [(&str, &str, u32, &str, &str); 4] = [
    ("HUF", "HUF", 100, "26.47", "0.2647"),
    ("RUB", "RUB", 100, "111.96", "1.1196"),
    ("CZK", "CZK", 1, "3.92", "3.92"),
    ("MKD", "MKD", 1, "1.55", "1.55"),
];

/// The EUR rate cell of the capture (it occurs once).
const EUR_CELL: &str = "<td align=\"right\" nowrap>95.40</td>";

fn rows(rows: &[(&str, &str, u32, &str, &str)]) -> Value {
    Value::Array(
        rows.iter()
            .map(|(code, iso, units, published, per_unit)| {
                json!({"code": code, "iso_code": iso, "units": units,
                       "published": published, "per_unit": per_unit})
            })
            .collect(),
    )
}

/// The rates answer for the Friday capture asked for `date`.
fn friday_answer(date: &str, url: &str) -> Value {
    json!({
        "success": true,
        "date": date,
        "source_url": url,
        "page_sha256": sha256_hex(&fake_boa::fixture(FRIDAY)),
        "tables": [
            {"table": "main", "date": "2026-05-22", "published_at": "2026-05-22T12:12:23+02:00",
             "revision": 1, "rates": rows(&MAIN_2026_05_22)},
            {"table": "minor", "date": "2026-05-15", "published_at": "2026-05-15T12:25:37+02:00",
             "revision": 1, "rates": rows(&MINOR_2026_05_15)},
        ],
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The Friday capture as text.
fn friday() -> String {
    String::from_utf8(fake_boa::fixture(FRIDAY)).expect("the capture is UTF-8")
}

/// `page` with every `from` replaced by `to` (which must occur).
fn replaced(page: &str, from: &str, to: &str) -> String {
    assert!(page.contains(from), "{from:?} is not on the page");
    page.replace(from, to)
}

/// The Friday capture re-dated: every `22.05.2026` (main and bid/ask blocks) becomes `date`
/// (`DD.MM.YYYY`); the minor table keeps 15.05.2026.
fn dated(date: &str) -> String {
    replaced(&friday(), "22.05.2026", date)
}

/// `page` with the EUR rate cell set to `rate`.
fn with_eur(page: &str, rate: &str) -> String {
    replaced(
        page,
        EUR_CELL,
        &format!("<td align=\"right\" nowrap>{rate}</td>"),
    )
}

fn workbook_path() -> String {
    format!(
        "{}/tests/fixtures/boa/{WORKBOOK_2024}",
        env!("CARGO_MANIFEST_DIR")
    )
}

// ------------------------------------------------------------------------------ helpers

/// `fetch` over the control socket; the data of a successful answer.
fn fetch_ok(w: &World) -> Value {
    let a = w.fetch();
    assert_eq!(a["ok"], true, "fetch failed: {a}");
    a["data"].clone()
}

/// `fetch` over the control socket that must fail; (code, message).
fn fetch_err(w: &World) -> (String, String) {
    let a = w.fetch();
    assert_eq!(a["ok"], false, "fetch should have failed: {a}");
    (
        a["error"]["code"].as_str().unwrap_or_default().to_string(),
        a["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// (table, date, outcome) of a fetch answer.
fn outcomes(data: &Value) -> Vec<(String, String, String)> {
    data["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .map(|t| {
            (
                t["table"].as_str().unwrap_or_default().to_string(),
                t["date"].as_str().unwrap_or_default().to_string(),
                t["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn o(table: &str, date: &str, outcome: &str) -> (String, String, String) {
    (table.into(), date.into(), outcome.into())
}

/// `GET /api/v1/rates?date=` (no admin key) that must answer 200.
async fn rates(w: &World, date: &str) -> Value {
    let a = w.get(&format!("/api/v1/rates?date={date}")).await;
    assert_eq!(a.status, 200, "rates for {date}: {}", a.text);
    a.json()
}

/// `GET /api/v1/rates?date=` that must be refused with `status`; the error object.
async fn rates_refused(w: &World, date: &str, status: u16) -> Value {
    let a = w.get(&format!("/api/v1/rates?date={date}")).await;
    assert_eq!(a.status, status, "rates for {date:?}: {}", a.text);
    let v = a.json();
    assert_eq!(v["success"], false, "{v}");
    v["error"].clone()
}

/// The rate row of `code` in a rates answer.
fn rate<'a>(answer: &'a Value, code: &str) -> &'a Value {
    answer["tables"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["rates"].as_array().into_iter().flatten())
        .find(|r| r["code"] == code)
        .unwrap_or_else(|| panic!("no {code} in {answer}"))
}

/// The table of `kind` in a rates answer.
fn table<'a>(answer: &'a Value, kind: &str) -> &'a Value {
    answer["tables"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["table"] == kind)
        .unwrap_or_else(|| panic!("no {kind} table in {answer}"))
}

/// The CLI against the daemon: (exit code, stdout, stderr).
fn cli(w: &World, args: &[&str]) -> (i32, String, String) {
    tokio::task::block_in_place(|| w.daemon.cli(args))
}

/// The CLI, which must succeed; its stdout.
fn cli_ok(w: &World, args: &[&str]) -> String {
    let (code, out, err) = cli(w, args);
    assert_eq!(code, 0, "{args:?} exited {code}: {err}{out}");
    out
}

/// The whitespace-separated fields of the first output line whose first field is `first`.
fn line_fields(out: &str, first: &str) -> Vec<String> {
    out.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|f| f.first().map(String::as_str) == Some(first))
        .unwrap_or_else(|| panic!("no line starting with {first} in:\n{out}"))
}

/// The global scrape log, newest first.
fn scrapes(w: &World) -> Vec<Value> {
    let a = w.control("scrapes", json!({"limit": 100}));
    assert_eq!(a["ok"], true, "{a}");
    a["data"].as_array().expect("scrape records").clone()
}

/// WARN lines of the daemon's log that mention a new revision.
fn revision_warnings(w: &World) -> Vec<String> {
    w.daemon
        .stderr()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("new revision"))
        .map(str::to_string)
        .collect()
}

// ------------------------------------------------------------------------------ answers

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetched_fixing_is_served_exactly_by_the_public_endpoint() {
    let w = World::start("").await;
    // Nothing stored yet: 422 telling how to get a fixing.
    let e = rates_refused(&w, "2026-05-22", 422).await;
    assert_eq!(e["code"], "no_fixing", "{e}");

    let data = fetch_ok(&w);
    assert_eq!(
        outcomes(&data),
        [
            o("main", "2026-05-22", "new"),
            o("minor", "2026-05-15", "new")
        ]
    );
    assert_eq!(data["source_url"], w.boa.url());
    assert_eq!(
        data["page_sha256"],
        "2e6850edc062a00cfe1dd9b7b55145aa1cb6873fa2d815b841329101a4250e87"
    );
    assert_eq!(data["page_sha256"], sha256_hex(&fake_boa::fixture(FRIDAY)));
    assert_eq!(w.boa.requests(), 1);

    // Public data: no admin key sent (the admin endpoints do want one).
    assert_eq!(w.get("/api/v1/companies/list").await.status, 401);
    let got = rates(&w, "2026-05-22").await;
    assert_eq!(got, friday_answer("2026-05-22", &w.boa.url()));

    // The control socket gives the same answer.
    let c = w.control("rates", json!({"date": "2026-05-22"}));
    assert_eq!(c["ok"], true, "{c}");
    assert_eq!(c["data"], got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_without_a_date_is_the_latest_fixing() {
    let w = World::start("").await;
    fetch_ok(&w);
    let a = w.get("/api/v1/rates").await;
    assert_eq!(a.status, 200, "{}", a.text);
    let v = a.json();
    let expected = friday_answer("2026-05-22", &w.boa.url());
    assert_eq!(v["tables"], expected["tables"]);
    assert_eq!(v["source_url"], expected["source_url"]);
    assert_eq!(v["page_sha256"], expected["page_sha256"]);

    // A newer fixing (a crafted Tuesday page) becomes the latest.
    w.boa.set_page(with_eur(&dated("26.05.2026"), "95.45"));
    fetch_ok(&w);
    let v = w.get("/api/v1/rates").await.json();
    assert_eq!(table(&v, "main")["date"], "2026-05-26", "{v}");
    assert_eq!(rate(&v, "EUR")["published"], "95.45");
    assert_eq!(table(&v, "minor")["date"], "2026-05-15");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_on_the_cli_as_table_and_json() {
    let w = World::start("").await;
    let out = cli_ok(&w, &["fetch"]);
    assert!(out.contains("2026-05-22"), "{out}");

    let out = cli_ok(&w, &["rates", "--date", "2026-05-22"]);
    assert!(
        out.contains("main table, 2026-05-22 (published 2026-05-22T12:12:23+02:00)"),
        "{out}"
    );
    assert!(
        out.contains("minor table, 2026-05-15 (published 2026-05-15T12:25:37+02:00)"),
        "{out}"
    );
    assert_eq!(
        line_fields(&out, "JPY"),
        ["JPY", "JPY", "100", "51.68", "0.5168"]
    );
    assert_eq!(
        line_fields(&out, "SDR"),
        ["SDR", "XDR", "1", "112.40", "112.40"]
    );
    assert_eq!(
        line_fields(&out, "HUF"),
        ["HUF", "HUF", "100", "26.47", "0.2647"]
    );
    assert_eq!(
        line_fields(&out, "EUR"),
        ["EUR", "EUR", "1", "95.40", "95.40"]
    );
    // Without --date: the latest fixing.
    let latest = cli_ok(&w, &["rates"]);
    assert!(latest.contains("main table, 2026-05-22"), "{latest}");

    // --json: exactly the HTTP answer (SPEC §5 "rates --json").
    let out = cli_ok(&w, &["--json", "rates", "--date", "2026-05-22"]);
    let v: Value = serde_json::from_str(out.trim()).expect("--json prints JSON");
    assert_eq!(v, friday_answer("2026-05-22", &w.boa.url()));

    // No fixing: exit 1 with the daemon's message.
    let (code, out, err) = cli(&w, &["rates", "--date", "2026-05-21"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("2026-05-22") && err.contains("no_fixing"),
        "{err}"
    );
    // A malformed date is the caller's mistake: the daemon classes it `bad_input`, exit 2.
    let (code, out, err) = cli(&w, &["rates", "--date", "22.05.2026"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("bad_date"), "{err}");
    let (code, out, _) = cli(&w, &["--json", "rates", "--date", "22.05.2026"]);
    assert_eq!(code, 2);
    let v: Value = serde_json::from_str(out.trim()).expect("error JSON on stdout");
    assert_eq!(v["success"], false, "{v}");
    assert_eq!(v["error"]["code"], "bad_date", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weekend_date_gets_fridays_fixing() {
    let w = World::start("").await;
    fetch_ok(&w);
    for day in ["2026-05-23", "2026-05-24"] {
        let v = rates(&w, day).await;
        assert_eq!(v, friday_answer(day, &w.boa.url()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dates_without_a_fixing_are_422_naming_the_nearest_one() {
    let w = World::start("").await;
    fetch_ok(&w);

    // A business day before the first stored fixing.
    let e = rates_refused(&w, "2026-05-21", 422).await;
    assert_eq!(e["code"], "no_fixing", "{e}");
    let m = e["message"].as_str().unwrap_or_default();
    assert!(m.contains("2026-05-21") && m.contains("2026-05-22"), "{m}");

    // Long before any fixing: names the oldest.
    let e = rates_refused(&w, "2020-01-01", 422).await;
    assert!(
        e["message"]
            .as_str()
            .unwrap_or_default()
            .contains("2026-05-22"),
        "{e}"
    );

    // After today.
    let e = rates_refused(&w, "2030-01-01", 422).await;
    let m = e["message"].as_str().unwrap_or_default();
    assert!(m.contains("future") && m.contains("2026-05-22"), "{m}");

    // A business day between two stored fixings that was never stored (Monday 25th; the
    // crafted Tuesday page carries the same rates).
    w.boa.set_page(dated("26.05.2026"));
    let data = fetch_ok(&w);
    assert_eq!(
        outcomes(&data),
        [
            o("main", "2026-05-26", "new"),
            o("minor", "2026-05-15", "unchanged")
        ]
    );
    let e = rates_refused(&w, "2026-05-25", 422).await;
    let m = e["message"].as_str().unwrap_or_default();
    assert!(m.contains("2026-05-25") && m.contains("2026-05-22"), "{m}");
    // The days around it still answer.
    assert_eq!(
        table(&rates(&w, "2026-05-26").await, "main")["date"],
        "2026-05-26"
    );
    assert_eq!(
        table(&rates(&w, "2026-05-24").await, "main")["date"],
        "2026-05-22"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_dates_are_400_bad_date() {
    let w = World::start("").await;
    fetch_ok(&w);
    for bad in [
        "22.05.2026",
        "2026-5-22",
        "2026-02-30",
        "2026-13-01",
        "tomorrow",
        "2026-05-22x",
        "",
    ] {
        let e = rates_refused(&w, bad, 400).await;
        assert_eq!(e["code"], "bad_date", "{bad:?}: {e}");
        if !bad.is_empty() {
            assert!(
                e["message"].as_str().unwrap_or_default().contains(bad),
                "{e}"
            );
        }
    }
}

// ------------------------------------------------------------------------------ revisions

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_fixing_fetched_again_changes_nothing() {
    let w = World::start("").await;
    fetch_ok(&w);
    let before = rates(&w, "2026-05-22").await;

    let again = fetch_ok(&w);
    assert_eq!(
        outcomes(&again),
        [
            o("main", "2026-05-22", "unchanged"),
            o("minor", "2026-05-15", "unchanged")
        ]
    );
    // The Sunday capture: other bytes, same fixing.
    w.boa.set_page(fake_boa::fixture(SUNDAY));
    let sunday = fetch_ok(&w);
    assert_eq!(outcomes(&sunday), outcomes(&again));
    assert_ne!(sunday["page_sha256"], before["page_sha256"]);

    // Still revision 1, still the first page as the source.
    assert_eq!(rates(&w, "2026-05-22").await, before);
    assert!(revision_warnings(&w).is_empty(), "{}", w.daemon.stderr());
    let log = scrapes(&w);
    assert_eq!(log.len(), 3, "every attempt is logged: {log:?}");
    assert!(log.iter().all(|r| r["success"] == true), "{log:?}");
    assert!(
        log[0]["outcome"]
            .as_str()
            .unwrap_or_default()
            .contains("unchanged"),
        "{log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_rate_for_a_stored_date_is_a_new_revision_with_a_warning() {
    let w = World::start("").await;
    fetch_ok(&w);
    assert!(revision_warnings(&w).is_empty());

    let changed = with_eur(&friday(), "95.50");
    w.boa.set_page(changed.clone());
    let data = fetch_ok(&w);
    assert_eq!(
        outcomes(&data),
        [
            o("main", "2026-05-22", "revised"),
            o("minor", "2026-05-15", "unchanged")
        ]
    );
    let v = rates(&w, "2026-05-22").await;
    assert_eq!(rate(&v, "EUR")["published"], "95.50");
    assert_eq!(rate(&v, "EUR")["per_unit"], "95.50");
    assert_eq!(rate(&v, "USD")["published"], "82.24");
    assert_eq!(table(&v, "main")["revision"], 2);
    assert_eq!(table(&v, "minor")["revision"], 1);
    assert_eq!(v["page_sha256"], sha256_hex(changed.as_bytes()));

    let out = cli_ok(&w, &["rates", "--date", "2026-05-22"]);
    assert_eq!(
        line_fields(&out, "EUR"),
        ["EUR", "EUR", "1", "95.50", "95.50"]
    );

    let warnings = revision_warnings(&w);
    assert_eq!(warnings.len(), 1, "{}", w.daemon.stderr());
    assert!(warnings[0].contains("2026-05-22"), "{warnings:?}");

    // The revised page again: nothing new.
    let again = fetch_ok(&w);
    assert_eq!(
        outcomes(&again),
        [
            o("main", "2026-05-22", "unchanged"),
            o("minor", "2026-05-15", "unchanged")
        ]
    );
    assert_eq!(rates(&w, "2026-05-22").await, v);
    assert_eq!(revision_warnings(&w).len(), 1);
}

// ------------------------------------------------------------------------------ refusals

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jump_over_the_limit_is_refused_and_nothing_changes() {
    let w = World::start("").await;
    fetch_ok(&w);
    let before = rates(&w, "2026-05-22").await;

    // Next business day, EUR 95.40 → 120.00 (+25.79 %).
    w.boa.set_page(with_eur(&dated("25.05.2026"), "120.00"));
    let (code, msg) = fetch_err(&w);
    assert_eq!(code, "boa_fixing_refused", "{msg}");
    for part in ["EUR", "95.40", "120.00", "20"] {
        assert!(msg.contains(part), "{part} not in {msg:?}");
    }
    rates_refused(&w, "2026-05-25", 422).await;

    // The same date republished with EUR 120.00.
    w.boa.set_page(with_eur(&friday(), "120.00"));
    let (code, msg) = fetch_err(&w);
    assert_eq!(code, "boa_fixing_refused", "{msg}");
    assert!(msg.contains("EUR") && msg.contains("120.00"), "{msg}");
    assert_eq!(rates(&w, "2026-05-22").await, before);

    // Within the limit (+19.5 %) the next day is accepted: the limit is what refused.
    w.boa.set_page(with_eur(&dated("25.05.2026"), "114.00"));
    let data = fetch_ok(&w);
    assert_eq!(outcomes(&data)[0], o("main", "2026-05-25", "new"));
    assert_eq!(
        rate(&rates(&w, "2026-05-25").await, "EUR")["published"],
        "114.00"
    );
    assert_eq!(rates(&w, "2026-05-22").await, before);

    let log = scrapes(&w);
    assert_eq!(log.len(), 4, "{log:?}");
    assert_eq!(log[1]["success"], false);
    assert_eq!(log[2]["success"], false);
    assert!(
        log[2]["outcome"]
            .as_str()
            .unwrap_or_default()
            .contains("EUR"),
        "{log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_fails_the_fetch_and_keeps_the_stored_fixing() {
    let w = World::start("").await;
    fetch_ok(&w);
    let before = rates(&w, "2026-05-22").await;
    let requests = w.boa.requests();

    w.boa.set_mode(Mode::Status(503));
    let (code, out, err) = cli(&w, &["fetch"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("503") && err.contains("boa_unavailable"),
        "{err}"
    );
    assert_eq!(w.boa.requests() - requests, 3, "3 attempts");

    assert_eq!(rates(&w, "2026-05-22").await, before);
    let log = scrapes(&w);
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0]["success"], false);
    assert!(
        log[0]["outcome"]
            .as_str()
            .unwrap_or_default()
            .contains("503"),
        "{log:?}"
    );
    assert_eq!(log[0]["url"], w.boa.url());
    assert_eq!(log[1]["success"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_slower_than_the_timeout_fails_and_keeps_the_stored_fixing() {
    let w = World::start("").await;
    fetch_ok(&w);
    let before = rates(&w, "2026-05-22").await;

    // World fixes boa.timeout_secs = 5; lower it to 1 s through a SIGHUP reload.
    let path = w.daemon.config_path();
    let config = std::fs::read_to_string(&path).expect("config");
    assert_eq!(config.matches("timeout_secs = 5\n").count(), 1, "{config}");
    std::fs::write(
        &path,
        config.replace("timeout_secs = 5\n", "timeout_secs = 1\n"),
    )
    .expect("write config");
    w.daemon.signal(libc::SIGHUP);
    eventually_async(
        Duration::from_secs(10),
        lazy(|| {
            format!(
                "\"configuration reloaded\" in the log: {}",
                w.daemon.stderr()
            )
        }),
        async || w.daemon.stderr().contains("configuration reloaded"),
    )
    .await;

    w.boa.set_mode(Mode::Slow(Duration::from_secs(30)));
    let started = Instant::now();
    let (code, msg) = fetch_err(&w);
    assert_eq!(code, "boa_unavailable", "{msg}");
    assert!(msg.contains("timed out"), "{msg}");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );

    w.boa.set_mode(Mode::Ok);
    assert_eq!(rates(&w, "2026-05-22").await, before);
    let log = scrapes(&w);
    assert_eq!(log[0]["success"], false, "{log:?}");
    assert!(
        log[0]["outcome"]
            .as_str()
            .unwrap_or_default()
            .contains("timed out"),
        "{log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_and_redesigned_pages_are_refused_and_keep_the_stored_fixing() {
    let w = World::start("").await;
    fetch_ok(&w);
    let before = rates(&w, "2026-05-22").await;

    w.boa.set_mode(Mode::Truncated);
    let (code, msg) = fetch_err(&w);
    assert_eq!(code, "boa_page_changed", "{msg}");
    assert!(msg.contains("truncated"), "{msg}");
    assert_eq!(rates(&w, "2026-05-22").await, before);

    w.boa.set_mode(Mode::ChangedLayout);
    let (code, msg) = fetch_err(&w);
    assert_eq!(code, "boa_page_changed", "{msg}");
    assert!(msg.contains("no recognisable official rate table"), "{msg}");
    assert_eq!(rates(&w, "2026-05-22").await, before);

    let log = scrapes(&w);
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(log[0]["success"], false);
    assert!(
        log[0]["outcome"]
            .as_str()
            .unwrap_or_default()
            .contains("no recognisable"),
        "{log:?}"
    );
    assert_eq!(log[1]["success"], false);
    assert!(
        log[1]["outcome"]
            .as_str()
            .unwrap_or_default()
            .contains("truncated"),
        "{log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_dated_in_the_future_is_refused() {
    let w = World::start("").await;
    fetch_ok(&w);
    let before = rates(&w, "2026-05-22").await;

    // A year from the real today (the daemon runs on the real calendar).
    let future = (chrono::Utc::now() + chrono::TimeDelta::days(366)).date_naive();
    w.boa
        .set_page(dated(&future.format("%d.%m.%Y").to_string()));
    let (code, msg) = fetch_err(&w);
    assert_eq!(code, "boa_fixing_refused", "{msg}");
    assert!(
        msg.contains(&future.to_string()) && msg.contains("after today"),
        "{msg}"
    );
    assert_eq!(rates(&w, "2026-05-22").await, before);
    rates_refused(&w, &future.to_string(), 422).await;
    let log = scrapes(&w);
    assert_eq!(log[0]["success"], false, "{log:?}");
}

// ------------------------------------------------------------------------------ import

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_2024_workbook_is_imported_from_the_cli() {
    let w = World::start("").await;
    let file = workbook_path();
    let out = cli_ok(&w, &["--json", "import-archive", &file]);
    let v: Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(v["success"], true, "{v}");
    let first = &v;
    let imported = first["imported"].as_u64().expect("imported");
    assert!((240..=252).contains(&imported), "{first}");
    assert_eq!(first["skipped"], 0);
    assert_eq!(first["first_date"], "2024-01-03");
    assert_eq!(first["last_date"], "2024-12-31");

    let v = rates(&w, "2024-01-03").await;
    assert_eq!(v["tables"].as_array().map(Vec::len), Some(1), "{v}");
    let main = table(&v, "main");
    assert_eq!(main["date"], "2024-01-03");
    assert_eq!(main["published_at"], Value::Null);
    assert_eq!(
        rate(&v, "EUR"),
        &json!({"code": "EUR", "iso_code": "EUR", "units": 1, "published": "103.24", "per_unit": "103.24"})
    );
    assert_eq!(
        rate(&v, "JPY"),
        &json!({"code": "JPY", "iso_code": "JPY", "units": 100, "published": "66.15", "per_unit": "0.6615"})
    );
    assert_eq!(rate(&v, "USD")["published"], "94.40");
    assert_eq!(
        v["page_sha256"],
        sha256_hex(&fake_boa::fixture(WORKBOOK_2024))
    );
    assert!(
        v["source_url"]
            .as_str()
            .unwrap_or_default()
            .contains(WORKBOOK_2024),
        "{v}"
    );
    let table_out = cli_ok(&w, &["rates", "--date", "2024-01-03"]);
    assert!(
        table_out.contains("main table, 2024-01-03 (published -)"),
        "{table_out}"
    );
    assert_eq!(
        line_fields(&table_out, "JPY"),
        ["JPY", "JPY", "100", "66.15", "0.6615"]
    );

    // Weekdays the workbook skips are holidays: the previous fixing is in force.
    let holidays: Vec<String> = first["holidays"]
        .as_array()
        .expect("holidays")
        .iter()
        .map(|d| d.as_str().unwrap_or_default().to_string())
        .collect();
    assert!(holidays.contains(&"2024-03-14".to_string()), "{holidays:?}");
    let v = rates(&w, "2024-03-14").await;
    assert_eq!(table(&v, "main")["date"], "2024-03-13", "{v}");
    assert_eq!(v["date"], "2024-03-14");
    // Before the workbook's first date: 422 naming it.
    let e = rates_refused(&w, "2024-01-02", 422).await;
    assert!(
        e["message"]
            .as_str()
            .unwrap_or_default()
            .contains("2024-01-03"),
        "{e}"
    );

    // Importing again changes nothing.
    let out = cli_ok(&w, &["import-archive", &file]);
    assert!(out.contains("imported 0"), "{out}");
    let out = cli_ok(&w, &["--json", "import-archive", &file]);
    let v: Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(v["imported"], 0, "{v}");
    assert_eq!(v["skipped"], imported);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_never_overwrites_a_scraped_fixing() {
    let w = World::start("").await;
    // A page dated 3 January 2024 (the capture's rates, so unlike the workbook's).
    w.boa.set_page(dated("03.01.2024"));
    let data = fetch_ok(&w);
    assert_eq!(outcomes(&data)[0], o("main", "2024-01-03", "new"));
    let scraped = rates(&w, "2024-01-03").await;
    assert_eq!(rate(&scraped, "EUR")["published"], "95.40");

    let out = cli_ok(&w, &["--json", "import-archive", &workbook_path()]);
    let v: Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(v["skipped"], 1, "{v}");

    let after = rates(&w, "2024-01-03").await;
    assert_eq!(after, scraped);
    assert_eq!(
        table(&after, "main")["published_at"],
        "2024-01-03T12:12:23+01:00"
    );
    assert_eq!(after["source_url"], w.boa.url());
    // The next day comes from the workbook.
    let next = rates(&w, "2024-01-04").await;
    assert_eq!(table(&next, "main")["published_at"], Value::Null);
    assert_ne!(rate(&next, "EUR")["published"], "95.40");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_archive_of_a_missing_or_broken_file_fails_clearly() {
    let w = World::start("").await;
    let (code, out, err) = cli(&w, &["import-archive", "/nonexistent/archive.xlsx"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("/nonexistent/archive.xlsx"), "{err}");

    let html = format!("{}/tests/fixtures/boa/{FRIDAY}", env!("CARGO_MANIFEST_DIR"));
    let (code, out, err) = cli(&w, &["import-archive", &html]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("workbook"), "{err}");
    rates_refused(&w, "2024-01-03", 422).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_index_is_listed_and_a_year_imported_from_boa() {
    let w = World::start("").await;
    let out = cli_ok(&w, &["import-archive", "--list"]);
    assert!(
        out.contains("2024") && out.contains("Kursi_i_kembimit_2024_29746.xlsx"),
        "{out}"
    );
    let out = cli_ok(&w, &["--json", "import-archive", "--list"]);
    let v: Value = serde_json::from_str(out.trim()).expect("JSON");
    let n = v["workbooks"].as_array().map(Vec::len).unwrap_or(0);
    assert!(n >= 30, "{v}");
    // --year downloads the workbook the index links to (the fake serves the real 2024 one).
    let out = cli_ok(&w, &["--json", "import-archive", "--year", "2024"]);
    let v: Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(v["imported"], 246, "{v}");
    assert_eq!(v["file"], "Kursi_i_kembimit_2024_29746.xlsx");
    let r = rates(&w, "2024-01-03").await;
    assert_eq!(rate(&r, "EUR")["published"], "103.24");
    // A year the index does not list: exit 1, nothing imported.
    let (code, _, err) = cli(&w, &["import-archive", "--year", "1990"]);
    assert_eq!(code, 1);
    assert!(err.contains("no workbook for 1990"), "{err}");
}
