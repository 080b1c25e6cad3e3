//! A real reverse proxy in front of the real daemon (issue 24): Debian's nginx runs the
//! shipped site example (`packaging/nginx/boa-exchange.conf`, only its listen address and
//! upstream changed) with a config of its own in a temp folder on a free port. Clients reach
//! it from different loopback source addresses (Linux routes all of 127/8 to lo), so nginx's
//! `$proxy_add_x_forwarded_for` carries a different client address for each; the daemon
//! trusts nginx (`trusted_proxies = ["127.0.0.1/32"]`).
//!
//! Without nginx the tests say so and pass, unless `BOA_EXCHANGE_REQUIRE_TOOLS=1` (CI).

use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::json;

use crate::support::eventually::{eventually, lazy};
use crate::support::fake_intuit::CompanySpec;
use crate::support::world::{World, REDIRECT};
use crate::toolbox::tool;

/// nginx running the site example in front of `upstream` (`host:port`).
struct Nginx {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

impl Nginx {
    fn start(bin: PathBuf, upstream: &str) -> Nginx {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        let port = free_port();
        let site = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("packaging/nginx/boa-exchange.conf"),
        )
        .expect("site example");
        assert!(site.contains("listen 80;") && site.contains("server 127.0.0.1:8000;"));
        let site = site
            .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
            .replace("server 127.0.0.1:8000;", &format!("server {upstream};"));
        std::fs::write(dir.path().join("site.conf"), site).expect("write site");
        // As root the workers would switch to `nobody`, who cannot enter the 0700 temp folder.
        // SAFETY: geteuid has no preconditions.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root root;"
        } else {
            ""
        };
        let conf = format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n{user}\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               include {d}/site.conf;\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).expect("write conf");
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let mut n = Nginx { dir, child, port };
        let listening = |n: &mut Nginx| {
            if let Ok(Some(st)) = n.child.try_wait() {
                panic!("nginx exited ({st}): {}", n.error_log());
            }
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        };
        let log = n.dir.path().join("error.log");
        eventually(
            Duration::from_secs(20),
            lazy(|| {
                let errors = std::fs::read_to_string(&log).unwrap_or_default();
                format!("nginx to listen on {port}: {errors}")
            }),
            || listening(&mut n),
        );
        n
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A browser whose connections come from `127.0.0.last`.
fn client_from(last: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

async fn proxied_world(limit: u32) -> Option<(World, Nginx)> {
    let bin = tool("nginx", "nginx")?;
    let w = World::start(&format!(
        "[server]\nrate_limit_per_minute = {limit}\ntrusted_proxies = [\"127.0.0.1/32\"]\n"
    ))
    .await;
    let upstream = w.daemon.http.trim_start_matches("http://").to_string();
    let nginx = tokio::task::block_in_place(|| Nginx::start(bin, &upstream));
    Some((w, nginx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_connect_round_trip_through_nginx() {
    let Some((w, nginx)) = proxied_world(100).await else {
        return;
    };
    let browser = client_from(4);
    w.intuit
        .add_company(CompanySpec::new("7001", "Proxied Sh.p.k."));
    w.intuit.set_next_realm("7001".to_string());

    let a = browser
        .get(nginx.url("/api/v1/oauth/connect"))
        .send()
        .await
        .expect("connect");
    assert_eq!(a.status(), 302, "{}", nginx.error_log());
    let cookie = a.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let to_intuit = a.headers()[LOCATION].to_str().unwrap().to_string();
    let b = browser.get(&to_intuit).send().await.expect("authorize");
    assert_eq!(b.status(), 302);
    let back = b.headers()[LOCATION].to_str().unwrap().to_string();
    assert!(back.starts_with(REDIRECT), "{back}");
    let query = back.split_once('?').map(|(_, q)| q).unwrap_or_default();

    let c = browser
        .get(nginx.url(&format!("/api/v1/oauth/callback?{query}")))
        .header(COOKIE, &cookie)
        .send()
        .await
        .expect("callback");
    assert_eq!(c.status(), 200);
    let page = c.text().await.unwrap();
    assert!(page.contains("Connected to QuickBooks"), "{page}");
    assert!(page.contains("Proxied Sh.p.k."), "{page}");
    let st = w.control("company", json!({"realm": "7001"}));
    assert_eq!(st["ok"], true, "{st}");

    // /metrics is not published through the proxy.
    let m = browser.get(nginx.url("/metrics")).send().await.unwrap();
    assert_eq!(m.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_counts_forwarded_clients_and_ignores_a_forged_left_part() {
    const LIMIT: u32 = 3;
    let Some((_w, nginx)) = proxied_world(LIMIT).await else {
        return;
    };
    let get = |client: reqwest::Client, forged: Option<&'static str>| {
        let url = nginx.url("/");
        async move {
            let mut rb = client.get(url);
            if let Some(f) = forged {
                rb = rb.header("X-Forwarded-For", f);
            }
            rb.send().await.expect("request").status().as_u16()
        }
    };
    let (a, b) = (client_from(2), client_from(3));
    for i in 0..LIMIT {
        assert_eq!(get(a.clone(), None).await, 200, "request {i} of 127.0.0.2");
    }
    assert_eq!(
        get(a.clone(), None).await,
        429,
        "127.0.0.2 is over its limit"
    );
    // Another client behind the same proxy has its own count.
    assert_eq!(
        get(b.clone(), None).await,
        200,
        "127.0.0.3 is counted apart"
    );
    // A client that writes someone else's address on the left is still itself.
    for forged in ["203.0.113.9", "127.0.0.3", "198.51.100.1, 127.0.0.5"] {
        assert_eq!(
            get(a.clone(), Some(forged)).await,
            429,
            "forged X-Forwarded-For {forged:?} helped 127.0.0.2"
        );
    }
    // /health is never limited.
    let h = a.get(nginx.url("/health")).send().await.unwrap();
    assert_eq!(h.status(), 200);
}
