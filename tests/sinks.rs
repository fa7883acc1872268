//! Native sinks end to end: a relay on a real store delivering to local
//! servers that play Slack, Teams, Power BI, Power Automate and Notebook
//! Server. Each server enforces its service's rules (Slack's `text` and
//! blocks, Teams' card shape and 28 KB, Power BI's flat rows with exactly
//! the columns, the notebook receiver's signature) and answers with the
//! service's own errors, so the tests check the relay's classification
//! (dead or retried) and its rate limits against the real thing's rules.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use common::*;
use hookrelay::config::Config;
use hookrelay::sinks::powerbi::COLUMNS;
use serde_json::{json, Value};

both_stores!(
    slack_gets_a_readable_summary,
    slack_errors_are_dead_with_slacks_word,
    slack_retries_429_at_retry_after_and_5xx,
    rate_limits_hold_at_the_service,
    large_events_stay_within_slack_and_teams_limits,
    teams_legacy_429_inside_a_200_is_retried,
    powerbi_rows_push_and_rest,
    powerbi_errors_classify,
    powerbi_batches_waiting_deliveries,
    power_automate_gets_json_and_sig_stays_secret,
    notebook_receiver_verifies_the_signature,
    template_from_file_overrides_the_body,
    headers_go_with_every_http_kind,
);

// ---------------------------------------------------------------- services

/// Which service a local server plays, with the credentials it expects.
#[derive(Clone)]
enum Rule {
    Slack,
    Teams,
    PowerBiPush { key: String },
    PowerBiRest { token: String },
    PowerAutomate { sig: String },
    Notebook { secret: String, header: String },
}

/// One request a service received, and whether it broke the service's rules.
#[derive(Clone, Debug)]
struct Got {
    uri: String,
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
    broke: Option<String>,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A scripted answer: status, headers, body.
type Answer = (u16, Vec<(&'static str, String)>, String);

struct Inner {
    rule: Rule,
    script: VecDeque<Answer>,
    got: Vec<Got>,
}

#[derive(Clone)]
struct Service {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

fn reject(status: u16, body: &str) -> Result<(), (u16, String)> {
    Err((status, body.to_string()))
}

fn slack_rules(body: &[u8]) -> Result<(), (u16, String)> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return reject(400, "invalid_payload");
    };
    match v.get("text") {
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        _ => return reject(400, "no_text"),
    }
    let Some(blocks) = v.get("blocks") else {
        return Ok(());
    };
    let Some(blocks) = blocks.as_array().filter(|b| b.len() <= 50) else {
        return reject(400, "invalid_blocks");
    };
    for b in blocks {
        let text_len = |p: &str| {
            b.pointer(p)
                .and_then(Value::as_str)
                .map_or(0, |s| s.chars().count())
        };
        let ok = match b["type"].as_str() {
            Some("header") => {
                b.pointer("/text/type") == Some(&json!("plain_text"))
                    && (1..=150).contains(&text_len("/text/text"))
            }
            Some("section") => (1..=3000).contains(&text_len("/text/text")),
            Some("context") => b["elements"].as_array().is_some_and(|e| {
                !e.is_empty()
                    && e.len() <= 10
                    && e.iter().all(|x| {
                        x["text"]
                            .as_str()
                            .is_some_and(|t| t.chars().count() <= 3000)
                    })
            }),
            Some("divider") => true,
            _ => false,
        };
        if !ok {
            return reject(400, "invalid_blocks");
        }
    }
    Ok(())
}

fn teams_rules(body: &[u8]) -> Result<(), (u16, String)> {
    if body.len() > 28 * 1024 {
        return reject(413, "Payload too large");
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return reject(400, "Bad payload: not JSON");
    };
    let card = &v["attachments"][0];
    let shape_ok = v["type"] == "message"
        && v["attachments"].as_array().is_some_and(|a| a.len() == 1)
        && card["contentType"] == "application/vnd.microsoft.card.adaptive"
        && card["content"]["type"] == "AdaptiveCard"
        && card["content"]["version"] == "1.4"
        && card["content"]["body"]
            .as_array()
            .is_some_and(|b| !b.is_empty());
    if !shape_ok {
        return reject(400, "Bad payload: not an Adaptive Card 1.4 message");
    }
    for el in card["content"]["body"].as_array().unwrap() {
        let ok = match el["type"].as_str() {
            Some("TextBlock") => el["text"].is_string(),
            Some("FactSet") => el["facts"].as_array().is_some_and(|f| {
                f.iter()
                    .all(|x| x["title"].is_string() && x["value"].is_string())
            }),
            Some("ActionSet") => el["actions"].as_array().is_some_and(|a| {
                a.iter().all(|x| {
                    x["type"] == "Action.OpenUrl"
                        && x["url"].as_str().is_some_and(|u| u.starts_with("http"))
                })
            }),
            _ => false,
        };
        if !ok {
            return reject(400, &format!("Bad payload: invalid element {el}"));
        }
    }
    Ok(())
}

fn powerbi_rows(rows: &Value) -> Result<(), (u16, String)> {
    let bad = |m: &str| {
        reject(
            400,
            &json!({"error": {"code": "InvalidRequest", "message": m}}).to_string(),
        )
    };
    let Some(rows) = rows
        .as_array()
        .filter(|r| !r.is_empty() && r.len() <= 10_000)
    else {
        return bad("rows must be a non-empty array of at most 10,000");
    };
    for r in rows {
        let Some(obj) = r.as_object() else {
            return bad("a row is not an object");
        };
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want = COLUMNS.to_vec();
        want.sort_unstable();
        if keys != want {
            return bad("columns do not match the table");
        }
        if !obj
            .values()
            .all(|v| v.as_str().is_some_and(|s| s.chars().count() <= 4000))
        {
            return bad("values must be text of at most 4,000 characters");
        }
        if humantime::parse_rfc3339(obj["when"].as_str().unwrap()).is_err() {
            return bad("when is not a DateTime");
        }
    }
    Ok(())
}

fn check(rule: &Rule, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Result<(), (u16, String)> {
    let query = uri.query().unwrap_or("");
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    match rule {
        Rule::Slack => slack_rules(body),
        Rule::Teams => teams_rules(body),
        Rule::PowerBiPush { key } => {
            if !query.contains(&format!("key={key}")) {
                return reject(403, r#"{"error":{"code":"Unauthorized"}}"#);
            }
            powerbi_rows(&serde_json::from_slice(body).unwrap_or(Value::Null))
        }
        Rule::PowerBiRest { token } => {
            if header("authorization") != format!("Bearer {token}") {
                return reject(403, r#"{"error":{"code":"TokenExpired"}}"#);
            }
            let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            powerbi_rows(&v["rows"])
        }
        Rule::PowerAutomate { sig } => {
            if !query.contains(&format!("sig={sig}")) {
                return reject(
                    401,
                    r#"{"error":{"code":"DirectApiAuthorizationRequired"}}"#,
                );
            }
            if !header("content-type").starts_with("application/json")
                || serde_json::from_slice::<Value>(body).is_err()
            {
                return reject(400, r#"{"error":{"code":"InvalidRequestContent"}}"#);
            }
            Ok(())
        }
        Rule::Notebook {
            secret,
            header: name,
        } => {
            let want = base64::engine::general_purpose::STANDARD.encode(hmac(secret, body));
            if header(name) != want {
                return reject(401, "Invalid signature");
            }
            Ok(())
        }
    }
}

fn success(rule: &Rule) -> Answer {
    match rule {
        Rule::Slack => (200, vec![], "ok".into()),
        Rule::Teams | Rule::PowerAutomate { .. } => (202, vec![], String::new()),
        Rule::PowerBiPush { .. } | Rule::PowerBiRest { .. } => (200, vec![], String::new()),
        Rule::Notebook { .. } => (200, vec![], r#"{"success":true}"#.into()),
    }
}

async fn handle(
    State(s): State<Arc<Mutex<Inner>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (status, hdrs, text) = {
        let mut i = s.lock().unwrap();
        let verdict = check(&i.rule, &uri, &headers, &body);
        let broke = verdict.as_ref().err().map(|(_, m)| m.clone());
        let answer = match verdict {
            Err((status, m)) => (status, vec![], m),
            Ok(()) => i.script.pop_front().unwrap_or_else(|| success(&i.rule)),
        };
        i.got.push(Got {
            uri: uri.to_string(),
            headers,
            body,
            at: Instant::now(),
            broke,
        });
        answer
    };
    let mut r = (StatusCode::from_u16(status).unwrap(), text).into_response();
    for (k, v) in hdrs {
        r.headers_mut().insert(k, v.parse().unwrap());
    }
    r
}

impl Service {
    async fn start(rule: Rule) -> Service {
        let inner = Arc::new(Mutex::new(Inner {
            rule,
            script: VecDeque::new(),
            got: Vec::new(),
        }));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Service { addr, inner }
    }

    fn url(&self) -> String {
        let query = match &self.inner.lock().unwrap().rule {
            Rule::PowerBiPush { key } => format!("?experience=power-bi&key={key}"),
            Rule::PowerAutomate { sig } => {
                format!("?api-version=1&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={sig}")
            }
            _ => String::new(),
        };
        format!("http://{}/hook{query}", self.addr)
    }

    fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.inner.lock().unwrap().script.extend(answers);
    }

    fn got(&self) -> Vec<Got> {
        self.inner.lock().unwrap().got.clone()
    }

    async fn wait_for(&self, n: usize) -> Vec<Got> {
        eventually(
            Duration::from_secs(15),
            &format!("{n} requests at the service"),
            || async { self.inner.lock().unwrap().got.len() >= n },
        )
        .await;
        self.got()
    }

    /// Every request so far kept the service's rules.
    fn assert_all_valid(&self) {
        for g in self.got() {
            assert!(
                g.broke.is_none(),
                "the relay broke the service's rules: {:?}\n{}",
                g.broke,
                String::from_utf8_lossy(&g.body)
            );
        }
    }
}

fn sink(name: &str, kind: &str, svc: &Service, extra: &str) -> String {
    format!(
        "[[sinks]]\nname = \"{name}\"\nkind = \"{kind}\"\nurl = \"{}\"\n{extra}\n",
        svc.url()
    )
}

/// A Portal item-share payload for item `id`, so tests can send distinct messages.
fn portal_share(id: &str, properties: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "info": {"webhookName": "Sharing", "webhookId": "w1", "portalURL": "https://gis.example.org/portal/", "when": 1730385704521u64},
        "events": [{"username": "jdoe", "userId": "u1", "when": 1730385704000u64, "operation": "share",
                    "source": "item", "id": id, "properties": properties}]
    }))
    .unwrap()
}

async fn wait_status(app: &TestApp, status: &str, n: usize) -> Vec<Value> {
    eventually(
        Duration::from_secs(15),
        &format!("{n} deliveries {status}"),
        || async { app.deliveries(&format!("status={status}")).await.len() >= n },
    )
    .await;
    app.deliveries(&format!("status={status}")).await
}

/// The most requests seen within any window of `w`.
fn max_in_window(times: &[Instant], w: Duration) -> usize {
    let mut t: Vec<Instant> = times.to_vec();
    t.sort();
    (0..t.len())
        .map(|i| t[i..].iter().take_while(|x| **x - t[i] < w).count())
        .max()
        .unwrap_or(0)
}

// ------------------------------------------------------------------- tests

async fn slack_gets_a_readable_summary(b: Backend) {
    let slack = Service::start(Rule::Slack).await;
    let app = spawn_app(b, &sink("team", "slack", &slack, "")).await;
    app.post_portal(&fixture("portal-item-share.json")).await;
    let got = slack.wait_for(1).await;
    slack.assert_all_valid();
    let v = got[0].json();
    let text = v["text"].as_str().unwrap();
    assert!(
        text.starts_with("jdoe shared item 6cd80cb32d4a4b4d858a020e57fba7b1"),
        "{text}"
    );
    assert!(text.contains("<https://gis.example.org/portal/home/item.html?id=6cd80cb32d4a4b4d858a020e57fba7b1|Open item>"), "{text}");
    let context = v["blocks"][2]["elements"][0]["text"].as_str().unwrap();
    assert!(
        context.contains("By *jdoe*") && context.contains("2024-10-31T14:41:44Z"),
        "{context}"
    );
    wait_status(&app, "delivered", 1).await;
    app.stop().await;
}

async fn slack_errors_are_dead_with_slacks_word(b: Backend) {
    let cases = [
        (400, "invalid_payload"),
        (403, "action_prohibited"),
        (404, "channel_not_found"),
        (410, "channel_is_archived"),
    ];
    let mut services = Vec::new();
    let mut extra = String::new();
    for (i, (status, word)) in cases.iter().enumerate() {
        let s = Service::start(Rule::Slack).await;
        s.script([(*status, vec![], word.to_string())]);
        extra.push_str(&sink(&format!("s{i}"), "slack", &s, ""));
        services.push(s);
    }
    let app = spawn_app(b, &extra).await;
    app.post_portal(&fixture("portal-item-share.json")).await;
    let dead = wait_status(&app, "dead", cases.len()).await;
    for (i, (status, word)) in cases.iter().enumerate() {
        let d = dead.iter().find(|d| d["sink"] == format!("s{i}")).unwrap();
        assert_eq!(d["attempts"], 1, "{d}");
        assert_eq!(d["last_status"], *status);
        assert_eq!(d["last_error"], format!("HTTP {status}: {word}"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for s in &services {
        assert_eq!(s.got().len(), 1, "a permanent answer is not retried");
        s.assert_all_valid();
    }
    app.stop().await;
}

async fn slack_retries_429_at_retry_after_and_5xx(b: Backend) {
    let slack = Service::start(Rule::Slack).await;
    slack.script([
        (
            429,
            vec![("retry-after", "1".to_string())],
            "rate_limited".to_string(),
        ),
        (503, vec![], "service_unavailable".to_string()),
    ]);
    let app = spawn_app(b, &sink("team", "slack", &slack, "max_backoff = \"2s\"")).await;
    app.post_portal(&fixture("portal-item-share.json")).await;
    let got = slack.wait_for(3).await;
    assert!(
        got[1].at - got[0].at >= Duration::from_millis(900),
        "Retry-After: 1 was not honoured"
    );
    let d = &wait_status(&app, "delivered", 1).await[0];
    assert_eq!(d["attempts"], 3);
    slack.assert_all_valid();
    app.stop().await;
}

async fn rate_limits_hold_at_the_service(b: Backend) {
    // `fast` sets 2/s; `default` relies on Slack's own default of 1/s.
    let fast = Service::start(Rule::Slack).await;
    let default = Service::start(Rule::Slack).await;
    let extra = [
        sink("fast", "slack", &fast, "rate_limit = 2"),
        sink("default", "slack", &default, ""),
    ]
    .join("\n");
    let app = spawn_app(b, &extra).await;
    for i in 0..5 {
        let r = app
            .post_portal(&portal_share(&format!("item{i}"), json!({})))
            .await;
        assert_eq!(r.status(), 200);
    }
    let got = fast.wait_for(5).await;
    let times: Vec<Instant> = got.iter().map(|g| g.at).collect();
    let spread = *times.iter().max().unwrap() - *times.iter().min().unwrap();
    assert!(
        spread >= Duration::from_millis(1900),
        "5 requests at 2/s took only {spread:?}"
    );
    assert!(
        max_in_window(&times, Duration::from_millis(950)) <= 2,
        "more than 2 requests within a second"
    );
    let got = default.wait_for(3).await;
    let times: Vec<Instant> = got.iter().take(3).map(|g| g.at).collect();
    assert!(
        times[2] - times[0] >= Duration::from_millis(1900),
        "Slack's default 1/s was not applied"
    );
    assert!(max_in_window(&times, Duration::from_millis(950)) <= 1);
    fast.assert_all_valid();
    app.stop().await;
}

async fn large_events_stay_within_slack_and_teams_limits(b: Backend) {
    let slack = Service::start(Rule::Slack).await;
    let teams = Service::start(Rule::Teams).await;
    let extra = [
        sink("chat", "slack", &slack, ""),
        sink("channel", "teams", &teams, ""),
    ]
    .join("\n");
    let app = spawn_app(b, &extra).await;
    // 100 properties of 500 characters: about 50 KB of details.
    let props: serde_json::Map<String, Value> = (0..100)
        .map(|i| {
            (
                format!("field{i:03}"),
                Value::String(format!("{i}:{}", "x".repeat(500))),
            )
        })
        .collect();
    let r = app
        .post_portal(&portal_share("bigitem", Value::Object(props)))
        .await;
    assert_eq!(r.status(), 200);
    let got = teams.wait_for(1).await;
    teams.assert_all_valid();
    assert!(
        got[0].body.len() <= 28 * 1024,
        "card is {} bytes",
        got[0].body.len()
    );
    let card = got[0].json();
    let body = card["attachments"][0]["content"]["body"]
        .as_array()
        .unwrap()
        .clone();
    assert!(body[0]["text"].as_str().unwrap().contains("bigitem"));
    assert!(
        body.iter().any(|e| e["type"] == "ActionSet"),
        "the link to the item survives trimming"
    );
    slack.wait_for(1).await;
    slack.assert_all_valid();
    wait_status(&app, "delivered", 2).await;
    app.stop().await;
}

async fn teams_legacy_429_inside_a_200_is_retried(b: Backend) {
    let teams = Service::start(Rule::Teams).await;
    teams.script([(
        200,
        vec![],
        "Webhook message delivery failed with error: Microsoft Teams endpoint returned HTTP error 429 with ContextId tcid=0,server=msgapi".to_string(),
    )]);
    let app = spawn_app(b, &sink("channel", "teams", &teams, "")).await;
    let v: Value = app
        .post_portal(&fixture("portal-group-addusers.json"))
        .await
        .json()
        .await
        .unwrap();
    teams.wait_for(2).await;
    let d = &wait_status(&app, "delivered", 1).await[0];
    assert_eq!(d["attempts"], 2);
    let m: Value = app
        .admin_get(&format!(
            "/api/v1/messages/{}",
            v["message_id"].as_str().unwrap()
        ))
        .await
        .json()
        .await
        .unwrap();
    let first = &m["deliveries"][0]["attempts_log"][0];
    assert_eq!(first["status"], 200);
    assert!(
        first["error"].as_str().unwrap().contains("HTTP error 429"),
        "{first}"
    );
    teams.assert_all_valid();
    app.stop().await;
}

async fn powerbi_rows_push_and_rest(b: Backend) {
    let push = Service::start(Rule::PowerBiPush {
        key: "pushkey123".into(),
    })
    .await;
    let rest = Service::start(Rule::PowerBiRest {
        token: "aad-token".into(),
    })
    .await;
    let extra = [
        sink("push", "powerbi", &push, "events = [\"/groups/addUsers\"]"),
        sink("rest", "powerbi", &rest, "token = \"aad-token\""),
    ]
    .join("\n");
    let app = spawn_app(b, &extra).await;
    app.post_portal(&fixture("portal-group-addusers.json"))
        .await;
    let got = push.wait_for(1).await;
    push.assert_all_valid();
    let rows = got[0].json();
    assert_eq!(
        rows.as_array().unwrap().len(),
        1,
        "only the matched event: {rows}"
    );
    assert_eq!(rows[0]["operation"], "addUsers");
    assert_eq!(rows[0]["username"], "groupadmin");
    assert_eq!(rows[0]["when"], "2024-10-31T14:43:20.000Z");
    let got = rest.wait_for(1).await;
    rest.assert_all_valid();
    assert_eq!(got[0].json()["rows"].as_array().unwrap().len(), 2);
    wait_status(&app, "delivered", 2).await;
    app.stop().await;
}

async fn powerbi_batches_waiting_deliveries(b: Backend) {
    let push = Service::start(Rule::PowerBiPush {
        key: "pushkey123".into(),
    })
    .await;
    let app = spawn_app(b, &sink("bi", "powerbi", &push, "")).await;
    // While paused, deliveries queue up; on resume they leave together.
    let r = app
        .admin_post("/api/v1/sinks/bi/pause", serde_json::json!({}))
        .await;
    assert_eq!(r.status(), 200);
    for f in [
        "portal-group-update.json",
        "portal-item-share.json",
        "portal-group-addusers.json",
        "portal-user-role.json",
    ] {
        assert_eq!(app.post_portal(&fixture(f)).await.status(), 200);
    }
    let r = app
        .admin_post("/api/v1/sinks/bi/resume", serde_json::json!({}))
        .await;
    assert_eq!(r.status(), 200);
    wait_status(&app, "delivered", 4).await;
    let got = push.wait_for(1).await;
    push.assert_all_valid();
    assert_eq!(got.len(), 1, "one request for the four waiting deliveries");
    assert_eq!(
        got[0].json().as_array().unwrap().len(),
        5,
        "every matched event is a row"
    );
    app.stop().await;
}

async fn powerbi_errors_classify(b: Backend) {
    let gone = Service::start(Rule::PowerBiPush { key: "k".into() }).await;
    gone.script([(
        404,
        vec![],
        r#"{"error":{"code":"ItemNotFound","message":"Dataset not found"}}"#.to_string(),
    )]);
    let busy = Service::start(Rule::PowerBiPush { key: "k".into() }).await;
    busy.script([(429, vec![("retry-after", "1".to_string())], String::new())]);
    let wrong_key = Service::start(Rule::PowerBiPush {
        key: "right".into(),
    })
    .await;
    let extra = [
        sink("gone", "powerbi", &gone, ""),
        // max_backoff caps Retry-After; the test config's is 500 ms.
        sink("busy", "powerbi", &busy, "max_backoff = \"2s\""),
        format!("[[sinks]]\nname = \"wrong-key\"\nkind = \"powerbi\"\nurl = \"http://{}/rows?key=wrong\"\n", wrong_key.addr),
    ]
    .join("\n");
    let app = spawn_app(b, &extra).await;
    app.post_portal(&fixture("portal-item-share.json")).await;
    let dead = wait_status(&app, "dead", 2).await;
    let gone_d = dead.iter().find(|d| d["sink"] == "gone").unwrap();
    assert_eq!(gone_d["last_error"], "HTTP 404: ItemNotFound");
    let wrong = dead.iter().find(|d| d["sink"] == "wrong-key").unwrap();
    assert_eq!(wrong["last_error"], "HTTP 403: Unauthorized");
    let got = busy.wait_for(2).await;
    assert!(got[1].at - got[0].at >= Duration::from_millis(900));
    eventually(Duration::from_secs(10), "busy delivered", || async {
        app.deliveries("status=delivered&sink=busy").await.len() == 1
    })
    .await;
    app.stop().await;
}

async fn power_automate_gets_json_and_sig_stays_secret(b: Backend) {
    const SIG: &str = "Zx9SecretSignature0123456789";
    let flow = Service::start(Rule::PowerAutomate { sig: SIG.into() }).await;
    // A flow URL on a port nobody listens on: the attempt fails with a transport error.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let extra = [
        sink("flow", "power-automate", &flow, "events = [\"/items/share\"]"),
        format!(
            "[[sinks]]\nname = \"down\"\nkind = \"power-automate\"\nurl = \"http://{closed}/workflows/abc/triggers/manual/paths/invoke?api-version=1&sig={SIG}\"\nmax_attempts = 1\n"
        ),
    ]
    .join("\n");
    let app = spawn_app(b, &extra).await;
    let v: Value = app
        .post_portal(&fixture("portal-item-share.json"))
        .await
        .json()
        .await
        .unwrap();
    let got = flow.wait_for(1).await;
    flow.assert_all_valid();
    let body = got[0].json();
    assert_eq!(
        body["events"][0]["uri"],
        "/items/6cd80cb32d4a4b4d858a020e57fba7b1/share"
    );
    assert_eq!(body["message_id"], v["message_id"]);
    assert!(got[0].uri.contains("sig="));
    wait_status(&app, "delivered", 1).await;
    let dead = wait_status(&app, "dead", 1).await;
    assert!(
        dead[0]["last_error"]
            .as_str()
            .unwrap()
            .starts_with("connection failed"),
        "{}",
        dead[0]
    );
    // Nowhere the relay shows a sink or an attempt may the sig appear.
    for path in [
        "/api/v1/deliveries?limit=100".to_string(),
        format!("/api/v1/messages/{}", v["message_id"].as_str().unwrap()),
        "/api/v1/sinks".to_string(),
    ] {
        let text = app.admin_get(&path).await.text().await.unwrap();
        assert!(!text.contains(SIG), "{path} shows the sig: {text}");
    }
    let printed = Config::from_toml(&config_text("sqlite://x.db", &extra))
        .unwrap()
        .redacted_toml();
    assert!(
        !printed.contains(SIG) && printed.contains("sig=%5Bredacted%5D"),
        "{printed}"
    );
    app.stop().await;
}

async fn notebook_receiver_verifies_the_signature(b: Backend) {
    const SECRET: &str = "0123456789abcdefghijABCDEFGHIJ01";
    let nb = Service::start(Rule::Notebook {
        secret: SECRET.into(),
        header: "x-esrihook-signature".into(),
    })
    .await;
    let custom = Service::start(Rule::Notebook {
        secret: SECRET.into(),
        header: "x-hub-signature-256".into(),
    })
    .await;
    let extra = [
        sink("nb", "notebook", &nb, &format!("secret = \"{SECRET}\"")),
        sink(
            "nb-custom",
            "notebook",
            &custom,
            &format!("secret = \"{SECRET}\"\nsignature_header = \"X-Hub-Signature-256\""),
        ),
    ]
    .join("\n");
    let app = spawn_app(b, &extra).await;
    let body = fixture("server-feature-created.json");
    let sig = esri_signature(SERVER_KEY, &body);
    app.post(
        "server",
        body.clone(),
        &[
            ("content-type", "application/json"),
            ("x-esriHook-Signature", &sig),
        ],
    )
    .await;
    for svc in [&nb, &custom] {
        let got = svc.wait_for(1).await;
        svc.assert_all_valid();
        assert_eq!(
            got[0].body.as_ref(),
            body.as_slice(),
            "the notebook gets the original bytes"
        );
        assert_eq!(got[0].header("content-type"), "application/json");
    }
    wait_status(&app, "delivered", 2).await;
    app.stop().await;
}

async fn template_from_file_overrides_the_body(b: Backend) {
    let slack = Service::start(Rule::Slack).await;
    let path = b.dir.path().join("slack.json.j2");
    std::fs::write(
        &path,
        r#"{"text": {{ "Custom: " ~ events[0].who ~ " did " ~ events[0].operation ~ " on " ~ events[0].id }}}"#,
    )
    .unwrap();
    let app = spawn_app(
        b,
        &sink(
            "team",
            "slack",
            &slack,
            &format!("template = \"file:{}\"", path.display()),
        ),
    )
    .await;
    app.post_portal(&fixture("portal-item-share.json")).await;
    let got = slack.wait_for(1).await;
    slack.assert_all_valid();
    assert_eq!(
        got[0].json(),
        json!({"text": "Custom: jdoe did share on 6cd80cb32d4a4b4d858a020e57fba7b1"})
    );
    app.stop().await;
}

/// `headers` applies to every kind that speaks HTTP, so every one sends
/// them (before, only `http` and `power-automate` did; the others
/// accepted the key and dropped it).
async fn headers_go_with_every_http_kind(b: Backend) {
    const SECRET: &str = "0123456789abcdefghijABCDEFGHIJ01";
    let slack = Service::start(Rule::Slack).await;
    let nb = Service::start(Rule::Notebook {
        secret: SECRET.into(),
        header: "x-esrihook-signature".into(),
    })
    .await;
    let extra = [
        sink(
            "team",
            "slack",
            &slack,
            "headers = { x-relay-team = \"blue\" }",
        ),
        sink(
            "nb",
            "notebook",
            &nb,
            &format!("secret = \"{SECRET}\"\nheaders = {{ x-relay-team = \"green\" }}"),
        ),
    ]
    .join("\n");
    let app = spawn_app(b, &extra).await;
    app.post_portal(&fixture("portal-item-share.json")).await;
    for (svc, want) in [(&slack, "blue"), (&nb, "green")] {
        let got = svc.wait_for(1).await;
        svc.assert_all_valid();
        assert_eq!(got[0].header("x-relay-team"), want);
    }
    wait_status(&app, "delivered", 2).await;
    app.stop().await;
}

// ------------------------------------------------ config and CLI (no store)

fn config_error(sinks: &str) -> String {
    hookrelay::app::compile_text(&config_text("sqlite://x.db", sinks))
        .expect_err("config is refused")
        .to_string()
}

#[test]
fn kind_specific_keys_are_validated_and_named() {
    let e = config_error("[[sinks]]\nname = \"nb\"\nkind = \"notebook\"\nurl = \"https://nb.example.org/rest/events/webhooks/1\"\nsecret = \"too-short-secret\"");
    assert_eq!(
        e,
        "sinks[0].secret: a notebook secret must be exactly 32 characters (this one has 16)"
    );
    let e = config_error(
        "[[sinks]]\nname = \"nb\"\nkind = \"notebook\"\nurl = \"https://nb.example.org/x\"",
    );
    assert!(e.starts_with("sinks[0].secret: "), "{e}");
    let e = config_error("[[sinks]]\nname = \"s\"\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T/B/X\"\ntoken = \"t\"");
    assert!(
        e.starts_with("sinks[0].token: token does not apply to kind \"slack\""),
        "{e}"
    );
    let e = config_error("[[sinks]]\nname = \"s\"\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T/B/X\"\ntemplate = '{\"text\": {{ headline }'");
    assert!(e.starts_with("sinks[0].template: syntax error"), "{e}");
    let e = config_error("[[sinks]]\nname = \"s\"\nkind = \"teams\"\nurl = \"https://x.example.org/\"\ntemplate = '{\"text\": {{ events[0].nosuchfield }}}'");
    assert!(
        e.starts_with("sinks[0].template: ") && e.contains("undefined"),
        "{e}"
    );
    let e = config_error("[[sinks]]\nname = \"p\"\nkind = \"powerbi\"\nurl = \"https://api.powerbi.com/beta/t/datasets/d/rows\"");
    assert!(
        e.starts_with("sinks[0].url: a Power BI push URL carries key="),
        "{e}"
    );
    let e = config_error("[[sinks]]\nname = \"m\"\nkind = \"email\"\nurl = \"smtp://mail.example.org\"\nfrom = \"relay@example.org\"");
    assert!(e.starts_with("sinks[0].to: "), "{e}");
    let e = config_error("[[sinks]]\nname = \"m\"\nkind = \"email\"\nurl = \"https://mail.example.org\"\nfrom = \"a@b.org\"\nto = [\"c@d.org\"]");
    assert!(e.starts_with("sinks[0].url: "), "{e}");
    let e = config_error("[[sinks]]\nname = \"m\"\nkind = \"email\"\nurl = \"smtp://mail.example.org\"\nfrom = \"not an address\"\nto = [\"c@d.org\"]");
    assert!(e.starts_with("sinks[0].from: "), "{e}");
}

#[test]
fn service_rate_limits_are_the_defaults() {
    let text = config_text(
        "sqlite://x.db",
        "[[sinks]]\nname = \"s\"\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T/B/X\"\n\
         [[sinks]]\nname = \"t\"\nkind = \"teams\"\nurl = \"https://t.example.org/\"\n\
         [[sinks]]\nname = \"p\"\nkind = \"powerbi\"\nurl = \"https://api.powerbi.com/beta/t/datasets/d/rows?key=k\"\n\
         [[sinks]]\nname = \"h\"\nkind = \"http\"\nurl = \"https://h.example.org/\"\n\
         [[sinks]]\nname = \"s2\"\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T/B/Y\"\nrate_limit = 5\n",
    );
    let c = Config::from_toml(&text).unwrap();
    let rates: Vec<Option<f64>> = c
        .sinks
        .iter()
        .map(|s| s.policy(&c.delivery).rate_limit)
        .collect();
    assert_eq!(
        rates,
        vec![Some(1.0), Some(4.0), Some(2.0), None, Some(5.0)]
    );
    // A stricter [delivery] rate_limit still holds for every sink.
    let c =
        Config::from_toml(&text.replace("[delivery]\n", "[delivery]\nrate_limit = 0.5\n")).unwrap();
    let rates: Vec<Option<f64>> = c
        .sinks
        .iter()
        .map(|s| s.policy(&c.delivery).rate_limit)
        .collect();
    assert_eq!(
        rates,
        vec![Some(0.5), Some(0.5), Some(0.5), Some(0.5), Some(5.0)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_test_prints_the_answer_and_never_the_secret() {
    let ok = Service::start(Rule::Slack).await;
    let archived = Service::start(Rule::Slack).await;
    archived.script([(410, vec![], "channel_is_archived".to_string())]);
    let flow = Service::start(Rule::PowerAutomate {
        sig: "SendTestSig42".into(),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookrelay.toml");
    let sinks = [
        sink("ok", "slack", &ok, ""),
        sink("archived", "slack", &archived, ""),
        sink("flow", "power-automate", &flow, ""),
    ]
    .join("\n");
    std::fs::write(
        &path,
        config_text(
            &format!("sqlite://{}/relay.db", dir.path().display()),
            &sinks,
        ),
    )
    .unwrap();
    let run = |args: Vec<&'static str>| {
        let path = path.clone();
        tokio::task::spawn_blocking(move || process::run_cli(&path, &args, &[]))
    };
    let (code, out, err) = run(vec!["send-test", "--sink", "ok"]).await.unwrap();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("verdict:  delivered")
            && out.contains("status:   200")
            && out.contains("answer:   ok"),
        "{out}"
    );
    assert_eq!(ok.got().len(), 1);
    ok.assert_all_valid();
    let (code, out, _) = run(vec!["send-test", "--sink", "archived"]).await.unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("status:   410")
            && out.contains("HTTP 410: channel_is_archived")
            && out.contains("permanent"),
        "{out}"
    );
    let (code, out, err) = run(vec!["send-test", "--sink", "flow"]).await.unwrap();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("status:   202")
            && !out.contains("SendTestSig42")
            && !err.contains("SendTestSig42"),
        "{out}"
    );
    assert!(out.contains("sig=%5Bredacted%5D"), "{out}");
    assert!(
        !dir.path().join("relay.db").exists(),
        "send-test does not open the store"
    );
    let (code, _, err) = run(vec!["send-test", "--sink", "nope"]).await.unwrap();
    assert_eq!(code, 2);
    assert!(err.contains("no sink named \"nope\""), "{err}");
}
