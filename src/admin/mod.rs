//! The admin listener: health, metrics and the `/api/v1` JSON API (bearer
//! token). It binds to loopback by default and shares no route with ingress.

mod error;

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::config::{Config, Secret};
use crate::dispatch::SinkSet;
use crate::metrics::Metrics;
use crate::routing::Pattern;
use crate::store::{now_ms, parse_time, DeliveryFilter, ReplayFilter, RetryResult, Status, Store};
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

/// The admin routes.
pub fn router(state: Arc<AdminState>) -> Router {
    let api = Router::new()
        .route("/sinks", get(list_sinks))
        .route("/sinks/{name}/pause", post(pause_sink))
        .route("/sinks/{name}/resume", post(resume_sink))
        .route("/messages/{id}", get(get_message))
        .route("/deliveries", get(list_deliveries))
        .route("/deliveries/{id}/retry", post(retry_delivery))
        .route("/replay", post(replay))
        .fallback(|| async { AdminError::NotFound("no such API endpoint".into()) })
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/api/v1", api)
        .fallback(|| async { AdminError::NotFound("no such path".into()) })
        .with_state(state)
}

async fn require_token(State(st): State<Arc<AdminState>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    if token_ok(st.config.admin.token.as_ref(), presented) {
        next.run(req).await
    } else {
        AdminError::Unauthorized.into_response()
    }
}

/// Constant-time check of a presented bearer token.
pub fn token_ok(configured: Option<&Secret>, presented: Option<&str>) -> bool {
    match (configured, presented) {
        (Some(t), Some(p)) => {
            crate::ingress::signature::secret_matches(std::slice::from_ref(t), p.as_bytes())
        }
        _ => false,
    }
}

async fn readyz(State(st): State<Arc<AdminState>>) -> Response {
    match st.store.ping().await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: store does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "error": "store_unavailable"})),
            )
                .into_response()
        }
    }
}

async fn metrics(State(st): State<Arc<AdminState>>) -> Response {
    let now = now_ms();
    match st.store.sink_stats(now).await {
        Ok(stats) => {
            let states: Vec<(String, &'static str)> =
                st.sinks.iter().map(|s| (s.name.clone(), s.state())).collect();
            st.metrics.refresh(&stats, &states, now);
        }
        // Serve the counters anyway; the gauges keep their last values.
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read queue depths"),
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.metrics.encode(),
    )
        .into_response()
}

async fn list_sinks(State(st): State<Arc<AdminState>>) -> Result<Json<serde_json::Value>, AdminError> {
    let stats = st.store.sink_stats(now_ms()).await?;
    let items: Vec<_> = st
        .sinks
        .iter()
        .map(|s| {
            let q = stats.iter().find(|x| x.sink == s.name).cloned().unwrap_or_default();
            json!({
                "name": s.name,
                "kind": s.kind.as_str(),
                "state": s.state(),
                "pending": q.pending,
                "in_flight": q.in_flight,
                "dead": q.dead,
                "delivered": q.delivered,
                "delivered_last_hour": q.delivered_last_hour,
                "oldest_pending_at": q.oldest_pending_at.map(crate::store::rfc3339),
                "last_success_at": q.last_success_at.map(crate::store::rfc3339),
                "last_error": q.last_error,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

async fn set_pause(st: &AdminState, name: &str, paused: bool) -> Result<Json<serde_json::Value>, AdminError> {
    let sink = st
        .sinks
        .get(name)
        .ok_or_else(|| AdminError::NotFound(format!("no sink named {name:?}")))?;
    let reason = paused.then_some("paused by an administrator");
    st.store.set_paused(name, paused, reason, now_ms()).await?;
    if sink.paused() != paused {
        tracing::info!(sink = %name, state = if paused { "paused" } else { "active" }, "sink state changed");
    }
    sink.set_paused(paused);
    Ok(Json(json!({"name": name, "state": sink.state()})))
}

async fn pause_sink(State(st): State<Arc<AdminState>>, Path(name): Path<String>) -> Result<Json<serde_json::Value>, AdminError> {
    set_pause(&st, &name, true).await
}

async fn resume_sink(State(st): State<Arc<AdminState>>, Path(name): Path<String>) -> Result<Json<serde_json::Value>, AdminError> {
    set_pause(&st, &name, false).await
}

async fn get_message(State(st): State<Arc<AdminState>>, Path(id): Path<String>) -> Result<Json<serde_json::Value>, AdminError> {
    let m = st
        .store
        .message(&id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("no message {id:?}")))?;
    Ok(Json(serde_json::to_value(m).map_err(|e| AdminError::Internal(e.to_string()))?))
}

/// Query of `GET /api/v1/deliveries`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    status: Option<String>,
    sink: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

fn parse_status(s: &str) -> Result<Status, AdminError> {
    Status::parse(s).ok_or_else(|| {
        AdminError::BadRequest(format!(
            "status {s:?} is not one of pending, in_flight, delivered, dead"
        ))
    })
}

fn parse_when(key: &str, v: Option<&str>, now: i64) -> Result<Option<i64>, AdminError> {
    v.map(|s| parse_time(s, now).map_err(|m| AdminError::BadRequest(format!("{key}: {m}"))))
        .transpose()
}

async fn list_deliveries(
    State(st): State<Arc<AdminState>>,
    q: Result<Query<DeliveriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, AdminError> {
    let Query(q) = q.map_err(|e| AdminError::BadRequest(e.body_text()))?;
    let now = now_ms();
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(AdminError::BadRequest("limit must be between 1 and 1000".into()));
    }
    let filter = DeliveryFilter {
        status: q.status.as_deref().map(parse_status).transpose()?,
        sink: q.sink,
        since: parse_when("since", q.since.as_deref(), now)?,
        until: parse_when("until", q.until.as_deref(), now)?,
        limit,
        cursor: q.cursor,
    };
    let items = st.store.list_deliveries(&filter).await?;
    let next_cursor = (items.len() == limit).then(|| items.last().map(|d| d.id.clone())).flatten();
    Ok(Json(json!({"items": items, "next_cursor": next_cursor})))
}

async fn retry_delivery(State(st): State<Arc<AdminState>>, Path(id): Path<String>) -> Result<Json<serde_json::Value>, AdminError> {
    match st.store.retry_delivery(&id, now_ms()).await? {
        RetryResult::Requeued => {
            for s in st.sinks.iter() {
                s.wake();
            }
            Ok(Json(json!({"id": id, "status": "pending"})))
        }
        RetryResult::NotFound => Err(AdminError::NotFound(format!("no delivery {id:?}"))),
        RetryResult::InFlight => Err(AdminError::Conflict("the delivery is being attempted right now".into())),
    }
}

/// Body of `POST /api/v1/replay`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    status: Option<String>,
    sink: Option<String>,
    source: Option<String>,
    since: Option<String>,
    until: Option<String>,
    event: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

/// Turns replay options (from the API or the CLI) into a store filter.
pub fn replay_filter(
    config: &Config,
    status: Option<&str>,
    sink: Option<String>,
    source: Option<String>,
    since: Option<&str>,
    until: Option<&str>,
    event: Option<&str>,
    dry_run: bool,
) -> Result<ReplayFilter, AdminError> {
    let now = now_ms();
    let status = parse_status(status.unwrap_or("dead"))?;
    if !matches!(status, Status::Dead | Status::Delivered) {
        return Err(AdminError::BadRequest("replay takes status dead or delivered".into()));
    }
    if let Some(s) = &sink {
        if !config.sinks.iter().any(|c| &c.name == s) {
            return Err(AdminError::BadRequest(format!("no sink named {s:?}")));
        }
    }
    if let Some(s) = &source {
        if config.source(s).is_none() {
            return Err(AdminError::BadRequest(format!("no source named {s:?}")));
        }
    }
    Ok(ReplayFilter {
        status,
        sink,
        source,
        since: parse_when("since", since, now)?,
        until: parse_when("until", until, now)?,
        event: event
            .map(|e| Pattern::parse(e).map_err(|m| AdminError::BadRequest(format!("event: {m}"))))
            .transpose()?,
        dry_run,
    })
}

async fn replay(
    State(st): State<Arc<AdminState>>,
    body: Result<Json<ReplayBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, AdminError> {
    let Json(b) = body.map_err(|e| AdminError::BadRequest(e.body_text()))?;
    let f = replay_filter(
        &st.config,
        b.status.as_deref(),
        b.sink,
        b.source,
        b.since.as_deref(),
        b.until.as_deref(),
        b.event.as_deref(),
        b.dry_run,
    )?;
    let n = st.store.replay(&f, now_ms()).await?;
    if f.dry_run {
        return Ok(Json(json!({"requeued": 0, "matched": n, "dry_run": true})));
    }
    tracing::info!(requeued = n, sink = ?f.sink, status = f.status.as_str(), "replay");
    for s in st.sinks.iter() {
        s.wake();
    }
    Ok(Json(json!({"requeued": n})))
}
