//! `[sources.arcgis]`: how an `arcgis-service` source fetches the edits
//! a webhook's `changesUrl` points at — which services it may call, with
//! which credential, and within which bounds. Data and checks only; the
//! fetcher is built in `enrich`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{ser_opt_url, Dur, Secret};
use super::{egress, invalid, ConfigError};

/// ArcGIS Online's OAuth token endpoint, the default `token_url` for
/// client credentials.
pub const DEFAULT_OAUTH_TOKEN_URL: &str = "https://www.arcgis.com/sharing/rest/oauth2/token";

/// Largest `page_size`: ArcGIS's usual `maxRecordCount` for hosted layers.
pub const MAX_PAGE_SIZE: u32 = 2000;

/// `[sources.arcgis]` as written. Exactly one credential form, or none for
/// public services: `api_key`; `client_id` + `client_secret` (+
/// `token_url`); `username` + `password` + `token_url`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ArcgisSourceConfig {
    /// Feature service URLs (`https://.../FeatureServer`) whose
    /// changesUrls this source may call; any other is refused unfetched.
    pub services: Vec<String>,
    /// An API key (a long-lived access token).
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// OAuth application id (client credentials).
    #[serde(default)]
    pub client_id: Option<String>,
    /// OAuth application secret.
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// A named user for generateToken.
    #[serde(default)]
    pub username: Option<String>,
    /// That user's password.
    #[serde(default)]
    pub password: Option<Secret>,
    /// OAuth token endpoint (default ArcGIS Online's), or the generateToken
    /// endpoint (Portal `/sharing/rest/generateToken`, Server
    /// `/tokens/generateToken`), required with `username`.
    #[serde(default, serialize_with = "ser_opt_url")]
    pub token_url: Option<String>,
    /// Most features one changes document holds; beyond it the document
    /// is cut and marked `truncated`.
    #[serde(default = "default_max_features")]
    pub max_features: u64,
    /// Object ids per query when a service answers with ids only.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// One request, connect to last byte.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    /// How long one fetch polls an asynchronous job before giving up
    /// (retryably).
    #[serde(default = "default_job_timeout")]
    pub job_timeout: Dur,
    /// First wait between job polls; it grows to 10 times this.
    #[serde(default = "default_poll_interval")]
    pub poll_interval: Dur,
}

fn default_max_features() -> u64 {
    10_000
}
fn default_page_size() -> u32 {
    1000
}
fn default_timeout() -> Dur {
    Dur::secs(30)
}
fn default_job_timeout() -> Dur {
    Dur::secs(300)
}
fn default_poll_interval() -> Dur {
    Dur::secs(1)
}

/// The credential a source uses, once the table is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArcgisCredential {
    /// Public services: no token.
    None,
    /// A static token.
    ApiKey(Secret),
    /// OAuth 2.0 client credentials at `token_url`.
    ClientCredentials {
        /// Application id.
        client_id: String,
        /// Application secret.
        client_secret: Secret,
        /// Token endpoint.
        token_url: String,
    },
    /// generateToken at `token_url`.
    GenerateToken {
        /// User name.
        username: String,
        /// Password.
        password: Secret,
        /// generateToken endpoint.
        token_url: String,
    },
}

impl ArcgisSourceConfig {
    /// The credential form the table names. Call after [`Self::validate`]:
    /// a mixed table falls back to the first complete form here.
    pub fn credential(&self) -> ArcgisCredential {
        if let Some(k) = &self.api_key {
            return ArcgisCredential::ApiKey(k.clone());
        }
        if let (Some(id), Some(secret)) = (&self.client_id, &self.client_secret) {
            return ArcgisCredential::ClientCredentials {
                client_id: id.clone(),
                client_secret: secret.clone(),
                token_url: self
                    .token_url
                    .clone()
                    .unwrap_or_else(|| DEFAULT_OAUTH_TOKEN_URL.to_string()),
            };
        }
        if let (Some(user), Some(pw), Some(url)) = (&self.username, &self.password, &self.token_url)
        {
            return ArcgisCredential::GenerateToken {
                username: user.clone(),
                password: pw.clone(),
                token_url: url.clone(),
            };
        }
        ArcgisCredential::None
    }

    /// The per-request timeout.
    pub fn request_timeout(&self) -> Duration {
        self.timeout.0
    }

    /// Checks the table; `key` is `sources[i].arcgis`. URLs must be https
    /// (plain http only to a loopback host, for tests and local proxies:
    /// these requests carry credentials, unlike a sink's payload) and pass
    /// `[delivery] allowed_hosts` when it is set.
    pub fn validate(&self, key: &str, allowed_hosts: Option<&[String]>) -> Result<(), ConfigError> {
        let k = |name: &str| format!("{key}.{name}");
        if self.services.is_empty() {
            return Err(invalid(
                k("services"),
                "name at least one feature service URL",
            ));
        }
        for (i, s) in self.services.iter().enumerate() {
            let at = k(&format!("services[{i}]"));
            check_url(&at, s, allowed_hosts)?;
            let path = reqwest::Url::parse(s).map(|u| u.path().trim_end_matches('/').to_string());
            if !path.is_ok_and(|p| p.to_ascii_lowercase().ends_with("/featureserver")) {
                return Err(invalid(
                    at,
                    "must be a feature service URL ending in /FeatureServer",
                ));
            }
        }
        let has = |b: bool, name: &'static str| b.then_some(name);
        let oauth = [
            has(self.client_id.is_some(), "client_id"),
            has(self.client_secret.is_some(), "client_secret"),
        ];
        let user = [
            has(self.username.is_some(), "username"),
            has(self.password.is_some(), "password"),
        ];
        let forms = [
            self.api_key.is_some(),
            oauth.iter().any(Option::is_some),
            user.iter().any(Option::is_some),
        ];
        if forms.iter().filter(|f| **f).count() > 1 {
            let stray = if self.api_key.is_some() {
                oauth.iter().chain(&user).flatten().next()
            } else {
                user.iter().flatten().next()
            };
            return Err(invalid(
                k(stray.unwrap_or(&"api_key")),
                "give one credential: api_key, client_id + client_secret, or username + password + token_url",
            ));
        }
        if forms[1] {
            for (present, name) in [(oauth[0], "client_id"), (oauth[1], "client_secret")] {
                if present.is_none() {
                    return Err(invalid(k(name), "client_id and client_secret go together"));
                }
            }
        }
        if forms[2] {
            for (present, name) in [(user[0], "username"), (user[1], "password")] {
                if present.is_none() {
                    return Err(invalid(k(name), "username and password go together"));
                }
            }
            if self.token_url.is_none() {
                return Err(invalid(
                    k("token_url"),
                    "required with username: the Portal .../sharing/rest/generateToken or Server .../tokens/generateToken URL",
                ));
            }
        }
        match &self.token_url {
            Some(_) if !forms[1] && !forms[2] => {
                return Err(invalid(
                    k("token_url"),
                    "only used with client_id + client_secret or username + password",
                ))
            }
            Some(u) => check_url(&k("token_url"), u, allowed_hosts)?,
            None if forms[1] => check_url(&k("token_url"), DEFAULT_OAUTH_TOKEN_URL, allowed_hosts)?,
            None => {}
        }
        if self.client_id.as_deref().is_some_and(str::is_empty) {
            return Err(invalid(k("client_id"), "may not be empty"));
        }
        if self.username.as_deref().is_some_and(str::is_empty) {
            return Err(invalid(k("username"), "may not be empty"));
        }
        if self.max_features == 0 {
            return Err(invalid(k("max_features"), "must be at least 1"));
        }
        if self.page_size == 0 || self.page_size > MAX_PAGE_SIZE {
            return Err(invalid(
                k("page_size"),
                format!("must be 1 to {MAX_PAGE_SIZE}"),
            ));
        }
        for (name, d) in [
            ("timeout", self.timeout),
            ("job_timeout", self.job_timeout),
            ("poll_interval", self.poll_interval),
        ] {
            if d.0.is_zero() {
                return Err(invalid(k(name), "must be greater than 0"));
            }
        }
        Ok(())
    }
}

/// An https URL (http only to a loopback host) without user-info, query
/// or fragment, under `allowed_hosts`. Messages name the host at most.
fn check_url(key: &str, raw: &str, allowed_hosts: Option<&[String]>) -> Result<(), ConfigError> {
    let url = reqwest::Url::parse(raw).map_err(|_| invalid(key, "not a valid URL"))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(invalid(
                key,
                "must be https (plain http only to 127.0.0.1, ::1 or localhost): credentials travel to it",
            ))
        }
        _ => return Err(invalid(key, "must be an https:// URL")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            key,
            "may not carry user-info; use the credential keys",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(key, "may not carry a query string or fragment"));
    }
    egress::check_url_allowed(raw, allowed_hosts).map_err(|m| invalid(key, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVC: &str = "services = [\"https://h.example/arcgis/rest/services/P/FeatureServer\"]";

    fn parse(extra: &str) -> Result<ArcgisSourceConfig, String> {
        let c: ArcgisSourceConfig =
            toml::from_str(&format!("{SVC}\n{extra}")).map_err(|e| e.to_string())?;
        c.validate("sources[0].arcgis", None)
            .map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn defaults_and_forms() {
        let c = parse("").unwrap();
        assert_eq!((c.max_features, c.page_size), (10_000, 1000));
        assert_eq!(c.job_timeout.0, Duration::from_secs(300));
        assert_eq!(c.credential(), ArcgisCredential::None);
        let c = parse("api_key = \"AAPKsecret\"").unwrap();
        assert_eq!(
            c.credential(),
            ArcgisCredential::ApiKey(Secret::new("AAPKsecret"))
        );
        let c = parse("client_id = \"app\"\nclient_secret = \"s\"").unwrap();
        assert!(
            matches!(c.credential(), ArcgisCredential::ClientCredentials { token_url, .. } if token_url == DEFAULT_OAUTH_TOKEN_URL)
        );
        let c = parse("username = \"u\"\npassword = \"p\"\ntoken_url = \"https://h.example/portal/sharing/rest/generateToken\"").unwrap();
        assert!(matches!(
            c.credential(),
            ArcgisCredential::GenerateToken { .. }
        ));
    }

    #[test]
    fn wrong_tables_name_the_key() {
        let cases = [
            (
                "api_key = \"k\"\nclient_id = \"a\"\nclient_secret = \"s\"",
                "sources[0].arcgis.client_id",
            ),
            (
                "client_id = \"a\"\nclient_secret = \"s\"\nusername = \"u\"",
                "sources[0].arcgis.username",
            ),
            ("client_id = \"a\"", "sources[0].arcgis.client_secret"),
            (
                "username = \"u\"\npassword = \"p\"",
                "sources[0].arcgis.token_url",
            ),
            (
                "password = \"p\"\ntoken_url = \"https://h.example/t\"",
                "sources[0].arcgis.username",
            ),
            (
                "token_url = \"https://h.example/t\"",
                "sources[0].arcgis.token_url",
            ),
            (
                "client_id = \"a\"\nclient_secret = \"s\"\ntoken_url = \"http://h.example/t\"",
                "sources[0].arcgis.token_url",
            ),
            ("page_size = 2001", "sources[0].arcgis.page_size"),
            ("max_features = 0", "sources[0].arcgis.max_features"),
            ("job_timeout = \"0s\"", "sources[0].arcgis.job_timeout"),
        ];
        for (extra, key) in cases {
            let e = parse(extra).unwrap_err();
            assert!(e.starts_with(&format!("{key}:")), "{extra}: {e}");
        }
        let e = parse("colour = \"red\"").unwrap_err();
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn service_urls_are_checked() {
        let check = |s: &str| {
            let c: ArcgisSourceConfig = toml::from_str(&format!("services = [{s:?}]")).unwrap();
            c.validate("k", None).map_err(|e| e.to_string())
        };
        assert!(check("http://127.0.0.1:8080/arcgis/rest/services/P/FeatureServer").is_ok());
        assert!(check("http://localhost/a/FeatureServer/").is_ok());
        assert!(check("http://[::1]/a/FeatureServer").is_ok());
        assert!(check("http://gis.example.org/a/FeatureServer")
            .unwrap_err()
            .contains("https"));
        assert!(check("https://h.example/a/MapServer")
            .unwrap_err()
            .contains("/FeatureServer"));
        assert!(check("https://h.example/a/FeatureServer?token=x")
            .unwrap_err()
            .contains("query"));
        assert!(check("https://u:p@h.example/a/FeatureServer")
            .unwrap_err()
            .contains("user-info"));
        let empty: ArcgisSourceConfig = toml::from_str("services = []").unwrap();
        assert!(empty
            .validate("k", None)
            .unwrap_err()
            .to_string()
            .starts_with("k.services:"));
    }

    #[test]
    fn allowed_hosts_apply_to_services_and_token_urls() {
        let c: ArcgisSourceConfig =
            toml::from_str(&format!("{SVC}\nclient_id = \"a\"\nclient_secret = \"s\"")).unwrap();
        let hosts = vec!["h.example".to_string()];
        let e = c.validate("k", Some(&hosts)).unwrap_err().to_string();
        assert!(
            e.starts_with("k.token_url:") && e.contains("www.arcgis.com"),
            "{e}"
        );
        let hosts = vec!["h.example".to_string(), "www.arcgis.com".to_string()];
        assert!(c.validate("k", Some(&hosts)).is_ok());
        let hosts = vec!["other.example".to_string()];
        let e = c.validate("k", Some(&hosts)).unwrap_err().to_string();
        assert!(e.starts_with("k.services[0]:"), "{e}");
    }

    #[test]
    fn secrets_never_print() {
        let c = parse("client_id = \"app\"\nclient_secret = \"hunter2-secret\"").unwrap();
        let text = format!(
            "{c:?} {:?} {}",
            c.credential(),
            toml::to_string(&c).unwrap()
        );
        assert!(!text.contains("hunter2"), "{text}");
        let c = parse(
            "username = \"u\"\npassword = \"pw-hunter2\"\ntoken_url = \"https://h.example/t\"",
        )
        .unwrap();
        let text = format!(
            "{c:?} {:?} {}",
            c.credential(),
            toml::to_string(&c).unwrap()
        );
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn the_table_in_a_whole_file() {
        let file = |kind: &str, extra: &str| {
            format!(
                "[[sources]]\nname = \"s\"\nkind = \"{kind}\"\nsecret = \"k\"\n[sources.arcgis]\n{SVC}\n{extra}\n"
            )
        };
        let e = crate::config::Config::from_toml(&file("hmac", ""))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("sources[0].arcgis:") && e.contains("arcgis-service"),
            "{e}"
        );
        let e = crate::config::Config::from_toml(&file("arcgis-service", "tokn = \"x\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sources[0].arcgis") && e.contains("tokn"), "{e}");
        let c = crate::config::Config::from_toml(&file(
            "arcgis-service",
            "client_id = \"app\"\nclient_secret = \"hunter2-secret\"",
        ))
        .unwrap();
        let printed = c.redacted_toml();
        assert!(
            printed.contains("[sources.arcgis]") && printed.contains("client_id = \"app\""),
            "{printed}"
        );
        assert!(!printed.contains("hunter2"), "{printed}");
    }
}
