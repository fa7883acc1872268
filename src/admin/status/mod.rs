//! The status page: what a GIS administrator opens to see whether events
//! flow, what failed and why, and to fix it with a button.
//!
//! Server-rendered HTML with plain forms (every action works without
//! script); `status.js` only asks before a replay, shows local times and
//! offers auto-refresh. Nothing is loaded from elsewhere, so it works on an
//! offline machine. Routes:
//!
//! - `GET /` the page; `GET /messages/{id}` one message with every attempt;
//! - `GET|POST /login`, `POST /logout`;
//! - `POST /ui/deliveries/{id}/retry`, `POST /ui/sinks/{name}/replay|pause|resume`;
//! - `GET /static/status.css|js`.
//!
//! The parts:
//! - [`pages`]: the `GET` handlers and the answers that are whole pages;
//! - [`actions`]: the `POST` handlers;
//! - [`csrf`]: the session, and the extractors every `POST` goes through;
//! - [`view`]: the data each template gets, prepared from the store's rows;
//! - the templates themselves: `admin/templates/*.html`, rendered by
//!   [`super::html`] with auto-escaping.
//!
//! Every action is registered with [`action`], whose handler must take a
//! [`csrf::CsrfForm`]: the only way to the form is through the same-origin,
//! session and CSRF checks (the login, which has no session yet, takes a
//! [`csrf::SameOriginForm`]). Login and cross-site protection: see
//! [`super::auth`]. Every action answers `303 See Other` back to the page
//! with a notice (post, redirect, get: reloading the page never repeats an
//! action).

mod actions;
mod csrf;
mod pages;
mod view;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::response::Response;
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use serde::de::DeserializeOwned;

use super::html::asset;
use super::AdminState;
use csrf::CsrfForm;

const CSS: &str = include_str!("../status.css");
const JS: &str = include_str!("../status.js");

/// How many dead deliveries the page lists.
const DEAD_SHOWN: usize = 50;
/// How much of a message body the message page shows.
const BODY_SHOWN: usize = 64 * 1024;

/// The page routes (merged into the admin router). Builds the template
/// environment now, so a template that does not compile is in the log
/// when the listener starts (the request that needs it answers 500).
pub fn routes() -> Router<Arc<AdminState>> {
    if let Err(e) = super::html::check() {
        tracing::error!(error = %e, "the status page cannot render; its templates do not compile");
    }
    Router::new()
        .route("/", get(pages::index))
        .route("/login", get(pages::login_form).post(actions::login))
        .route("/logout", action(actions::logout))
        .route("/messages/{id}", get(pages::message_page))
        .route("/ui/deliveries/{id}/retry", action(actions::retry))
        .route("/ui/sinks/{name}/replay", action(actions::replay))
        .route("/ui/sinks/{name}/pause", action(actions::pause))
        .route("/ui/sinks/{name}/resume", action(actions::resume))
        .route(
            "/static/status.css",
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
        .route(
            "/static/status.js",
            get(|| async { asset("text/javascript; charset=utf-8", JS) }),
        )
}

/// A `POST` route for a page action. The handler gets the state, `P` (a
/// path or nothing: extractors of the request's parts, which cannot read
/// the body) and the checked form; it has no other way to the request.
fn action<P, T, F, Fut>(handler: F) -> MethodRouter<Arc<AdminState>>
where
    P: FromRequestParts<Arc<AdminState>> + Send + 'static,
    T: DeserializeOwned + Send + 'static,
    F: Fn(Arc<AdminState>, P, CsrfForm<T>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    post(
        move |State(st): State<Arc<AdminState>>, parts: P, form: CsrfForm<T>| {
            handler(st, parts, form)
        },
    )
}

/// Where to go after an action or a login: only the page itself or a
/// message page, so a crafted link cannot send the browser elsewhere.
fn local_target(s: Option<&str>) -> &str {
    let Some(s) = s else {
        return "/";
    };
    let ok = s == "/"
        || s.strip_prefix("/messages/").is_some_and(|id| {
            !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        s
    } else {
        "/"
    }
}
