//! The TOML configuration, as data: types with their defaults, `env:`/
//! `file:` references, and validation that names the offending key.
//!
//! Loading is four steps: parse the TOML into a tree, resolve references
//! in every string of the tree, deserialise it into the raw form (unknown
//! keys refused), convert each raw `[[sinks]]` entry into the typed
//! [`SinkSpec`] of its kind (a key the kind does not take refused), and
//! finally [`Config::validate`]. Nothing here builds a client or reads a
//! certificate: `app::compile` builds what a relay runs with from the
//! [`Config`], and is the only place that does. `hookrelay check` prints
//! the result with every secret redacted (see [`values::Secret`]).
//!
//! Files: `server.rs` and `store.rs` the listener, store and retention
//! sections; `delivery.rs` `[delivery]` and the per-sink policy;
//! `source.rs` `[[sources]]`, `arcgis.rs` its `[sources.arcgis]` table; `sink.rs` `[[sinks]]` as written,
//! `spec.rs` as typed, `convert.rs` from one to the other (and back, for
//! printing); `validate.rs` the checks across sections;
//! `values.rs` secrets, durations, references and URL redaction;
//! `egress.rs` the `allowed_hosts` patterns.

mod arcgis;
mod convert;
mod delivery;
pub mod egress;
mod server;
mod sink;
mod source;
mod spec;
mod store;
mod validate;
mod values;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use arcgis::{ArcgisCredential, ArcgisSourceConfig, DEFAULT_OAUTH_TOKEN_URL, MAX_PAGE_SIZE};
pub use delivery::{
    CircuitConfig, DeactivateConfig, DeliveryConfig, DeliveryOverrides, DeliveryPolicy,
};
pub use server::{AdminConfig, ServerConfig};
pub use sink::{HttpFormat, RawSink, SignScheme, SinkKind, SmtpTls};
pub use source::{SigEncoding, SourceConfig, SourceKind};
pub use spec::{
    ClientCert, EmailSpec, HttpSpec, HttpTransport, KeyError, NotebookSpec, PowerBiSpec, Signing,
    SinkCommon, SinkSpec, SlackSpec, SmtpLogin, TeamsSpec,
};
pub use store::{RetentionConfig, StoreConfig};
pub use validate::parse_listen;
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

/// The whole configuration, typed: every sink is the [`SinkSpec`] of its
/// kind. Serialises back to the keys it was written with (what `hookrelay
/// check` prints).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Config {
    /// Ingress listener.
    pub server: ServerConfig,
    /// Admin listener: API, metrics, health, status page.
    pub admin: AdminConfig,
    /// Where messages and deliveries live.
    pub store: StoreConfig,
    /// Delivery defaults; every sink may override each key.
    pub delivery: DeliveryConfig,
    /// How long finished messages are kept.
    pub retention: RetentionConfig,
    /// Inbound webhook senders, one path `/hooks/<name>` each.
    pub sources: Vec<SourceConfig>,
    /// Outbound destinations, in the order written.
    pub sinks: Vec<SinkSpec>,
}

/// The file as written: [`Config`] with the sinks still raw. Only
/// deserialised, then converted.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    admin: AdminConfig,
    #[serde(default)]
    store: StoreConfig,
    #[serde(default)]
    delivery: DeliveryConfig,
    #[serde(default)]
    retention: RetentionConfig,
    #[serde(default)]
    sources: Vec<SourceConfig>,
    #[serde(default)]
    sinks: Vec<RawSink>,
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Config, ConfigError> {
        let sinks = raw
            .sinks
            .into_iter()
            .enumerate()
            .map(|(i, s)| SinkSpec::try_from(s).map_err(|e| e.under(&format!("sinks[{i}]"))))
            .collect::<Result<_, _>>()?;
        Ok(Config {
            server: raw.server,
            admin: raw.admin,
            store: raw.store,
            delivery: raw.delivery,
            retention: raw.retention,
            sources: raw.sources,
            sinks,
        })
    }
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

    /// Parses, resolves, types and validates configuration text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let mut tree: toml::Value =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        values::resolve_refs(&mut tree, "")?;
        let raw: RawConfig = serde_path_to_error::deserialize(tree).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            if path == "." || path.is_empty() {
                ConfigError::Parse(inner)
            } else {
                ConfigError::Parse(format!("{path}: {inner}"))
            }
        })?;
        let config = Config::try_from(raw)?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration as TOML with every secret and URL credential hidden.
    pub fn redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print config: {e}\n"))
    }

    /// The source with this name.
    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// The sink with this name.
    pub fn sink(&self, name: &str) -> Option<&SinkSpec> {
        self.sinks.iter().find(|s| s.name() == name)
    }
}
