//! Driving the real `hookrelay` binary: start it, find its ports, signal it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_hookrelay")
}

/// Runs a CLI command to completion: (exit code, stdout, stderr).
pub fn run_cli(config: &Path, args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .envs(envs.iter().copied())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run hookrelay");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A relay running as its own process.
pub struct RelayProcess {
    pub child: Child,
    pub ingress: String,
    pub admin: String,
    pub stderr_log: PathBuf,
}

impl RelayProcess {
    /// Starts `hookrelay serve` and waits for it to print its addresses.
    pub fn start(config: &Path, log_dir: &Path) -> RelayProcess {
        let stderr_log = log_dir.join(format!("relay-{}.log", uuid::Uuid::new_v4().simple()));
        let mut child = Command::new(bin())
            .arg("--config")
            .arg(config)
            .arg("serve")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_log).unwrap())
            .spawn()
            .expect("spawn hookrelay serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut ingress, mut admin) = (None, None);
        while ingress.is_none() || admin.is_none() {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| {
                    panic!(
                        "relay did not start: {}",
                        std::fs::read_to_string(&stderr_log).unwrap_or_default()
                    )
                });
            if let Some(a) = line.strip_prefix("hookrelay: ingress listening on ") {
                ingress = Some(a.to_string());
            }
            if let Some(a) = line.strip_prefix("hookrelay: admin listening on ") {
                admin = Some(a.to_string());
            }
        }
        RelayProcess {
            child,
            ingress: ingress.unwrap(),
            admin: admin.unwrap(),
            stderr_log,
        }
    }

    pub fn sigkill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn sigterm(&mut self, timeout: Duration) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let t0 = std::time::Instant::now();
        while t0.elapsed() < timeout {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a config file for the binary into the backend's temp dir.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join(format!("hookrelay-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&p, text).unwrap();
    p
}

/// A Portal payload no other call produces (unique dedupe key).
pub fn unique_portal(n: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "info": {"webhookName": "load", "portalURL": "https://gis.example.org/portal/", "when": 1},
        "events": [{"username": "u", "when": 1_700_000_000_000u64 + n as u64, "operation": "update",
                    "source": "item", "id": format!("item{n}"), "properties": {}}]
    }))
    .unwrap()
}
