//! Every bound on what a request may cost the server, in one place (docs/SECURITY.md, "Bounded
//! resources"). Connections and headers are bounded by the accept loop ([`crate::serve`]) with
//! hyper's own settings; bodies, items and decoded bytes here, where a request enters.
//!
//! Memory is bounded by construction, not by hoping requests are small: every request that
//! buffers bytes — a sync's body and the page it pulls, a downloaded blob — first takes that many
//! bytes from one [`MemoryBudget`], and waits (in arrival order) while the budget is spent. What
//! a request costs in memory is a small multiple of what it takes (parsed JSON, decoded changes,
//! the response's base64), so the budget times that multiple plus the server's own working set
//! stays under the 512 MB a district server is given; `gridwork-bench abuse` measures it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{Quota, RateLimiter};

use crate::error::ServerError;

/// Largest request body accepted (a page of pushed changes; phones send about 256 KiB).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Largest enrolment request: a code and an app version.
pub const MAX_ENROL_BODY_BYTES: usize = 4 * 1024;
/// Changes, records and whole-document requests one sync may carry (the phone pages below it).
pub use gridwork_model::wire::MAX_ITEMS_PER_REQUEST;
/// Bytes the changes of one request may inflate to, all together (each change on its own is
/// bounded by [`crate::ingest::MAX_CHANGE_BYTES`]). Changes past it are refused with a reason and
/// stay in the phone's outbox for its next request.
pub const MAX_DECODED_BYTES_PER_REQUEST: usize = 8 * 1024 * 1024;
/// The most a sync's pulled page may hold, whatever the device asks for in `max_pull_bytes`.
pub const MAX_PULL_BYTES: u64 = 1024 * 1024;
/// Bytes of requests and responses buffered at once by requests that declare a body of at most
/// [`SMALL_REQUEST_BYTES`] — every phone's sync — and by downloads (see the module doc).
pub const MEMORY_BUDGET_BYTES: usize = 48 * 1024 * 1024;
/// A request declaring more than this (or no length) is large: it draws from
/// [`LARGE_REQUEST_BUDGET_BYTES`], so large requests wait for each other, never for the phones.
pub const SMALL_REQUEST_BYTES: usize = 1024 * 1024;
/// The budget large requests share: one request at the body limit runs at a time.
pub const LARGE_REQUEST_BUDGET_BYTES: usize = 24 * 1024 * 1024;
/// A request's headers must arrive within this (hyper closes the connection otherwise); it also
/// ends an idle keep-alive connection.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(15);
/// A request's body must arrive within this. A phone's page of 256 KiB takes 33 s at 64 kbit/s;
/// an evidence upload cut by it keeps what arrived and resumes from there.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(120);
/// A body slower than this on average is cut off once [`BODY_GRACE`] has passed: a phone on a
/// 2G link sends several KiB a second, a connection trickling a byte a second is holding a slot.
pub const MIN_BODY_RATE_BYTES_PER_S: u64 = 512;
/// How long a body may take before [`MIN_BODY_RATE_BYTES_PER_S`] applies (a slow start, a stall).
pub const BODY_GRACE: Duration = Duration::from_secs(10);
/// How long a request waits for the memory budget before it is told the server is busy.
pub const BUDGET_WAIT: Duration = Duration::from_secs(20);
/// Connections open at once; more wait in the kernel's accept queue until one closes.
pub const MAX_CONNECTIONS: usize = 4096;

/// When a body's next bytes must have arrived: within the whole-body timeout, and at an average
/// of at least [`MIN_BODY_RATE_BYTES_PER_S`] once [`BODY_GRACE`] has passed.
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline {
    start: tokio::time::Instant,
    timeout: Duration,
}

impl BodyDeadline {
    /// Starts the clock for a body that must arrive within `timeout`.
    pub fn start(timeout: Duration) -> BodyDeadline {
        BodyDeadline { start: tokio::time::Instant::now(), timeout }
    }

    /// The moment by which more than `received` bytes must have arrived.
    pub fn next(&self, received: u64) -> tokio::time::Instant {
        let by_rate = BODY_GRACE + Duration::from_millis(received.saturating_mul(1000) / MIN_BODY_RATE_BYTES_PER_S);
        self.start + by_rate.min(self.timeout)
    }
}

/// The unit the memory budget counts in (a semaphore has at most `u32::MAX` permits).
const BUDGET_UNIT: usize = 1024;

/// Bytes buffered by requests in flight, across the server (see the module doc).
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    permits: Arc<tokio::sync::Semaphore>,
    total_units: u32,
}

/// Bytes taken from the budget, given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    bytes: usize,
}

impl Reservation {
    /// How many bytes this holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl MemoryBudget {
    pub fn new(bytes: usize) -> MemoryBudget {
        let total_units = u32::try_from(bytes / BUDGET_UNIT).unwrap_or(u32::MAX).max(1);
        MemoryBudget { permits: Arc::new(tokio::sync::Semaphore::new(total_units as usize)), total_units }
    }

    /// Takes `bytes` from the budget, waiting while it is spent — for at most [`BUDGET_WAIT`],
    /// then `Busy` (503 with `Retry-After`: the phone backs off and retries). A request larger
    /// than the whole budget takes all of it (it then runs alone).
    pub async fn reserve(&self, bytes: usize) -> Result<Reservation, ServerError> {
        let units = u32::try_from(bytes.div_ceil(BUDGET_UNIT)).unwrap_or(u32::MAX).clamp(1, self.total_units);
        match tokio::time::timeout(BUDGET_WAIT, self.permits.clone().acquire_many_owned(units)).await {
            Err(_) => Err(ServerError::Busy { retry_after_s: 5 }),
            // The semaphore is never closed, so acquiring only fails if it were; then run
            // unbudgeted rather than refuse the request.
            Ok(permit) => Ok(Reservation { _permit: permit.ok(), bytes: units as usize * BUDGET_UNIT }),
        }
    }

    /// All the bytes this budget has.
    pub fn total(&self) -> usize {
        self.total_units as usize * BUDGET_UNIT
    }

    /// Bytes free now (for tests and metrics).
    pub fn available(&self) -> usize {
        self.permits.available_permits() * BUDGET_UNIT
    }
}

type Keyed<K> = RateLimiter<K, governor::state::keyed::DefaultKeyedStateStore<K>, governor::clock::DefaultClock>;

/// Failed enrolment attempts, limited per network address and per code presented. A code is 80
/// random bits (20 hex digits, `SqliteStore::enrol_device`), so guessing one is hopeless anyway;
/// the limits keep a guesser from costing the server work and make a stolen QR code's misuse slow
/// and visible. Only failures count: an office enrolling a team's phones behind one address is
/// never held back.
#[derive(Debug)]
pub struct EnrolLimits {
    by_address: Keyed<IpAddr>,
    by_code: Keyed<String>,
    /// Who is refused until when, after going over a limit.
    blocked: Mutex<HashMap<Blocked, Instant>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Blocked {
    Address(IpAddr),
    Code(String),
}

/// Failures per address: a burst of 10 (typos while enrolling a team), then one every 6 seconds.
const ENROL_PER_ADDRESS: (u32, Duration) = (10, Duration::from_secs(6));
/// Failures with one code: a few retries over a flaky link, then one a minute.
const ENROL_PER_CODE: (u32, Duration) = (5, Duration::from_secs(60));

impl Default for EnrolLimits {
    fn default() -> Self {
        let quota = |(burst, every): (u32, Duration)| {
            Quota::with_period(every)
                .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
        };
        EnrolLimits {
            by_address: RateLimiter::keyed(quota(ENROL_PER_ADDRESS)),
            by_code: RateLimiter::keyed(quota(ENROL_PER_CODE)),
            blocked: Mutex::new(HashMap::new()),
        }
    }
}

/// The code as a key: its first 64 characters (a megabyte-long "code" is not kept).
fn code_key(code: &str) -> String {
    code.chars().take(64).collect()
}

impl EnrolLimits {
    /// Before an attempt: `RateLimited` while `peer` or `code` is over its limit.
    pub fn check(&self, peer: Option<IpAddr>, code: &str) -> Result<(), ServerError> {
        let now = Instant::now();
        let blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        let until = |key: &Blocked| blocked.get(key).filter(|t| **t > now).map(|t| *t - now);
        if let Some(wait) = peer.and_then(|ip| until(&Blocked::Address(ip))) {
            return Err(refused("enrolment attempts from this address", wait));
        }
        if let Some(wait) = until(&Blocked::Code(code_key(code))) {
            return Err(refused("attempts with this enrolment code", wait));
        }
        Ok(())
    }

    /// After a wrong code: counts the failure, and answers `RateLimited` (instead of the wrong
    /// code's 403) when it takes the address or the code over its limit.
    pub fn failed(&self, peer: Option<IpAddr>, code: &str) -> Result<(), ServerError> {
        let clock = governor::clock::DefaultClock::default();
        let now = Instant::now();
        let mut over = None;
        if let Some(ip) = peer {
            if let Err(n) = self.by_address.check_key(&ip) {
                let wait = n.wait_time_from(governor::clock::Clock::now(&clock));
                over = Some((Blocked::Address(ip), wait, "enrolment attempts from this address"));
            }
        }
        if over.is_none() {
            if let Err(n) = self.by_code.check_key(&code_key(code)) {
                let wait = n.wait_time_from(governor::clock::Clock::now(&clock));
                over = Some((Blocked::Code(code_key(code)), wait, "attempts with this enrolment code"));
            }
        }
        let Some((key, wait, what)) = over else { return Ok(()) };
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        // Forget blocks that have ended, so the map cannot grow without bound.
        if blocked.len() > 10_000 {
            blocked.retain(|_, t| *t > now);
            self.by_address.retain_recent();
            self.by_code.retain_recent();
        }
        blocked.insert(key, now + wait);
        Err(refused(what, wait))
    }
}

fn refused(what: &'static str, wait: Duration) -> ServerError {
    ServerError::RateLimited { what, retry_after_s: wait.as_secs().max(1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_enrolment_attempts_are_limited_per_address_and_per_code() {
        let limits = EnrolLimits::default();
        let ip: IpAddr = [10, 0, 0, 7].into();
        let attempt =
            |ip: IpAddr, code: &str| limits.check(Some(ip), code).and_then(|()| limits.failed(Some(ip), code));
        let allowed = (0..30).filter(|i| attempt(ip, &format!("guess-{i}")).is_ok()).count();
        assert_eq!(allowed, ENROL_PER_ADDRESS.0 as usize, "a burst, then refused");
        let refused = limits.check(Some(ip), "another").expect_err("still limited");
        assert_eq!(refused.status_and_code(), (429, "rate_limited"));
        // Another address is not held back by the first one's guesses…
        assert!(attempt([10, 0, 0, 8].into(), "x").is_ok());
        // …but one code tried from many addresses is.
        let tries = (0..20u8).filter(|i| attempt([10, 1, 0, *i].into(), "same-code").is_ok()).count();
        assert_eq!(tries, ENROL_PER_CODE.0 as usize);
        // Successes are never counted: checking alone does not spend anything.
        let office: IpAddr = [10, 2, 0, 1].into();
        assert!((0..100).all(|i| limits.check(Some(office), &format!("good-{i}")).is_ok()));
    }

    #[tokio::test]
    async fn a_body_must_keep_a_minimum_average_rate_after_its_grace_and_end_within_its_timeout() {
        let clock = BodyDeadline::start(Duration::from_secs(120));
        let at = |received: u64| clock.next(received) - clock.start;
        assert_eq!(at(0), BODY_GRACE, "a byte a second is cut off when the grace ends");
        assert_eq!(at(10), BODY_GRACE + Duration::from_millis(10 * 1000 / MIN_BODY_RATE_BYTES_PER_S));
        // A 64 kbit/s phone has sent 8 KiB by each second: always well ahead of its deadline.
        for t in 1..60u64 {
            assert!(at(8 * 1024 * t) > Duration::from_secs(t));
        }
        assert_eq!(at(u64::MAX), Duration::from_secs(120), "never past the whole-body timeout");
    }

    #[tokio::test]
    async fn the_memory_budget_makes_requests_wait_until_bytes_are_given_back() {
        let budget = MemoryBudget::new(4 * BUDGET_UNIT);
        let first = budget.reserve(3 * BUDGET_UNIT).await.expect("free");
        assert_eq!(budget.available(), BUDGET_UNIT);
        let waiting = tokio::time::timeout(Duration::from_millis(50), budget.reserve(2 * BUDGET_UNIT)).await;
        assert!(waiting.is_err(), "over the budget: waits");
        drop(first);
        let second = tokio::time::timeout(Duration::from_millis(500), budget.reserve(2 * BUDGET_UNIT)).await;
        assert!(second.is_ok(), "given back: proceeds");
        // Larger than the whole budget: takes all of it rather than wait forever.
        drop(second);
        let all = tokio::time::timeout(Duration::from_millis(500), budget.reserve(usize::MAX)).await;
        assert!(matches!(all, Ok(Ok(_))));
        assert_eq!(budget.available(), 0);
    }
}
