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
use std::sync::Arc;

use super::Device;
use crate::error::Result;
use crate::records::CheckIn;
use gridwork_model::search::TermMatch;

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

/// A record to store.
#[derive(Debug, Clone)]
pub struct NewRecord<'a> {
    pub id: &'a str,
    pub device_id: &'a str,
    pub received_ms: i64,
    pub body: &'a str,
    pub check_in: Option<CheckIn<'a>>,
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

/// A device as the store keeps it, for administrators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRow {
    pub id: String,
    pub code: String,
    pub user: String,
    /// pending, active or revoked.
    pub status: String,
    pub last_seen_ms: Option<i64>,
    /// The state it last reported, as JSON.
    pub last_state: Option<String>,
    pub retired_ms: Option<i64>,
    pub drained_ms: Option<i64>,
    /// It registered a signing key at enrolment (every change and record of it is signed).
    pub signs: bool,
    /// An administrator ordered it wiped; the server told it to destroy its store; it reported
    /// it did (then its status is `wiped`).
    pub wipe_ordered_ms: Option<i64>,
    pub wipe_confirmed_ms: Option<i64>,
    pub wiped_ms: Option<i64>,
}

/// What evidence is linked to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobLinkOwner {
    Case(String),
    CheckIn(String),
}

/// A console queue's filters as the SQL tests them, resolved by the rules (`rules::console`):
/// the person's area already spelled out as scopes, an area filter as the scopes it stands for,
/// days as milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueQuery {
    /// Cases in one of these scopes (`None`: every case; an administrator).
    pub visible: Option<Vec<String>>,
    /// And in one of these (an area filter).
    pub area: Option<Vec<String>>,
    pub category: Option<String>,
    /// Dispatched to this department.
    pub department: Option<String>,
    /// Dispatched or in progress with a queue key below this (a deadline passed).
    pub overdue_below: Option<String>,
    pub reported_from_ms: Option<i64>,
    pub reported_before_ms: Option<i64>,
    /// Counts per status ignore it; rows and pins honour it.
    pub status: Option<String>,
    /// And holding every one of these search terms (`model::search`, schema 12).
    pub terms: Vec<TermMatch>,
}

impl QueueQuery {
    /// Nothing but the person's area limits the cases (the counts can come from membership alone).
    pub fn area_only(&self) -> bool {
        self.visible.is_some()
            && self.area.is_none()
            && self.category.is_none()
            && self.department.is_none()
            && self.overdue_below.is_none()
            && self.reported_from_ms.is_none()
            && self.reported_before_ms.is_none()
            && self.terms.is_empty()
    }
}

/// Which rows of the queue a page holds: keyset paging on the queue key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueuePage {
    /// Rows after this key, ascending.
    pub after: Option<String>,
    /// Rows before this key, returned descending (the page before).
    pub before: Option<String>,
    /// At most this many rows.
    pub limit: u32,
    /// Rows skipped first (a page number typed in, with neither key): an offset, so it costs what
    /// it skips; the previous and next links go on by key.
    pub skip: u32,
    /// How many cases match (from the counts): lets a backend choose its plan.
    pub matching: i64,
}

/// A stored case's row as the queue lists it, with its queue key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRow {
    pub doc_id: String,
    pub code: String,
    pub title: String,
    pub status: String,
    pub grid_id: String,
    pub category_id: String,
    pub reporter: String,
    pub reported_ms: Option<i64>,
    pub deadline_ms: Option<i64>,
    /// As stored: `,a,b,`.
    pub departments: String,
    /// As stored: `a,b`.
    pub flags: String,
    pub queue_key: String,
}

/// A console account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleAccount {
    pub password_hash: String,
    pub failed_attempts: i64,
    pub locked_until_ms: i64,
}

/// A person as the administration page lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonRow {
    pub id: String,
    /// As stored.
    pub role: String,
    pub department: Option<String>,
    pub has_password: bool,
}

/// A case a worker reported, for their assessment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedCase {
    pub doc_id: String,
    pub status: String,
    pub deadline_ms: Option<i64>,
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
    /// What a case's stored row says.
    fn case_row(&self, doc_id: &str) -> Result<Option<CaseRowNow>>;

    // Devices, people and reference data.

    /// The device a token hash belongs to, with its status (pending, active, revoked).
    fn device_by_token_hash(&self, token_hash: &str) -> Result<Option<(String, Device)>>;
    /// Every enrolled phone (not the console's pseudo-devices), by id.
    fn devices(&self) -> Result<Vec<DeviceRow>>;
    fn device_row(&self, id: &str) -> Result<Option<DeviceRow>>;
    fn user_exists(&self, user: &str) -> Result<bool>;
    /// The scopes granted to `user` directly (not the grids their areas hold).
    fn granted_scopes(&self, user: &str) -> Result<BTreeSet<String>>;
    /// Which grids are placed in which community or street now: (scope, grid).
    fn placements(&self) -> Result<BTreeSet<(String, String)>>;
    /// The catalog as stored, with its version.
    fn catalog(&self) -> Result<gridwork_model::catalog::Catalog>;

    // Evidence, quarantine, figures.

    /// What a blob is linked to.
    fn blob_owners(&self, sha256: &str) -> Result<Vec<BlobLinkOwner>>;
    /// The user whose device recorded a record.
    fn record_user(&self, record_id: &str) -> Result<Option<String>>;
    fn blob_count(&self) -> Result<i64>;
    fn quarantine_list(&self) -> Result<Vec<super::QuarantinedItem>>;
    fn pending_quarantine(&self) -> Result<i64>;
    /// (applied changes, cases, records).
    fn counts(&self) -> Result<(i64, i64, i64)>;
    /// Every lifecycle event stored for a case, as JSON.
    fn case_events(&self, doc_id: &str) -> Result<Vec<String>>;
    /// (sequence number, document) of the applied changes after `seq`, in order, at most `limit`:
    /// what the search index has not seen yet.
    fn changes_after(&self, seq: i64, limit: usize) -> Result<Vec<(i64, String)>>;
    /// Cases whose escalation rules are due at or before `now_ms` (schema 13), soonest first.
    fn escalation_due_by(&self, now_ms: i64, limit: usize) -> Result<Vec<String>>;
    /// Cases waiting past their deadline at `now_ms` (schema 14's facts): in these grids (`None`:
    /// anywhere), or those a department has not done (`department`).
    fn overdue_count(&self, grids: Option<&[String]>, department: Option<&str>, now_ms: i64) -> Result<i64>;
    /// The overview's facts of a period and an area, grouped (schema 14, `rules::overview`).
    fn overview_facts(&self, q: &crate::rules::overview::FactsQuery) -> Result<crate::rules::overview::FactRows>;

    // The console's reads (`rules::console`).

    /// A person's role (as stored) and department.
    fn person(&self, user: &str) -> Result<Option<(String, Option<String>)>>;
    /// Every person, by role and id.
    fn people(&self) -> Result<Vec<PersonRow>>;
    /// The console account of a person who is not a worker.
    fn console_account(&self, user: &str) -> Result<Option<ConsoleAccount>>;
    /// (user, CSRF token) of the session a token hash stands for, unless it expired by `now_ms`.
    fn console_session(&self, token_hash: &str, now_ms: i64) -> Result<Option<(String, String)>>;
    /// The grids placed in a community or street now, as `grid:` scopes.
    fn grids_placed_in(&self, area: &str) -> Result<Vec<String>>;
    /// Whether the server holds a case of this id whose report arrived (it has a title).
    fn case_reported(&self, doc_id: &str) -> Result<bool>;
    /// A case's flags (as stored) and when its first change arrived.
    fn case_flags_and_received(&self, doc_id: &str) -> Result<(String, Option<i64>)>;
    fn blob_held(&self, sha256: &str) -> Result<bool>;
    /// (status, cases) over the query, ignoring its status.
    fn queue_counts(&self, q: &QueueQuery) -> Result<Vec<(String, i64)>>;
    /// A page of the queue in queue-key order (descending when `page.before` is set), at most
    /// `page.limit` rows.
    fn queue_rows(&self, q: &QueueQuery, page: &QueuePage) -> Result<Vec<QueueRow>>;
    /// Cases with a position: open ones first, then the newest; at most `limit`.
    fn map_pins(&self, q: &QueueQuery, limit: u32) -> Result<Vec<super::console::MapPin>>;
    /// A grid's check-ins on a district day, in time order.
    fn check_ins_on(&self, grid: &str, day: &str) -> Result<Vec<super::console::CheckInView>>;
    /// Every worker with the scopes granted to them.
    fn workers(&self) -> Result<Vec<(String, Vec<String>)>>;
    /// Cases `reporter` reported in [from_ms, to_ms).
    fn reported_by(&self, reporter: &str, from_ms: i64, to_ms: i64) -> Result<Vec<ReportedCase>>;
    /// How many check-ins `user` made in [from_ms, to_ms).
    fn check_in_count(&self, user: &str, from_ms: i64, to_ms: i64) -> Result<i64>;
    /// The links of `device`'s chain at places `lo..=hi`: (seq, link hash, prev).
    fn chain_links_between(&self, device: &str, lo: i64, hi: i64) -> Result<Vec<(i64, String, String)>>;
    /// Every link the server holds for `key` (a change hash or record id), any device's.
    fn links_of(&self, key: &str) -> Result<Vec<StoredLink>>;
    /// `device`'s links at places `lo..=hi`, in place order.
    fn chain_segment(&self, device: &str, lo: i64, hi: i64) -> Result<Vec<StoredLink>>;
    /// The case's events whose wall clock was off: (event id, off_ms).
    fn clock_flags_of_case(&self, doc_id: &str) -> Result<Vec<(String, i64)>>;
    /// How many of `user`'s events and check-ins in [from_ms, to_ms) had a wall clock off.
    fn clock_flag_count(&self, user: &str, from_ms: i64, to_ms: i64) -> Result<i64>;
    /// The boots the server knows of `device`.
    fn device_boots(&self, device: &str) -> Result<Vec<BootRow>>;
    /// Every device's chain, summed up.
    fn chain_summaries(&self) -> Result<Vec<ChainSummary>>;
    /// Whether the server holds a link of `device` at every place `1..=head`: all a phone whose
    /// last link is at `head` ever signed (what a wipe waits for).
    fn chain_held_through(&self, device: &str, head: i64) -> Result<bool>;
}

/// A boot of a device as the server knows it (schema 11): its true start, learnt from a sync in
/// it, or else the start its first stamp seen implied (wall clock minus time since boot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootRow {
    pub boot_id: String,
    pub start_ms: Option<i64>,
    pub implied_ms: Option<i64>,
}

/// An event or check-in whose wall clock was off (`ClockStamp::wall_clock_error_ms`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockFlag {
    /// The event id or the record id.
    pub item: String,
    /// The case of an event; empty for a check-in.
    pub doc_id: String,
    pub device_id: String,
    pub user_id: String,
    /// Wall clock minus the true time.
    pub off_ms: i64,
    /// The true time of the moment.
    pub at_ms: i64,
}

/// A link of a device's signed chain, as the server keeps it (`gridwork_model::signing`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLink {
    pub device_id: String,
    pub seq: i64,
    pub link_hash: String,
    pub prev: String,
    pub sig: String,
    /// "change" or "record".
    pub kind: String,
    pub item_key: String,
    /// SHA-256 (hex) of the item's bytes as sent.
    pub sha256: String,
    /// "fork", or None.
    pub flag: Option<String>,
    pub at_ms: i64,
}

/// One device's chain, summed up for an administrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    pub device_id: String,
    pub links: i64,
    /// Distinct places held (a fork holds two links at one place).
    pub places: i64,
    pub highest: i64,
    pub forks: i64,
}

impl ChainSummary {
    /// Places below the highest that hold nothing: work of the device never received, or not yet.
    pub fn holes(&self) -> i64 {
        (self.highest - self.places).max(0)
    }
}

/// Writing: the primitives of a push, a release and the rules' bookkeeping, inside the backend's
/// write transaction. Sequence numbers come from [`WriteTx::next_seq`]: the backend guarantees
/// that a reader never sees a higher number committed before a lower one (docs/PROTOCOL.md,
/// "Cursors").
pub trait WriteTx: ReadTx {
    /// The next sequence number, in commit order.
    fn next_seq(&self) -> Result<i64>;
    /// Records events and check-ins whose wall clock was off (one already recorded stays).
    fn flag_clocks(&self, flags: &[ClockFlag]) -> Result<()>;
    /// Records boots: a true start keeps the smallest estimate; an implied start keeps the first.
    fn note_boots(&self, device: &str, boots: &[BootRow]) -> Result<()>;
    /// Stores links of devices' chains (a link already held is left as it is).
    fn put_links(&self, links: &[StoredLink]) -> Result<()>;
    /// A hint before a push: the hashes and documents it will ask about. A backend whose every
    /// statement is a round trip (PostgreSQL) looks them all up at once; others ignore it.
    fn prefetch(&self, hashes: &[&str], docs: &[&str]) -> Result<()> {
        let _ = (hashes, docs);
        Ok(())
    }
    fn whereabouts(&self, hash: &str) -> Result<Whereabouts>;

    /// The device an Automerge actor belongs to.
    fn actor_owner(&self, actor: &str) -> Result<Option<String>>;
    /// Gives an actor to a device, unless it is someone's already.
    fn register_actor(&self, actor: &str, device_id: &str, now_ms: i64) -> Result<()>;
    /// A console person's pseudo-device and its actor (nothing for what exists already).
    fn register_console_device(&self, id: &str, code: &str, user: &str, actor: &str, now_ms: i64) -> Result<()>;
    /// A failed sign-in: the count so far, and until when the account is locked (0: not).
    fn console_sign_in_failed(&self, user: &str, failed_attempts: i64, locked_until_ms: i64) -> Result<()>;
    /// A session opened: failures cleared, expired sessions gone, this one stored.
    fn open_console_session(
        &self,
        token_hash: &str,
        user: &str,
        csrf: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<()>;
    fn close_console_session(&self, token_hash: &str) -> Result<()>;
    /// Sets a console password hash, clearing failures and any lock.
    fn set_console_password(&self, user: &str, password_hash: &str, now_ms: i64) -> Result<()>;

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
    /// Where the case's `events` map is (its Automerge object id), once known.
    fn events_obj(&self, doc_id: &str) -> Result<Option<String>>;
    fn write_case_row(&self, row: &CaseRow<'_>) -> Result<()>;

    /// Adds a case to scopes at `seq` (grow-only: nothing happens for a scope it is in already).
    fn join_scopes(&self, doc_id: &str, scopes: &[&str], seq: i64, status: &str) -> Result<()>;
    /// The status every membership row of a case carries (the console counts by it).
    fn set_membership_status(&self, doc_id: &str, status: &str) -> Result<()>;
    /// Lists change `seq` of `doc_id` under `scope` for pulls.
    fn list_change(&self, scope: &str, seq: i64, doc_id: &str) -> Result<()>;

    /// Records, stored as their devices sent them (idempotent by id), with check-ins' facts: a
    /// push's records in one call (a patrol sends dozens of check-ins at once).
    fn store_records(&self, records: &[NewRecord<'_>]) -> Result<()>;

    /// When a device last synced and the state it reported.
    fn device_seen(&self, device_id: &str, now_ms: i64, state_json: &str) -> Result<()>;
    /// A retired device reported nothing left to send.
    fn device_drained(&self, device_id: &str, now_ms: i64) -> Result<()>;
    /// An idle sync's sighting, written later: never moves `last_seen_ms` back.
    fn device_seen_at_least(&self, device_id: &str, at_ms: i64, state_json: &str) -> Result<()>;

    fn set_meta(&self, key: &str, value: &str) -> Result<()>;
    /// A case's search terms are now exactly these (schema 12): the ones it lost are deleted.
    fn set_case_terms(&self, doc_id: &str, terms: &BTreeSet<String>) -> Result<()>;
    /// When the escalation rules next look at a case (`None`: only once it changes).
    fn set_escalation_due(&self, doc_id: &str, due_ms: Option<i64>) -> Result<()>;
    /// A case's overview facts are now these (`None`: it counts nowhere yet).
    fn set_case_facts(&self, doc_id: &str, facts: Option<&crate::rules::overview::CaseFacts>) -> Result<()>;
    /// Every case waiting on a department is looked at by the next run (the policy changed).
    fn recheck_waiting_cases(&self) -> Result<()>;
    /// A pending device whose enrolment code hashes to this.
    fn pending_device(&self, enrol_hash: &str) -> Result<Option<String>>;
    /// The enrolment code is used: the device is active with this token.
    fn activate_device(&self, id: &str, token_hash: &str, public_key: Option<&str>, now_ms: i64) -> Result<()>;
    fn code_taken(&self, code: &str) -> Result<bool>;
    fn insert_device(&self, id: &str, code: &str, user: &str, enrol_hash: &str, now_ms: i64) -> Result<()>;
    /// Marks an active device retired (keeping an earlier moment); false when no active device.
    fn retire_device(&self, id: &str, now_ms: i64) -> Result<bool>;
    /// false when there is no such device.
    fn revoke_device(&self, id: &str) -> Result<bool>;
    /// Orders an active device wiped (and retires it), keeping an earlier order; false when no
    /// active device.
    fn order_wipe(&self, id: &str, now_ms: i64) -> Result<bool>;
    /// The server told the device to destroy its store (the first time is kept).
    fn wipe_confirmed(&self, id: &str, now_ms: i64) -> Result<()>;
    /// The device reported it destroyed its store: its token stops working (stored as revoked
    /// with `wiped_ms`, read back as status `wiped`). False when it was never told to (a report
    /// before the confirmation is refused).
    fn device_wiped(&self, id: &str, now_ms: i64) -> Result<bool>;
    /// false when no pending item has this key.
    fn reject_quarantined(&self, key: &str) -> Result<bool>;

    fn upsert_user(&self, user: &str, role: &str, department: Option<&str>) -> Result<()>;
    fn grant_scope(&self, user: &str, scope: &str, seq: i64) -> Result<()>;
    fn remove_scope(&self, user: &str, scope: &str, seq: i64) -> Result<()>;
    /// Replaces grids, categories and departments (placements are the rules' business).
    fn replace_catalog(&self, catalog: &gridwork_model::catalog::Catalog) -> Result<()>;
    fn end_placement(&self, scope: &str, grid: &str, seq: i64) -> Result<()>;
    fn add_placement(&self, scope: &str, grid: &str, seq: i64) -> Result<()>;

    fn link_blob(&self, sha256: &str, size: u64, owner: &BlobLinkOwner, device_id: &str, now_ms: i64) -> Result<()>;
}

/// What a backend provides the rules: transactions over the port, group commit, and where
/// evidence blobs live. `SyncStore` and `AdminStore` are implemented once for every backend
/// (`rules::service`).
pub trait Backend: Send + Sync + 'static {
    /// The rules' view of this store: receipt key, epoch, places.
    fn rules(&self) -> crate::rules::push::Rules<'_>;
    fn blobs(&self) -> &Arc<crate::blobs::BlobFiles>;
    /// Runs `f` on one consistent snapshot.
    fn read(&self, f: &mut dyn FnMut(&dyn ReadTx) -> Result<()>) -> Result<()>;
    /// Runs `f`, which reads with one statement (a lookup needs no snapshot beyond its own), as
    /// cheaply as the backend can: on PostgreSQL outside a transaction, sparing two round trips.
    fn read_one(&self, f: &mut dyn FnMut(&dyn ReadTx) -> Result<()>) -> Result<()> {
        self.read(f)
    }
    /// As `read`, for a snapshot whose reads are all lookups by key (a device's pull): the
    /// backend may plan them once and by index.
    fn read_keyed(&self, f: &mut dyn FnMut(&dyn ReadTx) -> Result<()>) -> Result<()> {
        self.read(f)
    }
    /// Runs `f` in a write transaction, serialized with every other writer of the database, and
    /// commits when it returns `Ok` (nothing of it when it fails).
    fn write(&self, f: &mut dyn FnMut(&dyn WriteTx) -> Result<()>) -> Result<()>;
    /// A device's push, judged by `rules::push::push` in a write transaction (which the backend
    /// may share with other pushes: group commit).
    fn push(&self, job: crate::rules::push::PushJob) -> Result<Vec<gridwork_model::wire::ItemResult>>;
    /// An idle sync's sighting, which the backend may write later (with its next write).
    fn note_seen(&self, device_id: &str, now_ms: i64, state_json: String) -> Result<()>;
    /// Writes the sightings `note_seen` kept.
    fn flush_seen(&self) -> Result<()>;
    /// The catalog changed (after the transaction that stored it committed).
    fn catalog_changed(&self, catalog: gridwork_model::catalog::Catalog);
    /// One console change at a time in this process: two of one person's actor built on the same
    /// document would claim the same sequence number.
    fn console_writes(&self) -> &std::sync::Mutex<()>;
    /// The directory the server's TLS files are in (the data directory).
    fn tls_files(&self) -> Option<crate::tls::TlsFiles>;
}

/// Runs `f` through one of a backend's read entry points (`run`) and returns its result.
fn read_with<T>(
    run: impl FnOnce(&mut dyn FnMut(&dyn ReadTx) -> Result<()>) -> Result<()>,
    f: impl FnOnce(&dyn ReadTx) -> Result<T>,
) -> Result<T> {
    let mut f = Some(f);
    let mut out = None;
    run(&mut |tx| {
        if let Some(f) = f.take() {
            out = Some(f(tx)?);
        }
        Ok(())
    })?;
    out.ok_or_else(|| crate::error::ServerError::Internal("a read did not run".into()))
}

/// [`Backend::read`] with a result.
pub fn read<T>(b: &(impl Backend + ?Sized), f: impl FnOnce(&dyn ReadTx) -> Result<T>) -> Result<T> {
    read_with(|g| b.read(g), f)
}

/// [`Backend::read_one`] with a result.
pub fn read_one<T>(b: &(impl Backend + ?Sized), f: impl FnOnce(&dyn ReadTx) -> Result<T>) -> Result<T> {
    read_with(|g| b.read_one(g), f)
}

/// [`Backend::read_keyed`] with a result.
pub fn read_keyed<T>(b: &(impl Backend + ?Sized), f: impl FnOnce(&dyn ReadTx) -> Result<T>) -> Result<T> {
    read_with(|g| b.read_keyed(g), f)
}

/// [`Backend::write`] with a result.
pub fn write<T>(b: &(impl Backend + ?Sized), f: impl FnOnce(&dyn WriteTx) -> Result<T>) -> Result<T> {
    let mut f = Some(f);
    let mut out = None;
    b.write(&mut |tx| {
        if let Some(f) = f.take() {
            out = Some(f(tx)?);
        }
        Ok(())
    })?;
    out.ok_or_else(|| crate::error::ServerError::Internal("a write transaction did not run".into()))
}
