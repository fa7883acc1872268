//! The message detail: a message with its deliveries and attempts, its
//! events bounded so that one large payload cannot make a huge answer.

use super::rows::{AttemptRaw, MessageRaw};
use crate::domain::event::Event;
use crate::store::{DeliveryDetail, DeliveryRow, MessageDetail};

/// A message with its deliveries and their attempts (oldest first). A
/// message whose events do not read back is still shown (body, deliveries,
/// attempts), with the reason instead of its events.
pub(super) fn message_detail(
    m: MessageRaw,
    deliveries: Vec<DeliveryRow>,
    attempts: Vec<AttemptRaw>,
) -> MessageDetail {
    let mut details: Vec<DeliveryDetail> = deliveries
        .into_iter()
        .map(|d| DeliveryDetail {
            delivery: d,
            attempts_log: Vec::new(),
        })
        .collect();
    for a in attempts {
        if let Some(d) = details.iter_mut().find(|d| d.delivery.id == a.delivery_id) {
            d.attempts_log.push(a.into_record());
        }
    }
    let (events, events_error) = match crate::domain::event::decode_events(&m.events) {
        Ok(events) => shown_events(events),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    MessageDetail {
        id: m.id,
        source: m.source,
        received_at: m.received_at,
        content_type: m.content_type,
        headers: serde_json::from_str(&m.headers).unwrap_or(serde_json::Value::Null),
        body_bytes: m.body.len(),
        body: String::from_utf8(m.body).ok(),
        events,
        events_error,
        deliveries: details,
    }
}

/// Most bytes of events a message detail writes. The events of one ArcGIS
/// Server payload share their properties (stored once); written out per
/// event, a 1 MB payload of 1,000 events would be a 1 GB answer.
pub const MAX_DETAIL_EVENTS_BYTES: usize = 16 * 1024 * 1024;

/// The events a detail shows: all of them, or the first ones that fit in
/// [`MAX_DETAIL_EVENTS_BYTES`] written out, with a note saying so (the
/// stored body still holds every event).
fn shown_events(events: Vec<Event>) -> (Vec<Event>, Option<String>) {
    let mut sizes: Vec<(*const serde_json::Value, usize)> = Vec::new();
    let mut total = 0usize;
    let mut fit = events.len();
    for (i, e) in events.iter().enumerate() {
        let ptr = std::sync::Arc::as_ptr(&e.properties);
        let props = match sizes.iter().find(|(p, _)| *p == ptr) {
            Some((_, n)) => *n,
            None => {
                let n = serde_json::to_vec(&*e.properties)
                    .map(|v| v.len())
                    .unwrap_or(0);
                sizes.push((ptr, n));
                n
            }
        };
        total = total.saturating_add(props + 256 + e.uri.len() + e.id.len());
        if total > MAX_DETAIL_EVENTS_BYTES && fit == events.len() {
            fit = i;
        }
    }
    if fit == events.len() {
        return (events, None);
    }
    let note = format!(
        "the message's {} events would take about {total} bytes written out; the first {fit} are shown (the body holds them all)",
        events.len()
    );
    let mut events = events;
    events.truncate(fit);
    (events, Some(note))
}
