//! Operations shared by the HTTP API and the control socket. Each returns JSON data or an
//! [`ApiError`]; the front ends only translate requests and answers.

mod error;
pub mod oauth;
pub use error::ApiError;

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::app::AppState;
use crate::boa::model::TableKind;

/// Result of an operation.
pub type OpResult = Result<Value, ApiError>;

/// RFC 3339 UTC with second precision (`2024-01-15T07:00:00Z`).
pub fn ts(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `GET /health`: the brief's JSON from the store's real counts. `unhealthy` + 503 when
/// the store cannot be read.
pub fn health(state: &AppState) -> (u16, Value) {
    match state.store.company_counts() {
        Ok(c) => (
            200,
            json!({
                "status": "healthy",
                "total_companies": c.total,
                "active_companies": c.active,
                "companies_with_expired_tokens": c.expired_tokens,
                "last_sync": c.last_sync.map(ts),
            }),
        ),
        Err(e) => {
            tracing::error!(error = %e, "health: store unreadable");
            (
                503,
                json!({"status": "unhealthy", "reasons": ["store unreadable"]}),
            )
        }
    }
}

/// `status`: version, uptime, store, last fixing, counts.
pub fn status(state: &AppState) -> OpResult {
    let counts = state.store.company_counts()?;
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
    }))
}
