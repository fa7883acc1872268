//! The real binary's commands: `check` (validation, redaction), `migrate`,
//! `deliveries list`, `replay`, `sinks`, `purge`, `sign`.

mod common;

use std::time::Duration;

use common::process::*;
use common::*;

#[test]
fn check_prints_resolved_config_with_every_secret_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("key");
    std::fs::write(&secret_file, "file-secret-value\n").unwrap();
    let text = format!(
        r#"
[admin]
token = "env:TEST_ADMIN_TOKEN"
[store]
url = "sqlite://{d}/x.db"
[[sources]]
name = "portal"
kind = "arcgis-portal"
secret = ["literal-secret-value", "file:{f}"]
[[sinks]]
name = "flow"
kind = "http"
url = "https://prod.example.com/workflows/1/run?api-version=1&sig=sig-secret-value"
headers = {{ authorization = "Bearer header-secret-value" }}
sign = "github"
secret = "env:TEST_SIGN_SECRET"
filter = 'kind == "item" && operation == "share"'
"#,
        d = dir.path().display(),
        f = secret_file.display()
    );
    let cfg = write_config(dir.path(), &text);
    let (code, out, err) = run_cli(
        &cfg,
        &["check"],
        &[
            ("TEST_ADMIN_TOKEN", "admin-secret-value"),
            ("TEST_SIGN_SECRET", "sign-secret-value"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    for s in [
        "admin-secret-value",
        "literal-secret-value",
        "file-secret-value",
        "sig-secret-value",
        "header-secret-value",
        "sign-secret-value",
    ] {
        assert!(
            !out.contains(s) && !err.contains(s),
            "{s} leaked:\n{out}{err}"
        );
    }
    assert!(out.contains("[redacted]"));
    assert!(
        out.contains("api-version=1"),
        "non-secret parts stay readable:\n{out}"
    );
    assert!(
        out.contains("max_attempts = 15"),
        "defaults are shown:\n{out}"
    );
    assert!(
        out.contains("filter = ") && out.contains("operation == "),
        "the filter is shown:\n{out}"
    );
}

#[test]
fn bad_configs_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let base = |extra: &str| {
        format!(
            "[store]\nurl = \"sqlite://{}/x.db\"\n[[sources]]\nname = \"portal\"\nkind = \"arcgis-portal\"\nsecret = \"s\"\n{extra}",
            dir.path().display()
        )
    };
    let sink = |name: &str, extra: &str| {
        format!("[[sinks]]\nname = \"{name}\"\nkind = \"http\"\nurl = \"http://127.0.0.1:1/\"\n{extra}\n")
    };
    let cases = [
        (base("[server]\nlisen = \"x\"\n"), "lisen"),
        (
            base(&format!("{}{}", sink("a", ""), sink("a", ""))),
            "duplicate sink name",
        ),
        (
            base(&sink("a", "sources = [\"nope\"]")),
            "sinks[0].sources[0]",
        ),
        (
            base(
                &sink("a", "url = \"env:HOOKRELAY_SURELY_UNSET\"")
                    .replace("url = \"http://127.0.0.1:1/\"\n", ""),
            ),
            "HOOKRELAY_SURELY_UNSET",
        ),
        (base(&sink("a", "timeout = \"soon\"")), "invalid duration"),
        (
            base(&sink("a", "events = [\"/things/x\"]")),
            "sinks[0].events[0]",
        ),
        (base(&sink("a", "unknown_key = 1")), "unknown_key"),
        (base(&sink("A B", "")), "sinks[0].name"),
        (
            base(&sink("a", "sign = \"standard-webhooks\"")),
            "sinks[0].secret",
        ),
        (base(&sink("a", "max_attempts = 0")), "max_attempts"),
        (
            base(&sink("a", "filter = 'edit == \"add\" &&'")),
            "sinks[0].filter: syntax error at line 1",
        ),
        ("this is = not toml [".to_string(), "expected"),
    ];
    for (text, want) in cases {
        let cfg = write_config(dir.path(), &text);
        for cmd in ["check", "serve"] {
            let (code, _out, err) = run_cli(&cfg, &[cmd], &[]);
            assert_eq!(code, 2, "{cmd} must refuse:\n{text}\n{err}");
            assert!(
                err.contains(want),
                "{cmd}: error should name {want:?}, got: {err}"
            );
        }
    }
    let (code, _, err) = run_cli(&dir.path().join("missing.toml"), &["check"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("missing.toml"), "{err}");
}

/// A key of another kind is refused by `check` itself, before anything is
/// built or opened, naming the key: `check` refuses what `serve` would.
#[test]
fn check_refuses_a_key_of_another_kind_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[store]\nurl = \"sqlite://{}/x.db\"\n\
         [[sinks]]\nname = \"a\"\nkind = \"http\"\nurl = \"https://h.example.org/\"\nsubject = \"x\"\n",
        dir.path().display()
    );
    let cfg = write_config(dir.path(), &text);
    for cmd in ["check", "serve"] {
        let (code, out, err) = run_cli(&cfg, &[cmd], &[]);
        assert_eq!(code, 2, "{cmd} must refuse:\n{out}{err}");
        assert!(
            err.contains(
                "sinks[0].subject: subject does not apply to kind \"http\" (only to email)"
            ),
            "{cmd}: {err}"
        );
    }
    assert!(
        !dir.path().join("x.db").exists(),
        "a refused configuration opens no store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_list_replay_and_pause_on_the_store() {
    for kind in [Kind::Sqlite, Kind::Postgres] {
        let Some(b) = Backend::new(kind).await else {
            continue;
        };
        let sink = TestSink::start().await;
        sink.script([Reply::Status(404), Reply::Status(404)]);
        let cfg_text = config_text(&b.url, &http_sink("out", &sink, ""));
        let cfg = write_config(b.dir.path(), &cfg_text);
        let (code, out, err) = run_cli(&cfg, &["migrate"], &[]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("migrations applied"));

        // A running relay makes two dead letters.
        let app = spawn_app(b, &http_sink("out", &sink, "")).await;
        app.post_portal(&fixture("portal-item-share.json")).await;
        app.post_portal(&fixture("portal-user-role.json")).await;
        eventually(Duration::from_secs(10), "two dead", || async {
            app.deliveries("status=dead").await.len() == 2
        })
        .await;

        let (code, out, err) = run_cli(
            &cfg,
            &[
                "deliveries",
                "list",
                "--status",
                "dead",
                "--sink",
                "out",
                "--since",
                "1h",
            ],
            &[],
        );
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            out.lines()
                .filter(|l| l.contains(" out ") && l.contains("dead"))
                .count(),
            2,
            "{out}"
        );
        let (code, out, _) = run_cli(
            &cfg,
            &["deliveries", "list", "--status", "dead", "--json"],
            &[],
        );
        assert_eq!(code, 0);
        for line in out.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["sink"], "out");
            assert_eq!(v["last_status"], 404);
        }
        let (code, _, err) = run_cli(&cfg, &["deliveries", "list", "--status", "lost"], &[]);
        assert_eq!(code, 2);
        assert!(err.contains("--status"), "{err}");

        let (code, out, _) = run_cli(
            &cfg,
            &[
                "replay",
                "--status",
                "dead",
                "--sink",
                "out",
                "--event",
                "/users",
                "--dry-run",
            ],
            &[],
        );
        assert_eq!(code, 0);
        assert!(out.contains("would requeue 1"), "{out}");
        let (code, out, _) = run_cli(&cfg, &["replay", "--status", "dead", "--sink", "out"], &[]);
        assert_eq!(code, 0);
        assert!(out.contains("requeued 2"), "{out}");
        // The running relay polls and picks them up by itself.
        eventually(
            Duration::from_secs(5),
            "replayed deliveries delivered",
            || async { app.deliveries("status=delivered").await.len() == 2 },
        )
        .await;
        let (code, _, err) = run_cli(&cfg, &["replay", "--sink", "nope"], &[]);
        assert_eq!(code, 2);
        assert!(err.contains("nope"));

        let (code, out, _) = run_cli(&cfg, &["sinks"], &[]);
        assert_eq!(code, 0);
        assert!(
            out.lines()
                .any(|l| l.starts_with("out ") && l.contains("http") && l.contains("active")),
            "{out}"
        );
        let (code, _, _) = run_cli(&cfg, &["sinks", "pause", "out"], &[]);
        assert_eq!(code, 0);
        let (_, out, _) = run_cli(&cfg, &["sinks"], &[]);
        assert!(
            out.lines()
                .any(|l| l.starts_with("out ") && l.contains("paused")),
            "{out}"
        );
        let (code, _, _) = run_cli(&cfg, &["sinks", "resume", "nope"], &[]);
        assert_eq!(code, 2);

        let (code, out, _) = run_cli(&cfg, &["purge", "--older-than", "0s"], &[]);
        assert_eq!(code, 0);
        assert!(out.contains("purged 2 messages"), "{out}");
        app.stop().await;
    }
}

#[test]
fn sign_prints_signatures_without_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.json");
    std::fs::write(&body, fixture("server-feature-created.json")).unwrap();
    let cfg = dir.path().join("unused.toml");
    let (code, out, _) = run_cli(
        &cfg,
        &[
            "sign",
            "--scheme",
            "arcgis",
            "--secret",
            "env:SIGN_KEY",
            "--file",
            body.to_str().unwrap(),
        ],
        &[("SIGN_KEY", "the-signing-key")],
    );
    assert_eq!(code, 0);
    let want = esri_signature("the-signing-key", &fixture("server-feature-created.json"));
    assert_eq!(out.trim(), format!("x-esrihook-signature: {want}"));
    assert!(!out.contains("the-signing-key"));
    let (code, _, err) = run_cli(&cfg, &["sign", "--scheme", "rot13", "--secret", "x"], &[]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn check_hides_credentials_in_every_url() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
[store]
url = "postgres://relay:userinfo-pw-value@db.internal:5432/hookrelay?sslmode=verify-full&sslpassword=sslpw-secret-value&password=query-pw-value&sslkey=/etc/keys/client-key-path.pem"
[[sources]]
name = "portal"
kind = "arcgis-portal"
secret = "s"
[[sinks]]
name = "chat"
kind = "slack"
url = "https://Hooks.Slack.com./services/T0ABC1234/B0DEF5678/slackPathSecret9876543"
[[sinks]]
name = "discord"
kind = "http"
url = "https://discord.example/api/webhooks/123456789012345678/AbCdEfGhIjKlMnOpQrStUvWxYz0123456789_-AbCdEfGhIjKlMnOpQrStUvWxYz012345"
"#;
    let cfg = write_config(dir.path(), text);
    let (code, out, err) = run_cli(&cfg, &["check"], &[]);
    assert_eq!(code, 0, "{err}");
    for s in [
        "userinfo-pw-value",
        "sslpw-secret-value",
        "query-pw-value",
        "client-key-path",
        "slackPathSecret9876543",
        "B0DEF5678",
        "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
    ] {
        assert!(
            !out.contains(s) && !err.contains(s),
            "{s} leaked:\n{out}{err}"
        );
    }
    // What is not a credential stays readable.
    for s in [
        "db.internal:5432/hookrelay",
        "sslmode=verify-full",
        "discord.example/api/webhooks/",
    ] {
        assert!(out.contains(s), "{s} should be shown:\n{out}");
    }
}
