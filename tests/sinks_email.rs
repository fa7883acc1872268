//! The `email` sink end to end: a relay delivering through a real local
//! SMTP server started by the test. The server speaks enough RFC 5321 for
//! lettre (EHLO, AUTH PLAIN, MAIL, RCPT, DATA, RSET, NOOP, QUIT) and is
//! scripted to answer the end of DATA with 250, a 4xx or a 5xx, so the
//! tests check that 4xx replies are retried and 5xx replies are dead.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use common::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

both_stores!(
    email_arrives_with_subject_text_and_html,
    smtp_4xx_is_retried_and_5xx_is_dead
);

/// One mail the server accepted or refused at the end of DATA.
#[derive(Debug, Clone, Default)]
struct Mail {
    auth: Option<String>,
    from: String,
    to: Vec<String>,
    data: String,
    reply: u16,
}

#[derive(Default)]
struct Inner {
    /// Replies to the end of DATA: (code, text); 250 when empty.
    script: VecDeque<(u16, &'static str)>,
    mails: Vec<Mail>,
}

#[derive(Clone)]
struct Smtp {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl Smtp {
    async fn start() -> Smtp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Mutex::new(Inner::default()));
        let i = inner.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(session(stream, i.clone()));
            }
        });
        Smtp { addr, inner }
    }

    fn script(&self, replies: impl IntoIterator<Item = (u16, &'static str)>) {
        self.inner.lock().unwrap().script.extend(replies);
    }

    fn mails(&self) -> Vec<Mail> {
        self.inner.lock().unwrap().mails.clone()
    }

    async fn wait_for(&self, n: usize) -> Vec<Mail> {
        eventually(
            Duration::from_secs(15),
            &format!("{n} mails at the SMTP server"),
            || async { self.inner.lock().unwrap().mails.len() >= n },
        )
        .await;
        self.mails()
    }
}

/// One SMTP session: replies to each command in order.
async fn session(stream: tokio::net::TcpStream, inner: Arc<Mutex<Inner>>) {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut mail = Mail::default();
    let _ = w.write_all(b"220 smtp.test ESMTP ready\r\n").await;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let cmd = line.trim_end().to_string();
        let upper = cmd.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            "250-smtp.test\r\n250-8BITMIME\r\n250 AUTH PLAIN LOGIN\r\n".into()
        } else if upper.starts_with("HELO") {
            "250 smtp.test\r\n".into()
        } else if upper.starts_with("AUTH PLAIN ") {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(cmd[11..].trim())
                .unwrap_or_default();
            mail.auth = Some(String::from_utf8_lossy(&raw).replace('\0', "|"));
            "235 2.7.0 Authentication successful\r\n".into()
        } else if upper.starts_with("MAIL FROM:") {
            mail.from = cmd[10..].trim().to_string();
            mail.to.clear();
            "250 2.1.0 OK\r\n".into()
        } else if upper.starts_with("RCPT TO:") {
            mail.to.push(cmd[8..].trim().to_string());
            "250 2.1.5 OK\r\n".into()
        } else if upper == "DATA" {
            let _ = w
                .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await;
            let mut data = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                if line == ".\r\n" {
                    break;
                }
                // Dot-stuffing (RFC 5321 4.5.2).
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            let (code, text) = inner
                .lock()
                .unwrap()
                .script
                .pop_front()
                .unwrap_or((250, "2.0.0 OK queued"));
            let mut m = std::mem::take(&mut mail);
            m.data = data;
            m.reply = code;
            mail.auth = m.auth.clone();
            inner.lock().unwrap().mails.push(m);
            format!("{code} {text}\r\n")
        } else if upper == "RSET" || upper == "NOOP" {
            "250 OK\r\n".into()
        } else if upper == "QUIT" {
            let _ = w.write_all(b"221 2.0.0 Bye\r\n").await;
            return;
        } else {
            "502 5.5.2 Command not recognized\r\n".into()
        };
        if w.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn email_sink(name: &str, smtp: &Smtp, extra: &str) -> String {
    format!(
        "[[sinks]]\nname = \"{name}\"\nkind = \"email\"\nurl = \"smtp://{}\"\ntls = \"none\"\n\
         from = \"ArcGIS relay <relay@example.org>\"\nto = [\"gis@example.org\", \"Ops <ops@example.org>\"]\n{extra}\n",
        smtp.addr
    )
}

async fn email_arrives_with_subject_text_and_html(b: Backend) {
    let smtp = Smtp::start().await;
    let app = spawn_app(
        b,
        &email_sink(
            "mail",
            &smtp,
            "username = \"relay\"\npassword = \"smtp-pass\"",
        ),
    )
    .await;
    app.post_portal(&fixture("portal-item-share.json")).await;
    let mails = smtp.wait_for(1).await;
    let m = &mails[0];
    assert_eq!(m.auth.as_deref(), Some("|relay|smtp-pass"));
    assert_eq!(m.from, "<relay@example.org>");
    assert_eq!(m.to, vec!["<gis@example.org>", "<ops@example.org>"]);
    let data = &m.data;
    assert!(
        data.contains("Subject: [ArcGIS] jdoe shared item 6cd80cb32d4a4b4d858a020e57fba7b1\r\n"),
        "{data}"
    );
    assert!(data.contains("multipart/alternative"), "{data}");
    assert!(
        data.contains("Content-Type: text/plain; charset=utf-8"),
        "{data}"
    );
    assert!(
        data.contains("Content-Type: text/html; charset=utf-8"),
        "{data}"
    );
    assert!(data.contains("By:      jdoe"), "{data}");
    let d = &app.deliveries("").await[0];
    assert!(
        data.contains(&format!(
            "Message-ID: <{}@hookrelay>",
            d["id"].as_str().unwrap()
        )),
        "{data}"
    );
    eventually(Duration::from_secs(10), "delivered", || async {
        app.deliveries("status=delivered").await.len() == 1
    })
    .await;
    assert_eq!(
        app.deliveries("status=delivered").await[0]["last_status"],
        250
    );
    app.stop().await;
}

async fn smtp_4xx_is_retried_and_5xx_is_dead(b: Backend) {
    let busy = Smtp::start().await;
    busy.script([(451, "4.3.0 Try again later")]);
    let refusing = Smtp::start().await;
    refusing.script([(550, "5.1.1 Mailbox unavailable")]);
    let extra = [
        email_sink("busy", &busy, ""),
        email_sink("refusing", &refusing, ""),
    ]
    .join("\n");
    let app = spawn_app(b, &extra).await;
    let v: Value = app
        .post_portal(&fixture("portal-group-addusers.json"))
        .await
        .json()
        .await
        .unwrap();
    busy.wait_for(2).await;
    eventually(
        Duration::from_secs(10),
        "busy delivered, refusing dead",
        || async {
            app.deliveries("status=delivered&sink=busy").await.len() == 1
                && app.deliveries("status=dead&sink=refusing").await.len() == 1
        },
    )
    .await;
    let dead = &app.deliveries("status=dead&sink=refusing").await[0];
    assert_eq!(dead["attempts"], 1);
    assert_eq!(dead["last_status"], 550);
    assert!(
        dead["last_error"]
            .as_str()
            .unwrap()
            .contains("Mailbox unavailable"),
        "{dead}"
    );
    let m: Value = app
        .admin_get(&format!(
            "/api/v1/messages/{}",
            v["message_id"].as_str().unwrap()
        ))
        .await
        .json()
        .await
        .unwrap();
    let busy_d = m["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["sink"] == "busy")
        .unwrap()
        .clone();
    assert_eq!(busy_d["attempts_log"][0]["status"], 451);
    assert!(
        busy_d["attempts_log"][0]["error"]
            .as_str()
            .unwrap()
            .starts_with("SMTP: transient error (451)"),
        "{busy_d}"
    );
    assert_eq!(busy_d["attempts_log"][1]["status"], 250);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(refusing.mails().len(), 1, "a 5xx is not retried");
    app.stop().await;
}
