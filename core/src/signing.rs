//! The device's signing key: an Ed25519 key made on the phone at enrolment, whose public half
//! the server registers with the device. Every change and record the store makes is signed with
//! it as a link of the device's chain (`gridwork_model::signing`), in the same transaction that
//! queues it, so nothing leaves the phone unsigned and nothing signed is ever lost.
//!
//! The key lives in the store (encrypted at rest with the store's key, which the platform
//! keystore holds); the app may wrap it further with a key of its keystore (see the bindings'
//! `DeviceKeyVault`). ring does the cryptography: already in the tree for TLS, and audited.

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

use gridwork_model::signing::{encode_b64, SecretBytes};

use crate::error::{CoreError, Result};

/// An Ed25519 key pair with its PKCS#8 form (what is stored).
pub struct DeviceKey {
    pkcs8: SecretBytes,
    pair: Ed25519KeyPair,
}

impl DeviceKey {
    /// A new key from the system's random source.
    pub fn generate() -> Result<DeviceKey> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| CoreError::BadDeviceKey { reason: "the system's random source failed".into() })?;
        DeviceKey::from_pkcs8(doc.as_ref())
    }

    /// A key from its PKCS#8 bytes (as [`DeviceKey::pkcs8`] gave them).
    pub fn from_pkcs8(bytes: &[u8]) -> Result<DeviceKey> {
        let pair = Ed25519KeyPair::from_pkcs8(bytes)
            .map_err(|e| CoreError::BadDeviceKey { reason: format!("not an Ed25519 PKCS#8 key: {e}") })?;
        Ok(DeviceKey { pkcs8: SecretBytes(bytes.to_vec()), pair })
    }

    pub fn pkcs8(&self) -> &SecretBytes {
        &self.pkcs8
    }

    /// The public key as the server registers it: base64 of its 32 bytes.
    pub fn public_key_b64(&self) -> String {
        encode_b64(self.pair.public_key().as_ref())
    }

    /// The signature of `message`, base64.
    pub fn sign_b64(&self, message: &[u8]) -> String {
        encode_b64(self.pair.sign(message).as_ref())
    }
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKey").field("public", &self.public_key_b64()).finish_non_exhaustive()
    }
}

impl PartialEq for DeviceKey {
    fn eq(&self, other: &Self) -> bool {
        self.pair.public_key().as_ref() == other.pair.public_key().as_ref()
    }
}

impl Eq for DeviceKey {}

#[cfg(test)]
mod tests {
    use super::*;
    use gridwork_model::signing::{statement, verify, LinkKind};

    #[test]
    fn a_signature_verifies_and_any_change_breaks_it() {
        let key = DeviceKey::generate().expect("key");
        let again = DeviceKey::from_pkcs8(&key.pkcs8().0).expect("reload");
        assert_eq!(key, again);
        let st = statement("d1", 1, "", LinkKind::Record, "r1", b"{\"a\":1}");
        let sig = key.sign_b64(&st);
        verify(&key.public_key_b64(), &st, &sig).expect("verifies");
        let altered = statement("d1", 1, "", LinkKind::Record, "r1", b"{\"a\":2}");
        assert!(verify(&key.public_key_b64(), &altered, &sig).is_err());
        let other = DeviceKey::generate().expect("key");
        assert!(verify(&other.public_key_b64(), &st, &sig).is_err());
        assert!(DeviceKey::from_pkcs8(b"not a key").is_err());
    }
}
