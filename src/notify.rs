//! systemd notification (`sd_notify`): READY, STATUS, STOPPING, WATCHDOG, RELOADING.
//! Every call is a no-op when `NOTIFY_SOCKET` is not set.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// Tells systemd the daemon is ready (store open, listeners bound).
pub fn ready(status: &str) {
    let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A STATUS= line shown by `systemctl status`.
pub fn status(status: &str) {
    let _ = sd_notify::notify(&[NotifyState::Status(status)]);
}

/// Shutdown has begun.
pub fn stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Reload has begun (followed by [`ready`]).
pub fn reloading() {
    let _ = sd_notify::notify(&[NotifyState::Reloading]);
}

/// Reload finished.
pub fn reloaded() {
    let _ = sd_notify::notify(&[NotifyState::Ready]);
}

/// A watchdog keep-alive, sent only when systemd asked for one (`WATCHDOG_USEC`) and at
/// most every half interval, so callers may call it as often as they like (and a reader
/// that stops reading the notify socket can never block a worker with a full queue).
pub fn watchdog() {
    let Some(every) = watchdog_interval() else {
        return;
    };
    let now = START.get_or_init(Instant::now).elapsed().as_millis() as u64;
    let last = LAST_PING.load(Ordering::Relaxed);
    if last != 0 && now.saturating_sub(last) < every.as_millis() as u64 {
        return;
    }
    LAST_PING.store(now.max(1), Ordering::Relaxed);
    let _ = sd_notify::notify(&[NotifyState::Watchdog]);
}

static START: OnceLock<Instant> = OnceLock::new();
static LAST_PING: AtomicU64 = AtomicU64::new(0);
static INTERVAL: OnceLock<Option<Duration>> = OnceLock::new();

/// Half the watchdog interval systemd asked for, when it asked (read once).
pub fn watchdog_interval() -> Option<Duration> {
    *INTERVAL.get_or_init(|| sd_notify::watchdog_enabled().map(|d| d / 2))
}
