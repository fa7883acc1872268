//! The status page's HTML layer: the template environment, escaping, and
//! the headers every page carries.
//!
//! Every page is a minijinja template in `templates/` (compiled into the
//! binary), rendered by [`render`] with auto-escaping on: any value a
//! template prints — sink answers, payload fields, error texts, names — is
//! escaped by [`esc`] unless the template marks it safe, which none does.
//! No HTML is built in Rust. URLs taken from payloads reach a template
//! only through [`safe_href`], which lets plain http(s) through and
//! nothing else (a portal URL in a webhook body could say `javascript:`).
//!
//! The environment is built once, on first use; `status::routes` builds it
//! when the listener starts, so a broken template shows in the log at once.
//! A template that fails at request time answers a plain-text 500; it never
//! panics.

use std::sync::LazyLock;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{
    AutoEscape, Environment, Error, ErrorKind, Output, State, UndefinedBehavior, Value,
};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Serialize;

/// Characters escaped in a URL path segment: all but `A-Za-z0-9-_.`.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// Every template, by name. The `.html` ending turns auto-escaping on.
pub const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("macros.html", include_str!("templates/macros.html")),
    ("header.html", include_str!("templates/header.html")),
    ("notice.html", include_str!("templates/notice.html")),
    ("login.html", include_str!("templates/login.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("sinks.html", include_str!("templates/sinks.html")),
    ("deliveries.html", include_str!("templates/deliveries.html")),
    ("message.html", include_str!("templates/message.html")),
    ("not_found.html", include_str!("templates/not_found.html")),
    ("refused.html", include_str!("templates/refused.html")),
    ("store_down.html", include_str!("templates/store_down.html")),
];

/// Escapes text for use in HTML content and double- or single-quoted
/// attributes. The environment's formatter applies it to every value a
/// template prints.
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

/// Encodes one URL path segment (a sink name, a delivery id); the `seg`
/// filter of the templates.
pub fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// The URL when it is plain http(s), else `None`. Not escaped: the
/// template that prints it escapes it.
pub fn safe_href(url: &str) -> Option<String> {
    let url = url.trim_start();
    crate::domain::event::is_http_url(url).then(|| url.to_string())
}

/// An RFC 3339 time without the `T` and the milliseconds, as the page
/// shows it (the `short_time` filter; the page's script turns it into the
/// reader's local time).
pub fn short_time(rfc3339: &str) -> String {
    let mut short = rfc3339
        .split('.')
        .next()
        .unwrap_or(rfc3339)
        .replace('T', " ");
    if !short.ends_with('Z') {
        short.push('Z');
    }
    short
}

/// A state word as the page shows it (`circuit_open` reads "circuit open").
fn state_label(state: &str) -> String {
    match state {
        "circuit_open" => "circuit open".to_string(),
        other => other.to_string(),
    }
}

/// Prints a value: escaped with [`esc`] where the template is HTML (the
/// same escaping the page always had, so `/` stays `/`), and an error for
/// an undefined value rather than an empty string, so a misspelt name
/// fails the render tests instead of vanishing from the page.
fn formatter(out: &mut Output, state: &mut State, value: &Value) -> Result<(), Error> {
    if value.is_undefined() {
        return Err(Error::new(
            ErrorKind::UndefinedError,
            "a template printed an undefined value",
        ));
    }
    if value.is_none() {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "a template printed none (check it with `is none` first)",
        ));
    }
    let text = value.to_string();
    let text = if matches!(state.auto_escape(), AutoEscape::Html) && !value.is_safe() {
        esc(&text)
    } else {
        text
    };
    out.write_str(&text).map_err(Error::from)
}

fn build() -> Result<Environment<'static>, Error> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env.set_formatter(formatter);
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()?,
    );
    env.add_filter("seg", |s: &str| seg(s));
    env.add_filter("short_time", |s: &str| short_time(s));
    env.add_filter("state_label", |s: &str| state_label(s));
    env.add_global("version", env!("CARGO_PKG_VERSION"));
    for (name, source) in TEMPLATES {
        env.add_template(name, source)?;
    }
    Ok(env)
}

static ENV: LazyLock<Result<Environment<'static>, String>> = LazyLock::new(|| {
    build().map_err(|e| {
        tracing::error!(error = %e, "status page templates do not compile");
        format!("{e:#}")
    })
});

/// Builds the environment now (at start) and says whether every template
/// compiled.
pub fn check() -> Result<(), String> {
    ENV.as_ref().map(|_| ()).map_err(Clone::clone)
}

/// Renders template `name` with `ctx` to a string.
pub fn render_string(name: &str, ctx: &impl Serialize) -> Result<String, String> {
    let env = ENV.as_ref().map_err(Clone::clone)?;
    env.get_template(name)
        .and_then(|t| t.render(Serde(ctx)))
        .map_err(|e| format!("{e:#}"))
}

/// A page: template `name` rendered with `ctx`, or a plain-text 500 that
/// says the page could not be rendered (the cause goes to the log).
pub fn render(status: StatusCode, name: &str, ctx: &impl Serialize) -> Response {
    match render_string(name, ctx) {
        Ok(html) => harden(
            (
                status,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                html,
            )
                .into_response(),
        ),
        Err(e) => {
            tracing::error!(template = name, error = %e, "status page: a template failed");
            harden(
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    "internal error: the status page could not be rendered; the relay's log says why\n",
                )
                    .into_response(),
            )
        }
    }
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
    use serde_json::json;

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
            Some("https://portal/home?a=1&b=2")
        );
        assert!(safe_href("javascript:alert(1)").is_none());
        assert!(safe_href(" JaVaScRiPt:alert(1)").is_none());
        assert!(safe_href("data:text/html,x").is_none());
        assert!(safe_href("http://x\nonmouseover=y").is_none());
        assert!(safe_href("HTTP://x\" onmouseover=\"y").is_some());
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(seg("gis-team_1.x"), "gis-team_1.x");
        assert_eq!(seg("a/b?c"), "a%2Fb%3Fc");
    }

    #[test]
    fn times_are_short() {
        assert_eq!(
            short_time("2026-11-22T10:00:00.123Z"),
            "2026-11-22 10:00:00Z"
        );
        assert_eq!(short_time("2026-11-22T10:00:00"), "2026-11-22 10:00:00Z");
    }

    #[test]
    fn every_template_compiles() {
        check().unwrap();
        for (name, _) in TEMPLATES {
            ENV.as_ref().unwrap().get_template(name).unwrap();
        }
    }

    #[test]
    fn printed_values_are_escaped_and_undefined_ones_fail() {
        let mut env = build().unwrap();
        env.add_template("t.html", "<a title=\"{{ v }}\">{{ v }}</a>{{ v|seg }}")
            .unwrap();
        env.add_template("u.html", "{{ nope }}").unwrap();
        env.add_template("n.html", "{{ v }}").unwrap();
        let t = env.get_template("t.html").unwrap();
        let out = t.render(Serde(json!({"v": "<b>\"'&/"}))).unwrap();
        assert_eq!(
            out,
            "<a title=\"&lt;b&gt;&quot;&#39;&amp;/\">&lt;b&gt;&quot;&#39;&amp;/</a>%3Cb%3E%22%27%26%2F"
        );
        assert!(env
            .get_template("u.html")
            .unwrap()
            .render(Serde(json!({})))
            .is_err());
        assert!(env
            .get_template("n.html")
            .unwrap()
            .render(Serde(json!({"v": null})))
            .is_err());
    }

    #[test]
    fn a_failing_template_answers_a_plain_500() {
        let resp = render(StatusCode::OK, "no-such-template.html", &json!({}));
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        // A template that exists but lacks its data fails the same way.
        let resp = render(StatusCode::OK, "overview.html", &json!({}));
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
