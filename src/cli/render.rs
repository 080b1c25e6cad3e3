//! Readable output of admin answers: tables and sentences. `--json` bypasses this.

use serde_json::Value;

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

/// Renders a successful answer of `cmd`.
pub fn render(cmd: &str, data: &Value) -> String {
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
            Some(Value::String(m)) if data.as_object().map(|o| o.len() <= 2).unwrap_or(false) => {
                format!("{m}\n")
            }
            _ => kv(data),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
