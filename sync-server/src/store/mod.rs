//! Server storage. The HTTP layer talks to a [`SyncStore`], the command line and the tests to an
//! [`AdminStore`]; [`SqliteStore`] is the embedded default (one data directory). Both traits'
//! rules live above the storage port ([`port`], `crate::rules`), so a backend holds SQL only.

pub mod console;
pub mod port;
pub mod postgres;
mod sqlite;
pub(crate) mod values;

/// A record body as the server reads it (public for the fuzz targets in `gridwork-tests`).
pub use crate::records::RecordFacts;
pub use console::ConsoleStore;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use std::sync::Arc;

/// The embedded store's database file in its directory.
pub const SQLITE_FILE: &str = "server.db";

use gridwork_model::access::Scope;
use gridwork_model::catalog::{Catalog, Role};
use gridwork_model::wire::{BlobOwner, BlobStatus, EnrolRequest, EnrolResponse, SyncRequest, SyncResponse};

use crate::blobs::{Begun, Writer};
use crate::error::Result;

/// A device as an administrator sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeviceInfo {
    pub id: String,
    pub code: String,
    pub user: String,
    pub status: String,
    pub last_seen_ms: Option<i64>,
    pub last_state: Option<serde_json::Value>,
    /// How old the device's oldest unsynced work is now (as last reported, plus the time since);
    /// None when it reported nothing pending or never synced.
    pub unsynced_age_ms: Option<i64>,
    /// Its signed chain (None: an app older than signing, whose work arrives unsigned).
    pub chain: Option<ChainState>,
}

/// A signing device's chain as the server holds it (`gridwork_model::signing`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ChainState {
    /// Links received.
    pub links: i64,
    /// Places below the highest with nothing received: work never sent, or not yet.
    pub holes: i64,
    /// Links that did not continue the history held: a cloned or restored phone. Each one needs
    /// an administrator's look.
    pub forks: i64,
}

/// A quarantined change or record.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QuarantinedItem {
    pub key: String,
    pub doc_id: String,
    pub device_id: String,
    pub reason: String,
    pub status: String,
}

/// An authenticated device, as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub id: String,
    pub user: String,
    pub role: gridwork_model::catalog::Role,
    pub department: Option<String>,
    /// Retired (a worker left): may push what it holds, receives nothing new.
    pub retired: bool,
    /// The district of a city deployment the device belongs to (`crate::city`); None in a
    /// district's own store, which knows no other.
    pub district: Option<String>,
    /// The device's Ed25519 public key (base64), registered at enrolment by an app that signs:
    /// then every change and record it sends must carry a valid signature (`rules::push`).
    pub public_key: Option<String>,
    /// An administrator ordered this phone wiped (it is retired too): it sends what it holds,
    /// then is told to destroy its keys and store (docs/SECURITY.md, "Wiping a lost phone").
    pub wipe: bool,
}

/// Figures for `/metrics` read when Prometheus scrapes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorStats {
    pub quarantine_pending: i64,
    /// (bucket, active devices): `never_synced`, `nothing_pending`, `under_1h`, `1h_to_1d`,
    /// `1d_to_7d`, `over_7d` — the age of a device's oldest unsynced work, as it last reported it
    /// plus the time since.
    pub devices_by_unsynced_age: Vec<(&'static str, i64)>,
}

/// What the sync endpoints need from storage.
pub trait SyncStore: Send + Sync + 'static {
    fn redeem(&self, req: &EnrolRequest, now_ms: i64) -> Result<EnrolResponse>;
    fn authenticate(&self, token: &str) -> Result<Device>;
    fn sync(&self, device: &Device, req: SyncRequest, now_ms: i64) -> Result<SyncResponse>;
    /// The phone that holds `token` reports it destroyed its store, as a sync's `wipe_now` told
    /// it: its token stops working. Idempotent (a report whose answer was lost is sent again);
    /// refused with `NotAllowed` for a device the server never told to.
    fn report_wiped(&self, token: &str, now_ms: i64) -> Result<()>;
    /// How much of a blob the server holds, for a device uploading it for `owner` (one it may
    /// upload to) or one that may see the blob; anyone else hears `NotInScope`, whether the blob
    /// exists or not.
    fn blob_status(&self, device: &Device, sha256: &str, owner: Option<&BlobOwner>) -> Result<BlobStatus>;
    /// Starts receiving a request's bytes of a blob. The device must see `owner`; a blob the
    /// server already holds is linked to it at once ([`Begun::Complete`]).
    #[allow(clippy::too_many_arguments)]
    fn begin_blob(
        &self,
        device: &Device,
        sha256: &str,
        owner: &BlobOwner,
        offset: u64,
        total: u64,
        len: Option<u64>,
        now_ms: i64,
    ) -> Result<Begun>;
    /// Ends a request's upload; a blob it completed is recorded and linked to `owner`.
    fn end_blob(&self, device: &Device, owner: &BlobOwner, writer: Writer, now_ms: i64) -> Result<BlobStatus>;
    /// Scrape-time figures for `/metrics`.
    fn operator_stats(&self, now_ms: i64) -> Result<OperatorStats>;
    /// A complete blob, for a device that can see one of its owners.
    fn get_blob(&self, device: &Device, sha256: &str) -> Result<Vec<u8>>;
    /// The supervisor console's storage, when this store has one.
    fn console(&self) -> Option<&dyn ConsoleStore> {
        None
    }
}

/// What administrators (the `admin` commands, the demo and the tests) do to a store.
pub trait AdminStore: Send + Sync {
    /// The reference data devices receive now.
    fn current_catalog(&self) -> Arc<Catalog>;
    /// Replaces the reference data and bumps the catalog version.
    fn import_catalog(&self, catalog: &Catalog) -> Result<u64>;
    /// Adds (or updates) a person with a role and the scopes they may see (grids, communities,
    /// streets, departments; never `user:`, which everyone holds for their own reports).
    fn set_user(&self, user: &str, role: Role, department: Option<&str>, scopes: &[Scope]) -> Result<()>;
    /// Creates a device for `user` and returns (device id, one-time enrolment code).
    fn enrol_device(&self, user: &str, now_ms: i64) -> Result<(String, String)>;
    /// A worker leaves: the device may still push what it holds (until it reports nothing left),
    /// and receives nothing new. What it synced stays.
    fn retire_device(&self, device: &str, now_ms: i64) -> Result<()>;
    /// A lost phone: refused from now on; what it synced stays.
    fn revoke_device(&self, device: &str) -> Result<()>;
    /// A lost phone, wiped: on its next contact it sends everything it holds (it is retired,
    /// and receives nothing new), the server confirms it holds all of it, and the phone destroys
    /// its keys and store and reports it (docs/SECURITY.md, "Wiping a lost phone").
    fn wipe_device(&self, device: &str, now_ms: i64) -> Result<()>;
    /// Every device, the one sitting longest on unsynced work first.
    fn list_devices(&self, now_ms: i64) -> Result<Vec<DeviceInfo>>;
    fn quarantined(&self) -> Result<Vec<QuarantinedItem>>;
    /// An administrator accepts a quarantined item (`rules::push::release`).
    fn release_quarantined(&self, key: &str, now_ms: i64) -> Result<()>;
    /// An administrator rejects a quarantined item: it stays stored, marked, out of every scope.
    fn reject_quarantined(&self, key: &str) -> Result<()>;
    /// Devices older than this are told to upgrade (their pushes are still accepted).
    fn set_min_app_version(&self, version: &str) -> Result<()>;
    /// Number of applied changes, documents and records.
    fn counts(&self) -> Result<(i64, i64, i64)>;
    /// Current heads of a document as the server holds it (loads it: for tests and tools only).
    fn doc_heads(&self, doc_id: &str) -> Result<Vec<String>>;
    /// The documents a user's devices should hold: every case in one of the user's scopes.
    fn docs_in_scope(&self, user: &str) -> Result<Vec<String>>;
    /// The flags the server set on a case (outside_grid, retired_category, device_clock_skew…).
    fn doc_flags(&self, doc_id: &str) -> Result<Vec<String>>;
    /// A case's evidence bundle (`gridwork_model::bundle`): its history, signatures, devices'
    /// keys and chains, and photos, in one file anyone can verify with `gridwork-verify`.
    fn export_case(&self, case_id: &str, by: &str, now_ms: i64) -> Result<Vec<u8>>;
    /// How many complete blobs the server holds.
    fn blob_count(&self) -> Result<i64>;
    /// How many bytes of a blob this process received, over every request (tests and benches:
    /// a resumed upload receives each byte once).
    fn blob_bytes_received(&self, sha256: &str) -> u64;
}
