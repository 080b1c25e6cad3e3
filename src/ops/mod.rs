//! Operations: the one door between the interfaces (HTTP, control socket) and the services.
//! Each operation turns a request into service calls and the result into the JSON answer
//! both interfaces send, and maps domain errors to an [`ApiError`] (status, code, exit
//! code). Side effects that belong to an operation (sync a company just connected or
//! re-enabled) live here, so every interface gets them.
//!
//! - [`Ctx`]: the services, built once by `app`.
//! - [`companies`], [`connect`], [`rates`], [`sync`], [`metrics`]: the operations.
//! - [`error`]: the table from domain errors to answers.
//! - [`snapshot`]: the company counts behind `/health`, `/metrics` and `status`.
//! - [`facts`]: the fixing, holiday and scrape facts behind `/health` and `status`.

pub mod backfill;
pub mod backup;
pub mod companies;
pub mod connect;
pub mod error;
pub mod facts;
pub mod landing;
pub mod metrics;
pub mod migrate;
pub mod rates;
pub mod snapshot;
pub mod sync;
pub use error::{ApiError, Kind};

use std::net::SocketAddr;
use std::sync::Arc;

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alerts::Alerts;
use crate::archive::Archive;
use crate::config::{current, Config, ConfigWatch};
use crate::connections::Connections;
use crate::fixing::TableKind;
use crate::metrics::Metrics;
use crate::qbo::tokens::TokenManager;
use crate::qbo::QboClient;
use crate::scheduler::runner::Scheduler;
use crate::store::Store;
use crate::sync::SyncEngine;
use crate::time::calendar::{
    last_business_day_publication, local_date, previous_business_day, rfc3339,
};
use crate::time::clock::Clock;
use facts::HealthFacts;
use snapshot::CompanySnapshot;

/// Result of an operation: its typed answer (`Serialize`; the interfaces send its JSON) or
/// the refusal. `Value` for the connection answers not yet typed (`connect`, `migrate`).
pub type OpResult<T = Value> = Result<T, ApiError>;

/// An error inside an answer that is itself a success (`{"code", "message"}`): a company's
/// failure in the sync-all answer, a backfill that stopped part way.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorEntry {
    /// The error's snake_case code.
    pub code: String,
    /// Its sentence.
    pub message: String,
}

impl ErrorEntry {
    /// The code and sentence of an error answer.
    pub fn of(e: &ApiError) -> ErrorEntry {
        ErrorEntry {
            code: e.code.to_string(),
            message: e.message.clone(),
        }
    }
}

/// Checks that a typed answer serializes to exactly the text of `old` (the `json!` the
/// answer was built with before it was typed: same keys, same order, same values) and
/// that the text reads back into the same answer (what the CLI does).
#[cfg(test)]
#[track_caller]
pub(crate) fn assert_wire_json<T>(typed: &T, old: &Value)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let text = serde_json::to_string(typed).unwrap();
    assert_eq!(text, old.to_string());
    assert_eq!(&serde_json::from_str::<T>(&text).unwrap(), typed);
    assert_eq!(&T::deserialize(old).unwrap(), typed);
}

/// What operations reach: the services (each owning its parts) and the daemon's identity.
pub struct Ctx {
    /// The configuration (replaced whole on SIGHUP).
    pub config: ConfigWatch,
    /// The store.
    pub store: Arc<Store>,
    /// The fixing archive.
    pub archive: Arc<Archive>,
    /// The sync engine.
    pub engine: Arc<SyncEngine>,
    /// The scheduler.
    pub scheduler: Arc<Scheduler>,
    /// Whether this node runs the schedule (leader) or stands by (SPEC §13).
    pub role: Arc<crate::scheduler::lead::RoleCell>,
    /// Access tokens and Intuit OAuth.
    pub tokens: Arc<TokenManager>,
    /// Connecting, taking over and disconnecting companies.
    pub connections: Arc<Connections>,
    /// Alerts.
    pub alerts: Arc<Alerts>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Wall time.
    pub clock: Arc<dyn Clock>,
    /// The HTTP client for Intuit (one pool).
    pub http_client: reqwest::Client,
    /// When the daemon started.
    pub started_at: DateTime<Utc>,
    /// The address the HTTP API listens on.
    pub http_addr: SocketAddr,
    /// Background work spawned by operations (joined at shutdown).
    pub tasks: TaskTracker,
    /// Cancelled when the daemon stops.
    pub shutdown: CancellationToken,
    /// The company counts behind `/health`, `/metrics` and `status` (no scan per request).
    pub snapshot: snapshot::SnapshotHolder,
    /// The fixing, holiday and scrape facts behind `/health` and `status`.
    pub facts: facts::FactsHolder,
}

impl Ctx {
    /// Runs `work` as a task on the tracker and waits for it: a client that goes away
    /// (hyper drops its request) cancels nothing, and the shutdown drain waits for it. For
    /// operations whose half-done state would lose something (a token rotation, a grant, an
    /// attempt's records). `what` names it in the error if the task itself fails.
    pub async fn tracked<T: Send + 'static>(
        &self,
        what: &str,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.tasks
            .spawn(work)
            .await
            .map_err(|e| ApiError::internal(format!("the {what} task failed: {e}")))
    }

    /// The current configuration.
    pub fn config(&self) -> Arc<Config> {
        current(&self.config)
    }

    /// Now, by the injected clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Today in the configured zone (Europe/Tirane).
    pub fn today(&self) -> NaiveDate {
        local_date(self.now(), self.config().schedule.timezone)
    }

    /// The company snapshot: at most [`snapshot::MAX_AGE`] old and never older than the
    /// last company change.
    ///
    /// # Errors
    /// Store failure while recomputing.
    pub async fn companies_snapshot(
        &self,
    ) -> Result<Arc<snapshot::CompanySnapshot>, crate::store::Error> {
        self.snapshot
            .get(&self.store, &self.config(), self.now())
            .await
    }

    /// The facts the health reasons read besides the companies: at most
    /// [`facts::MAX_AGE`] old and never older than the last write of them through this
    /// store.
    ///
    /// # Errors
    /// Store failure while re-reading.
    pub async fn health_facts(&self) -> Result<Arc<HealthFacts>, crate::store::Error> {
        self.facts
            .get(
                &self.store,
                &self.archive,
                &self.config(),
                self.today(),
                self.now(),
            )
            .await
    }

    /// The health facts when they need no read of the store (see [`health_at_hand`]).
    pub fn health_facts_at_hand(&self) -> Option<Arc<HealthFacts>> {
        self.facts
            .at_hand(&self.store, &self.config(), self.today(), self.now())
    }

    /// The accounting API client for the current config.
    pub fn qbo(&self) -> QboClient {
        QboClient::new(self.http_client.clone(), &self.config().quickbooks)
    }
}

/// Parses a `YYYY-MM-DD` parameter (400 `bad_date` otherwise).
///
/// # Errors
/// [`ApiError`] 400.
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

/// Why the daemon is degraded (empty = healthy): a stale fixing, companies not synced for
/// over 24 business hours, companies needing a reconnect, a failed last scrape.
///
/// # Errors
/// Store failure (the caller answers `unhealthy`).
pub async fn health_reasons(
    ctx: &Ctx,
    companies: &CompanySnapshot,
) -> Result<Vec<String>, crate::store::Error> {
    let facts = ctx.health_facts().await?;
    Ok(reasons_from(ctx, companies, &facts))
}

fn reasons_from(ctx: &Ctx, companies: &CompanySnapshot, facts: &HealthFacts) -> Vec<String> {
    let mut reasons = Vec::new();
    let config = ctx.config();
    let tz = config.schedule.timezone;
    let now = ctx.now();
    if config.schedule.enabled {
        let mut expected = last_business_day_publication(now, tz, config.schedule.give_up_at);
        let mut guard = 0;
        while facts.holidays.contains(&expected) && guard < 31 {
            expected = previous_business_day(expected);
            guard += 1;
        }
        match facts.newest_main {
            None => reasons.push("no BoA fixing is stored".to_string()),
            Some(date) if date < expected => reasons.push(format!(
                "the newest BoA fixing is dated {date}; the fixing of {expected} should be stored by now"
            )),
            Some(_) => {}
        }
        let stale = companies.counts.waiting;
        if stale > 0 {
            reasons.push(format!(
                "{stale} companies not synced for over 24 business hours"
            ));
        }
    }
    let reconnect = companies.counts.reconnect_needed;
    if reconnect > 0 {
        reasons.push(format!(
            "{reconnect} companies need to reconnect (token refresh failed)"
        ));
    }
    let bad = ctx.store.bad_records();
    if !bad.is_empty() {
        reasons.push(format!(
            "{} stored records cannot be decoded and are skipped: {}",
            bad.len(),
            bad.iter()
                .map(|b| b.key_display())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(last) = &facts.last_scrape {
        if !last.success {
            reasons.push(format!(
                "the last BoA scrape failed at {}: {}",
                rfc3339(last.at),
                last.outcome
            ));
        }
    }
    reasons
}

/// The answer of `GET /health`. Fields in alphabetical order: the order they have always
/// had on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HealthAnswer {
    /// The store was read: `healthy`, or `degraded` with the reasons.
    Read {
        /// Companies not disconnected.
        active_companies: usize,
        /// Companies that need to reconnect.
        companies_with_expired_tokens: usize,
        /// The newest sync of any company (RFC 3339 UTC), `null` before the first.
        last_sync: Option<String>,
        /// Why it is degraded (empty when healthy).
        reasons: Vec<String>,
        /// `leader` or `standby` (SPEC §13; a sled daemon is its own leader).
        role: String,
        /// `healthy` or `degraded`.
        status: String,
        /// All companies.
        total_companies: usize,
    },
    /// The store could not be read (503).
    Unhealthy {
        /// Why.
        reasons: Vec<String>,
        /// `leader` or `standby`.
        role: String,
        /// `unhealthy`.
        status: String,
    },
}

impl HealthAnswer {
    fn unhealthy(why: String, role: &str) -> HealthAnswer {
        HealthAnswer::Unhealthy {
            reasons: vec![why],
            role: role.into(),
            status: "unhealthy".into(),
        }
    }
}

/// `healthy` when there is no reason to be degraded.
fn health_word(reasons: &[String]) -> String {
    if reasons.is_empty() {
        "healthy"
    } else {
        "degraded"
    }
    .into()
}

/// `GET /health`: the brief's JSON from the store's real counts (the company snapshot), with
/// `status` `healthy` or `degraded` (and the reasons); `unhealthy` + 503 only when the store
/// cannot be read.
///
/// The snapshot it reads may need the store's first pass over the companies (the first
/// request after start): the store runs that on the blocking pool, never on an async worker.
pub async fn health(ctx: &Arc<Ctx>) -> (u16, HealthAnswer) {
    health_now(ctx, None).await
}

/// [`health`], only when the health facts are at hand ([`Ctx::health_facts_at_hand`]): then
/// the one thing it may wait for is the company counts, which need no pooled store
/// connection (sled keeps them in memory; PostgreSQL reads them on a lane of their own).
/// This is what the HTTP thread answers by itself (`http::serve_on_own_thread`); `None`
/// sends the request on to the main runtime.
pub async fn health_at_hand(ctx: &Arc<Ctx>) -> Option<(u16, HealthAnswer)> {
    let facts = ctx.health_facts_at_hand()?;
    Some(health_now(ctx, Some(facts)).await)
}

/// Keeps the health facts at hand until `stop`, so that [`health_at_hand`] answers probes
/// however seldom they come: every second, reads them again when they would be out of date
/// within [`KEEP_AHEAD`] (a write through the store makes them out of date at once; the next
/// pass reads them again). On PostgreSQL three short reads every ~3 s per node.
pub async fn keep_health_facts(ctx: Arc<Ctx>, stop: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
        let config = ctx.config();
        let read = ctx.facts.get_fresh_for(
            &ctx.store,
            &ctx.archive,
            &config,
            ctx.today(),
            ctx.now(),
            KEEP_AHEAD,
        );
        // A database that does not answer must not hold up the shutdown.
        let read = tokio::select! {
            _ = stop.cancelled() => return,
            r = read => r,
        };
        if let Err(e) = read {
            // `/health` reports it; nothing to add here but a trace.
            tracing::debug!(error = %e, "re-reading the health facts failed");
        }
    }
}

/// How far ahead [`keep_health_facts`] reads the facts again.
const KEEP_AHEAD: chrono::Duration = chrono::Duration::seconds(2);

async fn health_now(ctx: &Ctx, facts: Option<Arc<HealthFacts>>) -> (u16, HealthAnswer) {
    let result = async {
        let facts = async {
            match facts {
                Some(f) => Ok(f),
                None => ctx.health_facts().await,
            }
        };
        let (snapshot, facts) = tokio::try_join!(ctx.companies_snapshot(), facts)?;
        let reasons = reasons_from(ctx, &snapshot, &facts);
        Ok::<_, crate::store::Error>((snapshot, reasons))
    }
    .await;
    let role = ctx.role.get().as_str().to_string();
    let read = |snapshot: &snapshot::CompanySnapshot, reasons: Vec<String>| {
        let counts = &snapshot.counts;
        HealthAnswer::Read {
            active_companies: counts.active,
            companies_with_expired_tokens: counts.reconnect_needed,
            last_sync: counts.last_sync.map(rfc3339),
            status: health_word(&reasons),
            reasons,
            role: role.clone(),
            total_companies: counts.total,
        }
    };
    match result {
        Ok((snapshot, reasons)) => (200, read(&snapshot, reasons)),
        Err(e) if e.is_unavailable() => {
            // The database is away (SPEC §13): the daemon goes on; the counts last read.
            tracing::warn!(error = %e, "health: the store is unavailable");
            let last = ctx.snapshot.last().unwrap_or_default();
            (200, read(&last, vec![format!("store unavailable: {e}")]))
        }
        Err(e) => {
            tracing::error!(error = %e, "health: store unreadable");
            (
                503,
                HealthAnswer::unhealthy(format!("store unreadable: {e}"), &role),
            )
        }
    }
}

/// The answer of `status`: the daemon, its store, the fixings, the schedule, the sync-all
/// in progress and the company counts. Fields (here and in its parts) in alphabetical
/// order: the order they have always had on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusAnswer {
    /// Undecodable stored records.
    pub bad_records: BadRecords,
    /// Company counts.
    pub companies: CompanyCounts,
    /// The control socket's path.
    pub control_socket: String,
    /// `ENVIRONMENT` as given.
    pub environment: String,
    /// As `/health` says.
    pub health: Health,
    /// The HTTP API's address.
    pub http_listen: String,
    /// The newest stored fixing per table (`main`, `minor`) in force today.
    pub last_fixing: BTreeMap<String, LastFixing>,
    /// The newest sync of any company, RFC 3339 UTC.
    pub last_sync: Option<String>,
    /// The daemon's process id.
    pub pid: u32,
    /// `leader` or `standby` (SPEC §13; a sled daemon is its own leader).
    pub role: String,
    /// The daily run.
    pub schedule: Schedule,
    /// RFC 3339 UTC.
    pub started_at: String,
    /// The store.
    pub store: StoreStatus,
    /// The sync-all in progress.
    pub sync_all: SyncAllProgress,
    /// Seconds since the start.
    pub uptime_secs: i64,
    /// The daemon's version.
    pub version: String,
}

/// `status.bad_records`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRecords {
    /// Those undecodable now.
    pub current: Vec<BadRecordEntry>,
    /// How many were met since the start.
    pub seen: u64,
}

/// One undecodable record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRecordEntry {
    /// Why it does not decode.
    pub error: String,
    /// Its key (text, or `0x` and hex).
    pub key: String,
    /// Its tree.
    pub tree: String,
}

/// `status.companies`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompanyCounts {
    /// Not disconnected.
    pub active: usize,
    /// Active companies waiting for a sync (none since the last fixing).
    pub stale: usize,
    /// All.
    pub total: usize,
    /// Needing a reconnect.
    pub with_expired_tokens: usize,
}

/// `status.health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Why it is degraded.
    pub reasons: Vec<String>,
    /// `healthy` or `degraded`.
    pub status: String,
}

/// A table's newest fixing in `status.last_fixing`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastFixing {
    /// Its date.
    pub date: String,
    /// The publication time BoA printed on the page (HH:MM, Tirana), when it printed one.
    pub published_time: Option<String>,
    /// When it was stored, RFC 3339 UTC.
    pub stored_at: String,
}

/// `status.schedule`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// The last time the scheduler's clock was read.
    pub clock_seen: Option<String>,
    /// Whether daily runs happen.
    pub enabled: bool,
    /// The last run that failed.
    pub last_failed_run: Option<ScheduledRun>,
    /// The last run.
    pub last_run: Option<ScheduledRun>,
    /// The next run.
    pub next_run: Option<String>,
    /// `HH:MM`, local.
    pub time: String,
    /// The zone's name.
    pub timezone: String,
}

/// A daily run in `status.schedule`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledRun {
    /// The local date it was for.
    pub date: String,
    /// RFC 3339 UTC.
    pub finished_at: String,
    /// What happened.
    pub outcome: String,
    /// RFC 3339 UTC.
    pub started_at: String,
}

impl ScheduledRun {
    fn of(r: &crate::scheduler::runner::RunRecord) -> ScheduledRun {
        ScheduledRun {
            date: r.date.to_string(),
            finished_at: rfc3339(r.finished_at),
            outcome: r.outcome.clone(),
            started_at: rfc3339(r.started_at),
        }
    }
}

/// `status.store`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStatus {
    /// `sled` or `postgres`.
    pub backend: String,
    /// Stored fixing tables.
    pub fixing_tables: usize,
    /// The store's folder, or the database URL without its password.
    pub path: String,
    /// Its schema.
    pub schema_version: u32,
    /// Its size on disk.
    pub size_bytes: u64,
}

/// `status.sync_all`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncAllProgress {
    /// Companies being synced now.
    pub companies_in_flight: usize,
    /// Companies done.
    pub done: usize,
    /// Companies failed.
    pub failed: usize,
    /// The date of the run in progress, `null` for none.
    pub running_for: Option<String>,
    /// Companies in the run.
    pub total: usize,
}

/// `status`: version, uptime, store, last fixing, schedule, sync-all progress, counts.
///
/// # Errors
/// Store failure.
pub async fn status(ctx: &Ctx) -> OpResult<StatusAnswer> {
    let snapshot = ctx.companies_snapshot().await?;
    let counts = &snapshot.counts;
    let reasons = health_reasons(ctx, &snapshot).await?;
    let today = ctx.today();
    let mut last_fixing = BTreeMap::new();
    for kind in [TableKind::Main, TableKind::Minor] {
        if let Some(t) = ctx.store.table_on_or_before(kind, today).await? {
            let last = LastFixing {
                date: t.table.date.to_string(),
                published_time: t
                    .table
                    .published_time
                    .map(|p| p.format("%H:%M").to_string()),
                stored_at: rfc3339(t.stored_at),
            };
            last_fixing.insert(kind.as_str().to_string(), last);
        }
    }
    let config = ctx.config();
    let store = &ctx.store;
    Ok(StatusAnswer {
        bad_records: BadRecords {
            current: (store.bad_records().iter())
                .map(|b| BadRecordEntry {
                    error: b.error.clone(),
                    key: b.key_display(),
                    tree: b.tree.to_string(),
                })
                .collect(),
            seen: store.bad_records_seen(),
        },
        companies: CompanyCounts {
            active: counts.active,
            stale: counts.waiting,
            total: counts.total,
            with_expired_tokens: counts.reconnect_needed,
        },
        control_socket: config.control_socket.display().to_string(),
        environment: config.environment.clone(),
        health: Health {
            status: health_word(&reasons),
            reasons,
        },
        http_listen: ctx.http_addr.to_string(),
        last_fixing,
        last_sync: counts.last_sync.map(rfc3339),
        pid: std::process::id(),
        role: ctx.role.get().as_str().into(),
        schedule: schedule(ctx, &config).await,
        started_at: rfc3339(ctx.started_at),
        store: StoreStatus {
            backend: store.backend().into(),
            fixing_tables: store.table_count().await?,
            path: store.location(),
            schema_version: store.schema_version(),
            size_bytes: store.size_on_disk().await,
        },
        sync_all: sync_all_progress(ctx),
        uptime_secs: (ctx.now() - ctx.started_at).num_seconds(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

async fn schedule(ctx: &Ctx, config: &Config) -> Schedule {
    let s = &ctx.scheduler;
    Schedule {
        clock_seen: s.clock_seen().map(rfc3339),
        enabled: config.schedule.enabled,
        last_failed_run: s.last_failed_run().await.map(|r| ScheduledRun::of(&r)),
        last_run: s.last_run().await.map(|r| ScheduledRun::of(&r)),
        next_run: s.next_run().map(rfc3339),
        time: config.schedule.time.format("%H:%M").to_string(),
        timezone: config.schedule.timezone.name().into(),
    }
}

fn sync_all_progress(ctx: &Ctx) -> SyncAllProgress {
    let progress = ctx.engine.progress();
    let load = |a: &std::sync::atomic::AtomicUsize| a.load(std::sync::atomic::Ordering::Relaxed);
    SyncAllProgress {
        companies_in_flight: ctx.engine.companies_in_flight(),
        done: load(&progress.done),
        failed: load(&progress.failed),
        running_for: ctx.engine.running_date().map(|d| d.to_string()),
        total: load(&progress.total),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_health_facts_are_kept_at_hand_however_seldom_health_is_asked() {
        use crate::time::clock::{Clock, ManualClock};
        let env: std::collections::HashMap<String, String> = Default::default();
        let config = Config::load_with_env(None, &env).unwrap();
        let (_tx, rx) = tokio::sync::watch::channel(Arc::new(config));
        let store = Arc::new(crate::store::Store::open_temporary().unwrap());
        // Noon in Tirana: the 8 s the test moves never cross midnight (a new `today`).
        let noon = "2026-05-22T10:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let manual = ManualClock::new(noon);
        let clock: Arc<dyn Clock> = Arc::new(manual.clone());
        let addr = "127.0.0.1:1".parse().unwrap();
        let ctx = crate::app::build(rx, store, addr, clock).await.unwrap();
        assert!(ctx.health_facts_at_hand().is_none(), "nothing read yet");
        let stop = tokio_util::sync::CancellationToken::new();
        let keeper = tokio::spawn(keep_health_facts(ctx.clone(), stop.clone()));
        let reads_reach = |n: u64| {
            let ctx = ctx.clone();
            async move {
                for _ in 0..100 {
                    if ctx.facts.reads() >= n {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                panic!("the facts were read {} times, not {n}", ctx.facts.reads());
            }
        };
        reads_reach(1).await;
        assert!(ctx.health_facts_at_hand().is_some());
        // 4 s on: still fresh (5 s), but not 2 s further on: read again already.
        manual.advance(chrono::Duration::seconds(4));
        reads_reach(2).await;
        // 8 s after the first read, the facts read at 4 s are at hand.
        manual.advance(chrono::Duration::seconds(4));
        assert!(ctx.health_facts_at_hand().is_some());
        stop.cancel();
        keeper.await.unwrap();
    }

    #[test]
    fn the_health_answers_are_the_old_json() {
        for (reasons, last_sync) in [
            (vec![], None),
            (
                vec!["a \"b\"".to_string(), "c".to_string()],
                Some("2026-05-22T13:00:09Z"),
            ),
        ] {
            let status = if reasons.is_empty() {
                "healthy"
            } else {
                "degraded"
            };
            let old = json!({
                "status": status,
                "total_companies": 4,
                "active_companies": 3,
                "companies_with_expired_tokens": 1,
                "last_sync": last_sync,
                "reasons": reasons,
                "role": "leader",
            });
            let typed = HealthAnswer::Read {
                active_companies: 3,
                companies_with_expired_tokens: 1,
                last_sync: last_sync.map(str::to_string),
                status: health_word(&reasons),
                reasons,
                role: "leader".into(),
                total_companies: 4,
            };
            assert_wire_json(&typed, &old);
        }
        let old = json!({"status": "unhealthy", "role": "standby", "reasons": [format!("store unreadable: {}", "x")]});
        assert_wire_json(
            &HealthAnswer::unhealthy("store unreadable: x".into(), "standby"),
            &old,
        );
    }

    /// `status` from the same values as the old `json!` (its layout verbatim), with and
    /// without the optional parts.
    #[test]
    fn the_status_answer_is_the_old_json() {
        let run = |date: &str| ScheduledRun {
            date: date.into(),
            finished_at: "2026-05-22T13:00:09Z".into(),
            outcome: "synced 3/3 \"companies\"".into(),
            started_at: "2026-05-22T13:00:00Z".into(),
        };
        let run_json = |r: &ScheduledRun| {
            json!({
                "date": r.date,
                "started_at": r.started_at,
                "finished_at": r.finished_at,
                "outcome": r.outcome,
            })
        };
        for full in [true, false] {
            let mut last = serde_json::Map::new();
            let mut last_fixing = BTreeMap::new();
            let mut bad = vec![];
            if full {
                for kind in ["minor", "main"] {
                    let (date, stored_at) = ("2026-05-22", "2026-05-22T10:31:00Z");
                    last.insert(
                        kind.into(),
                        json!({"date": date, "stored_at": stored_at, "published_time": "10:30"}),
                    );
                    let entry = LastFixing {
                        date: date.into(),
                        published_time: Some("10:30".into()),
                        stored_at: stored_at.into(),
                    };
                    last_fixing.insert(kind.to_string(), entry);
                }
                bad.push(BadRecordEntry {
                    error: "cannot decode".into(),
                    key: "0x00ff".into(),
                    tree: "companies".into(),
                });
            }
            let opt = |s: &str| full.then(|| s.to_string());
            let reasons: Vec<String> = if full { vec!["r".into()] } else { vec![] };
            let typed = StatusAnswer {
                bad_records: BadRecords {
                    current: bad.clone(),
                    seen: 7,
                },
                companies: CompanyCounts {
                    active: 3,
                    stale: 2,
                    total: 4,
                    with_expired_tokens: 1,
                },
                control_socket: "/run/boa-exchange/control.sock".into(),
                environment: "production".into(),
                health: Health {
                    reasons: reasons.clone(),
                    status: health_word(&reasons),
                },
                http_listen: "127.0.0.1:8080".into(),
                last_fixing,
                last_sync: opt("2026-05-22T13:00:09Z"),
                pid: 4242,
                role: "leader".into(),
                schedule: Schedule {
                    clock_seen: opt("2026-05-22T13:00:00Z"),
                    enabled: full,
                    last_failed_run: full.then(|| run("2026-05-21")),
                    last_run: full.then(|| run("2026-05-22")),
                    next_run: opt("2026-05-25T13:00:00Z"),
                    time: "15:00".into(),
                    timezone: "Europe/Tirane".into(),
                },
                started_at: "2026-05-20T08:00:00Z".into(),
                store: StoreStatus {
                    backend: "sled".into(),
                    fixing_tables: 5490,
                    path: "/var/lib/boa-exchange".into(),
                    schema_version: 2,
                    size_bytes: 1 << 33,
                },
                sync_all: SyncAllProgress {
                    companies_in_flight: 2,
                    done: 10,
                    failed: 1,
                    running_for: opt("2026-05-22"),
                    total: 100,
                },
                uptime_secs: 3600,
                version: env!("CARGO_PKG_VERSION").into(),
            };
            let s = &typed.schedule;
            let old = json!({
                "version": env!("CARGO_PKG_VERSION"),
                "pid": 4242,
                "role": "leader",
                "started_at": "2026-05-20T08:00:00Z",
                "uptime_secs": 3600,
                "environment": "production",
                "http_listen": "127.0.0.1:8080",
                "control_socket": "/run/boa-exchange/control.sock",
                "store": {
                    "backend": "sled",
                    "path": "/var/lib/boa-exchange",
                    "schema_version": 2,
                    "size_bytes": 1u64 << 33,
                    "fixing_tables": 5490,
                },
                "last_fixing": last,
                "companies": {
                    "total": 4,
                    "active": 3,
                    "with_expired_tokens": 1,
                    "stale": 2,
                },
                "last_sync": opt("2026-05-22T13:00:09Z"),
                "schedule": {
                    "enabled": full,
                    "time": "15:00",
                    "timezone": "Europe/Tirane",
                    "next_run": s.next_run,
                    "clock_seen": s.clock_seen,
                    "last_run": s.last_run.as_ref().map(run_json),
                    "last_failed_run": s.last_failed_run.as_ref().map(run_json),
                },
                "bad_records": {
                    "current": bad.iter().map(|b| json!({"tree": b.tree, "key": b.key, "error": b.error})).collect::<Vec<_>>(),
                    "seen": 7,
                },
                "sync_all": {
                    "running_for": opt("2026-05-22"),
                    "total": 100,
                    "done": 10,
                    "failed": 1,
                    "companies_in_flight": 2,
                },
                "health": {"status": if reasons.is_empty() { "healthy" } else { "degraded" }, "reasons": reasons},
            });
            assert_wire_json(&typed, &old);
        }
    }
}
