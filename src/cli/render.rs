//! Readable output of admin answers: tables and sentences. `--json` bypasses this.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::ops::backfill::BackfillAnswer;
use crate::ops::companies::{ListAnswer, LogsAnswer, SettingsAnswer, SyncStatusAnswer};
use crate::ops::rates::{ArchiveIndexAnswer, FetchAnswer, ImportAnswer, RatesAnswer};
use crate::ops::sync::{SyncAllAnswer, SyncAnswer};

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Left-aligned columns with a header row.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

/// `key: value` lines for a flat-ish object (nested objects are dotted).
pub fn kv(v: &Value) -> String {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, x, out);
                }
            }
            Value::Array(a) if a.iter().all(|x| !x.is_object()) => {
                out.push((
                    prefix.to_string(),
                    a.iter().map(s).collect::<Vec<_>>().join(", "),
                ));
            }
            other => out.push((prefix.to_string(), s(other))),
        }
    }
    let mut pairs = Vec::new();
    walk("", v, &mut pairs);
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, x)| format!("{k:<w$}  {x}\n"))
        .collect()
}

/// `key  value` lines, keys padded to the longest (the layout of [`kv`]).
fn pairs(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, x)| format!("{k:<w$}  {x}\n"))
        .collect()
}

/// An optional value as a cell: `-` for none.
fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".into(), T::to_string)
}

/// A part of an answer as compact JSON text (how [`kv`] shows an object in a cell).
fn json_text<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// A list of objects as [`kv`] shows it: its JSON text, nothing when empty.
fn list_text<T: Serialize>(v: &[T]) -> String {
    if v.is_empty() {
        String::new()
    } else {
        json_text(v)
    }
}

/// Renders a successful answer of `cmd`: each answer type by its own function, read from
/// the JSON the daemon sent (an answer that does not read as its type, e.g. from a daemon
/// of another version, is shown as `key: value` lines).
pub fn render(cmd: &str, data: &Value) -> String {
    match cmd {
        "status" => super::status::render(data, false),
        "companies" => typed(data, render_companies),
        "company" => typed(data, render_company),
        "sync" => typed(data, render_sync),
        "sync_all" => typed(data, render_sync_all),
        "set" => typed(data, render_settings),
        "backfill" => typed(data, render_backfill),
        "logs" => typed(data, render_logs),
        "rates" => typed(data, render_rates),
        "fetch" => typed(data, render_fetch),
        "archive_index" => typed(data, render_archive_index),
        "import_tables" | "import_year" => typed(data, render_import),
        _ => render_connections(cmd, data),
    }
}

fn typed<T: DeserializeOwned>(data: &Value, render: fn(&T) -> String) -> String {
    match T::deserialize(data) {
        Ok(answer) => render(&answer),
        Err(_) => generic(data),
    }
}

/// An answer of no known type: its message alone when that is all it says, else
/// `key: value` lines.
fn generic(data: &Value) -> String {
    match data.get("message") {
        Some(Value::String(m)) if data.as_object().is_some_and(|o| o.len() <= 2) => {
            format!("{m}\n")
        }
        _ => kv(data),
    }
}

fn render_companies(a: &ListAnswer) -> String {
    let rows: Vec<Vec<String>> = (a.companies.iter())
        .map(|c| {
            vec![
                c.company_id.clone(),
                c.company_name.clone(),
                c.home_currency.clone(),
                c.is_active.to_string(),
                c.sync_enabled.to_string(),
                c.connection.clone(),
                opt(&c.last_sync_at),
            ]
        })
        .collect();
    let headers = [
        "COMPANY",
        "NAME",
        "HOME",
        "ACTIVE",
        "SYNC",
        "CONNECTION",
        "LAST SYNC",
    ];
    table(&headers, &rows)
}

fn render_company(a: &SyncStatusAnswer) -> String {
    let (rates, scraping, syncing) = (&a.exchange_rates, &a.scraping, &a.syncing);
    pairs(&[
        ("company_id", a.company_id.clone()),
        ("company_name", a.company_name.clone()),
        ("connection", a.connection.clone()),
        ("created_at", a.created_at.clone()),
        ("exchange_rates.pending", rates.pending.to_string()),
        ("exchange_rates.synced", rates.synced.to_string()),
        ("exchange_rates.total", rates.total.to_string()),
        ("home_currency", a.home_currency.clone()),
        ("is_active", a.is_active.to_string()),
        ("last_sync_at", opt(&a.last_sync_at)),
        ("scraping.failed", scraping.failed.to_string()),
        ("scraping.successful", scraping.successful.to_string()),
        (
            "scraping.total_attempts",
            scraping.total_attempts.to_string(),
        ),
        ("sync_enabled", a.sync_enabled.to_string()),
        ("syncing.failed", syncing.failed.to_string()),
        ("syncing.successful", syncing.successful.to_string()),
        ("syncing.total_attempts", syncing.total_attempts.to_string()),
    ])
}

fn render_sync(a: &SyncAnswer) -> String {
    pairs(&[
        ("company_id", a.company_id.clone()),
        ("company_name", a.company_name.clone()),
        ("date", a.date.clone()),
        ("message", a.message.clone()),
        ("rates_synced", a.rates_synced.to_string()),
        ("rates_unchanged", a.rates_unchanged.to_string()),
        ("rates_written", a.rates_written.to_string()),
        ("success", a.success.to_string()),
    ])
}

fn render_sync_all(a: &SyncAllAnswer) -> String {
    let rows: Vec<Vec<String>> = (a.results.iter())
        .map(|r| {
            vec![
                r.company_id.clone(),
                opt(&r.company_name),
                r.success.to_string(),
                r.rates_synced.to_string(),
                r.error.as_ref().map_or_else(|| "-".into(), json_text),
            ]
        })
        .collect();
    let rows = table(&["COMPANY", "NAME", "OK", "RATES", "ERROR"], &rows);
    format!("{}\n{rows}", a.message)
}

fn render_settings(a: &SettingsAnswer) -> String {
    let c = &a.company;
    pairs(&[
        ("company.company_id", c.company_id.clone()),
        ("company.company_name", c.company_name.clone()),
        ("company.connection", c.connection.clone()),
        ("company.created_at", c.created_at.clone()),
        ("company.drift", c.drift.clone()),
        (
            "company.fill_non_business_days",
            c.fill_non_business_days.to_string(),
        ),
        ("company.home_currency", c.home_currency.clone()),
        ("company.is_active", c.is_active.to_string()),
        ("company.is_sandbox", c.is_sandbox.to_string()),
        ("company.last_sync_at", opt(&c.last_sync_at)),
        ("company.sync_enabled", c.sync_enabled.to_string()),
        ("company_id", a.company_id.clone()),
        ("message", a.message.clone()),
        ("success", a.success.to_string()),
        ("sync_reenabled", a.sync_reenabled.to_string()),
    ])
}

fn render_backfill(a: &BackfillAnswer) -> String {
    let rows: Vec<Vec<String>> = (a.plan.iter())
        .map(|p| {
            vec![
                p.date.clone(),
                p.currency.clone(),
                format!("{} → {}", opt(&p.quickbooks), p.ours),
                p.action.clone(),
            ]
        })
        .collect();
    let mut out = table(&["DATE", "CURRENCY", "QUICKBOOKS → OURS", "ACTION"], &rows);
    for sk in &a.skipped {
        out.push_str(&format!("skipped {}: {}\n", sk.date, sk.reason));
    }
    for f in a.failed.iter().flatten() {
        out.push_str(&format!("failed {} {}: {}\n", f.date, f.currency, f.error));
    }
    let writes = a.plan.iter().filter(|p| p.action == "write").count();
    let written = if a.dry_run {
        format!("dry run, {writes} would be written")
    } else {
        format!("{} written", a.rates_written)
    };
    let failure = a
        .error
        .as_ref()
        .map_or_else(String::new, |e| format!("; FAILED: {}", e.message));
    out.push_str(&format!(
        "{} {} to {} ({} dates): {written}, {} unchanged, {} dates skipped{failure}\n",
        a.company_id,
        a.from,
        a.to,
        a.dates,
        a.rates_unchanged,
        a.skipped.len(),
    ));
    out
}

fn render_logs(a: &LogsAnswer) -> String {
    let rows: Vec<Vec<String>> = (a.logs.iter())
        .map(|r| {
            vec![
                r.at.clone(),
                r.kind.clone(),
                r.success.to_string(),
                opt(&r.date),
                r.message.clone(),
            ]
        })
        .collect();
    table(&["AT", "KIND", "OK", "DATE", "MESSAGE"], &rows)
}

fn render_rates(a: &RatesAnswer) -> String {
    let mut out = format!("source: {}\n", a.source_url);
    for t in &a.tables {
        out.push_str(&format!(
            "\n{} table, {} (published {})\n",
            t.table,
            t.date,
            opt(&t.published_at)
        ));
        let rows: Vec<Vec<String>> = (t.rates.iter())
            .map(|r| {
                vec![
                    r.code.clone(),
                    r.iso_code.clone(),
                    r.units.to_string(),
                    r.published.clone(),
                    r.per_unit.clone(),
                ]
            })
            .collect();
        out.push_str(&table(
            &["CODE", "ISO", "UNITS", "PUBLISHED", "PER UNIT"],
            &rows,
        ));
    }
    out
}

fn render_fetch(a: &FetchAnswer) -> String {
    pairs(&[
        ("page_sha256", a.page_sha256.clone()),
        ("source_url", a.source_url.clone()),
        ("success", a.success.to_string()),
        ("tables", list_text(&a.tables)),
    ])
}

fn render_archive_index(a: &ArchiveIndexAnswer) -> String {
    let rows: Vec<Vec<String>> = (a.workbooks.iter())
        .map(|w| vec![opt(&w.year), w.name.clone(), w.url.clone()])
        .collect();
    table(&["YEAR", "WORKBOOK", "URL"], &rows)
}

fn render_import(a: &ImportAnswer) -> String {
    let mut out = format!(
        "{}\ndates: {} to {}\n",
        a.message,
        opt(&a.first_date),
        opt(&a.last_date)
    );
    if !a.holidays.is_empty() {
        out.push_str(&format!(
            "weekdays without a fixing (holidays): {}\n",
            a.holidays.join(", ")
        ));
    }
    out
}

/// The connection answers (`connect-url`, `import-connections`, `adopt`, `disconnect`),
/// still JSON values, and any other command.
fn render_connections(cmd: &str, data: &Value) -> String {
    match cmd {
        "connect_url" => format!("{}\n", s(&data["url"])),
        "import_connections" => render_import_connections(data),
        _ => generic(data),
    }
}

fn render_import_connections(data: &Value) -> String {
    let dry = data["dry_run"] == true;
    let mut out = format!(
        "{}{} imported, {} skipped, {} failed\n",
        if dry {
            "dry run (nothing contacted or stored): would be "
        } else {
            ""
        },
        s(&data["imported"]),
        s(&data["skipped"]),
        s(&data["failed"]),
    );
    // Imported lines are the expected case; list the others (and any warning).
    let rows: Vec<Vec<String>> = data["results"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|r| r["action"] != "imported" || r.get("warning").is_some())
                .map(|r| {
                    let why = r["error"]
                        .as_str()
                        .or_else(|| r["reason"].as_str())
                        .or_else(|| r["warning"].as_str())
                        .unwrap_or("");
                    vec![
                        s(&r["line"]),
                        s(&r["realm_id"]),
                        s(&r["action"]),
                        why.to_string(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    if !rows.is_empty() {
        out.push_str(&table(&["LINE", "REALM", "ACTION", "WHY"], &rows));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::ops::backfill::{FailedEntry, PlanEntry, SkippedEntry};
    use crate::ops::companies::{AttemptCounts, CompanyEntry, LogEntry, RateCounts};
    use crate::ops::rates::{FetchedTable, RateEntry, RatesTable, WorkbookEntry};
    use crate::ops::sync::SyncAllResult;
    use crate::ops::ErrorEntry;

    /// `render` before the typed answers, verbatim: the text the typed renderers must keep.
    fn old_render(cmd: &str, data: &Value) -> String {
        match cmd {
            "companies" => {
                let rows: Vec<Vec<String>> = data["companies"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|c| {
                                vec![
                                    s(&c["company_id"]),
                                    s(&c["company_name"]),
                                    s(&c["home_currency"]),
                                    s(&c["is_active"]),
                                    s(&c["sync_enabled"]),
                                    s(&c["connection"]),
                                    s(&c["last_sync_at"]),
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                table(
                    &[
                        "COMPANY",
                        "NAME",
                        "HOME",
                        "ACTIVE",
                        "SYNC",
                        "CONNECTION",
                        "LAST SYNC",
                    ],
                    &rows,
                )
            }
            "rates" => {
                let mut out = format!("source: {}\n", s(&data["source_url"]));
                for t in data["tables"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "\n{} table, {} (published {})\n",
                        s(&t["table"]),
                        s(&t["date"]),
                        s(&t["published_at"])
                    ));
                    let rows: Vec<Vec<String>> = t["rates"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|r| {
                            vec![
                                s(&r["code"]),
                                s(&r["iso_code"]),
                                s(&r["units"]),
                                s(&r["published"]),
                                s(&r["per_unit"]),
                            ]
                        })
                        .collect();
                    out.push_str(&table(
                        &["CODE", "ISO", "UNITS", "PUBLISHED", "PER UNIT"],
                        &rows,
                    ));
                }
                out
            }
            "logs" => {
                let rows: Vec<Vec<String>> = data["logs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        vec![
                            s(&r["at"]),
                            s(&r["kind"]),
                            s(&r["success"]),
                            s(&r["date"]),
                            s(&r["message"]),
                        ]
                    })
                    .collect();
                table(&["AT", "KIND", "OK", "DATE", "MESSAGE"], &rows)
            }
            "sync_all" => {
                let mut out = format!("{}\n", s(&data["message"]));
                let rows: Vec<Vec<String>> = data["results"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        vec![
                            s(&r["company_id"]),
                            s(&r["company_name"]),
                            s(&r["success"]),
                            s(&r["rates_synced"]),
                            s(&r["error"]),
                        ]
                    })
                    .collect();
                out.push_str(&table(&["COMPANY", "NAME", "OK", "RATES", "ERROR"], &rows));
                out
            }
            "backfill" => {
                let rows: Vec<Vec<String>> = data["plan"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        let theirs = match &p["quickbooks"] {
                            Value::Null => "-".to_string(),
                            v => s(v),
                        };
                        vec![
                            s(&p["date"]),
                            s(&p["currency"]),
                            format!("{theirs} → {}", s(&p["ours"])),
                            s(&p["action"]),
                        ]
                    })
                    .collect();
                let mut out = table(&["DATE", "CURRENCY", "QUICKBOOKS → OURS", "ACTION"], &rows);
                for sk in data["skipped"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "skipped {}: {}\n",
                        s(&sk["date"]),
                        s(&sk["reason"])
                    ));
                }
                for f in data["failed"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "failed {} {}: {}\n",
                        s(&f["date"]),
                        s(&f["currency"]),
                        s(&f["error"])
                    ));
                }
                let writes = rows.iter().filter(|r| r[3] == "write").count();
                out.push_str(&format!(
                    "{} {} to {} ({} dates): {}, {} unchanged, {} dates skipped{}\n",
                    s(&data["company_id"]),
                    s(&data["from"]),
                    s(&data["to"]),
                    s(&data["dates"]),
                    if data["dry_run"] == Value::Bool(true) {
                        format!("dry run, {writes} would be written")
                    } else {
                        format!("{} written", s(&data["rates_written"]))
                    },
                    s(&data["rates_unchanged"]),
                    data["skipped"].as_array().map_or(0, Vec::len),
                    match data["error"]["message"].as_str() {
                        Some(m) => format!("; FAILED: {m}"),
                        None => String::new(),
                    }
                ));
                out
            }
            "archive_index" => {
                let rows: Vec<Vec<String>> = data["workbooks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|w| vec![s(&w["year"]), s(&w["name"]), s(&w["url"])])
                    .collect();
                table(&["YEAR", "WORKBOOK", "URL"], &rows)
            }
            "import_tables" | "import_year" => {
                let mut out = format!(
                    "{}\ndates: {} to {}\n",
                    s(&data["message"]),
                    s(&data["first_date"]),
                    s(&data["last_date"])
                );
                let holidays: Vec<String> = data["holidays"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(s)
                    .collect();
                if !holidays.is_empty() {
                    out.push_str(&format!(
                        "weekdays without a fixing (holidays): {}\n",
                        holidays.join(", ")
                    ));
                }
                out
            }
            "connect_url" => format!("{}\n", s(&data["url"])),
            "import_connections" => {
                let dry = data["dry_run"] == true;
                let mut out = format!(
                    "{}{} imported, {} skipped, {} failed\n",
                    if dry {
                        "dry run (nothing contacted or stored): would be "
                    } else {
                        ""
                    },
                    s(&data["imported"]),
                    s(&data["skipped"]),
                    s(&data["failed"]),
                );
                // Imported lines are the expected case; list the others (and any warning).
                let rows: Vec<Vec<String>> = data["results"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter(|r| r["action"] != "imported" || r.get("warning").is_some())
                            .map(|r| {
                                let why = r["error"]
                                    .as_str()
                                    .or_else(|| r["reason"].as_str())
                                    .or_else(|| r["warning"].as_str())
                                    .unwrap_or("");
                                vec![
                                    s(&r["line"]),
                                    s(&r["realm_id"]),
                                    s(&r["action"]),
                                    why.to_string(),
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if !rows.is_empty() {
                    out.push_str(&table(&["LINE", "REALM", "ACTION", "WHY"], &rows));
                }
                out
            }
            _ => match data.get("message") {
                Some(Value::String(m))
                    if data.as_object().map(|o| o.len() <= 2).unwrap_or(false) =>
                {
                    format!("{m}\n")
                }
                _ => kv(data),
            },
        }
    }

    fn company(id: &str, synced: Option<&str>) -> CompanyEntry {
        CompanyEntry {
            company_id: id.into(),
            company_name: format!("Company \"{id}\" ë"),
            connection: "connected".into(),
            created_at: "2026-05-01T08:00:00Z".into(),
            drift: "correct".into(),
            fill_non_business_days: true,
            home_currency: "ALL".into(),
            is_active: true,
            is_sandbox: false,
            last_sync_at: synced.map(str::to_string),
            sync_enabled: id != "2",
        }
    }

    fn backfill(failed: bool) -> BackfillAnswer {
        let step = |date: &str, qb: Option<&str>, action: &str| PlanEntry {
            action: action.into(),
            currency: "EUR".into(),
            date: date.into(),
            ours: "100.25".into(),
            quickbooks: qb.map(str::to_string),
        };
        BackfillAnswer {
            company_id: "1".into(),
            dates: 3,
            dry_run: !failed,
            error: failed.then(|| ErrorEntry {
                code: "quickbooks_error".into(),
                message: "QuickBooks said no".into(),
            }),
            failed: failed.then(|| {
                vec![FailedEntry {
                    currency: "EUR".into(),
                    date: "2026-05-02".into(),
                    error: "500".into(),
                }]
            }),
            from: "2026-05-01".into(),
            plan: vec![
                step("2026-05-01", Some("100.25"), "keep"),
                step("2026-05-02", None, "write"),
            ],
            rates_unchanged: 1,
            rates_written: 0,
            skipped: vec![SkippedEntry {
                date: "2026-05-03".into(),
                reason: "no fixing".into(),
            }],
            success: !failed,
            to: "2026-05-03".into(),
        }
    }

    fn rates() -> RatesAnswer {
        let rate = |code: &str, units: u32| RateEntry {
            code: code.into(),
            iso_code: if code == "SDR" { "XDR" } else { code }.into(),
            per_unit: "1.0712".into(),
            published: "107.12".into(),
            units,
        };
        let table = |kind: &str, published_at: Option<&str>| RatesTable {
            date: "2026-05-22".into(),
            published_at: published_at.map(str::to_string),
            rates: vec![rate("JPY", 100), rate("SDR", 1)],
            revision: 1,
            table: kind.into(),
        };
        RatesAnswer {
            date: "2026-05-22".into(),
            page_sha256: "ab".repeat(32),
            source_url: "https://www.bankofalbania.org/x".into(),
            success: true,
            tables: vec![
                table("main", Some("2026-05-22T12:30:00+02:00")),
                table("minor", None),
            ],
        }
    }

    fn import(holidays: &[&str], first: Option<&str>) -> ImportAnswer {
        ImportAnswer {
            file: "Kursi_2024.xlsx".into(),
            first_date: first.map(str::to_string),
            holidays: holidays.iter().map(|d| d.to_string()).collect(),
            imported: 250,
            last_date: first.map(|_| "2024-12-31".into()),
            message: "imported 250 fixings from Kursi_2024.xlsx (0 already stored)".into(),
            skipped: 0,
            success: true,
        }
    }

    /// Every answer type with the command that shows it.
    fn answers() -> Vec<(&'static str, Value)> {
        let v = |a: &dyn erased::Answer| a.value();
        let log = |drift: bool| LogEntry {
            at: "2026-05-22T13:00:09Z".into(),
            currency: drift.then(|| "EUR".into()),
            date: (!drift).then(|| "2026-05-22".into()),
            intuit_tids: vec!["t1".into()],
            kind: if drift { "drift" } else { "syncing" }.into(),
            message: "Synced 3 rates".into(),
            ours: drift.then(|| "100.25".into()),
            rates_unchanged: 1,
            rates_written: 2,
            success: !drift,
            theirs: drift.then_some(None),
        };
        let result = |id: &str, name: Option<&str>, error: Option<&str>| SyncAllResult {
            company_id: id.into(),
            company_name: name.map(str::to_string),
            success: error.is_none(),
            rates_synced: 3,
            rates_written: error.is_none().then_some(2),
            rates_unchanged: error.is_none().then_some(1),
            error: error.map(|code| ErrorEntry {
                code: code.into(),
                message: format!("{code} \"quoted\""),
            }),
        };
        let companies = vec![
            company("1", Some("2026-05-22T13:00:09Z")),
            company("2", None),
        ];
        vec![
            (
                "companies",
                v(&ListAnswer {
                    count: companies.len(),
                    companies,
                    next_after: None,
                    success: true,
                }),
            ),
            (
                "company",
                v(&SyncStatusAnswer {
                    company_id: "1".into(),
                    company_name: "One".into(),
                    connection: "reconnect_needed".into(),
                    created_at: "2026-05-01T08:00:00Z".into(),
                    exchange_rates: RateCounts {
                        pending: 2,
                        synced: 38,
                        total: 40,
                    },
                    home_currency: "EUR".into(),
                    is_active: true,
                    last_sync_at: None,
                    scraping: AttemptCounts {
                        failed: 1,
                        successful: 4,
                        total_attempts: 5,
                    },
                    sync_enabled: false,
                    syncing: AttemptCounts {
                        failed: 0,
                        successful: 0,
                        total_attempts: 0,
                    },
                }),
            ),
            (
                "sync",
                v(&SyncAnswer {
                    company_id: "1".into(),
                    company_name: "One".into(),
                    date: "2026-05-22".into(),
                    message: "Synced 3 rates for One".into(),
                    rates_synced: 3,
                    rates_unchanged: 1,
                    rates_written: 2,
                    success: true,
                }),
            ),
            (
                "sync_all",
                v(&SyncAllAnswer {
                    success: true,
                    message: "Synced 1/3 companies successfully".into(),
                    date: "2026-05-22".into(),
                    total_companies: 3,
                    successful: 1,
                    failed: 2,
                    duration_secs: 1.234,
                    results: vec![
                        result("1", Some("One"), None),
                        result("2", Some("Two"), Some("reconnect_needed")),
                        result("77", None, Some("bad_record")),
                    ],
                }),
            ),
            (
                "set",
                v(&SettingsAnswer {
                    company: company("1", None),
                    company_id: "1".into(),
                    message: "Settings updated for One".into(),
                    success: true,
                    sync_reenabled: true,
                }),
            ),
            ("backfill", v(&backfill(false))),
            ("backfill", v(&backfill(true))),
            (
                "logs",
                v(&LogsAnswer {
                    company_id: "1".into(),
                    logs: vec![log(false), log(true)],
                    success: true,
                }),
            ),
            ("rates", v(&rates())),
            (
                "fetch",
                v(&FetchAnswer {
                    page_sha256: "ab".into(),
                    source_url: "https://x".into(),
                    success: true,
                    tables: vec![FetchedTable {
                        date: "2026-05-22".into(),
                        outcome: "new".into(),
                        table: "main".into(),
                    }],
                }),
            ),
            (
                "fetch",
                v(&FetchAnswer {
                    page_sha256: "ab".into(),
                    source_url: "https://x".into(),
                    success: true,
                    tables: vec![],
                }),
            ),
            (
                "archive_index",
                v(&ArchiveIndexAnswer {
                    success: true,
                    workbooks: vec![
                        WorkbookEntry {
                            name: "a.xlsx".into(),
                            url: "https://x/a.xlsx".into(),
                            year: Some(2024),
                        },
                        WorkbookEntry {
                            name: "b.xls".into(),
                            url: "https://x/b.xls".into(),
                            year: None,
                        },
                    ],
                }),
            ),
            (
                "import_tables",
                v(&import(&["2024-01-01", "2024-03-14"], Some("2024-01-02"))),
            ),
            ("import_year", v(&import(&[], None))),
        ]
    }

    /// Serializes any answer (the tests' list holds answers of every type).
    mod erased {
        pub trait Answer {
            fn value(&self) -> serde_json::Value;
        }
        impl<T: serde::Serialize> Answer for T {
            fn value(&self) -> serde_json::Value {
                serde_json::to_value(self).unwrap()
            }
        }
    }

    #[test]
    fn every_typed_renderer_prints_what_the_untyped_render_printed() {
        for (cmd, data) in answers() {
            let new = render(cmd, &data);
            assert_eq!(new, old_render(cmd, &data), "{cmd}");
            assert!(!new.is_empty(), "{cmd}");
        }
    }

    #[test]
    fn the_connection_answers_and_strangers_render_as_before() {
        let cases = [
            (
                "connect_url",
                json!({"success": true, "url": "https://appcenter/x"}),
            ),
            (
                "disconnect",
                json!({"success": true, "message": "Disconnected One"}),
            ),
            (
                "adopt",
                json!({"success": true, "message": "Adopted", "company_id": "1", "warning": "w"}),
            ),
            (
                "import_connections",
                json!({"dry_run": true, "imported": 1, "skipped": 1, "failed": 1, "results": [
                    {"line": 1, "realm_id": "1", "action": "imported"},
                    {"line": 2, "realm_id": "2", "action": "skipped", "reason": "held"},
                    {"line": 3, "realm_id": "3", "action": "failed", "error": "bad"},
                ]}),
            ),
            // An answer that does not read as its type falls back to key: value lines.
            ("company", json!({"company_id": "1", "odd": [1, 2]})),
        ];
        for (cmd, data) in cases {
            assert_eq!(render(cmd, &data), old_render(cmd, &data), "{cmd}");
        }
    }

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }

    #[test]
    fn kv_flattens() {
        let out = kv(&json!({"a": 1, "b": {"c": "x"}, "d": [1, 2]}));
        assert!(out.contains("b.c  x"));
        assert!(out.contains("d    1, 2"));
    }
}
