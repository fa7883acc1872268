//! Shared pieces of the load and soak harnesses: the relay as a process,
//! a local sink, configs and fresh stores.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub const SECRET: &str = "bench-secret";
pub const TOKEN: &str = "bench-token";

pub struct Relay {
    pub child: Child,
    pub ingress: String,
    pub admin: String,
}

impl Relay {
    pub fn start(config: &std::path::Path) -> Relay {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
            .args(["--config", config.to_str().unwrap(), "serve"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start relay");
        let out = BufReader::new(child.stdout.take().unwrap());
        let (mut ingress, mut admin) = (String::new(), String::new());
        for line in out.lines().map_while(Result::ok) {
            if let Some(a) = line.strip_prefix("hookrelay: ingress listening on ") {
                ingress = a.to_string();
            }
            if let Some(a) = line.strip_prefix("hookrelay: admin listening on ") {
                admin = a.to_string();
                break;
            }
        }
        Relay {
            child,
            ingress,
            admin,
        }
    }

    pub fn rss_kib(&self) -> (u64, u64) {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |k: &str| {
            s.lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        (field("VmHWM:"), field("VmRSS:"))
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

pub fn payload(run: u64, n: usize) -> Vec<u8> {
    format!(
        r#"{{"info":{{"webhookName":"bench","portalURL":"https://gis.example.org/portal/","when":1}},"events":[{{"username":"u","when":{},"operation":"update","source":"item","id":"r{run}i{n}","properties":{{}}}}]}}"#,
        1_700_000_000_000u64 + n as u64
    )
    .into_bytes()
}

/// A minimal counting sink: every request answers 200 and counts.
pub async fn start_sink(count: Arc<AtomicUsize>) -> String {
    let app = axum::Router::new().fallback(move || {
        let c = count.clone();
        async move {
            c.fetch_add(1, Ordering::Relaxed);
            "ok"
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}/hook")
}

pub fn config(dir: &std::path::Path, store_url: &str, sink_url: &str) -> std::path::PathBuf {
    config_with(dir, store_url, sink_url, "")
}

/// A config whose sink block gets `sink_extra` (delivery overrides).
pub fn config_with(
    dir: &std::path::Path,
    store_url: &str,
    sink_url: &str,
    sink_extra: &str,
) -> std::path::PathBuf {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"
[store]
url = "{store_url}"
max_connections = 16
[delivery]
concurrency = 32
poll_interval = "200ms"
[[sources]]
name = "portal"
kind = "arcgis-portal"
secret = "{SECRET}"
[[sinks]]
name = "out"
kind = "http"
url = "{sink_url}"
{sink_extra}
"#
    );
    let p = dir.join(format!("bench-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&p, text).unwrap();
    p
}

pub async fn fresh_store(kind: &str, dir: &std::path::Path) -> String {
    match kind {
        "sqlite" => format!(
            "sqlite://{}/bench-{}.db",
            dir.display(),
            uuid::Uuid::new_v4().simple()
        ),
        _ => {
            use sqlx::Connection;
            let base = std::env::var("HOOKRELAY_BENCH_POSTGRES_URL")
                .or_else(|_| std::env::var("HOOKRELAY_TEST_POSTGRES_URL"))
                .expect(
                    "set HOOKRELAY_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres",
                );
            let mut c = sqlx::PgConnection::connect(&base).await.unwrap();
            let name = format!("hookrelay_bench_{}", uuid::Uuid::new_v4().simple());
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut c)
                .await
                .unwrap();
            let mut u = reqwest::Url::parse(&base).unwrap();
            u.set_path(&format!("/{name}"));
            u.to_string()
        }
    }
}

/// "peak/final MiB" for a relay.
pub fn rss_text(r: &Relay) -> String {
    let (p, f) = r.rss_kib();
    format!("{:.0}/{:.0} MiB", p as f64 / 1024.0, f as f64 / 1024.0)
}
