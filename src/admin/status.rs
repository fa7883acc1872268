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
//! Login and cross-site protection: see [`super::auth`]. Every action
//! answers `303 See Other` back to the page with a notice (post, redirect,
//! get: reloading the page never repeats an action).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::auth::{self, csrf_for, csrf_ok, same_origin, session_cookie};
use super::html::{asset, esc, page, safe_href, see_other, seg, time};
use super::summary::{ago, summarize, SinkSummary};
use super::{api, AdminError, AdminState};
use crate::store::{
    now_ms, rfc3339, DeliveryFilter, DeliveryRow, MessageDetail, Status, StoreError,
};

const CSS: &str = include_str!("status.css");
const JS: &str = include_str!("status.js");

/// How many dead deliveries the page lists.
const DEAD_SHOWN: usize = 50;
/// How much of a message body the message page shows.
const BODY_SHOWN: usize = 64 * 1024;

/// The page routes (merged into the admin router).
pub fn routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/", get(index))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/messages/{id}", get(message_page))
        .route("/ui/deliveries/{id}/retry", post(ui_retry))
        .route("/ui/sinks/{name}/replay", post(ui_replay))
        .route("/ui/sinks/{name}/pause", post(ui_pause))
        .route("/ui/sinks/{name}/resume", post(ui_resume))
        .route(
            "/static/status.css",
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
        .route(
            "/static/status.js",
            get(|| async { asset("text/javascript; charset=utf-8", JS) }),
        )
}

/// A logged-in browser: its session id (the cookie's value) and the CSRF
/// token its forms carry.
struct Session {
    id: String,
    csrf: String,
}

/// The request's session, if it names a live one (checked in the store:
/// see [`super::auth`]).
async fn session(st: &AdminState, headers: &HeaderMap) -> Result<Option<Session>, StoreError> {
    let Some(token) = st.config.admin.token.as_ref() else {
        return Ok(None);
    };
    let Some(value) = session_cookie(headers) else {
        return Ok(None);
    };
    let ok = auth::session_ok(st.store.as_ref(), Some(token), value, now_ms()).await?;
    Ok(ok.then(|| Session {
        id: value.to_string(),
        csrf: csrf_for(token, value),
    }))
}

/// The answer when the store cannot say whether a session is live: the
/// request is refused, the browser keeps its cookie for when it answers.
fn session_trouble(e: &StoreError) -> Response {
    tracing::error!(error = %e, "status page: cannot check the session in the store");
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Store unavailable",
        "<main class=\"narrow\"><h1>hookrelay</h1><p class=\"notice error\" role=\"alert\">The store did not answer, \
         so the login cannot be checked; try again in a moment. Deliveries wait; nothing is lost.</p></main>",
    )
}

fn form(body: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
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

fn plural<'a>(n: u64, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

fn with_notice(target: &str, query: &str) -> String {
    format!("{target}?{query}")
}

fn refused(why: &str) -> Response {
    tracing::warn!(reason = why, "status page: request refused");
    page(
        StatusCode::FORBIDDEN,
        "Refused",
        &format!(
            "<main class=\"narrow\"><h1>Refused</h1><p>{}</p><p><a href=\"/\">Back to the status page</a></p></main>",
            esc(why)
        ),
    )
}

/// The checks every state-changing page request passes: same origin, a
/// live session, and the session's CSRF token in the form. Returns the
/// session to go ahead, or the answer that refuses the request.
async fn guard(
    st: &AdminState,
    headers: &HeaderMap,
    f: &HashMap<String, String>,
) -> Result<Session, Response> {
    if !same_origin(headers) {
        return Err(refused("This request came from another site."));
    }
    let sess = match session(st, headers).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err(see_other("/login")),
        Err(e) => return Err(session_trouble(&e)),
    };
    let token = st.config.admin.token.as_ref();
    if !csrf_ok(token, &sess.id, f.get("csrf").map(String::as_str)) {
        return Err(refused(
            "The form is stale or forged; reload the page and try again.",
        ));
    }
    Ok(sess)
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

fn hidden(csrf: &str, back: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"back\" value=\"{}\">",
        esc(csrf),
        esc(back)
    )
}

/// A one-button form posting to `action`.
fn button(
    action: &str,
    csrf: &str,
    back: &str,
    label: &str,
    class: &str,
    confirm: Option<&str>,
) -> String {
    let confirm = confirm
        .map(|c| format!(" data-confirm=\"{}\"", esc(c)))
        .unwrap_or_default();
    format!(
        "<form method=\"post\" action=\"{}\" class=\"inline\"{confirm}>{}<button type=\"submit\" class=\"{}\">{}</button></form>",
        esc(action),
        hidden(csrf, back),
        esc(class),
        esc(label)
    )
}

fn header_bar(csrf: &str) -> String {
    format!(
        "<header class=\"bar\"><a class=\"brand\" href=\"/\">hookrelay</a><span class=\"muted\">v{}</span>\
         <span class=\"spacer\"></span>\
         <label class=\"muted\"><input type=\"checkbox\" id=\"autorefresh\"> auto-refresh</label>\
         <form method=\"post\" action=\"/logout\" class=\"inline\">{}<button type=\"submit\" class=\"link\">Log out</button></form></header>",
        env!("CARGO_PKG_VERSION"),
        hidden(csrf, "/")
    )
}

/// The notice shown after an action, from fixed words and checked values
/// only. The values arrive as text and each is checked on its own: a link
/// anyone can craft must not put words of theirs in front of an admin, so
/// an `id` that is not a delivery id, a `sink` that is not a configured
/// sink and an `n` that is not a number are dropped, not shown.
#[derive(Debug, Deserialize, Default)]
struct Notice {
    notice: Option<String>,
    sink: Option<String>,
    n: Option<String>,
    id: Option<String>,
}

/// Whether `s` has the form of the ids the store makes (a hyphenated UUID).
fn is_id(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

fn notice_html(st: &AdminState, n: &Notice) -> String {
    let sink = n
        .sink
        .as_deref()
        .filter(|s| st.config.sinks.iter().any(|c| c.name() == *s))
        .unwrap_or("the sink");
    let id = n.id.as_deref().filter(|s| is_id(s));
    let count =
        n.n.as_deref()
            .filter(|s| s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok());
    let (class, text) = match n.notice.as_deref() {
        Some("retried") => (
            "ok",
            match id {
                Some(id) => format!("Delivery {id} is queued again."),
                None => "The delivery is queued again.".to_string(),
            },
        ),
        Some("replayed") => (
            "ok",
            match count {
                Some(n) => format!(
                    "Requeued {n} dead {} of {sink}.",
                    plural(n, "delivery", "deliveries")
                ),
                None => format!("Requeued the dead deliveries of {sink}."),
            },
        ),
        Some("paused") => (
            "ok",
            format!("{sink} is paused: it keeps storing and sends nothing."),
        ),
        Some("resumed") => ("ok", format!("{sink} is sending again.")),
        Some("gone") => (
            "warn",
            "That no longer exists (purged or already changed).".to_string(),
        ),
        Some("busy") => (
            "warn",
            "That delivery is being attempted right now; try again in a moment.".to_string(),
        ),
        Some("invalid") => ("warn", "That request was not valid.".to_string()),
        Some("store") => ("error", "The store did not answer; try again.".to_string()),
        _ => return String::new(),
    };
    format!(
        "<p class=\"notice {class}\" role=\"status\">{}</p>",
        esc(&text)
    )
}

fn login_html(error: Option<&str>, next: &str, configured: bool) -> String {
    let error = error
        .map(|e| format!("<p class=\"notice error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    let form = if configured {
        format!(
            "<form method=\"post\" action=\"/login\" class=\"login\">\
             <label for=\"token\">Admin token</label>\
             <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\
             <input type=\"hidden\" name=\"next\" value=\"{}\">\
             <button type=\"submit\">Log in</button></form>\
             <p class=\"muted\">The token is the <code>[admin] token</code> of the relay's configuration. \
             The browser keeps a session for 12 hours, not the token.</p>",
            esc(next)
        )
    } else {
        "<p>This relay has no <code>[admin] token</code> configured, so the status page and the API are closed. \
         Set one in the configuration and restart.</p>"
            .to_string()
    };
    format!("<main class=\"narrow\"><h1>hookrelay</h1>{error}{form}</main>")
}

#[derive(Debug, Deserialize, Default)]
struct Next {
    next: Option<String>,
}

async fn login_form(
    State(st): State<Arc<AdminState>>,
    headers: HeaderMap,
    q: Result<Query<Next>, QueryRejection>,
) -> Response {
    let next = local_target(q.as_ref().ok().and_then(|Query(n)| n.next.as_deref())).to_string();
    let configured = st.config.admin.token.is_some();
    match session(&st, &headers).await {
        Ok(Some(_)) => see_other(&next),
        Ok(None) => page(
            StatusCode::OK,
            "Log in",
            &login_html(None, &next, configured),
        ),
        Err(e) => {
            tracing::error!(error = %e, "status page: cannot check the session in the store");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Log in",
                &login_html(Some(STORE_DOWN_LOGIN), &next, configured),
            )
        }
    }
}

const STORE_DOWN_LOGIN: &str =
    "The store did not answer, so no login can be opened or checked; try again in a moment.";

async fn login(State(st): State<Arc<AdminState>>, headers: HeaderMap, body: Bytes) -> Response {
    // Login CSRF: another site must not log a browser into this relay.
    if !same_origin(&headers) {
        return refused("This request came from another site.");
    }
    let f = form(&body);
    let next = local_target(f.get("next").map(String::as_str)).to_string();
    let Some(token) = st.config.admin.token.as_ref() else {
        return page(
            StatusCode::FORBIDDEN,
            "Log in",
            &login_html(None, &next, false),
        );
    };
    if !auth::token_ok(Some(token), f.get("token").map(String::as_str)) {
        tracing::warn!("status page: login with a wrong token");
        return page(
            StatusCode::UNAUTHORIZED,
            "Log in",
            &login_html(Some("That token is not right."), &next, true),
        );
    }
    let id = match auth::open_session(st.store.as_ref(), token, now_ms()).await {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "status page: cannot store a new session");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Log in",
                &login_html(Some(STORE_DOWN_LOGIN), &next, true),
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

async fn logout(State(st): State<Arc<AdminState>>, headers: HeaderMap, body: Bytes) -> Response {
    let sess = match guard(&st, &headers, &form(&body)).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    // Deleting the row is what logs out (every copy of the cookie, on every
    // relay of this store); without it the browser keeps the cookie and
    // may try again.
    if let Err(e) = auth::end_session(st.store.as_ref(), &sess.id).await {
        return store_trouble(&sess.csrf, &e.into());
    }
    let mut resp = see_other("/login");
    if let Ok(v) = HeaderValue::from_str(&auth::clear_cookie()) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

fn store_trouble(csrf: &str, e: &AdminError) -> Response {
    tracing::error!(error = %e, "status page: the store did not answer");
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Store unavailable",
        &format!(
            "{}<main><p class=\"notice error\" role=\"alert\">The store did not answer; this page shows nothing until it does. \
             Deliveries wait; nothing is lost.</p></main>",
            header_bar(csrf)
        ),
    )
}

fn state_badge(state: &str) -> String {
    let label = match state {
        "circuit_open" => "circuit open",
        other => other,
    };
    format!(
        "<span class=\"badge state-{}\">{}</span>",
        esc(state),
        esc(label)
    )
}

fn sink_row(s: &SinkSummary, csrf: &str, now: i64) -> String {
    let name = seg(&s.name);
    let toggle = if s.state == "paused" {
        button(
            &format!("/ui/sinks/{name}/resume"),
            csrf,
            "/",
            "Resume",
            "secondary",
            None,
        )
    } else {
        button(
            &format!("/ui/sinks/{name}/pause"),
            csrf,
            "/",
            "Pause",
            "secondary",
            None,
        )
    };
    let replay = if s.dead > 0 {
        button(
            &format!("/ui/sinks/{name}/replay"),
            csrf,
            "/",
            &format!("Replay {} dead", s.dead),
            "primary replay",
            Some(&format!(
                "Requeue all {} dead deliveries of {} with fresh attempts?",
                s.dead, s.name
            )),
        )
    } else {
        String::new()
    };
    let in_flight = if s.overdue_in_flight > 0 {
        format!(
            " <span class=\"error-text\" title=\"in flight long past their lease: a relay died or hangs; they are taken back by the next claim\">({} sending, {} overdue)</span>",
            s.in_flight, s.overdue_in_flight
        )
    } else if s.in_flight > 0 {
        format!(" <span class=\"muted\">({} sending)</span>", s.in_flight)
    } else {
        String::new()
    };
    let last_ok = match &s.last_success_at {
        Some(t) => format!(
            "<span title=\"{}\">{}</span>",
            esc(t),
            esc(&ago(s.last_success_ms, now))
        ),
        None => "<span class=\"muted\">never</span>".into(),
    };
    let last_error = match &s.last_error {
        Some(e) => format!(
            "<span class=\"error-text\" title=\"{0}\">{0}</span>",
            esc(e)
        ),
        None => "<span class=\"muted\">–</span>".into(),
    };
    format!(
        "<tr data-sink=\"{}\"><th scope=\"row\">{}</th><td>{}</td><td class=\"state\">{}</td>\
         <td class=\"num pending\">{}{in_flight}</td><td class=\"num dead{}\">{}</td><td class=\"num last-hour\">{}</td>\
         <td>{last_ok}</td><td class=\"clip\">{last_error}</td><td class=\"actions\">{toggle}{replay}</td></tr>",
        esc(&s.name),
        esc(&s.name),
        esc(&s.kind),
        state_badge(&s.state),
        s.queued(),
        if s.dead > 0 { " bad" } else { "" },
        s.dead,
        s.delivered_last_hour
    )
}

fn dead_row(d: &DeliveryRow, csrf: &str) -> String {
    let status = d
        .last_status
        .map(|s| s.to_string())
        .unwrap_or_else(|| "–".into());
    format!(
        "<tr data-delivery=\"{}\"><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
         <td class=\"clip\"><span class=\"error-text\" title=\"{err}\">{err}</span></td>\
         <td><a href=\"/messages/{}\">message</a></td><td class=\"actions\">{}</td></tr>",
        esc(&d.id),
        time(&d.updated_at),
        esc(&d.sink),
        d.attempts,
        esc(&status),
        seg(&d.message_id),
        button(&format!("/ui/deliveries/{}/retry", seg(&d.id)), csrf, "/", "Retry", "secondary", None),
        err = esc(d.last_error.as_deref().unwrap_or("")),
    )
}

async fn index(
    State(st): State<Arc<AdminState>>,
    headers: HeaderMap,
    q: Result<Query<Notice>, QueryRejection>,
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
    let notice = q.map(|Query(n)| notice_html(&st, &n)).unwrap_or_default();
    let (queued, dead_total): (u64, u64) = sinks
        .iter()
        .fold((0, 0), |(q, d), s| (q + s.queued(), d + s.dead));
    let sink_rows: String = sinks.iter().map(|s| sink_row(s, &sess.csrf, now)).collect();
    let sink_rows = if sink_rows.is_empty() {
        "<tr><td colspan=\"9\" class=\"muted\">No sinks are configured.</td></tr>".to_string()
    } else {
        sink_rows
    };
    let dead_rows: String = dead.iter().map(|d| dead_row(d, &sess.csrf)).collect();
    let dead_section = if dead.is_empty() {
        "<p class=\"muted empty\">No dead deliveries. Everything that failed was delivered in the end.</p>".to_string()
    } else {
        format!(
            "<table id=\"dead\"><thead><tr><th>Died</th><th>Sink</th><th class=\"num\">Attempts</th>\
             <th class=\"num\">Last status</th><th>Error</th><th>Message</th><th></th></tr></thead><tbody>{dead_rows}</tbody></table>"
        )
    };
    let body = format!(
        "{bar}<main>{notice}\
         <section class=\"summary\"><div><span class=\"big\">{queued}</span> waiting</div>\
         <div><span class=\"big{bad}\">{dead_total}</span> dead</div>\
         <div class=\"muted\">as of {at}</div></section>\
         <section><h2>Sinks</h2><div class=\"scroll\"><table id=\"sinks\"><thead><tr><th>Sink</th><th>Kind</th><th>State</th>\
         <th class=\"num\">Pending</th><th class=\"num\">Dead</th><th class=\"num\">Delivered 1 h</th><th>Last success</th>\
         <th>Last error</th><th></th></tr></thead><tbody>{sink_rows}</tbody></table></div></section>\
         <section><h2>Recent dead deliveries</h2><div class=\"scroll\">{dead_section}</div>\
         <p class=\"muted\">Newest {DEAD_SHOWN} shown. Replay or retry gives a delivery fresh attempts; its history stays.</p></section>\
         </main>",
        bar = header_bar(&sess.csrf),
        bad = if dead_total > 0 { " bad" } else { "" },
        at = time(&rfc3339(now)),
    );
    page(StatusCode::OK, "Status", &body)
}

fn event_rows(m: &MessageDetail) -> String {
    m.events
        .iter()
        .map(|e| {
            let link = e
                .link()
                .as_deref()
                .and_then(safe_href)
                .map(|h| {
                    format!(
                        "<a href=\"{h}\" rel=\"noreferrer noopener\" target=\"_blank\">open</a>"
                    )
                })
                .unwrap_or_default();
            format!(
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{link}</td></tr>",
                esc(&e.uri),
                esc(&e.operation),
                esc(e.username.as_deref().unwrap_or("")),
                e.when.map(|w| time(&rfc3339(w))).unwrap_or_default(),
            )
        })
        .collect()
}

fn delivery_section(d: &crate::store::DeliveryDetail, csrf: &str, back: &str) -> String {
    let r = &d.delivery;
    let attempts: String = d
        .attempts_log
        .iter()
        .map(|a| {
            let response = a
                .response
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(|s| format!("<details><summary>answer</summary><pre>{}</pre></details>", esc(s)))
                .unwrap_or_default();
            format!(
                "<tr><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{} ms</td><td class=\"num\">{}</td>\
                 <td class=\"error-text\">{}</td><td>{response}</td></tr>",
                a.attempt,
                time(&rfc3339(a.started_at)),
                a.duration_ms,
                a.status.map(|s| s.to_string()).unwrap_or_else(|| "–".into()),
                esc(a.error.as_deref().unwrap_or("")),
            )
        })
        .collect();
    let attempts = if attempts.is_empty() {
        "<p class=\"muted\">No attempt yet.</p>".to_string()
    } else {
        format!(
            "<table class=\"attempts\"><thead><tr><th class=\"num\">#</th><th>Started</th><th class=\"num\">Took</th>\
             <th class=\"num\">Status</th><th>Error</th><th></th></tr></thead><tbody>{attempts}</tbody></table>"
        )
    };
    let retry = if r.status == Status::InFlight {
        String::new()
    } else {
        button(
            &format!("/ui/deliveries/{}/retry", seg(&r.id)),
            csrf,
            back,
            "Retry",
            "secondary",
            None,
        )
    };
    let next = r
        .next_attempt_at
        .as_deref()
        .filter(|_| matches!(r.status, Status::Pending | Status::InFlight))
        .map(|t| format!(" · next attempt {}", time(t)))
        .unwrap_or_default();
    format!(
        "<section class=\"delivery\" data-delivery=\"{}\" data-sink=\"{}\"><h3>{} {}</h3>\
         <p class=\"muted\">delivery <code>{}</code> · {} {} this cycle{next}</p>{retry}{attempts}</section>",
        esc(&r.id),
        esc(&r.sink),
        esc(&r.sink),
        state_badge(r.status.as_str()),
        esc(&r.id),
        r.attempts,
        plural(u64::from(r.attempts), "attempt", "attempts"),
    )
}

async fn message_page(
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
    let m = match st.store.message(&id).await {
        Ok(Some(m)) => m,
        Ok(None) => {
            return page(
                StatusCode::NOT_FOUND,
                "Not found",
                &format!(
                    "{}<main><h1>No such message</h1><p>Message <code>{}</code> does not exist or was purged by retention.</p>\
                     <p><a href=\"/\">Back</a></p></main>",
                    header_bar(&sess.csrf),
                    esc(&id)
                ),
            )
        }
        Err(e) => return store_trouble(&sess.csrf, &e.into()),
    };
    let back = local_target(Some(&back)).to_string();
    let headers_json = serde_json::to_string_pretty(&m.headers).unwrap_or_default();
    let body = match &m.body {
        Some(b) if b.len() > BODY_SHOWN => {
            let mut cut = BODY_SHOWN;
            while !b.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}\n… ({} bytes in all)", &b[..cut], m.body_bytes)
        }
        Some(b) => b.clone(),
        None => format!("({} bytes, not UTF-8)", m.body_bytes),
    };
    let deliveries: String = m
        .deliveries
        .iter()
        .map(|d| delivery_section(d, &sess.csrf, &back))
        .collect();
    let html = format!(
        "{bar}<main><p><a href=\"/\">← status</a></p><h1>Message <code>{id}</code></h1>\
         <dl class=\"meta\"><dt>Source</dt><dd>{source}</dd><dt>Received</dt><dd>{received}</dd>\
         <dt>Content type</dt><dd><code>{ct}</code></dd><dt>Size</dt><dd>{size} bytes</dd></dl>\
         <section><h2>Events</h2><table class=\"events\"><thead><tr><th>Trigger</th><th>Operation</th><th>User</th>\
         <th>When</th><th></th></tr></thead><tbody>{events}</tbody></table></section>\
         <section><h2>Deliveries</h2>{deliveries}</section>\
         <section><h2>Request</h2><details><summary>headers</summary><pre>{hdrs}</pre></details>\
         <details><summary>body</summary><pre>{body}</pre></details></section></main>",
        bar = header_bar(&sess.csrf),
        id = esc(&m.id),
        source = esc(&m.source),
        received = time(&m.received_at),
        ct = esc(&m.content_type),
        size = m.body_bytes,
        events = event_rows(&m),
        hdrs = esc(&headers_json),
        body = esc(&body),
    );
    page(StatusCode::OK, "Message", &html)
}

async fn ui_retry(
    State(st): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let f = form(&body);
    if let Err(r) = guard(&st, &headers, &f).await {
        return r;
    }
    let back = local_target(f.get("back").map(String::as_str));
    match api::retry(&st, &id).await {
        Ok(_) => see_other(&with_notice(
            back,
            &format!("notice=retried&id={}", seg(&id)),
        )),
        Err(e) => failed(back, &e),
    }
}

async fn ui_replay(
    State(st): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let f = form(&body);
    if let Err(r) = guard(&st, &headers, &f).await {
        return r;
    }
    let back = local_target(f.get("back").map(String::as_str));
    if st.sinks.get(&name).is_none() {
        return failed(
            back,
            &AdminError::NotFound(format!("no sink named {name:?}")),
        );
    }
    let filter = match api::replay_filter(
        &st.config,
        Some("dead"),
        Some(name.clone()),
        None,
        None,
        None,
        None,
        false,
    ) {
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

async fn toggle(
    st: &AdminState,
    headers: &HeaderMap,
    name: &str,
    body: &[u8],
    paused: bool,
) -> Response {
    let f = form(body);
    if let Err(r) = guard(st, headers, &f).await {
        return r;
    }
    let back = local_target(f.get("back").map(String::as_str));
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

async fn ui_pause(
    State(st): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    toggle(&st, &headers, &name, &body, true).await
}

async fn ui_resume(
    State(st): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    toggle(&st, &headers, &name, &body, false).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_targets() {
        assert_eq!(local_target(None), "/");
        assert_eq!(local_target(Some("/")), "/");
        assert_eq!(
            local_target(Some("/messages/0190-ab_c")),
            "/messages/0190-ab_c"
        );
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/messages/",
            "/messages/a/../../x",
            "/api/v1/replay",
            "/messages/a?b",
        ] {
            assert_eq!(local_target(Some(bad)), "/", "{bad}");
        }
    }

    #[test]
    fn buttons_escape_their_confirm_text() {
        let b = button(
            "/ui/sinks/a/replay",
            "t",
            "/",
            "Replay",
            "primary",
            Some("Requeue \"<a>\"?"),
        );
        assert!(b.contains("data-confirm=\"Requeue &quot;&lt;a&gt;&quot;?\""));
        assert!(b.contains("name=\"csrf\" value=\"t\""));
    }
}
