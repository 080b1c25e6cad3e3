//! The control socket server: binds (removing a stale socket), checks each peer with
//! SO_PEERCRED, and answers NDJSON requests. A bad line gets an error answer; the
//! connection and the daemon go on.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use super::{Request, Response, MAX_LINE};
use crate::ops::{self, ApiError, Ctx};
use serde_json::Value;

/// Binds the control socket at `path`: creates the folder, removes a stale socket (one no
/// daemon answers on), refuses when another daemon is listening, sets mode 0660.
///
/// # Errors
/// Another daemon owns the socket, or the path cannot be bound.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir)?;
        }
    }
    if path.exists() {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("{} is in use by a running daemon", path.display()),
                ))
            }
            Err(_) => std::fs::remove_file(path)?,
        }
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(l)
}

/// Accepts connections until `token` is cancelled; removes the socket file on the way out.
pub async fn serve(listener: UnixListener, state: Arc<Ctx>, token: CancellationToken) {
    let path = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf));
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let st = state.clone();
                    let t = token.clone();
                    state.tasks.spawn(async move { connection(stream, st, t).await });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control accept failed; backing off");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    if let Some(p) = path {
        let _ = std::fs::remove_file(p);
    }
}

/// Whether a peer may use the socket: root, our uid, or a member of our group.
fn peer_allowed(stream: &UnixStream) -> bool {
    let Ok(cred) = stream.peer_cred() else {
        return false;
    };
    // SAFETY: geteuid/getegid cannot fail and have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if cred.uid() == 0 || cred.uid() == uid || cred.gid() == gid {
        return true;
    }
    // Supplementary groups of the peer process.
    cred.pid()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Groups:")).map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .any(|g| g.parse::<u32>().ok() == Some(gid))
            })
        })
        .unwrap_or(false)
}

/// One request line, or why there is none.
enum Line {
    Text(String),
    TooLong,
    NotUtf8,
}

/// Reads one `\n`-terminated line of at most [`MAX_LINE`] bytes; an over-long line is
/// discarded up to its newline so the connection can go on. `None` at end of stream.
async fn read_line(
    r: &mut BufReader<OwnedReadHalf>,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Line>> {
    buf.clear();
    let mut too_long = false;
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            if buf.is_empty() && !too_long {
                return Ok(None);
            }
            break;
        }
        match available.iter().position(|b| *b == b'\n') {
            Some(pos) => {
                if !too_long {
                    buf.extend_from_slice(&available[..pos]);
                }
                r.consume(pos + 1);
                break;
            }
            None => {
                let n = available.len();
                if !too_long {
                    buf.extend_from_slice(available);
                }
                r.consume(n);
            }
        }
        if buf.len() > MAX_LINE {
            too_long = true;
            buf.clear();
        }
    }
    if too_long || buf.len() > MAX_LINE {
        return Ok(Some(Line::TooLong));
    }
    Ok(Some(match String::from_utf8(std::mem::take(buf)) {
        Ok(s) => Line::Text(s),
        Err(_) => Line::NotUtf8,
    }))
}

async fn connection(stream: UnixStream, state: Arc<Ctx>, token: CancellationToken) {
    let allowed = peer_allowed(&stream);
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    if !allowed {
        let _ = send(
            &mut w,
            &Response::err(
                "permission_denied",
                "only root, the service user or members of its group may use this socket",
                ops::Kind::Unauthorized,
            ),
        )
        .await;
        return;
    }
    let mut buf = Vec::new();
    loop {
        let line = tokio::select! {
            _ = token.cancelled() => break,
            l = read_line(&mut r, &mut buf) => l,
        };
        let answer = match line {
            Err(_) | Ok(None) => break,
            Ok(Some(Line::Text(line))) if line.trim().is_empty() => continue,
            Ok(Some(Line::Text(line))) => match serde_json::from_str::<Request>(&line) {
                Ok(req) if req.cmd == "sync_all" => {
                    // Large: its answer is written in pieces straight into the line (the
                    // one place `sync_all` is answered; `dispatch` never sees it).
                    match ops::sync::sync_all(&state, arg_opt(&req.args, "date")).await {
                        Ok(answer) => {
                            if send_pieces(&mut w, &answer).await.is_err() {
                                break;
                            }
                            continue;
                        }
                        Err(e) => failed(&e),
                    }
                }
                Ok(req) if req.cmd == "backup" => {
                    // A stream: an `ok` line, then the backup's own lines (SPEC §12).
                    match send_backup(&mut w, ops::backup::stream(&state)).await {
                        Ok(()) => continue,
                        Err(_) => break,
                    }
                }
                Ok(req) => dispatch(&state, req).await,
                Err(e) => Response::err("bad_request", format!("not a request line ({e}); expected {{\"cmd\": \"...\", \"args\": {{...}}}}"), ops::Kind::BadInput),
            },
            Ok(Some(Line::TooLong)) => Response::err("line_too_long", format!("request lines are limited to {MAX_LINE} bytes"), ops::Kind::BadInput),
            Ok(Some(Line::NotUtf8)) => Response::err("bad_request", "request lines must be UTF-8 JSON", ops::Kind::BadInput),
        };
        if send(&mut w, &answer).await.is_err() {
            break;
        }
    }
}

async fn send(w: &mut OwnedWriteHalf, r: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_string(r).unwrap_or_else(|_| "{\"ok\":false}".into());
    line.push('\n');
    w.write_all(line.as_bytes()).await
}

/// `{"ok": true, "data": <the sync-all answer>}`, written as its pieces are made (the
/// whole answer is never one string here).
async fn send_pieces(
    w: &mut OwnedWriteHalf,
    answer: &ops::sync::AllAnswerText,
) -> std::io::Result<()> {
    w.write_all(b"{\"ok\":true,\"data\":").await?;
    // The pieces borrow the report: made one at a time between writes.
    for piece in answer.pieces() {
        w.write_all(piece.as_bytes()).await?;
    }
    w.write_all(b"}\n").await
}

/// `backup`: `{"ok": true, "data": {"backup": "follows"}}` and the backup's lines, header to
/// trailer, as the store walk makes them; or one error answer (before the header: the
/// backup did not start; after it: it stopped, and the client discards what it has).
async fn send_backup(w: &mut OwnedWriteHalf, mut lines: ops::backup::Lines) -> std::io::Result<()> {
    let mut started = false;
    while let Some(item) = lines.next().await {
        match item {
            Ok(line) => {
                if !started {
                    started = true;
                    w.write_all(b"{\"ok\":true,\"data\":{\"backup\":\"follows\"}}\n")
                        .await?;
                }
                w.write_all(&line).await?;
            }
            Err(e) => return send(w, &failed(&e)).await,
        }
    }
    if !started {
        let e = ApiError::internal("the backup ended before its header");
        return send(w, &failed(&e)).await;
    }
    Ok(())
}

/// An operation's error answer; an internal error's detail is logged once, here.
fn failed(e: &ApiError) -> Response {
    if let Some(detail) = &e.detail {
        tracing::error!(code = e.code, error = %detail, "internal error");
    }
    Response::failed(e)
}

fn arg_str<'a>(args: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    args.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request("missing_argument", format!("argument {name:?} is required"))
        })
}

fn arg_opt<'a>(args: &'a Value, name: &str) -> Option<&'a str> {
    args.get(name).and_then(Value::as_str)
}

/// `all` (default false), `limit` (a number) and `after` (a realm id) of `companies`.
fn list_query(a: &Value) -> Result<ops::companies::ListQuery, ApiError> {
    let limit = match a.get("limit") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            ApiError::bad_request(
                "bad_parameter",
                format!(
                    "limit: {v} is not a number between 1 and {}",
                    ops::companies::MAX_PAGE
                ),
            )
        })?),
    };
    Ok(ops::companies::ListQuery {
        active_only: !a.get("all").and_then(Value::as_bool).unwrap_or(false),
        limit,
        after: arg_opt(a, "after")
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    })
}

/// Runs one request.
async fn dispatch(state: &Arc<Ctx>, req: Request) -> Response {
    match run(state, &req).await {
        Ok(data) => Response::ok(data),
        Err(e) => failed(&e),
    }
}

/// An operation's answer as the JSON the line carries.
fn data<T: serde::Serialize>(answer: ops::OpResult<T>) -> ops::OpResult {
    serde_json::to_value(answer?)
        .map_err(|e| ApiError::internal(format!("serializing the answer: {e}")))
}

async fn run(state: &Arc<Ctx>, req: &Request) -> ops::OpResult {
    let a = &req.args;
    let limit = || a.get("limit").and_then(Value::as_u64).unwrap_or(20) as usize;
    match req.cmd.as_str() {
        "status" => data(ops::status(state).await),
        "companies" => data(ops::companies::list(state, &list_query(a)?).await),
        "company" => data(ops::companies::sync_status(state, arg_str(a, "realm")?).await),
        "sync" => {
            let realm = arg_str(a, "realm")?;
            data(ops::sync::sync_one(state, realm, arg_opt(a, "date")).await)
        }
        "backfill" => {
            let realm = arg_str(a, "realm")?;
            let dry = a.get("dry_run").and_then(Value::as_bool).unwrap_or(false);
            let (from, to) = (arg_opt(a, "from"), arg_opt(a, "to"));
            data(ops::backfill::backfill(state, realm, from, to, dry).await)
        }
        "set" => {
            let realm = arg_str(a, "realm")?;
            let settings = a.get("settings").cloned().unwrap_or(Value::Null);
            data(ops::companies::update_settings(state, realm, &settings).await)
        }
        "disconnect" => ops::connect::disconnect(state, arg_str(a, "realm")?).await,
        "rates" => data(ops::rates::answer(state, arg_opt(a, "date")).await),
        "fetch" => data(ops::rates::fetch(state).await),
        "scrapes" => data(ops::rates::scrapes(state, limit()).await),
        "connect_url" => ops::connect::connect_url(state).await,
        "logs" => data(ops::companies::logs(state, arg_str(a, "realm")?, limit()).await),
        "import_tables" => data(import(state, a).await),
        "adopt" => {
            let (realm, token) = (arg_str(a, "realm")?, arg_str(a, "refresh_token")?);
            let (name, home) = (arg_opt(a, "name"), arg_opt(a, "home_currency"));
            ops::migrate::adopt(state, realm, name, home, token).await
        }
        "import_connections" => ops::migrate::import_connections(state, a).await,
        "archive_index" => data(ops::rates::archive_index(state).await),
        "import_year" => match a
            .get("year")
            .and_then(Value::as_i64)
            .and_then(|y| i32::try_from(y).ok())
        {
            Some(y) => data(ops::rates::import_year(state, y).await),
            None => Err(ApiError::bad_request(
                "missing_argument",
                "argument \"year\" is required",
            )),
        },
        other => Err(ApiError::bad_request(
            "unknown_command",
            format!("unknown command {other:?}"),
        )),
    }
}

async fn import(state: &Ctx, a: &Value) -> ops::OpResult<ops::rates::ImportAnswer> {
    let file = arg_str(a, "file")?;
    let sha = arg_opt(a, "sha256").unwrap_or("");
    ops::rates::import_tables(
        state,
        file,
        sha,
        a.get("tables").cloned().unwrap_or(Value::Null),
    )
    .await
}
