//! Patrols and check-ins: immutable records, written once, synced by id.

use gridwork_model::error::check_text;
use gridwork_model::geo::{distance_m, Location};
use gridwork_model::ids::{GridId, PointId, RecordId, UserId};
use gridwork_model::record::{CheckIn, Record};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

use super::{outbox, to_json, Store};
use crate::error::{CoreError, Result};

/// A check-in as the worker makes it.
#[derive(Debug, Clone)]
pub struct CheckInInput {
    pub patrol: RecordId,
    pub point: Option<PointId>,
    pub location: Location,
    pub note: String,
    pub photo: Option<Vec<u8>>,
}

/// Who visited a patrol point on a day; an empty `visits` means the point was missed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointCoverage {
    pub point: PointId,
    pub name: String,
    /// (user, time in Unix ms), earliest first.
    pub visits: Vec<(UserId, i64)>,
}

impl Store {
    fn write_record(
        &self,
        tx: &Connection,
        record: &Record,
        grid: &GridId,
        patrol: &RecordId,
        at_ms: i64,
    ) -> Result<()> {
        let json = to_json(record)?;
        let typ = match record {
            Record::PatrolStarted { .. } => "patrol_started",
            Record::PatrolFinished { .. } => "patrol_finished",
            Record::CheckIn(_) => "check_in",
        };
        let id = record.id().to_string();
        tx.prepare_cached(
            "INSERT INTO records (id, type, grid_id, patrol_id, day, at_ms, json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            id,
            typ,
            grid.0,
            patrol.to_string(),
            self.inner.calendar.day_of(at_ms),
            at_ms,
            json
        ])?;
        self.enqueue_own(tx, outbox::OutboxKind::Record, None, &id, json.as_bytes())
    }

    /// Starts a patrol of one of the catalogue's grids.
    pub fn start_patrol(&self, grid: &GridId) -> Result<RecordId> {
        self.grid(&grid.0)?;
        let clock = self.stamp();
        let at = clock.estimated_ms();
        let id = RecordId::generate();
        let record = Record::PatrolStarted { id, grid: grid.clone(), actor: self.identity().actor(), clock };
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO patrols (id, grid_id, user_id, started_ms) VALUES (?1, ?2, ?3, ?4)",
            params![id.to_string(), grid.0, self.identity().user.0, at],
        )?;
        self.write_record(&tx, &record, grid, &id, at)?;
        tx.commit()?;
        Ok(id)
    }

    fn open_patrol(&self, conn: &Connection, patrol: &RecordId) -> Result<GridId> {
        let row: Option<(String, Option<i64>)> = conn
            .query_row("SELECT grid_id, finished_ms FROM patrols WHERE id = ?1", [patrol.to_string()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        match row {
            None => Err(CoreError::UnknownPatrol { patrol_id: patrol.to_string() }),
            Some((_, Some(_))) => Err(CoreError::PatrolFinished { patrol_id: patrol.to_string() }),
            Some((grid, None)) => Ok(GridId(grid)),
        }
    }

    /// Checks in during a patrol. A location outside the grid is flagged on the record, never
    /// refused; the photo (if any) is stored first, then one transaction writes the record.
    pub fn check_in(&self, input: CheckInInput) -> Result<CheckIn> {
        check_text("note", &input.note)?;
        let location = input.location.normalized()?;
        let grid_id = self.open_patrol(&self.reader(), &input.patrol)?;
        let grid = self.grid(&grid_id.0)?;
        let distance_to_point_m = match &input.point {
            Some(p) => {
                let point = grid
                    .points
                    .iter()
                    .find(|pt| pt.id == *p)
                    .ok_or_else(|| CoreError::UnknownPoint { grid_id: grid.id.0.clone(), point_id: p.0.clone() })?;
                Some(distance_m((point.lat, point.lon), (location.lat, location.lon)))
            }
            None => None,
        };
        let photo = match &input.photo {
            Some(bytes) => {
                let mut p = crate::evidence::process_photo(bytes)?;
                p.evidence.compare_with_fix(location.lat, location.lon);
                self.inner.files.put(&p.stored)?;
                self.inner.files.put(&p.thumb)?;
                Some(p)
            }
            None => None,
        };
        let clock = self.stamp();
        let at = clock.estimated_ms();
        let checkin = CheckIn {
            id: RecordId::generate(),
            patrol: input.patrol,
            grid: grid_id.clone(),
            point: input.point,
            inside_grid: grid.boundary.contains(location.lat, location.lon),
            location,
            note: input.note,
            photo: photo.as_ref().map(|p| p.evidence.clone()),
            distance_to_point_m,
            actor: self.identity().actor(),
            clock,
        };
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Checked again under the write lock: the patrol may have been finished meanwhile.
        self.open_patrol(&tx, &checkin.patrol)?;
        self.write_record(&tx, &Record::CheckIn(Box::new(checkin.clone())), &grid_id, &checkin.patrol, at)?;
        if let Some(p) = &photo {
            self.link_evidence(&tx, "check_in", &checkin.id.to_string(), p)?;
        }
        tx.commit()?;
        Ok(checkin)
    }

    pub fn finish_patrol(&self, patrol: &RecordId) -> Result<()> {
        let clock = self.stamp();
        let at = clock.estimated_ms();
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let grid = self.open_patrol(&tx, patrol)?;
        let record =
            Record::PatrolFinished { id: RecordId::generate(), patrol: *patrol, actor: self.identity().actor(), clock };
        tx.execute("UPDATE patrols SET finished_ms = ?2 WHERE id = ?1", params![patrol.to_string(), at])?;
        self.write_record(&tx, &record, &grid, patrol, at)?;
        tx.commit()?;
        Ok(())
    }

    /// A grid's check-ins on a local day (`YYYY-MM-DD` in the district's time zone).
    pub fn checkins_for_day(&self, grid: &GridId, day: &str) -> Result<Vec<CheckIn>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT json FROM records WHERE grid_id = ?1 AND day = ?2 AND type = 'check_in' ORDER BY at_ms, id",
        )?;
        let rows = stmt.query_map(params![grid.0, day], |r| r.get::<_, String>(0))?;
        let mut out = vec![];
        for json in rows {
            if let Ok(Record::CheckIn(c)) = serde_json::from_str::<Record>(&json?) {
                out.push(*c);
            }
        }
        Ok(out)
    }

    /// Which of a grid's points were visited on a day, by whom, and which were missed.
    pub fn patrol_coverage(&self, grid: &GridId, day: &str) -> Result<Vec<PointCoverage>> {
        let g = self.grid(&grid.0)?;
        let checkins = self.checkins_for_day(grid, day)?;
        Ok(g.points
            .iter()
            .map(|p| PointCoverage {
                point: p.id.clone(),
                name: p.name.clone(),
                visits: checkins
                    .iter()
                    .filter(|c| c.point.as_ref() == Some(&p.id))
                    .map(|c| (c.actor.user.clone(), c.clock.estimated_ms()))
                    .collect(),
            })
            .collect())
    }

    /// The district-calendar day of an instant.
    pub fn day_of(&self, ms: i64) -> String {
        self.inner.calendar.day_of(ms)
    }
}
