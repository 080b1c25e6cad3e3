//! `World`: a real daemon wired to a fake BoA and a fake Intuit, plus the browser side of
//! the OAuth flow and small HTTP helpers. The daemon is the real binary, on the sled store
//! by default or on any [`Backend`]; several Worlds sharing one fake Intuit (and one
//! database) are the nodes of a cluster (SPEC §13, [`World::start_node`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::Value;

use super::backend::Backend;
use super::daemon::{section_body, without_sections, TestDaemon};
use super::fake_boa::FakeBoa;
use super::fake_intuit::{CompanySpec, FakeIntuit, FakeIntuitConfig};

pub const ADMIN_KEY: &str = "test-admin-key-0123456789";
pub const REDIRECT: &str = "http://127.0.0.1:9/api/v1/oauth/callback";

pub struct World {
    pub boa: FakeBoa,
    /// Shared by the nodes of a cluster (one QuickBooks behind every node).
    pub intuit: Arc<FakeIntuit>,
    pub daemon: TestDaemon,
    pub http: reqwest::Client,
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

impl World {
    /// Fakes with defaults, and a daemon configured to use them plus `extra` TOML.
    pub async fn start(extra: &str) -> World {
        Self::start_with(FakeIntuitConfig::default(), extra).await
    }

    pub async fn start_with(cfg: FakeIntuitConfig, extra: &str) -> World {
        Self::start_with_on(cfg, &Backend::Sled, extra).await
    }

    /// [`World::start`] on `backend`.
    pub async fn start_on(backend: &Backend, extra: &str) -> World {
        Self::start_with_on(FakeIntuitConfig::default(), backend, extra).await
    }

    /// [`World::start_with`] on `backend`.
    pub async fn start_with_on(mut cfg: FakeIntuitConfig, backend: &Backend, extra: &str) -> World {
        let _ = rustls::crypto::ring::default_provider().install_default();
        cfg.redirect_uri = REDIRECT.to_string();
        let intuit = Arc::new(FakeIntuit::start(cfg).await);
        Self::start_node(intuit, FakeBoa::start().await, backend, None, extra).await
    }

    /// A daemon on `backend` wired to an existing fake Intuit (started with
    /// `redirect_uri = REDIRECT`) and to `boa`: with the same `intuit`, database and
    /// `identity` file, the nodes of one cluster.
    pub async fn start_node(
        intuit: Arc<FakeIntuit>,
        boa: FakeBoa,
        backend: &Backend,
        identity: Option<&Path>,
        extra: &str,
    ) -> World {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let extra = format!("{extra}\n{}", backend.storage_toml(identity));
        let toml = daemon_toml(&intuit, &boa, &extra);
        let daemon = tokio::task::block_in_place(|| TestDaemon::start(&toml));
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(300))
            .build()
            .expect("client");
        World {
            boa,
            intuit,
            daemon,
            http,
        }
    }

    /// Rewrites the daemon's config with `from` replaced by `to` (e.g. the schedule turned
    /// on), for the next [`TestDaemon::spawn_and_wait_ready`].
    ///
    /// # Panics
    /// When `from` is not in the config.
    pub fn edit_config(&mut self, from: &str, to: &str) {
        let cfg = &mut self.daemon.extra_config;
        assert!(cfg.contains(from), "{from:?} is not in the config:\n{cfg}");
        *cfg = cfg.replace(from, to);
        self.daemon.write_config();
    }

    pub fn url(&self, path: &str) -> String {
        self.daemon.url(path)
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Answer {
        let r = rb.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        Answer {
            status,
            headers,
            text,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn admin_get(&self, path: &str) -> Answer {
        self.send(self.http.get(self.url(path)).bearer_auth(ADMIN_KEY))
            .await
    }

    pub async fn admin_post(&self, path: &str) -> Answer {
        self.send(self.http.post(self.url(path)).bearer_auth(ADMIN_KEY))
            .await
    }

    pub async fn admin_put(&self, path: &str, body: &str) -> Answer {
        self.send(
            self.http
                .put(self.url(path))
                .bearer_auth(ADMIN_KEY)
                .header("Content-Type", "application/json")
                .body(body.to_string()),
        )
        .await
    }

    /// The browser side of the OAuth flow for a company the fake knows: connect → Intuit
    /// (auto-approve) → callback with the cookie. Returns the callback answer.
    pub async fn connect(&self, spec: CompanySpec) -> Answer {
        let realm = spec.realm_id.clone();
        self.intuit.add_company(spec);
        self.intuit.set_next_realm(realm);
        let (cookie, query) = self.authorize().await;
        self.callback(&query, Some(&cookie)).await
    }

    /// connect → Intuit: returns (cookie, callback query string).
    pub async fn authorize(&self) -> (String, String) {
        let a = self.get("/api/v1/oauth/connect").await;
        assert_eq!(a.status, 302, "connect: {}", a.text);
        let cookie = a
            .headers
            .get(SET_COOKIE)
            .expect("state cookie")
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let to_intuit = a
            .headers
            .get(LOCATION)
            .expect("location")
            .to_str()
            .unwrap()
            .to_string();
        let b = self.send(self.http.get(&to_intuit)).await;
        assert_eq!(b.status, 302, "authorize at the fake: {}", b.text);
        let back = b
            .headers
            .get(LOCATION)
            .expect("redirect back")
            .to_str()
            .unwrap()
            .to_string();
        assert!(back.starts_with(REDIRECT), "{back}");
        let query = back
            .split_once('?')
            .map(|(_, q)| q.to_string())
            .unwrap_or_default();
        (cookie, query)
    }

    pub async fn callback(&self, query: &str, cookie: Option<&str>) -> Answer {
        let mut rb = self
            .http
            .get(self.url(&format!("/api/v1/oauth/callback?{query}")));
        if let Some(c) = cookie {
            rb = rb.header(COOKIE, c);
        }
        self.send(rb).await
    }

    /// Fetches the BoA page through the daemon (control socket).
    pub fn fetch(&self) -> Value {
        tokio::task::block_in_place(|| self.daemon.control("fetch", serde_json::json!({})))
    }

    pub fn control(&self, cmd: &str, args: Value) -> Value {
        tokio::task::block_in_place(|| self.daemon.control(cmd, args))
    }
}

/// The daemon's config against `intuit` and `boa`, plus `extra` (its `[server]`,
/// `[quickbooks]` and `[boa]` keys merged into those tables).
fn daemon_toml(intuit: &FakeIntuit, boa: &FakeBoa, extra: &str) -> String {
    let rate_limit = if extra.contains("rate_limit_per_minute") {
        String::new()
    } else {
        "rate_limit_per_minute = 100000\n".into()
    };
    let schedule = if extra.contains("[schedule]") {
        String::new()
    } else {
        "[schedule]\nenabled = false\n".into()
    };
    format!(
        "[server]\nadmin_api_key = \"{ADMIN_KEY}\"\n{rate_limit}{server_extra}\n\
         [quickbooks]\nclient_id = \"{cid}\"\nclient_secret = \"{cs}\"\nredirect_uri = \"{REDIRECT}\"\n\
         authorize_url = \"{au}\"\ntoken_url = \"{tu}\"\nrevoke_url = \"{ru}\"\napi_base = \"{api}\"\n{qb_extra}\n\
         [boa]\nurl = \"{boa}\"\n{boa_extra}\n{schedule}{rest}",
        cid = intuit.client_id(),
        cs = intuit.client_secret(),
        au = intuit.authorize_url(),
        tu = intuit.token_url(),
        ru = intuit.revoke_url(),
        api = intuit.api_base(),
        boa = boa.url(),
        server_extra = section_body(extra, "server"),
        qb_extra = with_default(&section_body(extra, "quickbooks"), "timeout_secs", "10"),
        boa_extra = with_default(&section_body(extra, "boa"), "timeout_secs", "5"),
        rest = without_sections(extra, &["server", "quickbooks", "boa"]),
    )
}

/// A section body with `key = value` added unless the caller set the key.
fn with_default(body: &str, key: &str, value: &str) -> String {
    if body.lines().any(|l| l.trim_start().starts_with(key)) {
        body.to_string()
    } else {
        format!("{key} = {value}\n{body}")
    }
}
