//! Connecting companies: the OAuth `state` (random, single-use, 10-minute expiry, bound to
//! the browser by an HMAC-signed cookie), the callback that creates or re-activates a
//! company (and syncs it at once), disconnect (revoke + soft delete), connection status,
//! and invite links (consumed when their connection succeeds).
//!
//! Connect, disconnect and token refresh of one company hold the realm's token lock, so a
//! refresh in flight never writes tokens onto a disconnected company or over a new grant.

use crate::time::calendar::rfc3339;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::{ApiError, Ctx, OpResult};
use crate::config::Enrollment;
use crate::currency::Currency;
use crate::qbo::tokens::HARD_EXPIRY_WARNING;
use crate::store::records::{Company, Connection, DriftPolicy, LogRecord, PendingAuth, TokenSet};

/// Name of the cookie that binds a `state` to the browser that started the flow.
pub const STATE_COOKIE: &str = "boa_oauth_state";
/// Lifetime of a `state`.
pub const STATE_TTL: Duration = Duration::minutes(10);
/// Lifetime of an invite link from `connect-url`.
pub const INVITE_TTL: Duration = Duration::days(7);

fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
}

fn sign(key: &[u8], msg: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(msg.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn verify(key: &[u8], msg: &str, sig_hex: &str) -> bool {
    let Ok(sig) = hex::decode(sig_hex) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return false;
    };
    mac.update(msg.as_bytes());
    mac.verify_slice(&sig).is_ok()
}

/// What `/oauth/connect` answers: where to send the browser and the cookie to set.
#[derive(Debug)]
pub struct ConnectStart {
    /// Intuit's authorize URL with our `state`.
    pub redirect: String,
    /// `Set-Cookie` value.
    pub cookie: String,
}

/// Starts a connection. Under `enrollment = "invite"` a valid, unused invite is required.
///
/// # Errors
/// 403 without a valid invite; 503 when the Intuit app is not configured.
pub async fn connect(ctx: &Ctx, invite: Option<&str>) -> Result<ConnectStart, ApiError> {
    let config = ctx.config();
    if config.quickbooks.client_id.is_empty() {
        return Err(ApiError::new(
            503,
            "not_configured",
            "QuickBooks is not configured (quickbooks.client_id is empty)",
        ));
    }
    let now = ctx.now();
    if config.server.enrollment == Enrollment::Invite {
        let Some(code) = invite else {
            return Err(ApiError::new(
                403,
                "invite_required",
                "connections are by invitation only; ask your administrator for a link",
            ));
        };
        // Checked here, consumed only when the connection succeeds: an abandoned flow
        // does not burn the link.
        match ctx.store.pending(&format!("invite:{code}"))? {
            Some(PendingAuth::Invite { expires_at, .. }) if expires_at > now => {}
            _ => return Err(invalid_invite()),
        }
    }
    // Anyone may start a flow and most abandoned ones are never seen again: drop expired
    // states and invites here so the store does not grow without bound.
    if let Err(e) = ctx.store.purge_expired_pending(now) {
        tracing::warn!(error = %e, "purging expired OAuth states failed");
    }
    let st = random_token();
    let nonce = random_token();
    let pending = match invite.filter(|_| config.server.enrollment == Enrollment::Invite) {
        Some(code) => PendingAuth::InvitedState {
            created_at: now,
            expires_at: now + STATE_TTL,
            browser_nonce: nonce.clone(),
            invite: code.to_string(),
        },
        None => PendingAuth::State {
            created_at: now,
            expires_at: now + STATE_TTL,
            browser_nonce: nonce.clone(),
        },
    };
    ctx.store
        .put_pending(&format!("state:{st}"), &pending)
        .await?;
    let value = format!("{st}.{nonce}");
    let sig = sign(&ctx.hmac_key, &value);
    let secure = if config.server.public_url.scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{STATE_COOKIE}={value}.{sig}; Path=/api/v1/oauth; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        STATE_TTL.num_seconds()
    );
    let redirect = ctx.tokens.oauth().authorize_url(&st).to_string();
    Ok(ConnectStart { redirect, cookie })
}

/// A fresh single-use invite link (`connect-url`).
///
/// # Errors
/// Store failure.
pub async fn connect_url(ctx: &Ctx) -> OpResult {
    let now = ctx.now();
    let code = random_token();
    let expires_at = now + INVITE_TTL;
    ctx.store
        .put_pending(
            &format!("invite:{code}"),
            &PendingAuth::Invite {
                created_at: now,
                expires_at,
            },
        )
        .await?;
    let base = ctx.config().server.public_url.clone();
    let mut url = base
        .join("api/v1/oauth/connect")
        .map_err(ApiError::internal)?;
    url.query_pairs_mut().append_pair("invite", &code);
    Ok(
        json!({"success": true, "url": url.to_string(), "expires_at": rfc3339(expires_at), "single_use": true}),
    )
}

fn cookie_value(cookie_header: Option<&str>) -> Option<&str> {
    cookie_header?.split(';').map(str::trim).find_map(|c| {
        c.strip_prefix(STATE_COOKIE)
            .and_then(|r| r.strip_prefix('='))
    })
}

/// The callback's query parameters.
#[derive(Debug, Default)]
pub struct CallbackParams<'a> {
    /// Authorization code.
    pub code: Option<&'a str>,
    /// Our state.
    pub state: Option<&'a str>,
    /// The company id.
    pub realm_id: Option<&'a str>,
    /// `access_denied` etc.
    pub error: Option<&'a str>,
}

fn refuse(code: &'static str, msg: &str) -> ApiError {
    ApiError::bad_request(code, msg)
}

fn invalid_invite() -> ApiError {
    ApiError::new(
        403,
        "invalid_invite",
        "this invitation link is unknown, used or expired; ask for a new one",
    )
}

/// Completes a connection: checks the state, exchanges the code, reads the company from
/// QuickBooks, stores the company and its tokens (encrypted, flushed), consumes the invite
/// that started the flow, and syncs the company at once. Stores nothing on any failure.
///
/// # Errors
/// 400 for a bad/missing/reused/expired/foreign state, a denial or a refused code; 403 for
/// an invite used meanwhile; 502 when Intuit fails.
///
/// Runs as a tracked task: a browser that goes away mid-exchange cancels nothing (Intuit has
/// consumed the code by then; its grant is stored, never lost), and the shutdown drain waits
/// for it.
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
        complete_callback(&task_ctx, &p, cookie.as_deref()).await
    })
    .await?
}

async fn complete_callback(
    ctx: &Ctx,
    p: &CallbackParams<'_>,
    cookie_header: Option<&str>,
) -> Result<Company, ApiError> {
    let now = ctx.now();
    let invite = verify_state(ctx, p, cookie_header)?;
    let (Some(code), Some(realm)) = (
        p.code.filter(|c| !c.is_empty()),
        p.realm_id.filter(|r| !r.is_empty()),
    ) else {
        return Err(refuse(
            "missing_code",
            "the authorization answer has no code or realmId",
        ));
    };
    if !is_realm_id(realm) {
        return Err(refuse(
            "bad_realm",
            "realmId is not a QuickBooks company id",
        ));
    }
    // An invite used meanwhile by another flow: refused before the code is exchanged.
    if let Some(code) = &invite {
        match ctx.store.pending(&format!("invite:{code}"))? {
            Some(PendingAuth::Invite { expires_at, .. }) if expires_at > now => {}
            _ => return Err(invalid_invite()),
        }
    }
    let (tokens, tid) = ctx
        .tokens
        .oauth()
        .exchange_code(code, now)
        .await
        .map_err(|e| {
            if e.is_invalid_grant() {
                refuse(
                    "invalid_code",
                    "the authorization code was refused (already used or expired); start again",
                )
            } else {
                ApiError::new(
                    502,
                    e.code(),
                    format!("exchanging the authorization code: {e}"),
                )
            }
        })?;
    let read = read_company(ctx, realm, &tokens.access_token).await?;
    if let Some(code) = invite {
        match ctx.store.take_pending(&format!("invite:{code}"))? {
            Some(PendingAuth::Invite { expires_at, .. }) if expires_at > now => {}
            _ => return Err(invalid_invite()),
        }
    }
    let company = store_connection(ctx, realm, read, &tokens, tid, &Overrides::default()).await?;
    super::sync::after_connected(ctx, realm);
    Ok(company)
}

/// Checks the callback's `state` against the browser's signed cookie and consumes it.
/// Returns the invite that started the flow, if any.
fn verify_state(
    ctx: &Ctx,
    p: &CallbackParams<'_>,
    cookie_header: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let now = ctx.now();
    let Some(st) = p.state.filter(|s| !s.is_empty()) else {
        return Err(refuse(
            "missing_state",
            "the authorization answer has no state; start again from the Connect button",
        ));
    };
    // The cookie proves this browser started this flow.
    let bound = cookie_value(cookie_header).and_then(|v| {
        let (value, sig) = v.rsplit_once('.')?;
        verify(&ctx.hmac_key, value, sig).then_some(value)
    });
    if let Some(err) = p.error {
        // Consume the state so it cannot be replayed, but only for the browser that started
        // the flow: a forged denial must not cancel someone else's connection.
        if bound
            .and_then(|b| b.split_once('.'))
            .is_some_and(|(s, _)| s == st)
        {
            let _ = ctx.store.take_pending(&format!("state:{st}"))?;
        }
        return Err(refuse("access_denied", &denial_message(err)));
    }
    let Some(bound) = bound else {
        return Err(refuse("invalid_state", "this authorization was not started from this browser (missing or invalid state cookie); start again"));
    };
    let Some((cookie_state, nonce)) = bound.split_once('.') else {
        return Err(refuse(
            "invalid_state",
            "malformed state cookie; start again",
        ));
    };
    if cookie_state != st {
        return Err(refuse(
            "invalid_state",
            "the state does not match this browser's; start again",
        ));
    }
    let (expires_at, browser_nonce, invite) =
        match ctx.store.take_pending(&format!("state:{st}"))? {
            Some(PendingAuth::State {
                expires_at,
                browser_nonce,
                ..
            }) => (expires_at, browser_nonce, None),
            Some(PendingAuth::InvitedState {
                expires_at,
                browser_nonce,
                invite,
                ..
            }) => (expires_at, browser_nonce, Some(invite)),
            _ => {
                return Err(refuse(
                    "invalid_state",
                    "unknown or already used state; start again",
                ))
            }
        };
    if browser_nonce != nonce {
        return Err(refuse(
            "invalid_state",
            "the state does not match this browser's; start again",
        ));
    }
    if expires_at < now {
        return Err(refuse(
            "expired_state",
            "the authorization took longer than 10 minutes; start again",
        ));
    }
    Ok(invite)
}

/// A fixed message for an OAuth `error` code; unknown codes are not echoed.
fn denial_message(err: &str) -> String {
    let why = match err {
        "access_denied" => {
            return "the connection was not authorized in QuickBooks (access denied)".to_string()
        }
        "invalid_scope" => "the requested permission was refused",
        "server_error" | "temporarily_unavailable" => {
            "Intuit could not complete the request; try again later"
        }
        "invalid_request" | "unauthorized_client" | "unsupported_response_type" => {
            "the request was refused by Intuit (check the app's keys and redirect URI)"
        }
        _ => "Intuit reported an error",
    };
    format!("QuickBooks did not authorize the connection: {why}")
}

/// Whether `realm` looks like a QuickBooks company id (alphanumeric, at most 64).
pub fn is_realm_id(realm: &str) -> bool {
    !realm.is_empty() && realm.len() <= 64 && realm.chars().all(|c| c.is_ascii_alphanumeric())
}

/// What QuickBooks says about a company being connected.
#[derive(Debug, Clone)]
pub struct CompanyRead {
    /// CompanyInfo's name.
    pub name: String,
    /// Home currency (ALL when QuickBooks names none).
    pub home: Currency,
    /// Multicurrency switched on.
    pub multicurrency: bool,
    /// Active currencies other than home.
    pub active: Vec<Currency>,
}

/// Reads CompanyInfo, Preferences and the currency list with a fresh access token.
///
/// # Errors
/// 502 when QuickBooks fails.
pub async fn read_company(
    ctx: &Ctx,
    realm: &str,
    access_token: &str,
) -> Result<CompanyRead, ApiError> {
    let qbo = ctx.qbo();
    let up = |what: &'static str| {
        move |e: crate::qbo::Error| {
            ApiError::new(
                502,
                e.code(),
                format!("reading {what} from QuickBooks: {e}"),
            )
        }
    };
    let name = qbo
        .company_name(realm, access_token)
        .await
        .map_err(up("CompanyInfo"))?
        .value;
    let prefs = qbo
        .preferences(realm, access_token)
        .await
        .map_err(up("Preferences"))?
        .value;
    let currencies = qbo
        .company_currencies(realm, access_token)
        .await
        .map_err(up("currencies"))?
        .value;
    let home = prefs.home.unwrap_or(Currency::ALL);
    Ok(CompanyRead {
        name,
        home,
        multicurrency: prefs.multicurrency,
        active: crate::qbo::model::active_foreign(&currencies, home),
    })
}

/// What an admin says about a company that QuickBooks would otherwise tell (`adopt`,
/// `import-connections`); the browser flow gives none.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// Display name instead of CompanyInfo's `CompanyName`.
    pub name: Option<String>,
    /// The company log's connection record (default: "connected/reconnected to QuickBooks").
    pub log_message: Option<&'static str>,
}

/// With a fresh grant for `realm`: reads the company from QuickBooks and stores it with its
/// tokens ([`read_company`] then [`store_connection`]). Shared by the OAuth callback and the
/// takeover of existing connections (`ops::migrate`).
///
/// # Errors
/// 502 when a QuickBooks read fails (nothing stored then); store failure.
pub async fn connect_with_grant(
    ctx: &Ctx,
    realm: &str,
    tokens: &TokenSet,
    tid: Option<String>,
    over: &Overrides,
) -> Result<Company, ApiError> {
    let read = read_company(ctx, realm, &tokens.access_token).await?;
    store_connection(ctx, realm, read, tokens, tid, over).await
}

/// Creates or re-activates the company from what QuickBooks said (and what the admin
/// overrides) and stores it with its tokens (encrypted, flushed), under the realm's token
/// lock.
///
/// # Errors
/// Store failure.
pub async fn store_connection(
    ctx: &Ctx,
    realm: &str,
    mut read: CompanyRead,
    tokens: &TokenSet,
    tid: Option<String>,
    over: &Overrides,
) -> Result<Company, ApiError> {
    if let Some(name) = &over.name {
        read.name.clone_from(name);
    }
    let now = ctx.now();
    let config = ctx.config();
    let lock = ctx.tokens.lock_for(realm);
    let _held = lock.lock().await;
    let existing = ctx.store.company(realm)?;
    let reconnect = existing.is_some();
    let mut company = existing.unwrap_or_else(|| Company {
        realm_id: realm.to_string(),
        company_name: read.name.clone(),
        home_currency: read.home,
        is_active: true,
        sync_enabled: true,
        is_sandbox: config.quickbooks.sandbox,
        fill_non_business_days: true,
        created_at: now,
        updated_at: now,
        last_sync_at: None,
        connection: Connection::Connected,
        tokens: None,
        multicurrency: read.multicurrency,
        active_currencies: vec![],
        currencies_checked_at: None,
        drift: DriftPolicy::default(),
    });
    company.company_name = read.name;
    company.home_currency = read.home;
    company.is_active = true;
    company.is_sandbox = config.quickbooks.sandbox;
    company.connection = Connection::Connected;
    company.tokens = Some(tokens.expiry.clone());
    company.multicurrency = read.multicurrency;
    company.active_currencies = read.active;
    company.currencies_checked_at = Some(now);
    company.updated_at = now;
    let message = match (over.log_message, reconnect) {
        (Some(m), _) => m,
        (None, true) => "reconnected to QuickBooks",
        (None, false) => "connected to QuickBooks",
    };
    ctx.store.append_log(
        realm,
        &LogRecord::connection(now, true, message, tid.into_iter().collect()),
    )?;
    ctx.store.save_company_and_tokens(&company, tokens).await?;
    tracing::info!(
        realm_id = realm,
        reconnect,
        "Company {realm}: connected ({})",
        company.company_name
    );
    Ok(company)
}

/// `GET /api/v1/oauth/status/{id}`: connection state and token expiries (never the tokens).
///
/// # Errors
/// 404 unknown company.
pub fn status(ctx: &Ctx, realm: &str) -> OpResult {
    let c = ctx
        .store
        .company(realm)?
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
///
/// Runs as a tracked task, like the callback: a client that goes away does not leave the
/// grant revoked at Intuit and the company still active here.
pub async fn disconnect(ctx: &Arc<Ctx>, realm: &str) -> OpResult {
    let task_ctx = ctx.clone();
    let realm = realm.to_string();
    ctx.tracked("disconnect", async move {
        disconnect_now(&task_ctx, &realm).await
    })
    .await?
}

async fn disconnect_now(ctx: &Ctx, realm: &str) -> OpResult {
    // The realm's token lock for the whole disconnect: a refresh in flight finishes first
    // (and its rotation is what gets revoked), and none writes tokens back afterwards; a
    // reconnect waits and then stores its new grant over the disconnected record.
    let lock = ctx.tokens.lock_for(realm);
    let _held = lock.lock().await;
    if ctx.store.company(realm)?.is_none() {
        return Err(ApiError::unknown_company(realm));
    }
    if let Some(tokens) = ctx.store.tokens(realm)? {
        ctx.tokens
            .oauth()
            .revoke(&tokens.refresh_token)
            .await
            .map_err(|e| {
                ApiError::new(
                    502,
                    e.code(),
                    format!("revoking the grant at Intuit: {e}; nothing was changed, try again"),
                )
            })?;
    }
    let now = ctx.now();
    ctx.store.append_log(
        realm,
        &LogRecord::connection(now, true, "disconnected (grant revoked at Intuit)", vec![]),
    )?;
    let c = ctx
        .store
        .disconnect_company(realm, |c| {
            c.is_active = false;
            c.connection = Connection::Disconnected { at: now };
            c.tokens = None;
            c.updated_at = now;
        })
        .await?
        .ok_or_else(|| ApiError::unknown_company(realm))?;
    tracing::info!(realm_id = realm, "Company {realm}: disconnected");
    Ok(json!({
        "success": true,
        "message": format!("Disconnected {} from QuickBooks; its history is kept", c.company_name),
        "company_id": c.realm_id,
        "is_active": false,
    }))
}
