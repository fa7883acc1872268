//! The one compile step: a checked [`Config`] (data only) becomes what a
//! relay runs with — routes, every sink with its client and templates, the
//! TLS certificate. `serve`, `check`, `send-test` and the tests all go
//! through [`compile`], so `check` refuses exactly what `serve` would.
//!
//! What text alone can show is checked by [`Config::from_toml`] (keys,
//! which keys apply to which sink kind, ranges, names, references,
//! `allowed_hosts`); what needs files or a build (certificates, client
//! identities, templates, secrets and URLs only a kind understands) is
//! checked here, by building it, naming the key (`sinks[2].template`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Config, ConfigError};
use crate::dispatch::{SinkSet, SourceFetch};
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
    /// Each enriched source's fetcher (`[sources.arcgis]`), by source name.
    pub fetchers: HashMap<String, SourceFetch>,
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
    // Each sink is built here once, with its client, identity and
    // templates; building is what checks what only its kind knows.
    let sinks = SinkSet::build(&config)?;
    let routes = RouteTable::new(&config).also_needing_changes(
        sinks
            .iter()
            .filter(|s| s.filter.as_ref().is_some_and(|f| f.uses_features()))
            .map(|s| s.name.as_str()),
    );
    let fetchers = fetchers(&config)?;
    Ok(Compiled {
        config: Arc::new(config),
        routes,
        sinks,
        tls,
        fetchers,
    })
}

/// The fetcher of every source with `[sources.arcgis]`, asking ArcGIS for
/// WGS 84 geometry (`outSR=4326`) when a sink that can take the source's
/// events renders GeoJSON (the relay does not reproject).
fn fetchers(config: &Config) -> Result<HashMap<String, SourceFetch>, ConfigError> {
    let mut out = HashMap::new();
    for src in &config.sources {
        let Some(fetcher) = crate::enrich::Fetcher::from_config(src, &config.delivery)? else {
            continue;
        };
        let wgs84 = config.sinks.iter().any(|s| {
            s.wants_wgs84()
                && s.common()
                    .sources
                    .as_ref()
                    .is_none_or(|v| v.contains(&src.name))
        });
        out.insert(
            src.name.clone(),
            SourceFetch {
                options: fetcher.options(wgs84),
                fetcher: Arc::new(fetcher),
            },
        );
    }
    Ok(out)
}

/// [`compile`] from configuration text.
pub fn compile_text(text: &str) -> Result<Compiled, ConfigError> {
    compile(Config::from_toml(text)?)
}

#[cfg(test)]
mod tests {
    /// Building is where a sink is checked, so it must happen once: a
    /// second build would be a second place that can disagree.
    #[test]
    fn every_sink_is_built_once_per_compile() {
        let text = "[[sinks]]\nname = \"a\"\nkind = \"http\"\nurl = \"https://a.example.org/\"\n\
                    [[sinks]]\nname = \"b\"\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T/B/X\"\n\
                    [[sinks]]\nname = \"m\"\nkind = \"email\"\nurl = \"smtp://mail.example.org\"\n\
                    from = \"relay@example.org\"\nto = [\"gis@example.org\"]\n";
        let before = crate::sinks::testing::builds();
        let compiled = super::compile_text(text).unwrap();
        assert_eq!(crate::sinks::testing::builds() - before, 3);
        assert_eq!(compiled.sinks.iter().count(), 3);
    }

    /// A sink's filter is compiled with the sink and kept beside it; one
    /// that is not CEL is a config error naming the key.
    #[test]
    fn a_filter_is_compiled_with_its_sink() {
        let text = "[[sinks]]\nname = \"a\"\nkind = \"http\"\nurl = \"https://a.example.org/\"\n\
                    filter = 'edit == \"add\" && feature.attributes.status == \"Out of service\"'\n\
                    [[sinks]]\nname = \"b\"\nkind = \"http\"\nurl = \"https://b.example.org/\"\n";
        let compiled = super::compile_text(text).unwrap();
        let a = compiled.sinks.get("a").unwrap();
        assert!(a.filter.as_ref().is_some_and(|f| f.uses_features()));
        assert!(compiled.sinks.get("b").unwrap().filter.is_none());
        let e = super::compile_text(&text.replace("edit == \"add\" &&", "edit == &&"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("sinks[0].filter: syntax error at line 1, column "),
            "{e}"
        );
    }
}
