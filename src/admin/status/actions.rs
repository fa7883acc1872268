//! The page's `POST` handlers. Each takes its form as a
//! [`CsrfForm`](super::csrf::CsrfForm) (the login: a
//! [`SameOriginForm`](super::csrf::SameOriginForm)), so the checks ran
//! before the handler starts. Every action answers `303` back to the page
//! it came from, with a notice.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::csrf::{CsrfForm, SameOriginForm};
use super::local_target;
use super::pages::{login_page, store_trouble, STORE_DOWN_LOGIN};
use crate::admin::auth::{self, session_cookie};
use crate::admin::html::{see_other, seg};
use crate::admin::{api, AdminError, AdminState};
use crate::store::now_ms;

/// The form of every page button: where to come back to.
#[derive(Debug, Deserialize)]
pub(super) struct Back {
    back: Option<String>,
}

impl Back {
    /// The page to come back to (only this page or a message page).
    fn target(&self) -> &str {
        local_target(self.back.as_deref())
    }
}

/// The login form.
#[derive(Debug, Deserialize)]
pub(super) struct LoginForm {
    token: Option<String>,
    next: Option<String>,
}

fn with_notice(target: &str, query: &str) -> String {
    format!("{target}?{query}")
}

/// An action's failure, shown as a notice on the page it came from.
fn failed(target: &str, e: &AdminError) -> Response {
    let code = match e {
        AdminError::NotFound(_) => "gone",
        AdminError::Conflict(_) => "busy",
        AdminError::BadRequest(_) => "invalid",
        _ => "store",
    };
    if let AdminError::Store(err) = e {
        tracing::error!(error = %err, "status page action failed in the store");
    }
    see_other(&with_notice(target, &format!("notice={code}")))
}

pub(super) async fn login(
    State(st): State<Arc<AdminState>>,
    headers: HeaderMap,
    SameOriginForm(f): SameOriginForm<LoginForm>,
) -> Response {
    // Login CSRF (another site logging a browser into this relay) is
    // refused by the extractor's origin check.
    let next = local_target(f.next.as_deref()).to_string();
    let Some(token) = st.config.admin.token.as_ref() else {
        return login_page(StatusCode::FORBIDDEN, None, &next, false);
    };
    if !auth::token_ok(Some(token), f.token.as_deref()) {
        tracing::warn!("status page: login with a wrong token");
        return login_page(
            StatusCode::UNAUTHORIZED,
            Some("That token is not right."),
            &next,
            true,
        );
    }
    let id = match auth::open_session(st.store.as_ref(), token, now_ms()).await {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "status page: cannot store a new session");
            return login_page(
                StatusCode::SERVICE_UNAVAILABLE,
                Some(STORE_DOWN_LOGIN),
                &next,
                true,
            );
        }
    };
    // A login from a browser that still had a session replaces it.
    if let Some(old) = session_cookie(&headers) {
        if let Err(e) = auth::end_session(st.store.as_ref(), old).await {
            tracing::warn!(error = %e, "status page: cannot delete the session a login replaced");
        }
    }
    let mut resp = see_other(&next);
    let cookie = auth::set_cookie(&id, auth::via_https(&headers));
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

pub(super) async fn logout(st: Arc<AdminState>, _: (), f: CsrfForm<Back>) -> Response {
    // Deleting the row is what logs out (every copy of the cookie, on every
    // relay of this store); without it the browser keeps the cookie and
    // may try again.
    if let Err(e) = auth::end_session(st.store.as_ref(), &f.session.id).await {
        return store_trouble(&f.session.csrf, &e.into());
    }
    let mut resp = see_other("/login");
    if let Ok(v) = HeaderValue::from_str(&auth::clear_cookie()) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

pub(super) async fn retry(
    st: Arc<AdminState>,
    Path(id): Path<String>,
    f: CsrfForm<Back>,
) -> Response {
    let back = f.form.target();
    match api::retry(&st, &id).await {
        Ok(_) => see_other(&with_notice(
            back,
            &format!("notice=retried&id={}", seg(&id)),
        )),
        Err(e) => failed(back, &e),
    }
}

pub(super) async fn replay(
    st: Arc<AdminState>,
    Path(name): Path<String>,
    f: CsrfForm<Back>,
) -> Response {
    let back = f.form.target();
    if st.sinks.get(&name).is_none() {
        return failed(
            back,
            &AdminError::NotFound(format!("no sink named {name:?}")),
        );
    }
    let every_dead = api::ReplayBody {
        sink: Some(name.clone()),
        ..Default::default()
    };
    let filter = match api::replay_filter(&st.config, &every_dead) {
        Ok(f) => f,
        Err(e) => return failed(back, &e),
    };
    match api::run_replay(&st, &filter).await {
        Ok(a) => see_other(&with_notice(
            back,
            &format!("notice=replayed&sink={}&n={}", seg(&name), a.requeued),
        )),
        Err(e) => failed(back, &e),
    }
}

async fn toggle(st: &AdminState, name: &str, back: &str, paused: bool) -> Response {
    match api::set_pause(st, name, paused).await {
        Ok(_) => see_other(&with_notice(
            back,
            &format!(
                "notice={}&sink={}",
                if paused { "paused" } else { "resumed" },
                seg(name)
            ),
        )),
        Err(e) => failed(back, &e),
    }
}

pub(super) async fn pause(
    st: Arc<AdminState>,
    Path(name): Path<String>,
    f: CsrfForm<Back>,
) -> Response {
    toggle(&st, &name, f.form.target(), true).await
}

pub(super) async fn resume(
    st: Arc<AdminState>,
    Path(name): Path<String>,
    f: CsrfForm<Back>,
) -> Response {
    toggle(&st, &name, f.form.target(), false).await
}
