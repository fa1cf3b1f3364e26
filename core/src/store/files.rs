//! Evidence files beside the database: encrypted, content-addressed, written before the
//! transaction that references them.
//!
//! Each file is named by the SHA-256 of the stored (processed, plaintext) bytes — the same name
//! the server will use — and holds `nonce(24) || XChaCha20-Poly1305(ciphertext + tag)` under a
//! key derived from the store key with HKDF, so the database key never encrypts two kinds of
//! data. A file is written to a temporary name, fsynced, renamed, and the directory fsynced:
//! after `put` returns, the bytes survive a crash. A crash between the file and the transaction
//! leaves an unreferenced file, which the next open moves aside (never deletes).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::Sha256;

use crate::error::{io, CoreError, Result};
use crate::evidence::sha256_hex;

const NONCE_LEN: usize = 24;

/// The encrypted file store.
pub(crate) struct EvidenceFiles {
    dir: PathBuf,
    aside: PathBuf,
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for EvidenceFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvidenceFiles").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl EvidenceFiles {
    pub(crate) fn open(store_dir: &Path, store_key: &[u8; 32]) -> Result<Self> {
        let dir = store_dir.join("evidence");
        let aside = store_dir.join("evidence-unreferenced");
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut key = [0u8; 32];
        hkdf::Hkdf::<Sha256>::new(Some(b"gridwork-evidence"), store_key)
            .expand(b"evidence-file-v1", &mut key)
            .map_err(|_| CoreError::BadKeyLength { len: store_key.len() })?;
        let cipher = XChaCha20Poly1305::new_from_slice(&key).map_err(|_| CoreError::BadKeyLength { len: key.len() })?;
        Ok(EvidenceFiles { dir, aside, cipher })
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(sha256)
    }

    /// Encrypts and durably writes `plain`, named by its hash. Idempotent.
    pub(crate) fn put(&self, plain: &[u8]) -> Result<String> {
        let sha = sha256_hex(plain);
        let path = self.path(&sha);
        if path.exists() {
            return Ok(sha);
        }
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce)
            .map_err(|e| CoreError::EvidenceFile { sha256: sha.clone(), reason: format!("no randomness: {e}") })?;
        let sealed = self
            .cipher
            .encrypt(&XNonce::from(nonce), plain)
            .map_err(|_| CoreError::EvidenceFile { sha256: sha.clone(), reason: "encryption failed".into() })?;
        write_durably(&path, &self.dir.join(format!(".{sha}.tmp")), &[&nonce, &sealed])?;
        Ok(sha)
    }

    /// Reads and decrypts a file, checking it still hashes to its name.
    pub(crate) fn get(&self, sha256: &str) -> Result<Vec<u8>> {
        let path = self.path(sha256);
        let bad = |reason: &str| CoreError::EvidenceFile { sha256: sha256.to_owned(), reason: reason.to_owned() };
        let bytes = fs::read(&path).map_err(|e| bad(&e.to_string()))?;
        if bytes.len() < NONCE_LEN {
            return Err(bad("file too short"));
        }
        let nonce = XNonce::try_from(&bytes[..NONCE_LEN]).map_err(|_| bad("bad nonce"))?;
        let plain = self.cipher.decrypt(&nonce, &bytes[NONCE_LEN..]).map_err(|_| bad("authentication failed"))?;
        if sha256_hex(&plain) != sha256 {
            return Err(bad("content does not match its hash"));
        }
        Ok(plain)
    }

    /// Removes a file the server has confirmed it holds (space reclaim, not error recovery).
    pub(crate) fn remove(&self, sha256: &str) -> Result<u64> {
        let path = self.path(sha256);
        let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        match fs::remove_file(&path) {
            Ok(()) => Ok(size),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(CoreError::Io { path, source: e }),
        }
    }

    /// Moves every file not in `referenced` aside. Returns how many were moved.
    pub(crate) fn sweep(&self, referenced: &std::collections::HashSet<String>) -> Result<usize> {
        let mut moved = 0;
        for entry in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let entry = entry.map_err(io(&self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if referenced.contains(&name) {
                continue;
            }
            fs::create_dir_all(&self.aside).map_err(io(&self.aside))?;
            let target = self.aside.join(&name);
            fs::rename(entry.path(), &target).map_err(io(&target))?;
            moved += 1;
        }
        Ok(moved)
    }
}

/// Writes `parts` to `path` so that a crash leaves the old file or the whole new one: written to
/// `tmp` (beside it), fsynced, renamed, and the directory fsynced (a rename is durable only once
/// the directory entry is). The evidence files, the wrapped store key and a wipe's tombstone.
pub(crate) fn write_durably(path: &Path, tmp: &Path, parts: &[&[u8]]) -> Result<()> {
    let written = fs::File::create(tmp).and_then(|mut f| {
        for p in parts {
            f.write_all(p)?;
        }
        f.sync_all()
    });
    if let Err(e) = written {
        // A half-written copy of bytes the caller still holds (nothing was acknowledged):
        // removed, so that a full disk gets its space back and the next try starts clean.
        let _ = fs::remove_file(tmp);
        return Err(io(tmp)(e));
    }
    fs::rename(tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    }
    Ok(())
}
