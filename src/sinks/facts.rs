//! The human facts of an event — what happened, to what, by whom, when,
//! and a link — shared by every sink that writes for people (Slack, Teams,
//! e-mail) and by the template context they render from.

use serde::Serialize;
use serde_json::Value;

use crate::domain::event::{Event, EventOrigin};
use crate::store::Claimed;

/// One property of an event, flattened to text for a fact list.
#[derive(Debug, Clone, Serialize)]
pub struct Detail {
    /// Property name as ArcGIS wrote it (`sharedToGroups`).
    pub name: String,
    /// Its value as text: lists joined with ", ", objects as compact JSON.
    pub value: String,
    /// `name: value`, for one-line lists.
    pub text: String,
}

impl Detail {
    fn new(name: String, value: String) -> Detail {
        let text = format!("{name}: {value}");
        Detail { name, value, text }
    }
}

/// What a person needs to know about one event.
#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    /// A short sentence without the actor: "Shared item 6cd8…".
    pub title: String,
    /// The full sentence: "jdoe shared item 6cd8…".
    pub summary: String,
    /// What happened, in words: "shared", "features created".
    pub action: String,
    /// What it happened to: "item 6cd8…", "feature service Hosted/Parcels".
    pub target: String,
    /// Who did it (Portal events only).
    pub who: Option<String>,
    /// When, RFC 3339 UTC to the second.
    pub when: String,
    /// A page to open: the item, group or user page, or the changes/status URL.
    pub link: Option<String>,
    /// What the link opens: "Open item", "View changes".
    pub link_label: Option<String>,
    /// The webhook's name in ArcGIS.
    pub webhook: Option<String>,
    /// The ArcGIS trigger URI.
    pub uri: String,
    /// Portal: item, group, user, role. Services: FeatureServer, GPServer.
    pub source: String,
    /// The item/group id, user name or service name.
    pub id: String,
    /// The raw operation or change type (`share`, `FeaturesCreated`).
    pub operation: String,
    /// `folder/name.Type` for service events.
    pub service: Option<String>,
    /// The event's properties as text, for fact lists.
    pub details: Vec<Detail>,
    /// The event's properties as ArcGIS sent them, for custom templates
    /// (shared with the event, not copied).
    pub properties: crate::domain::event::Props,
}

/// RFC 3339 UTC to the second, the form people read.
pub fn rfc3339_seconds(ms: i64) -> String {
    crate::domain::event::format_time(ms, crate::domain::event::TimePrecision::Seconds)
}

/// The facts of `e`; `fallback_ms` stands in for a missing event time
/// (the message's arrival).
pub fn facts(e: &Event, fallback_ms: i64) -> Facts {
    let when = rfc3339_seconds(e.when.unwrap_or(fallback_ms));
    let (action, target, link_label) = match e.origin {
        EventOrigin::Portal => {
            let target = if e.id.is_empty() {
                e.source.clone()
            } else {
                format!("{} {}", e.source, e.id)
            };
            let label = match e.source.as_str() {
                "item" | "group" | "user" => format!("Open {}", e.source),
                _ => "Open portal".to_string(),
            };
            (portal_action(&e.operation), target, label)
        }
        EventOrigin::Service => {
            let name = e
                .service
                .as_deref()
                .map(|s| s.rsplit_once('.').map_or(s, |(n, _)| n))
                .unwrap_or(&e.id);
            let (kind, label) = match e.source.as_str() {
                "GPServer" => ("geoprocessing service", "View job status"),
                "FeatureServer" => ("feature service", "View changes"),
                other => (other, "View changes"),
            };
            (
                words(&e.operation),
                format!("{kind} {name}"),
                label.to_string(),
            )
        }
        EventOrigin::Generic => (
            "received".to_string(),
            "a webhook".to_string(),
            String::new(),
        ),
    };
    let (title, summary) = match e.origin {
        EventOrigin::Portal => {
            let title = capitalize(&format!("{action} {target}"));
            let summary = match &e.username {
                Some(u) if !u.is_empty() => format!("{u} {action} {target}"),
                _ => title.clone(),
            };
            (title, summary)
        }
        EventOrigin::Service => {
            let sep = if e.source == "GPServer" { "on" } else { "in" };
            let t = format!("{} {sep} {target}", capitalize(&action));
            (t.clone(), t)
        }
        EventOrigin::Generic => (
            "Webhook received".to_string(),
            "Webhook received".to_string(),
        ),
    };
    let link = e.link();
    Facts {
        title,
        summary,
        action,
        target,
        who: e.username.clone().filter(|u| !u.is_empty()),
        when,
        link_label: link.as_ref().map(|_| link_label),
        link,
        webhook: e.webhook.clone(),
        uri: e.uri.clone(),
        source: e.source.clone(),
        id: e.id.clone(),
        operation: e.operation.clone(),
        service: e.service.clone(),
        details: details(&e.properties),
        properties: e.properties.clone(),
    }
}

/// Portal operations as a past-tense phrase that reads before the target.
/// Unknown operations fall back to their words ("did fooBar on").
fn portal_action(op: &str) -> String {
    let known = match op.to_ascii_lowercase().as_str() {
        "add" => "created",
        "update" => "updated",
        "delete" => "deleted",
        "share" => "shared",
        "unshare" => "unshared",
        "move" => "moved",
        "publish" => "published",
        "changeowner" | "reassign" | "reassignownership" => "reassigned",
        "protect" => "protected",
        "unprotect" => "unprotected",
        "addusers" => "added users to",
        "removeusers" => "removed users from",
        "updateusers" => "changed members of",
        "invite" | "inviteusers" => "invited users to",
        "itemshare" => "shared an item with",
        "itemunshare" => "unshared an item from",
        "updateuserrole" => "changed the role of",
        "updateuserlicensetype" => "changed the license type of",
        "disable" => "disabled",
        "enable" => "enabled",
        "signin" => "signed in as",
        "signout" => "signed out as",
        _ => return format!("did {} on", words(op)),
    };
    known.to_string()
}

/// `FeaturesCreated` → "features created"; `addUsers` → "add users".
pub fn words(op: &str) -> String {
    let mut out = String::with_capacity(op.len() + 4);
    let mut prev_lower = false;
    for c in op.chars() {
        if c.is_uppercase() && prev_lower {
            out.push(' ');
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        if c == '_' || c == '-' {
            out.push(' ');
        } else {
            out.extend(c.to_lowercase());
        }
    }
    out
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Properties as name/value text; nested values as compact JSON.
/// Most properties listed per event, and most characters kept of each
/// value before any trim level cuts it further. Without them, the events
/// of one payload (which share one properties value) each copied every
/// value in full: a 900 KB property across 100 shown events was 90 MB.
const MAX_DETAILS: usize = 50;
const MAX_DETAIL_CHARS: usize = 4096;

fn details(props: &Value) -> Vec<Detail> {
    let Value::Object(map) = props else {
        return Vec::new();
    };
    map.iter()
        .filter(|(_, v)| !v.is_null())
        .take(MAX_DETAILS)
        .map(|(k, v)| Detail::new(clip(k, MAX_DETAIL_CHARS), value_text(v, MAX_DETAIL_CHARS)))
        .collect()
}

/// A property value as text, at most about `max` characters (longer ones
/// end in "…" once clipped by the trim level).
fn value_text(v: &Value, max: usize) -> String {
    match v {
        Value::String(s) => clip(s, max),
        Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
            let mut out = String::new();
            for (i, item) in items.iter().enumerate() {
                if out.len() > max {
                    break;
                }
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&value_text(item, max));
            }
            clip(&out, max)
        }
        Value::Null => String::new(),
        other => {
            let mut w = Bounded(Vec::new(), max.saturating_mul(4));
            let _ = serde_json::to_writer(&mut w, other);
            clip(&String::from_utf8_lossy(&w.0), max)
        }
    }
}

/// Keeps the first bytes written to it and refuses the rest, so a huge
/// nested value is never written out whole.
struct Bounded(Vec<u8>, usize);

impl std::io::Write for Bounded {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let room = self.1.saturating_sub(self.0.len());
        if room == 0 {
            return Err(std::io::Error::other("long enough"));
        }
        let n = b.len().min(room);
        self.0.extend_from_slice(&b[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Cuts `s` to at most `max` characters, ending in "…" when cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// How much of each event a rendering keeps. Sinks with a size limit
/// (Teams' 28 KB) render again with the next, smaller level.
#[derive(Debug, Clone, Copy)]
pub struct Trim {
    /// Events shown; the rest are counted in `more`.
    pub max_events: usize,
    /// Longest property value shown, in characters.
    pub detail_chars: usize,
    /// Property details shown at all.
    pub details: bool,
    /// Raw properties passed to the template.
    pub properties: bool,
}

/// From everything to the bare minimum; the first that fits is sent.
pub const TRIM_LEVELS: [Trim; 5] = [
    Trim {
        max_events: 20,
        detail_chars: 500,
        details: true,
        properties: true,
    },
    Trim {
        max_events: 20,
        detail_chars: 100,
        details: true,
        properties: false,
    },
    Trim {
        max_events: 20,
        detail_chars: 0,
        details: false,
        properties: false,
    },
    Trim {
        max_events: 5,
        detail_chars: 0,
        details: false,
        properties: false,
    },
    Trim {
        max_events: 1,
        detail_chars: 0,
        details: false,
        properties: false,
    },
];

/// What every template sees.
#[derive(Debug, Clone, Serialize)]
pub struct Context {
    /// One line for the whole delivery: the event's summary when there is
    /// one event, else "N ArcGIS events from <webhook name>".
    pub headline: String,
    /// Events shown (matched by the sink's `events` filter, trimmed).
    pub events: Vec<Facts>,
    /// Matched events in all.
    pub count: usize,
    /// Matched events not shown.
    pub more: usize,
    /// Source name from the config.
    pub source: String,
    /// The webhook's name, from the first event that has one.
    pub webhook: Option<String>,
    /// Message id.
    pub message_id: String,
    /// Delivery id.
    pub delivery_id: String,
    /// When the relay received the message, RFC 3339 UTC.
    pub received_at: String,
    /// The fetched changes, on an enriched source (counts per layer, the
    /// first features); absent otherwise.
    pub changes: Option<super::changes_view::ChangesView>,
}

/// Builds the template context of a delivery: only the events the sink matched.
pub fn context(d: &Claimed, trim: Trim) -> Context {
    let matched = d.matched_events();
    let count = matched.len();
    let mut events: Vec<Facts> = matched
        .iter()
        .take(trim.max_events)
        .map(|e| facts(e, d.received_at.get()))
        .collect();
    for f in &mut events {
        if !trim.details {
            f.details.clear();
        } else {
            for det in &mut f.details {
                *det = Detail::new(
                    std::mem::take(&mut det.name),
                    clip(&det.value, trim.detail_chars),
                );
            }
        }
        if !trim.properties {
            f.properties = std::sync::Arc::new(Value::Null);
        }
    }
    let webhook = matched.iter().find_map(|e| e.webhook.clone());
    let headline = match (events.as_slice(), &webhook) {
        ([one], _) if count == 1 => one.summary.clone(),
        (_, Some(w)) => format!("{count} ArcGIS events from {w}"),
        (_, None) => format!("{count} ArcGIS events from source {}", d.source),
    };
    Context {
        headline,
        more: count - events.len(),
        count,
        webhook,
        events,
        source: d.source.to_string(),
        message_id: d.message_id.to_string(),
        delivery_id: d.id.to_string(),
        received_at: rfc3339_seconds(d.received_at.get()),
        changes: super::changes_view::view(d.changes.as_deref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_properties_are_cut_before_they_are_copied() {
        let big = "x".repeat(900_000);
        let nested: Value = serde_json::json!({"a": [big.clone(), {"b": big.clone()}]});
        let mut props = serde_json::Map::new();
        props.insert("blob".into(), Value::String(big.clone()));
        props.insert(
            "list".into(),
            Value::Array(vec![Value::String(big.clone()); 3]),
        );
        props.insert("nested".into(), nested);
        for i in 0..200 {
            props.insert(format!("k{i}"), Value::from(i));
        }
        let d = details(&Value::Object(props));
        assert_eq!(d.len(), MAX_DETAILS);
        for det in &d {
            assert!(
                det.value.chars().count() <= MAX_DETAIL_CHARS,
                "{}",
                det.name
            );
        }
        assert!(d[0].value.ends_with('…'));
    }

    #[test]
    fn operations_read_as_words() {
        assert_eq!(words("FeaturesCreated"), "features created");
        assert_eq!(words("addUsers"), "add users");
        assert_eq!(portal_action("signin"), "signed in as");
        assert_eq!(portal_action("fooBar"), "did foo bar on");
    }

    #[test]
    fn clip_counts_characters() {
        assert_eq!(clip("héllo", 5), "héllo");
        assert_eq!(clip("héllo wörld", 5), "héll…");
    }

    #[test]
    fn times_are_utc_seconds() {
        assert_eq!(rfc3339_seconds(1730385704521), "2024-10-31T14:41:44Z");
    }
}
