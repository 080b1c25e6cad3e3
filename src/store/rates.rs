//! The rates written to each company: per date and currency, counts and synced dates.

use super::*;

impl SledStore {
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
}
