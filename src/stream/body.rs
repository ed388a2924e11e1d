use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tracing::Span;

use super::meter::{StreamEnd, StreamMeter};
use super::panic_guard::PanicGuard;
use super::timer::StreamTimer;
use crate::classify::{BoxError, classify_body_error};
use crate::record::Outcome;
use crate::timeout::TimeoutKind;

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Full { data: Option<Bytes> },
    }
}

pin_project! {
    /// The response body of [`StreamMonitorService`](super::StreamMonitorService): the inner
    /// body, measured frame by frame, or a small body of the monitor's own (a 504 for a request
    /// whose deadline passed before its response started).
    ///
    /// It forwards `size_hint`, `is_end_stream` and trailers untouched. Its request is recorded
    /// exactly once: at the end of the stream, on an error or timeout, or when it is dropped.
    pub struct MonitoredBody<B> {
        #[pin]
        kind: Kind<B>,
        meter: Option<StreamMeter>,
        timer: Option<StreamTimer>,
        span: Span,
        ended: bool,
    }

    impl<B> PinnedDrop for MonitoredBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // Every way a body can end while polled records it; one still holding its meter
            // was dropped before its end.
            if let Some(meter) = this.meter.take() {
                meter.finish(StreamEnd::Dropped, this.span);
            }
        }
    }
}

impl<B: Body> MonitoredBody<B> {
    pub(crate) fn measured(
        body: B,
        meter: StreamMeter,
        timer: Option<StreamTimer>,
        span: Span,
    ) -> Self {
        // An empty body (a bare 401, a 204) may never be polled: it is complete already.
        let meter = if body.is_end_stream() {
            meter.finish(StreamEnd::Complete, &span);
            None
        } else {
            Some(meter)
        };
        Self {
            kind: Kind::Inner { body },
            meter,
            timer,
            span,
            ended: false,
        }
    }
}

impl<B> MonitoredBody<B> {
    /// The inner body passed through without measurement.
    pub(crate) fn unmeasured(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
            meter: None,
            timer: None,
            span: Span::none(),
            ended: false,
        }
    }

    /// A body the monitor answers with itself; not measured.
    pub(crate) fn full(data: Bytes) -> Self {
        Self {
            kind: Kind::Full { data: Some(data) },
            meter: None,
            timer: None,
            span: Span::none(),
            ended: false,
        }
    }
}

/// `event: error` with the timeout, so an `EventSource` sees why the stream ended.
fn sse_timeout_event(message: &str, at_boundary: bool) -> Bytes {
    let payload = serde_json::json!({"error": {"type": "timeout", "message": message}});
    let separator = if at_boundary { "" } else { "\n\n" };
    Bytes::from(format!("{separator}event: error\ndata: {payload}\n\n"))
}

impl<B> Body for MonitoredBody<B>
where
    B: Body,
    B::Data: From<Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        let mut body = match this.kind.project() {
            KindProj::Full { data } => {
                return Poll::Ready(data.take().map(|d| Ok(Frame::data(d.into()))));
            }
            KindProj::Inner { body } => body,
        };
        if this.meter.is_none() {
            // Recorded already (after `is_end_stream` or trailers): pass the rest through.
            return body.poll_frame(cx).map_err(Into::into);
        }
        // A disabled span (no subscriber wants it) is not entered: with tracing's `log`
        // feature on, entering one still costs a log-level check per frame.
        let _entered = (!this.span.is_disabled()).then(|| this.span.enter());

        // The deadline is checked before the inner body, so a body that is never pending is
        // still cut. An idle timeout is only final if the inner body has nothing either: a
        // consumer that polls late must not turn a busy upstream into an idle one.
        let mut idle_expired = None;
        if let Some(timer) = this.timer.as_mut() {
            if timer.fired() {
                if let Poll::Ready(error) = timer.poll_expired(cx) {
                    if error.kind() == TimeoutKind::Deadline {
                        return Poll::Ready(on_timeout(this.meter, this.span, this.ended, error));
                    }
                    idle_expired = Some(error);
                }
            }
        }

        let guard = PanicGuard::new(&mut *this.meter, this.span);
        let polled = body.as_mut().poll_frame(cx);
        drop(guard);
        let meter_slot = this.meter;

        let frame = match polled {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if let Some(error) = idle_expired {
                    return Poll::Ready(on_timeout(meter_slot, this.span, this.ended, error));
                }
                if let Some(timer) = this.timer.as_mut() {
                    if let Poll::Ready(error) = timer.poll_expired(cx) {
                        return Poll::Ready(on_timeout(meter_slot, this.span, this.ended, error));
                    }
                }
                return Poll::Pending;
            }
        };
        let Some(meter) = meter_slot.as_mut() else {
            // The inner body panicked earlier and was polled again.
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        };
        match frame {
            None => {
                *this.ended = true;
                if let Some(meter) = meter_slot.take() {
                    meter.finish(StreamEnd::Complete, this.span);
                }
                Poll::Ready(None)
            }
            Some(Ok(mut frame)) => {
                let is_trailers = match frame.data_mut() {
                    Some(data) => {
                        meter.on_data(data, this.span);
                        if let Some(timer) = this.timer.as_mut() {
                            timer.touch();
                        }
                        false
                    }
                    None => frame.is_trailers(),
                };
                if is_trailers || body.is_end_stream() {
                    if let Some(meter) = meter_slot.take() {
                        meter.finish(StreamEnd::Complete, this.span);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => {
                let error: BoxError = error.into();
                let outcome = classify_body_error(error.as_ref());
                *this.ended = true;
                if let Some(meter) = meter_slot.take() {
                    let chain = crate::errors::ErrorChain(error.as_ref());
                    meter.finish(StreamEnd::Failed(outcome, &chain), this.span);
                }
                Poll::Ready(Some(Err(error)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.ended {
            return true;
        }
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        if self.ended {
            return SizeHint::with_exact(0);
        }
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

/// Ends a stream whose deadline or idle gap passed: records `timeout`, then ends an SSE body with
/// an error event and any other body with a [`StreamTimeoutError`](super::StreamTimeoutError).
fn on_timeout<D: From<Bytes>>(
    meter: &mut Option<StreamMeter>,
    span: &Span,
    ended: &mut bool,
    error: super::StreamTimeoutError,
) -> Option<Result<Frame<D>, BoxError>> {
    *ended = true;
    let meter = meter.take()?;
    let sse = meter.is_sse().then(|| meter.at_event_boundary());
    meter.finish(StreamEnd::Failed(Outcome::Timeout, &error), span);
    match sse {
        Some(at_boundary) => Some(Ok(Frame::data(
            sse_timeout_event(&error.to_string(), at_boundary).into(),
        ))),
        None => Some(Err(Box::new(error))),
    }
}
