//! The form-encoded payload extractor (`payload=<json>&x-esriHook-Signature=...`).
//!
//! Properties:
//! - never panics;
//! - on success, `signed` is a slice of the raw body (the still-encoded
//!   value ArcGIS signed) and `json` is exactly its form decoding;
//! - a body made with a standard form encoder round-trips: the decoded
//!   `json` is the original bytes, and a signature field comes back intact;
//! - two `payload` fields are always refused.
#![no_main]

use hookrelay::arcgis::payload::extract_form;
use libfuzzer_sys::fuzz_target;

fn form_decode(v: &[u8]) -> Vec<u8> {
    // An independent decoder: '+' is a space, `%XX` a byte, and a malformed
    // escape stays as it is (as percent_encoding does).
    fn hexval(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' && i + 2 < v.len() {
            if let (Some(h), Some(l)) = (hexval(v[i + 1]), hexval(v[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(if v[i] == b'+' { b' ' } else { v[i] });
        i += 1;
    }
    out
}

fn is_subslice(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = extract_form(data) {
        assert!(
            is_subslice(data, &f.signed),
            "signed bytes are not from the body"
        );
        assert_eq!(
            f.json,
            form_decode(&f.signed),
            "json is not the decoded payload"
        );
        assert!(
            !f.signed.contains(&b'&'),
            "a field value cannot contain '&'"
        );
    }

    // Round trip through a real form encoder.
    let (sig, payload) = match data.iter().position(|b| *b == 0) {
        Some(i) => (
            Some(String::from_utf8_lossy(&data[..i]).into_owned()),
            &data[i + 1..],
        ),
        None => (None, data),
    };
    let mut ser = form_urlencoded::Serializer::new(String::new());
    ser.append_pair("other", "x");
    // append_pair takes &str, so encode the payload bytes by hand.
    let encoded: String = form_urlencoded::byte_serialize(payload).collect();
    let mut body = format!("{}&payload={encoded}", ser.finish());
    if let Some(s) = &sig {
        let s: String = form_urlencoded::byte_serialize(s.as_bytes()).collect();
        body.push_str("&X-EsriHook-Signature=");
        body.push_str(&s);
    }
    let f = extract_form(body.as_bytes()).expect("an encoder's form extracts");
    assert_eq!(f.json, payload, "payload does not round-trip");
    assert_eq!(
        f.signed,
        encoded.as_bytes(),
        "signed bytes are the raw encoded value"
    );
    assert_eq!(f.signature, sig, "signature field does not round-trip");

    let twice = format!("payload=a&{body}");
    assert!(
        extract_form(twice.as_bytes()).is_err(),
        "two payload fields accepted"
    );
});
