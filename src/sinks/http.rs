//! `http`: any endpoint. Sends the original body byte-for-byte with its
//! content type (or the normalised events as JSON), optionally signed.

use ::http::Method;

use super::sign::{signature_headers, signing_key};
use super::{HttpKind, Outbound};
use crate::config::{ConfigError, HttpFormat, HttpSpec, SignScheme};
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
        Ok(Outbound {
            method: self.method.clone(),
            headers,
            body,
        })
    }
}
