//! The BoA fixing archive as the daemon uses it ([`Archive`]): fetch → parse → validate →
//! store (one scrape serves every company), the rule for which fixing is in force on a date
//! (SPEC §5 "Rate in force"), holidays learnt by observation, and workbook history import.
//!
//! Owns the decisions "is there a rate for date D?" and "may this page be stored?". It does
//! not talk to QuickBooks and builds no answers (that is `ops::rates`).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use rust_decimal::Decimal;

use crate::boa::{self, BoaClient, BoaClientConfig, FetchError, WorkbookLink};
use crate::config::{current, Config, ConfigWatch};
use crate::fixing::{FixingSource, FixingTable, TableKind};
use crate::locks::lock;
use crate::metrics::Metrics;
use crate::rates::{rates_in_force, InForce};
use crate::store::records::{ScrapeRecord, StoredTable};
use crate::store::{self, Store, TableOutcome};
use crate::time::calendar::{is_business_day, local_date, polling_deadline_passed};
use crate::time::clock::Clock;

/// A scrape finished within this long is reused instead of fetching again (automatic
/// fetches only; `fetch` from an admin always goes to BoA).
pub const FETCH_REUSE: Duration = Duration::from_secs(60);

/// How far back a missing business-day fixing is looked for before giving up.
const MAX_GAP_DAYS: i64 = 45;

const META_HOLIDAYS: &str = "holidays";

/// The path of BoA's yearly workbook index (the site's own spelling), on the page's host.
pub const ARCHIVE_INDEX_PATH: &str = "/Markets/Official_exchange_rate/Exchage_rate_archive/";

/// Why no fixing is in force on a date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoFixing {
    /// Nothing stored at all.
    Empty,
    /// After today (Europe/Tirane).
    Future {
        /// The newest fixing on or before today.
        nearest: Option<NaiveDate>,
    },
    /// Before the oldest stored fixing.
    BeforeHistory {
        /// The oldest stored fixing.
        oldest: NaiveDate,
    },
    /// Today's fixing is not published yet.
    NotYetPublished {
        /// The newest stored fixing.
        nearest: NaiveDate,
    },
    /// A business day's fixing was never stored (e.g. the daemon was down).
    Missing {
        /// The business day without a fixing.
        day: NaiveDate,
        /// The newest fixing before it.
        nearest: NaiveDate,
    },
}

impl NoFixing {
    /// The explanation for `date`, naming the nearest fixing.
    pub fn message(&self, date: NaiveDate) -> String {
        let opt = |d: Option<NaiveDate>| d.map(|d| d.to_string()).unwrap_or_else(|| "none".into());
        match self {
            NoFixing::Empty => format!("no BoA fixing is stored yet for {date}; run `boa-exchange fetch` or import the archive"),
            NoFixing::Future { nearest } => format!("{date} is in the future; the nearest fixing is {}", opt(*nearest)),
            NoFixing::BeforeHistory { oldest } => format!("no fixing is stored for {date}; the nearest fixing is {oldest} (import BoA's archive workbook for older dates)"),
            NoFixing::NotYetPublished { nearest } => format!("the BoA fixing for {date} is not yet published; the nearest fixing is {nearest}"),
            NoFixing::Missing { day, nearest } => format!("no fixing is stored for business day {day}, so none is known to be in force on {date}; the nearest fixing is {nearest}"),
        }
    }
}

/// What went wrong in the archive, in its own words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// BoA could not be reached or answered an error.
    #[error("fetching the BoA page: {0}")]
    Fetch(String),
    /// The page did not parse (changed or broken layout).
    #[error("the BoA page could not be read: {0}")]
    Parse(String),
    /// The fixing failed validation.
    #[error("the BoA fixing was refused: {0}")]
    Invalid(String),
    /// No fixing is in force on `date`.
    #[error("{}", why.message(*date))]
    NoFixing {
        /// The date asked for.
        date: NaiveDate,
        /// Why there is none.
        why: NoFixing,
    },
    /// A workbook that cannot be imported.
    #[error("{0}")]
    BadWorkbook(String),
    /// BoA's index lists no workbook for the year.
    #[error("BoA's archive index lists no workbook for {0}")]
    NoWorkbook(i32),
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
    /// The store cannot be reached right now (the PostgreSQL server is away): nothing was
    /// done; retry later.
    #[error("the store is unavailable: {0}")]
    StoreUnavailable(String),
}

impl From<FetchError> for Error {
    fn from(e: FetchError) -> Self {
        Error::Fetch(e.to_string())
    }
}
impl From<boa::ParseError> for Error {
    fn from(e: boa::ParseError) -> Self {
        Error::Parse(e.to_string())
    }
}
impl From<boa::ValidationError> for Error {
    fn from(e: boa::ValidationError) -> Self {
        Error::Invalid(e.to_string())
    }
}
impl From<store::Error> for Error {
    fn from(e: store::Error) -> Self {
        if e.is_unavailable() {
            return Error::StoreUnavailable(e.to_string());
        }
        Error::Store(e.to_string())
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

/// What a workbook import stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// The workbook's name.
    pub file: String,
    /// Tables stored.
    pub imported: usize,
    /// Tables already stored (never overwritten by a workbook).
    pub skipped: usize,
    /// First and last fixing dates in the workbook.
    pub first_date: Option<NaiveDate>,
    /// Last fixing date.
    pub last_date: Option<NaiveDate>,
    /// Business days the workbook shows had no fixing.
    pub holidays: Vec<NaiveDate>,
}

type LastFetch = Option<(Instant, Result<FetchReport, Error>)>;

/// The fixing archive service.
pub struct Archive {
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    config: ConfigWatch,
    metrics: Arc<Metrics>,
    /// Single flight for scrapes: the last result and when it finished.
    last: tokio::sync::Mutex<LastFetch>,
    /// The BoA client, reused across scrapes until the config changes it (one pool).
    client: Mutex<Option<BoaClient>>,
    /// Set when synced rates were superseded (a revised or late fixing); the scheduler
    /// takes it and runs a catch-up.
    resync_needed: AtomicBool,
}

impl Archive {
    /// The archive over `store`.
    pub fn new(
        store: Arc<Store>,
        clock: Arc<dyn Clock>,
        config: ConfigWatch,
        metrics: Arc<Metrics>,
    ) -> Self {
        Archive {
            store,
            clock,
            config,
            metrics,
            last: tokio::sync::Mutex::new(None),
            client: Mutex::new(None),
            resync_needed: AtomicBool::new(false),
        }
    }

    fn config(&self) -> Arc<Config> {
        current(&self.config)
    }

    /// Today in the configured zone.
    pub fn today(&self) -> NaiveDate {
        local_date(self.clock.now(), self.config().schedule.timezone)
    }

    /// Takes the "superseded rates need a re-sync" flag.
    pub fn take_resync_needed(&self) -> bool {
        self.resync_needed.swap(false, Ordering::Relaxed)
    }

    /// Fetches the page, stores every official table that validates, logs the attempt.
    /// With `force == false` a result younger than [`FETCH_REUSE`] is reused, and
    /// concurrent callers wait for the one scrape in flight.
    ///
    /// # Errors
    /// Fetch, parse, validation or store failure; nothing is stored then.
    pub async fn fetch(&self, force: bool) -> Result<FetchReport, Error> {
        let mut last = self.last.lock().await;
        if !force {
            if let Some((at, result)) = last.as_ref() {
                if at.elapsed() < FETCH_REUSE {
                    return result.clone();
                }
            }
        }
        let result = self.fetch_uncached().await;
        self.metrics.scrape(result.is_ok());
        *last = Some((Instant::now(), result.clone()));
        result
    }

    async fn fetch_uncached(&self) -> Result<FetchReport, Error> {
        let config = self.config();
        let now = self.clock.now();
        let today = self.today();
        let url = config.boa.url.to_string();
        let outcome = async {
            let page = self.boa_client()?.fetch().await?;
            // HTML parsing is CPU work: off the async workers.
            let parsed = boa::parse_page_blocking(page.body).await?;
            for table in &parsed.tables {
                let prev = self.previous_table(table.kind, table.date).await?;
                let single = boa::ParsedPage { tables: vec![table.clone()] };
                let lookup = |code| prev.as_ref().and_then(|p| p.table.rate(code)).map(|r| r.published);
                boa::validate(&single, today, &lookup, config.boa.max_jump_percent)?;
            }
            let source = FixingSource::Page { url: page.url.clone(), sha256: page.sha256.clone(), fetched_at: now };
            let mut tables = Vec::new();
            for table in &parsed.tables {
                let o = self.store.put_table(table, &source, now).await?;
                if o == TableOutcome::Revised {
                    tracing::warn!(fixing_date = %table.date, table = table.kind.as_str(), "BoA published different rates for an already stored fixing; kept as a new revision");
                }
                self.supersede(table, &o, today).await?;
                tables.push((table.kind, table.date, o));
            }
            Ok::<_, Error>(FetchReport { tables, url: page.url, sha256: page.sha256 })
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
        self.store.append_scrape(&record).await?;
        self.store.flush().await?;
        match &outcome {
            Ok(r) => {
                tracing::info!(fixing_date = ?r.main_date(), url = %r.url, "BoA fixing fetched ({})", record.outcome)
            }
            Err(e) => tracing::warn!(url = %url, error = %e, "BoA scrape failed"),
        }
        outcome
    }

    /// The fixing a new table's jumps are checked against: the previous fixing of its kind,
    /// or, when none is stored before its date, the stored fixing of that same date (a
    /// revision of the only stored fixing must not skip the check).
    async fn previous_table(
        &self,
        kind: TableKind,
        date: NaiveDate,
    ) -> Result<Option<StoredTable>, store::Error> {
        let before = match date.pred_opt() {
            Some(d) => self.store.table_on_or_before(kind, d).await?,
            None => None,
        };
        match before {
            Some(t) => Ok(Some(t)),
            None => self.store.table(kind, date).await,
        }
    }

    /// After storing `table`: a revision, or a fixing that arrived late (for a past date, or
    /// a day already filled as a holiday), makes company rates computed without it stale.
    /// They are marked not synced and the scheduler re-syncs them, so no superseded rate
    /// stays in a ledger.
    async fn supersede(
        &self,
        table: &FixingTable,
        outcome: &TableOutcome,
        today: NaiveDate,
    ) -> Result<(), store::Error> {
        let revised = *outcome == TableOutcome::Revised;
        let mut late = false;
        if *outcome == TableOutcome::New && table.kind == TableKind::Main {
            let mut h = self.holidays().await?;
            if h.remove(&table.date) {
                self.store.meta_put(META_HOLIDAYS, &h).await?;
                late = true;
            }
        }
        if *outcome == TableOutcome::New && table.date < today {
            late = true;
        }
        if !(revised || late) {
            return Ok(());
        }
        let n = self
            .store
            .invalidate_rates(table.kind, table.date, revised)
            .await?;
        if n > 0 {
            tracing::warn!(fixing_date = %table.date, table = table.kind.as_str(), rates = n, "{n} synced company rates are superseded by the {} fixing of {}; they will be re-synced", table.kind.as_str(), table.date);
            self.resync_needed.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Business days known to have had no fixing.
    ///
    /// # Errors
    /// Store failure.
    pub async fn holidays(&self) -> Result<BTreeSet<NaiveDate>, store::Error> {
        Ok(self
            .store
            .meta_get::<BTreeSet<NaiveDate>>(META_HOLIDAYS)
            .await?
            .unwrap_or_default())
    }

    async fn add_holidays(&self, days: &[NaiveDate]) -> Result<(), store::Error> {
        if days.is_empty() {
            return Ok(());
        }
        let mut h = self.holidays().await?;
        h.extend(days.iter().copied());
        self.store.meta_put(META_HOLIDAYS, &h).await
    }

    /// Records that business day `day` had no fixing (the poll gave up).
    ///
    /// # Errors
    /// Store failure.
    pub async fn mark_holiday(&self, day: NaiveDate) -> Result<(), store::Error> {
        self.add_holidays(&[day]).await
    }

    /// Whether the main fixing of `date` is stored.
    pub async fn has_main(&self, date: NaiveDate) -> bool {
        matches!(self.store.table(TableKind::Main, date).await, Ok(Some(_)))
    }

    /// The fixing in force on `date` (SPEC §5 "Rate in force").
    ///
    /// # Errors
    /// [`Error::NoFixing`] when none is; [`Error::Store`] when the store fails.
    pub async fn resolve(&self, date: NaiveDate) -> Result<Resolved, Error> {
        let no = |why| Error::NoFixing { date, why };
        let today = self.today();
        let main_le = |d| self.store.table_on_or_before(TableKind::Main, d);
        if date > today {
            let nearest = main_le(today).await?.map(|t| t.table.date);
            return Err(no(NoFixing::Future { nearest }));
        }
        let Some(main) = main_le(date).await? else {
            return Err(no(
                match self.store.table_after(TableKind::Main, date).await? {
                    Some(t) => NoFixing::BeforeHistory {
                        oldest: t.table.date,
                    },
                    None => NoFixing::Empty,
                },
            ));
        };
        if main.table.date != date {
            let holidays = self.holidays().await?;
            let config = self.config();
            let mut d = main.table.date;
            while d < date {
                d = d.succ_opt().unwrap_or(date);
                if !is_business_day(d) || holidays.contains(&d) {
                    continue;
                }
                if (date - main.table.date).num_days() > MAX_GAP_DAYS {
                    return Err(no(NoFixing::Missing {
                        day: d,
                        nearest: main.table.date,
                    }));
                }
                if d == today {
                    if polling_deadline_passed(
                        self.clock.now(),
                        config.schedule.give_up_at,
                        config.schedule.timezone,
                    ) {
                        continue; // no fixing by give_up_at: a holiday
                    }
                    return Err(no(NoFixing::NotYetPublished {
                        nearest: main.table.date,
                    }));
                }
                return Err(no(NoFixing::Missing {
                    day: d,
                    nearest: main.table.date,
                }));
            }
        }
        let minor = self
            .store
            .table_on_or_before(TableKind::Minor, date)
            .await?;
        Ok(Resolved { date, main, minor })
    }

    /// The newest stored fixing on or before today, without business-day checks (what the
    /// page itself would show now).
    ///
    /// # Errors
    /// Store failure.
    pub async fn latest(&self) -> Result<Option<Resolved>, store::Error> {
        let today = self.today();
        let Some(main) = self
            .store
            .table_on_or_before(TableKind::Main, today)
            .await?
        else {
            return Ok(None);
        };
        let minor = self
            .store
            .table_on_or_before(TableKind::Minor, today)
            .await?;
        Ok(Some(Resolved {
            date: today,
            main,
            minor,
        }))
    }

    /// The default rate date: today, or the newest fixing's date while today's is not yet
    /// published.
    pub async fn default_date(&self) -> NaiveDate {
        let today = self.today();
        match self.resolve(today).await {
            Err(Error::NoFixing {
                why: NoFixing::NotYetPublished { nearest },
                ..
            }) => nearest,
            _ => today,
        }
    }

    /// Stores workbook tables (never over a scraped fixing) and records the business days
    /// the workbook shows had no fixing as holidays. Flushed before it returns.
    ///
    /// # Errors
    /// [`Error::BadWorkbook`] for a non-positive rate or a future date (nothing stored);
    /// store failure.
    pub async fn import_tables(
        &self,
        file: &str,
        sha256: &str,
        tables: &[FixingTable],
    ) -> Result<ImportReport, Error> {
        let source = FixingSource::Workbook {
            file: file.to_string(),
            sha256: sha256.to_string(),
        };
        let now = self.clock.now();
        let today = self.today();
        for t in tables {
            if t.rates
                .iter()
                .any(|r| r.published <= Decimal::ZERO || r.units == 0)
            {
                return Err(Error::BadWorkbook(format!(
                    "{file}: a non-positive rate on {}",
                    t.date
                )));
            }
            if t.date > today {
                return Err(Error::BadWorkbook(format!(
                    "{file}: {} is in the future",
                    t.date
                )));
            }
        }
        let (mut imported, mut skipped) = (0, 0);
        let mut dates: BTreeSet<NaiveDate> = BTreeSet::new();
        for t in tables {
            dates.insert(t.date);
            match self.store.put_table(t, &source, now).await? {
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
                    && self.store.table(TableKind::Main, d).await?.is_none()
                {
                    gaps.push(d);
                }
                d = d.succ_opt().unwrap_or(last);
            }
        }
        self.add_holidays(&gaps).await?;
        self.store.flush().await?;
        tracing::info!(file, imported, skipped, "imported BoA workbook");
        Ok(ImportReport {
            file: file.to_string(),
            imported,
            skipped,
            first_date: dates.first().copied(),
            last_date: dates.last().copied(),
            holidays: gaps,
        })
    }

    /// The BoA client for the current config, built once and reused (one connection pool)
    /// until a reload changes `boa.url` or `boa.timeout_secs`.
    fn boa_client(&self) -> Result<BoaClient, FetchError> {
        let config = self.config();
        let mut cc = BoaClientConfig::new(config.boa.url.as_str());
        cc.timeout = Duration::from_secs(config.boa.timeout_secs);
        let mut cached = lock(&self.client);
        if let Some(c) = cached.as_ref().filter(|c| *c.config() == cc) {
            return Ok(c.clone());
        }
        let c = BoaClient::new(cc, self.clock.clone())?;
        *cached = Some(c.clone());
        Ok(c)
    }

    /// The yearly workbooks BoA's archive index links to.
    ///
    /// # Errors
    /// [`Error::Fetch`] when the index cannot be fetched.
    pub async fn workbook_links(&self) -> Result<Vec<WorkbookLink>, Error> {
        let index = self
            .config()
            .boa
            .url
            .join(ARCHIVE_INDEX_PATH)
            .map_err(|e| Error::Fetch(format!("archive index address: {e}")))?;
        let page = self.boa_client()?.fetch_url(index.as_str()).await?;
        let base = url::Url::parse(&page.url).unwrap_or(index);
        Ok(boa::parse_archive_index_blocking(page.body, base).await)
    }

    /// Downloads `year`'s workbook from BoA and imports it.
    ///
    /// # Errors
    /// [`Error::NoWorkbook`] when the index lists none; fetch failures; a workbook that
    /// cannot be read.
    pub async fn import_year(&self, year: i32) -> Result<ImportReport, Error> {
        let links = self.workbook_links().await?;
        let link = links
            .iter()
            .find(|l| l.year == Some(year))
            .ok_or(Error::NoWorkbook(year))?;
        let file = self.boa_client()?.fetch_bytes(&link.url).await?;
        // xlsx decoding is CPU work: off the async workers.
        let tables = boa::read_workbook_blocking(file.bytes)
            .await
            .map_err(|e| Error::BadWorkbook(format!("{}: {e}", link.name)))?;
        self.import_tables(&link.name, &file.sha256, &tables).await
    }

    /// Recent scrape attempts (global log), newest first.
    ///
    /// # Errors
    /// Store failure.
    pub async fn scrapes(&self, limit: usize) -> Result<Vec<ScrapeRecord>, store::Error> {
        self.store.scrapes(limit).await
    }
}

impl Error {
    /// The snake_case name of the error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Fetch(_) => "boa_unavailable",
            Error::Parse(_) => "boa_page_changed",
            Error::Invalid(_) => "boa_fixing_refused",
            Error::NoFixing {
                why: NoFixing::NotYetPublished { .. },
                ..
            } => "not_yet_published",
            Error::NoFixing { .. } => "no_fixing",
            Error::BadWorkbook(_) => "bad_workbook",
            Error::NoWorkbook(_) => "no_workbook",
            Error::Store(_) => "internal_error",
            Error::StoreUnavailable(_) => "store_unavailable",
        }
    }
}
