//! Case lists: filters over the index's columns, keyset paging, never a document load.

use gridwork_model::ids::{CategoryId, GridId};
use gridwork_model::lifecycle::Status;
use rusqlite::types::Value;

use super::{search, CaseSummary, Store};
use crate::error::{CoreError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    /// Most recently changed first.
    #[default]
    Updated,
    /// Earliest deadline first; cases without one last.
    Deadline,
}

/// A list request. Empty filters match everything.
#[derive(Debug, Clone, Default)]
pub struct CaseQuery {
    pub statuses: Vec<Status>,
    /// Include contested cases (they match no single status).
    pub contested: bool,
    pub grid: Option<GridId>,
    pub category: Option<CategoryId>,
    /// Cases assigned to me, my department, or my own reports awaiting my follow-up visit.
    pub assigned_to_me: bool,
    pub overdue: bool,
    /// Words or Chinese text in the title or description.
    pub text: Option<String>,
    pub sort: SortOrder,
    pub limit: usize,
    /// `next` from the previous page.
    pub after: Option<String>,
    /// Also list cases the server said left this device's scope (kept, never deleted).
    pub include_out_of_scope: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CasePage {
    pub items: Vec<CaseSummary>,
    /// Pass as `after` for the next page; `None` on the last page.
    pub next: Option<String>,
}

const NO_DEADLINE: i64 = i64::MAX;

fn parse_token(token: &str, sort: SortOrder) -> Result<(i64, String)> {
    let (prefix, rest) = token.split_once(':').ok_or(CoreError::InvalidPageToken)?;
    let expected = match sort {
        SortOrder::Updated => "u",
        SortOrder::Deadline => "d",
    };
    if prefix != expected {
        return Err(CoreError::InvalidPageToken);
    }
    let (key, id) = rest.split_once(':').ok_or(CoreError::InvalidPageToken)?;
    Ok((key.parse().map_err(|_| CoreError::InvalidPageToken)?, id.to_owned()))
}

impl Store {
    pub fn list_cases(&self, q: &CaseQuery) -> Result<CasePage> {
        let now = self.now_ms();
        let limit = q.limit.clamp(1, 500);
        // Cases that left this device's scope stay stored but are not listed, unless asked for.
        let mut clauses: Vec<String> =
            if q.include_out_of_scope { vec![] } else { vec!["out_of_scope_ms IS NULL".to_owned()] };
        let mut args: Vec<Value> = vec![];
        let mut arg = |v: Value| {
            args.push(v);
            format!("?{}", args.len())
        };

        if !q.statuses.is_empty() || q.contested {
            let mut names: Vec<String> = q.statuses.iter().map(|s| arg(Value::Text(s.as_str().into()))).collect();
            if q.contested {
                names.push(arg(Value::Text("contested".into())));
            }
            clauses.push(format!("status IN ({})", names.join(", ")));
        }
        if let Some(g) = &q.grid {
            clauses.push(format!("grid_id = {}", arg(Value::Text(g.0.clone()))));
        }
        if let Some(c) = &q.category {
            clauses.push(format!("category_id = {}", arg(Value::Text(c.0.clone()))));
        }
        if q.assigned_to_me {
            let me = &self.identity().user.0;
            let mut keys = vec![arg(Value::Text(format!("user:{me}")))];
            if let Some(d) = &self.identity().department {
                keys.push(arg(Value::Text(format!("department:{d}"))));
            }
            let reporter = arg(Value::Text(me.clone()));
            clauses.push(format!(
                "(id IN (SELECT case_id FROM case_assignees WHERE assignee IN ({keys})) OR (reporter = {reporter} AND status = 'handled'))",
                keys = keys.join(", ")
            ));
        }
        if q.overdue {
            clauses.push(format!("due_ms < {}", arg(Value::Integer(now))));
        }
        if let Some(text) = q.text.as_deref().filter(|t| !t.trim().is_empty()) {
            match search::match_expression(text) {
                Some(expr) => clauses.push(format!(
                    "rowid IN (SELECT rowid FROM case_search WHERE case_search MATCH {})",
                    arg(Value::Text(expr))
                )),
                None => return Ok(CasePage { items: vec![], next: None }),
            }
        }
        let (key_expr, order) = match q.sort {
            SortOrder::Updated => ("updated_ms", "updated_ms DESC, id DESC"),
            SortOrder::Deadline => {
                ("coalesce(deadline_ms, 9223372036854775807)", "coalesce(deadline_ms, 9223372036854775807) ASC, id ASC")
            }
        };
        if let Some(token) = &q.after {
            let (k, id) = parse_token(token, q.sort)?;
            let (k, id) = (arg(Value::Integer(k)), arg(Value::Text(id)));
            clauses.push(match q.sort {
                SortOrder::Updated => format!("({key_expr} < {k} OR ({key_expr} = {k} AND id < {id}))"),
                SortOrder::Deadline => format!("({key_expr} > {k} OR ({key_expr} = {k} AND id > {id}))"),
            });
        }
        let where_sql = if clauses.is_empty() { String::new() } else { format!("WHERE {}", clauses.join(" AND ")) };
        let sql = format!(
            "SELECT id, code, title, status, grid_id, category_id, reporter, created_ms, updated_ms, deadline_ms, due_ms,
                    has_conflicts, flags
             FROM cases {where_sql} ORDER BY {order} LIMIT {}",
            limit + 1
        );
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
            let id: String = r.get(0)?;
            let due: Option<i64> = r.get(10)?;
            let flags: String = r.get(12)?;
            Ok((
                id,
                CaseSummary {
                    id: gridwork_model::ids::CaseId(uuid::Uuid::nil()),
                    code: r.get(1)?,
                    title: r.get(2)?,
                    status: r.get(3)?,
                    grid_id: r.get(4)?,
                    category_id: r.get(5)?,
                    reporter: r.get(6)?,
                    created_ms: r.get(7)?,
                    updated_ms: r.get(8)?,
                    deadline_ms: r.get(9)?,
                    overdue: due.is_some_and(|d| d < now),
                    has_conflicts: r.get(11)?,
                    flags: flags.split(',').filter(|f| !f.is_empty()).map(str::to_owned).collect(),
                },
            ))
        })?;
        let mut items = vec![];
        for row in rows {
            let (id, mut summary) = row?;
            summary.id = gridwork_model::ids::CaseId::parse(&id).map_err(|_| CoreError::CorruptDocument {
                doc_id: id.clone(),
                reason: "index row has an invalid id".into(),
            })?;
            items.push(summary);
        }
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|last| match q.sort {
                SortOrder::Updated => format!("u:{}:{}", last.updated_ms, last.id),
                SortOrder::Deadline => format!("d:{}:{}", last.deadline_ms.unwrap_or(NO_DEADLINE), last.id),
            })
        } else {
            None
        };
        Ok(CasePage { items, next })
    }
}

/// One line of "what needs you": what (`to_triage`, `to_dispatch`, `to_close`, `to_start`,
/// `to_report_back`, `to_follow_up`, `conflicts`, `overdue`) and how many cases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeedsYou {
    pub what: &'static str,
    pub count: u64,
}

impl Store {
    /// What waits for this phone's person among the cases it holds in scope, by what their role
    /// does next (the role table's states) — the app's badge. Read from the index alone, offline
    /// as online; every sync reports it too (`SyncReport::needs_you`), so a badge follows the
    /// server without a push service.
    pub fn needs_you(&self) -> Result<Vec<NeedsYou>> {
        use gridwork_model::catalog::Role;
        let me = &self.identity().user.0;
        let now = self.now_ms();
        let conn = self.reader();
        let (by_status, conflicts, overdue, follow_up) = {
            let mut stmt = conn.prepare_cached(
                "SELECT status, count(*), coalesce(sum(has_conflicts), 0),
                        coalesce(sum(due_ms IS NOT NULL AND due_ms < ?1), 0),
                        coalesce(sum(status = 'handled' AND (reporter = ?2 OR id IN
                            (SELECT case_id FROM case_assignees WHERE assignee = 'user:' || ?2))), 0)
                 FROM cases WHERE out_of_scope_ms IS NULL GROUP BY status",
            )?;
            let rows = stmt.query_map(rusqlite::params![now, me], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })?;
            let mut by_status = std::collections::HashMap::new();
            let (mut conflicts, mut overdue, mut follow_up) = (0, 0, 0);
            for row in rows {
                let (status, n, c, o, f) = row?;
                by_status.insert(status, n);
                conflicts += c;
                overdue += o;
                follow_up += f;
            }
            (by_status, conflicts, overdue, follow_up)
        };
        let of = |s: &str| by_status.get(s).copied().unwrap_or(0);
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        let needs = match self.identity().role {
            Role::Worker => vec![("to_follow_up", follow_up), ("conflicts", conflicts)],
            Role::DepartmentHandler => {
                vec![("to_start", of("dispatched")), ("to_report_back", of("in_progress")), ("overdue", overdue)]
            }
            Role::Supervisor | Role::Administrator => vec![
                ("to_triage", of("reported")),
                ("to_dispatch", of("accepted")),
                ("to_close", of("followed_up")),
                ("conflicts", conflicts),
                ("overdue", overdue),
            ],
        };
        Ok(needs.into_iter().map(|(what, n)| NeedsYou { what, count: count(n) }).collect())
    }
}
