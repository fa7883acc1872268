//! The dispatcher: per sink, claim due deliveries with a lease, send them
//! with bounded concurrency, and commit each outcome.
//!
//! One loop per sink, so a slow or failing sink never holds up another.
//! A loop claims a batch (one short transaction), runs up to `concurrency`
//! attempts at once, and refills when its buffer runs low. Outcomes go to a
//! group-commit batcher, so a thousand deliveries a second do not mean a
//! thousand fsyncs. No transaction is open while a request is in flight:
//! the lease in the row is what keeps other workers off it.

pub mod circuit;
#[cfg(test)]
mod fault_tests;
pub mod fetcher;
mod filtering;
pub mod ratelimit;
pub mod retry;
mod sinkset;
mod worker;

pub use fetcher::{FetchStage, SourceFetch};
pub use sinkset::{SinkRuntime, SinkSet};
use worker::{lease_for, take_batch};

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::sinks::AttemptOutcome;
use crate::store::batch::Batcher;
use crate::store::{
    now_ms, AttemptRecord, Claimed, Completion, FetchStatus, Millis, NextState, Store, StoreError,
    PARKED,
};

use circuit::Transition;
use retry::next_state;

/// The prefix of an attempt error that says the sink's code panicked.
const PANIC: &str = "panic: ";

fn is_panic(error: &str) -> bool {
    error.starts_with(PANIC)
}

/// Draws the jitter for a retry delay, in `[0, 1]`. Injected so tests are exact.
pub type Jitter = Arc<dyn Fn() -> f64 + Send + Sync>;

/// The default jitter: uniform random.
pub fn random_jitter() -> Jitter {
    Arc::new(rand::random::<f64>)
}

/// How often the dispatcher looks for deliveries overdue in flight.
const OVERDUE_WATCH: Duration = Duration::from_secs(60);

/// How often a relay re-reads pause states others may have changed.
pub const STATE_REFRESH: Duration = Duration::from_secs(2);

/// The delivery engine. Cheap to share; [`Dispatcher::run`] drives it.
pub struct Dispatcher {
    store: Arc<dyn Store>,
    sinks: Arc<SinkSet>,
    completions: Batcher<Completion, ()>,
    metrics: Arc<Metrics>,
    jitter: Jitter,
    poll_interval: Duration,
    shutdown_grace: Duration,
}

impl Dispatcher {
    /// Creates a dispatcher and starts its completion batcher.
    pub fn new(
        store: Arc<dyn Store>,
        sinks: Arc<SinkSet>,
        metrics: Arc<Metrics>,
        jitter: Jitter,
        poll_interval: Duration,
        shutdown_grace: Duration,
    ) -> Dispatcher {
        let s = store.clone();
        let (completions, _task) = Batcher::spawn_dedicated(
            "hookrelay-outcomes",
            store.dedicated_commit_thread(),
            8192,
            512,
            move |batch: Vec<Completion>| {
                let s = s.clone();
                async move {
                    let n = batch.len();
                    s.complete(&batch).await.map(|_| vec![(); n])
                }
            },
        );
        Dispatcher {
            store,
            sinks,
            completions,
            metrics,
            jitter,
            poll_interval,
            shutdown_grace,
        }
    }

    /// Runs one loop per sink until `cancel`, then stops claiming, lets
    /// attempts in flight finish for the shutdown grace period and returns
    /// the leases of everything it did not finish.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut loops = JoinSet::new();
        for rt in self.sinks.iter() {
            loops.spawn(worker::Worker::new(self.clone(), rt.clone()).run(cancel.clone()));
        }
        let refresh = tokio::spawn(self.clone().refresh_state(cancel.clone()));
        let overdue = tokio::spawn(self.clone().watch_overdue(cancel.clone()));
        while loops.join_next().await.is_some() {}
        refresh.abort();
        overdue.abort();
    }

    /// Says, once a minute, which sinks have deliveries in flight long past
    /// their lease (a relay died or hangs holding them). Claims take such
    /// deliveries back by themselves; this makes sure someone hears of it.
    async fn watch_overdue(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(OVERDUE_WATCH) => {}
            }
            let Ok(stats) = self.store.sink_stats(now_ms()).await else {
                continue;
            };
            for s in stats.iter().filter(|s| s.overdue_in_flight > 0) {
                tracing::warn!(sink = %s.sink, overdue = s.overdue_in_flight,
                    "deliveries in flight long past their lease; the next claim takes them back");
            }
        }
    }

    /// Re-reads the durable pause state every [`STATE_REFRESH`], so a pause
    /// or resume made through another relay on the same database, or with
    /// the CLI, takes effect here too.
    async fn refresh_state(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(STATE_REFRESH) => {}
            }
            if let Err(e) = self.sinks.load_state(self.store.as_ref()).await {
                tracing::debug!(error = %e, "cannot re-read sink states; will try again");
            }
        }
    }

    /// Feeds an attempt's result to the breaker and the deactivation
    /// policy, logging each state change once. A 429 that says when to come
    /// back is the sink pacing us, not failing: it counts toward neither.
    async fn record_health(&self, rt: &SinkRuntime, outcome: &AttemptOutcome, now: Millis) {
        if let (Some(429), retry::Verdict::Retry { after: Some(after) }) =
            (outcome.status, outcome.verdict)
        {
            if let Ok(mut c) = rt.circuit.lock() {
                c.record_paced(now, after);
            }
            return;
        }
        if outcome.is_render_failure() || outcome.error.as_deref().is_some_and(is_panic) {
            // Nothing reached the sink: says nothing about its health.
            if let Ok(mut c) = rt.circuit.lock() {
                c.record_paced(now, Duration::ZERO);
            }
            return;
        }
        let delivered = outcome.verdict == retry::Verdict::Delivered;
        let transition = rt
            .circuit
            .lock()
            .ok()
            .and_then(|mut c| c.record(delivered, now));
        match transition {
            Some(Transition::Opened) => {
                tracing::warn!(sink = %rt.name, failures = rt.policy.circuit.failures,
                probe_every = ?rt.policy.circuit.probe_interval.0, "circuit opened: holding deliveries back")
            }
            Some(Transition::Closed) => {
                tracing::info!(sink = %rt.name, "circuit closed: sending again")
            }
            None => {}
        }
        let deactivate = rt
            .deactivation
            .as_ref()
            .and_then(|d| d.lock().ok().map(|mut d| d.record(delivered, now)))
            .unwrap_or(false);
        if deactivate && !rt.paused() {
            let reason = "deactivated after repeated failures (deactivate_after)";
            rt.set_paused(true);
            if let Err(e) = self
                .store
                .set_paused(&rt.name, true, Some(reason), now)
                .await
            {
                tracing::error!(sink = %rt.name, error = %e, "cannot persist deactivation");
            }
            tracing::warn!(sink = %rt.name, "sink deactivated: paused until an administrator resumes it");
        }
    }

    /// Makes one attempt — one request carrying one delivery, or several
    /// for a sink that batches — and decides each delivery's next state.
    /// `clock` is the time to schedule from (tests pass their own; `None`
    /// is now).
    ///
    /// One delivery's fault never decides another's fate: a row that does
    /// not read back is made dead alone, and a batch that cannot be
    /// rendered, or whose rendering or sending panics, is tried again one
    /// delivery at a time, so only the culprit fails.
    async fn attempt(
        &self,
        rt: &SinkRuntime,
        batch: Vec<Claimed>,
        clock: Option<Millis>,
    ) -> Vec<Completion> {
        let (defects, batch): (Vec<Claimed>, Vec<Claimed>) =
            batch.into_iter().partition(|d| d.defect.is_some());
        let mut out: Vec<Completion> = defects
            .into_iter()
            .map(|d| self.defective(rt, d, clock))
            .collect();
        let batch = if rt.needs_changes {
            self.with_changes(batch).await
        } else {
            batch
        };
        let (held, batch): (Vec<Claimed>, Vec<Claimed>) = batch
            .into_iter()
            .partition(|d| rt.needs_changes && !matches!(d.fetch, None | Some(FetchStatus::Done)));
        out.extend(held.into_iter().map(|d| self.not_fetched(rt, d, clock)));
        let batch = match &rt.filter {
            Some(f) => {
                let (kept, dropped) = self.filter(rt, f, batch);
                out.extend(dropped.into_iter().map(|d| filtered(d, clock)));
                kept
            }
            None => batch,
        };
        if batch.is_empty() {
            return out;
        }
        if batch.len() == 1 {
            out.extend(
                self.attempt_batch(rt, batch, clock)
                    .await
                    .unwrap_or_default(),
            );
            return out;
        }
        match self.attempt_batch(rt, batch, clock).await {
            Ok(done) => out.extend(done),
            Err(batch) => {
                tracing::warn!(sink = %rt.name, deliveries = batch.len(),
                    "a batch failed to render or panicked; trying its deliveries one by one");
                for d in batch {
                    out.extend(
                        self.attempt_batch(rt, vec![d], clock)
                            .await
                            .unwrap_or_default(),
                    );
                }
            }
        }
        out
    }

    /// Fills in the fetch state and changes of each delivery's message
    /// (one query per batch). If the store cannot answer, every delivery
    /// is treated as waiting: parked, to be settled by the fetch stage.
    async fn with_changes(&self, mut batch: Vec<Claimed>) -> Vec<Claimed> {
        let ids: Vec<_> = batch.iter().map(|d| d.message_id.clone()).collect();
        match self.store.fetch_states(&ids).await {
            Ok(states) => {
                for (id, status, changes) in states {
                    for d in batch.iter_mut().filter(|d| d.message_id == id) {
                        d.fetch = Some(status);
                        d.changes = changes.clone();
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read fetch states; holding the deliveries back");
                for d in &mut batch {
                    d.fetch = Some(FetchStatus::Pending);
                }
            }
        }
        batch
    }

    /// Applies the sink's filter to each delivery: the deliveries with
    /// something left, and those with nothing (recorded as filtered).
    fn filter(
        &self,
        rt: &SinkRuntime,
        f: &crate::filter::Filter,
        batch: Vec<Claimed>,
    ) -> (Vec<Claimed>, Vec<Claimed>) {
        let mut kept = Vec::with_capacity(batch.len());
        let mut dropped = Vec::new();
        for mut d in batch {
            let r = filtering::apply(f, &mut d);
            if r.errors > 0 {
                self.metrics.filter_errors(&rt.name, r.errors);
            }
            if r.kept {
                kept.push(d);
            } else {
                self.metrics.delivery(&rt.name, "filtered", 0.0);
                tracing::debug!(sink = %rt.name, delivery_id = %d.id, "filtered: nothing matched");
                dropped.push(d);
            }
        }
        (kept, dropped)
    }

    /// A delivery that needs its message's changes before they are
    /// fetched. Normally such a delivery stays parked until the fetch is
    /// done; this one was made due early (a replay, which requeues the
    /// fetch too). Parked again without spending an attempt: the fetch's
    /// completion, or the fetch stage's sweep should the two cross, makes
    /// it due. If the fetch died, it dies with it.
    fn not_fetched(&self, rt: &SinkRuntime, d: Claimed, clock: Option<Millis>) -> Completion {
        let now = clock.unwrap_or_else(now_ms);
        if d.fetch == Some(FetchStatus::Dead) {
            self.metrics.delivery(&rt.name, "dead", 0.0);
            return Completion {
                lease: d.lease(),
                attempt: Some(unsent(
                    &d,
                    now,
                    Some("changes not fetched: the fetch job is dead".into()),
                    None,
                )),
                next: NextState::Dead,
                now,
            };
        }
        Completion {
            lease: d.lease(),
            attempt: None,
            next: NextState::Defer { at: PARKED },
            now,
        }
    }

    /// A delivery whose stored row does not read back: dead at once, with
    /// the reason as its attempt's error (visible, and replayable once the
    /// cause is fixed).
    fn defective(&self, rt: &SinkRuntime, d: Claimed, clock: Option<Millis>) -> Completion {
        let now = clock.unwrap_or_else(now_ms);
        let error = d.defect.clone().unwrap_or_default();
        self.metrics.delivery(&rt.name, "dead", 0.0);
        tracing::warn!(sink = %rt.name, delivery_id = %d.id, message_id = %d.message_id,
            error = %error, "delivery dead: its stored message cannot be read");
        Completion {
            lease: d.lease(),
            attempt: Some(unsent(&d, now, Some(error), None)),
            next: NextState::Dead,
            now,
        }
    }

    /// One request for `batch`. `Err(batch)` when a batch of several
    /// failed to render or panicked (the caller splits it); a single
    /// delivery always gets its outcome.
    async fn attempt_batch(
        &self,
        rt: &SinkRuntime,
        batch: Vec<Claimed>,
        clock: Option<Millis>,
    ) -> Result<Vec<Completion>, Vec<Claimed>> {
        if let Some(l) = &rt.limiter {
            l.acquire().await;
        }
        let started_at = clock.unwrap_or_else(now_ms);
        let t0 = Instant::now();
        let sending = match batch.as_slice() {
            [one] => rt.sink.deliver(one),
            many => rt.sink.deliver_batch(many),
        };
        // A panic in a sink's render or send must not kill the attempt
        // task: the lease would expire and the panic repeat forever.
        let outcome = match std::panic::AssertUnwindSafe(sending).catch_unwind().await {
            Ok(o) => o,
            Err(panic) => {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown".into());
                AttemptOutcome {
                    verdict: retry::Verdict::Permanent,
                    status: None,
                    error: Some(format!("{PANIC}{why}")),
                    response: None,
                }
            }
        };
        if batch.len() > 1
            && (outcome.is_render_failure() || outcome.error.as_deref().is_some_and(is_panic))
        {
            return Err(batch);
        }
        let elapsed = t0.elapsed();
        let now = clock.unwrap_or_else(now_ms);
        let secs = elapsed.as_secs_f64();
        self.record_health(rt, &outcome, now).await;
        let mut out = Vec::with_capacity(batch.len());
        for d in batch {
            let attempt_no = d.attempts + 1;
            let next = next_state(
                &rt.policy,
                outcome.verdict,
                attempt_no,
                d.cycle_started_at,
                now,
                (self.jitter)(),
            );
            match next {
                NextState::Delivered => {
                    self.metrics.delivery(&rt.name, "delivered", secs);
                    self.metrics
                        .end_to_end(&rt.name, now_ms().since(d.received_at).as_secs_f64());
                    tracing::debug!(sink = %rt.name, delivery_id = %d.id, "delivered");
                }
                NextState::Retry { at } => {
                    self.metrics.delivery(&rt.name, "retried", secs);
                    tracing::debug!(sink = %rt.name, delivery_id = %d.id, attempt = attempt_no,
                        retry_in_ms = at.ms_since(now), error = ?outcome.error, "attempt failed; will retry");
                }
                NextState::Dead => {
                    self.metrics.delivery(&rt.name, "dead", secs);
                    tracing::warn!(sink = %rt.name, delivery_id = %d.id, message_id = %d.message_id,
                        attempts = attempt_no, status = ?outcome.status,
                        error = outcome.error.as_deref().unwrap_or(""), "delivery dead");
                }
                NextState::Defer { .. } => {}
            }
            out.push(Completion {
                lease: d.lease(),
                attempt: Some(AttemptRecord {
                    attempt: attempt_no,
                    started_at,
                    duration_ms: elapsed.as_millis() as i64,
                    status: outcome.status,
                    error: outcome.error.clone(),
                    response: outcome.response.clone(),
                }),
                next,
                now,
            });
        }
        Ok(out)
    }

    /// Drives every sink one step at time `now`: claims what is due, makes
    /// one attempt each and commits the outcomes. Returns how many attempts
    /// were made. For tests and tools: nothing sleeps, time is the caller's.
    pub async fn run_once(&self, now: Millis) -> Result<usize, StoreError> {
        let mut n = 0;
        for rt in self.sinks.iter() {
            if rt.paused() {
                continue;
            }
            let lease = lease_for(&rt.policy, 1000);
            let mut claimed: VecDeque<Claimed> = self
                .store
                .claim(&rt.name, 1000, now, now.after(lease))
                .await?
                .into();
            let mut done = Vec::with_capacity(claimed.len());
            loop {
                let batch = take_batch(&mut claimed, rt.sink.max_batch_rows());
                if batch.is_empty() {
                    break;
                }
                done.extend(self.attempt(rt, batch, Some(now)).await);
            }
            n += done.len();
            self.store.complete(&done).await?;
        }
        Ok(n)
    }
}

/// A delivery the sink's filter left nothing of: completed without a
/// request, its attempt saying so (it is not an error, and replaying it
/// filters it again).
fn filtered(d: Claimed, clock: Option<Millis>) -> Completion {
    let now = clock.unwrap_or_else(now_ms);
    Completion {
        lease: d.lease(),
        attempt: Some(unsent(&d, now, None, Some(FILTERED.into()))),
        next: NextState::Delivered,
        now,
    }
}

/// The answer recorded for a filtered delivery.
pub const FILTERED: &str = "filtered: nothing matched the sink's filter; nothing was sent";

/// The attempt of a delivery decided without a request (a row that does
/// not read back, a dead fetch, a filter that left nothing).
fn unsent(
    d: &Claimed,
    now: Millis,
    error: Option<String>,
    response: Option<String>,
) -> AttemptRecord {
    AttemptRecord {
        attempt: d.attempts + 1,
        started_at: now,
        duration_ms: 0,
        status: None,
        error,
        response,
    }
}
