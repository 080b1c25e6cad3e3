//! The backfill answer (`POST /api/v1/companies/{id}/backfill`, `backfill REALM`): parses the
//! range, runs [`SyncEngine::backfill`](crate::sync::SyncEngine::backfill) and shapes the
//! JSON. A backfill that wrote part of its plan before a write failed answers 200 with
//! `"success": false`, the error, what was written (counted) and the writes that failed, so
//! the caller sees both; a refusal before any write is an error answer.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{parse_date, ApiError, Ctx, ErrorEntry, OpResult};
use crate::sync::backfill::Backfill;
use crate::sync::plan::Action;

/// A `dry_run` flag as given (`true`/`false`/`1`/`0`; absent or empty = false).
///
/// # Errors
/// 400 for anything else.
pub fn parse_dry_run(v: Option<&str>) -> Result<bool, ApiError> {
    match v.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(ApiError::bad_request(
            "bad_argument",
            format!("dry_run: {other:?} is not true or false"),
        )),
    }
}

/// Runs a backfill. The run is a tracked task: a client that goes away cancels nothing.
///
/// # Errors
/// 400 missing, malformed, reversed, too long or future range; 404 unknown company; 409 a
/// sync of the company running (or it cannot be synced); 502 a failed read.
pub async fn backfill(
    ctx: &Arc<Ctx>,
    realm: &str,
    from: Option<&str>,
    to: Option<&str>,
    dry_run: bool,
) -> OpResult<BackfillAnswer> {
    if ctx.store.company(realm).await?.is_none() {
        return Err(ApiError::unknown_company(realm));
    }
    let date = |name: &str, v: Option<&str>| match v.filter(|s| !s.trim().is_empty()) {
        Some(s) => parse_date(name, s),
        None => Err(ApiError::bad_request(
            "bad_date",
            format!("{name} is required (YYYY-MM-DD)"),
        )),
    };
    let (from, to) = (date("from", from)?, date("to", to)?);
    let engine = ctx.engine.clone();
    let realm = realm.to_string();
    let done = ctx
        .tracked("backfill", async move {
            engine.backfill(&realm, from, to, dry_run).await
        })
        .await??;
    Ok(BackfillAnswer::of(&done))
}

/// The answer of SPEC §5 "Backfill" (decimals as strings). `error` and `failed` are
/// there only when a write failed. Fields in alphabetical order: the order they have always
/// had on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillAnswer {
    /// The realm id.
    pub company_id: String,
    /// Dates in the range.
    pub dates: i64,
    /// Whether nothing was written (the plan only).
    pub dry_run: bool,
    /// Why the backfill stopped part way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorEntry>,
    /// The writes that failed (with `error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<Vec<FailedEntry>>,
    /// First date (YYYY-MM-DD).
    pub from: String,
    /// One step per date and currency.
    pub plan: Vec<PlanEntry>,
    /// Rates already right.
    pub rates_unchanged: usize,
    /// Rates written.
    pub rates_written: usize,
    /// Dates without a rate to send.
    pub skipped: Vec<SkippedEntry>,
    /// No write failed.
    pub success: bool,
    /// Last date (YYYY-MM-DD).
    pub to: String,
}

/// One step of a [`BackfillAnswer`]'s plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanEntry {
    /// `keep` or `write`.
    pub action: String,
    /// ISO 4217.
    pub currency: String,
    /// YYYY-MM-DD.
    pub date: String,
    /// The rate we send.
    pub ours: String,
    /// The rate QuickBooks holds; `null` for none.
    pub quickbooks: Option<String>,
}

/// A date a backfill skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedEntry {
    /// YYYY-MM-DD.
    pub date: String,
    /// Why.
    pub reason: String,
}

/// A write of a backfill that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedEntry {
    /// ISO 4217.
    pub currency: String,
    /// YYYY-MM-DD.
    pub date: String,
    /// What QuickBooks said.
    pub error: String,
}

impl BackfillAnswer {
    /// The answer for a finished backfill.
    pub fn of(b: &Backfill) -> BackfillAnswer {
        let plan = b
            .plan
            .iter()
            .map(|s| PlanEntry {
                action: match s.action {
                    Action::Keep => "keep",
                    Action::Write { .. } => "write",
                }
                .into(),
                currency: s.want.currency.as_str().into(),
                date: s.want.date.to_string(),
                ours: s.want.rate.normalize().to_string(),
                quickbooks: s.theirs.map(|t| t.normalize().to_string()),
            })
            .collect();
        let failed = b.failed.iter().map(|f| FailedEntry {
            currency: f.currency.as_str().into(),
            date: f.date.to_string(),
            error: f.error.clone(),
        });
        BackfillAnswer {
            company_id: b.realm.clone(),
            dates: b.dates,
            dry_run: b.dry_run,
            error: b
                .error
                .as_ref()
                .map(|e| ErrorEntry::of(&ApiError::from(e.clone()))),
            failed: b.error.is_some().then(|| failed.collect()),
            from: b.from.to_string(),
            plan,
            rates_unchanged: b.rates_unchanged,
            rates_written: b.rates_written,
            skipped: b
                .skipped
                .iter()
                .map(|s| SkippedEntry {
                    date: s.date.to_string(),
                    reason: s.reason.clone(),
                })
                .collect(),
            success: b.error.is_none(),
            to: b.to.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::currency::Currency;
    use crate::ops::assert_wire_json;
    use crate::sync::backfill::{FailedWrite, Skipped};
    use crate::sync::plan::{Step, Want};
    use chrono::NaiveDate;
    use serde_json::{json, Value};

    /// The answer as the code before the typed answers built it, verbatim.
    fn old_answer(b: &Backfill) -> Value {
        let plan: Vec<Value> = b
            .plan
            .iter()
            .map(|s| {
                json!({
                    "date": s.want.date.to_string(),
                    "currency": s.want.currency.as_str(),
                    "quickbooks": s.theirs.map(|t| t.normalize().to_string()),
                    "ours": s.want.rate.normalize().to_string(),
                    "action": match s.action { Action::Keep => "keep", Action::Write { .. } => "write" },
                })
            })
            .collect();
        let mut v = json!({
            "success": b.error.is_none(),
            "company_id": b.realm,
            "from": b.from.to_string(),
            "to": b.to.to_string(),
            "dry_run": b.dry_run,
            "dates": b.dates,
            "rates_written": b.rates_written,
            "rates_unchanged": b.rates_unchanged,
            "skipped": b.skipped.iter().map(|s| json!({"date": s.date.to_string(), "reason": s.reason})).collect::<Vec<_>>(),
            "plan": plan,
        });
        if let (Some(e), Some(obj)) = (&b.error, v.as_object_mut()) {
            let a = ApiError::from(e.clone());
            obj.insert(
                "error".into(),
                json!({"code": a.code, "message": a.message}),
            );
            obj.insert(
                "failed".into(),
                json!(b
                    .failed
                    .iter()
                    .map(|f| json!({"date": f.date.to_string(), "currency": f.currency.as_str(), "error": f.error}))
                    .collect::<Vec<_>>()),
            );
        }
        v
    }

    #[test]
    fn the_backfill_answer_is_the_old_json() {
        let d = |day| NaiveDate::from_ymd_opt(2026, 5, day).unwrap();
        let eur = Currency::new("EUR").unwrap();
        let step = |day, theirs: Option<&str>, action| Step {
            want: Want {
                date: d(day),
                currency: eur,
                rate: "100.2500".parse().unwrap(),
            },
            theirs: theirs.map(|t| t.parse().unwrap()),
            action,
        };
        let write = Action::Write {
            sync_token: "0".into(),
            request_id: "r".into(),
        };
        let base = Backfill {
            realm: "9341453199574000".into(),
            from: d(1),
            to: d(3),
            dry_run: true,
            dates: 3,
            plan: vec![
                step(1, Some("100.25"), Action::Keep),
                step(2, None, write.clone()),
                step(3, Some("99.10"), write),
            ],
            rates_written: 0,
            rates_unchanged: 1,
            skipped: vec![Skipped {
                date: d(3),
                reason: "no fixing \"in force\"".into(),
            }],
            reads: 3,
            failed: vec![],
            error: None,
        };
        let failed = Backfill {
            dry_run: false,
            rates_written: 1,
            failed: vec![FailedWrite {
                date: d(3),
                currency: eur,
                error: "QuickBooks answered 500".into(),
            }],
            error: Some(crate::sync::Error::ReconnectNeeded),
            ..base.clone()
        };
        let empty = Backfill {
            plan: vec![],
            skipped: vec![],
            error: Some(crate::sync::Error::ReconnectNeeded),
            ..base.clone()
        };
        for b in [base, failed, empty] {
            assert_wire_json(&BackfillAnswer::of(&b), &old_answer(&b));
        }
    }

    #[test]
    fn dry_run_flags() {
        assert_eq!(parse_dry_run(None), Ok(false));
        assert_eq!(parse_dry_run(Some("true")), Ok(true));
        assert_eq!(parse_dry_run(Some("1")), Ok(true));
        assert_eq!(parse_dry_run(Some("FALSE")), Ok(false));
        assert!(parse_dry_run(Some("yes")).is_err());
    }
}
