//! gridwork-sync-server: reconciles a district's devices when they come back online.
//!
//! - [`store`]: the storage trait and its embedded SQLite implementation: enrolment, the actor
//!   registry, idempotent ingest, parking, quarantine, scopes and cursor pulls.
//! - [`ingest`]: reading a change's hash, actor, dependencies and lifecycle events without
//!   loading its document.
//! - [`http`]: the axum routes.
//!
//! The server links `gridwork-model` (model, fold, document keys, wire types), never the device
//! store. The protocol is in docs/PROTOCOL.md.

pub mod error;
pub mod http;
pub mod ingest;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

pub use error::ServerError;
pub use store::{SqliteStore, SyncStore};

/// A server running on its own runtime thread (tests, the demo, the benchmark). Dropping it
/// stops the server.
#[derive(Debug)]
pub struct RunningServer {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningServer {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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

/// Starts the server on `addr` (use port 0 for a random one) on a background thread.
pub fn start(store: Arc<dyn SyncStore>, addr: SocketAddr) -> std::io::Result<RunningServer> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind(addr))?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        runtime.block_on(async move {
            let app = http::router(store);
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
    });
    Ok(RunningServer { addr, shutdown: Some(tx), thread: Some(thread) })
}
