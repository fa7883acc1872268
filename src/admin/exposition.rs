//! Which metrics format a scraper gets.
//!
//! `prometheus-client` writes OpenMetrics: counter families are named
//! without `_total` in `# TYPE`/`# HELP`, and the text ends with `# EOF`.
//! Prometheus asks for OpenMetrics first in its `Accept` header and parses
//! that happily. The classic text format 0.0.4 — what `promtool check
//! metrics`, curl and older scrapers read — wants the counter's sample name
//! (`..._total`) in `# TYPE`/`# HELP` and has no `# EOF` or `# UNIT`; a
//! scraper that does not ask for OpenMetrics gets that instead.

use axum::http::{header, HeaderMap};

/// Content type of the OpenMetrics answer.
pub const OPENMETRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the classic text answer.
pub const TEXT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether the request's `Accept` lists OpenMetrics with a non-zero weight.
pub fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let media = parts.next().unwrap_or("");
            let zero = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("application/openmetrics-text") && !zero
        })
}

/// Rewrites an OpenMetrics exposition into the text format 0.0.4.
pub fn to_text_format(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.insert(name.to_string());
            }
        }
    }
    let mut out = String::with_capacity(openmetrics.len() + counters.len() * 16);
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# TYPE ", "# HELP "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters.contains(name).then(|| {
                format!("{prefix}{name}_total {tail}")
                    .trim_end()
                    .to_string()
            })
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn accept_negotiation() {
        let h = |v: &'static str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT, HeaderValue::from_static(v));
            m
        };
        // What Prometheus 2.x sends.
        assert!(wants_openmetrics(&h(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(!wants_openmetrics(&h("text/plain;version=0.0.4")));
        assert!(!wants_openmetrics(&h("*/*")));
        assert!(!wants_openmetrics(&h("application/openmetrics-text;q=0")));
        assert!(!wants_openmetrics(&HeaderMap::new()));
    }

    #[test]
    fn counters_get_their_total_name_and_eof_goes() {
        let om =
            "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total{x=\"1\"} 2\n\
                  # HELP g A gauge.\n# TYPE g gauge\n# UNIT g seconds\ng 1.5\n# EOF\n";
        let t = to_text_format(om);
        assert_eq!(
            t,
            "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\na_requests_total{x=\"1\"} 2\n\
             # HELP g A gauge.\n# TYPE g gauge\ng 1.5\n"
        );
    }
}
