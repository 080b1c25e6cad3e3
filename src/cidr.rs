//! IP networks in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`), as `server.trusted_proxies`
//! lists them, and the per-client grouping the rate limiter counts by.
//!
//! A pure leaf: parsing and membership only. It never looks at requests or headers (the
//! HTTP layer picks the client address, see `http::limit::client_ip`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// One network: an address whose host bits are zero and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a CIDR did not parse. The message is written to follow the config key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CidrError(String);

impl Cidr {
    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length (0–32 for IPv4, 0–128 for IPv6).
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside this network. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`,
    /// what a dual-stack socket reports for IPv4 peers) count as their IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask32(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask128(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

fn mask128(prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p => u128::MAX << (128 - u32::from(p.min(128))),
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `ADDR/LEN`, or a bare address meaning that one host (`/32` or `/128`). Host bits must
    /// be zero (`10.0.0.1/8` is refused rather than silently widened or narrowed).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (addr_s, len_s) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr_s.parse().map_err(|_| {
            CidrError(format!(
                "{s:?} is not a CIDR (expected e.g. 10.0.0.0/8, 192.0.2.7 or 2001:db8::/32)"
            ))
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match len_s {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => {
                    return Err(CidrError(format!(
                        "{s:?}: the prefix length must be a number from 0 to {max}"
                    )))
                }
            },
        };
        let masked = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(prefix))),
        };
        if masked != addr {
            return Err(CidrError(format!(
                "{s:?} has host bits set (did you mean {masked}/{prefix}?)"
            )));
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Whether any network in `nets` contains `ip`.
pub fn any_contains(nets: &[Cidr], ip: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(ip))
}

/// The address a client is counted by: IPv4 as is (IPv4-mapped IPv6 included), IPv6 by its
/// /64 (one subscriber usually holds a whole /64, so per-address counting is no limit).
pub fn client_group(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(a) => IpAddr::V4(a),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(64))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_v4_v6_and_bare_addresses() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert_eq!(c.prefix(), 8);
        assert!(c.contains(ip("10.255.1.2")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(
            c.contains(ip("::ffff:10.1.2.3")),
            "IPv4-mapped counts as IPv4"
        );
        assert!(
            !c.contains(ip("::a00:1")),
            "an IPv6 address is not in an IPv4 net"
        );

        let c: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(c.contains(ip("2001:db8:ffff::1")));
        assert!(!c.contains(ip("2001:db9::1")));
        assert!(!c.contains(ip("10.0.0.1")));

        let c: Cidr = " 192.0.2.7 ".parse().unwrap();
        assert_eq!(c.to_string(), "192.0.2.7/32");
        assert!(c.contains(ip("192.0.2.7")));
        assert!(!c.contains(ip("192.0.2.8")));
        assert_eq!("::1".parse::<Cidr>().unwrap().prefix(), 128);

        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        let all6: Cidr = "::/0".parse().unwrap();
        assert!(all6.contains(ip("2001:db8::1")));
    }

    #[test]
    fn refuses_bad_cidrs_with_a_reason() {
        for (s, want) in [
            ("10.0.0.0/33", "prefix length"),
            ("2001:db8::/129", "prefix length"),
            ("10.0.0.0/x", "prefix length"),
            ("10.0.0.0/-1", "prefix length"),
            ("10.0.0.1/8", "host bits set (did you mean 10.0.0.0/8?)"),
            ("2001:db8::1/64", "did you mean 2001:db8::/64"),
            ("example.com", "is not a CIDR"),
            ("", "is not a CIDR"),
            ("10.0.0/8", "is not a CIDR"),
        ] {
            let e = s.parse::<Cidr>().unwrap_err().to_string();
            assert!(e.contains(want), "{s:?}: {e}");
        }
    }

    #[test]
    fn ipv6_clients_are_grouped_per_64() {
        assert_eq!(
            client_group(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            client_group(ip("2001:db8:1:2::1")),
            client_group(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            client_group(ip("2001:db8:1:2::1")),
            client_group(ip("2001:db8:1:3::1"))
        );
        assert_eq!(client_group(ip("198.51.100.7")), ip("198.51.100.7"));
        assert_eq!(client_group(ip("::ffff:198.51.100.7")), ip("198.51.100.7"));
    }
}
