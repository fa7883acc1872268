//! Outbound signatures, so a receiver can check a delivery came from the relay.

use base64::Engine;

use crate::config::{Secret, SignScheme};
use crate::domain::crypto::hmac_sha256;

/// The key bytes for a scheme: standard-webhooks secrets are base64 with an
/// optional `whsec_` prefix; the others use the secret's bytes as they are.
pub fn signing_key(scheme: SignScheme, secret: &Secret) -> Result<Vec<u8>, String> {
    match scheme {
        SignScheme::StandardWebhooks => {
            let s = secret.expose();
            let s = s.strip_prefix("whsec_").unwrap_or(s);
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| {
                    "a standard-webhooks secret must be base64 (optionally prefixed whsec_)"
                        .to_string()
                })
        }
        SignScheme::Arcgis | SignScheme::Github => Ok(secret.expose().as_bytes().to_vec()),
    }
}

/// Headers carrying the signature of `body` for delivery `id` at `timestamp` (Unix seconds).
pub fn signature_headers(
    scheme: SignScheme,
    key: &[u8],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let b64 = |d: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(d);
    match scheme {
        SignScheme::StandardWebhooks => {
            let mut signed = Vec::with_capacity(body.len() + id.len() + 24);
            signed.extend_from_slice(id.as_bytes());
            signed.push(b'.');
            signed.extend_from_slice(timestamp.to_string().as_bytes());
            signed.push(b'.');
            signed.extend_from_slice(body);
            vec![
                ("webhook-timestamp", timestamp.to_string()),
                (
                    "webhook-signature",
                    format!("v1,{}", b64(hmac_sha256(key, &signed))),
                ),
            ]
        }
        SignScheme::Arcgis => vec![(
            "x-esrihook-signature",
            format!("sha256={}", b64(hmac_sha256(key, body))),
        )],
        SignScheme::Github => vec![(
            "x-hub-signature-256",
            format!("sha256={}", hex::encode(hmac_sha256(key, body))),
        )],
    }
}
