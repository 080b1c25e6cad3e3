//! Tree names and key encoding. Keys sort so that one company's data, and a date range
//! within it, are prefix / range scans: `realm 0x00 YYYY-MM-DD 0x00 CUR` and
//! `realm 0x00 <u64 big-endian id>`. Realm ids are digits, so they never contain 0x00.

use chrono::NaiveDate;

use crate::currency::Currency;
use crate::fixing::TableKind;

/// Company records, keyed by realm id.
pub const COMPANIES: &str = "companies";
/// age ciphertexts of token sets, keyed by realm id.
pub const TOKENS: &str = "tokens";
/// Per-company rates: `realm\0date\0currency`.
pub const RATES: &str = "rates";
/// Per-company scrape/sync log: `realm\0id`.
pub const LOGS: &str = "logs";
/// BoA fixing tables: `kind-byte date`.
pub const FIXINGS: &str = "fixings";
/// Global scrape log: `id`.
pub const SCRAPES: &str = "scrapes";
/// Pending OAuth states and invite links: `state`.
pub const OAUTH_STATES: &str = "oauth_states";
/// Schema version and other daemon-wide values.
pub const META: &str = "meta";

/// Prefix of everything a company owns in a per-company tree.
pub fn realm_prefix(realm: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(realm.len() + 1);
    k.extend_from_slice(realm.as_bytes());
    k.push(0);
    k
}

/// `realm\0YYYY-MM-DD\0` — all of a company's rates for one date.
pub fn rate_date_prefix(realm: &str, date: NaiveDate) -> Vec<u8> {
    let mut k = realm_prefix(realm);
    k.extend_from_slice(date.format("%Y-%m-%d").to_string().as_bytes());
    k.push(0);
    k
}

/// `realm\0YYYY-MM-DD\0CUR`.
pub fn rate_key(realm: &str, date: NaiveDate, currency: Currency) -> Vec<u8> {
    let mut k = rate_date_prefix(realm, date);
    k.extend_from_slice(currency.as_str().as_bytes());
    k
}

/// `realm\0<id big-endian>`.
pub fn log_key(realm: &str, id: u64) -> Vec<u8> {
    let mut k = realm_prefix(realm);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The byte a table kind sorts under in the fixings tree.
pub fn kind_byte(kind: TableKind) -> u8 {
    match kind {
        TableKind::Main => b'M',
        TableKind::Minor => b'm',
    }
}

/// `kind date` for the fixings tree.
pub fn fixing_key(kind: TableKind, date: NaiveDate) -> Vec<u8> {
    let mut k = vec![kind_byte(kind)];
    k.extend_from_slice(date.format("%Y-%m-%d").to_string().as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_realm_then_date() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let eur = Currency::new("EUR").unwrap();
        let a = rate_key("123", d("2026-01-02"), eur);
        let b = rate_key("123", d("2026-01-10"), eur);
        let c = rate_key("1234", d("2025-01-01"), eur);
        assert!(a < b);
        assert!(a.starts_with(&realm_prefix("123")));
        assert!(
            !c.starts_with(&realm_prefix("123")),
            "realm 1234 is not under 123"
        );
        assert!(log_key("1", 1) < log_key("1", 256));
        assert!(
            fixing_key(TableKind::Main, d("2024-12-31"))
                < fixing_key(TableKind::Main, d("2025-01-01"))
        );
    }
}
