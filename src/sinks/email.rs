//! `email`: SMTP through the organisation's mail relay, with lettre.
//!
//! The sink's `url` is `smtp://host[:port]`; `tls` is `starttls` (default,
//! port 587), `tls` (implicit TLS, port 465) or `none` (port 25); `username`
//! and `password` log in. Each delivery is one mail to every `to` address:
//! a subject, a plain-text body and an HTML alternative, rendered from the
//! events' facts by the templates in `templates/` (or the sink's own
//! `subject`, `template`, `html_template`). The Message-ID is derived from
//! the delivery id, so a retried mail can be recognised as the same one.
//!
//! Answers: a 4xx SMTP reply (451 local error, 452 storage) is retried; a
//! 5xx reply (550 mailbox unavailable, 554) is dead at once; connection,
//! TLS and timeout failures are retried. The reply code is recorded as
//! the attempt's status. SMTP does not go through `proxy`; `ca_file` is
//! trusted for the relay's certificate.

use std::time::Duration;

use async_trait::async_trait;
use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::facts::{clip, context, Trim};
use super::template::template_config_error;
use super::template::Templates;
use super::RenderError;
use super::{keep, AttemptOutcome, Sink};
use crate::config::{ConfigError, DeliveryPolicy, EmailSpec, SmtpTls};
use crate::domain::delivery::Verdict;
use crate::store::Claimed;

/// Built-in templates.
pub const DEFAULT_SUBJECT: &str = include_str!("templates/email-subject.txt");
/// Built-in plain-text body.
pub const DEFAULT_TEXT: &str = include_str!("templates/email.txt");
/// Built-in HTML body.
pub const DEFAULT_HTML: &str = include_str!("templates/email.html");
const SUBJECT: &str = "subject.txt";
const TEXT: &str = "body.txt";
// `.html` turns on HTML auto-escaping.
const HTML: &str = "body.html";

/// A mail is not a chat message: show many events, with long details.
const EMAIL_TRIM: Trim = Trim {
    max_events: 100,
    detail_chars: 2000,
    details: true,
    properties: true,
};

/// A rendered mail.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// One line.
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML alternative, unless the sink replaced the text template only.
    pub html: Option<String>,
}

/// The parts of the spec an email sink needs, parsed.
struct Parsed {
    host: String,
    port: u16,
    tls: SmtpTls,
    from: Mailbox,
    to: Vec<Mailbox>,
    credentials: Option<Credentials>,
    templates: Templates,
    html: bool,
}

fn parse(key: &str, c: &EmailSpec) -> Result<Parsed, ConfigError> {
    let bad = |k: &str, m: String| ConfigError::Invalid {
        key: format!("{key}.{k}"),
        message: m,
    };
    let url = reqwest::Url::parse(&c.common.url)
        .map_err(|_| bad("url", "an email sink's url is smtp://host[:port]".into()))?;
    if url.scheme() != "smtp" {
        return Err(bad(
            "url",
            "an email sink's url is smtp://host[:port]; choose TLS with tls".into(),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "url",
            "put SMTP credentials in username and password, not in the url".into(),
        ));
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("url", "the url names no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let tls = c.tls.unwrap_or_default();
    let port = url.port().unwrap_or(match tls {
        SmtpTls::Starttls => 587,
        SmtpTls::Tls => 465,
        SmtpTls::None => 25,
    });
    let from: Mailbox = c
        .from
        .parse()
        .map_err(|e| bad("from", format!("not a mailbox: {e}")))?;
    let mut to = Vec::with_capacity(c.to.len());
    for (i, t) in c.to.iter().enumerate() {
        to.push(
            t.parse()
                .map_err(|e| bad(&format!("to[{i}]"), format!("not a mailbox: {e}")))?,
        );
    }
    let credentials = c
        .login
        .as_ref()
        .map(|l| Credentials::new(l.username.clone(), l.password.expose().to_string()));
    let html = c.html_template.is_some() || c.template.is_none();
    let mut sources = vec![
        (
            SUBJECT,
            c.subject
                .clone()
                .unwrap_or_else(|| DEFAULT_SUBJECT.to_string()),
        ),
        (
            TEXT,
            c.template
                .clone()
                .unwrap_or_else(|| DEFAULT_TEXT.to_string()),
        ),
    ];
    if html {
        sources.push((
            HTML,
            c.html_template
                .clone()
                .unwrap_or_else(|| DEFAULT_HTML.to_string()),
        ));
    }
    let field = |name: &str| match name {
        SUBJECT => "subject",
        HTML => "html_template",
        _ => "template",
    };
    let templates =
        Templates::new(sources).map_err(|e| template_config_error(key, field(&e.name), e))?;
    let nonempty = |t: &str| {
        if t.trim().is_empty() {
            Err("it renders to nothing".to_string())
        } else {
            Ok(())
        }
    };
    let mut names = vec![SUBJECT, TEXT];
    if html {
        names.push(HTML);
    }
    for name in names {
        templates
            .check_samples(name, nonempty)
            .map_err(|e| template_config_error(key, field(name), e))?;
    }
    Ok(Parsed {
        host,
        port,
        tls,
        from,
        to,
        credentials,
        templates,
        html,
    })
}

/// The `email` kind.
pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    templates: Templates,
    html: bool,
    timeout: Duration,
}

impl Email {
    /// Builds the sink: parses the spec (URL, mailboxes), compiles and
    /// test-renders the templates, and prepares (does not open) the SMTP
    /// connection settings. `key` names the entry in errors (`sinks[2]`).
    pub fn new(key: &str, c: &EmailSpec, policy: &DeliveryPolicy) -> Result<Email, ConfigError> {
        let p = parse(key, c)?;
        let bad = |k: &str, m: String| ConfigError::Invalid {
            key: format!("{key}.{k}"),
            message: m,
        };
        let params = || -> Result<TlsParameters, ConfigError> {
            let mut b = TlsParameters::builder(p.host.clone());
            if let Some(ca) = &policy.ca_file {
                let pem = std::fs::read(ca)
                    .map_err(|e| bad("ca_file", format!("cannot read {}: {e}", ca.display())))?;
                let cert = Certificate::from_pem(&pem).map_err(|e| {
                    bad(
                        "ca_file",
                        format!("{} is not a PEM certificate: {e}", ca.display()),
                    )
                })?;
                b = b.add_root_certificate(cert);
            }
            b.build_rustls()
                .map_err(|e| bad("tls", format!("cannot set up TLS: {e}")))
        };
        let tls = match p.tls {
            SmtpTls::Starttls => Tls::Required(params()?),
            SmtpTls::Tls => Tls::Wrapper(params()?),
            SmtpTls::None => Tls::None,
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(p.host.clone())
            .port(p.port)
            .tls(tls)
            .timeout(Some(policy.timeout));
        if let Some(creds) = p.credentials {
            b = b.credentials(creds);
        }
        Ok(Email {
            transport: b.build(),
            from: p.from,
            to: p.to,
            templates: p.templates,
            html: p.html,
            timeout: policy.timeout,
        })
    }

    /// Subject, text and HTML for a delivery.
    pub fn render(&self, d: &Claimed) -> Result<Rendered, RenderError> {
        let ctx = context(d, EMAIL_TRIM);
        let r = |name: &str| self.templates.render(name, &ctx).map_err(RenderError::from);
        let subject = r(SUBJECT)?;
        // A header is one line; a template's stray newline must not end it.
        let subject = clip(
            subject
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("ArcGIS event"),
            250,
        );
        Ok(Rendered {
            subject,
            text: r(TEXT)?,
            html: if self.html { Some(r(HTML)?) } else { None },
        })
    }

    /// The mail for a delivery.
    pub fn message(&self, d: &Claimed) -> Result<Message, RenderError> {
        let r = self.render(d)?;
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(r.subject)
            .message_id(Some(format!("<{}@hookrelay>", d.id)));
        for t in &self.to {
            b = b.to(t.clone());
        }
        let text = SinglePart::builder()
            .header(ContentType::TEXT_PLAIN)
            .body(r.text);
        let built = match r.html {
            Some(html) => b.multipart(
                MultiPart::alternative().singlepart(text).singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(html),
                ),
            ),
            None => b.singlepart(text),
        };
        built.map_err(RenderError::Mail)
    }
}

/// An SMTP failure as an outcome: 4xx retried, 5xx dead, transport retried.
fn failure(e: &lettre::transport::smtp::Error) -> AttemptOutcome {
    let status = e.status().map(|c| i32::from(u16::from(c)));
    let verdict = if e.is_permanent() || e.is_client() {
        Verdict::Permanent
    } else {
        Verdict::Retry { after: None }
    };
    let text = crate::config::redact_url(&e.to_string());
    let error = if text == crate::config::REDACTED {
        e.to_string()
    } else {
        text
    };
    AttemptOutcome {
        verdict,
        status,
        response: None,
        error: Some(format!("SMTP: {error}")),
    }
}

#[async_trait]
impl Sink for Email {
    async fn deliver(&self, d: &Claimed) -> AttemptOutcome {
        let msg = match self.message(d) {
            Ok(m) => m,
            Err(e) => return AttemptOutcome::render_failed(e),
        };
        match tokio::time::timeout(self.timeout, self.transport.send(msg)).await {
            Err(_) => AttemptOutcome {
                verdict: Verdict::Retry { after: None },
                status: None,
                error: Some(format!(
                    "SMTP: timed out after {}",
                    humantime::format_duration(self.timeout)
                )),
                response: None,
            },
            Ok(Err(e)) => failure(&e),
            Ok(Ok(resp)) => {
                let code = u16::from(resp.code());
                let text = format!("{code} {}", resp.message().collect::<Vec<_>>().join(" "));
                AttemptOutcome {
                    verdict: Verdict::Delivered,
                    status: Some(i32::from(code)),
                    error: None,
                    response: Some(keep(text.as_bytes())),
                }
            }
        }
    }
}
