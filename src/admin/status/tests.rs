//! Every template renders with sample data, and text from outside (sink
//! names, error texts, answers, payload fields) is escaped in every
//! template that shows it.

use serde::Serialize;
use serde_json::json;

use super::local_target;
use super::view::{self, NoticeView};
use crate::admin::html::{render_string, TEMPLATES};
use crate::admin::summary::SinkSummary;
use crate::store::{AttemptRecord, DeliveryDetail, DeliveryRow, MessageDetail, Millis, Status};

/// Markup and a quote, as a sink, a payload or an error text could carry.
const HOSTILE: &str = "<script>alert(\"x\")</script>";
/// [`HOSTILE`] as the page must show it.
const ESCAPED: &str = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;";

const NOW: Millis = Millis(1_764_000_000_000);
const CSRF: &str = "csrf-token_1";

fn sink(name: &str, state: &str, text: &str) -> SinkSummary {
    SinkSummary {
        name: name.to_string(),
        kind: text.to_string(),
        state: state.to_string(),
        pending: 3,
        in_flight: 2,
        overdue_in_flight: u64::from(state == "circuit_open"),
        dead: 2,
        delivered: 10,
        delivered_last_hour: 4,
        oldest_pending_at: Some("2025-11-24T16:00:00.000Z".into()),
        last_success_at: Some("2025-11-24T16:00:00.000Z".into()),
        last_error: Some(text.to_string()),
        last_success_ms: Some(NOW.get() - 90_000),
    }
}

fn row(id: &str, sink: &str, status: Status, text: &str) -> DeliveryRow {
    DeliveryRow {
        id: id.into(),
        message_id: format!("m-{id}").into(),
        sink: sink.into(),
        status,
        attempts: 2,
        last_status: Some(500),
        last_error: Some(text.to_string()),
        // 2025-11-24T16:05:00Z, 15:00 and 16:00.
        next_attempt_at: Some(Millis(1_764_000_300_000)),
        created_at: Millis(1_763_996_400_000),
        updated_at: Millis(1_764_000_000_000),
    }
}

fn message(text: &str) -> MessageDetail {
    let event = |origin: &str, link: &str| {
        serde_json::from_value(json!({
            "origin": origin,
            "uri": format!("/items/{text}/share"),
            "source": "item",
            "id": text,
            "operation": text,
            "username": text,
            "when": NOW.get(),
            "portal_url": link,
            "changes_url": link,
        }))
        .unwrap()
    };
    let attempt = |n: u32, response: Option<&str>| AttemptRecord {
        attempt: n,
        started_at: NOW,
        duration_ms: 12,
        status: Some(500),
        error: Some(text.to_string()),
        response: response.map(str::to_string),
    };
    MessageDetail {
        id: text.into(),
        source: text.into(),
        received_at: Millis(1_763_996_400_000),
        content_type: text.to_string(),
        headers: json!({ "user-agent": text }),
        body_bytes: 99,
        body: Some(format!("{{\"x\": \"{text}\"}}")),
        events: vec![
            // A link that is http(s) but tries to break out of the href.
            event("service", &format!("https://gis.example/\"{text}")),
            event("service", "javascript:alert(1)"),
        ],
        events_error: None,
        deliveries: vec![
            DeliveryDetail {
                delivery: row("d1", text, Status::Dead, text),
                attempts_log: vec![attempt(1, Some(text)), attempt(2, None)],
            },
            DeliveryDetail {
                delivery: row("d2", "archive", Status::InFlight, text),
                attempts_log: vec![],
            },
        ],
    }
}

fn notice(kind: &'static str, sink: &str, id: Option<&str>, n: Option<u64>) -> NoticeView {
    NoticeView {
        kind,
        tone: "ok",
        sink: sink.to_string(),
        id: id.map(str::to_string),
        n,
    }
}

fn render(name: &str, ctx: &impl Serialize) -> String {
    render_string(name, ctx).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Every page with `text` wherever text from outside goes; (template, html).
fn pages(text: &str) -> Vec<(&'static str, String)> {
    let sinks = [
        sink(text, "active", text),
        sink("paused-one", "paused", text),
        sink("broken", "circuit_open", text),
    ];
    let dead = [row(text, text, Status::Dead, text)];
    let overview = view::overview(
        CSRF,
        Some(notice("paused", text, None, None)),
        &sinks,
        &dead,
        NOW,
    );
    let page = view::message(CSRF, "/messages/m1", &message(text));
    vec![
        ("overview.html", render("overview.html", &overview)),
        ("sinks.html", render("sinks.html", &overview)),
        ("deliveries.html", render("deliveries.html", &overview)),
        ("notice.html", render("notice.html", &overview)),
        ("header.html", render("header.html", &overview)),
        ("message.html", render("message.html", &page)),
        (
            "login.html",
            render(
                "login.html",
                &view::Login {
                    error: Some(text),
                    next: text,
                    configured: true,
                },
            ),
        ),
        (
            "refused.html",
            render(
                "refused.html",
                &view::Refused {
                    title: text,
                    heading: text,
                    why: text,
                },
            ),
        ),
        (
            "not_found.html",
            render(
                "not_found.html",
                &view::NotFound {
                    csrf: CSRF,
                    id: text,
                },
            ),
        ),
        (
            "store_down.html",
            render("store_down.html", &view::StoreDown { csrf: Some(CSRF) }),
        ),
    ]
}

#[test]
fn every_template_renders_with_sample_data() {
    let mut covered: Vec<&str> = pages("sample").iter().map(|(n, _)| *n).collect();
    // The frame and the macros are in every page.
    covered.extend(["base.html", "macros.html"]);
    for (name, _) in TEMPLATES {
        assert!(covered.contains(name), "{name} is not rendered by a test");
    }
    let html = render("overview.html", &view::overview(CSRF, None, &[], &[], NOW));
    assert!(html.contains("No sinks are configured."));
    assert!(html.contains("No dead deliveries."));
    assert!(!html.contains("class=\"notice"));
    assert!(html.starts_with("<!doctype html>\n") && html.ends_with("</html>\n"));
    let html = render(
        "login.html",
        &view::Login {
            error: None,
            next: "/",
            configured: false,
        },
    );
    assert!(html.contains("no <code>[admin] token</code> configured"));
    assert!(!html.contains("name=\"token\""));
    let html = render("store_down.html", &view::StoreDown { csrf: None });
    assert!(html.contains("so the login cannot be checked"));
    assert!(!html.contains("Log out"), "no bar without a session");
}

#[test]
fn notices_say_what_happened() {
    let id = "0190f3a2-7b1c-7d3e-9f00-1234567890ab";
    for (n, expect) in [
        (
            notice("retried", "out", Some(id), None),
            format!("Delivery {id} is queued again."),
        ),
        (
            notice("retried", "out", None, None),
            "The delivery is queued again.".into(),
        ),
        (
            notice("replayed", "out", None, Some(1)),
            "Requeued 1 dead delivery of out.".into(),
        ),
        (
            notice("replayed", "out", None, Some(3)),
            "Requeued 3 dead deliveries of out.".into(),
        ),
        (
            notice("replayed", "out", None, None),
            "Requeued the dead deliveries of out.".into(),
        ),
        (
            notice("paused", "out", None, None),
            "out is paused: it keeps storing and sends nothing.".into(),
        ),
        (
            notice("resumed", "the sink", None, None),
            "the sink is sending again.".into(),
        ),
        (
            notice("gone", "x", None, None),
            "That no longer exists".into(),
        ),
        (
            notice("busy", "x", None, None),
            "being attempted right now".into(),
        ),
        (
            notice("invalid", "x", None, None),
            "That request was not valid.".into(),
        ),
        (
            notice("store", "x", None, None),
            "The store did not answer; try again.".into(),
        ),
    ] {
        let html = render("notice.html", &json!({ "notice": n }));
        assert!(html.contains(&expect), "{expect}: {html}");
        assert!(
            html.contains("class=\"notice ok\" role=\"status\""),
            "{html}"
        );
    }
    assert_eq!(render("notice.html", &json!({ "notice": null })), "");
}

#[test]
fn text_from_outside_is_escaped_in_every_template_that_shows_it() {
    for (name, html) in pages(HOSTILE) {
        assert!(!html.contains("<script>"), "{name}: raw markup\n{html}");
        assert!(
            !html.contains("alert(\"x\")"),
            "{name}: a raw quote\n{html}"
        );
        // The bar and the store page show no outside text.
        if !matches!(name, "header.html" | "store_down.html") {
            assert!(
                html.contains(ESCAPED),
                "{name}: the text is not shown\n{html}"
            );
        }
    }
    let pages = pages(HOSTILE);
    let get = |n: &str| &pages.iter().find(|(name, _)| *name == n).unwrap().1;

    // In attributes too: the sink's row, its action paths and the replay question.
    let sinks = get("sinks.html");
    assert!(sinks.contains(&format!("data-sink=\"{ESCAPED}\"")));
    assert!(sinks.contains(&format!("title=\"{ESCAPED}\"")));
    assert!(
        sinks.contains("action=\"/ui/sinks/%3Cscript%3Ealert%28%22x%22%29%3C%2Fscript%3E/pause\"")
    );
    assert!(sinks.contains(&format!(
        "data-confirm=\"Requeue all 2 dead deliveries of {ESCAPED} with fresh attempts?\""
    )));
    assert!(get("notice.html").contains(&format!("{ESCAPED} is paused")));
    let dead = get("deliveries.html");
    assert!(dead.contains(&format!("data-delivery=\"{ESCAPED}\"")));
    assert!(dead.contains("href=\"/messages/m-%3Cscript%3E"));
    assert!(get("login.html").contains(&format!("name=\"next\" value=\"{ESCAPED}\"")));

    // The message page: fields, attempts, answers, headers, body, links.
    let m = get("message.html");
    assert!(m.contains(&format!("<code>/items/{ESCAPED}/share</code>")));
    assert!(m.contains(&format!("data-sink=\"{ESCAPED}\"")));
    assert!(m.contains(&format!("<td class=\"error-text\">{ESCAPED}</td>")));
    assert!(
        m.contains(&format!("<pre>{ESCAPED}</pre>")),
        "the sink's answer"
    );
    assert!(m.contains(&format!("&quot;user-agent&quot;: &quot;{}", &ESCAPED[..10])));
    assert!(m.contains(&format!(
        "<a href=\"https://gis.example/&quot;{ESCAPED}\" rel=\"noreferrer noopener\""
    )));
    assert_eq!(
        m.matches("rel=\"noreferrer").count(),
        1,
        "the javascript: link is dropped"
    );
    assert!(!m.to_lowercase().contains("javascript:"));
    // Retry is offered for the dead delivery, not the one in flight.
    assert_eq!(m.matches("/retry\"").count(), 1);
    assert_eq!(
        m.matches("<tr><td class=\"num\">").count(),
        2,
        "two attempts"
    );
    assert!(m.contains("No attempt yet."));
}

#[test]
fn only_local_targets() {
    assert_eq!(local_target(None), "/");
    assert_eq!(local_target(Some("/")), "/");
    assert_eq!(
        local_target(Some("/messages/0190-ab_c")),
        "/messages/0190-ab_c"
    );
    for bad in [
        "//evil.example",
        "https://evil.example",
        "/messages/",
        "/messages/a/../../x",
        "/api/v1/replay",
        "/messages/a?b",
    ] {
        assert_eq!(local_target(Some(bad)), "/", "{bad}");
    }
}

#[test]
fn ids_have_the_store_form() {
    assert!(view::is_id("0190f3a2-7b1c-7d3e-9f00-1234567890ab"));
    assert!(!view::is_id("0190f3a2-7b1c-7d3e-9f00-1234567890ab-x"));
    assert!(!view::is_id("call 0800 now"));
}
