//! Bodies made of a message's fetched changes (`format = "changes"` and
//! `"geojson"`), shared by the `http` and `power-automate` kinds.

use serde_json::Value;

use super::RenderError;
use crate::arcgis::changes::ChangesDoc;
use crate::arcgis::geojson::feature_to_geojson;
use crate::domain::edit::Edit;
use crate::store::Claimed;

/// The stored changes document of `d`, parsed.
pub fn doc(d: &Claimed) -> Result<ChangesDoc, RenderError> {
    let text = d.changes.as_deref().ok_or_else(|| {
        RenderError::Refused(
            "no changes were fetched for this message (its source has no [sources.arcgis], or the fetch has not run)"
                .into(),
        )
    })?;
    Ok(serde_json::from_str(text)?)
}

/// `format = "changes"`: the changes document as stored (see README, "The
/// changes document").
pub fn changes_body(d: &Claimed) -> Result<Vec<u8>, RenderError> {
    // Parsed and written again, so what goes out is always the documented
    // shape, whatever an older relay stored.
    Ok(serde_json::to_vec(&doc(d)?)?)
}

/// `format = "geojson"`: an RFC 7946 FeatureCollection, one feature per
/// edit, with `edit` (`add`, `update`, `delete`) and `layer` among its
/// properties. Deletes known only by object id carry no geometry.
/// Coordinates are ArcGIS's, asked for in WGS 84 (`outSR=4326`) when a
/// sink renders GeoJSON; the relay does not reproject.
pub fn geojson_body(d: &Claimed) -> Result<Vec<u8>, RenderError> {
    let doc = doc(d)?;
    let mut features = Vec::with_capacity(doc.feature_count as usize);
    for layer in &doc.layers {
        let extra = |edit: Edit| {
            let mut m = serde_json::Map::new();
            m.insert("edit".into(), Value::String(edit.as_str().into()));
            m.insert("layer".into(), Value::from(layer.id));
            m
        };
        for (edit, list) in [
            (Edit::Add, &layer.adds),
            (Edit::Update, &layer.updates),
            (Edit::Delete, &layer.deletes),
        ] {
            for f in list {
                let feature = feature_to_geojson(f, extra(edit))
                    .map_err(|e| RenderError::Refused(format!("layer {}: {e}", layer.id)))?;
                features.push(feature);
            }
        }
        for id in &layer.delete_ids {
            let mut props = extra(Edit::Delete);
            props.insert("OBJECTID".into(), id.clone());
            features.push(geojson::Feature {
                bbox: None,
                geometry: None,
                id: None,
                properties: Some(props),
                foreign_members: None,
            });
        }
    }
    let collection = geojson::FeatureCollection {
        bbox: None,
        features,
        foreign_members: None,
    };
    Ok(serde_json::to_vec(&collection)?)
}
