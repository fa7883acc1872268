//! Durable state: messages, their deliveries and every attempt.
//!
//! [`Store`] is the one interface both backends implement (`sqlite.rs`,
//! `postgres.rs`); nothing above this module knows which one runs. All times
//! are [`Millis`] (milliseconds since the Unix epoch) passed in by the caller, so
//! tests can drive the queue through time without sleeping.
//!
//! Lease model: claiming a delivery sets `status = in_flight`, a fresh
//! `lease_token`, and moves `next_attempt_at` to the lease's end. A worker
//! that dies never completes, so its delivery becomes due again when the
//! lease ends and any worker claims it. Completion only counts when the
//! token still matches, so a late worker cannot overwrite a newer claim.

pub mod batch;
pub mod catalog;
pub mod fetch;
mod model;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

pub use catalog::{Catalog, FetchQueue};
pub use fetch::{
    ClaimedFetch, FetchCompletion, FetchOutcome, FetchRow, FetchStats, FetchStatus, PARKED,
};
pub use model::*;

/// What can go wrong in the store. Ingress maps all of these to 503: the
/// message was not committed, so the sender must try again.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database answered with an error or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Schema migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The store URL is unusable.
    #[error("invalid store url: {0}")]
    Url(String),
    /// Another relay process already serves this SQLite file.
    #[error("{0}")]
    Locked(String),
    /// A stored row could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The writer task is gone (shutting down).
    #[error("store is shutting down")]
    Closed,
}

/// Progress of a replay: `(requeued so far, matched in all)`.
pub type ReplayProgress<'a> = dyn Fn(u64, u64) + Send + Sync + 'a;

/// The storage interface: the queue's write path, per backend, on top of
/// the [`Catalog`] (the read and admin half, written once). Every method is
/// one short transaction; none is ever held open across a network call to
/// a sink.
#[async_trait]
pub trait Store: Catalog + FetchQueue + Send + Sync + 'static {
    /// Whether group commits should run on a thread of their own (see
    /// [`batch::Batcher::spawn_dedicated`]). True for SQLite, whose single
    /// writer is the serial path every webhook waits on; Postgres commits
    /// over the network on the shared runtime.
    fn dedicated_commit_thread(&self) -> bool {
        false
    }

    /// Commits a batch of messages with their deliveries in one transaction
    /// (group commit), applying dedupe. Returns one outcome per message, in order.
    async fn ingest(
        &self,
        batch: &[NewMessage],
        now: Millis,
    ) -> Result<Vec<IngestOutcome>, StoreError>;

    /// Claims up to `limit` due deliveries of `sink`, leasing them until `lease_until`.
    async fn claim(
        &self,
        sink: &SinkName,
        limit: usize,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Vec<Claimed>, StoreError>;

    /// Records finished attempts and moves each delivery to its next state,
    /// in one transaction. A completion whose lease was lost records the
    /// attempt but leaves the delivery alone.
    async fn complete(&self, batch: &[Completion]) -> Result<(), StoreError>;

    /// Returns leased deliveries to `pending`, due `now`, without spending an attempt.
    async fn release(&self, leases: &[Lease], now: Millis) -> Result<(), StoreError>;

    /// Earliest `next_attempt_at` among deliveries of these sinks that could be claimed.
    async fn next_due(&self, sinks: &[SinkName]) -> Result<Option<Millis>, StoreError>;

    /// A trivial query: is the store answering?
    async fn ping(&self) -> Result<(), StoreError>;

    /// Prepares the store to be served: releases leases a crashed process of
    /// this same store left behind, where the backend can know that it is
    /// the only server (SQLite). No-op on shared stores.
    async fn recover(&self, now: Millis) -> Result<u64, StoreError>;

    /// Closes connections and releases what the store holds (the SQLite
    /// serve lock). Called once at the very end of a relay's shutdown.
    async fn close(&self) {}

    /// Waits until something may have become due (another process queued
    /// work). Backends without a notification channel never return; callers
    /// always combine it with a poll interval.
    async fn wait_for_work(&self) {
        std::future::pending::<()>().await
    }
}

/// Opens the store named by `url`, applying migrations when `migrate` is set.
/// `serving` takes the single-server lock of an SQLite file.
pub async fn open(
    config: &crate::config::StoreConfig,
    migrate: bool,
    serving: bool,
) -> Result<Arc<dyn Store>, StoreError> {
    if config.url.starts_with("sqlite:") {
        let s = sqlite::SqliteStore::open(config, migrate, serving).await?;
        Ok(Arc::new(s))
    } else {
        let s = postgres::PgStore::open(config, migrate).await?;
        Ok(s)
    }
}

/// Now, from the system clock.
pub fn now_ms() -> Millis {
    Millis::now()
}

/// Whether any of a message's events (indexes from a delivery) match the
/// replay filter's event pattern. Shared by both backends.
pub(crate) fn events_match(
    events_json: &str,
    indexes_json: &str,
    pattern: &crate::domain::pattern::Pattern,
) -> bool {
    let events = crate::domain::event::decode_events(events_json).unwrap_or_default();
    let idx: Vec<usize> = serde_json::from_str(indexes_json).unwrap_or_default();
    idx.iter()
        .filter_map(|i| events.get(*i))
        .any(|e| pattern.matches(e))
}

/// A claimed delivery with its message, as both backends' claim
/// statements return it (`attempts` cast to `BIGINT` where the column is
/// an `INTEGER`).
#[derive(sqlx::FromRow)]
pub(crate) struct ClaimRow {
    id: DeliveryId,
    message_id: MessageId,
    attempts: i64,
    cycle_started_at: Millis,
    matched: String,
    source: SourceName,
    received_at: Millis,
    content_type: String,
    body: Vec<u8>,
    events: String,
}

impl ClaimRow {
    /// The claim, its stored events and matched indexes decoded on their
    /// own, so that one row that does not read back never fails its batch:
    /// it comes back with empty events and the reason (see
    /// [`Claimed::defect`]).
    pub(crate) fn into_claimed(self, lease_token: &LeaseToken, sink: &SinkName) -> Claimed {
        let events = crate::domain::event::decode_events(&self.events);
        let matched = serde_json::from_str::<Vec<usize>>(&self.matched);
        let (events, matched, defect) = match (events, matched) {
            (Ok(e), Ok(m)) => (e, m, None),
            (Err(e), _) => (Vec::new(), Vec::new(), Some(format!("undecodable: {e}"))),
            (_, Err(e)) => (
                Vec::new(),
                Vec::new(),
                Some(format!("undecodable: matched events: {e}")),
            ),
        };
        Claimed {
            id: self.id,
            lease_token: lease_token.clone(),
            sink: sink.clone(),
            attempts: self.attempts.clamp(0, u32::MAX as i64) as u32,
            cycle_started_at: self.cycle_started_at,
            message_id: self.message_id,
            source: self.source,
            received_at: self.received_at,
            content_type: self.content_type,
            body: self.body,
            events,
            matched,
            defect,
            // Read separately, for the sinks that render them (see
            // `FetchQueue::fetch_states`): the claim stays one table's
            // queue and one message lookup per row.
            fetch: None,
            changes: None,
        }
    }
}
