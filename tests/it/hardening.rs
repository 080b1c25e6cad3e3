//! Issue 16, black-box: the real daemon behind a reverse proxy (client addresses from
//! X-Forwarded-For only when the TCP peer is a trusted proxy), under stuck and slow clients
//! (request deadlines, the connection cap), and the security headers of its answers.
//!
//! The whole 127/8 is loopback on Linux: the daemon listens on 127.0.0.1 and the tests connect
//! from 127.0.0.2 (the trusted proxy) or other 127.x addresses (ordinary local clients).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::daemon::TestDaemon;
use crate::support::eventually::{eventually, lazy};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const PROXY: &str = "127.0.0.2";
const KEY: &str = "hardening-admin-key";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn addr(d: &TestDaemon) -> SocketAddr {
    d.http.trim_start_matches("http://").parse().unwrap()
}

/// A TCP connection to the daemon from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(from.parse().unwrap(), 0)).unwrap();
    s.connect(to).await.unwrap()
}

/// An answer: status, lower-cased headers, body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn parse_answer(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// One GET from `from` with extra header lines; the whole answer (connection closed).
async fn get(from: &str, to: SocketAddr, path: &str, extra: &[(&str, &str)]) -> Answer {
    let mut s = connect_from(from, to).await;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: rates.example\r\nConnection: close\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("answer within 10 s")
        .unwrap();
    parse_answer(&out)
}

fn proxy_daemon(extra: &str) -> TestDaemon {
    TestDaemon::start(&format!(
        "[server]\nrate_limit_per_minute = 10\ntrusted_proxies = [\"{PROXY}\", \"10.0.0.0/8\"]\nadmin_api_key = \"{KEY}\"\n{extra}\n[schedule]\nenabled = false\n"
    ))
}

#[test]
fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    let d = proxy_daemon("");
    let to = addr(&d);
    rt().block_on(async {
        // 40 clients through one proxy, one request each: none is limited (counted by the
        // proxy's address, the 11th would be).
        for i in 0..40 {
            let xff = format!("198.51.100.{i}");
            let a = get(PROXY, to, "/api/v1/rates", &[("X-Forwarded-For", &xff)]).await;
            assert_ne!(a.status, 429, "client {xff}: {a:?}");
        }

        // One client over the limit; its neighbour is not.
        for n in 0..10 {
            let a = get(
                PROXY,
                to,
                "/api/v1/rates",
                &[("X-Forwarded-For", "203.0.113.50")],
            )
            .await;
            assert_ne!(a.status, 429, "request {n}: {a:?}");
        }
        let a = get(
            PROXY,
            to,
            "/api/v1/rates",
            &[("X-Forwarded-For", "203.0.113.50")],
        )
        .await;
        assert_eq!(a.status, 429, "{a:?}");
        assert!(a.header("retry-after").is_some(), "{a:?}");
        let a = get(
            PROXY,
            to,
            "/api/v1/rates",
            &[("X-Forwarded-For", "203.0.113.51")],
        )
        .await;
        assert_ne!(a.status, 429, "the neighbour has its own window: {a:?}");

        // Addresses the client prepends are ignored: still 203.0.113.50, behind the proxy
        // chain (10.1.2.3 is a trusted proxy too).
        for xff in [
            "1.2.3.4, 203.0.113.50",
            "203.0.113.51, 203.0.113.50",
            "9.9.9.9, 203.0.113.50, 10.1.2.3",
        ] {
            let a = get(PROXY, to, "/api/v1/rates", &[("X-Forwarded-For", xff)]).await;
            assert_eq!(a.status, 429, "{xff}: {a:?}");
        }

        // IPv6 clients count per /64.
        for i in 1..=10 {
            let xff = format!("2001:db8:1:2::{i:x}");
            let a = get(PROXY, to, "/api/v1/rates", &[("X-Forwarded-For", &xff)]).await;
            assert_ne!(a.status, 429, "{xff}: {a:?}");
        }
        let a = get(
            PROXY,
            to,
            "/api/v1/rates",
            &[("X-Forwarded-For", "2001:db8:1:2:ffff::99")],
        )
        .await;
        assert_eq!(a.status, 429, "same /64: {a:?}");
        let a = get(
            PROXY,
            to,
            "/api/v1/rates",
            &[("X-Forwarded-For", "2001:db8:1:3::1")],
        )
        .await;
        assert_ne!(a.status, 429, "another /64: {a:?}");
    });
}

#[test]
fn forwarded_addresses_from_an_untrusted_peer_change_nothing() {
    let d = proxy_daemon("");
    let to = addr(&d);
    rt().block_on(async {
        // 127.0.0.3 is not a trusted proxy: every forged address counts as 127.0.0.3.
        for i in 0..10 {
            let xff = format!("192.0.2.{i}");
            let a = get(
                "127.0.0.3",
                to,
                "/api/v1/rates",
                &[("X-Forwarded-For", &xff)],
            )
            .await;
            assert_ne!(a.status, 429, "{a:?}");
        }
        let a = get(
            "127.0.0.3",
            to,
            "/api/v1/rates",
            &[("X-Forwarded-For", "192.0.2.200")],
        )
        .await;
        assert_eq!(a.status, 429, "forged XFF does not escape the limit: {a:?}");
        // …and the forged address's own budget is untouched.
        let a = get(
            PROXY,
            to,
            "/api/v1/rates",
            &[("X-Forwarded-For", "192.0.2.1")],
        )
        .await;
        assert_ne!(a.status, 429, "{a:?}");
    });
}

#[test]
fn metrics_need_the_key_through_the_proxy_but_not_from_plain_loopback() {
    let d = proxy_daemon("");
    let to = addr(&d);
    rt().block_on(async {
        let a = get(PROXY, to, "/metrics", &[("X-Forwarded-For", "127.0.0.1")]).await;
        assert_eq!(
            a.status, 401,
            "through the proxy, even claiming loopback: {a:?}"
        );
        let a = get(PROXY, to, "/metrics", &[]).await;
        assert_eq!(a.status, 401, "{a:?}");
        let bearer = format!("Bearer {KEY}");
        let a = get(PROXY, to, "/metrics", &[("Authorization", &bearer)]).await;
        assert_eq!(a.status, 200, "{a:?}");
        let a = get("127.0.0.1", to, "/metrics", &[]).await;
        assert_eq!(a.status, 200, "a local scraper needs no key: {a:?}");
        assert!(a.body.contains("# TYPE"), "{}", a.body);
    });
}

#[test]
fn answers_carry_security_headers_and_the_callback_echoes_no_error_text() {
    let d = proxy_daemon("");
    let to = addr(&d);
    rt().block_on(async {
        let from = "127.0.0.5";
        let a = get(from, to, "/", &[]).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(a.header("x-frame-options"), Some("DENY"));
        assert_eq!(
            a.header("cache-control"),
            None,
            "the landing page may be cached"
        );

        let a = get(from, to, "/health", &[]).await;
        assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(a.header("x-frame-options"), None, "JSON is not framed");

        let bearer = format!("Bearer {KEY}");
        let a = get(
            from,
            to,
            "/api/v1/companies/list",
            &[("Authorization", &bearer)],
        )
        .await;
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.header("cache-control"), Some("no-store"));
        assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
        let a = get(from, to, "/api/v1/companies/list", &[]).await;
        assert_eq!(a.status, 401);
        assert_eq!(a.header("cache-control"), Some("no-store"), "errors too");

        let a = get(
            from,
            to,
            "/api/v1/oauth/callback?state=s&error=access_denied",
            &[],
        )
        .await;
        assert_eq!(a.status, 400);
        assert_eq!(a.header("cache-control"), Some("no-store"));
        assert_eq!(a.header("x-frame-options"), Some("DENY"));
        assert!(
            a.body.contains("not authorized in QuickBooks"),
            "{}",
            a.body
        );

        let evil = format!("%3Cscript%3Ealert(1)%3C%2Fscript%3E{}", "A".repeat(3000));
        let a = get(
            from,
            to,
            &format!("/api/v1/oauth/callback?state=s&error={evil}"),
            &[],
        )
        .await;
        assert_eq!(a.status, 400);
        assert!(!a.body.contains("script"), "{}", a.body);
        assert!(!a.body.contains("AAAA"), "{}", a.body);
        assert!(a.body.contains("unknown_error"), "{}", a.body);
        let a = get(
            from,
            to,
            "/api/v1/oauth/callback?state=s&error=temporarily_unavailable",
            &[("Accept", "application/json")],
        )
        .await;
        assert_eq!(a.status, 400);
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(
            v["error"]["message"],
            "QuickBooks authorization is temporarily unavailable; try again later"
        );
    });
}

/// Waits until the daemon's log holds at least `times` lines that contain each of `parts`.
fn wait_logged(d: &TestDaemon, parts: &[&str], times: usize) {
    eventually(
        Duration::from_secs(10),
        lazy(|| format!("{times} log lines with {parts:?}: {}", d.stderr())),
        || {
            let stderr = d.stderr();
            let lines = stderr.lines();
            lines
                .filter(|l| parts.iter().all(|p| l.contains(p)))
                .count()
                >= times
        },
    );
}

/// Whether the daemon logged accepting a connection from `ip`.
fn accepted(d: &TestDaemon, ip: &str) -> bool {
    d.stderr()
        .lines()
        .any(|l| l.contains("http connection accepted") && l.contains(&format!("peer={ip}:")))
}

/// Reads until the daemon closes the connection; when that happened (`None` if it did not
/// within `within`). Whatever the daemon answered first (a 408) is returned too.
async fn closed_after(mut s: TcpStream, within: Duration) -> Option<(Instant, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((Instant::now(), out)),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn stuck_connections_are_closed_after_the_timeout_while_health_answers() {
    let d = proxy_daemon("request_timeout_secs = 2\nmax_connections = 1024");
    let to = addr(&d);
    rt().block_on(async {
        let start = Instant::now();
        let mut conns = Vec::new();
        for i in 0..300 {
            let from = format!("127.0.1.{}", i % 200 + 1);
            let mut s = connect_from(&from, to).await;
            let kind = match i % 3 {
                0 => {
                    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                        .await
                        .unwrap();
                    "mid-head"
                }
                1 => {
                    s.write_all(
                        b"PUT /api/v1/companies/1/settings HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"sync",
                    )
                    .await
                    .unwrap();
                    "mid-body"
                }
                _ => "silent",
            };
            conns.push((kind, s));
        }
        // One keep-alive connection that asks once and then idles.
        let mut idle = connect_from("127.0.0.9", to).await;
        idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = idle.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        conns.push(("keep-alive idle", idle));

        // While they are stuck, /health and the control socket answer at once.
        for _ in 0..5 {
            let t = Instant::now();
            let a = get("127.0.0.8", to, "/health", &[]).await;
            assert_eq!(a.status, 200);
            assert!(t.elapsed() < Duration::from_millis(500), "{:?}", t.elapsed());
        }
        let t = Instant::now();
        let st = d.control("status", json!({}));
        assert_eq!(st["ok"], true, "{st}");
        assert!(t.elapsed() < Duration::from_millis(500), "{:?}", t.elapsed());

        let waits: Vec<_> = conns
            .into_iter()
            .map(|(kind, s)| {
                tokio::spawn(async move { (kind, closed_after(s, Duration::from_secs(8)).await) })
            })
            .collect();
        let mut timeouts_408 = 0;
        for w in waits {
            let (kind, closed) = w.await.unwrap();
            let (at, answer) =
                closed.unwrap_or_else(|| panic!("a {kind} connection was still open after 8 s"));
            let after = at - start;
            assert!(
                after >= Duration::from_millis(1500),
                "a {kind} connection was closed too early ({after:?})"
            );
            assert!(after < Duration::from_secs(6), "{kind}: {after:?}");
            if kind == "mid-body" && answer.starts_with(b"HTTP/1.1 408") {
                timeouts_408 += 1;
            }
        }
        assert_eq!(timeouts_408, 100, "every slow body was answered 408");
    });
}

#[test]
fn connections_over_max_connections_wait_for_a_free_slot() {
    let d = proxy_daemon("request_timeout_secs = 2\nmax_connections = 4");
    let to = addr(&d);
    rt().block_on(async {
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(connect_from("127.0.0.6", to).await);
        }
        // The daemon has accepted all four: their slots are taken.
        wait_logged(&d, &["no connection slot is free (limit 4)"], 1);
        let t = Instant::now();
        let a = get("127.0.0.7", to, "/health", &[]).await;
        let waited = t.elapsed();
        assert_eq!(a.status, 200);
        assert!(
            waited >= Duration::from_millis(1300),
            "answered in {waited:?}: the fifth connection was not held back"
        );
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        // The control socket never waited for an HTTP slot.
        assert_eq!(d.control("status", json!({}))["ok"], true);
        drop(held);
    });
}

/// SPEC §3: SIGHUP applies a new `max_connections` live: a larger limit lets a waiting
/// client in at once; a smaller one holds new clients back until enough open connections
/// have closed (open ones are never cut).
#[test]
fn max_connections_changes_on_sighup() {
    let d = proxy_daemon("request_timeout_secs = 60\nmax_connections = 2");
    let to = addr(&d);
    let config = std::fs::read_to_string(d.config_path()).unwrap();
    let reload = |n: usize| {
        std::fs::write(
            d.config_path(),
            config.replace("max_connections = 2", &format!("max_connections = {n}")),
        )
        .unwrap();
        d.signal(libc::SIGHUP);
        wait_logged(&d, &[&format!("server.max_connections is now {n}")], 1);
    };
    rt().block_on(async {
        let a = connect_from("127.0.0.8", to).await;
        let b = connect_from("127.0.0.8", to).await;
        // Both accepted, and the accept loop waits for a slot: nobody else gets in now.
        let full = "no connection slot is free (limit 2)";
        tokio::task::block_in_place(|| wait_logged(&d, &[full], 1));
        let waiting = tokio::spawn(async move { get("127.0.0.9", to, "/health", &[]).await });
        assert!(!waiting.is_finished(), "a third connection was let in at 2");
        assert!(!accepted(&d, "127.0.0.9"), "{}", d.stderr());
        tokio::task::block_in_place(|| reload(3));
        let answered = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("let in once the limit grew")
            .unwrap();
        assert_eq!(answered.status, 200);

        tokio::task::block_in_place(|| reload(1));
        // Two open over a limit of one: the loop takes the free slot out of use and waits.
        let full = "no connection slot is free (limit 1)";
        tokio::task::block_in_place(|| wait_logged(&d, &[full], 1));
        let waiting = tokio::spawn(async move { get("127.0.0.10", to, "/health", &[]).await });
        assert!(!waiting.is_finished(), "let in over the new limit");
        drop(a);
        // `a`'s slot came back and paid the rest of the debt (none is owed now); the loop
        // waits again with `b` holding the one slot.
        tokio::task::block_in_place(|| wait_logged(&d, &[full, "debt=0"], 1));
        assert!(
            !waiting.is_finished(),
            "one connection is still open: at the limit of 1"
        );
        assert!(!accepted(&d, "127.0.0.10"), "{}", d.stderr());
        drop(b);
        let answered = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("let in once the open ones closed")
            .unwrap();
        assert_eq!(answered.status, 200);
    });
}

#[test]
fn oversized_request_heads_are_refused() {
    let d = proxy_daemon("");
    let to = addr(&d);
    rt().block_on(async {
        let big = "x".repeat(20 * 1024);
        let mut s = connect_from("127.0.0.4", to).await;
        let req = format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
        // The daemon may close before reading it all.
        let _ = s.write_all(req.as_bytes()).await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        assert!(
            out.starts_with(b"HTTP/1.1 431"),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
        let a = get(
            "127.0.0.4",
            to,
            "/health",
            &[("X-Normal", &"y".repeat(8 * 1024))],
        )
        .await;
        assert_eq!(a.status, 200, "an 8 KiB header is fine");
    });
}
