//! The status page over plain HTTP (the browser test drives the same pages
//! in Chromium): login and its cookie, cross-site request refusal, the
//! page's actions, escaping of everything that came from outside, and the
//! message page.

mod common;

use std::time::Duration;

use common::*;
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

/// Logs in through the form; returns the `name=value` cookie pair.
async fn login(app: &TestApp) -> String {
    let r = browser()
        .post(format!("{}/login", app.admin))
        .form(&[("token", ADMIN_TOKEN), ("next", "/")])
        .header("origin", &app.admin)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/");
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set.contains(attr), "{attr} missing from {set}");
    }
    assert!(
        !set.contains(ADMIN_TOKEN),
        "the cookie must not be the token"
    );
    set.split(';').next().unwrap().to_string()
}

async fn get_page(app: &TestApp, path: &str, cookie: &str) -> (u16, String) {
    let r = browser()
        .get(format!("{}{path}", app.admin))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    if status == 200 {
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert_eq!(r.headers()["x-frame-options"], "DENY");
        assert_eq!(r.headers()["cache-control"], "no-store");
    }
    (status, r.text().await.unwrap())
}

/// The CSRF token the page's forms carry.
fn csrf(html: &str) -> String {
    let key = "name=\"csrf\" value=\"";
    let i = html.find(key).expect("a form with a CSRF token") + key.len();
    html[i..i + html[i..].find('"').unwrap()].to_string()
}

/// Posts a page form the way a same-origin browser does, plus `extra` headers.
async fn post_form(
    app: &TestApp,
    path: &str,
    cookie: &str,
    form: &[(&str, &str)],
    extra: &[(&str, &str)],
) -> Response {
    let mut req = browser()
        .post(format!("{}{path}", app.admin))
        .header("cookie", cookie)
        .form(form);
    let mut has_origin = false;
    for (k, v) in extra {
        has_origin |= *k == "origin";
        req = req.header(*k, *v);
    }
    if !has_origin {
        req = req.header("origin", &app.admin);
    }
    req.send().await.unwrap()
}

async fn sink_state(app: &TestApp) -> String {
    let v: Value = app.admin_get("/api/v1/sinks").await.json().await.unwrap();
    v["items"][0]["state"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_cookie_and_cross_site_protection() {
    let b = Backend::new(Kind::Sqlite).await.unwrap();
    let sink = TestSink::start().await;
    let app = spawn_app(b, &http_sink("out", &sink, "")).await;

    // Not logged in: the page sends the browser to the login form.
    let r = browser()
        .get(format!("{}/", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/login");
    let (status, html) = get_page(&app, "/login", "").await;
    assert_eq!(status, 200);
    assert!(html.contains("name=\"token\"") && html.contains("type=\"password\""));

    // A wrong token: 401, no cookie.
    let r = browser()
        .post(format!("{}/login", app.admin))
        .form(&[("token", "guess")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    assert!(r.text().await.unwrap().contains("not right"));
    // Login CSRF: another site cannot log a browser in.
    let r = browser()
        .post(format!("{}/login", app.admin))
        .form(&[("token", ADMIN_TOKEN)])
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("set-cookie").is_none());
    // `next` only ever leads back into the page.
    let r = browser()
        .post(format!("{}/login", app.admin))
        .form(&[("token", ADMIN_TOKEN), ("next", "//evil.example/")])
        .send()
        .await
        .unwrap();
    assert_eq!(location(&r), "/");

    let cookie = login(&app).await;
    let (status, html) = get_page(&app, "/", &cookie).await;
    assert_eq!(status, 200);
    assert!(html.contains("data-sink=\"out\""));
    assert!(
        !html.contains(ADMIN_TOKEN),
        "the token never appears in the page"
    );
    let token = csrf(&html);
    // The cookie opens the page but not the JSON API (that takes the bearer token).
    let r = app
        .client
        .get(format!("{}/api/v1/sinks", app.admin))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Forged or cross-site actions change nothing.
    let pause = "/ui/sinks/out/pause";
    type Pairs<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(&str, Pairs, Pairs)> = vec![
        ("no CSRF token", vec![], vec![]),
        ("wrong CSRF token", vec![("csrf", "forged")], vec![]),
        (
            "cross-site fetch",
            vec![("csrf", &token)],
            vec![("sec-fetch-site", "cross-site")],
        ),
        (
            "same-site, other origin",
            vec![("csrf", &token)],
            vec![("sec-fetch-site", "same-site")],
        ),
        (
            "foreign Origin",
            vec![("csrf", &token)],
            vec![("origin", "http://evil.example")],
        ),
        (
            "null Origin",
            vec![("csrf", &token)],
            vec![("origin", "null")],
        ),
    ];
    for (what, form, headers) in cases {
        let r = post_form(&app, pause, &cookie, &form, &headers).await;
        assert_eq!(r.status(), 403, "{what}");
        assert_eq!(sink_state(&app).await, "active", "{what} paused the sink");
    }
    // No session at all: back to the login form.
    let r = post_form(&app, pause, "", &[("csrf", &token)], &[]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/login");
    let r = post_form(
        &app,
        pause,
        "hookrelay_session=v1.99999999999.AAAA",
        &[("csrf", &token)],
        &[],
    )
    .await;
    assert_eq!(location(&r), "/login");
    assert_eq!(sink_state(&app).await, "active");

    // The real thing works, and says so.
    let r = post_form(
        &app,
        pause,
        &cookie,
        &[("csrf", &token), ("back", "/")],
        &[("sec-fetch-site", "same-origin")],
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/?notice=paused&sink=out");
    assert_eq!(sink_state(&app).await, "paused");
    let (_, html) = get_page(&app, "/?notice=paused&sink=out", &cookie).await;
    assert!(html.contains("out is paused"));
    assert!(html.contains("state-paused"));
    assert!(html.contains("/ui/sinks/out/resume"));
    let r = post_form(
        &app,
        "/ui/sinks/out/resume",
        &cookie,
        &[("csrf", &token)],
        &[],
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(sink_state(&app).await, "active");
    // Unknown sink: a notice, not an error page.
    let r = post_form(
        &app,
        "/ui/sinks/nope/pause",
        &cookie,
        &[("csrf", &token)],
        &[],
    )
    .await;
    assert_eq!(location(&r), "/?notice=gone");

    // Logging out ends the session in the browser.
    let r = post_form(&app, "/logout", &cookie, &[("csrf", &token)], &[]).await;
    assert_eq!(r.status(), 303);
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));

    // Assets are served from the binary.
    for (path, ct) in [
        ("/static/status.css", "text/css"),
        ("/static/status.js", "text/javascript"),
    ] {
        let r = browser()
            .get(format!("{}{path}", app.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(ct));
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_actions_retry_and_replay_dead_deliveries() {
    let b = Backend::new(Kind::Sqlite).await.unwrap();
    let sink = TestSink::start().await;
    sink.script([
        Reply::Body(410, "gone".into()),
        Reply::Body(410, "gone".into()),
    ]);
    let app = spawn_app(b, &http_sink("out", &sink, "")).await;
    app.post_portal(&fixture("portal-item-share.json")).await;
    app.post_portal(&fixture("portal-user-role.json")).await;
    eventually(Duration::from_secs(10), "2 dead", || async {
        app.deliveries("status=dead").await.len() == 2
    })
    .await;

    let cookie = login(&app).await;
    let (_, html) = get_page(&app, "/", &cookie).await;
    let dead = app.deliveries("status=dead").await;
    for d in &dead {
        assert!(html.contains(&format!("data-delivery=\"{}\"", d["id"].as_str().unwrap())));
        assert!(html.contains(&format!("/messages/{}", d["message_id"].as_str().unwrap())));
    }
    assert!(html.contains("HTTP 410"));
    assert!(html.contains("Replay 2 dead"));
    let token = csrf(&html);

    // Retry one.
    let id = dead[0]["id"].as_str().unwrap();
    let r = post_form(
        &app,
        &format!("/ui/deliveries/{id}/retry"),
        &cookie,
        &[("csrf", &token), ("back", "/")],
        &[],
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), format!("/?notice=retried&id={id}"));
    eventually(
        Duration::from_secs(10),
        "retried delivery delivered",
        || async { app.deliveries("status=delivered").await.len() == 1 },
    )
    .await;

    // Replay the sink's dead letters.
    let r = post_form(
        &app,
        "/ui/sinks/out/replay",
        &cookie,
        &[("csrf", &token), ("back", "/")],
        &[],
    )
    .await;
    assert_eq!(location(&r), "/?notice=replayed&sink=out&n=1");
    eventually(Duration::from_secs(10), "everything delivered", || async {
        app.deliveries("status=delivered").await.len() == 2
    })
    .await;
    let (_, html) = get_page(&app, "/?notice=replayed&sink=out&n=1", &cookie).await;
    assert!(html.contains("Requeued 1 dead delivery of out."));
    assert!(html.contains("No dead deliveries"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_page_shows_every_attempt_and_escapes_what_came_from_outside() {
    let b = Backend::new(Kind::Sqlite).await.unwrap();
    let sink = TestSink::start().await;
    sink.script([Reply::Body(500, "<script>alert('sink')</script>".into())]);
    let app = spawn_app(b, &http_sink("out", &sink, "")).await;
    // A payload whose fields try to inject markup and a script link.
    let mut v: Value = serde_json::from_slice(&fixture("portal-item-share.json")).unwrap();
    v["info"]["portalURL"] = "javascript:alert('portal')//".into();
    v["events"][0]["username"] = "<img src=x onerror=alert('user')>".into();
    let r: Value = app
        .post_portal(v.to_string().as_bytes())
        .await
        .json()
        .await
        .unwrap();
    let mid = r["message_id"].as_str().unwrap().to_string();
    eventually(
        Duration::from_secs(10),
        "delivered on the second attempt",
        || async { app.deliveries("status=delivered").await.len() == 1 },
    )
    .await;

    // Not logged in: login first, then straight back to the message.
    let r = browser()
        .get(format!("{}/messages/{mid}", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), format!("/login?next=%2Fmessages%2F{mid}"));

    let cookie = login(&app).await;
    let (status, html) = get_page(&app, &format!("/messages/{mid}"), &cookie).await;
    assert_eq!(status, 200);
    assert!(html.contains(&mid));
    assert!(html.contains("/items/6cd80cb32d4a4b4d858a020e57fba7b1/share"));
    assert!(html.contains("HTTP 500"));
    assert!(
        html.contains("&lt;script&gt;alert(&#39;sink&#39;)&lt;/script&gt;"),
        "the sink's answer, escaped"
    );
    assert!(
        html.contains("&lt;img src=x onerror=alert(&#39;user&#39;)&gt;"),
        "the username, escaped"
    );
    assert!(!html.contains("<script>alert"), "raw markup from outside");
    assert!(!html.contains("<img src=x"), "raw markup from outside");
    assert!(
        !html.to_lowercase().contains("href=\"javascript:"),
        "a script link"
    );
    assert_eq!(html.matches("class=\"attempts\"").count(), 1);
    assert_eq!(
        html.matches("<tr><td class=\"num\">").count(),
        2,
        "two attempts listed"
    );

    let (status, html) = get_page(&app, "/messages/no-such-message", &cookie).await;
    assert_eq!(status, 404);
    assert!(html.contains("No such message"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_configured_token_the_page_stays_closed() {
    let b = Backend::new(Kind::Sqlite).await.unwrap();
    let text = config_text(&b.url, "").replace(&format!("token = \"{ADMIN_TOKEN}\""), "");
    let app = spawn_app_text(b, &text, test_options()).await;
    let (status, html) = get_page(&app, "/login", "").await;
    assert_eq!(status, 200);
    assert!(html.contains("no <code>[admin] token</code> configured"));
    let r = browser()
        .post(format!("{}/login", app.admin))
        .form(&[("token", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("set-cookie").is_none());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_show_only_ids_sink_names_and_numbers() {
    let b = Backend::new(Kind::Sqlite).await.unwrap();
    let sink = TestSink::start().await;
    let app = spawn_app(b, &http_sink("out", &sink, "")).await;
    let cookie = login(&app).await;

    // Text in `id` is never shown, escaped or not.
    let (status, html) = get_page(
        &app,
        "/?notice=retried&id=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        &cookie,
    )
    .await;
    assert_eq!(status, 200);
    assert!(html.contains("is queued again"), "the notice itself stays");
    for shown in ["<script>alert(1)", "&lt;script&gt;", "alert(1)"] {
        assert!(!html.contains(shown), "{shown} in the page");
    }
    for (query, injected) in [
        ("notice=retried&id=call+0800+now", "0800"),
        (
            "notice=retried&id=0190f3a2-7b1c-7d3e-9f00-1234567890ab-x",
            "1234567890ab",
        ),
        (
            "notice=paused&sink=Send+your+token+to+evil.example",
            "evil.example",
        ),
        ("notice=replayed&sink=out&n=all+of+them", "all of them"),
    ] {
        let (status, html) = get_page(&app, &format!("/?{query}"), &cookie).await;
        assert_eq!(status, 200);
        assert!(html.contains("class=\"notice"), "{query}: the notice stays");
        assert!(!html.contains(injected), "{query}: {injected} shown");
    }
    // Valid values still show.
    let id = "0190f3a2-7b1c-7d3e-9f00-1234567890ab";
    let (_, html) = get_page(&app, &format!("/?notice=retried&id={id}"), &cookie).await;
    assert!(
        html.contains(&format!("Delivery {id} is queued again.")),
        "{html}"
    );
    let (_, html) = get_page(&app, "/?notice=replayed&sink=out&n=3", &cookie).await;
    assert!(html.contains("Requeued 3 dead deliveries of out."));
    app.stop().await;
}

both_stores!(every_action_refuses_a_missing_token_and_a_foreign_origin);

/// Every action of the page goes through the same checks (one extractor,
/// `CsrfForm`): without the session's CSRF token, with a foreign `Origin`
/// or with two tokens it is refused and changes nothing; a form that does
/// not decode is a 400 that names the field.
async fn every_action_refuses_a_missing_token_and_a_foreign_origin(b: Backend) {
    let sink = TestSink::start().await;
    sink.script([Reply::Body(410, "gone".into())]);
    let app = spawn_app(b, &http_sink("out", &sink, "")).await;
    app.post_portal(&fixture("portal-item-share.json")).await;
    eventually(Duration::from_secs(10), "1 dead", || async {
        app.deliveries("status=dead").await.len() == 1
    })
    .await;
    let id = app.deliveries("status=dead").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let cookie = login(&app).await;
    let (_, html) = get_page(&app, "/", &cookie).await;
    let token = csrf(&html);

    let actions = [
        format!("/ui/deliveries/{id}/retry"),
        "/ui/sinks/out/replay".to_string(),
        "/ui/sinks/out/pause".to_string(),
        "/ui/sinks/out/resume".to_string(),
        "/logout".to_string(),
    ];
    type Pairs<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(&str, Pairs, Pairs)> = vec![
        ("no CSRF token", vec![("back", "/")], vec![]),
        (
            "foreign Origin",
            vec![("csrf", &token), ("back", "/")],
            vec![("origin", "http://evil.example")],
        ),
        (
            "two CSRF tokens",
            vec![("csrf", &token), ("csrf", &token)],
            vec![],
        ),
    ];
    for path in &actions {
        for (what, form, headers) in &cases {
            let r = post_form(&app, path, &cookie, form, headers).await;
            assert_eq!(r.status(), 403, "{path}: {what}");
            assert!(r.headers().get("set-cookie").is_none(), "{path}: {what}");
            assert!(
                r.text().await.unwrap().contains("Refused"),
                "{path}: {what}"
            );
        }
        // A field given twice does not decode: 400, naming it.
        let r = post_form(
            &app,
            path,
            &cookie,
            &[("csrf", &token), ("back", "/"), ("back", "/x")],
            &[],
        )
        .await;
        assert_eq!(r.status(), 400, "{path}");
        assert!(r.text().await.unwrap().contains("`back`"), "{path}");
    }
    // Nothing happened: still dead, still active, still logged in.
    assert_eq!(app.deliveries("status=dead").await.len(), 1);
    assert_eq!(sink_state(&app).await, "active");
    let (status, _) = get_page(&app, "/", &cookie).await;
    assert_eq!(status, 200, "the session survived every refused logout");
    app.stop().await;
}
