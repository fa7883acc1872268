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
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use tokio::sync::Notify;

use super::*;
use crate::config::StoreConfig;
use held::Held;

mod held;
#[cfg(test)]
mod plan_tests;

const CHANNEL: &str = "hookrelay_work";

/// Dedupe key holders: (source, key) -> message id.
type Holders = HashMap<(String, String), String>;

/// The Postgres store.
pub struct PgStore {
    pool: PgPool,
    work: Arc<Notify>,
    listener: tokio::task::JoinHandle<()>,
    /// A NOTIFY task is running (sending, or waiting out [`HINT_GAP`]).
    hinting: Arc<std::sync::atomic::AtomicBool>,
    /// New work committed since the running task last sent a NOTIFY.
    hint_again: Arc<std::sync::atomic::AtomicBool>,
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
        let listener = tokio::spawn(listen(pool.clone(), work.clone()));
        Ok(Arc::new(PgStore {
            pool,
            work,
            listener,
            hinting: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            hint_again: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            ingest_conn: Held::new(config.max_connections),
            complete_conn: Held::new(config.max_connections),
        }))
    }

    async fn notify(&self) {
        // A lost notification only delays work until the next poll.
        let _ = sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(&self.pool)
            .await;
    }
}

/// The least time between two new-work NOTIFYs from one relay.
///
/// Each NOTIFY costs a statement, a transaction and a wake-up of every
/// listening backend and relay; sent per ingest batch it was a large part
/// of Postgres' per-batch CPU with two relays (measured). A worker that
/// finds the queue empty waits 20 ms before claiming again anyway
/// (`CLAIM_GAP` in dispatch), so announcing new work more often than that
/// buys nothing.
const HINT_GAP: Duration = Duration::from_millis(20);

impl PgStore {
    /// Announces new work to other relays after an ingest commit, without
    /// waiting: at once if no NOTIFY went out in the last [`HINT_GAP`],
    /// otherwise once at the end of that gap (merged, never dropped).
    ///
    /// Not inside the ingest transaction: Postgres serialises the commits
    /// of transactions that NOTIFY under one database-wide lock held across
    /// the WAL flush, so relays sharing a database would take turns
    /// committing. A NOTIFY on its own writes no WAL and holds that lock
    /// only briefly. Merging is safe because a NOTIFY is a hint: this
    /// relay's own workers were woken directly, and every relay polls.
    fn hint_new_work(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.hint_again.store(true, SeqCst);
        if self.hinting.swap(true, SeqCst) {
            // The running task sees `hint_again` before it stops.
            return;
        }
        let (pool, hinting, again) = (
            self.pool.clone(),
            self.hinting.clone(),
            self.hint_again.clone(),
        );
        tokio::spawn(async move {
            loop {
                if !again.swap(false, SeqCst) {
                    hinting.store(false, SeqCst);
                    // A hint that came between the swap and the store saw
                    // `hinting` still set and left the work to this task.
                    if again.load(SeqCst) && !hinting.swap(true, SeqCst) {
                        continue;
                    }
                    break;
                }
                let _ = sqlx::query("SELECT pg_notify($1, '')")
                    .bind(CHANNEL)
                    .execute(&pool)
                    .await;
                tokio::time::sleep(HINT_GAP).await;
            }
        });
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
        now: i64,
    ) -> Result<(std::collections::HashSet<String>, Holders), StoreError> {
        let cand = |f: fn(&NewMessage) -> &str| -> Vec<&str> {
            candidates.iter().map(|i| f(&batch[*i])).collect()
        };
        let cutoff: Vec<i64> = candidates
            .iter()
            .map(|i| now - batch[*i].dedupe_window_ms)
            .collect();
        let ds: Vec<(&NewMessage, &NewDelivery)> = batch
            .iter()
            .flat_map(|m| m.deliveries.iter().map(move |d| (m, d)))
            .collect();
        let mut held = self.ingest_conn.get(&self.pool).await?;
        let rows = sqlx::query(INGEST_SQL)
            .bind(cand(|m| &m.source))
            .bind(cand(|m| &m.dedupe_key))
            .bind(cand(|m| &m.id))
            .bind(now)
            .bind(&cutoff)
            .bind(batch.iter().map(|m| m.id.as_str()).collect::<Vec<_>>())
            .bind(batch.iter().map(|m| m.source.as_str()).collect::<Vec<_>>())
            .bind(batch.iter().map(|m| m.received_at).collect::<Vec<_>>())
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
            .bind(ds.iter().map(|(m, _)| m.received_at).collect::<Vec<_>>())
            .bind(
                ds.iter()
                    .map(|(_, d)| d.events.as_str())
                    .collect::<Vec<_>>(),
            )
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
                    holders.insert((source, key), id);
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

/// Forwards NOTIFYs from any relay process to this process's idle workers.
async fn listen(pool: PgPool, work: Arc<Notify>) {
    loop {
        let mut l = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(_) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if l.listen(CHANNEL).await.is_err() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        loop {
            match l.try_recv().await {
                Ok(Some(_)) => work.notify_waiters(),
                // Connection lost: reconnect, and wake everyone in case a
                // notification was missed meanwhile.
                Ok(None) => work.notify_waiters(),
                Err(_) => break,
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One ingest batch: the dedupe upsert of the candidates ($1-$5), the
/// messages that need no dedupe or won their key ($6-$13), their
/// deliveries ($14-$18); returns the winners' ids, then the holders of
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
               SELECT i, m, s, 'pending', 0, t, e, t, t, t \
               FROM UNNEST($14::text[], $15::text[], $16::text[], $17::bigint[], $18::text[]) AS u(i, m, s, t, e) \
               WHERE m IN (SELECT id FROM msg)) \
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
             SELECT c.id, c.message_id, c.attempts, c.cycle_started_at, c.events AS matched, \
                    m.source, m.received_at, m.content_type, m.body, m.events \
             FROM c CROSS JOIN LATERAL (SELECT source, received_at, content_type, body, events \
                                        FROM messages WHERE messages.id = c.message_id OFFSET 0) AS m";

/// The earliest due time over the sinks in `$1`: per sink, so each lookup
/// is the first entry of the queue index, not a scan of every backlog.
const NEXT_DUE_SQL: &str = "SELECT MIN((SELECT next_attempt_at FROM deliveries WHERE sink = s \
               AND status IN ('pending', 'in_flight') ORDER BY next_attempt_at LIMIT 1)) \
             FROM UNNEST($1::text[]) AS u(s)";

fn delivery_row(r: &PgRow) -> Result<DeliveryRow, StoreError> {
    let status: String = r.try_get("status")?;
    let next: i64 = r.try_get("next_attempt_at")?;
    let status = Status::parse(&status).ok_or_else(|| StoreError::Corrupt(status))?;
    Ok(DeliveryRow {
        id: r.try_get("id")?,
        message_id: r.try_get("message_id")?,
        sink: r.try_get("sink")?,
        status,
        attempts: r.try_get::<i32, _>("attempts")? as u32,
        last_status: r.try_get("last_status")?,
        last_error: r.try_get("last_error")?,
        next_attempt_at: matches!(status, Status::Pending | Status::InFlight)
            .then(|| rfc3339(next)),
        created_at: rfc3339(r.try_get("created_at")?),
        updated_at: rfc3339(r.try_get("updated_at")?),
    })
}

const DELIVERY_COLUMNS: &str = "d.id, d.message_id, d.sink, d.status, d.attempts, d.last_status, \
     d.last_error, d.next_attempt_at, d.created_at, d.updated_at";

#[async_trait]
impl Store for PgStore {
    async fn ingest(
        &self,
        batch: &[NewMessage],
        now: i64,
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
                    && !existing.contains_key(&(m.source.clone(), m.dedupe_key.clone()))
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
                        .get(&(m.source.clone(), m.dedupe_key.clone()))
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
            self.hint_new_work();
        }
        Ok(out)
    }

    async fn claim(
        &self,
        sink: &str,
        limit: usize,
        now: i64,
        lease_until: i64,
    ) -> Result<Vec<Claimed>, StoreError> {
        let token = new_id();
        let rows = sqlx::query(CLAIM_SQL)
            .bind(&token)
            .bind(lease_until)
            .bind(now)
            .bind(sink)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let events: String = r.try_get("events")?;
                let matched: String = r.try_get("matched")?;
                let decoded = super::decode_claimed(&events, &matched);
                Ok(Claimed {
                    id: r.try_get("id")?,
                    lease_token: token.clone(),
                    sink: sink.to_string(),
                    attempts: r.try_get::<i32, _>("attempts")? as u32,
                    cycle_started_at: r.try_get("cycle_started_at")?,
                    message_id: r.try_get("message_id")?,
                    source: r.try_get("source")?,
                    received_at: r.try_get("received_at")?,
                    content_type: r.try_get("content_type")?,
                    body: r.try_get("body")?,
                    events: decoded.0,
                    matched: decoded.1,
                    defect: decoded.2,
                })
            })
            .collect()
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
            nexts.push(next);
            spent.push(s);
            nows.push(c.now);
            last_status.push(c.attempt.as_ref().and_then(|a| a.status));
            last_error.push(c.attempt.as_ref().and_then(|a| a.error.clone()));
        }
        let mut held = self.complete_conn.get(&self.pool).await?;
        let r = sqlx::query(
            "WITH a AS ( \
               INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms, status, error, response) \
               SELECT * FROM UNNEST($9::text[], $10::int[], $11::bigint[], $12::bigint[], $13::int[], \
                                    $14::text[], $15::text[])) \
             UPDATE deliveries d SET status = u.st, next_attempt_at = u.nx, attempts = d.attempts + u.sp, \
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
        .bind(attempts.iter().map(|(_, a)| a.started_at).collect::<Vec<_>>())
        .bind(attempts.iter().map(|(_, a)| a.duration_ms).collect::<Vec<_>>())
        .bind(attempts.iter().map(|(_, a)| a.status).collect::<Vec<_>>())
        .bind(attempts.iter().map(|(_, a)| a.error.clone()).collect::<Vec<_>>())
        .bind(attempts.iter().map(|(_, a)| a.response.clone()).collect::<Vec<_>>())
        .execute(held.conn()?)
        .await;
        held.check(r)?;
        Ok(())
    }

    async fn release(&self, leases: &[Lease], now: i64) -> Result<(), StoreError> {
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

    async fn next_due(&self, sinks: &[String]) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(NEXT_DUE_SQL)
            .bind(sinks)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn list_deliveries(&self, f: &DeliveryFilter) -> Result<Vec<DeliveryRow>, StoreError> {
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE TRUE"
        ));
        if let Some(s) = f.status {
            qb.push(" AND d.status = ").push_bind(s.as_str());
        }
        if let Some(s) = &f.sink {
            qb.push(" AND d.sink = ").push_bind(s.clone());
        }
        if let Some(t) = f.since {
            qb.push(" AND d.created_at >= ").push_bind(t);
        }
        if let Some(t) = f.until {
            qb.push(" AND d.created_at < ").push_bind(t);
        }
        if let Some(c) = &f.cursor {
            qb.push(" AND d.id < ").push_bind(c.clone());
        }
        qb.push(" ORDER BY d.id DESC LIMIT ")
            .push_bind(f.limit as i64);
        let rows = qb.build().fetch_all(&self.pool).await?;
        rows.iter().map(delivery_row).collect()
    }

    async fn message(&self, id: &str) -> Result<Option<MessageDetail>, StoreError> {
        let Some(m) = sqlx::query(
            "SELECT id, source, received_at, content_type, headers, body, events FROM messages WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let deliveries = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.message_id = $1 ORDER BY d.sink"
        ))
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let attempts = sqlx::query(
            "SELECT a.delivery_id, a.attempt, a.started_at, a.duration_ms, a.status, a.error, a.response \
             FROM attempts a JOIN deliveries d ON d.id = a.delivery_id WHERE d.message_id = $1 ORDER BY a.id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let deliveries = deliveries
            .iter()
            .map(delivery_row)
            .collect::<Result<Vec<_>, _>>()?;
        let attempts = attempts
            .iter()
            .map(|a| {
                Ok((
                    a.try_get::<String, _>("delivery_id")?,
                    AttemptRecord {
                        attempt: a.try_get::<i32, _>("attempt")? as u32,
                        started_at: a.try_get("started_at")?,
                        duration_ms: a.try_get("duration_ms")?,
                        status: a.try_get("status")?,
                        error: a.try_get("error")?,
                        response: a.try_get("response")?,
                    },
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let m = assemble::MessageRow {
            id: m.try_get("id")?,
            source: m.try_get("source")?,
            received_at: m.try_get("received_at")?,
            content_type: m.try_get("content_type")?,
            headers: m.try_get("headers")?,
            body: m.try_get("body")?,
            events: m.try_get("events")?,
        };
        Ok(Some(assemble::message_detail(m, deliveries, attempts)?))
    }

    async fn retry_delivery(&self, id: &str, now: i64) -> Result<RetryResult, StoreError> {
        let done = sqlx::query(
            "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = $1, \
             cycle_started_at = $1, lease_token = NULL, updated_at = $1 \
             WHERE id = $2 AND status <> 'in_flight'",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            self.notify().await;
            return Ok(RetryResult::Requeued);
        }
        let exists: Option<String> =
            sqlx::query_scalar("SELECT status FROM deliveries WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(if exists.is_some() {
            RetryResult::InFlight
        } else {
            RetryResult::NotFound
        })
    }

    async fn replay_with_progress(
        &self,
        f: &ReplayFilter,
        now: i64,
        progress: &ReplayProgress<'_>,
    ) -> Result<u64, StoreError> {
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
            "SELECT d.id, d.events AS matched, m.events FROM deliveries d \
             JOIN messages m ON m.id = d.message_id WHERE d.status = ",
        );
        qb.push_bind(f.status.as_str());
        if let Some(s) = &f.sink {
            qb.push(" AND d.sink = ").push_bind(s.clone());
        }
        if let Some(s) = &f.source {
            qb.push(" AND m.source = ").push_bind(s.clone());
        }
        if let Some(t) = f.since {
            qb.push(" AND d.created_at >= ").push_bind(t);
        }
        if let Some(t) = f.until {
            qb.push(" AND d.created_at < ").push_bind(t);
        }
        let rows = qb.build().fetch_all(&self.pool).await?;
        let rows = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    r.try_get("matched")?,
                    r.try_get("events")?,
                ))
            })
            .collect::<Result<Vec<(String, String, String)>, StoreError>>()?;
        let ids = assemble::replay_ids(rows, f.event.as_ref());
        let total = ids.len() as u64;
        progress(0, total);
        if f.dry_run {
            return Ok(total);
        }
        let mut requeued = 0;
        for chunk in ids.chunks(1000) {
            requeued += sqlx::query(
                "UPDATE deliveries SET status = 'pending', attempts = 0, lease_token = NULL, \
                 next_attempt_at = $1, cycle_started_at = $1, updated_at = $1 \
                 WHERE status = $2 AND id = ANY($3)",
            )
            .bind(now)
            .bind(f.status.as_str())
            .bind(chunk)
            .execute(&self.pool)
            .await?
            .rows_affected();
            progress(requeued, total);
        }
        if requeued > 0 {
            self.notify().await;
        }
        Ok(requeued)
    }

    async fn sink_stats(&self, now: i64) -> Result<Vec<SinkStats>, StoreError> {
        let rows = sqlx::query(
            "SELECT sink, status, COUNT(*) AS n, \
             MIN(CASE WHEN status = 'pending' OR next_attempt_at < $2 THEN created_at END) AS oldest, \
             SUM(CASE WHEN status = 'in_flight' AND next_attempt_at < $2 THEN 1 ELSE 0 END)::bigint AS overdue, \
             SUM(CASE WHEN status = 'delivered' AND updated_at >= $1 THEN 1 ELSE 0 END)::bigint AS last_hour, \
             MAX(CASE WHEN status = 'delivered' THEN updated_at END) AS last_ok \
             FROM deliveries GROUP BY sink, status",
        )
        .bind(now - 3_600_000)
        .bind(now - OVERDUE_MS)
        .fetch_all(&self.pool)
        .await?;
        let errors = sqlx::query(
            "SELECT DISTINCT ON (sink) sink, last_error FROM deliveries \
             WHERE last_error IS NOT NULL ORDER BY sink, updated_at DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        let rows = rows
            .iter()
            .map(|r| {
                Ok(assemble::StatRow {
                    sink: r.try_get("sink")?,
                    status: r.try_get("status")?,
                    n: r.try_get("n")?,
                    oldest: r.try_get("oldest")?,
                    last_hour: r.try_get("last_hour")?,
                    last_ok: r.try_get("last_ok")?,
                    overdue: r.try_get("overdue")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let errors = errors
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(assemble::fold_stats(rows, errors))
    }

    async fn purge(&self, c: &PurgeCutoffs) -> Result<PurgeCounts, StoreError> {
        let mut counts = PurgeCounts::default();
        loop {
            let n = sqlx::query(
                "DELETE FROM messages WHERE id IN (SELECT m.id FROM messages m \
                 WHERE m.received_at < $1 AND NOT EXISTS (SELECT 1 FROM deliveries d \
                   WHERE d.message_id = m.id AND (d.status IN ('pending', 'in_flight') \
                     OR (d.status = 'dead' AND d.updated_at >= $2) \
                     OR (d.status = 'delivered' AND d.updated_at >= $1))) \
                 LIMIT 1000 FOR UPDATE SKIP LOCKED)",
            )
            .bind(c.delivered_before)
            .bind(c.dead_before)
            .execute(&self.pool)
            .await?
            .rows_affected();
            counts.messages += n;
            if n < 1000 {
                break;
            }
        }
        counts.dedupe_keys = sqlx::query("DELETE FROM dedupe WHERE created_at < $1")
            .bind(c.dedupe_before)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(counts)
    }

    async fn sink_states(&self) -> Result<Vec<SinkStateRow>, StoreError> {
        let rows = sqlx::query("SELECT sink, paused, reason, updated_at FROM sink_state")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(SinkStateRow {
                    sink: r.try_get("sink")?,
                    paused: r.try_get("paused")?,
                    reason: r.try_get("reason")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect()
    }

    async fn set_paused(
        &self,
        sink: &str,
        paused: bool,
        reason: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sink_state (sink, paused, reason, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (sink) DO UPDATE SET paused = excluded.paused, reason = excluded.reason, \
             updated_at = excluded.updated_at",
        )
        .bind(sink)
        .bind(paused)
        .bind(reason)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn recover(&self, _now: i64) -> Result<u64, StoreError> {
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

    async fn create_admin_session(&self, s: &AdminSession) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO admin_sessions (id_hash, token_fp, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&s.id_hash)
        .bind(&s.token_fp)
        .bind(s.created_at)
        .bind(s.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn admin_session(
        &self,
        id_hash: &str,
        now: i64,
    ) -> Result<Option<AdminSession>, StoreError> {
        let row = sqlx::query(
            "SELECT id_hash, token_fp, created_at, expires_at FROM admin_sessions \
             WHERE id_hash = $1",
        )
        .bind(id_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else {
            return Ok(None);
        };
        let s = AdminSession {
            id_hash: r.try_get("id_hash")?,
            token_fp: r.try_get("token_fp")?,
            created_at: r.try_get("created_at")?,
            expires_at: r.try_get("expires_at")?,
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
        let n = sqlx::query("DELETE FROM admin_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn purge_admin_sessions(&self, now: i64) -> Result<u64, StoreError> {
        let n = sqlx::query("DELETE FROM admin_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n)
    }
}
