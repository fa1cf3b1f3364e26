//! The storage port (`store::port`) on SQLite: the SQL of each primitive, nothing else. Every
//! statement goes through the connection's statement cache (`exec`, `q1`, `prepare_cached`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use gridwork_model::catalog::{Catalog, Role};

use super::{
    console, exec, json, last_seq, load_catalog, load_device_by_id, meta_get, meta_set, parse_role, q1, records,
    SeqCounter,
};
use crate::error::{Result, ServerError};
use crate::store::console::{CheckInView, MapPin};
use crate::store::port::{
    BlobLinkOwner, BootRow, CaseRow, CaseRowNow, ChainSummary, ChangeBytes, ClockFlag, ConsoleAccount, DeviceRow,
    NewRecord, ParkedChange, PersonRow, QuarantineEntry, Quarantined, QueuePage, QueueQuery, QueueRow, ReadTx,
    ReportedCase, StoredChange, StoredLink, Whereabouts, WriteTx,
};
use crate::store::{Device, QuarantinedItem};

/// A transaction (or a read snapshot) on one of the store's connections.
pub(super) struct SqliteTx<'c> {
    pub(super) conn: &'c Connection,
    /// The writer's sequence counter; `None` on a reader.
    pub(super) seq: Option<&'c Mutex<SeqCounter>>,
}

impl std::fmt::Debug for SqliteTx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteTx").field("writer", &self.seq.is_some()).finish()
    }
}

fn device_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRow> {
    Ok(DeviceRow {
        id: r.get(0)?,
        code: r.get(1)?,
        user: r.get(2)?,
        status: r.get(3)?,
        last_seen_ms: r.get(4)?,
        last_state: r.get(5)?,
        retired_ms: r.get(6)?,
        drained_ms: r.get(7)?,
        signs: r.get(8)?,
        wipe_ordered_ms: r.get(9)?,
        wipe_confirmed_ms: r.get(10)?,
        wiped_ms: r.get(11)?,
    })
}

/// `?2,?3,…` for `n` values after `first - 1` others.
fn placeholders(first: usize, n: usize) -> String {
    (0..n).map(|i| format!("?{}", i + first)).collect::<Vec<_>>().join(",")
}

fn strings(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Vec<String>> {
    Ok(conn.prepare_cached(sql)?.query_map(params, |r| r.get(0))?.collect::<rusqlite::Result<_>>()?)
}

fn change_rows(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Vec<ChangeBytes>> {
    Ok(conn
        .prepare_cached(sql)?
        .query_map(params, |r| Ok(ChangeBytes { bytes: r.get(0)?, hash: r.get(1)?, device_id: r.get(2)? }))?
        .collect::<rusqlite::Result<_>>()?)
}

const LINK_COLUMNS: &str = "device_id, seq, link_hash, prev, sig, kind, item_key, sha256, flag, at_ms";

fn stored_link(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredLink> {
    Ok(StoredLink {
        device_id: r.get(0)?,
        seq: r.get(1)?,
        link_hash: r.get(2)?,
        prev: r.get(3)?,
        sig: r.get(4)?,
        kind: r.get(5)?,
        item_key: r.get(6)?,
        sha256: r.get(7)?,
        flag: r.get(8)?,
        at_ms: r.get(9)?,
    })
}

impl ReadTx for SqliteTx<'_> {
    fn last_seq(&self) -> Result<i64> {
        last_seq(self.conn)
    }

    fn meta(&self, key: &str) -> Result<Option<String>> {
        meta_get(self.conn, key)
    }

    fn user_scopes(&self, user: &str) -> Result<BTreeMap<String, i64>> {
        Ok(self
            .conn
            .prepare_cached("SELECT scope, min(granted_seq) FROM user_areas WHERE user_id = ?1 GROUP BY scope")?
            .query_map([user], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn memberships(&self, doc_id: &str) -> Result<Vec<(String, i64)>> {
        Ok(self
            .conn
            .prepare_cached("SELECT scope, joined_seq FROM membership WHERE doc_id = ?1")?
            .query_map([doc_id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn case_creator(&self, doc_id: &str) -> Result<Option<String>> {
        Ok(q1(self.conn, "SELECT device_id FROM changes WHERE doc_id = ?1 ORDER BY seq LIMIT 1", [doc_id], |r| {
            r.get(0)
        })
        .optional()?)
    }

    fn device(&self, id: &str) -> Result<Option<Device>> {
        match load_device_by_id(self.conn, id) {
            Ok(d) => Ok(Some(d)),
            Err(ServerError::Unauthenticated) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn change_doc_seq(&self, hash: &str) -> Result<Option<(String, i64)>> {
        Ok(q1(self.conn, "SELECT doc_id, seq FROM changes WHERE hash = ?1", [hash], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    fn joined_since(
        &self,
        cursor: i64,
        scopes: &[&str],
        device: &str,
        limit: usize,
        at: Option<i64>,
    ) -> Result<Vec<(String, i64)>> {
        let n = scopes.len();
        let (device_arg, last_arg) = (n + 2, n + 3);
        let extra = match at {
            None => format!("ORDER BY m.joined_seq LIMIT ?{last_arg}"),
            Some(_) => format!("AND m.joined_seq = ?{last_arg}"),
        };
        let sql = format!(
            "SELECT m.doc_id, m.joined_seq FROM membership m WHERE m.joined_seq > ?1 AND m.scope IN ({})
             AND EXISTS (SELECT 1 FROM changes c WHERE c.doc_id = m.doc_id AND c.device_id != ?{device_arg}) {extra}",
            placeholders(2, n)
        );
        let last: i64 = at.unwrap_or(limit as i64);
        let mut args: Vec<&dyn rusqlite::ToSql> = vec![&cursor];
        args.extend(scopes.iter().map(|s| s as &dyn rusqlite::ToSql));
        args.push(&device);
        args.push(&last);
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_map(rusqlite::params_from_iter(args), |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn docs_in_scope_by(&self, scope: &str, seq: i64) -> Result<Vec<String>> {
        strings(self.conn, "SELECT doc_id FROM membership WHERE scope = ?1 AND joined_seq <= ?2", params![scope, seq])
    }

    fn docs_in_scope(&self, scope: &str) -> Result<Vec<String>> {
        strings(self.conn, "SELECT doc_id FROM membership WHERE scope = ?1", [scope])
    }

    fn scope_changes_since(&self, cursor: i64, scopes: &[&str], limit: usize) -> Result<Vec<(i64, String)>> {
        let n = scopes.len();
        let sql = format!(
            "SELECT DISTINCT seq, doc_id FROM scope_changes WHERE seq > ?1 AND scope IN ({}) ORDER BY seq LIMIT ?{}",
            placeholders(2, n),
            n + 2
        );
        let limit = limit as i64;
        let mut args: Vec<&dyn rusqlite::ToSql> = vec![&cursor];
        args.extend(scopes.iter().map(|s| s as &dyn rusqlite::ToSql));
        args.push(&limit);
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_map(rusqlite::params_from_iter(args), |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn scopes_lost_since(&self, user: &str, cursor: i64) -> Result<BTreeSet<String>> {
        Ok(strings(
            self.conn,
            "SELECT scope FROM user_scopes_removed WHERE user_id = ?1 AND removed_seq > ?2
             UNION SELECT 'grid:' || p.grid_id FROM user_scopes_removed r JOIN grid_placements p ON p.scope = r.scope
                 WHERE r.user_id = ?1 AND r.removed_seq > ?2
             UNION SELECT 'grid:' || p.grid_id FROM user_scopes s JOIN grid_placements p ON p.scope = s.scope
                 WHERE s.user_id = ?1 AND p.to_seq > ?2",
            params![user, cursor],
        )?
        .into_iter()
        .collect())
    }

    fn scopes_lost(&self, user: &str) -> Result<Vec<(String, i64)>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT scope, removed_seq FROM user_scopes_removed WHERE user_id = ?1
                 UNION ALL SELECT 'grid:' || p.grid_id, r.removed_seq FROM user_scopes_removed r
                     JOIN grid_placements p ON p.scope = r.scope AND p.from_seq <= r.removed_seq
                         AND (p.to_seq IS NULL OR p.to_seq >= r.removed_seq)
                     WHERE r.user_id = ?1
                 UNION ALL SELECT 'grid:' || p.grid_id, p.to_seq FROM user_scopes s
                     JOIN grid_placements p ON p.scope = s.scope WHERE s.user_id = ?1 AND p.to_seq IS NOT NULL",
            )?
            .query_map([user], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn others_changes_upto(&self, doc_id: &str, seq: i64, device: &str) -> Result<i64> {
        Ok(q1(
            self.conn,
            "SELECT count(*) FROM changes WHERE doc_id = ?1 AND seq <= ?2 AND device_id != ?3",
            params![doc_id, seq, device],
            |r| r.get(0),
        )?)
    }

    fn history_upto(&self, doc_id: &str, seq: i64) -> Result<Vec<ChangeBytes>> {
        change_rows(
            self.conn,
            "SELECT bytes, hash, device_id FROM changes WHERE doc_id = ?1 AND seq <= ?2 ORDER BY seq",
            params![doc_id, seq],
        )
    }

    fn change_at(&self, seq: i64, not_by: &str) -> Result<Vec<ChangeBytes>> {
        change_rows(
            self.conn,
            "SELECT bytes, hash, device_id FROM changes WHERE seq = ?1 AND device_id != ?2",
            params![seq, not_by],
        )
    }

    fn case_row(&self, doc_id: &str) -> Result<Option<CaseRowNow>> {
        Ok(q1(self.conn, "SELECT category_id, flags, reported_ms FROM docs WHERE doc_id = ?1", [doc_id], |r| {
            Ok(CaseRowNow { category_id: r.get(0)?, flags: r.get(1)?, reported_ms: r.get(2)? })
        })
        .optional()?)
    }

    fn device_by_token_hash(&self, token_hash: &str) -> Result<Option<(String, Device)>> {
        let row = q1(
            self.conn,
            "SELECT CASE WHEN d.wiped_ms IS NOT NULL THEN 'wiped' ELSE d.status END, d.id, d.user_id, u.role, u.department, d.retired_ms IS NOT NULL, d.public_key, d.wipe_ordered_ms IS NOT NULL
             FROM devices d JOIN users u ON u.id = d.user_id WHERE d.token_hash = ?1",
            [token_hash],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Device {
                        id: r.get(1)?,
                        user: r.get(2)?,
                        role: Role::Worker,
                        department: r.get(4)?,
                        retired: r.get(5)?,
                        district: None,
                        public_key: r.get(6)?,
                        wipe: r.get(7)?,
                    },
                    r.get::<_, String>(3)?,
                ))
            },
        )
        .optional()?;
        match row {
            Some((status, device, role)) => Ok(Some((status, Device { role: parse_role(&role)?, ..device }))),
            None => Ok(None),
        }
    }

    fn devices(&self) -> Result<Vec<DeviceRow>> {
        Ok(self
            .conn
            .prepare(
                "SELECT id, code, user_id, CASE WHEN wiped_ms IS NOT NULL THEN 'wiped' ELSE status END, last_seen_ms, last_state, retired_ms, drained_ms, public_key IS NOT NULL, wipe_ordered_ms, wipe_confirmed_ms, wiped_ms
                 FROM devices
                 WHERE id NOT LIKE 'console-%' ORDER BY id",
            )?
            .query_map([], device_row)?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn device_row(&self, id: &str) -> Result<Option<DeviceRow>> {
        Ok(q1(
            self.conn,
            "SELECT id, code, user_id, CASE WHEN wiped_ms IS NOT NULL THEN 'wiped' ELSE status END, last_seen_ms, last_state, retired_ms, drained_ms, public_key IS NOT NULL, wipe_ordered_ms, wipe_confirmed_ms, wiped_ms
                 FROM devices WHERE id = ?1",
            [id],
            device_row,
        )
        .optional()?)
    }

    fn user_exists(&self, user: &str) -> Result<bool> {
        Ok(q1(self.conn, "SELECT EXISTS (SELECT 1 FROM users WHERE id = ?1)", [user], |r| r.get(0))?)
    }

    fn granted_scopes(&self, user: &str) -> Result<BTreeSet<String>> {
        Ok(strings(self.conn, "SELECT scope FROM user_scopes WHERE user_id = ?1", [user])?.into_iter().collect())
    }

    fn placements(&self) -> Result<BTreeSet<(String, String)>> {
        Ok(self
            .conn
            .prepare_cached("SELECT scope, grid_id FROM grid_placements WHERE to_seq IS NULL")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn catalog(&self) -> Result<Catalog> {
        load_catalog(self.conn)
    }

    fn blob_owners(&self, sha256: &str) -> Result<Vec<BlobLinkOwner>> {
        Ok(self
            .conn
            .prepare_cached("SELECT owner_kind, owner_id FROM blob_links WHERE sha256 = ?1")?
            .query_map([sha256], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .map(|row| {
                row.map(|(kind, id)| if kind == "case" { BlobLinkOwner::Case(id) } else { BlobLinkOwner::CheckIn(id) })
            })
            .collect::<rusqlite::Result<_>>()?)
    }

    fn record_user(&self, record_id: &str) -> Result<Option<String>> {
        Ok(q1(
            self.conn,
            "SELECT d.user_id FROM records r JOIN devices d ON d.id = r.device_id WHERE r.id = ?1",
            [record_id],
            |r| r.get(0),
        )
        .optional()?)
    }

    fn blob_count(&self) -> Result<i64> {
        Ok(q1(self.conn, "SELECT count(*) FROM blobs", [], |r| r.get(0))?)
    }

    fn quarantine_list(&self) -> Result<Vec<QuarantinedItem>> {
        Ok(self
            .conn
            .prepare("SELECT hash, doc_id, device_id, reason, status FROM quarantine ORDER BY received_ms, hash")?
            .query_map([], |r| {
                Ok(QuarantinedItem {
                    key: r.get(0)?,
                    doc_id: r.get(1)?,
                    device_id: r.get(2)?,
                    reason: r.get(3)?,
                    status: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn pending_quarantine(&self) -> Result<i64> {
        Ok(q1(self.conn, "SELECT count(*) FROM quarantine WHERE status = 'pending'", [], |r| r.get(0))?)
    }

    fn counts(&self) -> Result<(i64, i64, i64)> {
        let count = |table: &str| -> Result<i64> {
            Ok(self.conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
        };
        Ok((count("changes")?, count("docs")?, count("records")?))
    }

    fn case_events(&self, doc_id: &str) -> Result<Vec<String>> {
        strings(self.conn, "SELECT json FROM doc_events WHERE doc_id = ?1", [doc_id])
    }

    fn overdue_count(&self, grids: Option<&[String]>, department: Option<&str>, now_ms: i64) -> Result<i64> {
        console::overdue_count(self.conn, grids, department, now_ms)
    }

    fn overview_facts(&self, q: &crate::rules::overview::FactsQuery) -> Result<crate::rules::overview::FactRows> {
        console::overview_facts(self.conn, q)
    }

    fn escalation_due_by(&self, now_ms: i64, limit: usize) -> Result<Vec<String>> {
        Ok(self
            .conn
            .prepare_cached("SELECT doc_id FROM escalation_due WHERE due_ms <= ?1 ORDER BY due_ms LIMIT ?2")?
            .query_map(params![now_ms, limit as i64], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn changes_after(&self, seq: i64, limit: usize) -> Result<Vec<(i64, String)>> {
        Ok(self
            .conn
            .prepare_cached("SELECT seq, doc_id FROM changes WHERE seq > ?1 ORDER BY seq LIMIT ?2")?
            .query_map(params![seq, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn person(&self, user: &str) -> Result<Option<(String, Option<String>)>> {
        Ok(q1(self.conn, "SELECT role, department FROM users WHERE id = ?1", [user], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    fn people(&self) -> Result<Vec<PersonRow>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT u.id, u.role, u.department, EXISTS (SELECT 1 FROM console_accounts a WHERE a.user_id = u.id)
                 FROM users u ORDER BY u.role, u.id",
            )?
            .query_map([], |r| {
                Ok(PersonRow { id: r.get(0)?, role: r.get(1)?, department: r.get(2)?, has_password: r.get(3)? })
            })?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn console_account(&self, user: &str) -> Result<Option<ConsoleAccount>> {
        Ok(q1(
            self.conn,
            "SELECT a.password_hash, a.failed_attempts, a.locked_until_ms FROM console_accounts a
             JOIN users u ON u.id = a.user_id WHERE a.user_id = ?1 AND u.role != 'worker'",
            [user],
            |r| Ok(ConsoleAccount { password_hash: r.get(0)?, failed_attempts: r.get(1)?, locked_until_ms: r.get(2)? }),
        )
        .optional()?)
    }

    fn console_session(&self, token_hash: &str, now_ms: i64) -> Result<Option<(String, String)>> {
        Ok(q1(
            self.conn,
            "SELECT user_id, csrf FROM console_sessions WHERE token_hash = ?1 AND expires_ms > ?2",
            params![token_hash, now_ms],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
    }

    fn grids_placed_in(&self, area: &str) -> Result<Vec<String>> {
        strings(self.conn, "SELECT 'grid:' || grid_id FROM grid_placements WHERE scope = ?1 AND to_seq IS NULL", [area])
    }

    fn case_reported(&self, doc_id: &str) -> Result<bool> {
        Ok(self.conn.prepare_cached("SELECT 1 FROM docs WHERE doc_id = ?1 AND title IS NOT NULL")?.exists([doc_id])?)
    }

    fn case_flags_and_received(&self, doc_id: &str) -> Result<(String, Option<i64>)> {
        let flags: String = q1(self.conn, "SELECT flags FROM docs WHERE doc_id = ?1", [doc_id], |r| r.get(0))
            .optional()?
            .unwrap_or_default();
        let received: Option<i64> =
            q1(self.conn, "SELECT min(received_ms) FROM changes WHERE doc_id = ?1", [doc_id], |r| r.get(0))?;
        Ok((flags, received))
    }

    fn blob_held(&self, sha256: &str) -> Result<bool> {
        Ok(self.conn.prepare_cached("SELECT 1 FROM blobs WHERE sha256 = ?1")?.exists([sha256])?)
    }

    fn queue_counts(&self, q: &QueueQuery) -> Result<Vec<(String, i64)>> {
        console::queue_counts(self.conn, q)
    }

    fn queue_rows(&self, q: &QueueQuery, page: &QueuePage) -> Result<Vec<QueueRow>> {
        console::queue_rows(self.conn, q, page)
    }

    fn map_pins(&self, q: &QueueQuery, limit: u32) -> Result<Vec<MapPin>> {
        console::map_pins(self.conn, q, limit)
    }

    fn check_ins_on(&self, grid: &str, day: &str) -> Result<Vec<CheckInView>> {
        console::check_ins_on(self.conn, grid, day)
    }

    fn workers(&self) -> Result<Vec<(String, Vec<String>)>> {
        let rows: Vec<(String, String)> = self
            .conn
            .prepare_cached(
                "SELECT u.id, coalesce(group_concat(s.scope), '') FROM users u
                 LEFT JOIN user_scopes s ON s.user_id = u.id WHERE u.role = 'worker' GROUP BY u.id ORDER BY u.id",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows
            .into_iter()
            .map(|(u, scopes)| (u, scopes.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect()))
            .collect())
    }

    fn reported_by(&self, reporter: &str, from_ms: i64, to_ms: i64) -> Result<Vec<ReportedCase>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT doc_id, status, deadline_ms FROM docs WHERE reporter = ?1 AND reported_ms >= ?2 AND reported_ms < ?3",
            )?
            .query_map(params![reporter, from_ms, to_ms], |r| {
                Ok(ReportedCase { doc_id: r.get(0)?, status: r.get(1)?, deadline_ms: r.get(2)? })
            })?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn check_in_count(&self, user: &str, from_ms: i64, to_ms: i64) -> Result<i64> {
        Ok(q1(
            self.conn,
            "SELECT count(*) FROM check_ins WHERE user_id = ?1 AND at_ms >= ?2 AND at_ms < ?3",
            params![user, from_ms, to_ms],
            |r| r.get(0),
        )?)
    }

    fn chain_links_between(&self, device: &str, lo: i64, hi: i64) -> Result<Vec<(i64, String, String)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, link_hash, prev FROM chain_links WHERE device_id = ?1 AND seq BETWEEN ?2 AND ?3",
        )?;
        let rows = stmt.query_map(params![device, lo, hi], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn links_of(&self, key: &str) -> Result<Vec<StoredLink>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {LINK_COLUMNS} FROM chain_links WHERE item_key = ?1 ORDER BY device_id, seq"
        ))?;
        let rows = stmt.query_map([key], stored_link)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn chain_segment(&self, device: &str, lo: i64, hi: i64) -> Result<Vec<StoredLink>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {LINK_COLUMNS} FROM chain_links WHERE device_id = ?1 AND seq BETWEEN ?2 AND ?3 ORDER BY seq, link_hash"
        ))?;
        let rows = stmt.query_map(params![device, lo, hi], stored_link)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn clock_flags_of_case(&self, doc_id: &str) -> Result<Vec<(String, i64)>> {
        let mut stmt = self.conn.prepare_cached("SELECT item, off_ms FROM clock_flags WHERE doc_id = ?1")?;
        let rows = stmt.query_map([doc_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn device_boots(&self, device: &str) -> Result<Vec<BootRow>> {
        let mut stmt =
            self.conn.prepare_cached("SELECT boot_id, start_ms, implied_ms FROM device_boots WHERE device_id = ?1")?;
        let rows = stmt
            .query_map([device], |r| Ok(BootRow { boot_id: r.get(0)?, start_ms: r.get(1)?, implied_ms: r.get(2)? }))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn clock_flag_count(&self, user: &str, from_ms: i64, to_ms: i64) -> Result<i64> {
        Ok(q1(
            self.conn,
            "SELECT count(*) FROM clock_flags WHERE user_id = ?1 AND at_ms >= ?2 AND at_ms < ?3",
            params![user, from_ms, to_ms],
            |r| r.get(0),
        )?)
    }

    fn chain_summaries(&self) -> Result<Vec<ChainSummary>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT device_id, count(*), count(DISTINCT seq), max(seq), count(flag) FROM chain_links
                 GROUP BY device_id ORDER BY device_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(ChainSummary {
                device_id: r.get(0)?,
                links: r.get(1)?,
                places: r.get(2)?,
                highest: r.get(3)?,
                forks: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn chain_held_through(&self, device: &str, head: i64) -> Result<bool> {
        let held: i64 = q1(
            self.conn,
            "SELECT count(DISTINCT seq) FROM chain_links WHERE device_id = ?1 AND seq BETWEEN 1 AND ?2",
            params![device, head],
            |r| r.get(0),
        )?;
        Ok(held == head.max(0))
    }
}

impl WriteTx for SqliteTx<'_> {
    fn flag_clocks(&self, flags: &[ClockFlag]) -> Result<()> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO clock_flags (item, doc_id, device_id, user_id, off_ms, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (item) DO NOTHING",
        )?;
        for f in flags {
            stmt.execute(params![f.item, f.doc_id, f.device_id, f.user_id, f.off_ms, f.at_ms])?;
        }
        Ok(())
    }

    fn note_boots(&self, device: &str, boots: &[BootRow]) -> Result<()> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO device_boots (device_id, boot_id, start_ms, implied_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (device_id, boot_id) DO UPDATE SET
                 start_ms = CASE WHEN device_boots.start_ms IS NULL OR excluded.start_ms < device_boots.start_ms
                                 THEN coalesce(excluded.start_ms, device_boots.start_ms) ELSE device_boots.start_ms END,
                 implied_ms = coalesce(device_boots.implied_ms, excluded.implied_ms)",
        )?;
        for b in boots {
            stmt.execute(params![device, b.boot_id, b.start_ms, b.implied_ms])?;
        }
        Ok(())
    }

    fn put_links(&self, links: &[StoredLink]) -> Result<()> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO chain_links (device_id, seq, link_hash, prev, sig, kind, item_key, sha256, flag, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT DO NOTHING",
        )?;
        for l in links {
            stmt.execute(params![
                l.device_id,
                l.seq,
                l.link_hash,
                l.prev,
                l.sig,
                l.kind,
                l.item_key,
                l.sha256,
                l.flag,
                l.at_ms
            ])?;
        }
        Ok(())
    }

    fn next_seq(&self) -> Result<i64> {
        let counter = self.seq.ok_or_else(|| ServerError::Internal("a sequence number taken on a reader".into()))?;
        let mut seq = counter.lock().unwrap_or_else(|p| p.into_inner());
        let last = match seq.taken {
            Some(n) => n,
            None => last_seq(self.conn)?,
        };
        seq.taken = Some(last + 1);
        Ok(last + 1)
    }

    fn whereabouts(&self, hash: &str) -> Result<Whereabouts> {
        // One statement for the three places a change can be.
        Ok(q1(
            self.conn,
            "SELECT (SELECT device_id FROM changes WHERE hash = ?1), (SELECT doc_id FROM changes WHERE hash = ?1),
                    EXISTS (SELECT 1 FROM parked WHERE hash = ?1),
                    (SELECT status FROM quarantine WHERE hash = ?1), (SELECT device_id FROM quarantine WHERE hash = ?1)",
            [hash],
            |r| {
                let owner: Option<String> = r.get(0)?;
                let doc: Option<String> = r.get(1)?;
                let status: Option<String> = r.get(3)?;
                let by: Option<String> = r.get(4)?;
                Ok(Whereabouts { applied: owner.zip(doc), parked: r.get(2)?, quarantined: status.zip(by) })
            },
        )?)
    }

    fn actor_owner(&self, actor: &str) -> Result<Option<String>> {
        Ok(q1(self.conn, "SELECT device_id FROM actors WHERE actor = ?1", [actor], |r| r.get(0)).optional()?)
    }

    fn register_actor(&self, actor: &str, device_id: &str, now_ms: i64) -> Result<()> {
        exec(
            self.conn,
            "INSERT INTO actors (actor, device_id, first_seen_ms) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            params![actor, device_id, now_ms],
        )?;
        Ok(())
    }

    fn register_console_device(&self, id: &str, code: &str, user: &str, actor: &str, now_ms: i64) -> Result<()> {
        exec(
            self.conn,
            "INSERT INTO devices (id, code, user_id, status, created_ms) VALUES (?1, ?2, ?3, 'active', ?4)
             ON CONFLICT (id) DO NOTHING",
            params![id, code, user, now_ms],
        )?;
        exec(
            self.conn,
            "INSERT INTO actors (actor, device_id, first_seen_ms) VALUES (?1, ?2, ?3) ON CONFLICT (actor) DO NOTHING",
            params![actor, id, now_ms],
        )?;
        Ok(())
    }

    fn console_sign_in_failed(&self, user: &str, failed_attempts: i64, locked_until_ms: i64) -> Result<()> {
        exec(
            self.conn,
            "UPDATE console_accounts SET failed_attempts = ?2, locked_until_ms = ?3 WHERE user_id = ?1",
            params![user, failed_attempts, locked_until_ms],
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
        exec(
            self.conn,
            "UPDATE console_accounts SET failed_attempts = 0, locked_until_ms = 0 WHERE user_id = ?1",
            [user],
        )?;
        exec(self.conn, "DELETE FROM console_sessions WHERE expires_ms < ?1", [now_ms])?;
        exec(
            self.conn,
            "INSERT INTO console_sessions (token_hash, user_id, csrf, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![token_hash, user, csrf, now_ms, expires_ms],
        )?;
        Ok(())
    }

    fn close_console_session(&self, token_hash: &str) -> Result<()> {
        exec(self.conn, "DELETE FROM console_sessions WHERE token_hash = ?1", [token_hash])?;
        Ok(())
    }

    fn set_console_password(&self, user: &str, password_hash: &str, now_ms: i64) -> Result<()> {
        exec(
            self.conn,
            "INSERT INTO console_accounts (user_id, password_hash, failed_attempts, locked_until_ms, updated_ms)
             VALUES (?1, ?2, 0, 0, ?3)
             ON CONFLICT (user_id) DO UPDATE SET password_hash = excluded.password_hash, failed_attempts = 0,
                locked_until_ms = 0, updated_ms = excluded.updated_ms",
            params![user, password_hash, now_ms],
        )?;
        Ok(())
    }

    fn park(&self, c: &ParkedChange) -> Result<()> {
        exec(
            self.conn,
            "INSERT INTO parked (hash, doc_id, device_id, received_ms, deps, bytes, vouched) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![c.hash, c.doc_id, c.device_id, c.received_ms, c.deps.join(","), c.bytes, c.vouched],
        )?;
        Ok(())
    }

    fn any_parked(&self) -> Result<bool> {
        Ok(q1(self.conn, "SELECT EXISTS (SELECT 1 FROM parked)", [], |r| r.get(0))?)
    }

    fn parked_in(&self, doc_id: &str) -> Result<Vec<ParkedChange>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT hash, device_id, received_ms, deps, bytes, vouched FROM parked WHERE doc_id = ?1
                 ORDER BY received_ms, hash",
            )?
            .query_map([doc_id], |r| {
                let deps: String = r.get(3)?;
                Ok(ParkedChange {
                    hash: r.get(0)?,
                    doc_id: doc_id.to_owned(),
                    device_id: r.get(1)?,
                    received_ms: r.get(2)?,
                    deps: deps.split(',').filter(|d| !d.is_empty()).map(str::to_owned).collect(),
                    bytes: r.get(4)?,
                    vouched: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn unpark(&self, hash: &str) -> Result<()> {
        exec(self.conn, "DELETE FROM parked WHERE hash = ?1", [hash])?;
        Ok(())
    }

    fn quarantine(&self, e: &QuarantineEntry<'_>) -> Result<()> {
        exec(
            self.conn,
            "INSERT INTO quarantine (hash, doc_id, device_id, received_ms, reason, bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT DO NOTHING",
            params![e.key, e.doc_id, e.device_id, e.received_ms, e.reason, e.bytes],
        )?;
        Ok(())
    }

    fn quarantined_item(&self, key: &str) -> Result<Option<Quarantined>> {
        Ok(q1(self.conn, "SELECT doc_id, device_id, status, bytes FROM quarantine WHERE hash = ?1", [key], |r| {
            Ok(Quarantined { doc_id: r.get(0)?, device_id: r.get(1)?, status: r.get(2)?, bytes: r.get(3)? })
        })
        .optional()?)
    }

    fn set_quarantine_status(&self, key: &str, status: &str) -> Result<()> {
        exec(self.conn, "UPDATE quarantine SET status = ?2 WHERE hash = ?1", params![key, status])?;
        Ok(())
    }

    fn doc_actor(&self, doc_id: &str, actor: &str) -> Result<Option<i64>> {
        Ok(q1(self.conn, "SELECT last_seq FROM doc_actors WHERE doc_id = ?1 AND actor = ?2", [doc_id, actor], |r| {
            r.get(0)
        })
        .optional()?)
    }

    fn note_doc_actor(&self, doc_id: &str, actor: &str, seq: i64) -> Result<()> {
        exec(
            self.conn,
            "INSERT INTO doc_actors (doc_id, actor, last_seq) VALUES (?1, ?2, ?3)
             ON CONFLICT (doc_id, actor) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
            params![doc_id, actor, seq],
        )?;
        Ok(())
    }

    fn store_change(&self, c: &StoredChange<'_>) -> Result<()> {
        exec(
            self.conn,
            "INSERT INTO changes (seq, hash, doc_id, device_id, received_ms, bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![c.seq, c.hash, c.doc_id, c.device_id, c.received_ms, c.bytes],
        )?;
        Ok(())
    }

    fn store_event(&self, doc_id: &str, event_id: &str, json: &str) -> Result<()> {
        exec(
            self.conn,
            "INSERT INTO doc_events (doc_id, event_id, json) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            params![doc_id, event_id, json],
        )?;
        Ok(())
    }

    fn events_obj(&self, doc_id: &str) -> Result<Option<String>> {
        Ok(q1(self.conn, "SELECT events_obj FROM docs WHERE doc_id = ?1", [doc_id], |r| r.get::<_, Option<String>>(0))
            .optional()?
            .flatten())
    }

    fn write_case_row(&self, c: &CaseRow<'_>) -> Result<()> {
        // One write per case and push: every docs index is touched once.
        exec(
            self.conn,
            "INSERT INTO docs (doc_id, status, deadline_ms, flags, departments, reported_ms, queue_key, grid_id,
                category_id, title, code, reporter, lat, lon, events_obj, updated_seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
             ON CONFLICT(doc_id) DO UPDATE SET status = excluded.status, deadline_ms = excluded.deadline_ms,
                flags = excluded.flags, departments = excluded.departments, reported_ms = excluded.reported_ms,
                queue_key = excluded.queue_key, grid_id = coalesce(excluded.grid_id, grid_id),
                category_id = coalesce(excluded.category_id, category_id), title = coalesce(excluded.title, title),
                code = coalesce(excluded.code, code), reporter = coalesce(excluded.reporter, reporter),
                lat = coalesce(excluded.lat, lat), lon = coalesce(excluded.lon, lon),
                events_obj = coalesce(events_obj, excluded.events_obj), updated_seq = excluded.updated_seq",
            params![
                c.doc_id,
                c.status,
                c.deadline_ms,
                c.flags,
                c.departments,
                c.reported_ms,
                c.queue_key,
                c.grid_id,
                c.category_id,
                c.title,
                c.code,
                c.reporter,
                c.position.map(|p| p.0),
                c.position.map(|p| p.1),
                c.events_obj,
                c.updated_seq,
            ],
        )?;
        Ok(())
    }

    fn join_scopes(&self, doc_id: &str, scopes: &[&str], seq: i64, status: &str) -> Result<()> {
        for scope in scopes {
            exec(
                self.conn,
                "INSERT INTO membership (doc_id, scope, joined_seq, status) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                params![doc_id, scope, seq, status],
            )?;
        }
        Ok(())
    }

    fn set_membership_status(&self, doc_id: &str, status: &str) -> Result<()> {
        exec(
            self.conn,
            "UPDATE membership SET status = ?2 WHERE doc_id = ?1 AND status != ?2",
            params![doc_id, status],
        )?;
        Ok(())
    }

    fn list_change(&self, scope: &str, seq: i64, doc_id: &str) -> Result<()> {
        exec(
            self.conn,
            "INSERT INTO scope_changes (scope, seq, doc_id) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            params![scope, seq, doc_id],
        )?;
        Ok(())
    }

    fn store_records(&self, records: &[NewRecord<'_>]) -> Result<()> {
        for r in records {
            records::insert_record(self.conn, r.id, r.device_id, r.received_ms, r.body, r.check_in.as_ref())?;
        }
        Ok(())
    }

    fn device_seen(&self, device_id: &str, now_ms: i64, state_json: &str) -> Result<()> {
        exec(
            self.conn,
            "UPDATE devices SET last_seen_ms = ?2, last_state = ?3 WHERE id = ?1",
            params![device_id, now_ms, state_json],
        )?;
        Ok(())
    }

    fn device_drained(&self, device_id: &str, now_ms: i64) -> Result<()> {
        exec(
            self.conn,
            "UPDATE devices SET drained_ms = coalesce(drained_ms, ?2) WHERE id = ?1",
            params![device_id, now_ms],
        )?;
        Ok(())
    }

    fn device_seen_at_least(&self, device_id: &str, at_ms: i64, state_json: &str) -> Result<()> {
        exec(
            self.conn,
            "UPDATE devices SET last_seen_ms = max(coalesce(last_seen_ms, 0), ?2), last_state = ?3 WHERE id = ?1",
            params![device_id, at_ms, state_json],
        )?;
        Ok(())
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        meta_set(self.conn, key, value)
    }

    fn set_case_facts(&self, doc_id: &str, facts: Option<&crate::rules::overview::CaseFacts>) -> Result<()> {
        console::set_case_facts(self.conn, doc_id, facts)
    }

    fn set_escalation_due(&self, doc_id: &str, due_ms: Option<i64>) -> Result<()> {
        match due_ms {
            Some(ms) => exec(
                self.conn,
                "INSERT INTO escalation_due (doc_id, due_ms) VALUES (?1, ?2)
                 ON CONFLICT (doc_id) DO UPDATE SET due_ms = excluded.due_ms",
                params![doc_id, ms],
            )?,
            None => exec(self.conn, "DELETE FROM escalation_due WHERE doc_id = ?1", [doc_id])?,
        };
        Ok(())
    }

    fn recheck_waiting_cases(&self) -> Result<()> {
        exec(
            self.conn,
            "INSERT INTO escalation_due (doc_id, due_ms)
             SELECT doc_id, 0 FROM docs WHERE status IN ('dispatched', 'in_progress')
             ON CONFLICT (doc_id) DO UPDATE SET due_ms = 0",
            [],
        )?;
        Ok(())
    }

    fn set_case_terms(&self, doc_id: &str, terms: &BTreeSet<String>) -> Result<()> {
        let before: Option<String> =
            q1(self.conn, "SELECT terms FROM search_docs WHERE doc_id = ?1", [doc_id], |r| r.get(0)).optional()?;
        let before: BTreeSet<&str> = before.as_deref().unwrap_or("").split(' ').filter(|t| !t.is_empty()).collect();
        let mut delete = self.conn.prepare_cached("DELETE FROM case_terms WHERE term = ?1 AND doc_id = ?2")?;
        for gone in before.iter().filter(|t| !terms.contains(**t)) {
            delete.execute(params![gone, doc_id])?;
        }
        let mut insert = self.conn.prepare_cached("INSERT OR IGNORE INTO case_terms (term, doc_id) VALUES (?1, ?2)")?;
        for new in terms.iter().filter(|t| !before.contains(t.as_str())) {
            insert.execute(params![new, doc_id])?;
        }
        let joined = terms.iter().map(String::as_str).collect::<Vec<_>>().join(" ");
        exec(
            self.conn,
            "INSERT INTO search_docs (doc_id, terms) VALUES (?1, ?2)
             ON CONFLICT (doc_id) DO UPDATE SET terms = excluded.terms",
            params![doc_id, joined],
        )?;
        Ok(())
    }

    fn pending_device(&self, enrol_hash: &str) -> Result<Option<String>> {
        Ok(q1(self.conn, "SELECT id FROM devices WHERE enrol_hash = ?1 AND status = 'pending'", [enrol_hash], |r| {
            r.get(0)
        })
        .optional()?)
    }

    fn activate_device(&self, id: &str, token_hash: &str, public_key: Option<&str>, now_ms: i64) -> Result<()> {
        exec(
            self.conn,
            "UPDATE devices SET enrol_hash = NULL, token_hash = ?2, status = 'active', last_seen_ms = ?3,
                public_key = ?4 WHERE id = ?1",
            params![id, token_hash, now_ms, public_key],
        )?;
        Ok(())
    }

    fn code_taken(&self, code: &str) -> Result<bool> {
        Ok(q1(self.conn, "SELECT EXISTS (SELECT 1 FROM devices WHERE code = ?1)", [code], |r| r.get(0))?)
    }

    fn insert_device(&self, id: &str, code: &str, user: &str, enrol_hash: &str, now_ms: i64) -> Result<()> {
        exec(
            self.conn,
            "INSERT INTO devices (id, code, user_id, enrol_hash, status, created_ms) VALUES (?1, ?2, ?3, ?4, 'pending', ?5)",
            params![id, code, user, enrol_hash, now_ms],
        )?;
        Ok(())
    }

    fn retire_device(&self, id: &str, now_ms: i64) -> Result<bool> {
        Ok(exec(
            self.conn,
            "UPDATE devices SET retired_ms = coalesce(retired_ms, ?2) WHERE id = ?1 AND status = 'active'",
            params![id, now_ms],
        )? > 0)
    }

    fn revoke_device(&self, id: &str) -> Result<bool> {
        Ok(exec(self.conn, "UPDATE devices SET status = 'revoked' WHERE id = ?1", [id])? > 0)
    }

    fn order_wipe(&self, id: &str, now_ms: i64) -> Result<bool> {
        Ok(exec(
            self.conn,
            "UPDATE devices SET wipe_ordered_ms = coalesce(wipe_ordered_ms, ?2), retired_ms = coalesce(retired_ms, ?2)
             WHERE id = ?1 AND status = 'active'",
            params![id, now_ms],
        )? > 0)
    }

    fn wipe_confirmed(&self, id: &str, now_ms: i64) -> Result<()> {
        exec(
            self.conn,
            "UPDATE devices SET wipe_confirmed_ms = coalesce(wipe_confirmed_ms, ?2) WHERE id = ?1",
            params![id, now_ms],
        )?;
        Ok(())
    }

    fn device_wiped(&self, id: &str, now_ms: i64) -> Result<bool> {
        Ok(exec(
            self.conn,
            "UPDATE devices SET status = 'revoked', wiped_ms = coalesce(wiped_ms, ?2)
             WHERE id = ?1 AND wipe_confirmed_ms IS NOT NULL AND (status = 'active' OR wiped_ms IS NOT NULL)",
            params![id, now_ms],
        )? > 0)
    }

    fn reject_quarantined(&self, key: &str) -> Result<bool> {
        Ok(exec(self.conn, "UPDATE quarantine SET status = 'rejected' WHERE hash = ?1 AND status = 'pending'", [key])?
            > 0)
    }

    fn upsert_user(&self, user: &str, role: &str, department: Option<&str>) -> Result<()> {
        exec(
            self.conn,
            "INSERT INTO users (id, role, department) VALUES (?1, ?2, ?3)
             ON CONFLICT(id) DO UPDATE SET role = excluded.role, department = excluded.department",
            params![user, role, department],
        )?;
        Ok(())
    }

    fn grant_scope(&self, user: &str, scope: &str, seq: i64) -> Result<()> {
        exec(
            self.conn,
            "INSERT INTO user_scopes (user_id, scope, granted_seq) VALUES (?1, ?2, ?3)",
            params![user, scope, seq],
        )?;
        Ok(())
    }

    fn remove_scope(&self, user: &str, scope: &str, seq: i64) -> Result<()> {
        exec(self.conn, "DELETE FROM user_scopes WHERE user_id = ?1 AND scope = ?2", params![user, scope])?;
        exec(
            self.conn,
            "INSERT INTO user_scopes_removed (user_id, scope, removed_seq) VALUES (?1, ?2, ?3)",
            params![user, scope, seq],
        )?;
        Ok(())
    }

    fn replace_catalog(&self, catalog: &Catalog) -> Result<()> {
        exec(self.conn, "DELETE FROM grids", [])?;
        exec(self.conn, "DELETE FROM categories", [])?;
        exec(self.conn, "DELETE FROM departments", [])?;
        for g in &catalog.grids {
            exec(
                self.conn,
                "INSERT INTO grids (id, community, street, json) VALUES (?1, ?2, ?3, ?4)",
                params![g.id.0, g.community, g.street, json(g)?],
            )?;
        }
        for c in &catalog.categories {
            exec(self.conn, "INSERT INTO categories (id, json) VALUES (?1, ?2)", params![c.id.0, json(c)?])?;
        }
        for d in &catalog.departments {
            exec(self.conn, "INSERT INTO departments (id, json) VALUES (?1, ?2)", params![d.id.0, json(d)?])?;
        }
        Ok(())
    }

    fn end_placement(&self, scope: &str, grid: &str, seq: i64) -> Result<()> {
        exec(
            self.conn,
            "UPDATE grid_placements SET to_seq = ?3 WHERE scope = ?1 AND grid_id = ?2 AND to_seq IS NULL",
            params![scope, grid, seq],
        )?;
        Ok(())
    }

    fn add_placement(&self, scope: &str, grid: &str, seq: i64) -> Result<()> {
        exec(
            self.conn,
            "INSERT INTO grid_placements (scope, grid_id, from_seq) VALUES (?1, ?2, ?3)",
            params![scope, grid, seq],
        )?;
        Ok(())
    }

    fn link_blob(&self, sha256: &str, size: u64, owner: &BlobLinkOwner, device_id: &str, now_ms: i64) -> Result<()> {
        let (kind, id) = match owner {
            BlobLinkOwner::Case(id) => ("case", id),
            BlobLinkOwner::CheckIn(id) => ("check_in", id),
        };
        exec(
            self.conn,
            "INSERT INTO blobs (sha256, size, first_device, received_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (sha256) DO NOTHING",
            params![sha256, size as i64, device_id, now_ms],
        )?;
        exec(
            self.conn,
            "INSERT INTO blob_links (sha256, owner_kind, owner_id, device_id, linked_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT DO NOTHING",
            params![sha256, kind, id, device_id, now_ms],
        )?;
        Ok(())
    }
}
