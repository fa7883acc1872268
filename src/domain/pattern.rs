//! Event patterns in ArcGIS's own trigger vocabulary, the one grammar
//! routing, replay filters and the admin API share:
//!
//! - `/S`, `/S/O`, `/S/I`, `/S/I/O` for Portal events of source S (item,
//!   group, user, role; singular or plural), id I and operation O. The
//!   operation compares case-insensitively (Esri writes both signIn and
//!   signin). A segment written `<groupID>` or `*` matches anything.
//! - `/services/<folder>/<name>.<Type>/<event>`: a prefix of a service
//!   event's URI.
//! - a word without a slash is a service change type: `FeaturesCreated`;
//!   `XEdited` also matches `XCreated`, `XUpdated` and `XDeleted`; `*`
//!   matches every event.

use super::event::{Event, EventOrigin};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Any,
    Lit(String),
}

impl Seg {
    fn parse(s: &str) -> Seg {
        if s == "*" || (s.starts_with('<') && s.ends_with('>')) {
            Seg::Any
        } else {
            Seg::Lit(s.to_string())
        }
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Seg::Any => true,
            Seg::Lit(l) => l.eq_ignore_ascii_case(value),
        }
    }
}

/// One compiled entry of a sink's `events` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// `*`: everything.
    All,
    /// A Portal trigger: source with up to two more segments.
    Portal {
        /// Singular source: item, group, user, role.
        source: String,
        /// Second segment: an id or an operation.
        second: Option<Seg2>,
    },
    /// `/services/...`: segments a service URI must start with.
    ServicePath(Vec<SegPub>),
    /// A service change type.
    ChangeType(String),
}

/// A public wrapper so `Pattern` can be compared in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegPub(Seg);

/// The segments after a Portal source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg2 {
    /// `/S/X`: X is an operation or an id.
    IdOrOperation(SegPub),
    /// `/S/I/O`.
    IdAndOperation(SegPub, SegPub),
}

fn singular(s: &str) -> String {
    let s = s.to_ascii_lowercase();
    match s.as_str() {
        "items" | "groups" | "users" | "roles" => s[..s.len() - 1].to_string(),
        _ => s,
    }
}

impl Pattern {
    /// Compiles one pattern, or says what is wrong with it.
    pub fn parse(raw: &str) -> Result<Pattern, String> {
        // ASCII white space only, like the change-type check below.
        let p = raw.trim_matches(|c: char| c.is_ascii_whitespace());
        if p.is_empty() {
            return Err("empty event pattern".into());
        }
        if p == "*" {
            return Ok(Pattern::All);
        }
        if let Some(path) = p.strip_prefix('/') {
            let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
            let Some((first, rest)) = segs.split_first() else {
                return Err(format!("{raw:?}: a trigger needs a source, like /items"));
            };
            if first.eq_ignore_ascii_case("services") {
                return Ok(Pattern::ServicePath(
                    rest.iter().map(|s| SegPub(Seg::parse(s))).collect(),
                ));
            }
            let source = singular(first);
            if !matches!(source.as_str(), "item" | "group" | "user" | "role") {
                return Err(format!(
                    "{raw:?}: unknown trigger source {first:?}; use /items, /groups, /users, /roles or /services"
                ));
            }
            let second = match rest {
                [] => None,
                [x] => Some(Seg2::IdOrOperation(SegPub(Seg::parse(x)))),
                [i, o] => Some(Seg2::IdAndOperation(
                    SegPub(Seg::parse(i)),
                    SegPub(Seg::parse(o)),
                )),
                _ => return Err(format!("{raw:?}: at most /source/id/operation")),
            };
            return Ok(Pattern::Portal { source, second });
        }
        // ASCII white space only: the admin API's documented grammar (and
        // the JSON Schema regex dialect clients check it with) means that.
        if p.contains(|c: char| c.is_ascii_whitespace()) || p.contains('/') {
            return Err(format!(
                "{raw:?}: a change type is one word like FeaturesCreated; a Portal trigger starts with /"
            ));
        }
        Ok(Pattern::ChangeType(p.to_string()))
    }

    /// Whether this pattern selects the event.
    pub fn matches(&self, e: &Event) -> bool {
        match self {
            Pattern::All => true,
            Pattern::Portal { source, second } => {
                if e.origin != EventOrigin::Portal || !e.source.eq_ignore_ascii_case(source) {
                    return false;
                }
                match second {
                    None => true,
                    Some(Seg2::IdOrOperation(x)) => x.0.matches(&e.operation) || x.0.matches(&e.id),
                    Some(Seg2::IdAndOperation(i, o)) => {
                        i.0.matches(&e.id) && o.0.matches(&e.operation)
                    }
                }
            }
            Pattern::ServicePath(segs) => {
                if e.origin != EventOrigin::Service {
                    return false;
                }
                let Some(rest) = e.uri.strip_prefix("/services/") else {
                    return false;
                };
                // The URI's folder is optional, so compare segment by segment.
                let parts: Vec<&str> = rest.split('/').collect();
                segs.len() <= parts.len() && segs.iter().zip(&parts).all(|(s, p)| s.0.matches(p))
            }
            Pattern::ChangeType(t) => {
                if e.origin != EventOrigin::Service {
                    return false;
                }
                if t.eq_ignore_ascii_case(&e.operation) {
                    return true;
                }
                edited_matches(t, &e.operation)
            }
        }
    }
}

/// `FeaturesEdited` stands for created, updated and deleted features (and
/// `AttachmentsEdited` for attachments), as in ArcGIS's change types.
fn edited_matches(pattern: &str, op: &str) -> bool {
    let lower = pattern.to_ascii_lowercase();
    let Some(stem) = lower.strip_suffix("edited") else {
        return false;
    };
    let op = op.to_ascii_lowercase();
    let Some(rest) = op.strip_prefix(stem) else {
        return false;
    };
    !stem.is_empty() && matches!(rest, "created" | "updated" | "deleted" | "edited")
}
