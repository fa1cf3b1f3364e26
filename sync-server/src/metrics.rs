//! `/metrics`, in the Prometheus text format: what an operator watches on a district's server.
//!
//! Counters and the latency histogram are updated by the HTTP layer as requests finish; the
//! quarantine size and the devices by age of their oldest unsynced work are read from the store
//! when Prometheus scrapes, so they are never stale. Labels carry endpoints and outcomes, never a
//! device or a person.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::store::OperatorStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ItemOutcome {
    Accepted,
    Quarantined,
    Refused,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Direction {
    Up,
    Down,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: ItemOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: Direction,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabel {
    /// The route as declared (`/v1/blobs/{sha256}`), so blobs do not each make a series.
    endpoint: String,
    /// The status class: 2xx, 4xx, 5xx.
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabel {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgeLabel {
    age: String,
}

type HistogramFamily = Family<RequestLabel, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms … 16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

pub struct Metrics {
    registry: Registry,
    syncs: Counter,
    items: Family<OutcomeLabel, Counter>,
    bytes: Family<DirectionLabel, Counter>,
    blob_bytes: Counter,
    errors: Family<ErrorLabel, Counter>,
    requests: HistogramFamily,
    quarantine_pending: Gauge,
    devices: Family<AgeLabel, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gridwork");
        let syncs = Counter::default();
        registry.register("syncs", "Sync requests answered", syncs.clone());
        let items = Family::<OutcomeLabel, Counter>::default();
        registry.register("items", "Pushed changes and records, by outcome", items.clone());
        let bytes = Family::<DirectionLabel, Counter>::default();
        registry.register("sync_bytes", "Sync request and response body bytes", bytes.clone());
        let blob_bytes = Counter::default();
        registry.register("blob_bytes_received", "Evidence bytes received", blob_bytes.clone());
        let errors = Family::<ErrorLabel, Counter>::default();
        registry.register("errors", "Requests refused, by error code", errors.clone());
        let requests: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register("request_duration_seconds", "Request latency by endpoint", requests.clone());
        let quarantine_pending = Gauge::default();
        registry.register(
            "quarantine_pending",
            "Quarantined items awaiting an administrator",
            quarantine_pending.clone(),
        );
        let devices = Family::<AgeLabel, Gauge>::default();
        registry.register(
            "devices_by_unsynced_age",
            "Active devices by the age of their oldest unsynced work, as last reported",
            devices.clone(),
        );
        Metrics { registry, syncs, items, bytes, blob_bytes, errors, requests, quarantine_pending, devices }
    }

    /// One answered sync.
    pub fn sync(&self, up: usize, down: usize, outcomes: impl IntoIterator<Item = ItemOutcome>) {
        self.syncs.inc();
        self.bytes.get_or_create(&DirectionLabel { direction: Direction::Up }).inc_by(up as u64);
        self.bytes.get_or_create(&DirectionLabel { direction: Direction::Down }).inc_by(down as u64);
        for outcome in outcomes {
            self.items.get_or_create(&OutcomeLabel { outcome }).inc();
        }
    }

    pub fn blob_bytes(&self, n: u64) {
        self.blob_bytes.inc_by(n);
    }

    pub fn error(&self, code: &str) {
        self.errors.get_or_create(&ErrorLabel { code: code.to_owned() }).inc();
    }

    pub fn request(&self, endpoint: &str, status: u16, seconds: f64) {
        let label = RequestLabel { endpoint: endpoint.to_owned(), status: format!("{}xx", status / 100) };
        self.requests.get_or_create(&label).observe(seconds);
    }

    /// The text exposition, with the scrape-time figures from the store.
    pub fn render(&self, stats: &OperatorStats) -> Result<String, std::fmt::Error> {
        self.quarantine_pending.set(stats.quarantine_pending);
        for (age, n) in &stats.devices_by_unsynced_age {
            self.devices.get_or_create(&AgeLabel { age: (*age).to_owned() }).set(*n);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
