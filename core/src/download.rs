//! Evidence another phone took: known from the case documents a sync pulls, fetched from the
//! server when wanted.
//!
//! When a pulled case references a photo this phone does not hold, the photo and its thumbnail
//! are registered as `evicted` (on the server, not here) — the same state as a full-size photo this
//! phone gave up after the server confirmed it. After each sync, missing thumbnails are fetched
//! (a few KB each), so lists and timelines show something; a full-size photo comes on demand with
//! [`Store::fetch_evidence`]. Every download is checked against its SHA-256 before it is stored.

use rusqlite::{params, Connection, OptionalExtension};

use gridwork_model::evidence::EvidenceRef;

use crate::error::{CoreError, Result};
use crate::evidence::sha256_hex;
use crate::store::Store;
use crate::sync::{Http, SyncConfig, SyncReport};

/// Registers a case's evidence this phone does not hold (existing rows are left as they are).
pub(crate) fn register_remote(tx: &Connection, case_id: &str, evidence: &[EvidenceRef], now_ms: i64) -> Result<()> {
    let mut file = tx.prepare_cached(
        "INSERT INTO evidence_files (sha256, role, size, created_ms, server_confirmed, evicted)
         VALUES (?1, ?2, ?3, ?4, 1, 1) ON CONFLICT(sha256) DO NOTHING",
    )?;
    let mut link = tx.prepare_cached(
        "INSERT INTO evidence_links (sha256, owner_kind, owner_id) VALUES (?1, 'case', ?2) ON CONFLICT DO NOTHING",
    )?;
    for e in evidence {
        file.execute(params![e.sha256, "full", e.size as i64, now_ms])?;
        link.execute(params![e.sha256, case_id])?;
        if let Some(thumb) = &e.thumb_sha256 {
            file.execute(params![thumb, "thumb", 0, now_ms])?;
            link.execute(params![thumb, case_id])?;
        }
    }
    Ok(())
}

fn get_blob(http: &Http, config: &SyncConfig, sha256: &str) -> Result<Vec<u8>> {
    let request = http.client.get(format!("{}/v1/blobs/{sha256}", config.server)).bearer_auth(&config.token);
    let (status, body) = crate::upload::send(http, request)?;
    if !(200..300).contains(&status) {
        return Err(crate::upload::blob_error(status, &body));
    }
    if sha256_hex(&body) != sha256 {
        return Err(CoreError::EvidenceFile {
            sha256: sha256.to_owned(),
            reason: "the server sent bytes that do not match the name; nothing stored".into(),
        });
    }
    Ok(body)
}

impl Store {
    /// An evidence file's bytes: from this phone when it holds them, else from the server (which
    /// checks the caller may see it), verified and kept. Blocking.
    pub fn fetch_evidence(&self, config: &SyncConfig, sha256: &str) -> Result<Vec<u8>> {
        let held: Option<bool> = self
            .reader()
            .query_row("SELECT evicted = 0 FROM evidence_files WHERE sha256 = ?1", [sha256], |r| r.get(0))
            .optional()?;
        if held == Some(true) {
            return self.read_evidence(sha256);
        }
        let http = crate::sync::http_client(&config.server, config.ca_fingerprint.as_deref(), config.timeout)?;
        let bytes = get_blob(&http, config, sha256)?;
        // Kept only when one of this phone's cases references it; anything else would be an
        // unreferenced file, which the next open moves aside.
        if held.is_some() {
            self.keep_downloaded(sha256, &bytes)?;
        }
        Ok(bytes)
    }

    /// After a sync: the thumbnails of cases pulled from others, so they show at once.
    pub(crate) fn download_thumbnails(&self, http: &Http, config: &SyncConfig, report: &mut SyncReport) -> Result<()> {
        let missing: Vec<String> = {
            let conn = self.reader();
            let mut stmt = conn.prepare("SELECT sha256 FROM evidence_files WHERE role = 'thumb' AND evicted = 1")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for sha in missing {
            match get_blob(http, config, &sha) {
                Ok(bytes) => {
                    self.keep_downloaded(&sha, &bytes)?;
                    report.thumbnails_fetched += 1;
                }
                // Not uploaded yet by the phone that took it: next sync.
                Err(CoreError::Server { status: 404 | 403, .. }) => {}
                Err(e @ (CoreError::Network { .. } | CoreError::UntrustedServer { .. })) => {
                    report.photo_errors.push((sha, e.to_string()));
                    break;
                }
                Err(e) => report.photo_errors.push((sha, e.to_string())),
            }
        }
        Ok(())
    }
}
