//! The one template engine of every templated sink: minijinja.
//!
//! Default templates live in `templates/` beside this file and are built
//! into the binary; `template = "file:/path"` replaces one per sink. Every
//! template is compiled *and* rendered with the built-in samples when the
//! configuration is loaded, so a syntax error, a misspelt field or a body
//! that is not JSON stops the relay at start instead of dead-lettering
//! real events later.
//!
//! Templates whose name ends in `.json` are rendered with JSON
//! auto-escaping: `{{ value }}` writes a JSON value (a string comes out
//! quoted and escaped), so no event text can break the document. Build
//! longer strings with `~`: `{{ "*" ~ e.title ~ "*" }}`.

use minijinja::{Environment, UndefinedBehavior, Value};

use super::facts::{clip, context, Context, TRIM_LEVELS};
use super::sample::{claimed, Sample};
use crate::store::Claimed;

/// A set of compiled templates.
pub struct Templates {
    env: Environment<'static>,
}

/// Why a template was refused; `name` is the template's name.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    /// The template (`body.json`, `subject.txt`, ...).
    pub name: String,
    /// What is wrong, with the line when known.
    pub message: String,
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // Printing a field that does not exist is an error (caught by the
    // test render at start), but `{% if e.x %}` on a missing one is false.
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.add_filter("mrkdwn", mrkdwn);
    env.add_filter("clip", |s: String, n: usize| clip(&s, n));
    env.add_function("slack_link", slack_link);
    env
}

/// Escapes the three characters Slack's mrkdwn gives meaning to.
fn mrkdwn(s: String) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `<url|label>`, with the URL and label escaped so neither can end the link early.
fn slack_link(url: String, label: String) -> String {
    let url = mrkdwn(url).replace('|', "%7C");
    format!("<{url}|{}>", mrkdwn(label).replace('|', "¦"))
}

fn describe(e: &minijinja::Error) -> String {
    // The alternate form adds the offending source line for syntax errors.
    let s = e.to_string();
    match e.line() {
        Some(_) if s.contains(" (in ") => s,
        Some(l) => format!("{s} (line {l})"),
        None => s,
    }
}

impl Templates {
    /// Compiles `(name, source)` pairs.
    pub fn new(sources: Vec<(&'static str, String)>) -> Result<Templates, TemplateError> {
        let mut env = environment();
        for (name, source) in sources {
            env.add_template_owned(name, source)
                .map_err(|e| TemplateError {
                    name: name.to_string(),
                    message: describe(&e),
                })?;
        }
        Ok(Templates { env })
    }

    /// Renders one template with a context.
    pub fn render(&self, name: &str, ctx: &Context) -> Result<String, TemplateError> {
        let err = |e: minijinja::Error| TemplateError {
            name: name.to_string(),
            message: describe(&e),
        };
        let t = self.env.get_template(name).map_err(err)?;
        t.render(Value::from(minijinja::value::Serde(ctx)))
            .map_err(err)
    }

    /// Renders a JSON template for a delivery and returns compact JSON no
    /// larger than `limit` bytes, trimming details and events
    /// ([`TRIM_LEVELS`]) until it fits. The result always parses: a
    /// template that does not produce JSON is an error, never sent.
    pub fn render_json(
        &self,
        name: &str,
        d: &Claimed,
        limit: usize,
    ) -> Result<serde_json::Value, TemplateError> {
        let mut size = 0;
        for trim in TRIM_LEVELS {
            let text = self.render(name, &context(d, trim))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| TemplateError {
                name: name.to_string(),
                message: format!("the template did not produce valid JSON: {e}"),
            })?;
            size = serde_json::to_vec(&v)
                .map(|b| b.len())
                .unwrap_or(usize::MAX);
            if size <= limit {
                return Ok(v);
            }
        }
        Err(TemplateError {
            name: name.to_string(),
            message: format!(
                "the body is {size} bytes even with events trimmed, over the {limit}-byte limit"
            ),
        })
    }

    /// Renders `name` with both built-in samples and hands each result to
    /// `check`, so the configuration is refused when a template fails on a
    /// real-looking event.
    pub fn check_samples(
        &self,
        name: &str,
        mut check: impl FnMut(&str) -> Result<(), String>,
    ) -> Result<(), TemplateError> {
        for s in Sample::ALL {
            let d = claimed(s, "sample", "sample-delivery");
            let text = self.render(name, &context(&d, TRIM_LEVELS[0]))?;
            check(&text).map_err(|message| TemplateError {
                name: name.to_string(),
                message: format!("with the built-in {s:?} sample: {message}"),
            })?;
        }
        Ok(())
    }
}

/// A template problem as a config error on `<key>.<field>`.
pub(crate) fn template_config_error(
    key: &str,
    field: &str,
    e: TemplateError,
) -> crate::config::ConfigError {
    crate::config::ConfigError::Invalid {
        key: format!("{key}.{field}"),
        message: e.message,
    }
}

/// Compiles a kind with one body template — the sink's own `template` or
/// the kind's default — and checks it against the built-in samples, so a
/// bad template is a config error on `<key>.template` at start.
pub(crate) fn single_template(
    key: &str,
    name: &'static str,
    custom: Option<&str>,
    default: &str,
    check: impl FnMut(&str) -> Result<(), String>,
) -> Result<Templates, crate::config::ConfigError> {
    let source = custom.unwrap_or(default).to_string();
    Templates::new(vec![(name, source)])
        .and_then(|t| t.check_samples(name, check).map(|_| t))
        .map_err(|e| template_config_error(key, "template", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_templates_escape_values() {
        let t = Templates::new(vec![(
            "t.json",
            r#"{"a": {{ headline ~ " \"x\"" }}}"#.to_string(),
        )])
        .unwrap();
        let d = claimed(Sample::Portal, "portal", "d1");
        let v = t.render_json("t.json", &d, 10_000).unwrap();
        assert_eq!(
            v["a"],
            "hookrelay-test shared item 6cd80cb32d4a4b4d858a020e57fba7b1 \"x\""
        );
    }

    #[test]
    fn errors_name_the_line() {
        let e = Templates::new(vec![("t.json", "{\n{{ x }".to_string())])
            .err()
            .unwrap();
        assert!(e.message.contains("syntax error"), "{}", e.message);
        let t = Templates::new(vec![("t.txt", "{{ nope.x }}".to_string())]).unwrap();
        let e = t.check_samples("t.txt", |_| Ok(())).unwrap_err();
        assert!(e.message.contains("undefined"), "{}", e.message);
    }

    #[test]
    fn slack_helpers_escape() {
        assert_eq!(mrkdwn("a<b>&".into()), "a&lt;b&gt;&amp;");
        assert_eq!(
            slack_link("https://x/?a=1|2".into(), "Open".into()),
            "<https://x/?a=1%7C2|Open>"
        );
    }
}
