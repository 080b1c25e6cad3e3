//! Wiring: opens the store, builds the shared state, starts the HTTP server, the control
//! socket and background tasks, tells systemd when ready, and drains on shutdown.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::fixings::FetchGate;
use crate::logging::LogHandle;
use crate::qbo::oauth::OAuthClient;
use crate::qbo::tokens::TokenManager;
use crate::qbo::QboClient;
use crate::scheduler::clock::Clock;
use crate::shutdown::Event;
use crate::store::Store;
use crate::{control, http, notify};

/// How long in-flight work may take to finish after SIGTERM (SPEC §8: 20 s).
pub const DRAIN_BUDGET: Duration = Duration::from_secs(20);

/// State shared by every task and request handler.
pub struct AppState {
    config: RwLock<Arc<Config>>,
    /// The store (one per process).
    pub store: Arc<Store>,
    /// When the daemon started.
    pub started_at: DateTime<Utc>,
    /// The address the HTTP API actually listens on.
    pub http_addr: SocketAddr,
    /// Cancelled when shutdown begins.
    pub shutdown: CancellationToken,
    /// Every background task, joined at shutdown.
    pub tasks: TaskTracker,
    /// Wall time (injected so tests can move the calendar).
    pub clock: Arc<dyn Clock>,
    /// One BoA scrape at a time; recent results reused.
    pub fetch_gate: FetchGate,
    /// The HTTP client for Intuit calls (connection pool shared by every company).
    pub http_client: reqwest::Client,
    /// Access tokens per company.
    pub tokens: TokenManager,
    /// Key of the HMAC that signs OAuth state cookies.
    pub hmac_key: Vec<u8>,
    /// Per-IP request limiter.
    pub limiter: crate::http::limit::RateLimiter,
    /// The sync engine's shared state.
    pub sync: crate::sync::SyncEngine,
    /// Alerts raised and not yet cleared.
    pub alerts: crate::alerts::Alerts,
    next_run: std::sync::Mutex<Option<DateTime<Utc>>>,
    /// Set when synced rates were superseded (a revised or late fixing); the scheduler then
    /// runs a catch-up.
    pub resync_needed: std::sync::atomic::AtomicBool,
}

impl AppState {
    /// Builds the state around an open store.
    ///
    /// # Errors
    /// The HTTP client cannot be built, or the generated HMAC key cannot be stored.
    pub async fn new(
        config: Config,
        store: Arc<Store>,
        http_addr: SocketAddr,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Arc<AppState>> {
        let http_client =
            crate::qbo::http_client(Duration::from_secs(config.quickbooks.timeout_secs))?;
        let tokens = TokenManager::new(
            store.clone(),
            OAuthClient::new(http_client.clone(), &config.quickbooks),
        );
        let hmac_key = match &config.secret_key {
            Some(k) => k.expose().as_bytes().to_vec(),
            None => match store.meta_secret("secret_key")? {
                Some(k) => k,
                None => {
                    let k: [u8; 32] = rand::random();
                    store.put_meta_secret("secret_key", &k).await?;
                    k.to_vec()
                }
            },
        };
        Ok(Arc::new(AppState {
            config: RwLock::new(Arc::new(config)),
            store,
            started_at: clock.now(),
            http_addr,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            clock,
            fetch_gate: FetchGate::default(),
            http_client,
            tokens,
            hmac_key,
            limiter: crate::http::limit::RateLimiter::default(),
            sync: crate::sync::SyncEngine::default(),
            alerts: crate::alerts::Alerts::default(),
            next_run: std::sync::Mutex::new(None),
            resync_needed: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// The accounting API client for the current config.
    pub fn qbo(&self) -> QboClient {
        QboClient::new(self.http_client.clone(), &self.config().quickbooks)
    }

    /// The next scheduled run, as the scheduler computed it.
    pub fn next_run(&self) -> Option<DateTime<Utc>> {
        match self.next_run.lock() {
            Ok(g) => *g,
            Err(p) => *p.into_inner(),
        }
    }

    /// Records the next scheduled run (scheduler only).
    pub fn set_next_run(&self, at: Option<DateTime<Utc>>) {
        match self.next_run.lock() {
            Ok(mut g) => *g = at,
            Err(p) => *p.into_inner() = at,
        }
    }

    /// Now, by the injected clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The current configuration (swapped whole on SIGHUP).
    pub fn config(&self) -> Arc<Config> {
        match self.config.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_config(&self, c: Config) {
        match self.config.write() {
            Ok(mut g) => *g = Arc::new(c),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(c),
        }
    }

    /// Today's date in the configured zone (Europe/Tirane).
    pub fn today(&self) -> NaiveDate {
        self.now()
            .with_timezone(&self.config().schedule.timezone)
            .date_naive()
    }
}

/// The listeners the daemon serves, bound by the caller.
pub struct Listeners {
    /// The HTTP API.
    pub http: TcpListener,
    /// The control socket (already chmod 0660).
    pub control: UnixListener,
}

/// Runs the daemon until a [`Event::Stop`] arrives on `events` (main forwards SIGTERM,
/// SIGINT and SIGHUP there; tests send events directly). The library entry point `main` and
/// tests share.
///
/// # Errors
/// Start-up failures (store, identity); a clean shutdown returns `Ok`.
pub async fn run(
    config: Config,
    listeners: Listeners,
    mut events: tokio::sync::mpsc::UnboundedReceiver<Event>,
    log: Option<LogHandle>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<()> {
    let store = Store::open(&config.storage.data_dir, &config.storage.identity_file)
        .context("opening the store")?;
    let store = Arc::new(store);
    let http_addr = listeners.http.local_addr()?;
    let state = AppState::new(config, store, http_addr, clock).await?;

    state.tasks.spawn(http::serve(
        listeners.http,
        state.clone(),
        state.shutdown.child_token(),
    ));
    state.tasks.spawn(control::server::serve(
        listeners.control,
        state.clone(),
        state.shutdown.child_token(),
    ));
    state.tasks.spawn(crate::scheduler::runner::run(
        state.clone(),
        state.shutdown.child_token(),
    ));

    tracing::info!(listen = %http_addr, socket = %state.config().control_socket.display(), "boa-exchange ready");
    notify::ready(&format!("serving on {http_addr}"));

    loop {
        match events.recv().await {
            Some(Event::Stop(sig)) => {
                tracing::info!(signal = sig, "shutting down");
                break;
            }
            None => {
                tracing::info!("shutting down (event channel closed)");
                break;
            }
            Some(Event::Reload) => reload(&state, log.as_ref()),
        }
    }

    notify::stopping();
    state.shutdown.cancel();
    state.tasks.close();
    if tokio::time::timeout(DRAIN_BUDGET, state.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("drain budget exceeded; stopping with tasks still running");
    }
    state.store.flush().await.context("flushing the store")?;
    tracing::info!("stopped");
    Ok(())
}

fn reload(state: &AppState, log: Option<&LogHandle>) {
    notify::reloading();
    let old = state.config();
    match Config::load_with_env(old.source.as_deref(), &crate::config::ProcessEnv) {
        Ok(new) => {
            if new.server.listen != old.server.listen
                || new.storage.data_dir != old.storage.data_dir
                || new.control_socket != old.control_socket
            {
                tracing::warn!(
                    "server.listen, storage.* and control.socket change only on restart"
                );
            }
            if let Some(log) = log {
                log.set_level(&new.log_level);
            }
            state
                .tokens
                .set_oauth(OAuthClient::new(state.http_client.clone(), &new.quickbooks));
            state.set_config(new);
            tracing::info!("configuration reloaded");
        }
        Err(e) => {
            tracing::error!(error = %e, "configuration reload refused; keeping the old configuration")
        }
    }
    notify::reloaded();
}
