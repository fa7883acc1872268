//! The admin JSON API end to end, on both stores: the token on every
//! route, health, sinks, message detail, the delivery list with its filters
//! and cursor, retry, replay, pause/resume across a restart, and the
//! OpenAPI document against the routes it describes.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

both_stores!(
    every_api_route_needs_the_token,
    health_and_readiness,
    sinks_list_shows_kind_state_and_queue,
    message_detail_has_events_deliveries_and_attempts,
    deliveries_filters_cursor_and_bad_queries,
    retry_one_dead_delivery,
    replay_by_sink_status_event_and_dry_run,
    pause_and_resume_survive_a_restart,
    openapi_describes_every_route,
    replay_reports_progress_per_chunk,
);

/// Every `/api/v1` route that needs the token, with an example path.
const PROTECTED: &[(&str, &str)] = &[
    ("GET", "/api/v1/sinks"),
    ("POST", "/api/v1/sinks/out/pause"),
    ("POST", "/api/v1/sinks/out/resume"),
    ("GET", "/api/v1/messages/0190abcd"),
    ("GET", "/api/v1/deliveries"),
    ("POST", "/api/v1/deliveries/0190abcd/retry"),
    ("POST", "/api/v1/replay"),
];

async fn send(app: &TestApp, method: &str, path: &str, token: Option<&str>) -> reqwest::Response {
    let url = format!("{}{path}", app.admin);
    let mut req = match method {
        "GET" => app.client.get(url),
        _ => app.client.post(url).json(&json!({})),
    };
    if let Some(t) = token {
        req = req.header("authorization", t);
    }
    req.send().await.unwrap()
}

async fn every_api_route_needs_the_token(b: Backend) {
    let sink = TestSink::start().await;
    let app = spawn_app(b, &http_sink("out", &sink, "")).await;
    for (method, path) in PROTECTED {
        for token in [
            None,
            Some("Bearer wrong"),
            Some(ADMIN_TOKEN),
            Some("Basic dGVzdA=="),
        ] {
            let r = send(&app, method, path, token).await;
            assert_eq!(r.status(), 401, "{method} {path} with {token:?}");
            assert_eq!(r.headers()["www-authenticate"], "Bearer");
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["error"], "unauthorized");
        }
        let ok = send(&app, method, path, Some(&format!("Bearer {ADMIN_TOKEN}"))).await;
        assert_ne!(ok.status(), 401, "{method} {path} with the token");
    }
    // The cookie of the status page does not open the JSON API.
    let r = app
        .client
        .get(format!("{}/api/v1/sinks", app.admin))
        .header("cookie", "hookrelay_session=v1.99999999999.x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Unknown API paths say 404 whatever the token.
    let r = send(&app, "GET", "/api/v1/nothing", None).await;
    assert_eq!(r.status(), 404);
    app.stop().await;
}

async fn health_and_readiness(b: Backend) {
    let app = spawn_app(b, "").await;
    for (path, status) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let r = app
            .client
            .get(format!("{}{path}", app.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], status);
    }
    let r = app
        .client
        .get(format!("{}/metrics", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .client
        .get(format!("{}/nowhere", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    app.stop().await;
}

async fn sinks_list_shows_kind_state_and_queue(b: Backend) {
    let ok = TestSink::start().await;
    let bad = TestSink::start().await;
    bad.script([Reply::Body(410, "gone".into())]);
    let extra = [http_sink("good", &ok, ""), http_sink("bad", &bad, "")].join("\n");
    let app = spawn_app(b, &extra).await;
    app.post_portal(&fixture("portal-item-share.json")).await;
    eventually(
        Duration::from_secs(10),
        "one delivered, one dead",
        || async {
            app.deliveries("status=delivered").await.len() == 1
                && app.deliveries("status=dead").await.len() == 1
        },
    )
    .await;
    let v: Value = app.admin_get("/api/v1/sinks").await.json().await.unwrap();
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let good = &items[0];
    assert_eq!(good["name"], "good", "config order");
    assert_eq!(good["kind"], "http");
    assert_eq!(good["state"], "active");
    assert_eq!(good["delivered"], 1);
    assert_eq!(good["delivered_last_hour"], 1);
    assert_eq!(good["dead"], 0);
    assert!(good["last_success_at"].as_str().unwrap().ends_with('Z'));
    let badv = &items[1];
    assert_eq!(badv["dead"], 1);
    assert_eq!(badv["pending"], 0);
    assert!(badv["last_success_at"].is_null());
    assert_eq!(badv["last_error"], "HTTP 410");
    for field in ["in_flight", "oldest_pending_at"] {
        assert!(badv.get(field).is_some(), "{field}");
    }
    app.stop().await;
}

async fn message_detail_has_events_deliveries_and_attempts(b: Backend) {
    let sink = TestSink::start().await;
    sink.script([Reply::Body(500, "try later".into())]);
    let app = spawn_app(b, &http_sink("out", &sink, "")).await;
    let body = fixture("portal-group-addusers.json");
    let r: Value = app.post_portal(&body).await.json().await.unwrap();
    let id = r["message_id"].as_str().unwrap();
    eventually(Duration::from_secs(10), "delivered", || async {
        app.deliveries("status=delivered").await.len() == 1
    })
    .await;
    let m: Value = app
        .admin_get(&format!("/api/v1/messages/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(m["id"], id);
    assert_eq!(m["source"], "portal");
    assert_eq!(m["content_type"], "application/json");
    assert_eq!(m["body_bytes"], body.len());
    assert!(!m["body"].as_str().unwrap().is_empty());
    let events = m["events"].as_array().unwrap();
    assert!(!events.is_empty());
    assert!(
        events
            .iter()
            .any(|e| e["uri"].as_str().unwrap().ends_with("/addUsers")),
        "{events:?}"
    );
    let d = &m["deliveries"][0];
    assert_eq!(d["sink"], "out");
    assert_eq!(d["status"], "delivered");
    assert_eq!(d["message_id"], id);
    let log = d["attempts_log"].as_array().unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["status"], 500);
    assert_eq!(log[0]["response"], "try later");
    assert_eq!(log[0]["attempt"], 1);
    assert_eq!(log[1]["status"], 200);
    assert!(log[1]["error"].is_null());
    assert!(log[1]["duration_ms"].as_i64().unwrap() >= 0);

    let r = app.admin_get("/api/v1/messages/no-such-message").await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "not_found");
    app.stop().await;
}

async fn deliveries_filters_cursor_and_bad_queries(b: Backend) {
    let a = TestSink::start().await;
    let z = TestSink::start().await;
    z.script((0..5).map(|_| Reply::Status(404)));
    let extra = [http_sink("a", &a, ""), http_sink("z", &z, "")].join("\n");
    let app = spawn_app(b, &extra).await;
    for name in [
        "portal-item-share.json",
        "portal-user-role.json",
        "portal-group-addusers.json",
        "portal-group-update.json",
    ] {
        app.post_portal(&fixture(name)).await;
    }
    eventually(
        Duration::from_secs(10),
        "4 delivered and 4 dead",
        || async {
            app.deliveries("status=delivered").await.len() == 4
                && app.deliveries("status=dead").await.len() == 4
        },
    )
    .await;
    assert_eq!(app.deliveries("").await.len(), 8);
    assert!(app
        .deliveries("sink=a")
        .await
        .iter()
        .all(|d| d["sink"] == "a"));
    assert_eq!(app.deliveries("sink=z&status=dead").await.len(), 4);
    assert_eq!(app.deliveries("sink=a&status=dead").await.len(), 0);
    assert_eq!(app.deliveries("since=1h").await.len(), 8);
    assert_eq!(app.deliveries("until=1h").await.len(), 0);
    assert_eq!(
        app.deliveries("since=2000-01-01T00:00:00Z&until=2999-01-01")
            .await
            .len(),
        8
    );

    // Pages of 3 walk all 8, newest first, without repeats.
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = match &cursor {
            Some(c) => format!("/api/v1/deliveries?limit=3&cursor={c}"),
            None => "/api/v1/deliveries?limit=3".into(),
        };
        let v: Value = app.admin_get(&q).await.json().await.unwrap();
        pages += 1;
        seen.extend(
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].as_str().unwrap().to_string()),
        );
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 10, "the cursor does not advance");
    }
    assert_eq!(seen.len(), 8);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.reverse();
    sorted.dedup();
    assert_eq!(seen, sorted, "newest first, no repeats");

    for bad in [
        "status=lost",
        "since=yesterday-ish",
        "until=2026-13-45",
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=abc",
        "colour=blue",
    ] {
        let r = app.admin_get(&format!("/api/v1/deliveries?{bad}")).await;
        assert_eq!(r.status(), 400, "{bad}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "bad_request", "{bad}");
        assert!(!v["detail"].as_str().unwrap().is_empty());
    }
    app.stop().await;
}

async fn retry_one_dead_delivery(b: Backend) {
    let sink = TestSink::start().await;
    sink.script([Reply::Body(410, "archived".into())]);
    let app = spawn_app(b, &http_sink("out", &sink, "")).await;
    app.post_portal(&fixture("portal-item-share.json")).await;
    eventually(Duration::from_secs(10), "dead", || async {
        app.deliveries("status=dead").await.len() == 1
    })
    .await;
    let id = app.deliveries("status=dead").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .admin_post(&format!("/api/v1/deliveries/{id}/retry"), json!({}))
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"id": id, "status": "pending"}));
    eventually(
        Duration::from_secs(10),
        "delivered after the retry",
        || async { app.deliveries("status=delivered").await.len() == 1 },
    )
    .await;
    assert_eq!(sink.count(), 2);
    let d = &app.deliveries("status=delivered").await[0];
    assert_eq!(d["attempts"], 1, "fresh attempts");

    let r = app
        .admin_post("/api/v1/deliveries/no-such-delivery/retry", json!({}))
        .await;
    assert_eq!(r.status(), 404);
    app.stop().await;
}

async fn replay_by_sink_status_event_and_dry_run(b: Backend) {
    let a = TestSink::start().await;
    let z = TestSink::start().await;
    a.script((0..2).map(|_| Reply::Status(404)));
    z.script((0..2).map(|_| Reply::Status(404)));
    let extra = [http_sink("a", &a, ""), http_sink("z", &z, "")].join("\n");
    let app = spawn_app(b, &extra).await;
    app.post_portal(&fixture("portal-item-share.json")).await;
    app.post_portal(&fixture("portal-user-role.json")).await;
    eventually(Duration::from_secs(10), "4 dead", || async {
        app.deliveries("status=dead").await.len() == 4
    })
    .await;

    let replay = |body: Value| app.admin_post("/api/v1/replay", body);
    let v: Value = replay(json!({"dry_run": true})).await.json().await.unwrap();
    assert_eq!(v, json!({"requeued": 0, "matched": 4, "dry_run": true}));
    let v: Value = replay(json!({"sink": "a", "event": "/users", "dry_run": true}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["matched"], 1);
    let v: Value =
        replay(json!({"source": "portal", "since": "1h", "until": "2999-01-01", "dry_run": true}))
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(v["matched"], 4);
    let v: Value = replay(json!({"status": "dead", "sink": "a", "event": "/items/share"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"requeued": 1, "matched": 1, "dry_run": false}));
    eventually(
        Duration::from_secs(10),
        "one replayed delivery delivered",
        || async { app.deliveries("status=delivered").await.len() == 1 },
    )
    .await;
    let v: Value = replay(json!({"sink": "z"})).await.json().await.unwrap();
    assert_eq!(v["requeued"], 2);
    eventually(Duration::from_secs(10), "z delivered", || async {
        app.deliveries("status=delivered&sink=z").await.len() == 2
    })
    .await;
    // Delivered deliveries can be sent again too.
    let v: Value = replay(json!({"status": "delivered", "sink": "z"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["requeued"], 2);
    z.wait_for(6, Duration::from_secs(10)).await;
    assert_eq!(
        app.deliveries("status=dead").await.len(),
        1,
        "a's /users delivery was left alone"
    );

    for bad in [
        json!({"status": "pending"}),
        json!({"status": "lost"}),
        json!({"sink": "nope"}),
        json!({"source": "nope"}),
        json!({"since": "last tuesday"}),
        json!({"event": ""}),
        json!({"colour": "blue"}),
        json!({"dry_run": "yes"}),
        json!([1, 2]),
    ] {
        let r = replay(bad.clone()).await;
        assert_eq!(r.status(), 400, "{bad}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "bad_request", "{bad}");
    }
    let r = app
        .client
        .post(format!("{}/api/v1/replay", app.admin))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = app
        .client
        .post(format!("{}/api/v1/replay", app.admin))
        .bearer_auth(ADMIN_TOKEN)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a body without a JSON content type");
    app.stop().await;
}

/// Starts a relay again on the same store. A stopped relay's last store
/// handles go with tasks that end just after `stop` returns (the completion
/// batcher, connections the test client kept alive); SQLite's single-server
/// lock is free only then, so wait for it a moment.
async fn restart(b: Backend, extra: &str) -> TestApp {
    use hookrelay::app::{Relay, StartError};
    let config = hookrelay::config::Config::from_toml(&config_text(&b.url, extra)).unwrap();
    let t0 = std::time::Instant::now();
    let relay = loop {
        match Relay::start(config.clone(), test_options()).await {
            Ok(r) => break r,
            Err(StartError::Store(e))
                if t0.elapsed() < Duration::from_secs(10) && e.to_string().contains("lock") =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("relay restarts: {e}"),
        }
    };
    TestApp {
        ingress: format!("http://{}", relay.ingress_addr),
        admin: format!("http://{}", relay.admin_addr),
        relay: Some(relay),
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        backend: b,
    }
}

async fn pause_and_resume_survive_a_restart(b: Backend) {
    let sink = TestSink::start().await;
    let extra = http_sink("out", &sink, "");
    let app = spawn_app(b, &extra).await;
    let r = app.admin_post("/api/v1/sinks/out/pause", json!({})).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"name": "out", "state": "paused"}));
    let r = app.admin_post("/api/v1/sinks/nope/pause", json!({})).await;
    assert_eq!(r.status(), 404);
    app.post_portal(&fixture("portal-item-share.json")).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(sink.count(), 0, "a paused sink sends nothing");
    assert_eq!(
        app.deliveries("status=pending").await.len(),
        1,
        "but keeps storing"
    );

    let b = app.stop().await;
    let app = restart(b, &extra).await;
    let v: Value = app.admin_get("/api/v1/sinks").await.json().await.unwrap();
    assert_eq!(v["items"][0]["state"], "paused", "pause survives a restart");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.count(), 0);

    let v: Value = app
        .admin_post("/api/v1/sinks/out/resume", json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"name": "out", "state": "active"}));
    sink.wait_for(1, Duration::from_secs(10)).await;
    let b = app.stop().await;
    let app = restart(b, &extra).await;
    let v: Value = app.admin_get("/api/v1/sinks").await.json().await.unwrap();
    assert_eq!(
        v["items"][0]["state"], "active",
        "resume survives a restart"
    );
    app.stop().await;
}

/// The endpoints the design contract names for the admin listener.
const CONTRACT: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/v1/sinks"),
    ("post", "/api/v1/sinks/{name}/pause"),
    ("post", "/api/v1/sinks/{name}/resume"),
    ("get", "/api/v1/messages/{id}"),
    ("get", "/api/v1/deliveries"),
    ("post", "/api/v1/deliveries/{id}/retry"),
    ("post", "/api/v1/replay"),
];

async fn openapi_describes_every_route(b: Backend) {
    let sink = TestSink::start().await;
    let app = spawn_app(b, &http_sink("out", &sink, "")).await;
    // The document is public: tools fetch it before they authenticate.
    let r = app
        .client
        .get(format!("{}/api/v1/openapi.json", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let doc: Value = r.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let paths = doc["paths"].as_object().unwrap();
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                documented.push((method.clone(), path.clone()));
            }
        }
    }
    for (m, p) in CONTRACT {
        assert!(
            documented.iter().any(|(dm, dp)| dm == m && dp == p),
            "{m} {p} is missing from openapi.json"
        );
    }
    assert_eq!(
        documented.len(),
        CONTRACT.len(),
        "undocumented extras or missing: {documented:?}"
    );
    // Every documented operation is routed (not the fallback's 404 or a 405),
    // and the token requirement is documented where the router enforces it.
    for (method, path) in &documented {
        let concrete = path.replace("{name}", "out").replace("{id}", "x");
        let r = send(
            &app,
            &method.to_uppercase(),
            &concrete,
            Some(&format!("Bearer {ADMIN_TOKEN}")),
        )
        .await;
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert!(status != 405, "{method} {path}: 405");
        assert!(
            !body.contains("no such"),
            "{method} {path} is not routed: {status} {body}"
        );
        let op = &paths[path][method];
        let open = op["security"].as_array().is_some_and(|s| {
            s.iter()
                .all(|x| x.as_object().is_some_and(|o| o.is_empty()))
        });
        let needs_token = send(&app, &method.to_uppercase(), &concrete, None)
            .await
            .status()
            == 401;
        let is_api = path.starts_with("/api/v1/") && path != "/api/v1/openapi.json";
        assert_eq!(needs_token, is_api, "{method} {path}");
        if is_api {
            assert!(
                !open,
                "{method} {path} needs the token but is documented as open"
            );
            for code in ["200", "401", "503"] {
                assert!(
                    op["responses"].get(code).is_some(),
                    "{method} {path} does not document {code}"
                );
            }
        } else {
            assert!(
                open,
                "{method} {path} needs no token but is documented as needing one"
            );
        }
    }
    app.stop().await;
}

async fn replay_reports_progress_per_chunk(b: Backend) {
    use hookrelay::store::{now_ms, NewDelivery, NewMessage, ReplayFilter, Status};
    use std::sync::Mutex;
    let sink = TestSink::start().await;
    let opts = hookrelay::app::RelayOptions {
        dispatch: false,
        ..test_options()
    };
    let app = spawn_app_with(b, &http_sink("out", &sink, ""), opts).await;
    let store = app.relay().store.clone();
    let now = now_ms();
    let batch: Vec<NewMessage> = (0..1200)
        .map(|i| NewMessage {
            id: uuid::Uuid::now_v7().to_string().into(),
            source: "portal".into(),
            received_at: now,
            content_type: "application/json".into(),
            headers: "{}".into(),
            body: b"{}".to_vec(),
            events: "[]".into(),
            dedupe_key: format!("k{i}"),
            dedupe_window_ms: 0,
            deliveries: vec![NewDelivery {
                id: uuid::Uuid::now_v7().to_string().into(),
                sink: "out".into(),
                events: "[]".into(),
                parked: false,
            }],
            fetch: false,
        })
        .collect();
    store.ingest(&batch, now).await.unwrap();
    exec_sql(&app.backend, "UPDATE deliveries SET status = 'dead'").await;
    let filter = ReplayFilter {
        status: Status::Dead,
        sink: Some("out".into()),
        source: None,
        since: None,
        until: None,
        event: None,
        dry_run: false,
    };
    let calls = Mutex::new(Vec::new());
    let progress = |done: u64, total: u64| calls.lock().unwrap().push((done, total));
    let n = store
        .replay_with_progress(&filter, now_ms(), &progress)
        .await
        .unwrap();
    assert_eq!(n, 1200);
    let calls = calls.into_inner().unwrap();
    assert_eq!(calls.first(), Some(&(0, 1200)), "{calls:?}");
    assert_eq!(calls.last(), Some(&(1200, 1200)), "{calls:?}");
    assert!(calls.len() >= 3, "one call per chunk: {calls:?}");
    assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0), "{calls:?}");
    // A dry run reports what it counted, once.
    let dry = ReplayFilter {
        dry_run: true,
        ..filter
    };
    let seen = Mutex::new(Vec::new());
    let n = store
        .replay_with_progress(&dry, now_ms(), &|d, t| seen.lock().unwrap().push((d, t)))
        .await
        .unwrap();
    assert_eq!(n, 0, "nothing is dead any more");
    assert_eq!(seen.into_inner().unwrap(), vec![(0, 0)]);
    app.stop().await;
}
