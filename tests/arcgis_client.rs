//! The ArcGIS fetcher end to end: the real `enrich::Fetcher`, built from
//! configuration text as `serve` would build it, over real HTTP against
//! the REST emulator in `arcgis_emulator/`.

mod arcgis_emulator;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arcgis_emulator::{Emulator, Switches, TokenVia};
use hookrelay::config::Config;
use hookrelay::enrich::{ChangesDoc, FetchError, FetchOptions, Fetcher};
use serde_json::json;

const API_KEY: &str = "AAPKemulatorKey0123456789secret";
const CLIENT_SECRET: &str = "client-secret-hunter2";
const PASSWORD: &str = "password-hunter2";

/// A fetcher for source `online` with `[sources.arcgis]` keys `keys`
/// (services already set to the emulator's).
fn fetcher(emu: &Emulator, keys: &str) -> Fetcher {
    let mut defaults = String::new();
    for (k, v) in [
        ("job_timeout", "5s"),
        ("poll_interval", "10ms"),
        ("timeout", "2s"),
    ] {
        if !keys
            .lines()
            .any(|l| l.trim_start().starts_with(&format!("{k} ")))
        {
            defaults.push_str(&format!("{k} = \"{v}\"\n"));
        }
    }
    let text = format!(
        r#"
[[sources]]
name = "online"
kind = "arcgis-service"
secret = "hook-key"

[sources.arcgis]
services = ["{}"]
{defaults}{keys}
"#,
        emu.service_url()
    );
    let config = Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}"));
    Fetcher::from_config(config.source("online").unwrap(), &config.delivery)
        .unwrap()
        .unwrap()
}

fn api_key_keys() -> String {
    format!("api_key = \"{API_KEY}\"")
}

async fn emulator() -> Emulator {
    Emulator::start(Switches {
        api_keys: vec![API_KEY.into()],
        users: vec![("relay".into(), PASSWORD.into())],
        clients: vec![("relay-app".into(), CLIENT_SECRET.into())],
        ..Switches::default()
    })
    .await
}

fn opts() -> FetchOptions {
    FetchOptions {
        wgs84: false,
        max_features: 10_000,
    }
}

fn oids(features: &[serde_json::Value]) -> Vec<i64> {
    features
        .iter()
        .map(|f| f["attributes"]["OBJECTID"].as_i64().unwrap())
        .collect()
}

/// Three features before the window; in it one added, one updated, one
/// deleted. Returns (window start, added, updated, deleted).
fn edits_in_window(emu: &Emulator) -> (i64, i64, i64, i64) {
    let a = emu.add(
        0,
        json!({"status": "open"}),
        Some(json!({"x": 1.0, "y": 2.0})),
    );
    let b = emu.add(0, json!({"status": "open"}), None);
    let c = emu.add(0, json!({"status": "open"}), None);
    let start = emu.server_gen();
    let added = emu.add(
        0,
        json!({"status": "new"}),
        Some(json!({"x": 3.0, "y": 4.0})),
    );
    emu.update(0, b, json!({"status": "closed"}));
    emu.delete(0, c);
    let _ = a;
    (start, added, b, c)
}

fn layer0(doc: &ChangesDoc) -> &hookrelay::enrich::LayerChanges {
    doc.layers.iter().find(|l| l.id == 0).unwrap()
}

#[tokio::test]
async fn sync_edits_carry_adds_updates_and_delete_ids() {
    let emu = emulator().await;
    let f = fetcher(&emu, &api_key_keys());
    let (start, added, updated, deleted) = edits_in_window(&emu);
    let end = emu.server_gen();
    let doc = f
        .fetch(&emu.changes_url(start, end, ""), &opts())
        .await
        .unwrap();
    let l = layer0(&doc);
    assert_eq!(oids(&l.adds), [added]);
    assert_eq!(l.adds[0]["geometry"], json!({"x": 3.0, "y": 4.0}));
    assert_eq!(oids(&l.updates), [updated]);
    assert_eq!(l.updates[0]["attributes"]["status"], "closed");
    assert_eq!(l.delete_ids, [json!(deleted)]);
    assert!(l.deletes.is_empty());
    assert_eq!(l.server_gens, Some([start, end]));
    assert_eq!(l.server_gen, Some(end));
    assert_eq!((doc.feature_count, doc.truncated), (2, false));
    assert_eq!(doc.service, emu.service_url());
    // FACTS A3: POST, the query as given, f and token in the body.
    let calls = emu.log();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let c = &calls[0];
    assert_eq!(c.method, "POST");
    assert!(c.path.ends_with("/FeatureServer/extractChanges"));
    assert_eq!(
        c.query.get("serverGens").map(String::as_str),
        Some(&*format!("[{start},{end}]"))
    );
    assert_eq!(c.form.get("f").map(String::as_str), Some("json"));
    assert_eq!(
        (c.token_via, c.token.as_deref()),
        (Some(TokenVia::Form), Some(API_KEY))
    );
    assert!(!c.params.contains_key("outSR"));
}

#[tokio::test]
async fn deleted_features_come_whole_and_wgs84_is_asked() {
    let emu = emulator().await;
    let f = fetcher(&emu, &api_key_keys());
    let (start, _, _, deleted) = edits_in_window(&emu);
    let url = emu.changes_url(
        start,
        emu.server_gen(),
        "&returnDeletedFeatures=true&returnInserts=false",
    );
    let doc = f
        .fetch(
            &url,
            &FetchOptions {
                wgs84: true,
                ..opts()
            },
        )
        .await
        .unwrap();
    let l = layer0(&doc);
    assert_eq!(oids(&l.deletes), [deleted]);
    assert!(l.adds.is_empty() && l.delete_ids.is_empty());
    assert_eq!(doc.feature_count, 2);
    let c = &emu.log()[0];
    assert_eq!(c.form.get("outSR").map(String::as_str), Some("4326"));
    assert_eq!(
        c.query.get("returnInserts").map(String::as_str),
        Some("false")
    );
}

#[tokio::test]
async fn async_jobs_are_polled_in_both_spellings() {
    for upper in [false, true] {
        let emu = emulator().await;
        emu.set(|s| {
            s.status_url_upper = upper;
            s.job_polls = 3;
        });
        let f = fetcher(&emu, &api_key_keys());
        let (start, added, _, _) = edits_in_window(&emu);
        let url = emu.changes_url(
            start,
            emu.server_gen(),
            "&async=true&returnAttachments=false",
        );
        let doc = f.fetch(&url, &opts()).await.unwrap();
        assert_eq!(oids(&layer0(&doc).adds), [added], "upper={upper}");
        let polls = emu.calls("/jobs/job-1");
        assert_eq!(polls.len(), 4, "3 Pending then Completed");
        for p in &polls {
            // GETs carry the token in the header, never in the URL.
            assert_eq!(p.method, "GET");
            assert_eq!(p.token_via, Some(TokenVia::EsriHeader));
            assert_eq!(p.query.get("f").map(String::as_str), Some("json"));
        }
        let result = emu.calls("/replicafiles/job-1.json");
        assert_eq!(result.len(), 1);
        assert_eq!(result[0].token_via, Some(TokenVia::EsriHeader));
    }
}

#[tokio::test]
async fn failed_and_slow_jobs() {
    let emu = emulator().await;
    emu.set(|s| s.fail_jobs = true);
    let f = fetcher(&emu, &api_key_keys());
    let url = emu.changes_url(1, emu.server_gen(), "&async=true");
    let e = f.fetch(&url, &opts()).await.unwrap_err();
    assert!(matches!(e, FetchError::JobFailed { .. }), "{e:?}");
    assert!(e.retryable());
    assert!(e.to_string().contains("Unable to extract changes."), "{e}");

    emu.set(|s| {
        s.fail_jobs = false;
        s.job_polls = u32::MAX;
    });
    let f = fetcher(
        &emu,
        &format!("{}\njob_timeout = \"150ms\"", api_key_keys()),
    );
    let e = f.fetch(&url, &opts()).await.unwrap_err();
    assert!(matches!(e, FetchError::JobTimeout { .. }), "{e:?}");
    assert!(e.retryable());
}

#[tokio::test]
async fn a_status_url_off_the_service_is_not_followed() {
    let emu = emulator().await;
    let f = fetcher(&emu, &api_key_keys());
    emu.script(200, json!({"statusUrl": "http://evil.example/arcgis/rest/services/Parcels/FeatureServer/jobs/1"}));
    let e = f
        .fetch(&emu.changes_url(1, 2, "&async=true"), &opts())
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::Permanent { .. }), "{e:?}");
    assert!(e.to_string().contains("not followed"), "{e}");
    assert_eq!(emu.log().len(), 1);
}

#[tokio::test]
async fn ids_only_services_are_completed_by_paged_queries() {
    let emu = emulator().await;
    emu.set(|s| s.ids_only_service = true);
    let f = fetcher(&emu, &format!("{}\npage_size = 3", api_key_keys()));
    let before = emu.add(0, json!({}), None);
    let start = emu.server_gen();
    let added: Vec<i64> = (0..7).map(|i| emu.add(0, json!({"n": i}), None)).collect();
    emu.delete(0, before);
    let table = emu.add(1, json!({"reading": 7.25}), None);
    let doc = f
        .fetch(
            &emu.changes_url(start, emu.server_gen(), ""),
            &FetchOptions {
                wgs84: true,
                ..opts()
            },
        )
        .await
        .unwrap();
    assert_eq!(oids(&layer0(&doc).adds), added);
    assert_eq!(layer0(&doc).delete_ids, [json!(before)]);
    let l1 = doc.layers.iter().find(|l| l.id == 1).unwrap();
    assert_eq!(oids(&l1.adds), [table]);
    assert_eq!(doc.feature_count, 8);
    let q0 = emu.calls("/FeatureServer/0/query");
    assert_eq!(q0.len(), 3, "7 ids in pages of 3");
    assert_eq!(
        q0[0].form.get("objectIds").map(String::as_str),
        Some(&*format!("{},{},{}", added[0], added[1], added[2]))
    );
    for q in &q0 {
        assert_eq!(q.method, "POST");
        assert_eq!(q.token_via, Some(TokenVia::Form));
        assert_eq!(q.form.get("outFields").map(String::as_str), Some("*"));
        assert_eq!(
            q.form.get("returnGeometry").map(String::as_str),
            Some("true")
        );
        assert_eq!(q.form.get("outSR").map(String::as_str), Some("4326"));
    }
    assert_eq!(emu.calls("/FeatureServer/1/query").len(), 1);
}

#[tokio::test]
async fn every_changes_url_encoding_is_fetched_alike() {
    let emu = emulator().await;
    let f = fetcher(&emu, &api_key_keys());
    let (start, added, _, _) = edits_in_window(&emu);
    let raw = emu.changes_url(start, emu.server_gen(), "&returnAttachments=false");
    let full: String = raw
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02x}"),
        })
        .collect();
    let brackets = raw.replace('[', "%5B").replace(']', "%5D");
    let wrapped = serde_json::to_string(&raw).unwrap();
    let mut docs = Vec::new();
    for form in [&raw, &full, &brackets, &wrapped] {
        docs.push(
            f.fetch(form, &opts())
                .await
                .unwrap_or_else(|e| panic!("{form}: {e}")),
        );
    }
    assert_eq!(oids(&layer0(&docs[0]).adds), [added]);
    assert!(docs.iter().all(|d| d == &docs[0]));
    for c in emu.log() {
        assert_eq!(
            c.query.get("serverGens"),
            emu.log()[0].query.get("serverGens")
        );
    }
}

#[tokio::test]
async fn urls_outside_the_services_are_refused_unsent() {
    let emu = emulator().await;
    let f = fetcher(&emu, &api_key_keys());
    let svc = emu.service_url();
    let port = emu.addr.port();
    for url in [
        svc.replace("/Parcels/", "/Other/") + "/extractChanges?serverGens=[1,2]",
        svc.replace("FeatureServer", "FeatureServer2") + "/extractChanges",
        format!(
            "http://localhost:{port}/arcgis/rest/services/Parcels/FeatureServer/extractChanges"
        ),
        svc.replace("http://", "https://") + "/extractChanges",
        format!("{svc}/0/query?where=1%3D1&token=SECRETQUERYTOKEN"),
        "not a url".to_string(),
    ] {
        let e = f.fetch(&url, &opts()).await.unwrap_err();
        assert!(matches!(e, FetchError::Refused { .. }), "{url}: {e:?}");
        assert!(!e.retryable());
        let text = format!("{e} {e:?}");
        assert!(
            !text.contains("SECRETQUERYTOKEN") && !text.contains("serverGens"),
            "{text}"
        );
    }
    assert!(emu.log().is_empty(), "{:?}", emu.log());
}

#[tokio::test]
async fn oauth_client_credentials() {
    let emu = emulator().await;
    let keys = format!(
        "client_id = \"relay-app\"\nclient_secret = \"{CLIENT_SECRET}\"\ntoken_url = \"{}\"",
        emu.oauth_url()
    );
    let f = fetcher(&emu, &keys);
    let (start, added, _, _) = edits_in_window(&emu);
    let url = emu.changes_url(start, emu.server_gen(), "");
    let doc = f.fetch(&url, &opts()).await.unwrap();
    assert_eq!(oids(&layer0(&doc).adds), [added]);
    f.fetch(&url, &opts()).await.unwrap();
    let log = emu.log();
    let t = &log[0];
    assert!(t.path.ends_with("/oauth2/token") && t.method == "POST");
    assert_eq!(
        t.form.get("grant_type").map(String::as_str),
        Some("client_credentials")
    );
    assert_eq!(
        t.form.get("client_id").map(String::as_str),
        Some("relay-app")
    );
    assert_eq!(t.form.get("f").map(String::as_str), Some("json"));
    assert!(t.form.contains_key("expiration"));
    assert_eq!(emu.token_requests(), 1, "cached for the second fetch");
    assert!(log[1]
        .token
        .as_deref()
        .unwrap()
        .starts_with("emu-token-0001"));
    assert_eq!(f.tokens().requests(), 1);
}

#[tokio::test]
async fn generate_token_with_a_string_expiry() {
    for server in [false, true] {
        let emu = emulator().await;
        emu.set(|s| s.expires_as_string = true);
        let url = if server {
            emu.server_token_url()
        } else {
            emu.generate_token_url()
        };
        let f = fetcher(
            &emu,
            &format!("username = \"relay\"\npassword = \"{PASSWORD}\"\ntoken_url = \"{url}\""),
        );
        let changes = emu.changes_url(1, emu.server_gen(), "");
        f.fetch(&changes, &opts()).await.unwrap();
        f.fetch(&changes, &opts()).await.unwrap();
        let t = &emu.log()[0];
        assert_eq!(t.form.get("username").map(String::as_str), Some("relay"));
        assert_eq!(t.form.get("client").map(String::as_str), Some("requestip"));
        assert_eq!(t.form.get("expiration").map(String::as_str), Some("60"));
        assert_eq!(emu.token_requests(), 1);
    }
}

#[tokio::test]
async fn an_expired_token_is_refreshed_exactly_once() {
    for as_status in [false, true] {
        let emu = emulator().await;
        emu.set(|s| s.auth_errors_as_status = as_status);
        let f = fetcher(&emu, &format!("client_id = \"relay-app\"\nclient_secret = \"{CLIENT_SECRET}\"\ntoken_url = \"{}\"", emu.oauth_url()));
        let url = emu.changes_url(1, emu.server_gen(), "");
        f.fetch(&url, &opts()).await.unwrap();
        emu.expire_all_tokens();
        f.fetch(&url, &opts()).await.unwrap();
        assert_eq!(emu.token_requests(), 2, "as_status={as_status}");
        assert_eq!(
            emu.calls("/extractChanges").len(),
            3,
            "first, refused, retried"
        );
    }
}

#[tokio::test]
async fn a_token_near_expiry_on_the_clock_is_refreshed_before_use() {
    let emu = emulator().await;
    let now = Arc::new(AtomicI64::new(1_000_000));
    let clock = now.clone();
    let f = fetcher(
        &emu,
        &format!(
            "client_id = \"relay-app\"\nclient_secret = \"{CLIENT_SECRET}\"\ntoken_url = \"{}\"",
            emu.oauth_url()
        ),
    )
    .with_clock(Arc::new(move || {
        hookrelay::store::Millis(clock.load(Ordering::SeqCst))
    }));
    let url = emu.changes_url(1, emu.server_gen(), "");
    f.fetch(&url, &opts()).await.unwrap();
    // An hour's token: 54 minutes on it is still fresh (6 minutes left, margin 5).
    now.fetch_add(54 * 60_000, Ordering::SeqCst);
    f.fetch(&url, &opts()).await.unwrap();
    assert_eq!(emu.token_requests(), 1);
    now.fetch_add(2 * 60_000, Ordering::SeqCst);
    f.fetch(&url, &opts()).await.unwrap();
    assert_eq!(emu.token_requests(), 2);
    assert_eq!(
        emu.calls("/extractChanges").len(),
        3,
        "no request was refused"
    );
}

#[tokio::test]
async fn concurrent_fetches_share_one_refresh() {
    let emu = emulator().await;
    emu.set(|s| s.token_delay = Duration::from_millis(100));
    let f = Arc::new(fetcher(
        &emu,
        &format!(
            "client_id = \"relay-app\"\nclient_secret = \"{CLIENT_SECRET}\"\ntoken_url = \"{}\"",
            emu.oauth_url()
        ),
    ));
    let url = emu.changes_url(1, emu.server_gen(), "");
    let run = || {
        let tasks: Vec<_> = (0..12)
            .map(|_| {
                let (f, url) = (f.clone(), url.clone());
                tokio::spawn(async move { f.fetch(&url, &opts()).await })
            })
            .collect();
        futures::future::join_all(tasks)
    };
    for r in run().await {
        r.unwrap().unwrap();
    }
    assert_eq!(emu.token_requests(), 1, "first token shared");
    emu.expire_all_tokens();
    for r in run().await {
        r.unwrap().unwrap();
    }
    assert_eq!(emu.token_requests(), 2, "one refresh after the expiry");
}

#[tokio::test]
async fn errors_inside_a_200_are_classified() {
    let emu = emulator().await;
    let f = fetcher(&emu, &api_key_keys());
    let url = emu.changes_url(1, 2, "");
    let forbidden =
        serde_json::from_str(include_str!("fixtures/arcgis-rest/error-403.json")).unwrap();
    for (status, body, want) in [
        (200, forbidden, "forbidden"),
        (
            200,
            json!({"error":{"code":400,"message":"'layers' parameter is invalid","details":[]}}),
            "permanent",
        ),
        (
            200,
            json!({"error":{"code":500,"message":"Unable to complete operation.","details":[]}}),
            "retryable",
        ),
        (
            200,
            json!({"error":{"code":400,"message":"Service Parcels/FeatureServer does not exist","details":[]}}),
            "not_found",
        ),
        (
            404,
            json!({"error":{"code":404,"message":"Not Found"}}),
            "not_found",
        ),
        (200, json!({"neither": "edits nor statusUrl"}), "permanent"),
    ] {
        emu.script(status, body.clone());
        let e = f.fetch(&url, &opts()).await.unwrap_err();
        assert_eq!(e.label(), want, "{body}: {e:?}");
        assert!(
            e.to_string().contains("/FeatureServer/extractChanges"),
            "{e}"
        );
        assert!(!e.to_string().contains("serverGens"), "{e}");
    }
    assert!(f.fetch(&url, &opts()).await.is_ok());
}

#[tokio::test]
async fn outages_and_slow_answers_are_retryable() {
    let emu = emulator().await;
    let f = fetcher(&emu, &api_key_keys());
    let url = emu.changes_url(1, 2, "");
    emu.outage(1);
    let e = f.fetch(&url, &opts()).await.unwrap_err();
    assert!(
        matches!(e, FetchError::Retryable { .. }) && e.retryable(),
        "{e:?}"
    );
    assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
    assert!(e.to_string().contains("HTTP 503"), "{e}");
    f.fetch(&url, &opts()).await.unwrap();

    emu.set(|s| s.delay = Duration::from_millis(500));
    let slow = fetcher(&emu, &format!("{}\ntimeout = \"100ms\"", api_key_keys()));
    let e = slow.fetch(&url, &opts()).await.unwrap_err();
    assert!(e.retryable(), "{e:?}");
    assert!(e.to_string().contains("timed out"), "{e}");
}

#[tokio::test]
async fn max_features_truncates() {
    let emu = emulator().await;
    let f = fetcher(&emu, &api_key_keys());
    let start = emu.server_gen();
    let added: Vec<i64> = (0..5).map(|_| emu.add(0, json!({}), None)).collect();
    let url = emu.changes_url(start, emu.server_gen(), "");
    let doc = f
        .fetch(
            &url,
            &FetchOptions {
                max_features: 3,
                ..opts()
            },
        )
        .await
        .unwrap();
    assert!(doc.truncated);
    assert_eq!(doc.feature_count, 3);
    assert_eq!(oids(&layer0(&doc).adds), added[..3]);
    assert_eq!(f.options(false).max_features, 10_000);

    emu.set(|s| s.ids_only_service = true);
    let doc = f
        .fetch(
            &url,
            &FetchOptions {
                max_features: 2,
                ..opts()
            },
        )
        .await
        .unwrap();
    assert!(doc.truncated);
    assert_eq!(oids(&layer0(&doc).adds), added[..2]);
    assert_eq!(
        emu.calls("/0/query")[0].form["objectIds"]
            .split(',')
            .count(),
        2
    );
}

#[tokio::test]
async fn public_services_and_refused_tokens_name_the_problem() {
    let emu = emulator().await;
    let url = emu.changes_url(1, 2, "");
    let f = fetcher(&emu, "");
    let e = f.fetch(&url, &opts()).await.unwrap_err();
    assert!(matches!(e, FetchError::Auth { .. }), "{e:?}");
    assert!(e.to_string().contains("sends no token"), "{e}");
    emu.set(|s| s.require_token = false);
    f.fetch(&url, &opts()).await.unwrap();
    assert_eq!(emu.log().last().unwrap().token_via, None);

    // An API key the server refuses: no refresh possible, one request.
    emu.set(|s| {
        s.require_token = true;
        s.echo_token = true;
    });
    let f = fetcher(&emu, "api_key = \"AAPKrevokedKey0123456789zz\"");
    let before = emu.log().len();
    let e = f.fetch(&url, &opts()).await.unwrap_err();
    assert!(matches!(e, FetchError::Auth { .. }), "{e:?}");
    assert_eq!(emu.log().len(), before + 1);
    let text = format!("{e} {e:?} {:?}", std::error::Error::source(&e));
    assert!(
        !text.contains("AAPKrevoked"),
        "the echoed token is scrubbed: {text}"
    );
}

#[tokio::test]
async fn bad_credentials_are_permanent_and_never_printed() {
    let emu = emulator().await;
    emu.set(|s| s.echo_token = true);
    let url = emu.changes_url(1, 2, "");
    for keys in [
        format!("client_id = \"relay-app\"\nclient_secret = \"wrong-{CLIENT_SECRET}\"\ntoken_url = \"{}\"", emu.oauth_url()),
        format!("username = \"relay\"\npassword = \"wrong-{PASSWORD}\"\ntoken_url = \"{}\"", emu.generate_token_url()),
    ] {
        let f = fetcher(&emu, &keys);
        let e = f.fetch(&url, &opts()).await.unwrap_err();
        assert!(matches!(e, FetchError::Auth { .. }), "{e:?}");
        assert!(!e.retryable());
        let mut text = format!("{e} {e:?} {f:?}");
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            text.push_str(&format!(" {s} {s:?}"));
            src = s.source();
        }
        assert!(text.contains("\"online\""), "names the source: {text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
    assert!(emu.calls("/extractChanges").is_empty());
}

#[tokio::test]
async fn the_emulator_window_can_include_its_start() {
    let emu = emulator().await;
    let f = fetcher(&emu, &api_key_keys());
    let first = emu.add(0, json!({}), None);
    let g = emu.server_gen();
    let second = emu.add(0, json!({}), None);
    let url = emu.changes_url(g, emu.server_gen(), "");
    let doc = f.fetch(&url, &opts()).await.unwrap();
    assert_eq!(oids(&layer0(&doc).adds), [second], "min is exclusive");
    emu.set(|s| s.inclusive_min = true);
    let doc = f.fetch(&url, &opts()).await.unwrap();
    assert_eq!(oids(&layer0(&doc).adds), [first, second], "min included");
    assert_eq!(layer0(&doc).server_gens, Some([g, g + 1]));
}

#[tokio::test]
async fn a_max_record_count_below_page_size_loses_no_feature() {
    let emu = emulator().await;
    emu.set(|s| {
        s.ids_only_service = true;
        s.max_record_count = 2;
    });
    let f = fetcher(&emu, &format!("{}\npage_size = 5", api_key_keys()));
    let start = emu.server_gen();
    let added: Vec<i64> = (0..7).map(|i| emu.add(0, json!({"n": i}), None)).collect();
    let doc = f
        .fetch(&emu.changes_url(start, emu.server_gen(), ""), &opts())
        .await
        .unwrap();
    assert_eq!(oids(&layer0(&doc).adds), added);
    assert!(!doc.truncated);
    // 5 asked, 2 given; the other 5 in pages of 2.
    let pages: Vec<usize> = emu
        .calls("/0/query")
        .iter()
        .map(|q| q.form["objectIds"].split(',').count())
        .collect();
    assert_eq!(pages, [5, 2, 2, 1], "{pages:?}");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let emu = emulator().await;
    let f = fetcher(&emu, &api_key_keys());
    let url = emu.changes_url(1, 2, "");
    for status in [301, 302, 307, 308] {
        emu.script_redirect(status, &format!("{}/elsewhere", emu.base()));
        let before = emu.log().len();
        let e = f.fetch(&url, &opts()).await.unwrap_err();
        assert!(matches!(e, FetchError::Permanent { .. }), "{status}: {e:?}");
        assert!(e.to_string().contains("redirect"), "{e}");
        assert_eq!(
            emu.log().len(),
            before + 1,
            "{status}: the Location was not called"
        );
    }
}
