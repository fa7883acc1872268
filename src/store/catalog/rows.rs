//! Rows as both databases return them, decoded by `sqlx::FromRow`. Integer
//! columns whose types differ between the schemas (`INTEGER` on Postgres)
//! are cast to `BIGINT` in the SQL, so one Rust type reads both.

use super::super::{
    AttemptRecord, DeliveryId, DeliveryRow, MessageId, Millis, SinkName, SinkStateRow, SourceName,
    Status, StoreError,
};

/// A `deliveries` row.
#[derive(sqlx::FromRow)]
pub struct DeliveryRaw {
    id: DeliveryId,
    message_id: MessageId,
    sink: SinkName,
    status: String,
    attempts: i64,
    last_status: Option<i64>,
    last_error: Option<String>,
    next_attempt_at: Millis,
    created_at: Millis,
    updated_at: Millis,
}

impl DeliveryRaw {
    /// The row, checked.
    pub fn into_row(self) -> Result<DeliveryRow, StoreError> {
        let status = Status::parse(&self.status).ok_or(StoreError::Corrupt(self.status))?;
        Ok(DeliveryRow {
            id: self.id,
            message_id: self.message_id,
            sink: self.sink,
            status,
            attempts: self.attempts.clamp(0, u32::MAX as i64) as u32,
            last_status: self.last_status.map(|v| v as i32),
            last_error: self.last_error,
            next_attempt_at: matches!(status, Status::Pending | Status::InFlight)
                .then_some(self.next_attempt_at),
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// An `attempts` row with its delivery id.
#[derive(sqlx::FromRow)]
pub struct AttemptRaw {
    pub delivery_id: DeliveryId,
    attempt: i64,
    started_at: Millis,
    duration_ms: i64,
    status: Option<i64>,
    error: Option<String>,
    response: Option<String>,
}

impl AttemptRaw {
    /// The attempt as recorded.
    pub fn into_record(self) -> AttemptRecord {
        AttemptRecord {
            attempt: self.attempt.clamp(0, u32::MAX as i64) as u32,
            started_at: self.started_at,
            duration_ms: self.duration_ms,
            status: self.status.map(|v| v as i32),
            error: self.error,
            response: self.response,
        }
    }
}

/// A `messages` row.
#[derive(sqlx::FromRow)]
pub struct MessageRaw {
    pub id: MessageId,
    pub source: SourceName,
    pub received_at: Millis,
    pub content_type: String,
    pub headers: String,
    pub body: Vec<u8>,
    pub events: String,
}

/// One `GROUP BY sink, status` row of the stats query.
#[derive(sqlx::FromRow)]
pub struct StatRaw {
    pub sink: SinkName,
    pub status: String,
    pub n: i64,
    pub oldest: Option<Millis>,
    pub overdue: Option<i64>,
    pub last_hour: Option<i64>,
    pub last_ok: Option<Millis>,
}

/// A sink's latest error.
#[derive(sqlx::FromRow)]
pub struct ErrorRaw {
    pub sink: SinkName,
    pub last_error: Option<String>,
}

/// A replay candidate: its matched event indexes and its message's events.
#[derive(sqlx::FromRow)]
pub struct ReplayRaw {
    pub id: DeliveryId,
    pub matched: String,
    pub events: String,
}

/// A `sink_state` row (`paused` read as 0 or 1 from either schema).
#[derive(sqlx::FromRow)]
pub struct StateRaw {
    sink: SinkName,
    paused: i64,
    reason: Option<String>,
    updated_at: Millis,
}

impl StateRaw {
    /// The row as the dispatcher reads it.
    pub fn into_row(self) -> SinkStateRow {
        SinkStateRow {
            sink: self.sink,
            paused: self.paused != 0,
            reason: self.reason,
            updated_at: self.updated_at,
        }
    }
}

/// One text column named `value`.
#[derive(sqlx::FromRow)]
pub struct TextRaw {
    #[allow(dead_code)]
    pub value: String,
}
