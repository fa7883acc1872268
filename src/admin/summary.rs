//! One row per sink: what `GET /api/v1/sinks`, the status page and
//! `hookrelay sinks` all show, built in one place so the three agree.

use serde::Serialize;

use crate::config::Config;
use crate::store::{Millis, SinkStats};

/// A sink's kind, state and queue, as the operator sees it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct SinkSummary {
    /// Sink name from the config.
    pub name: String,
    /// Sink kind (`http`, `slack`, `teams`, ...).
    pub kind: String,
    /// `active`, `circuit_open` or `paused`.
    pub state: String,
    /// Deliveries waiting for their next attempt.
    pub pending: u64,
    /// Deliveries being attempted right now.
    pub in_flight: u64,
    /// In flight over a minute past their lease (a relay died or hangs
    /// holding them); the next claim takes them back.
    pub overdue_in_flight: u64,
    /// Deliveries that gave up and wait for a replay.
    pub dead: u64,
    /// Delivered deliveries not yet purged by retention.
    pub delivered: u64,
    /// Delivered within the last hour.
    pub delivered_last_hour: u64,
    /// Creation time of the oldest pending delivery, RFC 3339.
    pub oldest_pending_at: Option<String>,
    /// Time of the last successful delivery, RFC 3339.
    pub last_success_at: Option<String>,
    /// Error of the most recently failed attempt.
    pub last_error: Option<String>,
    /// Last success in milliseconds, for relative times on the page.
    #[serde(skip)]
    pub last_success_ms: Option<i64>,
}

impl SinkSummary {
    /// Pending and in flight together: everything not yet finished.
    pub fn queued(&self) -> u64 {
        self.pending + self.in_flight
    }
}

/// Builds one summary per configured sink, in config order. `state_of`
/// gives a sink's state word (the running relay knows about the circuit;
/// the CLI only knows the durable pause flag).
pub fn summarize(
    config: &Config,
    stats: &[SinkStats],
    state_of: impl Fn(&str) -> &'static str,
) -> Vec<SinkSummary> {
    config
        .sinks
        .iter()
        .map(|s| {
            let q = stats
                .iter()
                .find(|x| x.sink == s.name())
                .cloned()
                .unwrap_or_default();
            SinkSummary {
                name: s.name().to_string(),
                kind: s.kind().as_str().to_string(),
                state: state_of(s.name()).to_string(),
                pending: q.pending,
                in_flight: q.in_flight,
                overdue_in_flight: q.overdue_in_flight,
                dead: q.dead,
                delivered: q.delivered,
                delivered_last_hour: q.delivered_last_hour,
                oldest_pending_at: q.oldest_pending_at.map(Millis::rfc3339),
                last_success_at: q.last_success_at.map(Millis::rfc3339),
                last_error: q.last_error,
                last_success_ms: q.last_success_at.map(Millis::get),
            }
        })
        .collect()
}

/// "3 min ago" for a store time, "never" for none.
pub fn ago(ms: Option<i64>, now: Millis) -> String {
    let Some(ms) = ms else {
        return "never".into();
    };
    let s = now.ms_since(Millis(ms)).max(0) / 1000;
    match s {
        0..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=172_799 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

/// Cuts `s` to at most `max` characters, marking the cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The plain-text table `hookrelay sinks` prints: the status page's
/// columns, one line per sink.
pub fn text_table(rows: &[SinkSummary], now: Millis) -> String {
    let mut out = format!(
        "{:<20}  {:<14}  {:<12}  {:>7}  {:>6}  {:>7}  {:<12}  {}\n",
        "SINK", "KIND", "STATE", "PENDING", "DEAD", "LAST 1H", "LAST OK", "LAST ERROR"
    );
    for r in rows {
        // Errors may hold newlines from a sink's answer; a table row may not.
        let err = r
            .last_error
            .as_deref()
            .unwrap_or("-")
            .replace(['\n', '\r', '\t'], " ");
        out.push_str(&format!(
            "{:<20}  {:<14}  {:<12}  {:>7}  {:>6}  {:>7}  {:<12}  {}\n",
            r.name,
            r.kind,
            r.state,
            r.queued(),
            r.dead,
            r.delivered_last_hour,
            ago(r.last_success_ms, now),
            clip(&err, 60)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ago_reads_naturally() {
        assert_eq!(ago(None, Millis(0)), "never");
        assert_eq!(ago(Some(0), Millis(5_000)), "5 s ago");
        assert_eq!(ago(Some(0), Millis(120_000)), "2 min ago");
        assert_eq!(ago(Some(0), Millis(7_200_000)), "2 h ago");
        assert_eq!(ago(Some(0), Millis(3 * 86_400_000)), "3 d ago");
        assert_eq!(
            ago(Some(10), Millis(0)),
            "0 s ago",
            "clock skew never shows a negative age"
        );
    }

    #[test]
    fn clip_counts_characters_not_bytes() {
        assert_eq!(clip("héllo", 10), "héllo");
        assert_eq!(clip("héllo wörld", 5), "héll…");
    }

    #[test]
    fn table_has_one_line_per_sink_without_newlines_from_errors() {
        let rows = vec![SinkSummary {
            name: "teams".into(),
            kind: "teams".into(),
            state: "paused".into(),
            pending: 2,
            in_flight: 1,
            overdue_in_flight: 0,
            dead: 4,
            delivered: 9,
            delivered_last_hour: 3,
            oldest_pending_at: None,
            last_success_at: None,
            last_error: Some("HTTP 500\nline two".into()),
            last_success_ms: Some(0),
        }];
        let t = text_table(&rows, Millis(60_000));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("SINK"));
        assert!(lines[1].contains("paused"));
        assert!(lines[1].contains("HTTP 500 line two"));
        assert!(lines[1].contains("1 min ago"));
    }
}
