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
//! Environment: `BENCH_BIN` (another daemon binary, e.g. one with symbols for a profiler),
//! `BENCH_LATENCY_MS` (20), `BENCH_CONCURRENCY` (16, the default of
//! `quickbooks.max_concurrent_companies`), `BENCH_LOG` (the daemon's `log.level`, `info`),
//! `BENCH_EXPIRED_TOKENS=1` (every access token already expired, as on a real daily run: each
//! company's sync starts with a token refresh), `BENCH_CURRENCIES` (2: EUR and USD; up to the
//! page's 20-odd codes, SDR left out), `BENCH_FAULTS=P5XX,P429` (e.g. `0.10,0.05`: the fake
//! fails that share of accounting calls at random, half of the 5xx after processing the call;
//! 429s carry `Retry-After: 1`), `BENCH_HEALTH=N` (N timed `/health` requests before the run, 200),
//! `BENCH_HEALTH_EVERY_MS` (1000; 0: no `/health` during the run).
//!
//! Also measured (issue 15): spawn → `READY=1` (the bench listens on a `NOTIFY_SOCKET`), the
//! first `/health` (computes the company snapshot) and N more (answered from it), `/health`
//! once a second during the run, and that every company was synced and no rate was applied
//! twice (each row's SyncToken at the fake is still 0; every company since issue 23, before
//! only with faults).
//!
//! `BENCH_BACKEND` (issue 23): `sled` (the default), `postgres` or `both` (each N on sled, then
//! on PostgreSQL). For `postgres` the bench starts a throwaway PostgreSQL cluster (initdb and
//! pg_ctl from `/usr/lib/postgresql/*/bin`, benches/common/postgres.rs; `fsync` and
//! `synchronous_commit` left ON), one fresh database per run, seeds it through the same store
//! API (`Store::open_postgres`, the same calls, 64 in flight over the store's pool), and runs
//! the daemon with `[storage] backend = "postgres"`. Reported besides: the server's memory
//! (PSS of the postmaster and its backends, sampled during the run).
//! Exits non-zero when a run is incorrect (a company failed, or a wrong rate was written);
//! never when a target is missed: the figures are what they are.

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/it/support/fake_intuit/mod.rs"]
#[allow(dead_code)]
mod fake_intuit;
#[path = "common/postgres.rs"]
#[allow(dead_code)]
mod pg;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boa_exchange::boa::{parse_page, FixingSource};
use boa_exchange::currency::Currency;
use boa_exchange::store::records::{Company, Connection, DriftPolicy, TokenExpiry, TokenSet};
use boa_exchange::store::Store;
use chrono::{NaiveDate, Utc};
use common::{control, env_u64, tail, wait_ready};
use fake_intuit::{CompanySpec, FakeIntuit, FakeIntuitConfig};
use rust_decimal::Decimal;
use serde_json::{json, Value};

const BUILT_BIN: &str = env!("CARGO_BIN_EXE_boa-exchange");
const DATE: &str = "2026-05-22";
const PAGE: &str = "tests/fixtures/boa/official-rate-en-2026-05-22.html";

fn realm(i: usize) -> String {
    format!("{}", 4_620_816_365_000_000u64 + i as u64)
}

/// Which store the daemon serves from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sled,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sled => "sled",
            Backend::Postgres => "postgres",
        }
    }
}

/// One run's figures.
struct Figures {
    backend: Backend,
    /// PostgreSQL only: the server's peak PSS (postmaster and backends) sampled in the run.
    server_pss_peak_kib: u64,
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
    currencies: usize,
    writes_in_flight: usize,
    ready: Duration,
    status_first: Duration,
    health_cold: Duration,
    health_warm: Vec<Duration>,
    health_during: Vec<Duration>,
    faults: (u64, u64),
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// (median, p95, max) in ms.
fn stats(v: &[Duration]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mut v = v.to_vec();
    v.sort();
    let at = |q: f64| ms(v[((v.len() - 1) as f64 * q).round() as usize]);
    (at(0.5), at(0.95), ms(v[v.len() - 1]))
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
    /// Issue 15's bound: ceil(N / companies in flight) × (1 + ceil(writes / writes in
    /// flight)) × latency (one metered read, then the writes in rounds).
    fn bound(&self) -> Duration {
        let rounds = self.companies.div_ceil(self.concurrency) as f64;
        let writes = (self.writes as f64 / self.companies as f64).ceil() as usize;
        let calls = 1 + writes.div_ceil(self.writes_in_flight.max(1));
        Duration::from_secs_f64(rounds * calls as f64 * self.latency_ms as f64 / 1000.0)
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
    let backends = match std::env::var("BENCH_BACKEND").as_deref() {
        Ok("postgres") => vec![Backend::Postgres],
        Ok("both") => vec![Backend::Sled, Backend::Postgres],
        Ok("sled") | Err(_) => vec![Backend::Sled],
        Ok(other) => {
            eprintln!("BENCH_BACKEND={other}: expected sled, postgres or both");
            std::process::exit(2);
        }
    };
    let cluster = if backends.contains(&Backend::Postgres) {
        let c = pg::Cluster::start();
        eprintln!(
            "PostgreSQL cluster on port {}: fsync = {}, synchronous_commit = {}, shared_buffers = {}",
            c.port,
            c.setting("fsync").await,
            c.setting("synchronous_commit").await,
            c.setting("shared_buffers").await,
        );
        Some(c)
    } else {
        None
    };
    let mut rows = Vec::new();
    for n in counts {
        for &backend in &backends {
            let f = run(n, latency_ms, concurrency, backend, cluster.as_ref()).await;
            let label = format!("{n} {}", backend.name());
            eprintln!(
                "N={label}: wall {:.2} s (daemon {:.2} s), ideal {:.2} s, ratio {:.2}, {:.2} calls/company ({:.2} reads, {:.2} writes), {} token calls, peak in flight {}, RSS {:.1} MiB before / peak {:.1} MiB (seeding took {:.1} s)",
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
            let (hw_med, hw_p95, hw_max) = stats(&f.health_warm);
            let (hd_med, _, hd_max) = stats(&f.health_during);
            eprintln!(
                "N={label}: {} currencies, READY {:.0} ms, first status (computes the snapshot) {:.0} ms, /health first {:.1} ms, then median {:.2} / p95 {:.2} / max {:.2} ms ({} requests), during the run median {:.1} / max {:.1} ms ({} requests); bound {:.2} s, wall/bound {:.2}; random faults injected: {} 5xx, {} 429",
                f.currencies,
                ms(f.ready),
                ms(f.status_first),
                ms(f.health_cold),
                hw_med,
                hw_p95,
                hw_max,
                f.health_warm.len(),
                hd_med,
                hd_max,
                f.health_during.len(),
                f.bound().as_secs_f64(),
                f.wall.as_secs_f64() / f.bound().as_secs_f64(),
                f.faults.0,
                f.faults.1,
            );
            rows.push(f);
        }
    }
    println!("| backend | companies | currencies | max_concurrent_companies | latency | calls/company (reads + writes) | wall | bound | wall/bound | peak RSS | server PSS (peak) | READY | /health first / median | /health during (median / max) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for f in &rows {
        let (hw_med, _, _) = stats(&f.health_warm);
        let (hd_med, _, hd_max) = stats(&f.health_during);
        println!(
            "| {} | {} | {} | {} | {} ms | {:.2} ({:.2} + {:.2}) | {:.2} s | {:.2} s | {:.2} | {:.1} MiB | {} | {:.0} ms | {:.1} / {:.2} ms | {:.1} / {:.1} ms ({}) |",
            f.backend.name(),
            f.companies,
            f.currencies,
            f.concurrency,
            f.latency_ms,
            f.calls_per_company(),
            f.reads as f64 / f.companies as f64,
            f.writes as f64 / f.companies as f64,
            f.wall.as_secs_f64(),
            f.bound().as_secs_f64(),
            f.wall.as_secs_f64() / f.bound().as_secs_f64(),
            f.hwm_kib as f64 / 1024.0,
            if f.backend == Backend::Postgres {
                format!("{:.1} MiB", f.server_pss_peak_kib as f64 / 1024.0)
            } else {
                "—".to_string()
            },
            ms(f.ready),
            ms(f.health_cold),
            hw_med,
            hd_med,
            hd_max,
            f.health_during.len(),
        );
    }
}

async fn run(
    n: usize,
    latency_ms: u64,
    concurrency: usize,
    backend: Backend,
    cluster: Option<&pg::Cluster>,
) -> Figures {
    let label = format!("{n} {}", backend.name());
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

    let html = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(PAGE))
        .expect("fixture page");
    let page = parse_page(&html).expect("parse fixture");
    // EUR and USD first (their rates are checked), then the page's other codes.
    let mut codes: Vec<String> = vec!["EUR".into(), "USD".into()];
    for t in &page.tables {
        for r in &t.rates {
            let c = r.code.as_str().to_string();
            if c != "SDR" && c != "ALL" && !codes.contains(&c) {
                codes.push(c);
            }
        }
    }
    let n_cur = (env_u64("BENCH_CURRENCIES", 2) as usize).clamp(1, codes.len());
    codes.truncate(n_cur);
    let currencies: Vec<Currency> = codes.iter().map(|c| Currency::new(c).unwrap()).collect();

    // Seed: companies at the fake, the same companies and their tokens in the store (many
    // saves in flight: each flushes, and concurrent flushes share sled's fsync).
    let t_seed = Instant::now();
    let identity = dir.path().join("identity.txt");
    let pg_url = match cluster {
        Some(c) if backend == Backend::Postgres => Some(c.fresh_db().await),
        _ => None,
    };
    let store = Arc::new(match &pg_url {
        Some(url) => Store::open_postgres(url, &identity)
            .await
            .expect("open the PostgreSQL store"),
        None => Store::open_sled(&data, &data.join("identity.txt")).expect("open store"),
    });
    let now = Utc::now();
    let expired = std::env::var("BENCH_EXPIRED_TOKENS").is_ok_and(|v| v == "1");
    // sled: 64 saves in flight (concurrent flushes share its fsync). PostgreSQL: 4 (chosen
    // when more deadlocked on the trigger's count rows, fixed since by schema 3; the figures
    // in BENCHMARKS.md were seeded so; `BENCH_SEED_IN_FLIGHT`).
    let seed_in_flight = env_u64(
        "BENCH_SEED_IN_FLIGHT",
        if backend == Backend::Postgres { 4 } else { 64 },
    ) as usize;
    let mut saves = tokio::task::JoinSet::new();
    for i in 0..n {
        let r = realm(i);
        let mut spec = CompanySpec::new(&r, format!("Bench Co {i}"));
        spec.active_currencies = codes.clone();
        let (at, rt) = intuit.add_connected_company(spec);
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
            active_currencies: currencies.clone(),
            currencies_checked_at: Some(now),
            drift: DriftPolicy::default(),
        };
        let tokens = TokenSet {
            access_token: at,
            refresh_token: rt,
            expiry,
        };
        if saves.len() >= seed_in_flight {
            saves.join_next().await.expect("a save").expect("save task");
        }
        let store = store.clone();
        saves.spawn(async move { pg::save_retrying(&store, &company, &tokens).await });
    }
    while let Some(r) = saves.join_next().await {
        r.expect("save task");
    }
    let source = FixingSource::Page {
        url: "https://www.bankofalbania.org/Tregjet/Kursi_zyrtar_i_kembimit/".into(),
        sha256: "bench".into(),
        fetched_at: now,
    };
    for t in &page.tables {
        store.put_table(t, &source, now).await.expect("put table");
    }
    store.flush().await.expect("flush");
    drop(store);
    let seed = t_seed.elapsed();
    eprintln!(
        "N={label}: seeded in {:.1} s, {seed_in_flight} saves in flight ({} tried again after a deadlock, {} after the pool's 5 s wait)",
        seed.as_secs_f64(),
        pg::DEADLOCK_RETRIES.swap(0, Ordering::Relaxed),
        pg::POOL_WAIT_RETRIES.swap(0, Ordering::Relaxed)
    );

    // The daemon.
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\
             [storage]\ndata_dir = \"{data}\"\n{pg}\
             [control]\nsocket = \"{sock}\"\n\
             [quickbooks]\nclient_id = \"{cid}\"\nclient_secret = \"{cs}\"\n\
             redirect_uri = \"http://127.0.0.1:9/api/v1/oauth/callback\"\n\
             authorize_url = \"{au}\"\ntoken_url = \"{tu}\"\nrevoke_url = \"{ru}\"\napi_base = \"{api}\"\n\
             max_concurrent_companies = {concurrency}\ntimeout_secs = 30\n\
             writes_in_flight_per_company = {wif}\n\
             [boa]\nurl = \"http://127.0.0.1:9/\"\n\
             [schedule]\nenabled = false\n\
             [log]\nlevel = \"{log}\"\n",
            data = data.display(),
            pg = match &pg_url {
                Some(url) => format!(
                    "backend = \"postgres\"\npostgres_url = \"{url}\"\nidentity_file = \"{}\"\n",
                    identity.display()
                ),
                None => String::new(),
            },
            sock = socket.display(),
            cid = intuit.client_id(),
            cs = intuit.client_secret(),
            au = intuit.authorize_url(),
            tu = intuit.token_url(),
            ru = intuit.revoke_url(),
            api = intuit.api_base(),
            log = std::env::var("BENCH_LOG").unwrap_or_else(|_| "info".into()),
            wif = env_u64("BENCH_WRITES_IN_FLIGHT", 4),
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
    // BENCH_BIN runs another build of the daemon (e.g. one with symbols, for a profiler).
    let bin = std::env::var("BENCH_BIN").unwrap_or_else(|_| BUILT_BIN.to_string());
    let mut cmd = match wrapper.split_first() {
        Some((prog, args)) => {
            let mut c = Command::new(prog);
            c.args(args).arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    // READY=1 arrives on our NOTIFY_SOCKET once the store is open and both listeners bound.
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    notify.set_read_timeout(Some(Duration::from_secs(120))).ok();
    let t_spawn = Instant::now();
    let mut child = cmd
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .env("NOTIFY_SOCKET", &notify_path)
        .env_remove("ADMIN_API_KEY")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn daemon");
    let mut buf = [0u8; 4096];
    let ready = loop {
        let len = notify.recv(&mut buf).expect("READY=1 within 120 s");
        if String::from_utf8_lossy(&buf[..len])
            .lines()
            .any(|l| l == "READY=1")
        {
            break t_spawn.elapsed();
        }
    };
    // The first `status` computes the company snapshot (a scan of every record).
    let t = Instant::now();
    wait_ready(&socket, &mut child, dir.path());
    let status_first = t.elapsed();
    let http: std::net::SocketAddr = control(&socket, "status", json!({}))["data"]["http_listen"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("http_listen in status");
    // /health: the first computes the snapshot, the next ones are answered from it.
    let t = Instant::now();
    let h = health(http);
    let health_cold = t.elapsed();
    assert_eq!(h["total_companies"].as_u64(), Some(n as u64), "{h}");
    let health_warm: Vec<Duration> = (0..env_u64("BENCH_HEALTH", 200))
        .map(|_| {
            let t = Instant::now();
            health(http);
            t.elapsed()
        })
        .collect();
    // The daemon's own pid (not a wrapper's).
    let pid = control(&socket, "status", json!({}))["data"]["pid"]
        .as_u64()
        .map_or(child.id(), |p| p as u32);
    let rss_before_kib = proc_status_kib(pid, "VmRSS:");

    intuit.set_latency(Duration::from_millis(latency_ms));
    let faults: Option<(f64, f64)> = std::env::var("BENCH_FAULTS").ok().and_then(|v| {
        let (a, b) = v.split_once(',')?;
        Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
    });
    if let Some((p5xx, p429)) = faults {
        intuit.set_retry_after(Some(Duration::from_secs(1)));
        intuit.set_random_api_faults(p5xx, p429, 0x5eed_1234);
    }
    // RSS over the run (to tell steady growth from a peak at the end), and /health once a
    // second (every company write invalidates the snapshot, so these recompute).
    let stop = Arc::new(AtomicBool::new(false));
    let health_every = Duration::from_millis(env_u64("BENCH_HEALTH_EVERY_MS", 1000));
    let postmaster = match cluster {
        Some(c) if backend == Backend::Postgres => c.postmaster_pid(),
        _ => 0,
    };
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            let mut during = Vec::new();
            let mut pss_peak = 0u64;
            let t0 = Instant::now();
            let mut next_health = health_every;
            let mut next_pss = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                samples.push((t0.elapsed(), proc_status_kib(pid, "VmRSS:")));
                if postmaster != 0 && t0.elapsed() >= next_pss {
                    next_pss += Duration::from_secs(2);
                    pss_peak = pss_peak.max(pg::tree_pss_kib(postmaster));
                }
                if health_every > Duration::ZERO && t0.elapsed() >= next_health {
                    next_health += Duration::from_secs(1);
                    let t = Instant::now();
                    health(http);
                    during.push(t.elapsed());
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            (samples, during, pss_peak)
        })
    };
    let t0 = Instant::now();
    let answer = control(&socket, "sync_all", json!({"date": DATE}));
    let wall = t0.elapsed();
    let hwm_kib = proc_status_kib(pid, "VmHWM:");
    stop.store(true, Ordering::Relaxed);
    let (samples, health_during, server_pss_peak_kib) = sampler.join().unwrap_or_default();
    let faults_injected = intuit.random_faults_injected();
    intuit.set_random_api_faults(0.0, 0.0, 0);
    let step = (samples.len() / 10).max(1);
    eprintln!(
        "N={label}: RSS during the run (s: MiB): {}",
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
    // Every rate applied exactly once: each company has one row per currency for the date,
    // and none was updated after it was created (SyncToken 0). Checked on every company (a
    // retry must never apply a write twice; cheap: the fake's rows are in memory).
    let d = NaiveDate::from_str(DATE).unwrap();
    let check: Vec<usize> = (0..n).collect();
    let mut duplicates = 0usize;
    let mut missing = 0usize;
    for &i in &check {
        let rows: Vec<_> = intuit
            .exchange_rates(&realm(i))
            .into_iter()
            .filter(|r| r.date == d)
            .collect();
        missing += n_cur.saturating_sub(rows.len());
        duplicates += rows.iter().filter(|r| r.sync_token != "0").count();
    }
    eprintln!(
        "N={label}: checked {} companies at the fake: {missing} rates missing, {duplicates} applied more than once",
        check.len()
    );
    let rates_ok = rates_ok && missing == 0 && duplicates == 0;
    let figures = Figures {
        backend,
        server_pss_peak_kib,
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
        currencies: n_cur,
        writes_in_flight: env_u64("BENCH_WRITES_IN_FLIGHT", 4) as usize,
        ready,
        status_first,
        health_cold,
        health_warm,
        health_during,
        faults: faults_injected,
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
        eprintln!("N={label}: the run was not correct (rates ok: {rates_ok}): {summary}");
        let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
        eprintln!("daemon log tail:\n{}", tail(&log, 30));
        std::process::exit(1);
    }
    figures
}

/// `GET /health` over a fresh connection; the answer's JSON.
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
