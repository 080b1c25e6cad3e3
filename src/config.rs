//! Configuration: the TOML file of SPEC §3, environment overrides, secrets from files and
//! systemd credentials, and validation that names the offending key.
//!
//! Owns parsing and checking only. It never opens the store or a socket; `Config` is an
//! immutable value that the daemon swaps whole on SIGHUP.

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

/// A secret string whose `Debug`/`Display` never show it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself; call only where it is sent or compared.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Whether no secret is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("***")
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Secret(String::deserialize(d)?))
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
struct RawServer {
    listen: String,
    public_url: String,
    admin_api_key: Secret,
    admin_api_key_file: String,
    enrollment: String,
    rate_limit_per_minute: i64,
    trusted_proxies: Vec<String>,
    max_connections: i64,
    request_timeout_secs: i64,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: "127.0.0.1:8000".into(),
            public_url: "http://localhost:8000".into(),
            admin_api_key: Secret::default(),
            admin_api_key_file: String::new(),
            enrollment: "open".into(),
            rate_limit_per_minute: 10,
            trusted_proxies: Vec::new(),
            max_connections: 512,
            request_timeout_secs: 30,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStorage {
    data_dir: String,
    identity_file: String,
}

impl Default for RawStorage {
    fn default() -> Self {
        RawStorage {
            data_dir: "./data".into(),
            identity_file: String::new(),
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawControl {
    socket: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawQuickbooks {
    client_id: String,
    client_secret: Secret,
    client_secret_file: String,
    redirect_uri: String,
    sandbox: bool,
    authorize_url: String,
    token_url: String,
    revoke_url: String,
    api_base: String,
    minor_version: i64,
    max_concurrent_companies: i64,
    writes_in_flight_per_company: i64,
    timeout_secs: i64,
}

impl Default for RawQuickbooks {
    fn default() -> Self {
        RawQuickbooks {
            client_id: String::new(),
            client_secret: Secret::default(),
            client_secret_file: String::new(),
            redirect_uri: String::new(),
            sandbox: true,
            authorize_url: "https://appcenter.intuit.com/connect/oauth2".into(),
            token_url: "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer".into(),
            revoke_url: "https://developer.api.intuit.com/v2/oauth2/tokens/revoke".into(),
            api_base: String::new(),
            minor_version: 75,
            max_concurrent_companies: 16,
            writes_in_flight_per_company: 4,
            timeout_secs: 30,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawBoa {
    url: String,
    timeout_secs: i64,
    max_jump_percent: toml::Value,
}

impl Default for RawBoa {
    fn default() -> Self {
        RawBoa {
            url: "https://www.bankofalbania.org/Tregjet/Kursi_zyrtar_i_kembimit/".into(),
            timeout_secs: 30,
            max_jump_percent: toml::Value::Integer(20),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSchedule {
    enabled: bool,
    time: String,
    timezone: String,
    retry_every_minutes: i64,
    give_up_at: String,
}

impl Default for RawSchedule {
    fn default() -> Self {
        RawSchedule {
            enabled: true,
            time: "13:00".into(),
            timezone: "Europe/Tirane".into(),
            retry_every_minutes: 15,
            give_up_at: "18:00".into(),
        }
    }
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

/// Who may start an OAuth connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enrollment {
    /// Anyone who reaches `/api/v1/oauth/connect`.
    Open,
    /// Only holders of a link printed by `boa-exchange connect-url`.
    Invite,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address the HTTP API binds.
    pub listen: SocketAddr,
    /// The URL users reach the daemon at (links, cookies' `Secure` flag).
    pub public_url: Url,
    /// Key for the management endpoints; empty = those endpoints answer 401.
    pub admin_api_key: Secret,
    /// Who may connect a company.
    pub enrollment: Enrollment,
    /// Requests per minute per client address on limited endpoints.
    pub rate_limit_per_minute: u32,
    /// Reverse proxies whose `X-Forwarded-For` is believed (the client address is then the
    /// right-most forwarded address that is not itself one of them).
    pub trusted_proxies: Vec<Cidr>,
    /// Open HTTP connections at most; more wait in the accept queue. Lowered at start when
    /// the open-file limit cannot hold that many.
    pub max_connections: usize,
    /// A request's head and body must arrive within this many seconds, else the connection
    /// is closed (slow-loris and stuck clients hold no slot for long).
    pub request_timeout_secs: u64,
}

/// `[storage]`.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// The folder holding the sled database (and the identity by default).
    pub data_dir: PathBuf,
    /// The age x25519 identity that encrypts tokens.
    pub identity_file: PathBuf,
}

/// `[quickbooks]`.
#[derive(Debug, Clone)]
pub struct QuickbooksConfig {
    /// Intuit app client id.
    pub client_id: String,
    /// Intuit app client secret.
    pub client_secret: Secret,
    /// Registered OAuth redirect URI.
    pub redirect_uri: Url,
    /// Sandbox (development keys) or production.
    pub sandbox: bool,
    /// Intuit authorize endpoint.
    pub authorize_url: Url,
    /// Intuit token endpoint.
    pub token_url: Url,
    /// Intuit revoke endpoint.
    pub revoke_url: Url,
    /// Accounting API base (no trailing slash).
    pub api_base: Url,
    /// `minorversion` sent on every accounting call.
    pub minor_version: u32,
    /// Companies synced at once in a sync-all.
    pub max_concurrent_companies: usize,
    /// One company's rate writes sent concurrently (1-8; Intuit allows 10 per realm).
    pub writes_in_flight_per_company: usize,
    /// Per-request timeout for Intuit calls.
    pub timeout_secs: u64,
}

/// `[boa]`.
#[derive(Debug, Clone)]
pub struct BoaConfig {
    /// The official rate page.
    pub url: Url,
    /// Per-request timeout.
    pub timeout_secs: u64,
    /// Refuse a fixing whose rate moved more than this percentage from the previous one.
    pub max_jump_percent: Decimal,
}

/// `[schedule]`.
#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    /// Master switch for every automatic fetch and sync.
    pub enabled: bool,
    /// Local time of the daily run.
    pub time: NaiveTime,
    /// Zone of `time` and `give_up_at` and of calendar dates.
    pub timezone: Tz,
    /// Poll interval until the day's fixing appears.
    pub retry_every_minutes: u32,
    /// Local time after which a business day with no fixing counts as a holiday.
    pub give_up_at: NaiveTime,
}

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

fn read_secret_file(key: &str, file: &str, base: &Path) -> Result<Secret, Error> {
    let p = resolve(base, file);
    let s = std::fs::read_to_string(&p)
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", p.display())))?;
    Ok(Secret(s.trim_end_matches(['\n', '\r']).to_string()))
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() || base.as_os_str().is_empty() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Secret lookup order: env var, then `*_file` key, then `$CREDENTIALS_DIRECTORY/<cred>`,
/// then the inline key.
fn secret(
    env: &dyn Env,
    env_name: &str,
    file_key: &str,
    file: &str,
    cred: &str,
    inline: Secret,
    base: &Path,
) -> Result<Secret, Error> {
    if let Some(v) = env.var(env_name) {
        return Ok(Secret(v));
    }
    if !file.is_empty() {
        return read_secret_file(file_key, file, base);
    }
    if let Some(dir) = env.var("CREDENTIALS_DIRECTORY") {
        let p = Path::new(&dir).join(cred);
        if p.exists() {
            return read_secret_file(
                &format!("$CREDENTIALS_DIRECTORY/{cred}"),
                &p.to_string_lossy(),
                base,
            );
        }
    }
    Ok(inline)
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

/// `[server]`, with `API_HOST`, `API_PORT` and `ADMIN_API_KEY`.
fn validate_server(s: RawServer, env: &dyn Env, base: &Path) -> Result<ServerConfig, Error> {
    let mut listen: SocketAddr = s.listen.parse().map_err(|_| {
        invalid(
            "server.listen",
            format!(
                "{:?} is not an address (expected HOST:PORT, e.g. 127.0.0.1:8000)",
                s.listen
            ),
        )
    })?;
    if let Some(h) = env.var("API_HOST") {
        let ip: IpAddr = h
            .parse()
            .map_err(|_| invalid("API_HOST", format!("{h:?} is not an IP address")))?;
        listen.set_ip(ip);
    }
    if let Some(p) = env.var("API_PORT") {
        let port: u16 = p
            .parse()
            .map_err(|_| invalid("API_PORT", format!("{p:?} is not a port number")))?;
        listen.set_port(port);
    }
    let public_url = parse_url("server.public_url", &s.public_url)?;
    let admin_api_key = secret(
        env,
        "ADMIN_API_KEY",
        "server.admin_api_key_file",
        &s.admin_api_key_file,
        "admin_api_key",
        s.admin_api_key,
        base,
    )?;
    let enrollment = match s.enrollment.as_str() {
        "open" => Enrollment::Open,
        "invite" => Enrollment::Invite,
        other => {
            return Err(invalid(
                "server.enrollment",
                format!("{other:?} is not one of \"open\", \"invite\""),
            ))
        }
    };
    let rate_limit_per_minute = positive(
        "server.rate_limit_per_minute",
        s.rate_limit_per_minute,
        1_000_000,
    )? as u32;
    let trusted_proxies = s
        .trusted_proxies
        .iter()
        .map(|c| {
            c.parse::<Cidr>()
                .map_err(|e| invalid("server.trusted_proxies", e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ServerConfig {
        listen,
        public_url,
        admin_api_key,
        enrollment,
        rate_limit_per_minute,
        trusted_proxies,
        max_connections: positive("server.max_connections", s.max_connections, 65_536)? as usize,
        request_timeout_secs: positive("server.request_timeout_secs", s.request_timeout_secs, 3600)?
            as u64,
    })
}

/// `[storage]`, with `$STATE_DIRECTORY`.
fn validate_storage(s: RawStorage, env: &dyn Env, base: &Path) -> Result<StorageConfig, Error> {
    let data_dir = match env.var("STATE_DIRECTORY") {
        // systemd may pass several colon-separated directories; the first is ours.
        Some(d) => PathBuf::from(d.split(':').next().unwrap_or(&d)),
        None => {
            if s.data_dir.is_empty() {
                return Err(invalid("storage.data_dir", "must not be empty"));
            }
            resolve(base, &s.data_dir)
        }
    };
    let identity_file = if s.identity_file.is_empty() {
        data_dir.join("identity.txt")
    } else {
        resolve(base, &s.identity_file)
    };
    Ok(StorageConfig {
        data_dir,
        identity_file,
    })
}

/// `[control]`, with `$RUNTIME_DIRECTORY`; the default lives in the data folder.
fn validate_control(
    c: RawControl,
    env: &dyn Env,
    base: &Path,
    storage: &StorageConfig,
) -> Result<PathBuf, Error> {
    Ok(if !c.socket.is_empty() {
        resolve(base, &c.socket)
    } else if let Some(r) = env.var("RUNTIME_DIRECTORY") {
        PathBuf::from(r.split(':').next().unwrap_or(&r)).join("control.sock")
    } else {
        storage.data_dir.join("control.sock")
    })
}

/// `[quickbooks]`, with the `QB_*` variables; the redirect URI defaults under `public_url`.
fn validate_quickbooks(
    q: RawQuickbooks,
    env: &dyn Env,
    base: &Path,
    public_url: &Url,
) -> Result<QuickbooksConfig, Error> {
    let client_id = env.var("QB_CLIENT_ID").unwrap_or(q.client_id);
    let client_secret = secret(
        env,
        "QB_CLIENT_SECRET",
        "quickbooks.client_secret_file",
        &q.client_secret_file,
        "qb_client_secret",
        q.client_secret,
        base,
    )?;
    let sandbox = match env.var("QB_SANDBOX") {
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => return Err(invalid("QB_SANDBOX", format!("{v:?} is not true or false"))),
        },
        None => q.sandbox,
    };
    let redirect_raw = env.var("QB_REDIRECT_URI").unwrap_or(q.redirect_uri);
    let redirect_uri = if redirect_raw.is_empty() {
        public_url
            .join("api/v1/oauth/callback")
            .map_err(|e| invalid("quickbooks.redirect_uri", e.to_string()))?
    } else {
        parse_url("quickbooks.redirect_uri", &redirect_raw)?
    };
    let api_base_raw = if q.api_base.is_empty() {
        if sandbox {
            "https://sandbox-quickbooks.api.intuit.com".to_string()
        } else {
            "https://quickbooks.api.intuit.com".to_string()
        }
    } else {
        q.api_base
    };
    Ok(QuickbooksConfig {
        client_id,
        client_secret,
        redirect_uri,
        sandbox,
        authorize_url: parse_url("quickbooks.authorize_url", &q.authorize_url)?,
        token_url: parse_url("quickbooks.token_url", &q.token_url)?,
        revoke_url: parse_url("quickbooks.revoke_url", &q.revoke_url)?,
        api_base: parse_url("quickbooks.api_base", &api_base_raw)?,
        minor_version: positive("quickbooks.minor_version", q.minor_version, 1000)? as u32,
        max_concurrent_companies: positive(
            "quickbooks.max_concurrent_companies",
            q.max_concurrent_companies,
            1024,
        )? as usize,
        writes_in_flight_per_company: positive(
            "quickbooks.writes_in_flight_per_company",
            q.writes_in_flight_per_company,
            8,
        )? as usize,
        timeout_secs: positive("quickbooks.timeout_secs", q.timeout_secs, 3600)? as u64,
    })
}

/// `[boa]`.
fn validate_boa(b: RawBoa) -> Result<BoaConfig, Error> {
    let max_jump_percent = match &b.max_jump_percent {
        toml::Value::Integer(i) => Decimal::from(*i),
        toml::Value::Float(f) => Decimal::try_from(*f).unwrap_or(Decimal::ZERO),
        other => {
            return Err(invalid(
                "boa.max_jump_percent",
                format!("{other} is not a number"),
            ))
        }
    };
    if max_jump_percent <= Decimal::ZERO {
        return Err(invalid(
            "boa.max_jump_percent",
            format!("{max_jump_percent} must be greater than 0"),
        ));
    }
    Ok(BoaConfig {
        url: parse_url("boa.url", &b.url)?,
        timeout_secs: positive("boa.timeout_secs", b.timeout_secs, 3600)? as u64,
        max_jump_percent,
    })
}

/// `[schedule]`, with `SCHEDULE_TIME` and `TIMEZONE`.
fn validate_schedule(s: RawSchedule, env: &dyn Env) -> Result<ScheduleConfig, Error> {
    let time_raw = env.var("SCHEDULE_TIME").unwrap_or(s.time);
    let time_key = if env.var("SCHEDULE_TIME").is_some() {
        "SCHEDULE_TIME"
    } else {
        "schedule.time"
    };
    let time = parse_hhmm(time_key, &time_raw)?;
    let tz_raw = env.var("TIMEZONE").unwrap_or(s.timezone);
    let tz_key = if env.var("TIMEZONE").is_some() {
        "TIMEZONE"
    } else {
        "schedule.timezone"
    };
    let timezone: Tz = tz_raw.parse().map_err(|_| {
        invalid(
            tz_key,
            format!("{tz_raw:?} is not an IANA time zone (e.g. Europe/Tirane)"),
        )
    })?;
    let give_up_at = parse_hhmm("schedule.give_up_at", &s.give_up_at)?;
    if give_up_at <= time {
        return Err(invalid(
            "schedule.give_up_at",
            format!(
                "{:?} must be later than schedule.time ({})",
                s.give_up_at,
                time.format("%H:%M")
            ),
        ));
    }
    Ok(ScheduleConfig {
        enabled: s.enabled,
        time,
        timezone,
        retry_every_minutes: positive("schedule.retry_every_minutes", s.retry_every_minutes, 1440)?
            as u32,
        give_up_at,
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
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load(text: &str, e: &[(&str, &str)]) -> Result<Config, Error> {
        Config::from_toml(text, "test.toml", None, &env(e))
    }

    #[test]
    fn defaults_are_the_spec_defaults() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8000");
        assert_eq!(c.server.enrollment, Enrollment::Open);
        assert_eq!(c.server.rate_limit_per_minute, 10);
        assert_eq!(c.storage.data_dir, PathBuf::from("./data"));
        assert_eq!(
            c.storage.identity_file,
            PathBuf::from("./data/identity.txt")
        );
        assert_eq!(c.control_socket, PathBuf::from("./data/control.sock"));
        assert_eq!(
            c.quickbooks.redirect_uri.as_str(),
            "http://localhost:8000/api/v1/oauth/callback"
        );
        assert_eq!(
            c.quickbooks.api_base.as_str(),
            "https://sandbox-quickbooks.api.intuit.com/"
        );
        assert_eq!(c.quickbooks.minor_version, 75);
        assert_eq!(c.quickbooks.max_concurrent_companies, 16);
        assert_eq!(c.quickbooks.writes_in_flight_per_company, 4);
        assert!(c.server.trusted_proxies.is_empty());
        assert_eq!(c.server.max_connections, 512);
        assert_eq!(c.server.request_timeout_secs, 30);
        assert_eq!(c.schedule.time, NaiveTime::from_hms_opt(13, 0, 0).unwrap());
        assert_eq!(c.schedule.timezone, chrono_tz::Europe::Tirane);
        assert_eq!(c.boa.max_jump_percent, Decimal::from(20));
        assert!(c.alert_webhook.is_none());
    }

    #[test]
    fn example_file_is_valid_and_matches_defaults() {
        let text = include_str!("../config.example.toml");
        let c = load(text, &[]).unwrap();
        let d = load("", &[]).unwrap();
        assert_eq!(format!("{c:?}"), format!("{d:?}"));
    }

    #[test]
    fn env_wins_over_file() {
        let c = load(
            "[server]\nlisten = \"127.0.0.1:9000\"\n[schedule]\ntime = \"08:00\"\n",
            &[
                ("API_HOST", "0.0.0.0"),
                ("API_PORT", "8123"),
                ("SCHEDULE_TIME", "09:30"),
                ("TIMEZONE", "UTC"),
                ("QB_SANDBOX", "False"),
                ("QB_CLIENT_ID", "abc"),
                ("ADMIN_API_KEY", "k3y"),
            ],
        )
        .unwrap();
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:8123");
        assert_eq!(c.schedule.time, NaiveTime::from_hms_opt(9, 30, 0).unwrap());
        assert_eq!(c.schedule.timezone, chrono_tz::UTC);
        assert!(!c.quickbooks.sandbox);
        assert_eq!(
            c.quickbooks.api_base.as_str(),
            "https://quickbooks.api.intuit.com/"
        );
        assert_eq!(c.quickbooks.client_id, "abc");
        assert_eq!(c.server.admin_api_key.expose(), "k3y");
    }

    #[test]
    fn systemd_directories_are_honoured() {
        let c = load(
            "",
            &[
                ("STATE_DIRECTORY", "/var/lib/boa-exchange"),
                ("RUNTIME_DIRECTORY", "/run/boa-exchange"),
            ],
        )
        .unwrap();
        assert_eq!(c.storage.data_dir, PathBuf::from("/var/lib/boa-exchange"));
        assert_eq!(
            c.control_socket,
            PathBuf::from("/run/boa-exchange/control.sock")
        );
    }

    #[test]
    fn secrets_from_files_and_credentials() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("qb_client_secret"), "from-cred\n").unwrap();
        std::fs::write(dir.path().join("admin"), "from-file\n").unwrap();
        let text = format!(
            "[server]\nadmin_api_key_file = \"{}\"\n",
            dir.path().join("admin").display()
        );
        let c = load(
            &text,
            &[("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap())],
        )
        .unwrap();
        assert_eq!(c.server.admin_api_key.expose(), "from-file");
        assert_eq!(c.quickbooks.client_secret.expose(), "from-cred");
        let text = "[server]\nadmin_api_key_file = \"/nonexistent/x\"\n";
        let e = load(text, &[]).unwrap_err().to_string();
        assert!(
            e.starts_with("server.admin_api_key_file: cannot read"),
            "{e}"
        );
    }

    #[test]
    fn secret_debug_never_prints_it() {
        let c = load(
            "[server]\nadmin_api_key = \"supersecret\"\n[quickbooks]\nclient_secret = \"qbsecret\"\n",
            &[("SECRET_KEY", "hmackey")],
        )
        .unwrap();
        let dbg = format!("{c:?}");
        for s in ["supersecret", "qbsecret", "hmackey"] {
            assert!(!dbg.contains(s), "{s} leaked in {dbg}");
        }
    }

    #[test]
    fn invalid_values_name_the_key() {
        let cases: &[(&str, &str)] = &[
            (
                "[schedule]\ntime = \"25:99\"\n",
                "schedule.time: \"25:99\" is not a time (expected HH:MM)",
            ),
            (
                "[schedule]\ntimezone = \"Mars/Olympus\"\n",
                "schedule.timezone:",
            ),
            (
                "[schedule]\ngive_up_at = \"12:00\"\n",
                "schedule.give_up_at:",
            ),
            (
                "[schedule]\nretry_every_minutes = 0\n",
                "schedule.retry_every_minutes:",
            ),
            ("[server]\nlisten = \"nowhere\"\n", "server.listen:"),
            ("[server]\nenrollment = \"closed\"\n", "server.enrollment:"),
            (
                "[server]\npublic_url = \"not a url\"\n",
                "server.public_url:",
            ),
            (
                "[quickbooks]\nmax_concurrent_companies = 0\n",
                "quickbooks.max_concurrent_companies:",
            ),
            ("[boa]\nmax_jump_percent = -1\n", "boa.max_jump_percent:"),
            (
                "[quickbooks]\nwrites_in_flight_per_company = 9\n",
                "quickbooks.writes_in_flight_per_company: 9 is out of range (1..=8)",
            ),
            (
                "[quickbooks]\nwrites_in_flight_per_company = 0\n",
                "quickbooks.writes_in_flight_per_company:",
            ),
            (
                "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.1/33\"]\n",
                "server.trusted_proxies: \"10.0.0.1/33\": the prefix length",
            ),
            (
                "[server]\ntrusted_proxies = [\"proxy.local\"]\n",
                "server.trusted_proxies: \"proxy.local\" is not a CIDR",
            ),
            (
                "[server]\nmax_connections = 0\n",
                "server.max_connections: 0 is out of range (1..=65536)",
            ),
            (
                "[server]\nmax_connections = 65537\n",
                "server.max_connections:",
            ),
            (
                "[server]\nrequest_timeout_secs = 0\n",
                "server.request_timeout_secs:",
            ),
            ("[boa]\nurl = \"ftp://x\"\n", "boa.url:"),
            ("[log]\nlevel = \"[[[\"\n", "log.level:"),
            ("[alerts]\nwebhook_url = \"x\"\n", "alerts.webhook_url:"),
        ];
        for (text, want) in cases {
            let e = load(text, &[]).unwrap_err().to_string();
            assert!(
                e.starts_with(want),
                "{text:?}: got {e:?}, want prefix {want:?}"
            );
        }
        let e = load("", &[("SCHEDULE_TIME", "7pm")])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("SCHEDULE_TIME:"), "{e}");
    }

    #[test]
    fn trusted_proxies_parse_v4_and_v6() {
        let c = load(
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"2001:db8::/32\", \"127.0.0.2\"]\nmax_connections = 2048\nrequest_timeout_secs = 5\n",
            &[],
        )
        .unwrap();
        let shown: Vec<String> = c
            .server
            .trusted_proxies
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(shown, ["10.0.0.0/8", "2001:db8::/32", "127.0.0.2/32"]);
        assert_eq!(c.server.max_connections, 2048);
        assert_eq!(c.server.request_timeout_secs, 5);
    }

    #[test]
    fn unknown_keys_and_types_are_rejected() {
        let e = load("[server]\nlistn = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("listn"), "{e}");
        let e = load("[nope]\n", &[]).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
        let e = load("[schedule]\nenabled = \"yes\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("enabled") || e.contains("bool"), "{e}");
    }

    #[test]
    fn fixture_configs() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config");
        for (sub, ok) in [("valid", true), ("invalid", false)] {
            let mut n = 0;
            for entry in std::fs::read_dir(root.join(sub)).unwrap() {
                let p = entry.unwrap().path();
                if p.extension().and_then(|e| e.to_str()) != Some("toml") {
                    continue;
                }
                n += 1;
                let r = Config::load_with_env(Some(&p), &env(&[]));
                assert_eq!(r.is_ok(), ok, "{}: {r:?}", p.display());
            }
            assert!(n > 0, "no fixtures in {sub}");
        }
    }
}
