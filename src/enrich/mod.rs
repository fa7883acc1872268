//! Fetching the edits a feature-service webhook points at (issue 14):
//! a webhook says "something changed, here is a `changesUrl`"; this
//! module calls it with the source's credentials and turns the answer into
//! the [`ChangesDoc`] every sink shares.
//!
//! - [`Fetcher`] (`fetch.rs`): one per source, built once from
//!   `[sources.arcgis]`; refuses any changesUrl outside the configured
//!   services before sending anything, follows the synchronous,
//!   asynchronous-job and ids-only routes, caps the document at
//!   `max_features`.
//! - [`TokenSource`] (`token.rs`): API key, OAuth client credentials or
//!   generateToken; cached, refreshed early, one refresh shared by
//!   concurrent callers, forced by [`TokenSource::invalidate`] after an
//!   auth error.
//! - `http.rs`: one request and what its answer means ([`FetchError`]),
//!   with tokens in the form body (POST) or `X-Esri-Authorization` (GET),
//!   never in a URL or a message.
//!
//! Above `sinks` (its egress client: rustls, proxy, extra CA, no
//! redirects), below `dispatch`, which will run the durable fetch stage.

mod fetch;
mod http;
mod token;

use std::sync::Arc;
use std::time::Duration;

pub use crate::arcgis::changes::{ChangesDoc, LayerChanges};
pub use fetch::{FetchOptions, Fetcher};
pub use token::TokenSource;

/// The current time. Injected so tests can move it
/// (token expiry); [`system_clock`] in production.
pub type Clock = Arc<dyn Fn() -> crate::store::Millis + Send + Sync>;

/// The wall clock, as the store reads it.
pub fn system_clock() -> Clock {
    Arc::new(crate::store::now_ms)
}

/// A boxed error kept as the source of a [`FetchError`] (transport errors
/// without their URL, ArcGIS errors).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a fetch failed. Every message names what failed (the operation's
/// scheme, host and path; the HTTP status; ArcGIS's code and message, cut
/// to 200 characters) and never a token, a secret or a query string.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The configuration said no (URL not a changesUrl, or not under the
    /// source's services): nothing was called. Permanent.
    #[error("refused: {reason}")]
    Refused {
        /// What is wrong, naming scheme, host and path at most.
        reason: String,
    },
    /// The token was refused even after one refresh, or the token
    /// endpoint refused the credentials. Permanent until the
    /// configuration changes.
    #[error("{message}")]
    Auth {
        /// What failed.
        message: String,
        /// The error ArcGIS reported, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// 403: the credential's identity may not read this service. Permanent.
    #[error("{message}")]
    Forbidden {
        /// What failed.
        message: String,
        /// The error ArcGIS reported.
        #[source]
        source: Option<BoxError>,
    },
    /// The service, layer or job is not there (404). Permanent.
    #[error("{message}")]
    NotFound {
        /// What failed.
        message: String,
        /// The error ArcGIS reported.
        #[source]
        source: Option<BoxError>,
    },
    /// Any other refusal or an answer of the wrong shape: the same request
    /// would fail the same way.
    #[error("{message}")]
    Permanent {
        /// What failed.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// Worth another attempt later: 408/425/429/5xx, timeouts, connection
    /// failures, an answer that is not JSON (a proxy's or web adaptor's
    /// error page).
    #[error("{message}")]
    Retryable {
        /// What failed.
        message: String,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
        /// The underlying error (transport errors carry no URL).
        #[source]
        source: Option<BoxError>,
    },
    /// The asynchronous job reported `Failed`. Retryable: Esri jobs fail
    /// transiently (a busy hosting server), and a new attempt submits a
    /// new job.
    #[error("extractChanges job failed: {message}")]
    JobFailed {
        /// The job's message, or "no message".
        message: String,
    },
    /// The job was still running when `job_timeout` passed. Retryable.
    #[error("extractChanges job still running after {}", human(.after))]
    JobTimeout {
        /// The `job_timeout` in force.
        after: Duration,
    },
}

fn human(d: &Duration) -> String {
    humantime::format_duration(*d).to_string()
}

impl FetchError {
    /// Whether a later attempt may succeed: [`FetchError::Retryable`],
    /// [`FetchError::JobFailed`] and [`FetchError::JobTimeout`].
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            FetchError::Retryable { .. }
                | FetchError::JobFailed { .. }
                | FetchError::JobTimeout { .. }
        )
    }

    /// The server's `Retry-After`, if it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::Retryable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short fixed name of the variant, for metric labels and logs.
    pub fn label(&self) -> &'static str {
        match self {
            FetchError::Refused { .. } => "refused",
            FetchError::Auth { .. } => "auth",
            FetchError::Forbidden { .. } => "forbidden",
            FetchError::NotFound { .. } => "not_found",
            FetchError::Permanent { .. } => "permanent",
            FetchError::Retryable { .. } => "retryable",
            FetchError::JobFailed { .. } => "job_failed",
            FetchError::JobTimeout { .. } => "job_timeout",
        }
    }

    pub(crate) fn permanent(message: impl Into<String>) -> FetchError {
        FetchError::Permanent {
            message: message.into(),
            source: None,
        }
    }

    /// Replaces every occurrence of `secret` in the message: a server may
    /// echo what it was sent ("Invalid token: ...").
    pub(crate) fn scrubbed(mut self, secret: &str) -> FetchError {
        if secret.is_empty() {
            return self;
        }
        let m = match &mut self {
            FetchError::Refused { reason } => reason,
            FetchError::Auth { message, .. }
            | FetchError::Forbidden { message, .. }
            | FetchError::NotFound { message, .. }
            | FetchError::Permanent { message, .. }
            | FetchError::Retryable { message, .. }
            | FetchError::JobFailed { message } => message,
            FetchError::JobTimeout { .. } => return self,
        };
        if m.contains(secret) {
            *m = m.replace(secret, crate::domain::secret::REDACTED);
            // The source would print it again.
            match &mut self {
                FetchError::Auth { source, .. }
                | FetchError::Forbidden { source, .. }
                | FetchError::NotFound { source, .. }
                | FetchError::Permanent { source, .. }
                | FetchError::Retryable { source, .. } => *source = None,
                _ => {}
            }
        }
        self
    }
}
