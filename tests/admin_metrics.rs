//! `/metrics` after real traffic: `promtool check metrics` accepts the
//! live output, every metric of the contract is there with bounded labels,
//! Prometheus gets OpenMetrics when it asks, and every metric the Grafana
//! dashboard and alert rules use (as `deploy/validate.sh --metric-names`
//! lists them) exists.
//!
//! promtool comes from Debian's `prometheus` package; without it (or
//! without python3's yaml for validate.sh) the checks that need it skip
//! with a note, unless `CI` is set, where they fail.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// The metric families issue 5 names, with their types.
const CONTRACT: &[(&str, &str)] = &[
    ("hookrelay_ingress_requests", "counter"),
    ("hookrelay_ingress_commit_seconds", "histogram"),
    ("hookrelay_deliveries", "counter"),
    ("hookrelay_attempt_duration_seconds", "histogram"),
    ("hookrelay_queue_depth", "gauge"),
    ("hookrelay_oldest_pending_age_seconds", "gauge"),
    ("hookrelay_sink_state", "gauge"),
    ("hookrelay_end_to_end_seconds", "histogram"),
    ("hookrelay_build_info", "gauge"),
];

const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

fn in_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// Skips (returns false) with a note, or fails in CI.
fn require(tool_ok: bool, what: &str) -> bool {
    if tool_ok {
        return true;
    }
    if in_ci() {
        panic!("{what} is required when CI is set");
    }
    eprintln!("SKIPPED: {what} is not available (set CI=1 to make this a failure)");
    false
}

fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A relay that has seen every kind of ingress outcome and delivery outcome.
async fn busy_relay() -> (TestApp, TestSink) {
    let b = Backend::new(Kind::Sqlite).await.unwrap();
    let sink = TestSink::start().await;
    let flaky = TestSink::start().await;
    // One retry then success for "out"; a permanent failure for "flaky".
    sink.script([Reply::Status(503)]);
    flaky.script([Reply::Status(404)]);
    let extra = [http_sink("out", &sink, ""), http_sink("flaky", &flaky, "")].join("\n");
    let app = spawn_app(b, &extra).await;
    let body = fixture("portal-item-share.json");
    assert_eq!(app.post_portal(&body).await.status(), 200);
    assert_eq!(app.post_portal(&body).await.status(), 200, "duplicate");
    let r = app
        .post(
            "portal",
            body.clone(),
            &[("content-type", "application/json"), ("secret", "wrong")],
        )
        .await;
    assert_eq!(r.status(), 401);
    let r = app
        .post(
            "portal",
            "not json",
            &[
                ("content-type", "application/json"),
                ("secret", PORTAL_SECRET),
            ],
        )
        .await;
    assert_eq!(r.status(), 400);
    let r = app
        .post(
            "portal",
            vec![b' '; 70_000],
            &[
                ("content-type", "application/json"),
                ("secret", PORTAL_SECRET),
            ],
        )
        .await;
    assert_eq!(r.status(), 413);
    let r = app
        .post(
            "nowhere",
            body.clone(),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(r.status(), 404);
    eventually(
        Duration::from_secs(10),
        "one delivered, one dead",
        || async {
            app.deliveries("status=delivered").await.len() == 1
                && app.deliveries("status=dead").await.len() == 1
        },
    )
    .await;
    (app, sink)
}

async fn scrape(app: &TestApp, accept: Option<&str>) -> (String, String) {
    let mut req = app.client.get(format!("{}/metrics", app.admin));
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    (ct, r.text().await.unwrap())
}

/// `# TYPE name type` lines.
fn types(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect()
}

/// Every `label="value"` pair of the samples.
fn label_values(text: &str, label: &str) -> BTreeSet<String> {
    let key = format!("{label}=\"");
    let mut out = BTreeSet::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut rest = line;
        while let Some(i) = rest.find(&key) {
            let after = &rest[i + key.len()..];
            let end = after.find('"').unwrap_or(after.len());
            out.insert(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_metrics_pass_promtool_and_cover_the_contract() {
    let (app, _sink) = busy_relay().await;

    // A plain scrape (promtool, curl) gets the classic text format.
    let (ct, text) = scrape(&app, None).await;
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    assert!(!text.contains("# EOF"));
    let typed = types(&text);
    for (name, kind) in CONTRACT {
        let expect = if *kind == "counter" {
            format!("{name}_total")
        } else {
            name.to_string()
        };
        assert!(
            typed.iter().any(|(n, t)| *n == expect && t == kind),
            "# TYPE {expect} {kind} is missing:\n{text}"
        );
    }
    for sample in [
        "hookrelay_ingress_commit_seconds_bucket",
        "hookrelay_attempt_duration_seconds_bucket{",
        "hookrelay_end_to_end_seconds_count{sink=\"out\"}",
        "hookrelay_build_info{version=\"",
        "hookrelay_oldest_pending_age_seconds{sink=\"flaky\"}",
        "hookrelay_sink_state{sink=\"out\",state=\"active\"} 1",
        "hookrelay_sink_state{sink=\"out\",state=\"paused\"} 0",
        "hookrelay_queue_depth{sink=\"flaky\",status=\"dead\"} 1",
    ] {
        assert!(text.contains(sample), "{sample} is missing:\n{text}");
    }
    // Outcome words from fixed sets; names only from the config.
    let outcomes = label_values(&text, "outcome");
    for o in [
        "accepted",
        "duplicate",
        "unauthorized",
        "invalid",
        "too_large",
        "delivered",
        "retried",
        "dead",
    ] {
        assert!(
            outcomes.contains(o),
            "outcome {o} not counted: {outcomes:?}"
        );
    }
    let sources = label_values(&text, "source");
    assert!(
        sources
            .iter()
            .all(|s| ["portal", "server", "github", "unknown"].contains(&s.as_str())),
        "{sources:?}"
    );
    assert!(
        !sources.contains("nowhere"),
        "a request path became a label value"
    );
    let sinks = label_values(&text, "sink");
    assert_eq!(
        sinks,
        BTreeSet::from(["flaky".to_string(), "out".to_string()])
    );

    if require(have("promtool"), "promtool (apt-get install prometheus)") {
        let (ok, said) = promtool_check(&text);
        assert!(
            ok,
            "promtool check metrics failed:\n{said}\n--- exposition ---\n{text}"
        );
    }

    // Prometheus asks for OpenMetrics first, and gets it.
    let (ct, om) = scrape(&app, Some(PROMETHEUS_ACCEPT)).await;
    assert!(
        ct.starts_with("application/openmetrics-text; version=1.0.0"),
        "{ct}"
    );
    assert!(om.trim_end().ends_with("# EOF"));
    assert!(om.contains("# TYPE hookrelay_deliveries counter"));
    assert!(om.contains("hookrelay_deliveries_total{"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_alerts_use_exists() {
    let python_yaml = Command::new("python3")
        .args(["-c", "import yaml"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !require(python_yaml, "python3 with PyYAML (for deploy/validate.sh)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("names.txt");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/validate.sh");
    let run = Command::new("bash")
        .arg(script)
        .arg("--metric-names")
        .arg(&out)
        .output()
        .expect("bash runs validate.sh");
    // validate.sh's other checks are its own business; the names are ours.
    let names = std::fs::read_to_string(&out).unwrap_or_else(|_| {
        panic!(
            "validate.sh wrote no metric names:\n{}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        )
    });
    let names: Vec<&str> = names
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert!(names.len() >= 5, "suspiciously few names: {names:?}");

    let (app, _sink) = busy_relay().await;
    // validate.sh lists families as OpenMetrics names them (no `_total`).
    let (_, om) = scrape(&app, Some(PROMETHEUS_ACCEPT)).await;
    let live: BTreeSet<String> = types(&om).into_iter().map(|(n, _)| n).collect();
    let missing: Vec<&&str> = names.iter().filter(|n| !live.contains(**n)).collect();
    assert!(
        missing.is_empty(),
        "used by deploy/ but not exported: {missing:?}\nexported: {live:?}"
    );
    app.stop().await;
}
