//! The command line. `serve` runs the relay; every other command works on
//! the store directly, whether a relay is running or not.
//!
//! Exit codes: 0 success, 2 usage or configuration error, 1 runtime failure.

mod commands;
pub mod progress;
mod send_test;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "hookrelay",
    version,
    about = "A durable relay for ArcGIS webhooks",
    after_help = "Exit codes: 0 success; 1 runtime failure (store unreachable, a listener cannot bind, ...); 2 usage or configuration error."
)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        long,
        short,
        global = true,
        env = "HOOKRELAY_CONFIG",
        default_value = "hookrelay.toml"
    )]
    pub config: PathBuf,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay: ingress, dispatcher, admin listener.
    Serve,
    /// Validate the configuration and print it with secrets redacted.
    Check,
    /// Apply database migrations and exit.
    Migrate,
    /// Inspect deliveries.
    Deliveries {
        #[command(subcommand)]
        command: DeliveriesCommand,
    },
    /// Requeue dead (or delivered) deliveries with fresh attempts.
    Replay(ReplayArgs),
    /// Delete finished messages past their retention now.
    Purge {
        /// Purge finished messages older than this instead of the configured retention.
        #[arg(long)]
        older_than: Option<String>,
    },
    /// List sinks with their queue counts, or pause/resume one.
    Sinks {
        #[command(subcommand)]
        command: Option<SinksCommand>,
    },
    /// Sign a body (read from stdin or --file) the way a sender or sink would.
    Sign {
        /// arcgis, github or standard-webhooks.
        #[arg(long)]
        scheme: String,
        /// The key; `env:NAME` or `file:/path` keep it off the command line.
        #[arg(long)]
        secret: String,
        /// Read the body from this file instead of stdin.
        #[arg(long)]
        file: Option<PathBuf>,
        /// standard-webhooks only: the message id to sign.
        #[arg(long, default_value = "msg_test")]
        id: String,
    },
    /// Send one sample event through a sink and print the service's answer
    /// (exit 0 when it was accepted). Nothing is stored.
    SendTest {
        /// The sink to test.
        #[arg(long)]
        sink: String,
        /// `portal` or `service` (default: the one the sink's `events` filter takes).
        #[arg(long)]
        sample: Option<String>,
    },
    /// Exit 0 when a URL answers 2xx (container health checks; no shell needed).
    Healthcheck {
        /// URL to fetch.
        #[arg(long, default_value = "http://127.0.0.1:9090/healthz")]
        url: String,
    },
}

/// `deliveries` subcommands.
#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// One row per delivery, newest first.
    List {
        /// pending, in_flight, delivered or dead.
        #[arg(long)]
        status: Option<String>,
        /// Only this sink.
        #[arg(long)]
        sink: Option<String>,
        /// Created since (2h, or a time).
        #[arg(long)]
        since: Option<String>,
        /// Created before (2h, or a time).
        #[arg(long)]
        until: Option<String>,
        /// At most this many rows.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `replay` options.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// dead (default) or delivered.
    #[arg(long, default_value = "dead")]
    pub status: String,
    /// Only this sink.
    #[arg(long)]
    pub sink: Option<String>,
    /// Only messages from this source.
    #[arg(long)]
    pub source: Option<String>,
    /// Created since (2h, or a time).
    #[arg(long)]
    pub since: Option<String>,
    /// Created before.
    #[arg(long)]
    pub until: Option<String>,
    /// Only deliveries with an event matching this trigger (/items/share, FeaturesCreated).
    #[arg(long)]
    pub event: Option<String>,
    /// Count what would be requeued, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `sinks` subcommands.
#[derive(Debug, Subcommand)]
pub enum SinksCommand {
    /// Stop sending to a sink (it keeps queueing); survives restarts.
    Pause {
        /// Sink name.
        name: String,
    },
    /// Start sending again.
    Resume {
        /// Sink name.
        name: String,
    },
}

/// A failed command: a usage/config problem (exit 2) or a runtime failure (exit 1).
#[derive(Debug)]
pub enum Failure {
    /// Exit 2.
    Usage(String),
    /// Exit 1.
    Runtime(String),
}

impl From<crate::config::ConfigError> for Failure {
    fn from(e: crate::config::ConfigError) -> Self {
        Failure::Usage(format!("configuration error: {e}"))
    }
}

impl From<crate::store::StoreError> for Failure {
    fn from(e: crate::store::StoreError) -> Self {
        Failure::Runtime(format!("store error: {e}"))
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,hyper=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Parses arguments, runs the command, returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hookrelay: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            eprintln!("hookrelay: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(m)) => {
            eprintln!("hookrelay: {m}");
            ExitCode::from(1)
        }
    }
}
