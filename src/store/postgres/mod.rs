//! Postgres backend: one database shared by several relay processes.
//!
//! Claims are `UPDATE ... WHERE id = ANY(ARRAY(SELECT ... FOR UPDATE SKIP
//! LOCKED))`, so concurrent workers in any process never take the same row,
//! and no transaction outlives the claim statement; they read the partial
//! index `deliveries_queue`, so their cost follows what they claim, not the
//! table. Dedupe is a unique key, so two relays receiving the same re-sent
//! payload at once cannot both accept it. Batches are written with `UNNEST`
//! arrays in one statement: a group commit of 500 messages is one round
//! trip and one implicit transaction (data-modifying CTEs), not two
//! thousand. `LISTEN/NOTIFY` wakes idle workers in other processes; it is a
//! hint only, polling remains.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};
use tokio::sync::Notify;

use super::*;
use crate::config::StoreConfig;
use held::Held;

mod held;
mod notify;
#[cfg(test)]
mod plan_tests;

/// Dedupe key holders: (source, key) -> message id.
type Holders = HashMap<(String, String), MessageId>;

/// The Postgres store.
pub struct PgStore {
    pool: PgPool,
    work: Arc<Notify>,
    listener: tokio::task::JoinHandle<()>,
    /// New-work NOTIFYs to other relays, coalesced.
    hints: notify::Hints,
    /// Connection kept by the ingest group-commit loop.
    ingest_conn: Held,
    /// Connection kept by the outcome group-commit loop.
    complete_conn: Held,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PgStore {
    /// Connects (retrying for a while: Postgres may still be starting) and
    /// optionally migrates.
    pub async fn open(config: &StoreConfig, migrate: bool) -> Result<Arc<dyn Store>, StoreError> {
        let timeout_ms = config.statement_timeout.0.as_millis().to_string();
        let opts = PgConnectOptions::from_str(&config.url)
            .map_err(|e| StoreError::Url(crate::config::redact_url(&e.to_string())))?
            .application_name("hookrelay")
            .options([("statement_timeout", timeout_ms.as_str())]);
        let pool_opts = PgPoolOptions::new()
            .max_connections(config.max_connections)
            // Short: when Postgres is gone, ingress should answer 503 soon
            // rather than hold ArcGIS's request open.
            .acquire_timeout(Duration::from_secs(3));
        let connect = || pool_opts.clone().connect_with(opts.clone());
        let pool = connect
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(5))
                    .with_max_times(6),
            )
            .notify(
                |e, d| tracing::warn!(error = %e, retry_in = ?d, "cannot connect to Postgres yet"),
            )
            .await?;
        if migrate {
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        }
        let work = Arc::new(Notify::new());
        let listener = tokio::spawn(notify::listen(pool.clone(), work.clone()));
        Ok(Arc::new(PgStore {
            hints: notify::Hints::new(pool.clone()),
            pool,
            work,
            listener,
            ingest_conn: Held::new(config.max_connections),
            complete_conn: Held::new(config.max_connections),
        }))
    }

    async fn notify(&self) {
        self.hints.now().await
    }
}

impl PgStore {
    /// Writes a whole ingest batch in one statement, so one round trip and
    /// one implicit transaction: the dedupe upsert of `candidates`, then
    /// every message that needs no dedupe or won its key, then those
    /// messages' deliveries. Returns the ids of the candidates that won,
    /// and the holders of candidate keys as they were when the statement
    /// began (so a key that lost to an older message is answered without
    /// another query after the commit).
    ///
    /// One statement rather than BEGIN + three inserts + COMMIT because
    /// relays sharing a database pay Postgres per statement and per round
    /// trip, and two relays split every group commit in two.
    async fn ingest_statement(
        &self,
        batch: &[NewMessage],
        candidates: &[usize],
        now: Millis,
    ) -> Result<(std::collections::HashSet<String>, Holders), StoreError> {
        let cand = |f: fn(&NewMessage) -> &str| -> Vec<&str> {
            candidates.iter().map(|i| f(&batch[*i])).collect()
        };
        let cutoff: Vec<i64> = candidates
            .iter()
            .map(|i| now.get().saturating_sub(batch[*i].dedupe_window_ms))
            .collect();
        let ds: Vec<(&NewMessage, &NewDelivery)> = batch
            .iter()
            .flat_map(|m| m.deliveries.iter().map(move |d| (m, d)))
            .collect();
        let mut held = self.ingest_conn.get(&self.pool).await?;
        let rows = sqlx::query(INGEST_SQL)
            .bind(cand(|m| m.source.as_str()))
            .bind(cand(|m| &m.dedupe_key))
            .bind(cand(|m| m.id.as_str()))
            .bind(now)
            .bind(&cutoff)
            .bind(batch.iter().map(|m| m.id.as_str()).collect::<Vec<_>>())
            .bind(batch.iter().map(|m| m.source.as_str()).collect::<Vec<_>>())
            .bind(
                batch
                    .iter()
                    .map(|m| m.received_at.get())
                    .collect::<Vec<_>>(),
            )
            .bind(
                batch
                    .iter()
                    .map(|m| m.content_type.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(batch.iter().map(|m| m.headers.as_str()).collect::<Vec<_>>())
            .bind(batch.iter().map(|m| m.body.as_slice()).collect::<Vec<_>>())
            .bind(batch.iter().map(|m| m.events.as_str()).collect::<Vec<_>>())
            .bind(
                batch
                    .iter()
                    .map(|m| m.dedupe_window_ms > 0)
                    .collect::<Vec<_>>(),
            )
            .bind(ds.iter().map(|(_, d)| d.id.as_str()).collect::<Vec<_>>())
            .bind(ds.iter().map(|(m, _)| m.id.as_str()).collect::<Vec<_>>())
            .bind(ds.iter().map(|(_, d)| d.sink.as_str()).collect::<Vec<_>>())
            .bind(
                ds.iter()
                    .map(|(m, _)| m.received_at.get())
                    .collect::<Vec<_>>(),
            )
            .bind(
                ds.iter()
                    .map(|(_, d)| d.events.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                ds.iter()
                    .map(|(m, d)| d.due(m.received_at).get())
                    .collect::<Vec<_>>(),
            )
            .bind(batch.iter().map(|m| m.fetch).collect::<Vec<_>>())
            .fetch_all(held.conn()?)
            .await;
        let mut won = std::collections::HashSet::new();
        let mut holders = Holders::new();
        for r in held.check(rows)? {
            let id: String = r.try_get(0)?;
            match (
                r.try_get::<Option<String>, _>(1)?,
                r.try_get::<Option<String>, _>(2)?,
            ) {
                (Some(source), Some(key)) => {
                    holders.insert((source, key), MessageId::from(id));
                }
                _ => {
                    won.insert(id);
                }
            }
        }
        Ok((won, holders))
    }

    /// Who holds the dedupe keys that `lost` (batch indexes) lost to, read
    /// after the ingest statement committed. Needed only when another relay
    /// committed the holder while that statement waited on the key (it was
    /// not in the statement's snapshot); an error here fails a batch that
    /// is already committed, which ArcGIS's retry then meets as a duplicate.
    async fn dedupe_holders(
        &self,
        batch: &[NewMessage],
        lost: &[usize],
    ) -> Result<Holders, StoreError> {
        let mut existing = Holders::new();
        if lost.is_empty() {
            return Ok(existing);
        }
        let rows = sqlx::query(
            "SELECT * FROM (SELECT u.s, u.k, (SELECT d.message_id FROM dedupe d \
               WHERE d.source = u.s AND d.key = u.k) AS id FROM UNNEST($1::text[], $2::text[]) AS u(s, k)) AS x \
             WHERE id IS NOT NULL",
        )
        .bind(
            lost.iter()
                .map(|i| batch[*i].source.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            lost.iter()
                .map(|i| batch[*i].dedupe_key.as_str())
                .collect::<Vec<_>>(),
        )
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            existing.insert((r.try_get(0)?, r.try_get(1)?), r.try_get(2)?);
        }
        Ok(existing)
    }
}

/// One ingest batch: the dedupe upsert of the candidates ($1-$5), the
/// messages that need no dedupe or won their key ($6-$13), their
/// deliveries ($14-$19), the fetch jobs of those that need one ($20);
/// returns the winners' ids, then the holders of
/// candidate keys in the statement's snapshot (each looked up by primary
/// key, so the generic plan never scans `dedupe`; `plan_tests` checks it).
const INGEST_SQL: &str = "WITH won AS ( \
               INSERT INTO dedupe AS t (source, key, message_id, created_at) \
               SELECT s, k, m, $4 FROM UNNEST($1::text[], $2::text[], $3::text[]) AS u(s, k, m) \
               ON CONFLICT (source, key) DO UPDATE SET message_id = excluded.message_id, \
               created_at = excluded.created_at \
               WHERE t.created_at < (SELECT c FROM UNNEST($1::text[], $2::text[], $5::bigint[]) AS w(s, k, c) \
                 WHERE w.s = t.source AND w.k = t.key LIMIT 1) \
               RETURNING message_id), \
             msg AS ( \
               INSERT INTO messages (id, source, received_at, content_type, headers, body, events) \
               SELECT i, s, r, c, h, b, e \
               FROM UNNEST($6::text[], $7::text[], $8::bigint[], $9::text[], $10::text[], $11::bytea[], \
                           $12::text[], $13::bool[]) AS u(i, s, r, c, h, b, e, g) \
               WHERE NOT g OR i IN (SELECT message_id FROM won) \
               RETURNING id), \
             del AS ( \
               INSERT INTO deliveries (id, message_id, sink, status, attempts, next_attempt_at, \
                 events, cycle_started_at, created_at, updated_at) \
               SELECT i, m, s, 'pending', 0, n, e, t, t, t \
               FROM UNNEST($14::text[], $15::text[], $16::text[], $17::bigint[], $18::text[], $19::bigint[]) \
                 AS u(i, m, s, t, e, n) \
               WHERE m IN (SELECT id FROM msg)), \
             fch AS ( \
               INSERT INTO fetches (message_id, source, status, attempts, next_attempt_at, \
                 cycle_started_at, created_at, updated_at) \
               SELECT i, s, 'pending', 0, r, r, r, r \
               FROM UNNEST($6::text[], $7::text[], $8::bigint[], $20::bool[]) AS u(i, s, r, f) \
               WHERE f AND i IN (SELECT id FROM msg)) \
             SELECT message_id, NULL AS source, NULL AS key FROM won \
             UNION ALL \
             SELECT * FROM (SELECT (SELECT d.message_id FROM dedupe d WHERE d.source = h.s AND d.key = h.k) AS id, \
                                   h.s, h.k FROM UNNEST($1::text[], $2::text[]) AS h(s, k)) AS x \
             WHERE id IS NOT NULL";

/// Leases up to `$5` due deliveries of sink `$4` at time `$3` with token
/// `$1` until `$2`, and returns them with their messages.
///
/// `= ANY(ARRAY(..))`, not `IN (..)`: Postgres switches a prepared
/// statement to a generic plan after five runs, and for `IN` with
/// `LIMIT $5` that plan hash-joined a sequential scan of the whole table
/// (46 ms at 40,000 rows, against 5 ms this way; `plan_tests` checks it).
/// The messages are read by a `LATERAL ... OFFSET 0` subquery, which the
/// planner cannot turn into a join, so each is a primary-key lookup even
/// in a plan made while the table was empty (a join planned then would
/// hash a sequential scan of `messages` on every claim from then on).
const CLAIM_SQL: &str = "WITH c AS ( \
               UPDATE deliveries SET status = 'in_flight', lease_token = $1, next_attempt_at = $2, updated_at = $3 \
               WHERE id = ANY(ARRAY(SELECT id FROM deliveries WHERE sink = $4 \
                            AND status IN ('pending', 'in_flight') AND next_attempt_at <= $3 \
                            ORDER BY next_attempt_at LIMIT $5 FOR UPDATE SKIP LOCKED)) \
               RETURNING id, message_id, attempts, cycle_started_at, events) \
             SELECT c.id, c.message_id, CAST(c.attempts AS BIGINT) AS attempts, c.cycle_started_at, c.events AS matched, \
                    m.source, m.received_at, m.content_type, m.body, m.events \
             FROM c CROSS JOIN LATERAL (SELECT source, received_at, content_type, body, events \
                                        FROM messages WHERE messages.id = c.message_id OFFSET 0) AS m";

/// The earliest due time over the sinks in `$1`: per sink, so each lookup
/// is the first entry of the queue index, not a scan of every backlog.
const NEXT_DUE_SQL: &str = "SELECT MIN((SELECT next_attempt_at FROM deliveries WHERE sink = s \
               AND status IN ('pending', 'in_flight') ORDER BY next_attempt_at LIMIT 1)) \
             FROM UNNEST($1::text[]) AS u(s)";

// The catalog's two needs of this backend: typed reads (from the
// pool) and writes (on the pool).
#[async_trait]
impl<T> catalog::Fetch<T> for PgStore
where
    T: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin + 'static,
{
    async fn fetch(&self, q: &catalog::Query) -> Result<Vec<T>, StoreError> {
        Ok(catalog::fetch_with(&self.pool, q).await?)
    }
}

#[async_trait]
impl catalog::Write for PgStore {
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";

    async fn write(&self, q: &catalog::Query) -> Result<u64, StoreError> {
        Ok(catalog::write_with(&self.pool, q).await?)
    }

    async fn write_all(&self, qs: &[catalog::Query]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for q in qs {
            catalog::write_with(&mut *tx, q).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn requeued(&self) {
        self.notify().await;
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ingest(
        &self,
        batch: &[NewMessage],
        now: Millis,
    ) -> Result<Vec<IngestOutcome>, StoreError> {
        // Repeats inside one batch are settled here, since one upsert
        // statement may not touch the same key twice: only the first
        // occurrence of a key is a candidate for the dedupe upsert.
        let mut first_in_batch: HashMap<(&str, &str), usize> = HashMap::new();
        let mut candidates = Vec::new();
        for (i, m) in batch.iter().enumerate() {
            if m.dedupe_window_ms > 0 {
                let key = (m.source.as_str(), m.dedupe_key.as_str());
                if let std::collections::hash_map::Entry::Vacant(e) = first_in_batch.entry(key) {
                    e.insert(i);
                    candidates.push(i);
                }
            }
        }
        let (won, mut existing) = self.ingest_statement(batch, &candidates, now).await?;
        let won: std::collections::HashSet<usize> = candidates
            .iter()
            .copied()
            .filter(|i| won.contains(batch[*i].id.as_str()))
            .collect();
        let unknown: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|i| {
                let m = &batch[*i];
                !won.contains(i)
                    && !existing.contains_key(&(m.source.to_string(), m.dedupe_key.clone()))
            })
            .collect();
        existing.extend(self.dedupe_holders(batch, &unknown).await?);
        let mut out = Vec::with_capacity(batch.len());
        for (i, m) in batch.iter().enumerate() {
            if m.dedupe_window_ms > 0 && !won.contains(&i) {
                let first = first_in_batch[&(m.source.as_str(), m.dedupe_key.as_str())];
                let message_id = if won.contains(&first) {
                    batch[first].id.clone()
                } else {
                    existing
                        .get(&(m.source.to_string(), m.dedupe_key.clone()))
                        .cloned()
                        .ok_or_else(|| StoreError::Corrupt("dedupe row vanished".into()))?
                };
                out.push(IngestOutcome::Duplicate { message_id });
            } else {
                out.push(IngestOutcome::Accepted {
                    message_id: m.id.clone(),
                    deliveries: m.deliveries.len(),
                });
            }
        }
        if out
            .iter()
            .any(|o| matches!(o, IngestOutcome::Accepted { deliveries, .. } if *deliveries > 0))
        {
            self.hints.new_work();
        }
        Ok(out)
    }

    async fn claim(
        &self,
        sink: &SinkName,
        limit: usize,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Vec<Claimed>, StoreError> {
        let token = LeaseToken::generate();
        let rows: Vec<ClaimRow> = sqlx::query_as(CLAIM_SQL)
            .bind(&token)
            .bind(lease_until)
            .bind(now)
            .bind(sink)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| r.into_claimed(&token, sink))
            .collect())
    }

    async fn complete(&self, batch: &[Completion]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        // One statement (attempt rows, then the deliveries' new state):
        // one round trip and one implicit transaction per outcome batch.
        let attempts: Vec<(&Completion, &AttemptRecord)> = batch
            .iter()
            .filter_map(|c| c.attempt.as_ref().map(|a| (c, a)))
            .collect();
        let mut ids = Vec::new();
        let mut tokens = Vec::new();
        let mut statuses = Vec::new();
        let mut nexts = Vec::new();
        let mut spent = Vec::new();
        let mut nows = Vec::new();
        let mut last_status = Vec::new();
        let mut last_error = Vec::new();
        for c in batch {
            let (status, next, s) = match c.next {
                NextState::Delivered => ("delivered", c.now, 1),
                NextState::Retry { at } => ("pending", at, 1),
                NextState::Dead => ("dead", c.now, 1),
                NextState::Defer { at } => ("pending", at, 0),
            };
            ids.push(c.lease.delivery_id.as_str());
            tokens.push(c.lease.lease_token.as_str());
            statuses.push(status);
            nexts.push(next.get());
            spent.push(s);
            nows.push(c.now.get());
            last_status.push(c.attempt.as_ref().and_then(|a| a.status));
            last_error.push(c.attempt.as_ref().and_then(|a| a.error.clone()));
        }
        let mut held = self.complete_conn.get(&self.pool).await?;
        let r = sqlx::query(
            "WITH a AS ( \
               INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms, status, error, response) \
               SELECT * FROM UNNEST($9::text[], $10::int[], $11::bigint[], $12::bigint[], $13::int[], \
                                    $14::text[], $15::text[])) \
             UPDATE deliveries d SET status = u.st, \
             next_attempt_at = CASE WHEN u.nx = 9223372036854775807 AND EXISTS \
               (SELECT 1 FROM fetches f WHERE f.message_id = d.message_id AND f.status = 'done') \
               THEN u.nw ELSE u.nx END, \
             attempts = d.attempts + u.sp, \
             lease_token = NULL, updated_at = u.nw, \
             last_status = CASE WHEN u.sp = 1 THEN u.ls ELSE d.last_status END, \
             last_error = CASE WHEN u.sp = 1 THEN u.le ELSE d.last_error END \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::int[], $6::bigint[], $7::int[], $8::text[]) \
               AS u(id, tk, st, nx, sp, nw, ls, le) \
             WHERE d.id = u.id AND d.lease_token = u.tk",
        )
        .bind(&ids)
        .bind(&tokens)
        .bind(&statuses)
        .bind(&nexts)
        .bind(&spent)
        .bind(&nows)
        .bind(&last_status)
        .bind(&last_error)
        .bind(attempts.iter().map(|(c, _)| c.lease.delivery_id.as_str()).collect::<Vec<_>>())
        .bind(attempts.iter().map(|(_, a)| a.attempt as i32).collect::<Vec<_>>())
        .bind(attempts.iter().map(|(_, a)| a.started_at.get()).collect::<Vec<_>>())
        .bind(attempts.iter().map(|(_, a)| a.duration_ms).collect::<Vec<_>>())
        .bind(attempts.iter().map(|(_, a)| a.status).collect::<Vec<_>>())
        .bind(attempts.iter().map(|(_, a)| a.error.clone()).collect::<Vec<_>>())
        .bind(attempts.iter().map(|(_, a)| a.response.clone()).collect::<Vec<_>>())
        .execute(held.conn()?)
        .await;
        held.check(r)?;
        Ok(())
    }

    async fn release(&self, leases: &[Lease], now: Millis) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE deliveries d SET status = 'pending', next_attempt_at = $1, lease_token = NULL, updated_at = $1 \
             FROM UNNEST($2::text[], $3::text[]) AS u(id, tk) WHERE d.id = u.id AND d.lease_token = u.tk",
        )
        .bind(now)
        .bind(leases.iter().map(|l| l.delivery_id.as_str()).collect::<Vec<_>>())
        .bind(leases.iter().map(|l| l.lease_token.as_str()).collect::<Vec<_>>())
        .execute(&self.pool)
        .await?;
        self.notify().await;
        Ok(())
    }

    async fn next_due(&self, sinks: &[SinkName]) -> Result<Option<Millis>, StoreError> {
        Ok(sqlx::query_scalar(NEXT_DUE_SQL)
            .bind(sinks.iter().map(SinkName::as_str).collect::<Vec<_>>())
            .fetch_one(&self.pool)
            .await?)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn recover(&self, _now: Millis) -> Result<u64, StoreError> {
        // Other relays may hold live leases in a shared database: expired
        // leases are reclaimed by the claim query, never released wholesale.
        Ok(0)
    }

    async fn close(&self) {
        self.listener.abort();
        self.ingest_conn.release().await;
        self.complete_conn.release().await;
        self.pool.close().await;
    }

    async fn wait_for_work(&self) {
        self.work.notified().await
    }
}
