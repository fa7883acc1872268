//! The read and admin half of the store, written once for both backends:
//! delivery lists, message detail, retry and replay, sink statistics,
//! pause state, the retention purge and status-page sessions.
//!
//! Why one copy: the two backends' versions of these queries had started
//! to drift (replay chunks of 500 against 1,000, `paused` read as an
//! integer in one and a boolean in the other, an empty-input check in one
//! only). The SQL here is portable between SQLite and Postgres (numbered
//! `$N` parameters, `CAST(.. AS BIGINT)` where the column types differ, a
//! window function instead of `DISTINCT ON`); the one real difference, how
//! several relays purge at once, is [`Sql::SKIP_LOCKED`].
//!
//! What stays per backend is the write path of the queue (ingest, claim,
//! complete, release, next due), whose statements differ for measured
//! reasons; see `sqlite/` and `postgres/`.
//!
//! A backend provides two things: [`Fetch`] (run a query, decode typed rows
//! with `sqlx::FromRow`) for every row type, and [`Write`]; the blanket
//! [`Catalog`] impl does the rest.

mod detail;
mod fetches;
mod query;
mod rows;

use async_trait::async_trait;

use detail::message_detail;
pub use detail::MAX_DETAIL_EVENTS_BYTES;
pub use fetches::{FetchQueue, FetchSql};
pub use query::{fetch_with, write_with, Param, Query};
pub use rows::*;

use super::{
    events_match, AdminSession, DeliveryFilter, DeliveryId, DeliveryRow, MessageDetail, MessageId,
    Millis, PurgeCounts, PurgeCutoffs, ReplayFilter, ReplayProgress, RetryResult, SinkName,
    SinkStateRow, SinkStats, Status, StoreError, OVERDUE_MS,
};

/// Runs a read query and decodes its rows as `T`.
#[async_trait]
pub trait Fetch<T>: Send + Sync {
    /// The rows of `q`.
    async fn fetch(&self, q: &Query) -> Result<Vec<T>, StoreError>;
}

/// Runs a write statement.
#[async_trait]
pub trait Write: Send + Sync {
    /// Appended to the purge's row selection: `" FOR UPDATE SKIP LOCKED"`
    /// where several relays may purge one database at once, else empty.
    const SKIP_LOCKED: &'static str;

    /// Runs `q` as one short write transaction; rows affected.
    async fn write(&self, q: &Query) -> Result<u64, StoreError>;

    /// Runs `qs` in order as one transaction: all or none.
    async fn write_all(&self, qs: &[Query]) -> Result<(), StoreError>;

    /// Called after deliveries were requeued (retry, replay), so workers
    /// in other processes hear of it (Postgres NOTIFY).
    async fn requeued(&self) {}
}

/// Everything the catalog needs of a backend.
pub trait Sql:
    Fetch<DeliveryRaw>
    + Fetch<AttemptRaw>
    + Fetch<MessageRaw>
    + Fetch<StatRaw>
    + Fetch<ErrorRaw>
    + Fetch<ReplayRaw>
    + Fetch<StateRaw>
    + Fetch<AdminSession>
    + Fetch<TextRaw>
    + Write
{
}

impl<S> Sql for S where
    S: Fetch<DeliveryRaw>
        + Fetch<AttemptRaw>
        + Fetch<MessageRaw>
        + Fetch<StatRaw>
        + Fetch<ErrorRaw>
        + Fetch<ReplayRaw>
        + Fetch<StateRaw>
        + Fetch<AdminSession>
        + Fetch<TextRaw>
        + Write
{
}

/// Most ids in one requeue statement: well under SQLite's 999 parameters,
/// and short enough a transaction that ingress never waits long behind a
/// replay of a hundred thousand rows.
const REQUEUE_CHUNK: usize = 500;

/// Messages deleted per purge statement (each its own short transaction).
const PURGE_CHUNK: u64 = 1000;

const DELIVERY_COLUMNS: &str = "d.id, d.message_id, d.sink, d.status, \
     CAST(d.attempts AS BIGINT) AS attempts, CAST(d.last_status AS BIGINT) AS last_status, \
     d.last_error, d.next_attempt_at, d.created_at, d.updated_at";

/// The store's read and admin operations. Implemented once, for every
/// backend that is [`Sql`].
#[async_trait]
pub trait Catalog: Send + Sync {
    /// Deliveries matching a filter, newest first.
    async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> Result<Vec<DeliveryRow>, StoreError>;

    /// A message with its events, deliveries and attempts.
    async fn message(&self, id: &MessageId) -> Result<Option<MessageDetail>, StoreError>;

    /// Requeues one delivery with fresh attempts (keeping its history).
    async fn retry_delivery(&self, id: &DeliveryId, now: Millis)
        -> Result<RetryResult, StoreError>;

    /// Requeues every delivery matching the filter (`dry_run`: only counts).
    async fn replay(&self, filter: &ReplayFilter, now: Millis) -> Result<u64, StoreError> {
        self.replay_with_progress(filter, now, &|_, _| {}).await
    }

    /// [`Catalog::replay`], calling `progress(requeued_so_far, matched)`
    /// once when the matching deliveries are known (also on a dry run) and
    /// again after every chunk it requeues.
    async fn replay_with_progress(
        &self,
        filter: &ReplayFilter,
        now: Millis,
        progress: &ReplayProgress<'_>,
    ) -> Result<u64, StoreError>;

    /// Counts per sink and status, and the oldest pending delivery per sink.
    async fn sink_stats(&self, now: Millis) -> Result<Vec<SinkStats>, StoreError>;

    /// Deletes finished messages older than the retention periods.
    async fn purge(&self, cutoffs: &PurgeCutoffs) -> Result<PurgeCounts, StoreError>;

    /// Sink pause state survives restarts: read it.
    async fn sink_states(&self) -> Result<Vec<SinkStateRow>, StoreError>;

    /// Sets a sink's pause state.
    async fn set_paused(
        &self,
        sink: &SinkName,
        paused: bool,
        reason: Option<&str>,
        now: Millis,
    ) -> Result<(), StoreError>;

    /// Records a new status-page session.
    async fn create_admin_session(&self, session: &AdminSession) -> Result<(), StoreError>;

    /// The session whose id hashes to `id_hash`, if it exists and has not
    /// expired at `now`. A row found expired is deleted on the way.
    async fn admin_session(
        &self,
        id_hash: &str,
        now: Millis,
    ) -> Result<Option<AdminSession>, StoreError>;

    /// Deletes one session (logout); whether it existed.
    async fn delete_admin_session(&self, id_hash: &str) -> Result<bool, StoreError>;

    /// Deletes every session expired at `now` (the retention purge); how many.
    async fn purge_admin_sessions(&self, now: Millis) -> Result<u64, StoreError>;
}

#[async_trait]
impl<S: Sql> Catalog for S {
    async fn list_deliveries(&self, f: &DeliveryFilter) -> Result<Vec<DeliveryRow>, StoreError> {
        let mut q = Query::new(format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE 1 = 1"
        ));
        if let Some(s) = f.status {
            q.and("d.status =", Param::text(s.as_str()));
        }
        if let Some(s) = &f.sink {
            q.and("d.sink =", Param::text(s));
        }
        if let Some(t) = f.since {
            q.and("d.created_at >=", Param::time(t));
        }
        if let Some(t) = f.until {
            q.and("d.created_at <", Param::time(t));
        }
        if let Some(c) = &f.cursor {
            q.and("d.id <", Param::text(c));
        }
        q.push(" ORDER BY d.id DESC LIMIT ")
            .bind(Param::Int(f.limit as i64));
        let rows: Vec<DeliveryRaw> = self.fetch(&q).await?;
        rows.into_iter().map(DeliveryRaw::into_row).collect()
    }

    async fn message(&self, id: &MessageId) -> Result<Option<MessageDetail>, StoreError> {
        let q = Query::with(
            "SELECT id, source, received_at, content_type, headers, body, events \
             FROM messages WHERE id = $1",
            [Param::text(id)],
        );
        let messages: Vec<MessageRaw> = self.fetch(&q).await?;
        let Some(m) = messages.into_iter().next() else {
            return Ok(None);
        };
        let q = Query::with(
            format!("SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.message_id = $1 ORDER BY d.sink"),
            [Param::text(id)],
        );
        let deliveries: Vec<DeliveryRaw> = self.fetch(&q).await?;
        let q = Query::with(
            "SELECT a.delivery_id, CAST(a.attempt AS BIGINT) AS attempt, a.started_at, \
             a.duration_ms, CAST(a.status AS BIGINT) AS status, a.error, a.response \
             FROM attempts a JOIN deliveries d ON d.id = a.delivery_id \
             WHERE d.message_id = $1 ORDER BY a.id",
            [Param::text(id)],
        );
        let attempts: Vec<AttemptRaw> = self.fetch(&q).await?;
        let deliveries = deliveries
            .into_iter()
            .map(DeliveryRaw::into_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(message_detail(m, deliveries, attempts)))
    }

    async fn retry_delivery(
        &self,
        id: &DeliveryId,
        now: Millis,
    ) -> Result<RetryResult, StoreError> {
        let mut q = requeue_dead_fetches(
            "SELECT message_id FROM deliveries WHERE id = $2 AND status <> 'in_flight'",
            now,
            [Param::text(id)],
        );
        self.write(q.push(")")).await?;
        let q = Query::with(
            "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = $1, \
             cycle_started_at = $1, lease_token = NULL, updated_at = $1 \
             WHERE id = $2 AND status <> 'in_flight'",
            [Param::time(now), Param::text(id)],
        );
        if self.write(&q).await? == 1 {
            self.requeued().await;
            return Ok(RetryResult::Requeued);
        }
        let q = Query::with(
            "SELECT status AS value FROM deliveries WHERE id = $1",
            [Param::text(id)],
        );
        let found: Vec<TextRaw> = self.fetch(&q).await?;
        Ok(if found.is_empty() {
            RetryResult::NotFound
        } else {
            RetryResult::InFlight
        })
    }

    async fn replay_with_progress(
        &self,
        f: &ReplayFilter,
        now: Millis,
        progress: &ReplayProgress<'_>,
    ) -> Result<u64, StoreError> {
        let mut q = Query::with(
            "SELECT d.id, d.events AS matched, m.events FROM deliveries d \
             JOIN messages m ON m.id = d.message_id WHERE d.status = $1",
            [Param::text(f.status.as_str())],
        );
        if let Some(s) = &f.sink {
            q.and("d.sink =", Param::text(s));
        }
        if let Some(s) = &f.source {
            q.and("m.source =", Param::text(s));
        }
        if let Some(t) = f.since {
            q.and("d.created_at >=", Param::time(t));
        }
        if let Some(t) = f.until {
            q.and("d.created_at <", Param::time(t));
        }
        let rows: Vec<ReplayRaw> = self.fetch(&q).await?;
        let ids: Vec<DeliveryId> = rows
            .into_iter()
            .filter(|r| {
                f.event
                    .as_ref()
                    .is_none_or(|p| events_match(&r.events, &r.matched, p))
            })
            .map(|r| r.id)
            .collect();
        let total = ids.len() as u64;
        progress(0, total);
        if f.dry_run || ids.is_empty() {
            return Ok(total);
        }
        let mut requeued = 0;
        for chunk in ids.chunks(REQUEUE_CHUNK) {
            let mut q = requeue_dead_fetches(
                "SELECT message_id FROM deliveries WHERE status = $2 AND id IN (",
                now,
                [Param::text(f.status.as_str())],
            );
            q.list(chunk.iter().map(Param::text)).push("))");
            self.write(&q).await?;
            let mut q = Query::with(
                "UPDATE deliveries SET status = 'pending', attempts = 0, lease_token = NULL, \
                 next_attempt_at = $1, cycle_started_at = $1, updated_at = $1 \
                 WHERE status = $2 AND id IN (",
                [Param::time(now), Param::text(f.status.as_str())],
            );
            q.list(chunk.iter().map(Param::text)).push(")");
            requeued += self.write(&q).await?;
            progress(requeued, total);
        }
        if requeued > 0 {
            self.requeued().await;
        }
        Ok(requeued)
    }

    async fn sink_stats(&self, now: Millis) -> Result<Vec<SinkStats>, StoreError> {
        let q = Query::with(
            "SELECT sink, status, CAST(COUNT(*) AS BIGINT) AS n, \
             MIN(CASE WHEN status = 'pending' OR next_attempt_at < $2 THEN created_at END) AS oldest, \
             CAST(SUM(CASE WHEN status = 'in_flight' AND next_attempt_at < $2 THEN 1 ELSE 0 END) AS BIGINT) AS overdue, \
             CAST(SUM(CASE WHEN status = 'delivered' AND updated_at >= $1 THEN 1 ELSE 0 END) AS BIGINT) AS last_hour, \
             MAX(CASE WHEN status = 'delivered' THEN updated_at END) AS last_ok \
             FROM deliveries GROUP BY sink, status",
            [
                Param::Int(now.get().saturating_sub(3_600_000)),
                Param::Int(now.get().saturating_sub(OVERDUE_MS)),
            ],
        );
        let rows: Vec<StatRaw> = self.fetch(&q).await?;
        let q = Query::new(
            "SELECT sink, last_error FROM (SELECT sink, last_error, ROW_NUMBER() OVER \
             (PARTITION BY sink ORDER BY updated_at DESC) AS r FROM deliveries \
             WHERE last_error IS NOT NULL) e WHERE r = 1",
        );
        let errors: Vec<ErrorRaw> = self.fetch(&q).await?;
        Ok(fold_stats(rows, errors))
    }

    async fn purge(&self, c: &PurgeCutoffs) -> Result<PurgeCounts, StoreError> {
        let mut counts = PurgeCounts::default();
        loop {
            let q = Query::with(
                format!(
                    "DELETE FROM messages WHERE id IN (SELECT m.id FROM messages m \
                     WHERE m.received_at < $1 AND NOT EXISTS (SELECT 1 FROM deliveries d \
                       WHERE d.message_id = m.id AND (d.status IN ('pending', 'in_flight') \
                         OR (d.status = 'dead' AND d.updated_at >= $2) \
                         OR (d.status = 'delivered' AND d.updated_at >= $1))) \
                     LIMIT {PURGE_CHUNK}{})",
                    S::SKIP_LOCKED
                ),
                [Param::time(c.delivered_before), Param::time(c.dead_before)],
            );
            let n = self.write(&q).await?;
            counts.messages += n;
            if n < PURGE_CHUNK {
                break;
            }
        }
        let q = Query::with(
            "DELETE FROM dedupe WHERE created_at < $1",
            [Param::time(c.dedupe_before)],
        );
        counts.dedupe_keys = self.write(&q).await?;
        Ok(counts)
    }

    async fn sink_states(&self) -> Result<Vec<SinkStateRow>, StoreError> {
        let q = Query::new(
            "SELECT sink, CAST(CASE WHEN paused THEN 1 ELSE 0 END AS BIGINT) AS paused, \
             reason, updated_at FROM sink_state",
        );
        let rows: Vec<StateRaw> = self.fetch(&q).await?;
        Ok(rows.into_iter().map(StateRaw::into_row).collect())
    }

    async fn set_paused(
        &self,
        sink: &SinkName,
        paused: bool,
        reason: Option<&str>,
        now: Millis,
    ) -> Result<(), StoreError> {
        let q = Query::with(
            "INSERT INTO sink_state (sink, paused, reason, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (sink) DO UPDATE SET paused = excluded.paused, reason = excluded.reason, \
             updated_at = excluded.updated_at",
            [
                Param::text(sink),
                Param::Bool(paused),
                Param::OptText(reason.map(str::to_string)),
                Param::time(now),
            ],
        );
        self.write(&q).await?;
        Ok(())
    }

    async fn create_admin_session(&self, s: &AdminSession) -> Result<(), StoreError> {
        let q = Query::with(
            "INSERT INTO admin_sessions (id_hash, token_fp, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
            [
                Param::text(&s.id_hash),
                Param::text(&s.token_fp),
                Param::time(s.created_at),
                Param::time(s.expires_at),
            ],
        );
        self.write(&q).await?;
        Ok(())
    }

    async fn admin_session(
        &self,
        id_hash: &str,
        now: Millis,
    ) -> Result<Option<AdminSession>, StoreError> {
        let q = Query::with(
            "SELECT id_hash, token_fp, created_at, expires_at FROM admin_sessions \
             WHERE id_hash = $1",
            [Param::text(id_hash)],
        );
        let found: Vec<AdminSession> = self.fetch(&q).await?;
        let Some(s) = found.into_iter().next() else {
            return Ok(None);
        };
        if s.expires_at <= now {
            // Refused either way; the purge removes it if this fails.
            if let Err(e) = self.delete_admin_session(id_hash).await {
                tracing::warn!(error = %e, "cannot delete an expired admin session");
            }
            return Ok(None);
        }
        Ok(Some(s))
    }

    async fn delete_admin_session(&self, id_hash: &str) -> Result<bool, StoreError> {
        let q = Query::with(
            "DELETE FROM admin_sessions WHERE id_hash = $1",
            [Param::text(id_hash)],
        );
        Ok(self.write(&q).await? > 0)
    }

    async fn purge_admin_sessions(&self, now: Millis) -> Result<u64, StoreError> {
        let q = Query::with(
            "DELETE FROM admin_sessions WHERE expires_at <= $1",
            [Param::time(now)],
        );
        self.write(&q).await
    }
}

/// Requeues the dead fetch jobs of the messages `messages` selects (SQL
/// with `$2`.. for `params`; an open list may follow), before their
/// deliveries are requeued: a delivery waiting for changes whose fetch
/// died would otherwise wait for nothing. The dispatcher holds such a
/// delivery back until the fetch is done.
fn requeue_dead_fetches(
    messages: &str,
    now: Millis,
    params: impl IntoIterator<Item = Param>,
) -> Query {
    let mut all = vec![Param::time(now)];
    all.extend(params);
    Query::with(
        format!(
            "UPDATE fetches SET status = 'pending', attempts = 0, lease_token = NULL,              next_attempt_at = $1, cycle_started_at = $1, updated_at = $1              WHERE status = 'dead' AND message_id IN ({messages}"
        ),
        all,
    )
}

/// Per-sink stats from the grouped counts and each sink's latest error.
fn fold_stats(rows: Vec<StatRaw>, errors: Vec<ErrorRaw>) -> Vec<SinkStats> {
    let mut out: std::collections::BTreeMap<SinkName, SinkStats> = Default::default();
    for r in rows {
        let n = r.n.max(0) as u64;
        let e = out.entry(r.sink.clone()).or_insert_with(|| SinkStats {
            sink: r.sink.clone(),
            ..Default::default()
        });
        match Status::parse(&r.status) {
            Some(Status::Pending) => {
                e.pending = n;
                e.oldest_pending_at = min_opt(e.oldest_pending_at, r.oldest);
            }
            Some(Status::InFlight) => {
                e.in_flight = n;
                e.overdue_in_flight = r.overdue.unwrap_or(0).max(0) as u64;
                e.oldest_pending_at = min_opt(e.oldest_pending_at, r.oldest);
            }
            Some(Status::Dead) => e.dead = n,
            Some(Status::Delivered) => {
                e.delivered = n;
                e.delivered_last_hour = r.last_hour.unwrap_or(0).max(0) as u64;
                e.last_success_at = r.last_ok;
            }
            None => {}
        }
    }
    for r in errors {
        if let Some(e) = out.get_mut(&r.sink) {
            e.last_error = r.last_error;
        }
    }
    out.into_values().collect()
}

fn min_opt(a: Option<Millis>, b: Option<Millis>) -> Option<Millis> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
