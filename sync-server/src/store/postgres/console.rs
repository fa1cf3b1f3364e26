//! The console's queue as PostgreSQL statements: the filters of a [`QueueQuery`] (decided by
//! `rules::console`) as one WHERE clause, scopes matched with `= ANY($n)`.

use gridwork_model::search::{prefix_end, TermMatch};
use postgres::types::ToSql;

use super::port::PgTx;
use crate::error::Result;
use crate::rules::overview::{CaseFacts, DepartmentRow, FactRows, FactsQuery};
use crate::store::console::MapPin;
use crate::store::port::{QueuePage, QueueQuery, QueueRow};

type Arg = Box<dyn ToSql + Sync>;

/// The WHERE clause of a query (with its status when `with_status`), and its arguments.
fn filter(q: &QueueQuery, with_status: bool) -> (String, Vec<Arg>) {
    // A document whose report has not arrived yet (status "empty") is not a case to list.
    let mut clauses = vec!["d.status != 'empty'".to_owned()];
    let mut args: Vec<Arg> = vec![];
    let mut arg = |v: Arg| {
        args.push(v);
        format!("${}", args.len())
    };
    for scopes in [&q.visible, &q.area].into_iter().flatten() {
        let a = arg(Box::new(scopes.clone()));
        clauses.push(format!("EXISTS (SELECT 1 FROM membership m WHERE m.doc_id = d.doc_id AND m.scope = ANY({a}))"));
    }
    // Each search term: the cases holding it, from the term index (schema 5).
    for term in &q.terms {
        let test = match term {
            TermMatch::Exact(t) => format!("t.term = {}", arg(Box::new(t.clone()))),
            TermMatch::Prefix(p) => {
                let lo = arg(Box::new(p.clone()));
                let hi = arg(Box::new(prefix_end(p)));
                format!("t.term >= {lo} AND t.term < {hi}")
            }
        };
        clauses.push(format!("d.doc_id IN (SELECT t.doc_id FROM case_terms t WHERE {test})"));
    }
    if let Some(c) = &q.category {
        let a = arg(Box::new(c.clone()));
        clauses.push(format!("d.category_id = {a}"));
    }
    if let Some(d) = &q.department {
        let a = arg(Box::new(format!("%,{d},%")));
        clauses.push(format!("d.departments LIKE {a}"));
    }
    if let Some(below) = &q.overdue_below {
        let a = arg(Box::new(below.clone()));
        clauses.push(format!("d.status IN ('dispatched', 'in_progress') AND d.queue_key < {a}"));
    }
    if let Some(from) = q.reported_from_ms {
        let a = arg(Box::new(from));
        clauses.push(format!("d.reported_ms >= {a}"));
    }
    if let Some(before) = q.reported_before_ms {
        let a = arg(Box::new(before));
        clauses.push(format!("d.reported_ms < {a}"));
    }
    if with_status {
        if let Some(status) = &q.status {
            let a = arg(Box::new(status.clone()));
            clauses.push(format!("d.status = {a}"));
        }
    }
    (clauses.join(" AND "), args)
}

fn refs(args: &[Arg]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|a| a.as_ref()).collect()
}

pub(super) fn queue_counts(tx: &PgTx<'_, '_>, q: &QueueQuery) -> Result<Vec<(String, i64)>> {
    let rows = match &q.visible {
        // A case in two of the person's scopes has a row in each: counted once.
        Some(scopes) if q.area_only() => tx.rows(
            "SELECT m.status, count(DISTINCT m.doc_id) FROM membership m
             WHERE m.scope = ANY($1) AND m.status != 'empty' GROUP BY m.status ORDER BY m.status",
            &[scopes],
        )?,
        _ => {
            let (condition, args) = filter(q, false);
            tx.rows(
                &format!("SELECT d.status, count(*) FROM docs d WHERE {condition} GROUP BY d.status ORDER BY d.status"),
                &refs(&args),
            )?
        }
    };
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

pub(super) fn queue_rows(tx: &PgTx<'_, '_>, q: &QueueQuery, page: &QueuePage) -> Result<Vec<QueueRow>> {
    let (mut condition, mut args) = filter(q, true);
    // Keyset paging on the queue key (byte order: schema 2).
    let order = if let Some(before) = &page.before {
        args.push(Box::new(before.clone()));
        condition.push_str(&format!(" AND d.queue_key < ${}", args.len()));
        "DESC"
    } else {
        if let Some(after) = &page.after {
            args.push(Box::new(after.clone()));
            condition.push_str(&format!(" AND d.queue_key > ${}", args.len()));
        }
        "ASC"
    };
    let rows = tx.rows(
        &format!(
            "SELECT d.doc_id, coalesce(d.code, ''), coalesce(d.title, ''), d.status, coalesce(d.grid_id, ''),
                    coalesce(d.category_id, ''), coalesce(d.reporter, ''), d.reported_ms, d.deadline_ms,
                    d.departments, d.flags, coalesce(d.queue_key, '')
             FROM docs d WHERE {condition}
             ORDER BY d.queue_key {order} LIMIT {} OFFSET {}",
            page.limit, page.skip
        ),
        &refs(&args),
    )?;
    Ok(rows
        .iter()
        .map(|r| QueueRow {
            doc_id: r.get(0),
            code: r.get(1),
            title: r.get(2),
            status: r.get(3),
            grid_id: r.get(4),
            category_id: r.get(5),
            reporter: r.get(6),
            reported_ms: r.get(7),
            deadline_ms: r.get(8),
            departments: r.get(9),
            flags: r.get(10),
            queue_key: r.get(11),
        })
        .collect())
}

pub(super) fn map_pins(tx: &PgTx<'_, '_>, q: &QueueQuery, limit: u32) -> Result<Vec<MapPin>> {
    let (condition, args) = filter(q, true);
    let rows = tx.rows(
        &format!(
            "SELECT d.doc_id, coalesce(d.code, ''), d.status, d.lat, d.lon FROM docs d
             WHERE {condition} AND d.lat IS NOT NULL
             ORDER BY d.status IN ('closed', 'rejected'), d.reported_ms DESC NULLS LAST LIMIT {limit}"
        ),
        &refs(&args),
    )?;
    Ok(rows
        .iter()
        .map(|r| MapPin { id: r.get(0), code: r.get(1), status: r.get(2), lat: r.get(3), lon: r.get(4) })
        .collect())
}

/// The overview's grouped facts (schema 6): each grouping from its covering index, a period as a
/// range of days, an area a list of grids (`$3`, none for the whole district).
pub(super) fn overview_facts(tx: &PgTx<'_, '_>, q: &FactsQuery) -> Result<FactRows> {
    let period = "day >= $1 AND day <= $2 AND ($3::text[] IS NULL OR grid_id = ANY($3))";
    let args: [&(dyn ToSql + Sync); 3] = [&q.from_day, &q.to_day, &q.grids];
    // Every grouping is (a name, a name or a number, a count).
    fn rows<T: for<'a> postgres::types::FromSql<'a>>(
        tx: &PgTx<'_, '_>,
        sql: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<(String, T, i64)>> {
        Ok(tx.rows(sql, args)?.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }
    let by_day = rows(
        tx,
        &format!("SELECT day, category_id, count(*) FROM case_facts WHERE {period} GROUP BY day, category_id"),
        &args,
    )?;
    let by_grid = rows(
        tx,
        &format!("SELECT grid_id, count(*), count(closed_hours) FROM case_facts WHERE {period} GROUP BY grid_id"),
        &args,
    )?;
    let satisfaction = rows(
        tx,
        &format!(
            "SELECT grid_id, satisfaction::bigint, count(*) FROM case_facts
             WHERE satisfaction IS NOT NULL AND {period} GROUP BY grid_id, satisfaction"
        ),
        &args,
    )?;
    let closure_hours = rows(
        tx,
        &format!(
            "SELECT category_id, closed_hours, count(*) FROM case_facts
             WHERE closed_hours IS NOT NULL AND {period} GROUP BY category_id, closed_hours"
        ),
        &args,
    )?;
    let overdue = rows(
        tx,
        &format!(
            "SELECT grid_id, coalesce(escalated_to, ''), count(*) FROM case_facts
             WHERE waiting_deadline_ms IS NOT NULL AND waiting_deadline_ms < $4 AND {period}
             GROUP BY grid_id, escalated_to"
        ),
        &[&q.from_day, &q.to_day, &q.grids, &q.now_ms],
    )?;
    let departments = tx
        .rows(
            "SELECT department, count(*), count(done_ms), count(*) FILTER (WHERE done_ms <= deadline_ms),
                    count(*) FILTER (WHERE done_ms IS NULL AND deadline_ms < $3)
             FROM department_facts
             WHERE reported_ms >= $1 AND reported_ms < $2 AND ($4::text[] IS NULL OR grid_id = ANY($4))
             GROUP BY department ORDER BY department",
            &[&q.from_ms, &q.to_ms, &q.now_ms, &q.grids],
        )?
        .iter()
        .map(|r| DepartmentRow {
            department: r.get(0),
            dispatched: r.get(1),
            done: r.get(2),
            done_on_time: r.get(3),
            overdue: r.get(4),
        })
        .collect();
    Ok(FactRows { by_day, by_grid, overdue, satisfaction, closure_hours, departments })
}

/// Replaces a case's overview facts.
pub(super) fn set_case_facts(tx: &PgTx<'_, '_>, doc_id: &str, facts: Option<&CaseFacts>) -> Result<()> {
    tx.exec("DELETE FROM case_facts WHERE doc_id = $1", &[&doc_id])?;
    tx.exec("DELETE FROM department_facts WHERE doc_id = $1", &[&doc_id])?;
    let Some(f) = facts else { return Ok(()) };
    let satisfaction = f.satisfaction.map(i32::from);
    tx.exec(
        "INSERT INTO case_facts (reported_ms, doc_id, day, grid_id, category_id, closed_hours, waiting_deadline_ms,
                                 escalated_to, satisfaction)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &f.reported_ms,
            &doc_id,
            &f.day,
            &f.grid_id,
            &f.category_id,
            &f.closed_hours,
            &f.waiting_deadline_ms,
            &f.escalated_to,
            &satisfaction,
        ],
    )?;
    let departments: Vec<&str> = f.departments.iter().map(|d| d.department.as_str()).collect();
    let deadlines: Vec<i64> = f.departments.iter().map(|d| d.deadline_ms).collect();
    let done: Vec<Option<i64>> = f.departments.iter().map(|d| d.done_ms).collect();
    tx.exec(
        "INSERT INTO department_facts (reported_ms, doc_id, department, grid_id, deadline_ms, done_ms)
         SELECT $1, $2, d, $3, dl, dn FROM unnest($4::text[], $5::bigint[], $6::bigint[]) AS u (d, dl, dn)
         ON CONFLICT DO NOTHING",
        &[&f.reported_ms, &doc_id, &f.grid_id, &departments, &deadlines, &done],
    )?;
    Ok(())
}

/// Cases overdue now, from the facts' partial indexes (`ReadTx::overdue_count`).
pub(super) fn overdue_count(
    tx: &PgTx<'_, '_>,
    grids: Option<&[String]>,
    department: Option<&str>,
    now_ms: i64,
) -> Result<i64> {
    let row = match department {
        Some(department) => tx.one(
            "SELECT count(DISTINCT doc_id) FROM department_facts
             WHERE department = $1 AND done_ms IS NULL AND deadline_ms < $2",
            &[&department, &now_ms],
        )?,
        None => {
            let grids: Option<Vec<String>> = grids.map(<[String]>::to_vec);
            tx.one(
                "SELECT count(*) FROM case_facts WHERE waiting_deadline_ms IS NOT NULL AND waiting_deadline_ms < $1
                 AND ($2::text[] IS NULL OR grid_id = ANY($2))",
                &[&now_ms, &grids],
            )?
        }
    };
    Ok(row.get(0))
}
