//! hookrelay: a durable relay for ArcGIS webhooks.
//!
//! A request travels one way through the modules:
//!
//! 1. [`ingress`] receives `POST /hooks/<source>`, limits the body, checks
//!    the signature or shared secret on the raw bytes
//!    ([`ingress::signature`]), parses and normalises the ArcGIS payload into
//!    [`event::Event`]s ([`ingress::payload`]), and asks [`routing`] which
//!    sinks take which events.
//! 2. The message and one delivery per sink go to the [`store`] through a
//!    group-commit queue ([`store::batch`]); ingress answers 200 only after
//!    the transaction is committed.
//! 3. The [`dispatch`] loop of each sink claims due deliveries with a lease,
//!    hands each to its [`sinks`] kind to render and send, and records the
//!    outcome; [`dispatch::retry`] decides — as a pure function — whether and
//!    when to try again, or that the delivery is dead.
//! 4. [`admin`] serves health, [`metrics`] and the JSON API (list, retry,
//!    replay, pause) on a separate listener; [`cli`] offers the same on the
//!    store directly.
//!
//! A sink's `filter` (a CEL expression, [`filter`]) is compiled with the
//! sinks and decides per event or per changed feature.
//!
//! [`config`] is read once at start; [`app::Relay`] wires everything
//! together and explains the shutdown order. [`server`] runs both
//! listeners, ingress over HTTPS when [`tls`] has a certificate (reloaded on
//! SIGHUP); [`sinks::client`] holds the egress rules (proxy, CA, client
//! certificate, `allowed_hosts`). [`enrich`] fetches the edits a
//! feature-service webhook's `changesUrl` points at, with the source's
//! ArcGIS credentials.

pub mod admin;
pub mod app;
pub mod arcgis;
pub mod cli;
pub mod config;
pub mod dispatch;
pub mod domain;
pub mod enrich;
pub mod filter;
pub mod ingress;
pub mod metrics;
pub mod routing;
pub mod server;
pub mod sinks;
pub mod store;
pub mod tls;
