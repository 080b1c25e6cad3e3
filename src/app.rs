//! Wiring: opens the store, builds each service with exactly the parts it uses, starts the
//! HTTP server, the control socket and the scheduler, tells systemd when ready, applies
//! SIGHUP reloads, and drains on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alerts::{Alerts, WebhookSink};
use crate::archive::Archive;
use crate::config::{current, Config};
use crate::connections::Connections;
use crate::logging::LogHandle;
use crate::metrics::Metrics;
use crate::ops::Ctx;
use crate::qbo::oauth::OAuthClient;
use crate::qbo::tokens::TokenManager;
use crate::scheduler::runner::{self, Scheduler};
use crate::shutdown::Event;
use crate::store::Store;
use crate::sync::{engine, SyncEngine};
use crate::time::clock::Clock;
use crate::{control, http, notify};

/// How long in-flight work may take to finish after SIGTERM (SPEC §8: 20 s).
pub const DRAIN_BUDGET: Duration = Duration::from_secs(20);

/// Builds every service around an open store.
///
/// # Errors
/// The HTTP client cannot be built, or the generated HMAC key cannot be stored.
pub async fn build(
    config: watch::Receiver<Arc<Config>>,
    store: Arc<Store>,
    http_addr: SocketAddr,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Arc<Ctx>> {
    let c = current(&config);
    let http_client = crate::qbo::http_client(Duration::from_secs(c.quickbooks.timeout_secs))?;
    let tasks = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let tokens = Arc::new(TokenManager::new(
        store.clone(),
        OAuthClient::new(http_client.clone(), &c.quickbooks),
        clock.clone(),
        metrics.clone(),
    ));
    let sink = WebhookSink::new(
        http_client.clone(),
        config.clone(),
        tasks.clone(),
        shutdown.clone(),
    );
    let alerts = Arc::new(Alerts::new(Arc::new(sink), clock.clone()));
    let archive = Arc::new(Archive::new(
        store.clone(),
        clock.clone(),
        config.clone(),
        metrics.clone(),
    ));
    let engine = Arc::new(SyncEngine::new(engine::Parts {
        store: store.clone(),
        tokens: tokens.clone(),
        http: http_client.clone(),
        archive: archive.clone(),
        clock: clock.clone(),
        alerts: alerts.clone(),
        metrics: metrics.clone(),
        config: config.clone(),
        tasks: tasks.clone(),
        shutdown: shutdown.clone(),
    }));
    let scheduler = Arc::new(Scheduler::new(runner::Parts {
        store: store.clone(),
        archive: archive.clone(),
        engine: engine.clone(),
        tokens: tokens.clone(),
        alerts: alerts.clone(),
        clock: clock.clone(),
        config: config.clone(),
        shutdown: shutdown.clone(),
    }));
    let hmac_key = match &c.secret_key {
        Some(k) => k.expose().as_bytes().to_vec(),
        None => match store.meta_secret("secret_key").await? {
            Some(k) => k,
            None => {
                let k: [u8; 32] = rand::random();
                store.put_meta_secret("secret_key", &k).await?;
                k.to_vec()
            }
        },
    };
    let connections = Arc::new(Connections::new(
        store.clone(),
        tokens.clone(),
        http_client.clone(),
        config.clone(),
        clock.clone(),
        hmac_key,
    ));
    Ok(Arc::new(Ctx {
        config,
        store,
        archive,
        engine,
        scheduler,
        role: Arc::new(crate::scheduler::lead::RoleCell::new()),
        tokens,
        connections,
        alerts,
        metrics,
        started_at: clock.now(),
        clock,
        http_client,
        http_addr,
        tasks,
        shutdown,
        snapshot: crate::ops::snapshot::SnapshotHolder::new(),
        facts: crate::ops::facts::FactsHolder::default(),
    }))
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
    let store = match &config.storage.backend {
        crate::config::Backend::Sled => {
            Store::open_sled(&config.storage.data_dir, &config.storage.identity_file)
        }
        crate::config::Backend::Postgres { url } => {
            Store::open_postgres(url.expose(), &config.storage.identity_file).await
        }
    }
    .context("opening the store")?;
    store.size_for_companies_in_flight(config.quickbooks.max_concurrent_companies);
    let store = Arc::new(store);
    let http_addr = listeners.http.local_addr()?;
    let (config_tx, config_rx) = watch::channel(Arc::new(config));
    let state = build(config_rx, store, http_addr, clock).await?;

    let http_server = http::serve_on_own_thread(
        listeners.http,
        state.clone(),
        state.shutdown.child_token(),
        tokio::runtime::Handle::current(),
    )
    .await
    .context("starting the HTTP thread")?;
    state.tasks.spawn(http_server);
    state.tasks.spawn(crate::ops::keep_health_facts(
        state.clone(),
        state.shutdown.child_token(),
    ));
    state.tasks.spawn(control::server::serve(
        listeners.control,
        state.clone(),
        state.shutdown.child_token(),
    ));
    state.tasks.spawn(crate::scheduler::lead::run(
        state.scheduler.clone(),
        state.store.clone(),
        state.config().storage.leader_lease,
        state.role.clone(),
        state.shutdown.child_token(),
    ));

    // The company tally's one pass over the records (store::tally), made now off the request
    // path, so the first /health or status after start does not wait for it.
    let warm = state.clone();
    state.tasks.spawn(async move {
        if let Err(e) = warm.store.company_tally(warm.now()).await {
            tracing::warn!(error = %e, "counting the companies failed; the first answer that needs the counts retries");
        }
    });

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
            Some(Event::Reload) => reload(&state, &config_tx, log.as_ref()),
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

fn reload(state: &Ctx, config_tx: &watch::Sender<Arc<Config>>, log: Option<&LogHandle>) {
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
            state
                .store
                .size_for_companies_in_flight(new.quickbooks.max_concurrent_companies);
            config_tx.send_replace(Arc::new(new));
            tracing::info!("configuration reloaded");
        }
        Err(e) => {
            tracing::error!(error = %e, "configuration reload refused; keeping the old configuration")
        }
    }
    notify::reloaded();
}
