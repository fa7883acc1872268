//! The typed sinks: one spec per kind, holding only the keys that kind
//! takes. They are made once from a [`super::RawSink`] when the configuration
//! is loaded (`convert.rs`, where a key set on a kind that does not take
//! it is refused, naming the key); what only a kind can check (templates,
//! secret lengths, signing keys, mailboxes) is checked when
//! `sinks::build` builds the sink from its spec, once.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::delivery::{DeactivateConfig, DeliveryConfig, DeliveryOverrides, DeliveryPolicy};
use super::sink::{HttpFormat, SignScheme, SinkKind, SmtpTls};
use super::values::Secret;
use super::ConfigError;

/// The keys every sink has, whatever its kind.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkCommon {
    /// Unique, `[a-z0-9-]`.
    pub name: String,
    /// Destination URL (`smtp://` for `email`).
    pub url: String,
    /// Sources routed here; all when absent.
    pub sources: Option<Vec<String>>,
    /// ArcGIS trigger patterns routed here; all when absent.
    pub events: Option<Vec<String>>,
    /// `filter`: a CEL expression, as written (compiled where the sinks
    /// are built, `dispatch::SinkSet::build`).
    pub filter: Option<String>,
    /// The sink's own `[delivery]` keys.
    pub delivery: DeliveryOverrides,
    /// Pause this sink for good after repeated failures (until resumed).
    pub deactivate_after: Option<DeactivateConfig>,
}

/// What every kind that sends over HTTP (all but `email`) has besides:
/// extra headers, its proxy and the certificate it presents.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HttpTransport {
    /// Extra request headers, sent with every request (values are secrets).
    pub headers: BTreeMap<String, Secret>,
    /// Overrides `[delivery] proxy`.
    pub proxy: Option<String>,
    /// `client_cert` + `client_key`, for mutual TLS.
    pub client_cert: Option<ClientCert>,
}

/// A PEM client certificate (chain) and its private key.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientCert {
    /// `client_cert`.
    pub cert: PathBuf,
    /// `client_key`.
    pub key: PathBuf,
}

/// `sign` with the `secret` it signs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Signing {
    /// The scheme.
    pub scheme: SignScheme,
    /// The key, as written (a standard-webhooks key is checked when built).
    pub secret: Secret,
}

/// `http`, and `power-automate`, which is `http` with other defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSpec {
    /// Name, URL, routing, delivery overrides.
    pub common: SinkCommon,
    /// Headers, proxy, client certificate.
    pub transport: HttpTransport,
    /// `method`: POST (default), PUT or PATCH, as written.
    pub method: Option<String>,
    /// `format`: the kind's default when absent.
    pub format: Option<HttpFormat>,
    /// `sign` + `secret`.
    pub sign: Option<Signing>,
}

/// `slack`.
#[derive(Debug, Clone, PartialEq)]
pub struct SlackSpec {
    /// Name, URL, routing, delivery overrides.
    pub common: SinkCommon,
    /// Headers, proxy, client certificate.
    pub transport: HttpTransport,
    /// `template`: the JSON body; the built-in one when absent.
    pub template: Option<String>,
}

/// `teams`.
#[derive(Debug, Clone, PartialEq)]
pub struct TeamsSpec {
    /// Name, URL, routing, delivery overrides.
    pub common: SinkCommon,
    /// Headers, proxy, client certificate.
    pub transport: HttpTransport,
    /// `template`: the message body; the built-in card when absent.
    pub template: Option<String>,
}

/// `powerbi`.
#[derive(Debug, Clone, PartialEq)]
pub struct PowerBiSpec {
    /// Name, URL, routing, delivery overrides.
    pub common: SinkCommon,
    /// Headers, proxy, client certificate.
    pub transport: HttpTransport,
    /// `token`: REST mode with a bearer token; a push URL (with `key=`) without.
    pub token: Option<Secret>,
    /// `columns`: one row per edited feature with these attributes.
    pub columns: Option<Vec<String>>,
}

/// `notebook`.
#[derive(Debug, Clone, PartialEq)]
pub struct NotebookSpec {
    /// Name, URL, routing, delivery overrides.
    pub common: SinkCommon,
    /// Headers, proxy, client certificate.
    pub transport: HttpTransport,
    /// `secret`: the receiver's secret (its length is checked when built).
    pub secret: Secret,
    /// `signature_header`; `x-esrihook-signature` when absent.
    pub signature_header: Option<String>,
    /// `signature_prefix`; none when absent.
    pub signature_prefix: Option<String>,
}

/// `email`.
#[derive(Debug, Clone, PartialEq)]
pub struct EmailSpec {
    /// Name, URL (`smtp://host[:port]`), routing, delivery overrides.
    pub common: SinkCommon,
    /// `tls`: STARTTLS when absent.
    pub tls: Option<SmtpTls>,
    /// `username` + `password`.
    pub login: Option<SmtpLogin>,
    /// `from`, as written (parsed as a mailbox when built).
    pub from: String,
    /// `to`: at least one.
    pub to: Vec<String>,
    /// `subject` template.
    pub subject: Option<String>,
    /// `template`: the plain-text body.
    pub template: Option<String>,
    /// `html_template`: the HTML body.
    pub html_template: Option<String>,
}

/// SMTP credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct SmtpLogin {
    /// `username`.
    pub username: String,
    /// `password`.
    pub password: Secret,
}

/// One `[[sinks]]` entry, typed by its kind.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkSpec {
    /// `kind = "http"`.
    Http(HttpSpec),
    /// `kind = "slack"`.
    Slack(SlackSpec),
    /// `kind = "teams"`.
    Teams(TeamsSpec),
    /// `kind = "powerbi"`.
    Powerbi(PowerBiSpec),
    /// `kind = "power-automate"`: the `http` keys, JSON events by default.
    PowerAutomate(HttpSpec),
    /// `kind = "notebook"`.
    Notebook(NotebookSpec),
    /// `kind = "email"`.
    Email(EmailSpec),
}

impl SinkSpec {
    /// The kind.
    pub fn kind(&self) -> SinkKind {
        match self {
            SinkSpec::Http(_) => SinkKind::Http,
            SinkSpec::Slack(_) => SinkKind::Slack,
            SinkSpec::Teams(_) => SinkKind::Teams,
            SinkSpec::Powerbi(_) => SinkKind::Powerbi,
            SinkSpec::PowerAutomate(_) => SinkKind::PowerAutomate,
            SinkSpec::Notebook(_) => SinkKind::Notebook,
            SinkSpec::Email(_) => SinkKind::Email,
        }
    }

    /// The keys every kind has.
    pub fn common(&self) -> &SinkCommon {
        match self {
            SinkSpec::Http(s) | SinkSpec::PowerAutomate(s) => &s.common,
            SinkSpec::Slack(s) => &s.common,
            SinkSpec::Teams(s) => &s.common,
            SinkSpec::Powerbi(s) => &s.common,
            SinkSpec::Notebook(s) => &s.common,
            SinkSpec::Email(s) => &s.common,
        }
    }

    /// The sink's name.
    pub fn name(&self) -> &str {
        &self.common().name
    }

    /// Whether the sink sends nothing but the fetched changes
    /// (`format = "changes"` or `"geojson"`): it takes only the events of
    /// enriched sources that have a `changesUrl`.
    pub fn only_changes(&self) -> bool {
        match self {
            SinkSpec::Http(s) | SinkSpec::PowerAutomate(s) => {
                s.format.is_some_and(|f| f.reads_changes())
            }
            SinkSpec::Powerbi(s) => s.columns.is_some(),
            _ => false,
        }
    }

    /// Whether the sink renders geometry as GeoJSON, which RFC 7946 wants
    /// in WGS 84: the fetch then asks ArcGIS for `outSR=4326`.
    pub fn wants_wgs84(&self) -> bool {
        match self {
            SinkSpec::Http(s) | SinkSpec::PowerAutomate(s) => {
                s.format.is_some_and(|f| f.is_geojson())
            }
            _ => false,
        }
    }

    /// Whether the sink renders the edited features of a feature-service
    /// event, so its deliveries wait for the message's fetch (on an
    /// enriched source). The templated kinds show them; `http` and
    /// `power-automate` forward the payload or the events unless asked for
    /// the changes; a notebook gets the payload.
    pub fn needs_changes(&self) -> bool {
        match self {
            SinkSpec::Http(s) | SinkSpec::PowerAutomate(s) => {
                s.format.is_some_and(|f| f.reads_changes())
            }
            SinkSpec::Slack(_) | SinkSpec::Teams(_) | SinkSpec::Email(_) => true,
            SinkSpec::Powerbi(s) => s.columns.is_some(),
            SinkSpec::Notebook(_) => false,
        }
    }

    /// Headers, proxy and client certificate; none for `email`, which
    /// speaks SMTP.
    pub fn transport(&self) -> Option<&HttpTransport> {
        match self {
            SinkSpec::Http(s) | SinkSpec::PowerAutomate(s) => Some(&s.transport),
            SinkSpec::Slack(s) => Some(&s.transport),
            SinkSpec::Teams(s) => Some(&s.transport),
            SinkSpec::Powerbi(s) => Some(&s.transport),
            SinkSpec::Notebook(s) => Some(&s.transport),
            SinkSpec::Email(_) => None,
        }
    }

    /// This sink's settings over the `[delivery]` defaults.
    pub fn policy(&self, d: &DeliveryConfig) -> DeliveryPolicy {
        let common = self.common();
        let o = &common.delivery;
        DeliveryPolicy {
            timeout: o.timeout.unwrap_or(d.timeout).0,
            max_attempts: o.max_attempts.unwrap_or(d.max_attempts),
            initial_backoff: o.initial_backoff.unwrap_or(d.initial_backoff).0,
            max_backoff: o.max_backoff.unwrap_or(d.max_backoff).0,
            max_age: o.max_age.unwrap_or(d.max_age).0,
            concurrency: o.concurrency.unwrap_or(d.concurrency),
            // The sink's own setting wins; otherwise both the service's limit
            // and the `[delivery]` default apply, so the stricter one holds.
            rate_limit: o
                .rate_limit
                .or(match (self.kind().default_rate_limit(), d.rate_limit) {
                    (Some(k), Some(g)) => Some(k.min(g)),
                    (k, g) => k.or(g),
                }),
            proxy: self
                .transport()
                .and_then(|t| t.proxy.clone())
                .or_else(|| d.proxy.clone()),
            ca_file: o.ca_file.clone().or_else(|| d.ca_file.clone()),
            circuit: o.circuit.unwrap_or(d.circuit),
            deactivate_after: common.deactivate_after,
        }
    }
}

/// A refused key of one `[[sinks]]` entry, named relative to the entry
/// (`token`); [`KeyError::under`] puts the entry in front (`sinks[2].token`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct KeyError {
    /// The key within the entry.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl KeyError {
    pub(super) fn new(key: impl Into<String>, message: impl Into<String>) -> KeyError {
        KeyError {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The error as a config error on `<entry>.<key>`.
    pub fn under(self, entry: &str) -> ConfigError {
        ConfigError::Invalid {
            key: format!("{entry}.{}", self.key),
            message: self.message,
        }
    }
}
