//! `[[sources]]`: the senders ingress accepts.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::arcgis::ArcgisSourceConfig;
use super::values::{Dur, Secrets};

/// How a source authenticates and what it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// Portal organization webhooks: shared secret in a header or `info.secret`.
    ArcgisPortal,
    /// ArcGIS Server / Online service webhooks: `x-esriHook-Signature` HMAC.
    ArcgisService,
    /// GitHub-style HMAC signers.
    Hmac,
}

/// How an `hmac` source's signature is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SigEncoding {
    /// Lowercase or uppercase hexadecimal.
    #[default]
    Hex,
    /// Standard base64.
    Base64,
}

/// `[[sources]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Path segment: `POST /hooks/<name>`.
    pub name: String,
    /// Sender type.
    pub kind: SourceKind,
    /// Shared secret or signature key; a list during rotation.
    pub secret: Secrets,
    /// `hmac` only: the signature header.
    #[serde(default)]
    pub header: Option<String>,
    /// `hmac` only: prefix before the signature (default `sha256=`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// `hmac` only: hex or base64.
    #[serde(default)]
    pub encoding: Option<SigEncoding>,
    /// Overrides `[server] dedupe_window`.
    #[serde(default)]
    pub dedupe_window: Option<Dur>,
    /// When set, only these networks may post.
    #[serde(default)]
    pub allow_ips: Vec<IpNet>,
    /// `arcgis-service` only: `[sources.arcgis]`, how to fetch the edits a
    /// payload's `changesUrl` points at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arcgis: Option<ArcgisSourceConfig>,
}

impl SourceConfig {
    /// Whether this source's feature-service events are enriched with
    /// their edited features (the fetch stage).
    pub fn enriches(&self) -> bool {
        self.arcgis.is_some()
    }
}
