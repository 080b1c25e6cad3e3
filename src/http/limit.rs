//! Per-client-IP request limit: a fixed one-minute window per address (SPEC §6).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

/// Counts requests per IP in one-minute windows.
#[derive(Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl RateLimiter {
    /// Counts one request from `ip`; `Err(seconds)` to wait when over `per_minute`.
    pub fn check(&self, ip: IpAddr, per_minute: u32) -> Result<(), u64> {
        self.check_at(ip, per_minute, Instant::now())
    }

    fn check_at(&self, ip: IpAddr, per_minute: u32, now: Instant) -> Result<(), u64> {
        let mut w = match self.windows.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if w.len() > 10_000 {
            w.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let entry = w.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        if entry.1 >= per_minute {
            let left = WINDOW.saturating_sub(now.duration_since(entry.0));
            return Err(left.as_secs().max(1));
        }
        entry.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_ip_and_resets() {
        let l = RateLimiter::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check_at(a, 3, t0).is_ok());
        }
        let wait = l.check_at(a, 3, t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, 50);
        assert!(l.check_at(b, 3, t0).is_ok(), "another IP has its own window");
        assert!(l.check_at(a, 3, t0 + Duration::from_secs(61)).is_ok(), "a new window");
    }
}
