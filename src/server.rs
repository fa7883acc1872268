//! Serving a router on a TCP listener, with the protections a public
//! endpoint needs: a header read timeout (slowloris), a concurrency limit
//! that sheds with 503 instead of queueing, and graceful shutdown.

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
use tokio_util::sync::CancellationToken;
use tower::{BoxError, ServiceBuilder, ServiceExt};

/// Limits of one listener.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// A connection that has not sent complete headers by then is closed.
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

/// Serves `router` until `cancel`, then stops accepting, lets open
/// requests finish (up to the grace period) and returns.
pub async fn serve(listener: TcpListener, router: Router, opts: ServeOptions, cancel: CancellationToken) {
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
        let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(per_conn));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
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
