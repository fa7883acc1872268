//! Value types used by the configuration: secrets that never print, durations
//! written as "5s", and the `env:`/`file:` references any string may use.

use std::fmt;
use std::time::Duration;

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

/// One secret or several: a list lets an administrator rotate a secret
/// without downtime (add the new one, change ArcGIS, remove the old one).
#[derive(Clone, Debug, Default, Serialize)]
#[serde(transparent)]
pub struct Secrets(pub Vec<Secret>);

impl<'de> Deserialize<'de> for Secrets {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(Secret),
            Many(Vec<Secret>),
        }
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) => Secrets(vec![s]),
            OneOrMany::Many(v) => Secrets(v),
        })
    }
}

/// A duration written the human way: "200ms", "5s", "1h", "7d".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    /// Seconds.
    pub const fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }
    /// Milliseconds as a signed integer, the unit the store uses.
    pub fn as_millis_i64(&self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map(Dur).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?} ({e}); write it like \"200ms\", \"5s\", \"1h\""
            ))
        })
    }
}

/// Why a `env:`/`file:` reference could not be resolved. The key path names
/// where in the file the reference stands.
#[derive(Debug, thiserror::Error)]
pub enum RefError {
    /// `env:NAME` with NAME unset.
    #[error("{key}: environment variable {name} is not set")]
    MissingEnv { key: String, name: String },
    /// `file:/path` that cannot be read.
    #[error("{key}: cannot read file {path}: {reason}")]
    File {
        key: String,
        path: String,
        reason: String,
    },
}

/// Replaces every string of the form `env:NAME` or `file:/path` anywhere in
/// the TOML tree with what it names. Runs before typed deserialisation, so
/// every key — not only the ones we think of as secret — may use it.
pub fn resolve_refs(value: &mut toml::Value, key: &str) -> Result<(), RefError> {
    match value {
        toml::Value::String(s) => {
            if let Some(name) = s.strip_prefix("env:") {
                let v = std::env::var(name).map_err(|_| RefError::MissingEnv {
                    key: key.to_string(),
                    name: name.to_string(),
                })?;
                *s = v;
            } else if let Some(path) = s.strip_prefix("file:") {
                let v = std::fs::read_to_string(path).map_err(|e| RefError::File {
                    key: key.to_string(),
                    path: path.to_string(),
                    reason: e.kind().to_string(),
                })?;
                // Files written by editors and `echo` end with a newline that
                // is never part of the secret.
                *s = v.trim_end_matches(['\n', '\r']).to_string();
            }
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                resolve_refs(item, &format!("{key}[{i}]"))?;
            }
        }
        toml::Value::Table(table) => {
            for (k, v) in table.iter_mut() {
                let path = if key.is_empty() {
                    k.clone()
                } else {
                    format!("{key}.{k}")
                };
                resolve_refs(v, &path)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// A URL with its credentials hidden: user-info and the query parameters
/// that carry keys in webhook URLs (`sig`, `key`, `code`, `token`, ...).
/// Used wherever a sink URL is logged, returned by the API or printed.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut url) = reqwest::Url::parse(raw) else {
        // Not a URL we can take apart: show nothing of it rather than risk it.
        return REDACTED.to_string();
    };
    if !url.username().is_empty() || url.password().is_some() {
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let _ = url.set_username(REDACTED);
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let secret = SECRET_QUERY_KEYS.iter().any(|s| k.eq_ignore_ascii_case(s));
                let v = if secret {
                    REDACTED.to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    // Slack and Teams put the credential in the path itself
    // (hooks.slack.com/services/T/B/XXXX); keep only the host for those.
    if let Some(host) = url.host_str() {
        if host.ends_with("hooks.slack.com") || host.contains("webhook.office.com") {
            url.set_path("/[redacted]");
        }
    }
    url.to_string()
}

const SECRET_QUERY_KEYS: &[&str] = &[
    "sig",
    "key",
    "code",
    "token",
    "access_token",
    "api_key",
    "apikey",
    "secret",
    "password",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"[redacted]\"");
    }

    #[test]
    fn url_credentials_are_hidden() {
        let u = redact_url(
            "https://user:pw@prod.example.com/workflows/run?api-version=1&sig=abc&code=x",
        );
        assert!(
            !u.contains("abc") && !u.contains("pw") && !u.contains("=x"),
            "{u}"
        );
        assert!(u.contains("api-version=1"), "{u}");
        assert_eq!(redact_url("not a url sig=1"), REDACTED);
    }

    #[test]
    fn durations_parse_and_print() {
        let d: Dur = serde_json::from_str("\"1h\"").unwrap();
        assert_eq!(d.0, Duration::from_secs(3600));
        assert!(serde_json::from_str::<Dur>("\"soon\"").is_err());
    }
}
