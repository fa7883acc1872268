//! What a filter sees: an [`Event`] and JSON as CEL values, the context
//! they are bound in, and the depth of a parsed expression.

use std::collections::HashMap;
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::objects::Key;
use cel::Value;

use super::EvalError;
use crate::arcgis::payload::MAX_NESTING;
use crate::domain::event::{Event, EventOrigin};

thread_local! {
    // The root context holds CEL's built-in functions; building it for
    // every evaluation would cost more than most filters do. Each
    // evaluation binds its variables in a child scope of it.
    static ROOT: cel::Context<'static, 'static> = cel::Context::default();
}

/// Runs `f` with a fresh scope for its variables.
pub(super) fn with_context<R>(f: impl FnOnce(&mut cel::Context<'_, '_>) -> R) -> R {
    ROOT.with(|root| f(&mut root.new_inner_scope()))
}

fn text(s: &str) -> Value {
    Value::String(Arc::new(s.to_string()))
}

fn opt_text(s: Option<&str>) -> Value {
    s.map(text).unwrap_or(Value::Null)
}

/// Binds the event variables (see the table in the module documentation).
pub(super) fn bind_event(
    ctx: &mut cel::Context<'_, '_>,
    source: &str,
    e: &Event,
) -> Result<(), EvalError> {
    let origin = match e.origin {
        EventOrigin::Portal => "portal",
        EventOrigin::Service => "service",
        EventOrigin::Generic => "generic",
    };
    ctx.add_variable_from_value("source", text(source));
    ctx.add_variable_from_value("origin", text(origin));
    ctx.add_variable_from_value("kind", text(&e.source));
    ctx.add_variable_from_value("operation", text(&e.operation));
    ctx.add_variable_from_value("id", text(&e.id));
    ctx.add_variable_from_value("uri", text(&e.uri));
    ctx.add_variable_from_value("username", opt_text(e.username.as_deref()));
    ctx.add_variable_from_value("webhook", opt_text(e.webhook.as_deref()));
    ctx.add_variable_from_value("service", opt_text(e.service.as_deref()));
    ctx.add_variable_from_value("portal_url", opt_text(e.portal_url.as_deref()));
    ctx.add_variable_from_value("changes_url", opt_text(e.changes_url.as_deref()));
    ctx.add_variable_from_value("when", e.when.map(Value::Int).unwrap_or(Value::Null));
    ctx.add_variable_from_value("properties", json(&e.properties)?);
    Ok(())
}

/// JSON as a CEL value: integers as `int`, other numbers as `double`.
/// Nesting is bounded like a payload's ([`MAX_NESTING`]), so no feature
/// can make the conversion recurse without end.
pub(super) fn json(v: &serde_json::Value) -> Result<Value, EvalError> {
    json_at(v, 0)
}

fn json_at(v: &serde_json::Value, depth: usize) -> Result<Value, EvalError> {
    use serde_json::Value as J;
    if depth > MAX_NESTING {
        return Err(EvalError::TooDeep { max: MAX_NESTING });
    }
    Ok(match v {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            // Past i64 (only u64 is) or with a fraction: a double, whose
            // comparisons with ints CEL defines.
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => text(s),
        J::Array(a) => Value::List(Arc::new(
            a.iter()
                .map(|x| json_at(x, depth + 1))
                .collect::<Result<Vec<_>, _>>()?,
        )),
        J::Object(o) => {
            let mut m: HashMap<Key, Value> = HashMap::with_capacity(o.len());
            for (k, x) in o {
                m.insert(Key::from(k.as_str()), json_at(x, depth + 1)?);
            }
            Value::from(m)
        }
    })
}

/// The CEL type of a value, for "returned a string, not a bool".
pub(super) fn type_name(v: &Value) -> String {
    let t = v.type_of().to_string();
    // "an int", "a string".
    let article = if t.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {t}")
}

/// How deep `(`, `[` and `{` nest in the text, outside string literals
/// (quotes and backslash escapes followed; a bracket in an odd literal
/// can only make it count more, never less).
pub(super) fn bracket_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in text.chars() {
        match quote {
            Some(_) if escaped => escaped = false,
            Some(_) if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '"' | '\'' => quote = Some(c),
                '(' | '[' | '{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                ')' | ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
    }
    deepest
}

/// How deep the expression tree nests (a literal: 1). Walked with a
/// stack of its own, so an expression of any depth is measured without
/// recursing.
pub(super) fn depth(root: &IdedExpr) -> usize {
    let mut deepest = 0;
    let mut stack: Vec<(&IdedExpr, usize)> = vec![(root, 1)];
    while let Some((e, d)) = stack.pop() {
        deepest = deepest.max(d);
        let mut children: Vec<&IdedExpr> = Vec::new();
        match &e.expr {
            Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => {}
            Expr::Call(c) => {
                children.extend(c.target.as_deref());
                children.extend(&c.args);
            }
            Expr::Comprehension(c) => children.extend([
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ]),
            Expr::List(l) => children.extend(&l.elements),
            Expr::Map(m) => m.entries.iter().for_each(|en| entry(en, &mut children)),
            Expr::Struct(s) => s.entries.iter().for_each(|en| entry(en, &mut children)),
            Expr::Select(s) => children.push(&s.operand),
        }
        stack.extend(children.into_iter().map(|c| (c, d + 1)));
    }
    deepest
}

fn entry<'a>(e: &'a cel::common::ast::IdedEntryExpr, out: &mut Vec<&'a IdedExpr>) {
    match &e.expr {
        EntryExpr::MapEntry(m) => out.extend([&m.key, &m.value]),
        EntryExpr::StructField(f) => out.push(&f.value),
    }
}
