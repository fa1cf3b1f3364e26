//! The platform keystore's part: a [`KeyVault`] wraps the store key with a key that never leaves
//! the keystore (Android Keystore, iOS Secure Enclave / Keychain), so the store on disk is
//! readable only through that keystore — and unreadable for good once the vault destroys its key
//! (a wipe's crypto-shred, docs/SECURITY.md).
//!
//! The store key itself is 32 random bytes made here at the first open, kept next to the store
//! only wrapped (`store.key`). Everything else secret sits under it: the database (SQLCipher),
//! the evidence files (a key derived from it), and the device's signing key (in the encrypted
//! database's `meta`). So the vault wraps one key, and destroying the vault's key shreds all of
//! them, even where deleting a file on flash storage leaves its blocks behind.
//!
//! The apps implement [`KeyVault`] over their keystore (the bindings' foreign trait); the tests
//! and the demo use [`SoftwareVault`], which holds its key in memory.

use std::fs;
use std::path::Path;
use std::sync::Mutex;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::error::{io, CoreError, Result};

/// Where the wrapped store key is kept, in the store's directory.
pub const WRAPPED_KEY_FILE: &str = "store.key";

/// A key held by the platform keystore. Each call may block (a keystore may ask for the user's
/// presence); errors are the keystore's own words, shown to the user and logged.
pub trait KeyVault: Send + Sync {
    /// `plain` encrypted and authenticated under the vault's key.
    fn wrap(&self, plain: &[u8]) -> std::result::Result<Vec<u8>, String>;
    /// What [`KeyVault::wrap`] gave, decrypted; an error for anything else.
    fn unwrap(&self, wrapped: &[u8]) -> std::result::Result<Vec<u8>, String>;
    /// Destroys the vault's key for good: nothing it wrapped can be unwrapped again.
    fn destroy(&self) -> std::result::Result<(), String>;
}

/// The store key for the store in `dir`: unwrapped from `store.key`, or made and kept wrapped at
/// the first open. A directory holding a database but no wrapped key is refused (a new key would
/// not open it, and making one could hide that the old one is gone).
pub fn store_key(dir: &Path, vault: &dyn KeyVault) -> Result<Vec<u8>> {
    let path = dir.join(WRAPPED_KEY_FILE);
    match fs::read(&path) {
        Ok(wrapped) => {
            let key = vault.unwrap(&wrapped).map_err(|reason| CoreError::Vault { reason })?;
            if key.len() != 32 {
                return Err(CoreError::BadKeyLength { len: key.len() });
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if dir.join(crate::store::DB_FILE).exists() {
                return Err(CoreError::Vault {
                    reason: format!(
                        "{} holds a store but no wrapped key ({WRAPPED_KEY_FILE}): open it with the key it was made with",
                        dir.display()
                    ),
                });
            }
            fs::create_dir_all(dir).map_err(io(dir))?;
            let mut key = vec![0u8; 32];
            getrandom::fill(&mut key)
                .map_err(|e| CoreError::Vault { reason: format!("the system's random source failed: {e}") })?;
            let wrapped = vault.wrap(&key).map_err(|reason| CoreError::Vault { reason })?;
            crate::store::files::write_durably(&path, &path.with_extension("tmp"), &[&wrapped])?;
            Ok(key)
        }
        Err(e) => Err(io(&path)(e)),
    }
}

/// A vault whose key lives in this process's memory (tests, the demo, a desktop tool). It
/// protects nothing on a real phone: there the app passes its keystore's vault.
pub struct SoftwareVault {
    key: Mutex<Option<[u8; 32]>>,
}

impl SoftwareVault {
    /// A vault with a fresh random key.
    pub fn generate() -> Result<SoftwareVault> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)
            .map_err(|e| CoreError::Vault { reason: format!("the system's random source failed: {e}") })?;
        Ok(SoftwareVault::from_key(key))
    }

    /// A vault over a known key (a test that reopens a store in a new vault instance).
    pub fn from_key(key: [u8; 32]) -> SoftwareVault {
        SoftwareVault { key: Mutex::new(Some(key)) }
    }

    fn cipher(&self) -> std::result::Result<XChaCha20Poly1305, String> {
        let key = self.key.lock().unwrap_or_else(|p| p.into_inner());
        let key = key.as_ref().ok_or("the vault's key was destroyed")?;
        XChaCha20Poly1305::new_from_slice(key).map_err(|e| e.to_string())
    }
}

impl std::fmt::Debug for SoftwareVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareVault").finish_non_exhaustive()
    }
}

impl KeyVault for SoftwareVault {
    fn wrap(&self, plain: &[u8]) -> std::result::Result<Vec<u8>, String> {
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(|e| e.to_string())?;
        let sealed = self.cipher()?.encrypt(&XNonce::from(nonce), plain).map_err(|_| "encryption failed".to_owned())?;
        Ok([&nonce[..], &sealed].concat())
    }

    fn unwrap(&self, wrapped: &[u8]) -> std::result::Result<Vec<u8>, String> {
        if wrapped.len() < 24 {
            return Err("the wrapped key is too short".into());
        }
        let (nonce, sealed) = wrapped.split_at(24);
        let nonce = XNonce::try_from(nonce).map_err(|_| "the wrapped key's nonce is malformed".to_owned())?;
        self.cipher()?
            .decrypt(&nonce, sealed)
            .map_err(|_| "the wrapped key was not made by this vault, or was changed".to_owned())
    }

    fn destroy(&self) -> std::result::Result<(), String> {
        let mut key = self.key.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = key.as_mut() {
            k.fill(0);
        }
        *key = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_key_is_made_once_kept_wrapped_and_unreadable_once_the_vault_is_destroyed() {
        let dir = tempfile::tempdir().expect("dir");
        let vault = SoftwareVault::from_key([7; 32]);
        let key = store_key(dir.path(), &vault).expect("made");
        assert_eq!(store_key(dir.path(), &SoftwareVault::from_key([7; 32])).expect("again"), key);
        let wrapped = fs::read(dir.path().join(WRAPPED_KEY_FILE)).expect("kept");
        assert!(!wrapped.windows(32).any(|w| w == key.as_slice()), "kept wrapped, never in the clear");
        // Another vault's key cannot unwrap it; a destroyed vault unwraps nothing.
        assert!(matches!(store_key(dir.path(), &SoftwareVault::from_key([8; 32])), Err(CoreError::Vault { .. })));
        vault.destroy().expect("destroyed");
        assert!(matches!(store_key(dir.path(), &vault), Err(CoreError::Vault { .. })));
    }

    #[test]
    fn a_store_without_its_wrapped_key_is_refused_not_given_a_new_one() {
        let dir = tempfile::tempdir().expect("dir");
        fs::write(dir.path().join(crate::store::DB_FILE), b"a store").expect("db");
        let e = store_key(dir.path(), &SoftwareVault::from_key([7; 32])).expect_err("refused");
        assert!(e.to_string().contains("no wrapped key"), "{e}");
        assert!(!dir.path().join(WRAPPED_KEY_FILE).exists(), "no key made over an existing store");
    }
}
