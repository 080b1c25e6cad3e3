//! Who the client is and how many requests it made: the client address behind trusted
//! reverse proxies (SPEC §6) and a per-client fixed one-minute window.
//!
//! The limiter's memory is bounded and each request costs O(1): the address space is split
//! over [`SHARDS`] independently locked shards, and each shard keeps two generations of
//! windows. A generation is retired whole (dropped in one go) when it is a minute old or full,
//! so old entries go without any scan, and a flood of new addresses can never hold more than
//! [`MAX_ENTRIES`] windows.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::HeaderMap;

use crate::cidr::{self, Cidr};
use crate::locks::lock;

const WINDOW: Duration = Duration::from_secs(60);

/// Windows kept at most across all shards (about 5 MiB).
pub const MAX_ENTRIES: usize = 100_000;

/// Independently locked parts of the limiter: requests of different clients rarely wait
/// for each other.
pub const SHARDS: usize = 64;

/// The address a request is counted by: the TCP peer, or, when the peer is a trusted proxy,
/// the right-most `X-Forwarded-For` address that is not itself trusted. Addresses to the left
/// of that one were written by the client and are ignored. When every forwarded address is
/// trusted, the left-most is the client; a missing or unparsable header means the peer.
/// IPv4-mapped IPv6 addresses are reported as IPv4.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let peer = peer.to_canonical();
    if !cidr::any_contains(trusted, peer) {
        return peer;
    }
    let mut entries: Vec<&str> = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        let Ok(s) = v.to_str() else {
            return peer;
        };
        entries.extend(s.split(','));
    }
    let mut leftmost = None;
    for e in entries.iter().rev() {
        // A hop we cannot read: nothing to its left can be believed either.
        let Some(ip) = forwarded_ip(e) else {
            return peer;
        };
        if !cidr::any_contains(trusted, ip) {
            return ip;
        }
        leftmost = Some(ip);
    }
    leftmost.unwrap_or(peer)
}

/// One `X-Forwarded-For` element: an address, optionally with a port (`1.2.3.4:5`,
/// `[2001:db8::1]:443`) or in brackets.
fn forwarded_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let ip = s
        .parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            s.strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|r| r.parse().ok())
        })?;
    Some(ip.to_canonical())
}

/// One client's current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    count: u32,
}

/// One shard: the current generation of windows and the one before it.
struct Shard {
    current: HashMap<IpAddr, Window>,
    previous: HashMap<IpAddr, Window>,
    /// When `current` became the current generation.
    started: Instant,
}

impl Shard {
    /// Makes `current` the previous generation and starts an empty one. The old previous
    /// generation is dropped whole: its cost is paid once per `per_generation` inserts.
    fn retire(&mut self, now: Instant) {
        self.previous = std::mem::take(&mut self.current);
        self.started = now;
    }
}

/// Counts requests per client (IPv4 address or IPv6 /64) in one-minute windows.
pub struct RateLimiter {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    /// Windows one generation of one shard holds at most.
    per_generation: usize,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter::with_capacity(MAX_ENTRIES)
    }
}

impl RateLimiter {
    /// A limiter holding at most about `max_entries` windows.
    pub fn with_capacity(max_entries: usize) -> Self {
        let now = Instant::now();
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    current: HashMap::new(),
                    previous: HashMap::new(),
                    started: now,
                })
            })
            .collect();
        RateLimiter {
            shards,
            hasher: RandomState::new(),
            per_generation: (max_entries / SHARDS / 2).max(1),
        }
    }

    /// Counts one request from `ip` (grouped per /64 for IPv6); `Err(seconds)` to wait when
    /// over `per_minute`.
    pub fn check(&self, ip: IpAddr, per_minute: u32) -> Result<(), u64> {
        self.check_at(ip, per_minute, Instant::now())
    }

    /// Windows held now (for tests and metrics; locks each shard in turn).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = lock(s);
                s.current.len() + s.previous.len()
            })
            .sum()
    }

    /// Whether no window is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check_at(&self, ip: IpAddr, per_minute: u32, now: Instant) -> Result<(), u64> {
        let key = cidr::client_group(ip);
        let idx = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        let Some(shard) = self.shards.get(idx) else {
            return Ok(());
        };
        let mut s = lock(shard);
        let age = now.saturating_duration_since(s.started);
        if age >= WINDOW * 2 {
            // Both generations are older than any live window.
            s.previous.clear();
            s.current.clear();
            s.started = now;
        } else if age >= WINDOW {
            s.retire(now);
        }
        if !s.current.contains_key(&key) {
            let carried = s.previous.remove(&key);
            if s.current.len() >= self.per_generation {
                s.retire(now);
            }
            s.current.insert(
                key,
                carried.unwrap_or(Window {
                    start: now,
                    count: 0,
                }),
            );
        }
        let Some(w) = s.current.get_mut(&key) else {
            return Ok(());
        };
        if now.saturating_duration_since(w.start) >= WINDOW {
            *w = Window {
                start: now,
                count: 0,
            };
        }
        if w.count >= per_minute {
            let left = WINDOW.saturating_sub(now.saturating_duration_since(w.start));
            return Err(left.as_secs().max(1));
        }
        w.count += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

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
        assert!(
            l.check_at(b, 3, t0).is_ok(),
            "another IP has its own window"
        );
        assert!(
            l.check_at(a, 3, t0 + Duration::from_secs(61)).is_ok(),
            "a new window"
        );
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let l = RateLimiter::default();
        let t0 = Instant::now();
        assert!(l.check_at(ip("2001:db8:0:1::1"), 2, t0).is_ok());
        assert!(l.check_at(ip("2001:db8:0:1::2"), 2, t0).is_ok());
        assert!(
            l.check_at(ip("2001:db8:0:1:ffff::3"), 2, t0).is_err(),
            "a third address of the same /64 is over the limit"
        );
        assert!(l.check_at(ip("2001:db8:0:2::1"), 2, t0).is_ok());
    }

    #[test]
    fn memory_is_bounded_under_a_flood_of_addresses() {
        let l = RateLimiter::with_capacity(64 * 2 * 10);
        let t0 = Instant::now();
        for i in 0..50_000u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(l.check_at(a, 5, t0).is_ok());
        }
        assert!(l.len() <= 64 * 2 * 10, "{} windows held", l.len());
        assert!(l.len() >= 64 * 10, "recent windows are kept: {}", l.len());
    }

    #[test]
    fn old_windows_are_evicted_over_time() {
        let l = RateLimiter::default();
        let t0 = Instant::now();
        for i in 0..1000u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            l.check_at(a, 5, t0).unwrap();
        }
        assert_eq!(l.len(), 1000);
        // Two minutes later, one request per shard's worth of traffic drops the old windows.
        let later = t0 + Duration::from_secs(121);
        for i in 0..5000u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            l.check_at(a, 5, later).unwrap();
        }
        assert_eq!(l.len(), 5000, "the 1,000 stale windows are gone");
    }

    #[test]
    fn a_window_survives_generation_changes_while_live() {
        let l = RateLimiter::default();
        let base = Instant::now();
        let a = ip("192.0.2.1");
        let t0 = base + Duration::from_secs(50);
        for _ in 0..3 {
            l.check_at(a, 3, t0).unwrap();
        }
        // 61 s after the shard's generation began it is retired; the live window is carried.
        assert!(l.check_at(a, 3, base + Duration::from_secs(61)).is_err());
        assert!(l.check_at(a, 3, t0 + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn client_is_the_peer_unless_the_peer_is_a_trusted_proxy() {
        let trusted = nets(&["127.0.0.2", "10.0.0.0/8"]);
        let h = xff(&["203.0.113.5"]);
        assert_eq!(
            client_ip(ip("198.51.100.1"), &h, &trusted),
            ip("198.51.100.1"),
            "an untrusted peer's header is ignored"
        );
        assert_eq!(client_ip(ip("127.0.0.2"), &h, &trusted), ip("203.0.113.5"));
        assert_eq!(
            client_ip(ip("::ffff:127.0.0.2"), &h, &trusted),
            ip("203.0.113.5"),
            "an IPv4-mapped peer is its IPv4 address"
        );
        assert_eq!(
            client_ip(ip("127.0.0.2"), &HeaderMap::new(), &trusted),
            ip("127.0.0.2"),
            "no header: the peer"
        );
        assert_eq!(
            client_ip(ip("127.0.0.2"), &h, &[]),
            ip("127.0.0.2"),
            "nothing trusted"
        );
    }

    #[test]
    fn right_most_untrusted_forwarded_address_wins() {
        let trusted = nets(&["127.0.0.2", "10.0.0.0/8"]);
        let peer = ip("127.0.0.2");
        for (values, want) in [
            // The client prepended fake addresses: ignored.
            (&["1.1.1.1, 2.2.2.2, 203.0.113.5"][..], "203.0.113.5"),
            // A chain of trusted proxies is skipped.
            (
                &["1.1.1.1, 203.0.113.5, 10.1.1.1, 10.2.2.2"][..],
                "203.0.113.5",
            ),
            // Several header lines are one list, in order.
            (&["1.1.1.1", "203.0.113.5, 10.1.1.1"][..], "203.0.113.5"),
            // All trusted: the left-most.
            (&["10.9.9.9, 10.1.1.1"][..], "10.9.9.9"),
            // Ports and brackets.
            (&["203.0.113.5:4711"][..], "203.0.113.5"),
            (&["[2001:db8::7]:443"][..], "2001:db8::7"),
            (&["2001:db8::7"][..], "2001:db8::7"),
            // Garbage: the peer.
            (&["not-an-ip"][..], "127.0.0.2"),
            (&["203.0.113.5, garbage"][..], "127.0.0.2"),
            (&[""][..], "127.0.0.2"),
            // Garbage to the left of the client is never reached.
            (&["garbage, 203.0.113.5"][..], "203.0.113.5"),
        ] {
            assert_eq!(
                client_ip(peer, &xff(values), &trusted),
                ip(want),
                "{values:?}"
            );
        }
    }
}
