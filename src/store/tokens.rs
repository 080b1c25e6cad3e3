//! A company's OAuth tokens: sealed by the vault before they reach sled, opened on read.

use super::*;

impl SledStore {
    /// Writes a company's tokens, then its record, then flushes. sled persists writes in log
    /// order, so a crash leaves none, the tokens alone (a rotated refresh token is never
    /// lost; an unconnected company's orphan ciphertext is never read), or both. Not a sled
    /// transaction: see the module docs.
    ///
    /// # Errors
    /// sled, encode or encrypt failure.
    pub async fn save_company_and_tokens(&self, c: &Company, t: &TokenSet) -> Result<()> {
        let company = codec::encode(c).map_err(Error::codec(keys::COMPANIES))?;
        let tokens = self.seal(t)?;
        let key = c.realm_id.as_bytes();
        {
            let w = self.writer();
            w.insert(TreeId::Tokens, key, tokens)?;
            self.write_company(&w, key, Some(c), |w| {
                w.insert(TreeId::Companies, key, company)
            })?;
        }
        self.flush().await
    }

    pub(super) fn seal(&self, t: &TokenSet) -> Result<Vec<u8>> {
        let plain = codec::encode(t).map_err(Error::codec(keys::TOKENS))?;
        Ok(self.vault.encrypt(&plain)?)
    }

    /// Stores a company's tokens (encrypted) and flushes before returning.
    ///
    /// # Errors
    /// sled, encode or encrypt failure.
    pub async fn save_tokens(&self, realm: &str, t: &TokenSet) -> Result<()> {
        self.put_tokens_unflushed(realm, t)?;
        self.flush().await
    }

    /// Stores a company's tokens (encrypted) without flushing; the caller flushes before the
    /// new tokens are used or acknowledged.
    ///
    /// # Errors
    /// sled, encode or encrypt failure.
    pub fn put_tokens_unflushed(&self, realm: &str, t: &TokenSet) -> Result<()> {
        let ct = self.seal(t)?;
        self.writer().insert(TreeId::Tokens, realm.as_bytes(), ct)?;
        Ok(())
    }

    /// A company's tokens, decrypted.
    ///
    /// # Errors
    /// sled, decrypt or decode failure.
    pub fn tokens(&self, realm: &str) -> Result<Option<TokenSet>> {
        match self.tokens.get(realm.as_bytes())? {
            None => Ok(None),
            Some(ct) => {
                let plain = self.vault.decrypt(&ct)?;
                Ok(Some(
                    codec::decode(&plain).map_err(Error::codec(keys::TOKENS))?,
                ))
            }
        }
    }
}
