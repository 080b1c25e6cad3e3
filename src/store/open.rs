//! Opening a store: the data folder, sled's file lock, the vault identity, the schema check
//! and the migrations that bring an older store up to [`SCHEMA_VERSION`].

use super::*;

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

/// How long `SledStore::open` waits for sled's file lock before reporting another daemon.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Opens the sled database, waiting up to [`LOCK_WAIT`] while its lock is held. sled 0.34
/// releases the lock only when its flusher thread lets go of the page cache, a moment after
/// the last handle is dropped: a store closed and reopened in one process (a restart in
/// tests, a reopen after migration) would otherwise fail at random. A second daemon on the
/// same folder still gets the "another boa-exchange" error, after the wait.
pub(super) fn open_db_waiting_for_lock(db_path: &Path) -> Result<sled::Db> {
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

impl SledStore {
    /// Opens (creating if needed) the store in `data_dir` with the identity at `identity_file`.
    ///
    /// # Errors
    /// Unusable folder, sled failure (e.g. another daemon holds the lock), a newer schema, a
    /// missing or wrong identity while encrypted data exists.
    pub fn open(data_dir: &Path, identity_file: &Path) -> Result<SledStore> {
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
    pub fn open_temporary() -> Result<SledStore> {
        let db = sled::Config::new().temporary(true).open()?;
        Self::with_db(db, PathBuf::from("<temporary>"), Vault::generate())
    }

    pub(super) fn with_db(db: sled::Db, path: PathBuf, vault: Vault) -> Result<SledStore> {
        let store = SledStore {
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
            facts_generation: std::sync::atomic::AtomicU64::new(0),
            tally: std::sync::Mutex::new(tally::Tally::default()),
        };
        store.check_schema()?;
        Ok(store)
    }

    pub(super) fn check_schema(&self) -> Result<()> {
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
pub(super) fn migrate(store: &SledStore, from: u32) -> Result<()> {
    tracing::info!(from, to = SCHEMA_VERSION, "migrating store schema");
    if from < 2 {
        let companies = upgrade_tree::<Company, v1::Company>(&store.companies, keys::COMPANIES)?;
        let logs = upgrade_tree::<LogRecord, v1::LogRecord>(&store.logs, keys::LOGS)?;
        tracing::info!(companies, logs, "store schema 1 → 2: records rewritten");
    }
    Ok(())
}

/// Rewrites every record of `tree` that decodes as `Old` but not as `New`; returns how many.
pub(super) fn upgrade_tree<New, Old>(tree: &sled::Tree, name: &'static str) -> Result<usize>
where
    New: Serialize + DeserializeOwned,
    Old: DeserializeOwned + Into<New>,
{
    let mut n = 0;
    for r in super::paced(tree, tree.iter()) {
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
