//! Sync-all benchmark (issue 5; results in BENCHMARKS.md, wrapper `bench/run.sh`).
//!
//! For each company count N given on the command line (default 1000 and 10000):
//! 1. starts the fake Intuit (no request log, no per-realm concurrency cap, a fixed latency
//!    per call, 20 ms by default) and registers N connected ALL-home companies with EUR and
//!    USD active;
//! 2. seeds a fresh data dir with the library's own store API: every company with the tokens
//!    the fake issued and its currency list marked as read now (so a sync makes no
//!    Preferences/CompanyCurrency reads), plus the real 2026-05-22 BoA page's tables;
//! 3. starts the real daemon binary (built with the bench profile) on that data dir and runs
//!    `sync --all --date 2026-05-22` over the control socket;
//! 4. reports the wall time, the ideal bound ceil(N / max_concurrent_companies) × calls per
//!    company × latency, their ratio, calls per company (metered reads separately), and the
//!    daemon's peak RSS (VmHWM from /proc at the end of the run).
//!
//! Environment: `BENCH_LATENCY_MS` (20), `BENCH_CONCURRENCY` (16, the default of
//! `quickbooks.max_concurrent_companies`), `BENCH_LOG` (the daemon's `log.level`, `info`),
//! `BENCH_EXPIRED_TOKENS=1` (every access token already expired, as on a real daily run: each
//! company's sync starts with a token refresh).
//! Exits non-zero when a run is incorrect (a company failed, or a wrong rate was written);
//! never when a target is missed: the figures are what they are.

#[path = "../tests/it/support/fake_intuit.rs"]
#[allow(dead_code)]
mod fake_intuit;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boa_exchange::boa::{parse_page, FixingSource};
use boa_exchange::currency::Currency;
use boa_exchange::store::records::{Company, Connection, DriftPolicy, TokenExpiry, TokenSet};
use boa_exchange::store::Store;
use chrono::{NaiveDate, Utc};
use fake_intuit::{CompanySpec, FakeIntuit, FakeIntuitConfig};
use rust_decimal::Decimal;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_boa-exchange");
const DATE: &str = "2026-05-22";
const PAGE: &str = "tests/fixtures/boa/official-rate-en-2026-05-22.html";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn realm(i: usize) -> String {
    format!("{}", 4_620_816_365_000_000u64 + i as u64)
}

/// One run's figures.
struct Figures {
    companies: usize,
    concurrency: usize,
    latency_ms: u64,
    wall: Duration,
    daemon_secs: f64,
    reads: u64,
    writes: u64,
    token_calls: u64,
    peak_in_flight: usize,
    rss_before_kib: u64,
    hwm_kib: u64,
    seed: Duration,
}

impl Figures {
    fn calls_per_company(&self) -> f64 {
        (self.reads + self.writes) as f64 / self.companies as f64
    }
    fn ideal(&self) -> Duration {
        let rounds = self.companies.div_ceil(self.concurrency) as f64;
        Duration::from_secs_f64(rounds * self.calls_per_company() * self.latency_ms as f64 / 1000.0)
    }
    fn ratio(&self) -> f64 {
        self.wall.as_secs_f64() / self.ideal().as_secs_f64()
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let counts = if counts.is_empty() {
        vec![1000, 10_000]
    } else {
        counts
    };
    let latency_ms = env_u64("BENCH_LATENCY_MS", 20);
    let concurrency = env_u64("BENCH_CONCURRENCY", 16) as usize;
    let mut rows = Vec::new();
    for n in counts {
        let f = run(n, latency_ms, concurrency).await;
        eprintln!(
            "N={n}: wall {:.2} s (daemon {:.2} s), ideal {:.2} s, ratio {:.2}, {:.2} calls/company ({:.2} reads, {:.2} writes), {} token calls, peak in flight {}, RSS {:.1} MiB before / peak {:.1} MiB (seeding took {:.1} s)",
            f.wall.as_secs_f64(),
            f.daemon_secs,
            f.ideal().as_secs_f64(),
            f.ratio(),
            f.calls_per_company(),
            f.reads as f64 / n as f64,
            f.writes as f64 / n as f64,
            f.token_calls,
            f.peak_in_flight,
            f.rss_before_kib as f64 / 1024.0,
            f.hwm_kib as f64 / 1024.0,
            f.seed.as_secs_f64(),
        );
        rows.push(f);
    }
    println!("| companies | max_concurrent_companies | latency | calls/company (reads + writes) | metered reads/company | wall | ideal | ratio | peak RSS |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for f in &rows {
        println!(
            "| {} | {} | {} ms | {:.2} ({:.2} + {:.2}) | {:.2} | {:.2} s | {:.2} s | {:.2} | {:.1} MiB |",
            f.companies,
            f.concurrency,
            f.latency_ms,
            f.calls_per_company(),
            f.reads as f64 / f.companies as f64,
            f.writes as f64 / f.companies as f64,
            f.reads as f64 / f.companies as f64,
            f.wall.as_secs_f64(),
            f.ideal().as_secs_f64(),
            f.ratio(),
            f.hwm_kib as f64 / 1024.0,
        );
    }
}

async fn run(n: usize, latency_ms: u64, concurrency: usize) -> Figures {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let socket = dir.path().join("control.sock");
    let intuit = FakeIntuit::start(FakeIntuitConfig {
        record_requests: false,
        concurrency_cap: None,
        latency: Duration::ZERO,
        ..FakeIntuitConfig::default()
    })
    .await;

    // Seed: companies at the fake, the same companies and their tokens in the store.
    let t_seed = Instant::now();
    let store = Store::open(&data, &data.join("identity.txt")).expect("open store");
    let now = Utc::now();
    let expired = std::env::var("BENCH_EXPIRED_TOKENS").is_ok_and(|v| v == "1");
    let eur_usd = vec![Currency::new("EUR").unwrap(), Currency::new("USD").unwrap()];
    for i in 0..n {
        let r = realm(i);
        let (at, rt) = intuit.add_connected_company(CompanySpec::new(&r, format!("Bench Co {i}")));
        let expiry = TokenExpiry {
            access_expires_at: if expired {
                now - chrono::Duration::hours(20)
            } else {
                now + chrono::Duration::hours(1)
            },
            refresh_expires_at: now + chrono::Duration::days(100),
            hard_expires_at: None,
            refreshed_at: now,
        };
        let company = Company {
            realm_id: r.clone(),
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
            active_currencies: eur_usd.clone(),
            currencies_checked_at: Some(now),
            drift: DriftPolicy::default(),
        };
        let tokens = TokenSet {
            access_token: at,
            refresh_token: rt,
            expiry,
        };
        store
            .save_company_and_tokens(&company, &tokens)
            .await
            .expect("save");
    }
    let html = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(PAGE))
        .expect("fixture page");
    let page = parse_page(&html).expect("parse fixture");
    let source = FixingSource::Page {
        url: "https://www.bankofalbania.org/Tregjet/Kursi_zyrtar_i_kembimit/".into(),
        sha256: "bench".into(),
        fetched_at: now,
    };
    for t in &page.tables {
        store.put_table(t, &source, now).expect("put table");
    }
    store.flush().await.expect("flush");
    drop(store);
    let seed = t_seed.elapsed();

    // The daemon.
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\
             [storage]\ndata_dir = \"{data}\"\n\
             [control]\nsocket = \"{sock}\"\n\
             [quickbooks]\nclient_id = \"{cid}\"\nclient_secret = \"{cs}\"\n\
             redirect_uri = \"http://127.0.0.1:9/api/v1/oauth/callback\"\n\
             authorize_url = \"{au}\"\ntoken_url = \"{tu}\"\nrevoke_url = \"{ru}\"\napi_base = \"{api}\"\n\
             max_concurrent_companies = {concurrency}\ntimeout_secs = 30\n\
             [boa]\nurl = \"http://127.0.0.1:9/\"\n\
             [schedule]\nenabled = false\n\
             [log]\nlevel = \"{log}\"\n",
            data = data.display(),
            sock = socket.display(),
            cid = intuit.client_id(),
            cs = intuit.client_secret(),
            au = intuit.authorize_url(),
            tu = intuit.token_url(),
            ru = intuit.revoke_url(),
            api = intuit.api_base(),
            log = std::env::var("BENCH_LOG").unwrap_or_else(|_| "info".into()),
        ),
    )
    .expect("write config");
    let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log file");
    // BENCH_WRAPPER (e.g. "heaptrack -o /tmp/ht") runs the daemon under a profiler.
    let wrapper: Vec<String> = std::env::var("BENCH_WRAPPER")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let mut cmd = match wrapper.split_first() {
        Some((prog, args)) => {
            let mut c = Command::new(prog);
            c.args(args).arg(BIN);
            c
        }
        None => Command::new(BIN),
    };
    let mut child = cmd
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("ADMIN_API_KEY")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn daemon");
    wait_ready(&socket, &mut child, dir.path());
    // The daemon's own pid (not a wrapper's).
    let pid = control(&socket, "status", json!({}))["data"]["pid"]
        .as_u64()
        .map_or(child.id(), |p| p as u32);
    let rss_before_kib = proc_status_kib(pid, "VmRSS:");

    intuit.set_latency(Duration::from_millis(latency_ms));
    // RSS over the run (to tell steady growth from a peak at the end).
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            let t0 = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                samples.push((t0.elapsed(), proc_status_kib(pid, "VmRSS:")));
                std::thread::sleep(Duration::from_millis(250));
            }
            samples
        })
    };
    let t0 = Instant::now();
    let answer = control(&socket, "sync_all", json!({"date": DATE}));
    let wall = t0.elapsed();
    let hwm_kib = proc_status_kib(pid, "VmHWM:");
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap_or_default();
    let step = (samples.len() / 10).max(1);
    eprintln!(
        "N={n}: RSS during the run (s: MiB): {}",
        samples
            .iter()
            .step_by(step)
            .chain(samples.last())
            .map(|(t, k)| format!("{:.0}: {:.1}", t.as_secs_f64(), *k as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    intuit.set_latency(Duration::ZERO);

    let data_answer = &answer["data"];
    let ok = answer["ok"] == true
        && data_answer["successful"].as_u64() == Some(n as u64)
        && data_answer["failed"].as_u64() == Some(0);
    let sample = [0, n / 2, n - 1];
    let rates_ok = sample.iter().all(|&i| {
        let d = NaiveDate::from_str(DATE).unwrap();
        intuit.exchange_rate(&realm(i), "EUR", d).map(|r| r.rate) == Decimal::from_str("95.40").ok()
            && intuit.exchange_rate(&realm(i), "USD", d).map(|r| r.rate)
                == Decimal::from_str("82.24").ok()
    });
    let figures = Figures {
        companies: n,
        concurrency,
        latency_ms,
        wall,
        daemon_secs: data_answer["duration_secs"].as_f64().unwrap_or(0.0),
        reads: intuit.total_reads(),
        writes: intuit.total_writes(),
        token_calls: intuit.token_calls(),
        peak_in_flight: intuit.peak_in_flight_total(),
        rss_before_kib,
        hwm_kib,
        seed,
    };
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let _ = child.wait();
    if !ok || !rates_ok {
        let mut summary = answer.clone();
        if let Some(r) = summary["data"]["results"].as_array_mut() {
            r.retain(|x| x["success"] != true);
            r.truncate(5);
        }
        eprintln!("N={n}: the run was not correct (rates ok: {rates_ok}): {summary}");
        let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
        eprintln!("daemon log tail:\n{}", tail(&log, 30));
        std::process::exit(1);
    }
    figures
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn wait_ready(socket: &PathBuf, child: &mut Child, dir: &Path) {
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

fn control(socket: &Path, cmd: &str, args: Value) -> Value {
    let mut s = UnixStream::connect(socket).expect("connect control socket");
    s.set_read_timeout(Some(Duration::from_secs(3600))).ok();
    let line = json!({"cmd": cmd, "args": args}).to_string() + "\n";
    s.write_all(line.as_bytes()).expect("write");
    let mut r = BufReader::new(s);
    let mut a = String::new();
    r.read_line(&mut a).expect("read answer");
    serde_json::from_str(&a).unwrap_or_else(|e| panic!("bad answer ({e}): {}", tail(&a, 1)))
}

/// A `kB` field of /proc/PID/status.
fn proc_status_kib(pid: u32, field: &str) -> u64 {
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
