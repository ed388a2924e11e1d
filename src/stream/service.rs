use std::any::Any;
use std::fmt::Display;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::panic_guard::PanicGuard;
use super::{MonitoredBody, RequestContext, ResponseFuture};
use crate::Monitor;
use crate::classify::BoxError;

/// Middleware that measures each response body and records one
/// [`StreamRecord`](crate::StreamRecord) per request. See the [crate docs](crate).
#[derive(Debug, Clone)]
pub struct StreamMonitorService<S> {
    inner: S,
    monitor: Monitor,
}

impl<S> StreamMonitorService<S> {
    /// Wraps `inner`, recording into `monitor`.
    pub fn new(inner: S, monitor: Monitor) -> Self {
        Self { inner, monitor }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for StreamMonitorService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ReqBody: 'static,
    S::Error: Display + Any,
    ResBody: Body,
    ResBody::Data: From<Bytes>,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<MonitoredBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (parts, mut body) = request.into_parts();
        if crate::endpoints::is_under_prefix(&self.monitor, &parts) {
            if self.monitor.config().serve_endpoints {
                return ResponseFuture::own(crate::endpoints::respond(&self.monitor, &parts));
            }
            // Mounted by the app (behind its own auth, say): passed through, not measured.
            return ResponseFuture::new_unmeasured(
                self.inner.call(Request::from_parts(parts, body)),
            );
        }
        let intent = super::intent::watch(&parts, &mut body);
        let (context, scope) = RequestContext::start(&self.monitor, &parts, intent);
        let request = Request::from_parts(parts, body);
        let mut slot = Some(context);
        // The handler's own events (and the spans it opens) get the request's context.
        let inner = scope.enter(|| {
            // A panic in `call` itself (before any future exists) is recorded too.
            let _guard = PanicGuard::new(&mut slot, &scope);
            self.inner.call(request)
        });
        match slot {
            Some(context) => ResponseFuture::new(inner, context, scope),
            // Not reached: the guard takes the context only while unwinding.
            None => ResponseFuture::new_unmeasured(inner),
        }
    }
}
