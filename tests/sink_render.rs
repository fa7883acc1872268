//! Snapshot tests: the body every sink kind renders for every ArcGIS
//! fixture. A change in wording or shape shows up as a snapshot diff to
//! review, not as a surprise in someone's channel.

use hookrelay::arcgis::payload::{extract_form, normalise, parse_json};
use hookrelay::config::{EmailSpec, RawSink, SinkSpec};
use hookrelay::sinks::email::Email;
use hookrelay::sinks::notebook::Notebook;
use hookrelay::sinks::power_automate::PowerAutomate;
use hookrelay::sinks::powerbi::PowerBi;
use hookrelay::sinks::slack::Slack;
use hookrelay::sinks::teams::Teams;
use hookrelay::sinks::HttpKind;
use hookrelay::store::Claimed;
use serde_json::Value;

const FIXTURES: [&str; 8] = [
    "portal-group-update.json",
    "portal-item-share.json",
    "portal-group-addusers.json",
    "portal-user-role.json",
    "server-feature-created.json",
    "server-gp-job.json",
    "online-hosted-layer.json",
    "online-hosted-layer.form",
];

/// A delivery of a fixture with every event matched and fixed ids and times.
fn claimed(name: &str) -> Claimed {
    let raw = std::fs::read(format!(
        "{}/tests/fixtures/arcgis/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let (json, content_type) = if name.ends_with(".form") {
        (
            extract_form(raw.trim_ascii_end()).unwrap().json,
            "application/x-www-form-urlencoded",
        )
    } else {
        (raw.clone(), "application/json")
    };
    let events = normalise(&parse_json(&json).unwrap(), false).unwrap();
    Claimed {
        id: "0193a0c0-0000-7000-8000-000000000001".into(),
        lease_token: "".into(),
        sink: "out".into(),
        attempts: 0,
        cycle_started_at: hookrelay::store::Millis(1_730_400_000_000),
        message_id: "0193a0c0-0000-7000-8000-000000000000".into(),
        source: if name.starts_with("portal") {
            "portal"
        } else {
            "server"
        }
        .into(),
        received_at: hookrelay::store::Millis(1_730_400_000_000),
        content_type: content_type.into(),
        body: raw,
        matched: (0..events.len()).collect(),
        events,
        defect: None,
        fetch: None,
        changes: None,
    }
}

fn sink(kind: &str, extra: &str) -> SinkSpec {
    sink_at("https://example.org/hook?key=k", kind, extra)
}

fn sink_at(url: &str, kind: &str, extra: &str) -> SinkSpec {
    let raw: RawSink = toml::from_str(&format!(
        "name = \"out\"\nkind = \"{kind}\"\nurl = \"{url}\"\n{extra}"
    ))
    .unwrap();
    SinkSpec::try_from(raw).unwrap()
}

/// The spec of one kind, by its variant.
macro_rules! spec {
    ($variant:ident, $kind:expr, $extra:expr) => {
        match sink($kind, $extra) {
            SinkSpec::$variant(s) => s,
            other => panic!("{other:?}"),
        }
    };
}

fn email_spec() -> EmailSpec {
    match sink_at(
        "smtp://mail.example.org",
        "email",
        "from = \"relay@example.org\"\nto = [\"gis@example.org\"]",
    ) {
        SinkSpec::Email(s) => s,
        other => panic!("{other:?}"),
    }
}

fn email() -> Email {
    let policy = SinkSpec::Email(email_spec()).policy(&Default::default());
    Email::new("sinks[0]", &email_spec(), &policy).unwrap()
}

fn body(kind: &dyn HttpKind, d: &Claimed) -> Value {
    serde_json::from_slice(&kind.render(d).unwrap().body).unwrap()
}

fn snap_name(kind: &str, fixture: &str) -> String {
    format!("{kind}__{}", fixture.replace('.', "_"))
}

#[test]
fn slack_bodies() {
    let k = Slack::new("sinks[0]", &spec!(Slack, "slack", "")).unwrap();
    for f in FIXTURES {
        insta::assert_json_snapshot!(snap_name("slack", f), body(&k, &claimed(f)));
    }
}

#[test]
fn teams_bodies() {
    let k = Teams::new("sinks[0]", &spec!(Teams, "teams", "")).unwrap();
    for f in FIXTURES {
        insta::assert_json_snapshot!(snap_name("teams", f), body(&k, &claimed(f)));
    }
}

#[test]
fn powerbi_push_rows() {
    let k = PowerBi::new("sinks[0]", &spec!(Powerbi, "powerbi", "")).unwrap();
    for f in FIXTURES {
        insta::assert_json_snapshot!(snap_name("powerbi", f), body(&k, &claimed(f)));
    }
}

#[test]
fn power_automate_bodies() {
    let k = PowerAutomate::new("sinks[0]", &spec!(PowerAutomate, "power-automate", "")).unwrap();
    for f in FIXTURES {
        insta::assert_json_snapshot!(snap_name("power_automate", f), body(&k, &claimed(f)));
    }
}

#[test]
fn notebook_requests() {
    let k = Notebook::new(
        "sinks[0]",
        &spec!(
            Notebook,
            "notebook",
            "secret = \"0123456789abcdef0123456789abcdef\""
        ),
    )
    .unwrap();
    for f in FIXTURES {
        let d = claimed(f);
        let out = k.render(&d).unwrap();
        assert_eq!(out.body, d.body, "the notebook gets the original bytes");
        let headers: Vec<String> = out
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        insta::assert_snapshot!(snap_name("notebook", f), headers.join("\n"));
    }
}

#[test]
fn email_messages() {
    let k = email();
    for f in FIXTURES {
        let r = k.render(&claimed(f)).unwrap();
        let text = format!(
            "Subject: {}\n\n----- text -----\n{}\n----- html -----\n{}",
            r.subject,
            r.text,
            r.html.unwrap_or_default()
        );
        insta::assert_snapshot!(snap_name("email", f), text);
    }
}

/// A delivery of a JSON payload given inline, every event matched.
fn claimed_json(json: serde_json::Value, source: &str) -> Claimed {
    let raw = serde_json::to_vec(&json).unwrap();
    let events = normalise(&json, false).unwrap();
    Claimed {
        id: "0193a0c0-0000-7000-8000-000000000009".into(),
        lease_token: "".into(),
        sink: "out".into(),
        attempts: 0,
        cycle_started_at: hookrelay::store::Millis(1_730_400_000_000),
        message_id: "0193a0c0-0000-7000-8000-000000000008".into(),
        source: source.into(),
        received_at: hookrelay::store::Millis(1_730_400_000_000),
        content_type: "application/json".into(),
        body: raw,
        matched: (0..events.len()).collect(),
        events,
        defect: None,
        fetch: None,
        changes: None,
    }
}

/// Links the relay renders itself (Slack, Teams, e-mail, a Power BI URL
/// column) are http(s) only, whatever the payload said.
#[test]
fn payload_links_that_are_not_http_are_never_rendered() {
    let portal = claimed_json(
        serde_json::json!({
            "info": {"webhookName": "w", "portalURL": "javascript:alert(document.cookie)//"},
            "events": [{"source": "item", "id": "abc", "operation": "share", "when": 1730385704000i64}],
        }),
        "portal",
    );
    let service = claimed_json(
        serde_json::json!({
            "serviceType": "FeatureServer", "serviceName": "Parcels",
            "changesUrl": "JavaScript:alert(1)",
            "events": ["FeaturesCreated"],
        }),
        "server",
    );
    let email = email();
    let kinds: Vec<(&str, Box<dyn HttpKind>)> = vec![
        (
            "slack",
            Box::new(Slack::new("sinks[0]", &spec!(Slack, "slack", "")).unwrap()),
        ),
        (
            "teams",
            Box::new(Teams::new("sinks[0]", &spec!(Teams, "teams", "")).unwrap()),
        ),
        (
            "powerbi",
            Box::new(PowerBi::new("sinks[0]", &spec!(Powerbi, "powerbi", "")).unwrap()),
        ),
    ];
    // power-automate, notebook and http forward the events or the body as
    // data, exactly as received: they render no links of their own.
    for d in [&portal, &service] {
        for (name, k) in &kinds {
            let out = String::from_utf8(k.render(d).unwrap().body).unwrap();
            assert!(
                !out.to_ascii_lowercase().contains("javascript:"),
                "{name}: {out}"
            );
        }
        let r = email.render(d).unwrap();
        for part in [r.text, r.html.unwrap_or_default(), r.subject] {
            assert!(
                !part.to_ascii_lowercase().contains("javascript:"),
                "email: {part}"
            );
        }
    }
}
