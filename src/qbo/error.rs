//! Errors from Intuit (OAuth) and the QuickBooks accounting API, with the predicates callers
//! branch on. Messages never contain a token.

/// An Intuit / QuickBooks failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// 401 from the accounting API: the access token is expired, invalid or revoked.
    #[error("QuickBooks refused the access token (401)")]
    Unauthorized,
    /// The refresh token or code was refused (`invalid_grant`): the company must reconnect.
    #[error("Intuit refused the grant (invalid_grant): {0}")]
    InvalidGrant(String),
    /// Our app credentials were refused (`invalid_client`).
    #[error("Intuit refused the app credentials (invalid_client); check quickbooks.client_id / client_secret")]
    InvalidClient,
    /// 429: throttled.
    #[error("QuickBooks throttled the request (429)")]
    RateLimited {
        /// Seconds to wait (Retry-After, or Intuit's advised 60).
        retry_after: u64,
    },
    /// A 5xx answer.
    #[error("Intuit answered HTTP {status}")]
    Server {
        /// The status.
        status: u16,
    },
    /// An application Fault (400, or 200 with a Fault inside).
    #[error("QuickBooks {fault_type} {code}: {message}")]
    Fault {
        /// Fault type (ValidationFault, …).
        fault_type: String,
        /// Intuit's error code as a string (5010, 610, 6000, …).
        code: String,
        /// Message and detail.
        message: String,
    },
    /// Another unexpected HTTP status.
    #[error("Intuit answered HTTP {status}: {message}")]
    Http {
        /// The status.
        status: u16,
        /// Short description.
        message: String,
    },
    /// Connection failure or timeout.
    #[error("cannot reach Intuit: {0}")]
    Network(String),
    /// A 2xx answer we could not read.
    #[error("unexpected answer from Intuit: {0}")]
    Decode(String),
    /// The answer was larger than [`super::MAX_ANSWER_BYTES`]; nothing more was read.
    #[error("Intuit's answer is larger than {} and was refused", crate::outbound::human(*limit))]
    TooLarge {
        /// The cap in bytes.
        limit: usize,
    },
    /// Intuit answered with a redirect; Intuit clients follow none (a redirect could send the
    /// bearer token or client secret elsewhere).
    #[error("Intuit answered with a redirect (HTTP {status}), which is not followed")]
    Redirect {
        /// The 3xx status.
        status: u16,
    },
}

impl Error {
    /// A 401 (refresh once and retry once).
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Error::Unauthorized)
    }
    /// `invalid_grant`: reconnect needed, never retried.
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, Error::InvalidGrant(_))
    }
    /// 429.
    pub fn is_rate_limited(&self) -> bool {
        matches!(self, Error::RateLimited { .. })
    }
    /// Worth retrying after a backoff: 5xx, network, timeouts.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Server { .. } | Error::Network(_))
    }
    /// An application Fault of any code (QuickBooks refused the request itself).
    pub fn is_fault(&self) -> bool {
        matches!(self, Error::Fault { .. })
    }
    /// Fault 610: object not found (a single GET for a date without a rate).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Fault { code, .. } if code == "610")
    }
    /// Stale SyncToken (Fault 5010).
    pub fn is_stale(&self) -> bool {
        matches!(self, Error::Fault { code, .. } if code == "5010")
    }
    /// A validation fault that suggests our cached currency list / home currency is wrong.
    pub fn is_currency_rejection(&self) -> bool {
        matches!(self, Error::Fault { fault_type, code, .. }
            if fault_type == "ValidationFault" && code != "5010")
    }
    /// Short snake_case code for logs and answers.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Unauthorized => "unauthorized",
            Error::InvalidGrant(_) => "reconnect_needed",
            Error::InvalidClient => "invalid_client",
            Error::RateLimited { .. } => "throttled",
            Error::Server { .. } => "quickbooks_unavailable",
            Error::Fault { .. } => "quickbooks_fault",
            Error::Http { .. } => "quickbooks_error",
            Error::Network(_) => "quickbooks_unreachable",
            Error::Decode(_) | Error::TooLarge { .. } | Error::Redirect { .. } => {
                "quickbooks_bad_answer"
            }
        }
    }
}

/// Turns a reqwest error into ours without the URL (URLs may carry codes).
pub fn from_reqwest(e: reqwest::Error) -> Error {
    let e = e.without_url();
    if e.is_timeout() {
        Error::Network("timed out".into())
    } else {
        Error::Network(e.to_string())
    }
}

/// Maps a capped-body failure.
pub fn from_cap(e: crate::outbound::CapError) -> Error {
    match e {
        crate::outbound::CapError::TooLarge { limit } => Error::TooLarge { limit },
        crate::outbound::CapError::Read(e) => from_reqwest(e),
    }
}
