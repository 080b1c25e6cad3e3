//! One company's sync for one date (SPEC §5), step by step: the fixing in force, a token,
//! the company's preferences and currencies (at most daily), one metered read of D-6…D and
//! the drift it shows, the writes that differ, a re-read when QuickBooks refuses a currency
//! (and, when its home currency changed, the whole sync again for the new one), then the
//! rows and the attempt's records, flushed before the answer.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;

use chrono::{DateTime, NaiveDate, Utc};

use super::engine::{reachable, SyncEngine, CURRENCY_CACHE};
use super::error::Error;
use super::plan::{self, Drift, Want};
use super::session::{Session, Written};
use crate::archive::{self, NoFixing};
use crate::currency::Currency;
use crate::fixing::TableKind;
use crate::locks::lock;
use crate::rates::{company_rates, InForce};
use crate::store::records::{
    Company, CompanyRate as StoredRate, DriftDetail, DriftPolicy, LogKind, LogRecord,
};

/// The routine read covers this many dates ending with the sync's date (D-6…D): drift in
/// any of them is found by the same one metered read.
pub const DRIFT_WINDOW_DAYS: i64 = 7;
/// A drift of the same company and currency within this long of the previous one alerts.
pub(super) const DRIFT_REPEAT: chrono::Duration = chrono::Duration::days(7);
/// Log records looked at for an earlier drift (newest first).
pub(super) const DRIFT_LOOKBACK_RECORDS: usize = 1000;
/// The alert key of repeated drift of one company and currency.
pub(super) fn drift_alert_key(realm: &str, currency: Currency) -> String {
    format!("drift:{realm}:{currency}")
}

/// What one company sync did so far (filled in as it goes, recorded whatever the end).
#[derive(Debug, Default)]
pub(super) struct Attempt {
    pub(super) fixing_ok: bool,
    /// Writes for D.
    pub(super) written: usize,
    /// Rates of D already equal.
    pub(super) unchanged: usize,
    /// Drifts found in D-6…D.
    pub(super) drifts: usize,
    /// Drifts of earlier dates written back.
    pub(super) corrected: usize,
    /// The query was refused: D read by single GETs, drift not checked.
    pub(super) read_fallback: bool,
    pub(super) tids: Vec<String>,
    pub(super) pressure: u32,
}

impl Attempt {
    /// The write loop's counts for D, and the corrections of earlier dates.
    fn count(&mut self, date: NaiveDate, w: &Written) {
        self.written = w.written.iter().filter(|k| k.0 == date).count();
        self.unchanged = w.unchanged.iter().filter(|k| k.0 == date).count();
        self.corrected = w.written.iter().filter(|k| k.0 != date).count();
    }
}

/// How one pass of a company's sync ended.
pub(super) enum PassEnd {
    /// Done (the attempt's counts are final).
    Done,
    /// QuickBooks' home currency changed: compute and write again for the new one.
    Redo,
}

/// What step 6 needs to know of the pass.
struct Rejected<'a> {
    in_force: &'a InForce,
    /// The home currency the pass computed for.
    home: Currency,
    /// Step 3 read the company just now (no second read).
    stale: bool,
    /// A redo is still allowed.
    may_redo: bool,
}

/// What the routine read found (step 4), and what follows from it for the plan and the rows.
struct Window {
    date: NaiveDate,
    holdings: plan::Holdings,
    /// Our confirmed rows of D-6…D (drift checked only).
    confirmed: HashMap<(NaiveDate, Currency), StoredRate>,
    /// (date, currency) that QuickBooks changed after we confirmed them.
    drifted: HashSet<(NaiveDate, Currency)>,
    /// Drifted earlier dates written back (`correct`).
    corrections: Vec<Want>,
    report_only: bool,
}

impl Window {
    /// `report` never overwrites a rate QuickBooks changed after we confirmed it, not even
    /// on D; `correct` writes the older dates back with the routine ones.
    fn held_back(&self, k: &(NaiveDate, Currency)) -> bool {
        self.report_only && self.drifted.contains(k)
    }

    /// What to plan: D's rates not held back, and the corrections.
    fn wants(&self, wanted: &[Want]) -> Vec<Want> {
        wanted
            .iter()
            .filter(|w| !self.held_back(&(w.date, w.currency)))
            .chain(self.corrections.iter())
            .copied()
            .collect()
    }

    /// The rows to store (step 7): D's rates (not skipped, not held back — a held-back row
    /// keeps what we stored, still ours, confirmed once) and the corrected rows, each
    /// confirmed when QuickBooks now holds it.
    fn rows(
        &self,
        wanted: &[Want],
        skipped: &[Currency],
        in_force: &InForce,
        resolved: &archive::Resolved,
        written: &Written,
        now: DateTime<Utc>,
    ) -> Vec<StoredRate> {
        let done = written.confirmed();
        let mut rows: Vec<StoredRate> = wanted
            .iter()
            .filter(|w| !skipped.contains(&w.currency) && !self.held_back(&(self.date, w.currency)))
            .map(|w| {
                let fixing = match in_force.rate(w.currency) {
                    Some(r) => (r.table, r.fixing_date),
                    None => (TableKind::Main, resolved.main.table.date),
                };
                stored_row((self.date, w.currency), w.rate, fixing, &done, now)
            })
            .collect();
        for w in &self.corrections {
            if let Some(row) = self.confirmed.get(&(w.date, w.currency)) {
                rows.push(stored_row(
                    (row.date, row.currency),
                    row.rate,
                    row.fixing,
                    &done,
                    now,
                ));
            }
        }
        rows
    }
}

/// The stored row of a rate we wanted in QuickBooks: confirmed (with `now`) when the write
/// loop found it there afterwards.
pub(super) fn stored_row(
    (date, currency): (NaiveDate, Currency),
    rate: rust_decimal::Decimal,
    fixing: (TableKind, NaiveDate),
    confirmed: &HashSet<(NaiveDate, Currency)>,
    now: DateTime<Utc>,
) -> StoredRate {
    let synced = confirmed.contains(&(date, currency));
    StoredRate {
        date,
        currency,
        rate,
        fixing,
        synced,
        synced_at: synced.then_some(now),
    }
}

impl SyncEngine {
    /// Writes the attempt's two log records (SPEC §5 "Counts": one scraping, one syncing),
    /// flushes, counts and alerts.
    pub(super) async fn record(
        &self,
        realm: &str,
        date: NaiveDate,
        a: &Attempt,
        error: Option<&Error>,
    ) -> Result<(), Error> {
        let now = self.clock.now();
        let synced = a.written + a.unchanged;
        self.store
            .append_log(
                realm,
                &LogRecord {
                    at: now,
                    kind: LogKind::Scraping,
                    success: a.fixing_ok,
                    date: Some(date),
                    message: if a.fixing_ok {
                        format!("fixing in force on {date} obtained")
                    } else {
                        error.map(ToString::to_string).unwrap_or_default()
                    },
                    rates_written: 0,
                    rates_unchanged: 0,
                    intuit_tids: vec![],
                    drift: None,
                },
            )
            .await?;
        self.store.append_log(
            realm,
            &LogRecord {
                at: now,
                kind: LogKind::Syncing,
                success: error.is_none(),
                date: Some(date),
                message: {
                    let mut m = match error {
                        None => format!(
                            "synced {synced} rates ({} written, {} unchanged)",
                            a.written, a.unchanged
                        ),
                        Some(e) => format!("{}: {e}", e.code()),
                    };
                    if a.drifts > 0 {
                        m.push_str(&format!(
                            "; {} drift(s) found, {} corrected",
                            a.drifts, a.corrected
                        ));
                    }
                    if a.read_fallback {
                        m.push_str("; the exchange-rate query was refused: read D by single GETs, drift not checked");
                    }
                    m
                },
                rates_written: a.written as u32,
                rates_unchanged: a.unchanged as u32,
                intuit_tids: a.tids.clone(),
                drift: None,
            },
        ).await?;
        self.store.flush().await?;
        self.metrics.company_sync(error.is_none());
        self.metrics
            .rates_written
            .inc_by((a.written + a.corrected) as u64);
        match error {
            None => {
                tracing::info!(realm_id = realm, fixing_date = %date, rates_written = a.written, "Company {realm}: Successfully synced {synced} rates");
            }
            Some(e) => {
                if *e == Error::ReconnectNeeded {
                    self.alerts.raise(
                        &format!("token:{realm}"),
                        "token_refresh_failed",
                        Some(realm),
                        "Token refresh failed; the company must reconnect to QuickBooks",
                    );
                }
                tracing::warn!(realm_id = realm, fixing_date = %date, error = %e, "Company {realm}: Sync failed for {date}: {e}");
            }
        }
        Ok(())
    }

    /// The fixing in force on `date`, fetching BoA first when it is today's and missing.
    pub(super) async fn fixing_for(&self, date: NaiveDate) -> Result<archive::Resolved, Error> {
        match self.archive.resolve(date).await {
            Ok(r) => Ok(r),
            Err(archive::Error::NoFixing { why, .. })
                if date == self.archive.today()
                    && matches!(
                        why,
                        NoFixing::NotYetPublished { .. }
                            | NoFixing::Empty
                            | NoFixing::Missing { .. }
                    ) =>
            {
                if let Err(e) = self.archive.fetch(false).await {
                    tracing::warn!(error = %e, "BoA fetch for a sync failed");
                }
                Ok(self.archive.resolve(date).await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// One company's sync for `date`, every step, whatever QuickBooks says on the way; what
    /// it did is left in `attempt` for [`SyncEngine::record`].
    pub(super) async fn sync_pipeline(
        &self,
        mut company: Company,
        date: NaiveDate,
        attempt: &mut Attempt,
    ) -> Result<(), Error> {
        let realm = company.realm_id.clone();
        reachable(&company)?;
        // 1. The fixing in force (fetching BoA first when today's is missing).
        let resolved = self.fixing_for(date).await?;
        attempt.fixing_ok = true;

        // 2. A token (refreshed if needed).
        let token = self.tokens.access_token(&realm).await?;
        let session = Session::new(self, &realm, token);
        // A write refused because QuickBooks' home currency is not the one we computed for
        // (SPEC §5) re-reads Preferences; when the home changed, the same sync computes and
        // writes again for the new one, once.
        let mut may_redo = true;
        let result = loop {
            match self
                .one_pass(&session, &mut company, date, &resolved, attempt, may_redo)
                .await
            {
                Ok(PassEnd::Redo) => may_redo = false,
                Ok(PassEnd::Done) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        attempt.tids = std::mem::take(&mut *lock(&session.tids));
        attempt.pressure = session.pressure.load(Relaxed) as u32;
        if result.is_err() && session.disconnected.load(Relaxed) {
            return Err(Error::Disconnected);
        }
        result
    }

    /// Steps 3 to 7 for the home currency the company holds now.
    async fn one_pass(
        &self,
        session: &Session<'_>,
        company: &mut Company,
        date: NaiveDate,
        resolved: &archive::Resolved,
        attempt: &mut Attempt,
        may_redo: bool,
    ) -> Result<PassEnd, Error> {
        let realm = company.realm_id.clone();
        let in_force = resolved.in_force();
        // 3. Currencies/preferences at most daily, and what they make us send.
        let stale = self.refresh_if_stale(session, company).await?;
        let wanted = company_rates(&in_force, company.home_currency, &company.active_currencies)
            .map_err(|e| Error::HomeCurrencyNotFixed(e.to_string()))?;
        if wanted.is_empty() {
            tracing::info!(realm_id = %realm, "Company {realm}: no active currency has a BoA rate; nothing to write");
            self.mark_synced(&realm).await?;
            return Ok(PassEnd::Done);
        }
        let home = company.home_currency;
        let wanted: Vec<Want> = wanted
            .iter()
            .map(|w| Want {
                date,
                currency: w.currency,
                rate: w.rate,
            })
            .collect();

        // 4. One metered read of D-6…D, the drift it shows, then the plan.
        let window = self
            .read_window(session, company, date, &wanted, attempt)
            .await?;
        let wants = window.wants(&wanted);
        let steps = plan::plan(&realm, &wants, &window.holdings);

        // 5. Write what differs, several at once. A fatal failure (the grant is gone) still
        // records what was written before it: those rates are in QuickBooks.
        let mut written = session.write_steps(home, steps).await;
        let fatal = written.fatal.take();
        attempt.count(date, &written);
        let mut failures = written.failure_lines(date);

        // 6. QuickBooks refused some currencies as inactive or home.
        let skipped = if fatal.is_none() && !written.rejected.is_empty() {
            let ctx = Rejected {
                in_force: &in_force,
                home,
                stale,
                may_redo,
            };
            match self
                .after_rejections(session, company, &written, ctx, &mut failures)
                .await?
            {
                Some(skipped) => skipped,
                None => return Ok(PassEnd::Redo),
            }
        } else {
            Vec::new()
        };

        // 7. Store the company's rates (confirmed or not); the attempt is recorded by the
        // caller.
        let rows = window.rows(
            &wanted,
            &skipped,
            &in_force,
            resolved,
            &written,
            self.clock.now(),
        );
        self.store.put_rates(&realm, &rows).await?;
        if let Some(fatal) = fatal {
            return Err(fatal);
        }
        if failures.is_empty() {
            self.mark_synced(&realm).await?;
            Ok(PassEnd::Done)
        } else {
            Err(Error::WriteFailed {
                failed: failures.len(),
                total: wants.len(),
                detail: failures.join("; "),
            })
        }
    }

    /// Step 3: re-reads the company's preferences and currencies when the cached ones are a
    /// day old. Answers whether it read them.
    async fn refresh_if_stale(
        &self,
        session: &Session<'_>,
        company: &mut Company,
    ) -> Result<bool, Error> {
        let stale = company
            .currencies_checked_at
            .is_none_or(|t| self.clock.now() - t > CURRENCY_CACHE);
        if stale {
            session.refresh_company_cache(company).await?;
        }
        if !company.multicurrency {
            return Err(Error::MulticurrencyOff);
        }
        Ok(stale)
    }

    /// Step 4: the routine read of D-6…D (or, when QuickBooks refuses the query, one GET per
    /// currency for D), the drift it shows against what we confirmed, recorded and alerted.
    async fn read_window(
        &self,
        session: &Session<'_>,
        company: &Company,
        date: NaiveDate,
        wanted: &[Want],
        attempt: &mut Attempt,
    ) -> Result<Window, Error> {
        let realm = &company.realm_id;
        let codes: Vec<Currency> = wanted.iter().map(|w| w.currency).collect();
        let window_from = date
            .checked_sub_signed(chrono::Duration::days(DRIFT_WINDOW_DAYS - 1))
            .unwrap_or(date);
        let read = session.read_window(window_from, date, &codes).await?;
        attempt.read_fallback = !read.drift_checked;
        let mut confirmed: HashMap<(NaiveDate, Currency), StoredRate> = HashMap::new();
        let drifts = if read.drift_checked {
            let mine: Vec<StoredRate> = self
                .store
                .rates_between(realm, window_from, date)
                .await?
                .into_iter()
                .filter(|r| r.synced && codes.contains(&r.currency))
                .collect();
            let wants: Vec<Want> = mine
                .iter()
                .map(|r| Want {
                    date: r.date,
                    currency: r.currency,
                    rate: r.rate,
                })
                .collect();
            confirmed = mine
                .into_iter()
                .map(|r| ((r.date, r.currency), r))
                .collect();
            plan::drifts(&wants, &read.holdings)
        } else {
            Vec::new()
        };
        let report_only = company.drift == DriftPolicy::Report;
        self.record_drifts(realm, &codes, &drifts, report_only)
            .await?;
        attempt.drifts = drifts.len();
        Ok(Window {
            date,
            holdings: read.holdings,
            drifted: drifts
                .iter()
                .map(|d| (d.ours.date, d.ours.currency))
                .collect(),
            corrections: if report_only {
                Vec::new()
            } else {
                drifts
                    .iter()
                    .map(|d| d.ours)
                    .filter(|w| w.date != date)
                    .collect()
            },
            confirmed,
            report_only,
        })
    }

    /// Step 6: QuickBooks refused some currencies as inactive or home currency. Re-reads the
    /// company once (unless step 3 just did): `None` when its home currency changed (the
    /// pass is redone for the new one), else the currencies no longer active (skipped, not
    /// failures); refusals of currencies still active join `failures`.
    async fn after_rejections(
        &self,
        session: &Session<'_>,
        company: &mut Company,
        written: &Written,
        ctx: Rejected<'_>,
        failures: &mut Vec<String>,
    ) -> Result<Option<Vec<Currency>>, Error> {
        let realm = company.realm_id.clone();
        if !ctx.stale {
            session.refresh_company_cache(company).await?;
            // Switched off since the cache was read: every write will be refused, and
            // "synced 0 rates" would hide it.
            if !company.multicurrency {
                return Err(Error::MulticurrencyOff);
            }
            if company.home_currency != ctx.home && ctx.may_redo {
                tracing::warn!(realm_id = %realm, "Company {realm}: QuickBooks' home currency is now {} (was {}); computing the rates again for it", company.home_currency, ctx.home);
                return Ok(None);
            }
        }
        let still: Vec<Currency> = company_rates(
            ctx.in_force,
            company.home_currency,
            &company.active_currencies,
        )
        .map(|f| f.iter().map(|r| r.currency).collect())
        .unwrap_or_default();
        let mut skipped: Vec<Currency> = Vec::new();
        for &((_, currency), ref e) in &written.rejected {
            if still.contains(&currency) {
                failures.push(format!("{currency}: {e}"));
            } else if !skipped.contains(&currency) {
                tracing::info!(realm_id = %realm, currency = %currency, "Company {realm}: {currency} is not active in QuickBooks; skipped");
                skipped.push(currency);
            }
        }
        Ok(Some(skipped))
    }

    /// Records the drifts one read found (SPEC §5 "Drift"): a `drift` log record each (not
    /// flushed: the attempt's records flush them), counted, and alerted when the same
    /// currency drifted before within 7 days. Under `report` a drift already recorded (same
    /// date, currency and rates) is not recorded again by the next syncs that see it.
    pub(super) async fn record_drifts(
        &self,
        realm: &str,
        codes: &[Currency],
        drifts: &[Drift],
        report_only: bool,
    ) -> Result<(), Error> {
        let drifted: HashSet<Currency> = drifts.iter().map(|d| d.ours.currency).collect();
        for c in codes.iter().filter(|c| !drifted.contains(c)) {
            self.alerts.clear(&drift_alert_key(realm, *c));
        }
        if drifts.is_empty() {
            return Ok(());
        }
        let now = self.clock.now();
        let earlier: Vec<(DateTime<Utc>, Option<NaiveDate>, DriftDetail)> = self
            .store
            .logs(realm, DRIFT_LOOKBACK_RECORDS)
            .await?
            .into_iter()
            .filter(|r| r.kind == LogKind::Drift)
            .filter_map(|r| Some((r.at, r.date, r.drift?)))
            .collect();
        for d in drifts {
            let (day, currency, ours) = (d.ours.date, d.ours.currency, d.ours.rate);
            let seen = |(_, date, x): &&(DateTime<Utc>, Option<NaiveDate>, DriftDetail)| {
                *date == Some(day)
                    && x.currency == currency
                    && x.theirs == d.theirs
                    && x.ours == ours
            };
            if report_only && earlier.iter().any(|e| seen(&e)) {
                continue;
            }
            let repeat = earlier
                .iter()
                .any(|(at, _, x)| x.currency == currency && now - *at <= DRIFT_REPEAT);
            let theirs = d
                .theirs
                .map_or_else(|| "nothing".to_string(), |t| t.normalize().to_string());
            let message = format!(
                "{currency} on {day}: QuickBooks holds {theirs}, we confirmed {}{}",
                ours.normalize(),
                if report_only {
                    " (reported, not corrected)"
                } else {
                    " (written back)"
                }
            );
            self.store
                .append_log(
                    realm,
                    &LogRecord {
                        at: now,
                        kind: LogKind::Drift,
                        success: false,
                        date: Some(day),
                        message: message.clone(),
                        rates_written: 0,
                        rates_unchanged: 0,
                        intuit_tids: vec![],
                        drift: Some(DriftDetail {
                            currency,
                            theirs: d.theirs,
                            ours,
                        }),
                    },
                )
                .await?;
            self.metrics.drifts.inc();
            tracing::warn!(realm_id = realm, fixing_date = %day, currency = %currency, "Company {realm}: drift: {message}");
            if repeat {
                self.alerts.raise(
                    &drift_alert_key(realm, currency),
                    "drift_repeated",
                    Some(realm),
                    &format!("{currency} drifted again within 7 days: {message}"),
                );
            }
        }
        Ok(())
    }

    /// `last_sync_at` = now, unflushed: flushed with the attempt's log records by
    /// [`Self::record`], before the answer.
    pub(super) async fn mark_synced(&self, realm: &str) -> Result<(), Error> {
        let now = self.clock.now();
        self.store
            .update_company_unflushed(realm, |c| {
                c.last_sync_at = Some(now);
                c.updated_at = now;
            })
            .await?;
        Ok(())
    }
}
