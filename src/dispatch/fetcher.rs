//! The fetch stage's worker: claims due fetch jobs, fetches the edits
//! behind each message's `changesUrl`s through its source's
//! [`Fetcher`](crate::enrich::Fetcher), and records the outcome, on the
//! same lease and retry machinery as deliveries (see
//! [`crate::store::fetch`]).
//!
//! It never runs before the webhook is answered: ingress only stores the
//! job, with the message, in the same commit. "Should we retry" is the
//! fetcher's [`FetchError::retryable`]; "when" is the delivery schedule
//! of `[delivery]` ([`super::retry::next_state`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::retry::{next_state, NextState, Verdict};
use super::Jitter;
use crate::config::DeliveryPolicy;
use crate::enrich::{ChangesDoc, FetchError, FetchOptions, Fetcher};
use crate::metrics::Metrics;
use crate::store::{
    now_ms, ClaimedFetch, FetchCompletion, FetchOutcome, Millis, Store, StoreError,
};

/// How often parked deliveries whose fetch has ended are settled (see
/// [`crate::store::FetchQueue::sweep_parked`]). The complete statement
/// already refuses to park a delivery whose fetch is done; on Postgres a
/// park and a fetch's completion committing at the same instant can
/// still cross, and this bounds how long such a delivery waits.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Jobs claimed (and run at once) per turn: fetches wait on ArcGIS, not
/// on this machine, but each holds an ArcGIS job and a token's quota.
const CONCURRENCY: usize = 4;

/// One source's fetcher and what it asks for.
pub struct SourceFetch {
    /// The source's fetcher (shared: its token is shared).
    pub fetcher: Arc<Fetcher>,
    /// Its options (`outSR=4326` when a sink of the source renders GeoJSON).
    pub options: FetchOptions,
}

/// The fetch stage. Cheap to share; [`FetchStage::run`] drives it.
pub struct FetchStage {
    store: Arc<dyn Store>,
    sources: HashMap<String, SourceFetch>,
    policy: DeliveryPolicy,
    metrics: Arc<Metrics>,
    jitter: Jitter,
    poll_interval: Duration,
    wake: Notify,
}

impl FetchStage {
    /// A stage for these sources (by name), retrying on `policy`'s schedule.
    pub fn new(
        store: Arc<dyn Store>,
        sources: HashMap<String, SourceFetch>,
        policy: DeliveryPolicy,
        metrics: Arc<Metrics>,
        jitter: Jitter,
        poll_interval: Duration,
    ) -> FetchStage {
        FetchStage {
            store,
            sources,
            policy,
            metrics,
            jitter,
            poll_interval,
            wake: Notify::new(),
        }
    }

    /// Whether any source fetches (else [`FetchStage::run`] returns at once).
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// New work was committed: look now rather than at the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// How long a claimed job stays leased: long enough for every request
    /// and job poll of an attempt, so a live attempt is never taken over.
    fn lease(&self, job: &ClaimedFetch) -> Duration {
        let fetcher = self.sources.get(job.source.as_str()).map(|s| &s.fetcher);
        let one = fetcher.map_or(Duration::from_secs(60), |f| f.attempt_budget());
        one.saturating_mul(changes_urls(job).len().max(1) as u32) + Duration::from_secs(30)
    }

    /// Runs until `cancel`: claims due jobs, runs up to [`CONCURRENCY`] at
    /// once, records each outcome. A job cut off by shutdown keeps its
    /// lease and is fetched again when the lease ends (fetching is read
    /// only, so doing it twice is harmless).
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        if self.is_empty() {
            return;
        }
        let mut failures = 0u32;
        let mut swept = Instant::now();
        while !cancel.is_cancelled() {
            let now = now_ms();
            if swept.elapsed() >= SWEEP_INTERVAL {
                swept = Instant::now();
                match self.store.sweep_parked(now).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        deliveries = n,
                        "settled deliveries parked after their fetch had ended"
                    ),
                    Err(e) => tracing::warn!(error = %e, "cannot sweep parked deliveries"),
                }
            }
            // The longest lease any job of this turn could need.
            let lease_until = now.after(self.max_lease());
            let jobs = match self
                .store
                .claim_fetches(CONCURRENCY, now, lease_until)
                .await
            {
                Ok(jobs) => {
                    failures = 0;
                    jobs
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, "cannot claim fetch jobs; will try again");
                    Vec::new()
                }
            };
            let claimed = jobs.len();
            let mut running = JoinSet::new();
            for job in jobs {
                let me = self.clone();
                running.spawn(async move {
                    let c = me.attempt(job, None).await;
                    if let Err(e) = me.store.complete_fetch(&c).await {
                        tracing::warn!(message_id = %c.message_id, error = %e,
                            "cannot record a fetch; its lease expires and it runs again");
                    }
                });
            }
            tokio::select! {
                _ = cancel.cancelled() => { running.abort_all(); break; }
                _ = async { while running.join_next().await.is_some() {} } => {}
            }
            if claimed == CONCURRENCY {
                continue;
            }
            let wait = if failures > 0 {
                self.poll_interval
                    .saturating_mul(failures.min(10))
                    .min(Duration::from_secs(30))
            } else {
                match self.store.next_fetch_due().await {
                    Ok(Some(t)) => t.since(now_ms()).min(self.poll_interval),
                    _ => self.poll_interval,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// The lease a claim takes: the longest source's budget for two
    /// changesUrls (an Online payload names one per layer, usually one or
    /// two). A message with more may outlive its lease; another worker
    /// then fetches it too, which is harmless (fetching only reads) and
    /// only the holder of the current lease records its outcome.
    fn max_lease(&self) -> Duration {
        self.sources
            .values()
            .map(|s| s.fetcher.attempt_budget())
            .max()
            .unwrap_or(Duration::from_secs(60))
            .saturating_mul(2)
            + Duration::from_secs(5)
    }

    /// Drives the stage one step at time `now`: claims every due job, runs
    /// each and records its outcome. Returns how many ran. For tests and
    /// tools: nothing sleeps, time is the caller's.
    pub async fn run_once(&self, now: Millis) -> Result<usize, StoreError> {
        let mut n = 0;
        loop {
            let jobs = self
                .store
                .claim_fetches(CONCURRENCY, now, now.after(self.max_lease()))
                .await?;
            if jobs.is_empty() {
                self.store.sweep_parked(now).await?;
                return Ok(n);
            }
            for job in jobs {
                let c = self.attempt(job, Some(now)).await;
                self.store.complete_fetch(&c).await?;
                n += 1;
            }
        }
    }

    /// One attempt of a job: every distinct `changesUrl` of its message,
    /// merged into one document.
    async fn attempt(&self, job: ClaimedFetch, clock: Option<Millis>) -> FetchCompletion {
        let t0 = Instant::now();
        let lease = self.lease(&job);
        let outcome = match tokio::time::timeout(lease, self.fetch(&job)).await {
            Ok(Ok(doc)) => Ok(doc),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Failure::Other(format!(
                "the fetch took longer than its lease ({} s)",
                lease.as_secs()
            ))),
        };
        let now = clock.unwrap_or_else(now_ms);
        let secs = t0.elapsed().as_secs_f64();
        let source = job.source.as_str();
        let outcome = match outcome {
            Ok(doc) => {
                self.metrics.fetch(source, "done", secs);
                tracing::debug!(message_id = %job.message_id, features = doc.feature_count,
                    truncated = doc.truncated, "changes fetched");
                match serde_json::to_string(&doc) {
                    Ok(changes) => FetchOutcome::Done {
                        summary: summary(&doc).to_string(),
                        changes,
                    },
                    Err(e) => FetchOutcome::Dead {
                        error: format!("cannot store the changes: {e}"),
                    },
                }
            }
            Err(f) => self.failed(&job, f, now, secs),
        };
        FetchCompletion {
            message_id: job.message_id,
            lease_token: job.lease_token,
            outcome,
            now,
        }
    }

    /// Where a failed attempt goes: refused and permanent failures die at
    /// once; the rest follow the delivery schedule.
    fn failed(&self, job: &ClaimedFetch, f: Failure, now: Millis, secs: f64) -> FetchOutcome {
        let source = job.source.as_str();
        let (verdict, error, refused) = match f {
            Failure::Fetch(e) => {
                let verdict = if e.retryable() {
                    Verdict::Retry {
                        after: e.retry_after(),
                    }
                } else {
                    Verdict::Permanent
                };
                (
                    verdict,
                    e.to_string(),
                    matches!(e, FetchError::Refused { .. }),
                )
            }
            Failure::Other(m) => (Verdict::Retry { after: None }, m, false),
            Failure::Unfetchable(m) => (Verdict::Permanent, m, true),
        };
        let next = next_state(
            &self.policy,
            verdict,
            job.attempts + 1,
            job.cycle_started_at,
            now,
            (self.jitter)(),
        );
        match next {
            NextState::Retry { at } => {
                self.metrics.fetch(source, "retried", secs);
                tracing::info!(message_id = %job.message_id, attempt = job.attempts + 1,
                    retry_in_ms = at.ms_since(now), error = %error, "fetch failed; will retry");
                FetchOutcome::Retry { at, error }
            }
            _ => {
                self.metrics
                    .fetch(source, if refused { "refused" } else { "dead" }, secs);
                tracing::warn!(message_id = %job.message_id, attempts = job.attempts + 1,
                    error = %error, "fetch dead; its waiting deliveries are dead too");
                FetchOutcome::Dead { error }
            }
        }
    }

    async fn fetch(&self, job: &ClaimedFetch) -> Result<ChangesDoc, Failure> {
        if let Some(d) = &job.defect {
            return Err(Failure::Unfetchable(d.clone()));
        }
        let Some(src) = self.sources.get(job.source.as_str()) else {
            return Err(Failure::Unfetchable(format!(
                "source {:?} has no [sources.arcgis] (any more): nothing may be fetched for it",
                job.source.as_str()
            )));
        };
        let urls = changes_urls(job);
        if urls.is_empty() {
            return Err(Failure::Unfetchable(
                "the message has no changesUrl to fetch".into(),
            ));
        }
        let mut merged: Option<ChangesDoc> = None;
        for url in urls {
            let mut opts = src.options;
            let so_far = merged.as_ref().map_or(0, |d| d.feature_count);
            opts.max_features = opts.max_features.saturating_sub(so_far);
            if opts.max_features == 0 {
                if let Some(d) = merged.as_mut() {
                    d.truncated = true;
                }
                break;
            }
            let doc = src
                .fetcher
                .fetch(url, &opts)
                .await
                .map_err(Failure::Fetch)?;
            merged = Some(match merged {
                None => doc,
                Some(mut m) => {
                    m.layers.extend(doc.layers);
                    m.truncated |= doc.truncated;
                    m.feature_count += doc.feature_count;
                    m
                }
            });
        }
        merged.ok_or_else(|| Failure::Other("nothing fetched".into()))
    }
}

/// Why an attempt failed.
enum Failure {
    /// The fetcher's own error (classified: refused, auth, retryable, ...).
    Fetch(FetchError),
    /// Nothing can be fetched for this job, ever.
    Unfetchable(String),
    /// Anything else (the lease ran out): worth another attempt.
    Other(String),
}

/// The distinct changesUrls of a job's events, in first-seen order.
fn changes_urls(job: &ClaimedFetch) -> Vec<&str> {
    let mut seen = BTreeSet::new();
    job.events
        .iter()
        .filter_map(|e| e.changes_url.as_deref())
        .filter(|u| seen.insert(*u))
        .collect()
}

/// Per-layer counts of a changes document, for the API and status page.
pub fn summary(doc: &ChangesDoc) -> serde_json::Value {
    json!({
        "service": doc.service,
        "features": doc.feature_count,
        "truncated": doc.truncated,
        "layers": doc.layers.iter().map(|l| json!({
            "id": l.id,
            "adds": l.adds.len(),
            "updates": l.updates.len(),
            "deletes": l.deletes.len() + l.delete_ids.len(),
        })).collect::<Vec<_>>(),
    })
}
