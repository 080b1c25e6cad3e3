//! The backfill (SPEC §5 "Backfill") as the engine runs it: the rates in force for every date
//! of a range, one range query per 31 days, only what differs written through the routine
//! write path. The pure parts (accepted ranges, skipped dates, read windows, the report) are
//! [`super::backfill`].

use std::collections::HashMap;

use chrono::NaiveDate;

use super::backfill::{self, Backfill, FailedWrite, Skipped};
use super::engine::{reachable, SyncEngine, CURRENCY_CACHE};
use super::error::{upstream, Error};
use super::pipeline::stored_row;
use super::plan::{self, Action, Holdings, Want};
use super::session::Session;
use crate::archive;
use crate::currency::Currency;
use crate::fixing::TableKind;
use crate::locks::lock;
use crate::rates::{company_rates, InForce};
use crate::store::records::{Company, CompanyRate as StoredRate, LogKind, LogRecord};

impl SyncEngine {
    /// Backfills `from..=to` (SPEC §5 "Backfill"): every date's rate in force (weekends and
    /// holidays by the company's fill policy; dates without one are skipped with the
    /// reason), read from QuickBooks one range query per 31 days, and only what differs
    /// written, through the routine write path (requestids, bounded concurrency, 429/5xx
    /// handling). A dry run stops after the plan. Refuses to wait for a sync of the same
    /// company.
    ///
    /// All reads come before the first write: a failed read fails the backfill with nothing
    /// written. A write that fails does not stop the others; the report lists it and carries
    /// the error, and what was written stays written and counted.
    ///
    /// # Errors
    /// Bad range, unknown company, a sync of it running, a company that cannot be synced,
    /// a failed read or token refresh, store failures.
    pub async fn backfill(
        &self,
        realm: &str,
        from: NaiveDate,
        to: NaiveDate,
        dry_run: bool,
    ) -> Result<Backfill, Error> {
        let dates = backfill::check_range(from, to, self.archive.today())?;
        let mut company = self
            .store
            .company(realm)
            .await?
            .ok_or_else(|| Error::UnknownCompany(realm.to_string()))?;
        let company_lock = self.company_lock(realm);
        let Some(_held) = company_lock.try_lock() else {
            return Err(Error::CompanyBusy(realm.to_string()));
        };
        reachable(&company)?;
        if !company.sync_enabled {
            return Err(Error::SyncDisabled(realm.to_string()));
        }
        tracing::info!(
            realm_id = realm,
            "Company {realm}: backfill {from} to {to}{}",
            if dry_run { " (dry run)" } else { "" }
        );
        let mut report = Backfill {
            realm: realm.to_string(),
            from,
            to,
            dry_run,
            dates,
            plan: Vec::new(),
            rates_written: 0,
            rates_unchanged: 0,
            skipped: Vec::new(),
            reads: 0,
            failed: Vec::new(),
            error: None,
        };
        // The rates in force, date by date.
        let holidays = self.archive.holidays().await?;
        let mut days: Vec<(NaiveDate, InForce)> = Vec::new();
        for day in from.iter_days().take_while(|d| *d <= to) {
            if let Some(why) =
                backfill::non_business_skip(day, &holidays, company.fill_non_business_days)
            {
                report.skipped.push(Skipped {
                    date: day,
                    reason: why.to_string(),
                });
                continue;
            }
            match self.archive.resolve(day).await {
                Ok(r) => days.push((day, r.in_force())),
                Err(archive::Error::NoFixing { why, .. }) => report.skipped.push(Skipped {
                    date: day,
                    reason: why.message(day),
                }),
                Err(e) => return Err(e.into()),
            }
        }
        let token = self.tokens.access_token(realm).await?;
        let session = Session::new(self, realm, token);
        let result = self
            .backfill_with(&session, &mut company, days, &mut report)
            .await;
        let tids = std::mem::take(&mut *lock(&session.tids));
        if !dry_run {
            let message = format!(
                "backfill {from} to {to}: {} written, {} unchanged, {} dates skipped{}",
                report.rates_written,
                report.rates_unchanged,
                report.skipped.len(),
                match (&result, &report.error) {
                    (Err(e), _) | (Ok(()), Some(e)) => format!("; {}: {e}", e.code()),
                    _ => String::new(),
                }
            );
            self.store
                .append_log(
                    realm,
                    &LogRecord {
                        at: self.clock.now(),
                        kind: LogKind::Syncing,
                        success: result.is_ok() && report.error.is_none(),
                        date: None,
                        message,
                        rates_written: report.rates_written as u32,
                        rates_unchanged: report.rates_unchanged as u32,
                        intuit_tids: tids,
                        drift: None,
                    },
                )
                .await?;
            self.store.flush().await?;
            self.metrics
                .rates_written
                .inc_by(report.rates_written as u64);
        }
        result.map(|()| report)
    }

    pub(super) async fn backfill_with(
        &self,
        session: &Session<'_>,
        company: &mut Company,
        days: Vec<(NaiveDate, InForce)>,
        report: &mut Backfill,
    ) -> Result<(), Error> {
        let realm = company.realm_id.clone();
        let stale = company
            .currencies_checked_at
            .is_none_or(|t| self.clock.now() - t > CURRENCY_CACHE);
        if stale && !days.is_empty() {
            session.refresh_company_cache(company).await?;
        }
        if !company.multicurrency {
            return Err(Error::MulticurrencyOff);
        }
        let (wants, fixings) = wanted_rates(company, &days, report);
        report.skipped.sort_by_key(|s| s.date);
        let mut codes: Vec<Currency> = wants.iter().map(|w| w.currency).collect();
        codes.sort();
        codes.dedup();
        let holdings = read_windows(session, report, &wants, &codes).await?;
        let steps = plan::plan(&realm, &wants, &holdings);
        report.plan.clone_from(&steps);
        if report.dry_run {
            report.rates_unchanged = steps.iter().filter(|s| s.action == Action::Keep).count();
            return Ok(());
        }

        // Writes, through the routine path; rows stored like a routine sync's.
        let written = session.write_steps(company.home_currency, steps).await;
        report.rates_written = written.written.len();
        report.rates_unchanged = written.unchanged.len();
        let now = self.clock.now();
        let done = written.confirmed();
        let rows: Vec<StoredRate> = wants
            .iter()
            .map(|w| {
                let fixing = fixings
                    .get(&(w.date, w.currency))
                    .copied()
                    .unwrap_or((TableKind::Main, w.date));
                stored_row((w.date, w.currency), w.rate, fixing, &done, now)
            })
            .collect();
        self.store.put_rates(&realm, &rows).await?;
        report.failed = written
            .rejected
            .into_iter()
            .chain(written.failures)
            .map(|((date, currency), error)| FailedWrite {
                date,
                currency,
                error,
            })
            .collect();
        report.failed.sort_by_key(|f| (f.date, f.currency));
        report.error = match written.fatal {
            Some(e) => Some(e),
            None if !report.failed.is_empty() => Some(Error::WriteFailed {
                failed: report.failed.len(),
                total: wants.len(),
                detail: report
                    .failed
                    .iter()
                    .take(5)
                    .map(|f| format!("{} {}: {}", f.currency, f.date, f.error))
                    .collect::<Vec<_>>()
                    .join("; "),
            }),
            None => None,
        };
        Ok(())
    }
}

/// Where a backfilled rate came from: the table and its fixing date, by (date, currency).
type Sources = HashMap<(NaiveDate, Currency), (TableKind, NaiveDate)>;

/// What we want on every date, and where each rate came from; a date without rates for the
/// company is recorded in `report.skipped` with the reason.
fn wanted_rates(
    company: &Company,
    days: &[(NaiveDate, InForce)],
    report: &mut Backfill,
) -> (Vec<Want>, Sources) {
    // What we want on every date, and where each rate came from.
    let mut wants: Vec<Want> = Vec::new();
    let mut fixings: Sources = HashMap::new();
    for (day, in_force) in days {
        match company_rates(in_force, company.home_currency, &company.active_currencies) {
            Ok(list) => {
                for w in list {
                    let fixing = in_force.rate(w.currency).map_or_else(
                        || (TableKind::Main, in_force.main_date.unwrap_or(*day)),
                        |r| (r.table, r.fixing_date),
                    );
                    fixings.insert((*day, w.currency), fixing);
                    wants.push(Want {
                        date: *day,
                        currency: w.currency,
                        rate: w.rate,
                    });
                }
            }
            Err(e) => report.skipped.push(Skipped {
                date: *day,
                reason: e.to_string(),
            }),
        }
    }
    (wants, fixings)
}

/// Reads what QuickBooks holds: one range query per 31-day window that has a date to
/// write (counted in `report.reads`).
async fn read_windows(
    session: &Session<'_>,
    report: &mut Backfill,
    wants: &[Want],
    codes: &[Currency],
) -> Result<Holdings, Error> {
    // Reads: one range query per 31-day window that has a date to write.
    let mut holdings = Holdings::new();
    for (wf, wt) in backfill::windows(report.from, report.to) {
        if !wants.iter().any(|w| w.date >= wf && w.date <= wt) {
            continue;
        }
        let h = session.read_range(wf, wt, codes).await.map_err(|e| {
            if e.is_fault() {
                Error::RangeQueryRefused {
                    from: wf,
                    to: wt,
                    message: e.to_string(),
                }
            } else {
                upstream(&e, "reading QuickBooks exchange rates")
            }
        })?;
        report.reads += 1;
        holdings.extend(h);
    }
    Ok(holdings)
}
