//! # tower-stream-monitor
//!
//! Monitoring for services that stream LLM output (SSE, NDJSON): time to first token, tokens per
//! second, token usage, outcomes (auth errors, rate limits, timeouts, stream errors, client
//! cancels) and stream timeouts, per provider, model and route. Two layers:
//!
//! ```no_run
//! use std::time::Duration;
//! use axum::{Router, routing::post};
//! use tracing_subscriber::prelude::*;
//! use tower_stream_monitor::Monitor;
//!
//! # async fn chat() -> &'static str { "" }
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let monitor = Monitor::builder()             // or Monitor::from_env()
//!     .prefix("/api/v1/monitoring")
//!     .stream_timeout(Duration::from_secs(60))
//!     .build()?;
//!
//! let app: Router = Router::new()
//!     .route("/v1/chat/completions", post(chat))
//!     .layer(monitor.layer());                 // layer 1: measures, serves the endpoints
//!
//! tracing_subscriber::registry()
//!     .with(monitor.error_layer())             // layer 2: WARN/ERROR records
//!     .init();
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! Each request ends in one [`StreamRecord`], handed to the [`Monitor`] (rolling windows, the
//! Prometheus endpoint, health) and emitted to the [`metrics`] facade under the names in
//! [`names`]. Nothing global is installed. Under the prefix the layer serves `/metrics`,
//! `/metrics/history`, `/metrics/prometheus`, `/health`, `/errors`, `/errors/summary` and
//! `/dashboard`.
//!
//! ## Modules
//! - [`stream`]: layer 1 — the tower layer, service, future and measured body.
//! - [`errors`]: layer 2 — the tracing-subscriber layer, redaction and the error store.
//! - [`parse`]: the incremental SSE / NDJSON parser and provider token extraction.
//! - [`classify`]: which status, error or event counts as which [`Outcome`].
//! - [`window`]: rolling 5-minute and 1-hour windows, and the injectable [`window::Clock`].
//! - [`health`]: baselines, checks, rollback triggers, budgets and alerts.
//! - [`predict`]: trends and anomalies, each provider and model against its own recent past.
//! - [`cost`]: the price table and the cost of a request, in exact pico-USD.
//! - [`snapshot`]: the typed figures of `/metrics`.
//! - [`endpoints`]: the monitoring endpoints, also as a service of their own.
//! - [`names`]: metric and label names.
//! - [`trace`]: the W3C trace context a record, an error record and an exemplar share.
//! - `otlp` (feature `otlp`): OTLP export of the GenAI metrics to a collector.
//!
//! ## Session logs
//! Events under the target [`SESSION_TARGET`]: start (INFO), first token (DEBUG; WARN/INFO past
//! the first-token baselines), completion (INFO), timeout (ERROR, `Streaming timeout after {n}s`),
//! error (ERROR, with the error chain), cancel (INFO). Each request runs in an INFO span
//! `stream_request` with the fields `request_id`, `user_id`, `provider`, `model`, `route`,
//! `outcome`, `trace_id` and `span_id`, so events the handler logs carry them too. The span
//! exists only when a subscriber layer enables that target at INFO (a `fmt` layer showing the
//! session logs): creating it costs more than the rest of a request's measuring. Error records
//! get its `request_id`, `user_id`, `provider`, `route`, `trace_id` and `span_id` either way.

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]
#![deny(unreachable_pub)]

pub mod classify;
pub mod cost;
pub mod endpoints;
pub mod errors;
mod facade;
pub mod health;
mod in_flight;
mod label;
mod labels;
mod monitor;
pub mod names;
#[cfg(feature = "otlp")]
#[cfg_attr(docsrs, doc(cfg(feature = "otlp")))]
pub mod otlp;
pub mod parse;
pub mod predict;
mod prometheus;
mod record;
mod shard;
pub mod snapshot;
mod spend;
pub mod stream;
mod system;
mod timeout;
pub mod trace;
pub mod window;

pub use label::Label;
pub use labels::{StreamLabels, UserId};
pub use monitor::{ConfigError, Monitor, MonitorBuilder, OnRecord, RequestLabeler};
pub use record::{Outcome, OutcomeMap, RequestId, StreamRecord};

// The README's Rust examples compile and run as doc-tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The tracing target of the session logs and the per-request span.
pub const SESSION_TARGET: &str = "tower_stream_monitor::session";

/// The tracing target of health changes (alerts).
pub const HEALTH_TARGET: &str = "tower_stream_monitor::health";
