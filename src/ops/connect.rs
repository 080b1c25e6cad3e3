//! Connecting companies, as operations (the work is [`crate::connections`]): start the
//! OAuth flow, complete its callback and sync the new company at once, invite links,
//! connection status and disconnect. The callback and disconnect run as tracked tasks: a
//! client that goes away cancels neither (a grant Intuit has issued is stored, never lost;
//! a grant revoked at Intuit is never left active here), and the shutdown drain waits.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::{ApiError, Ctx, OpResult};
use crate::qbo::tokens::HARD_EXPIRY_WARNING;
use crate::store::records::{Company, Connection};
use crate::time::calendar::rfc3339;

pub use crate::connections::{CallbackParams, ConnectStart, STATE_COOKIE};

/// Starts a connection (`/oauth/connect`). Under `enrollment = "invite"` a valid, unused
/// invite is required.
///
/// # Errors
/// 403 without a valid invite; 503 when the Intuit app is not configured.
pub async fn connect(ctx: &Ctx, invite: Option<&str>) -> Result<ConnectStart, ApiError> {
    Ok(ctx.connections.start(invite).await?)
}

/// A fresh single-use invite link (`connect-url`).
///
/// # Errors
/// Store failure.
pub async fn connect_url(ctx: &Ctx) -> OpResult {
    let (code, expires_at) = ctx.connections.new_invite().await?;
    let base = ctx.config().server.public_url.clone();
    let mut url = base
        .join("api/v1/oauth/connect")
        .map_err(ApiError::internal)?;
    url.query_pairs_mut().append_pair("invite", &code);
    Ok(
        json!({"success": true, "url": url.to_string(), "expires_at": rfc3339(expires_at), "single_use": true}),
    )
}

/// Completes a connection (`/oauth/callback`) and syncs the company at once.
///
/// # Errors
/// 400 for a bad/missing/reused/expired/foreign state, a denial or a refused code; 403 for
/// an invite used meanwhile; 502 when Intuit fails.
pub async fn callback(
    ctx: &Arc<Ctx>,
    p: &CallbackParams<'_>,
    cookie_header: Option<&str>,
) -> Result<Company, ApiError> {
    let owned = (
        p.code.map(str::to_owned),
        p.state.map(str::to_owned),
        p.realm_id.map(str::to_owned),
        p.error.map(str::to_owned),
        cookie_header.map(str::to_owned),
    );
    let task_ctx = ctx.clone();
    ctx.tracked("connection", async move {
        let (code, state, realm_id, error, cookie) = owned;
        let p = CallbackParams {
            code: code.as_deref(),
            state: state.as_deref(),
            realm_id: realm_id.as_deref(),
            error: error.as_deref(),
        };
        let company = task_ctx.connections.complete(&p, cookie.as_deref()).await?;
        super::sync::after_connected(&task_ctx, &company.realm_id);
        Ok(company)
    })
    .await?
}

/// `GET /api/v1/oauth/status/{id}`: connection state and token expiries (never the tokens).
///
/// # Errors
/// 404 unknown company.
pub async fn status(ctx: &Ctx, realm: &str) -> OpResult {
    let c = ctx
        .store
        .company(realm)
        .await?
        .ok_or_else(|| ApiError::unknown_company(realm))?;
    let now = ctx.now();
    let t = c.tokens.as_ref();
    let hard: Option<DateTime<Utc>> = t.and_then(|t| t.hard_expires_at);
    let reason = match &c.connection {
        Connection::ReconnectNeeded { reason, since } => {
            json!({"since": rfc3339(*since), "reason": reason})
        }
        _ => Value::Null,
    };
    Ok(json!({
        "success": true,
        "company_id": c.realm_id,
        "company_name": c.company_name,
        "status": super::companies::connection_word(&c),
        "connected": c.is_connected(),
        "is_active": c.is_active,
        "reconnect_needed": matches!(c.connection, Connection::ReconnectNeeded { .. }),
        "reconnect_reason": reason,
        "is_sandbox": c.is_sandbox,
        "access_token_expires_at": t.map(|t| rfc3339(t.access_expires_at)),
        "refresh_token_expires_at": t.map(|t| rfc3339(t.refresh_expires_at)),
        "refresh_token_hard_expires_at": hard.map(rfc3339),
        "hard_expiry_warning": hard.is_some_and(|h| h - now < HARD_EXPIRY_WARNING),
        "last_refreshed_at": t.map(|t| rfc3339(t.refreshed_at)),
    }))
}

/// `GET /api/v1/oauth/disconnect/{id}` and `disconnect REALM`: revoke at Intuit, delete the
/// tokens here, keep the company and its history (`is_active` false).
///
/// # Errors
/// 404 unknown company; 502 when Intuit cannot be reached (nothing changed then).
pub async fn disconnect(ctx: &Arc<Ctx>, realm: &str) -> OpResult {
    let task_ctx = ctx.clone();
    let realm = realm.to_string();
    ctx.tracked("disconnect", async move {
        let c = task_ctx.connections.disconnect(&realm).await?;
        Ok(json!({
            "success": true,
            "message": format!("Disconnected {} from QuickBooks; its history is kept", c.company_name),
            "company_id": c.realm_id,
            "is_active": false,
        }))
    })
    .await?
}
