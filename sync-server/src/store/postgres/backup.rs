//! Backup and restore of a PostgreSQL store, the same story as the embedded store's
//! (`crate::backup`): a consistent copy while serving, and a restore with a new epoch so that
//! phones re-offer what the server received after the backup.
//!
//! `backup` opens a `REPEATABLE READ` transaction, exports its snapshot, reads the epoch and the
//! last sequence number in it, and runs `pg_dump --snapshot` on that same snapshot: the manifest
//! and the dump describe one moment. Complete blobs are copied after the dump (a blob's file is in
//! place before its row commits, so every blob the dump names is there).
//!
//! `restore` loads the dump into an empty database (never over one that holds a store: create a
//! new database, or drop the old one yourself once you are sure) and gives it a new epoch.

use std::path::{Path, PathBuf};
use std::process::Command;

use postgres::IsolationLevel;

use crate::backup::{copy_files, is_empty_dir, BackupManifest, Restored, MANIFEST};
use crate::clock::now_ms;
use crate::error::{Result, ServerError};

const DUMP: &str = "database.pgdump";

/// A PostgreSQL client program (`pg_dump`, `pg_restore`): on the PATH, or Debian's newest.
fn program(name: &str) -> PathBuf {
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(name)))
        .filter(|p| p.exists())
        .max();
    debian.unwrap_or_else(|| PathBuf::from(name))
}

fn run(mut cmd: Command, what: &str) -> Result<()> {
    let out = cmd
        .output()
        .map_err(|e| ServerError::Internal(format!("cannot run {what}: {e} (install postgresql-client)")))?;
    if !out.status.success() {
        return Err(ServerError::Internal(format!("{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(())
}

/// A connection whose search path is `schema` when one is given.
fn connect(url: &str, schema: Option<&str>) -> Result<postgres::Client> {
    let mut db = super::database::Database::parse(url)?;
    if let Some(schema) = schema {
        super::check_schema_name(schema)?;
        db = db.in_schema(schema);
    }
    Ok(db.connect()?)
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ServerError + '_ {
    move |e| ServerError::io(path, e)
}

/// A consistent copy of the database `url` and the complete blobs of `data_dir` into `dest`
/// (which must be empty or absent), while serving.
/// `schema` names a district's schema (`crate::city`): only it is copied.
pub fn backup(url: &str, schema: Option<&str>, data_dir: &Path, dest: &Path) -> Result<BackupManifest> {
    if !is_empty_dir(dest)? {
        return Err(ServerError::BadRequest(format!("{} is not empty: back up into a new directory", dest.display())));
    }
    std::fs::create_dir_all(dest).map_err(io(dest))?;
    let mut client = connect(url, schema)?;
    let mut tx = client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start()?;
    let snapshot: String = tx.query_one("SELECT pg_export_snapshot()", &[])?.get(0);
    let epoch: String = tx
        .query_opt("SELECT value FROM meta WHERE key = 'epoch'", &[])?
        .map(|r| r.get(0))
        .ok_or_else(|| ServerError::NotFound("the database holds no Gridwork store".into()))?;
    let last_seq: i64 = tx.query_one("SELECT last FROM seq_counter WHERE id = 1", &[])?.get(0);
    let mut dump = Command::new(program("pg_dump"));
    dump.args(["--format=custom", "--no-owner", "--snapshot", &snapshot, "--file"]).arg(dest.join(DUMP)).arg(url);
    // One store's schema only: the city centre's backup is not every district's (ADR 22).
    match schema {
        Some(schema) => dump.arg(format!("--schema={schema}")),
        None => dump.arg("--exclude-schema=district_*"),
    };
    run(dump, "pg_dump")?;
    tx.commit()?;
    let (blobs, blob_bytes) =
        copy_files(&data_dir.join("blobs"), &dest.join("blobs"), gridwork_model::wire::is_sha256_hex)?;
    copy_files(&data_dir.join("tls"), &dest.join("tls"), |_| true)?;
    let manifest = BackupManifest { epoch, last_seq, blobs, blob_bytes, made_ms: now_ms() };
    let path = dest.join(MANIFEST);
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| ServerError::Internal(e.to_string()))?;
    std::fs::write(&path, text).map_err(io(&path))?;
    Ok(manifest)
}

/// Loads a backup into the empty database `url` (servers stopped), with a new epoch, and puts
/// its blobs and TLS files into `data_dir` (files already there are kept: blobs are named by
/// their content).
/// `schema` names a district's schema (`crate::city`), which must not exist yet.
pub fn restore(backup_dir: &Path, url: &str, schema: Option<&str>, data_dir: &Path) -> Result<Restored> {
    let manifest_path = backup_dir.join(MANIFEST);
    let manifest: BackupManifest =
        std::fs::read_to_string(&manifest_path).map_err(io(&manifest_path)).and_then(|t| {
            serde_json::from_str(&t).map_err(|e| ServerError::BadRequest(format!("{}: {e}", manifest_path.display())))
        })?;
    let dump = backup_dir.join(DUMP);
    if !dump.exists() {
        return Err(ServerError::BadRequest(format!(
            "{} is not a PostgreSQL backup (no {DUMP})",
            backup_dir.display()
        )));
    }
    if let Some(schema) = schema {
        let exists: bool = connect(url, None)?.query_one("SELECT to_regnamespace($1) IS NOT NULL", &[&schema])?.get(0);
        if exists {
            return Err(ServerError::BadRequest(format!(
                "the database already has the schema {schema}: restore a district into a database without it (nothing is overwritten)"
            )));
        }
    }
    let mut client = connect(url, schema)?;
    let holds: bool = client.query_one("SELECT to_regclass('meta') IS NOT NULL", &[])?.get(0);
    if holds {
        return Err(ServerError::BadRequest(
            "the database already holds a store: restore into a new, empty database (nothing is overwritten)".into(),
        ));
    }
    let mut load = Command::new(program("pg_restore"));
    load.args(["--no-owner", "--exit-on-error", "--dbname", url]).arg(&dump);
    run(load, "pg_restore")?;
    // A district's tables were made in its schema, on the search path only now.
    let mut client = connect(url, schema)?;
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).map_err(|e| ServerError::Internal(format!("no randomness: {e}")))?;
    let new_epoch = hex::encode(bytes);
    client.execute("UPDATE meta SET value = $1 WHERE key = 'epoch'", &[&new_epoch])?;
    copy_files(&backup_dir.join("blobs"), &data_dir.join("blobs"), |_| true)?;
    copy_files(&backup_dir.join("tls"), &data_dir.join("tls"), |_| true)?;
    Ok(Restored { manifest, new_epoch, moved_aside: None })
}
