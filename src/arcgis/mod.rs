//! ArcGIS's formats, as pure functions over bytes and JSON: webhook
//! payloads of Portal, ArcGIS Server and ArcGIS Online into
//! [`crate::domain::event::Event`]s, and Esri JSON features as GeoJSON.
//! Above the domain layer, below everything that receives, stores or
//! renders them.

pub mod geojson;
#[cfg(test)]
mod geojson_tests;
mod limits;
pub mod payload;
mod probe;
