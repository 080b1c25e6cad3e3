//! The command line (SPEC §2): `serve`, `check-config`, and the admin commands that talk to
//! the daemon over the control socket. Exit codes: 0 ok, 1 the operation failed, 2 usage or
//! config error, 3 daemon not reachable.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub mod backup;
pub mod completions;
mod import;
pub mod render;
pub mod status;

use crate::config::Config;
use crate::control::client::{self, Client};
use crate::ops::companies::ListAnswer;

/// Arguments.
#[derive(Debug, Parser)]
#[command(
    name = "boa-exchange",
    version,
    about = "Bank of Albania exchange rates for QuickBooks Online"
)]
pub struct Cli {
    /// Control socket (default: the one the config names).
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print the daemon's JSON answer unchanged.
    #[arg(long, global = true)]
    pub json: bool,
    /// Config file (default: /etc/boa-exchange/config.toml when it exists, else built-in defaults).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground.
    Serve,
    /// Validate a config file and exit (0 ok, 2 invalid).
    CheckConfig,
    /// The whole product against a built-in sandbox (no network, keys or config needed).
    Demo {
        /// Port of the daemon on 127.0.0.1.
        #[arg(long, default_value_t = 8000)]
        port: u16,
        /// Exit after the report (0 ok, 1 a step failed) instead of serving.
        #[arg(long)]
        once: bool,
    },
    /// Daemon: health, next run, companies, last fixing, store (like `systemctl status`).
    Status {
        /// Also the internals: pid, sockets, the scheduler's clock, bad records, in-flight counts.
        #[arg(long, short)]
        verbose: bool,
    },
    /// List companies (active only unless --all).
    Companies {
        /// Include disconnected companies.
        #[arg(long)]
        all: bool,
    },
    /// One company's sync status.
    Company {
        /// Realm id.
        realm: String,
    },
    /// Sync one company, or every active company with --all.
    Sync {
        /// Realm id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        realm: Option<String>,
        /// Every active company.
        #[arg(long)]
        all: bool,
        /// Rate date (default: today in Europe/Tirane).
        #[arg(long, value_name = "YYYY-MM-DD")]
        date: Option<String>,
    },
    /// Change a company's settings.
    Set {
        /// Realm id.
        realm: String,
        /// Include in automatic syncs.
        #[arg(long, value_name = "true|false")]
        sync_enabled: Option<bool>,
        /// Home currency (three letters).
        #[arg(long, value_name = "XXX")]
        home_currency: Option<String>,
        /// Display name.
        #[arg(long, value_name = "TEXT")]
        name: Option<String>,
        /// Also write weekend/holiday dates.
        #[arg(long, value_name = "true|false")]
        fill_non_business_days: Option<bool>,
        /// What a sync does about a rate changed in QuickBooks after we confirmed it.
        #[arg(long, value_name = "correct|report", value_parser = ["correct", "report"])]
        drift: Option<String>,
    },
    /// Write the rates in force for a date range (only what differs in QuickBooks).
    Backfill {
        /// Realm id.
        realm: String,
        /// First date.
        #[arg(long, value_name = "YYYY-MM-DD")]
        from: String,
        /// Last date (at most 366 dates, not after today).
        #[arg(long, value_name = "YYYY-MM-DD")]
        to: String,
        /// Read and show the plan; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Revoke at Intuit and soft-delete here.
    Disconnect {
        /// Realm id.
        realm: String,
    },
    /// The stored BoA fixing (the one in force now when no date).
    Rates {
        /// Date.
        #[arg(long, value_name = "YYYY-MM-DD")]
        date: Option<String>,
    },
    /// Scrape BoA now and store the fixing.
    Fetch,
    /// Print a fresh authorization link for a customer.
    ConnectUrl,
    /// Recent scrape/sync records of one company.
    Logs {
        /// Realm id.
        realm: String,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Import BoA history from a yearly workbook (.xlsx): a local FILE, or `--year YYYY`
    /// downloaded from BoA's archive; `--list` shows the workbooks BoA offers.
    ImportArchive {
        /// The workbook.
        #[arg(required_unless_present_any = ["year", "list"], conflicts_with_all = ["year", "list"])]
        file: Option<PathBuf>,
        /// Download this year's workbook from BoA's archive index and import it.
        #[arg(long, conflicts_with = "list")]
        year: Option<i32>,
        /// List the workbooks on BoA's archive index page.
        #[arg(long)]
        list: bool,
    },
    /// Take over an existing QuickBooks connection: its refresh token is read from standard
    /// input (never an argument).
    Adopt {
        /// Realm id (the QuickBooks company id).
        realm: String,
        /// Display name instead of the one QuickBooks gives.
        #[arg(long, value_name = "TEXT")]
        name: Option<String>,
        /// Home currency instead of the one QuickBooks gives.
        #[arg(long, value_name = "XXX")]
        home_currency: Option<String>,
    },
    /// Bring many connections over from a JSON Lines file (e.g. the predecessor's export).
    ImportConnections {
        /// The JSON Lines file, one company per line.
        file: PathBuf,
        /// File holding the predecessor's Fernet key (for `refresh_token_fernet`).
        #[arg(long, value_name = "PATH")]
        fernet_key_file: Option<PathBuf>,
        /// Parse and decrypt every line, contact nobody, store nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// A consistent copy of the whole store, taken while the daemon runs (0600, written under
    /// a temporary name and renamed when complete).
    Backup {
        /// The file to write, or `-` for stdout.
        file: String,
    },
    /// Load a backup into an empty store, with the daemon stopped (every line checked first).
    Restore {
        /// The backup file.
        file: PathBuf,
        /// Check everything and print the counts per kind; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the shell completion script (the .deb installs bash, zsh and fish ones).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: completions::Shell,
    },
    /// Print the man page, boa-exchange(8), in roff (the .deb installs it).
    #[command(hide = true)]
    Manpage,
}

/// Where the installed service's control socket is (`RuntimeDirectory=boa-exchange`).
pub const SERVICE_SOCKET: &str = "/run/boa-exchange/control.sock";

/// Exit code: the operation failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: usage or config error.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: daemon not reachable.
pub const EXIT_UNREACHABLE: u8 = 3;

/// `check-config`.
pub fn check_config(path: Option<&std::path::Path>) -> ExitCode {
    match Config::load(path) {
        Ok(c) => {
            let src = c
                .source
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "built-in defaults".into());
            println!("{src}: ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Builds the control request for an admin command (`None` for serve/check-config).
///
/// # Errors
/// A usage problem found before contacting the daemon (message for stderr).
pub fn request_for(cmd: &Command) -> Result<Option<(&'static str, Value)>, String> {
    Ok(Some(match cmd {
        Command::Serve
        | Command::CheckConfig
        | Command::Demo { .. }
        | Command::Completions { .. }
        | Command::Manpage => return Ok(None),
        Command::Status { .. } => ("status", json!({})),
        Command::Companies { all } => ("companies", json!({"all": all})),
        Command::Company { realm } => ("company", json!({"realm": realm})),
        Command::Sync { realm, all, date } => {
            if *all {
                ("sync_all", json!({"date": date}))
            } else {
                ("sync", json!({"realm": realm, "date": date}))
            }
        }
        Command::Set {
            realm,
            sync_enabled,
            home_currency,
            name,
            fill_non_business_days,
            drift,
        } => {
            let mut settings = serde_json::Map::new();
            if let Some(v) = sync_enabled {
                settings.insert("sync_enabled".into(), json!(v));
            }
            if let Some(v) = home_currency {
                settings.insert("home_currency".into(), json!(v));
            }
            if let Some(v) = name {
                settings.insert("company_name".into(), json!(v));
            }
            if let Some(v) = fill_non_business_days {
                settings.insert("fill_non_business_days".into(), json!(v));
            }
            if let Some(v) = drift {
                settings.insert("drift".into(), json!(v));
            }
            if settings.is_empty() {
                return Err("set: give at least one of --sync-enabled, --home-currency, --name, --fill-non-business-days, --drift".into());
            }
            ("set", json!({"realm": realm, "settings": settings}))
        }
        Command::Backfill {
            realm,
            from,
            to,
            dry_run,
        } => (
            "backfill",
            json!({"realm": realm, "from": from, "to": to, "dry_run": dry_run}),
        ),
        Command::Disconnect { realm } => ("disconnect", json!({"realm": realm})),
        Command::Rates { date } => ("rates", json!({"date": date})),
        Command::Fetch => ("fetch", json!({})),
        Command::ConnectUrl => ("connect_url", json!({})),
        Command::Logs { realm, limit } => ("logs", json!({"realm": realm, "limit": limit})),
        Command::ImportArchive { list: true, .. } => ("archive_index", json!({})),
        Command::ImportArchive { year: Some(y), .. } => ("import_year", json!({"year": y})),
        Command::ImportArchive {
            file: Some(file), ..
        } => ("import_tables", import_request(file)?),
        Command::ImportArchive { .. } => {
            return Err("import-archive: give FILE, --year YYYY or --list".into())
        }
        // They read stdin or a file and talk to the daemon themselves (`run_admin`).
        Command::Adopt { .. }
        | Command::ImportConnections { .. }
        | Command::Backup { .. }
        | Command::Restore { .. } => return Ok(None),
    }))
}

/// Reads a BoA yearly workbook into the `import_tables` request: the file is read here, on
/// the admin's side, so the daemon never opens paths an admin names.
///
/// # Errors
/// The file cannot be read or is not a BoA workbook (message for stderr, naming the file).
pub fn import_request(file: &Path) -> Result<Value, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let tables =
        crate::boa::read_workbook(&bytes).map_err(|e| format!("{}: {e}", file.display()))?;
    let tables = serde_json::to_value(&tables).map_err(|e| format!("{}: {e}", file.display()))?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.display().to_string());
    Ok(json!({
        "file": name,
        "sha256": hex::encode(Sha256::digest(&bytes)),
        "tables": tables,
    }))
}

/// The control socket to use: `--socket`, else the config's, else the packaged one.
fn socket_path(cli: &Cli) -> Result<PathBuf, ExitCode> {
    match &cli.socket {
        Some(s) => Ok(s.clone()),
        None => match Config::load(cli.config.as_deref()) {
            // The service's socket lives in $RUNTIME_DIRECTORY, which an admin's shell does not
            // have: fall back to the packaged location when the configured one is absent.
            Ok(c) if !c.control_socket.exists() && Path::new(SERVICE_SOCKET).exists() => {
                Ok(PathBuf::from(SERVICE_SOCKET))
            }
            Ok(c) => Ok(c.control_socket),
            Err(e) => {
                eprintln!("{e}");
                Err(ExitCode::from(EXIT_USAGE))
            }
        },
    }
}

/// Connects to the daemon (exit 2 for a bad config, 3 when it does not answer).
async fn connect(cli: &Cli) -> Result<Client, ExitCode> {
    let socket = socket_path(cli)?;
    Client::connect(&socket).await.map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(EXIT_UNREACHABLE)
    })
}

/// Runs an admin command against the daemon.
pub async fn run_admin(cli: &Cli) -> ExitCode {
    match &cli.command {
        Command::Adopt {
            realm,
            name,
            home_currency,
        } => return adopt(cli, realm, name.as_deref(), home_currency.as_deref()).await,
        Command::ImportConnections {
            file,
            fernet_key_file,
            dry_run,
        } => {
            return import::import_connections(cli, file, fernet_key_file.as_deref(), *dry_run)
                .await
        }
        Command::Backup { file } => return backup::backup(cli, file).await,
        _ => {}
    }
    let request = match &cli.command {
        // An unreadable or foreign workbook is a failed operation, not a usage error.
        Command::ImportArchive {
            file: Some(file),
            year: None,
            list: false,
        } => match import_request(file) {
            Ok(args) => Ok(Some(("import_tables", args))),
            Err(msg) => {
                eprintln!("{msg}");
                return ExitCode::from(EXIT_FAILED);
            }
        },
        other => request_for(other),
    };
    let (cmd, args) = match request {
        Ok(Some(r)) => r,
        Ok(None) => return ExitCode::from(EXIT_USAGE),
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let mut client = match connect(cli).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let called = if cmd == "companies" {
        list_pages(&mut client, args).await
    } else {
        client.call(cmd, args).await
    };
    let (raw, answer) = match called {
        Ok(a) => a,
        Err(e @ client::Error::Unreachable { .. }) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_UNREACHABLE);
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let _ = raw;
    print_answer(cli, cmd, &answer)
}

/// Page size the CLI asks `companies` for (the most the daemon gives at once).
const LIST_PAGE: u64 = 1000;

/// `companies [--all]`: fetches pages of [`LIST_PAGE`] until `next_after` is null and
/// answers them as one list (the same answer a single unpaged request gives), so the output
/// does not change while no request makes the daemon build a list of every company.
async fn list_pages(
    client: &mut client::Client,
    mut args: Value,
) -> Result<(String, crate::control::Response), client::Error> {
    let mut companies = Vec::new();
    args["limit"] = json!(LIST_PAGE);
    loop {
        let (raw, mut answer) = client.call("companies", args.clone()).await?;
        let page = (answer.data.as_ref().filter(|_| answer.ok))
            .and_then(|d| ListAnswer::deserialize(d).ok());
        let Some(mut page) = page else {
            return Ok((raw, answer));
        };
        companies.append(&mut page.companies);
        match page.next_after {
            Some(next) if !next.is_empty() => args["after"] = json!(next),
            _ => {
                let all = ListAnswer {
                    count: companies.len(),
                    companies,
                    next_after: None,
                    success: true,
                };
                answer.data = serde_json::to_value(&all).ok();
                return Ok((raw, answer));
            }
        }
    }
}

/// Prints an answer (`--json`: the operation's JSON; else readable) and picks the exit code.
pub fn print_answer(cli: &Cli, cmd: &str, answer: &crate::control::Response) -> ExitCode {
    if cli.json {
        // The operation's JSON, as the HTTP API would answer it: the data on success, the
        // SPEC §6 error body on failure.
        let out = match (&answer.data, &answer.error) {
            (Some(d), _) if answer.ok => d.clone(),
            (_, Some(e)) => {
                json!({"success": false, "error": {"code": e.code, "message": e.message}})
            }
            _ => json!({"success": answer.ok}),
        };
        println!("{out}");
    } else if answer.ok {
        let data = answer.data.as_ref().unwrap_or(&Value::Null);
        match &cli.command {
            Command::Status { verbose } => print!("{}", status::render(data, *verbose)),
            _ => print!("{}", render::render(cmd, data)),
        }
    } else if let Some(e) = &answer.error {
        eprintln!("error: {} ({})", e.message, e.code);
    }
    // A backfill that wrote part of its plan answers ok with `success: false`: it failed.
    if answer.ok && answer.data.as_ref().and_then(|d| d.get("success")) == Some(&Value::Bool(false))
    {
        return ExitCode::from(EXIT_FAILED);
    }
    if answer.ok {
        return ExitCode::SUCCESS;
    }
    // The daemon says what kind of refusal it was: a caller mistake (bad date, argument)
    // exits 2 like a usage error, everything else 1.
    let kind = answer
        .error
        .as_ref()
        .and_then(|e| crate::ops::Kind::parse(&e.kind));
    ExitCode::from(kind.map_or(EXIT_FAILED, crate::ops::Kind::exit_code))
}

/// Longest refresh token `adopt` accepts on stdin (Intuit's are under 100 characters).
const MAX_TOKEN: u64 = 16 * 1024;

/// Reads the refresh token from stdin: one token, surrounding whitespace trimmed.
fn read_token() -> Result<String, String> {
    use std::io::{IsTerminal, Read};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("adopt: paste the refresh token and press Enter (it is not shown elsewhere)");
    }
    let mut buf = String::new();
    let read = if stdin.is_terminal() {
        stdin.read_line(&mut buf).map(|_| ())
    } else {
        stdin
            .lock()
            .take(MAX_TOKEN + 1)
            .read_to_string(&mut buf)
            .map(|_| ())
    };
    let none = "adopt: no refresh token on standard input (pipe it in, e.g. `… | boa-exchange adopt REALM`)";
    if read.is_err() {
        return Err(none.into());
    }
    if buf.len() as u64 > MAX_TOKEN {
        return Err("adopt: standard input is too long for a refresh token".into());
    }
    let token = buf.trim();
    if token.is_empty() {
        return Err(none.into());
    }
    if token.chars().any(char::is_whitespace) {
        return Err(
            "adopt: standard input holds more than one word; give exactly one refresh token".into(),
        );
    }
    Ok(token.to_string())
}

/// `adopt REALM [--name TEXT] [--home-currency XXX]`, the token from stdin.
async fn adopt(cli: &Cli, realm: &str, name: Option<&str>, home: Option<&str>) -> ExitCode {
    // Checked here too, so a typo costs no token read.
    let checks = crate::connections::check_realm(realm).and_then(|()| {
        home.map(crate::connections::check_currency)
            .transpose()
            .map(|_| ())
    });
    if let Err(e) = checks {
        eprintln!("adopt: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    if name.is_some_and(|n| n.trim().is_empty()) {
        eprintln!("adopt: --name is empty");
        return ExitCode::from(EXIT_USAGE);
    }
    let token = match read_token() {
        Ok(t) => t,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let mut client = match connect(cli).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let args = json!({"realm": realm, "name": name, "home_currency": home, "refresh_token": token});
    let answer = match client.call("adopt", args).await {
        Ok((_, a)) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    if let Some(w) = answer.data.as_ref().and_then(|d| d["warning"].as_str()) {
        eprintln!("warning: {w}");
    }
    print_answer(cli, "adopt", &answer)
}

/// `completions SHELL`: the script on stdout.
pub fn print_completions(shell: completions::Shell) -> ExitCode {
    completions::completions(shell, &mut std::io::stdout().lock());
    ExitCode::SUCCESS
}

/// `manpage`: boa-exchange(8) in roff on stdout.
pub fn print_manpage() -> ExitCode {
    match completions::manpage(&mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("manpage: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}
