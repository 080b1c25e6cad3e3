//! Per-company scrape/sync/drift log records and the daemon's scrape records.

use super::*;

impl SledStore {
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
}
