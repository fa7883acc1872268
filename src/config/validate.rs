//! The checks types cannot make: names, references between sections,
//! ranges, `allowed_hosts`. They read only the parsed values (no file, no
//! network), so `Config::from_toml` can run them on any text; what needs
//! a build is checked by `app::compile`.

use std::collections::HashSet;

use super::delivery::DeliveryPolicy;
use super::source::SourceKind;
use super::{egress, invalid, Config, ConfigError};

impl Config {
    /// Checks what types cannot: names, references between sections, ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        parse_listen("server.listen", &self.server.listen)?;
        parse_listen("admin.listen", &self.admin.listen)?;
        if self.server.max_body_bytes == 0 {
            return Err(invalid("server.max_body_bytes", "must be greater than 0"));
        }
        if self.server.max_concurrency == 0 {
            return Err(invalid("server.max_concurrency", "must be greater than 0"));
        }
        if self.server.max_requests_per_client == 0 {
            return Err(invalid(
                "server.max_requests_per_client",
                "must be greater than 0",
            ));
        }
        if self.server.max_events == 0 {
            return Err(invalid("server.max_events", "must be greater than 0"));
        }
        if self.server.max_expansion == 0 {
            return Err(invalid("server.max_expansion", "must be greater than 0"));
        }
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return Err(invalid(
                "server.tls_cert",
                "tls_cert and tls_key must be set together",
            ));
        }
        for (i, p) in self.delivery.allowed_hosts.iter().flatten().enumerate() {
            egress::check_host_pattern(p)
                .map_err(|m| invalid(format!("delivery.allowed_hosts[{i}]"), m))?;
        }
        if !self.store.url.starts_with("sqlite:")
            && !self.store.url.starts_with("postgres://")
            && !self.store.url.starts_with("postgresql://")
        {
            return Err(invalid(
                "store.url",
                "must start with sqlite:// or postgres://",
            ));
        }
        if self.store.ingest_batch == 0 {
            return Err(invalid("store.ingest_batch", "must be greater than 0"));
        }
        if self.store.max_connections == 0 {
            return Err(invalid("store.max_connections", "must be greater than 0"));
        }
        validate_delivery_values("delivery", &self.delivery.policy_defaults())?;

        let mut source_names = HashSet::new();
        for (i, src) in self.sources.iter().enumerate() {
            let key = format!("sources[{i}]");
            check_name(&format!("{key}.name"), &src.name)?;
            if !source_names.insert(src.name.as_str()) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("duplicate source name {:?}", src.name),
                ));
            }
            if src.secret.0.is_empty() {
                return Err(invalid(
                    format!("{key}.secret"),
                    "at least one secret is required",
                ));
            }
            if src.kind != SourceKind::Hmac
                && (src.header.is_some() || src.prefix.is_some() || src.encoding.is_some())
            {
                return Err(invalid(
                    format!("{key}.header"),
                    "header, prefix and encoding apply only to kind = \"hmac\"",
                ));
            }
            if let Some(a) = &src.arcgis {
                if src.kind != SourceKind::ArcgisService {
                    return Err(invalid(
                        format!("{key}.arcgis"),
                        "[sources.arcgis] applies only to kind = \"arcgis-service\"",
                    ));
                }
                a.validate(
                    &format!("{key}.arcgis"),
                    self.delivery.allowed_hosts.as_deref(),
                )?;
            }
        }

        let mut sink_names = HashSet::new();
        for (i, spec) in self.sinks.iter().enumerate() {
            let key = format!("sinks[{i}]");
            let sink = spec.common();
            check_name(&format!("{key}.name"), &sink.name)?;
            if !sink_names.insert(sink.name.as_str()) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("duplicate sink name {:?}", sink.name),
                ));
            }
            for (j, s) in sink.sources.iter().flatten().enumerate() {
                if !source_names.contains(s.as_str()) {
                    return Err(invalid(
                        format!("{key}.sources[{j}]"),
                        format!("unknown source {s:?}"),
                    ));
                }
            }
            for (j, p) in sink.events.iter().flatten().enumerate() {
                crate::domain::pattern::Pattern::parse(p)
                    .map_err(|m| invalid(format!("{key}.events[{j}]"), m))?;
            }
            let policy = spec.policy(&self.delivery);
            validate_delivery_values(&key, &policy)?;
            egress::check_url_allowed(&sink.url, self.delivery.allowed_hosts.as_deref())
                .map_err(|m| invalid(format!("{key}.url"), format!("sink {:?}: {m}", sink.name)))?;
        }
        Ok(())
    }
}

/// The values of a policy that must make sense, named under `key`
/// (`delivery` or `sinks[2]`).
fn validate_delivery_values(key: &str, p: &DeliveryPolicy) -> Result<(), ConfigError> {
    if p.max_attempts == 0 {
        return Err(invalid(format!("{key}.max_attempts"), "must be at least 1"));
    }
    if p.concurrency == 0 {
        return Err(invalid(format!("{key}.concurrency"), "must be at least 1"));
    }
    if p.timeout.is_zero() {
        return Err(invalid(format!("{key}.timeout"), "must be greater than 0"));
    }
    if p.circuit.failures == 0 {
        return Err(invalid(
            format!("{key}.circuit.failures"),
            "must be at least 1",
        ));
    }
    if p.circuit.probe_interval.0.is_zero() {
        return Err(invalid(
            format!("{key}.circuit.probe_interval"),
            "must be greater than 0",
        ));
    }
    if let Some(d) = &p.deactivate_after {
        if d.failures == 0 || !(d.days > 0.0 && d.days.is_finite()) {
            return Err(invalid(
                format!("{key}.deactivate_after"),
                "needs failures >= 1 and days > 0",
            ));
        }
    }
    if p.initial_backoff > p.max_backoff {
        return Err(invalid(
            format!("{key}.initial_backoff"),
            "must not exceed max_backoff",
        ));
    }
    if let Some(r) = p.rate_limit {
        if !(r > 0.0 && r.is_finite()) {
            return Err(invalid(
                format!("{key}.rate_limit"),
                "must be a positive number of requests per second",
            ));
        }
    }
    if let Some(proxy) = &p.proxy {
        reqwest::Proxy::all(proxy.as_str())
            .map_err(|_| invalid(format!("{key}.proxy"), "not a valid proxy URL"))?;
    }
    if let Some(ca) = &p.ca_file {
        if !ca.exists() {
            return Err(invalid(
                format!("{key}.ca_file"),
                format!("{} does not exist", ca.display()),
            ));
        }
    }
    Ok(())
}

/// Parses a `host:port` listen address.
pub fn parse_listen(key: &str, value: &str) -> Result<std::net::SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        invalid(
            key,
            format!("{value:?} is not an address like 127.0.0.1:8080"),
        )
    })
}

fn check_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("{name:?} must be 1-64 characters of a-z, 0-9 and -"),
        ))
    }
}
