//! Serving a router on a TCP listener, with the protections a public
//! endpoint needs: a header read timeout (slowloris), a concurrency limit
//! that sheds with 503 instead of queueing, and graceful shutdown.
//!
//! With a TLS acceptor the listener speaks HTTPS. The handshake runs in the
//! connection's own task, never in the accept loop, and is bounded by the
//! header read timeout: a client that opens a socket and never says hello
//! costs one task until then, and blocks nobody else.

use std::net::SocketAddr;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::{BoxError, ServiceBuilder, ServiceExt};

/// Limits of one listener.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// A connection that has not sent complete headers by then is closed;
    /// with TLS, one that has not finished its handshake by then as well.
    pub header_read_timeout: Duration,
    /// Requests in progress at once; more get 503 at once.
    pub max_concurrency: usize,
    /// How long open requests may take to finish after shutdown begins.
    pub shutdown_grace: Duration,
}

async fn overloaded(_: BoxError) -> axum::response::Response {
    (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        [(axum::http::header::RETRY_AFTER, "1")],
        axum::Json(serde_json::json!({"error": "overloaded", "detail": "too many requests in progress; try again"})),
    )
        .into_response()
}

/// Serves `router` over plain HTTP until `cancel`, then stops accepting,
/// lets open requests finish (up to the grace period) and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    opts: ServeOptions,
    cancel: CancellationToken,
) {
    serve_with_tls(listener, router, opts, cancel, None).await
}

/// [`serve`], speaking HTTPS when `tls` is given. The acceptor's certificate
/// resolver decides which certificate each handshake gets, so a reload
/// reaches new connections without touching the listener.
pub async fn serve_with_tls(
    listener: TcpListener,
    router: Router,
    opts: ServeOptions,
    cancel: CancellationToken,
    tls: Option<TlsAcceptor>,
) {
    let svc = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(overloaded))
        .load_shed()
        .concurrency_limit(opts.max_concurrency)
        .service(router);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let svc = svc.clone();
        let per_conn = tower::service_fn(move |mut req: axum::http::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            svc.clone().oneshot(req)
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(opts.header_read_timeout)
            .max_buf_size(64 * 1024);
        let Some(acceptor) = tls.clone() else {
            let conn =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(per_conn));
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                let _ = conn.await;
            });
            continue;
        };
        // Shutdown waits for every watcher, so a handshake still running
        // when shutdown begins is abandoned rather than waited for.
        let watcher = graceful.watcher();
        let handshake_timeout = opts.header_read_timeout;
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(stream));
            let stream = tokio::select! {
                _ = cancel.cancelled() => return,
                r = handshake => match r {
                    Ok(Ok(s)) => s,
                    // Scanners and plain-HTTP clients fail here all day:
                    // not worth more than a debug line.
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(peer = %peer, "TLS handshake timed out");
                        return;
                    }
                },
            };
            let conn =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(per_conn));
            let _ = watcher.watch(conn).await;
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(opts.shutdown_grace) => {
            tracing::warn!("shutdown grace period over with requests still open");
        }
    }
}
