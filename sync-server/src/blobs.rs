//! Evidence blobs (photos and thumbnails) on the server's disk, uploaded in resumable chunks.
//!
//! A blob is named by the SHA-256 of its bytes, so the same photo from two phones is stored once
//! and a finished upload is checked against its name. An upload in progress is a file under
//! `partial/` whose length *is* the offset the server reports: nothing else has to agree with it.
//! A request's bytes are appended as they arrive, so a connection cut in the middle of a request
//! keeps what got through, and the phone resumes from there. Only a complete, verified blob is fsynced and renamed
//! into place. A finished upload whose bytes do not hash to its name is moved to `rejected/`,
//! never deleted, and the phone is told.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use gridwork_model::wire::{is_sha256_hex, BlobStatus};
use sha2::{Digest, Sha256};

use crate::error::{Result, ServerError};

/// The largest blob accepted. A processed photo is about 1 MB; an unprocessed 48-megapixel one
/// could be 20 MB.
pub const MAX_BLOB_BYTES: u64 = 25 * 1024 * 1024;

fn io(path: &Path) -> impl Fn(std::io::Error) -> ServerError + '_ {
    move |e| ServerError::io(path, e)
}

pub struct BlobFiles {
    dir: PathBuf,
    lock: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Blobs a request is writing now: appends to one partial file must never interleave.
    writing: HashSet<String>,
    /// Bytes received per blob since start.
    received: HashMap<String, u64>,
}

/// What [`BlobFiles::begin`] found.
#[derive(Debug)]
pub enum Begun {
    /// The server already holds the blob; nothing is written.
    Complete(BlobStatus),
    Open(Writer),
}

/// Receives one request's bytes of a blob, appending them as they arrive, so a request cut in
/// the middle keeps what got through. Finished with [`Writer::finish`]; dropped early, what it
/// wrote stays and the blob is free for the next request.
#[derive(Debug)]
pub struct Writer {
    files: Arc<BlobFiles>,
    sha256: String,
    partial: PathBuf,
    file: Option<fs::File>,
    offset: u64,
    total: u64,
}

impl Writer {
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Appends the next bytes; past the announced total is refused and nothing of it written.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let end = self.offset + bytes.len() as u64;
        if end > self.total {
            return Err(ServerError::PastEnd { end, total: self.total });
        }
        let file = self.file.as_mut().ok_or_else(|| ServerError::Internal("upload already finished".into()))?;
        file.write_all(bytes).map_err(io(&self.partial))?;
        gridwork_model::crash_points::reached("blob-write");
        self.offset = end;
        let mut state = self.files.lock.lock().unwrap_or_else(|p| p.into_inner());
        *state.received.entry(self.sha256.clone()).or_default() += bytes.len() as u64;
        Ok(())
    }

    /// Ends the request: at `total`, the blob is verified and stored (`complete`).
    pub fn finish(mut self) -> Result<BlobStatus> {
        let file = self.file.take();
        let sha256 = self.sha256.clone();
        if self.offset < self.total {
            return Ok(BlobStatus { sha256, offset: self.offset, total: Some(self.total), complete: false });
        }
        if let Some(f) = file {
            f.sync_all().map_err(io(&self.partial))?;
        }
        // No lock needed: this writer is the only one for the blob until it is dropped.
        self.files.finish(&sha256, &self.partial)?;
        Ok(BlobStatus { sha256, offset: self.total, total: Some(self.total), complete: true })
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let mut state = self.files.lock.lock().unwrap_or_else(|p| p.into_inner());
        state.writing.remove(&self.sha256);
    }
}

impl std::fmt::Debug for BlobFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobFiles").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl BlobFiles {
    pub fn open(data_dir: &Path) -> Result<Self> {
        let dir = data_dir.join("blobs");
        for d in [dir.clone(), dir.join("partial"), dir.join("rejected")] {
            fs::create_dir_all(&d).map_err(io(&d))?;
        }
        Ok(BlobFiles { dir, lock: Mutex::new(State::default()) })
    }

    fn check_name(sha256: &str) -> Result<()> {
        if is_sha256_hex(sha256) {
            Ok(())
        } else {
            Err(ServerError::BadRequest(format!("{sha256:?} is not a SHA-256 (64 lowercase hex digits)")))
        }
    }

    fn final_path(&self, sha256: &str) -> PathBuf {
        self.dir.join(sha256)
    }

    fn partial_path(&self, sha256: &str) -> PathBuf {
        self.dir.join("partial").join(sha256)
    }

    fn total_path(&self, sha256: &str) -> PathBuf {
        self.dir.join("partial").join(format!("{sha256}.total"))
    }

    fn len_of(path: &Path) -> Result<Option<u64>> {
        match fs::metadata(path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(path)(e)),
        }
    }

    fn announced_total(&self, sha256: &str) -> Result<Option<u64>> {
        let path = self.total_path(sha256);
        match fs::read_to_string(&path) {
            Ok(s) => Ok(s.trim().parse().ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn status_unlocked(&self, sha256: &str) -> Result<BlobStatus> {
        if let Some(len) = Self::len_of(&self.final_path(sha256))? {
            return Ok(BlobStatus { sha256: sha256.to_owned(), offset: len, total: Some(len), complete: true });
        }
        let offset = Self::len_of(&self.partial_path(sha256))?.unwrap_or(0);
        Ok(BlobStatus { sha256: sha256.to_owned(), offset, total: self.announced_total(sha256)?, complete: false })
    }

    /// How much of `sha256` the server holds.
    pub fn status(&self, sha256: &str) -> Result<BlobStatus> {
        Self::check_name(sha256)?;
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.status_unlocked(sha256)
    }

    /// Starts (or resumes) receiving `sha256` at `offset`, announced as `total` bytes long;
    /// `len`, when the request says, is how many bytes this request carries. A blob already
    /// stored answers [`Begun::Complete`] and nothing is written. One request at a time may write
    /// a blob: a second gets `WrongOffset` (it will find the offset moved) until the first ends.
    pub fn begin(self: &Arc<Self>, sha256: &str, offset: u64, total: u64, len: Option<u64>) -> Result<Begun> {
        Self::check_name(sha256)?;
        if total > MAX_BLOB_BYTES {
            return Err(ServerError::TooLarge { limit: MAX_BLOB_BYTES as usize });
        }
        let mut state = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let status = self.status_unlocked(sha256)?;
        if status.complete {
            return Ok(Begun::Complete(status));
        }
        if let Some(announced) = status.total {
            if announced != total {
                return Err(ServerError::BadRequest(format!(
                    "total {total} differs from the {announced} bytes announced by the upload in progress"
                )));
            }
        }
        if offset != status.offset || state.writing.contains(sha256) {
            return Err(ServerError::WrongOffset { offset, expected: status.offset });
        }
        if let Some(len) = len {
            if offset + len > total {
                return Err(ServerError::PastEnd { end: offset + len, total });
            }
        }
        if status.total.is_none() {
            let path = self.total_path(sha256);
            fs::write(&path, total.to_string()).map_err(io(&path))?;
        }
        let partial = self.partial_path(sha256);
        let file = fs::OpenOptions::new().create(true).append(true).open(&partial).map_err(io(&partial))?;
        // Several server instances may share this directory (ADR 21): the partial file is locked
        // while one request appends to it, and its length is read again under the lock, so two
        // instances never interleave appends and a resumed upload continues to the byte.
        if file.try_lock().is_err() {
            return Err(ServerError::WrongOffset { offset, expected: status.offset });
        }
        let now = file.metadata().map_err(io(&partial))?.len();
        if offset != now {
            return Err(ServerError::WrongOffset { offset, expected: now });
        }
        state.writing.insert(sha256.to_owned());
        Ok(Begun::Open(Writer {
            files: Arc::clone(self),
            sha256: sha256.to_owned(),
            partial,
            file: Some(file),
            offset,
            total,
        }))
    }

    /// Verifies a complete upload against its name and moves it into place.
    fn finish(&self, sha256: &str, partial: &Path) -> Result<()> {
        let mut hasher = Sha256::new();
        let mut f = fs::File::open(partial).map_err(io(partial))?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f.read(&mut buf).map_err(io(partial))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let actual = hex::encode(hasher.finalize());
        let total_file = self.total_path(sha256);
        if actual != sha256 {
            let millis = crate::clock::now_ms();
            let aside = self.dir.join("rejected").join(format!("{sha256}.{millis}"));
            fs::rename(partial, &aside).map_err(io(&aside))?;
            let _ = fs::remove_file(&total_file);
            return Err(ServerError::HashMismatch { expected: sha256.to_owned(), actual });
        }
        let target = self.final_path(sha256);
        gridwork_model::crash_points::reached("blob-finish");
        fs::rename(partial, &target).map_err(io(&target))?;
        fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir))?;
        let _ = fs::remove_file(&total_file);
        Ok(())
    }

    /// A stored blob's bytes.
    pub fn read(&self, sha256: &str) -> Result<Vec<u8>> {
        Self::check_name(sha256)?;
        let path = self.final_path(sha256);
        match fs::read(&path) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(ServerError::NotFound(format!("blob {sha256} (not uploaded, or not complete)")))
            }
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Bytes of `sha256` received since the server started (resent bytes count twice), so a test
    /// or an operator can see that a resumed upload did not start again from zero.
    pub fn bytes_received(&self, sha256: &str) -> u64 {
        self.lock.lock().unwrap_or_else(|p| p.into_inner()).received.get(sha256).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two server instances on one shared blob directory (two `BlobFiles`, as two processes
    /// would have): while one appends to a partial upload, the other refuses to, and after a cut
    /// the other resumes at the exact byte the first one reached.
    #[test]
    fn two_instances_never_interleave_appends_and_a_cut_upload_resumes_to_the_byte_on_the_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) =
            (Arc::new(BlobFiles::open(dir.path()).expect("a")), Arc::new(BlobFiles::open(dir.path()).expect("b")));
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let sha = hex::encode(Sha256::digest(&bytes));
        let total = bytes.len() as u64;
        let Ok(Begun::Open(mut on_a)) = a.begin(&sha, 0, total, None) else { panic!("a opens the upload") };
        on_a.write(&bytes[..4_000]).expect("a appends");
        assert!(
            matches!(b.begin(&sha, 4_000, total, None), Err(ServerError::WrongOffset { .. })),
            "b must not append while a holds the partial file"
        );
        // The request on a is cut: what arrived stays, and b resumes from exactly there.
        drop(on_a);
        assert!(matches!(b.begin(&sha, 3_999, total, None), Err(ServerError::WrongOffset { expected: 4_000, .. })));
        let Ok(Begun::Open(mut on_b)) = b.begin(&sha, 4_000, total, None) else { panic!("b resumes") };
        on_b.write(&bytes[4_000..]).expect("b appends the rest");
        let status = on_b.finish().expect("finish");
        assert!(status.complete);
        assert_eq!(a.read(&sha).expect("a reads what b finished"), bytes);
    }
}
