//! Every configuration in examples/ passes the real `hookrelay check`, with
//! the environment variables it references set to dummy values and the
//! certificate files it names made on the spot — and no secret value shows
//! in the output. The quick start also really starts, with no environment
//! at all, and accepts the README's signed payload.

mod common;
mod pki;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{esri_signature, fixture};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

/// Keys whose value is a PEM file the configuration loads at check time.
const FILE_KEYS: &[&str] = &[
    "tls_cert",
    "tls_key",
    "ca_file",
    "client_cert",
    "client_key",
];
/// Keys whose literal values are secrets and must never be printed.
const SECRET_KEYS: &[&str] = &["secret", "token", "password"];

/// What a file needs to be checked: env values, secrets to look for in the
/// output, and file paths to create.
#[derive(Default)]
struct Needs {
    env: BTreeMap<String, String>,
    secrets: Vec<String>,
    files: Vec<(String, String)>,
}

/// A dummy for `env:NAME` at `key` that is valid where it stands and whose
/// secret part sits where the relay must hide it (URL password, key-bearing
/// query parameter, Slack path).
fn dummy(name: &str, key: &str, sink_kind: Option<&str>, needs: &mut Needs) -> String {
    let secret = format!(
        "dummy-{}-{}",
        name.to_lowercase().replace('_', "-"),
        uuid::Uuid::new_v4().simple()
    );
    needs.secrets.push(secret.clone());
    let leaf = key.rsplit('.').next().unwrap_or(key);
    match (leaf, sink_kind) {
        ("url", None) if key == "store.url" => format!("postgres://hookrelay:{secret}@db.internal.example:5432/hookrelay"),
        ("proxy", _) => format!("http://svc-hookrelay:{secret}@proxy.corp.example:3128"),
        ("url", Some("slack")) => format!("https://hooks.slack.com/services/T0000/B0000/{secret}"),
        ("url", Some("teams" | "power-automate")) => format!(
            "https://prod-00.westeurope.logic.azure.com/workflows/abc/triggers/manual/paths/invoke?api-version=2016-06-01&sig={secret}"
        ),
        ("url", Some("powerbi")) => format!("https://api.powerbi.com/beta/tenant/datasets/ds/rows?key={secret}"),
        ("url", Some(_)) => format!("https://hooks.example.org/in?token={secret}"),
        _ => secret,
    }
}

fn walk(v: &toml::Value, key: &str, sink_kind: Option<&str>, needs: &mut Needs) {
    match v {
        toml::Value::String(s) => {
            let leaf = key.rsplit('.').next().unwrap_or(key);
            let leaf = leaf.split('[').next().unwrap_or(leaf);
            if let Some(name) = s.strip_prefix("env:") {
                let value = dummy(name, key, sink_kind, needs);
                needs.env.insert(name.to_string(), value);
            } else if FILE_KEYS.contains(&leaf) {
                needs.files.push((leaf.to_string(), s.clone()));
            } else if SECRET_KEYS.contains(&leaf) || key.contains(".headers.") {
                needs.secrets.push(s.clone());
            }
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, &format!("{key}[{i}]"), sink_kind, needs);
            }
        }
        toml::Value::Table(t) => {
            let kind = if key.starts_with("sinks[") && !key.contains('.') {
                t.get("kind").and_then(|k| k.as_str())
            } else {
                sink_kind
            };
            for (k, v) in t {
                let path = if key.is_empty() {
                    k.clone()
                } else {
                    format!("{key}.{k}")
                };
                walk(v, &path, kind, needs);
            }
        }
        _ => {}
    }
}

/// The example's text with every certificate path moved into `root`, where
/// a certificate, key and CA are written.
fn with_files(text: &str, needs: &Needs, root: &Path) -> String {
    let ca = pki::Ca::new("examples CA");
    let leaf = ca.server();
    let mut text = text.to_string();
    for (key, path) in &needs.files {
        let target = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        let content = match key.as_str() {
            "ca_file" => ca.pem(),
            k if k.ends_with("_key") => leaf.key_pem.clone(),
            _ => leaf.cert_pem.clone(),
        };
        std::fs::write(&target, content).unwrap();
        text = text.replace(
            &format!("\"{path}\""),
            &format!("\"{}\"", pki::toml_path(&target)),
        );
    }
    text
}

#[test]
fn the_three_topologies_are_there() {
    let names: Vec<String> = example_files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in ["hookrelay.toml", "restricted-egress.toml", "scale-out.toml"] {
        assert!(
            names.iter().any(|n| n == want),
            "examples/{want} missing: {names:?}"
        );
    }
}

#[test]
fn every_example_passes_check_without_printing_a_secret() {
    for file in example_files() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        let tree: toml::Value = toml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut needs = Needs::default();
        walk(&tree, "", None, &mut needs);
        let dir = tempfile::tempdir().unwrap();
        let checked = dir.path().join(&name);
        std::fs::write(&checked, with_files(&text, &needs, dir.path())).unwrap();

        let out = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
            .arg("--config")
            .arg(&checked)
            .arg("check")
            .env_clear()
            .envs(&needs.env)
            .env("RUST_LOG", "warn")
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: hookrelay check failed (env {:?})\n{stderr}",
            needs.env.keys()
        );
        assert!(
            stdout.contains("[[sinks]]") && stderr.contains("configuration OK"),
            "{name}: {stdout}\n{stderr}"
        );
        for s in &needs.secrets {
            assert!(
                !stdout.contains(s.as_str()) && !stderr.contains(s.as_str()),
                "{name}: secret {s:?} printed:\n{stdout}{stderr}"
            );
        }
    }
}

struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_quick_start_starts_with_no_environment_and_takes_the_readme_payload() {
    let text = std::fs::read_to_string(examples_dir().join("hookrelay.toml")).unwrap();
    let mut needs = Needs::default();
    walk(&toml::from_str(&text).unwrap(), "", None, &mut needs);
    assert!(
        needs.env.is_empty(),
        "the quick start must run without environment variables: {:?}",
        needs.env
    );
    assert!(
        needs.files.is_empty(),
        "the quick start must need no certificate files"
    );
    // Same file, ports picked by the OS so the test runs anywhere.
    let text = text
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"")
        .replace("listen = \"127.0.0.1:9090\"", "listen = \"127.0.0.1:0\"");
    assert_eq!(
        text.matches("127.0.0.1:0").count(),
        2,
        "listen lines changed: update this test"
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookrelay.toml");
    std::fs::write(&config, text).unwrap();
    // Killed and reaped on drop, so a failing assertion leaves no relay behind.
    let mut relay = Reaped(
        Command::new(env!("CARGO_BIN_EXE_hookrelay"))
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .env_clear()
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let child = &mut relay.0;
    let mut ingress = None;
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while stdout.read_line(&mut line).unwrap_or(0) > 0 {
        if let Some(a) = line
            .trim_end()
            .strip_prefix("hookrelay: ingress listening on ")
        {
            ingress = Some(a.to_string());
            break;
        }
        line.clear();
    }
    // Keep reading: a closed pipe would make the relay's next println fail
    // and end the process.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let ingress = ingress.expect("the quick start did not start");
    assert!(
        dir.path().join("hookrelay.db").exists(),
        "SQLite file in the working directory"
    );

    // The README's request: the server-feature-created fixture signed with
    // the example key.
    let body = fixture("server-feature-created.json");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let v: serde_json::Value = rt.block_on(async {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .post(format!("{ingress}/hooks/server"))
            .header("content-type", "application/json")
            .header(
                "x-esriHook-Signature",
                esri_signature("example-signature-key", &body),
            )
            .body(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(
        (v["status"].as_str(), v["deliveries"].as_u64()),
        (Some("accepted"), Some(1)),
        "{v}"
    );

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let t0 = std::time::Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            assert_eq!(s.code(), Some(0));
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "relay did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
