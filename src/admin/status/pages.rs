//! The page's `GET` handlers, and the answers that are whole pages
//! (refusals, the store being down), shared with the actions and the
//! form extractors.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::csrf::session;
use super::view::{self, NoticeQuery};
use super::{local_target, DEAD_SHOWN};
use crate::admin::html::{render, see_other, seg};
use crate::admin::summary::summarize;
use crate::admin::{AdminError, AdminState};
use crate::store::{now_ms, DeliveryFilter, MessageId, Status, StoreError};

/// What the login page says when the store does not answer.
pub(super) const STORE_DOWN_LOGIN: &str =
    "The store did not answer, so no login can be opened or checked; try again in a moment.";

/// The login page.
pub(super) fn login_page(
    status: StatusCode,
    error: Option<&str>,
    next: &str,
    configured: bool,
) -> Response {
    render(
        status,
        "login.html",
        &view::Login {
            error,
            next,
            configured,
        },
    )
}

/// A refused request (403), saying why.
pub(super) fn refused(why: &str) -> Response {
    tracing::warn!(reason = why, "status page: request refused");
    render(
        StatusCode::FORBIDDEN,
        "refused.html",
        &view::Refused {
            title: "Refused",
            heading: "Refused",
            why,
        },
    )
}

/// A form that does not decode (400), naming the field.
pub(super) fn bad_form(why: &str) -> Response {
    tracing::warn!(reason = why, "status page: a form that does not decode");
    render(
        StatusCode::BAD_REQUEST,
        "refused.html",
        &view::Refused {
            title: "Bad request",
            heading: "Not a valid form",
            why,
        },
    )
}

/// The answer when the store cannot say whether a session is live: the
/// request is refused, the browser keeps its cookie for when it answers.
pub(super) fn session_trouble(e: &StoreError) -> Response {
    tracing::error!(error = %e, "status page: cannot check the session in the store");
    render(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_down.html",
        &view::StoreDown { csrf: None },
    )
}

/// The answer when the store fails behind a live session.
pub(super) fn store_trouble(csrf: &str, e: &AdminError) -> Response {
    tracing::error!(error = %e, "status page: the store did not answer");
    render(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_down.html",
        &view::StoreDown { csrf: Some(csrf) },
    )
}

#[derive(Debug, serde::Deserialize, Default)]
pub(super) struct Next {
    next: Option<String>,
}

pub(super) async fn login_form(
    State(st): State<Arc<AdminState>>,
    headers: HeaderMap,
    q: Result<Query<Next>, QueryRejection>,
) -> Response {
    let next = local_target(q.as_ref().ok().and_then(|Query(n)| n.next.as_deref())).to_string();
    let configured = st.config.admin.token.is_some();
    match session(&st, &headers).await {
        Ok(Some(_)) => see_other(&next),
        Ok(None) => login_page(StatusCode::OK, None, &next, configured),
        Err(e) => {
            tracing::error!(error = %e, "status page: cannot check the session in the store");
            login_page(
                StatusCode::SERVICE_UNAVAILABLE,
                Some(STORE_DOWN_LOGIN),
                &next,
                configured,
            )
        }
    }
}

pub(super) async fn index(
    State(st): State<Arc<AdminState>>,
    headers: HeaderMap,
    q: Result<Query<NoticeQuery>, QueryRejection>,
) -> Response {
    let sess = match session(&st, &headers).await {
        Ok(Some(s)) => s,
        Ok(None) => return see_other("/login"),
        Err(e) => return session_trouble(&e),
    };
    let now = now_ms();
    let stats = match st.store.sink_stats(now).await {
        Ok(s) => s,
        Err(e) => return store_trouble(&sess.csrf, &e.into()),
    };
    let dead = match st
        .store
        .list_deliveries(&DeliveryFilter {
            status: Some(Status::Dead),
            limit: DEAD_SHOWN,
            ..Default::default()
        })
        .await
    {
        Ok(d) => d,
        Err(e) => return store_trouble(&sess.csrf, &e.into()),
    };
    let sinks = summarize(&st.config, &stats, |n| st.state_of(n));
    let notice = q.ok().and_then(|Query(n)| view::notice(&st.config, &n));
    render(
        StatusCode::OK,
        "overview.html",
        &view::overview(&sess.csrf, notice, &sinks, &dead, now),
    )
}

pub(super) async fn message_page(
    State(st): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let back = format!("/messages/{id}");
    let sess = match session(&st, &headers).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            let next = local_target(Some(&back));
            return see_other(&format!("/login?next={}", seg(next)));
        }
        Err(e) => return session_trouble(&e),
    };
    let m = match st.store.message(&MessageId::from(id.as_str())).await {
        Ok(Some(m)) => m,
        Ok(None) => {
            return render(
                StatusCode::NOT_FOUND,
                "not_found.html",
                &view::NotFound {
                    csrf: &sess.csrf,
                    id: &id,
                },
            )
        }
        Err(e) => return store_trouble(&sess.csrf, &e.into()),
    };
    let back = local_target(Some(&back));
    let mut page = view::message(&sess.csrf, back, &m);
    // The page still shows the message if the fetch row cannot be read.
    page.m.fetch = st
        .store
        .fetch_row(&m.id)
        .await
        .ok()
        .flatten()
        .map(|f| view::fetch(&f));
    render(StatusCode::OK, "message.html", &page)
}
