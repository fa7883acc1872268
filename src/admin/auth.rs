//! Who may use the admin listener, and how the status page keeps its login.
//!
//! The JSON API takes only `Authorization: Bearer <token>`. A browser never
//! attaches that header on its own, so the API needs no cross-site request
//! protection.
//!
//! The status page asks for the token once and then keeps a session cookie
//! (HttpOnly, SameSite=Strict). The cookie is not the token: it is
//! `v1.<expiry>.<HMAC-SHA256(token, "hookrelay-session:v1:<expiry>")>`.
//! Keying the MAC with the token itself, rather than with a per-process
//! random key, means:
//! - the cookie reveals nothing that logs in anywhere else (a stolen cookie
//!   is not the bearer token, and it expires after [`SESSION_TTL_SECS`]);
//! - rotating the token logs every browser out, as it should;
//! - sessions survive a restart and work on every relay sharing the token
//!   (cookies ignore the port, so two relays on one host share one cookie
//!   jar; a per-process key would make them log each other out).
//!
//! Every state-changing page request is checked twice, cheaply: the
//! browser's own `Sec-Fetch-Site` / `Origin` headers must say same-origin,
//! and the form must carry a CSRF token derived from the session (so a
//! forged form cannot know it even where those headers are missing).

use axum::http::{header, HeaderMap};
use base64::Engine;

use crate::config::Secret;
use crate::ingress::signature::hmac_sha256;

/// Name of the status page's session cookie.
pub const SESSION_COOKIE: &str = "hookrelay_session";

/// How long a status page login lasts.
pub const SESSION_TTL_SECS: i64 = 12 * 3600;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Constant-time equality of two short strings.
fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Constant-time check of a presented bearer token.
pub fn token_ok(configured: Option<&Secret>, presented: Option<&str>) -> bool {
    match (configured, presented) {
        (Some(t), Some(p)) => {
            crate::ingress::signature::secret_matches(std::slice::from_ref(t), p.as_bytes())
        }
        _ => false,
    }
}

/// The bearer token of a request, if it sent one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
}

fn session_mac(token: &Secret, expiry: i64) -> String {
    b64(&hmac_sha256(
        token.expose().as_bytes(),
        format!("hookrelay-session:v1:{expiry}").as_bytes(),
    ))
}

/// A fresh session cookie value, valid until `now_s + SESSION_TTL_SECS`.
pub fn new_session(token: &Secret, now_s: i64) -> String {
    let expiry = now_s + SESSION_TTL_SECS;
    format!("v1.{expiry}.{}", session_mac(token, expiry))
}

/// Whether a session cookie value was issued under `token` and has not expired.
pub fn session_ok(token: Option<&Secret>, value: &str, now_s: i64) -> bool {
    let Some(token) = token else {
        return false;
    };
    let mut parts = value.splitn(3, '.');
    let (Some("v1"), Some(expiry), Some(mac)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Ok(expiry) = expiry.parse::<i64>() else {
        return false;
    };
    // A MAC from the future beyond one TTL was not issued by us.
    if expiry <= now_s || expiry > now_s + SESSION_TTL_SECS {
        return false;
    }
    same(mac, &session_mac(token, expiry))
}

/// The CSRF token that the page's forms carry for this session.
pub fn csrf_for(token: &Secret, session: &str) -> String {
    b64(&hmac_sha256(
        token.expose().as_bytes(),
        format!("hookrelay-csrf:v1:{session}").as_bytes(),
    ))
}

/// Whether a form's CSRF token belongs to this session.
pub fn csrf_ok(token: Option<&Secret>, session: &str, presented: Option<&str>) -> bool {
    match (token, presented) {
        (Some(t), Some(p)) => same(p, &csrf_for(t, session)),
        _ => false,
    }
}

/// The session cookie's value in a request, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v)
}

/// The `Set-Cookie` value that starts a session. `secure` adds the Secure
/// attribute: set when a TLS proxy in front says the page came over HTTPS
/// (the listener itself speaks plain HTTP, where Secure cookies are dropped).
pub fn set_cookie(value: &str, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_TTL_SECS}{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that ends a session.
pub fn clear_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Whether the request came through a TLS-terminating proxy.
pub fn via_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// Whether a state-changing request comes from a page of this same origin,
/// as far as the browser says. Browsers send `Sec-Fetch-Site` (and `Origin`
/// on POST); a request without either is not from a modern browser's
/// cross-site form, and still has to pass the CSRF token check.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site") {
        if site != "same-origin" {
            return false;
        }
    }
    if let Some(origin) = get("origin") {
        let Some(host) = get("host") else {
            return false;
        };
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        // "null" (sandboxed frames, some redirects) is never same-origin.
        return authority.is_some_and(|a| a.eq_ignore_ascii_case(host));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn token() -> Secret {
        Secret::new("admin-token-123")
    }

    #[test]
    fn session_round_trip_and_expiry() {
        let s = new_session(&token(), 1000);
        assert!(session_ok(Some(&token()), &s, 1000));
        assert!(session_ok(Some(&token()), &s, 1000 + SESSION_TTL_SECS - 1));
        assert!(
            !session_ok(Some(&token()), &s, 1000 + SESSION_TTL_SECS),
            "expired"
        );
        assert!(
            !session_ok(Some(&Secret::new("other")), &s, 1000),
            "token rotated"
        );
        assert!(!session_ok(None, &s, 1000), "no token configured");
        assert!(
            !s.contains("admin-token-123"),
            "the cookie is not the token"
        );
    }

    #[test]
    fn forged_sessions_fail() {
        let s = new_session(&token(), 1000);
        let (head, _) = s.rsplit_once('.').unwrap_or_default();
        for bad in [
            "",
            "v1",
            "v1.x.y",
            &format!("{head}.AAAA"),
            &s.replacen("v1.", "v2.", 1),
            // Moving the expiry invalidates the MAC.
            &s.replacen(
                &(1000 + SESSION_TTL_SECS).to_string(),
                &(2000 + SESSION_TTL_SECS).to_string(),
                1,
            ),
        ] {
            assert!(!session_ok(Some(&token()), bad, 1000), "{bad:?}");
        }
        // A far-future expiry is refused even with a valid MAC.
        let far = 1000 + 10 * SESSION_TTL_SECS;
        let v = format!("v1.{far}.{}", session_mac(&token(), far));
        assert!(!session_ok(Some(&token()), &v, 1000));
    }

    #[test]
    fn csrf_is_bound_to_the_session() {
        let a = new_session(&token(), 1000);
        let b = new_session(&token(), 1001);
        let t = csrf_for(&token(), &a);
        assert!(csrf_ok(Some(&token()), &a, Some(&t)));
        assert!(!csrf_ok(Some(&token()), &b, Some(&t)));
        assert!(!csrf_ok(Some(&token()), &a, None));
        assert!(!csrf_ok(Some(&token()), &a, Some("")));
    }

    #[test]
    fn cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; hookrelay_session=v1.2.x; b=3"),
        );
        assert_eq!(session_cookie(&h), Some("v1.2.x"));
        assert!(set_cookie("v", false).contains("HttpOnly; SameSite=Strict"));
        assert!(set_cookie("v", true).ends_with("; Secure"));
    }

    #[test]
    fn origin_checks() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert!(same_origin(&h(&[("host", "127.0.0.1:9090")])));
        assert!(same_origin(&h(&[
            ("host", "127.0.0.1:9090"),
            ("origin", "http://127.0.0.1:9090"),
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(!same_origin(&h(&[
            ("host", "127.0.0.1:9090"),
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(!same_origin(&h(&[
            ("host", "127.0.0.1:9090"),
            ("sec-fetch-site", "same-site")
        ])));
        assert!(!same_origin(&h(&[
            ("host", "127.0.0.1:9090"),
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&h(&[
            ("host", "127.0.0.1:9090"),
            ("origin", "null")
        ])));
    }
}
