//! Routing and answers: a plain function from a request to a response, testable without
//! sockets. Errors become SPEC §6 JSON with the right status; 4xx are not logged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ACCEPT, AUTHORIZATION, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, COOKIE, LOCATION,
    RETRY_AFTER, SET_COOKIE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use serde::Serialize;

use super::limit::{self, RateLimiter};
use super::pages;
use crate::cidr;
use crate::ops::{self, ApiError, Ctx};

/// Largest request body accepted (SPEC §6).
pub const MAX_BODY: usize = 64 * 1024;

/// A request reduced to what routing needs.
#[derive(Debug)]
pub struct Req {
    /// Method.
    pub method: Method,
    /// Path without query.
    pub path: String,
    /// Decoded query pairs.
    pub query: Vec<(String, String)>,
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes (≤ [`MAX_BODY`]).
    pub body: Bytes,
    /// Client address.
    pub peer: SocketAddr,
}

impl Req {
    /// First value of a query parameter.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Answers a request where its connection is served (the HTTP thread,
/// [`super::serve_on_own_thread`]): `GET /health` without a body right there when it needs
/// no pooled store connection ([`ops::health_at_hand`]), so a liveness probe never queues
/// behind a sync-all's tasks; every other request is [`handle`]d on `main`, the runtime the
/// services run on. A handler that panicked answers 500 (the connection stays usable).
pub async fn answer_on(
    main: &tokio::runtime::Handle,
    state: Arc<Ctx>,
    limiter: Arc<RateLimiter>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    use hyper::body::Body as _;
    let health = req.method() == Method::GET && segments(req.uri().path()) == ["health"];
    if health && req.body().is_end_stream() {
        if let Some((status, body)) = ops::health_at_hand(&state).await {
            return secured(json(status, &body));
        }
    }
    // Detached: a handler runs to its end even when its client goes away meanwhile.
    match main
        .spawn(async move { handle(&state, &limiter, peer, req).await })
        .await
    {
        Ok(r) => r,
        // The main runtime is stopping (past the drain budget).
        Err(e) if e.is_cancelled() => secured(error(&ApiError::new(
            503,
            "shutting_down",
            "the daemon is stopping",
        ))),
        Err(e) => secured(error(&ApiError::internal(format!(
            "an HTTP request's handler failed: {e}"
        )))),
    }
}

/// A path's segments as routing reads them (`/health/` is `["health"]`).
fn segments(path: &str) -> Vec<&str> {
    path.trim_matches('/').split('/').collect()
}

/// Reads the body (bounded in size, and in time by `server.request_timeout_secs`) and routes.
/// A body that does not arrive in time gets 408 and the connection is closed.
pub async fn handle(
    state: &Arc<Ctx>,
    limiter: &RateLimiter,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let timeout = Duration::from_secs(state.config().server.request_timeout_secs);
    let collected = tokio::time::timeout(timeout, Limited::new(body, MAX_BODY).collect()).await;
    let body = match collected {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return secured(error(&ApiError::new(
                    413,
                    "body_too_large",
                    format!("request bodies are limited to {MAX_BODY} bytes"),
                )));
            }
            return secured(error(&ApiError::bad_request(
                "bad_body",
                "the request body could not be read",
            )));
        }
        Err(_) => {
            let mut r = secured(error(&ApiError::new(
                408,
                "request_timeout",
                format!(
                    "the request body did not arrive within {} s",
                    timeout.as_secs()
                ),
            )));
            r.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
    };
    let query = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let r = Req {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query,
        headers: parts.headers,
        body,
        peer,
    };
    route(state, limiter, r).await
}

/// Dispatches a request to its operation and adds the security headers every answer carries.
pub async fn route(state: &Arc<Ctx>, limiter: &RateLimiter, req: Req) -> Response<Full<Bytes>> {
    let private =
        req.path.starts_with("/api/v1/oauth/") || req.path.starts_with("/api/v1/companies/");
    let mut r = dispatch(state, limiter, req).await;
    secure(&mut r, private);
    r
}

/// SPEC §6: `nosniff` on everything, `X-Frame-Options: DENY` on pages, and `no-store` on the
/// OAuth and admin answers (tokens, company data and one-time links must not be cached).
fn secure(r: &mut Response<Full<Bytes>>, private: bool) {
    let h = r.headers_mut();
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    let is_html = h
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if is_html {
        h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    if private {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

/// An answer made before routing (body errors), with the headers every answer carries.
fn secured(mut r: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    secure(&mut r, false);
    r
}

async fn dispatch(state: &Arc<Ctx>, limiter: &RateLimiter, req: Req) -> Response<Full<Bytes>> {
    let segs = segments(&req.path);
    let limited = !matches!(segs.as_slice(), ["health"] | ["metrics"]);
    if limited {
        if let Err(e) = within_rate_limit(state, limiter, &req) {
            return error(&e);
        }
    }
    let m = &req.method;
    match segs.as_slice() {
        ["health"] if m == Method::GET => {
            let (status, body) = ops::health(state).await;
            json(status, &body)
        }
        [""] if m == Method::GET => match ops::landing::landing(state).await {
            Ok(data) => html(200, &pages::index(&data)),
            Err(e) => error(&e),
        },
        ["metrics"] if m == Method::GET => metrics(state, &req).await,
        ["api", "v1", "rates"] if m == Method::GET => {
            answer(ops::rates::answer(state, req.query("date")).await)
        }
        ["api", "v1", "oauth", "connect"] if m == Method::GET => oauth_connect(state, &req).await,
        ["api", "v1", "oauth", "callback"] if m == Method::GET => oauth_callback(state, &req).await,
        ["api", "v1", "oauth", "disconnect", id] if m == Method::GET => {
            oauth_disconnect(state, &req, id).await
        }
        ["api", "v1", "oauth", "status", id] if m == Method::GET => match admin(state, &req) {
            Ok(()) => answer(ops::connect::status(state, id).await),
            Err(e) => error(&e),
        },
        ["api", "v1", "companies", ..] => companies(state, &req, &segs[3..]).await,
        ["health"] | ["metrics"] | [""] | ["api", "v1", "rates"] | ["api", "v1", "oauth", ..] => {
            error(&method_not_allowed())
        }
        _ => error(&ApiError::new(
            404,
            "not_found",
            format!("no endpoint {} {}", req.method, req.path),
        )),
    }
}

/// `GET /metrics`: open to local scrapers, else behind the admin key.
async fn metrics(state: &Arc<Ctx>, req: &Req) -> Response<Full<Bytes>> {
    // Open to local scrapers only when the TCP peer itself is local: a reverse proxy
    // on this host forwards remote clients from a loopback address.
    let peer = req.peer.ip().to_canonical();
    let local =
        peer.is_loopback() && !cidr::any_contains(&state.config().server.trusted_proxies, peer);
    if !local {
        if let Err(e) = admin(state, req) {
            return error(&e);
        }
    }
    match ops::metrics::render(state).await {
        Ok(text) => {
            let mut r = Response::new(Full::new(Bytes::from(text)));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        Err(e) => error(&e),
    }
}

/// `GET /api/v1/oauth/connect`: a redirect to Intuit with the signed `state` cookie.
async fn oauth_connect(state: &Arc<Ctx>, req: &Req) -> Response<Full<Bytes>> {
    match ops::connect::connect(state, req.query("invite")).await {
        Ok(start) => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::FOUND;
            if let (Ok(loc), Ok(cookie)) = (
                HeaderValue::from_str(&start.redirect),
                HeaderValue::from_str(&start.cookie),
            ) {
                r.headers_mut().insert(LOCATION, loc);
                r.headers_mut().insert(SET_COOKIE, cookie);
            }
            r
        }
        Err(e) => page_or_json(req, &e, "Cannot connect to QuickBooks"),
    }
}

/// `GET /api/v1/oauth/callback`: the connected page (or JSON), or why not.
async fn oauth_callback(state: &Arc<Ctx>, req: &Req) -> Response<Full<Bytes>> {
    // Never echo what the caller put in `error=`: a bounded code reaches the
    // operation, and a fixed sentence the page.
    let denial = req.query("error").map(pages::oauth_error_code);
    let p = ops::connect::CallbackParams {
        code: req.query("code"),
        state: req.query("state"),
        realm_id: req.query("realmId"),
        error: denial,
    };
    let cookie = req.headers.get(COOKIE).and_then(|v| v.to_str().ok());
    match ops::connect::callback(state, &p, cookie).await {
        Ok(c) => {
            if wants_json(req) {
                json(
                    200,
                    &serde_json::json!({"success": true, "company_id": c.realm_id, "company_name": c.company_name, "home_currency": c.home_currency, "is_active": true}),
                )
            } else {
                html(200, &pages::connected(&c))
            }
        }
        Err(mut e) => {
            if let (Some(code), "access_denied") = (denial, e.code) {
                e.message = pages::oauth_error_message(code);
            }
            page_or_json(req, &e, "QuickBooks connection failed")
        }
    }
}

/// `GET /api/v1/oauth/disconnect/{id}` (admin): revoke and soft-delete.
async fn oauth_disconnect(state: &Arc<Ctx>, req: &Req, id: &str) -> Response<Full<Bytes>> {
    if let Err(e) = admin(state, req) {
        return error(&e);
    }
    match ops::connect::disconnect(state, id).await {
        Ok(v) if !wants_json(req) && accepts_html(req) => html(
            200,
            &pages::message("Disconnected", v["message"].as_str().unwrap_or("")),
        ),
        other => answer(other),
    }
}

/// The per-client rate limit of every endpoint but `/health` and `/metrics`.
fn within_rate_limit(state: &Ctx, limiter: &RateLimiter, req: &Req) -> Result<(), ApiError> {
    let config = state.config();
    let per_minute = config.server.rate_limit_per_minute;
    let client = limit::client_ip(req.peer.ip(), &req.headers, &config.server.trusted_proxies);
    limiter.check(client, per_minute).map_err(|wait| {
        let mut e = ApiError::new(
            429,
            "rate_limited",
            format!(
                "more than {per_minute} requests a minute from this address; retry in {wait} s"
            ),
        );
        e.retry_after = Some(wait);
        e
    })
}

async fn companies(state: &Arc<Ctx>, req: &Req, rest: &[&str]) -> Response<Full<Bytes>> {
    if let Err(e) = admin(state, req) {
        return error(&e);
    }
    let m = &req.method;
    match rest {
        ["list"] if m == Method::GET => match list_query(req) {
            Ok(q) => answer(ops::companies::list(state, &q).await),
            Err(e) => error(&e),
        },
        ["sync-all"] if m == Method::POST => {
            match ops::sync::sync_all(state, req.query("target_date")).await {
                Ok(answer) => json_text(200, answer.into_string()),
                Err(e) => error(&e),
            }
        }
        [id, "sync"] if m == Method::POST => {
            answer(ops::sync::sync_one(state, id, req.query("target_date")).await)
        }
        [id, "sync", "status"] if m == Method::GET => {
            answer(ops::companies::sync_status(state, id).await)
        }
        [id, "backfill"] if m == Method::POST => {
            match ops::backfill::parse_dry_run(req.query("dry_run")) {
                Ok(dry) => answer(
                    ops::backfill::backfill(state, id, req.query("from"), req.query("to"), dry)
                        .await,
                ),
                Err(e) => error(&e),
            }
        }
        [id, "settings"] if m == Method::PUT => {
            let body: Result<serde_json::Value, _> = serde_json::from_slice(&req.body);
            match body {
                Ok(v) => answer(ops::companies::update_settings(state, id, &v).await),
                Err(e) => error(&ApiError::bad_request(
                    "bad_json",
                    format!("the body is not valid JSON: {e}"),
                )),
            }
        }
        ["list"]
        | ["sync-all"]
        | [_, "sync"]
        | [_, "sync", "status"]
        | [_, "settings"]
        | [_, "backfill"] => error(&method_not_allowed()),
        _ => error(&ApiError::new(
            404,
            "not_found",
            format!("no endpoint {} {}", req.method, req.path),
        )),
    }
}

/// `active_only` (default true), `limit` (a number; its range is checked by the operation)
/// and `after` of `companies/list`.
fn list_query(req: &Req) -> Result<ops::companies::ListQuery, ApiError> {
    let active_only = match req.query("active_only") {
        None => true,
        Some(v) => parse_bool("active_only", v)?,
    };
    let limit = match req.query("limit") {
        None => None,
        Some(v) => Some(v.trim().parse::<u64>().map_err(|_| {
            ApiError::bad_request(
                "bad_parameter",
                format!(
                    "limit: {v:?} is not a number between 1 and {}",
                    ops::companies::MAX_PAGE
                ),
            )
        })?),
    };
    Ok(ops::companies::ListQuery {
        active_only,
        limit,
        after: req
            .query("after")
            .filter(|a| !a.is_empty())
            .map(str::to_string),
    })
}

fn parse_bool(name: &str, v: &str) -> Result<bool, ApiError> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(ApiError::bad_request(
            "bad_parameter",
            format!("{name}: {v:?} is not true or false"),
        )),
    }
}

/// Checks the admin key: `Authorization: Bearer <key>` or `X-API-Key: <key>`, constant time.
fn admin(state: &Ctx, req: &Req) -> Result<(), ApiError> {
    let config = state.config();
    let key = config.server.admin_api_key.expose();
    if key.is_empty() {
        return Err(ApiError::new(
            401,
            "unauthorized",
            "the admin API is disabled (no admin_api_key configured); use the control socket",
        ));
    }
    let given = req
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .or_else(|| req.headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    let Some(given) = given else {
        return Err(ApiError::new(
            401,
            "unauthorized",
            "an admin API key is required (Authorization: Bearer <key> or X-API-Key)",
        ));
    };
    // Compare digests so neither the content nor the length leaks through timing.
    let a = <sha2::Sha256 as sha2::Digest>::digest(given.trim().as_bytes());
    let b = <sha2::Sha256 as sha2::Digest>::digest(key.as_bytes());
    if bool::from(subtle::ConstantTimeEq::ct_eq(a.as_slice(), b.as_slice())) {
        Ok(())
    } else {
        Err(ApiError::new(401, "unauthorized", "invalid admin API key"))
    }
}

/// An operation's answer: its JSON with 200, or the error answer.
fn answer<T: Serialize>(r: ops::OpResult<T>) -> Response<Full<Bytes>> {
    match r {
        Ok(a) => json(200, &a),
        Err(e) => error(&e),
    }
}

fn wants_json(req: &Req) -> bool {
    req.headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"))
}

fn accepts_html(req: &Req) -> bool {
    req.headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// An error as a page for browsers, JSON for clients that ask for it.
fn page_or_json(req: &Req, e: &ApiError, title: &str) -> Response<Full<Bytes>> {
    if wants_json(req) {
        error(e)
    } else {
        let mut r = html(e.status, &pages::message(title, &e.message));
        if let Some(secs) = e.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(RETRY_AFTER, v);
            }
        }
        r
    }
}

fn method_not_allowed() -> ApiError {
    ApiError::new(
        405,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}

/// A JSON answer: `body` serialized as it is (a typed answer's fields in their order).
pub fn json<T: Serialize + ?Sized>(status: u16, body: &T) -> Response<Full<Bytes>> {
    match serde_json::to_string(body) {
        Ok(text) => json_text(status, text),
        Err(e) => error(&ApiError::internal(format!("serializing the answer: {e}"))),
    }
}

/// A JSON answer already serialized (large answers skip the `Value` tree).
pub fn json_text(status: u16, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// An HTML answer.
pub fn html(status: u16, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// The SPEC §6 error answer. A 500's detail is logged here, once; 4xx are not logged.
pub fn error(e: &ApiError) -> Response<Full<Bytes>> {
    if let Some(detail) = &e.detail {
        tracing::error!(code = e.code, error = %detail, "internal error");
    }
    let mut r = json(e.status, &e.body());
    if let Some(secs) = e.retry_after {
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(RETRY_AFTER, v);
        }
    }
    r
}
