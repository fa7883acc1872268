//! `[server]` and `[admin]`: the two listeners.

use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::values::{Dur, Secret};

/// `[server]`: the ingress listener that ArcGIS calls.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to bind, `host:port`; port 0 picks a free port.
    pub listen: String,
    /// Largest accepted body; larger answers 413.
    pub max_body_bytes: usize,
    /// A re-sent payload within this window is acknowledged without new deliveries.
    pub dedupe_window: Dur,
    /// A client that has not sent its headers by then is disconnected.
    pub header_read_timeout: Dur,
    /// A client that has not sent its whole body by then gets 408.
    pub body_read_timeout: Dur,
    /// Requests being verified and committed at once (counted once their
    /// body has arrived); more are shed with 503 instead of queueing.
    pub max_concurrency: usize,
    /// Requests in progress at once from one client address (the address
    /// `trusted_proxies` resolves); more get 429.
    pub max_requests_per_client: usize,
    /// A body whose first byte has not arrived by then gets 408.
    pub body_start_timeout: Dur,
    /// After `body_start_timeout`, a body arriving slower than this many
    /// bytes per second on average gets 408.
    pub min_body_rate: u64,
    /// Most events one message may carry; more get 413.
    pub max_events: usize,
    /// The normalised events of a message may be at most this many times
    /// the body's size (plus 64 KiB); more get 413. Bounds what a small
    /// body can make the relay store and hold.
    pub max_expansion: usize,
    /// Pending acknowledgements (not yet committed) above which ingress sheds with 503.
    pub max_pending_commits: usize,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// PEM certificate chain; with `tls_key`, ingress speaks HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    pub tls_key: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "0.0.0.0:8080".into(),
            max_body_bytes: 1024 * 1024,
            dedupe_window: Dur::secs(24 * 3600),
            header_read_timeout: Dur::secs(10),
            body_read_timeout: Dur::secs(30),
            max_concurrency: 1024,
            max_requests_per_client: 64,
            body_start_timeout: Dur::secs(5),
            min_body_rate: 1024,
            max_events: 1000,
            max_expansion: 4,
            max_pending_commits: 10_000,
            trusted_proxies: Vec::new(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// `[admin]`: the operator's listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address to bind; loopback by default because the API can replay.
    pub listen: String,
    /// Bearer token for `/api/v1`; without one the API answers 401.
    pub token: Option<Secret>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:9090".into(),
            token: None,
        }
    }
}
