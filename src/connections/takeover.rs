//! Taking over existing QuickBooks connections without customers reconnecting (SPEC §10):
//! the lines of an import file (JSON Lines exported from the predecessor's `companies`
//! table) and the takeover itself, for `adopt` and `import-connections`.
//!
//! A takeover refreshes the given token at Intuit and stores the answer (encrypted, flushed)
//! before anything else: the refresh may rotate the token, and from then on only the new one
//! lives. The company is stored connected at once, with what the admin gave and defaults for
//! the rest, and "details not read" (`currencies_checked_at` empty, so the first sync reads
//! Preferences and currencies before any write). Then CompanyInfo, Preferences and the
//! currency list are read as for a new connection and the record completed. When those reads
//! fail the company stays connected with its new tokens (the answer says so): losing the
//! rotated token would force the customer to reconnect. One exception: QuickBooks refusing
//! the new access token for this realm (401) means the token belongs to another company, and
//! the takeover is undone (the realm's previous record and tokens put back).
//!
//! Tokens and the Fernet key are never logged, never answered, never stored in plaintext.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value};

use super::{is_realm_id, Connections, Error, Overrides};
use crate::currency::Currency;
use crate::store::records::{Company, Connection, LogRecord, TokenSet};

/// Longest import line the CLI sends (a predecessor's row is well under 4 KiB); longer lines
/// are reported as failed without being read into memory whole.
pub const MAX_IMPORT_LINE: usize = 64 * 1024;

/// Longest company name (as for `set --name`).
const MAX_NAME: usize = 200;

/// Where a line's refresh token comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `refresh_token`: plaintext.
    Plain(String),
    /// `refresh_token_fernet`: a Fernet token under the predecessor's key.
    Fernet(String),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Plain(_) => f.write_str("Plain(***)"),
            TokenSource::Fernet(_) => f.write_str("Fernet(***)"),
        }
    }
}

/// One line of an import file, parsed and checked (token not yet decrypted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportLine {
    /// `realm_id` or `company_id`.
    pub realm: String,
    /// The refresh token as found on the line.
    pub token: TokenSource,
    /// `company_name` (overrides CompanyInfo).
    pub name: Option<String>,
    /// `home_currency` as the file gives it: checked against QuickBooks' Preferences, never applied over them (SPEC §5).
    pub home: Option<Currency>,
    /// `sync_enabled` (default true).
    pub sync_enabled: Option<bool>,
    /// `is_active` (default true; false lines are skipped).
    pub is_active: bool,
    /// `created_at`, kept as the company's creation time.
    pub created_at: Option<DateTime<Utc>>,
    /// `last_sync_at`, kept until the first sync here.
    pub last_sync_at: Option<DateTime<Utc>>,
}

/// What is taken over: a realm, its plaintext refresh token and what the admin says.
pub struct Takeover {
    /// The realm id.
    pub realm: String,
    /// The plaintext refresh token (never logged).
    pub refresh_token: String,
    /// A display name instead of CompanyInfo's.
    pub name: Option<String>,
    /// The home currency the admin gave: checked against QuickBooks', never applied over it.
    pub home: Option<Currency>,
    /// The sync setting to keep.
    pub sync_enabled: Option<bool>,
    /// The creation time to keep.
    pub created_at: Option<DateTime<Utc>>,
    /// The last sync to keep until the first one here.
    pub last_sync_at: Option<DateTime<Utc>>,
    /// The company log's record ("adopted", "imported").
    pub how: &'static str,
}

/// A finished takeover: the stored company, and why its details are not read yet if so.
pub struct Taken {
    /// The stored company.
    pub company: Company,
    /// CompanyInfo, Preferences and currencies were read (else the first sync reads them).
    pub details_read: bool,
    /// What the answer must say (details not read, a home currency not applied).
    pub warning: Option<String>,
}

/// A realm id as the OAuth callback accepts it: 1-64 ASCII letters and digits.
///
/// # Errors
/// 400 `bad_realm`.
pub fn check_realm(realm: &str) -> Result<(), Error> {
    if !is_realm_id(realm) {
        return Err(Error::bad_input(
            "bad_realm",
            format!(
                "{:?} is not a QuickBooks company id (1-64 letters and digits)",
                short(realm)
            ),
        ));
    }
    Ok(())
}

/// The first 70 characters of a value for a message (a pasted token must not be echoed whole).
pub fn short(s: &str) -> String {
    let mut out: String = s.chars().take(70).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// A home currency as `set --home-currency` accepts it.
///
/// # Errors
/// 400 `bad_currency`.
pub fn check_currency(s: &str) -> Result<Currency, Error> {
    Currency::new(s)
        .ok()
        .filter(|c| {
            s.len() == 3
                && s.chars().all(|ch| ch.is_ascii_uppercase())
                && crate::currency::is_iso_currency(*c)
        })
        .ok_or_else(|| {
            Error::bad_input(
                "bad_currency",
                format!(
                    "home_currency: {:?} is not an ISO 4217 currency code (e.g. EUR)",
                    short(s)
                ),
            )
        })
}

pub fn check_name(s: &str) -> Result<Option<String>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if s.chars().count() > MAX_NAME {
        return Err(format!("company_name is longer than {MAX_NAME} characters"));
    }
    Ok(Some(s.to_string()))
}

/// A boolean as exports write them: JSON true/false, SQLite's 0/1, PostgreSQL's "t"/"f".
fn flag(v: &Value, key: &str) -> Result<Option<bool>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        Value::Number(n) if n.as_i64() == Some(0) => Ok(Some(false)),
        Value::Number(n) if n.as_i64() == Some(1) => Ok(Some(true)),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "t" | "1" | "yes" => Ok(Some(true)),
            "false" | "f" | "0" | "no" => Ok(Some(false)),
            _ => Err(format!("{key}: {:?} is not true or false", short(s))),
        },
        other => Err(format!("{key}: {other} is not true or false")),
    }
}

/// A timestamp as exports write them: RFC 3339, or a naive `YYYY-MM-DD[ T]HH:MM:SS[.frac]`
/// (SQLAlchemy in SQLite, `timestamp` in PostgreSQL), taken as UTC.
fn timestamp(v: &Value, key: &str) -> Result<Option<DateTime<Utc>>, String> {
    let s = match v {
        Value::Null => return Ok(None),
        Value::String(s) if s.trim().is_empty() => return Ok(None),
        Value::String(s) => s.trim(),
        other => return Err(format!("{key}: {other} is not a date-time")),
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    // PostgreSQL's timestamptz text: "2024-01-15 07:00:00.123+00".
    for f in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Ok(Some(t.with_timezone(&Utc)));
        }
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Ok(Some(t.and_utc()));
        }
    }
    Err(format!("{key}: {:?} is not a date-time", short(s)))
}

fn text<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim())),
        Some(_) => Err(format!("{key} must be a string")),
    }
}

/// Parses one import line (SPEC §10). Unknown keys are ignored. The error is a message for
/// the line's result; it never contains the token.
///
/// # Errors
/// Not a JSON object, no realm, no token or two, a bad realm, currency, flag or date.
pub fn parse_line(line: &str) -> Result<ImportLine, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON ({e})"))?;
    let Value::Object(obj) = v else {
        return Err("not a JSON object".into());
    };
    let realm = match obj.get("realm_id").or_else(|| obj.get("company_id")) {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        None | Some(Value::Null) => return Err("no realm_id (or company_id)".into()),
        Some(_) => return Err("realm_id must be a string".into()),
    };
    check_realm(&realm).map_err(|e| e.to_string())?;
    let token = match (
        text(&obj, "refresh_token")?,
        text(&obj, "refresh_token_fernet")?,
    ) {
        (Some(t), None) => TokenSource::Plain(t.to_string()),
        (None, Some(t)) => TokenSource::Fernet(t.to_string()),
        (Some(_), Some(_)) => {
            return Err("give refresh_token or refresh_token_fernet, not both".into())
        }
        (None, None) => return Err("no refresh_token (or refresh_token_fernet)".into()),
    };
    let name = match text(&obj, "company_name")? {
        Some(s) => check_name(s)?,
        None => None,
    };
    let home = match text(&obj, "home_currency")? {
        Some(s) => Some(check_currency(s).map_err(|e| e.to_string())?),
        None => None,
    };
    let get = |k: &str| obj.get(k).unwrap_or(&Value::Null);
    Ok(ImportLine {
        realm,
        token,
        name,
        home,
        sync_enabled: flag(get("sync_enabled"), "sync_enabled")?,
        is_active: flag(get("is_active"), "is_active")?.unwrap_or(true),
        created_at: timestamp(get("created_at"), "created_at")?,
        last_sync_at: timestamp(get("last_sync_at"), "last_sync_at")?,
    })
}

/// The predecessor's Fernet key (url-safe base64 of 32 bytes; surrounding whitespace ignored).
///
/// # Errors
/// 400 `bad_fernet_key`.
pub fn fernet_key(key: &str) -> Result<fernet::Fernet, Error> {
    fernet::Fernet::new(key.trim()).ok_or_else(|| {
        Error::bad_input(
            "bad_fernet_key",
            "the Fernet key is not a url-safe base64 encoding of 32 bytes",
        )
    })
}

/// The plaintext refresh token of a line.
///
/// # Errors
/// A Fernet token without a key, or one the key cannot decrypt.
pub fn reveal(token: &TokenSource, key: Option<&fernet::Fernet>) -> Result<String, String> {
    match token {
        TokenSource::Plain(t) => Ok(t.clone()),
        TokenSource::Fernet(t) => {
            let key =
                key.ok_or("refresh_token_fernet needs the predecessor's key (--fernet-key-file)")?;
            let plain = key
                .decrypt(t)
                .map_err(|_| "cannot decrypt refresh_token_fernet with the given key (wrong key, or not a Fernet token)")?;
            let plain = String::from_utf8(plain)
                .map_err(|_| "refresh_token_fernet does not decrypt to text")?;
            let plain = plain.trim();
            if plain.is_empty() {
                return Err("refresh_token_fernet decrypts to an empty token".into());
            }
            Ok(plain.to_string())
        }
    }
}

/// Intuit refusing a refresh token, with Intuit's own words.
fn refused(realm: &str, e: &crate::qbo::Error) -> Error {
    if e.is_invalid_grant() {
        Error::Upstream {
            code: "token_refused",
            message: format!(
                "Intuit refused the refresh token for {realm}: {e}; nothing was stored"
            ),
        }
    } else {
        Error::Upstream {
            code: e.code(),
            message: format!(
                "refreshing the token for {realm} at Intuit failed: {e}; nothing was stored"
            ),
        }
    }
}

/// The message of a line over [`MAX_IMPORT_LINE`].
pub fn too_long() -> String {
    format!(
        "line too long (over {} KiB); not a connection record",
        MAX_IMPORT_LINE / 1024
    )
}

impl Connections {
    /// The company as stored the moment Intuit answers: connected with the new tokens, details
    /// to be read (by the takeover, or else by the first sync).
    pub(super) fn provisional(
        &self,
        existing: Option<Company>,
        t: &Takeover,
        tokens: &TokenSet,
        now: DateTime<Utc>,
    ) -> Company {
        let mut c = existing.unwrap_or_else(|| {
            Company::connected(
                &t.realm,
                &format!("QuickBooks company {}", t.realm),
                self.config().quickbooks.sandbox,
                now,
            )
        });
        if let Some(n) = &t.name {
            c.company_name.clone_from(n);
        }
        if let Some(s) = t.sync_enabled {
            c.sync_enabled = s;
        }
        if let Some(at) = t.created_at {
            c.created_at = at;
        }
        if c.last_sync_at.is_none() {
            c.last_sync_at = t.last_sync_at;
        }
        c.is_active = true;
        c.connection = Connection::Connected;
        c.tokens = Some(tokens.expiry.clone());
        c.currencies_checked_at = None;
        c.updated_at = now;
        c
    }

    /// Refreshes at Intuit (transient failures retried twice), stores the rotation, reads the
    /// company. See the module docs for what happens when the reads fail.
    pub async fn take_over(&self, t: &Takeover) -> Result<Taken, Error> {
        // The realm's token lock, held from the refresh until the rotation is stored: a
        // keep-alive refresh or a disconnect of the same realm waits (SPEC §9).
        let lock = self.tokens.lock_for(&t.realm);
        let held = lock.lock().await;
        let (tokens, tid) = self
            .tokens
            .refresh_with_retries(&t.refresh_token, None, self.now())
            .await
            .map_err(|e| refused(&t.realm, &e))?;
        let now = self.now();
        // Before anything else: from here on only the new refresh token may be alive.
        let existing = self.store.company(&t.realm).await?;
        let previous_tokens = match existing {
            Some(_) => self.store.tokens(&t.realm).await?,
            None => None,
        };
        let company = self.provisional(existing.clone(), t, &tokens, now);
        self.store
            .save_company_and_tokens(&company, &tokens)
            .await?;
        // `connect_with_grant` takes the lock again to store the company it read.
        drop(held);
        let over = Overrides {
            name: t.name.clone(),
            log_message: Some(t.how),
        };
        match self
            .connect_with_grant(&t.realm, &tokens, tid.clone(), &over)
            .await
        {
            Ok(company) => {
                // SPEC §5: QuickBooks' home currency is the only one; a different one given
                // for the line is not applied, and the result says so.
                let warning = t.home.filter(|h| *h != company.home_currency).map(|h| {
                    format!(
                        "home_currency {h} was not applied: QuickBooks' home currency for this \
                         company is {}, and every rate is computed for it",
                        company.home_currency
                    )
                });
                if let Some(w) = &warning {
                    tracing::warn!(realm_id = %t.realm, "Company {}: {w}", t.realm);
                }
                Ok(Taken {
                    company,
                    details_read: true,
                    warning,
                })
            }
            Err(Error::Upstream {
                code: "unauthorized",
                ..
            }) => {
                // A fresh access token refused for this realm: the grant is another company's.
                match (&existing, previous_tokens) {
                    (None, _) => self.store.remove_company(&t.realm).await?,
                    (Some(prev), Some(pt)) => self.store.save_company_and_tokens(prev, &pt).await?,
                    (Some(prev), None) => self.store.save_company_without_tokens(prev).await?,
                }
                // QuickBooks' refusal, like Intuit's: the operation failed (exit 1), the input
                // itself was well formed.
                Err(Error::TokenNotForRealm(t.realm.clone()))
            }
            Err(e) => {
                let warning = format!(
                    "the connection was taken over and its new tokens stored, but reading the \
                     company from QuickBooks failed ({}); it is read again before its first sync",
                    e
                );
                self.store
                    .append_log(
                        &t.realm,
                        &LogRecord::connection(
                            self.now(),
                            true,
                            format!("{}; {warning}", t.how),
                            tid.into_iter().collect(),
                        ),
                    )
                    .await?;
                tracing::warn!(realm_id = %t.realm, "Company {}: {warning}", t.realm);
                Ok(Taken {
                    company,
                    details_read: false,
                    warning: Some(warning),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_predecessor_row_and_ignores_unknown_keys() {
        let l = parse_line(
            r#"{"id": 7, "company_id": "9341453199574798", "company_name": " Acme ", "refresh_token_fernet": "gAAAA", "home_currency": "EUR", "is_active": 1, "sync_enabled": 0, "created_at": "2024-01-15 07:00:00.123456", "last_sync_at": null, "extra": [1]}"#,
        )
        .unwrap();
        assert_eq!(l.realm, "9341453199574798");
        assert_eq!(l.token, TokenSource::Fernet("gAAAA".into()));
        assert_eq!(l.name.as_deref(), Some("Acme"));
        assert_eq!(l.home, Some(Currency::new("EUR").unwrap()));
        assert!(l.is_active);
        assert_eq!(l.sync_enabled, Some(false));
        assert_eq!(
            l.created_at.map(|t| t.to_rfc3339()),
            Some("2024-01-15T07:00:00.123456+00:00".into())
        );
        assert_eq!(l.last_sync_at, None);
    }

    #[test]
    fn parses_plain_tokens_and_postgres_values() {
        let l = parse_line(r#"{"realm_id": 123, "refresh_token": "RT1", "is_active": "f", "created_at": "2024-01-15T08:00:00+01:00"}"#).unwrap();
        assert_eq!(l.realm, "123");
        assert_eq!(l.token, TokenSource::Plain("RT1".into()));
        assert!(!l.is_active);
        assert_eq!(l.sync_enabled, None);
        assert_eq!(
            l.created_at.map(|t| t.to_rfc3339()),
            Some("2024-01-15T07:00:00+00:00".into())
        );
        let pg = parse_line(r#"{"realm_id": "1", "refresh_token": "x", "last_sync_at": "2024-01-15 07:00:00.5+00"}"#).unwrap();
        assert!(pg.last_sync_at.is_some());
    }

    #[test]
    fn refuses_bad_lines_with_reasons_that_never_echo_the_token() {
        let cases = [
            ("{not json", "not valid JSON"),
            ("[1]", "not a JSON object"),
            (r#"{"refresh_token": "SECRET"}"#, "no realm_id"),
            (r#"{"realm_id": "12"}"#, "no refresh_token"),
            (
                r#"{"realm_id": "12", "refresh_token": "SECRET", "refresh_token_fernet": "SECRET"}"#,
                "not both",
            ),
            (
                r#"{"realm_id": "12-3", "refresh_token": "SECRET"}"#,
                "not a QuickBooks company id",
            ),
            (
                r#"{"realm_id": "12", "refresh_token": "SECRET", "home_currency": "EURO"}"#,
                "ISO 4217",
            ),
            (
                r#"{"realm_id": "12", "refresh_token": "SECRET", "home_currency": "XYZ"}"#,
                "ISO 4217",
            ),
            (
                r#"{"realm_id": "12", "refresh_token": "SECRET", "is_active": "maybe"}"#,
                "is_active",
            ),
            (
                r#"{"realm_id": "12", "refresh_token": "SECRET", "created_at": "yesterday"}"#,
                "created_at",
            ),
        ];
        for (line, want) in cases {
            let e = parse_line(line).unwrap_err();
            assert!(e.contains(want), "{line}: {e}");
            assert!(!e.contains("SECRET"), "{line}: {e}");
        }
        let long = format!(
            r#"{{"realm_id": "{}", "refresh_token": "x"}}"#,
            "1".repeat(65)
        );
        assert!(parse_line(&long).is_err());
    }

    #[test]
    fn fernet_tokens_decrypt_with_the_right_key_only() {
        let key = fernet::Fernet::generate_key();
        let token = fernet::Fernet::new(&key)
            .unwrap()
            .encrypt(b"AB11-the-refresh-token");
        // Keys are read from files: whitespace around them is ignored.
        let f = fernet_key(&format!("  {key}\n")).unwrap();
        let src = TokenSource::Fernet(token.clone());
        assert_eq!(reveal(&src, Some(&f)).unwrap(), "AB11-the-refresh-token");

        let other = fernet_key(&fernet::Fernet::generate_key()).unwrap();
        let e = reveal(&src, Some(&other)).unwrap_err();
        assert!(
            e.contains("cannot decrypt refresh_token_fernet with the given key"),
            "{e}"
        );
        assert!(reveal(&src, None)
            .unwrap_err()
            .contains("--fernet-key-file"));
        assert!(reveal(&TokenSource::Fernet("garbage".into()), Some(&f)).is_err());
        assert_eq!(
            reveal(&TokenSource::Plain("RT".into()), None).unwrap(),
            "RT"
        );
        assert_eq!(
            fernet_key("too-short").err().map(|e| e.code()),
            Some("bad_fernet_key")
        );
    }

    #[test]
    fn token_sources_do_not_debug_print_the_token() {
        let s = format!("{:?}", TokenSource::Plain("SECRET".into()));
        assert!(!s.contains("SECRET"));
    }

    #[test]
    fn realm_and_currency_rules_match_the_callback_and_settings() {
        assert!(check_realm("9341453199574798").is_ok());
        assert!(check_realm("").is_err());
        assert!(check_realm(&"1".repeat(65)).is_err());
        assert!(check_realm("12 3").is_err());
        assert!(check_currency("USD").is_ok());
        assert!(check_currency("usd").is_err());
        assert!(check_currency("ABC").is_err());
    }
}
