//! The backfill answer (`POST /api/v1/companies/{id}/backfill`, `backfill REALM`): parses the
//! range, runs [`SyncEngine::backfill`](crate::sync::SyncEngine::backfill) and shapes the
//! JSON. A backfill that wrote part of its plan before a write failed answers 200 with
//! `"success": false`, the error, what was written (counted) and the writes that failed, so
//! the caller sees both; a refusal before any write is an error answer.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{parse_date, ApiError, Ctx, OpResult};
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
) -> OpResult {
    if ctx.store.company(realm)?.is_none() {
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
    Ok(answer(&done))
}

/// The answer of SPEC §5 "Backfill" (decimals as strings).
pub fn answer(b: &Backfill) -> Value {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dry_run_flags() {
        assert_eq!(parse_dry_run(None), Ok(false));
        assert_eq!(parse_dry_run(Some("true")), Ok(true));
        assert_eq!(parse_dry_run(Some("1")), Ok(true));
        assert_eq!(parse_dry_run(Some("FALSE")), Ok(false));
        assert!(parse_dry_run(Some("yes")).is_err());
    }
}
