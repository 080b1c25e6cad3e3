//! The sync engine (SPEC §5): [`SyncEngine`] owns the parts a sync uses (its fields are its
//! dependency list) and offers the entry points:
//! - [`SyncEngine::sync_now`]: one company now, on demand (refuses a disabled company; a
//!   failure is the `Err`);
//! - [`SyncEngine::sync_company`]: one company for one date, recorded, whatever the end (the
//!   failure is in the [`Outcome`]): what the fleet run and the catch-up call;
//! - [`SyncEngine::sync_all`] (in `fleet.rs`): every company for a date;
//! - [`SyncEngine::backfill`] (in `backfill_run.rs`): one company over a range.
//!
//! How one company is synced is `pipeline.rs` (one method per step); how it talks to
//! QuickBooks is `session.rs`. The engine answers in [`Error`]; it builds no HTTP answers
//! (that is `ops::sync`).

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::NaiveDate;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::error::Error;
use super::fleet::{LastRun, Progress, Running};
use super::pipeline::Attempt;
use super::session::Session;
use crate::alerts::Alerts;
use crate::archive::Archive;
use crate::config::{current, Config, ConfigWatch};
use crate::currency::Currency;
use crate::locks::{lock, KeyLock, KeyedLocks};
use crate::metrics::Metrics;
use crate::qbo::tokens::TokenManager;
use crate::qbo::QboClient;
use crate::store::records::Connection;
use crate::store::Store;
use crate::time::clock::Clock;

/// Company currencies and preferences are re-read after this long.
pub const CURRENCY_CACHE: chrono::Duration = chrono::Duration::hours(24);
/// Default of `quickbooks.writes_in_flight_per_company` (Intuit allows 10 per realm).
pub const DEFAULT_WRITES_IN_FLIGHT: usize = 4;

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
    pub(super) store: Arc<Store>,
    pub(super) tokens: Arc<TokenManager>,
    pub(super) http: reqwest::Client,
    pub(super) archive: Arc<Archive>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) alerts: Arc<Alerts>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) config: ConfigWatch,
    pub(super) tasks: TaskTracker,
    pub(super) shutdown: CancellationToken,
    /// One sync of a company at a time.
    pub(super) locks: KeyedLocks,
    pub(super) running: Mutex<Running>,
    pub(super) progress: Progress,
    pub(super) last_run: Mutex<Option<LastRun>>,
    pub(super) level: AtomicUsize,
    pub(super) backoff_base: Duration,
}

/// Whether QuickBooks can be called for `company`: connected, and its grant not refused.
///
/// # Errors
/// [`Error::Disconnected`], [`Error::ReconnectNeeded`].
pub(super) fn reachable(company: &crate::store::records::Company) -> Result<(), Error> {
    if !company.is_active {
        return Err(Error::Disconnected);
    }
    if let Connection::ReconnectNeeded { .. } = company.connection {
        return Err(Error::ReconnectNeeded);
    }
    Ok(())
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

    pub(super) fn config(&self) -> Arc<Config> {
        current(&self.config)
    }

    pub(super) fn qbo(&self) -> QboClient {
        QboClient::new(self.http.clone(), &self.config().quickbooks)
    }

    pub(super) fn writes_in_flight(&self) -> usize {
        self.config()
            .quickbooks
            .writes_in_flight_per_company
            .clamp(1, 8)
    }

    /// The default rate date (today, or the newest fixing's date before today's is out).
    pub async fn default_date(&self) -> NaiveDate {
        self.archive.default_date().await
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

    pub(super) fn company_lock(&self, realm: &str) -> KeyLock<'_> {
        self.locks.get(realm)
    }

    /// Syncs one company now, on demand (the admin's "sync REALM"): refuses a disabled
    /// company; a failed sync (recorded like any attempt) is the `Err`.
    ///
    /// # Errors
    /// Unknown company, sync disabled, and every failure of the sync itself.
    pub async fn sync_now(&self, realm: &str, date: NaiveDate) -> Result<Outcome, Error> {
        let company = self
            .store
            .company(realm)
            .await?
            .ok_or_else(|| Error::UnknownCompany(realm.to_string()))?;
        if !company.sync_enabled {
            return Err(Error::SyncDisabled(realm.to_string()));
        }
        let outcome = self.sync_company(realm, date).await;
        match outcome.error {
            None => Ok(outcome),
            Some(e) => Err(e),
        }
    }

    /// Syncs one company for one date and records the attempt (the fleet run and the
    /// catch-up call this). Never panics; every failure — an unknown company, the sync's
    /// own, or the store's while recording — is the [`Outcome`]'s `error`, the one place a
    /// company's failure is reported.
    pub async fn sync_company(&self, realm: &str, date: NaiveDate) -> Outcome {
        let lock = self.company_lock(realm);
        let _g = lock.lock().await;
        let mut attempt = Attempt::default();
        let (name, error) = match self.store.company(realm).await {
            Ok(Some(company)) => {
                let name = company.company_name.clone();
                tracing::info!(realm_id = realm, fixing_date = %date, "Company {realm}: Syncing rates for {date}");
                let error = self.sync_pipeline(company, date, &mut attempt).await.err();
                let recorded = self.record(realm, date, &attempt, error.as_ref()).await;
                (name, error.or(recorded.err()))
            }
            Ok(None) => (
                String::new(),
                Some(Error::UnknownCompany(realm.to_string())),
            ),
            Err(e) => (String::new(), Some(e.into())),
        };
        Outcome {
            realm: realm.to_string(),
            company_name: name,
            date,
            rates_synced: attempt.written + attempt.unchanged,
            rates_written: attempt.written,
            rates_unchanged: attempt.unchanged,
            error,
            pressure: attempt.pressure,
        }
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
            .company(realm)
            .await?
            .ok_or_else(|| Error::UnknownCompany(realm.to_string()))?;
        reachable(&company)?;
        let token = self.tokens.access_token(realm).await?;
        let session = Session::new(self, realm, token);
        let read = session.refresh_company_cache(&mut company).await;
        if read.is_err() && session.disconnected.load(Relaxed) {
            return Err(Error::Disconnected);
        }
        read?;
        Ok(company.home_currency)
    }
}
