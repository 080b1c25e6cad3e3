//! Backup and restore benchmark (issue 22; results in BENCHMARKS.md).
//!
//! For each company count N on the command line (default 100000):
//! 1. seeds a fresh data dir with the library's store API: N connected companies with
//!    tokens, 3 synced rates and one log entry each, and the real 2026-05-22 BoA tables;
//! 2. starts the real daemon (release build) on it, waits for READY, takes its idle RSS
//!    after a `status` and 50 `/health`s, resets its peak RSS (`clear_refs` 5);
//! 3. runs `boa-exchange backup FILE` (the real CLI) while a thread asks `/health` every
//!    50 ms: backup wall time, file size, the daemon's peak RSS during it (VmHWM after the
//!    reset) against its idle RSS, and the `/health` latencies during it;
//! 4. stops the daemon, runs `restore FILE` into a new data dir with the same identity (wall
//!    time; the restore process's peak RSS from `getrusage(RUSAGE_CHILDREN)` is only reported
//!    when it exceeds the daemon's), starts the daemon there and checks it counts N companies.
//!
//! Exits non-zero when a run is incorrect (a failed backup or restore, a wrong count); never
//! because a target is missed.

#[path = "common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boa_exchange::boa::{parse_page, FixingSource};
use boa_exchange::currency::Currency;
use boa_exchange::fixing::TableKind;
use boa_exchange::store::records::{Company, CompanyRate, LogRecord, TokenExpiry, TokenSet};
use boa_exchange::store::Store;
use chrono::{NaiveDate, Utc};
use common::{control, wait_ready};
use rust_decimal::Decimal;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_boa-exchange");
const PAGE: &str = "tests/fixtures/boa/official-rate-en-2026-05-22.html";

fn realm(i: usize) -> String {
    format!("{}", 4_620_816_365_000_000u64 + i as u64)
}

fn seed(data: &Path, n: usize) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let store = Arc::new(Store::open_sled(data, &data.join("identity.txt")).expect("open"));
        let now = Utc::now();
        let date = NaiveDate::from_ymd_opt(2026, 5, 22).expect("date");
        let mut saves = tokio::task::JoinSet::new();
        for i in 0..n {
            let r = realm(i);
            let mut c = Company::connected(&r, &format!("Bench Co {i}"), true, now);
            c.tokens = Some(TokenExpiry {
                access_expires_at: now + chrono::Duration::hours(1),
                refresh_expires_at: now + chrono::Duration::days(100),
                hard_expires_at: None,
                refreshed_at: now,
            });
            let t = TokenSet {
                access_token: format!("AT-{i}-{}", "x".repeat(900)),
                refresh_token: format!("RT-{i}-abcdefghijklmnopqrstuvwxyz0123456789"),
                expiry: c.tokens.clone().expect("expiry"),
            };
            let store = store.clone();
            saves.spawn(async move {
                store.save_company_and_tokens(&c, &t).await.expect("save");
                let rates: Vec<CompanyRate> = ["EUR", "USD", "GBP"]
                    .iter()
                    .map(|code| CompanyRate {
                        date,
                        currency: Currency::new(code).expect("code"),
                        rate: Decimal::from_str("97.1234").expect("dec"),
                        fixing: (TableKind::Main, date),
                        synced: true,
                        synced_at: Some(now),
                    })
                    .collect();
                store.put_rates(&r, &rates).await.expect("rates");
                store
                    .append_log(&r, &LogRecord::connection(now, true, "connected", vec![]))
                    .await
                    .expect("log");
            });
            if saves.len() >= 64 {
                saves.join_next().await.expect("task").expect("save task");
            }
        }
        while let Some(r) = saves.join_next().await {
            r.expect("save task");
        }
        let html = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(PAGE))
            .expect("fixture page");
        let page = parse_page(&html).expect("parse fixture");
        let source = FixingSource::Page {
            url: "https://www.bankofalbania.org/".into(),
            sha256: "bench".into(),
            fetched_at: now,
        };
        for t in &page.tables {
            store.put_table(t, &source, now).await.expect("table");
        }
        store.flush().await.expect("flush");
    });
}

struct Daemon {
    child: Child,
    socket: PathBuf,
    http: std::net::SocketAddr,
    pid: u32,
}

fn start(dir: &Path, data: &Path, tag: &str) -> Daemon {
    let socket = dir.join(format!("{tag}.sock"));
    let config = dir.join(format!("{tag}.toml"));
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"{}\"\n[control]\nsocket = \"{}\"\n\
             [boa]\nurl = \"http://127.0.0.1:9/\"\n[schedule]\nenabled = false\n",
            data.display(),
            socket.display()
        ),
    )
    .expect("config");
    let notify_path = dir.join(format!("{tag}-notify.sock"));
    let notify = UnixDatagram::bind(&notify_path).expect("notify");
    notify.set_read_timeout(Some(Duration::from_secs(120))).ok();
    let log = std::fs::File::create(dir.join("daemon.log")).expect("log");
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn");
    let mut buf = [0u8; 4096];
    loop {
        let len = notify.recv(&mut buf).expect("READY=1 within 120 s");
        if String::from_utf8_lossy(&buf[..len])
            .lines()
            .any(|l| l == "READY=1")
        {
            break;
        }
    }
    wait_ready(&socket, &mut child, dir);
    let st = control(&socket, "status", json!({}));
    let http = st["data"]["http_listen"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("http_listen");
    let pid = st["data"]["pid"].as_u64().map_or(child.id(), |p| p as u32);
    Daemon {
        child,
        socket,
        http,
        pid,
    }
}

fn stop(d: &mut Daemon) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(d.pid as i32, libc::SIGTERM);
    }
    let st = d.child.wait().expect("wait");
    assert!(st.success(), "daemon exit {st}");
}

fn health(addr: std::net::SocketAddr) -> Value {
    let mut s = TcpStream::connect(addr).expect("connect HTTP");
    s.set_read_timeout(Some(Duration::from_secs(60))).ok();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or(Value::Null)
}

fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn run(n: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let t = Instant::now();
    seed(&data, n);
    eprintln!("N={n}: seeded in {:.1} s", t.elapsed().as_secs_f64());

    let mut d = start(dir.path(), &data, "a");
    let h = health(d.http);
    assert_eq!(h["total_companies"].as_u64(), Some(n as u64), "{h}");
    for _ in 0..50 {
        health(d.http);
    }
    let idle = proc_kib(d.pid, "VmRSS:");
    // Reset the peak (VmHWM) to the current RSS.
    std::fs::write(format!("/proc/{}/clear_refs", d.pid), "5").expect("clear_refs");

    let stop_flag = Arc::new(AtomicBool::new(false));
    let prober = {
        let stop_flag = stop_flag.clone();
        let http = d.http;
        std::thread::spawn(move || {
            let mut lat = Vec::new();
            while !stop_flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                health(http);
                lat.push(t.elapsed());
                std::thread::sleep(Duration::from_millis(50));
            }
            lat
        })
    };
    let file = dir.path().join("backup.jsonl");
    let t = Instant::now();
    let out = Command::new(BIN)
        .arg("--socket")
        .arg(&d.socket)
        .arg("backup")
        .arg(&file)
        .output()
        .expect("backup");
    let backup_wall = t.elapsed();
    stop_flag.store(true, Ordering::Relaxed);
    let mut lat = prober.join().expect("prober");
    assert!(
        out.status.success(),
        "backup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peak = proc_kib(d.pid, "VmHWM:");
    let size = std::fs::metadata(&file).expect("file").len();
    let records = std::str::from_utf8(&out.stdout)
        .unwrap_or("")
        .trim()
        .to_string();
    lat.sort();
    let health_max = lat.last().copied().unwrap_or_default();
    let health_med = lat.get(lat.len() / 2).copied().unwrap_or_default();
    stop(&mut d);

    let data2 = dir.path().join("restored");
    std::fs::create_dir(&data2).expect("dir");
    std::fs::copy(data.join("identity.txt"), data2.join("identity.txt")).expect("identity");
    let cfg = dir.path().join("restore.toml");
    std::fs::write(
        &cfg,
        format!("[storage]\ndata_dir = \"{}\"\n", data2.display()),
    )
    .expect("cfg");
    let t = Instant::now();
    let out2 = Command::new(BIN)
        .arg("restore")
        .arg(&file)
        .arg("--config")
        .arg(&cfg)
        .output()
        .expect("restore");
    let restore_wall = t.elapsed();
    assert!(
        out2.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&out2.stderr)
    );
    let mut d2 = start(dir.path(), &data2, "b");
    let h2 = health(d2.http);
    assert_eq!(h2["total_companies"].as_u64(), Some(n as u64), "{h2}");
    stop(&mut d2);

    eprintln!("N={n}: {records}");
    println!("| companies | records | file | backup wall | daemon RSS idle → peak during (+Δ) | /health during (median / max, n) | restore wall |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let rec = records
        .split(": ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap_or("?");
    println!(
        "| {n} | {rec} | {:.1} MiB | {:.2} s | {:.1} → {:.1} MiB (+{:.1}) | {:.2} / {:.2} ms ({}) | {:.2} s |",
        size as f64 / 1048576.0,
        backup_wall.as_secs_f64(),
        mib(idle),
        mib(peak),
        mib(peak.saturating_sub(idle)),
        ms(health_med),
        ms(health_max),
        lat.len(),
        restore_wall.as_secs_f64(),
    );
}

fn main() {
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    for n in if counts.is_empty() {
        vec![100_000]
    } else {
        counts
    } {
        run(n);
    }
}
