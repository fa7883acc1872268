//! What happened to one feature in a feature service's changes: the three
//! lists of an `extractChanges` edit (`adds`, `updates`, `deleteIds` or
//! `deletes`), named as filters and GeoJSON properties name them.

use serde::{Deserialize, Serialize};

/// One feature's change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Edit {
    /// In `adds`.
    Add,
    /// In `updates`.
    Update,
    /// In `deleteIds` or `deletes`.
    Delete,
}

impl Edit {
    /// `add`, `update` or `delete`: the value of `edit` in a filter and in
    /// a GeoJSON feature's properties.
    pub fn as_str(&self) -> &'static str {
        match self {
            Edit::Add => "add",
            Edit::Update => "update",
            Edit::Delete => "delete",
        }
    }
}

impl std::fmt::Display for Edit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
