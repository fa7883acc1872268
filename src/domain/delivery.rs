//! A delivery's life in words every layer shares: its status, what the
//! sink's answer means ([`Verdict`], the "should we retry" half) and where
//! it goes next ([`NextState`], the "when" half's result).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::time::Millis;

/// What one attempt's answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The sink accepted it.
    Delivered,
    /// Worth trying again; at `after` when the sink said so (Retry-After).
    Retry {
        /// The sink's own wish, if any.
        after: Option<Duration>,
    },
    /// Trying again cannot help (a 4xx that is not about timing).
    Permanent,
}

/// Delivery status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for its `next_attempt_at`.
    Pending,
    /// Leased by a worker.
    InFlight,
    /// Succeeded.
    Delivered,
    /// Gave up.
    Dead,
}

impl Status {
    /// Column value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::InFlight => "in_flight",
            Status::Delivered => "delivered",
            Status::Dead => "dead",
        }
    }

    /// Parses a column or query value.
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "pending" => Status::Pending,
            "in_flight" => Status::InFlight,
            "delivered" => Status::Delivered,
            "dead" => Status::Dead,
            _ => return None,
        })
    }

    /// Every status, for gauges.
    pub const ALL: [Status; 4] = [
        Status::Pending,
        Status::InFlight,
        Status::Delivered,
        Status::Dead,
    ];
}
/// Where a delivery goes after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextState {
    /// Done.
    Delivered,
    /// Try again at this time.
    Retry { at: Millis },
    /// Give up; keep it for replay.
    Dead,
    /// Not attempted (circuit open, paused): wait until this time without spending an attempt.
    Defer { at: Millis },
}
