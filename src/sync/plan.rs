//! What a sync writes (pure): what QuickBooks holds × what we want → one step per date and
//! currency, either keep (already equal) or write (with the SyncToken to send and the
//! deterministic `requestid`). No I/O, no clock.

use std::collections::HashMap;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use sha2::Digest;

use crate::currency::Currency;

/// Two rates closer than this are equal (QuickBooks keeps ≥ 6 decimals; we send ≤ 6).
pub const TOLERANCE: Decimal = Decimal::from_parts(5, 0, 0, false, 7);

/// A rate QuickBooks holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Its rate.
    pub rate: Decimal,
    /// The SyncToken to send when replacing it.
    pub sync_token: String,
}

/// What QuickBooks holds, by date and currency.
pub type Holdings = HashMap<(NaiveDate, Currency), Held>;

/// One rate we want in QuickBooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    /// Its date (`AsOfDate`).
    pub date: NaiveDate,
    /// The foreign currency.
    pub currency: Currency,
    /// Units of home currency per unit of `currency`.
    pub rate: Decimal,
}

/// What to do about one wanted rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// QuickBooks already holds it.
    Keep,
    /// Write it.
    Write {
        /// The SyncToken sent ("0" for a new rate).
        sync_token: String,
        /// The write's `requestid`.
        request_id: String,
    },
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What we want.
    pub want: Want,
    /// What QuickBooks holds now, if anything.
    pub theirs: Option<Decimal>,
    /// Keep or write.
    pub action: Action,
}

/// Whether two rates are equal for QuickBooks.
pub fn same_rate(a: Decimal, b: Decimal) -> bool {
    (a - b).abs() < TOLERANCE
}

/// The step for one wanted rate.
pub fn step(realm: &str, want: Want, holdings: &Holdings) -> Step {
    let held = holdings.get(&(want.date, want.currency));
    let action = match held {
        Some(h) if same_rate(h.rate, want.rate) => Action::Keep,
        _ => {
            let sync_token = held.map_or_else(|| "0".to_string(), |h| h.sync_token.clone());
            Action::Write {
                request_id: request_id(realm, want.currency, want.date, want.rate, &sync_token),
                sync_token,
            }
        }
    };
    Step {
        want,
        theirs: held.map(|h| h.rate),
        action,
    }
}

/// The plan: one step per wanted rate, in the order given.
pub fn plan(realm: &str, wants: &[Want], holdings: &Holdings) -> Vec<Step> {
    wants.iter().map(|w| step(realm, *w, holdings)).collect()
}

/// The request id of one write: the same write retried gets the same id; a write after a
/// stale SyncToken (a new token) gets a new one. ≤ 50 characters as Intuit requires.
pub fn request_id(
    realm: &str,
    currency: Currency,
    date: NaiveDate,
    rate: Decimal,
    sync_token: &str,
) -> String {
    let mut h = sha2::Sha256::new();
    h.update(
        format!(
            "boa-exchange|{realm}|{currency}|{date}|{}|{sync_token}",
            rate.normalize()
        )
        .as_bytes(),
    );
    hex::encode(&h.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }
    fn c(s: &str) -> Currency {
        Currency::new(s).unwrap()
    }
    fn r(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn request_ids_are_deterministic_and_short() {
        let day = d("2026-05-22");
        let a = request_id("123", c("EUR"), day, r("95.40"), "0");
        assert_eq!(a, request_id("123", c("EUR"), day, r("95.4"), "0"));
        assert_ne!(
            a,
            request_id("123", c("EUR"), day, r("95.40"), "1"),
            "a new SyncToken is a new write"
        );
        assert_ne!(a, request_id("124", c("EUR"), day, r("95.40"), "0"));
        assert!(a.len() <= 50);
    }

    #[test]
    fn tolerance_is_half_a_millionth() {
        assert_eq!(TOLERANCE.to_string(), "0.0000005");
        assert!(same_rate(r("1.0000004"), r("1")));
        assert!(!same_rate(r("1.000001"), r("1")));
    }

    #[test]
    fn equal_rates_are_kept_and_others_written_with_their_sync_token() {
        let day = d("2026-05-22");
        let mut held = Holdings::new();
        held.insert(
            (day, c("EUR")),
            Held {
                rate: r("100.1"),
                sync_token: "3".into(),
            },
        );
        held.insert(
            (day, c("USD")),
            Held {
                rate: r("82.24"),
                sync_token: "0".into(),
            },
        );
        let wants = [
            Want {
                date: day,
                currency: c("EUR"),
                rate: r("100.10"),
            },
            Want {
                date: day,
                currency: c("USD"),
                rate: r("82.25"),
            },
            Want {
                date: day,
                currency: c("GBP"),
                rate: r("110"),
            },
        ];
        let p = plan("9", &wants, &held);
        assert_eq!(p[0].action, Action::Keep);
        assert_eq!(p[0].theirs, Some(r("100.1")));
        match &p[1].action {
            Action::Write {
                sync_token,
                request_id: id,
            } => {
                assert_eq!(sync_token, "0");
                assert_eq!(id, &request_id("9", c("USD"), day, r("82.25"), "0"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p[2].theirs, None);
        assert!(matches!(&p[2].action, Action::Write { sync_token, .. } if sync_token == "0"));
    }

    #[test]
    fn a_rate_held_for_another_date_does_not_count() {
        let mut held = Holdings::new();
        held.insert(
            (d("2026-05-21"), c("EUR")),
            Held {
                rate: r("100"),
                sync_token: "1".into(),
            },
        );
        let p = plan(
            "9",
            &[Want {
                date: d("2026-05-22"),
                currency: c("EUR"),
                rate: r("100"),
            }],
            &held,
        );
        assert!(matches!(p[0].action, Action::Write { .. }));
    }
}
