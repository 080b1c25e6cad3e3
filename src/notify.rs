//! systemd notification (`sd_notify`): READY, STATUS, STOPPING, WATCHDOG, RELOADING.
//! Every call is a no-op when `NOTIFY_SOCKET` is not set.

use std::time::Duration;

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

/// A watchdog keep-alive.
pub fn watchdog() {
    let _ = sd_notify::notify(&[NotifyState::Watchdog]);
}

/// Half the watchdog interval systemd asked for, when it asked.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}
