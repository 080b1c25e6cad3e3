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

/// A rate we confirmed in QuickBooks that QuickBooks no longer holds as we wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// Our confirmed rate (date, currency, rate): what a correction writes back.
    pub ours: Want,
    /// What QuickBooks holds now; `None` when the rate is gone.
    pub theirs: Option<Decimal>,
}

/// The drifts among `confirmed` (rates we had confirmed, any dates): each one QuickBooks now
/// holds with a different rate (beyond [`TOLERANCE`]) or not at all. In the order given.
pub fn drifts(confirmed: &[Want], holdings: &Holdings) -> Vec<Drift> {
    confirmed
        .iter()
        .filter_map(|w| {
            let theirs = holdings.get(&(w.date, w.currency)).map(|h| h.rate);
            match theirs {
                Some(t) if same_rate(t, w.rate) => None,
                _ => Some(Drift { ours: *w, theirs }),
            }
        })
        .collect()
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

    fn want(date: NaiveDate, cur: &str, rate: &str) -> Want {
        Want {
            date,
            currency: c(cur),
            rate: r(rate),
        }
    }

    /// A year of dates × three currencies: QuickBooks holds every other date; of those it
    /// holds, every seventh differs. Each step is keyed by its own date and carries the
    /// requestid of its own (date, rate, SyncToken).
    #[test]
    fn plans_over_many_dates_key_each_step_by_its_date() {
        let first = d("2025-06-01");
        let days: Vec<NaiveDate> = first.iter_days().take(366).collect();
        let mut held = Holdings::new();
        let mut wants = Vec::new();
        for (i, day) in days.iter().enumerate() {
            for cur in ["EUR", "USD", "GBP"] {
                let w = want(*day, cur, "100.25");
                wants.push(w);
                if i % 2 == 0 {
                    let rate = if i % 7 == 0 {
                        r("99")
                    } else {
                        r("100.2500001")
                    };
                    held.insert(
                        (*day, c(cur)),
                        Held {
                            rate,
                            sync_token: format!("{}", i % 5),
                        },
                    );
                }
            }
        }
        let p = plan("42", &wants, &held);
        assert_eq!(p.len(), 366 * 3);
        let mut keeps = 0;
        let mut ids = std::collections::HashSet::new();
        for (i, s) in p.iter().enumerate() {
            let day_index = i / 3;
            assert_eq!(s.want, wants[i], "the order of the wants is kept");
            match &s.action {
                Action::Keep => {
                    keeps += 1;
                    assert!(day_index % 2 == 0 && day_index % 7 != 0);
                }
                Action::Write {
                    sync_token,
                    request_id: id,
                } => {
                    if day_index % 2 == 0 {
                        assert_eq!(s.theirs, Some(r("99")));
                        assert_eq!(sync_token, &format!("{}", day_index % 5));
                    } else {
                        assert_eq!(s.theirs, None);
                        assert_eq!(sync_token, "0");
                    }
                    assert_eq!(
                        id,
                        &request_id("42", s.want.currency, s.want.date, s.want.rate, sync_token)
                    );
                    assert!(
                        ids.insert(id.clone()),
                        "one requestid per date and currency"
                    );
                }
            }
        }
        // Even days: 183; of those, multiples of 14 (day 0, 14, …, 364) differ: 27.
        assert_eq!(keeps, (183 - 27) * 3);
        // A repeat against what the writes leave behind keeps everything.
        let mut after = held.clone();
        for s in &p {
            after.insert(
                (s.want.date, s.want.currency),
                Held {
                    rate: s.want.rate,
                    sync_token: "9".into(),
                },
            );
        }
        assert!(plan("42", &wants, &after)
            .iter()
            .all(|s| s.action == Action::Keep));
    }

    #[test]
    fn drifts_are_confirmed_rates_changed_or_gone() {
        let days: Vec<NaiveDate> = d("2026-05-16").iter_days().take(7).collect();
        let confirmed: Vec<Want> = days.iter().map(|day| want(*day, "EUR", "100.1")).collect();
        let mut held = Holdings::new();
        for (i, day) in days.iter().enumerate() {
            let rate = match i {
                2 => r("101"),         // edited by a user
                3 => r("100.1000004"), // within tolerance
                4 => continue,         // deleted
                _ => r("100.1"),
            };
            held.insert(
                (*day, c("EUR")),
                Held {
                    rate,
                    sync_token: "1".into(),
                },
            );
        }
        // A rate of a currency we never confirmed is not drift.
        held.insert(
            (days[0], c("USD")),
            Held {
                rate: r("1"),
                sync_token: "0".into(),
            },
        );
        let got = drifts(&confirmed, &held);
        assert_eq!(
            got,
            vec![
                Drift {
                    ours: confirmed[2],
                    theirs: Some(r("101")),
                },
                Drift {
                    ours: confirmed[4],
                    theirs: None,
                },
            ]
        );
        assert!(drifts(&[], &held).is_empty());
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
