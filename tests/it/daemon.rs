//! The daemon frame, black-box: the real binary, its HTTP API, control socket, systemd
//! notifications, signals, restarts and config checking.

use std::time::{Duration, Instant};

use crate::support::daemon::{TestDaemon, BIN};
use crate::support::eventually::{eventually, lazy};
use serde_json::{json, Value};

fn get_json(url: &str) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let r = reqwest::Client::new().get(url).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    })
}

#[test]
fn health_is_degraded_without_a_fixing_while_the_schedule_runs() {
    // The BoA URL points at a closed port: the start-up scrape fails, nothing is stored.
    let d = TestDaemon::start("[boa]\nurl = \"http://127.0.0.1:9/\"\ntimeout_secs = 1\n");
    eventually(
        Duration::from_secs(30),
        "the failed start-up scrape to show in /health",
        || {
            let (status, body) = get_json(&d.url("/health"));
            assert_eq!(status, 200);
            assert_eq!(body["status"], "degraded");
            let reasons = body["reasons"].to_string();
            assert!(reasons.contains("no BoA fixing is stored"), "{body}");
            reasons.contains("last BoA scrape failed")
        },
    );
}

#[test]
fn health_status_and_ready_notification() {
    let d = TestDaemon::start("[schedule]\nenabled = false\n");
    let (status, body) = get_json(&d.url("/health"));
    assert_eq!(status, 200);
    assert_eq!(body["status"], "healthy", "{body}");
    assert_eq!(body["reasons"], json!([]));
    assert_eq!(body["total_companies"], 0);
    assert_eq!(body["active_companies"], 0);
    assert_eq!(body["companies_with_expired_tokens"], 0);
    assert!(body.get("last_sync").is_some());

    let st = d.control("status", json!({}));
    assert_eq!(st["ok"], true);
    assert_eq!(st["data"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(st["data"]["store"]["schema_version"], 2);

    let (code, out, _) = d.cli(&["status"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!("boa-exchange {}", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    let (code, out, _) = d.cli(&["--json", "status"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        v["version"],
        env!("CARGO_PKG_VERSION"),
        "--json prints the answer's data"
    );

    let (status, body) = get_json(&d.url("/no/such/endpoint"));
    assert_eq!(status, 404);
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["code"], "not_found");
}

#[test]
fn bad_control_lines_get_errors_and_the_connection_goes_on() {
    let d = TestDaemon::start("");
    let answers = d.control_lines(&[
        "this is not json",
        "{\"cmd\": \"no-such-command\"}",
        "{\"args\": {}}",
        "[1,2,3]",
        "{\"cmd\": \"status\"}",
    ]);
    for a in &answers[..4] {
        assert_eq!(a["ok"], false, "{a}");
        assert!(
            a["error"]["code"].is_string() && a["error"]["message"].is_string(),
            "{a}"
        );
    }
    assert_eq!(answers[1]["error"]["code"], "unknown_command");
    assert_eq!(answers[4]["ok"], true, "the same connection still works");
    // An over-long line is refused without killing the daemon.
    let long = format!("{{\"cmd\": \"{}\"}}", "x".repeat(9 * 1024 * 1024));
    let a = d.control_lines(&[&long]);
    assert_eq!(a[0]["ok"], false);
    assert_eq!(d.control("status", json!({}))["ok"], true);
}

#[test]
fn sigterm_stops_cleanly_with_stopping_notification() {
    let mut d = TestDaemon::start("");
    let t = Instant::now();
    d.signal(libc::SIGTERM);
    assert!(d.notifications_until(|m| m.contains("STOPPING=1"), Duration::from_secs(20)));
    let st = d.wait_exit(Duration::from_secs(20));
    assert!(st.success(), "exit status {st}: {}", d.stderr());
    assert!(t.elapsed() < Duration::from_secs(20));
    assert!(
        !d.socket().exists(),
        "the control socket is removed on exit"
    );
    // The CLI now says the daemon is unreachable, with exit code 3.
    let (code, _, err) = d.cli(&["status"]);
    assert_eq!(code, 3);
    assert!(err.contains("cannot reach"), "{err}");
}

#[test]
fn kill_9_then_restart_on_the_same_data() {
    let mut d = TestDaemon::start("");
    let identity = std::fs::read(d.data_dir().join("identity.txt")).unwrap();
    d.kill9();
    assert!(
        d.socket().exists(),
        "a killed daemon leaves a stale socket behind"
    );
    d.spawn_and_wait_ready();
    assert_eq!(d.control("status", json!({}))["ok"], true);
    assert_eq!(
        std::fs::read(d.data_dir().join("identity.txt")).unwrap(),
        identity,
        "same identity kept"
    );
}

#[test]
fn second_daemon_on_the_same_data_dir_is_refused() {
    // Another socket and port, the same data folder: refused by sled's lock (after the
    // bounded wait for a lock being released), with the message operators search for.
    let d = TestDaemon::start("");
    let other = tempfile::tempdir().unwrap();
    let config = other.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"{}\"\n[control]\nsocket = \"{}\"\n",
            d.data_dir().display(),
            other.path().join("control.sock").display()
        ),
    )
    .unwrap();
    let out = d
        .command()
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is another boa-exchange running on this data_dir?"),
        "{err}"
    );
    assert_eq!(
        d.control("status", json!({}))["ok"],
        true,
        "the first daemon is unharmed"
    );
}

#[test]
fn second_daemon_on_the_same_socket_is_refused() {
    let d = TestDaemon::start("");
    let out = d
        .command()
        .arg("serve")
        .arg("--config")
        .arg(d.config_path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("in use") || err.contains("another boa-exchange"),
        "{err}"
    );
    assert_eq!(
        d.control("status", json!({}))["ok"],
        true,
        "the first daemon is unharmed"
    );
}

#[test]
fn sighup_keeps_old_config_when_new_one_is_bad() {
    let d = TestDaemon::start("");
    let good = std::fs::read_to_string(d.config_path()).unwrap();
    std::fs::write(
        d.config_path(),
        format!("{good}\n[schedule]\ntime = \"25:99\"\n"),
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    assert!(d.notifications_until(|m| m.contains("READY=1"), Duration::from_secs(10)));
    assert_eq!(d.control("status", json!({}))["ok"], true);
    eventually(
        Duration::from_secs(10),
        lazy(|| format!("\"reload refused\" in the log: {}", d.stderr())),
        || d.stderr().contains("reload refused"),
    );
    assert!(d.stderr().contains("schedule.time"), "{}", d.stderr());
}

#[test]
fn check_config_exit_codes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config");
    let run = |p: &std::path::Path| {
        std::process::Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(p)
            .env_remove("SCHEDULE_TIME")
            .env_remove("TIMEZONE")
            .output()
            .unwrap()
    };
    let out = run(&root.join("valid/example.toml"));
    assert_eq!(out.status.code(), Some(0));
    let out = run(&root.join("invalid/bad-time.toml"));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "schedule.time: \"25:99\" is not a time (expected HH:MM)"
    );
    let out = run(&root.join("invalid/unknown-key.toml"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));
    // serve refuses the same file with exit 2 and the same message.
    let out = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(root.join("invalid/bad-time.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("schedule.time"));
    // Usage errors exit 2.
    let out = std::process::Command::new(BIN)
        .arg("frobnicate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn wrong_identity_is_a_clear_startup_error() {
    let mut d = TestDaemon::start("");
    d.signal(libc::SIGTERM);
    d.wait_exit(Duration::from_secs(20));
    // Pretend tokens exist by recording them under the current identity, then swap the file.
    let id = d.data_dir().join("identity.txt");
    std::fs::remove_file(&id).unwrap();
    let out = d
        .command()
        .arg("serve")
        .arg("--config")
        .arg(d.config_path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("identity file") && err.contains("missing"),
        "{err}"
    );
    assert!(
        !id.exists(),
        "a new identity is never made up while encrypted data exists"
    );
}

#[test]
fn watchdog_pings_when_systemd_asks_for_them() {
    let d = TestDaemon::start_with_env(
        "[schedule]\nenabled = false\n",
        &[("WATCHDOG_USEC", "1000000")],
    );
    assert!(
        d.notifications_until(|m| m.contains("WATCHDOG=1"), Duration::from_secs(5)),
        "no WATCHDOG=1 within 5 s"
    );
    // Without WATCHDOG_USEC there are none (and a reader that stops reading never blocks it).
    let quiet = TestDaemon::start("[schedule]\nenabled = false\n");
    assert!(!quiet.notifications_until(|m| m.contains("WATCHDOG=1"), Duration::from_secs(2)));
    let (status, _) = get_json(&quiet.url("/health"));
    assert_eq!(status, 200);
}

#[test]
fn an_acknowledged_import_survives_kill_9() {
    let mut d = TestDaemon::start("[schedule]\nenabled = false\n");
    let workbook = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/boa/archive-2024.xlsx");
    let (code, out, err) = d.cli(&["--json", "import-archive", workbook.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["imported"].as_u64().unwrap() > 200, "{v}");
    // Acknowledged means flushed: a kill -9 right after the answer loses nothing.
    d.kill9();
    d.spawn_and_wait_ready();
    let r = d.control("rates", json!({"date": "2024-12-31"}));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["data"]["tables"][0]["date"], "2024-12-31");
}
