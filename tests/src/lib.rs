//! Shared pieces for Gridwork's end-to-end tests and the benchmark. The simulated district lives
//! with the demo in the sync server (`gridwork-sync-server demo`); it is re-exported here so the
//! tests use exactly what the demo runs.
//!
//! [`fuzz_targets`] holds the bodies of the cargo-fuzz targets in `fuzz/` (see fuzz/README.md).

pub mod chaos;
pub mod fuzz_targets;

pub use gridwork_sync_server::demo::sim::*;
