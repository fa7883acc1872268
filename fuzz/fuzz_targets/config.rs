//! The configuration parser, `Config::from_toml`: TOML, `env:`/`file:`
//! references, typed deserialisation and validation.
//!
//! Properties:
//! - `from_toml` never panics (errors are values, with the key named);
//! - an accepted configuration validates again (validation is a function of
//!   the parsed value), every source has a secret, and `redacted_toml`
//!   prints TOML that parses;
//! - a `Secret` never prints itself through Debug or Display.
//!
//! Inputs that would make the parser read files are skipped: `file:`
//! references and the certificate paths (`tls_cert`, `client_cert`, ...)
//! are operator-trusted, and a fuzzer that writes `file:/dev/zero` or
//! `tls_key = "/dev/stdin"` only finds that reading such a file never ends.
#![no_main]

use hookrelay::config::Config;
use libfuzzer_sys::fuzz_target;

const READS_FILES: &[&str] = &[
    "tls_cert",
    "tls_key",
    "client_cert",
    "client_key",
    "ca_file",
];

fn reads_files(v: &toml::Value) -> bool {
    match v {
        toml::Value::String(s) => s.starts_with("file:"),
        toml::Value::Array(a) => a.iter().any(reads_files),
        toml::Value::Table(t) => t
            .iter()
            .any(|(k, v)| READS_FILES.contains(&k.as_str()) || reads_files(v)),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match toml::from_str::<toml::Value>(text) {
        Ok(tree) if reads_files(&tree) => return,
        _ => {}
    }
    let Ok(config) = Config::from_toml(text) else {
        return;
    };
    config
        .validate()
        .expect("an accepted config validates again");
    for src in &config.sources {
        assert!(
            !src.secret.0.is_empty(),
            "source {} has no secret",
            src.name
        );
        for s in &src.secret.0 {
            assert_eq!(format!("{s:?}"), hookrelay::config::REDACTED);
            assert_eq!(format!("{s}"), hookrelay::config::REDACTED);
        }
    }
    let printed = config.redacted_toml();
    assert!(!printed.starts_with("# cannot print config"), "{printed}");
    toml::from_str::<toml::Value>(&printed).expect("redacted_toml prints valid TOML");
});
