//! The connections service: how a QuickBooks company comes to be connected here and stops
//! being connected. It owns the OAuth flow's state and invites ([`flow`]), the reads of a
//! newly authorised company and the storing of its grant, the takeover of existing
//! connections with its rollback ([`takeover`]), and disconnect. It answers in its own
//! [`Error`]; `ops` maps that to statuses and exit codes, and adds what an operation does
//! around it (syncing a newly connected company at once).
//!
//! Connect, disconnect and token refresh of one company hold the realm's token lock, so a
//! refresh in flight never writes tokens onto a disconnected company or over a new grant.

pub mod flow;
pub mod takeover;

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::config::{current, Config, ConfigWatch};
use crate::currency::Currency;
use crate::qbo::tokens::TokenManager;
use crate::qbo::QboClient;
use crate::store::records::{Company, Connection, LogRecord, TokenSet};
use crate::store::Store;
use crate::time::clock::Clock;

pub use flow::{CallbackParams, ConnectStart, INVITE_TTL, STATE_COOKIE, STATE_TTL};
pub use takeover::{
    check_currency, check_realm, fernet_key, parse_line, reveal, too_long, ImportLine, Taken,
    Takeover, TokenSource, MAX_IMPORT_LINE,
};

/// Why a connection could not be made, taken over or ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The Intuit app is not configured (no client id).
    #[error("QuickBooks is not configured (quickbooks.client_id is empty)")]
    NotConfigured,
    /// `enrollment = "invite"` and no invite given.
    #[error("connections are by invitation only; ask your administrator for a link")]
    InviteRequired,
    /// An invite that is unknown, used or expired.
    #[error("this invitation link is unknown, used or expired; ask for a new one")]
    InvalidInvite,
    /// The browser's authorization answer is refused (state missing, reused, expired or
    /// foreign; access denied; no code; a refused code).
    #[error("{message}")]
    Refused {
        /// snake_case reason (`invalid_state`, `access_denied`, …).
        code: &'static str,
        /// What to tell the browser.
        message: String,
    },
    /// Bad input from the admin (a realm id, currency, name, token or key).
    #[error("{message}")]
    BadInput {
        /// snake_case reason (`bad_realm`, `bad_currency`, …).
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No company with that realm id.
    #[error("no company with id {0}")]
    UnknownCompany(String),
    /// Intuit accepted a refresh token that QuickBooks refuses for the realm: it belongs to
    /// another company (nothing stored for the realm).
    #[error(
        "Intuit accepted the refresh token but QuickBooks refused it for company {0}: it belongs to another company; nothing was stored for {0}"
    )]
    TokenNotForRealm(String),
    /// Intuit or QuickBooks failed or refused.
    #[error("{message}")]
    Upstream {
        /// snake_case name (`token_refused`, `quickbooks_unavailable`, `unauthorized`, …).
        code: &'static str,
        /// What was being done and what Intuit said.
        message: String,
    },
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
    /// The store cannot be reached right now (the PostgreSQL server is away): nothing was
    /// done; retry later.
    #[error("the store is unavailable: {0}")]
    StoreUnavailable(String),
}

impl Error {
    /// A [`Error::BadInput`].
    pub fn bad_input(code: &'static str, message: impl Into<String>) -> Self {
        Error::BadInput {
            code,
            message: message.into(),
        }
    }

    /// The snake_case name of the error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotConfigured => "not_configured",
            Error::InviteRequired => "invite_required",
            Error::InvalidInvite => "invalid_invite",
            Error::Refused { code, .. }
            | Error::BadInput { code, .. }
            | Error::Upstream { code, .. } => code,
            Error::UnknownCompany(_) => "company_not_found",
            Error::TokenNotForRealm(_) => "token_not_for_realm",
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

/// What the service is built from.
pub struct Connections {
    store: Arc<Store>,
    tokens: Arc<TokenManager>,
    /// The HTTP client for Intuit (one pool for every company).
    http: reqwest::Client,
    config: ConfigWatch,
    clock: Arc<dyn Clock>,
    /// Key of the HMAC that signs OAuth state cookies.
    hmac_key: Vec<u8>,
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

/// What an admin says about a company that QuickBooks would otherwise tell (`adopt`,
/// `import-connections`); the browser flow gives none.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// Display name instead of CompanyInfo's `CompanyName`.
    pub name: Option<String>,
    /// The company log's connection record (default: "connected/reconnected to QuickBooks").
    pub log_message: Option<&'static str>,
}

impl Connections {
    /// The service over its parts.
    pub fn new(
        store: Arc<Store>,
        tokens: Arc<TokenManager>,
        http: reqwest::Client,
        config: ConfigWatch,
        clock: Arc<dyn Clock>,
        hmac_key: Vec<u8>,
    ) -> Self {
        Connections {
            store,
            tokens,
            http,
            config,
            clock,
            hmac_key,
        }
    }

    fn config(&self) -> Arc<Config> {
        current(&self.config)
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn qbo(&self) -> QboClient {
        QboClient::new(self.http.clone(), &self.config().quickbooks)
    }

    /// Reads CompanyInfo, Preferences and the currency list with a fresh access token.
    ///
    /// # Errors
    /// 502 when QuickBooks fails.
    pub async fn read_company(
        &self,
        realm: &str,
        access_token: &str,
    ) -> Result<CompanyRead, Error> {
        let qbo = self.qbo();
        let up = |what: &'static str| {
            move |e: crate::qbo::Error| Error::Upstream {
                code: e.code(),
                message: format!("reading {what} from QuickBooks: {e}"),
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

    /// With a fresh grant for `realm`: reads the company from QuickBooks and stores it with its
    /// tokens ([`read_company`] then [`store_connection`]). Shared by the OAuth callback and the
    /// takeover of existing connections (`ops::migrate`).
    ///
    /// # Errors
    /// 502 when a QuickBooks read fails (nothing stored then); store failure.
    pub async fn connect_with_grant(
        &self,
        realm: &str,
        tokens: &TokenSet,
        tid: Option<String>,
        over: &Overrides,
    ) -> Result<Company, Error> {
        let read = self.read_company(realm, &tokens.access_token).await?;
        self.store_connection(realm, read, tokens, tid, over).await
    }

    /// Creates or re-activates the company from what QuickBooks said (and what the admin
    /// overrides) and stores it with its tokens (encrypted, flushed), under the realm's token
    /// lock.
    ///
    /// # Errors
    /// Store failure.
    pub async fn store_connection(
        &self,
        realm: &str,
        mut read: CompanyRead,
        tokens: &TokenSet,
        tid: Option<String>,
        over: &Overrides,
    ) -> Result<Company, Error> {
        if let Some(name) = &over.name {
            read.name.clone_from(name);
        }
        let now = self.now();
        let config = self.config();
        let lock = self.tokens.lock_for(realm);
        let _held = lock.lock().await;
        let existing = self.store.company(realm).await?;
        let reconnect = existing.is_some();
        let mut company = existing.unwrap_or_else(|| {
            Company::connected(realm, &read.name, config.quickbooks.sandbox, now)
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
        self.store
            .append_log(
                realm,
                &LogRecord::connection(now, true, message, tid.into_iter().collect()),
            )
            .await?;
        self.store.save_company_and_tokens(&company, tokens).await?;
        tracing::info!(
            realm_id = realm,
            reconnect,
            "Company {realm}: connected ({})",
            company.company_name
        );
        Ok(company)
    }

    /// Disconnects `realm`: revokes the grant at Intuit, deletes the tokens here, keeps the
    /// company and its history (`is_active` false). Holds the realm's token lock throughout.
    ///
    /// # Errors
    /// Unknown company; Intuit unreachable (nothing changed then); store failure.
    pub async fn disconnect(&self, realm: &str) -> Result<Company, Error> {
        // The realm's token lock for the whole disconnect: a refresh in flight finishes first
        // (and its rotation is what gets revoked), and none writes tokens back afterwards; a
        // reconnect waits and then stores its new grant over the disconnected record.
        let lock = self.tokens.lock_for(realm);
        let _held = lock.lock().await;
        if self.store.company(realm).await?.is_none() {
            return Err(Error::UnknownCompany(realm.to_string()));
        }
        if let Some(tokens) = self.store.tokens(realm).await? {
            self.tokens
                .oauth()
                .revoke(&tokens.refresh_token)
                .await
                .map_err(|e| Error::Upstream {
                    code: e.code(),
                    message: format!(
                        "revoking the grant at Intuit: {e}; nothing was changed, try again"
                    ),
                })?;
        }
        let now = self.now();
        self.store
            .append_log(
                realm,
                &LogRecord::connection(now, true, "disconnected (grant revoked at Intuit)", vec![]),
            )
            .await?;
        let c = self
            .store
            .disconnect_company(realm, |c| {
                c.is_active = false;
                c.connection = Connection::Disconnected { at: now };
                c.tokens = None;
                c.updated_at = now;
            })
            .await?
            .ok_or_else(|| Error::UnknownCompany(realm.to_string()))?;
        tracing::info!(realm_id = realm, "Company {realm}: disconnected");
        Ok(c)
    }
}
