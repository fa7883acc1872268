//! The session of a logged-in browser, and the two extractors through which
//! every `POST` of the page reaches its form:
//!
//! - [`CsrfForm<T>`]: the same-origin check (`Sec-Fetch-Site` / `Origin`),
//!   a live session in the store, the session's CSRF token in the form,
//!   then `T` decoded from the rest of the form;
//! - [`SameOriginForm<T>`]: the same-origin check and decoding only, for
//!   the login (which has no session yet; login CSRF is what the origin
//!   check stops).
//!
//! The checks run in that order and each refusal answers as the page always
//! did: another site 403, no session `303 /login`, a store that cannot say
//! 503, a missing or wrong token 403; a form that does not decode into `T`
//! answers 400 naming the field. See [`crate::admin::auth`] for why each
//! check is there.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::pages;
use crate::admin::auth::{self, csrf_for, csrf_ok, same_origin, session_cookie};
use crate::admin::html::{harden, see_other};
use crate::admin::AdminState;
use crate::store::{now_ms, StoreError};

/// The form field that carries the CSRF token.
const CSRF_FIELD: &str = "csrf";

/// A logged-in browser: its session id (the cookie's value) and the CSRF
/// token its forms carry.
pub(super) struct Session {
    pub id: String,
    pub csrf: String,
}

/// The request's session, if it names a live one (checked in the store:
/// see [`crate::admin::auth`]).
pub(super) async fn session(
    st: &AdminState,
    headers: &HeaderMap,
) -> Result<Option<Session>, StoreError> {
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

/// A page form that passed every check: the session it was posted in and
/// its fields as `T` (the `csrf` field is checked and taken out first).
pub(super) struct CsrfForm<T> {
    pub session: Session,
    pub form: T,
}

/// A form posted from a page of this origin (the login form).
pub(super) struct SameOriginForm<T>(pub T);

/// Why a form post was refused.
#[derive(Debug)]
pub(super) enum Refusal {
    /// The browser says it came from another site.
    CrossSite,
    /// No live session: log in first.
    NoSession,
    /// The store cannot say whether the session is live.
    StoreDown(StoreError),
    /// No CSRF token, or not this session's.
    Forged,
    /// The body could not be read (too large, broken connection).
    Body(BytesRejection),
    /// The fields do not make a `T`; says which and why.
    Invalid(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::CrossSite => pages::refused("This request came from another site."),
            Refusal::NoSession => see_other("/login"),
            Refusal::StoreDown(e) => pages::session_trouble(&e),
            Refusal::Forged => {
                pages::refused("The form is stale or forged; reload the page and try again.")
            }
            Refusal::Body(r) => harden(r.into_response()),
            Refusal::Invalid(why) => pages::bad_form(&why),
        }
    }
}

impl<T> FromRequest<Arc<AdminState>> for CsrfForm<T>
where
    T: DeserializeOwned + Send,
{
    type Rejection = Refusal;

    async fn from_request(req: Request, st: &Arc<AdminState>) -> Result<Self, Refusal> {
        if !same_origin(req.headers()) {
            return Err(Refusal::CrossSite);
        }
        let session = match session(st, req.headers()).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err(Refusal::NoSession),
            Err(e) => return Err(Refusal::StoreDown(e)),
        };
        let mut fields = read_fields(req, st).await?;
        let presented = take_csrf(&mut fields);
        if !csrf_ok(
            st.config.admin.token.as_ref(),
            &session.id,
            presented.as_deref(),
        ) {
            return Err(Refusal::Forged);
        }
        Ok(CsrfForm {
            session,
            form: decode(fields)?,
        })
    }
}

impl<T> FromRequest<Arc<AdminState>> for SameOriginForm<T>
where
    T: DeserializeOwned + Send,
{
    type Rejection = Refusal;

    async fn from_request(req: Request, st: &Arc<AdminState>) -> Result<Self, Refusal> {
        if !same_origin(req.headers()) {
            return Err(Refusal::CrossSite);
        }
        let fields = read_fields(req, st).await?;
        Ok(SameOriginForm(decode(fields)?))
    }
}

/// The body's `application/x-www-form-urlencoded` fields, in order. The
/// body is read with the listener's body limit.
async fn read_fields(req: Request, st: &Arc<AdminState>) -> Result<Vec<(String, String)>, Refusal> {
    let body = Bytes::from_request(req, st).await.map_err(Refusal::Body)?;
    Ok(form_urlencoded::parse(&body).into_owned().collect())
}

/// Takes every `csrf` field out of the form; the token when there was
/// exactly one (two tokens are no token: which one would count?).
fn take_csrf(fields: &mut Vec<(String, String)>) -> Option<String> {
    let mut found = Vec::new();
    fields.retain(|(k, v)| {
        if k == CSRF_FIELD {
            found.push(v.clone());
            false
        } else {
            true
        }
    });
    match <[String; 1]>::try_from(found) {
        Ok([token]) => Some(token),
        Err(_) => None,
    }
}

/// Decodes the form's fields into `T`. Fields are text: `T`'s fields are
/// `String` or `Option<String>` (a field the form may leave out). A field
/// given twice, a missing one or one of the wrong shape is refused with
/// its name.
pub(super) fn decode<T: DeserializeOwned>(fields: Vec<(String, String)>) -> Result<T, Refusal> {
    let mut seen = HashSet::new();
    let mut map = serde_json::Map::new();
    for (k, v) in fields {
        if !seen.insert(k.clone()) {
            return Err(Refusal::Invalid(format!(
                "The form field `{k}` is given more than once."
            )));
        }
        map.insert(k, serde_json::Value::String(v));
    }
    serde_path_to_error::deserialize(serde_json::Value::Object(map)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        Refusal::Invalid(if path == "." {
            // A missing field: serde's message names it.
            format!("The form is not valid: {inner}.")
        } else {
            format!("The form field `{path}` is not valid: {inner}.")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Sample {
        name: String,
        back: Option<String>,
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn invalid(r: Result<Sample, Refusal>) -> String {
        match r {
            Err(Refusal::Invalid(why)) => why,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn forms_decode_and_refusals_name_the_field() {
        let s: Sample = decode(pairs(&[("name", "a"), ("extra", "x")])).unwrap();
        assert_eq!((s.name.as_str(), s.back), ("a", None));
        let s: Sample = decode(pairs(&[("back", "/"), ("name", "")])).unwrap();
        assert_eq!(s.back.as_deref(), Some("/"));

        let why = invalid(decode(pairs(&[("back", "/")])));
        assert!(why.contains("`name`"), "{why}");
        let why = invalid(decode(pairs(&[
            ("name", "a"),
            ("back", "/"),
            ("back", "/x"),
        ])));
        assert!(
            why.contains("`back`") && why.contains("more than once"),
            "{why}"
        );

        #[derive(Debug, Deserialize)]
        struct Numbered {
            #[allow(dead_code)]
            count: u32,
        }
        match decode::<Numbered>(pairs(&[("count", "x")])) {
            Err(Refusal::Invalid(why)) => assert!(why.contains("`count`"), "{why}"),
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn exactly_one_csrf_token_counts() {
        let mut f = pairs(&[("csrf", "t"), ("back", "/")]);
        assert_eq!(take_csrf(&mut f).as_deref(), Some("t"));
        assert_eq!(f, pairs(&[("back", "/")]));
        let mut f = pairs(&[("csrf", "t"), ("csrf", "t")]);
        assert_eq!(take_csrf(&mut f), None);
        assert!(f.is_empty());
        assert_eq!(take_csrf(&mut pairs(&[("back", "/")])), None);
    }
}
