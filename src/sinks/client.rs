//! The HTTP client each sink sends with: rustls, connect and total
//! timeouts, no redirects, the sink's proxy or the environment's, an extra
//! CA for TLS-inspecting proxies, and an optional client certificate.
//!
//! Also the `[delivery] allowed_hosts` rule: when the list is set, every
//! sink URL's host must match one of its patterns, checked when the
//! configuration is validated (so `hookrelay check` and start refuse it).

use std::path::Path;

use crate::config::{ClientCert, ConfigError, DeliveryPolicy};

/// Builds a sink's client from its policy and, when `client_cert` and
/// `client_key` are set, the certificate it presents (mTLS). `key` names
/// the sink's entry in errors (`sinks[2]`).
pub fn build(
    key: &str,
    client_cert: Option<&ClientCert>,
    policy: &DeliveryPolicy,
) -> Result<reqwest::Client, ConfigError> {
    let identity = match client_cert {
        Some(c) => Some(load_identity(key, &c.cert, &c.key)?),
        None => None,
    };
    build_with_identity(key, policy, identity)
}

fn build_with_identity(
    key: &str,
    policy: &DeliveryPolicy,
    identity: Option<reqwest::Identity>,
) -> Result<reqwest::Client, ConfigError> {
    let bad = |k: &str, m: String| ConfigError::Invalid {
        key: format!("{key}.{k}"),
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
        // Its URL may carry credentials, so no message here quotes it.
        let p = reqwest::Proxy::all(proxy.as_str())
            .map_err(|_| bad("proxy", "not a valid proxy URL".into()))?
            .no_proxy(reqwest::NoProxy::from_env());
        b = b.proxy(p);
    }
    if let Some(ca) = &policy.ca_file {
        let pem = std::fs::read(ca).map_err(|e| {
            bad(
                "ca_file",
                format!("cannot read {}: {}", ca.display(), e.kind()),
            )
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            bad(
                "ca_file",
                format!("{} is not a PEM bundle: {e}", ca.display()),
            )
        })?;
        if certs.is_empty() {
            return Err(bad(
                "ca_file",
                format!("{} holds no PEM certificate", ca.display()),
            ));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if let Some(id) = identity {
        b = b.identity(id);
    }
    b.build()
        .map_err(|e| bad("url", format!("cannot build HTTP client: {e}")))
}

/// Reads a client certificate chain and its private key (PEM files) into
/// the identity a sink presents. `key` names the config entry in errors;
/// no error quotes the key file's content.
pub fn load_identity(
    key: &str,
    cert: &Path,
    private_key: &Path,
) -> Result<reqwest::Identity, ConfigError> {
    let bad = |m: String| ConfigError::Invalid {
        key: format!("{key}.client_cert"),
        message: m,
    };
    // Parsed first with the ingress loader: it checks that the key belongs
    // to the certificate and names the file at fault.
    crate::tls::load_certified_key(cert, private_key).map_err(|e| bad(e.to_string()))?;
    let mut pem = std::fs::read(private_key).map_err(|e| {
        bad(format!(
            "cannot read {}: {}",
            private_key.display(),
            e.kind()
        ))
    })?;
    pem.push(b'\n');
    pem.extend(
        std::fs::read(cert)
            .map_err(|e| bad(format!("cannot read {}: {}", cert.display(), e.kind())))?,
    );
    reqwest::Identity::from_pem(&pem).map_err(|_| {
        bad(format!(
            "{} and {} are not a usable PEM certificate and key",
            cert.display(),
            private_key.display()
        ))
    })
}

pub use crate::config::egress::{check_host_pattern, check_url_allowed, host_matches};
