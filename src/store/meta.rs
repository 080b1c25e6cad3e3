//! The meta tree: small named settings and secrets (the latter sealed by the vault).

use super::*;

impl SledStore {
    /// A daemon-wide value from the meta tree.
    ///
    /// # Errors
    /// sled or decode failure.
    pub fn meta_get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        Self::get(&self.meta, keys::META, key.as_bytes())
    }

    /// Sets a daemon-wide value (not flushed).
    ///
    /// # Errors
    /// sled or encode failure.
    pub fn meta_put<T: Serialize>(&self, key: &str, v: &T) -> Result<()> {
        self.put(TreeId::Meta, key.as_bytes(), v)
    }

    /// A secret kept in meta, encrypted with the vault (e.g. the generated `SECRET_KEY`).
    ///
    /// # Errors
    /// sled, decode or decrypt failure.
    pub fn meta_secret(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self.meta.get(key.as_bytes())? {
            Some(ct) => Ok(Some(self.vault.decrypt(&ct)?)),
            None => Ok(None),
        }
    }

    /// Stores a secret in meta, encrypted, and flushes.
    ///
    /// # Errors
    /// sled or encrypt failure.
    pub async fn put_meta_secret(&self, key: &str, plaintext: &[u8]) -> Result<()> {
        let ct = self.vault.encrypt(plaintext)?;
        self.writer().insert(TreeId::Meta, key.as_bytes(), ct)?;
        self.flush().await
    }
}
