//! Serving a router on a TCP listener, with the protections a public
//! endpoint needs: a header read timeout (slowloris), a concurrency limit
//! that sheds with 503 instead of queueing, and graceful shutdown.
//!
//! With a TLS acceptor the listener speaks HTTPS. The handshake runs in the
//! connection's own task, never in the accept loop, and is bounded by the
//! header read timeout: a client that opens a socket and never says hello
//! costs one task until then, and blocks nobody else.
//!
//! An answer given before the request body was read to its end (413 on a
//! declared length, 401/404/415 before the body is wanted, 503 shed) says
//! `Connection: close`. hyper closes such a connection anyway, since the
//! unread rest of the body stands between it and the next request; without
//! the header a keep-alive client (ArcGIS's, reqwest's) puts the connection
//! back in its pool and its next request fails with a connection error.
//! Before that answer goes out, up to [`DRAIN_BYTES`] of the unread body
//! are read and dropped (for at most [`DRAIN_TIME`]): closing a socket with
//! unread data makes the kernel reset it, and a reset can destroy the
//! answer before the client has read it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use axum::Router;
use http_body::{Body as HttpBody, Frame, SizeHint};
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
    /// Requests in progress at once; more get 503 at once. `None` leaves
    /// the limit to the router (ingress counts work, not body reading).
    pub max_concurrency: Option<usize>,
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
        .concurrency_limit(opts.max_concurrency.unwrap_or(usize::MAX >> 4))
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
        let per_conn = tower::service_fn(move |req: axum::http::Request<Incoming>| {
            let (mut req, body) = track_body(req);
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            let answer = svc.clone().oneshot(req);
            async move {
                let mut resp = answer.await?;
                if !body.read.load(Ordering::Acquire) {
                    drain(&body).await;
                    resp.headers_mut().insert(
                        axum::http::header::CONNECTION,
                        axum::http::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, std::convert::Infallible>(resp)
            }
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

/// Most bytes of an unread request body dropped before an early answer.
pub const DRAIN_BYTES: usize = 2 * 1024 * 1024;
/// Longest an early answer waits while the unread body is dropped.
pub const DRAIN_TIME: Duration = Duration::from_secs(1);

/// The request body, shared between the handler and the connection, which
/// needs it back after an early answer to drop what is left of it.
struct Shared {
    body: std::sync::Mutex<Incoming>,
    read: AtomicBool,
}

/// Reads and drops what is left of an unread body, within the bounds.
async fn drain(shared: &Arc<Shared>) {
    let mut dropped = 0usize;
    let deadline = tokio::time::Instant::now() + DRAIN_TIME;
    while dropped < DRAIN_BYTES {
        let next = std::future::poll_fn(|cx| {
            let mut body = shared.body.lock().unwrap_or_else(|p| p.into_inner());
            Pin::new(&mut *body).poll_frame(cx)
        });
        match tokio::time::timeout_at(deadline, next).await {
            Ok(Some(Ok(frame))) => {
                dropped += frame.data_ref().map(|d| d.len()).unwrap_or(0);
            }
            _ => return,
        }
    }
}

/// Wraps the request body so the answer can tell whether it was read to its
/// end (or had none). The flag is set when the body reports its end.
fn track_body(
    req: axum::http::Request<Incoming>,
) -> (axum::http::Request<axum::body::Body>, Arc<Shared>) {
    let (parts, body) = req.into_parts();
    let shared = Arc::new(Shared {
        read: AtomicBool::new(body.is_end_stream()),
        body: std::sync::Mutex::new(body),
    });
    let body = Tracked {
        shared: shared.clone(),
    };
    (
        axum::http::Request::from_parts(parts, axum::body::Body::new(body)),
        shared,
    )
}

/// A request body that records reaching its end.
struct Tracked {
    shared: Arc<Shared>,
}

impl HttpBody for Tracked {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut body = self.shared.body.lock().unwrap_or_else(|p| p.into_inner());
        let polled = Pin::new(&mut *body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || body.is_end_stream() {
            self.shared.read.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.shared
            .body
            .lock()
            .map(|b| b.is_end_stream())
            .unwrap_or(true)
    }

    fn size_hint(&self) -> SizeHint {
        self.shared
            .body
            .lock()
            .map(|b| b.size_hint())
            .unwrap_or_default()
    }
}
