//! The server's own work between requests: following the change log (the case search index and
//! the escalation schedule, `rules::search`), then applying the escalation rules whose time has
//! come (`rules::escalation`). It runs on a timer in the serving process (`ServeOptions::upkeep`), off the
//! sync path, in small batches so a push never waits long for the writer.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::store::SyncStore;

/// Changes the index takes in per batch: a batch holds the writer for its terms only.
const INDEX_BATCH: usize = 500;

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Upkept {
    /// Cases (re)indexed for search.
    pub indexed: usize,
    /// Changes the search index has still not seen.
    pub index_behind: i64,
    /// What the escalation rules did.
    pub escalations: crate::rules::escalation::Ran,
}

/// One round: the search index takes in up to `batches` batches, then the escalation rules due
/// at `now_ms` run (as `instance`).
pub fn run_once(store: &dyn SyncStore, batches: usize, instance: &str, now_ms: i64) -> Result<Upkept> {
    let Some(console) = store.console() else { return Ok(Upkept::default()) };
    let mut done = Upkept::default();
    for _ in 0..batches.max(1) {
        let p = console.index_for_search(INDEX_BATCH)?;
        done.indexed += p.cases;
        done.index_behind = p.behind;
        if p.behind == 0 {
            break;
        }
    }
    done.escalations = console.run_escalations(instance, now_ms)?;
    Ok(done)
}

/// Runs a round every `every` until `stop` says so. A failed round is logged and tried again next
/// time: upkeep never stops the server.
pub async fn run(store: Arc<dyn SyncStore>, every: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    // Names this process to the other instances sharing the store (the escalation lease).
    let instance = crate::store::values::random_hex(6).unwrap_or_else(|_| format!("pid{}", std::process::id()));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let s = store.clone();
        let me = instance.clone();
        match tokio::task::spawn_blocking(move || run_once(s.as_ref(), 20, &me, crate::clock::now_ms())).await {
            Ok(Ok(u)) if u.indexed > 0 || u.escalations.applied > 0 => tracing::debug!(
                indexed = u.indexed,
                behind = u.index_behind,
                escalated = u.escalations.applied,
                "upkeep"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "upkeep failed; trying again next round"),
            Err(e) => tracing::warn!(error = %e, "upkeep task failed; trying again next round"),
        }
    }
}
