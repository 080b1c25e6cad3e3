//! Stored BoA fixing tables: put (with what changed), by date, on or before, after.

use super::*;

/// The rule of both backends for a scraped or imported table against what is stored for its
/// date: the record to write (`None`: nothing) and what it did. New date → stored; same rates
/// → nothing, unless a scrape confirms an imported table (the page becomes the source);
/// different rates → a new revision, the old one kept; a workbook row for a stored date →
/// never overwrites.
pub(crate) fn revise(
    existing: Option<StoredTable>,
    table: &FixingTable,
    source: &FixingSource,
    now: DateTime<Utc>,
) -> (Option<StoredTable>, TableOutcome) {
    let revision = |previous| StoredTable {
        table: table.clone(),
        source: source.clone(),
        stored_at: now,
        previous,
    };
    match existing {
        None => (Some(revision(Vec::new())), TableOutcome::New),
        Some(_) if matches!(source, FixingSource::Workbook { .. }) => (None, TableOutcome::Skipped),
        Some(old) if old.table.rates == table.rates => {
            if old.table.published_time.is_none() && table.published_time.is_some() {
                let mut rec = old;
                rec.table.published_time = table.published_time;
                rec.source = source.clone();
                (Some(rec), TableOutcome::Unchanged)
            } else {
                (None, TableOutcome::Unchanged)
            }
        }
        Some(old) => {
            let mut previous = old.previous;
            previous.push((old.table, old.source, old.stored_at));
            (Some(revision(previous)), TableOutcome::Revised)
        }
    }
}

impl SledStore {
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
        let (write, outcome) = revise(existing, table, source, now);
        if let Some(record) = write {
            self.put(TreeId::Fixings, &key, &record)?;
        }
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
}
