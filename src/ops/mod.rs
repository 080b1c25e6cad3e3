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

pub mod backfill;
pub mod companies;
pub mod connect;
pub mod error;
pub mod landing;
pub mod metrics;
pub mod migrate;
pub mod rates;
pub mod snapshot;
pub mod sync;
pub use error::{ApiError, Kind};

use std::net::SocketAddr;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alerts::Alerts;
use crate::archive::Archive;
use crate::boa::model::TableKind;
use crate::config::{current, Config, ConfigWatch};
use crate::metrics::Metrics;
use crate::qbo::tokens::TokenManager;
use crate::qbo::QboClient;
use crate::scheduler::clock::Clock;
use crate::scheduler::runner::Scheduler;
use crate::scheduler::time::{
    last_business_day_publication, local_date, previous_business_day, rfc3339,
};
use crate::store::Store;
use crate::sync::SyncEngine;
use snapshot::CompanySnapshot;

/// Result of an operation.
pub type OpResult = Result<Value, ApiError>;

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
    /// Access tokens and Intuit OAuth.
    pub tokens: Arc<TokenManager>,
    /// Alerts.
    pub alerts: Arc<Alerts>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Wall time.
    pub clock: Arc<dyn Clock>,
    /// The HTTP client for Intuit (one pool).
    pub http_client: reqwest::Client,
    /// Key of the HMAC that signs OAuth state cookies.
    pub hmac_key: Vec<u8>,
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
    pub fn companies_snapshot(
        &self,
    ) -> Result<Arc<snapshot::CompanySnapshot>, crate::store::Error> {
        self.snapshot.get(&self.store, &self.config(), self.now())
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
pub fn health_reasons(
    ctx: &Ctx,
    companies: &CompanySnapshot,
) -> Result<Vec<String>, crate::store::Error> {
    let mut reasons = Vec::new();
    let config = ctx.config();
    let tz = config.schedule.timezone;
    let now = ctx.now();
    let today = ctx.today();
    if config.schedule.enabled {
        let holidays = ctx.archive.holidays()?;
        let mut expected = last_business_day_publication(now, tz, config.schedule.give_up_at);
        let mut guard = 0;
        while holidays.contains(&expected) && guard < 31 {
            expected = previous_business_day(expected);
            guard += 1;
        }
        match ctx.store.table_on_or_before(TableKind::Main, today)? {
            None => reasons.push("no BoA fixing is stored".to_string()),
            Some(t) if t.table.date < expected => reasons.push(format!(
                "the newest BoA fixing is dated {}; the fixing of {expected} should be stored by now",
                t.table.date
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
    if let Some(last) = ctx.archive.scrapes(1)?.first() {
        if !last.success {
            reasons.push(format!(
                "the last BoA scrape failed at {}: {}",
                rfc3339(last.at),
                last.outcome
            ));
        }
    }
    Ok(reasons)
}

/// `GET /health`: the brief's JSON from the store's real counts (the company snapshot), with
/// `status` `healthy` or `degraded` (and the reasons); `unhealthy` + 503 only when the store
/// cannot be read.
///
/// The snapshot it reads may need the store's first pass over the companies (the first
/// request after start): that runs on the blocking pool, never on an async worker.
pub async fn health(ctx: &Arc<Ctx>) -> (u16, Value) {
    let c = ctx.clone();
    match tokio::task::spawn_blocking(move || health_now(&c)).await {
        Ok(answer) => answer,
        Err(e) => (
            503,
            json!({"status": "unhealthy", "reasons": [format!("health check failed: {e}")]}),
        ),
    }
}

fn health_now(ctx: &Ctx) -> (u16, Value) {
    let result = ctx.companies_snapshot().and_then(|snapshot| {
        let reasons = health_reasons(ctx, &snapshot)?;
        Ok((snapshot, reasons))
    });
    match result {
        Ok((snapshot, reasons)) => {
            let counts = &snapshot.counts;
            (
                200,
                json!({
                    "status": if reasons.is_empty() { "healthy" } else { "degraded" },
                    "total_companies": counts.total,
                    "active_companies": counts.active,
                    "companies_with_expired_tokens": counts.reconnect_needed,
                    "last_sync": counts.last_sync.map(rfc3339),
                    "reasons": reasons,
                }),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "health: store unreadable");
            (
                503,
                json!({"status": "unhealthy", "reasons": [format!("store unreadable: {e}")]}),
            )
        }
    }
}

fn run_json(r: &crate::scheduler::runner::RunRecord) -> Value {
    json!({
        "date": r.date.to_string(),
        "started_at": rfc3339(r.started_at),
        "finished_at": rfc3339(r.finished_at),
        "outcome": r.outcome,
    })
}

/// `status`: version, uptime, store, last fixing, schedule, sync-all progress, counts.
///
/// # Errors
/// Store failure.
pub fn status(ctx: &Ctx) -> OpResult {
    let snapshot = ctx.companies_snapshot()?;
    let counts = &snapshot.counts;
    let reasons = health_reasons(ctx, &snapshot)?;
    let today = ctx.today();
    let mut last = serde_json::Map::new();
    for kind in [TableKind::Main, TableKind::Minor] {
        if let Some(t) = ctx.store.table_on_or_before(kind, today)? {
            last.insert(
                kind.as_str().into(),
                json!({"date": t.table.date.to_string(), "stored_at": rfc3339(t.stored_at), "published_time": t.table.published_time.map(|p| p.format("%H:%M").to_string())}),
            );
        }
    }
    let config = ctx.config();
    let progress = ctx.engine.progress();
    let load = |a: &std::sync::atomic::AtomicUsize| a.load(std::sync::atomic::Ordering::Relaxed);
    Ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "started_at": rfc3339(ctx.started_at),
        "uptime_secs": (ctx.now() - ctx.started_at).num_seconds(),
        "environment": config.environment,
        "http_listen": ctx.http_addr.to_string(),
        "control_socket": config.control_socket.display().to_string(),
        "store": {
            "path": ctx.store.path().display().to_string(),
            "schema_version": ctx.store.schema_version(),
            "size_bytes": ctx.store.size_on_disk(),
            "fixing_tables": ctx.store.table_count(),
        },
        "last_fixing": last,
        "companies": {
            "total": counts.total,
            "active": counts.active,
            "with_expired_tokens": counts.reconnect_needed,
            "stale": counts.waiting,
        },
        "last_sync": counts.last_sync.map(rfc3339),
        "schedule": {
            "enabled": config.schedule.enabled,
            "time": config.schedule.time.format("%H:%M").to_string(),
            "timezone": config.schedule.timezone.name(),
            "next_run": ctx.scheduler.next_run().map(rfc3339),
            "clock_seen": ctx.scheduler.clock_seen().map(rfc3339),
            "last_run": ctx.scheduler.last_run().map(|r| run_json(&r)),
            "last_failed_run": ctx.scheduler.last_failed_run().map(|r| run_json(&r)),
        },
        "bad_records": {
            "current": ctx.store.bad_records().iter().map(|b| json!({"tree": b.tree, "key": b.key_display(), "error": b.error})).collect::<Vec<_>>(),
            "seen": ctx.store.bad_records_seen(),
        },
        "sync_all": {
            "running_for": ctx.engine.running_date().map(|d| d.to_string()),
            "total": load(&progress.total),
            "done": load(&progress.done),
            "failed": load(&progress.failed),
            "companies_in_flight": ctx.engine.companies_in_flight(),
        },
        "health": {"status": if reasons.is_empty() { "healthy" } else { "degraded" }, "reasons": reasons},
    }))
}
