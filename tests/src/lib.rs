//! Shared pieces for Gridwork's end-to-end tests and the benchmark. The simulated district lives
//! with the demo (`gridwork-demo`, its own crate); it is re-exported here so the
//! tests use exactly what the demo runs.
//!
//! [`fuzz_targets`] holds the bodies of the cargo-fuzz targets in `fuzz/` (see fuzz/README.md).

pub mod chaos;
pub mod console_client;
pub mod fuzz_targets;
pub mod pg;

pub use gridwork_demo::sim::*;

/// A sync request as this version of the app sends it, pushing `changes` and `records` from
/// `cursor` and asking for pages of up to `max_pull_bytes`: for the tests and benchmarks that
/// speak the protocol directly rather than through `Store::sync`.
pub fn sync_request(
    changes: Vec<gridwork_core::model::wire::PushedChange>,
    records: Vec<gridwork_core::model::wire::PushedRecord>,
    cursor: Option<String>,
    max_pull_bytes: u64,
) -> gridwork_core::model::wire::SyncRequest {
    gridwork_core::model::wire::SyncRequest {
        protocol: gridwork_core::model::wire::PROTOCOL_VERSION,
        app_version: "0.1.0".into(),
        doc_schema: 1,
        cursor,
        state: gridwork_core::model::wire::DeviceState::default(),
        changes,
        records,
        want_full: vec![],
        accept_compacted: false,
        max_pull_bytes,
    }
}
