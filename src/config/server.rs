//! `[server]`: listen address, public URL, admin key, enrollment, rate limit, trusted
//! proxies, connection cap and request timeout, with `API_HOST`, `API_PORT`, `ADMIN_API_KEY`.

use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    pub(super) listen: String,
    pub(super) public_url: String,
    pub(super) admin_api_key: Secret,
    pub(super) admin_api_key_file: String,
    pub(super) enrollment: String,
    pub(super) rate_limit_per_minute: i64,
    pub(super) trusted_proxies: Vec<String>,
    pub(super) max_connections: i64,
    pub(super) request_timeout_secs: i64,
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

/// `[server]`, with `API_HOST`, `API_PORT` and `ADMIN_API_KEY`.
pub(super) fn validate_server(
    s: RawServer,
    env: &dyn Env,
    base: &Path,
) -> Result<ServerConfig, Error> {
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
