//! Bodies made of a message's fetched changes (`format = "changes"` and
//! `"geojson"`), shared by the `http` and `power-automate` kinds.

use super::RenderError;
use crate::arcgis::changes::ChangesDoc;
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

/// `format = "geojson"`: one RFC 7946 feature per edit.
pub fn geojson_body(d: &Claimed) -> Result<Vec<u8>, RenderError> {
    let _ = doc(d)?;
    Err(RenderError::Refused("geojson: not yet".into()))
}
