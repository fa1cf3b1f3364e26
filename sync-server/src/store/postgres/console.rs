//! The console's queue as PostgreSQL statements: the filters of a [`QueueQuery`] (decided by
//! `rules::console`) as one WHERE clause, scopes matched with `= ANY($n)`.

use gridwork_model::search::{prefix_end, TermMatch};
use postgres::types::ToSql;

use super::port::PgTx;
use crate::error::Result;
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
