//! Backup and restore of a server's data directory (the embedded store; PostgreSQL's is in
//! `store::postgres::backup`).
//!
//! `backup` runs beside a serving server: the database is copied with `VACUUM INTO`, which reads
//! one consistent snapshot (WAL readers never block the writer), then the complete blobs, which
//! never change once stored, so every blob the snapshot names is there (a blob's file is in place
//! before its row commits). The district's TLS files go too: phones pin its CA.
//!
//! `restore` runs with the server stopped. Whatever the data directory held is moved aside, never
//! deleted. The restored store gets a new epoch, so every phone's cursor is from another epoch:
//! the server pulls them from the beginning and asks them to re-offer everything they hold, which
//! brings back what the server received after the backup (docs/PROTOCOL.md, "Cursors").

use std::fs;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension};

use crate::error::{Result, ServerError};

pub(crate) const MANIFEST: &str = "gridwork-backup.json";
const DB: &str = crate::store::SQLITE_FILE;

fn io(path: &Path) -> impl Fn(std::io::Error) -> ServerError + '_ {
    move |e| ServerError::io(path, e)
}

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackupManifest {
    pub epoch: String,
    /// The last sequence number in the copy: changes after it are what devices must re-offer.
    pub last_seq: i64,
    pub blobs: usize,
    pub blob_bytes: u64,
    pub made_ms: i64,
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub manifest: BackupManifest,
    pub new_epoch: String,
    /// Where the data directory's previous contents were moved, if it had any.
    pub moved_aside: Option<PathBuf>,
}

use crate::clock::now_ms;

pub(crate) fn is_empty_dir(dir: &Path) -> Result<bool> {
    match fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(io(dir)(e)),
    }
}

/// Copies every regular file of `from` into `to` (not recursive), fsyncing each. Returns (files, bytes).
pub(crate) fn copy_files(from: &Path, to: &Path, keep: impl Fn(&str) -> bool) -> Result<(usize, u64)> {
    if !from.exists() {
        return Ok((0, 0));
    }
    fs::create_dir_all(to).map_err(io(to))?;
    let (mut n, mut bytes) = (0, 0);
    for entry in fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type().map_err(io(from))?.is_file() || !keep(&name) {
            continue;
        }
        let target = to.join(&name);
        bytes += fs::copy(entry.path(), &target).map_err(io(&target))?;
        fs::File::open(&target).and_then(|f| f.sync_all()).map_err(io(&target))?;
        n += 1;
    }
    fs::File::open(to).and_then(|d| d.sync_all()).map_err(io(to))?;
    Ok((n, bytes))
}

fn read_epoch_and_seq(db: &Path) -> Result<(String, i64)> {
    let conn = Connection::open(db)?;
    let get = |key: &str| -> Result<Option<String>> {
        Ok(conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
    };
    let epoch = get("epoch")?.ok_or_else(|| ServerError::Internal(format!("{} has no epoch", db.display())))?;
    let seq = get("last_seq")?.and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((epoch, seq))
}

/// Makes a consistent copy of `data_dir` in `dest` (which must be empty or absent).
pub fn backup(data_dir: &Path, dest: &Path) -> Result<BackupManifest> {
    let db = data_dir.join(DB);
    if !db.exists() {
        return Err(ServerError::NotFound(format!("{}: no server store to back up", db.display())));
    }
    if !is_empty_dir(dest)? {
        return Err(ServerError::BadRequest(format!("{} is not empty: back up into a new directory", dest.display())));
    }
    fs::create_dir_all(dest).map_err(io(dest))?;
    let conn = Connection::open(&db)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    let copy = dest.join(DB);
    conn.execute("VACUUM INTO ?1", [copy.to_string_lossy()])?;
    drop(conn);
    let (epoch, last_seq) = read_epoch_and_seq(&copy)?;
    // Complete blobs only (64-hex names); uploads in progress resume from phones.
    let (blobs, blob_bytes) =
        copy_files(&data_dir.join("blobs"), &dest.join("blobs"), gridwork_model::wire::is_sha256_hex)?;
    copy_files(&data_dir.join("tls"), &dest.join("tls"), |_| true)?;
    let manifest = BackupManifest { epoch, last_seq, blobs, blob_bytes, made_ms: now_ms() };
    let path = dest.join(MANIFEST);
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| ServerError::Internal(e.to_string()))?;
    fs::write(&path, text).map_err(io(&path))?;
    fs::File::open(dest).and_then(|d| d.sync_all()).map_err(io(dest))?;
    Ok(manifest)
}

/// Brings a backup back into `data_dir` (the server must be stopped), with a new epoch.
pub fn restore(backup_dir: &Path, data_dir: &Path) -> Result<Restored> {
    let manifest_path = backup_dir.join(MANIFEST);
    let manifest: BackupManifest = fs::read_to_string(&manifest_path)
        .map_err(|e| ServerError::NotFound(format!("{}: {e} (is this a gridwork backup?)", manifest_path.display())))
        .and_then(|t| {
            serde_json::from_str(&t)
                .map_err(|e| ServerError::BadRequest(format!("{} is damaged: {e}", manifest_path.display())))
        })?;
    // The data directory is moved aside whole: a backup inside it would go with it.
    if let (Ok(b), Ok(d)) = (backup_dir.canonicalize(), data_dir.canonicalize()) {
        if b.starts_with(&d) {
            return Err(ServerError::BadRequest(format!(
                "{} is inside the data directory, which restore moves aside: copy the backup elsewhere first",
                backup_dir.display()
            )));
        }
    }
    let moved_aside = if is_empty_dir(data_dir)? {
        None
    } else {
        let name = data_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "data".into());
        let aside = data_dir.with_file_name(format!("{name}.before-restore-{}", now_ms()));
        fs::rename(data_dir, &aside).map_err(io(&aside))?;
        Some(aside)
    };
    let restored = (|| -> Result<String> {
        fs::create_dir_all(data_dir).map_err(io(data_dir))?;
        let db = data_dir.join(DB);
        fs::copy(backup_dir.join(DB), &db).map_err(io(&db))?;
        copy_files(&backup_dir.join("blobs"), &data_dir.join("blobs"), |_| true)?;
        copy_files(&backup_dir.join("tls"), &data_dir.join("tls"), |_| true)?;
        let mut epoch = [0u8; 4];
        getrandom::fill(&mut epoch).map_err(|e| ServerError::Internal(format!("no randomness: {e}")))?;
        let new_epoch = hex::encode(epoch);
        let conn = Connection::open(&db)?;
        conn.execute("UPDATE meta SET value = ?1 WHERE key = 'epoch'", [&new_epoch])?;
        Ok(new_epoch)
    })();
    match restored {
        Ok(new_epoch) => {
            // A city's districts are stores of their own, backed up and restored one by one
            // (`--district`): restoring the city centre's store leaves them where they were.
            if let Some(aside) = &moved_aside {
                let districts = aside.join(crate::city::DISTRICTS_DIR);
                if districts.is_dir() {
                    let to = data_dir.join(crate::city::DISTRICTS_DIR);
                    fs::rename(&districts, &to).map_err(io(&to))?;
                }
            }
            Ok(Restored { manifest, new_epoch, moved_aside })
        }
        Err(e) => {
            // Put the data directory back as it was (a full disk, say): what was copied is only
            // a copy of what the backup still holds, so it goes, and the previous contents return.
            let _ = fs::remove_dir_all(data_dir);
            if let Some(aside) = &moved_aside {
                fs::rename(aside, data_dir).map_err(|back| {
                    ServerError::Internal(format!(
                        "restoring failed ({e}) and the previous data could not be put back ({back}): it is in {}; move it to {} by hand",
                        aside.display(),
                        data_dir.display()
                    ))
                })?;
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A restore that fails half-way (here: the backup's database is not a file; in the chaos
    /// harness, a full disk) leaves the data directory exactly as it was.
    #[test]
    fn a_restore_that_fails_half_way_puts_the_data_directory_back() {
        let root = tempfile::tempdir().expect("tempdir");
        let (data, backup_dir) = (root.path().join("data"), root.path().join("backup"));
        fs::create_dir_all(data.join("blobs")).expect("data");
        fs::write(data.join(DB), b"the live store").expect("db");
        fs::write(data.join("blobs").join("a"), b"a blob").expect("blob");
        fs::create_dir_all(backup_dir.join(DB)).expect("a directory where the database should be");
        let manifest = BackupManifest { epoch: "e".into(), last_seq: 0, blobs: 0, blob_bytes: 0, made_ms: 0 };
        fs::write(backup_dir.join(MANIFEST), serde_json::to_string(&manifest).expect("json")).expect("manifest");

        assert!(restore(&backup_dir, &data).is_err());
        assert_eq!(fs::read(data.join(DB)).expect("db back"), b"the live store");
        assert_eq!(fs::read(data.join("blobs").join("a")).expect("blob back"), b"a blob");
        let left: Vec<String> = fs::read_dir(root.path())
            .expect("root")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!left.iter().any(|n| n.contains("before-restore")), "nothing left aside: {left:?}");
    }
}
