//! The embedded store: one sled database under `data_dir`, typed trees, versioned records,
//! encrypted tokens, and flush-before-acknowledge.
//!
//! The rest of the crate never sees a raw `sled::Tree`; it calls intent-level methods here.
//! Token plaintext exists only in memory: [`SledStore::save_tokens`] encrypts with the vault
//! before anything reaches sled.
//!
//! No sled transactions and no `apply_batch`: in sled 0.34 both take a process-wide
//! exclusive lock, and one waiting for it while other tasks flush deadlocks the whole daemon
//! (flushers hold the shared side while they wait for their buffer to become stable; the IO
//! threads that would make it stable queue behind the waiting writer). Multi-record updates
//! are ordered instead so that any durable prefix is harmless; see each method.
//!
//! # Layout
//! This file holds [`SledStore`], its errors and the typed get/put/scan every part uses;
//! `impl SledStore` continues by concern: `open.rs` (open, lock, schema, migrations),
//! `companies.rs`, `tokens.rs`, `rates.rs` (rates written to companies), `tables.rs` (BoA
//! fixings), `logs.rs` (log and scrape records), `pending.rs` (OAuth `state`), `meta.rs`
//! and `bad.rs` (undecodable records). `records.rs` and `codec.rs` are the record types and
//! their encoding, `keys.rs` the key layout, `snapshot.rs`/`backup.rs` the consistent copy.

pub mod backup;
pub mod codec;
pub mod keys;
pub mod postgres;
pub mod records;
mod snapshot;
pub mod tally;

mod bad;
mod companies;
mod either;
mod logs;
mod meta;
mod open;
mod pending;
mod rates;
mod tables;
mod tokens;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{de::DeserializeOwned, Serialize};

use crate::crypto::{self, Vault};
use crate::fixing::{FixingSource, FixingTable, TableKind};
use crate::locks::lock;
pub use codec::CodecError;
pub use either::{Exclusive, Store};
pub use open::{prepare_data_dir, LOCK_WAIT};
use records::*;
use snapshot::{Snapshots, TreeId, Writer};

/// sled's page cache (its default is 1 GiB, and a sync-all touching every company keeps
/// growing into it). The working set of a daily run is each company's record, tokens and
/// a few new rows, read once; pages that fall out are read back from the OS page cache.
const CACHE_CAPACITY: u64 = 4 * 1024 * 1024;

/// One entry of a sled iterator.
pub(crate) type SledEntry = sled::Result<(sled::IVec, sled::IVec)>;

/// A walk over `tree` (`iter` is one of its iterators) that keeps sled within its cache.
///
/// sled 0.34 evicts from its page cache in 256 shards, and a shard looks at the accesses to
/// its pages only once 64 of them have queued up. An iterator reads each leaf page once, so a
/// walk over a large tree leaves up to 256 × 64 pages resident whatever [`CACHE_CAPACITY`]
/// says (sled issue #1036, "OOM while traversing large database"). Reading each entry once
/// more by key accesses its leaf again, which fills the queues and lets the shards evict as
/// the walk goes. Measured (BENCHMARKS.md, issue 22) over 600,000 entries of this store's
/// sizes (100,000 companies): +65.5 MiB resident after a plain walk, +0.2 MiB paced, for
/// 0.2 s more.
pub(crate) fn paced<'a, I>(tree: &'a sled::Tree, iter: I) -> impl Iterator<Item = SledEntry> + 'a
where
    I: Iterator<Item = SledEntry> + 'a,
{
    iter.map(move |r| {
        let (k, v) = r?;
        tree.get(&k)?;
        Ok((k, v))
    })
}

/// The schema this build writes. Bump with a migration in `open::migrate` when records change.
pub const SCHEMA_VERSION: u32 = 2;

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// sled failed (I/O, corruption, lock held by another process).
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    /// A record did not decode.
    #[error("store record in {tree}: {source}")]
    Codec {
        /// Which tree.
        tree: &'static str,
        /// Why.
        source: CodecError,
    },
    /// The data directory could not be prepared.
    #[error("data directory {path}: {message}")]
    DataDir {
        /// The folder.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The store was written by a newer boa-exchange.
    #[error("the store in {path} has schema version {found}, newer than this boa-exchange supports ({supported}); upgrade boa-exchange or restore a backup")]
    NewerSchema {
        /// The folder.
        path: PathBuf,
        /// Version found.
        found: u32,
        /// Version this build writes.
        supported: u32,
    },
    /// Encrypted tokens exist but the identity file is missing.
    #[error("the store holds encrypted QuickBooks tokens but the identity file {0} is missing; restore it from your backup (starting with a new identity would force every company to reconnect)")]
    MissingIdentity(PathBuf),
    /// The identity file does not match the one that encrypted the stored tokens.
    #[error("the identity file {path} is not the one that encrypted the stored tokens (expected public key {expected}, found {found}); restore the right identity file")]
    WrongIdentity {
        /// The file.
        path: PathBuf,
        /// Recipient recorded in the store.
        expected: String,
        /// Recipient of the file found.
        found: String,
    },
    /// Vault failure.
    #[error(transparent)]
    Crypto(#[from] crypto::Error),
    /// The blocking flush did not finish (it panicked, or the runtime is shutting down).
    #[error("store flush did not complete: {0}")]
    FlushTask(String),
    /// A backup was asked for while one runs.
    #[error("a backup is already running; try again when it has finished")]
    BackupRunning,
    /// The backup's reader went away before the end.
    #[error("the backup was cut short: its reader went away")]
    BackupAborted,
    /// A backup line could not be written, or a restored record converted.
    #[error("backup: {0}")]
    Backup(String),
    /// The PostgreSQL backend failed.
    #[error(transparent)]
    Postgres(#[from] postgres::Error),
}

impl Error {
    /// True when the store cannot be reached right now (the PostgreSQL server is gone or
    /// restarting): nothing was done; the request may be retried (SPEC §13: 503
    /// `store_unavailable`).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Postgres(e) if e.is_unavailable())
    }

    fn codec(tree: &'static str) -> impl Fn(CodecError) -> Error {
        move |source| Error::Codec { tree, source }
    }
}

/// Store result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What storing a BoA table did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableOutcome {
    /// First time this date was seen.
    New,
    /// Same rates as stored: nothing written.
    Unchanged,
    /// Different rates for a stored date: kept as a new revision.
    Revised,
    /// A workbook row for a date we already have: never overwrites.
    Skipped,
}

/// Undecodable records by (tree, key): why each did not decode.
type BadMap = std::collections::BTreeMap<(&'static str, Vec<u8>), String>;

/// The daemon's database.
pub struct SledStore {
    db: sled::Db,
    path: PathBuf,
    vault: Vault,
    companies: sled::Tree,
    tokens: sled::Tree,
    rates: sled::Tree,
    logs: sled::Tree,
    fixings: sled::Tree,
    scrapes: sled::Tree,
    oauth_states: sled::Tree,
    meta: sled::Tree,
    /// Undecodable records found by the last scan of each tree, by (tree, key): what status,
    /// metrics and health report, and what keeps a record from being logged at every scan.
    bad: std::sync::Mutex<BadMap>,
    /// Distinct undecodable records met since start (a monotonic counter for metrics).
    bad_seen: std::sync::atomic::AtomicU64,
    /// Bumped after every write to the companies tree (every such write goes through a
    /// method here), so a cache of anything derived from the companies (the health and
    /// metrics snapshot) knows it is out of date without reading a record.
    companies_generation: std::sync::atomic::AtomicU64,
    /// Bumped after every write of a fixing table, a scrape record or a meta value made
    /// through the [`crate::store::Store`] (see [`crate::store::Store::facts_generation`]).
    pub(crate) facts_generation: std::sync::atomic::AtomicU64,
    /// The counts of the company records, changed by every company write under this lock
    /// (held around the sled operation, so the pass that builds it sees each write exactly
    /// once); see [`tally`].
    tally: std::sync::Mutex<tally::Tally>,
    /// The write gate and a running backup's pre-images (see [`snapshot`]).
    snaps: Snapshots,
}

/// A stored record that could not be decoded: skipped by scans, reported here (SPEC §9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    /// The tree it is in (e.g. `companies`).
    pub tree: &'static str,
    /// Its key as stored.
    pub key: Vec<u8>,
    /// Why it did not decode.
    pub error: String,
}

impl BadRecord {
    /// The key for logs and answers: as text when it is printable UTF-8 (realm ids are),
    /// else `0x` and hex.
    pub fn key_display(&self) -> String {
        match std::str::from_utf8(&self.key) {
            Ok(s) if !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic()) => s.to_string(),
            _ => format!("0x{}", hex::encode(&self.key)),
        }
    }
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.path.display())
    }
}

const META_SCHEMA: &[u8] = b"schema_version";
const META_RECIPIENT: &[u8] = b"vault_recipient";

impl SledStore {
    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes every write so far durable. Call before acknowledging.
    ///
    /// # Errors
    /// sled I/O failure.
    ///
    /// Runs sled's blocking `flush` on tokio's blocking pool, never `flush_async`: that one
    /// parks each caller on a thread of sled's own small IO pool, and with ~8 flushes in
    /// flight (a sync-all flushes once per company, 16 companies at a time) every pool thread
    /// waits for a buffer write that is queued behind them on the same pool, and the daemon
    /// hangs for good. Concurrent flushes still share one write and fsync inside sled.
    pub async fn flush(&self) -> Result<()> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| Error::FlushTask(e.to_string()))??;
        Ok(())
    }

    /// Blocking flush (shutdown path, tests).
    ///
    /// # Errors
    /// sled I/O failure.
    pub fn flush_blocking(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// Bytes on disk, roughly.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    // ---------------------------------------------------------------- generic helpers
    fn get<T: DeserializeOwned>(
        tree: &sled::Tree,
        name: &'static str,
        key: &[u8],
    ) -> Result<Option<T>> {
        tree.get(key)?
            .map(|v| codec::decode(&v).map_err(Error::codec(name)))
            .transpose()
    }

    fn put<T: Serialize>(&self, id: TreeId, key: &[u8], v: &T) -> Result<()> {
        let bytes = codec::encode(v).map_err(Error::codec(id.name()))?;
        self.writer().insert(id, key, bytes)?;
        Ok(())
    }

    fn scan<T: DeserializeOwned>(
        tree: &sled::Tree,
        name: &'static str,
        prefix: &[u8],
    ) -> impl DoubleEndedIterator<Item = Result<(sled::IVec, T)>> {
        tree.scan_prefix(prefix).map(move |r| {
            let (k, v) = r?;
            let t = codec::decode(&v).map_err(Error::codec(name))?;
            Ok((k, t))
        })
    }
}

#[cfg(test)]
pub(crate) mod tests;
