//! The normalised event: what one ArcGIS notification is about, whatever
//! shape the sender used. Ingress produces events, routing matches them,
//! templated sinks render them, and the store keeps them next to the raw body.

use serde::{Deserialize, Serialize};

/// Who sent the payload an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventOrigin {
    /// Portal for ArcGIS organization webhook (items, groups, users, roles).
    Portal,
    /// ArcGIS Server or ArcGIS Online service webhook (feature or GP service).
    Service,
    /// A JSON payload that is not an ArcGIS shape (an `hmac` source).
    Generic,
}

/// One change, with the ArcGIS trigger URI that names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Which sender family.
    pub origin: EventOrigin,
    /// ArcGIS trigger URI: `/items/<id>/share`, `/services/Hosted/Parcels.FeatureServer/FeaturesCreated`.
    pub uri: String,
    /// Portal: `item`, `group`, `user`, `role` (singular). Services: `FeatureServer`, `GPServer`.
    pub source: String,
    /// Portal: the item/group id or user name. Services: the service name.
    pub id: String,
    /// Portal operation (`share`, `addUsers`) or service change type (`FeaturesCreated`).
    pub operation: String,
    /// Who made the change (Portal only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// When it happened, milliseconds since the Unix epoch, as the sender says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<i64>,
    /// The webhook's name in ArcGIS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Portal URL, ending in `/` (Portal only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal_url: Option<String>,
    /// `folder/serviceName.ServiceType` (services only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Where to fetch the changes (feature services) or the job status (GP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes_url: Option<String>,
    /// Event-specific details as the sender wrote them.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub properties: serde_json::Value,
}

impl Event {
    /// A link a person can open: the item, group or user page in the portal,
    /// or the changes/status URL of a service event.
    pub fn link(&self) -> Option<String> {
        match self.origin {
            EventOrigin::Portal => {
                let base = self.portal_url.as_deref()?;
                let base = if base.ends_with('/') {
                    base.to_string()
                } else {
                    format!("{base}/")
                };
                let id = percent_encoding::utf8_percent_encode(
                    &self.id,
                    percent_encoding::NON_ALPHANUMERIC,
                );
                match self.source.as_str() {
                    "item" => Some(format!("{base}home/item.html?id={id}")),
                    "group" => Some(format!("{base}home/group.html?id={id}")),
                    "user" => Some(format!("{base}home/user.html?user={id}")),
                    _ => Some(base),
                }
            }
            EventOrigin::Service => self.changes_url.clone(),
            EventOrigin::Generic => None,
        }
    }
}
