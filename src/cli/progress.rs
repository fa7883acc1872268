//! `hookrelay replay` with a progress bar and a summary, and the
//! `hookrelay sinks` table.
//!
//! The store reports replay progress per chunk it requeues
//! ([`Store::replay_with_progress`]); a bar appears only when more than
//! [`BAR_THRESHOLD`] deliveries match and stderr is a terminal, so scripts
//! and logs get the summary lines alone.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::admin::summary::{summarize, text_table};
use crate::config::Config;
use crate::store::{now_ms, ReplayFilter, Store, StoreError};

/// Above this many matching deliveries a replay shows a progress bar.
pub const BAR_THRESHOLD: u64 = 300;

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Deliveries the filter matched.
    pub matched: u64,
    /// Deliveries requeued (0 on a dry run).
    pub requeued: u64,
    /// How long it took.
    pub took: Duration,
}

fn bar(total: u64) -> ProgressBar {
    let pb = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "{spinner} requeueing [{bar:40}] {pos}/{len} ({elapsed}, {eta} left)",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    pb.set_style(style);
    pb
}

/// Runs the replay, drawing a bar for big ones.
pub async fn replay(store: &dyn Store, f: &ReplayFilter) -> Result<ReplaySummary, StoreError> {
    let started = Instant::now();
    let matched = Mutex::new(0u64);
    let pb: OnceLock<ProgressBar> = OnceLock::new();
    let progress = |done: u64, total: u64| {
        if let Ok(mut m) = matched.lock() {
            *m = total;
        }
        if !f.dry_run && total > BAR_THRESHOLD {
            pb.get_or_init(|| bar(total)).set_position(done);
        }
    };
    let requeued = store.replay_with_progress(f, now_ms(), &progress).await;
    if let Some(pb) = pb.get() {
        pb.finish_and_clear();
    }
    let requeued = requeued?;
    let matched = matched.lock().map(|m| *m).unwrap_or(requeued).max(requeued);
    Ok(ReplaySummary {
        matched,
        requeued: if f.dry_run { 0 } else { requeued },
        took: started.elapsed(),
    })
}

/// The filter in words, for the summary.
pub fn describe(
    f: &ReplayFilter,
    since: Option<&str>,
    until: Option<&str>,
    event: Option<&str>,
) -> String {
    let mut parts = vec![format!("status {}", f.status.as_str())];
    if let Some(s) = &f.sink {
        parts.push(format!("sink {s}"));
    }
    if let Some(s) = &f.source {
        parts.push(format!("source {s}"));
    }
    if let Some(s) = since {
        parts.push(format!("since {s}"));
    }
    if let Some(s) = until {
        parts.push(format!("until {s}"));
    }
    if let Some(e) = event {
        parts.push(format!("event {e}"));
    }
    parts.join(", ")
}

/// The summary lines printed after a replay.
pub fn summary_text(
    s: &ReplaySummary,
    dry_run: bool,
    filter: &str,
    by_sink: &[(String, u64)],
) -> String {
    if s.matched == 0 {
        return format!("nothing to requeue: no deliveries match ({filter})\n");
    }
    let mut out = if dry_run {
        format!(
            "would requeue {} deliveries ({filter}); dry run, nothing changed\n",
            s.matched
        )
    } else {
        format!(
            "requeued {} of {} matching deliveries ({filter}) in {:.1} s\n",
            s.requeued,
            s.matched,
            s.took.as_secs_f64()
        )
    };
    if !dry_run && s.requeued < s.matched {
        out.push_str(&format!(
            "{} changed state meanwhile (retried, purged or replayed elsewhere) and were left alone\n",
            s.matched - s.requeued
        ));
    }
    for (sink, n) in by_sink.iter().filter(|(_, n)| *n > 0) {
        out.push_str(&format!("  {sink:<20} {n:>8}\n"));
    }
    out
}

/// Per-sink counts of what `f` matches (dry runs), for the summary of a
/// replay over several sinks.
pub async fn count_by_sink(
    store: &dyn Store,
    config: &Config,
    f: &ReplayFilter,
) -> Result<Vec<(String, u64)>, StoreError> {
    let mut out = Vec::new();
    for s in &config.sinks {
        let one = ReplayFilter {
            sink: Some(s.name().into()),
            dry_run: true,
            ..f.clone()
        };
        out.push((s.name().to_string(), store.replay(&one, now_ms()).await?));
    }
    Ok(out)
}

/// The sinks table: the status page's columns. Without a running relay
/// the CLI knows only the durable pause flag, not whether a circuit is open.
pub async fn sinks_table(store: &dyn Store, config: &Config) -> Result<String, StoreError> {
    let now = now_ms();
    let stats = store.sink_stats(now).await?;
    let states = store.sink_states().await?;
    let rows = summarize(config, &stats, |name| {
        if states.iter().any(|r| r.sink == name && r.paused) {
            "paused"
        } else {
            "active"
        }
    });
    Ok(text_table(&rows, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_read_well() {
        let s = ReplaySummary {
            matched: 12,
            requeued: 10,
            took: Duration::from_millis(1500),
        };
        let t = summary_text(
            &s,
            false,
            "status dead, sink teams",
            &[("teams".into(), 12), ("slack".into(), 0)],
        );
        assert_eq!(
            t,
            "requeued 10 of 12 matching deliveries (status dead, sink teams) in 1.5 s\n\
             2 changed state meanwhile (retried, purged or replayed elsewhere) and were left alone\n  \
             teams                      12\n"
        );
        let d = summary_text(
            &ReplaySummary { requeued: 0, ..s },
            true,
            "status dead",
            &[],
        );
        assert_eq!(
            d,
            "would requeue 12 deliveries (status dead); dry run, nothing changed\n"
        );
    }
}
