//! [`RawSink`] to [`SinkSpec`] and back: which keys apply to which kind,
//! which must come together, and the way back to TOML keys that
//! `hookrelay check` prints.

use serde::{Serialize, Serializer};

use super::delivery::DeliveryOverrides;
use super::sink::{RawSink, SinkKind};
use super::spec::{
    ClientCert, EmailSpec, HttpSpec, HttpTransport, KeyError, NotebookSpec, PowerBiSpec, Signing,
    SinkCommon, SinkSpec, SlackSpec, SmtpLogin, TeamsSpec,
};

/// Whether a key is set in a raw entry.
type IsSet = fn(&RawSink) -> bool;

const HTTP_KINDS: &[SinkKind] = &[
    SinkKind::Http,
    SinkKind::Slack,
    SinkKind::Teams,
    SinkKind::Powerbi,
    SinkKind::PowerAutomate,
    SinkKind::Notebook,
];
const HTTP_AND_FLOW: &[SinkKind] = &[SinkKind::Http, SinkKind::PowerAutomate];

/// The keys only some kinds take, with the kinds that take them: the one
/// statement of what applies where, read by [`refuse_foreign_keys`] and
/// matched by the specs' fields (a test converts every key each kind
/// takes there and back). Every other key (name, url, sources, events,
/// filter, the `[delivery]` overrides, deactivate_after) applies to every
/// kind.
const KIND_KEYS: &[(&str, &[SinkKind], IsSet)] = &[
    ("headers", HTTP_KINDS, |r| !r.headers.is_empty()),
    ("proxy", HTTP_KINDS, |r| r.proxy.is_some()),
    ("client_cert", HTTP_KINDS, |r| r.client_cert.is_some()),
    ("client_key", HTTP_KINDS, |r| r.client_key.is_some()),
    ("method", HTTP_AND_FLOW, |r| r.method.is_some()),
    ("format", HTTP_AND_FLOW, |r| r.format.is_some()),
    ("sign", HTTP_AND_FLOW, |r| r.sign.is_some()),
    (
        "secret",
        &[SinkKind::Http, SinkKind::PowerAutomate, SinkKind::Notebook],
        |r| r.secret.is_some(),
    ),
    (
        "template",
        &[SinkKind::Slack, SinkKind::Teams, SinkKind::Email],
        |r| r.template.is_some(),
    ),
    ("html_template", &[SinkKind::Email], |r| {
        r.html_template.is_some()
    }),
    ("subject", &[SinkKind::Email], |r| r.subject.is_some()),
    ("token", &[SinkKind::Powerbi], |r| r.token.is_some()),
    ("columns", &[SinkKind::Powerbi], |r| r.columns.is_some()),
    ("signature_header", &[SinkKind::Notebook], |r| {
        r.signature_header.is_some()
    }),
    ("signature_prefix", &[SinkKind::Notebook], |r| {
        r.signature_prefix.is_some()
    }),
    ("tls", &[SinkKind::Email], |r| r.tls.is_some()),
    ("username", &[SinkKind::Email], |r| r.username.is_some()),
    ("password", &[SinkKind::Email], |r| r.password.is_some()),
    ("from", &[SinkKind::Email], |r| r.from.is_some()),
    ("to", &[SinkKind::Email], |r| !r.to.is_empty()),
];

/// Refuses the first key set on a kind that does not take it.
fn refuse_foreign_keys(raw: &RawSink) -> Result<(), KeyError> {
    for (key, kinds, is_set) in KIND_KEYS {
        if is_set(raw) && !kinds.contains(&raw.kind) {
            let names: Vec<&str> = kinds.iter().map(SinkKind::as_str).collect();
            return Err(KeyError::new(
                *key,
                format!(
                    "{key} does not apply to kind {:?} (only to {})",
                    raw.kind.as_str(),
                    names.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

impl TryFrom<RawSink> for SinkSpec {
    type Error = KeyError;

    /// Checks which keys apply and which must come together, and moves
    /// each key into the spec of its kind. Nothing here reads a file or
    /// builds anything; that is `sinks::build`'s.
    fn try_from(raw: RawSink) -> Result<SinkSpec, KeyError> {
        refuse_foreign_keys(&raw)?;
        // Every field by name, so a new key cannot be forgotten here.
        let RawSink {
            name,
            kind,
            url,
            sources,
            events,
            filter,
            headers,
            method,
            format,
            sign,
            secret,
            template,
            html_template,
            subject,
            token,
            columns,
            signature_header,
            signature_prefix,
            tls,
            username,
            password,
            from,
            to,
            timeout,
            max_attempts,
            initial_backoff,
            max_backoff,
            max_age,
            concurrency,
            rate_limit,
            proxy,
            ca_file,
            client_cert,
            client_key,
            circuit,
            deactivate_after,
        } = raw;
        let common = SinkCommon {
            name,
            url,
            sources,
            events,
            filter,
            delivery: DeliveryOverrides {
                timeout,
                max_attempts,
                initial_backoff,
                max_backoff,
                max_age,
                concurrency,
                rate_limit,
                ca_file,
                circuit,
            },
            deactivate_after,
        };
        if kind == SinkKind::Email {
            let from =
                from.ok_or_else(|| KeyError::new("from", "an email sink needs a sender address"))?;
            if to.is_empty() {
                return Err(KeyError::new(
                    "to",
                    "an email sink needs at least one recipient",
                ));
            }
            let login = match (username, password) {
                (Some(username), Some(password)) => Some(SmtpLogin { username, password }),
                (None, None) => None,
                (Some(_), None) => {
                    return Err(KeyError::new("password", "username needs a password"))
                }
                (None, Some(_)) => {
                    return Err(KeyError::new("username", "password needs a username"))
                }
            };
            return Ok(SinkSpec::Email(EmailSpec {
                common,
                tls,
                login,
                from,
                to,
                subject,
                template,
                html_template,
            }));
        }
        let client_cert = match (client_cert, client_key) {
            (Some(cert), Some(key)) => Some(ClientCert { cert, key }),
            (None, None) => None,
            _ => {
                return Err(KeyError::new(
                    "client_cert",
                    "client_cert and client_key must be set together",
                ))
            }
        };
        let transport = HttpTransport {
            headers,
            proxy,
            client_cert,
        };
        Ok(match kind {
            SinkKind::Http | SinkKind::PowerAutomate => {
                let sign = match (sign, secret) {
                    (Some(scheme), Some(secret)) => Some(Signing { scheme, secret }),
                    (None, None) => None,
                    (Some(_), None) => return Err(KeyError::new("secret", "sign needs a secret")),
                    // A secret that signs nothing would be ignored.
                    (None, Some(_)) => return Err(KeyError::new(
                        "secret",
                        "secret is the key of sign, which is not set; set sign or remove secret",
                    )),
                };
                let spec = HttpSpec {
                    common,
                    transport,
                    method,
                    format,
                    sign,
                };
                if kind == SinkKind::Http {
                    SinkSpec::Http(spec)
                } else {
                    SinkSpec::PowerAutomate(spec)
                }
            }
            SinkKind::Slack => SinkSpec::Slack(SlackSpec {
                common,
                transport,
                template,
            }),
            SinkKind::Teams => SinkSpec::Teams(TeamsSpec {
                common,
                transport,
                template,
            }),
            SinkKind::Powerbi => SinkSpec::Powerbi(PowerBiSpec {
                common,
                transport,
                token,
                columns,
            }),
            SinkKind::Notebook => SinkSpec::Notebook(NotebookSpec {
                common,
                transport,
                secret: secret.ok_or_else(|| {
                    KeyError::new("secret", "a notebook sink needs the receiver's secret")
                })?,
                signature_header,
                signature_prefix,
            }),
            SinkKind::Email => unreachable!("returned above"),
        })
    }
}

impl From<&SinkSpec> for RawSink {
    /// The spec written back as TOML keys: what `hookrelay check` prints
    /// (through the redacting serialisers of [`RawSink`]).
    fn from(spec: &SinkSpec) -> RawSink {
        let c = spec.common();
        let o = &c.delivery;
        let t = spec.transport().cloned().unwrap_or_default();
        let (client_cert, client_key) = match t.client_cert {
            Some(cc) => (Some(cc.cert), Some(cc.key)),
            None => (None, None),
        };
        let mut raw = RawSink {
            name: c.name.clone(),
            kind: spec.kind(),
            url: c.url.clone(),
            sources: c.sources.clone(),
            events: c.events.clone(),
            filter: c.filter.clone(),
            headers: t.headers,
            method: None,
            format: None,
            sign: None,
            secret: None,
            template: None,
            html_template: None,
            subject: None,
            token: None,
            columns: None,
            signature_header: None,
            signature_prefix: None,
            tls: None,
            username: None,
            password: None,
            from: None,
            to: Vec::new(),
            timeout: o.timeout,
            max_attempts: o.max_attempts,
            initial_backoff: o.initial_backoff,
            max_backoff: o.max_backoff,
            max_age: o.max_age,
            concurrency: o.concurrency,
            rate_limit: o.rate_limit,
            proxy: t.proxy,
            ca_file: o.ca_file.clone(),
            client_cert,
            client_key,
            circuit: o.circuit,
            deactivate_after: c.deactivate_after,
        };
        match spec {
            SinkSpec::Http(s) | SinkSpec::PowerAutomate(s) => {
                raw.method = s.method.clone();
                raw.format = s.format;
                raw.sign = s.sign.as_ref().map(|g| g.scheme);
                raw.secret = s.sign.as_ref().map(|g| g.secret.clone());
            }
            SinkSpec::Slack(s) => raw.template = s.template.clone(),
            SinkSpec::Teams(s) => raw.template = s.template.clone(),
            SinkSpec::Powerbi(s) => {
                raw.token = s.token.clone();
                raw.columns = s.columns.clone();
            }
            SinkSpec::Notebook(s) => {
                raw.secret = Some(s.secret.clone());
                raw.signature_header = s.signature_header.clone();
                raw.signature_prefix = s.signature_prefix.clone();
            }
            SinkSpec::Email(s) => {
                raw.tls = s.tls;
                raw.username = s.login.as_ref().map(|l| l.username.clone());
                raw.password = s.login.as_ref().map(|l| l.password.clone());
                raw.from = Some(s.from.clone());
                raw.to = s.to.clone();
                raw.subject = s.subject.clone();
                raw.template = s.template.clone();
                raw.html_template = s.html_template.clone();
            }
        }
        raw
    }
}

impl Serialize for SinkSpec {
    /// As the TOML keys it came from, secrets and URL credentials hidden.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        RawSink::from(self).serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DeliveryConfig;

    fn raw(kind: &str, extra: &str) -> RawSink {
        toml::from_str(&format!(
            "name = \"s\"\nkind = \"{kind}\"\nurl = \"https://h.example.org/\"\n{extra}"
        ))
        .unwrap()
    }

    fn refused(kind: &str, extra: &str) -> KeyError {
        SinkSpec::try_from(raw(kind, extra)).expect_err("the key is refused")
    }

    /// One key of another kind on each kind: refused, naming the key and
    /// the kinds that take it.
    #[test]
    fn http_refuses_a_key_of_email() {
        let e = refused("http", "subject = \"x\"");
        assert_eq!(e.key, "subject");
        assert_eq!(
            e.message,
            "subject does not apply to kind \"http\" (only to email)"
        );
    }

    #[test]
    fn slack_refuses_a_key_of_powerbi() {
        let e = refused("slack", "token = \"t\"");
        assert_eq!(e.key, "token");
        assert!(e
            .message
            .starts_with("token does not apply to kind \"slack\""));
    }

    #[test]
    fn teams_refuses_a_key_of_http() {
        let e = refused("teams", "method = \"PUT\"");
        assert_eq!(e.key, "method");
        assert!(e.message.contains("(only to http, power-automate)"), "{e}");
    }

    #[test]
    fn powerbi_refuses_a_key_of_slack() {
        let e = refused("powerbi", "template = \"{}\"");
        assert_eq!(e.key, "template");
        assert!(e.message.contains("kind \"powerbi\""), "{e}");
    }

    #[test]
    fn power_automate_refuses_a_key_of_notebook() {
        let e = refused("power-automate", "signature_header = \"x-sig\"");
        assert_eq!(e.key, "signature_header");
        assert!(e.message.contains("kind \"power-automate\""), "{e}");
    }

    #[test]
    fn notebook_refuses_a_key_of_http() {
        let e = refused(
            "notebook",
            "secret = \"0123456789abcdef0123456789abcdef\"\nformat = \"events\"",
        );
        assert_eq!(e.key, "format");
        assert!(e.message.contains("kind \"notebook\""), "{e}");
    }

    #[test]
    fn email_refuses_keys_of_the_http_kinds() {
        let mail = "from = \"a@b.org\"\nto = [\"c@d.org\"]";
        for key in [
            "headers = { x = \"y\" }",
            "proxy = \"http://p:3128\"",
            "client_cert = \"/c.pem\"",
            "sign = \"github\"",
        ] {
            let e = refused("email", &format!("{mail}\n{key}"));
            let name = key.split(' ').next().unwrap();
            assert_eq!(e.key, name);
            assert!(e.message.contains("kind \"email\""), "{e}");
        }
    }

    #[test]
    fn keys_that_come_together_are_named() {
        let e = refused("http", "sign = \"github\"");
        assert_eq!(
            (e.key.as_str(), e.message.as_str()),
            ("secret", "sign needs a secret")
        );
        assert_eq!(refused("http", "secret = \"k\"").key, "secret");
        assert_eq!(refused("notebook", "").key, "secret");
        assert_eq!(
            refused("http", "client_key = \"/k.pem\"").key,
            "client_cert"
        );
        assert_eq!(refused("email", "to = [\"c@d.org\"]").key, "from");
        assert_eq!(refused("email", "from = \"a@b.org\"").key, "to");
        assert_eq!(
            refused(
                "email",
                "from = \"a@b.org\"\nto = [\"c@d.org\"]\nusername = \"u\""
            )
            .key,
            "password"
        );
    }

    /// Every key a kind takes survives the conversion and back: the table
    /// of [`KIND_KEYS`] and the specs' fields agree.
    #[test]
    fn every_key_a_kind_takes_goes_there_and_back() {
        let common = "sources = [\"a\"]\nevents = [\"/items\"]\nfilter = \"edit != 'delete'\"\ntimeout = \"3s\"\nmax_attempts = 2\n\
                      initial_backoff = \"1s\"\nmax_backoff = \"2s\"\nmax_age = \"1h\"\nconcurrency = 3\n\
                      rate_limit = 1.5\nca_file = \"/ca.pem\"\ncircuit = { failures = 2 }\n\
                      deactivate_after = { failures = 3 }\n";
        let http = "headers = { x = \"y\" }\nproxy = \"http://p:3128\"\nclient_cert = \"/c.pem\"\nclient_key = \"/k.pem\"\n";
        let cases = [
            ("http", format!("{http}method = \"PUT\"\nformat = \"events\"\nsign = \"github\"\nsecret = \"k\"")),
            ("power-automate", format!("{http}method = \"PUT\"\nformat = \"original\"\nsign = \"arcgis\"\nsecret = \"k\"")),
            ("slack", format!("{http}template = \"{{}}\"")),
            ("teams", format!("{http}template = \"{{}}\"")),
            ("powerbi", format!("{http}token = \"t\"\ncolumns = [\"A\"]")),
            ("notebook", format!("{http}secret = \"k\"\nsignature_header = \"h\"\nsignature_prefix = \"p\"")),
            (
                "email",
                "tls = \"tls\"\nusername = \"u\"\npassword = \"p\"\nfrom = \"a@b.org\"\nto = [\"c@d.org\"]\n\
                 subject = \"s\"\ntemplate = \"t\"\nhtml_template = \"h\""
                    .to_string(),
            ),
        ];
        for (kind, keys) in cases {
            let before = raw(kind, &format!("{common}{keys}"));
            let taken: Vec<&str> = KIND_KEYS
                .iter()
                .filter(|(_, kinds, is_set)| is_set(&before) && kinds.contains(&before.kind))
                .map(|(k, _, _)| *k)
                .collect();
            let wanted = KIND_KEYS
                .iter()
                .filter(|(_, kinds, _)| kinds.contains(&before.kind))
                .count();
            assert_eq!(
                taken.len(),
                wanted,
                "{kind}: the case sets every key it takes"
            );
            let spec = SinkSpec::try_from(before.clone()).unwrap();
            assert_eq!(spec.kind(), before.kind);
            assert_eq!(RawSink::from(&spec), before, "{kind}");
        }
    }

    #[test]
    fn policy_takes_the_overrides_and_the_kinds_rate() {
        let spec = SinkSpec::try_from(raw("slack", "timeout = \"3s\"\nproxy = \"http://p:3128\""))
            .unwrap();
        let p = spec.policy(&DeliveryConfig::default());
        assert_eq!(p.timeout, std::time::Duration::from_secs(3));
        assert_eq!(p.rate_limit, Some(1.0));
        assert_eq!(p.proxy.as_deref(), Some("http://p:3128"));
    }
}
