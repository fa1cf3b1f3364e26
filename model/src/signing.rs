//! Device signatures and each device's hash chain.
//!
//! Every change and record a phone makes is a *link* of that device's chain: its place (`seq`,
//! 1, 2, 3, …), the hash of the link before it (`prev`), and an Ed25519 signature by the device's
//! own key over the link's statement (what, which bytes, after what). The server verifies the
//! signature against the public key registered at enrolment, and follows the chain: a signature
//! that does not verify is refused; a link that skips places (`Gap`) or a second link at a place
//! already taken (`Fork`: a phone restored from a backup, or cloned) is kept and flagged for an
//! administrator, never silently taken as the device's own history.
//!
//! The same statement is what an evidence bundle carries and `gridwork-verify` checks, so it is
//! defined once, here, byte for byte: see [`statement`].

use ring::signature::{UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a link signs over; bumped if the statement's layout ever changes.
pub const STATEMENT_VERSION: &str = "gridwork-link-v1";

/// A link of a device's chain, as it travels with a pushed change or record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// Place in the device's chain, from 1.
    pub seq: u64,
    /// [`link_hash`] of the link at `seq - 1`; empty for the first.
    #[serde(default)]
    pub prev: String,
    /// Ed25519 signature (base64) of [`statement`].
    pub sig: String,
}

/// Secret bytes (a private key) that never print.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretBytes(pub Vec<u8>);

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBytes({} bytes)", self.0.len())
    }
}

/// What a link is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkKind {
    /// An Automerge change of a case document; the key is the change hash.
    Change,
    /// A record (patrol start or finish, check-in); the key is the record id.
    Record,
}

impl LinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::Change => "change",
            LinkKind::Record => "record",
        }
    }
}

/// What the chain check found about one link. A *gap* is not a flag on a link: places below
/// the device's highest that hold nothing are counted when asked (`holes`), because a link held
/// back for a later request (a request's byte budget, a retry) fills its place minutes later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainFlag {
    /// The link does not continue the history the server holds: another link already holds its
    /// place, or the link before it (or after it) is a different one. Two phones share one key
    /// (a clone), or one phone went back to an earlier state and carried on.
    Fork,
}

impl ChainFlag {
    pub fn as_str(self) -> &'static str {
        match self {
            ChainFlag::Fork => "fork",
        }
    }

    pub fn parse(s: &str) -> Option<ChainFlag> {
        match s {
            "fork" => Some(ChainFlag::Fork),
            _ => None,
        }
    }
}

/// Lowercase hex of SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

/// The exact bytes a link's signature covers: the device, the link's place and predecessor, what
/// it is, its key, and the SHA-256 of the very bytes sent (the change's bytes, the record's JSON
/// text as sent). One field per line; none of them can hold a newline (ids, hex, decimal).
pub fn statement(device: &str, seq: u64, prev: &str, kind: LinkKind, key: &str, content: &[u8]) -> Vec<u8> {
    statement_for_digest(device, seq, prev, kind, key, &sha256_hex(content))
}

/// [`statement`] from the content's SHA-256 (hex) rather than its bytes: what an evidence bundle
/// checks for a link whose item it does not carry.
pub fn statement_for_digest(device: &str, seq: u64, prev: &str, kind: LinkKind, key: &str, sha256: &str) -> Vec<u8> {
    format!("{STATEMENT_VERSION}\ndevice {device}\nseq {seq}\nprev {prev}\n{} {key}\nsha256 {sha256}\n", kind.as_str())
        .into_bytes()
}

/// The hash the next link names as its `prev`.
pub fn link_hash(statement: &[u8]) -> String {
    sha256_hex(statement)
}

/// Why a link's signature does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the device's public key is not a 32-byte Ed25519 key in base64")]
    BadPublicKey,
    #[error("the signature is not base64")]
    NotBase64,
    #[error("the signature does not match what was sent: altered, or signed by another key")]
    Mismatch,
}

/// Checks `sig` (base64) over `statement` with `public_key` (base64 of the raw 32 bytes).
pub fn verify(public_key: &str, statement: &[u8], sig: &str) -> Result<(), SignatureError> {
    let key = decode_b64(public_key).filter(|k| k.len() == 32).ok_or(SignatureError::BadPublicKey)?;
    let sig = decode_b64(sig).ok_or(SignatureError::NotBase64)?;
    UnparsedPublicKey::new(&ED25519, key).verify(statement, &sig).map_err(|_| SignatureError::Mismatch)
}

/// Standard base64 (RFC 4648), padded or not: the `base64` crate the rest of the workspace uses.
const B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Decodes standard base64; None for anything else.
pub fn decode_b64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    B64.decode(text).ok()
}

/// Standard base64 with padding.
pub fn encode_b64(bytes: &[u8]) -> String {
    use base64::Engine;
    B64.encode(bytes)
}

/// The links the server already holds around a new link's place `seq`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Neighbours {
    /// Link hashes at `seq - 1` (several after a fork).
    pub below: Vec<String>,
    /// Link hashes at `seq`.
    pub at: Vec<String>,
    /// The `prev` of each link at `seq + 1`.
    pub above: Vec<String>,
}

/// What to do with a link whose signature verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainStep {
    /// Store it, flagged or not.
    Store(Option<ChainFlag>),
    /// This very link is stored already (a resend): nothing to do.
    Known,
}

/// The one chain rule, shared by every store: a link continues the history when nothing else
/// holds its place and it agrees with the links on either side that are known.
pub fn chain_step(seq: u64, prev: &str, hash: &str, n: &Neighbours) -> ChainStep {
    if n.at.iter().any(|h| h == hash) {
        return ChainStep::Known;
    }
    let below_agrees = if seq <= 1 { prev.is_empty() } else { n.below.is_empty() || n.below.iter().any(|h| h == prev) };
    let above_agrees = n.above.is_empty() || n.above.iter().any(|p| p == hash);
    if n.at.is_empty() && below_agrees && above_agrees {
        ChainStep::Store(None)
    } else {
        ChainStep::Store(Some(ChainFlag::Fork))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for n in 0..40u8 {
            let bytes: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37).wrapping_add(n)).collect();
            assert_eq!(decode_b64(&encode_b64(&bytes)).as_deref(), Some(&bytes[..]));
        }
        assert_eq!(encode_b64(b"gridwork"), "Z3JpZHdvcms=");
        assert_eq!(decode_b64("Z3Jp*"), None);
    }

    #[test]
    fn the_chain_rule() {
        let n = |below: &[&str], at: &[&str], above: &[&str]| Neighbours {
            below: below.iter().map(|s| s.to_string()).collect(),
            at: at.iter().map(|s| s.to_string()).collect(),
            above: above.iter().map(|s| s.to_string()).collect(),
        };
        let fork = ChainStep::Store(Some(ChainFlag::Fork));
        // The next link, the first link, a resend.
        assert_eq!(chain_step(6, "h5", "h6", &n(&["h5"], &[], &[])), ChainStep::Store(None));
        assert_eq!(chain_step(1, "", "h1", &n(&[], &[], &[])), ChainStep::Store(None));
        assert_eq!(chain_step(6, "h5", "h6", &n(&["h5"], &["h6"], &[])), ChainStep::Known);
        // A place taken by another link; a predecessor or successor that disagrees.
        assert_eq!(chain_step(6, "h5", "x6", &n(&["h5"], &["h6"], &[])), fork);
        assert_eq!(chain_step(6, "x5", "x6", &n(&["h5"], &[], &[])), fork);
        assert_eq!(chain_step(6, "h5", "x6", &n(&["h5"], &[], &["h6"])), fork);
        assert_eq!(chain_step(1, "h0", "h1", &n(&[], &[], &[])), fork);
        // A link arriving after its successor (held back by a byte budget) fills its place.
        assert_eq!(chain_step(6, "h5", "h6", &n(&["h5"], &[], &["h6"])), ChainStep::Store(None));
        // Ahead of what the server holds: a hole below, counted, not flagged.
        assert_eq!(chain_step(9, "h8", "h9", &n(&[], &[], &[])), ChainStep::Store(None));
    }
}
