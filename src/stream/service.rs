use std::any::Any;
use std::fmt::Display;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::panic_guard::PanicGuard;
use super::start::RequestHead;
use super::state::ServiceState;
use super::tracked::Tracked;
use super::{MonitoredBody, RequestContext, ResponseFuture};
use crate::classify::BoxError;
use crate::endpoints::UnderPrefix;
use crate::monitor::Recorder;
use crate::{Monitor, StreamLabels};

/// Middleware that measures each response body and records one
/// [`StreamRecord`](crate::StreamRecord) per request. See the [crate docs](crate).
#[derive(Clone)]
pub struct StreamMonitorService<S> {
    inner: S,
    /// One pointer: axum clones the service for every request, and each `Arc` in it is a
    /// reference count written, twice per request, on a cache line every core shares.
    state: Arc<ServiceState>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for StreamMonitorService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamMonitorService")
            .field("inner", &self.inner)
            .field("monitor", self.state.recorder.monitor())
            .finish()
    }
}

impl<S> StreamMonitorService<S> {
    /// Wraps `inner`, recording into `monitor`.
    pub fn new(inner: S, monitor: Monitor) -> Self {
        Self::with_recorder(inner, Recorder::new(monitor))
    }

    pub(crate) fn with_recorder(inner: S, recorder: Recorder) -> Self {
        Self {
            inner,
            state: ServiceState::new(recorder),
        }
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

    // Not inlined into the caller's `call` (axum's wrappers): there, our future was built apart
    // and copied once more.
    #[inline(never)]
    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let state = &self.state;
        // The request is read in place: splitting it into parts and back moved it twice.
        if state.endpoints.claims(request.uri().path()) {
            let (parts, body) = request.into_parts();
            return match state.endpoints.under_prefix(&parts) {
                UnderPrefix::Answer(answer) => ResponseFuture::own(answer),
                // `No` is not reached: the path is under the prefix.
                UnderPrefix::PassThrough | UnderPrefix::No => ResponseFuture::new_unmeasured(
                    self.inner.call(Request::from_parts(parts, body)),
                ),
            };
        }
        // The `request_labels` closure reads the request's parts.
        let labeled = match &state.recorder.settings().labeler {
            Some(labeler) => {
                let (parts, body) = request.into_parts();
                let labels = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    labeler.labels(&parts)
                }));
                request = Request::from_parts(parts, body);
                match labels {
                    Ok(labels) => labels,
                    Err(panic) => record_labeler_panic(state, &request, panic),
                }
            }
            None => StreamLabels::default(),
        };
        let body = super::request_body::watch(&mut request);
        let mut tracked = RequestContext::start(state, RequestHead::of(&request), labeled, body);
        // For the handler to propagate upstream; only a trace already made (the caller's, the
        // app's, or the enabled span's): a request without one allocates nothing here.
        let Some(Tracked { context, scope, .. }) = tracked.get_mut() else {
            // Not reached: the box is given back only when its request ends.
            return ResponseFuture::new_unmeasured(self.inner.call(request));
        };
        if let Some(trace) = scope.tags.trace.get() {
            request.extensions_mut().insert(trace.clone());
        }
        // The handler's own events (and the spans it opens) get the request's context. The span
        // is entered inside the mark: with nothing between, the request moves once, straight
        // into the closure made for the mark.
        let inner = scope.tags.within(|| {
            // A panic in `call` itself (before any future exists) is recorded too, and one in a
            // subscriber as the span is entered or left: the guard is made first. It takes the
            // context only while unwinding, so the future never sees it taken.
            let _guard = PanicGuard::new(context, scope);
            let _entered = scope.enter_span();
            self.inner.call(request)
        });
        ResponseFuture::new(inner, tracked)
    }
}

/// A panic in the `request_labels` closure, which runs before the request's context exists:
/// the request is recorded once (`server_error`, no labels), then the panic goes on.
#[cold]
#[inline(never)]
fn record_labeler_panic<B>(
    state: &Arc<ServiceState>,
    request: &Request<B>,
    panic: Box<dyn std::any::Any + Send>,
) -> StreamLabels {
    let mut tracked = RequestContext::start(
        state,
        RequestHead::of(request),
        StreamLabels::default(),
        None,
    );
    if let Some(Tracked { context, scope, .. }) = tracked.get_mut() {
        if let Some(context) = context.take() {
            context.finish_without_body(
                scope,
                crate::record::Outcome::ServerError,
                Some(&"panic in the request_labels closure"),
            );
        }
    }
    tracked.give_back();
    std::panic::resume_unwind(panic)
}
