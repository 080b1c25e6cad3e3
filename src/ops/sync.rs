//! The sync answers: one company (`POST …/{id}/sync`, `sync REALM`) and all companies
//! (`POST …/sync-all`, `sync --all`). The engine syncs; this module shapes the JSON.

use std::sync::Arc;

use chrono::NaiveDate;
use serde::ser::SerializeSeq;
use serde::Serialize;
use serde_json::{json, Value};

use super::{parse_date, ApiError, Ctx, OpResult};
use crate::sync::{Outcome, RunReport, Scope};

/// The rate date of a request: the parameter, or today falling back to the newest
/// fixing's date while today's is not yet published.
///
/// # Errors
/// 400 for a malformed date.
pub fn target_date(ctx: &Ctx, param: Option<&str>) -> Result<NaiveDate, ApiError> {
    match param.filter(|p| !p.is_empty()) {
        Some(p) => parse_date("target_date", p),
        None => Ok(ctx.engine.default_date()),
    }
}

/// The brief's single-company answer.
pub fn outcome_json(o: &Outcome) -> Value {
    json!({
        "success": o.error.is_none(),
        "message": match &o.error {
            None => format!("Synced {} rates for {}", o.rates_synced, o.company_name),
            Some(e) => format!("Sync failed for {}: {}", o.company_name, ApiError::from(e.clone()).message),
        },
        "company_id": o.realm,
        "company_name": o.company_name,
        "date": o.date.to_string(),
        "rates_synced": o.rates_synced,
        "rates_written": o.rates_written,
        "rates_unchanged": o.rates_unchanged,
    })
}

/// `POST /api/v1/companies/{id}/sync` and `sync REALM`. The sync runs as a tracked task:
/// a client that goes away cancels nothing (a token rotation and the attempt's records are
/// always stored).
///
/// # Errors
/// 400 bad date, 404 unknown company, 409 sync disabled / reconnect needed, 422 no fixing,
/// 502 QuickBooks failure.
pub async fn sync_one(ctx: &Arc<Ctx>, realm: &str, date: Option<&str>) -> OpResult {
    if ctx.store.company(realm)?.is_none() {
        return Err(ApiError::unknown_company(realm));
    }
    let date = target_date(ctx, date)?;
    let engine = ctx.engine.clone();
    let realm = realm.to_string();
    let run = ctx
        .tasks
        .spawn(async move { engine.sync_one(&realm, date).await });
    match run.await {
        Ok(r) => Ok(outcome_json(&r?)),
        Err(e) => Err(ApiError::internal(format!("the sync task failed: {e}"))),
    }
}

/// `POST /api/v1/companies/sync-all` and `sync --all`: runs or joins the one sync-all.
/// The answer is JSON text written straight from the report (see [`report_text`]).
///
/// # Errors
/// 400 bad date; 409 a run for another date is in progress.
pub async fn sync_all(ctx: &Ctx, date: Option<&str>) -> Result<String, ApiError> {
    let date = target_date(ctx, date)?;
    let report = ctx.engine.sync_all(date, Scope::All).await?;
    Ok(report_text(&report))
}

/// One company's line in the sync-all answer.
#[derive(Serialize)]
struct ResultEntry<'a> {
    company_id: &'a str,
    company_name: Option<&'a str>,
    success: bool,
    rates_synced: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    rates_written: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rates_unchanged: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorEntry<'a>>,
}

#[derive(Serialize)]
struct ErrorEntry<'a> {
    code: &'a str,
    message: String,
}

/// The results, serialized one entry at a time.
struct Results<'a>(&'a RunReport);

impl Serialize for Results<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut seq = s.serialize_seq(Some(r.entries.len() + r.bad_records.len()))?;
        for e in r.entries.iter() {
            let entry = match e.error {
                None => ResultEntry {
                    company_id: e.realm,
                    company_name: Some(e.company_name),
                    success: true,
                    rates_synced: e.rates_synced,
                    rates_written: Some(e.rates_written),
                    rates_unchanged: Some(e.rates_unchanged),
                    error: None,
                },
                Some(err) => {
                    let a = ApiError::from(err.clone());
                    ResultEntry {
                        company_id: e.realm,
                        company_name: Some(e.company_name),
                        success: false,
                        rates_synced: e.rates_synced,
                        rates_written: None,
                        rates_unchanged: None,
                        error: Some(ErrorEntry {
                            code: a.code,
                            message: a.message,
                        }),
                    }
                }
            };
            seq.serialize_element(&entry)?;
        }
        for key in &r.bad_records {
            seq.serialize_element(&ResultEntry {
                company_id: key,
                company_name: None,
                success: false,
                rates_synced: 0,
                rates_written: None,
                rates_unchanged: None,
                error: Some(ErrorEntry {
                    code: "bad_record",
                    message: "the company record cannot be decoded; it was skipped".into(),
                }),
            })?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct AllAnswer<'a> {
    success: bool,
    message: String,
    date: String,
    total_companies: usize,
    successful: usize,
    failed: usize,
    duration_secs: f64,
    results: Results<'a>,
}

/// The sync-all answer as JSON text, serialized straight from the report: a
/// `serde_json::Value` of 100,000 results costs ~600 B per company (and `json!` copied it
/// once more), the text ~170 B, which is what bounds the daemon's peak memory at the end of
/// a large run.
pub fn report_text(r: &RunReport) -> String {
    let answer = AllAnswer {
        success: true,
        message: format!("Synced {}/{} companies successfully", r.successful, r.total),
        date: r.date.to_string(),
        total_companies: r.total,
        successful: r.successful,
        failed: r.failed,
        duration_secs: (r.seconds * 1000.0).round() / 1000.0,
        results: Results(r),
    };
    // Serializing plain structs of strings and numbers into a String cannot fail.
    serde_json::to_string(&answer).unwrap_or_else(|_| "{\"success\":false}".into())
}

/// A company was connected, re-activated or re-enabled: sync it at once for today and for
/// any missed fixing of the last 31 days (unless automatic syncs are off). Runs in the
/// background; the answer does not wait for it.
pub fn after_connected(ctx: &Ctx, realm: &str) {
    if !ctx.config().schedule.enabled {
        return;
    }
    let scheduler = ctx.scheduler.clone();
    let realm = realm.to_string();
    ctx.tasks.spawn(async move {
        if let Err(e) = scheduler.catch_up_company(&realm, true).await {
            tracing::warn!(realm_id = %realm, error = %e, "catch-up after connecting failed");
        }
    });
}
