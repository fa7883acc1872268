//! Group-committed batches at the store boundary, on both stores: one
//! `ingest` or `complete` call carries many rows, written with a few
//! multi-row statements. These tests pin down what the per-row version did:
//! dedupe decided in batch order, batches larger than one statement, stale
//! leases ignored row by row.

mod common;

use common::*;
use hookrelay::app::RelayOptions;
use hookrelay::store::{
    now_ms, AttemptRecord, Completion, IngestOutcome, Millis, NewDelivery, NewMessage, NextState,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_wal_stays_bounded_under_continuous_writes() {
    // The WAL is copied into the database in the background, and the
    // writer's own checkpoint (at 4,000 pages) is what lets the WAL start
    // over. Write far more than that without pause: the WAL file must stay
    // near that bound instead of holding everything written.
    let b = Backend::new(Kind::Sqlite).await.unwrap();
    let (app, _sink) = quiet_app(b).await;
    let store = app.relay().store.clone();
    let wal = app.backend.dir.path().join("relay.db-wal");
    let body = vec![b'x'; 6_000];
    let mut biggest = 0;
    for round in 0..24 {
        let now = now_ms();
        let batch: Vec<NewMessage> = (0..400)
            .map(|i| {
                let mut m = message("portal", &format!("r{round}k{i}"), 0, now, &["out"]);
                m.body = body.clone();
                m
            })
            .collect();
        store.ingest(&batch, now).await.unwrap();
        biggest = biggest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
    }
    // 9,600 messages of 6 KB: about 60 MB went through the WAL.
    assert_eq!(count_rows(&app.backend, "messages").await, 9_600);
    assert!(
        biggest < 24 * 1024 * 1024,
        "WAL grew to {} MiB",
        biggest / 1024 / 1024
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_wal_is_copied_into_the_database_in_the_background() {
    // Well under the writer's own checkpoint bound (4,000 pages): only the
    // background checkpointer moves these pages into the database file.
    let b = Backend::new(Kind::Sqlite).await.unwrap();
    let (app, _sink) = quiet_app(b).await;
    let store = app.relay().store.clone();
    let db = app.backend.dir.path().join("relay.db");
    let now = now_ms();
    let batch: Vec<NewMessage> = (0..300)
        .map(|i| {
            let mut m = message("portal", &format!("k{i}"), 0, now, &["out"]);
            m.body = vec![b'x'; 6_000];
            m
        })
        .collect();
    store.ingest(&batch, now).await.unwrap();
    eventually(
        std::time::Duration::from_secs(5),
        "the database file holds the 1.8 MB just written",
        || async { std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0) > 1_500_000 },
    )
    .await;
    app.stop().await;
}

both_stores!(
    batch_dedupe_follows_batch_order,
    large_batches_are_written_whole,
    batched_completion_checks_each_lease,
);

fn message(source: &str, key: &str, window_ms: i64, now: Millis, sinks: &[&str]) -> NewMessage {
    NewMessage {
        id: uuid::Uuid::now_v7().to_string().into(),
        source: source.into(),
        received_at: now,
        content_type: "application/json".into(),
        headers: "{}".into(),
        body: format!("{{\"k\":\"{key}\"}}").into_bytes(),
        events: "[]".into(),
        dedupe_key: key.into(),
        dedupe_window_ms: window_ms,
        deliveries: sinks
            .iter()
            .map(|s| NewDelivery {
                id: uuid::Uuid::now_v7().to_string().into(),
                sink: (*s).into(),
                events: "[0]".into(),
                parked: false,
            })
            .collect(),
        fetch: false,
    }
}

fn accepted(o: &IngestOutcome) -> Option<&str> {
    match o {
        IngestOutcome::Accepted { message_id, .. } => Some(message_id),
        IngestOutcome::Duplicate { .. } => None,
    }
}

fn duplicate_of(o: &IngestOutcome) -> Option<&str> {
    match o {
        IngestOutcome::Duplicate { message_id } => Some(message_id),
        IngestOutcome::Accepted { .. } => None,
    }
}

async fn quiet_app(b: Backend) -> (TestApp, TestSink) {
    let sink = TestSink::start().await;
    let opts = RelayOptions {
        dispatch: false,
        ..test_options()
    };
    let extra = format!(
        "{}{}",
        http_sink("out", &sink, ""),
        http_sink("copy", &sink, "")
    );
    (spawn_app_with(b, &extra, opts).await, sink)
}

async fn batch_dedupe_follows_batch_order(b: Backend) {
    let (app, _sink) = quiet_app(b).await;
    let store = app.relay().store.clone();
    let now = now_ms();
    let batch = vec![
        message("portal", "a", 60_000, now, &["out"]),
        message("portal", "b", 60_000, now, &["out"]),
        message("portal", "a", 60_000, now, &["out"]), // repeat inside the batch
        message("other", "a", 1_000, now, &["out"]),   // same key, other source
        message("portal", "c", 0, now, &["out"]),      // dedupe off
        message("portal", "c", 0, now, &["out"]),
    ];
    let out = store.ingest(&batch, now).await.unwrap();
    assert_eq!(out.len(), batch.len(), "one outcome per message, in order");
    assert_eq!(accepted(&out[0]), Some(batch[0].id.as_str()));
    assert_eq!(accepted(&out[1]), Some(batch[1].id.as_str()));
    assert_eq!(
        duplicate_of(&out[2]),
        Some(batch[0].id.as_str()),
        "the first occurrence in the batch wins"
    );
    assert_eq!(accepted(&out[3]), Some(batch[3].id.as_str()));
    assert_eq!(accepted(&out[4]), Some(batch[4].id.as_str()));
    assert_eq!(accepted(&out[5]), Some(batch[5].id.as_str()));
    assert_eq!(count_rows(&app.backend, "messages").await, 5);
    assert_eq!(count_rows(&app.backend, "deliveries").await, 5);

    // A later batch: inside the window a duplicate of the stored message,
    // after it a new message that takes the key over.
    let inside = vec![message("portal", "a", 60_000, now + 1_000, &["out"])];
    let out = store.ingest(&inside, now + 1_000).await.unwrap();
    assert_eq!(duplicate_of(&out[0]), Some(batch[0].id.as_str()));
    let after = vec![
        message("portal", "a", 60_000, now + 61_000, &["out"]),
        message("portal", "a", 60_000, now + 61_000, &["out"]),
        message("other", "a", 1_000, now + 61_000, &["out"]),
    ];
    let out = store.ingest(&after, now + 61_000).await.unwrap();
    assert_eq!(accepted(&out[0]), Some(after[0].id.as_str()));
    assert_eq!(duplicate_of(&out[1]), Some(after[0].id.as_str()));
    assert_eq!(accepted(&out[2]), Some(after[2].id.as_str()));
    assert_eq!(count_rows(&app.backend, "messages").await, 7);
    app.stop().await;
}

async fn large_batches_are_written_whole(b: Backend) {
    let (app, _sink) = quiet_app(b).await;
    let store = app.relay().store.clone();
    let now = now_ms();
    // More rows than one statement carries, two deliveries each.
    let batch: Vec<NewMessage> = (0..1_234)
        .map(|i| message("portal", &format!("k{i}"), 60_000, now, &["out", "copy"]))
        .collect();
    let out = store.ingest(&batch, now).await.unwrap();
    assert!(out
        .iter()
        .zip(&batch)
        .all(|(o, m)| accepted(o) == Some(&m.id)));
    assert_eq!(count_rows(&app.backend, "messages").await, 1_234);
    assert_eq!(count_rows(&app.backend, "deliveries").await, 2_468);
    assert_eq!(count_rows(&app.backend, "dedupe").await, 1_234);
    // Bodies come back byte for byte through a claim.
    let claimed = store
        .claim(&"copy".into(), 2_000, now, now + 60_000)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1_234);
    for c in &claimed {
        let m = batch.iter().find(|m| m.id == c.message_id).unwrap();
        assert_eq!(c.body, m.body);
    }
    app.stop().await;
}

async fn batched_completion_checks_each_lease(b: Backend) {
    let (app, _sink) = quiet_app(b).await;
    let store = app.relay().store.clone();
    let now = now_ms();
    let batch: Vec<NewMessage> = (0..700)
        .map(|i| message("portal", &format!("k{i}"), 0, now, &["out"]))
        .collect();
    store.ingest(&batch, now).await.unwrap();
    let claimed = store
        .claim(&"out".into(), 1_000, now, now + 60_000)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 700);
    let attempt = |status: i32| AttemptRecord {
        attempt: 1,
        started_at: now,
        duration_ms: 3,
        status: Some(status),
        error: (status >= 500).then(|| format!("HTTP {status}")),
        response: Some("body".into()),
    };
    let mut done = Vec::new();
    for (i, c) in claimed.iter().enumerate() {
        let mut lease = c.lease();
        let (attempt, next) = match i % 4 {
            0 => (Some(attempt(200)), NextState::Delivered),
            1 => (Some(attempt(503)), NextState::Retry { at: now + 5_000 }),
            2 => (None, NextState::Defer { at: now + 9_000 }),
            _ => {
                // A worker whose lease was taken over: must change nothing.
                lease.lease_token = "stale".into();
                (Some(attempt(200)), NextState::Delivered)
            }
        };
        done.push(Completion {
            lease,
            attempt,
            next,
            now: now + 10,
        });
    }
    // The same delivery twice in one batch: the first completion counts.
    done.push(Completion {
        lease: claimed[0].lease(),
        attempt: None,
        next: NextState::Dead,
        now: now + 10,
    });
    store.complete(&done).await.unwrap();
    let count = |w: &str| {
        let q = format!("SELECT COUNT(*) FROM deliveries WHERE {w}");
        let backend = &app.backend;
        async move { scalar(backend, &q).await }
    };
    assert_eq!(
        count(
            "status = 'delivered' AND attempts = 1 AND last_status = 200 AND lease_token IS NULL"
        )
        .await,
        175
    );
    assert_eq!(
        count(&format!("status = 'pending' AND attempts = 1 AND last_status = 503 AND last_error = 'HTTP 503' AND next_attempt_at = {}", now + 5_000)).await,
        175
    );
    assert_eq!(
        count(&format!(
            "status = 'pending' AND attempts = 0 AND last_status IS NULL AND next_attempt_at = {}",
            now + 9_000
        ))
        .await,
        175,
        "a deferral spends no attempt"
    );
    assert_eq!(
        count("status = 'in_flight' AND lease_token IS NOT NULL").await,
        175,
        "stale leases left the rows alone"
    );
    assert_eq!(count("status = 'dead'").await, 0);
    // Attempts are recorded for every completion that carried one (a stale
    // worker's attempt did happen, so it is kept), and none for deferrals.
    assert_eq!(count_rows(&app.backend, "attempts").await, 525);
    assert_eq!(
        scalar(
            &app.backend,
            "SELECT COUNT(*) FROM attempts WHERE duration_ms = 3 AND response = 'body'"
        )
        .await,
        525
    );
    app.stop().await;
}
