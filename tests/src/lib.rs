//! Shared pieces for Gridwork's end-to-end tests and the benchmark. The simulated district lives
//! with the demo in the sync server (`gridwork-sync-server demo`); it is re-exported here so the
//! tests use exactly what the demo runs.

pub use gridwork_sync_server::demo::sim::*;
