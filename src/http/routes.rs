//! Routing and answers: a plain function from a request to a response, testable without
//! sockets. Errors become SPEC §6 JSON with the right status; 4xx are not logged.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use serde_json::Value;

use crate::app::AppState;
use crate::ops::{self, ApiError};

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

/// Reads the body (bounded) and routes.
pub async fn handle(
    state: &AppState,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return error(&ApiError::new(
                    413,
                    "body_too_large",
                    format!("request bodies are limited to {MAX_BODY} bytes"),
                ));
            }
            return error(&ApiError::bad_request(
                "bad_body",
                "the request body could not be read",
            ));
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
    route(state, r).await
}

/// Dispatches a request to its operation.
pub async fn route(state: &AppState, req: Req) -> Response<Full<Bytes>> {
    let segs: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    match (&req.method, segs.as_slice()) {
        (&Method::GET, ["health"]) => {
            let (status, body) = ops::health(state);
            json(status, &body)
        }
        (&Method::GET, [""]) => html(200, &index_page(state)),
        (_, ["health"]) | (_, [""]) => error(&method_not_allowed()),
        _ => error(&ApiError::new(
            404,
            "not_found",
            format!("no endpoint {} {}", req.method, req.path),
        )),
    }
}

fn method_not_allowed() -> ApiError {
    ApiError::new(
        405,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}

fn index_page(_state: &AppState) -> String {
    "<!doctype html><html><head><meta charset=\"utf-8\"><title>boa-exchange</title></head>\
     <body><h1>boa-exchange</h1><p>Bank of Albania official exchange rates for QuickBooks Online.</p></body></html>"
        .to_string()
}

/// A JSON answer.
pub fn json(status: u16, body: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
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

/// The SPEC §6 error answer.
pub fn error(e: &ApiError) -> Response<Full<Bytes>> {
    let mut r = json(e.status, &e.body());
    if let Some(secs) = e.retry_after {
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(RETRY_AFTER, v);
        }
    }
    r
}
