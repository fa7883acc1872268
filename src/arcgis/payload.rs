//! ArcGIS payloads: content types, the form-encoded `payload=` field, and
//! normalisation of every known shape into [`Event`]s with trigger URIs.
//! Pure functions, fuzzed and tested against the fixtures.

use std::sync::Arc;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::limits::Budget;
pub use super::limits::{check_encoded, nesting, Limits, MAX_NESTING};
use super::probe;
use crate::domain::event::{Event, EventOrigin, Props, MAX_TIME_MS};

/// Why a body was refused (400 `invalid_payload`, or 415).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// A content type other than JSON or form-encoded.
    #[error("unsupported content type {0:?}; send application/json or application/x-www-form-urlencoded")]
    UnsupportedType(String),
    /// Parses, but not as what it claims, or not an ArcGIS shape.
    #[error("{0}")]
    Invalid(String),
    /// Valid, but more than one message may hold (events, normalised size).
    #[error("{0}")]
    TooComplex(String),
}

fn invalid(msg: impl Into<String>) -> PayloadError {
    PayloadError::Invalid(msg.into())
}

/// How the body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json` (also `+json` types and a missing content type).
    Json,
    /// `application/x-www-form-urlencoded` with a `payload` field.
    Form,
}

/// Classifies a `Content-Type` header value.
pub fn body_format(content_type: Option<&str>) -> Result<BodyFormat, PayloadError> {
    let Some(ct) = content_type else {
        // Some senders omit it; the body still has to parse as JSON.
        return Ok(BodyFormat::Json);
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/json" | "text/json" | "text/plain" | "" => Ok(BodyFormat::Json),
        m if m.ends_with("+json") => Ok(BodyFormat::Json),
        "application/x-www-form-urlencoded" => Ok(BodyFormat::Form),
        _ => Err(PayloadError::UnsupportedType(
            ct.chars().take(100).collect(),
        )),
    }
}

/// The parts of a form-encoded ArcGIS delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormPayload {
    /// The raw, still percent-encoded value of `payload`: the signed bytes.
    pub signed: Vec<u8>,
    /// The decoded value: the JSON document.
    pub json: Vec<u8>,
    /// An `x-esriHook-Signature` form field, when the signature came that way.
    pub signature: Option<String>,
}

/// Splits a form body and finds the `payload` field (exactly once) and an
/// optional signature field. Field names compare case-insensitively.
pub fn extract_form(raw: &[u8]) -> Result<FormPayload, PayloadError> {
    let mut payload: Option<&[u8]> = None;
    let mut signature = None;
    for pair in raw.split(|b| *b == b'&') {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let key = decode_form_component(k);
        if key.eq_ignore_ascii_case(b"payload") {
            if payload.is_some() {
                return Err(invalid("form has more than one payload field"));
            }
            payload = Some(v);
        } else if key.eq_ignore_ascii_case(b"x-esrihook-signature") {
            if signature.is_some() {
                return Err(invalid("form has more than one x-esriHook-Signature field"));
            }
            let s = String::from_utf8(decode_form_component(v))
                .map_err(|_| invalid("x-esriHook-Signature field is not UTF-8"))?;
            signature = Some(s);
        }
    }
    let signed = payload.ok_or_else(|| invalid("form has no payload field"))?;
    Ok(FormPayload {
        signed: signed.to_vec(),
        json: decode_form_component(signed),
        signature,
    })
}

fn decode_form_component(v: &[u8]) -> Vec<u8> {
    let plus: Vec<u8> = v
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    percent_encoding::percent_decode(&plus).collect()
}

/// Parses JSON nested at most [`MAX_NESTING`] levels.
pub fn parse_json(bytes: &[u8]) -> Result<Value, PayloadError> {
    let depth = nesting(bytes);
    if depth > MAX_NESTING {
        return Err(invalid(format!(
            "body nests arrays and objects {depth} levels deep; at most {MAX_NESTING} are accepted"
        )));
    }
    serde_json::from_slice(bytes).map_err(|e| invalid(format!("body is not valid JSON: {e}")))
}

/// Finds a Portal body's `info.secret` without building the document: a
/// sender that has not shown a credential yet costs no parse tree (only
/// the string, when there is one). Anything that is not a JSON object
/// reads as [`BodySecret::Absent`]; duplicate keys count the last one, as
/// the full parse does.
pub fn probe_body_secret(bytes: &[u8]) -> BodySecret {
    if nesting(bytes) > MAX_NESTING {
        return BodySecret::Absent;
    }
    probe::body_secret(bytes)
}

pub use super::probe::BodySecret;

/// Removes `info.secret` from a Portal document, so no sink ever receives
/// the inbound credential, and says what it was.
pub fn take_body_secret(doc: &mut Value) -> BodySecret {
    let Some(info) = doc.get_mut("info").and_then(Value::as_object_mut) else {
        return BodySecret::Absent;
    };
    match info.shift_remove("secret") {
        None => BodySecret::Absent,
        Some(Value::String(s)) => BodySecret::Present(s),
        Some(_) => BodySecret::WrongType,
    }
}

/// Turns a parsed document into events. `generic_ok` lets a non-ArcGIS
/// JSON document through as one generic event (for `hmac` sources).
pub fn normalise(doc: &Value, generic_ok: bool) -> Result<Vec<Event>, PayloadError> {
    normalise_within(doc, generic_ok, Limits::default())
}

/// [`normalise`] within `limits`: refuses (as soon as it knows) a payload
/// whose events would be too many or too large.
pub fn normalise_within(
    doc: &Value,
    generic_ok: bool,
    limits: Limits,
) -> Result<Vec<Event>, PayloadError> {
    let budget = &mut Budget::new(limits);
    let result = match doc {
        // A function of its own, so an item's error stays in `result` and
        // the generic fallback below still applies to arrays (a `?` here
        // used to return from `normalise` itself: found by `fuzz/` target
        // `normalise`).
        Value::Array(items) => array_events(items, budget),
        Value::Object(obj) if is_portal(obj) => portal_events(obj, budget),
        Value::Object(obj) if is_service(obj) => service_events(obj, budget),
        Value::Object(_) => Err(invalid(
            "not an ArcGIS webhook payload: expected Portal {info, events} or a service {serviceType, events}",
        )),
        _ => Err(invalid("payload must be a JSON object or array")),
    };
    match result {
        // Over a limit is over it whatever the shape.
        Err(e @ PayloadError::TooComplex(_)) => Err(e),
        Err(_) if generic_ok && (doc.is_object() || doc.is_array()) => Ok(vec![Event {
            origin: EventOrigin::Generic,
            uri: "/".into(),
            source: String::new(),
            id: String::new(),
            operation: String::new(),
            username: None,
            when: None,
            webhook: None,
            portal_url: None,
            service: None,
            changes_url: None,
            properties: Arc::new(Value::Null),
        }]),
        other => other,
    }
}

/// An ArcGIS Online payload: an array of hosted-layer objects.
fn array_events(items: &[Value], budget: &mut Budget) -> Result<Vec<Event>, PayloadError> {
    if items.is_empty() {
        return Err(invalid("payload is an empty array"));
    }
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let obj = item
            .as_object()
            .ok_or_else(|| invalid(format!("payload[{i}] is not an object")))?;
        out.extend(service_events(obj, budget).map_err(|e| prefix(e, &format!("payload[{i}]")))?);
    }
    Ok(out)
}

fn prefix(e: PayloadError, at: &str) -> PayloadError {
    match e {
        PayloadError::Invalid(m) => PayloadError::Invalid(format!("{at}: {m}")),
        other => other,
    }
}

fn is_portal(obj: &Map<String, Value>) -> bool {
    obj.contains_key("info")
        || obj
            .get("events")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .is_some_and(|e| e.get("operation").is_some() && e.get("source").is_some())
}

fn is_service(obj: &Map<String, Value>) -> bool {
    obj.contains_key("serviceType")
        || obj.contains_key("serviceName")
        || obj.contains_key("changesUrl")
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An event time in milliseconds. A time that is not a number is no time
/// (ArcGIS always sends numbers); a number outside what the relay can keep
/// and format (before 1970, after 9999) is refused rather than guessed at.
fn millis(v: Option<&Value>, at: &str) -> Result<Option<i64>, PayloadError> {
    let ms = match v {
        Some(Value::Number(n)) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && f.abs() < 9.3e18)
                .map(|f| f as i64)
        }),
        Some(Value::String(s)) => match s.trim().parse::<i64>() {
            Ok(ms) => Some(ms),
            Err(_) => return Ok(None),
        },
        _ => return Ok(None),
    };
    match ms {
        Some(ms) if (0..=MAX_TIME_MS).contains(&ms) => Ok(Some(ms)),
        _ => Err(invalid(format!(
            "{at} is not a time between 1970 and 9999 in milliseconds since 1970"
        ))),
    }
}

/// Portal writes `item`, sometimes `items`; routing and URIs use the
/// singular internally and the plural in the URI, as ArcGIS's triggers do.
fn singular_source(s: &str) -> String {
    let s = s.trim().to_ascii_lowercase();
    match s.as_str() {
        "items" | "groups" | "users" | "roles" => s[..s.len() - 1].to_string(),
        _ => s,
    }
}

fn portal_events(
    obj: &Map<String, Value>,
    budget: &mut Budget,
) -> Result<Vec<Event>, PayloadError> {
    let info = obj.get("info").and_then(Value::as_object);
    let webhook = info.and_then(|i| text(i.get("webhookName")));
    let portal_url = info.and_then(|i| text(i.get("portalURL")));
    let events = obj
        .get("events")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("Portal payload has no events array"))?;
    if events.is_empty() {
        return Err(invalid("Portal payload has an empty events array"));
    }
    let mut out = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        let e = e
            .as_object()
            .ok_or_else(|| invalid(format!("events[{i}] is not an object")))?;
        let source = text(e.get("source"))
            .map(|s| singular_source(&s))
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid(format!("events[{i}].source is missing")))?;
        let operation = text(e.get("operation"))
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid(format!("events[{i}].operation is missing")))?;
        let id = text(e.get("id")).unwrap_or_default();
        let event = Event {
            origin: EventOrigin::Portal,
            uri: format!("/{source}s/{id}/{operation}"),
            source,
            id,
            operation,
            username: text(e.get("username")),
            when: millis(e.get("when"), &format!("events[{i}].when"))?,
            webhook: webhook.clone(),
            portal_url: portal_url.clone(),
            service: None,
            changes_url: None,
            properties: Arc::new(e.get("properties").cloned().unwrap_or(Value::Null)),
        };
        budget.take(&event)?;
        out.push(event);
    }
    Ok(out)
}

fn service_events(
    obj: &Map<String, Value>,
    budget: &mut Budget,
) -> Result<Vec<Event>, PayloadError> {
    let service_name = text(obj.get("serviceName"))
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("service payload has no serviceName"))?;
    // ArcGIS Online hosted layer payloads carry no serviceType: they are
    // always feature services.
    let service_type = text(obj.get("serviceType")).unwrap_or_else(|| "FeatureServer".into());
    let folder = text(obj.get("folderName")).unwrap_or_default();
    let service = if folder.is_empty() {
        format!("{service_name}.{service_type}")
    } else {
        format!("{folder}/{service_name}.{service_type}")
    };
    let changes_url = text(obj.get("changesUrl")).or_else(|| text(obj.get("statusURL")));
    let default_when = millis(obj.get("lastUpdatedTime"), "lastUpdatedTime")?;
    let webhook = text(obj.get("name"));
    let mut properties = Map::new();
    for (k, v) in obj {
        if !matches!(
            k.as_str(),
            "events"
                | "changesUrl"
                | "statusURL"
                | "serviceName"
                | "serviceType"
                | "folderName"
                | "name"
        ) {
            properties.insert(k.clone(), v.clone());
        }
    }
    let events = obj
        .get("events")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("service payload has no events array"))?;
    if events.is_empty() {
        return Err(invalid("service payload has an empty events array"));
    }
    // One allocation for all the events of this payload (stored once too).
    let properties: Props = Arc::new(Value::Object(properties));
    let mut out = Vec::with_capacity(events.len().min(budget.limits.max_events));
    for (i, e) in events.iter().enumerate() {
        let (kind, when) = match e {
            Value::String(s) => (s.clone(), default_when),
            Value::Object(o) => (
                text(o.get("eventType"))
                    .or_else(|| text(o.get("changeType")))
                    .ok_or_else(|| invalid(format!("events[{i}].eventType is missing")))?,
                millis(o.get("when"), &format!("events[{i}].when"))?.or(default_when),
            ),
            _ => {
                return Err(invalid(format!(
                    "events[{i}] is neither a string nor an object"
                )))
            }
        };
        if kind.is_empty() {
            return Err(invalid(format!("events[{i}] has an empty event type")));
        }
        let event = Event {
            origin: EventOrigin::Service,
            uri: format!("/services/{service}/{kind}"),
            source: service_type.clone(),
            id: service_name.clone(),
            operation: kind,
            username: None,
            when,
            webhook: webhook.clone(),
            portal_url: None,
            service: Some(service.clone()),
            changes_url: changes_url.clone(),
            properties: properties.clone(),
        };
        budget.take(&event)?;
        out.push(event);
    }
    Ok(out)
}

/// The dedupe key: a hash of the normalised events (ids, operations, times,
/// changes URLs, properties) — what stays the same when ArcGIS re-sends —
/// or of the raw body when the events say nothing (generic payloads).
pub fn dedupe_key(events: &[Event], body: &[u8]) -> String {
    let mut h = Sha256::new();
    if events.iter().all(|e| e.origin == EventOrigin::Generic) {
        h.update(b"body:");
        h.update(body);
    } else {
        h.update(b"events:");
        // The stored form: shared properties hashed once, not per event.
        h.update(crate::domain::event::encode_events(events).as_bytes());
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/arcgis/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn every_fixture_normalises_with_its_trigger_uri() {
        let cases = [
            (
                "portal-group-update.json",
                vec!["/groups/173dd04b69134bdf99c5000aad0b6298/update"],
            ),
            (
                "portal-item-share.json",
                vec!["/items/6cd80cb32d4a4b4d858a020e57fba7b1/share"],
            ),
            (
                "portal-group-addusers.json",
                vec![
                    "/groups/ecd6646698b24180904e4888d5eaede3/addUsers",
                    "/groups/ecd6646698b24180904e4888d5eaede3/itemShare",
                ],
            ),
            (
                "portal-user-role.json",
                vec!["/users/jsmith/updateUserRole"],
            ),
            (
                "server-feature-created.json",
                vec!["/services/Hosted/Parcels.FeatureServer/FeaturesCreated"],
            ),
            (
                "server-gp-job.json",
                vec!["/services/System/CachingTools.GPServer/JobSucceeded"],
            ),
            (
                "online-hosted-layer.json",
                vec!["/services/myService.FeatureServer/FeaturesCreated"],
            ),
        ];
        for (file, uris) in cases {
            let doc = parse_json(&fixture(file)).unwrap();
            let ev = normalise(&doc, false).unwrap();
            let got: Vec<_> = ev.iter().map(|e| e.uri.as_str()).collect();
            assert_eq!(got, uris, "{file}");
        }
    }

    #[test]
    fn plural_source_is_singular() {
        let doc: Value = serde_json::json!({"info": {}, "events": [{"source": "items", "id": "a", "operation": "update"}]});
        let ev = normalise(&doc, false).unwrap();
        assert_eq!(ev[0].source, "item");
        assert_eq!(ev[0].uri, "/items/a/update");
    }

    #[test]
    fn form_fixture_extracts_signed_bytes_and_json() {
        let raw = fixture("online-hosted-layer.form");
        let f = extract_form(raw.trim_ascii_end()).unwrap();
        assert!(f.signed.starts_with(b"%5B%7B"));
        let doc = parse_json(&f.json).unwrap();
        assert_eq!(
            doc,
            parse_json(&fixture("online-hosted-layer.json")).unwrap()
        );
    }

    #[test]
    fn form_errors_are_named() {
        assert!(extract_form(b"a=1")
            .unwrap_err()
            .to_string()
            .contains("no payload"));
        assert!(extract_form(b"payload=1&payload=2")
            .unwrap_err()
            .to_string()
            .contains("more than one"));
    }

    #[test]
    fn secret_is_removed_from_the_body() {
        let mut doc: Value =
            serde_json::json!({"info": {"secret": "s3", "webhookName": "w"}, "events": []});
        assert_eq!(take_body_secret(&mut doc), BodySecret::Present("s3".into()));
        assert!(!doc.to_string().contains("s3"));
        let mut doc: Value = serde_json::json!({"info": {"secret": 5}});
        assert_eq!(take_body_secret(&mut doc), BodySecret::WrongType);
    }

    #[test]
    fn non_arcgis_json_is_refused_unless_generic() {
        let doc: Value = serde_json::json!({"hello": "world"});
        assert!(normalise(&doc, false).is_err());
        assert_eq!(
            normalise(&doc, true).unwrap()[0].origin,
            EventOrigin::Generic
        );
        assert!(normalise(&Value::from(3), true).is_err());
    }

    #[test]
    fn events_survive_the_store_round_trip() {
        // A float literal with more digits than an f64 holds: without
        // serde_json's float_roundtrip it parsed one ULP off and came back
        // from the store different (found by `fuzz/` target `normalise`).
        let raw = br#"{"serviceName":"s","events":["E"],"x":67777777000000000000000000000000000000000009622116525737508870.636505103395684460}"#;
        let ev = normalise(&parse_json(raw).unwrap(), false).unwrap();
        let back: Vec<Event> = serde_json::from_str(&serde_json::to_string(&ev).unwrap()).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn any_array_is_generic_when_generic_is_allowed() {
        for doc in [
            serde_json::json!([{"a": 1}]),
            serde_json::json!([1, 2]),
            serde_json::json!([]),
        ] {
            assert!(normalise(&doc, false).is_err(), "{doc}");
            let ev = normalise(&doc, true).unwrap_or_else(|e| panic!("{doc}: {e}"));
            assert_eq!(ev[0].origin, EventOrigin::Generic, "{doc}");
        }
    }
}
