//! Inbound authentication: HMAC signatures and shared secrets, compared in
//! constant time. Pure functions over bytes, so they are fuzzed and tested
//! without a server.

use base64::Engine;

use crate::config::{Secret, SigEncoding};
pub use crate::domain::crypto::{hmac_sha256, secret_matches, verify_hmac};

/// Longest signature header we look at. A SHA-256 digest is 44 characters
/// of base64 or 64 of hex; anything much longer is not a signature, and
/// refusing it early keeps a megabyte header from costing a decode.
pub const MAX_SIGNATURE_LEN: usize = 256;

/// Decodes an `x-esriHook-Signature` value into the 32-byte digest.
///
/// Esri's documents disagree on the encoding, so this accepts every form
/// seen: optionally percent-encoded, optionally prefixed with `sha256=`
/// (any case), then lowercase/uppercase hex or base64 (standard or URL-safe,
/// padded or not). Returns `None` for anything else.
pub fn decode_esri_signature(raw: &str) -> Option<Vec<u8>> {
    if raw.len() > MAX_SIGNATURE_LEN {
        return None;
    }
    let decoded;
    let mut s = raw.trim();
    if s.contains('%') {
        decoded = percent_encoding::percent_decode_str(s).decode_utf8().ok()?;
        s = decoded.trim();
    }
    if let Some(rest) = strip_prefix_ignore_case(s, "sha256=") {
        s = rest;
    }
    let digest = if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(s).ok()?
    } else {
        decode_base64(s)?
    };
    (digest.len() == 32).then_some(digest)
}

/// Decodes a signature with an explicit prefix and encoding (`hmac` sources).
pub fn decode_configured(raw: &str, prefix: &str, encoding: SigEncoding) -> Option<Vec<u8>> {
    if raw.len() > MAX_SIGNATURE_LEN {
        return None;
    }
    let s = raw.trim();
    let s = strip_prefix_ignore_case(s, prefix)?;
    let digest = match encoding {
        SigEncoding::Hex => hex::decode(s).ok()?,
        SigEncoding::Base64 => decode_base64(s)?,
    };
    (digest.len() == 32).then_some(digest)
}

/// `s` without a leading `prefix` (ASCII case ignored), or `None`.
///
/// Compared as bytes: slicing the `str` at `prefix.len()` panics when that
/// offset falls inside a multi-byte character, and a percent-decoded header
/// or a form field can hold any UTF-8 (found by `fuzz/` target `signature`).
fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.as_bytes().get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix.as_bytes()) {
        // The bytes equal `prefix` up to ASCII case, so this is a boundary.
        s.get(prefix.len()..)
    } else {
        None
    }
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(s).ok())
}

/// The ArcGIS Online challenge answer for `GET ?crc_token=T`:
/// `sha256=<base64 HMAC-SHA256(key, T)>`.
pub fn crc_response(key: &Secret, token: &str) -> String {
    let mac = hmac_sha256(key.expose().as_bytes(), token.as_bytes());
    format!(
        "sha256={}",
        base64::engine::general_purpose::STANDARD.encode(mac)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(key: &str, body: &[u8]) -> Vec<u8> {
        hmac_sha256(key.as_bytes(), body)
    }

    #[test]
    fn every_esri_encoding_decodes_to_the_same_digest() {
        let d = sig("k", b"body");
        let b64 = base64::engine::general_purpose::STANDARD.encode(&d);
        let hexed = hex::encode(&d);
        let forms = [
            b64.clone(),
            format!("sha256={b64}"),
            format!("SHA256={b64}"),
            hexed.clone(),
            hexed.to_uppercase(),
            format!("sha256={hexed}"),
            percent_encoding::utf8_percent_encode(
                &format!("sha256={b64}"),
                percent_encoding::NON_ALPHANUMERIC,
            )
            .to_string(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&d),
        ];
        for f in forms {
            assert_eq!(decode_esri_signature(&f).as_deref(), Some(&d[..]), "{f}");
        }
    }

    #[test]
    fn junk_does_not_decode() {
        for f in [
            "",
            "sha256=",
            "zzzz",
            "sha256=abc",
            &"a".repeat(5000),
            "%zz",
        ] {
            assert!(decode_esri_signature(f).is_none(), "{f}");
        }
    }

    #[test]
    fn rotation_list_accepts_either_key() {
        let secrets = vec![Secret::new("old"), Secret::new("new")];
        assert!(verify_hmac(&secrets, b"x", &sig("new", b"x")));
        assert!(verify_hmac(&secrets, b"x", &sig("old", b"x")));
        assert!(!verify_hmac(&secrets, b"x", &sig("other", b"x")));
        assert!(secret_matches(&secrets, b"old"));
        assert!(!secret_matches(&secrets, b"ol"));
    }

    #[test]
    fn multi_byte_text_where_the_prefix_would_end_is_refused() {
        // Byte 7 falls inside the third '€': this used to panic.
        for f in [
            "%E2%82%AC%E2%82%AC%E2%82%ACsha256=AAAA",
            "sha\u{fffd}\u{fffd}256=ybsybh",
            "€€€€€€€€",
        ] {
            assert_eq!(decode_esri_signature(f), None, "{f}");
            assert_eq!(
                decode_configured(f, "sha256=", SigEncoding::Hex),
                None,
                "{f}"
            );
            assert_eq!(decode_configured(f, "é=", SigEncoding::Base64), None, "{f}");
        }
    }

    #[test]
    fn configured_prefix_is_required() {
        let d = sig("k", b"b");
        let h = format!("sha256={}", hex::encode(&d));
        assert_eq!(
            decode_configured(&h, "sha256=", SigEncoding::Hex),
            Some(d.clone())
        );
        assert_eq!(
            decode_configured(&hex::encode(&d), "sha256=", SigEncoding::Hex),
            None
        );
    }
}
