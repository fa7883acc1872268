//! A per-sink request rate limit shared by all of the sink's workers in
//! this process: requests are let through one at a time, each at least
//! `1/rate` after the previous one was let through.
//!
//! The next slot counts from when the previous request was actually let
//! through, not from when it was due: on a fixed grid, two waiters whose
//! wake-ups were both delayed (a busy machine) would wake together and
//! reach the service in the same instant (seen: `rate_limits_hold_at_the_service`
//! failing under load).

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// Spaces requests at least `1/rate` seconds apart.
pub struct RateLimiter {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// `rate` requests per second (validated positive by the config).
    pub fn per_second(rate: f64) -> RateLimiter {
        RateLimiter {
            interval: Duration::from_secs_f64(1.0 / rate),
            next: Mutex::new(None),
        }
    }

    /// Waits for this request's turn. Waiters queue in order (tokio's
    /// mutex is fair) and the lock is held while waiting, so turns never
    /// overlap.
    pub async fn acquire(&self) {
        let mut next = self.next.lock().await;
        if let Some(at) = *next {
            tokio::time::sleep_until(at).await;
        }
        *next = Some(Instant::now() + self.interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_are_spaced() {
        let l = RateLimiter::per_second(4.0);
        let t0 = Instant::now();
        for _ in 0..5 {
            l.acquire().await;
        }
        assert_eq!(t0.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_turn_moves_the_next_one_back() {
        let l = RateLimiter::per_second(2.0);
        l.acquire().await;
        // The holder of the next turn is late by 2 s: the turn after it
        // still comes a full interval after it, not at once.
        tokio::time::sleep(Duration::from_secs(2)).await;
        l.acquire().await;
        let t = Instant::now();
        l.acquire().await;
        assert_eq!(t.elapsed(), Duration::from_millis(500));
    }
}
