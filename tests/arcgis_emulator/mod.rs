//! An ArcGIS REST emulator for the fetch tests: a real axum server on
//! 127.0.0.1:0 with one feature service (`Parcels`) under
//! `/arcgis/rest/services`, the Portal token endpoints under
//! `/arcgis/sharing/rest`, and the Server one at `/arcgis/tokens`. Written
//! from `shared/fixtures/arcgis/rest/FACTS.md`; each behaviour names its
//! section. Tests drive it through [`Emulator`]: edit features, flip
//! switches, script answers, read the request log.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

/// The service every test talks to.
pub const SERVICE: &str = "Parcels";

/// How a request carried its token (FACTS B4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenVia {
    Query,
    Form,
    EsriHeader,
    Authorization,
}

/// One request as the emulator saw it. `params` merges query and form
/// (form wins); the token is never in `params`.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub token_via: Option<TokenVia>,
    pub token: Option<String>,
    pub query: BTreeMap<String, String>,
    pub form: BTreeMap<String, String>,
    pub params: BTreeMap<String, String>,
}

impl Logged {
    pub fn param(&self, k: &str) -> Option<&str> {
        self.params.get(k).map(String::as_str)
    }
}

/// What the emulator does; tests change it with [`Emulator::set`].
#[derive(Debug, Clone)]
pub struct Switches {
    /// Services refuse requests without a valid token (499 / 498, FACTS A8).
    pub require_token: bool,
    /// Static tokens accepted (API keys, FACTS B3).
    pub api_keys: Vec<String>,
    /// generateToken users (FACTS B1).
    pub users: Vec<(String, String)>,
    /// OAuth applications (FACTS B2).
    pub clients: Vec<(String, String)>,
    /// Lifetime of issued tokens, on the emulator's own clock.
    pub token_lifetime: Duration,
    /// generateToken answers `expires` as a string (Server admin, FACTS B1).
    pub expires_as_string: bool,
    /// Auth errors come as real HTTP statuses, not inside a 200 (FACTS A8).
    pub auth_errors_as_status: bool,
    /// 498 messages echo the token sent (a server that repeats input).
    pub echo_token: bool,
    /// The async submit answer says `statusURL` (FACTS contradiction 5).
    pub status_url_upper: bool,
    /// Polls answered Pending before a job completes (FACTS A7).
    pub job_polls: u32,
    /// Jobs end Failed, with an `error` object (samples' failed status).
    pub fail_jobs: bool,
    /// extractChanges always answers ids only, as a 10.6.1 service that
    /// supports nothing else (FACTS A4).
    pub ids_only_service: bool,
    /// `serverGens=[min,max]` includes min (FACTS A2 says exclusive; the
    /// wording is loose).
    pub inclusive_min: bool,
    /// Delay before every answer.
    pub delay: Duration,
    /// Extra delay before token endpoint answers.
    pub token_delay: Duration,
    /// Most features one layer query returns; more set
    /// `exceededTransferLimit` (the layer's `maxRecordCount`).
    pub max_record_count: usize,
}

impl Default for Switches {
    fn default() -> Self {
        Switches {
            require_token: true,
            api_keys: Vec::new(),
            users: Vec::new(),
            clients: Vec::new(),
            token_lifetime: Duration::from_secs(3600),
            expires_as_string: false,
            auth_errors_as_status: false,
            echo_token: false,
            status_url_upper: false,
            job_polls: 2,
            fail_jobs: false,
            ids_only_service: false,
            inclusive_min: false,
            delay: Duration::ZERO,
            token_delay: Duration::ZERO,
            max_record_count: 2000,
        }
    }
}

#[derive(Debug, Clone)]
struct Row {
    attrs: Map<String, Value>,
    geometry: Option<Value>,
    created: i64,
    updated: i64,
    deleted: Option<i64>,
}

struct Job {
    polls_left: u32,
    result: Value,
}

#[derive(Default)]
struct Emu {
    switches: Switches,
    server_gen: i64,
    next_oid: i64,
    layers: BTreeMap<i64, BTreeMap<i64, Row>>,
    tokens: HashMap<String, Instant>,
    issued: u64,
    jobs: HashMap<String, Job>,
    log: Vec<Logged>,
    outage: u32,
    scripted: VecDeque<(u16, Value, Option<String>)>,
}

/// The running emulator.
#[derive(Clone)]
pub struct Emulator {
    pub addr: SocketAddr,
    state: Arc<Mutex<Emu>>,
}

impl Emulator {
    /// Starts an emulator with layers 0 and 1 and the given switches.
    pub async fn start(switches: Switches) -> Emulator {
        let mut emu = Emu {
            switches,
            server_gen: 1000,
            next_oid: 1,
            ..Default::default()
        };
        emu.layers.insert(0, BTreeMap::new());
        emu.layers.insert(1, BTreeMap::new());
        let state = Arc::new(Mutex::new(emu));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Emulator { addr, state }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Emu> {
        self.state.lock().unwrap()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The feature service URL.
    pub fn service_url(&self) -> String {
        format!(
            "{}/arcgis/rest/services/{SERVICE}/FeatureServer",
            self.base()
        )
    }

    /// Portal generateToken.
    pub fn generate_token_url(&self) -> String {
        format!("{}/arcgis/sharing/rest/generateToken", self.base())
    }

    /// ArcGIS Server generateToken.
    pub fn server_token_url(&self) -> String {
        format!("{}/arcgis/tokens/generateToken", self.base())
    }

    /// OAuth token endpoint.
    pub fn oauth_url(&self) -> String {
        format!("{}/arcgis/sharing/rest/oauth2/token", self.base())
    }

    /// A raw changesUrl for `[min,max]` with extra query text (`&async=true`).
    pub fn changes_url(&self, min: i64, max: i64, extra: &str) -> String {
        format!(
            "{}/extractChanges?serverGens=[{min},{max}]{extra}",
            self.service_url()
        )
    }

    /// Changes the switches.
    pub fn set(&self, f: impl FnOnce(&mut Switches)) {
        f(&mut self.lock().switches);
    }

    /// The current generation.
    pub fn server_gen(&self) -> i64 {
        self.lock().server_gen
    }

    /// Adds a feature; returns its object id. Bumps the generation (FACTS A5).
    pub fn add(&self, layer: i64, attrs: Value, geometry: Option<Value>) -> i64 {
        let mut e = self.lock();
        e.server_gen += 1;
        let (oid, gen) = (e.next_oid, e.server_gen);
        e.next_oid += 1;
        let mut attrs = attrs.as_object().cloned().unwrap_or_default();
        attrs.insert("OBJECTID".into(), oid.into());
        e.layers.entry(layer).or_default().insert(
            oid,
            Row {
                attrs,
                geometry,
                created: gen,
                updated: gen,
                deleted: None,
            },
        );
        oid
    }

    /// Sets attributes of a feature.
    pub fn update(&self, layer: i64, oid: i64, attrs: Value) {
        let mut e = self.lock();
        e.server_gen += 1;
        let gen = e.server_gen;
        let row = e.layers.get_mut(&layer).unwrap().get_mut(&oid).unwrap();
        for (k, v) in attrs.as_object().unwrap() {
            row.attrs.insert(k.clone(), v.clone());
        }
        row.updated = gen;
    }

    /// Deletes a feature.
    pub fn delete(&self, layer: i64, oid: i64) {
        let mut e = self.lock();
        e.server_gen += 1;
        let gen = e.server_gen;
        e.layers
            .get_mut(&layer)
            .unwrap()
            .get_mut(&oid)
            .unwrap()
            .deleted = Some(gen);
    }

    /// Every issued token stops working (their server-side expiry).
    pub fn expire_all_tokens(&self) {
        self.lock().tokens.clear();
    }

    /// The next `n` requests (any path) answer 503 with `Retry-After: 1`;
    /// `u32::MAX` until [`Self::outage`] is called with 0.
    pub fn outage(&self, n: u32) {
        self.lock().outage = n;
    }

    /// The next service request (after the token check) answers this.
    pub fn script(&self, status: u16, body: Value) {
        self.lock().scripted.push_back((status, body, None));
    }

    /// The next service request answers a redirect to `location`.
    pub fn script_redirect(&self, status: u16, location: &str) {
        self.lock()
            .scripted
            .push_back((status, json!({}), Some(location.to_string())));
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Logged> {
        self.lock().log.clone()
    }

    /// Requests whose path ends with `suffix`.
    pub fn calls(&self, suffix: &str) -> Vec<Logged> {
        self.log()
            .into_iter()
            .filter(|l| l.path.ends_with(suffix))
            .collect()
    }

    /// Requests to any token endpoint.
    pub fn token_requests(&self) -> usize {
        self.log()
            .iter()
            .filter(|l| l.path.ends_with("generateToken") || l.path.ends_with("oauth2/token"))
            .count()
    }
}

fn envelope(code: i64, message: &str, message_code: Option<&str>) -> Value {
    let mut e = json!({ "code": code, "message": message, "details": [] });
    if let Some(m) = message_code {
        e["messageCode"] = m.into();
    }
    json!({ "error": e })
}

fn answer(status: u16, body: Value) -> Response {
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

fn pairs(text: &str) -> BTreeMap<String, String> {
    form_urlencoded::parse(text.as_bytes())
        .into_owned()
        .collect()
}

fn truthy(p: &BTreeMap<String, String>, k: &str, default: bool) -> bool {
    p.get(k).map_or(default, |v| v.eq_ignore_ascii_case("true"))
}

async fn handle(
    State(st): State<Arc<Mutex<Emu>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let mut query = pairs(uri.query().unwrap_or(""));
    let is_form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let mut form = if is_form {
        pairs(&String::from_utf8_lossy(&body))
    } else {
        BTreeMap::new()
    };
    // FACTS B4: token as query or form parameter, or either bearer header.
    let bearer = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string)
    };
    let (token_via, token) = if let Some(t) = form.remove("token") {
        (Some(TokenVia::Form), Some(t))
    } else if let Some(t) = query.remove("token") {
        (Some(TokenVia::Query), Some(t))
    } else if let Some(t) = bearer("x-esri-authorization") {
        (Some(TokenVia::EsriHeader), Some(t))
    } else if let Some(t) = bearer("authorization") {
        (Some(TokenVia::Authorization), Some(t))
    } else {
        (None, None)
    };
    let mut params = query.clone();
    params.extend(form.clone());
    let (delay, token_delay) = {
        let mut e = st.lock().unwrap();
        e.log.push(Logged {
            method: method.to_string(),
            path: path.clone(),
            token_via,
            token: token.clone(),
            query,
            form,
            params: params.clone(),
        });
        (e.switches.delay, e.switches.token_delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let is_token_endpoint = path.ends_with("/generateToken") || path.ends_with("/oauth2/token");
    if is_token_endpoint && !token_delay.is_zero() {
        tokio::time::sleep(token_delay).await;
    }
    let mut e = st.lock().unwrap();
    if e.outage > 0 {
        if e.outage != u32::MAX {
            e.outage -= 1;
        }
        let mut r = answer(503, envelope(503, "Service Unavailable", None));
        r.headers_mut().insert("retry-after", "1".parse().unwrap());
        return r;
    }
    if is_token_endpoint {
        return issue_token(&mut e, &path, &params);
    }
    let service_root = format!("/arcgis/rest/services/{SERVICE}/FeatureServer/");
    let Some(op) = path.strip_prefix(&service_root).map(str::to_string) else {
        return answer(404, envelope(404, "Service not found", None));
    };
    // FACTS A8: 499 without a token, 498 with a bad one; normally in a 200.
    if e.switches.require_token {
        let valid = token.as_ref().is_some_and(|t| {
            e.switches.api_keys.contains(t)
                || e.tokens.get(t).is_some_and(|exp| Instant::now() < *exp)
        });
        if !valid {
            let status = |code: u16| {
                if e.switches.auth_errors_as_status {
                    code
                } else {
                    200
                }
            };
            return match &token {
                None => answer(
                    status(499),
                    envelope(499, "Token Required", Some("GWM_0003")),
                ),
                Some(t) => {
                    let msg = if e.switches.echo_token {
                        format!("Invalid token: {t}")
                    } else {
                        "Invalid token.".to_string()
                    };
                    answer(status(498), envelope(498, &msg, None))
                }
            };
        }
    }
    if let Some((status, body, location)) = e.scripted.pop_front() {
        let mut r = answer(status, body);
        if let Some(l) = location {
            r.headers_mut().insert("location", l.parse().unwrap());
        }
        return r;
    }
    let base = format!(
        "http://{}{}",
        headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or(""),
        service_root.trim_end_matches('/')
    );
    if op.eq_ignore_ascii_case("extractChanges") {
        // FACTS A3: POST only; parameters from the query, the body or both.
        if method != Method::POST {
            return answer(
                200,
                envelope(
                    400,
                    "Unable to complete operation. extractChanges is only supported via POST",
                    None,
                ),
            );
        }
        return extract_changes(&mut e, &params, &base);
    }
    if let Some(id) = op.strip_prefix("jobs/") {
        return job_status(&mut e, id, &base);
    }
    if let Some(file) = op.strip_prefix("replicafiles/") {
        let id = file.trim_end_matches(".json");
        return match e.jobs.get(id) {
            Some(j) => answer(200, j.result.clone()),
            None => answer(404, envelope(404, "File not found", None)),
        };
    }
    if let Some(layer) = op.strip_suffix("/query") {
        return layer_query(&e, layer, &params);
    }
    answer(200, envelope(400, "Invalid URL", None))
}

fn issue_token(e: &mut Emu, path: &str, p: &BTreeMap<String, String>) -> Response {
    e.issued += 1;
    let token = format!("emu-token-{:04}-{}", e.issued, "x".repeat(8));
    let lifetime = e.switches.token_lifetime;
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
    if path.ends_with("/oauth2/token") {
        // FACTS B2: client credentials -> access_token, expires_in seconds.
        let ok = get("grant_type") == "client_credentials"
            && e.switches
                .clients
                .iter()
                .any(|(id, s)| id == get("client_id") && s == get("client_secret"));
        if !ok {
            return answer(
                200,
                json!({"error":{"code":400,"error":"invalid_client","error_description":"Invalid client_id","message":"Invalid client_id","details":[]}}),
            );
        }
        e.tokens.insert(token.clone(), Instant::now() + lifetime);
        return answer(
            200,
            json!({"access_token": token, "expires_in": lifetime.as_secs()}),
        );
    }
    // FACTS B1: generateToken -> token, expires epoch ms (number or string).
    let ok = e
        .switches
        .users
        .iter()
        .any(|(u, pw)| u == get("username") && pw == get("password"));
    if !ok {
        return answer(
            200,
            json!({"error":{"code":400,"message":"Unable to generate token.","details":["Invalid username or password."]}}),
        );
    }
    e.tokens.insert(token.clone(), Instant::now() + lifetime);
    let expires = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + lifetime.as_millis() as i64;
    let expires = if e.switches.expires_as_string || path.starts_with("/arcgis/tokens") {
        Value::from(expires.to_string())
    } else {
        Value::from(expires)
    };
    answer(
        200,
        json!({"token": token, "expires": expires, "ssl": false}),
    )
}

fn feature(r: &Row) -> Value {
    let mut f = json!({ "attributes": r.attrs });
    if let Some(g) = &r.geometry {
        f["geometry"] = g.clone();
    }
    f
}

/// FACTS A2, A6, A7: the window, the return* switches, ids only, async.
fn extract_changes(e: &mut Emu, p: &BTreeMap<String, String>, base: &str) -> Response {
    let gens: Value = p
        .get("serverGens")
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or(Value::Null);
    let (min, max) = match &gens {
        Value::Array(a) if a.len() == 2 => (a[0].as_i64().unwrap(), a[1].as_i64().unwrap()),
        Value::Number(n) => (n.as_i64().unwrap(), e.server_gen),
        _ => {
            return answer(
                200,
                envelope(
                    400,
                    "Either serverGens or layerServerGens is required",
                    None,
                ),
            )
        }
    };
    let (lo, hi) = (min.min(max), min.max(max));
    let inclusive = e.switches.inclusive_min;
    let inside = |g: i64| (if inclusive { g >= lo } else { g > lo }) && g <= hi;
    let existed = |g: i64| if inclusive { g < lo } else { g <= lo };
    let layers: Vec<i64> = p
        .get("layers")
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_else(|| e.layers.keys().copied().collect());
    let inserts = truthy(p, "returnInserts", true);
    let updates = truthy(p, "returnUpdates", true);
    let deletes = truthy(p, "returnDeletes", true);
    let whole_deletes = truthy(p, "returnDeletedFeatures", false);
    let ids_only = e.switches.ids_only_service || truthy(p, "returnIdsOnly", false);
    let mut edits = Vec::new();
    for id in &layers {
        let Some(rows) = e.layers.get(id) else {
            continue;
        };
        let live = |r: &&Row| r.deleted.is_none();
        let adds: Vec<&Row> = rows
            .values()
            .filter(live)
            .filter(|r| inserts && inside(r.created))
            .collect();
        let ups: Vec<&Row> = rows
            .values()
            .filter(live)
            .filter(|r| updates && existed(r.created) && inside(r.updated))
            .collect();
        let dels: Vec<&Row> = rows
            .values()
            .filter(|r| deletes && existed(r.created) && r.deleted.is_some_and(inside))
            .collect();
        let oid = |r: &&Row| r.attrs["OBJECTID"].clone();
        if ids_only {
            edits.push(json!({"id": id, "objectIds": {
                "adds": adds.iter().map(oid).collect::<Vec<_>>(),
                "updates": ups.iter().map(oid).collect::<Vec<_>>(),
                "deletes": dels.iter().map(oid).collect::<Vec<_>>(),
            }}));
        } else {
            let mut features = json!({
                "adds": adds.iter().map(|r| feature(r)).collect::<Vec<_>>(),
                "updates": ups.iter().map(|r| feature(r)).collect::<Vec<_>>(),
            });
            if whole_deletes {
                features["deletes"] = dels.iter().map(|r| feature(r)).collect::<Vec<_>>().into();
            } else {
                features["deleteIds"] = dels.iter().map(oid).collect::<Vec<_>>().into();
            }
            edits.push(json!({"id": id, "features": features}));
        }
    }
    let result = json!({
        "layerServerGens": layers.iter().map(|id| json!({"id": id, "serverGen": e.server_gen})).collect::<Vec<_>>(),
        "transportType": "esriTransportTypeUrl",
        "responseType": "esriDataChangesResponseTypeEdits",
        "edits": edits,
    });
    if truthy(p, "async", false) {
        let id = format!("job-{}", e.jobs.len() + 1);
        let polls_left = e.switches.job_polls;
        e.jobs.insert(id.clone(), Job { polls_left, result });
        let key = if e.switches.status_url_upper {
            "statusURL"
        } else {
            "statusUrl"
        };
        return answer(200, json!({ key: format!("{base}/jobs/{id}") }));
    }
    answer(200, result)
}

/// FACTS A7: Pending for `job_polls` polls, then Completed with resultUrl.
fn job_status(e: &mut Emu, id: &str, base: &str) -> Response {
    let fail = e.switches.fail_jobs;
    let Some(job) = e.jobs.get_mut(id) else {
        return answer(200, envelope(404, "Job not found", None));
    };
    if fail {
        return answer(
            200,
            json!({"status": "Failed", "error": {"code": 400, "message": "Unable to extract changes.", "details": []}}),
        );
    }
    if job.polls_left > 0 {
        job.polls_left -= 1;
        return answer(
            200,
            json!({"status": "Pending", "transportType": "esriTransportTypeUrl"}),
        );
    }
    answer(
        200,
        json!({"status": "Completed", "resultUrl": format!("{base}/replicafiles/{id}.json"),
               "responseType": "esriDataChangesResponseTypeEdits"}),
    )
}

/// `<layer>/query?objectIds=1,2&outFields=*`.
fn layer_query(e: &Emu, layer: &str, p: &BTreeMap<String, String>) -> Response {
    let Some(rows) = layer.parse::<i64>().ok().and_then(|l| e.layers.get(&l)) else {
        return answer(200, envelope(400, "Layer does not exist", None));
    };
    let ids: Vec<i64> = p
        .get("objectIds")
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_default();
    let mut features: Vec<Value> = ids
        .iter()
        .filter_map(|id| rows.get(id))
        .filter(|r| r.deleted.is_none())
        .map(feature)
        .collect();
    let exceeded = features.len() > e.switches.max_record_count;
    features.truncate(e.switches.max_record_count);
    let mut body = json!({"objectIdFieldName": "OBJECTID", "features": features});
    if exceeded {
        body["exceededTransferLimit"] = true.into();
    }
    answer(200, body)
}
