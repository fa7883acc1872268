//! The admin listener: health, metrics, the `/api/v1` JSON API (bearer
//! token), its OpenAPI document, and the status page for people (session
//! cookie). It binds to loopback by default and shares no route with ingress.
//!
//! - [`api`]: JSON handlers, documented with `#[utoipa::path]`;
//! - [`openapi`]: the document's frame;
//! - [`status`]: the server-rendered status page and its form actions;
//! - [`auth`]: bearer check, session cookie, cross-site request checks;
//! - [`summary`]: the per-sink table the API, page and CLI share;
//! - [`exposition`]: OpenMetrics or classic text for `/metrics`.

pub mod api;
pub mod auth;
pub mod dto;
mod error;
pub mod exposition;
mod html;
pub mod openapi;
pub mod status;
pub mod summary;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Config;
use crate::dispatch::SinkSet;
pub use crate::domain::event::EventDoc;
use crate::metrics::Metrics;
use crate::store::Store;
pub use api::{replay_filter, DeliveriesQuery, ReplayBody};
pub use auth::token_ok;
pub use error::AdminError;

/// What the admin handlers share.
pub struct AdminState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Sinks, for pause/resume and waking after a replay.
    pub sinks: Arc<SinkSet>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// The configuration.
    pub config: Arc<Config>,
}

impl AdminState {
    /// A configured sink's state word (`active`, `circuit_open`, `paused`).
    pub fn state_of(&self, name: &str) -> &'static str {
        self.sinks.get(name).map(|s| s.state()).unwrap_or("active")
    }

    /// Tells every sink's loop that work may be due (after a retry or replay).
    pub fn wake_all(&self) {
        for s in self.sinks.iter() {
            s.wake();
        }
    }
}

/// The serialised OpenAPI document, served by `GET /api/v1/openapi.json`.
#[derive(Debug)]
pub struct OpenApiJson(pub String);

/// The admin routes with the OpenAPI document that describes them.
pub fn router_with_doc(state: Arc<AdminState>) -> (Router, utoipa::openapi::OpenApi) {
    let protected = OpenApiRouter::new()
        .routes(routes!(api::list_sinks))
        .routes(routes!(api::pause_sink))
        .routes(routes!(api::resume_sink))
        .routes(routes!(api::get_message))
        .routes(routes!(api::list_deliveries))
        .routes(routes!(api::retry_delivery))
        .routes(routes!(api::replay))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    // Added after the token layer: the document is public (it holds no
    // secret, and tools fetch it before they know how to authenticate).
    let v1 = protected
        .routes(routes!(api::openapi_json))
        .fallback(|| async { AdminError::NotFound("no such API endpoint".into()) });
    let (documented, doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(api::healthz))
        .routes(routes!(api::readyz))
        .routes(routes!(api::metrics))
        .nest("/api/v1", v1)
        .split_for_parts();
    let mut value = serde_json::to_value(&doc).unwrap_or_default();
    openapi::refine(&mut value, &state.config);
    let json = match serde_json::to_string(&value) {
        Ok(j) => j,
        Err(e) => {
            // Cannot happen for a document built from static types; answer
            // something valid rather than fail the whole listener.
            tracing::error!(error = %e, "cannot serialise the OpenAPI document");
            "{}".to_string()
        }
    };
    let router = documented
        .merge(status::routes())
        .fallback(|| async { AdminError::NotFound("no such path".into()) })
        .layer(Extension(Arc::new(OpenApiJson(json))))
        .with_state(state);
    (router, doc)
}

/// The admin routes.
pub fn router(state: Arc<AdminState>) -> Router {
    router_with_doc(state).0
}

async fn require_token(State(st): State<Arc<AdminState>>, req: Request, next: Next) -> Response {
    if token_ok(st.config.admin.token.as_ref(), auth::bearer(req.headers())) {
        next.run(req).await
    } else {
        AdminError::Unauthorized.into_response()
    }
}
