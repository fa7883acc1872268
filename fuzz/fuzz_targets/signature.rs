//! `x-esriHook-Signature` and `hmac`-source signature decoding.
//!
//! The input is the header value as a client could send it (lossy UTF-8:
//! over HTTP the relay only sees visible ASCII, but a percent-encoded value
//! or a form field decodes to any UTF-8, so the decoder must cope with it).
//!
//! Properties:
//! - neither decoder panics, whatever the input;
//! - each returns `None` or exactly 32 bytes (a SHA-256 digest);
//! - nothing longer than `MAX_SIGNATURE_LEN` is decoded;
//! - every encoding ArcGIS or a GitHub-style signer may use, of a digest
//!   made from the input, decodes back to that digest.
#![no_main]

use base64::Engine;
use hookrelay::config::SigEncoding;
use hookrelay::ingress::signature::{decode_configured, decode_esri_signature, MAX_SIGNATURE_LEN};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

const PREFIXES: &[&str] = &["sha256=", "", "v1,", "SHA256=", "é=", "sha256"];

fn check(raw: &str) {
    let esri = decode_esri_signature(raw);
    assert!(
        esri.as_ref().is_none_or(|d| d.len() == 32),
        "esri decode gave {esri:?}"
    );
    if raw.len() > MAX_SIGNATURE_LEN {
        assert!(esri.is_none(), "over-long value decoded");
    }
    for prefix in PREFIXES {
        for enc in [SigEncoding::Hex, SigEncoding::Base64] {
            let d = decode_configured(raw, prefix, enc);
            assert!(
                d.as_ref().is_none_or(|d| d.len() == 32),
                "configured decode gave {d:?}"
            );
            if raw.len() > MAX_SIGNATURE_LEN {
                assert!(d.is_none(), "over-long value decoded");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    check(&raw);

    // Round trip: a digest derived from the input, in every accepted form.
    let digest = Sha256::digest(data).to_vec();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&digest);
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest);
    let hexed = hex::encode(&digest);
    let pct: String = form_urlencoded::byte_serialize(format!("sha256={b64}").as_bytes()).collect();
    for form in [
        b64.clone(),
        format!("sha256={b64}"),
        format!(" SHA256={b64} "),
        b64url,
        hexed.clone(),
        hexed.to_uppercase(),
        format!("sha256={hexed}"),
        pct,
    ] {
        assert_eq!(
            decode_esri_signature(&form).as_deref(),
            Some(&digest[..]),
            "{form}"
        );
    }
    assert_eq!(
        decode_configured(&format!("sha256={hexed}"), "sha256=", SigEncoding::Hex).as_deref(),
        Some(&digest[..])
    );
    assert_eq!(
        decode_configured(&format!("v1,{b64}"), "v1,", SigEncoding::Base64).as_deref(),
        Some(&digest[..])
    );
    // The digest with the input glued on is not a signature.
    if !data.is_empty() && !data.iter().all(|b| b.is_ascii_whitespace()) {
        let glued = format!("sha256={hexed}{raw}");
        if let Some(d) = decode_esri_signature(&glued) {
            assert_eq!(d.len(), 32);
        }
    }
});
