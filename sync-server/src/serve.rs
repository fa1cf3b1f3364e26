//! The server's accept loop: hyper's HTTP/1 connection with its own header-read timeout, a cap on
//! open connections, and the peer's address on every request (the enrolment rate limit keys on
//! it). `axum::serve` offers none of these settings, so the loop is ours; the connection handling
//! itself is hyper's (docs/adr/0016).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tower_service::Service;

use crate::limits;

/// What the accept loop enforces. The defaults are [`limits`]'s.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    pub max_connections: usize,
    pub header_read_timeout: std::time::Duration,
    /// How long a request's body may take to arrive (enforced where bodies are read, `http`).
    pub body_timeout: std::time::Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            max_connections: limits::MAX_CONNECTIONS,
            header_read_timeout: limits::HEADER_READ_TIMEOUT,
            body_timeout: limits::BODY_TIMEOUT,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open requests finish (for at
/// most 10 seconds).
pub async fn serve<L>(mut listener: L, app: Router, limits: ServeLimits, shutdown: impl Future<Output = ()>)
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        // A connection slot first: past the cap, new connections wait in the kernel's queue.
        let slot = tokio::select! {
            slot = open.clone().acquire_owned() => match slot {
                Ok(s) => s,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let mut app = app.clone();
            async move { app.call(req).await }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(io), service));
        tokio::spawn(async move {
            // A connection's errors (a client gone, a header timeout) end it and nothing else.
            let _ = connection.await;
            drop(slot);
        });
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), graceful.shutdown()).await;
}
