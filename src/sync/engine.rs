//! The sync engine (SPEC §5): for a company and a date, obtain the fixing in force, compute
//! the company's rates, read what QuickBooks holds (one metered read), write each currency
//! that differs (deterministic `requestid`, several at once), ride out 401/429/5xx with
//! bounded retries, and record every attempt — all flushed before the answer. A sync-all
//! runs companies with bounded, adaptive concurrency, one run at a time.
//!
//! The engine owns its parts ([`SyncEngine`]'s fields) and answers in [`Error`]; it builds
//! no HTTP answers (that is `ops::sync`).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::backfill::{self, Backfill, FailedWrite, Skipped};
use super::error::{upstream, Error};
use super::plan::{self, Action, Drift, Held, Holdings, Step, Want};
use crate::alerts::Alerts;
use crate::archive::{self, Archive, NoFixing};
use crate::config::{current, Config, ConfigWatch};
use crate::currency::Currency;
use crate::fixing::TableKind;
use crate::locks::{lock, KeyLock, KeyedLocks};
use crate::metrics::{CallKind, Metrics};
use crate::qbo::model::rate_body;
use crate::qbo::tokens::{TokenError, TokenManager};
use crate::qbo::{self, QboClient, Traced, PAGE_SIZE};
use crate::rates::{company_rates, InForce};
use crate::store::records::{
    Company, CompanyRate as StoredRate, Connection, DriftDetail, DriftPolicy, LogKind, LogRecord,
};
use crate::store::Store;
use crate::time::clock::Clock;

/// Company currencies and preferences are re-read after this long.
pub const CURRENCY_CACHE: chrono::Duration = chrono::Duration::hours(24);
/// Retries after 429 within one call.
const MAX_THROTTLE_RETRIES: u32 = 3;
/// Retries after 5xx/network within one call.
const MAX_TRANSIENT_RETRIES: u32 = 3;
/// Longest wait honoured for a Retry-After.
const MAX_RETRY_AFTER: u64 = 120;
/// The routine read covers this many dates ending with the sync's date (D-6…D): drift in
/// any of them is found by the same one metered read.
pub const DRIFT_WINDOW_DAYS: i64 = 7;
/// A drift of the same company and currency within this long of the previous one alerts.
const DRIFT_REPEAT: chrono::Duration = chrono::Duration::days(7);
/// Log records looked at for an earlier drift (newest first).
const DRIFT_LOOKBACK_RECORDS: usize = 1000;
/// Default of `quickbooks.writes_in_flight_per_company` (Intuit allows 10 per realm).
pub const DEFAULT_WRITES_IN_FLIGHT: usize = 4;

/// Progress of the sync-all in flight (for `status`).
#[derive(Debug, Default)]
pub struct Progress {
    /// Companies in the run.
    pub total: AtomicUsize,
    /// Finished so far.
    pub done: AtomicUsize,
    /// Failed so far.
    pub failed: AtomicUsize,
}

/// Which companies a sync-all covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every active, sync-enabled, connected company.
    All,
    /// Those, restricted to companies that want weekend/holiday dates filled.
    FillNonBusinessDays,
}

/// What one company sync did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Realm.
    pub realm: String,
    /// Display name.
    pub company_name: String,
    /// Rate date.
    pub date: NaiveDate,
    /// Currencies equal in QuickBooks after the call.
    pub rates_synced: usize,
    /// Writes made.
    pub rates_written: usize,
    /// Already equal.
    pub rates_unchanged: usize,
    /// Set when the sync failed.
    pub error: Option<Error>,
    /// 429 and 5xx answers met on the way (for the adaptive sync-all level).
    pub pressure: u32,
}

/// One company's line of a sync-all, borrowed from its [`RunReport`].
#[derive(Debug, Clone, Copy)]
pub struct RunEntry<'a> {
    /// Realm.
    pub realm: &'a str,
    /// Display name.
    pub company_name: &'a str,
    /// Currencies equal in QuickBooks after the call.
    pub rates_synced: usize,
    /// Writes made.
    pub rates_written: usize,
    /// Already equal.
    pub rates_unchanged: usize,
    /// Set when that company failed.
    pub error: Option<&'a Error>,
}

/// The companies of a sync-all and their results, packed (BENCHMARKS.md, issue 15): every
/// realm and name back to back in one string and a small fixed-size result per company,
/// ~80 B per company instead of ~290 B for a list of `(realm, name)` strings plus a
/// `Vec` of owned lines (≈ 20 MB less at 100,000 companies, most of it held to the end of
/// the run; the measured peak RSS fell by 14-16 MiB).
#[derive(Debug, Clone, Default)]
pub struct RunEntries {
    /// Every company's realm, then its name, back to back.
    text: String,
    /// Where each company's realm and name end in `text`.
    ends: Vec<(usize, usize)>,
    /// Each company's result, by position (filled as the syncs finish).
    results: Vec<Slot>,
}

/// One company's result: counts, and what most companies do not have (a failure, or a
/// name that changed during the run) boxed.
#[derive(Debug, Clone, Default)]
struct Slot {
    done: bool,
    rates_synced: u32,
    rates_written: u32,
    rates_unchanged: u32,
    rare: Option<Box<Rare>>,
}

#[derive(Debug, Clone)]
struct Rare {
    /// The name the sync read, when it is not the one listed.
    name: Option<String>,
    error: Option<Error>,
}

/// A count as stored in a [`Slot`] (a company's rate counts are far below `u32::MAX`).
fn count32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl RunEntries {
    /// Lists a company (its result not yet known).
    pub fn push(&mut self, realm: &str, name: &str) {
        self.text.push_str(realm);
        let realm_end = self.text.len();
        self.text.push_str(name);
        self.ends.push((realm_end, self.text.len()));
        self.results.push(Slot::default());
    }

    fn start(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.ends[i - 1].1
        }
    }

    fn realm(&self, i: usize) -> &str {
        &self.text[self.start(i)..self.ends[i].0]
    }

    fn listed_name(&self, i: usize) -> &str {
        &self.text[self.ends[i].0..self.ends[i].1]
    }

    /// Companies listed.
    fn listed(&self) -> usize {
        self.ends.len()
    }

    /// Records the result of the `i`-th company listed (`counts`: rates synced, written,
    /// unchanged).
    pub fn finish(
        &mut self,
        i: usize,
        name: String,
        counts: (usize, usize, usize),
        error: Option<Error>,
    ) {
        let name = (name != self.listed_name(i)).then_some(name);
        self.results[i] = Slot {
            done: true,
            rates_synced: count32(counts.0),
            rates_written: count32(counts.1),
            rates_unchanged: count32(counts.2),
            rare: (name.is_some() || error.is_some()).then(|| Box::new(Rare { name, error })),
        };
    }

    /// Companies with a result.
    pub fn len(&self) -> usize {
        self.results.iter().filter(|s| s.done).count()
    }

    /// Whether no company has a result.
    pub fn is_empty(&self) -> bool {
        !self.results.iter().any(|s| s.done)
    }

    /// The lines, one per company with a result, in the order of the store.
    pub fn iter(&self) -> impl Iterator<Item = RunEntry<'_>> + '_ {
        self.results
            .iter()
            .enumerate()
            .filter(|(_, s)| s.done)
            .map(|(i, s)| {
                let rare = s.rare.as_deref();
                RunEntry {
                    realm: self.realm(i),
                    company_name: rare
                        .and_then(|r| r.name.as_deref())
                        .unwrap_or_else(|| self.listed_name(i)),
                    rates_synced: s.rates_synced as usize,
                    rates_written: s.rates_written as usize,
                    rates_unchanged: s.rates_unchanged as usize,
                    error: rare.and_then(|r| r.error.as_ref()),
                }
            })
    }
}

/// A finished sync-all.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Rate date.
    pub date: NaiveDate,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
    /// Companies in the run.
    pub total: usize,
    /// Companies synced.
    pub successful: usize,
    /// Companies that failed.
    pub failed: usize,
    /// Wall time.
    pub seconds: f64,
    /// One line per company, in the order of the store.
    pub entries: RunEntries,
    /// Company records that could not be decoded (their keys): skipped, so the run counts
    /// as failed for them.
    pub bad_records: Vec<String>,
}

/// A finished sync-all without its lines (kept for `status` and metrics).
#[derive(Debug, Clone)]
pub struct LastRun {
    /// Rate date.
    pub date: NaiveDate,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
    /// Companies synced.
    pub successful: usize,
    /// Companies that failed.
    pub failed: usize,
    /// Wall time.
    pub seconds: f64,
}

type RunResult = Result<Arc<RunReport>, Error>;
/// The sync-all in flight: its date and a receiver of its result.
type Running = Option<(NaiveDate, Scope, watch::Receiver<Option<RunResult>>)>;

/// Additive increase, multiplicative decrease of the companies a sync-all runs at once. A
/// company is "pressured" when QuickBooks throttled it (429) or it failed with 429/5xx after
/// the retries. A run of [`Aimd::RUN`] pressured companies in a row, while at least half of
/// the latest completions (the last `level`, at least [`Aimd::RUN`]) were pressured, halves
/// the level (at most once per `level` completions, so one burst of concurrent failures
/// counts once); every `level` clean completions since the level last changed raise it by
/// one, up to the configured maximum. Pressured companies scattered among clean ones
/// (Intuit's per-realm limits, a few 429s of a busy realm) do not lower it and do not hold
/// back its recovery: the limits are per company, not per app, and fewer companies in flight
/// would only slow the run.
#[derive(Debug)]
struct Aimd {
    level: usize,
    max: usize,
    /// Clean completions since the level last changed.
    clean: usize,
    /// Pressured completions in a row.
    run: usize,
    since_decrease: usize,
    /// The latest completions, newest last (`true`: pressured); at most `max` kept.
    recent: std::collections::VecDeque<bool>,
}

impl Aimd {
    /// Pressured companies in a row that make a decrease.
    const RUN: usize = 3;

    fn new(max: usize) -> Self {
        Aimd {
            level: max.max(1),
            max: max.max(1),
            clean: 0,
            run: 0,
            // The first run of pressure halves at once.
            since_decrease: max.max(1),
            recent: std::collections::VecDeque::with_capacity(max.max(Self::RUN)),
        }
    }

    fn record(&mut self, pressured: bool) {
        self.since_decrease += 1;
        if self.recent.len() == self.max.max(Self::RUN) {
            self.recent.pop_front();
        }
        self.recent.push_back(pressured);
        if pressured {
            self.run += 1;
            if self.run >= Self::RUN && self.since_decrease >= self.level && self.mostly_pressured()
            {
                self.level = (self.level / 2).max(1);
                self.since_decrease = 0;
                self.run = 0;
                self.clean = 0;
            }
        } else {
            self.run = 0;
            self.clean += 1;
            if self.clean >= self.level && self.level < self.max {
                self.level += 1;
                self.clean = 0;
            }
        }
    }

    /// At least half of the last `level` completions (at least [`Aimd::RUN`]) were pressured.
    fn mostly_pressured(&self) -> bool {
        let window = self.level.max(Self::RUN).min(self.recent.len());
        let pressured = self
            .recent
            .iter()
            .rev()
            .take(window)
            .filter(|p| **p)
            .count();
        pressured * 2 >= window
    }
}

/// What the engine is built from.
pub struct Parts {
    /// The store.
    pub store: Arc<Store>,
    /// Access tokens per company.
    pub tokens: Arc<TokenManager>,
    /// The HTTP client for QuickBooks (one pool for every company).
    pub http: reqwest::Client,
    /// The fixing archive.
    pub archive: Arc<Archive>,
    /// Wall time.
    pub clock: Arc<dyn Clock>,
    /// Alerts.
    pub alerts: Arc<Alerts>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The configuration.
    pub config: ConfigWatch,
    /// Where sync-all runs are spawned (joined at shutdown).
    pub tasks: TaskTracker,
    /// Cancelled when the daemon stops.
    pub shutdown: CancellationToken,
}

/// The sync engine.
pub struct SyncEngine {
    store: Arc<Store>,
    tokens: Arc<TokenManager>,
    http: reqwest::Client,
    archive: Arc<Archive>,
    clock: Arc<dyn Clock>,
    alerts: Arc<Alerts>,
    metrics: Arc<Metrics>,
    config: ConfigWatch,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    /// One sync of a company at a time.
    locks: KeyedLocks,
    running: Mutex<Running>,
    progress: Progress,
    last_run: Mutex<Option<LastRun>>,
    level: AtomicUsize,
    backoff_base: Duration,
}

impl SyncEngine {
    /// The engine over its parts.
    pub fn new(p: Parts) -> Self {
        let level = current(&p.config)
            .quickbooks
            .max_concurrent_companies
            .max(1);
        p.metrics.companies_in_flight_limit.set(level as i64);
        SyncEngine {
            store: p.store,
            tokens: p.tokens,
            http: p.http,
            archive: p.archive,
            clock: p.clock,
            alerts: p.alerts,
            metrics: p.metrics,
            config: p.config,
            tasks: p.tasks,
            shutdown: p.shutdown,
            locks: KeyedLocks::new(),
            running: Mutex::new(None),
            progress: Progress::default(),
            last_run: Mutex::new(None),
            level: AtomicUsize::new(level),
            backoff_base: Duration::from_secs(1),
        }
    }

    /// Sets the base of the exponential backoff after 5xx/network failures (tests).
    pub fn with_backoff_base(mut self, base: Duration) -> Self {
        self.backoff_base = base;
        self
    }

    fn config(&self) -> Arc<Config> {
        current(&self.config)
    }

    fn qbo(&self) -> QboClient {
        QboClient::new(self.http.clone(), &self.config().quickbooks)
    }

    fn writes_in_flight(&self) -> usize {
        self.config()
            .quickbooks
            .writes_in_flight_per_company
            .clamp(1, 8)
    }

    /// The default rate date (today, or the newest fixing's date before today's is out).
    pub fn default_date(&self) -> NaiveDate {
        self.archive.default_date()
    }

    /// Whether a sync-all is running, and for which date.
    pub fn running_date(&self) -> Option<NaiveDate> {
        lock(&self.running).as_ref().map(|(d, _, _)| *d)
    }

    /// Progress of the current (or last) sync-all.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// The last finished sync-all.
    pub fn last_run(&self) -> Option<LastRun> {
        lock(&self.last_run).clone()
    }

    /// Companies a sync-all runs at once now.
    pub fn companies_in_flight(&self) -> usize {
        self.level.load(Relaxed)
    }

    fn company_lock(&self, realm: &str) -> KeyLock<'_> {
        self.locks.get(realm)
    }

    /// Syncs one company now (the admin's "sync REALM"): refuses a disabled company; a
    /// failed sync is an error (recorded like any attempt).
    ///
    /// # Errors
    /// Unknown company, sync disabled, and every failure of the sync itself.
    pub async fn sync_one(&self, realm: &str, date: NaiveDate) -> Result<Outcome, Error> {
        let company = self
            .store
            .company(realm)?
            .ok_or_else(|| Error::UnknownCompany(realm.to_string()))?;
        if !company.sync_enabled {
            return Err(Error::SyncDisabled(realm.to_string()));
        }
        let outcome = self.sync_company(realm, date).await?;
        match &outcome.error {
            None => Ok(outcome),
            Some(e) => Err(e.clone()),
        }
    }

    /// Syncs one company for one date and records the attempt. Never panics; every
    /// failure is an [`Outcome`] with an error (and recorded), except an unknown company.
    ///
    /// # Errors
    /// Unknown company; store failures.
    pub async fn sync_company(&self, realm: &str, date: NaiveDate) -> Result<Outcome, Error> {
        let lock = self.company_lock(realm);
        let _g = lock.lock().await;
        let company = self
            .store
            .company(realm)?
            .ok_or_else(|| Error::UnknownCompany(realm.to_string()))?;
        let name = company.company_name.clone();
        tracing::info!(realm_id = realm, fixing_date = %date, "Company {realm}: Syncing rates for {date}");
        let mut attempt = Attempt::default();
        let error = self.run_sync(company, date, &mut attempt).await.err();
        self.record(realm, date, &attempt, error.as_ref()).await?;
        Ok(Outcome {
            realm: realm.to_string(),
            company_name: name,
            date,
            rates_synced: attempt.written + attempt.unchanged,
            rates_written: attempt.written,
            rates_unchanged: attempt.unchanged,
            error,
            pressure: attempt.pressure,
        })
    }

    /// QuickBooks' home currency for `realm`, read now from its Preferences (with the
    /// currency list, both stored as the company's daily cache): what a settings change,
    /// `set --home-currency` or a takeover is checked against (SPEC §5).
    ///
    /// # Errors
    /// Unknown, disconnected or reconnect-needed company; token or QuickBooks failures.
    pub async fn quickbooks_home(&self, realm: &str) -> Result<Currency, Error> {
        let mut company = self
            .store
            .company(realm)?
            .ok_or_else(|| Error::UnknownCompany(realm.to_string()))?;
        if !company.is_active {
            return Err(Error::Disconnected);
        }
        if let Connection::ReconnectNeeded { .. } = company.connection {
            return Err(Error::ReconnectNeeded);
        }
        let token = self.tokens.access_token(realm).await?;
        let session = Session::new(self, realm, token);
        let read = self.refresh_company_cache(&session, &mut company).await;
        if read.is_err() && session.disconnected.load(Relaxed) {
            return Err(Error::Disconnected);
        }
        read?;
        Ok(company.home_currency)
    }

    /// Backfills `from..=to` (SPEC §5 "Backfill"): every date's rate in force (weekends and
    /// holidays by the company's fill policy; dates without one are skipped with the
    /// reason), read from QuickBooks one range query per 31 days, and only what differs
    /// written, through the routine write path (requestids, bounded concurrency, 429/5xx
    /// handling). A dry run stops after the plan. Refuses to wait for a sync of the same
    /// company.
    ///
    /// All reads come before the first write: a failed read fails the backfill with nothing
    /// written. A write that fails does not stop the others; the report lists it and carries
    /// the error, and what was written stays written and counted.
    ///
    /// # Errors
    /// Bad range, unknown company, a sync of it running, a company that cannot be synced,
    /// a failed read or token refresh, store failures.
    pub async fn backfill(
        &self,
        realm: &str,
        from: NaiveDate,
        to: NaiveDate,
        dry_run: bool,
    ) -> Result<Backfill, Error> {
        let dates = backfill::check_range(from, to, self.archive.today())?;
        let mut company = self
            .store
            .company(realm)?
            .ok_or_else(|| Error::UnknownCompany(realm.to_string()))?;
        let company_lock = self.company_lock(realm);
        let Some(_held) = company_lock.try_lock() else {
            return Err(Error::CompanyBusy(realm.to_string()));
        };
        if !company.is_active {
            return Err(Error::Disconnected);
        }
        if let Connection::ReconnectNeeded { .. } = company.connection {
            return Err(Error::ReconnectNeeded);
        }
        if !company.sync_enabled {
            return Err(Error::SyncDisabled(realm.to_string()));
        }
        tracing::info!(
            realm_id = realm,
            "Company {realm}: backfill {from} to {to}{}",
            if dry_run { " (dry run)" } else { "" }
        );
        let mut report = Backfill {
            realm: realm.to_string(),
            from,
            to,
            dry_run,
            dates,
            plan: Vec::new(),
            rates_written: 0,
            rates_unchanged: 0,
            skipped: Vec::new(),
            reads: 0,
            failed: Vec::new(),
            error: None,
        };
        // The rates in force, date by date.
        let holidays = self.archive.holidays()?;
        let mut days: Vec<(NaiveDate, InForce)> = Vec::new();
        for day in from.iter_days().take_while(|d| *d <= to) {
            if let Some(why) =
                backfill::non_business_skip(day, &holidays, company.fill_non_business_days)
            {
                report.skipped.push(Skipped {
                    date: day,
                    reason: why.to_string(),
                });
                continue;
            }
            match self.archive.resolve(day) {
                Ok(r) => days.push((day, r.in_force())),
                Err(archive::Error::NoFixing { why, .. }) => report.skipped.push(Skipped {
                    date: day,
                    reason: why.message(day),
                }),
                Err(e) => return Err(e.into()),
            }
        }
        let token = self.tokens.access_token(realm).await?;
        let session = Session::new(self, realm, token);
        let result = self
            .backfill_with(&session, &mut company, days, &mut report)
            .await;
        let tids = std::mem::take(&mut *lock(&session.tids));
        if !dry_run {
            let message = format!(
                "backfill {from} to {to}: {} written, {} unchanged, {} dates skipped{}",
                report.rates_written,
                report.rates_unchanged,
                report.skipped.len(),
                match (&result, &report.error) {
                    (Err(e), _) | (Ok(()), Some(e)) => format!("; {}: {e}", e.code()),
                    _ => String::new(),
                }
            );
            self.store.append_log(
                realm,
                &LogRecord {
                    at: self.clock.now(),
                    kind: LogKind::Syncing,
                    success: result.is_ok() && report.error.is_none(),
                    date: None,
                    message,
                    rates_written: report.rates_written as u32,
                    rates_unchanged: report.rates_unchanged as u32,
                    intuit_tids: tids,
                    drift: None,
                },
            )?;
            self.store.flush().await?;
            self.metrics
                .rates_written
                .inc_by(report.rates_written as u64);
        }
        result.map(|()| report)
    }

    async fn backfill_with(
        &self,
        session: &Session<'_>,
        company: &mut Company,
        days: Vec<(NaiveDate, InForce)>,
        report: &mut Backfill,
    ) -> Result<(), Error> {
        let realm = company.realm_id.clone();
        let stale = company
            .currencies_checked_at
            .is_none_or(|t| self.clock.now() - t > CURRENCY_CACHE);
        if stale && !days.is_empty() {
            self.refresh_company_cache(session, company).await?;
        }
        if !company.multicurrency {
            return Err(Error::MulticurrencyOff);
        }
        // What we want on every date, and where each rate came from.
        let mut wants: Vec<Want> = Vec::new();
        let mut fixings: HashMap<(NaiveDate, Currency), (TableKind, NaiveDate)> = HashMap::new();
        for (day, in_force) in &days {
            match company_rates(in_force, company.home_currency, &company.active_currencies) {
                Ok(list) => {
                    for w in list {
                        let fixing = in_force.rate(w.currency).map_or_else(
                            || (TableKind::Main, in_force.main_date.unwrap_or(*day)),
                            |r| (r.table, r.fixing_date),
                        );
                        fixings.insert((*day, w.currency), fixing);
                        wants.push(Want {
                            date: *day,
                            currency: w.currency,
                            rate: w.rate,
                        });
                    }
                }
                Err(e) => report.skipped.push(Skipped {
                    date: *day,
                    reason: e.to_string(),
                }),
            }
        }
        report.skipped.sort_by_key(|s| s.date);
        let mut codes: Vec<Currency> = wants.iter().map(|w| w.currency).collect();
        codes.sort();
        codes.dedup();

        // Reads: one range query per 31-day window that has a date to write.
        let mut holdings = Holdings::new();
        for (wf, wt) in backfill::windows(report.from, report.to) {
            if !wants.iter().any(|w| w.date >= wf && w.date <= wt) {
                continue;
            }
            let h = self
                .read_range(session, wf, wt, &codes)
                .await
                .map_err(|e| {
                    if e.is_fault() {
                        Error::RangeQueryRefused {
                            from: wf,
                            to: wt,
                            message: e.to_string(),
                        }
                    } else {
                        upstream(&e, "reading QuickBooks exchange rates")
                    }
                })?;
            report.reads += 1;
            holdings.extend(h);
        }
        let steps = plan::plan(&realm, &wants, &holdings);
        report.plan.clone_from(&steps);
        if report.dry_run {
            report.rates_unchanged = steps.iter().filter(|s| s.action == Action::Keep).count();
            return Ok(());
        }

        // Writes, through the routine path; rows stored like a routine sync's.
        let written = self
            .write_steps(session, company.home_currency, steps)
            .await;
        report.rates_written = written.written.len();
        report.rates_unchanged = written.unchanged.len();
        let now = self.clock.now();
        let done = written.confirmed();
        let rows: Vec<StoredRate> = wants
            .iter()
            .map(|w| {
                let fixing = fixings
                    .get(&(w.date, w.currency))
                    .copied()
                    .unwrap_or((TableKind::Main, w.date));
                stored_row((w.date, w.currency), w.rate, fixing, &done, now)
            })
            .collect();
        self.store.put_rates(&realm, &rows)?;
        report.failed = written
            .rejected
            .into_iter()
            .chain(written.failures)
            .map(|((date, currency), error)| FailedWrite {
                date,
                currency,
                error,
            })
            .collect();
        report.failed.sort_by_key(|f| (f.date, f.currency));
        report.error = match written.fatal {
            Some(e) => Some(e),
            None if !report.failed.is_empty() => Some(Error::WriteFailed {
                failed: report.failed.len(),
                total: wants.len(),
                detail: report
                    .failed
                    .iter()
                    .take(5)
                    .map(|f| format!("{} {}: {}", f.currency, f.date, f.error))
                    .collect::<Vec<_>>()
                    .join("; "),
            }),
            None => None,
        };
        Ok(())
    }

    /// Writes the attempt's two log records (SPEC §5 "Counts": one scraping, one syncing),
    /// flushes, counts and alerts.
    async fn record(
        &self,
        realm: &str,
        date: NaiveDate,
        a: &Attempt,
        error: Option<&Error>,
    ) -> Result<(), Error> {
        let now = self.clock.now();
        let synced = a.written + a.unchanged;
        self.store.append_log(
            realm,
            &LogRecord {
                at: now,
                kind: LogKind::Scraping,
                success: a.fixing_ok,
                date: Some(date),
                message: if a.fixing_ok {
                    format!("fixing in force on {date} obtained")
                } else {
                    error.map(ToString::to_string).unwrap_or_default()
                },
                rates_written: 0,
                rates_unchanged: 0,
                intuit_tids: vec![],
                drift: None,
            },
        )?;
        self.store.append_log(
            realm,
            &LogRecord {
                at: now,
                kind: LogKind::Syncing,
                success: error.is_none(),
                date: Some(date),
                message: {
                    let mut m = match error {
                        None => format!(
                            "synced {synced} rates ({} written, {} unchanged)",
                            a.written, a.unchanged
                        ),
                        Some(e) => format!("{}: {e}", e.code()),
                    };
                    if a.drifts > 0 {
                        m.push_str(&format!(
                            "; {} drift(s) found, {} corrected",
                            a.drifts, a.corrected
                        ));
                    }
                    if a.read_fallback {
                        m.push_str("; the exchange-rate query was refused: read D by single GETs, drift not checked");
                    }
                    m
                },
                rates_written: a.written as u32,
                rates_unchanged: a.unchanged as u32,
                intuit_tids: a.tids.clone(),
                drift: None,
            },
        )?;
        self.store.flush().await?;
        self.metrics.company_sync(error.is_none());
        self.metrics
            .rates_written
            .inc_by((a.written + a.corrected) as u64);
        match error {
            None => {
                tracing::info!(realm_id = realm, fixing_date = %date, rates_written = a.written, "Company {realm}: Successfully synced {synced} rates");
            }
            Some(e) => {
                if *e == Error::ReconnectNeeded {
                    self.alerts.raise(
                        &format!("token:{realm}"),
                        "token_refresh_failed",
                        Some(realm),
                        "Token refresh failed; the company must reconnect to QuickBooks",
                    );
                }
                tracing::warn!(realm_id = realm, fixing_date = %date, error = %e, "Company {realm}: Sync failed for {date}: {e}");
            }
        }
        Ok(())
    }

    /// The fixing in force on `date`, fetching BoA first when it is today's and missing.
    async fn fixing_for(&self, date: NaiveDate) -> Result<archive::Resolved, Error> {
        match self.archive.resolve(date) {
            Ok(r) => Ok(r),
            Err(archive::Error::NoFixing { why, .. })
                if date == self.archive.today()
                    && matches!(
                        why,
                        NoFixing::NotYetPublished { .. }
                            | NoFixing::Empty
                            | NoFixing::Missing { .. }
                    ) =>
            {
                if let Err(e) = self.archive.fetch(false).await {
                    tracing::warn!(error = %e, "BoA fetch for a sync failed");
                }
                Ok(self.archive.resolve(date)?)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn run_sync(
        &self,
        mut company: Company,
        date: NaiveDate,
        attempt: &mut Attempt,
    ) -> Result<(), Error> {
        let realm = company.realm_id.clone();
        if !company.is_active {
            return Err(Error::Disconnected);
        }
        if let Connection::ReconnectNeeded { .. } = company.connection {
            return Err(Error::ReconnectNeeded);
        }
        // 1. The fixing in force (fetching BoA first when today's is missing).
        let resolved = self.fixing_for(date).await?;
        attempt.fixing_ok = true;

        // 2. A token (refreshed if needed).
        let token = self.tokens.access_token(&realm).await?;
        let session = Session::new(self, &realm, token);
        // A write refused because QuickBooks' home currency is not the one we computed for
        // (SPEC §5) re-reads Preferences; when the home changed, the same sync computes and
        // writes again for the new one, once.
        let mut may_redo = true;
        let result = loop {
            match self
                .sync_with(&session, &mut company, date, &resolved, attempt, may_redo)
                .await
            {
                Ok(Pass::Redo) => may_redo = false,
                Ok(Pass::Done) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        attempt.tids = std::mem::take(&mut *lock(&session.tids));
        attempt.pressure = session.pressure.load(Relaxed) as u32;
        if result.is_err() && session.disconnected.load(Relaxed) {
            return Err(Error::Disconnected);
        }
        result
    }

    async fn sync_with(
        &self,
        session: &Session<'_>,
        company: &mut Company,
        date: NaiveDate,
        resolved: &archive::Resolved,
        attempt: &mut Attempt,
        may_redo: bool,
    ) -> Result<Pass, Error> {
        let realm = company.realm_id.clone();
        let in_force = &resolved.in_force();
        // 3. Currencies/preferences at most daily.
        let stale = company
            .currencies_checked_at
            .is_none_or(|t| self.clock.now() - t > CURRENCY_CACHE);
        if stale {
            self.refresh_company_cache(session, company).await?;
        }
        if !company.multicurrency {
            return Err(Error::MulticurrencyOff);
        }
        let wanted = company_rates(in_force, company.home_currency, &company.active_currencies)
            .map_err(|e| Error::HomeCurrencyNotFixed(e.to_string()))?;
        if wanted.is_empty() {
            tracing::info!(realm_id = %realm, "Company {realm}: no active currency has a BoA rate; nothing to write");
            self.mark_synced(&realm)?;
            return Ok(Pass::Done);
        }
        let home = company.home_currency;

        // 4. One metered read of D-6…D (or, when QuickBooks refuses the query, one GET per
        // currency for D), the drift it shows, then the plan.
        let codes: Vec<Currency> = wanted.iter().map(|w| w.currency).collect();
        let window_from = date
            .checked_sub_signed(chrono::Duration::days(DRIFT_WINDOW_DAYS - 1))
            .unwrap_or(date);
        let read = self.read_window(session, window_from, date, &codes).await?;
        attempt.read_fallback = !read.drift_checked;
        let mut confirmed: HashMap<(NaiveDate, Currency), StoredRate> = HashMap::new();
        let drifts = if read.drift_checked {
            let mine: Vec<StoredRate> = self
                .store
                .rates_between(&realm, window_from, date)?
                .into_iter()
                .filter(|r| r.synced && codes.contains(&r.currency))
                .collect();
            let wants: Vec<Want> = mine
                .iter()
                .map(|r| Want {
                    date: r.date,
                    currency: r.currency,
                    rate: r.rate,
                })
                .collect();
            confirmed = mine
                .into_iter()
                .map(|r| ((r.date, r.currency), r))
                .collect();
            plan::drifts(&wants, &read.holdings)
        } else {
            Vec::new()
        };
        let report_only = company.drift == DriftPolicy::Report;
        self.record_drifts(&realm, &codes, &drifts, report_only)?;
        attempt.drifts = drifts.len();
        let drifted: HashSet<(NaiveDate, Currency)> = drifts
            .iter()
            .map(|d| (d.ours.date, d.ours.currency))
            .collect();
        // `report` never overwrites a rate QuickBooks changed after we confirmed it, not
        // even on D; `correct` writes the older dates back with the routine ones.
        let held_back = |k: &(NaiveDate, Currency)| report_only && drifted.contains(k);
        let mut wants: Vec<Want> = wanted
            .iter()
            .map(|w| Want {
                date,
                currency: w.currency,
                rate: w.rate,
            })
            .filter(|w| !held_back(&(w.date, w.currency)))
            .collect();
        let corrections: Vec<Want> = if report_only {
            Vec::new()
        } else {
            drifts
                .iter()
                .map(|d| d.ours)
                .filter(|w| w.date != date)
                .collect()
        };
        wants.extend(corrections.iter().copied());
        let steps = plan::plan(&realm, &wants, &read.holdings);

        // 5. Write what differs, several at once.
        let mut written = self.write_steps(session, home, steps).await;
        // A fatal failure (the grant is gone) still records what was written before it:
        // those rates are in QuickBooks, so they are counted and stored as confirmed.
        let fatal = written.fatal.take();
        attempt.written = written.written.iter().filter(|k| k.0 == date).count();
        attempt.unchanged = written.unchanged.iter().filter(|k| k.0 == date).count();
        attempt.corrected = written.written.iter().filter(|k| k.0 != date).count();
        let mut failures: Vec<String> = written
            .failures
            .iter()
            .map(|((d, c), e)| {
                if *d == date {
                    format!("{c}: {e}")
                } else {
                    format!("{c} {d}: {e}")
                }
            })
            .collect();

        // 6. QuickBooks refused some currencies as inactive or home: re-read the company
        // once; a currency no longer active is skipped, not a failure.
        let mut skipped: Vec<Currency> = Vec::new();
        if fatal.is_none() && !written.rejected.is_empty() {
            if !stale {
                self.refresh_company_cache(session, company).await?;
                // Switched off since the cache was read: every write will be refused,
                // and "synced 0 rates" would hide it.
                if !company.multicurrency {
                    return Err(Error::MulticurrencyOff);
                }
                if company.home_currency != home && may_redo {
                    tracing::warn!(realm_id = %realm, "Company {realm}: QuickBooks' home currency is now {} (was {home}); computing the rates again for it", company.home_currency);
                    return Ok(Pass::Redo);
                }
            }
            let still: Vec<Currency> =
                company_rates(in_force, company.home_currency, &company.active_currencies)
                    .map(|f| f.iter().map(|r| r.currency).collect())
                    .unwrap_or_default();
            for &((_, currency), ref e) in &written.rejected {
                if still.contains(&currency) {
                    failures.push(format!("{currency}: {e}"));
                } else if !skipped.contains(&currency) {
                    tracing::info!(realm_id = %realm, currency = %currency, "Company {realm}: {currency} is not active in QuickBooks; skipped");
                    skipped.push(currency);
                }
            }
        }

        // 7. Store the company's rates (confirmed or not) and the attempt. A rate held
        // back under `report` keeps its stored row (still ours, confirmed once).
        let now = self.clock.now();
        let done = written.confirmed();
        let mut rows: Vec<StoredRate> = wanted
            .iter()
            .filter(|w| !skipped.contains(&w.currency) && !held_back(&(date, w.currency)))
            .map(|w| {
                let fixing = match in_force.rate(w.currency) {
                    Some(r) => (r.table, r.fixing_date),
                    None => (TableKind::Main, resolved.main.table.date),
                };
                stored_row((date, w.currency), w.rate, fixing, &done, now)
            })
            .collect();
        for w in &corrections {
            if let Some(row) = confirmed.get(&(w.date, w.currency)) {
                rows.push(stored_row(
                    (row.date, row.currency),
                    row.rate,
                    row.fixing,
                    &done,
                    now,
                ));
            }
        }
        self.store.put_rates(&realm, &rows)?;
        if let Some(fatal) = fatal {
            return Err(fatal);
        }
        if failures.is_empty() {
            self.mark_synced(&realm)?;
            Ok(Pass::Done)
        } else {
            Err(Error::WriteFailed {
                failed: failures.len(),
                total: wants.len(),
                detail: failures.join("; "),
            })
        }
    }

    /// Records the drifts one read found (SPEC §5 "Drift"): a `drift` log record each (not
    /// flushed: the attempt's records flush them), counted, and alerted when the same
    /// currency drifted before within 7 days. Under `report` a drift already recorded (same
    /// date, currency and rates) is not recorded again by the next syncs that see it.
    fn record_drifts(
        &self,
        realm: &str,
        codes: &[Currency],
        drifts: &[Drift],
        report_only: bool,
    ) -> Result<(), Error> {
        let drifted: HashSet<Currency> = drifts.iter().map(|d| d.ours.currency).collect();
        for c in codes.iter().filter(|c| !drifted.contains(c)) {
            self.alerts.clear(&drift_alert_key(realm, *c));
        }
        if drifts.is_empty() {
            return Ok(());
        }
        let now = self.clock.now();
        let earlier: Vec<(DateTime<Utc>, Option<NaiveDate>, DriftDetail)> = self
            .store
            .logs(realm, DRIFT_LOOKBACK_RECORDS)?
            .into_iter()
            .filter(|r| r.kind == LogKind::Drift)
            .filter_map(|r| Some((r.at, r.date, r.drift?)))
            .collect();
        for d in drifts {
            let (day, currency, ours) = (d.ours.date, d.ours.currency, d.ours.rate);
            let seen = |(_, date, x): &&(DateTime<Utc>, Option<NaiveDate>, DriftDetail)| {
                *date == Some(day)
                    && x.currency == currency
                    && x.theirs == d.theirs
                    && x.ours == ours
            };
            if report_only && earlier.iter().any(|e| seen(&e)) {
                continue;
            }
            let repeat = earlier
                .iter()
                .any(|(at, _, x)| x.currency == currency && now - *at <= DRIFT_REPEAT);
            let theirs = d
                .theirs
                .map_or_else(|| "nothing".to_string(), |t| t.normalize().to_string());
            let message = format!(
                "{currency} on {day}: QuickBooks holds {theirs}, we confirmed {}{}",
                ours.normalize(),
                if report_only {
                    " (reported, not corrected)"
                } else {
                    " (written back)"
                }
            );
            self.store.append_log(
                realm,
                &LogRecord {
                    at: now,
                    kind: LogKind::Drift,
                    success: false,
                    date: Some(day),
                    message: message.clone(),
                    rates_written: 0,
                    rates_unchanged: 0,
                    intuit_tids: vec![],
                    drift: Some(DriftDetail {
                        currency,
                        theirs: d.theirs,
                        ours,
                    }),
                },
            )?;
            self.metrics.drifts.inc();
            tracing::warn!(realm_id = realm, fixing_date = %day, currency = %currency, "Company {realm}: drift: {message}");
            if repeat {
                self.alerts.raise(
                    &drift_alert_key(realm, currency),
                    "drift_repeated",
                    Some(realm),
                    &format!("{currency} drifted again within 7 days: {message}"),
                );
            }
        }
        Ok(())
    }

    /// `last_sync_at` = now, unflushed: flushed with the attempt's log records by
    /// [`Self::record`], before the answer.
    fn mark_synced(&self, realm: &str) -> Result<(), Error> {
        let now = self.clock.now();
        self.store.update_company_unflushed(realm, |c| {
            c.last_sync_at = Some(now);
            c.updated_at = now;
        })?;
        Ok(())
    }

    /// Re-reads preferences and the currency list, and stores them into the company's
    /// *current* record: the sync works on a copy taken when it started, and saving that
    /// whole copy would undo a settings change, a token refresh or a disconnect made
    /// meanwhile.
    async fn refresh_company_cache(
        &self,
        session: &Session<'_>,
        company: &mut Company,
    ) -> Result<(), Error> {
        let realm = company.realm_id.clone();
        let prefs = session
            .call(CallKind::Read, |q, t| {
                let r = realm.clone();
                async move { q.preferences(&r, &t).await }
            })
            .await
            .map_err(|e| upstream(&e, "reading Preferences"))?;
        let currencies = session
            .call(CallKind::Read, |q, t| {
                let r = realm.clone();
                async move { q.company_currencies(&r, &t).await }
            })
            .await
            .map_err(|e| upstream(&e, "reading company currencies"))?;
        company.multicurrency = prefs.multicurrency;
        if let Some(home) = prefs.home {
            company.home_currency = home;
        }
        let home = company.home_currency;
        company.active_currencies = crate::qbo::model::active_foreign(&currencies, home);
        let now = self.clock.now();
        company.currencies_checked_at = Some(now);
        let fresh = company.clone();
        self.store
            .update_company(&realm, |c| {
                c.multicurrency = fresh.multicurrency;
                c.home_currency = fresh.home_currency;
                c.active_currencies.clone_from(&fresh.active_currencies);
                c.currencies_checked_at = fresh.currencies_checked_at;
                c.updated_at = now;
            })
            .await?;
        Ok(())
    }

    /// What QuickBooks holds for `codes` dated `from` to `to`: one metered read, a further
    /// page (another read) only beyond [`PAGE_SIZE`] rows.
    async fn read_range(
        &self,
        session: &Session<'_>,
        from: NaiveDate,
        to: NaiveDate,
        codes: &[Currency],
    ) -> Result<Holdings, qbo::Error> {
        let realm = session.realm.clone();
        let mut holdings = Holdings::new();
        let mut start = 1;
        loop {
            let page = session
                .call(CallKind::Read, |q, t| {
                    let r = realm.clone();
                    let c = codes.to_vec();
                    async move { q.rates_page(&r, &t, &c, from, to, start).await }
                })
                .await?;
            for r in page.rates {
                holdings.insert(
                    (r.date, r.currency),
                    Held {
                        rate: r.rate,
                        sync_token: r.sync_token,
                    },
                );
            }
            if !page.full {
                return Ok(holdings);
            }
            start += PAGE_SIZE;
        }
    }

    /// The routine read: `from..=to` in one query; when QuickBooks refuses the query with
    /// a Fault, one GET per currency for `to` only (logged, counted; no drift check).
    async fn read_window(
        &self,
        session: &Session<'_>,
        from: NaiveDate,
        to: NaiveDate,
        codes: &[Currency],
    ) -> Result<WindowRead, Error> {
        match self.read_range(session, from, to, codes).await {
            Ok(holdings) => Ok(WindowRead {
                holdings,
                drift_checked: true,
            }),
            Err(e) if e.is_fault() => {
                let realm = &session.realm;
                self.metrics.read_fallbacks.inc();
                tracing::warn!(realm_id = %realm, error = %e, "Company {realm}: QuickBooks refused the exchange-rate query; reading {to} with one GET per currency (drift not checked)");
                let mut holdings = Holdings::new();
                for c in codes {
                    if let Some(h) = self.read_one(session, *c, to).await? {
                        holdings.insert((to, *c), h);
                    }
                }
                Ok(WindowRead {
                    holdings,
                    drift_checked: false,
                })
            }
            Err(e) => Err(upstream(&e, "reading QuickBooks exchange rates")),
        }
    }

    /// One currency on one date by a single GET (one metered read).
    async fn read_one(
        &self,
        session: &Session<'_>,
        currency: Currency,
        date: NaiveDate,
    ) -> Result<Option<Held>, Error> {
        let realm = session.realm.clone();
        let rate = session
            .call(CallKind::Read, |q, t| {
                let r = realm.clone();
                async move { q.rate_on(&r, &t, currency, date).await }
            })
            .await
            .map_err(|e| upstream(&e, "reading a QuickBooks exchange rate"))?;
        Ok(rate.map(|r| Held {
            rate: r.rate,
            sync_token: r.sync_token,
        }))
    }

    /// Runs the plan's writes, at most `writes_in_flight_per_company` at once.
    async fn write_steps(
        &self,
        session: &Session<'_>,
        home: Currency,
        steps: Vec<Step>,
    ) -> Written {
        let mut out = Written::default();
        let mut writes = Vec::new();
        for s in steps {
            match s.action {
                Action::Keep => out.unchanged.push((s.want.date, s.want.currency)),
                Action::Write { .. } => writes.push(s),
            }
        }
        let mut results = futures_util::stream::iter(writes)
            .map(|s| async move {
                let key = (s.want.date, s.want.currency);
                (key, self.write_one(session, home, s).await)
            })
            .buffer_unordered(self.writes_in_flight());
        while let Some((key, r)) = results.next().await {
            match r {
                WriteResult::Written => out.written.push(key),
                WriteResult::AlreadyThere => out.unchanged.push(key),
                WriteResult::Rejected(e) => out.rejected.push((key, e)),
                WriteResult::Failed(e) => out.failures.push((key, e)),
                WriteResult::Fatal(e) => {
                    out.fatal.get_or_insert(e);
                }
            }
        }
        out
    }

    /// One write, retried once with a fresh SyncToken when QuickBooks says ours is stale.
    async fn write_one(
        &self,
        session: &Session<'_>,
        home: Currency,
        mut step: Step,
    ) -> WriteResult {
        let want = step.want;
        let mut stale_retry = false;
        loop {
            let Action::Write {
                sync_token,
                request_id,
            } = &step.action
            else {
                return WriteResult::AlreadyThere;
            };
            let body = rate_body(want.currency, home, want.rate, want.date, sync_token);
            let realm = session.realm.clone();
            let res = session
                .call(CallKind::Write, |q, t| {
                    let r = realm.clone();
                    let b = body.clone();
                    let id = request_id.clone();
                    async move { q.write_rate(&r, &t, b, &id).await }
                })
                .await;
            match res {
                Ok(_) => return WriteResult::Written,
                Err(e) if e.is_stale() && !stale_retry => {
                    // Someone changed the rate meanwhile: re-read the date once and retry
                    // with the new SyncToken (a new requestid).
                    stale_retry = true;
                    match self.read_one(session, want.currency, want.date).await {
                        Ok(held) => {
                            let h: Holdings = held
                                .map(|h| ((want.date, want.currency), h))
                                .into_iter()
                                .collect();
                            step = plan::step(&session.realm, want, &h);
                        }
                        // A failed re-read fails this currency only, like a failed write;
                        // the grant being gone still ends the sync.
                        Err(
                            e
                            @ (Error::ReconnectNeeded | Error::Disconnected | Error::NotConnected),
                        ) => return WriteResult::Fatal(e),
                        Err(e) => return WriteResult::Failed(e.to_string()),
                    }
                }
                Err(e) if e.is_currency_rejection() => return WriteResult::Rejected(e.to_string()),
                Err(e) if e.is_invalid_grant() || e.is_unauthorized() => {
                    return WriteResult::Fatal(upstream(&e, "writing exchange rates"))
                }
                Err(e) => return WriteResult::Failed(e.to_string()),
            }
        }
    }

    /// Runs (or joins) the one sync-all for `date`. A second call for the same date joins
    /// the run in flight; the run goes on when the caller goes away.
    ///
    /// # Errors
    /// [`Error::InProgress`] when a run for another date is in progress;
    /// [`Error::ShuttingDown`] when the daemon stops meanwhile; store failure listing
    /// companies.
    pub async fn sync_all(self: &Arc<Self>, date: NaiveDate, scope: Scope) -> RunResult {
        let mut rx = {
            let mut running = lock(&self.running);
            match running.as_ref() {
                // Joined only by a call for the same date and the same companies (a fill-only
                // weekend run does not answer for every company).
                Some((d, s, rx)) if *d == date && *s == scope => rx.clone(),
                Some((d, _, _)) => return Err(Error::InProgress(*d)),
                None => {
                    let (tx, rx) = watch::channel(None);
                    *running = Some((date, scope, rx.clone()));
                    let engine = self.clone();
                    self.tasks.spawn(async move {
                        // Cleared however the run ends (a panic too), so a later sync-all is
                        // never refused for a run that is gone.
                        let _clear = ClearRunning(&engine.running);
                        let result = engine.run_all(date, scope).await.map(Arc::new);
                        let _ = tx.send(Some(result));
                    });
                    rx
                }
            }
        };
        loop {
            if let Some(done) = rx.borrow().clone() {
                return done;
            }
            if rx.changed().await.is_err() {
                return Err(Error::ShuttingDown);
            }
        }
    }

    /// Runs one sync-all to completion (bounded, adaptive concurrency; failures isolated).
    async fn run_all(self: &Arc<Self>, date: NaiveDate, scope: Scope) -> Result<RunReport, Error> {
        let started = std::time::Instant::now();
        // Only what the run needs of each company (the records are re-read one by one), and
        // one record decoded at a time: never every record at once.
        let mut entries = RunEntries::default();
        let bad = self.store.each_company(|c| {
            if c.is_active
                && c.sync_enabled
                && c.is_connected()
                && (scope == Scope::All || c.fill_non_business_days)
            {
                entries.push(&c.realm_id, &c.company_name);
            }
        })?;
        let bad_records: Vec<String> = bad.iter().map(|b| b.key_display()).collect();
        for key in &bad_records {
            self.alerts.raise(
                &format!("bad_record:{key}"),
                "bad_record",
                None,
                &format!("the company record {key} cannot be decoded; it is skipped (restore it from a backup or reconnect the company)"),
            );
        }
        let total = entries.listed();
        let p = &self.progress;
        p.total.store(total, Relaxed);
        p.done.store(0, Relaxed);
        p.failed.store(0, Relaxed);
        let total = total + bad_records.len();
        tracing::info!(companies = total, fixing_date = %date, "Syncing rates for {date} to {total} companies");
        let mut aimd = Aimd::new(self.config().quickbooks.max_concurrent_companies);
        self.set_level(aimd.level);
        // At most `level` company syncs exist at a time: a task is spawned only when one
        // finishes, so memory does not grow with the number of companies.
        let mut pending = 0..entries.listed();
        let mut set = tokio::task::JoinSet::new();
        let mut running: HashMap<tokio::task::Id, usize> = HashMap::new();
        let (mut ok, mut failed) = (0usize, 0usize);
        loop {
            while set.len() < aimd.level {
                let Some(idx) = pending.next() else {
                    break;
                };
                let engine = self.clone();
                let r = entries.realm(idx).to_string();
                let handle = set.spawn(async move {
                    if engine.shutdown.is_cancelled() {
                        return Err(Error::ShuttingDown);
                    }
                    engine.sync_company(&r, date).await
                });
                running.insert(handle.id(), idx);
            }
            let Some(joined) = set.join_next_with_id().await else {
                break;
            };
            let (id, r) = match joined {
                Ok((id, r)) => (id, r),
                // A panicked sync is a failed company, not a lost one.
                Err(e) => (
                    e.id(),
                    Err(Error::Store(format!("the sync task failed: {e}"))),
                ),
            };
            let Some(idx) = running.remove(&id) else {
                continue;
            };
            let (name, counts, error) = match r {
                Ok(o) => {
                    aimd.record(o.pressure > 0 || is_pressure(o.error.as_ref()));
                    (
                        o.company_name,
                        (o.rates_synced, o.rates_written, o.rates_unchanged),
                        o.error,
                    )
                }
                Err(e) => (entries.listed_name(idx).to_string(), (0, 0, 0), Some(e)),
            };
            self.set_level(aimd.level);
            p.done.fetch_add(1, Relaxed);
            if error.is_some() {
                failed += 1;
                p.failed.fetch_add(1, Relaxed);
            } else {
                ok += 1;
            }
            entries.finish(idx, name, counts, error);
            if (ok + failed) % TRIM_EVERY == 0 {
                // On the blocking pool: a trim takes every arena's lock in turn.
                drop(tokio::task::spawn_blocking(release_free_heap));
            }
        }
        failed += bad_records.len();
        let seconds = started.elapsed().as_secs_f64();
        let finished_at = self.clock.now();
        *lock(&self.last_run) = Some(LastRun {
            date,
            finished_at,
            successful: ok,
            failed,
            seconds,
        });
        self.metrics.sync_all_seconds.set(seconds);
        tracing::info!(fixing_date = %date, successful = ok, failed, seconds, "Synced {ok}/{total} companies successfully");
        let key = format!("sync_failures:{date}");
        if failed >= 2 {
            self.alerts.raise(
                &key,
                "sync_failures",
                None,
                &format!("sync of {date} failed for {failed} of {total} companies"),
            );
        } else {
            self.alerts.clear(&key);
        }
        Ok(RunReport {
            date,
            finished_at,
            total,
            successful: ok,
            failed,
            seconds,
            entries,
            bad_records,
        })
    }

    fn set_level(&self, level: usize) {
        self.level.store(level, Relaxed);
        self.metrics.companies_in_flight_limit.set(level as i64);
    }
}

/// Companies a sync-all finishes between two [`release_free_heap`] calls.
const TRIM_EVERY: usize = 1000;

/// Hands the free pages inside glibc's malloc arenas back to the kernel (`malloc_trim(0)`).
/// A sync-all frees as much as it allocates, but spread over the arenas of the runtime's
/// and blocking pool's threads (one flush thread per company in flight), the free space
/// stays resident and grows with the run: calling this every [`TRIM_EVERY`] companies
/// lowered the peak RSS of a 100,000-company run from ~147 to ~124 MiB (BENCHMARKS.md,
/// issue 15). One call walks the arenas' free lists: ~100 calls per 100,000 companies.
fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns unused memory of the allocator to the kernel; it
    // takes each arena's lock and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The alert key of repeated drift of one company and currency.
fn drift_alert_key(realm: &str, currency: Currency) -> String {
    format!("drift:{realm}:{currency}")
}

/// Clears the sync-all in flight when dropped.
struct ClearRunning<'a>(&'a Mutex<Running>);

impl Drop for ClearRunning<'_> {
    fn drop(&mut self) {
        *lock(self.0) = None;
    }
}

/// Whether a failure says QuickBooks is overloaded (429/5xx after the retries).
fn is_pressure(e: Option<&Error>) -> bool {
    matches!(
        e,
        Some(Error::Upstream {
            code: "throttled" | "quickbooks_unavailable",
            ..
        })
    )
}

/// What one company sync did so far (filled in as it goes, recorded whatever the end).
#[derive(Debug, Default)]
struct Attempt {
    fixing_ok: bool,
    /// Writes for D.
    written: usize,
    /// Rates of D already equal.
    unchanged: usize,
    /// Drifts found in D-6…D.
    drifts: usize,
    /// Drifts of earlier dates written back.
    corrected: usize,
    /// The query was refused: D read by single GETs, drift not checked.
    read_fallback: bool,
    tids: Vec<String>,
    pressure: u32,
}

/// The routine read: what QuickBooks holds, and whether it covered the whole window (so
/// drift was checked) or only D (the single-GET fallback).
struct WindowRead {
    holdings: Holdings,
    drift_checked: bool,
}

/// What the write loop did, per (date, currency).
#[derive(Debug, Default)]
struct Written {
    /// Written (now equal in QuickBooks).
    written: Vec<(NaiveDate, Currency)>,
    /// Already equal.
    unchanged: Vec<(NaiveDate, Currency)>,
    /// Refused as inactive or home currency.
    rejected: Vec<((NaiveDate, Currency), String)>,
    /// Failed otherwise.
    failures: Vec<((NaiveDate, Currency), String)>,
    /// A failure that ends the whole sync (the grant is gone).
    fatal: Option<Error>,
}

impl Written {
    /// The (date, currency) pairs whose QuickBooks rate now equals ours.
    fn confirmed(&self) -> HashSet<(NaiveDate, Currency)> {
        self.written
            .iter()
            .chain(self.unchanged.iter())
            .copied()
            .collect()
    }
}

/// The stored row of a rate we wanted in QuickBooks: confirmed (with `now`) when the write
/// loop found it there afterwards.
fn stored_row(
    (date, currency): (NaiveDate, Currency),
    rate: rust_decimal::Decimal,
    fixing: (TableKind, NaiveDate),
    confirmed: &HashSet<(NaiveDate, Currency)>,
    now: DateTime<Utc>,
) -> StoredRate {
    let synced = confirmed.contains(&(date, currency));
    StoredRate {
        date,
        currency,
        rate,
        fixing,
        synced,
        synced_at: synced.then_some(now),
    }
}

/// How one pass of a company's sync ended.
enum Pass {
    /// Done (the attempt's counts are final).
    Done,
    /// QuickBooks' home currency changed: compute and write again for the new one.
    Redo,
}

enum WriteResult {
    Written,
    AlreadyThere,
    Rejected(String),
    Failed(String),
    Fatal(Error),
}

/// One company sync's connection to QuickBooks: the current access token (replaced after
/// a 401 by one refresh for all writes in flight), the realm's throttle (a 429 pauses every
/// write of the company), and the `intuit_tid`s seen.
struct Session<'a> {
    engine: &'a SyncEngine,
    realm: String,
    qbo: QboClient,
    token: Mutex<String>,
    tids: Mutex<Vec<String>>,
    paused_until: Mutex<Option<tokio::time::Instant>>,
    pressure: AtomicUsize,
    /// Whether this sync already refreshed the token after a 401.
    refreshed: std::sync::atomic::AtomicBool,
    /// The company was disconnected while this sync ran (its tokens are gone): the sync
    /// ends as [`Error::Disconnected`], not as an upstream failure.
    disconnected: std::sync::atomic::AtomicBool,
}

impl<'a> Session<'a> {
    fn new(engine: &'a SyncEngine, realm: &str, token: String) -> Self {
        Session {
            engine,
            realm: realm.to_string(),
            qbo: engine.qbo(),
            token: Mutex::new(token),
            tids: Mutex::new(Vec::new()),
            paused_until: Mutex::new(None),
            pressure: AtomicUsize::new(0),
            refreshed: std::sync::atomic::AtomicBool::new(false),
            disconnected: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Waits out the realm's 429 pause; `false` when the daemon starts stopping meanwhile
    /// (a pause can outlast the 20 s drain: the sync then records what it has instead).
    async fn wait_if_paused(&self) -> bool {
        loop {
            let until = *lock(&self.paused_until);
            match until {
                Some(u) if u > tokio::time::Instant::now() => {
                    if !self.sleep_or_stop(tokio::time::sleep_until(u)).await {
                        return false;
                    }
                }
                _ => return true,
            }
        }
    }

    /// Sleeps unless the daemon starts stopping first (`false` then).
    async fn sleep_or_stop(&self, sleep: tokio::time::Sleep) -> bool {
        tokio::select! {
            _ = sleep => true,
            _ = self.engine.shutdown.cancelled() => false,
        }
    }

    fn pause(&self, wait: Duration) {
        let until = tokio::time::Instant::now() + wait;
        let mut p = lock(&self.paused_until);
        if p.is_none_or(|u| u < until) {
            *p = Some(until);
        }
    }

    /// Calls QuickBooks with the SPEC's handling: 401 → refresh once and retry once; 429 →
    /// pause the realm (Retry-After or 60 s) and retry, bounded; 5xx/network → bounded
    /// backoff.
    async fn call<T, F, Fut>(&self, kind: CallKind, f: F) -> Result<T, qbo::Error>
    where
        F: Fn(QboClient, String) -> Fut,
        Fut: Future<Output = Result<Traced<T>, qbo::Error>>,
    {
        let engine = self.engine;
        let realm = self.realm.as_str();
        let (mut refreshed, mut throttled, mut transient) = (false, 0u32, 0u32);
        loop {
            if !self.wait_if_paused().await {
                return Err(qbo::Error::Network(
                    "not sent: the daemon is stopping".into(),
                ));
            }
            let token = lock(&self.token).clone();
            let r = f(self.qbo.clone(), token.clone()).await;
            engine.metrics.call(kind, &status_label(&r));
            match r {
                Ok(t) => {
                    lock(&self.tids).extend(t.tid);
                    return Ok(t.value);
                }
                Err(qbo::Error::Unauthorized) if !refreshed => {
                    refreshed = true;
                    // Another write of this sync refreshed meanwhile: retry with its token.
                    if *lock(&self.token) != token {
                        continue;
                    }
                    // One refresh per sync: a 401 that outlives it is final, not a reason to
                    // rotate the refresh token once per currency.
                    if self.refreshed.swap(true, Relaxed) {
                        return Err(qbo::Error::Unauthorized);
                    }
                    let fresh = match engine.tokens.after_unauthorized(realm, &token).await {
                        Ok(t) => t,
                        Err(TokenError::ReconnectNeeded) => {
                            return Err(qbo::Error::InvalidGrant(
                                "refresh refused after 401".into(),
                            ))
                        }
                        Err(TokenError::Upstream(e)) => return Err(e),
                        Err(TokenError::NotConnected) => {
                            self.disconnected.store(true, Relaxed);
                            return Err(qbo::Error::Network(
                                "not sent: the company was disconnected during the sync".into(),
                            ));
                        }
                        Err(e) => return Err(qbo::Error::Network(e.to_string())),
                    };
                    *lock(&self.token) = fresh;
                }
                Err(qbo::Error::RateLimited { retry_after })
                    if throttled < MAX_THROTTLE_RETRIES =>
                {
                    throttled += 1;
                    self.pressure.fetch_add(1, Relaxed);
                    let wait = retry_after.clamp(1, MAX_RETRY_AFTER);
                    tracing::warn!(
                        realm_id = realm,
                        wait,
                        "Company {realm}: QuickBooks throttled (429); retrying in {wait} s"
                    );
                    self.pause(Duration::from_secs(wait));
                }
                Err(e) if e.is_retryable() && transient < MAX_TRANSIENT_RETRIES => {
                    // A 5xx ridden out by a retry is noise, not overload: only 429s and
                    // failures that outlast the retries lower the sync-all level.
                    transient += 1;
                    let wait = engine.backoff_base * 2u32.pow(transient - 1);
                    tracing::warn!(realm_id = realm, error = %e, "Company {realm}: QuickBooks call failed; retrying in {wait:?}");
                    if !self.sleep_or_stop(tokio::time::sleep(wait)).await {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn status_label<T>(r: &Result<T, qbo::Error>) -> String {
    match r {
        Ok(_) => "200".into(),
        Err(qbo::Error::Unauthorized) => "401".into(),
        Err(qbo::Error::RateLimited { .. }) => "429".into(),
        Err(qbo::Error::Server { status }) => status.to_string(),
        Err(qbo::Error::Fault { .. }) => "400".into(),
        Err(_) => "error".into(),
    }
}

/// A company's sync lock, taken from the engine's map; the map entry goes when its last
/// user is done, so the map does not keep one entry for every company ever synced.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aimd_halves_once_per_burst_and_climbs_back() {
        let mut a = Aimd::new(16);
        for _ in 0..20 {
            a.record(false);
        }
        assert_eq!(a.level, 16, "never above the configured maximum");
        // Isolated pressure among clean companies: no decrease.
        for _ in 0..10 {
            a.record(true);
            a.record(false);
            a.record(true);
            a.record(false);
        }
        assert_eq!(a.level, 16, "stray 429s do not lower the level");
        for _ in 0..Aimd::RUN {
            a.record(true);
        }
        assert_eq!(a.level, 8, "a run of pressure halves at once");
        // The rest of a burst from companies in flight together does not halve again.
        for _ in 0..5 {
            a.record(true);
        }
        assert_eq!(a.level, 8);
        for _ in 0..3 {
            a.record(true);
        }
        assert_eq!(a.level, 4, "a later run of pressure halves again");
        for _ in 0..4 {
            a.record(false);
        }
        assert_eq!(a.level, 5, "additive increase after a clean window");
        let mut one = Aimd::new(0);
        for _ in 0..Aimd::RUN {
            one.record(true);
        }
        assert_eq!(one.level, 1, "never below one");
    }

    #[test]
    fn run_entries_list_results_in_store_order_with_failures_and_new_names() {
        let mut e = RunEntries::default();
        for (realm, name) in [("1", "One"), ("22", "Two"), ("333", "Three")] {
            e.push(realm, name);
        }
        assert_eq!((e.listed(), e.len()), (3, 0));
        e.finish(2, "Three".into(), (3, 1, 2), None);
        e.finish(
            0,
            "One renamed".into(),
            (0, 0, 0),
            Some(Error::ReconnectNeeded),
        );
        // Company "22" never finished (the run was stopped): not listed.
        assert_eq!(e.len(), 2);
        let lines: Vec<_> = e
            .iter()
            .map(|l| {
                (
                    l.realm,
                    l.company_name,
                    l.rates_synced,
                    l.rates_written,
                    l.rates_unchanged,
                    l.error.cloned(),
                )
            })
            .collect();
        assert_eq!(
            lines,
            vec![
                ("1", "One renamed", 0, 0, 0, Some(Error::ReconnectNeeded)),
                ("333", "Three", 3, 1, 2, None),
            ]
        );
    }

    #[test]
    fn aimd_keeps_its_level_through_scattered_throttles() {
        // About a fifth of the companies throttled once (a few 429s among ~5 calls each),
        // including runs of three in a row: the level stays at the maximum.
        let mut a = Aimd::new(16);
        for _ in 0..50 {
            for _ in 0..13 {
                a.record(false);
            }
            for _ in 0..Aimd::RUN {
                a.record(true);
            }
        }
        assert_eq!(a.level, 16);
        // After a real storm it climbs back although some companies are still throttled.
        for _ in 0..40 {
            a.record(true);
        }
        let low = a.level;
        assert!(low <= 2, "a storm lowers the level ({low})");
        for _ in 0..200 {
            a.record(false);
            a.record(false);
            a.record(false);
            a.record(true);
        }
        assert_eq!(a.level, 16, "climbs back while a quarter are throttled");
    }
}
