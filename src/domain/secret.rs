//! Credentials as values that never print.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Text printed instead of a secret in logs, errors, API answers and `check`.
pub const REDACTED: &str = "[redacted]";

/// A credential from the configuration. `Debug`, `Display` and `Serialize`
/// all print [`REDACTED`], so a secret cannot leak through a log line or the
/// output of `hookrelay check` by accident; only [`Secret::expose`] reads it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value read from the configuration.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the few places that sign or compare with it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Err(serde::de::Error::custom("a secret may not be empty"));
        }
        Ok(Secret(s))
    }
}
