//! Ingress: `POST /hooks/<source>` — limit the body, verify the signature or
//! secret on the raw bytes, parse and normalise, dedupe, route, and commit
//! the message with all its deliveries before answering 200.
//!
//! Every refusal is an [`IngressError`], mapped to a status and a JSON body
//! in one place (`error.rs`); the handler logs and counts it, then answers.

mod error;
pub mod limits;
pub mod signature;

pub use crate::arcgis::payload;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::json;

use crate::config::{Config, SigEncoding, SourceConfig, SourceKind};
use crate::dispatch::SinkSet;
use crate::metrics::{IngressOutcome, Metrics};
use crate::routing::RouteTable;
use crate::store::batch::Batcher;
use crate::store::{
    now_ms, DeliveryId, IngestOutcome, MessageId, NewDelivery, NewMessage, SourceName,
};
pub use error::IngressError;
use payload::{BodyFormat, BodySecret};

/// What the ingress handlers share.
pub struct IngressState {
    /// The configuration (sources, limits).
    pub config: Arc<Config>,
    /// Compiled routing rules.
    pub routes: RouteTable,
    /// Sinks, to wake their loops after a commit.
    pub sinks: Arc<SinkSet>,
    /// The group-commit queue in front of the store.
    pub commits: Batcher<NewMessage, IngestOutcome>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Work slots (`max_concurrency`): taken once a body has arrived.
    pub work: Arc<tokio::sync::Semaphore>,
    /// Requests in progress per client address.
    pub clients: Arc<limits::ClientSlots>,
    /// The fetch stage, woken when a message needs its changes fetched.
    pub fetches: Option<Arc<crate::dispatch::FetchStage>>,
}

impl IngressState {
    /// The state for `config`'s limits.
    pub fn new(
        config: Arc<Config>,
        routes: RouteTable,
        sinks: Arc<SinkSet>,
        commits: Batcher<NewMessage, IngestOutcome>,
        metrics: Arc<Metrics>,
    ) -> IngressState {
        IngressState {
            work: Arc::new(tokio::sync::Semaphore::new(config.server.max_concurrency)),
            clients: Arc::new(limits::ClientSlots::default()),
            config,
            routes,
            sinks,
            commits,
            metrics,
            fetches: None,
        }
    }
}

/// The ingress routes. Nothing of the admin API lives here.
pub fn router(state: Arc<IngressState>) -> Router {
    Router::new()
        .route(
            "/hooks/{source}",
            get(get_hook)
                .post(post_hook)
                .fallback(|| async { IngressError::MethodNotAllowed.into_response() }),
        )
        .fallback(|| async { IngressError::NotFound.into_response() })
        .layer(axum::middleware::from_fn(limit_header_bytes))
        .with_state(state)
}

/// Most bytes of header names and values one ingress request may carry.
/// ArcGIS sends well under 2 KB; hyper's own limit (`max_buf_size`) is
/// fuzzy, letting a head of about twice that through when it arrives in
/// few reads, so the bound that callers can rely on is enforced here.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Answers 431 to a request whose headers add up to more than
/// [`MAX_HEADER_BYTES`], before any handler reads them.
async fn limit_header_bytes(req: Request<Body>, next: axum::middleware::Next) -> Response {
    let size: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if size > MAX_HEADER_BYTES {
        return IngressError::HeadersTooLarge(MAX_HEADER_BYTES).into_response();
    }
    next.run(req).await
}

#[derive(Deserialize)]
struct CrcQuery {
    crc_token: Option<String>,
}

/// `GET /hooks/<source>`: ArcGIS checks the URL when a webhook is created;
/// with `?crc_token=` it is ArcGIS Online's challenge.
async fn get_hook(
    State(st): State<Arc<IngressState>>,
    Path(name): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<CrcQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(src) = st.config.source(&name) else {
        st.metrics.ingress("unknown", IngressOutcome::NotFound);
        return IngressError::UnknownSource.into_response();
    };
    let ip = client_ip(peer, &headers, &st.config.server.trusted_proxies);
    if !ip_allowed(src, ip) {
        st.metrics.ingress(&src.name, IngressOutcome::Forbidden);
        tracing::warn!(source = %src.name, client = %ip, "GET refused: address not allowed");
        return IngressError::IpNotAllowed.into_response();
    }
    match query.ok().and_then(|q| q.0.crc_token) {
        Some(token) if is_crc_token(&token) => {
            let key = &src.secret.0[0];
            Json(json!({"response_token": signature::crc_response(key, &token)})).into_response()
        }
        Some(_) => IngressError::Invalid(
            "crc_token must be 1 to 1024 characters of A-Z, a-z, 0-9, space and -._~+/=".into(),
        )
        .into_response(),
        None => Json(json!({"status": "ok", "source": src.name})).into_response(),
    }
}

/// Whether `token` may be answered with HMAC(key, token).
///
/// The answer is exactly the `x-esriHook-Signature` of a body equal to the
/// token, so an unrestricted token makes `GET` a signing oracle: anyone
/// could have the relay sign a forged webhook and then post it. Every
/// payload ingress accepts is a JSON object or array, so it contains `{` or
/// `[` (or, form-encoded, `%7B`/`%5B`); a token of letters, digits and the
/// base64/URL-safe punctuation can never be one.
fn is_crc_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 1024
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b" -._~+/=".contains(&b))
}

/// `POST /hooks/<source>`.
async fn post_hook(
    State(st): State<Arc<IngressState>>,
    Path(name): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let t0 = Instant::now();
    let result = accept(&st, &name, peer, req).await;
    let label = st
        .config
        .source(&name)
        .map(|s| s.name.as_str())
        .unwrap_or("unknown");
    match result {
        Ok((status, body)) => {
            st.metrics.ingress(label, status);
            // Debug, not info: at thousands a second an info line per
            // accepted webhook would be most of the log; the counters say it.
            tracing::debug!(source = %label, request_id = %request_id, outcome = ?status,
                elapsed_ms = t0.elapsed().as_millis() as u64, "webhook accepted");
            Json(body).into_response()
        }
        Err(e) => {
            st.metrics.ingress(label, e.outcome());
            if e.is_server_side() {
                tracing::error!(source = %label, request_id = %request_id, error = %e, "webhook not stored");
            } else {
                tracing::warn!(source = %label, request_id = %request_id, client = %peer.ip(), error = %e, "webhook refused");
            }
            e.into_response()
        }
    }
}

async fn accept(
    st: &IngressState,
    name: &str,
    peer: SocketAddr,
    req: Request<Body>,
) -> Result<(IngressOutcome, serde_json::Value), IngressError> {
    let src = st.config.source(name).ok_or(IngressError::UnknownSource)?;
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let ip = client_ip(peer, &headers, &st.config.server.trusted_proxies);
    if !ip_allowed(src, ip) {
        return Err(IngressError::IpNotAllowed);
    }
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| {
            v.to_str()
                .map_err(|_| IngressError::Invalid("Content-Type is not ASCII".into()))
        })
        .transpose()?;
    let format = payload::body_format(content_type)?;
    refuse_content_encoding(&headers)?;
    // Held until the answer: a client's requests in progress are bounded
    // however slowly their bodies come.
    let _client = st
        .clients
        .take(ip, st.config.server.max_requests_per_client)?;
    // A wrong secret header is refused before the body is read.
    let portal_header = match src.kind {
        SourceKind::ArcgisPortal => portal_header(src, &headers)?,
        _ => PortalHeader::Absent,
    };
    let raw = read_body(&st.config, &headers, body).await?;
    // The work slot is taken only now: bodies still arriving hold none.
    let _work = st
        .work
        .clone()
        .try_acquire_owned()
        .map_err(|_| IngressError::Overloaded)?;

    let verified = match src.kind {
        SourceKind::ArcgisService => verify_service(src, &headers, format, &raw)?,
        SourceKind::Hmac => verify_hmac_source(src, &headers, format, &raw)?,
        SourceKind::ArcgisPortal => verify_portal(src, portal_header, format, &raw)?,
    };
    let server = &st.config.server;
    let limits = payload::Limits::for_body(raw.len(), server.max_events, server.max_expansion);
    let events = payload::normalise_within(&verified.doc, src.kind == SourceKind::Hmac, limits)?;
    let encoded_events = crate::domain::event::encode_events(&events);
    payload::check_encoded(&encoded_events, limits)?;

    let dedupe_key = payload::dedupe_key(&events, &raw);
    let routed = st.routes.route(&src.name, &events);
    let received_at = now_ms();
    let kept = json!({
        "user-agent": headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()),
        "client-ip": ip.to_string(),
    });
    let window = src.dedupe_window.unwrap_or(st.config.server.dedupe_window);
    let msg = NewMessage {
        id: MessageId::generate(),
        source: SourceName::from(src.name.as_str()),
        received_at,
        content_type: content_type.unwrap_or("application/json").to_string(),
        headers: kept.to_string(),
        body: verified.forward_body,
        events: encoded_events,
        dedupe_key,
        dedupe_window_ms: window.as_millis_i64(),
        deliveries: routed
            .iter()
            .map(|r| NewDelivery {
                id: DeliveryId::generate(),
                sink: r.sink.clone(),
                events: serde_json::to_string(&r.events).unwrap_or_else(|_| "[]".into()),
                parked: r.waits_for_changes,
            })
            .collect(),
        fetch: routed.iter().any(|r| r.waits_for_changes),
    };
    let t0 = Instant::now();
    let outcome = st
        .commits
        .submit(msg)
        .await
        .map_err(IngressError::Unavailable)?;
    st.metrics.commit_seconds(t0.elapsed().as_secs_f64());
    Ok(match outcome {
        IngestOutcome::Accepted {
            message_id,
            deliveries,
        } => {
            for r in &routed {
                if let Some(s) = st.sinks.get(&r.sink) {
                    s.wake();
                }
            }
            if routed.iter().any(|r| r.waits_for_changes) {
                if let Some(f) = &st.fetches {
                    f.wake();
                }
            }
            (
                IngressOutcome::Accepted,
                json!({"status": "accepted", "message_id": message_id, "deliveries": deliveries}),
            )
        }
        IngestOutcome::Duplicate { message_id } => (
            IngressOutcome::Duplicate,
            json!({"status": "accepted", "message_id": message_id, "duplicate": true, "deliveries": 0}),
        ),
    })
}

/// Refuses a compressed body (415). The signature covers the bytes as sent
/// and sinks get them byte for byte, so decompressing is not an option, and
/// parsing them as JSON would accept a body labelled gzip that a sink then
/// misreads. ArcGIS never compresses webhook bodies.
fn refuse_content_encoding(headers: &HeaderMap) -> Result<(), IngressError> {
    for v in headers.get_all(http::header::CONTENT_ENCODING) {
        let identity = v.to_str().is_ok_and(|v| {
            v.split(',')
                .map(str::trim)
                .all(|c| c.is_empty() || c.eq_ignore_ascii_case("identity"))
        });
        if !identity {
            return Err(IngressError::Unsupported(
                "Content-Encoding is not supported; send the body uncompressed".into(),
            ));
        }
    }
    Ok(())
}

/// Reads the body within the size limit and the body timeouts; a declared
/// length over the limit is refused before anything is read.
async fn read_body(
    config: &Config,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<u8>, IngressError> {
    let limit = config.server.max_body_bytes;
    if let Some(len) = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(IngressError::TooLarge(limit));
        }
    }
    limits::read_body(
        body,
        limits::BodyLimits {
            max_bytes: limit,
            total: config.server.body_read_timeout.0,
            start: config.server.body_start_timeout.0,
            min_rate: config.server.min_body_rate,
        },
    )
    .await
}

/// A verified request: the parsed document and the bytes sinks will get.
struct Verified {
    doc: serde_json::Value,
    forward_body: Vec<u8>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, IngressError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| IngressError::BadSignature(format!("{name} header is not ASCII"))),
    }
}

fn verify_service(
    src: &SourceConfig,
    headers: &HeaderMap,
    format: BodyFormat,
    raw: &[u8],
) -> Result<Verified, IngressError> {
    let (signed, json_bytes, form_sig) = match format {
        BodyFormat::Json => (raw.to_vec(), raw.to_vec(), None),
        BodyFormat::Form => {
            let f = payload::extract_form(raw)?;
            (f.signed, f.json, f.signature)
        }
    };
    let presented = match header(headers, "x-esrihook-signature")? {
        Some(h) => h.to_string(),
        None => form_sig.ok_or_else(|| {
            IngressError::MissingSignature("no x-esriHook-Signature header or form field".into())
        })?,
    };
    let digest = signature::decode_esri_signature(&presented).ok_or_else(|| {
        IngressError::BadSignature(
            "x-esriHook-Signature is not a base64 or hex SHA-256 digest".into(),
        )
    })?;
    if !signature::verify_hmac(&src.secret.0, &signed, &digest) {
        return Err(IngressError::BadSignature(
            "signature does not match".into(),
        ));
    }
    Ok(Verified {
        doc: payload::parse_json(&json_bytes)?,
        forward_body: raw.to_vec(),
    })
}

fn verify_hmac_source(
    src: &SourceConfig,
    headers: &HeaderMap,
    _format: BodyFormat,
    raw: &[u8],
) -> Result<Verified, IngressError> {
    let name = src
        .header
        .as_deref()
        .unwrap_or("x-hub-signature-256")
        .to_ascii_lowercase();
    let prefix = src.prefix.as_deref().unwrap_or("sha256=");
    let encoding = src.encoding.unwrap_or(SigEncoding::Hex);
    let presented = header(headers, &name)?
        .ok_or_else(|| IngressError::MissingSignature(format!("no {name} header")))?;
    let digest = signature::decode_configured(presented, prefix, encoding).ok_or_else(|| {
        IngressError::BadSignature(format!(
            "{name} is not {prefix}<{encoding:?} SHA-256 digest>"
        ))
    })?;
    if !signature::verify_hmac(&src.secret.0, raw, &digest) {
        return Err(IngressError::BadSignature(
            "signature does not match".into(),
        ));
    }
    Ok(Verified {
        doc: payload::parse_json(raw)?,
        forward_body: raw.to_vec(),
    })
}

/// What a Portal request's `secret` header said.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PortalHeader {
    /// No header: the secret must be in the body.
    Absent,
    /// A header matching a configured secret.
    Matches,
}

/// Checks a Portal `secret` header before the body is read: a header that
/// matches no configured secret is refused at once (401).
fn portal_header(src: &SourceConfig, headers: &HeaderMap) -> Result<PortalHeader, IngressError> {
    match headers.get("secret") {
        None => Ok(PortalHeader::Absent),
        Some(s) if signature::secret_matches(&src.secret.0, s.as_bytes()) => {
            Ok(PortalHeader::Matches)
        }
        Some(_) => Err(IngressError::BadSecret),
    }
}

fn verify_portal(
    src: &SourceConfig,
    header: PortalHeader,
    format: BodyFormat,
    raw: &[u8],
) -> Result<Verified, IngressError> {
    let header_ok = header == PortalHeader::Matches;
    let json_bytes = match format {
        BodyFormat::Json => raw.to_vec(),
        BodyFormat::Form => match payload::extract_form(raw) {
            Ok(f) => f.json,
            Err(e) if header_ok => return Err(e.into()),
            Err(_) => return Err(IngressError::MissingSecret),
        },
    };
    // Without the header the credential is inside the body: find it with
    // a scan that builds nothing, and parse only a body that carries it.
    // Unauthenticated callers learn nothing about the body's validity.
    if !header_ok {
        match payload::probe_body_secret(&json_bytes) {
            BodySecret::Present(s) if signature::secret_matches(&src.secret.0, s.as_bytes()) => {}
            BodySecret::Absent => return Err(IngressError::MissingSecret),
            _ => return Err(IngressError::BadSecret),
        }
    }
    let mut doc = match payload::parse_json(&json_bytes) {
        Ok(d) => d,
        Err(e) if header_ok => return Err(e.into()),
        Err(_) => return Err(IngressError::BadSecret),
    };
    let body_secret = payload::take_body_secret(&mut doc);
    let body_ok = matches!(&body_secret, BodySecret::Present(s) if signature::secret_matches(&src.secret.0, s.as_bytes()));
    if !(header_ok || body_ok) {
        return Err(unauthenticated(body_secret != BodySecret::Absent));
    }
    let forward_body = if body_secret == BodySecret::Absent {
        raw.to_vec()
    } else {
        // The secret came inside the body: forward the document without it.
        let json = serde_json::to_vec(&doc).map_err(|e| IngressError::Invalid(e.to_string()))?;
        match format {
            BodyFormat::Json => json,
            BodyFormat::Form => form_urlencoded::Serializer::new(String::new())
                .append_pair("payload", &String::from_utf8_lossy(&json))
                .finish()
                .into_bytes(),
        }
    };
    Ok(Verified { doc, forward_body })
}

fn unauthenticated(presented: bool) -> IngressError {
    if presented {
        IngressError::BadSecret
    } else {
        IngressError::MissingSecret
    }
}

/// The client's address: the peer, or — when the peer is a trusted proxy —
/// the right-most address in `X-Forwarded-For` that is not a trusted proxy.
///
/// Every `X-Forwarded-For` line counts, in order: a proxy that appends its
/// own line (HAProxy's `option forwardfor`) leaves the client's forged one
/// first, so reading only the first line would believe the forgery. A hop
/// written with a port (`203.0.113.7:5123`, `[2001:db8::1]:443`, as Azure
/// Application Gateway does) counts as its address. A hop that does not
/// parse stops the walk at the last address known good, so garbage can only
/// make the answer a proxy's address, never one the client chose.
/// IPv4-mapped IPv6 addresses (a dual-stack listener's IPv4 peers) are
/// compared as IPv4.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    let mut ip = peer.ip().to_canonical();
    if !is_trusted(&ip) {
        return ip;
    }
    let mut lines = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        // A header line that is not text is nothing we can walk: stop at the proxy.
        let Ok(v) = v.to_str() else {
            return ip;
        };
        lines.push(v);
    }
    let xff = lines.join(",");
    for hop in xff.rsplit(',') {
        let Some(hop_ip) = parse_hop(hop.trim()) else {
            break;
        };
        ip = hop_ip;
        if !is_trusted(&hop_ip) {
            break;
        }
    }
    ip
}

/// One `X-Forwarded-For` entry: an address, optionally with a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let ip = hop
        .parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok())?;
    Some(ip.to_canonical())
}

fn ip_allowed(src: &SourceConfig, ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    src.allow_ips.is_empty() || src.allow_ips.iter().any(|n| n.contains(&ip))
}

/// Default `Retry-After` for 503 answers, in seconds.
pub const RETRY_AFTER_SECS: u64 = 5;
