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

/// When a district works: the days of the week, the hours of a working day, and the dates that
/// differ from the week (public holidays off; weekend days worked instead, 调休). Deadlines and
/// escalation rules count working time by it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkingHours {
    /// ISO weekdays worked: 1 = Monday … 7 = Sunday.
    pub weekdays: Vec<u8>,
    /// The working day, in minutes after local midnight: [start, end).
    pub start_minute: u16,
    pub end_minute: u16,
    /// Local dates (YYYY-MM-DD) not worked.
    #[serde(default)]
    pub holidays: Vec<String>,
    /// Local dates worked although their weekday is not.
    #[serde(default)]
    pub extra_workdays: Vec<String>,
}

impl Default for WorkingHours {
    /// Monday to Friday, 09:00–17:30.
    fn default() -> Self {
        WorkingHours {
            weekdays: vec![1, 2, 3, 4, 5],
            start_minute: 9 * 60,
            end_minute: 17 * 60 + 30,
            holidays: vec![],
            extra_workdays: vec![],
        }
    }
}

/// Working hours that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("working hours: {reason}")]
pub struct BadWorkingHours {
    pub reason: String,
}

impl WorkingHours {
    /// How long a working day is.
    pub fn day_ms(&self) -> i64 {
        i64::from(self.end_minute.saturating_sub(self.start_minute)) * 60_000
    }

    pub fn validate(&self) -> Result<(), BadWorkingHours> {
        let bad = |reason: String| Err(BadWorkingHours { reason });
        if self.start_minute >= self.end_minute || self.end_minute > 24 * 60 {
            return bad(format!(
                "the day must start before it ends, within a day ({} to {})",
                hhmm(self.start_minute),
                hhmm(self.end_minute)
            ));
        }
        if let Some(d) = self.weekdays.iter().find(|d| !(1..=7).contains(*d)) {
            return bad(format!("{d} is not a weekday: use 1 (Monday) to 7 (Sunday)"));
        }
        if self.weekdays.is_empty() && self.extra_workdays.is_empty() {
            return bad("no day is worked".into());
        }
        if let Some(d) =
            self.holidays.iter().chain(&self.extra_workdays).find(|d| d.parse::<jiff::civil::Date>().is_err())
        {
            return bad(format!("{d:?} is not a date: use YYYY-MM-DD"));
        }
        Ok(())
    }

    fn works_on(&self, date: jiff::civil::Date) -> bool {
        let day = date.to_string();
        if self.holidays.contains(&day) {
            return false;
        }
        self.extra_workdays.contains(&day) || self.weekdays.contains(&(date.weekday().to_monday_one_offset() as u8))
    }
}

/// `HH:MM` of minutes after midnight.
pub fn hhmm(minutes: u16) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// How many days ahead working time is looked for: a calendar that works on none of them has no
/// answer (`None`), rather than a loop without end.
const WORKING_SEARCH_DAYS: usize = 3700;

impl DistrictCalendar {
    /// The instant `working_ms` of working time after `from_ms`, counting only `hours`' working
    /// time in this calendar's zone; `None` if there is none within ten years or `from_ms` is
    /// not a time.
    pub fn add_working(&self, hours: &WorkingHours, from_ms: i64, working_ms: i64) -> Option<i64> {
        if working_ms <= 0 {
            return Some(from_ms);
        }
        let mut remaining = working_ms;
        let mut date = jiff::Timestamp::from_millisecond(from_ms).ok()?.to_zoned_datetime(self.tz.clone()).date();
        let at = |date: jiff::civil::Date, minute: u16| -> Option<i64> {
            let (h, m) = ((minute / 60) as i8, (minute % 60) as i8);
            let local = if minute >= 24 * 60 { date.tomorrow().ok()?.at(0, 0, 0, 0) } else { date.at(h, m, 0, 0) };
            Some(local.to_zoned_datetime(self.tz.clone()).ok()?.timestamp().as_millisecond())
        };
        for _ in 0..WORKING_SEARCH_DAYS {
            if hours.works_on(date) {
                let (open, close) = (at(date, hours.start_minute)?, at(date, hours.end_minute)?);
                let begin = from_ms.max(open);
                if begin < close {
                    if remaining <= close - begin {
                        return Some(begin + remaining);
                    }
                    remaining -= close - begin;
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
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

    fn shanghai(local: &str) -> i64 {
        let dt: jiff::civil::DateTime = local.parse().expect("local time");
        dt.to_zoned_datetime(jiff::tz::TimeZone::get("Asia/Shanghai").expect("zone"))
            .expect("zoned")
            .timestamp()
            .as_millisecond()
    }

    #[test]
    fn working_time_skips_nights_weekends_and_holidays() {
        let cal = DistrictCalendar::default();
        let mut hours = WorkingHours::default();
        let h = 3_600_000;
        // Friday 2026-11-27 16:00 + 4 working hours: 1.5 h on Friday, 2.5 h from Monday 09:00.
        assert_eq!(cal.add_working(&hours, shanghai("2026-11-27T16:00"), 4 * h), Some(shanghai("2026-11-30T11:30")));
        // Reported on Saturday night: counting starts Monday morning.
        assert_eq!(cal.add_working(&hours, shanghai("2026-11-28T22:00"), h), Some(shanghai("2026-11-30T10:00")));
        // A working day ahead is the same time the next working day.
        assert_eq!(
            cal.add_working(&hours, shanghai("2026-11-30T10:00"), hours.day_ms()),
            Some(shanghai("2026-12-01T10:00"))
        );
        // A holiday Monday is skipped; a make-up Sunday is worked.
        hours.holidays.push("2026-11-30".into());
        assert_eq!(cal.add_working(&hours, shanghai("2026-11-28T22:00"), h), Some(shanghai("2026-12-01T10:00")));
        hours.extra_workdays.push("2026-11-29".into());
        assert_eq!(cal.add_working(&hours, shanghai("2026-11-28T22:00"), h), Some(shanghai("2026-11-29T10:00")));
        assert_eq!(cal.add_working(&hours, 5, 0), Some(5));
        // No working day at all: no answer, quickly.
        let never = WorkingHours { weekdays: vec![], extra_workdays: vec![], ..WorkingHours::default() };
        assert!(never.validate().is_err());
        assert_eq!(cal.add_working(&never, shanghai("2026-11-28T22:00"), h), None);
        assert!(WorkingHours { start_minute: 600, end_minute: 540, ..WorkingHours::default() }.validate().is_err());
        assert!(WorkingHours { weekdays: vec![8], ..WorkingHours::default() }.validate().is_err());
        assert!(WorkingHours { holidays: vec!["May 1".into()], ..WorkingHours::default() }.validate().is_err());
        assert!(WorkingHours::default().validate().is_ok());
    }
}
