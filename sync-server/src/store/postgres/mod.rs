//! The PostgreSQL store (ADR 21): the same rules as the embedded store (`rules`), over the port's
//! SQL in PostgreSQL's dialect (`port.rs`), for a city's deployment where several server
//! instances share one database.
//!
//! Sequence numbers: every write transaction first locks the one row of `seq_counter`
//! (`SELECT … FOR UPDATE`), takes numbers from it in memory and writes the last one back before
//! it commits. Writers of every instance therefore take turns, and a number is never visible
//! before every lower one has committed: a cursor cannot skip a change however the instances'
//! commits interleave (a database sequence would hand out numbers that commit out of order).
//! Within one instance, concurrent pushes still share one transaction (group commit), as in
//! the embedded store.
//!
//! Evidence blobs live in `blob_dir` (the data directory's `blobs/`): for several instances, a
//! directory they all mount (see docs/adr/0021 for why not an object store yet).

pub mod backup;
mod batched;
mod console;
mod database;
mod port;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex, RwLock};

use gridwork_model::catalog::Catalog;
use gridwork_model::wire::ItemResult;
use postgres::Client;

use super::port::{Backend, ReadTx, WriteTx};
use super::values::random_hex;
use crate::blobs::BlobFiles;
use crate::error::{Result, ServerError};
use crate::receipts::ReceiptKey;
use crate::rules::push::{PushJob, Rules};
use database::Database;
use gridwork_model::places::Places;
use port::{PgTx, Statements};

/// The schema this server writes (`meta.schema_version`).
const SCHEMA_VERSION: i64 = 6;

/// Each schema after the first, by the version it brings the database to.
const MIGRATIONS: &[(i64, &str)] = &[
    (2, include_str!("schema_2.sql")),
    (3, include_str!("schema_3.sql")),
    (4, include_str!("schema_4.sql")),
    (5, include_str!("schema_5.sql")),
    (6, include_str!("schema_6.sql")),
];

/// Reader connections kept open between requests.
const MAX_READERS: usize = 16;

/// PostgreSQL's errors as the server's: a full disk (SQLSTATE 53100) is
/// [`ServerError::StorageFull`] (507, retried by phones), anything else a storage error.
impl From<postgres::Error> for ServerError {
    fn from(e: postgres::Error) -> Self {
        let full = e.code().is_some_and(|c| *c == postgres::error::SqlState::DISK_FULL);
        // The database's own message (the Display of `postgres::Error` is only "db error").
        let detail = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        };
        if full {
            ServerError::StorageFull(detail)
        } else {
            ServerError::Storage(detail)
        }
    }
}

/// How the sync path's transactions plan their statements, set with their `START TRANSACTION`
/// (one round trip). Every statement there is a lookup or write by key: PostgreSQL would plan
/// each execution afresh (a custom plan: a third of a push's statement time went to planning),
/// and a plan made once while the tables were young would go on scanning them whole after
/// they grew (no ANALYZE runs within a storm's minute). So: one plan per statement and
/// connection, never a sequential scan where an index serves. The console's snapshots keep
/// PostgreSQL's own choice: its queries are not all lookups.
/// How a read snapshot begins.
const SNAPSHOT: &str = "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY";

const KEYED_PLANS: &str = "SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL enable_seqscan = off";

/// A transaction begun by hand on a connection (`postgres::Transaction` begins with a round
/// trip of its own): rolled back unless committed, also when a panic unwinds through it.
struct Open<'a> {
    client: &'a mut Client,
    done: bool,
}

impl<'a> Open<'a> {
    fn begin(client: &'a mut Client, begin: &str) -> Result<Self> {
        client.batch_execute(begin)?;
        Ok(Open { client, done: false })
    }

    fn client(&mut self) -> &mut Client {
        self.client
    }

    fn commit(mut self) -> Result<()> {
        self.done = true;
        Ok(self.client.batch_execute("COMMIT")?)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.client.batch_execute("ROLLBACK");
        }
    }
}

/// A connection and the statements prepared on it.
struct Conn {
    /// Always `Some` until dropped.
    client: Option<Client>,
    statements: Statements,
}

impl Conn {
    fn client(&mut self) -> Result<&mut Client> {
        self.client.as_mut().ok_or_else(|| ServerError::Internal("a closed connection was used".into()))
    }

    /// The client and the statement cache, borrowed apart.
    fn parts(&mut self) -> Result<(&mut Client, &mut Statements)> {
        let Conn { client, statements } = self;
        let client = client.as_mut().ok_or_else(|| ServerError::Internal("a closed connection was used".into()))?;
        Ok((client, statements))
    }

    fn is_closed(&self) -> bool {
        self.client.as_ref().is_none_or(Client::is_closed)
    }
}

/// `postgres::Client` closes its socket by blocking on a runtime of its own, which panics on a
/// thread that is inside tokio's (a request's blocking task, or the server's shutdown, where
/// the last handle to the store may go): there it is dropped on a thread of its own.
impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = std::thread::spawn(move || drop(client)).join();
            }
        }
    }
}

/// One device's push, waiting for the writer.
struct Queued {
    job: PushJob,
    reply: mpsc::Sender<Result<Vec<ItemResult>>>,
}

pub struct PgStore {
    db: Database,
    writer: Mutex<Conn>,
    pending: Mutex<Vec<Queued>>,
    readers: Mutex<Vec<Conn>>,
    blobs: Arc<BlobFiles>,
    /// Where the blobs and the server's TLS files are.
    data_dir: std::path::PathBuf,
    console_writes: Mutex<()>,
    epoch: String,
    receipts: ReceiptKey,
    places: RwLock<Arc<Places>>,
    /// Idle syncs' sightings, written with the next write batch.
    seen: Mutex<HashMap<String, (i64, String)>>,
}

/// A schema name this server makes or opens: lower-case letters, digits and `_`.
pub(crate) fn check_schema_name(schema: &str) -> Result<()> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ServerError::BadRequest(format!("{schema:?} is not a schema name: use a-z, 0-9 and _")))
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("epoch", &self.epoch).finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host/db`), creating or upgrading the schema, with
    /// evidence blobs in `data_dir/blobs`.
    pub fn open(url: &str, data_dir: &Path) -> Result<Self> {
        Self::open_in(url, None, data_dir)
    }

    /// As [`PgStore::open`], in one schema of the database: a district of a city deployment
    /// (`crate::city`) is the schema `district_ID`, made by [`PgStore::create_schema`]. Every
    /// connection of the store names only that schema on its search path, so no statement of
    /// one district can read another's tables.
    pub fn open_in(url: &str, schema: Option<&str>, data_dir: &Path) -> Result<Self> {
        let mut db = Database::parse(url)?;
        if let Some(schema) = schema {
            check_schema_name(schema)?;
            let exists: bool =
                Self::connect(&db)?.client()?.query_one("SELECT to_regnamespace($1) IS NOT NULL", &[&schema])?.get(0);
            if !exists {
                return Err(ServerError::NotFound(format!(
                    "the database has no schema {schema}: add the district first (`admin add-district`)"
                )));
            }
            db = db.in_schema(schema);
        }
        std::fs::create_dir_all(data_dir).map_err(|e| ServerError::io(data_dir, e))?;
        let mut conn = Self::connect(&db)?;
        let (epoch, key, catalog) = Self::migrate(&mut conn)?;
        Ok(PgStore {
            db,
            writer: Mutex::new(conn),
            pending: Mutex::new(vec![]),
            readers: Mutex::new(vec![]),
            blobs: Arc::new(BlobFiles::open(data_dir)?),
            data_dir: data_dir.to_owned(),
            console_writes: Mutex::new(()),
            epoch,
            receipts: ReceiptKey::new(key),
            places: RwLock::new(Arc::new(Places::new(Arc::new(catalog)))),
            seen: Mutex::new(HashMap::new()),
        })
    }

    /// Makes the schema a district's store lives in (nothing if it exists); the store's tables
    /// are made when it is first opened.
    pub fn create_schema(url: &str, schema: &str) -> Result<()> {
        check_schema_name(schema)?;
        // The name was checked to be `[a-z0-9_]`: it cannot close the identifier's quotes.
        Self::connect(&Database::parse(url)?)?
            .client()?
            .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))?;
        Ok(())
    }

    /// Whether this store's connections to the database are encrypted, as the database sees them.
    pub fn connection_encrypted(&self) -> Result<bool> {
        let mut conn = Self::connect(&self.db)?;
        let row = conn.client()?.query_opt("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])?;
        Ok(row.is_some_and(|r| r.get::<_, bool>(0)))
    }

    /// The schemas whose names start with `prefix`, in order.
    pub fn schemas(url: &str, prefix: &str) -> Result<Vec<String>> {
        let rows = Self::connect(&Database::parse(url)?)?
            .client()?
            .query("SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1) ORDER BY nspname", &[&prefix])?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn connect(db: &Database) -> Result<Conn> {
        let client = db.connect().map_err(|e| {
            ServerError::Storage(format!(
                "cannot connect to PostgreSQL ({e}): check the store URL and that the server runs"
            ))
        })?;
        Ok(Conn { client: Some(client), statements: HashMap::new() })
    }

    /// Creates the schema on an empty database, under an advisory lock so that instances
    /// starting together do it once; reads (or makes) the epoch and the receipt key.
    fn migrate(conn: &mut Conn) -> Result<(String, [u8; 32], Catalog)> {
        let mut tx = conn.client()?.transaction()?;
        // Any fixed number: every instance of this server takes the same lock.
        tx.batch_execute("SELECT pg_advisory_xact_lock(7152026)")?;
        let exists: bool = tx.query_one("SELECT to_regclass('meta') IS NOT NULL", &[])?.get(0);
        if !exists {
            tx.batch_execute(include_str!("schema_1.sql"))?;
            tx.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '1')", &[])?;
        }
        let version: i64 = tx
            .query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])?
            .and_then(|r| r.get::<_, String>(0).parse().ok())
            .unwrap_or(0);
        if version > SCHEMA_VERSION {
            return Err(ServerError::Internal(format!(
                "the database's schema {version} is newer than this server's {SCHEMA_VERSION}: update the server"
            )));
        }
        // In the same transaction as the lock: a migration is whole or not at all.
        for (to, sql) in MIGRATIONS.iter().filter(|(to, _)| *to > version) {
            tx.batch_execute(sql)?;
            tx.execute("UPDATE meta SET value = $1 WHERE key = 'schema_version'", &[&to.to_string()])?;
        }
        let mut get_or_make = |key: &str, make: &dyn Fn() -> Result<String>| -> Result<String> {
            if let Some(r) = tx.query_opt("SELECT value FROM meta WHERE key = $1", &[&key])? {
                return Ok(r.get(0));
            }
            let v = make()?;
            tx.execute("INSERT INTO meta (key, value) VALUES ($1, $2)", &[&key, &v])?;
            Ok(v)
        };
        let epoch = get_or_make("epoch", &|| random_hex(4))?;
        let key_hex = get_or_make("receipt_key", &|| random_hex(32))?;
        let mut key = [0u8; 32];
        match hex::decode(&key_hex) {
            Ok(k) if k.len() == 32 => key.copy_from_slice(&k),
            _ => return Err(ServerError::Internal("the stored receipt key is damaged".into())),
        }
        tx.commit()?;
        let catalog = {
            let (client, statements) = conn.parts()?;
            let mut tx = client.transaction()?;
            let catalog = PgTx::new(&mut tx, statements, false).catalog()?;
            tx.commit()?;
            catalog
        };
        Ok((epoch, key, catalog))
    }

    fn places(&self) -> Arc<Places> {
        self.places.read().map(|c| Arc::clone(&c)).unwrap_or_else(|p| Arc::clone(&p.into_inner()))
    }

    fn reader(&self) -> Result<Conn> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match pooled {
            Some(c) if !c.is_closed() => Ok(c),
            Some(c) => {
                drop(c);
                Self::connect(&self.db)
            }
            None => Self::connect(&self.db),
        }
    }

    fn give_back(&self, conn: Conn) {
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < MAX_READERS && !conn.is_closed() {
            pool.push(conn);
        } else {
            drop(pool);
            drop(conn);
        }
    }

    fn writer(&self) -> Result<std::sync::MutexGuard<'_, Conn>> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if conn.is_closed() {
            // The database went away and came back: a new connection, and a new statement cache.
            drop(std::mem::replace(&mut *conn, Self::connect(&self.db)?));
        }
        Ok(conn)
    }

    /// A write transaction on `conn`: the counter's row lock first (see the module's comment),
    /// then `f`, then the counter written back and the commit. Its statements are keyed
    /// lookups and writes, planned once (`KEYED_PLANS`).
    fn in_write<T>(conn: &mut Conn, f: impl FnOnce(&PgTx<'_, '_>) -> Result<T>) -> Result<T> {
        let (client, statements) = conn.parts()?;
        let mut open = Open::begin(client, &format!("START TRANSACTION; {KEYED_PLANS}"))?;
        let out = {
            let port = PgTx::on_client(open.client(), statements, true);
            port.lock_counter()?;
            let out = f(&port)?;
            port.flush()?;
            port.finish_seq()?;
            out
        };
        open.commit()?;
        Ok(out)
    }

    /// Group commit, as in the embedded store: whoever holds the writer runs every queued push
    /// in one transaction (each in a savepoint when one has failed before) and answers each.
    fn write_push(&self, job: PushJob) -> Result<Vec<ItemResult>> {
        let (tx, rx) = mpsc::channel();
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).push(Queued { job, reply: tx });
        {
            let mut conn = self.writer()?;
            let batch: Vec<Queued> = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
            if !batch.is_empty() {
                self.write_batch(&mut conn, batch);
            }
        }
        rx.recv().map_err(|_| ServerError::Internal("the writer dropped a push without answering".into()))?
    }

    fn write_batch(&self, conn: &mut Conn, batch: Vec<Queued>) {
        let seen = std::mem::take(&mut *self.seen.lock().unwrap_or_else(|p| p.into_inner()));
        let rules = self.rules();
        let run = |conn: &mut Conn, savepoints: bool| {
            Self::in_write(conn, |port| {
                for (id, (at, state)) in &seen {
                    port.device_seen_at_least(id, *at, state)?;
                    if let Some(boot) = crate::rules::push::boot_of_sighting(*at, state) {
                        port.note_boots(id, &[boot])?;
                    }
                }
                let mut answers = Vec::with_capacity(batch.len());
                for q in &batch {
                    if savepoints {
                        // What waits (the sightings above, an earlier push's rows) is not this push's
                        // to roll back.
                        port.flush()?;
                        port.tx.borrow_mut().batch_execute("SAVEPOINT push")?;
                    }
                    // With savepoints, a push's rows are written before its savepoint is
                    // released, and dropped with it; without, the whole batch's go together.
                    match crate::rules::push::push(&rules, port, &q.job).and_then(|r| {
                        if savepoints {
                            port.flush().map(|()| r)
                        } else {
                            Ok(r)
                        }
                    }) {
                        Ok(r) => {
                            if savepoints {
                                port.tx.borrow_mut().batch_execute("RELEASE SAVEPOINT push")?;
                            }
                            answers.push(Ok(r));
                        }
                        Err(e) if savepoints => {
                            port.batched.borrow_mut().discard();
                            port.tx.borrow_mut().batch_execute("ROLLBACK TO SAVEPOINT push; RELEASE SAVEPOINT push")?;
                            answers.push(Err(e));
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(answers)
            })
        };
        // First without savepoints; if a push failed, the batch again with one around each push
        // so that the failure stays its own.
        let outcome = run(conn, false).or_else(|_| run(conn, true));
        match outcome {
            Ok(answers) => {
                for (q, a) in batch.iter().zip(answers) {
                    let _ = q.reply.send(a);
                }
            }
            Err(e) => {
                let mut kept = self.seen.lock().unwrap_or_else(|p| p.into_inner());
                for (id, at) in seen {
                    kept.entry(id).or_insert(at);
                }
                for q in &batch {
                    let told = match &e {
                        ServerError::StorageFull(d) => ServerError::StorageFull(d.clone()),
                        other => ServerError::Internal(format!("storing the push failed: {other}")),
                    };
                    let _ = q.reply.send(Err(told));
                }
            }
        }
    }

    /// A `REPEATABLE READ` read-only transaction on a pooled connection (one snapshot), begun by
    /// `begin` in one round trip; the catalog followed first.
    fn snapshot(&self, begin: &str, f: &mut dyn FnMut(&dyn ReadTx) -> Result<()>) -> Result<()> {
        let mut conn = self.reader()?;
        let done = (|| {
            let (client, statements) = conn.parts()?;
            let mut open = Open::begin(client, begin)?;
            {
                let view = PgTx::on_client(open.client(), statements, false);
                self.follow_catalog(&view)?;
                f(&view)?;
            }
            open.commit()
        })();
        self.give_back(conn);
        done
    }

    /// Another instance imported a catalog: read it (checked on every snapshot; one indexed
    /// lookup of `meta`).
    fn follow_catalog(&self, view: &PgTx<'_, '_>) -> Result<()> {
        let stored: u64 = view.meta("catalog_version")?.and_then(|v| v.parse().ok()).unwrap_or(0);
        if stored > self.places().catalog().version {
            self.catalog_changed(view.catalog()?);
        }
        Ok(())
    }
}

impl Backend for PgStore {
    fn console_writes(&self) -> &Mutex<()> {
        &self.console_writes
    }

    fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        Some(crate::tls::TlsFiles::in_data_dir(&self.data_dir))
    }

    fn rules(&self) -> Rules<'_> {
        Rules { receipts: &self.receipts, epoch: &self.epoch, places: self.places() }
    }

    fn blobs(&self) -> &Arc<BlobFiles> {
        &self.blobs
    }

    /// A `REPEATABLE READ` read-only transaction on a pooled connection: one snapshot.
    fn read(&self, f: &mut dyn FnMut(&dyn ReadTx) -> Result<()>) -> Result<()> {
        self.snapshot(SNAPSHOT, f)
    }

    /// On a pooled connection outside any transaction: the statement is its own snapshot. No
    /// catalog check either: a lookup reads no catalog.
    fn read_one(&self, f: &mut dyn FnMut(&dyn ReadTx) -> Result<()>) -> Result<()> {
        let mut conn = self.reader()?;
        let done = (|| {
            let (client, statements) = conn.parts()?;
            f(&PgTx::on_client(client, statements, false))
        })();
        self.give_back(conn);
        done
    }

    /// As `read`, with the sync path's plans (`KEYED_PLANS`), begun in the same round trip.
    fn read_keyed(&self, f: &mut dyn FnMut(&dyn ReadTx) -> Result<()>) -> Result<()> {
        self.snapshot(&format!("{SNAPSHOT}; {KEYED_PLANS}"), f)
    }

    fn write(&self, f: &mut dyn FnMut(&dyn WriteTx) -> Result<()>) -> Result<()> {
        let mut conn = self.writer()?;
        Self::in_write(&mut conn, |port| f(port))
    }

    fn push(&self, job: PushJob) -> Result<Vec<ItemResult>> {
        self.write_push(job)
    }

    fn note_seen(&self, device_id: &str, now_ms: i64, state_json: String) -> Result<()> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(device_id.to_owned(), (now_ms, state_json));
        Ok(())
    }

    fn flush_seen(&self) -> Result<()> {
        let seen = std::mem::take(&mut *self.seen.lock().unwrap_or_else(|p| p.into_inner()));
        if seen.is_empty() {
            return Ok(());
        }
        let mut conn = self.writer()?;
        Self::in_write(&mut conn, |port| {
            for (id, (at, state)) in &seen {
                port.device_seen_at_least(id, *at, state)?;
                if let Some(boot) = crate::rules::push::boot_of_sighting(*at, state) {
                    port.note_boots(id, &[boot])?;
                }
            }
            Ok(())
        })
    }

    fn catalog_changed(&self, catalog: Catalog) {
        *self.places.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Places::new(Arc::new(catalog)));
    }
}

impl Drop for PgStore {
    /// Sightings not yet written are written on the way out (best effort: only timestamps), on a
    /// thread that drives no tokio runtime (see `Conn`'s `Drop`).
    fn drop(&mut self) {
        let flush = |store: &PgStore| {
            if let Err(e) = store.flush_seen() {
                eprintln!("gridwork-sync-server: could not record when devices were last seen: {e}");
            }
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|s| {
                let _ = s.spawn(|| flush(self)).join();
            });
        } else {
            flush(self);
        }
    }
}
