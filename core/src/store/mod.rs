//! The device store: one encrypted SQLite database plus an evidence directory.
//!
//! [`Store`] is the one handle an app holds. It is `Send + Sync` and cheap to clone: the UI
//! thread and a background sync worker can call it at once. Writes go through one writer
//! connection, each user action in one `BEGIN IMMEDIATE` transaction (document chunk, index row,
//! outbox entry and evidence references together, or none of them); reads use a second
//! connection, so a list never waits behind a write (WAL).
//!
//! Opening runs migrations, loads the catalogue, picks a fresh Automerge actor (never reused, so
//! a restored backup or a reinstalled app cannot fork an actor's history) and moves aside
//! evidence files no transaction references.

mod cases;
pub(crate) mod documents;
mod evidence;
pub(crate) mod files;
pub(crate) mod outbox;
mod patrols;
mod queries;
mod retention;
pub(crate) mod schema;
pub(crate) mod search;
mod wipe;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use automerge::ActorId;
use gridwork_model::catalog::{Actor, Catalog, Category, Department, Grid, Role};
use gridwork_model::geo::Location;
use gridwork_model::ids::{DepartmentId, DeviceId, UserId};
use gridwork_model::places::{GridMatch, Places};
use gridwork_model::time::{ClockStamp, DistrictCalendar};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

pub(crate) use cases::parse_changes;
pub use cases::{CaseDetail, CaseSummary, NewCase, ReceiveReport};
pub use evidence::EvictionReport;
pub use outbox::{OutboxItem, OutboxKind, Reoffered};
pub use patrols::{CheckInInput, PointCoverage};
pub use queries::{CasePage, CaseQuery, NeedsYou, SortOrder};
pub use retention::RetentionReport;
pub(crate) use wipe::{refuse_wiped, write_tombstone as wipe_tombstone_reported};
pub use wipe::{tombstone, ShredReport, Tombstone, TOMBSTONE_FILE};

use crate::clock::{DeviceClock, SystemClock};
use crate::error::{io, CoreError, Result};
use files::EvidenceFiles;

/// Who the app is acting for. Every event and record the store writes carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: UserId,
    pub role: Role,
    pub device: DeviceId,
    /// Short code the server gave this device at enrolment; prefixes readable case codes.
    pub device_code: String,
    /// For department handlers.
    pub department: Option<DepartmentId>,
    /// The device's signing key from enrolment (`sync::enrol` makes it). Given at the first
    /// open, the store keeps it; later opens may pass `None` and the store's is used. `None`
    /// with none stored: an app enrolled before signing, whose changes go unsigned.
    pub signing_key: Option<Arc<crate::signing::DeviceKey>>,
}

impl Identity {
    pub fn actor(&self) -> Actor {
        Actor {
            user: self.user.clone(),
            role: self.role,
            device: self.device.clone(),
            department: self.department.clone(),
        }
    }
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub dir: PathBuf,
    /// 32 random bytes from Android Keystore / iOS Keychain.
    pub key: Vec<u8>,
    pub identity: Identity,
    pub clock: Arc<dyn DeviceClock>,
    /// IANA zone "today" and deadlines are counted in.
    pub time_zone: String,
    /// The platform keystore's vault the store key came from ([`OpenOptions::with_vault`]): a
    /// wipe destroys its key. None: the app gave the raw key and destroys it itself.
    pub vault: Option<Arc<dyn crate::vault::KeyVault>>,
    /// Past this long without an answer from the server, the store refuses to open with
    /// `CheckInRequired` until the app asked the server (`sync::device_status`) and opens with
    /// [`OpenOptions::checked_in_ms`]: a phone lost for longer hears a wipe order before anyone
    /// reads it (docs/SECURITY.md). None: no limit.
    pub offline_limit: Option<std::time::Duration>,
    /// The server's time of a `device_status` answer that said the device is still in use (or
    /// ordered wiped: then open, and sync); counts as the last contact.
    pub checked_in_ms: Option<i64>,
}

impl std::fmt::Debug for dyn crate::vault::KeyVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyVault")
    }
}

impl OpenOptions {
    pub fn new(dir: impl Into<PathBuf>, key: &[u8], identity: Identity) -> Self {
        OpenOptions {
            dir: dir.into(),
            key: key.to_vec(),
            identity,
            clock: Arc::new(SystemClock),
            time_zone: "Asia/Shanghai".into(),
            vault: None,
            offline_limit: None,
            checked_in_ms: None,
        }
    }

    /// Options whose store key the vault keeps (made and wrapped at the first open, see
    /// [`crate::vault::store_key`]); a wipe destroys the vault's key. A wiped directory is
    /// refused here already.
    pub fn with_vault(
        dir: impl Into<PathBuf>,
        vault: Arc<dyn crate::vault::KeyVault>,
        identity: Identity,
    ) -> Result<Self> {
        let dir = dir.into();
        wipe::refuse_wiped(&dir)?;
        let key = crate::vault::store_key(&dir, vault.as_ref())?;
        let mut options = OpenOptions::new(dir, &key, identity);
        options.vault = Some(vault);
        Ok(options)
    }
}

/// What opening found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// The schema version the file had before this open (0 for a new store).
    pub migrated_from: i64,
    /// Evidence files no transaction referenced, moved to `evidence-unreferenced/`.
    pub unreferenced_files_moved: usize,
}

pub(crate) struct Inner {
    dir: PathBuf,
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
    identity: Identity,
    /// The key every change and record is signed with, if the device has one.
    signer: Option<Arc<crate::signing::DeviceKey>>,
    actor: ActorId,
    /// The catalogue with its lookups (grids by id and by position), built once per version.
    catalog: RwLock<Arc<Places>>,
    clock: Arc<dyn DeviceClock>,
    server_offset_ms: AtomicI64,
    has_server_offset: std::sync::atomic::AtomicBool,
    calendar: DistrictCalendar,
    files: EvidenceFiles,
    report: OpenReport,
    vault: Option<Arc<dyn crate::vault::KeyVault>>,
}

/// The device store. See the module documentation.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .field("identity", &self.inner.identity)
            .finish_non_exhaustive()
    }
}

pub(crate) const DB_FILE: &str = "gridwork.db";
/// Page cache sizes: lists and case views read through the reader, so it gets the larger share.
const READER_CACHE_KIB: u32 = 16 * 1024;
const WRITER_CACHE_KIB: u32 = 8 * 1024;

fn open_connection(path: &Path, key: &[u8; 32], cache_kib: u32) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // A raw key (x'…') skips SQLCipher's PBKDF2 on every open; the key is already random.
    conn.execute_batch(&format!("PRAGMA key = \"x'{}'\";", hex::encode(key)))?;
    // The first read tells a wrong key from a good one; nothing has been written yet.
    if conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)).is_err() {
        return Err(CoreError::WrongKey { path: path.to_owned() });
    }
    // synchronous = FULL: an acknowledged action must survive the battery dying, not only the
    // app being killed (NORMAL in WAL mode can lose the last commits on power loss).
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA busy_timeout = 5000;",
    )?;
    // SQLCipher decrypts and authenticates every page it reads into the cache; the 2 MiB default
    // cache thrashes on a 10,000-case store (a Chinese text search went from 1.3 ms to 9 ms).
    conn.execute_batch(&format!("PRAGMA cache_size = -{cache_kib};"))?;
    Ok(conn)
}

/// The device's signing key: the one the identity brings (kept in `meta` for later opens), or
/// the one kept for this device. A key kept for another device id (the store enrolled again) is
/// replaced by the new enrolment's.
fn device_key(conn: &Connection, identity: &Identity) -> Result<Option<Arc<crate::signing::DeviceKey>>> {
    let stored: Option<String> =
        conn.query_row("SELECT value FROM meta WHERE key = 'device_key'", [], |r| r.get(0)).optional()?;
    let stored = stored.and_then(|v| {
        let (device, pkcs8) = v.split_once(' ')?;
        (device == identity.device.0).then(|| hex::decode(pkcs8).ok()).flatten()
    });
    match (&identity.signing_key, stored) {
        (Some(key), stored) => {
            if stored.as_deref() != Some(&key.pkcs8().0[..]) {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('device_key', ?1)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    [format!("{} {}", identity.device.0, hex::encode(&key.pkcs8().0))],
                )?;
            }
            Ok(Some(key.clone()))
        }
        (None, Some(pkcs8)) => Ok(Some(Arc::new(crate::signing::DeviceKey::from_pkcs8(&pkcs8)?))),
        (None, None) => Ok(None),
    }
}

impl Store {
    /// Opens (creating if needed) the store in `options.dir`.
    pub fn open(options: OpenOptions) -> Result<Store> {
        let key: [u8; 32] =
            options.key.as_slice().try_into().map_err(|_| CoreError::BadKeyLength { len: options.key.len() })?;
        // Before anything is created: a wiped directory must not grow a new, empty store.
        wipe::refuse_wiped(&options.dir)?;
        std::fs::create_dir_all(&options.dir).map_err(io(&options.dir))?;
        let path = options.dir.join(DB_FILE);
        let mut writer = open_connection(&path, &key, WRITER_CACHE_KIB)?;
        let migrated_from = schema::migrate(&mut writer)?;
        wipe::check_offline(&writer, &options)?;
        let reader = open_connection(&path, &key, READER_CACHE_KIB)?;
        let calendar = DistrictCalendar::new(&options.time_zone)
            .map_err(|e| CoreError::Invalid(gridwork_model::ModelError::MalformedDocument { reason: e.to_string() }))?;

        let actor = ActorId::random();
        let now = options.clock.now();
        writer.execute(
            "INSERT INTO actors (actor_id, created_ms) VALUES (?1, ?2)",
            params![actor.to_hex_string(), now.wall_ms],
        )?;
        let signer = device_key(&writer, &options.identity)?;
        let catalog = load_catalog(&writer)?;
        let offset: Option<i64> = writer
            .query_row("SELECT value FROM meta WHERE key = 'server_offset_ms'", [], |r| r.get::<_, String>(0))
            .optional()?
            .and_then(|v| v.parse().ok());

        let files = EvidenceFiles::open(&options.dir, &key)?;
        let referenced: std::collections::HashSet<String> = {
            let mut stmt = writer.prepare("SELECT sha256 FROM evidence_files")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let unreferenced_files_moved = files.sweep(&referenced)?;

        Ok(Store {
            inner: Arc::new(Inner {
                dir: options.dir,
                writer: Mutex::new(writer),
                reader: Mutex::new(reader),
                identity: options.identity,
                signer,
                actor,
                catalog: RwLock::new(Arc::new(Places::new(Arc::new(catalog)))),
                clock: options.clock,
                server_offset_ms: AtomicI64::new(offset.unwrap_or(0)),
                has_server_offset: std::sync::atomic::AtomicBool::new(offset.is_some()),
                calendar,
                files,
                report: OpenReport { migrated_from, unreferenced_files_moved },
                vault: options.vault,
            }),
        })
    }

    pub fn open_report(&self) -> &OpenReport {
        &self.inner.report
    }

    /// The public half of the device's signing key (base64), if it has one.
    pub fn signing_public_key(&self) -> Option<String> {
        self.inner.signer.as_ref().map(|k| k.public_key_b64())
    }

    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// This store instance's Automerge actor (hex).
    pub fn actor_id(&self) -> String {
        self.inner.actor.to_hex_string()
    }

    /// The reference data currently on the device.
    pub fn catalog(&self) -> Arc<Catalog> {
        Arc::clone(self.places().catalog())
    }

    fn places(&self) -> Arc<Places> {
        match self.inner.catalog.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Which grid a fix falls in, for a capture screen that has not been told (the catalogue's
    /// boundaries, indexed once per version): inside one grid, that grid; on a boundary or in a
    /// gap, the nearest within the fix's accuracy; otherwise the nearest few to choose from.
    pub fn grid_at(&self, location: &Location) -> Result<GridMatch> {
        let l = location.clone().normalized()?;
        Ok(self.places().locate(l.lat, l.lon, l.accuracy_m))
    }

    /// Replaces the reference data (the sync client calls this when the catalog version moves).
    pub fn import_catalog(&self, catalog: &Catalog) -> Result<()> {
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM catalog_items", [])?;
        {
            let mut ins = tx.prepare("INSERT INTO catalog_items (kind, id, json) VALUES (?1, ?2, ?3)")?;
            for g in &catalog.grids {
                ins.execute(params!["grid", g.id.0, to_json(g)?])?;
            }
            for c in &catalog.categories {
                ins.execute(params!["category", c.id.0, to_json(c)?])?;
            }
            for d in &catalog.departments {
                ins.execute(params!["department", d.id.0, to_json(d)?])?;
            }
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('catalog_version', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [catalog.version.to_string()],
        )?;
        tx.commit()?;
        let mut guard = match self.inner.catalog.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Arc::new(Places::new(Arc::new(catalog.clone())));
        Ok(())
    }

    /// Records the last known `server_time - device_time`, stamped on every later event.
    pub fn set_server_offset(&self, offset_ms: i64) -> Result<()> {
        self.writer().execute(
            "INSERT INTO meta (key, value) VALUES ('server_offset_ms', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [offset_ms.to_string()],
        )?;
        self.inner.server_offset_ms.store(offset_ms, Ordering::SeqCst);
        self.inner.has_server_offset.store(true, Ordering::SeqCst);
        Ok(())
    }

    pub(crate) fn writer(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable: SQLite rolled back.
        self.inner.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn reader(&self) -> MutexGuard<'_, Connection> {
        self.inner.reader.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn stamp(&self) -> ClockStamp {
        let r = self.inner.clock.now();
        ClockStamp {
            device_ms: r.wall_ms,
            since_boot_ms: r.since_boot_ms,
            boot_id: r.boot_id,
            server_offset_ms: self
                .inner
                .has_server_offset
                .load(Ordering::SeqCst)
                .then(|| self.inner.server_offset_ms.load(Ordering::SeqCst)),
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.inner.clock.now().wall_ms
    }

    /// The device clock's readings now (wall clock, time since boot, boot id).
    pub(crate) fn clock_reading(&self) -> crate::clock::ClockReading {
        self.inner.clock.now()
    }

    pub(crate) fn grid(&self, id: &str) -> Result<Grid> {
        self.places().grid(id).cloned().ok_or_else(|| CoreError::UnknownGrid { grid_id: id.to_owned() })
    }

    pub(crate) fn category(&self, id: &str) -> Result<Category> {
        self.catalog()
            .categories
            .iter()
            .find(|c| c.id.0 == id)
            .cloned()
            .ok_or_else(|| CoreError::UnknownCategory { category_id: id.to_owned() })
    }

    pub(crate) fn department(&self, id: &str) -> Result<Department> {
        self.catalog()
            .departments
            .iter()
            .find(|d| d.id.0 == id)
            .cloned()
            .ok_or_else(|| CoreError::UnknownDepartment { department_id: id.to_owned() })
    }
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v)
        .map_err(|e| CoreError::Invalid(gridwork_model::ModelError::MalformedDocument { reason: e.to_string() }))
}

fn load_catalog(conn: &Connection) -> Result<Catalog> {
    let version = conn
        .query_row("SELECT value FROM meta WHERE key = 'catalog_version'", [], |r| r.get::<_, String>(0))
        .optional()?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut catalog = Catalog { version, ..Default::default() };
    let mut stmt = conn.prepare("SELECT kind, json FROM catalog_items ORDER BY kind, id")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let kind: String = r.get(0)?;
        let json: String = r.get(1)?;
        // An item this build cannot parse is skipped, not fatal: the next sync replaces it.
        match kind.as_str() {
            "grid" => catalog.grids.extend(serde_json::from_str::<Grid>(&json).ok()),
            "category" => catalog.categories.extend(serde_json::from_str::<Category>(&json).ok()),
            "department" => catalog.departments.extend(serde_json::from_str::<Department>(&json).ok()),
            _ => {}
        }
    }
    Ok(catalog)
}
