//! gridwork-sync-server: reconciles a district's devices when they come back online.
//!
//! - [`store`]: the storage trait and its embedded SQLite implementation: enrolment, the actor
//!   registry, idempotent ingest, parking, quarantine, scopes and cursor pulls.
//! - [`ingest`]: reading a change's hash, actor, dependencies and lifecycle events without
//!   loading its document.
//! - [`http`]: the axum routes.
//! - [`places`]: the district's grids found by id and by position (an R-tree).
//!
//! - [`demo`]: the simulated district the README's main command runs.
//!
//! The server links `gridwork-model` (model, fold, document keys, wire types); only [`demo`] uses
//! the device store, to simulate phones. The protocol is in docs/PROTOCOL.md.

pub mod backup;
pub mod blobs;
pub mod change_ops;
pub mod console;
pub mod demo;
pub mod error;
pub mod grids;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod places;
pub mod store;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

pub use error::ServerError;
pub use store::{SqliteStore, SyncStore};

/// A server running on its own runtime thread (tests, the demo, the benchmark). Dropping it
/// stops the server.
#[derive(Debug)]
pub struct RunningServer {
    pub addr: SocketAddr,
    /// `https` when serving TLS, `http` otherwise (loopback only).
    pub scheme: &'static str,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningServer {
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the server on `addr` (use port 0 for a random one) on a background thread, plain HTTP.
/// Refused on anything but a loopback address: phones' reports never cross a network in the clear.
pub fn start(store: Arc<dyn SyncStore>, addr: SocketAddr) -> std::io::Result<RunningServer> {
    start_with(store, addr, None)
}

/// Starts the server with TLS (see [`tls`]), or plain HTTP on loopback when `tls` is `None`.
pub fn start_with(
    store: Arc<dyn SyncStore>,
    addr: SocketAddr,
    tls: Option<rustls::ServerConfig>,
) -> std::io::Result<RunningServer> {
    if tls.is_none() && !addr.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("plain HTTP only on loopback, not {addr}: run `admin init-tls` to serve TLS"),
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind(addr))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let secure = tls.is_some();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        runtime.block_on(async move {
            let app = http::router(store, Arc::new(metrics::Metrics::new()), secure);
            let stop = async {
                let _ = rx.await;
            };
            let _ = match tls {
                Some(config) => match tls::TlsListener::new(listener, config) {
                    Ok(l) => axum::serve(l, app).with_graceful_shutdown(stop).await,
                    Err(_) => return,
                },
                None => axum::serve(listener, app).with_graceful_shutdown(stop).await,
            };
        });
    });
    Ok(RunningServer { addr, scheme, shutdown: Some(tx), thread: Some(thread) })
}
