//! What a device receives: the pull planner (what is new in its scope since its cursor, within
//! a byte budget, in sequence order), the cursor it is given, and whole documents it asks for —
//! over the storage port's reads (`store::port::ReadTx`), the same for every backend.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use base64::Engine;
use gridwork_model::wire::PulledDoc;

use super::push::Rules;
use crate::error::{Result, ServerError};
use crate::store::port::{ChangeBytes, ReadTx};
use crate::store::Device;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A joining document's history of at least this many changes is sent compacted (to devices
/// that accept it): below it, a saved document is not much smaller than the changes.
const COMPACT_FROM_CHANGES: usize = 32;

/// The most a history may inflate to for the server to compact it (compacting loads it whole);
/// a longer one goes as its changes.
const MAX_COMPACT_INPUT: usize = 8 * 1024 * 1024;

/// Memberships (documents joining the device's view) and changes one pull reads past its cursor:
/// a pull's memory is bounded whatever its scope holds; the device is told there is more.
const MAX_PULL_JOIN_ROWS: usize = 2_000;
const MAX_PULL_CHANGE_ROWS: usize = 20_000;

/// Whole documents one sync request may ask for; the device asks for the rest on its next round.
const MAX_WANT_FULL: usize = 100;

/// The scopes a device holds (`device_scopes`: scope → the sequence number it was granted at),
/// read once per pull: the planner, the whole documents asked for and what the device is told
/// all use them.
pub type Scopes = BTreeMap<String, i64>;

/// The scopes a device is told it holds: grids, departments and its user's own (a community or
/// street stands for its grids, which are listed).
pub fn told_scopes(scopes: &Scopes) -> Vec<String> {
    scopes.keys().filter(|s| !s.starts_with("community:") && !s.starts_with("street:")).cloned().collect()
}

/// What is new in the device's scope since `cursor`, up to about `budget` bytes.
#[allow(clippy::too_many_arguments)]
pub fn pull(
    rules: &Rules<'_>,
    tx: &dyn ReadTx,
    device: &Device,
    scopes: &Scopes,
    from: &Position,
    budget: u64,
    accept_compacted: bool,
) -> Result<(Vec<PulledDoc>, Vec<String>, Position, bool)> {
    let cursor = from.seq;
    let head = tx.last_seq()?;
    if scopes.is_empty() {
        return Ok((vec![], vec![], Position::at(head), false));
    }
    let names: Vec<&str> = scopes.keys().map(String::as_str).collect();

    // What a pull reads is bounded whatever the scope holds (docs/SECURITY.md, "Bounded
    // resources"): at most MAX_PULL_JOIN_ROWS memberships and MAX_PULL_CHANGE_ROWS changes
    // after the cursor, in sequence order. When either is cut, `horizon` is the last sequence
    // number read in full, the walk stops there and the device is told there is more.
    let mut horizon = i64::MAX;

    // Documents that entered the device's view after the cursor: their whole history is due,
    // unless every change of theirs came from this device (its own new cases, right after
    // it pushed them), which this query leaves out at once.
    let mut rows = tx.joined_since(cursor, &names, &device.id, MAX_PULL_JOIN_ROWS, None)?;
    if rows.len() == MAX_PULL_JOIN_ROWS {
        let last = rows.last().map_or(cursor, |r| r.1);
        if last - 1 > cursor {
            horizon = last - 1;
            rows.retain(|r| r.1 <= horizon);
        } else {
            // Every row read joined at one sequence number: that one is read whole (the walk
            // below splits it across pages if it must).
            horizon = last;
            rows.extend(tx.joined_since(cursor, &names, &device.id, MAX_PULL_JOIN_ROWS, Some(last))?);
        }
    }
    let mut candidates: BTreeSet<String> = rows.into_iter().map(|r| r.0).collect();
    // A scope granted after the cursor brings the documents it held then, all at the sequence
    // number of the grant (later ones joined it after, and are read above).
    for (scope, granted) in scopes {
        if *granted > cursor && *granted <= horizon {
            candidates.extend(tx.docs_in_scope_by(scope, *granted)?);
        }
    }
    let mut joins: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    let mut join_at: HashMap<String, i64> = HashMap::new();
    for doc in candidates {
        let rows = tx.memberships(&doc)?;
        let effective = rows.iter().filter_map(|(s, j)| scopes.get(s).map(|g| (*j).max(*g))).min();
        let Some(e) = effective.filter(|e| *e > cursor && *e <= horizon) else { continue };
        // Sent already, in the first part of a sequence number split across pages.
        if e == cursor + 1 && from.after.as_ref().is_some_and(|a| doc <= *a) {
            join_at.insert(doc, e);
            continue;
        }
        joins.entry(e).or_default().push(doc.clone());
        join_at.insert(doc, e);
    }
    // Changes to documents already in view.
    let mut changes = tx.scope_changes_since(cursor, &names, MAX_PULL_CHANGE_ROWS)?;
    if changes.len() == MAX_PULL_CHANGE_ROWS {
        // One change per sequence number: everything up to the last one read is read.
        horizon = horizon.min(changes.last().map_or(cursor, |c| c.0));
    }
    changes.retain(|c| c.0 <= horizon);
    joins.retain(|s, _| *s <= horizon);

    // Walk both in sequence order until the byte budget is spent.
    let mut items: Vec<(i64, String, bool)> = changes.into_iter().map(|(s, d)| (s, d, false)).collect();
    for (s, docs) in &joins {
        items.extend(docs.iter().map(|d| (*s, d.clone(), true)));
    }
    // Within a sequence number, documents that joined come first, by id: that is the order a
    // page split inside one sequence number resumes from (`Position::after`).
    items.sort_by(|a, b| (a.0, !a.2, &a.1).cmp(&(b.0, !b.2, &b.1)));
    let mut out: Vec<PulledDoc> = vec![];
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut add = |out: &mut Vec<PulledDoc>, Pulled { doc, changes: bytes, compacted, receipts }: Pulled| {
        let slot = *index.entry(doc.clone()).or_insert_with(|| {
            out.push(PulledDoc { doc: doc.clone(), changes: vec![], compacted: None, receipts: vec![] });
            out.len() - 1
        });
        if let Some(c) = compacted {
            out[slot].compacted = Some(B64.encode(c));
        }
        out[slot].changes.extend(bytes.iter().map(|b| B64.encode(b)));
        out[slot].receipts.extend(receipts);
    };
    let mut used = 0u64;
    let mut to = from.clone();
    let mut more = false;
    let mut i = 0;
    'walk: while i < items.len() {
        let seq = items[i].0;
        // Items sharing a sequence number go together, so the cursor never splits them,
        // except a run of documents joining at one sequence number that does not fit one page:
        // it is split after a document, and the cursor says which (`Position::after`).
        let mut group: Vec<Pulled> = vec![];
        let mut size = 0u64;
        let mut last_join: Option<String> = None;
        while i < items.len() && items[i].0 == seq {
            let (s, doc, is_join) = items[i].clone();
            i += 1;
            let Some(p) = pulled(rules, tx, device, s, &doc, is_join, &join_at, accept_compacted)? else {
                continue;
            };
            let cost = p.cost();
            if used + size > 0 && used + size + cost > budget {
                more = true;
                if let Some(after) = last_join.filter(|_| !group.is_empty()) {
                    // Only joins come before this item in its sequence number: send those.
                    for p in group {
                        add(&mut out, p);
                    }
                    to = Position { seq: seq - 1, after: Some(after) };
                }
                break 'walk;
            }
            size += cost;
            if is_join {
                last_join = Some(doc);
            }
            group.push(p);
        }
        used += size;
        for p in group {
            add(&mut out, p);
        }
        to = Position::at(seq);
    }
    if !more {
        if horizon < i64::MAX {
            to = Position::at(horizon);
            more = true;
        } else {
            to = Position::at(to.seq.max(head));
        }
    }
    // Documents that left the device's view: in a scope the user lost, and in no scope kept.
    // A community or street stands for the grids placed in it (ever: whichever of them the
    // device still sees is kept below); a grid that left one of the user's communities or
    // streets since the cursor is a scope lost too.
    let removed = tx.scopes_lost_since(&device.user, cursor)?;
    let mut left = BTreeSet::new();
    for scope in removed {
        for d in tx.docs_in_scope(&scope)? {
            if !tx.memberships(&d)?.iter().any(|(s, _)| scopes.contains_key(s)) {
                left.insert(d);
            }
        }
    }
    Ok((out, left.into_iter().collect(), to, more))
}

/// What one item of a pull sends (None: nothing, the device made it all or a join covers it).
/// A device is never sent its own changes back: it made them, and an enrolled device's store
/// outlives its token (a reinstall enrols a new device).
#[allow(clippy::too_many_arguments)]
fn pulled(
    rules: &Rules<'_>,
    tx: &dyn ReadTx,
    device: &Device,
    s: i64,
    doc: &str,
    is_join: bool,
    join_at: &HashMap<String, i64>,
    accept_compacted: bool,
) -> Result<Option<Pulled>> {
    let rows: Vec<ChangeBytes> = if is_join {
        if tx.others_changes_upto(doc, s, &device.id)? == 0 {
            return Ok(None);
        }
        tx.history_upto(doc, s)?
    } else if join_at.get(doc).is_some_and(|j| s <= *j) {
        return Ok(None); // covered by the document's full history
    } else {
        tx.change_at(s, &device.id)?
    };
    if rows.is_empty() {
        return Ok(None);
    }
    let receipts = rows.iter().map(|c| rules.receipts.issue(doc, &c.hash, &c.device_id)).collect();
    let bytes: Vec<Vec<u8>> = rows.into_iter().map(|c| c.bytes).collect();
    // A long history goes to a device far behind as one compacted document.
    // Not a history that inflates past MAX_COMPACT_INPUT: compacting loads all of it.
    let compacted = (is_join && accept_compacted && bytes.len() >= COMPACT_FROM_CHANGES)
        .then(|| crate::ingest::compact_within(&bytes, MAX_COMPACT_INPUT))
        .flatten();
    Ok(Some(match compacted {
        Some(c) => Pulled { doc: doc.to_owned(), changes: vec![], compacted: Some(c), receipts },
        None => Pulled { doc: doc.to_owned(), changes: bytes, compacted: None, receipts },
    }))
}

/// Adds the whole history of each document the device asked for (`want_full`) and may see.
/// Outside the cursor: the device holds part of the document and lacks what it builds on
/// (see core::store::retention), so its own changes are sent too, and the cursor does not
/// move for them. Duplicates are harmless: the device stores a change once by its hash.
pub fn add_whole_documents(
    rules: &Rules<'_>,
    tx: &dyn ReadTx,
    scopes: &Scopes,
    wanted: &[String],
    budget: u64,
    out: &mut Vec<PulledDoc>,
) -> Result<()> {
    if wanted.is_empty() {
        return Ok(());
    }
    // Within the pull's byte budget, like the rest of the response: what does not fit the
    // device asks for again on its next sync.
    let mut used: u64 =
        out.iter().flat_map(|d| d.changes.iter().chain(d.compacted.iter())).map(|c| c.len() as u64).sum();
    for doc in wanted.iter().take(MAX_WANT_FULL) {
        if used >= budget {
            break;
        }
        let in_scope = tx.memberships(doc)?.iter().any(|(s, _)| scopes.contains_key(s));
        if !in_scope {
            continue;
        }
        let rows = tx.history_upto(doc, i64::MAX)?;
        used += rows.iter().map(|c| c.bytes.len() as u64 * 4 / 3 + 4).sum::<u64>();
        let encoded = rows.iter().map(|c| B64.encode(&c.bytes));
        let receipts = rows.iter().map(|c| rules.receipts.issue(doc, &c.hash, &c.device_id));
        match out.iter_mut().find(|d| &d.doc == doc) {
            Some(d) => {
                d.changes.extend(encoded);
                d.receipts.extend(receipts);
            }
            None => out.push(PulledDoc {
                doc: doc.clone(),
                changes: encoded.collect(),
                compacted: None,
                receipts: receipts.collect(),
            }),
        }
    }
    Ok(())
}

/// The sequence number a cursor stands for, and whether it is from another epoch (then the
/// pull starts over and the device is asked to re-offer what it holds).
///
/// A cursor this server cannot have issued — malformed, or in this epoch but past the last
/// sequence number it ever committed — is refused with `CursorUnknown`: answering it would
/// skip every change until the server caught up with it. The phone then starts over.
pub fn parse_cursor(
    epoch_now: &str,
    cursor: Option<&str>,
    head: impl FnOnce() -> Result<i64>,
) -> Result<(Position, bool)> {
    let Some(c) = cursor else { return Ok((Position::at(0), false)) };
    let unknown = || ServerError::CursorUnknown { cursor: c.chars().take(40).collect() };
    let mut parts = c.splitn(3, ':');
    let (Some(epoch), Some(seq)) = (parts.next(), parts.next()) else { return Err(unknown()) };
    let after = parts.next();
    let well_formed = |part: &str, max: usize, digit: fn(&char) -> bool| {
        !part.is_empty() && part.len() <= max && part.chars().all(|ch| digit(&ch))
    };
    if !well_formed(epoch, 16, char::is_ascii_hexdigit) || !well_formed(seq, 18, char::is_ascii_digit) {
        return Err(unknown());
    }
    // A split page names the last document it sent: a case id, as this server writes it.
    if let Some(a) = after {
        if gridwork_model::ids::CaseId::parse(a).map(|id| id.to_string() != a).unwrap_or(true) {
            return Err(unknown());
        }
    }
    let seq: i64 = seq.parse().map_err(|_| unknown())?;
    // A cursor from another epoch (a restored server) starts over from the beginning.
    if epoch != epoch_now {
        return Ok((Position::at(0), true));
    }
    let head = head()?;
    // A split page is inside a sequence number the server has committed.
    if seq > head || (after.is_some() && seq >= head) {
        return Err(unknown());
    }
    Ok((Position { seq, after: after.map(str::to_owned) }, false))
}

/// What a pull sends of one document: changes, or a compacted history (and changes after it).
#[derive(Debug)]
struct Pulled {
    doc: String,
    changes: Vec<Vec<u8>>,
    compacted: Option<Vec<u8>>,
    /// A receipt for each change, in `changes` or in `compacted`.
    receipts: Vec<String>,
}

impl Pulled {
    /// Its bytes in the response (base64, with quotes and a comma).
    fn cost(&self) -> u64 {
        self.changes.iter().chain(self.compacted.iter()).map(|b| b.len() as u64 * 4 / 3 + 4).sum::<u64>()
            + self.receipts.iter().map(|r| r.len() as u64 + 3).sum::<u64>()
    }
}

/// Where a device's pull stands, as its cursor says (`EPOCH:SEQ` or `EPOCH:SEQ:DOC`): every item
/// up to sequence number `seq` is delivered and, when `after` is set, of the documents that joined
/// the device's view at `seq + 1` those up to `after` (by id) are too — a page split inside one
/// sequence number, when a scope granted at once holds more than a page (docs/PROTOCOL.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub seq: i64,
    pub after: Option<String>,
}

impl Position {
    pub fn at(seq: i64) -> Self {
        Position { seq, after: None }
    }

    pub fn cursor(&self, epoch: &str) -> String {
        match &self.after {
            None => format!("{epoch}:{}", self.seq),
            Some(doc) => format!("{epoch}:{}:{doc}", self.seq),
        }
    }
}
