//! `[quickbooks]`: the Intuit app's credentials and endpoints, and the sync's concurrency,
//! with the `QB_*` variables.

use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawQuickbooks {
    pub(super) client_id: String,
    pub(super) client_secret: Secret,
    pub(super) client_secret_file: String,
    pub(super) redirect_uri: String,
    pub(super) sandbox: bool,
    pub(super) authorize_url: String,
    pub(super) token_url: String,
    pub(super) revoke_url: String,
    pub(super) api_base: String,
    pub(super) minor_version: i64,
    pub(super) max_concurrent_companies: i64,
    pub(super) writes_in_flight_per_company: i64,
    pub(super) timeout_secs: i64,
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

/// `[quickbooks]`, with the `QB_*` variables; the redirect URI defaults under `public_url`.
pub(super) fn validate_quickbooks(
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
