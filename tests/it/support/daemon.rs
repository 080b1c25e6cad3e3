//! `TestDaemon`: the real `boa-exchange` binary started on 127.0.0.1:0 with a temp data dir,
//! a NOTIFY_SOCKET the test binds (readiness = READY=1, never a sleep), and helpers to talk to
//! it over HTTP and the control socket. Dropping it kills the process.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::eventually::{eventually, lazy};

pub const BIN: &str = env!("CARGO_BIN_EXE_boa-exchange");

/// A running daemon (or one that was stopped and can be restarted on the same data).
pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub notify: UnixDatagram,
    pub notify_path: PathBuf,
    pub http: String,
    pub extra_config: String,
    pub env: Vec<(String, String)>,
    pub stderr_path: PathBuf,
}

impl TestDaemon {
    /// Starts a daemon whose config is the defaults plus `extra` (TOML appended).
    pub fn start(extra: &str) -> TestDaemon {
        Self::start_with_env(extra, &[])
    }

    pub fn start_with_env(extra: &str, env: &[(&str, &str)]) -> TestDaemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let notify_path = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
        notify
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut d = TestDaemon {
            stderr_path: dir.path().join("stderr.log"),
            dir,
            child: None,
            notify,
            notify_path,
            http: String::new(),
            extra_config: extra.to_string(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        d.write_config();
        d.spawn_and_wait_ready();
        d
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("control.sock")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// The config file: test paths first, then the caller's extra TOML. Sections named in
    /// `extra` that are also used here are merged by writing keys into the same table.
    pub fn write_config(&self) {
        let base = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n[storage]\ndata_dir = \"{data}\"\n{storage}\n[control]\nsocket = \"{sock}\"\n",
            storage = section_body(&self.extra_config, "storage"),
            server = section_body(&self.extra_config, "server"),
            data = self.data_dir().display(),
            sock = self.socket().display(),
        );
        let rest = without_sections(&self.extra_config, &["server", "storage", "control"]);
        // Hermetic by default: never the real BoA site (a closed local port instead).
        let boa = if self.extra_config.contains("[boa]") {
            ""
        } else {
            "[boa]\nurl = \"http://127.0.0.1:9/\"\n"
        };
        std::fs::write(self.config_path(), format!("{base}{rest}{boa}")).expect("write config");
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        for v in [
            "API_HOST",
            "API_PORT",
            "ADMIN_API_KEY",
            "QB_CLIENT_ID",
            "QB_CLIENT_SECRET",
            "QB_REDIRECT_URI",
            "QB_SANDBOX",
            "SECRET_KEY",
            "SCHEDULE_TIME",
            "TIMEZONE",
            "STATE_DIRECTORY",
            "RUNTIME_DIRECTORY",
            "CREDENTIALS_DIRECTORY",
            "JOURNAL_STREAM",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "RUST_LOG",
        ] {
            c.env_remove(v);
        }
        c.env("RUST_LOG", "info,boa_exchange=debug");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Spawns `serve` and waits for READY=1 (20 s at most), then learns the HTTP address.
    pub fn spawn_and_wait_ready(&mut self) {
        self.drain_notify();
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .expect("stderr log");
        let child = self
            .command()
            .arg("serve")
            .arg("--config")
            .arg(self.config_path())
            .env("NOTIFY_SOCKET", &self.notify_path)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn boa-exchange");
        self.child = Some(child);
        let stderr = self.stderr_path.clone();
        eventually(
            Duration::from_secs(20),
            lazy(|| {
                let log = std::fs::read_to_string(&stderr).unwrap_or_default();
                format!("READY=1 from the daemon: {log}")
            }),
            || {
                if self.notifications_until(|m| m.contains("READY=1"), Duration::from_millis(200)) {
                    return true;
                }
                if let Some(st) = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    panic!("daemon exited before READY ({st}): {}", self.stderr());
                }
                false
            },
        );
        let st = self.control("status", json!({}));
        assert_eq!(st["ok"], true, "{st}");
        self.http = format!(
            "http://{}",
            st["data"]["http_listen"].as_str().expect("http_listen")
        );
    }

    fn drain_notify(&self) {
        let mut buf = [0u8; 4096];
        self.notify.set_nonblocking(true).ok();
        while self.notify.recv(&mut buf).is_ok() {}
        self.notify.set_nonblocking(false).ok();
    }

    /// Reads notifications until one satisfies `pred` or `wait` passes.
    pub fn notifications_until(&self, pred: impl Fn(&str) -> bool, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.notify.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                if pred(&msg) {
                    return true;
                }
            }
        }
        false
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Waits for the process to exit (at most `within`).
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let st = eventually(within, "the daemon to exit", || {
            child.try_wait().expect("try_wait")
        });
        self.child = None;
        st
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// One control request on a fresh connection; the parsed answer line.
    pub fn control(&self, cmd: &str, args: Value) -> Value {
        let line = json!({"cmd": cmd, "args": args}).to_string();
        let answers = self.control_lines(&[&line]);
        answers.into_iter().next().expect("an answer")
    }

    /// Sends raw lines on one connection and reads one answer per line.
    pub fn control_lines(&self, lines: &[&str]) -> Vec<Value> {
        let mut s = UnixStream::connect(self.socket()).expect("connect control socket");
        s.set_read_timeout(Some(Duration::from_secs(120))).ok();
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        let mut out = Vec::new();
        for l in lines {
            s.write_all(l.as_bytes()).expect("write");
            s.write_all(b"\n").expect("write");
            let mut a = String::new();
            r.read_line(&mut a).expect("read answer");
            out.push(serde_json::from_str(&a).unwrap_or_else(|e| panic!("bad answer {a:?}: {e}")));
        }
        out
    }

    /// Runs the CLI against this daemon: (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = self
            .command()
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .expect("run cli");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.http, path)
    }

    /// Every file under the data dir, concatenated (for "no plaintext secret" greps).
    pub fn data_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        collect(&self.data_dir(), &mut out);
        out
    }
}

fn collect(p: &Path, out: &mut Vec<u8>) {
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                collect(&p, out);
            } else if let Ok(b) = std::fs::read(&p) {
                out.extend(b);
            }
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The body lines of `[name]` in a TOML snippet.
pub fn section_body(toml: &str, name: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in toml.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            inside = t == format!("[{name}]");
            continue;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The snippet without the named sections.
pub fn without_sections(toml: &str, names: &[&str]) -> String {
    let mut out = String::new();
    let mut skip = false;
    for line in toml.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            skip = names.iter().any(|n| t == format!("[{n}]"));
        }
        if !skip {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

pub fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}
