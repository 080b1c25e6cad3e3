//! `boa-exchange demo [--port N] [--once]` (SPEC §11): the whole product offline. Starts the
//! [`sandbox`] (the real BoA capture and a QuickBooks stand-in) on loopback, runs the real
//! daemon (`app::run`, as `serve` does) against it with a throwaway data folder and a clock
//! set to the capture's fixing day, connects three sample companies through the real OAuth
//! redirect flow, runs a sync-all for 2026-05-22, prints what was written, then keeps serving
//! until SIGINT/SIGTERM (or exits with `--once`).
//!
//! It reads no config file and no environment setting, writes nothing outside its temporary
//! folder, and is the only user of the sandbox.

pub mod sandbox;

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use reqwest::header::{ACCEPT, COOKIE, LOCATION, SET_COOKIE};
use serde_json::{json, Value};

use crate::app::{self, Listeners};
use crate::cli::{EXIT_FAILED, EXIT_USAGE};
use crate::config::Config;
use crate::control::client::Client;
use crate::shutdown::{Event, Signals};
use crate::time::clock::Clock;
use sandbox::{Sandbox, COMPANIES, CONNECTED_BY_DEMO, FIXING_DATE};

/// The daemon's calendar in the demo: the capture's fixing day, 14:00 in Tirana (after the
/// 12:12 publication), moving on in real time from the demo's start.
pub struct DemoClock {
    start: DateTime<Utc>,
    at: Instant,
}

impl DemoClock {
    /// A clock showing `start` now.
    pub fn new(start: DateTime<Utc>) -> Self {
        DemoClock {
            start,
            at: Instant::now(),
        }
    }
}

impl Clock for DemoClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = chrono::Duration::from_std(self.at.elapsed()).unwrap_or_default();
        self.start + elapsed
    }

    fn sleep_until(
        &self,
        at: DateTime<Utc>,
        max: std::time::Duration,
    ) -> crate::time::clock::Sleep<'_> {
        let left = (at - self.now()).to_std().unwrap_or_default();
        Box::pin(tokio::time::sleep(left.min(max)))
    }
}

/// Friday 2026-05-22 14:00 Europe/Tirane (CEST, UTC+2).
fn demo_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 22, 12, 0, 0)
        .single()
        .unwrap_or_else(Utc::now)
}

/// Runs the demo; the process's exit code (0 ok, 1 a step failed, 2 the port is taken).
pub fn main(port: u16, once: bool) -> ExitCode {
    crate::logging::init_daemon("warn");
    match tokio::runtime::Runtime::new() {
        Ok(rt) => ExitCode::from(rt.block_on(run(port, once))),
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

async fn run(port: u16, once: bool) -> u8 {
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            eprintln!("port {port} is in use; try --port N");
            return EXIT_USAGE;
        }
        Err(e) => {
            eprintln!("cannot listen on 127.0.0.1:{port}: {e}; try --port N");
            return EXIT_USAGE;
        }
    };
    let started = Instant::now();
    match start_and_drive(listener, once, started).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("demo: {e}");
            EXIT_FAILED
        }
    }
}

async fn start_and_drive(
    listener: tokio::net::TcpListener,
    once: bool,
    started: Instant,
) -> Result<u8, String> {
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let mut signals = Signals::new().map_err(|e| format!("installing signal handlers: {e}"))?;
    let clock = Arc::new(DemoClock::new(demo_start()));
    let sandbox = Sandbox::start(clock.clone())
        .await
        .map_err(|e| format!("starting the sandbox: {e}"))?;
    let dir = tempfile::Builder::new()
        .prefix("boa-exchange-demo-")
        .tempdir()
        .map_err(|e| format!("creating a temporary data folder: {e}"))?;
    let config = config(addr, &sandbox, dir.path())?;
    let socket = config.control_socket.clone();
    crate::store::prepare_data_dir(&config.storage.data_dir).map_err(|e| format!("{e:#}"))?;
    let control = crate::control::server::bind(&socket)
        .map_err(|e| format!("binding the control socket {}: {e}", socket.display()))?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut daemon = tokio::spawn(app::run(
        config,
        Listeners {
            http: listener,
            control,
        },
        rx,
        None,
        clock,
    ));
    let base = format!("http://{addr}");

    let outcome = tokio::select! {
        r = drive(&socket, &base, &sandbox) => Some(r),
        sig = stop_signal(&mut signals) => {
            eprintln!("demo: {sig} before the demo finished; stopping");
            None
        }
        r = &mut daemon => Some(Err(match r {
            Ok(Err(e)) => format!("the daemon stopped: {e:#}"),
            _ => "the daemon stopped unexpectedly".to_string(),
        })),
    };
    let mut code = match outcome {
        None => {
            if once {
                EXIT_FAILED
            } else {
                0
            }
        }
        Some(Err(e)) => {
            eprintln!("demo: {e}");
            EXIT_FAILED
        }
        Some(Ok(report)) => {
            print!("{}", report.render());
            println!("Done in {:.1} s.", started.elapsed().as_secs_f64());
            if !once {
                println!(
                    "\nServing on {base}/ (open it in a browser; the Connect button connects one more sample company).\n\
                     Admin commands: boa-exchange --socket {} status   (or: companies, rates, sync --all --date {FIXING_DATE})\n\
                     Press Ctrl-C to stop; the temporary data folder is then deleted.",
                    socket.display()
                );
                let sig = stop_signal(&mut signals).await;
                eprintln!("demo: {sig}; stopping");
            }
            0
        }
    };
    if !daemon.is_finished() {
        let _ = tx.send(Event::Stop("demo"));
        match tokio::time::timeout(app::DRAIN_BUDGET + Duration::from_secs(5), &mut daemon).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                eprintln!("demo: the daemon stopped with an error: {e:#}");
                code = EXIT_FAILED;
            }
            _ => {
                eprintln!("demo: the daemon did not stop in time");
                code = EXIT_FAILED;
            }
        }
    }
    drop(sandbox);
    drop(dir);
    Ok(code)
}

/// The daemon's configuration: everything pointed at the sandbox, data in `dir`, the daily
/// schedule off (the demo runs the sync itself), no file and no environment read.
fn config(addr: SocketAddr, sandbox: &Sandbox, dir: &Path) -> Result<Config, String> {
    let toml = format!(
        "[server]\nlisten = \"{addr}\"\npublic_url = \"http://{addr}\"\nenrollment = \"open\"\nrate_limit_per_minute = 600\n\
         [storage]\ndata_dir = {data:?}\n\
         [control]\nsocket = {sock:?}\n\
         [quickbooks]\nclient_id = \"{cid}\"\nclient_secret = \"{cs}\"\nredirect_uri = \"http://{addr}/api/v1/oauth/callback\"\n\
         authorize_url = \"{au}\"\ntoken_url = \"{tu}\"\nrevoke_url = \"{ru}\"\napi_base = \"{api}\"\ntimeout_secs = 10\n\
         [boa]\nurl = \"{boa}\"\ntimeout_secs = 10\n\
         [schedule]\nenabled = false\n\
         [log]\nlevel = \"warn\"\n",
        data = dir.join("data").display().to_string(),
        sock = dir.join("control.sock").display().to_string(),
        cid = sandbox::CLIENT_ID,
        cs = sandbox::CLIENT_SECRET,
        au = sandbox.authorize_url(),
        tu = sandbox.token_url(),
        ru = sandbox.revoke_url(),
        api = sandbox.api_base(),
        boa = sandbox.boa_url(),
    );
    let no_env = std::collections::HashMap::<String, String>::new();
    Config::from_toml(&toml, "<demo>", None, &no_env).map_err(|e| e.to_string())
}

/// Waits for SIGINT or SIGTERM. SIGHUP would make the daemon re-read a config file the demo
/// does not have, so it is ignored.
async fn stop_signal(signals: &mut Signals) -> &'static str {
    loop {
        match signals.next().await {
            Some(Event::Stop(sig)) => return sig,
            Some(Event::Reload) => continue,
            None => return "end of signals",
        }
    }
}

async fn control(socket: &Path, cmd: &str, args: Value) -> Result<Value, String> {
    let mut client = Client::connect(socket).await.map_err(|e| e.to_string())?;
    let (_, answer) = client.call(cmd, args).await.map_err(|e| e.to_string())?;
    match (answer.ok, answer.data, answer.error) {
        (true, Some(d), _) => Ok(d),
        (true, None, _) => Ok(Value::Null),
        (false, _, Some(e)) => Err(format!("{cmd}: {} ({})", e.message, e.code)),
        (false, _, None) => Err(format!("{cmd}: failed")),
    }
}

async fn wait_ready(socket: &Path) -> Result<(), String> {
    for _ in 0..400 {
        if control(socket, "status", json!({})).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err("the daemon did not become ready within 10 s".into())
}

/// The demo's steps, each through the daemon's public interfaces: fetch, three OAuth
/// connections, a sync-all, then the report from what the sandbox received.
async fn drive(socket: &Path, base: &str, sandbox: &Sandbox) -> Result<Report, String> {
    wait_ready(socket).await?;
    println!(
        "boa-exchange demo: daemon on {base}, sandbox (BoA page + QuickBooks stand-in) on {}",
        sandbox.base()
    );
    let fetched = control(socket, "fetch", json!({})).await?;
    let dates: Vec<String> = fetched["tables"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    format!(
                        "{} {}",
                        t["table"].as_str().unwrap_or("?"),
                        t["date"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    println!(
        "Fetched the BoA page (the real capture of 22.05.2026): stored {}",
        dates.join(", ")
    );

    crate::outbound::install_crypto_provider();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))?;
    for c in &COMPANIES[..CONNECTED_BY_DEMO] {
        let answer = connect(&http, base, c.realm).await?;
        println!(
            "Connected {} (realm {}, home {}) through OAuth",
            answer["company_name"].as_str().unwrap_or(c.name),
            c.realm,
            answer["home_currency"].as_str().unwrap_or(c.home)
        );
    }
    drop(http);

    let synced = control(socket, "sync_all", json!({"date": FIXING_DATE})).await?;
    let failures: Vec<String> = synced["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["success"] != true)
        .map(|r| {
            format!(
                "{}: {}",
                r["company_id"].as_str().unwrap_or("?"),
                r["error"]["message"].as_str().unwrap_or("failed")
            )
        })
        .collect();
    if synced["success"] != true || !failures.is_empty() {
        return Err(format!(
            "sync-all for {FIXING_DATE} failed: {}",
            failures.join("; ")
        ));
    }
    println!(
        "Synced every company for {FIXING_DATE}: {} rates written",
        synced["rates_written"]
            .as_u64()
            .map(|n| n.to_string())
            .unwrap_or_else(|| { sandbox.writes().len().to_string() })
    );
    let rates = control(socket, "rates", json!({"date": FIXING_DATE})).await?;
    Ok(Report::build(sandbox, &rates))
}

/// A tiny cookie jar: (host:port, name=value), as a browser keeps them per origin.
#[derive(Default)]
struct Jar(Vec<(String, String)>);

impl Jar {
    fn origin(u: &url::Url) -> String {
        format!(
            "{}:{}",
            u.host_str().unwrap_or(""),
            u.port_or_known_default().unwrap_or(0)
        )
    }

    fn header(&self, u: &url::Url) -> String {
        let o = Self::origin(u);
        self.0
            .iter()
            .filter(|(h, _)| *h == o)
            .map(|(_, c)| c.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn store(&mut self, u: &url::Url, set_cookie: &str) {
        let Some(pair) = set_cookie.split(';').next().map(str::trim) else {
            return;
        };
        let name = pair.split('=').next().unwrap_or("");
        let o = Self::origin(u);
        self.0
            .retain(|(h, c)| !(*h == o && c.split('=').next() == Some(name)));
        self.0.push((o, pair.to_string()));
    }
}

/// One browser visit: GET with the jar's cookies; returns (status, Location, body).
async fn visit(
    http: &reqwest::Client,
    jar: &mut Jar,
    u: &url::Url,
) -> Result<(u16, Option<url::Url>, String), String> {
    let mut req = http
        .get(u.clone())
        .header(ACCEPT, "application/json, text/html;q=0.9");
    let cookies = jar.header(u);
    if !cookies.is_empty() {
        req = req.header(COOKIE, cookies);
    }
    let resp = req.send().await.map_err(|e| format!("GET {u}: {e}"))?;
    for c in resp.headers().get_all(SET_COOKIE) {
        if let Ok(c) = c.to_str() {
            jar.store(u, c);
        }
    }
    let location = resp
        .headers()
        .get(LOCATION)
        .and_then(|l| l.to_str().ok())
        .and_then(|l| u.join(l).ok());
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    Ok((status, location, body))
}

/// The browser side of a connection: the daemon's Connect → the sandbox's authorize page →
/// pick `realm` → back to the daemon's callback (following redirects, keeping cookies).
async fn connect(http: &reqwest::Client, base: &str, realm: &str) -> Result<Value, String> {
    let mut jar = Jar::default();
    let mut at =
        url::Url::parse(&format!("{base}/api/v1/oauth/connect")).map_err(|e| e.to_string())?;
    for _ in 0..6 {
        let (status, location, body) = visit(http, &mut jar, &at).await?;
        match (status, location) {
            (301 | 302 | 303 | 307, Some(next)) => at = next,
            (200, _) if at.path() == "/api/v1/oauth/callback" => {
                let v: Value = serde_json::from_str(&body)
                    .map_err(|_| format!("connecting {realm}: the callback did not answer JSON"))?;
                return if v["success"] == true {
                    Ok(v)
                } else {
                    Err(format!("connecting {realm}: {body}"))
                };
            }
            (200, _) => {
                // The authorize page: follow the link that picks this company.
                let href = body
                    .split("href=\"")
                    .skip(1)
                    .filter_map(|s| s.split('"').next())
                    .map(|h| h.replace("&amp;", "&"))
                    .find(|h| h.contains(&format!("realmId={realm}")))
                    .ok_or_else(|| {
                        format!("connecting {realm}: the authorize page does not offer it")
                    })?;
                at = at.join(&href).map_err(|e| e.to_string())?;
            }
            (s, _) => {
                return Err(format!(
                    "connecting {realm}: {} answered {s}: {}",
                    at.path(),
                    body.chars().take(300).collect::<String>()
                ))
            }
        }
    }
    Err(format!("connecting {realm}: too many redirects"))
}

/// What the demo prints: per connected company, every rate QuickBooks received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// One section per company, in connection order.
    pub companies: Vec<CompanyReport>,
}

/// One company's section of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompanyReport {
    /// The sample company.
    pub company: sandbox::SampleCompany,
    /// (currency, rate as written, BoA published, units) sorted by currency.
    pub rows: Vec<(String, String, String, String)>,
}

impl Report {
    /// Builds the report from the sandbox's writes for [`FIXING_DATE`] and the rates answer.
    fn build(sandbox: &Sandbox, rates: &Value) -> Report {
        let boa = |code: &str| -> Option<(String, String)> {
            rates["tables"].as_array()?.iter().find_map(|t| {
                t["rates"].as_array()?.iter().find_map(|r| {
                    (r["iso_code"] == code || r["code"] == code).then(|| {
                        (
                            r["published"].as_str().unwrap_or("?").to_string(),
                            r["units"].to_string(),
                        )
                    })
                })
            })
        };
        let writes = sandbox.writes();
        let companies = COMPANIES[..CONNECTED_BY_DEMO]
            .iter()
            .map(|c| {
                // The last write of a currency is what QuickBooks holds.
                let mut rows = std::collections::BTreeMap::new();
                for w in writes
                    .iter()
                    .filter(|w| w.realm == c.realm && w.date.to_string() == FIXING_DATE)
                {
                    let (published, units) = if w.currency == "ALL" {
                        let (p, _) = boa(c.home).unwrap_or_default();
                        (format!("1/{p}({})", c.home), "1".to_string())
                    } else {
                        boa(&w.currency).unwrap_or_else(|| ("?".into(), "?".into()))
                    };
                    rows.insert(w.currency.clone(), (w.rate.clone(), published, units));
                }
                let rows = rows
                    .into_iter()
                    .map(|(code, (rate, published, units))| (code, rate, published, units))
                    .collect();
                CompanyReport {
                    company: c.clone(),
                    rows,
                }
            })
            .collect();
        Report { companies }
    }

    /// The text printed on stdout.
    pub fn render(&self) -> String {
        let mut s = format!("\nRates written to QuickBooks for {FIXING_DATE}:\n");
        for c in &self.companies {
            s.push_str(&format!(
                "\n== {} (realm {}, home {}) ==\n  {:<8} {:>16} {:>18} {:>6}\n",
                c.company.name,
                c.company.realm,
                c.company.home,
                "currency",
                "QuickBooks rate",
                "BoA published",
                "units"
            ));
            for (code, rate, published, units) in &c.rows {
                s.push_str(&format!(
                    "  {code:<8} {rate:>16} {published:>18} {units:>6}\n"
                ));
            }
            if c.rows.is_empty() {
                s.push_str("  (nothing written)\n");
            }
        }
        s.push_str("\nQuickBooks rate = home-currency units per 1 unit of the currency; BoA publishes lek per `units`.\n");
        s
    }
}
