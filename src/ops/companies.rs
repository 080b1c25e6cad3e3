//! Company management: list, sync status, settings, logs. Each company's answers hold only
//! its own data (every read is keyed by its realm id).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{ApiError, Ctx, OpResult};
use crate::currency::Currency;
use crate::store::records::{Company, Connection, DriftPolicy, LogKind, LogRecord};
use crate::time::calendar::rfc3339;

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

/// The brief's company entry (plus connection and fill policy), as `companies/list`,
/// `set` and the settings answer show it. Fields in alphabetical order: the order the
/// answers have always had on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompanyEntry {
    /// The realm id.
    pub company_id: String,
    /// The company's name.
    pub company_name: String,
    /// `connected`, `reconnect_needed` or `disconnected` ([`connection_word`]).
    pub connection: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// `correct` or `report`.
    pub drift: String,
    /// Whether weekends and holidays get the fixing in force.
    pub fill_non_business_days: bool,
    /// ISO 4217.
    pub home_currency: String,
    /// Not disconnected.
    pub is_active: bool,
    /// A sandbox company.
    pub is_sandbox: bool,
    /// RFC 3339 UTC; `null` before the first sync.
    pub last_sync_at: Option<String>,
    /// Whether syncs run.
    pub sync_enabled: bool,
}

/// The brief's company entry of a company.
pub fn entry(c: &Company) -> CompanyEntry {
    CompanyEntry {
        company_id: c.realm_id.clone(),
        company_name: c.company_name.clone(),
        connection: connection_word(c).into(),
        created_at: rfc3339(c.created_at),
        drift: c.drift.as_str().into(),
        fill_non_business_days: c.fill_non_business_days,
        home_currency: c.home_currency.as_str().into(),
        is_active: c.is_active,
        is_sandbox: c.is_sandbox,
        last_sync_at: c.last_sync_at.map(rfc3339),
        sync_enabled: c.sync_enabled,
    }
}

/// The answer of `companies/list`: a page of companies and where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListAnswer {
    /// The page, in realm order.
    pub companies: Vec<CompanyEntry>,
    /// How many are on the page.
    pub count: usize,
    /// The `after` of the next page; `null` on the last page.
    pub next_after: Option<String>,
    /// Always true.
    pub success: bool,
}

/// Totals of one kind of record of a company (`exchange_rates` of `company`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateCounts {
    /// Stored but not yet written.
    pub pending: u64,
    /// Written to QuickBooks.
    pub synced: u64,
    /// Stored.
    pub total: u64,
}

/// Attempts of one kind (`scraping`, `syncing` of `company`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptCounts {
    /// Failed attempts.
    pub failed: u64,
    /// Successful attempts.
    pub successful: u64,
    /// All attempts.
    pub total_attempts: u64,
}

impl AttemptCounts {
    fn of((n, ok): (u64, u64)) -> AttemptCounts {
        AttemptCounts {
            failed: n - ok,
            successful: ok,
            total_attempts: n,
        }
    }
}

/// The answer of `company REALM` (`…/{id}/sync/status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatusAnswer {
    /// The realm id.
    pub company_id: String,
    /// The company's name.
    pub company_name: String,
    /// [`connection_word`].
    pub connection: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// The company's stored rates.
    pub exchange_rates: RateCounts,
    /// ISO 4217.
    pub home_currency: String,
    /// Not disconnected.
    pub is_active: bool,
    /// RFC 3339 UTC or `null`.
    pub last_sync_at: Option<String>,
    /// Scrape attempts logged for the company.
    pub scraping: AttemptCounts,
    /// Whether syncs run.
    pub sync_enabled: bool,
    /// Sync attempts logged for the company.
    pub syncing: AttemptCounts,
}

impl SyncStatusAnswer {
    /// The answer from the company and its (total, good) counts of rates, scrapes, syncs.
    pub fn of(
        c: &Company,
        (total, synced): (u64, u64),
        scraping: (u64, u64),
        syncing: (u64, u64),
    ) -> SyncStatusAnswer {
        SyncStatusAnswer {
            company_id: c.realm_id.clone(),
            company_name: c.company_name.clone(),
            connection: connection_word(c).into(),
            created_at: rfc3339(c.created_at),
            exchange_rates: RateCounts {
                pending: total - synced,
                synced,
                total,
            },
            home_currency: c.home_currency.as_str().into(),
            is_active: c.is_active,
            last_sync_at: c.last_sync_at.map(rfc3339),
            scraping: AttemptCounts::of(scraping),
            sync_enabled: c.sync_enabled,
            syncing: AttemptCounts::of(syncing),
        }
    }
}

/// The answer of `set REALM …` (`PUT …/{id}/settings`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsAnswer {
    /// The company as it is now.
    pub company: CompanyEntry,
    /// The realm id.
    pub company_id: String,
    /// `Settings updated for NAME`.
    pub message: String,
    /// Always true.
    pub success: bool,
    /// Whether this change turned syncing back on (a sync was started).
    pub sync_reenabled: bool,
}

impl SettingsAnswer {
    /// The answer for the updated company.
    pub fn of(c: &Company, sync_reenabled: bool) -> SettingsAnswer {
        SettingsAnswer {
            company: entry(c),
            company_id: c.realm_id.clone(),
            message: format!("Settings updated for {}", c.company_name),
            success: true,
            sync_reenabled,
        }
    }
}

/// The answer of `logs REALM`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsAnswer {
    /// The realm id.
    pub company_id: String,
    /// Newest first.
    pub logs: Vec<LogEntry>,
    /// Always true.
    pub success: bool,
}

/// One log record as `logs` shows it; a drift record adds `currency`, `theirs` (null when
/// QuickBooks no longer holds the rate) and `ours`, as decimal strings; other records have
/// none of the three keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// RFC 3339 UTC.
    pub at: String,
    /// Drift only: the currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// The rate date, if any.
    pub date: Option<String>,
    /// Intuit's transaction ids of the requests.
    pub intuit_tids: Vec<String>,
    /// `scraping`, `syncing`, `connection` or `drift`.
    pub kind: String,
    /// What happened.
    pub message: String,
    /// Drift only: what we confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ours: Option<String>,
    /// Rates found already right.
    pub rates_unchanged: u32,
    /// Rates written.
    pub rates_written: u32,
    /// Whether it succeeded.
    pub success: bool,
    /// Drift only (`Some`): what QuickBooks holds, `null` when the rate is gone there.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub theirs: Option<Option<String>>,
}

/// A key that is present deserializes to `Some` even when its value is `null`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
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
pub async fn list(ctx: &Ctx, q: &ListQuery) -> OpResult<ListAnswer> {
    let limit = match q.limit {
        Some(l) => check_limit(l)?,
        None => usize::MAX,
    };
    let active_only = q.active_only;
    let (page, next_after) = ctx
        .store
        .companies_page(q.after.as_deref(), limit, |c| !active_only || c.is_active)
        .await?;
    let companies: Vec<CompanyEntry> = page.iter().map(entry).collect();
    Ok(ListAnswer {
        count: companies.len(),
        companies,
        next_after,
        success: true,
    })
}

async fn company(ctx: &Ctx, realm: &str) -> Result<Company, ApiError> {
    ctx.store
        .company(realm)
        .await?
        .ok_or_else(|| ApiError::unknown_company(realm))
}

/// `GET /api/v1/companies/{id}/sync/status` and `company REALM`.
///
/// # Errors
/// 404 unknown company.
pub async fn sync_status(ctx: &Ctx, realm: &str) -> OpResult<SyncStatusAnswer> {
    let c = company(ctx, realm).await?;
    let rates = ctx.store.rate_counts(realm).await?;
    let scraping = ctx.store.log_counts(realm, LogKind::Scraping).await?;
    let syncing = ctx.store.log_counts(realm, LogKind::Syncing).await?;
    Ok(SyncStatusAnswer::of(&c, rates, scraping, syncing))
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
pub async fn update_settings(
    ctx: &Arc<Ctx>,
    realm: &str,
    body: &Value,
) -> OpResult<SettingsAnswer> {
    let task_ctx = ctx.clone();
    let (realm, body) = (realm.to_string(), body.clone());
    ctx.tracked("settings", async move {
        apply_settings(&task_ctx, &realm, &body).await
    })
    .await?
}

async fn apply_settings(ctx: &Ctx, realm: &str, body: &Value) -> OpResult<SettingsAnswer> {
    let Some(obj) = body.as_object() else {
        return Err(ApiError::bad_request(
            "bad_settings",
            "settings must be a JSON object",
        ));
    };
    // Validate on a copy first (a bad field changes nothing), then apply to the current
    // record atomically, so a sync or token refresh finishing meanwhile is not undone.
    let held = company(ctx, realm).await?;
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
    Ok(SettingsAnswer::of(&c, reenabled))
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
pub async fn logs(ctx: &Ctx, realm: &str, limit: usize) -> OpResult<LogsAnswer> {
    let c = company(ctx, realm).await?;
    let recs = ctx.store.logs(realm, limit.clamp(1, 10_000)).await?;
    Ok(LogsAnswer {
        company_id: c.realm_id,
        logs: recs.iter().map(LogEntry::of).collect(),
        success: true,
    })
}

impl LogEntry {
    /// One log record as `logs` shows it.
    pub fn of(r: &LogRecord) -> LogEntry {
        let drift = r.drift.as_ref();
        LogEntry {
            at: rfc3339(r.at),
            currency: drift.map(|d| d.currency.as_str().into()),
            date: r.date.map(|d| d.to_string()),
            intuit_tids: r.intuit_tids.clone(),
            kind: match r.kind {
                LogKind::Scraping => "scraping",
                LogKind::Syncing => "syncing",
                LogKind::Connection => "connection",
                LogKind::Drift => "drift",
            }
            .into(),
            message: r.message.clone(),
            ours: drift.map(|d| d.ours.normalize().to_string()),
            rates_unchanged: r.rates_unchanged,
            rates_written: r.rates_written,
            success: r.success,
            theirs: drift.map(|d| d.theirs.map(|t| t.normalize().to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::assert_wire_json;
    use crate::store::records::DriftDetail;
    use chrono::TimeZone;
    use serde_json::json;

    // The answers as the code before the typed answers built them (`json!`, verbatim).
    fn old_entry(c: &Company) -> Value {
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

    fn old_log_json(r: &LogRecord) -> Value {
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

    fn companies() -> Vec<Company> {
        let mut a = crate::store::tests::company("9341453199574000");
        a.company_name = "Ëlbasan \"Sh.p.k.\"".into();
        let mut b = crate::store::tests::company("2");
        b.last_sync_at = Some(chrono::Utc.with_ymd_and_hms(2026, 5, 22, 7, 5, 9).unwrap());
        b.connection = Connection::ReconnectNeeded {
            since: chrono::Utc::now(),
            reason: "invalid_grant".into(),
        };
        b.drift = DriftPolicy::Report;
        b.sync_enabled = false;
        let mut c = crate::store::tests::company("3");
        c.is_active = false;
        c.is_sandbox = false;
        c.fill_non_business_days = false;
        vec![a, b, c]
    }

    #[test]
    fn company_answers_are_the_old_json() {
        for c in companies() {
            assert_wire_json(&entry(&c), &old_entry(&c));
            let old_status = json!({
                "company_id": c.realm_id,
                "company_name": c.company_name,
                "is_active": c.is_active,
                "sync_enabled": c.sync_enabled,
                "home_currency": c.home_currency.as_str(),
                "connection": connection_word(&c),
                "created_at": rfc3339(c.created_at),
                "last_sync_at": c.last_sync_at.map(rfc3339),
                "exchange_rates": {"total": 40, "synced": 38, "pending": 40 - 38},
                "scraping": {"total_attempts": 5, "successful": 4, "failed": 5 - 4},
                "syncing": {"total_attempts": 0, "successful": 0, "failed": 0},
            });
            let typed = SyncStatusAnswer::of(&c, (40, 38), (5, 4), (0, 0));
            assert_wire_json(&typed, &old_status);
            for reenabled in [true, false] {
                let old_settings = json!({
                    "success": true,
                    "message": format!("Settings updated for {}", c.company_name),
                    "company_id": c.realm_id,
                    "company": old_entry(&c),
                    "sync_reenabled": reenabled,
                });
                assert_wire_json(&SettingsAnswer::of(&c, reenabled), &old_settings);
            }
        }
        for next_after in [None, Some("3".to_string())] {
            let list = companies();
            let old: Vec<Value> = list.iter().map(old_entry).collect();
            let old = json!({
                "success": true,
                "count": old.len(),
                "companies": old,
                "next_after": next_after,
            });
            let typed = ListAnswer {
                companies: list.iter().map(entry).collect(),
                count: list.len(),
                next_after: next_after.clone(),
                success: true,
            };
            assert_wire_json(&typed, &old);
        }
    }

    #[test]
    fn the_logs_answer_is_the_old_json() {
        let at = chrono::Utc.with_ymd_and_hms(2026, 5, 22, 7, 5, 9).unwrap();
        let plain = LogRecord {
            at,
            kind: LogKind::Syncing,
            success: false,
            date: Some(chrono::NaiveDate::from_ymd_opt(2026, 5, 22).unwrap()),
            message: "Sync failed: \"x\"".into(),
            rates_written: 3,
            rates_unchanged: 2,
            intuit_tids: vec!["tid-1".into(), "tid-2".into()],
            drift: None,
        };
        let drift = |theirs: Option<&str>| LogRecord {
            kind: LogKind::Drift,
            date: None,
            drift: Some(DriftDetail {
                currency: crate::currency::Currency::new("EUR").unwrap(),
                theirs: theirs.map(|t| t.parse().unwrap()),
                ours: "100.2500".parse().unwrap(),
            }),
            ..plain.clone()
        };
        let records = [
            plain.clone(),
            LogRecord::connection(at, true, "connected", vec![]),
            drift(Some("99.10")),
            drift(None),
        ];
        for r in &records {
            assert_wire_json(&LogEntry::of(r), &old_log_json(r));
        }
        let old = json!({
            "success": true,
            "company_id": "1",
            "logs": records.iter().map(old_log_json).collect::<Vec<_>>(),
        });
        let typed = LogsAnswer {
            company_id: "1".into(),
            logs: records.iter().map(LogEntry::of).collect(),
            success: true,
        };
        assert_wire_json(&typed, &old);
    }

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
        assert_eq!(entry(&c).drift, "report");
    }
}
