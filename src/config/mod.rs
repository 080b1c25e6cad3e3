//! Configuration: the TOML file of SPEC §3, environment overrides, secrets from files and
//! systemd credentials, and validation that names the offending key.
//!
//! Owns parsing and checking only. It never opens the store or a socket; `Config` is an
//! immutable value that the daemon swaps whole on SIGHUP.
//!
//! # Layout
//! This file holds [`Config`], the error, the file as a whole (`RawConfig`), `[log]` and
//! `[alerts]`, and the shared parsers; each larger section has a file with its raw form, its
//! typed form and its validation: `server.rs`, `storage.rs` (with `[control]`),
//! `quickbooks.rs`, `boa.rs`, `schedule.rs`; `secrets.rs` is [`Secret`] and where secrets
//! come from.

mod boa;
mod quickbooks;
mod schedule;
mod secrets;
mod server;
mod storage;

pub use boa::BoaConfig;
use boa::*;
pub use quickbooks::QuickbooksConfig;
use quickbooks::*;
pub use schedule::ScheduleConfig;
use schedule::*;
pub use secrets::Secret;
use secrets::*;
use server::*;
pub use server::{Enrollment, ServerConfig};
use storage::*;
pub use storage::{Backend, StorageConfig};

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use chrono::NaiveTime;

use crate::cidr::Cidr;
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::Deserialize;
use url::Url;

/// The config file read when `--config` is not given and it exists.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/boa-exchange/config.toml";

/// A configuration problem, always naming the key (or file) at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The path tried.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML did not parse or has an unknown key / wrong type.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// toml's message (names the key and line).
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{key}: {message}")]
    Invalid {
        /// Dotted key, e.g. `schedule.time`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

fn invalid(key: &str, message: impl Into<String>) -> Error {
    Error::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

// ---------------------------------------------------------------------------------------
// The file as written (every key optional, defaults from named fns).

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    server: RawServer,
    storage: RawStorage,
    control: RawControl,
    quickbooks: RawQuickbooks,
    boa: RawBoa,
    schedule: RawSchedule,
    log: RawLog,
    alerts: RawAlerts,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: "info".into(),
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawAlerts {
    webhook_url: String,
}

// ---------------------------------------------------------------------------------------
// The validated, typed configuration.

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from (`None` = built-in defaults).
    pub source: Option<PathBuf>,
    /// HTTP server settings.
    pub server: ServerConfig,
    /// Store location.
    pub storage: StorageConfig,
    /// Control socket path.
    pub control_socket: PathBuf,
    /// Intuit / QuickBooks.
    pub quickbooks: QuickbooksConfig,
    /// Bank of Albania source.
    pub boa: BoaConfig,
    /// Daily schedule.
    pub schedule: ScheduleConfig,
    /// Log filter directive (`RUST_LOG` wins when set).
    pub log_level: String,
    /// Optional alert webhook.
    pub alert_webhook: Option<Url>,
    /// Key of the HMAC signing OAuth state cookies (`SECRET_KEY`); generated and kept in the
    /// store (encrypted) when unset.
    pub secret_key: Option<Secret>,
    /// `ENVIRONMENT` as given (informational: shown by `status`).
    pub environment: String,
}

/// Where environment values come from (the process environment, or a map in tests).
pub trait Env {
    /// The variable's value, if set and not empty.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned().filter(|v| !v.is_empty())
    }
}

impl Config {
    /// Loads the config the daemon or CLI should use: `path` if given, else
    /// [`DEFAULT_CONFIG_PATH`] when it exists, else built-in defaults; then the environment.
    ///
    /// # Errors
    /// Any unreadable file, TOML error, unknown key or invalid value.
    pub fn load(path: Option<&Path>) -> Result<Config, Error> {
        let path = match path {
            Some(p) => Some(p.to_path_buf()),
            None => {
                let d = Path::new(DEFAULT_CONFIG_PATH);
                d.exists().then(|| d.to_path_buf())
            }
        };
        Self::load_with_env(path.as_deref(), &ProcessEnv)
    }

    /// As [`Config::load`] with an explicit file (or none) and environment.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn load_with_env(path: Option<&Path>, env: &dyn Env) -> Result<Config, Error> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| Error::Read {
                path: p.to_path_buf(),
                source,
            })?,
            None => String::new(),
        };
        let name = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<defaults>".into());
        Self::from_toml(&text, &name, path, env)
    }

    /// Parses and validates config text.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_toml(
        text: &str,
        name: &str,
        path: Option<&Path>,
        env: &dyn Env,
    ) -> Result<Config, Error> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| Error::Parse {
            path: name.to_string(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        let base_dir = path
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        validate(raw, env, &base_dir, path)
    }
}

fn parse_hhmm(key: &str, s: &str) -> Result<NaiveTime, Error> {
    let bad = || invalid(key, format!("{s:?} is not a time (expected HH:MM)"));
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    NaiveTime::from_hms_opt(h, m, 0).ok_or_else(bad)
}

fn parse_url(key: &str, s: &str) -> Result<Url, Error> {
    let u = Url::parse(s).map_err(|e| invalid(key, format!("{s:?} is not a URL ({e})")))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(invalid(key, format!("{s:?} is not an http(s) URL")));
    }
    Ok(u)
}

fn positive(key: &str, v: i64, max: i64) -> Result<i64, Error> {
    if v < 1 || v > max {
        return Err(invalid(key, format!("{v} is out of range (1..={max})")));
    }
    Ok(v)
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() || base.as_os_str().is_empty() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn validate(
    raw: RawConfig,
    env: &dyn Env,
    base: &Path,
    path: Option<&Path>,
) -> Result<Config, Error> {
    let server = validate_server(raw.server, env, base)?;
    let storage = validate_storage(raw.storage, env, base)?;
    let control_socket = validate_control(raw.control, env, base, &storage)?;
    let quickbooks = validate_quickbooks(raw.quickbooks, env, base, &server.public_url)?;
    let boa = validate_boa(raw.boa)?;
    let schedule = validate_schedule(raw.schedule, env)?;
    let log_level = validate_log(raw.log)?;
    let alert_webhook = validate_alerts(raw.alerts)?;

    let secret_key = secret(
        env,
        "SECRET_KEY",
        "",
        "",
        "secret_key",
        Secret::default(),
        base,
    )?;
    let secret_key = (!secret_key.is_empty()).then_some(secret_key);

    Ok(Config {
        source: path.map(Path::to_path_buf),
        server,
        storage,
        control_socket,
        quickbooks,
        boa,
        schedule,
        log_level,
        alert_webhook,
        secret_key,
        environment: env
            .var("ENVIRONMENT")
            .unwrap_or_else(|| "development".into()),
    })
}

/// `[log]`: the filter must parse (it is applied again on SIGHUP).
fn validate_log(l: RawLog) -> Result<String, Error> {
    let log_level = l.level;
    tracing_subscriber::EnvFilter::try_new(&log_level).map_err(|e| {
        invalid(
            "log.level",
            format!("{log_level:?} is not a log filter ({e})"),
        )
    })?;
    Ok(log_level)
}

/// `[alerts]`.
fn validate_alerts(a: RawAlerts) -> Result<Option<Url>, Error> {
    if a.webhook_url.is_empty() {
        Ok(None)
    } else {
        Ok(Some(parse_url("alerts.webhook_url", &a.webhook_url)?))
    }
}

/// How services see the configuration: the current value, replaced whole on SIGHUP by the
/// wiring (`app`), which holds the sending side.
pub type ConfigWatch = tokio::sync::watch::Receiver<std::sync::Arc<Config>>;

/// The current configuration of a watch.
pub fn current(w: &ConfigWatch) -> std::sync::Arc<Config> {
    w.borrow().clone()
}

#[cfg(test)]
mod tests;
