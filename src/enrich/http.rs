//! One request to ArcGIS and what its answer means. Tokens go in the form
//! body of a POST and in `X-Esri-Authorization: Bearer` on a GET (FACTS
//! B4), so no URL ever carries one; messages show scheme, host and path.

use std::time::{Duration, SystemTime};

use serde_json::Value;
use url::Url;

use super::FetchError;
use crate::arcgis::changes::display_url;
use crate::arcgis::errors::{envelope_error, status_error, ArcgisError, ErrorClass};
use crate::domain::secret::Secret;

/// Largest answer read: a result document of `max_features` large
/// polygons fits; a server streaming without end does not.
pub(crate) const MAX_ANSWER_BYTES: usize = 256 << 20;

/// What to send.
pub(crate) enum Req<'a> {
    /// POST `url` (its query kept as given) with these form fields.
    Post {
        url: &'a Url,
        form: &'a [(&'a str, String)],
    },
    /// GET `url`.
    Get { url: &'a Url },
}

impl Req<'_> {
    fn what(&self) -> String {
        match self {
            Req::Post { url, .. } => format!("POST {}", display_url(url)),
            Req::Get { url } => format!("GET {}", display_url(url)),
        }
    }
}

/// Sends one request and returns its JSON answer, or the error it means:
/// an error envelope inside a 200 and a non-2xx status are classified the
/// same way ([`crate::arcgis::errors::classify`]); a redirect is refused
/// (the client follows none: the token would go where nobody named).
pub(crate) async fn send_json(
    client: &reqwest::Client,
    req: &Req<'_>,
    token: Option<&Secret>,
    timeout: Duration,
) -> Result<Value, FetchError> {
    let what = req.what();
    let builder = match req {
        Req::Post { url, form } => {
            let mut body = form_urlencoded::Serializer::new(String::new());
            for (k, v) in form.iter() {
                body.append_pair(k, v);
            }
            if let Some(t) = token {
                body.append_pair("token", t.expose());
            }
            client
                .post((*url).clone())
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body.finish())
        }
        Req::Get { url } => {
            let mut b = client.get((*url).clone());
            if let Some(t) = token {
                let mut v =
                    reqwest::header::HeaderValue::from_str(&format!("Bearer {}", t.expose()))
                        .map_err(|_| {
                            FetchError::permanent(format!(
                                "{what}: the token is not a valid header value"
                            ))
                        })?;
                v.set_sensitive(true);
                b = b.header("X-Esri-Authorization", v);
            }
            b
        }
    };
    let resp = builder
        .header(reqwest::header::ACCEPT, "application/json")
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| transport(&what, e))?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| crate::sinks::answer::parse_retry_after(v, SystemTime::now()));
    if (300..400).contains(&status) {
        return Err(FetchError::permanent(format!(
            "{what}: answered a redirect (HTTP {status}), which is not followed"
        )));
    }
    let limit = if (200..300).contains(&status) {
        MAX_ANSWER_BYTES
    } else {
        64 * 1024
    };
    let body = read_capped(resp, limit).await.map_err(|e| match e {
        Capped::TooLarge => {
            FetchError::permanent(format!("{what}: answer larger than {limit} bytes"))
        }
        Capped::Transport(e) => transport(&what, e),
    })?;
    if !(200..300).contains(&status) {
        let text = String::from_utf8_lossy(&body);
        return Err(arcgis_error(
            &what,
            status_error(status, &text),
            retry_after,
        ));
    }
    let value: Value = serde_json::from_slice(&body).map_err(|_| FetchError::Retryable {
        message: format!("{what}: HTTP {status} but the answer is not JSON"),
        retry_after,
        source: None,
    })?;
    // A failed job's status carries its reason as `error` beside `status`
    // (FACTS A7): that is the job's answer, for the job parser, not a
    // refusal of this request.
    let job_status = value.get("status").is_some_and(Value::is_string);
    if !job_status {
        if let Some(e) = envelope_error(&value, None) {
            return Err(arcgis_error(&what, e, retry_after));
        }
    }
    Ok(value)
}

enum Capped {
    TooLarge,
    Transport(reqwest::Error),
}

async fn read_capped(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, Capped> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(Capped::Transport)? {
        if out.len() + chunk.len() > limit {
            return Err(Capped::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A transport failure: retryable, its URL stripped (reqwest prints it).
fn transport(what: &str, e: reqwest::Error) -> FetchError {
    let why = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else {
        "request failed"
    };
    FetchError::Retryable {
        message: format!("{what}: {why}"),
        retry_after: None,
        source: Some(Box::new(e.without_url())),
    }
}

/// An ArcGIS error as the [`FetchError`] its class means, with `what`
/// (method, scheme, host, path) in front.
pub(crate) fn arcgis_error(
    what: &str,
    e: ArcgisError,
    retry_after: Option<Duration>,
) -> FetchError {
    let message = format!("{what}: {e}");
    let source: Option<super::BoxError> = Some(Box::new(e.clone()));
    match e.class() {
        ErrorClass::Auth => FetchError::Auth { message, source },
        ErrorClass::Forbidden => FetchError::Forbidden { message, source },
        ErrorClass::NotFound => FetchError::NotFound { message, source },
        ErrorClass::Retryable => FetchError::Retryable {
            message,
            retry_after,
            source,
        },
        ErrorClass::Permanent => FetchError::Permanent { message, source },
    }
}
