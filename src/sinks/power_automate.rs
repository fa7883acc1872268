//! `power-automate`: the `http` kind preset for a flow's "When an HTTP
//! request is received" trigger. The flow gets JSON — the normalised
//! events by default (`format = "events"`), or the original ArcGIS body
//! with `format = "original"` for flows built on Esri's samples — and any
//! 2xx (the trigger answers 202 Accepted) is delivered.
//!
//! The trigger URL carries its credential in the `sig` query parameter;
//! like every sink URL it is shown only through
//! [`crate::config::redact_url`], and transport errors never include it.

use super::http::Http;
use super::{HttpKind, Outbound, RenderError};
use crate::config::{ConfigError, HttpFormat, HttpSpec};
use crate::store::Claimed;

/// The `power-automate` kind.
pub struct PowerAutomate {
    inner: Http,
}

impl PowerAutomate {
    /// From the sink's spec; `format` defaults to `events`.
    pub fn new(key: &str, spec: &HttpSpec) -> Result<PowerAutomate, ConfigError> {
        Ok(PowerAutomate {
            inner: Http::with_default_format(key, spec, HttpFormat::Events)?,
        })
    }
}

impl HttpKind for PowerAutomate {
    fn render(&self, d: &Claimed) -> Result<Outbound, RenderError> {
        self.inner.render(d)
    }
}
