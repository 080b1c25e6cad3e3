//! [`Store`]: the one interface over both backends (SPEC §4, §13). Everything above the
//! store names only this type; which backend runs is the `[storage] backend` key.
//!
//! An enum, not a trait object: two backends known at compile time, an exhaustive `match`
//! in every method (a backend missing an operation does not compile), no boxed futures on
//! the hot path, and the generic methods (`meta_get<T>`, the closures of `update_company`,
//! `each_company`, `with_token_lock`) stay generic. The sled arms call the embedded store's
//! synchronous methods directly, as the daemon did before there were two backends; the
//! PostgreSQL arms await a pooled connection. Each method's contract is its sled
//! counterpart's ([`SledStore`]); [`PgStore`] keeps the same records and rules.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{de::DeserializeOwned, Serialize};

use super::backup::Written;
use super::postgres::PgStore;
use super::records::*;
use super::tally::CompanyTally;
use super::{BadRecord, Error, Result, SledStore, TableOutcome};
use crate::fixing::{FixingSource, FixingTable, TableKind};

/// What [`Store::exclusive`] got.
#[derive(Debug)]
pub enum Exclusive {
    /// sled: this node is the only one.
    OneNode,
    /// Held across the cluster until dropped.
    Held(super::postgres::Exclusive),
    /// Another node holds it now.
    HeldElsewhere,
}

/// The daemon's store, on one of its two backends.
#[derive(Debug)]
pub enum Store {
    /// The embedded sled database under `data_dir` (the default).
    Sled(Arc<SledStore>),
    /// A PostgreSQL database several daemons may share.
    Postgres(Arc<PgStore>),
}

/// See [`Store::facts_writing`].
struct FactsWriting<'a>(&'a std::sync::atomic::AtomicU64);

impl Drop for FactsWriting<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

macro_rules! both {
    ($self:expr, $s:ident => $sled:expr, $p:ident => $pg:expr) => {
        match $self {
            Store::Sled($s) => $sled,
            Store::Postgres($p) => $pg,
        }
    };
}

impl From<SledStore> for Store {
    fn from(s: SledStore) -> Store {
        Store::Sled(Arc::new(s))
    }
}

impl From<PgStore> for Store {
    fn from(p: PgStore) -> Store {
        Store::Postgres(Arc::new(p))
    }
}

impl Store {
    /// A sled store in a temporary folder (tests, the demo).
    ///
    /// # Errors
    /// sled failure.
    pub fn open_temporary() -> Result<Store> {
        Ok(SledStore::open_temporary()?.into())
    }

    /// The sled store under `data_dir`.
    ///
    /// # Errors
    /// As [`SledStore::open`].
    pub fn open_sled(data_dir: &Path, identity_file: &Path) -> Result<Store> {
        Ok(SledStore::open(data_dir, identity_file)?.into())
    }

    /// The PostgreSQL store at `url`, migrated.
    ///
    /// # Errors
    /// As [`PgStore::open_with_identity_file`].
    pub async fn open_postgres(url: &str, identity_file: &Path) -> Result<Store> {
        Ok(PgStore::open_with_identity_file(url, identity_file)
            .await?
            .into())
    }

    /// Sizes the PostgreSQL store's connection pool for `companies_in_flight` companies
    /// synced at once (`quickbooks.max_concurrent_companies`); nothing on sled.
    pub fn size_for_companies_in_flight(&self, companies_in_flight: usize) {
        both!(self, _s => (), p => p.size_pool_for(companies_in_flight))
    }

    /// How this node contends for leadership of the database it shares with others;
    /// `None` on sled (one node, always its own leader).
    pub fn leadership(&self, lease: std::time::Duration) -> Option<super::postgres::Leadership> {
        both!(self, _s => None, p => Some(super::postgres::Leadership::new(p, lease)))
    }

    /// Holds `name` across every node sharing the store until the answer is dropped (SPEC
    /// §13: one sync-all per date and scope across the cluster). With `wait`, waits for
    /// another node's hold to end; without, answers [`Exclusive::HeldElsewhere`] at once. On
    /// sled there is one node, whose own bookkeeping is the only one needed.
    ///
    /// # Errors
    /// The database cannot be reached.
    pub async fn exclusive(&self, name: &str, wait: bool) -> Result<Exclusive> {
        match self {
            Store::Sled(_) => Ok(Exclusive::OneNode),
            Store::Postgres(p) => Ok(match p.exclusive(name, wait).await? {
                Some(hold) => Exclusive::Held(hold),
                None => Exclusive::HeldElsewhere,
            }),
        }
    }

    /// `"sled"` or `"postgres"` (status, backups).
    pub fn backend(&self) -> &'static str {
        both!(self, _s => "sled", _p => "postgres")
    }

    /// Where the data is: the sled folder, or the database URL without its password.
    pub fn location(&self) -> String {
        both!(self, s => s.path().display().to_string(), p => p.path().to_string())
    }

    /// The record schema this build writes.
    pub fn schema_version(&self) -> u32 {
        both!(self, s => s.schema_version(), p => p.schema_version())
    }

    /// Makes every write so far durable (PostgreSQL: the relaxed commits of the writes that
    /// sled leaves unflushed, by one synchronous commit).
    ///
    /// # Errors
    /// Store failure.
    pub async fn flush(&self) -> Result<()> {
        both!(self, s => s.flush().await, p => Ok(p.flush().await?))
    }

    /// Bytes the data takes, roughly.
    pub async fn size_on_disk(&self) -> u64 {
        both!(self, s => s.size_on_disk(), p => p.size_on_disk().await)
    }

    /// Undecodable records found by the last scans (SPEC §9).
    pub fn bad_records(&self) -> Vec<BadRecord> {
        both!(self, s => s.bad_records(), p => p.bad_records())
    }

    /// Distinct undecodable records met since start.
    pub fn bad_records_seen(&self) -> u64 {
        both!(self, s => s.bad_records_seen(), p => p.bad_records_seen())
    }

    // ------------------------------------------------------------------ companies

    /// One company.
    ///
    /// # Errors
    /// Store failure, undecodable record.
    pub async fn company(&self, realm: &str) -> Result<Option<Company>> {
        both!(self, s => s.company(realm), p => Ok(p.company(realm).await?))
    }

    /// Every company (undecodable records skipped and reported).
    ///
    /// # Errors
    /// Store failure.
    pub async fn companies(&self) -> Result<Vec<Company>> {
        both!(self, s => s.companies(), p => Ok(p.companies().await?))
    }

    /// Every company and the records that did not decode.
    ///
    /// # Errors
    /// Store failure.
    pub async fn companies_scan(&self) -> Result<(Vec<Company>, Vec<BadRecord>)> {
        both!(self, s => s.companies_scan(), p => Ok(p.companies_scan().await?))
    }

    /// Visits every company in realm order without holding them all; answers the records
    /// that did not decode.
    ///
    /// # Errors
    /// Store failure.
    pub async fn each_company(&self, visit: impl FnMut(Company)) -> Result<Vec<BadRecord>> {
        both!(self, s => s.each_company(visit), p => Ok(p.each_company(visit).await?))
    }

    /// One page of companies in realm order after `after`, keeping those `keep` accepts.
    ///
    /// # Errors
    /// Store failure.
    pub async fn companies_page(
        &self,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&Company) -> bool,
    ) -> Result<(Vec<Company>, Option<String>)> {
        both!(self,
            s => s.companies_page(after, limit, keep),
            p => Ok(p.companies_page(after, limit, keep).await?))
    }

    /// Moves on after every company write made through this store (PostgreSQL: writes by
    /// other nodes are not seen here; the snapshot's 5 s age limit covers them).
    pub fn companies_generation(&self) -> u64 {
        both!(self, s => s.companies_generation(), p => p.companies_generation())
    }

    /// Moves on after every write of a fixing table, a scrape record or a meta value (the
    /// holidays among them) made through this store, whatever it answered: read it before
    /// reading those, and a cache of them (the health facts) knows it is out of date. As
    /// with [`Store::companies_generation`], writes by other nodes sharing a PostgreSQL
    /// database do not move it.
    pub fn facts_generation(&self) -> u64 {
        both!(self,
            s => s.facts_generation.load(std::sync::atomic::Ordering::SeqCst),
            p => p.facts_generation.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Held across a write [`Store::facts_generation`] covers: moves it when dropped, after
    /// the write returned or when its caller went away mid-write (it may have committed);
    /// a needless move only costs a re-read.
    fn facts_writing(&self) -> FactsWriting<'_> {
        FactsWriting(match self {
            Store::Sled(s) => &s.facts_generation,
            Store::Postgres(p) => &p.facts_generation,
        })
    }

    /// Stores a company record (durable before it returns).
    ///
    /// # Errors
    /// Store failure.
    pub async fn save_company(&self, c: &Company) -> Result<()> {
        both!(self, s => s.save_company(c).await, p => Ok(p.save_company(c).await?))
    }

    /// Changes a stored company (durable before it returns); `None` when unknown.
    ///
    /// # Errors
    /// Store failure.
    pub async fn update_company(
        &self,
        realm: &str,
        change: impl FnMut(&mut Company),
    ) -> Result<Option<Company>> {
        both!(self,
            s => s.update_company(realm, change).await,
            p => Ok(p.update_company(realm, change).await?))
    }

    /// As [`Store::update_company`], durable at the next flush (sled) or at once (PostgreSQL).
    ///
    /// # Errors
    /// Store failure.
    pub async fn update_company_unflushed(
        &self,
        realm: &str,
        change: impl FnMut(&mut Company),
    ) -> Result<Option<Company>> {
        both!(self,
            s => s.update_company_unflushed(realm, change),
            p => Ok(p.update_company_unflushed(realm, change).await?))
    }

    /// Removes a company's tokens and changes its record (durable before it returns).
    ///
    /// # Errors
    /// Store failure.
    pub async fn disconnect_company(
        &self,
        realm: &str,
        change: impl FnMut(&mut Company),
    ) -> Result<Option<Company>> {
        both!(self,
            s => s.disconnect_company(realm, change).await,
            p => Ok(p.disconnect_company(realm, change).await?))
    }

    /// Stores a company record and removes its tokens.
    ///
    /// # Errors
    /// Store failure.
    pub async fn save_company_without_tokens(&self, c: &Company) -> Result<()> {
        both!(self,
            s => s.save_company_without_tokens(c).await,
            p => Ok(p.save_company_without_tokens(c).await?))
    }

    /// Removes a company and everything of its own.
    ///
    /// # Errors
    /// Store failure.
    pub async fn remove_company(&self, realm: &str) -> Result<()> {
        both!(self, s => s.remove_company(realm).await, p => Ok(p.remove_company(realm).await?))
    }

    /// The company counts, with those waiting since `waiting_before` or earlier.
    ///
    /// # Errors
    /// Store failure.
    /// On sled the first call makes one pass over the records: on the blocking pool.
    pub async fn company_tally(&self, waiting_before: DateTime<Utc>) -> Result<CompanyTally> {
        match self {
            Store::Sled(s) => {
                let s = s.clone();
                tokio::task::spawn_blocking(move || s.company_tally(waiting_before))
                    .await
                    .map_err(|e| Error::FlushTask(format!("counting the companies: {e}")))?
            }
            Store::Postgres(p) => Ok(p.company_tally(waiting_before).await?),
        }
    }

    // ------------------------------------------------------------------ tokens

    /// Stores a company and its tokens together (durable before it returns).
    ///
    /// # Errors
    /// Store failure, encryption failure.
    pub async fn save_company_and_tokens(&self, c: &Company, t: &TokenSet) -> Result<()> {
        both!(self,
            s => s.save_company_and_tokens(c, t).await,
            p => Ok(p.save_company_and_tokens(c, t).await?))
    }

    /// Stores a realm's tokens (durable before it returns).
    ///
    /// # Errors
    /// Store failure, encryption failure.
    pub async fn save_tokens(&self, realm: &str, t: &TokenSet) -> Result<()> {
        both!(self, s => s.save_tokens(realm, t).await, p => Ok(p.save_tokens(realm, t).await?))
    }

    /// Stores a realm's tokens, durable at the next flush (sled) or at once (PostgreSQL).
    ///
    /// # Errors
    /// Store failure, encryption failure.
    pub async fn put_tokens_unflushed(&self, realm: &str, t: &TokenSet) -> Result<()> {
        both!(self,
            s => s.put_tokens_unflushed(realm, t),
            p => Ok(p.put_tokens_unflushed(realm, t).await?))
    }

    /// A realm's tokens, decrypted.
    ///
    /// # Errors
    /// Store failure, decryption failure.
    pub async fn tokens(&self, realm: &str) -> Result<Option<TokenSet>> {
        both!(self, s => s.tokens(realm), p => Ok(p.tokens(realm).await?))
    }

    /// Runs `refresh` with the realm's tokens under the realm's token lock and stores what it
    /// returns before handing it back (sled: written, durable with the caller's next flushed
    /// write, which must come before the new tokens are used) (SPEC §13: one refresh per realm at a time; on
    /// PostgreSQL a row lock every node honours, on sled the caller's in-process lock is the
    /// only one needed). `Ok(None)`: the realm has no tokens; `Ok(Some(Ok(t)))`: the tokens
    /// now in force; `Ok(Some(Err(e)))`: `refresh` failed and nothing changed.
    ///
    /// # Errors
    /// Store failure (a rotated token must then not be used).
    pub async fn with_token_lock<F, Fut, E>(
        &self,
        realm: &str,
        refresh: F,
    ) -> Result<Option<std::result::Result<TokenSet, E>>>
    where
        F: FnOnce(TokenSet) -> Fut,
        Fut: Future<Output = std::result::Result<Option<TokenSet>, E>>,
    {
        match self {
            Store::Sled(s) => {
                let Some(current) = s.tokens(realm)? else {
                    return Ok(None);
                };
                match refresh(current.clone()).await {
                    Err(e) => Ok(Some(Err(e))),
                    Ok(None) => Ok(Some(Ok(current))),
                    Ok(Some(new)) => {
                        // Durable with the caller's next flushed write (the token manager
                        // stores the new expiries on the company at once, flushing both),
                        // before the new access token is used: one fsync per refresh.
                        s.put_tokens_unflushed(realm, &new)?;
                        Ok(Some(Ok(new)))
                    }
                }
            }
            Store::Postgres(p) => Ok(p.with_token_lock(realm, refresh).await?),
        }
    }

    // ------------------------------------------------------------------ rates

    /// Records rates written to a company.
    ///
    /// # Errors
    /// Store failure.
    pub async fn put_rates(&self, realm: &str, rates: &[CompanyRate]) -> Result<()> {
        both!(self, s => s.put_rates(realm, rates), p => Ok(p.put_rates(realm, rates).await?))
    }

    /// Marks every company's rates from one fixing as needing a new write; answers how many.
    ///
    /// # Errors
    /// Store failure.
    pub async fn invalidate_rates(
        &self,
        kind: TableKind,
        date: NaiveDate,
        revised: bool,
    ) -> Result<usize> {
        both!(self,
            s => s.invalidate_rates(kind, date, revised),
            p => Ok(p.invalidate_rates(kind, date, revised).await?))
    }

    /// A company's rates for one date.
    ///
    /// # Errors
    /// Store failure.
    pub async fn rates_on(&self, realm: &str, date: NaiveDate) -> Result<Vec<CompanyRate>> {
        both!(self, s => s.rates_on(realm, date), p => Ok(p.rates_on(realm, date).await?))
    }

    /// A company's rates for a date range (inclusive).
    ///
    /// # Errors
    /// Store failure.
    pub async fn rates_between(
        &self,
        realm: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<CompanyRate>> {
        both!(self,
            s => s.rates_between(realm, from, to),
            p => Ok(p.rates_between(realm, from, to).await?))
    }

    /// (rates, synced rates) of a company.
    ///
    /// # Errors
    /// Store failure.
    pub async fn rate_counts(&self, realm: &str) -> Result<(u64, u64)> {
        both!(self, s => s.rate_counts(realm), p => Ok(p.rate_counts(realm).await?))
    }

    /// The dates a company has synced rates for.
    ///
    /// # Errors
    /// Store failure.
    pub async fn synced_dates(&self, realm: &str) -> Result<Vec<NaiveDate>> {
        both!(self, s => s.synced_dates(realm), p => Ok(p.synced_dates(realm).await?))
    }

    // ------------------------------------------------------------------ BoA tables

    /// Stores a BoA table against what is stored (`tables::revise`).
    ///
    /// # Errors
    /// Store failure.
    pub async fn put_table(
        &self,
        table: &FixingTable,
        source: &FixingSource,
        now: DateTime<Utc>,
    ) -> Result<TableOutcome> {
        let _moves = self.facts_writing();
        both!(self,
            s => s.put_table(table, source, now),
            p => Ok(p.put_table(table, source, now).await?))
    }

    /// The table of one date.
    ///
    /// # Errors
    /// Store failure.
    pub async fn table(&self, kind: TableKind, date: NaiveDate) -> Result<Option<StoredTable>> {
        both!(self, s => s.table(kind, date), p => Ok(p.table(kind, date).await?))
    }

    /// The newest table on or before `date`.
    ///
    /// # Errors
    /// Store failure.
    pub async fn table_on_or_before(
        &self,
        kind: TableKind,
        date: NaiveDate,
    ) -> Result<Option<StoredTable>> {
        both!(self,
            s => s.table_on_or_before(kind, date),
            p => Ok(p.table_on_or_before(kind, date).await?))
    }

    /// The oldest table after `date`.
    ///
    /// # Errors
    /// Store failure.
    pub async fn table_after(
        &self,
        kind: TableKind,
        date: NaiveDate,
    ) -> Result<Option<StoredTable>> {
        both!(self, s => s.table_after(kind, date), p => Ok(p.table_after(kind, date).await?))
    }

    /// Every date with a table of `kind`.
    ///
    /// # Errors
    /// Store failure.
    pub async fn table_dates(&self, kind: TableKind) -> Result<Vec<NaiveDate>> {
        both!(self, s => s.table_dates(kind), p => Ok(p.table_dates(kind).await?))
    }

    /// How many tables are stored.
    ///
    /// # Errors
    /// Store failure (PostgreSQL).
    pub async fn table_count(&self) -> Result<usize> {
        both!(self, s => Ok(s.table_count()), p => Ok(p.table_count().await?))
    }

    // ------------------------------------------------------------------ logs

    /// Appends to a company's log.
    ///
    /// # Errors
    /// Store failure.
    pub async fn append_log(&self, realm: &str, rec: &LogRecord) -> Result<()> {
        both!(self, s => s.append_log(realm, rec), p => Ok(p.append_log(realm, rec).await?))
    }

    /// A company's newest log records, newest first.
    ///
    /// # Errors
    /// Store failure.
    pub async fn logs(&self, realm: &str, limit: usize) -> Result<Vec<LogRecord>> {
        both!(self, s => s.logs(realm, limit), p => Ok(p.logs(realm, limit).await?))
    }

    /// (attempts, failures) of one kind in a company's log.
    ///
    /// # Errors
    /// Store failure.
    pub async fn log_counts(&self, realm: &str, kind: LogKind) -> Result<(u64, u64)> {
        both!(self, s => s.log_counts(realm, kind), p => Ok(p.log_counts(realm, kind).await?))
    }

    /// Appends a scrape record.
    ///
    /// # Errors
    /// Store failure.
    pub async fn append_scrape(&self, rec: &ScrapeRecord) -> Result<()> {
        let _moves = self.facts_writing();
        both!(self, s => s.append_scrape(rec), p => Ok(p.append_scrape(rec).await?))
    }

    /// The newest scrape records, newest first.
    ///
    /// # Errors
    /// Store failure.
    pub async fn scrapes(&self, limit: usize) -> Result<Vec<ScrapeRecord>> {
        both!(self, s => s.scrapes(limit), p => Ok(p.scrapes(limit).await?))
    }

    // ------------------------------------------------------------------ OAuth states

    /// Stores a pending OAuth state (durable before it returns).
    ///
    /// # Errors
    /// Store failure.
    pub async fn put_pending(&self, key: &str, pa: &PendingAuth) -> Result<()> {
        both!(self, s => s.put_pending(key, pa).await, p => Ok(p.put_pending(key, pa).await?))
    }

    /// A pending OAuth state.
    ///
    /// # Errors
    /// Store failure.
    pub async fn pending(&self, key: &str) -> Result<Option<PendingAuth>> {
        both!(self, s => s.pending(key), p => Ok(p.pending(key).await?))
    }

    /// Takes a pending OAuth state (once).
    ///
    /// # Errors
    /// Store failure.
    pub async fn take_pending(&self, key: &str) -> Result<Option<PendingAuth>> {
        both!(self, s => s.take_pending(key), p => Ok(p.take_pending(key).await?))
    }

    /// Removes expired OAuth states; answers how many.
    ///
    /// # Errors
    /// Store failure.
    pub async fn purge_expired_pending(&self, now: DateTime<Utc>) -> Result<usize> {
        both!(self, s => s.purge_expired_pending(now), p => Ok(p.purge_expired_pending(now).await?))
    }

    // ------------------------------------------------------------------ meta

    /// A meta value.
    ///
    /// # Errors
    /// Store failure, undecodable value.
    pub async fn meta_get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        both!(self, s => s.meta_get(key), p => Ok(p.meta_get(key).await?))
    }

    /// Stores a meta value.
    ///
    /// # Errors
    /// Store failure.
    pub async fn meta_put<T: Serialize>(&self, key: &str, v: &T) -> Result<()> {
        let _moves = self.facts_writing();
        both!(self, s => s.meta_put(key, v), p => Ok(p.meta_put(key, v).await?))
    }

    /// A secret meta value, decrypted.
    ///
    /// # Errors
    /// Store failure, decryption failure.
    pub async fn meta_secret(&self, key: &str) -> Result<Option<Vec<u8>>> {
        both!(self, s => s.meta_secret(key), p => Ok(p.meta_secret(key).await?))
    }

    /// Stores a secret meta value encrypted (durable before it returns).
    ///
    /// # Errors
    /// Store failure, encryption failure.
    pub async fn put_meta_secret(&self, key: &str, plaintext: &[u8]) -> Result<()> {
        both!(self,
            s => s.put_meta_secret(key, plaintext).await,
            p => Ok(p.put_meta_secret(key, plaintext).await?))
    }

    // ------------------------------------------------------------------ backup

    /// Sends a consistent copy of the whole store as backup lines (SPEC §12) to `tx`; stops
    /// with [`Error::BackupAborted`] when its receiver goes away. The sled walk runs on the
    /// blocking pool.
    ///
    /// # Errors
    /// [`Error::BackupRunning`], [`Error::BackupAborted`], store failure.
    pub async fn backup(
        &self,
        now: DateTime<Utc>,
        tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    ) -> Result<Written> {
        match self {
            Store::Sled(s) => {
                let s = s.clone();
                tokio::task::spawn_blocking(move || {
                    s.backup(now, |line| tx.blocking_send(line).is_ok())
                })
                .await
                .map_err(|e| Error::Backup(format!("the backup task failed: {e}")))?
            }
            Store::Postgres(p) => Ok(p
                .backup(now, |line| {
                    let tx = tx.clone();
                    async move { tx.send(line).await.is_ok() }
                })
                .await?),
        }
    }
}
