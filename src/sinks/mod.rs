//! Outbound destinations. One file per kind; each does two things: render
//! a delivery into a request for its service, and classify the service's
//! answer into a [`Verdict`]. Sending, timeouts, proxies and recording the
//! answer are shared here, so a new HTTP kind is a render and a classify.

pub mod answer;
pub mod client;
pub mod email;
pub mod facts;
pub mod http;
pub mod notebook;
pub mod power_automate;
pub mod powerbi;
pub mod sample;
pub mod sign;
pub mod slack;
pub mod teams;
pub mod template;

use std::sync::Arc;
use std::time::Duration;

use ::http::{HeaderMap, Method};
use async_trait::async_trait;
use bytes::Bytes;

use crate::config::{ConfigError, DeliveryConfig, SinkConfig, SinkKind};
use crate::domain::delivery::Verdict;
use crate::store::Claimed;
use answer::{classify_status, parse_retry_after};

/// The first this-many bytes of an answer are kept with the attempt.
pub const RESPONSE_KEEP: usize = 1024;
/// Answers are read up to this size (so the connection can be reused), the rest dropped.
const RESPONSE_READ: usize = 64 * 1024;

/// The result of one attempt, before the retry policy decides what next.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    /// Delivered, retry or permanent.
    pub verdict: Verdict,
    /// Status code, when an answer came.
    pub status: Option<i32>,
    /// What went wrong (no secrets: URLs are never included).
    pub error: Option<String>,
    /// The answer's first kilobyte.
    pub response: Option<String>,
}

/// The prefix of an attempt error that says the request could not be built.
pub const RENDER_FAILED: &str = "render_failed: ";

impl AttemptOutcome {
    /// The delivery cannot be rendered into a request: permanent, since the
    /// same delivery renders the same way next time.
    pub fn render_failed(why: impl std::fmt::Display) -> AttemptOutcome {
        AttemptOutcome {
            verdict: Verdict::Permanent,
            status: None,
            error: Some(format!("{RENDER_FAILED}{why}")),
            response: None,
        }
    }

    /// Whether this outcome is a failure to render (nothing was sent), so
    /// a batch that failed so can be retried one delivery at a time.
    pub fn is_render_failure(&self) -> bool {
        self.error
            .as_deref()
            .is_some_and(|e| e.starts_with(RENDER_FAILED))
    }
}

/// A destination a delivery can be sent to.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Makes one attempt.
    async fn deliver(&self, d: &Claimed) -> AttemptOutcome;

    /// How many rows (matched events) one request may carry; more than 1
    /// makes the dispatcher hand [`Sink::deliver_batch`] several deliveries.
    fn max_batch_rows(&self) -> usize {
        1
    }

    /// Makes one attempt carrying several deliveries; its outcome is every
    /// one's. Only called when [`Sink::max_batch_rows`] is above 1.
    async fn deliver_batch(&self, ds: &[Claimed]) -> AttemptOutcome {
        match ds.first() {
            Some(d) => self.deliver(d).await,
            None => AttemptOutcome {
                verdict: Verdict::Permanent,
                status: None,
                error: Some("empty batch".into()),
                response: None,
            },
        }
    }
}

/// A rendered HTTP request.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// Method.
    pub method: Method,
    /// Headers besides the relay's own.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// An HTTP answer as the classifier sees it.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Up to 64 KiB of the body.
    pub body: Bytes,
}

impl Answer {
    /// The body as text (lossy), for classifiers that look for words.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A `Retry-After` header, parsed.
    pub fn retry_after(&self) -> Option<Duration> {
        let v = self
            .headers
            .get(::http::header::RETRY_AFTER)?
            .to_str()
            .ok()?;
        parse_retry_after(v, std::time::SystemTime::now())
    }
}

/// The render and classify halves of an HTTP-based sink kind.
pub trait HttpKind: Send + Sync + 'static {
    /// Builds the request for a delivery, or says why it cannot be built.
    fn render(&self, d: &Claimed) -> Result<Outbound, String>;

    /// Reads the service's answer. The default is the generic HTTP rule.
    fn classify(&self, a: &Answer) -> Verdict {
        classify_status(a.status, a.retry_after())
    }

    /// Rows one request may carry (see [`Sink::max_batch_rows`]).
    fn max_batch_rows(&self) -> usize {
        1
    }

    /// Builds one request for several deliveries (batching kinds only).
    fn render_batch(&self, ds: &[Claimed]) -> Result<Outbound, String> {
        match ds {
            [one] => self.render(one),
            _ => Err("this sink kind sends one delivery per request".into()),
        }
    }

    /// The service's own word for a failed answer (Slack's
    /// `channel_not_found`), recorded after the status in the attempt's
    /// error. None keeps the error to `HTTP <status>`.
    fn describe(&self, _a: &Answer) -> Option<String> {
        None
    }
}

/// An HTTP sink: a kind plus the client and URL it sends with.
pub struct HttpSink<K> {
    client: reqwest::Client,
    url: reqwest::Url,
    timeout: Duration,
    kind: K,
}

impl<K: HttpKind> HttpSink<K> {
    /// Wraps a kind with its client.
    pub fn new(client: reqwest::Client, url: reqwest::Url, timeout: Duration, kind: K) -> Self {
        HttpSink {
            client,
            url,
            timeout,
            kind,
        }
    }
}

#[async_trait]
impl<K: HttpKind> Sink for HttpSink<K> {
    async fn deliver(&self, d: &Claimed) -> AttemptOutcome {
        self.deliver_batch(std::slice::from_ref(d)).await
    }

    fn max_batch_rows(&self) -> usize {
        self.kind.max_batch_rows()
    }

    async fn deliver_batch(&self, ds: &[Claimed]) -> AttemptOutcome {
        let Some(d) = ds.first() else {
            return AttemptOutcome {
                verdict: Verdict::Permanent,
                status: None,
                error: Some("empty batch".into()),
                response: None,
            };
        };
        let out = match self.kind.render_batch(ds) {
            Ok(o) => o,
            Err(e) => return AttemptOutcome::render_failed(e),
        };
        let mut req = self
            .client
            .request(out.method, self.url.clone())
            .header("x-hookrelay-delivery", &d.id)
            .header("x-hookrelay-message", &d.message_id)
            .header("x-hookrelay-attempt", (d.attempts + 1).to_string())
            .header("x-hookrelay-batch", ds.len().to_string())
            .body(out.body);
        for (k, v) in out.headers {
            req = req.header(k, v);
        }
        match send(req).await {
            Ok(answer) => {
                let verdict = self.kind.classify(&answer);
                let error = match verdict {
                    Verdict::Delivered => None,
                    _ => Some(match self.kind.describe(&answer) {
                        Some(word) => format!("HTTP {}: {word}", answer.status),
                        None => format!("HTTP {}", answer.status),
                    }),
                };
                AttemptOutcome {
                    verdict,
                    status: Some(answer.status as i32),
                    error,
                    response: Some(keep(&answer.body)),
                }
            }
            Err(e) => AttemptOutcome {
                verdict: Verdict::Retry { after: None },
                status: None,
                error: Some(describe_error(&e, self.timeout)),
                response: None,
            },
        }
    }
}

async fn send(req: reqwest::RequestBuilder) -> Result<Answer, reqwest::Error> {
    let mut resp = req.send().await?;
    let status = resp.status().as_u16();
    let headers = std::mem::take(resp.headers_mut());
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = RESPONSE_READ.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= RESPONSE_READ {
            break;
        }
    }
    Ok(Answer {
        status,
        headers,
        body: Bytes::from(body),
    })
}

/// The first line of an answer's body, trimmed and at most 200
/// characters: the error word services like Slack answer with.
pub fn answer_word(a: &Answer) -> Option<String> {
    let text = a.text();
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(facts::clip(line, 200))
}

/// The first kilobyte of an answer, as text, cut on a character boundary.
pub fn keep(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(RESPONSE_KEEP)]);
    text.into_owned()
}

/// A transport error as a short sentence, never with the URL (which may
/// carry a key) in it.
pub fn describe_error(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("timed out after {}", humantime::format_duration(timeout));
    }
    let kind = if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "reading the answer failed"
    } else if e.is_redirect() {
        "redirect refused"
    } else {
        "request failed"
    };
    // The innermost causes say what happened (refused, reset, TLS...).
    let mut causes = Vec::new();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        causes.push(s.to_string());
        src = s.source();
    }
    let detail = redact_urls_in(&causes.last().cloned().unwrap_or_default());
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

/// Hides any URL inside an error text (a proxy or redirect target may carry
/// credentials) and keeps the rest, which says what went wrong: "invalid
/// peer certificate: UnknownIssuer", "Connection refused".
fn redact_urls_in(text: &str) -> String {
    text.split(' ')
        .map(|w| {
            if w.contains("://") {
                crate::config::redact_url(w.trim_matches(|c: char| "()[]<>,;'\"".contains(c)))
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Builds the runtime sink for a configured one.
pub fn build(config: &SinkConfig, defaults: &DeliveryConfig) -> Result<Arc<dyn Sink>, ConfigError> {
    let policy = config.policy(defaults);
    let key = format!("sinks.{}", config.name);
    if config.kind == SinkKind::Email {
        // SMTP: no HTTP client, URL or proxy.
        return Ok(Arc::new(email::Email::new(&key, config, &policy)?));
    }
    let client = client::build_for(config, &policy)?;
    let url = reqwest::Url::parse(&config.url).map_err(|_| ConfigError::Invalid {
        key: format!("sinks.{}.url", config.name),
        message: "not a valid URL".into(),
    })?;
    let t = policy.timeout;
    Ok(match config.kind {
        SinkKind::Http => Arc::new(HttpSink::new(client, url, t, http::Http::new(config)?)),
        SinkKind::Slack => Arc::new(HttpSink::new(
            client,
            url,
            t,
            slack::Slack::new(&key, config)?,
        )),
        SinkKind::Teams => Arc::new(HttpSink::new(
            client,
            url,
            t,
            teams::Teams::new(&key, config)?,
        )),
        SinkKind::Powerbi => Arc::new(HttpSink::new(client, url, t, powerbi::PowerBi::new(config))),
        SinkKind::PowerAutomate => Arc::new(HttpSink::new(
            client,
            url,
            t,
            power_automate::PowerAutomate::new(config)?,
        )),
        SinkKind::Notebook => Arc::new(HttpSink::new(
            client,
            url,
            t,
            notebook::Notebook::new(&key, config)?,
        )),
        SinkKind::Email => Arc::new(email::Email::new(&key, config, &policy)?),
    })
}

/// Which kinds each kind-specific key applies to; any other kind refuses
/// it, so a key that would be silently ignored is a config error.
fn check_applicable(key: &str, sink: &SinkConfig) -> Result<(), ConfigError> {
    use SinkKind::*;
    const HTTP_ALL: &[SinkKind] = &[Http, Slack, Teams, Powerbi, PowerAutomate, Notebook];
    let checks: [(&str, bool, &[SinkKind]); 17] = [
        ("method", sink.method.is_some(), &[Http, PowerAutomate]),
        ("format", sink.format.is_some(), &[Http, PowerAutomate]),
        ("sign", sink.sign.is_some(), &[Http, PowerAutomate]),
        (
            "secret",
            sink.secret.is_some(),
            &[Http, PowerAutomate, Notebook],
        ),
        ("headers", !sink.headers.is_empty(), HTTP_ALL),
        ("proxy", sink.proxy.is_some(), HTTP_ALL),
        ("template", sink.template.is_some(), &[Slack, Teams, Email]),
        ("html_template", sink.html_template.is_some(), &[Email]),
        ("subject", sink.subject.is_some(), &[Email]),
        ("token", sink.token.is_some(), &[Powerbi]),
        (
            "signature_header",
            sink.signature_header.is_some(),
            &[Notebook],
        ),
        (
            "signature_prefix",
            sink.signature_prefix.is_some(),
            &[Notebook],
        ),
        ("tls", sink.tls.is_some(), &[Email]),
        ("username", sink.username.is_some(), &[Email]),
        ("password", sink.password.is_some(), &[Email]),
        ("from", sink.from.is_some(), &[Email]),
        ("to", !sink.to.is_empty(), &[Email]),
    ];
    for (field, set, kinds) in checks {
        if set && !kinds.contains(&sink.kind) {
            let names: Vec<&str> = kinds.iter().map(SinkKind::as_str).collect();
            return Err(ConfigError::Invalid {
                key: format!("{key}.{field}"),
                message: format!(
                    "{field} does not apply to kind {:?} (only to {})",
                    sink.kind.as_str(),
                    names.join(", ")
                ),
            });
        }
    }
    Ok(())
}

/// Kind-specific checks, called from [`crate::config::Config::validate`].
pub fn validate_sink(key: &str, sink: &SinkConfig) -> Result<(), ConfigError> {
    let bad = |k: &str, m: String| ConfigError::Invalid {
        key: format!("{key}.{k}"),
        message: m,
    };
    check_applicable(key, sink)?;
    if sink.kind == SinkKind::Email {
        return email::check(key, sink);
    }
    let url = reqwest::Url::parse(&sink.url).map_err(|_| bad("url", "not a valid URL".into()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("url", "must be an http:// or https:// URL".into()));
    }
    if let Some(m) = &sink.method {
        if !matches!(m.to_ascii_uppercase().as_str(), "POST" | "PUT" | "PATCH") {
            return Err(bad("method", format!("{m:?} is not POST, PUT or PATCH")));
        }
    }
    for (name, value) in &sink.headers {
        ::http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad("headers", format!("{name:?} is not a valid header name")))?;
        ::http::HeaderValue::from_str(value.expose()).map_err(|_| {
            bad(
                "headers",
                format!("the value of {name:?} is not a valid header value"),
            )
        })?;
    }
    match (sink.sign, &sink.secret) {
        (Some(_), None) => return Err(bad("secret", "sign needs a secret".into())),
        (Some(scheme), Some(secret)) => {
            sign::signing_key(scheme, secret).map_err(|m| bad("secret", m))?;
        }
        _ => {}
    }
    match sink.kind {
        SinkKind::Slack => slack::Slack::new(key, sink).map(drop),
        SinkKind::Teams => teams::Teams::new(key, sink).map(drop),
        SinkKind::Notebook => {
            let h = sink.signature_header.as_deref().unwrap_or(notebook::DEFAULT_HEADER);
            ::http::HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| bad("signature_header", format!("{h:?} is not a valid header name")))?;
            notebook::Notebook::new(key, sink).map(drop)
        }
        SinkKind::Powerbi if sink.token.is_none() && !url.query_pairs().any(|(k, _)| k == "key") => Err(bad(
            "url",
            "a Power BI push URL carries key=...; for the REST API (/v1.0/myorg/datasets/...) set token".into(),
        )),
        SinkKind::PowerAutomate => power_automate::PowerAutomate::new(sink).map(drop),
        _ => Ok(()),
    }
}
