//! Small, careful HTML building for the status page: escaping, the page
//! frame and the security headers every page carries.
//!
//! Everything shown on the page that did not come from this file — sink
//! answers, payload fields, error texts, names — goes through [`esc`]; URLs
//! taken from payloads go through [`safe_href`], which only lets http(s)
//! through (a portal URL in a webhook body could say `javascript:`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Characters escaped in a URL path segment: all but `A-Za-z0-9-_.`.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// Escapes text for use in HTML content and double- or single-quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Encodes one URL path segment (a sink name, a delivery id).
pub fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// The URL, escaped for an `href`, when it is plain http(s); else `None`.
pub fn safe_href(url: &str) -> Option<String> {
    let url = url.trim_start();
    crate::domain::event::is_http_url(url).then(|| esc(url))
}

/// An RFC 3339 time as `<time>`, shown without the `T` and milliseconds;
/// the page's script turns it into the reader's local time.
pub fn time(rfc3339: &str) -> String {
    let short = rfc3339
        .split('.')
        .next()
        .unwrap_or(rfc3339)
        .replace('T', " ");
    let short = if short.ends_with('Z') {
        short
    } else {
        format!("{short}Z")
    };
    format!("<time datetime=\"{}\">{}</time>", esc(rfc3339), esc(&short))
}

/// `Content-Security-Policy`: nothing from anywhere but this listener, no
/// inline script, no framing, forms post only here.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Adds the headers every page and page asset carries.
pub fn harden(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

/// A whole page: `title` is text (escaped here), `body` is HTML built with [`esc`].
pub fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{} · hookrelay</title>\n<link rel=\"icon\" href=\"data:,\">\n\
         <link rel=\"stylesheet\" href=\"/static/status.css\">\n\
         <script src=\"/static/status.js\" defer></script>\n</head>\n<body>\n{body}\n</body>\n</html>\n",
        esc(title)
    );
    harden(
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response(),
    )
}

/// `303 See Other` to a path of this listener (after a form post).
pub fn see_other(location: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    harden(resp)
}

/// A static asset compiled into the binary.
pub fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    resp = harden(resp);
    // Assets change only with the binary; let the browser keep them briefly.
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=300"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_that_matters() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    #[test]
    fn only_http_links() {
        assert_eq!(
            safe_href("https://portal/home?a=1&b=2").as_deref(),
            Some("https://portal/home?a=1&amp;b=2")
        );
        assert!(safe_href("javascript:alert(1)").is_none());
        assert!(safe_href(" JaVaScRiPt:alert(1)").is_none());
        assert!(safe_href("data:text/html,x").is_none());
        assert!(safe_href("HTTP://x\" onmouseover=\"y").is_some_and(|h| !h.contains('"')));
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(seg("gis-team_1.x"), "gis-team_1.x");
        assert_eq!(seg("a/b?c"), "a%2Fb%3Fc");
    }

    #[test]
    fn times_are_short_and_escaped() {
        assert_eq!(
            time("2026-11-22T10:00:00.123Z"),
            "<time datetime=\"2026-11-22T10:00:00.123Z\">2026-11-22 10:00:00Z</time>"
        );
    }
}
