//! What each subcommand does.

use std::io::Read;
use std::sync::Arc;

use super::{progress, Cli, Command, DeliveriesCommand, Failure, ReplayArgs, SinksCommand};
use crate::app::{purge_cutoffs, Relay, RelayOptions};
use crate::config::{Config, Secret, SignScheme};
use crate::store::{self, now_ms, parse_time, DeliveryFilter, SinkName, Status, Store};

pub async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Sign {
            scheme,
            secret,
            file,
            id,
        } => return sign(&scheme, &secret, file, &id),
        Command::Healthcheck { url } => return healthcheck(&url).await,
        _ => {}
    }
    let config = Config::load(&cli.config)?;
    match cli.command {
        Command::Serve => serve(config).await,
        Command::Check => {
            // The same compile step `serve` runs: what it refuses, this does.
            let compiled = crate::app::compile(config)?;
            let config = &compiled.config;
            print!("{}", config.redacted_toml());
            eprintln!(
                "hookrelay: configuration OK ({} sources, {} sinks)",
                config.sources.len(),
                config.sinks.len()
            );
            Ok(())
        }
        Command::Migrate => {
            store::open(&config.store, true, false).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Deliveries { command } => {
            let store = open(&config).await?;
            match command {
                DeliveriesCommand::List {
                    status,
                    sink,
                    since,
                    until,
                    limit,
                    json,
                } => list(store.as_ref(), status, sink, since, until, limit, json).await,
            }
        }
        Command::Replay(args) => replay(&config, args).await,
        Command::Purge { older_than } => {
            let store = open(&config).await?;
            let now = now_ms();
            let mut cutoffs = purge_cutoffs(&config, now);
            if let Some(o) = older_than {
                let t = parse_time(&o, now)
                    .map_err(|m| Failure::Usage(format!("--older-than: {m}")))?;
                cutoffs.delivered_before = t;
                cutoffs.dead_before = t;
            }
            let c = store.purge(&cutoffs).await?;
            println!(
                "purged {} messages and {} dedupe keys",
                c.messages, c.dedupe_keys
            );
            Ok(())
        }
        Command::Sinks { command } => sinks(&config, command).await,
        Command::SendTest { sink, sample } => {
            super::send_test::send_test(&config, &sink, sample.as_deref()).await
        }
        Command::Sign { .. } | Command::Healthcheck { .. } => Ok(()),
    }
}

async fn open(config: &Config) -> Result<Arc<dyn Store>, Failure> {
    // The CLI migrates too, so it works on a fresh file before the first serve.
    Ok(store::open(&config.store, true, false).await?)
}

async fn serve(config: Config) -> Result<(), Failure> {
    let relay = Relay::start(config, RelayOptions::default())
        .await
        .map_err(|e| match e {
            crate::app::StartError::Config(c) => {
                Failure::Usage(format!("configuration error: {c}"))
            }
            other => Failure::Runtime(other.to_string()),
        })?;
    // Printed on stdout for people and for tests that bind port 0.
    println!(
        "hookrelay: ingress listening on {}://{}",
        relay.ingress_scheme(),
        relay.ingress_addr
    );
    println!("hookrelay: admin listening on http://{}", relay.admin_addr);
    tracing::info!(ingress = %relay.ingress_addr, admin = %relay.admin_addr, "hookrelay started");
    let cancel = relay.cancel_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: no new requests, finishing work in flight");
        cancel.cancel();
    });
    relay.wait().await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the relay can still be killed; just never
        // shut down gracefully.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

async fn list(
    store: &dyn Store,
    status: Option<String>,
    sink: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: usize,
    json: bool,
) -> Result<(), Failure> {
    let now = now_ms();
    let t = |k: &str, v: Option<String>| {
        v.map(|s| parse_time(&s, now).map_err(|m| Failure::Usage(format!("--{k}: {m}"))))
            .transpose()
    };
    let status = status
        .map(|s| {
            Status::parse(&s).ok_or_else(|| {
                Failure::Usage(format!(
                    "--status {s:?}: use pending, in_flight, delivered or dead"
                ))
            })
        })
        .transpose()?;
    if limit == 0 {
        return Err(Failure::Usage("--limit must be at least 1".into()));
    }
    let rows = store
        .list_deliveries(&DeliveryFilter {
            status,
            sink: sink.map(SinkName::from),
            since: t("since", since)?,
            until: t("until", until)?,
            limit,
            cursor: None,
        })
        .await?;
    if json {
        for r in &rows {
            let doc = crate::admin::dto::DeliveryDoc::from(r.clone());
            println!("{}", serde_json::to_string(&doc).unwrap_or_default());
        }
        return Ok(());
    }
    println!(
        "{:<36}  {:<16}  {:<9}  {:>3}  {:>6}  {:<24}  ERROR",
        "DELIVERY", "SINK", "STATUS", "TRY", "LAST", "CREATED"
    );
    for r in &rows {
        println!(
            "{:<36}  {:<16}  {:<9}  {:>3}  {:>6}  {:<24}  {}",
            r.id,
            r.sink,
            r.status.as_str(),
            r.attempts,
            r.last_status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            r.created_at.rfc3339(),
            r.last_error.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

async fn replay(config: &Config, a: ReplayArgs) -> Result<(), Failure> {
    let request = crate::admin::api::ReplayBody {
        status: Some(a.status.clone()),
        sink: a.sink.clone(),
        source: a.source.clone(),
        since: a.since.clone(),
        until: a.until.clone(),
        event: a.event.clone(),
        dry_run: a.dry_run,
    };
    let f =
        crate::admin::replay_filter(config, &request).map_err(|e| Failure::Usage(e.to_string()))?;
    let store = open(config).await?;
    // Over several sinks, say how many each one gets (counted first, so a
    // dry run shows exactly what a real run would touch).
    let by_sink = if f.sink.is_none() && config.sinks.len() > 1 {
        progress::count_by_sink(store.as_ref(), config, &f).await?
    } else {
        Vec::new()
    };
    let summary = progress::replay(store.as_ref(), &f).await?;
    let filter = progress::describe(
        &f,
        a.since.as_deref(),
        a.until.as_deref(),
        a.event.as_deref(),
    );
    print!(
        "{}",
        progress::summary_text(&summary, f.dry_run, &filter, &by_sink)
    );
    if !f.dry_run && summary.requeued > 0 {
        println!("a running relay sends them within its poll interval");
    }
    Ok(())
}

async fn sinks(config: &Config, cmd: Option<SinksCommand>) -> Result<(), Failure> {
    let store = open(config).await?;
    let (name, paused) = match cmd {
        None => {
            print!("{}", progress::sinks_table(store.as_ref(), config).await?);
            return Ok(());
        }
        Some(SinksCommand::Pause { name }) => (name, true),
        Some(SinksCommand::Resume { name }) => (name, false),
    };
    if config.sink(&name).is_none() {
        return Err(Failure::Usage(format!("no sink named {name:?}")));
    }
    let reason = paused.then_some("paused from the command line");
    store
        .set_paused(&SinkName::from(name.as_str()), paused, reason, now_ms())
        .await?;
    println!("{name}: {}", if paused { "paused" } else { "resumed" });
    println!("a running relay picks this up at its next restart or through the admin API");
    Ok(())
}

fn sign(
    scheme: &str,
    secret: &str,
    file: Option<std::path::PathBuf>,
    id: &str,
) -> Result<(), Failure> {
    let scheme = match scheme {
        "arcgis" => SignScheme::Arcgis,
        "github" => SignScheme::Github,
        "standard-webhooks" => SignScheme::StandardWebhooks,
        other => {
            return Err(Failure::Usage(format!(
                "--scheme {other:?}: use arcgis, github or standard-webhooks"
            )))
        }
    };
    let mut tree = toml::Value::String(secret.to_string());
    crate::config::resolve_secret_ref(&mut tree, "--secret")
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let secret = Secret::new(tree.as_str().unwrap_or_default());
    let key = crate::sinks::sign::signing_key(scheme, &secret).map_err(Failure::Usage)?;
    let mut body = Vec::new();
    match file {
        Some(p) => {
            body = std::fs::read(&p)
                .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", p.display())))?
        }
        None => {
            std::io::stdin()
                .read_to_end(&mut body)
                .map_err(|e| Failure::Runtime(format!("cannot read stdin: {e}")))?;
        }
    }
    for (k, v) in
        crate::sinks::sign::signature_headers(scheme, &key, id, now_ms().get() / 1000, &body)
    {
        println!("{k}: {v}");
    }
    Ok(())
}

async fn healthcheck(url: &str) -> Result<(), Failure> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .no_proxy()
        .build()
        .map_err(|e| Failure::Runtime(e.to_string()))?;
    match client.get(url).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(Failure::Runtime(format!("{url} answered {}", r.status()))),
        Err(e) => Err(Failure::Runtime(format!(
            "{url}: {}",
            crate::sinks::describe_error(&e, std::time::Duration::from_secs(5))
        ))),
    }
}
