//! Why a sync could not be done, in the sync's own words. `ops::error` maps each variant to
//! an HTTP status and an exit code; the snake_case [`Error::code`] is the domain's name for
//! it (also written into the company's log).

use chrono::NaiveDate;

use crate::archive;
use crate::currency::Currency;

/// A sync refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No company with that realm id.
    #[error("no company with id {0}")]
    UnknownCompany(String),
    /// The company was disconnected.
    #[error("the company is disconnected; reconnect it to sync")]
    Disconnected,
    /// No tokens are stored.
    #[error("the company is not connected to QuickBooks")]
    NotConnected,
    /// Intuit refused the grant: the customer must reconnect.
    #[error("the QuickBooks connection expired or was revoked; the company must reconnect")]
    ReconnectNeeded,
    /// The company's sync setting is off.
    #[error("sync is disabled for company {0}; enable it in its settings first")]
    SyncDisabled(String),
    /// No fixing in force (or BoA could not be read for it).
    #[error(transparent)]
    Archive(archive::Error),
    /// Multicurrency is off in the QuickBooks company.
    #[error(
        "multicurrency is switched off in this QuickBooks company; exchange rates cannot be set"
    )]
    MulticurrencyOff,
    /// The company's home currency has no BoA rate.
    #[error("{0}")]
    HomeCurrencyNotFixed(String),
    /// A home currency that is not QuickBooks' (SPEC §5 "Home currency is QuickBooks'"):
    /// every rate is computed for the one QuickBooks holds, so another is refused.
    #[error(
        "QuickBooks' home currency for this company is {quickbooks}; every rate is computed \
         for it, so home_currency {given} is refused (nothing was changed)"
    )]
    HomeCurrencyMismatch {
        /// What the admin asked for.
        given: Currency,
        /// What the company's QuickBooks Preferences say.
        quickbooks: Currency,
    },
    /// A backfill's range query refused by QuickBooks (a Fault), naming the range.
    #[error("QuickBooks refused the exchange-rate query for {from} to {to}: {message}")]
    RangeQueryRefused {
        /// First date of the refused window.
        from: NaiveDate,
        /// Last date of the refused window.
        to: NaiveDate,
        /// QuickBooks' words.
        message: String,
    },
    /// A sync-all for another date is running.
    #[error("a sync of all companies for {0} is running; try again when it finishes")]
    InProgress(NaiveDate),
    /// A sync of this company is running (backfill refuses to wait).
    #[error("a sync of company {0} is running; try again when it finishes")]
    CompanyBusy(String),
    /// A backfill range that is reversed, too long or in the future.
    #[error("{0}")]
    BadRange(String),
    /// QuickBooks or Intuit failed (after the bounded retries).
    #[error("{message}")]
    Upstream {
        /// The failure's snake_case name (`quickbooks_fault`, `quickbooks_unavailable`, …).
        code: &'static str,
        /// What was being done and what QuickBooks said.
        message: String,
    },
    /// Some writes failed.
    #[error("{failed} of {total} rates could not be written: {detail}")]
    WriteFailed {
        /// Writes that failed.
        failed: usize,
        /// Writes wanted.
        total: usize,
        /// Each failure, `CUR: reason`.
        detail: String,
    },
    /// The daemon is stopping.
    #[error("not synced: the daemon is stopping")]
    ShuttingDown,
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
    /// The store cannot be reached right now (the PostgreSQL server is away): nothing was
    /// done; retry later.
    #[error("the store is unavailable: {0}")]
    StoreUnavailable(String),
}

impl Error {
    /// The snake_case name of the error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::UnknownCompany(_) => "company_not_found",
            Error::Disconnected => "company_disconnected",
            Error::NotConnected => "not_connected",
            Error::ReconnectNeeded => "reconnect_needed",
            Error::SyncDisabled(_) => "sync_disabled",
            Error::Archive(e) => e.code(),
            Error::MulticurrencyOff => "multicurrency_disabled",
            Error::HomeCurrencyNotFixed(_) => "home_currency_not_fixed",
            Error::HomeCurrencyMismatch { .. } => "home_currency_mismatch",
            Error::RangeQueryRefused { .. } => "range_query_refused",
            Error::InProgress(_) | Error::CompanyBusy(_) => "sync_in_progress",
            Error::BadRange(_) => "bad_range",
            Error::Upstream { code, .. } => code,
            Error::WriteFailed { .. } => "quickbooks_write_failed",
            Error::ShuttingDown => "shutting_down",
            Error::Store(_) => "internal_error",
            Error::StoreUnavailable(_) => "store_unavailable",
        }
    }
}

impl From<crate::store::Error> for Error {
    fn from(e: crate::store::Error) -> Self {
        if e.is_unavailable() {
            return Error::StoreUnavailable(e.to_string());
        }
        Error::Store(e.to_string())
    }
}

impl From<archive::Error> for Error {
    fn from(e: archive::Error) -> Self {
        match e {
            archive::Error::Store(s) => Error::Store(s),
            archive::Error::StoreUnavailable(s) => Error::StoreUnavailable(s),
            other => Error::Archive(other),
        }
    }
}

impl From<crate::qbo::tokens::TokenError> for Error {
    fn from(e: crate::qbo::tokens::TokenError) -> Self {
        use crate::qbo::tokens::TokenError;
        match e {
            TokenError::NotConnected => Error::NotConnected,
            TokenError::ReconnectNeeded => Error::ReconnectNeeded,
            TokenError::Upstream(e) => Error::Upstream {
                code: e.code(),
                message: format!("refreshing the QuickBooks token: {e}"),
            },
            TokenError::Store(e) => e.into(),
        }
    }
}

/// A QuickBooks failure while doing `what`.
pub fn upstream(e: &crate::qbo::Error, what: &str) -> Error {
    if e.is_invalid_grant() {
        return Error::ReconnectNeeded;
    }
    Error::Upstream {
        code: e.code(),
        message: format!("{what}: {e}"),
    }
}
