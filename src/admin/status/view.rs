//! What each template gets: plain data prepared from the store's rows.
//! Text stays text here (the templates escape it); what is decided here is
//! what may be shown at all — a notice's values are checked, a payload's
//! link must be http(s), a long body is cut.

use serde::{Deserialize, Serialize};

use super::{BODY_SHOWN, DEAD_SHOWN};
use crate::admin::html::safe_href;
use crate::admin::summary::{ago, SinkSummary};
use crate::config::Config;
use crate::store::{AttemptRecord, DeliveryDetail, DeliveryRow, MessageDetail, Millis, Status};

/// `overview.html`: the status page.
#[derive(Debug, Serialize)]
pub struct Overview {
    pub csrf: String,
    pub notice: Option<NoticeView>,
    /// Pending and in flight, over all sinks.
    pub queued: u64,
    pub dead_total: u64,
    /// When the page was made, RFC 3339.
    pub now: String,
    pub sinks: Vec<SinkView>,
    pub dead: Vec<DeadView>,
    pub dead_shown: usize,
}

/// One row of the sinks table (`sinks.html`).
#[derive(Debug, Serialize)]
pub struct SinkView {
    pub name: String,
    pub kind: String,
    pub state: String,
    pub queued: u64,
    pub in_flight: u64,
    pub overdue_in_flight: u64,
    pub dead: u64,
    pub delivered_last_hour: u64,
    pub last_success_at: Option<String>,
    /// "3 min ago", "never".
    pub last_success_ago: String,
    pub last_error: Option<String>,
}

/// One row of the dead deliveries (`deliveries.html`).
#[derive(Debug, Serialize)]
pub struct DeadView {
    pub id: String,
    pub message_id: String,
    pub sink: String,
    pub attempts: u32,
    pub last_status: Option<i32>,
    pub last_error: String,
    pub updated_at: String,
}

/// The status page's data.
pub fn overview(
    csrf: &str,
    notice: Option<NoticeView>,
    sinks: &[SinkSummary],
    dead: &[DeliveryRow],
    now: Millis,
) -> Overview {
    let (queued, dead_total) = sinks
        .iter()
        .fold((0, 0), |(q, d), s| (q + s.queued(), d + s.dead));
    Overview {
        csrf: csrf.to_string(),
        notice,
        queued,
        dead_total,
        now: now.rfc3339(),
        sinks: sinks
            .iter()
            .map(|s| SinkView {
                name: s.name.clone(),
                kind: s.kind.clone(),
                state: s.state.clone(),
                queued: s.queued(),
                in_flight: s.in_flight,
                overdue_in_flight: s.overdue_in_flight,
                dead: s.dead,
                delivered_last_hour: s.delivered_last_hour,
                last_success_at: s.last_success_at.clone(),
                last_success_ago: ago(s.last_success_ms, now),
                last_error: s.last_error.clone(),
            })
            .collect(),
        dead: dead
            .iter()
            .map(|d| DeadView {
                id: d.id.to_string(),
                message_id: d.message_id.to_string(),
                sink: d.sink.to_string(),
                attempts: d.attempts,
                last_status: d.last_status,
                last_error: d.last_error.clone().unwrap_or_default(),
                updated_at: d.updated_at.rfc3339(),
            })
            .collect(),
        dead_shown: DEAD_SHOWN,
    }
}

/// The notice query of the page after an action. The values arrive as
/// text and each is checked on its own: a link anyone can craft must not
/// put words of theirs in front of an admin, so an `id` that is not a
/// delivery id, a `sink` that is not a configured sink and an `n` that is
/// not a number are dropped, not shown.
#[derive(Debug, Deserialize, Default)]
pub struct NoticeQuery {
    notice: Option<String>,
    sink: Option<String>,
    n: Option<String>,
    id: Option<String>,
}

/// `notice.html`: which notice, and its checked values. The words are the
/// template's.
#[derive(Debug, Serialize)]
pub struct NoticeView {
    pub kind: &'static str,
    /// `ok`, `warn` or `error`: the notice's colour.
    pub tone: &'static str,
    /// A configured sink's name, or "the sink".
    pub sink: String,
    pub id: Option<String>,
    pub n: Option<u64>,
}

/// Whether `s` has the form of the ids the store makes (a hyphenated UUID).
pub fn is_id(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// The notice to show for `q`, if it names one.
pub fn notice(config: &Config, q: &NoticeQuery) -> Option<NoticeView> {
    let (kind, tone) = match q.notice.as_deref()? {
        "retried" => ("retried", "ok"),
        "replayed" => ("replayed", "ok"),
        "paused" => ("paused", "ok"),
        "resumed" => ("resumed", "ok"),
        "gone" => ("gone", "warn"),
        "busy" => ("busy", "warn"),
        "invalid" => ("invalid", "warn"),
        "store" => ("store", "error"),
        _ => return None,
    };
    let sink = q
        .sink
        .as_deref()
        .filter(|s| config.sinks.iter().any(|c| c.name() == *s))
        .unwrap_or("the sink")
        .to_string();
    let id = q.id.clone().filter(|s| is_id(s));
    let n =
        q.n.as_deref()
            .filter(|s| s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok());
    Some(NoticeView {
        kind,
        tone,
        sink,
        id,
        n,
    })
}

/// `message.html`: one message.
#[derive(Debug, Serialize)]
pub struct MessagePage {
    pub csrf: String,
    /// This page's path, where its forms come back to.
    pub back: String,
    pub m: MessageView,
}

/// A message as its page shows it.
#[derive(Debug, Serialize)]
pub struct MessageView {
    pub id: String,
    pub source: String,
    pub received_at: String,
    pub content_type: String,
    pub body_bytes: usize,
    /// The kept request headers, pretty JSON.
    pub headers_json: String,
    /// The body as text, cut at [`BODY_SHOWN`] bytes, or what it is when
    /// it is not text.
    pub body: String,
    pub events: Vec<EventView>,
    pub deliveries: Vec<DeliveryView>,
    /// The fetch job of the message's feature changes, when it has one.
    pub fetch: Option<FetchView>,
}

/// A message's fetch job, as the page shows it.
#[derive(Debug, Serialize)]
pub struct FetchView {
    pub status: &'static str,
    pub attempts: u32,
    /// RFC 3339, while pending or in flight.
    pub next_attempt_at: Option<String>,
    pub last_error: String,
    /// "12 features; layer 0: 10 added, 2 updated", once done.
    pub summary: Option<String>,
}

/// The page's view of a fetch row.
pub fn fetch(f: &crate::store::FetchRow) -> FetchView {
    let summary = f.summary.as_ref().map(|s| {
        let layers: Vec<String> = s["layers"]
            .as_array()
            .map(|ls| {
                ls.iter()
                    .map(|l| {
                        format!(
                            "layer {}: {} added, {} updated, {} deleted",
                            l["id"], l["adds"], l["updates"], l["deletes"]
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let cut = if s["truncated"] == true {
            " (cut at max_features)"
        } else {
            ""
        };
        format!("{} features{cut}; {}", s["features"], layers.join("; "))
    });
    FetchView {
        status: f.status.as_str(),
        attempts: f.attempts,
        next_attempt_at: f.next_attempt_at.map(Millis::rfc3339),
        last_error: f.last_error.clone().unwrap_or_default(),
        summary,
    }
}

/// One event of the message.
#[derive(Debug, Serialize)]
pub struct EventView {
    pub uri: String,
    pub operation: String,
    pub username: String,
    /// RFC 3339.
    pub when: Option<String>,
    /// Where to see it, when that is an http(s) URL.
    pub link: Option<String>,
}

/// One delivery of the message, with its attempts.
#[derive(Debug, Serialize)]
pub struct DeliveryView {
    pub id: String,
    pub sink: String,
    pub status: &'static str,
    pub attempts: u32,
    /// When it is next tried, while it waits or is being sent.
    pub next_attempt_at: Option<String>,
    /// Not while an attempt runs.
    pub can_retry: bool,
    pub attempts_log: Vec<AttemptView>,
}

/// One attempt.
#[derive(Debug, Serialize)]
pub struct AttemptView {
    pub attempt: u32,
    /// RFC 3339.
    pub started_at: String,
    pub duration_ms: i64,
    pub status: Option<i32>,
    pub error: String,
    /// The start of the answer, when there was one.
    pub response: Option<String>,
}

/// The message page's data.
pub fn message(csrf: &str, back: &str, m: &MessageDetail) -> MessagePage {
    let body = match &m.body {
        Some(b) if b.len() > BODY_SHOWN => {
            let mut cut = BODY_SHOWN;
            while !b.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}\n… ({} bytes in all)", &b[..cut], m.body_bytes)
        }
        Some(b) => b.clone(),
        None => format!("({} bytes, not UTF-8)", m.body_bytes),
    };
    MessagePage {
        csrf: csrf.to_string(),
        back: back.to_string(),
        m: MessageView {
            id: m.id.to_string(),
            source: m.source.to_string(),
            received_at: m.received_at.rfc3339(),
            content_type: m.content_type.clone(),
            body_bytes: m.body_bytes,
            headers_json: serde_json::to_string_pretty(&m.headers).unwrap_or_default(),
            body,
            events: m
                .events
                .iter()
                .map(|e| EventView {
                    uri: e.uri.clone(),
                    operation: e.operation.clone(),
                    username: e.username.clone().unwrap_or_default(),
                    when: e.when.map(|t| Millis(t).rfc3339()),
                    link: e.link().as_deref().and_then(safe_href),
                })
                .collect(),
            deliveries: m.deliveries.iter().map(delivery).collect(),
            fetch: None,
        },
    }
}

fn delivery(d: &DeliveryDetail) -> DeliveryView {
    let r = &d.delivery;
    DeliveryView {
        id: r.id.to_string(),
        sink: r.sink.to_string(),
        status: r.status.as_str(),
        attempts: r.attempts,
        next_attempt_at: r
            .next_attempt_at
            .map(Millis::rfc3339)
            .filter(|_| matches!(r.status, Status::Pending | Status::InFlight)),
        can_retry: r.status != Status::InFlight,
        attempts_log: d.attempts_log.iter().map(attempt).collect(),
    }
}

fn attempt(a: &AttemptRecord) -> AttemptView {
    AttemptView {
        attempt: a.attempt,
        started_at: a.started_at.rfc3339(),
        duration_ms: a.duration_ms,
        status: a.status,
        error: a.error.clone().unwrap_or_default(),
        response: a.response.clone().filter(|s| !s.is_empty()),
    }
}

/// `login.html`.
#[derive(Debug, Serialize)]
pub struct Login<'a> {
    pub error: Option<&'a str>,
    /// Where to go after the login (a local path).
    pub next: &'a str,
    /// Whether an admin token is configured at all.
    pub configured: bool,
}

/// `refused.html`: a refused (403) or not understood (400) request.
#[derive(Debug, Serialize)]
pub struct Refused<'a> {
    pub title: &'a str,
    pub heading: &'a str,
    pub why: &'a str,
}

/// `store_down.html`: `csrf` when a session is known (for the bar).
#[derive(Debug, Serialize)]
pub struct StoreDown<'a> {
    pub csrf: Option<&'a str>,
}

/// `not_found.html`: a message id that names nothing.
#[derive(Debug, Serialize)]
pub struct NotFound<'a> {
    pub csrf: &'a str,
    pub id: &'a str,
}
