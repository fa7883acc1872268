//! The retry policy, as pure functions.
//!
//! Two questions kept apart (as Vector does): *should* we retry — the
//! sink's classification of an answer into a [`Verdict`] — and *when* —
//! [`next_state`], a function of the attempt number, the policy and an
//! injected jitter in `[0, 1]`. Retries are durable: the answer becomes the
//! delivery's `next_attempt_at` in the store, not a sleep in memory.

use std::time::Duration;

use crate::config::DeliveryPolicy;
pub use crate::domain::delivery::{NextState, Verdict};
use crate::domain::time::Millis;

/// The un-jittered delay before attempt `n + 1` after `n` failed attempts:
/// `initial * 2^(n-1)`, capped at `max_backoff`.
pub fn backoff_cap(policy: &DeliveryPolicy, failed_attempts: u32) -> Duration {
    let exp = failed_attempts.saturating_sub(1).min(32);
    let factor = 1u64 << exp;
    let ms = (policy.initial_backoff.as_millis() as u64).saturating_mul(factor);
    Duration::from_millis(ms).min(policy.max_backoff)
}

/// Full jitter: a delay uniformly in `[0, cap]`, `jitter` being the draw in `[0, 1]`.
pub fn backoff_delay(policy: &DeliveryPolicy, failed_attempts: u32, jitter: f64) -> Duration {
    let cap = backoff_cap(policy, failed_attempts);
    // A NaN draw (a broken jitter source) waits the full cap, never less;
    // NaN.clamp() stays NaN and mul_f64 panics on it.
    let j = if jitter.is_nan() {
        1.0
    } else {
        jitter.clamp(0.0, 1.0)
    };
    if j >= 1.0 {
        return cap;
    }
    // mul_f64 goes through f64 seconds, which can round a long cap up.
    cap.mul_f64(j).min(cap)
}

/// Decides where a delivery goes after an attempt.
///
/// * `attempts_made` counts this attempt (1 after the first).
/// * `cycle_started_at` is when the delivery was queued or last replayed;
///   nothing is retried past `cycle_started_at + max_age`.
/// * A Retry-After is honoured but capped at `max_backoff`, so a sink
///   cannot park a delivery for a week.
pub fn next_state(
    policy: &DeliveryPolicy,
    verdict: Verdict,
    attempts_made: u32,
    cycle_started_at: Millis,
    now: Millis,
    jitter: f64,
) -> NextState {
    match verdict {
        Verdict::Delivered => NextState::Delivered,
        Verdict::Permanent => NextState::Dead,
        Verdict::Retry { after } => {
            if attempts_made >= policy.max_attempts {
                return NextState::Dead;
            }
            let delay = match after {
                Some(a) => a.min(policy.max_backoff),
                None => backoff_delay(policy, attempts_made, jitter),
            };
            // Saturating (`Millis::add`): a duration the config allows
            // ("500000000years") must not wrap to a negative delay or deadline.
            let at = now.after(delay);
            let deadline = cycle_started_at.after(policy.max_age);
            if at > deadline {
                NextState::Dead
            } else {
                NextState::Retry { at }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> DeliveryPolicy {
        DeliveryPolicy {
            timeout: Duration::from_secs(10),
            max_attempts: 5,
            initial_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(60),
            max_age: Duration::from_secs(3600),
            concurrency: 1,
            rate_limit: None,
            proxy: None,
            ca_file: None,
            circuit: crate::config::CircuitConfig::default(),
            deactivate_after: None,
        }
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let p = policy();
        let caps: Vec<u64> = (1..=6).map(|n| backoff_cap(&p, n).as_secs()).collect();
        assert_eq!(caps, vec![5, 10, 20, 40, 60, 60]);
        assert_eq!(backoff_delay(&p, 3, 0.5), Duration::from_secs(10));
        assert_eq!(backoff_delay(&p, 3, 0.0), Duration::ZERO);
    }

    #[test]
    fn dead_after_max_attempts_or_max_age() {
        let p = policy();
        let r = Verdict::Retry { after: None };
        assert_eq!(
            next_state(&p, r, 5, Millis(0), Millis(0), 1.0),
            NextState::Dead
        );
        assert_eq!(
            next_state(&p, r, 1, Millis(0), Millis(1000), 1.0),
            NextState::Retry { at: Millis(6000) }
        );
        // 59 minutes in, a 40 s delay would cross the hour.
        assert_eq!(
            next_state(&p, r, 4, Millis(0), Millis(3_590_000), 1.0),
            NextState::Dead
        );
        assert_eq!(
            next_state(&p, Verdict::Permanent, 1, Millis(0), Millis(0), 1.0),
            NextState::Dead
        );
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let p = policy();
        let r = |s| Verdict::Retry {
            after: Some(Duration::from_secs(s)),
        };
        assert_eq!(
            next_state(&p, r(7), 1, Millis(0), Millis(0), 0.0),
            NextState::Retry { at: Millis(7000) }
        );
        assert_eq!(
            next_state(&p, r(86_400), 1, Millis(0), Millis(0), 0.0),
            NextState::Retry { at: Millis(60_000) }
        );
    }
}
