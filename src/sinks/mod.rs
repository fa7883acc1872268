//! Outbound destinations. One file per kind; each does two things: render
//! a delivery into a request for its service, and classify the service's
//! answer into a [`Verdict`]. Sending, timeouts, proxies and recording the
//! answer are shared here, so a new HTTP kind is a render and a classify.

pub mod answer;
pub mod changes;
pub mod changes_view;
pub mod client;
pub mod email;
mod error;
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

use crate::config::{
    ConfigError, DeliveryConfig, DeliveryPolicy, HttpTransport, SinkCommon, SinkSpec,
};
use crate::domain::delivery::Verdict;
use crate::store::Claimed;
use answer::{classify_status, parse_retry_after};
pub use error::RenderError;

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
    fn render(&self, d: &Claimed) -> Result<Outbound, RenderError>;

    /// Reads the service's answer. The default is the generic HTTP rule.
    fn classify(&self, a: &Answer) -> Verdict {
        classify_status(a.status, a.retry_after())
    }

    /// Rows one request may carry (see [`Sink::max_batch_rows`]).
    fn max_batch_rows(&self) -> usize {
        1
    }

    /// Builds one request for several deliveries (batching kinds only).
    fn render_batch(&self, ds: &[Claimed]) -> Result<Outbound, RenderError> {
        match ds {
            [one] => self.render(one),
            _ => Err(RenderError::Refused(
                "this sink kind sends one delivery per request".into(),
            )),
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
    // The sink's `headers`, sent after the kind's own on every request.
    headers: Vec<(::http::HeaderName, ::http::HeaderValue)>,
}

impl<K: HttpKind> HttpSink<K> {
    /// Wraps a kind with its client.
    pub fn new(client: reqwest::Client, url: reqwest::Url, timeout: Duration, kind: K) -> Self {
        HttpSink {
            client,
            url,
            timeout,
            kind,
            headers: Vec::new(),
        }
    }

    /// Adds the sink's own `headers` to every request.
    pub fn with_headers(mut self, headers: Vec<(::http::HeaderName, ::http::HeaderValue)>) -> Self {
        self.headers = headers;
        self
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
            .header("x-hookrelay-delivery", d.id.as_str())
            .header("x-hookrelay-message", d.message_id.as_str())
            .header("x-hookrelay-attempt", (d.attempts + 1).to_string())
            .header("x-hookrelay-batch", ds.len().to_string())
            .body(out.body);
        for (k, v) in out.headers {
            req = req.header(k, v);
        }
        for (k, v) in &self.headers {
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

/// Builds the runtime sink a spec describes — its HTTP client (proxy, CA,
/// client certificate), templates and keys — checking on the way what
/// only the kind knows. The one constructor of sinks, called (through
/// `dispatch::SinkSet::build`) only by `app::compile`; `key` names the
/// entry in every error (`sinks[2]`, so `sinks[2].template`).
pub fn build(
    key: &str,
    spec: &SinkSpec,
    defaults: &DeliveryConfig,
) -> Result<Arc<dyn Sink>, ConfigError> {
    #[cfg(test)]
    testing::BUILDS.with(|n| n.set(n.get() + 1));
    let policy = spec.policy(defaults);
    let common = spec.common();
    Ok(match spec {
        // SMTP: no HTTP client, URL or proxy.
        SinkSpec::Email(s) => Arc::new(email::Email::new(key, s, &policy)?),
        SinkSpec::Http(s) => http_sink(key, common, &s.transport, &policy, || {
            http::Http::new(key, s)
        })?,
        SinkSpec::PowerAutomate(s) => http_sink(key, common, &s.transport, &policy, || {
            power_automate::PowerAutomate::new(key, s)
        })?,
        SinkSpec::Slack(s) => http_sink(key, common, &s.transport, &policy, || {
            slack::Slack::new(key, s)
        })?,
        SinkSpec::Teams(s) => http_sink(key, common, &s.transport, &policy, || {
            teams::Teams::new(key, s)
        })?,
        SinkSpec::Powerbi(s) => http_sink(key, common, &s.transport, &policy, || {
            powerbi::PowerBi::new(key, s)
        })?,
        SinkSpec::Notebook(s) => http_sink(key, common, &s.transport, &policy, || {
            notebook::Notebook::new(key, s)
        })?,
    })
}

/// What every HTTP kind shares: an http(s) URL, valid headers, the client.
/// The kind is built after the URL is checked, so a wrong URL is reported
/// first, as it always was.
fn http_sink<K: HttpKind>(
    key: &str,
    common: &SinkCommon,
    transport: &HttpTransport,
    policy: &DeliveryPolicy,
    kind: impl FnOnce() -> Result<K, ConfigError>,
) -> Result<Arc<dyn Sink>, ConfigError> {
    let bad = |k: &str, m: String| ConfigError::Invalid {
        key: format!("{key}.{k}"),
        message: m,
    };
    let url = reqwest::Url::parse(&common.url).map_err(|_| bad("url", "not a valid URL".into()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("url", "must be an http:// or https:// URL".into()));
    }
    let mut headers = Vec::with_capacity(transport.headers.len());
    for (name, value) in &transport.headers {
        let name = ::http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad("headers", format!("{name:?} is not a valid header name")))?;
        let mut value = ::http::HeaderValue::from_str(value.expose()).map_err(|_| {
            bad(
                "headers",
                format!("the value of {name:?} is not a valid header value"),
            )
        })?;
        // Header values are secrets (`authorization`): keep them out of
        // any debug output of the request.
        value.set_sensitive(true);
        headers.push((name, value));
    }
    let kind = kind()?;
    let client = client::build(key, transport.client_cert.as_ref(), policy)?;
    Ok(Arc::new(
        HttpSink::new(client, url, policy.timeout, kind).with_headers(headers),
    ))
}

/// Helpers for the crate's tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::cell::Cell;

    thread_local! {
        /// Sinks built on this thread, so a test can see that compiling a
        /// configuration builds each sink once (compiling runs on the
        /// caller's thread).
        pub(super) static BUILDS: Cell<usize> = const { Cell::new(0) };
    }

    /// How many sinks [`super::build`] has built on this thread.
    pub(crate) fn builds() -> usize {
        BUILDS.with(Cell::get)
    }

    /// The spec of one `[[sinks]]` table given as TOML.
    pub(crate) fn spec(text: &str) -> crate::config::SinkSpec {
        let raw: crate::config::RawSink = toml::from_str(text).unwrap();
        crate::config::SinkSpec::try_from(raw).unwrap()
    }
}
