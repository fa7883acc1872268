//! Which sinks get which events, in ArcGIS's own trigger vocabulary, so an
//! administrator can copy the `events` list from their webhook definition.
//!
//! - `/S`, `/S/O`, `/S/I`, `/S/I/O` for Portal events of source S (item,
//!   group, user, role; singular or plural), id I and operation O. The
//!   operation compares case-insensitively (Esri writes both signIn and
//!   signin). A segment written `<groupID>` or `*` matches anything.
//! - `/services/<folder>/<name>.<Type>/<event>`: a prefix of a service
//!   event's URI.
//! - a word without a slash is a service change type: `FeaturesCreated`;
//!   `XEdited` also matches `XCreated`, `XUpdated` and `XDeleted`; `*`
//!   matches every event.

use std::collections::HashSet;

use crate::config::Config;
use crate::domain::event::Event;
use crate::domain::ids::SinkName;
pub use crate::domain::pattern::Pattern;

/// A sink's compiled routing rule.
#[derive(Debug, Clone)]
struct SinkRoute {
    name: SinkName,
    /// Renders the edited features (a format, template or filter that
    /// reads them), so it waits for the message's fetch when there is one.
    needs_changes: bool,
    /// Sends nothing but the changes (`format = "changes"` or `"geojson"`):
    /// takes only events whose changes an enriched source fetches.
    only_changes: bool,
    sources: Option<HashSet<String>>,
    patterns: Option<Vec<Pattern>>,
}

/// All sinks' rules, compiled once at start.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    sinks: Vec<SinkRoute>,
    /// Sources whose feature-service events are enriched with their
    /// changes (`[sources.arcgis]` configured).
    enriched: HashSet<String>,
}

/// One sink's share of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The sink.
    pub sink: SinkName,
    /// Indexes of the events it takes.
    pub events: Vec<usize>,
    /// Whether it waits for the message's changes to be fetched.
    pub waits_for_changes: bool,
}

impl RouteTable {
    /// Compiles every sink's `sources` and `events` (already validated).
    pub fn new(config: &Config) -> RouteTable {
        let sinks = config
            .sinks
            .iter()
            .map(|s| SinkRoute {
                name: SinkName::from(s.name()),
                needs_changes: s.needs_changes(),
                only_changes: s.only_changes(),
                sources: s
                    .common()
                    .sources
                    .as_ref()
                    .map(|v| v.iter().cloned().collect()),
                patterns: s
                    .common()
                    .events
                    .as_ref()
                    .map(|v| v.iter().filter_map(|p| Pattern::parse(p).ok()).collect()),
            })
            .collect();
        let enriched = config
            .sources
            .iter()
            .filter(|s| s.enriches())
            .map(|s| s.name.clone())
            .collect();
        RouteTable { sinks, enriched }
    }

    /// Also makes these sinks wait for the changes (their filter reads
    /// features; filters are compiled with the sinks, above this layer).
    pub fn also_needing_changes<'a>(mut self, sinks: impl IntoIterator<Item = &'a str>) -> Self {
        for name in sinks {
            if let Some(s) = self.sinks.iter_mut().find(|s| s.name.as_str() == name) {
                s.needs_changes = true;
            }
        }
        self
    }

    /// For each sink that takes at least one of the events: its name, the
    /// indexes of the events it takes, and whether it waits for the
    /// changes of those events (an enriched source, a sink that reads
    /// them, and an event that has a `changesUrl`).
    pub fn route(&self, source: &str, events: &[Event]) -> Vec<Routed> {
        let enriched = self.enriched.contains(source);
        let mut out = Vec::new();
        for s in &self.sinks {
            if let Some(srcs) = &s.sources {
                if !srcs.contains(source) {
                    continue;
                }
            }
            let matched: Vec<usize> = events
                .iter()
                .enumerate()
                .filter(|(_, e)| match &s.patterns {
                    None => true,
                    Some(ps) => ps.iter().any(|p| p.matches(e)),
                })
                .filter(|(_, e)| !s.only_changes || (enriched && e.changes_url.is_some()))
                .map(|(i, _)| i)
                .collect();
            if !matched.is_empty() {
                let waits_for_changes = enriched
                    && s.needs_changes
                    && matched.iter().any(|i| events[*i].changes_url.is_some());
                out.push(Routed {
                    sink: s.name.clone(),
                    events: matched,
                    waits_for_changes,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::EventOrigin;

    fn portal(source: &str, id: &str, op: &str) -> Event {
        Event {
            origin: EventOrigin::Portal,
            uri: format!("/{source}s/{id}/{op}"),
            source: source.into(),
            id: id.into(),
            operation: op.into(),
            username: None,
            when: None,
            webhook: None,
            portal_url: None,
            service: None,
            changes_url: None,
            properties: serde_json::Value::Null.into(),
        }
    }

    fn service(op: &str) -> Event {
        Event {
            origin: EventOrigin::Service,
            uri: format!("/services/Hosted/Parcels.FeatureServer/{op}"),
            source: "FeatureServer".into(),
            id: "Parcels".into(),
            operation: op.into(),
            ..portal("x", "y", "z")
        }
    }

    fn m(p: &str, e: &Event) -> bool {
        Pattern::parse(p).unwrap().matches(e)
    }

    #[test]
    fn portal_trigger_vocabulary() {
        let e = portal("item", "abc", "share");
        for yes in [
            "/items",
            "/items/share",
            "/items/SHARE",
            "/items/abc",
            "/items/abc/share",
            "/item/abc/share",
            "/items/<itemID>/share",
            "*",
        ] {
            assert!(m(yes, &e), "{yes}");
        }
        for no in [
            "/groups",
            "/items/update",
            "/items/zzz/share",
            "/items/abc/update",
            "FeaturesCreated",
            "/services",
        ] {
            assert!(!m(no, &e), "{no}");
        }
        let u = portal("user", "jsmith", "updateUserRole");
        assert!(m("/users/jsmith/updateUserRole", &u));
        assert!(m("/users/updateuserrole", &u));
        let g = portal("group", "g1", "addUsers");
        assert!(m("/groups/<groupID>/addUsers", &g));
    }

    #[test]
    fn change_types() {
        assert!(m("FeaturesCreated", &service("FeaturesCreated")));
        assert!(!m("FeaturesCreated", &service("FeaturesDeleted")));
        for op in [
            "FeaturesCreated",
            "FeaturesUpdated",
            "FeaturesDeleted",
            "FeaturesEdited",
        ] {
            assert!(m("FeaturesEdited", &service(op)), "{op}");
        }
        assert!(!m("FeaturesEdited", &service("AttachmentsCreated")));
        assert!(m("AttachmentsEdited", &service("AttachmentsDeleted")));
        assert!(!m(
            "FeaturesCreated",
            &portal("item", "a", "FeaturesCreated")
        ));
        assert!(m("/services/Hosted", &service("X")));
        assert!(m(
            "/services/Hosted/Parcels.FeatureServer/FeaturesCreated",
            &service("FeaturesCreated")
        ));
        assert!(!m("/services/Other", &service("X")));
    }

    #[test]
    fn bad_patterns_are_named() {
        assert!(Pattern::parse("").is_err());
        assert!(Pattern::parse("/").is_err());
        assert!(Pattern::parse("/things")
            .unwrap_err()
            .contains("unknown trigger source"));
        assert!(Pattern::parse("/items/a/b/c").is_err());
        assert!(Pattern::parse("Features Created").is_err());
    }
}
