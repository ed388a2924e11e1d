//! Layer 1: the tower middleware that measures streamed responses.
//!
//! Laid out like tower-http's middleware: [`StreamMonitorLayer`] makes a
//! [`StreamMonitorService`], whose [`ResponseFuture`] resolves to a response with a
//! [`MonitoredBody`]: the measured inner body (`measured.rs`) or an answer of the monitor's own.
//! The measured body does the per-frame work; everything per request happens once, in
//! the service call and when the body ends.
//!
//! Each file leans only on those below it: the service's shared state (`state.rs`); the
//! request's context and scope (`context.rs`); its meter (`meter.rs`) and timers (`timer.rs`);
//! the box that carries them (`tracked.rs`), filled at the request's start (`start.rs`); and,
//! on top, the service, its future and the body.

mod body;
mod context;
mod future;
mod layer;
mod measured;
mod meter;
mod panic_guard;
mod request_body;
mod service;
mod start;
mod state;
mod timer;
mod tracked;

pub use crate::timeout::{StreamTimeoutError, TimeoutKind};
pub use body::MonitoredBody;
pub use future::ResponseFuture;
pub use layer::StreamMonitorLayer;
pub use service::StreamMonitorService;

pub(crate) use context::RequestContext;
