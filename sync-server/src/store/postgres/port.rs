//! The storage port (`store::port`) on PostgreSQL: the SQL of each primitive, nothing else.
//! Statements are prepared once per connection (`Statements`).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use gridwork_model::catalog::{Catalog, Category, Department, Grid};
use postgres::types::ToSql;
use postgres::{Client, Row, Statement, Transaction};

use super::batched::{Batched, PendingChange, PendingRecord, PendingRow, PendingSighting};
use crate::error::{Result, ServerError};
use crate::store::console::{CheckInView, MapPin};
use crate::store::port::{
    BlobLinkOwner, BootRow, CaseRow, CaseRowNow, ChainSummary, ChangeBytes, ClockFlag, ConsoleAccount, DeviceRow,
    NewRecord, ParkedChange, PersonRow, QuarantineEntry, Quarantined, QueuePage, QueueQuery, QueueRow, ReadTx,
    ReportedCase, StoredChange, StoredLink, Whereabouts, WriteTx,
};
use crate::store::values::{json, stored_role};
use crate::store::{Device, QuarantinedItem};

/// Statements prepared on one connection, by their SQL.
pub(super) type Statements = HashMap<String, Statement>;

/// A transaction on one of the store's connections: a write transaction (holding the sequence
/// counter's row lock, `writer`) or a read-only snapshot.
pub(super) struct PgTx<'c, 't> {
    pub(super) tx: RefCell<On<'c, 't>>,
    /// A writer's rows waiting and what it knows it wrote (`batched.rs`); empty on a reader.
    pub(super) batched: RefCell<Batched>,
    pub(super) statements: RefCell<&'t mut Statements>,
    /// The last sequence number taken in this transaction (`Some` on a writer once it has read
    /// the counter); written back before commit.
    pub(super) seq: RefCell<Option<i64>>,
    /// The counter as the writer's row lock read it (`lock_counter`).
    pub(super) counter: std::cell::Cell<Option<i64>>,
    pub(super) writer: bool,
    /// The `meta` table (a handful of rows), read whole by the first question of this
    /// transaction: a snapshot asks it twice (the catalog's version, the minimum app version).
    meta: RefCell<Option<HashMap<String, String>>>,
}

/// What a port's statements run on: a transaction, or (a lookup of one statement, which is its
/// own snapshot: `PgStore::read_one`) the connection itself, sparing `BEGIN` and `COMMIT`.
pub(super) enum On<'c, 't> {
    Tx(&'t mut Transaction<'c>),
    Client(&'t mut Client),
}

macro_rules! on {
    ($on:expr, $c:ident => $e:expr) => {
        match &mut *$on {
            On::Tx($c) => $e,
            On::Client($c) => $e,
        }
    };
}

impl On<'_, '_> {
    pub(super) fn batch_execute(&mut self, sql: &str) -> Result<()> {
        Ok(on!(self, c => c.batch_execute(sql))?)
    }
}

impl std::fmt::Debug for PgTx<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTx").field("writer", &self.writer).finish()
    }
}

pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

fn device_row(r: &Row) -> DeviceRow {
    DeviceRow {
        id: r.get(0),
        code: r.get(1),
        user: r.get(2),
        status: r.get(3),
        last_seen_ms: r.get(4),
        last_state: r.get(5),
        retired_ms: r.get(6),
        drained_ms: r.get(7),
        signs: r.get(8),
        wipe_ordered_ms: r.get(9),
        wipe_confirmed_ms: r.get(10),
        wiped_ms: r.get(11),
    }
}

fn change_bytes(r: &Row) -> ChangeBytes {
    ChangeBytes { bytes: r.get(0), hash: r.get(1), device_id: r.get(2) }
}

impl<'c, 't> PgTx<'c, 't> {
    /// A transaction's port: a writer's (which takes numbers and keeps writes back) or a
    /// reader's snapshot.
    pub(super) fn new(tx: &'t mut Transaction<'c>, statements: &'t mut Statements, writer: bool) -> Self {
        Self::on(On::Tx(tx), statements, writer)
    }

    /// A port on the connection itself: in a transaction begun by hand (`Open`), or outside
    /// any for a lookup of one statement.
    pub(super) fn on_client(client: &'t mut Client, statements: &'t mut Statements, writer: bool) -> Self {
        Self::on(On::Client(client), statements, writer)
    }

    fn on(on: On<'c, 't>, statements: &'t mut Statements, writer: bool) -> Self {
        PgTx {
            tx: RefCell::new(on),
            batched: RefCell::default(),
            statements: RefCell::new(statements),
            seq: RefCell::new(None),
            counter: std::cell::Cell::new(None),
            writer,
            meta: RefCell::new(None),
        }
    }

    fn statement(&self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let s = on!(self.tx.borrow_mut(), c => c.prepare(sql))?;
        self.statements.borrow_mut().insert(sql.to_owned(), s.clone());
        Ok(s)
    }

    // Every statement first writes the rows waiting (`flush`): it may read them, or write rows
    // they must precede.

    pub(super) fn rows(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>> {
        self.flush()?;
        let s = self.statement(sql)?;
        Ok(on!(self.tx.borrow_mut(), c => c.query(&s, params))?)
    }

    pub(super) fn row(&self, sql: &str, params: Params<'_>) -> Result<Option<Row>> {
        self.flush()?;
        let s = self.statement(sql)?;
        Ok(on!(self.tx.borrow_mut(), c => c.query_opt(&s, params))?)
    }

    pub(super) fn one(&self, sql: &str, params: Params<'_>) -> Result<Row> {
        self.flush()?;
        let s = self.statement(sql)?;
        Ok(on!(self.tx.borrow_mut(), c => c.query_one(&s, params))?)
    }

    pub(super) fn exec(&self, sql: &str, params: Params<'_>) -> Result<u64> {
        self.flush()?;
        self.exec_now(sql, params)
    }

    fn exec_now(&self, sql: &str, params: Params<'_>) -> Result<u64> {
        let s = self.statement(sql)?;
        Ok(on!(self.tx.borrow_mut(), c => c.execute(&s, params))?)
    }

    /// Writes every row waiting in one statement: each table's rows as arrays, each table's
    /// insert a data-modifying `WITH` (all of them run, whether the query reads them or not;
    /// an empty array writes nothing). One round trip whatever the push wrote.
    pub(super) fn flush(&self) -> Result<()> {
        if !self.batched.borrow().waiting() {
            return Ok(());
        }
        let b = {
            let mut b = self.batched.borrow_mut();
            Batched {
                changes: std::mem::take(&mut b.changes),
                events: std::mem::take(&mut b.events),
                doc_actors: std::mem::take(&mut b.doc_actors),
                actors: std::mem::take(&mut b.actors),
                memberships: std::mem::take(&mut b.memberships),
                rows: std::mem::take(&mut b.rows),
                records: std::mem::take(&mut b.records),
                sightings: std::mem::take(&mut b.sightings),
                ..Batched::default()
            }
        };
        // Column arrays, by field.
        fn text<T>(v: &[T], f: impl Fn(&T) -> &str) -> Vec<&str> {
            v.iter().map(f).collect()
        }
        fn opt<T>(v: &[T], f: impl Fn(&T) -> Option<&str>) -> Vec<Option<&str>> {
            v.iter().map(f).collect()
        }
        fn val<T, V: Copy>(v: &[T], f: impl Fn(&T) -> V) -> Vec<V> {
            v.iter().map(f).collect()
        }
        let (changes, events, actors, memberships, rows, records, seen) =
            (&b.changes, &b.events, &b.actors, &b.memberships, &b.rows, &b.records, &b.sightings);
        let doc_actors: Vec<(&str, &str, i64)> =
            b.doc_actors.iter().map(|((d, a), s)| (d.as_str(), a.as_str(), *s)).collect();
        let bytes: Vec<&[u8]> = changes.iter().map(|c| c.bytes.as_slice()).collect();
        self.exec_now(
            "WITH c AS (INSERT INTO changes (seq, hash, doc_id, device_id, received_ms, bytes)
                SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bytea[])),
             e AS (INSERT INTO doc_events (doc_id, event_id, json)
                SELECT * FROM unnest($7::text[], $8::text[], $9::text[]) ON CONFLICT DO NOTHING),
             da AS (INSERT INTO doc_actors (doc_id, actor, last_seq)
                SELECT * FROM unnest($10::text[], $11::text[], $12::bigint[])
                ON CONFLICT (doc_id, actor) DO UPDATE SET last_seq = greatest(doc_actors.last_seq, excluded.last_seq)),
             a AS (INSERT INTO actors (actor, device_id, first_seen_ms)
                SELECT * FROM unnest($13::text[], $14::text[], $15::bigint[]) ON CONFLICT DO NOTHING),
             m AS (INSERT INTO membership (doc_id, scope, joined_seq, status)
                SELECT * FROM unnest($16::text[], $17::text[], $18::bigint[], $19::text[]) ON CONFLICT DO NOTHING),
             d AS (INSERT INTO docs (doc_id, status, deadline_ms, flags, departments, reported_ms, queue_key, grid_id,
                    category_id, title, code, reporter, lat, lon, events_obj, updated_seq)
                SELECT * FROM unnest($20::text[], $21::text[], $22::bigint[], $23::text[], $24::text[], $25::bigint[],
                    $26::text[], $27::text[], $28::text[], $29::text[], $30::text[], $31::text[], $32::float8[],
                    $33::float8[], $34::text[], $35::bigint[])
                ON CONFLICT (doc_id) DO UPDATE SET status = excluded.status, deadline_ms = excluded.deadline_ms,
                    flags = excluded.flags, departments = excluded.departments, reported_ms = excluded.reported_ms,
                    queue_key = excluded.queue_key, grid_id = coalesce(excluded.grid_id, docs.grid_id),
                    category_id = coalesce(excluded.category_id, docs.category_id),
                    title = coalesce(excluded.title, docs.title), code = coalesce(excluded.code, docs.code),
                    reporter = coalesce(excluded.reporter, docs.reporter), lat = coalesce(excluded.lat, docs.lat),
                    lon = coalesce(excluded.lon, docs.lon), events_obj = coalesce(docs.events_obj, excluded.events_obj),
                    updated_seq = excluded.updated_seq),
             r AS (INSERT INTO records (id, device_id, received_ms, body, grid_id, point_id, user_id, at_ms, day,
                    inside_grid, distance_m, mock)
                SELECT * FROM unnest($36::text[], $37::text[], $38::bigint[], $39::text[], $40::text[], $41::text[],
                    $42::text[], $43::bigint[], $44::text[], $45::boolean[], $46::float8[], $47::boolean[])
                ON CONFLICT (id) DO NOTHING),
             s AS (UPDATE devices SET last_state = u.state, last_seen_ms = CASE WHEN u.at_least
                    THEN greatest(coalesce(devices.last_seen_ms, 0), u.at_ms) ELSE u.at_ms END
                FROM unnest($48::text[], $49::bigint[], $50::text[], $51::boolean[]) AS u (id, at_ms, state, at_least)
                WHERE devices.id = u.id)
             SELECT 1",
            &[
                &val(changes, |c| c.seq),
                &text(changes, |c| &c.hash),
                &text(changes, |c| &c.doc_id),
                &text(changes, |c| &c.device_id),
                &val(changes, |c| c.received_ms),
                &bytes,
                &text(events, |e| &e.0),
                &text(events, |e| &e.1),
                &text(events, |e| &e.2),
                &val(&doc_actors, |a| a.0),
                &val(&doc_actors, |a| a.1),
                &val(&doc_actors, |a| a.2),
                &text(actors, |a| &a.0),
                &text(actors, |a| &a.1),
                &val(actors, |a| a.2),
                &text(memberships, |m| &m.0),
                &text(memberships, |m| &m.1),
                &val(memberships, |m| m.2),
                &text(memberships, |m| &m.3),
                &text(rows, |r| &r.doc_id),
                &text(rows, |r| &r.status),
                &val(rows, |r| r.deadline_ms),
                &text(rows, |r| &r.flags),
                &text(rows, |r| &r.departments),
                &val(rows, |r| r.reported_ms),
                &text(rows, |r| &r.queue_key),
                &opt(rows, |r| r.grid_id.as_deref()),
                &opt(rows, |r| r.category_id.as_deref()),
                &opt(rows, |r| r.title.as_deref()),
                &opt(rows, |r| r.code.as_deref()),
                &opt(rows, |r| r.reporter.as_deref()),
                &val(rows, |r| r.lat),
                &val(rows, |r| r.lon),
                &opt(rows, |r| r.events_obj.as_deref()),
                &val(rows, |r| r.updated_seq),
                &text(records, |r| &r.id),
                &text(records, |r| &r.device_id),
                &val(records, |r| r.received_ms),
                &text(records, |r| &r.body),
                &opt(records, |r| r.grid.as_deref()),
                &opt(records, |r| r.point.as_deref()),
                &opt(records, |r| r.user.as_deref()),
                &val(records, |r| r.at_ms),
                &opt(records, |r| r.day.as_deref()),
                &val(records, |r| r.inside_grid),
                &val(records, |r| r.distance_m),
                &val(records, |r| r.mock),
                &text(seen, |s| &s.device_id),
                &val(seen, |s| s.at_ms),
                &text(seen, |s| &s.state),
                &val(seen, |s| s.at_least),
            ],
        )?;
        Ok(())
    }

    /// A device's sighting, kept back with the push's rows (one per device waits at a time).
    fn note_sighting(&self, device_id: &str, at_ms: i64, state: &str, at_least: bool) -> Result<()> {
        if self.batched.borrow().sighting_waiting(device_id) {
            self.flush()?;
        }
        self.batched.borrow_mut().sightings.push(PendingSighting {
            device_id: device_id.to_owned(),
            at_ms,
            state: state.to_owned(),
            at_least,
        });
        Ok(())
    }

    /// What the transaction wrote of a document the database held nothing of, if it is one.
    fn fresh<T>(&self, doc_id: &str, f: impl FnOnce(&super::batched::Shadow) -> T) -> Option<T> {
        self.batched.borrow().fresh.get(doc_id).map(f)
    }

    pub(super) fn strings(&self, sql: &str, params: Params<'_>) -> Result<Vec<String>> {
        Ok(self.rows(sql, params)?.iter().map(|r| r.get(0)).collect())
    }

    /// Takes the counter's row lock (every write transaction first: see `PgStore`), keeping
    /// the value it read for the first number taken.
    pub(super) fn lock_counter(&self) -> Result<()> {
        let last: i64 = self.one("SELECT last FROM seq_counter WHERE id = 1 FOR UPDATE", &[])?.get(0);
        self.counter.set(Some(last));
        Ok(())
    }

    /// Writes the last sequence number taken back to the counter (before commit).
    pub(super) fn finish_seq(&self) -> Result<()> {
        if let Some(last) = *self.seq.borrow() {
            self.exec("UPDATE seq_counter SET last = $1 WHERE id = 1", &[&last])?;
        }
        Ok(())
    }
}

const LINK_COLUMNS: &str = "device_id, seq, link_hash, prev, sig, kind, item_key, sha256, flag, at_ms";

fn stored_link(r: &Row) -> StoredLink {
    StoredLink {
        device_id: r.get(0),
        seq: r.get(1),
        link_hash: r.get(2),
        prev: r.get(3),
        sig: r.get(4),
        kind: r.get(5),
        item_key: r.get(6),
        sha256: r.get(7),
        flag: r.get(8),
        at_ms: r.get(9),
    }
}

impl ReadTx for PgTx<'_, '_> {
    fn last_seq(&self) -> Result<i64> {
        Ok(self.one("SELECT last FROM seq_counter WHERE id = 1", &[])?.get(0))
    }

    fn meta(&self, key: &str) -> Result<Option<String>> {
        if self.meta.borrow().is_none() {
            let all = self.rows("SELECT key, value FROM meta", &[])?.iter().map(|r| (r.get(0), r.get(1))).collect();
            *self.meta.borrow_mut() = Some(all);
        }
        Ok(self.meta.borrow().as_ref().and_then(|m| m.get(key).cloned()))
    }

    fn user_scopes(&self, user: &str) -> Result<BTreeMap<String, i64>> {
        Ok(self
            // The `user_areas` view spelled out, driven from the user's own rows (LATERAL): the
            // planner joined the view from every placement when its statistics were young.
            .rows(
                "SELECT scope, min(seq) FROM (
                    SELECT scope, granted_seq AS seq FROM user_scopes WHERE user_id = $1
                    UNION ALL
                    SELECT 'grid:' || p.grid_id, greatest(s.granted_seq, p.from_seq) FROM user_scopes s,
                        LATERAL (SELECT grid_id, from_seq FROM grid_placements g
                                 WHERE g.scope = s.scope AND g.to_seq IS NULL) p
                    WHERE s.user_id = $1) a
                 GROUP BY scope",
                &[&user],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    fn memberships(&self, doc_id: &str) -> Result<Vec<(String, i64)>> {
        if let Some(m) = self.fresh(doc_id, |s| s.memberships.clone()) {
            return Ok(m);
        }
        Ok(self
            .rows("SELECT scope, joined_seq FROM membership WHERE doc_id = $1", &[&doc_id])?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    fn case_creator(&self, doc_id: &str) -> Result<Option<String>> {
        if let Some(c) = self.fresh(doc_id, |s| s.creator.clone()) {
            return Ok(c);
        }
        Ok(self
            .row("SELECT device_id FROM changes WHERE doc_id = $1 ORDER BY seq LIMIT 1", &[&doc_id])?
            .map(|r| r.get(0)))
    }

    fn device(&self, id: &str) -> Result<Option<Device>> {
        let row = self.row(
            "SELECT d.id, d.user_id, u.role, u.department, d.retired_ms IS NOT NULL, d.public_key, d.wipe_ordered_ms IS NOT NULL FROM devices d
             JOIN users u ON u.id = d.user_id WHERE d.id = $1",
            &[&id],
        )?;
        row.map(|r| {
            Ok(Device {
                id: r.get(0),
                user: r.get(1),
                role: stored_role(r.get(2))?,
                department: r.get(3),
                retired: r.get(4),
                district: None,
                public_key: r.get(5),
                wipe: r.get(6),
            })
        })
        .transpose()
    }

    fn change_doc_seq(&self, hash: &str) -> Result<Option<(String, i64)>> {
        if let Some((_, doc, seq)) = self.batched.borrow().stored.get(hash) {
            return Ok(Some((doc.clone(), *seq)));
        }
        Ok(self.row("SELECT doc_id, seq FROM changes WHERE hash = $1", &[&hash])?.map(|r| (r.get(0), r.get(1))))
    }

    fn joined_since(
        &self,
        cursor: i64,
        scopes: &[&str],
        device: &str,
        limit: usize,
        at: Option<i64>,
    ) -> Result<Vec<(String, i64)>> {
        // `OFFSET 0` keeps the EXISTS a lookup per membership row (a subplan on `changes_by_doc`):
        // planned once (`KEYED_PLANS`) as a join, the plan made while `changes` was young
        // went on reading far more of it than the few documents of a scope need.
        let rows = match at {
            None => self.rows(
                "SELECT m.doc_id, m.joined_seq FROM membership m WHERE m.joined_seq > $1 AND m.scope = ANY($2)
                 AND EXISTS (SELECT 1 FROM changes c WHERE c.doc_id = m.doc_id AND c.device_id != $3 OFFSET 0)
                 ORDER BY m.joined_seq LIMIT $4",
                &[&cursor, &scopes, &device, &(limit as i64)],
            )?,
            Some(at) => self.rows(
                "SELECT m.doc_id, m.joined_seq FROM membership m WHERE m.joined_seq > $1 AND m.scope = ANY($2)
                 AND EXISTS (SELECT 1 FROM changes c WHERE c.doc_id = m.doc_id AND c.device_id != $3 OFFSET 0)
                 AND m.joined_seq = $4",
                &[&cursor, &scopes, &device, &at],
            )?,
        };
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn docs_in_scope_by(&self, scope: &str, seq: i64) -> Result<Vec<String>> {
        self.strings("SELECT doc_id FROM membership WHERE scope = $1 AND joined_seq <= $2", &[&scope, &seq])
    }

    fn docs_in_scope(&self, scope: &str) -> Result<Vec<String>> {
        self.strings("SELECT doc_id FROM membership WHERE scope = $1", &[&scope])
    }

    fn scope_changes_since(&self, cursor: i64, scopes: &[&str], limit: usize) -> Result<Vec<(i64, String)>> {
        Ok(self
            .rows(
                "SELECT DISTINCT seq, doc_id FROM scope_changes WHERE seq > $1 AND scope = ANY($2) ORDER BY seq LIMIT $3",
                &[&cursor, &scopes, &(limit as i64)],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    fn scopes_lost_since(&self, user: &str, cursor: i64) -> Result<BTreeSet<String>> {
        Ok(self
            .strings(
                "SELECT scope FROM user_scopes_removed WHERE user_id = $1 AND removed_seq > $2
                 UNION SELECT 'grid:' || p.grid_id FROM user_scopes_removed r JOIN grid_placements p ON p.scope = r.scope
                     WHERE r.user_id = $1 AND r.removed_seq > $2
                 UNION SELECT 'grid:' || p.grid_id FROM user_scopes s JOIN grid_placements p ON p.scope = s.scope
                     WHERE s.user_id = $1 AND p.to_seq > $2",
                &[&user, &cursor],
            )?
            .into_iter()
            .collect())
    }

    fn scopes_lost(&self, user: &str) -> Result<Vec<(String, i64)>> {
        Ok(self
            .rows(
                "SELECT scope, removed_seq FROM user_scopes_removed WHERE user_id = $1
                 UNION ALL SELECT 'grid:' || p.grid_id, r.removed_seq FROM user_scopes_removed r
                     JOIN grid_placements p ON p.scope = r.scope AND p.from_seq <= r.removed_seq
                         AND (p.to_seq IS NULL OR p.to_seq >= r.removed_seq)
                     WHERE r.user_id = $1
                 UNION ALL SELECT 'grid:' || p.grid_id, p.to_seq FROM user_scopes s
                     JOIN grid_placements p ON p.scope = s.scope WHERE s.user_id = $1 AND p.to_seq IS NOT NULL",
                &[&user],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    fn others_changes_upto(&self, doc_id: &str, seq: i64, device: &str) -> Result<i64> {
        Ok(self
            .one(
                "SELECT count(*) FROM changes WHERE doc_id = $1 AND seq <= $2 AND device_id != $3",
                &[&doc_id, &seq, &device],
            )?
            .get(0))
    }

    fn history_upto(&self, doc_id: &str, seq: i64) -> Result<Vec<ChangeBytes>> {
        Ok(self
            .rows(
                "SELECT bytes, hash, device_id FROM changes WHERE doc_id = $1 AND seq <= $2 ORDER BY seq",
                &[&doc_id, &seq],
            )?
            .iter()
            .map(change_bytes)
            .collect())
    }

    fn change_at(&self, seq: i64, not_by: &str) -> Result<Vec<ChangeBytes>> {
        Ok(self
            .rows("SELECT bytes, hash, device_id FROM changes WHERE seq = $1 AND device_id != $2", &[&seq, &not_by])?
            .iter()
            .map(change_bytes)
            .collect())
    }

    fn case_row(&self, doc_id: &str) -> Result<Option<CaseRowNow>> {
        if let Some(r) = self.fresh(doc_id, |s| s.row.clone()) {
            return Ok(r);
        }
        Ok(self
            .row("SELECT category_id, flags, reported_ms FROM docs WHERE doc_id = $1", &[&doc_id])?
            .map(|r| CaseRowNow { category_id: r.get(0), flags: r.get(1), reported_ms: r.get(2) }))
    }

    fn device_by_token_hash(&self, token_hash: &str) -> Result<Option<(String, Device)>> {
        let row = self.row(
            "SELECT CASE WHEN d.wiped_ms IS NOT NULL THEN 'wiped' ELSE d.status END, d.id, d.user_id, u.role, u.department, d.retired_ms IS NOT NULL, d.public_key, d.wipe_ordered_ms IS NOT NULL
             FROM devices d JOIN users u ON u.id = d.user_id WHERE d.token_hash = $1",
            &[&token_hash],
        )?;
        row.map(|r| {
            Ok((
                r.get(0),
                Device {
                    id: r.get(1),
                    user: r.get(2),
                    role: stored_role(r.get(3))?,
                    department: r.get(4),
                    retired: r.get(5),
                    district: None,
                    public_key: r.get(6),
                    wipe: r.get(7),
                },
            ))
        })
        .transpose()
    }

    fn devices(&self) -> Result<Vec<DeviceRow>> {
        Ok(self
            .rows(
                "SELECT id, code, user_id, CASE WHEN wiped_ms IS NOT NULL THEN 'wiped' ELSE status END, last_seen_ms, last_state, retired_ms, drained_ms, public_key IS NOT NULL, wipe_ordered_ms, wipe_confirmed_ms, wiped_ms
                 FROM devices
                 WHERE id NOT LIKE 'console-%' ORDER BY id",
                &[],
            )?
            .iter()
            .map(device_row)
            .collect())
    }

    fn device_row(&self, id: &str) -> Result<Option<DeviceRow>> {
        Ok(self
            .row(
                "SELECT id, code, user_id, CASE WHEN wiped_ms IS NOT NULL THEN 'wiped' ELSE status END, last_seen_ms, last_state, retired_ms, drained_ms, public_key IS NOT NULL, wipe_ordered_ms, wipe_confirmed_ms, wiped_ms
                 FROM devices
                 WHERE id = $1",
                &[&id],
            )?
            .as_ref()
            .map(device_row))
    }

    fn user_exists(&self, user: &str) -> Result<bool> {
        Ok(self.one("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)", &[&user])?.get(0))
    }

    fn granted_scopes(&self, user: &str) -> Result<BTreeSet<String>> {
        Ok(self.strings("SELECT scope FROM user_scopes WHERE user_id = $1", &[&user])?.into_iter().collect())
    }

    fn placements(&self) -> Result<BTreeSet<(String, String)>> {
        Ok(self
            .rows("SELECT scope, grid_id FROM grid_placements WHERE to_seq IS NULL", &[])?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    fn catalog(&self) -> Result<Catalog> {
        let version = self.meta("catalog_version")?.and_then(|v| v.parse().ok()).unwrap_or(0);
        let parse = |sql: &str| -> Result<Vec<String>> { self.strings(sql, &[]) };
        Ok(Catalog {
            version,
            grids: parse("SELECT json FROM grids ORDER BY id")?
                .iter()
                .filter_map(|j| serde_json::from_str::<Grid>(j).ok())
                .collect(),
            categories: parse("SELECT json FROM categories ORDER BY id")?
                .iter()
                .filter_map(|j| serde_json::from_str::<Category>(j).ok())
                .collect(),
            departments: parse("SELECT json FROM departments ORDER BY id")?
                .iter()
                .filter_map(|j| serde_json::from_str::<Department>(j).ok())
                .collect(),
        })
    }

    fn blob_owners(&self, sha256: &str) -> Result<Vec<BlobLinkOwner>> {
        Ok(self
            .rows("SELECT owner_kind, owner_id FROM blob_links WHERE sha256 = $1", &[&sha256])?
            .iter()
            .map(|r| {
                let (kind, id): (String, String) = (r.get(0), r.get(1));
                if kind == "case" {
                    BlobLinkOwner::Case(id)
                } else {
                    BlobLinkOwner::CheckIn(id)
                }
            })
            .collect())
    }

    fn record_user(&self, record_id: &str) -> Result<Option<String>> {
        Ok(self
            .row("SELECT d.user_id FROM records r JOIN devices d ON d.id = r.device_id WHERE r.id = $1", &[&record_id])?
            .map(|r| r.get(0)))
    }

    fn blob_count(&self) -> Result<i64> {
        Ok(self.one("SELECT count(*) FROM blobs", &[])?.get(0))
    }

    fn quarantine_list(&self) -> Result<Vec<QuarantinedItem>> {
        Ok(self
            .rows("SELECT hash, doc_id, device_id, reason, status FROM quarantine ORDER BY received_ms, hash", &[])?
            .iter()
            .map(|r| QuarantinedItem {
                key: r.get(0),
                doc_id: r.get(1),
                device_id: r.get(2),
                reason: r.get(3),
                status: r.get(4),
            })
            .collect())
    }

    fn pending_quarantine(&self) -> Result<i64> {
        Ok(self.one("SELECT count(*) FROM quarantine WHERE status = 'pending'", &[])?.get(0))
    }

    fn counts(&self) -> Result<(i64, i64, i64)> {
        let r = self.one(
            "SELECT (SELECT count(*) FROM changes), (SELECT count(*) FROM docs), (SELECT count(*) FROM records)",
            &[],
        )?;
        Ok((r.get(0), r.get(1), r.get(2)))
    }

    fn case_events(&self, doc_id: &str) -> Result<Vec<String>> {
        if let Some(e) = self.fresh(doc_id, |s| s.events.iter().map(|(_, j)| j.clone()).collect()) {
            return Ok(e);
        }
        self.strings("SELECT json FROM doc_events WHERE doc_id = $1", &[&doc_id])
    }

    fn overdue_count(&self, grids: Option<&[String]>, department: Option<&str>, now_ms: i64) -> Result<i64> {
        super::console::overdue_count(self, grids, department, now_ms)
    }

    fn overview_facts(&self, q: &crate::rules::overview::FactsQuery) -> Result<crate::rules::overview::FactRows> {
        super::console::overview_facts(self, q)
    }

    fn escalation_due_by(&self, now_ms: i64, limit: usize) -> Result<Vec<String>> {
        self.strings(
            "SELECT doc_id FROM escalation_due WHERE due_ms <= $1 ORDER BY due_ms LIMIT $2",
            &[&now_ms, &(limit as i64)],
        )
    }

    fn changes_after(&self, seq: i64, limit: usize) -> Result<Vec<(i64, String)>> {
        Ok(self
            .rows("SELECT seq, doc_id FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2", &[&seq, &(limit as i64)])?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    fn person(&self, user: &str) -> Result<Option<(String, Option<String>)>> {
        Ok(self.row("SELECT role, department FROM users WHERE id = $1", &[&user])?.map(|r| (r.get(0), r.get(1))))
    }

    fn people(&self) -> Result<Vec<PersonRow>> {
        Ok(self
            .rows(
                "SELECT u.id, u.role, u.department, EXISTS (SELECT 1 FROM console_accounts a WHERE a.user_id = u.id)
                 FROM users u ORDER BY u.role, u.id",
                &[],
            )?
            .iter()
            .map(|r| PersonRow { id: r.get(0), role: r.get(1), department: r.get(2), has_password: r.get(3) })
            .collect())
    }

    fn console_account(&self, user: &str) -> Result<Option<ConsoleAccount>> {
        Ok(self
            .row(
                "SELECT a.password_hash, a.failed_attempts, a.locked_until_ms FROM console_accounts a
                 JOIN users u ON u.id = a.user_id WHERE a.user_id = $1 AND u.role != 'worker'",
                &[&user],
            )?
            .map(|r| ConsoleAccount { password_hash: r.get(0), failed_attempts: r.get(1), locked_until_ms: r.get(2) }))
    }

    fn console_session(&self, token_hash: &str, now_ms: i64) -> Result<Option<(String, String)>> {
        Ok(self
            .row(
                "SELECT user_id, csrf FROM console_sessions WHERE token_hash = $1 AND expires_ms > $2",
                &[&token_hash, &now_ms],
            )?
            .map(|r| (r.get(0), r.get(1))))
    }

    fn grids_placed_in(&self, area: &str) -> Result<Vec<String>> {
        self.strings("SELECT 'grid:' || grid_id FROM grid_placements WHERE scope = $1 AND to_seq IS NULL", &[&area])
    }

    fn case_reported(&self, doc_id: &str) -> Result<bool> {
        Ok(self.row("SELECT 1 FROM docs WHERE doc_id = $1 AND title IS NOT NULL", &[&doc_id])?.is_some())
    }

    fn case_flags_and_received(&self, doc_id: &str) -> Result<(String, Option<i64>)> {
        let flags: String =
            self.row("SELECT flags FROM docs WHERE doc_id = $1", &[&doc_id])?.map(|r| r.get(0)).unwrap_or_default();
        let received: Option<i64> =
            self.one("SELECT min(received_ms) FROM changes WHERE doc_id = $1", &[&doc_id])?.get(0);
        Ok((flags, received))
    }

    fn blob_held(&self, sha256: &str) -> Result<bool> {
        Ok(self.row("SELECT 1 FROM blobs WHERE sha256 = $1", &[&sha256])?.is_some())
    }

    fn queue_counts(&self, q: &QueueQuery) -> Result<Vec<(String, i64)>> {
        super::console::queue_counts(self, q)
    }

    fn queue_rows(&self, q: &QueueQuery, page: &QueuePage) -> Result<Vec<QueueRow>> {
        super::console::queue_rows(self, q, page)
    }

    fn map_pins(&self, q: &QueueQuery, limit: u32) -> Result<Vec<MapPin>> {
        super::console::map_pins(self, q, limit)
    }

    fn check_ins_on(&self, grid: &str, day: &str) -> Result<Vec<CheckInView>> {
        Ok(self
            .rows(
                "SELECT user_id, at_ms, point_id, inside_grid, distance_m, mock FROM records
                 WHERE grid_id = $1 AND day = $2 ORDER BY at_ms",
                &[&grid, &day],
            )?
            .iter()
            .map(|r| CheckInView {
                user: r.get::<_, Option<String>>(0).unwrap_or_default(),
                at_ms: r.get::<_, Option<i64>>(1).unwrap_or_default(),
                point: r.get(2),
                inside_grid: r.get::<_, Option<bool>>(3).unwrap_or_default(),
                distance_m: r.get(4),
                mock: r.get::<_, Option<bool>>(5).unwrap_or_default(),
            })
            .collect())
    }

    fn workers(&self) -> Result<Vec<(String, Vec<String>)>> {
        Ok(self
            .rows(
                "SELECT u.id, array_remove(array_agg(s.scope ORDER BY s.scope), NULL) FROM users u
                 LEFT JOIN user_scopes s ON s.user_id = u.id WHERE u.role = 'worker' GROUP BY u.id ORDER BY u.id",
                &[],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    fn reported_by(&self, reporter: &str, from_ms: i64, to_ms: i64) -> Result<Vec<ReportedCase>> {
        Ok(self
            .rows(
                "SELECT doc_id, status, deadline_ms FROM docs WHERE reporter = $1 AND reported_ms >= $2 AND reported_ms < $3",
                &[&reporter, &from_ms, &to_ms],
            )?
            .iter()
            .map(|r| ReportedCase { doc_id: r.get(0), status: r.get(1), deadline_ms: r.get(2) })
            .collect())
    }

    fn check_in_count(&self, user: &str, from_ms: i64, to_ms: i64) -> Result<i64> {
        Ok(self
            .one(
                "SELECT count(*) FROM records WHERE user_id = $1 AND at_ms >= $2 AND at_ms < $3 AND grid_id IS NOT NULL",
                &[&user, &from_ms, &to_ms],
            )?
            .get(0))
    }

    fn chain_links_between(&self, device: &str, lo: i64, hi: i64) -> Result<Vec<(i64, String, String)>> {
        Ok(self
            .rows(
                "SELECT seq, link_hash, prev FROM chain_links WHERE device_id = $1 AND seq BETWEEN $2 AND $3",
                &[&device, &lo, &hi],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    fn links_of(&self, key: &str) -> Result<Vec<StoredLink>> {
        Ok(self
            .rows(
                &format!("SELECT {LINK_COLUMNS} FROM chain_links WHERE item_key = $1 ORDER BY device_id, seq"),
                &[&key],
            )?
            .iter()
            .map(stored_link)
            .collect())
    }

    fn chain_segment(&self, device: &str, lo: i64, hi: i64) -> Result<Vec<StoredLink>> {
        Ok(self
            .rows(
                &format!(
                    "SELECT {LINK_COLUMNS} FROM chain_links WHERE device_id = $1 AND seq BETWEEN $2 AND $3
                     ORDER BY seq, link_hash"
                ),
                &[&device, &lo, &hi],
            )?
            .iter()
            .map(stored_link)
            .collect())
    }

    fn clock_flags_of_case(&self, doc_id: &str) -> Result<Vec<(String, i64)>> {
        Ok(self
            .rows("SELECT item, off_ms FROM clock_flags WHERE doc_id = $1", &[&doc_id])?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    fn device_boots(&self, device: &str) -> Result<Vec<BootRow>> {
        Ok(self
            .rows("SELECT boot_id, start_ms, implied_ms FROM device_boots WHERE device_id = $1", &[&device])?
            .iter()
            .map(|r| BootRow { boot_id: r.get(0), start_ms: r.get(1), implied_ms: r.get(2) })
            .collect())
    }

    fn clock_flag_count(&self, user: &str, from_ms: i64, to_ms: i64) -> Result<i64> {
        Ok(self
            .one(
                "SELECT count(*) FROM clock_flags WHERE user_id = $1 AND at_ms >= $2 AND at_ms < $3",
                &[&user, &from_ms, &to_ms],
            )?
            .get(0))
    }

    fn chain_summaries(&self) -> Result<Vec<ChainSummary>> {
        Ok(self
            .rows(
                "SELECT device_id, count(*), count(DISTINCT seq), max(seq), count(flag) FROM chain_links
                 GROUP BY device_id ORDER BY device_id",
                &[],
            )?
            .iter()
            .map(|r| ChainSummary {
                device_id: r.get(0),
                links: r.get(1),
                places: r.get(2),
                highest: r.get(3),
                forks: r.get(4),
            })
            .collect())
    }

    fn chain_held_through(&self, device: &str, head: i64) -> Result<bool> {
        let held: i64 = self
            .one(
                "SELECT count(DISTINCT seq) FROM chain_links WHERE device_id = $1 AND seq BETWEEN 1 AND $2",
                &[&device, &head],
            )?
            .get(0);
        Ok(held == head.max(0))
    }
}

impl WriteTx for PgTx<'_, '_> {
    fn flag_clocks(&self, flags: &[ClockFlag]) -> Result<()> {
        // Rare (a clock set back or far ahead): one statement each.
        for f in flags {
            self.exec(
                "INSERT INTO clock_flags (item, doc_id, device_id, user_id, off_ms, at_ms) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (item) DO NOTHING",
                &[&f.item, &f.doc_id, &f.device_id, &f.user_id, &f.off_ms, &f.at_ms],
            )?;
        }
        Ok(())
    }

    fn note_boots(&self, device: &str, boots: &[BootRow]) -> Result<()> {
        for b in boots {
            self.exec(
                "INSERT INTO device_boots (device_id, boot_id, start_ms, implied_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (device_id, boot_id) DO UPDATE SET
                     start_ms = CASE WHEN device_boots.start_ms IS NULL OR excluded.start_ms < device_boots.start_ms
                                     THEN coalesce(excluded.start_ms, device_boots.start_ms) ELSE device_boots.start_ms END,
                     implied_ms = coalesce(device_boots.implied_ms, excluded.implied_ms)",
                &[&device, &b.boot_id, &b.start_ms, &b.implied_ms],
            )?;
        }
        Ok(())
    }

    fn put_links(&self, links: &[StoredLink]) -> Result<()> {
        if links.is_empty() {
            return Ok(());
        }
        // One statement for a push's links, as for its other rows (ADR 21).
        let col = |f: fn(&StoredLink) -> String| links.iter().map(f).collect::<Vec<String>>();
        let (devices, hashes, prevs, sigs, kinds, keys, contents) = (
            col(|l| l.device_id.clone()),
            col(|l| l.link_hash.clone()),
            col(|l| l.prev.clone()),
            col(|l| l.sig.clone()),
            col(|l| l.kind.clone()),
            col(|l| l.item_key.clone()),
            col(|l| l.sha256.clone()),
        );
        let seqs: Vec<i64> = links.iter().map(|l| l.seq).collect();
        let flags: Vec<Option<String>> = links.iter().map(|l| l.flag.clone()).collect();
        let ats: Vec<i64> = links.iter().map(|l| l.at_ms).collect();
        self.exec(
            "INSERT INTO chain_links (device_id, seq, link_hash, prev, sig, kind, item_key, sha256, flag, at_ms)
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
                                  $7::text[], $8::text[], $9::text[], $10::bigint[])
             ON CONFLICT DO NOTHING",
            &[&devices, &seqs, &hashes, &prevs, &sigs, &kinds, &keys, &contents, &flags, &ats],
        )?;
        Ok(())
    }

    fn next_seq(&self) -> Result<i64> {
        if !self.writer {
            return Err(ServerError::Internal("a sequence number taken on a reader".into()));
        }
        let last = match (*self.seq.borrow(), self.counter.get()) {
            (Some(n), _) => n,
            // The write transaction holds the counter's row lock (taken when it began), so no
            // other instance can take a number until this one commits.
            (None, Some(n)) => n,
            (None, None) => self.last_seq()?,
        };
        *self.seq.borrow_mut() = Some(last + 1);
        Ok(last + 1)
    }

    /// One query for the whole push: where its hashes are, and which of its documents the
    /// database holds nothing of (`batched.rs`).
    fn prefetch(&self, hashes: &[&str], docs: &[&str]) -> Result<()> {
        let hashes: Vec<&str> = {
            let b = self.batched.borrow();
            hashes.iter().copied().filter(|h| !b.hashes.contains_key(*h) && !b.stored.contains_key(*h)).collect()
        };
        let docs: Vec<&str> = {
            let b = self.batched.borrow();
            docs.iter().copied().filter(|d| !b.fresh.contains_key(*d)).collect()
        };
        // Index lookups by `= ANY`: joining an unnested array made the planner scan tables.
        if !hashes.is_empty() {
            let rows = self.rows(
                "SELECT 0, hash, device_id, doc_id FROM changes WHERE hash = ANY($1)
                 UNION ALL SELECT 1, hash, NULL, NULL FROM parked WHERE hash = ANY($1)
                 UNION ALL SELECT 2, hash, status, device_id FROM quarantine WHERE hash = ANY($1)",
                &[&hashes],
            )?;
            let mut b = self.batched.borrow_mut();
            for h in &hashes {
                b.hashes.insert((*h).to_owned(), Whereabouts::default());
            }
            for r in rows {
                let (kind, hash): (i32, String) = (r.get(0), r.get(1));
                let (a, z): (Option<String>, Option<String>) = (r.get(2), r.get(3));
                let w = b.hashes.entry(hash).or_default();
                match kind {
                    0 => w.applied = a.zip(z),
                    1 => w.parked = true,
                    _ => w.quarantined = a.zip(z),
                }
            }
        }
        if !docs.is_empty() {
            let held: std::collections::HashSet<String> = self
                .rows(
                    "SELECT doc_id FROM changes WHERE doc_id = ANY($1)
                     UNION SELECT doc_id FROM docs WHERE doc_id = ANY($1)
                     UNION SELECT doc_id FROM membership WHERE doc_id = ANY($1)",
                    &[&docs],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let mut b = self.batched.borrow_mut();
            for d in docs.iter().filter(|d| !held.contains(**d)) {
                b.fresh.entry((*d).to_owned()).or_default();
            }
        }
        Ok(())
    }

    fn whereabouts(&self, hash: &str) -> Result<Whereabouts> {
        if let Some(w) = self.batched.borrow().whereabouts(hash) {
            return Ok(w);
        }
        let r = self.one(
            "SELECT (SELECT device_id FROM changes WHERE hash = $1), (SELECT doc_id FROM changes WHERE hash = $1),
                    EXISTS (SELECT 1 FROM parked WHERE hash = $1),
                    (SELECT status FROM quarantine WHERE hash = $1), (SELECT device_id FROM quarantine WHERE hash = $1)",
            &[&hash],
        )?;
        let (owner, doc): (Option<String>, Option<String>) = (r.get(0), r.get(1));
        let (status, by): (Option<String>, Option<String>) = (r.get(3), r.get(4));
        Ok(Whereabouts { applied: owner.zip(doc), parked: r.get(2), quarantined: status.zip(by) })
    }

    fn actor_owner(&self, actor: &str) -> Result<Option<String>> {
        {
            let b = self.batched.borrow();
            if let Some(device) = b.actor_owners.get(actor) {
                return Ok(Some(device.clone()));
            }
            if b.actors_unowned.contains(actor) {
                return Ok(None);
            }
        }
        let owner: Option<String> =
            self.row("SELECT device_id FROM actors WHERE actor = $1", &[&actor])?.map(|r| r.get(0));
        if owner.is_none() {
            self.batched.borrow_mut().actors_unowned.insert(actor.to_owned());
        }
        Ok(owner)
    }

    fn register_actor(&self, actor: &str, device_id: &str, now_ms: i64) -> Result<()> {
        // Kept only when nobody owns it yet (the statement does nothing for a taken actor).
        if self.actor_owner(actor)?.is_none() {
            self.batched.borrow_mut().note_actor(actor, device_id, now_ms);
        }
        Ok(())
    }

    fn register_console_device(&self, id: &str, code: &str, user: &str, actor: &str, now_ms: i64) -> Result<()> {
        self.batched.borrow_mut().actors_unowned.remove(actor);
        self.exec(
            "INSERT INTO devices (id, code, user_id, status, created_ms) VALUES ($1, $2, $3, 'active', $4)
             ON CONFLICT (id) DO NOTHING",
            &[&id, &code, &user, &now_ms],
        )?;
        self.exec(
            "INSERT INTO actors (actor, device_id, first_seen_ms) VALUES ($1, $2, $3) ON CONFLICT (actor) DO NOTHING",
            &[&actor, &id, &now_ms],
        )?;
        Ok(())
    }

    fn console_sign_in_failed(&self, user: &str, failed_attempts: i64, locked_until_ms: i64) -> Result<()> {
        self.exec(
            "UPDATE console_accounts SET failed_attempts = $2, locked_until_ms = $3 WHERE user_id = $1",
            &[&user, &failed_attempts, &locked_until_ms],
        )?;
        Ok(())
    }

    fn open_console_session(
        &self,
        token_hash: &str,
        user: &str,
        csrf: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<()> {
        self.exec("UPDATE console_accounts SET failed_attempts = 0, locked_until_ms = 0 WHERE user_id = $1", &[&user])?;
        self.exec("DELETE FROM console_sessions WHERE expires_ms < $1", &[&now_ms])?;
        self.exec(
            "INSERT INTO console_sessions (token_hash, user_id, csrf, created_ms, expires_ms) VALUES ($1, $2, $3, $4, $5)",
            &[&token_hash, &user, &csrf, &now_ms, &expires_ms],
        )?;
        Ok(())
    }

    fn close_console_session(&self, token_hash: &str) -> Result<()> {
        self.exec("DELETE FROM console_sessions WHERE token_hash = $1", &[&token_hash])?;
        Ok(())
    }

    fn set_console_password(&self, user: &str, password_hash: &str, now_ms: i64) -> Result<()> {
        self.exec(
            "INSERT INTO console_accounts (user_id, password_hash, failed_attempts, locked_until_ms, updated_ms)
             VALUES ($1, $2, 0, 0, $3)
             ON CONFLICT (user_id) DO UPDATE SET password_hash = excluded.password_hash, failed_attempts = 0,
                locked_until_ms = 0, updated_ms = excluded.updated_ms",
            &[&user, &password_hash, &now_ms],
        )?;
        Ok(())
    }

    fn park(&self, c: &ParkedChange) -> Result<()> {
        {
            let mut b = self.batched.borrow_mut();
            b.forget_hash(&c.hash);
            b.forget_doc(&c.doc_id);
        }
        self.exec(
            "INSERT INTO parked (hash, doc_id, device_id, received_ms, deps, bytes, vouched)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[&c.hash, &c.doc_id, &c.device_id, &c.received_ms, &c.deps.join(","), &c.bytes, &c.vouched],
        )?;
        Ok(())
    }

    fn any_parked(&self) -> Result<bool> {
        Ok(self.one("SELECT EXISTS (SELECT 1 FROM parked)", &[])?.get(0))
    }

    fn parked_in(&self, doc_id: &str) -> Result<Vec<ParkedChange>> {
        Ok(self
            .rows(
                "SELECT hash, device_id, received_ms, deps, bytes, vouched FROM parked WHERE doc_id = $1
                 ORDER BY received_ms, hash",
                &[&doc_id],
            )?
            .iter()
            .map(|r| {
                let deps: String = r.get(3);
                ParkedChange {
                    hash: r.get(0),
                    doc_id: doc_id.to_owned(),
                    device_id: r.get(1),
                    received_ms: r.get(2),
                    deps: deps.split(',').filter(|d| !d.is_empty()).map(str::to_owned).collect(),
                    bytes: r.get(4),
                    vouched: r.get(5),
                }
            })
            .collect())
    }

    fn unpark(&self, hash: &str) -> Result<()> {
        self.batched.borrow_mut().forget_hash(hash);
        self.exec("DELETE FROM parked WHERE hash = $1", &[&hash])?;
        Ok(())
    }

    fn quarantine(&self, e: &QuarantineEntry<'_>) -> Result<()> {
        {
            let mut b = self.batched.borrow_mut();
            b.forget_hash(e.key);
            b.forget_doc(e.doc_id);
        }
        self.exec(
            "INSERT INTO quarantine (hash, doc_id, device_id, received_ms, reason, bytes) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT DO NOTHING",
            &[&e.key, &e.doc_id, &e.device_id, &e.received_ms, &e.reason, &e.bytes],
        )?;
        Ok(())
    }

    fn quarantined_item(&self, key: &str) -> Result<Option<Quarantined>> {
        Ok(self
            .row("SELECT doc_id, device_id, status, bytes FROM quarantine WHERE hash = $1", &[&key])?
            .map(|r| Quarantined { doc_id: r.get(0), device_id: r.get(1), status: r.get(2), bytes: r.get(3) }))
    }

    fn set_quarantine_status(&self, key: &str, status: &str) -> Result<()> {
        self.batched.borrow_mut().forget_hash(key);
        self.exec("UPDATE quarantine SET status = $2 WHERE hash = $1", &[&key, &status])?;
        Ok(())
    }

    fn doc_actor(&self, doc_id: &str, actor: &str) -> Result<Option<i64>> {
        if let Some(last) = self.fresh(doc_id, |s| s.actors.get(actor).copied()) {
            return Ok(last);
        }
        Ok(self
            .row("SELECT last_seq FROM doc_actors WHERE doc_id = $1 AND actor = $2", &[&doc_id, &actor])?
            .map(|r| r.get(0)))
    }

    fn note_doc_actor(&self, doc_id: &str, actor: &str, seq: i64) -> Result<()> {
        self.batched.borrow_mut().note_doc_actor(doc_id, actor, seq);
        Ok(())
    }

    fn store_change(&self, c: &StoredChange<'_>) -> Result<()> {
        self.batched.borrow_mut().note_change(PendingChange {
            seq: c.seq,
            hash: c.hash.to_owned(),
            doc_id: c.doc_id.to_owned(),
            device_id: c.device_id.to_owned(),
            received_ms: c.received_ms,
            bytes: c.bytes.to_vec(),
        });
        Ok(())
    }

    fn store_event(&self, doc_id: &str, event_id: &str, json: &str) -> Result<()> {
        self.batched.borrow_mut().note_event(doc_id, event_id, json);
        Ok(())
    }

    fn events_obj(&self, doc_id: &str) -> Result<Option<String>> {
        if let Some(o) = self.fresh(doc_id, |s| s.events_obj.clone()) {
            return Ok(o);
        }
        Ok(self.row("SELECT events_obj FROM docs WHERE doc_id = $1", &[&doc_id])?.and_then(|r| r.get(0)))
    }

    fn write_case_row(&self, c: &CaseRow<'_>) -> Result<()> {
        if self.batched.borrow().row_waiting(c.doc_id) {
            self.flush()?;
        }
        self.batched.borrow_mut().note_row(PendingRow::from(c));
        Ok(())
    }

    fn join_scopes(&self, doc_id: &str, scopes: &[&str], seq: i64, status: &str) -> Result<()> {
        self.batched.borrow_mut().note_memberships(doc_id, scopes, seq, status);
        Ok(())
    }

    fn set_membership_status(&self, doc_id: &str, status: &str) -> Result<()> {
        self.batched.borrow_mut().forget_doc(doc_id);
        self.exec("UPDATE membership SET status = $2 WHERE doc_id = $1 AND status != $2", &[&doc_id, &status])?;
        Ok(())
    }

    fn list_change(&self, scope: &str, seq: i64, doc_id: &str) -> Result<()> {
        self.batched.borrow_mut().forget_doc(doc_id);
        self.exec(
            "INSERT INTO scope_changes (scope, seq, doc_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&scope, &seq, &doc_id],
        )?;
        Ok(())
    }

    /// Kept back with the push's other rows (`flush`).
    fn store_records(&self, records: &[NewRecord<'_>]) -> Result<()> {
        self.batched.borrow_mut().records.extend(records.iter().map(PendingRecord::from));
        Ok(())
    }

    fn device_seen(&self, device_id: &str, now_ms: i64, state_json: &str) -> Result<()> {
        self.note_sighting(device_id, now_ms, state_json, false)
    }

    fn device_drained(&self, device_id: &str, now_ms: i64) -> Result<()> {
        self.exec("UPDATE devices SET drained_ms = coalesce(drained_ms, $2) WHERE id = $1", &[&device_id, &now_ms])?;
        Ok(())
    }

    fn device_seen_at_least(&self, device_id: &str, at_ms: i64, state_json: &str) -> Result<()> {
        self.note_sighting(device_id, at_ms, state_json, true)
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.exec(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&key, &value],
        )?;
        if let Some(m) = self.meta.borrow_mut().as_mut() {
            m.insert(key.to_owned(), value.to_owned());
        }
        Ok(())
    }

    fn set_case_facts(&self, doc_id: &str, facts: Option<&crate::rules::overview::CaseFacts>) -> Result<()> {
        super::console::set_case_facts(self, doc_id, facts)
    }

    fn set_escalation_due(&self, doc_id: &str, due_ms: Option<i64>) -> Result<()> {
        match due_ms {
            Some(ms) => self.exec(
                "INSERT INTO escalation_due (doc_id, due_ms) VALUES ($1, $2)
                 ON CONFLICT (doc_id) DO UPDATE SET due_ms = excluded.due_ms",
                &[&doc_id, &ms],
            )?,
            None => self.exec("DELETE FROM escalation_due WHERE doc_id = $1", &[&doc_id])?,
        };
        Ok(())
    }

    fn recheck_waiting_cases(&self) -> Result<()> {
        self.exec(
            "INSERT INTO escalation_due (doc_id, due_ms)
             SELECT doc_id, 0 FROM docs WHERE status IN ('dispatched', 'in_progress')
             ON CONFLICT (doc_id) DO UPDATE SET due_ms = 0",
            &[],
        )?;
        Ok(())
    }

    fn set_case_terms(&self, doc_id: &str, terms: &BTreeSet<String>) -> Result<()> {
        let before: String = self
            .row("SELECT terms FROM search_docs WHERE doc_id = $1", &[&doc_id])?
            .map(|r| r.get(0))
            .unwrap_or_default();
        let before: BTreeSet<&str> = before.split(' ').filter(|t| !t.is_empty()).collect();
        // One statement each way, whatever the number of terms (every statement is a round trip).
        let gone: Vec<&str> = before.iter().copied().filter(|t| !terms.contains(*t)).collect();
        let new: Vec<&str> = terms.iter().map(String::as_str).filter(|t| !before.contains(t)).collect();
        self.exec("DELETE FROM case_terms WHERE doc_id = $1 AND term = ANY($2)", &[&doc_id, &gone])?;
        self.exec(
            "INSERT INTO case_terms (term, doc_id) SELECT t, $1 FROM unnest($2::text[]) AS t ON CONFLICT DO NOTHING",
            &[&doc_id, &new],
        )?;
        let joined = terms.iter().map(String::as_str).collect::<Vec<_>>().join(" ");
        self.exec(
            "INSERT INTO search_docs (doc_id, terms) VALUES ($1, $2)
             ON CONFLICT (doc_id) DO UPDATE SET terms = excluded.terms",
            &[&doc_id, &joined],
        )?;
        Ok(())
    }

    fn pending_device(&self, enrol_hash: &str) -> Result<Option<String>> {
        Ok(self
            .row("SELECT id FROM devices WHERE enrol_hash = $1 AND status = 'pending'", &[&enrol_hash])?
            .map(|r| r.get(0)))
    }

    fn activate_device(&self, id: &str, token_hash: &str, public_key: Option<&str>, now_ms: i64) -> Result<()> {
        self.exec(
            "UPDATE devices SET enrol_hash = NULL, token_hash = $2, status = 'active', last_seen_ms = $3,
                public_key = $4 WHERE id = $1",
            &[&id, &token_hash, &now_ms, &public_key],
        )?;
        Ok(())
    }

    fn code_taken(&self, code: &str) -> Result<bool> {
        Ok(self.one("SELECT EXISTS (SELECT 1 FROM devices WHERE code = $1)", &[&code])?.get(0))
    }

    fn insert_device(&self, id: &str, code: &str, user: &str, enrol_hash: &str, now_ms: i64) -> Result<()> {
        self.exec(
            "INSERT INTO devices (id, code, user_id, enrol_hash, status, created_ms) VALUES ($1, $2, $3, $4, 'pending', $5)",
            &[&id, &code, &user, &enrol_hash, &now_ms],
        )?;
        Ok(())
    }

    fn retire_device(&self, id: &str, now_ms: i64) -> Result<bool> {
        Ok(self.exec(
            "UPDATE devices SET retired_ms = coalesce(retired_ms, $2) WHERE id = $1 AND status = 'active'",
            &[&id, &now_ms],
        )? > 0)
    }

    fn revoke_device(&self, id: &str) -> Result<bool> {
        Ok(self.exec("UPDATE devices SET status = 'revoked' WHERE id = $1", &[&id])? > 0)
    }

    fn order_wipe(&self, id: &str, now_ms: i64) -> Result<bool> {
        Ok(self.exec(
            "UPDATE devices SET wipe_ordered_ms = coalesce(wipe_ordered_ms, $2), retired_ms = coalesce(retired_ms, $2)
             WHERE id = $1 AND status = 'active'",
            &[&id, &now_ms],
        )? > 0)
    }

    fn wipe_confirmed(&self, id: &str, now_ms: i64) -> Result<()> {
        self.exec(
            "UPDATE devices SET wipe_confirmed_ms = coalesce(wipe_confirmed_ms, $2) WHERE id = $1",
            &[&id, &now_ms],
        )?;
        Ok(())
    }

    fn device_wiped(&self, id: &str, now_ms: i64) -> Result<bool> {
        Ok(self.exec(
            "UPDATE devices SET status = 'revoked', wiped_ms = coalesce(wiped_ms, $2)
             WHERE id = $1 AND wipe_confirmed_ms IS NOT NULL AND (status = 'active' OR wiped_ms IS NOT NULL)",
            &[&id, &now_ms],
        )? > 0)
    }

    fn reject_quarantined(&self, key: &str) -> Result<bool> {
        self.batched.borrow_mut().forget_hash(key);
        Ok(self.exec("UPDATE quarantine SET status = 'rejected' WHERE hash = $1 AND status = 'pending'", &[&key])? > 0)
    }

    fn upsert_user(&self, user: &str, role: &str, department: Option<&str>) -> Result<()> {
        self.exec(
            "INSERT INTO users (id, role, department) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET role = excluded.role, department = excluded.department",
            &[&user, &role, &department],
        )?;
        Ok(())
    }

    fn grant_scope(&self, user: &str, scope: &str, seq: i64) -> Result<()> {
        self.exec("INSERT INTO user_scopes (user_id, scope, granted_seq) VALUES ($1, $2, $3)", &[&user, &scope, &seq])?;
        Ok(())
    }

    fn remove_scope(&self, user: &str, scope: &str, seq: i64) -> Result<()> {
        self.exec("DELETE FROM user_scopes WHERE user_id = $1 AND scope = $2", &[&user, &scope])?;
        self.exec(
            "INSERT INTO user_scopes_removed (user_id, scope, removed_seq) VALUES ($1, $2, $3)",
            &[&user, &scope, &seq],
        )?;
        Ok(())
    }

    fn replace_catalog(&self, catalog: &Catalog) -> Result<()> {
        self.exec("DELETE FROM grids", &[])?;
        self.exec("DELETE FROM categories", &[])?;
        self.exec("DELETE FROM departments", &[])?;
        for g in &catalog.grids {
            self.exec(
                "INSERT INTO grids (id, community, street, json) VALUES ($1, $2, $3, $4)",
                &[&g.id.0, &g.community, &g.street, &json(g)?],
            )?;
        }
        for c in &catalog.categories {
            self.exec("INSERT INTO categories (id, json) VALUES ($1, $2)", &[&c.id.0, &json(c)?])?;
        }
        for d in &catalog.departments {
            self.exec("INSERT INTO departments (id, json) VALUES ($1, $2)", &[&d.id.0, &json(d)?])?;
        }
        Ok(())
    }

    fn end_placement(&self, scope: &str, grid: &str, seq: i64) -> Result<()> {
        self.exec(
            "UPDATE grid_placements SET to_seq = $3 WHERE scope = $1 AND grid_id = $2 AND to_seq IS NULL",
            &[&scope, &grid, &seq],
        )?;
        Ok(())
    }

    fn add_placement(&self, scope: &str, grid: &str, seq: i64) -> Result<()> {
        self.exec(
            "INSERT INTO grid_placements (scope, grid_id, from_seq) VALUES ($1, $2, $3)",
            &[&scope, &grid, &seq],
        )?;
        Ok(())
    }

    fn link_blob(&self, sha256: &str, size: u64, owner: &BlobLinkOwner, device_id: &str, now_ms: i64) -> Result<()> {
        let (kind, id) = match owner {
            BlobLinkOwner::Case(id) => ("case", id),
            BlobLinkOwner::CheckIn(id) => ("check_in", id),
        };
        self.exec(
            "INSERT INTO blobs (sha256, size, first_device, received_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (sha256) DO NOTHING",
            &[&sha256, &(size as i64), &device_id, &now_ms],
        )?;
        self.exec(
            "INSERT INTO blob_links (sha256, owner_kind, owner_id, device_id, linked_ms) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
            &[&sha256, &kind, id, &device_id, &now_ms],
        )?;
        Ok(())
    }
}
