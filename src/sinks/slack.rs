//! `slack`: a Slack incoming webhook. Sends `{"text": ..., "blocks": [...]}`
//! rendered from the events' facts (template `templates/slack.json`, or the
//! sink's own `template`), and reads Slack's answers: 200 `ok` is
//! delivered, 429 waits for `Retry-After`, 400/403/404/410 (`no_text`,
//! `invalid_payload`, `channel_not_found`, `channel_is_archived`, ...) are
//! dead at once with Slack's error word recorded, 5xx is retried.

use serde_json::Value;

use super::answer::classify_status;
use super::template::{single_template, Templates};
use super::RenderError;
use super::{answer_word, Answer, HttpKind, Outbound};
use crate::config::{ConfigError, SlackSpec};
use crate::domain::delivery::Verdict;
use crate::store::Claimed;

/// The built-in body template.
pub const DEFAULT_TEMPLATE: &str = include_str!("templates/slack.json");
/// The template's name; `.json` turns on JSON auto-escaping.
const BODY: &str = "slack.json";
/// Slack cuts messages at 40,000 characters; stay below in bytes.
pub const MAX_BYTES: usize = 40_000;
/// Slack accepts at most 50 blocks per message.
pub const MAX_BLOCKS: usize = 50;

/// The `slack` kind.
pub struct Slack {
    templates: Templates,
}

impl Slack {
    /// Compiles and test-renders the sink's template; `key` names the sink
    /// in errors (`sinks[2]`).
    pub fn new(key: &str, spec: &SlackSpec) -> Result<Slack, ConfigError> {
        let templates = single_template(
            key,
            BODY,
            spec.template.as_deref(),
            DEFAULT_TEMPLATE,
            check_body,
        )?;
        Ok(Slack { templates })
    }

    /// The JSON body for a delivery.
    pub fn body(&self, d: &Claimed) -> Result<Value, RenderError> {
        let v = self.templates.render_json(BODY, d, MAX_BYTES)?;
        check_value(&v).map_err(RenderError::Refused)?;
        Ok(v)
    }
}

/// What Slack insists on: a non-empty `text` (the notification fallback we
/// promise), and `blocks`, when present, a list of at most 50 typed objects.
fn check_value(v: &Value) -> Result<(), String> {
    match v.get("text") {
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        _ => {
            return Err(
                "the body has no \"text\"; Slack needs it as the notification fallback".into(),
            )
        }
    }
    match v.get("blocks") {
        None => Ok(()),
        Some(Value::Array(b)) if b.len() > MAX_BLOCKS => {
            Err(format!("{} blocks, over Slack's {MAX_BLOCKS}", b.len()))
        }
        Some(Value::Array(b))
            if b.iter()
                .all(|x| x.get("type").is_some_and(Value::is_string)) =>
        {
            Ok(())
        }
        Some(_) => Err("\"blocks\" must be a list of objects with a \"type\"".into()),
    }
}

fn check_body(text: &str) -> Result<(), String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    check_value(&v)
}

impl HttpKind for Slack {
    fn render(&self, d: &Claimed) -> Result<Outbound, RenderError> {
        let body = serde_json::to_vec(&self.body(d)?)?;
        Ok(Outbound {
            method: ::http::Method::POST,
            headers: vec![("content-type".into(), "application/json".into())],
            body,
        })
    }

    fn classify(&self, a: &Answer) -> Verdict {
        match a.status {
            200..=299 => Verdict::Delivered,
            429 => Verdict::Retry {
                after: a.retry_after(),
            },
            // invalid_payload, no_text, action_prohibited, channel_not_found,
            // no_service, channel_is_archived: the same request fails again.
            400 | 403 | 404 | 410 => Verdict::Permanent,
            s => classify_status(s, a.retry_after()),
        }
    }

    fn describe(&self, a: &Answer) -> Option<String> {
        answer_word(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::sample::{claimed, Sample};

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            headers: Default::default(),
            body: bytes::Bytes::from(body.to_string()),
        }
    }

    fn slack_spec(text: &str) -> SlackSpec {
        match crate::sinks::testing::spec(text) {
            crate::config::SinkSpec::Slack(s) => s,
            other => panic!("not a slack sink: {other:?}"),
        }
    }

    fn sink() -> Slack {
        let c = slack_spec(
            "name = \"s\"\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T/B/X\"",
        );
        Slack::new("sinks[0]", &c).unwrap()
    }

    #[test]
    fn answers_classify_as_slack_documents() {
        let s = sink();
        assert_eq!(s.classify(&answer(200, "ok")), Verdict::Delivered);
        for (code, word) in [
            (400, "invalid_payload"),
            (400, "no_text"),
            (403, "action_prohibited"),
            (404, "channel_not_found"),
            (410, "channel_is_archived"),
        ] {
            assert_eq!(
                s.classify(&answer(code, word)),
                Verdict::Permanent,
                "{code}"
            );
            assert_eq!(s.describe(&answer(code, word)).as_deref(), Some(word));
        }
        assert!(matches!(
            s.classify(&answer(429, "rate_limited")),
            Verdict::Retry { .. }
        ));
        assert!(matches!(
            s.classify(&answer(503, "")),
            Verdict::Retry { .. }
        ));
    }

    #[test]
    fn default_body_has_text_and_link() {
        let v = sink()
            .body(&claimed(Sample::Portal, "portal", "d"))
            .unwrap();
        let text = v["text"].as_str().unwrap();
        assert!(text.contains("hookrelay-test shared item"), "{text}");
        assert!(
            text.contains("home/item.html?id=6cd80cb32d4a4b4d858a020e57fba7b1|Open item>"),
            "{text}"
        );
        assert_eq!(v["blocks"][0]["type"], "header");
    }

    #[test]
    fn template_without_text_is_a_config_error() {
        let c = slack_spec(
            "name = \"s\"\nkind = \"slack\"\nurl = \"https://x/\"\ntemplate = '{\"blocks\": []}'",
        );
        let e = Slack::new("sinks[3]", &c).err().unwrap().to_string();
        assert!(e.starts_with("sinks[3].template: "), "{e}");
        assert!(e.contains("\"text\""), "{e}");
    }
}
