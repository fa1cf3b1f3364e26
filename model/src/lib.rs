//! Gridwork's shared model: everything both a phone and the sync server must agree on, with no
//! I/O at all (no SQLite, no HTTP, no files), so the server can link it without dragging in the
//! device store or the photo pipeline.
//!
//! - [`access`]: who may change which case — the one write-authorization rule.
//! - [`ids`]: case, event and record identifiers, and the readable case code.
//! - [`geo`]: locations in WGS-84, GCJ-02 conversion, point-in-polygon.
//! - [`catalog`]: grids, patrol points, categories, departments, roles.
//! - [`lifecycle`]: lifecycle events, the role table and the fold that derives a case's state.
//! - [`doc`]: how a case maps onto one Automerge document.
//! - [`record`]: immutable records (patrols and check-ins) that sync idempotently by id.
//! - [`search`]: how text is split into search terms (Chinese by bigrams), phone and server alike.
//! - [`time`]: clock readings that do not trust the device clock, and the district's time zone.
//! - [`wire`]: the sync protocol's request and response types (docs/PROTOCOL.md).

pub mod access;
pub mod bundle;
pub mod catalog;
pub mod crash_points;
pub mod doc;
pub mod error;
pub mod evidence;
pub mod fence;
pub mod geo;
pub mod ids;
pub mod lifecycle;
pub mod places;
pub mod record;
pub mod search;
pub mod signing;
pub mod time;
pub mod wire;

pub use error::ModelError;

/// Longest free text (title, description, notes) accepted, in characters.
pub const MAX_TEXT_CHARS: usize = 10_000;
