//! The token vault: an `age` x25519 identity that encrypts every secret the store keeps.
//!
//! Owns the identity file (created 0600 on first start) and encrypt/decrypt. It never
//! decides *whether* a missing identity is acceptable — the store does, knowing whether
//! encrypted data exists.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::secrecy::ExposeSecret;

/// Vault failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The identity file could not be read or written.
    #[error("identity file {path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The file holds no usable x25519 identity.
    #[error("identity file {0}: no valid AGE-SECRET-KEY line")]
    Malformed(PathBuf),
    /// Encryption failed (should not happen with a valid recipient).
    #[error("encrypting: {0}")]
    Encrypt(String),
    /// The ciphertext is not for this identity, or is damaged.
    #[error("decrypting: {0}")]
    Decrypt(String),
}

/// An age x25519 identity used to encrypt and decrypt secrets at rest.
pub struct Vault {
    identity: age::x25519::Identity,
    recipient: age::x25519::Recipient,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Vault({})", self.recipient)
    }
}

impl Vault {
    /// A fresh in-memory identity (tests and temporary stores).
    pub fn generate() -> Self {
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public();
        Vault {
            identity,
            recipient,
        }
    }

    /// Reads the identity at `path`.
    ///
    /// # Errors
    /// Unreadable or malformed file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .ok_or_else(|| Error::Malformed(path.to_path_buf()))?;
        let identity = age::x25519::Identity::from_str(line)
            .map_err(|_| Error::Malformed(path.to_path_buf()))?;
        let recipient = identity.to_public();
        Ok(Vault {
            identity,
            recipient,
        })
    }

    /// Creates a new identity and writes it to `path` with mode 0600 (never overwriting).
    ///
    /// # Errors
    /// The file exists or cannot be written.
    pub fn create(path: &Path) -> Result<Self, Error> {
        let io = |e: std::io::Error| Error::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let vault = Vault::generate();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let body = format!(
            "# boa-exchange token vault identity (age x25519). Back it up with the data;\n\
             # without it the stored QuickBooks tokens cannot be decrypted.\n\
             # public key: {}\n{}\n",
            vault.recipient,
            vault.identity.to_string().expose_secret()
        );
        f.write_all(body.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        Ok(vault)
    }

    /// The public key (safe to store and print): identifies which identity encrypted data.
    pub fn recipient(&self) -> String {
        self.recipient.to_string()
    }

    /// Encrypts `plaintext` to this identity.
    ///
    /// # Errors
    /// [`Error::Encrypt`] (not expected in practice).
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        age::encrypt(&self.recipient, plaintext).map_err(|e| Error::Encrypt(e.to_string()))
    }

    /// Decrypts data encrypted to this identity.
    ///
    /// # Errors
    /// [`Error::Decrypt`] when the data is for another identity or damaged.
    pub fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>, Error> {
        age::decrypt(&self.identity, ciphertext).map_err(|e| Error::Decrypt(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trip_and_file_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("identity.txt");
        let v = Vault::create(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let ct = v.encrypt(b"refresh-token-123").unwrap();
        assert!(!ct.windows(17).any(|w| w == b"refresh-token-123"));
        let v2 = Vault::load(&p).unwrap();
        assert_eq!(v2.recipient(), v.recipient());
        assert_eq!(v2.decrypt(&ct).unwrap(), b"refresh-token-123");
        assert!(Vault::create(&p).is_err(), "never overwrites an identity");
    }

    #[test]
    fn wrong_identity_cannot_decrypt() {
        let a = Vault::generate();
        let b = Vault::generate();
        let ct = a.encrypt(b"x").unwrap();
        assert!(matches!(b.decrypt(&ct), Err(Error::Decrypt(_))));
    }

    #[test]
    fn malformed_identity_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("id");
        std::fs::write(&p, "hello\n").unwrap();
        assert!(matches!(Vault::load(&p), Err(Error::Malformed(_))));
    }
}
