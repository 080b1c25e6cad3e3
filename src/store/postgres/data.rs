//! Rates, logs, BoA fixings, scrapes, pending OAuth states and invites, and meta: the sled
//! store's operations of the same names, each write committed before it returns.

use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::GenericClient;
use serde::{de::DeserializeOwned, Serialize};
use tokio_postgres::types::Json;

use super::{Cached, Error, PgStore, Result};
use crate::fixing::{FixingSource, FixingTable, TableKind};
use crate::store::records::{
    CompanyRate, LogKind, LogRecord, PendingAuth, ScrapeRecord, StoredTable,
};
use crate::store::{codec, keys, TableOutcome};

/// A table kind as stored: the byte the sled keys sort it under (`M`, `m`).
pub(super) fn kind_text(kind: TableKind) -> String {
    char::from(keys::kind_byte(kind)).to_string()
}

/// A log kind as stored (its serde name).
pub(super) fn log_kind_text(kind: LogKind) -> String {
    match kind {
        LogKind::Scraping => "Scraping",
        LogKind::Syncing => "Syncing",
        LogKind::Connection => "Connection",
        LogKind::Drift => "Drift",
    }
    .to_string()
}

/// When a pending entry expires, and whether it is an invite.
pub(super) fn pending_facts(p: &PendingAuth) -> (DateTime<Utc>, bool) {
    match p {
        PendingAuth::State { expires_at, .. } | PendingAuth::InvitedState { expires_at, .. } => {
            (*expires_at, false)
        }
        PendingAuth::Invite { expires_at, .. } => (*expires_at, true),
    }
}

/// Decodes column 0 of `row` (a jsonb record).
fn decode<T: DeserializeOwned>(
    row: &tokio_postgres::Row,
    table: &'static str,
    key: impl FnOnce() -> String,
) -> Result<T> {
    let v: serde_json::Value = row.try_get(0)?;
    serde_json::from_value(v).map_err(|e| Error::record(table, key())(e.to_string()))
}

pub(super) async fn upsert_rate(
    c: &impl GenericClient,
    realm: &str,
    r: &CompanyRate,
) -> Result<()> {
    c.execute_cached(
        "INSERT INTO rates (realm, date, currency, record, synced, fixing_kind, fixing_date)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (realm, date, currency) DO UPDATE SET record = EXCLUDED.record,
             synced = EXCLUDED.synced, fixing_kind = EXCLUDED.fixing_kind,
             fixing_date = EXCLUDED.fixing_date",
        &[
            &realm,
            &r.date,
            &r.currency.as_str(),
            &Json(r),
            &r.synced,
            &kind_text(r.fixing.0),
            &r.fixing.1,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn insert_log(c: &impl GenericClient, realm: &str, rec: &LogRecord) -> Result<()> {
    c.execute_cached(
        "INSERT INTO logs (realm, kind, success, record) VALUES ($1, $2, $3, $4)",
        &[&realm, &log_kind_text(rec.kind), &rec.success, &Json(rec)],
    )
    .await?;
    Ok(())
}

pub(super) async fn upsert_table(c: &impl GenericClient, t: &StoredTable) -> Result<()> {
    c.execute_cached(
        "INSERT INTO fixings (kind, date, record) VALUES ($1, $2, $3)
         ON CONFLICT (kind, date) DO UPDATE SET record = EXCLUDED.record",
        &[&kind_text(t.table.kind), &t.table.date, &Json(t)],
    )
    .await?;
    Ok(())
}

pub(super) async fn insert_scrape(c: &impl GenericClient, rec: &ScrapeRecord) -> Result<()> {
    c.execute_cached("INSERT INTO scrapes (record) VALUES ($1)", &[&Json(rec)])
        .await?;
    Ok(())
}

pub(super) async fn upsert_pending(
    c: &impl GenericClient,
    key: &str,
    p: &PendingAuth,
) -> Result<()> {
    let (expires_at, invite) = pending_facts(p);
    c.execute_cached(
        "INSERT INTO pending (key, invite, expires_at, record) VALUES ($1, $2, $3, $4)
         ON CONFLICT (key) DO UPDATE SET invite = EXCLUDED.invite,
             expires_at = EXCLUDED.expires_at, record = EXCLUDED.record",
        &[&key, &invite, &expires_at, &Json(p)],
    )
    .await?;
    Ok(())
}

pub(super) async fn upsert_meta(c: &impl GenericClient, key: &str, value: &[u8]) -> Result<()> {
    c.execute_cached(
        "INSERT INTO meta (key, value) VALUES ($1, $2)
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        &[&key, &value],
    )
    .await?;
    Ok(())
}

fn rates_of(rows: &[tokio_postgres::Row], realm: &str) -> Result<Vec<CompanyRate>> {
    rows.iter()
        .map(|r| decode(r, "rates", || realm.to_string()))
        .collect()
}

impl PgStore {
    // ---------------------------------------------------------------- meta

    /// A daemon-wide value (the same bytes as sled's meta tree, the codec's encoding).
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`], [`Error::Record`].
    pub async fn meta_get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let c = self.client().await?;
        let row = c
            .query_opt_cached("SELECT value FROM meta WHERE key = $1", &[&key])
            .await?;
        match row {
            None => Ok(None),
            Some(r) => codec::decode(r.try_get::<_, &[u8]>(0)?)
                .map(Some)
                .map_err(|e| Error::record("meta", key)(e.to_string())),
        }
    }

    /// Sets a daemon-wide value, committed.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`], [`Error::Record`].
    pub async fn meta_put<T: Serialize>(&self, key: &str, v: &T) -> Result<()> {
        let bytes = codec::encode(v).map_err(|e| Error::record("meta", key)(e.to_string()))?;
        let c = self.client().await?;
        upsert_meta(&c, key, &bytes).await
    }

    /// A secret kept in meta, encrypted with the vault.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`], [`Error::Crypto`].
    pub async fn meta_secret(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let c = self.client().await?;
        let row = c
            .query_opt_cached("SELECT value FROM meta WHERE key = $1", &[&key])
            .await?;
        match row {
            None => Ok(None),
            Some(r) => Ok(Some(self.vault.decrypt(r.try_get::<_, &[u8]>(0)?)?)),
        }
    }

    /// Stores a secret in meta, encrypted, committed.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`], [`Error::Crypto`].
    pub async fn put_meta_secret(&self, key: &str, plaintext: &[u8]) -> Result<()> {
        let ct = self.vault.encrypt(plaintext)?;
        let c = self.client().await?;
        upsert_meta(&c, key, &ct).await
    }

    // ---------------------------------------------------------------- rates

    /// Upserts a company's rates in one transaction, a relaxed commit (not flushed, as in
    /// the sled store: the caller flushes once per sync; see [`PgStore::relaxed_tx`]).
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`].
    pub async fn put_rates(&self, realm: &str, rates: &[CompanyRate]) -> Result<()> {
        let mut c = self.client().await?;
        let tx = PgStore::relaxed_tx(&mut c).await?;
        for r in rates {
            upsert_rate(&tx, realm, r).await?;
        }
        self.commit_relaxed(tx).await
    }

    /// Marks as not synced every company rate that the table of `kind` dated `date`
    /// supersedes (the sled store's rule); returns how many rows changed. One statement.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`].
    pub async fn invalidate_rates(
        &self,
        kind: TableKind,
        date: NaiveDate,
        revised: bool,
    ) -> Result<usize> {
        let c = self.client().await?;
        let n = c
            .execute_cached(
                "UPDATE rates SET synced = false,
                     record = jsonb_set(jsonb_set(record, '{synced}', 'false'), '{synced_at}', 'null')
                 WHERE synced AND fixing_kind = $1
                   AND (($3 AND fixing_date = $2) OR (fixing_date < $2 AND date >= $2))",
                &[&kind_text(kind), &date, &revised],
            )
            .await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// A company's stored rates for one date, by currency.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`], [`Error::Record`].
    pub async fn rates_on(&self, realm: &str, date: NaiveDate) -> Result<Vec<CompanyRate>> {
        let c = self.client().await?;
        let rows = c
            .query_cached(
                "SELECT record FROM rates WHERE realm = $1 AND date = $2 ORDER BY currency",
                &[&realm, &date],
            )
            .await?;
        rates_of(&rows, realm)
    }

    /// A company's stored rates dated `from` to `to` (inclusive), by date then currency.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`], [`Error::Record`].
    pub async fn rates_between(
        &self,
        realm: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<CompanyRate>> {
        let c = self.client().await?;
        let rows = c
            .query_cached(
                "SELECT record FROM rates WHERE realm = $1 AND date BETWEEN $2 AND $3
                 ORDER BY date, currency",
                &[&realm, &from, &to],
            )
            .await?;
        rates_of(&rows, realm)
    }

    /// `(total, synced)` rate rows of a company.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`].
    pub async fn rate_counts(&self, realm: &str) -> Result<(u64, u64)> {
        let c = self.client().await?;
        let row = c
            .query_one_cached(
                "SELECT count(*), count(*) FILTER (WHERE synced) FROM rates WHERE realm = $1",
                &[&realm],
            )
            .await?;
        let n = |i| -> Result<u64> { Ok(u64::try_from(row.try_get::<_, i64>(i)?).unwrap_or(0)) };
        Ok((n(0)?, n(1)?))
    }

    /// Dates for which a company has every stored rate synced, oldest first.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`].
    pub async fn synced_dates(&self, realm: &str) -> Result<Vec<NaiveDate>> {
        let c = self.client().await?;
        let rows = c
            .query_cached(
                "SELECT date FROM rates WHERE realm = $1 GROUP BY date HAVING bool_and(synced)
                 ORDER BY date",
                &[&realm],
            )
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    // ---------------------------------------------------------------- logs

    /// Appends to a company's log, a relaxed commit (not flushed, as in the sled store; see
    /// [`PgStore::relaxed_tx`]).
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`].
    pub async fn append_log(&self, realm: &str, rec: &LogRecord) -> Result<()> {
        let mut c = self.client().await?;
        let tx = PgStore::relaxed_tx(&mut c).await?;
        insert_log(&tx, realm, rec).await?;
        self.commit_relaxed(tx).await
    }

    /// A company's newest log records, newest first.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`], [`Error::Record`].
    pub async fn logs(&self, realm: &str, limit: usize) -> Result<Vec<LogRecord>> {
        let c = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = c
            .query_cached(
                "SELECT record FROM logs WHERE realm = $1 ORDER BY id DESC LIMIT $2",
                &[&realm, &limit],
            )
            .await?;
        rows.iter()
            .map(|r| decode(r, "logs", || realm.to_string()))
            .collect()
    }

    /// `(attempts, successful)` of one kind in a company's log.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`].
    pub async fn log_counts(&self, realm: &str, kind: LogKind) -> Result<(u64, u64)> {
        let c = self.client().await?;
        let row = c
            .query_one_cached(
                "SELECT count(*), count(*) FILTER (WHERE success) FROM logs
                 WHERE realm = $1 AND kind = $2",
                &[&realm, &log_kind_text(kind)],
            )
            .await?;
        let n = |i| -> Result<u64> { Ok(u64::try_from(row.try_get::<_, i64>(i)?).unwrap_or(0)) };
        Ok((n(0)?, n(1)?))
    }

    // ---------------------------------------------------------------- BoA fixings

    /// Stores a scraped table with the sled store's rules (new date → stored; same rates →
    /// nothing; different rates → a new revision, the old one kept; a workbook row never
    /// overwrites), under a row lock so two nodes storing the same date do not lose a
    /// revision.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`], [`Error::Record`].
    pub async fn put_table(
        &self,
        table: &FixingTable,
        source: &FixingSource,
        now: DateTime<Utc>,
    ) -> Result<TableOutcome> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let kind = kind_text(table.kind);
        // Serializes writers of this date even when no row exists yet.
        let lock_key = format!("fixing {kind} {}", table.date);
        tx.execute_cached("SELECT pg_advisory_xact_lock(hashtext($1))", &[&lock_key])
            .await?;
        let row = tx
            .query_opt_cached(
                "SELECT record FROM fixings WHERE kind = $1 AND date = $2",
                &[&kind, &table.date],
            )
            .await?;
        let existing: Option<StoredTable> = row
            .map(|r| decode(&r, "fixings", || lock_key.clone()))
            .transpose()?;
        let (write, outcome) = crate::store::tables::revise(existing, table, source, now);
        if let Some(record) = write {
            upsert_table(&tx, &record).await?;
            tx.commit().await?;
        }
        Ok(outcome)
    }

    async fn one_table(
        &self,
        sql: &str,
        kind: TableKind,
        date: NaiveDate,
    ) -> Result<Option<StoredTable>> {
        let c = self.client().await?;
        let row = c.query_opt_cached(sql, &[&kind_text(kind), &date]).await?;
        row.map(|r| decode(&r, "fixings", || date.to_string()))
            .transpose()
    }

    /// The stored table of a kind for exactly `date`.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`], [`Error::Record`].
    pub async fn table(&self, kind: TableKind, date: NaiveDate) -> Result<Option<StoredTable>> {
        self.one_table(
            "SELECT record FROM fixings WHERE kind = $1 AND date = $2",
            kind,
            date,
        )
        .await
    }

    /// The newest stored table of a kind dated on or before `date`.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`], [`Error::Record`].
    pub async fn table_on_or_before(
        &self,
        kind: TableKind,
        date: NaiveDate,
    ) -> Result<Option<StoredTable>> {
        self.one_table(
            "SELECT record FROM fixings WHERE kind = $1 AND date <= $2 ORDER BY date DESC LIMIT 1",
            kind,
            date,
        )
        .await
    }

    /// The first stored table of a kind dated strictly after `date` (what the sled store's
    /// `table_after` answers: the next one).
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`], [`Error::Record`].
    pub async fn table_after(
        &self,
        kind: TableKind,
        date: NaiveDate,
    ) -> Result<Option<StoredTable>> {
        self.one_table(
            "SELECT record FROM fixings WHERE kind = $1 AND date > $2 ORDER BY date LIMIT 1",
            kind,
            date,
        )
        .await
    }

    /// Dates of every stored table of a kind, oldest first.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`].
    pub async fn table_dates(&self, kind: TableKind) -> Result<Vec<NaiveDate>> {
        let c = self.client().await?;
        let rows = c
            .query_cached(
                "SELECT date FROM fixings WHERE kind = $1 ORDER BY date",
                &[&kind_text(kind)],
            )
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Number of stored tables (both kinds; a few thousand rows at most).
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`].
    pub async fn table_count(&self) -> Result<usize> {
        let c = self.client().await?;
        let n: i64 = c
            .query_one_cached("SELECT count(*) FROM fixings", &[])
            .await?
            .try_get(0)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Appends to the global scrape log, committed.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`].
    pub async fn append_scrape(&self, rec: &ScrapeRecord) -> Result<()> {
        let c = self.client().await?;
        insert_scrape(&c, rec).await
    }

    /// Newest scrape records, newest first.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`], [`Error::Record`].
    pub async fn scrapes(&self, limit: usize) -> Result<Vec<ScrapeRecord>> {
        let c = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = c
            .query_cached(
                "SELECT record FROM scrapes ORDER BY id DESC LIMIT $1",
                &[&limit],
            )
            .await?;
        rows.iter()
            .map(|r| decode(r, "scrapes", String::new))
            .collect()
    }

    // ---------------------------------------------------------------- OAuth states

    /// Records a pending state or invite, committed.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`].
    pub async fn put_pending(&self, key: &str, p: &PendingAuth) -> Result<()> {
        let c = self.client().await?;
        upsert_pending(&c, key, p).await
    }

    /// A pending OAuth state or invite, left in place.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`], [`Error::Record`].
    pub async fn pending(&self, key: &str) -> Result<Option<PendingAuth>> {
        let c = self.client().await?;
        let row = c
            .query_opt_cached("SELECT record FROM pending WHERE key = $1", &[&key])
            .await?;
        row.map(|r| decode(&r, "pending", || "<secret>".into()))
            .transpose()
    }

    /// Removes and returns a pending OAuth state or invite: single use across every node (one
    /// `DELETE … RETURNING`: two nodes taking the same state, one gets it).
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`], [`Error::Record`].
    pub async fn take_pending(&self, key: &str) -> Result<Option<PendingAuth>> {
        let c = self.client().await?;
        let row = c
            .query_opt_cached(
                "DELETE FROM pending WHERE key = $1 RETURNING record",
                &[&key],
            )
            .await?;
        row.map(|r| decode(&r, "pending", || "<secret>".into()))
            .transpose()
    }

    /// Drops expired states and invites; returns how many.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`].
    pub async fn purge_expired_pending(&self, now: DateTime<Utc>) -> Result<usize> {
        let c = self.client().await?;
        let n = c
            .execute_cached("DELETE FROM pending WHERE expires_at < $1", &[&now])
            .await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_stored_as_they_sort_in_sled() {
        assert_eq!(kind_text(TableKind::Main), "M");
        assert_eq!(kind_text(TableKind::Minor), "m");
        assert!(kind_text(TableKind::Main) < kind_text(TableKind::Minor));
        for k in [
            LogKind::Scraping,
            LogKind::Syncing,
            LogKind::Connection,
            LogKind::Drift,
        ] {
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::Value::String(log_kind_text(k))
            );
        }
    }
}
