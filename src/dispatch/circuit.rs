//! The per-sink circuit breaker and the ArcGIS-style deactivation policy,
//! as state machines over caller-supplied times ([`Millis`]), so tests
//! step them without clocks.
//!
//! After `failures` consecutive failed attempts the circuit opens: the
//! sink's deliveries stay pending without spending attempts, and one probe
//! delivery is let through every `probe_interval`. A successful probe closes
//! the circuit. This is what keeps an outage of hours from turning every
//! delivery dead.

use std::collections::VecDeque;
use std::time::Duration;

use crate::domain::time::Millis;

/// Circuit settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitPolicy {
    /// Consecutive failed attempts that open the circuit.
    pub failures: u32,
    /// Time between probes while open.
    pub probe_interval: Duration,
}

/// What the dispatcher may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Send normally.
    Closed,
    /// Send exactly one delivery as a probe.
    Probe,
    /// Send nothing until this time.
    Open { until: Millis },
}

/// A change worth one log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The circuit opened.
    Opened,
    /// A probe succeeded: closed again.
    Closed,
}

/// One sink's circuit.
#[derive(Debug)]
pub struct Circuit {
    policy: CircuitPolicy,
    failures: u32,
    open_until: Option<Millis>,
    probing: bool,
}

impl Circuit {
    /// A closed circuit.
    pub fn new(policy: CircuitPolicy) -> Circuit {
        Circuit {
            policy,
            failures: 0,
            open_until: None,
            probing: false,
        }
    }

    /// Whether sending is held back right now (for the state word).
    pub fn is_open(&self) -> bool {
        self.open_until.is_some()
    }

    /// When a held-back delivery should next be looked at.
    pub fn reopen_at(&self) -> Option<Millis> {
        self.open_until
    }

    /// Asks to send. Hands out at most one probe per interval.
    pub fn gate(&mut self, now: Millis) -> Gate {
        match self.open_until {
            None => Gate::Closed,
            Some(t) if now >= t && !self.probing => {
                self.probing = true;
                Gate::Probe
            }
            Some(t) => Gate::Open {
                until: if self.probing {
                    now.after(self.policy.probe_interval)
                } else {
                    t
                },
            },
        }
    }

    /// Records an answer that paces us (429 with `Retry-After`): the sink
    /// is alive, so it neither counts as a failure nor closes the circuit;
    /// an open circuit's next probe waits for the time the sink asked for.
    pub fn record_paced(&mut self, now: Millis, after: Duration) {
        self.probing = false;
        if self.open_until.is_some() {
            self.open_until = Some(now.after(after));
        }
    }

    /// Records an attempt's result.
    pub fn record(&mut self, success: bool, now: Millis) -> Option<Transition> {
        self.probing = false;
        if success {
            self.failures = 0;
            return self.open_until.take().map(|_| Transition::Closed);
        }
        self.failures = self.failures.saturating_add(1);
        let next = now.after(self.policy.probe_interval);
        if self.open_until.is_some() {
            self.open_until = Some(next);
            None
        } else if self.failures >= self.policy.failures {
            self.open_until = Some(next);
            Some(Transition::Opened)
        } else {
            None
        }
    }
}

/// ArcGIS's deactivation policy: pause the sink for good after `failures`
/// failed attempts within `window`, with no success in between.
#[derive(Debug)]
pub struct Deactivation {
    failures: usize,
    window: Duration,
    recent: VecDeque<Millis>,
}

impl Deactivation {
    /// A policy of `failures` within `window`.
    pub fn new(failures: u32, window: Duration) -> Deactivation {
        Deactivation {
            failures: failures.max(1) as usize,
            window,
            recent: VecDeque::new(),
        }
    }

    /// Records an attempt; true when the sink should now be deactivated.
    pub fn record(&mut self, success: bool, now: Millis) -> bool {
        if success {
            self.recent.clear();
            return false;
        }
        self.recent.push_back(now);
        while self
            .recent
            .front()
            .is_some_and(|t| *t < now.before(self.window))
        {
            self.recent.pop_front();
        }
        self.recent.len() >= self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CircuitPolicy {
        CircuitPolicy {
            failures: 3,
            probe_interval: Duration::from_secs(30),
        }
    }

    #[test]
    fn opens_after_consecutive_failures_and_probes() {
        let mut c = Circuit::new(policy());
        assert_eq!(c.record(false, Millis(0)), None);
        assert_eq!(
            c.record(true, Millis(1)),
            None,
            "a success resets the count"
        );
        assert_eq!(c.record(false, Millis(2)), None);
        assert_eq!(c.record(false, Millis(3)), None);
        assert_eq!(c.record(false, Millis(4)), Some(Transition::Opened));
        assert_eq!(
            c.gate(Millis(5)),
            Gate::Open {
                until: Millis(30_004)
            }
        );
        assert_eq!(c.gate(Millis(30_004)), Gate::Probe);
        assert!(
            matches!(c.gate(Millis(30_005)), Gate::Open { .. }),
            "one probe at a time"
        );
        assert_eq!(
            c.record(false, Millis(30_010)),
            None,
            "failed probe: stays open"
        );
        assert_eq!(
            c.gate(Millis(40_000)),
            Gate::Open {
                until: Millis(60_010)
            }
        );
        assert_eq!(c.gate(Millis(60_010)), Gate::Probe);
        assert_eq!(c.record(true, Millis(60_020)), Some(Transition::Closed));
        assert_eq!(c.gate(Millis(60_021)), Gate::Closed);
    }

    #[test]
    fn deactivates_after_failures_within_window() {
        let day = 86_400_000;
        let mut d = Deactivation::new(3, Duration::from_millis(day as u64));
        assert!(!d.record(false, Millis(0)));
        assert!(!d.record(false, Millis(1)));
        assert!(!d.record(true, Millis(2)));
        assert!(!d.record(false, Millis(3)));
        assert!(!d.record(false, Millis(4)));
        assert!(
            !d.record(false, Millis(4 + 2 * day)),
            "older failures fell out of the window"
        );
        assert!(!d.record(false, Millis(5 + 2 * day)));
        assert!(d.record(false, Millis(6 + 2 * day)));
    }
}
