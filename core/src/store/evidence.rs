//! Evidence files over their life on the device: read, confirmed by a server, evicted, or
//! downloaded (a photo another phone took; `evicted` then means "on the server, not here").
//!
//! A full-size photo may leave the phone once a server has confirmed it holds the same bytes
//! (same SHA-256); its thumbnail always stays, so lists and timelines still show it.

use rusqlite::{params, OptionalExtension};

use super::Store;
use crate::error::{CoreError, Result};

/// What an eviction freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EvictionReport {
    pub files: usize,
    pub bytes: u64,
}

impl Store {
    /// Decrypted bytes of an evidence file (a stored photo or a thumbnail).
    pub fn read_evidence(&self, sha256: &str) -> Result<Vec<u8>> {
        let evicted: Option<bool> = self
            .reader()
            .query_row("SELECT evicted FROM evidence_files WHERE sha256 = ?1", [sha256], |r| r.get(0))
            .optional()?;
        if evicted == Some(true) {
            return Err(CoreError::EvidenceEvicted { sha256: sha256.to_owned() });
        }
        self.inner.files.get(sha256)
    }

    /// Stores a file downloaded from the server (its hash already checked) and marks it present.
    pub(crate) fn keep_downloaded(&self, sha256: &str, bytes: &[u8]) -> Result<()> {
        self.inner.files.put(bytes)?;
        self.writer().execute(
            "UPDATE evidence_files SET evicted = 0, server_confirmed = 1, size = ?2 WHERE sha256 = ?1",
            params![sha256, bytes.len() as i64],
        )?;
        Ok(())
    }

    /// Records that a server confirmed it holds these files. Returns how many were newly confirmed.
    pub fn confirm_evidence(&self, sha256s: &[String]) -> Result<usize> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        let mut n = 0;
        {
            let mut upd = tx.prepare_cached(
                "UPDATE evidence_files SET server_confirmed = 1 WHERE sha256 = ?1 AND server_confirmed = 0",
            )?;
            for sha in sha256s {
                n += upd.execute([sha])?;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    /// Removes full-size photos a server has confirmed; thumbnails stay.
    pub fn evict_confirmed_photos(&self) -> Result<EvictionReport> {
        let conn = self.writer();
        let shas: Vec<String> = conn
            .prepare("SELECT sha256 FROM evidence_files WHERE role = 'full' AND server_confirmed = 1 AND evicted = 0")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut report = EvictionReport::default();
        for sha in shas {
            // Mark first: a crash after the mark and before the unlink leaves an unreferenced-looking
            // file that a later eviction removes; the reverse order could leave a row pointing at
            // nothing while it still claims to be here.
            conn.execute("UPDATE evidence_files SET evicted = 1 WHERE sha256 = ?1", params![sha])?;
            report.bytes += self.inner.files.remove(&sha)?;
            report.files += 1;
        }
        Ok(report)
    }
}
