//! Pending OAuth authorizations (the `state` of a connect in flight), with expiry.

use super::*;

impl SledStore {
    // ---------------------------------------------------------------- OAuth states
    /// Records a pending state or invite, flushed.
    ///
    /// # Errors
    /// sled or encode failure.
    pub async fn put_pending(&self, key: &str, p: &PendingAuth) -> Result<()> {
        self.put(TreeId::OauthStates, key.as_bytes(), p)?;
        self.flush().await
    }

    /// A pending OAuth state or invite, left in place.
    ///
    /// # Errors
    /// sled or decode failure.
    pub fn pending(&self, key: &str) -> Result<Option<PendingAuth>> {
        match self.oauth_states.get(key.as_bytes())? {
            None => Ok(None),
            Some(v) => Ok(Some(
                codec::decode(&v).map_err(Error::codec(keys::OAUTH_STATES))?,
            )),
        }
    }

    /// Removes and returns a pending OAuth state or invite (single use).
    ///
    /// # Errors
    /// sled or decode failure.
    pub fn take_pending(&self, key: &str) -> Result<Option<PendingAuth>> {
        match self.writer().remove(TreeId::OauthStates, key.as_bytes())? {
            None => Ok(None),
            Some(v) => Ok(Some(
                codec::decode(&v).map_err(Error::codec(keys::OAUTH_STATES))?,
            )),
        }
    }

    /// Drops expired states and invites; returns how many.
    ///
    /// # Errors
    /// sled or decode failure.
    pub fn purge_expired_pending(&self, now: DateTime<Utc>) -> Result<usize> {
        let mut n = 0;
        for r in Self::scan::<PendingAuth>(&self.oauth_states, keys::OAUTH_STATES, b"") {
            let (k, p) = r?;
            let exp = match p {
                PendingAuth::State { expires_at, .. }
                | PendingAuth::Invite { expires_at, .. }
                | PendingAuth::InvitedState { expires_at, .. } => expires_at,
            };
            if exp < now {
                self.writer().remove(TreeId::OauthStates, &k)?;
                n += 1;
            }
        }
        Ok(n)
    }
}
