//! Server storage. The HTTP layer talks to a [`SyncStore`]; [`SqliteStore`] is the embedded
//! default (one data directory). The SQL is kept portable for the PostgreSQL store to come.

pub mod console;
pub mod port;
mod sqlite;

/// A record body as the server reads it (public for the fuzz targets in `gridwork-tests`).
pub use crate::records::RecordFacts;
pub use console::ConsoleStore;
pub use sqlite::{DeviceInfo, QuarantinedItem, SqliteStore};

use gridwork_model::wire::{BlobOwner, BlobStatus, EnrolRequest, EnrolResponse, SyncRequest, SyncResponse};

use crate::blobs::{Begun, Writer};
use crate::error::Result;

/// An authenticated device, as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub id: String,
    pub user: String,
    pub role: gridwork_model::catalog::Role,
    pub department: Option<String>,
    /// Retired (a worker left): may push what it holds, receives nothing new.
    pub retired: bool,
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
