//! `http`: any endpoint. Sends the original body byte-for-byte with its
//! content type (or the normalised events as JSON), optionally signed.

use std::sync::Arc;

use ::http::Method;
use serde::Serialize;

use super::changes::changes_body;
use super::sign::{signature_headers, signing_key};
use super::{HttpKind, Outbound, RenderError};
use crate::config::{ConfigError, HttpFormat, HttpSpec, SignScheme};
use crate::domain::event::{Event, Props};
use crate::store::Claimed;

/// The `http` kind. The sink's `headers` are added by [`super::HttpSink`].
pub struct Http {
    method: Method,
    format: HttpFormat,
    sign: Option<(SignScheme, Vec<u8>)>,
}

impl Http {
    /// From the sink's spec: checks `method` and the signing key.
    pub fn new(key: &str, spec: &HttpSpec) -> Result<Http, ConfigError> {
        Http::with_default_format(key, spec, HttpFormat::Original)
    }

    /// As [`Http::new`], with `format` defaulting to `default` (the
    /// `power-automate` preset sends events).
    pub fn with_default_format(
        key: &str,
        spec: &HttpSpec,
        default: HttpFormat,
    ) -> Result<Http, ConfigError> {
        let bad = |k: &str, m: String| ConfigError::Invalid {
            key: format!("{key}.{k}"),
            message: m,
        };
        let method = match spec.method.as_deref() {
            None => Method::POST,
            Some(m) => match m.to_ascii_uppercase().as_str() {
                "POST" => Method::POST,
                "PUT" => Method::PUT,
                "PATCH" => Method::PATCH,
                _ => return Err(bad("method", format!("{m:?} is not POST, PUT or PATCH"))),
            },
        };
        let sign = match &spec.sign {
            Some(s) => Some((
                s.scheme,
                signing_key(s.scheme, &s.secret).map_err(|m| bad("secret", m))?,
            )),
            None => None,
        };
        Ok(Http {
            method,
            format: spec.format.unwrap_or(default),
            sign,
        })
    }
}

/// Most bytes a `format = "events"` body may have. Each event carries its
/// properties, and the events of one service payload share theirs (stored
/// once, see [`crate::domain::event::encode_events`]), so a 1 MB payload of 1,000
/// events would write 1 GB here; such a delivery is refused before any of
/// it is built. The original body (`format = "original"`) has no such cost.
pub const MAX_EVENTS_BODY: usize = 16 * 1024 * 1024;

#[derive(Serialize)]
struct EventsBody<'a> {
    message_id: &'a str,
    delivery_id: &'a str,
    source: &'a str,
    received_at: String,
    events: Vec<&'a Event>,
}

/// Counts what is written to it.
struct Count(usize);

impl std::io::Write for Count {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(b.len());
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn json_len<T: Serialize + ?Sized>(v: &T) -> usize {
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// What serialising `events` writes, counting each shared properties
/// value once per event without writing it out.
fn events_len(events: &[&Event]) -> usize {
    let null: Props = Arc::new(serde_json::Value::Null);
    let mut props: Vec<(&Props, usize)> = Vec::new();
    let mut total = 0usize;
    for e in events {
        let p = match props.iter().find(|(p, _)| Arc::ptr_eq(p, &e.properties)) {
            Some((_, n)) => *n,
            None => {
                let n = json_len(&*e.properties);
                props.push((&e.properties, n));
                n
            }
        };
        let bare = json_len(&Event {
            properties: null.clone(),
            ..(*e).clone()
        });
        let with_props = if e.properties.is_null() {
            0
        } else {
            p + r#","properties":"#.len()
        };
        total = total.saturating_add(bare).saturating_add(with_props);
    }
    total
}

/// The `format = "events"` body: the events this sink matched, or why it
/// is not built (over [`MAX_EVENTS_BODY`]).
pub fn events_body(d: &Claimed) -> Result<Vec<u8>, RenderError> {
    let events = d.matched_events();
    let size = events_len(&events);
    if size > MAX_EVENTS_BODY {
        return Err(RenderError::Refused(format!(
            "the {} events would make a body of about {size} bytes, over the {MAX_EVENTS_BODY}-byte limit of format = \"events\" (format = \"original\" sends the payload as it came)",
            events.len()
        )));
    }
    let doc = EventsBody {
        message_id: &d.message_id,
        delivery_id: &d.id,
        source: &d.source,
        received_at: d.received_at.rfc3339(),
        events,
    };
    Ok(serde_json::to_vec(&doc)?)
}

impl HttpKind for Http {
    fn render(&self, d: &Claimed) -> Result<Outbound, RenderError> {
        let (body, content_type) = match self.format {
            HttpFormat::Original => (d.body.clone(), d.content_type.clone()),
            HttpFormat::Events => (events_body(d)?, "application/json".to_string()),
            HttpFormat::Changes => (changes_body(d)?, "application/json".to_string()),
            HttpFormat::Geojson => (
                super::changes::geojson_body(d)?,
                "application/geo+json".to_string(),
            ),
        };
        let mut headers = vec![
            ("content-type".to_string(), content_type),
            ("webhook-id".to_string(), d.id.to_string()),
        ];
        if let Some((scheme, key)) = &self.sign {
            let now = crate::store::now_ms().get() / 1000;
            for (k, v) in signature_headers(*scheme, key, &d.id, now, &body) {
                headers.push((k.to_string(), v));
            }
        }
        Ok(Outbound {
            method: self.method.clone(),
            headers,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::sample::{claimed, Sample};

    #[test]
    fn events_body_is_measured_before_it_is_built() {
        let mut d = claimed(Sample::Service, "server", "d1");
        // The same bytes as the document it replaces.
        let before = serde_json::to_vec(&serde_json::json!({
            "message_id": d.message_id,
            "delivery_id": d.id,
            "source": d.source,
            "received_at": d.received_at.rfc3339(),
            "events": d.matched_events(),
        }))
        .unwrap();
        assert_eq!(events_body(&d).unwrap(), before);
        for e in d.matched_events() {
            assert_eq!(events_len(&[e]), json_len(e));
        }
        // 1,000 events sharing 20 KB of properties: 20 MB, refused.
        let props: Props = Arc::new(serde_json::json!({"blob": "x".repeat(20_000)}));
        let e = Event {
            properties: props,
            ..d.events[0].clone()
        };
        d.events = vec![e; 1000];
        d.matched = (0..1000).collect();
        let err = events_body(&d).unwrap_err().to_string();
        assert!(
            err.contains("1000 events") && err.contains("format = \"original\""),
            "{err}"
        );
    }
}
