//! The sync answers: one company (`POST …/{id}/sync`, `sync REALM`) and all companies
//! (`POST …/sync-all`, `sync --all`). The engine syncs; this module shapes the JSON.

use std::sync::Arc;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::{parse_date, ApiError, Ctx, ErrorEntry, OpResult};
use crate::sync::{Outcome, RunEntry, RunReport, Scope};

/// The rate date of a request: the parameter, or today falling back to the newest
/// fixing's date while today's is not yet published.
///
/// # Errors
/// 400 for a malformed date.
pub async fn target_date(ctx: &Ctx, param: Option<&str>) -> Result<NaiveDate, ApiError> {
    match param.filter(|p| !p.is_empty()) {
        Some(p) => parse_date("target_date", p),
        None => Ok(ctx.engine.default_date().await),
    }
}

/// The brief's single-company answer (`sync REALM`, `POST …/{id}/sync`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncAnswer {
    /// The realm id.
    pub company_id: String,
    /// The company's name.
    pub company_name: String,
    /// The rate date (YYYY-MM-DD).
    pub date: String,
    /// `Synced N rates for NAME` or `Sync failed for NAME: why`.
    pub message: String,
    /// Rates in QuickBooks as they should be (written + unchanged).
    pub rates_synced: usize,
    /// Rates already right.
    pub rates_unchanged: usize,
    /// Rates written.
    pub rates_written: usize,
    /// Whether the sync succeeded.
    pub success: bool,
}

impl SyncAnswer {
    /// The answer for an outcome.
    pub fn of(o: &Outcome) -> SyncAnswer {
        SyncAnswer {
            company_id: o.realm.clone(),
            company_name: o.company_name.clone(),
            date: o.date.to_string(),
            message: match &o.error {
                None => format!("Synced {} rates for {}", o.rates_synced, o.company_name),
                Some(e) => format!(
                    "Sync failed for {}: {}",
                    o.company_name,
                    ApiError::from(e.clone()).message
                ),
            },
            rates_synced: o.rates_synced,
            rates_unchanged: o.rates_unchanged,
            rates_written: o.rates_written,
            success: o.error.is_none(),
        }
    }
}

/// `POST /api/v1/companies/{id}/sync` and `sync REALM`. The sync runs as a tracked task:
/// a client that goes away cancels nothing (a token rotation and the attempt's records are
/// always stored).
///
/// # Errors
/// 400 bad date, 404 unknown company, 409 sync disabled / reconnect needed, 422 no fixing,
/// 502 QuickBooks failure.
pub async fn sync_one(ctx: &Arc<Ctx>, realm: &str, date: Option<&str>) -> OpResult<SyncAnswer> {
    if ctx.store.company(realm).await?.is_none() {
        return Err(ApiError::unknown_company(realm));
    }
    let date = target_date(ctx, date).await?;
    let engine = ctx.engine.clone();
    let realm = realm.to_string();
    let outcome = ctx
        .tracked("sync", async move { engine.sync_now(&realm, date).await })
        .await??;
    Ok(SyncAnswer::of(&outcome))
}

/// `POST /api/v1/companies/sync-all` and `sync --all`: runs or joins the one sync-all.
/// The answer is JSON text written straight from the report, in pieces (see
/// [`AllAnswerText`]).
///
/// # Errors
/// 400 bad date; 409 a run for another date is in progress.
pub async fn sync_all(ctx: &Ctx, date: Option<&str>) -> Result<AllAnswerText, ApiError> {
    let date = target_date(ctx, date).await?;
    let report = ctx.engine.sync_all(date, Scope::All).await?;
    Ok(AllAnswerText(report))
}

/// One company's line in the sync-all answer. Fields in the order they have always had
/// on the wire (this answer was never a `json!`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncAllResult {
    /// The realm id (the stored key of an undecodable record).
    pub company_id: String,
    /// The company's name; `null` for an undecodable record.
    pub company_name: Option<String>,
    /// Whether its sync succeeded.
    pub success: bool,
    /// Rates in QuickBooks as they should be.
    pub rates_synced: usize,
    /// Rates written (successes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rates_written: Option<usize>,
    /// Rates already right (successes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rates_unchanged: Option<usize>,
    /// Why it failed (failures only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorEntry>,
}

impl SyncAllResult {
    fn of(e: RunEntry<'_>) -> SyncAllResult {
        let ok = e.error.is_none();
        SyncAllResult {
            company_id: e.realm.to_string(),
            company_name: Some(e.company_name.to_string()),
            success: ok,
            rates_synced: e.rates_synced,
            rates_written: ok.then_some(e.rates_written),
            rates_unchanged: ok.then_some(e.rates_unchanged),
            error: e
                .error
                .map(|err| ErrorEntry::of(&ApiError::from(err.clone()))),
        }
    }

    fn bad_record(key: &str) -> SyncAllResult {
        SyncAllResult {
            company_id: key.to_string(),
            company_name: None,
            success: false,
            rates_synced: 0,
            rates_written: None,
            rates_unchanged: None,
            error: Some(ErrorEntry {
                code: "bad_record".into(),
                message: "the company record cannot be decoded; it was skipped".into(),
            }),
        }
    }
}

/// The sync-all answer (`sync --all`, `POST …/sync-all`), `results` last. The daemon never
/// builds one with its results: it writes the text in pieces ([`AllAnswerText`]); the CLI
/// reads the whole answer into one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncAllAnswer {
    /// Always true (a company's failure is in its result).
    pub success: bool,
    /// `Synced N/M companies successfully`.
    pub message: String,
    /// The rate date (YYYY-MM-DD).
    pub date: String,
    /// Companies in the run (undecodable records included).
    pub total_companies: usize,
    /// Companies synced.
    pub successful: usize,
    /// Companies failed.
    pub failed: usize,
    /// The run's duration, to the millisecond.
    pub duration_secs: f64,
    /// One line per company, in store order, undecodable records last.
    pub results: Vec<SyncAllResult>,
}

/// About how much answer text one piece holds.
const PIECE_BYTES: usize = 64 * 1024;

/// The sync-all answer as JSON text, serialized straight from the report one piece at a
/// time: a `serde_json::Value` of 100,000 results costs ~600 B per company, the text ~170 B
/// (17 MB), and even that as one string is what set the daemon's peak memory at the end of a
/// large run; the control socket writes the pieces as they are made (BENCHMARKS.md, issue 15).
pub struct AllAnswerText(pub Arc<RunReport>);

impl AllAnswerText {
    /// The answer in pieces of about [`PIECE_BYTES`]: together one JSON object,
    /// `{"success": true, "message", "date", "total_companies", "successful", "failed",
    /// "duration_secs", "results": [...]}`.
    pub fn pieces(&self) -> impl Iterator<Item = String> + '_ {
        let r = &*self.0;
        let head = SyncAllAnswer {
            success: true,
            message: format!("Synced {}/{} companies successfully", r.successful, r.total),
            date: r.date.to_string(),
            total_companies: r.total,
            successful: r.successful,
            failed: r.failed,
            duration_secs: (r.seconds * 1000.0).round() / 1000.0,
            results: Vec::new(),
        };
        // Plain structs of strings and numbers: serializing cannot fail.
        let mut head = serde_json::to_string(&head).unwrap_or_default();
        // `…"results":[]}` → `…"results":[`
        head.truncate(head.len().saturating_sub(2));
        let mut lines = r
            .entries
            .iter()
            .map(SyncAllResult::of)
            .chain(r.bad_records.iter().map(|k| SyncAllResult::bad_record(k)));
        let mut first = Some(head);
        let mut comma = false;
        let mut done = false;
        std::iter::from_fn(move || {
            if done {
                return None;
            }
            let mut piece = first.take().unwrap_or_default();
            while piece.len() < PIECE_BYTES {
                let Some(line) = lines.next() else {
                    piece.push_str("]}");
                    done = true;
                    break;
                };
                if comma {
                    piece.push(',');
                }
                comma = true;
                piece.push_str(&serde_json::to_string(&line).unwrap_or_default());
            }
            Some(piece)
        })
    }

    /// The whole answer as one string (the HTTP body).
    pub fn into_string(self) -> String {
        self.pieces().collect()
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::assert_wire_json;
    use crate::sync::RunEntries;
    use serde_json::{json, Value};

    /// The sync-all answer's text as the code before the typed answers wrote it (its
    /// structs and loop, verbatim but for the names, without the pieces).
    fn old_all_text(r: &RunReport) -> String {
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
            error: Option<OldError<'a>>,
        }
        #[derive(Serialize)]
        struct OldError<'a> {
            code: &'a str,
            message: String,
        }
        #[derive(Serialize)]
        struct AllAnswer {
            success: bool,
            message: String,
            date: String,
            total_companies: usize,
            successful: usize,
            failed: usize,
            duration_secs: f64,
            results: [(); 0],
        }
        let head = AllAnswer {
            success: true,
            message: format!("Synced {}/{} companies successfully", r.successful, r.total),
            date: r.date.to_string(),
            total_companies: r.total,
            successful: r.successful,
            failed: r.failed,
            duration_secs: (r.seconds * 1000.0).round() / 1000.0,
            results: [],
        };
        let mut text = serde_json::to_string(&head).unwrap();
        text.truncate(text.len() - 2);
        let mut lines: Vec<String> = r
            .entries
            .iter()
            .map(|e| {
                let line = match e.error {
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
                            error: Some(OldError {
                                code: a.code,
                                message: a.message,
                            }),
                        }
                    }
                };
                serde_json::to_string(&line).unwrap()
            })
            .collect();
        for k in &r.bad_records {
            lines.push(
                serde_json::to_string(&ResultEntry {
                    company_id: k,
                    company_name: None,
                    success: false,
                    rates_synced: 0,
                    rates_written: None,
                    rates_unchanged: None,
                    error: Some(OldError {
                        code: "bad_record",
                        message: "the company record cannot be decoded; it was skipped".into(),
                    }),
                })
                .unwrap(),
            );
        }
        text + &lines.join(",") + "]}"
    }

    #[test]
    fn the_sync_answer_is_the_old_json() {
        let errors = [
            None,
            Some(crate::sync::Error::ReconnectNeeded),
            Some(crate::sync::Error::UnknownCompany("1".into())),
        ];
        for error in errors {
            let o = Outcome {
                realm: "9341453199574000".into(),
                company_name: "Company \"quoted\" ë".into(),
                date: NaiveDate::from_ymd_opt(2026, 5, 22).unwrap(),
                rates_synced: 5,
                rates_written: 3,
                rates_unchanged: 2,
                error,
                pressure: 0,
            };
            let old = json!({
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
            });
            assert_wire_json(&SyncAnswer::of(&o), &old);
        }
    }

    #[test]
    fn the_sync_all_answer_in_pieces_is_one_json_object_in_store_order() {
        let mut entries = RunEntries::default();
        let n = 2_000;
        for i in 0..n {
            entries.push(
                &format!("{:016}", 9_341_453_199_574_000u64 + i),
                "Company \"quoted\" ë",
            );
        }
        for i in 0..n as usize {
            let error = (i % 500 == 7).then_some(crate::sync::Error::ReconnectNeeded);
            let name = if i == 3 {
                "Renamed".to_string()
            } else {
                "Company \"quoted\" ë".to_string()
            };
            entries.finish(i, name, (3, 2, 1), error);
        }
        let report = RunReport {
            date: NaiveDate::from_ymd_opt(2026, 5, 22).unwrap(),
            finished_at: chrono::Utc::now(),
            total: n as usize + 1,
            successful: n as usize - 4,
            failed: 5,
            seconds: 12.3456,
            entries,
            bad_records: vec!["77".into()],
        };
        let old = old_all_text(&report);
        let answer = AllAnswerText(Arc::new(report));
        let pieces: Vec<String> = answer.pieces().collect();
        assert!(pieces.len() > 2, "{} pieces", pieces.len());
        assert!(pieces.iter().all(|p| p.len() < PIECE_BYTES + 1024));
        let text = pieces.concat();
        assert_eq!(text, old, "the bytes of the untyped answer");
        let typed: SyncAllAnswer = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_string(&typed).unwrap(), text);
        assert_eq!(text, answer.into_string());
        let v: Value = serde_json::from_str(&text).expect("one JSON object");
        assert_eq!(v["success"], true);
        assert_eq!(v["date"], "2026-05-22");
        assert_eq!(v["message"], "Synced 1996/2001 companies successfully");
        assert_eq!(
            (v["total_companies"].clone(), v["failed"].clone()),
            (json!(2001), json!(5))
        );
        assert_eq!(v["duration_secs"], 12.346);
        let results = v["results"].as_array().unwrap();
        assert_eq!(results.len(), 2001);
        assert_eq!(results[0]["company_id"], "9341453199574000");
        assert_eq!(results[0]["company_name"], "Company \"quoted\" ë");
        assert_eq!(
            (
                results[0]["rates_synced"].clone(),
                results[0]["rates_written"].clone(),
                results[0]["rates_unchanged"].clone()
            ),
            (json!(3), json!(2), json!(1))
        );
        assert_eq!(results[3]["company_name"], "Renamed");
        assert_eq!(results[7]["success"], false);
        assert_eq!(results[7]["error"]["code"], "reconnect_needed");
        assert!(results[7].get("rates_written").is_none());
        assert_eq!(results[1999]["company_id"], "9341453199575999");
        assert_eq!(results[2000]["company_id"], "77");
        assert_eq!(results[2000]["error"]["code"], "bad_record");
    }
}
