//! Enrichment harness: the release binary as its own process, the ArcGIS
//! REST emulator of the tests (`tests/arcgis_emulator/`) on loopback, and a
//! counting sink with `format = "changes"`. Each webhook is an ArcGIS
//! Online payload whose `changesUrl` covers `--features` fresh edits; the
//! relay answers it, fetches the edits (one extractChanges job each) and
//! delivers the changes document. Prints a Markdown row for BENCHMARKS.md.
//!
//! ```text
//! cargo bench --bench enrich -- --features 10 --webhooks 500
//! cargo bench --bench enrich -- --features 1000 --webhooks 100
//! ```
//!
//! Reports enriched webhooks per second (first post to last delivery),
//! the bytes delivered, and the relay's peak and final RSS (VmHWM, VmRSS).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../tests/arcgis_emulator/mod.rs"]
mod arcgis_emulator;
mod common;

use arcgis_emulator::{Emulator, Switches};
use common::*;
use serde_json::json;

const KEY: &str = "bench-online-key";
const API_KEY: &str = "AAPKbenchKey0123456789";

fn arg(name: &str, default: usize) -> usize {
    let v: Vec<String> = std::env::args().collect();
    v.iter()
        .position(|a| a == name)
        .and_then(|i| v.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn sign(body: &[u8]) -> String {
    use base64::Engine;
    use hmac::Mac;
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
    m.update(body);
    format!(
        "sha256={}",
        base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
    )
}

#[tokio::main]
async fn main() {
    let features = arg("--features", 10);
    let webhooks = arg("--webhooks", 200);
    let emu = Emulator::start(Switches {
        api_keys: vec![API_KEY.into()],
        job_polls: 1,
        ..Switches::default()
    })
    .await;
    // Every webhook's window holds `features` edits of its own.
    let mut windows = Vec::with_capacity(webhooks);
    for w in 0..webhooks {
        let start = emu.server_gen();
        for i in 0..features {
            emu.add(
                0,
                json!({"WEBHOOK": w, "N": i, "STATUS": "Out of service", "NOTE": "inspection note"}),
                Some(json!({"x": -117.19 + i as f64 * 1e-4, "y": 34.05})),
            );
        }
        windows.push((start, emu.server_gen()));
    }
    let dir = tempfile::tempdir().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let bytes = Arc::new(AtomicUsize::new(0));
    let sink_url = {
        let (c, b) = (count.clone(), bytes.clone());
        let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
            let (c, b) = (c.clone(), b.clone());
            async move {
                b.fetch_add(body.len(), Ordering::Relaxed);
                c.fetch_add(1, Ordering::Relaxed);
                "ok"
            }
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        format!("http://{addr}/hook")
    };
    let store = fresh_store("sqlite", dir.path()).await;
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_body_bytes = 1048576
[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"
[store]
url = "{store}"
[delivery]
concurrency = 32
poll_interval = "200ms"
[[sources]]
name = "online"
kind = "arcgis-service"
secret = "{KEY}"
[sources.arcgis]
services = ["{}"]
api_key = "{API_KEY}"
poll_interval = "5ms"
max_features = 100000
[[sinks]]
name = "changes"
kind = "http"
url = "{sink_url}"
format = "changes"
"#,
        emu.service_url()
    );
    let path = dir.path().join("enrich.toml");
    std::fs::write(&path, text).unwrap();
    let relay = Relay::start(&path);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let t0 = Instant::now();
    let mut sends = tokio::task::JoinSet::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(16));
    for (start, end) in windows {
        let body = serde_json::to_vec(&json!([{
            "name": "bench", "layerId": 0, "orgId": "o", "serviceName": "Parcels",
            "lastUpdatedTime": 1_730_385_705_000i64,
            "changesUrl": emu.changes_url(start, end, "&async=true"),
            "events": ["FeaturesCreated"],
        }]))
        .unwrap();
        let (client, url, gate) = (client.clone(), relay.ingress.clone(), gate.clone());
        sends.spawn(async move {
            let _p = gate.acquire().await.unwrap();
            let r = client
                .post(format!("{url}/hooks/online"))
                .header("content-type", "application/json")
                .header("x-esriHook-Signature", sign(&body))
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        });
    }
    while sends.join_next().await.is_some() {}
    let acked = t0.elapsed();
    while count.load(Ordering::Relaxed) < webhooks {
        if t0.elapsed() > Duration::from_secs(600) {
            panic!(
                "only {} of {webhooks} delivered",
                count.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all = t0.elapsed();
    let (peak, last) = relay.rss_kib();
    println!(
        "| {features} features/webhook | {webhooks} webhooks | {:.1} enriched webhooks/s ({:.0} features/s) | all acknowledged in {:.2} s, all delivered in {:.2} s | {:.1} MB delivered | {}/{} MiB |",
        webhooks as f64 / all.as_secs_f64(),
        (webhooks * features) as f64 / all.as_secs_f64(),
        acked.as_secs_f64(),
        all.as_secs_f64(),
        bytes.load(Ordering::Relaxed) as f64 / 1e6,
        peak / 1024,
        last / 1024,
    );
}
