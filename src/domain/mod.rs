//! The bottom layer: domain types and pure rules that every other module
//! shares, importing nothing else of the crate (`tests/layers.rs` holds
//! it to that).
//!
//! - [`event`]: the normalised ArcGIS event, its trigger URI, its stored
//!   form, time formatting that cannot fail, links that are only http(s);
//! - [`pattern`]: event patterns in ArcGIS's trigger vocabulary;
//! - [`delivery`]: delivery status, the verdict on an answer, the next state;
//! - [`ids`] and [`time`]: names for message, delivery, lease, sink and
//!   source ids, and [`time::Millis`], the queue's one time type;
//! - [`edit`]: add, update or delete, one feature's change;
//! - [`secret`] and [`crypto`]: credentials that never print, HMAC and
//!   constant-time comparison.

pub mod crypto;
pub mod delivery;
pub mod edit;
pub mod event;
pub mod ids;
pub mod pattern;
pub mod secret;
pub mod time;
