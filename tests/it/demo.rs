//! `boa-exchange demo` end to end: the real binary, its built-in sandbox, no network.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::eventually::eventually;

const BIN: &str = env!("CARGO_BIN_EXE_boa-exchange");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn demo(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("demo").args(args);
    // The demo reads no environment setting; clear the usual ones anyway so a developer's
    // shell cannot make this test pass or fail.
    for v in [
        "RUST_LOG",
        "API_PORT",
        "API_HOST",
        "QB_CLIENT_ID",
        "STATE_DIRECTORY",
    ] {
        c.env_remove(v);
    }
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn wait_exit(child: &mut Child, within: Duration) -> ExitStatus {
    /// Kills the demo when the wait fails, so it does not outlive the test.
    struct KillOnPanic<'a>(&'a mut Child);
    impl Drop for KillOnPanic<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let _ = self.0.kill();
            }
        }
    }
    let guard = KillOnPanic(child);
    eventually(within, "the demo to exit", || guard.0.try_wait().unwrap())
}

fn read_all(r: Option<impl Read>) -> String {
    let mut s = String::new();
    if let Some(mut r) = r {
        let _ = r.read_to_string(&mut s);
    }
    s
}

/// The report's row for `currency` in the section of the company with home `home`:
/// (QuickBooks rate, BoA published, units).
fn row(report: &str, home: &str, currency: &str) -> (String, String, String) {
    let section = report
        .split("\n== ")
        .skip(1)
        .find(|s| {
            s.lines()
                .next()
                .unwrap_or("")
                .ends_with(&format!("home {home}) =="))
        })
        .unwrap_or_else(|| panic!("no section for home {home} in:\n{report}"));
    let line = section
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&currency))
        .unwrap_or_else(|| panic!("no {currency} row for home {home} in:\n{section}"));
    (
        line[1].to_string(),
        line[2].to_string(),
        line[3].to_string(),
    )
}

#[test]
fn demo_once_reports_the_capture_values() {
    let port = free_port();
    let started = Instant::now();
    let mut child = demo(&["--once", "--port", &port.to_string()])
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let took = started.elapsed();
    let out = read_all(child.stdout.take());
    let err = read_all(child.stderr.take());
    assert!(
        status.success(),
        "exit {status:?}\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
    // ALL home: lek per unit, as BoA publishes it.
    assert_eq!(
        row(&out, "ALL", "USD"),
        ("82.24".into(), "82.24".into(), "1".into())
    );
    assert_eq!(row(&out, "ALL", "EUR").0, "95.4");
    assert_eq!(row(&out, "ALL", "GBP").0, "110.38");
    // EUR home: cross rates, 6 decimals; ALL = 1 / 95.40.
    assert_eq!(row(&out, "EUR", "USD").0, "0.862055");
    assert_eq!(row(&out, "EUR", "ALL").0, "0.010482");
    // USD home: EUR = 95.40 / 82.24.
    assert_eq!(row(&out, "USD", "EUR").0, "1.160019");
    assert!(out.contains("Connected Tirana Trading"), "{out}");
    assert!(!out.contains("Serving on"), "--once does not serve:\n{out}");
}

#[test]
fn port_in_use_exits_2_with_a_clear_message() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut child = demo(&["--once", "--port", &port.to_string()])
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(10));
    let err = read_all(child.stderr.take());
    assert_eq!(status.code(), Some(2), "stderr: {err}");
    assert!(
        err.contains(&format!("port {port} is in use; try --port N")),
        "stderr: {err}"
    );
}

#[test]
fn serving_demo_shows_the_landing_page_and_stops_on_sigint() {
    let port = free_port();
    let mut child = demo(&["--port", &port.to_string()]).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = String::new();
    while !seen.contains("Serving on") {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
            }
            Err(_) => {
                let _ = child.kill();
                panic!("the demo never said it was serving:\n{seen}");
            }
        }
    }
    assert!(
        seen.contains(&format!("http://127.0.0.1:{port}/")),
        "{seen}"
    );

    // The landing page, as a browser gets it.
    let page = http_get(port, "/");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let body = &page[page.find("\r\n\r\n").unwrap() + 4..];
    assert!(
        body.len() < 50 * 1024,
        "the landing page weighs {} bytes",
        body.len()
    );
    assert!(body.contains("Friday 22 May 2026"), "{body}");
    assert!(body.contains("Published 12:12:23"), "{body}");
    assert!(
        body.contains(
            "<td>USD</td><td>US dollar</td><td class=\"n\">1</td><td class=\"n\">82.24</td>"
        ),
        "{body}"
    );
    assert!(body.contains(
        "<td>JPY</td><td>Japanese yen</td><td class=\"n\">100</td><td class=\"n\">51.68</td>"
    ));
    assert!(body.contains("Connect to QuickBooks"));
    // One stored fixing: no empty chart frame, a sentence saying when the chart comes.
    assert!(
        body.contains("The EUR and USD chart appears once 2 days are stored (1 stored so far)."),
        "{body}"
    );
    assert!(!body.contains("<svg"), "{body}");
    assert!(!body.contains("<script"));

    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = wait_exit(&mut child, Duration::from_secs(25));
    assert_eq!(
        status.code(),
        Some(0),
        "stderr: {}",
        read_all(child.stderr.take())
    );
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
