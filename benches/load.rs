//! Load harness: the release binary as its own process(es), a local sink,
//! and concurrent senders on loopback. Prints Markdown rows for
//! BENCHMARKS.md.
//!
//! ```text
//! cargo bench --bench load                       # SQLite, 1 process
//! cargo bench --bench load -- --store postgres   # needs HOOKRELAY_BENCH_POSTGRES_URL
//! cargo bench --bench load -- --store postgres --processes 2
//! cargo bench --bench load -- --messages 20000 --seconds 10
//! ```
//!
//! Workloads:
//! 1. ingress: N senders post unique Portal payloads for `--seconds`; the
//!    sink is paused, so this measures verify + parse + route + commit.
//!    Reports acknowledged/s and p50/p99 acknowledgement latency.
//! 2. end-to-end: `--messages` payloads posted by 64 senders to relays whose
//!    sink is active; time from the first post to the last delivery at the
//!    local sink. Reports deliveries/s.
//!
//! Memory: peak and final resident set size of each relay process, from
//! /proc/<pid>/status (VmHWM, VmRSS).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use common::*;

struct Args {
    store: String,
    processes: usize,
    seconds: u64,
    messages: usize,
}

fn args() -> Args {
    let mut a = Args {
        store: "sqlite".into(),
        processes: 1,
        seconds: 10,
        messages: 20_000,
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < v.len() {
        match v[i].as_str() {
            "--store" => {
                a.store = v[i + 1].clone();
                i += 1;
            }
            "--processes" => {
                a.processes = v[i + 1].parse().unwrap();
                i += 1;
            }
            "--seconds" => {
                a.seconds = v[i + 1].parse().unwrap();
                i += 1;
            }
            "--messages" => {
                a.messages = v[i + 1].parse().unwrap();
                i += 1;
            }
            _ => {} // cargo bench passes --bench
        }
        i += 1;
    }
    a
}

async fn admin_post(client: &reqwest::Client, relay: &Relay, path: &str) {
    let r = client
        .post(format!("{}{path}", relay.admin))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Posts for `seconds` from `senders` tasks, round-robin over the relays.
async fn ingress(
    client: &reqwest::Client,
    relays: &[Relay],
    senders: usize,
    seconds: u64,
    run: u64,
) -> (usize, Vec<Duration>) {
    let next = Arc::new(AtomicUsize::new(0));
    let lat = Arc::new(Mutex::new(Vec::new()));
    let end = Instant::now() + Duration::from_secs(seconds);
    let urls: Vec<String> = relays
        .iter()
        .map(|r| format!("{}/hooks/portal", r.ingress))
        .collect();
    let mut tasks = Vec::new();
    for s in 0..senders {
        let (client, next, lat, url) = (
            client.clone(),
            next.clone(),
            lat.clone(),
            urls[s % urls.len()].clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while Instant::now() < end {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let t0 = Instant::now();
                let r = client
                    .post(&url)
                    .header("secret", SECRET)
                    .header("content-type", "application/json")
                    .body(payload(run, n))
                    .send()
                    .await;
                if matches!(&r, Ok(r) if r.status() == 200) {
                    mine.push(t0.elapsed());
                }
            }
            lat.lock().unwrap().extend(mine);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut l = std::mem::take(&mut *lat.lock().unwrap());
    l.sort();
    (l.len(), l)
}

#[tokio::main]
async fn main() {
    let a = args();
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(128)
        .build()
        .unwrap();
    let label = format!("{} x{}", a.store, a.processes);
    println!("| store | workload | result | p50 | p99 | relay RSS peak/final |");
    println!("|---|---|---|---|---|---|");

    // 1. Ingress only (sink paused), 16 and 64 senders.
    for (run, senders) in [(1u64, 16usize), (2, 64)] {
        let count = Arc::new(AtomicUsize::new(0));
        let sink = start_sink(count).await;
        let store = fresh_store(&a.store, dir.path()).await;
        let cfg = config(dir.path(), &store, &sink);
        let relays: Vec<Relay> = (0..a.processes).map(|_| Relay::start(&cfg)).collect();
        // Pause on every relay: a pause reaches the others only when they
        // next read the shared sink state.
        for r in &relays {
            admin_post(&client, r, "/api/v1/sinks/out/pause").await;
        }
        let (n, lat) = ingress(&client, &relays, senders, a.seconds, run).await;
        let rss: Vec<String> = relays.iter().map(rss_text).collect();
        println!(
            "| {label} | ingress, {senders} senders, {}s | {:.0} acknowledged/s | {:.1} ms | {:.1} ms | {} |",
            a.seconds,
            n as f64 / a.seconds as f64,
            percentile(&lat, 0.5).as_secs_f64() * 1000.0,
            percentile(&lat, 0.99).as_secs_f64() * 1000.0,
            rss.join(", ")
        );
    }

    // 2. End to end: post `messages` with the sink active.
    let count = Arc::new(AtomicUsize::new(0));
    let sink = start_sink(count.clone()).await;
    let store = fresh_store(&a.store, dir.path()).await;
    let cfg = config(dir.path(), &store, &sink);
    let relays: Vec<Relay> = (0..a.processes).map(|_| Relay::start(&cfg)).collect();
    let urls: Vec<String> = relays
        .iter()
        .map(|r| format!("{}/hooks/portal", r.ingress))
        .collect();
    let t0 = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let mut tasks = Vec::new();
    for s in 0..64 {
        let (client, next, acked, url, total) = (
            client.clone(),
            next.clone(),
            acked.clone(),
            urls[s % urls.len()].clone(),
            a.messages,
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return;
                }
                let r = client
                    .post(&url)
                    .header("secret", SECRET)
                    .header("content-type", "application/json")
                    .body(payload(99, n))
                    .send()
                    .await;
                if matches!(&r, Ok(r) if r.status() == 200) {
                    acked.lock().unwrap().insert(n);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let posted = t0.elapsed();
    let acked_n = acked.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(300);
    while count.load(Ordering::Relaxed) < acked_n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let done = t0.elapsed();
    let delivered = count.load(Ordering::Relaxed);
    let rss: Vec<String> = relays.iter().map(rss_text).collect();
    println!(
        "| {label} | end-to-end, {} messages, 64 senders | {:.0} deliveries/s ({delivered} delivered of {acked_n} acknowledged; posting took {:.1}s, last delivery at {:.1}s) | | | {} |",
        a.messages,
        delivered as f64 / done.as_secs_f64(),
        posted.as_secs_f64(),
        done.as_secs_f64(),
        rss.join(", ")
    );
}
