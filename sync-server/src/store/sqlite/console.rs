//! The console's SQL on SQLite: the queue's filters and pages as statements (the rules that
//! decide what a person sees are in `rules::console`), and the schema 4 backfill of the columns
//! the queue reads.

use gridwork_model::lifecycle::{self, Event, EventKind};
use gridwork_model::search::{prefix_end, TermMatch};

use super::*;
use crate::ingest::read_change;
use crate::rules::overview::{CaseFacts, DepartmentRow, FactRows, FactsQuery};
use crate::store::console::{departments_column, queue_key, CheckInView, MapPin};
use crate::store::port::{QueuePage, QueueQuery, QueueRow};

/// Fills the console's case columns of schema 4 from the changes already stored (run once, by
/// the migration).
pub(super) fn fill_case_columns(tx: &Transaction<'_>) -> Result<()> {
    let docs: Vec<String> =
        tx.prepare("SELECT doc_id FROM docs")?.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    for doc_id in docs {
        let changes: Vec<Vec<u8>> = tx
            .prepare_cached("SELECT bytes FROM changes WHERE doc_id = ?1 ORDER BY seq")?
            .query_map([&doc_id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for bytes in changes {
            let Ok((_, facts)) = read_change(&bytes) else { continue };
            for (k, v) in &facts.root_puts {
                let column = match k.as_str() {
                    keys::TITLE => "title",
                    keys::CODE => "code",
                    keys::REPORTER => "reporter",
                    keys::LOCATION => {
                        set_location(tx, &doc_id, v)?;
                        continue;
                    }
                    _ => continue,
                };
                exec(tx, &format!("UPDATE docs SET {column} = ?2 WHERE doc_id = ?1"), params![doc_id, v])?;
            }
        }
        let events: Vec<Event> = tx
            .prepare_cached("SELECT json FROM doc_events WHERE doc_id = ?1")?
            .query_map([&doc_id], |r| r.get::<_, String>(0))?
            .filter_map(|j| j.ok().and_then(|j| serde_json::from_str(&j).ok()))
            .collect();
        let reported = events.iter().find(|e| matches!(e.kind, EventKind::Report)).map(|e| e.clock.estimated_ms());
        let state = lifecycle::fold(events).state;
        exec(
            tx,
            "UPDATE docs SET reported_ms = ?2, departments = ?3 WHERE doc_id = ?1",
            params![doc_id, reported, departments_column(state.dispatched.keys().map(|d| d.0.as_str()))],
        )?;
        refresh_queue_key(tx, &doc_id)?;
    }
    exec(tx, "UPDATE membership SET status = (SELECT d.status FROM docs d WHERE d.doc_id = membership.doc_id)", [])?;
    let records: Vec<(String, String, String)> = tx
        .prepare("SELECT id, device_id, body FROM records")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (id, device, body) in records {
        super::records::file_check_in_before_7(tx, &id, &device, &body)?;
    }
    Ok(())
}

/// The case's position for the map, from a `location` put (JSON of a `Location`); used by the
/// schema 4 backfill (the sync path writes it with the rest of the case in `refresh_doc`).
fn set_location(tx: &Connection, doc_id: &str, json: &str) -> Result<()> {
    if let Ok(loc) = serde_json::from_str::<Location>(json) {
        exec(tx, "UPDATE docs SET lat = ?2, lon = ?3 WHERE doc_id = ?1", params![doc_id, loc.lat, loc.lon])?;
    }
    Ok(())
}

/// Recomputes a case's queue key from its stored deadline and report time.
fn refresh_queue_key(tx: &Connection, doc_id: &str) -> Result<()> {
    let (deadline, reported): (Option<i64>, Option<i64>) =
        q1(tx, "SELECT deadline_ms, reported_ms FROM docs WHERE doc_id = ?1", [doc_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    exec(
        tx,
        "UPDATE docs SET queue_key = ?2 WHERE doc_id = ?1",
        params![doc_id, queue_key(deadline, reported, doc_id)],
    )?;
    Ok(())
}

/// A queue query as SQL: the WHERE clause (with and without the status) and its arguments, in
/// order. Areas are tested with `IN (SELECT … FROM membership …)` to count and collect, or as
/// per-row `EXISTS` lookups to walk the queue's order (`per_row`): a page walks the queue and
/// stops after a page of matches, where the `IN` form would first collect every case of the
/// area (right for counting them, wrong for 50 rows).
struct FilterSql {
    without_status: String,
    with_status: String,
    per_row: String,
    args: Vec<Box<dyn rusqlite::ToSql>>,
    args_without_status: usize,
}

fn filter_sql(q: &QueueQuery) -> FilterSql {
    // A document whose report has not arrived yet (status "empty") is not a case to list.
    let mut clauses = vec!["d.status != 'empty'".to_owned()];
    let mut area_forms: Vec<(String, String)> = vec![];
    let mut args: Vec<Box<dyn rusqlite::ToSql>> = vec![];
    let arg = |v: Box<dyn rusqlite::ToSql>, args: &mut Vec<Box<dyn rusqlite::ToSql>>| {
        args.push(v);
        format!("?{}", args.len())
    };
    for (alias, scopes) in [("m", &q.visible), ("m2", &q.area)] {
        let Some(scopes) = scopes else { continue };
        let marks: Vec<String> = scopes.iter().map(|s| arg(Box::new(s.clone()), &mut args)).collect();
        let marks = marks.join(",");
        // Driven from the membership index: a community's cases, not every case checked.
        let in_form =
            format!("d.doc_id IN (SELECT {alias}.doc_id FROM membership {alias} WHERE {alias}.scope IN ({marks}))");
        let per_row = format!(
            "EXISTS (SELECT 1 FROM membership {alias} WHERE {alias}.doc_id = d.doc_id AND {alias}.scope IN ({marks}))"
        );
        clauses.push(in_form.clone());
        area_forms.push((in_form, per_row));
    }
    // Each search term: the cases holding it, from the term index (schema 12).
    for (i, term) in q.terms.iter().enumerate() {
        let alias = format!("t{i}");
        let test = match term {
            TermMatch::Exact(t) => format!("{alias}.term = {}", arg(Box::new(t.clone()), &mut args)),
            TermMatch::Prefix(p) => {
                let lo = arg(Box::new(p.clone()), &mut args);
                let hi = arg(Box::new(prefix_end(p)), &mut args);
                format!("{alias}.term >= {lo} AND {alias}.term < {hi}")
            }
        };
        // Collected once (SQLite keeps the subquery's result as an index) even when the queue is
        // walked: a per-row test of a prefix would scan the prefix's whole range for every row.
        clauses.push(format!("d.doc_id IN (SELECT {alias}.doc_id FROM case_terms {alias} WHERE {test})"));
    }
    if let Some(c) = &q.category {
        let a = arg(Box::new(c.clone()), &mut args);
        clauses.push(format!("d.category_id = {a}"));
    }
    if let Some(d) = &q.department {
        let a = arg(Box::new(format!("%,{d},%")), &mut args);
        clauses.push(format!("d.departments LIKE {a}"));
    }
    if let Some(below) = &q.overdue_below {
        // The (status, queue_key) index answers it without reading a case.
        let a = arg(Box::new(below.clone()), &mut args);
        clauses.push(format!("d.status IN ('dispatched', 'in_progress') AND d.queue_key < {a}"));
    }
    if let Some(from) = q.reported_from_ms {
        let a = arg(Box::new(from), &mut args);
        clauses.push(format!("d.reported_ms >= {a}"));
    }
    if let Some(before) = q.reported_before_ms {
        let a = arg(Box::new(before), &mut args);
        clauses.push(format!("d.reported_ms < {a}"));
    }
    let without_status = clauses.join(" AND ");
    let args_without_status = args.len();
    if let Some(status) = &q.status {
        let a = arg(Box::new(status.clone()), &mut args);
        clauses.push(format!("d.status = {a}"));
    }
    let with_status = clauses.join(" AND ");
    let mut per_row = with_status.clone();
    for (in_form, row_form) in area_forms {
        per_row = per_row.replace(&in_form, &row_form);
    }
    FilterSql { without_status, with_status, per_row, args, args_without_status }
}

pub(super) fn queue_counts(conn: &Connection, q: &QueueQuery) -> Result<Vec<(String, i64)>> {
    let f = filter_sql(q);
    let counts = match &q.visible {
        // A case in two of the person's scopes (their community, and assigned to them) has a
        // row in each: counted once.
        Some(scopes) if q.area_only() => conn
            .prepare(&format!(
                "SELECT m.status, count(DISTINCT m.doc_id) FROM membership m
                 WHERE m.scope IN ({}) AND m.status != 'empty' GROUP BY m.status ORDER BY m.status",
                (1..=scopes.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(",")
            ))?
            .query_map(rusqlite::params_from_iter(scopes.iter()), |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?,
        _ => conn
            .prepare(&format!(
                "SELECT d.status, count(*) FROM docs d WHERE {} GROUP BY d.status ORDER BY d.status",
                f.without_status
            ))?
            .query_map(rusqlite::params_from_iter(f.args[..f.args_without_status].iter().map(|b| b.as_ref())), |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<rusqlite::Result<_>>()?,
    };
    Ok(counts)
}

/// Rows per page below which a page is collected and sorted rather than walked.
const WALK_ABOVE: i64 = 50 * 100;

pub(super) fn queue_rows(conn: &Connection, q: &QueueQuery, page: &QueuePage) -> Result<Vec<QueueRow>> {
    let FilterSql { with_status, per_row, mut args, .. } = filter_sql(q);
    // Two ways to a page, chosen by how many cases match: walk the queue order (of the
    // district, or of one status) testing each case until a page is full, or collect the
    // matching cases and sort them. Collecting a few thousand costs a few milliseconds; walking
    // costs a page divided by how dense the matches are, which is low once there are many.
    let walk = page.limit.saturating_add(page.skip) <= 1000 && page.matching > WALK_ABOVE;
    let base = if walk { per_row } else { with_status };
    // Keyset paging: a page starts after the last key of the one before (or ends before the
    // first key of the one after), found by one index seek however deep it is.
    let (condition, order) = if let Some(before) = &page.before {
        args.push(Box::new(before.clone()));
        (format!("{base} AND d.queue_key < ?{}", args.len()), "DESC")
    } else if let Some(after) = &page.after {
        args.push(Box::new(after.clone()));
        (format!("{base} AND d.queue_key > ?{}", args.len()), "ASC")
    } else {
        (base, "ASC")
    };
    let rows = conn
        .prepare(&format!(
            "SELECT d.doc_id, coalesce(d.code, ''), d.title, d.status, coalesce(d.grid_id, ''),
                    coalesce(d.category_id, ''), coalesce(d.reporter, ''), d.reported_ms, d.deadline_ms,
                    d.departments, d.flags, coalesce(d.queue_key, '')
             FROM docs d WHERE {condition}
             ORDER BY d.queue_key {order} LIMIT {} OFFSET {}",
            page.limit, page.skip
        ))?
        .query_map(rusqlite::params_from_iter(args.iter().map(|b| b.as_ref())), |r| {
            Ok(QueueRow {
                doc_id: r.get(0)?,
                code: r.get(1)?,
                title: r.get(2)?,
                status: r.get(3)?,
                grid_id: r.get(4)?,
                category_id: r.get(5)?,
                reporter: r.get(6)?,
                reported_ms: r.get(7)?,
                deadline_ms: r.get(8)?,
                departments: r.get(9)?,
                flags: r.get(10)?,
                queue_key: r.get(11)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

pub(super) fn map_pins(conn: &Connection, q: &QueueQuery, limit: u32) -> Result<Vec<MapPin>> {
    let FilterSql { with_status, args, .. } = filter_sql(q);
    Ok(conn
        .prepare(&format!(
            "SELECT d.doc_id, coalesce(d.code, ''), d.status, d.lat, d.lon FROM docs d
             WHERE {with_status} AND d.lat IS NOT NULL
             ORDER BY d.status IN ('closed', 'rejected'), d.reported_ms DESC LIMIT {limit}"
        ))?
        .query_map(rusqlite::params_from_iter(args.iter().map(|b| b.as_ref())), |r| {
            Ok(MapPin { id: r.get(0)?, code: r.get(1)?, status: r.get(2)?, lat: r.get(3)?, lon: r.get(4)? })
        })?
        .collect::<rusqlite::Result<_>>()?)
}

pub(super) fn check_ins_on(conn: &Connection, grid: &str, day: &str) -> Result<Vec<CheckInView>> {
    Ok(conn
        .prepare_cached(
            "SELECT user_id, at_ms, point_id, inside_grid, distance_m, mock FROM check_ins
             WHERE grid_id = ?1 AND day = ?2 ORDER BY at_ms",
        )?
        .query_map(params![grid, day], |r| {
            Ok(CheckInView {
                user: r.get(0)?,
                at_ms: r.get(1)?,
                point: r.get(2)?,
                inside_grid: r.get(3)?,
                mock: r.get(5)?,
                distance_m: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?)
}

/// The overview's grouped facts (schema 14): each grouping read from the covering index that
/// holds it in order, a period as a range of days, an area as a list of grids. The indexes are
/// named (`INDEXED BY`): SQLite's planner, without statistics for a partial index that is still
/// empty, chose a range of another index and a sort — 95 ms instead of none for 100,000 facts.
pub(super) fn overview_facts(conn: &Connection, q: &FactsQuery) -> Result<FactRows> {
    use rusqlite::types::Value;
    // `?1`, `?2` the days (or moments), `?3` the moment overdue is judged at where used; the
    // grids after.
    let grids = |first: usize| match &q.grids {
        None => (String::new(), vec![]),
        Some(grids) => (
            format!(
                "AND grid_id IN ({})",
                (first..first + grids.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(",")
            ),
            grids.iter().map(|g| Value::from(g.clone())).collect(),
        ),
    };
    let days = || vec![Value::from(q.from_day.clone()), Value::from(q.to_day.clone())];
    // Every grouping is (a name, a name or a number, a count).
    fn rows<T: rusqlite::types::FromSql>(
        conn: &Connection,
        sql: &str,
        args: Vec<Value>,
        extra: Vec<Value>,
    ) -> Result<Vec<(String, T, i64)>> {
        Ok(conn
            .prepare_cached(sql)?
            .query_map(rusqlite::params_from_iter(args.iter().chain(&extra)), |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<rusqlite::Result<_>>()?)
    }
    let (area, area_args) = grids(3);
    let by_day = rows(
        conn,
        &format!(
            "SELECT day, category_id, count(*) FROM case_facts INDEXED BY case_facts_by_day WHERE day >= ?1 AND day <= ?2 {area}
             GROUP BY day, category_id"
        ),
        days(),
        area_args.clone(),
    )?;
    let by_grid = rows(
        conn,
        &format!(
            "SELECT grid_id, count(*), count(closed_hours) FROM case_facts INDEXED BY case_facts_by_grid WHERE day >= ?1 AND day <= ?2 {area}
             GROUP BY grid_id"
        ),
        days(),
        area_args.clone(),
    )?;
    let satisfaction = rows(
        conn,
        &format!(
            "SELECT grid_id, satisfaction, count(*) FROM case_facts INDEXED BY case_facts_satisfied
             WHERE satisfaction IS NOT NULL AND day >= ?1 AND day <= ?2 {area} GROUP BY grid_id, satisfaction"
        ),
        days(),
        area_args.clone(),
    )?;
    let closure_hours = rows(
        conn,
        &format!(
            "SELECT category_id, closed_hours, count(*) FROM case_facts INDEXED BY case_facts_closed
             WHERE closed_hours IS NOT NULL AND day >= ?1 AND day <= ?2 {area} GROUP BY category_id, closed_hours"
        ),
        days(),
        area_args,
    )?;
    let (area, area_args) = grids(4);
    let mut overdue_args = days();
    overdue_args.push(Value::from(q.now_ms));
    let overdue = rows(
        conn,
        &format!(
            "SELECT grid_id, coalesce(escalated_to, ''), count(*) FROM case_facts INDEXED BY case_facts_waiting
             WHERE waiting_deadline_ms IS NOT NULL AND waiting_deadline_ms < ?3 AND day >= ?1 AND day <= ?2 {area}
             GROUP BY grid_id, escalated_to"
        ),
        overdue_args,
        area_args.clone(),
    )?;
    let mut args = vec![Value::from(q.from_ms), Value::from(q.to_ms), Value::from(q.now_ms)];
    args.extend(area_args);
    let departments = conn
        .prepare_cached(&format!(
            "SELECT department, count(*), count(done_ms), count(*) FILTER (WHERE done_ms <= deadline_ms),
                    count(*) FILTER (WHERE done_ms IS NULL AND deadline_ms < ?3)
             FROM department_facts WHERE reported_ms >= ?1 AND reported_ms < ?2 {area}
             GROUP BY department ORDER BY department"
        ))?
        .query_map(rusqlite::params_from_iter(args.iter()), |r| {
            Ok(DepartmentRow {
                department: r.get(0)?,
                dispatched: r.get(1)?,
                done: r.get(2)?,
                done_on_time: r.get(3)?,
                overdue: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(FactRows { by_day, by_grid, overdue, satisfaction, closure_hours, departments })
}

/// Replaces a case's overview facts.
pub(super) fn set_case_facts(conn: &Connection, doc_id: &str, facts: Option<&CaseFacts>) -> Result<()> {
    conn.prepare_cached("DELETE FROM case_facts WHERE doc_id = ?1")?.execute([doc_id])?;
    conn.prepare_cached("DELETE FROM department_facts WHERE doc_id = ?1")?.execute([doc_id])?;
    let Some(f) = facts else { return Ok(()) };
    conn.prepare_cached(
        "INSERT INTO case_facts (reported_ms, doc_id, day, grid_id, category_id, closed_hours, waiting_deadline_ms,
                                 escalated_to, satisfaction)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        f.reported_ms,
        doc_id,
        f.day,
        f.grid_id,
        f.category_id,
        f.closed_hours,
        f.waiting_deadline_ms,
        f.escalated_to,
        f.satisfaction
    ])?;
    let mut insert = conn.prepare_cached(
        "INSERT OR REPLACE INTO department_facts (reported_ms, doc_id, department, grid_id, deadline_ms, done_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for d in &f.departments {
        insert.execute(params![f.reported_ms, doc_id, d.department, f.grid_id, d.deadline_ms, d.done_ms])?;
    }
    Ok(())
}

/// Cases overdue now, from the facts' partial indexes (`ReadTx::overdue_count`).
pub(super) fn overdue_count(
    conn: &Connection,
    grids: Option<&[String]>,
    department: Option<&str>,
    now_ms: i64,
) -> Result<i64> {
    if let Some(department) = department {
        return Ok(conn
            .prepare_cached(
                "SELECT count(DISTINCT doc_id) FROM department_facts
                 WHERE department = ?1 AND done_ms IS NULL AND deadline_ms < ?2",
            )?
            .query_row(params![department, now_ms], |r| r.get(0))?);
    }
    let mut args: Vec<rusqlite::types::Value> = vec![now_ms.into()];
    let area = match grids {
        None => String::new(),
        Some(grids) => {
            args.extend(grids.iter().map(|g| rusqlite::types::Value::from(g.clone())));
            format!("AND grid_id IN ({})", (2..grids.len() + 2).map(|i| format!("?{i}")).collect::<Vec<_>>().join(","))
        }
    };
    Ok(conn
        .prepare_cached(&format!(
            "SELECT count(*) FROM case_facts WHERE waiting_deadline_ms IS NOT NULL AND waiting_deadline_ms < ?1 {area}"
        ))?
        .query_row(rusqlite::params_from_iter(args.iter()), |r| r.get(0))?)
}
