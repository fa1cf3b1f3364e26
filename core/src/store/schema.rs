//! Schema migrations keyed on `PRAGMA user_version`.
//!
//! Each version is a numbered SQL file; where data must move, a Rust step follows the SQL in the
//! same transaction. A database from a newer app is refused (and left untouched) rather than
//! guessed at.

use rusqlite::{Connection, Transaction};

use crate::error::{CoreError, Result};

/// The SQL of each version, in order: `MIGRATIONS[0]` takes a store from 0 to 1.
pub(crate) const MIGRATIONS: &[&str] = &[
    include_str!("migrations/001_initial.sql"),
    include_str!("migrations/002_search.sql"),
    include_str!("migrations/003_scope.sql"),
    include_str!("migrations/004_retention.sql"),
    include_str!("migrations/005_receipts.sql"),
    include_str!("migrations/006_signing.sql"),
];

pub const CURRENT_VERSION: i64 = MIGRATIONS.len() as i64;

/// Data moves that SQL alone cannot do, run after the SQL of the version they belong to.
fn after(version: i64, tx: &Transaction<'_>) -> Result<()> {
    if version == 2 {
        // Fill the new search index. The index rows have no description, so take it from each
        // case's document.
        let mut rows = vec![];
        {
            let mut stmt = tx.prepare("SELECT rowid, id, title FROM cases")?;
            let mut q = stmt.query([])?;
            while let Some(r) = q.next()? {
                rows.push((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?));
            }
        }
        for (rowid, id, title) in rows {
            let description = match super::documents::load(tx, &id) {
                Ok(Some(doc)) => gridwork_model::doc::read_case(&doc).map(|c| c.description).unwrap_or_default(),
                // A document that cannot be read keeps its index row; search just misses it.
                _ => String::new(),
            };
            super::search::index(tx, rowid, &title, &description)?;
        }
    }
    Ok(())
}

/// Brings the database to [`CURRENT_VERSION`]. Returns the version it started from.
pub(crate) fn migrate(conn: &mut Connection) -> Result<i64> {
    migrate_to(conn, CURRENT_VERSION)
}

/// Brings the database to `target` (tests build every old schema with this).
pub(crate) fn migrate_to(conn: &mut Connection, target: i64) -> Result<i64> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > CURRENT_VERSION {
        return Err(CoreError::NewerSchema { found, supported: CURRENT_VERSION });
    }
    for version in (found + 1)..=target {
        let tx = conn.transaction()?;
        let sql = MIGRATIONS[(version - 1) as usize];
        tx.execute_batch(sql)?;
        after(version, &tx)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
    }
    Ok(found)
}
