//! The `changesUrl` of a feature-service webhook, and the changes document
//! every sink gets once the edits behind it have been fetched.
//!
//! Pure: no request is made here. The fetch stage (`enrich`) normalises
//! the URL, asks [`service_allowed`] whether the source may call it, and
//! fills a [`ChangesDoc`].

use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

/// Longest piece of a URL quoted in an error, so a hostile payload cannot
/// make error rows large.
const QUOTE_MAX: usize = 200;

/// Why a `changesUrl` cannot be used. No message quotes the query string:
/// it may carry a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangesUrlError {
    /// The value is empty or blank.
    #[error("changesUrl is empty")]
    Empty,
    /// It starts with a quote but is not one JSON string (11.5–12.0 wrap it).
    #[error("changesUrl starts with a quote but is not a JSON string")]
    BadJsonString,
    /// Percent-decoding did not give UTF-8 text.
    #[error("changesUrl is percent-encoded but does not decode to UTF-8")]
    BadEncoding,
    /// Not an absolute URL.
    #[error("changesUrl is not an absolute URL")]
    NotUrl,
    /// A scheme other than http and https.
    #[error("changesUrl must be https (or http), not {scheme:?}")]
    Scheme {
        /// The scheme found.
        scheme: String,
    },
    /// User-info in the URL: a credential we were not given to use.
    #[error("changesUrl carries user-info (user:password@), refused")]
    UserInfo,
    /// The path is not a feature service's `extractChanges` operation.
    #[error("changesUrl {at} is not a .../FeatureServer/extractChanges URL")]
    NotExtractChanges {
        /// Scheme, host and path; never the query.
        at: String,
    },
}

/// Turns a webhook's `changesUrl` into a URL, whichever of Esri's forms it
/// arrives in (FACTS D1, D2, contradiction 2): raw (`serverGens=[1,2]`),
/// fully percent-encoded with lowercase hex (`https%3a%2f%2f...`), only the
/// brackets encoded (`%5B1,2%5D`, Enterprise), or wrapped as a JSON string
/// (`"\"https://...\""`, Enterprise 11.5–12.0).
///
/// Percent-decoding happens only when the text does not already start with
/// `http://` or `https://`: a raw URL's own escapes (`%5B`) must stay
/// escapes. The result
/// must be http(s), carry no user-info, and end in
/// `/FeatureServer/extractChanges` (compared case-insensitively, as ArcGIS
/// does); a fragment is dropped.
pub fn normalize_changes_url(raw: &str) -> Result<Url, ChangesUrlError> {
    let mut text = raw.trim().to_string();
    if text.is_empty() {
        return Err(ChangesUrlError::Empty);
    }
    if text.starts_with('"') {
        text = serde_json::from_str::<String>(&text)
            .map_err(|_| ChangesUrlError::BadJsonString)?
            .trim()
            .to_string();
    }
    if !starts_with_http(&text) {
        text = percent_encoding::percent_decode_str(&text)
            .decode_utf8()
            .map_err(|_| ChangesUrlError::BadEncoding)?
            .trim()
            .to_string();
    }
    let mut url = Url::parse(&text).map_err(|_| ChangesUrlError::NotUrl)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ChangesUrlError::Scheme {
            scheme: quote(url.scheme()),
        });
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ChangesUrlError::UserInfo);
    }
    url.set_fragment(None);
    let segments = segments(&url);
    let n = segments.len();
    let ok = n >= 2
        && segments[n - 1].eq_ignore_ascii_case("extractChanges")
        && segments[n - 2].eq_ignore_ascii_case("FeatureServer");
    if !ok {
        return Err(ChangesUrlError::NotExtractChanges {
            at: display_url(&url),
        });
    }
    Ok(url)
}

/// `http://` or `https://` in any case. Not just `http`: Online's fully
/// encoded form starts `https%3a%2f%2f`, so the scheme's letters alone say
/// nothing about whether the text is encoded.
fn starts_with_http(s: &str) -> bool {
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// Scheme, host, port and path of a URL: what errors and logs may show.
/// The query (parameters, maybe a token), user-info and fragment are left
/// out; long paths are cut.
pub fn display_url(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    quote(&format!("{}://{host}{port}{}", url.scheme(), url.path()))
}

fn quote(s: &str) -> String {
    if s.chars().count() <= QUOTE_MAX {
        return s.to_string();
    }
    let cut: String = s.chars().take(QUOTE_MAX).collect();
    format!("{cut}...")
}

/// The path's segments, without empty ones (a trailing slash is not a
/// segment).
fn segments(url: &Url) -> Vec<&str> {
    url.path().split('/').filter(|s| !s.is_empty()).collect()
}

/// Same scheme, host and port (the known default port counts as written).
fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str().map(str::to_ascii_lowercase) == b.host_str().map(str::to_ascii_lowercase)
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Whether `url` lies at or under `service`: same origin, and the service's
/// path segments are a prefix of the URL's (so `.../Parcels/FeatureServer`
/// does not cover `.../Parcels/FeatureServer2`). Segments compare
/// case-insensitively: ArcGIS Online itself writes `/ArcGIS/rest` and
/// `/arcgis/rest` for the same service.
pub fn is_under_service(url: &Url, service: &Url) -> bool {
    if !same_origin(url, service) {
        return false;
    }
    let (u, s) = (segments(url), segments(service));
    s.len() <= u.len() && s.iter().zip(&u).all(|(a, b)| a.eq_ignore_ascii_case(b))
}

/// Whether a normalised changesUrl may be called for a source configured
/// with these service URLs: it must be exactly one service's
/// `extractChanges` operation (the configured service plus one segment),
/// on the same scheme, host and port.
pub fn service_allowed(url: &Url, services: &[Url]) -> bool {
    let n = segments(url).len();
    services
        .iter()
        .any(|s| segments(s).len() + 1 == n && is_under_service(url, s))
}

/// Whether a `statusUrl` or `resultUrl` from a job answer may be followed
/// (with the source's token) for the service the job was started on.
///
/// Those URLs are data from the answer, so they are held to the service:
/// under the service itself (`.../FeatureServer/jobs/<id>`, Online's
/// `.../FeatureServer/replicafiles/<id>.json`), or, on the same origin,
/// under the same site's `rest/directories/` (where ArcGIS Server writes
/// job output: `/server/rest/directories/arcgisjobs/...`). Anything else —
/// another host, another service, another site on the host — is refused.
pub fn job_url_allowed(url: &Url, service: &Url) -> bool {
    if is_under_service(url, service) {
        return true;
    }
    if !same_origin(url, service) {
        return false;
    }
    let s = segments(service);
    let Some(rest) = s.iter().position(|p| p.eq_ignore_ascii_case("rest")) else {
        return false;
    };
    let u = segments(url);
    u.len() > rest + 2
        && s[..rest]
            .iter()
            .zip(&u)
            .all(|(a, b)| a.eq_ignore_ascii_case(b))
        && u[rest].eq_ignore_ascii_case("rest")
        && u[rest + 1].eq_ignore_ascii_case("directories")
}

/// The service URL a changesUrl belongs to: its origin and path without
/// the last segment (`extractChanges`), no query.
pub fn service_of(changes: &Url) -> Url {
    let mut s = changes.clone();
    s.set_query(None);
    s.set_fragment(None);
    let path = changes.path().trim_end_matches('/');
    let cut = path.rfind('/').map_or("", |i| &path[..i]);
    s.set_path(cut);
    s
}

/// The generation window a changesUrl asks for, per layer: `serverGens`
/// as a pair `[min,max]` (every layer) or one value, or `layerServerGens`
/// (`[{"id":0,"serverGen":n}]`). Values ArcGIS does not document are
/// ignored, not refused: the window is a record of what was asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AskedGens {
    /// `serverGens=[min,max]`.
    pub pair: Option<[i64; 2]>,
    /// `serverGens=n`: every change after n.
    pub after: Option<i64>,
    /// `layerServerGens`: layer id -> generation after which changes are asked.
    pub per_layer: Vec<(i64, i64)>,
}

impl AskedGens {
    /// Reads the parameters from a changesUrl's query.
    pub fn from_url(url: &Url) -> AskedGens {
        let mut out = AskedGens::default();
        for (k, v) in url.query_pairs() {
            if k.eq_ignore_ascii_case("serverGens") {
                match serde_json::from_str::<Value>(&v) {
                    Ok(Value::Array(a)) if a.len() == 2 => {
                        if let (Some(x), Some(y)) = (a[0].as_i64(), a[1].as_i64()) {
                            out.pair = Some([x.min(y), x.max(y)]);
                        }
                    }
                    Ok(Value::Array(a)) if a.len() == 1 => out.after = a[0].as_i64(),
                    Ok(Value::Number(n)) => out.after = n.as_i64(),
                    _ => {}
                }
            } else if k.eq_ignore_ascii_case("layerServerGens") {
                if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(&v) {
                    out.per_layer = items
                        .iter()
                        .filter_map(|i| {
                            Some((i.get("id")?.as_i64()?, i.get("serverGen")?.as_i64()?))
                        })
                        .collect();
                }
            }
        }
        out
    }

    /// The window for one layer, given the generation the answer reached:
    /// the pair as asked, or `[after, reached]` when only a start was
    /// asked and the answer says where it ended; else none.
    pub fn window(&self, layer: i64, reached: Option<i64>) -> Option<[i64; 2]> {
        if let Some(p) = self.pair {
            return Some(p);
        }
        let after = self
            .per_layer
            .iter()
            .find(|(id, _)| *id == layer)
            .map(|(_, g)| *g)
            .or(self.after)?;
        Some([after, reached?])
    }
}

/// The edits behind one webhook delivery, shared by every sink: one
/// document whatever route (synchronous answer, asynchronous job, ids then
/// queries) brought them. Serialised as stable JSON, every key always
/// present, in the order below.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChangesDoc {
    /// The feature service URL (`https://.../FeatureServer`), no query.
    pub service: String,
    /// One entry per layer or table the answer names, ordered by id.
    #[serde(default)]
    pub layers: Vec<LayerChanges>,
    /// Whether features were left out to stay within `max_features`.
    #[serde(default)]
    pub truncated: bool,
    /// Features in `adds`, `updates` and `deletes` of every layer (ids in
    /// `delete_ids` are not counted).
    #[serde(default)]
    pub feature_count: u64,
}

/// The changes of one layer (or table).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerChanges {
    /// Layer or table id in the service.
    pub id: i64,
    /// The generation window asked for, `[min, max]`: min exclusive, max
    /// inclusive, as ArcGIS words it (FACTS A2). Absent when the changesUrl
    /// named no window that applies.
    #[serde(default)]
    pub server_gens: Option<[i64; 2]>,
    /// The layer's generation after these changes, from the answer's
    /// `layerServerGens`; what a later backfill would start from.
    #[serde(default)]
    pub server_gen: Option<i64>,
    /// Features added: Esri JSON (`{"attributes":{..},"geometry":{..}}`).
    #[serde(default)]
    pub adds: Vec<Value>,
    /// Features updated, as they are now.
    #[serde(default)]
    pub updates: Vec<Value>,
    /// Features deleted, whole, when the service returned them
    /// (`returnDeletedFeatures=true`).
    #[serde(default)]
    pub deletes: Vec<Value>,
    /// Object ids (numbers, or strings as some services send them) of
    /// deleted features, when only ids were returned.
    #[serde(default)]
    pub delete_ids: Vec<Value>,
}

impl LayerChanges {
    /// Features this layer holds (adds, updates, deletes).
    pub fn feature_count(&self) -> u64 {
        (self.adds.len() + self.updates.len() + self.deletes.len()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: &str = "https://services9.arcgis.com/Xk2pQ7rLm4Tn8VbW/ArcGIS/rest/services/site_inspections/FeatureServer/extractChanges?serverGens=[4410371,4410388]&async=true&returnUpdates=false";

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn every_encoding_form_gives_the_same_url() {
        let full = "https%3a%2f%2fservices9.arcgis.com%2fXk2pQ7rLm4Tn8VbW%2fArcGIS%2frest%2fservices%2fsite_inspections%2fFeatureServer%2fextractChanges%3fserverGens%3d%5b4410371%2c4410388%5d%26async%3dtrue%26returnUpdates%3dfalse";
        let brackets = RAW.replace('[', "%5B").replace(']', "%5D");
        let wrapped = serde_json::to_string(RAW).unwrap();
        let wrapped_encoded = serde_json::to_string(full).unwrap();
        let want = AskedGens::from_url(&normalize_changes_url(RAW).unwrap());
        assert_eq!(want.pair, Some([4410371, 4410388]));
        let padded = format!("  {RAW}\n");
        let forms: [&str; 5] = [full, &brackets, &wrapped, &wrapped_encoded, &padded];
        for form in forms {
            let url = normalize_changes_url(form).unwrap_or_else(|e| panic!("{form}: {e}"));
            assert_eq!(url.host_str(), Some("services9.arcgis.com"), "{form}");
            assert!(
                url.path().ends_with("/FeatureServer/extractChanges"),
                "{form}"
            );
            assert_eq!(AskedGens::from_url(&url), want, "{form}");
            let q: Vec<_> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
            assert_eq!(q, ["serverGens", "async", "returnUpdates"], "{form}");
        }
    }

    #[test]
    fn the_payload_samples_changes_urls_normalise() {
        let online: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/arcgis-rest/payload-online.json"
        ))
        .unwrap();
        let decoded: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/arcgis-rest/payload-online-decoded-changesurl.json"
        ))
        .unwrap();
        let enterprise: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/arcgis-rest/payload-enterprise-feature.json"
        ))
        .unwrap();
        for (v, window) in [
            (&online[0]["changesUrl"], [4410371, 4410388]),
            (&decoded[0]["changesUrl"], [4410371, 4410388]),
            (&enterprise["changesUrl"], [1733068790115, 1733068814902]),
        ] {
            let raw = v.as_str().unwrap();
            let url = normalize_changes_url(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(AskedGens::from_url(&url).pair, Some(window), "{raw}");
            // The 11.5-12.0 form of the same value.
            let wrapped = serde_json::to_string(raw).unwrap();
            assert_eq!(normalize_changes_url(&wrapped).unwrap(), url);
        }
        let url = normalize_changes_url(online[0]["changesUrl"].as_str().unwrap()).unwrap();
        let async_param = url.query_pairs().find(|(k, _)| k == "async");
        assert_eq!(
            async_param.map(|(_, v)| v.into_owned()).as_deref(),
            Some("true")
        );
    }

    #[test]
    fn a_raw_url_keeps_its_own_escapes() {
        // `%2C` inside a raw URL is the URL's business, not a second layer
        // of encoding to strip.
        let url = normalize_changes_url(
            "https://h.example/a/FeatureServer/extractChanges?layers=%5B0%2C1%5D",
        )
        .unwrap();
        assert_eq!(url.query(), Some("layers=%5B0%2C1%5D"));
    }

    #[test]
    fn wrong_urls_say_what_is_wrong_without_the_query() {
        let cases = [
            ("", ChangesUrlError::Empty),
            ("\"https://x", ChangesUrlError::BadJsonString),
            ("not a url", ChangesUrlError::NotUrl),
            ("%ff%fe", ChangesUrlError::BadEncoding),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_changes_url(raw).unwrap_err(), want, "{raw:?}");
        }
        let e =
            normalize_changes_url("ftp://h.example/a/FeatureServer/extractChanges").unwrap_err();
        assert!(e.to_string().contains("\"ftp\""), "{e}");
        let e = normalize_changes_url("https://u:p@h.example/a/FeatureServer/extractChanges")
            .unwrap_err();
        assert_eq!(e, ChangesUrlError::UserInfo);
        let e = normalize_changes_url(
            "https://h.example/a/FeatureServer/0/query?token=SECRETTOKEN123&where=1=1",
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("https://h.example/a/FeatureServer/0/query"),
            "{text}"
        );
        assert!(
            !text.contains("SECRETTOKEN") && !text.contains("where"),
            "{text}"
        );
        let long = format!("https://h.example/{}/x", "a".repeat(5000));
        assert!(normalize_changes_url(&long).unwrap_err().to_string().len() < 400);
    }

    #[test]
    fn path_compare_ignores_case_and_drops_the_fragment() {
        let url =
            normalize_changes_url("https://h.example/A/featureserver/EXTRACTCHANGES#x").unwrap();
        assert_eq!(url.fragment(), None);
    }

    #[test]
    fn services_are_matched_by_origin_and_whole_segments() {
        let services = [u(
            "https://h.example/arcgis/rest/services/Parcels/FeatureServer",
        )];
        let ok = |s: &str| service_allowed(&u(s), &services);
        assert!(ok("https://h.example/arcgis/rest/services/Parcels/FeatureServer/extractChanges?serverGens=[1,2]"));
        assert!(ok(
            "https://H.EXAMPLE:443/ArcGIS/rest/services/parcels/FeatureServer/extractChanges"
        ));
        assert!(!ok(
            "https://h.example/arcgis/rest/services/Parcels/FeatureServer2/extractChanges"
        ));
        assert!(!ok(
            "https://h.example/arcgis/rest/services/Parcels2/FeatureServer/extractChanges"
        ));
        assert!(!ok(
            "http://h.example/arcgis/rest/services/Parcels/FeatureServer/extractChanges"
        ));
        assert!(!ok(
            "https://h.example:8443/arcgis/rest/services/Parcels/FeatureServer/extractChanges"
        ));
        assert!(!ok(
            "https://evil.example/arcgis/rest/services/Parcels/FeatureServer/extractChanges"
        ));
        assert!(!ok(
            "https://h.example.evil.org/arcgis/rest/services/Parcels/FeatureServer/extractChanges"
        ));
        // Deeper than the service's own operation is not its extractChanges.
        assert!(!ok("https://h.example/arcgis/rest/services/Parcels/FeatureServer/x/FeatureServer/extractChanges"));
        // A configured URL with a trailing slash covers the same service.
        let slash = [u(
            "https://h.example/arcgis/rest/services/Parcels/FeatureServer/",
        )];
        let url = normalize_changes_url(
            "https://h.example/arcgis/rest/services/Parcels/FeatureServer/extractChanges",
        )
        .unwrap();
        assert!(service_allowed(&url, &slash));
        assert!(!service_allowed(&url, &[]));
    }

    #[test]
    fn job_urls_stay_on_the_service_or_its_sites_directories() {
        let svc = u("https://h.example/server/rest/services/Hosted/Parcels/FeatureServer");
        for ok in [
            "https://h.example/server/rest/services/Hosted/Parcels/FeatureServer/jobs/3f9c",
            "https://h.example/server/rest/services/Hosted/Parcels/FeatureServer/replicafiles/3f9c.json",
            "https://h.example/server/rest/directories/arcgisjobs/x/3f9c.json",
        ] {
            assert!(job_url_allowed(&u(ok), &svc), "{ok}");
        }
        for bad in [
            "https://evil.example/server/rest/services/Hosted/Parcels/FeatureServer/jobs/3f9c",
            "http://h.example/server/rest/services/Hosted/Parcels/FeatureServer/jobs/3f9c",
            "https://h.example/server/rest/services/Hosted/Other/FeatureServer/jobs/3f9c",
            "https://h.example/server/rest/services/Hosted/Parcels/FeatureServer2/jobs/3f9c",
            "https://h.example/other/rest/directories/arcgisjobs/3f9c.json",
            "https://h.example/server/rest/directories",
            "https://h.example/admin/x",
        ] {
            assert!(!job_url_allowed(&u(bad), &svc), "{bad}");
        }
        // The sample's Online status URL, under the sample's service.
        let online = u("https://services9.arcgis.com/Xk2pQ7rLm4Tn8VbW/ArcGIS/rest/services/site_inspections/FeatureServer");
        assert!(job_url_allowed(
            &u("https://services9.arcgis.com/Xk2pQ7rLm4Tn8VbW/ArcGIS/rest/services/site_inspections/FeatureServer/jobs/3f9c1e27-5b8a-4d6e-9c02-7a41d8e6b5f3"),
            &online
        ));
    }

    #[test]
    fn service_and_windows_come_from_the_url() {
        let url = normalize_changes_url(RAW).unwrap();
        assert_eq!(
            service_of(&url).as_str(),
            "https://services9.arcgis.com/Xk2pQ7rLm4Tn8VbW/ArcGIS/rest/services/site_inspections/FeatureServer"
        );
        let g = AskedGens::from_url(&url);
        assert_eq!(g.window(0, Some(9)), Some([4410371, 4410388]));
        let one = u("https://h.example/a/FeatureServer/extractChanges?serverGens=17");
        assert_eq!(
            AskedGens::from_url(&one).window(3, Some(20)),
            Some([17, 20])
        );
        assert_eq!(AskedGens::from_url(&one).window(3, None), None);
        let per = u("https://h.example/a/FeatureServer/extractChanges?layerServerGens=[{\"id\":1,\"serverGen\":5}]");
        let g = AskedGens::from_url(&per);
        assert_eq!(g.window(1, Some(8)), Some([5, 8]));
        assert_eq!(g.window(0, Some(8)), None);
        let reversed = u("https://h.example/a/FeatureServer/extractChanges?serverGens=[9,3]");
        assert_eq!(AskedGens::from_url(&reversed).pair, Some([3, 9]));
    }

    #[test]
    fn the_document_serialises_every_key_in_order() {
        let doc = ChangesDoc {
            service: "https://h.example/a/FeatureServer".into(),
            layers: vec![LayerChanges {
                id: 0,
                server_gens: Some([1, 2]),
                server_gen: Some(2),
                adds: vec![serde_json::json!({"attributes":{"OBJECTID":1}})],
                ..Default::default()
            }],
            truncated: false,
            feature_count: 1,
        };
        let text = serde_json::to_string(&doc).unwrap();
        assert_eq!(
            text,
            r#"{"service":"https://h.example/a/FeatureServer","layers":[{"id":0,"server_gens":[1,2],"server_gen":2,"adds":[{"attributes":{"OBJECTID":1}}],"updates":[],"deletes":[],"delete_ids":[]}],"truncated":false,"feature_count":1}"#
        );
        assert_eq!(serde_json::from_str::<ChangesDoc>(&text).unwrap(), doc);
    }
}
