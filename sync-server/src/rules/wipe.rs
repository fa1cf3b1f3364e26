//! Wiping a lost phone (docs/SECURITY.md, "Wiping a lost phone"; ADR 26): when the server may
//! tell a phone ordered wiped to destroy its store.
//!
//! Only once nothing it holds could be lost: the phone reports an empty outbox and no photo the
//! server has not confirmed, it sent nothing in this very request (what it sent is stored before
//! the answer, but its next report is what says nothing followed), and — for a phone that signs —
//! the server holds a link at every place of its chain up to the last one the phone made. The
//! chain is the server's own evidence, not the phone's word: a change or record held back, lost
//! in transit or never sent leaves a place empty, and the wipe waits.

use gridwork_model::wire::DeviceState;

use crate::error::Result;
use crate::store::port::{read, write, Backend};
use crate::store::Device;

/// Whether the answer to this request may say `wipe_now`. Records the confirmation when it may.
pub(crate) fn may_go_ahead(
    store: &(impl Backend + ?Sized),
    device: &Device,
    state: &DeviceState,
    nothing_sent: bool,
    now_ms: i64,
) -> Result<bool> {
    if !device.wipe || !nothing_sent || state.outbox_items != 0 || state.photos_pending != 0 {
        return Ok(false);
    }
    // A phone that registered a key signs everything: a report of no chain at all is not
    // believed if the server holds links of it (an old build that forgot `chain_head`).
    let head = state.chain_head;
    let whole = match (&device.public_key, head) {
        (None, _) => true,
        (Some(_), h) if h > 0 => read(store, |tx| tx.chain_held_through(&device.id, h))?,
        (Some(_), _) => !holds_links(store, &device.id)?,
    };
    if !whole {
        tracing::warn!(device = %device.id, head, "wipe waits: places of the phone's chain are missing");
        return Ok(false);
    }
    write(store, |tx| tx.wipe_confirmed(&device.id, now_ms))?;
    Ok(true)
}

fn holds_links(store: &(impl Backend + ?Sized), device: &str) -> Result<bool> {
    Ok(read(store, |tx| tx.chain_summaries())?.iter().any(|c| c.device_id == device && c.links > 0))
}
