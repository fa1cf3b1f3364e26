//! Reading a change without loading its document.
//!
//! `Change::from_bytes` gives hash, dependencies and actor; `decode()` gives the operations. That
//! is enough to find the lifecycle events a change adds (string puts into the document's `events`
//! map, whose object id the server learns from the change that created it) and the root fields
//! that decide where a case belongs (`grid`, `category`, `location`).

use automerge::legacy::{Key, ObjectId, OpType};
use automerge::{Change, ObjType, ScalarValue};
use gridwork_model::doc::keys;
use gridwork_model::lifecycle::Event;

/// What the server needs from one change.
#[derive(Debug, Clone)]
pub struct ChangeFacts {
    pub hash: String,
    pub actor: String,
    pub deps: Vec<String>,
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

/// Parses and decodes change bytes. Errors say why the bytes are not a change.
pub fn read_change(bytes: &[u8]) -> Result<(Change, ChangeFacts), String> {
    let change = Change::from_bytes(bytes.to_vec()).map_err(|e| format!("not an Automerge change: {e}"))?;
    let decoded = change.decode();
    let start = change.start_op().get();
    let actor = change.actor_id().clone();
    let mut facts = ChangeFacts {
        hash: change.hash().to_string(),
        actor: actor.to_hex_string(),
        deps: change.deps().iter().map(|d| d.to_string()).collect(),
        events_obj_created: None,
        root_puts: vec![],
        map_puts: vec![],
    };
    for (i, op) in decoded.operations.iter().enumerate() {
        let Key::Map(key) = &op.key else { continue };
        match (&op.obj, &op.action) {
            (ObjectId::Root, OpType::Make(ObjType::Map)) if key.as_str() == keys::EVENTS => {
                facts.events_obj_created = Some(obj_id(start + i as u64, &actor));
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
    Ok((change, facts))
}

/// The whole history in `changes` as one saved (compacted) document, for a device far behind.
/// None if the changes do not make a complete document (then they are sent as they are).
pub fn compact(changes: &[Vec<u8>]) -> Option<Vec<u8>> {
    let parsed: Vec<Change> = changes.iter().map(|b| Change::from_bytes(b.clone()).ok()).collect::<Option<_>>()?;
    let mut doc = automerge::Automerge::new();
    doc.apply_changes(parsed).ok()?;
    // Every change applied (none left waiting for a dependency): the saved document holds them all.
    if doc.get_changes(&[]).len() != changes.len() {
        return None;
    }
    Some(doc.save())
}
