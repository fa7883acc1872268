//! Scale-out on Postgres: several relay processes on one database, a
//! SIGKILL of one of them, dedupe across processes, and Postgres itself
//! stopping and starting mid-run (on a private server the test starts, so
//! no other test is disturbed), a pool too small for the group-commit
//! loops to keep connections, a kept connection closed while idle, and a
//! NOTIFY waking another relay.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::process::*;
use common::*;
use hookrelay::app::RelayOptions;
use serde_json::Value;

fn shared_pg() -> Option<String> {
    match std::env::var("HOOKRELAY_TEST_POSTGRES_URL") {
        Ok(u) => Some(u),
        Err(_) => {
            eprintln!("SKIPPED: HOOKRELAY_TEST_POSTGRES_URL is not set");
            None
        }
    }
}

async fn pg_backend() -> Option<Backend> {
    shared_pg()?;
    Backend::new(Kind::Postgres).await
}

/// Two relay processes on `b`'s database with one http sink (`extra` adds
/// its delivery settings).
fn two_relays(b: &Backend, sink: &TestSink, extra: &str) -> (RelayProcess, RelayProcess) {
    let cfg = write_config(
        b.dir.path(),
        &config_text(&b.url, &http_sink("out", sink, extra)),
    );
    (
        RelayProcess::start(&cfg, b.dir.path()),
        RelayProcess::start(&cfg, b.dir.path()),
    )
}

/// Posts `total` unique payloads from 16 senders, spread over the relays
/// whose URLs are in `targets` (a target may be swapped while running).
/// Returns the acknowledged message ids and the number of failed requests.
async fn send_all(
    targets: Arc<Mutex<Vec<String>>>,
    total: usize,
    on_progress: impl Fn(usize) + Send + Sync + 'static,
) -> (HashSet<String>, usize) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let next = Arc::new(Mutex::new(0usize));
    let acked: Arc<Mutex<HashSet<String>>> = Default::default();
    let failed = Arc::new(Mutex::new(0usize));
    let on_progress = Arc::new(on_progress);
    let mut tasks = Vec::new();
    for s in 0..16 {
        let (client, next, acked, failed, targets, on_progress) = (
            client.clone(),
            next.clone(),
            acked.clone(),
            failed.clone(),
            targets.clone(),
            on_progress.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let n = {
                    let mut g = next.lock().unwrap();
                    if *g >= total {
                        return;
                    }
                    *g += 1;
                    *g - 1
                };
                let url = {
                    let t = targets.lock().unwrap();
                    format!("{}/hooks/portal", t[s % t.len()])
                };
                let r = client
                    .post(url)
                    .header("secret", PORTAL_SECRET)
                    .header("content-type", "application/json")
                    .body(unique_portal(n))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        let v: Value = r.json().await.unwrap();
                        let len = {
                            let mut a = acked.lock().unwrap();
                            a.insert(v["message_id"].as_str().unwrap().to_string());
                            a.len()
                        };
                        on_progress(len);
                    }
                    _ => *failed.lock().unwrap() += 1,
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let a = acked.lock().unwrap().clone();
    let f = *failed.lock().unwrap();
    (a, f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relays_share_the_work_without_double_claims() {
    let Some(b) = pg_backend().await else { return };
    let sink = TestSink::start().await;
    let (r1, r2) = two_relays(&b, &sink, "concurrency = 4");
    let targets = Arc::new(Mutex::new(vec![r1.ingress.clone(), r2.ingress.clone()]));
    let (acked, failed) = send_all(targets, 600, |_| {}).await;
    assert_eq!((acked.len(), failed), (600, 0));
    eventually(Duration::from_secs(60), "all delivered", || async {
        acked.iter().all(|m| sink.per_message().contains_key(m))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = sink.per_message();
    let dups: usize = t.values().map(|n| n - 1).sum();
    eprintln!(
        "two relays, normal operation: 600 acknowledged, {} delivered, {dups} duplicates",
        t.len()
    );
    assert_eq!(dups, 0, "no double claims in normal operation");
}

/// `action` ("pause" or "resume") on sink `out` through `via`'s admin API,
/// then waits until `other` reports the sink as `want`.
async fn switch_and_see(
    client: &reqwest::Client,
    via: &RelayProcess,
    other: &RelayProcess,
    action: &str,
    want: &str,
) {
    let r = client
        .post(format!("{}/api/v1/sinks/out/{action}", via.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{action}");
    eventually(
        Duration::from_secs(10),
        &format!("the other relay sees {want}"),
        || async {
            let v: Value = client
                .get(format!("{}/api/v1/sinks", other.admin))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["items"][0]["state"] == want
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pause_through_one_relay_reaches_the_other() {
    let Some(b) = pg_backend().await else { return };
    let sink = TestSink::start().await;
    let (r1, r2) = two_relays(&b, &sink, "");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    switch_and_see(&client, &r1, &r2, "pause", "paused").await;
    // Webhooks taken in by relay 2 wait, as they would on relay 1.
    let r = client
        .post(format!("{}/hooks/portal", r2.ingress))
        .header("content-type", "application/json")
        .header("secret", PORTAL_SECRET)
        .body(unique_portal(1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sink.count(), 0, "no relay sends for a paused sink");
    // Resumed through relay 2: relay 1 follows and the webhook goes out.
    switch_and_see(&client, &r2, &r1, "resume", "active").await;
    sink.wait_for(1, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_one_relay_hands_its_leases_to_the_other() {
    let Some(b) = pg_backend().await else { return };
    let sink = TestSink::start().await;
    // A short timeout keeps the lease (and so the takeover) short.
    let cfg = write_config(
        b.dir.path(),
        &config_text(&b.url, &http_sink("out", &sink, "timeout = \"1s\"")),
    );
    let r1 = Arc::new(Mutex::new(RelayProcess::start(&cfg, b.dir.path())));
    let r2 = RelayProcess::start(&cfg, b.dir.path());
    let survivor = r2.ingress.clone();
    let targets = Arc::new(Mutex::new(vec![
        r1.lock().unwrap().ingress.clone(),
        r2.ingress.clone(),
    ]));
    let (t2, k1) = (targets.clone(), r1.clone());
    let killed = Arc::new(Mutex::new(false));
    let kflag = killed.clone();
    let (acked, failed) = send_all(targets, 2000, move |n| {
        if n >= 1000 && !*kflag.lock().unwrap() {
            *kflag.lock().unwrap() = true;
            k1.lock().unwrap().sigkill();
            // The load balancer notices and sends everything to the survivor.
            *t2.lock().unwrap() = vec![survivor.clone()];
        }
    })
    .await;
    assert!(*killed.lock().unwrap());
    sink.wait_for_messages(&acked, Duration::from_secs(90))
        .await;
    let t = sink.per_message();
    let dups: usize = t.values().map(|n| n - 1).sum();
    let unacked = t.keys().filter(|k| !acked.contains(*k)).count();
    eprintln!(
        "two relays, one SIGKILLed at 1000 acknowledged: sent 2000, acknowledged {}, failed {failed}, \
         delivered {} distinct, duplicates {dups}, committed-but-unacknowledged delivered {unacked}",
        acked.len(),
        t.len()
    );
    assert_eq!(acked.len() + failed, 2000);
    assert!(unacked <= failed);
    drop(r2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dedupe_holds_across_processes() {
    let Some(b) = pg_backend().await else { return };
    let sink = TestSink::start().await;
    let (r1, r2) = two_relays(&b, &sink, "");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for round in 0..10 {
        let body = unique_portal(10_000 + round);
        let mut reqs = Vec::new();
        for i in 0..6 {
            let url = format!(
                "{}/hooks/portal",
                if i % 2 == 0 { &r1.ingress } else { &r2.ingress }
            );
            let (c, body) = (client.clone(), body.clone());
            reqs.push(tokio::spawn(async move {
                let r = c
                    .post(url)
                    .header("secret", PORTAL_SECRET)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                r.json::<Value>().await.unwrap()
            }));
        }
        let mut accepted = 0;
        let mut ids = HashSet::new();
        for r in reqs {
            let v = r.await.unwrap();
            ids.insert(v["message_id"].as_str().unwrap().to_string());
            if v.get("duplicate").is_none() {
                accepted += 1;
            }
        }
        assert_eq!(
            accepted, 1,
            "round {round}: exactly one of six concurrent re-sends is new"
        );
        assert_eq!(ids.len(), 1, "duplicates name the first message");
    }
    sink.wait_for(10, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.count(), 10);
}

/// A private Postgres server in a temp dir, so stopping it disturbs no one.
struct PgServer {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
}

impl PgServer {
    fn start(parent: &Path) -> Option<PgServer> {
        let version = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .max()?;
        let bin = version.join("bin");
        if !bin.join("initdb").exists() {
            return None;
        }
        let dir = parent.join("pgdata");
        std::fs::create_dir_all(&dir).unwrap();
        // Postgres refuses to run as root: hand the directory to `postgres`.
        let _ = Command::new("chown")
            .args(["-R", "postgres", parent.to_str().unwrap()])
            .status();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let s = PgServer { dir, port, bin };
        let ok = s.as_postgres(&[
            s.bin.join("initdb").to_str().unwrap(),
            "-D",
            s.dir.to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
        ]);
        if !ok {
            return None;
        }
        s.up();
        Some(s)
    }

    fn as_postgres(&self, args: &[&str]) -> bool {
        let out = Command::new("runuser")
            .arg("-u")
            .arg("postgres")
            .arg("--")
            .args(args)
            .output();
        matches!(out, Ok(o) if o.status.success())
    }

    fn up(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        assert!(self.as_postgres(&[
            self.bin.join("pg_ctl").to_str().unwrap(),
            "-D",
            self.dir.to_str().unwrap(),
            "-o",
            &opts,
            "-l",
            self.dir.join("log").to_str().unwrap(),
            "-w",
            "start",
        ]));
    }

    fn down(&self) {
        assert!(self.as_postgres(&[
            self.bin.join("pg_ctl").to_str().unwrap(),
            "-D",
            self.dir.to_str().unwrap(),
            "-m",
            "immediate",
            "-w",
            "stop"
        ]));
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.as_postgres(&[
            self.bin.join("pg_ctl").to_str().unwrap(),
            "-D",
            self.dir.to_str().unwrap(),
            "-m",
            "immediate",
            "stop",
        ]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_stopping_answers_503_and_everything_resumes() {
    if shared_pg().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(pg) = PgServer::start(tmp.path()) else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must be able to start a private Postgres server"
        );
        eprintln!("SKIPPED: cannot start a private Postgres server here");
        return;
    };
    let sink = TestSink::start().await;
    let backend = Backend {
        kind: Kind::Postgres,
        url: pg.url(),
        dir: tempfile::tempdir().unwrap(),
    };
    let app = spawn_app(backend, &http_sink("out", &sink, "")).await;
    let mut acked = HashSet::new();
    for n in 0..20 {
        acked.insert(app.accept_portal(&unique_portal(n)).await);
    }
    pg.down();
    // Never a 200 for something that could not be committed.
    for n in 20..25 {
        let r = app.post_portal(&unique_portal(n)).await;
        assert_eq!(r.status(), 503, "request {n} while Postgres is down");
        assert_eq!(r.headers()["retry-after"], "5");
    }
    let r = app
        .client
        .get(format!("{}/readyz", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    pg.up();
    // No restart of the relay: the pool reconnects by itself.
    eventually(Duration::from_secs(30), "ready again", || async {
        app.client
            .get(format!("{}/readyz", app.admin))
            .send()
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false)
    })
    .await;
    for n in 25..40 {
        acked.insert(app.accept_portal(&unique_portal(n)).await);
    }
    sink.wait_for_messages(&acked, Duration::from_secs(30))
        .await;
    drop(app);
}

/// With a pool too small for the group-commit loops to keep connections
/// (`max_connections` below 4), they take one per batch instead, so
/// ingress, claims and the admin API all still get one.
#[tokio::test]
async fn a_two_connection_pool_still_accepts_delivers_and_answers() {
    let Some(b) = pg_backend().await else { return };
    let sink = TestSink::start().await;
    let text = config_text(&b.url, &http_sink("out", &sink, ""))
        .replace("[store]\n", "[store]\nmax_connections = 2\n");
    let app = Arc::new(spawn_app_text(b, &text, test_options()).await);
    let mut senders = tokio::task::JoinSet::new();
    for n in 0..40 {
        let app = app.clone();
        senders.spawn(async move { app.accept_portal(&unique_portal(n)).await });
    }
    let ids: HashSet<String> = senders.join_all().await.into_iter().collect();
    assert_eq!(ids.len(), 40);
    sink.wait_for_messages(&ids, Duration::from_secs(30)).await;
    // The sink has answered; the outcomes are committed in batches just
    // after, through the same two connections.
    eventually(
        Duration::from_secs(10),
        "40 delivered in the API",
        || async {
            let r = app.admin_get("/api/v1/deliveries?status=delivered").await;
            r.status() == 200
                && r.json::<Value>().await.unwrap()["items"]
                    .as_array()
                    .map(Vec::len)
                    == Some(40)
        },
    )
    .await;
    if let Ok(app) = Arc::try_unwrap(app) {
        app.stop().await;
    }
}

/// A relay that polls only once a minute still delivers, within seconds,
/// what another relay accepted: the accepting relay's NOTIFY wakes it.
/// The accepting relay does not dispatch, so only the other can deliver;
/// a burst after that (inside one 20 ms NOTIFY gap) arrives too. (The burst
/// passes even with hints dropped inside the gap, since the woken relay
/// re-reads the next due time while busy: the NOTIFY gap's trailing send
/// is covered by reasoning, not by this test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_notify_from_one_relay_wakes_another_before_its_poll() {
    let Some(b) = pg_backend().await else { return };
    let sink = TestSink::start().await;
    let sinks = http_sink("out", &sink, "");
    let slow_poll =
        config_text(&b.url, &sinks).replace("poll_interval = \"100ms\"", "poll_interval = \"60s\"");
    assert!(slow_poll.contains("\"60s\""));
    let cfg = write_config(b.dir.path(), &slow_poll);
    let delivering = RelayProcess::start(&cfg, b.dir.path());
    let text = config_text(&b.url, &sinks);
    let opts = RelayOptions {
        dispatch: false,
        ..test_options()
    };
    let accepting = spawn_app_text(b, &text, opts).await;
    // The delivering relay's LISTEN starts moments after it does: post
    // until the first webhook arrives (each post sends a NOTIFY). Without
    // NOTIFY nothing arrives before its 60 s poll.
    let mut ids = HashSet::new();
    let started = std::time::Instant::now();
    while sink.count() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nothing delivered: no NOTIFY reached the other relay"
        );
        ids.insert(accepting.accept_portal(&unique_portal(ids.len())).await);
        let arrived = async {
            while sink.count() == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), arrived).await;
    }
    for n in 0..5 {
        ids.insert(accepting.accept_portal(&unique_portal(100 + n)).await);
    }
    sink.wait_for_messages(&ids, Duration::from_secs(20)).await;
    drop(delivering);
    accepting.stop().await;
}

/// A group-commit loop keeps its connection between batches; one that sat
/// idle goes back through the pool (which pings it) before the next batch,
/// so a connection the server closed while idle costs no 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_closed_while_idle_costs_no_refused_webhook() {
    use sqlx::Connection;
    let Some(b) = pg_backend().await else { return };
    let sink = TestSink::start().await;
    let url = b.url.clone();
    let app = spawn_app(b, &http_sink("out", &sink, "")).await;
    app.accept_portal(&unique_portal(1)).await;
    // As an idle timeout or a restarted proxy would: close every
    // connection the relay holds, then leave it idle past KEEP_IDLE (1 s).
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(killed > 0, "the relay holds connections");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let r = app.post_portal(&unique_portal(2)).await;
    assert_eq!(r.status(), 200, "first webhook after the idle close");
    app.stop().await;
}
