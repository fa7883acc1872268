//! The fetch stage end to end, on both stores: a signed feature-service
//! webhook is answered at once, its changes are fetched after the commit
//! from the ArcGIS REST emulator (`arcgis_emulator/`), and the sinks that
//! need them get them; the others go at once.

mod arcgis_emulator;
mod common;

use std::time::Duration;

use arcgis_emulator::{Emulator, Switches};
use common::process::*;
use common::*;
use serde_json::{json, Value};

const ONLINE_KEY: &str = "online-signature-key";
const API_KEY: &str = "AAPKenrichTestKey0123456789secret";

both_stores!(
    changes_reach_the_sink_and_the_original_goes_at_once,
    an_arcgis_outage_is_retried_and_nothing_is_lost,
    a_changes_url_outside_the_services_is_refused_uncalled,
    an_expired_token_is_refreshed_once,
    a_delivery_replayed_after_a_dead_fetch_fetches_again,
    geojson_and_filters_on_features_and_events,
    powerbi_gets_a_row_per_edited_feature,
    a_fetch_cut_by_sigkill_resumes_after_restart,
);

async fn emulator() -> Emulator {
    Emulator::start(Switches {
        api_keys: vec![API_KEY.into()],
        clients: vec![("relay-app".into(), "client-secret".into())],
        ..Switches::default()
    })
    .await
}

/// The `online` source (enriched from `emu`) with `credential`, then `sinks`.
fn extra(emu: &Emulator, credential: &str, sinks: &str) -> String {
    format!(
        r#"
[[sources]]
name = "online"
kind = "arcgis-service"
secret = "{ONLINE_KEY}"

[sources.arcgis]
services = ["{}"]
{credential}
timeout = "2s"
job_timeout = "5s"
poll_interval = "10ms"

{sinks}
"#,
        emu.service_url()
    )
}

fn api_key() -> String {
    format!("api_key = \"{API_KEY}\"")
}

/// An ArcGIS Online payload (FACTS D1) for layer 0 pointing at `changes_url`.
fn online_payload(changes_url: &str) -> Vec<u8> {
    serde_json::to_vec(&json!([{
        "name": "parcels-hook",
        "layerId": 0,
        "orgId": "emuOrg",
        "serviceName": "Parcels",
        "lastUpdatedTime": 1_730_385_705_000i64,
        "changesUrl": changes_url,
        "events": ["FeaturesCreated", "FeaturesUpdated"],
    }]))
    .unwrap()
}

async fn post_online(app: &TestApp, body: &[u8]) -> reqwest::Response {
    app.post(
        "online",
        body.to_vec(),
        &[
            ("content-type", "application/json"),
            (
                "x-esriHook-Signature",
                esri_signature(ONLINE_KEY, body).as_str(),
            ),
        ],
    )
    .await
}

async fn message_id(r: reqwest::Response) -> String {
    assert_eq!(r.status(), 200, "the webhook is answered at once");
    let v: Value = r.json().await.unwrap();
    v["message_id"].as_str().unwrap().to_string()
}

/// The sink's received bodies, as JSON.
fn bodies(sink: &TestSink) -> Vec<Value> {
    sink.received()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

async fn fetch_of(app: &TestApp, id: &str) -> Value {
    let v: Value = app
        .admin_get(&format!("/api/v1/messages/{id}"))
        .await
        .json()
        .await
        .unwrap();
    v["fetch"].clone()
}

async fn changes_reach_the_sink_and_the_original_goes_at_once(b: Backend) {
    let emu = emulator().await;
    let start = emu.server_gen();
    let a = emu.add(
        0,
        json!({"status": "Out of service", "name": "H-1"}),
        Some(json!({"x": 1.0, "y": 2.0})),
    );
    let u = emu.add(0, json!({"status": "ok", "name": "H-2"}), None);
    emu.update(0, u, json!({"status": "Out of service"}));
    // ArcGIS is slow: the original must not wait for it.
    emu.set(|s| s.delay = Duration::from_millis(300));
    let changes = TestSink::start().await;
    let original = TestSink::start().await;
    let sinks = format!(
        "{}{}",
        http_sink("changes", &changes, "format = \"changes\""),
        http_sink("original", &original, "")
    );
    let app = spawn_app(b, &extra(&emu, &api_key(), &sinks)).await;
    let url = emu.changes_url(
        start,
        emu.server_gen(),
        "&async=true&returnAttachments=false",
    );
    let body = online_payload(&url);
    let id = message_id(post_online(&app, &body).await).await;

    let got = original.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].body.as_ref(), body.as_slice(), "byte for byte");
    assert!(
        changes.count() == 0,
        "the changes sink waits for the fetch (ArcGIS answers in 300 ms steps)"
    );
    changes.wait_for(1, Duration::from_secs(20)).await;
    let doc = &bodies(&changes)[0];
    assert_eq!(doc["service"], emu.service_url());
    let layer = &doc["layers"][0];
    assert_eq!(layer["id"], 0);
    let oids = |k: &str| -> Vec<i64> {
        layer[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["attributes"]["OBJECTID"].as_i64().unwrap())
            .collect()
    };
    // Both were created inside the window (the update too): adds.
    let mut all = oids("adds");
    all.extend(oids("updates"));
    all.sort();
    assert_eq!(all, vec![a, u]);
    assert_eq!(doc["truncated"], false);
    assert_eq!(
        changes.received()[0].header("x-hookrelay-message"),
        id,
        "the delivery names its message"
    );
    // Esri's changesUrl is POST-only: the query stays in the URL, f=json
    // and the token in the body.
    let calls = emu.calls("/extractChanges");
    assert_eq!(calls.len(), 1, "one extraction");
    assert_eq!(calls[0].method, "POST");
    let fetch = fetch_of(&app, &id).await;
    assert_eq!(fetch["status"], "done", "{fetch}");
    assert_eq!(fetch["summary"]["features"], 2, "{fetch}");
    app.stop().await;
}

async fn an_arcgis_outage_is_retried_and_nothing_is_lost(b: Backend) {
    let emu = emulator().await;
    let start = emu.server_gen();
    let a = emu.add(0, json!({"name": "after the outage"}), None);
    emu.outage(u32::MAX);
    let changes = TestSink::start().await;
    let app = spawn_app(
        b,
        &extra(
            &emu,
            &api_key(),
            &http_sink("changes", &changes, "format = \"changes\""),
        ),
    )
    .await;
    let url = emu.changes_url(start, emu.server_gen(), "");
    let id = message_id(post_online(&app, &online_payload(&url)).await).await;
    eventually(
        Duration::from_secs(10),
        "a failed fetch recorded",
        || async {
            let f = fetch_of(&app, &id).await;
            f["attempts"].as_u64().unwrap_or(0) >= 1 && f["status"] == "pending"
        },
    )
    .await;
    let f = fetch_of(&app, &id).await;
    assert!(
        f["last_error"].as_str().unwrap_or("").contains("503"),
        "{f}"
    );
    assert_eq!(changes.count(), 0);
    emu.outage(0);
    changes.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(
        bodies(&changes)[0]["layers"][0]["adds"][0]["attributes"]["OBJECTID"],
        a
    );
    assert_eq!(fetch_of(&app, &id).await["status"], "done");
    app.stop().await;
}

async fn a_changes_url_outside_the_services_is_refused_uncalled(b: Backend) {
    let emu = emulator().await;
    let other = emulator().await;
    let changes = TestSink::start().await;
    let original = TestSink::start().await;
    let sinks = format!(
        "{}{}",
        http_sink("changes", &changes, "format = \"changes\""),
        http_sink("original", &original, "")
    );
    let app = spawn_app(b, &extra(&emu, &api_key(), &sinks)).await;
    // A payload pointing at a service nobody configured (its URL is data).
    let url = other.changes_url(1, 5, "");
    let id = message_id(post_online(&app, &online_payload(&url)).await).await;
    original.wait_for(1, Duration::from_secs(10)).await;
    eventually(Duration::from_secs(10), "the fetch dead", || async {
        fetch_of(&app, &id).await["status"] == "dead"
    })
    .await;
    let f = fetch_of(&app, &id).await;
    let why = f["last_error"].as_str().unwrap();
    assert!(
        why.contains("not the extractChanges of a service in its [sources.arcgis] services"),
        "{why}"
    );
    assert!(
        other.log().is_empty() && emu.log().is_empty(),
        "nothing was called"
    );
    let dead = app.deliveries("status=dead&sink=changes").await;
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0]["last_error"]
            .as_str()
            .unwrap()
            .starts_with("changes not fetched"),
        "{}",
        dead[0]
    );
    assert_eq!(changes.count(), 0);
    app.stop().await;
}

async fn an_expired_token_is_refreshed_once(b: Backend) {
    let emu = emulator().await;
    let changes = TestSink::start().await;
    let credential = format!(
        "client_id = \"relay-app\"\nclient_secret = \"client-secret\"\ntoken_url = \"{}\"",
        emu.oauth_url()
    );
    let app = spawn_app(
        b,
        &extra(
            &emu,
            &credential,
            &http_sink("changes", &changes, "format = \"changes\""),
        ),
    )
    .await;
    let start = emu.server_gen();
    emu.add(0, json!({"n": 1}), None);
    let first = emu.changes_url(start, emu.server_gen(), "");
    message_id(post_online(&app, &online_payload(&first)).await).await;
    changes.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(emu.token_requests(), 1);
    // ArcGIS forgets the token (expired on its side): the next fetch gets
    // 498 inside a 200, refreshes once and succeeds.
    emu.expire_all_tokens();
    let start = emu.server_gen();
    emu.add(0, json!({"n": 2}), None);
    let second = emu.changes_url(start, emu.server_gen(), "");
    let id = message_id(post_online(&app, &online_payload(&second)).await).await;
    changes.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(emu.token_requests(), 2, "exactly one refresh");
    let f = fetch_of(&app, &id).await;
    assert_eq!(f["status"], "done");
    assert_eq!(f["attempts"], 1, "the refresh happened inside one attempt");
    app.stop().await;
}

async fn a_delivery_replayed_after_a_dead_fetch_fetches_again(b: Backend) {
    let emu = emulator().await;
    let changes = TestSink::start().await;
    let sinks = http_sink("changes", &changes, "format = \"changes\"");
    let app = spawn_app(b, &extra(&emu, &api_key(), &sinks)).await;
    let start = emu.server_gen();
    emu.add(0, json!({"n": 1}), None);
    // A permanent ArcGIS error (400 inside a 200): the fetch dies at once.
    emu.script(
        200,
        json!({"error": {"code": 400, "message": "Invalid parameters"}}),
    );
    let url = emu.changes_url(start, emu.server_gen(), "");
    let id = message_id(post_online(&app, &online_payload(&url)).await).await;
    eventually(Duration::from_secs(10), "the fetch dead", || async {
        fetch_of(&app, &id).await["status"] == "dead"
    })
    .await;
    eventually(Duration::from_secs(5), "its delivery dead", || async {
        app.deliveries("status=dead&sink=changes").await.len() == 1
    })
    .await;
    // The administrator replays the dead delivery: its fetch runs again.
    let r = app
        .admin_post(
            "/api/v1/replay",
            json!({"status": "dead", "sink": "changes"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    changes.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(fetch_of(&app, &id).await["status"], "done");
    assert_eq!(emu.calls("/extractChanges").len(), 2);
    app.stop().await;
}

async fn geojson_and_filters_on_features_and_events(b: Backend) {
    let emu = emulator().await;
    let start = emu.server_gen();
    let broken = emu.add(
        0,
        json!({"status": "Out of service", "name": "H-1"}),
        Some(json!({"x": -117.19, "y": 34.05})),
    );
    emu.add(
        0,
        json!({"status": "ok", "name": "H-2"}),
        Some(json!({"x": -117.2, "y": 34.06})),
    );
    let geo = TestSink::start().await;
    let alerts = TestSink::start().await;
    let deletes = TestSink::start().await;
    let crew = TestSink::start().await;
    let sinks = format!(
        "{}[[sinks]]\nname = \"crew\"\nkind = \"slack\"\nurl = \"{}\"\nfilter = 'feature.attributes.status == \"Out of service\"'\n{}{}",
        http_sink("geo", &geo, "format = \"geojson\""),
        crew.url(),
        http_sink(
            "alerts",
            &alerts,
            "format = \"changes\"\nfilter = 'edit == \"add\" && feature.attributes.status == \"Out of service\"'"
        ),
        http_sink(
            "deletes",
            &deletes,
            "format = \"events\"\nfilter = 'source == \"online\" && operation == \"FeaturesDeleted\"'"
        ),
    );
    let app = spawn_app(b, &extra(&emu, &api_key(), &sinks)).await;
    let url = emu.changes_url(start, emu.server_gen(), "");
    message_id(post_online(&app, &online_payload(&url)).await).await;

    geo.wait_for(1, Duration::from_secs(20)).await;
    let fc = &bodies(&geo)[0];
    assert_eq!(fc["type"], "FeatureCollection");
    let features = fc["features"].as_array().unwrap();
    assert_eq!(features.len(), 2);
    assert_eq!(features[0]["geometry"]["type"], "Point");
    assert_eq!(features[0]["properties"]["edit"], "add");
    assert_eq!(features[0]["properties"]["layer"], 0);
    assert_eq!(
        geo.received()[0].header("content-type"),
        "application/geo+json"
    );
    // A GeoJSON sink exists: ArcGIS is asked for WGS 84.
    assert_eq!(emu.calls("/extractChanges")[0].param("outSR"), Some("4326"));

    alerts.wait_for(1, Duration::from_secs(20)).await;
    let doc = &bodies(&alerts)[0];
    let adds = doc["layers"][0]["adds"].as_array().unwrap();
    assert_eq!(adds.len(), 1, "only the hydrant out of service: {doc}");
    assert_eq!(adds[0]["attributes"]["OBJECTID"], broken);
    assert_eq!(doc["feature_count"], 1);

    // Slack says what changed, of the features the filter kept.
    crew.wait_for(1, Duration::from_secs(20)).await;
    let msg = &bodies(&crew)[0];
    let blocks = msg["blocks"].to_string();
    assert!(blocks.contains("1 features changed"), "{msg}");
    assert!(blocks.contains("layer 0: 1 added"), "{msg}");
    assert!(blocks.contains("status=Out of service, name=H-1"), "{msg}");
    assert!(
        !blocks.contains("H-2"),
        "the filtered feature is left out: {msg}"
    );

    // The event filter matched nothing: recorded, not sent.
    eventually(
        Duration::from_secs(10),
        "the filtered delivery recorded",
        || async { app.deliveries("sink=deletes&status=delivered").await.len() == 1 },
    )
    .await;
    assert_eq!(deletes.count(), 0, "nothing was sent");
    app.stop().await;
}

async fn powerbi_gets_a_row_per_edited_feature(b: Backend) {
    let emu = emulator().await;
    let start = emu.server_gen();
    let one = emu.add(0, json!({"PARCEL_ID": "P-1", "AREA": 12.5}), None);
    let two = emu.add(0, json!({"PARCEL_ID": "P-2"}), None);
    emu.delete(0, two);
    let bi = TestSink::start().await;
    let sinks = format!(
        "[[sinks]]\nname = \"bi\"\nkind = \"powerbi\"\nurl = \"http://{}/rows?key=k\"\ncolumns = [\"PARCEL_ID\", \"AREA\"]\n",
        bi.addr
    );
    let app = spawn_app(b, &extra(&emu, &api_key(), &sinks)).await;
    let url = emu.changes_url(start, emu.server_gen(), "");
    message_id(post_online(&app, &online_payload(&url)).await).await;
    bi.wait_for(1, Duration::from_secs(20)).await;
    let rows = bodies(&bi)[0].as_array().unwrap().clone();
    assert!(!rows.is_empty());
    let first = rows
        .iter()
        .find(|r| r["object_id"] == one)
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert_eq!(first["edit"], "add");
    assert_eq!(first["layer"], 0);
    assert_eq!(first["source"], "online");
    assert_eq!(first["PARCEL_ID"], "P-1");
    assert_eq!(first["AREA"], 12.5);
    for r in &rows {
        let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "when",
                "source",
                "layer",
                "edit",
                "object_id",
                "PARCEL_ID",
                "AREA"
            ],
            "every row has every column"
        );
    }
    app.stop().await;
}

async fn a_fetch_cut_by_sigkill_resumes_after_restart(b: Backend) {
    let emu = emulator().await;
    // The job never completes while the first relay runs.
    emu.set(|s| s.job_polls = u32::MAX);
    let start = emu.server_gen();
    let a = emu.add(0, json!({"name": "survives a crash"}), None);
    let changes = TestSink::start().await;
    let text = config_text(
        &b.url,
        &extra(
            &emu,
            &api_key(),
            &http_sink("changes", &changes, "format = \"changes\""),
        ),
    )
    // Short bounds, so a lease left by the killed relay (Postgres has no
    // single-server recovery) ends within the test.
    .replace(
        "job_timeout = \"5s\"",
        "job_timeout = \"2s\"\nmax_features = 10\npage_size = 10",
    )
    .replace(
        "timeout = \"2s\"\njob_timeout",
        "timeout = \"1s\"\njob_timeout",
    );
    let cfg = write_config(b.dir.path(), &text);
    let mut relay = RelayProcess::start(&cfg, b.dir.path());
    let body = online_payload(&emu.changes_url(start, emu.server_gen(), "&async=true"));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = client
        .post(format!("{}/hooks/online", relay.ingress))
        .header("content-type", "application/json")
        .header("x-esriHook-Signature", esri_signature(ONLINE_KEY, &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    eventually(
        Duration::from_secs(10),
        "the fetch polling its job",
        || async {
            !emu.calls("/jobs/").is_empty() || emu.log().iter().any(|l| l.path.contains("/jobs/"))
        },
    )
    .await;
    relay.sigkill();
    emu.set(|s| s.job_polls = 1);
    let _relay = RelayProcess::start(&cfg, b.dir.path());
    changes.wait_for(1, Duration::from_secs(40)).await;
    assert_eq!(
        bodies(&changes)[0]["layers"][0]["adds"][0]["attributes"]["OBJECTID"],
        a
    );
}
