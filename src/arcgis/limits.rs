//! What one payload may make the relay hold: nesting, events, and the
//! normalised size relative to the body. Checked while normalising, so a
//! hostile body is refused before it has cost its worst.

use super::payload::PayloadError;
use crate::domain::event::Event;

/// Deepest nesting of arrays and objects a body may have. serde_json stops
/// at 128, and the relay stores a payload's values a few levels deeper
/// (inside each event's `properties`, inside API answers), so a body just
/// under serde's limit would be accepted but never read back. ArcGIS
/// payloads nest six levels at most.
pub const MAX_NESTING: usize = 64;

/// What one message may make the relay hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most events.
    pub max_events: usize,
    /// Most bytes of normalised event text (strings copied into each
    /// event, and the stored encoding).
    pub max_bytes: usize,
}

impl Limits {
    /// The limits for a body of `body_len` bytes: `expansion` times its
    /// size plus 64 KiB.
    pub fn for_body(body_len: usize, max_events: usize, expansion: usize) -> Limits {
        Limits {
            max_events,
            max_bytes: body_len.saturating_mul(expansion).saturating_add(64 * 1024),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::for_body(1024 * 1024, 1000, 4)
    }
}

/// Counts what normalisation copies, refusing as soon as it is over.
pub(super) struct Budget {
    pub(super) limits: Limits,
    events: usize,
    bytes: usize,
}

impl Budget {
    pub(super) fn new(limits: Limits) -> Budget {
        Budget {
            limits,
            events: 0,
            bytes: 0,
        }
    }

    pub(super) fn take(&mut self, e: &Event) -> Result<(), PayloadError> {
        self.events += 1;
        if self.events > self.limits.max_events {
            return Err(PayloadError::TooComplex(format!(
                "more than {} events in one payload (server.max_events)",
                self.limits.max_events
            )));
        }
        let strings = [
            &e.webhook,
            &e.portal_url,
            &e.service,
            &e.changes_url,
            &e.username,
        ];
        self.bytes += e.uri.len() + e.source.len() + e.id.len() + e.operation.len() + 64;
        self.bytes += strings
            .iter()
            .filter_map(|s| s.as_ref())
            .map(String::len)
            .sum::<usize>();
        self.check(0)
    }

    fn check(&self, more: usize) -> Result<(), PayloadError> {
        if self.bytes + more > self.limits.max_bytes {
            return Err(PayloadError::TooComplex(format!(
                "the payload's events would take more than {} bytes (server.max_expansion times the body)",
                self.limits.max_bytes
            )));
        }
        Ok(())
    }
}

/// Checks that the stored form of `events` stays within `limits`.
pub fn check_encoded(encoded: &str, limits: Limits) -> Result<(), PayloadError> {
    Budget::new(limits).check(encoded.len())
}

/// How deeply `bytes` (JSON text) nests arrays and objects; a quick scan
/// that needs no parse, so a hostile body costs no tree.
pub fn nesting(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}
