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

/// Runs [`serve`] on a thread of its own (`boa-http`, with a single-threaded runtime): the
/// connections are accepted, read and written there, and `GET /health` is answered there
/// when it needs no pooled store connection ([`routes::answer_on`]); every other request
/// is handled on `main`, where the services, the schedule and a sync-all run. During a
/// sync-all `main`'s workers are never idle, and a probe answered among its tasks waited
/// behind them (and behind the CPU they share with a database server on the same host).
///
/// The returned future ends once the server has drained (at most `HTTP_DRAIN`, 10 s) and the
/// thread's runtime is shut down (its tasks dropped; a count still running on its blocking
/// pool is waited for at most 1 s); dropping it stops the server too.
///
/// # Errors
/// The thread, its runtime or the listener's registration with it cannot be made.
pub async fn serve_on_own_thread(
    listener: TcpListener,
    state: Arc<Ctx>,
    token: CancellationToken,
    main: tokio::runtime::Handle,
) -> std::io::Result<impl std::future::Future<Output = ()>> {
    let listener = listener.into_std()?;
    let (started, is_started) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    let stop = token.clone().drop_guard();
    std::thread::Builder::new()
        .name("boa-http".into())
        .spawn(move || {
            // Built here, so that no error path drops a runtime on an async thread.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let ready = rt.and_then(|rt| {
                // Registered with this thread's reactor, not the caller's.
                let l = {
                    let _on = rt.enter();
                    TcpListener::from_std(listener)
                };
                l.map(|l| (rt, l))
            });
            let (rt, listener) = match ready {
                Ok(r) => r,
                Err(e) => {
                    let _ = started.send(Err(e));
                    return;
                }
            };
            let _ = started.send(Ok(()));
            rt.block_on(serve(listener, state, token, main));
            // Connections still open after the drain go at once; a count still running on
            // the blocking pool gets a moment before the caller learns the server is done.
            rt.shutdown_timeout(Duration::from_secs(1));
            let _ = done.send(());
        })?;
    match is_started.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(std::io::Error::other(
                "the HTTP thread ended while starting",
            ))
        }
    }
    Ok(async move {
        let _stop_when_dropped = stop;
        if finished.await.is_err() {
            tracing::error!("the HTTP thread ended without draining (it panicked)");
        }
    })
}

/// Serves the API on `listener` until `token` is cancelled, then drains. Requests are
/// answered as [`routes::answer_on`] says, with `main` the services' runtime.
///
/// At most `server.max_connections` connections are open (as fitted to the open-file limit);
/// further clients wait in the kernel's accept queue until one closes. A reload (SIGHUP)
/// that changes the limit applies at once when it grows and as connections close when it
/// shrinks (open ones are never cut).
pub async fn serve(
    listener: TcpListener,
    state: Arc<Ctx>,
    token: CancellationToken,
    main: tokio::runtime::Handle,
) {
    let mut cap = SlotLimit::new(state.config.clone());
    let slots = cap.slots.clone();
    let limiter = Arc::new(limit::RateLimiter::default());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        if slots.available_permits() == 0 {
            // Observable for tests: from here no connection is let in until a slot frees.
            tracing::debug!(
                debt = cap.debt,
                "no connection slot is free (limit {}): new clients wait in the accept queue",
                cap.max
            );
        }
        // Take a slot before accepting: when all are held, nothing is accepted.
        let slot = tokio::select! {
            _ = token.cancelled() => break,
            changed = cap.config.changed(), if cap.watching => {
                cap.apply(changed.is_ok());
                continue;
            }
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        if cap.owes() {
            slot.forget();
            continue;
        }
        tokio::select! {
            _ = token.cancelled() => break,
            // A new limit applies before the next connection is let in: the slot just taken
            // goes back (or pays a smaller limit's debt on the next turn).
            changed = cap.config.changed(), if cap.watching => {
                drop(slot);
                cap.apply(changed.is_ok());
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracing::debug!(%peer, "http connection accepted");
                    let timeout = Duration::from_secs(state.config().server.request_timeout_secs);
                    let st = state.clone();
                    let lim = limiter.clone();
                    let main = main.clone();
                    let svc = service_fn(move |req| {
                        let st = st.clone();
                        let lim = lim.clone();
                        let main = main.clone();
                        async move {
                            Ok::<_, Infallible>(routes::answer_on(&main, st, lim, peer, req).await)
                        }
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

/// The connection slots and the configured limit they follow. A smaller limit is a debt of
/// slots: the accept loop (the only one taking slots) keeps the next ones it takes instead
/// of letting a connection in, until the debt is paid.
struct SlotLimit {
    config: crate::config::ConfigWatch,
    /// False once the configuration's sender is gone (the daemon is stopping).
    watching: bool,
    wanted: usize,
    max: usize,
    /// Slots still to be taken out of use after the limit shrank.
    debt: usize,
    slots: Arc<Semaphore>,
}

impl SlotLimit {
    fn new(mut config: crate::config::ConfigWatch) -> SlotLimit {
        let wanted = config.borrow_and_update().server.max_connections;
        let max = fitting_max_connections(wanted);
        SlotLimit {
            config,
            watching: true,
            wanted,
            max,
            debt: 0,
            slots: Arc::new(Semaphore::new(max)),
        }
    }

    /// After the configuration changed (`sender_alive`) or its sender went away.
    fn apply(&mut self, sender_alive: bool) {
        if !sender_alive {
            self.watching = false;
            return;
        }
        let now = self.config.borrow_and_update().server.max_connections;
        if now != self.wanted {
            self.wanted = now;
            self.resize(fitting_max_connections(now));
        }
    }

    /// More slots at once (after paying any debt); fewer as they come back.
    fn resize(&mut self, to: usize) {
        if to > self.max {
            let more = to - self.max;
            let paid = more.min(self.debt);
            self.debt -= paid;
            self.slots.add_permits(more - paid);
        } else {
            self.debt += self.max - to;
        }
        self.max = to;
        tracing::info!(max_connections = to, "server.max_connections is now {to}");
    }

    /// Whether a slot just taken must be kept out of use (paying the debt).
    fn owes(&mut self) -> bool {
        if self.debt == 0 {
            return false;
        }
        self.debt -= 1;
        true
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
    fn a_smaller_limit_is_paid_from_slots_coming_back_and_a_larger_one_pays_first() {
        let env: std::collections::HashMap<String, String> = Default::default();
        let config = crate::config::Config::load_with_env(None, &env).unwrap();
        let (_tx, rx) = tokio::sync::watch::channel(Arc::new(config));
        let mut l = SlotLimit::new(rx);
        assert_eq!(l.max, 512);
        l.resize(8);
        // The accept loop pays the debt with the slots it takes.
        while let Ok(slot) = l.slots.clone().try_acquire_owned() {
            if !l.owes() {
                drop(slot);
                break;
            }
            slot.forget();
        }
        assert_eq!((l.debt, l.slots.available_permits()), (0, 8));
        let held: Vec<_> = (0..6)
            .map(|_| l.slots.clone().try_acquire_owned().unwrap())
            .collect();
        l.resize(3);
        // Five slots too many: the two free ones and three of those held, as they return.
        assert_eq!(l.debt, 5);
        for _ in 0..2 {
            let free = l.slots.clone().try_acquire_owned().unwrap();
            assert!(l.owes());
            free.forget();
        }
        drop(held);
        l.resize(5);
        assert_eq!((l.debt, l.slots.available_permits()), (1, 6));
        l.resize(7);
        assert_eq!((l.debt, l.slots.available_permits()), (0, 7));
        assert!(!l.owes());
    }

    /// One raw HTTP/1.1 request on a new connection; the whole answer (the server closes).
    fn get(addr: std::net::SocketAddr, path: &str) -> String {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        // A request the server never answers fails the test instead of hanging it.
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            c,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn health_is_answered_on_the_http_thread_while_every_worker_of_the_main_runtime_is_busy() {
        use crate::time::clock::{Clock, ManualClock};
        let main = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let env: std::collections::HashMap<String, String> = Default::default();
        let config = crate::config::Config::load_with_env(None, &env).unwrap();
        let (_tx, rx) = tokio::sync::watch::channel(Arc::new(config));
        let store = Arc::new(crate::store::Store::open_temporary().unwrap());
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(chrono::Utc::now()));
        let token = CancellationToken::new();
        let (addr, server) = main.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let ctx = crate::app::build(rx, store, addr, clock).await.unwrap();
            let server = serve_on_own_thread(listener, ctx, token.clone(), main.handle().clone())
                .await
                .unwrap();
            (addr, server)
        });
        // The first answer reads the health facts (on the main runtime); the clock stands
        // still, so they stay at hand.
        assert!(get(addr, "/health").starts_with("HTTP/1.1 200"));

        // The main runtime's one worker is held until `release` is dropped.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (entered, is_held) = std::sync::mpsc::channel::<()>();
        main.spawn(async move {
            entered.send(()).unwrap();
            let _ = held.recv();
        });
        is_held.recv().unwrap();
        let health = get(addr, "/health");
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        assert!(health.contains("\"total_companies\":0"), "{health}");
        // Anything else is handled on the main runtime: it waits for the worker.
        let other = std::thread::spawn(move || get(addr, "/api/v1/rates?date=2026-13-01"));
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!other.is_finished(), "answered without the main runtime");
        drop(release);
        let other = other.join().unwrap();
        assert!(other.starts_with("HTTP/1.1 400"), "{other}");
        assert!(other.contains("bad_date"), "{other}");

        token.cancel();
        main.block_on(server);
    }

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
