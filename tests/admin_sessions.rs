//! Status page sessions live in the store: logging out, expiry and a token
//! rotation end them on the server (a copied cookie stops working), and a
//! logout through one relay ends the session on every relay sharing the
//! database.

mod common;

use common::*;
use hookrelay::store::now_ms;
use reqwest::redirect::Policy;
use reqwest::Response;
use serde_json::Value;

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

fn location(r: &Response) -> String {
    r.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Logs in on the relay at `admin` with `token`; returns the `name=value` cookie pair.
async fn login_at(admin: &str, token: &str) -> String {
    let r = browser()
        .post(format!("{admin}/login"))
        .form(&[("token", token), ("next", "/")])
        .header("origin", admin)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "login on {admin}");
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set.contains(attr), "{attr} missing from {set}");
    }
    set.split(';').next().unwrap().to_string()
}

/// `GET path` with the cookie: (status, location, body).
async fn get_with(admin: &str, path: &str, cookie: &str) -> (u16, String, String) {
    let r = browser()
        .get(format!("{admin}{path}"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let loc = location(&r);
    (status, loc, r.text().await.unwrap())
}

/// The page opens with this cookie; returns the CSRF token its forms carry.
async fn page_opens(admin: &str, cookie: &str) -> String {
    let (status, loc, html) = get_with(admin, "/", cookie).await;
    assert_eq!(status, 200, "the page should open (went to {loc:?})");
    let key = "name=\"csrf\" value=\"";
    let i = html.find(key).expect("a form with a CSRF token") + key.len();
    html[i..i + html[i..].find('"').unwrap()].to_string()
}

/// The cookie is refused: the page sends the browser to the login form.
async fn refused(admin: &str, cookie: &str, what: &str) {
    let (status, loc, _) = get_with(admin, "/", cookie).await;
    assert_eq!((status, loc.as_str()), (303, "/login"), "{what}");
}

async fn post_with(admin: &str, path: &str, cookie: &str, form: &[(&str, &str)]) -> Response {
    browser()
        .post(format!("{admin}{path}"))
        .header("cookie", cookie)
        .header("origin", admin)
        .header("sec-fetch-site", "same-origin")
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn logout(admin: &str, cookie: &str, csrf: &str) {
    let r = post_with(admin, "/logout", cookie, &[("csrf", csrf)]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/login");
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
}

async fn sink_state(app: &TestApp) -> String {
    let v: Value = app.admin_get("/api/v1/sinks").await.json().await.unwrap();
    v["items"][0]["state"].as_str().unwrap().to_string()
}

both_stores!(
    logout_ends_the_session_on_the_server,
    an_expired_session_row_is_refused_and_removed,
    rotating_the_token_ends_every_session,
    a_store_error_on_the_session_check_answers_503,
);

/// A copy of the cookie kept from before the logout (a second tab, another
/// machine, a leaked header) no longer opens the page or runs an action.
async fn logout_ends_the_session_on_the_server(b: Backend) {
    let sink = TestSink::start().await;
    let app = spawn_app(b, &http_sink("out", &sink, "")).await;
    let cookie = login_at(&app.admin, ADMIN_TOKEN).await;
    let csrf = page_opens(&app.admin, &cookie).await;
    // A second login is a session of its own and outlives the first's logout.
    let other = login_at(&app.admin, ADMIN_TOKEN).await;

    logout(&app.admin, &cookie, &csrf).await;
    refused(
        &app.admin,
        &cookie,
        "the same cookie sent again after logout",
    )
    .await;
    let (status, loc, _) = get_with(&app.admin, "/messages/x", &cookie).await;
    assert_eq!(status, 303);
    assert!(loc.starts_with("/login"), "{loc}");
    // Nor does an action with the old cookie and its CSRF token go through.
    let r = post_with(
        &app.admin,
        "/ui/sinks/out/pause",
        &cookie,
        &[("csrf", &csrf), ("back", "/")],
    )
    .await;
    assert_eq!(
        (r.status().as_u16(), location(&r).as_str()),
        (303, "/login")
    );
    assert_eq!(sink_state(&app).await, "active");
    // A second logout with the dead cookie just goes to the login form.
    let r = post_with(&app.admin, "/logout", &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(location(&r), "/login");

    page_opens(&app.admin, &other).await;
    assert_ne!(cookie, other, "every login is a session of its own");
    app.stop().await;
}

/// Expiry is the row's, checked on every request: a cookie whose row has
/// expired is refused even though the browser still sends it.
async fn an_expired_session_row_is_refused_and_removed(b: Backend) {
    let app = spawn_app(b, "").await;
    let cookie = login_at(&app.admin, ADMIN_TOKEN).await;
    let kept = login_at(&app.admin, ADMIN_TOKEN).await;
    page_opens(&app.admin, &cookie).await;
    assert_eq!(count_rows(&app.backend, "admin_sessions").await, 2);
    exec_sql(
        &app.backend,
        &format!(
            "UPDATE admin_sessions SET expires_at = {} WHERE expires_at IN \
             (SELECT MIN(expires_at) FROM admin_sessions)",
            now_ms() - 1
        ),
    )
    .await;
    refused(&app.admin, &cookie, "a session whose row has expired").await;
    page_opens(&app.admin, &kept).await;
    // The expired row was removed when it was found expired; the
    // retention purge removes the ones nobody presents again.
    assert_eq!(count_rows(&app.backend, "admin_sessions").await, 1);
    exec_sql(
        &app.backend,
        &format!("UPDATE admin_sessions SET expires_at = {}", now_ms() - 1),
    )
    .await;
    let store = app.relay().store.clone();
    assert_eq!(store.purge_admin_sessions(now_ms()).await.unwrap(), 1);
    assert_eq!(count_rows(&app.backend, "admin_sessions").await, 0);
    refused(&app.admin, &kept, "purged").await;
    app.stop().await;
}

/// A new admin token logs every browser out, even though the rows are still
/// in the store: each session remembers which token it was opened with.
async fn rotating_the_token_ends_every_session(b: Backend) {
    let app = spawn_app(b, "").await;
    let cookie = login_at(&app.admin, ADMIN_TOKEN).await;
    page_opens(&app.admin, &cookie).await;
    let b = app.stop().await;

    let new_token = "rotated-admin-token";
    let text = config_text(&b.url, "").replace(
        &format!("token = \"{ADMIN_TOKEN}\""),
        &format!("token = \"{new_token}\""),
    );
    assert!(text.contains(new_token));
    let app = spawn_app_text(b, &text, test_options()).await;
    refused(&app.admin, &cookie, "a session of the previous token").await;
    assert_eq!(
        count_rows(&app.backend, "admin_sessions").await,
        0,
        "a session of another token is deleted when presented"
    );
    let fresh = login_at(&app.admin, new_token).await;
    page_opens(&app.admin, &fresh).await;
    app.stop().await;
}

/// The session check reads the store; when the store fails the page says
/// so with a 503 (and the relay stays up), it does not log the browser out.
async fn a_store_error_on_the_session_check_answers_503(b: Backend) {
    let app = spawn_app(b, "").await;
    let cookie = login_at(&app.admin, ADMIN_TOKEN).await;
    page_opens(&app.admin, &cookie).await;
    exec_sql(&app.backend, "DROP TABLE admin_sessions").await;
    let (status, _, html) = get_with(&app.admin, "/", &cookie).await;
    assert_eq!(status, 503, "{html}");
    assert!(html.contains("store did not answer"), "{html}");
    let r = post_with(&app.admin, "/ui/sinks/out/pause", &cookie, &[("csrf", "x")]).await;
    assert_eq!(r.status(), 503);
    let r = browser()
        .post(format!("{}/login", app.admin))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("set-cookie").is_none());
    // The relay itself still answers.
    assert_eq!(app.admin_get("/healthz").await.status(), 200);
    app.stop().await;
}

/// Two relays on one Postgres database: a session opened through one works
/// on the other, and a logout through either ends it on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_through_one_relay_ends_the_session_on_the_other() {
    let Some(b) = Backend::new(Kind::Postgres).await else {
        return;
    };
    let second = Backend {
        kind: Kind::Postgres,
        url: b.url.clone(),
        dir: tempfile::tempdir().unwrap(),
    };
    let a = spawn_app(b, "").await;
    let b = spawn_app(second, "").await;
    assert_ne!(a.admin, b.admin);

    let cookie = login_at(&a.admin, ADMIN_TOKEN).await;
    page_opens(&a.admin, &cookie).await;
    page_opens(&b.admin, &cookie).await;
    logout(&a.admin, &cookie, &page_opens(&a.admin, &cookie).await).await;
    refused(&b.admin, &cookie, "relay B after the logout on relay A").await;
    refused(&a.admin, &cookie, "relay A after its own logout").await;

    // And the other way round: out through B ends it on A.
    let cookie = login_at(&a.admin, ADMIN_TOKEN).await;
    let csrf = page_opens(&b.admin, &cookie).await;
    logout(&b.admin, &cookie, &csrf).await;
    refused(&a.admin, &cookie, "relay A after the logout on relay B").await;
    b.stop().await;
    a.stop().await;
}
