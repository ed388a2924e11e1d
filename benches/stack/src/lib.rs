//! The stacks that the whole-stack measurements compare (README, Performance): the same
//! routes under each one's layer, with the same subscriber besides, a `fmt` layer filtered at
//! WARN (an app run with `RUST_LOG=warn`).
//!
//! - `bare`: axum alone;
//! - `body_wrapper`: a layer that wraps the response body and does nothing else, the floor any
//!   body-measuring layer pays on an axum `Router` (axum boxes the layered route, clones it per
//!   request, and boxes the wrapped body again);
//! - `trace`: tower-http's `TraceLayer`;
//! - `axum_prometheus`: axum-prometheus's layer (it installs a global recorder, so each stack
//!   runs in a process of its own);
//! - `monitor`: this crate as the README installs it, `monitor.layer()` on the router with a
//!   60 s stream timeout, and `monitor.error_layer()` on the registry.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::Response;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;

/// Every stack, in the order the tables show them.
pub const STACKS: [&str; 5] = [
    "bare",
    "body_wrapper",
    "trace",
    "axum_prometheus",
    "monitor",
];

/// `routes` as `stack` serves them, and its subscriber, for the caller to install as the
/// global default. axum-prometheus starts a task when its layer is built: call it within a
/// tokio runtime.
///
/// # Panics
///
/// On a name not in [`STACKS`].
pub fn stack(stack: &str, routes: Router) -> (Router, tracing::Dispatch) {
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(LevelFilter::WARN);
    let registry = tracing_subscriber::registry().with(fmt);
    match stack {
        "bare" => (routes, registry.into()),
        "body_wrapper" => (
            routes.layer(tower::util::MapResponseLayer::new(
                |response: Response<Body>| response.map(|body| PassThrough { body }),
            )),
            registry.into(),
        ),
        "trace" => (
            routes.layer(tower_http::trace::TraceLayer::new_for_http()),
            registry.into(),
        ),
        "axum_prometheus" => {
            let (layer, _handle) = axum_prometheus::PrometheusMetricLayer::pair();
            (routes.layer(layer), registry.into())
        }
        "monitor" => {
            // As the README installs it: with a 60 s stream timeout.
            let monitor = tower_stream_monitor::Monitor::builder()
                .stream_timeout(std::time::Duration::from_secs(60))
                .build()
                .expect("valid settings");
            let subscriber = registry.with(monitor.error_layer());
            (routes.layer(monitor.layer()), subscriber.into())
        }
        other => panic!("unknown stack {other}"),
    }
}

pin_project_lite::pin_project! {
    /// The `body_wrapper` stack's body: the inner body's frames, passed through.
    pub struct PassThrough {
        #[pin]
        body: Body,
    }
}

impl http_body::Body for PassThrough {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
