//! The JSON documents the admin API and the CLI show for store rows.
//!
//! The store speaks in domain types (ids, [`Millis`]); this is where a row
//! becomes what people and clients read: RFC 3339 times, the OpenAPI
//! schemas. The documents keep the names and fields the API has always
//! had (`DeliveryRow`, `MessageDetail`, ...), so clients see no change.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::event::Event;
use crate::domain::time::Millis;
use crate::store::{self, Status};

/// A delivery as the API and CLI show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[schema(as = DeliveryRow)]
pub struct DeliveryDoc {
    /// Delivery id.
    pub id: String,
    /// Message id.
    pub message_id: String,
    /// Sink name.
    pub sink: String,
    /// Current status.
    pub status: Status,
    /// Attempts in the current cycle.
    pub attempts: u32,
    /// Status code of the last attempt.
    pub last_status: Option<i32>,
    /// Error of the last attempt.
    pub last_error: Option<String>,
    /// When it is due (for `in_flight`: when its lease ends), RFC 3339.
    pub next_attempt_at: Option<String>,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Last change, RFC 3339.
    pub updated_at: String,
}

impl From<store::DeliveryRow> for DeliveryDoc {
    fn from(d: store::DeliveryRow) -> Self {
        DeliveryDoc {
            id: d.id.into_string(),
            message_id: d.message_id.into_string(),
            sink: d.sink.into_string(),
            status: d.status,
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error,
            next_attempt_at: d.next_attempt_at.map(Millis::rfc3339),
            created_at: d.created_at.rfc3339(),
            updated_at: d.updated_at.rfc3339(),
        }
    }
}

/// One finished attempt, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[schema(as = AttemptRecord)]
pub struct AttemptDoc {
    /// 1-based within the delivery's current cycle.
    pub attempt: u32,
    /// When it started, milliseconds since the Unix epoch.
    pub started_at: i64,
    /// How long it took, milliseconds.
    pub duration_ms: i64,
    /// HTTP status (or SMTP reply code) if one came back.
    pub status: Option<i32>,
    /// What went wrong, if anything (never containing a secret).
    pub error: Option<String>,
    /// The first kilobyte of the answer.
    pub response: Option<String>,
}

impl From<store::AttemptRecord> for AttemptDoc {
    fn from(a: store::AttemptRecord) -> Self {
        AttemptDoc {
            attempt: a.attempt,
            started_at: a.started_at.get(),
            duration_ms: a.duration_ms,
            status: a.status,
            error: a.error,
            response: a.response,
        }
    }
}

/// A delivery with its attempts, inside [`MessageDoc`].
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = DeliveryDetail)]
pub struct DeliveryDetailDoc {
    /// The delivery.
    #[serde(flatten)]
    pub delivery: DeliveryDoc,
    /// Every attempt, oldest first.
    pub attempts_log: Vec<AttemptDoc>,
}

impl From<store::DeliveryDetail> for DeliveryDetailDoc {
    fn from(d: store::DeliveryDetail) -> Self {
        DeliveryDetailDoc {
            delivery: d.delivery.into(),
            attempts_log: d.attempts_log.into_iter().map(Into::into).collect(),
        }
    }
}

/// A message with everything about it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = MessageDetail)]
pub struct MessageDoc {
    /// Message id.
    pub id: String,
    /// Source name.
    pub source: String,
    /// Arrival, RFC 3339.
    pub received_at: String,
    /// Body content type.
    pub content_type: String,
    /// Kept request headers.
    pub headers: serde_json::Value,
    /// Body size in bytes.
    pub body_bytes: usize,
    /// The body as text when it is UTF-8 (it is JSON or a form for ArcGIS).
    pub body: Option<String>,
    /// Normalised events.
    #[schema(value_type = Vec<crate::domain::event::EventDoc>)]
    pub events: Vec<Event>,
    /// Why `events` is empty (the stored events could not be read back) or
    /// shorter than the message's (too large written out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_error: Option<String>,
    /// Deliveries with their attempts.
    pub deliveries: Vec<DeliveryDetailDoc>,
    /// The fetch job of the message's feature changes, when its routes
    /// needed them (an enriched `arcgis-service` source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch: Option<FetchDoc>,
}

/// A message's fetch job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FetchDoc {
    /// `pending`, `in_flight`, `done` or `dead`.
    pub status: String,
    /// Attempts in the current cycle.
    pub attempts: u32,
    /// When it is due (for `in_flight`: when its lease ends), RFC 3339.
    pub next_attempt_at: Option<String>,
    /// Error of the last attempt (never a token or a query string).
    pub last_error: Option<String>,
    /// Once done: the service, feature count, `truncated`, and per layer
    /// the counts of adds, updates and deletes.
    #[schema(value_type = Option<Object>)]
    pub summary: Option<serde_json::Value>,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Last change, RFC 3339.
    pub updated_at: String,
}

impl From<store::FetchRow> for FetchDoc {
    fn from(f: store::FetchRow) -> Self {
        FetchDoc {
            status: f.status.as_str().to_string(),
            attempts: f.attempts,
            next_attempt_at: f.next_attempt_at.map(Millis::rfc3339),
            last_error: f.last_error,
            summary: f.summary,
            created_at: f.created_at.rfc3339(),
            updated_at: f.updated_at.rfc3339(),
        }
    }
}

impl From<store::MessageDetail> for MessageDoc {
    fn from(m: store::MessageDetail) -> Self {
        MessageDoc {
            id: m.id.into_string(),
            source: m.source.into_string(),
            received_at: m.received_at.rfc3339(),
            content_type: m.content_type,
            headers: m.headers,
            body_bytes: m.body_bytes,
            body: m.body,
            events: m.events,
            events_error: m.events_error,
            deliveries: m.deliveries.into_iter().map(Into::into).collect(),
            fetch: None,
        }
    }
}
