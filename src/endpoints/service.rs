//! The endpoints as a tower `Service` of their own.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tower_service::Service;

use super::{answer, under_prefix};
use crate::Monitor;

/// The monitoring endpoints as a [`Service`], from [`Monitor::endpoints`]: mount them where
/// the app wants them instead of (or as well as) under the stream layer's prefix.
///
/// Paths are taken below where the service is mounted (`/metrics`, `/health`, ...), as axum's
/// `nest_service` passes them; a path still under the monitor's prefix is read below it too.
/// A path that names no endpoint is answered 404 with the endpoints listed. With the `axum`
/// feature (the default), a service nested in a router reads where it is mounted from axum's
/// `OriginalUri` and lists them under that mount (`/ops/metrics` for one nested at `/ops`),
/// followed by the monitor's prefix if the path was under it. Otherwise they are listed under
/// the monitor's prefix if the path was under it, else as references relative to the
/// request's URL (`metrics`, `../metrics`), which reach them wherever the service is mounted.
/// Each answer is ready at once; the service never fails.
///
/// ```
/// use axum::Router;
/// use tower_stream_monitor::Monitor;
///
/// let monitor = Monitor::builder().serve_endpoints(false).build()?;
/// // Behind the app's own auth, or on a port of its own:
/// let ops: Router = Router::new().nest_service("/monitoring", monitor.endpoints());
/// # let _ = ops;
/// # Ok::<(), tower_stream_monitor::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct MonitoringEndpoints {
    monitor: Monitor,
}

impl Monitor {
    /// The monitoring endpoints as a tower [`Service`](tower_service::Service) of their own,
    /// to mount with axum's `nest_service` behind the app's own auth or on a separate port
    /// (README, Endpoints). Pair with
    /// [`serve_endpoints(false)`](crate::MonitorBuilder::serve_endpoints) so the layer does not
    /// also answer them, openly, under its prefix.
    pub fn endpoints(&self) -> MonitoringEndpoints {
        MonitoringEndpoints {
            monitor: self.clone(),
        }
    }
}

impl MonitoringEndpoints {
    pub(crate) fn monitor(&self) -> &Monitor {
        &self.monitor
    }
}

impl<B> Service<Request<B>> for MonitoringEndpoints {
    type Response = Response<EndpointBody>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (parts, _body) = request.into_parts();
        let path = parts.uri.path();
        let rest = under_prefix(self.monitor.prefix(), path)
            .filter(|rest| !rest.is_empty())
            .unwrap_or(path);
        let response = answer(&self.monitor, &parts, rest);
        std::future::ready(Ok(response.map(EndpointBody::new)))
    }
}

/// The body of an endpoint's answer: one frame of bytes.
#[derive(Debug, Default)]
pub struct EndpointBody {
    data: Option<Bytes>,
}

impl EndpointBody {
    fn new(data: Bytes) -> Self {
        Self {
            data: (!data.is_empty()).then_some(data),
        }
    }
}

impl Body for EndpointBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.data.take().map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}
