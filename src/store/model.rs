//! Rows going into and out of the store.

//!
//! The store speaks in domain types (ids, [`Millis`]); how a row is shown
//! (RFC 3339 times, the OpenAPI schemas) is the admin layer's business
//! (`admin::dto`).

use serde::{Deserialize, Serialize};

pub use crate::domain::delivery::{NextState, Status};
pub use crate::domain::ids::{DeliveryId, LeaseToken, MessageId, SinkName, SourceName};
pub use crate::domain::time::Millis;

use crate::domain::event::Event;

/// A verified, parsed request ready to be committed.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Time-ordered id.
    pub id: MessageId,
    /// Source name from the config.
    pub source: SourceName,
    /// When ingress received it.
    pub received_at: Millis,
    /// Content type the body was sent with.
    pub content_type: String,
    /// The few request headers worth keeping (never credentials), as JSON.
    pub headers: String,
    /// The body sinks forward: the raw bytes, minus any inbound credential.
    pub body: Vec<u8>,
    /// Normalised events, in the stored form of [`crate::domain::event::encode_events`].
    pub events: String,
    /// Hash of the normalised events; equal keys within the window are duplicates.
    pub dedupe_key: String,
    /// Dedupe window for this source, milliseconds (0 disables dedupe).
    pub dedupe_window_ms: i64,
    /// One delivery per routed sink.
    pub deliveries: Vec<NewDelivery>,
    /// Whether some delivery needs the edited features: then the message
    /// gets a fetch job and those deliveries are parked until it is done
    /// (see [`super::fetch`]).
    pub fetch: bool,
}

/// A delivery to create with a message.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// Time-ordered id, also sent to the sink as the delivery id.
    pub id: DeliveryId,
    /// Sink name.
    pub sink: SinkName,
    /// Indexes of the message's events this sink matched, as JSON array.
    pub events: String,
    /// Waits for the message's fetch job ([`super::PARKED`] until it is done).
    pub parked: bool,
}

impl NewDelivery {
    /// When it is first due: on arrival, or parked until its changes are fetched.
    pub fn due(&self, received_at: Millis) -> Millis {
        if self.parked {
            super::PARKED
        } else {
            received_at
        }
    }
}

/// What ingest did with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Stored with this many deliveries.
    Accepted {
        message_id: MessageId,
        deliveries: usize,
    },
    /// Seen within the dedupe window; nothing stored.
    Duplicate { message_id: MessageId },
}

/// A delivery handed to a worker, with what it needs to render and send.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Delivery id.
    pub id: DeliveryId,
    /// Proof of this claim; completion must present it.
    pub lease_token: LeaseToken,
    /// Sink name.
    pub sink: SinkName,
    /// Attempts already made in this cycle.
    pub attempts: u32,
    /// When this delivery was (re)queued: `max_age` counts from here.
    pub cycle_started_at: Millis,
    /// Message id.
    pub message_id: MessageId,
    /// Message source.
    pub source: SourceName,
    /// When the message arrived (for end-to-end latency).
    pub received_at: Millis,
    /// Body content type.
    pub content_type: String,
    /// The body to forward.
    pub body: Vec<u8>,
    /// All the message's events.
    pub events: Vec<Event>,
    /// Indexes of the events this sink matched.
    pub matched: Vec<usize>,
    /// Why this delivery cannot be sent, when its stored row does not read
    /// back (then `events` and `matched` are empty): it is made dead on its
    /// own with this reason, and its batch-mates go on.
    pub defect: Option<String>,
    /// The message's fetch job, when it has one.
    pub fetch: Option<super::FetchStatus>,
    /// The fetched changes document (JSON), once fetched.
    pub changes: Option<String>,
}

impl Claimed {
    /// The events this sink matched, for templated sinks.
    pub fn matched_events(&self) -> Vec<&Event> {
        self.matched
            .iter()
            .filter_map(|i| self.events.get(*i))
            .collect()
    }

    /// The lease this claim holds.
    pub fn lease(&self) -> Lease {
        Lease {
            delivery_id: self.id.clone(),
            lease_token: self.lease_token.clone(),
        }
    }
}

/// A delivery id with the token of the claim that holds it.
#[derive(Debug, Clone)]
pub struct Lease {
    /// Delivery id.
    pub delivery_id: DeliveryId,
    /// Claim token.
    pub lease_token: LeaseToken,
}

/// One finished attempt, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    /// 1-based within the delivery's current cycle.
    pub attempt: u32,
    /// When it started.
    pub started_at: Millis,
    /// How long it took, milliseconds.
    pub duration_ms: i64,
    /// HTTP status (or SMTP reply code) if one came back.
    pub status: Option<i32>,
    /// What went wrong, if anything (never containing a secret).
    pub error: Option<String>,
    /// The first kilobyte of the answer.
    pub response: Option<String>,
}

/// An attempt's result for [`super::Store::complete`].
#[derive(Debug, Clone)]
pub struct Completion {
    /// Which claim.
    pub lease: Lease,
    /// The attempt to record (none for a deferral).
    pub attempt: Option<AttemptRecord>,
    /// The delivery's next state.
    pub next: NextState,
    /// Completion time.
    pub now: Millis,
}

/// A delivery as stored (`admin::dto` shows it).
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRow {
    /// Delivery id.
    pub id: DeliveryId,
    /// Message id.
    pub message_id: MessageId,
    /// Sink name.
    pub sink: SinkName,
    /// Current status.
    pub status: Status,
    /// Attempts in the current cycle.
    pub attempts: u32,
    /// Status code of the last attempt.
    pub last_status: Option<i32>,
    /// Error of the last attempt.
    pub last_error: Option<String>,
    /// When it is due (for `in_flight`: when its lease ends); none once
    /// it is delivered or dead.
    pub next_attempt_at: Option<Millis>,
    /// Creation time.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
}

/// A delivery with its attempts, inside [`MessageDetail`].
#[derive(Debug, Clone)]
pub struct DeliveryDetail {
    /// The delivery.
    pub delivery: DeliveryRow,
    /// Every attempt, oldest first.
    pub attempts_log: Vec<AttemptRecord>,
}

/// A message with everything about it.
#[derive(Debug, Clone)]
pub struct MessageDetail {
    /// Message id.
    pub id: MessageId,
    /// Source name.
    pub source: SourceName,
    /// Arrival.
    pub received_at: Millis,
    /// Body content type.
    pub content_type: String,
    /// Kept request headers.
    pub headers: serde_json::Value,
    /// Body size in bytes.
    pub body_bytes: usize,
    /// The body as text when it is UTF-8 (it is JSON or a form for ArcGIS).
    pub body: Option<String>,
    /// Normalised events.
    pub events: Vec<Event>,
    /// Why `events` is empty (the stored events could not be read back) or
    /// shorter than the message's (too large written out).
    pub events_error: Option<String>,
    /// Deliveries with their attempts.
    pub deliveries: Vec<DeliveryDetail>,
}

/// Filter of the delivery list.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// Only this status.
    pub status: Option<Status>,
    /// Only this sink.
    pub sink: Option<SinkName>,
    /// Created at or after.
    pub since: Option<Millis>,
    /// Created before.
    pub until: Option<Millis>,
    /// Page size.
    pub limit: usize,
    /// Ids below this one (the previous page's last id).
    pub cursor: Option<DeliveryId>,
}

/// Filter of a replay.
#[derive(Debug, Clone)]
pub struct ReplayFilter {
    /// Status to requeue: dead or delivered.
    pub status: Status,
    /// Only this sink.
    pub sink: Option<SinkName>,
    /// Only messages from this source.
    pub source: Option<SourceName>,
    /// Created at or after.
    pub since: Option<Millis>,
    /// Created before.
    pub until: Option<Millis>,
    /// Only deliveries with an event matching this trigger pattern.
    pub event: Option<crate::domain::pattern::Pattern>,
    /// Count only.
    pub dry_run: bool,
}

/// Result of retrying one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryResult {
    /// Requeued.
    Requeued,
    /// No such delivery.
    NotFound,
    /// In flight right now; nothing to do.
    InFlight,
}

/// Queue counts for one sink.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SinkStats {
    /// Sink name.
    pub sink: SinkName,
    /// Waiting.
    pub pending: u64,
    /// Leased.
    pub in_flight: u64,
    /// Dead.
    pub dead: u64,
    /// Delivered (and not yet purged).
    pub delivered: u64,
    /// Delivered in the last hour.
    pub delivered_last_hour: u64,
    /// Oldest pending delivery's creation time; deliveries overdue in
    /// flight count as pending.
    pub oldest_pending_at: Option<Millis>,
    /// In flight for more than [`OVERDUE_MS`] past their lease's end: the
    /// worker that leased them died or hangs. The next claim takes them.
    pub overdue_in_flight: u64,
    /// Last successful attempt.
    pub last_success_at: Option<Millis>,
    /// Last error text.
    pub last_error: Option<String>,
}

/// How long past its lease's end an in-flight delivery counts as overdue.
pub const OVERDUE_MS: i64 = 60_000;

/// Persistent per-sink state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SinkStateRow {
    /// Sink name.
    pub sink: SinkName,
    /// Paused by an administrator (or deactivated).
    pub paused: bool,
    /// Why.
    pub reason: Option<String>,
    /// Since when.
    pub updated_at: Millis,
}

/// Purge boundaries.
#[derive(Debug, Clone)]
pub struct PurgeCutoffs {
    /// Fully delivered messages last touched before this go.
    pub delivered_before: Millis,
    /// Messages with dead deliveries last touched before this go.
    pub dead_before: Millis,
    /// Dedupe keys recorded before this go.
    pub dedupe_before: Millis,
}

/// What a purge removed.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PurgeCounts {
    /// Messages deleted (with their deliveries and attempts).
    pub messages: u64,
    /// Dedupe keys deleted.
    pub dedupe_keys: u64,
}

/// Parses a time bound as people write it: a duration back from now
/// (`2h`, `30m`), an RFC 3339 time (`2026-11-22T10:00:00Z`) or a date.
pub fn parse_time(s: &str, now: Millis) -> Result<Millis, String> {
    let s = s.trim();
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(Millis(now.before(d).get().max(0)));
    }
    let t = humantime::parse_rfc3339_weak(s)
        .or_else(|_| humantime::parse_rfc3339_weak(&format!("{s} 00:00:00")))
        .map_err(|_| {
            format!("{s:?} is neither a duration like 2h nor a time like 2026-11-22T10:00:00Z")
        })?;
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("{s:?} is before 1970"))?
        .as_millis();
    Ok(Millis(i64::try_from(ms).unwrap_or(i64::MAX)))
}

/// A status page session (see `admin::auth`): the store keeps only the
/// SHA-256 of the id the browser's cookie carries.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AdminSession {
    /// Hex SHA-256 of the session id.
    pub id_hash: String,
    /// Fingerprint of the admin token the session was opened with; a
    /// session of another token is refused.
    pub token_fp: String,
    /// When it was opened.
    pub created_at: Millis,
    /// When it stops working.
    pub expires_at: Millis,
}
