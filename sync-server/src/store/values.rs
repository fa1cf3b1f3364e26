//! How values go into and come out of any store: random identifiers and secrets, the SHA-256
//! under which secrets are kept, JSON columns, and a stored role read back. One place, so the
//! backends and the rules agree on them.

use gridwork_model::catalog::Role;
use sha2::{Digest, Sha256};

use crate::error::{Result, ServerError};

/// `bytes` random bytes, as hex (identifiers, epochs, tokens, keys).
pub(crate) fn random_hex(bytes: usize) -> Result<String> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| ServerError::Internal(format!("no randomness: {e}")))?;
    Ok(hex::encode(b))
}

/// The SHA-256 of a text, as hex: how tokens and enrolment codes are stored.
pub(crate) fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// A value as a JSON column.
pub(crate) fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| ServerError::Internal(e.to_string()))
}

/// A role as stored (`Role::as_str`); another text means a damaged row.
pub(crate) fn stored_role(s: &str) -> Result<Role> {
    Role::parse(s).ok_or_else(|| ServerError::Internal(format!("stored role {s:?} is unknown")))
}
