//! The TOML configuration: types with their defaults, `env:`/`file:`
//! references, and validation that names the offending key.
//!
//! Loading is three steps: parse the TOML into a tree, resolve references in
//! every string of the tree, then deserialise into [`Config`] with unknown
//! keys refused and finally [`Config::validate`]. `hookrelay check` prints the
//! result with every secret redacted (see [`values::Secret`]).

pub mod egress;
mod values;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize, Serializer};

pub use values::{
    redact_url, resolve_refs as resolve_secret_ref, Dur, RefError, Secret, Secrets, REDACTED,
};

/// Why a configuration was refused. Every message names the key or file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {reason}")]
    Read { path: String, reason: String },
    /// Not TOML, or a key of the wrong type or unknown.
    #[error("{0}")]
    Parse(String),
    /// An `env:` or `file:` reference could not be resolved.
    #[error(transparent)]
    Ref(#[from] RefError),
    /// A value that parses but makes no sense.
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Ingress listener.
    #[serde(default)]
    pub server: ServerConfig,
    /// Admin listener: API, metrics, health, status page.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Where messages and deliveries live.
    #[serde(default)]
    pub store: StoreConfig,
    /// Delivery defaults; every sink may override each key.
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// How long finished messages are kept.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Inbound webhook senders, one path `/hooks/<name>` each.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// Outbound destinations.
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
}

/// `[server]`: the ingress listener that ArcGIS calls.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to bind, `host:port`; port 0 picks a free port.
    pub listen: String,
    /// Largest accepted body; larger answers 413.
    pub max_body_bytes: usize,
    /// A re-sent payload within this window is acknowledged without new deliveries.
    pub dedupe_window: Dur,
    /// A client that has not sent its headers by then is disconnected.
    pub header_read_timeout: Dur,
    /// A client that has not sent its whole body by then gets 408.
    pub body_read_timeout: Dur,
    /// Requests being verified and committed at once (counted once their
    /// body has arrived); more are shed with 503 instead of queueing.
    pub max_concurrency: usize,
    /// Requests in progress at once from one client address (the address
    /// `trusted_proxies` resolves); more get 429.
    pub max_requests_per_client: usize,
    /// A body whose first byte has not arrived by then gets 408.
    pub body_start_timeout: Dur,
    /// After `body_start_timeout`, a body arriving slower than this many
    /// bytes per second on average gets 408.
    pub min_body_rate: u64,
    /// Most events one message may carry; more get 413.
    pub max_events: usize,
    /// The normalised events of a message may be at most this many times
    /// the body's size (plus 64 KiB); more get 413. Bounds what a small
    /// body can make the relay store and hold.
    pub max_expansion: usize,
    /// Pending acknowledgements (not yet committed) above which ingress sheds with 503.
    pub max_pending_commits: usize,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// PEM certificate chain; with `tls_key`, ingress speaks HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    pub tls_key: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "0.0.0.0:8080".into(),
            max_body_bytes: 1024 * 1024,
            dedupe_window: Dur::secs(24 * 3600),
            header_read_timeout: Dur::secs(10),
            body_read_timeout: Dur::secs(30),
            max_concurrency: 1024,
            max_requests_per_client: 64,
            body_start_timeout: Dur::secs(5),
            min_body_rate: 1024,
            max_events: 1000,
            max_expansion: 4,
            max_pending_commits: 10_000,
            trusted_proxies: Vec::new(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// `[admin]`: the operator's listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address to bind; loopback by default because the API can replay.
    pub listen: String,
    /// Bearer token for `/api/v1`; without one the API answers 401.
    pub token: Option<Secret>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:9090".into(),
            token: None,
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://path` (created when missing) or `postgres://...`.
    #[serde(serialize_with = "ser_url")]
    pub url: String,
    /// Connections in the pool (Postgres) or readers (SQLite).
    pub max_connections: u32,
    /// Longest a single statement may run (Postgres `statement_timeout`).
    pub statement_timeout: Dur,
    /// Most messages committed in one group commit.
    pub ingest_batch: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "sqlite://hookrelay.db".into(),
            max_connections: 8,
            statement_timeout: Dur::secs(30),
            ingest_batch: 512,
        }
    }
}

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

/// `[retention]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Messages whose deliveries all succeeded are purged after this.
    pub delivered: Dur,
    /// Messages with a dead delivery are purged after this.
    pub dead: Dur,
    /// How often the purge runs.
    pub interval: Dur,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            delivered: Dur::secs(24 * 3600),
            dead: Dur::secs(7 * 24 * 3600),
            interval: Dur::secs(300),
        }
    }
}

/// How a source authenticates and what it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// Portal organization webhooks: shared secret in a header or `info.secret`.
    ArcgisPortal,
    /// ArcGIS Server / Online service webhooks: `x-esriHook-Signature` HMAC.
    ArcgisService,
    /// GitHub-style HMAC signers.
    Hmac,
}

/// How an `hmac` source's signature is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SigEncoding {
    /// Lowercase or uppercase hexadecimal.
    #[default]
    Hex,
    /// Standard base64.
    Base64,
}

/// `[[sources]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Path segment: `POST /hooks/<name>`.
    pub name: String,
    /// Sender type.
    pub kind: SourceKind,
    /// Shared secret or signature key; a list during rotation.
    pub secret: Secrets,
    /// `hmac` only: the signature header.
    #[serde(default)]
    pub header: Option<String>,
    /// `hmac` only: prefix before the signature (default `sha256=`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// `hmac` only: hex or base64.
    #[serde(default)]
    pub encoding: Option<SigEncoding>,
    /// Overrides `[server] dedupe_window`.
    #[serde(default)]
    pub dedupe_window: Option<Dur>,
    /// When set, only these networks may post.
    #[serde(default)]
    pub allow_ips: Vec<IpNet>,
}

/// Where a sink sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SinkKind {
    /// Any HTTP endpoint; the original body byte-for-byte.
    Http,
    /// Slack incoming webhook.
    Slack,
    /// Microsoft Teams Workflows webhook.
    Teams,
    /// Power BI push dataset.
    Powerbi,
    /// Power Automate "When an HTTP request is received".
    PowerAutomate,
    /// ArcGIS Notebook Server webhook receiver.
    Notebook,
    /// SMTP.
    Email,
}

impl SinkKind {
    /// The name used in the config and the API.
    pub fn as_str(&self) -> &'static str {
        match self {
            SinkKind::Http => "http",
            SinkKind::Slack => "slack",
            SinkKind::Teams => "teams",
            SinkKind::Powerbi => "powerbi",
            SinkKind::PowerAutomate => "power-automate",
            SinkKind::Notebook => "notebook",
            SinkKind::Email => "email",
        }
    }

    /// The service's own request rate (per second), used when the sink sets
    /// no `rate_limit`: Slack takes 1 message/s per webhook, Teams about 4/s,
    /// Power BI 120 requests/min per dataset.
    pub fn default_rate_limit(&self) -> Option<f64> {
        match self {
            SinkKind::Slack => Some(1.0),
            SinkKind::Teams => Some(4.0),
            SinkKind::Powerbi => Some(2.0),
            _ => None,
        }
    }
}

/// Outbound signature scheme of an `http` sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignScheme {
    /// standardwebhooks.com: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    StandardWebhooks,
    /// `x-esriHook-Signature: sha256=<base64>`.
    Arcgis,
    /// `x-hub-signature-256: sha256=<hex>`.
    Github,
}

/// What an `http` sink sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HttpFormat {
    /// The body exactly as ArcGIS sent it.
    #[default]
    Original,
    /// The normalised events as JSON.
    Events,
}

/// How an `email` sink talks TLS to its SMTP relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same host or network.
    None,
}

/// `[[sinks]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Unique, `[a-z0-9-]`.
    pub name: String,
    /// Destination type.
    pub kind: SinkKind,
    /// Destination URL.
    #[serde(serialize_with = "ser_url")]
    pub url: String,
    /// Sources routed here; all when absent.
    #[serde(default)]
    pub sources: Option<Vec<String>>,
    /// ArcGIS trigger patterns routed here; all when absent.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// Extra request headers (values are treated as secrets).
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// HTTP method (POST by default).
    #[serde(default)]
    pub method: Option<String>,
    /// `http` only: original body or normalised events.
    #[serde(default)]
    pub format: Option<HttpFormat>,
    /// Outbound signature.
    #[serde(default)]
    pub sign: Option<SignScheme>,
    /// Signing key for `sign`; for `notebook`, the receiver's 32-character secret.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// `slack`, `teams`: the JSON body template; `email`: the plain-text
    /// body template (minijinja, usually `file:/path`). Compiled and
    /// test-rendered at start, so a broken template is a config error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// `email` only: the HTML body template. With `template` set and this
    /// not, the mail is plain text only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html_template: Option<String>,
    /// `email` only: the subject template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// `powerbi` only: bearer token for the REST API (`/v1.0/myorg/datasets/...`);
    /// without it the URL is a push URL carrying its own `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// `notebook` only: the header the receiver checks (default `x-esrihook-signature`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_header: Option<String>,
    /// `notebook` only: text before the Base64 signature (default none; e.g. `sha256=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_prefix: Option<String>,
    /// `email` only: `starttls` (default), `tls` (implicit, port 465) or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<SmtpTls>,
    /// `email` only: SMTP user name (with `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// `email` only: SMTP password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// `email` only: sender mailbox, `Name <addr@example.org>` or `addr@example.org`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// `email` only: recipient mailboxes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// Overrides `[delivery] timeout`.
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// Overrides `[delivery] max_attempts`.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Overrides `[delivery] initial_backoff`.
    #[serde(default)]
    pub initial_backoff: Option<Dur>,
    /// Overrides `[delivery] max_backoff`.
    #[serde(default)]
    pub max_backoff: Option<Dur>,
    /// Overrides `[delivery] max_age`.
    #[serde(default)]
    pub max_age: Option<Dur>,
    /// Overrides `[delivery] concurrency`.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Overrides `[delivery] rate_limit`.
    #[serde(default)]
    pub rate_limit: Option<f64>,
    /// Overrides `[delivery] proxy`.
    #[serde(default, serialize_with = "ser_opt_url")]
    pub proxy: Option<String>,
    /// Overrides `[delivery] ca_file`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) presented to the sink (mTLS).
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Overrides `[delivery] circuit`.
    #[serde(default)]
    pub circuit: Option<CircuitConfig>,
    /// Pause this sink for good after repeated failures (until resumed).
    #[serde(default)]
    pub deactivate_after: Option<DeactivateConfig>,
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

impl SinkConfig {
    /// This sink's settings over the `[delivery]` defaults.
    pub fn policy(&self, d: &DeliveryConfig) -> DeliveryPolicy {
        DeliveryPolicy {
            timeout: self.timeout.unwrap_or(d.timeout).0,
            max_attempts: self.max_attempts.unwrap_or(d.max_attempts),
            initial_backoff: self.initial_backoff.unwrap_or(d.initial_backoff).0,
            max_backoff: self.max_backoff.unwrap_or(d.max_backoff).0,
            max_age: self.max_age.unwrap_or(d.max_age).0,
            concurrency: self.concurrency.unwrap_or(d.concurrency),
            // The sink's own setting wins; otherwise both the service's limit
            // and the `[delivery]` default apply, so the stricter one holds.
            rate_limit: self
                .rate_limit
                .or(match (self.kind.default_rate_limit(), d.rate_limit) {
                    (Some(k), Some(g)) => Some(k.min(g)),
                    (k, g) => k.or(g),
                }),
            proxy: self.proxy.clone().or_else(|| d.proxy.clone()),
            ca_file: self.ca_file.clone().or_else(|| d.ca_file.clone()),
            circuit: self.circuit.unwrap_or(d.circuit),
            deactivate_after: self.deactivate_after,
        }
    }
}

/// Proxy URLs may carry credentials (`http://user:password@proxy:3128`).
fn ser_opt_url<S: Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(u) => s.serialize_str(&redact_url(u)),
        None => s.serialize_none(),
    }
}

fn ser_url<S: Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    if url.starts_with("sqlite:") {
        return s.serialize_str(url);
    }
    s.serialize_str(&redact_url(url))
}

impl Config {
    /// Reads, resolves and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Config::from_toml(&text)
    }

    /// Parses, resolves and validates configuration text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let mut tree: toml::Value =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        values::resolve_refs(&mut tree, "")?;
        let config: Config = serde_path_to_error::deserialize(tree).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            if path == "." || path.is_empty() {
                ConfigError::Parse(inner)
            } else {
                ConfigError::Parse(format!("{path}: {inner}"))
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration as TOML with every secret and URL credential hidden.
    pub fn redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print config: {e}\n"))
    }

    /// Checks what types cannot: names, references between sections, ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        parse_listen("server.listen", &self.server.listen)?;
        parse_listen("admin.listen", &self.admin.listen)?;
        if self.server.max_body_bytes == 0 {
            return Err(invalid("server.max_body_bytes", "must be greater than 0"));
        }
        if self.server.max_concurrency == 0 {
            return Err(invalid("server.max_concurrency", "must be greater than 0"));
        }
        if self.server.max_requests_per_client == 0 {
            return Err(invalid(
                "server.max_requests_per_client",
                "must be greater than 0",
            ));
        }
        if self.server.max_events == 0 {
            return Err(invalid("server.max_events", "must be greater than 0"));
        }
        if self.server.max_expansion == 0 {
            return Err(invalid("server.max_expansion", "must be greater than 0"));
        }
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return Err(invalid(
                "server.tls_cert",
                "tls_cert and tls_key must be set together",
            ));
        }
        for (i, p) in self.delivery.allowed_hosts.iter().flatten().enumerate() {
            egress::check_host_pattern(p)
                .map_err(|m| invalid(format!("delivery.allowed_hosts[{i}]"), m))?;
        }
        if !self.store.url.starts_with("sqlite:")
            && !self.store.url.starts_with("postgres://")
            && !self.store.url.starts_with("postgresql://")
        {
            return Err(invalid(
                "store.url",
                "must start with sqlite:// or postgres://",
            ));
        }
        if self.store.ingest_batch == 0 {
            return Err(invalid("store.ingest_batch", "must be greater than 0"));
        }
        if self.store.max_connections == 0 {
            return Err(invalid("store.max_connections", "must be greater than 0"));
        }
        validate_delivery_values("delivery", &self.delivery.policy_defaults(), &self.delivery)?;

        let mut source_names = HashSet::new();
        for (i, src) in self.sources.iter().enumerate() {
            let key = format!("sources[{i}]");
            check_name(&format!("{key}.name"), &src.name)?;
            if !source_names.insert(src.name.as_str()) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("duplicate source name {:?}", src.name),
                ));
            }
            if src.secret.0.is_empty() {
                return Err(invalid(
                    format!("{key}.secret"),
                    "at least one secret is required",
                ));
            }
            if src.kind != SourceKind::Hmac
                && (src.header.is_some() || src.prefix.is_some() || src.encoding.is_some())
            {
                return Err(invalid(
                    format!("{key}.header"),
                    "header, prefix and encoding apply only to kind = \"hmac\"",
                ));
            }
        }

        let mut sink_names = HashSet::new();
        for (i, sink) in self.sinks.iter().enumerate() {
            let key = format!("sinks[{i}]");
            check_name(&format!("{key}.name"), &sink.name)?;
            if !sink_names.insert(sink.name.as_str()) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("duplicate sink name {:?}", sink.name),
                ));
            }
            for (j, s) in sink.sources.iter().flatten().enumerate() {
                if !source_names.contains(s.as_str()) {
                    return Err(invalid(
                        format!("{key}.sources[{j}]"),
                        format!("unknown source {s:?}"),
                    ));
                }
            }
            for (j, p) in sink.events.iter().flatten().enumerate() {
                crate::domain::pattern::Pattern::parse(p)
                    .map_err(|m| invalid(format!("{key}.events[{j}]"), m))?;
            }
            let policy = sink.policy(&self.delivery);
            validate_delivery_values(&key, &policy, &self.delivery)?;
            egress::check_url_allowed(&sink.url, self.delivery.allowed_hosts.as_deref())
                .map_err(|m| invalid(format!("{key}.url"), format!("sink {:?}: {m}", sink.name)))?;
            if sink.kind == SinkKind::Email
                && (sink.client_cert.is_some() || sink.client_key.is_some())
            {
                return Err(invalid(
                    format!("{key}.client_cert"),
                    "client_cert and client_key apply to HTTP sinks, not to kind \"email\"",
                ));
            }
            match (&sink.client_cert, &sink.client_key) {
                (Some(_), Some(_)) | (None, None) => {}
                _ => {
                    return Err(invalid(
                        format!("{key}.client_cert"),
                        "client_cert and client_key must be set together",
                    ))
                }
            }
        }
        Ok(())
    }

    /// The source with this name.
    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name == name)
    }
}

impl DeliveryConfig {
    fn policy_defaults(&self) -> DeliveryPolicy {
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

fn validate_delivery_values(
    key: &str,
    p: &DeliveryPolicy,
    _defaults: &DeliveryConfig,
) -> Result<(), ConfigError> {
    if p.max_attempts == 0 {
        return Err(invalid(format!("{key}.max_attempts"), "must be at least 1"));
    }
    if p.concurrency == 0 {
        return Err(invalid(format!("{key}.concurrency"), "must be at least 1"));
    }
    if p.timeout.is_zero() {
        return Err(invalid(format!("{key}.timeout"), "must be greater than 0"));
    }
    if p.circuit.failures == 0 {
        return Err(invalid(
            format!("{key}.circuit.failures"),
            "must be at least 1",
        ));
    }
    if p.circuit.probe_interval.0.is_zero() {
        return Err(invalid(
            format!("{key}.circuit.probe_interval"),
            "must be greater than 0",
        ));
    }
    if let Some(d) = &p.deactivate_after {
        if d.failures == 0 || !(d.days > 0.0 && d.days.is_finite()) {
            return Err(invalid(
                format!("{key}.deactivate_after"),
                "needs failures >= 1 and days > 0",
            ));
        }
    }
    if p.initial_backoff > p.max_backoff {
        return Err(invalid(
            format!("{key}.initial_backoff"),
            "must not exceed max_backoff",
        ));
    }
    if let Some(r) = p.rate_limit {
        if !(r > 0.0 && r.is_finite()) {
            return Err(invalid(
                format!("{key}.rate_limit"),
                "must be a positive number of requests per second",
            ));
        }
    }
    if let Some(proxy) = &p.proxy {
        reqwest::Proxy::all(proxy.as_str())
            .map_err(|_| invalid(format!("{key}.proxy"), "not a valid proxy URL"))?;
    }
    if let Some(ca) = &p.ca_file {
        if !ca.exists() {
            return Err(invalid(
                format!("{key}.ca_file"),
                format!("{} does not exist", ca.display()),
            ));
        }
    }
    Ok(())
}

/// Parses a `host:port` listen address.
pub fn parse_listen(key: &str, value: &str) -> Result<std::net::SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        invalid(
            key,
            format!("{value:?} is not an address like 127.0.0.1:8080"),
        )
    })
}

fn check_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("{name:?} must be 1-64 characters of a-z, 0-9 and -"),
        ))
    }
}
