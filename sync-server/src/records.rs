//! Immutable records (patrol start and finish, check-ins): what the server reads of a pushed
//! record. Backends file it (the SQLite store: one row, `store/sqlite/records.rs`).
//!
//! A record is stored as the device sent it. The server reads two things from it, in one parse:
//! who it says made it (checked against the sending device) and, for a check-in, the facts the
//! console's coverage and assessment count. Since schema 7 those facts are columns of the
//! record's own row (the `check_ins` view reads them), so a check-in costs one row, not two (ADR 15).

use std::borrow::Cow;

use gridwork_model::time::{ClockStamp, DistrictCalendar};

/// What the server reads of a record body. Every field is optional: a body this build cannot
/// read is still stored (and quarantined if it does not name its sender).
///
/// Public (re-exported as `store::RecordFacts`) only so the fuzz targets in `gridwork-tests` can
/// call [`RecordFacts::read`] on arbitrary bodies, as a device can send them.
#[derive(Debug, Default, serde::Deserialize)]
pub struct RecordFacts<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    grid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    point: Option<Cow<'a, str>>,
    #[serde(default)]
    inside_grid: bool,
    #[serde(default)]
    distance_to_point_m: Option<f64>,
    #[serde(borrow, default)]
    actor: Option<ClaimedActor<'a>>,
    #[serde(default)]
    clock: Option<ClockStamp>,
    #[serde(default)]
    location: Option<FixFlags>,
}

/// What the server reads of a check-in's fix: whether the phone's OS marked it mock.
#[derive(Debug, Default, serde::Deserialize)]
struct FixFlags {
    #[serde(default)]
    mock: bool,
}

/// Who a record says made it.
#[derive(Debug, Default, serde::Deserialize)]
struct ClaimedActor<'a> {
    #[serde(borrow, default)]
    device: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    user: Option<Cow<'a, str>>,
}

/// Only the claim, for a body whose other fields this build cannot read.
#[derive(Debug, Default, serde::Deserialize)]
struct ClaimOnly<'a> {
    #[serde(borrow, default)]
    actor: Option<ClaimedActor<'a>>,
}

/// A check-in's facts as the console reads them.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckIn<'f> {
    pub grid: &'f str,
    pub point: Option<&'f str>,
    pub user: &'f str,
    pub at_ms: i64,
    /// The district calendar's day of `at_ms`.
    pub day: String,
    pub inside_grid: bool,
    pub distance_m: Option<f64>,
    /// The fix came from a mock-location provider (flagged and counted apart, never refused).
    pub mock: bool,
}

impl<'a> RecordFacts<'a> {
    /// Reads a body once. A field of an unexpected type loses only the check-in's facts: the
    /// claim is read again on its own, so the record is judged as before schema 7.
    pub fn read(body: &'a str) -> Self {
        serde_json::from_str(body).unwrap_or_else(|_| {
            let claim: ClaimOnly<'a> = serde_json::from_str(body).unwrap_or_default();
            RecordFacts { actor: claim.actor, ..Default::default() }
        })
    }

    /// The record's clock readings, if it carries them.
    pub fn clock(&self) -> Option<&ClockStamp> {
        self.clock.as_ref()
    }

    /// True when the record names this device and user as its maker.
    pub fn claims(&self, device: &str, user: &str) -> bool {
        self.actor.as_ref().is_some_and(|a| a.device.as_deref() == Some(device) && a.user.as_deref() == Some(user))
    }

    /// A check-in's facts; `None` for another record, or a check-in missing one of them.
    pub fn check_in(&self) -> Option<CheckIn<'_>> {
        if self.kind.as_deref() != Some("check_in") {
            return None;
        }
        let (grid, user, clock) = (self.grid.as_deref()?, self.actor.as_ref()?.user.as_deref()?, self.clock.as_ref()?);
        let at_ms = clock.estimated_ms();
        Some(CheckIn {
            grid,
            point: self.point.as_deref(),
            user,
            at_ms,
            day: district_calendar().day_of(at_ms),
            inside_grid: self.inside_grid,
            distance_m: self.distance_to_point_m,
            mock: self.location.as_ref().is_some_and(|l| l.mock),
        })
    }
}

/// The district's calendar, made once (finding a time zone in the bundled database is not free,
/// and every check-in needs its day).
fn district_calendar() -> &'static DistrictCalendar {
    static CALENDAR: std::sync::OnceLock<DistrictCalendar> = std::sync::OnceLock::new();
    CALENDAR.get_or_init(DistrictCalendar::default)
}
