//! Finished cases leaving the phone.
//!
//! A mid-range phone cannot hold every case of its grid for years, and a worker's lists should
//! show the work in hand. A closed or rejected case leaves the phone a configurable number of
//! days after the server confirmed it — every change acknowledged, every photo confirmed — and
//! never before: a case with anything left to send stays, however old.
//!
//! The clock starts when a sync finds the case settled ([`Store::mark_settled`]) and restarts
//! whenever the case changes again (the index row's `settled_ms` is cleared on every reindex).
//! A removed case leaves a row in `removed_cases`; the server keeps the document. Should a change
//! to it arrive later — a supervisor's edit made offline before the close was seen — the phone
//! stores it, finds its dependencies missing and asks the server for the whole document on the
//! same sync (`want_full`), so the case, now contested, is back in the worker's list.

use std::time::Duration;

use rusqlite::{params, TransactionBehavior};

use super::Store;
use crate::error::Result;

/// Statuses after which nothing more is expected of a case.
const FINISHED: &str = "('closed', 'rejected')";

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionReport {
    pub cases: usize,
    /// Photo and thumbnail files deleted with them.
    pub files: usize,
    pub bytes: u64,
}

/// A case with nothing of it still to send: no change in the outbox, every photo confirmed, no
/// change waiting for dependencies. `c` is the `cases` row.
const NOTHING_PENDING: &str = "NOT EXISTS (SELECT 1 FROM outbox o WHERE o.doc_id = c.id)
    AND NOT EXISTS (SELECT 1 FROM evidence_links l JOIN evidence_files f ON f.sha256 = l.sha256
                    WHERE l.owner_kind = 'case' AND l.owner_id = c.id AND f.server_confirmed = 0)
    AND NOT EXISTS (SELECT 1 FROM documents d WHERE d.doc_id = c.id AND d.waiting = 1)";

impl Store {
    /// Starts the retention clock of every finished case with nothing pending. Called at the end
    /// of a sync, when the server has acknowledged what it was sent. Returns how many started.
    pub(crate) fn mark_settled(&self) -> Result<usize> {
        let now = self.now_ms();
        Ok(self.writer().execute(
            &format!(
                "UPDATE cases AS c SET settled_ms = ?1
                 WHERE c.settled_ms IS NULL AND c.status IN {FINISHED} AND {NOTHING_PENDING}"
            ),
            [now],
        )?)
    }

    /// Removes finished cases settled at least `keep` ago, with their documents, index and search
    /// rows and the photo files no other case or check-in uses. The conditions are checked again
    /// in the same transaction, so a case edited since it settled stays.
    pub fn remove_settled_cases(&self, keep: Duration) -> Result<RetentionReport> {
        let now = self.now_ms();
        let cutoff = now.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
        let mut report = RetentionReport::default();
        let mut files = vec![];
        {
            let mut conn = self.writer();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let due: Vec<(i64, String, String, String, i64)> = tx
                .prepare(&format!(
                    "SELECT c.rowid, c.id, c.code, c.status, c.settled_ms FROM cases c
                     WHERE c.settled_ms IS NOT NULL AND c.settled_ms <= ?1 AND c.status IN {FINISHED}
                       AND {NOTHING_PENDING}"
                ))?
                .query_map([cutoff], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
                .collect::<rusqlite::Result<_>>()?;
            for (rowid, id, code, status, settled_ms) in due {
                let shas: Vec<String> = tx
                    .prepare_cached("SELECT sha256 FROM evidence_links WHERE owner_kind = 'case' AND owner_id = ?1")?
                    .query_map([&id], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                tx.prepare_cached("DELETE FROM evidence_links WHERE owner_kind = 'case' AND owner_id = ?1")?
                    .execute([&id])?;
                for sha in shas {
                    // The same photo attached to another case or a check-in stays.
                    let still_used: bool = tx
                        .prepare_cached("SELECT EXISTS (SELECT 1 FROM evidence_links WHERE sha256 = ?1)")?
                        .query_row([&sha], |r| r.get(0))?;
                    if still_used {
                        continue;
                    }
                    let evicted: bool = tx
                        .prepare_cached("SELECT evicted FROM evidence_files WHERE sha256 = ?1")?
                        .query_row([&sha], |r| r.get(0))?;
                    tx.prepare_cached("DELETE FROM evidence_files WHERE sha256 = ?1")?.execute([&sha])?;
                    if !evicted {
                        files.push(sha);
                    }
                }
                tx.prepare_cached("DELETE FROM case_search WHERE rowid = ?1")?.execute([rowid])?;
                tx.prepare_cached("DELETE FROM case_assignees WHERE case_id = ?1")?.execute([&id])?;
                tx.prepare_cached("DELETE FROM cases WHERE id = ?1")?.execute([&id])?;
                tx.prepare_cached("DELETE FROM doc_chunks WHERE doc_id = ?1")?.execute([&id])?;
                tx.prepare_cached("DELETE FROM documents WHERE doc_id = ?1")?.execute([&id])?;
                tx.prepare_cached(
                    "INSERT INTO removed_cases (doc_id, code, status, settled_ms, removed_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (doc_id) DO UPDATE SET status = excluded.status,
                        settled_ms = excluded.settled_ms, removed_ms = excluded.removed_ms",
                )?
                .execute(params![id, code, status, settled_ms, now])?;
                report.cases += 1;
            }
            tx.commit()?;
        }
        // After the commit: a file whose removal fails is unreferenced now, and the next open
        // moves it aside like any other.
        for sha in files {
            if let Ok(bytes) = self.inner.files.remove(&sha) {
                report.files += 1;
                report.bytes += bytes;
            }
        }
        Ok(report)
    }

    /// Documents holding changes whose dependencies this phone lacks: a case removed by
    /// retention that changed since, or a page that arrived before the one it builds on.
    pub(crate) fn waiting_documents(&self) -> Result<Vec<String>> {
        Ok(self
            .reader()
            .prepare_cached("SELECT doc_id FROM documents WHERE waiting = 1 ORDER BY doc_id")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?)
    }

    /// How many cases retention has removed from this phone (they remain on the server).
    pub fn removed_case_count(&self) -> Result<usize> {
        let n: i64 = self.reader().query_row("SELECT count(*) FROM removed_cases", [], |r| r.get(0))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }
}
