//! Prometheus metrics (OpenMetrics text via `prometheus-client`).
//!
//! Label values come only from bounded sets: source and sink names from the
//! config, fixed outcome words. Never a URL, a path from a request, or an
//! error text: a 404 for `/hooks/<anything>` is counted under the source
//! label `unknown`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::store::{Millis, SinkName, SinkStats};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceOutcome {
    source: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkOutcome {
    sink: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabel {
    sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkStatus {
    sink: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkState {
    sink: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Version {
    version: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

fn end_to_end_histogram() -> Histogram {
    // 5 ms .. ~23 h: retries make end-to-end times long-tailed.
    Histogram::new(exponential_buckets(0.005, 3.0, 16))
}

/// Ingress request outcomes, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngressOutcome {
    /// Stored.
    Accepted,
    /// Dedupe hit.
    Duplicate,
    /// 401.
    Unauthorized,
    /// 403.
    Forbidden,
    /// 400.
    Invalid,
    /// 413.
    TooLarge,
    /// 415.
    Unsupported,
    /// 503.
    Unavailable,
    /// 429: the client address has its share of requests in progress.
    Throttled,
    /// 404.
    NotFound,
}

impl IngressOutcome {
    fn label(self) -> &'static str {
        match self {
            IngressOutcome::Accepted => "accepted",
            IngressOutcome::Duplicate => "duplicate",
            IngressOutcome::Unauthorized => "unauthorized",
            IngressOutcome::Forbidden => "forbidden",
            IngressOutcome::Invalid => "invalid",
            IngressOutcome::TooLarge => "too_large",
            IngressOutcome::Unsupported => "unsupported",
            IngressOutcome::Throttled => "throttled",
            IngressOutcome::Unavailable => "unavailable",
            IngressOutcome::NotFound => "not_found",
        }
    }
}

/// Every metric the relay exports, registered once.
pub struct Metrics {
    registry: Registry,
    ingress: Family<SourceOutcome, Counter>,
    commit: Histogram,
    deliveries: Family<SinkOutcome, Counter>,
    attempt: HistogramFamily<SinkLabel>,
    queue: Family<SinkStatus, Gauge>,
    oldest: Family<SinkLabel, Gauge<f64, AtomicU64>>,
    overdue: Family<SinkLabel, Gauge>,
    state: Family<SinkState, Gauge>,
    end_to_end: HistogramFamily<SinkLabel>,
    fetches: Family<SourceOutcome, Counter>,
    filter_errors: Family<SinkLabel, Counter>,
    fetch_duration: HistogramFamily<SourceLabel>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let ingress = Family::<SourceOutcome, Counter>::default();
        registry.register(
            "hookrelay_ingress_requests",
            "Webhook requests received, by source and outcome",
            ingress.clone(),
        );
        let commit = latency_histogram();
        registry.register(
            "hookrelay_ingress_commit_seconds",
            "Time from a verified request to its durable commit",
            commit.clone(),
        );
        let deliveries = Family::<SinkOutcome, Counter>::default();
        registry.register(
            "hookrelay_deliveries",
            "Delivery attempts by sink and outcome (delivered, retried, dead, filtered)",
            deliveries.clone(),
        );
        let attempt: HistogramFamily<SinkLabel> = Family::new_with_constructor(latency_histogram);
        registry.register(
            "hookrelay_attempt_duration_seconds",
            "Duration of one delivery attempt",
            attempt.clone(),
        );
        let queue = Family::<SinkStatus, Gauge>::default();
        registry.register(
            "hookrelay_queue_depth",
            "Deliveries by sink and status",
            queue.clone(),
        );
        let oldest = Family::<SinkLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "hookrelay_oldest_pending_age_seconds",
            "Age of the oldest pending delivery per sink",
            oldest.clone(),
        );
        let overdue = Family::<SinkLabel, Gauge>::default();
        registry.register(
            "hookrelay_deliveries_overdue",
            "Deliveries in flight over a minute past their lease's end (a relay died or hangs holding them)",
            overdue.clone(),
        );
        let state = Family::<SinkState, Gauge>::default();
        registry.register(
            "hookrelay_sink_state",
            "1 for the sink's current state (active, circuit_open, paused)",
            state.clone(),
        );
        let end_to_end: HistogramFamily<SinkLabel> =
            Family::new_with_constructor(end_to_end_histogram);
        registry.register(
            "hookrelay_end_to_end_seconds",
            "Time from receipt to successful delivery",
            end_to_end.clone(),
        );
        let fetches = Family::<SourceOutcome, Counter>::default();
        registry.register(
            "hookrelay_fetches",
            "Fetch attempts of feature changes by source and outcome (done, retried, dead, refused)",
            fetches.clone(),
        );
        let filter_errors = Family::<SinkLabel, Counter>::default();
        registry.register(
            "hookrelay_filter_errors",
            "Filter evaluations that failed (a missing key, a wrong type), each counted as no match",
            filter_errors.clone(),
        );
        let fetch_duration: HistogramFamily<SourceLabel> =
            Family::new_with_constructor(end_to_end_histogram);
        registry.register(
            "hookrelay_fetch_duration_seconds",
            "Duration of one fetch attempt (every changesUrl of a message, async jobs included)",
            fetch_duration.clone(),
        );
        let build = Family::<Version, Gauge>::default();
        build
            .get_or_create(&Version {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("hookrelay_build_info", "Build information", build);
        Metrics {
            registry,
            ingress,
            commit,
            deliveries,
            attempt,
            queue,
            oldest,
            overdue,
            state,
            end_to_end,
            fetches,
            filter_errors,
            fetch_duration,
        }
    }

    /// Counts filter evaluations that failed (each counted as no match).
    pub fn filter_errors(&self, sink: &str, n: u64) {
        self.filter_errors
            .get_or_create(&SinkLabel {
                sink: sink.to_string(),
            })
            .inc_by(n);
    }

    /// Counts a finished fetch attempt: `outcome` is done, retried, dead
    /// or refused; `source` a configured source name.
    pub fn fetch(&self, source: &str, outcome: &'static str, secs: f64) {
        self.fetches
            .get_or_create(&SourceOutcome {
                source: source.to_string(),
                outcome,
            })
            .inc();
        self.fetch_duration
            .get_or_create(&SourceLabel {
                source: source.to_string(),
            })
            .observe(secs);
    }

    /// Counts one ingress request. `source` must be a configured name or `unknown`.
    pub fn ingress(&self, source: &str, outcome: IngressOutcome) {
        self.ingress
            .get_or_create(&SourceOutcome {
                source: source.to_string(),
                outcome: outcome.label(),
            })
            .inc();
    }

    /// Records one group-commit latency.
    pub fn commit_seconds(&self, secs: f64) {
        self.commit.observe(secs);
    }

    /// Counts a finished attempt: `outcome` is delivered, retried or dead.
    pub fn delivery(&self, sink: &str, outcome: &'static str, attempt_secs: f64) {
        self.deliveries
            .get_or_create(&SinkOutcome {
                sink: sink.to_string(),
                outcome,
            })
            .inc();
        self.attempt
            .get_or_create(&SinkLabel {
                sink: sink.to_string(),
            })
            .observe(attempt_secs);
    }

    /// Records receipt-to-delivery latency.
    pub fn end_to_end(&self, sink: &str, secs: f64) {
        self.end_to_end
            .get_or_create(&SinkLabel {
                sink: sink.to_string(),
            })
            .observe(secs);
    }

    /// Refreshes the gauges from a fresh look at the store and sink states,
    /// just before a scrape. `states` holds each configured sink's state word.
    pub fn refresh(&self, stats: &[SinkStats], states: &[(SinkName, &'static str)], now: Millis) {
        for (sink, current) in states {
            let s = stats.iter().find(|s| &s.sink == sink);
            let by = |f: fn(&SinkStats) -> u64| s.map(f).unwrap_or(0) as i64;
            for (status, v) in [
                ("pending", by(|s| s.pending)),
                ("in_flight", by(|s| s.in_flight)),
                ("dead", by(|s| s.dead)),
                ("delivered", by(|s| s.delivered)),
            ] {
                self.queue
                    .get_or_create(&SinkStatus {
                        sink: sink.to_string(),
                        status,
                    })
                    .set(v);
            }
            let age = s
                .and_then(|s| s.oldest_pending_at)
                .map(|t| now.since(t).as_secs_f64())
                .unwrap_or(0.0);
            self.oldest
                .get_or_create(&SinkLabel {
                    sink: sink.to_string(),
                })
                .set(age);
            self.overdue
                .get_or_create(&SinkLabel {
                    sink: sink.to_string(),
                })
                .set(by(|s| s.overdue_in_flight));
            for state in ["active", "circuit_open", "paused"] {
                self.state
                    .get_or_create(&SinkState {
                        sink: sink.to_string(),
                        state,
                    })
                    .set((state == *current) as i64);
            }
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
