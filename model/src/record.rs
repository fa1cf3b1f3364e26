//! Immutable records: patrols and check-ins. They are facts, not documents — nobody edits a
//! check-in — so each is keyed by a UUIDv7 and syncs as an idempotent record, not a CRDT.

use serde::{Deserialize, Serialize};

use crate::catalog::Actor;
use crate::evidence::EvidenceRef;
use crate::geo::Location;
use crate::ids::{GridId, PointId, RecordId};
use crate::time::ClockStamp;

/// One immutable record as it is stored and sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    PatrolStarted {
        id: RecordId,
        grid: GridId,
        actor: Actor,
        clock: ClockStamp,
    },
    PatrolFinished {
        id: RecordId,
        patrol: RecordId,
        actor: Actor,
        clock: ClockStamp,
    },
    /// Boxed: a check-in is several times larger than the patrol records.
    CheckIn(Box<CheckIn>),
}

impl Record {
    pub fn id(&self) -> RecordId {
        match self {
            Record::PatrolStarted { id, .. } | Record::PatrolFinished { id, .. } => *id,
            Record::CheckIn(c) => c.id,
        }
    }
}

/// A check-in at a patrol point (or anywhere, during a patrol).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckIn {
    pub id: RecordId,
    pub patrol: RecordId,
    pub grid: GridId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point: Option<PointId>,
    pub location: Location,
    #[serde(default)]
    pub note: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub photo: Option<EvidenceRef>,
    /// Whether the fix lies inside the grid's boundary. Flagged, never refused.
    pub inside_grid: bool,
    /// Distance from the named patrol point, in metres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distance_to_point_m: Option<f64>,
    pub actor: Actor,
    pub clock: ClockStamp,
}
