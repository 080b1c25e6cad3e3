//! The HTTP API's accept loop (hyper 1 + hyper-util): one task per connection, at most
//! `server.max_connections` of them, request deadlines, graceful drain on shutdown. Routing
//! lives in [`routes`].
//!
//! Deadlines: hyper's header read timeout closes a connection whose request head has not
//! arrived within `server.request_timeout_secs`. hyper arms it whenever the connection waits
//! for a head, so it also closes connections that never send anything and keep-alive
//! connections left idle. The body gets the same time again in [`routes::handle`].

pub mod limit;
pub mod pages;
pub mod routes;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::ops::Ctx;

/// How long open connections get to finish after shutdown begins.
const HTTP_DRAIN: Duration = Duration::from_secs(10);

/// File descriptors kept back from HTTP connections for everything else: the store's files,
/// the control socket and its clients, outbound connections to Intuit and BoA, the journal.
pub const FD_HEADROOM: u64 = 256;

/// Largest request head (and read buffer) per connection: ample for any real request, and it
/// bounds what a stuck or hostile connection can make the daemon hold (hyper's default is
/// about 400 KiB, 800 MiB for 2,000 connections).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Serves the API on `listener` until `token` is cancelled, then drains.
///
/// At most `server.max_connections` connections are open (as fitted to the open-file limit
/// at start); further clients wait in the kernel's accept queue until one closes.
pub async fn serve(listener: TcpListener, state: Arc<Ctx>, token: CancellationToken) {
    let max = fitting_max_connections(state.config().server.max_connections);
    let slots = Arc::new(Semaphore::new(max));
    let limiter = Arc::new(limit::RateLimiter::default());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        // Take a slot before accepting: when all are held, nothing is accepted.
        let slot = tokio::select! {
            _ = token.cancelled() => break,
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        tokio::select! {
            _ = token.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let timeout = Duration::from_secs(state.config().server.request_timeout_secs);
                    let st = state.clone();
                    let lim = limiter.clone();
                    let svc = service_fn(move |req| {
                        let st = st.clone();
                        let lim = lim.clone();
                        async move { Ok::<_, Infallible>(routes::handle(&st, &lim, peer, req).await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(timeout)
                        .max_buf_size(MAX_HEAD_BYTES)
                        .serve_connection(TokioIo::new(stream), svc);
                    let watched = graceful.watch(conn);
                    tokio::spawn(async move {
                        // The slot is held for as long as the connection is open.
                        let _slot = slot;
                        if let Err(e) = watched.await {
                            tracing::debug!(error = %e, "http connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; backing off");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(HTTP_DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("http connections still open after the drain timeout");
    }
}

/// `wanted`, or fewer when the open-file limit cannot hold that many connections besides
/// [`FD_HEADROOM`]. Raises the soft limit towards the hard one first where allowed (under the
/// shipped unit `LimitNOFILE=` already sets both, and setrlimit is filtered).
pub fn fitting_max_connections(wanted: usize) -> usize {
    let need = wanted as u64 + FD_HEADROOM;
    let Some((mut soft, hard)) = nofile_limit() else {
        return wanted;
    };
    if soft < need && hard > soft && raise_nofile(need.min(hard), hard) {
        soft = need.min(hard);
    }
    let fit = fit_connections(wanted, soft);
    if fit < wanted {
        tracing::warn!(
            max_connections = wanted,
            using = fit,
            open_file_limit = soft,
            "server.max_connections does not fit the open-file limit (RLIMIT_NOFILE) with {FD_HEADROOM} descriptors kept for the store, control socket and outbound connections; raise LimitNOFILE= or lower max_connections"
        );
    }
    fit
}

/// The connections that fit in `soft` descriptors (pure).
pub fn fit_connections(wanted: usize, soft: u64) -> usize {
    let room = soft.saturating_sub(FD_HEADROOM).max(1);
    wanted.min(usize::try_from(room).unwrap_or(usize::MAX))
}

fn nofile_limit() -> Option<(u64, u64)> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    (rc == 0).then_some((rl.rlim_cur, rl.rlim_max))
}

fn raise_nofile(soft: u64, hard: u64) -> bool {
    let rl = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit only reads the struct we pass.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_fit_the_open_file_limit() {
        assert_eq!(fit_connections(512, 4096), 512);
        assert_eq!(fit_connections(512, 512 + FD_HEADROOM), 512);
        assert_eq!(fit_connections(512, 512 + FD_HEADROOM - 1), 511);
        assert_eq!(fit_connections(2048, 1024), 1024 - FD_HEADROOM as usize);
        assert_eq!(fit_connections(512, 10), 1, "never zero");
        assert_eq!(fit_connections(65_536, u64::MAX), 65_536, "RLIM_INFINITY");
    }

    #[test]
    fn the_process_limit_is_read() {
        let (soft, hard) = nofile_limit().unwrap();
        assert!(soft >= 1 && hard >= soft);
        assert!(fitting_max_connections(1) == 1);
    }
}
