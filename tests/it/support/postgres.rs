//! A throwaway PostgreSQL cluster for the tests (SPEC §13): `initdb` and `pg_ctl` from
//! Debian's server package (`/usr/lib/postgresql/*/bin`) in a temporary folder, on a free
//! loopback port, as the `postgres` user when the tests run as root (initdb and postgres
//! refuse root; the folder is handed to that user).
//!
//! One cluster per test-binary run ([`shared`]), one fresh database per test
//! ([`Cluster::fresh_db`]). A watcher process started beside it stops the cluster and
//! removes its folder once the test process has exited, however it exits (statics are never
//! dropped). A test that restarts the server takes a private cluster ([`Cluster::start`]),
//! stopped when dropped.
//!
//! Where the server binaries are missing the tests print why and skip, unless
//! `BOA_EXCHANGE_REQUIRE_POSTGRES=1` (set by `.ci/run`): then they fail.

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// A running cluster.
#[derive(Debug)]
pub struct Cluster {
    /// The temporary folder (sockets, log; `data/` inside).
    dir: PathBuf,
    /// The server binaries.
    bin: PathBuf,
    /// Its loopback port.
    pub port: u16,
    /// Run the server binaries through `runuser -u postgres --` (the tests run as root).
    as_postgres: bool,
    /// Stopped and removed on drop (a private cluster; the shared one is left to its watcher).
    private: bool,
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb`.
fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b)
}

fn required() -> bool {
    std::env::var("BOA_EXCHANGE_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

/// The server binaries, or `None` (after saying why) when the tests should skip.
///
/// # Panics
/// When they are missing and `BOA_EXCHANGE_REQUIRE_POSTGRES=1`.
fn available() -> Option<PathBuf> {
    match bin_dir() {
        Some(b) => Some(b),
        None => {
            assert!(
                !required(),
                "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin (Debian package postgresql) and BOA_EXCHANGE_REQUIRE_POSTGRES=1"
            );
            eprintln!(
                "skipping: PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb; Debian package postgresql)"
            );
            None
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The cluster shared by every test of this run, started on first use; `None` when the
/// tests should skip.
pub fn shared() -> Option<&'static Cluster> {
    static SHARED: OnceLock<Option<Cluster>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let bin = available()?;
            Some(Cluster::boot(bin, false))
        })
        .as_ref()
}

impl Cluster {
    /// A private cluster (for a test that stops or restarts the server); `None` when the
    /// tests should skip.
    pub fn start() -> Option<Cluster> {
        let bin = available()?;
        Some(Cluster::boot(bin, true))
    }

    fn boot(bin: PathBuf, private: bool) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("boa-pg-")
            .tempdir_in("/tmp")
            .expect("a temporary folder")
            .keep();
        let as_postgres = is_root();
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("chown runs")
                .success();
            assert!(
                ok,
                "chown of {} to postgres failed (is there a postgres user?)",
                dir.display()
            );
        }
        let mut c = Cluster {
            dir,
            bin,
            port: 0,
            as_postgres,
            private,
        };
        let out = c
            .command("initdb")
            .arg("-D")
            .arg(c.data())
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        c.watch();
        // A port taken between the probe and the bind gets another try.
        for attempt in 0..5 {
            c.port = free_port();
            if c.pg_ctl_start() {
                return c;
            }
            eprintln!(
                "postgres did not start on port {} (attempt {attempt})",
                c.port
            );
        }
        panic!("postgres did not start: {}", c.log());
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server's log (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
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

    /// `pg_ctl start`, waiting until it accepts connections.
    fn pg_ctl_start(&self) -> bool {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
            self.port,
            self.dir.display()
        );
        self.command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-o", &opts, "-w", "-t", "30", "start"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts the (stopped) server again on its port.
    pub fn resume(&self) {
        assert!(
            self.pg_ctl_start(),
            "postgres did not start again: {}",
            self.log()
        );
    }

    /// Stops the server (fast: sessions are ended, what was committed is kept).
    pub fn stop(&self) {
        let ok = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "pg_ctl stop failed: {}", self.log());
    }

    /// A watcher that stops the cluster and removes its folder once this process is gone.
    /// Never waited for on purpose: it outlives the test process (it exits only after).
    #[allow(clippy::zombie_processes)]
    fn watch(&self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = if self.as_postgres {
            "runuser -u postgres -- \"$2\" -D \"$3\" -m immediate stop"
        } else {
            "\"$2\" -D \"$3\" -m immediate stop"
        };
        let script = format!(
            "while kill -0 \"$1\" 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf \"$4\""
        );
        // A process group of its own: a signal to the test run's group does not take it.
        Command::new("sh")
            .process_group(0)
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg(std::process::id().to_string())
            .arg(pg_ctl)
            .arg(self.data())
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the cluster's watcher starts");
    }

    /// The URL of database `db` as the superuser, without TLS.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgresql://postgres@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// A new empty database of its own for one test; its URL.
    pub async fn fresh_db(&self) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let client = self.superuser().await;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("CREATE DATABASE");
        self.url(&name)
    }

    /// A superuser session on the `postgres` database (for what a test does behind the
    /// store's back).
    pub async fn superuser(&self) -> tokio_postgres::Client {
        connect(&self.url("postgres")).await
    }
}

/// A plain session on `url` (its connection driven by a spawned task).
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test cluster");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.private {
            return;
        }
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
