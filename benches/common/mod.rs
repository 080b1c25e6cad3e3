//! What the benchmarks that drive the real daemon share: reading their `BENCH_*` settings,
//! waiting for the daemon, and one control-socket call. Included with `#[path]` (a folder,
//! so Cargo does not take it for a benchmark of its own).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A numeric `BENCH_*` setting, or its default.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Waits until the daemon answers `status` on its control socket (120 s at most); panics
/// with its log (`dir/daemon.log`) when it exits first.
pub fn wait_ready(socket: &Path, child: &mut Child, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
            panic!("daemon exited ({st}): {log}");
        }
        if UnixStream::connect(socket).is_ok() && control(socket, "status", json!({}))["ok"] == true
        {
            return;
        }
        assert!(Instant::now() < deadline, "daemon not ready in 120 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One control-socket request and its answer.
pub fn control(socket: &Path, cmd: &str, args: Value) -> Value {
    let mut s = UnixStream::connect(socket).expect("connect control socket");
    s.set_read_timeout(Some(Duration::from_secs(3600))).ok();
    let line = json!({"cmd": cmd, "args": args}).to_string() + "\n";
    s.write_all(line.as_bytes()).expect("write");
    let mut r = BufReader::new(s);
    let mut a = String::new();
    r.read_line(&mut a).expect("read answer");
    serde_json::from_str(&a).unwrap_or_else(|e| panic!("bad answer ({e}): {}", tail(&a, 1)))
}
