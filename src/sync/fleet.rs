//! The fleet run (SPEC §5 "sync-all"): every active company synced for one date with bounded,
//! adaptive concurrency ([`Aimd`]), one run at a time per date and scope (a second caller
//! joins it), its results packed ([`RunEntries`]) and its summary kept ([`LastRun`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveDate, Utc};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::engine::SyncEngine;
use super::error::Error;
use crate::locks::lock;

/// Progress of the sync-all in flight (for `status`).
#[derive(Debug, Default)]
pub struct Progress {
    /// Companies in the run.
    pub total: AtomicUsize,
    /// Finished so far.
    pub done: AtomicUsize,
    /// Failed so far.
    pub failed: AtomicUsize,
}

/// Which companies a sync-all covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every active, sync-enabled, connected company.
    All,
    /// Those, restricted to companies that want weekend/holiday dates filled.
    FillNonBusinessDays,
}

/// One company's line of a sync-all, borrowed from its [`RunReport`].
#[derive(Debug, Clone, Copy)]
pub struct RunEntry<'a> {
    /// Realm.
    pub realm: &'a str,
    /// Display name.
    pub company_name: &'a str,
    /// Currencies equal in QuickBooks after the call.
    pub rates_synced: usize,
    /// Writes made.
    pub rates_written: usize,
    /// Already equal.
    pub rates_unchanged: usize,
    /// Set when that company failed.
    pub error: Option<&'a Error>,
}

/// The companies of a sync-all and their results, packed (BENCHMARKS.md, issue 15): every
/// realm and name back to back in one string and a small fixed-size result per company,
/// ~80 B per company instead of ~290 B for a list of `(realm, name)` strings plus a
/// `Vec` of owned lines (≈ 20 MB less at 100,000 companies, most of it held to the end of
/// the run; the measured peak RSS fell by 14-16 MiB).
#[derive(Debug, Clone, Default)]
pub struct RunEntries {
    /// Every company's realm, then its name, back to back.
    text: String,
    /// Where each company's realm and name end in `text`.
    ends: Vec<(usize, usize)>,
    /// Each company's result, by position (filled as the syncs finish).
    results: Vec<Slot>,
}

/// One company's result: counts, and what most companies do not have (a failure, or a
/// name that changed during the run) boxed.
#[derive(Debug, Clone, Default)]
pub(super) struct Slot {
    done: bool,
    rates_synced: u32,
    rates_written: u32,
    rates_unchanged: u32,
    rare: Option<Box<Rare>>,
}

#[derive(Debug, Clone)]
pub(super) struct Rare {
    /// The name the sync read, when it is not the one listed.
    name: Option<String>,
    error: Option<Error>,
}

/// A count as stored in a [`Slot`] (a company's rate counts are far below `u32::MAX`).
pub(super) fn count32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl RunEntries {
    /// Lists a company (its result not yet known).
    pub fn push(&mut self, realm: &str, name: &str) {
        self.text.push_str(realm);
        let realm_end = self.text.len();
        self.text.push_str(name);
        self.ends.push((realm_end, self.text.len()));
        self.results.push(Slot::default());
    }

    pub(super) fn start(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.ends[i - 1].1
        }
    }

    pub(super) fn realm(&self, i: usize) -> &str {
        &self.text[self.start(i)..self.ends[i].0]
    }

    pub(super) fn listed_name(&self, i: usize) -> &str {
        &self.text[self.ends[i].0..self.ends[i].1]
    }

    /// Companies listed.
    pub(super) fn listed(&self) -> usize {
        self.ends.len()
    }

    /// Records the result of the `i`-th company listed (`counts`: rates synced, written,
    /// unchanged).
    pub fn finish(
        &mut self,
        i: usize,
        name: String,
        counts: (usize, usize, usize),
        error: Option<Error>,
    ) {
        let name = (name != self.listed_name(i)).then_some(name);
        self.results[i] = Slot {
            done: true,
            rates_synced: count32(counts.0),
            rates_written: count32(counts.1),
            rates_unchanged: count32(counts.2),
            rare: (name.is_some() || error.is_some()).then(|| Box::new(Rare { name, error })),
        };
    }

    /// Companies with a result.
    pub fn len(&self) -> usize {
        self.results.iter().filter(|s| s.done).count()
    }

    /// Whether no company has a result.
    pub fn is_empty(&self) -> bool {
        !self.results.iter().any(|s| s.done)
    }

    /// The lines, one per company with a result, in the order of the store.
    pub fn iter(&self) -> impl Iterator<Item = RunEntry<'_>> + '_ {
        self.results
            .iter()
            .enumerate()
            .filter(|(_, s)| s.done)
            .map(|(i, s)| {
                let rare = s.rare.as_deref();
                RunEntry {
                    realm: self.realm(i),
                    company_name: rare
                        .and_then(|r| r.name.as_deref())
                        .unwrap_or_else(|| self.listed_name(i)),
                    rates_synced: s.rates_synced as usize,
                    rates_written: s.rates_written as usize,
                    rates_unchanged: s.rates_unchanged as usize,
                    error: rare.and_then(|r| r.error.as_ref()),
                }
            })
    }
}

/// A finished sync-all.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Rate date.
    pub date: NaiveDate,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
    /// Companies in the run.
    pub total: usize,
    /// Companies synced.
    pub successful: usize,
    /// Companies that failed.
    pub failed: usize,
    /// Wall time.
    pub seconds: f64,
    /// One line per company, in the order of the store.
    pub entries: RunEntries,
    /// Company records that could not be decoded (their keys): skipped, so the run counts
    /// as failed for them.
    pub bad_records: Vec<String>,
}

/// A finished sync-all without its lines (kept for `status` and metrics).
#[derive(Debug, Clone)]
pub struct LastRun {
    /// Rate date.
    pub date: NaiveDate,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
    /// Companies synced.
    pub successful: usize,
    /// Companies that failed.
    pub failed: usize,
    /// Wall time.
    pub seconds: f64,
}

pub(super) type RunResult = Result<Arc<RunReport>, Error>;
/// The sync-all in flight: its date and a receiver of its result.
pub(super) type Running = Option<(NaiveDate, Scope, watch::Receiver<Option<RunResult>>)>;

/// Additive increase, multiplicative decrease of the companies a sync-all runs at once. A
/// company is "pressured" when QuickBooks throttled it (429) or it failed with 429/5xx after
/// the retries. A run of [`Aimd::RUN`] pressured companies in a row, while at least half of
/// the latest completions (the last `level`, at least [`Aimd::RUN`]) were pressured, halves
/// the level (at most once per `level` completions, so one burst of concurrent failures
/// counts once); every `level` clean completions since the level last changed raise it by
/// one, up to the configured maximum. Pressured companies scattered among clean ones
/// (Intuit's per-realm limits, a few 429s of a busy realm) do not lower it and do not hold
/// back its recovery: the limits are per company, not per app, and fewer companies in flight
/// would only slow the run.
#[derive(Debug)]
pub(super) struct Aimd {
    level: usize,
    max: usize,
    /// Clean completions since the level last changed.
    clean: usize,
    /// Pressured completions in a row.
    run: usize,
    since_decrease: usize,
    /// The latest completions, newest last (`true`: pressured); at most `max` kept.
    recent: std::collections::VecDeque<bool>,
}

impl Aimd {
    /// Pressured companies in a row that make a decrease.
    const RUN: usize = 3;

    pub(super) fn new(max: usize) -> Self {
        Aimd {
            level: max.max(1),
            max: max.max(1),
            clean: 0,
            run: 0,
            // The first run of pressure halves at once.
            since_decrease: max.max(1),
            recent: std::collections::VecDeque::with_capacity(max.max(Self::RUN)),
        }
    }

    pub(super) fn record(&mut self, pressured: bool) {
        self.since_decrease += 1;
        if self.recent.len() == self.max.max(Self::RUN) {
            self.recent.pop_front();
        }
        self.recent.push_back(pressured);
        if pressured {
            self.run += 1;
            if self.run >= Self::RUN && self.since_decrease >= self.level && self.mostly_pressured()
            {
                self.level = (self.level / 2).max(1);
                self.since_decrease = 0;
                self.run = 0;
                self.clean = 0;
            }
        } else {
            self.run = 0;
            self.clean += 1;
            if self.clean >= self.level && self.level < self.max {
                self.level += 1;
                self.clean = 0;
            }
        }
    }

    /// At least half of the last `level` completions (at least [`Aimd::RUN`]) were pressured.
    pub(super) fn mostly_pressured(&self) -> bool {
        let window = self.level.max(Self::RUN).min(self.recent.len());
        let pressured = self
            .recent
            .iter()
            .rev()
            .take(window)
            .filter(|p| **p)
            .count();
        pressured * 2 >= window
    }
}

/// Companies a sync-all finishes between two [`release_free_heap`] calls.
pub(super) const TRIM_EVERY: usize = 1000;

/// Hands the free pages inside glibc's malloc arenas back to the kernel (`malloc_trim(0)`).
/// A sync-all frees as much as it allocates, but spread over the arenas of the runtime's
/// and blocking pool's threads (one flush thread per company in flight), the free space
/// stays resident and grows with the run: calling this every [`TRIM_EVERY`] companies
/// lowered the peak RSS of a 100,000-company run from ~147 to ~124 MiB (BENCHMARKS.md,
/// issue 15). One call walks the arenas' free lists: ~100 calls per 100,000 companies.
pub(super) fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns unused memory of the allocator to the kernel; it
    // takes each arena's lock and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Clears the sync-all in flight when dropped.
pub(super) struct ClearRunning<'a>(&'a Mutex<Running>);

impl Drop for ClearRunning<'_> {
    fn drop(&mut self) {
        *lock(self.0) = None;
    }
}

/// Whether a failure says QuickBooks is overloaded (429/5xx after the retries).
pub(super) fn is_pressure(e: Option<&Error>) -> bool {
    matches!(
        e,
        Some(Error::Upstream {
            code: "throttled" | "quickbooks_unavailable",
            ..
        })
    )
}

/// What a sync-all does while another node runs the same one (PostgreSQL, SPEC §13).
#[derive(Debug, Clone)]
pub enum Elsewhere {
    /// Answer [`Error::InProgress`] (an operator's or a client's request: 409).
    Refuse,
    /// Wait for it to end, then run (the daily schedule: the day must be finished). The
    /// token is the scheduler's: cancelled when this node stops leading, which stops the run
    /// at once (no company started after it; those in flight finish their write).
    Wait(CancellationToken),
}

impl SyncEngine {
    /// Runs (or joins) the one sync-all for `date`. A second call for the same date joins
    /// the run in flight; the run goes on when the caller goes away.
    ///
    /// # Errors
    /// [`Error::InProgress`] when a run for another date is in progress;
    /// [`Error::ShuttingDown`] when the daemon stops meanwhile; store failure listing
    /// companies.
    pub async fn sync_all(
        self: &Arc<Self>,
        date: NaiveDate,
        scope: Scope,
        elsewhere: Elsewhere,
    ) -> RunResult {
        let mut rx = {
            let mut running = lock(&self.running);
            match running.as_ref() {
                // Joined only by a call for the same date and the same companies (a fill-only
                // weekend run does not answer for every company).
                Some((d, s, rx)) if *d == date && *s == scope => rx.clone(),
                Some((d, _, _)) => return Err(Error::InProgress(*d)),
                None => {
                    let (tx, rx) = watch::channel(None);
                    *running = Some((date, scope, rx.clone()));
                    let engine = self.clone();
                    self.tasks.spawn(async move {
                        // Cleared however the run ends (a panic too), so a later sync-all is
                        // never refused for a run that is gone.
                        let _clear = ClearRunning(&engine.running);
                        let result = engine
                            .run_fleet_once(date, scope, elsewhere)
                            .await
                            .map(Arc::new);
                        let _ = tx.send(Some(result));
                    });
                    rx
                }
            }
        };
        loop {
            if let Some(done) = rx.borrow().clone() {
                return done;
            }
            if rx.changed().await.is_err() {
                return Err(Error::ShuttingDown);
            }
        }
    }

    /// Runs the sync-all once across every node sharing the store (SPEC §13). While another
    /// node runs it for the same date and scope: an asked-for run answers
    /// [`Error::InProgress`] (409) at once; a scheduled one ([`Elsewhere::Wait`]) waits until
    /// that run ends, or its node dies and the database frees its hold, then runs and finds
    /// the rates written (it writes nothing twice: it finishes a day a dead node left).
    async fn run_fleet_once(
        self: &Arc<Self>,
        date: NaiveDate,
        scope: Scope,
        elsewhere: Elsewhere,
    ) -> Result<RunReport, Error> {
        let name = format!("sync-all {date} {scope:?}");
        let (wait, stop) = match elsewhere {
            Elsewhere::Refuse => (false, self.shutdown.clone()),
            Elsewhere::Wait(stop) => (true, stop),
        };
        let hold = tokio::select! {
            _ = self.shutdown.cancelled() => return Err(Error::ShuttingDown),
            _ = stop.cancelled() => return Err(Error::ShuttingDown),
            h = self.store.exclusive(&name, wait) => h?,
        };
        if let crate::store::Exclusive::HeldElsewhere = hold {
            return Err(Error::InProgress(date));
        }
        let report = self.run_fleet(date, scope, &stop).await;
        drop(hold);
        report
    }

    /// Runs one sync-all to completion (bounded, adaptive concurrency; failures isolated).
    pub(super) async fn run_fleet(
        self: &Arc<Self>,
        date: NaiveDate,
        scope: Scope,
        stop: &CancellationToken,
    ) -> Result<RunReport, Error> {
        let started = std::time::Instant::now();
        let (mut entries, bad_records) = self.list_run(scope).await?;
        let total = entries.listed();
        let p = &self.progress;
        p.total.store(total, Relaxed);
        p.done.store(0, Relaxed);
        p.failed.store(0, Relaxed);
        let total = total + bad_records.len();
        tracing::info!(companies = total, fixing_date = %date, "Syncing rates for {date} to {total} companies");
        let mut aimd = Aimd::new(self.config().quickbooks.max_concurrent_companies);
        self.set_level(aimd.level);
        // At most `level` company syncs exist at a time: a task is spawned only when one
        // finishes, so memory does not grow with the number of companies.
        let mut pending = 0..entries.listed();
        let mut set = tokio::task::JoinSet::new();
        let mut running: HashMap<tokio::task::Id, usize> = HashMap::new();
        let (mut ok, mut failed) = (0usize, 0usize);
        loop {
            while set.len() < aimd.level && !stop.is_cancelled() {
                let Some(idx) = pending.next() else {
                    break;
                };
                let engine = self.clone();
                let r = entries.realm(idx).to_string();
                let handle = set.spawn(async move {
                    if engine.shutdown.is_cancelled() {
                        return Err(Error::ShuttingDown);
                    }
                    Ok(engine.sync_company(&r, date).await)
                });
                running.insert(handle.id(), idx);
            }
            let Some(joined) = set.join_next_with_id().await else {
                break;
            };
            let (id, r) = match joined {
                Ok((id, r)) => (id, r),
                // A panicked sync is a failed company, not a lost one.
                Err(e) => (
                    e.id(),
                    Err(Error::Store(format!("the sync task failed: {e}"))),
                ),
            };
            let Some(idx) = running.remove(&id) else {
                continue;
            };
            let (name, counts, error) = match r {
                Ok(o) => {
                    aimd.record(o.pressure > 0 || is_pressure(o.error.as_ref()));
                    (
                        o.company_name,
                        (o.rates_synced, o.rates_written, o.rates_unchanged),
                        o.error,
                    )
                }
                Err(e) => (entries.listed_name(idx).to_string(), (0, 0, 0), Some(e)),
            };
            self.set_level(aimd.level);
            p.done.fetch_add(1, Relaxed);
            if error.is_some() {
                failed += 1;
                p.failed.fetch_add(1, Relaxed);
            } else {
                ok += 1;
            }
            entries.finish(idx, name, counts, error);
            if (ok + failed) % TRIM_EVERY == 0 {
                // On the blocking pool: a trim takes every arena's lock in turn.
                drop(tokio::task::spawn_blocking(release_free_heap));
            }
        }
        if !pending.is_empty() {
            // Stopped (this node no longer leads): not a finished run; the new leader's
            // catch-up finishes the day.
            tracing::warn!(fixing_date = %date, done = ok + failed, left = pending.len(), "sync-all stopped before the end: this node no longer runs the schedule");
            return Err(Error::ShuttingDown);
        }
        failed += bad_records.len();
        let seconds = started.elapsed().as_secs_f64();
        let finished_at = self.record_run_end(date, ok, failed, total, seconds);
        Ok(RunReport {
            date,
            finished_at,
            total,
            successful: ok,
            failed,
            seconds,
            entries,
            bad_records,
        })
    }

    /// The companies a run of `scope` syncs: only what the run needs of each (the records
    /// are re-read one by one), one record decoded at a time, never every record at once.
    /// Undecodable records are alerted and returned by key.
    async fn list_run(&self, scope: Scope) -> Result<(RunEntries, Vec<String>), Error> {
        let mut entries = RunEntries::default();
        let bad = self
            .store
            .each_company(|c| {
                if c.is_active
                    && c.sync_enabled
                    && c.is_connected()
                    && (scope == Scope::All || c.fill_non_business_days)
                {
                    entries.push(&c.realm_id, &c.company_name);
                }
            })
            .await?;
        let bad_records: Vec<String> = bad.iter().map(|b| b.key_display()).collect();
        for key in &bad_records {
            self.alerts.raise(
                &format!("bad_record:{key}"),
                "bad_record",
                None,
                &format!("the company record {key} cannot be decoded; it is skipped (restore it from a backup or reconnect the company)"),
            );
        }
        Ok((entries, bad_records))
    }

    /// Records a finished run: `last_run`, the duration metric, the log line, and the
    /// `sync_failures` alert (raised from two failed companies, else cleared). Returns when
    /// it finished.
    fn record_run_end(
        &self,
        date: NaiveDate,
        ok: usize,
        failed: usize,
        total: usize,
        seconds: f64,
    ) -> DateTime<Utc> {
        let finished_at = self.clock.now();
        *lock(&self.last_run) = Some(LastRun {
            date,
            finished_at,
            successful: ok,
            failed,
            seconds,
        });
        self.metrics.sync_all_seconds.set(seconds);
        tracing::info!(fixing_date = %date, successful = ok, failed, seconds, "Synced {ok}/{total} companies successfully");
        let key = format!("sync_failures:{date}");
        if failed >= 2 {
            self.alerts.raise(
                &key,
                "sync_failures",
                None,
                &format!("sync of {date} failed for {failed} of {total} companies"),
            );
        } else {
            self.alerts.clear(&key);
        }
        finished_at
    }

    pub(super) fn set_level(&self, level: usize) {
        self.level.store(level, Relaxed);
        self.metrics.companies_in_flight_limit.set(level as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aimd_halves_once_per_burst_and_climbs_back() {
        let mut a = Aimd::new(16);
        for _ in 0..20 {
            a.record(false);
        }
        assert_eq!(a.level, 16, "never above the configured maximum");
        // Isolated pressure among clean companies: no decrease.
        for _ in 0..10 {
            a.record(true);
            a.record(false);
            a.record(true);
            a.record(false);
        }
        assert_eq!(a.level, 16, "stray 429s do not lower the level");
        for _ in 0..Aimd::RUN {
            a.record(true);
        }
        assert_eq!(a.level, 8, "a run of pressure halves at once");
        // The rest of a burst from companies in flight together does not halve again.
        for _ in 0..5 {
            a.record(true);
        }
        assert_eq!(a.level, 8);
        for _ in 0..3 {
            a.record(true);
        }
        assert_eq!(a.level, 4, "a later run of pressure halves again");
        for _ in 0..4 {
            a.record(false);
        }
        assert_eq!(a.level, 5, "additive increase after a clean window");
        let mut one = Aimd::new(0);
        for _ in 0..Aimd::RUN {
            one.record(true);
        }
        assert_eq!(one.level, 1, "never below one");
    }

    #[test]
    fn run_entries_list_results_in_store_order_with_failures_and_new_names() {
        let mut e = RunEntries::default();
        for (realm, name) in [("1", "One"), ("22", "Two"), ("333", "Three")] {
            e.push(realm, name);
        }
        assert_eq!((e.listed(), e.len()), (3, 0));
        e.finish(2, "Three".into(), (3, 1, 2), None);
        e.finish(
            0,
            "One renamed".into(),
            (0, 0, 0),
            Some(Error::ReconnectNeeded),
        );
        // Company "22" never finished (the run was stopped): not listed.
        assert_eq!(e.len(), 2);
        let lines: Vec<_> = e
            .iter()
            .map(|l| {
                (
                    l.realm,
                    l.company_name,
                    l.rates_synced,
                    l.rates_written,
                    l.rates_unchanged,
                    l.error.cloned(),
                )
            })
            .collect();
        assert_eq!(
            lines,
            vec![
                ("1", "One renamed", 0, 0, 0, Some(Error::ReconnectNeeded)),
                ("333", "Three", 3, 1, 2, None),
            ]
        );
    }

    #[test]
    fn aimd_keeps_its_level_through_scattered_throttles() {
        // About a fifth of the companies throttled once (a few 429s among ~5 calls each),
        // including runs of three in a row: the level stays at the maximum.
        let mut a = Aimd::new(16);
        for _ in 0..50 {
            for _ in 0..13 {
                a.record(false);
            }
            for _ in 0..Aimd::RUN {
                a.record(true);
            }
        }
        assert_eq!(a.level, 16);
        // After a real storm it climbs back although some companies are still throttled.
        for _ in 0..40 {
            a.record(true);
        }
        let low = a.level;
        assert!(low <= 2, "a storm lowers the level ({low})");
        for _ in 0..200 {
            a.record(false);
            a.record(false);
            a.record(false);
            a.record(true);
        }
        assert_eq!(a.level, 16, "climbs back while a quarter are throttled");
    }
}
