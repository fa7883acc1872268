//! `[delivery] allowed_hosts`: which hosts a sink URL may name. Pure
//! checks on text, so configuration validation needs nothing that sends.

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
