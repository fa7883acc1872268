//! `powerbi`: rows into a Power BI dataset, one row per matched event with
//! fixed columns ([`COLUMNS`]), every value text no longer than 4,000
//! characters.
//!
//! Two modes, chosen by the config: a push URL (`.../rows?key=...`, no
//! `token`) takes a bare JSON array of rows; the REST API
//! (`/v1.0/myorg/datasets/{id}/tables/{table}/rows` with `token`) takes
//! `{"rows": [...]}` and a bearer token.
//!
//! Batching: each delivery is one request carrying all its rows (a webhook
//! payload has a handful of events, far below Power BI's 10,000 rows per
//! request). Deliveries are not merged across messages, because each
//! delivery's outcome is recorded on its own; the default rate limit of
//! 2 requests/s keeps a sink within Power BI's 120 requests per minute.

use serde_json::{Map, Value};

use super::{answer_word, Answer, HttpKind, Outbound, RenderError};
use crate::config::{ConfigError, PowerBiSpec, Secret};
use crate::domain::edit::Edit;
use crate::domain::event::EventOrigin;
use crate::store::Claimed;

/// The columns of every row, in order. The dataset's table must have
/// exactly these: `when` is a DateTime, the rest are text.
pub const COLUMNS: [&str; 10] = [
    "when",
    "source",
    "operation",
    "id",
    "username",
    "webhook",
    "portal_url",
    "uri",
    "service",
    "change_type",
];
/// Power BI's longest text value.
pub const MAX_VALUE_CHARS: usize = 4000;
/// Power BI's most rows per request.
pub const MAX_ROWS: usize = 10_000;

/// The `powerbi` kind.
pub struct PowerBi {
    token: Option<Secret>,
    /// `columns`: one row per edited feature with these attributes.
    columns: Option<Vec<String>>,
}

impl PowerBi {
    /// From the sink's spec: REST mode when it has a `token`; without one
    /// the URL must be a push URL carrying its `key`.
    pub fn new(key: &str, spec: &PowerBiSpec) -> Result<PowerBi, ConfigError> {
        let push = reqwest::Url::parse(&spec.common.url)
            .is_ok_and(|u| u.query_pairs().any(|(k, _)| k == "key"));
        if spec.token.is_none() && !push {
            return Err(ConfigError::Invalid {
                key: format!("{key}.url"),
                message: "a Power BI push URL carries key=...; for the REST API \
                          (/v1.0/myorg/datasets/...) set token"
                    .into(),
            });
        }
        Ok(PowerBi {
            token: spec.token.clone(),
            columns: spec.columns.clone(),
        })
    }
}

/// Text cut to Power BI's limit, on a character boundary.
fn cell(s: &str) -> Value {
    Value::String(s.chars().take(MAX_VALUE_CHARS).collect())
}

/// One flat row per matched event. Missing values are empty strings, so
/// every row has every column with one type.
pub fn rows(d: &Claimed) -> Vec<Map<String, Value>> {
    d.matched_events()
        .into_iter()
        .map(|e| {
            let opt = |v: &Option<String>| cell(v.as_deref().unwrap_or(""));
            let change_type = if e.origin == EventOrigin::Service {
                e.operation.as_str()
            } else {
                ""
            };
            let mut row = Map::new();
            row.insert(
                "when".into(),
                Value::String(
                    crate::store::Millis(e.when.unwrap_or(d.received_at.get())).rfc3339(),
                ),
            );
            row.insert("source".into(), cell(&e.source));
            row.insert("operation".into(), cell(&e.operation));
            row.insert("id".into(), cell(&e.id));
            row.insert("username".into(), opt(&e.username));
            row.insert("webhook".into(), opt(&e.webhook));
            // A report may show this column as a clickable web URL.
            let portal_url = e
                .portal_url
                .clone()
                .filter(|u| crate::domain::event::is_http_url(u));
            row.insert("portal_url".into(), opt(&portal_url));
            row.insert("uri".into(), cell(&e.uri));
            row.insert("service".into(), opt(&e.service));
            row.insert("change_type".into(), cell(change_type));
            row
        })
        .collect()
}

/// `columns`: one row per edited feature of the fetched changes, with
/// fixed columns [`FEATURE_COLUMNS`] and then the chosen attributes (text
/// cut to 4,000 characters, numbers as numbers, a missing attribute null).
pub fn feature_rows(
    d: &Claimed,
    columns: &[String],
) -> Result<Vec<Map<String, Value>>, RenderError> {
    let doc = super::changes::doc(d)?;
    let when = d
        .matched_events()
        .into_iter()
        .find_map(|e| e.when)
        .unwrap_or(d.received_at.get());
    let when = Value::String(crate::store::Millis(when).rfc3339());
    let mut out = Vec::new();
    for layer in &doc.layers {
        let lists = [
            (Edit::Add, &layer.adds),
            (Edit::Update, &layer.updates),
            (Edit::Delete, &layer.deletes),
        ];
        for (edit, list) in lists {
            for f in list {
                let attrs = f.get("attributes").and_then(Value::as_object);
                let mut row = Map::new();
                row.insert("when".into(), when.clone());
                row.insert("source".into(), cell(&d.source));
                row.insert("layer".into(), Value::from(layer.id));
                row.insert("edit".into(), cell(edit.as_str()));
                let oid = attrs
                    .and_then(|a| a.iter().find(|(k, _)| k.eq_ignore_ascii_case("objectid")))
                    .map(|(_, v)| v.clone())
                    .unwrap_or(Value::Null);
                row.insert("object_id".into(), oid);
                for c in columns {
                    let v = match attrs.and_then(|a| a.get(c)) {
                        Some(Value::String(s)) => cell(s),
                        Some(v @ (Value::Number(_) | Value::Bool(_))) => v.clone(),
                        Some(Value::Null) | None => Value::Null,
                        Some(other) => cell(&other.to_string()),
                    };
                    row.insert(c.clone(), v);
                }
                out.push(row);
            }
        }
    }
    Ok(out)
}

/// The fixed columns of a `columns` row, before the chosen attributes.
pub const FEATURE_COLUMNS: [&str; 5] = ["when", "source", "layer", "edit", "object_id"];

impl PowerBi {
    /// The request body: a bare array (push URL) or `{"rows": [...]}` (REST).
    pub fn body(&self, d: &Claimed) -> Result<Value, RenderError> {
        self.batch_body(std::slice::from_ref(d))
    }

    /// One body for the rows of several deliveries.
    pub fn batch_body(&self, ds: &[Claimed]) -> Result<Value, RenderError> {
        let rows: Vec<_> = match &self.columns {
            None => ds.iter().flat_map(rows).collect(),
            Some(columns) => {
                let mut all = Vec::new();
                for d in ds {
                    all.extend(feature_rows(d, columns)?);
                }
                all
            }
        };
        if rows.len() > MAX_ROWS {
            return Err(RenderError::Refused(format!(
                "{} rows, over Power BI's {MAX_ROWS} per request",
                rows.len()
            )));
        }
        let rows = Value::Array(rows.into_iter().map(Value::Object).collect());
        Ok(match self.token {
            Some(_) => serde_json::json!({ "rows": rows }),
            None => rows,
        })
    }
}

impl HttpKind for PowerBi {
    fn render(&self, d: &Claimed) -> Result<Outbound, RenderError> {
        self.render_batch(std::slice::from_ref(d))
    }

    /// Power BI takes up to 10,000 rows per request and 120 requests a
    /// minute per dataset: deliveries waiting for this sink are sent
    /// together.
    fn max_batch_rows(&self) -> usize {
        MAX_ROWS
    }

    fn render_batch(&self, ds: &[Claimed]) -> Result<Outbound, RenderError> {
        let body = serde_json::to_vec(&self.batch_body(ds)?)?;
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        if let Some(t) = &self.token {
            headers.push(("authorization".into(), format!("Bearer {}", t.expose())));
        }
        Ok(Outbound {
            method: ::http::Method::POST,
            headers,
            body,
        })
    }

    /// Power BI's errors are `{"error": {"code": "ItemNotFound", ...}}`.
    fn describe(&self, a: &Answer) -> Option<String> {
        serde_json::from_slice::<Value>(&a.body)
            .ok()
            .and_then(|v| {
                v.pointer("/error/code")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .or_else(|| answer_word(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::sample::{claimed, Sample};

    #[test]
    fn rows_have_exactly_the_columns() {
        let r = rows(&claimed(Sample::Service, "server", "d"));
        assert_eq!(r.len(), 1);
        let keys: Vec<&str> = r[0].keys().map(String::as_str).collect();
        assert_eq!(keys, COLUMNS);
        assert_eq!(r[0]["change_type"], "FeaturesCreated");
        assert_eq!(r[0]["when"], "2024-10-31T14:41:44.000Z");
    }

    #[test]
    fn long_values_are_cut_to_4000_characters() {
        let mut d = claimed(Sample::Portal, "portal", "d");
        d.events[0].id = "é".repeat(5000);
        let r = rows(&d);
        assert_eq!(
            r[0]["id"].as_str().unwrap().chars().count(),
            MAX_VALUE_CHARS
        );
    }

    #[test]
    fn rest_mode_wraps_rows_and_sends_the_token() {
        let crate::config::SinkSpec::Powerbi(c) = crate::sinks::testing::spec("name = \"p\"\nkind = \"powerbi\"\nurl = \"https://api.powerbi.com/v1.0/myorg/datasets/d/tables/t/rows\"\ntoken = \"tok\"") else {
            panic!("not a powerbi sink")
        };
        let out = PowerBi::new("sinks[0]", &c)
            .unwrap()
            .render(&claimed(Sample::Portal, "portal", "d"))
            .unwrap();
        let v: Value = serde_json::from_slice(&out.body).unwrap();
        assert!(v["rows"].is_array());
        assert!(out
            .headers
            .iter()
            .any(|(k, v)| k == "authorization" && v == "Bearer tok"));
    }
}
