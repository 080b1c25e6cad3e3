//! Company management: list, sync status, settings, logs. Each company's answers hold only
//! its own data (every read is keyed by its realm id).

use std::sync::Arc;

use crate::time::calendar::rfc3339;
use serde_json::{json, Map, Value};

use super::{ApiError, Ctx, OpResult};
use crate::currency::Currency;
use crate::store::records::{Company, Connection, DriftPolicy, LogKind, LogRecord};

pub use crate::currency::is_iso_currency;

/// The connection state as a word.
pub fn connection_word(c: &Company) -> &'static str {
    if !c.is_active {
        return "disconnected";
    }
    match c.connection {
        Connection::Connected => "connected",
        Connection::ReconnectNeeded { .. } => "reconnect_needed",
        Connection::Disconnected { .. } => "disconnected",
    }
}

/// The brief's company entry (plus connection and fill policy).
pub fn entry(c: &Company) -> Value {
    json!({
        "company_id": c.realm_id,
        "company_name": c.company_name,
        "is_active": c.is_active,
        "sync_enabled": c.sync_enabled,
        "home_currency": c.home_currency.as_str(),
        "is_sandbox": c.is_sandbox,
        "created_at": rfc3339(c.created_at),
        "last_sync_at": c.last_sync_at.map(rfc3339),
        "connection": connection_word(c),
        "fill_non_business_days": c.fill_non_business_days,
        "drift": c.drift.as_str(),
    })
}

/// Largest page of `companies/list` (SPEC §6).
pub const MAX_PAGE: u64 = 1000;

/// What `companies/list` was asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Only companies not disconnected.
    pub active_only: bool,
    /// At most this many (1 to [`MAX_PAGE`]); `None`: all of them.
    pub limit: Option<u64>,
    /// Start after this realm id (the previous page's `next_after`).
    pub after: Option<String>,
}

/// Checks a `limit` (1 to [`MAX_PAGE`]).
///
/// # Errors
/// 400 `bad_parameter`.
pub fn check_limit(limit: u64) -> Result<usize, ApiError> {
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit as usize)
    } else {
        Err(ApiError::bad_request(
            "bad_parameter",
            format!("limit: {limit} is not between 1 and {MAX_PAGE}"),
        ))
    }
}

/// `GET /api/v1/companies/list?active_only=&limit=&after=` and `companies [--all]`: the
/// companies in realm order, a page of at most `limit` after `after` (a range scan, so a
/// page costs its own records), with `next_after` (the `after` of the next page) when more
/// follow, else `null`.
///
/// # Errors
/// 400 `bad_parameter` for a limit outside 1 to 1000; store failure.
pub fn list(ctx: &Ctx, q: &ListQuery) -> OpResult {
    let limit = match q.limit {
        Some(l) => check_limit(l)?,
        None => usize::MAX,
    };
    let active_only = q.active_only;
    let (page, next_after) = ctx
        .store
        .companies_page(q.after.as_deref(), limit, |c| !active_only || c.is_active)?;
    let companies: Vec<Value> = page.iter().map(entry).collect();
    Ok(json!({
        "success": true,
        "count": companies.len(),
        "companies": companies,
        "next_after": next_after,
    }))
}

fn company(ctx: &Ctx, realm: &str) -> Result<Company, ApiError> {
    ctx.store
        .company(realm)?
        .ok_or_else(|| ApiError::unknown_company(realm))
}

/// `GET /api/v1/companies/{id}/sync/status` and `company REALM`.
///
/// # Errors
/// 404 unknown company.
pub fn sync_status(ctx: &Ctx, realm: &str) -> OpResult {
    let c = company(ctx, realm)?;
    let (total, synced) = ctx.store.rate_counts(realm)?;
    let (scr_n, scr_ok) = ctx.store.log_counts(realm, LogKind::Scraping)?;
    let (syn_n, syn_ok) = ctx.store.log_counts(realm, LogKind::Syncing)?;
    Ok(json!({
        "company_id": c.realm_id,
        "company_name": c.company_name,
        "is_active": c.is_active,
        "sync_enabled": c.sync_enabled,
        "home_currency": c.home_currency.as_str(),
        "connection": connection_word(&c),
        "created_at": rfc3339(c.created_at),
        "last_sync_at": c.last_sync_at.map(rfc3339),
        "exchange_rates": {"total": total, "synced": synced, "pending": total - synced},
        "scraping": {"total_attempts": scr_n, "successful": scr_ok, "failed": scr_n - scr_ok},
        "syncing": {"total_attempts": syn_n, "successful": syn_ok, "failed": syn_n - syn_ok},
    }))
}

/// `PUT /api/v1/companies/{id}/settings` and `set REALM ...`: validated as a whole; a bad
/// field changes nothing. Flushed before the answer.
///
/// # Errors
/// 400 for a non-object, an unknown field, a wrong type, a bad currency code or an empty
/// name; 404 unknown company. A company whose sync was just re-enabled is synced at once.
///
/// Runs as a tracked task: a client that goes away after the change was written still gets
/// it flushed and a re-enabled company synced.
pub async fn update_settings(ctx: &Arc<Ctx>, realm: &str, body: &Value) -> OpResult {
    let task_ctx = ctx.clone();
    let (realm, body) = (realm.to_string(), body.clone());
    ctx.tracked("settings", async move {
        apply_settings(&task_ctx, &realm, &body).await
    })
    .await?
}

async fn apply_settings(ctx: &Ctx, realm: &str, body: &Value) -> OpResult {
    let Some(obj) = body.as_object() else {
        return Err(ApiError::bad_request(
            "bad_settings",
            "settings must be a JSON object",
        ));
    };
    // Validate on a copy first (a bad field changes nothing), then apply to the current
    // record atomically, so a sync or token refresh finishing meanwhile is not undone.
    let held = company(ctx, realm)?;
    let mut checked = held.clone();
    apply(&mut checked, obj)?;
    // SPEC §5 "Home currency is QuickBooks'": a home currency other than the one we hold
    // is checked against the company's Preferences (one read); only QuickBooks' own value
    // is accepted, and then it is already what the read stored.
    if checked.home_currency != held.home_currency {
        let quickbooks = ctx.engine.quickbooks_home(realm).await?;
        if quickbooks != checked.home_currency {
            return Err(crate::sync::Error::HomeCurrencyMismatch {
                given: checked.home_currency,
                quickbooks,
            }
            .into());
        }
    }
    let now = ctx.now();
    let mut was_enabled = true;
    let c = ctx
        .store
        .update_company(realm, |c| {
            was_enabled = c.sync_enabled;
            // Cannot fail: the same fields and values were accepted above, and validation
            // does not depend on the record.
            let _ = apply(c, obj);
            c.updated_at = now;
        })
        .await?
        .ok_or_else(|| ApiError::unknown_company(realm))?;
    tracing::info!(realm_id = realm, "Company {realm}: settings updated");
    let reenabled = !was_enabled && c.sync_enabled;
    if reenabled {
        super::sync::after_connected(ctx, realm);
    }
    Ok(json!({
        "success": true,
        "message": format!("Settings updated for {}", c.company_name),
        "company_id": c.realm_id,
        "company": entry(&c),
        "sync_reenabled": reenabled,
    }))
}

fn apply(c: &mut Company, obj: &Map<String, Value>) -> Result<(), ApiError> {
    if obj.is_empty() {
        return Err(ApiError::bad_request(
            "bad_settings",
            "no settings given (sync_enabled, home_currency, company_name, fill_non_business_days, drift)",
        ));
    }
    for (k, v) in obj {
        match k.as_str() {
            "sync_enabled" => c.sync_enabled = v.as_bool().ok_or_else(|| type_err(k, "true or false"))?,
            "fill_non_business_days" => c.fill_non_business_days = v.as_bool().ok_or_else(|| type_err(k, "true or false"))?,
            "home_currency" => {
                let s = v.as_str().ok_or_else(|| type_err(k, "a currency code such as EUR"))?;
                let cur = Currency::new(s)
                    .ok()
                    .filter(|c| s.len() == 3 && s.chars().all(|ch| ch.is_ascii_uppercase()) && is_iso_currency(*c))
                    .ok_or_else(|| ApiError::bad_request("bad_currency", format!("home_currency: {s:?} is not an ISO 4217 currency code (e.g. EUR)")))?;
                c.home_currency = cur;
            }
            "drift" => {
                c.drift = v
                    .as_str()
                    .and_then(DriftPolicy::parse)
                    .ok_or_else(|| type_err(k, "\"correct\" or \"report\""))?;
            }
            "company_name" => {
                let s = v.as_str().ok_or_else(|| type_err(k, "text"))?.trim();
                if s.is_empty() || s.chars().count() > 200 {
                    return Err(ApiError::bad_request("bad_settings", "company_name must be 1 to 200 characters"));
                }
                c.company_name = s.to_string();
            }
            other => {
                return Err(ApiError::bad_request(
                    "unknown_field",
                    format!("unknown setting {other:?} (allowed: sync_enabled, home_currency, company_name, fill_non_business_days, drift)"),
                ))
            }
        }
    }
    Ok(())
}

fn type_err(k: &str, want: &str) -> ApiError {
    ApiError::bad_request("bad_settings", format!("{k}: expected {want}"))
}

/// `logs REALM [--limit N]`: newest first.
///
/// # Errors
/// 404 unknown company.
pub fn logs(ctx: &Ctx, realm: &str, limit: usize) -> OpResult {
    let c = company(ctx, realm)?;
    let recs = ctx.store.logs(realm, limit.clamp(1, 10_000))?;
    Ok(json!({
        "success": true,
        "company_id": c.realm_id,
        "logs": recs.iter().map(log_json).collect::<Vec<_>>(),
    }))
}

/// One log record as `logs` shows it; a drift record adds `currency`, `theirs` (null when
/// QuickBooks no longer holds the rate) and `ours`, as decimal strings.
fn log_json(r: &LogRecord) -> Value {
    let mut v = json!({
        "at": rfc3339(r.at),
        "kind": match r.kind {
            LogKind::Scraping => "scraping",
            LogKind::Syncing => "syncing",
            LogKind::Connection => "connection",
            LogKind::Drift => "drift",
        },
        "success": r.success,
        "date": r.date.map(|d| d.to_string()),
        "message": r.message,
        "rates_written": r.rates_written,
        "rates_unchanged": r.rates_unchanged,
        "intuit_tids": r.intuit_tids,
    });
    if let (Some(d), Some(obj)) = (&r.drift, v.as_object_mut()) {
        obj.insert("currency".into(), json!(d.currency.as_str()));
        obj.insert(
            "theirs".into(),
            json!(d.theirs.map(|t| t.normalize().to_string())),
        );
        obj.insert("ours".into(), json!(d.ours.normalize().to_string()));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_one_to_a_thousand() {
        assert_eq!(check_limit(1).unwrap(), 1);
        assert_eq!(check_limit(1000).unwrap(), 1000);
        for bad in [0, 1001, u64::MAX] {
            let e = check_limit(bad).unwrap_err();
            assert_eq!((e.status, e.code), (400, "bad_parameter"), "{bad}");
        }
    }

    #[test]
    fn settings_validation_changes_nothing_on_error() {
        let mut c = crate::store::tests::company("1");
        let before = c.clone();
        for bad in [
            json!({}),
            json!({"sync_enabled": "yes"}),
            json!({"home_currency": "EURO"}),
            json!({"home_currency": "XYZ"}),
            json!({"home_currency": "eur"}),
            json!({"company_name": ""}),
            json!({"colour": "red"}),
            json!({"drift": "fix"}),
            json!({"drift": true}),
        ] {
            let mut copy = c.clone();
            assert!(apply(&mut copy, bad.as_object().unwrap()).is_err(), "{bad}");
        }
        apply(
            &mut c,
            json!({"sync_enabled": false, "home_currency": "EUR", "company_name": "X"})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        assert!(!c.sync_enabled);
        assert_eq!(c.home_currency.as_str(), "EUR");
        assert_ne!(before, c);
        assert_eq!(c.drift, DriftPolicy::Correct);
        apply(&mut c, json!({"drift": "report"}).as_object().unwrap()).unwrap();
        assert_eq!(c.drift, DriftPolicy::Report);
        assert_eq!(entry(&c)["drift"], "report");
    }
}
