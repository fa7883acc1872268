//! Shared test harness: a relay on port 0 over a real store (a SQLite file
//! in a temp dir, or a fresh Postgres database), and a real local sink
//! server whose answers a test scripts.
#![allow(dead_code)]

#[allow(dead_code)]
pub mod process;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hookrelay::app::{Relay, RelayOptions};
use hookrelay::config::Config;

pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const PORTAL_SECRET: &str = "portal-secret-1";
pub const SERVER_KEY: &str = "server-signature-key";
pub const PREVIOUS_SERVER_KEY: &str = "previous-signature-key";
pub const HMAC_SECRET: &str = "github-secret";

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// A fresh, empty store for one test.
pub struct Backend {
    pub kind: Kind,
    pub url: String,
    pub dir: tempfile::TempDir,
}

impl Backend {
    /// A new store of `kind`, or `None` (with a note) when Postgres is not
    /// available on this machine.
    pub async fn new(kind: Kind) -> Option<Backend> {
        let dir = tempfile::tempdir().unwrap();
        let url = match kind {
            Kind::Sqlite => format!("sqlite://{}/relay.db", dir.path().display()),
            Kind::Postgres => {
                let Ok(base) = std::env::var("HOOKRELAY_TEST_POSTGRES_URL") else {
                    eprintln!(
                        "SKIPPED: HOOKRELAY_TEST_POSTGRES_URL is not set; Postgres variant not run"
                    );
                    return None;
                };
                fresh_pg_database(&base).await
            }
        };
        Some(Backend { kind, url, dir })
    }
}

/// Creates a uniquely named database on the server `base` points at and
/// returns its URL, so tests run in parallel without sharing tables.
pub async fn fresh_pg_database(base: &str) -> String {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(base)
        .await
        .expect("connect to Postgres");
    let name = format!("hookrelay_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let mut url = reqwest::Url::parse(base).unwrap();
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// Runs a test body on SQLite and, when available, Postgres.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        $(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let b = $crate::common::Backend::new($crate::common::Kind::Sqlite).await.unwrap();
                super::$name(b).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(b) = $crate::common::Backend::new($crate::common::Kind::Postgres).await {
                    super::$name(b).await
                }
            }
        }
        )*
    };
}

/// The configuration every test starts from; `extra` adds sinks (and may
/// add per-sink delivery overrides).
pub fn config_text(db: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_body_bytes = 65536
body_read_timeout = "1s"
header_read_timeout = "1s"

[admin]
listen = "127.0.0.1:0"
token = "{ADMIN_TOKEN}"

[store]
url = "{db}"

[delivery]
timeout = "2s"
initial_backoff = "50ms"
max_backoff = "500ms"
poll_interval = "100ms"

[[sources]]
name = "portal"
kind = "arcgis-portal"
secret = "{PORTAL_SECRET}"

[[sources]]
name = "server"
kind = "arcgis-service"
secret = ["{SERVER_KEY}", "{PREVIOUS_SERVER_KEY}"]

[[sources]]
name = "github"
kind = "hmac"
secret = "{HMAC_SECRET}"

{extra}
"#
    )
}

/// A relay running in this test process.
pub struct TestApp {
    pub relay: Option<Relay>,
    pub ingress: String,
    pub admin: String,
    pub client: reqwest::Client,
    pub backend: Backend,
}

/// Options with zero jitter, so retry times are exact.
pub fn test_options() -> RelayOptions {
    RelayOptions {
        jitter: Arc::new(|| 1.0),
        dispatch: true,
        shutdown_grace: Duration::from_secs(2),
    }
}

pub async fn spawn_app(backend: Backend, extra: &str) -> TestApp {
    spawn_app_with(backend, extra, test_options()).await
}

pub async fn spawn_app_with(backend: Backend, extra: &str, opts: RelayOptions) -> TestApp {
    let text = config_text(&backend.url, extra);
    spawn_app_text(backend, &text, opts).await
}

pub async fn spawn_app_text(backend: Backend, text: &str, opts: RelayOptions) -> TestApp {
    let config = Config::from_toml(text).expect("test config is valid");
    let relay = Relay::start(config, opts).await.expect("relay starts");
    TestApp {
        ingress: format!("http://{}", relay.ingress_addr),
        admin: format!("http://{}", relay.admin_addr),
        relay: Some(relay),
        // Shorter than the listeners' 1 s header read timeout, so the client never
        // reuses a keep-alive connection the server is just closing.
        client: reqwest::Client::builder()
            .no_proxy()
            .pool_idle_timeout(Duration::from_millis(500))
            .build()
            .unwrap(),
        backend,
    }
}

impl TestApp {
    pub fn relay(&self) -> &Relay {
        self.relay.as_ref().unwrap()
    }

    pub async fn post(
        &self,
        source: &str,
        body: impl Into<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(format!("{}/hooks/{source}", self.ingress))
            .body(body.into());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    }

    /// Posts a Portal fixture with the secret header.
    pub async fn post_portal(&self, body: &[u8]) -> reqwest::Response {
        self.post(
            "portal",
            body.to_vec(),
            &[
                ("content-type", "application/json"),
                ("secret", PORTAL_SECRET),
            ],
        )
        .await
    }

    /// Posts a Portal body that must be accepted; returns its message id.
    pub async fn accept_portal(&self, body: &[u8]) -> String {
        let r = self.post_portal(body).await;
        assert_eq!(r.status(), 200, "expected the webhook to be accepted");
        let v: serde_json::Value = r.json().await.unwrap();
        v["message_id"].as_str().unwrap().to_string()
    }

    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.admin))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
    }

    pub async fn admin_post(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.admin))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Deliveries with a given status, through the API.
    pub async fn deliveries(&self, query: &str) -> Vec<serde_json::Value> {
        let v: serde_json::Value = self
            .admin_get(&format!("/api/v1/deliveries?limit=1000&{query}"))
            .await
            .json()
            .await
            .unwrap();
        v["items"].as_array().unwrap().clone()
    }

    pub async fn stop(mut self) -> Backend {
        if let Some(r) = self.relay.take() {
            r.shutdown().await;
        }
        self.backend
    }
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/arcgis/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

pub fn hmac(key: &str, data: &[u8]) -> Vec<u8> {
    use hmac::Mac;
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// `sha256=<base64>`: the form of Esri's samples.
pub fn esri_signature(key: &str, data: &[u8]) -> String {
    format!(
        "sha256={}",
        base64::engine::general_purpose::STANDARD.encode(hmac(key, data))
    )
}

/// Polls `check` every 20 ms until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {timeout:?} waiting for: {what}");
}

/// How the local sink answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Ok,
    Status(u16),
    /// Status with a `Retry-After` in seconds.
    RetryAfter(u16, u64),
    /// Answer after this long (longer than the sink timeout = a timeout).
    Hang(Duration),
    /// Status with a body.
    Body(u16, String),
}

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

#[derive(Default)]
struct SinkInner {
    script: VecDeque<Reply>,
    received: Vec<Received>,
}

/// A real HTTP server on port 0 playing a webhook receiver.
#[derive(Clone)]
pub struct TestSink {
    pub addr: SocketAddr,
    inner: Arc<Mutex<SinkInner>>,
}

async fn sink_handler(
    State(inner): State<Arc<Mutex<SinkInner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let mut i = inner.lock().unwrap();
        i.received.push(Received {
            headers,
            body,
            at: Instant::now(),
        });
        i.script.pop_front().unwrap_or(Reply::Ok)
    };
    match reply {
        Reply::Ok => (StatusCode::OK, "ok").into_response(),
        Reply::Status(s) => (StatusCode::from_u16(s).unwrap(), "scripted failure").into_response(),
        Reply::RetryAfter(s, secs) => (
            StatusCode::from_u16(s).unwrap(),
            [("retry-after", secs.to_string())],
            "slow down",
        )
            .into_response(),
        Reply::Hang(d) => {
            tokio::time::sleep(d).await;
            (StatusCode::OK, "late").into_response()
        }
        Reply::Body(s, b) => (StatusCode::from_u16(s).unwrap(), b).into_response(),
    }
}

impl TestSink {
    pub async fn start() -> TestSink {
        let inner = Arc::new(Mutex::new(SinkInner::default()));
        let app = axum::Router::new()
            .fallback(sink_handler)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        TestSink { addr, inner }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Queues answers for the next requests; after them, 200.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.lock().unwrap().script.extend(replies);
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    pub fn count(&self) -> usize {
        self.inner.lock().unwrap().received.len()
    }

    /// How many times each message (by `x-hookrelay-message`) arrived.
    pub fn per_message(&self) -> std::collections::HashMap<String, usize> {
        let mut m = std::collections::HashMap::new();
        for r in self.received() {
            *m.entry(r.header("x-hookrelay-message").to_string())
                .or_default() += 1;
        }
        m
    }

    /// Waits until every one of these message ids has arrived at least once.
    pub async fn wait_for_messages(
        &self,
        ids: &std::collections::HashSet<String>,
        timeout: Duration,
    ) {
        eventually(timeout, "every acknowledged message delivered", || async {
            let seen = self.per_message();
            ids.iter().all(|m| seen.contains_key(m))
        })
        .await;
    }

    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        eventually(timeout, &format!("{n} requests at the sink"), || async {
            self.count() >= n
        })
        .await;
        self.received()
    }
}

/// A `[[sinks]]` block of kind http pointing at `sink`.
pub fn http_sink(name: &str, sink: &TestSink, extra: &str) -> String {
    format!(
        "[[sinks]]\nname = \"{name}\"\nkind = \"http\"\nurl = \"{}\"\n{extra}\n",
        sink.url()
    )
}

/// Rows in a table, read straight from the database (not through the relay).
pub async fn count_rows(backend: &Backend, table: &str) -> i64 {
    scalar(backend, &format!("SELECT COUNT(*) FROM {table}")).await
}

/// Runs a query returning one integer straight on the database.
pub async fn scalar(backend: &Backend, q: &str) -> i64 {
    match backend.kind {
        Kind::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&backend.url).await.unwrap();
            let n: i64 = sqlx::query_scalar(q).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        }
        Kind::Postgres => {
            let pool = sqlx::PgPool::connect(&backend.url).await.unwrap();
            let n: i64 = sqlx::query_scalar(q).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        }
    }
}

/// Runs one SQL statement straight on the database (fault injection).
pub async fn exec_sql(backend: &Backend, sql: &str) {
    match backend.kind {
        Kind::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&backend.url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
        Kind::Postgres => {
            let pool = sqlx::PgPool::connect(&backend.url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
}
