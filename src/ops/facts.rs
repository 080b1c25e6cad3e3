//! The facts `/health` and `status` read besides the company counts (SPEC §6): the date of
//! the newest main fixing in force today, the holidays learnt, the newest scrape record.
//!
//! They change only when a fixing, a scrape or a meta value is written, a few times a day,
//! yet `/health` read them on every request: on PostgreSQL three round trips to a server
//! that, during a sync-all, is busy with every company in flight. They are kept here as the
//! company snapshot is ([`super::snapshot`]): reused while at most [`MAX_AGE`] old *and* no
//! such write was made through this store since they were read
//! ([`Store::facts_generation`]), so an answer never contradicts a scrape or import this
//! node acknowledged; one made by another node sharing the database shows within
//! [`MAX_AGE`]. Concurrent requests that find them out of date share one read.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveDate, Utc};

use crate::archive::Archive;
use crate::config::Config;
use crate::fixing::TableKind;
use crate::locks::lock;
use crate::store::records::ScrapeRecord;
use crate::store::Store;

/// How old the facts may be before they are read again even when nothing was written
/// through this store (writes by other nodes): the company snapshot's limit.
pub const MAX_AGE: chrono::Duration = super::snapshot::MAX_AGE;

/// What the health reasons read besides the company snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthFacts {
    /// Business days known to have had no fixing (read only when the schedule runs).
    pub holidays: BTreeSet<NaiveDate>,
    /// The date of the newest main table dated today or earlier.
    pub newest_main: Option<NaiveDate>,
    /// The newest scrape record.
    pub last_scrape: Option<ScrapeRecord>,
}

/// What a read of the facts depended on: a change of any of them reads them again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    generation: u64,
    today: NaiveDate,
    schedule: bool,
}

impl Key {
    fn now(store: &Store, config: &Config, today: NaiveDate) -> Key {
        // Read before the facts: a write after it moves the generation past this value.
        Key {
            generation: store.facts_generation(),
            today,
            schedule: config.schedule.enabled,
        }
    }
}

#[derive(Debug)]
struct Taken {
    facts: Arc<HealthFacts>,
    key: Key,
    at: DateTime<Utc>,
}

impl Taken {
    fn fresh(&self, key: &Key, now: DateTime<Utc>) -> bool {
        self.key == *key && now >= self.at && now - self.at <= MAX_AGE
    }
}

/// Holds the facts last read; see the module docs.
#[derive(Debug, Default)]
pub struct FactsHolder {
    current: Mutex<Option<Taken>>,
    /// Held while reading, so concurrent callers wait for one read.
    reading: tokio::sync::Mutex<()>,
    /// When a read last found the store unavailable (as the company snapshot keeps it).
    unavailable: super::snapshot::UnavailableMemo,
    /// How many reads were made (tests, and a debugging aid).
    reads: std::sync::atomic::AtomicU64,
}

impl FactsHolder {
    fn fresh(&self, key: &Key, now: DateTime<Utc>) -> Option<Arc<HealthFacts>> {
        lock(&self.current)
            .as_ref()
            .filter(|t| t.fresh(key, now))
            .map(|t| t.facts.clone())
    }

    /// How many times the facts were read.
    pub fn reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The facts [`FactsHolder::get`] would return without reading the store, if it would.
    pub fn at_hand(
        &self,
        store: &Store,
        config: &Config,
        today: NaiveDate,
        now: DateTime<Utc>,
    ) -> Option<Arc<HealthFacts>> {
        self.fresh(&Key::now(store, config, today), now)
    }

    /// The facts, read again when a fixing, scrape or meta value was written through
    /// `store` since, `today` or the schedule's switch changed, or they are older than
    /// [`MAX_AGE`] (by the injected clock, `now`).
    ///
    /// # Errors
    /// Store failure while reading (nothing is kept: the next call reads again).
    pub async fn get(
        &self,
        store: &Store,
        archive: &Archive,
        config: &Config,
        today: NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<Arc<HealthFacts>, crate::store::Error> {
        self.get_fresh_for(store, archive, config, today, now, chrono::Duration::zero())
            .await
    }

    /// [`FactsHolder::get`], read again already when they would no longer be fresh `ahead`
    /// from `now` (what [`super::keep_health_facts`] calls, so that they stay at hand).
    ///
    /// # Errors
    /// Store failure while reading.
    pub async fn get_fresh_for(
        &self,
        store: &Store,
        archive: &Archive,
        config: &Config,
        today: NaiveDate,
        now: DateTime<Utc>,
        ahead: chrono::Duration,
    ) -> Result<Arc<HealthFacts>, crate::store::Error> {
        let key = Key::now(store, config, today);
        if let Some(f) = self.fresh(&key, now + ahead) {
            return Ok(f);
        }
        if let Some(e) = self.unavailable.recent() {
            return Err(e);
        }
        let _one_at_a_time = self.reading.lock().await;
        if let Some(f) = self.fresh(&key, now + ahead) {
            return Ok(f);
        }
        if let Some(e) = self.unavailable.recent() {
            return Err(e);
        }
        let facts = Arc::new(self.unavailable.note(read(store, archive, &key).await)?);
        *lock(&self.current) = Some(Taken {
            facts: facts.clone(),
            key,
            at: now,
        });
        // Counted once kept, so a caller that sees the count sees the facts.
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(facts)
    }
}

/// Reads the three at the same time (on PostgreSQL each is a round trip).
async fn read(
    store: &Store,
    archive: &Archive,
    key: &Key,
) -> Result<HealthFacts, crate::store::Error> {
    let holidays = async {
        if key.schedule {
            archive.holidays().await
        } else {
            Ok(BTreeSet::new())
        }
    };
    let newest_main = async {
        Ok::<_, crate::store::Error>(
            store
                .table_on_or_before(TableKind::Main, key.today)
                .await?
                .map(|t| t.table.date),
        )
    };
    let last_scrape = async { Ok(archive.scrapes(1).await?.into_iter().next()) };
    let (holidays, newest_main, last_scrape) =
        tokio::try_join!(holidays, newest_main, last_scrape)?;
    Ok(HealthFacts {
        holidays,
        newest_main,
        last_scrape,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixing::FixingSource;
    use crate::time::clock::{Clock, ManualClock};

    fn config() -> Config {
        let env: std::collections::HashMap<String, String> = Default::default();
        Config::load_with_env(None, &env).unwrap()
    }

    fn scrape(at: DateTime<Utc>, success: bool) -> ScrapeRecord {
        ScrapeRecord {
            at,
            url: "https://www.bankofalbania.org/".into(),
            success,
            fixing_dates: vec![],
            outcome: if success { "new" } else { "page changed" }.into(),
        }
    }

    #[tokio::test]
    async fn facts_are_reused_until_a_write_or_their_age_and_a_write_is_seen_at_once() {
        let now = Utc::now();
        let store = Arc::new(Store::open_temporary().unwrap());
        let config = config();
        let (_tx, rx) = tokio::sync::watch::channel(Arc::new(config.clone()));
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(now));
        let archive = Archive::new(
            store.clone(),
            clock,
            rx,
            Arc::new(crate::metrics::Metrics::new()),
        );
        let today = now.date_naive();
        let h = FactsHolder::default();
        let f = h.get(&store, &archive, &config, today, now).await.unwrap();
        assert_eq!(*f, HealthFacts::default());
        let again = h.get(&store, &archive, &config, today, now).await.unwrap();
        assert!(Arc::ptr_eq(&f, &again), "nothing written: reused");

        // A scrape written through the store is seen by the next answer.
        store.append_scrape(&scrape(now, false)).await.unwrap();
        let f = h.get(&store, &archive, &config, today, now).await.unwrap();
        assert_eq!(f.last_scrape.as_ref().map(|s| s.success), Some(false));

        // So is a fixing, and a holiday (a meta value).
        let page = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/boa/official-rate-en-2026-05-22.html"
        ))
        .unwrap();
        let parsed = crate::boa::parse_page(&page).unwrap();
        let source = FixingSource::Page {
            url: "https://www.bankofalbania.org/".into(),
            sha256: "test".into(),
            fetched_at: now,
        };
        for t in &parsed.tables {
            store.put_table(t, &source, now).await.unwrap();
        }
        let dated = parsed.tables[0].date;
        let f = h.get(&store, &archive, &config, dated, now).await.unwrap();
        assert_eq!(f.newest_main, Some(dated));
        store
            .meta_put("holidays", &BTreeSet::from([dated]))
            .await
            .unwrap();
        let f = h.get(&store, &archive, &config, dated, now).await.unwrap();
        assert!(f.holidays.contains(&dated));

        // The day it is read for is part of what it depends on.
        let before = dated.pred_opt().unwrap();
        let f = h.get(&store, &archive, &config, before, now).await.unwrap();
        assert_eq!(f.newest_main, None, "nothing dated on or before {before}");

        // Past MAX_AGE it is read again even with nothing written here.
        let f = h.get(&store, &archive, &config, dated, now).await.unwrap();
        let later = now + MAX_AGE;
        let same = h
            .get(&store, &archive, &config, dated, later)
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&f, &same), "MAX_AGE old: still reused");
        let later = later + chrono::Duration::seconds(1);
        let reread = h
            .get(&store, &archive, &config, dated, later)
            .await
            .unwrap();
        assert!(!Arc::ptr_eq(&f, &reread), "older than MAX_AGE: read again");
        assert_eq!(*f, *reread);
    }
}
