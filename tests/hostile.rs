//! Hostile input at ingress: a table of malformed, oversized, smuggled and
//! mis-authenticated requests, written byte by byte over raw TCP to a relay
//! on port 0.
//!
//! For every row: an answer of 4xx (503 would be allowed for overload) or a
//! closed connection within [`ROW_DEADLINE`]; afterwards nothing is stored
//! (no message, no delivery), no configured secret (Portal secret, both
//! signature keys, the hmac secret, the admin token) appears in any response
//! byte, no handler panicked, and the relay still accepts a valid webhook.
//!
//! Both stores: the refusals happen before the store is touched, so the table
//! mostly proves the same thing twice, but the second table here (legal but
//! odd payloads, e.g. `\u0000` escapes and 60 KB strings) is about what each
//! store accepts: Postgres TEXT refuses NUL bytes where SQLite takes them.
//!
//! The log check runs the real binary (`RelayProcess`, RUST_LOG=info, the
//! production default) with the same table and greps its stderr for the
//! secrets and for panics; it runs on SQLite only, since what is logged does
//! not depend on the store.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use common::process::{write_config, RelayProcess};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest any row may take to be answered or cut off.
const ROW_DEADLINE: Duration = Duration::from_secs(5);

/// Every credential of the test configuration.
const SECRETS: &[&str] = &[
    PORTAL_SECRET,
    SERVER_KEY,
    PREVIOUS_SERVER_KEY,
    HMAC_SECRET,
    ADMIN_TOKEN,
];

/// A source only 10.0.0.0/8 may post to, for the X-Forwarded-For rows.
const RESTRICTED: &str = r#"
[[sources]]
name = "restricted"
kind = "arcgis-portal"
secret = "portal-secret-1"
allow_ips = ["10.0.0.0/8"]
"#;

// ------------------------------------------------------------ the table

/// How a row's bytes go out.
#[derive(Clone)]
enum Wire {
    /// Write everything, keep the socket open, read the answer.
    Bytes(Vec<u8>),
    /// Write the head, then one body byte every 100 ms for the whole deadline.
    Trickle(Vec<u8>),
}

#[derive(Clone)]
struct Row {
    name: &'static str,
    send: Wire,
    /// Acceptable answers; 0 means "closed without an answer". Every row
    /// additionally must be 4xx/503/closed, whatever is listed.
    expect: &'static [u16],
}

/// What came back.
#[derive(Debug, Clone)]
struct Outcome {
    /// Status, or 0 for a connection closed without a (complete) status line.
    status: u16,
    /// Every byte received.
    raw: Vec<u8>,
    took: Duration,
}

fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out =
        format!("{method} {target} HTTP/1.1\r\nhost: relay.test\r\nconnection: close\r\n")
            .into_bytes();
    for (k, v) in headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

fn post(source: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    request("POST", &format!("/hooks/{source}"), headers, body)
}

/// A request whose head is given whole (the row controls every header).
fn head_and_body(head: &str, body: &[u8]) -> Vec<u8> {
    let mut out = head.replace('\n', "\r\n").into_bytes();
    out.extend_from_slice(body);
    out
}

const JSON: (&str, &str) = ("content-type", "application/json");
const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");
const SECRET_OK: (&str, &str) = ("secret", PORTAL_SECRET);

fn signed_server(body: &[u8]) -> Vec<u8> {
    let sig = esri_signature(SERVER_KEY, body);
    post("server", &[JSON, ("x-esriHook-Signature", &sig)], body)
}

fn portal_with_secret_value(v: serde_json::Value) -> Vec<u8> {
    let mut doc: serde_json::Value =
        serde_json::from_slice(&fixture("portal-item-share.json")).unwrap();
    doc["info"]["secret"] = v;
    post("portal", &[JSON], &serde_json::to_vec(&doc).unwrap())
}

/// A real gzip member (one stored deflate block) of `data`.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for b in data {
            crc ^= *b as u32;
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let len = data.len() as u16;
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 1];
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn table() -> Vec<Row> {
    let portal_fixture = fixture("portal-item-share.json");
    let server_fixture = fixture("server-feature-created.json");
    let form = fixture("online-hosted-layer.form")
        .trim_ascii_end()
        .to_vec();
    let form_sig = esri_signature(SERVER_KEY, &form["payload=".len()..]);
    let ok_portal = |extra: &[(&str, &str)]| {
        let mut h = vec![JSON, SECRET_OK];
        h.extend_from_slice(extra);
        post("portal", &h, &portal_fixture)
    };
    let big = |n: usize| "A".repeat(n);
    let mut rows = vec![
        // ---- sizes and counts of the head
        Row {
            name: "100 KB header value",
            send: Wire::Bytes(ok_portal(&[("x-filler", &big(100_000))])),
            expect: &[431, 0],
        },
        Row {
            name: "10,000 headers",
            send: Wire::Bytes({
                let mut head = String::from("POST /hooks/portal HTTP/1.1\nhost: x\nconnection: close\nsecret: portal-secret-1\n");
                for i in 0..10_000 {
                    head.push_str(&format!("x{i}: 1\n"));
                }
                head.push_str(&format!("content-length: {}\n\n", portal_fixture.len()));
                head_and_body(&head, &portal_fixture)
            }),
            expect: &[431, 0],
        },
        Row {
            name: "1 MB x-esriHook-Signature",
            send: Wire::Bytes(post("server", &[JSON, ("x-esriHook-Signature", &big(1 << 20))], &server_fixture)),
            expect: &[431, 0],
        },
        Row {
            name: "100 KB crc_token",
            send: Wire::Bytes(request("GET", &format!("/hooks/server?crc_token={}", big(100_000)), &[], b"")),
            expect: &[414, 431, 0],
        },
        Row {
            name: "crc_token over 1024 characters",
            send: Wire::Bytes(request("GET", &format!("/hooks/server?crc_token={}", big(2_000)), &[], b"")),
            expect: &[400],
        },
        Row {
            name: "crc_token that is a JSON payload (a signing oracle)",
            send: Wire::Bytes(request(
                "GET",
                &format!(
                    "/hooks/server?crc_token={}",
                    form_urlencoded::byte_serialize(&server_fixture).collect::<String>()
                ),
                &[],
                b"",
            )),
            expect: &[400],
        },
        Row {
            name: "crc_token that is a percent-encoded form payload",
            send: Wire::Bytes(request(
                "GET",
                &format!(
                    "/hooks/server?crc_token={}",
                    form_urlencoded::byte_serialize(&form["payload=".len()..]).collect::<String>()
                ),
                &[],
                b"",
            )),
            expect: &[400],
        },
        Row {
            name: "100 KB request target",
            send: Wire::Bytes(post(&big(100_000), &[JSON], b"{}")),
            expect: &[414, 431, 0],
        },
        // ---- bodies
        Row {
            name: "deeply nested JSON array (signed)",
            send: Wire::Bytes(signed_server(format!("{}{}", "[".repeat(30_000), "]".repeat(30_000)).as_bytes())),
            expect: &[400],
        },
        Row {
            name: "deeply nested JSON object (Portal secret)",
            send: Wire::Bytes(post(
                "portal",
                &[JSON, SECRET_OK],
                format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000)).as_bytes(),
            )),
            expect: &[400],
        },
        Row {
            name: "invalid UTF-8 body (signed)",
            send: Wire::Bytes(signed_server(b"{\"serviceName\":\"\xff\xfe\xfd\",\"events\":[\"FeaturesCreated\"]}")),
            expect: &[400],
        },
        Row {
            name: "UTF-16 body (Portal secret)",
            send: Wire::Bytes(post(
                "portal",
                &[JSON, SECRET_OK],
                &"{\"info\":{}}".encode_utf16().flat_map(|u| u.to_le_bytes()).collect::<Vec<u8>>(),
            )),
            expect: &[400],
        },
        Row {
            name: "NUL bytes in the body (signed)",
            send: Wire::Bytes(signed_server(b"{\"serviceName\":\"a\0b\",\"events\":[\"Features\0Created\"]}")),
            expect: &[400],
        },
        Row {
            name: "body of only whitespace (Portal secret)",
            send: Wire::Bytes(post("portal", &[JSON, SECRET_OK], b" \r\n\t \n  ")),
            expect: &[400],
        },
        Row {
            name: "JSON with a UTF-8 BOM (Portal secret)",
            send: Wire::Bytes(post("portal", &[JSON, SECRET_OK], &[b"\xef\xbb\xbf".as_slice(), &portal_fixture].concat())),
            expect: &[400],
        },
        Row {
            name: "gzip body with Content-Encoding: gzip (Portal secret)",
            send: Wire::Bytes(ok_portal_body(&[("content-encoding", "gzip")], &gzip_stored(&portal_fixture))),
            expect: &[415],
        },
        Row {
            name: "plain JSON labelled Content-Encoding: gzip (Portal secret)",
            send: Wire::Bytes(ok_portal(&[("content-encoding", "gzip")])),
            expect: &[415],
        },
        Row {
            name: "Content-Encoding: deflate, br (signed)",
            send: Wire::Bytes({
                let sig = esri_signature(SERVER_KEY, &server_fixture);
                post("server", &[JSON, ("content-encoding", "deflate, br"), ("x-esriHook-Signature", &sig)], &server_fixture)
            }),
            expect: &[415],
        },
        Row {
            name: "10,000-event array of numbers (signed)",
            send: Wire::Bytes(signed_server(
                format!("{{\"serviceName\":\"s\",\"events\":[{}1]}}", "1,".repeat(10_000)).as_bytes(),
            )),
            expect: &[400],
        },
        // ---- form bodies
        Row {
            name: "duplicate payload fields (signed form)",
            send: Wire::Bytes(post(
                "server",
                &[FORM, ("x-esriHook-Signature", &form_sig)],
                &[form.as_slice(), b"&payload=%7B%7D"].concat(),
            )),
            expect: &[400],
        },
        Row {
            name: "payload field twice in different case (signed form)",
            send: Wire::Bytes(post(
                "server",
                &[FORM, ("x-esriHook-Signature", &form_sig)],
                &[form.as_slice(), b"&PAYLOAD=%7B%7D"].concat(),
            )),
            expect: &[400],
        },
        Row {
            name: "duplicate x-esriHook-Signature form fields",
            send: Wire::Bytes(post(
                "server",
                &[FORM],
                format!(
                    "{}&x-esriHook-Signature={}&x-esriHook-Signature=sha256%3Dx",
                    String::from_utf8_lossy(&form),
                    form_urlencoded::byte_serialize(form_sig.as_bytes()).collect::<String>()
                )
                .as_bytes(),
            )),
            expect: &[400],
        },
        Row {
            name: "form signature field of multi-byte UTF-8",
            send: Wire::Bytes(post(
                "server",
                &[FORM],
                format!("{}&x-esriHook-Signature=%E2%82%AC%E2%82%AC%E2%82%AC%E2%82%AC", String::from_utf8_lossy(&form))
                    .as_bytes(),
            )),
            expect: &[401],
        },
        Row {
            name: "form payload of invalid UTF-8 (signed)",
            send: Wire::Bytes({
                let body = b"payload=%7B%22a%22%3A%22%FF%FE%22%7D";
                let sig = esri_signature(SERVER_KEY, &body["payload=".len()..]);
                post("server", &[FORM, ("x-esriHook-Signature", &sig)], body)
            }),
            expect: &[400],
        },
        Row {
            name: "60 KB of empty form fields (Portal secret)",
            send: Wire::Bytes(post("portal", &[FORM, SECRET_OK], "a=&".repeat(20_000).as_bytes())),
            expect: &[400],
        },
        // ---- lengths and framing
        Row {
            name: "Content-Length shorter than the body (signed)",
            send: Wire::Bytes({
                let sig = esri_signature(SERVER_KEY, &server_fixture);
                head_and_body(
                    &format!(
                        "POST /hooks/server HTTP/1.1\nhost: x\nconnection: close\ncontent-type: application/json\nx-esriHook-Signature: {sig}\ncontent-length: {}\n\n",
                        server_fixture.len() - 10
                    ),
                    &server_fixture,
                )
            }),
            expect: &[401],
        },
        Row {
            name: "Content-Length longer than the body",
            send: Wire::Bytes(head_and_body(
                &format!(
                    "POST /hooks/portal HTTP/1.1\nhost: x\nconnection: close\ncontent-type: application/json\nsecret: portal-secret-1\ncontent-length: {}\n\n",
                    portal_fixture.len() + 100
                ),
                &portal_fixture,
            )),
            expect: &[408, 400],
        },
        Row {
            name: "chunked body that never ends",
            send: Wire::Bytes(head_and_body(
                "POST /hooks/portal HTTP/1.1\nhost: x\ncontent-type: application/json\nsecret: portal-secret-1\ntransfer-encoding: chunked\n\n",
                b"10\r\n{\"info\":{},\"even\r\n",
            )),
            expect: &[408],
        },
        Row {
            name: "chunked body trickling a byte every 100 ms",
            send: Wire::Trickle(head_and_body(
                "POST /hooks/portal HTTP/1.1\nhost: x\ncontent-type: application/json\nsecret: portal-secret-1\ntransfer-encoding: chunked\n\n",
                b"",
            )),
            expect: &[408],
        },
        Row {
            name: "Content-Length and Transfer-Encoding together (smuggling)",
            send: Wire::Bytes(head_and_body(
                "POST /hooks/portal HTTP/1.1\nhost: x\nconnection: close\ncontent-type: application/json\ncontent-length: 4\ntransfer-encoding: chunked\n\n",
                b"5\r\nhello\r\n0\r\n\r\nPOST /hooks/portal HTTP/1.1\r\nhost: x\r\n\r\n",
            )),
            expect: &[400, 401],
        },
        Row {
            name: "two different Content-Length headers",
            send: Wire::Bytes(head_and_body(
                "POST /hooks/portal HTTP/1.1\nhost: x\nconnection: close\ncontent-length: 2\ncontent-length: 30\n\n",
                b"{}",
            )),
            expect: &[400],
        },
        Row {
            name: "Content-Length that is not a number",
            send: Wire::Bytes(head_and_body("POST /hooks/portal HTTP/1.1\nhost: x\ncontent-length: 0x10\n\n", b"{}")),
            expect: &[400],
        },
        Row {
            name: "Content-Length past u64",
            send: Wire::Bytes(head_and_body(
                "POST /hooks/portal HTTP/1.1\nhost: x\ncontent-length: 99999999999999999999999\n\n",
                b"{}",
            )),
            expect: &[400],
        },
        Row {
            name: "Content-Length of 10 GB with Expect: 100-continue",
            send: Wire::Bytes(head_and_body(
                "POST /hooks/portal HTTP/1.1\nhost: x\nsecret: portal-secret-1\nexpect: 100-continue\ncontent-length: 10000000000\n\n",
                b"",
            )),
            expect: &[413],
        },
        Row {
            name: "Transfer-Encoding: gzip (not chunked)",
            send: Wire::Bytes(head_and_body(
                "POST /hooks/portal HTTP/1.1\nhost: x\nconnection: close\ntransfer-encoding: gzip\n\n",
                b"{}",
            )),
            expect: &[400, 0],
        },
        // ---- protocol versions and methods
        Row {
            name: "HTTP/1.0 without Host, unauthenticated",
            send: Wire::Bytes(head_and_body(
                &format!("POST /hooks/portal HTTP/1.0\ncontent-type: application/json\ncontent-length: {}\n\n", portal_fixture.len()),
                &portal_fixture,
            )),
            expect: &[401],
        },
        Row {
            name: "HTTP/1.0 with Transfer-Encoding: chunked",
            send: Wire::Bytes(head_and_body(
                "POST /hooks/portal HTTP/1.0\nsecret: portal-secret-1\ntransfer-encoding: chunked\n\n",
                b"2\r\n{}\r\n0\r\n\r\n",
            )),
            expect: &[400, 0],
        },
        Row {
            name: "HTTP/0.9 request line",
            send: Wire::Bytes(b"GET /hooks/portal\r\n\r\n".to_vec()),
            expect: &[400, 0],
        },
        Row {
            name: "HTTP/2 preface on the HTTP/1 port",
            send: Wire::Bytes(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0".to_vec()),
            expect: &[400, 0],
        },
        Row {
            name: "HTTP/3.0 version",
            send: Wire::Bytes(b"POST /hooks/portal HTTP/3.0\r\nhost: x\r\n\r\n".to_vec()),
            expect: &[400, 505, 0],
        },
        Row { name: "PUT", send: Wire::Bytes(request("PUT", "/hooks/portal", &[JSON, SECRET_OK], &portal_fixture)), expect: &[405] },
        Row { name: "DELETE", send: Wire::Bytes(request("DELETE", "/hooks/portal", &[SECRET_OK], b"")), expect: &[405] },
        Row { name: "PATCH", send: Wire::Bytes(request("PATCH", "/hooks/portal", &[JSON, SECRET_OK], &portal_fixture)), expect: &[405] },
        Row { name: "OPTIONS", send: Wire::Bytes(request("OPTIONS", "/hooks/portal", &[], b"")), expect: &[405] },
        Row {
            name: "TRACE carrying the secret (must not be echoed)",
            send: Wire::Bytes(request("TRACE", "/hooks/portal", &[SECRET_OK, ("authorization", &format!("Bearer {ADMIN_TOKEN}"))], b"")),
            expect: &[405],
        },
        Row { name: "CONNECT to a hook", send: Wire::Bytes(request("CONNECT", "/hooks/portal", &[], b"")), expect: &[405] },
        Row {
            name: "CONNECT authority-form (proxy tunnel)",
            send: Wire::Bytes(b"CONNECT internal.example:443 HTTP/1.1\r\nhost: internal.example:443\r\n\r\n".to_vec()),
            expect: &[400, 404, 405, 0],
        },
        Row { name: "made-up method", send: Wire::Bytes(request("BREW", "/hooks/portal", &[], b"")), expect: &[405] },
        // ---- paths
        Row { name: "/hooks/../admin", send: Wire::Bytes(post("../admin", &[JSON, SECRET_OK], &portal_fixture)), expect: &[404] },
        Row { name: "/hooks/%2e%2e", send: Wire::Bytes(post("%2e%2e", &[JSON, SECRET_OK], &portal_fixture)), expect: &[404] },
        Row {
            name: "/hooks/%2e%2e%2fapi%2fv1%2freplay",
            send: Wire::Bytes(post("%2e%2e%2fapi%2fv1%2freplay", &[JSON, SECRET_OK], &portal_fixture)),
            expect: &[404],
        },
        Row {
            name: "/hooks/portal%2F..%2F..%2Fetc (encoded slashes)",
            send: Wire::Bytes(post("portal%2F..%2F..%2Fetc", &[JSON, SECRET_OK], &portal_fixture)),
            expect: &[404],
        },
        Row { name: "/hooks//portal", send: Wire::Bytes(post("/portal", &[JSON, SECRET_OK], &portal_fixture)), expect: &[404] },
        Row { name: "/hooks/portal/extra", send: Wire::Bytes(post("portal/extra", &[JSON, SECRET_OK], &portal_fixture)), expect: &[404] },
        Row { name: "/hooks/PORTAL (case)", send: Wire::Bytes(post("PORTAL", &[JSON, SECRET_OK], &portal_fixture)), expect: &[404] },
        Row { name: "/hooks/portal%00", send: Wire::Bytes(post("portal%00", &[JSON, SECRET_OK], &portal_fixture)), expect: &[404] },
        Row { name: "/hooks/%ff (not UTF-8)", send: Wire::Bytes(post("%ff", &[JSON, SECRET_OK], &portal_fixture)), expect: &[400, 404] },
        Row {
            name: "raw NUL in the request target",
            send: Wire::Bytes(b"POST /hooks/por\0tal HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n".to_vec()),
            expect: &[400],
        },
        Row {
            name: "absolute-form target naming another host, unauthenticated",
            send: Wire::Bytes(request("POST", "http://169.254.169.254/hooks/portal", &[JSON], &portal_fixture)),
            expect: &[401],
        },
        // ---- headers
        Row {
            name: "NUL byte in a header value",
            send: Wire::Bytes(head_and_body(
                &format!("POST /hooks/portal HTTP/1.1\nhost: x\nsecret: portal-secret-1\0\ncontent-length: {}\n\n", portal_fixture.len()),
                &portal_fixture,
            )),
            expect: &[400],
        },
        Row {
            name: "obs-fold header continuation",
            send: Wire::Bytes(head_and_body(
                &format!("POST /hooks/portal HTTP/1.1\nhost: x\nsecret: portal-\n secret-1\ncontent-length: {}\n\n", portal_fixture.len()),
                &portal_fixture,
            )),
            expect: &[400, 401],
        },
        Row {
            name: "space before the colon of a header",
            send: Wire::Bytes(head_and_body("POST /hooks/portal HTTP/1.1\nhost: x\nsecret : portal-secret-1\ncontent-length: 2\n\n", b"{}")),
            expect: &[400],
        },
        Row {
            name: "Portal secret header with non-ASCII bytes",
            send: Wire::Bytes({
                let mut r = b"POST /hooks/portal HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\nsecret: portal-secret-1\xff\xfe\xc3\xa9\r\n".to_vec();
                r.extend_from_slice(format!("content-length: {}\r\n\r\n", portal_fixture.len()).as_bytes());
                r.extend_from_slice(&portal_fixture);
                r
            }),
            expect: &[401],
        },
        Row {
            name: "Content-Type with non-ASCII bytes",
            send: Wire::Bytes({
                let mut r = b"POST /hooks/portal HTTP/1.1\r\nhost: x\r\nconnection: close\r\nsecret: portal-secret-1\r\ncontent-type: application/json\xe2\x80\x8b\r\n".to_vec();
                r.extend_from_slice(format!("content-length: {}\r\n\r\n", portal_fixture.len()).as_bytes());
                r.extend_from_slice(&portal_fixture);
                r
            }),
            expect: &[400],
        },
        Row {
            name: "Content-Type application/xml",
            send: Wire::Bytes(post("portal", &[("content-type", "application/xml"), SECRET_OK], &portal_fixture)),
            expect: &[415],
        },
        Row {
            name: "X-Forwarded-For from an untrusted peer",
            send: Wire::Bytes(post("restricted", &[JSON, SECRET_OK, ("x-forwarded-for", "10.1.2.3")], &portal_fixture)),
            expect: &[403],
        },
        // ---- signatures and secrets
        Row {
            name: "percent-encoded multi-byte UTF-8 signature",
            send: Wire::Bytes(post(
                "server",
                &[JSON, ("x-esriHook-Signature", "%E2%82%AC%E2%82%AC%E2%82%ACsha256=AAAA")],
                &server_fixture,
            )),
            expect: &[401],
        },
        Row {
            name: "signature of 31 bytes",
            send: Wire::Bytes(post(
                "server",
                &[JSON, ("x-esriHook-Signature", &format!("sha256={}", "ab".repeat(31)))],
                &server_fixture,
            )),
            expect: &[401],
        },
        Row {
            name: "hmac source, signature without its prefix",
            send: Wire::Bytes(post(
                "github",
                &[JSON, ("x-hub-signature-256", &hex::encode(hmac(HMAC_SECRET, b"{}")))],
                b"{}",
            )),
            expect: &[401],
        },
        Row {
            name: "two secret headers, the wrong one first",
            send: Wire::Bytes(post("portal", &[JSON, ("secret", "guess"), SECRET_OK], &portal_fixture)),
            expect: &[401],
        },
        Row { name: "info.secret is a number", send: Wire::Bytes(portal_with_secret_value(serde_json::json!(12345))), expect: &[401] },
        Row {
            name: "info.secret is an object",
            send: Wire::Bytes(portal_with_secret_value(serde_json::json!({"value": PORTAL_SECRET}))),
            expect: &[401],
        },
        Row {
            name: "info.secret is an array holding the secret",
            send: Wire::Bytes(portal_with_secret_value(serde_json::json!([PORTAL_SECRET]))),
            expect: &[401],
        },
        Row { name: "info.secret is null", send: Wire::Bytes(portal_with_secret_value(serde_json::Value::Null)), expect: &[401] },
        Row {
            name: "info given twice, the secret only in the first",
            send: Wire::Bytes(post(
                "portal",
                &[JSON],
                format!(
                    "{{\"info\":{{\"secret\":\"{PORTAL_SECRET}\"}},\"info\":{{\"webhookName\":\"x\"}},\"events\":[{{\"source\":\"item\",\"id\":\"a\",\"operation\":\"share\"}}]}}"
                )
                .as_bytes(),
            )),
            expect: &[401],
        },
        Row {
            name: "info.secret given twice, the right one first",
            send: Wire::Bytes(post(
                "portal",
                &[JSON],
                format!(
                    "{{\"info\":{{\"secret\":\"{PORTAL_SECRET}\",\"secret\":\"guess\"}},\"events\":[{{\"source\":\"item\",\"id\":\"a\",\"operation\":\"share\"}}]}}"
                )
                .as_bytes(),
            )),
            expect: &[401],
        },
        Row {
            name: "empty body, no credentials",
            send: Wire::Bytes(post("portal", &[], b"")),
            expect: &[401],
        },
    ];
    // Every row's name is unique, so a failure names one row.
    rows.sort_by_key(|r| r.name);
    rows.dedup_by_key(|r| r.name);
    rows
}

fn ok_portal_body(extra: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut h = vec![JSON, SECRET_OK];
    h.extend_from_slice(extra);
    post("portal", &h, body)
}

// ------------------------------------------------------------ the client

/// Length of a complete response in `buf`, if it holds one.
fn complete_response(buf: &[u8]) -> Option<usize> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    if head.starts_with("http/1.1 100") {
        // An interim answer; the final one follows.
        return complete_response(&buf[head_end..]).map(|n| n + head_end);
    }
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    match len {
        Some(n) => (buf.len() >= head_end + n).then_some(head_end + n),
        None if head.contains("transfer-encoding: chunked") => buf[head_end..]
            .windows(5)
            .position(|w| w == b"0\r\n\r\n")
            .map(|p| head_end + p + 5),
        None => None,
    }
}

fn final_status(raw: &[u8]) -> u16 {
    // Skip interim 1xx answers.
    let text = String::from_utf8_lossy(raw);
    text.split("\r\n\r\n")
        .filter_map(|block| {
            let line = block.lines().find(|l| l.starts_with("HTTP/"))?;
            line.split_whitespace().nth(1)?.parse::<u16>().ok()
        })
        .find(|s| *s >= 200)
        .unwrap_or(0)
}

async fn send_row(addr: std::net::SocketAddr, row: &Row) -> Outcome {
    let t0 = Instant::now();
    let stream = TcpStream::connect(addr)
        .await
        .expect("connect to the relay");
    let (mut rd, mut wr) = stream.into_split();
    let send = row.send.clone();
    // The writer runs beside the reader: the relay may answer (and close)
    // before it has read everything, and a write into a closed socket is
    // then expected, not a failure.
    let writer = tokio::spawn(async move {
        match send {
            Wire::Bytes(b) => {
                let _ = wr.write_all(&b).await;
            }
            Wire::Trickle(head) => {
                if wr.write_all(&head).await.is_ok() {
                    let t0 = Instant::now();
                    while t0.elapsed() < ROW_DEADLINE {
                        if wr.write_all(b"1\r\nx\r\n").await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
        // Keep the write side open until the reader is done: a half-close
        // would tell the relay the body ended, which is a different row.
        std::future::pending::<()>().await;
        drop(wr);
    });
    let mut raw = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let read = tokio::time::timeout(ROW_DEADLINE, async {
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    raw.extend_from_slice(&chunk[..n]);
                    if complete_response(&raw).is_some() {
                        break;
                    }
                }
            }
        }
    })
    .await;
    writer.abort();
    assert!(
        read.is_ok(),
        "{}: neither answered nor closed within {ROW_DEADLINE:?}; got {:?}",
        row.name,
        String::from_utf8_lossy(&raw)
    );
    Outcome {
        status: final_status(&raw),
        raw,
        took: t0.elapsed(),
    }
}

/// Sends every row at once (each on its own connection) and returns the outcomes.
async fn run_table(addr: std::net::SocketAddr, rows: &[Row]) -> Vec<Outcome> {
    futures::future::join_all(rows.iter().map(|r| send_row(addr, r))).await
}

fn check_outcomes(rows: &[Row], outcomes: &[Outcome]) {
    let mut failures = Vec::new();
    for (row, out) in rows.iter().zip(outcomes) {
        // The table as it ran (shown with --nocapture).
        eprintln!("{:>4} {:>6.0?}  {}", out.status, out.took, row.name);
        let class_ok = out.status == 0 || (400..500).contains(&out.status) || out.status == 503;
        if !class_ok || !row.expect.contains(&out.status) {
            failures.push(format!(
                "{}: got {} (expected one of {:?}) after {:?}: {:?}",
                row.name,
                out.status,
                row.expect,
                out.took,
                String::from_utf8_lossy(&out.raw[..out.raw.len().min(400)])
            ));
        }
        for s in SECRETS {
            if out.raw.windows(s.len()).any(|w| w == s.as_bytes()) {
                failures.push(format!(
                    "{}: the response contains a configured secret",
                    row.name
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

// ------------------------------------------------------------ panics

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts panics on any thread (a handler that panics kills only its
/// connection task, which the table alone would see as "closed").
fn count_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

// ------------------------------------------------------------ tests

both_stores!(
    hostile_requests_are_refused_and_nothing_is_stored,
    legal_but_odd_payloads_are_stored_on_every_store
);

async fn hostile_requests_are_refused_and_nothing_is_stored(b: Backend) {
    count_panics();
    let sink = TestSink::start().await;
    let app = spawn_app(b, &format!("{}{RESTRICTED}", http_sink("all", &sink, ""))).await;
    let rows = table();
    assert!(rows.len() >= 30, "the table has {} rows", rows.len());
    let outcomes = run_table(app.relay().ingress_addr, &rows).await;
    check_outcomes(&rows, &outcomes);

    assert_eq!(
        count_rows(&app.backend, "messages").await,
        0,
        "a hostile request was stored"
    );
    assert_eq!(count_rows(&app.backend, "deliveries").await, 0);
    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        0,
        "a handler panicked (see stderr)"
    );

    // Still serving: a valid webhook is accepted and delivered.
    let r = app.post_portal(&fixture("portal-group-update.json")).await;
    assert_eq!(r.status(), 200);
    sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(count_rows(&app.backend, "messages").await, 1);
    app.stop().await;
}

/// What is legal must not be refused by one store and taken by the other:
/// NUL and other control characters as JSON escapes, non-BMP text, extreme
/// numbers, and a body just under the size limit.
async fn legal_but_odd_payloads_are_stored_on_every_store(b: Backend) {
    let sink = TestSink::start().await;
    let app = spawn_app(b, &http_sink("all", &sink, "")).await;
    let portal = |id: &str, props: serde_json::Value| {
        serde_json::to_vec(&serde_json::json!({
            "info": {"webhookName": "w\u{0}\u{1}", "portalURL": "https://gis.example.org/portal/"},
            "events": [{"source": "item", "id": id, "operation": "update", "when": 1, "properties": props}]
        }))
        .unwrap()
    };
    let bodies = vec![
        portal(
            "nul",
            serde_json::json!({"title": "a\u{0}b", "ctl": "\u{1}\u{1f}\u{7f}"}),
        ),
        portal(
            "astral",
            serde_json::json!({"title": "𝔊𝔦𝔖 🗺️ \u{202e}evil"}),
        ),
        portal(
            "numbers",
            serde_json::json!({"big": 1e308, "neg": -0.0, "int": i64::MIN, "u": u64::MAX}),
        ),
        portal("long", serde_json::json!({"pad": "x".repeat(60_000)})),
        portal("id\u{0}with-nul", serde_json::json!({})),
    ];
    for (i, body) in bodies.iter().enumerate() {
        let r = app.post_portal(body).await;
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert_eq!(status, 200, "body {i}: {text}");
    }
    // Headers up to the ingress limit are fine (a proxy may add a few).
    let filler = "f".repeat(12 * 1024);
    let r = app
        .post(
            "portal",
            bodies[0].clone(),
            &[JSON, SECRET_OK, ("x-filler", filler.as_str())],
        )
        .await;
    assert_eq!(r.status(), 200, "12 KB of headers");
    let got = sink.wait_for(bodies.len(), Duration::from_secs(15)).await;
    for body in &bodies {
        assert!(
            got.iter().any(|g| g.body.as_ref() == body.as_slice()),
            "a body was not forwarded byte for byte"
        );
    }
    assert_eq!(
        count_rows(&app.backend, "messages").await,
        bodies.len() as i64
    );
    app.stop().await;
}

/// `GET ?crc_token=T` answers HMAC(key, T): if T may be a payload, anyone
/// can have the relay sign a forged webhook for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crc_challenge_is_not_a_signing_oracle() {
    let b = Backend::new(Kind::Sqlite).await.unwrap();
    let sink = TestSink::start().await;
    let app = spawn_app(b, &http_sink("all", &sink, "")).await;
    let forged = br#"{"serviceName":"Parcels","serviceType":"FeatureServer","events":[{"eventType":"FeaturesDeleted","when":1}]}"#;
    let form_value: String = form_urlencoded::byte_serialize(forged).collect();
    for token in [
        String::from_utf8(forged.to_vec()).unwrap(),
        form_value.clone(),
    ] {
        let r = app
            .client
            .get(format!("{}/hooks/server", app.ingress))
            .query(&[("crc_token", token.as_str())])
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        if let Some(sig) = v["response_token"].as_str() {
            // The oracle answered: the forgery must still not get in.
            let json = app
                .post(
                    "server",
                    forged.to_vec(),
                    &[JSON, ("x-esriHook-Signature", sig)],
                )
                .await;
            let form = app
                .post(
                    "server",
                    format!("payload={form_value}"),
                    &[FORM, ("x-esriHook-Signature", sig)],
                )
                .await;
            assert_ne!(json.status(), 200, "a crc answer signed a JSON webhook");
            assert_ne!(form.status(), 200, "a crc answer signed a form webhook");
        }
        assert_eq!(status, 400, "crc_token {token:?}: {v}");
    }
    // Real challenges still work: Esri's tokens are opaque base64-like text.
    for token in ["challenge-123", "AbCd0123+/=_-.~", "x"] {
        let r = app
            .client
            .get(format!("{}/hooks/server", app.ingress))
            .query(&[("crc_token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{token}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            v["response_token"],
            esri_signature(SERVER_KEY, token.as_bytes())
        );
    }
    assert_eq!(count_rows(&app.backend, "messages").await, 0);
    app.stop().await;
}

/// The real binary, its log at the production level: no secret and no panic
/// in it after the whole table, and it keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_log() {
    let b = Backend::new(Kind::Sqlite).await.unwrap();
    let sink = TestSink::start().await;
    let text = config_text(
        &b.url,
        &format!("{}{RESTRICTED}", http_sink("all", &sink, "")),
    );
    let config = write_config(b.dir.path(), &text);
    let relay = RelayProcess::start(&config, b.dir.path());
    let addr: std::net::SocketAddr = relay
        .ingress
        .trim_start_matches("http://")
        .parse()
        .expect("ingress address");
    let rows = table();
    let outcomes = run_table(addr, &rows).await;
    check_outcomes(&rows, &outcomes);

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = client
        .post(format!("http://{addr}/hooks/portal"))
        .header("content-type", "application/json")
        .header("secret", PORTAL_SECRET)
        .body(fixture("portal-user-role.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the binary stopped serving after the table"
    );
    sink.wait_for(1, Duration::from_secs(10)).await;

    let log = relay.log();
    assert!(
        log.contains("webhook refused"),
        "the log shows no refusals; is it the right file?\n{log}"
    );
    for s in SECRETS {
        assert!(
            !log.contains(s),
            "the log contains a configured secret:\n{log}"
        );
    }
    assert!(!log.contains("panicked"), "the relay panicked:\n{log}");
    assert_eq!(count_rows(&b, "messages").await, 1);
}
