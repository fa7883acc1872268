//! Group commit: many callers, one transaction.
//!
//! Each caller submits one item and waits for its own result; a single task
//! takes whatever has queued up (up to `max_batch`) and hands it to the store
//! as one transaction, so a burst of requests pays for one fsync instead of
//! one each. The channel's capacity bounds how much work may wait: when it is
//! full, [`Batcher::submit`] fails at once and ingress answers 503 instead of
//! queueing without bound.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::StoreError;

type Job<T, R> = (T, oneshot::Sender<Result<R, Arc<StoreError>>>);

/// Why a submitted item has no result.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// Too much is already waiting for a commit.
    #[error("commit queue is full")]
    Full,
    /// The batch task has stopped (shutdown).
    #[error("commit queue is closed")]
    Closed,
    /// The transaction failed; nothing of the batch was committed.
    #[error(transparent)]
    Store(Arc<StoreError>),
}

/// The batch loop: take what has queued up, commit it, answer each caller.
async fn run<T, R, F, Fut>(mut rx: mpsc::Receiver<Job<T, R>>, max_batch: usize, commit: F)
where
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = Result<Vec<R>, StoreError>>,
{
    let mut items = Vec::with_capacity(max_batch);
    let mut replies = Vec::with_capacity(max_batch);
    while let Some((item, reply)) = rx.recv().await {
        items.push(item);
        replies.push(reply);
        while items.len() < max_batch {
            match rx.try_recv() {
                Ok((item, reply)) => {
                    items.push(item);
                    replies.push(reply);
                }
                Err(_) => break,
            }
        }
        let batch = std::mem::replace(&mut items, Vec::with_capacity(max_batch));
        match commit(batch).await {
            Ok(results) => {
                for (reply, r) in replies.drain(..).zip(results) {
                    let _ = reply.send(Ok(r));
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Handle to a group-commit task. Cloning it is cheap; the task ends after
/// the last handle is dropped and everything queued has been committed.
pub struct Batcher<T, R> {
    tx: mpsc::Sender<Job<T, R>>,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Batcher {
            tx: self.tx.clone(),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Starts the task on the current runtime. `commit` must return exactly
    /// one result per item, in order.
    pub fn spawn<F, Fut>(capacity: usize, max_batch: usize, commit: F) -> (Self, JoinHandle<()>)
    where
        F: Fn(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<R>, StoreError>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<Job<T, R>>(capacity.max(1));
        let handle = tokio::spawn(run(rx, max_batch.max(1), commit));
        (Batcher { tx }, handle)
    }

    /// Starts the task on a thread of its own, named `name`, with its own
    /// single-threaded runtime (or, unless `dedicated`, like [`Batcher::spawn`]).
    ///
    /// Why: the commit loop is the one serial path every webhook waits on.
    /// On the shared runtime each of its wake-ups (the writer lock, each
    /// answer from the database thread) queues behind request handling and
    /// sink calls; measured on 2 cores, that queueing was most of a
    /// commit's time. A thread that does nothing else is polled as soon as
    /// it is woken. Falls back to [`Batcher::spawn`] if no thread can be
    /// started. The returned handle (on the caller's runtime) ends with the loop.
    pub fn spawn_dedicated<F, Fut>(
        name: &str,
        dedicated: bool,
        capacity: usize,
        max_batch: usize,
        commit: F,
    ) -> (Self, JoinHandle<()>)
    where
        F: Fn(Vec<T>) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<Vec<R>, StoreError>> + Send + 'static,
    {
        if !dedicated {
            return Self::spawn(capacity, max_batch, commit);
        }
        let (tx, rx) = mpsc::channel::<Job<T, R>>(capacity.max(1));
        let max_batch = max_batch.max(1);
        let fallback = commit.clone();
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::warn!(error = %e, "no runtime for {name}; committing on the shared one");
                return (Batcher { tx }, tokio::spawn(run(rx, max_batch, commit)));
            }
        };
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                rt.block_on(run(rx, max_batch, commit));
                let _ = done_tx.send(());
            });
        if let Err(e) = thread {
            // The closure (and the receiver in it) is gone: start over on
            // the shared runtime with a fresh channel.
            tracing::warn!(error = %e, "cannot start thread {name}; committing on the shared one");
            return Self::spawn(capacity, max_batch, fallback);
        }
        let handle = tokio::spawn(async move {
            let _ = done_rx.await;
        });
        (Batcher { tx }, handle)
    }

    /// Queues an item and waits for its commit. Fails at once when the queue is full.
    pub async fn submit(&self, item: T) -> Result<R, SubmitError> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send((item, reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SubmitError::Full,
            mpsc::error::TrySendError::Closed(_) => SubmitError::Closed,
        })?;
        match rx.await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(SubmitError::Store(e)),
            Err(_) => Err(SubmitError::Closed),
        }
    }

    /// Queues an item, waiting for room rather than failing when full.
    pub async fn submit_wait(&self, item: T) -> Result<R, SubmitError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((item, reply))
            .await
            .map_err(|_| SubmitError::Closed)?;
        match rx.await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(SubmitError::Store(e)),
            Err(_) => Err(SubmitError::Closed),
        }
    }

    /// Items waiting right now (for the backlog check and metrics).
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}
