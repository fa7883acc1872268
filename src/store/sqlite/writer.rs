//! The one writer connection, and write transactions on it.
//!
//! SQLite allows one writer at a time, so the store keeps exactly one
//! writing connection behind an async mutex (fair, FIFO) instead of a pool.
//! A pool would cost a hop to sqlx's connection thread on every release
//! (sqlx pings a connection before taking it back) — measured at 0.3-1 ms
//! per transaction under load, more than the SQL itself.
//!
//! Every statement sent is such a hop, so [`WriteTx`] lets `BEGIN` ride
//! along with the first statement and `COMMIT` with the last: a batch of
//! webhooks commits in two hops, a batch of outcomes or a claim in one.

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, QueryBuilder, Sqlite, SqliteConnection};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use crate::store::StoreError;

/// The writing connection, opened again when a failure discarded it.
pub(super) struct Writer {
    opts: SqliteConnectOptions,
    conn: Mutex<Option<SqliteConnection>>,
    closed: std::sync::atomic::AtomicBool,
}

impl Writer {
    /// Opens the connection now, so a bad path or a locked file fails at start.
    pub(super) async fn open(opts: SqliteConnectOptions) -> Result<Writer, StoreError> {
        let conn = opts.connect().await?;
        Ok(Writer {
            opts,
            conn: Mutex::new(Some(conn)),
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    async fn guard(&self) -> Result<MutexGuard<'_, Option<SqliteConnection>>, StoreError> {
        let mut g = self.conn.lock().await;
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        if g.is_none() {
            *g = Some(self.opts.connect().await?);
        }
        Ok(g)
    }

    /// The connection, for a single statement (SQLite wraps each in its own
    /// transaction and rolls it back by itself on failure).
    pub(super) async fn conn(&self) -> Result<MappedMutexGuard<'_, SqliteConnection>, StoreError> {
        MutexGuard::try_map(self.guard().await?, |c| c.as_mut()).map_err(|_| StoreError::Closed)
    }

    /// Starts a write transaction (sent with its first statement).
    pub(super) async fn begin(&self) -> Result<WriteTx<'_>, StoreError> {
        Ok(WriteTx {
            conn: self.guard().await?,
            begun: false,
        })
    }

    /// Closes the connection; later writes fail with [`StoreError::Closed`].
    pub(super) async fn close(&self) {
        let mut g = self.conn.lock().await;
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        if let Some(c) = g.take() {
            let _ = c.close().await;
        }
    }
}

/// A write transaction on the writer connection, managed by hand rather
/// than with sqlx's `Transaction`.
///
/// Why: when SQLite hits SQLITE_FULL or an I/O error it may roll a
/// transaction back by itself. sqlx's transaction-depth bookkeeping does not
/// learn of that, and a later `commit()` could then release a savepoint
/// inside a transaction that is never committed — acknowledging data that
/// is not on disk (found by the full-disk fault test). Here any failure, and
/// any drop without a successful COMMIT, discards the connection instead:
/// closing it rolls back whatever was open, and the next writer opens a
/// clean one.
pub(super) struct WriteTx<'w> {
    conn: MutexGuard<'w, Option<SqliteConnection>>,
    begun: bool,
}

impl WriteTx<'_> {
    /// A statement builder; the first one also opens the transaction.
    /// IMMEDIATE takes the write lock at once, so a CLI process writing to
    /// the same file waits there instead of failing at commit.
    pub(super) fn statement<'q>(&mut self) -> QueryBuilder<'q, Sqlite> {
        if std::mem::replace(&mut self.begun, true) {
            QueryBuilder::new("")
        } else {
            QueryBuilder::new("BEGIN IMMEDIATE; ")
        }
    }

    /// The connection, for statements inside the transaction.
    pub(super) fn conn(&mut self) -> Result<&mut SqliteConnection, StoreError> {
        self.conn.as_mut().ok_or(StoreError::Closed)
    }

    /// Runs `qb` followed by COMMIT, in one hop.
    pub(super) async fn commit_with(
        mut self,
        mut qb: QueryBuilder<'_, Sqlite>,
    ) -> Result<(), StoreError> {
        let sql = qb.sql().trim_end();
        if !(sql.is_empty() || sql.ends_with(';')) {
            qb.push("; ");
        }
        qb.push("COMMIT");
        let done = qb.build().execute(self.conn()?).await;
        if done.is_ok() {
            // Committed: keep the connection.
            self.begun = false;
        }
        done.map(|_| ()).map_err(StoreError::from)
    }
}

impl Drop for WriteTx<'_> {
    fn drop(&mut self) {
        if self.begun {
            // Not committed (or unknown): closing the connection rolls it back.
            self.conn.take();
        }
    }
}

/// How often the background checkpointer copies the WAL into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// WAL pages after which a committing writer checkpoints by itself: the
/// safety net that keeps the WAL bounded (see [`spawn_checkpointer`]).
pub(super) const WAL_AUTOCHECKPOINT_PAGES: &str = "4000";

/// Copies the WAL into the database file from a connection of its own,
/// every [`CHECKPOINT_EVERY`], until aborted.
///
/// Why: SQLite's automatic checkpoint runs inside the COMMIT that crosses
/// the threshold, on the writer, so every few hundred milliseconds under
/// load one commit also copied megabytes into the database and fsynced it
/// while every webhook waited (measured: ingress at 64 senders went from
/// about 5,000 to 8,800 acknowledged/s without it). A PASSIVE checkpoint
/// here runs beside the writer instead. The writer's own automatic
/// checkpoint stays on at [`WAL_AUTOCHECKPOINT_PAGES`]: under continuous
/// writes a checkpoint from outside never quite catches the end of the
/// WAL, and only a checkpoint by the writer itself lets the WAL start over,
/// but by then nearly everything has been copied and it is cheap.
pub(super) fn spawn_checkpointer(opts: SqliteConnectOptions) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut conn: Option<SqliteConnection> = None;
        let mut failures = 0u32;
        let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if conn.is_none() {
                conn = opts.connect().await.ok();
            }
            let Some(c) = conn.as_mut() else { continue };
            match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&mut *c)
                .await
            {
                Ok(_) => failures = 0,
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(600) {
                        tracing::warn!(error = %e, "background WAL checkpoint failed; the writer checkpoints by itself meanwhile");
                    }
                    conn = None;
                }
            }
        }
    })
}
