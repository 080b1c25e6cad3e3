//! The records the store keeps. Plain data; the store module encodes them.
//!
//! Changing a field here changes the on-disk format: bump `SCHEMA_VERSION` in `store/mod.rs`
//! and add a migration.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::currency::Currency;
use crate::fixing::{FixingSource, FixingTable, TableKind};

/// Whether a company's QuickBooks grant is usable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Connection {
    /// Tokens are stored and were last known good.
    Connected,
    /// Intuit refused the refresh token (`invalid_grant`): the customer must reconnect.
    ReconnectNeeded {
        /// When we found out.
        since: DateTime<Utc>,
        /// What Intuit said.
        reason: String,
    },
    /// Disconnected by an admin (tokens revoked and deleted).
    Disconnected {
        /// When.
        at: DateTime<Utc>,
    },
}

/// Token expiries (not secret; shown by the status endpoints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenExpiry {
    /// Access token expiry.
    pub access_expires_at: DateTime<Utc>,
    /// Rolling refresh-token expiry.
    pub refresh_expires_at: DateTime<Utc>,
    /// The 5-year hard cap of the grant, when Intuit told us.
    pub hard_expires_at: Option<DateTime<Utc>>,
    /// Last successful refresh (or the connection time).
    pub refreshed_at: DateTime<Utc>,
}

/// One connected QuickBooks company (tenant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Company {
    /// QuickBooks realm id (the company id in every API path).
    pub realm_id: String,
    /// Display name (CompanyInfo.CompanyName, or set by an admin).
    pub company_name: String,
    /// Home currency (Preferences, or set by an admin).
    pub home_currency: Currency,
    /// False once disconnected (soft delete: history kept).
    pub is_active: bool,
    /// Admin switch: include in automatic and sync-all runs.
    pub sync_enabled: bool,
    /// Connected with sandbox keys.
    pub is_sandbox: bool,
    /// Also write weekend/holiday dates with the rate in force.
    pub fill_non_business_days: bool,
    /// First connection.
    pub created_at: DateTime<Utc>,
    /// Last change of this record.
    pub updated_at: DateTime<Utc>,
    /// Last successful sync.
    pub last_sync_at: Option<DateTime<Utc>>,
    /// Grant state.
    pub connection: Connection,
    /// Token expiries, when tokens are stored.
    pub tokens: Option<TokenExpiry>,
    /// QuickBooks multicurrency flag, as last read.
    pub multicurrency: bool,
    /// Active company currencies, as last read (never includes home).
    pub active_currencies: Vec<Currency>,
    /// When currencies/preferences were last read from QuickBooks.
    pub currencies_checked_at: Option<DateTime<Utc>>,
    /// What a routine sync does about a rate QuickBooks changed after we confirmed it
    /// (added in schema 2, last so that [`v1::Company`] is this record without it).
    pub drift: DriftPolicy,
}

/// What a routine sync does about drift (SPEC §5 "Drift").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DriftPolicy {
    /// Write our confirmed rate back in the same sync (the default).
    #[default]
    Correct,
    /// Only record (and alert); never overwrite what QuickBooks now holds.
    Report,
}

impl DriftPolicy {
    /// The setting's word (`correct`, `report`).
    pub fn as_str(self) -> &'static str {
        match self {
            DriftPolicy::Correct => "correct",
            DriftPolicy::Report => "report",
        }
    }

    /// The policy a word names.
    pub fn parse(s: &str) -> Option<DriftPolicy> {
        match s {
            "correct" => Some(DriftPolicy::Correct),
            "report" => Some(DriftPolicy::Report),
            _ => None,
        }
    }
}

impl Company {
    /// A newly connected company as first stored: active, sync on, weekends filled, drift
    /// corrected, home currency ALL and multicurrency assumed until QuickBooks' Preferences
    /// are read (always before the first write: `currencies_checked_at` is empty).
    pub fn connected(realm: &str, name: &str, is_sandbox: bool, now: DateTime<Utc>) -> Company {
        Company {
            realm_id: realm.to_string(),
            company_name: name.to_string(),
            home_currency: Currency::ALL,
            is_active: true,
            sync_enabled: true,
            is_sandbox,
            fill_non_business_days: true,
            created_at: now,
            updated_at: now,
            last_sync_at: None,
            connection: Connection::Connected,
            tokens: None,
            multicurrency: true,
            active_currencies: vec![],
            currencies_checked_at: None,
            drift: DriftPolicy::default(),
        }
    }

    /// Connected, active and not waiting for a reconnect.
    pub fn is_connected(&self) -> bool {
        self.is_active && self.connection == Connection::Connected
    }
}

/// The secret part of a grant. Stored only as an age ciphertext.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSet {
    /// Bearer token for the accounting API.
    pub access_token: String,
    /// The latest refresh token Intuit gave us.
    pub refresh_token: String,
    /// Expiries of both.
    pub expiry: TokenExpiry,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &"***")
            .field("refresh_token", &"***")
            .field("expiry", &self.expiry)
            .finish()
    }
}

/// A rate as computed for (and possibly written to) one company.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompanyRate {
    /// The date (QuickBooks `AsOfDate`).
    pub date: NaiveDate,
    /// Source currency as written to QuickBooks (ISO code).
    pub currency: Currency,
    /// Home-currency units per one unit of `currency`.
    #[serde(with = "rust_decimal::serde::str")]
    pub rate: Decimal,
    /// The BoA table and fixing date it came from.
    pub fixing: (TableKind, NaiveDate),
    /// Confirmed equal in QuickBooks.
    pub synced: bool,
    /// When confirmed.
    pub synced_at: Option<DateTime<Utc>>,
}

/// What kind of attempt a log record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogKind {
    /// Obtaining a fixing in force for the date.
    Scraping,
    /// Writing rates to QuickBooks.
    Syncing,
    /// Connection events (connect, refresh failure, disconnect).
    Connection,
    /// A rate QuickBooks holds differs from the one we confirmed (appended last: older
    /// records keep their variant numbers).
    Drift,
}

/// What a drift record says: the currency, and both rates (its date is the record's `date`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftDetail {
    /// The currency.
    pub currency: Currency,
    /// What QuickBooks holds now; `None` when the rate is gone there.
    #[serde(with = "rust_decimal::serde::str_option")]
    pub theirs: Option<Decimal>,
    /// What we confirmed.
    #[serde(with = "rust_decimal::serde::str")]
    pub ours: Decimal,
}

/// One entry of a company's scrape/sync log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// When.
    pub at: DateTime<Utc>,
    /// Which attempt.
    pub kind: LogKind,
    /// Outcome.
    pub success: bool,
    /// The rate date concerned.
    pub date: Option<NaiveDate>,
    /// Human-readable summary.
    pub message: String,
    /// Writes made.
    pub rates_written: u32,
    /// Rates already equal in QuickBooks.
    pub rates_unchanged: u32,
    /// Intuit transaction ids of the calls made.
    pub intuit_tids: Vec<String>,
    /// The drift, for a [`LogKind::Drift`] record (added in schema 2, last).
    pub drift: Option<DriftDetail>,
}

impl LogRecord {
    /// A connection event (connect, reconnect, refresh failure, disconnect).
    pub fn connection(
        at: DateTime<Utc>,
        success: bool,
        message: impl Into<String>,
        intuit_tids: Vec<String>,
    ) -> Self {
        LogRecord {
            at,
            kind: LogKind::Connection,
            success,
            date: None,
            message: message.into(),
            rates_written: 0,
            rates_unchanged: 0,
            intuit_tids,
            drift: None,
        }
    }
}

/// A stored BoA table with its revisions (kept forever).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTable {
    /// The current revision.
    pub table: FixingTable,
    /// Where it came from.
    pub source: FixingSource,
    /// When it was stored.
    pub stored_at: DateTime<Utc>,
    /// Earlier revisions of the same date, oldest first.
    pub previous: Vec<(FixingTable, FixingSource, DateTime<Utc>)>,
}

/// One scrape attempt (global log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrapeRecord {
    /// When.
    pub at: DateTime<Utc>,
    /// URL fetched.
    pub url: String,
    /// Outcome.
    pub success: bool,
    /// Fixing dates seen, per table.
    pub fixing_dates: Vec<(TableKind, NaiveDate)>,
    /// `new`, `unchanged`, `revised` or the error.
    pub outcome: String,
}

/// A pending OAuth authorization or an unused invite link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PendingAuth {
    /// A `state` handed to Intuit, bound to a browser cookie nonce.
    State {
        /// Created.
        created_at: DateTime<Utc>,
        /// Refused after this.
        expires_at: DateTime<Utc>,
        /// The nonce the signed cookie carries.
        browser_nonce: String,
    },
    /// A single-use link from `connect-url` (invite enrollment).
    Invite {
        /// Created.
        created_at: DateTime<Utc>,
        /// Refused after this.
        expires_at: DateTime<Utc>,
    },
    /// A `state` of a flow started from an invite: the invite is consumed only when the
    /// connection succeeds (appended last: older records keep their variant numbers).
    InvitedState {
        /// Created.
        created_at: DateTime<Utc>,
        /// Refused after this.
        expires_at: DateTime<Utc>,
        /// The nonce the signed cookie carries.
        browser_nonce: String,
        /// The invite code that let the flow start.
        invite: String,
    },
}

/// The records as schema 1 wrote them, read only by the migration to schema 2
/// (`store::migrate`). Each is the current record minus the fields schema 2 appended.
pub mod v1 {
    use super::*;

    /// A schema-1 company (no `drift`).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[allow(missing_docs)]
    pub struct Company {
        pub realm_id: String,
        pub company_name: String,
        pub home_currency: Currency,
        pub is_active: bool,
        pub sync_enabled: bool,
        pub is_sandbox: bool,
        pub fill_non_business_days: bool,
        pub created_at: DateTime<Utc>,
        pub updated_at: DateTime<Utc>,
        pub last_sync_at: Option<DateTime<Utc>>,
        pub connection: Connection,
        pub tokens: Option<TokenExpiry>,
        pub multicurrency: bool,
        pub active_currencies: Vec<Currency>,
        pub currencies_checked_at: Option<DateTime<Utc>>,
    }

    impl From<Company> for super::Company {
        fn from(c: Company) -> Self {
            super::Company {
                realm_id: c.realm_id,
                company_name: c.company_name,
                home_currency: c.home_currency,
                is_active: c.is_active,
                sync_enabled: c.sync_enabled,
                is_sandbox: c.is_sandbox,
                fill_non_business_days: c.fill_non_business_days,
                created_at: c.created_at,
                updated_at: c.updated_at,
                last_sync_at: c.last_sync_at,
                connection: c.connection,
                tokens: c.tokens,
                multicurrency: c.multicurrency,
                active_currencies: c.active_currencies,
                currencies_checked_at: c.currencies_checked_at,
                drift: DriftPolicy::default(),
            }
        }
    }

    /// A schema-1 log record (no `drift`).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[allow(missing_docs)]
    pub struct LogRecord {
        pub at: DateTime<Utc>,
        pub kind: LogKind,
        pub success: bool,
        pub date: Option<NaiveDate>,
        pub message: String,
        pub rates_written: u32,
        pub rates_unchanged: u32,
        pub intuit_tids: Vec<String>,
    }

    impl From<LogRecord> for super::LogRecord {
        fn from(r: LogRecord) -> Self {
            super::LogRecord {
                at: r.at,
                kind: r.kind,
                success: r.success,
                date: r.date,
                message: r.message,
                rates_written: r.rates_written,
                rates_unchanged: r.rates_unchanged,
                intuit_tids: r.intuit_tids,
                drift: None,
            }
        }
    }
}
