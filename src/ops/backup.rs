//! Backup and restore (SPEC §12): the daemon's side of `backup` (the store's consistent copy
//! as a stream of lines) and the offline `restore` into an empty store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{ApiError, Ctx};
use crate::config::Config;
use crate::crypto::Vault;
use crate::store::{self, backup};

pub use crate::store::backup::{Contents, ReadError, Verifier, MAX_LINE};

/// Lines buffered between the walk and the socket (each a record, well under 4 KiB).
const IN_FLIGHT: usize = 64;

/// The lines of a running backup, header to trailer; an `Err` item ends it early.
pub struct Lines(mpsc::Receiver<Result<Vec<u8>, ApiError>>);

impl Lines {
    /// The next line; `None` after the trailer (or after an error item).
    pub async fn next(&mut self) -> Option<Result<Vec<u8>, ApiError>> {
        self.0.recv().await
    }
}

/// Starts a backup on a blocking thread (a tracked task: shutdown waits for it, and it ends
/// as soon as its reader drops the [`Lines`]). The first item is the header, or the reason
/// there is none (409 `backup_running` while another runs).
pub fn stream(ctx: &Ctx) -> Lines {
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    let store = ctx.store.clone();
    let now = ctx.clock.now();
    ctx.tasks.spawn(async move {
        let started = std::time::Instant::now();
        let (lines, mut from_store) = mpsc::channel::<Vec<u8>>(IN_FLIGHT);
        let forward = {
            let tx = tx.clone();
            async move {
                while let Some(line) = from_store.recv().await {
                    if tx.send(Ok(line)).await.is_err() {
                        break;
                    }
                }
            }
        };
        let (result, ()) = tokio::join!(store.backup(now, lines), forward);
        match result {
            Ok(w) => tracing::info!(
                records = w.records,
                skipped = w.skipped,
                secs = started.elapsed().as_secs_f64(),
                "backup sent"
            ),
            Err(
                store::Error::BackupAborted
                | store::Error::Postgres(store::postgres::Error::BackupAborted),
            ) => {
                tracing::warn!("backup cut short: the client went away");
            }
            Err(e) => {
                let _ = tx.send(Err(ApiError::from(e))).await;
            }
        }
    });
    Lines(rx)
}

/// What `restore` did (or, with `--dry-run`, would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreAnswer {
    /// The backup's instant.
    pub backup_created_at: chrono::DateTime<chrono::Utc>,
    /// Records per kind.
    pub counts: BTreeMap<String, u64>,
    /// The daemon version that wrote it.
    pub daemon_version: String,
    /// Nothing was written.
    pub dry_run: bool,
    /// The backup file.
    pub file: String,
    /// Records in it.
    pub records: u64,
    /// Its sha256 (the trailer's).
    pub sha256: String,
    /// The store restored into.
    pub target: String,
}

/// Why a restore did not happen (every one exits 1, SPEC §12). Nothing was written, except
/// for [`RestoreError::Partial`].
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The file cannot be opened or read.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The file is not a sound backup.
    #[error("{path}: {source}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// Where and what.
        source: ReadError,
    },
    /// The configured identity is not the one the backup's tokens are encrypted to.
    #[error("{0}")]
    Identity(String),
    /// The target store cannot be opened.
    #[error("{0}")]
    Store(#[from] store::Error),
    /// The target store holds data.
    #[error("the store in {path} is not empty ({entries} records): restore goes only into an empty store (a new data_dir, or move this one aside)")]
    NotEmpty {
        /// The folder.
        path: PathBuf,
        /// Entries found.
        entries: u64,
    },
    /// PostgreSQL refused or failed (nothing is written: the restore is one transaction).
    #[error("{target}: {message} (nothing was written)")]
    Postgres {
        /// The database, password hidden.
        target: String,
        /// Why.
        message: String,
    },
    /// Writing failed after it began: the target holds part of the backup.
    #[error("the restore failed after writing began ({reason}); the store in {path} holds part of the backup: remove that folder and restore again")]
    Partial {
        /// The folder.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl RestoreError {
    /// The exit code (SPEC §12: 1 for every failure).
    pub fn exit_code(&self) -> u8 {
        1
    }
}

fn open_file(path: &Path) -> Result<std::io::BufReader<std::fs::File>, RestoreError> {
    let err = |message: String| RestoreError::File {
        path: path.to_path_buf(),
        message,
    };
    if path.is_dir() {
        return Err(err("is a directory, not a backup file".into()));
    }
    let f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    Ok(std::io::BufReader::with_capacity(1 << 20, f))
}

/// The identity the config names, which must be the backup's.
fn identity(config: &Config, header: &backup::Header) -> Result<Vault, RestoreError> {
    let path = &config.storage.identity_file;
    if !path.exists() {
        return Err(RestoreError::Identity(format!(
            "the identity file {} is missing: a restore needs the identity this backup was made with (public key {}); put it there first",
            path.display(),
            header.identity_recipient
        )));
    }
    let vault = Vault::load(path).map_err(|e| RestoreError::Identity(e.to_string()))?;
    if vault.recipient() != header.identity_recipient {
        return Err(RestoreError::Identity(format!(
            "the identity file {} (public key {}) is not the one this backup was made with (public key {}): its tokens would not decrypt; configure the right identity_file",
            path.display(),
            vault.recipient(),
            header.identity_recipient
        )));
    }
    Ok(vault)
}

/// `restore FILE [--dry-run]`, daemon stopped: reads and checks the whole file, the identity
/// and that the configured store is empty before writing anything; then writes every record
/// and flushes. With `dry_run`, every check and no write (a store folder that does not exist
/// yet is not created).
///
/// # Errors
/// See [`RestoreError`].
pub fn restore(config: &Config, file: &Path, dry_run: bool) -> Result<RestoreAnswer, RestoreError> {
    let bad = |source: ReadError| RestoreError::Bad {
        path: file.to_path_buf(),
        source,
    };
    let header = backup::read_header(open_file(file)?).map_err(bad)?;
    let vault = identity(config, &header)?;
    let checked =
        backup::read(open_file(file)?, |r| backup::check_record(&vault, &r)).map_err(bad)?;
    if let crate::config::Backend::Postgres { url } = &config.storage.backend {
        let target = redacted(url.expose());
        if dry_run {
            ensure_postgres_empty(url.expose(), &target)?;
        } else {
            restore_postgres(url.expose(), vault, file, &checked.sha256, &target)?;
        }
        return Ok(answer(file, checked, dry_run, target));
    }
    let data_dir = &config.storage.data_dir;
    let store = if dry_run && !data_dir.join("db").exists() {
        None
    } else {
        let s = store::SledStore::open(data_dir, &config.storage.identity_file)?;
        let entries = s.entries()?;
        if entries > 0 {
            return Err(RestoreError::NotEmpty {
                path: data_dir.clone(),
                entries,
            });
        }
        Some(s)
    };
    if let (Some(s), false) = (&store, dry_run) {
        let partial = |reason: String| RestoreError::Partial {
            path: data_dir.clone(),
            reason,
        };
        let written = backup::read(open_file(file)?, |r| {
            s.restore_record(&r).map_err(|e| e.to_string())
        })
        .map_err(|e| partial(e.to_string()))?;
        if written.sha256 != checked.sha256 {
            return Err(partial("the file changed while it was read".into()));
        }
        s.flush_blocking().map_err(|e| partial(e.to_string()))?;
        tracing::info!(records = written.records, "backup restored");
    }
    Ok(answer(
        file,
        checked,
        dry_run,
        data_dir.display().to_string(),
    ))
}

/// What `restore` answers once the file is checked (and, unless a dry run, written).
fn answer(file: &Path, checked: Contents, dry_run: bool, target: String) -> RestoreAnswer {
    RestoreAnswer {
        backup_created_at: checked.header.created_at,
        counts: checked
            .counts
            .iter()
            .map(|(k, v)| ((*k).to_string(), *v))
            .collect(),
        daemon_version: checked.header.daemon_version,
        dry_run,
        file: file.display().to_string(),
        records: checked.records,
        sha256: checked.sha256,
        target,
    }
}

/// A PostgreSQL URL without its password, to name the target.
fn redacted(url: &str) -> String {
    crate::store::postgres::without_password(url)
}

/// The check a `--dry-run` into PostgreSQL makes of its target: empty (or without the
/// daemon's tables), read without creating or migrating anything.
fn ensure_postgres_empty(url: &str, target: &str) -> Result<(), RestoreError> {
    let failed = |message: String| RestoreError::Postgres {
        target: target.to_string(),
        message,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| failed(format!("cannot start the runtime: {e}")))?;
    let entries = rt
        .block_on(crate::store::postgres::PgStore::entries_at(url))
        .map_err(|e| failed(e.to_string()))?;
    if entries > 0 {
        return Err(RestoreError::NotEmpty {
            path: PathBuf::from(target),
            entries,
        });
    }
    Ok(())
}

/// Restore into an empty PostgreSQL database: the whole file is checked again inside one
/// transaction, committed only after its trailer checks, so a failure writes nothing.
fn restore_postgres(
    url: &str,
    vault: Vault,
    file: &Path,
    sha256: &str,
    target: &str,
) -> Result<(), RestoreError> {
    use crate::store::postgres::{Error as PgError, PgStore};
    let failed = |e: PgError| RestoreError::Postgres {
        target: target.to_string(),
        message: e.to_string(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RestoreError::Postgres {
            target: target.to_string(),
            message: format!("cannot start the runtime: {e}"),
        })?;
    rt.block_on(async {
        let pg = PgStore::open(url, vault).await.map_err(failed)?;
        let entries = pg.entries().await.map_err(failed)?;
        if entries > 0 {
            return Err(RestoreError::NotEmpty {
                path: PathBuf::from(target),
                entries,
            });
        }
        let input = open_file(file)?;
        let written = pg.restore(input).await.map_err(failed)?;
        if written.sha256 != sha256 {
            return Err(RestoreError::Postgres {
                target: target.to_string(),
                message: "the file changed while it was read".into(),
            });
        }
        tracing::info!(records = written.records, "backup restored into PostgreSQL");
        Ok(())
    })
}
