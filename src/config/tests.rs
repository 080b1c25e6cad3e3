//! Unit tests of loading and validating the configuration.

use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load(text: &str, e: &[(&str, &str)]) -> Result<Config, Error> {
    Config::from_toml(text, "test.toml", None, &env(e))
}

#[test]
fn defaults_are_the_spec_defaults() {
    let c = load("", &[]).unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8000");
    assert_eq!(c.server.enrollment, Enrollment::Open);
    assert_eq!(c.server.rate_limit_per_minute, 10);
    assert_eq!(c.storage.data_dir, PathBuf::from("./data"));
    assert_eq!(
        c.storage.identity_file,
        PathBuf::from("./data/identity.txt")
    );
    assert_eq!(c.control_socket, PathBuf::from("./data/control.sock"));
    assert_eq!(
        c.quickbooks.redirect_uri.as_str(),
        "http://localhost:8000/api/v1/oauth/callback"
    );
    assert_eq!(
        c.quickbooks.api_base.as_str(),
        "https://sandbox-quickbooks.api.intuit.com/"
    );
    assert_eq!(c.quickbooks.minor_version, 75);
    assert_eq!(c.quickbooks.max_concurrent_companies, 16);
    assert_eq!(c.quickbooks.writes_in_flight_per_company, 4);
    assert!(c.server.trusted_proxies.is_empty());
    assert_eq!(c.server.max_connections, 512);
    assert_eq!(c.server.request_timeout_secs, 30);
    assert_eq!(c.schedule.time, NaiveTime::from_hms_opt(13, 0, 0).unwrap());
    assert_eq!(c.schedule.timezone, chrono_tz::Europe::Tirane);
    assert_eq!(c.boa.max_jump_percent, Decimal::from(20));
    assert!(c.alert_webhook.is_none());
}

#[test]
fn example_file_is_valid_and_matches_defaults() {
    let text = include_str!("../../config.example.toml");
    let c = load(text, &[]).unwrap();
    let d = load("", &[]).unwrap();
    assert_eq!(format!("{c:?}"), format!("{d:?}"));
}

#[test]
fn env_wins_over_file() {
    let c = load(
        "[server]\nlisten = \"127.0.0.1:9000\"\n[schedule]\ntime = \"08:00\"\n",
        &[
            ("API_HOST", "0.0.0.0"),
            ("API_PORT", "8123"),
            ("SCHEDULE_TIME", "09:30"),
            ("TIMEZONE", "UTC"),
            ("QB_SANDBOX", "False"),
            ("QB_CLIENT_ID", "abc"),
            ("ADMIN_API_KEY", "k3y"),
        ],
    )
    .unwrap();
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:8123");
    assert_eq!(c.schedule.time, NaiveTime::from_hms_opt(9, 30, 0).unwrap());
    assert_eq!(c.schedule.timezone, chrono_tz::UTC);
    assert!(!c.quickbooks.sandbox);
    assert_eq!(
        c.quickbooks.api_base.as_str(),
        "https://quickbooks.api.intuit.com/"
    );
    assert_eq!(c.quickbooks.client_id, "abc");
    assert_eq!(c.server.admin_api_key.expose(), "k3y");
}

#[test]
fn systemd_directories_are_honoured() {
    let c = load(
        "",
        &[
            ("STATE_DIRECTORY", "/var/lib/boa-exchange"),
            ("RUNTIME_DIRECTORY", "/run/boa-exchange"),
        ],
    )
    .unwrap();
    assert_eq!(c.storage.data_dir, PathBuf::from("/var/lib/boa-exchange"));
    assert_eq!(
        c.control_socket,
        PathBuf::from("/run/boa-exchange/control.sock")
    );
}

#[test]
fn secrets_from_files_and_credentials() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("qb_client_secret"), "from-cred\n").unwrap();
    std::fs::write(dir.path().join("admin"), "from-file\n").unwrap();
    let text = format!(
        "[server]\nadmin_api_key_file = \"{}\"\n",
        dir.path().join("admin").display()
    );
    let c = load(
        &text,
        &[("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap())],
    )
    .unwrap();
    assert_eq!(c.server.admin_api_key.expose(), "from-file");
    assert_eq!(c.quickbooks.client_secret.expose(), "from-cred");
    let text = "[server]\nadmin_api_key_file = \"/nonexistent/x\"\n";
    let e = load(text, &[]).unwrap_err().to_string();
    assert!(
        e.starts_with("server.admin_api_key_file: cannot read"),
        "{e}"
    );
}

#[test]
fn secret_debug_never_prints_it() {
    let c = load(
        "[server]\nadmin_api_key = \"supersecret\"\n[quickbooks]\nclient_secret = \"qbsecret\"\n",
        &[("SECRET_KEY", "hmackey")],
    )
    .unwrap();
    let dbg = format!("{c:?}");
    for s in ["supersecret", "qbsecret", "hmackey"] {
        assert!(!dbg.contains(s), "{s} leaked in {dbg}");
    }
}

#[test]
fn invalid_values_name_the_key() {
    let cases: &[(&str, &str)] = &[
        (
            "[schedule]\ntime = \"25:99\"\n",
            "schedule.time: \"25:99\" is not a time (expected HH:MM)",
        ),
        (
            "[schedule]\ntimezone = \"Mars/Olympus\"\n",
            "schedule.timezone:",
        ),
        (
            "[schedule]\ngive_up_at = \"12:00\"\n",
            "schedule.give_up_at:",
        ),
        (
            "[schedule]\nretry_every_minutes = 0\n",
            "schedule.retry_every_minutes:",
        ),
        ("[server]\nlisten = \"nowhere\"\n", "server.listen:"),
        ("[server]\nenrollment = \"closed\"\n", "server.enrollment:"),
        (
            "[server]\npublic_url = \"not a url\"\n",
            "server.public_url:",
        ),
        (
            "[quickbooks]\nmax_concurrent_companies = 0\n",
            "quickbooks.max_concurrent_companies:",
        ),
        ("[boa]\nmax_jump_percent = -1\n", "boa.max_jump_percent:"),
        (
            "[quickbooks]\nwrites_in_flight_per_company = 9\n",
            "quickbooks.writes_in_flight_per_company: 9 is out of range (1..=8)",
        ),
        (
            "[quickbooks]\nwrites_in_flight_per_company = 0\n",
            "quickbooks.writes_in_flight_per_company:",
        ),
        (
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.1/33\"]\n",
            "server.trusted_proxies: \"10.0.0.1/33\": the prefix length",
        ),
        (
            "[server]\ntrusted_proxies = [\"proxy.local\"]\n",
            "server.trusted_proxies: \"proxy.local\" is not a CIDR",
        ),
        (
            "[server]\nmax_connections = 0\n",
            "server.max_connections: 0 is out of range (1..=65536)",
        ),
        (
            "[server]\nmax_connections = 65537\n",
            "server.max_connections:",
        ),
        (
            "[server]\nrequest_timeout_secs = 0\n",
            "server.request_timeout_secs:",
        ),
        ("[boa]\nurl = \"ftp://x\"\n", "boa.url:"),
        ("[log]\nlevel = \"[[[\"\n", "log.level:"),
        ("[alerts]\nwebhook_url = \"x\"\n", "alerts.webhook_url:"),
    ];
    for (text, want) in cases {
        let e = load(text, &[]).unwrap_err().to_string();
        assert!(
            e.starts_with(want),
            "{text:?}: got {e:?}, want prefix {want:?}"
        );
    }
    let e = load("", &[("SCHEDULE_TIME", "7pm")])
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("SCHEDULE_TIME:"), "{e}");
}

#[test]
fn trusted_proxies_parse_v4_and_v6() {
    let c = load(
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"2001:db8::/32\", \"127.0.0.2\"]\nmax_connections = 2048\nrequest_timeout_secs = 5\n",
            &[],
        )
        .unwrap();
    let shown: Vec<String> = c
        .server
        .trusted_proxies
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(shown, ["10.0.0.0/8", "2001:db8::/32", "127.0.0.2/32"]);
    assert_eq!(c.server.max_connections, 2048);
    assert_eq!(c.server.request_timeout_secs, 5);
}

#[test]
fn unknown_keys_and_types_are_rejected() {
    let e = load("[server]\nlistn = \"x\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("listn"), "{e}");
    let e = load("[nope]\n", &[]).unwrap_err().to_string();
    assert!(e.contains("nope"), "{e}");
    let e = load("[schedule]\nenabled = \"yes\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("enabled") || e.contains("bool"), "{e}");
}

#[test]
fn fixture_configs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config");
    for (sub, ok) in [("valid", true), ("invalid", false)] {
        let mut n = 0;
        for entry in std::fs::read_dir(root.join(sub)).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            n += 1;
            let r = Config::load_with_env(Some(&p), &env(&[]));
            assert_eq!(r.is_ok(), ok, "{}: {r:?}", p.display());
        }
        assert!(n > 0, "no fixtures in {sub}");
    }
}

#[test]
fn storage_backend_and_postgres_url() {
    let c = load("", &[]).unwrap();
    assert_eq!(c.storage.backend, Backend::Sled);
    assert_eq!(c.storage.leader_lease, std::time::Duration::from_secs(15));

    let pg = "[storage]\nbackend = \"postgres\"\npostgres_url = \"postgresql://u@h/db\"\n";
    let c = load(pg, &[]).unwrap();
    let Backend::Postgres { url } = &c.storage.backend else {
        panic!("not postgres: {:?}", c.storage.backend);
    };
    assert_eq!(url.expose(), "postgresql://u@h/db");
    assert!(!format!("{c:?}").contains("u@h/db"), "the URL is a secret");

    let c = load(pg, &[("DATABASE_URL", "postgres://env@h/db")]).unwrap();
    assert_eq!(
        c.storage.backend,
        Backend::Postgres {
            url: Secret::new("postgres://env@h/db")
        }
    );

    let err = |text: &str| load(text, &[]).unwrap_err().to_string();
    assert!(err("[storage]\nbackend = \"postgres\"\n").contains("storage.postgres_url"));
    assert!(err("[storage]\nbackend = \"mysql\"\n").contains("storage.backend"));
    assert!(
        err("[storage]\nbackend = \"postgres\"\npostgres_url = \"mysql://x\"\n")
            .contains("not a PostgreSQL URL")
    );
    assert!(err("[storage]\nleader_lease_secs = 0\n").contains("storage.leader_lease_secs"));
}
