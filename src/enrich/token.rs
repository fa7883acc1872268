//! The token a source sends: an API key as given, or one got from an OAuth
//! client-credentials or generateToken endpoint (FACTS B1–B3), cached and
//! refreshed before it expires.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use url::Url;

use super::http::{send_json, Req};
use super::{Clock, FetchError};
use crate::arcgis::answer::parse_token_answer;
use crate::arcgis::changes::display_url;
use crate::config::ArcgisCredential;
use crate::domain::secret::Secret;

/// Minutes asked of generateToken: what Esri's samples and ArcGIS API for
/// Python ask (FACTS B1).
const GENERATE_MINUTES: i64 = 60;
/// Minutes asked of the OAuth endpoint: its default app-token lifetime
/// (FACTS B2, contradiction 12).
const OAUTH_MINUTES: i64 = 120;
/// Refresh at most this long before expiry...
const EARLY_MS: i64 = 5 * 60 * 1000;
/// ...or within the last tenth of the lifetime, whichever is less.
const EARLY_FRACTION: i64 = 10;
/// A lifetime shorter than this (clock skew between us and the server) is
/// taken as this long, so a skewed clock cannot make every call fetch a
/// token; a real expiry then shows as an auth error and one refresh.
const MIN_LIFETIME_MS: i64 = 2 * 60 * 1000;

enum Kind {
    Public,
    Static(Secret),
    OAuth {
        client_id: String,
        client_secret: Secret,
        url: Url,
    },
    Generate {
        username: String,
        password: Secret,
        url: Url,
    },
}

struct Cached {
    token: Secret,
    /// When to get a new one (epoch ms): before expiry, by the margin.
    refresh_at_ms: i64,
}

/// A source's token. Concurrent callers share one refresh: the first to
/// find the cache stale takes the refresh lock and fetches; the others
/// wait for the lock and find the new token in the cache.
pub struct TokenSource {
    source: String,
    kind: Kind,
    client: reqwest::Client,
    timeout: Duration,
    clock: Clock,
    cache: Mutex<Option<Cached>>,
    refresh: tokio::sync::Mutex<()>,
    requests: AtomicU64,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Public => "public",
            Kind::Static(_) => "api_key",
            Kind::OAuth { .. } => "oauth",
            Kind::Generate { .. } => "generate_token",
        };
        f.debug_struct("TokenSource")
            .field("source", &self.source)
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// A token source for `source` (named in errors). `token_url` must
    /// parse (configuration validation checked it).
    pub fn new(
        source: &str,
        credential: &ArcgisCredential,
        client: reqwest::Client,
        timeout: Duration,
        clock: Clock,
    ) -> Result<TokenSource, String> {
        let parse = |u: &str| Url::parse(u).map_err(|_| "token_url is not a valid URL".to_string());
        let kind = match credential {
            ArcgisCredential::None => Kind::Public,
            ArcgisCredential::ApiKey(k) => Kind::Static(k.clone()),
            ArcgisCredential::ClientCredentials {
                client_id,
                client_secret,
                token_url,
            } => Kind::OAuth {
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
                url: parse(token_url)?,
            },
            ArcgisCredential::GenerateToken {
                username,
                password,
                token_url,
            } => Kind::Generate {
                username: username.clone(),
                password: password.clone(),
                url: parse(token_url)?,
            },
        };
        Ok(TokenSource {
            source: source.to_string(),
            kind,
            client,
            timeout,
            clock,
            cache: Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
            requests: AtomicU64::new(0),
        })
    }

    pub(crate) fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// Whether a refused token can be replaced by asking again (not for an
    /// API key, nor without a credential).
    pub fn refreshable(&self) -> bool {
        matches!(self.kind, Kind::OAuth { .. } | Kind::Generate { .. })
    }

    /// Requests made to the token endpoint so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn cached(&self, now: i64) -> Option<Secret> {
        let guard = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .filter(|c| now < c.refresh_at_ms)
            .map(|c| c.token.clone())
    }

    /// The token to send, or `None` for public services. Fetches one when
    /// there is none, or the cached one is within its refresh margin (5
    /// minutes, or a tenth of its lifetime if that is less).
    pub async fn token(&self) -> Result<Option<Secret>, FetchError> {
        match &self.kind {
            Kind::Public => return Ok(None),
            Kind::Static(k) => return Ok(Some(k.clone())),
            _ => {}
        }
        if let Some(t) = self.cached((self.clock)().get()) {
            return Ok(Some(t));
        }
        let _one_refresh = self.refresh.lock().await;
        // Whoever held the lock before us may have refreshed already.
        if let Some(t) = self.cached((self.clock)().get()) {
            return Ok(Some(t));
        }
        let (token, refresh_at_ms) = self.request().await?;
        let mut guard = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        *guard = Some(Cached {
            token: token.clone(),
            refresh_at_ms,
        });
        Ok(Some(token))
    }

    /// Forgets `token` after the server refused it, so the next
    /// [`Self::token`] fetches a new one. A token other than the cached
    /// one (another caller refreshed meanwhile) is ignored: that refresh
    /// is shared, not repeated.
    pub fn invalidate(&self, token: &Secret) {
        let mut guard = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if guard.as_ref().is_some_and(|c| &c.token == token) {
            *guard = None;
        }
    }

    /// One request to the token endpoint: the token and when to refresh it.
    async fn request(&self) -> Result<(Secret, i64), FetchError> {
        let (url, minutes, form): (&Url, i64, Vec<(&str, String)>) = match &self.kind {
            Kind::OAuth {
                client_id,
                client_secret,
                url,
            } => (
                url,
                OAUTH_MINUTES,
                vec![
                    ("client_id", client_id.clone()),
                    ("client_secret", client_secret.expose().to_string()),
                    ("grant_type", "client_credentials".into()),
                    ("expiration", OAUTH_MINUTES.to_string()),
                    ("f", "json".into()),
                ],
            ),
            Kind::Generate {
                username,
                password,
                url,
            } => (
                url,
                GENERATE_MINUTES,
                vec![
                    ("username", username.clone()),
                    ("password", password.expose().to_string()),
                    ("client", "requestip".into()),
                    ("expiration", GENERATE_MINUTES.to_string()),
                    ("f", "json".into()),
                ],
            ),
            Kind::Public | Kind::Static(_) => {
                return Err(FetchError::permanent(
                    "no token endpoint for this credential",
                ))
            }
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        let secret = match &self.kind {
            Kind::OAuth { client_secret, .. } => client_secret.expose(),
            Kind::Generate { password, .. } => password.expose(),
            _ => "",
        };
        let refused = |e: FetchError| -> FetchError {
            let e = e.scrubbed(secret);
            if e.retryable() {
                return e;
            }
            FetchError::Auth {
                message: format!(
                    "source {:?}: token request refused ({e}); check the source's [sources.arcgis] credentials",
                    self.source
                ),
                source: Some(Box::new(e)),
            }
        };
        let answer = send_json(
            &self.client,
            &Req::Post { url, form: &form },
            None,
            self.timeout,
        )
        .await
        .map_err(refused)?;
        let now = (self.clock)().get();
        let issued = parse_token_answer(&answer, now).map_err(|e| {
            refused(FetchError::permanent(format!(
                "POST {}: {}",
                display_url(url),
                e
            )))
        })?;
        if issued.token.is_empty() {
            return Err(refused(FetchError::permanent(format!(
                "POST {}: empty token",
                display_url(url)
            ))));
        }
        let expires = issued
            .expires_at_ms
            .unwrap_or(now.saturating_add(minutes * 60_000));
        let lifetime = expires.saturating_sub(now).max(MIN_LIFETIME_MS);
        let early = EARLY_MS.min(lifetime / EARLY_FRACTION);
        Ok((Secret::new(issued.token), now + lifetime - early))
    }
}
