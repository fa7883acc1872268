//! Ingress end to end: every authentication variant, every payload shape in
//! the fixtures, and every row of the design's response table, over real
//! HTTP against a relay on port 0 with a real store.

mod common;

use std::time::Duration;

use base64::Engine;
use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PORTAL_FIXTURES: &[&str] = &[
    "portal-group-update.json",
    "portal-item-share.json",
    "portal-group-addusers.json",
    "portal-user-role.json",
];

async fn app_with_sink(b: Backend) -> (TestApp, TestSink) {
    let sink = TestSink::start().await;
    let app = spawn_app(b, &http_sink("all", &sink, "")).await;
    (app, sink)
}

async fn json(r: reqwest::Response) -> (u16, Value) {
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

both_stores!(
    portal_secret_header_accepts_every_portal_fixture,
    portal_secret_in_body_is_accepted_and_never_forwarded,
    portal_without_or_with_wrong_secret_is_refused_and_not_stored,
    service_signature_in_every_encoding_is_accepted,
    service_bad_or_missing_signature_is_refused,
    pretty_printed_body_is_verified_on_raw_bytes,
    form_encoded_payload_with_signature_in_header_or_field,
    online_hosted_layer_array_is_accepted,
    hmac_source_accepts_github_style_and_generic_json,
    crc_challenge_and_plain_get,
    unknown_source_and_paths,
    invalid_payloads_are_400,
    too_large_is_413_and_unsupported_type_is_415,
    resent_payload_is_a_duplicate,
    store_failure_answers_503_then_recovers,
    slow_client_does_not_block_others,
    overload_is_shed_with_503,
);

async fn portal_secret_header_accepts_every_portal_fixture(b: Backend) {
    let (app, sink) = app_with_sink(b).await;
    for f in PORTAL_FIXTURES {
        let (s, v) = json(app.post_portal(&fixture(f)).await).await;
        assert_eq!(s, 200, "{f}: {v}");
        assert_eq!(v["status"], "accepted", "{f}");
        assert_eq!(v["deliveries"], 1, "{f}");
        assert!(v["message_id"].as_str().unwrap().len() >= 32);
    }
    sink.wait_for(PORTAL_FIXTURES.len(), Duration::from_secs(10))
        .await;
    app.stop().await;
}

async fn portal_secret_in_body_is_accepted_and_never_forwarded(b: Backend) {
    let (app, sink) = app_with_sink(b).await;
    let mut doc: Value = serde_json::from_slice(&fixture("portal-item-share.json")).unwrap();
    doc["info"]["secret"] = Value::from(PORTAL_SECRET);
    let r = app
        .post(
            "portal",
            serde_json::to_vec(&doc).unwrap(),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(r.status(), 200);
    let got = sink.wait_for(1, Duration::from_secs(10)).await;
    let body = String::from_utf8(got[0].body.to_vec()).unwrap();
    assert!(
        !body.contains(PORTAL_SECRET),
        "inbound secret leaked to the sink: {body}"
    );
    assert!(!body.contains("\"secret\""), "{body}");
    let fwd: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(fwd["events"], doc["events"]);
    assert_eq!(fwd["info"]["webhookName"], "Item sharing audit");
    // Nor is it kept in the store.
    let mid = &app.deliveries("").await[0]["message_id"];
    let m: Value = app
        .admin_get(&format!("/api/v1/messages/{}", mid.as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert!(!m.to_string().contains(PORTAL_SECRET));
    app.stop().await;
}

async fn portal_without_or_with_wrong_secret_is_refused_and_not_stored(b: Backend) {
    let (app, _sink) = app_with_sink(b).await;
    let body = fixture("portal-group-update.json");
    let ct = ("content-type", "application/json");

    let (s, v) = json(app.post("portal", body.clone(), &[ct]).await).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (401, Some("missing_secret")),
        "{v}"
    );

    let (s, v) = json(
        app.post("portal", body.clone(), &[ct, ("secret", "guess")])
            .await,
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (401, Some("bad_secret")), "{v}");
    assert!(!v.to_string().contains(PORTAL_SECRET));

    let mut doc: Value = serde_json::from_slice(&body).unwrap();
    doc["info"]["secret"] = Value::from(12345);
    let (s, v) = json(
        app.post("portal", serde_json::to_vec(&doc).unwrap(), &[ct])
            .await,
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (401, Some("bad_secret")),
        "wrong-type info.secret: {v}"
    );

    doc["info"]["secret"] = Value::from("nearly-right");
    let (s, _) = json(
        app.post("portal", serde_json::to_vec(&doc).unwrap(), &[ct])
            .await,
    )
    .await;
    assert_eq!(s, 401);

    // An unauthenticated caller learns nothing about the body.
    let (s, v) = json(app.post("portal", "not json", &[ct]).await).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("missing_secret")));
    // An authenticated one is told it is not JSON.
    let (s, v) = json(
        app.post("portal", "not json", &[ct, ("secret", PORTAL_SECRET)])
            .await,
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_payload")));

    assert_eq!(count_rows(&app.backend, "messages").await, 0);
    assert_eq!(count_rows(&app.backend, "deliveries").await, 0);
    app.stop().await;
}

async fn service_signature_in_every_encoding_is_accepted(b: Backend) {
    let (app, _sink) = app_with_sink(b).await;
    let body = fixture("server-feature-created.json");
    let mac = hmac(SERVER_KEY, &body);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&mac);
    let hexd = hex::encode(&mac);
    let pct = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let variants = [
        ("x-esriHook-Signature", format!("sha256={b64}")),
        ("x-esrihook-signature", b64.clone()),
        ("X-ESRIHOOK-SIGNATURE", hexd.clone()),
        ("x-esriHook-Signature", format!("sha256={hexd}")),
        ("x-esriHook-Signature", pct(&format!("sha256={b64}"))),
        (
            "x-esriHook-Signature",
            esri_signature(PREVIOUS_SERVER_KEY, &body),
        ),
    ];
    for (name, value) in variants {
        let (s, v) = json(
            app.post(
                "server",
                body.clone(),
                &[("content-type", "application/json"), (name, &value)],
            )
            .await,
        )
        .await;
        assert_eq!(s, 200, "{name}: {value}: {v}");
        assert_eq!(v["status"], "accepted");
    }
    app.stop().await;
}

async fn service_bad_or_missing_signature_is_refused(b: Backend) {
    let (app, _sink) = app_with_sink(b).await;
    let body = fixture("server-gp-job.json");
    let ct = ("content-type", "application/json");
    let (s, v) = json(app.post("server", body.clone(), &[ct]).await).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("missing_signature")));
    let wrong = esri_signature("not-the-key", &body);
    let (s, v) = json(
        app.post(
            "server",
            body.clone(),
            &[ct, ("x-esriHook-Signature", &wrong)],
        )
        .await,
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (401, Some("bad_signature")));
    let (s, v) = json(
        app.post(
            "server",
            body.clone(),
            &[ct, ("x-esriHook-Signature", "sha256=zzz")],
        )
        .await,
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (401, Some("bad_signature")));
    let huge = "A".repeat(100_000);
    let (s, _) = json(
        app.post(
            "server",
            body.clone(),
            &[ct, ("x-esriHook-Signature", &huge)],
        )
        .await,
    )
    .await;
    // Over ingress::MAX_HEADER_BYTES: refused before any handler looks.
    assert_eq!(s, 431);
    // Signed body, tampered afterwards.
    let good = esri_signature(SERVER_KEY, &body);
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let (s, _) = json(
        app.post("server", tampered, &[ct, ("x-esriHook-Signature", &good)])
            .await,
    )
    .await;
    assert_eq!(s, 401);
    assert_eq!(count_rows(&app.backend, "messages").await, 0);
    app.stop().await;
}

async fn pretty_printed_body_is_verified_on_raw_bytes(b: Backend) {
    let (app, sink) = app_with_sink(b).await;
    let pretty = fixture("server-gp-job.json"); // pjson: indented, as received
    let compact = serde_json::to_vec(&serde_json::from_slice::<Value>(&pretty).unwrap()).unwrap();
    let ct = ("content-type", "application/json");
    // A signature over re-serialised JSON does not verify the raw bytes.
    let over_compact = esri_signature(SERVER_KEY, &compact);
    let (s, _) = json(
        app.post(
            "server",
            pretty.clone(),
            &[ct, ("x-esriHook-Signature", &over_compact)],
        )
        .await,
    )
    .await;
    assert_eq!(s, 401);
    let over_raw = esri_signature(SERVER_KEY, &pretty);
    let (s, _) = json(
        app.post(
            "server",
            pretty.clone(),
            &[ct, ("x-esriHook-Signature", &over_raw)],
        )
        .await,
    )
    .await;
    assert_eq!(s, 200);
    let got = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(
        got[0].body.as_ref(),
        pretty.as_slice(),
        "forwarded byte-for-byte"
    );
    app.stop().await;
}

async fn form_encoded_payload_with_signature_in_header_or_field(b: Backend) {
    let (app, sink) = app_with_sink(b).await;
    let form = fixture("online-hosted-layer.form");
    let form = form.trim_ascii_end().to_vec();
    let value = &form["payload=".len()..];
    let sig = esri_signature(SERVER_KEY, value);
    let ct = ("content-type", "application/x-www-form-urlencoded");
    let (s, v) = json(
        app.post(
            "server",
            form.clone(),
            &[ct, ("x-esriHook-Signature", &sig)],
        )
        .await,
    )
    .await;
    assert_eq!(s, 200, "{v}");

    // The signature as a form field; a different body so it is not a duplicate.
    let doc = String::from_utf8(form.clone())
        .unwrap()
        .replace("1629325549649", "1629325549650");
    let value = &doc.as_bytes()["payload=".len()..];
    let sig = esri_signature(SERVER_KEY, value);
    let with_field = format!(
        "{doc}&x-esriHook-Signature={}",
        percent_encoding::utf8_percent_encode(&sig, percent_encoding::NON_ALPHANUMERIC)
    );
    let (s, v) = json(app.post("server", with_field, &[ct]).await).await;
    assert_eq!(s, 200, "{v}");

    // Signed over the decoded JSON instead of the raw value: refused.
    let decoded = fixture("online-hosted-layer.json");
    let wrong = esri_signature(
        SERVER_KEY,
        &serde_json::to_vec(&serde_json::from_slice::<Value>(&decoded).unwrap()).unwrap(),
    );
    let (s, _) = json(
        app.post(
            "server",
            form.clone(),
            &[ct, ("x-esriHook-Signature", &wrong)],
        )
        .await,
    )
    .await;
    assert_eq!(s, 401);

    // Two payload fields: refused as invalid.
    let twice = format!("{}&payload=x", String::from_utf8(form.clone()).unwrap());
    let (s, v) = json(
        app.post("server", twice, &[ct, ("x-esriHook-Signature", &sig)])
            .await,
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_payload")),
        "{v}"
    );

    // Both are delivered, in either order (the dispatcher may send them at once).
    let got = sink.wait_for(2, Duration::from_secs(10)).await;
    let first = got
        .iter()
        .find(|r| r.body.as_ref() == form.as_slice())
        .expect("the header-signed form is forwarded byte for byte");
    assert_eq!(
        first.header("content-type"),
        "application/x-www-form-urlencoded"
    );
    app.stop().await;
}

async fn online_hosted_layer_array_is_accepted(b: Backend) {
    let (app, _sink) = app_with_sink(b).await;
    let body = fixture("online-hosted-layer.json");
    let sig = esri_signature(SERVER_KEY, &body);
    let (s, v) = json(
        app.post(
            "server",
            body,
            &[
                ("content-type", "application/json"),
                ("x-esriHook-Signature", &sig),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let mid = v["message_id"].as_str().unwrap();
    let m: Value = app
        .admin_get(&format!("/api/v1/messages/{mid}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        m["events"][0]["uri"],
        "/services/myService.FeatureServer/FeaturesCreated"
    );
    assert_eq!(m["events"][0]["operation"], "FeaturesCreated");
    app.stop().await;
}

async fn hmac_source_accepts_github_style_and_generic_json(b: Backend) {
    let (app, _sink) = app_with_sink(b).await;
    let body = br#"{"action":"opened","number":7}"#.to_vec();
    let sig = format!("sha256={}", hex::encode(hmac(HMAC_SECRET, &body)));
    let ct = ("content-type", "application/json");
    let (s, v) = json(
        app.post("github", body.clone(), &[ct, ("x-hub-signature-256", &sig)])
            .await,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = json(app.post("github", body.clone(), &[ct]).await).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("missing_signature")));
    let bare = hex::encode(hmac(HMAC_SECRET, &body));
    let (s, _) = json(
        app.post(
            "github",
            body.clone(),
            &[ct, ("x-hub-signature-256", &bare)],
        )
        .await,
    )
    .await;
    assert_eq!(s, 401, "the configured prefix is required");
    let garbage = b"[1,".to_vec();
    let sig = format!("sha256={}", hex::encode(hmac(HMAC_SECRET, &garbage)));
    let (s, v) = json(
        app.post("github", garbage, &[ct, ("x-hub-signature-256", &sig)])
            .await,
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_payload")));
    app.stop().await;
}

async fn crc_challenge_and_plain_get(b: Backend) {
    let (app, _sink) = app_with_sink(b).await;
    let r = app
        .client
        .get(format!(
            "{}/hooks/server?crc_token=challenge-123",
            app.ingress
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let want = esri_signature(SERVER_KEY, b"challenge-123");
    assert_eq!(v["response_token"], want);
    let r = app
        .client
        .get(format!("{}/hooks/portal", app.ingress))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .client
        .get(format!("{}/hooks/nope", app.ingress))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    app.stop().await;
}

async fn unknown_source_and_paths(b: Backend) {
    let (app, _sink) = app_with_sink(b).await;
    let (s, v) = json(
        app.post("nope", fixture("portal-group-update.json"), &[])
            .await,
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (404, Some("unknown_source")));
    for path in [
        "/hooks/..%2Fadmin",
        "/api/v1/sinks",
        "/metrics",
        "/healthz",
        "/hooks/",
        "/",
    ] {
        let r = app
            .client
            .post(format!("{}{path}", app.ingress))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].is_string(), "{path}: {v}");
    }
    let r = app
        .client
        .put(format!("{}/hooks/portal", app.ingress))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    app.stop().await;
}

async fn invalid_payloads_are_400(b: Backend) {
    let (app, _sink) = app_with_sink(b).await;
    let ct = ("content-type", "application/json");
    let cases: &[&[u8]] = &[
        b"",
        b"not json",
        b"{\"hello\":\"world\"}",
        b"[]",
        b"42",
        b"{\"serviceName\":\"x\",\"events\":[]}",
        b"{\"info\":{},\"events\":[{\"id\":\"a\"}]}",
        b"\xff\xfe{}",
    ];
    for body in cases {
        let sig = esri_signature(SERVER_KEY, body);
        let (s, v) = json(
            app.post(
                "server",
                body.to_vec(),
                &[ct, ("x-esriHook-Signature", &sig)],
            )
            .await,
        )
        .await;
        assert_eq!(
            (s, v["error"].as_str()),
            (400, Some("invalid_payload")),
            "{:?}: {v}",
            String::from_utf8_lossy(body)
        );
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let sig = esri_signature(SERVER_KEY, deep.as_bytes());
    let (s, _) = json(
        app.post("server", deep, &[ct, ("x-esriHook-Signature", &sig)])
            .await,
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(count_rows(&app.backend, "messages").await, 0);
    app.stop().await;
}

async fn too_large_is_413_and_unsupported_type_is_415(b: Backend) {
    let (app, _sink) = app_with_sink(b).await;
    let big = vec![b' '; 70_000];
    let (s, v) = json(app.post_portal(&big).await).await;
    assert_eq!((s, v["error"].as_str()), (413, Some("payload_too_large")));
    // Without a Content-Length (chunked), the limit still holds.
    let stream = futures::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(vec![b' '; 8192])));
    let r = app
        .client
        .post(format!("{}/hooks/portal", app.ingress))
        .header("secret", PORTAL_SECRET)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    // The relay answers 413 and closes as soon as the limit is passed; a
    // client still writing may see the close (broken pipe) before the answer.
    match r {
        Ok(r) => assert_eq!(r.status(), 413),
        Err(e) => assert!(e.is_request(), "neither 413 nor a closed connection: {e}"),
    }
    let (s, v) = json(
        app.post(
            "portal",
            fixture("portal-group-update.json"),
            &[
                ("content-type", "application/xml"),
                ("secret", PORTAL_SECRET),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    assert_eq!(count_rows(&app.backend, "messages").await, 0);
    app.stop().await;
}

async fn resent_payload_is_a_duplicate(b: Backend) {
    let (app, sink) = app_with_sink(b).await;
    let body = fixture("portal-group-addusers.json");
    let (_, first) = json(app.post_portal(&body).await).await;
    let (s, second) = json(app.post_portal(&body).await).await;
    assert_eq!(s, 200);
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["deliveries"], 0);
    assert_eq!(second["message_id"], first["message_id"]);
    // A different event is not a duplicate.
    let (_, third) = json(app.post_portal(&fixture("portal-group-update.json")).await).await;
    assert!(third.get("duplicate").is_none());
    sink.wait_for(2, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.count(), 2, "the duplicate created no delivery");
    assert_eq!(count_rows(&app.backend, "messages").await, 2);
    app.stop().await;
}

async fn store_failure_answers_503_then_recovers(b: Backend) {
    let (app, _sink) = app_with_sink(b).await;
    exec_sql(&app.backend, "ALTER TABLE messages RENAME TO messages_gone").await;
    let r = app.post_portal(&fixture("portal-item-share.json")).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "unavailable");
    exec_sql(&app.backend, "ALTER TABLE messages_gone RENAME TO messages").await;
    let r = app.post_portal(&fixture("portal-item-share.json")).await;
    assert_eq!(
        r.status(),
        200,
        "nothing was stored by the failed request, so this is not a duplicate"
    );
    let v: Value = r.json().await.unwrap();
    assert!(v.get("duplicate").is_none());
    app.stop().await;
}

async fn slow_client_does_not_block_others(b: Backend) {
    let (app, _sink) = app_with_sink(b).await;
    let addr = app.relay().ingress_addr;
    // Headers promise 1000 bytes; 10 arrive; then nothing.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /hooks/portal HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nsecret: portal-secret-1\r\ncontent-length: 1000\r\n\r\n{\"info\":{}").await.unwrap();
    // A client that never finishes its headers.
    let mut slower = tokio::net::TcpStream::connect(addr).await.unwrap();
    slower
        .write_all(b"POST /hooks/portal HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let r = app.post_portal(&fixture("portal-user-role.json")).await;
    assert_eq!(r.status(), 200, "served while others dawdle");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the slow body is cut off by the body read timeout"
    );
    assert!(
        String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    let read = tokio::time::timeout(Duration::from_secs(5), slower.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the slow header is cut off by the header read timeout"
    );
    app.stop().await;
}

async fn overload_is_shed_with_503(b: Backend) {
    let sink = TestSink::start().await;
    let text = config_text(&b.url, &http_sink("all", &sink, "")).replace(
        "max_body_bytes = 65536",
        "max_body_bytes = 65536\nmax_concurrency = 1",
    );
    let app = spawn_app_text(b, &text, test_options()).await;
    let addr = app.relay().ingress_addr;
    // A body still trickling in holds no work slot: others are served.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /hooks/portal HTTP/1.1\r\nhost: x\r\nsecret: portal-secret-1\r\ncontent-length: 100\r\n\r\n{").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = app.post_portal(&fixture("portal-user-role.json")).await;
    assert_eq!(r.status(), 200, "a slow body holds no work slot");
    // A request waiting for its commit does: with the store's write lock
    // held elsewhere, the one slot is taken and the next request is shed.
    let lock = WriteLock::take(&app.backend).await;
    let app = std::sync::Arc::new(app);
    let first = {
        let app = app.clone();
        tokio::spawn(async move {
            app.post_portal(&fixture("portal-item-share.json"))
                .await
                .status()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = app.post_portal(&fixture("portal-group-update.json")).await;
    assert_eq!(r.status(), 503, "shed, not queued");
    assert_eq!(r.headers()["retry-after"], "1");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "overloaded");
    // When the slot frees, service resumes.
    lock.release().await;
    assert_eq!(first.await.unwrap(), 200);
    let r = app.post_portal(&fixture("portal-group-update.json")).await;
    assert_eq!(r.status(), 200);
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    std::sync::Arc::into_inner(app).unwrap().stop().await;
}

/// The store's write lock, held by a connection of the test's own, so a
/// relay's commits wait for it.
enum WriteLock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl WriteLock {
    async fn take(b: &Backend) -> WriteLock {
        use sqlx::Connection;
        match b.kind {
            Kind::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&b.url).await.unwrap();
                sqlx::query("BEGIN IMMEDIATE")
                    .execute(&mut c)
                    .await
                    .unwrap();
                WriteLock::Sqlite(c)
            }
            Kind::Postgres => {
                let mut c = sqlx::PgConnection::connect(&b.url).await.unwrap();
                sqlx::query("BEGIN").execute(&mut c).await.unwrap();
                sqlx::query("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
                    .execute(&mut c)
                    .await
                    .unwrap();
                WriteLock::Postgres(c)
            }
        }
    }

    async fn release(self) {
        match self {
            WriteLock::Sqlite(mut c) => {
                sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
            }
            WriteLock::Postgres(mut c) => {
                sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
            }
        }
    }
}
