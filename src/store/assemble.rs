//! Turning decoded rows into the model, the same way for every backend.
//! Each backend decodes its own column types into these plain rows; what
//! happens next lives here once.

use std::collections::BTreeMap;

use super::{
    events_match, rfc3339, AttemptRecord, DeliveryDetail, DeliveryRow, MessageDetail, SinkStats,
    StoreError,
};
use crate::domain::pattern::Pattern;

/// A `messages` row.
pub(crate) struct MessageRow {
    pub id: String,
    pub source: String,
    pub received_at: i64,
    pub content_type: String,
    pub headers: String,
    pub body: Vec<u8>,
    pub events: String,
}

/// A message with its deliveries and their attempts (`(delivery id, attempt)`, oldest first).
pub(crate) fn message_detail(
    m: MessageRow,
    deliveries: Vec<DeliveryRow>,
    attempts: Vec<(String, AttemptRecord)>,
) -> Result<MessageDetail, StoreError> {
    let mut details: Vec<DeliveryDetail> = deliveries
        .into_iter()
        .map(|d| DeliveryDetail {
            delivery: d,
            attempts_log: Vec::new(),
        })
        .collect();
    for (delivery_id, a) in attempts {
        if let Some(d) = details.iter_mut().find(|d| d.delivery.id == delivery_id) {
            d.attempts_log.push(a);
        }
    }
    // A message whose events do not read back is still shown (body,
    // deliveries, attempts), with the reason instead of its events.
    let events = crate::domain::event::decode_events(&m.events);
    Ok(MessageDetail {
        id: m.id,
        source: m.source,
        received_at: rfc3339(m.received_at),
        content_type: m.content_type,
        headers: serde_json::from_str(&m.headers).unwrap_or(serde_json::Value::Null),
        body_bytes: m.body.len(),
        body: String::from_utf8(m.body).ok(),
        events: events.as_ref().map(Vec::clone).unwrap_or_default(),
        events_error: events.err().map(|e| e.to_string()),
        deliveries: details,
    })
}

/// One `GROUP BY sink, status` row of the stats query.
pub(crate) struct StatRow {
    pub sink: String,
    pub status: String,
    pub n: i64,
    pub oldest: Option<i64>,
    pub last_hour: Option<i64>,
    pub last_ok: Option<i64>,
    pub overdue: Option<i64>,
}

/// Per-sink stats from the grouped counts and each sink's latest error.
pub(crate) fn fold_stats(
    rows: Vec<StatRow>,
    errors: Vec<(String, Option<String>)>,
) -> Vec<SinkStats> {
    let mut out: BTreeMap<String, SinkStats> = BTreeMap::new();
    for r in rows {
        let n = r.n.max(0) as u64;
        let e = out.entry(r.sink.clone()).or_insert_with(|| SinkStats {
            sink: r.sink.clone(),
            ..Default::default()
        });
        match r.status.as_str() {
            "pending" => {
                e.pending = n;
                e.oldest_pending_at = min_opt(e.oldest_pending_at, r.oldest);
            }
            "in_flight" => {
                e.in_flight = n;
                e.overdue_in_flight = r.overdue.unwrap_or(0).max(0) as u64;
                e.oldest_pending_at = min_opt(e.oldest_pending_at, r.oldest);
            }
            "dead" => e.dead = n,
            "delivered" => {
                e.delivered = n;
                e.delivered_last_hour = r.last_hour.unwrap_or(0).max(0) as u64;
                e.last_success_at = r.last_ok;
            }
            _ => {}
        }
    }
    for (sink, err) in errors {
        if let Some(e) = out.get_mut(&sink) {
            e.last_error = err;
        }
    }
    out.into_values().collect()
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The replay candidates (`(id, matched indexes, message events)`) that an
/// optional event pattern keeps.
pub(crate) fn replay_ids(
    rows: Vec<(String, String, String)>,
    event: Option<&Pattern>,
) -> Vec<String> {
    rows.into_iter()
        .filter(|(_, matched, events)| event.is_none_or(|p| events_match(events, matched, p)))
        .map(|(id, _, _)| id)
        .collect()
}
