//! SQLite backend: the embedded default.
//!
//! WAL with `synchronous = FULL`, so a commit is on disk before ingress
//! answers 200. Writes go through exactly one connection (`writer.rs`):
//! SQLite allows one writer at a time anyway, and queueing on an async
//! mutex is fair where competing connections would sleep in SQLite's busy
//! handler. Ingress and completions reach it already batched (see
//! `batch.rs`) and are written with multi-row statements, so one fsync and
//! a couple of hops to the connection's thread cover many requests. Reads
//! use a separate pool; WAL lets them run beside the writer.

mod writer;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use writer::Writer;

use super::*;
use crate::config::StoreConfig;

/// Rows per multi-row statement: at most ten bound values a row keeps a
/// statement far below SQLite's limit of 32,766 parameters.
const ROWS_PER_STATEMENT: usize = 500;

/// The SQLite store.
pub struct SqliteStore {
    writer: Writer,
    reader: SqlitePool,
    // Held for the life of a serving relay: a second `serve` on the same file
    // is refused, which is what makes `recover` safe.
    lock: std::sync::Mutex<Option<File>>,
    // Copies the WAL into the database beside the writer; serving only.
    checkpointer: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Ok(Some(c)) = self.checkpointer.get_mut().map(Option::take) {
            c.abort();
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file. `serving` takes the
    /// exclusive serve lock next to it.
    pub async fn open(
        config: &StoreConfig,
        migrate: bool,
        serving: bool,
    ) -> Result<SqliteStore, StoreError> {
        let opts = SqliteConnectOptions::from_str(&config.url)
            .map_err(|e| StoreError::Url(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-16000")
            .pragma("wal_autocheckpoint", writer::WAL_AUTOCHECKPOINT_PAGES);
        let lock = if serving {
            let path = format!("{}.lock", opts.get_filename().display());
            let file = File::create(&path)
                .map_err(|e| StoreError::Locked(format!("cannot create lock file {path}: {e}")))?;
            file.try_lock().map_err(|_| {
                StoreError::Locked(format!(
                    "another hookrelay is serving this database ({path} is locked); \
                     SQLite supports one relay process, use Postgres to run several"
                ))
            })?;
            Some(file)
        } else {
            None
        };
        let writer = Writer::open(opts.clone()).await?;
        if migrate {
            sqlx::migrate!("./migrations/sqlite")
                .run(&mut *writer.conn().await?)
                .await?;
        }
        // No ping before each acquire: it is one more hop to the connection's
        // thread, and an embedded database does not go away like a server.
        let checkpointer = serving.then(|| writer::spawn_checkpointer(opts.clone()));
        let reader = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(config.max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await?;
        Ok(SqliteStore {
            writer,
            reader,
            lock: std::sync::Mutex::new(lock),
            checkpointer: std::sync::Mutex::new(checkpointer),
        })
    }

    /// Runs `PRAGMA integrity_check`; "ok" when the file is sound.
    pub async fn integrity_check(&self) -> Result<String, StoreError> {
        let row = sqlx::query("PRAGMA integrity_check")
            .fetch_one(&self.reader)
            .await?;
        Ok(row.try_get::<String, _>(0)?)
    }
}

fn delivery_row(r: &sqlx::sqlite::SqliteRow) -> Result<DeliveryRow, StoreError> {
    let status: String = r.try_get("status")?;
    let next: i64 = r.try_get("next_attempt_at")?;
    let status = Status::parse(&status).ok_or_else(|| StoreError::Corrupt(status))?;
    Ok(DeliveryRow {
        id: r.try_get("id")?,
        message_id: r.try_get("message_id")?,
        sink: r.try_get("sink")?,
        status,
        attempts: r.try_get::<i64, _>("attempts")? as u32,
        last_status: r
            .try_get::<Option<i64>, _>("last_status")?
            .map(|v| v as i32),
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
impl Store for SqliteStore {
    fn dedicated_commit_thread(&self) -> bool {
        true
    }

    async fn ingest(
        &self,
        batch: &[NewMessage],
        now: i64,
    ) -> Result<Vec<IngestOutcome>, StoreError> {
        let mut tx = self.writer.begin().await?;
        let candidates: Vec<&NewMessage> =
            batch.iter().filter(|m| m.dedupe_window_ms > 0).collect();
        // Messages whose dedupe key was already taken, with the message
        // that holds it.
        let mut lost: HashMap<&str, String> = HashMap::new();
        if !candidates.is_empty() {
            // Hop 1: claim every dedupe key. SQLite applies a statement's rows
            // in order, so a key repeated inside the batch goes to its first
            // occurrence. `changes()` counts keys taken; when that is all of
            // them (the usual case) nobody lost and no row need come back.
            let mut windows: Vec<i64> = candidates.iter().map(|m| m.dedupe_window_ms).collect();
            windows.sort_unstable();
            windows.dedup();
            let mut qb = tx.statement();
            for w in windows {
                // Sources share a window unless configured apart, and a key
                // belongs to one source, so grouping by window keeps order
                // wherever it matters.
                let members: Vec<&&NewMessage> = candidates
                    .iter()
                    .filter(|m| m.dedupe_window_ms == w)
                    .collect();
                for chunk in members.chunks(ROWS_PER_STATEMENT) {
                    qb.push("INSERT INTO dedupe (source, key, message_id, created_at) ");
                    qb.push_values(chunk, |mut b, m| {
                        b.push_bind(m.source.as_str())
                            .push_bind(m.dedupe_key.as_str())
                            .push_bind(m.id.as_str())
                            .push_bind(now);
                    });
                    qb.push(
                        " ON CONFLICT (source, key) DO UPDATE SET message_id = excluded.message_id, \
                         created_at = excluded.created_at WHERE dedupe.created_at < ",
                    )
                    .push_bind(now - w)
                    .push("; SELECT changes(); ");
                }
            }
            let taken: Vec<i64> = qb.build_query_scalar().fetch_all(tx.conn()?).await?;
            if taken.iter().sum::<i64>() != candidates.len() as i64 {
                for chunk in candidates.chunks(ROWS_PER_STATEMENT) {
                    let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                        "SELECT source, key, message_id FROM dedupe WHERE (source, key) IN (",
                    );
                    qb.push_values(chunk, |mut b, m| {
                        b.push_bind(m.source.as_str())
                            .push_bind(m.dedupe_key.as_str());
                    });
                    qb.push(")");
                    let mut holder: HashMap<(String, String), String> = HashMap::new();
                    for r in qb.build().fetch_all(tx.conn()?).await? {
                        holder.insert((r.try_get(0)?, r.try_get(1)?), r.try_get(2)?);
                    }
                    for m in chunk {
                        let first = holder
                            .get(&(m.source.clone(), m.dedupe_key.clone()))
                            .ok_or_else(|| StoreError::Corrupt("dedupe row vanished".into()))?;
                        if *first != m.id {
                            lost.insert(m.id.as_str(), first.clone());
                        }
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(batch.len());
        let mut keep: Vec<&NewMessage> = Vec::with_capacity(batch.len());
        for m in batch {
            match lost.remove(m.id.as_str()) {
                Some(first) => out.push(IngestOutcome::Duplicate { message_id: first }),
                None => {
                    keep.push(m);
                    out.push(IngestOutcome::Accepted {
                        message_id: m.id.clone(),
                        deliveries: m.deliveries.len(),
                    });
                }
            }
        }
        // Hop 2: the messages, their deliveries and the COMMIT.
        let mut qb = tx.statement();
        for chunk in keep.chunks(ROWS_PER_STATEMENT) {
            qb.push(
                "INSERT INTO messages (id, source, received_at, content_type, headers, body, events) ",
            );
            qb.push_values(chunk, |mut b, m| {
                b.push_bind(m.id.as_str())
                    .push_bind(m.source.as_str())
                    .push_bind(m.received_at)
                    .push_bind(m.content_type.as_str())
                    .push_bind(m.headers.as_str())
                    .push_bind(m.body.as_slice())
                    .push_bind(m.events.as_str());
            });
            qb.push("; ");
        }
        let deliveries: Vec<(&NewMessage, &NewDelivery)> = keep
            .iter()
            .flat_map(|m| m.deliveries.iter().map(move |d| (*m, d)))
            .collect();
        for chunk in deliveries.chunks(ROWS_PER_STATEMENT) {
            qb.push(
                "INSERT INTO deliveries (id, message_id, sink, status, attempts, next_attempt_at, \
                 events, cycle_started_at, created_at, updated_at) ",
            );
            qb.push_values(chunk, |mut b, (m, d)| {
                b.push_bind(d.id.as_str())
                    .push_bind(m.id.as_str())
                    .push_bind(d.sink.as_str())
                    .push("'pending'")
                    .push("0")
                    .push_bind(m.received_at)
                    .push_bind(d.events.as_str())
                    .push_bind(m.received_at)
                    .push_bind(m.received_at)
                    .push_bind(m.received_at);
            });
            qb.push("; ");
        }
        tx.commit_with(qb).await?;
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
        // One hop: lease the due rows, then read them back with their
        // messages by the lease token (statements of one string bind `$N`
        // by number, so the second reuses the first's token and sink).
        let rows = sqlx::query(
            "UPDATE deliveries SET status = 'in_flight', lease_token = $1, next_attempt_at = $2, \
             updated_at = $3 \
             WHERE id IN (SELECT id FROM deliveries WHERE sink = $4 \
                          AND status IN ('pending', 'in_flight') AND next_attempt_at <= $3 \
                          ORDER BY next_attempt_at LIMIT $5); \
             SELECT d.id, d.message_id, d.attempts, d.cycle_started_at, d.events AS matched, \
                    m.source, m.received_at, m.content_type, m.body, m.events \
             FROM deliveries d JOIN messages m ON m.id = d.message_id \
             WHERE d.sink = $4 AND d.status = 'in_flight' AND d.lease_token = $1 ORDER BY d.id",
        )
        .bind(&token)
        .bind(lease_until)
        .bind(now)
        .bind(sink)
        .bind(limit as i64)
        .fetch_all(&mut *self.writer.conn().await?)
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
                    attempts: r.try_get::<i64, _>("attempts")? as u32,
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
        // A delivery completes once per lease; should one appear twice, the
        // first wins, as it did when each completion was its own statement.
        let mut seen = HashSet::with_capacity(batch.len());
        let batch: Vec<&Completion> = batch
            .iter()
            .filter(|c| seen.insert(c.lease.delivery_id.as_str()))
            .collect();
        let attempts: Vec<(&Completion, &AttemptRecord)> = batch
            .iter()
            .filter_map(|c| c.attempt.as_ref().map(|a| (*c, a)))
            .collect();
        // One hop: BEGIN, the attempts, the new states, COMMIT.
        let mut tx = self.writer.begin().await?;
        let mut qb = tx.statement();
        for chunk in attempts.chunks(ROWS_PER_STATEMENT) {
            qb.push(
                "INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms, status, error, response) ",
            );
            qb.push_values(chunk, |mut b, (c, a)| {
                b.push_bind(c.lease.delivery_id.as_str())
                    .push_bind(a.attempt as i64)
                    .push_bind(a.started_at)
                    .push_bind(a.duration_ms)
                    .push_bind(a.status)
                    .push_bind(a.error.as_deref())
                    .push_bind(a.response.as_deref());
            });
            qb.push("; ");
        }
        for chunk in batch.chunks(ROWS_PER_STATEMENT) {
            qb.push("WITH u(id, tk, st, nx, sp, nw, ls, le) AS (");
            qb.push_values(chunk, |mut b, c| {
                let (status, next, spent) = match c.next {
                    NextState::Delivered => ("delivered", c.now, 1),
                    NextState::Retry { at } => ("pending", at, 1),
                    NextState::Dead => ("dead", c.now, 1),
                    NextState::Defer { at } => ("pending", at, 0),
                };
                let a = c.attempt.as_ref();
                b.push_bind(c.lease.delivery_id.as_str())
                    .push_bind(c.lease.lease_token.as_str())
                    .push_bind(status)
                    .push_bind(next)
                    .push_bind(spent)
                    .push_bind(c.now)
                    .push_bind(a.and_then(|a| a.status))
                    .push_bind(a.and_then(|a| a.error.as_deref()));
            });
            qb.push(
                ") UPDATE deliveries SET status = u.st, next_attempt_at = u.nx, \
                 attempts = deliveries.attempts + u.sp, lease_token = NULL, updated_at = u.nw, \
                 last_status = CASE WHEN u.sp = 1 THEN u.ls ELSE deliveries.last_status END, \
                 last_error = CASE WHEN u.sp = 1 THEN u.le ELSE deliveries.last_error END \
                 FROM u WHERE deliveries.id = u.id AND deliveries.lease_token = u.tk; ",
            );
        }
        tx.commit_with(qb).await
    }

    async fn release(&self, leases: &[Lease], now: i64) -> Result<(), StoreError> {
        if leases.is_empty() {
            return Ok(());
        }
        let mut tx = self.writer.begin().await?;
        let mut qb = tx.statement();
        for chunk in leases.chunks(ROWS_PER_STATEMENT) {
            qb.push("WITH u(id, tk) AS (");
            qb.push_values(chunk, |mut b, l| {
                b.push_bind(l.delivery_id.as_str())
                    .push_bind(l.lease_token.as_str());
            });
            qb.push(") UPDATE deliveries SET status = 'pending', next_attempt_at = ")
                .push_bind(now)
                .push(", lease_token = NULL, updated_at = ")
                .push_bind(now)
                .push(" FROM u WHERE deliveries.id = u.id AND deliveries.lease_token = u.tk; ");
        }
        tx.commit_with(qb).await
    }

    async fn next_due(&self, sinks: &[String]) -> Result<Option<i64>, StoreError> {
        let mut earliest: Option<i64> = None;
        for sink in sinks {
            let t: Option<i64> = sqlx::query_scalar(
                "SELECT MIN(next_attempt_at) FROM deliveries WHERE sink = $1 \
                 AND status IN ('pending', 'in_flight')",
            )
            .bind(sink)
            .fetch_one(&self.reader)
            .await?;
            earliest = match (earliest, t) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(earliest)
    }

    async fn list_deliveries(&self, f: &DeliveryFilter) -> Result<Vec<DeliveryRow>, StoreError> {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE 1 = 1"
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
        let rows = qb.build().fetch_all(&self.reader).await?;
        rows.iter().map(delivery_row).collect()
    }

    async fn message(&self, id: &str) -> Result<Option<MessageDetail>, StoreError> {
        let Some(m) = sqlx::query(
            "SELECT id, source, received_at, content_type, headers, body, events FROM messages WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.reader)
        .await?
        else {
            return Ok(None);
        };
        let deliveries = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.message_id = $1 ORDER BY d.sink"
        ))
        .bind(id)
        .fetch_all(&self.reader)
        .await?;
        let attempts = sqlx::query(
            "SELECT a.delivery_id, a.attempt, a.started_at, a.duration_ms, a.status, a.error, a.response \
             FROM attempts a JOIN deliveries d ON d.id = a.delivery_id WHERE d.message_id = $1 ORDER BY a.id",
        )
        .bind(id)
        .fetch_all(&self.reader)
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
                        attempt: a.try_get::<i64, _>("attempt")? as u32,
                        started_at: a.try_get("started_at")?,
                        duration_ms: a.try_get("duration_ms")?,
                        status: a.try_get::<Option<i64>, _>("status")?.map(|v| v as i32),
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
        .execute(&mut *self.writer.conn().await?)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(RetryResult::Requeued);
        }
        let exists: Option<String> =
            sqlx::query_scalar("SELECT status FROM deliveries WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.reader)
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
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
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
        let rows = qb.build().fetch_all(&self.reader).await?;
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
        // Chunks keep each write transaction short, so ingress is never
        // blocked behind a replay of a hundred thousand rows.
        for chunk in ids.chunks(500) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "UPDATE deliveries SET status = 'pending', attempts = 0, lease_token = NULL, next_attempt_at = ",
            );
            qb.push_bind(now)
                .push(", cycle_started_at = ")
                .push_bind(now)
                .push(", updated_at = ")
                .push_bind(now)
                .push(" WHERE status = ")
                .push_bind(f.status.as_str())
                .push(" AND id IN (");
            let mut sep = qb.separated(", ");
            for id in chunk {
                sep.push_bind(id.clone());
            }
            qb.push(")");
            requeued += qb
                .build()
                .execute(&mut *self.writer.conn().await?)
                .await?
                .rows_affected();
            progress(requeued, total);
        }
        Ok(requeued)
    }

    async fn sink_stats(&self, now: i64) -> Result<Vec<SinkStats>, StoreError> {
        let rows = sqlx::query(
            "SELECT sink, status, COUNT(*) AS n, \
             MIN(CASE WHEN status = 'pending' OR next_attempt_at < $2 THEN created_at END) AS oldest, \
             SUM(CASE WHEN status = 'in_flight' AND next_attempt_at < $2 THEN 1 ELSE 0 END) AS overdue, \
             SUM(CASE WHEN status = 'delivered' AND updated_at >= $1 THEN 1 ELSE 0 END) AS last_hour, \
             MAX(CASE WHEN status = 'delivered' THEN updated_at END) AS last_ok \
             FROM deliveries GROUP BY sink, status",
        )
        .bind(now - 3_600_000)
        .bind(now - OVERDUE_MS)
        .fetch_all(&self.reader)
        .await?;
        let errors = sqlx::query(
            "SELECT sink, last_error, MAX(updated_at) FROM deliveries \
             WHERE last_error IS NOT NULL GROUP BY sink",
        )
        .fetch_all(&self.reader)
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
            // Small batches: each is one short write transaction.
            let n = sqlx::query(
                "DELETE FROM messages WHERE id IN (SELECT m.id FROM messages m \
                 WHERE m.received_at < $1 AND NOT EXISTS (SELECT 1 FROM deliveries d \
                   WHERE d.message_id = m.id AND (d.status IN ('pending', 'in_flight') \
                     OR (d.status = 'dead' AND d.updated_at >= $2) \
                     OR (d.status = 'delivered' AND d.updated_at >= $1))) \
                 LIMIT 1000)",
            )
            .bind(c.delivered_before)
            .bind(c.dead_before)
            .execute(&mut *self.writer.conn().await?)
            .await?
            .rows_affected();
            counts.messages += n;
            if n < 1000 {
                break;
            }
        }
        counts.dedupe_keys = sqlx::query("DELETE FROM dedupe WHERE created_at < $1")
            .bind(c.dedupe_before)
            .execute(&mut *self.writer.conn().await?)
            .await?
            .rows_affected();
        Ok(counts)
    }

    async fn sink_states(&self) -> Result<Vec<SinkStateRow>, StoreError> {
        let rows = sqlx::query("SELECT sink, paused, reason, updated_at FROM sink_state")
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(SinkStateRow {
                    sink: r.try_get("sink")?,
                    paused: r.try_get::<i64, _>("paused")? != 0,
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
        .bind(paused as i64)
        .bind(reason)
        .bind(now)
        .execute(&mut *self.writer.conn().await?)
        .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn close(&self) {
        if let Some(c) = self.checkpointer.lock().ok().and_then(|mut c| c.take()) {
            c.abort();
        }
        self.writer.close().await;
        self.reader.close().await;
        // Dropping the file releases the serve lock: a relay started right
        // after this one stopped must not find it still held.
        if let Ok(mut l) = self.lock.lock() {
            l.take();
        }
    }

    async fn recover(&self, now: i64) -> Result<u64, StoreError> {
        if !self.lock.lock().map(|l| l.is_some()).unwrap_or(false) {
            return Ok(0);
        }
        let n = sqlx::query(
            "UPDATE deliveries SET status = 'pending', next_attempt_at = $1, lease_token = NULL \
             WHERE status = 'in_flight'",
        )
        .bind(now)
        .execute(&mut *self.writer.conn().await?)
        .await?
        .rows_affected();
        Ok(n)
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
        .execute(&mut *self.writer.conn().await?)
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
        .fetch_optional(&self.reader)
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
            .execute(&mut *self.writer.conn().await?)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn purge_admin_sessions(&self, now: i64) -> Result<u64, StoreError> {
        let n = sqlx::query("DELETE FROM admin_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *self.writer.conn().await?)
            .await?
            .rows_affected();
        Ok(n)
    }
}
