//! What the templated kinds (`slack`, `teams`, `email`) show of a
//! message's fetched changes: counts per layer and the first few features
//! of each, as short lines people read.

use serde::Serialize;
use serde_json::Value;

use crate::arcgis::changes::ChangesDoc;

/// Features shown per layer.
const FEATURES_SHOWN: usize = 3;
/// Attributes shown per feature.
const ATTRIBUTES_SHOWN: usize = 5;
/// Characters of one attribute value shown.
const VALUE_CHARS: usize = 80;

/// The changes as templates get them (`changes` in the context).
#[derive(Debug, Clone, Serialize)]
pub struct ChangesView {
    /// Features in the document (deletes known only by id not counted).
    pub features: u64,
    /// Whether the document was cut at `max_features`.
    pub truncated: bool,
    /// The feature service URL.
    pub service: String,
    /// One line for all layers: "layer 0: 2 added, 1 updated; layer 1: 1 deleted".
    pub text: String,
    /// Per layer.
    pub layers: Vec<LayerView>,
}

/// One layer's changes.
#[derive(Debug, Clone, Serialize)]
pub struct LayerView {
    /// Layer or table id.
    pub id: i64,
    /// Added features.
    pub adds: usize,
    /// Updated features.
    pub updates: usize,
    /// Deleted features (whole or by id).
    pub deletes: usize,
    /// "layer 0: 2 added, 1 updated".
    pub text: String,
    /// The first features, attributes in the order ArcGIS sent them:
    /// "added: status=Out of service, name=H-1".
    pub first: Vec<String>,
}

/// The view of a stored changes document; `None` when there is none or
/// it does not read back (the templates then show the events alone).
pub fn view(changes: Option<&str>) -> Option<ChangesView> {
    let doc: ChangesDoc = serde_json::from_str(changes?).ok()?;
    let layers: Vec<LayerView> = doc
        .layers
        .iter()
        .map(|l| {
            let deletes = l.deletes.len() + l.delete_ids.len();
            let mut parts = Vec::new();
            for (n, word) in [
                (l.adds.len(), "added"),
                (l.updates.len(), "updated"),
                (deletes, "deleted"),
            ] {
                if n > 0 {
                    parts.push(format!("{n} {word}"));
                }
            }
            let counts = if parts.is_empty() {
                "no changes".to_string()
            } else {
                parts.join(", ")
            };
            let first = l
                .adds
                .iter()
                .map(|f| ("added", f))
                .chain(l.updates.iter().map(|f| ("updated", f)))
                .chain(l.deletes.iter().map(|f| ("deleted", f)))
                .take(FEATURES_SHOWN)
                .map(|(word, f)| format!("{word}: {}", attributes(f)))
                .collect();
            LayerView {
                id: l.id,
                adds: l.adds.len(),
                updates: l.updates.len(),
                deletes,
                text: format!("layer {}: {counts}", l.id),
                first,
            }
        })
        .collect();
    let text = layers
        .iter()
        .map(|l| l.text.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    Some(ChangesView {
        features: doc.feature_count,
        truncated: doc.truncated,
        service: doc.service,
        text: if doc.truncated {
            format!("{text} (more than shown: cut at the source's max_features)")
        } else {
            text
        },
        layers,
    })
}

/// The first attributes of a feature as `name=value`, skipping the
/// bookkeeping fields every feature has.
fn attributes(f: &Value) -> String {
    let Some(attrs) = f.get("attributes").and_then(Value::as_object) else {
        return "(no attributes)".into();
    };
    let skip = |k: &str| {
        let k = k.to_ascii_lowercase();
        k == "objectid" || k == "globalid" || k == "fid" || k.starts_with("shape")
    };
    let shown: Vec<String> = attrs
        .iter()
        .filter(|(k, v)| !skip(k) && !v.is_null())
        .take(ATTRIBUTES_SHOWN)
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            format!("{k}={}", super::facts::clip(&v, VALUE_CHARS))
        })
        .collect();
    if shown.is_empty() {
        match attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("objectid"))
        {
            Some((k, v)) => format!("{k}={v}"),
            None => "(no attributes)".into(),
        }
    } else {
        shown.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_first_features_read_naturally() {
        let doc = serde_json::json!({
            "service": "https://gis.example/arcgis/rest/services/Hydrants/FeatureServer",
            "truncated": false,
            "feature_count": 2,
            "layers": [{
                "id": 0,
                "adds": [{"attributes": {"OBJECTID": 7, "status": "Out of service", "name": "H-1"}}],
                "updates": [{"attributes": {"OBJECTID": 8, "Shape__Area": 3.5, "status": "ok"}}],
                "deletes": [],
                "delete_ids": [9]
            }]
        })
        .to_string();
        let v = view(Some(&doc)).unwrap();
        assert_eq!(v.text, "layer 0: 1 added, 1 updated, 1 deleted");
        assert_eq!(
            v.layers[0].first,
            vec![
                "added: status=Out of service, name=H-1",
                "updated: status=ok"
            ]
        );
        assert!(view(Some("not json")).is_none());
        assert!(view(None).is_none());
    }
}
