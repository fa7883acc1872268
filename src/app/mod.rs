//! Assembling a running relay from a configuration, and taking it down.
//!
//! [`Relay::start`] is what `hookrelay serve` and the integration tests
//! call: it opens the store, binds both listeners (port 0 works), starts the
//! dispatcher and the retention purge, and returns the bound addresses.
//! With `[server] tls_cert`/`tls_key` ingress speaks HTTPS, and SIGHUP
//! reloads the certificate (see [`crate::tls`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub mod compile;

pub use compile::{compile, compile_text, Compiled};

use crate::admin::{self, AdminState};
use crate::config::{Config, ConfigError};
use crate::dispatch::{random_jitter, Dispatcher, FetchStage, Jitter, SinkSet};
use crate::ingress::{self, IngressState};
use crate::metrics::Metrics;
use crate::server::{serve, serve_with_tls, ServeOptions};
use crate::store::batch::Batcher;
use crate::store::{self, now_ms, Millis, PurgeCutoffs, Store, StoreError};
use crate::tls::TlsIngress;

/// Why a relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened or migrated.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: String, reason: String },
}

/// Knobs the tests turn; production uses [`RelayOptions::default`].
#[derive(Clone)]
pub struct RelayOptions {
    /// Jitter for retry delays.
    pub jitter: Jitter,
    /// Run the dispatcher (tests that drive it step by step turn it off).
    pub dispatch: bool,
    /// How long shutdown waits for requests and attempts in flight.
    pub shutdown_grace: Duration,
}

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            jitter: random_jitter(),
            dispatch: true,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// A running relay.
///
/// Shutdown, field by field: `cancel` is the one signal. The ingress
/// server stops accepting and lets open requests finish; when its last
/// connection closes, the last handle to the commit batcher goes with it, so
/// `commit_task` ends only after every accepted request is committed. The
/// dispatcher stops claiming, gives attempts in flight the grace period and
/// returns the leases of the rest. The fetch stage stops at once: a fetch
/// cut off keeps its lease and runs again when the lease ends (fetching
/// only reads from ArcGIS, so running it twice is harmless). `tasks` are all of these, awaited by
/// [`Relay::wait`].
pub struct Relay {
    /// Where ingress listens.
    pub ingress_addr: SocketAddr,
    /// Where the admin listener listens.
    pub admin_addr: SocketAddr,
    /// The store, for tests and tools that look inside.
    pub store: Arc<dyn Store>,
    /// The dispatcher, for tests that drive it step by step.
    pub dispatcher: Arc<Dispatcher>,
    /// The fetch stage, likewise.
    pub fetches: Arc<FetchStage>,
    /// The sinks at run time.
    pub sinks: Arc<SinkSet>,
    tls: Option<TlsIngress>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

async fn bind(addr: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|e| StartError::Bind {
        addr: addr.to_string(),
        reason: e.to_string(),
    })
}

impl Relay {
    /// Compiles `config`, opens the store, binds the listeners and starts
    /// every task.
    pub async fn start(config: Config, opts: RelayOptions) -> Result<Relay, StartError> {
        Relay::start_compiled(compile(config)?, opts).await
    }

    /// [`Relay::start`] with a configuration already compiled.
    pub async fn start_compiled(
        compiled: Compiled,
        opts: RelayOptions,
    ) -> Result<Relay, StartError> {
        let Compiled {
            config,
            routes,
            sinks,
            tls,
            fetchers,
        } = compiled;
        let store = store::open(&config.store, true, true).await?;
        let released = store.recover(now_ms()).await?;
        if released > 0 {
            tracing::info!(
                released,
                "requeued deliveries a previous run left in flight"
            );
        }
        let sinks = Arc::new(sinks);
        sinks.load_state(store.as_ref()).await?;
        let metrics = Arc::new(Metrics::new());
        let cancel = CancellationToken::new();
        let mut tasks = Vec::new();

        let s = store.clone();
        let (commits, commit_task) = Batcher::spawn_dedicated(
            "hookrelay-ingest",
            store.dedicated_commit_thread(),
            config.server.max_pending_commits,
            config.store.ingest_batch,
            move |batch: Vec<store::NewMessage>| {
                let s = s.clone();
                async move { s.ingest(&batch, now_ms()).await }
            },
        );
        tasks.push(commit_task);

        let fetches = Arc::new(FetchStage::new(
            store.clone(),
            fetchers,
            config.delivery.policy_defaults(),
            metrics.clone(),
            opts.jitter.clone(),
            config.delivery.poll_interval.0,
        ));
        let mut ingress_state = IngressState::new(
            config.clone(),
            routes,
            sinks.clone(),
            commits,
            metrics.clone(),
        );
        ingress_state.fetches = Some(fetches.clone());
        let ingress_state = Arc::new(ingress_state);
        let ingress_router = ingress::router(ingress_state).layer(
            tower::ServiceBuilder::new()
                .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(
                    tower_http::request_id::MakeRequestUuid,
                ))
                .layer(tower_http::request_id::PropagateRequestIdLayer::x_request_id()),
        );
        let ingress_listener = bind(&config.server.listen).await?;
        let admin_listener = bind(&config.admin.listen).await?;
        let ingress_addr = ingress_listener
            .local_addr()
            .map_err(|e| StartError::Bind {
                addr: config.server.listen.clone(),
                reason: e.to_string(),
            })?;
        let admin_addr = admin_listener.local_addr().map_err(|e| StartError::Bind {
            addr: config.admin.listen.clone(),
            reason: e.to_string(),
        })?;
        let serve_opts = ServeOptions {
            header_read_timeout: config.server.header_read_timeout.0,
            // Ingress counts its own work slots (`max_concurrency`, taken
            // once the body has arrived) and slots per client; this outer
            // bound only caps the requests whose bodies are still arriving.
            max_concurrency: Some(config.server.max_concurrency.saturating_mul(4)),
            shutdown_grace: opts.shutdown_grace,
        };
        tasks.push(tokio::spawn(serve_with_tls(
            ingress_listener,
            ingress_router,
            serve_opts.clone(),
            cancel.clone(),
            tls.as_ref().map(TlsIngress::acceptor),
        )));
        if let Some(task) = reload_on_sighup(tls.clone(), cancel.clone()) {
            tasks.push(task);
        }

        let dispatcher = Arc::new(Dispatcher::new(
            store.clone(),
            sinks.clone(),
            metrics.clone(),
            opts.jitter.clone(),
            config.delivery.poll_interval.0,
            opts.shutdown_grace,
        ));
        if opts.dispatch {
            tasks.push(tokio::spawn(dispatcher.clone().run(cancel.clone())));
            tasks.push(tokio::spawn(fetches.clone().run(cancel.clone())));
        }

        let admin_state = Arc::new(AdminState {
            store: store.clone(),
            sinks: sinks.clone(),
            metrics,
            config: config.clone(),
        });
        tasks.push(tokio::spawn(serve(
            admin_listener,
            admin::router(admin_state),
            ServeOptions {
                max_concurrency: Some(64),
                ..serve_opts
            },
            cancel.clone(),
        )));
        tasks.push(tokio::spawn(purge_loop(
            store.clone(),
            config.clone(),
            cancel.clone(),
        )));

        Ok(Relay {
            ingress_addr,
            admin_addr,
            store,
            dispatcher,
            fetches,
            sinks,
            tls,
            cancel,
            tasks,
        })
    }

    /// The HTTPS side of ingress, when configured: tests call
    /// [`TlsIngress::reload`] on it directly instead of sending SIGHUP.
    pub fn tls(&self) -> Option<&TlsIngress> {
        self.tls.as_ref()
    }

    /// `https` or `http`: how to reach [`Relay::ingress_addr`].
    pub fn ingress_scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The token that stops this relay when cancelled.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Waits until every task has ended (after the token is cancelled).
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
        self.store.close().await;
    }

    /// Stops the relay and waits for it.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.wait().await;
    }
}

/// The cutoffs retention implies at `now`.
pub fn purge_cutoffs(config: &Config, now: Millis) -> PurgeCutoffs {
    let longest_window = config
        .sources
        .iter()
        .filter_map(|s| s.dedupe_window)
        .chain([config.server.dedupe_window])
        .max()
        .unwrap_or(config.server.dedupe_window);
    PurgeCutoffs {
        delivered_before: now.before(config.retention.delivered.0),
        dead_before: now.before(config.retention.dead.0),
        dedupe_before: now.before(longest_window.0),
    }
}

/// Reloads the TLS certificate on every SIGHUP until `cancel`.
///
/// The handler is installed even without TLS: SIGHUP's default action ends
/// the process, and `systemctl reload` sends it. Installing it here, before
/// `start` returns, means a SIGHUP sent right after start cannot kill the
/// relay either.
#[cfg(unix)]
fn reload_on_sighup(tls: Option<TlsIngress>, cancel: CancellationToken) -> Option<JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; the TLS certificate will not be reloaded");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = hup.recv() => if r.is_none() { return },
            }
            match &tls {
                None => tracing::info!(
                    "SIGHUP: nothing to reload (ingress has no TLS); other settings need a restart"
                ),
                Some(t) => match t.reload() {
                    Ok(()) => {
                        tracing::info!(cert = %t.cert_path().display(), "SIGHUP: TLS certificate reloaded")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "SIGHUP: TLS certificate not reloaded; still serving the previous one")
                    }
                },
            }
        }
    }))
}

#[cfg(not(unix))]
fn reload_on_sighup(
    _tls: Option<TlsIngress>,
    _cancel: CancellationToken,
) -> Option<JoinHandle<()>> {
    None
}

async fn purge_loop(store: Arc<dyn Store>, config: Arc<Config>, cancel: CancellationToken) {
    let every = config.retention.interval.0;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match store.purge(&purge_cutoffs(&config, now_ms())).await {
            Ok(c) if c.messages > 0 || c.dedupe_keys > 0 => {
                tracing::info!(
                    messages = c.messages,
                    dedupe_keys = c.dedupe_keys,
                    "retention purge"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention purge failed; will try again"),
        }
        // Expired status page sessions are refused already; this removes
        // the rows of those nobody presents again.
        match store.purge_admin_sessions(now_ms()).await {
            Ok(n) if n > 0 => tracing::debug!(sessions = n, "expired admin sessions purged"),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "purging expired admin sessions failed; will try again")
            }
        }
    }
}
