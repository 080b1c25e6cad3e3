//! The control socket server: binds (removing a stale socket), checks each peer with
//! SO_PEERCRED, and answers NDJSON requests. A bad line gets an error answer; the
//! connection and the daemon go on.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;

use super::{Request, Response, MAX_LINE};
use crate::app::AppState;
use crate::ops;

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
pub async fn serve(listener: UnixListener, state: Arc<AppState>, token: CancellationToken) {
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

async fn connection(stream: UnixStream, state: Arc<AppState>, token: CancellationToken) {
    let allowed = peer_allowed(&stream);
    let mut framed = Framed::new(stream, LinesCodec::new_with_max_length(MAX_LINE));
    if !allowed {
        let _ = send(
            &mut framed,
            &Response::err(
                "permission_denied",
                "only root, the service user or members of its group may use this socket",
            ),
        )
        .await;
        return;
    }
    loop {
        let line = tokio::select! {
            _ = token.cancelled() => break,
            l = framed.next() => l,
        };
        let answer = match line {
            None => break,
            Some(Ok(line)) if line.trim().is_empty() => continue,
            Some(Ok(line)) => match serde_json::from_str::<Request>(&line) {
                Ok(req) => dispatch(&state, req).await,
                Err(e) => Response::err("bad_request", format!("not a request line ({e}); expected {{\"cmd\": \"...\", \"args\": {{...}}}}")),
            },
            Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                Response::err("line_too_long", format!("request lines are limited to {MAX_LINE} bytes"))
            }
            Some(Err(LinesCodecError::Io(_))) => break,
        };
        if send(&mut framed, &answer).await.is_err() {
            break;
        }
    }
}

async fn send(
    framed: &mut Framed<UnixStream, LinesCodec>,
    r: &Response,
) -> Result<(), LinesCodecError> {
    let line = serde_json::to_string(r).unwrap_or_else(|_| "{\"ok\":false}".into());
    framed.send(line).await
}

/// Runs one request.
pub async fn dispatch(state: &AppState, req: Request) -> Response {
    let result = match req.cmd.as_str() {
        "status" => ops::status(state),
        other => Err(ops::ApiError::bad_request(
            "unknown_command",
            format!("unknown command {other:?}"),
        )),
    };
    match result {
        Ok(data) => Response::ok(data),
        Err(e) => Response::err(e.code, e.message),
    }
}
