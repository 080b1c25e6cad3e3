//! The operator's toolbox (issue 24): the packaged man page and completions are what the
//! binary generates from its clap definitions, the man page names every subcommand, the
//! alert rules pass `promtool` and every metric the rules and the dashboard use is one the
//! real daemon exports, and `status` reads like `systemctl status`.
//!
//! Tests that need an outside tool (promtool, nginx) say so and pass where it is absent,
//! unless `BOA_EXCHANGE_REQUIRE_TOOLS=1` (set by `.ci/run`): then they fail.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::daemon::{TestDaemon, BIN};
use crate::support::fake_intuit::CompanySpec;
use crate::support::world::World;

/// The path of `name` on PATH (or in /usr/sbin, /usr/bin); `None` (after saying so) when it
/// is absent and tools are not required; a failure when `BOA_EXCHANGE_REQUIRE_TOOLS=1`.
pub fn tool(name: &str, package: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        let required = std::env::var("BOA_EXCHANGE_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "{name} is not installed (Debian package {package}) and BOA_EXCHANGE_REQUIRE_TOOLS=1"
        );
        eprintln!("SKIPPED: {name} is not installed (apt-get install {package})");
    }
    found
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn run(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().expect("run binary");
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn packaged_man_page_and_completions_are_the_generated_ones() {
    for (file, args) in [
        ("packaging/boa-exchange.8", &["manpage"][..]),
        (
            "packaging/completions/boa-exchange.bash",
            &["completions", "bash"],
        ),
        (
            "packaging/completions/_boa-exchange",
            &["completions", "zsh"],
        ),
        (
            "packaging/completions/boa-exchange.fish",
            &["completions", "fish"],
        ),
    ] {
        let packaged = std::fs::read_to_string(repo(file)).expect(file);
        assert!(
            packaged == run(args),
            "{file} is not what `boa-exchange {}` prints: run packaging/generate.sh",
            args.join(" ")
        );
    }
}

/// The subcommands `--help` lists (its "Commands:" block), `help` excepted.
fn subcommands_in_help() -> Vec<String> {
    let help = run(&["--help"]);
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn the_man_page_lists_every_subcommand_and_completions_know_them() {
    let commands = subcommands_in_help();
    assert!(commands.len() > 15, "{commands:?}");
    assert!(commands.contains(&"completions".to_string()));
    let page = std::fs::read_to_string(repo("packaging/boa-exchange.8")).expect("man page");
    let bash = std::fs::read_to_string(repo("packaging/completions/boa-exchange.bash")).unwrap();
    let fish = std::fs::read_to_string(repo("packaging/completions/boa-exchange.fish")).unwrap();
    for c in &commands {
        let roff = format!("\\fBboa\\-exchange {}\\fR", c.replace('-', "\\-"));
        assert!(page.contains(&roff), "the man page has no entry {roff}");
        assert!(
            bash.contains(&format!("boa__exchange__subcmd__{}", c.replace('-', "__")))
                || bash.contains(c.as_str()),
            "bash: {c}"
        );
        assert!(fish.contains(&format!("-a \"{c}\"")), "fish: {c}");
    }
    // The page renders without roff warnings where man is installed.
    if let Some(man) = tool("man", "man-db") {
        let out = Command::new(man)
            .args(["--warnings", "-l", "-P", "cat"])
            .arg(repo("packaging/boa-exchange.8"))
            .env("MANWIDTH", "80")
            .output()
            .expect("man");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && err.trim().is_empty(), "man: {err}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("EXIT STATUS") && text.contains("COMMANDS"),
            "{text}"
        );
    }
}

/// Every `boa_exchange_*` name in a text (PromQL in YAML or JSON).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("boa_exchange_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn alert_rules_pass_promtool_and_use_only_exported_metrics() {
    let rules = repo("packaging/monitoring/boa-exchange.rules.yml");
    let dashboard = repo("packaging/monitoring/grafana-dashboard.json");
    // The dashboard is JSON Grafana imports: panels with PromQL targets.
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(&dashboard).unwrap()).expect("JSON");
    let exprs: Vec<&str> = dash["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let mut used = metric_names(&std::fs::read_to_string(&rules).unwrap());
    for alert in [
        "BoaExchangeDown",
        "BoaFixingMissing",
        "BoaCompaniesNeedReconnect",
        "BoaSyncFailures",
        "BoaRepeatedDrift",
        "BoaTokenRefreshFailures",
        "BoaBadRecords",
    ] {
        assert!(
            std::fs::read_to_string(&rules)
                .unwrap()
                .contains(&format!("alert: {alert}")),
            "{alert}"
        );
    }
    used.extend(exprs.iter().flat_map(|e| metric_names(e)));

    // What the real daemon exports on /metrics (loopback needs no key), once it has a
    // fixing and has called QuickBooks (families without a member are not printed).
    let text = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let w = World::start("").await;
            assert_eq!(w.fetch()["ok"], true);
            let a = w.connect(CompanySpec::new("8001", "Metrics Sh.p.k.")).await;
            assert_eq!(a.status, 200, "{}", a.text);
            let synced = w.control(
                "sync",
                serde_json::json!({"realm": "8001", "date": "2026-05-22"}),
            );
            assert_eq!(synced["ok"], true, "{synced}");
            w.get("/metrics").await.text
        });
    let mut exported = BTreeSet::new();
    for l in text.lines() {
        if let Some(family) = l.strip_prefix("# TYPE ") {
            let mut it = family.split_whitespace();
            let (name, kind) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
            exported.insert(name.to_string());
            if kind == "counter" {
                exported.insert(format!("{name}_total"));
            }
        } else if !l.starts_with('#') {
            let name = l.split(['{', ' ']).next().unwrap_or("");
            exported.insert(name.to_string());
        }
    }
    let unknown: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "not exported by the daemon: {unknown:?}\n/metrics:\n{text}"
    );
    assert!(used.len() >= 12, "{used:?}");

    let Some(promtool) = tool("promtool", "prometheus") else {
        return;
    };
    let check = Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(&rules)
        .output()
        .expect("promtool");
    assert!(check.status.success(), "promtool check rules: {check:?}");
    // The rules' own unit tests: each alert fires on the series it is meant for, not before.
    let test = Command::new(&promtool)
        .current_dir(repo("packaging/monitoring"))
        .args(["test", "rules", "rules.test.yml"])
        .output()
        .expect("promtool");
    assert!(test.status.success(), "promtool test rules: {test:?}");
}

#[test]
fn status_reads_like_systemctl_status_and_json_is_unchanged() {
    let d = TestDaemon::start("[schedule]\nenabled = true\n");
    let (code, out, err) = d.cli(&["status"]);
    assert_eq!(code, 0, "{err}");
    let first = out.lines().next().unwrap_or("");
    assert!(
        first.starts_with(&format!(
            "× boa-exchange {} — degraded: no BoA fixing is stored",
            env!("CARGO_PKG_VERSION")
        )),
        "{out}"
    );
    for section in [
        "\nSchedule\n",
        "\nCompanies\n",
        "\nLast fixing\n",
        "\nStore\n",
    ] {
        assert!(out.contains(section), "{section:?}: {out}");
    }
    // The schedule is on: a next run in Tirana time, how far away.
    let next = out
        .lines()
        .find(|l| l.trim_start().starts_with("Next run:"))
        .unwrap_or("");
    assert!(next.contains("Europe/Tirane (in "), "{out}");
    assert!(
        out.contains("0, 0 active, 0 need reconnect, 0 stale"),
        "{out}"
    );
    assert!(out.contains("schema 2"), "{out}");
    assert!(!out.contains("Clock seen"), "{out}");
    assert!(out.lines().count() < 25, "{out}");

    let (code, verbose, _) = d.cli(&["status", "--verbose"]);
    assert_eq!(code, 0);
    assert!(verbose.contains("Clock seen:"), "{verbose}");
    assert!(verbose.contains("0 now, 0 seen since start"), "{verbose}");

    let (code, json, _) = d.cli(&["--json", "status"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(json.trim()).expect("JSON");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["schedule"]["next_run"].is_string(), "{v}");
    assert_eq!(v["companies"]["stale"], 0, "{v}");
}
