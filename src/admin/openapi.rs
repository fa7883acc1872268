//! The OpenAPI document's frame: title, tags, the bearer scheme. The paths
//! themselves come from the `#[utoipa::path]` handlers as they are routed
//! (see [`super::router`]), so the document cannot list a route the router
//! lacks or miss one it has.

use serde_json::{json, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::config::Config;

/// What the API takes as `since`/`until`: a duration back from now
/// (`2h`, `30m`, `7d`) or a UTC date or time (`2026-11-22`,
/// `2026-11-22T10:00:00Z`) from 1970 to 2999. Every string it matches
/// parses, and the API refuses what it does not match, so the document is
/// exact (the CLI takes more ways of writing times).
pub const TIME_PATTERN: &str = concat!(
    "^(?:[0-9]{1,6}(?:s|m|h|d|w)",
    "|(?:19[7-9][0-9]|2[0-9]{3})-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)",
    "(?:T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,3})?Z)?",
    "|(?:19(?:7[26]|8[048]|9[26])|2[0-9](?:0[48]|[2468][048]|[13579][26])|2[048]00)-02-29",
    "(?:T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,3})?Z)?)$"
);

/// What the API takes as a replay's `event`: an ArcGIS trigger (`/items`,
/// `/groups/<id>/addUsers`, `/services/...`) or one change-type word
/// (`FeaturesCreated`, `*`). Exactly what routing can compile. Only ASCII
/// white space and controls are excluded: `\s` means more in Rust's regex
/// than in the JSON Schema (ECMA) dialect clients validate with (U+0085),
/// and schemathesis found the gap.
pub const EVENT_PATTERN: &str =
    "^(?:/(?:items?|groups?|users?|roles?)(?:/[^/\\x00-\\x20\\x7f]+){0,2}|/services(?:/[^/\\x00-\\x20\\x7f]+)*|[^/\\x00-\\x20\\x7f]+)$";

/// Adds to the generated document what only the running relay knows or
/// what the derive cannot say: the configured sink and source names as
/// enums, and the exact grammar of times and event patterns.
pub fn refine(doc: &mut Value, config: &Config) {
    let sinks: Vec<Value> = config.sinks.iter().map(|s| json!(s.name())).collect();
    let sources: Vec<Value> = config.sources.iter().map(|s| json!(s.name)).collect();
    let nullable = |names: &[Value]| {
        let mut v = names.to_vec();
        v.push(Value::Null);
        Value::Array(v)
    };
    if let Some(props) = doc.pointer_mut("/components/schemas/ReplayBody/properties") {
        if !sinks.is_empty() {
            props["sink"]["enum"] = nullable(&sinks);
        }
        if !sources.is_empty() {
            props["source"]["enum"] = nullable(&sources);
        }
        for key in ["since", "until"] {
            props[key]["pattern"] = json!(TIME_PATTERN);
        }
        props["event"]["pattern"] = json!(EVENT_PATTERN);
    }
    if let Some(params) = doc
        .pointer_mut("/paths/~1api~1v1~1deliveries/get/parameters")
        .and_then(Value::as_array_mut)
    {
        for p in params
            .iter_mut()
            .filter(|p| p["name"] == "since" || p["name"] == "until")
        {
            p["schema"]["pattern"] = json!(TIME_PATTERN);
        }
    }
    if sinks.is_empty() {
        return;
    }
    for op in ["pause", "resume"] {
        let path = format!("/paths/~1api~1v1~1sinks~1{{name}}~1{op}/post/parameters");
        if let Some(params) = doc.pointer_mut(&path).and_then(Value::as_array_mut) {
            for p in params.iter_mut().filter(|p| p["name"] == "name") {
                p["schema"]["enum"] = Value::Array(sinks.clone());
            }
        }
    }
}

/// The static part of the document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "hookrelay admin API",
        description = "Operate a hookrelay instance: sinks and their queues, deliveries, retry and replay of dead letters, pause and resume. Every /api/v1 route except this document takes `Authorization: Bearer <[admin] token>`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    modifiers(&BearerScheme),
    security(("bearer" = [])),
    tags(
        (name = "health", description = "Liveness, readiness and metrics (no token)"),
        (name = "sinks", description = "Sinks, their state and queues"),
        (name = "deliveries", description = "Deliveries, retry and replay"),
        (name = "messages", description = "Received messages with everything about them"),
        (name = "meta", description = "This document")
    )
)]
pub struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The `[admin] token` of the configuration"))
                    .build(),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::EventDoc;

    #[test]
    fn every_time_the_pattern_admits_parses() {
        let re = regex::Regex::new(TIME_PATTERN).unwrap_or_else(|e| panic!("{e}"));
        let now = crate::store::now_ms();
        for ok in [
            "0s",
            "2h",
            "30m",
            "7d",
            "999999w",
            "1970-01-01",
            "2026-11-22",
            "2026-11-22T10:00:00Z",
            "2026-11-22T23:59:59.123Z",
            "2024-02-29",
            "2000-02-29T00:00:00Z",
            "2026-04-30",
            "2026-12-31",
            "2999-12-31",
        ] {
            assert!(re.is_match(ok), "{ok}");
            assert!(crate::store::parse_time(ok, now).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "2 h",
            "1h30m",
            "2h\n",
            "yesterday",
            "1969-12-31",
            "2026-02-29",
            "2100-02-29",
            "2026-04-31",
            "2026-13-01",
            "2026-11-22T24:00:00Z",
            "2026-11-22T10:00:00",
            "3000-01-01",
            "1234567s",
        ] {
            assert!(!re.is_match(bad), "{bad:?}");
        }
    }

    #[test]
    fn every_event_the_pattern_admits_compiles() {
        let re = regex::Regex::new(EVENT_PATTERN).unwrap_or_else(|e| panic!("{e}"));
        for ok in [
            "*",
            "/items",
            "/items/share",
            "/groups/<groupID>/addUsers",
            "/users/jsmith",
            "/role",
            "/services/Hosted/Parcels.FeatureServer/FeaturesCreated",
            "/services",
            "FeaturesCreated",
            "x",
            // Not white space to JSON Schema's regex dialect (found by
            // schemathesis): the API must take what its document admits.
            "/services/a\u{85}b",
            "Features\u{85}Created",
            "\u{a0}",
        ] {
            assert!(re.is_match(ok), "{ok}");
            assert!(crate::domain::pattern::Pattern::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            " /items",
            "/things",
            "/items/a/b/c",
            "/items//",
            "two words",
            "a/b",
            "/Items",
            "x\u{1c}",
        ] {
            assert!(!re.is_match(bad), "{bad:?}");
        }
    }
    use crate::domain::event::{Event, EventOrigin};
    use utoipa::PartialSchema;

    #[test]
    fn event_doc_matches_the_event_json() {
        let e = Event {
            origin: EventOrigin::Portal,
            uri: "/items/1/share".into(),
            source: "item".into(),
            id: "1".into(),
            operation: "share".into(),
            username: Some("u".into()),
            when: Some(1),
            webhook: Some("w".into()),
            portal_url: Some("https://p/".into()),
            service: Some("s".into()),
            changes_url: Some("https://c".into()),
            properties: serde_json::json!({"a": 1}).into(),
        };
        let json = serde_json::to_value(&e).unwrap_or_default();
        let mut fields: Vec<String> = json
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        fields.sort();
        let schema = serde_json::to_value(EventDoc::schema()).unwrap_or_default();
        let mut documented: Vec<String> = schema["properties"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        documented.sort();
        assert_eq!(fields, documented);
    }
}
