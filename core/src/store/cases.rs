//! Cases: capture, edits, lifecycle events, photos, reading, and changes received from elsewhere.

use automerge::{Automerge, Change, ReadDoc};
use gridwork_model::access::{access_from_document, may_change, Scope, Subject};
use gridwork_model::doc::{self, CaseDoc, CasePatch, NewCaseDoc};
use gridwork_model::error::check_text;
use gridwork_model::evidence::EvidenceRef;
use gridwork_model::geo::Location;
use gridwork_model::ids::{case_code, CaseId, CategoryId, EventId, GridId};
use gridwork_model::lifecycle::{self, Event, EventKind, Verdict};
use gridwork_model::ModelError;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

use super::{documents, outbox, search, Store};
use crate::error::{CoreError, Result};
use crate::evidence::{process_photo, ProcessedPhoto};

/// What a worker enters when reporting a case.
#[derive(Debug, Clone)]
pub struct NewCase {
    pub title: String,
    pub description: String,
    pub category: CategoryId,
    pub grid: GridId,
    pub location: Location,
    /// Photos as the camera produced them (JPEG, PNG or WebP).
    pub photos: Vec<Vec<u8>>,
}

/// One row of a case list: read from the index, never from the document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseSummary {
    pub id: CaseId,
    pub code: String,
    pub title: String,
    /// A status name, or "contested".
    pub status: String,
    pub grid_id: String,
    pub category_id: String,
    pub reporter: String,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub deadline_ms: Option<i64>,
    pub overdue: bool,
    pub has_conflicts: bool,
    pub flags: Vec<String>,
}

/// One case opened: the document read in full, plus what the device derives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseDetail {
    pub case: CaseDoc,
    pub overdue: bool,
    pub flags: Vec<String>,
    /// Automerge heads, hex.
    pub heads: Vec<String>,
    /// Why this phone may not change the case (it left the user's scope, or the write rule
    /// refuses it); `None` when it may. The app shows the case read-only then.
    pub read_only: Option<String>,
}

/// What applying received changes did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReceiveReport {
    /// Changes this store did not have before.
    pub new_changes: usize,
    /// Changes already present (a repeat delivery).
    pub duplicates: usize,
    /// Changes stored but waiting for changes they depend on.
    pub waiting_for_dependencies: usize,
}

/// Checks every change's bytes before anything is written.
pub(crate) fn parse_changes(changes: &[Vec<u8>]) -> Result<Vec<Change>> {
    changes
        .iter()
        .map(|b| Change::from_bytes(b.clone()).map_err(|e| CoreError::BadChange { reason: e.to_string() }))
        .collect()
}

fn validate_title(title: &str) -> Result<(), ModelError> {
    if title.trim().is_empty() {
        return Err(ModelError::EmptyTitle);
    }
    check_text("title", title)
}

impl Store {
    fn check_case_refs(&self, category: Option<&CategoryId>, grid: Option<&GridId>) -> Result<()> {
        if let Some(c) = category {
            let category = self.category(&c.0)?;
            if category.retired {
                return Err(CoreError::RetiredCategory { category_id: c.0.clone() });
            }
        }
        if let Some(g) = grid {
            self.grid(&g.0)?;
        }
        Ok(())
    }

    /// Processes photos and writes their files (durably) before any transaction refers to them.
    fn prepare_photos(&self, photos: &[Vec<u8>]) -> Result<Vec<ProcessedPhoto>> {
        let processed = photos.iter().map(|p| process_photo(p)).collect::<Result<Vec<_>, _>>()?;
        for p in &processed {
            self.inner.files.put(&p.stored)?;
            self.inner.files.put(&p.thumb)?;
        }
        Ok(processed)
    }

    /// Reports a new case, offline. One transaction: document, index, outbox and photo references.
    pub fn capture_case(&self, new: NewCase) -> Result<CaseSummary> {
        validate_title(&new.title)?;
        check_text("description", &new.description)?;
        let location = new.location.normalized()?;
        self.check_case_refs(Some(&new.category), Some(&new.grid))?;
        let mut photos = self.prepare_photos(&new.photos)?;
        for p in &mut photos {
            p.evidence.compare_with_fix(location.lat, location.lon);
        }

        let clock = self.stamp();
        let actor = self.identity().actor();
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let counter: u64 = tx
            .query_row("SELECT value FROM meta WHERE key = 'case_counter'", [], |r| r.get::<_, String>(0))
            .optional()?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
            + 1;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('case_counter', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [counter.to_string()],
        )?;
        let id = CaseId::generate();
        let new_doc = NewCaseDoc {
            id,
            code: case_code(&self.identity().device_code, counter),
            created_ms: clock.device_ms,
            reporter: actor.user.clone(),
            title: new.title,
            description: new.description,
            category: new.category,
            grid: new.grid,
            location,
        };
        let report =
            Event { id: EventId::generate(), parents: vec![], lamport: 1, actor, clock, kind: EventKind::Report };
        let mut am = Automerge::new().with_actor(self.inner.actor.clone());
        am.transact::<_, _, ModelError>(|t| {
            doc::init_case(t, &new_doc, &report)?;
            for p in &photos {
                doc::put_evidence(t, &p.evidence)?;
            }
            Ok(())
        })
        .map_err(|f| CoreError::Invalid(f.error))?;
        let summary = self.commit_local_change(&tx, &id, &am, &photos)?;
        gridwork_model::crash_points::reached("phone-capture");
        tx.commit()?;
        Ok(summary)
    }

    /// Stores the change just made to `am` and everything that goes with it, inside `tx`.
    fn commit_local_change(
        &self,
        tx: &Connection,
        id: &CaseId,
        am: &Automerge,
        photos: &[ProcessedPhoto],
    ) -> Result<CaseSummary> {
        let mut change = am.get_last_local_change().ok_or(CoreError::NothingToChange)?;
        let hash = change.hash();
        let bytes = change.bytes().into_owned();
        let doc_id = id.to_string();
        documents::append(tx, &doc_id, &[&bytes], am)?;
        self.enqueue_own(tx, outbox::OutboxKind::Change, Some(&doc_id), &hash.to_string(), &bytes)?;
        for p in photos {
            self.link_evidence(tx, "case", &doc_id, p)?;
        }
        let case = doc::read_case(am)?;
        self.reindex(tx, &case)
    }

    pub(crate) fn link_evidence(
        &self,
        tx: &Connection,
        owner_kind: &str,
        owner_id: &str,
        p: &ProcessedPhoto,
    ) -> Result<()> {
        let now = self.now_ms();
        let mut ins = tx.prepare_cached(
            // A file known only from the server (another phone's identical photo, a forwarded
            // picture) is held here now: no longer evicted, or reading it would send the app to
            // the server for bytes it has.
            "INSERT INTO evidence_files (sha256, role, size, created_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(sha256) DO UPDATE SET evicted = 0, size = excluded.size WHERE evidence_files.evicted = 1",
        )?;
        ins.execute(params![p.evidence.sha256, "full", p.stored.len() as i64, now])?;
        let mut link = tx.prepare_cached(
            "INSERT INTO evidence_links (sha256, owner_kind, owner_id) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        )?;
        link.execute(params![p.evidence.sha256, owner_kind, owner_id])?;
        if let Some(t) = &p.evidence.thumb_sha256 {
            ins.execute(params![t, "thumb", p.thumb.len() as i64, now])?;
            link.execute(params![t, owner_kind, owner_id])?;
        }
        Ok(())
    }

    /// Loads a document for a change, with this store's actor.
    fn load_for_change(&self, conn: &Connection, id: &CaseId) -> Result<Automerge> {
        let doc = documents::load(conn, &id.to_string())?
            .ok_or_else(|| CoreError::UnknownCase { case_id: id.to_string() })?;
        Ok(doc.with_actor(self.inner.actor.clone()))
    }

    /// Edits a case's fields. Only fields that differ are written, so an open conflict on a field
    /// the patch does not name stays open; naming a conflicted field resolves it.
    pub fn edit_case(&self, id: &CaseId, patch: CasePatch) -> Result<CaseSummary> {
        if let Some(t) = &patch.title {
            validate_title(t)?;
        }
        if let Some(d) = &patch.description {
            check_text("description", d)?;
        }
        let patch = CasePatch { location: patch.location.map(Location::normalized).transpose()?, ..patch };
        self.check_case_refs(patch.category.as_ref(), patch.grid.as_ref())?;
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut am = self.load_for_change(&tx, id)?;
        self.must_be_writable(&tx, id, &doc::read_case(&am)?)?;
        let written = am
            .transact::<_, _, ModelError>(|t| doc::apply_patch(t, &patch))
            .map_err(|f| CoreError::Invalid(f.error))?
            .result;
        if written == 0 {
            return Err(CoreError::NothingToChange);
        }
        let summary = self.commit_local_change(&tx, id, &am, &[])?;
        tx.commit()?;
        Ok(summary)
    }

    /// Records a lifecycle event (accept, dispatch, report done, follow-up, close, urge…). The
    /// role table is checked against the case as this device sees it; a refused event is not
    /// written and nothing changes.
    pub fn record_event(&self, id: &CaseId, kind: EventKind) -> Result<CaseSummary> {
        match &kind {
            EventKind::Dispatch { departments, .. } => {
                for d in departments {
                    self.department(&d.0)?;
                }
            }
            EventKind::Note { text } | EventKind::Return { reason: text } => check_text("note", text)?,
            EventKind::FollowUp { satisfaction, note } => {
                if !(1..=5).contains(satisfaction) {
                    return Err(ModelError::InvalidSatisfaction { value: *satisfaction }.into());
                }
                check_text("note", note)?;
            }
            EventKind::Accept { note }
            | EventKind::Reject { note, .. }
            | EventKind::Close { note }
            | EventKind::Urge { note }
            | EventKind::Escalate { note, .. }
            | EventKind::HandlerReport { note, .. } => check_text("note", note)?,
            _ => {}
        }
        let actor = self.identity().actor();
        let clock = self.stamp();
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut am = self.load_for_change(&tx, id)?;
        let case = doc::read_case(&am)?;
        self.must_be_writable(&tx, id, &case)?;
        lifecycle::check(&kind, &actor, &case.timeline.state).map_err(|r| CoreError::TransitionNotAllowed {
            kind: r.kind.to_owned(),
            from: r.from,
            role: format!("{:?}", r.role).to_lowercase(),
            reason: r.reason,
        })?;
        let (parents, lamport) = doc::next_event_position(&am)?;
        let event = Event { id: EventId::generate(), parents, lamport, actor, clock, kind };
        am.transact::<_, _, ModelError>(|t| doc::put_event(t, &event)).map_err(|f| CoreError::Invalid(f.error))?;
        let summary = self.commit_local_change(&tx, id, &am, &[])?;
        tx.commit()?;
        Ok(summary)
    }

    /// Attaches a photo to a case: the file first (fsynced), then one transaction.
    pub fn attach_photo(&self, id: &CaseId, photo: &[u8]) -> Result<EvidenceRef> {
        let mut processed = self.prepare_photos(&[photo.to_vec()])?;
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut am = self.load_for_change(&tx, id)?;
        let case = doc::read_case(&am)?;
        self.must_be_writable(&tx, id, &case)?;
        processed[0].evidence.compare_with_fix(case.location.value.lat, case.location.value.lon);
        let before = am.get_heads();
        am.transact::<_, _, ModelError>(|t| doc::put_evidence(t, &processed[0].evidence))
            .map_err(|f| CoreError::Invalid(f.error))?;
        if am.get_heads() == before {
            // Already attached: nothing to write.
            return Ok(processed[0].evidence.clone());
        }
        self.commit_local_change(&tx, id, &am, &processed)?;
        gridwork_model::crash_points::reached("phone-photo");
        tx.commit()?;
        Ok(processed[0].evidence.clone())
    }

    /// Opens a case: fields with their conflicts, evidence, and the timeline with verdicts.
    pub fn get_case(&self, id: &CaseId) -> Result<CaseDetail> {
        let conn = self.reader();
        let am = documents::load(&conn, &id.to_string())?
            .ok_or_else(|| CoreError::UnknownCase { case_id: id.to_string() })?;
        let case = doc::read_case(&am)?;
        let read_only = self.read_only_reason(&conn, id, &case)?;
        drop(conn);
        let flags = self.flags_for(&case);
        Ok(CaseDetail {
            read_only,
            overdue: case.timeline.state.is_overdue(self.now_ms()),
            flags,
            heads: am.get_heads().iter().map(|h| h.to_string()).collect(),
            case,
        })
    }

    /// Why this phone may not change the case, by the rule the server enforces
    /// (`gridwork_model::access::may_change`) with the scopes the server last said the user
    /// holds; `None` when it may. A case that left the user's scope is read-only too. Before the
    /// first sync with a server that sends scopes, only the second applies.
    pub(crate) fn read_only_reason(&self, conn: &Connection, id: &CaseId, case: &CaseDoc) -> Result<Option<String>> {
        let left: Option<i64> = conn
            .query_row("SELECT out_of_scope_ms FROM cases WHERE id = ?1", [id.to_string()], |r| r.get(0))
            .optional()?
            .flatten();
        if left.is_some() {
            return Ok(Some("this case is no longer in your area".into()));
        }
        let scopes: Option<String> =
            conn.query_row("SELECT value FROM meta WHERE key = 'write_scopes'", [], |r| r.get(0)).optional()?;
        let Some(scopes) = scopes else { return Ok(None) };
        let scopes: Vec<String> = serde_json::from_str(&scopes).unwrap_or_default();
        let me = self.identity();
        let subject = Subject::new(
            me.device.clone(),
            me.user.clone(),
            me.role,
            scopes.iter().filter_map(|s| Scope::parse(s).ok()),
        );
        let access = access_from_document(case, &self.catalog());
        Ok(may_change(&subject, &access).err().map(|e| e.to_string()))
    }

    /// Refuses a change to a case this phone may not change ([`Store::read_only_reason`]):
    /// honest users never have their work quarantined by the server.
    fn must_be_writable(&self, conn: &Connection, id: &CaseId, case: &CaseDoc) -> Result<()> {
        match self.read_only_reason(conn, id, case)? {
            Some(reason) => Err(CoreError::ReadOnlyCase { case_id: id.to_string(), reason }),
            None => Ok(()),
        }
    }

    /// Ids of every case document on this device.
    pub fn document_ids(&self) -> Result<Vec<CaseId>> {
        let conn = self.reader();
        let mut stmt = conn.prepare("SELECT doc_id FROM documents ORDER BY doc_id")?;
        let ids = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(ids.iter().filter_map(|s| CaseId::parse(s).ok()).collect())
    }

    /// Every change of a document, for a peer that has none of it.
    pub fn export_changes(&self, id: &CaseId) -> Result<Vec<Vec<u8>>> {
        let conn = self.reader();
        let am = documents::load(&conn, &id.to_string())?
            .ok_or_else(|| CoreError::UnknownCase { case_id: id.to_string() })?;
        Ok(am.get_changes(&[]).into_iter().map(|mut c| c.bytes().into_owned()).collect())
    }

    /// Applies changes made elsewhere (another device, or the server). Every change is checked
    /// before anything is written; a change already held is counted, not stored twice; a change
    /// whose dependencies are missing is stored and waits.
    pub fn receive_changes(&self, id: &CaseId, changes: &[Vec<u8>]) -> Result<ReceiveReport> {
        let parsed = parse_changes(changes)?;
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let report = self.receive_in(&tx, id, parsed)?;
        tx.commit()?;
        Ok(report)
    }

    /// Applies already-parsed changes to one document inside the caller's transaction.
    pub(crate) fn receive_in(&self, tx: &Connection, id: &CaseId, parsed: Vec<Change>) -> Result<ReceiveReport> {
        let doc_id = id.to_string();
        let am = documents::load(tx, &doc_id)?.unwrap_or_default();
        let mut report = ReceiveReport::default();
        let mut fresh: Vec<Change> = vec![];
        for c in parsed {
            if am.get_change_by_hash(&c.hash()).is_some() || fresh.iter().any(|f| f.hash() == c.hash()) {
                report.duplicates += 1;
            } else {
                fresh.push(c);
            }
        }
        if fresh.is_empty() {
            return Ok(report);
        }
        let chunks: Vec<Vec<u8>> = fresh.iter_mut().map(|c| c.bytes().into_owned()).collect();
        // Fenced (gridwork_model::fence): on a panic the half-applied `am` is dropped with the
        // transaction, and the stored document is as it was.
        let am = gridwork_model::fence::fenced(move || {
            let mut am = am;
            am.apply_changes(fresh).map(|()| am)
        })
        .map_err(|p| CoreError::BadChange { reason: format!("Automerge could not apply it: {p}") })?
        .map_err(|e| CoreError::BadChange { reason: e.to_string() })?;
        report.new_changes = chunks.len();
        report.waiting_for_dependencies = chunks
            .iter()
            .filter(|b| Change::from_bytes(b.to_vec()).is_ok_and(|c| am.get_change_by_hash(&c.hash()).is_none()))
            .count();
        let refs: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
        documents::append(tx, &doc_id, &refs, &am)?;
        // A document whose first change has not arrived yet has nothing to index.
        if let Ok(case) = doc::read_case(&am) {
            self.reindex(tx, &case)?;
            crate::download::register_remote(tx, &doc_id, &case.evidence, self.now_ms())?;
            // A case removed by retention is whole again.
            tx.prepare_cached("DELETE FROM removed_cases WHERE doc_id = ?1")?.execute([&doc_id])?;
        }
        Ok(report)
    }

    pub(crate) fn flags_for(&self, case: &CaseDoc) -> Vec<String> {
        let mut flags = vec![];
        let catalog = self.catalog();
        match catalog.categories.iter().find(|c| c.id == case.category.value) {
            Some(c) if c.retired => flags.push("retired_category".to_owned()),
            None => flags.push("unknown_category".to_owned()),
            _ => {}
        }
        if let Some(g) = catalog.grids.iter().find(|g| g.id == case.grid.value) {
            if !g.boundary.contains(case.location.value.lat, case.location.value.lon) {
                flags.push("outside_grid".to_owned());
            }
        }
        if case.location.value.mock {
            flags.push("mock_location".to_owned());
        }
        if case.timeline.state.status.is_contested() {
            flags.push("contested".to_owned());
        }
        if case.timeline.entries.iter().any(|e| matches!(e.verdict, Verdict::Invalid { .. })) {
            flags.push("invalid_events".to_owned());
        }
        flags
    }

    /// Writes a case's index row, search terms and assignees from its document.
    fn reindex(&self, tx: &Connection, case: &CaseDoc) -> Result<CaseSummary> {
        let state = &case.timeline.state;
        let due =
            state.status.statuses().into_iter().any(|s| s.awaits_handling()).then_some(state.deadline_ms).flatten();
        let flags = self.flags_for(case);
        let has_conflicts = !case.conflicts().is_empty();
        let updated_ms = self.now_ms();
        let id = case.id.to_string();
        tx.prepare_cached(
            "INSERT INTO cases (id, code, title, status, grid_id, category_id, reporter, created_ms, updated_ms,
                                deadline_ms, due_ms, has_conflicts, flags)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
             ON CONFLICT(id) DO UPDATE SET code = excluded.code, title = excluded.title,
                status = excluded.status, grid_id = excluded.grid_id, category_id = excluded.category_id,
                updated_ms = excluded.updated_ms, deadline_ms = excluded.deadline_ms, due_ms = excluded.due_ms,
                has_conflicts = excluded.has_conflicts, flags = excluded.flags, settled_ms = NULL",
        )?
        .execute(params![
            id,
            case.code,
            case.title.value,
            state.status.label(),
            case.grid.value.0,
            case.category.value.0,
            case.reporter.0,
            case.created_ms,
            updated_ms,
            state.deadline_ms,
            due,
            has_conflicts,
            flags.join(","),
        ])?;
        let rowid: i64 = tx.prepare_cached("SELECT rowid FROM cases WHERE id = ?1")?.query_row([&id], |r| r.get(0))?;
        search::index(tx, rowid, &case.title.value, &case.description)?;
        tx.prepare_cached("DELETE FROM case_assignees WHERE case_id = ?1")?.execute([&id])?;
        let mut ins = tx.prepare_cached("INSERT INTO case_assignees (assignee, case_id) VALUES (?1, ?2)")?;
        for a in &state.assignees {
            let key = match a {
                lifecycle::Assignee::User(u) => format!("user:{u}"),
                lifecycle::Assignee::Department(d) => format!("department:{d}"),
            };
            ins.execute(params![key, id])?;
        }
        Ok(CaseSummary {
            id: case.id,
            code: case.code.clone(),
            title: case.title.value.clone(),
            status: state.status.label().to_owned(),
            grid_id: case.grid.value.0.clone(),
            category_id: case.category.value.0.clone(),
            reporter: case.reporter.0.clone(),
            created_ms: case.created_ms,
            updated_ms,
            deadline_ms: state.deadline_ms,
            overdue: state.is_overdue(updated_ms),
            has_conflicts,
            flags,
        })
    }
}
