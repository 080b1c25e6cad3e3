//! `[storage]` and `[control]`: the data folder, identity, backend and PostgreSQL URL, and
//! the control socket, with `$STATE_DIRECTORY`, `$RUNTIME_DIRECTORY` and `DATABASE_URL`.

use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawStorage {
    pub(super) data_dir: String,
    pub(super) identity_file: String,
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
pub(super) struct RawControl {
    pub(super) socket: String,
}

/// `[storage]`.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// The folder holding the sled database (and the identity by default).
    pub data_dir: PathBuf,
    /// The age x25519 identity that encrypts tokens.
    pub identity_file: PathBuf,
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
    Ok(StorageConfig {
        data_dir,
        identity_file,
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
