//! The PostgreSQL store (SPEC §13): the same records and rules as the sled store, in a
//! database that several daemons may share.
//!
//! [`PgStore`] mirrors the public operations of [`crate::store::Store`] (same names,
//! arguments and answers, but `async`); every write is one transaction, committed before the
//! method returns, so an answer is an acknowledgement. Records are kept as the JSON the backup
//! carries (see `migrations/0001_initial.sql`), tokens only as the vault's age ciphertext.
//! The schema is the daemon's own and versioned ([`schema`]); the identity recorded in the
//! database is checked before anything is migrated or written.
//!
//! Two versions, kept apart: [`PG_SCHEMA_VERSION`] is this backend's table layout
//! (`schema_migrations`); the records inside are the sled store's, at
//! [`crate::store::SCHEMA_VERSION`] (what a backup header names). A change of a record there
//! needs a migration here too (a `jsonb` rewrite in a new `migrations/000N_….sql`).
//!
//! Failures keep two families apart: [`Error::Unavailable`] (the server is gone, restarting,
//! or the pool timed out: retry later, answer 503) and everything else (a data problem).
//! Nothing here knows about HTTP.
//!
//! Layout: `schema` (migrations, identity), `companies` (companies, tokens, the counts, the
//! cross-node token lock), `data` (rates, logs, fixings, scrapes, pending, meta), `backup`
//! (backup and restore in the backup format of [`crate::store::backup`]), `leader`
//! (leadership by advisory lock).

mod backup;
mod companies;
mod data;
mod leader;
mod schema;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::config::SslMode;
use tokio_postgres::NoTls;

use crate::crypto::{self, Vault};

pub use leader::{Exclusive, Leader, Leadership};
pub use schema::PG_SCHEMA_VERSION;

/// Statements through the connection's own statement cache: one round trip each. A query
/// given as text is prepared first (a round trip of its own, every time), which doubled the
/// latency of every read, `/health`'s among them, when the server is busy. A statement is
/// prepared once per pooled connection and kept with it (a connection replaced after a
/// server restart prepares again).
pub(crate) trait Cached: deadpool_postgres::GenericClient {
    /// [`deadpool_postgres::GenericClient::query`] through the cache.
    fn query_cached(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> impl std::future::Future<
        Output = std::result::Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>,
    > + Send {
        async move {
            let st = self.prepare_cached(sql).await?;
            self.query(&st, params).await
        }
    }

    /// [`deadpool_postgres::GenericClient::query_one`] through the cache.
    fn query_one_cached(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> impl std::future::Future<
        Output = std::result::Result<tokio_postgres::Row, tokio_postgres::Error>,
    > + Send {
        async move {
            let st = self.prepare_cached(sql).await?;
            self.query_one(&st, params).await
        }
    }

    /// [`deadpool_postgres::GenericClient::query_opt`] through the cache.
    fn query_opt_cached(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> impl std::future::Future<
        Output = std::result::Result<Option<tokio_postgres::Row>, tokio_postgres::Error>,
    > + Send {
        async move {
            let st = self.prepare_cached(sql).await?;
            self.query_opt(&st, params).await
        }
    }

    /// [`deadpool_postgres::GenericClient::execute`] through the cache.
    fn execute_cached(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> impl std::future::Future<Output = std::result::Result<u64, tokio_postgres::Error>> + Send
    {
        async move {
            let st = self.prepare_cached(sql).await?;
            self.execute(&st, params).await
        }
    }
}

impl<C: deadpool_postgres::GenericClient> Cached for C {}

/// PostgreSQL store failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server cannot be reached right now (gone, restarting, refusing connections, the
    /// pool timed out): nothing was done or committed; retry later.
    #[error("postgres unavailable: {0}")]
    Unavailable(String),
    /// The server answered with an error about the data or the statement.
    #[error("postgres: {0}")]
    Db(String),
    /// `postgres_url` does not parse.
    #[error("postgres_url: {0}")]
    Url(String),
    /// TLS could not be set up (no system roots).
    #[error("postgres tls: {0}")]
    Tls(String),
    /// The database was migrated by a newer boa-exchange.
    #[error("the database has schema version {found}, newer than this boa-exchange supports ({supported}); upgrade boa-exchange")]
    NewerSchema {
        /// Version found in `schema_migrations`.
        found: i32,
        /// The newest version this build knows.
        supported: i32,
    },
    /// The database's tokens were encrypted to another identity.
    #[error("the database's tokens are encrypted to {expected}, but the identity in use is {found}; use the identity file the other nodes use")]
    IdentityMismatch {
        /// Recipient recorded in the database.
        expected: String,
        /// Recipient of the identity given.
        found: String,
    },
    /// The database records an identity but the identity file is missing.
    #[error("the database holds tokens encrypted to {expected} but the identity file {path} is missing; copy it from another node or your backup")]
    MissingIdentity {
        /// The file.
        path: std::path::PathBuf,
        /// Recipient recorded in the database.
        expected: String,
    },
    /// A stored record does not decode (or a record does not encode).
    #[error("postgres record in {table} ({key}): {message}")]
    Record {
        /// The table.
        table: &'static str,
        /// Its key.
        key: String,
        /// Why.
        message: String,
    },
    /// Vault failure.
    #[error(transparent)]
    Crypto(#[from] crypto::Error),
    /// A restore was asked for into a database that holds data.
    #[error("the database is not empty ({entries} entries): restore only into an empty database")]
    NotEmpty {
        /// Entries found.
        entries: u64,
    },
    /// The backup's reader went away before the end.
    #[error("the backup was cut short: its reader went away")]
    BackupAborted,
    /// A backup line could not be written, or a restored record converted.
    #[error("backup: {0}")]
    Backup(String),
}

impl Error {
    /// True for connection-level failures (see [`Error::Unavailable`]).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }

    fn record(table: &'static str, key: impl Into<String>) -> impl FnOnce(String) -> Error {
        let key = key.into();
        move |message| Error::Record {
            table,
            key,
            message,
        }
    }
}

/// SQLSTATE classes and codes that mean "the server is not there", not "your data is wrong".
fn unavailable_state(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code == "57P01" // admin_shutdown
        || code == "57P02" // crash_shutdown
        || code == "57P03" // cannot_connect_now (starting up, shutting down)
        || code == "53300" // too_many_connections
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Error {
        if let Some(code) = e.code() {
            return if unavailable_state(code.code()) {
                Error::Unavailable(e.to_string())
            } else {
                Error::Db(
                    e.as_db_error()
                        .map_or_else(|| e.to_string(), |d| d.to_string()),
                )
            };
        }
        // No SQLSTATE: the connection closed, an I/O error, a connect failure or timeout
        // (all connection-level), or a value that did not convert (data).
        let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
        let text = e.to_string();
        if e.is_closed() || io || text.starts_with("error connecting") || text.contains("timeout") {
            Error::Unavailable(text)
        } else {
            Error::Db(text)
        }
    }
}

impl From<PoolError> for Error {
    fn from(e: PoolError) -> Error {
        match e {
            PoolError::Backend(e) => e.into(),
            other => Error::Unavailable(format!("connection pool: {other}")),
        }
    }
}

/// PostgreSQL store result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How long a caller waits for a pooled connection (or a new one) before
/// [`Error::Unavailable`]: short, so that a database that went away answers 503 at once.
const POOL_WAIT: Duration = Duration::from_secs(5);
/// Connections in the pool at open, and at least after [`PgStore::size_pool_for`]: a
/// sync-all runs 16 companies at a time by default, plus the API.
const POOL_SIZE: usize = 24;
/// Connections beyond the companies a sync-all runs at once: the API, the control socket,
/// the scheduler (the company counts have a connection of their own: `CountsLane`).
const POOL_SPARE: usize = 8;

/// The pool's size for a daemon that syncs `companies_in_flight` companies at once: one
/// connection each (a token refresh holds its company's for the length of the call to
/// Intuit), [`POOL_SPARE`] more, never below [`POOL_SIZE`].
pub fn pool_size_for(companies_in_flight: usize) -> usize {
    companies_in_flight
        .saturating_add(POOL_SPARE)
        .max(POOL_SIZE)
}

/// How a connection is made: the parsed settings and the TLS choice. Kept so that
/// [`Leadership`] opens its own session, outside the pool, the same way.
#[derive(Clone)]
pub(crate) struct Connector {
    config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl Connector {
    /// Parses `postgresql://user@host:port/db?sslmode=…`. `sslmode` `require`, `verify-ca`
    /// and `verify-full` use rustls with the system roots (the certificate is always checked:
    /// stricter than libpq's `require`); `disable`, `allow`, `prefer` or none connect
    /// without TLS (a loopback or socket database).
    ///
    /// # Errors
    /// [`Error::Url`], [`Error::Tls`].
    pub(crate) fn parse(postgres_url: &str) -> Result<Connector> {
        let mut url =
            url::Url::parse(postgres_url).map_err(|e| Error::Url(format!("not a URL: {e}")))?;
        if url.scheme() != "postgresql" && url.scheme() != "postgres" {
            return Err(Error::Url(format!(
                "scheme {:?}: expected postgresql://",
                url.scheme()
            )));
        }
        let mut mode = None;
        let rest: Vec<(String, String)> = url
            .query_pairs()
            .filter_map(|(k, v)| {
                if k == "sslmode" {
                    mode = Some(v.into_owned());
                    None
                } else {
                    Some((k.into_owned(), v.into_owned()))
                }
            })
            .collect();
        if rest.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(rest);
        }
        let tls = match mode.as_deref() {
            None | Some("disable" | "allow" | "prefer") => false,
            Some("require" | "verify-ca" | "verify-full") => true,
            Some(other) => {
                return Err(Error::Url(format!(
                    "sslmode {other:?}: expected disable, prefer, require, verify-ca or verify-full"
                )))
            }
        };
        let mut config: tokio_postgres::Config = url
            .as_str()
            .parse()
            .map_err(|e: tokio_postgres::Error| Error::Url(e.to_string()))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(POOL_WAIT);
        }
        config.application_name("boa-exchange");
        // A server that went silent (host down, network cut) fails the connection within
        // ~15 s instead of the kernel's ~15 min retransmission: nothing waits on it for long
        // (the watchdog is 60 s) and the pool reconnects.
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(15));
        let tls = if tls {
            config.ssl_mode(SslMode::Require);
            Some(rustls_connect()?)
        } else {
            config.ssl_mode(SslMode::Disable);
            None
        };
        Ok(Connector { config, tls })
    }

    fn manager(&self) -> Manager {
        let mc = ManagerConfig {
            // A connection the server closed (restart, terminate) is seen as closed and
            // dropped at checkout without a round trip.
            recycling_method: RecyclingMethod::Fast,
        };
        match &self.tls {
            Some(tls) => Manager::from_config(self.config.clone(), tls.clone(), mc),
            None => Manager::from_config(self.config.clone(), NoTls, mc),
        }
    }

    /// One session of its own, outside the pool; its connection task is spawned and its
    /// handle returned, so the caller learns when the session ends.
    pub(crate) async fn connect(
        &self,
    ) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>)> {
        match &self.tls {
            Some(tls) => {
                let (client, conn) = self.config.connect(tls.clone()).await?;
                Ok((client, tokio::spawn(drive(conn))))
            }
            None => {
                let (client, conn) = self.config.connect(NoTls).await?;
                Ok((client, tokio::spawn(drive(conn))))
            }
        }
    }
}

async fn drive<S, T>(conn: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "postgres session ended");
    }
}

/// rustls with the system roots and the crypto provider reqwest uses here (ring).
fn rustls_connect() -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        // A system certificate rustls cannot parse is skipped, as reqwest does.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(Error::Tls(format!(
            "no usable system root certificates ({} errors; is ca-certificates installed?)",
            found.errors.len()
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Undecodable records by (table, key): why each did not decode.
type BadMap = std::collections::BTreeMap<(&'static str, Vec<u8>), String>;

/// The daemon's PostgreSQL database.
pub struct PgStore {
    pool: Pool,
    /// The company counts' own thread and connection ([`companies::CountsLane`]).
    lane: companies::CountsLane,
    connector: Connector,
    vault: Vault,
    /// Where it is, without the password (for logs and answers).
    display: String,
    /// Undecodable records found by the last scan of each table, by (table, key): what
    /// status, metrics and health report, and what keeps a record from being logged at every
    /// scan (as the sled store's field of the same name).
    bad: std::sync::Mutex<BadMap>,
    /// Distinct undecodable records met since open (a monotonic counter for metrics).
    bad_seen: std::sync::atomic::AtomicU64,
    /// Bumped after every company write made through this store has committed (see
    /// [`PgStore::companies_generation`]).
    companies_generation: std::sync::atomic::AtomicU64,
    /// Bumped after every write of a fixing table, a scrape record or a meta value made
    /// through the [`crate::store::Store`] (see [`crate::store::Store::facts_generation`]).
    pub(crate) facts_generation: std::sync::atomic::AtomicU64,
    /// Relaxed commits made (see [`PgStore::relaxed`]), and how many of them the last
    /// [`PgStore::flush`] covered: a flush with nothing new to cover sends nothing.
    relaxed_commits: std::sync::atomic::AtomicU64,
    flushed_commits: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgStore({})", self.display)
    }
}

/// `postgres_url` without its password: the one in the authority and a `password=` query
/// parameter (libpq and tokio-postgres accept both) are shown as `***`.
pub fn without_password(postgres_url: &str) -> String {
    match url::Url::parse(postgres_url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            if u.query_pairs().any(|(k, _)| k == "password") {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if k == "password" {
                            "***".into()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) => "<postgres_url>".into(),
    }
}

impl PgStore {
    /// Connects, checks the identity recorded in the database against `vault` (recording it
    /// in a new database), then applies the migrations this build has and the database
    /// lacks, all in one transaction under an advisory lock (so two nodes starting at once
    /// migrate once).
    ///
    /// # Errors
    /// [`Error::Url`], [`Error::Unavailable`], [`Error::IdentityMismatch`] (nothing
    /// migrated), [`Error::NewerSchema`], [`Error::Db`].
    pub async fn open(postgres_url: &str, vault: Vault) -> Result<PgStore> {
        let connector = Connector::parse(postgres_url)?;
        let pool = Pool::builder(connector.manager())
            .max_size(POOL_SIZE)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .recycle_timeout(Some(POOL_WAIT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| Error::Unavailable(format!("connection pool: {e}")))?;
        let lane = companies::CountsLane::start(connector.manager(), POOL_WAIT)?;
        let store = PgStore {
            pool,
            lane,
            connector,
            vault,
            display: without_password(postgres_url),
            bad: std::sync::Mutex::new(BadMap::new()),
            bad_seen: std::sync::atomic::AtomicU64::new(0),
            companies_generation: std::sync::atomic::AtomicU64::new(0),
            facts_generation: std::sync::atomic::AtomicU64::new(0),
            relaxed_commits: std::sync::atomic::AtomicU64::new(0),
            flushed_commits: std::sync::atomic::AtomicU64::new(0),
        };
        {
            let mut client = store.client().await?;
            schema::prepare(&mut client, &store.vault.recipient()).await?;
        }
        Ok(store)
    }

    /// [`PgStore::open`] with the identity at `identity_file`, as the sled store opens it:
    /// loaded when it exists; created when it does not and the database records none.
    ///
    /// # Errors
    /// As [`PgStore::open`]; [`Error::MissingIdentity`] when the file is missing while the
    /// database records an identity.
    pub async fn open_with_identity_file(
        postgres_url: &str,
        identity_file: &std::path::Path,
    ) -> Result<PgStore> {
        let vault = if identity_file.exists() {
            Vault::load(identity_file)?
        } else {
            let connector = Connector::parse(postgres_url)?;
            let (client, _task) = connector.connect().await?;
            if let Some(expected) = schema::recorded_recipient(&client).await? {
                return Err(Error::MissingIdentity {
                    path: identity_file.to_path_buf(),
                    expected,
                });
            }
            Vault::create(identity_file)?
        };
        PgStore::open(postgres_url, vault).await
    }

    /// Sizes the pool for `companies_in_flight` companies synced at once
    /// ([`pool_size_for`]): without it, a sync-all of more companies than the pool has
    /// connections makes them wait for one (and, past the pool's 5 s wait, fail as
    /// unavailable while their token refreshes hold connections across slow calls to
    /// Intuit). Connections are opened as needed, never ahead; a smaller size closes the
    /// idle excess.
    pub fn size_pool_for(&self, companies_in_flight: usize) {
        let size = pool_size_for(companies_in_flight);
        if self.pool.status().max_size != size {
            self.pool.resize(size);
        }
    }

    /// The pool's size now.
    pub fn pool_size(&self) -> usize {
        self.pool.status().max_size
    }

    /// A pooled connection.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }

    /// How [`Leadership`] connects.
    pub(crate) fn connector(&self) -> &Connector {
        &self.connector
    }

    /// The record schema this build writes (the sled store's, so that backups are the same).
    pub fn schema_version(&self) -> u32 {
        crate::store::SCHEMA_VERSION
    }

    /// The database, without the password (the URL with `***` for it; see
    /// [`without_password`]): safe for logs and answers.
    pub fn path(&self) -> &str {
        &self.display
    }

    /// The size of the database on the server (`pg_database_size`), in bytes; 0 when it
    /// cannot be read (the server is away), as the sled store answers 0 when it cannot tell.
    pub async fn size_on_disk(&self) -> u64 {
        let Ok(c) = self.client().await else {
            return 0;
        };
        match c
            .query_one("SELECT pg_database_size(current_database())", &[])
            .await
        {
            Ok(row) => row
                .try_get::<_, i64>(0)
                .map_or(0, |n| u64::try_from(n).unwrap_or(0)),
            Err(_) => 0,
        }
    }

    /// The identity's public key the tokens are encrypted to.
    pub fn recipient(&self) -> String {
        self.vault.recipient()
    }

    /// Begins a transaction that commits without waiting for its WAL to reach the disk
    /// (`SET LOCAL synchronous_commit = off`); commit it with [`PgStore::commit_relaxed`].
    /// For the writes the sled store leaves unflushed (a company's rates, its
    /// `last_sync_at`, log records), which their callers make durable with
    /// [`PgStore::flush`] before anything is acknowledged. Visible to every node at once on
    /// commit, like any commit; only a crash of the database server (not of the daemon)
    /// within about three `wal_writer_delay`s can lose one not yet flushed, as a crash of
    /// the machine loses sled's unflushed writes. Its row locks are held until the commit,
    /// not until an fsync: the count and bucket rows the companies trigger updates are free
    /// again sooner.
    pub(crate) async fn relaxed_tx(
        client: &mut deadpool_postgres::Object,
    ) -> Result<deadpool_postgres::Transaction<'_>> {
        let tx = client.transaction().await?;
        tx.batch_execute("SET LOCAL synchronous_commit = off")
            .await?;
        Ok(tx)
    }

    /// Commits a [`PgStore::relaxed_tx`] transaction, counted for [`PgStore::flush`].
    pub(crate) async fn commit_relaxed(
        &self,
        tx: deadpool_postgres::Transaction<'_>,
    ) -> Result<()> {
        tx.commit().await?;
        self.relaxed_commits.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Makes every write committed through this store so far durable: the relaxed ones
    /// ([`PgStore::relaxed_tx`]) included. One synchronous commit of a transaction that
    /// writes WAL (its session's row of `flush_marks`): the server flushes the WAL up to its
    /// commit record before answering, and with it every relaxed commit that returned before
    /// this call. Sends nothing when no relaxed commit was made since the last flush (the
    /// other writes waited for their own flush at commit).
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Db`] (then nothing is known to be durable beyond the
    /// synchronous commits).
    pub async fn flush(&self) -> Result<()> {
        let made = self.relaxed_commits.load(Ordering::SeqCst);
        if made == self.flushed_commits.load(Ordering::SeqCst) {
            return Ok(());
        }
        let c = self.client().await?;
        // A transaction that writes no WAL commits without waiting for the disk, whatever
        // synchronous_commit says; this one writes a row (the session's own: no waiting for
        // another flush), committed as the server's synchronous_commit says (`on` unless its
        // operator chose otherwise).
        let st = c
            .prepare_cached(
                "INSERT INTO flush_marks (pid, n) VALUES (pg_backend_pid(), 1)
                 ON CONFLICT (pid) DO UPDATE SET n = flush_marks.n + 1",
            )
            .await?;
        c.execute(&st, &[]).await?;
        self.flushed_commits.fetch_max(made, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_holds_a_connection_per_company_in_flight_and_spares() {
        assert_eq!(pool_size_for(1), POOL_SIZE);
        assert_eq!(pool_size_for(16), POOL_SIZE);
        assert_eq!(pool_size_for(64), 72);
        assert_eq!(pool_size_for(1024), 1032);
        assert_eq!(pool_size_for(usize::MAX), usize::MAX);
    }

    #[test]
    fn sslmode_picks_tls_and_is_removed_from_the_url() {
        let c = Connector::parse("postgresql://boa@127.0.0.1:5433/boa?sslmode=disable").unwrap();
        assert!(c.tls.is_none());
        assert_eq!(c.config.get_ports(), &[5433]);
        assert_eq!(c.config.get_dbname(), Some("boa"));
        let c = Connector::parse("postgresql://boa@db.example/boa").unwrap();
        assert!(c.tls.is_none());
        match Connector::parse(
            "postgresql://boa@db.example/boa?sslmode=verify-full&connect_timeout=3",
        ) {
            Ok(c) => {
                assert!(c.tls.is_some());
                assert_eq!(c.config.get_ssl_mode(), SslMode::Require);
                assert_eq!(
                    c.config.get_connect_timeout(),
                    Some(&Duration::from_secs(3))
                );
            }
            // A machine without ca-certificates: the refusal names the reason.
            Err(Error::Tls(m)) => assert!(m.contains("ca-certificates"), "{m}"),
            Err(other) => panic!("{other}"),
        }
    }

    #[test]
    fn bad_urls_are_refused() {
        assert!(matches!(
            Connector::parse("mysql://x@y/z"),
            Err(Error::Url(_))
        ));
        assert!(matches!(
            Connector::parse("postgresql://x@y/z?sslmode=sometimes"),
            Err(Error::Url(_))
        ));
        assert!(matches!(Connector::parse("not a url"), Err(Error::Url(_))));
    }

    #[test]
    fn the_password_is_not_shown() {
        let shown = without_password("postgresql://boa:hunter2@db/boa");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(shown, "postgresql://boa:***@db/boa");
        // As a query parameter too, the others kept.
        let shown =
            without_password("postgresql://boa@db/boa?sslmode=require&password=hunter2&x=1");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("sslmode=require") && shown.contains("x=1"),
            "{shown}"
        );
        assert_eq!(without_password("not a url"), "<postgres_url>");
        assert_eq!(
            without_password("postgresql://boa@db/boa"),
            "postgresql://boa@db/boa"
        );
    }

    #[test]
    fn connection_states_are_unavailable() {
        for c in ["08006", "08001", "57P01", "57P03", "53300"] {
            assert!(unavailable_state(c), "{c}");
        }
        for c in ["23505", "42P01", "40001", "22P02"] {
            assert!(!unavailable_state(c), "{c}");
        }
    }
}
