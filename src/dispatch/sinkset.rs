//! The sinks at run time: each one's sender, policy and switches (pause,
//! circuit, rate limit, deactivation), built once by `app::compile`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::circuit::{Circuit, CircuitPolicy, Deactivation, Gate};
use super::ratelimit::RateLimiter;
use crate::config::{Config, ConfigError, DeliveryPolicy, SinkKind};
use crate::filter::Filter;
use crate::sinks::Sink;
use crate::store::{Millis, SinkName, Store, StoreError};

/// A configured sink at run time: how to send, its policy and its switches.
pub struct SinkRuntime {
    /// Name from the config.
    pub name: SinkName,
    /// Kind from the config.
    pub kind: SinkKind,
    /// Effective delivery settings.
    pub policy: DeliveryPolicy,
    /// The sender.
    pub sink: Arc<dyn Sink>,
    /// Renders the fetched changes: waits for them when its message has
    /// a fetch job (see [`crate::store::fetch`]).
    pub needs_changes: bool,
    /// The sink's `filter`, compiled; `None` takes everything routed here.
    pub filter: Option<Filter>,
    pub(super) paused: AtomicBool,
    // `updated_at` of the durable pause state last applied here.
    pub(super) state_seen: std::sync::atomic::AtomicI64,
    pub(super) wake: Notify,
    pub(super) limiter: Option<RateLimiter>,
    pub(super) circuit: std::sync::Mutex<Circuit>,
    pub(super) deactivation: Option<std::sync::Mutex<Deactivation>>,
}

impl SinkRuntime {
    /// Paused by an administrator: stores, but sends nothing.
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// Pauses or resumes sending (the store keeps the durable flag).
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
        if !paused {
            self.wake.notify_one();
        }
    }

    /// Tells the sink's loop that new work may be due.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The state word used by the API, the status page and metrics.
    pub fn state(&self) -> &'static str {
        if self.paused() {
            "paused"
        } else if self.circuit_open() {
            "circuit_open"
        } else {
            "active"
        }
    }

    /// Whether the circuit breaker is holding deliveries back.
    pub fn circuit_open(&self) -> bool {
        self.circuit.lock().map(|c| c.is_open()).unwrap_or(false)
    }

    pub(super) fn gate(&self, now: Millis) -> Gate {
        self.circuit
            .lock()
            .map(|mut c| c.gate(now))
            .unwrap_or(Gate::Closed)
    }

    pub(super) fn reopen_at(&self) -> Option<Millis> {
        self.circuit.lock().ok().and_then(|c| c.reopen_at())
    }
}

/// Every configured sink, by name.
pub struct SinkSet {
    pub(super) sinks: Vec<Arc<SinkRuntime>>,
}

impl SinkSet {
    /// Builds every sink (through `sinks::build`, once each), compiles
    /// its `filter` and builds its runtime from the config; called by
    /// `app::compile`.
    pub fn build(config: &Config) -> Result<SinkSet, ConfigError> {
        let mut sinks = Vec::new();
        for (i, c) in config.sinks.iter().enumerate() {
            let policy = c.policy(&config.delivery);
            let sink = crate::sinks::build(&format!("sinks[{i}]"), c, &config.delivery)?;
            let filter = c
                .common()
                .filter
                .as_deref()
                .map(Filter::compile)
                .transpose()
                .map_err(|e| ConfigError::Invalid {
                    key: format!("sinks[{i}].filter"),
                    message: e.to_string(),
                })?;
            sinks.push(Arc::new(SinkRuntime {
                name: SinkName::from(c.name()),
                kind: c.kind(),
                limiter: policy.rate_limit.map(RateLimiter::per_second),
                circuit: std::sync::Mutex::new(Circuit::new(CircuitPolicy {
                    failures: policy.circuit.failures,
                    probe_interval: policy.circuit.probe_interval.0,
                })),
                deactivation: policy.deactivate_after.map(|d| {
                    std::sync::Mutex::new(Deactivation::new(
                        d.failures,
                        Duration::from_secs_f64(d.days * 86_400.0),
                    ))
                }),
                policy,
                sink,
                needs_changes: c.needs_changes()
                    || filter.as_ref().is_some_and(|f| f.uses_features()),
                filter,
                paused: AtomicBool::new(false),
                state_seen: std::sync::atomic::AtomicI64::new(i64::MIN),
                wake: Notify::new(),
            }));
        }
        Ok(SinkSet { sinks })
    }

    /// The sink with this name.
    pub fn get(&self, name: &str) -> Option<&Arc<SinkRuntime>> {
        self.sinks.iter().find(|s| s.name == name)
    }

    /// All sinks in config order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<SinkRuntime>> {
        self.sinks.iter()
    }

    /// Loads the durable pause flags.
    pub async fn load_state(&self, store: &dyn Store) -> Result<(), StoreError> {
        for row in store.sink_states().await? {
            let Some(s) = self.get(&row.sink) else {
                continue;
            };
            // Only a changed row is applied, so a refresh that read the row
            // just before this process changed it cannot undo that. (By
            // change, not by time: relays' clocks may disagree.)
            if s.state_seen.swap(row.updated_at.get(), Ordering::AcqRel) == row.updated_at.get() {
                continue;
            }
            if s.paused() != row.paused {
                tracing::info!(sink = %s.name, paused = row.paused, "sink state changed in the store (another relay or the CLI)");
                s.set_paused(row.paused);
            }
        }
        Ok(())
    }
}
