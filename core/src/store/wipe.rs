//! Wiping the phone at an administrator's order (docs/SECURITY.md, "Wiping a lost phone";
//! ADR 26), and the offline limit after which the app asks the server before opening.
//!
//! A wipe is a crypto-shred that loses nothing: the sync that hears the order sends everything
//! the phone holds, and only the server's `wipe_now` — it holds every place of this phone's chain
//! and the phone reported nothing left — starts [`Store::shred`]. The order of the shred is
//! chosen for a kill at any moment:
//!
//! 1. the tombstone (`WIPED`) is written first: from then on the store never opens again, and the
//!    app knows to report;
//! 2. the keys go: the vault's key is destroyed and the wrapped store key removed (after this,
//!    whatever is left of the files on flash is unreadable ciphertext);
//! 3. the connections are closed and the files removed: the database with its WAL, the evidence
//!    files, those moved aside;
//! 4. the report to the server (`sync::report_wiped`), which marks the tombstone reported.
//!
//! An app that gave the store a raw key rather than a vault must destroy that key itself when a
//! sync reports `wiped` (the core never held it anywhere but in memory).

use std::fs;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::{Store, DB_FILE};
use crate::error::{io, CoreError, Result};

/// Written into the store's directory when it is wiped; the store never opens over it.
pub const TOMBSTONE_FILE: &str = "WIPED";

/// What is left of a wiped store: who it was and whether the server heard of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    pub device: String,
    pub wiped_ms: i64,
    /// The server acknowledged `POST /v1/wiped`.
    pub reported: bool,
}

/// The tombstone in `dir`, if the store there was wiped.
pub fn tombstone(dir: &Path) -> Result<Option<Tombstone>> {
    let path = dir.join(TOMBSTONE_FILE);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| CoreError::Io {
            path: path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

pub(crate) fn write_tombstone(dir: &Path, t: &Tombstone) -> Result<()> {
    let bytes = serde_json::to_vec(t).map_err(|e| CoreError::Io {
        path: dir.join(TOMBSTONE_FILE),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    let path = dir.join(TOMBSTONE_FILE);
    super::files::write_durably(&path, &path.with_extension("tmp"), &[&bytes])
}

/// What a shred removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShredReport {
    pub files_removed: usize,
    /// The vault's key was destroyed (false: the app holds the raw key and must destroy it, or
    /// the vault failed: see `vault_error`).
    pub vault_key_destroyed: bool,
    /// The vault's own words when destroying its key failed. The files are removed all the same
    /// (what is left is the keystore's key: the app should delete it, and may try again).
    pub vault_error: Option<String>,
}

/// Refuses a wiped store's directory.
pub(crate) fn refuse_wiped(dir: &Path) -> Result<()> {
    match tombstone(dir)? {
        Some(t) => Err(CoreError::Wiped { device: t.device, reported: t.reported }),
        None => Ok(()),
    }
}

/// Refuses a store past its offline limit (see [`super::OpenOptions::offline_limit`]); a
/// check-in the app made counts as the last contact.
pub(crate) fn check_offline(conn: &Connection, options: &super::OpenOptions) -> Result<()> {
    if let Some(at) = options.checked_in_ms {
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('last_server_contact_ms', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [at.to_string()],
        )?;
        return Ok(());
    }
    let Some(limit) = options.offline_limit else { return Ok(()) };
    let last: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE key = 'last_server_contact_ms'", [], |r| r.get::<_, String>(0))
        .optional()?
        .and_then(|v| v.parse().ok());
    // A store that never reached the server counts from its first open (its creation).
    let Some(last) = last.or(first_open_ms(conn)?) else { return Ok(()) };
    let now = options.clock.now().wall_ms;
    let away = Duration::from_millis(u64::try_from(now.saturating_sub(last)).unwrap_or(0));
    if away > limit {
        return Err(CoreError::CheckInRequired { offline_days: away.as_secs() / 86_400 });
    }
    Ok(())
}

fn first_open_ms(conn: &Connection) -> Result<Option<i64>> {
    Ok(conn.query_row("SELECT min(created_ms) FROM actors", [], |r| r.get(0))?)
}

impl Store {
    /// Destroys this store for good: see the module documentation. Afterwards every call on this
    /// handle fails; drop it. Only the sync calls this, on the server's `wipe_now`.
    pub(crate) fn shred(&self) -> Result<ShredReport> {
        let dir = self.inner.dir.clone();
        write_tombstone(
            &dir,
            &Tombstone { device: self.inner.identity.device.0.clone(), wiped_ms: self.now_ms(), reported: false },
        )?;
        let mut report = ShredReport::default();
        if let Some(vault) = &self.inner.vault {
            // A keystore that fails here must not keep the files: the server holds everything,
            // and the store is shut for good already (the tombstone).
            match vault.destroy() {
                Ok(()) => report.vault_key_destroyed = true,
                Err(reason) => report.vault_error = Some(reason),
            }
        }
        report.files_removed += remove_file(&dir.join(crate::vault::WRAPPED_KEY_FILE))?;
        {
            // Both connections closed (replaced by empty in-memory ones) before their files go.
            let mut writer = self.writer();
            let mut reader = self.reader();
            *writer = Connection::open_in_memory()?;
            *reader = Connection::open_in_memory()?;
        }
        for name in [DB_FILE.to_owned(), format!("{DB_FILE}-wal"), format!("{DB_FILE}-shm")] {
            report.files_removed += remove_file(&dir.join(name))?;
        }
        for sub in ["evidence", "evidence-unreferenced"] {
            report.files_removed += remove_tree(&dir.join(sub))?;
        }
        Ok(report)
    }

    /// When the server last answered this phone (its clock), for the offline limit.
    pub(crate) fn note_server_contact_in(&self, tx: &rusqlite::Transaction<'_>, server_ms: i64) -> Result<()> {
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('last_server_contact_ms', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [server_ms.to_string()],
        )?;
        Ok(())
    }
}

fn remove_file(path: &Path) -> Result<usize> {
    match fs::remove_file(path) {
        Ok(()) => Ok(1),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io(path)(e)),
    }
}

fn remove_tree(dir: &Path) -> Result<usize> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut n = 0;
    for entry in entries {
        let path = entry.map_err(io(dir))?.path();
        n += if path.is_dir() { remove_tree(&path)? } else { remove_file(&path)? };
    }
    fs::remove_dir(dir).map_err(io(dir))?;
    Ok(n)
}
