//! The source of wall-clock time, injectable so tests control the calendar.
//!
//! `tokio::time::pause()` only controls tokio's monotonic `Instant`, not the date, so every
//! piece of code that asks "what day is it" takes a [`Clock`]. This module only answers
//! "now"; it must not sleep or schedule.

use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, TimeDelta, Utc};

/// Wall-clock time. Production uses [`SystemClock`]; tests use [`ManualClock`].
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still until told otherwise; clones share one time, so a test keeps
/// a handle and moves the daemon's calendar with [`ManualClock::set`] / [`ManualClock::advance`].
#[derive(Debug, Clone)]
pub struct ManualClock {
    /// Shared by every clone.
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Shows `t` from now on (may go backwards, as a real clock can).
    pub fn set(&self, t: DateTime<Utc>) {
        *self.lock() = t;
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
    }

    /// A poisoned lock still holds a valid instant (a plain `Copy` value), so use it.
    fn lock(&self) -> MutexGuard<'_, DateTime<Utc>> {
        self.now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
