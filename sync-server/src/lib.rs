//! gridwork-sync-server: reconciles a district's devices when they come back online.
//!
//! - [`store`]: the storage trait and its embedded SQLite implementation: enrolment, the actor
//!   registry, idempotent ingest, parking, quarantine, scopes and cursor pulls.
//! - [`ingest`]: reading a change's hash, actor, dependencies and lifecycle events without
//!   loading its document.
//! - [`http`]: the axum routes.
//! - [`places`]: the district's grids found by id and by position (an R-tree).
//! - [`config`]: `serve`'s settings from the command line, the environment and a TOML file.
//!
//! The server links `gridwork-model` (model, fold, document keys, wire types) and no phone code:
//! the demo that simulates phones is its own crate (`gridwork-demo`). The protocol is in
//! docs/PROTOCOL.md.

pub mod allocator;
pub mod backup;
pub mod blobs;
pub mod change_ops;
pub mod city;
pub mod clock;
pub mod config;
pub mod console;
pub mod error;
pub mod grids;
pub mod http;
pub mod ingest;
pub mod limits;
pub mod metrics;
pub mod receipts;
pub mod records;
pub mod rules;
pub mod serve;
pub mod store;
pub mod tls;
pub mod upkeep;

use std::net::SocketAddr;
use std::sync::Arc;

pub use error::ServerError;
pub use store::{AdminStore, ChainState, PgStore, SqliteStore, SyncStore};

/// A server running on its own runtime thread (tests, the demo, the benchmark). Dropping it
/// stops the server.
#[derive(Debug)]
pub struct RunningServer {
    pub addr: SocketAddr,
    /// `https` when serving TLS, `http` otherwise (loopback only).
    pub scheme: &'static str,
    /// Where `/metrics` answers (its own listener), when it was started.
    pub metrics_addr: Option<SocketAddr>,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningServer {
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// `http://ADDR/metrics`, when the metrics listener runs.
    pub fn metrics_url(&self) -> Option<String> {
        self.metrics_addr.map(|a| format!("http://{a}/metrics"))
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How to serve: TLS, where `/metrics` listens, and the accept loop's limits.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub tls: Option<rustls::ServerConfig>,
    /// The metrics listener (plain HTTP): loopback by default; `None` runs none.
    pub metrics: Option<SocketAddr>,
    /// When set, `/metrics` answers only `Authorization: Bearer TOKEN`.
    pub metrics_token: Option<Arc<str>>,
    pub limits: serve::ServeLimits,
    /// How often the server's own work runs (`upkeep`: the search index); `None` runs none
    /// (tests and benchmarks that measure the sync path alone drive it themselves).
    pub upkeep: Option<std::time::Duration>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            tls: None,
            metrics: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            metrics_token: None,
            limits: serve::ServeLimits::default(),
            upkeep: None,
        }
    }
}

/// Starts the server on `addr` (use port 0 for a random one) on a background thread, plain HTTP,
/// with `/metrics` on a random loopback port. Refused on anything but a loopback address: phones'
/// reports never cross a network in the clear.
pub fn start(store: Arc<dyn SyncStore>, addr: SocketAddr) -> std::io::Result<RunningServer> {
    start_serving(store, addr, ServeOptions::default())
}

/// Starts the server with TLS (see [`tls`]), or plain HTTP on loopback when `tls` is `None`.
pub fn start_with(
    store: Arc<dyn SyncStore>,
    addr: SocketAddr,
    tls: Option<rustls::ServerConfig>,
) -> std::io::Result<RunningServer> {
    start_serving(store, addr, ServeOptions { tls, ..ServeOptions::default() })
}

/// Starts the server as `options` say.
pub fn start_serving(
    store: Arc<dyn SyncStore>,
    addr: SocketAddr,
    options: ServeOptions,
) -> std::io::Result<RunningServer> {
    let ServeOptions { tls, metrics: metrics_at, metrics_token, limits, upkeep: upkeep_every } = options;
    if tls.is_none() && !addr.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("plain HTTP only on loopback, not {addr}: run `admin init-tls` to serve TLS"),
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind(addr))?;
    let addr = listener.local_addr()?;
    let metrics_listener = match metrics_at {
        Some(at) => Some(runtime.block_on(tokio::net::TcpListener::bind(at))?),
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().map(|l| l.local_addr()).transpose()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let secure = tls.is_some();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let thread = std::thread::spawn(move || {
        runtime.block_on(async move {
            let metrics = Arc::new(metrics::Metrics::new());
            let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
                let _ = rx.wait_for(|stop| *stop).await;
            };
            if let Some(every) = upkeep_every {
                tokio::spawn(upkeep::run(store.clone(), every, rx.clone()));
            }
            if let Some(l) = metrics_listener {
                let app = http::metrics_router(store.clone(), metrics.clone(), metrics_token);
                tokio::spawn(serve::serve(l, app, limits, stopped(rx.clone())));
            }
            let app = http::router_with(store, metrics, secure, limits.body_timeout);
            match tls {
                Some(config) => match tls::TlsListener::new(listener, config) {
                    Ok(l) => serve::serve(l, app, limits, stopped(rx)).await,
                    Err(e) => tracing::error!(error = %e, "cannot start the TLS listener"),
                },
                None => serve::serve(listener, app, limits, stopped(rx)).await,
            };
        });
    });
    Ok(RunningServer { addr, scheme, metrics_addr, shutdown: Some(tx), thread: Some(thread) })
}
