//! A throwaway PostgreSQL cluster for the benchmarks, after tests/it/support/postgres.rs but
//! with `fsync` left ON (the server's defaults, `synchronous_commit = on` too): the figures
//! include the cost of every commit reaching the disk. `initdb`/`pg_ctl` from the newest
//! `/usr/lib/postgresql/*/bin`, in a folder under /tmp, on a free loopback port, run as the
//! `postgres` user when the bench runs as root. Stopped (`-m immediate`) and removed when
//! dropped, or by a watcher process once the bench has exited however it exits.

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A running cluster.
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    /// Its loopback port.
    pub port: u16,
    as_postgres: bool,
}

fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (package postgresql)")
        .filter_map(|e| {
            let e = e.ok()?;
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, b)| b)
        .expect("no /usr/lib/postgresql/*/bin/initdb")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Cluster {
    /// initdb and start; panics when it cannot.
    #[allow(clippy::zombie_processes)]
    pub fn start() -> Cluster {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("boa-pgbench-")
            .tempdir_in("/tmp")
            .expect("a temporary folder")
            .keep();
        // SAFETY: geteuid has no preconditions.
        let as_postgres = unsafe { libc::geteuid() == 0 };
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown of {} to postgres failed", dir.display());
        }
        let mut c = Cluster {
            dir,
            bin,
            port: 0,
            as_postgres,
        };
        let out = c
            .command("initdb")
            .arg("-D")
            .arg(c.data())
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8"])
            .stdin(Stdio::null())
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The watcher: stops the server and removes the folder once this process is gone.
        let stop = if c.as_postgres {
            "runuser -u postgres -- \"$2\" -D \"$3\" -m immediate stop"
        } else {
            "\"$2\" -D \"$3\" -m immediate stop"
        };
        Command::new("sh")
            .process_group(0)
            .arg("-c")
            .arg(format!(
                "while kill -0 \"$1\" 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf \"$4\""
            ))
            .arg("sh")
            .arg(std::process::id().to_string())
            .arg(c.bin.join("pg_ctl"))
            .arg(c.data())
            .arg(&c.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the cluster's watcher starts");
        for _ in 0..5 {
            c.port = free_port();
            // fsync and synchronous_commit are the defaults (on); only the connection limit
            // is raised, for two daemons' pools and the seeding beside them.
            let opts = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300",
                c.port,
                c.dir.display()
            );
            let ok = c
                .command("pg_ctl")
                .arg("-D")
                .arg(c.data())
                .arg("-l")
                .arg(c.dir.join("log"))
                .args(["-o", &opts, "-w", "-t", "60", "start"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return c;
            }
        }
        panic!(
            "postgres did not start: {}",
            std::fs::read_to_string(c.dir.join("log")).unwrap_or_default()
        );
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// The URL of database `db` as the superuser, without TLS.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgresql://postgres@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// A new empty database; its URL.
    pub async fn fresh_db(&self) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("bench{}", N.fetch_add(1, Ordering::SeqCst));
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .expect("connect to the bench cluster");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("CREATE DATABASE");
        self.url(&name)
    }

    /// The server's `fsync` setting as it runs (for the report).
    pub async fn setting(&self, name: &str) -> String {
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .expect("connect to the bench cluster");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
            .query_one(&format!("SHOW {name}"), &[])
            .await
            .map(|r| r.get::<_, String>(0))
            .unwrap_or_default()
    }

    /// The postmaster's pid.
    pub fn postmaster_pid(&self) -> u32 {
        std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
            .unwrap_or(0)
    }
}

/// Proportional set size (shared buffers split among the processes that map them, so not
/// counted once per backend) of the postmaster `root` and its children, in KiB.
pub fn tree_pss_kib(root: u32) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let ppid = std::fs::read_to_string(format!("/proc/{p}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("PPid:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u32>().ok())
            });
        if p != root && ppid != Some(root) {
            continue;
        }
        total += std::fs::read_to_string(format!("/proc/{p}/smaps_rollup"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Pss:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .unwrap_or(0);
    }
    total
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Deadlocks (SQLSTATE 40P01) retried by [`save_retrying`], over the whole bench run.
pub static DEADLOCK_RETRIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Saves tried again by [`save_retrying`] because the store's pool had no connection free.
pub static POOL_WAIT_RETRIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `save_company_and_tokens`, tried again (up to 20 times) when PostgreSQL chose it as a
/// deadlock victim. Before schema 3, concurrent first saves of new companies deadlocked on the
/// `company_counts` rows the trigger updates (found by this bench, issue 23; schema 3 locks
/// them in name order, so the count should now stay 0). The victim's transaction was rolled
/// back whole, so trying again is safe. Any other error panics.
pub async fn save_retrying(
    store: &boa_exchange::store::Store,
    company: &boa_exchange::store::records::Company,
    tokens: &boa_exchange::store::records::TokenSet,
) {
    for attempt in 0.. {
        match store.save_company_and_tokens(company, tokens).await {
            Ok(()) => return,
            Err(e) if attempt < 20 && e.to_string().contains("deadlock detected") => {
                DEADLOCK_RETRIES.fetch_add(1, Ordering::Relaxed);
            }
            // Nothing was sent: the pool had no connection free within its 5 s.
            Err(e) if attempt < 20 && e.to_string().contains("waiting for a slot") => {
                POOL_WAIT_RETRIES.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => panic!("save {}: {e}", company.realm_id),
        }
    }
}
