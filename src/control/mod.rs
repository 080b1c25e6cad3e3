//! The local admin channel: newline-delimited JSON over a Unix stream socket (SPEC §7).
//! `{"cmd": "...", "args": {...}}` in, `{"ok": true, "data": ...}` or
//! `{"ok": false, "error": {"code", "message"}}` out, one per line.

pub mod client;
pub mod server;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest request line accepted.
pub const MAX_LINE: usize = 8 * 1024 * 1024;

/// One request line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The command (`status`, `companies`, …).
    pub cmd: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Value,
}

/// An error answer's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// snake_case code.
    pub code: String,
    /// Explanation.
    pub message: String,
}

/// One answer line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    /// Success?
    pub ok: bool,
    /// The data on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// The error on failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Response {
    /// A success answer.
    pub fn ok(data: Value) -> Self {
        Response {
            ok: true,
            data: Some(data),
            error: None,
        }
    }
    /// A failure answer.
    pub fn err(code: &str, message: impl Into<String>) -> Self {
        Response {
            ok: false,
            data: None,
            error: Some(ErrorBody {
                code: code.to_string(),
                message: message.into(),
            }),
        }
    }
}
