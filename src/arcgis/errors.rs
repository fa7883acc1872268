//! ArcGIS REST errors: the `{"error":{...}}` envelope that usually comes
//! with HTTP 200 (FACTS A8), and real HTTP statuses, classified into one
//! set of classes so the fetch stage decides the same way for both.

use serde_json::Value;

/// Longest ArcGIS message kept in an error: enough to read, not enough for
/// a hostile server to fill error rows.
pub const MESSAGE_MAX: usize = 200;

/// What an error means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The token is missing, invalid or expired (498, 499, 401,
    /// `messageCode` `GWM_0003` other than with 403, "Unable to generate
    /// token", "invalid token"): refresh it and try once more.
    Auth,
    /// 403: the token was accepted but its identity may not do this. A new
    /// token of the same identity has the same rights, so no refresh.
    Forbidden,
    /// 404, or code 400 saying the service or layer "does not exist" / is
    /// "not found" (ArcGIS Server's way of saying 404 inside a 200).
    NotFound,
    /// 408, 425, 429 and 5xx (also as `code` inside a 200 body: ArcGIS
    /// reports "Unable to complete operation" as code 500 there).
    Retryable,
    /// Every other 4xx, and codes ArcGIS does not document.
    Permanent,
}

/// An error an ArcGIS answer reports, or an answer that is not what the
/// protocol says it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArcgisError {
    /// The server said no: an error envelope, or a non-2xx status.
    #[error("{}", describe(.status, .code, .message_code, .message))]
    Service {
        /// What the error means.
        class: ErrorClass,
        /// HTTP status, when it was not 2xx.
        status: Option<u16>,
        /// The envelope's `code`.
        code: Option<i64>,
        /// The envelope's `messageCode` (`GWM_0003`).
        message_code: Option<String>,
        /// `message` and `details`, cut to [`MESSAGE_MAX`] characters.
        message: String,
    },
    /// JSON, but not of the shape expected (says which key is missing).
    #[error("unexpected ArcGIS answer: {0}")]
    Unexpected(String),
}

impl ArcgisError {
    /// The class of the error; an unexpected answer is permanent (the same
    /// request will get the same answer).
    pub fn class(&self) -> ErrorClass {
        match self {
            ArcgisError::Service { class, .. } => *class,
            ArcgisError::Unexpected(_) => ErrorClass::Permanent,
        }
    }
}

fn describe(
    status: &Option<u16>,
    code: &Option<i64>,
    mc: &Option<String>,
    message: &str,
) -> String {
    let mut out = String::new();
    if let Some(s) = status {
        out.push_str(&format!("HTTP {s}"));
    }
    if let Some(c) = code {
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(&format!("ArcGIS error {c}"));
    }
    if let Some(m) = mc {
        out.push_str(&format!(" ({m})"));
    }
    if out.is_empty() {
        out.push_str("ArcGIS error");
    }
    if !message.is_empty() {
        out.push_str(": ");
        out.push_str(message);
    }
    out
}

/// Cuts text to [`MESSAGE_MAX`] characters, on one line.
pub fn trim_message(s: &str) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let t = one_line.trim();
    if t.chars().count() <= MESSAGE_MAX {
        return t.to_string();
    }
    let cut: String = t.chars().take(MESSAGE_MAX).collect();
    format!("{cut}...")
}

/// Classifies an error from the HTTP status (when not 2xx), the
/// envelope's `code` and `messageCode`, and its text (message and
/// details). The HTTP status wins when it is itself an error; the body
/// refines a 4xx ("invalid token" in a 400 is an auth error, as ArcGIS
/// API for Python reads it).
pub fn classify(
    status: Option<u16>,
    code: Option<i64>,
    message_code: Option<&str>,
    text: &str,
) -> ErrorClass {
    let lower = text.to_ascii_lowercase();
    let auth_text = lower.contains("invalid token") || lower.contains("unable to generate token");
    let effective = match (status, code) {
        (Some(s), _) if !(200..300).contains(&s) => i64::from(s),
        (_, Some(c)) => c,
        _ => 0,
    };
    match effective {
        401 | 498 | 499 => ErrorClass::Auth,
        403 => ErrorClass::Forbidden,
        404 | 410 => ErrorClass::NotFound,
        408 | 425 | 429 | 500..=599 => ErrorClass::Retryable,
        _ if message_code.is_some_and(|m| m.eq_ignore_ascii_case("GWM_0003")) || auth_text => {
            ErrorClass::Auth
        }
        400 if lower.contains("does not exist") || lower.contains("not found") => {
            ErrorClass::NotFound
        }
        _ => ErrorClass::Permanent,
    }
}

/// The error an answer body reports, if it is an error envelope:
/// `{"error":{"code":..,"message":..,"messageCode":..,"details":[..]}}`
/// (OAuth errors add `error`/`error_description` inside). `status` is the
/// HTTP status when it was not 2xx, so a JSON error body on a real 4xx/5xx
/// is read too.
pub fn envelope_error(body: &Value, status: Option<u16>) -> Option<ArcgisError> {
    let e = body.get("error")?;
    let (code, message_code, text) = match e {
        Value::Object(_) => {
            let code = e.get("code").and_then(int_of);
            let mc = e
                .get("messageCode")
                .and_then(Value::as_str)
                .map(str::to_string);
            let mut parts: Vec<String> = Vec::new();
            for k in ["message", "error_description", "error"] {
                if let Some(s) = e.get(k).and_then(Value::as_str) {
                    if !s.is_empty() && !parts.iter().any(|p| p == s) {
                        parts.push(s.to_string());
                    }
                }
            }
            for d in e
                .get("details")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(s) = d.as_str() {
                    if !s.is_empty() && !parts.iter().any(|p| p == s) {
                        parts.push(s.to_string());
                    }
                }
            }
            (code, mc, parts.join(" "))
        }
        Value::String(s) => (None, None, s.clone()),
        _ => (None, None, String::new()),
    };
    let class = classify(status, code, message_code.as_deref(), &text);
    Some(ArcgisError::Service {
        class,
        status,
        code,
        message_code,
        message: trim_message(&text),
    })
}

/// An error for a non-2xx status whose body is not an error envelope
/// (a proxy's page, plain text): classified from the status and the text.
pub fn status_error(status: u16, body_text: &str) -> ArcgisError {
    if let Ok(v) = serde_json::from_str::<Value>(body_text) {
        if let Some(e) = envelope_error(&v, Some(status)) {
            return e;
        }
    }
    ArcgisError::Service {
        class: classify(Some(status), None, None, body_text),
        status: Some(status),
        code: None,
        message_code: None,
        message: String::new(),
    }
}

/// A number or a numeric string as an integer (ArcGIS writes both).
pub(crate) fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> Value {
        let text = match name {
            "error-498" => include_str!("../../tests/fixtures/arcgis-rest/error-498.json"),
            "error-499" => include_str!("../../tests/fixtures/arcgis-rest/error-499.json"),
            "error-403" => include_str!("../../tests/fixtures/arcgis-rest/error-403.json"),
            "error-400-generate-token" => {
                include_str!("../../tests/fixtures/arcgis-rest/error-400-generate-token.json")
            }
            _ => unreachable!(),
        };
        serde_json::from_str(text).unwrap()
    }

    fn class_of(v: &Value, status: Option<u16>) -> ErrorClass {
        envelope_error(v, status).unwrap().class()
    }

    #[test]
    fn sample_envelopes_classify() {
        assert_eq!(class_of(&sample("error-498"), None), ErrorClass::Auth);
        assert_eq!(class_of(&sample("error-499"), None), ErrorClass::Auth);
        assert_eq!(class_of(&sample("error-403"), None), ErrorClass::Forbidden);
        assert_eq!(
            class_of(&sample("error-400-generate-token"), None),
            ErrorClass::Auth
        );
        let e = envelope_error(&sample("error-499"), None).unwrap();
        assert_eq!(e.to_string(), "ArcGIS error 499 (GWM_0003): Token Required");
        let e = envelope_error(&sample("error-400-generate-token"), None).unwrap();
        assert_eq!(
            e.to_string(),
            "ArcGIS error 400: Unable to generate token. Invalid username or password."
        );
    }

    #[test]
    fn codes_and_statuses_classify_like_http() {
        let env = |code: i64, msg: &str| serde_json::json!({"error":{"code":code,"message":msg}});
        assert_eq!(
            class_of(&env(500, "Unable to complete operation."), None),
            ErrorClass::Retryable
        );
        assert_eq!(class_of(&env(503, "x"), None), ErrorClass::Retryable);
        assert_eq!(class_of(&env(429, "x"), None), ErrorClass::Retryable);
        assert_eq!(class_of(&env(404, "x"), None), ErrorClass::NotFound);
        assert_eq!(
            class_of(&env(400, "Layer 7 does not exist"), None),
            ErrorClass::NotFound
        );
        assert_eq!(
            class_of(&env(400, "Service not found"), None),
            ErrorClass::NotFound
        );
        assert_eq!(
            class_of(&env(400, "'layers' parameter is invalid"), None),
            ErrorClass::Permanent
        );
        assert_eq!(class_of(&env(400, "Invalid Token"), None), ErrorClass::Auth);
        assert_eq!(class_of(&env(10, "x"), None), ErrorClass::Permanent);
        // A 200 body code is read; a real status wins over it.
        assert_eq!(class_of(&env(400, "x"), Some(503)), ErrorClass::Retryable);
        // GWM_0003 alone (not with 403) is an auth error.
        let v = serde_json::json!({"error":{"code":400,"messageCode":"GWM_0003","message":"x"}});
        assert_eq!(class_of(&v, None), ErrorClass::Auth);
        for (s, want) in [
            (401, ErrorClass::Auth),
            (498, ErrorClass::Auth),
            (499, ErrorClass::Auth),
            (403, ErrorClass::Forbidden),
            (404, ErrorClass::NotFound),
            (429, ErrorClass::Retryable),
            (500, ErrorClass::Retryable),
            (502, ErrorClass::Retryable),
            (503, ErrorClass::Retryable),
            (504, ErrorClass::Retryable),
            (400, ErrorClass::Permanent),
            (422, ErrorClass::Permanent),
        ] {
            assert_eq!(status_error(s, "<html>oops</html>").class(), want, "{s}");
        }
        assert_eq!(status_error(400, "Invalid token").class(), ErrorClass::Auth);
        assert_eq!(
            status_error(498, &sample("error-498").to_string()).class(),
            ErrorClass::Auth
        );
        assert!(status_error(503, "").to_string().starts_with("HTTP 503"));
    }

    #[test]
    fn oauth_error_shapes_and_long_messages() {
        let v = serde_json::json!({"error":{"code":400,"error":"invalid_client","error_description":"Invalid client_id","message":"Invalid client_id","details":[]}});
        let e = envelope_error(&v, None).unwrap();
        assert_eq!(e.class(), ErrorClass::Permanent);
        assert!(
            e.to_string().contains("Invalid client_id invalid_client"),
            "{e}"
        );
        let long = serde_json::json!({"error":{"code":400,"message":"x\n".repeat(1000)}});
        assert!(envelope_error(&long, None).unwrap().to_string().len() < MESSAGE_MAX + 40);
        assert!(envelope_error(&serde_json::json!({"edits":[]}), None).is_none());
        let s = serde_json::json!({"error":"boom"});
        assert_eq!(
            envelope_error(&s, None).unwrap().class(),
            ErrorClass::Permanent
        );
    }
}
