//! `http`: any endpoint. Sends the original body byte-for-byte with its
//! content type (or the normalised events as JSON), optionally signed.

use ::http::Method;

use super::sign::{signature_headers, signing_key};
use super::{HttpKind, Outbound};
use crate::config::{ConfigError, HttpFormat, SignScheme, SinkConfig};
use crate::store::Claimed;

/// The `http` kind.
pub struct Http {
    method: Method,
    format: HttpFormat,
    headers: Vec<(String, String)>,
    sign: Option<(SignScheme, Vec<u8>)>,
}

impl Http {
    /// From the sink's config (already validated).
    pub fn new(c: &SinkConfig) -> Result<Http, ConfigError> {
        let method = c
            .method
            .as_deref()
            .unwrap_or("POST")
            .to_ascii_uppercase()
            .parse()
            .unwrap_or(Method::POST);
        let sign = match (c.sign, &c.secret) {
            (Some(s), Some(secret)) => Some((
                s,
                signing_key(s, secret).map_err(|m| ConfigError::Invalid {
                    key: format!("sinks.{}.secret", c.name),
                    message: m,
                })?,
            )),
            _ => None,
        };
        Ok(Http {
            method,
            format: c.format.unwrap_or_default(),
            headers: c
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_string()))
                .collect(),
            sign,
        })
    }
}

/// The `format = "events"` body: the events this sink matched.
pub fn events_body(d: &Claimed) -> Vec<u8> {
    let doc = serde_json::json!({
        "message_id": d.message_id,
        "delivery_id": d.id,
        "source": d.source,
        "received_at": crate::store::rfc3339(d.received_at),
        "events": d.matched_events(),
    });
    serde_json::to_vec(&doc).unwrap_or_default()
}

impl HttpKind for Http {
    fn render(&self, d: &Claimed) -> Result<Outbound, String> {
        let (body, content_type) = match self.format {
            HttpFormat::Original => (d.body.clone(), d.content_type.clone()),
            HttpFormat::Events => (events_body(d), "application/json".to_string()),
        };
        let mut headers = vec![
            ("content-type".to_string(), content_type),
            ("webhook-id".to_string(), d.id.clone()),
        ];
        if let Some((scheme, key)) = &self.sign {
            let now = crate::store::now_ms() / 1000;
            for (k, v) in signature_headers(*scheme, key, &d.id, now, &body) {
                headers.push((k.to_string(), v));
            }
        }
        headers.extend(self.headers.iter().cloned());
        Ok(Outbound {
            method: self.method.clone(),
            headers,
            body,
        })
    }
}
