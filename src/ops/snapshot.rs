//! The company snapshot behind `/health`, `/metrics` and the counts in `status` (SPEC §6):
//! every count those answers need, read from the store's company tally (`store::tally`: one
//! pass over the records the first time, then kept up to date by every company write), so
//! no answer decodes the company records.
//!
//! A snapshot is reused while it is at most [`MAX_AGE`] old (by the injected clock) *and*
//! no company was written since it was taken ([`Store::companies_generation`]), so an answer
//! never contradicts a change already acknowledged (every company write goes through the
//! store, which bumps the generation before the write is flushed and acknowledged).
//! Concurrent requests that find it out of date share one recomputation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::locks::lock;
use crate::store::tally::CompanyTally;
use crate::store::Store;

/// How old a snapshot may be before it is recomputed even when no company changed (the
/// stale-company count depends on the time).
pub const MAX_AGE: chrono::Duration = chrono::Duration::seconds(5);

/// What the health, metrics and status answers need from the company records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompanySnapshot {
    /// The store's company counts; their `waiting` is the companies active, connected and
    /// sync-enabled but not synced for over 24 business hours when the snapshot was taken.
    pub counts: CompanyTally,
    /// When it was taken (injected clock).
    pub taken_at: DateTime<Utc>,
    /// The store's company generation read before the counts.
    pub generation: u64,
}

impl CompanySnapshot {
    /// From the store's company tally (kept up to date by every company write, so no
    /// record is read here after the first call).
    ///
    /// # Errors
    /// sled failure (the tally's first pass).
    pub async fn compute(
        store: &Store,
        config: &Config,
        now: DateTime<Utc>,
    ) -> Result<CompanySnapshot, crate::store::Error> {
        // Read before the tally: a write after it moves the generation past this value, so
        // the snapshot is recomputed on the next request.
        let generation = store.companies_generation();
        let stale_before = crate::alerts::stale_before(now, config.schedule.timezone);
        Ok(CompanySnapshot {
            counts: store.company_tally(stale_before).await?,
            taken_at: now,
            generation,
        })
    }

    fn fresh(&self, generation: u64, now: DateTime<Utc>) -> bool {
        self.generation == generation && now - self.taken_at <= MAX_AGE && now >= self.taken_at
    }
}

/// Holds the current snapshot; see the module docs.
#[derive(Debug, Default)]
pub struct SnapshotHolder {
    current: Mutex<Option<Arc<CompanySnapshot>>>,
    /// Held while recomputing, so concurrent callers wait for one scan instead of each
    /// running their own.
    computing: tokio::sync::Mutex<()>,
    /// How many scans were made (tests, and a debugging aid).
    computations: AtomicU64,
    /// When a recomputation last found the store unavailable.
    unavailable: UnavailableMemo,
}

/// When a recomputation last found the store unavailable, and why: for [`MAX_AGE`] after
/// it, callers get that answer at once instead of each waiting in turn for a database that
/// does not answer (the health probes of a load balancer would time out).
#[derive(Debug, Default)]
pub(super) struct UnavailableMemo(Mutex<Option<(std::time::Instant, String)>>);

impl UnavailableMemo {
    /// The unavailable error met within [`MAX_AGE`], if any.
    pub(super) fn recent(&self) -> Option<crate::store::Error> {
        let seen = lock(&self.0);
        let (at, why) = seen.as_ref()?;
        let within = at.elapsed() <= MAX_AGE.to_std().unwrap_or_default();
        within.then(|| {
            crate::store::Error::Postgres(crate::store::postgres::Error::Unavailable(why.clone()))
        })
    }

    /// Notes how a recomputation ended: an unavailable store is remembered, a success
    /// forgets it.
    pub(super) fn note<T>(
        &self,
        r: Result<T, crate::store::Error>,
    ) -> Result<T, crate::store::Error> {
        match &r {
            Ok(_) => *lock(&self.0) = None,
            Err(crate::store::Error::Postgres(crate::store::postgres::Error::Unavailable(why))) => {
                *lock(&self.0) = Some((std::time::Instant::now(), why.clone()));
            }
            Err(_) => {}
        }
        r
    }
}

impl SnapshotHolder {
    /// A holder with no snapshot yet (the first request computes one).
    pub fn new() -> SnapshotHolder {
        SnapshotHolder::default()
    }

    /// The snapshot, recomputed when a company changed since it was taken or it is older
    /// than [`MAX_AGE`].
    ///
    /// # Errors
    /// sled failure during a recomputation.
    pub async fn get(
        &self,
        store: &Store,
        config: &Config,
        now: DateTime<Utc>,
    ) -> Result<Arc<CompanySnapshot>, crate::store::Error> {
        if let Some(s) = self.fresh(store, now) {
            return Ok(s);
        }
        if let Some(e) = self.unavailable.recent() {
            return Err(e);
        }
        let _one_at_a_time = self.computing.lock().await;
        // Someone else may have recomputed while this caller waited.
        if let Some(s) = self.fresh(store, now) {
            return Ok(s);
        }
        if let Some(e) = self.unavailable.recent() {
            return Err(e);
        }
        let s = Arc::new(
            self.unavailable
                .note(CompanySnapshot::compute(store, config, now).await)?,
        );
        self.computations.fetch_add(1, Ordering::Relaxed);
        *lock(&self.current) = Some(s.clone());
        Ok(s)
    }

    fn fresh(&self, store: &Store, now: DateTime<Utc>) -> Option<Arc<CompanySnapshot>> {
        let generation = store.companies_generation();
        lock(&self.current)
            .as_ref()
            .filter(|s| s.fresh(generation, now))
            .cloned()
    }

    /// The snapshot last computed, however old (what `/health` shows while the store is
    /// unavailable).
    pub fn last(&self) -> Option<CompanySnapshot> {
        lock(&self.current).as_deref().cloned()
    }

    /// How many times the snapshot was computed.
    pub fn computations(&self) -> u64 {
        self.computations.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::Connection;
    use crate::store::tests::company;

    fn config() -> Config {
        // Built-in defaults, no file and no environment.
        let env: std::collections::HashMap<String, String> = Default::default();
        Config::load_with_env(None, &env).unwrap()
    }

    #[tokio::test]
    async fn a_change_to_a_company_is_seen_at_once_and_the_snapshot_is_reused_otherwise() {
        let store = Store::open_temporary().unwrap();
        let config = config();
        let now = Utc::now();
        for r in ["1", "2", "3"] {
            store.save_company(&company(r)).await.unwrap();
        }
        let h = SnapshotHolder::new();
        let s = h.get(&store, &config, now).await.unwrap();
        assert_eq!(
            (s.counts.total, s.counts.active, s.counts.reconnect_needed),
            (3, 3, 0)
        );
        assert_eq!(h.computations(), 1);
        // No change, within MAX_AGE: reused.
        for i in 0..10 {
            let later = now + chrono::Duration::milliseconds(i * 100);
            let again = h.get(&store, &config, later).await.unwrap();
            assert!(Arc::ptr_eq(&s, &again));
        }
        assert_eq!(h.computations(), 1);

        // Every kind of company write invalidates it at once.
        store
            .update_company("2", |c| {
                c.connection = Connection::ReconnectNeeded {
                    since: now,
                    reason: "invalid_grant".into(),
                }
            })
            .await
            .unwrap();
        let s = h.get(&store, &config, now).await.unwrap();
        assert_eq!(s.counts.reconnect_needed, 1);
        assert_eq!(h.computations(), 2);
        store
            .update_company_unflushed("3", |c| c.sync_enabled = false)
            .await
            .unwrap();
        assert_eq!(
            h.get(&store, &config, now)
                .await
                .unwrap()
                .counts
                .sync_disabled,
            1
        );
        let mut gone = company("1");
        gone.is_active = false;
        store.save_company_without_tokens(&gone).await.unwrap();
        assert_eq!(
            h.get(&store, &config, now)
                .await
                .unwrap()
                .counts
                .disconnected,
            1
        );
        store.remove_company("1").await.unwrap();
        assert_eq!(h.get(&store, &config, now).await.unwrap().counts.total, 2);
        let t = crate::store::tests::tokens("rt");
        store
            .save_company_and_tokens(&company("4"), &t)
            .await
            .unwrap();
        assert_eq!(h.get(&store, &config, now).await.unwrap().counts.total, 3);
        assert_eq!(h.computations(), 6);
        // A write that changes nothing company-related (a fixing, a log) does not.
        store
            .append_log(
                "4",
                &crate::store::records::LogRecord::connection(now, true, "x", vec![]),
            )
            .await
            .unwrap();
        h.get(&store, &config, now).await.unwrap();
        assert_eq!(h.computations(), 6);
        // Older than MAX_AGE: recomputed even without a change.
        h.get(
            &store,
            &config,
            now + MAX_AGE + chrono::Duration::seconds(1),
        )
        .await
        .unwrap();
        assert_eq!(h.computations(), 7);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_callers_share_one_recomputation() {
        let store = Arc::new(Store::open_temporary().unwrap());
        for i in 0..200 {
            store
                .save_company(&company(&format!("{i:04}")))
                .await
                .unwrap();
        }
        let h = Arc::new(SnapshotHolder::new());
        let now = Utc::now();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (h, store) = (h.clone(), store.clone());
                tokio::spawn(
                    async move { h.get(&store, &config(), now).await.unwrap().counts.total },
                )
            })
            .collect();
        for t in threads {
            assert_eq!(t.await.unwrap(), 200);
        }
        assert_eq!(h.computations(), 1);
    }
}
