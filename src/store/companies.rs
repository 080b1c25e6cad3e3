//! Company records: reads, paged and streaming scans, saves and updates (kept in step with
//! the tally), disconnect and removal.

use super::*;

impl SledStore {
    // ---------------------------------------------------------------- companies and tokens
    /// One company.
    ///
    /// # Errors
    /// sled or decode failure.
    pub fn company(&self, realm: &str) -> Result<Option<Company>> {
        Self::get(&self.companies, keys::COMPANIES, realm.as_bytes())
    }

    /// Every company that decodes, in realm order. Undecodable records are skipped, logged
    /// and counted (see [`SledStore::companies_scan`]); one bad record never hides the others.
    ///
    /// # Errors
    /// sled failure.
    pub fn companies(&self) -> Result<Vec<Company>> {
        Ok(self.companies_scan()?.0)
    }

    /// Every company that decodes, in realm order, and the records that do not. Each bad
    /// record is logged with its key the first time a scan meets it, and counted in
    /// [`SledStore::bad_records_seen`]; [`SledStore::bad_records`] lists those of the latest scans.
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
    /// returns the records that do not decode, noted as by [`SledStore::companies_scan`].
    ///
    /// # Errors
    /// sled failure (a decode failure is not an error here).
    pub fn each_company(&self, mut visit: impl FnMut(Company)) -> Result<Vec<BadRecord>> {
        let mut bad = Vec::new();
        for r in super::paced(&self.companies, self.companies.iter()) {
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
        let range = self
            .companies
            .range::<Vec<u8>, _>((start, Bound::Unbounded));
        for r in super::paced(&self.companies, range) {
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
    pub(super) fn companies_changed(&self) {
        self.companies_generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
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

    /// [`SledStore::update_company`] without the flush, for a caller that flushes once after
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

    pub(super) fn tally(&self) -> std::sync::MutexGuard<'_, tally::Tally> {
        lock(&self.tally)
    }

    /// Writes a company record (not flushed).
    pub(super) fn insert_company(&self, w: &Writer<'_>, c: &Company) -> Result<()> {
        let bytes = codec::encode(c).map_err(Error::codec(keys::COMPANIES))?;
        let key = c.realm_id.as_bytes();
        self.write_company(w, key, Some(c), |w| w.insert(TreeId::Companies, key, bytes))
    }

    /// One write to the companies tree that replaces the record under `key` by `new` (`None`:
    /// removed), run under the tally lock; `write` returns the record it replaced. Counted in
    /// the tally and the companies generation.
    pub(super) fn write_company(
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
}
