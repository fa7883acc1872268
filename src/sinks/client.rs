//! The HTTP client each sink sends with: rustls, connect and total
//! timeouts, no redirects, the sink's proxy or the environment's.

use crate::config::{ConfigError, DeliveryPolicy};

/// Builds a sink's client from its policy.
pub fn build(sink: &str, policy: &DeliveryPolicy) -> Result<reqwest::Client, ConfigError> {
    let bad = |k: &str, m: String| ConfigError::Invalid {
        key: format!("sinks.{sink}.{k}"),
        message: m,
    };
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("hookrelay/", env!("CARGO_PKG_VERSION")))
        .timeout(policy.timeout)
        .connect_timeout(policy.timeout.min(std::time::Duration::from_secs(10)))
        // A redirect would send the body (and any signature) somewhere the
        // administrator did not name; the 3xx is recorded instead.
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(std::time::Duration::from_secs(60))
        .tcp_nodelay(true);
    if let Some(proxy) = &policy.proxy {
        // An explicit proxy still honours NO_PROXY, as the environment's does.
        let p = reqwest::Proxy::all(proxy.as_str())
            .map_err(|_| bad("proxy", "not a valid proxy URL".into()))?
            .no_proxy(reqwest::NoProxy::from_env());
        b = b.proxy(p);
    }
    if let Some(ca) = &policy.ca_file {
        let pem = std::fs::read(ca)
            .map_err(|e| bad("ca_file", format!("cannot read {}: {e}", ca.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| bad("ca_file", format!("{} is not a PEM bundle: {e}", ca.display())))?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build()
        .map_err(|e| bad("url", format!("cannot build HTTP client: {e}")))
}
