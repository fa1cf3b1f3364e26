//! How a case maps onto one Automerge document.
//!
//! | key          | Automerge type            | merge behaviour                                   |
//! |--------------|---------------------------|---------------------------------------------------|
//! | `schema`, `id`, `code`, `created_ms`, `reporter` | scalars, written once at capture | never edited |
//! | `title`      | register (str)            | concurrent sets conflict; both stay readable      |
//! | `description`| Text                      | concurrent edits merge character by character     |
//! | `category`   | register (str)            | conflict, as title                                |
//! | `grid`       | register (str)            | conflict, as title                                |
//! | `location`   | register (JSON str)       | one value: lat, lon and accuracy never mix        |
//! | `events`     | map: event id → JSON str  | grow-only; see [`crate::lifecycle`]               |
//! | `evidence`   | map: sha256 → JSON str    | grow-only set of [`EvidenceRef`]                  |
//! | `official_number` | register (str)       | written by the server                             |
//!
//! An action writes only the fields it changes: re-putting an unchanged register would silently
//! resolve an open conflict on it (the new op supersedes every value it has seen).

use automerge::transaction::Transactable;
use automerge::{ObjType, ReadDoc, ScalarValue, Value, ROOT};
use serde::{Deserialize, Serialize};

use crate::evidence::EvidenceRef;
use crate::geo::Location;
use crate::ids::{CaseId, CategoryId, EventId, GridId, UserId};
use crate::lifecycle::{fold, Event, Timeline};
use crate::ModelError;

/// Version of this mapping, stored in every document.
pub const SCHEMA_VERSION: i64 = 1;

pub mod keys {
    pub const SCHEMA: &str = "schema";
    pub const ID: &str = "id";
    pub const CODE: &str = "code";
    pub const CREATED_MS: &str = "created_ms";
    pub const REPORTER: &str = "reporter";
    pub const TITLE: &str = "title";
    pub const DESCRIPTION: &str = "description";
    pub const CATEGORY: &str = "category";
    pub const GRID: &str = "grid";
    pub const LOCATION: &str = "location";
    pub const EVENTS: &str = "events";
    pub const EVIDENCE: &str = "evidence";
    pub const OFFICIAL_NUMBER: &str = "official_number";
}

/// Longest identifier a case document may name (grid, category, reporter, case code).
pub const MAX_ID_CHARS: usize = 200;

/// Checks a string a change puts on a case document's root, as strictly as reading the case
/// back ([`read_case`]) would: an id that is not a case id, a location that is not a valid fix,
/// an overlong title or an identifier with control characters is refused before it is stored,
/// so no replica ever holds a document it cannot show. Keys this schema does not know pass (a
/// newer app may write them).
pub fn check_root_string(key: &str, value: &str) -> Result<(), ModelError> {
    let malformed = |reason: String| ModelError::MalformedDocument { reason };
    match key {
        keys::ID => {
            CaseId::parse(value).map_err(|_| malformed(format!("id {:?} is not a case id", short(value))))?;
        }
        keys::LOCATION => {
            let loc: Location = serde_json::from_str(value).map_err(|e| malformed(format!("location: {e}")))?;
            crate::geo::check_coordinates(loc.lat, loc.lon)?;
            if !loc.accuracy_m.is_finite() || loc.accuracy_m < 0.0 {
                return Err(ModelError::InvalidAccuracy { accuracy_m: loc.accuracy_m });
            }
        }
        keys::TITLE => crate::error::check_text("title", value)?,
        keys::GRID | keys::CATEGORY | keys::REPORTER | keys::CODE | keys::OFFICIAL_NUMBER
            if value.chars().count() > MAX_ID_CHARS || value.chars().any(char::is_control) =>
        {
            return Err(malformed(format!("{key} {:?} is not an identifier", short(value))));
        }
        _ => {}
    }
    Ok(())
}

/// What a case document's root key holds: what [`new_case_doc`](self) and [`apply_patch`] write
/// there and [`read_case`] reads. A change that puts anything else at one of these keys, or
/// deletes one, would leave a document no replica can show; the server refuses it at ingest.
/// Keys this schema does not know are `None`: a newer app may write them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootField {
    /// A string scalar (checked further by [`check_root_string`]).
    Str,
    /// An integer or a timestamp (`schema`, `created_ms`).
    Number,
    /// The description's Automerge text.
    Text,
    /// A map (`events`, `evidence`).
    Map,
}

/// The kind of `key` on a case's root, if the schema defines it.
pub fn root_field(key: &str) -> Option<RootField> {
    match key {
        keys::ID
        | keys::CODE
        | keys::REPORTER
        | keys::TITLE
        | keys::CATEGORY
        | keys::GRID
        | keys::LOCATION
        | keys::OFFICIAL_NUMBER => Some(RootField::Str),
        keys::SCHEMA | keys::CREATED_MS => Some(RootField::Number),
        keys::DESCRIPTION => Some(RootField::Text),
        keys::EVENTS | keys::EVIDENCE => Some(RootField::Map),
        _ => None,
    }
}

/// The start of a value quoted in an error (an attacker's megabyte is not echoed back).
fn short(value: &str) -> String {
    value.chars().take(60).collect()
}

/// What a worker enters at capture (already validated against the catalog by the caller).
#[derive(Debug, Clone, PartialEq)]
pub struct NewCaseDoc {
    pub id: CaseId,
    pub code: String,
    pub created_ms: i64,
    pub reporter: UserId,
    pub title: String,
    pub description: String,
    pub category: CategoryId,
    pub grid: GridId,
    pub location: Location,
}

/// A register's value and, when devices set it concurrently, every value still standing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Field<T> {
    /// Automerge's deterministic pick, shown until someone chooses.
    pub value: T,
    /// All concurrent values (including `value`) when there is a conflict; empty otherwise.
    pub conflicts: Vec<T>,
}

impl<T> Field<T> {
    pub fn in_conflict(&self) -> bool {
        !self.conflicts.is_empty()
    }
}

/// A case as read from its document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseDoc {
    pub id: CaseId,
    pub code: String,
    pub created_ms: i64,
    pub reporter: UserId,
    pub title: Field<String>,
    pub description: String,
    pub category: Field<CategoryId>,
    pub grid: Field<GridId>,
    pub location: Field<Location>,
    pub evidence: Vec<EvidenceRef>,
    pub official_number: Option<String>,
    pub timeline: Timeline,
    /// Event entries that could not be parsed at all (kept in the document, not shown).
    pub unreadable_events: usize,
}

/// A field-level conflict, for display: the field and each standing value as text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    pub field: String,
    pub values: Vec<String>,
}

impl CaseDoc {
    pub fn conflicts(&self) -> Vec<Conflict> {
        let mut out = vec![];
        let mut push = |field: &str, values: Vec<String>| {
            if !values.is_empty() {
                out.push(Conflict { field: field.to_owned(), values });
            }
        };
        push(keys::TITLE, self.title.conflicts.clone());
        push(keys::CATEGORY, self.category.conflicts.iter().map(|c| c.0.clone()).collect());
        push(keys::GRID, self.grid.conflicts.iter().map(|g| g.0.clone()).collect());
        push(
            keys::LOCATION,
            self.location.conflicts.iter().map(|l| format!("{:.6},{:.6} ±{}m", l.lat, l.lon, l.accuracy_m)).collect(),
        );
        out
    }
}

/// A change to a case's editable fields. `None` leaves a field untouched — and its conflicts open.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CasePatch {
    pub title: Option<String>,
    pub description: Option<String>,
    pub category: Option<CategoryId>,
    pub grid: Option<GridId>,
    pub location: Option<Location>,
}

fn json<T: Serialize>(v: &T) -> Result<String, ModelError> {
    serde_json::to_string(v).map_err(|e| ModelError::MalformedDocument { reason: e.to_string() })
}

/// Writes a new case document's initial state and its report event.
pub fn init_case<T: Transactable>(tx: &mut T, new: &NewCaseDoc, report: &Event) -> Result<(), ModelError> {
    tx.put(ROOT, keys::SCHEMA, SCHEMA_VERSION)?;
    tx.put(ROOT, keys::ID, new.id.to_string())?;
    tx.put(ROOT, keys::CODE, new.code.as_str())?;
    tx.put(ROOT, keys::CREATED_MS, ScalarValue::Timestamp(new.created_ms))?;
    tx.put(ROOT, keys::REPORTER, new.reporter.as_str())?;
    tx.put(ROOT, keys::TITLE, new.title.as_str())?;
    let text = tx.put_object(ROOT, keys::DESCRIPTION, ObjType::Text)?;
    tx.splice_text(&text, 0, 0, &new.description)?;
    tx.put(ROOT, keys::CATEGORY, new.category.as_str())?;
    tx.put(ROOT, keys::GRID, new.grid.as_str())?;
    tx.put(ROOT, keys::LOCATION, json(&new.location)?)?;
    tx.put_object(ROOT, keys::EVIDENCE, ObjType::Map)?;
    tx.put_object(ROOT, keys::EVENTS, ObjType::Map)?;
    put_event(tx, report)
}

fn map_obj<R: ReadDoc>(doc: &R, key: &str) -> Result<automerge::ObjId, ModelError> {
    match doc.get(ROOT, key)? {
        Some((Value::Object(ObjType::Map), id)) => Ok(id),
        _ => Err(ModelError::MalformedDocument { reason: format!("`{key}` is missing or not a map") }),
    }
}

/// Adds an immutable lifecycle event.
pub fn put_event<T: Transactable>(tx: &mut T, event: &Event) -> Result<(), ModelError> {
    let events = map_obj(tx, keys::EVENTS)?;
    tx.put(&events, event.id.to_string(), json(event)?)?;
    Ok(())
}

/// Adds a piece of evidence (idempotent: keyed by its hash).
pub fn put_evidence<T: Transactable>(tx: &mut T, evidence: &EvidenceRef) -> Result<(), ModelError> {
    let map = map_obj(tx, keys::EVIDENCE)?;
    if tx.get(&map, evidence.sha256.as_str())?.is_none() {
        tx.put(&map, evidence.sha256.as_str(), json(evidence)?)?;
    }
    Ok(())
}

/// Writes the fields of `patch` that differ from what the document holds. Returns how many
/// fields were written. A field in conflict is always written when the patch names it: that is
/// how a person resolves the conflict.
pub fn apply_patch<T: Transactable>(tx: &mut T, patch: &CasePatch) -> Result<usize, ModelError> {
    let mut written = 0;
    let mut set_register = |tx: &mut T, key: &str, value: String| -> Result<(), ModelError> {
        let current = tx.get_all(ROOT, key)?;
        let unchanged = current.len() == 1 && scalar_str(&current[0].0).as_deref() == Some(value.as_str());
        if !unchanged {
            tx.put(ROOT, key, value)?;
            written += 1;
        }
        Ok(())
    };
    if let Some(t) = &patch.title {
        set_register(tx, keys::TITLE, t.clone())?;
    }
    if let Some(c) = &patch.category {
        set_register(tx, keys::CATEGORY, c.0.clone())?;
    }
    if let Some(g) = &patch.grid {
        set_register(tx, keys::GRID, g.0.clone())?;
    }
    if let Some(l) = &patch.location {
        set_register(tx, keys::LOCATION, json(l)?)?;
    }
    if let Some(d) = &patch.description {
        let text = match tx.get(ROOT, keys::DESCRIPTION)? {
            Some((Value::Object(ObjType::Text), id)) => id,
            _ => return Err(ModelError::MalformedDocument { reason: "description is not text".into() }),
        };
        if tx.text(&text)? != *d {
            // A diff, not a replacement, so a concurrent edit elsewhere in the text survives.
            tx.update_text(&text, d)?;
            written += 1;
        }
    }
    Ok(written)
}

fn scalar_str(v: &Value<'_>) -> Option<String> {
    match v {
        Value::Scalar(s) => match s.as_ref() {
            ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        },
        Value::Object(_) => None,
    }
}

fn value_ref_str(v: &automerge::ValueRef<'_>) -> Option<String> {
    match v {
        automerge::ValueRef::Scalar(automerge::ScalarValueRef::Str(s)) => Some(s.to_string()),
        _ => None,
    }
}

fn scalar_i64(v: &Value<'_>) -> Option<i64> {
    match v {
        Value::Scalar(s) => match s.as_ref() {
            ScalarValue::Int(i) | ScalarValue::Timestamp(i) => Some(*i),
            ScalarValue::Uint(u) => i64::try_from(*u).ok(),
            _ => None,
        },
        Value::Object(_) => None,
    }
}

fn read_str<R: ReadDoc>(doc: &R, key: &str) -> Result<String, ModelError> {
    doc.get(ROOT, key)?
        .and_then(|(v, _)| scalar_str(&v))
        .ok_or_else(|| ModelError::MalformedDocument { reason: format!("`{key}` is missing or not a string") })
}

fn read_field<R: ReadDoc, T>(
    doc: &R,
    key: &str,
    parse: impl Fn(&str) -> Result<T, ModelError>,
) -> Result<Field<T>, ModelError> {
    let value = parse(&read_str(doc, key)?)?;
    let all = doc.get_all(ROOT, key)?;
    let conflicts = if all.len() > 1 {
        all.iter().filter_map(|(v, _)| scalar_str(v)).map(|s| parse(&s)).collect::<Result<Vec<T>, _>>()?
    } else {
        vec![]
    };
    Ok(Field { value, conflicts })
}

fn parse_location(s: &str) -> Result<Location, ModelError> {
    serde_json::from_str(s).map_err(|e| ModelError::MalformedDocument { reason: format!("location: {e}") })
}

/// Every event in the document, parsed. Entries that cannot be parsed are counted, not dropped
/// from the document.
pub fn read_events<R: ReadDoc>(doc: &R) -> Result<(Vec<Event>, usize), ModelError> {
    let events = map_obj(doc, keys::EVENTS)?;
    let mut out = vec![];
    let mut unreadable = 0;
    for item in doc.map_range(&events, ..) {
        match value_ref_str(&item.value).and_then(|s| serde_json::from_str::<Event>(&s).ok()) {
            Some(e) => out.push(e),
            None => unreadable += 1,
        }
    }
    Ok((out, unreadable))
}

/// Parents and Lamport number for the next event: the current heads of the event graph.
pub fn next_event_position<R: ReadDoc>(doc: &R) -> Result<(Vec<EventId>, u64), ModelError> {
    let (events, _) = read_events(doc)?;
    let referenced: std::collections::HashSet<EventId> =
        events.iter().flat_map(|e| e.parents.iter().copied()).collect();
    let mut heads: Vec<EventId> = events.iter().map(|e| e.id).filter(|id| !referenced.contains(id)).collect();
    heads.sort();
    let lamport = events.iter().map(|e| e.lamport).max().unwrap_or(0) + 1;
    Ok((heads, lamport))
}

/// Reads a whole case: fields with their conflicts, evidence, and the folded timeline.
pub fn read_case<R: ReadDoc>(doc: &R) -> Result<CaseDoc, ModelError> {
    let id = CaseId::parse(&read_str(doc, keys::ID)?)
        .map_err(|e| ModelError::MalformedDocument { reason: format!("id: {e}") })?;
    let created_ms = doc.get(ROOT, keys::CREATED_MS)?.and_then(|(v, _)| scalar_i64(&v)).unwrap_or(0);
    let description = match doc.get(ROOT, keys::DESCRIPTION)? {
        Some((Value::Object(ObjType::Text), t)) => doc.text(&t)?,
        _ => String::new(),
    };
    let evidence_map = map_obj(doc, keys::EVIDENCE)?;
    let evidence = doc
        .map_range(&evidence_map, ..)
        .filter_map(|item| value_ref_str(&item.value).and_then(|s| serde_json::from_str::<EvidenceRef>(&s).ok()))
        .collect();
    let (events, unreadable_events) = read_events(doc)?;
    Ok(CaseDoc {
        id,
        code: read_str(doc, keys::CODE)?,
        created_ms,
        reporter: UserId(read_str(doc, keys::REPORTER)?),
        title: read_field(doc, keys::TITLE, |s| Ok(s.to_owned()))?,
        description,
        category: read_field(doc, keys::CATEGORY, |s| Ok(CategoryId::from(s)))?,
        grid: read_field(doc, keys::GRID, |s| Ok(GridId::from(s)))?,
        location: read_field(doc, keys::LOCATION, parse_location)?,
        evidence,
        official_number: doc.get(ROOT, keys::OFFICIAL_NUMBER)?.and_then(|(v, _)| scalar_str(&v)),
        timeline: fold(events),
        unreadable_events,
    })
}
