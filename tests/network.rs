//! The per-source IP allow-list and `trusted_proxies`: which address ingress
//! believes is the client, and that a source with `allow_ips` answers 403 to
//! everyone else — over real HTTP from 127.0.0.1, where `X-Forwarded-For`
//! is honoured only when 127.0.0.1 is a trusted proxy.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::*;
use hookrelay::ingress::client_ip;
use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use serde_json::Value;

fn xff(values: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in values {
        h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
    }
    h
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|n| n.parse().unwrap()).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn peer(s: &str) -> SocketAddr {
    SocketAddr::new(ip(s), 40000)
}

#[test]
fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let trusted = nets(&["10.0.0.0/8"]);
    // Direct client: its header is its own invention.
    assert_eq!(
        client_ip(peer("198.51.100.9"), &xff(&["192.0.2.1"]), &trusted),
        ip("198.51.100.9")
    );
    // Through the proxy: the right-most untrusted hop.
    assert_eq!(
        client_ip(peer("10.0.0.5"), &xff(&["192.0.2.1"]), &trusted),
        ip("192.0.2.1")
    );
    // A forged entry left of the real one is ignored.
    assert_eq!(
        client_ip(
            peer("10.0.0.5"),
            &xff(&["192.0.2.1, 198.51.100.7"]),
            &trusted
        ),
        ip("198.51.100.7")
    );
    // Chains of trusted proxies are walked through.
    assert_eq!(
        client_ip(
            peer("10.0.0.5"),
            &xff(&["198.51.100.7, 10.1.1.1, 10.2.2.2"]),
            &trusted
        ),
        ip("198.51.100.7")
    );
    // No header: the proxy itself.
    assert_eq!(
        client_ip(peer("10.0.0.5"), &HeaderMap::new(), &trusted),
        ip("10.0.0.5")
    );
    // Nothing trusted: never the header.
    assert_eq!(
        client_ip(peer("10.0.0.5"), &xff(&["192.0.2.1"]), &[]),
        ip("10.0.0.5")
    );
}

#[test]
fn a_second_forwarded_for_line_is_not_ignored() {
    // HAProxy appends its own line after the client's: the client's forged
    // line comes first and must not win.
    let trusted = nets(&["10.0.0.0/8"]);
    let h = xff(&["192.0.2.1", "198.51.100.7"]);
    assert_eq!(
        client_ip(peer("10.0.0.5"), &h, &trusted),
        ip("198.51.100.7")
    );
}

#[test]
fn garbage_and_ports_in_forwarded_for() {
    let trusted = nets(&["10.0.0.0/8"]);
    // Garbage right of the real hop stops the walk at the proxy, never at
    // an address the client chose.
    assert_eq!(
        client_ip(peer("10.0.0.5"), &xff(&["192.0.2.1, unknown"]), &trusted),
        ip("10.0.0.5")
    );
    // Azure Application Gateway writes ip:port.
    assert_eq!(
        client_ip(peer("10.0.0.5"), &xff(&["192.0.2.1:5123"]), &trusted),
        ip("192.0.2.1")
    );
    assert_eq!(
        client_ip(peer("10.0.0.5"), &xff(&["[2001:db8::1]:443"]), &trusted),
        ip("2001:db8::1")
    );
    assert_eq!(
        client_ip(peer("10.0.0.5"), &xff(&["[2001:db8::1]"]), &trusted),
        ip("2001:db8::1")
    );
    // A dual-stack listener sees IPv4 proxies as ::ffff:a.b.c.d.
    assert_eq!(
        client_ip(peer("::ffff:10.0.0.5"), &xff(&["192.0.2.1"]), &trusted),
        ip("192.0.2.1")
    );
}

/// A relay whose `portal` source allows `allow`, with `trusted` proxies.
async fn relay(allow: &str, trusted: &str) -> (TestApp, TestSink) {
    let b = Backend::new(Kind::Sqlite).await.unwrap();
    let sink = TestSink::start().await;
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
trusted_proxies = [{trusted}]

[admin]
listen = "127.0.0.1:0"
token = "{ADMIN_TOKEN}"

[store]
url = "{db}"

[[sources]]
name = "portal"
kind = "arcgis-portal"
secret = "{PORTAL_SECRET}"
allow_ips = [{allow}]

[[sources]]
name = "open"
kind = "arcgis-portal"
secret = "{PORTAL_SECRET}"

{sink}
"#,
        db = b.url,
        sink = http_sink("all", &sink, ""),
    );
    (spawn_app_text(b, &text, test_options()).await, sink)
}

async fn post(app: &TestApp, source: &str, forwarded: &[&str]) -> (u16, Value) {
    let mut req = app
        .client
        .post(format!("{}/hooks/{source}", app.ingress))
        .header("content-type", "application/json")
        .header("secret", PORTAL_SECRET)
        .body(fixture("portal-item-share.json"));
    for f in forwarded {
        req = req.header("x-forwarded-for", *f);
    }
    let r = req.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_peer_allowed_or_denied() {
    let (app, _) = relay(r#""127.0.0.0/8""#, "").await;
    assert_eq!(post(&app, "portal", &[]).await.0, 200);
    // Not a trusted proxy: the header changes nothing.
    assert_eq!(post(&app, "portal", &["192.0.2.1"]).await.0, 200);
    app.stop().await;

    let (app, _) = relay(r#""192.0.2.0/24""#, "").await;
    let (s, v) = post(&app, "portal", &[]).await;
    assert_eq!(s, 403, "{v}");
    assert!(v["error"].is_string(), "{v}");
    // Forging the header from an untrusted peer does not help.
    assert_eq!(post(&app, "portal", &["192.0.2.1"]).await.0, 403);
    // The GET check ArcGIS makes when a webhook is created is refused too.
    let r = app
        .client
        .get(format!("{}/hooks/portal", app.ingress))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A source without allow_ips is open to all.
    assert_eq!(post(&app, "open", &[]).await.0, 200);
    // Nothing refused was stored.
    assert_eq!(count_rows(&app.backend, "messages").await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_from_a_trusted_proxy() {
    // 127.0.0.1 plays the reverse proxy in front of the relay.
    let (app, sink) = relay(r#""192.0.2.0/24""#, r#""127.0.0.1/32""#).await;
    let (s, v) = post(&app, "portal", &["192.0.2.44"]).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(post(&app, "portal", &["198.51.100.7"]).await.0, 403);
    // Forged allowed address left of the real client.
    assert_eq!(
        post(&app, "portal", &["192.0.2.44, 198.51.100.7"]).await.0,
        403
    );
    // Forged line first, the proxy's own line second.
    assert_eq!(
        post(&app, "portal", &["192.0.2.44", "198.51.100.7"])
            .await
            .0,
        403
    );
    // No header: the proxy's own address, not in the list.
    assert_eq!(post(&app, "portal", &[]).await.0, 403);
    sink.wait_for(1, std::time::Duration::from_secs(10)).await;
    // The client address kept with the message is the forwarded one.
    let m = &app.deliveries("").await[0]["message_id"];
    let msg: Value = app
        .admin_get(&format!("/api/v1/messages/{}", m.as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert!(msg.to_string().contains("192.0.2.44"), "{msg}");
    app.stop().await;
}
