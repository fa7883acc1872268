//! `[store]` and `[retention]`: where messages live and how long.

use serde::{Deserialize, Serialize};

use super::values::{ser_url, Dur};

/// `[store]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://path` (created when missing) or `postgres://...`.
    #[serde(serialize_with = "ser_url")]
    pub url: String,
    /// Connections in the pool (Postgres) or readers (SQLite).
    pub max_connections: u32,
    /// Longest a single statement may run (Postgres `statement_timeout`).
    pub statement_timeout: Dur,
    /// Most messages committed in one group commit.
    pub ingest_batch: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "sqlite://hookrelay.db".into(),
            max_connections: 8,
            statement_timeout: Dur::secs(30),
            ingest_batch: 512,
        }
    }
}

/// `[retention]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Messages whose deliveries all succeeded are purged after this.
    pub delivered: Dur,
    /// Messages with a dead delivery are purged after this.
    pub dead: Dur,
    /// How often the purge runs.
    pub interval: Dur,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            delivered: Dur::secs(24 * 3600),
            dead: Dur::secs(7 * 24 * 3600),
            interval: Dur::secs(300),
        }
    }
}
