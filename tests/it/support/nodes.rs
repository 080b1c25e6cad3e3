//! `Nodes`: several real daemons sharing one PostgreSQL database, one identity file and one
//! fake Intuit (one QuickBooks behind the cluster), SPEC §13. Each node has a fake BoA of its
//! own, so a test can tell which node fetched the page (the leader's scheduled work) and which
//! did not (a standby). Each node is a [`World`], so every World helper works on any node.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::backend::Backend;
use super::eventually::{eventually_async, lazy};
use super::fake_boa::FakeBoa;
use super::fake_intuit::{FakeIntuit, FakeIntuitConfig};
use super::world::{World, REDIRECT};

/// The nodes of one cluster.
pub struct Nodes {
    /// The nodes, in the order they were started.
    pub nodes: Vec<World>,
    /// The one QuickBooks behind every node.
    pub intuit: Arc<FakeIntuit>,
    /// The shared database.
    pub backend: Backend,
    /// Holds the identity file every node uses (created by the first).
    identity_dir: tempfile::TempDir,
    /// The page every node's fake BoA serves (`None`: the fake's default capture).
    page: Option<Vec<u8>>,
}

impl Nodes {
    /// Starts one node per entry of `extras` (each its extra TOML), one after the other, on
    /// a fresh database; `None` when PostgreSQL is missing (the tests skip).
    pub async fn start(cfg: FakeIntuitConfig, extras: &[&str]) -> Option<Nodes> {
        let backend = Backend::postgres().await?;
        Some(Self::start_on(backend, cfg, extras).await)
    }

    /// [`Nodes::start`] on a given database.
    pub async fn start_on(backend: Backend, mut cfg: FakeIntuitConfig, extras: &[&str]) -> Nodes {
        let _ = rustls::crypto::ring::default_provider().install_default();
        cfg.redirect_uri = REDIRECT.to_string();
        let intuit = Arc::new(FakeIntuit::start(cfg).await);
        let mut n = Nodes {
            nodes: Vec::new(),
            intuit,
            backend,
            identity_dir: tempfile::tempdir().expect("tempdir"),
            page: None,
        };
        for extra in extras {
            n.add(extra).await;
        }
        n
    }

    /// The identity file the nodes share.
    pub fn identity(&self) -> PathBuf {
        self.identity_dir.path().join("identity.txt")
    }

    /// Serves `page` from every node's fake BoA, those started later included.
    pub fn set_page(&mut self, page: Vec<u8>) {
        for w in &self.nodes {
            w.boa.set_page(page.clone());
        }
        self.page = Some(page);
    }

    /// Starts one more node, with a fake BoA of its own serving the page of
    /// [`Nodes::set_page`] (before the node starts, so its first fetch gets it).
    pub async fn add(&mut self, extra: &str) -> &World {
        let boa = FakeBoa::start().await;
        if let Some(p) = &self.page {
            boa.set_page(p.clone());
        }
        let w = World::start_node(
            self.intuit.clone(),
            boa,
            &self.backend,
            Some(&self.identity()),
            extra,
        )
        .await;
        self.nodes.push(w);
        self.nodes.last().expect("just pushed")
    }
}

/// `status` data of a node over the control socket.
pub fn status(w: &World) -> Value {
    let a = w.control("status", json!({}));
    assert_eq!(a["ok"], true, "status: {a}");
    a["data"].clone()
}

/// The role `status` shows (`"leader"` or `"standby"`, SPEC §13), `None` when it shows none.
pub fn role(w: &World) -> Option<String> {
    status(w)["role"].as_str().map(str::to_string)
}

/// The value of an unlabelled series in a node's `/metrics`.
pub async fn metric(w: &World, name: &str) -> Option<f64> {
    let a = w.get("/metrics").await;
    assert_eq!(a.status, 200, "/metrics: {}", a.text);
    a.text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Every node's role as `status`, `/health` and `/metrics` show it, checked to agree:
/// `(status role, /health role, boa_exchange_leader)` per node.
pub async fn roles(nodes: &[&World]) -> Vec<(Option<String>, Option<String>, Option<f64>)> {
    let mut out = Vec::new();
    for w in nodes {
        let s = role(w);
        let h = w.get("/health").await;
        let h = h.json()["role"].as_str().map(str::to_string);
        let m = metric(w, "boa_exchange_leader").await;
        out.push((s, h, m));
    }
    out
}

/// Waits until exactly one of `nodes` is the leader and every other one a standby, on all
/// three surfaces (`status`, `/health`, `/metrics` 1/0); returns the leader's index.
pub async fn one_leader(nodes: &[&World], within: Duration) -> usize {
    let last = std::sync::Mutex::new(Vec::new());
    let found = eventually_async(
        within,
        lazy(|| {
            format!(
                "exactly one leader and the rest standby in status, /health and /metrics \
                 (last seen per node: {:?})",
                last.lock().expect("lock")
            )
        }),
        async || {
            let r = roles(nodes).await;
            *last.lock().expect("lock") = r.clone();
            let leader = |x: &(Option<String>, Option<String>, Option<f64>)| {
                x.0.as_deref() == Some("leader")
                    && x.1.as_deref() == Some("leader")
                    && x.2 == Some(1.0)
            };
            let standby = |x: &(Option<String>, Option<String>, Option<f64>)| {
                x.0.as_deref() == Some("standby")
                    && x.1.as_deref() == Some("standby")
                    && x.2 == Some(0.0)
            };
            let leaders: Vec<usize> = (0..r.len()).filter(|i| leader(&r[*i])).collect();
            let standbys = r.iter().filter(|x| standby(x)).count();
            (leaders.len() == 1 && standbys == r.len() - 1).then(|| leaders[0])
        },
    )
    .await;
    found
}
