//! Crash safety with the real binary: SIGKILL in the middle of a stream of
//! requests loses nothing that was acknowledged; SIGTERM exits 0 cleanly.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::process::*;
use common::*;

both_stores!(
    sigkill_mid_stream_loses_no_acknowledged_message,
    sigterm_shuts_down_cleanly
);

async fn sigkill_mid_stream_loses_no_acknowledged_message(b: Backend) {
    let sink = TestSink::start().await;
    let cfg = write_config(
        b.dir.path(),
        &config_text(&b.url, &http_sink("out", &sink, "")),
    );
    let mut relay = RelayProcess::start(&cfg, b.dir.path());
    let total = 400usize;
    let acked: Arc<Mutex<HashSet<String>>> = Default::default();
    let failed = Arc::new(Mutex::new(0usize));
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let url = Arc::new(Mutex::new(format!("{}/hooks/portal", relay.ingress)));

    // 8 concurrent senders; the relay is killed once 150 are acknowledged.
    let next = Arc::new(Mutex::new(0usize));
    let mut senders = Vec::new();
    for _ in 0..8 {
        let (client, acked, failed, url, next) = (
            client.clone(),
            acked.clone(),
            failed.clone(),
            url.clone(),
            next.clone(),
        );
        senders.push(tokio::spawn(async move {
            loop {
                let n = {
                    let mut g = next.lock().unwrap();
                    if *g >= total {
                        return;
                    }
                    *g += 1;
                    *g - 1
                };
                let u = url.lock().unwrap().clone();
                let r = client
                    .post(u)
                    .header("secret", PORTAL_SECRET)
                    .header("content-type", "application/json")
                    .body(process_unique(n))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        let v: serde_json::Value = r.json().await.unwrap();
                        acked
                            .lock()
                            .unwrap()
                            .insert(v["message_id"].as_str().unwrap().to_string());
                    }
                    _ => {
                        *failed.lock().unwrap() += 1;
                        // The sender (like ArcGIS) gives up on this one.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    eventually(Duration::from_secs(30), "150 acknowledged", || async {
        acked.lock().unwrap().len() >= 150
    })
    .await;
    relay.sigkill();
    let acked_before_kill = acked.lock().unwrap().len();
    // Restart on the same store while the senders keep going.
    let relay2 = RelayProcess::start(&cfg, b.dir.path());
    *url.lock().unwrap() = format!("{}/hooks/portal", relay2.ingress);
    for s in senders {
        s.await.unwrap();
    }
    let acked: HashSet<String> = acked.lock().unwrap().clone();
    // Every acknowledged message reaches the sink.
    sink.wait_for_messages(&acked, Duration::from_secs(60))
        .await;
    let per_message = sink.per_message();
    let duplicates: usize = per_message.values().map(|n| n - 1).sum();
    let unacked_delivered = per_message.keys().filter(|k| !acked.contains(*k)).count();
    let failed = *failed.lock().unwrap();
    eprintln!(
        "crash report ({:?}): sent {total}, acknowledged {} ({acked_before_kill} before the kill), \
         refused/failed {failed}, delivered {} distinct, duplicates {duplicates}, \
         committed-but-unacknowledged delivered {unacked_delivered}",
        b.kind,
        acked.len(),
        per_message.len()
    );
    assert_eq!(acked.len() + failed, total);
    // A message whose answer was lost in the kill may still have been
    // committed: never more of those than requests that failed.
    assert!(unacked_delivered <= failed);
    drop(relay2);
}

fn process_unique(n: usize) -> Vec<u8> {
    unique_portal(n)
}

async fn sigterm_shuts_down_cleanly(b: Backend) {
    let sink = TestSink::start().await;
    sink.script([Reply::Hang(Duration::from_secs(30))]);
    let cfg = write_config(
        b.dir.path(),
        &config_text(&b.url, &http_sink("out", &sink, "timeout = \"60s\"")),
    );
    let mut relay = RelayProcess::start(&cfg, b.dir.path());
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = client
        .post(format!("{}/hooks/portal", relay.ingress))
        .header("secret", PORTAL_SECRET)
        .body(fixture("portal-item-share.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sink.wait_for(1, Duration::from_secs(10)).await; // attempt hanging in flight
    let code = tokio::task::spawn_blocking(move || {
        let c = relay.sigterm(Duration::from_secs(20));
        (c, relay.log())
    })
    .await
    .unwrap();
    assert_eq!(code.0, Some(0), "log:\n{}", code.1);
    assert!(
        code.1.contains("released unfinished deliveries"),
        "log:\n{}",
        code.1
    );
    // The released delivery is pending again, due now: a new relay sends it.
    let relay = RelayProcess::start(&cfg, b.dir.path());
    sink.wait_for(2, Duration::from_secs(10)).await;
    drop(relay);
}
