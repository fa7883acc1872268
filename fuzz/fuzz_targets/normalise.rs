//! The ArcGIS payload normaliser: `parse_json`, `take_body_secret`,
//! `normalise` (strict and generic) and `dedupe_key`, in the order ingress
//! calls them.
//!
//! Properties:
//! - nothing panics, whatever the bytes;
//! - after `take_body_secret`, the document has no `info.secret` and the
//!   secret string appears nowhere in its serialisation at that key;
//! - every event has a URI starting with '/'; Portal URIs are
//!   `/<source>s/<id>/<operation>` and service URIs start `/services/`;
//!   operation and (Portal) source are never empty;
//! - strict normalisation never yields generic events; generic normalisation
//!   succeeds for every object or array and agrees with strict when strict
//!   succeeds;
//! - events survive the JSON round trip the store makes;
//! - the dedupe key is 64 lowercase hex characters and a function of the
//!   events alone (for ArcGIS shapes) or of the body (for generic ones).
#![no_main]

use hookrelay::domain::event::{Event, EventOrigin};
use hookrelay::arcgis::payload::{
    dedupe_key, normalise, parse_json, take_body_secret, BodySecret,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn check_events(events: &[Event]) {
    assert!(!events.is_empty(), "Ok with no events");
    for e in events {
        assert!(e.uri.starts_with('/'), "uri {:?}", e.uri);
        match e.origin {
            EventOrigin::Portal => {
                assert!(!e.source.is_empty() && !e.operation.is_empty(), "{e:?}");
                assert_eq!(e.uri, format!("/{}s/{}/{}", e.source, e.id, e.operation));
                assert_eq!(e.source, e.source.trim().to_ascii_lowercase());
            }
            EventOrigin::Service => {
                assert!(e.uri.starts_with("/services/"), "uri {:?}", e.uri);
                assert!(!e.operation.is_empty(), "{e:?}");
                assert!(e.uri.ends_with(&format!("/{}", e.operation)), "{e:?}");
            }
            EventOrigin::Generic => assert_eq!(e.uri, "/"),
        }
    }
    let text = serde_json::to_string(events).expect("events serialise");
    let back: Vec<Event> = serde_json::from_str(&text).expect("events parse back");
    assert_eq!(back, events, "events change through the store's JSON");
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut doc) = parse_json(data) else {
        return;
    };
    let original = doc.clone();

    let secret = take_body_secret(&mut doc);
    assert!(
        doc.pointer("/info/secret").is_none(),
        "info.secret left in the document"
    );
    match (&secret, original.pointer("/info/secret")) {
        (BodySecret::Absent, None) => {}
        (BodySecret::Absent, Some(_)) => panic!("info.secret present but reported absent"),
        (BodySecret::Present(s), Some(Value::String(o))) => assert_eq!(s, o),
        (BodySecret::WrongType, Some(v)) => assert!(!v.is_string()),
        (s, o) => panic!("take_body_secret said {s:?} for {o:?}"),
    }
    if secret == BodySecret::Absent {
        assert_eq!(doc, original, "document changed without a secret");
    }

    let strict = normalise(&doc, false);
    let generic = normalise(&doc, true);
    if let Ok(ev) = &strict {
        check_events(ev);
        assert!(
            ev.iter().all(|e| e.origin != EventOrigin::Generic),
            "strict gave generic events"
        );
        assert_eq!(
            generic.as_ref().ok(),
            Some(ev),
            "generic disagrees with strict"
        );
        let key = dedupe_key(ev, data);
        assert_eq!(
            key,
            dedupe_key(ev, b"another body"),
            "ArcGIS dedupe key depends on the body"
        );
    }
    match &generic {
        Ok(ev) => {
            check_events(ev);
            let key = dedupe_key(ev, data);
            assert_eq!(key.len(), 64);
            assert!(
                key.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "{key}"
            );
            assert_eq!(key, dedupe_key(ev, data), "dedupe key is not deterministic");
        }
        Err(_) => assert!(
            !(doc.is_object() || doc.is_array()),
            "generic refused an object or array"
        ),
    }
});
