//! gridwork-core: what a grid worker's phone does, offline.
//!
//! - [`store`]: the encrypted SQLite store and its one handle, [`Store`]: case capture, edits,
//!   lifecycle events, photos, patrols and check-ins, lists and search, the outbox.
//! - [`evidence`]: the photo pipeline (decode, orient, resize, strip, encode).
//! - [`clock`]: where time comes from.
//! - [`sync`]: the device side of the sync protocol: enrolment and `Store::sync`.
//! - [`upload`]: evidence upload after a sync (resumable chunks) and a case's sync state.
//! - [`download`]: evidence other phones took, thumbnails after each sync, photos on demand.
//! - [`vault`]: the platform keystore's part: the store key kept wrapped, destroyed by a wipe.
//!
//! The shared, I/O-free part (model, lifecycle fold, document mapping) is `gridwork-model`,
//! re-exported here as [`model`].

pub mod clock;
pub mod download;
pub mod error;
pub mod evidence;
pub mod signing;
pub mod store;
pub mod sync;
pub mod tls;
pub mod upload;
pub mod vault;

pub use error::{CoreError, Result};
pub use gridwork_model as model;
pub use store::{Identity, OpenOptions, OpenReport, Store};
