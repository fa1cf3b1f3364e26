//! The server's errors, each with the HTTP status and machine-readable code a client acts on.

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("missing or unknown device token: enrol the device again")]
    Unauthenticated,
    #[error("this device was revoked; its synced data stays on the server")]
    DeviceRevoked,
    #[error("this device was retired: it may still send what it holds, and receives nothing")]
    DeviceRetired,
    #[error("this phone was wiped at an administrator's order: enrol it again to use it")]
    DeviceWiped,
    #[error("unknown or already used enrolment code")]
    BadEnrolmentCode,
    #[error("protocol version {got} is newer than this server's {supported}: update the server")]
    ProtocolFromFuture { got: u32, supported: u32 },
    #[error("invalid request: {0}")]
    BadRequest(String),
    #[error("cursor {cursor:?} was not issued by this server: sync again from the start (no cursor) and offer everything again")]
    CursorUnknown { cursor: String },
    #[error("{0}: send it as application/json")]
    UnsupportedMediaType(String),
    #[error("too many requests: {what}; try again in {retry_after_s} s")]
    RateLimited { what: &'static str, retry_after_s: u64 },
    #[error("the request took longer than {seconds} s to arrive: what arrived of an upload is kept, send the rest")]
    RequestTimeout { seconds: u64 },
    #[error("{0}")]
    Forbidden(String),
    #[error("the server is busy with other requests: try again in {retry_after_s} s")]
    Busy { retry_after_s: u64 },
    #[error("case {case_id} is damaged and cannot be shown ({reason}); it was sent by {senders}. Nothing was changed: an administrator can look at its changes in the store")]
    DamagedDocument { case_id: String, senders: String, reason: String },
    #[error("request body over {limit} bytes: send fewer changes per request")]
    TooLarge { limit: usize },
    #[error("{items} items in one request; at most {limit}: send fewer per request")]
    TooManyItems { items: usize, limit: usize },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("chunk at offset {offset}, but the server holds {expected} bytes: resume from {expected}")]
    WrongOffset { offset: u64, expected: u64 },
    #[error("chunk ends at byte {end}, past the announced total of {total}")]
    PastEnd { end: u64, total: u64 },
    #[error("the uploaded bytes hash to {actual}, not {expected}: upload the file again (the bad copy was set aside)")]
    HashMismatch { expected: String, actual: String },
    #[error("not in your scope: {0}")]
    NotInScope(String),
    #[error("wrong user name or password")]
    BadCredentials,
    #[error("too many wrong passwords: this account is locked for {minutes} more minutes, or until an administrator resets its password")]
    AccountLocked { minutes: i64 },
    #[error("the form has expired or did not come from this console: reload the page and try again")]
    CsrfMismatch,
    /// The action is not possible in the case's current state (the role may act, the state not).
    #[error("not allowed: {0}")]
    NotAllowed(String),
    /// The server's disk (or quota) is full. Nothing of the request was stored; the phone keeps
    /// everything in its outbox and tries again, as after any 5xx.
    #[error("the server's disk is full ({0}): nothing of this request was stored; try again later (an administrator must free space on the server's data directory)")]
    StorageFull(String),
    /// The database failed (the backend's own message; each backend converts its errors, a
    /// full disk to [`ServerError::StorageFull`]).
    #[error("storage error: {0}")]
    Storage(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServerError {
    /// (HTTP status, error code).
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            ServerError::Unauthenticated => (401, "unauthenticated"),
            ServerError::DeviceRevoked => (403, "device_revoked"),
            ServerError::DeviceRetired => (403, "device_retired"),
            ServerError::DeviceWiped => (403, "device_wiped"),
            ServerError::BadEnrolmentCode => (403, "bad_enrolment_code"),
            ServerError::ProtocolFromFuture { .. } => (400, "protocol_unsupported"),
            ServerError::BadRequest(_) => (400, "bad_request"),
            ServerError::CursorUnknown { .. } => (409, "cursor_unknown"),
            ServerError::UnsupportedMediaType(_) => (415, "unsupported_media_type"),
            ServerError::RateLimited { .. } => (429, "rate_limited"),
            ServerError::RequestTimeout { .. } => (408, "request_timeout"),
            ServerError::Forbidden(_) => (403, "forbidden"),
            ServerError::Busy { .. } => (503, "busy"),
            ServerError::DamagedDocument { .. } => (422, "damaged_document"),
            ServerError::TooLarge { .. } => (413, "too_large"),
            ServerError::TooManyItems { .. } => (413, "too_many_items"),
            ServerError::NotFound(_) => (404, "not_found"),
            ServerError::WrongOffset { .. } => (409, "wrong_offset"),
            ServerError::PastEnd { .. } => (400, "past_end"),
            ServerError::HashMismatch { .. } => (422, "hash_mismatch"),
            ServerError::NotInScope(_) => (403, "not_in_scope"),
            ServerError::BadCredentials => (401, "bad_credentials"),
            ServerError::AccountLocked { .. } => (429, "account_locked"),
            ServerError::CsrfMismatch => (403, "csrf"),
            ServerError::NotAllowed(_) => (409, "not_allowed"),
            ServerError::StorageFull(_) => (507, "storage_full"),
            ServerError::Storage(_) | ServerError::Internal(_) => (500, "internal"),
        }
    }
}

impl ServerError {
    /// A file operation's failure on `path`: a full disk is [`ServerError::StorageFull`] (507,
    /// retried by phones), anything else internal.
    pub fn io(path: &std::path::Path, e: std::io::Error) -> ServerError {
        if matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded) {
            ServerError::StorageFull(format!("{}: {e}", path.display()))
        } else {
            ServerError::Internal(format!("{}: {e}", path.display()))
        }
    }
}

pub type Result<T, E = ServerError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_507_storage_full_when_a_file_says_so() {
        let file = std::io::Error::from(std::io::ErrorKind::StorageFull);
        assert_eq!(ServerError::io(std::path::Path::new("blobs/x"), file).status_and_code(), (507, "storage_full"));
        // Anything else stays internal.
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(ServerError::io(std::path::Path::new("x"), denied).status_and_code(), (500, "internal"));
    }
}
