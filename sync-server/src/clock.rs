//! The server's one source of wall time.
//!
//! Nothing the server promises may depend on this clock running forward: sequence numbers and
//! epochs order the data, and wall time only stamps it (when a device was seen, when a session or
//! an enrolment code expires, when a backup was made). An operator's NTP can step it back; the
//! chaos harness does so on purpose (`step_by`, built only with the `chaos-hooks` feature) to
//! show that nothing is lost or reordered when it does.

use std::time::{SystemTime, UNIX_EPOCH};

#[cfg(feature = "chaos-hooks")]
static STEP_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Milliseconds since the Unix epoch (0 if the host clock reads before 1970).
pub fn now_ms() -> i64 {
    let host = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    #[cfg(feature = "chaos-hooks")]
    let host = host.saturating_add(STEP_MS.load(std::sync::atomic::Ordering::Relaxed));
    host
}

/// Steps this process's clock by `ms` (negative: back), as NTP would.
#[cfg(feature = "chaos-hooks")]
pub fn step_by(ms: i64) {
    STEP_MS.fetch_add(ms, std::sync::atomic::Ordering::Relaxed);
}
