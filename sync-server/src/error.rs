//! The server's errors, each with the HTTP status and machine-readable code a client acts on.

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("missing or unknown device token: enrol the device again")]
    Unauthenticated,
    #[error("this device was revoked; its synced data stays on the server")]
    DeviceRevoked,
    #[error("unknown or already used enrolment code")]
    BadEnrolmentCode,
    #[error("protocol version {got} is newer than this server's {supported}: update the server")]
    ProtocolFromFuture { got: u32, supported: u32 },
    #[error("invalid request: {0}")]
    BadRequest(String),
    #[error("request body over {limit} bytes: send fewer changes per request")]
    TooLarge { limit: usize },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("storage error: {0}")]
    Storage(#[from] rusqlite::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServerError {
    /// (HTTP status, error code).
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            ServerError::Unauthenticated => (401, "unauthenticated"),
            ServerError::DeviceRevoked => (403, "device_revoked"),
            ServerError::BadEnrolmentCode => (403, "bad_enrolment_code"),
            ServerError::ProtocolFromFuture { .. } => (400, "protocol_unsupported"),
            ServerError::BadRequest(_) => (400, "bad_request"),
            ServerError::TooLarge { .. } => (413, "too_large"),
            ServerError::NotFound(_) => (404, "not_found"),
            ServerError::Storage(_) | ServerError::Internal(_) => (500, "internal"),
        }
    }
}

pub type Result<T, E = ServerError> = std::result::Result<T, E>;
