//! The one error type both front ends (HTTP, control socket) answer with.

use serde_json::{json, Value};

/// An operation's refusal or failure: HTTP status, a snake_case code and a message that is
/// safe to show (never a secret, never a stack trace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status to answer with.
    pub status: u16,
    /// Machine-readable code, snake_case.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// Seconds for `Retry-After` (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// Any status/code/message.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    /// 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }
    /// 404 for an unknown company.
    pub fn unknown_company(realm: &str) -> Self {
        Self::new(
            404,
            "company_not_found",
            format!("no company with id {realm}"),
        )
    }
    /// 409.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(409, code, message)
    }
    /// 422.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(422, code, message)
    }
    /// 500 with a generic message; the detail is logged by the caller's edge.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            500,
            "internal_error",
            "internal error; see the daemon's log",
        )
    }
    /// 502 upstream failure.
    pub fn upstream(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(502, code, message)
    }
    /// The JSON error body of SPEC §6.
    pub fn body(&self) -> Value {
        json!({"success": false, "error": {"code": self.code, "message": self.message}})
    }
}

impl From<crate::store::Error> for ApiError {
    fn from(e: crate::store::Error) -> Self {
        ApiError::internal(e)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}
