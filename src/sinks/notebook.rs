//! `notebook`: an ArcGIS Notebook Server webhook receiver (11.4+), so
//! ArcGIS events start notebooks through the relay. The receiver checks a
//! Base64 HMAC-SHA256 of the body under its 32-character secret in the
//! signature header it was created with; the relay sends the original
//! body, re-signed with that secret, in that header.

use base64::Engine;

use super::{HttpKind, Outbound, RenderError};
use crate::config::{ConfigError, NotebookSpec, Secret};
use crate::domain::crypto::hmac_sha256;
use crate::store::Claimed;

/// The header Notebook Server receivers check unless created with another.
pub const DEFAULT_HEADER: &str = "x-esrihook-signature";
/// Notebook Server's secret length.
pub const SECRET_CHARS: usize = 32;

/// The `notebook` kind.
pub struct Notebook {
    key: Vec<u8>,
    header: String,
    prefix: String,
}

/// Checks a receiver secret: exactly 32 characters, as Notebook Server requires.
pub fn check_secret(secret: &Secret) -> Result<&[u8], String> {
    let n = secret.expose().chars().count();
    if n != SECRET_CHARS {
        return Err(format!(
            "a notebook secret must be exactly {SECRET_CHARS} characters (this one has {n})"
        ));
    }
    Ok(secret.expose().as_bytes())
}

impl Notebook {
    /// From the sink's spec: checks the signature header's name and the
    /// secret's length.
    pub fn new(key: &str, spec: &NotebookSpec) -> Result<Notebook, ConfigError> {
        let bad = |k: &str, m: String| ConfigError::Invalid {
            key: format!("{key}.{k}"),
            message: m,
        };
        let header = spec
            .signature_header
            .clone()
            .unwrap_or_else(|| DEFAULT_HEADER.to_string());
        ::http::HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
            bad(
                "signature_header",
                format!("{header:?} is not a valid header name"),
            )
        })?;
        let secret = check_secret(&spec.secret).map_err(|m| bad("secret", m))?;
        Ok(Notebook {
            key: secret.to_vec(),
            header,
            prefix: spec.signature_prefix.clone().unwrap_or_default(),
        })
    }

    /// The signature header's value for `body`.
    pub fn signature(&self, body: &[u8]) -> String {
        let mac = hmac_sha256(&self.key, body);
        format!(
            "{}{}",
            self.prefix,
            base64::engine::general_purpose::STANDARD.encode(mac)
        )
    }
}

impl HttpKind for Notebook {
    fn render(&self, d: &Claimed) -> Result<Outbound, RenderError> {
        Ok(Outbound {
            method: ::http::Method::POST,
            headers: vec![
                ("content-type".into(), d.content_type.clone()),
                ("webhook-id".into(), d.id.to_string()),
                (self.header.clone(), self.signature(&d.body)),
            ],
            body: d.body.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_must_be_32_characters() {
        assert!(check_secret(&Secret::new("a".repeat(32))).is_ok());
        let e = check_secret(&Secret::new("a".repeat(31))).unwrap_err();
        assert!(e.contains("exactly 32") && !e.contains("aaaa"), "{e}");
    }
}
