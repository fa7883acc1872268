//! `teams`: Microsoft Teams, through a Workflows "When a Teams webhook
//! request is received" URL or a legacy Office 365 connector URL. Sends a
//! message with one Adaptive Card 1.4 (template `templates/teams.json`):
//! the facts as a FactSet and an Action.OpenUrl to the item.
//!
//! Teams refuses messages over about 28 KB, so the card is rendered again
//! with fewer details and events until it fits ([`super::facts::TRIM_LEVELS`]);
//! the body is always re-serialised from parsed JSON, so it is never cut
//! mid-document. Legacy connectors answer throttling with a 200 whose body
//! says "Microsoft Teams endpoint returned HTTP error 429": that is read as
//! the 429 it reports.

use serde_json::Value;

use super::answer::classify_status;
use super::template::{single_template, Templates};
use super::RenderError;
use super::{answer_word, Answer, HttpKind, Outbound};
use crate::config::{ConfigError, TeamsSpec};
use crate::domain::delivery::Verdict;
use crate::store::Claimed;

/// The built-in card template.
pub const DEFAULT_TEMPLATE: &str = include_str!("templates/teams.json");
const BODY: &str = "teams.json";
/// Teams' message size limit (about 28 KB), with room for the envelope.
pub const MAX_BYTES: usize = 28_000;
/// The content type of an Adaptive Card attachment.
pub const ADAPTIVE: &str = "application/vnd.microsoft.card.adaptive";
const LEGACY_MARKER: &str = "Microsoft Teams endpoint returned HTTP error ";

/// The `teams` kind.
pub struct Teams {
    templates: Templates,
}

impl Teams {
    /// Compiles and test-renders the sink's template.
    pub fn new(key: &str, spec: &TeamsSpec) -> Result<Teams, ConfigError> {
        let templates = single_template(
            key,
            BODY,
            spec.template.as_deref(),
            DEFAULT_TEMPLATE,
            check_body,
        )?;
        Ok(Teams { templates })
    }

    /// The message for a delivery, at most [`MAX_BYTES`] as compact JSON.
    pub fn body(&self, d: &Claimed) -> Result<Value, RenderError> {
        let v = self.templates.render_json(BODY, d, MAX_BYTES)?;
        check_value(&v).map_err(RenderError::Refused)?;
        Ok(v)
    }
}

/// The message shape both Workflows and connectors accept.
fn check_value(v: &Value) -> Result<(), String> {
    if v.get("type").and_then(Value::as_str) != Some("message") {
        return Err("the body must have \"type\": \"message\"".into());
    }
    let Some(atts) = v
        .get("attachments")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
    else {
        return Err("the body must have a non-empty \"attachments\" list".into());
    };
    for a in atts {
        if a.get("contentType").and_then(Value::as_str) != Some(ADAPTIVE) {
            return Err(format!(
                "every attachment needs \"contentType\": \"{ADAPTIVE}\""
            ));
        }
        if a.pointer("/content/type").and_then(Value::as_str) != Some("AdaptiveCard") {
            return Err("every attachment's content must be an AdaptiveCard".into());
        }
    }
    Ok(())
}

fn check_body(text: &str) -> Result<(), String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    check_value(&v)
}

/// The status a legacy connector reports inside a 200 body, if any.
fn legacy_status(a: &Answer) -> Option<u16> {
    let text = a.text();
    let at = text.find(LEGACY_MARKER)? + LEGACY_MARKER.len();
    text[at..].get(..3)?.parse().ok()
}

impl HttpKind for Teams {
    fn render(&self, d: &Claimed) -> Result<Outbound, RenderError> {
        let body = serde_json::to_vec(&self.body(d)?)?;
        Ok(Outbound {
            method: ::http::Method::POST,
            headers: vec![("content-type".into(), "application/json".into())],
            body,
        })
    }

    fn classify(&self, a: &Answer) -> Verdict {
        match (a.status, legacy_status(a)) {
            (200..=299, Some(inner)) => match classify_status(inner, a.retry_after()) {
                // A connector that says "error" in a 200 did not post it.
                Verdict::Delivered => Verdict::Retry {
                    after: a.retry_after(),
                },
                v => v,
            },
            (s, _) => classify_status(s, a.retry_after()),
        }
    }

    fn describe(&self, a: &Answer) -> Option<String> {
        answer_word(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            headers: Default::default(),
            body: bytes::Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn legacy_429_in_a_200_is_retried() {
        let crate::config::SinkSpec::Teams(c) = crate::sinks::testing::spec(
            "name = \"t\"\nkind = \"teams\"\nurl = \"https://x.webhook.office.com/webhookb2/a\"",
        ) else {
            panic!("not a teams sink")
        };
        let t = Teams::new("sinks[0]", &c).unwrap();
        assert_eq!(t.classify(&answer(202, "")), Verdict::Delivered);
        assert_eq!(t.classify(&answer(200, "1")), Verdict::Delivered);
        let busy = answer(200, "Webhook message delivery failed with error: Microsoft Teams endpoint returned HTTP error 429 with ContextId tcid=0");
        assert!(matches!(t.classify(&busy), Verdict::Retry { .. }));
        assert!(t.describe(&busy).unwrap().contains("HTTP error 429"));
        assert_eq!(t.classify(&answer(400, "Bad payload")), Verdict::Permanent);
        assert!(matches!(
            t.classify(&answer(502, "")),
            Verdict::Retry { .. }
        ));
    }
}
