//! LISTEN/NOTIFY between relays sharing a database: this relay's
//! announcements of new work, coalesced, and the listener that wakes this
//! relay's idle workers when another relay announces. A hint only: every
//! relay also polls.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::Notify;

const CHANNEL: &str = "hookrelay_work";

/// The least time between two new-work NOTIFYs from one relay.
///
/// Each NOTIFY costs a statement, a transaction and a wake-up of every
/// listening backend and relay; sent per ingest batch it was a large part
/// of Postgres' per-batch CPU with two relays (measured). A worker that
/// finds the queue empty waits 20 ms before claiming again anyway
/// (`CLAIM_GAP` in dispatch), so announcing new work more often than that
/// buys nothing.
const HINT_GAP: Duration = Duration::from_millis(20);

/// This relay's new-work NOTIFYs, coalesced to one per [`HINT_GAP`].
pub(super) struct Hints {
    pool: PgPool,
    /// A NOTIFY task is running (sending, or waiting out [`HINT_GAP`]).
    hinting: Arc<AtomicBool>,
    /// New work committed since the running task last sent a NOTIFY.
    again: Arc<AtomicBool>,
}

impl Hints {
    pub(super) fn new(pool: PgPool) -> Hints {
        Hints {
            pool,
            hinting: Arc::new(AtomicBool::new(false)),
            again: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A NOTIFY now, awaited (after a retry or replay).
    pub(super) async fn now(&self) {
        // A lost notification only delays work until the next poll.
        let _ = sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(&self.pool)
            .await;
    }

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
    pub(super) fn new_work(&self) {
        self.again.store(true, SeqCst);
        if self.hinting.swap(true, SeqCst) {
            // The running task sees `hint_again` before it stops.
            return;
        }
        let (pool, hinting, again) = (self.pool.clone(), self.hinting.clone(), self.again.clone());
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

/// How the listener reconnects: soon after a blip, at most every 10 s
/// while Postgres is away, for as long as the relay runs.
pub(super) fn reconnect_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
}

/// Forwards NOTIFYs from any relay process to this process's idle workers,
/// for as long as the relay runs: a session that fails (Postgres restarts,
/// the connection drops) is started again after [`reconnect_backoff`].
pub(super) async fn listen(pool: PgPool, work: Arc<Notify>) {
    let session = || async {
        let mut l = PgListener::connect_with(&pool).await?;
        l.listen(CHANNEL).await?;
        loop {
            // `None`: the connection was lost and is being re-established;
            // wake everyone in case a notification was missed meanwhile.
            let _ = l.try_recv().await?;
            work.notify_waiters();
        }
        #[allow(unreachable_code)]
        Ok::<(), sqlx::Error>(())
    };
    let _ = session
        .retry(reconnect_backoff())
        .notify(|e, d| tracing::debug!(error = %e, retry_in = ?d, "LISTEN session ended; starting again"))
        .await;
}
