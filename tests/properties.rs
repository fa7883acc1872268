//! Property tests (proptest) for the two pure decision functions the relay's
//! promises rest on: the routing matcher, in ArcGIS's trigger vocabulary,
//! and the retry schedule.
//!
//! Routing (`routing::Pattern`), for a Portal event with source S, id I and
//! operation O:
//! - `/S` matches every event of source S, written singular or plural, in
//!   any case; no other source's;
//! - `/S/X` matches iff X equals O or I (case-insensitively);
//! - `/S/I/O` matches iff both do; `<anything>` and `*` are wildcards;
//! - `XEdited` matches `XCreated`, `XUpdated`, `XDeleted` (and itself) of a
//!   service event, and no other change type;
//! - `*` matches every event; change types and service paths never match a
//!   Portal event, Portal triggers never a service event;
//! - an event's own URI, used as a pattern, matches it.
//!
//! Retry (`dispatch::retry`): the cap is monotone non-decreasing in the
//! attempt number, doubles from `initial_backoff` and never exceeds
//! `max_backoff`; a jittered delay lies in `[0, cap]`; `next_state` never
//! schedules past `cycle_started_at + max_age` (the delivery is dead
//! instead), is dead at `max_attempts`, and honours a Retry-After exactly
//! when it is at most `max_backoff`, capping it otherwise.

use std::time::Duration;

use hookrelay::config::{CircuitConfig, DeliveryPolicy};
use hookrelay::dispatch::retry::{backoff_cap, backoff_delay, next_state, Verdict};
use hookrelay::domain::event::{Event, EventOrigin};
use hookrelay::domain::pattern::Pattern;
use hookrelay::sinks::answer::parse_retry_after;
use hookrelay::store::Millis;
use hookrelay::store::NextState;
use proptest::prelude::*;

// ---------------------------------------------------------------- routing

const SOURCES: &[&str] = &["item", "group", "user", "role"];

/// Operations Esri documents, plus made-up ones.
fn operation() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "add",
            "update",
            "delete",
            "share",
            "unshare",
            "move",
            "addUsers",
            "removeUsers",
            "itemShare",
            "signIn",
            "signin",
            "updateUserRole",
            "create",
            "protect",
        ])
        .prop_map(String::from),
        "[a-zA-Z][a-zA-Z0-9]{0,12}",
    ]
}

/// Ids: Portal's 32-hex ids and user names (no '/', never empty).
fn id() -> impl Strategy<Value = String> {
    prop_oneof!["[0-9a-f]{32}", "[a-zA-Z][a-zA-Z0-9_.@-]{0,15}"]
}

/// A random-case rendering of `s`, chosen by `mask`.
fn recase(s: &str, mask: u64) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

fn portal(source: &str, id: &str, op: &str) -> Event {
    Event {
        origin: EventOrigin::Portal,
        uri: format!("/{source}s/{id}/{op}"),
        source: source.into(),
        id: id.into(),
        operation: op.into(),
        username: None,
        when: None,
        webhook: None,
        portal_url: None,
        service: None,
        changes_url: None,
        properties: serde_json::Value::Null.into(),
    }
}

fn service(folder: &str, name: &str, kind: &str, op: &str) -> Event {
    let svc = if folder.is_empty() {
        format!("{name}.{kind}")
    } else {
        format!("{folder}/{name}.{kind}")
    };
    Event {
        origin: EventOrigin::Service,
        uri: format!("/services/{svc}/{op}"),
        source: kind.into(),
        id: name.into(),
        operation: op.into(),
        service: Some(svc),
        ..portal("item", "x", "y")
    }
}

fn generic() -> Event {
    Event {
        origin: EventOrigin::Generic,
        uri: "/".into(),
        source: String::new(),
        id: String::new(),
        operation: String::new(),
        ..portal("item", "x", "y")
    }
}

fn portal_event() -> impl Strategy<Value = Event> {
    (prop::sample::select(SOURCES), id(), operation()).prop_map(|(s, i, o)| portal(s, &i, &o))
}

fn service_event() -> impl Strategy<Value = Event> {
    (
        prop_oneof![Just(String::new()), "[A-Za-z][A-Za-z0-9_]{0,8}"],
        "[A-Za-z][A-Za-z0-9_]{0,10}",
        prop::sample::select(vec!["FeatureServer", "GPServer", "MapServer"]),
        prop_oneof![
            prop::sample::select(vec![
                "FeaturesCreated",
                "FeaturesUpdated",
                "FeaturesDeleted",
                "FeaturesEdited",
                "AttachmentsCreated",
                "AttachmentsUpdated",
                "AttachmentsDeleted",
                "LayerSchemaChanged",
                "JobSucceeded",
                "JobFailed",
            ])
            .prop_map(String::from),
            "[A-Z][a-zA-Z]{0,12}",
        ],
    )
        .prop_map(|(f, n, k, o)| service(&f, &n, k, &o))
}

fn any_event() -> impl Strategy<Value = Event> {
    prop_oneof![4 => portal_event(), 4 => service_event(), 1 => Just(generic())]
}

fn pat(p: &str) -> Pattern {
    Pattern::parse(p).unwrap_or_else(|e| panic!("pattern {p:?} does not parse: {e}"))
}

fn wildcard() -> impl Strategy<Value = String> {
    prop_oneof![Just("*".to_string()), "<[a-zA-Z]{0,8}>"]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn source_pattern_matches_every_event_of_its_source(e in portal_event(), plural: bool, mask: u64) {
        let s = if plural { format!("{}s", e.source) } else { e.source.clone() };
        prop_assert!(pat(&format!("/{}", recase(&s, mask))).matches(&e), "{:?}", e);
        for other in SOURCES.iter().filter(|o| **o != e.source) {
            prop_assert!(!pat(&format!("/{}s", other)).matches(&e), "{:?}", e);
            prop_assert!(!pat(&format!("/{}", other)).matches(&e), "{:?}", e);
        }
    }

    #[test]
    fn second_segment_is_an_operation_or_an_id(
        e in portal_event(),
        x in prop_oneof![operation(), id(), Just(String::new())],
        pick in 0u8..3,
        mask: u64,
    ) {
        // Sometimes the event's own operation or id, in another case.
        let x = match pick {
            0 => recase(&e.operation, mask),
            1 => recase(&e.id, mask),
            _ => x,
        };
        prop_assume!(!x.is_empty());
        let want = x.eq_ignore_ascii_case(&e.operation) || x.eq_ignore_ascii_case(&e.id);
        prop_assert_eq!(pat(&format!("/{}s/{x}", e.source)).matches(&e), want, "/S/{}", x);
    }

    #[test]
    fn id_and_operation_must_both_match(
        e in portal_event(),
        i in prop_oneof![id(), Just(String::new())],
        o in operation(),
        own_id: bool,
        own_op: bool,
        mask: u64,
    ) {
        let i = if own_id || i.is_empty() { recase(&e.id, mask) } else { i };
        let o = if own_op { recase(&e.operation, mask.rotate_left(7)) } else { o };
        let want = i.eq_ignore_ascii_case(&e.id) && o.eq_ignore_ascii_case(&e.operation);
        prop_assert_eq!(pat(&format!("/{}/{i}/{o}", e.source)).matches(&e), want);
    }

    #[test]
    fn wildcards_match_any_segment(e in portal_event(), w1 in wildcard(), w2 in wildcard()) {
        prop_assert!(pat(&format!("/{}s/{w1}", e.source)).matches(&e), "{:?}", e);
        prop_assert!(pat(&format!("/{}s/{w1}/{w2}", e.source)).matches(&e), "{:?}", e);
        prop_assert!(pat(&format!("/{}s/{w1}/{}", e.source, e.operation)).matches(&e), "{:?}", e);
        prop_assert!(pat(&format!("/{}s/{}/{w2}", e.source, e.id)).matches(&e), "{:?}", e);
    }

    #[test]
    fn own_uri_as_a_pattern_matches_the_event(e in prop_oneof![portal_event(), service_event()]) {
        prop_assert!(pat(&e.uri).matches(&e), "{}", e.uri);
    }

    #[test]
    fn star_matches_everything(e in any_event()) {
        prop_assert!(pat("*").matches(&e));
    }

    #[test]
    fn change_types_and_service_paths_never_match_portal_events(
        e in portal_event(),
        t in prop_oneof![operation(), Just("FeaturesEdited".to_string())],
        path in "(/[A-Za-z0-9.<>*]{1,10}){0,3}",
    ) {
        // Even a change type spelled like the Portal event's own operation.
        prop_assert!(!pat(&t).matches(&e));
        prop_assert!(!pat(&e.operation).matches(&e));
        prop_assert!(!pat(&format!("/services{}", path)).matches(&e), "{:?}", e);
    }

    #[test]
    fn portal_triggers_never_match_service_or_generic_events(
        e in prop_oneof![service_event(), Just(generic())],
        s in prop::sample::select(SOURCES),
        w in wildcard(),
    ) {
        prop_assert!(!pat(&format!("/{}s", s)).matches(&e), "{:?}", e);
        prop_assert!(!pat(&format!("/{}s/{}", s, w)).matches(&e), "{:?}", e);
        prop_assert!(!pat(&format!("/{}s/{}/{}", s, w, w)).matches(&e), "{:?}", e);
    }

    #[test]
    fn edited_stands_for_created_updated_deleted(
        stem in prop_oneof![Just("Features".to_string()), Just("Attachments".to_string()), "[A-Z][a-z]{1,8}"],
        other in "[A-Z][a-z]{1,8}",
        suffix in prop::sample::select(vec!["Created", "Updated", "Deleted", "Edited"]),
        mask: u64,
        e in service_event(),
    ) {
        let pattern = pat(&recase(&format!("{stem}Edited"), mask));
        let with = |op: String| Event { uri: format!("/services/x.FeatureServer/{op}"), operation: op, ..e.clone() };
        prop_assert!(pattern.matches(&with(format!("{}{}", stem, suffix))), "{:?}", e);
        // Another stem, or the right stem with another verb, is not matched.
        if !other.eq_ignore_ascii_case(&stem) {
            prop_assert!(!pattern.matches(&with(format!("{}{}", other, suffix))), "{:?}", e);
        }
        prop_assert!(!pattern.matches(&with(format!("{}Moved", stem))), "{:?}", e);
        // A plain change type matches only itself (in any case).
        let plain = format!("{stem}{suffix}");
        prop_assert!(pat(&recase(&plain, mask)).matches(&with(plain.clone())));
        if suffix != "Edited" {
            prop_assert!(!pat(&plain).matches(&with(format!("{}Edited", stem))) || plain.eq_ignore_ascii_case(&format!("{}Edited", stem)), "{:?}", e);
        }
    }

    #[test]
    fn service_path_prefixes_match(e in service_event(), cut in 0usize..4) {
        // Every prefix of the event's URI (by whole segments) matches.
        let rest = e.uri.strip_prefix("/services/").unwrap();
        let segs: Vec<&str> = rest.split('/').collect();
        let n = cut.min(segs.len());
        let p = format!("/services/{}", segs[..n].join("/"));
        prop_assert!(pat(&p).matches(&e), "{}", p);
        let wrong = format!("/services/{}/zz-not-there", rest);
        prop_assert!(!pat(&wrong).matches(&e), "{}", wrong);
    }

    #[test]
    fn pattern_parse_never_panics(p in ".{0,40}", e in any_event()) {
        if let Ok(pattern) = Pattern::parse(&p) {
            let _ = pattern.matches(&e);
        }
    }
}

// ---------------------------------------------------------------- retry

fn policy(initial_ms: u64, max_ms: u64, max_age_ms: u64, max_attempts: u32) -> DeliveryPolicy {
    DeliveryPolicy {
        timeout: Duration::from_secs(10),
        max_attempts,
        initial_backoff: Duration::from_millis(initial_ms),
        max_backoff: Duration::from_millis(max_ms),
        max_age: Duration::from_millis(max_age_ms),
        concurrency: 1,
        rate_limit: None,
        proxy: None,
        ca_file: None,
        circuit: CircuitConfig::default(),
        deactivate_after: None,
    }
}

/// A policy the config would accept: initial <= max, attempts >= 1. Some
/// durations are absurdly long (a config may say "500000000years").
fn any_policy() -> impl Strategy<Value = DeliveryPolicy> {
    (
        prop_oneof![1u64..10_000, 0u64..=u64::MAX / 4],
        prop_oneof![1u64..7_200_000, 0u64..=u64::MAX / 2],
        prop_oneof![1u64..200_000_000, 0u64..=u64::MAX],
        1u32..40,
    )
        .prop_map(|(a, b, age, n)| policy(a.min(b), a.max(b), age, n))
}

/// The documented cap, computed independently in 128-bit arithmetic.
fn expected_cap(p: &DeliveryPolicy, n: u32) -> Duration {
    let exp = n.saturating_sub(1).min(32);
    let ms = p.initial_backoff.as_millis().saturating_mul(1u128 << exp);
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)).min(p.max_backoff)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn cap_doubles_monotonically_up_to_max_backoff(p in any_policy(), n in 0u32..200) {
        let a = backoff_cap(&p, n);
        let b = backoff_cap(&p, n + 1);
        prop_assert!(a <= b, "cap went down from {:?} to {:?} at attempt {}", a, b, n);
        prop_assert!(b <= p.max_backoff);
        prop_assert_eq!(a, expected_cap(&p, n));
        prop_assert_eq!(backoff_cap(&p, 1), p.initial_backoff.min(p.max_backoff));
    }

    #[test]
    fn jittered_delay_is_within_zero_and_the_cap(p in any_policy(), n in 0u32..200, jitter in any::<f64>()) {
        let cap = backoff_cap(&p, n);
        let d = backoff_delay(&p, n, jitter);
        prop_assert!(d <= cap, "delay {:?} over cap {:?} (jitter {})", d, cap, jitter);
        if jitter >= 1.0 {
            prop_assert_eq!(d, cap);
        }
        if jitter <= 0.0 {
            prop_assert_eq!(d, Duration::ZERO);
        }
    }

    #[test]
    fn next_state_never_schedules_past_max_age(
        p in any_policy(),
        attempts in 1u32..50,
        cycle in 0i64..=4_000_000_000_000,
        elapsed in prop_oneof![0i64..200_000_000, 0i64..=i64::MAX / 2],
        jitter in 0.0f64..=1.0,
        retry_after in prop::option::of(prop_oneof![0u64..100_000, any::<u64>()]),
    ) {
        let now = cycle.saturating_add(elapsed);
        let after = retry_after.map(Duration::from_millis);
        let got = next_state(&p, Verdict::Retry { after }, attempts, Millis(cycle), Millis(now), jitter);
        let deadline = cycle.saturating_add(ms(p.max_age));
        if attempts >= p.max_attempts {
            prop_assert_eq!(got, NextState::Dead, "alive at max_attempts");
            return Ok(());
        }
        let delay = match after {
            // Retry-After honoured exactly when within max_backoff, else capped.
            Some(a) if a <= p.max_backoff => a,
            Some(_) => p.max_backoff,
            None => backoff_delay(&p, attempts, jitter),
        };
        let want_at = now.saturating_add(ms(delay));
        match got {
            NextState::Retry { at } => {
                let at = at.get();
                prop_assert!(at <= deadline, "retry at {} past the deadline {}", at, deadline);
                prop_assert!(at >= now, "retry at {} before now {}", at, now);
                prop_assert_eq!(at, want_at);
                prop_assert!(at - now <= ms(p.max_backoff));
                if after.is_none() {
                    prop_assert!(at - now <= ms(backoff_cap(&p, attempts)));
                }
            }
            NextState::Dead => prop_assert!(want_at > deadline, "dead although {} <= {}", want_at, deadline),
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    #[test]
    fn full_delays_grow_with_attempts(p in any_policy(), n in 1u32..60) {
        // With the largest draw, consecutive retries are spaced non-decreasingly.
        let at = |k| next_state(&policy_forever(&p), Verdict::Retry { after: None }, k, Millis(0), Millis(0), 1.0);
        match (at(n), at(n + 1)) {
            (NextState::Retry { at: a }, NextState::Retry { at: b }) => prop_assert!(a <= b, "{} > {}", a, b),
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn delivered_and_permanent_are_final(p in any_policy(), attempts in 0u32..100, now in any::<i64>(), jitter in any::<f64>()) {
        prop_assert_eq!(next_state(&p, Verdict::Delivered, attempts, Millis(0), Millis(now), jitter), NextState::Delivered);
        prop_assert_eq!(next_state(&p, Verdict::Permanent, attempts, Millis(0), Millis(now), jitter), NextState::Dead);
    }

    #[test]
    fn retry_after_parses_seconds_and_never_panics(s in ".{0,40}", secs in any::<u64>()) {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let _ = parse_retry_after(&s, now);
        prop_assert_eq!(parse_retry_after(&secs.to_string(), now), Some(Duration::from_secs(secs)));
        prop_assert_eq!(parse_retry_after(&format!(" {secs} "), now), Some(Duration::from_secs(secs)));
    }
}

/// `p` with attempts and age that never run out, to look at spacing alone.
fn policy_forever(p: &DeliveryPolicy) -> DeliveryPolicy {
    DeliveryPolicy {
        max_attempts: u32::MAX,
        max_age: Duration::MAX,
        ..p.clone()
    }
}
