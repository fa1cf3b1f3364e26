//! gridwork-ffi: the Gridwork core as the Android and iOS apps see it, through UniFFI
//! (proc-macros only; Kotlin and Swift are generated from the built library).
//!
//! - [`GridworkStore`]: one object per device store: capture, lists, the lifecycle, photos,
//!   patrols, sync.
//! - Records ([`NewCase`], [`CaseSummary`], [`CaseDetail`], …) mirror the model in the shapes a
//!   UI wants; ids cross as strings (UUIDs) and times as Unix milliseconds.
//! - [`GridworkError`]: one error enum with few, actionable variants, converted from the core's
//!   rich errors in one place ([`From<CoreError>`]).
//!
//! Every call is blocking. `sync`, `capture_case` with photos and `attach_photo` take time (network,
//! photo processing): call them off the main thread (Dispatchers.IO, a Swift Task). Progress of a
//! sync arrives through [`SyncProgressListener`].

use std::sync::Arc;

use gridwork_core::evidence::{read_photo_file, EvidenceError};
use gridwork_core::model::catalog::Role;
use gridwork_core::model::geo::Location;
use gridwork_core::model::ids::{CaseId, CategoryId, DepartmentId, DeviceId, GridId, PointId, RecordId, UserId};
use gridwork_core::model::lifecycle::{EventKind, RejectReason, Status};
use gridwork_core::model::wire::EnrolmentCode;
use gridwork_core::store::{CaseQuery, CheckInInput};
use gridwork_core::sync::SyncConfig;
use gridwork_core::{CoreError, Identity, OpenOptions, Store};

uniffi::setup_scaffolding!();

/// The one error type the apps see.
#[derive(Debug, thiserror::Error, uniffi::Error)]
/// (Fields are never called `message`: Kotlin exceptions already have one.)
pub enum GridworkError {
    /// A case, patrol, photo or point the caller named does not exist on this device.
    #[error("not found: {what}")]
    NotFound { what: String },
    /// The caller passed something unusable; `field` names it, `reason` says what to change.
    #[error("invalid {field}: {reason}")]
    InvalidInput { field: String, reason: String },
    /// The action is not allowed for this user's role in the case's state; nothing was stored.
    #[error("not allowed: {reason}")]
    NotAllowed { reason: String },
    /// The store cannot be opened with this key; the file was not changed.
    #[error("wrong key: {detail}")]
    WrongKey { detail: String },
    /// The phone's storage failed (full, damaged, newer app's store); nothing partial was stored.
    #[error("storage: {detail}")]
    Storage { detail: String },
    /// The sync server could not be reached; `retryable` says whether trying later may help.
    #[error("network: {detail}")]
    Network { detail: String, retryable: bool },
    /// The server is not the district's (certificate not from the pinned CA).
    #[error("untrusted server: {detail}")]
    UntrustedServer { detail: String },
    /// The server refused the request (`code` is the protocol's error code).
    #[error("server refused ({code}): {detail}")]
    Server { status: u16, code: String, detail: String },
    /// The photo is damaged or cut short (a half-written file): take it again. Nothing stored.
    #[error("photo corrupt: {reason}")]
    PhotoCorrupt { reason: String },
    /// The photo's format is not accepted (`format`: "HEIC", "AVIF", "unknown"); `hint` says how
    /// to get one that is. Nothing stored.
    #[error("photo format {format} not supported: {hint}")]
    PhotoUnsupported { format: String, hint: String },
    /// The photo has more pixels than are accepted (a panorama, or a decompression bomb).
    #[error("photo too large: {megapixels} MP, at most {max_megapixels} MP")]
    PhotoTooLarge { megapixels: u64, max_megapixels: u64 },
    /// The photo file is empty (0 bytes): the camera app wrote nothing. Take it again.
    #[error("photo is empty")]
    PhotoEmpty,
    /// A photo file could not be used (missing, unreadable, or past the size read): `reason`
    /// says which. Nothing stored.
    #[error("photo file {path}: {reason}")]
    PhotoFile { path: String, reason: String },
    /// A case without a grid, whose fix does not settle one: let the person choose among these
    /// (nearest first; empty when no grid is within a kilometre). Nothing stored.
    #[error("choose the grid: the position does not settle it ({} nearby)", choices.len())]
    ChooseGrid { choices: Vec<GridChoice> },
    /// The app's [`KeyVault`] failed to give the store key (the keystore's own words).
    #[error("keystore: {detail}")]
    Vault { detail: String },
    /// The store was wiped at an administrator's order: show the phone as wiped (enrol again to
    /// use it). `reported` false: call [`report_wiped`] when online.
    #[error("wiped: {detail}")]
    Wiped { device: String, reported: bool, detail: String },
    /// The phone has not reached the server for longer than its offline limit: call
    /// [`device_status`], then open with `checked_in_ms` (see [`GridworkStore::open_with_vault`]).
    #[error("check in first: {detail}")]
    CheckInRequired { offline_days: u64, detail: String },
}

/// A photo problem as its own variant, so that an app can tell "take it again" from "convert
/// it" from "too large" without reading the message.
fn photo_error(e: EvidenceError) -> GridworkError {
    match e {
        EvidenceError::Empty => GridworkError::PhotoEmpty,
        EvidenceError::Corrupt { reason } => GridworkError::PhotoCorrupt { reason },
        EvidenceError::Unsupported { format } => GridworkError::PhotoUnsupported {
            format: format.into(),
            hint: "convert it to JPEG (on iOS: Settings → Camera → Formats → Most Compatible)".into(),
        },
        EvidenceError::UnknownFormat => GridworkError::PhotoUnsupported {
            format: "unknown".into(),
            hint: "attach a JPEG, PNG or WebP image".into(),
        },
        EvidenceError::TooManyPixels { megapixels, max_megapixels, .. } => {
            GridworkError::PhotoTooLarge { megapixels, max_megapixels }
        }
        EvidenceError::DecodeTooLarge { needed_mb, .. } => GridworkError::PhotoTooLarge {
            // The decode budget is 8 bytes a pixel.
            megapixels: (needed_mb << 20) / 8 / 1_000_000,
            max_megapixels: gridwork_core::evidence::MAX_PIXELS / 1_000_000,
        },
        EvidenceError::File { path, reason } => GridworkError::PhotoFile { path, reason },
        e @ EvidenceError::Encode { .. } => {
            GridworkError::InvalidInput { field: "photo".into(), reason: e.to_string() }
        }
    }
}

impl From<CoreError> for GridworkError {
    fn from(e: CoreError) -> Self {
        let message = e.to_string();
        let invalid = |field: &str| GridworkError::InvalidInput { field: field.into(), reason: message.clone() };
        match e {
            CoreError::WrongKey { .. } => GridworkError::WrongKey { detail: message },
            CoreError::BadKeyLength { .. } => invalid("key"),
            CoreError::BadDeviceKey { .. } => invalid("device_key"),
            CoreError::Vault { .. } => GridworkError::Vault { detail: message },
            CoreError::Wiped { device, reported } => GridworkError::Wiped { device, reported, detail: message },
            CoreError::CheckInRequired { offline_days } => {
                GridworkError::CheckInRequired { offline_days, detail: message }
            }
            CoreError::Evidence(e) => photo_error(e),
            CoreError::Invalid(_) | CoreError::NothingToChange => invalid("input"),
            CoreError::UnknownCategory { .. } | CoreError::RetiredCategory { .. } => invalid("category"),
            CoreError::UnknownGrid { .. } => invalid("grid"),
            CoreError::UnknownDepartment { .. } => invalid("department"),
            CoreError::UnknownPoint { .. } => invalid("point"),
            CoreError::InvalidPageToken => invalid("after"),
            CoreError::InvalidConfig { field, reason } => GridworkError::InvalidInput { field, reason },
            CoreError::UnknownCase { .. }
            | CoreError::UnknownPatrol { .. }
            | CoreError::EvidenceFile { .. }
            | CoreError::EvidenceEvicted { .. } => GridworkError::NotFound { what: message },
            CoreError::TransitionNotAllowed { .. }
            | CoreError::PatrolFinished { .. }
            | CoreError::ReadOnlyCase { .. } => GridworkError::NotAllowed { reason: message },
            CoreError::Network { retryable, .. } => GridworkError::Network { detail: message, retryable },
            CoreError::UntrustedServer { .. } => GridworkError::UntrustedServer { detail: message },
            CoreError::Server { status, code, message } => GridworkError::Server { status, code, detail: message },
            CoreError::NewerSchema { .. }
            | CoreError::BadChange { .. }
            | CoreError::Storage(_)
            | CoreError::StorageFull { .. }
            | CoreError::Io { .. }
            | CoreError::CorruptDocument { .. } => GridworkError::Storage { detail: message },
        }
    }
}

type Result<T> = std::result::Result<T, GridworkError>;

fn bad(field: &str, reason: impl Into<String>) -> GridworkError {
    GridworkError::InvalidInput { field: field.into(), reason: reason.into() }
}

fn case_id(id: &str) -> Result<CaseId> {
    CaseId::parse(id).map_err(|_| bad("case_id", format!("{id:?} is not a case id")))
}

fn record_id(field: &str, id: &str) -> Result<RecordId> {
    RecordId::parse(id).map_err(|_| bad(field, format!("{id:?} is not an id")))
}

/// What redeeming an enrolment code gave this phone. Keep it (the token is a secret: store it in
/// the Android Keystore / iOS Keychain) and pass it to [`GridworkStore::open`] and sync settings.
#[derive(Debug, Clone, uniffi::Record)]
pub struct Enrolment {
    pub server: String,
    pub ca_fingerprint: Option<String>,
    pub device_id: String,
    pub device_code: String,
    pub token: String,
    pub user: String,
    /// "worker", "supervisor", "department_handler" or "administrator".
    pub role: String,
    pub department: Option<String>,
    /// Other addresses of the same server (more instances of it), tried in order when `server`
    /// cannot be reached: pass them on in [`SyncSettings::alternates`].
    #[uniffi(default = [])]
    pub alternates: Vec<String>,
    /// The device's signing key (PKCS#8), made by [`enrol`] on this phone; a secret like the
    /// token (keep it in the Keystore/Keychain, or wrapped by a key that never leaves it).
    /// [`GridworkStore::open`] keeps it in the encrypted store at the first open; later opens
    /// may pass None. None from an enrolment made before signing: its work goes unsigned.
    #[uniffi(default = None)]
    pub device_key: Option<Vec<u8>>,
}

fn parse_role(s: &str) -> Result<Role> {
    Role::parse(s).ok_or_else(|| bad("role", format!("unknown role {s:?}")))
}

/// Redeems the text of a scanned enrolment code (`gridwork:enrol?server=…&code=…&ca=…`).
/// Blocking (network).
#[uniffi::export]
pub fn enrol(enrolment_code: String, app_version: String) -> Result<Enrolment> {
    let code = EnrolmentCode::parse(&enrolment_code).map_err(|r| bad("enrolment_code", r))?;
    let e = gridwork_core::sync::enrol(&code.server, &code.code, code.ca_fingerprint.as_deref(), &app_version)?;
    Ok(Enrolment {
        server: code.server,
        alternates: code.alternates,
        ca_fingerprint: code.ca_fingerprint,
        device_id: e.device_id,
        device_code: e.device_code,
        token: e.token,
        user: e.user,
        role: Role::as_str(e.role).into(),
        department: e.department,
        device_key: e.device_key.map(|k| k.0),
    })
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct GeoFix {
    pub lat: f64,
    pub lon: f64,
    pub accuracy_m: f64,
    /// "gps", "network", "fused", "manual"…
    pub provider: String,
    /// The OS flagged the fix as mocked; kept, never refused.
    pub mock: bool,
    pub fix_time_ms: i64,
}

impl From<&Location> for GeoFix {
    fn from(l: &Location) -> Self {
        GeoFix {
            lat: l.lat,
            lon: l.lon,
            accuracy_m: l.accuracy_m,
            provider: l.provider.clone(),
            mock: l.mock,
            fix_time_ms: l.fix_time_ms,
        }
    }
}

impl From<GeoFix> for Location {
    fn from(g: GeoFix) -> Self {
        let mut l = Location::gps(g.lat, g.lon, g.accuracy_m, g.fix_time_ms);
        l.provider = g.provider;
        l.mock = g.mock;
        l
    }
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct NewCase {
    pub title: String,
    pub description: String,
    pub category_id: String,
    /// `None`: the grid is found from `location` (`GridworkStore::grid_at`); when none can be
    /// chosen for the person, `GridworkError::ChooseGrid` offers the nearest.
    pub grid_id: Option<String>,
    pub location: GeoFix,
    /// Photos as the camera produced them (JPEG, PNG or WebP bytes).
    pub photos: Vec<Vec<u8>>,
}

/// Where a fix falls among the district's grids (`GridworkStore::grid_at`).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct GridAt {
    /// The grid to use, when one can be chosen for the person: the one the fix is inside, or
    /// the nearest within its accuracy (a worker on a boundary, a fix a few metres off).
    pub grid_id: Option<String>,
    /// The fix is inside `grid_id`'s boundary (false: only the nearest).
    pub inside: bool,
    /// Metres from the fix to `grid_id`'s boundary (0 inside).
    pub distance_m: f64,
    /// When no grid can be chosen: the nearest few within a kilometre, nearest first.
    pub choices: Vec<GridChoice>,
}

/// A grid offered to choose from.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct GridChoice {
    pub grid_id: String,
    pub name: String,
    /// Metres from the fix to its boundary (0 inside).
    pub distance_m: f64,
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct CaseSummary {
    pub id: String,
    /// Readable code the worker can quote offline, e.g. `K7Q2-0042`.
    pub code: String,
    pub title: String,
    /// "reported", "accepted", "rejected", "dispatched", "in_progress", "handled",
    /// "followed_up", "closed", or "contested" while concurrent decisions await a person.
    pub status: String,
    pub grid_id: String,
    pub category_id: String,
    pub reporter: String,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub deadline_ms: Option<i64>,
    pub overdue: bool,
    pub has_conflicts: bool,
    pub flags: Vec<String>,
}

impl From<gridwork_core::store::CaseSummary> for CaseSummary {
    fn from(c: gridwork_core::store::CaseSummary) -> Self {
        CaseSummary {
            id: c.id.to_string(),
            code: c.code,
            title: c.title,
            status: c.status,
            grid_id: c.grid_id,
            category_id: c.category_id,
            reporter: c.reporter,
            created_ms: c.created_ms,
            updated_ms: c.updated_ms,
            deadline_ms: c.deadline_ms,
            overdue: c.overdue,
            has_conflicts: c.has_conflicts,
            flags: c.flags,
        }
    }
}

/// A case list filter. Empty fields do not filter.
#[derive(Debug, Clone, Default, uniffi::Record)]
pub struct CaseFilter {
    pub statuses: Vec<String>,
    pub grid_id: Option<String>,
    pub category_id: Option<String>,
    pub assigned_to_me: bool,
    pub overdue: bool,
    /// Words or Chinese text in the title or description.
    pub text: Option<String>,
    /// Page size (1–500).
    pub limit: u32,
    /// `next` of the previous page.
    pub after: Option<String>,
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct CasePage {
    pub items: Vec<CaseSummary>,
    pub next: Option<String>,
}

/// A field whose concurrent edits stand side by side until a person chooses.
#[derive(Debug, Clone, uniffi::Record)]
pub struct FieldConflict {
    pub field: String,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct TimelineEntry {
    pub event_id: String,
    /// The event kind, e.g. "report", "dispatch", "note".
    pub kind: String,
    pub user: String,
    pub role: String,
    pub device: String,
    /// When the author's device recorded it (Unix ms).
    pub at_ms: i64,
    /// False for an event judged invalid in the state its author saw (kept, shown, flagged).
    pub valid: bool,
    /// The event's data as JSON, for display.
    pub detail_json: String,
}

/// What a photo's own metadata (EXIF) yielded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum PhotoMetadata {
    Read,
    /// Damaged or laid out against the standard: what could be read was kept.
    PartlyRead,
    /// Present, and nothing of it could be read.
    Unreadable,
    /// The file carried none.
    Absent,
    /// Recorded by an app from before this was kept.
    NotRecorded,
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct Photo {
    pub sha256: String,
    /// "photo", "voice_note" or "document".
    pub kind: String,
    pub mime: String,
    pub size: u64,
    /// The thumbnail, a file of its own: on every phone that holds the case after a sync.
    pub thumb_sha256: Option<String>,
    /// The stored photo's size in pixels, upright.
    pub width: u32,
    pub height: u32,
    /// The camera's capture time ("YYYY:MM:DD HH:MM:SS", local, no zone), when it wrote one.
    pub capture_time: Option<String>,
    /// The photo's own GPS position (WGS-84), when it carries one.
    pub gps_lat: Option<f64>,
    pub gps_lon: Option<f64>,
    /// Metres between the photo's own position and its report's fix, when both are known.
    pub gps_off_m: Option<u32>,
    /// The photo's own position is more than a kilometre from its report's fix: flag it.
    pub gps_far_from_fix: bool,
    /// What the photo's metadata yielded: say "no capture time in this photo" when absent.
    pub metadata: PhotoMetadata,
}

impl From<gridwork_core::model::evidence::EvidenceRef> for Photo {
    fn from(e: gridwork_core::model::evidence::EvidenceRef) -> Self {
        use gridwork_core::model::evidence::PhotoMetadata as M;
        // The kind's serde name ("photo", "voice_note", "document"), as the wire spells it.
        let kind = serde_json::to_value(e.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let gps_far_from_fix = e.exif_gps_far();
        Photo {
            sha256: e.sha256,
            kind,
            mime: e.mime,
            size: e.size,
            thumb_sha256: e.thumb_sha256,
            width: e.width,
            height: e.height,
            capture_time: e.exif_time,
            gps_lat: e.exif_gps.map(|g| g.0),
            gps_lon: e.exif_gps.map(|g| g.1),
            gps_off_m: e.exif_gps_off_m,
            gps_far_from_fix,
            metadata: match e.metadata {
                Some(M::Read) => PhotoMetadata::Read,
                Some(M::PartlyRead) => PhotoMetadata::PartlyRead,
                Some(M::Unreadable) => PhotoMetadata::Unreadable,
                Some(M::Absent) => PhotoMetadata::Absent,
                None => PhotoMetadata::NotRecorded,
            },
        }
    }
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct CaseDetail {
    pub summary_status: String,
    pub id: String,
    pub code: String,
    pub title: String,
    pub description: String,
    pub category_id: String,
    pub grid_id: String,
    pub location: GeoFix,
    pub reporter: String,
    pub created_ms: i64,
    pub overdue: bool,
    pub flags: Vec<String>,
    pub conflicts: Vec<FieldConflict>,
    pub timeline: Vec<TimelineEntry>,
    pub photos: Vec<Photo>,
    /// The server holds every change and every photo of this case. Never true while a photo is
    /// still only on this phone.
    pub synced: bool,
    /// This case's photos and thumbnails the server has not confirmed yet.
    pub photos_pending: u32,
    /// False when this user may not change the case (it left their area, or the district's write
    /// rule refuses them): show it read-only; edits and actions answer `NotAllowed`.
    pub editable: bool,
    /// Why the case is read-only, when it is.
    pub read_only_reason: Option<String>,
}

/// A lifecycle step. Whether the user's role may take it in the case's state is checked by the
/// core (the same role table the server applies).
#[derive(Debug, Clone, uniffi::Enum)]
pub enum CaseAction {
    Accept { note: String },
    RejectAsDuplicate { duplicate_of: Option<String>, note: String },
    RejectAsOutOfScope { note: String },
    Dispatch { department_ids: Vec<String>, deadline_ms: i64 },
    Start { department_id: String },
    HandlerReport { department_id: String, note: String },
    Note { text: String },
    FollowUp { satisfaction: u8, note: String },
    Close { note: String },
    SendBack { reason: String },
    Urge { note: String },
    Settle { chosen_event_id: String },
}

impl CaseAction {
    fn into_kind(self) -> Result<EventKind> {
        Ok(match self {
            CaseAction::Accept { note } => EventKind::Accept { note },
            CaseAction::RejectAsDuplicate { duplicate_of, note } => {
                EventKind::Reject { reason: RejectReason::Duplicate, duplicate_of, note }
            }
            CaseAction::RejectAsOutOfScope { note } => {
                EventKind::Reject { reason: RejectReason::OutOfScope, duplicate_of: None, note }
            }
            CaseAction::Dispatch { department_ids, deadline_ms } => EventKind::Dispatch {
                departments: department_ids.iter().map(|d| DepartmentId::from(d.as_str())).collect(),
                deadline_ms,
            },
            CaseAction::Start { department_id } => EventKind::Start { department: department_id.as_str().into() },
            CaseAction::HandlerReport { department_id, note } => {
                EventKind::HandlerReport { department: department_id.as_str().into(), note, evidence: vec![] }
            }
            CaseAction::Note { text } => EventKind::Note { text },
            CaseAction::FollowUp { satisfaction, note } => EventKind::FollowUp { satisfaction, note },
            CaseAction::Close { note } => EventKind::Close { note },
            CaseAction::SendBack { reason } => EventKind::Return { reason },
            CaseAction::Urge { note } => EventKind::Urge { note },
            CaseAction::Settle { chosen_event_id } => EventKind::Settle {
                chosen: gridwork_core::model::ids::EventId::parse(&chosen_event_id)
                    .map_err(|_| bad("chosen_event_id", "not an event id"))?,
            },
        })
    }
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct NewCheckIn {
    pub patrol_id: String,
    pub point_id: Option<String>,
    pub location: GeoFix,
    pub note: String,
    pub photo: Option<Vec<u8>>,
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct CheckInResult {
    pub id: String,
    pub grid_id: String,
    /// False when the fix lies outside the grid (kept and flagged for the supervisor).
    pub inside_grid: bool,
}

/// Where and how to sync.
#[derive(Debug, Clone, uniffi::Record)]
pub struct SyncSettings {
    pub server: String,
    pub token: String,
    pub ca_fingerprint: Option<String>,
    pub app_version: String,
    /// Days a closed or rejected case stays on the phone after the server confirmed it. The
    /// server keeps it; a later change to it brings it back.
    #[uniffi(default = 30)]
    pub keep_finished_cases_days: u32,
    /// Other addresses of the same server, from [`Enrolment::alternates`]: a sync that cannot
    /// reach `server` goes on with the next.
    #[uniffi(default = [])]
    pub alternates: Vec<String>,
}

#[derive(Debug, Clone, Copy, uniffi::Record)]
pub struct SyncProgress {
    pub round_trips: u32,
    pub pushed: u32,
    pub pulled_changes: u32,
    pub outbox_remaining: u32,
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct ItemOutcome {
    pub key: String,
    pub reason: String,
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct SyncReport {
    pub round_trips: u32,
    pub pushed: u32,
    pub accepted: u32,
    /// Kept on the server for an administrator; gone from the outbox.
    pub quarantined: Vec<ItemOutcome>,
    /// Not stored by the server; still in the outbox.
    pub refused: Vec<ItemOutcome>,
    pub pulled_changes: u32,
    pub pulled_cases: u32,
    pub left_scope: u32,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// This app version is below the district's minimum: ask the user to update.
    pub upgrade_required: bool,
    /// Photos and thumbnails the server confirmed during this sync.
    pub photos_uploaded: u32,
    /// Photos and thumbnails still waiting for the server (sent on a later sync).
    pub photos_pending: u32,
    /// An administrator retired this phone (its worker left): keep syncing until nothing is
    /// pending; it receives nothing new.
    pub retired: bool,
    /// Finished cases that left the phone after their retention days (the server keeps them).
    pub finished_cases_removed: u32,
    /// An administrator ordered this phone wiped; something is still to go: sync again.
    pub wipe_ordered: bool,
    /// The server confirmed it holds everything, and the store was destroyed: close this store
    /// and show the phone as wiped (with a raw key from [`GridworkStore::open`], delete that key).
    pub wiped: bool,
    /// The server heard of the wipe; if not, call [`report_wiped`] when online.
    pub wipe_reported: bool,
    /// The keystore failed to destroy its key during the wipe (its words): the store's files are
    /// gone all the same; delete the key yourself.
    pub wipe_vault_error: Option<String>,
    /// What waits for the person after this sync: the app's badge (see
    /// [`GridworkStore::needs_you`]).
    pub needs_you: Vec<NeedsYou>,
}

/// One line of "what needs you": `what` is `to_triage`, `to_dispatch`, `to_close`, `to_start`,
/// `to_report_back`, `to_follow_up`, `conflicts` or `overdue`.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct NeedsYou {
    pub what: String,
    pub count: u64,
}

fn needs(v: Vec<gridwork_core::store::NeedsYou>) -> Vec<NeedsYou> {
    v.into_iter().map(|n| NeedsYou { what: n.what.to_owned(), count: n.count }).collect()
}

impl SyncSettings {
    fn into_config(self) -> SyncConfig {
        let mut config = SyncConfig::new(self.server, self.token);
        config.alternates = self.alternates;
        config.ca_fingerprint = self.ca_fingerprint;
        config.app_version = self.app_version;
        config.keep_finished_cases =
            Some(std::time::Duration::from_secs(u64::from(self.keep_finished_cases_days) * 86_400));
        config
    }
}

/// The platform keystore, implemented by the app (android/README.md, ios/README.md): it wraps
/// the store key with a key that never leaves the keystore (Android Keystore AES-GCM, an iOS
/// Secure Enclave key), so that destroying that key — a wipe ordered by an administrator — makes
/// the store unreadable for good, whatever flash storage kept of its files.
#[uniffi::export(with_foreign)]
pub trait KeyVault: Send + Sync {
    /// `plain` encrypted and authenticated with the keystore's key.
    fn wrap_key(&self, plain: Vec<u8>) -> std::result::Result<Vec<u8>, VaultError>;
    /// What `wrap_key` gave, decrypted; an error for anything else.
    fn unwrap_key(&self, wrapped: Vec<u8>) -> std::result::Result<Vec<u8>, VaultError>;
    /// Deletes the keystore's key for good.
    fn destroy_key(&self) -> std::result::Result<(), VaultError>;
}

/// A [`KeyVault`] failure, in the keystore's words.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum VaultError {
    #[error("keystore: {detail}")]
    Keystore { detail: String },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for VaultError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        VaultError::Keystore { detail: e.reason }
    }
}

/// The app's vault as the core's.
struct ForeignVault(Arc<dyn KeyVault>);

impl gridwork_core::vault::KeyVault for ForeignVault {
    fn wrap(&self, plain: &[u8]) -> std::result::Result<Vec<u8>, String> {
        self.0.wrap_key(plain.to_vec()).map_err(|e| e.to_string())
    }
    fn unwrap(&self, wrapped: &[u8]) -> std::result::Result<Vec<u8>, String> {
        self.0.unwrap_key(wrapped.to_vec()).map_err(|e| e.to_string())
    }
    fn destroy(&self) -> std::result::Result<(), String> {
        self.0.destroy_key().map_err(|e| e.to_string())
    }
}

/// Where the device stands with the server ([`device_status`]).
#[derive(Debug, Clone, uniffi::Record)]
pub struct DeviceStatus {
    pub device_id: String,
    /// "active", "retired" or "wipe" (open the store and sync: the sync wipes it).
    pub status: String,
    /// Pass as `checked_in_ms` when opening the store.
    pub server_time_ms: i64,
}

/// Asks the server where this device stands: what an app does when opening the store said
/// `CheckInRequired`. A revoked or wiped device is `Server` 403. Blocking (network).
#[uniffi::export]
pub fn device_status(settings: SyncSettings) -> Result<DeviceStatus> {
    let s = gridwork_core::sync::device_status(&settings.into_config())?;
    Ok(DeviceStatus { device_id: s.device_id, status: s.status, server_time_ms: s.server_time_ms })
}

/// Tells the server a wiped store was destroyed, when the wiping sync could not (see
/// [`SyncReport::wipe_reported`], [`GridworkError::Wiped`]). Blocking (network).
#[uniffi::export]
pub fn report_wiped(dir: String, settings: SyncSettings) -> Result<()> {
    Ok(gridwork_core::sync::report_wiped(std::path::Path::new(&dir), &settings.into_config())?)
}

/// Receives sync progress, on the thread that called `sync`.
#[uniffi::export(with_foreign)]
pub trait SyncProgressListener: Send + Sync {
    fn on_progress(&self, progress: SyncProgress);
}

fn n(x: usize) -> u32 {
    u32::try_from(x).unwrap_or(u32::MAX)
}

/// The identity an enrolment gives the store.
fn identity(enrolment: Enrolment) -> Result<Identity> {
    Ok(Identity {
        user: UserId(enrolment.user),
        role: parse_role(&enrolment.role)?,
        device: DeviceId(enrolment.device_id),
        device_code: enrolment.device_code,
        department: enrolment.department.as_deref().map(DepartmentId::from),
        signing_key: match &enrolment.device_key {
            Some(k) => Some(Arc::new(gridwork_core::signing::DeviceKey::from_pkcs8(k)?)),
            None => None,
        },
    })
}

/// One device's encrypted store.
#[derive(Debug, uniffi::Object)]
pub struct GridworkStore {
    store: Store,
}

#[uniffi::export]
impl GridworkStore {
    /// Opens (creating) the store in `dir` with the 32-byte `key` (from the Android Keystore /
    /// iOS Keychain) for the enrolled device. A wrong key is `WrongKey`, and the file is left as
    /// it was. Put `dir` where backups do not reach (see android/README.md and ios/README.md).
    #[uniffi::constructor]
    pub fn open(dir: String, key: Vec<u8>, enrolment: Enrolment) -> Result<Arc<Self>> {
        let store = Store::open(OpenOptions::new(dir, &key, identity(enrolment)?))?;
        Ok(Arc::new(GridworkStore { store }))
    }

    /// Opens (creating) the store in `dir` with its key kept by the app's keystore: the store
    /// key is made at the first open and kept in `dir` only wrapped by `vault`; a wipe destroys
    /// the vault's key. `offline_limit_days` (0: none): past that long without reaching the
    /// server, opening says `CheckInRequired` until the app asked [`device_status`] and passes
    /// its `server_time_ms` as `checked_in_ms`.
    #[uniffi::constructor]
    pub fn open_with_vault(
        dir: String,
        vault: Arc<dyn KeyVault>,
        enrolment: Enrolment,
        offline_limit_days: u32,
        checked_in_ms: Option<i64>,
    ) -> Result<Arc<Self>> {
        let mut options = OpenOptions::with_vault(dir, Arc::new(ForeignVault(vault)), identity(enrolment)?)?;
        options.offline_limit =
            (offline_limit_days > 0).then(|| std::time::Duration::from_secs(u64::from(offline_limit_days) * 86_400));
        options.checked_in_ms = checked_in_ms;
        let store = Store::open(options)?;
        Ok(Arc::new(GridworkStore { store }))
    }

    /// Captures a case offline. Photos are processed here (decode, resize, strip metadata):
    /// blocking, about 100 ms per photo on a mid-range phone.
    // Not `case`: the name reaches the generated C header, where it is a keyword (the Swift
    // suite's C module failed to build).
    /// Which grid a fix falls in, for the capture screen (see [`GridAt`]).
    pub fn grid_at(&self, location: GeoFix) -> Result<GridAt> {
        use gridwork_core::model::places::GridMatch;
        let catalog = self.store.catalog();
        let name = |id: &GridId| catalog.grids.iter().find(|g| g.id == *id).map(|g| g.name.clone()).unwrap_or_default();
        Ok(match self.store.grid_at(&location.into())? {
            GridMatch::Inside(g) => GridAt { grid_id: Some(g.0), inside: true, distance_m: 0.0, choices: vec![] },
            GridMatch::Nearest { grid, distance_m } => {
                GridAt { grid_id: Some(grid.0), inside: false, distance_m, choices: vec![] }
            }
            GridMatch::Choose(c) => GridAt {
                grid_id: None,
                inside: false,
                distance_m: 0.0,
                choices: c
                    .into_iter()
                    .map(|(g, distance_m)| GridChoice { name: name(&g), grid_id: g.0, distance_m })
                    .collect(),
            },
        })
    }

    /// `capture_case` with the photos as the files the camera app wrote (paths, after those in
    /// `new_case.photos`): the core reads them in native memory, so a photo never crosses the
    /// app's heap (on a low-end phone's JVM, 3–8 MB `ByteArray`s risk an OutOfMemoryError).
    pub fn capture_case_from_files(&self, mut new_case: NewCase, photo_files: Vec<String>) -> Result<CaseSummary> {
        for path in &photo_files {
            new_case.photos.push(read_photo_file(std::path::Path::new(path)).map_err(photo_error)?);
        }
        self.capture_case(new_case)
    }

    /// `attach_photo` with the photo as the file the camera app wrote (see
    /// `capture_case_from_files`).
    pub fn attach_photo_file(&self, case_id: String, path: String) -> Result<Photo> {
        let photo = read_photo_file(std::path::Path::new(&path)).map_err(photo_error)?;
        self.attach_photo(case_id, photo)
    }

    pub fn capture_case(&self, new_case: NewCase) -> Result<CaseSummary> {
        let grid = match new_case.grid_id {
            Some(g) => GridId::from(g.as_str()),
            None => {
                let at = self.grid_at(new_case.location.clone())?;
                match at.grid_id {
                    Some(g) => GridId::from(g.as_str()),
                    None => return Err(GridworkError::ChooseGrid { choices: at.choices }),
                }
            }
        };
        let new = gridwork_core::store::NewCase {
            title: new_case.title,
            description: new_case.description,
            category: CategoryId::from(new_case.category_id.as_str()),
            grid,
            location: new_case.location.into(),
            photos: new_case.photos,
        };
        Ok(self.store.capture_case(new)?.into())
    }

    pub fn list_cases(&self, filter: CaseFilter) -> Result<CasePage> {
        let statuses = filter
            .statuses
            .iter()
            .filter(|s| s.as_str() != "contested")
            .map(|s| Status::parse(s).ok_or_else(|| bad("statuses", format!("unknown status {s:?}"))))
            .collect::<Result<Vec<_>>>()?;
        let q = CaseQuery {
            statuses,
            contested: filter.statuses.iter().any(|s| s == "contested"),
            grid: filter.grid_id.as_deref().map(GridId::from),
            category: filter.category_id.as_deref().map(CategoryId::from),
            assigned_to_me: filter.assigned_to_me,
            overdue: filter.overdue,
            text: filter.text,
            limit: if filter.limit == 0 { 50 } else { filter.limit as usize },
            after: filter.after,
            ..Default::default()
        };
        let page = self.store.list_cases(&q)?;
        Ok(CasePage { items: page.items.into_iter().map(Into::into).collect(), next: page.next })
    }

    pub fn get_case(&self, case_id: String) -> Result<CaseDetail> {
        let id = self::case_id(&case_id)?;
        let d = self.store.get_case(&id)?;
        let sync_state = self.store.case_sync_state(&id.to_string())?;
        let c = &d.case;
        let timeline = c
            .timeline
            .entries
            .iter()
            .map(|t| {
                let e = &t.event;
                // Events serialize as {"kind": …, …data}: the kind and its data for display.
                let detail = serde_json::to_value(&e.kind).unwrap_or_default();
                let kind = detail.get("kind").and_then(|k| k.as_str()).unwrap_or("unknown").to_owned();
                TimelineEntry {
                    event_id: e.id.to_string(),
                    kind,
                    user: e.actor.user.0.clone(),
                    role: Role::as_str(e.actor.role).into(),
                    device: e.actor.device.0.clone(),
                    at_ms: e.clock.device_ms,
                    valid: matches!(t.verdict, gridwork_core::model::lifecycle::Verdict::Applied),
                    detail_json: detail.to_string(),
                }
            })
            .collect();
        Ok(CaseDetail {
            summary_status: c.timeline.state.status.label().to_owned(),
            id: c.id.to_string(),
            code: c.code.clone(),
            title: c.title.value.clone(),
            description: c.description.clone(),
            category_id: c.category.value.0.clone(),
            grid_id: c.grid.value.0.clone(),
            location: GeoFix::from(&c.location.value),
            reporter: c.reporter.0.clone(),
            created_ms: c.created_ms,
            overdue: d.overdue,
            flags: d.flags.clone(),
            conflicts: c.conflicts().into_iter().map(|k| FieldConflict { field: k.field, values: k.values }).collect(),
            timeline,
            photos: c.evidence.iter().cloned().map(Photo::from).collect(),
            synced: sync_state.is_synced(),
            photos_pending: u32::try_from(sync_state.photos_pending).unwrap_or(u32::MAX),
            editable: d.read_only.is_none(),
            read_only_reason: d.read_only.clone(),
        })
    }

    /// Takes a lifecycle step; `NotAllowed` if the role may not take it in the case's state.
    pub fn act(&self, case_id: String, action: CaseAction) -> Result<CaseSummary> {
        Ok(self.store.record_event(&self::case_id(&case_id)?, action.into_kind()?)?.into())
    }

    /// Adds a photo to a case (blocking: processing).
    pub fn attach_photo(&self, case_id: String, photo: Vec<u8>) -> Result<Photo> {
        let e = self.store.attach_photo(&self::case_id(&case_id)?, &photo)?;
        Ok(e.into())
    }

    /// The stored (processed) bytes of a photo or thumbnail held on this phone; `NotFound` for
    /// one that is only on the server (taken by another phone): use `fetch_photo`.
    pub fn read_photo(&self, sha256: String) -> Result<Vec<u8>> {
        Ok(self.store.read_evidence(&sha256)?)
    }

    /// Frees space: removes full-size photos the server has confirmed it holds (thumbnails stay,
    /// and `fetch_photo` brings a photo back when it is opened). Returns the bytes freed.
    pub fn evict_confirmed_photos(&self) -> Result<u64> {
        Ok(self.store.evict_confirmed_photos()?.bytes)
    }

    /// A photo or thumbnail from this phone, or else downloaded from the server (which checks the
    /// user may see its case), verified against its SHA-256 and kept. Blocking (network).
    pub fn fetch_photo(&self, settings: SyncSettings, sha256: String) -> Result<Vec<u8>> {
        Ok(self.store.fetch_evidence(&settings.into_config(), &sha256)?)
    }

    pub fn start_patrol(&self, grid_id: String) -> Result<String> {
        Ok(self.store.start_patrol(&GridId::from(grid_id.as_str()))?.to_string())
    }

    /// `check_in` with its photo as the file the camera app wrote (see
    /// `capture_case_from_files`); replaces `check_in.photo`.
    pub fn check_in_with_file(&self, mut check_in: NewCheckIn, photo_file: String) -> Result<CheckInResult> {
        check_in.photo = Some(read_photo_file(std::path::Path::new(&photo_file)).map_err(photo_error)?);
        self.check_in(check_in)
    }

    pub fn check_in(&self, check_in: NewCheckIn) -> Result<CheckInResult> {
        let c = self.store.check_in(CheckInInput {
            patrol: record_id("patrol_id", &check_in.patrol_id)?,
            point: check_in.point_id.as_deref().map(PointId::from),
            location: check_in.location.into(),
            note: check_in.note,
            photo: check_in.photo,
        })?;
        Ok(CheckInResult { id: c.id.to_string(), grid_id: c.grid.0, inside_grid: c.inside_grid })
    }

    pub fn finish_patrol(&self, patrol_id: String) -> Result<()> {
        Ok(self.store.finish_patrol(&record_id("patrol_id", &patrol_id)?)?)
    }

    /// What waits for the person among the cases this phone holds, by what their role does next:
    /// the app's badge, offline as online (every sync reports it too).
    pub fn needs_you(&self) -> Result<Vec<NeedsYou>> {
        Ok(needs(self.store.needs_you()?))
    }

    /// Items waiting to be sent.
    pub fn outbox_len(&self) -> Result<u64> {
        Ok(self.store.outbox_len()? as u64)
    }

    /// Pushes what this device recorded and pulls what is new in its scope. Blocking (network):
    /// call it off the main thread. Nothing leaves the outbox until the server acknowledged it.
    pub fn sync(&self, settings: SyncSettings, listener: Option<Arc<dyn SyncProgressListener>>) -> Result<SyncReport> {
        let config = settings.into_config();
        let mut progress = |p: &gridwork_core::sync::SyncProgress| {
            if let Some(l) = &listener {
                l.on_progress(SyncProgress {
                    round_trips: n(p.round_trips),
                    pushed: n(p.pushed),
                    pulled_changes: n(p.pulled_changes),
                    outbox_remaining: n(p.outbox_remaining),
                });
            }
        };
        let r = self.store.sync(&config, &mut progress)?;
        let items = |v: Vec<(String, String)>| v.into_iter().map(|(key, reason)| ItemOutcome { key, reason }).collect();
        Ok(SyncReport {
            round_trips: n(r.round_trips),
            pushed: n(r.pushed),
            accepted: n(r.accepted),
            quarantined: items(r.quarantined),
            refused: items(r.refused),
            pulled_changes: n(r.pulled_changes),
            pulled_cases: n(r.pulled_docs),
            left_scope: n(r.left_scope),
            bytes_up: r.bytes_up,
            bytes_down: r.bytes_down,
            upgrade_required: r.upgrade_required,
            photos_uploaded: n(r.photos_uploaded),
            photos_pending: n(r.photos_pending),
            retired: r.retired,
            finished_cases_removed: n(r.finished_cases_removed),
            wipe_ordered: r.wipe_ordered,
            wiped: r.wiped.is_some(),
            wipe_vault_error: r.wiped.as_ref().and_then(|w| w.vault_error.clone()),
            needs_you: needs(r.needs_you),
            wipe_reported: r.wipe_reported,
        })
    }
}
