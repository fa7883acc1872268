//! A sink's `filter` applied to one claimed delivery before it renders:
//! the events (or, for a filter over `feature`, the changed features)
//! that do not match are left out of what the sink sees. An evaluation
//! error counts as no match and is counted; it never fails the delivery.

use serde_json::{json, Value};

use crate::arcgis::changes::ChangesDoc;
use crate::domain::edit::Edit;
use crate::domain::event::Event;
use crate::filter::Filter;
use crate::store::Claimed;

/// What the filter left of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filtered {
    /// Something is left to send.
    pub kept: bool,
    /// Evaluations that failed (counted as no match).
    pub errors: u64,
}

/// Narrows `d` to what `filter` keeps: its matched events, or, when the
/// filter reads features, the features of its fetched changes.
pub fn apply(filter: &Filter, d: &mut Claimed) -> Filtered {
    let mut errors = 0;
    let source = d.source.to_string();
    let mut test = |r: Result<bool, crate::filter::EvalError>| match r {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(error = %e, "filter evaluation failed: counted as no match");
            errors += 1;
            false
        }
    };
    if !filter.uses_features() {
        let events = &d.events;
        let kept: Vec<usize> = d
            .matched
            .iter()
            .copied()
            .filter(|i| {
                events
                    .get(*i)
                    .is_some_and(|e| test(filter.matches_event(&source, e)))
            })
            .collect();
        d.matched = kept;
        return Filtered {
            kept: !d.matched.is_empty(),
            errors,
        };
    }
    let Some(mut doc) = d
        .changes
        .as_deref()
        .and_then(|t| serde_json::from_str::<ChangesDoc>(t).ok())
    else {
        // A filter over features, and no features: nothing can match.
        return Filtered {
            kept: false,
            errors,
        };
    };
    let event: Event = match d
        .matched_events()
        .into_iter()
        .find(|e| e.changes_url.is_some())
    {
        Some(e) => e.clone(),
        None => {
            return Filtered {
                kept: false,
                errors,
            }
        }
    };
    let mut count = 0u64;
    for layer in &mut doc.layers {
        let id = layer.id;
        let mut keep = |edit: Edit, list: &mut Vec<Value>| {
            list.retain(|f| test(filter.matches_feature(&source, &event, edit, id, f)));
        };
        keep(Edit::Add, &mut layer.adds);
        keep(Edit::Update, &mut layer.updates);
        keep(Edit::Delete, &mut layer.deletes);
        layer.delete_ids.retain(|oid| {
            let f = json!({ "attributes": { "OBJECTID": oid } });
            test(filter.matches_feature(&source, &event, Edit::Delete, id, &f))
        });
        count += (layer.adds.len() + layer.updates.len() + layer.deletes.len()) as u64;
    }
    doc.layers.retain(|l| {
        !(l.adds.is_empty()
            && l.updates.is_empty()
            && l.deletes.is_empty()
            && l.delete_ids.is_empty())
    });
    doc.feature_count = count;
    let kept = !doc.layers.is_empty();
    d.changes = serde_json::to_string(&doc).ok();
    Filtered { kept, errors }
}
