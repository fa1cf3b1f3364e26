//! The one row a record is filed in: since schema 7 a check-in's facts are columns of the
//! record's own row (the `check_ins` view reads them), so a check-in costs one row, not two (ADR 15).

use rusqlite::{params, Connection};

use super::exec;
use crate::error::Result;
use crate::records::{CheckIn, RecordFacts};

/// Stores a record (idempotent by id) with its check-in facts, if it is a check-in.
pub(super) fn insert_record(
    tx: &Connection,
    id: &str,
    device_id: &str,
    received_ms: i64,
    body: &str,
    check_in: Option<&CheckIn<'_>>,
) -> Result<()> {
    let c = check_in;
    exec(
        tx,
        "INSERT INTO records (id, device_id, received_ms, body, grid_id, point_id, user_id, at_ms, day, inside_grid,
            distance_m, mock)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) ON CONFLICT (id) DO NOTHING",
        params![
            id,
            device_id,
            received_ms,
            body,
            c.map(|c| c.grid),
            c.and_then(|c| c.point),
            c.map(|c| c.user),
            c.map(|c| c.at_ms),
            c.map(|c| c.day.as_str()),
            c.map(|c| c.inside_grid),
            c.and_then(|c| c.distance_m),
            c.map(|c| c.mock),
        ],
    )?;
    Ok(())
}

/// Files a stored record's check-in in the separate `check_ins` table of schemas 4 to 6: only
/// the schema 4 migration calls it, before schema 7 folds that table into `records`.
pub(super) fn file_check_in_before_7(tx: &Connection, id: &str, device_id: &str, body: &str) -> Result<()> {
    let facts = RecordFacts::read(body);
    let Some(c) = facts.check_in() else { return Ok(()) };
    exec(
        tx,
        "INSERT INTO check_ins (id, grid_id, point_id, user_id, device_id, at_ms, day, inside_grid, distance_m)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (id) DO NOTHING",
        params![id, c.grid, c.point, c.user, device_id, c.at_ms, c.day, c.inside_grid, c.distance_m],
    )?;
    Ok(())
}
