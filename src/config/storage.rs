//! `[storage]` and `[control]`: the data folder, identity, backend and PostgreSQL URL, and
//! the control socket, with `$STATE_DIRECTORY`, `$RUNTIME_DIRECTORY` and `DATABASE_URL`.

use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawStorage {
    pub(super) backend: String,
    pub(super) data_dir: String,
    pub(super) identity_file: String,
    pub(super) postgres_url: Secret,
    pub(super) postgres_url_file: String,
    pub(super) leader_lease_secs: u64,
}

impl Default for RawStorage {
    fn default() -> Self {
        RawStorage {
            backend: "sled".into(),
            data_dir: "./data".into(),
            identity_file: String::new(),
            postgres_url: Secret::default(),
            postgres_url_file: String::new(),
            leader_lease_secs: 15,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawControl {
    pub(super) socket: String,
}

/// Where the store lives (`storage.backend`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The embedded sled database under `data_dir` (the default).
    Sled,
    /// A PostgreSQL database (SPEC §13); the URL may hold a password, so it is a secret.
    Postgres {
        /// `postgres_url`, `DATABASE_URL`, `postgres_url_file` or the `database_url` credential.
        url: Secret,
    },
}

/// `[storage]`.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// sled or PostgreSQL.
    pub backend: Backend,
    /// The folder holding the sled database (and the identity by default).
    pub data_dir: PathBuf,
    /// The age x25519 identity that encrypts tokens.
    pub identity_file: PathBuf,
    /// PostgreSQL: a standby takes over at most this long after the leader is gone.
    pub leader_lease: std::time::Duration,
}

/// `[storage]`, with `$STATE_DIRECTORY`.
pub(super) fn validate_storage(
    s: RawStorage,
    env: &dyn Env,
    base: &Path,
) -> Result<StorageConfig, Error> {
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
    let backend = match s.backend.as_str() {
        "sled" => Backend::Sled,
        "postgres" => {
            let url = secret(
                env,
                "DATABASE_URL",
                "storage.postgres_url_file",
                &s.postgres_url_file,
                "database_url",
                s.postgres_url,
                base,
            )?;
            if url.is_empty() {
                return Err(invalid(
                    "storage.postgres_url",
                    "must be set when storage.backend is \"postgres\" (or DATABASE_URL, postgres_url_file, the database_url credential)",
                ));
            }
            if !(url.expose().starts_with("postgresql://")
                || url.expose().starts_with("postgres://"))
            {
                return Err(invalid(
                    "storage.postgres_url",
                    "is not a PostgreSQL URL (expected postgresql://user@host/db)",
                ));
            }
            Backend::Postgres { url }
        }
        other => {
            return Err(invalid(
                "storage.backend",
                format!("{other:?} is not a backend (expected \"sled\" or \"postgres\")"),
            ))
        }
    };
    if !(1..=3600).contains(&s.leader_lease_secs) {
        return Err(invalid(
            "storage.leader_lease_secs",
            format!("{} is out of range (1-3600)", s.leader_lease_secs),
        ));
    }
    Ok(StorageConfig {
        backend,
        data_dir,
        identity_file,
        leader_lease: std::time::Duration::from_secs(s.leader_lease_secs),
    })
}

/// `[control]`, with `$RUNTIME_DIRECTORY`; the default lives in the data folder.
pub(super) fn validate_control(
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
