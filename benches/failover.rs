//! Failover benchmark (issue 23; results in BENCHMARKS.md): two real daemons on one
//! PostgreSQL database, `kill -9` of the one whose `/health` says `"role": "leader"`, and the
//! time until the other's `/health` says leader.
//!
//! 1. starts a throwaway PostgreSQL cluster (benches/common/postgres.rs: `fsync` and
//!    `synchronous_commit` on), creates a database and seeds it through the store API
//!    (`Store::open_postgres`: migrated, the shared identity file written, `BENCH_COMPANIES`
//!    connected companies, 1000 by default);
//! 2. starts node A, waits until it is leader, then node B, and checks it is standby;
//! 3. `BENCH_RUNS` times (3): finds the one leader (exactly one, or the run is incorrect),
//!    sends it SIGKILL, polls the other's `/health` every 20 ms until it says leader, then
//!    starts the killed node again on the same config and checks that it comes back standby.
//!
//! Environment: `BENCH_RANDOM_KILL=1` (wait a random 0–lease before each kill, so that it
//! lands anywhere in the standby's retry cycle; without it the kill follows the standby's
//! start at once, the worst case: a full retry interval), `BENCH_RUNS` (3), `BENCH_LEASE_SECS` (the daemon's `leader_lease_secs`, 15 as
//! shipped), `BENCH_COMPANIES` (1000), `BENCH_BIN` (another daemon binary).
//! Exits non-zero when a run is incorrect (two leaders at once, no leader, or no takeover
//! within 10 leases); never when the 20 s goal is missed: the figures are what they are.

#[path = "common/mod.rs"]
mod common;
#[path = "common/postgres.rs"]
#[allow(dead_code)]
mod pg;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boa_exchange::currency::Currency;
use boa_exchange::store::records::{Company, Connection, DriftPolicy, TokenExpiry, TokenSet};
use boa_exchange::store::Store;
use chrono::Utc;
use common::{control, env_u64, tail, wait_ready};
use serde_json::{json, Value};

const BUILT_BIN: &str = env!("CARGO_BIN_EXE_boa-exchange");

/// One daemon: its folder (config, data dir, control socket, log) and, while it runs, the
/// process and its HTTP address.
struct Node {
    name: &'static str,
    dir: PathBuf,
    child: Option<Child>,
    http: Option<SocketAddr>,
}

impl Node {
    fn new(name: &'static str, root: &Path, url: &str, identity: &Path, lease: u64) -> Node {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("data")).expect("node folder");
        std::fs::write(
            dir.join("config.toml"),
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n\
                 [storage]\ndata_dir = \"{data}\"\nbackend = \"postgres\"\n\
                 postgres_url = \"{url}\"\nidentity_file = \"{identity}\"\n\
                 leader_lease_secs = {lease}\n\
                 [control]\nsocket = \"{sock}\"\n\
                 [quickbooks]\nclient_id = \"bench\"\nclient_secret = \"bench\"\n\
                 redirect_uri = \"http://127.0.0.1:9/api/v1/oauth/callback\"\n\
                 authorize_url = \"http://127.0.0.1:9/authorize\"\n\
                 token_url = \"http://127.0.0.1:9/token\"\n\
                 revoke_url = \"http://127.0.0.1:9/revoke\"\n\
                 api_base = \"http://127.0.0.1:9\"\n\
                 [boa]\nurl = \"http://127.0.0.1:9/\"\n\
                 [schedule]\nenabled = false\n\
                 [log]\nlevel = \"info\"\n",
                data = dir.join("data").display(),
                identity = identity.display(),
                sock = dir.join("control.sock").display(),
            ),
        )
        .expect("write config");
        Node {
            name,
            dir,
            child: None,
            http: None,
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    /// Starts the daemon and waits until it answers on its control socket.
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .expect("log file");
        let bin = std::env::var("BENCH_BIN").unwrap_or_else(|_| BUILT_BIN.to_string());
        let mut cmd = Command::new(bin);
        // SAFETY: prctl is async-signal-safe; it only asks for SIGKILL when the bench dies,
        // so that a bench that panics leaves no daemon behind.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .arg("serve")
            .arg("--config")
            .arg(self.dir.join("config.toml"))
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("ADMIN_API_KEY")
            .env_remove("DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn daemon");
        wait_ready(&self.socket(), &mut child, &self.dir);
        let http = control(&self.socket(), "status", json!({}))["data"]["http_listen"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .expect("http_listen in status");
        self.child = Some(child);
        self.http = Some(http);
    }

    /// `"leader"`, `"standby"`, or what else `/health` said (empty when it did not answer).
    fn role(&self) -> String {
        self.http
            .and_then(health)
            .and_then(|h| h["role"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// SIGKILL (`kill -9`) and reap; the instant the signal was sent.
    fn kill9(&mut self) -> Instant {
        let mut child = self.child.take().expect("a running node");
        let t = Instant::now();
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        self.http = None;
        t
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let _ = child.wait();
        }
    }

    fn log_tail(&self) -> String {
        tail(
            &std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default(),
            20,
        )
    }
}

/// `GET /health` over a fresh connection; its JSON, or `None` when it did not answer.
fn health(addr: SocketAddr) -> Option<Value> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b)?;
    serde_json::from_str(body).ok()
}

fn fail(nodes: &mut [Node], why: &str) -> ! {
    eprintln!("incorrect: {why}");
    for n in nodes.iter_mut() {
        eprintln!("--- node {} log tail:\n{}", n.name, n.log_tail());
        n.stop();
    }
    std::process::exit(1);
}

/// Seeds `n` connected companies (tokens that stay valid: no refresh is due during the bench).
async fn seed(store: &Arc<Store>, n: usize) {
    let now = Utc::now();
    let mut saves = tokio::task::JoinSet::new();
    for i in 0..n {
        let realm = format!("{}", 4_620_816_365_000_000u64 + i as u64);
        let expiry = TokenExpiry {
            access_expires_at: now + chrono::Duration::hours(1),
            refresh_expires_at: now + chrono::Duration::days(100),
            hard_expires_at: None,
            refreshed_at: now,
        };
        let company = Company {
            realm_id: realm.clone(),
            company_name: format!("Bench Co {i}"),
            home_currency: Currency::ALL,
            is_active: true,
            sync_enabled: true,
            is_sandbox: true,
            fill_non_business_days: true,
            created_at: now,
            updated_at: now,
            last_sync_at: None,
            connection: Connection::Connected,
            tokens: Some(expiry.clone()),
            multicurrency: true,
            active_currencies: vec![Currency::new("EUR").unwrap(), Currency::new("USD").unwrap()],
            currencies_checked_at: Some(now),
            drift: DriftPolicy::default(),
        };
        let tokens = TokenSet {
            access_token: format!("at-{i}"),
            refresh_token: format!("rt-{i}"),
            expiry,
        };
        if saves.len() >= 4 {
            saves.join_next().await.expect("a save").expect("save task");
        }
        let store = store.clone();
        saves.spawn(async move { pg::save_retrying(&store, &company, &tokens).await });
    }
    while let Some(r) = saves.join_next().await {
        r.expect("save task");
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runs = env_u64("BENCH_RUNS", 3) as usize;
    let lease = env_u64("BENCH_LEASE_SECS", 15);
    let companies = env_u64("BENCH_COMPANIES", 1000) as usize;
    let random_kill = env_u64("BENCH_RANDOM_KILL", 0) == 1;

    let cluster = pg::Cluster::start();
    eprintln!(
        "PostgreSQL cluster on port {}: fsync = {}, synchronous_commit = {}",
        cluster.port,
        cluster.setting("fsync").await,
        cluster.setting("synchronous_commit").await,
    );
    let url = cluster.fresh_db().await;
    let root = tempfile::tempdir().expect("tempdir");
    let identity = root.path().join("identity.txt");
    let t = Instant::now();
    let store = Arc::new(
        Store::open_postgres(&url, &identity)
            .await
            .expect("open the PostgreSQL store"),
    );
    seed(&store, companies).await;
    drop(store);
    eprintln!(
        "seeded {companies} companies in {:.1} s ({} saves tried again after a deadlock)",
        t.elapsed().as_secs_f64(),
        pg::DEADLOCK_RETRIES.load(std::sync::atomic::Ordering::Relaxed)
    );

    let mut nodes = [
        Node::new("a", root.path(), &url, &identity, lease),
        Node::new("b", root.path(), &url, &identity, lease),
    ];
    let deadline = Duration::from_secs(10 * lease.max(1));

    nodes[0].start();
    let t = Instant::now();
    while nodes[0].role() != "leader" {
        if t.elapsed() > deadline {
            fail(&mut nodes, "node a alone did not become leader");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    nodes[1].start();
    if nodes[1].role() != "standby" {
        let r = nodes[1].role();
        fail(
            &mut nodes,
            &format!("node b started beside a leader says {r:?}"),
        );
    }

    let mut times = Vec::new();
    for run in 1..=runs {
        let roles = [nodes[0].role(), nodes[1].role()];
        let leader = match (roles[0].as_str(), roles[1].as_str()) {
            ("leader", "standby") => 0,
            ("standby", "leader") => 1,
            _ => fail(
                &mut nodes,
                &format!("run {run}: not exactly one leader: {roles:?}"),
            ),
        };
        let other = 1 - leader;
        // The kill at a random moment of the standby's retry cycle (every lease/3), not
        // right after its start (that is the worst case: a full interval).
        let settle = if random_kill {
            Duration::from_millis(rand::random::<u64>() % (lease * 1000).max(1))
        } else {
            Duration::ZERO
        };
        std::thread::sleep(settle);
        let killed_at = nodes[leader].kill9();
        let mut polls = 0u32;
        let took = loop {
            let r = nodes[other].role();
            polls += 1;
            if r == "leader" {
                break killed_at.elapsed();
            }
            if killed_at.elapsed() > deadline {
                let why = format!(
                    "run {run}: node {} still {r:?} {} s after the leader was killed",
                    nodes[other].name,
                    deadline.as_secs()
                );
                fail(&mut nodes, &why);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        eprintln!(
            "run {run}: {:.1} s after the standby started, kill -9 of leader {} → {} leader after {:.2} s ({polls} polls of /health)",
            settle.as_secs_f64(),
            nodes[leader].name,
            nodes[other].name,
            took.as_secs_f64()
        );
        times.push((nodes[leader].name, nodes[other].name, settle, took));
        // The killed node comes back, as standby.
        nodes[leader].start();
        let r = nodes[leader].role();
        if r != "standby" || nodes[other].role() != "leader" {
            let o = nodes[other].role();
            fail(
                &mut nodes,
                &format!("run {run}: after the restart the roles are {r:?} (restarted) and {o:?}"),
            );
        }
    }
    for n in nodes.iter_mut() {
        n.stop();
    }

    println!(
        "| run | killed (leader) | took over | standby up for | kill -9 → `/health` says leader |"
    );
    println!("|---:|---|---|---:|---:|");
    for (i, (k, o, settle, t)) in times.iter().enumerate() {
        println!(
            "| {} | {k} | {o} | {:.1} s | {:.2} s |",
            i + 1,
            settle.as_secs_f64(),
            t.as_secs_f64()
        );
    }
    let mut s: Vec<f64> = times.iter().map(|t| t.3.as_secs_f64()).collect();
    s.sort_by(f64::total_cmp);
    if let (Some(min), Some(max)) = (s.first(), s.last()) {
        eprintln!(
            "lease {lease} s: failover min {min:.2} s, median {:.2} s, max {max:.2} s over {} runs",
            s[s.len() / 2],
            s.len()
        );
    }
}
