//! `backup FILE|-` and `restore FILE [--dry-run]` (SPEC §12).
//!
//! `backup` asks the daemon for the stream and writes it itself: to a 0600 file under a
//! temporary name in the target's folder, checked line by line as it arrives (the same
//! checks a restore makes), renamed to FILE only once the trailer matched; so FILE is either
//! a complete backup or not there. `restore` runs without the daemon (`ops::backup`).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{json, Value};

use super::{connect, Cli, EXIT_FAILED, EXIT_USAGE};
use crate::config::Config;
use crate::control::Response;
use crate::ops::backup::{self as ops_backup, Contents, Verifier};

/// Where the stream goes.
enum Out {
    Stdout(std::io::Stdout),
    File {
        tmp: PathBuf,
        dest: PathBuf,
        file: std::io::BufWriter<std::fs::File>,
    },
}

impl Out {
    /// Opens the target before the daemon is asked: a FILE that is a directory or in a folder
    /// we cannot write to fails here, with nothing written.
    fn open(target: &str) -> Result<Out, String> {
        if target == "-" {
            return Ok(Out::Stdout(std::io::stdout()));
        }
        let dest = PathBuf::from(target);
        if dest.is_dir() {
            return Err(format!(
                "{target}: is a directory; give the backup file's name"
            ));
        }
        let name = dest
            .file_name()
            .ok_or_else(|| format!("{target}: not a file name"))?
            .to_string_lossy()
            .into_owned();
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = dir.join(format!(".{name}.partial-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| format!("cannot write {target}: {e}"))?;
        Ok(Out::File {
            tmp,
            dest,
            file: std::io::BufWriter::with_capacity(1 << 20, file),
        })
    }

    fn write(&mut self, line: &[u8]) -> std::io::Result<()> {
        match self {
            Out::Stdout(s) => s.write_all(line),
            Out::File { file, .. } => file.write_all(line),
        }
    }

    /// Makes the file durable and gives it its name.
    fn commit(self) -> std::io::Result<()> {
        match self {
            Out::Stdout(mut s) => s.flush(),
            Out::File { tmp, dest, file } => {
                let f = file.into_inner().map_err(|e| e.into_error())?;
                f.sync_all()?;
                std::fs::rename(&tmp, &dest)?;
                if let Some(dir) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::File::open(dir)?.sync_all()?;
                }
                Ok(())
            }
        }
    }

    /// Removes the unfinished file.
    fn discard(self) {
        if let Out::File { tmp, file, .. } = self {
            drop(file);
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// `backup FILE|-`.
pub async fn backup(cli: &Cli, target: &str) -> ExitCode {
    let mut out = match Out::open(target) {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("error: {msg}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let result = receive(cli, &mut out).await;
    match result {
        Ok(contents) => match out.commit() {
            Ok(()) => report(cli, target, &contents),
            Err(e) => {
                eprintln!("error: cannot write {target}: {e}");
                ExitCode::from(EXIT_FAILED)
            }
        },
        Err(code) => {
            out.discard();
            code
        }
    }
}

/// Asks the daemon and copies the checked stream to `out`.
async fn receive(cli: &Cli, out: &mut Out) -> Result<Contents, ExitCode> {
    let mut client = connect(cli).await?;
    let failed = |msg: String| {
        eprintln!("error: {msg}");
        ExitCode::from(EXIT_FAILED)
    };
    client
        .send("backup", json!({}))
        .await
        .map_err(|e| failed(e.to_string()))?;
    let (_, first) = client
        .read_line()
        .await
        .map_err(|e| failed(e.to_string()))?;
    if !first.ok {
        return Err(super::print_answer(cli, "backup", &first));
    }
    let mut verifier = Verifier::new(|_| Ok(()));
    let mut buf = Vec::new();
    while !verifier.is_done() {
        client
            .raw_line(&mut buf, ops_backup::MAX_LINE)
            .await
            .map_err(|e| failed(e.to_string()))?;
        if buf.is_empty() {
            return Err(failed("the daemon stopped sending before the backup was complete (see its journal); nothing was written".into()));
        }
        if buf.starts_with(b"{\"ok\":false") {
            let answer: Result<Response, _> = serde_json::from_slice(&buf);
            return Err(match answer {
                Ok(a) => super::print_answer(cli, "backup", &a),
                Err(_) => failed("the daemon stopped the backup".into()),
            });
        }
        verifier.line(&buf).map_err(|e| {
            failed(format!(
                "the backup received is not sound ({e}); nothing was written"
            ))
        })?;
        out.write(&buf)
            .map_err(|e| failed(format!("cannot write the backup: {e}")))?;
    }
    drop(client);
    verifier
        .finish()
        .map_err(|e| failed(format!("the backup received is not sound ({e})")))
}

fn counts_text(counts: &std::collections::BTreeMap<impl AsRef<str>, u64>) -> String {
    counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{} {n}", k.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn report(cli: &Cli, target: &str, c: &Contents) -> ExitCode {
    let summary = json!({
        "counts": c.counts,
        "created_at": c.header.created_at,
        "file": target,
        "records": c.records,
        "sha256": c.sha256,
    });
    let text = format!(
        "backup of {} written to {target}: {} records ({}), sha256 {}",
        c.header.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
        c.records,
        counts_text(&c.counts),
        c.sha256
    );
    match (target == "-", cli.json) {
        (true, _) => eprintln!("{text}"),
        (false, true) => println!("{summary}"),
        (false, false) => println!("{text}"),
    }
    ExitCode::SUCCESS
}

/// `restore FILE [--dry-run]` (no daemon: the store is opened here).
pub fn restore(cli: &Cli, file: &Path, dry_run: bool) -> ExitCode {
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match ops_backup::restore(&config, file, dry_run) {
        Ok(a) => {
            if cli.json {
                println!("{}", serde_json::to_value(&a).unwrap_or(Value::Null));
            } else {
                let verb = if a.dry_run {
                    "would restore (dry run, nothing written)"
                } else {
                    "restored"
                };
                println!(
                    "{verb} {} records from {} (backup of {}, boa-exchange {}) into {}",
                    a.records,
                    a.file,
                    a.backup_created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    a.daemon_version,
                    a.target
                );
                for (kind, n) in &a.counts {
                    println!("  {kind:<12} {n}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_or_an_unwritable_folder_fails_before_anything_is_asked() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        assert!(Out::open(&d).err().unwrap().contains("is a directory"));
        let missing = dir.path().join("no/such/folder/b.jsonl");
        assert!(Out::open(&missing.display().to_string())
            .err()
            .unwrap()
            .contains("cannot write"));
        let ok = dir.path().join("b.jsonl");
        let mut out = Out::open(&ok.display().to_string()).unwrap();
        out.write(b"x\n").unwrap();
        out.discard();
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "nothing left"
        );
    }

    #[test]
    fn counts_leave_out_the_kinds_not_present() {
        let mut m = std::collections::BTreeMap::new();
        m.insert("company", 2u64);
        m.insert("invite", 0);
        m.insert("tokens", 2);
        assert_eq!(counts_text(&m), "company 2, tokens 2");
    }
}
