//! The embedded SQLite store.
//!
//! One writer: pushes run in `BEGIN IMMEDIATE` transactions under a mutex (group-committed), and
//! sequence numbers are taken from `meta.last_seq` inside it, so they commit in order and a cursor
//! (the last sequence number a device has seen) can never skip a change (docs/PROTOCOL.md).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex, MutexGuard, RwLock};

use gridwork_model::catalog::{Catalog, Category, Department, Grid, Role};
use gridwork_model::doc::keys;
use gridwork_model::geo::Location;
use gridwork_model::wire::ItemResult;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior};

mod console;
mod port;
pub(super) mod records;

use super::port::{Backend, ReadTx, WriteTx};
use super::values::{json, random_hex, stored_role as parse_role};
use super::Device;
use crate::blobs::BlobFiles;
use crate::error::{Result, ServerError};
use crate::rules::push::{PushJob, Rules};
use gridwork_model::places::Places;
use port::SqliteTx;

/// Reader connections kept open between syncs.
const MAX_READERS: usize = 64;

/// The schema this server writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 14;

pub struct SqliteStore {
    /// Evidence blobs beside the database.
    blobs: Arc<BlobFiles>,
    /// The one writer.
    conn: Mutex<Connection>,
    /// Pushes waiting for the writer (see [`SqliteStore::write`]).
    pending: Mutex<Vec<Queued>>,
    readers: Mutex<Vec<Connection>>,
    path: std::path::PathBuf,
    epoch: String,
    /// Shared, not cloned: refreshing a case reads it for every change.
    /// The reference data devices receive, with its lookups.
    places: RwLock<Arc<Places>>,
    /// Console actions, one at a time (see `console.rs`).
    console_writes: Mutex<()>,
    /// Write batches committed since open.
    batches: std::sync::atomic::AtomicU64,
    /// When each device last synced without sending anything, and the state it reported, not
    /// yet written: see `note_seen`.
    seen: Mutex<Sightings>,
    /// See [`SeqCounter`]; only touched by whoever holds the writer connection.
    seq: Mutex<SeqCounter>,
    /// The key of the server's receipts (`crate::receipts`), kept in `meta`.
    receipts: crate::receipts::ReceiptKey,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("epoch", &self.epoch).finish_non_exhaustive()
    }
}

/// `execute` through the statement cache: the ingest path runs the same few statements for every
/// change, and re-parsing them each time was a large part of its cost.
fn exec(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// `query_row` through the statement cache.
fn q1<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached(sql)?.query_row(params, f)
}

fn meta_get(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(q1(conn, "SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
}

fn meta_set(conn: &Connection, key: &str, value: &str) -> Result<()> {
    exec(
        conn,
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

fn last_seq(conn: &Connection) -> Result<i64> {
    Ok(meta_get(conn, "last_seq")?.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Sequence numbers as the writer hands them out within one write transaction: read from `meta`
/// when the transaction first needs one, counted in memory, and written to `meta` once, just
/// before it commits (`SqliteStore::commit`), instead of an upsert of `meta` for every change.
/// Every write transaction starts from `meta` again (`SqliteStore::begin_write`), under the
/// database's write lock: another process writing the same store (an `admin` command while the
/// server runs) is never overtaken by a stale count, and numbers a rolled-back transaction took
/// were never committed, so reusing them is safe.
#[derive(Debug, Default)]
struct SeqCounter {
    /// The last number taken in the open transaction; `None` until it first needs one.
    taken: Option<i64>,
}

/// Turns on SQLite's query planner stability guarantee for a connection: a cached statement keeps
/// the plan it was compiled with. Without it SQLite may compile a statement again whenever a
/// bound value changes (for STAT4 statistics, LIKE patterns), and it did so for the authenticate
/// and device-scope queries on every request: 3.5% of the server's CPU in the storm (ADR 14).
fn plan_once(conn: &Connection) -> Result<()> {
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ServerError::Internal(format!("cannot create {}: {e}", dir.display())))?;
        let conn = Connection::open(dir.join(super::SQLITE_FILE))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
        )?;
        // The writer touches every index of a district's tables: 16 MiB keeps their inner pages
        // cached at district scale. More did not help (a commit walks the cache) and costs memory.
        conn.execute_batch("PRAGMA cache_size = -16384;")?;
        // A checkpoint copies every page the WAL holds into the database. A push dirties the same
        // index pages as the pushes before it, so a longer WAL copies each of them once for many
        // commits instead of once per 1,000 pages: 32 MiB instead of SQLite's 4 MiB (ADR 15).
        conn.execute_batch("PRAGMA wal_autocheckpoint = 8000;")?;
        plan_once(&conn)?;

        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(ServerError::Internal(format!("store schema {version} is newer than this server: update it")));
        }
        // Each step in its own transaction with its version bump: a crash leaves a whole schema.
        let steps: [(i64, &str); 14] = [
            (1, include_str!("schema.sql")),
            (2, include_str!("schema_2_blobs.sql")),
            (3, include_str!("schema_3_retire.sql")),
            (4, include_str!("schema_4_console.sql")),
            (5, include_str!("schema_5_lean.sql")),
            (6, include_str!("schema_6_areas.sql")),
            (7, include_str!("schema_7_records.sql")),
            (8, include_str!("schema_8_doc_actors.sql")),
            (9, include_str!("schema_9_actor_seq.sql")),
            (10, include_str!("schema_10_signing.sql")),
            (11, include_str!("schema_11_wipe_boots.sql")),
            (12, include_str!("schema_12_search.sql")),
            (13, include_str!("schema_13_escalation.sql")),
            (14, include_str!("schema_14_overview.sql")),
        ];
        let mut conn = conn;
        for (to, sql) in steps {
            if version < to {
                let tx = conn.transaction()?;
                tx.execute_batch(sql)?;
                if to == 4 {
                    console::fill_case_columns(&tx)?;
                }
                if to == 9 {
                    fill_doc_actors(&tx)?;
                }
                tx.pragma_update(None, "user_version", to)?;
                tx.commit()?;
            }
        }
        // The receipt key: in the store, so that a restored backup still knows its receipts.
        let receipt_key = match meta_get(&conn, "receipt_key")?.and_then(|k| hex::decode(k).ok()) {
            Some(k) if k.len() == 32 => k,
            _ => {
                let k = random_hex(32)?;
                meta_set(&conn, "receipt_key", &k)?;
                hex::decode(k).map_err(|e| ServerError::Internal(e.to_string()))?
            }
        };
        let mut key = [0u8; 32];
        key.copy_from_slice(&receipt_key);
        let epoch = match meta_get(&conn, "epoch")? {
            Some(e) => e,
            None => {
                let e = random_hex(4)?;
                meta_set(&conn, "epoch", &e)?;
                e
            }
        };
        // Statistics for the query planner (the console's queries pick their index by them);
        // SQLite analyses only tables whose statistics are missing or stale.
        conn.execute_batch("PRAGMA optimize = 0x10002;")?;
        // The sync path runs a few dozen distinct statements; rusqlite's default cache of 16 made
        // them evict each other, and re-parsing SQL was a tenth of the server's CPU in the storm.
        conn.set_prepared_statement_cache_capacity(256);
        let catalog = load_catalog(&conn)?;
        Ok(SqliteStore {
            blobs: Arc::new(BlobFiles::open(dir)?),
            conn: Mutex::new(conn),
            pending: Mutex::new(vec![]),
            readers: Mutex::new(vec![]),
            path: dir.join(super::SQLITE_FILE),
            epoch,
            places: RwLock::new(Arc::new(Places::new(Arc::new(catalog)))),
            console_writes: Mutex::new(()),
            batches: std::sync::atomic::AtomicU64::new(0),
            seen: Mutex::new(HashMap::new()),
            seq: Mutex::new(SeqCounter::default()),
            receipts: crate::receipts::ReceiptKey::new(key),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn places(&self) -> Arc<Places> {
        self.places.read().map(|c| Arc::clone(&c)).unwrap_or_else(|p| Arc::clone(&p.into_inner()))
    }
}

/// SQLite's errors as the server's: a full disk is [`ServerError::StorageFull`] (507, retried by
/// phones), anything else a storage error.
impl From<rusqlite::Error> for ServerError {
    fn from(e: rusqlite::Error) -> Self {
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            ServerError::StorageFull(e.to_string())
        } else {
            ServerError::Storage(e.to_string())
        }
    }
}

impl Backend for SqliteStore {
    fn rules(&self) -> Rules<'_> {
        Rules { receipts: &self.receipts, epoch: &self.epoch, places: self.places() }
    }

    fn blobs(&self) -> &Arc<BlobFiles> {
        &self.blobs
    }

    /// On a pooled reader connection (WAL readers see a committed snapshot and never wait for
    /// the writer), in one read transaction so that every query sees the same snapshot.
    fn read(&self, f: &mut dyn FnMut(&dyn ReadTx) -> Result<()>) -> Result<()> {
        let mut reader = self.reader()?;
        let done = (|| {
            let snapshot = reader.transaction()?;
            f(&SqliteTx { conn: &snapshot, seq: None })?;
            snapshot.finish()?;
            Ok(())
        })();
        self.give_back(reader);
        done
    }

    /// On the one writer connection, `BEGIN IMMEDIATE` (the database's write lock at once).
    fn write(&self, f: &mut dyn FnMut(&dyn WriteTx) -> Result<()>) -> Result<()> {
        let mut conn = self.conn();
        let tx = self.begin_write(&mut conn)?;
        f(&self.port(&tx))?;
        self.commit(tx)
    }

    fn push(&self, job: PushJob) -> Result<Vec<ItemResult>> {
        self.write_push(job)
    }

    fn note_seen(&self, device_id: &str, now_ms: i64, state_json: String) -> Result<()> {
        self.keep_seen(device_id, now_ms, state_json);
        Ok(())
    }

    fn flush_seen(&self) -> Result<()> {
        let mut conn = self.conn();
        self.flush_seen_on(&mut conn)
    }

    fn catalog_changed(&self, catalog: Catalog) {
        *self.places.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Places::new(Arc::new(catalog)));
    }

    fn console_writes(&self) -> &Mutex<()> {
        &self.console_writes
    }

    fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        Some(crate::tls::TlsFiles::in_data_dir(self.path.parent()?))
    }
}

impl Drop for SqliteStore {
    /// Sightings not yet written are written on the way out (best effort: they are only timestamps).
    fn drop(&mut self) {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = self.flush_seen_on(&mut conn) {
            eprintln!("gridwork-sync-server: could not record when devices were last seen: {e}");
        }
    }
}

/// Device id → (when it was last seen, the state it reported as JSON), not yet written.
type Sightings = HashMap<String, (i64, String)>;

/// Writes sightings inside the caller's write transaction.
fn write_seen(tx: &Transaction<'_>, seen: &Sightings) -> Result<()> {
    for (id, (at, state)) in seen {
        exec(
            tx,
            "UPDATE devices SET last_seen_ms = max(coalesce(last_seen_ms, 0), ?2), last_state = ?3 WHERE id = ?1",
            params![id, at, state],
        )?;
        if let Some(boot) = crate::rules::push::boot_of_sighting(*at, state) {
            SqliteTx { conn: tx, seq: None }.note_boots(id, &[boot])?;
        }
    }
    Ok(())
}

fn load_device_by_id(conn: &Connection, id: &str) -> Result<Device> {
    let row = q1(
        conn,
        "SELECT d.id, d.user_id, u.role, u.department, d.retired_ms IS NOT NULL, d.public_key, d.wipe_ordered_ms IS NOT NULL FROM devices d
         JOIN users u ON u.id = d.user_id WHERE d.id = ?1",
        [id],
        |r| {
            let role: String = r.get(2)?;
            Ok((
                Device {
                    id: r.get(0)?,
                    user: r.get(1)?,
                    role: Role::Worker,
                    department: r.get(3)?,
                    retired: r.get(4)?,
                    district: None,
                    public_key: r.get(5)?,
                    wipe: r.get(6)?,
                },
                role,
            ))
        },
    )
    .optional()?;
    let (device, role) = row.ok_or(ServerError::Unauthenticated)?;
    Ok(Device { role: parse_role(&role)?, ..device })
}

fn load_catalog(conn: &Connection) -> Result<Catalog> {
    let version = meta_get(conn, "catalog_version")?.and_then(|v| v.parse().ok()).unwrap_or(0);
    let grids = conn
        .prepare("SELECT json FROM grids ORDER BY id")?
        .query_map([], |r| r.get::<_, String>(0))?
        .filter_map(|j| j.ok().and_then(|j| serde_json::from_str::<Grid>(&j).ok()))
        .collect();
    let categories = conn
        .prepare("SELECT json FROM categories ORDER BY id")?
        .query_map([], |r| r.get::<_, String>(0))?
        .filter_map(|j| j.ok().and_then(|j| serde_json::from_str::<Category>(&j).ok()))
        .collect();
    let departments = conn
        .prepare("SELECT json FROM departments ORDER BY id")?
        .query_map([], |r| r.get::<_, String>(0))?
        .filter_map(|j| j.ok().and_then(|j| serde_json::from_str::<Department>(&j).ok()))
        .collect();
    Ok(Catalog { version, grids, categories, departments })
}

/// One device's push, waiting for the writer.
struct Queued {
    job: PushJob,
    reply: Option<Reply>,
}

/// Where the writer answers a push.
type Reply = mpsc::Sender<Result<Vec<ItemResult>>>;

impl SqliteStore {
    /// Group commit. A push joins the queue, then takes the writer lock; whoever holds it runs
    /// every queued push in one transaction (each in a savepoint, so one push's failure is its
    /// own) and answers each. A commit per push was a tenth of the server's CPU in the storm, and
    /// concurrent pushes now share one. Sequence numbers still come from the one writer, in order.
    fn write_push(&self, job: PushJob) -> Result<Vec<ItemResult>> {
        let (tx, rx) = mpsc::channel();
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).push(Queued { job, reply: Some(tx) });
        {
            let mut conn = self.conn();
            let batch: Vec<Queued> = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
            if !batch.is_empty() {
                self.write_batch(&mut conn, batch);
            }
        }
        // Our push ran in this batch or in one that finished before we got the lock.
        rx.recv().map_err(|_| ServerError::Internal("the writer dropped a push without answering".into()))?
    }

    fn write_batch(&self, conn: &mut Connection, batch: Vec<Queued>) {
        let replies: Vec<Reply> = batch.iter().filter_map(|j| j.reply.clone()).collect();
        let seen = self.take_seen();
        let mut answers: Vec<(Reply, Result<Vec<ItemResult>>)> = vec![];
        let outcome = (|| -> Result<()> {
            // First every push in one transaction without savepoints: a savepoint copies each page
            // it first changes, and a push fails only when storage does. If one does fail, the
            // batch starts over with a savepoint around each push, so that failure stays its own.
            let mut savepoints = false;
            loop {
                let tx = self.begin_write(conn)?;
                write_seen(&tx, &seen)?;
                answers.clear();
                let mut failed = false;
                for Queued { job, reply } in &batch {
                    let Some(reply) = reply.clone() else { continue };
                    if savepoints {
                        tx.execute_batch("SAVEPOINT push")?;
                    }
                    match self.push(&tx, job) {
                        Ok(r) => {
                            if savepoints {
                                tx.execute_batch("RELEASE push")?;
                            }
                            answers.push((reply, Ok(r)));
                        }
                        Err(e) if savepoints => {
                            tx.execute_batch("ROLLBACK TO push; RELEASE push")?;
                            answers.push((reply, Err(e)));
                        }
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                if failed {
                    tx.rollback()?;
                    savepoints = true;
                    continue;
                }
                gridwork_model::crash_points::reached("group-commit");
                self.commit(tx)?;
                gridwork_model::crash_points::reached("push-committed");
                break;
            }
            // Keep the planner's statistics current as the district grows (cheap when they are).
            if self.batches.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 1000 == 999 {
                conn.execute_batch("PRAGMA optimize;")?;
            }
            Ok(())
        })();
        match outcome {
            Ok(()) => {
                for (reply, r) in answers {
                    let _ = reply.send(r);
                }
            }
            Err(e) => {
                // Nothing of the batch was stored: every push hears so and will be resent, and
                // the sightings wait for the next batch.
                self.restore_seen(seen);
                for reply in replies {
                    // Each push hears why: a full disk is the phone's 507 (retry later), not a 500.
                    let told = match &e {
                        ServerError::StorageFull(detail) => ServerError::StorageFull(detail.clone()),
                        other => ServerError::Internal(format!("storing the push failed: {other}")),
                    };
                    let _ = reply.send(Err(told));
                }
            }
        }
    }

    /// A sync that sends nothing changes nothing but when the device was last seen and what it
    /// reported. Writing that at once cost every idle sync a transaction and an fsync, one at a
    /// time through the writer; it is kept here and written with the next write batch (before its
    /// pushes, so a newer push's state wins) or when an administrator lists the devices. A crash
    /// loses at most those timestamps, never anything a device sent.
    fn keep_seen(&self, device_id: &str, now_ms: i64, state: String) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(device_id.to_owned(), (now_ms, state));
    }

    /// Starts a write transaction on the writer connection (taking the database's write lock
    /// at once); sequence numbers start again from `meta` (see [`SeqCounter`]).
    fn begin_write<'c>(&self, conn: &'c mut Connection) -> Result<Transaction<'c>> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        *self.seq.lock().unwrap_or_else(|p| p.into_inner()) = SeqCounter::default();
        Ok(tx)
    }

    /// Commits a transaction from [`SqliteStore::begin_write`], first recording in `meta` the
    /// last sequence number it took: a reader's `last_seq` (a device's new cursor), the next
    /// transaction and a restarted server all start from there.
    fn commit(&self, tx: Transaction<'_>) -> Result<()> {
        let mut seq = self.seq.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = seq.taken {
            meta_set(&tx, "last_seq", &t.to_string())?;
        }
        *seq = SeqCounter::default();
        tx.commit()?;
        Ok(())
    }

    fn take_seen(&self) -> Sightings {
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Sightings that could not be written go back, unless the device was seen again since.
    fn restore_seen(&self, seen: Sightings) {
        let mut pending = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for (id, at) in seen {
            pending.entry(id).or_insert(at);
        }
    }

    /// Writes the kept sightings in a transaction of their own (a device listing, closing the
    /// store); nothing to do when none is kept.
    fn flush_seen_on(&self, conn: &mut Connection) -> Result<()> {
        let seen = self.take_seen();
        if seen.is_empty() {
            return Ok(());
        }
        let written =
            conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(ServerError::from).and_then(|tx| {
                write_seen(&tx, &seen)?;
                Ok(tx.commit()?)
            });
        if written.is_err() {
            self.restore_seen(seen);
        }
        written
    }

    /// The writer's transaction as the storage port.
    fn port<'c>(&'c self, tx: &'c Connection) -> SqliteTx<'c> {
        SqliteTx { conn: tx, seq: Some(&self.seq) }
    }

    /// One device's push, inside the writer's transaction (`rules::push`).
    fn push(&self, tx: &Transaction<'_>, job: &PushJob) -> Result<Vec<ItemResult>> {
        crate::rules::push::push(&self.rules(), &self.port(tx), job)
    }

    /// A reader connection from the pool (WAL readers see a committed snapshot and never wait
    /// for the writer).
    fn reader(&self) -> Result<Connection> {
        if let Some(c) = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(c);
        }
        let c = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )?;
        c.execute_batch("PRAGMA busy_timeout = 5000;")?;
        plan_once(&c)?;
        c.set_prepared_statement_cache_capacity(256);
        Ok(c)
    }

    /// Bytes of a blob received since start (see [`BlobFiles::bytes_received`]).
    fn give_back(&self, reader: Connection) {
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < MAX_READERS {
            pool.push(reader);
        }
    }
}

impl SqliteStore {}

/// Schemas 8 and 9: the actors of every stored change and the last sequence number each used,
/// read from the changes themselves.
fn fill_doc_actors(tx: &Transaction<'_>) -> Result<()> {
    let mut read = tx.prepare("SELECT doc_id, bytes FROM changes")?;
    let mut insert = tx.prepare(
        "INSERT INTO doc_actors (doc_id, actor, last_seq) VALUES (?1, ?2, ?3)
         ON CONFLICT (doc_id, actor) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
    )?;
    let mut rows = read.query([])?;
    while let Some(row) = rows.next()? {
        let doc: String = row.get(0)?;
        let bytes: Vec<u8> = row.get(1)?;
        // Stored changes were read when they arrived; one that no longer parses is left to the
        // console's damaged-case page rather than stopping the upgrade.
        if let Ok(change) = automerge::Change::from_bytes(bytes) {
            insert.execute(params![doc, change.actor_id().to_hex_string(), change.seq() as i64])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_507_storage_full_and_other_sqlite_errors_are_internal() {
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("database or disk is full".into()),
        );
        assert_eq!(ServerError::from(full).status_and_code(), (507, "storage_full"));
        let io = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR), None);
        assert_eq!(ServerError::from(io).status_and_code(), (500, "internal"));
    }

    /// A statement every request runs is compiled once per connection, whatever is bound to it:
    /// with STAT4 statistics (this build of SQLite gathers them) SQLite would otherwise compile
    /// it again each time the bound user changes.
    #[test]
    fn a_cached_statement_is_not_compiled_again_when_its_binding_changes() {
        let dir = std::env::temp_dir().join(format!("gridwork-plan-once-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = SqliteStore::open(&dir).expect("open");
        {
            let conn = store.conn();
            for u in 0..20 {
                conn.execute("INSERT INTO users (id, role) VALUES (?1, 'worker')", [format!("u{u}")]).expect("user");
                // Skewed, so the statistics have something to say about each user.
                for g in 0..(1 + u * u) {
                    conn.execute(
                        "INSERT INTO user_scopes (user_id, scope, granted_seq) VALUES (?1, ?2, 1)",
                        params![format!("u{u}"), format!("grid:{g}")],
                    )
                    .expect("scope");
                }
            }
            conn.execute_batch("ANALYZE;").expect("analyze");
        }
        let reader = store.reader().expect("reader");
        for u in 0..20 {
            let device = Device {
                id: format!("d{u}"),
                user: format!("u{u}"),
                role: Role::Worker,
                department: None,
                retired: false,
                district: None,
                public_key: None,
                wipe: false,
            };
            let scopes =
                crate::rules::push::device_scopes(&SqliteTx { conn: &reader, seq: None }, &device).expect("scopes");
            assert_eq!(scopes.len() as i64, 2 + u * u, "the user's scopes and their own");
        }
        let stmt =
            reader.prepare_cached("SELECT scope, granted_seq FROM user_scopes WHERE user_id = ?1").expect("cached");
        assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0);
        drop(stmt);
        drop(reader);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
