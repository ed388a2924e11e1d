//! # tower-stream-monitor
//!
//! Monitoring for services that stream LLM output (SSE, NDJSON): time to first token, tokens per
//! second, token usage, outcomes (auth errors, rate limits, timeouts, stream errors, client
//! cancels) and stream timeouts, per provider, model and route. Two layers:
//!
//! ```no_run
//! use std::time::Duration;
//! use axum::{Router, routing::post};
//! use tower_stream_monitor::Monitor;
//!
//! # async fn chat() -> &'static str { "" }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let monitor = Monitor::builder()             // or Monitor::from_env()
//!     .prefix("/api/v1/monitoring")
//!     .stream_timeout(Duration::from_secs(60))
//!     .build()?;
//!
//! let app: Router = Router::new()
//!     .route("/v1/chat/completions", post(chat))
//!     .layer(monitor.layer());                 // layer 1: measures every response
//! # Ok(()) }
//! ```
//!
//! Each request ends in one [`StreamRecord`], handed to the [`Monitor`] and emitted to the
//! [`metrics`] facade under the names in [`names`]. Nothing global is installed.
//!
//! ## Modules
//! - [`stream`]: the tower layer, service, future and measured body.
//! - [`parse`]: the incremental SSE / NDJSON parser and provider token extraction.
//! - [`classify`]: which status, error or event counts as which [`Outcome`].
//! - [`labels`]: label sources, validation and the cardinality cap.
//! - [`names`]: metric and label names.
//!
//! ## Session logs
//! Events under the target [`SESSION_TARGET`]: start (INFO), first token (DEBUG), completion
//! (INFO), timeout (ERROR, `Streaming timeout after {n}s`), error (ERROR, with the error chain),
//! cancel (INFO). Each request runs in an INFO span `stream_request` with the fields
//! `request_id`, `user_id`, `provider`, `model`, `route` and `outcome`, so events the handler
//! logs carry them too.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod classify;
mod endpoints;
pub mod errors;
mod facade;
pub mod health;
pub mod labels;
mod monitor;
pub mod names;
pub mod parse;
mod prometheus;
mod record;
mod snapshot;
pub mod stream;
mod system;
pub mod window;

pub use labels::{StreamLabels, UserId};
pub use monitor::{
    ConfigError, DEFAULT_ENV_STREAM_TIMEOUT, DEFAULT_LABEL_CARDINALITY,
    DEFAULT_MAX_ERROR_FIELD_BYTES, DEFAULT_MAX_ERROR_GROUPS, DEFAULT_MAX_ERROR_RECORDS,
    DEFAULT_MIN_SAMPLES, DEFAULT_PREFIX, Monitor, MonitorBuilder, OnRecord, RequestLabeler,
};
pub use record::{Outcome, RequestId, StreamRecord};
pub use snapshot::{MetricsSnapshot, ProviderWindows};
pub use stream::{MonitoredBody, StreamMonitorLayer, StreamMonitorService, StreamTimeoutError};
pub use system::SystemStats;

/// The tracing target of the session logs and the per-request span.
pub const SESSION_TARGET: &str = "tower_stream_monitor::session";

/// The tracing target of health changes (alerts).
pub const HEALTH_TARGET: &str = "tower_stream_monitor::health";
