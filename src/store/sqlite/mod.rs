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

// The catalog's two needs of this backend: typed reads (from the
// reader pool) and writes (on the one writer connection).
#[async_trait]
impl<T> catalog::Fetch<T> for SqliteStore
where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin + 'static,
{
    async fn fetch(&self, q: &catalog::Query) -> Result<Vec<T>, StoreError> {
        Ok(catalog::fetch_with(&self.reader, q).await?)
    }
}

#[async_trait]
impl catalog::Write for SqliteStore {
    const SKIP_LOCKED: &'static str = "";

    async fn write(&self, q: &catalog::Query) -> Result<u64, StoreError> {
        Ok(catalog::write_with(&mut *self.writer.conn().await?, q).await?)
    }

    async fn write_all(&self, qs: &[catalog::Query]) -> Result<(), StoreError> {
        use sqlx::Connection;
        let mut conn = self.writer.conn().await?;
        let mut tx = conn.begin().await?;
        for q in qs {
            catalog::write_with(&mut *tx, q).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn dedicated_commit_thread(&self) -> bool {
        true
    }

    async fn ingest(
        &self,
        batch: &[NewMessage],
        now: Millis,
    ) -> Result<Vec<IngestOutcome>, StoreError> {
        let mut tx = self.writer.begin().await?;
        let candidates: Vec<&NewMessage> =
            batch.iter().filter(|m| m.dedupe_window_ms > 0).collect();
        // Messages whose dedupe key was already taken, with the message
        // that holds it.
        let mut lost: HashMap<&str, MessageId> = HashMap::new();
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
                    .push_bind(now.get().saturating_sub(w))
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
                    let mut holder: HashMap<(String, String), MessageId> = HashMap::new();
                    for r in qb.build().fetch_all(tx.conn()?).await? {
                        holder.insert((r.try_get(0)?, r.try_get(1)?), r.try_get(2)?);
                    }
                    for m in chunk {
                        let first = holder
                            .get(&(m.source.to_string(), m.dedupe_key.clone()))
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
                    .push_bind(d.due(m.received_at))
                    .push_bind(d.events.as_str())
                    .push_bind(m.received_at)
                    .push_bind(m.received_at)
                    .push_bind(m.received_at);
            });
            qb.push("; ");
        }
        let fetches: Vec<&&NewMessage> = keep.iter().filter(|m| m.fetch).collect();
        for chunk in fetches.chunks(ROWS_PER_STATEMENT) {
            qb.push(
                "INSERT INTO fetches (message_id, source, status, attempts, next_attempt_at, \
                 cycle_started_at, created_at, updated_at) ",
            );
            qb.push_values(chunk, |mut b, m| {
                b.push_bind(m.id.as_str())
                    .push_bind(m.source.as_str())
                    .push("'pending'")
                    .push("0")
                    .push_bind(m.received_at)
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
        sink: &SinkName,
        limit: usize,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Vec<Claimed>, StoreError> {
        let token = LeaseToken::generate();
        // One hop: lease the due rows, then read them back with their
        // messages by the lease token (statements of one string bind `$N`
        // by number, so the second reuses the first's token and sink).
        let rows: Vec<ClaimRow> = sqlx::query_as(
            "UPDATE deliveries SET status = 'in_flight', lease_token = $1, next_attempt_at = $2, \
             updated_at = $3 \
             WHERE id IN (SELECT id FROM deliveries WHERE sink = $4 \
                          AND status IN ('pending', 'in_flight') AND next_attempt_at <= $3 \
                          ORDER BY next_attempt_at LIMIT $5); \
             SELECT d.id, d.message_id, CAST(d.attempts AS BIGINT) AS attempts, d.cycle_started_at, d.events AS matched, \
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
        Ok(rows
            .into_iter()
            .map(|r| r.into_claimed(&token, sink))
            .collect())
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
                ") UPDATE deliveries SET status = u.st, \
                 next_attempt_at = CASE WHEN u.nx = 9223372036854775807 AND EXISTS \
                   (SELECT 1 FROM fetches f WHERE f.message_id = deliveries.message_id \
                    AND f.status = 'done') THEN u.nw ELSE u.nx END, \
                 attempts = deliveries.attempts + u.sp, lease_token = NULL, updated_at = u.nw, \
                 last_status = CASE WHEN u.sp = 1 THEN u.ls ELSE deliveries.last_status END, \
                 last_error = CASE WHEN u.sp = 1 THEN u.le ELSE deliveries.last_error END \
                 FROM u WHERE deliveries.id = u.id AND deliveries.lease_token = u.tk; ",
            );
        }
        tx.commit_with(qb).await
    }

    async fn release(&self, leases: &[Lease], now: Millis) -> Result<(), StoreError> {
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

    async fn next_due(&self, sinks: &[SinkName]) -> Result<Option<Millis>, StoreError> {
        let mut earliest: Option<Millis> = None;
        for sink in sinks {
            let t: Option<Millis> = sqlx::query_scalar(
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

    async fn recover(&self, now: Millis) -> Result<u64, StoreError> {
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
        // Fetch jobs too: the process that leased them is gone.
        sqlx::query(
            "UPDATE fetches SET status = 'pending', next_attempt_at = $1, lease_token = NULL \
             WHERE status = 'in_flight'",
        )
        .bind(now)
        .execute(&mut *self.writer.conn().await?)
        .await?;
        Ok(n)
    }
}
