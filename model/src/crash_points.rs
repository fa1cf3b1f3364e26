//! Named places where the chaos harness kills a server or a phone (issue 16), so that a crash
//! lands where it hurts most instead of wherever a timer happens to fall. The server and the
//! phone's core call [`reached`] at their points; one mechanism, here in the shared model.
//!
//! Built only with the `chaos-hooks` feature (the benchmark binary enables it; the server binary
//! and the apps' library do not, and there [`reached`] is an empty inline function). With it,
//! [`arm`]`(POINT, N)` makes the N-th arrival at `POINT` from then on abort the process on the
//! spot (the benchmark's server child arms a point when its parent writes `arm POINT N` to its
//! stdin; a phone child when it is started with one): no destructor runs, no buffer is flushed,
//! no transaction is rolled back — what the kernel holds of the files is what a restart finds,
//! as after `kill -9` or a power cut of the process.

/// The server's points, in the order a request meets them.
pub const SERVER_POINTS: &[&str] = &[
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

/// The phone's points.
pub const PHONE_POINTS: &[&str] = &[
    // A case is in the store's transaction (its change in the outbox), not committed.
    "phone-capture",
    // A photo's files are written and its change made, not committed.
    "phone-photo",
    // A sync's answer arrived and is not applied.
    "phone-sync-answered",
    // The answer is applied (acknowledgements, changes, cursor, a restored server's re-offer);
    // the sync goes on.
    "phone-sync-applied",
];

#[cfg(feature = "chaos-hooks")]
static PLAN: std::sync::Mutex<Option<(&'static str, u64)>> = std::sync::Mutex::new(None);
#[cfg(feature = "chaos-hooks")]
static ARMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Arms the point named `point` (one of [`SERVER_POINTS`] or [`PHONE_POINTS`]): its `nth` arrival from now aborts the
/// process. Returns false for a name that is not a point.
#[cfg(feature = "chaos-hooks")]
pub fn arm(point: &str, nth: u64) -> bool {
    let Some(name) = SERVER_POINTS.iter().chain(PHONE_POINTS).find(|p| **p == point) else { return false };
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
                std::process::abort();
            }
        }
    }
}

/// Without the `chaos-hooks` feature, nothing.
#[cfg(not(feature = "chaos-hooks"))]
#[inline(always)]
pub fn reached(_point: &'static str) {}
