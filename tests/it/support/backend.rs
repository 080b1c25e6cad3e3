//! Which store a test daemon runs on (SPEC §3 `[storage]`, §13): the embedded sled store in
//! the daemon's own folder, or a database of the run's throwaway PostgreSQL cluster. A test
//! that should hold on both backends is one body taking a [`Backend`] and two `#[tokio::test]`s.
//!
//! [`Backend::postgres`] answers `None` where PostgreSQL is not installed (after saying so),
//! unless `BOA_EXCHANGE_REQUIRE_POSTGRES=1`: then it fails, as every PostgreSQL test does.

use std::path::Path;

use super::postgres;

/// The lease in every PostgreSQL test config: short, so a takeover is quick to wait for.
pub const LEASE_SECS: u64 = 2;

/// The store of a test daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// sled under the daemon's data folder (the default).
    Sled,
    /// PostgreSQL at this URL (a database of its own for the test).
    Postgres(String),
}

impl Backend {
    /// A fresh database of the shared cluster; `None` when the test should skip.
    pub async fn postgres() -> Option<Backend> {
        let cluster = postgres::shared()?;
        Some(Backend::Postgres(cluster.fresh_db().await))
    }

    /// A fresh database of `cluster` (a private one, for a test that restarts the server).
    pub async fn postgres_on(cluster: &postgres::Cluster) -> Backend {
        Backend::Postgres(cluster.fresh_db().await)
    }

    /// Its name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sled => "sled",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// The `[storage]` keys for it (SPEC §3): nothing for sled (the test daemon's folder is
    /// its data_dir); for PostgreSQL the backend, the URL, the lease, and the identity file
    /// when the nodes of a test share one (`None`: the default in the node's data folder).
    pub fn storage_toml(&self, identity: Option<&Path>) -> String {
        let mut out = String::from("[storage]\n");
        if let Backend::Postgres(url) = self {
            out.push_str(&format!(
                "backend = \"postgres\"\npostgres_url = \"{url}\"\nleader_lease_secs = {LEASE_SECS}\n"
            ));
        }
        if let Some(id) = identity {
            out.push_str(&format!("identity_file = \"{}\"\n", id.display()));
        }
        out
    }
}
