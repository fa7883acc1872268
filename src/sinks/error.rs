//! Why a delivery could not be turned into a request: the one error type
//! of every kind's render step. The attempt records it as
//! `render_failed: <this>` (see [`super::AttemptOutcome::render_failed`]);
//! it never counts against the sink's health, since nothing was sent.

use super::template::TemplateError;

/// A render step that failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A template failed on this delivery's data.
    #[error("template {}: {}", .0.name, .0.message)]
    Template(#[from] TemplateError),
    /// The body could not be written as JSON.
    #[error("cannot write the body as JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// What would be sent breaks a rule of the receiving service (Slack's
    /// 50 blocks, Power BI's rows per request, a size limit).
    #[error("{0}")]
    Refused(String),
    /// The mail could not be put together.
    #[error("cannot build the mail: {0}")]
    Mail(#[source] lettre::error::Error),
}
