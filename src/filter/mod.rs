//! Content filters: a sink's `filter`, a CEL expression
//! (<https://cel.dev>) that must be true for the sink to take an event or
//! one changed feature. Compiled once, when the sinks are built; evaluated
//! by whoever delivers, with [`Filter::matches_event`] or, when the
//! expression names a feature ([`Filter::uses_features`]),
//! [`Filter::matches_feature`] for each feature of the fetched changes.
//!
//! # Variables
//!
//! | name | type | value |
//! |---|---|---|
//! | `source` | string | the relay source the message came in on (`[[sources]] name`, `/hooks/<source>`) |
//! | `origin` | string | `portal`, `service` or `generic` |
//! | `kind` | string | what ArcGIS calls the event's source: `item`, `group`, `user`, `role` (Portal), `FeatureServer`, `GPServer` (services); empty for generic events |
//! | `operation` | string | Portal operation (`add`, `update`, `share`, `addUsers`...) or service change type (`FeaturesCreated`...) |
//! | `id` | string | item/group id or user name (Portal), service name (services) |
//! | `uri` | string | the trigger URI: `/items/<id>/share`, `/services/Hosted/Parcels.FeatureServer/FeaturesCreated` |
//! | `username`, `webhook`, `service`, `portal_url`, `changes_url` | string or null | as in the event; null when the sender did not say |
//! | `when` | int or null | the event time in **milliseconds since 1970** (ArcGIS's own unit), null when absent: `when > 1735689600000` |
//! | `properties` | map or null | the event's properties as the sender wrote them |
//! | `edit` | string | feature filters only: `add`, `update` or `delete` |
//! | `layer` | int | feature filters only: the layer or table id |
//! | `feature` | map | feature filters only: `{"attributes": {..}, "geometry": {..}}` as ArcGIS sent it |
//!
//! JSON becomes CEL as: null -> `null`, true/false -> bool, a whole
//! number that fits in an i64 (written without fraction or exponent) ->
//! `int`, any other number -> `double`, strings, lists and maps as they
//! are. The `cel` crate compares `int` and `double` by value: the filter
//! `feature.attributes.FLOW_GPM > 5` holds for `5.5`, and `2 == 2.0` is
//! true, so an administrator need not know whether ArcGIS wrote a field
//! as `5` or `5.0`. Arithmetic mixing the two (`FLOW_GPM + 1` on a double)
//! is an error, as CEL defines it: write `FLOW_GPM + 1.0`.
//!
//! Times are plain ints: the `cel` crate is built without its `chrono`
//! feature (and time zone database), so CEL's `timestamp()` and
//! `duration()` are unbound; `matches()` (RE2 syntax, the `regex` crate)
//! and the string, list and map functions are there.
//!
//! A key that is not there is an error ([`EvalError`]), not false:
//! `has(feature.attributes.status)` tests for it, and
//! `has(properties.x) && properties.x == 1` guards a comparison.
//! `matches_event` leaves `edit`, `layer` and `feature` unbound, so a
//! filter that names them fails there: use `matches_feature` when
//! [`Filter::uses_features`] says so.

mod value;

#[cfg(test)]
mod tests;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::domain::edit::Edit;
use crate::domain::event::Event;

/// Longest expression accepted, in bytes. Filters are one-liners; the
/// bound keeps the parser's and the evaluator's recursion small.
pub const MAX_LEN: usize = 4096;

/// Deepest expression tree accepted. Evaluation recurses once per level,
/// on whatever (small) stack the caller has, so this bounds its stack.
pub const MAX_DEPTH: usize = 48;

/// The variables only [`Filter::matches_feature`] binds.
const FEATURE_VARIABLES: [&str; 3] = ["feature", "edit", "layer"];

/// A compiled filter: cheap to clone, shareable between threads.
#[derive(Clone)]
pub struct Filter(Arc<Compiled>);

struct Compiled {
    text: String,
    program: cel::Program,
    uses_features: bool,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Filter").field(&self.0.text).finish()
    }
}

/// Why an expression was refused when compiled.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// Longer than [`MAX_LEN`].
    #[error("the filter is {len} bytes long; at most {MAX_LEN} are accepted")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// Not CEL: the parser's first complaint, with its position.
    #[error("syntax error at line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line.
        line: isize,
        /// 1-based column.
        column: isize,
        /// The parser's message.
        message: String,
        /// Everything the parser said.
        #[source]
        source: cel::ParseErrors,
    },
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("the filter nests {depth} levels deep; at most {MAX_DEPTH} are accepted")]
    TooDeep {
        /// How deep it nests.
        depth: usize,
    },
    /// The parser panicked (its bug, caught so that no configuration can
    /// crash the relay).
    #[error("the CEL parser failed on this expression: {0}")]
    Parser(String),
}

/// Why a filter could not decide. The caller decides what an undecided
/// filter means (the relay's rule: see where it is applied).
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// CEL's own error: no such key, no overload for these types, an
    /// unbound variable, division by zero.
    #[error("filter failed: {0}")]
    Execution(#[source] cel::ExecutionError),
    /// The expression gave something else than true or false.
    #[error("filter returned {0}, not a bool")]
    NotBool(String),
    /// The feature nests deeper than the relay converts.
    #[error("feature nests more than {max} levels deep")]
    TooDeep {
        /// The deepest nesting converted.
        max: usize,
    },
    /// The interpreter panicked (its bug, caught).
    #[error("the CEL interpreter failed on this input: {0}")]
    Panicked(String),
}

impl Filter {
    /// Compiles `expr`, or says why not: too long, not CEL (the parser's
    /// message and position), or nested too deep.
    pub fn compile(expr: &str) -> Result<Filter, FilterError> {
        if expr.len() > MAX_LEN {
            return Err(FilterError::TooLong { len: expr.len() });
        }
        // Brackets nest the parser's own recursion (and its prediction's)
        // deepest; refused before it sees them.
        let depth = value::bracket_depth(expr);
        if depth > MAX_DEPTH {
            return Err(FilterError::TooDeep { depth });
        }
        let program = parse(expr)?;
        let refs = program.references();
        let uses_features = FEATURE_VARIABLES.iter().any(|v| refs.has_variable(v));
        Ok(Filter(Arc::new(Compiled {
            text: expr.to_string(),
            program,
            uses_features,
        })))
    }

    /// The expression as written.
    pub fn text(&self) -> &str {
        &self.0.text
    }

    /// Whether the expression names `feature`, `edit` or `layer` (read
    /// from the parsed expression's references, not its text), so that it
    /// can only be decided per feature, on fetched changes. A macro
    /// variable of one of those names (`list.exists(layer, ...)`) counts
    /// too: it errs on the side of fetching.
    pub fn uses_features(&self) -> bool {
        self.0.uses_features
    }

    /// Decides for one event of a message that came in on `source`.
    pub fn matches_event(&self, source: &str, event: &Event) -> Result<bool, EvalError> {
        self.run(|ctx| value::bind_event(ctx, source, event))
    }

    /// Decides for one feature of the changes an event announced: `edit`
    /// is the list it was in, `layer` its layer or table id, `feature`
    /// the Esri JSON feature as fetched.
    pub fn matches_feature(
        &self,
        source: &str,
        event: &Event,
        edit: Edit,
        layer: i64,
        feature: &serde_json::Value,
    ) -> Result<bool, EvalError> {
        self.run(|ctx| {
            value::bind_event(ctx, source, event)?;
            ctx.add_variable_from_value("edit", edit.as_str());
            ctx.add_variable_from_value("layer", layer);
            ctx.add_variable_from_value("feature", value::json(feature)?);
            Ok(())
        })
    }

    fn run(
        &self,
        bind: impl FnOnce(&mut cel::Context<'_, '_>) -> Result<(), EvalError>,
    ) -> Result<bool, EvalError> {
        // The `cel` crate is young and fuzzed but not proven: whatever
        // it does on odd input must stay one filter's error, never a
        // worker's crash.
        let run = AssertUnwindSafe(|| {
            value::with_context(|ctx| {
                bind(ctx)?;
                match self.0.program.execute(ctx) {
                    Ok(cel::Value::Bool(b)) => Ok(b),
                    Ok(other) => Err(EvalError::NotBool(value::type_name(&other))),
                    Err(e) => Err(EvalError::Execution(e)),
                }
            })
        });
        catch_unwind(run).unwrap_or_else(|p| Err(EvalError::Panicked(panic_message(&p))))
    }
}

/// Stack for parsing: the parser and the tree it builds recurse once per
/// level of the text, which [`MAX_LEN`] bounds but a caller's stack (a
/// test thread's 2 MiB) need not hold. Reserved, not touched: only what
/// the parse uses is ever mapped.
const PARSE_STACK: usize = 256 << 20;

/// Parses on a thread with [`PARSE_STACK`], and checks the depth there
/// too, so that a tree too deep to evaluate is also dropped (recursively)
/// where there is room for it.
fn parse(expr: &str) -> Result<cel::Program, FilterError> {
    let text = expr.to_string();
    let parsed = std::thread::Builder::new()
        .name("hookrelay-filter-parse".into())
        .stack_size(PARSE_STACK)
        .spawn(move || {
            let program = catch_unwind(|| cel::Program::compile(&text))
                .map_err(|p| FilterError::Parser(panic_message(&p)))?
                .map_err(syntax_error)?;
            let depth = value::depth(program.expression());
            if depth > MAX_DEPTH {
                return Err(FilterError::TooDeep { depth });
            }
            Ok(program)
        })
        .map_err(|e| FilterError::Parser(format!("cannot start the parser's thread: {e}")))?
        .join();
    parsed.unwrap_or_else(|p| Err(FilterError::Parser(panic_message(&p))))
}

fn syntax_error(e: cel::ParseErrors) -> FilterError {
    let (line, column, message) = match e.errors.first() {
        Some(first) => (first.pos.0, first.pos.1, first.msg.clone()),
        None => (0, 0, e.to_string()),
    };
    FilterError::Syntax {
        line,
        column,
        message,
        source: e,
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}
