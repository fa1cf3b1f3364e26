//! Server storage. The HTTP layer talks to a [`SyncStore`]; [`SqliteStore`] is the embedded
//! default (one data directory). The SQL is kept portable for the PostgreSQL store to come.

mod sqlite;

pub use sqlite::{DeviceInfo, QuarantinedItem, SqliteStore};

use gridwork_model::wire::{EnrolRequest, EnrolResponse, SyncRequest, SyncResponse};

use crate::error::Result;

/// An authenticated device, as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub id: String,
    pub user: String,
    pub role: gridwork_model::catalog::Role,
    pub department: Option<String>,
}

/// What the sync endpoints need from storage.
pub trait SyncStore: Send + Sync + 'static {
    fn redeem(&self, req: &EnrolRequest, now_ms: i64) -> Result<EnrolResponse>;
    fn authenticate(&self, token: &str) -> Result<Device>;
    fn sync(&self, device: &Device, req: SyncRequest, now_ms: i64) -> Result<SyncResponse>;
}
