//! Checks that the fake Intuit behaves as `docs/quickbooks-api.md` says Intuit does, driven
//! with plain reqwest (not our daemon), so daemon tests can trust it.

use std::time::{Duration, Instant};

use crate::support::fake_intuit::{
    CompanySpec, FakeIntuit, FakeIntuitConfig, MissingRate, RateLimit,
};
use chrono::NaiveDate;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{json, Value};

const REALM: &str = "9341453199574798";
const OTHER_REALM: &str = "4620816365257778";

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
}

fn dec(s: &str) -> Decimal {
    s.parse().expect("decimal")
}

async fn started() -> FakeIntuit {
    FakeIntuit::start(FakeIntuitConfig::default()).await
}

/// Runs the browser leg; returns the callback's query parameters.
async fn authorize(fake: &FakeIntuit, c: &reqwest::Client, state: &str) -> Vec<(String, String)> {
    let resp = c
        .get(fake.authorize_url())
        .query(&[
            ("client_id", fake.client_id().as_str()),
            ("response_type", "code"),
            ("scope", "com.intuit.quickbooks.accounting"),
            ("redirect_uri", fake.redirect_uri().as_str()),
            ("state", state),
        ])
        .send()
        .await
        .expect("authorize");
    assert_eq!(resp.status(), StatusCode::FOUND);
    let location = resp.headers()["location"].to_str().expect("location");
    assert!(location.starts_with(&fake.redirect_uri()), "{location}");
    let url = url::Url::parse(location).expect("url");
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn token_call(
    fake: &FakeIntuit,
    c: &reqwest::Client,
    form: &[(&str, &str)],
    hard_header: bool,
) -> (StatusCode, HeaderMap, Value) {
    let mut req = c
        .post(fake.token_url())
        .basic_auth(fake.client_id(), Some(fake.client_secret()))
        .header("accept", "application/json")
        .form(form);
    if hard_header {
        req = req.header("x-include-refresh-token-hard-expires-in", "true");
    }
    let resp = req.send().await.expect("token call");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, headers, body)
}

async fn exchange_code(fake: &FakeIntuit, c: &reqwest::Client, code: &str) -> (StatusCode, Value) {
    let redirect = fake.redirect_uri();
    let (s, _, b) = token_call(
        fake,
        c,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &redirect),
        ],
        true,
    )
    .await;
    (s, b)
}

async fn refresh(fake: &FakeIntuit, c: &reqwest::Client, rt: &str) -> (StatusCode, Value) {
    let (s, _, b) = token_call(
        fake,
        c,
        &[("grant_type", "refresh_token"), ("refresh_token", rt)],
        false,
    )
    .await;
    (s, b)
}

fn assert_invalid_grant(status: StatusCode, body: &Value) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body,
        &json!({"error": "invalid_grant", "error_description": "Token invalid"})
    );
}

async fn api_get(
    fake: &FakeIntuit,
    c: &reqwest::Client,
    realm: &str,
    at: &str,
    path_and_query: &str,
) -> (StatusCode, HeaderMap, String) {
    let sep = if path_and_query.contains('?') {
        '&'
    } else {
        '?'
    };
    let resp = c
        .get(format!(
            "{}/v3/company/{realm}/{path_and_query}{sep}minorversion=75",
            fake.api_base()
        ))
        .bearer_auth(at)
        .header("accept", "application/json")
        .send()
        .await
        .expect("api get");
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.expect("body"))
}

async fn query(fake: &FakeIntuit, c: &reqwest::Client, at: &str, q: &str) -> (StatusCode, Value) {
    let resp = c
        .get(format!("{}/v3/company/{REALM}/query", fake.api_base()))
        .query(&[("query", q), ("minorversion", "75")])
        .bearer_auth(at)
        .header("accept", "application/json")
        .send()
        .await
        .expect("query");
    let status = resp.status();
    (status, resp.json().await.expect("json"))
}

/// POSTs an ExchangeRate with a raw JSON body (so Rate's exact text is what we wrote).
async fn post_rate(
    fake: &FakeIntuit,
    c: &reqwest::Client,
    at: &str,
    request_id: Option<&str>,
    body: String,
) -> (StatusCode, String) {
    let mut url = format!(
        "{}/v3/company/{REALM}/exchangerate?minorversion=75",
        fake.api_base()
    );
    if let Some(id) = request_id {
        url.push_str(&format!("&requestid={id}"));
    }
    let resp = c
        .post(url)
        .bearer_auth(at)
        .header("accept", "application/json")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("post");
    let status = resp.status();
    (status, resp.text().await.expect("body"))
}

fn rate_body(source: &str, rate: &str, date: &str, sync_token: &str) -> String {
    format!(
        r#"{{"SourceCurrencyCode":"{source}","TargetCurrencyCode":"ALL","Rate":{rate},"AsOfDate":"{date}","SyncToken":"{sync_token}"}}"#
    )
}

fn fault_code(body: &str) -> (String, String) {
    let v: Value = serde_json::from_str(body).expect("fault json");
    (
        v["Fault"]["type"].as_str().unwrap_or_default().to_string(),
        v["Fault"]["Error"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

fn connected() -> (CompanySpec, CompanySpec) {
    let main = CompanySpec {
        inactive_currencies: vec!["GBP".to_string()],
        ..CompanySpec::new(REALM, "Tregtia Sh.p.k.")
    };
    (main, CompanySpec::new(OTHER_REALM, "Other Sh.p.k."))
}

// ---- discovery and authorize ----------------------------------------------------------------

#[tokio::test]
async fn discovery_document_points_at_the_fake() {
    let fake = started().await;
    let c = client();
    let resp = c.get(fake.discovery_url()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("intuit_tid"));
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["authorization_endpoint"], fake.authorize_url());
    assert_eq!(doc["token_endpoint"], fake.token_url());
    assert_eq!(doc["revocation_endpoint"], fake.revoke_url());
    for key in ["issuer", "userinfo_endpoint", "jwks_uri"] {
        assert!(doc[key].is_string(), "{key}");
    }
}

#[tokio::test]
async fn authorize_redirects_with_code_state_and_realm_then_code_is_single_use() {
    let fake = started().await;
    fake.add_company(CompanySpec::new(REALM, "A"));
    let c = client();
    let pairs = authorize(&fake, &c, "st-123").await;
    assert_eq!(param(&pairs, "state"), Some("st-123"));
    assert_eq!(param(&pairs, "realmId"), Some(REALM));
    let code = param(&pairs, "code").expect("code").to_string();

    let (status, body) = exchange_code(&fake, &c, &code).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["x_refresh_token_expires_in"], 8_726_400);
    assert!(body["x_refresh_token_hard_expires_in"].as_i64().unwrap() > 5 * 365 * 86400);
    let at = body["access_token"].as_str().unwrap();
    let rt = body["refresh_token"].as_str().unwrap();
    assert!(at.starts_with("fakeAT-") && rt.starts_with("fakeRT-"));
    assert_eq!(fake.issued_access_tokens(), vec![at.to_string()]);
    assert_eq!(fake.issued_refresh_tokens(), vec![rt.to_string()]);

    let (status, body) = exchange_code(&fake, &c, &code).await;
    assert_invalid_grant(status, &body);
    assert_eq!(fake.token_calls(), 2);
}

#[tokio::test]
async fn set_next_realm_picks_the_company_handed_out() {
    let fake = started().await;
    fake.add_company(CompanySpec::new(REALM, "A"));
    fake.add_company(CompanySpec::new(OTHER_REALM, "B"));
    let c = client();
    assert_eq!(
        param(&authorize(&fake, &c, "s").await, "realmId"),
        Some(OTHER_REALM)
    );
    fake.set_next_realm(REALM);
    assert_eq!(
        param(&authorize(&fake, &c, "s").await, "realmId"),
        Some(REALM)
    );
}

#[tokio::test]
async fn expired_code_is_invalid_grant() {
    let fake = started().await;
    fake.add_company(CompanySpec::new(REALM, "A"));
    let c = client();
    let pairs = authorize(&fake, &c, "s").await;
    fake.advance(Duration::from_secs(301));
    let (status, body) = exchange_code(&fake, &c, param(&pairs, "code").unwrap()).await;
    assert_invalid_grant(status, &body);
}

#[tokio::test]
async fn redirect_uri_must_match_at_authorize_and_at_exchange() {
    let fake = started().await;
    fake.add_company(CompanySpec::new(REALM, "A"));
    let c = client();
    let authorize_with = |client_id: String, redirect: String, scope: &'static str| {
        let c = c.clone();
        let url = fake.authorize_url();
        async move {
            c.get(url)
                .query(&[
                    ("client_id", client_id.as_str()),
                    ("response_type", "code"),
                    ("scope", scope),
                    ("redirect_uri", redirect.as_str()),
                    ("state", "s"),
                ])
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let good = fake.redirect_uri();
    let accounting = "com.intuit.quickbooks.accounting";
    assert_eq!(
        authorize_with(fake.client_id(), format!("{good}/"), accounting).await,
        400
    );
    assert_eq!(
        authorize_with("nope".into(), good.clone(), accounting).await,
        400
    );
    assert_eq!(
        authorize_with(fake.client_id(), good.clone(), "openid").await,
        400
    );
    assert_eq!(
        authorize_with(
            fake.client_id(),
            good.clone(),
            "com.intuit.quickbooks.accounting openid"
        )
        .await,
        302
    );

    let pairs = authorize(&fake, &c, "s").await;
    let code = param(&pairs, "code").unwrap();
    let wrong = format!("{good}?x=1");
    let (status, _, body) = token_call(
        &fake,
        &c,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &wrong),
        ],
        false,
    )
    .await;
    assert_invalid_grant(status, &body);
    // The right redirect_uri still works: a mismatch does not burn the code.
    let (status, _) = exchange_code(&fake, &c, code).await;
    assert_eq!(status, 200);

    // A redirect URI registered later works too.
    fake.register_redirect_uri("http://127.0.0.1:9/cb");
    assert_eq!(
        authorize_with(fake.client_id(), "http://127.0.0.1:9/cb".into(), accounting).await,
        302
    );
}

#[tokio::test]
async fn deny_next_redirects_with_access_denied() {
    let fake = started().await;
    fake.add_company(CompanySpec::new(REALM, "A"));
    fake.deny_next();
    let c = client();
    let pairs = authorize(&fake, &c, "st-9").await;
    assert_eq!(param(&pairs, "error"), Some("access_denied"));
    assert_eq!(param(&pairs, "state"), Some("st-9"));
    assert_eq!(param(&pairs, "code"), None);
    assert_eq!(param(&pairs, "realmId"), None);
    // One-shot.
    assert!(param(&authorize(&fake, &c, "s").await, "code").is_some());
}

#[tokio::test]
async fn bad_basic_auth_is_invalid_client_401() {
    let fake = started().await;
    let (_, rt) = fake.add_connected_company(CompanySpec::new(REALM, "A"));
    let c = client();
    for auth in [
        Some(("fake-client-id", "wrong")),
        Some(("other", "fake-client-secret")),
        None,
    ] {
        let mut req = c.post(fake.token_url()).form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt.as_str()),
        ]);
        if let Some((id, secret)) = auth {
            req = req.basic_auth(id, Some(secret));
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401);
        assert!(resp.headers().contains_key("intuit_tid"));
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body, json!({"error": "invalid_client"}));
    }
}

// ---- refresh and rotation -------------------------------------------------------------------

#[tokio::test]
async fn refresh_keeps_the_token_inside_the_rotation_interval_and_rotates_after() {
    let fake = started().await;
    let (_, rt0) = fake.add_connected_company(CompanySpec::new(REALM, "A"));
    let c = client();

    fake.advance(Duration::from_secs(3600));
    let (status, body) = refresh(&fake, &c, &rt0).await;
    assert_eq!(status, 200);
    assert_eq!(body["refresh_token"], rt0.as_str());
    assert_eq!(body["x_refresh_token_expires_in"], 8_726_400);
    assert!(body.get("x_refresh_token_hard_expires_in").is_none());

    fake.advance(Duration::from_secs(23 * 3600));
    let (status, body) = refresh(&fake, &c, &rt0).await;
    assert_eq!(status, 200);
    let rt1 = body["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt1, rt0);
    assert_eq!(fake.current_refresh_token(REALM), Some(rt1.clone()));

    // The previous token works inside its grace period and yields the current one...
    fake.advance(Duration::from_secs(23 * 3600));
    let (status, body) = refresh(&fake, &c, &rt0).await;
    assert_eq!(status, 200);
    assert_eq!(body["refresh_token"], rt1.as_str());
    // ...and fails after it.
    fake.advance(Duration::from_secs(2 * 3600));
    let (status, body) = refresh(&fake, &c, &rt0).await;
    assert_invalid_grant(status, &body);
    // The current one still rotates normally (it is now older than 24 h).
    let (status, body) = refresh(&fake, &c, &rt1).await;
    assert_eq!(status, 200);
    assert_ne!(body["refresh_token"], rt1.as_str());
    assert_eq!(fake.issued_refresh_tokens().len(), 3);
    assert_eq!(fake.refreshes(REALM), 4);
    // Every refresh above came once the access token had expired.
    assert_eq!(fake.early_refreshes(), 0);
}

#[tokio::test]
async fn rotate_now_forces_a_new_refresh_token() {
    let fake = started().await;
    let (_, rt0) = fake.add_connected_company(CompanySpec::new(REALM, "A"));
    let c = client();
    fake.rotate_now(REALM);
    let (_, body) = refresh(&fake, &c, &rt0).await;
    let rt1 = body["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt1, rt0);
    let (_, body) = refresh(&fake, &c, &rt1).await;
    assert_eq!(body["refresh_token"], rt1.as_str(), "forcing is one-shot");
    // Both refreshes came with a fresh access token in hand.
    assert_eq!(fake.early_refreshes(), 2);
}

#[tokio::test]
async fn hard_expiry_field_only_with_the_opt_in_header() {
    let fake = started().await;
    let (_, rt) = fake.add_connected_company(CompanySpec::new(REALM, "A"));
    let c = client();
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", rt.as_str()),
    ];
    let (_, _, without) = token_call(&fake, &c, &form, false).await;
    assert!(without.get("x_refresh_token_hard_expires_in").is_none());
    let (_, _, with) = token_call(&fake, &c, &form, true).await;
    let secs = with["x_refresh_token_hard_expires_in"].as_i64().unwrap();
    assert!(
        (5 * 365 * 86400..=5 * 365 * 86400 + 86400).contains(&secs),
        "{secs}"
    );
}

#[tokio::test]
async fn rolling_window_and_hard_cap_end_the_chain() {
    let fake = FakeIntuit::start(FakeIntuitConfig {
        refresh_token_lifetime: Duration::from_secs(1000),
        hard_expiry: Duration::from_secs(2500),
        rotation_interval: Duration::from_secs(100_000),
        ..FakeIntuitConfig::default()
    })
    .await;
    let (_, rt) = fake.add_connected_company(CompanySpec::new(REALM, "A"));
    let c = client();
    // Each refresh restarts the rolling window...
    for _ in 0..2 {
        fake.advance(Duration::from_secs(900));
        let (status, body) = refresh(&fake, &c, &rt).await;
        assert_eq!(status, 200, "{body}");
    }
    // ...but never beyond the hard expiry (2500 s after authorization; now 1800).
    let (_, _, body) = token_call(
        &fake,
        &c,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt.as_str()),
        ],
        true,
    )
    .await;
    assert_eq!(body["x_refresh_token_expires_in"], 700);
    assert_eq!(body["x_refresh_token_hard_expires_in"], 700);
    fake.advance(Duration::from_secs(701));
    let (status, body) = refresh(&fake, &c, &rt).await;
    assert_invalid_grant(status, &body);

    // An idle chain dies when the rolling window lapses.
    let (_, rt2) = fake.add_connected_company(CompanySpec::new(OTHER_REALM, "B"));
    fake.advance(Duration::from_secs(1001));
    let (status, body) = refresh(&fake, &c, &rt2).await;
    assert_invalid_grant(status, &body);
}

#[tokio::test]
async fn token_failures_are_injectable_and_counted() {
    let fake = started().await;
    let (_, rt) = fake.add_connected_company(CompanySpec::new(REALM, "A"));
    let c = client();
    fake.fail_next_token_calls(2, 500);
    for _ in 0..2 {
        let resp = c
            .post(fake.token_url())
            .basic_auth(fake.client_id(), Some(fake.client_secret()))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 500);
    }
    let (status, _) = refresh(&fake, &c, &rt).await;
    assert_eq!(status, 200);
    assert_eq!(fake.token_calls(), 3);
}

#[tokio::test]
async fn unknown_grant_type_and_missing_fields() {
    let fake = started().await;
    let c = client();
    let (s, _, b) = token_call(&fake, &c, &[("grant_type", "password")], false).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unsupported_grant_type"))
    );
    let (s, _, b) = token_call(&fake, &c, &[("grant_type", "refresh_token")], false).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    let (s, _, b) = token_call(
        &fake,
        &c,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", "fakeRT-unknown"),
        ],
        false,
    )
    .await;
    assert_invalid_grant(s, &b);
}

// ---- revoke ---------------------------------------------------------------------------------

#[tokio::test]
async fn revoke_kills_the_whole_grant() {
    let fake = started().await;
    let (at, rt) = fake.add_connected_company(CompanySpec::new(REALM, "A"));
    let c = client();
    assert!(!fake.is_grant_revoked(REALM));
    let resp = c
        .post(fake.revoke_url())
        .basic_auth(fake.client_id(), Some(fake.client_secret()))
        .header("accept", "application/json")
        .json(&json!({"token": rt}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("intuit_tid"));
    assert!(fake.is_grant_revoked(REALM));
    assert!(!fake.is_connected(REALM));
    assert_eq!(fake.revoked_tokens(), vec![rt.clone()]);
    let (status, body) = refresh(&fake, &c, &rt).await;
    assert_invalid_grant(status, &body);
    let (status, _, _) = api_get(&fake, &c, REALM, &at, "preferences").await;
    assert_eq!(status, 401);

    // Bad credentials on revoke: 401 invalid_client.
    let resp = c
        .post(fake.revoke_url())
        .basic_auth("x", Some("y"))
        .json(&json!({"token": rt}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn revoke_grant_knob_disconnects_the_realm() {
    let fake = started().await;
    let (_, rt) = fake.add_connected_company(CompanySpec::new(REALM, "A"));
    fake.revoke_grant(REALM);
    let (status, body) = refresh(&fake, &client(), &rt).await;
    assert_invalid_grant(status, &body);
    assert!(fake.is_grant_revoked(REALM));
}

// ---- accounting API: auth -------------------------------------------------------------------

#[tokio::test]
async fn api_rejects_expired_and_foreign_access_tokens_with_gateway_401() {
    let fake = started().await;
    let (main, other) = connected();
    let (at, _) = fake.add_connected_company(main);
    let (other_at, _) = fake.add_connected_company(other);
    let c = client();

    let (status, headers, _) = api_get(&fake, &c, REALM, &at, "preferences").await;
    assert_eq!(status, 200);
    assert!(headers.contains_key("intuit_tid"));

    let (status, headers, body) = api_get(&fake, &c, REALM, &other_at, "preferences").await;
    assert_eq!(status, 401);
    assert!(headers.contains_key("intuit_tid"));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["fault"]["type"], "AUTHENTICATION");
    assert_eq!(v["fault"]["error"][0]["code"], "3200");

    let (status, _, _) = api_get(&fake, &c, REALM, "garbage", "preferences").await;
    assert_eq!(status, 401);

    fake.advance(Duration::from_secs(3600));
    let (status, _, _) = api_get(&fake, &c, REALM, &at, "preferences").await;
    assert_eq!(status, 401);

    // The XML flavour, for client parsers that must tolerate it.
    fake.set_xml_401(true);
    let (status, headers, body) = api_get(&fake, &c, REALM, &at, "preferences").await;
    assert_eq!(status, 401);
    assert!(headers["content-type"].to_str().unwrap().contains("xml"));
    assert!(body.contains("AuthenticationFault"));
}

#[tokio::test]
async fn expire_access_tokens_knob_forces_401() {
    let fake = started().await;
    let (at, _) = fake.add_connected_company(CompanySpec::new(REALM, "A"));
    let c = client();
    fake.expire_access_tokens(REALM);
    let (status, _, _) = api_get(&fake, &c, REALM, &at, "preferences").await;
    assert_eq!(status, 401);
}

// ---- accounting API: company entities -------------------------------------------------------

#[tokio::test]
async fn company_info_preferences_and_currencies() {
    let fake = started().await;
    let (at, _) = fake.add_connected_company(connected().0);
    let c = client();

    let (status, _, body) = api_get(&fake, &c, REALM, &at, &format!("companyinfo/{REALM}")).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["CompanyInfo"]["CompanyName"], "Tregtia Sh.p.k.");
    assert_eq!(v["CompanyInfo"]["LegalName"], "Tregtia Sh.p.k.");
    assert_eq!(v["CompanyInfo"]["Country"], "AL");
    assert_eq!(v["CompanyInfo"]["Id"], "1");
    assert!(v["time"].is_string());

    let (_, _, body) = api_get(&fake, &c, REALM, &at, "preferences").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["Preferences"]["CurrencyPrefs"]["MultiCurrencyEnabled"],
        true
    );
    assert_eq!(
        v["Preferences"]["CurrencyPrefs"]["HomeCurrency"]["value"],
        "ALL"
    );

    let (status, v) = query(&fake, &c, &at, "SELECT * FROM CompanyCurrency").await;
    assert_eq!(status, 200);
    let rows = v["QueryResponse"]["CompanyCurrency"].as_array().unwrap();
    let codes: Vec<(&str, bool)> = rows
        .iter()
        .map(|r| (r["Code"].as_str().unwrap(), r["Active"].as_bool().unwrap()))
        .collect();
    assert_eq!(codes, vec![("EUR", true), ("USD", true), ("GBP", false)]);
    for r in rows {
        for key in ["Id", "SyncToken", "Name"] {
            assert!(r[key].is_string(), "{key}");
        }
        assert!(r["MetaData"]["LastUpdatedTime"].is_string());
    }
    let (_, v) = query(
        &fake,
        &c,
        &at,
        "select * from companycurrency where active = true",
    )
    .await;
    assert_eq!(
        v["QueryResponse"]["CompanyCurrency"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    fake.set_currency_active(REALM, "GBP", true);
    fake.set_currency_active(REALM, "ALL", true); // home: never listed
    let (_, v) = query(
        &fake,
        &c,
        &at,
        "select * from companycurrency where active = true",
    )
    .await;
    assert_eq!(
        v["QueryResponse"]["CompanyCurrency"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

// ---- accounting API: exchange rates ---------------------------------------------------------

#[tokio::test]
async fn exchange_rate_create_update_and_stale_sync_token() {
    let fake = started().await;
    let (at, _) = fake.add_connected_company(connected().0);
    let c = client();

    let (status, body) = post_rate(
        &fake,
        &c,
        &at,
        None,
        rate_body("EUR", "98.65", "2025-03-14", "0"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let er = &v["ExchangeRate"];
    assert_eq!(er["SyncToken"], "0");
    assert_eq!(er["domain"], "QBO");
    assert_eq!(er["sparse"], false);
    assert_eq!(er["AsOfDate"], "2025-03-14");
    assert_eq!(er["TargetCurrencyCode"], "ALL");
    assert!(er["Rate"].is_number());
    assert!(body.contains("\"Rate\":98.65"), "{body}");
    assert!(er["MetaData"]["LastUpdatedTime"].is_string());
    assert!(v["time"].is_string());

    // An exact decimal survives untouched (no f64 on the way in or out).
    let (status, body) = post_rate(
        &fake,
        &c,
        &at,
        None,
        rate_body("EUR", "98.123456789012345678", "2025-03-14", "0"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"Rate\":98.123456789012345678"), "{body}");
    assert!(body.contains("\"SyncToken\":\"1\""), "{body}");
    let stored = fake
        .exchange_rate(REALM, "EUR", date("2025-03-14"))
        .unwrap();
    assert_eq!(stored.rate, dec("98.123456789012345678"));
    assert_eq!(stored.sync_token, "1");

    let (status, body) = post_rate(
        &fake,
        &c,
        &at,
        None,
        rate_body("EUR", "99", "2025-03-14", "0"),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(fault_code(&body), ("ValidationFault".into(), "5010".into()));
    assert_eq!(
        fake.exchange_rate(REALM, "EUR", date("2025-03-14"))
            .unwrap()
            .rate,
        dec("98.123456789012345678")
    );
    assert_eq!(fake.writes(REALM), 3);
}

#[tokio::test]
async fn exchange_rate_validation_faults() {
    let fake = started().await;
    let (at, _) = fake.add_connected_company(connected().0);
    let c = client();
    let d = "2025-03-14";

    let (status, body) = post_rate(&fake, &c, &at, None, rate_body("ALL", "1", d, "0")).await;
    assert_eq!(status, 400);
    assert_eq!(fault_code(&body), ("ValidationFault".into(), "6000".into()));

    // Inactive (GBP) and unknown (CHF) currencies: 610.
    for cur in ["GBP", "CHF"] {
        let (status, body) = post_rate(&fake, &c, &at, None, rate_body(cur, "120", d, "0")).await;
        assert_eq!(status, 400);
        assert_eq!(fault_code(&body), ("ValidationFault".into(), "610".into()));
    }

    // Rate as a string, SyncToken as a number, unknown field, missing field.
    for body in [
        r#"{"SourceCurrencyCode":"EUR","Rate":"98.65","AsOfDate":"2025-03-14","SyncToken":"0"}"#,
        r#"{"SourceCurrencyCode":"EUR","Rate":98.65,"AsOfDate":"2025-03-14","SyncToken":0}"#,
        r#"{"SourceCurrencyCode":"EUR","Rate":98.65,"AsOfDate":"2025-03-14","SyncToken":"0","Id":"1"}"#,
    ] {
        let (status, resp) = post_rate(&fake, &c, &at, None, body.to_string()).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(fault_code(&resp).1, "2010", "{body}");
    }
    let (status, resp) = post_rate(
        &fake,
        &c,
        &at,
        None,
        r#"{"SourceCurrencyCode":"EUR","Rate":98.65,"AsOfDate":"2025-03-14"}"#.to_string(),
    )
    .await;
    assert_eq!(
        (status.as_u16(), fault_code(&resp).1.as_str()),
        (400, "2020")
    );

    fake.set_multicurrency(REALM, false);
    let (status, body) = post_rate(&fake, &c, &at, None, rate_body("EUR", "98", d, "0")).await;
    assert_eq!(status, 400);
    assert_eq!(fault_code(&body), ("ValidationFault".into(), "6000".into()));
    assert!(fake.exchange_rates(REALM).is_empty());
}

#[tokio::test]
async fn requestid_replays_the_first_answer() {
    let fake = started().await;
    let (at, _) = fake.add_connected_company(connected().0);
    let c = client();
    let body = rate_body("USD", "92.5", "2025-03-14", "0");
    let (s1, b1) = post_rate(&fake, &c, &at, Some("req-1"), body.clone()).await;
    let (s2, b2) = post_rate(&fake, &c, &at, Some("req-1"), body.clone()).await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
    assert_eq!(b1, b2);
    assert_eq!(
        fake.exchange_rate(REALM, "USD", date("2025-03-14"))
            .unwrap()
            .sync_token,
        "0"
    );
    assert_eq!(fake.idempotent_replays(), 1);
    assert!(fake.requestid_conflicts().is_empty());

    // A new id runs the write again (token "0" now matches: update to "1").
    let (_, b3) = post_rate(&fake, &c, &at, Some("req-2"), body).await;
    assert!(b3.contains("\"SyncToken\":\"1\""), "{b3}");
    // Reusing an id with another body replays the first answer and is reported.
    let (_, b4) = post_rate(
        &fake,
        &c,
        &at,
        Some("req-1"),
        rate_body("USD", "1", "2025-03-14", "1"),
    )
    .await;
    assert_eq!(b4, b1);
    assert_eq!(
        fake.requestid_conflicts(),
        vec![(REALM.to_string(), "req-1".to_string())]
    );

    // Too long a requestid is refused.
    let long = "x".repeat(51);
    let (status, _) = post_rate(
        &fake,
        &c,
        &at,
        Some(&long),
        rate_body("USD", "1", "2025-03-15", "0"),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn read_one_rate_and_the_missing_date_switch() {
    let fake = started().await;
    let (at, _) = fake.add_connected_company(connected().0);
    let c = client();
    fake.set_exchange_rate(REALM, "EUR", date("2025-03-13"), dec("98.10"));
    fake.set_exchange_rate(REALM, "EUR", date("2025-03-14"), dec("98.65"));
    fake.set_exchange_rate(REALM, "EUR", date("2025-03-14"), dec("98.70")); // a UI edit

    let (status, _, body) = api_get(
        &fake,
        &c,
        REALM,
        &at,
        "exchangerate?sourcecurrencycode=EUR&asofdate=2025-03-14",
    )
    .await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ExchangeRate"]["SyncToken"], "1");
    assert!(body.contains("\"Rate\":98.70"), "{body}");

    // Nearest earlier row (default): its own AsOfDate comes back.
    let (status, _, body) = api_get(
        &fake,
        &c,
        REALM,
        &at,
        "exchangerate?sourcecurrencycode=EUR&asofdate=2025-03-20",
    )
    .await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ExchangeRate"]["AsOfDate"], "2025-03-14");

    let (status, _, body) = api_get(
        &fake,
        &c,
        REALM,
        &at,
        "exchangerate?sourcecurrencycode=USD&asofdate=2025-03-20",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(fault_code(&body).1, "610");

    fake.set_missing_rate(MissingRate::NotFound);
    let (status, _, body) = api_get(
        &fake,
        &c,
        REALM,
        &at,
        "exchangerate?sourcecurrencycode=EUR&asofdate=2025-03-20",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(fault_code(&body), ("ValidationFault".into(), "610".into()));
    assert_eq!(fake.reads(REALM), 4);
}

#[tokio::test]
async fn query_exchange_rates_filters_pages_and_answers_empty() {
    let fake = started().await;
    let (at, _) = fake.add_connected_company(connected().0);
    let c = client();
    let d = date("2025-03-14");
    fake.set_exchange_rate(REALM, "EUR", d, dec("98.65"));
    fake.set_exchange_rate(REALM, "USD", d, dec("92.5"));
    fake.set_exchange_rate(REALM, "EUR", date("2025-03-13"), dec("98.1"));

    let (status, v) = query(
        &fake,
        &c,
        &at,
        "select * from exchangerate where sourcecurrencycode in ('EUR','USD') and asofdate='2025-03-14'",
    )
    .await;
    assert_eq!(status, 200);
    let qr = &v["QueryResponse"];
    assert_eq!(qr["startPosition"], 1);
    assert_eq!(qr["maxResults"], 2);
    let sources: Vec<&str> = qr["ExchangeRate"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["SourceCurrencyCode"].as_str().unwrap())
        .collect();
    assert_eq!(sources, vec!["EUR", "USD"]);

    let (_, v) = query(
        &fake,
        &c,
        &at,
        "SELECT * FROM ExchangeRate WHERE AsOfDate = '2025-03-14' AND SourceCurrencyCode = 'USD'",
    )
    .await;
    assert_eq!(
        v["QueryResponse"]["ExchangeRate"].as_array().unwrap().len(),
        1
    );

    // Paging over all three rows.
    let (_, v) = query(
        &fake,
        &c,
        &at,
        "select * from exchangerate STARTPOSITION 1 MAXRESULTS 2",
    )
    .await;
    assert_eq!(
        v["QueryResponse"]["ExchangeRate"].as_array().unwrap().len(),
        2
    );
    let (_, v) = query(
        &fake,
        &c,
        &at,
        "select * from exchangerate STARTPOSITION 3 MAXRESULTS 2",
    )
    .await;
    assert_eq!(
        v["QueryResponse"]["ExchangeRate"].as_array().unwrap().len(),
        1
    );
    assert_eq!(v["QueryResponse"]["startPosition"], 3);
    let (_, v) = query(
        &fake,
        &c,
        &at,
        "select * from exchangerate STARTPOSITION 4 MAXRESULTS 2",
    )
    .await;
    assert_eq!(v["QueryResponse"], json!({}));

    let (_, v) = query(
        &fake,
        &c,
        &at,
        "select count(*) from exchangerate where asofdate = '2025-03-14'",
    )
    .await;
    assert_eq!(v["QueryResponse"]["totalCount"], 2);

    let (status, v) = query(
        &fake,
        &c,
        &at,
        "select * from exchangerate where asofdate = '2024-01-01'",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["QueryResponse"], json!({}));
    assert!(v["time"].is_string());

    let (status, v) = query(&fake, &c, &at, "select * from exchangerate maxresults 1001").await;
    assert_eq!(status, 400);
    assert_eq!(v["Fault"]["Error"][0]["code"], "4001");
    let (status, v) = query(&fake, &c, &at, "select * from exchangerate where").await;
    assert_eq!(status, 400);
    assert_eq!(v["Fault"]["Error"][0]["code"], "4000");
    let (status, v) = query(&fake, &c, &at, "select * from exchangerate where rate = 1").await;
    assert_eq!(status, 400);
    assert_eq!(v["Fault"]["Error"][0]["code"], "4001");

    assert_eq!(fake.reads(REALM), 10);
    assert_eq!(fake.writes(REALM), 0);
}

#[tokio::test]
async fn query_pages_default_to_100() {
    let fake = started().await;
    let (at, _) = fake.add_connected_company(connected().0);
    let c = client();
    let start = date("2025-01-01");
    for i in 0..150 {
        fake.set_exchange_rate(REALM, "EUR", start + chrono::Days::new(i), dec("100"));
    }
    let (_, v) = query(&fake, &c, &at, "select * from exchangerate").await;
    assert_eq!(v["QueryResponse"]["maxResults"], 100);
    let (_, v) = query(
        &fake,
        &c,
        &at,
        "select * from exchangerate startposition 101",
    )
    .await;
    assert_eq!(v["QueryResponse"]["maxResults"], 50);
}

// ---- gateway behaviour: throttling, failures, latency, concurrency -------------------------

#[tokio::test]
async fn injected_429_is_xml_with_optional_retry_after() {
    let fake = started().await;
    let (at, _) = fake.add_connected_company(connected().0);
    let c = client();
    fake.fail_next_api_calls(1, 429);
    let (status, headers, body) = api_get(&fake, &c, REALM, &at, "preferences").await;
    assert_eq!(status, 429);
    assert!(headers["content-type"].to_str().unwrap().contains("xml"));
    assert!(body.contains("ThrottleExceeded") && body.contains("<Fault type=\"SERVICE\">"));
    assert!(!headers.contains_key("retry-after"));

    fake.set_retry_after(Some(Duration::from_secs(7)));
    fake.set_xml_429(false);
    fake.fail_next_api_calls_for(REALM, 1, 429);
    let (status, headers, body) = api_get(&fake, &c, REALM, &at, "preferences").await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "7");
    assert!(body.contains("ThrottleExceeded"));
    serde_json::from_str::<Value>(&body).expect("json flavour");

    fake.fail_next_api_calls(1, 500);
    fake.fail_next_api_calls(1, 503);
    fake.fail_next_api_calls(1, 200);
    assert_eq!(api_get(&fake, &c, REALM, &at, "preferences").await.0, 500);
    assert_eq!(api_get(&fake, &c, REALM, &at, "preferences").await.0, 503);
    let (status, _, body) = api_get(&fake, &c, REALM, &at, "preferences").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"Fault\""));
    assert_eq!(api_get(&fake, &c, REALM, &at, "preferences").await.0, 200);
    assert_eq!(fake.reads(REALM), 6);
}

#[tokio::test]
async fn concurrency_cap_and_latency() {
    let fake = started().await;
    let (at, _) = fake.add_connected_company(connected().0);
    fake.set_concurrency_cap(Some(2));
    fake.set_latency(Duration::from_millis(500));
    let c = client();
    let started_at = Instant::now();
    let calls = (0..3).map(|_| api_get(&fake, &c, REALM, &at, "preferences"));
    let mut statuses: Vec<u16> = futures_join(calls)
        .await
        .into_iter()
        .map(|r| r.0.as_u16())
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, vec![200, 200, 429]);
    assert!(started_at.elapsed() >= Duration::from_millis(500));
    assert_eq!(fake.peak_in_flight(REALM), 3);
    assert_eq!(fake.peak_in_flight_total(), 3);
}

/// Joins futures concurrently without the `futures` crate.
async fn futures_join<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in set.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("ready")).collect()
}

#[tokio::test]
async fn token_bucket_throttles_per_realm() {
    let fake = FakeIntuit::start(FakeIntuitConfig {
        rate_limits: vec![RateLimit::per_second(2)],
        retry_after: Some(Duration::from_secs(1)),
        ..FakeIntuitConfig::default()
    })
    .await;
    let (main, other) = connected();
    let (at, _) = fake.add_connected_company(main);
    let (other_at, _) = fake.add_connected_company(other);
    let c = client();
    assert_eq!(api_get(&fake, &c, REALM, &at, "preferences").await.0, 200);
    assert_eq!(api_get(&fake, &c, REALM, &at, "preferences").await.0, 200);
    assert_eq!(api_get(&fake, &c, REALM, &at, "preferences").await.0, 429);
    assert_eq!(
        api_get(&fake, &c, OTHER_REALM, &other_at, "preferences")
            .await
            .0,
        200
    );
    fake.advance(Duration::from_secs(1));
    assert_eq!(api_get(&fake, &c, REALM, &at, "preferences").await.0, 200);
}

// ---- observation ----------------------------------------------------------------------------

#[tokio::test]
async fn requests_log_records_what_the_client_sent() {
    let fake = started().await;
    let (at, _) = fake.add_connected_company(connected().0);
    let c = client();
    post_rate(
        &fake,
        &c,
        &at,
        Some("abc"),
        rate_body("EUR", "98.65", "2025-03-14", "0"),
    )
    .await;
    api_get(&fake, &c, REALM, &at, "preferences").await;
    let log = fake.requests_for(REALM);
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].method, "POST");
    assert_eq!(log[0].path(), format!("/v3/company/{REALM}/exchangerate"));
    assert_eq!(log[0].query_param("requestid").as_deref(), Some("abc"));
    assert_eq!(log[0].query_param("minorversion").as_deref(), Some("75"));
    assert_eq!(log[0].header("content-type"), Some("application/json"));
    assert!(log[0].body.contains("\"Rate\":98.65"));
    assert_eq!(log[0].status, Some(200));
    assert_eq!(log[1].method, "GET");
    assert_eq!((fake.reads(REALM), fake.writes(REALM)), (1, 1));
    assert_eq!((fake.total_reads(), fake.total_writes()), (1, 1));
}

#[tokio::test]
async fn missing_accept_json_gets_xml_like_production() {
    let fake = started().await;
    let (at, _) = fake.add_connected_company(connected().0);
    let resp = client()
        .get(format!(
            "{}/v3/company/{REALM}/preferences",
            fake.api_base()
        ))
        .bearer_auth(&at)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().starts_with("<?xml"));
}

#[tokio::test]
async fn many_connected_companies_are_cheap() {
    let fake = FakeIntuit::start(FakeIntuitConfig {
        record_requests: false,
        ..FakeIntuitConfig::default()
    })
    .await;
    let started_at = Instant::now();
    let mut tokens = Vec::new();
    for i in 0..10_000u64 {
        let realm = (9_000_000_000_000_000 + i).to_string();
        tokens.push((
            realm.clone(),
            fake.add_connected_company(CompanySpec::new(realm, "Co")).0,
        ));
    }
    assert!(
        started_at.elapsed() < Duration::from_secs(10),
        "{:?}",
        started_at.elapsed()
    );
    let c = client();
    let (realm, at) = &tokens[9_999];
    assert_eq!(api_get(&fake, &c, realm, at, "preferences").await.0, 200);
    assert_eq!(
        api_get(&fake, &c, realm, &tokens[0].1, "preferences")
            .await
            .0,
        401
    );
}

#[tokio::test]
async fn handler_panic_is_recorded_and_answered_500() {
    let fake = started().await;
    let resp = client()
        .get(format!("{}/__fake/panic", fake.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    let failures = fake.take_failures();
    assert_eq!(failures.len(), 1);
    assert!(failures[0].contains("deliberate panic"), "{failures:?}");
}

#[tokio::test]
#[should_panic(expected = "fake Intuit recorded failures")]
async fn handler_panic_fails_the_test_on_drop() {
    let fake = started().await;
    let _ = client()
        .get(format!("{}/__fake/panic", fake.base_url()))
        .send()
        .await;
    drop(fake);
}

#[tokio::test]
async fn tokens_are_not_issued_for_unregistered_flow() {
    // authorize with no company is fake misuse: recorded, so a forgotten add_company is loud.
    let fake = started().await;
    let resp = client()
        .get(fake.authorize_url())
        .query(&[
            ("client_id", fake.client_id().as_str()),
            ("response_type", "code"),
            ("scope", "com.intuit.quickbooks.accounting"),
            ("redirect_uri", fake.redirect_uri().as_str()),
            ("state", "s"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(fake.take_failures().len(), 1);
}

#[tokio::test]
async fn overlapping_refreshes_are_counted_and_can_break_the_chain() {
    let fake = FakeIntuit::start(FakeIntuitConfig {
        latency: Duration::from_millis(400),
        concurrent_refresh_revokes: true,
        ..FakeIntuitConfig::default()
    })
    .await;
    let (_, rt) = fake.add_connected_company(CompanySpec::new(REALM, "A"));
    let c = client();
    let (status, _) = refresh(&fake, &c, &rt).await;
    assert_eq!(status, 200);
    assert_eq!(fake.concurrent_refreshes(), 0);
    let results = futures_join((0..2).map(|_| refresh(&fake, &c, &rt))).await;
    assert_eq!(fake.concurrent_refreshes(), 1);
    assert!(fake.is_grant_revoked(REALM));
    for (status, body) in results {
        assert_invalid_grant(status, &body);
    }
}
