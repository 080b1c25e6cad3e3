//! The readable form of `status` (`--json` bypasses it), laid out like `systemctl status`:
//! a first line with the health and its reasons, then short sections an operator reads
//! first (schedule, companies, last fixing, store, the sync-all that runs now). The
//! daemon's internals (pid, sockets, clock, bad records, in-flight counts) only with
//! `--verbose`. Works on the answer's JSON only; it never contacts the daemon.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::Value;

/// Text of a JSON scalar (`-` for null or absent).
fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn instant(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// The daemon's "now" as its answer implies it (start + uptime, by its injected clock), so
/// "in 3 h" agrees with the daemon even when the CLI's clock differs; the CLI's clock else.
fn daemon_now(data: &Value) -> DateTime<Utc> {
    match (instant(&data["started_at"]), data["uptime_secs"].as_i64()) {
        (Some(start), Some(up)) => start + chrono::Duration::seconds(up),
        _ => Utc::now(),
    }
}

/// `3 d 4 h`, `2 h 05 min`, `7 min`, `12 s`.
pub fn span(d: chrono::Duration) -> String {
    let secs = d.num_seconds().max(0);
    let (days, hours, mins) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60);
    if days > 0 {
        format!("{days} d {hours} h")
    } else if hours > 0 {
        format!("{hours} h {mins:02} min")
    } else if mins > 0 {
        format!("{mins} min")
    } else {
        format!("{secs} s")
    }
}

/// `12.3 MiB`.
fn size(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// An instant as the local time of `tz`: `Fri 22 May 13:00`.
fn local(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%a %-d %b %H:%M").to_string()
}

/// One `  Label:  value` line, labels padded to one width per section.
fn line(out: &mut String, label: &str, value: &str) {
    out.push_str(&format!("  {:<13}{value}\n", format!("{label}:")));
}

/// Renders a `status` answer; `verbose` adds the internals.
pub fn render(data: &Value, verbose: bool) -> String {
    let now = daemon_now(data);
    let tz: Tz = data["schedule"]["timezone"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or(chrono_tz::Europe::Tirane);
    let mut out = String::new();
    let sections: [Section; 6] = [
        health_and_uptime,
        schedule,
        companies,
        last_fixing,
        store,
        sync_all_running,
    ];
    for section in sections {
        section(&mut out, data, now, tz);
    }
    if verbose {
        internals(&mut out, data, now, tz);
    } else {
        out.push_str("\n(internals: boa-exchange status --verbose; everything: --json)\n");
    }
    out
}

/// One part of the `status` text: appends its lines to `out`.
type Section = fn(&mut String, &Value, DateTime<Utc>, Tz);

/// The first line (health and why), uptime and the node's role.
fn health_and_uptime(out: &mut String, data: &Value, _now: DateTime<Utc>, tz: Tz) {
    // First line: health and why.
    let health = data["health"]["status"].as_str().unwrap_or("unknown");
    let reasons: Vec<String> = data["health"]["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    let mark = if health == "healthy" { "●" } else { "×" };
    out.push_str(&format!(
        "{mark} boa-exchange {} — {health}",
        s(&data["version"])
    ));
    if !reasons.is_empty() {
        out.push_str(&format!(": {}", reasons.join("; ")));
    }
    out.push('\n');
    let since = instant(&data["started_at"])
        .map(|t| format!(" (since {})", local(t, tz)))
        .unwrap_or_default();
    line(
        out,
        "Up",
        &format!(
            "{}{since}, {} environment",
            span(chrono::Duration::seconds(
                data["uptime_secs"].as_i64().unwrap_or(0)
            )),
            s(&data["environment"])
        ),
    );
    // PostgreSQL (SPEC §13): the node's role, when the answer names one.
    if let Some(role) = data
        .get("role")
        .or_else(|| data["store"].get("role"))
        .filter(|r| !r.is_null())
    {
        line(out, "Role", &s(role));
    }
}

/// `Schedule`: the next run and the last (and last failed) one.
fn schedule(out: &mut String, data: &Value, now: DateTime<Utc>, tz: Tz) {
    let sched = &data["schedule"];
    // Schedule.
    out.push_str("\nSchedule\n");
    if sched["enabled"] == Value::Bool(true) {
        let next = match instant(&sched["next_run"]) {
            Some(t) if t > now => format!("{} {} (in {})", local(t, tz), tz.name(), span(t - now)),
            Some(t) => format!("{} {} (due now)", local(t, tz), tz.name()),
            None => "-".into(),
        };
        line(out, "Next run", &next);
    } else {
        line(
            out,
            "Next run",
            &format!(
                "none: the schedule is off (daily at {} {} when on)",
                s(&sched["time"]),
                s(&sched["timezone"])
            ),
        );
    }
    let run = |r: &Value| {
        let when = instant(&r["finished_at"])
            .map(|t| format!(", finished {} ({} ago)", local(t, tz), span(now - t)))
            .unwrap_or_default();
        format!("{}{when}: {}", s(&r["date"]), s(&r["outcome"]))
    };
    match &sched["last_run"] {
        Value::Null => line(out, "Last run", "none yet"),
        r => line(out, "Last run", &run(r)),
    }
    if !sched["last_failed_run"].is_null() {
        line(out, "Failed run", &run(&sched["last_failed_run"]));
    }
}

/// `Companies`: counts and the last sync.
fn companies(out: &mut String, data: &Value, now: DateTime<Utc>, tz: Tz) {
    // Companies.
    let c = &data["companies"];
    out.push_str("\nCompanies\n");
    line(
        out,
        "Total",
        &format!(
            "{}, {} active, {} need reconnect, {} stale (not synced for over 24 business hours)",
            s(&c["total"]),
            s(&c["active"]),
            s(&c["with_expired_tokens"]),
            s(&c["stale"])
        ),
    );
    let last_sync = match instant(&data["last_sync"]) {
        Some(t) => format!("{} ({} ago)", local(t, tz), span(now - t)),
        None => "never".into(),
    };
    line(out, "Last sync", &last_sync);
}

/// `Last fixing`: each stored table's newest date.
fn last_fixing(out: &mut String, data: &Value, _now: DateTime<Utc>, tz: Tz) {
    // Last fixing.
    out.push_str("\nLast fixing\n");
    let fixings = data["last_fixing"].as_object().filter(|m| !m.is_empty());
    match fixings {
        None => line(
            out,
            "Main",
            "none stored (`boa-exchange fetch` scrapes BoA now)",
        ),
        Some(m) => {
            for (table, f) in m {
                let published = match &f["published_time"] {
                    Value::String(p) => format!(", published {p}"),
                    _ => String::new(),
                };
                let stored = instant(&f["stored_at"])
                    .map(|t| format!(", stored {}", local(t, tz)))
                    .unwrap_or_default();
                let mut label = table.clone();
                if let Some(first) = label.get(..1) {
                    label = first.to_uppercase() + label.get(1..).unwrap_or("");
                }
                line(
                    out,
                    &label,
                    &format!("{}{published}{stored}", s(&f["date"])),
                );
            }
        }
    }
}

/// `Store`: where it is, its size and schema.
fn store(out: &mut String, data: &Value, _now: DateTime<Utc>, _tz: Tz) {
    // Store.
    let st = &data["store"];
    out.push_str("\nStore\n");
    let place = st
        .get("database")
        .filter(|d| !d.is_null())
        .map(|d| ("Database", s(d)))
        .unwrap_or_else(|| ("Path", s(&st["path"])));
    line(out, place.0, &place.1);
    let bytes = st["size_bytes"]
        .as_u64()
        .map(size)
        .unwrap_or_else(|| "-".into());
    line(
        out,
        "Size",
        &format!(
            "{bytes}, schema {}, {} fixing tables",
            s(&st["schema_version"]),
            s(&st["fixing_tables"])
        ),
    );
}

/// `Sync-all running`, only while one runs.
fn sync_all_running(out: &mut String, data: &Value, _now: DateTime<Utc>, _tz: Tz) {
    // The sync-all running now.
    let sa = &data["sync_all"];
    if !sa["running_for"].is_null() {
        out.push_str("\nSync-all running\n");
        line(
            out,
            "Date",
            &format!(
                "{}: {}/{} done, {} failed",
                s(&sa["running_for"]),
                s(&sa["done"]),
                s(&sa["total"]),
                s(&sa["failed"])
            ),
        );
    }
}

/// `Internals` (`--verbose`).
fn internals(out: &mut String, data: &Value, _now: DateTime<Utc>, _tz: Tz) {
    let sched = &data["schedule"];
    let sa = &data["sync_all"];
    out.push_str("\nInternals\n");
    line(out, "Pid", &s(&data["pid"]));
    line(out, "Started at", &s(&data["started_at"]));
    line(out, "HTTP", &s(&data["http_listen"]));
    line(out, "Control", &s(&data["control_socket"]));
    line(
        out,
        "Schedule",
        &format!(
            "daily at {} {}, next run {}",
            s(&sched["time"]),
            s(&sched["timezone"]),
            s(&sched["next_run"])
        ),
    );
    line(out, "Clock seen", &s(&sched["clock_seen"]));
    line(
        out,
        "In flight",
        &format!(
            "{} companies (sync-all limit)",
            s(&sa["companies_in_flight"])
        ),
    );
    let bad = &data["bad_records"];
    let current = bad["current"].as_array().map_or(0, Vec::len);
    line(
        out,
        "Bad records",
        &format!("{current} now, {} seen since start", s(&bad["seen"])),
    );
    for b in bad["current"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "    {} {}: {}\n",
            s(&b["tree"]),
            s(&b["key"]),
            s(&b["error"])
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer() -> Value {
        json!({
            "version": "0.1.0", "pid": 42, "started_at": "2026-05-22T08:00:00Z",
            "uptime_secs": 3600, "environment": "production",
            "http_listen": "127.0.0.1:8000", "control_socket": "/run/boa-exchange/control.sock",
            "store": {"path": "/var/lib/boa-exchange/store", "schema_version": 2,
                      "size_bytes": 5_452_595u64, "fixing_tables": 40},
            "last_fixing": {"main": {"date": "2026-05-21", "stored_at": "2026-05-21T10:05:00Z",
                                     "published_time": "12:02"}},
            "companies": {"total": 12, "active": 10, "with_expired_tokens": 1, "stale": 0},
            "last_sync": "2026-05-21T11:00:30Z",
            "schedule": {"enabled": true, "time": "13:00", "timezone": "Europe/Tirane",
                         "next_run": "2026-05-22T11:00:00Z", "clock_seen": "2026-05-22T09:00:00Z",
                         "last_run": {"date": "2026-05-21", "started_at": "2026-05-21T11:00:00Z",
                                      "finished_at": "2026-05-21T11:00:40Z",
                                      "outcome": "Synced 10/10 companies"},
                         "last_failed_run": null},
            "bad_records": {"current": [], "seen": 0},
            "sync_all": {"running_for": null, "total": 0, "done": 0, "failed": 0,
                         "companies_in_flight": 0},
            "health": {"status": "degraded",
                       "reasons": ["1 companies need to reconnect (token refresh failed)"]},
        })
    }

    #[test]
    fn first_line_is_health_and_reasons_then_short_sections() {
        let out = render(&answer(), false);
        let first = out.lines().next().unwrap();
        assert_eq!(
            first,
            "× boa-exchange 0.1.0 — degraded: 1 companies need to reconnect (token refresh failed)"
        );
        // 09:00 UTC now; 11:00 UTC is 13:00 in Tirana (CEST), two hours away.
        assert!(
            out.contains("Next run:    Fri 22 May 13:00 Europe/Tirane (in 2 h 00 min)"),
            "{out}"
        );
        assert!(
            out.contains("2026-05-21, finished Thu 21 May 13:00 (21 h 59 min ago): Synced 10/10"),
            "{out}"
        );
        assert!(
            out.contains("12, 10 active, 1 need reconnect, 0 stale"),
            "{out}"
        );
        assert!(
            out.contains("Main:        2026-05-21, published 12:02"),
            "{out}"
        );
        assert!(out.contains("5.2 MiB, schema 2, 40 fixing tables"), "{out}");
        for internal in ["clock_seen", "Clock seen", "Pid", "Bad records", "Sync-all"] {
            assert!(
                !out.contains(internal),
                "{internal} without --verbose: {out}"
            );
        }
        assert!(!out.contains("Role"), "{out}");
    }

    #[test]
    fn verbose_adds_internals_and_a_role_is_shown_when_present() {
        let mut a = answer();
        a["role"] = json!("standby");
        a["sync_all"]["running_for"] = json!("2026-05-22");
        a["sync_all"]["total"] = json!(10);
        a["sync_all"]["done"] = json!(3);
        let out = render(&a, true);
        assert!(out.contains("Role:        standby"), "{out}");
        assert!(out.contains("Clock seen:  2026-05-22T09:00:00Z"), "{out}");
        assert!(out.contains("2026-05-22: 3/10 done, 0 failed"), "{out}");
        assert!(out.contains("Pid:         42"), "{out}");
    }

    #[test]
    fn schedule_off_and_nothing_stored_are_said_in_words() {
        let mut a = answer();
        a["schedule"]["enabled"] = json!(false);
        a["schedule"]["next_run"] = Value::Null;
        a["schedule"]["last_run"] = Value::Null;
        a["last_fixing"] = json!({});
        a["health"] = json!({"status": "healthy", "reasons": []});
        let out = render(&a, false);
        assert!(out.starts_with("● boa-exchange 0.1.0 — healthy\n"), "{out}");
        assert!(out.contains("none: the schedule is off"), "{out}");
        assert!(out.contains("Last run:    none yet"), "{out}");
        assert!(out.contains("none stored"), "{out}");
    }

    #[test]
    fn spans_read_naturally() {
        let d = chrono::Duration::seconds;
        assert_eq!(span(d(12)), "12 s");
        assert_eq!(span(d(7 * 60 + 3)), "7 min");
        assert_eq!(span(d(2 * 3600 + 5 * 60)), "2 h 05 min");
        assert_eq!(span(d(3 * 86_400 + 4 * 3600)), "3 d 4 h");
    }
}
