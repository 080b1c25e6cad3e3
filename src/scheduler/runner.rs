//! The scheduler loop: the daily run at `schedule.time` in `schedule.timezone`, polling
//! until the day's fixing appears or `give_up_at`, catch-up after downtime, the token
//! keep-alive pass, periodic health alerts, and the systemd watchdog ping.
//!
//! Wall time comes from the injected clock, so tests move the calendar instead of sleeping;
//! the loop itself wakes on a short real-time tick.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::alerts::Alerts;
use crate::archive::Archive;
use crate::config::{current, Config, ConfigWatch};
use crate::locks::lock;
use crate::notify;
use crate::qbo::tokens::TokenManager;
use crate::store::Store;
use crate::sync::{Error, Scope, SyncEngine};
use crate::time::calendar::{
    is_business_day, local_date, local_instant, next_run, polling_deadline_passed,
};
use crate::time::clock::Clock;

/// How far back catch-up looks for dates a company has not received.
pub const CATCH_UP_DAYS: i64 = 31;
/// Real-time tick of the loop (clock checks, watchdog pings).
const TICK: Duration = Duration::from_millis(250);
/// Keep-alive pass interval.
const KEEP_ALIVE_EVERY: chrono::Duration = chrono::Duration::hours(6);
/// Health alert check interval.
const ALERT_CHECK_EVERY: chrono::Duration = chrono::Duration::hours(1);

const META_LAST_RUN: &str = "last_scheduled_run";
/// A daily run that met undecodable company records: kept apart, so the run is not taken
/// as done and catch-up tries it again.
const META_LAST_FAILED_RUN: &str = "last_failed_run";

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

/// What the scheduler is built from.
pub struct Parts {
    /// The store (the last run record).
    pub store: Arc<Store>,
    /// The fixing archive (fetches, holidays).
    pub archive: Arc<Archive>,
    /// The sync engine.
    pub engine: Arc<SyncEngine>,
    /// Token keep-alive.
    pub tokens: Arc<TokenManager>,
    /// Health alerts.
    pub alerts: Arc<Alerts>,
    /// Wall time.
    pub clock: Arc<dyn Clock>,
    /// The configuration.
    pub config: ConfigWatch,
    /// Cancelled when the daemon stops.
    pub shutdown: CancellationToken,
}

/// The scheduler service: the daily loop and catch-up.
pub struct Scheduler {
    store: Arc<Store>,
    archive: Arc<Archive>,
    engine: Arc<SyncEngine>,
    tokens: Arc<TokenManager>,
    alerts: Arc<Alerts>,
    clock: Arc<dyn Clock>,
    config: ConfigWatch,
    shutdown: CancellationToken,
    next_run: Mutex<Option<DateTime<Utc>>>,
    /// The latest clock reading the loop has fully acted on (nothing more is due at it).
    seen: Mutex<Option<DateTime<Utc>>>,
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

impl Scheduler {
    /// The scheduler over its parts.
    pub fn new(p: Parts) -> Self {
        Scheduler {
            store: p.store,
            archive: p.archive,
            engine: p.engine,
            tokens: p.tokens,
            alerts: p.alerts,
            clock: p.clock,
            config: p.config,
            shutdown: p.shutdown,
            next_run: Mutex::new(None),
            seen: Mutex::new(None),
        }
    }

    fn config(&self) -> Arc<Config> {
        current(&self.config)
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The next scheduled run (`None` when disabled): as the loop computed it, or, before
    /// the loop has (at start the catch-up and its BoA fetch, which may retry for minutes,
    /// come first; after a reload re-enabled the schedule), from the config and the clock.
    pub fn next_run(&self) -> Option<DateTime<Utc>> {
        let config = self.config();
        if !config.schedule.enabled {
            return None;
        }
        let planned = *lock(&self.next_run);
        Some(planned.unwrap_or_else(|| {
            next_run(self.now(), config.schedule.time, config.schedule.timezone)
        }))
    }

    fn set_next_run(&self, at: Option<DateTime<Utc>>) {
        *lock(&self.next_run) = at;
    }

    /// The latest clock reading the loop has fully acted on: when it equals the clock's
    /// `now`, everything due by then has happened (tests wait for it instead of sleeping).
    pub fn clock_seen(&self) -> Option<DateTime<Utc>> {
        *lock(&self.seen)
    }

    fn mark_seen(&self, at: DateTime<Utc>) {
        *lock(&self.seen) = Some(at);
    }

    /// The last daily run that completed, as stored.
    pub async fn last_run(&self) -> Option<RunRecord> {
        self.store.meta_get(META_LAST_RUN).await.ok().flatten()
    }

    /// The last daily run recorded as failed (it met undecodable records), if newer than
    /// the last completed one.
    pub async fn last_failed_run(&self) -> Option<RunRecord> {
        let failed: Option<RunRecord> = self
            .store
            .meta_get(META_LAST_FAILED_RUN)
            .await
            .ok()
            .flatten();
        match (failed, self.last_run().await) {
            (Some(f), Some(ok)) if f.date <= ok.date => None,
            (f, _) => f,
        }
    }

    /// Waits (by the injected clock) until `at`; `false` when shutdown begins first.
    async fn wait_until(&self, token: &CancellationToken, at: DateTime<Utc>) -> bool {
        loop {
            let now = self.now();
            if now >= at {
                break;
            }
            self.mark_seen(now);
            tokio::select! {
                _ = token.cancelled() => return false,
                _ = self.clock.sleep_until(at, TICK) => notify::watchdog(),
            }
        }
        true
    }

    /// Whether periodic work planned for `next` is due at `now` (then the next time is set
    /// `every` later). While a sync-all runs it is put off by a minute instead: the keep-alive
    /// and the alert check each pass over every company, which beside a large run only adds
    /// to its memory peak (the run refreshes the tokens it uses itself).
    fn due_unless_syncing(
        &self,
        now: DateTime<Utc>,
        next: &mut DateTime<Utc>,
        every: chrono::Duration,
    ) -> bool {
        if now < *next {
            return false;
        }
        if self.engine.running_date().is_some() {
            *next = now + chrono::Duration::minutes(1);
            return false;
        }
        *next = now + every;
        true
    }

    async fn keep_alive(&self, token: &CancellationToken) {
        if let Some(Ok(n)) = watched(token, self.tokens.keep_alive_pass()).await {
            if n > 0 {
                tracing::info!(refreshed = n, "token keep-alive pass");
            }
        }
    }

    /// The loop. Runs for the daemon's lifetime, whether or not the schedule is enabled
    /// (the watchdog and the token keep-alive always run).
    pub async fn run(self: Arc<Self>, token: CancellationToken) {
        if self.config().schedule.enabled {
            self.catch_up_missed(&token).await;
        }
        let mut next_keep_alive = self.now() + chrono::Duration::minutes(1);
        let mut next_alert_check = self.now() + chrono::Duration::minutes(5);
        loop {
            let config = self.config();
            let (at, tz) = (config.schedule.time, config.schedule.timezone);
            let next = next_run(self.now(), at, tz);
            self.set_next_run(config.schedule.enabled.then_some(next));
            // Sleep until the run, re-reading the config (SIGHUP may move the time).
            loop {
                let wake = next.min(next_keep_alive).min(next_alert_check);
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = self.clock.sleep_until(wake, TICK) => {}
                }
                notify::watchdog();
                let now = self.now();
                if self.due_unless_syncing(now, &mut next_keep_alive, KEEP_ALIVE_EVERY) {
                    self.keep_alive(&token).await;
                }
                if self.due_unless_syncing(now, &mut next_alert_check, ALERT_CHECK_EVERY) {
                    // One record at a time (no Vec of every company), and the undecodable ones.
                    let config = self.config();
                    match self
                        .store
                        .each_company(|c| self.alerts.check_company(&c, &config))
                        .await
                    {
                        Ok(bad) => self.alerts.check_bad_records(&bad),
                        Err(e) => {
                            tracing::error!(error = %e, "health alerts: cannot list companies")
                        }
                    }
                }
                if self.archive.take_resync_needed() && self.config().schedule.enabled {
                    tracing::info!(
                        "re-syncing company rates superseded by a revised or late fixing"
                    );
                    if watched(&token, self.catch_up_all()).await.is_none() {
                        return;
                    }
                }
                let c = self.config();
                if c.schedule.time != at || c.schedule.timezone != tz || !c.schedule.enabled {
                    break;
                }
                if now < next {
                    self.mark_seen(now);
                    continue;
                }
                let date = local_date(next, tz);
                let today = local_date(now, tz);
                if date < today && now >= local_instant(today, at, tz) {
                    // The wall clock jumped over several runs (host suspended, clock
                    // stepped): today's run is due, so catch up as after downtime.
                    self.catch_up_missed(&token).await;
                } else {
                    self.daily_run(&token, date).await;
                }
                break;
            }
            if !self.config().schedule.enabled {
                // Disabled: idle until re-enabled by a reload.
                self.set_next_run(None);
                while !self.config().schedule.enabled {
                    self.mark_seen(self.now());
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tokio::time::sleep(TICK) => notify::watchdog(),
                    }
                    if self.due_unless_syncing(self.now(), &mut next_keep_alive, KEEP_ALIVE_EVERY) {
                        self.keep_alive(&token).await;
                    }
                }
            }
        }
    }

    /// After downtime (at start, or when the wall clock jumped over runs): syncs every date
    /// of the last 31 days an active company has not received, oldest first, then runs
    /// today's daily run at once when its time has passed and it has not run.
    async fn catch_up_missed(&self, token: &CancellationToken) {
        let config = self.config();
        let tz = config.schedule.timezone;
        let now = self.now();
        let today = local_date(now, tz);
        let todays_run = local_instant(today, config.schedule.time, tz);
        let done = self.last_run().await.map(|r| r.date);
        // Refresh the archive so catch-up sees the newest fixing. The dates before today go
        // first: the missed run for today is the newest date, so it comes last.
        if watched(token, self.archive.fetch(false)).await.is_none()
            || watched(token, self.catch_up_all()).await.is_none()
        {
            return;
        }
        if now >= todays_run && done.is_none_or(|d| d < today) {
            tracing::info!(date = %today, "running the missed daily run now");
            self.daily_run(token, today).await;
        }
    }

    /// The daily run for `date`: fetch; on a business day poll until the fixing appears or
    /// `give_up_at` (then it is a holiday, provided the page could be read at least once:
    /// a day on which BoA could not be read is not known to have had no fixing); sync every
    /// company; record the outcome.
    pub async fn daily_run(&self, token: &CancellationToken, date: NaiveDate) {
        let started_at = self.now();
        notify::status(&format!("daily run for {date}"));
        let holidays = self.archive.holidays().await.unwrap_or_default();
        let business = is_business_day(date) && !holidays.contains(&date);
        let mut have = self.archive.has_main(date).await;
        // Whether a fetch of this run read the page (so a missing fixing means "none published").
        let mut page_read = false;
        if !have {
            match watched(token, self.archive.fetch(true)).await {
                Some(Err(e)) => tracing::warn!(error = %e, "scheduled BoA fetch failed"),
                Some(Ok(_)) => page_read = true,
                None => {}
            }
            have = self.archive.has_main(date).await;
        }
        let mut found = if have { Fixing::Stored } else { Fixing::NotYet };
        if business && !have {
            match self.poll_for_fixing(token, date, page_read).await {
                Some(f) => found = f,
                None => return,
            }
        }
        let scope = if found == Fixing::Stored {
            Scope::All
        } else {
            Scope::FillNonBusinessDays
        };
        let Some(result) = watched(
            token,
            self.engine
                .sync_all(date, scope, crate::sync::Elsewhere::Wait(token.clone())),
        )
        .await
        else {
            return;
        };
        let (outcome, done) = run_outcome(result, business, found);
        let rec = RunRecord {
            date,
            started_at,
            finished_at: self.now(),
            outcome: outcome.clone(),
        };
        let key = if done {
            META_LAST_RUN
        } else {
            META_LAST_FAILED_RUN
        };
        if let Err(e) = self.store.meta_put(key, &rec).await {
            tracing::error!(error = %e, "recording the daily run failed");
        }
        let _ = self.store.flush().await;
        tracing::info!(date = %date, "daily run finished: {outcome}");
        notify::status(&format!("last run {date}: {outcome}"));
        let _ = watched(token, self.catch_up_all()).await;
    }

    /// On a business day without the fixing: polls BoA every `retry_every_minutes` until it
    /// is stored or `give_up_at` passes (then it is a holiday, provided the page could be read
    /// at least once in this run: `page_read`). `None` when shutdown interrupted it.
    async fn poll_for_fixing(
        &self,
        token: &CancellationToken,
        date: NaiveDate,
        mut page_read: bool,
    ) -> Option<Fixing> {
        loop {
            let config = self.config();
            if polling_deadline_passed(
                self.now(),
                config.schedule.give_up_at,
                config.schedule.timezone,
            ) {
                let by = config.schedule.give_up_at.format("%H:%M");
                if page_read {
                    tracing::warn!(date = %date, "no BoA fixing for {date} by {by}; treating it as a holiday");
                    if let Err(e) = self.archive.mark_holiday(date).await {
                        tracing::error!(error = %e, "recording the holiday failed");
                    }
                    return Some(Fixing::NoneToday);
                }
                tracing::error!(date = %date, "the BoA page could not be read on {date} by {by}; not treating it as a holiday");
                return Some(Fixing::Unread);
            }
            let give_up = local_instant(date, config.schedule.give_up_at, config.schedule.timezone);
            let retry = self.now()
                + chrono::Duration::minutes(i64::from(config.schedule.retry_every_minutes));
            if !self.wait_until(token, retry.min(give_up)).await {
                return None;
            }
            if self.now() < give_up {
                match watched(token, self.archive.fetch(true)).await {
                    None => return None,
                    Some(Err(e)) => tracing::warn!(error = %e, "BoA poll failed"),
                    Some(Ok(_)) => page_read = true,
                }
            }
            if self.archive.has_main(date).await {
                return Some(Fixing::Stored);
            }
        }
    }

    /// Syncs every active company's missing dates (up to 31 days back), oldest first.
    pub async fn catch_up_all(&self) {
        // Realm ids only, one record decoded at a time (100,000 records at once would be
        // ~100 MB); each company's record is re-read by `catch_up_company`.
        let mut realms = Vec::new();
        let listed = self.store.each_company(|c| {
            if c.is_active && c.sync_enabled && c.is_connected() {
                realms.push(c.realm_id);
            }
        });
        if let Err(e) = listed.await {
            tracing::error!(error = %e, "catch-up: cannot list companies");
            return;
        }
        for realm in realms {
            if self.shutdown.is_cancelled() {
                return;
            }
            if let Err(e) = self.catch_up_company(&realm, false).await {
                tracing::warn!(realm_id = %realm, error = %e, "catch-up failed");
            }
        }
    }

    /// Syncs one company's missing dates: every date of the last 31 days (not before it was
    /// first connected) with a fixing in force that it has not received, oldest first; with
    /// `include_today`, today (or the newest fixing's date before today's is published) too.
    ///
    /// # Errors
    /// Store failures.
    pub async fn catch_up_company(&self, realm: &str, include_today: bool) -> Result<usize, Error> {
        let Some(c) = self.store.company(realm).await? else {
            return Ok(0);
        };
        if !(c.is_active && c.sync_enabled && c.is_connected()) {
            return Ok(0);
        }
        let tz = self.config().schedule.timezone;
        let today = local_date(self.now(), tz);
        let created = local_date(c.created_at, tz);
        let received: BTreeSet<NaiveDate> =
            self.store.synced_dates(realm).await?.into_iter().collect();
        let holidays = self.archive.holidays().await?;
        let mut dates = Vec::new();
        // Today belongs to the daily run until it has happened; after that, a date of today
        // that is not (or no longer) synced is caught up like any other.
        let today_done = self.last_run().await.is_some_and(|r| r.date >= today);
        let mut d = today - chrono::Duration::days(CATCH_UP_DAYS);
        while d < today || (today_done && d == today) {
            if d >= created && !received.contains(&d) {
                let business = is_business_day(d) && !holidays.contains(&d);
                if (business || c.fill_non_business_days) && self.archive.resolve(d).await.is_ok() {
                    dates.push(d);
                }
            }
            match d.succ_opt() {
                Some(n) => d = n,
                None => break,
            }
        }
        if include_today {
            let t = self.engine.default_date().await;
            if !received.contains(&t) && !dates.contains(&t) {
                dates.push(t);
            }
        }
        let mut n = 0;
        for d in dates {
            let out = self.engine.sync_company(realm, d).await;
            if out.error.is_none() {
                n += 1;
            } else {
                // A failure (reconnect needed, multicurrency off, QuickBooks down…) would
                // repeat for every later date: stop here; the next pass tries again.
                break;
            }
        }
        Ok(n)
    }
}

/// What a daily run knows of its date's fixing before it syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fixing {
    /// Stored: every company gets it.
    Stored,
    /// Not stored and not polled for (a non-business day).
    NotYet,
    /// None by `give_up_at` although the page was read: a holiday.
    NoneToday,
    /// None by `give_up_at`, and the page could not be read at all.
    Unread,
}

/// The recorded outcome of a daily run's sync-all, and whether the date counts as done
/// (else catch-up tries it again).
fn run_outcome(
    result: Result<Arc<crate::sync::RunReport>, Error>,
    business: bool,
    found: Fixing,
) -> (String, bool) {
    match result {
        Ok(report) if !report.bad_records.is_empty() => (
            format!(
                "failed: {} company records cannot be decoded ({}); Synced {}/{} companies successfully",
                report.bad_records.len(),
                report.bad_records.join(", "),
                report.successful,
                report.total
            ),
            false,
        ),
        Ok(report) => {
            let prefix = match found {
                Fixing::Unread => "no fixing today (the BoA page could not be read); ",
                Fixing::NoneToday => "no fixing today; ",
                _ if !business => "non-business day; ",
                _ => "",
            };
            (
                format!(
                    "{prefix}Synced {}/{} companies successfully",
                    report.successful, report.total
                ),
                true,
            )
        }
        // Not done: catch-up tries the date again.
        Err(e) => (format!("sync-all refused: {e}"), false),
    }
}
