//! The embedded SQLite store.
//!
//! One writer: pushes run in `BEGIN IMMEDIATE` transactions under a mutex (group-committed), and
//! sequence numbers are taken from `meta.last_seq` inside it, so they commit in order and a cursor
//! (the last sequence number a device has seen) can never skip a change (docs/PROTOCOL.md).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex, MutexGuard, RwLock};

use base64::Engine;
use gridwork_model::access::{case_scopes, may_change, CaseAccess, Scope, Subject, WriteDenied};
use gridwork_model::catalog::{Catalog, Category, Department, Grid, Role};
use gridwork_model::doc::keys;
use gridwork_model::geo::Location;
use gridwork_model::ids::{DeviceId, GridId, UserId};
use gridwork_model::lifecycle::{fold, Event, EventKind};
use gridwork_model::wire::{
    BlobOwner, BlobStatus, EnrolRequest, EnrolResponse, ItemResult, Outcome, PulledDoc, SyncRequest, SyncResponse,
    PROTOCOL_VERSION,
};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior};
use sha2::{Digest, Sha256};

mod console;
pub(super) mod records;

use super::{Device, OperatorStats, SyncStore};
use crate::blobs::{Begun, BlobFiles, Writer};
use crate::error::{Result, ServerError};
use crate::ingest::{read_change, ChangeFacts};
use crate::places::Places;
use console::departments_column;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A device clock further than this from the server's is flagged on what it sends.
pub const MAX_CLOCK_SKEW_MS: i64 = 10 * 60 * 1000;

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

/// A joining document's history of at least this many changes is sent compacted (to devices
/// that accept it): below it, a saved document is not much smaller than the changes.
const COMPACT_FROM_CHANGES: usize = 32;

/// The most a history may inflate to for the server to compact it (compacting loads it whole);
/// a longer one goes as its changes.
const MAX_COMPACT_INPUT: usize = 8 * 1024 * 1024;

/// Reader connections kept open between syncs.
const MAX_READERS: usize = 64;

/// Memberships (documents joining the device's view) and changes one pull reads past its cursor:
/// a pull's memory is bounded whatever its scope holds; the device is told there is more.
const MAX_PULL_JOIN_ROWS: usize = 2_000;
const MAX_PULL_CHANGE_ROWS: usize = 20_000;

/// Whole documents one sync request may ask for; the device asks for the rest on its next round.
const MAX_WANT_FULL: usize = 100;

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

/// How many of `deps` are not applied on the server yet. Storage errors propagate: a failed
/// lookup must not read as "missing".
fn missing_deps<'a>(conn: &Connection, deps: impl IntoIterator<Item = &'a str>) -> Result<usize> {
    let mut missing = 0;
    for d in deps {
        if q1(conn, "SELECT 1 FROM changes WHERE hash = ?1", [d], |_| Ok(())).optional()?.is_none() {
            missing += 1;
        }
    }
    Ok(missing)
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

    /// The reference data devices receive now.
    pub fn current_catalog(&self) -> Arc<Catalog> {
        self.catalog()
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

    /// Replaces the reference data and bumps the catalog version.
    pub fn import_catalog(&self, catalog: &Catalog) -> Result<u64> {
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
    pub fn set_user(&self, user: &str, role: Role, department: Option<&str>, scopes: &[String]) -> Result<()> {
        for s in scopes {
            let valid =
                ["grid:", "community:", "street:", "department:"].iter().any(|p| s.starts_with(p) && s.len() > p.len());
            if !valid {
                return Err(ServerError::BadRequest(format!(
                    "scope {s:?}: use grid:ID, community:NAME, street:NAME or department:ID"
                )));
            }
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
        let wanted: BTreeSet<String> = scopes.iter().cloned().collect();
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
    pub fn enrol_device(&self, user: &str, now_ms: i64) -> Result<(String, String)> {
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
    pub fn retire_device(&self, device: &str, now_ms: i64) -> Result<()> {
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
    pub fn revoke_device(&self, device: &str) -> Result<()> {
        let n = self.conn().execute("UPDATE devices SET status = 'revoked' WHERE id = ?1", [device])?;
        if n == 0 {
            return Err(ServerError::NotFound(format!("device {device}")));
        }
        Ok(())
    }

    /// Every device, the one sitting longest on unsynced work first.
    pub fn list_devices(&self, now_ms: i64) -> Result<Vec<DeviceInfo>> {
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

    pub fn quarantined(&self) -> Result<Vec<QuarantinedItem>> {
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
    pub fn counts(&self) -> Result<(i64, i64, i64)> {
        let conn = self.conn();
        let c = conn.query_row("SELECT count(*) FROM changes", [], |r| r.get(0))?;
        let d = conn.query_row("SELECT count(*) FROM docs", [], |r| r.get(0))?;
        let r = conn.query_row("SELECT count(*) FROM records", [], |r| r.get(0))?;
        Ok((c, d, r))
    }

    /// Current heads of a document as the server holds it (loads it: for tests and tools only).
    pub fn doc_heads(&self, doc_id: &str) -> Result<Vec<String>> {
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

    /// Every scope a device of `user` sees, with when it was granted.
    fn device_scopes(tx: &Connection, device: &Device) -> Result<BTreeMap<String, i64>> {
        let mut scopes: BTreeMap<String, i64> = tx
            .prepare_cached("SELECT scope, min(granted_seq) FROM user_areas WHERE user_id = ?1 GROUP BY scope")?
            .query_map([&device.user], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        scopes.insert(format!("user:{}", device.user), 0);
        Ok(scopes)
    }

    /// Stores one pushed change. Returns its outcome and, when applied, (seq, doc id).
    fn ingest_change(
        &self,
        tx: &Transaction<'_>,
        device: &Device,
        pushed: &Pushed,
        now: i64,
        own_actors: &mut BTreeSet<String>,
        touched: &mut HashMap<String, Touched>,
    ) -> Result<ItemResult> {
        let (doc_id, bytes) = (pushed.doc.as_str(), pushed.bytes.as_slice());
        let facts = match &pushed.facts {
            Ok(f) => f,
            Err(reason) => {
                return Ok(ItemResult {
                    key: sha256_hex(&B64.encode(bytes)),
                    outcome: Outcome::Refused,
                    reason: Some(reason.clone()),
                    receipt: None,
                })
            }
        };
        let key = facts.hash.clone();
        // Known already? One statement for the three places a change can be (and, when applied,
        // its document and the device it is attributed to, for the receipt).
        #[allow(clippy::type_complexity)]
        let (owner_doc, parked, quarantined): (Option<(String, String)>, bool, Option<(String, String)>) = q1(
            tx,
            "SELECT (SELECT device_id FROM changes WHERE hash = ?1), (SELECT doc_id FROM changes WHERE hash = ?1),
                    EXISTS (SELECT 1 FROM parked WHERE hash = ?1),
                    (SELECT status FROM quarantine WHERE hash = ?1), (SELECT device_id FROM quarantine WHERE hash = ?1)",
            [&key],
            |r| {
                let owner: Option<String> = r.get(0)?;
                let doc: Option<String> = r.get(1)?;
                let status: Option<String> = r.get(3)?;
                let by: Option<String> = r.get(4)?;
                Ok((owner.zip(doc), r.get(2)?, status.zip(by)))
            },
        )?;
        if let Some((owner, stored_doc)) = owner_doc {
            // A receipt is the server's word that it applied these bytes to this document: never
            // for another document the push names.
            let receipt = (stored_doc == doc_id).then(|| self.receipts.issue(doc_id, &key, &owner));
            return Ok(ItemResult { key, outcome: Outcome::Accepted, reason: None, receipt });
        }
        if parked {
            // Stored, waiting for its dependencies, and not checked yet: no receipt until applied.
            return Ok(ItemResult { key, outcome: Outcome::Accepted, reason: None, receipt: None });
        }
        // Quarantined before: the same verdict for the device that sent it then, and for bytes an
        // administrator rejected. Another device's push of the same bytes (their author's, say,
        // after someone else pushed them first) is judged on its own, and if it is accepted the
        // quarantine row is marked released: else whoever pushed a change first, without the
        // right to, would hold its author's work in quarantine.
        let pending_from_another = match &quarantined {
            Some((status, by)) if status == "pending" && by != &device.id => true,
            Some(_) => {
                let reason = Some("already quarantined".into());
                return Ok(ItemResult { key, outcome: Outcome::Quarantined, reason, receipt: None });
            }
            None => false,
        };
        // A relay: another device's change offered again (after a restore) with the server's
        // receipt for it. It goes in as its owner's, and is not checked against the owner's scope
        // again (`Vouch::Receipt`); anything else is the pushing device's own.
        let verified = pushed.receipt.as_deref().and_then(|t| self.receipts.verify(doc_id, &key, t));
        let relayed_from: Option<Device> = match verified {
            Some(r) if r.owner != device.id => match load_device_by_id(tx, &r.owner) {
                Ok(owner) => Some(owner),
                Err(_) if r.owner.starts_with("console-") => {
                    match console::console_device_again(tx, &self.epoch, &r.owner, now)? {
                        Some(owner) => Some(owner),
                        None => {
                            let reason =
                                format!("relayed change of {}, a console user this server does not know", r.owner);
                            return self.quarantine(tx, &key, doc_id, device, now, &reason, bytes);
                        }
                    }
                }
                Err(_) => {
                    let reason = format!("relayed change of device {}, which this server does not know", r.owner);
                    return self.quarantine(tx, &key, doc_id, device, now, &reason, bytes);
                }
            },
            _ => None,
        };
        let relayed = relayed_from.is_some();
        let author: &Device = relayed_from.as_ref().unwrap_or(device);
        // Every actor belongs to exactly one device (looked up once per actor and push). A new
        // actor is registered only once its change is stored: a change that is refused or
        // quarantined claims nothing (else a relay without its receipt could take another
        // device's actor after a restore, and every later change of the owner would be
        // quarantined).
        let owner: Option<String> = if !relayed && own_actors.contains(&facts.actor) {
            Some(device.id.clone())
        } else {
            q1(tx, "SELECT device_id FROM actors WHERE actor = ?1", [&facts.actor], |r| r.get(0)).optional()?
        };
        let new_actor = match owner {
            None => true,
            Some(o) if o != author.id => {
                let reason = match &relayed_from {
                    Some(a) => {
                        format!("the change's actor belongs to another device than {}, whose receipt it carries", a.id)
                    }
                    None => "the change's actor belongs to another device".to_owned(),
                };
                return self.quarantine(tx, &key, doc_id, device, now, &reason, bytes);
            }
            Some(_) => false,
        };
        let register = |tx: &Transaction<'_>, own_actors: &mut BTreeSet<String>| -> Result<()> {
            if new_actor {
                exec(
                    tx,
                    "INSERT INTO actors (actor, device_id, first_seen_ms) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                    params![facts.actor, author.id, now],
                )?;
            }
            if !relayed {
                own_actors.insert(facts.actor.clone());
            }
            Ok(())
        };
        // That the change belongs to the document it is filed under was checked when it was read
        // (`ingest::read_pushed`).
        let mut missing = 0;
        for dep in &facts.deps {
            let dep_doc: Option<String> =
                q1(tx, "SELECT doc_id FROM changes WHERE hash = ?1", [dep], |r| r.get(0)).optional()?;
            match dep_doc {
                None => missing += 1,
                Some(d) if d != doc_id => {
                    return Ok(ItemResult {
                        key,
                        outcome: Outcome::Refused,
                        reason: Some(format!("change depends on another document than {doc_id}")),
                        receipt: None,
                    });
                }
                Some(_) => {}
            }
        }
        let vouch = if relayed { Vouch::Receipt } else { Vouch::None };
        if missing > 0 {
            exec(tx,
                "INSERT INTO parked (hash, doc_id, device_id, received_ms, deps, bytes, vouched) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![key, doc_id, author.id, now, facts.deps.join(","), bytes, relayed],
            )?;
            register(tx, own_actors)?;
            if pending_from_another {
                exec(tx, "UPDATE quarantine SET status = 'released' WHERE hash = ?1", [&key])?;
            }
            return Ok(ItemResult {
                key,
                outcome: Outcome::Accepted,
                reason: Some(format!("stored; waiting for {missing} earlier change(s)")),
                receipt: None,
            });
        }
        let mut result = self.apply(tx, author, doc_id, facts, bytes, vouch, now, touched)?;
        if result.outcome == Outcome::Accepted {
            register(tx, own_actors)?;
            result.receipt = Some(self.receipts.issue(doc_id, &key, &author.id));
        }
        if pending_from_another && result.outcome == Outcome::Accepted {
            exec(tx, "UPDATE quarantine SET status = 'released' WHERE hash = ?1", [&key])?;
        }
        Ok(result)
    }

    // The push context (transaction, device, clock) travels as arguments; a context struct is due
    // when the PostgreSQL store shares this code.
    #[allow(clippy::too_many_arguments)]
    fn quarantine(
        &self,
        tx: &Transaction<'_>,
        key: &str,
        doc_id: &str,
        device: &Device,
        now: i64,
        reason: &str,
        bytes: &[u8],
    ) -> Result<ItemResult> {
        self.quarantine_told(tx, key, doc_id, device, now, reason, reason, bytes)
    }

    /// Quarantines an item, keeping `reason` for the administrator and telling the device `told`
    /// (which says nothing of the case it could not see).
    #[allow(clippy::too_many_arguments)]
    fn quarantine_told(
        &self,
        tx: &Transaction<'_>,
        key: &str,
        doc_id: &str,
        device: &Device,
        now: i64,
        reason: &str,
        told: &str,
        bytes: &[u8],
    ) -> Result<ItemResult> {
        exec(tx,
            "INSERT INTO quarantine (hash, doc_id, device_id, received_ms, reason, bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
            params![key, doc_id, device.id, now, reason, bytes],
        )?;
        Ok(ItemResult {
            key: key.to_owned(),
            outcome: Outcome::Quarantined,
            reason: Some(told.to_owned()),
            receipt: None,
        })
    }

    /// The one write-authorization rule (`gridwork_model::access::may_change`) with what the
    /// server knows when the change arrives: the case's membership, the device that created it,
    /// and the scopes the device's user holds now. A change to a case the server does not hold
    /// yet creates it, and a device may always create a case (its reporter scope then covers it).
    fn authorize(
        &self,
        tx: &Transaction<'_>,
        device: &Device,
        doc_id: &str,
        touched: &HashMap<String, Touched>,
    ) -> Result<std::result::Result<(), WriteDenied>> {
        if touched.get(doc_id).is_some_and(|t| t.authorized.contains(&device.id)) {
            return Ok(Ok(())); // an earlier change of this push to the same case was allowed
        }
        let Some(access) = case_access(tx, doc_id)? else { return Ok(Ok(())) };
        Ok(may_change(&subject(tx, device)?, &access))
    }

    /// What the administrator reads in the quarantine for a change refused for its scope: the
    /// rule's verdict, and whether it looks like work done before the user lost the case's scope
    /// (it builds only on changes the server had when the scope was taken away — a worker moved
    /// to another grid syncing late) or like an attack (it builds on what the user never held).
    fn explain_denial(
        &self,
        tx: &Transaction<'_>,
        device: &Device,
        facts: &ChangeFacts,
        denied: &WriteDenied,
    ) -> Result<String> {
        let WriteDenied::OutOfScope { case_scopes, .. } = denied;
        // When the user last lost a scope the case belongs to: a scope taken away, a community or
        // street taken away with its grids, or a grid moved out of one of the user's areas.
        let mut lost: Option<(String, i64)> = None;
        let removed: Vec<(String, i64)> = tx
            .prepare_cached(
                "SELECT scope, removed_seq FROM user_scopes_removed WHERE user_id = ?1
                 UNION ALL SELECT 'grid:' || p.grid_id, r.removed_seq FROM user_scopes_removed r
                     JOIN grid_placements p ON p.scope = r.scope AND p.from_seq <= r.removed_seq
                         AND (p.to_seq IS NULL OR p.to_seq >= r.removed_seq)
                     WHERE r.user_id = ?1
                 UNION ALL SELECT 'grid:' || p.grid_id, p.to_seq FROM user_scopes s
                     JOIN grid_placements p ON p.scope = s.scope WHERE s.user_id = ?1 AND p.to_seq IS NOT NULL",
            )?
            .query_map([&device.user], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (scope, at) in removed {
            if case_scopes.contains(&scope) && lost.as_ref().is_none_or(|(_, a)| at > *a) {
                lost = Some((scope, at));
            }
        }
        let mut built_on = 0i64;
        for d in &facts.deps {
            let seq: Option<i64> = q1(tx, "SELECT seq FROM changes WHERE hash = ?1", [d], |r| r.get(0)).optional()?;
            built_on = built_on.max(seq.unwrap_or(i64::MAX));
        }
        Ok(match lost {
            // A change that builds on nothing cannot be work on the case as its author saw it.
            Some((scope, at)) if built_on <= at && !facts.deps.is_empty() => format!(
                "late change: {denied}. {} held {scope} until sequence {at}, and this change builds only on what \
                 the server had then: work done offline before the move — release it if it is genuine",
                device.user
            ),
            Some((scope, at)) => format!(
                "out of scope: {denied}. {} lost {scope} at sequence {at}, and this change builds on later changes",
                device.user
            ),
            None => format!("out of scope: {denied}"),
        })
    }

    /// Applies a change whose dependencies are all present: attribution checks, then a sequence
    /// number and the server's view of the case.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        tx: &Transaction<'_>,
        device: &Device,
        doc_id: &str,
        facts: &ChangeFacts,
        bytes: &[u8],
        vouch: Vouch,
        now: i64,
        touched: &mut HashMap<String, Touched>,
    ) -> Result<ItemResult> {
        let released = vouch == Vouch::Administrator;
        let key = facts.hash.clone();
        // Allowed by the device's role and scope (model::access): checked before anything else,
        // so a change that is not allowed stores nothing but its quarantine row.
        if vouch == Vouch::None {
            if let Err(denied) = self.authorize(tx, device, doc_id, touched)? {
                let reason = self.explain_denial(tx, device, facts, &denied)?;
                return self.quarantine_told(tx, &key, doc_id, device, now, &reason, OUT_OF_SCOPE_TOLD, bytes);
            }
        }
        // Where the case's events live: this change, an earlier change of this push, or the store.
        let earlier = touched.get(doc_id).and_then(|t| t.events_obj.clone());
        let known = match earlier {
            Some(o) => Some(o),
            None => {
                q1(tx, "SELECT events_obj FROM docs WHERE doc_id = ?1", [doc_id], |r| r.get::<_, Option<String>>(0))
                    .optional()?
                    .flatten()
            }
        };
        let events_obj: Option<String> = match (&facts.events_obj_created, known) {
            // A second `events` map would hide the case's history behind one the server never
            // checked (Automerge picks one of two concurrent maps): no replica makes one.
            (Some(new), Some(old)) if *new != old && !released => {
                let reason = "the change replaces the case's events map: its events could not be attributed";
                return self.quarantine(tx, &key, doc_id, device, now, reason, bytes);
            }
            (Some(o), _) => Some(o.clone()),
            (None, known) => known,
        };
        let mut events = vec![];
        if let Some(obj) = &events_obj {
            for e in facts.events(obj) {
                match e {
                    Err(_) if released => {}
                    Err(reason) => return self.quarantine(tx, &key, doc_id, device, now, &reason, bytes),
                    Ok((e, raw)) => {
                        let a = &e.actor;
                        if !released && (a.device.0 != device.id || a.user.0 != device.user || a.role != device.role) {
                            let reason = format!(
                                "event claims user {} as {:?} on {}, but the device is enrolled for {} as {:?}",
                                a.user, a.role, a.device, device.user, device.role
                            );
                            return self.quarantine(tx, &key, doc_id, device, now, &reason, bytes);
                        }
                        events.push((e, raw));
                    }
                }
            }
        }
        // Every actor it names must be in the case's history already (schema 8), released or not:
        // an administrator vouches for who may change a case, not for Automerge's invariants.
        if let Some(reason) = unknown_actor(tx, doc_id, facts)? {
            return self.quarantine(tx, &key, doc_id, device, now, &reason, bytes);
        }
        let seq = self.next_seq(tx)?;
        exec(
            tx,
            "INSERT INTO changes (seq, hash, doc_id, device_id, received_ms, bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![seq, key, doc_id, device.id, now, bytes],
        )?;
        // Stored as the change holds it: it parsed to this event above.
        for (e, raw) in &events {
            exec(
                tx,
                "INSERT INTO doc_events (doc_id, event_id, json) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                params![doc_id, e.id.to_string(), raw],
            )?;
        }
        // The docs row is written once per case and push, in `refresh_doc`.
        let t = touched.entry(doc_id.to_owned()).or_default();
        // A released change vouches for itself only: the device's other changes to the case
        // (parked ones that build on it) still face the rule.
        if vouch == Vouch::None {
            t.authorized.insert(device.id.clone());
        }
        t.seqs.push(seq);
        if t.events_obj.is_none() {
            t.events_obj = events_obj;
        }
        t.new_events.extend(events.into_iter().map(|(e, _)| e));
        for (k, v) in &facts.root_puts {
            match k.as_str() {
                keys::GRID => {
                    t.grids.insert(v.clone());
                    t.fields.grid = Some(v.clone());
                }
                keys::CATEGORY => t.fields.category = Some(v.clone()),
                keys::TITLE => t.fields.title = Some(v.clone()),
                keys::CODE => t.fields.code = Some(v.clone()),
                keys::REPORTER => t.fields.reporter = Some(v.clone()),
                keys::LOCATION => {
                    if let Ok(loc) = serde_json::from_str::<Location>(v) {
                        t.locations.push((loc.lat, loc.lon));
                        t.fields.position = Some((loc.lat, loc.lon));
                    }
                }
                _ => {}
            }
        }
        Ok(ItemResult { key, outcome: Outcome::Accepted, reason: None, receipt: None })
    }

    /// Applies parked changes whose dependencies have arrived, until none is left to apply.
    /// A change depends only on changes of its own document, so only the documents this push
    /// touched can have become complete: parked changes of other documents are not read.
    fn unpark(&self, tx: &Transaction<'_>, now: i64, touched: &mut HashMap<String, Touched>) -> Result<()> {
        // Almost always nothing is parked: one cheap look instead of one per document.
        if !q1(tx, "SELECT EXISTS (SELECT 1 FROM parked)", [], |r| r.get::<_, bool>(0))? {
            return Ok(());
        }
        let mut docs: Vec<String> = touched.keys().cloned().collect();
        while let Some(doc_id) = docs.pop() {
            loop {
                let parked: Vec<(String, String, String, Vec<u8>, bool)> = tx
                    .prepare_cached(
                        "SELECT hash, device_id, deps, bytes, vouched FROM parked WHERE doc_id = ?1 ORDER BY received_ms, hash",
                    )?
                    .query_map([&doc_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                let mut progressed = false;
                for (hash, device_id, deps, bytes, vouched) in parked {
                    if missing_deps(tx, deps.split(',').filter(|d| !d.is_empty()))? > 0 {
                        continue;
                    }
                    let device = load_device_by_id(tx, &device_id)?;
                    let Ok((_, facts)) = read_change(&bytes) else { continue };
                    exec(tx, "DELETE FROM parked WHERE hash = ?1", [&hash])?;
                    let vouch = if vouched { Vouch::Receipt } else { Vouch::None };
                    self.apply(tx, &device, &doc_id, &facts, &bytes, vouch, now, touched)?;
                    progressed = true;
                }
                if !progressed {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Recomputes a touched case's status and the scopes it belongs to (grow-only), and records
    /// which scopes saw each of its new changes.
    fn refresh_doc(&self, tx: &Transaction<'_>, doc_id: &str, t: &Touched) -> Result<()> {
        let places = self.places();
        let catalog = places.catalog();
        // What the row holds now, read once: the fields this push did not set keep their values.
        // No row: the case is new in this push, and its events are the ones the push added.
        let stored: Option<(Option<String>, String, Option<i64>)> =
            q1(tx, "SELECT category_id, flags, reported_ms FROM docs WHERE doc_id = ?1", [doc_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let existed = stored.is_some();
        let (stored_category, existing_flags, stored_reported) = stored.unwrap_or_default();
        let events: Vec<Event> = if existed {
            tx.prepare_cached("SELECT json FROM doc_events WHERE doc_id = ?1")?
                .query_map([doc_id], |r| r.get::<_, String>(0))?
                .filter_map(|j| j.ok().and_then(|j| serde_json::from_str(&j).ok()))
                .collect()
        } else {
            t.new_events.clone()
        };
        let reported_ms = events.iter().find(|e| matches!(e.kind, EventKind::Report)).map(|e| e.clock.estimated_ms());
        let state = fold(events).state;
        let mut flags = vec![];
        if t.clock_skew {
            flags.push("device_clock_skew");
        }
        let mut grids: BTreeSet<String> = t.grids.clone();
        // A case reported outside its grid is routed to the grid it lies in, and flagged.
        for (lat, lon) in &t.locations {
            if let Some(g) = places.grid_at(*lat, *lon) {
                if !t.grids.is_empty() && !t.grids.contains(&g.id.0) {
                    flags.push("outside_grid");
                }
                grids.insert(g.id.0.clone());
            }
        }
        let category = t.fields.category.clone().or(stored_category);
        if let Some(c) = category {
            // A category retired since is flagged, never refused.
            match catalog.categories.iter().find(|k| k.id.0 == c) {
                Some(k) if k.retired => flags.push("retired_category"),
                None if !catalog.categories.is_empty() => flags.push("unknown_category"),
                _ => {}
            }
        }
        // The case's scopes, by the rule the phone applies too (model::access); a grid's community
        // and street see its cases through `grid_placements` (schema 6).
        let grid_ids: Vec<GridId> = grids.iter().map(|g| GridId::from(g.as_str())).collect();
        let scopes: BTreeSet<String> = case_scopes(&grid_ids, &state).iter().map(Scope::to_string).collect();
        let at = t.seqs.iter().copied().max().unwrap_or(0);
        let status = state.status.label();
        // Each membership row carries the case's status (the console counts by it).
        for s in &scopes {
            exec(
                tx,
                "INSERT INTO membership (doc_id, scope, joined_seq, status) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                params![doc_id, s, at, status],
            )?;
        }
        if existed {
            tx.prepare_cached("UPDATE membership SET status = ?2 WHERE doc_id = ?1 AND status != ?2")?
                .execute(params![doc_id, status])?;
            // A change is listed under each scope the case was already in. Under a scope it joined
            // at or after the change, the pull sends the case's whole history instead (the join
            // covers it), so no row is written: a new case costs no scope_changes rows at all.
            let joined: Vec<(String, i64)> = tx
                .prepare_cached("SELECT scope, joined_seq FROM membership WHERE doc_id = ?1")?
                .query_map([doc_id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            for seq in &t.seqs {
                for (s, _) in joined.iter().filter(|(_, j)| seq > j) {
                    exec(
                        tx,
                        "INSERT INTO scope_changes (scope, seq, doc_id) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                        params![s, seq, doc_id],
                    )?;
                }
            }
        }
        let mut all_flags: BTreeSet<&str> = existing_flags.split(',').filter(|f| !f.is_empty()).collect();
        all_flags.extend(flags);
        let reported_ms = reported_ms.or(stored_reported);
        let f = &t.fields;
        // One write per case and push: every docs index is touched once.
        exec(
            tx,
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
                doc_id,
                status,
                state.deadline_ms,
                all_flags.into_iter().collect::<Vec<_>>().join(","),
                departments_column(state.dispatched.keys().map(|d| d.0.as_str())),
                reported_ms,
                crate::store::console::queue_key(state.deadline_ms, reported_ms, doc_id),
                f.grid,
                f.category,
                f.title,
                f.code,
                f.reporter,
                f.position.map(|p| p.0),
                f.position.map(|p| p.1),
                t.events_obj,
                at,
            ],
        )?;
        Ok(())
    }

    /// What is new in the device's scope since `cursor`, up to about `budget` bytes.
    fn pull(
        &self,
        conn: &Connection,
        device: &Device,
        from: &Position,
        budget: u64,
        accept_compacted: bool,
    ) -> Result<(Vec<PulledDoc>, Vec<String>, Position, bool)> {
        let cursor = from.seq;
        let scopes = Self::device_scopes(conn, device)?;
        let head = last_seq(conn)?;
        if scopes.is_empty() {
            return Ok((vec![], vec![], Position::at(head), false));
        }
        let names: Vec<&String> = scopes.keys().collect();
        let placeholders = (0..names.len()).map(|i| format!("?{}", i + 2)).collect::<Vec<_>>().join(",");
        let mut args: Vec<&dyn rusqlite::ToSql> = vec![&cursor];
        args.extend(names.iter().map(|n| *n as &dyn rusqlite::ToSql));

        // What a pull reads is bounded whatever the scope holds (docs/SECURITY.md, "Bounded
        // resources"): at most MAX_PULL_JOIN_ROWS memberships and MAX_PULL_CHANGE_ROWS changes
        // after the cursor, in sequence order. When either is cut, `horizon` is the last sequence
        // number read in full, the walk stops there and the device is told there is more.
        let mut horizon = i64::MAX;

        // Documents that entered the device's view after the cursor: their whole history is due,
        // unless every change of theirs came from this device (its own new cases, right after
        // it pushed them), which this query leaves out at once.
        let device_arg = names.len() + 2;
        let limit = MAX_PULL_JOIN_ROWS as i64;
        let mut own_args = args.clone();
        own_args.push(&device.id);
        own_args.push(&limit);
        let joined_rows = |extra: &str, args: &[&dyn rusqlite::ToSql]| -> Result<Vec<(String, i64)>> {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT m.doc_id, m.joined_seq FROM membership m WHERE m.joined_seq > ?1 AND m.scope IN ({placeholders})
                     AND EXISTS (SELECT 1 FROM changes c WHERE c.doc_id = m.doc_id AND c.device_id != ?{device_arg}) {extra}"
                ))?
                .query_map(rusqlite::params_from_iter(args.iter()), |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?)
        };
        let mut rows = joined_rows(&format!("ORDER BY m.joined_seq LIMIT ?{}", device_arg + 1), &own_args)?;
        if rows.len() == MAX_PULL_JOIN_ROWS {
            let last = rows.last().map_or(cursor, |r| r.1);
            if last - 1 > cursor {
                horizon = last - 1;
                rows.retain(|r| r.1 <= horizon);
            } else {
                // Every row read joined at one sequence number: that one is read whole (the walk
                // below splits it across pages if it must).
                horizon = last;
                let mut at_args = own_args[..own_args.len() - 1].to_vec();
                at_args.push(&last);
                rows.extend(joined_rows(&format!("AND m.joined_seq = ?{}", device_arg + 1), &at_args)?);
            }
        }
        let mut candidates: BTreeSet<String> = rows.into_iter().map(|r| r.0).collect();
        // A scope granted after the cursor brings the documents it held then, all at the sequence
        // number of the grant (later ones joined it after, and are read above).
        for (scope, granted) in &scopes {
            if *granted > cursor && *granted <= horizon {
                let docs: Vec<String> = conn
                    .prepare_cached("SELECT doc_id FROM membership WHERE scope = ?1 AND joined_seq <= ?2")?
                    .query_map(params![scope, granted], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                candidates.extend(docs);
            }
        }
        let mut joins: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        let mut join_at: HashMap<String, i64> = HashMap::new();
        for doc in candidates {
            let rows: Vec<(String, i64)> = conn
                .prepare_cached("SELECT scope, joined_seq FROM membership WHERE doc_id = ?1")?
                .query_map([&doc], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let effective = rows.iter().filter_map(|(s, j)| scopes.get(s).map(|g| (*j).max(*g))).min();
            let Some(e) = effective.filter(|e| *e > cursor && *e <= horizon) else { continue };
            // Sent already, in the first part of a sequence number split across pages.
            if e == cursor + 1 && from.after.as_ref().is_some_and(|a| doc <= *a) {
                join_at.insert(doc, e);
                continue;
            }
            joins.entry(e).or_default().push(doc.clone());
            join_at.insert(doc, e);
        }
        // Changes to documents already in view.
        let mut change_args = args.clone();
        let change_limit = MAX_PULL_CHANGE_ROWS as i64;
        change_args.push(&change_limit);
        let mut changes: Vec<(i64, String)> = conn
            .prepare_cached(&format!(
                "SELECT DISTINCT seq, doc_id FROM scope_changes WHERE seq > ?1 AND scope IN ({placeholders})
                 ORDER BY seq LIMIT ?{}",
                names.len() + 2
            ))?
            .query_map(rusqlite::params_from_iter(change_args.iter()), |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        if changes.len() == MAX_PULL_CHANGE_ROWS {
            // One change per sequence number: everything up to the last one read is read.
            horizon = horizon.min(changes.last().map_or(cursor, |c| c.0));
        }
        changes.retain(|c| c.0 <= horizon);
        joins.retain(|s, _| *s <= horizon);

        // Walk both in sequence order until the byte budget is spent.
        let mut items: Vec<(i64, String, bool)> = changes.into_iter().map(|(s, d)| (s, d, false)).collect();
        for (s, docs) in &joins {
            items.extend(docs.iter().map(|d| (*s, d.clone(), true)));
        }
        // Within a sequence number, documents that joined come first, by id: that is the order a
        // page split inside one sequence number resumes from (`Position::after`).
        items.sort_by(|a, b| (a.0, !a.2, &a.1).cmp(&(b.0, !b.2, &b.1)));
        let mut out: Vec<PulledDoc> = vec![];
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut add = |out: &mut Vec<PulledDoc>, Pulled { doc, changes: bytes, compacted, receipts }: Pulled| {
            let slot = *index.entry(doc.clone()).or_insert_with(|| {
                out.push(PulledDoc { doc: doc.clone(), changes: vec![], compacted: None, receipts: vec![] });
                out.len() - 1
            });
            if let Some(c) = compacted {
                out[slot].compacted = Some(B64.encode(c));
            }
            out[slot].changes.extend(bytes.iter().map(|b| B64.encode(b)));
            out[slot].receipts.extend(receipts);
        };
        let mut used = 0u64;
        let mut to = from.clone();
        let mut more = false;
        let mut i = 0;
        'walk: while i < items.len() {
            let seq = items[i].0;
            // Items sharing a sequence number go together, so the cursor never splits them,
            // except a run of documents joining at one sequence number that does not fit one page:
            // it is split after a document, and the cursor says which (`Position::after`).
            let mut group: Vec<Pulled> = vec![];
            let mut size = 0u64;
            let mut last_join: Option<String> = None;
            while i < items.len() && items[i].0 == seq {
                let (s, doc, is_join) = items[i].clone();
                i += 1;
                let Some(p) = self.pulled(conn, device, s, &doc, is_join, &join_at, accept_compacted)? else {
                    continue;
                };
                let cost = p.cost();
                if used + size > 0 && used + size + cost > budget {
                    more = true;
                    if let Some(after) = last_join.filter(|_| !group.is_empty()) {
                        // Only joins come before this item in its sequence number: send those.
                        for p in group {
                            add(&mut out, p);
                        }
                        to = Position { seq: seq - 1, after: Some(after) };
                    }
                    break 'walk;
                }
                size += cost;
                if is_join {
                    last_join = Some(doc);
                }
                group.push(p);
            }
            used += size;
            for p in group {
                add(&mut out, p);
            }
            to = Position::at(seq);
        }
        if !more {
            if horizon < i64::MAX {
                to = Position::at(horizon);
                more = true;
            } else {
                to = Position::at(to.seq.max(head));
            }
        }
        // Documents that left the device's view: in a scope the user lost, and in no scope kept.
        // A community or street stands for the grids placed in it (ever: whichever of them the
        // device still sees is kept below); a grid that left one of the user's communities or
        // streets since the cursor is a scope lost too.
        let removed: BTreeSet<String> = conn
            .prepare_cached(
                "SELECT scope FROM user_scopes_removed WHERE user_id = ?1 AND removed_seq > ?2
                 UNION SELECT 'grid:' || p.grid_id FROM user_scopes_removed r JOIN grid_placements p ON p.scope = r.scope
                     WHERE r.user_id = ?1 AND r.removed_seq > ?2
                 UNION SELECT 'grid:' || p.grid_id FROM user_scopes s JOIN grid_placements p ON p.scope = s.scope
                     WHERE s.user_id = ?1 AND p.to_seq > ?2",
            )?
            .query_map(params![device.user, cursor], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut left = BTreeSet::new();
        for scope in removed {
            let docs: Vec<String> = conn
                .prepare_cached("SELECT doc_id FROM membership WHERE scope = ?1")?
                .query_map([&scope], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for d in docs {
                let still: Vec<String> = conn
                    .prepare_cached("SELECT scope FROM membership WHERE doc_id = ?1")?
                    .query_map([&d], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                if !still.iter().any(|s| scopes.contains_key(s)) {
                    left.insert(d);
                }
            }
        }
        Ok((out, left.into_iter().collect(), to, more))
    }

    /// What one item of a pull sends (None: nothing, the device made it all or a join covers it).
    /// A device is never sent its own changes back: it made them, and an enrolled device's store
    /// outlives its token (a reinstall enrols a new device).
    #[allow(clippy::too_many_arguments)]
    fn pulled(
        &self,
        conn: &Connection,
        device: &Device,
        s: i64,
        doc: &str,
        is_join: bool,
        join_at: &HashMap<String, i64>,
        accept_compacted: bool,
    ) -> Result<Option<Pulled>> {
        // (bytes, hash, owner device) of each change sent.
        let rows: Vec<(Vec<u8>, String, String)> = if is_join {
            let others: i64 = conn
                .prepare_cached("SELECT count(*) FROM changes WHERE doc_id = ?1 AND seq <= ?2 AND device_id != ?3")?
                .query_row(params![doc, s, device.id], |r| r.get(0))?;
            if others == 0 {
                return Ok(None);
            }
            conn.prepare_cached(
                "SELECT bytes, hash, device_id FROM changes WHERE doc_id = ?1 AND seq <= ?2 ORDER BY seq",
            )?
            .query_map(params![doc, s], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?
        } else if join_at.get(doc).is_some_and(|j| s <= *j) {
            return Ok(None); // covered by the document's full history
        } else {
            conn.prepare_cached("SELECT bytes, hash, device_id FROM changes WHERE seq = ?1 AND device_id != ?2")?
                .query_map(params![s, device.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?
        };
        if rows.is_empty() {
            return Ok(None);
        }
        let receipts = rows.iter().map(|(_, hash, owner)| self.receipts.issue(doc, hash, owner)).collect();
        let bytes: Vec<Vec<u8>> = rows.into_iter().map(|(b, _, _)| b).collect();
        // A long history goes to a device far behind as one compacted document.
        // Not a history that inflates past MAX_COMPACT_INPUT: compacting loads all of it.
        let compacted = (is_join && accept_compacted && bytes.len() >= COMPACT_FROM_CHANGES)
            .then(|| crate::ingest::compact_within(&bytes, MAX_COMPACT_INPUT))
            .flatten();
        Ok(Some(match compacted {
            Some(c) => Pulled { doc: doc.to_owned(), changes: vec![], compacted: Some(c), receipts },
            None => Pulled { doc: doc.to_owned(), changes: bytes, compacted: None, receipts },
        }))
    }

    /// Adds the whole history of each document the device asked for (`want_full`) and may see.
    /// Outside the cursor: the device holds part of the document and lacks what it builds on
    /// (see core::store::retention), so its own changes are sent too, and the cursor does not
    /// move for them. Duplicates are harmless: the device stores a change once by its hash.
    fn add_whole_documents(
        &self,
        conn: &Connection,
        device: &Device,
        wanted: &[String],
        budget: u64,
        out: &mut Vec<PulledDoc>,
    ) -> Result<()> {
        if wanted.is_empty() {
            return Ok(());
        }
        let scopes = Self::device_scopes(conn, device)?;
        // Within the pull's byte budget, like the rest of the response: what does not fit the
        // device asks for again on its next sync.
        let mut used: u64 =
            out.iter().flat_map(|d| d.changes.iter().chain(d.compacted.iter())).map(|c| c.len() as u64).sum();
        for doc in wanted.iter().take(MAX_WANT_FULL) {
            if used >= budget {
                break;
            }
            let in_scope = conn
                .prepare_cached("SELECT scope FROM membership WHERE doc_id = ?1")?
                .query_map([doc], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?
                .iter()
                .any(|s| scopes.contains_key(s));
            if !in_scope {
                continue;
            }
            let rows: Vec<(Vec<u8>, String, String)> = conn
                .prepare_cached("SELECT bytes, hash, device_id FROM changes WHERE doc_id = ?1 ORDER BY seq")?
                .query_map([doc], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            used += rows.iter().map(|(b, _, _)| b.len() as u64 * 4 / 3 + 4).sum::<u64>();
            let encoded = rows.iter().map(|(b, _, _)| B64.encode(b));
            let receipts = rows.iter().map(|(_, hash, owner)| self.receipts.issue(doc, hash, owner));
            match out.iter_mut().find(|d| &d.doc == doc) {
                Some(d) => {
                    d.changes.extend(encoded);
                    d.receipts.extend(receipts);
                }
                None => out.push(PulledDoc {
                    doc: doc.clone(),
                    changes: encoded.collect(),
                    compacted: None,
                    receipts: receipts.collect(),
                }),
            }
        }
        Ok(())
    }

    /// The sequence number a cursor stands for, and whether it is from another epoch (then the
    /// pull starts over and the device is asked to re-offer what it holds).
    ///
    /// A cursor this server cannot have issued — malformed, or in this epoch but past the last
    /// sequence number it ever committed — is refused with `CursorUnknown`: answering it would
    /// skip every change until the server caught up with it. The phone then starts over.
    fn parse_cursor(&self, cursor: Option<&str>) -> Result<(Position, bool)> {
        let Some(c) = cursor else { return Ok((Position::at(0), false)) };
        let unknown = || ServerError::CursorUnknown { cursor: c.chars().take(40).collect() };
        let mut parts = c.splitn(3, ':');
        let (Some(epoch), Some(seq)) = (parts.next(), parts.next()) else { return Err(unknown()) };
        let after = parts.next();
        let well_formed = |part: &str, max: usize, digit: fn(&char) -> bool| {
            !part.is_empty() && part.len() <= max && part.chars().all(|ch| digit(&ch))
        };
        if !well_formed(epoch, 16, char::is_ascii_hexdigit) || !well_formed(seq, 18, char::is_ascii_digit) {
            return Err(unknown());
        }
        // A split page names the last document it sent: a case id, as this server writes it.
        if let Some(a) = after {
            if gridwork_model::ids::CaseId::parse(a).map(|id| id.to_string() != a).unwrap_or(true) {
                return Err(unknown());
            }
        }
        let seq: i64 = seq.parse().map_err(|_| unknown())?;
        // A cursor from another epoch (a restored server) starts over from the beginning.
        if epoch != self.epoch {
            return Ok((Position::at(0), true));
        }
        let reader = self.reader()?;
        let head = last_seq(&reader);
        self.give_back(reader);
        let head = head?;
        // A split page is inside a sequence number the server has committed.
        if seq > head || (after.is_some() && seq >= head) {
            return Err(unknown());
        }
        Ok((Position { seq, after: after.map(str::to_owned) }, false))
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

/// What a sync changed about one document.
#[derive(Debug, Default)]
struct Touched {
    seqs: Vec<i64>,
    /// Devices whose changes to this case this push already found allowed.
    authorized: BTreeSet<String>,
    /// The sending device's clock was far from the server's.
    clock_skew: bool,
    grids: BTreeSet<String>,
    locations: Vec<(f64, f64)>,
    /// The case's `events` map, once known in this push.
    events_obj: Option<String>,
    /// Lifecycle events this push added.
    new_events: Vec<Event>,
    /// The case's root fields these changes set, latest last: written once, in `refresh_doc`.
    fields: CaseFields,
}

/// Root fields of a case the server keeps in `docs` (None: not set by this push).
#[derive(Debug, Default)]
struct CaseFields {
    grid: Option<String>,
    category: Option<String>,
    title: Option<String>,
    code: Option<String>,
    reporter: Option<String>,
    position: Option<(f64, f64)>,
}

/// What a device tells the device that sent a change refused for its scope: nothing of the case.
const OUT_OF_SCOPE_TOLD: &str =
    "not in your scope (any more): kept on the server for an administrator, who can release it";

/// The case's membership and the device that created it, as the write rule needs them; `None`
/// when the server holds no change of the case yet.
fn case_access(conn: &Connection, doc_id: &str) -> Result<Option<CaseAccess>> {
    let created_by: Option<String> =
        q1(conn, "SELECT device_id FROM changes WHERE doc_id = ?1 ORDER BY seq LIMIT 1", [doc_id], |r| r.get(0))
            .optional()?;
    let Some(created_by) = created_by else { return Ok(None) };
    let scopes = conn
        .prepare_cached("SELECT scope FROM membership WHERE doc_id = ?1")?
        .query_map([doc_id], |r| r.get::<_, String>(0))?
        .filter_map(|s| s.ok().and_then(|s| Scope::parse(&s).ok()))
        .collect();
    Ok(Some(CaseAccess { scopes, created_by: Some(DeviceId::from(created_by.as_str())) }))
}

/// The device as the write rule sees it: its user's role and the scopes the user holds now.
fn subject(conn: &Connection, device: &Device) -> Result<Subject> {
    let scopes = SqliteStore::device_scopes(conn, device)?;
    Ok(Subject::new(
        DeviceId::from(device.id.as_str()),
        UserId::from(device.user.as_str()),
        device.role,
        scopes.keys().filter_map(|s| Scope::parse(s).ok()),
    ))
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
        let (cursor, reoffer) = self.parse_cursor(req.cursor.as_deref())?;
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
            let facts = crate::ingest::read_pushed(&c.doc, &bytes, &mut decoded);
            pushed.push(Pushed { doc: c.doc.clone(), bytes, facts, receipt: c.receipt.clone() });
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
        // A retired device receives nothing new: its cursor stays where it was.
        let (docs, left_scope, new_cursor, more) = if device.retired {
            (vec![], vec![], cursor, false)
        } else {
            let (mut docs, left, new_cursor, more) = self.pull(&snapshot, device, &cursor, budget, accept_compacted)?;
            self.add_whole_documents(&snapshot, device, &want_full, budget, &mut docs)?;
            (docs, left, new_cursor, more)
        };
        let scopes: Vec<String> = Self::device_scopes(&snapshot, device)?
            .into_keys()
            .filter(|s| !s.starts_with("community:") && !s.starts_with("street:"))
            .collect();
        let min_version = meta_get(&snapshot, "min_app_version")?;
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

/// Who vouches for a change that [`SqliteStore::apply`] stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vouch {
    /// Nobody: every rule applies.
    None,
    /// The server's receipt (a relay after a restore): the server applied these bytes from their
    /// owner once, so the owner's scope is not asked again; attribution and shape still are.
    Receipt,
    /// An administrator released it from quarantine: it vouches for itself only.
    Administrator,
}

/// What a pull sends of one document: changes, or a compacted history (and changes after it).
struct Pulled {
    doc: String,
    changes: Vec<Vec<u8>>,
    compacted: Option<Vec<u8>>,
    /// A receipt for each change, in `changes` or in `compacted`.
    receipts: Vec<String>,
}

impl Pulled {
    /// Its bytes in the response (base64, with quotes and a comma).
    fn cost(&self) -> u64 {
        self.changes.iter().chain(self.compacted.iter()).map(|b| b.len() as u64 * 4 / 3 + 4).sum::<u64>()
            + self.receipts.iter().map(|r| r.len() as u64 + 3).sum::<u64>()
    }
}

/// Where a device's pull stands, as its cursor says (`EPOCH:SEQ` or `EPOCH:SEQ:DOC`): every item
/// up to sequence number `seq` is delivered and, when `after` is set, of the documents that joined
/// the device's view at `seq + 1` those up to `after` (by id) are too — a page split inside one
/// sequence number, when a scope granted at once holds more than a page (docs/PROTOCOL.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Position {
    seq: i64,
    after: Option<String>,
}

impl Position {
    fn at(seq: i64) -> Self {
        Position { seq, after: None }
    }

    fn cursor(&self, epoch: &str) -> String {
        match &self.after {
            None => format!("{epoch}:{}", self.seq),
            Some(doc) => format!("{epoch}:{}:{doc}", self.seq),
        }
    }
}

/// One pushed change, parsed (or why it is not a change).
struct Pushed {
    doc: String,
    bytes: Vec<u8>,
    facts: std::result::Result<ChangeFacts, String>,
    /// The server's receipt the device sent with it (a relay of another device's change).
    receipt: Option<String>,
}

impl Pushed {
    fn new(doc: String, bytes: Vec<u8>) -> Self {
        let mut budget = crate::ingest::MAX_CHANGE_BYTES;
        let facts = crate::ingest::read_pushed(&doc, &bytes, &mut budget);
        Pushed { doc, bytes, facts, receipt: None }
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

    /// One device's push, inside the writer's transaction.
    fn push(&self, tx: &Transaction<'_>, job: &PushJob) -> Result<Vec<ItemResult>> {
        let (device, req, now_ms) = (&job.device, &job.req, job.now_ms);
        let mut results = Vec::with_capacity(job.pushed.len() + req.records.len());
        let mut touched: HashMap<String, Touched> = HashMap::new();
        let mut own_actors = BTreeSet::new();
        for p in &job.pushed {
            results.push(self.ingest_change(tx, device, p, now_ms, &mut own_actors, &mut touched)?);
        }
        for r in &req.records {
            let body = r.body.get();
            // Read once: the claim, and a check-in's facts; the body is stored as the device sent it.
            let facts = records::RecordFacts::read(body);
            if !facts.claims(&device.id, &device.user) {
                results.push(self.quarantine(
                    tx,
                    &r.id,
                    "",
                    device,
                    now_ms,
                    "record claims another device or user",
                    body.as_bytes(),
                )?);
                continue;
            }
            records::insert_record(tx, &r.id, &device.id, now_ms, body, &facts)?;
            results.push(ItemResult { key: r.id.clone(), outcome: Outcome::Accepted, reason: None, receipt: None });
        }
        self.unpark(tx, now_ms, &mut touched)?;
        // The server stamps what it receives; a device clock far from it is flagged on what it sent.
        let skew_ms = if req.state.device_time_ms == 0 { 0 } else { req.state.device_time_ms.saturating_sub(now_ms) };
        if skew_ms.saturating_abs() > MAX_CLOCK_SKEW_MS {
            for (doc, t) in touched.iter_mut() {
                if job.pushed.iter().any(|p| &p.doc == doc) {
                    t.clock_skew = true;
                }
            }
        }
        let mut docs: Vec<&String> = touched.keys().collect();
        docs.sort();
        for d in docs {
            if let Some(t) = touched.get(d) {
                self.refresh_doc(tx, d, t)?;
            }
        }
        exec(
            tx,
            "UPDATE devices SET last_seen_ms = ?2, last_state = ?3 WHERE id = ?1",
            params![
                device.id,
                now_ms,
                json(&serde_json::json!({ "app_version": req.app_version, "state": req.state }))?
            ],
        )?;
        // A retired device that reports nothing left to send (and sends nothing) is drained.
        if device.retired
            && req.state.outbox_items == 0
            && req.state.photos_pending == 0
            && req.changes.is_empty()
            && req.records.is_empty()
        {
            exec(
                tx,
                "UPDATE devices SET drained_ms = coalesce(drained_ms, ?2) WHERE id = ?1",
                params![device.id, now_ms],
            )?;
        }
        Ok(results)
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
                BlobOwner::Case(id) => match case_access(&reader, id)? {
                    Some(access) => may_change(&subject(&reader, device)?, &access).is_ok(),
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

    /// How many complete blobs the server holds.
    pub fn blob_count(&self) -> Result<i64> {
        Ok(self.conn().query_row("SELECT count(*) FROM blobs", [], |r| r.get(0))?)
    }

    fn give_back(&self, reader: Connection) {
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < MAX_READERS {
            pool.push(reader);
        }
    }
}

impl SqliteStore {
    /// An administrator accepts a quarantined change: it is applied and enters the scopes of its
    /// case. Its earlier changes must be on the server (release those first).
    pub fn release_quarantined(&self, hash: &str, now_ms: i64) -> Result<()> {
        let mut conn = self.conn();
        let tx = self.begin_write(&mut conn)?;
        let row: Option<(String, String, String, Vec<u8>)> = tx
            .query_row("SELECT doc_id, device_id, status, bytes FROM quarantine WHERE hash = ?1", [hash], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        let (doc_id, device_id, status, bytes) =
            row.ok_or_else(|| ServerError::NotFound(format!("quarantined item {hash}")))?;
        if status != "pending" {
            return Err(ServerError::BadRequest(format!("{hash} was already {status}")));
        }
        // Marked in the same transaction as it is applied.
        exec(&tx, "UPDATE quarantine SET status = 'released' WHERE hash = ?1", [hash])?;
        if doc_id.is_empty() {
            // A record: store it as the device sent it.
            let body = String::from_utf8_lossy(&bytes).into_owned();
            records::insert_record(&tx, hash, &device_id, now_ms, &body, &records::RecordFacts::read(&body))?;
        } else {
            let (_, facts) = read_change(&bytes).map_err(ServerError::BadRequest)?;
            let missing = missing_deps(&tx, facts.deps.iter().map(String::as_str))?;
            if missing > 0 {
                return Err(ServerError::BadRequest(format!(
                    "{hash} depends on {missing} change(s) not on the server: release those first"
                )));
            }
            let device = load_device_by_id(&tx, &device_id)?;
            let mut touched = HashMap::new();
            // An administrator's release vouches for a quarantined change: its claims are not re-checked.
            let result =
                self.apply(&tx, &device, &doc_id, &facts, &bytes, Vouch::Administrator, now_ms, &mut touched)?;
            if result.outcome != Outcome::Accepted {
                return Err(ServerError::Internal(format!("{hash} could not be applied: {:?}", result.reason)));
            }
            // A quarantined change claimed no actor (`ingest_change`); stored now, its actor, if
            // still nobody's, is its sender's.
            exec(
                &tx,
                "INSERT INTO actors (actor, device_id, first_seen_ms) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                params![facts.actor, device_id, now_ms],
            )?;
            self.unpark(&tx, now_ms, &mut touched)?;
            for (d, t) in &touched {
                self.refresh_doc(&tx, d, t)?;
            }
        }
        self.commit(tx)?;
        Ok(())
    }

    /// An administrator rejects a quarantined item: it stays stored, marked, out of every scope.
    pub fn reject_quarantined(&self, hash: &str) -> Result<()> {
        let n = self
            .conn()
            .execute("UPDATE quarantine SET status = 'rejected' WHERE hash = ?1 AND status = 'pending'", [hash])?;
        if n == 0 {
            return Err(ServerError::NotFound(format!("pending quarantined item {hash}")));
        }
        Ok(())
    }

    /// The documents a user's devices should hold: every case in one of the user's scopes.
    pub fn docs_in_scope(&self, user: &str) -> Result<Vec<String>> {
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
    pub fn doc_flags(&self, doc_id: &str) -> Result<Vec<String>> {
        let flags: Option<String> =
            self.conn().query_row("SELECT flags FROM docs WHERE doc_id = ?1", [doc_id], |r| r.get(0)).optional()?;
        Ok(flags.unwrap_or_default().split(',').filter(|f| !f.is_empty()).map(str::to_owned).collect())
    }

    /// Devices older than this are told to upgrade (their pushes are still accepted).
    pub fn set_min_app_version(&self, version: &str) -> Result<()> {
        meta_set(&self.conn(), "min_app_version", version)
    }
}

/// [`crate::ingest::unknown_actor`] against the case's actors (schema 8); a change that passes
/// and is its actor's first in the case adds its actor.
fn unknown_actor(tx: &Transaction<'_>, doc_id: &str, facts: &ChangeFacts) -> Result<Option<String>> {
    let why = crate::ingest::unknown_actor(facts, |actor| {
        q1(tx, "SELECT EXISTS (SELECT 1 FROM doc_actors WHERE doc_id = ?1 AND actor = ?2)", [doc_id, actor], |r| {
            r.get::<_, bool>(0)
        })
    })?;
    if why.is_some() {
        return Ok(why);
    }
    // Schema 9: one change per actor and sequence number in a case.
    let last: Option<i64> =
        q1(tx, "SELECT last_seq FROM doc_actors WHERE doc_id = ?1 AND actor = ?2", [doc_id, &facts.actor], |r| {
            r.get(0)
        })
        .optional()?;
    if let Some(last) = last.filter(|l| facts.seq as i64 <= *l) {
        return Ok(Some(format!(
            "damaged change: its actor {} already made change {} of this case ({last} so far)",
            facts.actor, facts.seq
        )));
    }
    exec(
        tx,
        "INSERT INTO doc_actors (doc_id, actor, last_seq) VALUES (?1, ?2, ?3)
         ON CONFLICT (doc_id, actor) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
        params![doc_id, facts.actor, facts.seq as i64],
    )?;
    Ok(None)
}

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
            let scopes = SqliteStore::device_scopes(&reader, &device).expect("scopes");
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
