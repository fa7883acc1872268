//! Postgres backend (placeholder until written).
use super::*;
use crate::config::StoreConfig;

/// The Postgres store.
pub struct PgStore;

impl PgStore {
    /// Opens.
    pub async fn open(_c: &StoreConfig, _m: bool) -> Result<Arc<dyn Store>, StoreError> {
        Err(StoreError::Url("postgres is not implemented yet".into()))
    }
}
