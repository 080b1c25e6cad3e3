//! Log setup: journald with structured fields when systemd connected stderr to the journal
//! (`JOURNAL_STREAM`), else human-readable stderr. The filter can be swapped on SIGHUP.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Changes the active log filter (SIGHUP). `RUST_LOG`, when set, always wins.
pub struct LogHandle {
    handle: reload::Handle<EnvFilter, Registry>,
}

impl LogHandle {
    /// Applies `level` (a filter directive) unless `RUST_LOG` is set.
    pub fn set_level(&self, level: &str) {
        if std::env::var_os("RUST_LOG").is_some() {
            return;
        }
        if let Ok(f) = EnvFilter::try_new(level) {
            let _ = self.handle.reload(f);
        }
    }
}

fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the global subscriber for the daemon. Returns the reload handle.
pub fn init_daemon(level: &str) -> LogHandle {
    let (filter, handle) = reload::Layer::new(filter(level));
    let registry = tracing_subscriber::registry().with(filter);
    let journald = std::env::var_os("JOURNAL_STREAM")
        .and_then(|_| tracing_journald::layer().ok())
        .map(|l| l.with_syslog_identifier("boa-exchange".into()));
    match journald {
        Some(j) => {
            let _ = registry.with(j).try_init();
        }
        None => {
            let _ = registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                        .with_target(false),
                )
                .try_init();
        }
    }
    LogHandle { handle }
}

/// Quiet stderr logging for the admin client (warnings only unless `RUST_LOG`).
pub fn init_client() {
    let _ = tracing_subscriber::registry()
        .with(filter("warn"))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false),
        )
        .try_init();
}
