//! ArcGIS's formats, as pure functions over bytes and JSON: webhook
//! payloads of Portal, ArcGIS Server and ArcGIS Online into
//! [`crate::domain::event::Event`]s; the `changesUrl` they point at, what
//! extractChanges, its jobs and the token endpoints answer, and the
//! changes document built from it; Esri JSON features as GeoJSON. Above
//! the domain layer, below everything that receives, stores, fetches or
//! renders them.

pub mod answer;
pub mod changes;
pub mod errors;
pub mod geojson;
#[cfg(test)]
mod geojson_tests;
mod limits;
pub mod payload;
mod probe;
