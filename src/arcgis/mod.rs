//! ArcGIS's formats, as pure functions over bytes and JSON: webhook
//! payloads of Portal, ArcGIS Server and ArcGIS Online into
//! [`crate::domain::event::Event`]s. Above the domain layer, below
//! everything that receives, stores or renders them.

mod limits;
pub mod payload;
mod probe;
