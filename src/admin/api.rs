//! The `/api/v1` JSON handlers, each annotated for the OpenAPI document
//! ([`super::openapi`]), and the unauthenticated health and metrics routes.
//!
//! Handlers are registered only through `utoipa_axum::routes!`, which adds
//! a route and its documentation in one call: that is what keeps
//! `openapi.json` from drifting away from the router.

use std::sync::{Arc, LazyLock};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use regex::Regex;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::dto::{DeliveryDoc, MessageDoc};
use super::summary::{summarize, SinkSummary};
use super::{AdminError, AdminState, OpenApiJson};
use crate::config::Config;
use crate::domain::pattern::Pattern;
use crate::store::{
    now_ms, parse_time, DeliveryFilter, DeliveryId, MessageId, Millis, ReplayFilter, RetryResult,
    SinkName, Status,
};

/// Every error answer: a fixed code word and a sentence for people.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// `unauthorized`, `bad_request`, `not_found`, `conflict`,
    /// `store_unavailable`, `overloaded` or `internal`.
    pub error: String,
    /// What went wrong, without secrets.
    pub detail: String,
}

/// `GET /healthz` and `GET /readyz` answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `ready` or `unavailable`.
    pub status: String,
    /// Why not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /api/v1/sinks`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SinkList {
    /// One entry per configured sink, in config order.
    pub items: Vec<SinkSummary>,
}

/// Answer of pause and resume.
#[derive(Debug, Serialize, ToSchema)]
pub struct SinkStateChange {
    /// Sink name.
    pub name: String,
    /// The sink's state now: `active`, `circuit_open` or `paused`.
    pub state: String,
}

/// One page of `GET /api/v1/deliveries`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    /// Deliveries, newest first.
    pub items: Vec<DeliveryDoc>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Answer of retrying one delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct RetryAnswer {
    /// Delivery id.
    pub id: String,
    /// Always `pending`: it is queued again with fresh attempts.
    pub status: String,
}

/// Answer of a replay.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayAnswer {
    /// Deliveries requeued (0 on a dry run).
    pub requeued: u64,
    /// Deliveries the filter matched.
    pub matched: u64,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

/// Query of `GET /api/v1/deliveries`.
#[derive(Debug, Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Only this status.
    #[param(value_type = Option<Status>)]
    pub status: Option<String>,
    /// Only this sink.
    pub sink: Option<String>,
    /// Created at or after: a duration back from now (`2h`) or a time (`2026-11-22T10:00:00Z`).
    pub since: Option<String>,
    /// Created before: a duration back from now or a time.
    pub until: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Which deliveries a replay takes (documentation of [`ReplayBody::status`]).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplayStatus {
    /// Dead letters.
    Dead,
    /// Deliveries that succeeded, to send them again.
    Delivered,
}

/// Body of `POST /api/v1/replay`. Every field is optional; `{}` replays
/// every dead delivery.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    /// `dead` (default) or `delivered`.
    #[schema(value_type = Option<ReplayStatus>)]
    pub status: Option<String>,
    /// Only this sink.
    pub sink: Option<String>,
    /// Only messages from this source.
    pub source: Option<String>,
    /// Created at or after (`2h` or an RFC 3339 time).
    pub since: Option<String>,
    /// Created before (`2h` or an RFC 3339 time).
    pub until: Option<String>,
    /// Only deliveries with an event matching this ArcGIS trigger
    /// (`/items/share`, `FeaturesCreated`).
    pub event: Option<String>,
    /// Count only, change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, description = "The process is up", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        error: None,
    })
}

/// Readiness: the store answers.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()), responses(
    (status = 200, description = "The store answers", body = Health),
    (status = 503, description = "The store does not answer", body = Health)))]
pub async fn readyz(State(st): State<Arc<AdminState>>) -> Response {
    match st.store.ping().await {
        Ok(()) => Json(Health {
            status: "ready".into(),
            error: None,
        })
        .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: store does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Health {
                    status: "unavailable".into(),
                    error: Some("store_unavailable".into()),
                }),
            )
                .into_response()
        }
    }
}

/// Prometheus metrics. Answers OpenMetrics when the scraper's `Accept`
/// asks for it (Prometheus does), else the classic text format 0.0.4
/// (promtool, curl, older scrapers).
#[utoipa::path(get, path = "/metrics", tag = "health", security(()), responses(
    (status = 200, description = "Metrics exposition", content(
        (String = "text/plain"),
        (String = "application/openmetrics-text")))))]
pub async fn metrics(State(st): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    let now = now_ms();
    match st.store.sink_stats(now).await {
        Ok(stats) => {
            let states: Vec<(SinkName, &'static str)> = st
                .sinks
                .iter()
                .map(|s| (s.name.clone(), s.state()))
                .collect();
            st.metrics.refresh(&stats, &states, now);
        }
        // Serve the counters anyway; the gauges keep their last values.
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read queue depths"),
    }
    let openmetrics = st.metrics.encode();
    if super::exposition::wants_openmetrics(&headers) {
        (
            [(header::CONTENT_TYPE, super::exposition::OPENMETRICS_TYPE)],
            openmetrics,
        )
            .into_response()
    } else {
        (
            [(header::CONTENT_TYPE, super::exposition::TEXT_TYPE)],
            super::exposition::to_text_format(&openmetrics),
        )
            .into_response()
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", security(()), responses(
    (status = 200, description = "The OpenAPI document of the admin listener", body = Object)))]
pub async fn openapi_json(Extension(doc): Extension<Arc<OpenApiJson>>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], doc.0.clone()).into_response()
}

/// Every sink with its kind, state and queue.
#[utoipa::path(get, path = "/sinks", tag = "sinks", responses(
    (status = 200, body = SinkList),
    (status = 401, body = ErrorBody),
    (status = 503, body = ErrorBody)))]
pub async fn list_sinks(State(st): State<Arc<AdminState>>) -> Result<Json<SinkList>, AdminError> {
    let stats = st.store.sink_stats(now_ms()).await?;
    Ok(Json(SinkList {
        items: summarize(&st.config, &stats, |name| st.state_of(name)),
    }))
}

/// Pauses or resumes a sink durably, logging the change once.
pub async fn set_pause(
    st: &AdminState,
    name: &str,
    paused: bool,
) -> Result<SinkStateChange, AdminError> {
    let sink = st
        .sinks
        .get(name)
        .ok_or_else(|| AdminError::NotFound(format!("no sink named {name:?}")))?;
    let reason = paused.then_some("paused by an administrator");
    st.store
        .set_paused(&sink.name, paused, reason, now_ms())
        .await?;
    if sink.paused() != paused {
        tracing::info!(sink = %name, state = if paused { "paused" } else { "active" }, "sink state changed");
    }
    sink.set_paused(paused);
    Ok(SinkStateChange {
        name: name.to_string(),
        state: sink.state().to_string(),
    })
}

/// Stops sending to a sink; it keeps accepting and storing. Survives restarts.
#[utoipa::path(post, path = "/sinks/{name}/pause", tag = "sinks",
    params(("name" = String, Path, description = "Sink name")),
    responses(
        (status = 200, body = SinkStateChange),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn pause_sink(
    State(st): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> Result<Json<SinkStateChange>, AdminError> {
    Ok(Json(set_pause(&st, &name, true).await?))
}

/// Starts sending to a paused sink again.
#[utoipa::path(post, path = "/sinks/{name}/resume", tag = "sinks",
    params(("name" = String, Path, description = "Sink name")),
    responses(
        (status = 200, body = SinkStateChange),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn resume_sink(
    State(st): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> Result<Json<SinkStateChange>, AdminError> {
    Ok(Json(set_pause(&st, &name, false).await?))
}

/// A message with its events, deliveries and every attempt.
#[utoipa::path(get, path = "/messages/{id}", tag = "messages",
    params(("id" = String, Path, description = "Message id")),
    responses(
        (status = 200, body = MessageDoc),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn get_message(
    State(st): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<MessageDoc>, AdminError> {
    let id = MessageId::from(id.as_str());
    let m = st
        .store
        .message(&id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("no message {:?}", id.as_str())))?;
    let mut doc = MessageDoc::from(m);
    doc.fetch = st.store.fetch_row(&id).await?.map(Into::into);
    Ok(Json(doc))
}

fn parse_status(s: &str) -> Result<Status, AdminError> {
    Status::parse(s).ok_or_else(|| {
        AdminError::BadRequest(format!(
            "status {s:?} is not one of pending, in_flight, delivered, dead"
        ))
    })
}

fn parse_when(key: &str, v: Option<&str>, now: Millis) -> Result<Option<Millis>, AdminError> {
    v.map(|s| parse_time(s, now).map_err(|m| AdminError::BadRequest(format!("{key}: {m}"))))
        .transpose()
}

static TIME_RE: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(super::openapi::TIME_PATTERN).ok());
static EVENT_RE: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(super::openapi::EVENT_PATTERN).ok());

/// The API's stricter reading of a time: only what its document promises.
fn api_when(key: &str, v: Option<&str>, now: Millis) -> Result<Option<Millis>, AdminError> {
    if let Some(s) = v {
        if !TIME_RE.as_ref().is_some_and(|re| re.is_match(s)) {
            return Err(AdminError::BadRequest(format!(
                "{key}: {s:?} is neither a duration like 2h, 30m or 7d nor a UTC time like 2026-11-22 or 2026-11-22T10:00:00Z"
            )));
        }
    }
    parse_when(key, v, now)
}

fn api_event(v: Option<&str>) -> Result<(), AdminError> {
    match v {
        Some(e) if !EVENT_RE.as_ref().is_some_and(|re| re.is_match(e)) => Err(AdminError::BadRequest(format!(
            "event: {e:?} is neither an ArcGIS trigger like /items/share nor one change type like FeaturesCreated"
        ))),
        _ => Ok(()),
    }
}

/// Deliveries matching a filter, newest first, a page at a time.
#[utoipa::path(get, path = "/deliveries", tag = "deliveries",
    params(DeliveriesQuery),
    responses(
        (status = 200, body = DeliveryPage),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn list_deliveries(
    State(st): State<Arc<AdminState>>,
    q: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> Result<Json<DeliveryPage>, AdminError> {
    let Query(q) = q.map_err(|e| AdminError::BadRequest(e.body_text()))?;
    let now = now_ms();
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(AdminError::BadRequest(
            "limit must be between 1 and 1000".into(),
        ));
    }
    let filter = DeliveryFilter {
        status: q.status.as_deref().map(parse_status).transpose()?,
        sink: q.sink.map(SinkName::from),
        since: api_when("since", q.since.as_deref(), now)?,
        until: api_when("until", q.until.as_deref(), now)?,
        limit,
        cursor: q.cursor.map(DeliveryId::from),
    };
    let items = st.store.list_deliveries(&filter).await?;
    let next_cursor = (items.len() == limit)
        .then(|| items.last().map(|d| d.id.to_string()))
        .flatten();
    let items = items.into_iter().map(DeliveryDoc::from).collect();
    Ok(Json(DeliveryPage { items, next_cursor }))
}

/// Requeues one delivery with fresh attempts and wakes its sink.
pub async fn retry(st: &AdminState, id: &str) -> Result<RetryAnswer, AdminError> {
    match st
        .store
        .retry_delivery(&DeliveryId::from(id), now_ms())
        .await?
    {
        RetryResult::Requeued => {
            tracing::info!(delivery = %id, "delivery requeued by an administrator");
            st.wake_all();
            Ok(RetryAnswer {
                id: id.to_string(),
                status: "pending".into(),
            })
        }
        RetryResult::NotFound => Err(AdminError::NotFound(format!("no delivery {id:?}"))),
        RetryResult::InFlight => Err(AdminError::Conflict(
            "the delivery is being attempted right now".into(),
        )),
    }
}

/// Requeues one delivery (dead, delivered or waiting) with fresh attempts.
#[utoipa::path(post, path = "/deliveries/{id}/retry", tag = "deliveries",
    params(("id" = String, Path, description = "Delivery id")),
    responses(
        (status = 200, body = RetryAnswer),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Being attempted right now", body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn retry_delivery(
    State(st): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<RetryAnswer>, AdminError> {
    Ok(Json(retry(&st, &id).await?))
}

/// Turns replay options (the API's body, also built by the page and the
/// CLI) into a store filter, checking each against the configuration.
pub fn replay_filter(config: &Config, r: &ReplayBody) -> Result<ReplayFilter, AdminError> {
    let now = now_ms();
    let status = parse_status(r.status.as_deref().unwrap_or("dead"))?;
    if !matches!(status, Status::Dead | Status::Delivered) {
        return Err(AdminError::BadRequest(
            "replay takes status dead or delivered".into(),
        ));
    }
    if let Some(s) = &r.sink {
        if config.sink(s).is_none() {
            return Err(AdminError::BadRequest(format!("no sink named {s:?}")));
        }
    }
    if let Some(s) = &r.source {
        if config.source(s).is_none() {
            return Err(AdminError::BadRequest(format!("no source named {s:?}")));
        }
    }
    Ok(ReplayFilter {
        status,
        sink: r.sink.as_deref().map(SinkName::from),
        source: r.source.as_deref().map(crate::store::SourceName::from),
        since: parse_when("since", r.since.as_deref(), now)?,
        until: parse_when("until", r.until.as_deref(), now)?,
        event: r
            .event
            .as_deref()
            .map(|e| Pattern::parse(e).map_err(|m| AdminError::BadRequest(format!("event: {m}"))))
            .transpose()?,
        dry_run: r.dry_run,
    })
}

/// Runs a replay, logs it and wakes the sinks.
pub async fn run_replay(st: &AdminState, f: &ReplayFilter) -> Result<ReplayAnswer, AdminError> {
    let matched = std::sync::atomic::AtomicU64::new(0);
    let progress =
        |_done: u64, total: u64| matched.store(total, std::sync::atomic::Ordering::Relaxed);
    let n = st
        .store
        .replay_with_progress(f, now_ms(), &progress)
        .await?;
    let matched = matched.load(std::sync::atomic::Ordering::Relaxed).max(n);
    if f.dry_run {
        return Ok(ReplayAnswer {
            requeued: 0,
            matched: n,
            dry_run: true,
        });
    }
    tracing::info!(requeued = n, matched, sink = ?f.sink, status = f.status.as_str(), "replay");
    st.wake_all();
    Ok(ReplayAnswer {
        requeued: n,
        matched,
        dry_run: false,
    })
}

/// Requeues every delivery matching a filter with fresh attempts (the history stays).
#[utoipa::path(post, path = "/replay", tag = "deliveries",
    request_body = ReplayBody,
    responses(
        (status = 200, body = ReplayAnswer),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn replay(
    State(st): State<Arc<AdminState>>,
    body: Result<Json<ReplayBody>, JsonRejection>,
) -> Result<Json<ReplayAnswer>, AdminError> {
    let Json(b) = body.map_err(|e| AdminError::BadRequest(e.body_text()))?;
    let now = now_ms();
    api_when("since", b.since.as_deref(), now)?;
    api_when("until", b.until.as_deref(), now)?;
    api_event(b.event.as_deref())?;
    let f = replay_filter(&st.config, &b)?;
    Ok(Json(run_replay(&st, &f).await?))
}
