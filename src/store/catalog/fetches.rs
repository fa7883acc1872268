//! The fetch queue, written once for both backends (portable SQL on the
//! catalog's [`Fetch`]/[`Write`] primitives). Fetch jobs are few (one per
//! feature-service webhook whose routes need its changes), so the claim is
//! an `UPDATE` and a read by lease token rather than the delivery queue's
//! tuned per-backend statements.

use async_trait::async_trait;

use super::super::fetch::{
    ClaimedFetch, FetchCompletion, FetchOutcome, FetchRow, FetchStats, FetchStatus, PARKED,
};
use super::super::{LeaseToken, MessageId, Millis, SourceName, StoreError};
use super::{Fetch, Param, Query, Write};

/// A claimed job with its message's events.
#[derive(sqlx::FromRow)]
pub struct FetchClaimRaw {
    message_id: MessageId,
    attempts: i64,
    cycle_started_at: Millis,
    source: SourceName,
    events: String,
}

/// A `fetches` row without its changes.
#[derive(sqlx::FromRow)]
pub struct FetchRaw {
    message_id: MessageId,
    status: String,
    attempts: i64,
    next_attempt_at: Millis,
    last_error: Option<String>,
    summary: Option<String>,
    created_at: Millis,
    updated_at: Millis,
}

/// A job's status and changes.
#[derive(sqlx::FromRow)]
pub struct FetchStateRaw {
    message_id: MessageId,
    status: String,
    changes: Option<String>,
}

/// One `GROUP BY status` count.
#[derive(sqlx::FromRow)]
pub struct CountRaw {
    status: String,
    n: i64,
}

/// One optional text column named `value`.
#[derive(sqlx::FromRow)]
pub struct OptTextRaw {
    value: Option<String>,
}

/// One optional integer column named `value`.
#[derive(sqlx::FromRow)]
pub struct OptIntRaw {
    value: Option<i64>,
}

/// Everything the fetch queue needs of a backend.
pub trait FetchSql:
    Fetch<FetchClaimRaw>
    + Fetch<FetchRaw>
    + Fetch<FetchStateRaw>
    + Fetch<CountRaw>
    + Fetch<OptTextRaw>
    + Fetch<OptIntRaw>
    + Write
{
}

impl<S> FetchSql for S where
    S: Fetch<FetchClaimRaw>
        + Fetch<FetchRaw>
        + Fetch<FetchStateRaw>
        + Fetch<CountRaw>
        + Fetch<OptTextRaw>
        + Fetch<OptIntRaw>
        + Write
{
}

/// The fetch stage's queue: claim, complete, and what the admin side reads.
#[async_trait]
pub trait FetchQueue: Send + Sync {
    /// Leases up to `limit` due fetch jobs until `lease_until`.
    async fn claim_fetches(
        &self,
        limit: usize,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Vec<ClaimedFetch>, StoreError>;

    /// Records how a fetch attempt ended. Done: the changes are stored and
    /// the message's parked deliveries become due, in one transaction.
    /// Dead: the parked deliveries die with the fetch's reason, likewise.
    /// A completion whose lease was lost changes nothing.
    async fn complete_fetch(&self, c: &FetchCompletion) -> Result<(), StoreError>;

    /// The message's fetch job, if it has one.
    async fn fetch_row(&self, message_id: &MessageId) -> Result<Option<FetchRow>, StoreError>;

    /// The message's fetched changes document (JSON), once fetched.
    async fn fetched_changes(&self, message_id: &MessageId) -> Result<Option<String>, StoreError>;

    /// Jobs by status and the deliveries waiting on them.
    async fn fetch_stats(&self) -> Result<FetchStats, StoreError>;

    /// The fetch status and, once done, the changes of each of these
    /// messages that has a fetch job (others are absent).
    async fn fetch_states(
        &self,
        messages: &[MessageId],
    ) -> Result<Vec<(MessageId, FetchStatus, Option<String>)>, StoreError>;

    /// The earliest time a job could be claimed.
    async fn next_fetch_due(&self) -> Result<Option<Millis>, StoreError>;

    /// Settles parked deliveries whose fetch already ended: due now when
    /// it is done (or gone), dead when it died. Completing a fetch does
    /// this for the deliveries parked at that moment; the sweep catches a
    /// delivery parked while the fetch was completing (the dispatcher
    /// parks one it finds early), so none waits for ever. Returns how many
    /// it moved.
    async fn sweep_parked(&self, now: Millis) -> Result<u64, StoreError>;
}

#[async_trait]
impl<S: FetchSql> FetchQueue for S {
    async fn claim_fetches(
        &self,
        limit: usize,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Vec<ClaimedFetch>, StoreError> {
        let token = LeaseToken::generate();
        let q = Query::with(
            format!(
                "UPDATE fetches SET status = 'in_flight', lease_token = $1, next_attempt_at = $2, \
                 updated_at = $3 WHERE message_id IN (SELECT message_id FROM fetches \
                 WHERE status IN ('pending', 'in_flight') AND next_attempt_at <= $3 \
                 ORDER BY next_attempt_at LIMIT $4{})",
                S::SKIP_LOCKED
            ),
            [
                Param::text(&token),
                Param::time(lease_until),
                Param::time(now),
                Param::Int(limit as i64),
            ],
        );
        if self.write(&q).await? == 0 {
            return Ok(Vec::new());
        }
        let q = Query::with(
            "SELECT f.message_id, CAST(f.attempts AS BIGINT) AS attempts, f.cycle_started_at, \
             m.source, m.events FROM fetches f JOIN messages m ON m.id = f.message_id \
             WHERE f.lease_token = $1 ORDER BY f.message_id",
            [Param::text(&token)],
        );
        let rows: Vec<FetchClaimRaw> = self.fetch(&q).await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let (events, defect) = match crate::domain::event::decode_events(&r.events) {
                    Ok(e) => (e, None),
                    Err(e) => (Vec::new(), Some(format!("undecodable: {e}"))),
                };
                ClaimedFetch {
                    message_id: r.message_id,
                    lease_token: token.clone(),
                    source: r.source,
                    attempts: r.attempts.clamp(0, u32::MAX as i64) as u32,
                    cycle_started_at: r.cycle_started_at,
                    events,
                    defect,
                }
            })
            .collect())
    }

    async fn complete_fetch(&self, c: &FetchCompletion) -> Result<(), StoreError> {
        let id = || Param::text(&c.message_id);
        let lease = || Param::text(&c.lease_token);
        let now = || Param::time(c.now);
        let parked = Param::time(PARKED);
        let qs = match &c.outcome {
            FetchOutcome::Done { changes, summary } => vec![
                Query::with(
                    "UPDATE fetches SET status = 'done', attempts = attempts + 1, \
                     lease_token = NULL, last_error = NULL, changes = $3, summary = $4, \
                     next_attempt_at = $5, updated_at = $5 \
                     WHERE message_id = $1 AND lease_token = $2",
                    [
                        id(),
                        lease(),
                        Param::text(changes.as_str()),
                        Param::text(summary.as_str()),
                        now(),
                    ],
                ),
                // Only once the job is done (by this completion or, its
                // lease lost, by another worker's).
                Query::with(
                    "UPDATE deliveries SET next_attempt_at = $2, updated_at = $2 \
                     WHERE message_id = $1 AND status = 'pending' AND next_attempt_at = $3 \
                     AND EXISTS (SELECT 1 FROM fetches f WHERE f.message_id = $1 AND f.status = 'done')",
                    [id(), now(), parked],
                ),
            ],
            FetchOutcome::Retry { at, error } => vec![Query::with(
                "UPDATE fetches SET status = 'pending', attempts = attempts + 1, \
                 lease_token = NULL, last_error = $3, next_attempt_at = $4, updated_at = $5 \
                 WHERE message_id = $1 AND lease_token = $2",
                [
                    id(),
                    lease(),
                    Param::text(error.as_str()),
                    Param::time(*at),
                    now(),
                ],
            )],
            FetchOutcome::Dead { error } => vec![
                Query::with(
                    "UPDATE fetches SET status = 'dead', attempts = attempts + 1, \
                     lease_token = NULL, last_error = $3, next_attempt_at = $4, updated_at = $4 \
                     WHERE message_id = $1 AND lease_token = $2",
                    [id(), lease(), Param::text(error.as_str()), now()],
                ),
                Query::with(
                    "UPDATE deliveries SET status = 'dead', lease_token = NULL, last_error = $2, \
                     updated_at = $3 \
                     WHERE message_id = $1 AND status = 'pending' AND next_attempt_at = $4 \
                     AND EXISTS (SELECT 1 FROM fetches f WHERE f.message_id = $1 AND f.status = 'dead')",
                    [
                        id(),
                        Param::text(format!("changes not fetched: {error}")),
                        now(),
                        parked,
                    ],
                ),
            ],
        };
        self.write_all(&qs).await?;
        if matches!(c.outcome, FetchOutcome::Done { .. }) {
            self.requeued().await;
        }
        Ok(())
    }

    async fn fetch_row(&self, message_id: &MessageId) -> Result<Option<FetchRow>, StoreError> {
        let q = Query::with(
            "SELECT message_id, status, CAST(attempts AS BIGINT) AS attempts, next_attempt_at, \
             last_error, summary, created_at, updated_at FROM fetches WHERE message_id = $1",
            [Param::text(message_id)],
        );
        let rows: Vec<FetchRaw> = self.fetch(&q).await?;
        let Some(r) = rows.into_iter().next() else {
            return Ok(None);
        };
        let status = FetchStatus::parse(&r.status).ok_or(StoreError::Corrupt(r.status))?;
        Ok(Some(FetchRow {
            message_id: r.message_id,
            status,
            attempts: r.attempts.clamp(0, u32::MAX as i64) as u32,
            next_attempt_at: matches!(status, FetchStatus::Pending | FetchStatus::InFlight)
                .then_some(r.next_attempt_at),
            last_error: r.last_error,
            summary: r.summary.and_then(|s| serde_json::from_str(&s).ok()),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }))
    }

    async fn fetched_changes(&self, message_id: &MessageId) -> Result<Option<String>, StoreError> {
        let q = Query::with(
            "SELECT changes AS value FROM fetches WHERE message_id = $1 AND status = 'done'",
            [Param::text(message_id)],
        );
        let rows: Vec<OptTextRaw> = self.fetch(&q).await?;
        Ok(rows.into_iter().next().and_then(|r| r.value))
    }

    async fn fetch_stats(&self) -> Result<FetchStats, StoreError> {
        let q =
            Query::new("SELECT status, CAST(COUNT(*) AS BIGINT) AS n FROM fetches GROUP BY status");
        let rows: Vec<CountRaw> = self.fetch(&q).await?;
        let mut s = FetchStats::default();
        for r in rows {
            let n = r.n.max(0) as u64;
            match FetchStatus::parse(&r.status) {
                Some(FetchStatus::Pending) => s.pending = n,
                Some(FetchStatus::InFlight) => s.in_flight = n,
                Some(FetchStatus::Done) => s.done = n,
                Some(FetchStatus::Dead) => s.dead = n,
                None => {}
            }
        }
        let q = Query::with(
            "SELECT CAST(COUNT(*) AS BIGINT) AS value FROM deliveries \
             WHERE status = 'pending' AND next_attempt_at = $1",
            [Param::time(PARKED)],
        );
        let waiting: Vec<OptIntRaw> = self.fetch(&q).await?;
        s.waiting_deliveries = waiting.first().and_then(|r| r.value).unwrap_or(0).max(0) as u64;
        Ok(s)
    }

    async fn sweep_parked(&self, now: Millis) -> Result<u64, StoreError> {
        let due = Query::with(
            "UPDATE deliveries SET next_attempt_at = $1, updated_at = $1 \
             WHERE status = 'pending' AND next_attempt_at = $2 AND NOT EXISTS \
               (SELECT 1 FROM fetches f WHERE f.message_id = deliveries.message_id \
                AND f.status IN ('pending', 'in_flight', 'dead'))",
            [Param::time(now), Param::time(PARKED)],
        );
        let dead = Query::with(
            "UPDATE deliveries SET status = 'dead', lease_token = NULL, updated_at = $1, \
             last_error = 'changes not fetched: the fetch job is dead' \
             WHERE status = 'pending' AND next_attempt_at = $2 AND EXISTS \
               (SELECT 1 FROM fetches f WHERE f.message_id = deliveries.message_id \
                AND f.status = 'dead')",
            [Param::time(now), Param::time(PARKED)],
        );
        let n = self.write(&due).await? + self.write(&dead).await?;
        if n > 0 {
            self.requeued().await;
        }
        Ok(n)
    }

    async fn fetch_states(
        &self,
        messages: &[MessageId],
    ) -> Result<Vec<(MessageId, FetchStatus, Option<String>)>, StoreError> {
        let mut out = Vec::new();
        for chunk in messages.chunks(500) {
            let mut q =
                Query::new("SELECT message_id, status, changes FROM fetches WHERE message_id IN (");
            q.list(chunk.iter().map(Param::text)).push(")");
            let rows: Vec<FetchStateRaw> = self.fetch(&q).await?;
            out.extend(rows.into_iter().filter_map(|r| {
                FetchStatus::parse(&r.status).map(|s| (r.message_id, s, r.changes))
            }));
        }
        Ok(out)
    }

    async fn next_fetch_due(&self) -> Result<Option<Millis>, StoreError> {
        let q = Query::new(
            "SELECT MIN(next_attempt_at) AS value FROM fetches \
             WHERE status IN ('pending', 'in_flight')",
        );
        let rows: Vec<OptIntRaw> = self.fetch(&q).await?;
        Ok(rows.first().and_then(|r| r.value).map(Millis))
    }
}
