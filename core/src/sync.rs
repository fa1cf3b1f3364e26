//! The device side of the sync protocol (docs/PROTOCOL.md): enrolment and `Store::sync`.
//!
//! One sync is a loop of single POSTs: each pushes a page of the outbox (bounded in bytes) and
//! pulls a page of what is new in the device's scope. Nothing leaves the outbox until the server
//! acknowledges it (accepted or quarantined); pulled changes and the new cursor are stored in one
//! SQLite transaction per page, so a kill in the middle loses nothing and repeats nothing.
//!
//! Blocking (reqwest's blocking client): call it from a plain thread, never inside a tokio
//! runtime. Transient failures are retried with exponential backoff and jitter, honouring the
//! server's Retry-After.

use std::time::Duration;

use base64::Engine;
use gridwork_model::ids::CaseId;
use gridwork_model::wire::{
    DeviceState, EnrolRequest, EnrolResponse, ErrorBody, Outcome, PushedChange, PushedRecord, SyncRequest,
    SyncResponse, PROTOCOL_VERSION,
};
use rusqlite::{OptionalExtension, TransactionBehavior};

use crate::error::{CoreError, Result};
use crate::store::{OutboxKind, Store};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Days a finished case stays on the phone after the server confirmed it, unless configured.
pub const DEFAULT_KEEP_FINISHED_DAYS: u64 = 30;

/// Documents one request asks the server to send whole; more go on the next round trip.
const WANT_FULL_PER_REQUEST: usize = 50;

/// Where and how to sync.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// e.g. `https://sync.district.example` or `http://127.0.0.1:8080` (plain HTTP on loopback
    /// only, for tests and the demo).
    pub server: String,
    /// Other addresses of the same server (more instances of it), from the enrolment code: when
    /// `server` cannot be reached, the sync goes on with the next of these, in order.
    pub alternates: Vec<String>,
    pub token: String,
    /// The district CA's SHA-256 fingerprint, from the enrolment code; required for `https://`.
    pub ca_fingerprint: Option<String>,
    pub app_version: String,
    pub max_push_bytes: usize,
    pub max_pull_bytes: u64,
    pub max_attempts: u32,
    pub timeout: Duration,
    /// Photo bytes one sync may send (None: no limit). An app on a metered or weak link can keep
    /// photos for later without holding back cases and check-ins.
    pub photo_budget_bytes: Option<u64>,
    /// Bytes per upload request. The server keeps whatever part of a request arrived, so this
    /// bounds a request's duration (under `timeout` on a 64 kbit/s link), not what a cut costs.
    pub chunk_bytes: usize,
    /// How long a closed or rejected case stays on the phone after the server confirmed it
    /// (None: forever). The server keeps it; a later change to it brings it back.
    pub keep_finished_cases: Option<Duration>,
}

impl SyncConfig {
    pub fn new(server: impl Into<String>, token: impl Into<String>) -> Self {
        SyncConfig {
            server: server.into(),
            alternates: vec![],
            token: token.into(),
            ca_fingerprint: None,
            app_version: env!("CARGO_PKG_VERSION").to_owned(),
            // Small pages: one request must get through a 2G link before it times out.
            max_push_bytes: 256 * 1024,
            max_pull_bytes: 512 * 1024,
            max_attempts: 5,
            timeout: Duration::from_secs(60),
            photo_budget_bytes: None,
            chunk_bytes: 256 * 1024,
            keep_finished_cases: Some(Duration::from_secs(DEFAULT_KEEP_FINISHED_DAYS * 24 * 3600)),
        }
    }
}

/// Reported after every round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncProgress {
    pub round_trips: usize,
    pub pushed: usize,
    pub pulled_changes: usize,
    pub outbox_remaining: usize,
}

/// What a sync did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncReport {
    pub round_trips: usize,
    pub pushed: usize,
    pub accepted: usize,
    /// (key, reason): kept on the server for an administrator; gone from the outbox.
    pub quarantined: Vec<(String, String)>,
    /// (key, reason): not stored by the server; still in the outbox.
    pub refused: Vec<(String, String)>,
    pub pulled_changes: usize,
    pub pulled_docs: usize,
    pub left_scope: usize,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub upgrade_required: bool,
    /// Photos and thumbnails the server confirmed during this sync.
    pub photos_uploaded: usize,
    /// Photo bytes sent (resent bytes would count twice; a resumed upload sends none).
    pub photo_bytes_up: u64,
    /// Photos and thumbnails still waiting for the server after this sync.
    pub photos_pending: usize,
    /// (sha256, why) for uploads that did not finish; they are retried on the next sync.
    pub photo_errors: Vec<(String, String)>,
    /// Changes and records queued again because the server was restored from a backup (or did
    /// not know this phone's cursor).
    pub reoffered: usize,
    /// The server did not know this phone's cursor: the phone pulled its scope from the start.
    pub cursor_restarted: bool,
    /// The server retired this device: it takes what the phone holds and sends nothing new.
    pub retired: bool,
    /// Thumbnails of other phones' photos downloaded during this sync.
    pub thumbnails_fetched: usize,
    /// Documents this phone held only in part (changes waiting for dependencies), asked for whole.
    pub asked_whole: usize,
    /// Finished cases removed from the phone after their retention period (see
    /// [`SyncConfig::keep_finished_cases`]); the server keeps them.
    pub finished_cases_removed: usize,
    /// An administrator ordered this phone wiped: this sync sent everything it could (photos
    /// regardless of the budget). Not yet `wiped`: something is still to go; sync again.
    pub wipe_ordered: bool,
    /// The server confirmed it holds everything, and the store was destroyed (keys and files):
    /// drop the store handle, destroy a raw store key the app kept, show the phone as wiped.
    pub wiped: Option<crate::store::ShredReport>,
    /// The server acknowledged the wipe (`POST /v1/wiped`); if not, call [`report_wiped`] when
    /// online (the tombstone remembers).
    pub wipe_reported: bool,
    /// What waits for this phone's person after the sync ([`Store::needs_you`]): the app's badge.
    pub needs_you: Vec<crate::store::NeedsYou>,
}

/// An HTTP client for `server`, and where a pinned-CA refusal would be reported.
pub(crate) struct Http {
    pub(crate) client: reqwest::blocking::Client,
    refusals: Option<crate::tls::Refusals>,
}

pub(crate) fn http_client(server: &str, ca_fingerprint: Option<&str>, timeout: Duration) -> Result<Http> {
    crate::tls::check_transport(server, ca_fingerprint)?;
    let mut builder = reqwest::blocking::Client::builder().timeout(timeout);
    let mut refusals = None;
    // reqwest needs a TLS configuration even for plain HTTP (it would look for a process-wide
    // rustls provider and panic without one); without a pin it is one that trusts nobody.
    let config = match ca_fingerprint {
        Some(fp) => {
            let (config, r) = crate::tls::client_config(fp)?;
            refusals = Some(r);
            config
        }
        None => crate::tls::trust_nobody()?,
    };
    builder = builder.tls_backend_preconfigured(config);
    let client = builder.build().map_err(|e| CoreError::Network { message: e.to_string(), retryable: false })?;
    Ok(Http { client, refusals })
}

/// A failed request as the core reports it: a certificate the pinned CA does not vouch for is
/// not a network hiccup to retry, and says so.
pub(crate) fn send_error(http: &Http, e: reqwest::Error) -> CoreError {
    if let Some(why) = http.refusals.as_ref().and_then(|r| r.take()) {
        return CoreError::UntrustedServer { message: why };
    }
    // reqwest's own message ("error sending request") says nothing; the causes do.
    let mut message = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    CoreError::Network { message, retryable: true }
}

/// Posts JSON with retries. Returns the response body.
fn post(http: &Http, url: &str, token: Option<&str>, body: Vec<u8>, attempts: u32) -> Result<Vec<u8>> {
    let mut delay = Duration::from_millis(200);
    let mut last = CoreError::Network { message: "no attempt made".into(), retryable: true };
    for attempt in 1..=attempts.max(1) {
        let mut req = http.client.post(url).header("content-type", "application/json").body(body.clone());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let wait = match req.send() {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs);
                let bytes = resp.bytes().map_err(|e| CoreError::Network { message: e.to_string(), retryable: true })?;
                if (200..300).contains(&status) {
                    return Ok(bytes.to_vec());
                }
                let parsed: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
                let (code, message) = parsed
                    .map(|b| (b.error, b.message))
                    .unwrap_or_else(|| ("unknown".into(), String::from_utf8_lossy(&bytes).into_owned()));
                last = CoreError::Server { status, code, message };
                if !(status == 429 || status >= 500) {
                    return Err(last);
                }
                retry_after
            }
            Err(e) => {
                last = send_error(http, e);
                if matches!(last, CoreError::UntrustedServer { .. }) {
                    return Err(last);
                }
                None
            }
        };
        if attempt < attempts {
            // Full jitter, so thousands of phones reconnecting at once spread out.
            let jitter = getrandom::u64().unwrap_or(0) % (delay.as_millis() as u64 + 1);
            std::thread::sleep(wait.unwrap_or(Duration::from_millis(jitter)));
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }
    Err(last)
}

/// Exchanges a one-time enrolment code for a device token. `ca_fingerprint` (from the same
/// enrolment code) is required for an `https://` server; plain HTTP works on loopback only.
pub fn enrol(server: &str, code: &str, ca_fingerprint: Option<&str>, app_version: &str) -> Result<EnrolResponse> {
    let client = http_client(server, ca_fingerprint, Duration::from_secs(30))?;
    // The device's signing key is made here, for this enrolment: the server registers its public
    // half with the device, and the caller opens the store with the private half.
    let key = crate::signing::DeviceKey::generate()?;
    let body = serde_json::to_vec(&EnrolRequest {
        code: code.to_owned(),
        app_version: app_version.to_owned(),
        public_key: Some(key.public_key_b64()),
    })
    .map_err(|e| CoreError::Network { message: e.to_string(), retryable: false })?;
    let resp = post(&client, &format!("{server}/v1/enrol"), None, body, 3)?;
    let mut answer: EnrolResponse = serde_json::from_slice(&resp)
        .map_err(|e| CoreError::Network { message: format!("bad enrolment answer: {e}"), retryable: false })?;
    answer.device_key = Some(key.pkcs8().clone());
    Ok(answer)
}

/// Where this device stands with the server (`POST /v1/status`): what an app past its offline
/// limit asks before it opens the store (`OpenOptions::offline_limit`). A revoked or wiped
/// device is `CoreError::Server` 403 `device_revoked` / `device_wiped`.
pub fn device_status(config: &SyncConfig) -> Result<gridwork_model::wire::DeviceStatus> {
    let http = http_client(&config.server, config.ca_fingerprint.as_deref(), config.timeout)?;
    let body =
        post(&http, &format!("{}/v1/status", config.server), Some(&config.token), b"{}".to_vec(), config.max_attempts)?;
    serde_json::from_slice(&body)
        .map_err(|e| CoreError::Network { message: format!("bad status answer: {e}"), retryable: true })
}

/// Tells the server the store in `dir` was wiped (`POST /v1/wiped`), and marks its tombstone
/// reported. For an app whose wiping sync could not report (a cut after the shred): call it at
/// start while [`crate::store::tombstone`] says `reported: false`. Idempotent.
pub fn report_wiped(dir: &std::path::Path, config: &SyncConfig) -> Result<()> {
    let http = http_client(&config.server, config.ca_fingerprint.as_deref(), config.timeout)?;
    report_wiped_with(&http, dir, config)
}

fn report_wiped_with(http: &Http, dir: &std::path::Path, config: &SyncConfig) -> Result<()> {
    let Some(mut t) = crate::store::tombstone(dir)? else {
        return Err(CoreError::InvalidConfig {
            field: "dir".into(),
            reason: format!("{} holds no wiped store", dir.display()),
        });
    };
    if !t.reported {
        match post(
            http,
            &format!("{}/v1/wiped", config.server),
            Some(&config.token),
            b"{}".to_vec(),
            config.max_attempts,
        ) {
            // A repeat whose first answer was lost: the token already stopped working.
            Ok(_) => {}
            Err(CoreError::Server { code, .. }) if code == "device_wiped" => {}
            Err(e) => return Err(e),
        }
        t.reported = true;
        crate::store::wipe_tombstone_reported(dir, &t)?;
    }
    Ok(())
}

/// A stored record's JSON as sent. The store wrote it with serde_json, so it parses; should it
/// not, `null` goes out and the server quarantines the record as unattributed (kept, visible).
/// Keeps the well-formed receipts among `receipts` (the server's word; the phone only stores and
/// returns them), by change hash.
fn keep_receipts<'a>(tx: &rusqlite::Transaction<'_>, receipts: impl Iterator<Item = &'a String>) -> Result<()> {
    let mut stmt = tx.prepare_cached("INSERT OR REPLACE INTO receipts (hash, receipt) VALUES (?1, ?2)")?;
    for text in receipts {
        if let Some(r) = gridwork_model::wire::Receipt::parse(text) {
            stmt.execute(rusqlite::params![r.hash, text])?;
        }
    }
    Ok(())
}

fn raw_json(bytes: &[u8]) -> Box<serde_json::value::RawValue> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| serde_json::value::RawValue::from_string(s.to_owned()).ok())
        .unwrap_or_else(|| serde_json::value::to_raw_value(&serde_json::Value::Null).unwrap_or_default())
}

impl Store {
    /// The cursor of the last page applied.
    pub fn sync_cursor(&self) -> Result<Option<String>> {
        Ok(self.reader().query_row("SELECT value FROM meta WHERE key = 'sync_cursor'", [], |r| r.get(0)).optional()?)
    }

    /// Applies one pulled page and its cursor in one transaction.
    /// Applies a sync answer in one transaction: the outbox items it acknowledged (`acked`), the
    /// pulled changes, the scope's comings and goings, the new cursor and, when the server asks
    /// (it was restored from a backup), the re-offer of everything this phone holds. Returns
    /// (changes applied, items re-offered).
    ///
    /// One transaction, because a phone must never hold acknowledged work without the cursor of
    /// the server that acknowledged it: a restored server asks for a re-offer only when it sees a
    /// cursor from before the restore (the chaos harness found a phone killed between the two,
    /// with no cursor at all, whose cases the restored server never saw again).
    fn apply_answer(&self, resp: &SyncResponse, acked: &[i64]) -> Result<(usize, usize)> {
        let mut parsed = vec![];
        for d in &resp.docs {
            let id = CaseId::parse(&d.doc)
                .map_err(|_| CoreError::BadChange { reason: format!("bad document id {}", d.doc) })?;
            let bytes = d
                .changes
                .iter()
                .map(|c| B64.decode(c).map_err(|_| CoreError::BadChange { reason: "change is not base64".into() }))
                .collect::<Result<Vec<_>>>()?;
            let mut changes = crate::store::parse_changes(&bytes)?;
            // A long history may come as one compacted document: its changes, same hashes.
            if let Some(c) = &d.compacted {
                let raw = B64.decode(c).map_err(|_| CoreError::BadChange {
                    reason: format!("compacted document {} is not base64", d.doc),
                })?;
                let whole = gridwork_model::fence::fenced(|| automerge::Automerge::load(&raw))
                    .map_err(|p| format!("Automerge could not load it: {p}"))
                    .and_then(|r| r.map_err(|e| e.to_string()))
                    .map_err(|e| CoreError::BadChange {
                        reason: format!("compacted document {} does not load: {e}", d.doc),
                    })?;
                changes.extend(whole.get_changes(&[]));
            }
            parsed.push((id, changes));
        }
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        crate::store::outbox::acknowledge_in(&tx, acked)?;
        // The server's receipts, for the changes it sent and for those it accepted from us.
        let receipts = resp
            .docs
            .iter()
            .flat_map(|d| d.receipts.iter())
            .chain(resp.results.iter().filter_map(|r| r.receipt.as_ref()));
        keep_receipts(&tx, receipts)?;
        let mut n = 0;
        for (id, changes) in parsed {
            n += self.receive_in(&tx, &id, changes)?.new_changes;
            // Back in scope (a new assignment, a scope given back): listed again.
            tx.execute("UPDATE cases SET out_of_scope_ms = NULL WHERE id = ?1", [id.to_string()])?;
        }
        // Out of scope: hidden from lists, never deleted; unsynced edits still go out.
        let now = self.now_ms();
        for doc in &resp.left_scope {
            tx.execute("UPDATE cases SET out_of_scope_ms = ?2 WHERE id = ?1", rusqlite::params![doc, now])?;
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('sync_cursor', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [&resp.cursor],
        )?;
        self.note_server_contact_in(&tx, resp.server_time_ms)?;
        // The scopes the user holds now: which cases this phone may still change (see
        // `Store::may_change`). An older server sends none; the phone then keeps what it knew.
        if !resp.scopes.is_empty() {
            let scopes = serde_json::to_string(&resp.scopes)
                .map_err(|e| CoreError::Network { message: e.to_string(), retryable: false })?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('write_scopes', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [&scopes],
            )?;
        }
        // With the cursor of the restored server's new epoch: a crash between the two would
        // keep the cursor and lose the re-offer (the chaos harness's seed 13 found it).
        let reoffered = if resp.reoffer {
            let r = self.reoffer_in(&tx)?;
            r.changes + r.records
        } else {
            0
        };
        tx.commit()?;
        Ok((n, reoffered))
    }

    /// The place of the last link this device signed (0: none).
    fn chain_head(&self) -> Result<i64> {
        let device = &self.identity().device.0;
        Ok(self
            .reader()
            .query_row("SELECT coalesce(max(seq), 0) FROM chain WHERE device_id = ?1", [device], |r| r.get(0))?)
    }

    /// The receipts this phone holds for the given change hashes.
    fn receipts_for<'a>(
        &self,
        hashes: impl Iterator<Item = &'a String>,
    ) -> Result<std::collections::HashMap<String, String>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached("SELECT receipt FROM receipts WHERE hash = ?1")?;
        let mut out = std::collections::HashMap::new();
        for h in hashes {
            if let Some(r) = stmt.query_row([h], |r| r.get::<_, String>(0)).optional()? {
                out.insert(h.clone(), r);
            }
        }
        Ok(out)
    }

    /// Forgets the cursor, so the next request pulls the whole scope again, and queues
    /// everything this phone holds to be offered again, in one transaction: without a cursor
    /// the server does not ask for the re-offer, so it must not be lost to a crash.
    fn start_over(&self) -> Result<usize> {
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM meta WHERE key = 'sync_cursor'", [])?;
        let r = self.reoffer_in(&tx)?;
        tx.commit()?;
        Ok(r.changes + r.records)
    }

    /// Pushes the outbox and pulls what is new, page by page, until both are done.
    pub fn sync(&self, config: &SyncConfig, progress: &mut dyn FnMut(&SyncProgress)) -> Result<SyncReport> {
        // A handle kept past its wipe: say so, rather than fail on the empty database behind it.
        crate::store::refuse_wiped(self.dir())?;
        // Failover: an address that cannot be reached hands the sync to the next one. A sync is
        // idempotent (the outbox and the cursor move only on the server's answers), so going on
        // elsewhere after a cut loses and duplicates nothing. An answer from a server, even a
        // refusal, is final: every address is the same server.
        let mut tried = config.clone();
        let mut result = self.sync_with(&tried, progress);
        for next in &config.alternates {
            match &result {
                Err(CoreError::Network { retryable: true, .. }) => {
                    tried.server = next.clone();
                    result = self.sync_with(&tried, progress);
                }
                _ => break,
            }
        }
        result
    }

    fn sync_with(&self, config: &SyncConfig, progress: &mut dyn FnMut(&SyncProgress)) -> Result<SyncReport> {
        let client = http_client(&config.server, config.ca_fingerprint.as_deref(), config.timeout)?;
        let url = format!("{}/v1/sync", config.server);
        let mut report = SyncReport::default();
        let mut after_seq = 0;
        // Asked once per sync: a document the server cannot complete either is not asked again
        // until the next sync.
        let mut asked: std::collections::HashSet<String> = std::collections::HashSet::new();
        // A cursor the server does not know is started over once per sync; twice is an error.
        let mut restarted = false;
        // Ordered wiped: the confirmation is asked once per sync, after everything went.
        let mut asked_to_wipe = false;
        loop {
            let items = self.outbox_page_after(after_seq, config.max_push_bytes)?;
            let reading = self.clock_reading();
            let now = reading.wall_ms;
            let state = DeviceState {
                outbox_items: self.outbox_len()? as u64,
                oldest_unsynced_age_ms: self.oldest_unsynced_ms()?.map(|t| now - t).unwrap_or(0),
                photos_pending: self.photos_pending()? as u64,
                catalog_version: self.catalog().version,
                device_time_ms: now,
                boot_id: reading.boot_id.clone(),
                since_boot_ms: reading.since_boot_ms,
                chain_head: self.chain_head()?,
            };
            let mut changes = vec![];
            let mut records = vec![];
            // The server answers one result per item, changes first, then records, in request order.
            let in_answer_order: Vec<&crate::store::OutboxItem> = items
                .iter()
                .filter(|i| i.kind == OutboxKind::Change)
                .chain(items.iter().filter(|i| i.kind == OutboxKind::Record))
                .collect();
            let receipts = self.receipts_for(items.iter().filter(|i| i.kind == OutboxKind::Change).map(|i| &i.key))?;
            for it in &items {
                match it.kind {
                    OutboxKind::Change => changes.push(PushedChange {
                        doc: it.doc_id.clone().unwrap_or_default(),
                        bytes: B64.encode(&it.bytes),
                        receipt: receipts.get(&it.key).cloned(),
                        link: it.link.clone(),
                    }),
                    OutboxKind::Record => records.push(PushedRecord {
                        id: it.key.clone(),
                        body: raw_json(&it.bytes),
                        link: it.link.clone(),
                    }),
                }
            }
            let want_full: Vec<String> = self
                .waiting_documents()?
                .into_iter()
                .filter(|d| !asked.contains(d))
                .take(WANT_FULL_PER_REQUEST)
                .collect();
            asked.extend(want_full.iter().cloned());
            report.asked_whole += want_full.len();
            let request = SyncRequest {
                protocol: PROTOCOL_VERSION,
                app_version: config.app_version.clone(),
                doc_schema: gridwork_model::doc::SCHEMA_VERSION,
                cursor: self.sync_cursor()?,
                state,
                changes,
                records,
                max_pull_bytes: config.max_pull_bytes,
                want_full,
                accept_compacted: true,
            };
            let body = serde_json::to_vec(&request)
                .map_err(|e| CoreError::Network { message: e.to_string(), retryable: false })?;
            report.bytes_up += body.len() as u64;
            let answer = match post(&client, &url, Some(&config.token), body, config.max_attempts) {
                Err(CoreError::Server { code, .. }) if code == "cursor_unknown" && !restarted => {
                    // The server never issued this cursor (it was restored without a new epoch,
                    // or the cursor was damaged): answering it would skip what it holds. Start
                    // the scope over and offer everything again; the server stores each once.
                    restarted = true;
                    report.reoffered += self.start_over()?;
                    report.cursor_restarted = true;
                    after_seq = 0;
                    continue;
                }
                other => other?,
            };
            report.bytes_down += answer.len() as u64;
            report.round_trips += 1;
            gridwork_model::crash_points::reached("phone-sync-answered");
            let resp: SyncResponse = serde_json::from_slice(&answer)
                .map_err(|e| CoreError::Network { message: format!("bad sync answer: {e}"), retryable: true })?;

            let mut acked = vec![];
            for (i, r) in resp.results.iter().enumerate() {
                // Match by key; by position when the server could not read the item's key.
                let by_key = items.iter().find(|it| it.key == r.key);
                let Some(item) = by_key.or_else(|| in_answer_order.get(i).copied()) else { continue };
                match r.outcome {
                    Outcome::Accepted => {
                        report.accepted += 1;
                        acked.push(item.seq);
                    }
                    Outcome::Quarantined => {
                        report.quarantined.push((r.key.clone(), r.reason.clone().unwrap_or_default()));
                        acked.push(item.seq);
                    }
                    Outcome::Refused => report.refused.push((item.key.clone(), r.reason.clone().unwrap_or_default())),
                }
            }
            report.pushed += items.len();
            if let Some(last) = items.last() {
                after_seq = last.seq;
            }
            let (pulled, reoffered) = self.apply_answer(&resp, &acked)?;
            gridwork_model::crash_points::reached("phone-sync-applied");
            report.pulled_changes += pulled;
            report.reoffered += reoffered;
            report.pulled_docs += resp.docs.len();
            report.left_scope += resp.left_scope.len();
            report.upgrade_required |= resp.upgrade_required;
            report.retired |= resp.retired;
            report.wipe_ordered |= resp.wipe;
            if let Some(c) = &resp.catalog {
                self.import_catalog(c)?;
            }
            self.set_server_offset(resp.server_time_ms - now)?;
            progress(&SyncProgress {
                round_trips: report.round_trips,
                pushed: report.pushed,
                pulled_changes: report.pulled_changes,
                outbox_remaining: self.outbox_len()?,
            });
            if resp.wipe_now {
                // The server holds everything this phone reported holding: destroy it, then say so.
                report.wiped = Some(self.shred()?);
                report.wipe_reported = report_wiped_with(&client, self.dir(), config).is_ok();
                return Ok(report);
            }
            if resp.reoffer {
                // The server was restored from a backup: everything (queued with the answer
                // above) goes out again, in pages.
                after_seq = 0;
                continue;
            }
            let more_to_ask = self.waiting_documents()?.iter().any(|d| !asked.contains(d));
            if items.is_empty() && !resp.more && !more_to_ask && resp.wipe {
                // Ordered wiped: every photo goes, whatever the budget, and then one more request
                // (nothing pending) asks the server to confirm it holds everything.
                let everything = SyncConfig { photo_budget_bytes: None, ..config.clone() };
                self.upload_evidence(&client, &everything, &mut report)?;
                if self.photos_pending()? == 0 && !asked_to_wipe {
                    asked_to_wipe = true;
                    continue;
                }
                report.photos_pending = self.photos_pending()?;
                return Ok(report);
            }
            if items.is_empty() && !resp.more && !more_to_ask {
                // Photos last: cases and check-ins are already through.
                self.upload_evidence(&client, config, &mut report)?;
                self.download_thumbnails(&client, config, &mut report)?;
                // Everything the server confirmed is known now: finished cases start their
                // retention clock, and those past it leave.
                self.mark_settled()?;
                if let Some(keep) = config.keep_finished_cases {
                    report.finished_cases_removed = self.remove_settled_cases(keep)?.cases;
                }
                report.needs_you = self.needs_you()?;
                return Ok(report);
            }
        }
    }
}
