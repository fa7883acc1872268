//! The normalised event: what one ArcGIS notification is about, whatever
//! shape the sender used. Ingress produces events, routing matches them,
//! templated sinks render them, and the store keeps them next to the raw body.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Who sent the payload an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventOrigin {
    /// Portal for ArcGIS organization webhook (items, groups, users, roles).
    Portal,
    /// ArcGIS Server or ArcGIS Online service webhook (feature or GP service).
    Service,
    /// A JSON payload that is not an ArcGIS shape (an `hmac` source).
    Generic,
}

/// One change, with the ArcGIS trigger URI that names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Which sender family.
    pub origin: EventOrigin,
    /// ArcGIS trigger URI: `/items/<id>/share`, `/services/Hosted/Parcels.FeatureServer/FeaturesCreated`.
    pub uri: String,
    /// Portal: `item`, `group`, `user`, `role` (singular). Services: `FeatureServer`, `GPServer`.
    pub source: String,
    /// Portal: the item/group id or user name. Services: the service name.
    pub id: String,
    /// Portal operation (`share`, `addUsers`) or service change type (`FeaturesCreated`).
    pub operation: String,
    /// Who made the change (Portal only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// When it happened, milliseconds since the Unix epoch, as the sender says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<i64>,
    /// The webhook's name in ArcGIS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Portal URL, ending in `/` (Portal only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal_url: Option<String>,
    /// `folder/serviceName.ServiceType` (services only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Where to fetch the changes (feature services) or the job status (GP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes_url: Option<String>,
    /// Event-specific details as the sender wrote them. Shared, not
    /// copied, between the events of one service payload (see
    /// [`encode_events`]).
    #[serde(default, skip_serializing_if = "props_is_null")]
    pub properties: Props,
}

/// The OpenAPI description of [`Event`]'s JSON (`Event` itself keeps
/// `properties` shared behind an `Arc`, which the schema derive cannot
/// read). A test in `admin::openapi` serialises a fully populated `Event`
/// and checks that its fields are exactly these.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct EventDoc {
    /// `portal`, `service` or `generic`.
    origin: String,
    /// ArcGIS trigger URI: `/items/<id>/share`, `/services/Hosted/Parcels.FeatureServer/FeaturesCreated`.
    uri: String,
    /// Portal: `item`, `group`, `user`, `role`. Services: `FeatureServer`, `GPServer`.
    source: String,
    /// Portal: the item/group id or user name. Services: the service name.
    id: String,
    /// Portal operation (`share`, `addUsers`) or service change type (`FeaturesCreated`).
    operation: String,
    /// Who made the change (Portal only).
    username: Option<String>,
    /// When it happened, milliseconds since the Unix epoch, as the sender says.
    when: Option<i64>,
    /// The webhook's name in ArcGIS.
    webhook: Option<String>,
    /// Portal URL.
    portal_url: Option<String>,
    /// `folder/serviceName.ServiceType` (services only).
    service: Option<String>,
    /// Where to fetch the changes (feature services) or the job status (GP).
    changes_url: Option<String>,
    /// Event-specific details as the sender wrote them.
    properties: Option<serde_json::Value>,
}

/// An event's properties: one allocation shared by every event cut from
/// the same payload object, so a payload with many events and one large
/// property costs that property once, in memory and in the store.
pub type Props = Arc<serde_json::Value>;

fn props_is_null(p: &Props) -> bool {
    p.is_null()
}

/// The stored form of a message's events, written once at ingress and read
/// by every reader (claims, message detail, replay filters).
///
/// Events whose properties are one shared value (the events of one
/// ArcGIS Server payload all carry its service properties) are written as
/// `{"shared": [values], "refs": [index or null per event], "events": [...]}`
/// with those properties left out of each event; all other messages as a
/// plain array of events, as before this form existed. [`decode_events`]
/// reads both.
pub fn encode_events(events: &[Event]) -> String {
    // Distinct property values by allocation, with how many events hold
    // each (few distinct values in practice; at most `max_events`).
    let mut distinct: Vec<(&Props, usize)> = Vec::new();
    for e in events {
        match distinct
            .iter_mut()
            .find(|(p, _)| Arc::ptr_eq(p, &e.properties))
        {
            Some((_, n)) => *n += 1,
            None => distinct.push((&e.properties, 1)),
        }
    }
    let shared: Vec<&Props> = distinct
        .iter()
        .filter(|(p, n)| *n > 1 && !p.is_null())
        .map(|(p, _)| *p)
        .collect();
    let refs: Vec<Option<usize>> = events
        .iter()
        .map(|e| shared.iter().position(|p| Arc::ptr_eq(p, &e.properties)))
        .collect();
    let encoded = if shared.is_empty() {
        serde_json::to_string(events)
    } else {
        let null: Props = Arc::new(serde_json::Value::Null);
        let bare: Vec<Event> = events
            .iter()
            .zip(&refs)
            .map(|(e, r)| match r {
                Some(_) => Event {
                    properties: null.clone(),
                    ..e.clone()
                },
                None => e.clone(),
            })
            .collect();
        serde_json::to_string(&Shared {
            shared: shared.into_iter().cloned().collect(),
            refs,
            events: bare,
        })
    };
    // Serialising plain data (strings, numbers, maps) cannot fail.
    encoded.unwrap_or_else(|_| "[]".into())
}

#[derive(Serialize, Deserialize)]
struct Shared {
    shared: Vec<Props>,
    refs: Vec<Option<usize>>,
    events: Vec<Event>,
}

/// Why stored events could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("stored events do not decode: {0}")]
pub struct DecodeError(#[source] serde_json::Error);

/// Reads what [`encode_events`] wrote (either form).
pub fn decode_events(stored: &str) -> Result<Vec<Event>, DecodeError> {
    if stored.trim_start().starts_with('{') {
        let s: Shared = serde_json::from_str(stored).map_err(DecodeError)?;
        let mut events = s.events;
        for (e, r) in events.iter_mut().zip(s.refs) {
            if let Some(p) = r.and_then(|i| s.shared.get(i)) {
                e.properties = p.clone();
            }
        }
        Ok(events)
    } else {
        serde_json::from_str(stored).map_err(DecodeError)
    }
}

impl Event {
    /// A link a person can open: the item, group or user page in the portal,
    /// or the changes/status URL of a service event. Only plain `http`/`https`
    /// links: the URLs come from the payload, and a `javascript:` or `data:`
    /// one must never reach an e-mail, a Slack message or a Teams card.
    pub fn link(&self) -> Option<String> {
        self.raw_link().filter(|l| is_http_url(l))
    }

    fn raw_link(&self) -> Option<String> {
        match self.origin {
            EventOrigin::Portal => {
                let base = self.portal_url.as_deref()?;
                let base = if base.ends_with('/') {
                    base.to_string()
                } else {
                    format!("{base}/")
                };
                let id = percent_encoding::utf8_percent_encode(
                    &self.id,
                    percent_encoding::NON_ALPHANUMERIC,
                );
                match self.source.as_str() {
                    "item" => Some(format!("{base}home/item.html?id={id}")),
                    "group" => Some(format!("{base}home/group.html?id={id}")),
                    "user" => Some(format!("{base}home/user.html?user={id}")),
                    _ => Some(base),
                }
            }
            EventOrigin::Service => self.changes_url.clone(),
            EventOrigin::Generic => None,
        }
    }
}

/// The latest time the relay keeps or formats: 9999-12-31T23:59:59.999Z,
/// the end of what RFC 3339 (four-digit years) can write. Ingress refuses
/// event times outside `0..=MAX_TIME_MS`; formatting clamps to it.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// A time in milliseconds since the epoch as RFC 3339 UTC. Cannot fail or
/// panic: times outside what RFC 3339 can write are clamped to its range.
pub fn format_time(ms: i64, precision: TimePrecision) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.clamp(0, MAX_TIME_MS) as u64);
    match precision {
        TimePrecision::Seconds => humantime::format_rfc3339_seconds(t).to_string(),
        TimePrecision::Millis => humantime::format_rfc3339_millis(t).to_string(),
    }
}

/// How much of a time [`format_time`] writes.
#[derive(Debug, Clone, Copy)]
pub enum TimePrecision {
    /// `2026-11-22T10:00:00Z`, for people.
    Seconds,
    /// `2026-11-22T10:00:00.123Z`, for the API.
    Millis,
}

/// Whether `url` is a plain `http://` or `https://` URL (any case), the only
/// links the relay ever renders from payload data.
pub fn is_http_url(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    (lower.starts_with("https://") || lower.starts_with("http://"))
        && !url.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(props: &Props) -> Event {
        Event {
            origin: EventOrigin::Service,
            uri: "/services/S.FeatureServer/FeaturesCreated".into(),
            source: "FeatureServer".into(),
            id: "S".into(),
            operation: "FeaturesCreated".into(),
            username: None,
            when: Some(1),
            webhook: None,
            portal_url: None,
            service: Some("S.FeatureServer".into()),
            changes_url: Some("javascript:alert(1)".into()),
            properties: props.clone(),
        }
    }

    #[test]
    fn shared_properties_are_stored_once_and_read_back_shared() {
        let big: Props = Arc::new(serde_json::json!({"blob": "x".repeat(10_000)}));
        let events: Vec<Event> = (0..50).map(|_| service(&big)).collect();
        let stored = encode_events(&events);
        assert!(stored.len() < 30_000, "{} bytes", stored.len());
        let back = decode_events(&stored).unwrap();
        assert_eq!(back, events);
        assert!(Arc::ptr_eq(&back[0].properties, &back[49].properties));
        // Unshared events keep the plain array form older rows have.
        let one = vec![service(&big)];
        assert!(encode_events(&one).starts_with('['));
        assert_eq!(decode_events(&encode_events(&one)).unwrap(), one);
    }

    #[test]
    fn every_time_formats() {
        for ms in [i64::MIN, -1, 0, 1, MAX_TIME_MS, MAX_TIME_MS + 1, i64::MAX] {
            let a = format_time(ms, TimePrecision::Seconds);
            let b = format_time(ms, TimePrecision::Millis);
            assert!(a.ends_with('Z') && b.ends_with('Z'), "{ms}: {a} {b}");
        }
        assert_eq!(
            format_time(253_402_300_800_000, TimePrecision::Seconds),
            "9999-12-31T23:59:59Z"
        );
    }

    #[test]
    fn only_http_links_are_offered() {
        let e = service(&Arc::new(serde_json::Value::Null));
        assert_eq!(e.link(), None);
        let ok = Event {
            changes_url: Some("HTTPS://h/x".into()),
            ..e.clone()
        };
        assert_eq!(ok.link().as_deref(), Some("HTTPS://h/x"));
        for bad in [
            "data:text/html,x",
            " javascript:x",
            "https://h/\nx",
            "vbscript:x",
        ] {
            assert!(!is_http_url(bad), "{bad:?}");
        }
    }
}
