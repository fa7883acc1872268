//! `hookrelay send-test --sink NAME`: one sample event through the real
//! sink code, with the service's answer printed, so an administrator can
//! check a URL, a token or an SMTP relay before real traffic. Nothing is
//! stored; the store is not opened. Exit 0 when the service accepted it.

use std::time::Instant;

use super::Failure;
use crate::config::{redact_url, Config};
use crate::domain::delivery::Verdict;
use crate::sinks::sample::{claimed, Sample};

/// Sends the sample and prints what happened.
pub async fn send_test(config: &Config, name: &str, sample: Option<&str>) -> Result<(), Failure> {
    let Some(spec) = config.sink(name) else {
        let names: Vec<&str> = config.sinks.iter().map(|s| s.name()).collect();
        return Err(Failure::Usage(format!(
            "no sink named {name:?} (configured: {})",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        )));
    };
    let sink = spec.common();
    let sample = match sample {
        None => Sample::for_patterns(sink.events.as_deref()),
        Some("portal") => Sample::Portal,
        Some("service") => Sample::Service,
        Some(other) => {
            return Err(Failure::Usage(format!(
                "--sample {other:?}: use portal or service"
            )))
        }
    };
    let compiled = crate::app::compile(config.clone())?;
    let built = compiled
        .sinks
        .get(name)
        .map(|rt| rt.sink.clone())
        .ok_or_else(|| Failure::Usage(format!("no sink named {name:?}")))?;
    let source = sink
        .sources
        .as_ref()
        .and_then(|s| s.first().cloned())
        .unwrap_or_else(|| "send-test".to_string());
    let id = format!("send-test-{}", uuid::Uuid::now_v7());
    let mut d = claimed(sample, &source, &id);
    // The message should say "now", not the sample's fixed time.
    let now = crate::store::now_ms();
    d.received_at = now;
    d.cycle_started_at = now;
    for e in &mut d.events {
        e.when = Some(now.get());
    }
    println!("sink:     {} ({})", sink.name, spec.kind().as_str());
    // The URL may carry a key (sig=, key=, a Slack path): never print it whole.
    println!("target:   {}", redact_url(&sink.url));
    println!(
        "sample:   {}",
        d.events.first().map(|e| e.uri.as_str()).unwrap_or("-")
    );
    let t0 = Instant::now();
    let out = built.deliver(&d).await;
    let verdict = match out.verdict {
        Verdict::Delivered => "delivered",
        Verdict::Retry { .. } => "failed, would be retried",
        Verdict::Permanent => "failed, would be dead (permanent)",
    };
    println!(
        "status:   {}",
        out.status
            .map_or_else(|| "-".to_string(), |s| s.to_string())
    );
    println!("verdict:  {verdict}");
    println!("took:     {} ms", t0.elapsed().as_millis());
    if let Some(e) = &out.error {
        println!("error:    {e}");
    }
    if let Some(r) = out.response.as_deref().filter(|r| !r.is_empty()) {
        println!("answer:   {}", r.trim_end());
    }
    match out.verdict {
        Verdict::Delivered => Ok(()),
        _ => Err(Failure::Runtime(format!(
            "sink {name:?} did not accept the sample event"
        ))),
    }
}
