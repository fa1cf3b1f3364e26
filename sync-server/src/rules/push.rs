//! A device's push, judged: each change is stored, parked until what it builds on arrives,
//! quarantined for an administrator or refused, and each record stored or quarantined — by the
//! same rules whatever the database (the storage port, `store::port`).
//!
//! The checks, in order (docs/SECURITY.md names each with the test that attacks it):
//! 1. a change read strictly when it arrived (`ingest::read_pushed`) or refused;
//! 2. known already: the same verdict again (a receipt when applied);
//! 3. a relay of another device's change only with the server's receipt for it;
//! 4. every Automerge actor belongs to exactly one device, claimed by its first stored change;
//! 5. what it builds on is in the same document; missing ancestors park it;
//! 6. the one write rule (`gridwork_model::access::may_change`) with the case's scopes and the
//!    device's scopes now;
//! 7. lifecycle events that claim the sending device, user and role, in the case's one events map;
//! 8. actors and Automerge sequence numbers the case's history knows (schemas 8 and 9).
//!
//! Before all of them, for a device that registered a signing key at enrolment: every change and
//! record it made carries a link of its chain with a signature that verifies (else refused, and
//! nothing of it stored); after them, the links of what was kept join the device's chain, a
//! link that does not continue it flagged `fork` (`gridwork_model::signing`).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use base64::Engine;
use gridwork_model::access::{case_scopes, may_change, CaseAccess, Scope, Subject, WriteDenied};
use gridwork_model::doc::keys;
use gridwork_model::geo::Location;
use gridwork_model::ids::{DeviceId, GridId, UserId};
use gridwork_model::lifecycle::{fold, Event, EventKind};
use gridwork_model::signing::{
    chain_step, link_hash, statement_for_digest, verify, ChainStep, Link, LinkKind, Neighbours,
};
use gridwork_model::wire::{ItemResult, Outcome, SyncRequest};

use crate::error::{Result, ServerError};
use crate::ingest::{read_change, ChangeFacts};
use crate::receipts::ReceiptKey;
use crate::records::RecordFacts;
use crate::store::port::{
    BootRow, CaseRow, ClockFlag, NewRecord, ParkedChange, QuarantineEntry, Quarantined, ReadTx, StoredChange,
    StoredLink, WriteTx,
};
use crate::store::values::{json, sha256_hex};
use crate::store::Device;
use gridwork_model::places::Places;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A device clock further than this from the server's is flagged on what it sends.
pub const MAX_CLOCK_SKEW_MS: i64 = 10 * 60 * 1000;

/// What a device tells the device that sent a change refused for its scope: nothing of the case.
const OUT_OF_SCOPE_TOLD: &str =
    "not in your scope (any more): kept on the server for an administrator, who can release it";

/// What the rules know beside the database: the server's receipt key, its epoch and the
/// district's places (the catalog, and its grids by position).
#[derive(Debug, Clone)]
pub struct Rules<'a> {
    pub receipts: &'a ReceiptKey,
    pub epoch: &'a str,
    pub places: Arc<Places>,
}

/// One pushed change, parsed (or why it is not a change).
#[derive(Debug)]
pub struct Pushed {
    pub doc: String,
    pub bytes: Vec<u8>,
    pub facts: std::result::Result<ChangeFacts, String>,
    /// The server's receipt the device sent with it (a relay of another device's change).
    pub receipt: Option<String>,
}

impl Pushed {
    /// Reads a pushed change within `budget` decoded bytes (shared by a request's changes).
    pub fn read(doc: String, bytes: Vec<u8>, receipt: Option<String>, budget: &mut usize) -> Self {
        let facts = crate::ingest::read_pushed(&doc, &bytes, budget);
        Pushed { doc, bytes, facts, receipt }
    }
}

/// One device's push: its changes parsed, the request (records, reported state) and the time.
#[derive(Debug)]
pub struct PushJob {
    pub device: Device,
    pub req: SyncRequest,
    pub pushed: Vec<Pushed>,
    pub now_ms: i64,
    /// The push's signatures, checked before it queued for the writer ([`check_signatures`]);
    /// None: checked inside it.
    pub signatures: Option<SignatureChecks>,
}

/// Each pushed change's and record's signature check, in request order: the link to add to the
/// device's chain (None for an unsigned old app or a relay), or why it is refused.
#[derive(Debug, Default)]
pub struct SignatureChecks {
    changes: Vec<std::result::Result<Option<Signed>, String>>,
    records: Vec<std::result::Result<Option<Signed>, String>>,
}

/// Checks a push's signatures. Verifying is most of a signed push's CPU and needs nothing the
/// writer holds, so the sync endpoint runs it beside other requests, before the push queues for
/// the one writer (as it parses the changes).
pub fn check_signatures(rules: &Rules<'_>, device: &Device, req: &SyncRequest, pushed: &[Pushed]) -> SignatureChecks {
    let changes = pushed
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let link = req.changes.get(i).and_then(|c| c.link.as_ref());
            match &p.facts {
                // A relay of another device's change (with the server's receipt) is its author's
                // link, not the sender's; an unreadable change is refused anyway.
                Ok(f) if !is_relay(rules, device, p, &f.hash) => {
                    check_link(device, link, LinkKind::Change, &f.hash, &p.bytes)
                }
                _ => Ok(None),
            }
        })
        .collect();
    let records = req
        .records
        .iter()
        .map(|r| check_link(device, r.link.as_ref(), LinkKind::Record, &r.id, r.body.get().as_bytes()))
        .collect();
    SignatureChecks { changes, records }
}

/// Who vouches for a change that [`apply`] stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vouch {
    /// Nobody: every rule applies.
    None,
    /// The server's receipt (a relay after a restore): the server applied these bytes from their
    /// owner once, so the owner's scope is not asked again; attribution and shape still are.
    Receipt,
    /// An administrator released it from quarantine: it vouches for itself only.
    Administrator,
}

/// What a sync changed about one document.
#[derive(Debug, Default)]
pub struct Touched {
    seqs: Vec<i64>,
    /// Devices whose changes to this case this push already found allowed.
    authorized: BTreeSet<String>,
    /// The sending device's clock was far from the server's.
    clock_skew: bool,
    grids: BTreeSet<String>,
    locations: Vec<(f64, f64)>,
    /// A location this push set was marked mock by the phone's OS: flagged, never refused.
    mock_location: bool,
    /// An event this push added was stamped by a wall clock far from the true time.
    event_clock_off: bool,
    /// The case's `events` map, once known in this push.
    events_obj: Option<String>,
    /// Lifecycle events this push added.
    new_events: Vec<Event>,
    /// The case's root fields these changes set, latest last: written once, in `refresh_case`.
    fields: CaseFields,
}

/// Root fields of a case the server keeps beside it (None: not set by this push).
#[derive(Debug, Default)]
struct CaseFields {
    grid: Option<String>,
    category: Option<String>,
    title: Option<String>,
    code: Option<String>,
    reporter: Option<String>,
    position: Option<(f64, f64)>,
}

/// The device a change is attributed to, by id: one the server enrolled.
fn device_by_id(tx: &dyn ReadTx, id: &str) -> Result<Device> {
    tx.device(id)?.ok_or(ServerError::Unauthenticated)
}

/// Every scope a device sees: its user's, and the user's own (`user:ID`, the reporter scope).
pub fn device_scopes(tx: &dyn ReadTx, device: &Device) -> Result<std::collections::BTreeMap<String, i64>> {
    let mut scopes = tx.user_scopes(&device.user)?;
    scopes.insert(Scope::User(UserId::from(device.user.as_str())).to_string(), 0);
    Ok(scopes)
}

/// The case's membership and the device that created it, as the write rule needs them; `None`
/// when the server holds no change of the case yet.
pub fn case_access(tx: &dyn ReadTx, doc_id: &str) -> Result<Option<CaseAccess>> {
    let Some(created_by) = tx.case_creator(doc_id)? else { return Ok(None) };
    let scopes = tx.memberships(doc_id)?.into_iter().filter_map(|(s, _)| Scope::parse(&s).ok()).collect();
    Ok(Some(CaseAccess { scopes, created_by: Some(DeviceId::from(created_by.as_str())) }))
}

/// The device as the write rule sees it: its user's role and the scopes the user holds now.
pub fn subject(tx: &dyn ReadTx, device: &Device) -> Result<Subject> {
    let scopes = device_scopes(tx, device)?;
    Ok(Subject::new(
        DeviceId::from(device.id.as_str()),
        UserId::from(device.user.as_str()),
        device.role,
        scopes.keys().filter_map(|s| Scope::parse(s).ok()),
    ))
}

/// One device's push, inside the backend's write transaction.
pub fn push(rules: &Rules<'_>, tx: &dyn WriteTx, job: &PushJob) -> Result<Vec<ItemResult>> {
    let (device, req, now_ms) = (&job.device, &job.req, job.now_ms);
    let mut results = Vec::with_capacity(job.pushed.len() + req.records.len());
    let mut touched: HashMap<String, Touched> = HashMap::new();
    let mut own_actors = BTreeSet::new();
    let hashes: Vec<&str> = job.pushed.iter().filter_map(|p| p.facts.as_ref().ok().map(|f| f.hash.as_str())).collect();
    let docs: Vec<&str> = job.pushed.iter().map(|p| p.doc.as_str()).collect();
    tx.prefetch(&hashes, &docs)?;
    let mut signed = vec![];
    let computed;
    let checks = match &job.signatures {
        Some(c) => c,
        None => {
            computed = check_signatures(rules, device, req, &job.pushed);
            &computed
        }
    };
    for (i, p) in job.pushed.iter().enumerate() {
        let ok = match checks.changes.get(i).cloned().unwrap_or(Ok(None)) {
            Ok(ok) => ok,
            Err(reason) => {
                let key = p.facts.as_ref().map(|f| f.hash.clone()).unwrap_or_default();
                results.push(ItemResult { key, outcome: Outcome::Refused, reason: Some(reason), receipt: None });
                continue;
            }
        };
        let result = ingest_change(rules, tx, device, p, now_ms, &mut own_actors, &mut touched)?;
        if result.outcome != Outcome::Refused {
            signed.extend(ok);
        }
        results.push(result);
    }
    let facts: Vec<RecordFacts<'_>> = req.records.iter().map(|r| RecordFacts::read(r.body.get())).collect();
    let mut keep = Vec::with_capacity(req.records.len());
    for (i, (r, facts)) in req.records.iter().zip(&facts).enumerate() {
        let body = r.body.get();
        match checks.records.get(i).cloned().unwrap_or(Ok(None)) {
            Ok(ok) => signed.extend(ok),
            Err(reason) => {
                results.push(ItemResult {
                    key: r.id.clone(),
                    outcome: Outcome::Refused,
                    reason: Some(reason),
                    receipt: None,
                });
                continue;
            }
        }
        // Read once: the claim, and a check-in's facts; the body is stored as the device sent it.
        if !facts.claims(&device.id, &device.user) {
            let reason = "record claims another device or user";
            results.push(quarantine(tx, &r.id, "", device, now_ms, reason, reason, body.as_bytes())?);
            continue;
        }
        keep.push(NewRecord {
            id: &r.id,
            device_id: &device.id,
            received_ms: now_ms,
            body,
            check_in: facts.check_in(),
        });
        results.push(ItemResult { key: r.id.clone(), outcome: Outcome::Accepted, reason: None, receipt: None });
    }
    if !keep.is_empty() {
        tx.store_records(&keep)?;
    }
    extend_chain(tx, &device.id, signed, now_ms)?;
    unpark(tx, now_ms, &mut touched)?;
    check_clocks(tx, job, &keep_facts(req, &facts, &results), &mut touched)?;
    // The server stamps what it receives; a device clock far from it is flagged on what it sent.
    let skew_ms = if req.state.device_time_ms == 0 { 0 } else { req.state.device_time_ms.saturating_sub(now_ms) };
    if skew_ms.saturating_abs() > MAX_CLOCK_SKEW_MS {
        for (doc, t) in touched.iter_mut() {
            if job.pushed.iter().any(|p| &p.doc == doc) {
                t.clock_skew = true;
            }
        }
    }
    refresh_cases(rules, tx, &touched)?;
    tx.device_seen(&device.id, now_ms, &seen_state(req)?)?;
    // A retired device that reports nothing left to send (and sends nothing) is drained.
    if device.retired
        && req.state.outbox_items == 0
        && req.state.photos_pending == 0
        && req.changes.is_empty()
        && req.records.is_empty()
    {
        tx.device_drained(&device.id, now_ms)?;
    }
    Ok(results)
}

/// A pushed item's link whose signature verified.
#[derive(Debug, Clone)]
pub struct Signed {
    seq: i64,
    prev: String,
    sig: String,
    hash: String,
    /// SHA-256 of the bytes sent.
    sha256: String,
    kind: LinkKind,
    key: String,
}

/// Whether a pushed change is a relay: another device's change with the server's receipt.
fn is_relay(rules: &Rules<'_>, device: &Device, p: &Pushed, hash: &str) -> bool {
    p.receipt.as_deref().and_then(|t| rules.receipts.verify(&p.doc, hash, t)).is_some_and(|r| r.owner != device.id)
}

/// The signature rule (docs/SECURITY.md, "Signatures"): a device that registered a key must send
/// every change and record it made with a link whose signature, by that key, covers the very
/// bytes sent. `Ok(None)`: a device of an app older than signing (nothing to check).
fn check_link(
    device: &Device,
    link: Option<&Link>,
    kind: LinkKind,
    key: &str,
    content: &[u8],
) -> std::result::Result<Option<Signed>, String> {
    let Some(public_key) = &device.public_key else { return Ok(None) };
    let Some(link) = link else {
        return Err("unsigned: this device enrolled with a signing key, and everything it makes must be signed".into());
    };
    let seq = i64::try_from(link.seq).ok().filter(|s| *s >= 1).ok_or("bad link: places start at 1")?;
    let sha256 = gridwork_model::signing::sha256_hex(content);
    let st = statement_for_digest(&device.id, link.seq, &link.prev, kind, key, &sha256);
    verify(public_key, &st, &link.sig).map_err(|e| format!("bad signature: {e}"))?;
    Ok(Some(Signed {
        seq,
        prev: link.prev.clone(),
        sig: link.sig.clone(),
        hash: link_hash(&st),
        sha256,
        kind,
        key: key.to_owned(),
    }))
}

/// Adds the links of what this push kept to the device's chain, in chain order, flagging a link
/// that does not continue the history held (`gridwork_model::signing::chain_step`). One read of
/// the places around them, one write.
fn extend_chain(tx: &dyn WriteTx, device: &str, mut signed: Vec<Signed>, now_ms: i64) -> Result<()> {
    if signed.is_empty() {
        return Ok(());
    }
    signed.sort_by_key(|s| s.seq);
    let (lo, hi) = (signed[0].seq - 1, signed[signed.len() - 1].seq + 1);
    let mut held = tx.chain_links_between(device, lo, hi)?;
    let mut new = Vec::with_capacity(signed.len());
    for s in signed {
        let at = |seq: i64, prevs: bool| -> Vec<String> {
            held.iter().filter(|(q, ..)| *q == seq).map(|(_, h, p)| if prevs { p.clone() } else { h.clone() }).collect()
        };
        let n = Neighbours { below: at(s.seq - 1, false), at: at(s.seq, false), above: at(s.seq + 1, true) };
        let ChainStep::Store(flag) = chain_step(s.seq.unsigned_abs(), &s.prev, &s.hash, &n) else { continue };
        held.push((s.seq, s.hash.clone(), s.prev.clone()));
        new.push(StoredLink {
            device_id: device.to_owned(),
            seq: s.seq,
            link_hash: s.hash,
            prev: s.prev,
            sig: s.sig,
            kind: s.kind.as_str().to_owned(),
            item_key: s.key,
            sha256: s.sha256,
            flag: flag.map(|f| f.as_str().to_owned()),
            at_ms: now_ms,
        });
    }
    tx.put_links(&new)
}

/// The stored records' facts (a quarantined or refused record is not counted).
fn keep_facts<'r>(
    req: &'r SyncRequest,
    facts: &'r [RecordFacts<'r>],
    results: &[ItemResult],
) -> Vec<(&'r str, &'r RecordFacts<'r>)> {
    let stored: std::collections::HashSet<&str> =
        results.iter().filter(|x| x.outcome == Outcome::Accepted).map(|x| x.key.as_str()).collect();
    req.records
        .iter()
        .zip(facts)
        .filter(|(r, _)| stored.contains(r.id.as_str()))
        .map(|(r, f)| (r.id.as_str(), f))
        .collect()
}

/// The clock rule (docs/SECURITY.md, "Clocks"): the request says which boot the phone is in and
/// how long since it began, so the server knows when that boot truly began (its own clock minus
/// the time since boot) and keeps it (`device_boots`). Every event and check-in is then checked
/// against the boot it was made in:
///
/// - a boot the server learnt the start of (this one, or an earlier one the phone synced in): a
///   stamp whose wall clock was more than `WALL_CLOCK_FLAG_MS` from the true moment — set back to
///   cover a missed patrol, or ahead — is flagged;
/// - a boot the phone never synced in (it rebooted before syncing): its true start is unknown, but
///   within one boot wall clock minus time since boot is constant unless someone changed the
///   clock; the first stamp of the boot the server sees fixes that start, and a later one (in the
///   boot's own order) implying another start by more than the threshold is flagged, off by the
///   difference.
///
/// Flagged stamps are recorded and their cases flagged; nothing is refused.
fn check_clocks(
    tx: &dyn WriteTx,
    job: &PushJob,
    records: &[(&str, &RecordFacts<'_>)],
    touched: &mut HashMap<String, Touched>,
) -> Result<()> {
    use gridwork_model::time::{ClockStamp, WALL_CLOCK_FLAG_MS};
    let state = &job.req.state;
    let device = &job.device;
    let current = (!state.boot_id.is_empty() && state.since_boot_ms > 0)
        .then(|| (state.boot_id.as_str(), job.now_ms.saturating_sub(state.since_boot_ms)));
    // (item, case, user, stamp), in each boot's own order.
    let mut stamps: Vec<(String, String, String, ClockStamp)> = vec![];
    for (doc, t) in touched.iter() {
        for e in t.new_events.iter().filter(|e| e.actor.device.0 == device.id) {
            stamps.push((e.id.to_string(), doc.clone(), e.actor.user.0.clone(), e.clock.clone()));
        }
    }
    for (id, f) in records {
        if let Some(stamp) = f.clock() {
            stamps.push(((*id).to_owned(), String::new(), device.user.clone(), stamp.clone()));
        }
    }
    stamps.retain(|(_, _, _, st)| !st.boot_id.is_empty());
    stamps.sort_by(|a, b| (&a.3.boot_id, a.3.since_boot_ms).cmp(&(&b.3.boot_id, b.3.since_boot_ms)));
    let mut noted: Vec<BootRow> = vec![];
    if let Some((boot, start)) = current {
        noted.push(BootRow { boot_id: boot.to_owned(), start_ms: Some(start), implied_ms: None });
    }
    // Earlier boots are looked up only when a stamp of one is in the push (rarely).
    let mut known: Option<HashMap<String, BootRow>> = None;
    let mut flags = vec![];
    for (item, doc_id, user, stamp) in stamps {
        let judged = match current {
            Some((boot, start)) if stamp.boot_id == boot => {
                stamp.wall_clock_error_ms((boot, start)).map(|off| (off, start.saturating_add(stamp.since_boot_ms)))
            }
            _ => {
                let boots = match &mut known {
                    Some(k) => k,
                    None => {
                        known.insert(tx.device_boots(&device.id)?.into_iter().map(|b| (b.boot_id.clone(), b)).collect())
                    }
                };
                let implied = stamp.device_ms.saturating_sub(stamp.since_boot_ms);
                let row = boots.entry(stamp.boot_id.clone()).or_insert_with(|| {
                    let first = BootRow { boot_id: stamp.boot_id.clone(), start_ms: None, implied_ms: Some(implied) };
                    noted.push(first.clone());
                    first
                });
                match (row.start_ms, row.implied_ms) {
                    (Some(start), _) => stamp
                        .wall_clock_error_ms((&stamp.boot_id, start))
                        .map(|off| (off, start.saturating_add(stamp.since_boot_ms))),
                    (None, Some(first)) => {
                        Some((implied.saturating_sub(first), first.saturating_add(stamp.since_boot_ms)))
                    }
                    (None, None) => None,
                }
            }
        };
        let Some((off, at_ms)) = judged.filter(|(off, _)| off.saturating_abs() > WALL_CLOCK_FLAG_MS) else { continue };
        if let Some(t) = touched.get_mut(&doc_id) {
            t.event_clock_off = true;
        }
        flags.push(ClockFlag { item, doc_id, device_id: device.id.clone(), user_id: user, off_ms: off, at_ms });
    }
    if !noted.is_empty() {
        tx.note_boots(&device.id, &noted)?;
    }
    if flags.is_empty() {
        return Ok(());
    }
    tx.flag_clocks(&flags)
}

/// The boot a sighting (an idle sync, written later in a batch) names, with the start it learnt:
/// a phone that synced with nothing to send still tells the server when its boot began, which
/// the clock rule needs if the phone reboots before it sends what it makes next.
pub fn boot_of_sighting(at_ms: i64, state_json: &str) -> Option<BootRow> {
    let v: serde_json::Value = serde_json::from_str(state_json).ok()?;
    let state = v.get("state")?;
    let boot = state.get("boot_id")?.as_str().filter(|b| !b.is_empty())?;
    let since = state.get("since_boot_ms")?.as_i64().filter(|s| *s > 0)?;
    Some(BootRow { boot_id: boot.to_owned(), start_ms: Some(at_ms.saturating_sub(since)), implied_ms: None })
}

/// What the server keeps of a device's reported state.
pub fn seen_state(req: &SyncRequest) -> Result<String> {
    json(&serde_json::json!({ "app_version": req.app_version, "state": req.state }))
}

/// The touched cases' rows, in document order (the same lock order in every transaction).
fn refresh_cases(rules: &Rules<'_>, tx: &dyn WriteTx, touched: &HashMap<String, Touched>) -> Result<()> {
    let mut docs: Vec<&String> = touched.keys().collect();
    docs.sort();
    for d in docs {
        if let Some(t) = touched.get(d) {
            refresh_case(rules, tx, d, t)?;
        }
    }
    Ok(())
}

/// Stores one pushed change. Returns its outcome.
fn ingest_change(
    rules: &Rules<'_>,
    tx: &dyn WriteTx,
    device: &Device,
    pushed: &Pushed,
    now: i64,
    own_actors: &mut BTreeSet<String>,
    touched: &mut HashMap<String, Touched>,
) -> Result<ItemResult> {
    let (doc_id, bytes) = (pushed.doc.as_str(), pushed.bytes.as_slice());
    let facts = match &pushed.facts {
        Ok(f) => f,
        Err(reason) => {
            return Ok(ItemResult {
                key: sha256_hex(&B64.encode(bytes)),
                outcome: Outcome::Refused,
                reason: Some(reason.clone()),
                receipt: None,
            })
        }
    };
    let key = facts.hash.clone();
    let known = tx.whereabouts(&key)?;
    if let Some((owner, stored_doc)) = known.applied {
        // A receipt is the server's word that it applied these bytes to this document: never
        // for another document the push names.
        let receipt = (stored_doc == doc_id).then(|| rules.receipts.issue(doc_id, &key, &owner));
        return Ok(ItemResult { key, outcome: Outcome::Accepted, reason: None, receipt });
    }
    if known.parked {
        // Stored, waiting for its dependencies, and not checked yet: no receipt until applied.
        return Ok(ItemResult { key, outcome: Outcome::Accepted, reason: None, receipt: None });
    }
    // Quarantined before: the same verdict for the device that sent it then, and for bytes an
    // administrator rejected. Another device's push of the same bytes (their author's, say,
    // after someone else pushed them first) is judged on its own, and if it is accepted the
    // quarantine row is marked released: else whoever pushed a change first, without the
    // right to, would hold its author's work in quarantine.
    let pending_from_another = match &known.quarantined {
        Some((status, by)) if status == "pending" && by != &device.id => true,
        Some(_) => {
            let reason = Some("already quarantined".into());
            return Ok(ItemResult { key, outcome: Outcome::Quarantined, reason, receipt: None });
        }
        None => false,
    };
    let set_aside = |reason: &str| quarantine(tx, &key, doc_id, device, now, reason, reason, bytes);
    // A relay: another device's change offered again (after a restore) with the server's
    // receipt for it. It goes in as its owner's, and is not checked against the owner's scope
    // again (`Vouch::Receipt`); anything else is the pushing device's own.
    let verified = pushed.receipt.as_deref().and_then(|t| rules.receipts.verify(doc_id, &key, t));
    let relayed_from: Option<Device> = match verified {
        Some(r) if r.owner != device.id => match tx.device(&r.owner)? {
            Some(owner) => Some(owner),
            None if r.owner.starts_with("console-") => {
                match super::console::console_device_again(tx, rules.epoch, &r.owner, now)? {
                    Some(owner) => Some(owner),
                    None => {
                        return set_aside(&format!(
                            "relayed change of {}, a console user this server does not know",
                            r.owner
                        ))
                    }
                }
            }
            None => {
                return set_aside(&format!("relayed change of device {}, which this server does not know", r.owner))
            }
        },
        _ => None,
    };
    let relayed = relayed_from.is_some();
    let author: &Device = relayed_from.as_ref().unwrap_or(device);
    // Every actor belongs to exactly one device (looked up once per actor and push). A new
    // actor is registered only once its change is stored: a change that is refused or
    // quarantined claims nothing (else a relay without its receipt could take another
    // device's actor after a restore, and every later change of the owner would be
    // quarantined).
    let owner: Option<String> = if !relayed && own_actors.contains(&facts.actor) {
        Some(device.id.clone())
    } else {
        tx.actor_owner(&facts.actor)?
    };
    let new_actor = match owner {
        None => true,
        Some(o) if o != author.id => {
            let reason = match &relayed_from {
                Some(a) => {
                    format!("the change's actor belongs to another device than {}, whose receipt it carries", a.id)
                }
                None => "the change's actor belongs to another device".to_owned(),
            };
            return set_aside(&reason);
        }
        Some(_) => false,
    };
    let register = |own_actors: &mut BTreeSet<String>| -> Result<()> {
        if new_actor {
            tx.register_actor(&facts.actor, &author.id, now)?;
        }
        if !relayed {
            own_actors.insert(facts.actor.clone());
        }
        Ok(())
    };
    // That the change belongs to the document it is filed under was checked when it was read
    // (`ingest::read_pushed`).
    let mut missing = 0;
    for dep in &facts.deps {
        match tx.change_doc_seq(dep)? {
            None => missing += 1,
            Some((d, _)) if d != doc_id => {
                return Ok(ItemResult {
                    key,
                    outcome: Outcome::Refused,
                    reason: Some(format!("change depends on another document than {doc_id}")),
                    receipt: None,
                });
            }
            Some(_) => {}
        }
    }
    let vouch = if relayed { Vouch::Receipt } else { Vouch::None };
    if missing > 0 {
        tx.park(&ParkedChange {
            hash: key.clone(),
            doc_id: doc_id.to_owned(),
            device_id: author.id.clone(),
            received_ms: now,
            deps: facts.deps.clone(),
            bytes: bytes.to_vec(),
            vouched: relayed,
        })?;
        register(own_actors)?;
        if pending_from_another {
            tx.set_quarantine_status(&key, "released")?;
        }
        return Ok(ItemResult {
            key,
            outcome: Outcome::Accepted,
            reason: Some(format!("stored; waiting for {missing} earlier change(s)")),
            receipt: None,
        });
    }
    let mut result = apply(tx, author, doc_id, facts, bytes, vouch, now, touched)?;
    if result.outcome == Outcome::Accepted {
        register(own_actors)?;
        result.receipt = Some(rules.receipts.issue(doc_id, &key, &author.id));
    }
    if pending_from_another && result.outcome == Outcome::Accepted {
        tx.set_quarantine_status(&key, "released")?;
    }
    Ok(result)
}

/// Quarantines an item, keeping `reason` for the administrator and telling the device `told`
/// (which says nothing of the case it could not see).
#[allow(clippy::too_many_arguments)]
fn quarantine(
    tx: &dyn WriteTx,
    key: &str,
    doc_id: &str,
    device: &Device,
    now: i64,
    reason: &str,
    told: &str,
    bytes: &[u8],
) -> Result<ItemResult> {
    tx.quarantine(&QuarantineEntry { key, doc_id, device_id: &device.id, received_ms: now, reason, bytes })?;
    Ok(ItemResult { key: key.to_owned(), outcome: Outcome::Quarantined, reason: Some(told.to_owned()), receipt: None })
}

/// The one write-authorization rule (`gridwork_model::access::may_change`) with what the
/// server knows when the change arrives: the case's membership, the device that created it,
/// and the scopes the device's user holds now. A change to a case the server does not hold
/// yet creates it, and a device may always create a case (its reporter scope then covers it).
fn authorize(
    tx: &dyn ReadTx,
    device: &Device,
    doc_id: &str,
    touched: &HashMap<String, Touched>,
) -> Result<std::result::Result<(), WriteDenied>> {
    if touched.get(doc_id).is_some_and(|t| t.authorized.contains(&device.id)) {
        return Ok(Ok(())); // an earlier change of this push to the same case was allowed
    }
    let Some(access) = case_access(tx, doc_id)? else { return Ok(Ok(())) };
    Ok(may_change(&subject(tx, device)?, &access))
}

/// What the administrator reads in the quarantine for a change refused for its scope: the
/// rule's verdict, and whether it looks like work done before the user lost the case's scope
/// (it builds only on changes the server had when the scope was taken away — a worker moved
/// to another grid syncing late) or like an attack (it builds on what the user never held).
fn explain_denial(tx: &dyn ReadTx, device: &Device, facts: &ChangeFacts, denied: &WriteDenied) -> Result<String> {
    let WriteDenied::OutOfScope { case_scopes, .. } = denied;
    // When the user last lost a scope the case belongs to: a scope taken away, a community or
    // street taken away with its grids, or a grid moved out of one of the user's areas.
    let mut lost: Option<(String, i64)> = None;
    for (scope, at) in tx.scopes_lost(&device.user)? {
        if case_scopes.contains(&scope) && lost.as_ref().is_none_or(|(_, a)| at > *a) {
            lost = Some((scope, at));
        }
    }
    let mut built_on = 0i64;
    for d in &facts.deps {
        let seq = tx.change_doc_seq(d)?.map(|(_, s)| s);
        built_on = built_on.max(seq.unwrap_or(i64::MAX));
    }
    Ok(match lost {
        // A change that builds on nothing cannot be work on the case as its author saw it.
        Some((scope, at)) if built_on <= at && !facts.deps.is_empty() => format!(
            "late change: {denied}. {} held {scope} until sequence {at}, and this change builds only on what \
             the server had then: work done offline before the move — release it if it is genuine",
            device.user
        ),
        Some((scope, at)) => format!(
            "out of scope: {denied}. {} lost {scope} at sequence {at}, and this change builds on later changes",
            device.user
        ),
        None => format!("out of scope: {denied}"),
    })
}

/// Applies a change whose dependencies are all present: attribution checks, then a sequence
/// number and the server's view of the case.
#[allow(clippy::too_many_arguments)]
fn apply(
    tx: &dyn WriteTx,
    device: &Device,
    doc_id: &str,
    facts: &ChangeFacts,
    bytes: &[u8],
    vouch: Vouch,
    now: i64,
    touched: &mut HashMap<String, Touched>,
) -> Result<ItemResult> {
    let released = vouch == Vouch::Administrator;
    let key = facts.hash.clone();
    let set_aside = |reason: &str| quarantine(tx, &key, doc_id, device, now, reason, reason, bytes);
    // Allowed by the device's role and scope (model::access): checked before anything else,
    // so a change that is not allowed stores nothing but its quarantine row.
    if vouch == Vouch::None {
        if let Err(denied) = authorize(tx, device, doc_id, touched)? {
            let reason = explain_denial(tx, device, facts, &denied)?;
            return quarantine(tx, &key, doc_id, device, now, &reason, OUT_OF_SCOPE_TOLD, bytes);
        }
    }
    // Where the case's events live: this change, an earlier change of this push, or the store.
    let known = match touched.get(doc_id).and_then(|t| t.events_obj.clone()) {
        Some(o) => Some(o),
        None => tx.events_obj(doc_id)?,
    };
    let events_obj: Option<String> = match (&facts.events_obj_created, known) {
        // A second `events` map would hide the case's history behind one the server never
        // checked (Automerge picks one of two concurrent maps): no replica makes one.
        (Some(new), Some(old)) if *new != old && !released => {
            return set_aside("the change replaces the case's events map: its events could not be attributed");
        }
        (Some(o), _) => Some(o.clone()),
        (None, known) => known,
    };
    let mut events = vec![];
    if let Some(obj) = &events_obj {
        for e in facts.events(obj) {
            match e {
                Err(_) if released => {}
                Err(reason) => return set_aside(&reason),
                Ok((e, raw)) => {
                    let a = &e.actor;
                    if !released && (a.device.0 != device.id || a.user.0 != device.user || a.role != device.role) {
                        return set_aside(&format!(
                            "event claims user {} as {:?} on {}, but the device is enrolled for {} as {:?}",
                            a.user, a.role, a.device, device.user, device.role
                        ));
                    }
                    events.push((e, raw));
                }
            }
        }
    }
    // Every actor it names must be in the case's history already (schema 8), released or not:
    // an administrator vouches for who may change a case, not for Automerge's invariants.
    if let Some(reason) = unknown_actor(tx, doc_id, facts)? {
        return set_aside(&reason);
    }
    let seq = tx.next_seq()?;
    tx.store_change(&StoredChange { seq, hash: &key, doc_id, device_id: &device.id, received_ms: now, bytes })?;
    // Stored as the change holds it: it parsed to this event above.
    for (e, raw) in &events {
        tx.store_event(doc_id, &e.id.to_string(), raw)?;
    }
    // The case's row is written once per case and push, in `refresh_case`.
    let t = touched.entry(doc_id.to_owned()).or_default();
    // A released change vouches for itself only: the device's other changes to the case
    // (parked ones that build on it) still face the rule.
    if vouch == Vouch::None {
        t.authorized.insert(device.id.clone());
    }
    t.seqs.push(seq);
    if t.events_obj.is_none() {
        t.events_obj = events_obj;
    }
    t.new_events.extend(events.into_iter().map(|(e, _)| e));
    for (k, v) in &facts.root_puts {
        match k.as_str() {
            keys::GRID => {
                t.grids.insert(v.clone());
                t.fields.grid = Some(v.clone());
            }
            keys::CATEGORY => t.fields.category = Some(v.clone()),
            keys::TITLE => t.fields.title = Some(v.clone()),
            keys::CODE => t.fields.code = Some(v.clone()),
            keys::REPORTER => t.fields.reporter = Some(v.clone()),
            keys::LOCATION => {
                if let Ok(loc) = serde_json::from_str::<Location>(v) {
                    t.locations.push((loc.lat, loc.lon));
                    t.mock_location |= loc.mock;
                    t.fields.position = Some((loc.lat, loc.lon));
                }
            }
            _ => {}
        }
    }
    Ok(ItemResult { key, outcome: Outcome::Accepted, reason: None, receipt: None })
}

/// [`crate::ingest::unknown_actor`] against the case's actors (schema 8); a change that passes
/// and is its actor's first in the case adds its actor.
fn unknown_actor(tx: &dyn WriteTx, doc_id: &str, facts: &ChangeFacts) -> Result<Option<String>> {
    let why = crate::ingest::unknown_actor(facts, |actor| tx.doc_actor(doc_id, actor).map(|a| a.is_some()))?;
    if why.is_some() {
        return Ok(why);
    }
    // Schema 9: one change per actor and sequence number in a case.
    if let Some(last) = tx.doc_actor(doc_id, &facts.actor)?.filter(|l| facts.seq as i64 <= *l) {
        return Ok(Some(format!(
            "damaged change: its actor {} already made change {} of this case ({last} so far)",
            facts.actor, facts.seq
        )));
    }
    tx.note_doc_actor(doc_id, &facts.actor, facts.seq as i64)?;
    Ok(None)
}

/// Applies parked changes whose dependencies have arrived, until none is left to apply.
/// A change depends only on changes of its own document, so only the documents this push
/// touched can have become complete: parked changes of other documents are not read.
fn unpark(tx: &dyn WriteTx, now: i64, touched: &mut HashMap<String, Touched>) -> Result<()> {
    // Almost always nothing is parked: one cheap look instead of one per document.
    if !tx.any_parked()? {
        return Ok(());
    }
    let mut docs: Vec<String> = touched.keys().cloned().collect();
    while let Some(doc_id) = docs.pop() {
        loop {
            let mut progressed = false;
            for p in tx.parked_in(&doc_id)? {
                if missing_deps(tx, &p.deps)? > 0 {
                    continue;
                }
                let device = device_by_id(tx, &p.device_id)?;
                let Ok((_, facts)) = read_change(&p.bytes) else { continue };
                tx.unpark(&p.hash)?;
                let vouch = if p.vouched { Vouch::Receipt } else { Vouch::None };
                apply(tx, &device, &doc_id, &facts, &p.bytes, vouch, now, touched)?;
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
    }
    Ok(())
}

/// How many of `deps` are not applied on the server yet. Storage errors propagate: a failed
/// lookup must not read as "missing".
fn missing_deps(tx: &dyn ReadTx, deps: &[String]) -> Result<usize> {
    let mut missing = 0;
    for d in deps.iter().filter(|d| !d.is_empty()) {
        if tx.change_doc_seq(d)?.is_none() {
            missing += 1;
        }
    }
    Ok(missing)
}

/// Recomputes a touched case's status and the scopes it belongs to (grow-only), and records
/// which scopes saw each of its new changes.
fn refresh_case(rules: &Rules<'_>, tx: &dyn WriteTx, doc_id: &str, t: &Touched) -> Result<()> {
    let places = &rules.places;
    let catalog = places.catalog();
    // What the row holds now, read once: the fields this push did not set keep their values.
    // No row: the case is new in this push, and its events are the ones the push added.
    let stored = tx.case_row(doc_id)?;
    let existed = stored.is_some();
    let stored = stored.unwrap_or_default();
    let events: Vec<Event> = if existed {
        tx.case_events(doc_id)?.into_iter().filter_map(|j| serde_json::from_str(&j).ok()).collect()
    } else {
        t.new_events.clone()
    };
    let reported_ms = events.iter().find(|e| matches!(e.kind, EventKind::Report)).map(|e| e.clock.estimated_ms());
    let state = fold(events).state;
    let mut flags = vec![];
    if t.clock_skew {
        flags.push("device_clock_skew");
    }
    if t.mock_location {
        flags.push("mock_location");
    }
    if t.event_clock_off {
        flags.push("event_clock_off");
    }
    let mut grids: BTreeSet<String> = t.grids.clone();
    // A case reported outside its grid is routed to the grid it lies in, and flagged.
    for (lat, lon) in &t.locations {
        if let Some(g) = places.grid_at(*lat, *lon) {
            if !t.grids.is_empty() && !t.grids.contains(&g.id.0) {
                flags.push("outside_grid");
            }
            grids.insert(g.id.0.clone());
        }
    }
    let category = t.fields.category.clone().or(stored.category_id);
    if let Some(c) = category {
        // A category retired since is flagged, never refused.
        match catalog.categories.iter().find(|k| k.id.0 == c) {
            Some(k) if k.retired => flags.push("retired_category"),
            None if !catalog.categories.is_empty() => flags.push("unknown_category"),
            _ => {}
        }
    }
    // The case's scopes, by the rule the phone applies too (model::access); a grid's community
    // and street see its cases through the grids placed in them (schema 6).
    let grid_ids: Vec<GridId> = grids.iter().map(|g| GridId::from(g.as_str())).collect();
    let scopes: BTreeSet<String> = case_scopes(&grid_ids, &state).iter().map(Scope::to_string).collect();
    let at = t.seqs.iter().copied().max().unwrap_or(0);
    let status = state.status.label();
    // Each membership row carries the case's status (the console counts by it).
    let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
    tx.join_scopes(doc_id, &scopes, at, status)?;
    if existed {
        tx.set_membership_status(doc_id, status)?;
        // A change is listed under each scope the case was already in. Under a scope it joined
        // at or after the change, the pull sends the case's whole history instead (the join
        // covers it), so nothing is listed: a new case costs no listing at all.
        let joined = tx.memberships(doc_id)?;
        for seq in &t.seqs {
            for (s, _) in joined.iter().filter(|(_, j)| seq > j) {
                tx.list_change(s, *seq, doc_id)?;
            }
        }
    }
    let mut all_flags: BTreeSet<&str> = stored.flags.split(',').filter(|f| !f.is_empty()).collect();
    all_flags.extend(flags);
    let reported_ms = reported_ms.or(stored.reported_ms);
    let f = &t.fields;
    tx.write_case_row(&CaseRow {
        doc_id,
        status,
        deadline_ms: state.deadline_ms,
        flags: all_flags.into_iter().collect::<Vec<_>>().join(","),
        departments: crate::store::console::departments_column(state.dispatched.keys().map(|d| d.0.as_str())),
        reported_ms,
        queue_key: crate::store::console::queue_key(state.deadline_ms, reported_ms, doc_id),
        grid_id: f.grid.as_deref(),
        category_id: f.category.as_deref(),
        title: f.title.as_deref(),
        code: f.code.as_deref(),
        reporter: f.reporter.as_deref(),
        position: f.position,
        events_obj: t.events_obj.as_deref(),
        updated_seq: at,
    })
}

/// An administrator accepts a quarantined item: a record is stored as its device sent it; a
/// change is applied and enters the scopes of its case. Its earlier changes must be on the
/// server (release those first).
pub fn release(rules: &Rules<'_>, tx: &dyn WriteTx, key: &str, now_ms: i64) -> Result<()> {
    let Quarantined { doc_id, device_id, status, bytes } =
        tx.quarantined_item(key)?.ok_or_else(|| ServerError::NotFound(format!("quarantined item {key}")))?;
    if status != "pending" {
        return Err(ServerError::BadRequest(format!("{key} was already {status}")));
    }
    // Marked in the same transaction as it is applied.
    tx.set_quarantine_status(key, "released")?;
    if doc_id.is_empty() {
        let body = String::from_utf8_lossy(&bytes).into_owned();
        let facts = RecordFacts::read(&body);
        let record =
            NewRecord { id: key, device_id: &device_id, received_ms: now_ms, body: &body, check_in: facts.check_in() };
        return tx.store_records(&[record]);
    }
    let (_, facts) = read_change(&bytes).map_err(ServerError::BadRequest)?;
    let missing = missing_deps(tx, &facts.deps)?;
    if missing > 0 {
        return Err(ServerError::BadRequest(format!(
            "{key} depends on {missing} change(s) not on the server: release those first"
        )));
    }
    let device = device_by_id(tx, &device_id)?;
    let mut touched = HashMap::new();
    // An administrator's release vouches for a quarantined change: its claims are not re-checked.
    let result = apply(tx, &device, &doc_id, &facts, &bytes, Vouch::Administrator, now_ms, &mut touched)?;
    if result.outcome != Outcome::Accepted {
        return Err(ServerError::Internal(format!("{key} could not be applied: {:?}", result.reason)));
    }
    // A quarantined change claimed no actor (`ingest_change`); stored now, its actor, if still
    // nobody's, is its sender's.
    tx.register_actor(&facts.actor, &device_id, now_ms)?;
    unpark(tx, now_ms, &mut touched)?;
    refresh_cases(rules, tx, &touched)
}
