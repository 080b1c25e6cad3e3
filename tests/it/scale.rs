//! Issue 15 at scale, black box: `companies/list` pages (SPEC §6 `limit`/`after`/
//! `next_after`, the control command and the CLI paging through it), and `/health`,
//! `/metrics` and `status` answering from a snapshot that a company change invalidates at
//! once.

use crate::support::fake_intuit::CompanySpec;
use crate::support::world::World;
use serde_json::{json, Value};

const FRIDAY: &str = "2026-05-22";

fn spec(realm: &str, name: &str) -> CompanySpec {
    let mut s = CompanySpec::new(realm, name);
    s.home_currency = "ALL".into();
    s.active_currencies = vec!["EUR".into(), "USD".into()];
    s
}

async fn world(realms: &[&str]) -> World {
    let w = World::start("").await;
    let f = w.fetch();
    assert_eq!(f["ok"], true, "{f}");
    for r in realms {
        let a = w.connect(spec(r, &format!("Co {r}"))).await;
        assert_eq!(a.status, 200, "connect {r}: {}", a.text);
    }
    w
}

fn ids(v: &Value) -> Vec<String> {
    v["companies"]
        .as_array()
        .unwrap_or_else(|| panic!("no companies: {v}"))
        .iter()
        .map(|c| c["company_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_company_list_pages_with_limit_and_after() {
    let w = world(&["1001", "2002", "3003", "4004", "5005"]).await;
    // 3003 disconnected: listed only with active_only=false.
    let a = w.admin_get("/api/v1/oauth/disconnect/3003").await;
    assert_eq!(a.status, 200, "{}", a.text);

    // Without limit: everything, next_after null.
    let all = w
        .admin_get("/api/v1/companies/list?active_only=false")
        .await
        .json();
    assert_eq!(ids(&all), ["1001", "2002", "3003", "4004", "5005"]);
    assert_eq!(all["next_after"], Value::Null, "{all}");

    // Pages of two, following next_after.
    let mut seen = Vec::new();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let v = w
            .admin_get(&format!(
                "/api/v1/companies/list?active_only=false&limit=2&after={after}"
            ))
            .await
            .json();
        assert_eq!(v["success"], true, "{v}");
        assert_eq!(v["count"], ids(&v).len(), "{v}");
        assert!(ids(&v).len() <= 2, "{v}");
        seen.extend(ids(&v));
        pages += 1;
        match v["next_after"].as_str() {
            Some(n) => {
                assert_eq!(Some(n), ids(&v).last().map(String::as_str), "{v}");
                after = n.to_string();
            }
            None => break,
        }
    }
    assert_eq!(seen, ids(&all));
    assert_eq!(pages, 3);

    // active_only counts only active companies in a page; a full last page has no next.
    let v = w
        .admin_get("/api/v1/companies/list?limit=2&after=2002")
        .await
        .json();
    assert_eq!(ids(&v), ["4004", "5005"]);
    assert_eq!(v["next_after"], Value::Null, "{v}");
    let v = w.admin_get("/api/v1/companies/list?limit=1").await.json();
    assert_eq!(
        (ids(&v), v["next_after"].as_str()),
        (vec!["1001".to_string()], Some("1001"))
    );

    // limit outside 1-1000 or not a number: 400 bad_parameter.
    for bad in ["0", "1001", "-1", "ten", ""] {
        let a = w
            .admin_get(&format!("/api/v1/companies/list?limit={bad}"))
            .await;
        assert_eq!(a.status, 400, "limit={bad}: {}", a.text);
        assert_eq!(a.json()["error"]["code"], "bad_parameter", "{}", a.text);
    }
    assert_eq!(
        w.admin_get("/api/v1/companies/list?limit=1000")
            .await
            .status,
        200
    );

    // The control command takes the same arguments.
    let c = w.control(
        "companies",
        json!({"all": true, "limit": 2, "after": "1001"}),
    );
    assert_eq!(ids(&c["data"]), ["2002", "3003"], "{c}");
    assert_eq!(c["data"]["next_after"], "3003");
    let c = w.control("companies", json!({"limit": 0}));
    assert_eq!(c["ok"], false, "{c}");
    assert_eq!(c["error"]["kind"], "bad_input", "{c}");

    // The CLI pages through it; its answer is the whole list, as before.
    let cli = |args: &[&str]| tokio::task::block_in_place(|| w.daemon.cli(args));
    let (code, out, err) = cli(&["--json", "companies", "--all"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(ids(&v), ids(&all));
    assert_eq!(v["count"], 5);
    let (code, out, err) = cli(&["companies"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("COMPANY"), "{out}");
    assert_eq!(
        out.lines().count(),
        5,
        "header and four active companies: {out}"
    );
}

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_see_a_change_at_once() {
    let w = world(&["1001", "2002", "3003"]).await;
    let h = w.get("/health").await.json();
    assert_eq!(h["total_companies"], 3, "{h}");
    assert_eq!(h["active_companies"], 3, "{h}");
    assert_eq!(h["companies_with_expired_tokens"], 0, "{h}");
    let m = w.get("/metrics").await.text;
    assert_eq!(
        metric(&m, "boa_exchange_companies{state=\"reconnect_needed\"}"),
        Some(0.0),
        "{m}"
    );

    // A sync-all flags 2002 reconnect-needed: the very next answers say so (well within the
    // snapshot's 5 s lifetime, so a snapshot not invalidated by the change would not).
    w.intuit.revoke_grant("2002");
    let a = w
        .admin_post(&format!("/api/v1/companies/sync-all?target_date={FRIDAY}"))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json()["failed"], 1, "{}", a.text);
    let h = w.get("/health").await.json();
    assert_eq!(h["companies_with_expired_tokens"], 1, "{h}");
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(h["last_sync"].is_string(), "{h}");
    let m = w.get("/metrics").await.text;
    assert_eq!(
        metric(&m, "boa_exchange_companies{state=\"reconnect_needed\"}"),
        Some(1.0),
        "{m}"
    );
    let st = w.control("status", json!({}));
    assert_eq!(st["data"]["companies"]["with_expired_tokens"], 1, "{st}");

    // A settings change and a disconnect, each seen by the next answer.
    let a = w
        .admin_put(
            "/api/v1/companies/1001/settings",
            r#"{"sync_enabled": false}"#,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let m = w.get("/metrics").await.text;
    assert_eq!(
        metric(&m, "boa_exchange_companies{state=\"sync_disabled\"}"),
        Some(1.0),
        "{m}"
    );
    let (code, _, err) = tokio::task::block_in_place(|| w.daemon.cli(&["disconnect", "3003"]));
    assert_eq!(code, 0, "{err}");
    let h = w.get("/health").await.json();
    assert_eq!(
        (
            h["total_companies"].as_u64(),
            h["active_companies"].as_u64()
        ),
        (Some(3), Some(2)),
        "{h}"
    );
}
