//! What ingress accepts, every reader reads and every sink renders:
//! `parse_json` → `normalise_within` (strict and generic, within the limits
//! ingress applies to a body of this size) → `encode_events` →
//! `check_encoded` → `decode_events` → a [`Claimed`] delivery rendered by
//! every sink kind (http original, events and signed, Slack, Teams,
//! Power BI push and REST, Power Automate, Notebook, e-mail).
//!
//! Properties:
//! - nothing panics, whatever the bytes;
//! - what was encoded decodes, and equals the events that were routed;
//! - a render either fails with a reason (a dead letter) or gives what the
//!   service takes: Slack JSON with a non-empty `text`, at most 50 blocks
//!   and `slack::MAX_BYTES`; a Teams card within `teams::MAX_BYTES`;
//!   Power BI rows of exactly `COLUMNS`, text of at most 4,000 characters
//!   and an RFC 3339 `when`; Power Automate and http events JSON with one
//!   event per matched one (refused only over `MAX_EVENTS_BODY`); the
//!   original bytes for http and Notebook; an e-mail that formats;
//! - links rendered for people are http(s) only: Power BI's `portal_url`,
//!   every Teams `Action.OpenUrl`, every `href` in the e-mail's HTML.
#![no_main]

use std::sync::OnceLock;

use hookrelay::config::{RawSink, SinkSpec};
use hookrelay::domain::event::{decode_events, encode_events, is_http_url, Event, EventOrigin};
use hookrelay::ingress::payload::{
    check_encoded, normalise_within, parse_json, take_body_secret, Limits,
};
use hookrelay::sinks::email::Email;
use hookrelay::sinks::http::{Http, MAX_EVENTS_BODY};
use hookrelay::sinks::notebook::Notebook;
use hookrelay::sinks::power_automate::PowerAutomate;
use hookrelay::sinks::powerbi::{PowerBi, COLUMNS, MAX_VALUE_CHARS};
use hookrelay::sinks::slack::{self, Slack};
use hookrelay::sinks::teams::{self, Teams};
use hookrelay::sinks::{HttpKind, RenderError};
use hookrelay::store::{Claimed, Millis};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Ingress's defaults: `server.max_events` and `server.max_expansion`.
const MAX_EVENTS: usize = 1000;
const MAX_EXPANSION: usize = 4;

struct Kinds {
    slack: Slack,
    teams: Teams,
    powerbi_push: PowerBi,
    powerbi_rest: PowerBi,
    flow: PowerAutomate,
    notebook: Notebook,
    http_original: Http,
    http_events: Http,
    email: Email,
}

fn sink(kind: &str, url: &str, extra: &str) -> SinkSpec {
    let raw: RawSink = toml::from_str(&format!(
        "name = \"out\"\nkind = \"{kind}\"\nurl = \"{url}\"\n{extra}"
    ))
    .expect("fuzz sink config");
    SinkSpec::try_from(raw).expect("fuzz sink spec")
}

/// The spec of one kind, by its variant.
macro_rules! spec {
    ($variant:ident, $kind:expr, $url:expr, $extra:expr) => {
        match sink($kind, $url, $extra) {
            SinkSpec::$variant(s) => s,
            other => panic!("{other:?}"),
        }
    };
}

/// Compiled once: every kind test-renders its templates when built.
fn kinds() -> &'static Kinds {
    static KINDS: OnceLock<Kinds> = OnceLock::new();
    KINDS.get_or_init(|| {
        let url = "https://example.org/hook?key=k&sig=s";
        let email = sink(
            "email",
            "smtp://mail.example.org",
            "from = \"relay@example.org\"\nto = [\"gis@example.org\"]",
        );
        let policy = email.policy(&Default::default());
        let SinkSpec::Email(email) = email else {
            panic!("an email spec");
        };
        Kinds {
            slack: Slack::new("sinks[0]", &spec!(Slack, "slack", url, "")).unwrap(),
            teams: Teams::new("sinks[0]", &spec!(Teams, "teams", url, "")).unwrap(),
            powerbi_push: PowerBi::new("sinks[0]", &spec!(Powerbi, "powerbi", url, "")).unwrap(),
            powerbi_rest: PowerBi::new(
                "sinks[0]",
                &spec!(Powerbi, "powerbi", url, "token = \"t\""),
            )
            .unwrap(),
            flow: PowerAutomate::new("sinks[0]", &spec!(PowerAutomate, "power-automate", url, ""))
                .unwrap(),
            notebook: Notebook::new(
                "sinks[0]",
                &spec!(
                    Notebook,
                    "notebook",
                    url,
                    "secret = \"0123456789abcdef0123456789abcdef\""
                ),
            )
            .unwrap(),
            http_original: Http::new("sinks[0]", &spec!(Http, "http", url, "")).unwrap(),
            http_events: Http::new(
                "sinks[0]",
                &spec!(
                    Http,
                    "http",
                    url,
                    "format = \"events\"\nsign = \"github\"\nsecret = \"s3cret\""
                ),
            )
            .unwrap(),
            email: Email::new("sinks[0]", &email, &policy).unwrap(),
        }
    })
}

fn claimed(body: &[u8], events: Vec<Event>, matched: Vec<usize>) -> Claimed {
    let source = match events.first().map(|e| e.origin) {
        Some(EventOrigin::Portal) => "portal",
        Some(EventOrigin::Service) => "server",
        _ => "github",
    };
    Claimed {
        id: "0193a0c0-0000-7000-8000-000000000001".into(),
        lease_token: "".into(),
        sink: "out".into(),
        attempts: 0,
        cycle_started_at: Millis(1_730_400_000_000),
        message_id: "0193a0c0-0000-7000-8000-000000000000".into(),
        source: source.into(),
        received_at: Millis(1_730_400_000_000),
        content_type: "application/json".into(),
        body: body.to_vec(),
        matched,
        events,
        defect: None,
        fetch: None,
        changes: None,
    }
}

fn json(kind: &str, body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("{kind} rendered invalid JSON: {e}"))
}

/// Every string under a key named `key`.
fn strings_at<'a>(v: &'a Value, key: &str, out: &mut Vec<&'a str>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| strings_at(x, key, out)),
        Value::Object(m) => {
            for (k, x) in m {
                match x {
                    Value::String(s) if k == key => out.push(s),
                    _ => strings_at(x, key, out),
                }
            }
        }
        _ => {}
    }
}

/// `2024-10-31T14:43:20.000Z`: what Power BI's DateTime column takes.
fn is_rfc3339_millis(s: &str) -> bool {
    s.len() == 24
        && s.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b'T',
            13 | 16 => b == b':',
            19 => b == b'.',
            23 => b == b'Z',
            _ => b.is_ascii_digit(),
        })
}

/// What minijinja's HTML escaping writes, read back.
fn unescape_html(s: &str) -> String {
    s.replace("&#x2f;", "/")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn check_powerbi(kind: &PowerBi, d: &Claimed, rest: bool) {
    let Ok(out) = kind.render(d) else {
        return; // over 10,000 rows
    };
    let v = json("powerbi", &out.body);
    let rows = if rest { &v["rows"] } else { &v };
    let rows = rows.as_array().expect("rows are an array");
    assert_eq!(rows.len(), d.matched.len(), "one row per matched event");
    for r in rows {
        let r = r.as_object().expect("a row is an object");
        let mut keys: Vec<&str> = r.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want = COLUMNS.to_vec();
        want.sort_unstable();
        assert_eq!(keys, want);
        for (k, x) in r {
            let s = x.as_str().unwrap_or_else(|| panic!("{k} is not text"));
            assert!(
                s.chars().count() <= MAX_VALUE_CHARS,
                "{k}: {} chars",
                s.len()
            );
        }
        let when = r["when"].as_str().unwrap();
        assert!(is_rfc3339_millis(when), "when {when:?}");
        let portal = r["portal_url"].as_str().unwrap();
        assert!(
            portal.is_empty() || is_http_url(portal),
            "portal_url {portal:?}"
        );
    }
}

fn check_events_json(kind: &str, out: Result<Vec<u8>, RenderError>, d: &Claimed) {
    match out {
        Ok(body) => {
            let v = json(kind, &body);
            assert_eq!(
                v["events"].as_array().map(Vec::len),
                Some(d.matched.len()),
                "{kind}: one event per matched one"
            );
        }
        Err(e) => assert!(
            e.to_string().contains(&MAX_EVENTS_BODY.to_string()),
            "{kind} refused to render: {e}"
        ),
    }
}

fn render_all(d: &Claimed) {
    let k = kinds();

    if let Ok(out) = k.slack.render(d) {
        assert!(
            out.body.len() <= slack::MAX_BYTES,
            "{} bytes",
            out.body.len()
        );
        let v = json("slack", &out.body);
        assert!(
            v["text"].as_str().is_some_and(|t| !t.trim().is_empty()),
            "slack text {:?}",
            v["text"]
        );
        if let Some(b) = v.get("blocks") {
            assert!(b.as_array().is_some_and(|b| b.len() <= slack::MAX_BLOCKS));
        }
    }

    if let Ok(out) = k.teams.render(d) {
        assert!(
            out.body.len() <= teams::MAX_BYTES,
            "{} bytes",
            out.body.len()
        );
        let v = json("teams", &out.body);
        let mut urls = Vec::new();
        strings_at(&v, "url", &mut urls);
        for u in urls {
            assert!(is_http_url(u), "teams link {u:?}");
        }
    }

    check_powerbi(&k.powerbi_push, d, false);
    check_powerbi(&k.powerbi_rest, d, true);

    check_events_json("power-automate", k.flow.render(d).map(|o| o.body), d);
    check_events_json("http events", k.http_events.render(d).map(|o| o.body), d);

    let out = k.http_original.render(d).expect("http original renders");
    assert_eq!(out.body, d.body, "http sends the original bytes");
    let out = k.notebook.render(d).expect("notebook renders");
    assert_eq!(out.body, d.body, "notebook sends the original bytes");

    if let Ok(r) = k.email.render(d) {
        assert!(
            !r.subject.contains('\n') && !r.subject.contains('\r'),
            "{:?}",
            r.subject
        );
        if let Some(html) = &r.html {
            for part in html.split("href=\"").skip(1) {
                let url = part.split('"').next().unwrap_or("");
                assert!(is_http_url(&unescape_html(url)), "e-mail link {url:?}");
            }
        }
    }
    if let Ok(m) = k.email.message(d) {
        let _ = m.formatted();
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = parse_json(data) else {
        return;
    };
    let limits = Limits::for_body(data.len(), MAX_EVENTS, MAX_EXPANSION);
    for generic_ok in [false, true] {
        // A Portal source takes the body secret out first; an hmac
        // source normalises the document as it came.
        let mut doc = parsed.clone();
        if !generic_ok {
            take_body_secret(&mut doc);
        }
        let Ok(events) = normalise_within(&doc, generic_ok, limits) else {
            continue;
        };
        let encoded = encode_events(&events);
        if check_encoded(&encoded, limits).is_err() {
            continue;
        }
        let decoded = decode_events(&encoded)
            .unwrap_or_else(|e| panic!("accepted events do not read back: {e}"));
        assert_eq!(decoded, events, "events change through the store");

        let all: Vec<usize> = (0..decoded.len()).collect();
        render_all(&claimed(data, decoded.clone(), all));
        // A sink that matched only some events (every other one).
        if decoded.len() > 1 {
            let some: Vec<usize> = (0..decoded.len()).step_by(2).collect();
            render_all(&claimed(data, decoded, some));
        }
    }
});
