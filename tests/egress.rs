//! Egress end to end: sinks reached through a real forward proxy on
//! loopback (absolute-form requests for http://, CONNECT tunnels for
//! https://), NO_PROXY/no_proxy and HTTP(S)_PROXY from the environment (in
//! the real binary, so the process environment of other tests is left
//! alone), `ca_file` for a private CA, a client certificate (mTLS) per sink,
//! and `[delivery] allowed_hosts`.

mod common;
mod pki;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use base64::Engine;
use common::*;
use hookrelay::app::Relay;
use hookrelay::config::Config;
use hookrelay::server::{serve_with_tls, ServeOptions};
use pki::{toml_path, Ca, Leaf};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;

// ---- a forward proxy ---------------------------------------------------------

/// One request the proxy handled.
#[derive(Debug, Clone)]
struct Proxied {
    method: String,
    target: String,
    proxy_auth: Option<String>,
    /// The proxy's local address on its connection to the destination.
    upstream_local: SocketAddr,
}

/// A minimal HTTP forward proxy: CONNECT is tunnelled, an absolute-form
/// request is forwarded in origin form with `connection: close`.
#[derive(Clone)]
struct ForwardProxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Proxied>>>,
}

impl ForwardProxy {
    async fn start() -> ForwardProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let _ = proxy_one(conn, log).await;
                });
            }
        });
        ForwardProxy { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Proxied> {
        self.seen.lock().unwrap().clone()
    }
}

async fn proxy_one(conn: TcpStream, log: Arc<Mutex<Vec<Proxied>>>) -> std::io::Result<()> {
    let mut client = BufReader::new(conn);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if client.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        if line == "\r\n" {
            break;
        }
        head.push(line.trim_end().to_string());
    }
    let mut first = head[0].split(' ');
    let (method, target) = (
        first.next().unwrap_or("").to_string(),
        first.next().unwrap_or("").to_string(),
    );
    let header = |name: &str| {
        head[1..].iter().find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let proxy_auth = header("proxy-authorization");
    if method == "CONNECT" {
        let mut upstream = TcpStream::connect(&target).await?;
        log.lock().unwrap().push(Proxied {
            method,
            target,
            proxy_auth,
            upstream_local: upstream.local_addr()?,
        });
        let mut client = client.into_inner();
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        return Ok(());
    }
    let url = reqwest::Url::parse(&target).expect("absolute-form target");
    let host = format!(
        "{}:{}",
        url.host_str().unwrap(),
        url.port_or_known_default().unwrap()
    );
    let mut upstream = TcpStream::connect(&host).await?;
    log.lock().unwrap().push(Proxied {
        method: method.clone(),
        target: target.clone(),
        proxy_auth,
        upstream_local: upstream.local_addr()?,
    });
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let mut out = format!("{method} {path} HTTP/1.1\r\n");
    for h in &head[1..] {
        let name = h.split(':').next().unwrap_or("").to_ascii_lowercase();
        if !matches!(
            name.as_str(),
            "proxy-authorization" | "proxy-connection" | "connection"
        ) {
            out.push_str(h);
            out.push_str("\r\n");
        }
    }
    out.push_str("connection: close\r\n\r\n");
    upstream.write_all(out.as_bytes()).await?;
    upstream.write_all(client.buffer()).await?;
    let mut client = client.into_inner();
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

// ---- a receiver that knows who connected ---------------------------------------

#[derive(Debug, Clone)]
struct Arrival {
    peer: SocketAddr,
    body: Bytes,
}

#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    https: bool,
}

async fn record(
    State(arrivals): State<Arc<Mutex<Vec<Arrival>>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> &'static str {
    arrivals.lock().unwrap().push(Arrival { peer, body });
    "ok"
}

impl Receiver {
    /// Plain HTTP, or HTTPS with `tls`; served by the relay's own server code,
    /// which hands handlers the peer address.
    async fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> Receiver {
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let router = axum::Router::new()
            .fallback(record)
            .with_state(arrivals.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let https = tls.is_some();
        let opts = ServeOptions {
            header_read_timeout: Duration::from_secs(5),
            max_concurrency: Some(64),
            shutdown_grace: Duration::from_secs(1),
        };
        tokio::spawn(serve_with_tls(
            listener,
            router,
            opts,
            CancellationToken::new(),
            tls,
        ));
        Receiver {
            addr,
            arrivals,
            https,
        }
    }

    fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/hook", self.addr.port())
    }

    fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize) -> Vec<Arrival> {
        eventually(
            Duration::from_secs(15),
            &format!("{n} arrivals at {}", self.url()),
            || async { self.arrivals().len() >= n },
        )
        .await;
        self.arrivals()
    }
}

fn server_config(leaf: &Leaf, client_ca: Option<&Ca>) -> rustls::ServerConfig {
    use rustls_pki_types::pem::PemObject;
    let provider = hookrelay::tls::provider();
    let chain =
        vec![rustls_pki_types::CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap()];
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(rustls_pki_types::CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap())
                .unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder.with_single_cert(chain, key).unwrap()
}

async fn https_receiver(leaf: &Leaf, client_ca: Option<&Ca>) -> Receiver {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(leaf, client_ca)));
    Receiver::start(Some(acceptor)).await
}

// ---- relay setup ---------------------------------------------------------------

/// Relay config: the standard sources, `delivery_extra` under `[delivery]`,
/// then `sinks`.
fn relay_config(dir: &Path, delivery_extra: &str, sinks: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"
token = "{ADMIN_TOKEN}"

[store]
url = "sqlite://{db}/relay.db"

[delivery]
timeout = "3s"
initial_backoff = "50ms"
max_backoff = "200ms"
poll_interval = "100ms"
{delivery_extra}

[[sources]]
name = "portal"
kind = "arcgis-portal"
secret = "{PORTAL_SECRET}"

{sinks}
"#,
        db = toml_path(dir),
    )
}

fn sink(name: &str, url: &str, extra: &str) -> String {
    format!("[[sinks]]\nname = \"{name}\"\nkind = \"http\"\nurl = \"{url}\"\n{extra}\n")
}

async fn start(text: &str) -> (Relay, String) {
    let relay = Relay::start(Config::from_toml(text).expect("config"), test_options())
        .await
        .expect("relay starts");
    let ingress = format!("http://{}", relay.ingress_addr);
    (relay, ingress)
}

async fn post_portal(ingress: &str) {
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{ingress}/hooks/portal"))
        .header("content-type", "application/json")
        .header("secret", PORTAL_SECRET)
        .body(fixture("portal-item-share.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Deliveries of one sink through the store, as (status, last_error).
async fn delivery_states(relay: &Relay, sink: &str) -> Vec<(String, String)> {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let v: serde_json::Value = client
        .get(format!(
            "http://{}/api/v1/deliveries?sink={sink}",
            relay.admin_addr
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["status"].as_str().unwrap_or("").to_string(),
                d["last_error"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

async fn wait_status(relay: &Relay, sink: &str, status: &str) -> Vec<(String, String)> {
    eventually(
        Duration::from_secs(15),
        &format!("{sink} delivery {status}"),
        || async {
            delivery_states(relay, sink)
                .await
                .iter()
                .any(|(s, _)| s == status)
        },
    )
    .await;
    delivery_states(relay, sink).await
}

// ---- tests -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sink_only_through_the_proxy_with_its_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = ForwardProxy::start().await;
    let receiver = Receiver::start(None).await;
    let proxy_url = format!("http://relay:pr0xy-pa55@{}", proxy.addr);
    let text = relay_config(
        dir.path(),
        "",
        &sink(
            "via-proxy",
            &receiver.url(),
            &format!("proxy = \"{proxy_url}\""),
        ),
    );
    let config = Config::from_toml(&text).unwrap();
    // `hookrelay check` prints the proxy without its password.
    let printed = config.redacted_toml();
    assert!(!printed.contains("pr0xy-pa55"), "{printed}");
    let (relay, ingress) = start(&text).await;
    post_portal(&ingress).await;

    let got = receiver.wait_for(1).await;
    assert_eq!(got[0].body, fixture("portal-item-share.json"));
    let seen = proxy.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].target, receiver.url(), "absolute-form request");
    let basic = base64::engine::general_purpose::STANDARD.encode("relay:pr0xy-pa55");
    assert_eq!(
        seen[0].proxy_auth.as_deref(),
        Some(format!("Basic {basic}").as_str())
    );
    // The receiver's peer is the proxy's outbound connection, nothing else.
    assert!(
        got.iter().all(|a| a.peer == seen[0].upstream_local),
        "{got:?} vs {seen:?}"
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_sink_through_a_connect_tunnel_from_delivery_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("egress CA");
    let receiver = https_receiver(&ca.server(), None).await;
    let ca_file = ca.write(dir.path(), "ca.pem");
    let proxy = ForwardProxy::start().await;
    let text = relay_config(
        dir.path(),
        &format!(
            "proxy = \"{}\"\nca_file = \"{}\"",
            proxy.url(),
            toml_path(&ca_file)
        ),
        &sink("tls-sink", &receiver.url(), ""),
    );
    let (relay, ingress) = start(&text).await;
    post_portal(&ingress).await;
    let got = receiver.wait_for(1).await;
    let seen = proxy.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].target.clone()),
        ("CONNECT", receiver.addr.to_string())
    );
    assert_eq!(
        got[0].peer, seen[0].upstream_local,
        "arrived through the tunnel"
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_file_decides_whether_a_private_ca_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("inspecting proxy CA");
    let receiver = https_receiver(&ca.server(), None).await;
    let ca_file = ca.write(dir.path(), "ca.pem");
    let sinks = sink("without-ca", &receiver.url(), "max_attempts = 1")
        + &sink(
            "with-ca",
            &receiver.url(),
            &format!("ca_file = \"{}\"", toml_path(&ca_file)),
        );
    let (relay, ingress) = start(&relay_config(dir.path(), "", &sinks)).await;
    post_portal(&ingress).await;

    let got = receiver.wait_for(1).await;
    let dead = wait_status(&relay, "without-ca", "dead").await;
    // The recorded error says the connection failed, and why: the
    // administrator's hint to set ca_file.
    assert!(dead[0].1.contains("connection failed"), "{dead:?}");
    assert!(
        dead[0].1.to_ascii_lowercase().contains("certificate"),
        "{dead:?}"
    );
    wait_status(&relay, "with-ca", "delivered").await;
    // Only the sink that trusts the CA got through.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.arrivals().len(), got.len());
    assert_eq!(got.len(), 1);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_per_sink() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new("receiver CA");
    let client_ca = Ca::new("client CA");
    let receiver = https_receiver(&server_ca.server(), Some(&client_ca)).await;
    let ca_file = server_ca.write(dir.path(), "ca.pem");
    let (cert, key) = client_ca.client("hookrelay").write(dir.path(), "client");
    let ca_line = format!("ca_file = \"{}\"", toml_path(&ca_file));
    let with_cert = format!(
        "client_cert = \"{}\"\nclient_key = \"{}\"",
        toml_path(&cert),
        toml_path(&key)
    );
    let sinks = sink("anonymous", &receiver.url(), "max_attempts = 1")
        + &sink("with-cert", &receiver.url(), &with_cert);
    let (relay, ingress) = start(&relay_config(dir.path(), &ca_line, &sinks)).await;
    post_portal(&ingress).await;
    receiver.wait_for(1).await;
    wait_status(&relay, "with-cert", "delivered").await;
    wait_status(&relay, "anonymous", "dead").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.arrivals().len(), 1);
    relay.shutdown().await;

    // Validation: both keys or neither, and a key that fits the certificate.
    let only = sink(
        "half",
        "https://127.0.0.1:1/x",
        &format!("client_cert = \"{}\"", toml_path(&cert)),
    );
    let e = hookrelay::app::compile_text(&relay_config(dir.path(), "", &only))
        .unwrap_err()
        .to_string();
    assert!(e.contains("client_cert") && e.contains("together"), "{e}");
    let (_, other_key) = client_ca.client("other").write(dir.path(), "other");
    let wrong = sink(
        "wrong",
        "https://127.0.0.1:1/x",
        &format!(
            "client_cert = \"{}\"\nclient_key = \"{}\"",
            toml_path(&cert),
            toml_path(&other_key)
        ),
    );
    let e = hookrelay::app::compile_text(&relay_config(dir.path(), "", &wrong))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sinks[0].client_cert") && e.contains("does not fit"),
        "{e}"
    );
    assert!(!e.contains("PRIVATE KEY"), "{e}");
}

#[test]
fn allowed_hosts_is_deny_by_default_when_set() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = r#"allowed_hosts = ["*.slack.com", "hooks.example.org"]"#;
    let ok = sink("slack", "https://hooks.slack.com/services/T0/B0/XXXX", "")
        + &sink("ours", "https://hooks.example.org/in?token=abc", "");
    hookrelay::app::compile_text(&relay_config(dir.path(), allowed, &ok))
        .expect("allowed hosts pass");

    let bad = ok.clone() + &sink("elsewhere", "https://evil.example.com/x?key=s3cret-key", "");
    let e = hookrelay::app::compile_text(&relay_config(dir.path(), allowed, &bad))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sinks[2].url") && e.contains("\"elsewhere\"") && e.contains("evil.example.com"),
        "{e}"
    );
    assert!(
        !e.contains("s3cret-key"),
        "the URL's key is not in the error: {e}"
    );
    // The bare domain is not covered by *.domain.
    let apex = sink("apex", "https://slack.com/x", "");
    assert!(hookrelay::app::compile_text(&relay_config(dir.path(), allowed, &apex)).is_err());
    // An empty list allows nothing; no list allows everything.
    assert!(
        hookrelay::app::compile_text(&relay_config(dir.path(), "allowed_hosts = []", &ok)).is_err()
    );
    hookrelay::app::compile_text(&relay_config(dir.path(), "", &bad))
        .expect("no list: everything allowed");
    // Patterns are checked.
    let e = hookrelay::app::compile_text(&relay_config(
        dir.path(),
        r#"allowed_hosts = ["https://x.org/"]"#,
        &ok,
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("delivery.allowed_hosts[0]"), "{e}");
}

// ---- the environment, through the real binary ---------------------------------

/// `hookrelay serve` with exactly these proxy variables in its environment.
struct Serve {
    child: Child,
    ingress: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_with_env(config: &Path, env: &[(&str, &str)], log: &Path) -> Serve {
    use std::io::BufRead;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookrelay"));
    cmd.arg("--config").arg(config).arg("serve");
    for v in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
    ] {
        cmd.env_remove(v);
    }
    // Owned by `Serve` from the start: its Drop kills and reaps the process
    // on every path, panics included.
    let mut serve = Serve {
        child: cmd
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
        ingress: String::new(),
    };
    let mut stdout = std::io::BufReader::new(serve.child.stdout.take().unwrap());
    let mut line = String::new();
    while stdout.read_line(&mut line).unwrap_or(0) > 0 {
        if let Some(a) = line
            .trim_end()
            .strip_prefix("hookrelay: ingress listening on ")
        {
            serve.ingress = a.to_string();
            // Keep reading: a closed pipe would make the relay's next
            // println fail and end the process.
            std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
            return serve;
        }
        line.clear();
    }
    panic!(
        "relay did not start: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Runs the binary with `env`, posts one payload, and reports (arrivals at
/// the receiver, requests through the proxy).
async fn through_binary(
    delivery_extra: &str,
    sink_extra: &str,
    env: &[(&str, &str)],
    proxy: &ForwardProxy,
) -> (Vec<Arrival>, Vec<Proxied>) {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(None).await;
    let before = proxy.seen().len();
    let text = relay_config(
        dir.path(),
        delivery_extra,
        &sink("out", &receiver.url(), sink_extra),
    );
    let config = dir.path().join("hookrelay.toml");
    std::fs::write(&config, text).unwrap();
    let relay = serve_with_env(&config, env, &dir.path().join("relay.log"));
    post_portal(&relay.ingress).await;
    let got = receiver.wait_for(1).await;
    drop(relay);
    (got, proxy.seen()[before..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_proxy_bypasses_the_configured_proxy() {
    let proxy = ForwardProxy::start().await;
    let with_proxy = format!("proxy = \"{}\"", proxy.url());
    for var in ["NO_PROXY", "no_proxy"] {
        let (got, seen) =
            through_binary(&with_proxy, "", &[(var, "localhost,127.0.0.1")], &proxy).await;
        assert!(seen.is_empty(), "{var}: went through the proxy: {seen:?}");
        assert_eq!(got.len(), 1);
    }
    // Control: the same binary and config without NO_PROXY uses the proxy.
    let (got, seen) = through_binary(&with_proxy, "", &[], &proxy).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(got[0].peer, seen[0].upstream_local);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_proxy_is_used_when_none_is_configured() {
    let proxy = ForwardProxy::start().await;
    let (got, seen) = through_binary("", "", &[("HTTP_PROXY", &proxy.url())], &proxy).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(got[0].peer, seen[0].upstream_local);
    // A sink's own proxy wins over the environment's.
    let other = ForwardProxy::start().await;
    let (_, seen) = through_binary(
        "",
        &format!("proxy = \"{}\"", other.url()),
        &[("HTTP_PROXY", &proxy.url())],
        &proxy,
    )
    .await;
    assert!(seen.is_empty(), "{seen:?}");
    assert_eq!(other.seen().len(), 1);
}
