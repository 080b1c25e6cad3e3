//! Companies, their tokens, the company counts, and the cross-node token lock.
//!
//! A company row carries, beside its record, the few facts the counts and queries need
//! (written here from the record, in the same statement). Tokens are sealed with the vault
//! before they leave the process: the database only ever holds the age ciphertext.
//!
//! The counts ([`PgStore::company_tally`]) are kept by a trigger, not by scanning: five rows
//! of `company_counts`, an index probe for the newest sync, and the companies waiting since
//! an instant from `company_waiting` (per-minute counts: the minutes wholly before the
//! instant summed, plus an index-range count within the instant's own minute; see
//! `0002_waiting_buckets.sql`). Counters in the database, not in the process, because several
//! nodes write the same companies: a per-process counter would miss the others' writes. The
//! trigger touches a `company_counts` row only when a company changes what it counts as
//! (connects, disconnects, is switched off), so the writes of a sync-all take no lock there;
//! a sync does move its company to the current minute of `company_waiting`, spread over four
//! stripe rows so that concurrent syncs seldom wait for each other's commit (the row is the
//! last thing each transaction writes before it commits).
//!
//! Undecodable records are handled as the sled store handles them (SPEC §9): a full scan
//! ([`PgStore::each_company`], [`PgStore::companies_scan`], [`PgStore::companies`]) skips
//! them and reports them, remembered until the next scan or until the company is written
//! again ([`PgStore::bad_records`], [`PgStore::bad_records_seen`]); a page skips them
//! silently; reading the one company is an error.

use std::future::Future;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use tokio_postgres::types::Json;

use super::{Cached, Error, PgStore, Result};
use crate::locks::lock;
use crate::store::records::{Company, Connection, TokenSet};
use crate::store::tally::CompanyTally;
use crate::store::{codec, keys, BadRecord};

/// Rows fetched per round trip by a full scan ([`PgStore::each_company`]): memory stays at
/// one batch, whatever the number of companies.
const SCAN_BATCH: i32 = 256;

/// The columns of a company row beside its record (see `0001_initial.sql`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Facts {
    active: bool,
    connected: bool,
    reconnect_needed: bool,
    sync_disabled: bool,
    waiting_since: Option<i64>,
    last_sync_at: Option<DateTime<Utc>>,
}

impl Facts {
    /// What a record counts as: the same rules as the sled store's tally.
    fn of(c: &Company) -> Facts {
        let active = c.is_active;
        let connected = active && c.connection == Connection::Connected;
        Facts {
            active,
            connected,
            reconnect_needed: active && matches!(c.connection, Connection::ReconnectNeeded { .. }),
            sync_disabled: active && !c.sync_enabled,
            waiting_since: (connected && c.sync_enabled)
                .then(|| c.last_sync_at.unwrap_or(c.created_at).timestamp()),
            last_sync_at: c.last_sync_at,
        }
    }
}

const UPSERT_COMPANY: &str = "INSERT INTO companies
        (realm, record, active, connected, reconnect_needed, sync_disabled, waiting_since, last_sync_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    ON CONFLICT (realm) DO UPDATE SET record = EXCLUDED.record, active = EXCLUDED.active,
        connected = EXCLUDED.connected, reconnect_needed = EXCLUDED.reconnect_needed,
        sync_disabled = EXCLUDED.sync_disabled, waiting_since = EXCLUDED.waiting_since,
        last_sync_at = EXCLUDED.last_sync_at";

const UPSERT_TOKENS: &str = "INSERT INTO tokens (realm, ciphertext) VALUES ($1, $2)
    ON CONFLICT (realm) DO UPDATE SET ciphertext = EXCLUDED.ciphertext";

/// Writes a company row (inside the caller's transaction or on its own).
pub(super) async fn upsert_company(
    c: &impl deadpool_postgres::GenericClient,
    company: &Company,
) -> Result<()> {
    let f = Facts::of(company);
    c.execute_cached(
        UPSERT_COMPANY,
        &[
            &company.realm_id,
            &Json(company),
            &f.active,
            &f.connected,
            &f.reconnect_needed,
            &f.sync_disabled,
            &f.waiting_since,
            &f.last_sync_at,
        ],
    )
    .await?;
    Ok(())
}

/// Writes a company's ciphertext as it is (restore; [`PgStore::save_tokens`] seals first).
pub(super) async fn upsert_ciphertext(
    c: &impl deadpool_postgres::GenericClient,
    realm: &str,
    ciphertext: &[u8],
) -> Result<()> {
    c.execute_cached(UPSERT_TOKENS, &[&realm, &ciphertext])
        .await?;
    Ok(())
}

/// Decodes a company row's record.
fn company_of(row: &tokio_postgres::Row) -> Result<Company> {
    let realm: String = row.try_get(0)?;
    let v: serde_json::Value = row.try_get(1)?;
    serde_json::from_value(v).map_err(|e| Error::record("companies", realm)(e.to_string()))
}

impl PgStore {
    fn seal(&self, t: &TokenSet) -> Result<Vec<u8>> {
        let plain = codec::encode(t).map_err(|e| Error::record("tokens", "")(e.to_string()))?;
        Ok(self.vault.encrypt(&plain)?)
    }

    fn open_tokens(&self, realm: &str, ct: &[u8]) -> Result<TokenSet> {
        let plain = self.vault.decrypt(ct)?;
        codec::decode(&plain).map_err(|e| Error::record("tokens", realm)(e.to_string()))
    }

    /// One company.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`], [`Error::Record`].
    pub async fn company(&self, realm: &str) -> Result<Option<Company>> {
        let c = self.client().await?;
        let row = c
            .query_opt_cached(
                "SELECT realm, record FROM companies WHERE realm = $1",
                &[&realm],
            )
            .await?;
        row.as_ref().map(company_of).transpose()
    }

    /// Every company that decodes, in realm order. Undecodable records are skipped, logged
    /// and counted (see [`PgStore::companies_scan`]); one bad record never hides the others.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`] (a decode failure is not an error here).
    pub async fn companies(&self) -> Result<Vec<Company>> {
        Ok(self.companies_scan().await?.0)
    }

    /// Every company that decodes, in realm order, and the records that do not. Each bad
    /// record is logged with its key the first time a scan meets it, and counted in
    /// [`PgStore::bad_records_seen`]; [`PgStore::bad_records`] lists those of the latest scan.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`] (a decode failure is not an error here).
    pub async fn companies_scan(&self) -> Result<(Vec<Company>, Vec<BadRecord>)> {
        let mut good = Vec::new();
        let bad = self.each_company(|c| good.push(c)).await?;
        Ok((good, bad))
    }

    /// Visits every company that decodes, in realm order, one at a time, and returns the
    /// records that do not decode, noted as by [`PgStore::companies_scan`]. Streamed: the rows
    /// come through a portal [`SCAN_BATCH`] at a time inside one read-only transaction (one
    /// snapshot of the table), so memory holds one batch, never every record at once.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`] (a decode failure is not an error here). When
    /// the server goes away midway, `visit` has seen part of the companies.
    pub async fn each_company(&self, mut visit: impl FnMut(Company)) -> Result<Vec<BadRecord>> {
        let mut client = self.client().await?;
        let tx = client.build_transaction().read_only(true).start().await?;
        let stmt = tx
            .prepare("SELECT realm, record FROM companies ORDER BY realm")
            .await?;
        let portal = tx.bind(&stmt, &[]).await?;
        let mut bad = Vec::new();
        loop {
            let rows = tx.query_portal(&portal, SCAN_BATCH).await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let realm: String = row.try_get(0)?;
                let record: serde_json::Value = row.try_get(1)?;
                match serde_json::from_value::<Company>(record) {
                    Ok(c) => visit(c),
                    Err(e) => bad.push(BadRecord {
                        tree: keys::COMPANIES,
                        key: realm.into_bytes(),
                        error: e.to_string(),
                    }),
                }
            }
        }
        // Read only: nothing to commit; ending it releases the snapshot.
        tx.rollback().await?;
        self.note_bad(keys::COMPANIES, &bad);
        Ok(bad)
    }

    /// Undecodable records found by the latest full scan (of the companies: the one table
    /// scanned whole here), as [`crate::store::Store::bad_records`].
    pub fn bad_records(&self) -> Vec<BadRecord> {
        lock(&self.bad)
            .iter()
            .map(|((tree, key), error)| BadRecord {
                tree,
                key: key.clone(),
                error: error.clone(),
            })
            .collect()
    }

    /// Distinct undecodable records met since the store was opened (monotonic), as
    /// [`crate::store::Store::bad_records_seen`].
    pub fn bad_records_seen(&self) -> u64 {
        self.bad_seen.load(Ordering::Relaxed)
    }

    /// Replaces what is known bad in `table` with a full scan's findings; logs the new ones.
    fn note_bad(&self, table: &'static str, found: &[BadRecord]) {
        let mut known = lock(&self.bad);
        for b in found {
            if !known.contains_key(&(table, b.key.clone())) {
                tracing::warn!(
                    tree = table,
                    key = %b.key_display(),
                    error = %b.error,
                    "skipping a stored record that cannot be decoded"
                );
                self.bad_seen.fetch_add(1, Ordering::Relaxed);
            }
        }
        known.retain(|(t, _), _| *t != table);
        for b in found {
            known.insert((table, b.key.clone()), b.error.clone());
        }
    }

    /// Changes whenever a company write made through this store has committed, as
    /// [`crate::store::Store::companies_generation`]: read it before deriving something from
    /// the companies (the health and metrics snapshot reads it, then the counts); if it still
    /// has that value later, no company was written *through this store* in between, so a
    /// cached answer never hides a write this node acknowledged.
    ///
    /// It is a counter in this process: writes made by other nodes sharing the database do
    /// not move it. A cache keyed on it shows them once its age limit passes (the snapshot's
    /// `MAX_AGE`, 5 seconds).
    pub fn companies_generation(&self) -> u64 {
        self.companies_generation.load(Ordering::SeqCst)
    }

    /// Every company write goes through here: `write` runs to its commit, then the
    /// generation moves, whatever it answered (a failure may still have committed; moving
    /// the generation needlessly only costs a recount). A record written or removed is no
    /// longer known bad.
    pub(super) async fn writing_company<T>(
        &self,
        realm: &str,
        write: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let r = write.await;
        if r.is_ok() {
            lock(&self.bad).remove(&(keys::COMPANIES, realm.as_bytes().to_vec()));
        }
        self.companies_changed();
        r
    }

    /// The generation moves (after a commit; see [`PgStore::companies_generation`]).
    pub(super) fn companies_changed(&self) {
        self.companies_generation.fetch_add(1, Ordering::SeqCst);
    }

    /// One page of companies in realm order, as [`crate::store::Store::companies_page`]:
    /// those after `after` that `keep` accepts, at most `limit`, and the realm to continue
    /// after when more accepted companies follow. Read in chunks by primary-key range: a page
    /// costs its own rows (plus those `keep` skips), never a full scan. Undecodable records
    /// are skipped silently, as the sled store skips them (the full scans report them).
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`].
    pub async fn companies_page(
        &self,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&Company) -> bool,
    ) -> Result<(Vec<Company>, Option<String>)> {
        let c = self.client().await?;
        let chunk = i64::try_from(limit.saturating_add(1).clamp(16, 1000)).unwrap_or(1000);
        let mut cursor = after.map(str::to_string);
        let mut page: Vec<Company> = Vec::new();
        loop {
            let rows = c
                .query_cached(
                    "SELECT realm, record FROM companies
                     WHERE $1::text IS NULL OR realm > $1::text ORDER BY realm LIMIT $2",
                    &[&cursor, &chunk],
                )
                .await?;
            let full = rows.len() as i64 == chunk;
            for row in &rows {
                cursor = Some(row.try_get(0)?);
                let Ok(co) = company_of(row) else { continue };
                if !keep(&co) {
                    continue;
                }
                if page.len() == limit {
                    let next = page.last().map(|p| p.realm_id.clone());
                    return Ok((page, next));
                }
                page.push(co);
            }
            if !full {
                return Ok((page, None));
            }
        }
    }

    /// Writes a company record, committed before returning (then the companies generation
    /// moves, as after every company write here).
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`].
    pub async fn save_company(&self, c: &Company) -> Result<()> {
        self.writing_company(&c.realm_id, async {
            let client = self.client().await?;
            upsert_company(&client, c).await
        })
        .await
    }

    /// Changes fields of the company's current record under a row lock (so a concurrent
    /// writer on any node is neither undone nor lost), committed before returning. `change`
    /// runs once. `None` when the company does not exist.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`], [`Error::Record`].
    pub async fn update_company(
        &self,
        realm: &str,
        change: impl FnMut(&mut Company),
    ) -> Result<Option<Company>> {
        self.writing_company(realm, async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let c = update_in(&tx, realm, change).await?;
            tx.commit().await?;
            Ok(c)
        })
        .await
    }

    /// [`PgStore::update_company`] as a relaxed commit (not flushed, as in the sled store: the
    /// caller flushes before it acknowledges anything; see [`PgStore::relaxed_tx`]).
    ///
    /// # Errors
    /// As [`PgStore::update_company`].
    pub async fn update_company_unflushed(
        &self,
        realm: &str,
        change: impl FnMut(&mut Company),
    ) -> Result<Option<Company>> {
        self.writing_company(realm, async {
            let mut client = self.client().await?;
            let tx = PgStore::relaxed_tx(&mut client).await?;
            let c = update_in(&tx, realm, change).await?;
            self.commit_relaxed(tx).await?;
            Ok(c)
        })
        .await
    }

    /// Writes a company's tokens and its record in one transaction.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`], [`Error::Crypto`].
    pub async fn save_company_and_tokens(&self, c: &Company, t: &TokenSet) -> Result<()> {
        let ct = self.seal(t)?;
        self.writing_company(&c.realm_id, async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            upsert_ciphertext(&tx, &c.realm_id, &ct).await?;
            upsert_company(&tx, c).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Stores a company's tokens (sealed), committed before returning.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`], [`Error::Crypto`].
    pub async fn save_tokens(&self, realm: &str, t: &TokenSet) -> Result<()> {
        let ct = self.seal(t)?;
        let client = self.client().await?;
        upsert_ciphertext(&client, realm, &ct).await
    }

    /// The same as [`PgStore::save_tokens`] (kept for callers of either backend).
    ///
    /// # Errors
    /// As [`PgStore::save_tokens`].
    pub async fn put_tokens_unflushed(&self, realm: &str, t: &TokenSet) -> Result<()> {
        self.save_tokens(realm, t).await
    }

    /// A company's tokens, decrypted.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`], [`Error::Crypto`], [`Error::Record`].
    pub async fn tokens(&self, realm: &str) -> Result<Option<TokenSet>> {
        let c = self.client().await?;
        let row = c
            .query_opt_cached("SELECT ciphertext FROM tokens WHERE realm = $1", &[&realm])
            .await?;
        match row {
            None => Ok(None),
            Some(r) => Ok(Some(self.open_tokens(realm, r.try_get(0)?)?)),
        }
    }

    /// Disconnect: changes the company's current record and deletes its tokens in one
    /// transaction. `None` for an unknown company (its tokens, if any, are deleted).
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`], [`Error::Record`].
    pub async fn disconnect_company(
        &self,
        realm: &str,
        change: impl FnMut(&mut Company),
    ) -> Result<Option<Company>> {
        self.writing_company(realm, async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            lock_tokens_first(&tx, realm).await?;
            let c = update_in(&tx, realm, change).await?;
            tx.execute_cached("DELETE FROM tokens WHERE realm = $1", &[&realm])
                .await?;
            tx.commit().await?;
            Ok(c)
        })
        .await
    }

    /// Deletes a company's tokens and saves its record, in one transaction.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`].
    pub async fn save_company_without_tokens(&self, c: &Company) -> Result<()> {
        self.writing_company(&c.realm_id, async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            lock_tokens_first(&tx, &c.realm_id).await?;
            upsert_company(&tx, c).await?;
            tx.execute_cached("DELETE FROM tokens WHERE realm = $1", &[&c.realm_id])
                .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Deletes a company's record and tokens, in one transaction (its rates and log stay,
    /// as in sled).
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`].
    pub async fn remove_company(&self, realm: &str) -> Result<()> {
        self.writing_company(realm, async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            lock_tokens_first(&tx, realm).await?;
            tx.execute_cached("DELETE FROM companies WHERE realm = $1", &[&realm])
                .await?;
            tx.execute_cached("DELETE FROM tokens WHERE realm = $1", &[&realm])
                .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// The company counts (see the module docs for how they are kept), with
    /// [`CompanyTally::waiting`] counting the companies waiting since `waiting_before` or
    /// earlier (to the second). One round trip, one snapshot, no scan of the records: the
    /// per-minute counts before `waiting_before`'s minute, plus the index entries of that
    /// minute up to `waiting_before`. Read on the [`CountsLane`], not the pool.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`].
    pub async fn company_tally(&self, waiting_before: DateTime<Utc>) -> Result<CompanyTally> {
        self.lane.tally(waiting_before).await
    }
}

/// One request to the [`CountsLane`]: the instant for the waiting count, where to answer.
type TallyRequest = (
    DateTime<Utc>,
    tokio::sync::oneshot::Sender<Result<CompanyTally>>,
);

/// The company counts (what `/health`, `/metrics` and `status` read) on a thread and a
/// connection of their own. During a sync-all the daemon's runtime is busy with every
/// company in flight and their connections' tasks; a count read there waited behind them
/// (`/health` 9.8 ms median at 100,000 companies while the server answered the query in
/// 1.7 ms). Here the connection's task runs on a thread that is otherwise asleep (7.0 ms;
/// BENCHMARKS.md, session 10); `/health` itself is answered on the HTTP thread
/// (`http::serve_on_own_thread`), so a probe no longer crosses the busy runtime at all
/// (3.4–4.1 ms, session 11).
///
/// One connection, opened on first use and again after it broke (the lane's own pool of
/// one, same timeouts as the main pool); requests are answered in turn (the callers' own
/// single flight keeps them few). The thread ends when the store is dropped.
pub(crate) struct CountsLane {
    requests: tokio::sync::mpsc::Sender<TallyRequest>,
}

impl CountsLane {
    /// Starts the lane's thread (nothing is connected yet). Its runtime is built there, so
    /// no error path drops a runtime on the caller's async thread; a runtime that cannot be
    /// built is logged and every count answers unavailable ("the counts lane stopped").
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the thread cannot be made.
    pub(crate) fn start(
        manager: deadpool_postgres::Manager,
        wait: std::time::Duration,
    ) -> Result<CountsLane> {
        let (requests, mut rx) = tokio::sync::mpsc::channel::<TallyRequest>(16);
        std::thread::Builder::new()
            .name("boa-counts".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "the counts lane's runtime cannot be built");
                        return;
                    }
                };
                rt.block_on(async move {
                    let pool = deadpool_postgres::Pool::builder(manager)
                        .max_size(1)
                        .wait_timeout(Some(wait))
                        .create_timeout(Some(wait))
                        .recycle_timeout(Some(wait))
                        .runtime(deadpool_postgres::Runtime::Tokio1)
                        .build();
                    while let Some((waiting_before, answer)) = rx.recv().await {
                        let r = match &pool {
                            Ok(pool) => match pool.get().await {
                                Ok(c) => tally_on(&c, waiting_before).await,
                                Err(e) => Err(e.into()),
                            },
                            Err(e) => {
                                Err(Error::Unavailable(format!("the counts lane's pool: {e}")))
                            }
                        };
                        // The caller may have gone away (its request dropped): nothing to do.
                        let _ = answer.send(r);
                    }
                });
            })
            .map_err(|e| Error::Unavailable(format!("the counts lane's thread: {e}")))?;
        Ok(CountsLane { requests })
    }

    async fn tally(&self, waiting_before: DateTime<Utc>) -> Result<CompanyTally> {
        let stopped = || Error::Unavailable("the counts lane stopped".into());
        let (answer, rx) = tokio::sync::oneshot::channel();
        self.requests
            .send((waiting_before, answer))
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

impl std::fmt::Debug for CountsLane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CountsLane")
    }
}

/// [`PgStore::company_tally`] on connection `c`.
async fn tally_on(
    c: &deadpool_postgres::Object,
    waiting_before: DateTime<Utc>,
) -> Result<CompanyTally> {
    let row = c
        .query_one_cached(
            "SELECT
                   (SELECT n FROM company_counts WHERE name = 'total'),
                   (SELECT n FROM company_counts WHERE name = 'active'),
                   (SELECT n FROM company_counts WHERE name = 'connected'),
                   (SELECT n FROM company_counts WHERE name = 'reconnect_needed'),
                   (SELECT n FROM company_counts WHERE name = 'sync_disabled'),
                   (SELECT max(last_sync_at) FROM companies WHERE last_sync_at IS NOT NULL),
                   (SELECT coalesce(sum(n), 0)::bigint FROM company_waiting
                      WHERE bucket < boa_waiting_bucket($1))
                   + (SELECT count(*) FROM companies
                      WHERE waiting_since IS NOT NULL
                        AND waiting_since >= boa_waiting_bucket($1) AND waiting_since <= $1)",
            &[&waiting_before.timestamp()],
        )
        .await?;
    let n = |i: usize| -> Result<usize> {
        let v: Option<i64> = row.try_get(i)?;
        Ok(usize::try_from(v.unwrap_or(0)).unwrap_or(0))
    };
    let total = n(0)?;
    let active = n(1)?;
    Ok(CompanyTally {
        total,
        active,
        connected: n(2)?,
        reconnect_needed: n(3)?,
        disconnected: total.saturating_sub(active),
        sync_disabled: n(4)?,
        last_sync: row.try_get(5)?,
        waiting: n(6)?,
    })
}

impl PgStore {
    /// Runs `refresh` with the realm's tokens under a row lock that every node honours, and
    /// commits what it returns before handing it back: one token refresh per realm at a
    /// time across the cluster (SPEC §13). `refresh` gets the tokens in force *after* the lock
    /// was granted (a caller that waited sees the previous holder's rotated tokens and may
    /// answer `Ok(None)`: "still good, nothing to store"); `Ok(Some(new))` is committed before
    /// this returns, so a rotated refresh token is never used before it is durable.
    ///
    /// `refresh` must not write this realm's tokens through the store itself (that waits for
    /// the lock it runs under): it returns them. The lock holds a pooled connection for the
    /// length of the call.
    ///
    /// Answers `Ok(None)` when the realm has no tokens (nothing is locked or called),
    /// `Ok(Some(Ok(tokens)))` with the tokens now in force, `Ok(Some(Err(e)))` when `refresh`
    /// failed (nothing changed).
    ///
    /// # Errors
    /// [`Error::Unavailable`] (the commit may not have happened: the caller must not use the
    /// rotated tokens), [`Error::Db`], [`Error::Crypto`].
    pub async fn with_token_lock<F, Fut, E>(
        &self,
        realm: &str,
        refresh: F,
    ) -> Result<Option<std::result::Result<TokenSet, E>>>
    where
        F: FnOnce(TokenSet) -> Fut,
        Fut: Future<Output = std::result::Result<Option<TokenSet>, E>>,
    {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt_cached(
                "SELECT ciphertext FROM tokens WHERE realm = $1 FOR UPDATE",
                &[&realm],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let current = self.open_tokens(realm, row.try_get(0)?)?;
        match refresh(current.clone()).await {
            Err(e) => Ok(Some(Err(e))),
            Ok(None) => {
                tx.commit().await?;
                Ok(Some(Ok(current)))
            }
            Ok(Some(new)) => {
                let ct = self.seal(&new)?;
                tx.execute_cached(
                    "UPDATE tokens SET ciphertext = $2 WHERE realm = $1",
                    &[&realm, &ct],
                )
                .await?;
                tx.commit().await?;
                Ok(Some(Ok(new)))
            }
        }
    }
}

/// Reads the company row for update, applies `change`, writes it back.
/// Locks the realm's token row (when it has one) before its company row is touched: every
/// transaction that writes both takes the token row first (a token refresh holds it across
/// the call to Intuit and may flag the company meanwhile; a reconnect writes the tokens then
/// the company), so no two of them wait for each other in a cycle.
async fn lock_tokens_first(tx: &deadpool_postgres::Transaction<'_>, realm: &str) -> Result<()> {
    tx.query_opt_cached(
        "SELECT 1 FROM tokens WHERE realm = $1 FOR UPDATE",
        &[&realm],
    )
    .await?;
    Ok(())
}

async fn update_in(
    tx: &deadpool_postgres::Transaction<'_>,
    realm: &str,
    mut change: impl FnMut(&mut Company),
) -> Result<Option<Company>> {
    let row = tx
        .query_opt_cached(
            "SELECT realm, record FROM companies WHERE realm = $1 FOR UPDATE",
            &[&realm],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let mut c = company_of(&row)?;
    change(&mut c);
    upsert_company(tx, &c).await?;
    Ok(Some(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::company;

    #[test]
    fn facts_follow_the_tally_rules() {
        let mut c = company("1");
        let f = Facts::of(&c);
        assert!(f.active && f.connected && !f.reconnect_needed && !f.sync_disabled);
        assert_eq!(f.waiting_since, Some(c.created_at.timestamp()));
        c.sync_enabled = false;
        let f = Facts::of(&c);
        assert!(f.sync_disabled);
        assert_eq!(f.waiting_since, None);
        c.is_active = false;
        let f = Facts::of(&c);
        assert!(!f.active && !f.connected && !f.sync_disabled);
    }
}
