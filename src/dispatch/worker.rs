//! One sink's loop: claim due deliveries with a lease, send them with
//! bounded concurrency, hand outcomes to the commit batcher, and wait for
//! the next thing worth doing. How long to wait is [`wait`], a pure
//! function of the loop's state, unit-tested below like `retry.rs`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::circuit::Gate;
use super::{Dispatcher, SinkRuntime};
use crate::config::DeliveryPolicy;
use crate::store::{now_ms, Claimed, Completion, Lease, Millis, NextState};

/// Claims this many per round trip: enough to keep `concurrency` attempts
/// busy between refills, few enough that a lease covers the batch.
pub(super) fn claim_batch(p: &DeliveryPolicy, batching: bool) -> usize {
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

/// The least time between a claim that found the queue (nearly) empty and
/// the next one. Without it every announced webhook means a claim of one
/// or two rows per sink per relay — a write statement each, and on
/// Postgres a scan past every row the last claims left behind — while a
/// short wait lets the next claim take all that arrived meanwhile. Adds at
/// most this much to a delivery's latency when the relay is idle.
const CLAIM_GAP: Duration = Duration::from_millis(20);

/// How long a claimed batch may take before other workers may take it over.
pub(super) fn lease_for(p: &DeliveryPolicy, batch: usize) -> Duration {
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
pub(super) fn take_batch(buf: &mut VecDeque<Claimed>, max_rows: usize) -> Vec<Claimed> {
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

/// What the loop knows when it decides how long to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LoopState {
    /// The circuit is open and reopens in this long.
    pub circuit_reopens_in: Option<Duration>,
    /// Consecutive claims that failed (store trouble).
    pub claim_failures: u32,
    /// The last claim came back short: the queue is empty for now.
    pub drained: bool,
    /// Paused by an administrator.
    pub paused: bool,
    /// What is left of [`CLAIM_GAP`] since the last short claim.
    pub hold: Option<Duration>,
    /// Attempts are running.
    pub sending: bool,
    /// The longest wait: the poll interval.
    pub poll: Duration,
}

/// How long the loop waits before it looks again (unless woken sooner by
/// new work, a finished attempt or shutdown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// This long.
    For(Duration),
    /// Until the sink's next delivery is due (ask the store), at most the
    /// poll interval.
    UntilDue,
}

/// The wait, by the first rule that applies: an open circuit waits for its
/// probe; store trouble backs off, doubling from 200 ms to 3.2 s; a recent
/// short claim waits out
/// the claim gap; with room and work, no wait; idle, until the next due
/// delivery; otherwise (attempts running, paused) the poll interval.
pub(super) fn wait(s: &LoopState) -> Wait {
    if let Some(reopen) = s.circuit_reopens_in {
        return Wait::For(reopen.min(s.poll));
    }
    if s.claim_failures > 0 {
        return Wait::For(Duration::from_millis(100u64 << s.claim_failures.min(5)));
    }
    if let (false, Some(h)) = (s.drained || s.paused, s.hold) {
        return Wait::For(h);
    }
    match (s.sending, s.drained, s.paused) {
        (false, false, false) => Wait::For(Duration::ZERO),
        (false, true, false) => Wait::UntilDue,
        _ => Wait::For(s.poll),
    }
}

/// The wait until `due` (a store time) from `now`, at most `poll`.
fn until(due: Option<Millis>, now: Millis, poll: Duration) -> Duration {
    due.map(|t| t.since(now).min(poll)).unwrap_or(poll)
}

/// One sink's loop and what it holds between turns.
pub(super) struct Worker {
    dispatcher: Arc<Dispatcher>,
    rt: Arc<SinkRuntime>,
    /// Claimed, not yet sent.
    buf: VecDeque<Claimed>,
    /// Attempts in flight (and their outcome commits).
    tasks: JoinSet<()>,
    /// Leases of each task until its outcome is committed, so shutdown can
    /// release them if the commit never happens.
    running: HashMap<tokio::task::Id, Vec<Lease>>,
    /// Bounds requests in flight to the sink's `concurrency`.
    sending: Arc<Semaphore>,
    /// A slot freed: the loop may start the next send.
    freed: Arc<Notify>,
    /// The last claim came back short: wait for a wake-up or a timer.
    drained: bool,
    /// When the last claim came back short (see [`CLAIM_GAP`]).
    short_at: Option<Instant>,
    /// Consecutive failed claims.
    failures: u32,
    /// Deliveries per claim.
    batch: usize,
    /// Lease length.
    lease: Duration,
}

impl Worker {
    /// A worker for one sink.
    pub(super) fn new(dispatcher: Arc<Dispatcher>, rt: Arc<SinkRuntime>) -> Worker {
        let batching = rt.sink.max_batch_rows() > 1;
        let batch = claim_batch(&rt.policy, batching);
        let leased = if batching {
            rt.policy.concurrency * 2
        } else {
            batch
        };
        Worker {
            lease: lease_for(&rt.policy, leased),
            sending: Arc::new(Semaphore::new(rt.policy.concurrency.max(1))),
            dispatcher,
            rt,
            buf: VecDeque::new(),
            tasks: JoinSet::new(),
            running: HashMap::new(),
            freed: Arc::new(Notify::new()),
            drained: false,
            short_at: None,
            failures: 0,
            batch,
        }
    }

    /// Runs until `cancel`, then hands over to [`Worker::shut_down`].
    pub(super) async fn run(mut self, cancel: CancellationToken) {
        let names = [self.rt.name.clone()];
        while !cancel.is_cancelled() {
            self.hold_back_if_open().await;
            self.claim().await;
            self.start_sends();
            let hold = self
                .short_at
                .map(|t| CLAIM_GAP.saturating_sub(t.elapsed()))
                .filter(|d| !d.is_zero());
            let state = LoopState {
                circuit_reopens_in: match (self.rt.circuit_open(), self.rt.reopen_at()) {
                    (true, Some(t)) => Some(t.since(now_ms())),
                    _ => None,
                },
                claim_failures: self.failures,
                drained: self.drained,
                paused: self.rt.paused(),
                hold,
                sending: !self.tasks.is_empty(),
                poll: self.dispatcher.poll_interval,
            };
            let wait = match wait(&state) {
                Wait::For(d) => d,
                Wait::UntilDue => match self.dispatcher.store.next_due(&names).await {
                    Ok(due) => until(due, now_ms(), state.poll),
                    Err(_) => state.poll,
                },
            };
            let store = self.dispatcher.store.clone();
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(res) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    let id = match res { Ok((id, ())) => id, Err(e) => e.id() };
                    self.running.remove(&id);
                }
                _ = self.freed.notified() => {}
                _ = self.rt.wake.notified() => self.drained = false,
                _ = store.wait_for_work() => self.drained = false,
                _ = tokio::time::sleep(wait) => self.drained = false,
            }
        }
        self.shut_down().await;
    }

    /// Held back by the breaker: what is buffered goes back to pending
    /// without spending an attempt.
    async fn hold_back_if_open(&mut self) {
        if self.rt.circuit_open() && !self.buf.is_empty() {
            let at = self.rt.reopen_at().unwrap_or_else(now_ms);
            self.defer(at).await;
        }
    }

    /// Claims more when there is room, the queue may hold some and the
    /// claim gap is over; one probe at a time while the circuit is open.
    async fn claim(&mut self) {
        let rt = &self.rt;
        let mut want = self.batch.saturating_sub(self.buf.len());
        if rt.circuit_open() {
            want = 0;
            if self.tasks.is_empty() && self.buf.is_empty() && !rt.paused() {
                if let Gate::Probe = rt.gate(now_ms()) {
                    want = 1;
                    self.drained = false;
                }
            }
        }
        let holding = self.short_at.is_some_and(|t| t.elapsed() < CLAIM_GAP);
        let concurrency = rt.policy.concurrency;
        if want == 0
            || self.drained
            || holding
            || rt.paused()
            || self.buf.len() >= concurrency.max(want)
        {
            return;
        }
        let now = now_ms();
        match self
            .dispatcher
            .store
            .claim(&rt.name, want, now, now.after(self.lease))
            .await
        {
            Ok(v) => {
                self.drained = v.len() < want;
                self.short_at = self.drained.then(Instant::now);
                if v.is_empty() && rt.circuit_open() {
                    // Nothing to probe with: give the probe back.
                    if let Ok(mut c) = rt.circuit.lock() {
                        c.record(true, now_ms());
                    }
                    tracing::info!(sink = %rt.name, "circuit closed: nothing left to send");
                }
                self.buf.extend(v);
                self.failures = 0;
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                self.drained = true;
                if self.failures == 1 || self.failures.is_multiple_of(30) {
                    tracing::warn!(sink = %rt.name, error = %e, "cannot claim deliveries; will retry");
                }
            }
        }
    }

    /// Starts as many sends as there are free slots.
    fn start_sends(&mut self) {
        while !self.rt.paused() {
            // `concurrency` bounds requests in flight, not outcomes
            // waiting for their commit: a slot is free again as soon as
            // the sink has answered, so commits batch up instead of
            // holding slots idle.
            let Ok(slot) = self.sending.clone().try_acquire_owned() else {
                break;
            };
            let batch = take_batch(&mut self.buf, self.rt.sink.max_batch_rows());
            if batch.is_empty() {
                break;
            }
            let leases: Vec<Lease> = batch.iter().map(Claimed::lease).collect();
            let me = self.dispatcher.clone();
            let r = self.rt.clone();
            let freed = self.freed.clone();
            let h = self.tasks.spawn(async move {
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
            self.running.insert(h.id(), leases);
        }
    }
    /// Stops claiming, gives attempts in flight the shutdown grace period
    /// and returns the leases of everything not finished.
    async fn shut_down(mut self) {
        let rt = self.rt.clone();
        let (mut tasks, mut running) = (
            std::mem::take(&mut self.tasks),
            std::mem::take(&mut self.running),
        );
        let mut leases: Vec<Lease> = self.buf.iter().map(Claimed::lease).collect();
        let deadline = tokio::time::sleep(self.dispatcher.shutdown_grace);
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
            match self.dispatcher.store.release(&leases, now_ms()).await {
                Ok(()) => {
                    tracing::info!(sink = %rt.name, released = leases.len(), "released unfinished deliveries")
                }
                Err(e) => {
                    tracing::warn!(sink = %rt.name, error = %e, "cannot release leases; they expire by themselves")
                }
            }
        }
    }

    async fn defer(&mut self, at: Millis) {
        let now = now_ms();
        let batch: Vec<Completion> = self
            .buf
            .drain(..)
            .map(|d| Completion {
                lease: d.lease(),
                attempt: None,
                next: NextState::Defer { at },
                now,
            })
            .collect();
        if let Err(e) = self.dispatcher.store.complete(&batch).await {
            // Their leases expire and they come back by themselves.
            tracing::warn!(error = %e, "cannot return held-back deliveries");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle() -> LoopState {
        LoopState {
            circuit_reopens_in: None,
            claim_failures: 0,
            drained: false,
            paused: false,
            hold: None,
            sending: false,
            poll: Duration::from_secs(1),
        }
    }

    #[test]
    fn an_open_circuit_waits_for_its_probe_at_most_a_poll() {
        let s = LoopState {
            circuit_reopens_in: Some(Duration::from_millis(300)),
            claim_failures: 3,
            ..idle()
        };
        assert_eq!(wait(&s), Wait::For(Duration::from_millis(300)));
        let s = LoopState {
            circuit_reopens_in: Some(Duration::from_secs(30)),
            ..idle()
        };
        assert_eq!(wait(&s), Wait::For(Duration::from_secs(1)));
    }

    #[test]
    fn store_trouble_backs_off_doubling_to_three_seconds() {
        let waits: Vec<Wait> = (1..=8)
            .map(|n| {
                wait(&LoopState {
                    claim_failures: n,
                    ..idle()
                })
            })
            .collect();
        assert_eq!(waits[0], Wait::For(Duration::from_millis(200)));
        assert_eq!(waits[1], Wait::For(Duration::from_millis(400)));
        assert_eq!(waits[4], Wait::For(Duration::from_millis(3200)));
        assert!(waits[5..]
            .iter()
            .all(|w| *w == Wait::For(Duration::from_millis(3200))));
    }

    #[test]
    fn a_short_claim_is_followed_by_the_claim_gap_unless_drained() {
        let hold = Some(Duration::from_millis(12));
        assert_eq!(
            wait(&LoopState { hold, ..idle() }),
            Wait::For(Duration::from_millis(12))
        );
        assert_eq!(
            wait(&LoopState {
                hold,
                drained: true,
                ..idle()
            }),
            Wait::UntilDue
        );
        assert_eq!(
            wait(&LoopState {
                hold,
                paused: true,
                ..idle()
            }),
            Wait::For(Duration::from_secs(1))
        );
    }

    #[test]
    fn work_left_means_no_wait_and_an_empty_queue_waits_until_due() {
        assert_eq!(wait(&idle()), Wait::For(Duration::ZERO));
        assert_eq!(
            wait(&LoopState {
                drained: true,
                ..idle()
            }),
            Wait::UntilDue
        );
        assert_eq!(
            wait(&LoopState {
                sending: true,
                ..idle()
            }),
            Wait::For(Duration::from_secs(1))
        );
        assert_eq!(
            wait(&LoopState {
                drained: true,
                sending: true,
                ..idle()
            }),
            Wait::For(Duration::from_secs(1))
        );
    }

    #[test]
    fn the_wait_until_due_is_capped_by_the_poll() {
        let poll = Duration::from_secs(1);
        assert_eq!(
            until(Some(Millis(1_500)), Millis(1_000), poll),
            Duration::from_millis(500)
        );
        assert_eq!(
            until(Some(Millis(900)), Millis(1_000), poll),
            Duration::ZERO
        );
        assert_eq!(until(Some(Millis(9_000)), Millis(1_000), poll), poll);
        assert_eq!(until(None, Millis(1_000), poll), poll);
    }
}
