//! `[delivery]`: the defaults every sink may override, and the policy in
//! force for one sink once its overrides are applied.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{ser_opt_url, Dur};

/// `[delivery]`: defaults for every sink.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Total time for one attempt (connect, send, answer).
    pub timeout: Dur,
    /// Attempts before a delivery is dead.
    pub max_attempts: u32,
    /// First retry delay (before jitter).
    pub initial_backoff: Dur,
    /// Largest retry delay; also caps a Retry-After.
    pub max_backoff: Dur,
    /// A delivery still failing this long after it was (re)queued is dead.
    pub max_age: Dur,
    /// Attempts in flight at once per sink.
    pub concurrency: usize,
    /// Requests per second per sink; none means unlimited.
    pub rate_limit: Option<f64>,
    /// Forward proxy for every sink (else HTTPS_PROXY/HTTP_PROXY/NO_PROXY).
    #[serde(serialize_with = "ser_opt_url")]
    pub proxy: Option<String>,
    /// Extra CA certificate (PEM) to trust, for TLS-inspecting proxies.
    pub ca_file: Option<PathBuf>,
    /// Host patterns (`hooks.example.org`, `*.slack.com`) every sink URL
    /// must match; absent means every host is allowed.
    pub allowed_hosts: Option<Vec<String>>,
    /// How often idle workers look for due deliveries another process queued.
    pub poll_interval: Dur,
    /// Circuit breaker: consecutive failures that open it, and probe spacing.
    pub circuit: CircuitConfig,
}

/// `circuit = { failures = 10, probe_interval = "30s" }`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitConfig {
    /// Consecutive failed attempts that open the circuit.
    pub failures: u32,
    /// While open, one probe delivery this often.
    pub probe_interval: Dur,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        CircuitConfig {
            failures: 10,
            probe_interval: Dur::secs(30),
        }
    }
}

/// `deactivate_after = { failures = 5, days = 5 }`: ArcGIS's own
/// deactivation policy; the sink is paused until an administrator resumes it.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeactivateConfig {
    /// Failed attempts (with no success between them)...
    pub failures: u32,
    /// ...within this many days.
    #[serde(default = "one_day")]
    pub days: f64,
}

fn one_day() -> f64 {
    1.0
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            timeout: Dur::secs(10),
            max_attempts: 15,
            initial_backoff: Dur::secs(5),
            max_backoff: Dur::secs(3600),
            max_age: Dur::secs(48 * 3600),
            concurrency: 8,
            rate_limit: None,
            proxy: None,
            ca_file: None,
            allowed_hosts: None,
            poll_interval: Dur::secs(1),
            circuit: CircuitConfig::default(),
        }
    }
}

/// The delivery settings in force for one sink: its overrides over `[delivery]`.
#[derive(Debug, Clone)]
pub struct DeliveryPolicy {
    /// Total time for one attempt.
    pub timeout: Duration,
    /// Attempts before dead.
    pub max_attempts: u32,
    /// First retry delay.
    pub initial_backoff: Duration,
    /// Largest retry delay.
    pub max_backoff: Duration,
    /// Dead when still failing this long after being queued.
    pub max_age: Duration,
    /// Attempts in flight at once.
    pub concurrency: usize,
    /// Requests per second.
    pub rate_limit: Option<f64>,
    /// Forward proxy URL.
    pub proxy: Option<String>,
    /// Extra CA bundle.
    pub ca_file: Option<PathBuf>,
    /// Circuit breaker.
    pub circuit: CircuitConfig,
    /// Deactivation policy.
    pub deactivate_after: Option<DeactivateConfig>,
}

impl DeliveryConfig {
    /// The policy of a sink that overrides nothing: what `[delivery]`
    /// itself says, so its values are checked like a sink's.
    pub(crate) fn policy_defaults(&self) -> DeliveryPolicy {
        DeliveryPolicy {
            timeout: self.timeout.0,
            max_attempts: self.max_attempts,
            initial_backoff: self.initial_backoff.0,
            max_backoff: self.max_backoff.0,
            max_age: self.max_age.0,
            concurrency: self.concurrency,
            rate_limit: self.rate_limit,
            proxy: self.proxy.clone(),
            ca_file: self.ca_file.clone(),
            circuit: self.circuit,
            deactivate_after: None,
        }
    }
}

/// A sink's own `[delivery]` keys (`timeout`, `max_attempts`, ...); each
/// one it leaves out takes the `[delivery]` value. `proxy` is not here:
/// only the HTTP kinds have one (see [`super::HttpTransport`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveryOverrides {
    /// Overrides `[delivery] timeout`.
    pub timeout: Option<Dur>,
    /// Overrides `[delivery] max_attempts`.
    pub max_attempts: Option<u32>,
    /// Overrides `[delivery] initial_backoff`.
    pub initial_backoff: Option<Dur>,
    /// Overrides `[delivery] max_backoff`.
    pub max_backoff: Option<Dur>,
    /// Overrides `[delivery] max_age`.
    pub max_age: Option<Dur>,
    /// Overrides `[delivery] concurrency`.
    pub concurrency: Option<usize>,
    /// Overrides `[delivery] rate_limit` and the kind's own limit.
    pub rate_limit: Option<f64>,
    /// Overrides `[delivery] ca_file`.
    pub ca_file: Option<PathBuf>,
    /// Overrides `[delivery] circuit`.
    pub circuit: Option<CircuitConfig>,
}
