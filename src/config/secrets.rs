//! Secrets: the [`Secret`] newtype (never shown by `Debug`/`Display`) and where a secret
//! comes from: its environment variable, a systemd credential, a `*_file`, or the inline key.

use super::*;

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

pub(super) fn read_secret_file(key: &str, file: &str, base: &Path) -> Result<Secret, Error> {
    let p = resolve(base, file);
    let s = std::fs::read_to_string(&p)
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", p.display())))?;
    Ok(Secret(s.trim_end_matches(['\n', '\r']).to_string()))
}

/// Secret lookup order: env var, then `*_file` key, then `$CREDENTIALS_DIRECTORY/<cred>`,
/// then the inline key.
pub(super) fn secret(
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
