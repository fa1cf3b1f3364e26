//! Time that does not trust the device clock.
//!
//! A phone's wall clock can be wrong by hours (dead battery, manual setting). Every event keeps
//! three readings so the server can reconstruct when it really happened: the wall clock, the
//! monotonic time since boot with the boot's id (two events in one boot are correctly ordered and
//! spaced even if the wall clock jumps), and the last offset to server time the device learnt.
//! Calendar questions ("today", deadlines) are asked in the district's time zone, not the phone's.

use serde::{Deserialize, Serialize};

/// The clock readings stamped on an event or record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ClockStamp {
    /// Device wall clock, Unix milliseconds.
    pub device_ms: i64,
    /// Milliseconds since the device booted (monotonic).
    pub since_boot_ms: i64,
    /// Identifies the boot `since_boot_ms` counts from.
    pub boot_id: String,
    /// Last known `server_time - device_time` in milliseconds, if the device has ever synced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_offset_ms: Option<i64>,
}

impl ClockStamp {
    /// Best estimate of the true time: the device clock corrected by the last known offset.
    pub fn estimated_ms(&self) -> i64 {
        self.device_ms.saturating_add(self.server_offset_ms.unwrap_or(0))
    }

    /// How far this stamp's wall clock was from the true time, when it can be told: the server
    /// learnt that the boot `boot.0` began at `boot.1` (its own time, from a sync in that boot:
    /// the server's clock minus the phone's time since boot), so the stamped moment truly was
    /// `boot.1 + since_boot_ms` — whatever the wall clock said. Positive: the wall clock was
    /// ahead; negative: set back. None for a stamp of another boot.
    pub fn wall_clock_error_ms(&self, boot: (&str, i64)) -> Option<i64> {
        (!boot.0.is_empty() && self.boot_id == boot.0)
            .then(|| self.device_ms.saturating_sub(boot.1.saturating_add(self.since_boot_ms)))
    }
}

/// A stamp whose wall clock was further than this from the true time is flagged (never refused):
/// more than a phone's clock drifts, less than a patrol's worth of hiding.
pub const WALL_CLOCK_FLAG_MS: i64 = 10 * 60 * 1000;

/// The district's calendar: which time zone "today" and deadlines are counted in.
#[derive(Debug, Clone)]
pub struct DistrictCalendar {
    tz: jiff::tz::TimeZone,
}

/// A time zone name the bundled database does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown time zone {name:?}: use an IANA name such as \"Asia/Shanghai\"")]
pub struct UnknownTimeZone {
    pub name: String,
}

impl Default for DistrictCalendar {
    fn default() -> Self {
        // The bundled tz database always has Asia/Shanghai; the fixed +08:00 fallback is the same
        // zone (no DST since 1991) and keeps this constructor infallible.
        let tz =
            jiff::tz::TimeZone::get("Asia/Shanghai").unwrap_or_else(|_| jiff::tz::TimeZone::fixed(jiff::tz::offset(8)));
        DistrictCalendar { tz }
    }
}

impl DistrictCalendar {
    pub fn new(name: &str) -> Result<Self, UnknownTimeZone> {
        jiff::tz::TimeZone::get(name)
            .map(|tz| DistrictCalendar { tz })
            .map_err(|_| UnknownTimeZone { name: name.to_owned() })
    }

    /// The local calendar day containing `ms` as `YYYY-MM-DD`.
    pub fn day_of(&self, ms: i64) -> String {
        match jiff::Timestamp::from_millisecond(ms) {
            Ok(ts) => ts.to_zoned_datetime(self.tz.clone()).date().to_string(),
            Err(_) => "invalid-date".to_owned(),
        }
    }

    /// The local time of `ms` to the minute, `YYYY-MM-DD HH:MM`.
    pub fn minute_of(&self, ms: i64) -> String {
        match jiff::Timestamp::from_millisecond(ms) {
            Ok(ts) => ts.to_zoned_datetime(self.tz.clone()).strftime("%Y-%m-%d %H:%M").to_string(),
            Err(_) => "invalid-date".to_owned(),
        }
    }

    /// Start and end (exclusive), in Unix ms, of the local day `YYYY-MM-DD`.
    pub fn day_bounds(&self, day: &str) -> Option<(i64, i64)> {
        let date: jiff::civil::Date = day.parse().ok()?;
        let start = date.to_zoned_datetime(self.tz.clone()).ok()?;
        let end = date.tomorrow().ok()?.to_zoned_datetime(self.tz.clone()).ok()?;
        Some((start.timestamp().as_millisecond(), end.timestamp().as_millisecond()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shanghai_day_starts_at_utc_16() {
        let cal = DistrictCalendar::default();
        // 2026-11-26T16:30:00Z is already 2026-11-27 00:30 in Shanghai.
        let ms = 1_795_710_600_000;
        assert_eq!(cal.day_of(ms), "2026-11-27");
        assert_eq!(cal.minute_of(ms), "2026-11-27 00:30");
        let (start, end) = cal.day_bounds("2026-11-27").expect("valid day");
        assert_eq!(end - start, 86_400_000);
        assert!(start <= ms && ms < end);
        assert!(DistrictCalendar::new("Mars/Olympus").is_err());
    }
}
