//! The status page in a real browser: Debian's headless Chromium, driven
//! by `playwright-core` (tests/browser/status.test.mjs), against a relay
//! started here with one dead delivery.
//!
//! Needs `/usr/bin/chromium` (apt-get install chromium), node, and
//! `npm ci` in tests/browser. Without them the test skips with a note —
//! unless `CI` is set, where it fails. Screenshots land in `target/`
//! (`status-page.png`, `status-page-delivered.png`, `message-page.png`);
//! with `HOOKRELAY_UPDATE_SCREENSHOT=1` the first is also copied to
//! `docs/status-page.png` for the README.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const CHROMIUM: &str = "/usr/bin/chromium";

/// What is missing for the browser test, if anything.
fn missing(browser_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| CHROMIUM.to_string());
    if !Path::new(&chromium).exists() {
        out.push(format!("{chromium} (apt-get install chromium)"));
    }
    let node_ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node_ok {
        out.push("node (apt-get install nodejs)".into());
    }
    if !browser_dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        out.push(format!(
            "{}/node_modules (npm ci there)",
            browser_dir.display()
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_chromium() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let browser_dir = root.join("tests/browser");
    let lacking = missing(&browser_dir);
    if !lacking.is_empty() {
        let what = lacking.join(", ");
        if std::env::var_os("CI").is_some() {
            panic!("the browser test needs {what}; .ci/run installs them");
        }
        eprintln!(
            "SKIPPED: status page browser test: missing {what} (set CI=1 to make this a failure)"
        );
        return;
    }

    let b = Backend::new(Kind::Sqlite).await.unwrap();
    let sink = TestSink::start().await;
    // Permanent failure first, so the delivery is dead at once; every later
    // request gets 200, so the replay the browser presses succeeds.
    sink.script([Reply::Body(410, "channel_is_archived".into())]);
    // Two more sinks so the page (and the README's screenshot) shows the
    // other states: one delivering fine, one paused by an administrator.
    let archive = TestSink::start().await;
    let teams = TestSink::start().await;
    let extra = [
        http_sink("out", &sink, ""),
        http_sink("archive", &archive, ""),
        http_sink("gis-team", &teams, ""),
    ]
    .join("\n");
    let app = spawn_app(b, &extra).await;
    let r = app
        .admin_post("/api/v1/sinks/gis-team/pause", serde_json::json!({}))
        .await;
    assert_eq!(r.status(), 200);
    app.post_portal(&fixture("portal-item-share.json")).await;
    eventually(Duration::from_secs(10), "a dead delivery", || async {
        app.deliveries("status=dead").await.len() == 1
            && app.deliveries("status=delivered&sink=archive").await.len() == 1
    })
    .await;

    let shots = root.join("target");
    let run = tokio::process::Command::new("node")
        .arg(browser_dir.join("status.test.mjs"))
        .arg(&app.admin)
        .arg(ADMIN_TOKEN)
        .arg(&shots)
        .current_dir(&browser_dir)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the browser test finishes within 3 minutes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "browser test failed ({}):\n{stdout}\n{stderr}",
        out.status
    );

    assert_eq!(
        app.deliveries("status=delivered&sink=out").await.len(),
        1,
        "the replay delivered it"
    );
    assert_eq!(teams.count(), 0, "the paused sink stayed paused");
    assert_eq!(sink.count(), 2);
    let shot = shots.join("status-page.png");
    assert!(shot.exists(), "no screenshot at {}", shot.display());
    println!(
        "screenshots: {}/{{status-page,status-page-delivered,message-page}}.png",
        shots.display()
    );
    if std::env::var_os("HOOKRELAY_UPDATE_SCREENSHOT").is_some() {
        std::fs::create_dir_all(root.join("docs")).unwrap();
        std::fs::copy(&shot, root.join("docs/status-page.png")).unwrap();
        println!("copied to docs/status-page.png");
    }
    app.stop().await;
}
