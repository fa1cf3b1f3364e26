//! Where the core gets time from. The app supplies the readings on a phone (Android's
//! `elapsedRealtime`, iOS's `systemUptime`); tests supply a fake clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// One reading of the device's clocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockReading {
    pub wall_ms: i64,
    pub since_boot_ms: i64,
    pub boot_id: String,
}

pub trait DeviceClock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> ClockReading;
}

/// The host's clocks: wall time, and on Linux the kernel's boot id and uptime.
#[derive(Debug, Default)]
pub struct SystemClock;

impl DeviceClock for SystemClock {
    fn now(&self) -> ClockReading {
        let wall_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown-boot".to_owned());
        let since_boot_ms = std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()))
            .map(|secs| (secs * 1000.0) as i64)
            .unwrap_or(0);
        ClockReading { wall_ms, since_boot_ms, boot_id }
    }
}

/// A clock tests can set and advance.
#[derive(Debug)]
pub struct FixedClock {
    ms: std::sync::atomic::AtomicI64,
}

impl FixedClock {
    pub fn new(ms: i64) -> Self {
        FixedClock { ms: std::sync::atomic::AtomicI64::new(ms) }
    }
    pub fn set(&self, ms: i64) {
        self.ms.store(ms, std::sync::atomic::Ordering::SeqCst);
    }
    pub fn advance(&self, by_ms: i64) {
        self.ms.fetch_add(by_ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl DeviceClock for FixedClock {
    fn now(&self) -> ClockReading {
        let ms = self.ms.load(std::sync::atomic::Ordering::SeqCst);
        ClockReading { wall_ms: ms, since_boot_ms: ms, boot_id: "fixed".into() }
    }
}
