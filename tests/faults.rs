//! Fault injection: the relay killed again and again under load, a sink
//! that flaps in every way a network can, and SQLite on a full disk.
//! Each test reports acknowledged / delivered / lost / duplicated counts
//! (RELIABILITY.md collects them).

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::process::*;
use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

both_stores!(
    crash_loop_ten_sigkills_under_load,
    flapping_sinks_recover_with_nothing_dead
);

async fn crash_loop_ten_sigkills_under_load(b: Backend) {
    let sink = TestSink::start().await;
    // A short attempt timeout keeps Postgres lease takeovers short.
    let cfg = write_config(
        b.dir.path(),
        &config_text(&b.url, &http_sink("out", &sink, "timeout = \"1s\"")),
    );
    let relay = Arc::new(Mutex::new(RelayProcess::start(&cfg, b.dir.path())));
    let url = Arc::new(Mutex::new(format!(
        "{}/hooks/portal",
        relay.lock().unwrap().ingress
    )));
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let acked: Arc<Mutex<HashSet<String>>> = Default::default();
    let failed = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut senders = Vec::new();
    for _ in 0..8 {
        let (client, url, stop, next, acked, failed) = (
            client.clone(),
            url.clone(),
            stop.clone(),
            next.clone(),
            acked.clone(),
            failed.clone(),
        );
        senders.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let u = url.lock().unwrap().clone();
                let r = client
                    .post(u)
                    .header("secret", PORTAL_SECRET)
                    .body(unique_portal(n))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        let v: Value = r.json().await.unwrap();
                        acked
                            .lock()
                            .unwrap()
                            .insert(v["message_id"].as_str().unwrap().to_string());
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }));
    }
    for kill in 0..10 {
        // A random moment: 150-750 ms of traffic, then SIGKILL and restart.
        let wait = 150 + (rand_u64() % 600);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let cfg = cfg.clone();
        let dir = b.dir.path().to_path_buf();
        let r = relay.clone();
        let new_url = tokio::task::spawn_blocking(move || {
            let mut g = r.lock().unwrap();
            g.sigkill();
            *g = RelayProcess::start(&cfg, &dir);
            format!("{}/hooks/portal", g.ingress)
        })
        .await
        .unwrap();
        *url.lock().unwrap() = new_url;
        eprintln!("kill {} done after {wait} ms", kill + 1);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let sent = next.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    sink.wait_for_messages(&acked, Duration::from_secs(120))
        .await;
    let t = sink.per_message();
    let dups: usize = t.values().map(|n| n - 1).sum();
    let unacked = t.keys().filter(|k| !acked.contains(*k)).count();
    let lost = acked.iter().filter(|m| !t.contains_key(*m)).count();
    eprintln!(
        "RELIABILITY crash-loop {:?}: sent {sent}, acknowledged {}, failed {failed}, delivered {} distinct, \
         lost {lost}, duplicates {dups}, committed-but-unacknowledged delivered {unacked}",
        b.kind,
        acked.len(),
        t.len()
    );
    assert_eq!(lost, 0);
    assert!(
        unacked <= failed,
        "only requests whose answer was lost may be delivered unacknowledged"
    );
    assert!(acked.len() > 100, "the load kept flowing between kills");
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..8]);
    u64::from_le_bytes(b)
}

/// How the flapping server treats one connection.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Ok,
    Status500,
    TooMany,
    ResetBeforeAnswer,
    ResetMidAnswer,
    Slow,
}

/// A raw TCP sink: reads one HTTP request per connection, then answers
/// according to a script; after `flaps` faults it recovers for good.
struct FlappingSink {
    url: String,
    delivered: Arc<Mutex<Vec<String>>>,
}

async fn read_request(s: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some((head, buf[end + 4..end + 4 + len].to_vec()));
        }
    }
}

impl FlappingSink {
    async fn start(faults: Vec<Fault>) -> FlappingSink {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        let delivered: Arc<Mutex<Vec<String>>> = Default::default();
        let script = Arc::new(Mutex::new(
            faults
                .into_iter()
                .collect::<std::collections::VecDeque<_>>(),
        ));
        let d = delivered.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let (script, d) = (script.clone(), d.clone());
                tokio::spawn(async move {
                    // One request per connection keeps faults per request.
                    let Some((head, _body)) = read_request(&mut s).await else {
                        return;
                    };
                    let fault = script.lock().unwrap().pop_front().unwrap_or(Fault::Ok);
                    let msg = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("x-hookrelay-message:")
                                .map(|v| v.trim().to_string())
                        })
                        .unwrap_or_default();
                    let answer: &[u8] = match fault {
                        Fault::Ok => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        Fault::Status500 => b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        Fault::TooMany => b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        Fault::ResetBeforeAnswer => b"",
                        Fault::ResetMidAnswer => b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial",
                        Fault::Slow => {
                            tokio::time::sleep(Duration::from_secs(3)).await;
                            b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nlate"
                        }
                    };
                    let _ = s.write_all(answer).await;
                    if matches!(fault, Fault::Ok) {
                        d.lock().unwrap().push(msg);
                    }
                    // Zero linger turns the close into an RST: exactly the
                    // reset these faults are about (and with zero linger the
                    // drop does not block).
                    #[allow(deprecated)]
                    let _ = s.set_linger(Some(Duration::ZERO));
                });
            }
        });
        FlappingSink { url, delivered }
    }
}

/// A TLS endpoint whose first `bad` connections fail the handshake (it
/// answers with bytes that are not TLS), then serves HTTPS properly.
async fn flaky_tls_sink(
    dir: &std::path::Path,
    bad: usize,
) -> (String, std::path::PathBuf, Arc<AtomicUsize>) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let ca = dir.join("flaky-ca.pem");
    std::fs::write(&ca, ck.cert.pem()).unwrap();
    let certs = vec![ck.cert.der().clone()];
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let cfg = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://127.0.0.1:{}/hook", l.local_addr().unwrap().port());
    let ok = Arc::new(AtomicUsize::new(0));
    let okc = ok.clone();
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            seen += 1;
            if seen <= bad {
                let _ = s.write_all(b"this is not a TLS server hello\r\n").await;
                continue;
            }
            let (acceptor, okc) = (acceptor.clone(), okc.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let Ok(n) = tls.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                okc.fetch_add(1, Ordering::Relaxed);
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (url, ca, ok)
}

async fn flapping_sinks_recover_with_nothing_dead(b: Backend) {
    use Fault::*;
    let faults = vec![
        Status500,
        TooMany,
        ResetBeforeAnswer,
        Slow,
        ResetMidAnswer,
        Status500,
        TooMany,
        ResetBeforeAnswer,
        Slow,
        Status500,
        ResetMidAnswer,
        Status500,
    ];
    let n_faults = faults.len();
    let flappy = FlappingSink::start(faults).await;
    let (tls_url, ca, tls_ok) = flaky_tls_sink(b.dir.path(), 4).await;
    let extra = format!(
        r#"
[[sinks]]
name = "flappy"
kind = "http"
url = "{}"
timeout = "500ms"
initial_backoff = "100ms"
max_backoff = "400ms"
max_attempts = 30
concurrency = 2
circuit = {{ failures = 1000, probe_interval = "1s" }}

[[sinks]]
name = "tls"
kind = "http"
url = "{tls_url}"
ca_file = "{}"
initial_backoff = "100ms"
max_backoff = "400ms"
max_attempts = 30
"#,
        flappy.url,
        ca.display()
    );
    let app = spawn_app(b, &extra).await;
    let mut ids = Vec::new();
    for n in 0..8 {
        ids.push(app.accept_portal(&unique_portal(n)).await);
    }
    eventually(
        Duration::from_secs(60),
        "all 16 deliveries delivered",
        || async { app.deliveries("status=delivered").await.len() == 16 },
    )
    .await;
    assert!(
        app.deliveries("status=dead").await.is_empty(),
        "nothing dead that should not be"
    );
    assert_eq!(tls_ok.load(Ordering::Relaxed), 8);
    let got: HashSet<String> = flappy.delivered.lock().unwrap().iter().cloned().collect();
    assert!(ids.iter().all(|i| got.contains(i)));

    // Retries were spaced as configured: with jitter fixed at 1.0 the delay
    // after failed attempt n is min(100 ms * 2^(n-1), 400 ms), or the
    // Retry-After of 1 s (capped to 400 ms by max_backoff).
    let mut failures_seen = 0;
    let mut errors: Vec<String> = Vec::new();
    for id in &ids {
        let m: Value = app
            .admin_get(&format!("/api/v1/messages/{id}"))
            .await
            .json()
            .await
            .unwrap();
        for d in m["deliveries"].as_array().unwrap() {
            let log = d["attempts_log"].as_array().unwrap();
            for w in log.windows(2) {
                let (a, next) = (&w[0], &w[1]);
                let n = a["attempt"].as_i64().unwrap() as u32;
                let cap = (100u64 << (n - 1)).min(400) as i64;
                let earliest =
                    a["started_at"].as_i64().unwrap() + a["duration_ms"].as_i64().unwrap() + cap;
                assert!(
                    next["started_at"].as_i64().unwrap() >= earliest - 5,
                    "attempt {} came too early: {a} then {next}",
                    n + 1
                );
                failures_seen += 1;
                errors.push(a["error"].as_str().unwrap_or("").to_string());
            }
        }
    }
    eprintln!("RELIABILITY sink-faults: 16 deliveries, {failures_seen} failed attempts ({n_faults} scripted + 4 TLS), all delivered, 0 dead; errors: {errors:?}");
    assert!(failures_seen >= n_faults + 4);
    assert!(errors.iter().any(|e| e.contains("timed out")));
    assert!(errors.iter().any(|e| e.contains("HTTP 429")));
    app.stop().await;
}

/// SQLite on a tiny file system that fills up: 503 while full, everything
/// acknowledged kept, no manual step and no corruption when space returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_full_disk_answers_503_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=3m",
            "tmpfs",
            mnt.to_str().unwrap(),
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        assert!(
            std::env::var("CI").is_err(),
            "CI runs as root and must be able to mount a tmpfs"
        );
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let sink = TestSink::start().await;
    let backend = Backend {
        kind: Kind::Sqlite,
        url: format!("sqlite://{}/relay.db", mnt.display()),
        dir: tempfile::tempdir().unwrap(),
    };
    let app = spawn_app(backend, &http_sink("out", &sink, "")).await;
    let mut acked = HashSet::new();
    for n in 0..20 {
        acked.insert(app.accept_portal(&unique_portal(n)).await);
    }
    // Fill the file system.
    let filler = mnt.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    let mut refused = 0;
    let mut n = 100;
    // Requests may still fit in WAL pages SQLite reuses; large bodies make
    // the files grow until the file system refuses.
    let padding = "x".repeat(40_000);
    while refused < 3 && n < 400 {
        let mut doc: Value = serde_json::from_slice(&unique_portal(n)).unwrap();
        doc["events"][0]["properties"]["padding"] = Value::from(padding.as_str());
        let r = app.post_portal(&serde_json::to_vec(&doc).unwrap()).await;
        n += 1;
        match r.status().as_u16() {
            200 => {
                acked.insert(
                    r.json::<Value>().await.unwrap()["message_id"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                );
            }
            503 => {
                assert_eq!(r.headers()["retry-after"], "5");
                refused += 1;
            }
            s => panic!("unexpected {s} on a full disk"),
        }
    }
    assert_eq!(refused, 3, "a full disk must answer 503");
    std::fs::remove_file(&filler).unwrap();
    // No manual step: the next requests are stored again.
    for k in 0..10 {
        acked.insert(app.accept_portal(&unique_portal(1000 + k)).await);
    }
    sink.wait_for_messages(&acked, Duration::from_secs(30))
        .await;
    // Through a fresh connection: what is really in the file.
    assert_eq!(
        count_rows(&app.backend, "messages").await as usize,
        acked.len()
    );
    let pool = sqlx::SqlitePool::connect(&app.backend.url).await.unwrap();
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    eprintln!("RELIABILITY full-disk sqlite: acknowledged {}, refused {refused}, delivered all, integrity_check ok", acked.len());
    pool.close().await;
    app.stop().await;
}
