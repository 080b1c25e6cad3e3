//! The source of wall-clock time, injectable so tests control the calendar.
//!
//! `tokio::time::pause()` only controls tokio's monotonic `Instant`, not the date, so every
//! piece of code that asks "what day is it" takes a [`Clock`]. This module only answers
//! "now", and waits for an instant of its own time: a [`ManualClock`] wakes its sleepers
//! when a test moves it, so nothing waits for a real-time tick to notice.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// A boxed sleep of a [`Clock`].
pub type Sleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Wall-clock time. Production uses [`SystemClock`]; tests use [`ManualClock`].
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;

    /// Returns when this clock shows `at` or later, when the clock was moved, or after at
    /// most `max` of real time, whichever is first (callers re-check `now()` and loop; the
    /// bound keeps watchdog pings and config re-reads going).
    fn sleep_until(&self, at: DateTime<Utc>, max: Duration) -> Sleep<'_>;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, at: DateTime<Utc>, max: Duration) -> Sleep<'_> {
        let left = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        Box::pin(tokio::time::sleep(left.min(max)))
    }
}

/// A clock that stands still until told otherwise; clones share one time, so a test keeps
/// a handle and moves the daemon's calendar with [`ManualClock::set`] / [`ManualClock::advance`].
#[derive(Debug, Clone)]
pub struct ManualClock {
    /// Shared by every clone.
    now: Arc<Mutex<DateTime<Utc>>>,
    /// Wakes every sleeper when the time is moved.
    moved: Arc<tokio::sync::Notify>,
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock {
            now: Arc::new(Mutex::new(start)),
            moved: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Shows `t` from now on (may go backwards, as a real clock can).
    pub fn set(&self, t: DateTime<Utc>) {
        *self.lock() = t;
        self.moved.notify_waiters();
    }

    /// Moves the time by `by` (negative goes back); saturates at the ends of chrono's range.
    pub fn advance(&self, by: TimeDelta) {
        let mut now = self.lock();
        let fallback = if by < TimeDelta::zero() {
            DateTime::<Utc>::MIN_UTC
        } else {
            DateTime::<Utc>::MAX_UTC
        };
        *now = now.checked_add_signed(by).unwrap_or(fallback);
        drop(now);
        self.moved.notify_waiters();
    }

    /// A poisoned lock still holds a valid instant (a plain `Copy` value), so use it.
    fn lock(&self) -> MutexGuard<'_, DateTime<Utc>> {
        crate::locks::lock(&self.now)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.lock()
    }

    fn sleep_until(&self, at: DateTime<Utc>, max: Duration) -> Sleep<'_> {
        Box::pin(async move {
            let moved = self.moved.notified();
            tokio::pin!(moved);
            // Registered before the check, so a move between the check and the wait wakes us.
            moved.as_mut().enable();
            if self.now() >= at {
                return;
            }
            tokio::select! {
                _ = moved => {}
                _ = tokio::time::sleep(max) => {}
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn moving_a_manual_clock_wakes_its_sleepers_at_once() {
        let clock = ManualClock::new(utc("2026-05-22T10:00:00Z"));
        let c = clock.clone();
        let sleeper = tokio::spawn(async move {
            let started = std::time::Instant::now();
            c.sleep_until(utc("2026-05-22T11:00:00Z"), Duration::from_secs(3600))
                .await;
            started.elapsed()
        });
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        clock.advance(TimeDelta::hours(2));
        let waited = tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("woken by the move, not by the hour-long bound")
            .unwrap();
        assert!(waited < Duration::from_secs(5));
        // Already past: returns at once.
        clock
            .sleep_until(utc("2026-05-22T11:00:00Z"), Duration::from_secs(3600))
            .await;
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn manual_clock_set_and_advance_shared_by_clones() {
        let clock = ManualClock::new(utc("2026-05-22T10:00:00Z"));
        let handle = clock.clone();
        assert_eq!(clock.now(), utc("2026-05-22T10:00:00Z"));
        handle.advance(TimeDelta::hours(3));
        assert_eq!(clock.now(), utc("2026-05-22T13:00:00Z"));
        handle.advance(TimeDelta::minutes(-30));
        assert_eq!(clock.now(), utc("2026-05-22T12:30:00Z"));
        handle.set(utc("2028-02-29T00:00:00Z"));
        assert_eq!(clock.now(), utc("2028-02-29T00:00:00Z"));
    }

    #[test]
    fn manual_clock_saturates() {
        let clock = ManualClock::new(DateTime::<Utc>::MAX_UTC);
        clock.advance(TimeDelta::days(1));
        assert_eq!(clock.now(), DateTime::<Utc>::MAX_UTC);
        clock.set(DateTime::<Utc>::MIN_UTC);
        clock.advance(TimeDelta::days(-1));
        assert_eq!(clock.now(), DateTime::<Utc>::MIN_UTC);
    }

    #[test]
    fn usable_as_shared_trait_objects() {
        let clocks: Vec<Arc<dyn Clock>> = vec![
            Arc::new(SystemClock),
            Arc::new(ManualClock::new(utc("2026-01-01T00:00:00Z"))),
        ];
        let before = Utc::now();
        assert!(clocks[0].now() >= before);
        assert_eq!(clocks[1].now(), utc("2026-01-01T00:00:00Z"));
    }

    #[test]
    fn poisoned_lock_still_reads() {
        let clock = ManualClock::new(utc("2026-05-22T10:00:00Z"));
        let inner = clock.clone();
        let _ = std::thread::spawn(move || {
            let _guard = inner.now.lock().unwrap();
            panic!("poison the lock");
        })
        .join();
        assert!(clock.now.is_poisoned());
        assert_eq!(clock.now(), utc("2026-05-22T10:00:00Z"));
        clock.advance(TimeDelta::seconds(1));
        assert_eq!(clock.now(), utc("2026-05-22T10:00:01Z"));
    }
}
