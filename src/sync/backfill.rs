//! Backfill of a date range (SPEC §5 "Backfill"), the pure part: which ranges are accepted,
//! which dates are skipped and why, how the range is cut into read windows, and what a
//! backfill reports. The loop itself (reads, plan, writes) is
//! [`SyncEngine::backfill`](super::SyncEngine::backfill); no I/O here.

use std::collections::BTreeSet;

use chrono::NaiveDate;

use super::error::Error;
use super::plan::Step;
use crate::currency::Currency;
use crate::time::calendar::is_business_day;

/// Longest range, in calendar dates.
pub const MAX_DAYS: i64 = 366;
/// Calendar dates covered by one metered read (one range query, paged only beyond 1,000
/// rows): at most one read per 31 days of range.
pub const READ_WINDOW_DAYS: i64 = 31;

/// Accepts `from..=to` when it is in order, at most [`MAX_DAYS`] long and not after `today`.
///
/// # Errors
/// [`Error::BadRange`] naming what is wrong.
pub fn check_range(from: NaiveDate, to: NaiveDate, today: NaiveDate) -> Result<i64, Error> {
    if from > to {
        return Err(Error::BadRange(format!(
            "the range is reversed: from {from} is after to {to}"
        )));
    }
    let days = (to - from).num_days() + 1;
    if days > MAX_DAYS {
        return Err(Error::BadRange(format!(
            "the range {from} to {to} has {days} dates; at most {MAX_DAYS} are allowed"
        )));
    }
    if to > today {
        return Err(Error::BadRange(format!(
            "to {to} is in the future (today is {today} in Europe/Tirane)"
        )));
    }
    Ok(days)
}

/// The read windows of `from..=to`: consecutive, at most [`READ_WINDOW_DAYS`] each.
pub fn windows(from: NaiveDate, to: NaiveDate) -> Vec<(NaiveDate, NaiveDate)> {
    let mut out = Vec::new();
    let mut start = from;
    while start <= to {
        let end = (start + chrono::Duration::days(READ_WINDOW_DAYS - 1)).min(to);
        out.push((start, end));
        match end.succ_opt() {
            Some(next) => start = next,
            None => break,
        }
    }
    out
}

/// Why a weekend or holiday is skipped when the company does not fill them; `None` for a
/// date that gets its rate.
pub fn non_business_skip(
    date: NaiveDate,
    holidays: &BTreeSet<NaiveDate>,
    fill_non_business_days: bool,
) -> Option<&'static str> {
    if fill_non_business_days {
        return None;
    }
    if !is_business_day(date) {
        Some("weekend; the company does not fill non-business days (fill_non_business_days is off)")
    } else if holidays.contains(&date) {
        Some("holiday; the company does not fill non-business days (fill_non_business_days is off)")
    } else {
        None
    }
}

/// A date of the range that gets no rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The date.
    pub date: NaiveDate,
    /// Why.
    pub reason: String,
}

/// A write of the plan that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedWrite {
    /// Its date.
    pub date: NaiveDate,
    /// Its currency.
    pub currency: Currency,
    /// What QuickBooks said.
    pub error: String,
}

/// What a backfill did (or, for a dry run, would do).
#[derive(Debug, Clone)]
pub struct Backfill {
    /// Realm.
    pub realm: String,
    /// First date.
    pub from: NaiveDate,
    /// Last date.
    pub to: NaiveDate,
    /// Reads made, nothing written.
    pub dry_run: bool,
    /// Calendar dates in the range.
    pub dates: i64,
    /// One step per date and currency, in date then currency order.
    pub plan: Vec<Step>,
    /// Writes that succeeded.
    pub rates_written: usize,
    /// Rates QuickBooks already held.
    pub rates_unchanged: usize,
    /// Dates with no rate, and why.
    pub skipped: Vec<Skipped>,
    /// Metered exchange-rate reads made.
    pub reads: usize,
    /// Writes that failed (the rest of the plan went on).
    pub failed: Vec<FailedWrite>,
    /// Set when the backfill did not complete: writes failed, or the grant went away
    /// half-way (what was written stays written and counted).
    pub error: Option<Error>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn ranges_are_checked() {
        let today = d("2026-05-25");
        assert_eq!(check_range(d("2026-05-22"), d("2026-05-25"), today), Ok(4));
        assert_eq!(check_range(d("2026-05-22"), d("2026-05-22"), today), Ok(1));
        assert_eq!(
            check_range(d("2025-05-25"), d("2026-05-25"), today),
            Ok(366)
        );
        for (from, to) in [
            ("2026-05-23", "2026-05-22"),
            ("2025-05-24", "2026-05-25"),
            ("2026-05-22", "2026-05-26"),
        ] {
            let e = check_range(d(from), d(to), today).unwrap_err();
            assert_eq!(e.code(), "bad_range", "{from}..{to}");
        }
    }

    #[test]
    fn windows_cover_the_range_31_days_at_a_time() {
        let w = windows(d("2025-05-25"), d("2026-05-25"));
        assert_eq!(w.len(), 12, "366 days: 11 windows of 31 and one of 25");
        assert_eq!(w[0], (d("2025-05-25"), d("2025-06-24")));
        assert_eq!(w.last().unwrap().1, d("2026-05-25"));
        for pair in w.windows(2) {
            assert_eq!(pair[0].1.succ_opt(), Some(pair[1].0), "no gap, no overlap");
        }
        assert_eq!(windows(d("2026-05-22"), d("2026-05-22")).len(), 1);
        assert_eq!(windows(d("2026-05-01"), d("2026-05-31")).len(), 1);
        assert_eq!(windows(d("2026-05-01"), d("2026-06-01")).len(), 2);
    }

    #[test]
    fn weekends_and_holidays_follow_the_fill_policy() {
        let holidays: BTreeSet<NaiveDate> = [d("2026-05-25")].into();
        let sat = d("2026-05-23");
        assert_eq!(non_business_skip(sat, &holidays, true), None);
        assert!(non_business_skip(sat, &holidays, false)
            .unwrap()
            .starts_with("weekend"));
        assert!(non_business_skip(d("2026-05-25"), &holidays, false)
            .unwrap()
            .starts_with("holiday"));
        assert_eq!(non_business_skip(d("2026-05-22"), &holidays, false), None);
    }
}
