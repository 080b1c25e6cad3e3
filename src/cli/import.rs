//! `import-connections FILE`: the admin's file is read here, line by line with a bound on
//! each line, and sent to the daemon in batches; the answers are merged into one.

use std::path::Path;
use std::process::ExitCode;

use serde_json::{json, Value};

use super::*;

/// One line of the import file, read with a bound.
enum FileLine {
    Text(String),
    TooLong,
    NotUtf8,
}

/// Reads one `\n`-terminated line of at most `MAX_IMPORT_LINE` bytes; a longer line is skipped
/// up to its newline without being held in memory. `None` at end of file.
fn next_line(
    r: &mut impl std::io::BufRead,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<FileLine>> {
    let max = crate::connections::MAX_IMPORT_LINE;
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let available = r.fill_buf()?;
        if available.is_empty() {
            if !any {
                return Ok(None);
            }
            break;
        }
        any = true;
        let (chunk, used, done) = match available.iter().position(|b| *b == b'\n') {
            Some(pos) => (&available[..pos], pos + 1, true),
            None => (available, available.len(), false),
        };
        if !too_long {
            buf.extend_from_slice(chunk);
            if buf.len() > max {
                too_long = true;
                buf.clear();
            }
        }
        r.consume(used);
        if done {
            break;
        }
    }
    if too_long {
        return Ok(Some(FileLine::TooLong));
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(match String::from_utf8(std::mem::take(buf)) {
        Ok(s) => FileLine::Text(s),
        Err(_) => FileLine::NotUtf8,
    }))
}

/// Lines per `import_connections` request, and its text budget: well under the control
/// socket's 8 MiB line even if JSON escaping doubles the text.
const BATCH_LINES: usize = 1000;
const BATCH_BYTES: usize = 3 * 1024 * 1024;

/// `import-connections FILE [--fernet-key-file PATH] [--dry-run]`: the file and the key are
/// read here (the daemon runs as another user and need not see the admin's files) and sent
/// in batches; the results are merged with the right line numbers.
pub(super) async fn import_connections(
    cli: &Cli,
    file: &Path,
    key_file: Option<&Path>,
    dry_run: bool,
) -> ExitCode {
    use std::io::IsTerminal;
    let usage = |msg: String| {
        eprintln!("import-connections: {msg}");
        ExitCode::from(EXIT_USAGE)
    };
    let key = match key_file.map(read_fernet_key).transpose() {
        Ok(k) => k,
        Err(msg) => return usage(msg),
    };
    let f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) => return usage(format!("{}: {e}", file.display())),
    };
    let mut reader = std::io::BufReader::with_capacity(1 << 20, f);
    let mut client = match connect(cli).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let progress = std::io::stderr().is_terminal();
    let mut results: Vec<Value> = Vec::new();
    let mut batch: Vec<Value> = Vec::new();
    let mut batch_bytes = 0usize;
    let mut line_no = 0u64;
    let mut buf = Vec::new();
    let mut records = 0u64;
    loop {
        let line = match next_line(&mut reader, &mut buf) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("import-connections: reading {}: {e}", file.display());
                return ExitCode::from(EXIT_FAILED);
            }
        };
        let eof = line.is_none();
        if let Some(line) = line {
            line_no += 1;
            let fail = |msg: &str| json!({"line": line_no, "realm_id": null, "ok": false, "action": "failed", "error": msg});
            match line {
                FileLine::Text(t) if t.trim().is_empty() => {}
                FileLine::Text(t) => {
                    records += 1;
                    batch_bytes += t.len() + 32;
                    batch.push(json!({"line": line_no, "text": t}));
                }
                FileLine::TooLong => {
                    records += 1;
                    results.push(fail(&crate::connections::too_long()));
                }
                FileLine::NotUtf8 => {
                    records += 1;
                    results.push(fail("not UTF-8 text"));
                }
            }
        }
        if eof && records == 0 {
            return usage(format!(
                "{} has no connection records (it is empty)",
                file.display()
            ));
        }
        if batch.is_empty() || !(eof || batch.len() >= BATCH_LINES || batch_bytes >= BATCH_BYTES) {
            if eof {
                break;
            }
            continue;
        }
        let lines = std::mem::take(&mut batch);
        batch_bytes = 0;
        if let Err(code) = send_batch(
            cli,
            &mut client,
            lines,
            key.as_deref(),
            dry_run,
            &mut results,
        )
        .await
        {
            return code;
        }
        if progress {
            print_import_progress(line_no, &results, dry_run);
        }
        if eof {
            break;
        }
    }
    print_import_summary(cli, dry_run, results)
}

/// Sends one batch of lines; its results join `results`. The exit code when the daemon
/// refused the batch (its answer is printed) or could not be asked.
async fn send_batch(
    cli: &Cli,
    client: &mut Client,
    lines: Vec<Value>,
    key: Option<&str>,
    dry_run: bool,
    results: &mut Vec<Value>,
) -> Result<(), ExitCode> {
    let mut args = json!({"lines": lines, "dry_run": dry_run});
    if let Some(k) = key {
        args["fernet_key"] = json!(k);
    }
    let answer = match client.call("import_connections", args).await {
        Ok((_, a)) => a,
        Err(e) => {
            eprintln!("{e}");
            return Err(ExitCode::from(EXIT_FAILED));
        }
    };
    match (answer.ok, answer.data) {
        (true, Some(mut d)) => {
            if let Some(rs) = d["results"].as_array_mut() {
                results.append(rs);
            }
        }
        (_, data) => {
            let answer = crate::control::Response { data, ..answer };
            return Err(print_answer(cli, "import_connections", &answer));
        }
    }
    Ok(())
}

/// A `--fernet-key-file`'s key, checked; the usage message when it cannot be used.
fn read_fernet_key(p: &Path) -> Result<String, String> {
    let k = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    match crate::connections::fernet_key(&k) {
        Ok(_) => Ok(k.trim().to_string()),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

/// The running counts on stderr (on a terminal only) after each batch.
fn print_import_progress(line_no: u64, results: &[Value], dry_run: bool) {
    let count = |a: &str| results.iter().filter(|r| r["action"] == a).count();
    eprintln!(
        "import-connections: {line_no} lines read: {} imported, {} skipped, {} failed{}",
        count("imported"),
        count("skipped"),
        count("failed"),
        if dry_run { " (dry run)" } else { "" }
    );
}

/// The merged answer of every batch, as one `import_connections` answer would be; exit 1
/// when a line failed.
fn print_import_summary(cli: &Cli, dry_run: bool, mut results: Vec<Value>) -> ExitCode {
    results.sort_by_key(|r| r["line"].as_u64().unwrap_or(0));
    let count = |a: &str| results.iter().filter(|r| r["action"] == a).count();
    let failed = count("failed");
    let data = json!({
        "success": true,
        "dry_run": dry_run,
        "imported": count("imported"),
        "skipped": count("skipped"),
        "failed": failed,
        "results": results,
    });
    if cli.json {
        println!("{data}");
    } else {
        print!("{}", render::render("import_connections", &data));
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}
