//! The PostgreSQL store against a real server (issue 23, SPEC §13): migrations, identity,
//! round trips of every record, no plaintext token in the database, backup and restore with
//! the sled store's records, leadership and its loss, the cross-node token lock, and a
//! server restart. Each test takes a fresh database of the run's throwaway cluster
//! (`support::postgres`), or a private cluster when it stops the server.

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use boa_exchange::crypto::Vault;
use boa_exchange::currency::Currency;
use boa_exchange::fixing::{FixingSource, FixingTable, PublishedRate, TableKind};
use boa_exchange::store::backup::{self, Record};
use boa_exchange::store::postgres::{Error, Leadership, PgStore, PG_SCHEMA_VERSION};
use boa_exchange::store::records::{
    Company, CompanyRate, Connection, DriftPolicy, LogKind, LogRecord, PendingAuth, ScrapeRecord,
    TokenExpiry, TokenSet,
};
use boa_exchange::store::{Store, TableOutcome};
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

use crate::support::postgres::{self as pg, Cluster};

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn cur(s: &str) -> Currency {
    Currency::new(s).unwrap()
}

fn company(realm: &str) -> Company {
    let now = at("2026-05-01T08:00:00Z");
    Company {
        realm_id: realm.into(),
        company_name: format!("Company {realm}"),
        home_currency: Currency::ALL,
        is_active: true,
        sync_enabled: true,
        is_sandbox: true,
        fill_non_business_days: false,
        created_at: now,
        updated_at: now,
        last_sync_at: None,
        connection: Connection::Connected,
        tokens: None,
        multicurrency: true,
        active_currencies: vec![cur("EUR"), cur("USD")],
        currencies_checked_at: None,
        drift: DriftPolicy::Correct,
    }
}

fn tokens(access: &str, refresh: &str) -> TokenSet {
    let now = at("2026-05-01T08:00:00Z");
    TokenSet {
        access_token: access.into(),
        refresh_token: refresh.into(),
        expiry: TokenExpiry {
            access_expires_at: now,
            refresh_expires_at: now,
            hard_expires_at: None,
            refreshed_at: now,
        },
    }
}

fn rate(date: &str, code: &str, r: &str, synced: bool) -> CompanyRate {
    CompanyRate {
        date: d(date),
        currency: cur(code),
        rate: Decimal::from_str(r).unwrap(),
        fixing: (TableKind::Main, d(date)),
        synced,
        synced_at: synced.then(|| at("2026-05-04T10:00:00Z")),
    }
}

fn table(kind: TableKind, date: &str, eur: &str) -> FixingTable {
    FixingTable {
        kind,
        date: d(date),
        published_time: chrono::NaiveTime::from_hms_opt(12, 12, 23),
        rates: vec![PublishedRate {
            code: cur("EUR"),
            units: 1,
            published: Decimal::from_str(eur).unwrap(),
        }],
    }
}

fn page() -> FixingSource {
    FixingSource::Page {
        url: "http://boa.invalid/".into(),
        sha256: "ab".into(),
        fetched_at: at("2026-05-04T10:15:00Z"),
    }
}

fn log(kind: LogKind, success: bool, msg: &str) -> LogRecord {
    LogRecord {
        at: at("2026-05-04T10:20:00Z"),
        kind,
        success,
        date: Some(d("2026-05-04")),
        message: msg.into(),
        rates_written: 2,
        rates_unchanged: 0,
        intuit_tids: vec!["tid-1".into()],
        drift: None,
    }
}

/// A fresh database of the shared cluster and a store on it; `None` when PostgreSQL is
/// missing (the harness said so).
async fn fresh() -> Option<(String, PgStore)> {
    let c = pg::shared()?;
    let url = c.fresh_db().await;
    let store = PgStore::open(&url, Vault::generate()).await.unwrap();
    Some((url, store))
}

#[tokio::test]
async fn migrations_are_idempotent_and_a_newer_schema_is_refused() {
    let Some((url, store)) = fresh().await else {
        return;
    };
    let vault_file = tempfile::tempdir().unwrap();
    let id = vault_file.path().join("identity.txt");
    drop(store);
    // The store above used another identity: a second open with a new one is refused.
    assert!(matches!(
        PgStore::open_with_identity_file(&url, &id).await,
        Err(Error::MissingIdentity { .. })
    ));

    let url = pg::shared().unwrap().fresh_db().await;
    let a = PgStore::open_with_identity_file(&url, &id).await.unwrap();
    let b = PgStore::open_with_identity_file(&url, &id).await.unwrap();
    let c = PgStore::open(&url, Vault::load(&id).unwrap())
        .await
        .unwrap();
    drop((a, b, c));
    let sql = pg::connect(&url).await;
    let rows = sql
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap();
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(versions, (1..=PG_SCHEMA_VERSION).collect::<Vec<_>>());

    sql.execute(
        "INSERT INTO schema_migrations (version) VALUES ($1)",
        &[&(PG_SCHEMA_VERSION + 1)],
    )
    .await
    .unwrap();
    match PgStore::open(&url, Vault::load(&id).unwrap()).await {
        Err(Error::NewerSchema { found, supported }) => {
            assert_eq!(
                (found, supported),
                (PG_SCHEMA_VERSION + 1, PG_SCHEMA_VERSION)
            );
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

#[tokio::test]
async fn another_identity_is_refused_before_anything_is_migrated() {
    let Some(c) = pg::shared() else {
        return;
    };
    // A database at version 0 (no schema_migrations) whose meta names another identity: the
    // open must refuse before creating any table.
    let url = c.fresh_db().await;
    let sql = pg::connect(&url).await;
    let other = Vault::generate();
    sql.execute(
        "CREATE TABLE meta (key text PRIMARY KEY, value bytea NOT NULL)",
        &[],
    )
    .await
    .unwrap();
    sql.execute(
        "INSERT INTO meta VALUES ('vault_recipient', $1)",
        &[&other.recipient().as_bytes()],
    )
    .await
    .unwrap();
    let mine = Vault::generate();
    let mine_recipient = mine.recipient();
    match PgStore::open(&url, mine).await {
        Err(Error::IdentityMismatch { expected, found }) => {
            assert_eq!(expected, other.recipient());
            assert_eq!(found, mine_recipient);
        }
        other => panic!("expected IdentityMismatch, got {other:?}"),
    }
    let migrated: bool = sql
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        !migrated,
        "nothing may be migrated under the wrong identity"
    );

    // A migrated database refuses another identity too, and the message says what to do.
    let url = c.fresh_db().await;
    drop(PgStore::open(&url, Vault::generate()).await.unwrap());
    let e = PgStore::open(&url, Vault::generate()).await.unwrap_err();
    assert!(matches!(e, Error::IdentityMismatch { .. }), "{e}");
    assert!(e.to_string().contains("identity"), "{e}");
}

#[tokio::test]
async fn companies_and_tokens_round_trip_with_counts_and_no_plaintext_in_the_database() {
    let Some((url, s)) = fresh().await else {
        return;
    };
    let mut a = company("101");
    a.tokens = Some(tokens("x", "y").expiry);
    s.save_company_and_tokens(&a, &tokens("AT-plain-SECRET-1", "RT-plain-SECRET-1"))
        .await
        .unwrap();
    s.save_company(&company("102")).await.unwrap();
    let mut off = company("103");
    off.sync_enabled = false;
    s.save_company(&off).await.unwrap();
    assert_eq!(s.company("101").await.unwrap(), Some(a.clone()));
    assert_eq!(s.company("999").await.unwrap(), None);
    let all = s.companies().await.unwrap();
    assert_eq!(
        all.iter().map(|c| c.realm_id.as_str()).collect::<Vec<_>>(),
        ["101", "102", "103"]
    );
    assert_eq!(
        s.tokens("101").await.unwrap().unwrap().refresh_token,
        "RT-plain-SECRET-1"
    );
    s.save_tokens("102", &tokens("AT-plain-SECRET-2", "RT-plain-SECRET-2"))
        .await
        .unwrap();

    let t = s.company_tally(at("2026-05-02T00:00:00Z")).await.unwrap();
    assert_eq!(
        (
            t.total,
            t.active,
            t.connected,
            t.sync_disabled,
            t.waiting,
            t.last_sync
        ),
        (3, 3, 3, 1, 2, None)
    );
    let synced = s
        .update_company("101", |c| c.last_sync_at = Some(at("2026-05-04T10:00:00Z")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(synced.last_sync_at, Some(at("2026-05-04T10:00:00Z")));
    assert_eq!(s.update_company("999", |_| {}).await.unwrap(), None);
    let gone = s
        .disconnect_company("102", |c| {
            c.is_active = false;
            c.connection = Connection::Disconnected {
                at: at("2026-05-04T11:00:00Z"),
            };
        })
        .await
        .unwrap()
        .unwrap();
    assert!(!gone.is_active);
    assert_eq!(s.tokens("102").await.unwrap(), None);
    let t = s.company_tally(at("2026-05-02T00:00:00Z")).await.unwrap();
    assert_eq!(
        (t.total, t.active, t.disconnected, t.connected, t.waiting),
        (3, 2, 1, 2, 0)
    );
    assert_eq!(t.last_sync, Some(at("2026-05-04T10:00:00Z")));
    assert_eq!(
        s.company_tally(at("2026-05-05T00:00:00Z"))
            .await
            .unwrap()
            .waiting,
        1
    );

    // Pages in realm order, filtered, with the cursor to go on.
    for i in 0..7 {
        s.save_company(&company(&format!("2{i:02}"))).await.unwrap();
    }
    let (p1, next) = s.companies_page(None, 4, |c| c.is_active).await.unwrap();
    assert_eq!(
        p1.iter().map(|c| c.realm_id.as_str()).collect::<Vec<_>>(),
        ["101", "103", "200", "201"]
    );
    let (p2, next) = s
        .companies_page(next.as_deref(), 4, |c| c.is_active)
        .await
        .unwrap();
    assert_eq!(p2.len(), 4);
    let (p3, end) = s
        .companies_page(next.as_deref(), 4, |c| c.is_active)
        .await
        .unwrap();
    assert_eq!((p3.len(), end), (1, None));

    s.save_company_without_tokens(&a).await.unwrap();
    assert_eq!(s.tokens("101").await.unwrap(), None);
    s.save_tokens("101", &tokens("AT-plain-SECRET-3", "RT-plain-SECRET-3"))
        .await
        .unwrap();
    s.remove_company("200").await.unwrap();
    assert_eq!(s.company("200").await.unwrap(), None);
    let t = s.company_tally(at("2026-05-02T00:00:00Z")).await.unwrap();
    assert_eq!(t.total, 9);

    // Nothing in any table, as text or as bytes, holds a token in the clear.
    let sql = pg::connect(&url).await;
    let tables: Vec<String> = sql
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(tables.contains(&"tokens".to_string()));
    let mut dump = String::new();
    for t in &tables {
        let row = sql
            .query_one(
                &format!("SELECT coalesce(string_agg(x::text, E'\\n'), '') FROM {t} x"),
                &[],
            )
            .await
            .unwrap();
        dump.push_str(row.get::<_, &str>(0));
    }
    assert!(dump.contains("Company 101"), "the dump reads the tables");
    for secret in ["AT-plain-SECRET", "RT-plain-SECRET"] {
        assert!(!dump.contains(secret), "{secret} in the clear");
        assert!(!dump.contains(&hex::encode(secret)), "{secret} as bytes");
    }
    // And the database refuses a ciphertext that is not an age file.
    let e = sql
        .execute(
            "INSERT INTO tokens VALUES ('555', convert_to('AT-plain-SECRET', 'UTF8'))",
            &[],
        )
        .await;
    assert!(e.is_err());
}

/// Inserts companies `prefix` + `000`..`n-1` straight into the table (as another node or a
/// bulk load would: the trigger counts them, this store's generation does not move).
async fn insert_companies(sql: &tokio_postgres::Client, prefix: &str, n: i32) {
    let template = serde_json::to_value(company("0")).unwrap();
    sql.execute(
        "INSERT INTO companies (realm, record, active, connected, reconnect_needed,
             sync_disabled, waiting_since, last_sync_at)
         SELECT $2 || lpad(i::text, 3, '0'),
                jsonb_set($1, '{realm_id}', to_jsonb($2 || lpad(i::text, 3, '0'))),
                true, true, false, false, 1777622400, NULL
         FROM generate_series(0, $3 - 1) i",
        &[&template, &prefix, &n],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn full_scans_stream_in_realm_order_and_report_undecodable_rows_as_sled_does() {
    let Some((url, s)) = fresh().await else {
        return;
    };
    let sql = pg::connect(&url).await;
    // More than one batch of the portal (256 rows).
    insert_companies(&sql, "c", 600).await;
    // Two rows whose record is JSON but not a company.
    sql.batch_execute(
        "INSERT INTO companies (realm, record, active, connected, reconnect_needed,
             sync_disabled, waiting_since, last_sync_at)
         VALUES ('c100x', '{\"realm_id\": 5}', true, true, false, false, NULL, NULL),
                ('zz', '{}', true, true, false, false, NULL, NULL)",
    )
    .await
    .unwrap();
    assert_eq!(s.bad_records_seen(), 0);

    let mut seen = Vec::new();
    let bad = s.each_company(|c| seen.push(c.realm_id)).await.unwrap();
    assert_eq!(seen.len(), 600);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "realm order");
    assert_eq!((seen[0].as_str(), seen[599].as_str()), ("c000", "c599"));
    assert_eq!(
        bad.iter()
            .map(|b| (b.tree, b.key_display()))
            .collect::<Vec<_>>(),
        [("companies", "c100x".into()), ("companies", "zz".into())]
    );
    assert!(bad.iter().all(|b| !b.error.is_empty()));
    assert_eq!(s.bad_records(), bad);
    assert_eq!(s.bad_records_seen(), 2);

    // Every full scan reports them; a record met again is not counted again.
    let (good, bad2) = s.companies_scan().await.unwrap();
    assert_eq!((good.len(), bad2), (600, bad.clone()));
    assert_eq!(s.companies().await.unwrap().len(), 600);
    assert_eq!(s.bad_records_seen(), 2);
    // A page skips them silently, the one record is an error.
    let mut paged = 0;
    let mut after: Option<String> = None;
    loop {
        let (p, next) = s
            .companies_page(after.as_deref(), 100, |_| true)
            .await
            .unwrap();
        paged += p.len();
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(paged, 600);
    assert!(matches!(
        s.company("zz").await,
        Err(Error::Record {
            table: "companies",
            ..
        })
    ));
    assert!(s.update_company("zz", |_| {}).await.is_err());

    // Rewritten: no longer bad, at once and at the next scan; removed: the same.
    s.save_company(&company("zz")).await.unwrap();
    assert_eq!(s.bad_records().len(), 1);
    s.remove_company("c100x").await.unwrap();
    assert!(s.bad_records().is_empty());
    let (good, bad) = s.companies_scan().await.unwrap();
    assert_eq!((good.len(), bad.len()), (601, 0));
    assert_eq!(s.bad_records_seen(), 2, "monotonic");

    // A bad row that appears later is counted once more.
    sql.batch_execute("UPDATE companies SET record = '[]' WHERE realm = 'c007'")
        .await
        .unwrap();
    let bad = s.each_company(|_| {}).await.unwrap();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].key, b"c007");
    assert_eq!(s.bad_records_seen(), 3);
}

#[tokio::test]
async fn the_companies_generation_moves_after_every_company_write_and_only_then() {
    let Some((url, s)) = fresh().await else {
        return;
    };
    let g = || s.companies_generation();
    let start = g();
    let mut a = company("301");
    s.save_company(&a).await.unwrap();
    let after_save = g();
    assert!(after_save > start);
    // Reads do not move it.
    s.company("301").await.unwrap();
    s.companies().await.unwrap();
    s.companies_page(None, 10, |_| true).await.unwrap();
    s.company_tally(Utc::now()).await.unwrap();
    s.tokens("301").await.unwrap();
    assert_eq!(g(), after_save);
    // Tokens alone are not a company write.
    s.save_tokens("301", &tokens("AT", "RT")).await.unwrap();
    assert_eq!(g(), after_save);

    let mut last = g();
    let mut moved = |what: &str| {
        let now = s.companies_generation();
        assert!(now > last, "{what} moves the generation");
        last = now;
    };
    s.update_company("301", |c| c.last_sync_at = Some(Utc::now()))
        .await
        .unwrap();
    moved("update_company");
    s.update_company_unflushed("301", |c| c.sync_enabled = false)
        .await
        .unwrap();
    moved("update_company_unflushed");
    a.company_name = "renamed".into();
    s.save_company_and_tokens(&a, &tokens("AT2", "RT2"))
        .await
        .unwrap();
    moved("save_company_and_tokens");
    s.save_company_without_tokens(&a).await.unwrap();
    moved("save_company_without_tokens");
    s.disconnect_company("301", |c| c.is_active = false)
        .await
        .unwrap();
    moved("disconnect_company");
    s.remove_company("301").await.unwrap();
    moved("remove_company");

    // Another node's writes do not move this node's counter (the snapshot's age limit
    // covers them), but its counts see them at once.
    let sql = pg::connect(&url).await;
    let before = g();
    insert_companies(&sql, "o", 3).await;
    assert_eq!(g(), before);
    assert_eq!(s.company_tally(Utc::now()).await.unwrap().total, 3);
}

#[tokio::test]
async fn size_on_disk_and_path_describe_the_database_without_its_password() {
    let Some(c) = pg::shared() else {
        return;
    };
    let url = c.fresh_db().await;
    // The test cluster trusts loopback: a password in the URL is accepted and ignored.
    let s = PgStore::open(&format!("{url}&password=hunter2"), Vault::generate())
        .await
        .unwrap();
    assert!(!s.path().contains("hunter2"), "{}", s.path());
    assert!(!format!("{s:?}").contains("hunter2"));
    assert!(s.path().contains("127.0.0.1"), "{}", s.path());
    let with_auth = c
        .fresh_db()
        .await
        .replacen("postgres@", "postgres:hunter2@", 1);
    let s2 = PgStore::open(&with_auth, Vault::generate()).await.unwrap();
    assert!(!s2.path().contains("hunter2"), "{}", s2.path());
    assert!(s2.path().contains("postgres:***@"), "{}", s2.path());
    let empty = s.size_on_disk().await;
    // pg_database_size of a fresh database: several megabytes of catalogue.
    assert!(empty > 1_000_000, "{empty}");
    let sql = pg::connect(&url).await;
    insert_companies(&sql, "s", 999).await;
    sql.batch_execute("CHECKPOINT").await.unwrap();
    assert!(s.size_on_disk().await > empty);
}

/// Version 1 of the schema as released (a database an older boa-exchange made).
const SCHEMA_V1: &str = include_str!("../../src/store/postgres/migrations/0001_initial.sql");

/// The per-minute waiting counts are exactly what a recount from the rows gives, with no
/// empty row left behind.
async fn assert_waiting_buckets_match_the_rows(sql: &tokio_postgres::Client) {
    let kept: Vec<(i64, i32, i64)> = sql
        .query(
            "SELECT bucket, stripe, n FROM company_waiting ORDER BY bucket, stripe",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let counted: Vec<(i64, i32, i64)> = sql
        .query(
            "SELECT boa_waiting_bucket(waiting_since), boa_waiting_stripe(realm), count(*)
             FROM companies WHERE waiting_since IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(kept, counted);
}

/// `company_tally(T).waiting` against a count over the rows, for every second of `from..=to`.
async fn assert_waiting_exact(
    s: &PgStore,
    sql: &tokio_postgres::Client,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) {
    let mut t = from;
    while t <= to {
        let want: i64 = sql
            .query_one(
                "SELECT count(*) FROM companies WHERE waiting_since <= $1",
                &[&t.timestamp()],
            )
            .await
            .unwrap()
            .get(0);
        let got = s.company_tally(t).await.unwrap().waiting;
        assert_eq!(got as i64, want, "waiting before {t}");
        t += chrono::Duration::seconds(1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_counts_are_exact_at_every_second_around_minute_edges_under_concurrent_syncs() {
    let Some((url, s)) = fresh().await else {
        return;
    };
    let s = Arc::new(s);
    let sql = pg::connect(&url).await;
    // Seconds around minute edges, before 1970 too (the minute of -30 starts at -60).
    let base = at("2026-05-01T08:00:00Z");
    let offsets = [-61i64, -60, -59, -1, 0, 1, 59, 60, 61, 119, 120, 3599, 3600];
    let mut n = 0;
    for (k, off) in offsets.iter().enumerate() {
        for copy in 0..3 {
            let mut c = company(&format!("7{k:02}{copy}"));
            c.created_at = base + chrono::Duration::seconds(*off);
            if copy == 2 {
                c.last_sync_at = Some(c.created_at);
                c.created_at = at("2020-01-01T00:00:00Z");
            }
            s.save_company(&c).await.unwrap();
            n += 1;
        }
    }
    let mut old = company("799");
    old.created_at = at("1969-12-31T23:59:30Z");
    s.save_company(&old).await.unwrap();
    assert_waiting_buckets_match_the_rows(&sql).await;
    assert_waiting_exact(
        &s,
        &sql,
        base - chrono::Duration::seconds(62),
        base + chrono::Duration::seconds(122),
    )
    .await;
    assert_waiting_exact(
        &s,
        &sql,
        at("1969-12-31T23:58:58Z"),
        at("1970-01-01T00:00:01Z"),
    )
    .await;

    // Not waiting: sync off, reconnect needed, disconnected; then removed.
    s.update_company("7000", |c| c.sync_enabled = false)
        .await
        .unwrap();
    s.update_company("7010", |c| {
        c.connection = Connection::ReconnectNeeded {
            since: base,
            reason: "invalid_grant".into(),
        }
    })
    .await
    .unwrap();
    s.disconnect_company("7020", |c| c.is_active = false)
        .await
        .unwrap();
    s.remove_company("7030").await.unwrap();
    s.remove_company("799").await.unwrap();
    assert_waiting_buckets_match_the_rows(&sql).await;
    assert_waiting_exact(
        &s,
        &sql,
        base - chrono::Duration::seconds(62),
        base + chrono::Duration::seconds(122),
    )
    .await;

    // Sixteen syncs at a time moving companies between minutes, forwards and backwards,
    // several into the same minute: no deadlock, no lost change.
    let realms: Vec<String> = (0..offsets.len())
        .flat_map(|k| (0..3).map(move |copy| format!("7{k:02}{copy}")))
        .filter(|r| r != "7030")
        .collect();
    assert_eq!(realms.len(), n - 1);
    let mut tasks = Vec::new();
    for w in 0..16i64 {
        let (s, realms) = (s.clone(), realms.clone());
        tasks.push(tokio::spawn(async move {
            for step in 0..24i64 {
                let realm = &realms[((w * 7 + step * 5) as usize) % realms.len()];
                let when = base + chrono::Duration::seconds((w * 37 + step * 53) % 400 - 100);
                s.update_company(realm, |c| c.last_sync_at = Some(when))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_waiting_buckets_match_the_rows(&sql).await;
    assert_waiting_exact(
        &s,
        &sql,
        base - chrono::Duration::seconds(102),
        base + chrono::Duration::seconds(302),
    )
    .await;
}

#[tokio::test]
async fn a_version_1_database_holding_companies_migrates_to_version_2_with_its_counts() {
    let Some(c) = pg::shared() else {
        return;
    };
    let url = c.fresh_db().await;
    let sql = pg::connect(&url).await;
    // What an older boa-exchange left: version 1 applied, companies written (its trigger
    // kept the five counts).
    sql.batch_execute(SCHEMA_V1).await.unwrap();
    sql.batch_execute(
        "CREATE TABLE schema_migrations (
             version    integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );
         INSERT INTO schema_migrations (version) VALUES (1)",
    )
    .await
    .unwrap();
    let template = serde_json::to_value(company("0")).unwrap();
    sql.execute(
        "INSERT INTO companies (realm, record, active, connected, reconnect_needed,
             sync_disabled, waiting_since, last_sync_at)
         SELECT lpad(i::text, 4, '0'), jsonb_set($1, '{realm_id}', to_jsonb(lpad(i::text, 4, '0'))),
                i % 9 <> 0, i % 9 <> 0 AND i % 10 <> 0, i % 10 = 0, i % 7 = 0,
                CASE WHEN i % 9 <> 0 AND i % 10 <> 0 AND i % 7 <> 0 THEN 1777622400 + i * 13 END,
                to_timestamp(1777622400 + i * 13)
         FROM generate_series(1, 900) i",
        &[&template],
    )
    .await
    .unwrap();
    let before = at("2026-05-01T09:00:00Z");
    let waiting_v1: i64 = sql
        .query_one(
            "SELECT count(*) FROM companies WHERE waiting_since <= $1",
            &[&before.timestamp()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(waiting_v1 > 100, "{waiting_v1}");

    let dir = tempfile::tempdir().unwrap();
    let id = dir.path().join("identity.txt");
    let s = PgStore::open_with_identity_file(&url, &id).await.unwrap();
    let versions = || async {
        sql.query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, i32>(0))
        .collect::<Vec<_>>()
    };
    assert_eq!(
        versions().await,
        (1..=PG_SCHEMA_VERSION).collect::<Vec<_>>()
    );
    assert_waiting_buckets_match_the_rows(&sql).await;
    let t = s.company_tally(before).await.unwrap();
    assert_eq!(
        (t.total, t.active, t.disconnected, t.waiting as i64),
        (900, 800, 100, waiting_v1)
    );
    assert_waiting_exact(
        &s,
        &sql,
        at("2026-05-01T08:59:00Z"),
        at("2026-05-01T09:01:00Z"),
    )
    .await;
    // And the new trigger keeps them from here on.
    s.update_company("0001", |c| {
        c.last_sync_at = Some(at("2026-05-01T08:59:30Z"))
    })
    .await
    .unwrap();
    s.remove_company("0002").await.unwrap();
    assert_waiting_buckets_match_the_rows(&sql).await;
    assert_waiting_exact(
        &s,
        &sql,
        at("2026-05-01T08:59:00Z"),
        at("2026-05-01T09:01:00Z"),
    )
    .await;
    // A second open finds nothing to migrate, and the counts stand.
    drop(s);
    let s = PgStore::open_with_identity_file(&url, &id).await.unwrap();
    assert_eq!(
        versions().await,
        (1..=PG_SCHEMA_VERSION).collect::<Vec<_>>()
    );
    assert_eq!(s.company_tally(before).await.unwrap().total, 899);
    assert_waiting_buckets_match_the_rows(&sql).await;
}

#[tokio::test]
async fn rates_logs_fixings_scrapes_pending_and_meta_round_trip() {
    let Some((_url, s)) = fresh().await else {
        return;
    };
    let realm = "301";
    s.put_rates(
        realm,
        &[
            rate("2026-05-04", "USD", "92.10", true),
            rate("2026-05-04", "EUR", "100.12", true),
            rate("2026-05-05", "EUR", "100.20", false),
        ],
    )
    .await
    .unwrap();
    s.put_rates("302", &[rate("2026-05-04", "EUR", "1", true)])
        .await
        .unwrap();
    let on = s.rates_on(realm, d("2026-05-04")).await.unwrap();
    assert_eq!(
        on.iter().map(|r| r.currency.as_str()).collect::<Vec<_>>(),
        ["EUR", "USD"]
    );
    assert_eq!(on[0], rate("2026-05-04", "EUR", "100.12", true));
    let between = s
        .rates_between(realm, d("2026-05-04"), d("2026-05-05"))
        .await
        .unwrap();
    assert_eq!(between.len(), 3);
    assert_eq!(s.rate_counts(realm).await.unwrap(), (3, 2));
    assert_eq!(s.synced_dates(realm).await.unwrap(), [d("2026-05-04")]);
    // Upsert replaces.
    s.put_rates(realm, &[rate("2026-05-05", "EUR", "100.20", true)])
        .await
        .unwrap();
    assert_eq!(s.rate_counts(realm).await.unwrap(), (3, 3));
    // A revised table of 2026-05-04 un-syncs what came from it.
    let n = s
        .invalidate_rates(TableKind::Main, d("2026-05-04"), true)
        .await
        .unwrap();
    assert_eq!(n, 3);
    let r = s.rates_on(realm, d("2026-05-04")).await.unwrap();
    assert!(r.iter().all(|r| !r.synced && r.synced_at.is_none()));
    assert_eq!(s.rate_counts(realm).await.unwrap(), (3, 1));

    s.append_log(realm, &log(LogKind::Syncing, true, "first"))
        .await
        .unwrap();
    s.append_log(realm, &log(LogKind::Syncing, false, "second"))
        .await
        .unwrap();
    s.append_log(realm, &log(LogKind::Connection, true, "third"))
        .await
        .unwrap();
    let logs = s.logs(realm, 2).await.unwrap();
    assert_eq!(
        logs.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(),
        ["third", "second"]
    );
    assert_eq!(s.log_counts(realm, LogKind::Syncing).await.unwrap(), (2, 1));

    let now = at("2026-05-04T10:15:00Z");
    let t1 = table(TableKind::Main, "2026-05-04", "100.12");
    assert_eq!(
        s.put_table(&t1, &page(), now).await.unwrap(),
        TableOutcome::New
    );
    assert_eq!(
        s.put_table(&t1, &page(), now).await.unwrap(),
        TableOutcome::Unchanged
    );
    let t1b = table(TableKind::Main, "2026-05-04", "100.50");
    assert_eq!(
        s.put_table(&t1b, &page(), now).await.unwrap(),
        TableOutcome::Revised
    );
    let workbook = FixingSource::Workbook {
        file: "2026.xlsx".into(),
        sha256: "cd".into(),
    };
    assert_eq!(
        s.put_table(&t1, &workbook, now).await.unwrap(),
        TableOutcome::Skipped
    );
    let stored = s
        .table(TableKind::Main, d("2026-05-04"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.table, t1b);
    assert_eq!(stored.previous.len(), 1);
    let t2 = table(TableKind::Main, "2026-05-06", "100.30");
    s.put_table(&t2, &page(), now).await.unwrap();
    s.put_table(&table(TableKind::Minor, "2026-05-01", "1"), &page(), now)
        .await
        .unwrap();
    let before = s
        .table_on_or_before(TableKind::Main, d("2026-05-05"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(before.table.date, d("2026-05-04"));
    let after = s
        .table_after(TableKind::Main, d("2026-05-04"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.table.date, d("2026-05-06"));
    assert!(s
        .table_after(TableKind::Main, d("2026-05-06"))
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        s.table_dates(TableKind::Main).await.unwrap(),
        [d("2026-05-04"), d("2026-05-06")]
    );
    assert_eq!(s.table_count().await.unwrap(), 3);

    for i in 0..3 {
        s.append_scrape(&ScrapeRecord {
            at: now,
            url: format!("http://boa.invalid/{i}"),
            success: true,
            fixing_dates: vec![(TableKind::Main, d("2026-05-04"))],
            outcome: "new".into(),
        })
        .await
        .unwrap();
    }
    let scrapes = s.scrapes(2).await.unwrap();
    assert_eq!(scrapes[0].url, "http://boa.invalid/2");
    assert_eq!(scrapes.len(), 2);

    let state = PendingAuth::State {
        created_at: now,
        expires_at: now + chrono::Duration::minutes(10),
        browser_nonce: "n1".into(),
    };
    let old = PendingAuth::Invite {
        created_at: now,
        expires_at: now - chrono::Duration::minutes(1),
    };
    s.put_pending("state-1", &state).await.unwrap();
    s.put_pending("invite-old", &old).await.unwrap();
    assert_eq!(s.pending("state-1").await.unwrap(), Some(state.clone()));
    assert_eq!(s.take_pending("state-1").await.unwrap(), Some(state));
    assert_eq!(s.take_pending("state-1").await.unwrap(), None, "single use");
    assert_eq!(s.purge_expired_pending(now).await.unwrap(), 1);
    assert_eq!(s.pending("invite-old").await.unwrap(), None);

    s.meta_put("last_run", &"2026-05-04".to_string())
        .await
        .unwrap();
    assert_eq!(
        s.meta_get::<String>("last_run").await.unwrap().as_deref(),
        Some("2026-05-04")
    );
    assert_eq!(s.meta_get::<String>("nothing").await.unwrap(), None);
    s.put_meta_secret("secret_key", b"hmac-key").await.unwrap();
    assert_eq!(
        s.meta_secret("secret_key").await.unwrap().as_deref(),
        Some(&b"hmac-key"[..])
    );
}

/// A sled store with some of every record, through its own API.
async fn sled_with_data(store: &Store) {
    let now = at("2026-05-04T10:15:00Z");
    for i in 0..5 {
        let realm = format!("40{i}");
        let mut c = company(&realm);
        c.tokens = Some(tokens("", "").expiry);
        store
            .save_company_and_tokens(&c, &tokens(&format!("AT-{i}"), &format!("RT-{i}")))
            .await
            .unwrap();
        store
            .put_rates(
                &realm,
                &[
                    rate("2026-05-04", "EUR", "100.12", true),
                    rate("2026-05-04", "USD", "92.10", false),
                ],
            )
            .await
            .unwrap();
        store
            .append_log(&realm, &log(LogKind::Syncing, true, "synced"))
            .await
            .unwrap();
        store
            .append_log(&realm, &log(LogKind::Connection, true, "connected"))
            .await
            .unwrap();
    }
    let mut off = company("499");
    off.is_active = false;
    store.save_company(&off).await.unwrap();
    store
        .put_table(
            &table(TableKind::Main, "2026-05-04", "100.12"),
            &page(),
            now,
        )
        .await
        .unwrap();
    store
        .put_table(
            &table(TableKind::Main, "2026-05-04", "100.50"),
            &page(),
            now,
        )
        .await
        .unwrap();
    store
        .put_table(&table(TableKind::Minor, "2026-05-01", "3.1"), &page(), now)
        .await
        .unwrap();
    store
        .append_scrape(&ScrapeRecord {
            at: now,
            url: "http://boa.invalid/".into(),
            success: true,
            fixing_dates: vec![(TableKind::Main, d("2026-05-04"))],
            outcome: "new".into(),
        })
        .await
        .unwrap();
    store
        .put_pending(
            "state-abc",
            &PendingAuth::State {
                created_at: now,
                expires_at: now + chrono::Duration::minutes(10),
                browser_nonce: "nonce".into(),
            },
        )
        .await
        .unwrap();
    store
        .put_pending(
            "invite-xyz",
            &PendingAuth::Invite {
                created_at: now,
                expires_at: now + chrono::Duration::days(7),
            },
        )
        .await
        .unwrap();
    store
        .meta_put("last_daily_run", &d("2026-05-04"))
        .await
        .unwrap();
    store.put_meta_secret("secret_key", b"k3y").await.unwrap();
}

/// A backup's records, with sealed entries opened (their ciphertext differs each time).
fn comparable(bytes: &[u8], vault: &Vault) -> (backup::Header, Vec<serde_json::Value>) {
    let mut recs = Vec::new();
    let contents = backup::read(bytes, |r| {
        let v = match &r {
            Record::Invite { sealed } | Record::OauthState { sealed } => {
                let ct = base64::engine::general_purpose::STANDARD
                    .decode(sealed)
                    .unwrap();
                let plain: serde_json::Value =
                    serde_json::from_slice(&vault.decrypt(&ct).unwrap()).unwrap();
                serde_json::json!({"kind": r.kind(), "opened": plain})
            }
            other => serde_json::to_value(other).unwrap(),
        };
        recs.push(v);
        Ok(())
    })
    .unwrap();
    (contents.header, recs)
}

async fn pg_backup(s: &PgStore) -> Vec<u8> {
    let out = Arc::new(std::sync::Mutex::new(Vec::new()));
    let w = s
        .backup(at("2026-05-05T00:00:00Z"), |line| {
            let out = out.clone();
            async move {
                out.lock().unwrap().extend_from_slice(&line);
                true
            }
        })
        .await
        .unwrap();
    assert_eq!(w.skipped, 0);
    let bytes = out.lock().unwrap().clone();
    bytes
}

#[tokio::test]
async fn a_sled_backup_restores_into_postgres_and_backs_up_to_the_same_records() {
    let Some(c) = pg::shared() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let id = dir.path().join("identity.txt");
    let sled = Store::open_sled(&dir.path().join("data"), &id).unwrap();
    sled_with_data(&sled).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    let collect = async {
        let mut all = Vec::new();
        while let Some(line) = rx.recv().await {
            all.extend_from_slice(&line);
        }
        all
    };
    let (written, from_sled) = tokio::join!(sled.backup(at("2026-05-05T00:00:00Z"), tx), collect);
    written.unwrap();
    let vault = Vault::load(&id).unwrap();

    let url = c.fresh_db().await;
    let s = PgStore::open(&url, Vault::load(&id).unwrap())
        .await
        .unwrap();
    assert!(s.is_empty().await.unwrap());
    let restored = s.restore(&from_sled[..]).await.unwrap();
    assert_eq!(restored.counts["company"], 6);
    assert_eq!(restored.counts["rate"], 10);
    assert!(!s.is_empty().await.unwrap());
    // What the daemon reads after the move: tokens decrypt, the tally counts.
    assert_eq!(
        s.tokens("403").await.unwrap().unwrap().refresh_token,
        "RT-3"
    );
    let t = s.company_tally(at("2026-06-01T00:00:00Z")).await.unwrap();
    assert_eq!((t.total, t.active, t.waiting), (6, 5, 5));
    // The restore loaded with the trigger off: the per-minute waiting counts were rebuilt.
    assert_waiting_buckets_match_the_rows(&pg::connect(&url).await).await;
    assert_eq!(s.meta_secret("secret_key").await.unwrap().unwrap(), b"k3y");

    let from_pg = pg_backup(&s).await;
    let (h1, r1) = comparable(&from_sled, &vault);
    let (h2, r2) = comparable(&from_pg, &vault);
    assert_eq!(
        (h1.backend.as_str(), h2.backend.as_str()),
        ("sled", "postgres")
    );
    assert_eq!(h1.identity_recipient, h2.identity_recipient);
    assert_eq!(h1.schema_version, h2.schema_version);
    assert_eq!(r1.len(), r2.len());
    for (a, b) in r1.iter().zip(&r2) {
        assert_eq!(a, b);
    }

    // Into a database that holds data: refused, nothing written.
    let entries = s.entries().await.unwrap();
    match s.restore(&from_sled[..]).await {
        Err(Error::NotEmpty { entries: n }) => assert_eq!(n, entries),
        other => panic!("expected NotEmpty, got {other:?}"),
    }
    assert_eq!(s.entries().await.unwrap(), entries);

    // A damaged file writes nothing: the restore is one transaction.
    let url = c.fresh_db().await;
    let empty = PgStore::open(&url, Vault::load(&id).unwrap())
        .await
        .unwrap();
    let mut cut = from_pg.clone();
    cut.truncate(from_pg.len() - 40);
    let e = empty.restore(&cut[..]).await.unwrap_err();
    assert!(e.to_string().contains("line"), "{e}");
    assert!(empty.is_empty().await.unwrap());
    // Another identity's backup is refused.
    let url = c.fresh_db().await;
    let other = PgStore::open(&url, Vault::generate()).await.unwrap();
    assert!(matches!(
        other.restore(&from_pg[..]).await,
        Err(Error::IdentityMismatch { .. })
    ));
    assert!(other.is_empty().await.unwrap());
}

#[tokio::test]
async fn exactly_one_leader_and_a_terminated_session_hands_over_within_the_lease() {
    let Some((url, s)) = fresh().await else {
        return;
    };
    let lease = Duration::from_secs(3);
    let one = Leadership::new(&s, lease);
    let two = Leadership::new(&s, lease);
    let mut leader = one
        .try_acquire()
        .await
        .unwrap()
        .expect("the first contender leads");
    assert!(
        two.try_acquire().await.unwrap().is_none(),
        "one leader at a time"
    );
    assert!(
        one.try_acquire().await.unwrap().is_none(),
        "even from the same node"
    );
    assert!(!leader.is_lost());

    let started = Instant::now();
    let admin = pg::connect(&url).await;
    let killed: bool = admin
        .query_one("SELECT pg_terminate_backend($1)", &[&leader.backend_pid()])
        .await
        .unwrap()
        .get(0);
    assert!(killed);
    tokio::time::timeout(lease, leader.lost())
        .await
        .expect("the leader notices the lost session within the lease");
    assert!(leader.is_lost());
    let noticed = started.elapsed();
    let next = tokio::time::timeout(lease, two.acquire())
        .await
        .expect("the standby takes over within the lease");
    assert!(!next.is_lost());
    eprintln!(
        "leader loss noticed after {noticed:?}, standby leader after {:?}",
        started.elapsed()
    );
    // Released leadership passes at once.
    next.release();
    let again = tokio::time::timeout(lease, one.acquire()).await.unwrap();
    drop(again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_token_refreshes_of_one_realm_serialize_across_stores() {
    let Some(c) = pg::shared() else {
        return;
    };
    // Two stores on one database with the same identity: two nodes.
    let dir = tempfile::tempdir().unwrap();
    let id = dir.path().join("identity.txt");
    let url = c.fresh_db().await;
    let a = Arc::new(PgStore::open_with_identity_file(&url, &id).await.unwrap());
    let b = Arc::new(PgStore::open_with_identity_file(&url, &id).await.unwrap());
    let s = a.clone();
    s.save_tokens("501", &tokens("AT-0", "RT-0")).await.unwrap();
    let inside = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let run = |s: Arc<PgStore>, delay: u64| {
        let (inside, calls) = (inside.clone(), calls.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            s.with_token_lock("501", |current| async move {
                assert_eq!(
                    inside.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two holders at once"
                );
                let out = if current.refresh_token == "RT-0" {
                    // The Intuit call.
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    Some(tokens("AT-1", "RT-1"))
                } else {
                    None
                };
                inside.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, String>(out)
            })
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        }
    };
    let (first, second) = tokio::join!(tokio::spawn(run(a, 0)), tokio::spawn(run(b, 100)));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first.refresh_token, "RT-1");
    assert_eq!(
        second.refresh_token, "RT-1",
        "the second sees the rotated token"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one refresh at Intuit");
    assert_eq!(
        s.tokens("501").await.unwrap().unwrap().refresh_token,
        "RT-1"
    );
    // No tokens: nothing to lock.
    let none = s
        .with_token_lock("502", |_| async { Ok::<_, String>(None) })
        .await
        .unwrap();
    assert!(none.is_none());
    // A failed refresh changes nothing.
    let failed = s
        .with_token_lock("501", |_| async {
            Err::<Option<TokenSet>, _>("invalid_grant")
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.unwrap_err(), "invalid_grant");
    assert_eq!(
        s.tokens("501").await.unwrap().unwrap().refresh_token,
        "RT-1"
    );
}

#[tokio::test]
async fn a_server_restart_answers_unavailable_meanwhile_and_loses_nothing_committed() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let url = cluster.fresh_db().await;
    let s = PgStore::open(&url, Vault::generate()).await.unwrap();
    for i in 0..20 {
        s.save_company(&company(&format!("6{i:02}"))).await.unwrap();
    }
    s.save_tokens("600", &tokens("AT-r", "RT-r")).await.unwrap();
    cluster.stop();
    let t = Instant::now();
    let e = s.company("600").await.unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    assert!(matches!(
        s.save_company(&company("699")).await,
        Err(Error::Unavailable(_))
    ));
    assert!(
        t.elapsed() < Duration::from_secs(6),
        "answers promptly: {:?}",
        t.elapsed()
    );
    assert_eq!(s.size_on_disk().await, 0, "0 when it cannot be read");
    cluster.resume();
    // The pool reconnects by itself.
    let mut back = None;
    for _ in 0..50 {
        match s.companies().await {
            Ok(all) => {
                back = Some(all);
                break;
            }
            Err(e) => {
                assert!(e.is_unavailable(), "{e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let all = back.expect("works again after the restart");
    assert_eq!(all.len(), 20, "nothing committed is lost");
    assert_eq!(
        s.tokens("600").await.unwrap().unwrap().refresh_token,
        "RT-r"
    );
    s.save_company(&company("699")).await.unwrap();
    assert_eq!(s.companies().await.unwrap().len(), 21);
}

/// Medians and maxima of `company_tally(before)`, 50 calls; the last answer.
async fn time_tally(s: &PgStore, before: DateTime<Utc>) -> (Duration, Duration, usize) {
    let mut took = Vec::new();
    let mut last = None;
    for _ in 0..50 {
        let t = Instant::now();
        last = Some(s.company_tally(before).await.unwrap());
        took.push(t.elapsed());
    }
    took.sort();
    let tally = last.unwrap();
    assert_eq!(tally.total, 100_000);
    (took[took.len() / 2], took[took.len() - 1], tally.waiting)
}

/// The waiting count the slow way, to check the tally's against.
async fn waiting_by_scan(sql: &tokio_postgres::Client, before: DateTime<Utc>) -> usize {
    let n: i64 = sql
        .query_one(
            "SELECT count(*) FROM companies WHERE waiting_since <= $1",
            &[&before.timestamp()],
        )
        .await
        .unwrap()
        .get(0);
    n as usize
}

/// What `/health` costs at the SPEC's scale: the company counts over 100,000 companies, and
/// what keeping them costs the syncs (`BOA_EXCHANGE_REQUIRE_POSTGRES=1 cargo test --locked
/// --test it postgres::tally_at_scale -- --ignored --nocapture`; it prints the figures).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: 100,000 companies"]
async fn tally_at_scale() {
    let Some((url, s)) = fresh().await else {
        return;
    };
    let s = Arc::new(s);
    let template = serde_json::to_value(company("0")).unwrap();
    let sql = pg::connect(&url).await;
    let t = Instant::now();
    // As a restore loads them: the counts made once at the end.
    sql.batch_execute("ALTER TABLE companies DISABLE TRIGGER companies_counts")
        .await
        .unwrap();
    sql.execute(
        "INSERT INTO companies (realm, record, active, connected, reconnect_needed,
             sync_disabled, waiting_since, last_sync_at)
         SELECT lpad(i::text, 6, '0'), jsonb_set($1, '{realm_id}', to_jsonb(lpad(i::text, 6, '0'))),
                true, i % 10 <> 0, i % 10 = 0, i % 7 = 0,
                CASE WHEN i % 10 <> 0 AND i % 7 <> 0 THEN 1777622400 + i END,
                to_timestamp(1777622400 + i)
         FROM generate_series(1, 100000) i",
        &[&template],
    )
    .await
    .unwrap();
    sql.batch_execute(
        "SELECT boa_recount_companies(); ALTER TABLE companies ENABLE TRIGGER companies_counts",
    )
    .await
    .unwrap();
    eprintln!("100,000 companies inserted in {:?}", t.elapsed());
    sql.batch_execute("VACUUM ANALYZE companies").await.unwrap();
    // Spread over 28 hours, one a second: a few waiting (the usual answer), then every
    // waiting company counted (the worst for a count over the rows).
    for before in ["2026-05-01T12:00:00Z", "2027-01-01T00:00:00Z"] {
        let (median, max, waiting) = time_tally(&s, at(before)).await;
        assert_eq!(waiting, waiting_by_scan(&sql, at(before)).await);
        eprintln!(
            "company_tally at 100,000 companies, waiting before {before}: median {median:?}, max {max:?} ({waiting} waiting)"
        );
    }

    // The whole table streamed through each_company.
    let t = Instant::now();
    let mut n = 0usize;
    let bad = s.each_company(|_| n += 1).await.unwrap();
    assert_eq!((n, bad.len()), (100_000, 0));
    eprintln!("each_company over 100,000 companies: {:?}", t.elapsed());

    // A sync-all: 16 at a time, each moving its company's last sync to now (what keeping the
    // waiting counts costs the writers, all of them writing the same minute).
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..16u32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut took = Vec::new();
            // 100 waiting companies (i % 10 <> 0, i % 7 <> 0), each task its own.
            let mine = (w * 6000 + 1..).filter(|i| i % 10 != 0 && i % 7 != 0);
            for i in mine.take(100) {
                let realm = format!("{i:06}");
                let t = Instant::now();
                s.update_company(&realm, |c| c.last_sync_at = Some(Utc::now()))
                    .await
                    .unwrap()
                    .unwrap();
                took.push(t.elapsed());
            }
            took
        }));
    }
    let mut took = Vec::new();
    for t in tasks {
        took.extend(t.await.unwrap());
    }
    took.sort();
    eprintln!(
        "1,600 syncs' update_company, 16 at a time: {:?} in all, median {:?}, max {:?}",
        t.elapsed(),
        took[took.len() / 2],
        took[took.len() - 1]
    );
    let now = Utc::now();
    for before in ["2026-05-01T12:00:00Z", "2027-01-01T00:00:00Z"] {
        assert_eq!(
            s.company_tally(at(before)).await.unwrap().waiting,
            waiting_by_scan(&sql, at(before)).await
        );
    }
    assert_eq!(
        s.company_tally(now).await.unwrap().waiting,
        waiting_by_scan(&sql, now).await
    );

    // Dense: every waiting company synced within 30 minutes (a daily sync-all), asked in
    // the middle of those minutes (where /health asks for a day until the next run).
    sql.batch_execute(
        "ALTER TABLE companies DISABLE TRIGGER companies_counts;
         UPDATE companies SET waiting_since = 1777622400 + (realm::int * 7919) % 1800
             WHERE waiting_since IS NOT NULL;
         SELECT boa_recount_companies();
         ALTER TABLE companies ENABLE TRIGGER companies_counts",
    )
    .await
    .unwrap();
    sql.batch_execute("VACUUM ANALYZE companies").await.unwrap();
    let before = at("2026-05-01T08:15:00Z");
    let (median, max, waiting) = time_tally(&s, before).await;
    assert_eq!(waiting, waiting_by_scan(&sql, before).await);
    eprintln!(
        "company_tally, every waiting company synced within 30 minutes, asked in the middle: median {median:?}, max {max:?} ({waiting} waiting)"
    );
}

/// Company writes that change the counts, many at a time from one store (as concurrent OAuth
/// callbacks, an import or the bench's seeding do): first saves of companies with their tokens,
/// and changes of existing companies between counted states. None fails (schema 3 locks the
/// count rows in one order; before it, these writes met `deadlock detected`), and the counts
/// come out exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_company_writes_that_change_the_counts_never_deadlock() {
    let Some((_, store)) = fresh().await else {
        return;
    };
    let store = Arc::new(store);
    let mut writes = tokio::task::JoinSet::new();
    let n = 3000;
    for i in 0..n {
        let store = store.clone();
        writes.spawn(async move {
            let realm = format!("{}", 70_000 + i);
            let mut c = company(&realm);
            c.created_at = at("2026-05-01T08:00:00Z") + chrono::Duration::seconds(i64::from(i));
            store
                .save_company_and_tokens(&c, &tokens(&format!("AT-{i}"), &format!("RT-{i}")))
                .await?;
            // Then a change that moves other count rows: active, sync, connection.
            store
                .update_company(&realm, |c| {
                    c.is_active = i % 2 == 0;
                    c.sync_enabled = i % 3 != 0;
                    if i % 5 == 0 {
                        c.connection = Connection::ReconnectNeeded {
                            since: at("2026-05-01T08:00:00Z"),
                            reason: "test".into(),
                        };
                    }
                })
                .await
                .map(|_| ())
        });
        while writes.len() >= 64 {
            let r = writes.join_next().await.unwrap().unwrap();
            assert!(r.is_ok(), "a company write failed: {r:?}");
        }
    }
    while let Some(r) = writes.join_next().await {
        let r = r.unwrap();
        assert!(r.is_ok(), "a company write failed: {r:?}");
    }
    let t = store
        .company_tally(at("2026-05-02T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(t.total, n as usize);
    assert_eq!(t.active, (0..n).filter(|i| i % 2 == 0).count());
}

/// The writes sled leaves unflushed (a company's rates, its `last_sync_at`, log records) are
/// relaxed commits on PostgreSQL, visible at once to every session, and `flush` makes them
/// durable: after it the server's WAL is flushed past every one of them. The server's WAL
/// writer is slowed to 10 s, so nothing but the flush itself moves the flushed position in
/// time.
#[tokio::test]
async fn unflushed_writes_are_visible_at_once_and_durable_after_flush() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let sql = cluster.superuser().await;
    for q in [
        "ALTER SYSTEM SET wal_writer_delay = '10s'",
        "SELECT pg_reload_conf()",
    ] {
        sql.batch_execute(q).await.unwrap();
    }
    let url = cluster.fresh_db().await;
    let dir = tempfile::tempdir().unwrap();
    let id = dir.path().join("identity.txt");
    let s = PgStore::open_with_identity_file(&url, &id).await.unwrap();
    s.save_company(&company("801")).await.unwrap();
    let other = PgStore::open_with_identity_file(&url, &id).await.unwrap();
    let lsn = |q: &'static str| {
        let sql = &sql;
        async move {
            let row = sql
                .query_one(&format!("SELECT ({q} - '0/0'::pg_lsn)::bigint"), &[])
                .await
                .unwrap();
            row.get::<_, i64>(0)
        }
    };
    for round in 0..3 {
        s.put_rates("801", &[rate("2026-05-04", "EUR", "100.5", true)])
            .await
            .unwrap();
        s.append_log(
            "801",
            &log(LogKind::Syncing, true, &format!("round {round}")),
        )
        .await
        .unwrap();
        let synced = at("2026-05-04T10:00:00Z") + chrono::Duration::minutes(round);
        s.update_company_unflushed("801", |c| c.last_sync_at = Some(synced))
            .await
            .unwrap()
            .unwrap();
        // Another node sees them before any flush.
        assert_eq!(
            other.company("801").await.unwrap().unwrap().last_sync_at,
            Some(synced)
        );
        assert_eq!(
            other.logs("801", 1).await.unwrap()[0].message,
            format!("round {round}")
        );
        let written = lsn("pg_current_wal_insert_lsn()").await;
        s.flush().await.unwrap();
        let flushed = lsn("pg_current_wal_flush_lsn()").await;
        assert!(
            flushed >= written,
            "round {round}: after flush the WAL is flushed to {flushed}, short of the writes at {written}"
        );
    }
}

/// A store sized for 40 companies in flight holds 40 token refreshes at once, each keeping
/// its connection for longer than a caller waits for one (as refreshes do across a slow
/// Intuit), and still answers another request meanwhile. The pool as opened (24) makes the
/// 25th refresh fail as unavailable: that is what sizing it for the sync-all prevents.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pool_sized_for_the_companies_in_flight_holds_a_refresh_for_each() {
    let Some((_, store)) = fresh().await else {
        return;
    };
    let n = 40;
    for i in 0..n {
        store
            .save_tokens(&format!("{}", 90_000 + i), &tokens("AT", "RT"))
            .await
            .unwrap();
    }
    let store = Arc::new(store);
    let held_refreshes = |store: Arc<PgStore>| async move {
        let mut refreshes = tokio::task::JoinSet::new();
        for i in 0..n {
            let store = store.clone();
            refreshes.spawn(async move {
                store
                    .with_token_lock(&format!("{}", 90_000 + i), |_| async {
                        // Longer than the pool's 5 s wait for a free connection.
                        tokio::time::sleep(Duration::from_secs(6)).await;
                        Ok::<_, String>(None)
                    })
                    .await
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let beside = store.company_tally(Utc::now()).await.map(|t| t.total);
        let mut unavailable = 0;
        while let Some(r) = refreshes.join_next().await {
            match r.unwrap() {
                Ok(Some(Ok(_))) => {}
                Err(Error::Unavailable(_)) => unavailable += 1,
                other => panic!("a held refresh answered {other:?}"),
            }
        }
        (unavailable, beside.is_ok())
    };
    assert_eq!(store.pool_size(), 24);
    let (unavailable, _) = held_refreshes(store.clone()).await;
    assert_eq!(unavailable, n - 24, "the pool as opened holds 24");

    store.size_pool_for(n);
    assert_eq!(store.pool_size(), n + 8);
    let (unavailable, beside) = held_refreshes(store.clone()).await;
    assert_eq!(unavailable, 0, "every refresh held its connection");
    assert!(beside, "a request beside them got a connection");
}
