//! The measuring body: the inner body, measured frame by frame.

use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::meter::{StreamEnd, StreamMeter};
use super::panic_guard::PanicGuard;
use super::timer::TimeoutBody;
use super::tracked::{Tracked, TrackedBox};
use crate::classify::{BoxError, classify_body_error};
use crate::timeout::StreamTimeoutError;

pin_project! {
    /// The inner body, measured frame by frame (or passed through when unmeasured).
    ///
    /// Measuring is all it does: the deadline and idle timeout run in a timeout body inside it,
    /// whose [`StreamTimeoutError`] it records as `timeout` and, for `text/event-stream`, turns
    /// into a final SSE `event: error` so an `EventSource` sees why. It forwards `size_hint`,
    /// `is_end_stream` and trailers untouched. Its request is recorded exactly once: at the end
    /// of the stream, on an error or timeout, or when it is dropped.
    pub(crate) struct MeasuredBody<B> {
        #[pin]
        body: TimeoutBody<B>,
        // A measured body's meter and scope; the meter is taken when the request is recorded.
        // Emptied in `drop` (not left to drop glue, a call for a field `None` when unmeasured).
        tracked: ManuallyDrop<Option<TrackedBox>>,
        ended: bool,
    }

    impl<B> PinnedDrop for MeasuredBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // A local from here: dropped even if recording panics.
            let Some(mut tracked) = this.tracked.take() else {
                return;
            };
            // Every way a body can end while polled records it; one still holding its meter
            // was dropped before its end.
            if let Some(Tracked { meter, scope, .. }) = tracked.get_mut() {
                if let Some(meter) = meter.take() {
                    meter.finish(StreamEnd::Dropped, scope);
                }
            }
            tracked.give_back();
        }
    }
}

impl<B> MeasuredBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    #[inline]
    pub(crate) fn measured(body: TimeoutBody<B>, mut tracked: TrackedBox) -> Self {
        // An empty body (a bare 401, a 204) may never be polled: it is complete already.
        if body.is_end_stream() {
            if let Some(Tracked { meter, scope, .. }) = tracked.get_mut() {
                if let Some(meter) = meter.take() {
                    meter.finish(StreamEnd::Complete, scope);
                }
            }
        }
        Self {
            body,
            tracked: ManuallyDrop::new(Some(tracked)),
            ended: false,
        }
    }
}

impl<B> MeasuredBody<B> {
    /// The inner body passed through without measurement.
    pub(crate) fn unmeasured(body: B) -> Self {
        Self {
            body: TimeoutBody::new(body, None),
            tracked: ManuallyDrop::new(None),
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

impl<B> Body for MeasuredBody<B>
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
        let mut body = this.body;
        let Some(Tracked {
            meter: meter_slot,
            scope,
            ..
        }) = this.tracked.as_mut().and_then(TrackedBox::get_mut)
        else {
            return body.poll_frame(cx);
        };
        if meter_slot.is_none() {
            // Recorded already (after `is_end_stream` or trailers): pass the rest through.
            return body.poll_frame(cx);
        }
        let ended = this.ended;
        scope.enter(|| {
            let guard = PanicGuard::new(&mut *meter_slot, scope);
            let mut polled = body.as_mut().poll_frame(cx);
            drop(guard);

            // The usual frame, data: measured where it lies and handed on as it came, not
            // taken apart and rebuilt (a frame is about 100 bytes, copied at each move).
            if let Poll::Ready(Some(Ok(frame))) = &mut polled {
                if let (Some(meter), Some(data)) = (meter_slot.as_mut(), frame.data_mut()) {
                    let read = meter.on_data(data, scope);
                    if body.is_end_stream() {
                        StreamMeter::finish_in(meter_slot, read, StreamEnd::Complete, scope);
                    }
                    return polled;
                }
            }
            let frame = match polled {
                Poll::Ready(frame) => frame,
                Poll::Pending => return Poll::Pending,
            };
            if meter_slot.is_none() {
                // The inner body panicked earlier and was polled again.
                return Poll::Ready(frame);
            }
            match frame {
                None => {
                    *ended = true;
                    StreamMeter::finish_in(meter_slot, None, StreamEnd::Complete, scope);
                    Poll::Ready(None)
                }
                // Not data (measured above): trailers, which end the body, or a frame of
                // another kind.
                Some(Ok(frame)) => {
                    if frame.is_trailers() || body.is_end_stream() {
                        StreamMeter::finish_in(meter_slot, None, StreamEnd::Complete, scope);
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Some(Err(error)) => {
                    let outcome = classify_body_error(error.as_ref());
                    *ended = true;
                    if let Some(meter) = meter_slot.take() {
                        // Where an SSE stream was cut by this layer's own timeout, it ends with
                        // an error event rather than a broken connection.
                        let sse_end = (error.downcast_ref::<StreamTimeoutError>().is_some()
                            && meter.is_sse())
                        .then(|| meter.at_event_boundary());
                        let chain = crate::errors::ErrorChain(error.as_ref());
                        meter.finish(StreamEnd::Failed(outcome, &chain), scope);
                        if let Some(at_boundary) = sse_end {
                            let event = sse_timeout_event(&error.to_string(), at_boundary);
                            return Poll::Ready(Some(Ok(Frame::data(event.into()))));
                        }
                    }
                    Poll::Ready(Some(Err(error)))
                }
            }
        })
    }

    fn is_end_stream(&self) -> bool {
        if self.ended {
            return true;
        }
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.ended {
            return SizeHint::with_exact(0);
        }
        self.body.size_hint()
    }
}
