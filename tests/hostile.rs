//! Hostile input at ingress: a table of malformed, oversized, smuggled and
//! mis-authenticated requests, written byte by byte over raw TCP to a relay
//! on port 0.
//!
//! For every row: an answer of 4xx (503 would be allowed for overload) or a
//! closed connection within [`ROW_DEADLINE`]; afterwards nothing is stored
//! (no message, no delivery), no configured secret (Portal secret, both
//! signature keys, the hmac secret, the admin token) appears in any response
//! byte, no handler panicked, and the relay still accepts a valid webhook.
//!
//! Both stores: the refusals happen before the store is touched, so the table
//! mostly proves the same thing twice, but the second table here (legal but
//! odd payloads, e.g. `\u0000` escapes and 60 KB strings) is about what each
//! store accepts: Postgres TEXT refuses NUL bytes where SQLite takes them.
//!
//! The log check runs the real binary (`RelayProcess`, RUST_LOG=info, the
//! production default) with the same table and greps its stderr for the
//! secrets and for panics; it runs on SQLite only, since what is logged does
//! not depend on the store.

mod common;
#[path = "hostile/table.rs"]
mod table;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use common::process::{write_config, RelayProcess};
use common::*;
use table::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest any row may take to be answered or cut off.
const ROW_DEADLINE: Duration = Duration::from_secs(5);

/// Every credential of the test configuration.
const SECRETS: &[&str] = &[
    PORTAL_SECRET,
    SERVER_KEY,
    PREVIOUS_SERVER_KEY,
    HMAC_SECRET,
    ADMIN_TOKEN,
];

/// A source only 10.0.0.0/8 may post to, for the X-Forwarded-For rows.
const RESTRICTED: &str = r#"
[[sources]]
name = "restricted"
kind = "arcgis-portal"
secret = "portal-secret-1"
allow_ips = ["10.0.0.0/8"]
"#;

// ------------------------------------------------------------ the table

/// What came back.
#[derive(Debug, Clone)]
struct Outcome {
    /// Status, or 0 for a connection closed without a (complete) status line.
    status: u16,
    /// Every byte received.
    raw: Vec<u8>,
    took: Duration,
}

fn ok_portal_body(extra: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut h = vec![JSON, SECRET_OK];
    h.extend_from_slice(extra);
    post("portal", &h, body)
}

// ------------------------------------------------------------ the client

/// Length of a complete response in `buf`, if it holds one.
fn complete_response(buf: &[u8]) -> Option<usize> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    if head.starts_with("http/1.1 100") {
        // An interim answer; the final one follows.
        return complete_response(&buf[head_end..]).map(|n| n + head_end);
    }
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    match len {
        Some(n) => (buf.len() >= head_end + n).then_some(head_end + n),
        None if head.contains("transfer-encoding: chunked") => buf[head_end..]
            .windows(5)
            .position(|w| w == b"0\r\n\r\n")
            .map(|p| head_end + p + 5),
        None => None,
    }
}

fn final_status(raw: &[u8]) -> u16 {
    // Skip interim 1xx answers.
    let text = String::from_utf8_lossy(raw);
    text.split("\r\n\r\n")
        .filter_map(|block| {
            let line = block.lines().find(|l| l.starts_with("HTTP/"))?;
            line.split_whitespace().nth(1)?.parse::<u16>().ok()
        })
        .find(|s| *s >= 200)
        .unwrap_or(0)
}

async fn send_row(addr: std::net::SocketAddr, row: &Row) -> Outcome {
    let t0 = Instant::now();
    let stream = TcpStream::connect(addr)
        .await
        .expect("connect to the relay");
    let (mut rd, mut wr) = stream.into_split();
    let send = row.send.clone();
    // The writer runs beside the reader: the relay may answer (and close)
    // before it has read everything, and a write into a closed socket is
    // then expected, not a failure.
    let writer = tokio::spawn(async move {
        match send {
            Wire::Bytes(b) => {
                let _ = wr.write_all(&b).await;
            }
            Wire::Trickle(head) => {
                if wr.write_all(&head).await.is_ok() {
                    let t0 = Instant::now();
                    while t0.elapsed() < ROW_DEADLINE {
                        if wr.write_all(b"1\r\nx\r\n").await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
        // Keep the write side open until the reader is done: a half-close
        // would tell the relay the body ended, which is a different row.
        std::future::pending::<()>().await;
        drop(wr);
    });
    let mut raw = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let read = tokio::time::timeout(ROW_DEADLINE, async {
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    raw.extend_from_slice(&chunk[..n]);
                    if complete_response(&raw).is_some() {
                        break;
                    }
                }
            }
        }
    })
    .await;
    writer.abort();
    assert!(
        read.is_ok(),
        "{}: neither answered nor closed within {ROW_DEADLINE:?}; got {:?}",
        row.name,
        String::from_utf8_lossy(&raw)
    );
    Outcome {
        status: final_status(&raw),
        raw,
        took: t0.elapsed(),
    }
}

/// Sends every row at once (each on its own connection) and returns the outcomes.
async fn run_table(addr: std::net::SocketAddr, rows: &[Row]) -> Vec<Outcome> {
    futures::future::join_all(rows.iter().map(|r| send_row(addr, r))).await
}

fn check_outcomes(rows: &[Row], outcomes: &[Outcome]) {
    let mut failures = Vec::new();
    for (row, out) in rows.iter().zip(outcomes) {
        // The table as it ran (shown with --nocapture).
        eprintln!("{:>4} {:>6.0?}  {}", out.status, out.took, row.name);
        let class_ok = out.status == 0 || (400..500).contains(&out.status) || out.status == 503;
        if !class_ok || !row.expect.contains(&out.status) {
            failures.push(format!(
                "{}: got {} (expected one of {:?}) after {:?}: {:?}",
                row.name,
                out.status,
                row.expect,
                out.took,
                String::from_utf8_lossy(&out.raw[..out.raw.len().min(400)])
            ));
        }
        for s in SECRETS {
            if out.raw.windows(s.len()).any(|w| w == s.as_bytes()) {
                failures.push(format!(
                    "{}: the response contains a configured secret",
                    row.name
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

// ------------------------------------------------------------ panics

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts panics on any thread (a handler that panics kills only its
/// connection task, which the table alone would see as "closed").
fn count_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

// ------------------------------------------------------------ tests

both_stores!(
    hostile_requests_are_refused_and_nothing_is_stored,
    legal_but_odd_payloads_are_stored_on_every_store
);

async fn hostile_requests_are_refused_and_nothing_is_stored(b: Backend) {
    count_panics();
    let sink = TestSink::start().await;
    let app = spawn_app(b, &format!("{}{RESTRICTED}", http_sink("all", &sink, ""))).await;
    let rows = table();
    assert!(rows.len() >= 30, "the table has {} rows", rows.len());
    let outcomes = run_table(app.relay().ingress_addr, &rows).await;
    check_outcomes(&rows, &outcomes);

    assert_eq!(
        count_rows(&app.backend, "messages").await,
        0,
        "a hostile request was stored"
    );
    assert_eq!(count_rows(&app.backend, "deliveries").await, 0);
    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        0,
        "a handler panicked (see stderr)"
    );

    // Still serving: a valid webhook is accepted and delivered.
    let r = app.post_portal(&fixture("portal-group-update.json")).await;
    assert_eq!(r.status(), 200);
    sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(count_rows(&app.backend, "messages").await, 1);
    app.stop().await;
}

/// What is legal must not be refused by one store and taken by the other:
/// NUL and other control characters as JSON escapes, non-BMP text, extreme
/// numbers, and a body just under the size limit.
async fn legal_but_odd_payloads_are_stored_on_every_store(b: Backend) {
    let sink = TestSink::start().await;
    let app = spawn_app(b, &http_sink("all", &sink, "")).await;
    let portal = |id: &str, props: serde_json::Value| {
        serde_json::to_vec(&serde_json::json!({
            "info": {"webhookName": "w\u{0}\u{1}", "portalURL": "https://gis.example.org/portal/"},
            "events": [{"source": "item", "id": id, "operation": "update", "when": 1, "properties": props}]
        }))
        .unwrap()
    };
    let bodies = vec![
        portal(
            "nul",
            serde_json::json!({"title": "a\u{0}b", "ctl": "\u{1}\u{1f}\u{7f}"}),
        ),
        portal(
            "astral",
            serde_json::json!({"title": "𝔊𝔦𝔖 🗺️ \u{202e}evil"}),
        ),
        portal(
            "numbers",
            serde_json::json!({"big": 1e308, "neg": -0.0, "int": i64::MIN, "u": u64::MAX}),
        ),
        portal("long", serde_json::json!({"pad": "x".repeat(60_000)})),
        portal("id\u{0}with-nul", serde_json::json!({})),
    ];
    for (i, body) in bodies.iter().enumerate() {
        let r = app.post_portal(body).await;
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert_eq!(status, 200, "body {i}: {text}");
    }
    // Headers up to the ingress limit are fine (a proxy may add a few).
    let filler = "f".repeat(12 * 1024);
    let r = app
        .post(
            "portal",
            bodies[0].clone(),
            &[JSON, SECRET_OK, ("x-filler", filler.as_str())],
        )
        .await;
    assert_eq!(r.status(), 200, "12 KB of headers");
    let got = sink.wait_for(bodies.len(), Duration::from_secs(15)).await;
    for body in &bodies {
        assert!(
            got.iter().any(|g| g.body.as_ref() == body.as_slice()),
            "a body was not forwarded byte for byte"
        );
    }
    assert_eq!(
        count_rows(&app.backend, "messages").await,
        bodies.len() as i64
    );
    app.stop().await;
}

/// `GET ?crc_token=T` answers HMAC(key, T): if T may be a payload, anyone
/// can have the relay sign a forged webhook for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crc_challenge_is_not_a_signing_oracle() {
    let b = Backend::new(Kind::Sqlite).await.unwrap();
    let sink = TestSink::start().await;
    let app = spawn_app(b, &http_sink("all", &sink, "")).await;
    let forged = br#"{"serviceName":"Parcels","serviceType":"FeatureServer","events":[{"eventType":"FeaturesDeleted","when":1}]}"#;
    let form_value: String = form_urlencoded::byte_serialize(forged).collect();
    for token in [
        String::from_utf8(forged.to_vec()).unwrap(),
        form_value.clone(),
    ] {
        let r = app
            .client
            .get(format!("{}/hooks/server", app.ingress))
            .query(&[("crc_token", token.as_str())])
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        if let Some(sig) = v["response_token"].as_str() {
            // The oracle answered: the forgery must still not get in.
            let json = app
                .post(
                    "server",
                    forged.to_vec(),
                    &[JSON, ("x-esriHook-Signature", sig)],
                )
                .await;
            let form = app
                .post(
                    "server",
                    format!("payload={form_value}"),
                    &[FORM, ("x-esriHook-Signature", sig)],
                )
                .await;
            assert_ne!(json.status(), 200, "a crc answer signed a JSON webhook");
            assert_ne!(form.status(), 200, "a crc answer signed a form webhook");
        }
        assert_eq!(status, 400, "crc_token {token:?}: {v}");
    }
    // Real challenges still work: Esri's tokens are opaque base64-like text.
    for token in ["challenge-123", "AbCd0123+/=_-.~", "x"] {
        let r = app
            .client
            .get(format!("{}/hooks/server", app.ingress))
            .query(&[("crc_token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{token}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            v["response_token"],
            esri_signature(SERVER_KEY, token.as_bytes())
        );
    }
    assert_eq!(count_rows(&app.backend, "messages").await, 0);
    app.stop().await;
}

/// The real binary, its log at the production level: no secret and no panic
/// in it after the whole table, and it keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_log() {
    let b = Backend::new(Kind::Sqlite).await.unwrap();
    let sink = TestSink::start().await;
    let text = config_text(
        &b.url,
        &format!("{}{RESTRICTED}", http_sink("all", &sink, "")),
    );
    let config = write_config(b.dir.path(), &text);
    let relay = RelayProcess::start(&config, b.dir.path());
    let addr: std::net::SocketAddr = relay
        .ingress
        .trim_start_matches("http://")
        .parse()
        .expect("ingress address");
    let rows = table();
    let outcomes = run_table(addr, &rows).await;
    check_outcomes(&rows, &outcomes);

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = client
        .post(format!("http://{addr}/hooks/portal"))
        .header("content-type", "application/json")
        .header("secret", PORTAL_SECRET)
        .body(fixture("portal-user-role.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the binary stopped serving after the table"
    );
    sink.wait_for(1, Duration::from_secs(10)).await;

    let log = relay.log();
    assert!(
        log.contains("webhook refused"),
        "the log shows no refusals; is it the right file?\n{log}"
    );
    for s in SECRETS {
        assert!(
            !log.contains(s),
            "the log contains a configured secret:\n{log}"
        );
    }
    assert!(!log.contains("panicked"), "the relay panicked:\n{log}");
    assert_eq!(count_rows(&b, "messages").await, 1);
}
