//! Soak: the release relay for a given time at a given rate, delivering to
//! a sink that flaps (500s, 429s with Retry-After, answers slower than the
//! timeout), then a drain. Reports throughput, resident memory over time and
//! the loss count. Long: not part of CI.
//!
//! ```text
//! cargo bench --bench soak -- --minutes 10 --rate 200
//! cargo bench --bench soak -- --minutes 10 --rate 200 --store postgres
//! ```

mod common;

use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use common::*;

struct Args {
    minutes: f64,
    rate: u64,
    store: String,
}

fn args() -> Args {
    let mut a = Args {
        minutes: 10.0,
        rate: 200,
        store: "sqlite".into(),
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < v.len() {
        match v[i].as_str() {
            "--minutes" => {
                a.minutes = v[i + 1].parse().expect("--minutes N");
                i += 1;
            }
            "--rate" => {
                a.rate = v[i + 1].parse().expect("--rate N");
                i += 1;
            }
            "--store" => {
                a.store = v[i + 1].clone();
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    a
}

/// A sink that fails about one request in six, in three different ways,
/// and records the message id of every request it accepts.
async fn flapping_sink(
    seen: Arc<Mutex<HashMap<String, usize>>>,
    requests: Arc<AtomicUsize>,
) -> String {
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let (seen, requests) = (seen.clone(), requests.clone());
        async move {
            let n = requests.fetch_add(1, Ordering::Relaxed);
            match n % 20 {
                3 | 11 => return (StatusCode::INTERNAL_SERVER_ERROR, "flap").into_response(),
                7 => {
                    return (
                        StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", "1")],
                        "slow down",
                    )
                        .into_response()
                }
                _ if n % 97 == 0 => {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    return (StatusCode::OK, "too late").into_response();
                }
                _ => {}
            }
            let id = headers
                .get("x-hookrelay-message")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            *seen.lock().unwrap().entry(id).or_default() += 1;
            (StatusCode::OK, "ok").into_response()
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}/hook")
}

#[tokio::main]
async fn main() {
    let a = args();
    let dir = tempfile::tempdir().unwrap();
    let seen: Arc<Mutex<HashMap<String, usize>>> = Default::default();
    let requests = Arc::new(AtomicUsize::new(0));
    let sink = flapping_sink(seen.clone(), requests.clone()).await;
    let store = fresh_store(&a.store, dir.path()).await;
    let cfg = config_with(
        dir.path(),
        &store,
        &sink,
        "timeout = \"1s\"\ninitial_backoff = \"500ms\"\nmax_backoff = \"5s\"\nmax_attempts = 50\n\
         circuit = { failures = 1000, probe_interval = \"1s\" }",
    );
    let relay = Relay::start(&cfg);
    let url = format!("{}/hooks/portal", relay.ingress);
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let acked: Arc<Mutex<HashSet<String>>> = Default::default();
    let refused = Arc::new(AtomicUsize::new(0));
    let duration = Duration::from_secs_f64(a.minutes * 60.0);
    let t0 = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / a.rate as f64));
    let mut samples = vec![(0u64, relay.rss_kib().1)];
    let mut last_sample = Instant::now();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
    let mut n = 0usize;
    while t0.elapsed() < duration {
        tick.tick().await;
        let permit = in_flight.clone().acquire_owned().await.unwrap();
        let (client, url, acked, refused) =
            (client.clone(), url.clone(), acked.clone(), refused.clone());
        let body = payload(7, n);
        n += 1;
        tokio::spawn(async move {
            let r = client
                .post(url)
                .header("secret", SECRET)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            match r {
                Ok(r) if r.status() == 200 => {
                    let v: serde_json::Value = r.json().await.unwrap_or_default();
                    if let Some(id) = v["message_id"].as_str() {
                        acked.lock().unwrap().insert(id.to_string());
                    }
                }
                _ => {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(permit);
        });
        if last_sample.elapsed() >= Duration::from_secs(10) {
            last_sample = Instant::now();
            samples.push((t0.elapsed().as_secs(), relay.rss_kib().1));
        }
    }
    let sending = t0.elapsed();
    let _ = in_flight.acquire_many(256).await;
    let acked = acked.lock().unwrap().clone();
    // Drain: everything acknowledged should arrive despite the flapping.
    let drain_start = Instant::now();
    while drain_start.elapsed() < Duration::from_secs(300) {
        let all_seen = {
            let s = seen.lock().unwrap();
            acked.iter().all(|m| s.contains_key(m))
        };
        if all_seen {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drained = drain_start.elapsed();
    let s = seen.lock().unwrap().clone();
    let lost = acked.iter().filter(|m| !s.contains_key(*m)).count();
    let dups: usize = s.values().map(|c| c - 1).sum();
    let (peak, end) = relay.rss_kib();
    let first = samples.get(1).map(|x| x.1).unwrap_or(samples[0].1);
    println!("| store | duration | rate | sent | acknowledged | refused | delivered | lost | duplicates | sink requests (incl. failures) | RSS after 10 s / end / peak | drain |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {:.1} min | {}/s | {n} | {} | {} | {} | {lost} | {dups} | {} | {:.0} / {:.0} / {:.0} MiB | {:.1} s |",
        a.store,
        sending.as_secs_f64() / 60.0,
        a.rate,
        acked.len(),
        refused.load(Ordering::Relaxed),
        s.len(),
        requests.load(Ordering::Relaxed),
        first as f64 / 1024.0,
        end as f64 / 1024.0,
        peak as f64 / 1024.0,
        drained.as_secs_f64()
    );
    println!();
    println!(
        "RSS samples (s, MiB): {}",
        samples
            .iter()
            .map(|(t, k)| format!("{t}:{:.0}", *k as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(" ")
    );
}
