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
    /// Starts the task. `commit` must return exactly one result per item, in order.
    pub fn spawn<F, Fut>(capacity: usize, max_batch: usize, commit: F) -> (Self, JoinHandle<()>)
    where
        F: Fn(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<R>, StoreError>> + Send,
    {
        let (tx, mut rx) = mpsc::channel::<Job<T, R>>(capacity.max(1));
        let max_batch = max_batch.max(1);
        let handle = tokio::spawn(async move {
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
