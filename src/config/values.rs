//! Value types used by the configuration: secrets that never print, durations
//! written as "5s", and the `env:`/`file:` references any string may use.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::domain::secret::{Secret, REDACTED};

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

/// A URL with its credentials hidden, wherever it is logged, returned by
/// the API or printed (`hookrelay check`, `send-test`, attempt errors):
///
/// - user-info (`user:password@`) is replaced;
/// - query parameters named like a credential (`sig`, `code`, anything
///   containing `password`, `secret`, `token`, `key`, `auth`, ...: so
///   Postgres' `password`, `sslpassword` and `sslkey` too) are replaced, and
///   so is any query value that looks like one (see below);
/// - Slack and Teams webhook hosts (compared case-insensitively, a trailing
///   dot ignored) have their whole path replaced: the credential is the path;
/// - on any other host, each path segment that looks like a credential is
///   replaced (Discord-style `/api/webhooks/<id>/<token>`, Azure workflow
///   ids): 16 characters or more mixing letters and digits, or 24 or more
///   of the base64/hex alphabet. Ordinary words (`workflows`, `api`,
///   `hooks`, `v1`) stay readable. A Postgres URL keeps its path, which is
///   the database name;
/// - a fragment is replaced.
///
/// A text that does not parse as a URL is replaced whole.
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
    if let Some(q) = url.query() {
        let q = redact_query(q);
        url.set_query(Some(&q));
    }
    if url.fragment().is_some_and(|f| !f.is_empty()) {
        url.set_fragment(Some(REDACTED));
    }
    let host = url
        .host_str()
        .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
        .unwrap_or_default();
    if credential_in_path_host(&host) {
        url.set_path(&format!("/{REDACTED}"));
    } else if !matches!(url.scheme(), "postgres" | "postgresql") && !url.cannot_be_a_base() {
        let path = url.path().to_string();
        let masked: Vec<&str> = path
            .split('/')
            .map(|seg| {
                if looks_like_credential(&percent_decoded(seg)) {
                    REDACTED
                } else {
                    seg
                }
            })
            .collect();
        url.set_path(&masked.join("/"));
    }
    url.to_string()
}

/// Serialises a URL through [`redact_url`]: proxy and sink URLs may carry
/// credentials (`http://user:password@proxy:3128`, `?sig=`).
pub(crate) fn ser_opt_url<S: Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(u) => s.serialize_str(&redact_url(u)),
        None => s.serialize_none(),
    }
}

/// Serialises a sink or store URL through [`redact_url`]; a SQLite URL is a
/// file path with nothing to hide, and shown as written.
pub(crate) fn ser_url<S: Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    if url.starts_with("sqlite:") {
        return s.serialize_str(url);
    }
    s.serialize_str(&redact_url(url))
}

/// Hosts whose webhook URLs carry the credential as the path itself
/// (`hooks.slack.com/services/T/B/XXXX`, Teams connector URLs).
fn credential_in_path_host(host: &str) -> bool {
    host.ends_with("hooks.slack.com")
        || host.ends_with("hooks.slack-gov.com")
        || host.contains("webhook.office.com")
        || host == "outlook.office.com"
        || host == "outlook.office365.com"
}

/// The query with credential parameters replaced; everything else is kept
/// as it was written.
fn redact_query(q: &str) -> String {
    q.split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = form_decoded(k).to_ascii_lowercase();
            let secret = SECRET_QUERY_KEYS.contains(&key.as_str())
                || SECRET_QUERY_WORDS.iter().any(|w| key.contains(w))
                || looks_like_credential(&form_decoded(v))
                || (v.is_empty() && looks_like_credential(&key));
            match (secret, pair.contains('=')) {
                // The same encoding of the placeholder as before, so output
                // stays stable: `sig=%5Bredacted%5D`.
                (true, true) => format!("{k}=%5Bredacted%5D"),
                (true, false) => "%5Bredacted%5D".to_string(),
                (false, _) => pair.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Whether a path segment or query value looks like a random credential
/// rather than a word: 16+ characters mixing letters and digits, or 24+
/// characters of the base64/hex alphabet.
fn looks_like_credential(s: &str) -> bool {
    let len = s.chars().count();
    let letters = s.chars().any(|c| c.is_alphabetic());
    let digits = s.chars().any(|c| c.is_ascii_digit());
    (len >= 16 && letters && digits)
        || (len >= 24
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_+/=".contains(&b)))
}

/// `%XX` decoded (what the segment says, not how it was escaped).
fn percent_decoded(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A query key or value decoded the way forms encode (`+` is a space).
fn form_decoded(s: &str) -> String {
    percent_decoded(&s.replace('+', " "))
}

/// Query parameters that are credentials whatever their value.
const SECRET_QUERY_KEYS: &[&str] = &["sig", "code", "pw", "pwd", "pass"];

/// Words that make any query parameter containing them a credential
/// (`sslpassword`, `access_token`, `api_key`, `client_secret`, ...).
const SECRET_QUERY_WORDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "key",
    "auth",
    "signature",
    "credential",
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
    fn slack_and_teams_paths_are_hidden_however_the_host_is_written() {
        for raw in [
            "https://hooks.slack.com/services/T0ABC1234/B0DEF5678/slackPathSecret",
            "https://hooks.slack.com./services/T0ABC1234/B0DEF5678/slackPathSecret",
            "https://HOOKS.Slack.COM./services/T0ABC1234/B0DEF5678/slackPathSecret",
            "https://hooks.slack.com:443/services/T0ABC1234/B0DEF5678/slackPathSecret",
            "https://contoso.webhook.office.com./webhookb2/g@t/IncomingWebhook/slackPathSecret/x",
        ] {
            let u = redact_url(raw);
            assert!(
                !u.contains("slackPathSecret")
                    && !u.contains("B0DEF5678")
                    && !u.contains("webhookb2"),
                "{raw} -> {u}"
            );
            assert!(u.ends_with("/[redacted]"), "{raw} -> {u}");
        }
    }

    #[test]
    fn token_like_path_segments_are_masked_and_words_kept() {
        let token = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789_-AbCdEfGhIjKlMnOpQrStUvWxYz012345";
        let u = redact_url(&format!(
            "https://discord.com/api/webhooks/123456789012345678/{token}"
        ));
        assert_eq!(
            u,
            "https://discord.com/api/webhooks/123456789012345678/[redacted]"
        );
        for (raw, hidden) in [
            // Letters and digits, 16 or more.
            ("https://h.example/hooks/v1/abc123def456ghi7/run", "abc123def456ghi7"),
            // 24 or more of the base64 alphabet, even without digits.
            ("https://h.example/in/QWERTYUIOPasdfghjklZXCVBnm", "QWERTYUIOPasdfghjklZXCVBnm"),
            // A hex id (Azure Logic Apps workflow).
            (
                "https://prod-00.westeurope.logic.azure.com/workflows/6cd80cb32d4a4b4d858a020e57fba7b1/triggers/manual/paths/invoke",
                "6cd80cb32d4a4b4d858a020e57fba7b1",
            ),
            // Escaped does not help.
            ("https://h.example/x/abc%31%32%33def456ghi789", "def456ghi789"),
        ] {
            let u = redact_url(raw);
            assert!(!u.contains(hidden), "{raw} -> {u}");
        }
        let u = redact_url(
            "https://prod-00.westeurope.logic.azure.com/workflows/6cd80cb32d4a4b4d858a020e57fba7b1/triggers/manual/paths/invoke?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=s3cr3t",
        );
        assert_eq!(
            u,
            "https://prod-00.westeurope.logic.azure.com/workflows/[redacted]/triggers/manual/paths/invoke\
             ?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=%5Bredacted%5D"
        );
        let plain =
            "https://hooks.example.org/api/webhooks/workflows/v1/hooks/receive-arcgis-events";
        assert_eq!(redact_url(plain), plain, "ordinary words stay");
    }

    #[test]
    fn postgres_urls_hide_every_password_and_key_parameter() {
        let u = redact_url(
            "postgres://relay:user-pw@db.internal:5432/hookrelay_prod_2026?sslmode=verify-full\
             &sslpassword=ssl-pw&password=query-pw&sslkey=/etc/keys/client.key&PassWord=mixed-case\
             &client_secret=cs&application_name=hookrelay",
        );
        for hidden in [
            "user-pw",
            "relay:",
            "ssl-pw",
            "query-pw",
            "client.key",
            "mixed-case",
            "=cs",
        ] {
            assert!(!u.contains(hidden), "{hidden}: {u}");
        }
        for kept in [
            "@db.internal:5432/hookrelay_prod_2026?",
            "sslmode=verify-full",
            "application_name=hookrelay",
            "sslpassword=%5Bredacted%5D",
        ] {
            assert!(u.contains(kept), "{kept}: {u}");
        }
        // Query values that look like credentials go whatever their name.
        let u = redact_url("https://h.example/in?x=AbCdEf0123456789xyz&page=2");
        assert_eq!(u, "https://h.example/in?x=%5Bredacted%5D&page=2");
        assert!(!redact_url("https://h.example/in#access_token=abc").contains("abc"));
    }

    #[test]
    fn durations_parse_and_print() {
        let d: Dur = serde_json::from_str("\"1h\"").unwrap();
        assert_eq!(d.0, Duration::from_secs(3600));
        assert!(serde_json::from_str::<Dur>("\"soon\"").is_err());
    }
}
