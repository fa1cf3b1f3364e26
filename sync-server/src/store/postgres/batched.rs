//! A push's writes sent together, and what the write transaction knows it wrote (ADR 21).
//!
//! On PostgreSQL every statement is a round trip, and a new case took about twelve of them: the
//! rules ask the port one small question or write at a time. Here the rows a push writes to
//! `changes`, `doc_events`, `doc_actors`, `actors`, `membership`, `docs` and `records`, and when
//! its device was seen, wait in memory and go in together (`flush`): one statement, an array per
//! table, each table's insert a data-modifying `WITH` of it — at the end of the push (before its
//! savepoint is released) or of the group commit, and before any statement that could read
//! them. And the documents a push names that the database held nothing of (`prefetch`, one
//! query for the whole push) are answered from what this transaction wrote of them, as are the
//! changes it stored by hash: a push of new cases reads nothing back.
//!
//! The rule that keeps this right: every write of a kept table goes through here, so for a
//! document in [`Batched::fresh`] the shadow is exactly what the database holds plus what waits;
//! any other write that touches a document or a hash drops it from the caches (`forget_doc`,
//! `forget_hash`) after flushing, and every other read flushes first.

use std::collections::{BTreeMap, HashMap};

use crate::store::port::{CaseRow, CaseRowNow, NewRecord, Whereabouts};

/// A change waiting to be written.
#[derive(Debug, Clone)]
pub(super) struct PendingChange {
    pub seq: i64,
    pub hash: String,
    pub doc_id: String,
    pub device_id: String,
    pub received_ms: i64,
    pub bytes: Vec<u8>,
}

/// A case row waiting to be written (`CaseRow`, owned).
#[derive(Debug, Clone)]
pub(super) struct PendingRow {
    pub doc_id: String,
    pub status: String,
    pub deadline_ms: Option<i64>,
    pub flags: String,
    pub departments: String,
    pub reported_ms: Option<i64>,
    pub queue_key: String,
    pub grid_id: Option<String>,
    pub category_id: Option<String>,
    pub title: Option<String>,
    pub code: Option<String>,
    pub reporter: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub events_obj: Option<String>,
    pub updated_seq: i64,
}

impl PendingRow {
    pub(super) fn from(c: &CaseRow<'_>) -> PendingRow {
        let own = |s: Option<&str>| s.map(str::to_owned);
        PendingRow {
            doc_id: c.doc_id.to_owned(),
            status: c.status.to_owned(),
            deadline_ms: c.deadline_ms,
            flags: c.flags.clone(),
            departments: c.departments.clone(),
            reported_ms: c.reported_ms,
            queue_key: c.queue_key.clone(),
            grid_id: own(c.grid_id),
            category_id: own(c.category_id),
            title: own(c.title),
            code: own(c.code),
            reporter: own(c.reporter),
            lat: c.position.map(|p| p.0),
            lon: c.position.map(|p| p.1),
            events_obj: own(c.events_obj),
            updated_seq: c.updated_seq,
        }
    }
}

/// A record waiting to be written (`NewRecord`, owned; the check-in's columns `None` for a
/// record that is not one).
#[derive(Debug, Clone)]
pub(super) struct PendingRecord {
    pub id: String,
    pub device_id: String,
    pub received_ms: i64,
    pub body: String,
    pub grid: Option<String>,
    pub point: Option<String>,
    pub user: Option<String>,
    pub at_ms: Option<i64>,
    pub day: Option<String>,
    pub inside_grid: Option<bool>,
    pub distance_m: Option<f64>,
    pub mock: Option<bool>,
}

impl PendingRecord {
    pub(super) fn from(r: &NewRecord<'_>) -> PendingRecord {
        let c = r.check_in.as_ref();
        PendingRecord {
            id: r.id.to_owned(),
            device_id: r.device_id.to_owned(),
            received_ms: r.received_ms,
            body: r.body.to_owned(),
            grid: c.map(|c| c.grid.to_owned()),
            point: c.and_then(|c| c.point.map(str::to_owned)),
            user: c.map(|c| c.user.to_owned()),
            at_ms: c.map(|c| c.at_ms),
            day: c.map(|c| c.day.clone()),
            inside_grid: c.map(|c| c.inside_grid),
            distance_m: c.and_then(|c| c.distance_m),
            mock: c.map(|c| c.mock),
        }
    }
}

/// When a device was last seen, waiting to be written. `at_least`: the time only moves forward
/// (a sighting kept from an idle sync, which a later push may have passed already).
#[derive(Debug, Clone)]
pub(super) struct PendingSighting {
    pub device_id: String,
    pub at_ms: i64,
    pub state: String,
    pub at_least: bool,
}

/// What this transaction wrote of a document the database held nothing of.
#[derive(Debug, Clone, Default)]
pub(super) struct Shadow {
    /// The device of its first change.
    pub creator: Option<String>,
    /// (event id, JSON), once per event id.
    pub events: Vec<(String, String)>,
    /// Actor → the highest sequence number it used here.
    pub actors: HashMap<String, i64>,
    /// (scope, joined at), once per scope.
    pub memberships: Vec<(String, i64)>,
    pub events_obj: Option<String>,
    pub row: Option<CaseRowNow>,
}

/// The rows waiting, and what the transaction knows.
#[derive(Debug, Default)]
pub(super) struct Batched {
    pub changes: Vec<PendingChange>,
    pub events: Vec<(String, String, String)>,
    /// (document, actor) → highest sequence number.
    pub doc_actors: BTreeMap<(String, String), i64>,
    pub actors: Vec<(String, String, i64)>,
    pub memberships: Vec<(String, String, i64, String)>,
    pub rows: Vec<PendingRow>,
    pub records: Vec<PendingRecord>,
    /// At most one per device (a second is written after the first: `sighting_waiting`).
    pub sightings: Vec<PendingSighting>,
    /// Documents the database held nothing of when `prefetch` looked, with what was written
    /// of them since.
    pub fresh: HashMap<String, Shadow>,
    /// Where hashes were in the database when `prefetch` looked.
    pub hashes: HashMap<String, Whereabouts>,
    /// Changes this transaction stored: hash → (device, document, sequence number).
    pub stored: HashMap<String, (String, String, i64)>,
    /// Actors this transaction registered → their device.
    pub actor_owners: HashMap<String, String>,
    /// Actors the database had no owner for when this transaction asked (and that it has not
    /// registered since).
    pub actors_unowned: std::collections::HashSet<String>,
}

impl Batched {
    pub(super) fn waiting(&self) -> bool {
        !(self.changes.is_empty()
            && self.events.is_empty()
            && self.doc_actors.is_empty()
            && self.actors.is_empty()
            && self.memberships.is_empty()
            && self.rows.is_empty()
            && self.records.is_empty()
            && self.sightings.is_empty())
    }

    /// Everything known and waiting dropped (a push rolled back to its savepoint).
    pub(super) fn discard(&mut self) {
        *self = Batched::default();
    }

    pub(super) fn forget_doc(&mut self, doc_id: &str) {
        self.fresh.remove(doc_id);
    }

    pub(super) fn forget_hash(&mut self, hash: &str) {
        self.hashes.remove(hash);
    }

    pub(super) fn note_change(&mut self, c: PendingChange) {
        self.stored.insert(c.hash.clone(), (c.device_id.clone(), c.doc_id.clone(), c.seq));
        if let Some(s) = self.fresh.get_mut(&c.doc_id) {
            if s.creator.is_none() {
                s.creator = Some(c.device_id.clone());
            }
        }
        self.changes.push(c);
    }

    pub(super) fn note_event(&mut self, doc_id: &str, event_id: &str, json: &str) {
        if let Some(s) = self.fresh.get_mut(doc_id) {
            if s.events.iter().any(|(id, _)| id == event_id) {
                return; // ON CONFLICT DO NOTHING
            }
            s.events.push((event_id.to_owned(), json.to_owned()));
        }
        self.events.push((doc_id.to_owned(), event_id.to_owned(), json.to_owned()));
    }

    pub(super) fn note_doc_actor(&mut self, doc_id: &str, actor: &str, seq: i64) {
        if let Some(s) = self.fresh.get_mut(doc_id) {
            let last = s.actors.entry(actor.to_owned()).or_insert(seq);
            *last = (*last).max(seq);
        }
        let last = self.doc_actors.entry((doc_id.to_owned(), actor.to_owned())).or_insert(seq);
        *last = (*last).max(seq);
    }

    /// False when the actor was registered in this transaction already (DO NOTHING).
    pub(super) fn note_actor(&mut self, actor: &str, device_id: &str, now_ms: i64) -> bool {
        if self.actor_owners.contains_key(actor) {
            return false;
        }
        self.actor_owners.insert(actor.to_owned(), device_id.to_owned());
        self.actors_unowned.remove(actor);
        self.actors.push((actor.to_owned(), device_id.to_owned(), now_ms));
        true
    }

    pub(super) fn note_memberships(&mut self, doc_id: &str, scopes: &[&str], seq: i64, status: &str) {
        if let Some(s) = self.fresh.get_mut(doc_id) {
            for scope in scopes {
                if !s.memberships.iter().any(|(m, _)| m == scope) {
                    s.memberships.push(((*scope).to_owned(), seq));
                }
            }
        }
        for scope in scopes {
            self.memberships.push((doc_id.to_owned(), (*scope).to_owned(), seq, status.to_owned()));
        }
    }

    /// Whether a sighting of this device waits already (it must be written before another: the
    /// two may differ in `at_least`).
    pub(super) fn sighting_waiting(&self, device_id: &str) -> bool {
        self.sightings.iter().any(|s| s.device_id == device_id)
    }

    /// Whether a row for this document waits already (it must be written before another).
    pub(super) fn row_waiting(&self, doc_id: &str) -> bool {
        self.rows.iter().any(|r| r.doc_id == doc_id)
    }

    pub(super) fn note_row(&mut self, row: PendingRow) {
        if let Some(s) = self.fresh.get_mut(&row.doc_id) {
            // As the upsert writes it: the category kept when not given, the events map once set.
            let category_id = row.category_id.clone().or_else(|| s.row.as_ref().and_then(|r| r.category_id.clone()));
            s.row = Some(CaseRowNow { category_id, flags: row.flags.clone(), reported_ms: row.reported_ms });
            if s.events_obj.is_none() {
                s.events_obj = row.events_obj.clone();
            }
        }
        self.rows.push(row);
    }

    /// Where a hash is, when this transaction knows: stored by it, or as `prefetch` found it.
    pub(super) fn whereabouts(&self, hash: &str) -> Option<Whereabouts> {
        if let Some((device, doc, _)) = self.stored.get(hash) {
            let mut w = self.hashes.get(hash).cloned().unwrap_or_default();
            w.applied = Some((device.clone(), doc.clone()));
            return Some(w);
        }
        self.hashes.get(hash).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(hash: &str, doc: &str, device: &str, seq: i64) -> PendingChange {
        PendingChange {
            seq,
            hash: hash.into(),
            doc_id: doc.into(),
            device_id: device.into(),
            received_ms: 0,
            bytes: vec![],
        }
    }

    /// What a fresh document's shadow answers is what the statements would leave in the table:
    /// the first change's device, events once per id, the highest sequence number per actor,
    /// the first join per scope, the category kept, the events map once set.
    #[test]
    fn a_fresh_documents_shadow_follows_the_tables_rules() {
        let mut b = Batched::default();
        b.fresh.insert("d".into(), Shadow::default());
        b.note_change(change("h1", "d", "dev-a", 7));
        b.note_change(change("h2", "d", "dev-b", 8));
        b.note_event("d", "e1", "{1}");
        b.note_event("d", "e1", "{again}");
        b.note_doc_actor("d", "act", 3);
        b.note_doc_actor("d", "act", 2);
        b.note_memberships("d", &["grid:g", "user:u"], 7, "reported");
        b.note_memberships("d", &["grid:g"], 8, "accepted");
        let row = |category: Option<&str>, events_obj: Option<&str>, flags: &str| PendingRow {
            doc_id: "d".into(),
            status: "reported".into(),
            deadline_ms: None,
            flags: flags.into(),
            departments: String::new(),
            reported_ms: Some(1),
            queue_key: "k".into(),
            grid_id: None,
            category_id: category.map(str::to_owned),
            title: None,
            code: None,
            reporter: None,
            lat: None,
            lon: None,
            events_obj: events_obj.map(str::to_owned),
            updated_seq: 8,
        };
        b.note_row(row(Some("c1"), Some("o1"), "x"));
        b.note_row(row(None, Some("o2"), "y"));
        let s = &b.fresh["d"];
        assert_eq!(s.creator.as_deref(), Some("dev-a"));
        assert_eq!(s.events, vec![("e1".to_owned(), "{1}".to_owned())]);
        assert_eq!(b.events.len(), 1, "a repeated event is not written twice");
        assert_eq!(s.actors.get("act"), Some(&3));
        assert_eq!(b.doc_actors.get(&("d".to_owned(), "act".to_owned())), Some(&3));
        assert_eq!(s.memberships, vec![("grid:g".to_owned(), 7), ("user:u".to_owned(), 7)]);
        let now = s.row.clone().expect("row");
        assert_eq!((now.category_id.as_deref(), now.flags.as_str()), (Some("c1"), "y"));
        assert_eq!(s.events_obj.as_deref(), Some("o1"), "the events map is kept once set");
        assert!(b.row_waiting("d"));
    }

    #[test]
    fn stored_hashes_are_applied_and_forgotten_ones_are_asked_again() {
        let mut b = Batched::default();
        b.hashes.insert("h".into(), Whereabouts { parked: true, ..Default::default() });
        assert!(b.whereabouts("h").expect("known").parked);
        b.note_change(change("h2", "d", "dev", 1));
        let w = b.whereabouts("h2").expect("stored here");
        assert_eq!(w.applied, Some(("dev".to_owned(), "d".to_owned())));
        b.forget_hash("h");
        assert!(b.whereabouts("h").is_none(), "asked of the database again");
        assert!(b.note_actor("a", "dev", 0));
        assert!(!b.note_actor("a", "other", 0), "an actor is registered once");
        assert!(b.waiting());
        b.discard();
        assert!(!b.waiting() && b.stored.is_empty() && b.actor_owners.is_empty());
    }
}
