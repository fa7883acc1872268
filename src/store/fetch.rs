//! The fetch stage's rows: a message whose routes need the edited features
//! (a feature-service webhook carries only a `changesUrl`) gets one fetch
//! job, leased, retried and dead-lettered like a delivery.
//!
//! Deliveries that need the changes are stored `pending` but *parked*
//! ([`PARKED`]: never due). Completing the fetch stores the changes and
//! makes those deliveries due in one transaction; a dead fetch makes them
//! dead with its reason, so they show up where every failure does and are
//! replayed the same way (replaying one requeues its message's dead fetch,
//! and the dispatcher parks a delivery again whenever it finds its
//! message's changes not fetched yet).

use serde::{Deserialize, Serialize};

use super::{LeaseToken, MessageId, Millis, SourceName};
use crate::domain::event::Event;

/// `next_attempt_at` of a delivery waiting for its message's fetch.
pub const PARKED: Millis = Millis::MAX;

/// A fetch job's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FetchStatus {
    /// Waiting for its `next_attempt_at`.
    Pending,
    /// Leased by the fetch worker.
    InFlight,
    /// The changes are stored.
    Done,
    /// Gave up; its waiting deliveries are dead too.
    Dead,
}

impl FetchStatus {
    /// Column value.
    pub fn as_str(&self) -> &'static str {
        match self {
            FetchStatus::Pending => "pending",
            FetchStatus::InFlight => "in_flight",
            FetchStatus::Done => "done",
            FetchStatus::Dead => "dead",
        }
    }

    /// Parses a column value.
    pub fn parse(s: &str) -> Option<FetchStatus> {
        Some(match s {
            "pending" => FetchStatus::Pending,
            "in_flight" => FetchStatus::InFlight,
            "done" => FetchStatus::Done,
            "dead" => FetchStatus::Dead,
            _ => return None,
        })
    }
}

/// A fetch job handed to the fetch worker.
#[derive(Debug, Clone)]
pub struct ClaimedFetch {
    /// The message whose changes to fetch.
    pub message_id: MessageId,
    /// Proof of this claim; completion must present it.
    pub lease_token: LeaseToken,
    /// The message's source (whose `[sources.arcgis]` credentials apply).
    pub source: SourceName,
    /// Attempts already made in this cycle.
    pub attempts: u32,
    /// When the job was (re)queued: `max_age` counts from here.
    pub cycle_started_at: Millis,
    /// The message's events (their `changes_url`s are what to fetch).
    pub events: Vec<Event>,
    /// Why the job cannot run, when the message's events do not read back.
    pub defect: Option<String>,
}

/// How a fetch attempt ended.
#[derive(Debug, Clone)]
pub enum FetchOutcome {
    /// Fetched: the changes document and its summary, both JSON.
    Done {
        /// The changes document every sink reads.
        changes: String,
        /// Per-layer counts, for the API and the status page.
        summary: String,
    },
    /// Failed; try again at `at`.
    Retry {
        /// When.
        at: Millis,
        /// What went wrong (no secret, no query string).
        error: String,
    },
    /// Failed for good; the waiting deliveries die with this reason.
    Dead {
        /// What went wrong (no secret, no query string).
        error: String,
    },
}

/// A finished fetch attempt for [`super::FetchQueue::complete_fetch`].
#[derive(Debug, Clone)]
pub struct FetchCompletion {
    /// Which job.
    pub message_id: MessageId,
    /// The claim's token; a completion whose lease was lost changes nothing.
    pub lease_token: LeaseToken,
    /// How it ended.
    pub outcome: FetchOutcome,
    /// Completion time.
    pub now: Millis,
}

/// A fetch job as the API and the status page show it.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchRow {
    /// The message.
    pub message_id: MessageId,
    /// Current status.
    pub status: FetchStatus,
    /// Attempts in the current cycle.
    pub attempts: u32,
    /// When it is due (for `in_flight`: when its lease ends); none once done or dead.
    pub next_attempt_at: Option<Millis>,
    /// Error of the last attempt.
    pub last_error: Option<String>,
    /// Per-layer counts of the fetched changes (JSON), once done.
    pub summary: Option<serde_json::Value>,
    /// Creation time.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
}

/// Fetch jobs by status, for metrics and the status page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FetchStats {
    /// Waiting to run (or to be retried).
    pub pending: u64,
    /// Running.
    pub in_flight: u64,
    /// Fetched and not yet purged.
    pub done: u64,
    /// Gave up.
    pub dead: u64,
    /// Deliveries parked until their message's fetch is done.
    pub waiting_deliveries: u64,
}
