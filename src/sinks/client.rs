//! The HTTP client each sink sends with: rustls, connect and total
//! timeouts, no redirects, the sink's proxy or the environment's, an extra
//! CA for TLS-inspecting proxies, and an optional client certificate.
//!
//! Also the `[delivery] allowed_hosts` rule: when the list is set, every
//! sink URL's host must match one of its patterns, checked when the
//! configuration is validated (so `hookrelay check` and start refuse it).

use std::path::Path;

use crate::config::{ConfigError, DeliveryPolicy, SinkConfig};

fn invalid(sink: &str, k: &str, m: String) -> ConfigError {
    ConfigError::Invalid {
        key: format!("sinks.{sink}.{k}"),
        message: m,
    }
}

/// Builds a sink's client from its policy, without a client certificate.
pub fn build(sink: &str, policy: &DeliveryPolicy) -> Result<reqwest::Client, ConfigError> {
    build_with_identity(sink, policy, None)
}

/// Builds the client for a configured sink: its policy plus, when
/// `client_cert`/`client_key` are set, the certificate it presents (mTLS).
pub fn build_for(
    sink: &SinkConfig,
    policy: &DeliveryPolicy,
) -> Result<reqwest::Client, ConfigError> {
    let identity = match (&sink.client_cert, &sink.client_key) {
        (Some(cert), Some(key)) => Some(load_identity(&format!("sinks.{}", sink.name), cert, key)?),
        _ => None,
    };
    build_with_identity(&sink.name, policy, identity)
}

fn build_with_identity(
    sink: &str,
    policy: &DeliveryPolicy,
    identity: Option<reqwest::Identity>,
) -> Result<reqwest::Client, ConfigError> {
    let bad = |k: &str, m: String| invalid(sink, k, m);
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

/// Checks one `allowed_hosts` pattern: a host name, an IP address, or
/// `*.` followed by a domain (any host below that domain, not the domain
/// itself).
pub fn check_host_pattern(pattern: &str) -> Result<(), String> {
    let p = pattern.trim();
    let name = p.strip_prefix("*.").unwrap_or(p);
    if p == "*" {
        return Err("\"*\" allows every host: leave allowed_hosts out instead".into());
    }
    // A colon only belongs to an IPv6 address, never to `host:port`.
    if p.contains(':') {
        let bare = p.trim_start_matches('[').trim_end_matches(']');
        return match bare.parse::<std::net::Ipv6Addr>() {
            Ok(_) => Ok(()),
            Err(_) => Err(format!(
                "{pattern:?}: a pattern has no port; write the host alone"
            )),
        };
    }
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'[' | b']'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{pattern:?} is not a host name, an IP address or *.domain (no scheme, port or path)"
        ))
    }
}

/// Whether `host` (as in a URL, IPv6 in brackets) matches one pattern.
/// Host names compare case-insensitively.
pub fn host_matches(host: &str, pattern: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let pattern = pattern.trim().trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(domain) => host.len() > domain.len() + 1 && host.ends_with(&format!(".{domain}")),
        None => host == pattern || host.trim_start_matches('[').trim_end_matches(']') == pattern,
    }
}

/// Whether a sink URL may be used under `allowed_hosts`: always when the
/// list is absent; otherwise only when its host matches a pattern. The
/// error names the host (never the URL, whose path or query may hold a key).
pub fn check_url_allowed(url: &str, allowed: Option<&[String]>) -> Result<(), String> {
    let Some(patterns) = allowed else {
        return Ok(());
    };
    let parsed = reqwest::Url::parse(url).map_err(|_| "not a valid URL".to_string())?;
    let host = parsed.host_str().unwrap_or("");
    if patterns.iter().any(|p| host_matches(host, p)) {
        Ok(())
    } else {
        Err(format!(
            "host {host:?} is not in [delivery] allowed_hosts ({})",
            patterns.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        assert!(host_matches("hooks.slack.com", "*.slack.com"));
        assert!(host_matches("a.b.slack.com", "*.SLACK.com"));
        assert!(!host_matches("slack.com", "*.slack.com"));
        assert!(!host_matches("evilslack.com", "*.slack.com"));
        assert!(!host_matches("hooks.slack.com.evil.org", "*.slack.com"));
        assert!(host_matches("Hooks.Example.org.", "hooks.example.org"));
        assert!(!host_matches("x.hooks.example.org", "hooks.example.org"));
        assert!(host_matches("127.0.0.1", "127.0.0.1"));
        assert!(host_matches("[::1]", "::1"));
        assert!(host_matches("[::1]", "[::1]"));
    }

    #[test]
    fn pattern_syntax() {
        for ok in [
            "*.slack.com",
            "hooks.example.org",
            "10.1.2.3",
            "::1",
            "localhost",
        ] {
            assert!(check_host_pattern(ok).is_ok(), "{ok}");
        }
        for bad in [
            "*",
            "",
            "https://x.org",
            "x.org/path",
            "*.",
            "a..b",
            "*x.org",
            "x.*.org",
            "x.org:443",
            "[::1]:443",
        ] {
            assert!(check_host_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_under_the_list() {
        let list = vec!["*.slack.com".to_string(), "api.powerbi.com".to_string()];
        assert!(check_url_allowed("https://hooks.slack.com/services/T/B/X", Some(&list)).is_ok());
        assert!(check_url_allowed("https://api.powerbi.com/beta/x?key=k", Some(&list)).is_ok());
        let e = check_url_allowed("https://evil.example.com/x?key=secretvalue", Some(&list))
            .unwrap_err();
        assert!(
            e.contains("evil.example.com") && !e.contains("secretvalue"),
            "{e}"
        );
        assert!(check_url_allowed("https://anything.example/", None).is_ok());
        assert!(check_url_allowed("https://anything.example/", Some(&[])).is_err());
    }
}
