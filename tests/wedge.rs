//! No accepted message may wedge a queue, crash a worker or starve the
//! relay: one regression test per way a signed but hostile body (or a row
//! an older version stored) used to break that promise. Real HTTP, real
//! stores, both backends.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

both_stores!(
    nesting_is_refused_past_the_limit_and_readable_up_to_it,
    an_undecodable_row_dies_alone_and_its_batch_goes_on,
    far_future_times_are_refused_and_stored_ones_render,
    many_events_and_large_shared_properties_stay_bounded,
    slow_bodies_from_one_address_do_not_starve_another,
    a_body_that_never_starts_is_cut_off_early,
    a_wrong_portal_secret_header_is_refused_before_the_body,
    a_refusal_never_breaks_the_clients_next_request,
    a_paced_429_does_not_open_the_breaker,
);

/// A Portal payload whose one event's `properties.x` nests `levels`
/// arrays: the whole body then nests `levels + 4` deep.
fn portal_nested(levels: usize) -> Vec<u8> {
    let x = format!("{}{}", "[".repeat(levels), "]".repeat(levels));
    format!(
        r#"{{"info":{{"webhookName":"w","portalURL":"https://p.example/portal/"}},"events":[{{"source":"item","id":"a","operation":"update","properties":{{"x":{x}}}}}]}}"#
    )
    .into_bytes()
}

fn portal_item(id: &str, when: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "info": {"webhookName": "w", "portalURL": "https://p.example/portal/"},
        "events": [{"source": "item", "id": id, "operation": "update", "when": when}],
    }))
    .unwrap()
}

async fn nesting_is_refused_past_the_limit_and_readable_up_to_it(b: Backend) {
    let sink = TestSink::start().await;
    let app = spawn_app(b, &http_sink("all", &sink, "")).await;
    let limit = hookrelay::arcgis::payload::MAX_NESTING;
    let r = app.post_portal(&portal_nested(limit - 4)).await;
    assert_eq!(r.status(), 200, "exactly at the limit is accepted");
    let id = r.json::<Value>().await.unwrap()["message_id"]
        .as_str()
        .unwrap()
        .to_string();
    sink.wait_for(1, Duration::from_secs(10)).await;
    let m = app.admin_get(&format!("/api/v1/messages/{id}")).await;
    assert_eq!(m.status(), 200, "what was accepted reads back");
    let m: Value = m.json().await.unwrap();
    assert_eq!(m["events"].as_array().unwrap().len(), 1);
    assert!(m.get("events_error").is_none());
    for levels in [limit - 3, 124, 126] {
        let r = app.post_portal(&portal_nested(levels)).await;
        assert_eq!(r.status(), 400, "{levels} levels");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "invalid_payload");
        assert!(v["detail"].as_str().unwrap().contains("at most 64"), "{v}");
    }
    app.stop().await;
}

async fn an_undecodable_row_dies_alone_and_its_batch_goes_on(b: Backend) {
    let sink = TestSink::start().await;
    let opts = hookrelay::app::RelayOptions {
        dispatch: false,
        ..test_options()
    };
    let app = spawn_app_with(b, &http_sink("all", &sink, ""), opts).await;
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for i in 0..3 {
            ids.push(
                app.accept_portal(&portal_item(&format!("i{i}"), json!(1_730_000_000_000i64)))
                    .await,
            );
        }
        ids
    };
    // What an older relay stored for a body nested just under serde's
    // limit: valid JSON that no longer reads back at 128 levels.
    let deep = format!(
        r#"[{{"origin":"portal","uri":"/items/x/update","source":"item","id":"x","operation":"update","properties":{{"x":{}{}}}}}]"#,
        "[".repeat(130),
        "]".repeat(130)
    );
    exec_sql(
        &app.backend,
        &format!(
            "UPDATE messages SET events = '{deep}' WHERE id = '{}'",
            ids[1]
        ),
    )
    .await;
    let now = hookrelay::store::now_ms();
    let made = app.relay().dispatcher.run_once(now).await.unwrap();
    assert_eq!(made, 3, "one step handles all three");
    assert_eq!(sink.count(), 2, "its neighbours are sent");
    let dead = app.deliveries("status=dead").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["message_id"], ids[1].as_str());
    assert!(
        dead[0]["last_error"]
            .as_str()
            .unwrap()
            .starts_with("undecodable"),
        "{}",
        dead[0]
    );
    assert_eq!(app.deliveries("status=delivered").await.len(), 2);
    assert!(app.deliveries("status=in_flight").await.is_empty());
    let m = app.admin_get(&format!("/api/v1/messages/{}", ids[1])).await;
    assert_eq!(m.status(), 200, "the message is still shown");
    let m: Value = m.json().await.unwrap();
    assert!(
        m["events_error"].as_str().unwrap().contains("decode"),
        "{m}"
    );
    assert_eq!(m["deliveries"][0]["status"], "dead");
    app.stop().await;
}

async fn far_future_times_are_refused_and_stored_ones_render(b: Backend) {
    let sink = TestSink::start().await;
    let extra = format!(
        "{}\n[[sinks]]\nname = \"chat\"\nkind = \"slack\"\nurl = \"{}\"\n",
        http_sink("all", &sink, ""),
        sink.url()
    );
    let opts = hookrelay::app::RelayOptions {
        dispatch: false,
        ..test_options()
    };
    let app = spawn_app_with(b, &extra, opts).await;
    for when in [json!(253_402_300_800_000i64), json!(-5), json!(1e300)] {
        let r = app.post_portal(&portal_item("far", when.clone())).await;
        assert_eq!(r.status(), 400, "{when}");
        let v: Value = r.json().await.unwrap();
        assert!(
            v["detail"].as_str().unwrap().contains("events[0].when"),
            "{v}"
        );
    }
    // A row an older relay accepted with such a time still renders.
    let id = app
        .accept_portal(&portal_item("ok", json!(1_730_000_000_000i64)))
        .await;
    exec_sql(
        &app.backend,
        &format!(
            "UPDATE messages SET events = REPLACE(events, '1730000000000', '253402300800000') WHERE id = '{id}'"
        ),
    )
    .await;
    let made = app
        .relay()
        .dispatcher
        .run_once(hookrelay::store::now_ms())
        .await
        .unwrap();
    assert_eq!(made, 2);
    assert_eq!(app.deliveries("status=delivered").await.len(), 2);
    let slack = sink
        .received()
        .into_iter()
        .find(|r| r.body.starts_with(b"{\"text\""))
        .expect("the slack message was sent");
    assert!(String::from_utf8_lossy(&slack.body).contains("9999-12-31"));
    let page = app.admin_get(&format!("/api/v1/messages/{id}")).await;
    assert_eq!(page.status(), 200);
    app.stop().await;
}

/// A signed ArcGIS Server payload with `events` copies of one event type
/// and one property of `blob` bytes.
fn service_payload(events: usize, blob: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "serviceType": "FeatureServer",
        "serviceName": "Parcels",
        "changesUrl": "https://gis.example.org/server/rest/services/Parcels/FeatureServer/extractChanges",
        "blob": "x".repeat(blob),
        "events": vec!["FeaturesCreated"; events],
    }))
    .unwrap()
}

async fn post_signed(app: &TestApp, body: &[u8]) -> reqwest::Response {
    let sig = esri_signature(SERVER_KEY, body);
    app.post(
        "server",
        body.to_vec(),
        &[
            ("content-type", "application/json"),
            ("x-esrihook-signature", &sig),
        ],
    )
    .await
}

async fn many_events_and_large_shared_properties_stay_bounded(b: Backend) {
    let sink = TestSink::start().await;
    let text = config_text(&b.url, &http_sink("all", &sink, ""))
        .replace("max_body_bytes = 65536", "max_body_bytes = 262144");
    let app = spawn_app_text(b, &text, test_options()).await;
    // 2,000 events: over server.max_events.
    let r = post_signed(&app, &service_payload(2000, 50_000)).await;
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "payload_too_complex");
    assert!(v["detail"].as_str().unwrap().contains("max_events"), "{v}");
    // 900 events sharing one 50 KB property: stored once, not 900 times.
    let body = service_payload(900, 50_000);
    let r = post_signed(&app, &body).await;
    assert_eq!(r.status(), 200);
    let id = r.json::<Value>().await.unwrap()["message_id"]
        .as_str()
        .unwrap()
        .to_string();
    let stored = scalar(
        &app.backend,
        &format!("SELECT CAST(LENGTH(events) AS BIGINT) FROM messages WHERE id = '{id}'"),
    )
    .await;
    // Copied into each event, the property alone would take 45 MB.
    assert!(
        stored <= (body.len() * 4 + 64 * 1024) as i64,
        "events stored in {stored} bytes for a {} byte body",
        body.len()
    );
    let got = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(
        got[0].body.len(),
        body.len(),
        "the body is forwarded as sent"
    );
    let m: Value = app
        .admin_get(&format!("/api/v1/messages/{id}"))
        .await
        .json()
        .await
        .unwrap();
    // Written out per event the property would make a 45 MB answer: the
    // detail shows the events that fit in its bound and says so.
    let shown = m["events"].as_array().unwrap().len();
    assert!((100..900).contains(&shown), "{shown} events shown");
    assert_eq!(
        m["events"][0]["properties"]["blob"].as_str().unwrap().len(),
        50_000
    );
    assert!(
        m["events_error"].as_str().unwrap().contains("900 events"),
        "{}",
        m["events_error"]
    );
    // A Portal webhook name copied into 900 events: over the expansion bound.
    let big_name = serde_json::to_vec(&json!({
        "info": {"webhookName": "n".repeat(50_000)},
        "events": (0..900).map(|i| json!({"source": "item", "id": format!("i{i}"), "operation": "update"})).collect::<Vec<_>>(),
    }))
    .unwrap();
    let r = app.post_portal(&big_name).await;
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["detail"].as_str().unwrap().contains("max_expansion"),
        "{v}"
    );
    app.stop().await;
}

/// A connection from `from` that sends a request's headers and the first
/// byte of a body that never finishes.
async fn dribbling(addr: std::net::SocketAddr, from: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    s.write_all(
        b"POST /hooks/portal HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nsecret: portal-secret-1\r\ncontent-length: 100000\r\n\r\n{",
    )
    .await
    .unwrap();
    s
}

async fn slow_bodies_from_one_address_do_not_starve_another(b: Backend) {
    let sink = TestSink::start().await;
    let text = config_text(&b.url, &http_sink("all", &sink, ""))
        .replace("body_read_timeout = \"1s\"", "body_read_timeout = \"60s\"")
        .replace(
            "max_body_bytes = 65536",
            "max_body_bytes = 262144\nmax_concurrency = 256\nmin_body_rate = 1",
        );
    let app = spawn_app_text(b, &text, test_options()).await;
    let addr = app.relay().ingress_addr;
    let mut slow = Vec::new();
    for _ in 0..1000 {
        slow.push(dribbling(addr, "127.0.0.2").await);
    }
    // Let the relay read every one of those heads.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..20 {
        let r = app
            .post_portal(&portal_item(&format!("v{i}"), json!(1_730_000_000_000i64)))
            .await;
        assert_eq!(r.status(), 200, "webhook {i} from another address");
    }
    // The slow client got its share and was told so, not a work slot each
    // (each refusal first drops what it can of the body, for up to 1 s).
    tokio::time::sleep(hookrelay::server::DRAIN_TIME + Duration::from_millis(300)).await;
    let mut refused = 0;
    for s in slow.iter_mut().take(200) {
        let mut buf = [0u8; 64];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(20), s.read(&mut buf)).await {
            if buf[..n].starts_with(b"HTTP/1.1 429") {
                refused += 1;
            }
        }
    }
    assert!(
        refused > 100,
        "{refused} of 200 slow requests were refused with 429"
    );
    sink.wait_for(20, Duration::from_secs(10)).await;
    drop(slow);
    app.stop().await;
}

async fn a_body_that_never_starts_is_cut_off_early(b: Backend) {
    let text = config_text(&b.url, "")
        .replace("body_read_timeout = \"1s\"", "body_read_timeout = \"30s\"")
        .replace(
            "max_body_bytes = 65536",
            "max_body_bytes = 65536\nbody_start_timeout = \"300ms\"",
        );
    let app = spawn_app_text(b, &text, test_options()).await;
    let mut s = tokio::net::TcpStream::connect(app.relay().ingress_addr)
        .await
        .unwrap();
    let t0 = Instant::now();
    s.write_all(b"POST /hooks/portal HTTP/1.1\r\nhost: x\r\nsecret: portal-secret-1\r\ncontent-length: 50\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("answered long before the 30 s body timeout")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("not started"), "{answer}");
    assert!(t0.elapsed() < Duration::from_secs(3));
    app.stop().await;
}

async fn a_wrong_portal_secret_header_is_refused_before_the_body(b: Backend) {
    let text = config_text(&b.url, "")
        .replace("body_read_timeout = \"1s\"", "body_read_timeout = \"30s\"");
    let app = spawn_app_text(b, &text, test_options()).await;
    let mut s = tokio::net::TcpStream::connect(app.relay().ingress_addr)
        .await
        .unwrap();
    s.write_all(
        b"POST /hooks/portal HTTP/1.1\r\nhost: x\r\nsecret: wrong\r\ncontent-length: 5000\r\n\r\n{",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf))
        .await
        .expect("answered without waiting for the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 401"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    app.stop().await;
}

async fn a_refusal_never_breaks_the_clients_next_request(b: Backend) {
    let app = spawn_app(b, "").await;
    // One kept-alive client, as ArcGIS has: every early refusal is
    // followed at once by another request that must not fail.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let hooks = |s: &str| format!("{}/hooks/{s}", app.ingress);
    for _ in 0..30 {
        let r = client
            .post(hooks("portal"))
            .header("secret", PORTAL_SECRET)
            .header("content-type", "application/json")
            .body(vec![b' '; 70_000])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413);
        assert_eq!(r.headers()["connection"], "close");
        let r = client
            .post(hooks("nowhere"))
            .body(vec![b'{'; 2000])
            .send()
            .await
            .expect("the request after a 413 is answered");
        assert_eq!(r.status(), 404);
        let r = client
            .post(hooks("portal"))
            .header("content-type", "image/png")
            .body(vec![0u8; 5000])
            .send()
            .await
            .expect("the request after a 404 is answered");
        assert_eq!(r.status(), 415);
    }
    // An answer after the whole body was read keeps the connection.
    let r = client
        .post(hooks("portal"))
        .header("secret", PORTAL_SECRET)
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("connection").is_none());
    app.stop().await;
}

async fn a_paced_429_does_not_open_the_breaker(b: Backend) {
    let sink = TestSink::start().await;
    sink.script((0..5).map(|_| Reply::RetryAfter(429, 0)));
    let extra = http_sink(
        "out",
        &sink,
        "concurrency = 1\nmax_attempts = 10\ninitial_backoff = \"10ms\"\nmax_backoff = \"20ms\"\n\
         circuit = { failures = 3, probe_interval = \"60s\" }",
    );
    let app = spawn_app(b, &extra).await;
    app.accept_portal(&fixture("portal-item-share.json")).await;
    // Five 429s with Retry-After: 0, then 200: delivered at once. Had the
    // 429s counted, the breaker would hold it for the 60 s probe interval.
    eventually(Duration::from_secs(10), "delivered", || async {
        app.deliveries("status=delivered").await.len() == 1
    })
    .await;
    assert_eq!(sink.count(), 6);
    let v: Value = app.admin_get("/api/v1/sinks").await.json().await.unwrap();
    assert_eq!(v["items"][0]["state"], "active");
    app.stop().await;
}
