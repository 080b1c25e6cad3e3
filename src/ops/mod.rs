//! Operations shared by the HTTP API and the control socket. Each returns JSON data or an
//! [`ApiError`]; the front ends only translate requests and answers.

pub mod companies;
mod error;
pub mod metrics;
pub mod migrate;
pub mod oauth;
pub use error::ApiError;

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::app::AppState;
use crate::boa::model::TableKind;
use crate::scheduler::time::last_business_day_publication;
use crate::store::records::{Company, Connection};
use crate::store::CompanyCounts;

/// Result of an operation.
pub type OpResult = Result<Value, ApiError>;

/// RFC 3339 UTC with second precision (`2024-01-15T07:00:00Z`).
pub fn ts(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Why the daemon is degraded (empty = healthy): a stale fixing, companies not synced for
/// over 24 business hours, companies needing a reconnect, a failed last scrape.
///
/// # Errors
/// Store failure (the caller answers `unhealthy`).
pub fn health_reasons(
    state: &AppState,
    companies: &[Company],
) -> Result<Vec<String>, crate::store::Error> {
    let mut reasons = Vec::new();
    let config = state.config();
    let tz = config.schedule.timezone;
    let now = state.now();
    let today = state.today();
    if config.schedule.enabled {
        let holidays = crate::fixings::holidays(state)?;
        let mut expected = last_business_day_publication(now, tz, config.schedule.give_up_at);
        let mut guard = 0;
        while holidays.contains(&expected) && guard < 31 {
            expected = crate::scheduler::time::previous_business_day(expected);
            guard += 1;
        }
        match state.store.table_on_or_before(TableKind::Main, today)? {
            None => reasons.push("no BoA fixing is stored".to_string()),
            Some(t) if t.table.date < expected => reasons.push(format!(
                "the newest BoA fixing is dated {}; the fixing of {expected} should be stored by now",
                t.table.date
            )),
            Some(_) => {}
        }
        let stale = companies
            .iter()
            .filter(|c| c.is_active && c.sync_enabled && c.is_connected())
            .filter(|c| {
                crate::alerts::business_hours(c.last_sync_at.unwrap_or(c.created_at), now, tz) > 24
            })
            .count();
        if stale > 0 {
            reasons.push(format!(
                "{stale} companies not synced for over 24 business hours"
            ));
        }
    }
    let reconnect = companies
        .iter()
        .filter(|c| c.is_active && matches!(c.connection, Connection::ReconnectNeeded { .. }))
        .count();
    if reconnect > 0 {
        reasons.push(format!(
            "{reconnect} companies need to reconnect (token refresh failed)"
        ));
    }
    if let Some(last) = state.store.scrapes(1)?.first() {
        if !last.success {
            reasons.push(format!(
                "the last BoA scrape failed at {}: {}",
                ts(last.at),
                last.outcome
            ));
        }
    }
    Ok(reasons)
}

/// `GET /health`: the brief's JSON from the store's real counts, with `status` `healthy` or
/// `degraded` (and the reasons); `unhealthy` + 503 only when the store cannot be read.
pub fn health(state: &AppState) -> (u16, Value) {
    let result = state.store.companies().and_then(|companies| {
        let reasons = health_reasons(state, &companies)?;
        Ok((companies, reasons))
    });
    match result {
        Ok((companies, reasons)) => {
            let counts = CompanyCounts::of(&companies);
            (
                200,
                json!({
                    "status": if reasons.is_empty() { "healthy" } else { "degraded" },
                    "total_companies": counts.total,
                    "active_companies": counts.active,
                    "companies_with_expired_tokens": counts.expired_tokens,
                    "last_sync": counts.last_sync.map(ts),
                    "reasons": reasons,
                }),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "health: store unreadable");
            (
                503,
                json!({"status": "unhealthy", "reasons": [format!("store unreadable: {e}")]}),
            )
        }
    }
}

/// `status`: version, uptime, store, last fixing, counts.
pub fn status(state: &AppState) -> OpResult {
    let companies = state.store.companies()?;
    let counts = CompanyCounts::of(&companies);
    let reasons = health_reasons(state, &companies)?;
    let today = state.today();
    let mut last = serde_json::Map::new();
    for kind in [TableKind::Main, TableKind::Minor] {
        if let Some(t) = state.store.table_on_or_before(kind, today)? {
            last.insert(
                kind.as_str().into(),
                json!({"date": t.table.date.to_string(), "stored_at": ts(t.stored_at)}),
            );
        }
    }
    let config = state.config();
    Ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "started_at": ts(state.started_at),
        "uptime_secs": (Utc::now() - state.started_at).num_seconds(),
        "environment": config.environment,
        "http_listen": state.http_addr.to_string(),
        "control_socket": config.control_socket.display().to_string(),
        "store": {
            "path": state.store.path().display().to_string(),
            "schema_version": state.store.schema_version(),
            "size_bytes": state.store.size_on_disk(),
            "fixing_tables": state.store.table_count(),
        },
        "last_fixing": last,
        "companies": {
            "total": counts.total,
            "active": counts.active,
            "with_expired_tokens": counts.expired_tokens,
        },
        "last_sync": counts.last_sync.map(ts),
        "schedule": {
            "enabled": config.schedule.enabled,
            "time": config.schedule.time.format("%H:%M").to_string(),
            "timezone": config.schedule.timezone.name(),
            "next_run": state.next_run().map(ts),
            "last_run": crate::scheduler::runner::last_run(state).map(|r| json!({
                "date": r.date.to_string(),
                "started_at": ts(r.started_at),
                "finished_at": ts(r.finished_at),
                "outcome": r.outcome,
            })),
        },
        "sync_all": {
            "running_for": state.sync.running_date().map(|d| d.to_string()),
            "total": state.sync.progress.total.load(std::sync::atomic::Ordering::Relaxed),
            "done": state.sync.progress.done.load(std::sync::atomic::Ordering::Relaxed),
            "failed": state.sync.progress.failed.load(std::sync::atomic::Ordering::Relaxed),
        },
        "health": {"status": if reasons.is_empty() { "healthy" } else { "degraded" }, "reasons": reasons},
    }))
}
