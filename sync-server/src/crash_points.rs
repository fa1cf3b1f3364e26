//! Named places where the chaos harness kills the server (issue 16), so that a crash lands
//! where it hurts most instead of wherever a timer happens to fall.
//!
//! Built only with the `chaos-hooks` feature (the benchmark binary's server enables it; the
//! `gridwork-sync-server` binary does not). With it, [`arm`]`(POINT, N)` makes the N-th arrival
//! at `POINT` from then on abort the process on the spot (the benchmark's server child arms a
//! point when its parent writes `arm POINT N` to its stdin): no destructor runs, no buffer is flushed,
//! no transaction is rolled back — what the kernel holds of the files is what a restart finds,
//! as after `kill -9` or a power cut of the process.

/// The points, in the order a request meets them.
pub const POINTS: &[&str] = &[
    // A pushed batch ran in the writer's transaction, which is not committed.
    "group-commit",
    // The batch is committed and no phone has heard so.
    "push-committed",
    // A pull read its snapshot; the answer is not sent.
    "pull",
    // Part of a photo is in the blob's partial file; the request is not answered.
    "blob-write",
    // A complete blob is fsynced and verified, not yet renamed into place.
    "blob-finish",
];

#[cfg(feature = "chaos-hooks")]
static PLAN: std::sync::Mutex<Option<(&'static str, u64)>> = std::sync::Mutex::new(None);
#[cfg(feature = "chaos-hooks")]
static ARMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Arms the point named `point` (one of [`POINTS`]): its `nth` arrival from now aborts the
/// process. Returns false for a name that is not a point.
#[cfg(feature = "chaos-hooks")]
pub fn arm(point: &str, nth: u64) -> bool {
    let Some(name) = POINTS.iter().find(|p| **p == point) else { return false };
    *PLAN.lock().unwrap_or_else(|p| p.into_inner()) = Some((name, nth.max(1)));
    ARMED.store(true, std::sync::atomic::Ordering::SeqCst);
    true
}

/// Called at each point; aborts the process when it is armed and its count is reached.
#[cfg(feature = "chaos-hooks")]
pub fn reached(point: &'static str) {
    if !ARMED.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let mut plan = PLAN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((name, left)) = plan.as_mut() {
        if *name == point {
            *left -= 1;
            if *left == 0 {
                eprintln!("crash point {point}: aborting");
                std::process::abort();
            }
        }
    }
}

/// Without the `chaos-hooks` feature, nothing.
#[cfg(not(feature = "chaos-hooks"))]
#[inline(always)]
pub fn reached(_point: &'static str) {}
