//! The hostile-request table of `tests/hostile.rs`: each row the bytes to
//! send and the answers that are acceptable.

use super::common::*;
use super::ok_portal_body;

/// How a row's bytes go out.
#[derive(Clone)]
pub(crate) enum Wire {
    /// Write everything, keep the socket open, read the answer.
    Bytes(Vec<u8>),
    /// Write the head, then one body byte every 100 ms for the whole deadline.
    Trickle(Vec<u8>),
}

#[derive(Clone)]
pub(crate) struct Row {
    pub(crate) name: &'static str,
    pub(crate) send: Wire,
    /// Acceptable answers; 0 means "closed without an answer". Every row
    /// additionally must be 4xx/503/closed, whatever is listed.
    pub(crate) expect: &'static [u16],
}

pub(crate) fn request(
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
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

pub(crate) fn post(source: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    request("POST", &format!("/hooks/{source}"), headers, body)
}

/// A request whose head is given whole (the row controls every header).
pub(crate) fn head_and_body(head: &str, body: &[u8]) -> Vec<u8> {
    let mut out = head.replace('\n', "\r\n").into_bytes();
    out.extend_from_slice(body);
    out
}

pub(crate) const JSON: (&str, &str) = ("content-type", "application/json");
pub(crate) const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");
pub(crate) const SECRET_OK: (&str, &str) = ("secret", PORTAL_SECRET);

pub(crate) fn signed_server(body: &[u8]) -> Vec<u8> {
    let sig = esri_signature(SERVER_KEY, body);
    post("server", &[JSON, ("x-esriHook-Signature", &sig)], body)
}

pub(crate) fn portal_with_secret_value(v: serde_json::Value) -> Vec<u8> {
    let mut doc: serde_json::Value =
        serde_json::from_slice(&fixture("portal-item-share.json")).unwrap();
    doc["info"]["secret"] = v;
    post("portal", &[JSON], &serde_json::to_vec(&doc).unwrap())
}

/// A real gzip member (one stored deflate block) of `data`.
pub(crate) fn gzip_stored(data: &[u8]) -> Vec<u8> {
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

pub(crate) fn table() -> Vec<Row> {
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
