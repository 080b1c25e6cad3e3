//! The scheduler loop: the daily run at `schedule.time` in `schedule.timezone`, polling
//! until the day's fixing appears or `give_up_at`, catch-up after downtime, the token
//! keep-alive pass, periodic health alerts, and the systemd watchdog ping.
//!
//! Wall time comes from the injected clock, so tests move the calendar instead of sleeping;
//! the loop itself wakes on a short real-time tick.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::time::{is_business_day, local_date, local_instant, next_run, polling_deadline_passed};
use crate::app::AppState;
use crate::boa::model::TableKind;
use crate::fixings;
use crate::notify;
use crate::ops::ApiError;
use crate::sync::{engine, sync_all_for, Scope};

/// How far back catch-up looks for dates a company has not received.
pub const CATCH_UP_DAYS: i64 = 31;
/// Real-time tick of the loop (clock checks, watchdog pings).
const TICK: Duration = Duration::from_millis(250);
/// Keep-alive pass interval.
const KEEP_ALIVE_EVERY: chrono::Duration = chrono::Duration::hours(6);
/// Health alert check interval.
const ALERT_CHECK_EVERY: chrono::Duration = chrono::Duration::hours(1);

const META_LAST_RUN: &str = "last_scheduled_run";

/// The outcome of the last daily run (kept in the store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The local date the run was for.
    pub date: NaiveDate,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// What happened, in a sentence.
    pub outcome: String,
}

/// The last run, as stored.
pub fn last_run(state: &AppState) -> Option<RunRecord> {
    state.store.meta_get(META_LAST_RUN).ok().flatten()
}

/// Runs `f` while pinging the watchdog, so long work does not look like a hang; returns
/// `None` when shutdown begins first.
async fn watched<F: Future>(token: &CancellationToken, f: F) -> Option<F::Output> {
    tokio::pin!(f);
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            r = &mut f => return Some(r),
            _ = token.cancelled() => return None,
            _ = tick.tick() => notify::watchdog(),
        }
    }
}

/// Waits (by the injected clock) until `at`; `false` when shutdown begins first.
async fn wait_until(state: &AppState, token: &CancellationToken, at: DateTime<Utc>) -> bool {
    while state.now() < at {
        tokio::select! {
            _ = token.cancelled() => return false,
            _ = tokio::time::sleep(TICK) => notify::watchdog(),
        }
    }
    true
}

/// The loop. Runs for the daemon's lifetime, whether or not the schedule is enabled (the
/// watchdog and the token keep-alive always run).
pub async fn run(state: Arc<AppState>, token: CancellationToken) {
    if state.config().schedule.enabled {
        catch_up_missed(&state, &token).await;
    }
    let mut next_keep_alive = state.now() + chrono::Duration::minutes(1);
    let mut next_alert_check = state.now() + chrono::Duration::minutes(5);
    loop {
        let config = state.config();
        let (at, tz) = (config.schedule.time, config.schedule.timezone);
        let next = next_run(state.now(), at, tz);
        state.set_next_run(config.schedule.enabled.then_some(next));
        // Sleep until the run, re-reading the config (SIGHUP may move the time).
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
            notify::watchdog();
            let now = state.now();
            if now >= next_keep_alive {
                next_keep_alive = now + KEEP_ALIVE_EVERY;
                if let Some(Ok(n)) = watched(&token, state.tokens.keep_alive_pass()).await {
                    if n > 0 {
                        tracing::info!(refreshed = n, "token keep-alive pass");
                    }
                }
            }
            if now >= next_alert_check {
                next_alert_check = now + ALERT_CHECK_EVERY;
                crate::alerts::check_health(&state);
            }
            if state
                .resync_needed
                .swap(false, std::sync::atomic::Ordering::Relaxed)
                && state.config().schedule.enabled
            {
                tracing::info!("re-syncing company rates superseded by a revised or late fixing");
                if watched(&token, catch_up_all(&state)).await.is_none() {
                    return;
                }
            }
            let c = state.config();
            if c.schedule.time != at || c.schedule.timezone != tz || !c.schedule.enabled {
                break;
            }
            if now >= next {
                let date = local_date(next, tz);
                let today = local_date(now, tz);
                if date < today && now >= local_instant(today, at, tz) {
                    // The wall clock jumped over several runs (host suspended, clock
                    // stepped): today's run is due, so catch up as after downtime.
                    catch_up_missed(&state, &token).await;
                } else {
                    daily_run(&state, &token, date).await;
                }
                break;
            }
        }
        if !state.config().schedule.enabled {
            // Disabled: idle until re-enabled by a reload.
            state.set_next_run(None);
            while !state.config().schedule.enabled {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(TICK) => notify::watchdog(),
                }
                if state.now() >= next_keep_alive {
                    next_keep_alive = state.now() + KEEP_ALIVE_EVERY;
                    let _ = watched(&token, state.tokens.keep_alive_pass()).await;
                }
            }
        }
    }
}

/// After downtime (at start, or when the wall clock jumped over runs): syncs every date of
/// the last 31 days an active company has not received, oldest first, then runs today's
/// daily run at once when its time has passed and it has not run.
async fn catch_up_missed(state: &Arc<AppState>, token: &CancellationToken) {
    let config = state.config();
    let tz = config.schedule.timezone;
    let now = state.now();
    let today = local_date(now, tz);
    let todays_run = local_instant(today, config.schedule.time, tz);
    let done = last_run(state).map(|r| r.date);
    // Refresh the archive so catch-up sees the newest fixing. The dates before today go
    // first: the missed run for today is the newest date, so it comes last.
    if watched(token, fixings::fetch(state, false)).await.is_none()
        || watched(token, catch_up_all(state)).await.is_none()
    {
        return;
    }
    if now >= todays_run && done.is_none_or(|d| d < today) {
        tracing::info!(date = %today, "running the missed daily run now");
        daily_run(state, token, today).await;
    }
}

/// The daily run for `date`: fetch; on a business day poll until the fixing appears or
/// `give_up_at` (then it is a holiday, provided the page could be read at least once: a
/// day on which BoA could not be read is not known to have had no fixing); sync every
/// company; record the outcome.
pub async fn daily_run(state: &Arc<AppState>, token: &CancellationToken, date: NaiveDate) {
    let started_at = state.now();
    notify::status(&format!("daily run for {date}"));
    let holidays = fixings::holidays(state).unwrap_or_default();
    let business = is_business_day(date) && !holidays.contains(&date);
    let mut have = has_main(state, date);
    // Whether a fetch of this run read the page (so a missing fixing means "none published").
    let mut page_read = false;
    if !have {
        match watched(token, fixings::fetch(state, true)).await {
            Some(Err(e)) => tracing::warn!(error = %e, "scheduled BoA fetch failed"),
            Some(Ok(_)) => page_read = true,
            None => {}
        }
        have = has_main(state, date);
    }
    let mut no_fixing = false;
    let mut unread = false;
    if business && !have {
        loop {
            let config = state.config();
            if polling_deadline_passed(
                state.now(),
                config.schedule.give_up_at,
                config.schedule.timezone,
            ) {
                let by = config.schedule.give_up_at.format("%H:%M");
                if page_read {
                    tracing::warn!(date = %date, "no BoA fixing for {date} by {by}; treating it as a holiday");
                    if let Err(e) = fixings::mark_holiday(state, date) {
                        tracing::error!(error = %e, "recording the holiday failed");
                    }
                } else {
                    tracing::error!(date = %date, "the BoA page could not be read on {date} by {by}; not treating it as a holiday");
                    unread = true;
                }
                no_fixing = true;
                break;
            }
            let give_up = local_instant(date, config.schedule.give_up_at, config.schedule.timezone);
            let retry = state.now()
                + chrono::Duration::minutes(i64::from(config.schedule.retry_every_minutes));
            if !wait_until(state, token, retry.min(give_up)).await {
                return;
            }
            if state.now() < give_up {
                match watched(token, fixings::fetch(state, true)).await {
                    None => return,
                    Some(Err(e)) => tracing::warn!(error = %e, "BoA poll failed"),
                    Some(Ok(_)) => page_read = true,
                }
            }
            if has_main(state, date) {
                have = true;
                break;
            }
        }
    }
    let scope = if have {
        Scope::All
    } else {
        Scope::FillNonBusinessDays
    };
    let outcome = match watched(token, sync_all_for(state, date, scope)).await {
        None => return,
        Some(Ok(v)) => {
            let prefix = if unread {
                "no fixing today (the BoA page could not be read); "
            } else if no_fixing {
                "no fixing today; "
            } else if !business {
                "non-business day; "
            } else {
                ""
            };
            format!("{prefix}{}", v["message"].as_str().unwrap_or("done"))
        }
        Some(Err(e)) => format!("sync-all refused: {}", e.message),
    };
    let rec = RunRecord {
        date,
        started_at,
        finished_at: state.now(),
        outcome: outcome.clone(),
    };
    if let Err(e) = state.store.meta_put(META_LAST_RUN, &rec) {
        tracing::error!(error = %e, "recording the daily run failed");
    }
    let _ = state.store.flush().await;
    tracing::info!(date = %date, "daily run finished: {outcome}");
    notify::status(&format!("last run {date}: {outcome}"));
    let _ = watched(token, catch_up_all(state)).await;
}

fn has_main(state: &AppState, date: NaiveDate) -> bool {
    matches!(state.store.table(TableKind::Main, date), Ok(Some(_)))
}

/// Syncs every active company's missing dates (up to 31 days back), oldest first.
pub async fn catch_up_all(state: &Arc<AppState>) {
    let companies = match state.store.companies() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "catch-up: cannot list companies");
            return;
        }
    };
    for c in companies
        .iter()
        .filter(|c| c.is_active && c.sync_enabled && c.is_connected())
    {
        if state.shutdown.is_cancelled() {
            return;
        }
        if let Err(e) = catch_up_company(state, &c.realm_id, false).await {
            tracing::warn!(realm_id = %c.realm_id, error = %e, "catch-up failed");
        }
    }
}

/// Syncs one company's missing dates: every date of the last 31 days (not before it was
/// first connected) with a fixing in force that it has not received, oldest first; with
/// `include_today`, today (or the newest fixing's date before today's is published) too.
///
/// # Errors
/// Store failures.
pub async fn catch_up_company(
    state: &Arc<AppState>,
    realm: &str,
    include_today: bool,
) -> Result<usize, ApiError> {
    let Some(c) = state.store.company(realm)? else {
        return Ok(0);
    };
    if !(c.is_active && c.sync_enabled && c.is_connected()) {
        return Ok(0);
    }
    let config = state.config();
    let tz = config.schedule.timezone;
    let today = state.today();
    let created = local_date(c.created_at, tz);
    let received: BTreeSet<NaiveDate> = state.store.synced_dates(realm)?.into_iter().collect();
    let holidays = fixings::holidays(state)?;
    let mut dates = Vec::new();
    // Today belongs to the daily run until it has happened; after that, a date of today that
    // is not (or no longer) synced is caught up like any other.
    let today_done = last_run(state).is_some_and(|r| r.date >= today);
    let mut d = today - chrono::Duration::days(CATCH_UP_DAYS);
    while d < today || (today_done && d == today) {
        if d >= created && !received.contains(&d) {
            let business = is_business_day(d) && !holidays.contains(&d);
            if (business || c.fill_non_business_days) && fixings::resolve(state, d).is_ok() {
                dates.push(d);
            }
        }
        match d.succ_opt() {
            Some(n) => d = n,
            None => break,
        }
    }
    if include_today {
        let t = engine::target_date(state, None)?;
        if !received.contains(&t) && !dates.contains(&t) {
            dates.push(t);
        }
    }
    let mut n = 0;
    for d in dates {
        let out = engine::sync_company(state, realm, d).await?;
        if out.error.is_none() {
            n += 1;
        } else {
            // A failure (reconnect needed, multicurrency off, QuickBooks down…) would repeat
            // for every later date: stop here; the next pass tries again, oldest first.
            break;
        }
    }
    Ok(n)
}
