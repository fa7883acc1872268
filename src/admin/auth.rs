//! Who may use the admin listener, and how the status page keeps its login.
//!
//! The JSON API takes only `Authorization: Bearer <token>`. A browser never
//! attaches that header on its own, so the API needs no cross-site request
//! protection.
//!
//! The status page asks for the token once and then keeps a session cookie
//! (HttpOnly, SameSite=Strict, Path=/). The cookie is not the token: it is a
//! random session id (32 bytes from the OS, base64url). The session itself
//! lives in the store, in `admin_sessions`: the SHA-256 of the id, a
//! fingerprint of the admin token it was opened with, and its expiry
//! ([`SESSION_TTL_SECS`] after login). Every page request looks the row up.
//!
//! Why server-side, when a MAC over an expiry (the previous scheme) needs no
//! table: a self-contained cookie cannot be taken back. Logging out only
//! cleared the browser's copy, so a copied cookie (a second tab, a shared
//! machine, a header in a log) stayed valid for the rest of its 12 hours.
//! With the row in the store:
//! - logout deletes the row, and every copy of the cookie stops working;
//! - expiry is the row's, checked on every request; expired rows are removed
//!   when found and by the retention purge;
//! - relays sharing a Postgres database share the sessions: a login on one
//!   works on the others (cookies ignore the port, so two relays on one host
//!   share one cookie jar), and a logout on any ends it on all;
//! - rotating the token still logs every browser out: a session whose token
//!   fingerprint (`HMAC(token, "hookrelay-session-fp")`, truncated) is not
//!   the current token's is refused and deleted;
//! - the store holds only hashes: reading `admin_sessions` gives no working
//!   cookie, and the fingerprint is not the token.
//!
//! A store that does not answer refuses the request with a clear error
//! (503), never lets it through.
//!
//! Every state-changing page request is checked twice, cheaply: the
//! browser's own `Sec-Fetch-Site` / `Origin` headers must say same-origin,
//! and the form must carry a CSRF token derived from the session id (so a
//! forged form cannot know it even where those headers are missing).

use axum::http::{header, HeaderMap};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::config::Secret;
use crate::domain::crypto::hmac_sha256;
use crate::store::{AdminSession, Millis, Store, StoreError};

/// Name of the status page's session cookie.
pub const SESSION_COOKIE: &str = "hookrelay_session";

/// How long a status page login lasts.
pub const SESSION_TTL_SECS: i64 = 12 * 3600;

/// Random bytes in a session id.
const SESSION_ID_BYTES: usize = 32;

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
            crate::domain::crypto::secret_matches(std::slice::from_ref(t), p.as_bytes())
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

/// A fresh random session id, as the cookie carries it.
fn new_session_id() -> String {
    let mut bytes = [0u8; SESSION_ID_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    b64(&bytes)
}

/// Whether a cookie value has the form of a session id; anything else
/// (an old `v1.` cookie, garbage) is refused without asking the store.
fn well_formed(value: &str) -> bool {
    value.len() == (SESSION_ID_BYTES * 4).div_ceil(3)
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What the store keeps instead of the id: its SHA-256, hex.
pub fn session_id_hash(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// Which token a session was opened with, without storing the token.
pub fn token_fingerprint(token: &Secret) -> String {
    let mac = hmac_sha256(token.expose().as_bytes(), b"hookrelay-session-fp");
    b64(&mac[..16])
}

/// Opens a session for a browser that presented `token`, valid until
/// `now + SESSION_TTL_SECS`; returns the cookie value (the session id).
pub async fn open_session(
    store: &dyn Store,
    token: &Secret,
    now: Millis,
) -> Result<String, StoreError> {
    let id = new_session_id();
    store
        .create_admin_session(&AdminSession {
            id_hash: session_id_hash(&id),
            token_fp: token_fingerprint(token),
            created_at: now,
            expires_at: now.after(std::time::Duration::from_secs(SESSION_TTL_SECS as u64)),
        })
        .await?;
    Ok(id)
}

/// Whether a session cookie value names a live session of the configured
/// token. A session of another token (the token was rotated) is deleted.
pub async fn session_ok(
    store: &dyn Store,
    token: Option<&Secret>,
    value: &str,
    now: Millis,
) -> Result<bool, StoreError> {
    let Some(token) = token else {
        return Ok(false);
    };
    if !well_formed(value) {
        return Ok(false);
    }
    let hash = session_id_hash(value);
    let Some(s) = store.admin_session(&hash, now).await? else {
        return Ok(false);
    };
    if !same(&s.token_fp, &token_fingerprint(token)) {
        // Opened with a previous token: refused either way, and no use to
        // anyone again; the purge removes it at expiry if this fails.
        if let Err(e) = store.delete_admin_session(&hash).await {
            tracing::warn!(error = %e, "cannot delete a session of a previous admin token");
        }
        return Ok(false);
    }
    Ok(true)
}

/// Ends the session a cookie value names, on every relay of this store.
pub async fn end_session(store: &dyn Store, value: &str) -> Result<(), StoreError> {
    if well_formed(value) {
        store.delete_admin_session(&session_id_hash(value)).await?;
    }
    Ok(())
}

/// The CSRF token that the page's forms carry for this session.
pub fn csrf_for(token: &Secret, session: &str) -> String {
    b64(&hmac_sha256(
        token.expose().as_bytes(),
        format!("hookrelay-csrf:v2:{session}").as_bytes(),
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
    fn session_ids_are_random_and_stored_only_as_hashes() {
        let a = new_session_id();
        let b = new_session_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43, "{a}");
        assert!(well_formed(&a) && well_formed(&b));
        let h = session_id_hash(&a);
        assert_eq!(h.len(), 64);
        assert_eq!(h, session_id_hash(&a));
        assert!(!h.contains(&a));
        for bad in [
            "",
            "v1.1796203086.QzAt7sy9oamI3FP0jZXWf_Q2Kzow2if1GdNi3LLLGuk",
            &a[1..],
            &format!("{a}A"),
            &a.replacen(|c: char| c.is_ascii_alphanumeric(), "+", 1),
        ] {
            assert!(!well_formed(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_fingerprint_names_the_token_without_being_it() {
        let fp = token_fingerprint(&token());
        assert_eq!(fp, token_fingerprint(&token()));
        assert_ne!(fp, token_fingerprint(&Secret::new("admin-token-124")));
        assert!(!fp.contains("admin-token"));
    }

    #[test]
    fn csrf_is_bound_to_the_session() {
        let a = new_session_id();
        let b = new_session_id();
        let t = csrf_for(&token(), &a);
        assert!(csrf_ok(Some(&token()), &a, Some(&t)));
        assert!(!csrf_ok(Some(&token()), &b, Some(&t)));
        assert!(!csrf_ok(Some(&Secret::new("other")), &a, Some(&t)));
        assert!(!csrf_ok(None, &a, Some(&t)));
        assert!(!csrf_ok(Some(&token()), &a, None));
        assert!(!csrf_ok(Some(&token()), &a, Some("")));
    }

    #[test]
    fn cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; hookrelay_session=abc_-9; b=3"),
        );
        assert_eq!(session_cookie(&h), Some("abc_-9"));
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
