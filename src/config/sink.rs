//! `[[sinks]]` as written: the kinds, their enumerated values, and
//! [`RawSink`], the one TOML shape every kind shares. It exists for
//! deserialising (unknown keys refused) and for printing (`hookrelay
//! check`); everything else uses the typed [`super::SinkSpec`] it is
//! converted into when the file is loaded.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::delivery::{CircuitConfig, DeactivateConfig};
use super::values::{ser_opt_url, ser_url, Dur, Secret};

/// Where a sink sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SinkKind {
    /// Any HTTP endpoint; the original body byte-for-byte.
    Http,
    /// Slack incoming webhook.
    Slack,
    /// Microsoft Teams Workflows webhook.
    Teams,
    /// Power BI push dataset.
    Powerbi,
    /// Power Automate "When an HTTP request is received".
    PowerAutomate,
    /// ArcGIS Notebook Server webhook receiver.
    Notebook,
    /// SMTP.
    Email,
}

impl SinkKind {
    /// The name used in the config and the API.
    pub fn as_str(&self) -> &'static str {
        match self {
            SinkKind::Http => "http",
            SinkKind::Slack => "slack",
            SinkKind::Teams => "teams",
            SinkKind::Powerbi => "powerbi",
            SinkKind::PowerAutomate => "power-automate",
            SinkKind::Notebook => "notebook",
            SinkKind::Email => "email",
        }
    }

    /// The service's own request rate (per second), used when the sink sets
    /// no `rate_limit`: Slack takes 1 message/s per webhook, Teams about 4/s,
    /// Power BI 120 requests/min per dataset.
    pub fn default_rate_limit(&self) -> Option<f64> {
        match self {
            SinkKind::Slack => Some(1.0),
            SinkKind::Teams => Some(4.0),
            SinkKind::Powerbi => Some(2.0),
            _ => None,
        }
    }
}

/// Outbound signature scheme of an `http` sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignScheme {
    /// standardwebhooks.com: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    StandardWebhooks,
    /// `x-esriHook-Signature: sha256=<base64>`.
    Arcgis,
    /// `x-hub-signature-256: sha256=<hex>`.
    Github,
}

/// What an `http` sink sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HttpFormat {
    /// The body exactly as ArcGIS sent it.
    #[default]
    Original,
    /// The normalised events as JSON.
    Events,
    /// The fetched changes document (on an enriched source).
    Changes,
    /// The fetched changes as an RFC 7946 FeatureCollection, one feature
    /// per edit (on an enriched source).
    Geojson,
}

impl HttpFormat {
    /// Whether the body is made of the fetched changes.
    pub fn reads_changes(&self) -> bool {
        matches!(self, HttpFormat::Changes | HttpFormat::Geojson)
    }

    /// Whether the body is GeoJSON.
    pub fn is_geojson(&self) -> bool {
        *self == HttpFormat::Geojson
    }
}

/// How an `email` sink talks TLS to its SMTP relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same host or network.
    None,
}

/// One `[[sinks]]` table exactly as written: every key of every kind.
/// A key that does not apply to `kind` is refused when it is converted
/// into a [`super::SinkSpec`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSink {
    /// Unique, `[a-z0-9-]`.
    pub name: String,
    /// Destination type.
    pub kind: SinkKind,
    /// Destination URL.
    #[serde(serialize_with = "ser_url")]
    pub url: String,
    /// Sources routed here; all when absent.
    #[serde(default)]
    pub sources: Option<Vec<String>>,
    /// ArcGIS trigger patterns routed here; all when absent.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// A CEL expression over the event (and, when it names `feature`,
    /// `edit` or `layer`, over each changed feature) that must be true
    /// for this sink to take it. Compiled at start, so a syntax error is a
    /// config error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Extra request headers (values are treated as secrets).
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// HTTP method (POST by default).
    #[serde(default)]
    pub method: Option<String>,
    /// `http` only: original body or normalised events.
    #[serde(default)]
    pub format: Option<HttpFormat>,
    /// Outbound signature.
    #[serde(default)]
    pub sign: Option<SignScheme>,
    /// Signing key for `sign`; for `notebook`, the receiver's 32-character secret.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// `slack`, `teams`: the JSON body template; `email`: the plain-text
    /// body template (minijinja, usually `file:/path`). Compiled and
    /// test-rendered at start, so a broken template is a config error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// `email` only: the HTML body template. With `template` set and this
    /// not, the mail is plain text only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html_template: Option<String>,
    /// `email` only: the subject template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// `powerbi` only: bearer token for the REST API (`/v1.0/myorg/datasets/...`);
    /// without it the URL is a push URL carrying its own `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// `powerbi` only: feature attributes to write, one row per edited
    /// feature (on an enriched source) instead of one per event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    /// `notebook` only: the header the receiver checks (default `x-esrihook-signature`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_header: Option<String>,
    /// `notebook` only: text before the Base64 signature (default none; e.g. `sha256=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_prefix: Option<String>,
    /// `email` only: `starttls` (default), `tls` (implicit, port 465) or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<SmtpTls>,
    /// `email` only: SMTP user name (with `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// `email` only: SMTP password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// `email` only: sender mailbox, `Name <addr@example.org>` or `addr@example.org`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// `email` only: recipient mailboxes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// Overrides `[delivery] timeout`.
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// Overrides `[delivery] max_attempts`.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Overrides `[delivery] initial_backoff`.
    #[serde(default)]
    pub initial_backoff: Option<Dur>,
    /// Overrides `[delivery] max_backoff`.
    #[serde(default)]
    pub max_backoff: Option<Dur>,
    /// Overrides `[delivery] max_age`.
    #[serde(default)]
    pub max_age: Option<Dur>,
    /// Overrides `[delivery] concurrency`.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Overrides `[delivery] rate_limit`.
    #[serde(default)]
    pub rate_limit: Option<f64>,
    /// Overrides `[delivery] proxy`.
    #[serde(default, serialize_with = "ser_opt_url")]
    pub proxy: Option<String>,
    /// Overrides `[delivery] ca_file`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) presented to the sink (mTLS).
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Overrides `[delivery] circuit`.
    #[serde(default)]
    pub circuit: Option<CircuitConfig>,
    /// Pause this sink for good after repeated failures (until resumed).
    #[serde(default)]
    pub deactivate_after: Option<DeactivateConfig>,
}
