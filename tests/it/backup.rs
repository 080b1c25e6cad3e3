//! Backup and restore (issue 22, SPEC §12) with the real binary: a backup taken while a
//! sync-all rotates tokens, restored into a fresh folder, and the restored daemon syncing
//! every company without a reconnect; every bad input refused with exit 1, nothing written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use boa_exchange::crypto::Vault;
use boa_exchange::store::codec;
use boa_exchange::store::records::TokenSet;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::daemon::TestDaemon;
use crate::support::eventually::eventually_async;
use crate::support::fake_intuit::CompanySpec;
use crate::support::world::{World, ADMIN_KEY};

const FRIDAY: &str = "2026-05-22";
const SATURDAY: &str = "2026-05-23";
const SUNDAY: &str = "2026-05-24";
const COMPANIES: usize = 24;

fn realm(i: usize) -> String {
    format!("93{i:04}")
}

fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The records of a backup file (header and trailer left out).
fn records(file: &Path) -> Vec<Value> {
    let all = lines(file);
    all[1..all.len() - 1]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The refresh token each `tokens` record of a backup holds, decrypted with the identity.
fn backed_up_refresh_tokens(file: &Path, identity: &Path) -> BTreeMap<String, String> {
    use base64::Engine as _;
    let vault = Vault::load(identity).unwrap();
    records(file)
        .into_iter()
        .filter(|r| r["kind"] == "tokens")
        .map(|r| {
            let ct = base64::engine::general_purpose::STANDARD
                .decode(r["ciphertext"].as_str().unwrap())
                .unwrap();
            let t: TokenSet = codec::decode(&vault.decrypt(&ct).unwrap()).unwrap();
            (r["realm"].as_str().unwrap().to_string(), t.refresh_token)
        })
        .collect()
}

async fn sync_all(w: &World, date: &str) -> Value {
    let a = w
        .admin_post(&format!("/api/v1/companies/sync-all?target_date={date}"))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    a.json()
}

fn stop(d: &mut TestDaemon) {
    d.signal(libc::SIGTERM);
    assert!(
        d.wait_exit(Duration::from_secs(30)).success(),
        "{}",
        d.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_during_a_rotating_sync_all_restores_and_every_company_syncs_without_reconnect() {
    let mut w = World::start("").await;
    assert_eq!(w.fetch()["ok"], true);
    for i in 0..COMPANIES {
        let a = w
            .connect(CompanySpec::new(realm(i), format!("Co {i}")))
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
    }
    // Phase A: every company refreshes and rotates; acknowledged before the backup.
    for i in 0..COMPANIES {
        w.intuit.rotate_now(&realm(i));
        w.intuit.expire_access_tokens(&realm(i));
    }
    let a = sync_all(&w, FRIDAY).await;
    assert_eq!(a["successful"], COMPANIES, "{a}");
    let rt_a: BTreeMap<String, String> = (0..COMPANIES)
        .map(|i| (realm(i), w.intuit.current_refresh_token(&realm(i)).unwrap()))
        .collect();

    // Phase B: a sync-all that rotates every token again, slowed down, with a backup taken
    // while it runs.
    for i in 0..COMPANIES {
        w.intuit.rotate_now(&realm(i));
        w.intuit.expire_access_tokens(&realm(i));
    }
    w.intuit.set_latency(Duration::from_millis(40));
    let refreshes_before = w.intuit.token_calls();
    let url = w.url(&format!(
        "/api/v1/companies/sync-all?target_date={SATURDAY}"
    ));
    let running = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .bearer_auth(ADMIN_KEY)
            .timeout(Duration::from_secs(300))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    eventually_async(
        Duration::from_secs(60),
        "phase B refreshes to begin",
        async || w.intuit.token_calls() > refreshes_before,
    )
    .await;
    let file = w.daemon.dir.path().join("backups/boa.jsonl");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let (code, out, err) =
        tokio::task::block_in_place(|| w.daemon.cli(&["backup", file.to_str().unwrap()]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("records"), "{out}");
    eprintln!(
        "sync-all still running when the backup ended: {}",
        !running.is_finished()
    );
    let b = running.await.unwrap();
    assert_eq!(b["successful"], COMPANIES, "{b}");
    w.intuit.set_latency(Duration::ZERO);

    // The file: 0600, complete, no plaintext token anywhere.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::read_dir(file.parent().unwrap()).unwrap().count(),
        1,
        "no temp file left"
    );
    let bytes = std::fs::read(&file).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    for t in w
        .intuit
        .issued_refresh_tokens()
        .iter()
        .chain(&w.intuit.issued_access_tokens())
    {
        assert!(
            !text.contains(t.as_str()),
            "a plaintext token in the backup"
        );
    }
    let all = lines(&file);
    let header: Value = serde_json::from_str(&all[0]).unwrap();
    assert_eq!(header["format"], "boa-exchange-backup");
    assert_eq!(header["version"], 1);
    assert_eq!(header["backend"], "sled");
    assert!(header["identity_recipient"]
        .as_str()
        .unwrap()
        .starts_with("age1"));
    let trailer: Value = serde_json::from_str(all.last().unwrap()).unwrap();
    assert_eq!(trailer["end"], true);
    assert_eq!(trailer["records"], all.len() - 2);
    let body_len = bytes.len() - all.last().unwrap().len() - 1;
    assert_eq!(
        trailer["sha256"],
        hex::encode(Sha256::digest(&bytes[..body_len]))
    );

    // Every token is at least the one acknowledged before the backup began.
    let identity = w.daemon.data_dir().join("identity.txt");
    let backed = backed_up_refresh_tokens(&file, &identity);
    assert_eq!(backed.len(), COMPANIES);
    for (r, rt) in &backed {
        let now = w.intuit.current_refresh_token(r).unwrap();
        assert!(
            rt == &rt_a[r] || rt == &now,
            "{r}: the backup holds a token older than the one acknowledged before it began"
        );
    }

    // Restore into a fresh folder (the identity put back first), start, sync everything.
    stop(&mut w.daemon);
    let data = w.daemon.data_dir();
    let old = w.daemon.dir.path().join("old-data");
    std::fs::rename(&data, &old).unwrap();
    std::fs::create_dir(&data).unwrap();
    std::fs::copy(old.join("identity.txt"), data.join("identity.txt")).unwrap();
    let config = w.daemon.config_path();
    let (code, out, err) = w.daemon.cli(&[
        "restore",
        file.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("dry run") && out.contains(&format!("company      {COMPANIES}")),
        "{out}"
    );
    assert!(!data.join("db").exists(), "a dry run writes nothing");
    let (code, out, err) = w.daemon.cli(&[
        "restore",
        file.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("restored {} records", all.len() - 2)),
        "{out}"
    );
    w.daemon.spawn_and_wait_ready();
    let list = w.daemon.control("companies", json!({"all": true}));
    assert_eq!(list["data"]["count"], COMPANIES, "{list}");
    let token_calls = w.intuit.token_calls();
    for i in 0..COMPANIES {
        w.intuit.expire_access_tokens(&realm(i));
    }
    let c = sync_all(&w, SUNDAY).await;
    assert_eq!(c["successful"], COMPANIES, "{c}");
    assert!(
        w.intuit.token_calls() > token_calls,
        "the restored tokens were refreshed"
    );
    for i in 0..COMPANIES {
        let s = w.daemon.control("company", json!({"realm": realm(i)}));
        assert_eq!(s["data"]["connection"], "connected", "{s}");
        assert!(w.intuit.is_connected(&realm(i)));
    }
    // What was synced before the backup is still known as synced: nothing written twice.
    let again = sync_all(&w, FRIDAY).await;
    assert_eq!(again["successful"], COMPANIES, "{again}");
}

/// A small world with one company, its backup file, and the daemon stopped.
async fn backed_up() -> (World, PathBuf) {
    let w = World::start("").await;
    assert_eq!(w.fetch()["ok"], true);
    let a = w.connect(CompanySpec::new("9400", "Small")).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let file = w.daemon.dir.path().join("b.jsonl");
    let (code, out, err) = w.daemon.cli(&["backup", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    (w, file)
}

/// Runs `restore` with a config whose data_dir is `data` (identity: the daemon's).
fn restore_into(w: &World, data: &Path, identity: &Path, file: &Path) -> (i32, String, String) {
    let cfg = w.daemon.dir.path().join(format!(
        "restore-{}.toml",
        data.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(
        &cfg,
        format!(
            "[storage]\ndata_dir = \"{}\"\nidentity_file = \"{}\"\n",
            data.display(),
            identity.display()
        ),
    )
    .unwrap();
    w.daemon.cli(&[
        "restore",
        file.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ])
}

fn with_trailer(body: &[String]) -> String {
    let mut out = String::new();
    for l in body {
        out.push_str(l);
        out.push('\n');
    }
    let sha = hex::encode(Sha256::digest(out.as_bytes()));
    out.push_str(&format!(
        "{{\"end\":true,\"records\":{},\"sha256\":\"{sha}\"}}\n",
        body.len() - 1
    ));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_exit_1_naming_the_reason_and_writes_nothing() {
    let (mut w, file) = backed_up().await;
    let dir = w.daemon.dir.path().to_path_buf();
    let dir = dir.as_path();
    let identity = w.daemon.data_dir().join("identity.txt");
    let all = lines(&file);
    let n = all.len();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let joined = |ls: &[String]| ls.iter().map(|l| format!("{l}\n")).collect::<String>();
    let cases: Vec<(PathBuf, String)> = vec![
        (
            write("truncated.jsonl", &joined(&all[..n - 1])),
            "truncated".into(),
        ),
        (
            write("cut.jsonl", &joined(&all)[..joined(&all).len() - 30]),
            "truncated".into(),
        ),
        (
            write("flipped.jsonl", &joined(&all).replacen("Small", "Smalk", 1)),
            format!("line {n}: sha256 mismatch"),
        ),
        (
            write("garbage.jsonl", &{
                let mut g = all.clone();
                g.insert(2, "\u{1}garbage%%".into());
                joined(&g)
            }),
            "line 3: not a JSON record".into(),
        ),
        (
            write("newer-kind.jsonl", &{
                let mut k = all[..n - 1].to_vec();
                k.insert(1, r#"{"kind":"ledger_entry","amount":"1.00"}"#.into());
                with_trailer(&k)
            }),
            "line 2: record kind \"ledger_entry\"".into(),
        ),
        (
            write("not-a-backup.jsonl", "hello\n"),
            "line 1: not a boa-exchange backup".into(),
        ),
        (dir.to_path_buf(), "is a directory".into()),
    ];
    for (i, (bad, expect)) in cases.iter().enumerate() {
        let target = dir.join(format!("target-{i}"));
        let (code, out, err) = restore_into(&w, &target, &identity, bad);
        assert_eq!(code, 1, "{}: {out}{err}", bad.display());
        assert!(
            err.contains(expect.as_str()),
            "{}: expected {expect:?} in {err}",
            bad.display()
        );
        assert!(
            !target.exists(),
            "{}: the target was created",
            bad.display()
        );
    }

    // A backup made with another identity.
    let other = dir.join("other-identity.txt");
    Vault::create(&other).unwrap();
    let target = dir.join("target-other");
    let (code, _, err) = restore_into(&w, &target, &other, &file);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("not the one this backup was made with"),
        "{err}"
    );
    assert!(!target.exists());
    // The identity missing.
    let (code, _, err) = restore_into(&w, &target, &dir.join("nowhere.txt"), &file);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is missing"), "{err}");
    assert!(!target.exists());

    // A non-empty target: the daemon's own store (the daemon running holds its lock).
    let (code, _, err) = restore_into(&w, &w.daemon.data_dir(), &identity, &file);
    assert_eq!(code, 1, "{err}");
    // And, the daemon stopped, the store is refused as not empty and left as it was.
    stop(&mut w.daemon);
    let before = w.daemon.data_bytes().len();
    let (code, _, err) = restore_into(&w, &w.daemon.data_dir(), &identity, &file);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is not empty"), "{err}");
    assert!(w.daemon.data_bytes().len() >= before);
    w.daemon.spawn_and_wait_ready();

    // backup to a directory, or into a folder that does not exist: exit 1, nothing written.
    let (code, _, err) = w.daemon.cli(&["backup", dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is a directory"), "{err}");
    let nowhere = dir.join("no/such/b.jsonl");
    let (code, _, err) = w.daemon.cli(&["backup", nowhere.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot write"), "{err}");
    assert!(!dir.join("no").exists());
    // `-` streams to stdout, the same checked lines.
    let (code, out, err) = w.daemon.cli(&["backup", "-"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("{\"format\":\"boa-exchange-backup\""),
        "{out}"
    );
    assert!(out
        .trim_end()
        .lines()
        .last()
        .unwrap()
        .starts_with("{\"end\":true"));
    assert!(err.contains("records"), "{err}");
}

/// The move from sled to PostgreSQL (SPEC §12): the CLI's `restore` with `backend =
/// "postgres"` loads a sled backup into an empty database with the tokens still the same
/// ciphertext that decrypts with the identity; a second restore into the now non-empty
/// database is exit 1 writing nothing, a password in the URL is never printed, and the
/// daemon then started on PostgreSQL lists the company and syncs it without a reconnect,
/// refreshing the restored grant (SPEC §12: the move from sled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_backup_restores_into_postgres_from_the_cli() {
    let Some(cluster) = crate::support::postgres::shared() else {
        return;
    };
    let (mut w, file) = backed_up().await;
    stop(&mut w.daemon);
    let identity = w.daemon.data_dir().join("identity.txt");
    let url = cluster.fresh_db().await;
    let with_password = url.replace("postgres@", "postgres:hunter2@");
    let cfg = w.daemon.dir.path().join("restore-pg.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nbackend = \"postgres\"\npostgres_url = \"{with_password}\"\nidentity_file = \"{}\"\n",
            identity.display()
        ),
    )
    .unwrap();
    let restore = |extra: &[&str]| {
        let mut args = vec![
            "restore",
            file.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        w.daemon.cli(&args)
    };

    let (code, out, err) = restore(&["--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = restore(&[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !format!("{out}{err}").contains("hunter2"),
        "password printed: {out}{err}"
    );

    let pg = boa_exchange::store::postgres::PgStore::open_with_identity_file(&url, &identity)
        .await
        .unwrap();
    let companies = pg.companies().await.unwrap();
    assert_eq!(companies.len(), 1, "{companies:?}");
    assert_eq!(companies[0].realm_id, "9400");
    let from_file = backed_up_refresh_tokens(&file, &identity);
    let tokens = pg.tokens("9400").await.unwrap().expect("tokens restored");
    assert_eq!(Some(&tokens.refresh_token), from_file.get("9400"));

    let (code, out, err) = restore(&[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("not empty"), "{err}");
    assert!(!err.contains("hunter2"), "password printed: {err}");
    assert_eq!(pg.companies().await.unwrap().len(), 1);

    drop(pg);

    w.daemon.extra_config.push_str(&format!(
        "\n[storage]\nbackend = \"postgres\"\npostgres_url = \"{url}\"\nidentity_file = \"{}\"\n",
        identity.display()
    ));
    // The sled folder is gone: whatever the daemon shows now comes from the database.
    std::fs::remove_dir_all(w.daemon.data_dir().join("db")).unwrap();
    w.daemon.write_config();
    w.daemon.spawn_and_wait_ready();
    let status = w.daemon.control("status", json!({}));
    assert_eq!(status["data"]["store"]["backend"], "postgres", "{status}");
    assert_eq!(status["data"]["role"], "leader", "{status}");
    let list = w.daemon.control("companies", json!({"all": true}));
    assert_eq!(list["data"]["count"], 1, "{list}");
    let token_calls = w.intuit.token_calls();
    w.intuit.expire_access_tokens("9400");
    let c = sync_all(&w, SUNDAY).await;
    assert_eq!(c["successful"], 1, "{c}");
    assert!(
        w.intuit.token_calls() > token_calls,
        "the restored grant was refreshed"
    );
    let s = w.daemon.control("company", json!({"realm": "9400"}));
    assert_eq!(s["data"]["connection"], "connected", "{s}");
}
