//! Evidence upload: the photos and thumbnails a sync leaves behind, sent after the records that
//! reference them, smallest first, in chunks that resume where the server says it stopped.
//!
//! Called at the end of [`Store::sync`](crate::Store::sync), once the outbox is through: a photo
//! never holds up a case or a check-in. A file is eligible once its owner's changes or record
//! have been acknowledged (the server lets a device upload only for what it can see). Each file
//! starts with `GET /v1/blobs/{sha}/status` and continues from the server's offset, so after a
//! cut nothing already received is sent again. A file is marked confirmed only when the server
//! says the blob is complete and verified against its hash; until then its case does not count
//! as synced ([`Store::case_sync_state`]). Network trouble stops the uploads for this sync
//! (the next sync resumes), never the sync itself.

use gridwork_model::wire::{BlobOwner, BlobStatus, ErrorBody};

use crate::error::{CoreError, Result};
use crate::store::Store;
use crate::sync::{send_error, Http, SyncConfig, SyncReport};

/// One file waiting for the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingBlob {
    pub sha256: String,
    pub size: u64,
    pub owner: BlobOwner,
}

/// A case's standing with the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CaseSyncState {
    /// Local changes to the case not yet acknowledged.
    pub unsynced_changes: usize,
    /// The case's photos and thumbnails the server has not confirmed.
    pub photos_pending: usize,
}

impl CaseSyncState {
    /// Synced means the server holds every change *and* every photo of the case.
    pub fn is_synced(&self) -> bool {
        self.unsynced_changes == 0 && self.photos_pending == 0
    }
}

impl Store {
    /// Files the server has not confirmed yet (photos and thumbnails), whatever their owner.
    pub fn photos_pending(&self) -> Result<usize> {
        let n: i64 = self.reader().query_row(
            "SELECT count(*) FROM evidence_files WHERE server_confirmed = 0 AND evicted = 0",
            [],
            |r| r.get(0),
        )?;
        Ok(n as usize)
    }

    /// Whether the server holds everything of a case (see [`CaseSyncState::is_synced`]).
    pub fn case_sync_state(&self, case_id: &str) -> Result<CaseSyncState> {
        let conn = self.reader();
        let changes: i64 =
            conn.query_row("SELECT count(*) FROM outbox WHERE kind = 'change' AND doc_id = ?1", [case_id], |r| {
                r.get(0)
            })?;
        let photos: i64 = conn.query_row(
            "SELECT count(*) FROM evidence_links l JOIN evidence_files f ON f.sha256 = l.sha256
             WHERE l.owner_kind = 'case' AND l.owner_id = ?1 AND f.server_confirmed = 0 AND f.evicted = 0",
            [case_id],
            |r| r.get(0),
        )?;
        Ok(CaseSyncState { unsynced_changes: changes as usize, photos_pending: photos as usize })
    }

    /// Unconfirmed files whose owner the server already has, smallest first (thumbnails before
    /// photos, so a supervisor sees something soonest).
    pub(crate) fn uploadable_blobs(&self) -> Result<Vec<PendingBlob>> {
        let conn = self.reader();
        let mut stmt = conn.prepare(
            // One link per file, whole: a file linked to a case and to a check-in (the same
            // picture attached to both, or two photos whose thumbnails came out identical) must
            // be offered with an owner that exists, not one link's kind and another's id.
            "SELECT f.sha256, f.size, min(l.owner_kind || ' ' || l.owner_id) FROM evidence_files f
             JOIN evidence_links l ON l.sha256 = f.sha256
             WHERE f.server_confirmed = 0 AND f.evicted = 0
               AND NOT EXISTS (SELECT 1 FROM outbox o WHERE
                   (l.owner_kind = 'case' AND o.kind = 'change' AND o.doc_id = l.owner_id)
                   OR (l.owner_kind = 'check_in' AND o.kind = 'record' AND o.item_key = l.owner_id))
             GROUP BY f.sha256
             ORDER BY f.size, f.sha256",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?)))?;
        let mut out = vec![];
        for row in rows {
            let (sha256, size, link) = row?;
            let (kind, id) = link.split_once(' ').unwrap_or((&link, ""));
            let id = id.to_owned();
            let owner = if kind == "case" { BlobOwner::Case(id) } else { BlobOwner::CheckIn(id) };
            out.push(PendingBlob { sha256, size: size as u64, owner });
        }
        Ok(out)
    }

    /// Uploads what [`Store::uploadable_blobs`] lists, within `config.photo_budget_bytes`.
    /// Records the outcome in `report`; returns Ok even when the network gave out.
    pub(crate) fn upload_evidence(&self, http: &Http, config: &SyncConfig, report: &mut SyncReport) -> Result<()> {
        let mut budget = config.photo_budget_bytes;
        for blob in self.uploadable_blobs()? {
            match self.upload_one(http, config, &blob, &mut budget, report) {
                Ok(true) => {
                    self.confirm_evidence(std::slice::from_ref(&blob.sha256))?;
                    report.photos_uploaded += 1;
                }
                // Out of budget: the rest waits for the next sync.
                Ok(false) => break,
                Err(e @ (CoreError::Network { .. } | CoreError::UntrustedServer { .. })) => {
                    report.photo_errors.push((blob.sha256.clone(), e.to_string()));
                    break;
                }
                // The server refused this file (e.g. its case is not visible yet): the others may go.
                Err(e) => report.photo_errors.push((blob.sha256.clone(), e.to_string())),
            }
        }
        report.photos_pending = self.photos_pending()?;
        Ok(())
    }

    /// Sends one file from where the server stands. Ok(true) once the server has it complete.
    fn upload_one(
        &self,
        http: &Http,
        config: &SyncConfig,
        blob: &PendingBlob,
        budget: &mut Option<u64>,
        report: &mut SyncReport,
    ) -> Result<bool> {
        let url = format!("{}/v1/blobs/{}", config.server, blob.sha256);
        let mut status = blob_status(http, &url, &config.token, &blob.owner.to_query())?;
        if status.complete {
            // Another phone sent the same bytes: an empty chunk links this phone's case to the
            // blob, so the people who see the case can download it. Nothing is resent.
            let link = format!("{url}?offset={0}&total={0}&owner={1}", status.offset, blob.owner.to_query());
            let (code, body) = send(http, http.client.put(&link).bearer_auth(&config.token))?;
            return Ok(parse_answer(code, &body)?.complete);
        }
        let mut bytes: Option<Vec<u8>> = None;
        // A few wrong-offset answers (another phone uploading the same photo) are normal; more
        // would mean something is wrong, and the next sync tries again.
        let mut resyncs = 0;
        while !status.complete {
            let data = match &bytes {
                Some(b) => b,
                None => bytes.insert(self.read_evidence(&blob.sha256)?),
            };
            let offset = status.offset.min(data.len() as u64) as usize;
            let end = (offset + config.chunk_bytes.max(1)).min(data.len());
            let chunk = &data[offset..end];
            if let Some(left) = budget {
                if *left < chunk.len() as u64 {
                    return Ok(false);
                }
                *left -= chunk.len() as u64;
            }
            let put = format!("{url}?offset={offset}&total={}&owner={}", data.len(), blob.owner.to_query());
            let request = http
                .client
                .put(&put)
                .bearer_auth(&config.token)
                .header("content-type", "application/octet-stream")
                .body(chunk.to_vec());
            let (code, body) = send(http, request)?;
            report.photo_bytes_up += chunk.len() as u64;
            if code == 409 && resyncs < 3 {
                resyncs += 1;
                status = blob_status(http, &url, &config.token, &blob.owner.to_query())?;
                continue;
            }
            status = parse_answer(code, &body)?;
        }
        Ok(true)
    }
}

/// A refused blob request as the core reports it: busy or failing servers are network trouble
/// (retry later), the rest are the server's answer.
pub(crate) fn blob_error(code: u16, body: &[u8]) -> CoreError {
    let (error, message) = serde_json::from_slice::<ErrorBody>(body)
        .map(|b| (b.error, b.message))
        .unwrap_or_else(|_| ("unknown".into(), String::from_utf8_lossy(body).into_owned()));
    if code == 429 || code >= 500 {
        return CoreError::Network { message: format!("{code} {error}: {message}"), retryable: true };
    }
    CoreError::Server { status: code, code: error, message }
}

fn parse_answer(code: u16, body: &[u8]) -> Result<BlobStatus> {
    if (200..300).contains(&code) {
        return serde_json::from_slice(body)
            .map_err(|e| CoreError::Network { message: format!("bad blob answer: {e}"), retryable: true });
    }
    Err(blob_error(code, body))
}

/// Sends one blob request: (HTTP status, body). A failure to reach the server is a network error
/// (or `UntrustedServer` when the pinned CA refused the certificate).
pub(crate) fn send(http: &Http, request: reqwest::blocking::RequestBuilder) -> Result<(u16, Vec<u8>)> {
    let resp = request.send().map_err(|e| send_error(http, e))?;
    let code = resp.status().as_u16();
    let body = resp.bytes().map_err(|e| CoreError::Network { message: e.to_string(), retryable: true })?;
    Ok((code, body.to_vec()))
}

/// How much of a blob the server holds, asked for the case or check-in this phone uploads it for
/// (the server answers only for an owner the device may upload to, or a blob it may see).
fn blob_status(http: &Http, url: &str, token: &str, owner: &str) -> Result<BlobStatus> {
    let (code, body) = send(http, http.client.get(format!("{url}/status?owner={owner}")).bearer_auth(token))?;
    parse_answer(code, &body)
}
