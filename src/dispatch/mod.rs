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
pub mod ratelimit;
pub mod retry;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, DeliveryPolicy, SinkKind};
use crate::metrics::Metrics;
use crate::sinks::{AttemptOutcome, Sink};
use crate::store::batch::Batcher;
use crate::store::{
    now_ms, AttemptRecord, Claimed, Completion, Lease, NextState, Store, StoreError,
};
use circuit::{Circuit, CircuitPolicy, Deactivation, Gate, Transition};
use ratelimit::RateLimiter;
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

/// A configured sink at run time: how to send, its policy and its switches.
pub struct SinkRuntime {
    /// Name from the config.
    pub name: String,
    /// Kind from the config.
    pub kind: SinkKind,
    /// Effective delivery settings.
    pub policy: DeliveryPolicy,
    /// The sender.
    pub sink: Arc<dyn Sink>,
    paused: AtomicBool,
    // `updated_at` of the durable pause state last applied here.
    state_seen: std::sync::atomic::AtomicI64,
    wake: Notify,
    limiter: Option<RateLimiter>,
    circuit: std::sync::Mutex<Circuit>,
    deactivation: Option<std::sync::Mutex<Deactivation>>,
}

impl SinkRuntime {
    /// Paused by an administrator: stores, but sends nothing.
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// Pauses or resumes sending (the store keeps the durable flag).
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
        if !paused {
            self.wake.notify_one();
        }
    }

    /// Tells the sink's loop that new work may be due.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The state word used by the API, the status page and metrics.
    pub fn state(&self) -> &'static str {
        if self.paused() {
            "paused"
        } else if self.circuit_open() {
            "circuit_open"
        } else {
            "active"
        }
    }

    /// Whether the circuit breaker is holding deliveries back.
    pub fn circuit_open(&self) -> bool {
        self.circuit.lock().map(|c| c.is_open()).unwrap_or(false)
    }

    fn gate(&self, now: i64) -> Gate {
        self.circuit
            .lock()
            .map(|mut c| c.gate(now))
            .unwrap_or(Gate::Closed)
    }

    fn reopen_at(&self) -> Option<i64> {
        self.circuit.lock().ok().and_then(|c| c.reopen_at())
    }
}

/// Every configured sink, by name.
pub struct SinkSet {
    sinks: Vec<Arc<SinkRuntime>>,
}

impl SinkSet {
    /// Builds every sink (through `sinks::build`, once each) and its
    /// runtime from the config; called by `app::compile`.
    pub fn build(config: &Config) -> Result<SinkSet, ConfigError> {
        let mut sinks = Vec::new();
        for (i, c) in config.sinks.iter().enumerate() {
            let policy = c.policy(&config.delivery);
            let sink = crate::sinks::build(&format!("sinks[{i}]"), c, &config.delivery)?;
            sinks.push(Arc::new(SinkRuntime {
                name: c.name().to_string(),
                kind: c.kind(),
                limiter: policy.rate_limit.map(RateLimiter::per_second),
                circuit: std::sync::Mutex::new(Circuit::new(CircuitPolicy {
                    failures: policy.circuit.failures,
                    probe_interval: policy.circuit.probe_interval.0,
                })),
                deactivation: policy.deactivate_after.map(|d| {
                    std::sync::Mutex::new(Deactivation::new(
                        d.failures,
                        Duration::from_secs_f64(d.days * 86_400.0),
                    ))
                }),
                policy,
                sink,
                paused: AtomicBool::new(false),
                state_seen: std::sync::atomic::AtomicI64::new(i64::MIN),
                wake: Notify::new(),
            }));
        }
        Ok(SinkSet { sinks })
    }

    /// The sink with this name.
    pub fn get(&self, name: &str) -> Option<&Arc<SinkRuntime>> {
        self.sinks.iter().find(|s| s.name == name)
    }

    /// All sinks in config order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<SinkRuntime>> {
        self.sinks.iter()
    }

    /// Loads the durable pause flags.
    pub async fn load_state(&self, store: &dyn Store) -> Result<(), StoreError> {
        for row in store.sink_states().await? {
            let Some(s) = self.get(&row.sink) else {
                continue;
            };
            // Only a changed row is applied, so a refresh that read the row
            // just before this process changed it cannot undo that. (By
            // change, not by time: relays' clocks may disagree.)
            if s.state_seen.swap(row.updated_at, Ordering::AcqRel) == row.updated_at {
                continue;
            }
            if s.paused() != row.paused {
                tracing::info!(sink = %s.name, paused = row.paused, "sink state changed in the store (another relay or the CLI)");
                s.set_paused(row.paused);
            }
        }
        Ok(())
    }
}

/// Claims this many per round trip: enough to keep `concurrency` attempts
/// busy between refills, few enough that a lease covers the batch.
fn claim_batch(p: &DeliveryPolicy, batching: bool) -> usize {
    if batching {
        // Few requests, each carrying many deliveries.
        return 1000;
    }
    let mut n = (p.concurrency * 4).clamp(1, 256);
    if let Some(rate) = p.rate_limit {
        // A rate-limited sink sends slowly; a big batch would sit leased.
        n = n.min(((rate * 5.0).ceil() as usize).max(1));
    }
    n
}

/// How often the dispatcher looks for deliveries overdue in flight.
const OVERDUE_WATCH: Duration = Duration::from_secs(60);

/// How often a relay re-reads pause states others may have changed.
pub const STATE_REFRESH: Duration = Duration::from_secs(2);

/// The least time between a claim that found the queue (nearly) empty and
/// the next one. Without it every announced webhook means a claim of one
/// or two rows per sink per relay — a write statement each, and on
/// Postgres a scan past every row the last claims left behind — while a
/// short wait lets the next claim take all that arrived meanwhile. Adds at
/// most this much to a delivery's latency when the relay is idle.
const CLAIM_GAP: Duration = Duration::from_millis(20);

/// How long a claimed batch may take before other workers may take it over.
fn lease_for(p: &DeliveryPolicy, batch: usize) -> Duration {
    let rounds = batch.div_ceil(p.concurrency.max(1)) as u32 + 1;
    let waiting = p
        .rate_limit
        .map(|r| Duration::from_secs_f64(batch as f64 / r))
        .unwrap_or_default();
    p.timeout * rounds + waiting + Duration::from_secs(10)
}

/// Takes the next request's worth of deliveries: one, or — for a sink that
/// batches — as many as fit in `max_rows` rows (each delivery brings the
/// events it matched; one oversized delivery still goes alone).
fn take_batch(buf: &mut VecDeque<Claimed>, max_rows: usize) -> Vec<Claimed> {
    let mut batch = Vec::new();
    let mut rows = 0;
    while let Some(d) = buf.front() {
        let n = d.matched.len().max(1);
        if !batch.is_empty() && (max_rows <= 1 || rows + n > max_rows) {
            break;
        }
        rows += n;
        batch.extend(buf.pop_front());
        if max_rows <= 1 {
            break;
        }
    }
    batch
}

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
            loops.spawn(self.clone().sink_loop(rt.clone(), cancel.clone()));
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

    async fn sink_loop(self: Arc<Self>, rt: Arc<SinkRuntime>, cancel: CancellationToken) {
        let batching = rt.sink.max_batch_rows() > 1;
        let batch = claim_batch(&rt.policy, batching);
        let lease = lease_for(
            &rt.policy,
            if batching {
                rt.policy.concurrency * 2
            } else {
                batch
            },
        )
        .as_millis() as i64;
        let concurrency = rt.policy.concurrency;
        let names = [rt.name.clone()];
        let mut buf: VecDeque<Claimed> = VecDeque::new();
        let mut tasks: JoinSet<()> = JoinSet::new();
        let sending = Arc::new(Semaphore::new(concurrency.max(1)));
        let freed = Arc::new(Notify::new());
        let mut running: HashMap<tokio::task::Id, Vec<Lease>> = HashMap::new();
        // Set when the last claim came back short: the queue is empty, so
        // wait for a wake-up or a timer before asking again.
        let mut drained = false;
        // When the last claim came back short: the next one waits out
        // CLAIM_GAP (see there) however soon new work is announced.
        let mut short_at: Option<Instant> = None;
        let mut failures: u32 = 0;
        loop {
            if cancel.is_cancelled() {
                break;
            }
            if rt.circuit_open() && !buf.is_empty() {
                // Held back by the breaker: back to pending without spending an attempt.
                let at = rt.reopen_at().unwrap_or_else(now_ms);
                self.defer(&mut buf, at).await;
            }
            let mut want = batch.saturating_sub(buf.len());
            if rt.circuit_open() {
                want = 0;
                if tasks.is_empty() && buf.is_empty() && !rt.paused() {
                    if let Gate::Probe = rt.gate(now_ms()) {
                        want = 1;
                        drained = false;
                    }
                }
            }
            let hold = short_at
                .map(|t| CLAIM_GAP.saturating_sub(t.elapsed()))
                .filter(|d| !d.is_zero());
            if want > 0
                && !drained
                && hold.is_none()
                && !rt.paused()
                && buf.len() < concurrency.max(want)
            {
                let now = now_ms();
                match self.store.claim(&rt.name, want, now, now + lease).await {
                    Ok(v) => {
                        drained = v.len() < want;
                        short_at = drained.then(Instant::now);
                        if v.is_empty() && rt.circuit_open() {
                            // Nothing to probe with: give the probe back.
                            if let Ok(mut c) = rt.circuit.lock() {
                                c.record(true, now_ms());
                            }
                            tracing::info!(sink = %rt.name, "circuit closed: nothing left to send");
                        }
                        buf.extend(v);
                        failures = 0;
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        drained = true;
                        if failures == 1 || failures.is_multiple_of(30) {
                            tracing::warn!(sink = %rt.name, error = %e, "cannot claim deliveries; will retry");
                        }
                    }
                }
            }
            while !rt.paused() {
                // `concurrency` bounds requests in flight, not outcomes
                // waiting for their commit: a slot is free again as soon as
                // the sink has answered, so commits batch up instead of
                // holding slots idle.
                let Ok(slot) = sending.clone().try_acquire_owned() else {
                    break;
                };
                let batch = take_batch(&mut buf, rt.sink.max_batch_rows());
                if batch.is_empty() {
                    break;
                }
                let leases: Vec<Lease> = batch.iter().map(Claimed::lease).collect();
                let me = self.clone();
                let r = rt.clone();
                let freed = freed.clone();
                let h = tasks.spawn(async move {
                    let done = me.attempt(&r, batch, None).await;
                    drop(slot);
                    freed.notify_one();
                    for c in done {
                        if let Err(e) = me.completions.submit_wait(c).await {
                            // The lease will expire and the delivery be tried again.
                            tracing::warn!(sink = %r.name, error = %e, "cannot record an attempt");
                        }
                    }
                });
                // Until the outcome is committed the lease stays listed, so
                // shutdown releases it if the commit never happens.
                running.insert(h.id(), leases);
            }
            let wait = if let (true, Some(t)) = (rt.circuit_open(), rt.reopen_at()) {
                Duration::from_millis((t - now_ms()).max(0) as u64).min(self.poll_interval)
            } else if failures > 0 {
                // Store trouble: back off up to 5 s, then try again.
                Duration::from_millis(100u64 << failures.min(5)).min(Duration::from_secs(5))
            } else if let (false, Some(h)) = (drained || rt.paused(), hold) {
                h
            } else if tasks.is_empty() && !drained && !rt.paused() {
                Duration::ZERO
            } else if tasks.is_empty() && !rt.paused() {
                match self.store.next_due(&names).await {
                    Ok(Some(t)) => {
                        Duration::from_millis((t - now_ms()).max(0) as u64).min(self.poll_interval)
                    }
                    _ => self.poll_interval,
                }
            } else {
                self.poll_interval
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(res) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    let id = match res { Ok((id, ())) => id, Err(e) => e.id() };
                    running.remove(&id);
                }
                _ = freed.notified() => {}
                _ = rt.wake.notified() => drained = false,
                _ = self.store.wait_for_work() => drained = false,
                _ = tokio::time::sleep(wait) => drained = false,
            }
        }
        self.shut_down(&rt, buf, tasks, running).await;
    }

    async fn shut_down(
        &self,
        rt: &SinkRuntime,
        buf: VecDeque<Claimed>,
        mut tasks: JoinSet<()>,
        mut running: HashMap<tokio::task::Id, Vec<Lease>>,
    ) {
        let mut leases: Vec<Lease> = buf.iter().map(Claimed::lease).collect();
        let deadline = tokio::time::sleep(self.shutdown_grace);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                res = tasks.join_next_with_id() => match res {
                    None => break,
                    Some(Ok((id, ()))) => { running.remove(&id); }
                    Some(Err(e)) => { running.remove(&e.id()); }
                },
                _ = &mut deadline => {
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
        leases.extend(running.into_values().flatten());
        if !leases.is_empty() {
            match self.store.release(&leases, now_ms()).await {
                Ok(()) => {
                    tracing::info!(sink = %rt.name, released = leases.len(), "released unfinished deliveries")
                }
                Err(e) => {
                    tracing::warn!(sink = %rt.name, error = %e, "cannot release leases; they expire by themselves")
                }
            }
        }
    }

    async fn defer(&self, buf: &mut VecDeque<Claimed>, at: i64) {
        let now = now_ms();
        let batch: Vec<Completion> = buf
            .drain(..)
            .map(|d| Completion {
                lease: d.lease(),
                attempt: None,
                next: NextState::Defer { at },
                now,
            })
            .collect();
        if let Err(e) = self.store.complete(&batch).await {
            // Their leases expire and they come back by themselves.
            tracing::warn!(error = %e, "cannot return held-back deliveries");
        }
    }

    /// Feeds an attempt's result to the breaker and the deactivation
    /// policy, logging each state change once. A 429 that says when to come
    /// back is the sink pacing us, not failing: it counts toward neither.
    async fn record_health(&self, rt: &SinkRuntime, outcome: &AttemptOutcome, now: i64) {
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
        clock: Option<i64>,
    ) -> Vec<Completion> {
        let (defects, batch): (Vec<Claimed>, Vec<Claimed>) =
            batch.into_iter().partition(|d| d.defect.is_some());
        let mut out: Vec<Completion> = defects
            .into_iter()
            .map(|d| self.defective(rt, d, clock))
            .collect();
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

    /// A delivery whose stored row does not read back: dead at once, with
    /// the reason as its attempt's error (visible, and replayable once the
    /// cause is fixed).
    fn defective(&self, rt: &SinkRuntime, d: Claimed, clock: Option<i64>) -> Completion {
        let now = clock.unwrap_or_else(now_ms);
        let error = d.defect.clone().unwrap_or_default();
        self.metrics.delivery(&rt.name, "dead", 0.0);
        tracing::warn!(sink = %rt.name, delivery_id = %d.id, message_id = %d.message_id,
            error = %error, "delivery dead: its stored message cannot be read");
        Completion {
            lease: d.lease(),
            attempt: Some(AttemptRecord {
                attempt: d.attempts + 1,
                started_at: now,
                duration_ms: 0,
                status: None,
                error: Some(error),
                response: None,
            }),
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
        clock: Option<i64>,
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
                        .end_to_end(&rt.name, (now_ms() - d.received_at).max(0) as f64 / 1000.0);
                    tracing::debug!(sink = %rt.name, delivery_id = %d.id, "delivered");
                }
                NextState::Retry { at } => {
                    self.metrics.delivery(&rt.name, "retried", secs);
                    tracing::debug!(sink = %rt.name, delivery_id = %d.id, attempt = attempt_no,
                        retry_in_ms = at - now, error = ?outcome.error, "attempt failed; will retry");
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
    pub async fn run_once(&self, now: i64) -> Result<usize, StoreError> {
        let mut n = 0;
        for rt in self.sinks.iter() {
            if rt.paused() {
                continue;
            }
            let lease = lease_for(&rt.policy, 1000).as_millis() as i64;
            let mut claimed: VecDeque<Claimed> = self
                .store
                .claim(&rt.name, 1000, now, now + lease)
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
