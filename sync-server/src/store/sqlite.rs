//! The embedded SQLite store.
//!
//! One writer: pushes run in `BEGIN IMMEDIATE` transactions under a mutex (group-committed), and
//! sequence numbers are taken from `meta.last_seq` inside it, so they commit in order and a cursor
//! (the last sequence number a device has seen) can never skip a change (docs/PROTOCOL.md).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex, MutexGuard, RwLock};

use base64::Engine;
use gridwork_model::access::{may_change, Scope};
use gridwork_model::catalog::{Catalog, Category, Department, Grid, Role};
use gridwork_model::doc::keys;
use gridwork_model::geo::Location;
use gridwork_model::wire::{
    BlobOwner, BlobStatus, EnrolRequest, EnrolResponse, ItemResult, SyncRequest, SyncResponse, PROTOCOL_VERSION,
};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior};
use sha2::{Digest, Sha256};

mod console;
mod port;
pub(super) mod records;

use super::{AdminStore, Device, OperatorStats, SyncStore};
use crate::blobs::{Begun, BlobFiles, Writer};
use crate::error::{Result, ServerError};
use crate::places::Places;
use crate::rules::pull::{add_whole_documents, parse_cursor, pull, told_scopes};
use crate::rules::push::{case_access, subject, Push, Pushed, Rules};
use crate::store::port::ReadTx;
use port::SqliteTx;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A device as an administrator sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeviceInfo {
    pub id: String,
    pub code: String,
    pub user: String,
    pub status: String,
    pub last_seen_ms: Option<i64>,
    pub last_state: Option<serde_json::Value>,
    /// How old the device's oldest unsynced work is now (as last reported, plus the time since);
    /// None when it reported nothing pending or never synced.
    pub unsynced_age_ms: Option<i64>,
}

/// The age now of a device's oldest unsynced work, from its last reported state.
fn unsynced_age_ms(last_seen_ms: Option<i64>, last_state: Option<&serde_json::Value>, now_ms: i64) -> Option<i64> {
    let (seen, state) = (last_seen_ms?, last_state?.get("state")?);
    let n = |k: &str| state.get(k).and_then(|v| v.as_i64()).unwrap_or(0);
    if n("outbox_items") == 0 && n("photos_pending") == 0 {
        return None;
    }
    Some(n("oldest_unsynced_age_ms") + (now_ms - seen).max(0))
}

/// A quarantined change or record.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QuarantinedItem {
    pub key: String,
    pub doc_id: String,
    pub device_id: String,
    pub reason: String,
    pub status: String,
}

/// Reader connections kept open between syncs.
const MAX_READERS: usize = 64;

/// The schema this server writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 9;

pub struct SqliteStore {
    /// Evidence blobs beside the database.
    blobs: Arc<BlobFiles>,
    /// The one writer.
    conn: Mutex<Connection>,
    /// Pushes waiting for the writer (see [`SqliteStore::write`]).
    pending: Mutex<Vec<PushJob>>,
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

fn random_hex(bytes: usize) -> Result<String> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| ServerError::Internal(format!("no randomness: {e}")))?;
    Ok(hex::encode(b))
}

/// Six characters of Crockford base32 (no I, L, O, U): about a billion codes, easy to read aloud.
fn short_code() -> Result<String> {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).map_err(|e| ServerError::Internal(format!("no randomness: {e}")))?;
    Ok(b.iter().map(|x| ALPHABET[(*x & 31) as usize] as char).collect())
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn parse_role(s: &str) -> Result<Role> {
    Role::parse(s).ok_or_else(|| ServerError::Internal(format!("stored role {s:?} is unknown")))
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| ServerError::Internal(e.to_string()))
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

/// Dotted version compare: is `a` older than `b`?
fn older(a: &str, b: &str) -> bool {
    let parse = |s: &str| s.split('.').map(|p| p.parse::<u64>().unwrap_or(0)).collect::<Vec<_>>();
    parse(a) < parse(b)
}

impl SqliteStore {
    /// Opens (creating) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ServerError::Internal(format!("cannot create {}: {e}", dir.display())))?;
        let conn = Connection::open(dir.join("server.db"))?;
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
        let steps: [(i64, &str); 9] = [
            (1, include_str!("schema.sql")),
            (2, include_str!("schema_2_blobs.sql")),
            (3, include_str!("schema_3_retire.sql")),
            (4, include_str!("schema_4_console.sql")),
            (5, include_str!("schema_5_lean.sql")),
            (6, include_str!("schema_6_areas.sql")),
            (7, include_str!("schema_7_records.sql")),
            (8, include_str!("schema_8_doc_actors.sql")),
            (9, include_str!("schema_9_actor_seq.sql")),
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
            path: dir.join("server.db"),
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

    fn catalog(&self) -> Arc<Catalog> {
        Arc::clone(self.places().catalog())
    }

    /// Records where each grid of `catalog` lies: a grid placed in a community or street from now
    /// on, a grid no longer in one since now (a sequence number, so cursors tell which devices
    /// have yet to hear). Unchanged placements keep their moment.
    fn place_grids(&self, tx: &Transaction<'_>, catalog: &Catalog) -> Result<()> {
        let wanted: BTreeSet<(String, String)> = catalog
            .grids
            .iter()
            .flat_map(|g| [("community", &g.community), ("street", &g.street)].map(|(kind, name)| (kind, name, g)))
            .filter(|(_, name, _)| !name.is_empty())
            .map(|(kind, name, g)| (format!("{kind}:{name}"), g.id.0.clone()))
            .collect();
        let current: BTreeSet<(String, String)> = tx
            .prepare("SELECT scope, grid_id FROM grid_placements WHERE to_seq IS NULL")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        if wanted == current {
            return Ok(());
        }
        let seq = self.next_seq(tx)?;
        for (scope, grid) in current.difference(&wanted) {
            exec(
                tx,
                "UPDATE grid_placements SET to_seq = ?3 WHERE scope = ?1 AND grid_id = ?2 AND to_seq IS NULL",
                params![scope, grid, seq],
            )?;
        }
        for (scope, grid) in wanted.difference(&current) {
            exec(
                tx,
                "INSERT INTO grid_placements (scope, grid_id, from_seq) VALUES (?1, ?2, ?3)",
                params![scope, grid, seq],
            )?;
        }
        Ok(())
    }
}

impl AdminStore for SqliteStore {
    /// The reference data devices receive now.
    fn current_catalog(&self) -> Arc<Catalog> {
        self.catalog()
    }

    /// Replaces the reference data and bumps the catalog version.
    fn import_catalog(&self, catalog: &Catalog) -> Result<u64> {
        let mut conn = self.conn();
        let tx = self.begin_write(&mut conn)?;
        let version = meta_get(&tx, "catalog_version")?.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + 1;
        exec(&tx, "DELETE FROM grids", [])?;
        exec(&tx, "DELETE FROM categories", [])?;
        exec(&tx, "DELETE FROM departments", [])?;
        for g in &catalog.grids {
            exec(
                &tx,
                "INSERT INTO grids (id, community, street, json) VALUES (?1, ?2, ?3, ?4)",
                params![g.id.0, g.community, g.street, json(g)?],
            )?;
        }
        for c in &catalog.categories {
            exec(&tx, "INSERT INTO categories (id, json) VALUES (?1, ?2)", params![c.id.0, json(c)?])?;
        }
        for d in &catalog.departments {
            exec(&tx, "INSERT INTO departments (id, json) VALUES (?1, ?2)", params![d.id.0, json(d)?])?;
        }
        self.place_grids(&tx, catalog)?;
        meta_set(&tx, "catalog_version", &version.to_string())?;
        self.commit(tx)?;
        let mut new = catalog.clone();
        new.version = version;
        *self.places.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Places::new(Arc::new(new)));
        Ok(version)
    }

    /// Adds (or updates) a user with a role and the scopes they may see:
    /// `grid:ID`, `community:NAME`, `street:NAME`, `department:ID`.
    fn set_user(&self, user: &str, role: Role, department: Option<&str>, scopes: &[Scope]) -> Result<()> {
        // A user's own scope (`user:ID`, their reports) is everyone's and never granted.
        if let Some(own) = scopes.iter().find(|s| matches!(s, Scope::User(_))) {
            return Err(ServerError::BadRequest(format!(
                "scope {own}: use grid:ID, community:NAME, street:NAME or department:ID"
            )));
        }
        let mut conn = self.conn();
        let tx = self.begin_write(&mut conn)?;
        exec(
            &tx,
            "INSERT INTO users (id, role, department) VALUES (?1, ?2, ?3)
             ON CONFLICT(id) DO UPDATE SET role = excluded.role, department = excluded.department",
            params![user, Role::as_str(role), department],
        )?;
        let current: BTreeSet<String> = tx
            .prepare("SELECT scope FROM user_scopes WHERE user_id = ?1")?
            .query_map([user], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let wanted: BTreeSet<String> = scopes.iter().map(Scope::to_string).collect();
        if current != wanted {
            // A sequence number marks the moment, so devices' cursors can tell what is new to them.
            let seq = self.next_seq(&tx)?;
            for s in wanted.difference(&current) {
                exec(
                    &tx,
                    "INSERT INTO user_scopes (user_id, scope, granted_seq) VALUES (?1, ?2, ?3)",
                    params![user, s, seq],
                )?;
            }
            for s in current.difference(&wanted) {
                exec(&tx, "DELETE FROM user_scopes WHERE user_id = ?1 AND scope = ?2", params![user, s])?;
                exec(
                    &tx,
                    "INSERT INTO user_scopes_removed (user_id, scope, removed_seq) VALUES (?1, ?2, ?3)",
                    params![user, s, seq],
                )?;
            }
        }
        self.commit(tx)?;
        Ok(())
    }

    /// Creates a device for `user` and returns (device id, one-time enrolment code).
    fn enrol_device(&self, user: &str, now_ms: i64) -> Result<(String, String)> {
        let conn = self.conn();
        let exists: Option<String> =
            conn.query_row("SELECT id FROM users WHERE id = ?1", [user], |r| r.get(0)).optional()?;
        if exists.is_none() {
            return Err(ServerError::NotFound(format!("user {user}: add the user first")));
        }
        let id = format!("dev-{}", random_hex(6)?);
        let secret = random_hex(10)?;
        // The short code prefixes readable case codes, so it is kept to 6 characters and drawn
        // again on the rare collision rather than made longer.
        for _ in 0..16 {
            let code = short_code()?;
            let taken = q1(&conn, "SELECT 1 FROM devices WHERE code = ?1", [&code], |_| Ok(())).optional()?.is_some();
            if taken {
                continue;
            }
            conn.execute(
                "INSERT INTO devices (id, code, user_id, enrol_hash, status, created_ms) VALUES (?1, ?2, ?3, ?4, 'pending', ?5)",
                params![id, code, user, sha256_hex(&secret), now_ms],
            )?;
            return Ok((id, secret));
        }
        Err(ServerError::Internal("could not find a free device code".into()))
    }

    /// A worker leaves: the device may still push what it holds (until it reports nothing left),
    /// and receives nothing new. What it synced stays.
    fn retire_device(&self, device: &str, now_ms: i64) -> Result<()> {
        let n = self.conn().execute(
            "UPDATE devices SET retired_ms = coalesce(retired_ms, ?2) WHERE id = ?1 AND status = 'active'",
            params![device, now_ms],
        )?;
        if n == 0 {
            return Err(ServerError::NotFound(format!("active device {device}")));
        }
        Ok(())
    }

    /// A lost phone: refused from now on; what it synced stays.
    fn revoke_device(&self, device: &str) -> Result<()> {
        let n = self.conn().execute("UPDATE devices SET status = 'revoked' WHERE id = ?1", [device])?;
        if n == 0 {
            return Err(ServerError::NotFound(format!("device {device}")));
        }
        Ok(())
    }

    /// Every device, the one sitting longest on unsynced work first.
    fn list_devices(&self, now_ms: i64) -> Result<Vec<DeviceInfo>> {
        let mut conn = self.conn();
        self.flush_seen(&mut conn)?;
        let mut stmt = conn.prepare(
            "SELECT id, code, user_id, status, last_seen_ms, last_state, retired_ms, drained_ms FROM devices
                 WHERE id NOT LIKE 'console-%' ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            let state: Option<String> = r.get(5)?;
            let (retired_ms, drained_ms): (Option<i64>, Option<i64>) = (r.get(6)?, r.get(7)?);
            let last_state: Option<serde_json::Value> = state.and_then(|s| serde_json::from_str(&s).ok());
            let last_seen_ms: Option<i64> = r.get(4)?;
            Ok(DeviceInfo {
                id: r.get(0)?,
                code: r.get(1)?,
                user: r.get(2)?,
                // A retired device is still allowed in; it shows as retired, then drained.
                status: match (r.get::<_, String>(3)?.as_str(), retired_ms, drained_ms) {
                    ("active", Some(_), Some(_)) => "retired_drained".to_owned(),
                    ("active", Some(_), None) => "retired".to_owned(),
                    (other, _, _) => other.to_owned(),
                },
                last_seen_ms,
                unsynced_age_ms: unsynced_age_ms(last_seen_ms, last_state.as_ref(), now_ms),
                last_state,
            })
        })?;
        let mut devices: Vec<DeviceInfo> = rows.collect::<rusqlite::Result<_>>()?;
        devices.sort_by_key(|d| std::cmp::Reverse(d.unsynced_age_ms));
        Ok(devices)
    }

    fn quarantined(&self) -> Result<Vec<QuarantinedItem>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT hash, doc_id, device_id, reason, status FROM quarantine ORDER BY received_ms, hash")?;
        let rows = stmt.query_map([], |r| {
            Ok(QuarantinedItem {
                key: r.get(0)?,
                doc_id: r.get(1)?,
                device_id: r.get(2)?,
                reason: r.get(3)?,
                status: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Number of applied changes, documents and records (for the demo and tests).
    fn counts(&self) -> Result<(i64, i64, i64)> {
        let conn = self.conn();
        let c = conn.query_row("SELECT count(*) FROM changes", [], |r| r.get(0))?;
        let d = conn.query_row("SELECT count(*) FROM docs", [], |r| r.get(0))?;
        let r = conn.query_row("SELECT count(*) FROM records", [], |r| r.get(0))?;
        Ok((c, d, r))
    }

    /// Current heads of a document as the server holds it (loads it: for tests and tools only).
    fn doc_heads(&self, doc_id: &str) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT bytes FROM changes WHERE doc_id = ?1 ORDER BY seq")?;
        let changes = stmt
            .query_map([doc_id], |r| r.get::<_, Vec<u8>>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?
            .into_iter()
            .filter_map(|b| automerge::Change::from_bytes(b).ok())
            .collect::<Vec<_>>();
        let heads = gridwork_model::fence::fenced(move || {
            let mut doc = automerge::Automerge::new();
            doc.apply_changes(changes).map(|()| doc.get_heads())
        })
        .map_err(ServerError::Internal)?
        .map_err(|e| ServerError::Internal(e.to_string()))?;
        let mut heads: Vec<String> = heads.iter().map(|h| h.to_string()).collect();
        heads.sort();
        Ok(heads)
    }

    /// An administrator accepts a quarantined change: it is applied and enters the scopes of its
    /// case. Its earlier changes must be on the server (release those first).
    fn release_quarantined(&self, hash: &str, now_ms: i64) -> Result<()> {
        let mut conn = self.conn();
        let tx = self.begin_write(&mut conn)?;
        crate::rules::push::release(&self.rules(), &self.port(&tx), hash, now_ms)?;
        self.commit(tx)?;
        Ok(())
    }

    /// An administrator rejects a quarantined item: it stays stored, marked, out of every scope.
    fn reject_quarantined(&self, hash: &str) -> Result<()> {
        let n = self
            .conn()
            .execute("UPDATE quarantine SET status = 'rejected' WHERE hash = ?1 AND status = 'pending'", [hash])?;
        if n == 0 {
            return Err(ServerError::NotFound(format!("pending quarantined item {hash}")));
        }
        Ok(())
    }

    /// The documents a user's devices should hold: every case in one of the user's scopes.
    fn docs_in_scope(&self, user: &str) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut docs: Vec<String> = conn
            .prepare(
                "SELECT DISTINCT m.doc_id FROM membership m
                 WHERE m.scope = 'user:' || ?1 OR m.scope IN (SELECT scope FROM user_areas WHERE user_id = ?1)",
            )?
            .query_map([user], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        docs.sort();
        Ok(docs)
    }

    /// The flags the server set on a case (outside_grid, retired_category, device_clock_skew…).
    fn doc_flags(&self, doc_id: &str) -> Result<Vec<String>> {
        let flags: Option<String> =
            self.conn().query_row("SELECT flags FROM docs WHERE doc_id = ?1", [doc_id], |r| r.get(0)).optional()?;
        Ok(flags.unwrap_or_default().split(',').filter(|f| !f.is_empty()).map(str::to_owned).collect())
    }

    /// Devices older than this are told to upgrade (their pushes are still accepted).
    fn set_min_app_version(&self, version: &str) -> Result<()> {
        meta_set(&self.conn(), "min_app_version", version)
    }

    /// How many complete blobs the server holds.
    fn blob_count(&self) -> Result<i64> {
        Ok(self.conn().query_row("SELECT count(*) FROM blobs", [], |r| r.get(0))?)
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

impl Drop for SqliteStore {
    /// Sightings not yet written are written on the way out (best effort: they are only timestamps).
    fn drop(&mut self) {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = self.flush_seen(&mut conn) {
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
    }
    Ok(())
}

fn load_device_by_id(conn: &Connection, id: &str) -> Result<Device> {
    let row = q1(
        conn,
        "SELECT d.id, d.user_id, u.role, u.department, d.retired_ms IS NOT NULL FROM devices d
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

impl SyncStore for SqliteStore {
    fn console(&self) -> Option<&dyn super::ConsoleStore> {
        Some(self)
    }

    fn redeem(&self, req: &EnrolRequest, now_ms: i64) -> Result<EnrolResponse> {
        let conn = self.conn();
        let id: Option<String> = conn
            .query_row(
                "SELECT id FROM devices WHERE enrol_hash = ?1 AND status = 'pending'",
                [sha256_hex(&req.code)],
                |r| r.get(0),
            )
            .optional()?;
        let id = id.ok_or(ServerError::BadEnrolmentCode)?;
        let token = random_hex(32)?;
        conn.execute(
            "UPDATE devices SET enrol_hash = NULL, token_hash = ?2, status = 'active', last_seen_ms = ?3 WHERE id = ?1",
            params![id, sha256_hex(&token), now_ms],
        )?;
        let device = load_device_by_id(&conn, &id)?;
        let code: String = conn.query_row("SELECT code FROM devices WHERE id = ?1", [&id], |r| r.get(0))?;
        Ok(EnrolResponse {
            device_id: id,
            device_code: code,
            token,
            user: device.user,
            role: device.role,
            department: device.department,
        })
    }

    fn authenticate(&self, token: &str) -> Result<Device> {
        // On a reader: a request is not held behind the writer's batch just to learn who sent it.
        // A revocation is committed before it is acknowledged, so a reader sees it.
        let conn = self.reader()?;
        let row = q1(
            &conn,
            "SELECT d.status, d.id, d.user_id, u.role, u.department, d.retired_ms IS NOT NULL FROM devices d
             JOIN users u ON u.id = d.user_id WHERE d.token_hash = ?1",
            [sha256_hex(token)],
            |r| {
                let status: String = r.get(0)?;
                let device = Device {
                    id: r.get(1)?,
                    user: r.get(2)?,
                    role: Role::Worker,
                    department: r.get(4)?,
                    retired: r.get(5)?,
                };
                Ok((status, device, r.get::<_, String>(3)?))
            },
        )
        .optional();
        self.give_back(conn);
        match row? {
            Some((status, device, role)) if status == "active" => Ok(Device { role: parse_role(&role)?, ..device }),
            Some(_) => Err(ServerError::DeviceRevoked),
            None => Err(ServerError::Unauthenticated),
        }
    }

    fn blob_status(&self, device: &Device, sha256: &str, owner: Option<&BlobOwner>) -> Result<BlobStatus> {
        // Without an owner it is a download's question, and a retired device downloads nothing.
        if owner.is_none() && device.retired {
            return Err(ServerError::DeviceRetired);
        }
        let allowed = match owner {
            Some(o) => self.can_see_owner(device, o)?,
            None => false,
        };
        if !allowed && !self.sees_blob(device, sha256)? {
            // The same answer as a download's: an outsider learns nothing of whether it exists.
            return Err(ServerError::NotInScope(format!("blob {sha256} belongs to nothing you can see")));
        }
        self.blobs.status(sha256)
    }

    fn begin_blob(
        &self,
        device: &Device,
        sha256: &str,
        owner: &BlobOwner,
        offset: u64,
        total: u64,
        len: Option<u64>,
        now_ms: i64,
    ) -> Result<Begun> {
        if !self.can_see_owner(device, owner)? {
            return Err(ServerError::NotInScope(format!(
                "{} is not one of yours: sync it before its photos, or check the owner",
                owner.to_query()
            )));
        }
        let begun = self.blobs.begin(sha256, offset, total, len)?;
        if let Begun::Complete(status) = &begun {
            self.link_blob(device, sha256, status.offset, owner, now_ms)?;
        }
        Ok(begun)
    }

    fn end_blob(&self, device: &Device, owner: &BlobOwner, writer: Writer, now_ms: i64) -> Result<BlobStatus> {
        let sha256 = writer.sha256().to_owned();
        let status = writer.finish()?;
        if status.complete {
            self.link_blob(device, &sha256, status.offset, owner, now_ms)?;
        }
        Ok(status)
    }

    fn operator_stats(&self, now_ms: i64) -> Result<OperatorStats> {
        let quarantine_pending: i64 =
            self.conn().query_row("SELECT count(*) FROM quarantine WHERE status = 'pending'", [], |r| r.get(0))?;
        const HOUR: i64 = 3_600_000;
        let mut buckets: Vec<(&'static str, i64)> =
            ["never_synced", "nothing_pending", "under_1h", "1h_to_1d", "1d_to_7d", "over_7d"]
                .into_iter()
                .map(|b| (b, 0))
                .collect();
        for d in self.list_devices(now_ms)?.into_iter().filter(|d| d.status == "active") {
            let bucket = match (d.last_seen_ms, d.unsynced_age_ms) {
                (None, _) => "never_synced",
                (Some(_), None) => "nothing_pending",
                (Some(_), Some(a)) if a < HOUR => "under_1h",
                (Some(_), Some(a)) if a < 24 * HOUR => "1h_to_1d",
                (Some(_), Some(a)) if a < 7 * 24 * HOUR => "1d_to_7d",
                _ => "over_7d",
            };
            if let Some(b) = buckets.iter_mut().find(|(name, _)| *name == bucket) {
                b.1 += 1;
            }
        }
        Ok(OperatorStats { quarantine_pending, devices_by_unsynced_age: buckets })
    }

    fn get_blob(&self, device: &Device, sha256: &str) -> Result<Vec<u8>> {
        if device.retired {
            return Err(ServerError::DeviceRetired);
        }
        if !self.sees_blob(device, sha256)? {
            // The same answer whether the blob exists or not: a device learns nothing of others' evidence.
            return Err(ServerError::NotInScope(format!("blob {sha256} belongs to nothing you can see")));
        }
        self.blobs.read(sha256)
    }

    fn sync(&self, device: &Device, mut req: SyncRequest, now_ms: i64) -> Result<SyncResponse> {
        if req.protocol > PROTOCOL_VERSION {
            return Err(ServerError::ProtocolFromFuture { got: req.protocol, supported: PROTOCOL_VERSION });
        }
        let (cursor, reoffer) = parse_cursor(&self.epoch, req.cursor.as_deref(), || {
            let reader = self.reader()?;
            let head = last_seq(&reader);
            self.give_back(reader);
            head
        })?;
        // Decode and parse every pushed change before queueing for the writer: parsing is a fifth
        // of the push's CPU, and here it runs beside other requests instead of inside the one writer.
        // Bytes are bounded per change (`ingest::MAX_CHANGE_BYTES`) and per request: changes past
        // the request's budget are refused, stay in the phone's outbox and go in its next request.
        let mut pushed = Vec::with_capacity(req.changes.len());
        let mut decoded = crate::limits::MAX_DECODED_BYTES_PER_REQUEST;
        for c in &req.changes {
            let bytes = B64.decode(&c.bytes).map_err(|_| {
                ServerError::BadRequest(format!(
                    "change for {} is not base64",
                    c.doc.chars().take(60).collect::<String>()
                ))
            })?;
            pushed.push(Pushed::read(c.doc.clone(), bytes, c.receipt.clone(), &mut decoded));
        }
        let (app_version, catalog_version, budget) = (
            req.app_version.clone(),
            req.state.catalog_version,
            req.max_pull_bytes.clamp(1, crate::limits::MAX_PULL_BYTES),
        );
        let want_full = std::mem::take(&mut req.want_full);
        let accept_compacted = req.accept_compacted;
        let results = if pushed.is_empty() && req.records.is_empty() && !device.retired {
            self.note_seen(device, &req, now_ms)?;
            vec![]
        } else {
            self.write(PushJob { device: device.clone(), req, pushed, now_ms, reply: None })?
        };

        // The pull reads a snapshot on a reader connection, beside the writer.
        // One read transaction, so that every query of the pull sees the same snapshot.
        let mut reader = self.reader()?;
        let snapshot = reader.transaction()?;
        let rules = self.rules();
        let view = SqliteTx { conn: &snapshot, seq: None };
        // A retired device receives nothing new: its cursor stays where it was.
        let (docs, left_scope, new_cursor, more) = if device.retired {
            (vec![], vec![], cursor, false)
        } else {
            let (mut docs, left, new_cursor, more) = pull(&rules, &view, device, &cursor, budget, accept_compacted)?;
            add_whole_documents(&rules, &view, device, &want_full, budget, &mut docs)?;
            (docs, left, new_cursor, more)
        };
        let scopes = told_scopes(&view, device)?;
        let min_version = view.meta("min_app_version")?;
        snapshot.finish()?;
        gridwork_model::crash_points::reached("pull");
        self.give_back(reader);
        let catalog = self.catalog();
        Ok(SyncResponse {
            protocol: PROTOCOL_VERSION,
            server_time_ms: now_ms,
            upgrade_required: min_version.is_some_and(|m| older(&app_version, &m)),
            results,
            docs,
            left_scope,
            catalog: (catalog.version > catalog_version).then(|| Catalog::clone(&catalog)),
            cursor: new_cursor.cursor(&self.epoch),
            reoffer,
            retired: device.retired,
            more,
            scopes,
        })
    }
}

/// One device's push, waiting for the writer.
struct PushJob {
    device: Device,
    req: SyncRequest,
    pushed: Vec<Pushed>,
    now_ms: i64,
    reply: Option<Reply>,
}

/// Where the writer answers a push.
type Reply = mpsc::Sender<Result<Vec<ItemResult>>>;

impl SqliteStore {
    /// Group commit. A push joins the queue, then takes the writer lock; whoever holds it runs
    /// every queued push in one transaction (each in a savepoint, so one push's failure is its
    /// own) and answers each. A commit per push was a tenth of the server's CPU in the storm, and
    /// concurrent pushes now share one. Sequence numbers still come from the one writer, in order.
    fn write(&self, mut job: PushJob) -> Result<Vec<ItemResult>> {
        let (tx, rx) = mpsc::channel();
        job.reply = Some(tx);
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).push(job);
        {
            let mut conn = self.conn();
            let batch: Vec<PushJob> = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
            if !batch.is_empty() {
                self.write_batch(&mut conn, batch);
            }
        }
        // Our push ran in this batch or in one that finished before we got the lock.
        rx.recv().map_err(|_| ServerError::Internal("the writer dropped a push without answering".into()))?
    }

    fn write_batch(&self, conn: &mut Connection, batch: Vec<PushJob>) {
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
                for job in &batch {
                    let Some(reply) = job.reply.clone() else { continue };
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
    fn note_seen(&self, device: &Device, req: &SyncRequest, now_ms: i64) -> Result<()> {
        let state = json(&serde_json::json!({ "app_version": req.app_version, "state": req.state }))?;
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(device.id.clone(), (now_ms, state));
        Ok(())
    }

    /// The sightings `note_seen` kept, handed to whoever writes them.
    /// Takes the next sequence number. Only ever called inside a transaction from
    /// [`SqliteStore::begin_write`], which then commits through [`SqliteStore::commit`].
    fn next_seq(&self, tx: &Connection) -> Result<i64> {
        let mut seq = self.seq.lock().unwrap_or_else(|p| p.into_inner());
        let last = match seq.taken {
            Some(n) => n,
            None => last_seq(tx)?,
        };
        seq.taken = Some(last + 1);
        Ok(last + 1)
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
    fn flush_seen(&self, conn: &mut Connection) -> Result<()> {
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

    /// The rules' view of this store: its receipt key, epoch and places.
    fn rules(&self) -> Rules<'_> {
        Rules { receipts: &self.receipts, epoch: &self.epoch, places: self.places() }
    }

    /// The writer's transaction as the storage port.
    fn port<'c>(&'c self, tx: &'c Connection) -> SqliteTx<'c> {
        SqliteTx { conn: tx, seq: Some(&self.seq) }
    }

    /// One device's push, inside the writer's transaction (`rules::push`).
    fn push(&self, tx: &Transaction<'_>, job: &PushJob) -> Result<Vec<ItemResult>> {
        let push = Push { device: &job.device, req: &job.req, pushed: &job.pushed, now_ms: job.now_ms };
        crate::rules::push::push(&self.rules(), &self.port(tx), &push)
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

    /// Whether `device` may see a blob: it is linked to a case in its user's scopes or to a
    /// check-in one of its user's devices recorded.
    fn sees_blob(&self, device: &Device, sha256: &str) -> Result<bool> {
        let reader = self.reader()?;
        let visible = q1(
            &reader,
            "SELECT 1 FROM blob_links l WHERE l.sha256 = ?1 AND (
                 (l.owner_kind = 'case' AND EXISTS (
                     SELECT 1 FROM membership m WHERE m.doc_id = l.owner_id
                     AND (m.scope = 'user:' || ?2 OR m.scope IN (SELECT scope FROM user_areas WHERE user_id = ?2))))
                 OR (l.owner_kind = 'check_in' AND EXISTS (
                     SELECT 1 FROM records r JOIN devices d ON d.id = r.device_id
                     WHERE r.id = l.owner_id AND d.user_id = ?2)))
             LIMIT 1",
            params![sha256, device.user],
            |r| r.get::<_, i64>(0),
        )
        .optional();
        self.give_back(reader);
        Ok(visible?.is_some())
    }

    /// Whether `device` may upload evidence for `owner`: a case it may change (the one write
    /// rule, `model::access::may_change`), or a check-in one of its user's devices recorded.
    fn can_see_owner(&self, device: &Device, owner: &BlobOwner) -> Result<bool> {
        let reader = self.reader()?;
        let found = (|| -> Result<bool> {
            Ok(match owner {
                BlobOwner::Case(id) => match case_access(&SqliteTx { conn: &reader, seq: None }, id)? {
                    Some(access) => {
                        may_change(&subject(&SqliteTx { conn: &reader, seq: None }, device)?, &access).is_ok()
                    }
                    None => false,
                },
                BlobOwner::CheckIn(id) => q1(
                    &reader,
                    "SELECT 1 FROM records r JOIN devices d ON d.id = r.device_id WHERE r.id = ?1 AND d.user_id = ?2",
                    params![id, device.user],
                    |r| r.get::<_, i64>(0),
                )
                .optional()?
                .is_some(),
            })
        })();
        self.give_back(reader);
        found
    }

    /// Records a complete blob (once) and links it to `owner` (once per owner).
    fn link_blob(&self, device: &Device, sha256: &str, size: u64, owner: &BlobOwner, now_ms: i64) -> Result<()> {
        let (kind, id) = match owner {
            BlobOwner::Case(id) => ("case", id),
            BlobOwner::CheckIn(id) => ("check_in", id),
        };
        let conn = self.conn();
        exec(
            &conn,
            "INSERT INTO blobs (sha256, size, first_device, received_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (sha256) DO NOTHING",
            params![sha256, size as i64, device.id, now_ms],
        )?;
        exec(
            &conn,
            "INSERT INTO blob_links (sha256, owner_kind, owner_id, device_id, linked_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT DO NOTHING",
            params![sha256, kind, id, device.id, now_ms],
        )?;
        Ok(())
    }

    /// Bytes of a blob received since start (see [`BlobFiles::bytes_received`]).
    pub fn blob_bytes_received(&self, sha256: &str) -> u64 {
        self.blobs.bytes_received(sha256)
    }

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
