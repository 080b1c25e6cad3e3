//! The local admin channel: newline-delimited JSON over a Unix stream socket (SPEC §7).
//! `{"cmd": "...", "args": {...}}` in, `{"ok": true, "data": ...}` or
//! `{"ok": false, "error": {"code", "message", "kind"}}` out, one per line; `kind` is the
//! category `ops` maps the error to, from which the CLI picks its exit code.

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
    /// The category (`bad_input`, `not_found`, `conflict`, …; SPEC §7).
    #[serde(default)]
    pub kind: String,
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
    /// A failure of the protocol itself (a bad line, a refused peer).
    pub fn err(code: &str, message: impl Into<String>, kind: crate::ops::Kind) -> Self {
        Response {
            ok: false,
            data: None,
            error: Some(ErrorBody {
                code: code.to_string(),
                message: message.into(),
                kind: kind.as_str().to_string(),
            }),
        }
    }

    /// An operation's refusal or failure.
    pub fn failed(e: &crate::ops::ApiError) -> Self {
        Self::err(e.code, e.message.clone(), e.kind())
    }
}
