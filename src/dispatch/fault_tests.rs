//! One delivery's fault never decides another's: a sink whose code panics
//! on one delivery, alone or inside a batch, on a real SQLite store.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::config::Config;
use crate::sinks::{AttemptOutcome, Sink};
use crate::store::{DeliveryFilter, NewDelivery, NewMessage, Status};

/// Panics on any delivery whose body says "boom"; delivers the rest.
struct Fragile {
    batch_rows: usize,
}

#[async_trait]
impl Sink for Fragile {
    async fn deliver(&self, d: &Claimed) -> AttemptOutcome {
        self.deliver_batch(std::slice::from_ref(d)).await
    }

    fn max_batch_rows(&self) -> usize {
        self.batch_rows
    }

    async fn deliver_batch(&self, ds: &[Claimed]) -> AttemptOutcome {
        if ds.iter().any(|d| d.body == b"boom") {
            panic!("rendering went wrong");
        }
        AttemptOutcome {
            verdict: retry::Verdict::Delivered,
            status: Some(200),
            error: None,
            response: None,
        }
    }
}

async fn run(batch_rows: usize) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[store]\nurl = \"sqlite://{}/relay.db\"\n\
         [[sinks]]\nname = \"out\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\n",
        dir.path().display()
    );
    let config = Config::from_toml(&text).unwrap();
    let store = crate::store::open(&config.store, true, true).await.unwrap();
    let mut set = SinkSet::build(&config).unwrap();
    Arc::get_mut(&mut set.sinks[0]).unwrap().sink = Arc::new(Fragile { batch_rows });
    let now = now_ms();
    let messages: Vec<NewMessage> = ["a", "boom", "c"]
        .iter()
        .map(|body| NewMessage {
            id: crate::store::MessageId::generate(),
            source: "s".into(),
            received_at: now,
            content_type: "application/json".into(),
            headers: "{}".into(),
            body: body.as_bytes().to_vec(),
            events: "[]".into(),
            dedupe_key: uuid::Uuid::now_v7().to_string(),
            dedupe_window_ms: 0,
            deliveries: vec![NewDelivery {
                id: crate::store::DeliveryId::generate(),
                sink: "out".into(),
                events: "[]".into(),
                parked: false,
            }],
            fetch: false,
        })
        .collect();
    store.ingest(&messages, now).await.unwrap();
    let dispatcher = Dispatcher::new(
        store.clone(),
        Arc::new(set),
        Arc::new(Metrics::new()),
        Arc::new(|| 1.0),
        Duration::from_secs(1),
        Duration::from_secs(1),
    );
    assert_eq!(dispatcher.run_once(now).await.unwrap(), 3);
    let rows = store
        .list_deliveries(&DeliveryFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let dead: Vec<_> = rows.iter().filter(|d| d.status == Status::Dead).collect();
    let delivered = rows
        .iter()
        .filter(|d| d.status == Status::Delivered)
        .count();
    assert_eq!((dead.len(), delivered), (1, 2), "{rows:?}");
    assert_eq!(
        dead[0].last_error.as_deref(),
        Some("panic: rendering went wrong")
    );
    store.close().await;
}

#[tokio::test]
async fn a_panicking_delivery_dies_alone() {
    run(1).await;
}

#[tokio::test]
async fn a_panicking_batch_is_split_and_only_the_culprit_dies() {
    run(100).await;
}
