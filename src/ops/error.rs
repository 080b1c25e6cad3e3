//! The one table from domain errors to answers: each service's error enum becomes an HTTP
//! status, a snake_case code and a message that is safe to show (never a secret, never a
//! stack trace), and a [`Kind`] that the control socket carries so the CLI picks its exit
//! code. Nothing below `ops` knows a status.

use serde_json::{json, Value};

use crate::{archive, store, sync};

/// The category of a refusal or failure (SPEC §7 `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The caller's mistake (bad JSON, date, argument): CLI exit 2.
    BadInput,
    /// Missing or wrong credentials.
    Unauthorized,
    /// Unknown company or endpoint.
    NotFound,
    /// A state that forbids it now (sync disabled, reconnect needed, in progress).
    Conflict,
    /// No fixing in force for that date.
    NoFixing,
    /// Too many requests.
    RateLimited,
    /// BoA or Intuit failed.
    Upstream,
    /// Not ready or stopping.
    Unavailable,
    /// Our own failure.
    Internal,
}

impl Kind {
    /// The word on the control socket.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::BadInput => "bad_input",
            Kind::Unauthorized => "unauthorized",
            Kind::NotFound => "not_found",
            Kind::Conflict => "conflict",
            Kind::NoFixing => "no_fixing",
            Kind::RateLimited => "rate_limited",
            Kind::Upstream => "upstream",
            Kind::Unavailable => "unavailable",
            Kind::Internal => "internal",
        }
    }

    /// The CLI's exit code for it (SPEC §2: 2 for bad input, else 1).
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::BadInput => 2,
            _ => 1,
        }
    }

    /// The category of an answer's status.
    pub fn of_status(status: u16) -> Kind {
        match status {
            400 | 405 | 413 => Kind::BadInput,
            401 | 403 => Kind::Unauthorized,
            404 => Kind::NotFound,
            409 => Kind::Conflict,
            422 => Kind::NoFixing,
            429 => Kind::RateLimited,
            502 | 504 => Kind::Upstream,
            503 => Kind::Unavailable,
            _ => Kind::Internal,
        }
    }

    /// The word's kind (the CLI reading an answer).
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "bad_input" => Kind::BadInput,
            "unauthorized" => Kind::Unauthorized,
            "not_found" => Kind::NotFound,
            "conflict" => Kind::Conflict,
            "no_fixing" => Kind::NoFixing,
            "rate_limited" => Kind::RateLimited,
            "upstream" => Kind::Upstream,
            "unavailable" => Kind::Unavailable,
            "internal" => Kind::Internal,
            _ => return None,
        })
    }
}

/// An operation's refusal or failure as both interfaces answer it.
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
    /// For a 500: what really happened, logged once by the interface, never shown.
    pub detail: Option<String>,
}

impl ApiError {
    /// Any status/code/message.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            detail: None,
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
    /// 500 with a generic message; `detail` is logged by the interface that answers.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        let mut e = Self::new(
            500,
            "internal_error",
            "internal error; see the daemon's log",
        );
        e.detail = Some(detail.to_string());
        e
    }
    /// The category.
    pub fn kind(&self) -> Kind {
        Kind::of_status(self.status)
    }
    /// The JSON error body of SPEC §6.
    pub fn body(&self) -> Value {
        json!({"success": false, "error": {"code": self.code, "message": self.message}})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::BackupRunning => ApiError::new(409, "backup_running", e.to_string()),
            e if e.is_unavailable() => ApiError::new(503, "store_unavailable", e.to_string()),
            e => ApiError::internal(e),
        }
    }
}

impl From<archive::Error> for ApiError {
    fn from(e: archive::Error) -> Self {
        use archive::Error as E;
        let status = match &e {
            E::Fetch(_) | E::Parse(_) | E::Invalid(_) => 502,
            E::NoFixing { .. } => 422,
            E::BadWorkbook(_) => 400,
            E::NoWorkbook(_) => 404,
            E::Store(_) => return ApiError::internal(e),
            E::StoreUnavailable(_) => 503,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<crate::connections::Error> for ApiError {
    fn from(e: crate::connections::Error) -> Self {
        use crate::connections::Error as E;
        let status = match &e {
            E::Refused { .. } | E::BadInput { .. } => 400,
            E::InviteRequired | E::InvalidInvite => 403,
            E::UnknownCompany(_) => 404,
            E::TokenNotForRealm(_) => 409,
            E::Upstream { .. } => 502,
            E::NotConfigured => 503,
            E::Store(_) => return ApiError::internal(e),
            E::StoreUnavailable(_) => 503,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<sync::Error> for ApiError {
    fn from(e: sync::Error) -> Self {
        use sync::Error as E;
        let status = match &e {
            E::UnknownCompany(_) => 404,
            E::BadRange(_) => 400,
            E::Disconnected
            | E::NotConnected
            | E::ReconnectNeeded
            | E::SyncDisabled(_)
            | E::InProgress(_)
            | E::CompanyBusy(_)
            | E::HomeCurrencyMismatch { .. } => 409,
            E::Archive(a) => return a.clone().into(),
            E::MulticurrencyOff | E::HomeCurrencyNotFixed(_) => 422,
            E::Upstream { .. } | E::WriteFailed { .. } | E::RangeQueryRefused { .. } => 502,
            E::ShuttingDown => 503,
            E::Store(_) => return ApiError::internal(e),
            E::StoreUnavailable(_) => 503,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

/// The exit code of a `serve` that could not start: 2 when the store was written by a newer
/// boa-exchange (SPEC §13: refused, exit 2), else 1.
pub fn start_failure_exit_code(e: &anyhow::Error) -> u8 {
    let newer = e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<store::Error>(),
            Some(
                store::Error::NewerSchema { .. }
                    | store::Error::Postgres(store::postgres::Error::NewerSchema { .. })
            )
        ) || matches!(
            cause.downcast_ref::<store::postgres::Error>(),
            Some(store::postgres::Error::NewerSchema { .. })
        )
    });
    if newer {
        2
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the PostgreSQL store answers while its server is away.
    fn gone() -> store::Error {
        store::Error::Postgres(store::postgres::Error::Unavailable(
            "connection refused".into(),
        ))
    }

    #[test]
    fn a_newer_store_exits_2_and_other_start_failures_1() {
        let pg = store::Error::Postgres(store::postgres::Error::NewerSchema {
            found: 9,
            supported: 2,
        });
        let e = anyhow::Error::new(pg).context("opening the store");
        assert_eq!(start_failure_exit_code(&e), 2);
        let sled = store::Error::NewerSchema {
            path: "/x".into(),
            found: 9,
            supported: 2,
        };
        assert_eq!(start_failure_exit_code(&anyhow::Error::new(sled)), 2);
        let other = anyhow::Error::new(gone()).context("opening the store");
        assert_eq!(start_failure_exit_code(&other), 1);
    }

    #[test]
    fn domain_errors_map_to_statuses_and_kinds() {
        let d = chrono::NaiveDate::from_ymd_opt(2026, 5, 22).unwrap();
        let cases: Vec<(ApiError, u16, &str, Kind)> = vec![
            (
                sync::Error::UnknownCompany("9".into()).into(),
                404,
                "company_not_found",
                Kind::NotFound,
            ),
            (
                sync::Error::SyncDisabled("9".into()).into(),
                409,
                "sync_disabled",
                Kind::Conflict,
            ),
            (
                sync::Error::ReconnectNeeded.into(),
                409,
                "reconnect_needed",
                Kind::Conflict,
            ),
            (
                sync::Error::InProgress(d).into(),
                409,
                "sync_in_progress",
                Kind::Conflict,
            ),
            (
                sync::Error::BadRange("x".into()).into(),
                400,
                "bad_range",
                Kind::BadInput,
            ),
            (
                sync::Error::CompanyBusy("9".into()).into(),
                409,
                "sync_in_progress",
                Kind::Conflict,
            ),
            (
                sync::Error::MulticurrencyOff.into(),
                422,
                "multicurrency_disabled",
                Kind::NoFixing,
            ),
            (
                sync::Error::Archive(archive::Error::NoFixing {
                    date: d,
                    why: archive::NoFixing::NotYetPublished { nearest: d },
                })
                .into(),
                422,
                "not_yet_published",
                Kind::NoFixing,
            ),
            (
                archive::Error::Parse("x".into()).into(),
                502,
                "boa_page_changed",
                Kind::Upstream,
            ),
            (
                archive::Error::BadWorkbook("x".into()).into(),
                400,
                "bad_workbook",
                Kind::BadInput,
            ),
            (
                sync::Error::ShuttingDown.into(),
                503,
                "shutting_down",
                Kind::Unavailable,
            ),
            (
                sync::Error::Store("disk".into()).into(),
                500,
                "internal_error",
                Kind::Internal,
            ),
            (
                sync::Error::from(gone()).into(),
                503,
                "store_unavailable",
                Kind::Unavailable,
            ),
            (
                crate::connections::Error::from(gone()).into(),
                503,
                "store_unavailable",
                Kind::Unavailable,
            ),
            (
                archive::Error::from(gone()).into(),
                503,
                "store_unavailable",
                Kind::Unavailable,
            ),
            (gone().into(), 503, "store_unavailable", Kind::Unavailable),
            (
                store::Error::Postgres(store::postgres::Error::Db("bad row".into())).into(),
                500,
                "internal_error",
                Kind::Internal,
            ),
        ];
        for (e, status, code, kind) in cases {
            assert_eq!((e.status, e.code, e.kind()), (status, code, kind), "{e}");
        }
        let internal: ApiError = sync::Error::Store("disk full".into()).into();
        assert!(
            !internal.message.contains("disk"),
            "details are never shown"
        );
        assert_eq!(internal.detail.as_deref(), Some("store: disk full"));
        assert_eq!(Kind::BadInput.exit_code(), 2);
        assert_eq!(Kind::Upstream.exit_code(), 1);
        assert_eq!(Kind::Unavailable.exit_code(), 1, "SPEC §13: CLI exit 1");
        for k in [Kind::BadInput, Kind::Internal, Kind::NoFixing] {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
    }
}
