//! What ArcGIS answers to extractChanges, its job status resource, a
//! layer query, and the two token endpoints, as typed values. Tolerant
//! where Esri contradicts itself (FACTS A6, A7, B1, B2): `statusUrl` or
//! `statusURL`, `deleteIds` or `deletes`, `expires` as a number or a string.

use serde_json::{Map, Value};

use super::changes::LayerChanges;
use super::errors::{envelope_error, int_of, trim_message, ArcgisError};

/// An extractChanges answer (synchronous, or the document at a job's
/// `resultUrl`).
#[derive(Debug, Clone, PartialEq)]
pub enum ExtractAnswer {
    /// Edits with features, one entry per layer (`server_gens` not yet
    /// set: that is what was asked, not what was answered).
    Edits(Vec<LayerChanges>),
    /// `async=true`: the job to poll.
    Job {
        /// `statusUrl` (or `statusURL`, FACTS contradiction 5), as given.
        status_url: String,
    },
    /// `returnIdsOnly=true`, or a service that can only return ids: object
    /// ids per layer, features to be queried.
    IdsOnly(Vec<LayerIds>),
}

/// The object ids of one layer's changes (`edits[].objectIds`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LayerIds {
    /// Layer or table id.
    pub id: i64,
    /// From the answer's `layerServerGens`.
    pub server_gen: Option<i64>,
    /// Object ids added.
    pub adds: Vec<i64>,
    /// Object ids updated.
    pub updates: Vec<i64>,
    /// Object ids deleted, as given (numbers or strings).
    pub deletes: Vec<Value>,
}

/// Where an asynchronous job is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStatus {
    /// Not finished (`Pending`, `InProgress`, `Executing`, the export and
    /// import steps, and any status name ArcGIS adds later: the poll's
    /// timeout bounds an unknown one).
    Running,
    /// `Completed` or `CompletedWithErrors`, with the result document's URL.
    Done {
        /// `resultUrl`, as given.
        result_url: String,
        /// `CompletedWithErrors`.
        with_errors: bool,
    },
    /// `Failed` (or cancelled), with the first message any key carries.
    Failed {
        /// From `statusMessage`, `error` (object or text) or `message`.
        message: Option<String>,
    },
}

/// A token an endpoint issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The token itself.
    pub token: String,
    /// When it expires (epoch ms), if the answer says.
    pub expires_at_ms: Option<i64>,
}

fn unexpected(what: impl Into<String>) -> ArcgisError {
    ArcgisError::Unexpected(what.into())
}

/// `layerServerGens: [{"id":0,"serverGen":n}]` as pairs.
fn layer_server_gens(v: &Value) -> Vec<(i64, i64)> {
    v.get("layerServerGens")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|g| {
            Some((
                g.get("id").and_then(int_of)?,
                g.get("serverGen").and_then(int_of)?,
            ))
        })
        .collect()
}

fn values(obj: Option<&Value>, key: &str) -> Vec<Value> {
    obj.and_then(|o| o.get(key))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn ids(obj: Option<&Value>, key: &str, at: &str) -> Result<Vec<i64>, ArcgisError> {
    values(obj, key)
        .iter()
        .map(|v| {
            int_of(v).ok_or_else(|| unexpected(format!("{at}.{key} holds a non-integer object id")))
        })
        .collect()
}

/// Reads an extractChanges answer. An error envelope is returned as the
/// error it reports. A `statusUrl` makes it a job; `edits[]` whose items
/// carry `objectIds` make it ids-only; `edits[]` with `features` are
/// edits. Layers named only in `layerServerGens` get an empty entry, so
/// every layer's generation is kept. Entries are ordered by layer id.
pub fn parse_extract_answer(v: &Value) -> Result<ExtractAnswer, ArcgisError> {
    if let Some(e) = envelope_error(v, None) {
        return Err(e);
    }
    if !v.is_object() {
        return Err(unexpected("not a JSON object"));
    }
    for key in ["statusUrl", "statusURL"] {
        if let Some(url) = v.get(key).and_then(Value::as_str) {
            return Ok(ExtractAnswer::Job {
                status_url: url.to_string(),
            });
        }
    }
    let Some(edits) = v.get("edits").and_then(Value::as_array) else {
        return Err(unexpected("neither edits nor statusUrl"));
    };
    let gens = layer_server_gens(v);
    let gen_of = |id: i64| gens.iter().find(|(l, _)| *l == id).map(|(_, g)| *g);
    let ids_only = edits.iter().any(|e| e.get("objectIds").is_some());
    let layer_id = |i: usize, e: &Value| -> Result<i64, ArcgisError> {
        e.get("id")
            .or_else(|| e.get("layerId"))
            .and_then(int_of)
            .ok_or_else(|| unexpected(format!("edits[{i}] has no layer id")))
    };
    if ids_only {
        let mut out = Vec::with_capacity(edits.len());
        for (i, e) in edits.iter().enumerate() {
            let id = layer_id(i, e)?;
            let o = e.get("objectIds");
            let at = format!("edits[{i}].objectIds");
            out.push(LayerIds {
                id,
                server_gen: gen_of(id),
                adds: ids(o, "adds", &at)?,
                updates: ids(o, "updates", &at)?,
                deletes: values(o, "deletes")
                    .into_iter()
                    .chain(values(o, "deleteIds"))
                    .collect(),
            });
        }
        for (id, g) in &gens {
            if !out.iter().any(|l| l.id == *id) {
                out.push(LayerIds {
                    id: *id,
                    server_gen: Some(*g),
                    ..Default::default()
                });
            }
        }
        out.sort_by_key(|l| l.id);
        return Ok(ExtractAnswer::IdsOnly(out));
    }
    let mut out = Vec::with_capacity(edits.len());
    for (i, e) in edits.iter().enumerate() {
        let id = layer_id(i, e)?;
        let f = e.get("features");
        out.push(LayerChanges {
            id,
            server_gens: None,
            server_gen: gen_of(id),
            adds: values(f, "adds"),
            updates: values(f, "updates"),
            deletes: values(f, "deletes"),
            delete_ids: values(f, "deleteIds"),
        });
    }
    for (id, g) in &gens {
        if !out.iter().any(|l| l.id == *id) {
            out.push(LayerChanges {
                id: *id,
                server_gen: Some(*g),
                ..Default::default()
            });
        }
    }
    out.sort_by_key(|l| l.id);
    Ok(ExtractAnswer::Edits(out))
}

/// The first message a failed job carries: `statusMessage`, then `error`
/// (an envelope-like object's message and details, or text), then
/// `message`.
fn failure_message(v: &Map<String, Value>) -> Option<String> {
    if let Some(s) = v.get("statusMessage").and_then(Value::as_str) {
        return Some(trim_message(s));
    }
    match v.get("error") {
        Some(Value::String(s)) => return Some(trim_message(s)),
        Some(e @ Value::Object(_)) => {
            let wrapped = serde_json::json!({ "error": e });
            if let Some(err) = envelope_error(&wrapped, None) {
                return Some(err.to_string());
            }
        }
        _ => {}
    }
    v.get("message").and_then(Value::as_str).map(trim_message)
}

/// Reads a job status answer (`FeatureServer/jobs/<id>?f=json`). Status
/// names compare case-insensitively (REST JS sees `failed`, Python
/// compares upper case). An envelope without `status` is the error it
/// reports (an expired token while polling).
pub fn parse_job_status(v: &Value) -> Result<JobStatus, ArcgisError> {
    let Some(obj) = v.as_object() else {
        return Err(unexpected("job status is not a JSON object"));
    };
    let Some(status) = obj.get("status").and_then(Value::as_str) else {
        if let Some(e) = envelope_error(v, None) {
            return Err(e);
        }
        return Err(unexpected("job status has no status"));
    };
    let s = status.to_ascii_lowercase();
    let s = s.strip_prefix("esrijob").unwrap_or(&s);
    match s {
        "completed" | "completedwitherrors" | "succeeded" => {
            let url = obj
                .get("resultUrl")
                .or_else(|| obj.get("resultURL"))
                .and_then(Value::as_str)
                .filter(|u| !u.is_empty())
                .ok_or_else(|| unexpected("job completed without resultUrl"))?;
            Ok(JobStatus::Done {
                result_url: url.to_string(),
                with_errors: s == "completedwitherrors",
            })
        }
        "failed" | "cancelled" | "canceled" | "timedout" => Ok(JobStatus::Failed {
            message: failure_message(obj),
        }),
        _ => Ok(JobStatus::Running),
    }
}

/// A layer query answer.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryAnswer {
    /// The features, Esri JSON.
    pub features: Vec<Value>,
    /// `objectIdFieldName`, else `OBJECTID`.
    pub object_id_field: String,
    /// `exceededTransferLimit`: the layer's `maxRecordCount` cut the answer.
    pub exceeded: bool,
}

/// Reads a layer query answer.
pub fn parse_query_answer(v: &Value) -> Result<QueryAnswer, ArcgisError> {
    if let Some(e) = envelope_error(v, None) {
        return Err(e);
    }
    let features = v
        .get("features")
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| unexpected("query answer has no features"))?;
    let object_id_field = v
        .get("objectIdFieldName")
        .and_then(Value::as_str)
        .unwrap_or("OBJECTID")
        .to_string();
    let exceeded = v
        .get("exceededTransferLimit")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(QueryAnswer {
        features,
        object_id_field,
        exceeded,
    })
}

/// A feature's object id: the named attribute, else any attribute of that
/// name in another case (services differ: `OBJECTID`, `objectid`).
pub fn object_id(feature: &Value, field: &str) -> Option<i64> {
    let attrs = feature.get("attributes")?.as_object()?;
    attrs
        .get(field)
        .or_else(|| {
            attrs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(field))
                .map(|(_, v)| v)
        })
        .and_then(int_of)
}

/// Reads a generateToken answer (`token`, `expires` in epoch ms as a
/// number or a string) or an OAuth token answer (`access_token`,
/// `expires_in` in seconds, counted from `now_ms`).
pub fn parse_token_answer(v: &Value, now_ms: i64) -> Result<IssuedToken, ArcgisError> {
    if let Some(e) = envelope_error(v, None) {
        return Err(e);
    }
    if let Some(t) = v.get("access_token").and_then(Value::as_str) {
        let expires = v
            .get("expires_in")
            .and_then(int_of)
            .map(|s| now_ms.saturating_add(s.saturating_mul(1000)));
        return Ok(IssuedToken {
            token: t.to_string(),
            expires_at_ms: expires,
        });
    }
    if let Some(t) = v.get("token").and_then(Value::as_str) {
        return Ok(IssuedToken {
            token: t.to_string(),
            expires_at_ms: v.get("expires").and_then(int_of),
        });
    }
    Err(unexpected(
        "token answer has neither token nor access_token",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! sample {
        ($name:literal) => {
            serde_json::from_str::<Value>(include_str!(concat!(
                "../../tests/fixtures/arcgis-rest/",
                $name,
                ".json"
            )))
            .unwrap()
        };
    }

    fn edits(v: &Value) -> Vec<LayerChanges> {
        match parse_extract_answer(v).unwrap() {
            ExtractAnswer::Edits(l) => l,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sync_sample_gives_adds_updates_and_delete_ids() {
        let l = edits(&sample!("extract-changes-sync"));
        assert_eq!(l.len(), 2);
        assert_eq!((l[0].id, l[0].server_gen), (0, Some(4410388)));
        assert_eq!(l[0].adds.len(), 1);
        assert_eq!(l[0].adds[0]["attributes"]["OBJECTID"], 118);
        assert_eq!(l[0].updates[0]["attributes"]["OBJECTID"], 97);
        assert_eq!(l[0].delete_ids, vec![Value::from(54), Value::from(55)]);
        assert!(l[0].deletes.is_empty());
        assert_eq!(l[1].adds[0]["attributes"]["OBJECTID"], 301);
    }

    #[test]
    fn deleted_features_and_result_documents() {
        let l = edits(&sample!("extract-changes-sync-deleted-features"));
        assert_eq!(l[0].deletes[0]["attributes"]["OBJECTID"], 54);
        assert!(l[0].delete_ids.is_empty());
        let l = edits(&sample!("extract-changes-result"));
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].adds.len(), 1);
        assert_eq!(l[1].feature_count(), 0);
    }

    #[test]
    fn ids_only_sample() {
        let ExtractAnswer::IdsOnly(l) =
            parse_extract_answer(&sample!("extract-changes-idsonly")).unwrap()
        else {
            panic!()
        };
        assert_eq!(l[0].adds, [118]);
        assert_eq!(l[0].updates, [97]);
        assert_eq!(l[0].deletes, vec![Value::from(54), Value::from(55)]);
        assert_eq!(
            (l[1].id, l[1].server_gen, l[1].adds.clone()),
            (1, Some(4410388), vec![301])
        );
        let bad = serde_json::json!({"edits":[{"id":0,"objectIds":{"adds":["x"]}}]});
        assert!(parse_extract_answer(&bad).is_err());
    }

    #[test]
    fn async_answers_in_both_spellings() {
        let want = "https://services9.arcgis.com/Xk2pQ7rLm4Tn8VbW/ArcGIS/rest/services/site_inspections/FeatureServer/jobs/3f9c1e27-5b8a-4d6e-9c02-7a41d8e6b5f3";
        let a = parse_extract_answer(&sample!("extract-changes-async")).unwrap();
        assert_eq!(
            a,
            ExtractAnswer::Job {
                status_url: want.into()
            }
        );
        let upper = serde_json::json!({ "statusURL": want });
        assert_eq!(parse_extract_answer(&upper).unwrap(), a);
    }

    #[test]
    fn errors_and_odd_shapes() {
        use super::super::errors::ErrorClass;
        assert_eq!(
            parse_extract_answer(&sample!("error-498"))
                .unwrap_err()
                .class(),
            ErrorClass::Auth
        );
        assert_eq!(
            parse_extract_answer(&sample!("error-403"))
                .unwrap_err()
                .class(),
            ErrorClass::Forbidden
        );
        assert!(matches!(
            parse_extract_answer(&serde_json::json!({"x":1})),
            Err(ArcgisError::Unexpected(_))
        ));
        assert!(parse_extract_answer(&serde_json::json!([1])).is_err());
        assert!(parse_extract_answer(&serde_json::json!({"edits":[{"features":{}}]})).is_err());
        // Layers only in layerServerGens are kept, in id order; `layerId` works too.
        let v = serde_json::json!({"layerServerGens":[{"id":2,"serverGen":"9"},{"id":0,"serverGen":9}],
            "edits":[{"layerId":2,"features":{"adds":[{"attributes":{}}],"deleteIds":["{A}"]}}]});
        let l = edits(&v);
        assert_eq!(l.iter().map(|l| l.id).collect::<Vec<_>>(), [0, 2]);
        assert_eq!(l[1].server_gen, Some(9));
        assert_eq!(l[1].delete_ids, vec![Value::from("{A}")]);
    }

    #[test]
    fn job_statuses() {
        assert_eq!(
            parse_job_status(&sample!("extract-changes-status-pending")).unwrap(),
            JobStatus::Running
        );
        assert_eq!(
            parse_job_status(&sample!("extract-changes-status-completed")).unwrap(),
            JobStatus::Done {
                result_url: "https://services9.arcgis.com/Xk2pQ7rLm4Tn8VbW/ArcGIS/rest/services/site_inspections/FeatureServer/replicafiles/3f9c1e27-5b8a-4d6e-9c02-7a41d8e6b5f3.json".into(),
                with_errors: false
            }
        );
        assert_eq!(
            parse_job_status(&sample!("extract-changes-status-failed")).unwrap(),
            JobStatus::Failed {
                message: Some("ArcGIS error 400: Unable to extract changes.".into())
            }
        );
        for s in [
            "InProgress",
            "EXECUTING",
            "esriJobExecuting",
            "ExportChanges",
            "ProvisioningReplica",
            "Something New",
        ] {
            assert_eq!(
                parse_job_status(&serde_json::json!({ "status": s })).unwrap(),
                JobStatus::Running,
                "{s}"
            );
        }
        let v = serde_json::json!({"status":"failed","statusMessage":"disk full"});
        assert_eq!(
            parse_job_status(&v).unwrap(),
            JobStatus::Failed {
                message: Some("disk full".into())
            }
        );
        let v = serde_json::json!({"status":"Failed","message":"m"});
        assert_eq!(
            parse_job_status(&v).unwrap(),
            JobStatus::Failed {
                message: Some("m".into())
            }
        );
        assert_eq!(
            parse_job_status(&serde_json::json!({"status":"Failed"})).unwrap(),
            JobStatus::Failed { message: None }
        );
        let v = serde_json::json!({"status":"CompletedWithErrors","resultUrl":"https://h/x"});
        assert!(matches!(
            parse_job_status(&v).unwrap(),
            JobStatus::Done {
                with_errors: true,
                ..
            }
        ));
        assert!(parse_job_status(&serde_json::json!({"status":"Completed"})).is_err());
        assert!(parse_job_status(&sample!("error-498")).is_err());
    }

    #[test]
    fn token_answers() {
        let t = parse_token_answer(&sample!("generate-token"), 0).unwrap();
        assert_eq!(t.expires_at_ms, Some(1733072415000));
        let t = parse_token_answer(&sample!("server-admin-generate-token"), 0).unwrap();
        assert_eq!(t.expires_at_ms, Some(1733073815000));
        let t = parse_token_answer(&sample!("oauth-token"), 1_000).unwrap();
        assert_eq!(t.expires_at_ms, Some(1_000 + 7200 * 1000));
        assert!(t.token.starts_with("3NKH"));
        // A user grant answers the same way, plus keys we do not use.
        let t = parse_token_answer(&sample!("oauth-token-authorization-code"), 0).unwrap();
        assert_eq!(t.expires_at_ms, Some(1800 * 1000));
        assert!(parse_token_answer(&sample!("error-400-generate-token"), 0).is_err());
        assert!(parse_token_answer(&serde_json::json!({}), 0).is_err());
    }

    #[test]
    fn query_answers_and_object_ids() {
        let v =
            serde_json::json!({"objectIdFieldName":"FID","features":[{"attributes":{"fid":3}}]});
        let q = parse_query_answer(&v).unwrap();
        assert_eq!(
            (object_id(&q.features[0], &q.object_id_field), q.exceeded),
            (Some(3), false)
        );
        let v = serde_json::json!({"features":[],"exceededTransferLimit":true});
        let q = parse_query_answer(&v).unwrap();
        assert_eq!((q.object_id_field.as_str(), q.exceeded), ("OBJECTID", true));
        assert!(parse_query_answer(&serde_json::json!({})).is_err());
    }
}
