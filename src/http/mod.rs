//! The HTTP API's accept loop (hyper 1 + hyper-util): one task per connection, a header
//! timeout, graceful drain on shutdown. Routing lives in [`routes`].

pub mod limit;
pub mod pages;
pub mod routes;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::ops::Ctx;

/// How long open connections get to finish after shutdown begins.
const HTTP_DRAIN: Duration = Duration::from_secs(10);

/// Serves the API on `listener` until `token` is cancelled, then drains.
pub async fn serve(listener: TcpListener, state: Arc<Ctx>, token: CancellationToken) {
    let limiter = Arc::new(limit::RateLimiter::default());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let st = state.clone();
                    let lim = limiter.clone();
                    let svc = service_fn(move |req| {
                        let st = st.clone();
                        let lim = lim.clone();
                        async move { Ok::<_, Infallible>(routes::handle(&st, &lim, peer, req).await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(30))
                        .serve_connection(TokioIo::new(stream), svc);
                    let watched = graceful.watch(conn);
                    tokio::spawn(async move {
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
