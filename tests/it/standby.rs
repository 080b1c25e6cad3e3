//! Leader and standby on one PostgreSQL database (SPEC §13), black box: real daemons
//! (the binary) sharing one database, one identity file and one fake Intuit; each node has a
//! fake BoA of its own, so the page fetches tell which node ran the scheduled work.
//!
//! - exactly one leader (`status`, `/health`, `/metrics`), and only it runs the daily
//!   schedule; the standby serves the API, OAuth and on-demand syncs;
//! - the leader killed (-9) mid daily run: the standby leads within the lease and finishes
//!   the day, every rate applied once at QuickBooks, no token lost;
//! - one expired token, two nodes at once: one refresh at Intuit;
//! - the database restarted: `503 store_unavailable` meanwhile, `/health` degraded naming
//!   the store, then the daemon goes on by itself and nothing acknowledged is lost;
//! - a second sync-all for the same date on the other node joins the first or is 409.
//!
//! The daily-schedule tests use the real clock: the fake BoA serves the 2026-05-22 capture
//! re-dated to today in Tirana, the schedule time is 00:00, so today's run is "missed" at
//! start and the leader runs it at once (SPEC §5 "After downtime it catches up at start").
//! Every test skips where PostgreSQL is not installed (unless
//! `BOA_EXCHANGE_REQUIRE_POSTGRES=1`).

use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::support::backend::{Backend, LEASE_SECS};
use crate::support::eventually::{eventually_async, lazy};
use crate::support::fake_boa;
use crate::support::fake_intuit::{CompanySpec, FakeIntuit, FakeIntuitConfig};
use crate::support::nodes::{metric, one_leader, role, status, Nodes};
use crate::support::postgres::Cluster;
use crate::support::world::{Answer, World};

/// The capture's fixing date (the tests that do not use the schedule sync it).
const CAPTURE_DATE: &str = "2026-05-22";
const TOKEN_PATH: &str = "/oauth2/v1/tokens/bearer";
/// The schedule as the daemons start with it when a test does not turn it on.
const SCHEDULE_OFF: &str = "[schedule]\nenabled = false\n";
/// Today's run at 00:00 Tirana: at start it is always past, so the leader runs it at once.
const SCHEDULE_ON: &str =
    "[schedule]\nenabled = true\ntime = \"00:00\"\ntimezone = \"Europe/Tirane\"\n";
/// The capture's main-table rates in an ALL-home company (EUR and USD active).
const RATES: [(&str, &str); 2] = [("EUR", "95.40"), ("USD", "82.24")];
/// Margin over the lease for a takeover to be seen (the standby's polling, process start).
const TAKEOVER_MARGIN: Duration = Duration::from_secs(3);

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).expect("decimal")
}

fn day(s: &str) -> NaiveDate {
    NaiveDate::from_str(s).expect("date")
}

/// Today in Europe/Tirane (the daemon's calendar).
fn today() -> NaiveDate {
    chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Tirane)
        .date_naive()
}

/// The Friday capture with its main table (and its "last update") re-dated to `date`; the
/// minor table keeps 15.05.2026, so only today's main fixing exists for catch-up.
fn page_dated(date: NaiveDate) -> Vec<u8> {
    let text = String::from_utf8(fake_boa::fixture(fake_boa::FRIDAY)).expect("utf-8 capture");
    assert!(text.contains("22.05.2026"), "the capture names its date");
    text.replace("22.05.2026", &date.format("%d.%m.%Y").to_string())
        .into_bytes()
}

/// An ALL-home company with EUR and USD active.
fn spec(realm: &str) -> CompanySpec {
    CompanySpec::new(realm, format!("Company {realm}"))
}

fn realms(n: usize, base: u64) -> Vec<String> {
    (0..n as u64).map(|i| (base + i).to_string()).collect()
}

/// The error code of a SPEC §6 error answer.
fn error_code(a: &Answer) -> String {
    let v = a.json();
    assert_eq!(v["success"], false, "an error answer: {v}");
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

async fn sync(w: &World, realm: &str, date: &str) -> Answer {
    w.admin_post(&format!(
        "/api/v1/companies/{realm}/sync?target_date={date}"
    ))
    .await
}

async fn sync_all(w: &World, date: &str) -> Answer {
    w.admin_post(&format!("/api/v1/companies/sync-all?target_date={date}"))
        .await
}

/// Whether the fake holds both of the capture's rates for `realm` on `date`.
fn complete(intuit: &FakeIntuit, realm: &str, date: NaiveDate) -> bool {
    RATES
        .iter()
        .all(|(c, r)| intuit.exchange_rate(realm, c, date).map(|x| x.rate) == Some(dec(r)))
}

/// Every company's rates for `date` are at the fake with our value, each applied exactly
/// once: a row created by a write has SyncToken "0" and every further applied write (a
/// duplicate another node or a retry got through) increments it (SPEC §5 requestid, §13).
fn assert_written_once(intuit: &FakeIntuit, realms: &[String], date: NaiveDate) {
    for realm in realms {
        for (cur, want) in RATES {
            let row = intuit
                .exchange_rate(realm, cur, date)
                .unwrap_or_else(|| panic!("{realm}: no {cur} rate for {date} at QuickBooks"));
            assert_eq!(row.rate, dec(want), "{realm} {cur} {date}");
            assert_eq!(
                row.sync_token, "0",
                "{realm} {cur} {date} was applied more than once at QuickBooks"
            );
        }
    }
    assert_eq!(
        intuit.requestid_conflicts(),
        Vec::<(String, String)>::new(),
        "a requestid reused for another body"
    );
}

/// Token-endpoint answers other than 200 (a refused refresh: a token lost or raced).
fn refused_token_calls(intuit: &FakeIntuit) -> Vec<(Option<u16>, String)> {
    intuit
        .requests()
        .into_iter()
        .filter(|r| r.path() == TOKEN_PATH)
        .filter(|r| r.status.is_some_and(|s| s != 200))
        .map(|r| (r.status, r.body))
        .collect()
}

/// Waits until `w`'s `status` shows a finished daily run for `date`; returns the status.
async fn wait_daily_run(w: &World, date: NaiveDate, within: Duration) -> Value {
    let date = date.to_string();
    eventually_async(
        within,
        lazy(|| {
            format!(
                "a finished daily run for {date} in status.schedule.last_run; stderr:\n{}",
                w.daemon.stderr()
            )
        }),
        async || {
            let s = status(w);
            (s["schedule"]["last_run"]["date"] == date.as_str()).then_some(s)
        },
    )
    .await
}

/// Connects `realms` through `w` (schedule off, so nothing is synced yet).
async fn connect_all(w: &World, realms: &[String]) {
    for r in realms {
        let a = w.connect(spec(r)).await;
        assert_eq!(a.status, 200, "connect {r}: {}", a.text);
    }
}

/// Two nodes whose companies were connected with the schedule off, then (after `before`
/// has set up the fakes for the run) restarted with the schedule on, so today's run is due
/// at once, and `extra`. The first node is started again first.
async fn scheduled_pair(
    realms: &[String],
    extra: &str,
    before: impl FnOnce(&Nodes),
) -> Option<Nodes> {
    let mut n = Nodes::start(FakeIntuitConfig::default(), &[extra]).await?;
    n.set_page(page_dated(today()));
    connect_all(&n.nodes[0], realms).await;
    before(&n);
    let w = &mut n.nodes[0];
    tokio::task::block_in_place(|| {
        w.daemon.signal(libc::SIGTERM);
        let st = w.daemon.wait_exit(Duration::from_secs(25));
        assert!(st.success(), "exit {st}: {}", w.daemon.stderr());
    });
    w.edit_config(SCHEDULE_OFF, SCHEDULE_ON);
    let fetches_before = w.boa.requests();
    tokio::task::block_in_place(|| w.daemon.spawn_and_wait_ready());
    let second = format!("{extra}\n{SCHEDULE_ON}");
    n.add(&second).await;
    assert_eq!(
        fetches_before, 0,
        "nothing fetched the page while the schedule was off"
    );
    Some(n)
}

// ------------------------------------------------------------------------------ (a)

/// (a) Two nodes on one database: exactly one leader on every surface, only it runs the
/// daily schedule (only its BoA is fetched; QuickBooks sees each rate once); the standby
/// serves the API (list, sync status, rates, on-demand sync over HTTP and the control
/// socket, `status --json`) and a new OAuth connection, which is synced for today at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_have_one_leader_and_only_it_runs_the_daily_schedule() {
    let companies = realms(4, 3101);
    let Some(n) = scheduled_pair(&companies, "", |_| {}).await else {
        return;
    };
    let date = today();
    let nodes: Vec<&World> = n.nodes.iter().collect();
    let li = one_leader(&nodes, Duration::from_secs(LEASE_SECS * 3)).await;
    let (leader, standby) = (nodes[li], nodes[1 - li]);

    let s = wait_daily_run(leader, date, Duration::from_secs(60)).await;
    assert_eq!(s["role"], "leader", "{s}");
    assert_written_once(&n.intuit, &companies, date);
    for r in &companies {
        assert_eq!(n.intuit.writes(r), 2, "{r}: two rates, two writes");
    }
    assert_eq!(n.intuit.idempotent_replays(), 0, "nobody wrote twice");
    assert!(leader.boa.requests() > 0, "the leader fetched the page");
    assert_eq!(
        standby.boa.requests(),
        0,
        "the standby ran no scheduled fetch (its BoA was never asked)"
    );
    // Still exactly one leader after the run.
    assert_eq!(one_leader(&nodes, Duration::from_secs(5)).await, li);

    // `status --json`, as a script reads it.
    for (w, want) in [(leader, "leader"), (standby, "standby")] {
        let (code, out, err) = tokio::task::block_in_place(|| w.daemon.cli(&["--json", "status"]));
        assert_eq!(code, 0, "{err}");
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(v["role"], want, "status --json: {v}");
    }

    // The standby serves the whole API from the shared database.
    let list = standby
        .admin_get("/api/v1/companies/list?active_only=false")
        .await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(list.json()["count"], companies.len(), "{}", list.text);
    let st = standby
        .admin_get(&format!("/api/v1/companies/{}/sync/status", companies[0]))
        .await;
    assert_eq!(st.status, 200, "{}", st.text);
    assert_eq!(
        st.json()["exchange_rates"],
        json!({"total": 2, "synced": 2, "pending": 0}),
        "the leader's run, seen from the standby: {}",
        st.text
    );
    let rates = standby.get("/api/v1/rates").await;
    assert_eq!(rates.status, 200, "{}", rates.text);
    assert_eq!(rates.json()["tables"][0]["date"], date.to_string());
    let a = sync(standby, &companies[0], &date.to_string()).await;
    assert_eq!(a.status, 200, "on-demand sync on the standby: {}", a.text);
    let v = a.json();
    assert_eq!(
        (v["rates_synced"].as_u64(), v["rates_written"].as_u64()),
        (Some(2), Some(0)),
        "{v}"
    );
    let c = standby.control(
        "sync",
        json!({"realm": companies[1], "date": date.to_string()}),
    );
    assert_eq!(c["ok"], true, "sync over the standby's control socket: {c}");
    assert_written_once(&n.intuit, &companies, date);

    // A new connection through the standby: stored for the cluster, synced for today once.
    let a = standby.connect(spec("3199")).await;
    assert_eq!(a.status, 200, "OAuth on the standby: {}", a.text);
    let list = leader
        .admin_get("/api/v1/companies/list?active_only=false")
        .await;
    assert_eq!(list.json()["count"], companies.len() + 1, "{}", list.text);
    eventually_async(
        Duration::from_secs(30),
        format!("the company connected on the standby synced for {date} at once"),
        async || complete(&n.intuit, "3199", date),
    )
    .await;
    assert_written_once(&n.intuit, &["3199".to_string()], date);
    assert_eq!(
        standby.boa.requests(),
        0,
        "the standby still never fetched on its own"
    );
}

/// (a) OAuth across nodes (behind a load balancer): a flow started on one node completes
/// on the other, and the state is single-use across the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth_flow_started_on_one_node_completes_on_the_other() {
    let Some(n) = Nodes::start(FakeIntuitConfig::default(), &["", ""]).await else {
        return;
    };
    let (a, b) = (&n.nodes[0], &n.nodes[1]);
    n.intuit.add_company(spec("3201"));
    n.intuit.set_next_realm("3201");
    let (cookie, query) = a.authorize().await;
    let c = b.callback(&query, Some(&cookie)).await;
    assert_eq!(c.status, 200, "callback on the other node: {}", c.text);
    assert!(c.text.contains("Company 3201"), "{}", c.text);
    // The same state again, on the node that issued it: used up cluster-wide.
    let again = a.callback(&query, Some(&cookie)).await;
    assert_eq!(again.status, 400, "a reused state: {}", again.text);
    for w in [a, b] {
        let s = w.admin_get("/api/v1/oauth/status/3201").await;
        assert_eq!(s.status, 200, "{}", s.text);
        assert_eq!(s.json()["status"], "connected", "{}", s.text);
    }
    // Both nodes sync it with the one stored grant.
    assert_eq!(a.fetch()["ok"], true);
    for w in [a, b] {
        let r = sync(w, "3201", CAPTURE_DATE).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    assert_written_once(&n.intuit, &["3201".to_string()], day(CAPTURE_DATE));
}

// ------------------------------------------------------------------------------ (b)

/// (b) The leader killed (-9) in the middle of the daily run, many companies, Intuit slow,
/// every access token expired and every grant due to rotate: the standby is the leader
/// within the lease (+ margin), finishes the day, every company's rates are applied once
/// per (realm, currency, date), no refresh is refused and nobody needs a reconnect — even a
/// day later, when only the newest refresh tokens still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_a_killed_leaders_daily_run_and_finishes_the_day() {
    let companies = realms(24, 3301);
    let extra = "[quickbooks]\nmax_concurrent_companies = 2\n";
    let Some(mut n) = scheduled_pair(&companies, extra, |n| {
        for r in &companies {
            n.intuit.rotate_now(r);
            n.intuit.expire_access_tokens(r);
        }
        n.intuit.set_latency(Duration::from_millis(150));
    })
    .await
    else {
        return;
    };
    let date = today();
    let li = {
        let nodes: Vec<&World> = n.nodes.iter().collect();
        one_leader(&nodes, Duration::from_secs(LEASE_SECS * 3)).await
    };
    let si = 1 - li;

    // Mid-run: some companies done, most not.
    let done = |intuit: &FakeIntuit| {
        companies
            .iter()
            .filter(|r| complete(intuit, r, date))
            .count()
    };
    eventually_async(
        Duration::from_secs(60),
        "the leader's daily run to have completed 3 companies",
        async || done(&n.intuit) >= 3,
    )
    .await;
    let at_kill = done(&n.intuit);
    assert!(
        at_kill < companies.len() - 3,
        "the run was nearly over before the kill ({at_kill} of {} done): slow the fake further",
        companies.len()
    );
    tokio::task::block_in_place(|| n.nodes[li].daemon.kill9());
    let killed = Instant::now();

    let standby = &n.nodes[si];
    let lease = Duration::from_secs(LEASE_SECS);
    eventually_async(
        lease + TAKEOVER_MARGIN,
        lazy(|| {
            format!(
                "the standby to lead within leader_lease_secs ({LEASE_SECS} s) + {TAKEOVER_MARGIN:?} of the leader's death; stderr:\n{}",
                standby.daemon.stderr()
            )
        }),
        async || role(standby).as_deref() == Some("leader"),
    )
    .await;
    eprintln!("standby led {:?} after the kill", killed.elapsed());
    let h = standby.get("/health").await.json();
    assert_eq!(h["role"], "leader", "{h}");
    assert_eq!(metric(standby, "boa_exchange_leader").await, Some(1.0));

    // It finishes the day.
    eventually_async(
        Duration::from_secs(120),
        lazy(|| {
            format!(
                "every company's rates for {date} after the takeover ({} of {} done)",
                done(&n.intuit),
                companies.len()
            )
        }),
        async || done(&n.intuit) == companies.len(),
    )
    .await;
    wait_daily_run(standby, date, Duration::from_secs(60)).await;
    n.intuit.set_latency(Duration::ZERO);
    assert_written_once(&n.intuit, &companies, date);
    assert_eq!(
        refused_token_calls(&n.intuit),
        vec![],
        "a refresh was refused"
    );
    let list = standby
        .admin_get("/api/v1/companies/list?active_only=false")
        .await
        .json();
    assert_eq!(list["count"], companies.len(), "{list}");
    for c in list["companies"].as_array().expect("companies") {
        assert_eq!(c["connection"], "connected", "{c}");
    }
    let h = standby.get("/health").await.json();
    assert_eq!(h["companies_with_expired_tokens"], 0, "{h}");

    // A day later only the newest refresh token of each grant works: every stored one must
    // be it (a rotation the dead leader got from Intuit but did not commit was recovered).
    n.intuit.advance(Duration::from_secs(25 * 3600));
    for r in &companies {
        let a = sync(standby, r, &date.to_string()).await;
        assert_eq!(a.status, 200, "{r} a day later: {}", a.text);
        assert_eq!(a.json()["rates_written"], 0, "{r}: {}", a.text);
    }
    assert_eq!(
        refused_token_calls(&n.intuit),
        vec![],
        "a refresh was refused"
    );
    assert_written_once(&n.intuit, &companies, date);
}

// ------------------------------------------------------------------------------ (c)

/// (c) One company, its access token expired at Intuit, synced on both nodes at the same
/// moment (Intuit slow, so the refreshes would overlap): one refresh at Intuit, both syncs
/// succeed, and afterwards both nodes use the one new token (no further refresh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_refreshing_one_expired_token_at_once_make_one_refresh() {
    let Some(n) = Nodes::start(FakeIntuitConfig::default(), &["", ""]).await else {
        return;
    };
    let (a, b) = (&n.nodes[0], &n.nodes[1]);
    assert_eq!(a.fetch()["ok"], true);
    let c = a.connect(spec("3401")).await;
    assert_eq!(c.status, 200, "{}", c.text);
    let first = sync(a, "3401", CAPTURE_DATE).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(n.intuit.refreshes("3401"), 0, "a fresh token is used as is");

    n.intuit.rotate_now("3401");
    n.intuit.expire_access_tokens("3401");
    n.intuit.set_latency(Duration::from_millis(300));
    let (r1, r2, r3, r4) = tokio::join!(
        sync(a, "3401", CAPTURE_DATE),
        sync(b, "3401", CAPTURE_DATE),
        sync(a, "3401", CAPTURE_DATE),
        sync(b, "3401", CAPTURE_DATE),
    );
    n.intuit.set_latency(Duration::ZERO);
    for r in [&r1, &r2, &r3, &r4] {
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json()["rates_synced"], 2, "{}", r.text);
    }
    assert_eq!(
        n.intuit.refreshes("3401"),
        1,
        "one refresh across the nodes"
    );
    assert_eq!(n.intuit.concurrent_refreshes(), 0, "refreshes overlapped");
    assert_eq!(refused_token_calls(&n.intuit), vec![]);
    for w in [a, b] {
        let r = sync(w, "3401", CAPTURE_DATE).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let s = w.admin_get("/api/v1/oauth/status/3401").await.json();
        assert_eq!(s["status"], "connected", "{s}");
    }
    assert_eq!(
        n.intuit.refreshes("3401"),
        1,
        "both nodes use the token the refresh stored"
    );
    assert_written_once(&n.intuit, &["3401".to_string()], day(CAPTURE_DATE));
}

// ------------------------------------------------------------------------------ (d)

/// One request with a bound of its own (an answer while the database is down must come
/// promptly, not after the client's 300 s).
async fn bounded(what: &str, f: impl std::future::Future<Output = Answer>) -> Answer {
    tokio::time::timeout(Duration::from_secs(15), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 15 s while the database is down"))
}

/// Whether a `/health` reason names the store.
fn names_the_store(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    ["store", "database", "postgres"]
        .iter()
        .any(|w| r.contains(w))
}

/// Waits until the admin GET `path` answers `want` (each answer bounded); the answer.
async fn answers(w: &World, path: &str, want: u16, within: Duration) -> Answer {
    let last = std::sync::Mutex::new(String::new());
    eventually_async(
        within,
        lazy(|| {
            format!(
                "GET {path} to answer {want} (last: {}); stderr:\n{}",
                last.lock().expect("lock"),
                w.daemon.stderr()
            )
        }),
        async || {
            let a = bounded(path, w.admin_get(path)).await;
            *last.lock().expect("lock") = format!("{} {}", a.status, a.text);
            (a.status == want).then_some(a)
        },
    )
    .await
}

fn reasons(h: &Value) -> Vec<String> {
    h["reasons"]
        .as_array()
        .unwrap_or_else(|| panic!("no reasons list: {h}"))
        .iter()
        .map(|r| r.as_str().unwrap_or_default().to_string())
        .collect()
}

/// (d) The database server restarted under a running daemon: while it is down, what needs
/// it answers 503 `store_unavailable` (HTTP, control socket with kind `unavailable`, CLI
/// exit 1) and `/health` is degraded with a reason naming the store; a sync in flight is
/// either acknowledged and kept or refused; once the server is back the same process goes
/// on (same pid, leader again), and everything acknowledged before is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_answers_store_unavailable_then_goes_on_losing_nothing() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let backend = Backend::postgres_on(&cluster).await;
    let w = World::start_on(&backend, "").await;
    assert_eq!(w.fetch()["ok"], true);
    for r in ["3501", "3502", "3503"] {
        let a = w.connect(spec(r)).await;
        assert_eq!(a.status, 200, "{}", a.text);
    }
    // Acknowledged before the restart: a sync, a settings change.
    let a = sync(&w, "3501", CAPTURE_DATE).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let a = w
        .admin_put("/api/v1/companies/3502/settings", r#"{"drift": "report"}"#)
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let pid = status(&w)["pid"].clone();
    eventually_async(
        Duration::from_secs(LEASE_SECS * 3),
        "the only node to lead",
        async || role(&w).as_deref() == Some("leader"),
    )
    .await;

    // A sync in flight when the server goes away.
    w.intuit
        .set_realm_latency("3503", Duration::from_millis(1500));
    let calls_before = w.intuit.requests_for("3503").len();
    let in_flight = {
        let http = w.http.clone();
        let url = w.url(&format!(
            "/api/v1/companies/3503/sync?target_date={CAPTURE_DATE}"
        ));
        tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(crate::support::world::ADMIN_KEY)
                .send()
                .await
                .expect("send");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        })
    };
    eventually_async(
        Duration::from_secs(10),
        "the in-flight sync's first call at QuickBooks",
        async || w.intuit.requests_for("3503").len() > calls_before,
    )
    .await;
    tokio::task::block_in_place(|| cluster.stop());

    let unavailable = |a: &Answer, what: &str| {
        assert_eq!(
            a.status, 503,
            "{what} while the database is down: {}",
            a.text
        );
        assert_eq!(error_code(a), "store_unavailable", "{what}: {}", a.text);
    };
    let list = answers(&w, "/api/v1/companies/list", 503, Duration::from_secs(15)).await;
    unavailable(&list, "the company list");
    unavailable(
        &bounded("sync", sync(&w, "3501", CAPTURE_DATE)).await,
        "a sync",
    );
    unavailable(
        &bounded(
            "settings",
            w.admin_put("/api/v1/companies/3501/settings", r#"{"drift": "report"}"#),
        )
        .await,
        "a settings change",
    );
    unavailable(
        &bounded(
            "sync status",
            w.admin_get("/api/v1/companies/3501/sync/status"),
        )
        .await,
        "the sync status",
    );
    let c = w.control("company", json!({"realm": "3501"}));
    assert_eq!(c["ok"], false, "{c}");
    assert_eq!(c["error"]["code"], "store_unavailable", "{c}");
    assert_eq!(c["error"]["kind"], "unavailable", "{c}");
    let (code, out, err) = tokio::task::block_in_place(|| w.daemon.cli(&["company", "3501"]));
    assert_eq!(code, 1, "the CLI while the database is down: {out}{err}");
    let h = eventually_async(
        Duration::from_secs(10),
        "/health degraded with a reason naming the store",
        async || {
            let a = bounded("/health", w.get("/health")).await;
            let h = a.json();
            (h["status"] == "degraded" && reasons(&h).iter().any(|r| names_the_store(r)))
                .then_some((a.status, h))
        },
    )
    .await;
    assert!(
        [200, 503].contains(&h.0),
        "/health answers while degraded: {} {}",
        h.0,
        h.1
    );
    let (st, text) = tokio::time::timeout(Duration::from_secs(30), in_flight)
        .await
        .expect("an answer to the sync in flight within 30 s of the database going away")
        .expect("join");
    assert!(
        st == 200 || st == 503,
        "the sync in flight is acknowledged or refused as unavailable: {st} {text}"
    );
    let in_flight_acknowledged = st == 200;

    tokio::task::block_in_place(|| cluster.resume());
    w.intuit.set_realm_latency("3503", Duration::ZERO);
    let list = answers(
        &w,
        "/api/v1/companies/list?active_only=false",
        200,
        Duration::from_secs(30),
    )
    .await;
    let list = list.json();
    assert_eq!(list["count"], 3, "{list}");
    let drift = |realm: &str| {
        list["companies"]
            .as_array()
            .expect("companies")
            .iter()
            .find(|c| c["company_id"] == realm)
            .map(|c| c["drift"].clone())
    };
    assert_eq!(
        drift("3502"),
        Some(json!("report")),
        "the acknowledged setting: {list}"
    );
    assert_eq!(
        drift("3501"),
        Some(json!("correct")),
        "the refused one: {list}"
    );
    let s = w
        .admin_get("/api/v1/companies/3501/sync/status")
        .await
        .json();
    assert_eq!(
        s["exchange_rates"],
        json!({"total": 2, "synced": 2, "pending": 0}),
        "the acknowledged sync: {s}"
    );
    if in_flight_acknowledged {
        let s = w
            .admin_get("/api/v1/companies/3503/sync/status")
            .await
            .json();
        assert_eq!(
            s["exchange_rates"],
            json!({"total": 2, "synced": 2, "pending": 0}),
            "the in-flight sync was acknowledged, so it is kept: {s}"
        );
    }
    eventually_async(
        Duration::from_secs(15),
        "/health without a store reason once the database is back",
        async || {
            let h = w.get("/health").await.json();
            !reasons(&h).iter().any(|r| names_the_store(r))
        },
    )
    .await;
    // The same process goes on: new work, leadership back.
    for r in ["3502", "3503"] {
        let a = sync(&w, r, CAPTURE_DATE).await;
        assert_eq!(a.status, 200, "{r} after the restart: {}", a.text);
    }
    eventually_async(
        Duration::from_secs(LEASE_SECS * 3 + 10),
        "the node to lead again after the database came back",
        async || role(&w).as_deref() == Some("leader"),
    )
    .await;
    assert_eq!(status(&w)["pid"], pid, "no restart");
    assert_written_once(
        &w.intuit,
        &["3501".into(), "3502".into(), "3503".into()],
        day(CAPTURE_DATE),
    );
}

// ------------------------------------------------------------------------------ (e)

/// (e) A sync-all for a date running on one node; the same sync-all on the other node
/// while it runs joins it (200, the same answer) or answers 409 `sync_in_progress`: it
/// never runs twice (one metered read per company, every rate applied once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sync_all_on_the_other_node_joins_or_is_409() {
    let extra = "[quickbooks]\nmax_concurrent_companies = 1\n";
    let Some(n) = Nodes::start(FakeIntuitConfig::default(), &[extra, extra]).await else {
        return;
    };
    let (a, b) = (&n.nodes[0], &n.nodes[1]);
    assert_eq!(a.fetch()["ok"], true);
    let companies = realms(6, 3601);
    connect_all(a, &companies).await;
    let reads: Vec<u64> = companies.iter().map(|r| n.intuit.reads(r)).collect();
    n.intuit.set_latency(Duration::from_millis(200));
    let second_sent = std::sync::Mutex::new(None::<Instant>);
    let (first, second) = tokio::join!(
        async {
            let r = sync_all(a, CAPTURE_DATE).await;
            (r, Instant::now())
        },
        async {
            eventually_async(
                Duration::from_secs(15),
                "the first sync-all's first read at QuickBooks",
                async || {
                    companies
                        .iter()
                        .zip(&reads)
                        .any(|(r, before)| n.intuit.reads(r) > *before)
                },
            )
            .await;
            *second_sent.lock().expect("lock") = Some(Instant::now());
            sync_all(b, CAPTURE_DATE).await
        },
    );
    n.intuit.set_latency(Duration::ZERO);
    let (first, first_done) = first;
    let sent = second_sent
        .lock()
        .expect("lock")
        .expect("the second was sent");
    assert!(
        sent < first_done,
        "the first sync-all had finished before the second was sent: slow the fake further"
    );
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(
        first.json()["successful"],
        companies.len(),
        "{}",
        first.text
    );
    // Rates first: whatever the second answered, nothing may be applied twice.
    assert_written_once(&n.intuit, &companies, day(CAPTURE_DATE));
    for r in &companies {
        assert_eq!(n.intuit.writes(r), 2, "{r}: each rate written once");
    }
    // Then the run itself: once for the date across the cluster (a second run after the
    // first, even one that writes nothing, is another metered read per company).
    let extra_reads: Vec<(&String, u64)> = companies
        .iter()
        .zip(&reads)
        .map(|(r, before)| (r, n.intuit.reads(r) - before))
        .filter(|(_, k)| *k != 1)
        .collect();
    assert!(
        extra_reads.is_empty(),
        "the sync-all ran more than once for {CAPTURE_DATE} (metered reads per company, \
         expected 1 each: {extra_reads:?}); second answer {} {}",
        second.status,
        second.text
    );
    match second.status {
        200 => assert_eq!(
            second.json(),
            first.json(),
            "a joined caller gets the answer of the run it joined"
        ),
        409 => {
            assert_eq!(error_code(&second), "sync_in_progress", "{}", second.text);
            assert!(second.text.contains(CAPTURE_DATE), "{}", second.text);
        }
        other => panic!("the second sync-all answered {other}: {}", second.text),
    }
    // Once it finished, the other node runs one itself.
    let again = sync_all(b, CAPTURE_DATE).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(
        again.json()["successful"],
        companies.len(),
        "{}",
        again.text
    );
}

// ------------------------------------------------------------------------------ (f)

/// A company reconnected on one node while the other node's refresh of its dead grant is
/// at Intuit: the new grant stands. The reconnect (node B's OAuth callback, its code
/// exchange started first) waits for the token row that node A's refresh holds; A's refresh
/// meets `invalid_grant` and flags the company under that lock, so B's new grant lands after
/// the flag: the company ends connected, and syncs. (Before, A flagged it after letting go,
/// over the reconnect that had just landed: the customer had to reconnect a second time.)
/// Intuit's token endpoint is slow (2 s) and its accounting API fast for this company, so
/// B's exchange ends while A's refresh is in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_on_one_node_during_a_refused_refresh_on_the_other_stands() {
    let Some(n) = Nodes::start(FakeIntuitConfig::default(), &["", ""]).await else {
        return;
    };
    let (a, b) = (&n.nodes[0], &n.nodes[1]);
    assert_eq!(a.fetch()["ok"], true);
    let realm = "3601";
    let c = a.connect(spec(realm)).await;
    assert_eq!(c.status, 200, "{}", c.text);
    assert_eq!(sync(a, realm, CAPTURE_DATE).await.status, 200);

    // The grant dies at Intuit (the customer revoked it); the customer reconnects on B.
    n.intuit.revoke_grant(realm);
    n.intuit.expire_access_tokens(realm);
    n.intuit.set_next_realm(realm);
    let (cookie, query) = b.authorize().await;
    n.intuit.set_realm_latency(realm, Duration::ZERO);
    n.intuit.set_latency(Duration::from_secs(2));
    let reconnect = b.callback(&query, Some(&cookie));
    let refused = async {
        // B's code exchange is at Intuit; A's sync meets a 401 and refreshes (2 s, under
        // the token row lock) while B's exchange ends and its save waits for that lock.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        sync(a, realm, CAPTURE_DATE).await
    };
    let (reconnect, refused) = tokio::join!(reconnect, refused);
    n.intuit.set_latency(Duration::ZERO);
    assert_eq!(reconnect.status, 200, "the reconnect: {}", reconnect.text);
    assert_ne!(refused.status, 200, "the refused refresh: {}", refused.text);
    let refused_calls = refused_token_calls(&n.intuit);
    assert!(
        refused_calls
            .iter()
            .any(|(_, body)| body.contains("grant_type=refresh_token")),
        "A's refresh reached Intuit and was refused (else this test proves nothing): {refused_calls:?}"
    );

    for w in [a, b] {
        let s = w
            .admin_get(&format!("/api/v1/oauth/status/{realm}"))
            .await
            .json();
        assert_eq!(s["status"], "connected", "the new grant stands: {s}");
    }
    let r = sync(a, realm, CAPTURE_DATE).await;
    assert_eq!(r.status, 200, "a sync with the new grant: {}", r.text);
}
