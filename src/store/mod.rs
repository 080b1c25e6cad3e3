//! The embedded store: one sled database under `data_dir`, typed trees, versioned records,
//! encrypted tokens, and flush-before-acknowledge.
//!
//! The rest of the crate never sees a raw `sled::Tree`; it calls intent-level methods here.
//! Token plaintext exists only in memory: [`Store::save_tokens`] encrypts with the vault
//! before anything reaches sled.
//!
//! No sled transactions and no `apply_batch`: in sled 0.34 both take a process-wide
//! exclusive lock, and one waiting for it while other tasks flush deadlocks the whole daemon
//! (flushers hold the shared side while they wait for their buffer to become stable; the IO
//! threads that would make it stable queue behind the waiting writer). Multi-record updates
//! are ordered instead so that any durable prefix is harmless; see each method.

pub mod backup;
pub mod codec;
pub mod keys;
pub mod postgres;
pub mod records;
mod snapshot;
pub mod tally;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{de::DeserializeOwned, Serialize};

use crate::crypto::{self, Vault};
use crate::fixing::{FixingSource, FixingTable, TableKind};
use crate::locks::lock;
pub use codec::CodecError;
use records::*;
use snapshot::{Snapshots, TreeId, Writer};

/// sled's page cache (its default is 1 GiB, and a sync-all touching every company keeps
/// growing into it). The working set of a daily run is each company's record, tokens and
/// a few new rows, read once; pages that fall out are read back from the OS page cache.
const CACHE_CAPACITY: u64 = 4 * 1024 * 1024;

/// The schema this build writes. Bump with a migration in [`migrate`] when records change.
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
}

impl Error {
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
pub struct Store {
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

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.path.display())
    }
}

const META_SCHEMA: &[u8] = b"schema_version";
const META_RECIPIENT: &[u8] = b"vault_recipient";

/// Creates the data folder (mode 0700) when it does not exist yet.
///
/// # Errors
/// [`Error::DataDir`] when it cannot be created.
pub fn prepare_data_dir(data_dir: &Path) -> Result<()> {
    let dd = |e: std::io::Error| Error::DataDir {
        path: data_dir.to_path_buf(),
        message: e.to_string(),
    };
    if !data_dir.exists() {
        std::fs::create_dir_all(data_dir).map_err(dd)?;
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700)).map_err(dd)?;
    }
    Ok(())
}

/// How long `Store::open` waits for sled's file lock before reporting another daemon.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Opens the sled database, waiting up to [`LOCK_WAIT`] while its lock is held. sled 0.34
/// releases the lock only when its flusher thread lets go of the page cache, a moment after
/// the last handle is dropped: a store closed and reopened in one process (a restart in
/// tests, a reopen after migration) would otherwise fail at random. A second daemon on the
/// same folder still gets the "another boa-exchange" error, after the wait.
fn open_db_waiting_for_lock(db_path: &Path) -> Result<sled::Db> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        let opened = sled::Config::new()
            .path(db_path)
            .cache_capacity(CACHE_CAPACITY)
            .open();
        match opened {
            Ok(db) => return Ok(db),
            // sled wraps the lock failure as `ErrorKind::Other` with the OS error's Debug
            // text ("could not acquire lock on …: Os { … kind: WouldBlock … }").
            Err(sled::Error::Io(io))
                if io.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            Err(sled::Error::Io(io)) => {
                return Err(Error::DataDir {
                    path: db_path.to_path_buf(),
                    message: format!("{io} (is another boa-exchange running on this data_dir?)"),
                })
            }
            Err(other) => return Err(Error::Sled(other)),
        }
    }
}

impl Store {
    /// Opens (creating if needed) the store in `data_dir` with the identity at `identity_file`.
    ///
    /// # Errors
    /// Unusable folder, sled failure (e.g. another daemon holds the lock), a newer schema, a
    /// missing or wrong identity while encrypted data exists.
    pub fn open(data_dir: &Path, identity_file: &Path) -> Result<Store> {
        let dd = |e: std::io::Error| Error::DataDir {
            path: data_dir.to_path_buf(),
            message: e.to_string(),
        };
        if !data_dir.exists() {
            std::fs::create_dir_all(data_dir).map_err(dd)?;
            std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(dd)?;
        }
        let db_path = data_dir.join("db");
        let db = open_db_waiting_for_lock(&db_path)?;
        // Decide on the identity before anything is written.
        let meta = db.open_tree(keys::META)?;
        let tokens = db.open_tree(keys::TOKENS)?;
        let recorded = meta
            .get(META_RECIPIENT)?
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        let vault = if identity_file.exists() {
            let v = Vault::load(identity_file)?;
            if let Some(expected) = &recorded {
                if *expected != v.recipient() {
                    return Err(Error::WrongIdentity {
                        path: identity_file.to_path_buf(),
                        expected: expected.clone(),
                        found: v.recipient(),
                    });
                }
            }
            v
        } else {
            if recorded.is_some() || !tokens.is_empty() {
                return Err(Error::MissingIdentity(identity_file.to_path_buf()));
            }
            if let Some(parent) = identity_file.parent() {
                if !parent.as_os_str().is_empty() {
                    std::fs::create_dir_all(parent).map_err(dd)?;
                }
            }
            Vault::create(identity_file)?
        };
        let store = Self::with_db(db, data_dir.to_path_buf(), vault)?;
        store
            .meta
            .insert(META_RECIPIENT, store.vault.recipient().as_bytes())?;
        store.db.flush()?;
        Ok(store)
    }

    /// A throw-away store (tests): temporary sled, in-memory identity.
    ///
    /// # Errors
    /// sled failure.
    pub fn open_temporary() -> Result<Store> {
        let db = sled::Config::new().temporary(true).open()?;
        Self::with_db(db, PathBuf::from("<temporary>"), Vault::generate())
    }

    fn with_db(db: sled::Db, path: PathBuf, vault: Vault) -> Result<Store> {
        let store = Store {
            companies: db.open_tree(keys::COMPANIES)?,
            tokens: db.open_tree(keys::TOKENS)?,
            rates: db.open_tree(keys::RATES)?,
            logs: db.open_tree(keys::LOGS)?,
            fixings: db.open_tree(keys::FIXINGS)?,
            scrapes: db.open_tree(keys::SCRAPES)?,
            oauth_states: db.open_tree(keys::OAUTH_STATES)?,
            meta: db.open_tree(keys::META)?,
            snaps: Snapshots::open(&db)?,
            db,
            path,
            vault,
            bad: std::sync::Mutex::new(std::collections::BTreeMap::new()),
            bad_seen: std::sync::atomic::AtomicU64::new(0),
            companies_generation: std::sync::atomic::AtomicU64::new(0),
            tally: std::sync::Mutex::new(tally::Tally::default()),
        };
        store.check_schema()?;
        Ok(store)
    }

    fn check_schema(&self) -> Result<()> {
        let found = match self.meta.get(META_SCHEMA)? {
            Some(v) if v.len() == 4 => u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
            Some(_) => 0,
            None => {
                self.meta
                    .insert(META_SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
                return Ok(());
            }
        };
        if found > SCHEMA_VERSION {
            return Err(Error::NewerSchema {
                path: self.path.clone(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found < SCHEMA_VERSION {
            migrate(self, found)?;
            self.meta
                .insert(META_SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
            self.db.flush()?;
        }
        Ok(())
    }

    /// The schema version recorded in the store.
    pub fn schema_version(&self) -> u32 {
        SCHEMA_VERSION
    }

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

    /// A daemon-wide value from the meta tree.
    ///
    /// # Errors
    /// sled or decode failure.
    pub fn meta_get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        Self::get(&self.meta, keys::META, key.as_bytes())
    }

    /// Sets a daemon-wide value (not flushed).
    ///
    /// # Errors
    /// sled or encode failure.
    pub fn meta_put<T: Serialize>(&self, key: &str, v: &T) -> Result<()> {
        self.put(TreeId::Meta, key.as_bytes(), v)
    }

    /// A secret kept in meta, encrypted with the vault (e.g. the generated `SECRET_KEY`).
    ///
    /// # Errors
    /// sled, decode or decrypt failure.
    pub fn meta_secret(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self.meta.get(key.as_bytes())? {
            Some(ct) => Ok(Some(self.vault.decrypt(&ct)?)),
            None => Ok(None),
        }
    }

    /// Stores a secret in meta, encrypted, and flushes.
    ///
    /// # Errors
    /// sled or encrypt failure.
    pub async fn put_meta_secret(&self, key: &str, plaintext: &[u8]) -> Result<()> {
        let ct = self.vault.encrypt(plaintext)?;
        self.writer().insert(TreeId::Meta, key.as_bytes(), ct)?;
        self.flush().await
    }

    // ---------------------------------------------------------------- companies and tokens

    /// One company.
    ///
    /// # Errors
    /// sled or decode failure.
    pub fn company(&self, realm: &str) -> Result<Option<Company>> {
        Self::get(&self.companies, keys::COMPANIES, realm.as_bytes())
    }

    /// Every company that decodes, in realm order. Undecodable records are skipped, logged
    /// and counted (see [`Store::companies_scan`]); one bad record never hides the others.
    ///
    /// # Errors
    /// sled failure.
    pub fn companies(&self) -> Result<Vec<Company>> {
        Ok(self.companies_scan()?.0)
    }

    /// Every company that decodes, in realm order, and the records that do not. Each bad
    /// record is logged with its key the first time a scan meets it, and counted in
    /// [`Store::bad_records_seen`]; [`Store::bad_records`] lists those of the latest scans.
    ///
    /// # Errors
    /// sled failure (a decode failure is not an error here).
    pub fn companies_scan(&self) -> Result<(Vec<Company>, Vec<BadRecord>)> {
        let mut good = Vec::new();
        let bad = self.each_company(|c| good.push(c))?;
        Ok((good, bad))
    }

    /// Visits every company that decodes, in realm order, one at a time (nothing is kept:
    /// a caller that only counts or picks a few fields never holds every record at once);
    /// returns the records that do not decode, noted as by [`Store::companies_scan`].
    ///
    /// # Errors
    /// sled failure (a decode failure is not an error here).
    pub fn each_company(&self, mut visit: impl FnMut(Company)) -> Result<Vec<BadRecord>> {
        let mut bad = Vec::new();
        for r in self.companies.iter() {
            let (k, v) = r?;
            match codec::decode::<Company>(&v) {
                Ok(c) => visit(c),
                Err(e) => bad.push(BadRecord {
                    tree: keys::COMPANIES,
                    key: k.to_vec(),
                    error: e.to_string(),
                }),
            }
        }
        self.note_bad(keys::COMPANIES, &bad);
        Ok(bad)
    }

    /// One page of companies in realm order: those with a realm id after `after` (all when
    /// `None`) that `keep` accepts, at most `limit` of them, and the realm id to pass as the
    /// next `after` when more accepted companies follow (`None` on the last page). A sled
    /// range scan from `after`: a page costs its own records (plus, with a filter, the
    /// records it skips), never a full scan. Undecodable records are skipped (the full
    /// scans report them).
    ///
    /// # Errors
    /// sled failure.
    pub fn companies_page(
        &self,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&Company) -> bool,
    ) -> Result<(Vec<Company>, Option<String>)> {
        use std::ops::Bound;
        let start = match after {
            Some(a) => Bound::Excluded(a.as_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        let mut page = Vec::new();
        for r in self
            .companies
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
        {
            let (_, v) = r?;
            let Ok(c) = codec::decode::<Company>(&v) else {
                continue;
            };
            if !keep(&c) {
                continue;
            }
            if page.len() == limit {
                // One more accepted company follows: the page is not the last.
                let next = page.last().map(|p: &Company| p.realm_id.clone());
                return Ok((page, next));
            }
            page.push(c);
        }
        Ok((page, None))
    }

    /// Changes whenever a company record is written or removed (see the field's docs). Read
    /// it before deriving something from the companies: if it still has that value later,
    /// no company changed in between.
    pub fn companies_generation(&self) -> u64 {
        self.companies_generation
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Called after each write to the companies tree (after, so a reader that saw the old
    /// generation is invalidated once the write is visible).
    fn companies_changed(&self) {
        self.companies_generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Undecodable records found by the latest full scan of each tree.
    pub fn bad_records(&self) -> Vec<BadRecord> {
        let known = self.bad();
        known
            .iter()
            .map(|((tree, key), error)| BadRecord {
                tree,
                key: key.clone(),
                error: error.clone(),
            })
            .collect()
    }

    /// Distinct undecodable records met since the store was opened (monotonic).
    pub fn bad_records_seen(&self) -> u64 {
        self.bad_seen.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A record known bad was overwritten or removed.
    fn forget_bad(&self, tree: &'static str, key: &[u8]) {
        let mut known = self.bad();
        known.remove(&(tree, key.to_vec()));
    }

    /// Replaces what is known bad in `tree` with a full scan's findings; logs the new ones.
    fn note_bad(&self, tree: &'static str, found: &[BadRecord]) {
        let mut known = self.bad();
        for b in found {
            if !known.contains_key(&(tree, b.key.clone())) {
                tracing::warn!(
                    tree,
                    key = %b.key_display(),
                    error = %b.error,
                    "skipping a stored record that cannot be decoded"
                );
                self.bad_seen
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        known.retain(|(t, _), _| *t != tree);
        for b in found {
            known.insert((tree, b.key.clone()), b.error.clone());
        }
    }

    /// Writes a company record and flushes before returning.
    ///
    /// # Errors
    /// sled or encode failure.
    pub async fn save_company(&self, c: &Company) -> Result<()> {
        self.insert_company(&self.writer(), c)?;
        self.flush().await
    }

    /// Changes fields of the company's *current* record atomically (compare-and-swap, retried
    /// when another writer got in between), then flushes. For writers that hold an older copy
    /// of the record (a sync, a settings change) and must not undo what others wrote
    /// meanwhile. `change` may run more than once. `None` when the company does not exist.
    ///
    /// # Errors
    /// sled, encode or decode failure.
    pub async fn update_company(
        &self,
        realm: &str,
        change: impl FnMut(&mut Company),
    ) -> Result<Option<Company>> {
        let c = self.update_company_unflushed(realm, change)?;
        self.flush().await?;
        Ok(c)
    }

    /// [`Store::update_company`] without the flush, for a caller that flushes once after
    /// several writes (a company sync) before acknowledging.
    ///
    /// # Errors
    /// sled, encode or decode failure.
    pub fn update_company_unflushed(
        &self,
        realm: &str,
        mut change: impl FnMut(&mut Company),
    ) -> Result<Option<Company>> {
        let key = realm.as_bytes();
        loop {
            let Some(old) = self.companies.get(key)? else {
                return Ok(None);
            };
            let before: Company = codec::decode(&old).map_err(Error::codec(keys::COMPANIES))?;
            let mut c = before.clone();
            change(&mut c);
            let new = codec::encode(&c).map_err(Error::codec(keys::COMPANIES))?;
            let w = self.writer();
            let mut tally = self.tally();
            if w.compare_and_swap(TreeId::Companies, key, Some(old), Some(new))?
                .is_ok()
            {
                tally.change(Some(&before), Some(&c));
                drop(tally);
                self.companies_changed();
                return Ok(Some(c));
            }
        }
    }

    /// Writes a company's tokens, then its record, then flushes. sled persists writes in log
    /// order, so a crash leaves none, the tokens alone (a rotated refresh token is never
    /// lost; an unconnected company's orphan ciphertext is never read), or both. Not a sled
    /// transaction: see the module docs.
    ///
    /// # Errors
    /// sled, encode or encrypt failure.
    pub async fn save_company_and_tokens(&self, c: &Company, t: &TokenSet) -> Result<()> {
        let company = codec::encode(c).map_err(Error::codec(keys::COMPANIES))?;
        let tokens = self.seal(t)?;
        let key = c.realm_id.as_bytes();
        {
            let w = self.writer();
            w.insert(TreeId::Tokens, key, tokens)?;
            self.write_company(&w, key, Some(c), |w| {
                w.insert(TreeId::Companies, key, company)
            })?;
        }
        self.flush().await
    }

    fn seal(&self, t: &TokenSet) -> Result<Vec<u8>> {
        let plain = codec::encode(t).map_err(Error::codec(keys::TOKENS))?;
        Ok(self.vault.encrypt(&plain)?)
    }

    /// Stores a company's tokens (encrypted) and flushes before returning.
    ///
    /// # Errors
    /// sled, encode or encrypt failure.
    pub async fn save_tokens(&self, realm: &str, t: &TokenSet) -> Result<()> {
        self.put_tokens_unflushed(realm, t)?;
        self.flush().await
    }

    /// Stores a company's tokens (encrypted) without flushing; the caller flushes before the
    /// new tokens are used or acknowledged.
    ///
    /// # Errors
    /// sled, encode or encrypt failure.
    pub fn put_tokens_unflushed(&self, realm: &str, t: &TokenSet) -> Result<()> {
        let ct = self.seal(t)?;
        self.writer().insert(TreeId::Tokens, realm.as_bytes(), ct)?;
        Ok(())
    }

    /// A company's tokens, decrypted.
    ///
    /// # Errors
    /// sled, decrypt or decode failure.
    pub fn tokens(&self, realm: &str) -> Result<Option<TokenSet>> {
        match self.tokens.get(realm.as_bytes())? {
            None => Ok(None),
            Some(ct) => {
                let plain = self.vault.decrypt(&ct)?;
                Ok(Some(
                    codec::decode(&plain).map_err(Error::codec(keys::TOKENS))?,
                ))
            }
        }
    }

    /// Disconnect: changes the company's *current* record (compare-and-swap, so a settings
    /// change or a sync's `last_sync_at` made meanwhile is kept), then deletes its tokens,
    /// then flushes. A crash in between leaves an orphan ciphertext on a disconnected
    /// company, which nothing reads. `None` for an unknown company.
    ///
    /// # Errors
    /// sled, encode or decode failure.
    pub async fn disconnect_company(
        &self,
        realm: &str,
        change: impl FnMut(&mut Company),
    ) -> Result<Option<Company>> {
        let c = self.update_company_unflushed(realm, change)?;
        self.writer().remove(TreeId::Tokens, realm.as_bytes())?;
        self.flush().await?;
        Ok(c)
    }

    /// Deletes a company's tokens and saves its record (disconnect), then flushes.
    ///
    /// # Errors
    /// sled or encode failure.
    pub async fn save_company_without_tokens(&self, c: &Company) -> Result<()> {
        {
            let w = self.writer();
            self.insert_company(&w, c)?;
            w.remove(TreeId::Tokens, c.realm_id.as_bytes())?;
        }
        self.flush().await
    }

    /// Deletes a company's record, then its tokens, then flushes: undoes a takeover whose
    /// grant turned out to belong to another company (`ops::migrate`). A crash in between
    /// leaves only an orphan ciphertext, which nothing reads.
    ///
    /// # Errors
    /// sled failure.
    pub async fn remove_company(&self, realm: &str) -> Result<()> {
        let key = realm.as_bytes();
        {
            let w = self.writer();
            self.write_company(&w, key, None, |w| w.remove(TreeId::Companies, key))?;
            w.remove(TreeId::Tokens, key)?;
        }
        self.flush().await
    }

    /// The company counts without reading a record (after the first call, which makes one
    /// pass; see [`tally`]), with [`tally::CompanyTally::waiting`] counting the companies
    /// waiting for a sync since `waiting_before` or earlier.
    ///
    /// # Errors
    /// sled failure during a pass.
    pub fn company_tally(&self, waiting_before: DateTime<Utc>) -> Result<tally::CompanyTally> {
        let mut t = self.tally();
        if t.needs_pass() {
            // Company writes wait for the lock meanwhile: none is missed or counted twice.
            let mut fresh = tally::Tally::empty_built();
            self.each_company(|c| fresh.change(None, Some(&c)))?;
            *t = fresh;
        }
        Ok(t.view(waiting_before))
    }

    /// The undecodable records known (a poisoned lock still holds a usable map).
    fn bad(&self) -> std::sync::MutexGuard<'_, BadMap> {
        lock(&self.bad)
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, tally::Tally> {
        lock(&self.tally)
    }

    /// Writes a company record (not flushed).
    fn insert_company(&self, w: &Writer<'_>, c: &Company) -> Result<()> {
        let bytes = codec::encode(c).map_err(Error::codec(keys::COMPANIES))?;
        let key = c.realm_id.as_bytes();
        self.write_company(w, key, Some(c), |w| w.insert(TreeId::Companies, key, bytes))
    }

    /// One write to the companies tree that replaces the record under `key` by `new` (`None`:
    /// removed), run under the tally lock; `write` returns the record it replaced. Counted in
    /// the tally and the companies generation.
    fn write_company(
        &self,
        w: &Writer<'_>,
        key: &[u8],
        new: Option<&Company>,
        write: impl FnOnce(&Writer<'_>) -> sled::Result<Option<sled::IVec>>,
    ) -> Result<()> {
        let mut tally = self.tally();
        let old = write(w)?;
        if !tally.needs_pass() {
            let before = match old {
                None => None,
                Some(bytes) => match codec::decode::<Company>(&bytes) {
                    Ok(c) => Some(c),
                    Err(_) => {
                        // An undecodable record replaced (or removed) is no longer bad.
                        self.forget_bad(keys::COMPANIES, key);
                        None
                    }
                },
            };
            tally.change(before.as_ref(), new);
        }
        drop(tally);
        self.companies_changed();
        Ok(())
    }

    // ---------------------------------------------------------------- per-company rates

    /// Upserts a company's rates (not flushed: the caller flushes once per sync). One insert
    /// per row, not a sled batch (see the module docs): each row stands alone, and a row lost
    /// in a crash is written again by the next sync.
    ///
    /// # Errors
    /// sled or encode failure.
    pub fn put_rates(&self, realm: &str, rates: &[CompanyRate]) -> Result<()> {
        let w = self.writer();
        for r in rates {
            let v = codec::encode(r).map_err(Error::codec(keys::RATES))?;
            w.insert(TreeId::Rates, &keys::rate_key(realm, r.date, r.currency), v)?;
        }
        Ok(())
    }

    /// Marks as not synced every company rate that the stored table of `kind` dated `date`
    /// supersedes: with `revised`, rates computed from that table's earlier revision; always,
    /// rates dated on or after `date` that were computed from an older table of that kind
    /// (written before this one was known, e.g. a holiday fill). The caller then re-syncs
    /// them. Returns how many rows changed (not flushed).
    ///
    /// # Errors
    /// sled or codec failure.
    pub fn invalidate_rates(
        &self,
        kind: TableKind,
        date: NaiveDate,
        revised: bool,
    ) -> Result<usize> {
        let mut n = 0;
        for r in Self::scan::<CompanyRate>(&self.rates, keys::RATES, b"") {
            let (k, mut row) = r?;
            let (k_kind, k_date) = row.fixing;
            let stale = k_kind == kind
                && row.synced
                && ((revised && k_date == date) || (k_date < date && row.date >= date));
            if stale {
                row.synced = false;
                row.synced_at = None;
                // Row by row, not a sled batch (batches take sled's global exclusive lock).
                let v = codec::encode(&row).map_err(Error::codec(keys::RATES))?;
                self.writer().insert(TreeId::Rates, &k, v)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// A company's stored rates for one date.
    ///
    /// # Errors
    /// sled or decode failure.
    pub fn rates_on(&self, realm: &str, date: NaiveDate) -> Result<Vec<CompanyRate>> {
        Self::scan(
            &self.rates,
            keys::RATES,
            &keys::rate_date_prefix(realm, date),
        )
        .map(|r| r.map(|(_, v)| v))
        .collect()
    }

    /// A company's stored rates dated `from` to `to` (inclusive), by date then currency.
    ///
    /// # Errors
    /// sled or decode failure.
    pub fn rates_between(
        &self,
        realm: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<CompanyRate>> {
        let start = keys::rate_date_prefix(realm, from);
        let end = match to.succ_opt() {
            Some(next) => keys::rate_date_prefix(realm, next),
            None => {
                let mut k = keys::realm_prefix(realm);
                k.push(0xff);
                k
            }
        };
        self.rates
            .range(start..end)
            .map(|r| {
                let (_, v) = r?;
                codec::decode(&v).map_err(Error::codec(keys::RATES))
            })
            .collect()
    }

    /// `(total, synced)` rate rows of a company.
    ///
    /// # Errors
    /// sled or decode failure.
    pub fn rate_counts(&self, realm: &str) -> Result<(u64, u64)> {
        let (mut total, mut synced) = (0, 0);
        for r in Self::scan::<CompanyRate>(&self.rates, keys::RATES, &keys::realm_prefix(realm)) {
            let (_, v) = r?;
            total += 1;
            if v.synced {
                synced += 1;
            }
        }
        Ok((total, synced))
    }

    /// Dates for which a company has every stored rate confirmed in QuickBooks, oldest first.
    ///
    /// # Errors
    /// sled or decode failure.
    pub fn synced_dates(&self, realm: &str) -> Result<Vec<NaiveDate>> {
        let mut out: Vec<(NaiveDate, bool)> = Vec::new();
        for r in Self::scan::<CompanyRate>(&self.rates, keys::RATES, &keys::realm_prefix(realm)) {
            let (_, v) = r?;
            match out.last_mut() {
                Some((d, ok)) if *d == v.date => *ok &= v.synced,
                _ => out.push((v.date, v.synced)),
            }
        }
        Ok(out
            .into_iter()
            .filter(|(_, ok)| *ok)
            .map(|(d, _)| d)
            .collect())
    }

    // ---------------------------------------------------------------- per-company log

    /// Appends to a company's log (not flushed).
    ///
    /// # Errors
    /// sled or encode failure.
    pub fn append_log(&self, realm: &str, rec: &LogRecord) -> Result<()> {
        let id = self.db.generate_id()?;
        self.put(TreeId::Logs, &keys::log_key(realm, id), rec)
    }

    /// A company's newest log records, newest first.
    ///
    /// # Errors
    /// sled or decode failure.
    pub fn logs(&self, realm: &str, limit: usize) -> Result<Vec<LogRecord>> {
        Self::scan(&self.logs, keys::LOGS, &keys::realm_prefix(realm))
            .rev()
            .take(limit)
            .map(|r| r.map(|(_, v)| v))
            .collect()
    }

    /// `(attempts, successful)` of one kind in a company's log.
    ///
    /// # Errors
    /// sled or decode failure.
    pub fn log_counts(&self, realm: &str, kind: LogKind) -> Result<(u64, u64)> {
        let (mut n, mut ok) = (0, 0);
        for r in Self::scan::<LogRecord>(&self.logs, keys::LOGS, &keys::realm_prefix(realm)) {
            let (_, v) = r?;
            if v.kind == kind {
                n += 1;
                if v.success {
                    ok += 1;
                }
            }
        }
        Ok((n, ok))
    }

    // ---------------------------------------------------------------- BoA fixings

    /// Stores a scraped table: new date → stored; same rates → nothing; different rates → a
    /// new revision (the old one kept). Not flushed.
    ///
    /// # Errors
    /// sled, encode or decode failure.
    pub fn put_table(
        &self,
        table: &FixingTable,
        source: &FixingSource,
        now: DateTime<Utc>,
    ) -> Result<TableOutcome> {
        let key = keys::fixing_key(table.kind, table.date);
        let existing: Option<StoredTable> = Self::get(&self.fixings, keys::FIXINGS, &key)?;
        let imported = matches!(source, FixingSource::Workbook { .. });
        let (record, outcome) = match existing {
            None => (
                StoredTable {
                    table: table.clone(),
                    source: source.clone(),
                    stored_at: now,
                    previous: Vec::new(),
                },
                TableOutcome::New,
            ),
            Some(_) if imported => return Ok(TableOutcome::Skipped),
            Some(old) if old.table.rates == table.rates => {
                if old.table.published_time.is_none() && table.published_time.is_some() {
                    // A scrape confirms an imported table: keep the page as the source.
                    let mut rec = old;
                    rec.table.published_time = table.published_time;
                    rec.source = source.clone();
                    self.put(TreeId::Fixings, &key, &rec)?;
                }
                return Ok(TableOutcome::Unchanged);
            }
            Some(old) => {
                let mut previous = old.previous;
                previous.push((old.table, old.source, old.stored_at));
                (
                    StoredTable {
                        table: table.clone(),
                        source: source.clone(),
                        stored_at: now,
                        previous,
                    },
                    TableOutcome::Revised,
                )
            }
        };
        self.put(TreeId::Fixings, &key, &record)?;
        Ok(outcome)
    }

    /// The stored table of a kind for exactly `date`.
    ///
    /// # Errors
    /// sled or decode failure.
    pub fn table(&self, kind: TableKind, date: NaiveDate) -> Result<Option<StoredTable>> {
        Self::get(&self.fixings, keys::FIXINGS, &keys::fixing_key(kind, date))
    }

    /// The newest stored table of a kind dated on or before `date`.
    ///
    /// # Errors
    /// sled or decode failure.
    pub fn table_on_or_before(
        &self,
        kind: TableKind,
        date: NaiveDate,
    ) -> Result<Option<StoredTable>> {
        let start = vec![keys::kind_byte(kind)];
        let end = keys::fixing_key(kind, date);
        match self.fixings.range(start..=end).next_back() {
            None => Ok(None),
            Some(r) => {
                let (_, v) = r?;
                Ok(Some(
                    codec::decode(&v).map_err(Error::codec(keys::FIXINGS))?,
                ))
            }
        }
    }

    /// The newest stored table of a kind dated strictly after `date`.
    ///
    /// # Errors
    /// sled or decode failure.
    pub fn table_after(&self, kind: TableKind, date: NaiveDate) -> Result<Option<StoredTable>> {
        let mut start = keys::fixing_key(kind, date);
        start.push(0xff);
        let end = vec![keys::kind_byte(kind) + 1];
        match self.fixings.range(start..end).next() {
            None => Ok(None),
            Some(r) => {
                let (_, v) = r?;
                Ok(Some(
                    codec::decode(&v).map_err(Error::codec(keys::FIXINGS))?,
                ))
            }
        }
    }

    /// Dates of every stored table of a kind, oldest first.
    ///
    /// # Errors
    /// sled failure or a malformed key.
    pub fn table_dates(&self, kind: TableKind) -> Result<Vec<NaiveDate>> {
        let mut out = Vec::new();
        for r in self.fixings.scan_prefix([keys::kind_byte(kind)]) {
            let (k, _) = r?;
            let s = String::from_utf8_lossy(&k[1..]).into_owned();
            if let Ok(d) = NaiveDate::parse_from_str(&s, "%Y-%m-%d") {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Number of stored tables (both kinds).
    pub fn table_count(&self) -> usize {
        self.fixings.len()
    }

    /// Appends to the global scrape log (not flushed).
    ///
    /// # Errors
    /// sled or encode failure.
    pub fn append_scrape(&self, rec: &ScrapeRecord) -> Result<()> {
        let id = self.db.generate_id()?;
        self.put(TreeId::Scrapes, &id.to_be_bytes(), rec)
    }

    /// Newest scrape records, newest first.
    ///
    /// # Errors
    /// sled or decode failure.
    pub fn scrapes(&self, limit: usize) -> Result<Vec<ScrapeRecord>> {
        Self::scan(&self.scrapes, keys::SCRAPES, b"")
            .rev()
            .take(limit)
            .map(|r| r.map(|(_, v)| v))
            .collect()
    }

    // ---------------------------------------------------------------- OAuth states

    /// Records a pending state or invite, flushed.
    ///
    /// # Errors
    /// sled or encode failure.
    pub async fn put_pending(&self, key: &str, p: &PendingAuth) -> Result<()> {
        self.put(TreeId::OauthStates, key.as_bytes(), p)?;
        self.flush().await
    }

    /// A pending OAuth state or invite, left in place.
    ///
    /// # Errors
    /// sled or decode failure.
    pub fn pending(&self, key: &str) -> Result<Option<PendingAuth>> {
        match self.oauth_states.get(key.as_bytes())? {
            None => Ok(None),
            Some(v) => Ok(Some(
                codec::decode(&v).map_err(Error::codec(keys::OAUTH_STATES))?,
            )),
        }
    }

    /// Removes and returns a pending OAuth state or invite (single use).
    ///
    /// # Errors
    /// sled or decode failure.
    pub fn take_pending(&self, key: &str) -> Result<Option<PendingAuth>> {
        match self.writer().remove(TreeId::OauthStates, key.as_bytes())? {
            None => Ok(None),
            Some(v) => Ok(Some(
                codec::decode(&v).map_err(Error::codec(keys::OAUTH_STATES))?,
            )),
        }
    }

    /// Drops expired states and invites; returns how many.
    ///
    /// # Errors
    /// sled or decode failure.
    pub fn purge_expired_pending(&self, now: DateTime<Utc>) -> Result<usize> {
        let mut n = 0;
        for r in Self::scan::<PendingAuth>(&self.oauth_states, keys::OAUTH_STATES, b"") {
            let (k, p) = r?;
            let exp = match p {
                PendingAuth::State { expires_at, .. }
                | PendingAuth::Invite { expires_at, .. }
                | PendingAuth::InvitedState { expires_at, .. } => expires_at,
            };
            if exp < now {
                self.writer().remove(TreeId::OauthStates, &k)?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// Upgrades a store written with schema `from` to [`SCHEMA_VERSION`]. Runs at open.
///
/// 1 → 2: company records gained `drift` and log records gained `drift` (both appended
/// last). Each record is rewritten in the new shape. Idempotent, so a crash half-way is
/// finished by the next start: a record that already decodes in the new shape is left alone
/// (the order of the two attempts matters: bincode ignores trailing bytes, so a new record
/// would also decode in the old shape, while an old one is too short for the new shape).
/// A record that decodes in neither shape is left as it is, to be skipped, counted and
/// alerted like any undecodable record (SPEC §9).
fn migrate(store: &Store, from: u32) -> Result<()> {
    tracing::info!(from, to = SCHEMA_VERSION, "migrating store schema");
    if from < 2 {
        let companies = upgrade_tree::<Company, v1::Company>(&store.companies, keys::COMPANIES)?;
        let logs = upgrade_tree::<LogRecord, v1::LogRecord>(&store.logs, keys::LOGS)?;
        tracing::info!(companies, logs, "store schema 1 → 2: records rewritten");
    }
    Ok(())
}

/// Rewrites every record of `tree` that decodes as `Old` but not as `New`; returns how many.
fn upgrade_tree<New, Old>(tree: &sled::Tree, name: &'static str) -> Result<usize>
where
    New: Serialize + DeserializeOwned,
    Old: DeserializeOwned + Into<New>,
{
    let mut n = 0;
    for r in tree.iter() {
        let (k, v) = r?;
        if codec::decode::<New>(&v).is_ok() {
            continue;
        }
        match codec::decode::<Old>(&v) {
            Ok(old) => {
                let new: New = old.into();
                tree.insert(k, codec::encode(&new).map_err(Error::codec(name))?)?;
                n += 1;
            }
            Err(e) => {
                tracing::warn!(tree = name, key = %String::from_utf8_lossy(&k), error = %e, "store migration: record left as it is (undecodable)");
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
pub(crate) mod tests;
