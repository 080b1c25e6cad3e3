//! Import benchmark (issue 11; results in BENCHMARKS.md): `import-connections` of N
//! connections (default 1000) against the fake Intuit at a fixed latency per call (100 ms
//! by default), through the real CLI and the real daemon (bench profile).
//!
//! 1. starts the fake Intuit (no request log, no per-realm cap, no latency while seeding) and
//!    mints N grants "made by another deployment" (ALL-home companies, EUR and USD active);
//! 2. writes them as a JSON Lines file (plain `refresh_token`), starts the daemon on an empty
//!    data dir with `max_concurrent_companies = BENCH_CONCURRENCY` (16);
//! 3. sets the latency and times `boa-exchange --json import-connections FILE`;
//! 4. reports the wall time against the latency-bound ideal
//!    ceil(N / concurrency) × calls per company × latency (calls = token + API calls made).
//!
//! Environment: `BENCH_LATENCY_MS` (100), `BENCH_CONCURRENCY` (16). Exits non-zero when a
//! run is incorrect (not every line imported).

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/it/support/fake_intuit/mod.rs"]
#[allow(dead_code)]
mod fake_intuit;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::env_u64;
use fake_intuit::{CompanySpec, FakeIntuit, FakeIntuitConfig};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_boa-exchange");

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    let latency_ms = env_u64("BENCH_LATENCY_MS", 100);
    let concurrency = env_u64("BENCH_CONCURRENCY", 16) as usize;
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
    let file = dir.path().join("companies.jsonl");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).expect("file"));
        for i in 0..n {
            let realm = format!("{}", 4_620_816_365_000_000u64 + i as u64);
            let mut spec = CompanySpec::new(&realm, format!("Import Co {i}"));
            spec.active_currencies = vec!["EUR".into(), "USD".into()];
            let rt = intuit.grant_from_other_deployment(spec);
            writeln!(f, "{}", json!({"company_id": realm, "refresh_token": rt})).expect("write");
        }
    }
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"{}\"\n[control]\nsocket = \"{}\"\n\
             [quickbooks]\nclient_id = \"{}\"\nclient_secret = \"{}\"\n\
             redirect_uri = \"http://127.0.0.1:9/api/v1/oauth/callback\"\n\
             authorize_url = \"{}\"\ntoken_url = \"{}\"\nrevoke_url = \"{}\"\napi_base = \"{}\"\n\
             max_concurrent_companies = {concurrency}\ntimeout_secs = 30\n\
             [boa]\nurl = \"http://127.0.0.1:9/\"\n[schedule]\nenabled = false\n[log]\nlevel = \"warn\"\n",
            data.display(),
            socket.display(),
            intuit.client_id(),
            intuit.client_secret(),
            intuit.authorize_url(),
            intuit.token_url(),
            intuit.revoke_url(),
            intuit.api_base(),
        ),
    )
    .expect("config");
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn daemon");
    wait_ready(&socket);
    intuit.set_latency(Duration::from_millis(latency_ms));
    let (calls_before, reads_before) = (intuit.token_calls(), intuit.total_reads());
    let t0 = Instant::now();
    let out = Command::new(BIN)
        .arg("--socket")
        .arg(&socket)
        .arg("--json")
        .arg("import-connections")
        .arg(&file)
        .output()
        .expect("run cli");
    let wall = t0.elapsed();
    intuit.set_latency(Duration::ZERO);
    let _ = child.kill();
    let _ = child.wait();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    if v["imported"].as_u64() != Some(n as u64) {
        eprintln!(
            "the run was not correct: {} / {}",
            String::from_utf8_lossy(&out.stdout)
                .chars()
                .take(2000)
                .collect::<String>(),
            String::from_utf8_lossy(&out.stderr)
        );
        std::process::exit(1);
    }
    let calls = (intuit.token_calls() - calls_before) + (intuit.total_reads() - reads_before);
    let per = calls as f64 / n as f64;
    let ideal = n.div_ceil(concurrency) as f64 * per * latency_ms as f64 / 1000.0;
    eprintln!(
        "N={n}: wall {:.2} s, ideal {ideal:.2} s, {per:.2} calls/company",
        wall.as_secs_f64()
    );
    println!("| connections | max_concurrent_companies | latency | calls/connection | wall | ideal | ratio |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {n} | {concurrency} | {latency_ms} ms | {per:.2} | {:.2} s | {ideal:.2} s | {:.2} |",
        wall.as_secs_f64(),
        wall.as_secs_f64() / ideal
    );
}

fn wait_ready(socket: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(mut s) = UnixStream::connect(socket) {
            let _ = s.write_all(b"{\"cmd\":\"status\"}\n");
            let mut a = String::new();
            if BufReader::new(s).read_line(&mut a).is_ok() && a.contains("\"ok\":true") {
                return;
            }
        }
        assert!(Instant::now() < deadline, "daemon not ready in 120 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}
