//! Reading a change without loading its document.
//!
//! `Change::from_bytes` gives hash, dependencies and actor; `decode()` gives the operations. That
//! is enough to find the lifecycle events a change adds (string puts into the document's `events`
//! map, whose object id the server learns from the change that created it) and the root fields
//! that decide where a case belongs (`grid`, `category`, `location`).

use crate::change_ops::{self, MapOp, Obj};
use automerge::legacy::{Key, ObjectId, OpType};
use automerge::{Change, ObjType, ScalarValue};
use gridwork_model::doc::keys;
use gridwork_model::ids::CaseId;
use gridwork_model::lifecycle::Event;
use std::io::Read;

/// What the server needs from one change.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeFacts {
    pub hash: String,
    pub actor: String,
    /// The change's sequence number among its actor's changes (1 for the actor's first).
    pub seq: u64,
    /// The other actors the change's operations name (objects, list elements, predecessors).
    pub others: Vec<String>,
    /// How many operations it holds.
    pub ops: usize,
    pub deps: Vec<String>,
    /// The first operation a case document never holds (a counter increment, a table, a text
    /// mark): such a change is refused, whoever sent it (docs/SECURITY.md).
    pub foreign_op: Option<String>,
    /// Set when this change creates the case's `events` map: its object id.
    pub events_obj_created: Option<String>,
    /// String puts on the root map: (key, value).
    pub root_puts: Vec<(String, String)>,
    /// String puts into other maps: (object id, key, value).
    pub map_puts: Vec<(String, String, String)>,
}

impl ChangeFacts {
    /// The lifecycle events this change adds, given the document's `events` object id, each with
    /// its JSON as the change holds it.
    pub fn events(&self, events_obj: &str) -> Vec<Result<(Event, &str), String>> {
        self.map_puts
            .iter()
            .filter(|(obj, _, _)| obj == events_obj)
            .map(|(_, key, json)| {
                serde_json::from_str::<Event>(json).map_err(|e| format!("event {key} is not readable: {e}")).and_then(
                    |e| {
                        if e.id.to_string() == *key {
                            Ok((e, json.as_str()))
                        } else {
                            Err(format!("event {key} is filed under another id"))
                        }
                    },
                )
            })
            .collect()
    }
}

pub fn obj_id(counter: u64, actor: &automerge::ActorId) -> String {
    format!("{counter}@{}", actor.to_hex_string())
}

/// Largest a pushed change may be once inflated: a case's longest text is 10,000 characters, so
/// a legitimate change is a few tens of KiB; this bounds what one compressed change can cost.
pub const MAX_CHANGE_BYTES: usize = 4 << 20;

/// Automerge's chunk magic, and the chunk type of a DEFLATE-compressed change.
const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const COMPRESSED_CHANGE: u8 = 2;

/// Most operations one pushed change may hold. A phone's largest change is a capture with a
/// 10,000-character description: about 10,000 operations.
pub const MAX_CHANGE_OPS: u64 = 200_000;

/// The change as an uncompressed chunk: a compressed one is inflated, refusing it past `limit`
/// bytes without inflating the rest (a few KiB of DEFLATE can stand for gigabytes, and
/// `Change::from_bytes` would inflate all of it). Bytes that are not a compressed chunk come back
/// as they are (the parser then says what is wrong with them). `Err(n)`: over `limit`.
fn uncompressed(bytes: &[u8], limit: usize) -> Result<std::borrow::Cow<'_, [u8]>, usize> {
    if bytes.len() > limit {
        return Err(bytes.len());
    }
    if bytes.get(..4) != Some(&MAGIC[..]) || bytes.get(8) != Some(&COMPRESSED_CHANGE) {
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }
    let mut rest = &bytes[9..];
    let Ok(len) = leb128::read::unsigned(&mut rest) else { return Ok(std::borrow::Cow::Borrowed(bytes)) };
    let body = rest.get(..usize::try_from(len).unwrap_or(usize::MAX).min(rest.len())).unwrap_or_default();
    let mut inflated = vec![];
    let read = flate2::read::DeflateDecoder::new(body).take(limit as u64 + 1).read_to_end(&mut inflated);
    if inflated.len() > limit {
        return Err(inflated.len());
    }
    if read.is_err() {
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }
    // The same change, uncompressed: magic, checksum, chunk type 1, length, body. Its hash and
    // checksum are the compressed chunk's (both are over the uncompressed change).
    let mut chunk = Vec::with_capacity(inflated.len() + 19);
    chunk.extend_from_slice(&bytes[..8]);
    chunk.push(1);
    let _ = leb128::write::unsigned(&mut chunk, inflated.len() as u64);
    chunk.extend_from_slice(&inflated);
    Ok(std::borrow::Cow::Owned(chunk))
}

/// How many bytes a change holds once inflated, refusing it past [`MAX_CHANGE_BYTES`] without
/// inflating the rest.
pub fn inflated_len(bytes: &[u8]) -> Result<usize, String> {
    uncompressed(bytes, MAX_CHANGE_BYTES)
        .map(|c| c.len().max(bytes.len()))
        .map_err(|_| format!("change inflates past the limit of {MAX_CHANGE_BYTES} bytes"))
}

/// Reads a change a device pushed, as strictly as a phone reads a case: the document id is a
/// case id; the bytes are a change whose checksum holds, no larger than [`MAX_CHANGE_BYTES`]
/// inflated nor than what is left of the request's `budget` (which it spends), whose columns
/// claim at most [`MAX_CHANGE_OPS`] operations (counted before automerge walks them: run-length
/// encoding lets a few bytes claim billions); and every string it puts on the document's root
/// passes [`gridwork_model::doc::check_root_string`] (its `id` naming this document). A
/// compressed change is inflated once. Errors are the reason the item is refused; nothing is
/// stored.
pub fn read_pushed(doc: &str, bytes: &[u8], budget: &mut usize) -> Result<ChangeFacts, String> {
    if CaseId::parse(doc).is_err() {
        return Err(format!("document id {:?} is not a case id (a UUID)", doc.chars().take(60).collect::<String>()));
    }
    let over_budget = || "this request's changes hold too many bytes: sent again in the next request".to_owned();
    if *budget == 0 {
        return Err(over_budget());
    }
    let limit = MAX_CHANGE_BYTES.min(*budget);
    let chunk = match uncompressed(bytes, limit) {
        Ok(c) => c,
        Err(_) if limit < MAX_CHANGE_BYTES => {
            *budget = 0;
            return Err(over_budget());
        }
        Err(_) => return Err(format!("change inflates past the limit of {MAX_CHANGE_BYTES} bytes")),
    };
    *budget = budget.saturating_sub(chunk.len());
    match change_ops::op_bound(&chunk, MAX_CHANGE_BYTES) {
        Ok(n) if n > MAX_CHANGE_OPS => {
            return Err(format!("change claims {n} operations; at most {MAX_CHANGE_OPS} are accepted"))
        }
        Ok(_) => {}
        Err(change_ops::Unreadable(why)) => return Err(format!("not an Automerge change: {why}")),
    }
    let (_, facts) = read_change(&chunk)?;
    if facts.ops == 0 {
        // No app makes one, and Automerge drops an empty change's actor from the document, so
        // that actor's next change would name an actor the document does not hold.
        return Err("empty change (no operations): refused".into());
    }
    if let Some(op) = &facts.foreign_op {
        return Err(format!("the change holds {op}, which no case document holds: refused"));
    }
    for (k, v) in &facts.root_puts {
        gridwork_model::doc::check_root_string(k, v).map_err(|e| format!("the change would damage the case: {e}"))?;
        if k == keys::ID && v != doc {
            return Err(format!("change creates document {v}, filed under {doc}"));
        }
    }
    Ok(facts)
}

/// Parses change bytes and reads what the server needs. Errors say why the bytes are not a change.
pub fn read_change(bytes: &[u8]) -> Result<(Change, ChangeFacts), String> {
    let change = Change::from_bytes(bytes.to_vec()).map_err(|e| format!("not an Automerge change: {e}"))?;
    // The chunk's checksum is the first four bytes of the SHA-256 that is the change's hash
    // (over the uncompressed change, for a compressed one). `from_bytes` does not compare them,
    // so a change damaged in transit or on a phone's disk would otherwise be stored as sent.
    if bytes.get(4..8) != Some(&change.hash().0[..4]) {
        return Err("the change's checksum does not match its contents: it was damaged; send it again".into());
    }
    // The column reader skips what `decode()` would expand (ADR 15); it reads only changes
    // `from_bytes` verified, and anything it does not expect goes the long way.
    let facts = match facts_from_columns(&change) {
        Some(f) => f,
        None => facts_by_decoding(&change)?,
    };
    Ok((change, facts))
}

fn bare_facts(change: &Change) -> ChangeFacts {
    ChangeFacts {
        hash: change.hash().to_string(),
        actor: change.actor_id().to_hex_string(),
        seq: change.seq(),
        others: change.other_actor_ids().iter().map(|a| a.to_hex_string()).collect(),
        ops: change.len(),
        deps: change.deps().iter().map(|d| d.to_string()).collect(),
        foreign_op: None,
        events_obj_created: None,
        root_puts: vec![],
        map_puts: vec![],
    }
}

/// The facts through [`change_ops::map_ops`]; None when it cannot read the change.
pub fn facts_from_columns(change: &Change) -> Option<ChangeFacts> {
    let ops = change_ops::map_ops(change).ok()?;
    let actor = |i: usize| if i == 0 { Some(change.actor_id()) } else { change.other_actor_ids().get(i - 1) };
    let mut facts = bare_facts(change);
    for op in ops {
        match op {
            MapOp::Foreign(what) => {
                facts.foreign_op.get_or_insert_with(|| what.to_owned());
            }
            MapOp::MakeMap { obj: Obj::Root, key, counter } if key == keys::EVENTS => {
                facts.events_obj_created = Some(obj_id(counter, change.actor_id()));
            }
            MapOp::MakeMap { .. } => {}
            MapOp::PutStr { obj: Obj::Root, key, value } => facts.root_puts.push((key, value)),
            MapOp::PutStr { obj: Obj::Id { counter, actor: a }, key, value } => {
                facts.map_puts.push((obj_id(counter, actor(a)?), key, value))
            }
        }
    }
    Some(facts)
}

/// The facts through `decode()`, which expands every operation: the reference the column
/// reader is tested against, and its fallback.
///
/// `decode()` panics on some changes `from_bytes` verified (an operation naming an actor index
/// past the change's actors, found by fuzzing: fuzz/README.md), so it runs fenced: a change it
/// cannot decode is an error, not a crash of the request.
pub fn facts_by_decoding(change: &Change) -> Result<ChangeFacts, String> {
    let decoded =
        fenced(|| change.decode()).map_err(|why| format!("not an Automerge change this server can read ({why})"))?;
    let start = change.start_op().get();
    let actor = change.actor_id();
    let mut facts = bare_facts(change);
    for (i, op) in decoded.operations.iter().enumerate() {
        let foreign = match &op.action {
            OpType::Increment(_) => Some(change_ops::action_name(change_ops::ACTION_INCREMENT)),
            OpType::Make(ObjType::Table) => Some(change_ops::action_name(change_ops::ACTION_MAKE_TABLE)),
            OpType::MarkBegin(..) | OpType::MarkEnd(..) => Some(change_ops::action_name(change_ops::ACTION_MARK)),
            _ => None,
        };
        if let Some(f) = foreign {
            facts.foreign_op.get_or_insert_with(|| f.to_owned());
            continue;
        }
        let Key::Map(key) = &op.key else { continue };
        if op.insert {
            facts
                .foreign_op
                .get_or_insert_with(|| change_ops::action_name(change_ops::INSERT_UNDER_A_MAP_KEY).to_owned());
            continue;
        }
        if op.obj == ObjectId::Root {
            let (action, value_type) = match &op.action {
                OpType::Make(ObjType::Map) => (change_ops::ACTION_MAKE_MAP, 0),
                OpType::Put(v) => (change_ops::ACTION_SET, value_type(v)),
                OpType::Make(ObjType::List) => (change_ops::ACTION_MAKE_LIST, 0),
                OpType::Delete => (change_ops::ACTION_DELETE, 0),
                OpType::Make(ObjType::Text) => (change_ops::ACTION_MAKE_TEXT, 0),
                _ => (u64::MAX, 0),
            };
            if let Some(misfit) = change_ops::root_misfit(key, action, value_type) {
                facts.foreign_op.get_or_insert_with(|| misfit.to_owned());
                continue;
            }
        }
        match (&op.obj, &op.action) {
            (ObjectId::Root, OpType::Make(ObjType::Map)) if key.as_str() == keys::EVENTS => {
                facts.events_obj_created = Some(obj_id(start + i as u64, actor));
            }
            (ObjectId::Root, OpType::Put(ScalarValue::Str(v))) => {
                facts.root_puts.push((key.to_string(), v.to_string()))
            }
            (ObjectId::Id(id), OpType::Put(ScalarValue::Str(v))) => {
                facts.map_puts.push((obj_id(id.0, &id.1), key.to_string(), v.to_string()))
            }
            _ => {}
        }
    }
    Ok(facts)
}

use gridwork_model::fence::fenced;

/// A scalar's type code in Automerge's value metadata (the column reader sees only the code).
fn value_type(v: &ScalarValue) -> u64 {
    match v {
        ScalarValue::Null => 0,
        ScalarValue::Boolean(false) => 1,
        ScalarValue::Boolean(true) => 2,
        ScalarValue::Uint(_) => 3,
        ScalarValue::Int(_) => 4,
        ScalarValue::F64(_) => 5,
        ScalarValue::Str(_) => 6,
        ScalarValue::Bytes(_) => 7,
        ScalarValue::Counter(_) => 8,
        ScalarValue::Timestamp(_) => 9,
        ScalarValue::Unknown { type_code, .. } => u64::from(*type_code),
    }
}

/// Why a change names an actor its document's history does not hold (`known` says which it
/// does), or None when every one is there: its own actor unless this is the actor's first change
/// in the document (seq 1), and every other actor its operations name. Automerge assumes this of
/// every change it applies and panics otherwise (fuzz/README.md), so the server checks it before
/// it stores a change (docs/SECURITY.md, "Document shape").
pub fn unknown_actor<E>(
    facts: &ChangeFacts,
    mut known: impl FnMut(&str) -> Result<bool, E>,
) -> Result<Option<String>, E> {
    if facts.seq != 1 && !known(&facts.actor)? {
        return Ok(Some(format!(
            "damaged change: it is change {} of actor {}, whose earlier changes the case does not hold",
            facts.seq, facts.actor
        )));
    }
    for other in &facts.others {
        if !known(other)? {
            return Ok(Some(format!("damaged change: it names actor {other}, which the case's history does not hold")));
        }
    }
    Ok(None)
}

/// [`compact`], unless the history inflates past `max_inflated` bytes (measured by streaming each
/// change through the inflater, not by holding it): then `None`, and the changes go as they are.
pub fn compact_within(changes: &[Vec<u8>], max_inflated: usize) -> Option<Vec<u8>> {
    let mut total = 0usize;
    for c in changes {
        total = total.saturating_add(inflated_len(c).ok()?);
        if total > max_inflated {
            return None;
        }
    }
    compact(changes)
}

/// The whole history in `changes` as one saved (compacted) document, for a device far behind.
/// None if the changes do not make a complete document (then they are sent as they are).
pub fn compact(changes: &[Vec<u8>]) -> Option<Vec<u8>> {
    let parsed: Vec<Change> = changes.iter().map(|b| Change::from_bytes(b.clone()).ok()).collect::<Option<_>>()?;
    // Fenced: a history Automerge cannot apply goes as its changes, which is what happens to one
    // it refuses with an error.
    fenced(|| {
        let mut doc = automerge::Automerge::new();
        doc.apply_changes(parsed).ok()?;
        // Every change applied (none left waiting for a dependency): the saved document holds them all.
        if doc.get_changes(&[]).len() != changes.len() {
            return None;
        }
        Some(doc.save())
    })
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::{ActorId, AutoCommit, ReadDoc, ROOT};
    use proptest::prelude::*;

    /// One edit a generated history makes; each becomes its own change.
    #[derive(Debug, Clone)]
    enum Edit {
        PutRoot(usize, String),
        PutInt(usize, i64),
        PutInMap(usize, usize, String),
        PutOther(usize, usize),
        Delete(usize),
        Splice(usize, String),
        ListInsert(String),
        Increment,
        /// The other actor edits a copy and the copies merge: later changes name two actors.
        FromPeer(String),
    }

    const ROOT_KEYS: [&str; 6] = [keys::GRID, keys::CATEGORY, keys::TITLE, keys::ID, "note", "码"];
    const MAPS: [&str; 3] = [keys::EVENTS, keys::EVIDENCE, "extra"];

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![".{0,40}", "[a-z ]{0,300}", "[巡查发现位置楼附近]{0,120}"]
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            (0..ROOT_KEYS.len(), text()).prop_map(|(k, v)| Edit::PutRoot(k, v)),
            (0..ROOT_KEYS.len(), any::<i64>()).prop_map(|(k, v)| Edit::PutInt(k, v)),
            (0..MAPS.len(), 0..5usize, text()).prop_map(|(m, k, v)| Edit::PutInMap(m, k, v)),
            (0..MAPS.len(), 0..5usize).prop_map(|(m, k)| Edit::PutOther(m, k)),
            (0..ROOT_KEYS.len()).prop_map(Edit::Delete),
            (0..20usize, text()).prop_map(|(at, t)| Edit::Splice(at, t)),
            text().prop_map(Edit::ListInsert),
            Just(Edit::Increment),
            text().prop_map(Edit::FromPeer),
        ]
    }

    fn map(doc: &AutoCommit, key: &str) -> automerge::ObjId {
        match doc.get(ROOT, key) {
            Ok(Some((_, id))) => id,
            other => panic!("{key} is missing: {other:?}"),
        }
    }

    /// A case-like document, then the edits: every change of its history.
    fn history(edits: &[Edit]) -> Vec<Change> {
        let mut doc = AutoCommit::new().with_actor(ActorId::from(&[1u8; 16][..]));
        doc.put(ROOT, keys::ID, "case-1").expect("edit the test document");
        let text_obj = doc.put_object(ROOT, keys::DESCRIPTION, ObjType::Text).expect("edit the test document");
        doc.splice_text(&text_obj, 0, 0, "巡查发现，位置在3号楼附近。Reported on patrol.")
            .expect("edit the test document");
        for m in MAPS {
            doc.put_object(ROOT, m, ObjType::Map).expect("edit the test document");
        }
        let list = doc.put_object(ROOT, "list", ObjType::List).expect("edit the test document");
        doc.put(ROOT, "count", ScalarValue::counter(0)).expect("edit the test document");
        doc.commit();
        for e in edits {
            match e {
                Edit::PutRoot(k, v) => doc.put(ROOT, ROOT_KEYS[*k], v.as_str()).expect("edit the test document"),
                Edit::PutInt(k, v) => doc.put(ROOT, ROOT_KEYS[*k], *v).expect("edit the test document"),
                Edit::PutInMap(m, k, v) => {
                    let obj = map(&doc, MAPS[*m]);
                    doc.put(&obj, format!("k{k}"), v.as_str()).expect("edit the test document")
                }
                Edit::PutOther(m, k) => {
                    let obj = map(&doc, MAPS[*m]);
                    doc.put(&obj, format!("k{k}"), 2.5f64).expect("edit the test document");
                    doc.put(&obj, format!("b{k}"), vec![1u8, 2, 3]).expect("edit the test document");
                    doc.put(&obj, format!("t{k}"), ScalarValue::Timestamp(7)).expect("edit the test document");
                    doc.put(&obj, format!("n{k}"), ScalarValue::Null).expect("edit the test document");
                }
                Edit::Delete(k) => {
                    if doc.get(ROOT, ROOT_KEYS[*k]).expect("edit the test document").is_some() {
                        doc.delete(ROOT, ROOT_KEYS[*k]).expect("edit the test document")
                    }
                }
                Edit::Splice(at, t) => {
                    let len = doc.length(&text_obj);
                    doc.splice_text(&text_obj, (*at).min(len), 0, t).expect("edit the test document")
                }
                Edit::ListInsert(t) => doc.insert(&list, 0, t.as_str()).expect("edit the test document"),
                Edit::Increment => doc.increment(ROOT, "count", 3).expect("edit the test document"),
                Edit::FromPeer(t) => {
                    let mut peer = doc.fork().with_actor(ActorId::from(&[2u8; 16][..]));
                    let events = map(&peer, keys::EVENTS);
                    peer.put(&events, "from-peer", t.as_str()).expect("edit the test document");
                    let nested = peer.put_object(&events, "nested", ObjType::Map).expect("edit the test document");
                    peer.put(&nested, "inside", t.as_str()).expect("edit the test document");
                    peer.commit();
                    doc.merge(&mut peer).expect("edit the test document");
                    // A change of ours into the peer's map: its object id names the other actor.
                    doc.put(&nested, "ours", t.as_str()).expect("edit the test document");
                }
            }
            doc.commit();
        }
        doc.get_changes(&[])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// The column reader is only a shortcut: for every change, plain or compressed as it
        /// travels, it must read exactly what `decode()` does, and it must read it itself.
        #[test]
        fn the_column_reader_reads_what_decode_reads(edits in proptest::collection::vec(edit(), 0..12)) {
            for mut change in history(&edits) {
                let wire = change.bytes().into_owned();
                let (parsed, facts) = read_change(&wire).expect("a change automerge wrote");
                let decoded = facts_by_decoding(&parsed).expect("a generated change decodes");
                prop_assert_eq!(facts_from_columns(&parsed), Some(decoded.clone()));
                prop_assert_eq!(facts, decoded);
            }
        }

        /// Whatever the bytes, the reader answers (an error at worst) and never panics.
        #[test]
        fn the_column_reader_survives_any_bytes(edits in proptest::collection::vec(edit(), 0..4),
                                                at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<bool>()) {
            for change in history(&edits) {
                let mut raw = change.raw_bytes().to_vec();
                let i = at.index(raw.len());
                if cut { raw.truncate(i) } else { raw[i] = byte }
                let _ = change_ops::map_ops_in(&raw, change.len());
                let _ = change_ops::map_ops_in(&raw, usize::MAX / 2);
            }
        }
    }

    /// A large change, as automerge sends it: compressed.
    fn compressed_change(padding: usize) -> Vec<u8> {
        let mut doc = AutoCommit::new();
        doc.put(ROOT, keys::ID, "0192a1b2-0000-7000-8000-000000000001").expect("id");
        doc.put(ROOT, "padding", "x".repeat(padding)).expect("padding");
        doc.commit();
        doc.get_last_local_change().expect("a change").bytes().into_owned()
    }

    #[test]
    fn a_change_whose_checksum_does_not_match_is_refused_plain_or_compressed() {
        let plain = history(&[])[0].raw_bytes().to_vec();
        let compressed = compressed_change(10_000);
        assert_eq!(compressed.get(8), Some(&COMPRESSED_CHANGE), "automerge compressed it");
        for good in [plain, compressed] {
            assert!(read_change(&good).is_ok());
            for at in 4..8 {
                let mut bad = good.clone();
                bad[at] ^= 0x5a;
                let err = read_change(&bad).expect_err("a damaged checksum");
                assert!(err.contains("checksum") || err.contains("not an Automerge change"), "{err}");
            }
        }
    }

    #[test]
    fn a_change_that_inflates_past_the_bound_is_refused_before_automerge_inflates_it() {
        let small = compressed_change(100_000);
        assert!(inflated_len(&small).expect("small enough") >= 100_000);
        let bomb = compressed_change(MAX_CHANGE_BYTES + 1);
        assert!(bomb.len() < 64 * 1024, "a few KiB on the wire: {}", bomb.len());
        let err = inflated_len(&bomb).expect_err("over the bound");
        assert!(err.contains("limit"), "{err}");
        let id = "0192a1b2-0000-7000-8000-000000000001";
        let mut budget = usize::MAX;
        assert!(read_pushed(id, &bomb, &mut budget).is_err());
        assert!(read_pushed(id, &small, &mut budget).is_ok());
        assert!(read_pushed("not-a-uuid", &small, &mut budget).expect_err("bad id").contains("not a case id"));
        // A request's budget is spent by what its changes inflate to; then the rest wait.
        let mut budget = 150_000;
        assert!(read_pushed(id, &small, &mut budget).is_ok());
        assert!(read_pushed(id, &small, &mut budget).expect_err("over budget").contains("next request"));
        assert_eq!(budget, 0);
    }

    /// A change chunk whose action column is one run claiming `ops` operations, in a few bytes.
    fn run_length_bomb(ops: i64) -> Vec<u8> {
        let mut column = vec![];
        leb128::write::signed(&mut column, ops).expect("write");
        leb128::write::unsigned(&mut column, 1).expect("write");
        let mut body = vec![0u8, 1, 0xaa, 1, 1, 0, 0, 0, 1, 0x42];
        leb128::write::unsigned(&mut body, column.len() as u64).expect("write");
        body.extend_from_slice(&column);
        let mut chunk = MAGIC.to_vec();
        chunk.extend_from_slice(&[0, 0, 0, 0, 1]);
        leb128::write::unsigned(&mut chunk, body.len() as u64).expect("write");
        chunk.extend_from_slice(&body);
        chunk
    }

    #[test]
    fn a_change_claiming_billions_of_operations_is_refused_before_automerge_walks_them() {
        let bomb = run_length_bomb(1 << 40);
        assert!(bomb.len() < 40, "a few bytes: {}", bomb.len());
        assert_eq!(change_ops::op_bound(&bomb, MAX_CHANGE_BYTES), Ok(1 << 40));
        let err =
            read_pushed("0192a1b2-0000-7000-8000-000000000001", &bomb, &mut usize::MAX.clone()).expect_err("refused");
        assert!(err.contains("operations"), "{err}");
        // A phone's own changes are far below the bound.
        for change in history(&[Edit::Splice(0, "巡查".repeat(100))]) {
            let n = change_ops::op_bound(change.raw_bytes(), MAX_CHANGE_BYTES).expect("readable");
            assert!(n >= change.len() as u64 && n < MAX_CHANGE_OPS, "{n} for {} ops", change.len());
        }
    }

    #[test]
    fn a_case_as_a_phone_writes_it_is_read_without_decoding() {
        let changes = history(&[Edit::PutInMap(0, 1, "{\"kind\":\"report\"}".into()), Edit::PutRoot(0, "g7".into())]);
        let facts: Vec<ChangeFacts> = changes.iter().map(|c| facts_from_columns(c).expect("read by columns")).collect();
        assert_eq!(facts[0].root_puts, vec![(keys::ID.to_owned(), "case-1".to_owned())]);
        let events = facts[0].events_obj_created.clone().expect("the first change creates the events map");
        assert_eq!(facts[1].map_puts, vec![(events, "k1".to_owned(), "{\"kind\":\"report\"}".to_owned())]);
        assert_eq!(facts[2].root_puts, vec![(keys::GRID.to_owned(), "g7".to_owned())]);
    }

    #[test]
    fn choosing_either_of_two_conflicting_titles_is_accepted_whatever_automerge_writes_for_it() {
        // Automerge resolves a conflict with a put, or with a delete of the value not kept,
        // depending on which value is chosen: both are what honest phones and the console send.
        let id = "0192a1b2-0000-7000-8000-000000000001";
        for keep in ["from a", "from b"] {
            let mut a = AutoCommit::new().with_actor(ActorId::from(&[1u8; 16][..]));
            a.put(ROOT, keys::ID, id).expect("id");
            a.put(ROOT, keys::TITLE, "x").expect("title");
            a.commit();
            let mut b = a.fork().with_actor(ActorId::from(&[2u8; 16][..]));
            a.put(ROOT, keys::TITLE, "from a").expect("title");
            a.commit();
            b.put(ROOT, keys::TITLE, "from b").expect("title");
            b.commit();
            a.merge(&mut b).expect("merge");
            let patch = gridwork_model::doc::CasePatch { title: Some(keep.into()), ..Default::default() };
            gridwork_model::doc::apply_patch(&mut a, &patch).expect("keep one");
            a.commit();
            let change = a.get_last_local_change().expect("a change").raw_bytes().to_vec();
            let read = read_pushed(id, &change, &mut usize::MAX.clone());
            assert!(read.is_ok(), "keeping {keep:?}: {read:?}");
        }
    }
}
