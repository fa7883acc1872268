//! [`Millis`]: the one time type of the queue. Every stored time is
//! milliseconds since the Unix epoch in an `i64` column; this wrapper keeps
//! such a time from being mixed with a count, a duration or an id, and does
//! its arithmetic saturating, so a huge configured duration never wraps a
//! due time into the past.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A point in time: milliseconds since the Unix epoch (UTC).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    sqlx::Type,
    utoipa::ToSchema,
)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct Millis(pub i64);

/// Milliseconds of a duration, saturating at `i64::MAX`.
pub fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Millis {
    /// The earliest time: sorts before every real one.
    pub const MIN: Millis = Millis(i64::MIN);
    /// The latest time.
    pub const MAX: Millis = Millis(i64::MAX);

    /// Now, from the system clock (a clock before 1970 reads as 0).
    pub fn now() -> Millis {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Millis(duration_ms(d))
    }

    /// The raw milliseconds, for a column or a gauge.
    pub fn get(self) -> i64 {
        self.0
    }

    /// `d` later, saturating.
    pub fn after(self, d: Duration) -> Millis {
        Millis(self.0.saturating_add(duration_ms(d)))
    }

    /// `d` earlier, saturating.
    pub fn before(self, d: Duration) -> Millis {
        Millis(self.0.saturating_sub(duration_ms(d)))
    }

    /// How long after `earlier` this is; zero when it is not after.
    pub fn since(self, earlier: Millis) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }

    /// Milliseconds from `earlier` to this, negative when before.
    pub fn ms_since(self, earlier: Millis) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    /// RFC 3339 with milliseconds, UTC (`2026-11-22T10:00:00.000Z`); a
    /// time outside the representable range is clamped, never an error.
    pub fn rfc3339(self) -> String {
        super::event::format_time(self.0, super::event::TimePrecision::Millis)
    }
}

/// The raw milliseconds, as stored (a log field, a SQL literal); people
/// get [`Millis::rfc3339`].
impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

/// `t + ms`: an offset in milliseconds, saturating.
impl std::ops::Add<i64> for Millis {
    type Output = Millis;

    fn add(self, ms: i64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }
}

/// `t - ms`: an offset in milliseconds, saturating.
impl std::ops::Sub<i64> for Millis {
    type Output = Millis;

    fn sub(self, ms: i64) -> Millis {
        Millis(self.0.saturating_sub(ms))
    }
}

impl From<i64> for Millis {
    fn from(ms: i64) -> Millis {
        Millis(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        let t = Millis(i64::MAX - 5);
        assert_eq!(t.after(Duration::from_secs(10)), Millis::MAX);
        assert_eq!(
            Millis(i64::MIN + 1).before(Duration::from_secs(1)),
            Millis::MIN
        );
        assert_eq!(Millis(10).since(Millis(20)), Duration::ZERO);
        assert_eq!(Millis(1_500).since(Millis(500)), Duration::from_secs(1));
        assert_eq!(Millis(5).ms_since(Millis(7)), -2);
    }

    #[test]
    fn it_is_a_number_on_the_wire_and_a_time_for_people() {
        assert_eq!(
            serde_json::to_string(&Millis(1_700_000_000_000)).unwrap(),
            "1700000000000"
        );
        assert_eq!(Millis(0).rfc3339(), "1970-01-01T00:00:00.000Z");
    }
}
