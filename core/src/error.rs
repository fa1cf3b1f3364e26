//! The core's error type: one enum, variants that say what went wrong with the data needed to
//! act on it. The FFI crate maps these to a few actionable variants, once.

use std::path::PathBuf;

use gridwork_model::ModelError;

use crate::evidence::EvidenceError;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("the store at {path} cannot be opened with this key (wrong key, or not a Gridwork store); the file was not changed")]
    WrongKey { path: PathBuf },
    #[error("the store was written by a newer app (schema {found}, this app knows {supported}): update the app")]
    NewerSchema { found: i64, supported: i64 },
    #[error("the store key must be 32 bytes, got {len}")]
    BadKeyLength { len: usize },
    #[error("the device signing key cannot be used ({reason}); enrol the phone again")]
    BadDeviceKey { reason: String },
    #[error("the platform keystore could not give the store key ({reason})")]
    Vault { reason: String },
    #[error("this phone's store was wiped at an administrator's order (device {device}{}): enrol the phone again to use it", if *reported { "" } else { "; the server has not heard of it yet: call report_wiped when online" })]
    Wiped { device: String, reported: bool },
    #[error("this phone has not reached the server for {offline_days} days: check in with the server (device status) before opening the store")]
    CheckInRequired { offline_days: u64 },
    #[error(transparent)]
    Invalid(#[from] ModelError),
    #[error("unknown category {category_id}: sync to refresh the catalogue")]
    UnknownCategory { category_id: String },
    #[error("category {category_id} is retired: choose another category")]
    RetiredCategory { category_id: String },
    #[error("unknown grid {grid_id}: sync to refresh the catalogue")]
    UnknownGrid { grid_id: String },
    #[error("unknown department {department_id}")]
    UnknownDepartment { department_id: String },
    #[error("unknown patrol point {point_id} in grid {grid_id}")]
    UnknownPoint { grid_id: String, point_id: String },
    #[error("no case {case_id} on this device")]
    UnknownCase { case_id: String },
    #[error("no patrol {patrol_id} on this device")]
    UnknownPatrol { patrol_id: String },
    #[error("patrol {patrol_id} is already finished: start a new patrol")]
    PatrolFinished { patrol_id: String },
    #[error("{kind} is not allowed for a {role} when the case is {from}: {reason}")]
    TransitionNotAllowed { kind: String, from: String, role: String, reason: String },
    #[error("nothing to change")]
    NothingToChange,
    #[error("case {case_id} is read-only on this phone: {reason}")]
    ReadOnlyCase { case_id: String, reason: String },
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
    #[error("evidence file {sha256} is missing or damaged: {reason}")]
    EvidenceFile { sha256: String, reason: String },
    #[error("photo {sha256} was removed from this device after the server confirmed it: download it from the server")]
    EvidenceEvicted { sha256: String },
    #[error("invalid page token: start the list again from the first page")]
    InvalidPageToken,
    #[error("received change bytes are not a valid Automerge change: {reason}")]
    BadChange { reason: String },
    #[error("network error talking to the sync server ({message}){}", if *retryable { "; it will be retried" } else { "" })]
    Network { message: String, retryable: bool },
    #[error(
        "the sync server is not the district's ({message}): check the server address and scan the enrolment code again"
    )]
    UntrustedServer { message: String },
    #[error("sync settings: {field}: {reason}")]
    InvalidConfig { field: String, reason: String },
    #[error("the sync server answered {status} {code}: {message}")]
    Server { status: u16, code: String, message: String },
    /// The phone's storage is full. Nothing of the action was stored (SQLite rolled the
    /// transaction back; a photo file written in part is removed), and nothing
    /// stored before was changed.
    #[error("the phone's storage is full ({detail}): nothing of this was saved; free some space (old photos, other apps) and try again")]
    StorageFull { detail: String },
    #[error("storage error: {0}")]
    Storage(rusqlite::Error),
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("stored document {doc_id} could not be loaded: {reason}")]
    CorruptDocument { doc_id: String, reason: String },
}

impl From<rusqlite::Error> for CoreError {
    fn from(e: rusqlite::Error) -> Self {
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            CoreError::StorageFull { detail: e.to_string() }
        } else {
            CoreError::Storage(e)
        }
    }
}

pub type Result<T, E = CoreError> = std::result::Result<T, E>;

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> CoreError {
    let path = path.into();
    move |source| {
        if matches!(source.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded) {
            CoreError::StorageFull { detail: format!("{}: {source}", path.display()) }
        } else {
            CoreError::Io { path, source }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_phone_is_storage_full_whether_sqlite_or_a_file_says_so() {
        let sqlite =
            rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL), Some("full".into()));
        assert!(matches!(CoreError::from(sqlite), CoreError::StorageFull { .. }));
        let file = io("evidence/x")(std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert!(matches!(file, CoreError::StorageFull { .. }), "{file}");
        assert!(file.to_string().contains("free some space"), "says what to do: {file}");
        let other = io("evidence/x")(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert!(matches!(other, CoreError::Io { .. }));
    }
}
