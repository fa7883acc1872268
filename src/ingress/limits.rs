//! What one sender may hold of the relay: a few requests at once per client
//! address, a body that starts soon and keeps coming, and a work slot only
//! once the body has arrived.
//!
//! Why this shape: ArcGIS gives up after one to three quick retries, so a
//! webhook refused because slow or idle clients hold every slot is a lost
//! edit. The global `max_concurrency` therefore counts requests that are
//! being verified and committed, never requests whose bodies are still
//! arriving; those are bounded per client address (through
//! `trusted_proxies`, so a proxy in front does not make every request one
//! client) and by the body's start and rate limits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use http_body_util::BodyExt;

use super::IngressError;

/// Requests in progress per client address.
#[derive(Default)]
pub struct ClientSlots {
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One request's place among its client's; freed on drop.
pub struct ClientSlot {
    slots: Arc<ClientSlots>,
    ip: IpAddr,
}

impl ClientSlots {
    /// Takes a slot for `ip`, or says the client already holds `cap`.
    pub fn take(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Result<ClientSlot, IngressError> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let n = held.entry(ip).or_insert(0);
        if *n >= cap {
            return Err(IngressError::TooManyFromClient(cap));
        }
        *n += 1;
        Ok(ClientSlot {
            slots: self.clone(),
            ip,
        })
    }

    /// Addresses holding at least one slot (for tests and metrics).
    pub fn clients(&self) -> usize {
        self.held.lock().map(|h| h.len()).unwrap_or(0)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

/// How a body must arrive.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest body.
    pub max_bytes: usize,
    /// The whole body by then.
    pub total: Duration,
    /// Its first byte by then.
    pub start: Duration,
    /// After `start`, at least this many bytes per second on average.
    pub min_rate: u64,
}

/// Reads a body within [`BodyLimits`]: 413 past the size, 408 when it does
/// not start in time, falls under the minimum rate or takes too long.
pub async fn read_body(body: Body, limits: BodyLimits) -> Result<Vec<u8>, IngressError> {
    let started = Instant::now();
    let deadline = started + limits.total;
    let mut body = body;
    let mut out: Vec<u8> = Vec::new();
    loop {
        let now = Instant::now();
        // The next frame must come before whichever bound is nearest: the
        // total deadline, the start deadline while nothing has come, or the
        // moment the average would fall under the minimum rate.
        let rate_bound = if out.is_empty() {
            started + limits.start
        } else if limits.min_rate == 0 {
            deadline
        } else {
            let allowed = Duration::from_secs_f64(out.len() as f64 / limits.min_rate as f64);
            started + limits.start.max(allowed)
        };
        let bound = deadline.min(rate_bound);
        if bound <= now {
            return Err(timeout_error(&out, limits, now >= deadline));
        }
        let frame = match tokio::time::timeout(bound - now, body.frame()).await {
            Err(_) => return Err(timeout_error(&out, limits, Instant::now() >= deadline)),
            Ok(None) => return Ok(out),
            Ok(Some(Err(_))) => {
                return Err(IngressError::Invalid(
                    "the request body could not be read".into(),
                ))
            }
            Ok(Some(Ok(f))) => f,
        };
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limits.max_bytes {
                return Err(IngressError::TooLarge(limits.max_bytes));
            }
            out.extend_from_slice(&data);
        }
    }
}

fn timeout_error(read: &[u8], limits: BodyLimits, total: bool) -> IngressError {
    if total {
        IngressError::BodyTimeout(limits.total)
    } else if read.is_empty() {
        IngressError::BodyNotStarted(limits.start)
    } else {
        IngressError::BodyTooSlow(limits.min_rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_per_address_and_free_on_drop() {
        let s = Arc::new(ClientSlots::default());
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let one = s.take(a, 2).unwrap();
        let _two = s.take(a, 2).unwrap();
        assert!(matches!(
            s.take(a, 2),
            Err(IngressError::TooManyFromClient(2))
        ));
        let _other = s.take(b, 2).unwrap();
        drop(one);
        assert!(s.take(a, 2).is_ok());
        assert_eq!(s.clients(), 2);
    }
}
