//! Automerge documents in SQLite: saved incrementally, compacted now and then, loaded only when a
//! case is opened or changed.
//!
//! A document's bytes are its chunks concatenated in order. Each action appends the change it
//! made (the same bytes that go into the outbox); after [`COMPACT_AFTER`] chunks the document is
//! rewritten as one compressed save, in the same transaction. Received changes whose
//! dependencies have not arrived are stored as chunks too and stay queued inside Automerge; a
//! document with queued changes is never compacted, so they cannot be lost by compaction.

use automerge::{Automerge, ReadDoc};
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{CoreError, Result};

/// Chunks a document may accumulate before it is compacted.
pub(crate) const COMPACT_AFTER: i64 = 32;

pub(crate) fn load(conn: &Connection, doc_id: &str) -> Result<Option<Automerge>> {
    let mut stmt = conn.prepare_cached("SELECT bytes FROM doc_chunks WHERE doc_id = ?1 ORDER BY seq")?;
    let mut rows = stmt.query([doc_id])?;
    let mut bytes = Vec::new();
    let mut any = false;
    while let Some(r) = rows.next()? {
        any = true;
        let blob: Vec<u8> = r.get(0)?;
        bytes.extend_from_slice(&blob);
    }
    if !any {
        return Ok(None);
    }
    let corrupt = |reason: String| CoreError::CorruptDocument { doc_id: doc_id.to_owned(), reason };
    let doc = gridwork_model::fence::fenced(move || {
        let mut doc = Automerge::new();
        doc.load_incremental(&bytes).map(|_| doc)
    })
    .map_err(|p| corrupt(format!("Automerge could not load it: {p}")))?
    .map_err(|e| corrupt(e.to_string()))?;
    Ok(Some(doc))
}

fn heads_text(doc: &Automerge) -> String {
    doc.get_heads().iter().map(|h| h.to_string()).collect::<Vec<_>>().join(",")
}

/// Appends chunks (changes) to a document's storage; `doc` is the document after applying them.
pub(crate) fn append(conn: &Connection, doc_id: &str, chunks: &[&[u8]], doc: &Automerge) -> Result<()> {
    let count: Option<i64> = conn
        .prepare_cached("SELECT chunk_count FROM documents WHERE doc_id = ?1")?
        .query_row([doc_id], |r| r.get(0))
        .optional()?;
    let first: i64 = match count {
        Some(_) => conn
            .prepare_cached("SELECT coalesce(max(seq), -1) + 1 FROM doc_chunks WHERE doc_id = ?1")?
            .query_row([doc_id], |r| r.get(0))?,
        None => {
            conn.prepare_cached("INSERT INTO documents (doc_id, chunk_count, heads) VALUES (?1, 0, '')")?
                .execute([doc_id])?;
            0
        }
    };
    let mut insert = conn.prepare_cached("INSERT INTO doc_chunks (doc_id, seq, bytes) VALUES (?1, ?2, ?3)")?;
    for (seq, chunk) in (first..).zip(chunks) {
        insert.execute(params![doc_id, seq, chunk])?;
    }
    let total = count.unwrap_or(0) + chunks.len() as i64;
    let queued = !doc.get_missing_deps(&[]).is_empty();
    if total > COMPACT_AFTER && !queued {
        conn.prepare_cached("DELETE FROM doc_chunks WHERE doc_id = ?1")?.execute([doc_id])?;
        insert.execute(params![doc_id, 0, doc.save()])?;
        conn.prepare_cached("UPDATE documents SET chunk_count = 1, heads = ?2, waiting = 0 WHERE doc_id = ?1")?
            .execute(params![doc_id, heads_text(doc)])?;
    } else {
        conn.prepare_cached("UPDATE documents SET chunk_count = ?2, heads = ?3, waiting = ?4 WHERE doc_id = ?1")?
            .execute(params![doc_id, total, heads_text(doc), queued])?;
    }
    Ok(())
}
