//! The BoA fixing archive as the daemon uses it: fetch → parse → validate → store (one
//! scrape serves every company), the rule for which fixing is in force on a date, the rates
//! answer, and workbook history import.
//!
//! Owns the decisions "is there a rate for date D?" and "may this page be stored?". It does
//! not talk to QuickBooks.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::boa::model::{FixingSource, FixingTable, TableKind};
use crate::boa::{self, BoaClient, BoaClientConfig, FetchError, ParseError, ValidationError};
use crate::ops::{ts, ApiError};
use crate::scheduler::time::{is_business_day, polling_deadline_passed};
use crate::store::records::{ScrapeRecord, StoredTable};
use crate::store::{self, TableOutcome};
use crate::sync::rates::{rates_in_force, InForce};

/// A scrape finished within this long is reused instead of fetching again (automatic
/// fetches only; `fetch` from an admin always goes to BoA).
pub const FETCH_REUSE: Duration = Duration::from_secs(60);

/// How far back a missing business-day fixing is looked for before giving up.
const MAX_GAP_DAYS: i64 = 45;

const META_HOLIDAYS: &str = "holidays";

/// Why a fetch did not store a fixing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FixingError {
    /// BoA could not be reached or answered an error.
    #[error("fetching the BoA page: {0}")]
    Fetch(String),
    /// The page did not parse (changed or broken layout).
    #[error("the BoA page could not be read: {0}")]
    Parse(String),
    /// The fixing failed validation.
    #[error("the BoA fixing was refused: {0}")]
    Invalid(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
}

impl From<FetchError> for FixingError {
    fn from(e: FetchError) -> Self {
        FixingError::Fetch(e.to_string())
    }
}
impl From<ParseError> for FixingError {
    fn from(e: ParseError) -> Self {
        FixingError::Parse(e.to_string())
    }
}
impl From<ValidationError> for FixingError {
    fn from(e: ValidationError) -> Self {
        FixingError::Invalid(e.to_string())
    }
}
impl From<store::Error> for FixingError {
    fn from(e: store::Error) -> Self {
        FixingError::Store(e.to_string())
    }
}

impl From<FixingError> for ApiError {
    fn from(e: FixingError) -> Self {
        match &e {
            FixingError::Fetch(_) => ApiError::upstream("boa_unavailable", e.to_string()),
            FixingError::Parse(_) => ApiError::upstream("boa_page_changed", e.to_string()),
            FixingError::Invalid(_) => ApiError::upstream("boa_fixing_refused", e.to_string()),
            FixingError::Store(_) => ApiError::internal(e),
        }
    }
}

/// What one fetch found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchReport {
    /// (table, fixing date, outcome) for each official table on the page.
    pub tables: Vec<(TableKind, NaiveDate, TableOutcome)>,
    /// The URL fetched.
    pub url: String,
    /// sha256 of the page.
    pub sha256: String,
}

impl FetchReport {
    /// The main table's date.
    pub fn main_date(&self) -> Option<NaiveDate> {
        self.tables
            .iter()
            .find(|t| t.0 == TableKind::Main)
            .map(|t| t.1)
    }

    /// JSON for answers.
    pub fn to_json(&self) -> Value {
        json!({
            "success": true,
            "source_url": self.url,
            "page_sha256": self.sha256,
            "tables": self.tables.iter().map(|(k, d, o)| json!({
                "table": k.as_str(),
                "date": d.to_string(),
                "outcome": match o {
                    TableOutcome::New => "new",
                    TableOutcome::Unchanged => "unchanged",
                    TableOutcome::Revised => "revised",
                    TableOutcome::Skipped => "skipped",
                },
            })).collect::<Vec<_>>(),
        })
    }
}

/// Single-flight guard for scrapes: the last result and when it finished.
#[derive(Default)]
pub struct FetchGate {
    last: tokio::sync::Mutex<Option<(Instant, Result<FetchReport, FixingError>)>>,
    /// Scrapes that stored a fixing (metrics).
    pub ok: std::sync::atomic::AtomicU64,
    /// Scrapes that failed (metrics).
    pub failed: std::sync::atomic::AtomicU64,
    /// The BoA client, reused across scrapes.
    client: std::sync::Mutex<Option<BoaClient>>,
}

/// Fetches the page, stores every official table that validates, logs the attempt.
/// With `force == false` a result younger than [`FETCH_REUSE`] is reused, and concurrent
/// callers wait for the one scrape in flight.
///
/// # Errors
/// [`FixingError`]; nothing is stored then.
pub async fn fetch(state: &AppState, force: bool) -> Result<FetchReport, FixingError> {
    let mut last = state.fetch_gate.last.lock().await;
    if !force {
        if let Some((at, result)) = last.as_ref() {
            if at.elapsed() < FETCH_REUSE {
                return result.clone();
            }
        }
    }
    let result = fetch_uncached(state).await;
    let counter = if result.is_ok() {
        &state.fetch_gate.ok
    } else {
        &state.fetch_gate.failed
    };
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    *last = Some((Instant::now(), result.clone()));
    result
}

async fn fetch_uncached(state: &AppState) -> Result<FetchReport, FixingError> {
    let config = state.config();
    let client = boa_client(state)?;
    let now = state.now();
    let today = state.today();
    let url = config.boa.url.to_string();
    let outcome = async {
        let page = client.fetch().await?;
        let parsed = boa::parse_page(&page.body)?;
        // The jump check compares a table with the previous fixing of its kind or, when none
        // is stored before its date, with the stored fixing of that same date: a revision of
        // the only stored fixing must not skip the check. A store failure fails the fetch.
        let previous = |kind: TableKind, date: NaiveDate| -> Result<Option<StoredTable>, store::Error> {
            let before = match date.pred_opt() {
                Some(d) => state.store.table_on_or_before(kind, d)?,
                None => None,
            };
            match before {
                Some(t) => Ok(Some(t)),
                None => state.store.table(kind, date),
            }
        };
        for table in &parsed.tables {
            let prev = previous(table.kind, table.date)?;
            let single = boa::ParsedPage { tables: vec![table.clone()] };
            let lookup = |code| prev.as_ref().and_then(|p| p.table.rate(code)).map(|r| r.published);
            boa::validate(&single, today, &lookup, config.boa.max_jump_percent)?;
        }
        let source = FixingSource::Page { url: page.url.clone(), sha256: page.sha256.clone(), fetched_at: now };
        let mut tables = Vec::new();
        for table in &parsed.tables {
            let o = state.store.put_table(table, &source, now)?;
            if o == TableOutcome::Revised {
                tracing::warn!(fixing_date = %table.date, table = table.kind.as_str(), "BoA published different rates for an already stored fixing; kept as a new revision");
            }
            supersede(state, table, &o, today)?;
            tables.push((table.kind, table.date, o));
        }
        Ok::<_, FixingError>(FetchReport { tables, url: page.url, sha256: page.sha256 })
    }
    .await;
    let record = match &outcome {
        Ok(r) => ScrapeRecord {
            at: now,
            url: r.url.clone(),
            success: true,
            fixing_dates: r.tables.iter().map(|(k, d, _)| (*k, *d)).collect(),
            outcome: r
                .tables
                .iter()
                .map(|(k, _, o)| format!("{}: {o:?}", k.as_str()).to_lowercase())
                .collect::<Vec<_>>()
                .join(", "),
        },
        Err(e) => ScrapeRecord {
            at: now,
            url: url.clone(),
            success: false,
            fixing_dates: vec![],
            outcome: e.to_string(),
        },
    };
    state.store.append_scrape(&record)?;
    state.store.flush().await?;
    match &outcome {
        Ok(r) => {
            tracing::info!(fixing_date = ?r.main_date(), url = %r.url, "BoA fixing fetched ({})", record.outcome)
        }
        Err(e) => tracing::warn!(url = %url, error = %e, "BoA scrape failed"),
    }
    outcome
}

// ------------------------------------------------------------------------------ in force

/// Why no fixing is in force on a date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoFixing {
    /// Nothing stored at all.
    Empty,
    /// After today (Europe/Tirane).
    Future { nearest: Option<NaiveDate> },
    /// Before the oldest stored fixing.
    BeforeHistory { oldest: NaiveDate },
    /// Today's fixing is not published yet.
    NotYetPublished { nearest: NaiveDate },
    /// A business day's fixing was never stored (e.g. the daemon was down).
    Missing { day: NaiveDate, nearest: NaiveDate },
}

impl NoFixing {
    /// The 422 answer naming the nearest fixing.
    pub fn to_api(&self, date: NaiveDate) -> ApiError {
        let (code, msg) = match self {
            NoFixing::Empty => ("no_fixing", format!("no BoA fixing is stored yet for {date}; run `boa-exchange fetch` or import the archive")),
            NoFixing::Future { nearest } => ("no_fixing", format!("{date} is in the future; the nearest fixing is {}", fmt_opt(*nearest))),
            NoFixing::BeforeHistory { oldest } => ("no_fixing", format!("no fixing is stored for {date}; the nearest fixing is {oldest} (import BoA's archive workbook for older dates)")),
            NoFixing::NotYetPublished { nearest } => ("not_yet_published", format!("the BoA fixing for {date} is not yet published; the nearest fixing is {nearest}")),
            NoFixing::Missing { day, nearest } => ("no_fixing", format!("no fixing is stored for business day {day}, so none is known to be in force on {date}; the nearest fixing is {nearest}")),
        };
        ApiError::unprocessable(code, msg)
    }
}

fn fmt_opt(d: Option<NaiveDate>) -> String {
    d.map(|d| d.to_string()).unwrap_or_else(|| "none".into())
}

/// The stored tables in force on a date.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The date asked for.
    pub date: NaiveDate,
    /// The main table in force.
    pub main: StoredTable,
    /// The minor table in force, if any is stored.
    pub minor: Option<StoredTable>,
}

impl Resolved {
    /// The rates in force.
    pub fn in_force(&self) -> InForce {
        let mut tables = vec![self.main.table.clone()];
        if let Some(m) = &self.minor {
            tables.push(m.table.clone());
        }
        rates_in_force(&tables, self.date)
    }
}

/// After storing `table`: a revision, or a fixing that arrived late (for a past date, or a
/// day already filled as a holiday), makes company rates computed without it stale. They
/// are marked not synced and the scheduler re-syncs them, so no superseded rate stays in a
/// ledger.
fn supersede(
    state: &AppState,
    table: &FixingTable,
    outcome: &TableOutcome,
    today: NaiveDate,
) -> Result<(), store::Error> {
    let revised = *outcome == TableOutcome::Revised;
    let mut late = false;
    if *outcome == TableOutcome::New && table.kind == TableKind::Main {
        let mut h = holidays(state)?;
        if h.remove(&table.date) {
            state.store.meta_put(META_HOLIDAYS, &h)?;
            late = true;
        }
    }
    if *outcome == TableOutcome::New && table.date < today {
        late = true;
    }
    if !(revised || late) {
        return Ok(());
    }
    let n = state
        .store
        .invalidate_rates(table.kind, table.date, revised)?;
    if n > 0 {
        tracing::warn!(fixing_date = %table.date, table = table.kind.as_str(), rates = n, "{n} synced company rates are superseded by the {} fixing of {}; they will be re-synced", table.kind.as_str(), table.date);
        state
            .resync_needed
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(())
}

/// Business days known to have had no fixing.
pub fn holidays(state: &AppState) -> Result<BTreeSet<NaiveDate>, store::Error> {
    Ok(state
        .store
        .meta_get::<BTreeSet<NaiveDate>>(META_HOLIDAYS)?
        .unwrap_or_default())
}

fn add_holidays(state: &AppState, days: &[NaiveDate]) -> Result<(), store::Error> {
    if days.is_empty() {
        return Ok(());
    }
    let mut h = holidays(state)?;
    h.extend(days.iter().copied());
    state.store.meta_put(META_HOLIDAYS, &h)
}

/// Records that business day `day` had no fixing (the poll gave up).
///
/// # Errors
/// Store failure.
pub fn mark_holiday(state: &AppState, day: NaiveDate) -> Result<(), store::Error> {
    add_holidays(state, &[day])
}

/// The fixing in force on `date` (SPEC §5 "Rate in force").
///
/// # Errors
/// `Err(Ok(NoFixing))` when none is; `Err(Err(store))` when the store fails.
pub fn resolve(
    state: &AppState,
    date: NaiveDate,
) -> Result<Resolved, Result<NoFixing, store::Error>> {
    let today = state.today();
    let main_le = |d| {
        state
            .store
            .table_on_or_before(TableKind::Main, d)
            .map_err(Err)
    };
    if date > today {
        let nearest = main_le(today)?.map(|t| t.table.date);
        return Err(Ok(NoFixing::Future { nearest }));
    }
    let Some(main) = main_le(date)? else {
        return Err(Ok(
            match state
                .store
                .table_after(TableKind::Main, date)
                .map_err(Err)?
            {
                Some(t) => NoFixing::BeforeHistory {
                    oldest: t.table.date,
                },
                None => NoFixing::Empty,
            },
        ));
    };
    if main.table.date != date {
        let holidays = holidays(state).map_err(Err)?;
        let config = state.config();
        let mut d = main.table.date;
        while d < date {
            d = d.succ_opt().unwrap_or(date);
            if !is_business_day(d) || holidays.contains(&d) {
                continue;
            }
            if (date - main.table.date).num_days() > MAX_GAP_DAYS {
                return Err(Ok(NoFixing::Missing {
                    day: d,
                    nearest: main.table.date,
                }));
            }
            if d == today {
                if polling_deadline_passed(
                    state.now(),
                    config.schedule.give_up_at,
                    config.schedule.timezone,
                ) {
                    continue; // no fixing by give_up_at: a holiday
                }
                return Err(Ok(NoFixing::NotYetPublished {
                    nearest: main.table.date,
                }));
            }
            return Err(Ok(NoFixing::Missing {
                day: d,
                nearest: main.table.date,
            }));
        }
    }
    let minor = state
        .store
        .table_on_or_before(TableKind::Minor, date)
        .map_err(Err)?;
    Ok(Resolved { date, main, minor })
}

/// The newest stored fixing on or before today, without business-day checks (what the page
/// itself would show now).
///
/// # Errors
/// Store failure.
pub fn latest(state: &AppState) -> Result<Option<Resolved>, store::Error> {
    let today = state.today();
    let Some(main) = state.store.table_on_or_before(TableKind::Main, today)? else {
        return Ok(None);
    };
    let minor = state.store.table_on_or_before(TableKind::Minor, today)?;
    Ok(Some(Resolved {
        date: today,
        main,
        minor,
    }))
}

/// Parses a `YYYY-MM-DD` parameter (400 otherwise).
///
/// # Errors
/// [`ApiError`] 400 `bad_date`.
pub fn parse_date(name: &str, s: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .ok()
        .filter(|_| s.trim().len() == 10)
        .ok_or_else(|| {
            ApiError::bad_request(
                "bad_date",
                format!("{name}: {s:?} is not a date (expected YYYY-MM-DD)"),
            )
        })
}

// ------------------------------------------------------------------------------ answers

fn table_json(state: &AppState, t: &StoredTable) -> Value {
    let tz = state.config().schedule.timezone;
    let published_at = t.table.published_time.and_then(|time| {
        t.table
            .date
            .and_time(time)
            .and_local_timezone(tz)
            .earliest()
            .map(|dt| {
                dt.fixed_offset()
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            })
    });
    json!({
        "table": t.table.kind.as_str(),
        "date": t.table.date.to_string(),
        "published_at": published_at,
        "revision": t.previous.len() + 1,
        "rates": t.table.rates.iter().map(|r| json!({
            "code": r.code.as_str(),
            "iso_code": r.iso_code().as_str(),
            "units": r.units,
            "published": r.published.to_string(),
            "per_unit": r.per_unit().to_string(),
        })).collect::<Vec<_>>(),
    })
}

fn source_json(s: &FixingSource) -> (Value, Value) {
    match s {
        FixingSource::Page { url, sha256, .. } => (json!(url), json!(sha256)),
        FixingSource::Workbook { file, sha256 } => {
            (json!(format!("workbook:{file}")), json!(sha256))
        }
    }
}

/// `GET /api/v1/rates?date=` and `rates [--date]`.
///
/// # Errors
/// 400 bad date, 422 no fixing in force (naming the nearest).
pub fn rates_answer(state: &AppState, date: Option<&str>) -> Result<Value, ApiError> {
    let resolved = match date {
        None => latest(state)?.ok_or_else(|| NoFixing::Empty.to_api(state.today()))?,
        Some(s) => {
            let d = parse_date("date", s)?;
            match resolve(state, d) {
                Ok(r) => r,
                Err(Ok(no)) => return Err(no.to_api(d)),
                Err(Err(e)) => return Err(e.into()),
            }
        }
    };
    let (url, sha) = source_json(&resolved.main.source);
    let mut tables = vec![table_json(state, &resolved.main)];
    if let Some(m) = &resolved.minor {
        tables.push(table_json(state, m));
    }
    Ok(json!({
        "success": true,
        "date": resolved.date.to_string(),
        "source_url": url,
        "page_sha256": sha,
        "tables": tables,
    }))
}

/// Stores workbook tables (never over a scraped fixing) and records the business days the
/// workbook shows had no fixing as holidays.
///
/// # Errors
/// Store failure.
pub async fn import_tables(
    state: &AppState,
    file: &str,
    sha256: &str,
    tables: &[FixingTable],
) -> Result<Value, ApiError> {
    let source = FixingSource::Workbook {
        file: file.to_string(),
        sha256: sha256.to_string(),
    };
    let now = Utc::now();
    let (mut imported, mut skipped) = (0, 0);
    let mut dates: BTreeSet<NaiveDate> = BTreeSet::new();
    for t in tables {
        if t.rates
            .iter()
            .any(|r| r.published <= Decimal::ZERO || r.units == 0)
        {
            return Err(ApiError::bad_request(
                "bad_workbook",
                format!("{file}: a non-positive rate on {}", t.date),
            ));
        }
        if t.date > state.today() {
            return Err(ApiError::bad_request(
                "bad_workbook",
                format!("{file}: {} is in the future", t.date),
            ));
        }
    }
    for t in tables {
        dates.insert(t.date);
        match state.store.put_table(t, &source, now)? {
            TableOutcome::New => imported += 1,
            _ => skipped += 1,
        }
    }
    let mut gaps = Vec::new();
    if let (Some(first), Some(last)) = (dates.first().copied(), dates.last().copied()) {
        let mut d = first;
        while d < last {
            if is_business_day(d)
                && !dates.contains(&d)
                && state.store.table(TableKind::Main, d)?.is_none()
            {
                gaps.push(d);
            }
            d = d.succ_opt().unwrap_or(last);
        }
    }
    add_holidays(state, &gaps)?;
    state.store.flush().await?;
    tracing::info!(file, imported, skipped, "imported BoA workbook");
    Ok(json!({
        "success": true,
        "file": file,
        "imported": imported,
        "skipped": skipped,
        "first_date": dates.first().map(|d| d.to_string()),
        "last_date": dates.last().map(|d| d.to_string()),
        "holidays": gaps.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        "message": format!("imported {imported} fixings from {file} ({skipped} already stored)"),
    }))
}

/// The path of BoA's yearly workbook index (the site's own spelling), on the page's host.
pub const ARCHIVE_INDEX_PATH: &str = "/Markets/Official_exchange_rate/Exchage_rate_archive/";

/// The BoA client for the current config, built once and reused (one connection pool)
/// until a reload changes `boa.url` or `boa.timeout_secs`.
fn boa_client(state: &AppState) -> Result<BoaClient, FetchError> {
    let config = state.config();
    let mut cc = BoaClientConfig::new(config.boa.url.as_str());
    cc.timeout = Duration::from_secs(config.boa.timeout_secs);
    let mut cached = match state.fetch_gate.client.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if let Some(c) = cached.as_ref().filter(|c| *c.config() == cc) {
        return Ok(c.clone());
    }
    let c = BoaClient::new(cc)?;
    *cached = Some(c.clone());
    Ok(c)
}

async fn archive_links(state: &AppState) -> Result<Vec<boa::WorkbookLink>, ApiError> {
    let index = state
        .config()
        .boa
        .url
        .join(ARCHIVE_INDEX_PATH)
        .map_err(ApiError::internal)?;
    let page = boa_client(state)
        .map_err(|e| ApiError::from(FixingError::from(e)))?
        .fetch_url(index.as_str())
        .await
        .map_err(|e| ApiError::from(FixingError::from(e)))?;
    let base = url::Url::parse(&page.url).unwrap_or(index);
    Ok(boa::parse_archive_index(&page.body, &base))
}

/// `import-archive --list`: the yearly workbooks BoA's archive index links to.
///
/// # Errors
/// 502 when the index cannot be fetched.
pub async fn archive_index(state: &AppState) -> Result<Value, ApiError> {
    let links = archive_links(state).await?;
    Ok(json!({
        "success": true,
        "workbooks": links.iter().map(|l| json!({"year": l.year, "name": l.name, "url": l.url})).collect::<Vec<_>>(),
    }))
}

/// `import-archive --year YYYY`: downloads that year's workbook from BoA and imports it.
///
/// # Errors
/// 404 when the index lists no workbook for the year; 502 when BoA fails; 400 when the
/// workbook cannot be read.
pub async fn import_year(state: &AppState, year: i32) -> Result<Value, ApiError> {
    let links = archive_links(state).await?;
    let link = links.iter().find(|l| l.year == Some(year)).ok_or_else(|| {
        ApiError::new(
            404,
            "no_workbook",
            format!("BoA's archive index lists no workbook for {year}"),
        )
    })?;
    let file = boa_client(state)
        .map_err(|e| ApiError::from(FixingError::from(e)))?
        .fetch_bytes(&link.url)
        .await
        .map_err(|e| ApiError::from(FixingError::from(e)))?;
    let tables = boa::read_workbook(&file.bytes)
        .map_err(|e| ApiError::bad_request("bad_workbook", format!("{}: {e}", link.name)))?;
    import_tables(state, &link.name, &file.sha256, &tables).await
}

/// Recent scrape attempts (global log).
///
/// # Errors
/// Store failure.
pub fn scrapes_json(state: &AppState, limit: usize) -> Result<Value, ApiError> {
    let recs = state.store.scrapes(limit)?;
    Ok(json!(recs
        .iter()
        .map(|r| json!({
            "at": ts(r.at),
            "url": r.url,
            "success": r.success,
            "outcome": r.outcome,
            "fixing_dates": r.fixing_dates.iter().map(|(k, d)| json!({"table": k.as_str(), "date": d.to_string()})).collect::<Vec<_>>(),
        }))
        .collect::<Vec<_>>()))
}
