//! `[schedule]`: the daily run's time and timezone, retries and give-up time, with
//! `SCHEDULE_TIME` and `TIMEZONE`.

use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSchedule {
    pub(super) enabled: bool,
    pub(super) time: String,
    pub(super) timezone: String,
    pub(super) retry_every_minutes: i64,
    pub(super) give_up_at: String,
}

impl Default for RawSchedule {
    fn default() -> Self {
        RawSchedule {
            enabled: true,
            time: "13:00".into(),
            timezone: "Europe/Tirane".into(),
            retry_every_minutes: 15,
            give_up_at: "18:00".into(),
        }
    }
}

/// `[schedule]`.
#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    /// Master switch for every automatic fetch and sync.
    pub enabled: bool,
    /// Local time of the daily run.
    pub time: NaiveTime,
    /// Zone of `time` and `give_up_at` and of calendar dates.
    pub timezone: Tz,
    /// Poll interval until the day's fixing appears.
    pub retry_every_minutes: u32,
    /// Local time after which a business day with no fixing counts as a holiday.
    pub give_up_at: NaiveTime,
}

/// `[schedule]`, with `SCHEDULE_TIME` and `TIMEZONE`.
pub(super) fn validate_schedule(s: RawSchedule, env: &dyn Env) -> Result<ScheduleConfig, Error> {
    let time_raw = env.var("SCHEDULE_TIME").unwrap_or(s.time);
    let time_key = if env.var("SCHEDULE_TIME").is_some() {
        "SCHEDULE_TIME"
    } else {
        "schedule.time"
    };
    let time = parse_hhmm(time_key, &time_raw)?;
    let tz_raw = env.var("TIMEZONE").unwrap_or(s.timezone);
    let tz_key = if env.var("TIMEZONE").is_some() {
        "TIMEZONE"
    } else {
        "schedule.timezone"
    };
    let timezone: Tz = tz_raw.parse().map_err(|_| {
        invalid(
            tz_key,
            format!("{tz_raw:?} is not an IANA time zone (e.g. Europe/Tirane)"),
        )
    })?;
    let give_up_at = parse_hhmm("schedule.give_up_at", &s.give_up_at)?;
    if give_up_at <= time {
        return Err(invalid(
            "schedule.give_up_at",
            format!(
                "{:?} must be later than schedule.time ({})",
                s.give_up_at,
                time.format("%H:%M")
            ),
        ));
    }
    Ok(ScheduleConfig {
        enabled: s.enabled,
        time,
        timezone,
        retry_every_minutes: positive("schedule.retry_every_minutes", s.retry_every_minutes, 1440)?
            as u32,
        give_up_at,
    })
}
