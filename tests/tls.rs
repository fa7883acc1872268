//! HTTPS ingress end to end: certificates made by a test CA (rcgen), clients
//! that trust only that CA, a signed ArcGIS payload accepted over TLS, the
//! certificate swapped on the same listener (reload call and real SIGHUP,
//! in this process and in the `hookrelay` binary), a bad new certificate
//! that keeps the old one, and the handshake timeout for silent clients.

mod common;
mod pki;

use std::path::Path;
use std::time::Duration;

use common::process::{write_config, RelayProcess};
use common::*;
use hookrelay::app::Relay;
use hookrelay::config::Config;
use pki::{client_trusting, toml_path, Ca};
use tokio::io::AsyncReadExt;

fn tls_config(dir: &Path, cert: &Path, key: &Path, sink: &TestSink) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
header_read_timeout = "1s"
body_read_timeout = "1s"
tls_cert = "{cert}"
tls_key = "{key}"

[admin]
listen = "127.0.0.1:0"
token = "{ADMIN_TOKEN}"

[store]
url = "sqlite://{db}/relay.db"

[delivery]
initial_backoff = "50ms"
max_backoff = "500ms"
poll_interval = "100ms"

[[sources]]
name = "server"
kind = "arcgis-service"
secret = "{SERVER_KEY}"

[[sinks]]
name = "all"
kind = "http"
url = "{sink}"
"#,
        cert = toml_path(cert),
        key = toml_path(key),
        db = toml_path(dir),
        sink = sink.url(),
    )
}

async fn start(text: &str) -> Relay {
    Relay::start(Config::from_toml(text).expect("config"), test_options())
        .await
        .expect("relay starts")
}

/// Posts the feature-service fixture, signed, over HTTPS.
async fn post_signed(
    client: &reqwest::Client,
    base: &str,
) -> Result<reqwest::Response, reqwest::Error> {
    let body = fixture("server-feature-created.json");
    client
        .post(format!("{base}/hooks/server"))
        .header("content-type", "application/json")
        .header("x-esriHook-Signature", esri_signature(SERVER_KEY, &body))
        .body(body)
        .send()
        .await
}

/// Whether a client trusting only `ca` completes a request (any status).
async fn trusted_by(ca: &Ca, base: &str) -> bool {
    client_trusting(ca)
        .get(format!("{base}/hooks/server"))
        .send()
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_payload_over_https_then_certificate_reloaded_on_the_same_port() {
    let dir = tempfile::tempdir().unwrap();
    let (ca1, ca2) = (Ca::new("first CA"), Ca::new("second CA"));
    let (cert, key) = ca1.server().write(dir.path(), "tls");
    let sink = TestSink::start().await;
    let relay = start(&tls_config(dir.path(), &cert, &key, &sink)).await;
    assert_eq!(relay.ingress_scheme(), "https");
    let base = format!("https://{}", relay.ingress_addr);

    let r = post_signed(&client_trusting(&ca1), &base)
        .await
        .expect("HTTPS request");
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (v["status"].as_str(), v["deliveries"].as_u64()),
        (Some("accepted"), Some(1)),
        "{v}"
    );
    let got = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].body, fixture("server-feature-created.json"));

    // Plain HTTP to the HTTPS port gets no answer; a client that does not
    // trust the CA refuses the certificate.
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(plain
        .get(format!("http://{}/hooks/server", relay.ingress_addr))
        .send()
        .await
        .is_err());
    assert!(!trusted_by(&ca2, &base).await);

    // Renewal: new files in place, reload, same listener.
    ca2.server().write(dir.path(), "tls");
    relay
        .tls()
        .expect("TLS configured")
        .reload()
        .expect("reload");
    assert!(
        trusted_by(&ca2, &base).await,
        "new certificate not served after reload"
    );
    assert!(
        !trusted_by(&ca1, &base).await,
        "old certificate still served after reload"
    );
    let r = post_signed(&client_trusting(&ca2), &base).await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "duplicate or not, the payload is acknowledged"
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_new_certificate_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("kept CA");
    let good = ca.server();
    let (cert, key) = good.write(dir.path(), "tls");
    let sink = TestSink::start().await;
    let relay = start(&tls_config(dir.path(), &cert, &key, &sink)).await;
    let base = format!("https://{}", relay.ingress_addr);
    let tls = relay.tls().unwrap();

    // Half-written renewal: garbage in the certificate file.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n").unwrap();
    let e = tls.reload().unwrap_err().to_string();
    assert!(
        e.contains(&cert.display().to_string()),
        "error names the file: {e}"
    );
    assert!(trusted_by(&ca, &base).await);

    // A certificate with somebody else's key.
    std::fs::write(&cert, ca.server().cert_pem).unwrap();
    let e = tls.reload().unwrap_err().to_string();
    assert!(e.contains("does not fit"), "{e}");
    assert!(!e.contains("PRIVATE KEY"), "no key material in errors: {e}");
    assert!(trusted_by(&ca, &base).await);

    // A missing key file.
    good.write(dir.path(), "tls");
    std::fs::remove_file(&key).unwrap();
    assert!(tls
        .reload()
        .unwrap_err()
        .to_string()
        .contains(&key.display().to_string()));
    assert_eq!(tls.current_chain()[0].as_ref(), good.der.as_slice());
    assert!(trusted_by(&ca, &base).await);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let (ca1, ca2) = (Ca::new("before HUP"), Ca::new("after HUP"));
    let (cert, key) = ca1.server().write(dir.path(), "tls");
    let sink = TestSink::start().await;
    // Starting the relay installs the SIGHUP handler, so the signal below
    // cannot end the test process.
    let relay = start(&tls_config(dir.path(), &cert, &key, &sink)).await;
    let base = format!("https://{}", relay.ingress_addr);
    assert!(trusted_by(&ca1, &base).await);
    let next = ca2.server();
    next.write(dir.path(), "tls");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    eventually(
        Duration::from_secs(10),
        "certificate swapped by SIGHUP",
        || async { relay.tls().unwrap().current_chain()[0].as_ref() == next.der.as_slice() },
    )
    .await;
    assert!(trusted_by(&ca2, &base).await);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_dropped_after_the_handshake_timeout_and_blocks_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("timeout CA");
    let (cert, key) = ca.server().write(dir.path(), "tls");
    let sink = TestSink::start().await;
    let text = tls_config(dir.path(), &cert, &key, &sink).replace(
        "header_read_timeout = \"1s\"",
        "header_read_timeout = \"2s\"",
    );
    let relay = start(&text).await;
    let base = format!("https://{}", relay.ingress_addr);

    let mut silent = tokio::net::TcpStream::connect(relay.ingress_addr)
        .await
        .unwrap();
    // Meanwhile another client is served at once.
    let t0 = std::time::Instant::now();
    assert!(trusted_by(&ca, &base).await);
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "handshake of others waited on the silent client"
    );
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(6), silent.read(&mut buf)).await;
    match r {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        other => panic!("silent client not disconnected by the handshake timeout: {other:?}"),
    }
    relay.shutdown().await;
}

#[test]
fn config_validation_loads_the_certificate_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("config CA");
    let (cert, key) = ca.server().write(dir.path(), "tls");
    let base = |c: &Path, k: &Path| {
        format!(
            "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n[store]\nurl = \"sqlite://{}/x.db\"\n",
            toml_path(c),
            toml_path(k),
            toml_path(dir.path())
        )
    };
    hookrelay::app::compile_text(&base(&cert, &key)).expect("good pair");

    let missing = dir.path().join("nope.crt");
    let e = hookrelay::app::compile_text(&base(&missing, &key))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("server.tls_cert") && e.contains("nope.crt"),
        "{e}"
    );

    let (_, other_key) = ca.server().write(dir.path(), "other");
    let e = hookrelay::app::compile_text(&base(&cert, &other_key))
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not fit") && e.contains("other.key"), "{e}");

    // The key file given as the certificate: no certificate inside.
    let e = hookrelay::app::compile_text(&base(&key, &key))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no PEM certificate") && !e.contains("BEGIN"),
        "{e}"
    );

    let only_cert = format!("[server]\ntls_cert = \"{}\"\n", toml_path(&cert));
    assert!(hookrelay::app::compile_text(&only_cert)
        .unwrap_err()
        .to_string()
        .contains("together"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_https_and_survives_sighup_with_the_new_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (ca1, ca2) = (Ca::new("binary CA 1"), Ca::new("binary CA 2"));
    let (cert, key) = ca1.server().write(dir.path(), "tls");
    let sink = TestSink::start().await;
    let config = write_config(dir.path(), &tls_config(dir.path(), &cert, &key, &sink));
    let mut relay = RelayProcess::start(&config, dir.path());
    assert!(relay.ingress.starts_with("https://"), "{}", relay.ingress);
    let r = post_signed(&client_trusting(&ca1), &relay.ingress)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    ca2.server().write(dir.path(), "tls");
    std::process::Command::new("kill")
        .args(["-HUP", &relay.child.id().to_string()])
        .status()
        .unwrap();
    let ingress = relay.ingress.clone();
    eventually(
        Duration::from_secs(10),
        "the relay process serves the new certificate",
        || {
            let ingress = ingress.clone();
            let ca2 = &ca2;
            async move { trusted_by(ca2, &ingress).await }
        },
    )
    .await;
    assert!(
        relay.child.try_wait().unwrap().is_none(),
        "SIGHUP ended the relay"
    );
    assert!(
        relay.log().contains("TLS certificate reloaded"),
        "{}",
        relay.log()
    );
    assert_eq!(relay.sigterm(Duration::from_secs(10)), Some(0));
}
