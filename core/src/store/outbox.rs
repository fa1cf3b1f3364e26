//! The outbox: local changes and records that no server has acknowledged yet.
//!
//! An entry is written in the same transaction as the action that produced it and removed only
//! when a server acknowledges it, so a crash, a kill or a failed upload can never lose one. Entries
//! are keyed by change hash or record id, so the server can store them idempotently.

use gridwork_model::signing::{link_hash, statement, Link, LinkKind};
use gridwork_model::wire::MAX_ITEMS_PER_REQUEST;
use rusqlite::{params, Connection, OptionalExtension};

use super::Store;
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxKind {
    /// An Automerge change of a case document.
    Change,
    /// An immutable record (JSON): patrol start/finish, check-in.
    Record,
}

impl OutboxKind {
    fn as_str(self) -> &'static str {
        match self {
            OutboxKind::Change => "change",
            OutboxKind::Record => "record",
        }
    }

    fn link_kind(self) -> LinkKind {
        match self {
            OutboxKind::Change => LinkKind::Change,
            OutboxKind::Record => LinkKind::Record,
        }
    }
}

/// One unacknowledged item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    pub seq: i64,
    pub kind: OutboxKind,
    pub doc_id: Option<String>,
    /// Change hash (hex) or record id.
    pub key: String,
    pub bytes: Vec<u8>,
    pub created_ms: i64,
    /// Its place in this device's signed chain; `None` for an unsigned app's items and for
    /// another device's change offered again.
    pub link: Option<Link>,
}

pub(crate) fn push(
    conn: &Connection,
    kind: OutboxKind,
    doc_id: Option<&str>,
    key: &str,
    bytes: &[u8],
    now_ms: i64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO outbox (kind, doc_id, item_key, bytes, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(item_key) DO NOTHING",
    )?
    .execute(params![kind.as_str(), doc_id, key, bytes, now_ms])?;
    Ok(())
}

/// Makes `key` the next link of `device`'s chain, signed with `signer`, unless it is one already.
fn link(
    tx: &Connection,
    signer: &crate::signing::DeviceKey,
    device: &str,
    kind: OutboxKind,
    key: &str,
    bytes: &[u8],
) -> Result<()> {
    let linked: bool =
        tx.prepare_cached("SELECT EXISTS (SELECT 1 FROM chain WHERE item_key = ?1)")?.query_row([key], |r| r.get(0))?;
    if linked {
        return Ok(());
    }
    let (last, prev): (i64, String) = tx
        .prepare_cached("SELECT seq, link_hash FROM chain WHERE device_id = ?1 ORDER BY seq DESC LIMIT 1")?
        .query_row([device], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or((0, String::new()));
    let seq = last + 1;
    let st = statement(device, seq.unsigned_abs(), &prev, kind.link_kind(), key, bytes);
    tx.prepare_cached(
        "INSERT INTO chain (device_id, seq, kind, item_key, link_hash, prev, sig) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![device, seq, kind.as_str(), key, link_hash(&st), prev, signer.sign_b64(&st)])?;
    Ok(())
}

impl Store {
    /// Queues a change or record this device made, inside the caller's transaction; signed as
    /// the next link of the device's chain when the device has a key, so that it is never
    /// queued unsigned.
    pub(crate) fn enqueue_own(
        &self,
        tx: &Connection,
        kind: OutboxKind,
        doc_id: Option<&str>,
        key: &str,
        bytes: &[u8],
    ) -> Result<()> {
        push(tx, kind, doc_id, key, bytes, self.now_ms())?;
        if let Some(signer) = &self.inner.signer {
            link(tx, signer, &self.inner.identity.device.0, kind, key, bytes)?;
        }
        Ok(())
    }

    /// How many items wait for a server.
    pub fn outbox_len(&self) -> Result<usize> {
        let n: i64 = self.reader().query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))?;
        Ok(n as usize)
    }

    /// The oldest items, up to about `max_bytes` (always at least one), in the order they were made.
    pub fn outbox_page(&self, max_bytes: usize) -> Result<Vec<OutboxItem>> {
        self.outbox_page_after(0, max_bytes)
    }

    /// Like [`Store::outbox_page`], starting after `after_seq` (a sync skips what a server refused).
    pub fn outbox_page_after(&self, after_seq: i64, max_bytes: usize) -> Result<Vec<OutboxItem>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT o.seq, o.kind, o.doc_id, o.item_key, o.bytes, o.created_ms, c.seq, c.prev, c.sig
             FROM outbox o LEFT JOIN chain c ON c.item_key = o.item_key
             WHERE o.seq > ?1 ORDER BY o.seq",
        )?;
        let mut rows = stmt.query([after_seq])?;
        let mut out = vec![];
        let mut total = 0;
        while let Some(r) = rows.next()? {
            let bytes: Vec<u8> = r.get(4)?;
            // The server takes at most MAX_ITEMS_PER_REQUEST items in one request; half of it
            // leaves room for the documents the request asks for whole.
            if !out.is_empty() && (total + bytes.len() > max_bytes || out.len() >= MAX_ITEMS_PER_REQUEST / 2) {
                break;
            }
            total += bytes.len();
            let kind: String = r.get(1)?;
            out.push(OutboxItem {
                seq: r.get(0)?,
                kind: if kind == "record" { OutboxKind::Record } else { OutboxKind::Change },
                doc_id: r.get(2)?,
                key: r.get(3)?,
                bytes,
                created_ms: r.get(5)?,
                link: match r.get::<_, Option<i64>>(6)? {
                    Some(seq) => Some(Link { seq: seq.unsigned_abs(), prev: r.get(7)?, sig: r.get(8)? }),
                    None => None,
                },
            });
        }
        Ok(out)
    }

    /// When the oldest unacknowledged item was made (Unix ms), if any.
    pub fn oldest_unsynced_ms(&self) -> Result<Option<i64>> {
        Ok(self.reader().query_row("SELECT min(created_ms) FROM outbox", [], |r| r.get(0))?)
    }

    /// Removes items a server has acknowledged. Returns how many were removed.
    pub fn acknowledge(&self, seqs: &[i64]) -> Result<usize> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        let n = acknowledge_in(&tx, seqs)?;
        tx.commit()?;
        Ok(n)
    }
}

/// [`Store::acknowledge`] inside the caller's transaction (the sync acknowledges in the same
/// transaction as it stores the answer's cursor).
pub(crate) fn acknowledge_in(tx: &rusqlite::Transaction<'_>, seqs: &[i64]) -> Result<usize> {
    let mut del = tx.prepare_cached("DELETE FROM outbox WHERE seq = ?1")?;
    let mut n = 0;
    for s in seqs {
        n += del.execute([s])?;
    }
    Ok(n)
}

/// An item to offer again: (place in this device's chain, kind, document, key, bytes).
type Reoffer = (Option<i64>, OutboxKind, Option<String>, String, Vec<u8>);

/// What a re-offer ([`Store::reoffer_in`]) queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reoffered {
    pub changes: usize,
    pub records: usize,
}

impl Store {
    /// Queues every change this phone made or holds the server's receipt for, and every record
    /// it made, as if none had been acknowledged: for a
    /// server restored from a backup, which lost what it received after the backup. The server
    /// stores by change hash and record id, so what it still has is acknowledged again and not
    /// duplicated. Photos are re-checked too (the server answers for the ones it kept).
    ///
    /// Inside the caller's write transaction: the sync stores the restored server's cursor (or
    /// forgets a cursor the server never issued) in the same transaction, so that no crash can
    /// keep the new cursor (the server would never ask again) and lose the re-offer.
    pub(crate) fn reoffer_in(&self, tx: &rusqlite::Transaction<'_>) -> Result<Reoffered> {
        let ids: Vec<String> = {
            let mut stmt = tx.prepare("SELECT doc_id FROM documents ORDER BY doc_id")?;
            let ids = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
            ids
        };
        // This store's own actors: their changes always go; another author's change goes only
        // with the server's receipt for it (without one the server would take it for this
        // phone's own and quarantine it — its author offers it again instead).
        let own: std::collections::HashSet<String> = {
            let mut stmt = tx.prepare("SELECT actor_id FROM actors")?;
            let own = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<_>>()?;
            own
        };
        let mut has_receipt = tx.prepare("SELECT EXISTS (SELECT 1 FROM receipts WHERE hash = ?1)")?;
        let mut place = tx.prepare("SELECT seq FROM chain WHERE item_key = ?1")?;
        let now = self.now_ms();
        let mut out = Reoffered::default();
        // Queued in chain order, so the server follows the chain link by link; others' changes
        // (no place) after.
        let mut items: Vec<Reoffer> = vec![];
        for doc_id in ids {
            let Some(am) = super::documents::load(tx, &doc_id)? else { continue };
            for mut change in am.get_changes(&[]) {
                let hash = change.hash().to_string();
                if !own.contains(&change.actor_id().to_hex_string())
                    && !has_receipt.query_row([&hash], |r| r.get::<_, bool>(0))?
                {
                    continue;
                }
                let at = place.query_row([&hash], |r| r.get(0)).optional()?;
                items.push((at, OutboxKind::Change, Some(doc_id.clone()), hash, change.bytes().into_owned()));
                out.changes += 1;
            }
        }
        {
            let mut stmt =
                tx.prepare("SELECT r.id, r.json, c.seq FROM records r LEFT JOIN chain c ON c.item_key = r.id")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<i64>>(2)?)))?;
            for row in rows {
                let (id, json, at) = row?;
                items.push((at, OutboxKind::Record, None, id, json.into_bytes()));
                out.records += 1;
            }
        }
        items.sort_by_key(|(at, ..)| (at.is_none(), *at));
        for (_, kind, doc_id, key, bytes) in items {
            push(tx, kind, doc_id.as_deref(), &key, &bytes, now)?;
        }
        tx.execute("UPDATE evidence_files SET server_confirmed = 0 WHERE evicted = 0", [])?;
        Ok(out)
    }
}
