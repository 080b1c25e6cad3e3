//! A fake Bank of Albania web site for integration tests.
//!
//! Follows reqwest's `tests/support/server`: a hyper 1 server on `127.0.0.1:0`, run on its
//! own thread and runtime (so it serves whatever runtime flavour the test uses), torn down on
//! `Drop`; a panic in a handler fails the test when the fake is dropped. It serves the real
//! captures byte for byte:
//! - the rate page at the Albanian and the English path (default: the 2026-05-22 capture),
//! - the workbook archive index at `/Markets/Official_exchange_rate/Exchage_rate_archive/`,
//! - the 2024 workbook at `/rc/doc/Kursi_i_kembimit_2024_29746.xlsx` (the index links it).
//!
//! Scriptable: [`FakeBoa::set_page`], [`FakeBoa::set_mode`], [`FakeBoa::fail_next`]; and it
//! records what clients sent: [`FakeBoa::requests`], [`FakeBoa::user_agents`],
//! [`FakeBoa::paths`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

/// The Albanian page path (the daemon's default URL).
pub const PAGE_PATH: &str = "/Tregjet/Kursi_zyrtar_i_kembimit/";
/// The English page path (where the captures come from).
pub const ENGLISH_PAGE_PATH: &str = "/Markets/Official_exchange_rate/";
/// The workbook archive index (the site's own spelling).
pub const ARCHIVE_PATH: &str = "/Markets/Official_exchange_rate/Exchage_rate_archive/";
/// The 2024 workbook, as linked from the index.
pub const WORKBOOK_2024_PATH: &str = "/rc/doc/Kursi_i_kembimit_2024_29746.xlsx";

/// The real captures, read from `tests/fixtures/boa/`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/boa/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The Friday 2026-05-22 capture (the default page).
pub const FRIDAY: &str = "official-rate-en-2026-05-22.html";
/// The Sunday capture that still shows Friday's fixing.
pub const SUNDAY: &str = "official-rate-en-2026-05-24-sunday-shows-2026-05-22.html";
/// The archive index capture.
pub const ARCHIVE_INDEX: &str = "exchange-rate-archive-index-en-2026-05-24.html";
/// The real 2024 workbook.
pub const WORKBOOK_2024: &str = "archive-2024.xlsx";

/// How the fake answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Serve the content.
    Ok,
    /// Answer every request with this status (e.g. 503 as Cloudflare does).
    Status(u16),
    /// Wait this long before answering (to trip client timeouts).
    Slow(Duration),
    /// Serve the page cut in the middle of the main table (a complete HTTP answer whose
    /// HTML is cut short, as a broken upstream would send it).
    Truncated,
    /// Serve a redesigned page: same data, no tables at all.
    ChangedLayout,
}

/// Scripted behaviour and recorded requests, shared with the server thread.
struct State {
    page: Vec<u8>,
    archive_index: Vec<u8>,
    workbook: Vec<u8>,
    mode: Mode,
    fail_next: u32,
    fail_status: u16,
    requests: usize,
    user_agents: Vec<String>,
    paths: Vec<String>,
    panic: Option<String>,
}

/// The running fake site. Dropping it stops the server.
pub struct FakeBoa {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl FakeBoa {
    /// Binds `127.0.0.1:0` and serves until dropped.
    pub async fn start() -> FakeBoa {
        let state = Arc::new(Mutex::new(State {
            page: fixture(FRIDAY),
            archive_index: fixture(ARCHIVE_INDEX),
            workbook: fixture(WORKBOOK_2024),
            mode: Mode::Ok,
            fail_next: 0,
            fail_status: 503,
            requests: 0,
            user_agents: Vec::new(),
            paths: Vec::new(),
            panic: None,
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local addr");
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let thread_state = state.clone();
        let thread = thread::Builder::new()
            .name(format!("fake-boa-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("fake BoA runtime");
                rt.block_on(serve(listener, thread_state, shutdown_rx));
                // Dropping the runtime cancels connections still open (e.g. a Slow answer).
            })
            .expect("spawn fake BoA thread");
        FakeBoa {
            addr,
            state,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    /// Where the fake listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The rate page URL, Albanian path (the daemon's default path).
    pub fn url(&self) -> String {
        format!("http://{}{PAGE_PATH}", self.addr)
    }

    /// The rate page URL, English path.
    pub fn english_url(&self) -> String {
        format!("http://{}{ENGLISH_PAGE_PATH}", self.addr)
    }

    /// The workbook archive index URL.
    pub fn archive_url(&self) -> String {
        format!("http://{}{ARCHIVE_PATH}", self.addr)
    }

    /// The 2024 workbook URL.
    pub fn workbook_url(&self) -> String {
        format!("http://{}{WORKBOOK_2024_PATH}", self.addr)
    }

    /// Serves these bytes as the rate page from now on.
    pub fn set_page(&self, bytes: impl Into<Vec<u8>>) {
        self.state.lock().unwrap().page = bytes.into();
    }

    /// Changes how every following request is answered.
    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    /// Answers the next `n` requests (any path) with `status`, then goes back to the mode.
    pub fn fail_next(&self, n: u32, status: u16) {
        let mut s = self.state.lock().unwrap();
        s.fail_next = n;
        s.fail_status = status;
    }

    /// How many requests arrived (any path).
    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().requests
    }

    /// The User-Agent of each request, in order (empty when none was sent).
    pub fn user_agents(&self) -> Vec<String> {
        self.state.lock().unwrap().user_agents.clone()
    }

    /// The path of each request, in order.
    pub fn paths(&self) -> Vec<String> {
        self.state.lock().unwrap().paths.clone()
    }
}

impl Drop for FakeBoa {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let panic = self
            .state
            .lock()
            .map(|mut s| s.panic.take())
            .unwrap_or(None);
        if let Some(msg) = panic {
            if !thread::panicking() {
                panic!("fake BoA handler panicked: {msg}");
            }
        }
    }
}

/// The accept loop: one task per connection, until shutdown.
async fn serve(
    listener: std::net::TcpListener,
    state: Arc<Mutex<State>>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(state.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}

/// Records the request, decides the answer (panics caught and recorded), then waits if Slow.
async fn answer(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let planned = catch_unwind(AssertUnwindSafe(|| plan(&state, &req)));
    let (delay, response) = match planned {
        Ok(p) => p,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            if let Ok(mut s) = state.lock() {
                s.panic.get_or_insert(msg);
            }
            (Duration::ZERO, status_only(500))
        }
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    Ok(response)
}

/// The answer to one request, by path and scripted state.
fn plan(state: &Mutex<State>, req: &Request<Incoming>) -> (Duration, Response<Full<Bytes>>) {
    let mut s = state.lock().unwrap();
    s.requests += 1;
    let ua = req
        .headers()
        .get(hyper::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    s.user_agents.push(ua);
    let path = req.uri().path().to_string();
    s.paths.push(path.clone());

    if s.fail_next > 0 {
        s.fail_next -= 1;
        return (Duration::ZERO, status_only(s.fail_status));
    }
    let delay = match s.mode {
        Mode::Status(code) => return (Duration::ZERO, status_only(code)),
        Mode::Slow(d) => d,
        _ => Duration::ZERO,
    };
    let response = match path.as_str() {
        PAGE_PATH | ENGLISH_PAGE_PATH => {
            let body = match s.mode {
                Mode::Truncated => truncated(&s.page),
                Mode::ChangedLayout => changed_layout(&s.page),
                _ => s.page.clone(),
            };
            content("text/html; charset=utf-8", body)
        }
        ARCHIVE_PATH => content("text/html; charset=utf-8", s.archive_index.clone()),
        WORKBOOK_2024_PATH => content(
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            s.workbook.clone(),
        ),
        _ => status_only(404),
    };
    (delay, response)
}

fn content(content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::OK)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .header(hyper::header::SERVER, "cloudflare")
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}

fn status_only(code: u16) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(code).expect("valid status code");
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(Full::new(Bytes::from(format!(
            "<html><body><h1>{code}</h1></body></html>"
        ))))
        .expect("response")
}

/// The page cut just before the JPY row of the main table (or in half).
fn truncated(page: &[u8]) -> Vec<u8> {
    let needle = b">JPY<";
    let cut = page
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or(page.len() / 2);
    page[..cut].to_vec()
}

/// The same page with every table turned into divs and spans.
fn changed_layout(page: &[u8]) -> Vec<u8> {
    let mut html = String::from_utf8_lossy(page).into_owned();
    for (from, to) in [
        ("<TABLE", "<div class=\"rates-grid\""),
        ("</TABLE>", "</div>"),
        ("<thead", "<div"),
        ("</thead>", "</div>"),
        ("<TR>", "<div class=\"rate-row\">"),
        ("</TR>", "</div>"),
        ("<TD", "<span"),
        ("</TD>", "</span>"),
        ("<td", "<span"),
        ("</td>", "</span>"),
        ("<th", "<span"),
        ("</th >", "</span>"),
        ("</th>", "</span>"),
    ] {
        html = html.replace(from, to);
    }
    html.into_bytes()
}
