//! Connections kept by the group-commit loops.

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, MutexGuard};

use crate::store::StoreError;

/// A pool connection kept checked out by one serial caller, a group-commit
/// loop, instead of taken from the pool for every batch.
///
/// Why: each batch is one statement, and a pooled acquire costs another
/// round trip (sqlx pings an idle connection before handing it out) and
/// lands on whichever backend is next in the pool's queue, so every batch
/// woke a different, cold Postgres process. A connection that fails is
/// dropped (and closed by the pool), so the next batch starts on a fresh,
/// pinged one: after Postgres restarts, at most one batch per loop fails.
///
/// A connection left unused for [`KEEP_IDLE`] goes back to the pool before
/// the next batch, which then takes one the pool has pinged: a server,
/// firewall or proxy may close an idle connection, and the first batch on
/// it would fail with a 503 that the pool's ping avoids. Under load the
/// kept connection is never that idle.
///
/// A pool smaller than [`KEEP_FROM_POOL_SIZE`] cannot spare two kept
/// connections (claims and the admin API would starve), so there each
/// statement takes a connection and gives it back, as before.
pub(super) struct Held {
    slot: Mutex<Option<Kept>>,
    keep: bool,
}

/// A kept connection and when its last statement finished.
struct Kept {
    conn: PoolConnection<Postgres>,
    used: Instant,
}

/// How long a kept connection may sit unused before it is pinged again
/// (by going back through the pool).
pub(super) const KEEP_IDLE: Duration = Duration::from_secs(1);

/// The least pool size at which the two group-commit loops keep their
/// connections.
pub(super) const KEEP_FROM_POOL_SIZE: u32 = 4;

impl Held {
    /// A slot for a pool of `pool_size` connections.
    pub(super) fn new(pool_size: u32) -> Self {
        Held {
            slot: Mutex::new(None),
            keep: pool_size >= KEEP_FROM_POOL_SIZE,
        }
    }

    /// The kept connection, acquiring one first if needed. Pass the
    /// statement's result through [`HeldConn::check`].
    pub(super) async fn get(&self, pool: &PgPool) -> Result<HeldConn<'_>, StoreError> {
        let mut slot = self.slot.lock().await;
        if slot.as_ref().is_some_and(|k| k.used.elapsed() > KEEP_IDLE) {
            *slot = None;
        }
        if slot.is_none() {
            *slot = Some(Kept {
                conn: pool.acquire().await?,
                used: Instant::now(),
            });
        }
        Ok(HeldConn {
            slot,
            keep: self.keep,
        })
    }

    /// Gives the connection back, so closing the pool does not wait for it.
    pub(super) async fn release(&self) {
        self.slot.lock().await.take();
    }
}

/// A [`Held`] connection, locked for one statement.
pub(super) struct HeldConn<'a> {
    slot: MutexGuard<'a, Option<Kept>>,
    keep: bool,
}

impl HeldConn<'_> {
    /// The connection to run a statement on.
    pub(super) fn conn(&mut self) -> Result<&mut PgConnection, StoreError> {
        match self.slot.as_mut() {
            Some(k) => Ok(&mut *k.conn),
            None => Err(StoreError::Corrupt("held connection missing".into())),
        }
    }

    /// Passes a statement's result on; after an error the connection is
    /// not used again.
    pub(super) fn check<T>(mut self, r: Result<T, sqlx::Error>) -> Result<T, StoreError> {
        if r.is_err() || !self.keep {
            *self.slot = None;
        } else if let Some(k) = self.slot.as_mut() {
            k.used = Instant::now();
        }
        Ok(r?)
    }
}
