//! Backup and restore on PostgreSQL, in the backup format of [`crate::store::backup`]: the
//! same header, records and trailer as the sled store writes, so a backup of either backend
//! restores into the other.
//!
//! A backup is one `REPEATABLE READ READ ONLY` transaction (one snapshot: every record as of
//! one instant, while writers go on) read table by table through a portal, 256 rows at a
//! time: memory does not grow with the store. A restore is one transaction into an empty
//! database: it commits only after the trailer was checked, so a bad file writes nothing.

use std::future::Future;
use std::io::BufRead;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio_postgres::IsolationLevel;

use super::companies::{upsert_ciphertext, upsert_company};
use super::data::{
    insert_log, insert_scrape, upsert_meta, upsert_pending, upsert_rate, upsert_table,
};
use super::{Error, PgStore, Result};
use crate::store::backup::{
    b64, check_record, unb64, unseal, Contents, Header, Record, SealedPending, Trailer, Verifier,
    Written, MAX_LINE, OWN_META,
};
use crate::store::records::PendingAuth;

/// Rows fetched per round trip while a backup walks a table.
const BATCH: i32 = 256;

/// The tables in backup order (the order of the sled trees), each with the query that walks
/// it in key order (the sled keys' byte order: every key column is `COLLATE "C"`).
const WALK: [(Table, &str); 8] = [
    (
        Table::Companies,
        "SELECT realm, record FROM companies ORDER BY realm",
    ),
    (
        Table::Tokens,
        "SELECT realm, ciphertext FROM tokens ORDER BY realm",
    ),
    (
        Table::Rates,
        "SELECT realm, record FROM rates ORDER BY realm, date, currency",
    ),
    (
        Table::Logs,
        "SELECT realm, record FROM logs ORDER BY realm, id",
    ),
    (
        Table::Fixings,
        "SELECT kind, record FROM fixings ORDER BY kind, date",
    ),
    (
        Table::Scrapes,
        "SELECT id::text, record FROM scrapes ORDER BY id",
    ),
    (
        Table::Pending,
        "SELECT key, record FROM pending ORDER BY key",
    ),
    (
        Table::Meta,
        "SELECT key, value FROM meta WHERE key <> ALL($1) ORDER BY key",
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Companies,
    Tokens,
    Rates,
    Logs,
    Fixings,
    Scrapes,
    Pending,
    Meta,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Companies => "companies",
            Table::Tokens => "tokens",
            Table::Rates => "rates",
            Table::Logs => "logs",
            Table::Fixings => "fixings",
            Table::Scrapes => "scrapes",
            Table::Pending => "pending",
            Table::Meta => "meta",
        }
    }
}

/// Hashes lines as they are handed on.
struct Sink<F> {
    emit: F,
    hash: Sha256,
}

impl<F, Fut> Sink<F>
where
    F: FnMut(Vec<u8>) -> Fut,
    Fut: Future<Output = bool>,
{
    async fn line(&mut self, value: &impl serde::Serialize) -> Result<()> {
        let mut line = serde_json::to_vec(value).map_err(|e| Error::Backup(e.to_string()))?;
        line.push(b'\n');
        self.hash.update(&line);
        if (self.emit)(line).await {
            Ok(())
        } else {
            Err(Error::BackupAborted)
        }
    }
}

impl PgStore {
    /// The record of one row; `Err` for a row that does not decode (left out and logged, as
    /// the sled store does).
    fn to_record(
        &self,
        table: Table,
        row: &tokio_postgres::Row,
    ) -> std::result::Result<Record, String> {
        let key: String = row.try_get(0).map_err(|e| e.to_string())?;
        let json = || -> std::result::Result<serde_json::Value, String> {
            row.try_get(1).map_err(|e| e.to_string())
        };
        Ok(match table {
            Table::Companies => Record::Company {
                company: from_json(json()?)?,
            },
            Table::Tokens => Record::Tokens {
                realm: key,
                ciphertext: b64(row.try_get::<_, &[u8]>(1).map_err(|e| e.to_string())?),
            },
            Table::Rates => Record::Rate {
                realm: key,
                rate: from_json(json()?)?,
            },
            Table::Logs => Record::Log {
                realm: key,
                log: from_json(json()?)?,
            },
            Table::Fixings => Record::Fixing {
                table: from_json(json()?)?,
            },
            Table::Scrapes => Record::Scrape {
                scrape: from_json(json()?)?,
            },
            Table::Pending => {
                let pending: PendingAuth = from_json(json()?)?;
                let invite = matches!(pending, PendingAuth::Invite { .. });
                let plain = serde_json::to_vec(&SealedPending { key, pending })
                    .map_err(|e| e.to_string())?;
                let sealed = b64(&self.vault.encrypt(&plain).map_err(|e| e.to_string())?);
                if invite {
                    Record::Invite { sealed }
                } else {
                    Record::OauthState { sealed }
                }
            }
            Table::Meta => Record::Meta {
                key,
                value: b64(row.try_get::<_, &[u8]>(1).map_err(|e| e.to_string())?),
            },
        })
    }

    /// Writes a consistent copy of the whole database as backup lines (each with its `\n`,
    /// the format of [`crate::store::backup`], `"backend": "postgres"`) to `emit`, which
    /// answers false to stop (its reader went away). Several backups may run at once (each
    /// is its own snapshot); writers are never blocked.
    ///
    /// # Errors
    /// [`Error::BackupAborted`] when `emit` stops; [`Error::Unavailable`], [`Error::Db`].
    pub async fn backup<F, Fut>(&self, now: DateTime<Utc>, emit: F) -> Result<Written>
    where
        F: FnMut(Vec<u8>) -> Fut,
        Fut: Future<Output = bool>,
    {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let mut sink = Sink {
            emit,
            hash: Sha256::new(),
        };
        sink.line(&Header::ours(now, self.vault.recipient(), "postgres"))
            .await?;
        let own: Vec<String> = OWN_META.iter().map(|s| (*s).to_string()).collect();
        let (mut records, mut skipped) = (0u64, 0u64);
        for (table, sql) in WALK {
            let stmt = tx.prepare(sql).await?;
            let portal = if table == Table::Meta {
                tx.bind(&stmt, &[&own]).await?
            } else {
                tx.bind(&stmt, &[]).await?
            };
            loop {
                let rows = tx.query_portal(&portal, BATCH).await?;
                if rows.is_empty() {
                    break;
                }
                for row in &rows {
                    match self.to_record(table, row) {
                        Ok(rec) => {
                            sink.line(&rec).await?;
                            records += 1;
                        }
                        Err(e) => {
                            skipped += 1;
                            tracing::warn!(table = table.name(), error = %e, "backup: undecodable record left out");
                        }
                    }
                }
            }
        }
        // Read only: nothing to commit; ending it releases the snapshot.
        tx.rollback().await?;
        let sha256 = hex::encode(sink.hash.clone().finalize());
        sink.line(&Trailer {
            end: true,
            records,
            sha256: sha256.clone(),
        })
        .await?;
        Ok(Written {
            records,
            sha256,
            skipped,
        })
    }

    /// How many entries the database holds (the store's own meta keys not counted): a
    /// restore goes only into a database where this is 0.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`].
    pub async fn entries(&self) -> Result<u64> {
        let c = self.client().await?;
        entries_in(&**c).await
    }

    /// [`PgStore::entries`] of the database at `postgres_url` without opening it as a store:
    /// nothing is created or migrated (a database without the daemon's tables holds 0), so a
    /// `restore --dry-run` writes nothing.
    ///
    /// # Errors
    /// [`Error::Url`], [`Error::Tls`], [`Error::Unavailable`], [`Error::Db`].
    pub async fn entries_at(postgres_url: &str) -> Result<u64> {
        let (client, conn) = super::Connector::parse(postgres_url)?.connect().await?;
        let counted = async {
            let ours: bool = client
                .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
                .await?
                .try_get(0)?;
            if ours {
                entries_in(&client).await
            } else {
                Ok(0)
            }
        }
        .await;
        conn.abort();
        counted
    }

    /// True when the database holds nothing but its own meta keys.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`].
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.entries().await? == 0)
    }

    /// Loads a backup into this (empty) database in one transaction: checks the header
    /// (format, version, that its `identity_recipient` is this store's), every line (as
    /// [`crate::store::backup::read`] and [`check_record`] do), the count and the sha256,
    /// writing each record as it is read; commits only when all of it checked. Reads `input`
    /// with blocking calls: for the offline `restore` command, not inside the daemon.
    ///
    /// # Errors
    /// [`Error::NotEmpty`] (nothing written); [`Error::IdentityMismatch`];
    /// [`Error::Backup`] naming the line; [`Error::Unavailable`], [`Error::Db`]. On any error
    /// nothing is committed.
    pub async fn restore(&self, mut input: impl BufRead) -> Result<Contents> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Tables are locked against writers for the whole load: an empty database stays
        // empty until the restore commits (two restores at once: the second waits, then
        // finds data).
        tx.batch_execute(
            "LOCK TABLE companies, tokens, rates, logs, fixings, scrapes, pending, meta
             IN SHARE ROW EXCLUSIVE MODE",
        )
        .await?;
        let entries = entries_in(&*tx).await?;
        if entries > 0 {
            return Err(Error::NotEmpty { entries });
        }
        // Counted once at the end, not by the trigger row by row (see `boa_recount_companies`,
        // which also rebuilds the per-minute waiting counts).
        tx.batch_execute("ALTER TABLE companies DISABLE TRIGGER companies_counts")
            .await?;
        let (sender, received) = std::sync::mpsc::channel::<Record>();
        let vault = &self.vault;
        let mut v = Verifier::new(move |r: Record| {
            check_record(vault, &r)?;
            sender.send(r).map_err(|e| e.to_string())
        });
        let mut buf = Vec::new();
        let mut line = 0u64;
        let bad = |line: u64, reason: String| Error::Backup(format!("line {line}: {reason}"));
        loop {
            buf.clear();
            line += 1;
            let got = std::io::Read::take(&mut input, MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut buf)
                .map_err(|e| bad(line, format!("cannot read: {e}")))?;
            if got == 0 {
                break;
            }
            v.line(&buf).map_err(|e| Error::Backup(e.to_string()))?;
            if line == 1 {
                if let Some(h) = v.header() {
                    if h.identity_recipient != vault.recipient() {
                        return Err(Error::IdentityMismatch {
                            expected: h.identity_recipient.clone(),
                            found: vault.recipient(),
                        });
                    }
                }
            }
            while let Ok(rec) = received.try_recv() {
                restore_one(vault, &tx, &rec)
                    .await
                    .map_err(|e| bad(line, e.to_string()))?;
            }
        }
        let contents = v.finish().map_err(|e| Error::Backup(e.to_string()))?;
        tx.batch_execute(
            "SELECT boa_recount_companies();
             ALTER TABLE companies ENABLE TRIGGER companies_counts",
        )
        .await?;
        tx.commit().await?;
        // Companies were written (the database was empty: none was known bad).
        self.companies_changed();
        Ok(contents)
    }
}

fn from_json<T: serde::de::DeserializeOwned>(
    v: serde_json::Value,
) -> std::result::Result<T, String> {
    serde_json::from_value(v).map_err(|e| e.to_string())
}

/// Entries of every table, the store's own meta keys left out.
async fn entries_in(c: &impl tokio_postgres::GenericClient) -> Result<u64> {
    let own: Vec<String> = OWN_META.iter().map(|s| (*s).to_string()).collect();
    let n: i64 = c
        .query_one(
            "SELECT (SELECT count(*) FROM companies) + (SELECT count(*) FROM tokens)
                  + (SELECT count(*) FROM rates) + (SELECT count(*) FROM logs)
                  + (SELECT count(*) FROM fixings) + (SELECT count(*) FROM scrapes)
                  + (SELECT count(*) FROM pending)
                  + (SELECT count(*) FROM meta WHERE key <> ALL($1))",
            &[&own],
        )
        .await?
        .try_get(0)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Writes one checked record where it belongs.
async fn restore_one(
    vault: &crate::crypto::Vault,
    tx: &deadpool_postgres::Transaction<'_>,
    rec: &Record,
) -> Result<()> {
    let c = tx;
    match rec {
        Record::Company { company } => upsert_company(c, company).await,
        Record::Tokens { realm, ciphertext } => {
            let ct = unb64(ciphertext, "ciphertext").map_err(Error::Backup)?;
            upsert_ciphertext(c, realm, &ct).await
        }
        Record::Rate { realm, rate } => upsert_rate(c, realm, rate).await,
        Record::Log { realm, log } => insert_log(c, realm, log).await,
        Record::Fixing { table } => upsert_table(c, table).await,
        Record::Scrape { scrape } => insert_scrape(c, scrape).await,
        Record::Invite { sealed } | Record::OauthState { sealed } => {
            let p = unseal(vault, sealed).map_err(Error::Backup)?;
            upsert_pending(c, &p.key, &p.pending).await
        }
        Record::Meta { key, value } => {
            let v = unb64(value, "value").map_err(Error::Backup)?;
            upsert_meta(c, key, &v).await
        }
    }
}
