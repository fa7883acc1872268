//! Ingress refusals and the one place they become HTTP answers.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::payload::PayloadError;
use crate::metrics::IngressOutcome;

/// Why a webhook was not accepted. Details never contain a secret or a
/// signature value; they say which check failed.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// No source with that name.
    #[error("unknown source")]
    UnknownSource,
    /// Not a `/hooks/<source>` path.
    #[error("not found")]
    NotFound,
    /// Only GET and POST exist.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The client address is outside the source's `allow_ips`.
    #[error("client address not allowed")]
    IpNotAllowed,
    /// No signature where the source expects one.
    #[error("missing signature: {0}")]
    MissingSignature(String),
    /// A signature that is malformed or does not match.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// A Portal request without any secret.
    #[error("missing secret: no secret header and no info.secret in the body")]
    MissingSecret,
    /// A Portal request whose secret matches none configured.
    #[error("bad secret")]
    BadSecret,
    /// Not JSON, or not an ArcGIS shape.
    #[error("invalid payload: {0}")]
    Invalid(String),
    /// Over `max_body_bytes`.
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    /// Headers adding up to more than the ingress limit.
    #[error("request headers larger than {0} bytes")]
    HeadersTooLarge(usize),
    /// Neither JSON nor form-encoded.
    #[error("{0}")]
    Unsupported(String),
    /// The body did not arrive in time.
    #[error("body not received within {0:?}")]
    BodyTimeout(Duration),
    /// Headers came, the body's first byte did not.
    #[error("body not started within {0:?}")]
    BodyNotStarted(Duration),
    /// The body arrives slower than the minimum rate.
    #[error("body arriving slower than {0} bytes per second")]
    BodyTooSlow(u64),
    /// This client address already has its share of requests in progress.
    #[error("more than {0} requests at once from this client address")]
    TooManyFromClient(usize),
    /// Every work slot is taken (`max_concurrency`).
    #[error("too many requests in progress; try again")]
    Overloaded,
    /// Valid, but more than the relay keeps for one message (events,
    /// normalised size).
    #[error("{0}")]
    TooComplex(String),
    /// Not committed: store down, queue full, or shutting down. The cause
    /// is kept for the log line; the answer says less (see `into_response`).
    #[error("not stored: {0}")]
    Unavailable(#[source] crate::store::batch::SubmitError),
}

impl From<PayloadError> for IngressError {
    fn from(e: PayloadError) -> Self {
        match e {
            PayloadError::UnsupportedType(_) => IngressError::Unsupported(e.to_string()),
            PayloadError::Invalid(m) => IngressError::Invalid(m),
            PayloadError::TooComplex(m) => IngressError::TooComplex(m),
        }
    }
}

impl IngressError {
    /// The metric outcome word.
    pub fn outcome(&self) -> IngressOutcome {
        match self {
            IngressError::UnknownSource | IngressError::NotFound => IngressOutcome::NotFound,
            IngressError::IpNotAllowed => IngressOutcome::Forbidden,
            IngressError::MissingSignature(_)
            | IngressError::BadSignature(_)
            | IngressError::MissingSecret
            | IngressError::BadSecret => IngressOutcome::Unauthorized,
            IngressError::Invalid(_)
            | IngressError::BodyTimeout(_)
            | IngressError::BodyNotStarted(_)
            | IngressError::BodyTooSlow(_)
            | IngressError::MethodNotAllowed => IngressOutcome::Invalid,
            IngressError::TooLarge(_)
            | IngressError::HeadersTooLarge(_)
            | IngressError::TooComplex(_) => IngressOutcome::TooLarge,
            IngressError::Unsupported(_) => IngressOutcome::Unsupported,
            IngressError::Unavailable(_) | IngressError::Overloaded => IngressOutcome::Unavailable,
            IngressError::TooManyFromClient(_) => IngressOutcome::Throttled,
        }
    }

    /// Whether the fault is ours (logged as an error) rather than the caller's.
    pub fn is_server_side(&self) -> bool {
        matches!(self, IngressError::Unavailable(_))
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            IngressError::UnknownSource => (StatusCode::NOT_FOUND, "unknown_source"),
            IngressError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            IngressError::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            }
            IngressError::IpNotAllowed => (StatusCode::FORBIDDEN, "ip_not_allowed"),
            IngressError::MissingSignature(_) => (StatusCode::UNAUTHORIZED, "missing_signature"),
            IngressError::BadSignature(_) => (StatusCode::UNAUTHORIZED, "bad_signature"),
            IngressError::MissingSecret => (StatusCode::UNAUTHORIZED, "missing_secret"),
            IngressError::BadSecret => (StatusCode::UNAUTHORIZED, "bad_secret"),
            IngressError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_payload"),
            IngressError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            IngressError::HeadersTooLarge(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
            ),
            IngressError::Unsupported(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            IngressError::BodyTimeout(_)
            | IngressError::BodyNotStarted(_)
            | IngressError::BodyTooSlow(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            IngressError::TooManyFromClient(_) => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_requests")
            }
            IngressError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            IngressError::TooComplex(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_complex"),
            IngressError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }
}

impl IntoResponse for IngressError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let detail = match &self {
            // Store errors can carry file paths and driver text: say less.
            IngressError::Unavailable(_) => "the message was not stored; try again".to_string(),
            other => other.to_string(),
        };
        let mut resp = (status, Json(json!({"error": code, "detail": detail}))).into_response();
        let retry_after = match &self {
            // Work slots free in milliseconds; a client's own slots as soon
            // as its other requests end.
            IngressError::Overloaded | IngressError::TooManyFromClient(_) => Some(1),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(super::RETRY_AFTER_SECS),
            _ => None,
        };
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
