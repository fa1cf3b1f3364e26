//! The storage port: the primitives the server's rules (`crate::rules`) need from a database,
//! inside one transaction. A backend implements these with its SQL and holds no policy: who may
//! change what, what is quarantined, parked or refused, and what a pull sends are decided above
//! this line, once, for every backend (ADR 20). Modelled on matrix-rust-sdk's `StateStore`:
//! storage primitives only, each small enough to be obviously right in any SQL dialect.
//!
//! Scopes cross this port as their text form (`grid:g1`, `community:东风`, `user:w1`,
//! `department:police`, [`gridwork_model::access::Scope`]'s `Display`): it is what the tables
//! index, and the rules parse it where they reason about it.

use std::collections::{BTreeMap, BTreeSet};

use super::Device;
use crate::error::Result;
use crate::records::CheckIn;

/// Where a change already is on the server, by its hash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Whereabouts {
    /// Applied: (the device it is attributed to, its document).
    pub applied: Option<(String, String)>,
    /// Stored, waiting for the changes it builds on.
    pub parked: bool,
    /// Quarantined: (status — pending, released or rejected —, the device that sent it).
    pub quarantined: Option<(String, String)>,
}

/// A change stored until the changes it builds on arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedChange {
    pub hash: String,
    pub doc_id: String,
    /// The device it is attributed to.
    pub device_id: String,
    pub received_ms: i64,
    pub deps: Vec<String>,
    pub bytes: Vec<u8>,
    /// It came with the server's receipt (a relay): applied as `Vouch::Receipt` once unparked.
    pub vouched: bool,
}

/// An item an administrator must look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineEntry<'a> {
    pub key: &'a str,
    /// Empty for a record.
    pub doc_id: &'a str,
    pub device_id: &'a str,
    pub received_ms: i64,
    pub reason: &'a str,
    pub bytes: &'a [u8],
}

/// A quarantined item as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// Empty for a record.
    pub doc_id: String,
    /// The device that sent it.
    pub device_id: String,
    /// pending, released or rejected.
    pub status: String,
    pub bytes: Vec<u8>,
}

/// An applied change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChange<'a> {
    pub seq: i64,
    pub hash: &'a str,
    pub doc_id: &'a str,
    pub device_id: &'a str,
    pub received_ms: i64,
    pub bytes: &'a [u8],
}

/// What the server keeps of a case beside its changes: the columns the console lists, filters
/// and sorts by. `None` in an optional field keeps the stored value.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseRow<'a> {
    pub doc_id: &'a str,
    pub status: &'a str,
    pub deadline_ms: Option<i64>,
    /// Comma-separated, sorted.
    pub flags: String,
    /// As `departments_column` writes them.
    pub departments: String,
    pub reported_ms: Option<i64>,
    pub queue_key: String,
    pub grid_id: Option<&'a str>,
    pub category_id: Option<&'a str>,
    pub title: Option<&'a str>,
    pub code: Option<&'a str>,
    pub reporter: Option<&'a str>,
    pub position: Option<(f64, f64)>,
    /// Kept once set.
    pub events_obj: Option<&'a str>,
    pub updated_seq: i64,
}

/// What a case's stored row says, as the rules re-read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaseRowNow {
    pub category_id: Option<String>,
    pub flags: String,
    pub reported_ms: Option<i64>,
}

/// One change as a pull sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeBytes {
    pub bytes: Vec<u8>,
    pub hash: String,
    /// The device it is attributed to (a receipt names it).
    pub device_id: String,
}

/// Reading: what both a pull (on a snapshot) and a push (in the write transaction) ask.
pub trait ReadTx {
    /// The last sequence number committed (a cursor's upper bound).
    fn last_seq(&self) -> Result<i64>;
    fn meta(&self, key: &str) -> Result<Option<String>>;
    /// Every scope `user` holds now, each with the sequence number it was granted at (a community
    /// or street stands for itself and for each grid placed in it: `user_areas`).
    fn user_scopes(&self, user: &str) -> Result<BTreeMap<String, i64>>;
    /// The scopes a case is in, with the sequence number it joined each at.
    fn memberships(&self, doc_id: &str) -> Result<Vec<(String, i64)>>;
    /// The device that made the case's first stored change, when the server holds one.
    fn case_creator(&self, doc_id: &str) -> Result<Option<String>>;
    /// The device, with its user's role now (`None`: no such device).
    fn device(&self, id: &str) -> Result<Option<Device>>;
    /// The document an applied change belongs to, and its sequence number.
    fn change_doc_seq(&self, hash: &str) -> Result<Option<(String, i64)>>;

    // The pull planner's reads (`rules::pull`).

    /// Documents that joined one of `scopes` after `cursor` and hold a change some other device
    /// than `device` made, in `joined_seq` order, at most `limit` of them; or, with `at`, every one
    /// that joined at exactly that sequence number.
    fn joined_since(
        &self,
        cursor: i64,
        scopes: &[&str],
        device: &str,
        limit: usize,
        at: Option<i64>,
    ) -> Result<Vec<(String, i64)>>;
    /// Documents in `scope` that joined it at or before `seq`.
    fn docs_in_scope_by(&self, scope: &str, seq: i64) -> Result<Vec<String>>;
    /// Every document ever in `scope`.
    fn docs_in_scope(&self, scope: &str) -> Result<Vec<String>>;
    /// (sequence number, document) of changes listed under `scopes` after `cursor`, in order,
    /// at most `limit`.
    fn scope_changes_since(&self, cursor: i64, scopes: &[&str], limit: usize) -> Result<Vec<(i64, String)>>;
    /// Scopes `user` lost after `cursor`, with the grids a lost community or street held, and
    /// grids moved out of one of the user's areas since.
    fn scopes_lost_since(&self, user: &str, cursor: i64) -> Result<BTreeSet<String>>;
    /// Every scope `user` ever lost, with when: as `scopes_lost_since`, over all time.
    fn scopes_lost(&self, user: &str) -> Result<Vec<(String, i64)>>;
    /// How many changes of `doc_id` up to `seq` other devices than `device` made.
    fn others_changes_upto(&self, doc_id: &str, seq: i64, device: &str) -> Result<i64>;
    /// A document's changes up to `seq` (all of them with `i64::MAX`), in sequence order.
    fn history_upto(&self, doc_id: &str, seq: i64) -> Result<Vec<ChangeBytes>>;
    /// The change at `seq`, unless `device` made it.
    fn change_at(&self, seq: i64, not_by: &str) -> Result<Vec<ChangeBytes>>;
}

/// Writing: the primitives of a push, a release and the rules' bookkeeping, inside the backend's
/// write transaction. Sequence numbers come from [`WriteTx::next_seq`]: the backend guarantees
/// that a reader never sees a higher number committed before a lower one (docs/PROTOCOL.md,
/// "Cursors").
pub trait WriteTx: ReadTx {
    /// The next sequence number, in commit order.
    fn next_seq(&self) -> Result<i64>;
    fn whereabouts(&self, hash: &str) -> Result<Whereabouts>;

    /// The device an Automerge actor belongs to.
    fn actor_owner(&self, actor: &str) -> Result<Option<String>>;
    /// Gives an actor to a device, unless it is someone's already.
    fn register_actor(&self, actor: &str, device_id: &str, now_ms: i64) -> Result<()>;
    /// A console user's device of an earlier epoch, registered again in this one (`None`: no
    /// such console user).
    fn console_device_again(&self, epoch: &str, device_id: &str, now_ms: i64) -> Result<Option<Device>>;

    fn park(&self, change: &ParkedChange) -> Result<()>;
    fn any_parked(&self) -> Result<bool>;
    /// Parked changes of a document, oldest first.
    fn parked_in(&self, doc_id: &str) -> Result<Vec<ParkedChange>>;
    fn unpark(&self, hash: &str) -> Result<()>;

    /// Quarantines an item (nothing happens if it is quarantined already).
    fn quarantine(&self, entry: &QuarantineEntry<'_>) -> Result<()>;
    fn quarantined_item(&self, key: &str) -> Result<Option<Quarantined>>;
    fn set_quarantine_status(&self, key: &str, status: &str) -> Result<()>;

    /// Whether `actor` has made a change of `doc_id` the server stored, and the highest
    /// Automerge sequence number it used there.
    fn doc_actor(&self, doc_id: &str, actor: &str) -> Result<Option<i64>>;
    /// Records that `actor` made change `seq` of `doc_id` (keeping the highest).
    fn note_doc_actor(&self, doc_id: &str, actor: &str, seq: i64) -> Result<()>;

    fn store_change(&self, change: &StoredChange<'_>) -> Result<()>;
    /// Records a lifecycle event of a case (once per event id), as the change holds it.
    fn store_event(&self, doc_id: &str, event_id: &str, json: &str) -> Result<()>;
    /// Every lifecycle event stored for a case, as JSON.
    fn case_events(&self, doc_id: &str) -> Result<Vec<String>>;
    /// Where the case's `events` map is (its Automerge object id), once known.
    fn events_obj(&self, doc_id: &str) -> Result<Option<String>>;
    fn case_row(&self, doc_id: &str) -> Result<Option<CaseRowNow>>;
    fn write_case_row(&self, row: &CaseRow<'_>) -> Result<()>;

    /// Adds a case to a scope at `seq` (grow-only: nothing happens if it is in already).
    fn join_scope(&self, doc_id: &str, scope: &str, seq: i64, status: &str) -> Result<()>;
    /// The status every membership row of a case carries (the console counts by it).
    fn set_membership_status(&self, doc_id: &str, status: &str) -> Result<()>;
    /// Lists change `seq` of `doc_id` under `scope` for pulls.
    fn list_change(&self, scope: &str, seq: i64, doc_id: &str) -> Result<()>;

    /// A record, stored as the device sent it (idempotent by id), with a check-in's facts.
    fn store_record(
        &self,
        id: &str,
        device_id: &str,
        now_ms: i64,
        body: &str,
        check_in: Option<&CheckIn<'_>>,
    ) -> Result<()>;

    /// When a device last synced and the state it reported.
    fn device_seen(&self, device_id: &str, now_ms: i64, state_json: &str) -> Result<()>;
    /// A retired device reported nothing left to send.
    fn device_drained(&self, device_id: &str, now_ms: i64) -> Result<()>;
}
