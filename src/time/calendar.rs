//! Calendar and wall-clock arithmetic for the schedule (SPEC §5 "Schedule").
//!
//! Pure functions of an instant, a local time and a time zone: when the next daily run is,
//! which local date it is, whether a date is a business day, which dates a catch-up owes.
//! Nothing here reads the clock, sleeps or knows about holidays — BoA holidays are only known
//! by observation (no fixing by `give_up_at`), which is the caller's business.
//!
//! Local times are turned into instants by [`local_instant`] alone, so every function agrees
//! on DST: a local time skipped by a spring-forward gap means the first instant after the gap,
//! and a local time repeated by a fall-back means its earlier occurrence. Nothing adds 24 h.

use chrono::{
    DateTime, Datelike, Days, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;

/// RFC 3339 in UTC with second precision (`2024-01-15T07:00:00Z`), the form of every
/// timestamp in answers and alerts.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The first instant strictly after `now` whose local time in `tz` is `at`.
///
/// DST-correct through [`local_instant`]: when `at` falls in a spring-forward gap the run is at
/// the first instant after the gap (02:30 on 29 March 2026 in Europe/Tirane runs at 03:00
/// CEST); when `at` occurs twice on a fall-back day the run is at the earlier occurrence only.
/// A `now` exactly at a run instant yields the next day's run, so a loop that recomputes
/// after each run never runs twice.
pub fn next_run(now: DateTime<Utc>, at: NaiveTime, tz: Tz) -> DateTime<Utc> {
    // Start a day early: a gap that straddles midnight can push yesterday's run into today.
    let today = local_date(now, tz);
    let mut day = today.pred_opt().unwrap_or(today);
    // Runs of successive local days are increasing instants, so the first one after `now`
    // is the answer; it is at most two days on from `day`, four iterations leave margin.
    for _ in 0..4 {
        let candidate = local_instant(day, at, tz);
        if candidate > now {
            return candidate;
        }
        match day.succ_opt() {
            Some(next) => day = next,
            None => break,
        }
    }
    // Only at the very end of chrono's calendar (year 262143): there is no next run.
    DateTime::<Utc>::MAX_UTC
}

/// The instant at which the local wall clock in `tz` shows `at` on `date`.
///
/// A time that does not exist (spring-forward gap) maps to the first instant after the gap,
/// i.e. the instant of the transition; a time that exists twice (fall-back) maps to the
/// earlier one. Every schedule comparison goes through this function so they all agree.
pub fn local_instant(date: NaiveDate, at: NaiveTime, tz: Tz) -> DateTime<Utc> {
    let local = date.and_time(at);
    match tz.from_local_datetime(&local) {
        chrono::LocalResult::Single(t) => t.with_timezone(&Utc),
        chrono::LocalResult::Ambiguous(earlier, _) => earlier.with_timezone(&Utc),
        // Only for a gap at the very ends of chrono's range can the search fail; reading the
        // local time as UTC is then as good as any answer.
        chrono::LocalResult::None => end_of_gap(local, tz).unwrap_or_else(|| local.and_utc()),
    }
}

/// The first instant whose local time is at or after `local`, for a `local` inside a gap.
///
/// Binary search over whole seconds (tz transitions are on whole seconds) in a ±27 h window,
/// wide enough for any UTC offset, assuming (as holds for every real zone) that the window
/// holds no fall-back that would make local time run backwards.
fn end_of_gap(local: NaiveDateTime, tz: Tz) -> Option<DateTime<Utc>> {
    const WINDOW_SECS: i64 = 27 * 3600;
    let reaches = |secs: i64| -> Option<bool> {
        let instant = DateTime::<Utc>::from_timestamp(secs, 0)?;
        Some(instant.with_timezone(&tz).naive_local() >= local)
    };
    let centre = local.and_utc().timestamp();
    // Invariant: `lo` shows a local time before `local`, `hi` one at or after it.
    let mut lo = centre.checked_sub(WINDOW_SECS)?;
    let mut hi = centre.checked_add(WINDOW_SECS)?;
    if reaches(lo)? || !reaches(hi)? {
        return None;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if reaches(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::<Utc>::from_timestamp(hi, 0)
}

/// The calendar date at `now` in `tz` (SPEC: dates are Europe/Tirane calendar dates).
pub fn local_date(now: DateTime<Utc>, tz: Tz) -> NaiveDate {
    now.with_timezone(&tz).date_naive()
}

/// Whether the local wall clock has reached `at` today: `now` is at or after today's
/// [`local_instant`] of `at`.
pub fn local_time_reached(now: DateTime<Utc>, at: NaiveTime, tz: Tz) -> bool {
    now >= local_instant(local_date(now, tz), at, tz)
}

/// Monday to Friday. Holidays are weekdays too: they are only known by observation (no
/// fixing by `give_up_at`), so they cannot be excluded here.
pub fn is_business_day(d: NaiveDate) -> bool {
    !matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
}

/// The nearest business day strictly before `d` (Friday for a Monday, Saturday or Sunday).
///
/// Saturates at chrono's first representable date, the only case that returns `d` itself.
pub fn previous_business_day(d: NaiveDate) -> NaiveDate {
    let mut day = d;
    while let Some(prev) = day.pred_opt() {
        day = prev;
        if is_business_day(day) {
            return day;
        }
    }
    day
}

/// Whether a business day's polling for its fixing should stop: the local time in `tz` has
/// reached `give_up_at` today (from then on, a weekday without a fixing is a holiday).
pub fn polling_deadline_passed(now: DateTime<Utc>, give_up_at: NaiveTime, tz: Tz) -> bool {
    local_time_reached(now, give_up_at, tz)
}

/// The dates a catch-up owes, oldest first: every date after `last_done` up to and including
/// `today`, but none more than `max_back_days` before `today`.
///
/// `None` (nothing ever done) owes the whole window, `today - max_back_days ..= today`; a
/// caller that wants only today for a new company passes `Some(yesterday)`. A `last_done` of
/// today or later owes nothing. At most `max_back_days + 1` dates.
pub fn missed_dates(
    last_done: Option<NaiveDate>,
    today: NaiveDate,
    max_back_days: u32,
) -> Vec<NaiveDate> {
    let oldest_allowed = today
        .checked_sub_days(Days::new(u64::from(max_back_days)))
        .unwrap_or(NaiveDate::MIN);
    let first = match last_done {
        None => oldest_allowed,
        Some(done) => match done.succ_opt() {
            Some(next) => next.max(oldest_allowed),
            None => return Vec::new(),
        },
    };
    first.iter_days().take_while(|d| *d <= today).collect()
}

/// The date of the newest main fixing that should exist at `now`: today when today is a
/// business day and its `publish_time` (local, in `tz`) has been reached, else the previous
/// business day.
///
/// Health compares the newest stored fixing with this date ("older than the last business
/// day's publication" is degraded). A holiday makes this date one that never gets a fixing;
/// the caller excuses dates it has observed to be holidays.
pub fn last_business_day_publication(
    now: DateTime<Utc>,
    tz: Tz,
    publish_time: NaiveTime,
) -> NaiveDate {
    let today = local_date(now, tz);
    if is_business_day(today) && local_time_reached(now, publish_time, tz) {
        today
    } else {
        previous_business_day(today)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeDelta, Timelike};
    use chrono_tz::{America::Santiago, Europe::Tirane, Pacific::Apia, UTC};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn hm(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    /// Consecutive runs from `now`, as RFC 3339 UTC strings.
    fn runs(now: &str, at: NaiveTime, tz: Tz, n: usize) -> Vec<String> {
        let mut t = utc(now);
        (0..n)
            .map(|_| {
                t = next_run(t, at, tz);
                t.to_rfc3339()
            })
            .collect()
    }

    // ---- next_run -----------------------------------------------------------------------

    #[test]
    fn ordinary_day_before_and_after_the_time() {
        // 13:00 CEST is 11:00 UTC.
        let r = next_run(utc("2026-05-22T08:00:00Z"), hm(13, 0), Tirane);
        assert_eq!(r, utc("2026-05-22T11:00:00Z"));
        let r = next_run(utc("2026-05-22T12:00:00Z"), hm(13, 0), Tirane);
        assert_eq!(r, utc("2026-05-23T11:00:00Z"));
    }

    #[test]
    fn now_exactly_at_the_run_gives_the_next_days_run() {
        let at = hm(13, 0);
        assert_eq!(
            next_run(utc("2026-05-22T11:00:00Z"), at, Tirane),
            utc("2026-05-23T11:00:00Z")
        );
        assert_eq!(
            next_run(utc("2026-05-22T10:59:59Z"), at, Tirane),
            utc("2026-05-22T11:00:00Z")
        );
        let just_before = utc("2026-05-22T11:00:00Z") - TimeDelta::nanoseconds(1);
        assert_eq!(
            next_run(just_before, at, Tirane),
            utc("2026-05-22T11:00:00Z")
        );
        let just_after = utc("2026-05-22T11:00:00Z") + TimeDelta::nanoseconds(1);
        assert_eq!(
            next_run(just_after, at, Tirane),
            utc("2026-05-23T11:00:00Z")
        );
    }

    #[test]
    fn across_spring_forward_the_day_is_23_hours() {
        assert_eq!(
            runs("2026-03-27T12:30:00Z", hm(13, 0), Tirane, 4),
            [
                "2026-03-28T12:00:00+00:00", // 13:00 CET
                "2026-03-29T11:00:00+00:00", // 13:00 CEST, 23 h later
                "2026-03-30T11:00:00+00:00",
                "2026-03-31T11:00:00+00:00",
            ]
        );
    }

    #[test]
    fn across_fall_back_the_day_is_25_hours() {
        assert_eq!(
            runs("2026-10-23T12:00:00Z", hm(13, 0), Tirane, 4),
            [
                "2026-10-24T11:00:00+00:00", // 13:00 CEST
                "2026-10-25T12:00:00+00:00", // 13:00 CET, 25 h later
                "2026-10-26T12:00:00+00:00",
                "2026-10-27T12:00:00+00:00",
            ]
        );
    }

    #[test]
    fn skipped_local_time_runs_at_the_end_of_the_gap() {
        // 29 March 2026: 02:00 CET jumps to 03:00 CEST (01:00 UTC); 02:30 does not exist.
        assert_eq!(
            runs("2026-03-27T12:00:00Z", hm(2, 30), Tirane, 4),
            [
                "2026-03-28T01:30:00+00:00", // 02:30 CET
                "2026-03-29T01:00:00+00:00", // 03:00 CEST, first instant after the gap
                "2026-03-30T00:30:00+00:00", // 02:30 CEST
                "2026-03-31T00:30:00+00:00",
            ]
        );
        let gap_run = utc("2026-03-29T01:00:00Z");
        assert_eq!(gap_run.with_timezone(&Tirane).time(), hm(3, 0));
        assert_eq!(
            next_run(gap_run - TimeDelta::seconds(1), hm(2, 30), Tirane),
            gap_run
        );
        // The first and last second of the gap, and its end itself, all resolve there.
        assert_eq!(local_instant(day(2026, 3, 29), hm(2, 0), Tirane), gap_run);
        let last = NaiveTime::from_hms_opt(2, 59, 59).unwrap();
        assert_eq!(local_instant(day(2026, 3, 29), last, Tirane), gap_run);
        assert_eq!(local_instant(day(2026, 3, 29), hm(3, 0), Tirane), gap_run);
        // Just before the gap is an ordinary time.
        let before = NaiveTime::from_hms_opt(1, 59, 59).unwrap();
        assert_eq!(
            local_instant(day(2026, 3, 29), before, Tirane),
            utc("2026-03-29T00:59:59Z")
        );
    }

    #[test]
    fn repeated_local_time_runs_once_at_the_earlier_occurrence() {
        // 25 October 2026: 03:00 CEST falls back to 02:00 CET (01:00 UTC); 02:30 happens at
        // 00:30 UTC (CEST) and again at 01:30 UTC (CET).
        assert_eq!(
            runs("2026-10-23T12:00:00Z", hm(2, 30), Tirane, 3),
            [
                "2026-10-24T00:30:00+00:00",
                "2026-10-25T00:30:00+00:00", // earlier occurrence only
                "2026-10-26T01:30:00+00:00", // 02:30 CET
            ]
        );
        // Between the two occurrences the second one is not a run.
        assert_eq!(
            next_run(utc("2026-10-25T01:00:00Z"), hm(2, 30), Tirane),
            utc("2026-10-26T01:30:00Z")
        );
        assert_eq!(
            next_run(utc("2026-10-25T01:30:00Z"), hm(2, 30), Tirane),
            utc("2026-10-26T01:30:00Z")
        );
    }

    #[test]
    fn at_midnight() {
        // 00:00 local on 23 May is 22:00 UTC on the 22nd.
        assert_eq!(
            next_run(utc("2026-05-22T21:59:59Z"), hm(0, 0), Tirane),
            utc("2026-05-22T22:00:00Z")
        );
        assert_eq!(
            next_run(utc("2026-05-22T22:00:00Z"), hm(0, 0), Tirane),
            utc("2026-05-23T22:00:00Z")
        );
        // Across both DST switches.
        assert_eq!(
            runs("2026-03-27T12:00:00Z", hm(0, 0), Tirane, 3),
            [
                "2026-03-27T23:00:00+00:00", // 00:00 CET on the 28th
                "2026-03-28T23:00:00+00:00", // 00:00 CET on the 29th (switch at 02:00)
                "2026-03-29T22:00:00+00:00", // 00:00 CEST on the 30th
            ]
        );
        assert_eq!(
            runs("2026-10-23T12:00:00Z", hm(0, 0), Tirane, 3),
            [
                "2026-10-23T22:00:00+00:00",
                "2026-10-24T22:00:00+00:00", // 00:00 CEST on the 25th
                "2026-10-25T23:00:00+00:00", // 00:00 CET on the 26th
            ]
        );
    }

    #[test]
    fn at_23_59() {
        let at = hm(23, 59);
        assert_eq!(
            next_run(utc("2026-05-22T22:00:00Z"), at, Tirane),
            utc("2026-05-23T21:59:00Z")
        );
        assert_eq!(
            next_run(utc("2026-05-22T21:58:59Z"), at, Tirane),
            utc("2026-05-22T21:59:00Z")
        );
        assert_eq!(
            runs("2026-03-27T12:00:00Z", at, Tirane, 3),
            [
                "2026-03-27T22:59:00+00:00",
                "2026-03-28T22:59:00+00:00",
                "2026-03-29T21:59:00+00:00",
            ]
        );
        assert_eq!(
            runs("2026-12-30T12:00:00Z", at, Tirane, 3),
            [
                "2026-12-30T22:59:00+00:00",
                "2026-12-31T22:59:00+00:00", // New Year's Eve
                "2027-01-01T22:59:00+00:00",
            ]
        );
    }

    #[test]
    fn leap_day_2028() {
        assert_eq!(
            runs("2028-02-28T13:00:00Z", hm(13, 0), Tirane, 2),
            ["2028-02-29T12:00:00+00:00", "2028-03-01T12:00:00+00:00"]
        );
        assert_eq!(
            next_run(utc("2028-02-28T23:00:00Z"), hm(0, 0), Tirane),
            utc("2028-02-29T23:00:00Z")
        );
        assert_eq!(
            local_date(utc("2028-02-29T22:59:59Z"), Tirane),
            day(2028, 2, 29)
        );
        assert_eq!(
            local_date(utc("2028-02-29T23:00:00Z"), Tirane),
            day(2028, 3, 1)
        );
    }

    #[test]
    fn gap_at_midnight_in_santiago() {
        // 6 September 2026: 00:00 -04 jumps to 01:00 -03 (04:00 UTC).
        assert_eq!(
            next_run(utc("2026-09-05T12:00:00Z"), hm(0, 30), Santiago),
            utc("2026-09-06T04:00:00Z")
        );
        assert_eq!(
            next_run(utc("2026-09-05T12:00:00Z"), hm(0, 0), Santiago),
            utc("2026-09-06T04:00:00Z")
        );
        // Fall-back at midnight, 5 April 2026: 23:30 on the 4th happens twice.
        assert_eq!(
            runs("2026-04-03T12:00:00Z", hm(23, 30), Santiago, 3),
            [
                "2026-04-04T02:30:00+00:00", // 23:30 -03 on the 3rd
                "2026-04-05T02:30:00+00:00", // first 23:30 on the 4th (-03)
                "2026-04-06T03:30:00+00:00", // 23:30 -04 on the 5th
            ]
        );
    }

    #[test]
    fn a_whole_skipped_day_in_apia() {
        // Samoa skipped 30 December 2011: 23:59:59 -10 on the 29th, then 00:00 +14 on the 31st.
        assert_eq!(
            runs("2011-12-29T12:00:00Z", hm(13, 0), Apia, 3),
            [
                "2011-12-29T23:00:00+00:00", // 13:00 -10 on the 29th
                "2011-12-30T10:00:00+00:00", // the missing 30th: 00:00 on the 31st
                "2011-12-30T23:00:00+00:00", // 13:00 +14 on the 31st
            ]
        );
    }

    #[test]
    fn utc_zone_is_plain() {
        assert_eq!(
            next_run(utc("2026-03-29T00:00:00Z"), hm(2, 30), UTC),
            utc("2026-03-29T02:30:00Z")
        );
    }

    #[test]
    fn next_run_properties_over_a_year() {
        // Every 97 minutes through 2026 in Tirana, for several times of day.
        let times = [
            hm(0, 0),
            hm(2, 0),
            hm(2, 30),
            hm(3, 0),
            hm(13, 0),
            hm(23, 59),
        ];
        let mut now = utc("2026-01-01T00:00:00Z");
        let end = utc("2027-01-01T00:00:00Z");
        while now < end {
            for at in times {
                let run = next_run(now, at, Tirane);
                assert!(run > now, "{now} {at}");
                assert!(run - now <= TimeDelta::hours(25), "{now} {at} {run}");
                let local = run.with_timezone(&Tirane);
                // Either exactly `at`, or the 03:00 end of the spring gap for a 02:xx time.
                let in_gap = local.date_naive() == day(2026, 3, 29) && at.hour() == 2;
                assert!(
                    local.time() == at || (in_gap && local.time() == hm(3, 0)),
                    "{now} {at} {local}"
                );
                // Nothing earlier qualifies: from one second before, the answer is the same.
                assert_eq!(next_run(run - TimeDelta::seconds(1), at, Tirane), run);
                // The run after it is on the next local day.
                let after = next_run(run, at, Tirane).with_timezone(&Tirane);
                assert_eq!(after.date_naive(), local.date_naive().succ_opt().unwrap());
            }
            now += TimeDelta::minutes(97);
        }
    }

    // ---- dates ----------------------------------------------------------------------------

    #[test]
    fn local_date_follows_the_zone() {
        assert_eq!(
            local_date(utc("2026-05-22T21:59:59Z"), Tirane),
            day(2026, 5, 22)
        );
        assert_eq!(
            local_date(utc("2026-05-22T22:00:00Z"), Tirane),
            day(2026, 5, 23)
        );
        assert_eq!(
            local_date(utc("2026-01-15T22:59:59Z"), Tirane),
            day(2026, 1, 15)
        );
        assert_eq!(
            local_date(utc("2026-01-15T23:00:00Z"), Tirane),
            day(2026, 1, 16)
        );
        assert_eq!(
            local_date(utc("2026-01-15T23:00:00Z"), UTC),
            day(2026, 1, 15)
        );
    }

    #[test]
    fn business_days_are_monday_to_friday() {
        // 18–24 May 2026: Monday … Sunday.
        let week: Vec<bool> = (18..=24)
            .map(|d| is_business_day(day(2026, 5, d)))
            .collect();
        assert_eq!(week, [true, true, true, true, true, false, false]);
        // A holiday (1 May, a Friday) is still a business day here.
        assert!(is_business_day(day(2026, 5, 1)));
    }

    #[test]
    fn previous_business_day_is_strictly_before() {
        assert_eq!(previous_business_day(day(2026, 5, 22)), day(2026, 5, 21)); // Fri → Thu
        assert_eq!(previous_business_day(day(2026, 5, 23)), day(2026, 5, 22)); // Sat → Fri
        assert_eq!(previous_business_day(day(2026, 5, 24)), day(2026, 5, 22)); // Sun → Fri
        assert_eq!(previous_business_day(day(2026, 5, 25)), day(2026, 5, 22)); // Mon → Fri
        assert_eq!(previous_business_day(day(2026, 5, 26)), day(2026, 5, 25)); // Tue → Mon
        assert_eq!(previous_business_day(day(2026, 3, 1)), day(2026, 2, 27)); // across months
        assert_eq!(previous_business_day(day(2028, 3, 1)), day(2028, 2, 29)); // leap day
        assert_eq!(previous_business_day(day(2027, 1, 1)), day(2026, 12, 31)); // across years
        assert_eq!(previous_business_day(NaiveDate::MIN), NaiveDate::MIN);
    }

    #[test]
    fn polling_deadline() {
        let give_up = hm(18, 0);
        // 18:00 CEST is 16:00 UTC.
        assert!(!polling_deadline_passed(
            utc("2026-05-22T15:59:59Z"),
            give_up,
            Tirane
        ));
        assert!(polling_deadline_passed(
            utc("2026-05-22T16:00:00Z"),
            give_up,
            Tirane
        ));
        assert!(polling_deadline_passed(
            utc("2026-05-22T21:59:59Z"),
            give_up,
            Tirane
        ));
        // After local midnight it is a new day whose deadline has not come.
        assert!(!polling_deadline_passed(
            utc("2026-05-22T22:00:00Z"),
            give_up,
            Tirane
        ));
        // In winter 18:00 CET is 17:00 UTC.
        assert!(!polling_deadline_passed(
            utc("2026-01-15T16:30:00Z"),
            give_up,
            Tirane
        ));
        assert!(polling_deadline_passed(
            utc("2026-01-15T17:00:00Z"),
            give_up,
            Tirane
        ));
        // A deadline in the fall-back hour is passed from its first occurrence on.
        let repeated = hm(2, 30);
        assert!(!polling_deadline_passed(
            utc("2026-10-25T00:29:59Z"),
            repeated,
            Tirane
        ));
        assert!(polling_deadline_passed(
            utc("2026-10-25T00:30:00Z"),
            repeated,
            Tirane
        ));
        assert!(polling_deadline_passed(
            utc("2026-10-25T01:15:00Z"),
            repeated,
            Tirane
        ));
        // A deadline in the spring gap is passed from the end of the gap.
        assert!(!polling_deadline_passed(
            utc("2026-03-29T00:59:59Z"),
            repeated,
            Tirane
        ));
        assert!(polling_deadline_passed(
            utc("2026-03-29T01:00:00Z"),
            repeated,
            Tirane
        ));
    }

    #[test]
    fn missed_dates_window() {
        let today = day(2026, 5, 24);
        assert_eq!(
            missed_dates(Some(day(2026, 5, 21)), today, 31),
            [day(2026, 5, 22), day(2026, 5, 23), day(2026, 5, 24)]
        );
        assert_eq!(missed_dates(Some(day(2026, 5, 23)), today, 31), [today]);
        assert!(missed_dates(Some(today), today, 31).is_empty());
        assert!(missed_dates(Some(day(2026, 5, 30)), today, 31).is_empty());
        // Capped at max_back_days before today, inclusive.
        let capped = missed_dates(Some(day(2025, 1, 1)), today, 31);
        assert_eq!(capped.len(), 32);
        assert_eq!(capped.first(), Some(&day(2026, 4, 23)));
        assert_eq!(capped.last(), Some(&today));
        assert!(capped.windows(2).all(|w| w[0].succ_opt() == Some(w[1])));
        // last_done just at the edge of the window.
        assert_eq!(missed_dates(Some(day(2026, 4, 22)), today, 31), capped);
        assert_eq!(missed_dates(Some(day(2026, 4, 23)), today, 31), capped[1..]);
        // Nothing ever done: the whole window.
        assert_eq!(missed_dates(None, today, 31), capped);
        assert_eq!(missed_dates(None, today, 0), [today]);
        assert_eq!(missed_dates(Some(day(2026, 5, 1)), today, 0), [today]);
        // Across a leap day.
        assert_eq!(
            missed_dates(Some(day(2028, 2, 27)), day(2028, 3, 1), 31),
            [day(2028, 2, 28), day(2028, 2, 29), day(2028, 3, 1)]
        );
        assert!(missed_dates(Some(NaiveDate::MAX), today, 31).is_empty());
        assert_eq!(missed_dates(None, NaiveDate::MIN, 3), [NaiveDate::MIN]);
    }

    #[test]
    fn last_business_day_publication_dates() {
        let publish = hm(12, 30);
        // Friday 22 May 2026, 12:30 CEST = 10:30 UTC.
        let f = |s: &str| last_business_day_publication(utc(s), Tirane, publish);
        assert_eq!(f("2026-05-22T10:29:59Z"), day(2026, 5, 21));
        assert_eq!(f("2026-05-22T10:30:00Z"), day(2026, 5, 22));
        assert_eq!(f("2026-05-22T21:59:59Z"), day(2026, 5, 22));
        // Weekend and Monday morning: Friday's.
        assert_eq!(f("2026-05-23T12:00:00Z"), day(2026, 5, 22));
        assert_eq!(f("2026-05-24T12:00:00Z"), day(2026, 5, 22));
        assert_eq!(f("2026-05-25T08:00:00Z"), day(2026, 5, 22));
        assert_eq!(f("2026-05-25T10:30:00Z"), day(2026, 5, 25));
        // Local date, not UTC date: 00:30 Saturday local is still Friday 22:30 UTC.
        assert_eq!(f("2026-05-22T22:30:00Z"), day(2026, 5, 22));
        // Monday 00:30 local (Sunday 22:30 UTC): Friday's.
        assert_eq!(f("2026-05-24T22:30:00Z"), day(2026, 5, 22));
    }
}
