//! [`Fetcher`]: a changesUrl in, a [`ChangesDoc`] out.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use url::Url;

use super::http::{arcgis_error, send_json, Req};
use super::token::TokenSource;
use super::{system_clock, Clock, FetchError};
use crate::arcgis::answer::{
    object_id, parse_extract_answer, parse_job_status, parse_query_answer, ExtractAnswer,
    JobStatus, LayerIds, QueryAnswer,
};
use crate::arcgis::changes::{
    display_url, job_url_allowed, normalize_changes_url, service_allowed, service_of, AskedGens,
    ChangesDoc, LayerChanges,
};
use crate::config::{ArcgisSourceConfig, ConfigError, DeliveryConfig, SourceConfig};

/// How the longest wait between job polls compares to the first.
const POLL_GROWTH_CAP: u32 = 10;

/// What one fetch asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchOptions {
    /// Ask for geometry in WGS 84 (`outSR=4326`), as GeoJSON-minded sinks
    /// want; otherwise the service's own spatial reference.
    pub wgs84: bool,
    /// Most features in the document; the rest is cut and `truncated` set.
    pub max_features: u64,
}

/// Fetches the edits behind changesUrls for one source. Built once from
/// the source's `[sources.arcgis]`; share it (`Arc`) between workers so
/// they share its token.
#[derive(Debug)]
pub struct Fetcher {
    source: String,
    services: Vec<Url>,
    client: reqwest::Client,
    tokens: TokenSource,
    timeout: Duration,
    page_size: usize,
    max_features: u64,
    job_timeout: Duration,
    poll_interval: Duration,
}

impl Fetcher {
    /// Builds the fetcher of a source from its checked `[sources.arcgis]`
    /// table, sending with `client` (normally from [`Self::from_config`]).
    pub fn new(
        source: &str,
        cfg: &ArcgisSourceConfig,
        client: reqwest::Client,
    ) -> Result<Fetcher, ConfigError> {
        let key = format!("sources.{source}.arcgis");
        let bad = |k: &str, m: String| ConfigError::Invalid {
            key: format!("{key}.{k}"),
            message: m,
        };
        let services = cfg
            .services
            .iter()
            .map(|s| Url::parse(s).map_err(|_| bad("services", "not a valid URL".into())))
            .collect::<Result<Vec<_>, _>>()?;
        let tokens = TokenSource::new(
            source,
            &cfg.credential(),
            client.clone(),
            cfg.request_timeout(),
            system_clock(),
        )
        .map_err(|m| bad("token_url", m))?;
        Ok(Fetcher {
            source: source.to_string(),
            services,
            client,
            tokens,
            timeout: cfg.request_timeout(),
            page_size: usize::try_from(cfg.page_size).unwrap_or(1000).max(1),
            max_features: cfg.max_features,
            job_timeout: cfg.job_timeout.0,
            poll_interval: cfg.poll_interval.0,
        })
    }

    /// The fetcher of a source, or `None` when it has no `[sources.arcgis]`.
    /// Its client is the sinks' egress client under `[delivery]` (proxy,
    /// extra CA, no redirects); `allowed_hosts` was checked with the
    /// configuration.
    pub fn from_config(
        src: &SourceConfig,
        delivery: &DeliveryConfig,
    ) -> Result<Option<Fetcher>, ConfigError> {
        let Some(cfg) = &src.arcgis else {
            return Ok(None);
        };
        let mut policy = delivery.policy_defaults();
        policy.timeout = cfg.request_timeout();
        let client = crate::sinks::client::build("delivery", None, &policy)?;
        Fetcher::new(&src.name, cfg, client).map(Some)
    }

    /// Uses `clock` (epoch ms) for token lifetimes instead of the wall clock.
    pub fn with_clock(mut self, clock: Clock) -> Fetcher {
        self.tokens.set_clock(clock);
        self
    }

    /// The longest one fetch of one changesUrl can take: its async job's
    /// `job_timeout` plus a `timeout` for the submit, the result, a token
    /// and every page of an ids-only query. The fetch stage leases a job
    /// for at least this long, so a live attempt is never taken over.
    pub fn attempt_budget(&self) -> Duration {
        let pages = self.max_features.div_ceil(self.page_size.max(1) as u64);
        let requests = u32::try_from(pages.saturating_add(4)).unwrap_or(u32::MAX);
        self.job_timeout
            .saturating_add(self.timeout.saturating_mul(requests))
    }

    /// The options the source's configuration gives (its `max_features`).
    pub fn options(&self, wgs84: bool) -> FetchOptions {
        FetchOptions {
            wgs84,
            max_features: self.max_features,
        }
    }

    /// The source this fetcher belongs to.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The source's token cache (for its request count, or to share it).
    pub fn tokens(&self) -> &TokenSource {
        &self.tokens
    }

    /// Fetches the edits a changesUrl points at.
    ///
    /// The URL is normalised (every Esri encoding) and must be one of the
    /// source's services' extractChanges; otherwise [`FetchError::Refused`]
    /// and nothing is sent. It is POSTed with its query as given and `f`,
    /// `token` and `outSR` in the form body (FACTS A3). A synchronous answer
    /// is used as is; a job is polled until done (or `job_timeout`) and its
    /// result fetched; ids are completed by layer queries in pages of
    /// `page_size`. Any request refused for its token is retried once with
    /// a new one.
    pub async fn fetch(
        &self,
        changes_url: &str,
        opts: &FetchOptions,
    ) -> Result<ChangesDoc, FetchError> {
        let url = normalize_changes_url(changes_url).map_err(|e| FetchError::Refused {
            reason: e.to_string(),
        })?;
        if !service_allowed(&url, &self.services) {
            return Err(FetchError::Refused {
                reason: format!(
                    "source {:?} may not call {}: it is not the extractChanges of a service in its [sources.arcgis] services",
                    self.source,
                    display_url(&url)
                ),
            });
        }
        let service = service_of(&url);
        let asked = AskedGens::from_url(&url);
        let mut form = vec![("f", "json".to_string())];
        if opts.wgs84 {
            form.push(("outSR", "4326".to_string()));
        }
        let answer = self
            .call(&Req::Post {
                url: &url,
                form: &form,
            })
            .await?;
        let answer = match parse(&url, &answer)? {
            ExtractAnswer::Job { status_url } => {
                let result = self.wait_for_job(&service, &status_url).await?;
                match parse(&service, &result)? {
                    ExtractAnswer::Job { .. } => {
                        return Err(FetchError::permanent(format!(
                            "the result of the job at {} is another job",
                            display_url(&service)
                        )))
                    }
                    done => done,
                }
            }
            done => done,
        };
        let mut doc = ChangesDoc {
            service: service.to_string(),
            ..Default::default()
        };
        doc.layers = match answer {
            ExtractAnswer::Edits(layers) => {
                let mut layers = layers;
                doc.truncated = cap(&mut layers, opts.max_features);
                layers
            }
            ExtractAnswer::IdsOnly(layers) => {
                let (layers, truncated) = self.query_ids(&service, layers, opts).await?;
                doc.truncated = truncated;
                layers
            }
            ExtractAnswer::Job { .. } => Vec::new(),
        };
        for l in &mut doc.layers {
            l.server_gens = asked.window(l.id, l.server_gen);
        }
        doc.feature_count = doc.layers.iter().map(LayerChanges::feature_count).sum();
        Ok(doc)
    }

    /// One request with the source's token; on an auth error, the token is
    /// invalidated and the request made once more with a new one (FACTS
    /// B2: what REST JS does). A second auth error stands.
    async fn call(&self, req: &Req<'_>) -> Result<Value, FetchError> {
        let token = self.tokens.token().await?;
        let first = send_json(&self.client, req, token.as_ref(), self.timeout).await;
        let result = match (first, &token) {
            (Err(FetchError::Auth { .. }), Some(t)) if self.tokens.refreshable() => {
                self.tokens.invalidate(t);
                let fresh = self.tokens.token().await?;
                let again = send_json(&self.client, req, fresh.as_ref(), self.timeout).await;
                return again.map_err(|e| scrub(e, fresh.as_ref()).scrubbed(t.expose()));
            }
            (Err(FetchError::Auth { message, source }), None) => Err(FetchError::Auth {
                message: format!(
                    "{message} (source {:?} sends no token: give it credentials in [sources.arcgis])",
                    self.source
                ),
                source,
            }),
            (r, _) => r,
        };
        result.map_err(|e| scrub(e, token.as_ref()))
    }

    /// Polls a job's status until it is done, failed, or `job_timeout`
    /// passes; then fetches its result document.
    async fn wait_for_job(&self, service: &Url, status_url: &str) -> Result<Value, FetchError> {
        let status = self.job_url(service, status_url, "statusUrl")?;
        let mut poll = status.clone();
        if !poll.query_pairs().any(|(k, _)| k == "f") {
            poll.query_pairs_mut().append_pair("f", "json");
        }
        let deadline = tokio::time::Instant::now() + self.job_timeout;
        let mut wait = self.poll_interval;
        loop {
            let answer = self.call(&Req::Get { url: &poll }).await?;
            match parse_job_status(&answer) {
                Ok(JobStatus::Running) => {}
                Ok(JobStatus::Done { result_url, .. }) => {
                    let result = self.job_url(service, &result_url, "resultUrl")?;
                    return self.call(&Req::Get { url: &result }).await;
                }
                Ok(JobStatus::Failed { message }) => {
                    return Err(FetchError::JobFailed {
                        message: message.unwrap_or_else(|| "no message".into()),
                    })
                }
                Err(e) => {
                    return Err(arcgis_error(
                        &format!("GET {}", display_url(&status)),
                        e,
                        None,
                    ))
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(FetchError::JobTimeout {
                    after: self.job_timeout,
                });
            }
            tokio::time::sleep(wait.min(deadline - now)).await;
            wait = (wait * 3 / 2).min(self.poll_interval * POLL_GROWTH_CAP);
        }
    }

    /// A URL from a job answer, if it may be followed with our token.
    fn job_url(&self, service: &Url, raw: &str, key: &str) -> Result<Url, FetchError> {
        let url = Url::parse(raw).map_err(|_| {
            FetchError::permanent(format!(
                "the job at {} gave a {key} that is not a URL",
                display_url(service)
            ))
        })?;
        if !job_url_allowed(&url, service) {
            return Err(FetchError::permanent(format!(
                "the job at {} gave a {key} outside the service ({}); not followed",
                display_url(service),
                display_url(&url)
            )));
        }
        Ok(url)
    }

    /// Completes an ids-only answer: the features of added and updated ids,
    /// queried per layer in pages of `page_size`, within `max_features`.
    /// Deleted ids stay ids (there is nothing left to query). An id the
    /// query no longer returns (deleted since) is left out.
    async fn query_ids(
        &self,
        service: &Url,
        layers: Vec<LayerIds>,
        opts: &FetchOptions,
    ) -> Result<(Vec<LayerChanges>, bool), FetchError> {
        let mut left = opts.max_features;
        let mut truncated = false;
        let mut out = Vec::with_capacity(layers.len());
        for l in layers {
            let mut wanted: Vec<i64> = Vec::new();
            for id in l.adds.iter().chain(&l.updates) {
                if !wanted.contains(id) {
                    wanted.push(*id);
                }
            }
            let room = usize::try_from(left).unwrap_or(usize::MAX);
            if wanted.len() > room {
                wanted.truncate(room);
                truncated = true;
            }
            let mut found: HashMap<i64, Value> = HashMap::with_capacity(wanted.len());
            let mut query = service.clone();
            query
                .path_segments_mut()
                .map_err(|_| FetchError::permanent("service URL cannot take a path"))?
                .push(&l.id.to_string())
                .push("query");
            // Pages of `page_size`; when the layer's maxRecordCount is
            // smaller (`exceededTransferLimit`), the ids it did not return
            // are asked again in pages of what it did return.
            let mut queue = wanted;
            let mut size = self.page_size;
            while !queue.is_empty() {
                let page: Vec<i64> = queue.drain(..size.min(queue.len())).collect();
                let answer = self.query_page(&query, &page, opts).await?;
                let mut got = 0;
                for f in answer.features {
                    if let Some(oid) = object_id(&f, &answer.object_id_field) {
                        got += usize::from(page.contains(&oid));
                        found.insert(oid, f);
                    }
                }
                if answer.exceeded {
                    if got == 0 {
                        return Err(FetchError::permanent(format!(
                            "POST {}: exceededTransferLimit with no feature of the page",
                            display_url(&query)
                        )));
                    }
                    size = got;
                    let missing = page.into_iter().filter(|id| !found.contains_key(id));
                    queue.splice(0..0, missing);
                }
            }
            let mut pick = |ids: &[i64]| -> Vec<Value> {
                ids.iter().filter_map(|id| found.remove(id)).collect()
            };
            let layer = LayerChanges {
                id: l.id,
                server_gens: None,
                server_gen: l.server_gen,
                adds: pick(&l.adds),
                updates: pick(&l.updates),
                deletes: Vec::new(),
                delete_ids: l.deletes,
            };
            left = left.saturating_sub(layer.feature_count());
            out.push(layer);
        }
        Ok((out, truncated))
    }

    /// One page of a layer query by object id, every field, with geometry.
    async fn query_page(
        &self,
        query: &Url,
        ids: &[i64],
        opts: &FetchOptions,
    ) -> Result<QueryAnswer, FetchError> {
        let ids = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        let mut form = vec![
            ("objectIds", ids),
            ("outFields", "*".to_string()),
            ("returnGeometry", "true".to_string()),
            ("f", "json".to_string()),
        ];
        if opts.wgs84 {
            form.push(("outSR", "4326".to_string()));
        }
        let answer = self
            .call(&Req::Post {
                url: query,
                form: &form,
            })
            .await?;
        parse_query_answer(&answer)
            .map_err(|e| arcgis_error(&format!("POST {}", display_url(query)), e, None))
    }
}

/// An answer's shape, or a permanent error naming where it came from.
fn parse(from: &Url, v: &Value) -> Result<ExtractAnswer, FetchError> {
    parse_extract_answer(v)
        .map_err(|e| arcgis_error(&format!("POST {}", display_url(from)), e, None))
}

fn scrub(e: FetchError, token: Option<&crate::domain::secret::Secret>) -> FetchError {
    match token {
        Some(t) => e.scrubbed(t.expose()),
        None => e,
    }
}

/// Cuts the layers' features to `max` (adds, then updates, then deletes,
/// layer by layer); whether anything was cut.
fn cap(layers: &mut [LayerChanges], max: u64) -> bool {
    let mut left = usize::try_from(max).unwrap_or(usize::MAX);
    let mut cut = false;
    for l in layers {
        for list in [&mut l.adds, &mut l.updates, &mut l.deletes] {
            if list.len() > left {
                list.truncate(left);
                cut = true;
            }
            left -= list.len();
        }
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_cuts_in_order_and_says_so() {
        let f = |n: usize| vec![Value::Null; n];
        let mut l = vec![
            LayerChanges {
                id: 0,
                adds: f(2),
                updates: f(2),
                deletes: f(1),
                ..Default::default()
            },
            LayerChanges {
                id: 1,
                adds: f(3),
                ..Default::default()
            },
        ];
        assert!(!cap(&mut l.clone(), 8));
        assert!(cap(&mut l, 4));
        assert_eq!(
            (l[0].adds.len(), l[0].updates.len(), l[0].deletes.len()),
            (2, 2, 0)
        );
        assert_eq!(l[1].adds.len(), 0);
    }
}
