//! The one compile step: a checked [`Config`] (data only) becomes what a
//! relay runs with — routes, every sink with its client and templates, the
//! TLS certificate. `serve`, `check`, `send-test` and the tests all go
//! through [`compile`], so `check` refuses exactly what `serve` would.
//!
//! What text alone can show is checked by [`Config::from_toml`] (keys,
//! ranges, names, references, `allowed_hosts`); what needs files or a
//! build (certificates, client identities, templates, kind-specific
//! settings) is checked here, naming the key (`sinks[2].template`).

use std::sync::Arc;

use crate::config::{Config, ConfigError};
use crate::dispatch::SinkSet;
use crate::routing::RouteTable;
use crate::tls::TlsIngress;

/// Everything a relay is built from, compiled once.
pub struct Compiled {
    /// The configuration it came from.
    pub config: Arc<Config>,
    /// Which sinks take which events.
    pub routes: RouteTable,
    /// Every sink, built.
    pub sinks: SinkSet,
    /// The ingress certificate, when `[server] tls_cert` is set.
    pub tls: Option<TlsIngress>,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("sources", &self.config.sources.len())
            .field(
                "sinks",
                &self
                    .sinks
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Builds everything `config` describes, or says which key is wrong.
pub fn compile(config: Config) -> Result<Compiled, ConfigError> {
    let tls = match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(cert), Some(key)) => {
            Some(
                TlsIngress::from_files(cert, key).map_err(|e| ConfigError::Invalid {
                    key: "server.tls_cert".into(),
                    message: e.to_string(),
                })?,
            )
        }
        _ => None,
    };
    for (i, sink) in config.sinks.iter().enumerate() {
        let key = format!("sinks[{i}]");
        crate::sinks::validate_sink(&key, sink)?;
        if let (Some(cert), Some(k)) = (&sink.client_cert, &sink.client_key) {
            crate::sinks::client::load_identity(&key, cert, k)?;
        }
    }
    let sinks = SinkSet::build(&config)?;
    let routes = RouteTable::new(&config);
    Ok(Compiled {
        config: Arc::new(config),
        routes,
        sinks,
        tls,
    })
}

/// [`compile`] from configuration text.
pub fn compile_text(text: &str) -> Result<Compiled, ConfigError> {
    compile(Config::from_toml(text)?)
}
