//! The measuring body: the inner body, measured frame by frame.

use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::context::RequestScope;
use super::meter::{StreamEnd, StreamMeter};
use super::panic_guard::PanicGuard;
use super::timer::StreamTimer;
use super::tracked::{Tracked, TrackedBox};
use crate::classify::{BoxError, classify_body_error};
use crate::record::Outcome;
use crate::timeout::StreamTimeoutError;

pin_project! {
    /// The inner body, measured frame by frame (or passed through when unmeasured).
    ///
    /// Measuring is all it does: the deadline and idle timeout are the request's `StreamTimer`
    /// (`timer.rs`), which it polls the inner body through, and whose [`StreamTimeoutError`] it
    /// records as `timeout` and, for `text/event-stream`, turns into a final SSE `event: error`
    /// so an `EventSource` sees why. It forwards `size_hint`, `is_end_stream` and trailers
    /// untouched. Its request is recorded exactly once: at the end of the stream, on an error
    /// or timeout, or when it is dropped.
    pub(crate) struct MeasuredBody<B> {
        #[pin]
        body: B,
        // A measured body's meter and scope; the meter is taken when the request is recorded.
        // Emptied in `drop` (not left to drop glue, a call for a field `None` when unmeasured).
        tracked: ManuallyDrop<Option<TrackedBox>>,
        ended: bool,
        // Kept here, beside `ended`, so that a frame does not read the box's lines to find
        // out (ARCHITECTURE.md, The request's memory): whether the request keeps a span (known
        // when the body starts), and that no stream timeout applies (found at the first frame
        // that would make the timer).
        spanned: bool,
        untimed: bool,
        // The last poll found nothing ready: whoever polls it past a frame asks for more than
        // the length its headers announced (a layer between it and the server that frames the
        // response otherwise), so a drop then is no end at that length.
        waiting: bool,
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
            if let Some(Tracked {
                meter,
                scope,
                timer,
                ..
            }) = tracked.get_mut()
            {
                if let Some(mut meter) = meter.take() {
                    if *this.waiting {
                        meter.not_framed_by_length();
                    }
                    meter.finish(StreamEnd::Dropped, scope, timer.as_ref());
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
    /// `end`: the body's `is_end_stream`, asked with the response's head (under the request's
    /// panic guard).
    #[inline]
    pub(crate) fn measured(body: B, mut tracked: TrackedBox, end: bool) -> Self {
        let spanned = tracked.get().is_some_and(|t| t.scope.has_span());
        if let Some(Tracked { meter, scope, .. }) = tracked.get_mut() {
            // An empty body (a bare 401, a 204) may never be polled: it is complete already,
            // whatever length a header gives (hyper sends no body).
            if end {
                if let Some(mut meter) = meter.take() {
                    meter.not_framed_by_length();
                    meter.finish(StreamEnd::Complete, scope, None);
                }
            }
        }
        Self {
            body,
            tracked: ManuallyDrop::new(Some(tracked)),
            ended: false,
            spanned,
            untimed: false,
            waiting: false,
        }
    }
}

impl<B> MeasuredBody<B> {
    /// The inner body passed through without measurement.
    pub(crate) fn unmeasured(body: B) -> Self {
        Self {
            body,
            tracked: ManuallyDrop::new(None),
            ended: false,
            spanned: false,
            untimed: false,
            waiting: false,
        }
    }
}

/// The timer for the request's stream deadline, made by the first wait that needs one (the
/// deadline ends a body only while it waits: `StreamTimer`); a request without a deadline is
/// noted in `untimed`, so that later waits do not look again.
fn deadline_timer(meter: &StreamMeter, untimed: &mut bool) -> Option<StreamTimer> {
    // Frames handed on before this first wait were ready: the time since the first was the
    // consumer's.
    let handed_since = meter.first_byte().unwrap_or_else(tokio::time::Instant::now);
    let timer = meter
        .stream_deadline()
        .map(|deadline| StreamTimer::new_deadline(deadline, handed_since));
    *untimed = timer.is_none();
    timer
}

/// Drops the timer of a body that ended with a frame it handed on (its end, trailers, an
/// error), so that its sleep leaves the timer wheel now: a consumer that keeps the ended body
/// is not woken by it.
#[inline]
fn disarm(timer: &mut Option<StreamTimer>) {
    if timer.is_some() {
        *timer = None;
    }
}

/// Records a body that ended with no data frame (its end, or trailers), then drops its timer:
/// the timer's count of the reader's time is read first (see `StreamMeter::finish_in`).
fn complete(
    meter_slot: &mut Option<StreamMeter>,
    scope: &RequestScope,
    timer: &mut Option<StreamTimer>,
) {
    StreamMeter::finish_in(meter_slot, None, StreamEnd::Complete, scope, timer.as_ref());
    disarm(timer);
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
        let body = this.body;
        let Some(Tracked {
            meter: meter_slot,
            scope,
            timer,
            ..
        }) = this.tracked.as_mut().and_then(TrackedBox::get_mut)
        else {
            return body.poll_frame(cx).map_err(Into::into);
        };
        if meter_slot.is_none() {
            // Recorded already (after `is_end_stream` or trailers): pass the rest through, with
            // no timer either (hyper polls nothing past either).
            return body.poll_frame(cx).map_err(Into::into);
        }
        let (ended, untimed) = (this.ended, this.untimed);
        let polled = if *this.spanned {
            poll_spanned(body, meter_slot, scope, timer, ended, untimed, cx)
        } else {
            scope
                .tags
                .within(|| poll_measured(body, meter_slot, scope, timer, ended, untimed, cx))
        };
        *this.waiting = polled.is_pending();
        polled
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

/// What the result of polling a measured body is.
type Polled<B> = Poll<Option<Result<Frame<<B as Body>::Data>, BoxError>>>;

/// [`poll_measured`] for a request that keeps a span: its entry and exit are under a guard of
/// their own, so that a subscriber's panic there is the server's (`server_error`), not left
/// for the drop to take for a cancel. Apart, so that other requests' frames carry none of it.
#[cold]
#[inline(never)]
fn poll_spanned<B>(
    body: Pin<&mut B>,
    meter_slot: &mut Option<StreamMeter>,
    scope: &RequestScope,
    timer: &mut Option<StreamTimer>,
    ended: &mut bool,
    untimed: &mut bool,
    cx: &mut Context<'_>,
) -> Polled<B>
where
    B: Body,
    B::Data: From<Bytes>,
    B::Error: Into<BoxError>,
{
    let mut guard = PanicGuard::new(meter_slot, scope);
    let meter_slot = guard.slot();
    let _entered = scope.enter_span();
    scope
        .tags
        .within(|| poll_measured(body, meter_slot, scope, timer, ended, untimed, cx))
}

/// Polls a measured body's inner body (through its timer, if any) and measures what comes,
/// with the request marked current for the error layer.
#[inline(always)]
fn poll_measured<B>(
    mut body: Pin<&mut B>,
    meter_slot: &mut Option<StreamMeter>,
    scope: &RequestScope,
    timer: &mut Option<StreamTimer>,
    ended: &mut bool,
    untimed: &mut bool,
    cx: &mut Context<'_>,
) -> Polled<B>
where
    B: Body,
    B::Data: From<Bytes>,
    B::Error: Into<BoxError>,
{
    let mut guard = PanicGuard::new(&mut *meter_slot, scope);
    let mut polled = match timer.as_mut() {
        Some(timer) => timer.poll_frame(body.as_mut(), cx),
        None => body.as_mut().poll_frame(cx).map_err(Into::into),
    };
    // Asked here, where a panic in it is the body's (`server_error`).
    let at_end = matches!(polled, Poll::Ready(Some(Ok(_)))) && body.is_end_stream();

    // The usual frame, data: measured where it lies and handed on as it came, not
    // taken apart and rebuilt (a frame is about 100 bytes, copied at each move).
    if let Poll::Ready(Some(Ok(frame))) = &mut polled {
        if let (Some(meter), Some(data)) = (guard.slot().as_mut(), frame.data_mut()) {
            // Under the guard: a panic as a first token is logged (a subscriber's) is
            // the server's (`server_error`), not left for the drop to take for a cancel.
            let read = meter.on_data(data, scope, timer.as_ref());
            drop(guard);
            if at_end {
                // The timer stays until the body is dropped: a consumer stops at
                // `is_end_stream` (hyper drops the body), and this path is every small
                // response's, which has none to drop.
                StreamMeter::finish_in(
                    meter_slot,
                    read,
                    StreamEnd::Complete,
                    scope,
                    timer.as_ref(),
                );
                // The inner body has nothing more, trailers included: the next poll
                // ends here, without polling it (hyper stops at `is_end_stream`).
                *ended = true;
                return polled;
            }
            if let Some(timer) = timer.as_mut() {
                // When the frame came: the time the meter read, if it read one.
                timer.on_data(read);
            }
            return polled;
        }
    }
    drop(guard);
    let frame = match polled {
        Poll::Ready(frame) => frame,
        Poll::Pending if timer.is_some() => return Poll::Pending,
        Poll::Pending if *untimed => return Poll::Pending,
        Poll::Pending => {
            // The body waits with no timer yet: a deadline needs watching from now on.
            let new = meter_slot.as_ref().and_then(|m| deadline_timer(m, untimed));
            let Some(new) = new else {
                return Poll::Pending;
            };
            match timer.insert(new).waited(cx) {
                Poll::Ready(frame) => frame,
                Poll::Pending => return Poll::Pending,
            }
        }
    };
    if meter_slot.is_none() {
        // The inner body panicked earlier and was polled again.
        return Poll::Ready(frame);
    }
    match frame {
        None => {
            *ended = true;
            complete(meter_slot, scope, timer);
            Poll::Ready(None)
        }
        // Not data (measured above): trailers, which end the body, or a frame of
        // another kind.
        Some(Ok(frame)) => {
            if frame.is_trailers() || at_end {
                complete(meter_slot, scope, timer);
            }
            Poll::Ready(Some(Ok(frame)))
        }
        Some(Err(error)) => {
            let mut outcome = classify_body_error(error.as_ref());
            // Only this layer's own limit, and only when the client's bytes were
            // awaited through the body's whole last wait: a client that keeps its
            // upload going (a chunk every few milliseconds) is waited for only between
            // two chunks, and the limit ran out on the upstream. An inner limit (a
            // relaying client's read timeout) is not known to have waited at all.
            let own_timeout = error.downcast_ref::<StreamTimeoutError>().is_some();
            let wait_began = timer.as_ref().and_then(StreamTimer::wait_started);
            if own_timeout
                && wait_began.is_some_and(|t| {
                    meter_slot
                        .as_ref()
                        .is_some_and(|m| m.client_silent_since(t))
                })
            {
                // A body fed by the request's (an upload streamed back) that waited
                // for the client's bytes: the client's doing (README, Security).
                outcome = Outcome::ClientError;
            } else if !own_timeout
                && outcome == Outcome::Timeout
                && meter_slot.as_ref().is_some_and(StreamMeter::upload_failed)
            {
                // An inner timeout after the client's upload failed: the upload's own
                // (tower-http's `RequestBodyTimeoutLayer` cutting a held upload), relayed
                // by a body fed by it; the client's doing like any failure of a body
                // that follows a broken upload (README, Security).
                outcome = Outcome::ClientError;
            }
            *ended = true;
            let sized = {
                let _guard = PanicGuard::new(&mut *meter_slot, scope);
                body.size_hint().exact().is_some()
            };
            if let Some(meter) = meter_slot.take() {
                // Where an SSE stream was cut by this layer's own timeout, it ends with
                // an error event rather than a broken connection; unless its length was
                // announced (an exact size hint, a `Content-Length` header), which bytes
                // past it would break.
                let sse_end = (error.downcast_ref::<StreamTimeoutError>().is_some()
                    && meter.is_sse()
                    && !sized
                    && !meter.announced_length())
                .then(|| meter.at_event_boundary());
                let chain = crate::errors::ErrorChain(error.as_ref());
                meter.finish(StreamEnd::Failed(outcome, &chain), scope, timer.as_ref());
                disarm(timer);
                if let Some(at_boundary) = sse_end {
                    let event = sse_timeout_event(&error.to_string(), at_boundary);
                    return Poll::Ready(Some(Ok(Frame::data(event.into()))));
                }
            }
            disarm(timer);
            Poll::Ready(Some(Err(error)))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::future::Future as _;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http_body::{Body, Frame};

    use crate::monitor::Recorder;
    use crate::record::Outcome;
    use crate::stream::ResponseFuture;
    use crate::stream::context::RequestContext;
    use crate::stream::state::ServiceState;

    /// One data frame, then the end; counts its polls.
    struct OneFrame {
        data: Option<Bytes>,
        polls: Arc<AtomicUsize>,
    }

    impl Body for OneFrame {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            Poll::Ready(self.data.take().map(|d| Ok(Frame::data(d))))
        }

        fn is_end_stream(&self) -> bool {
            self.data.is_none()
        }
    }

    /// The meter takes the request's context from beside it when the response starts: once
    /// taken (the request recorded already), starting again measures nothing.
    #[test]
    fn meter_starts_from_the_context_once() {
        let monitor = crate::Monitor::builder().build().unwrap();
        let state = ServiceState::new(Recorder::new(monitor.clone()));
        let request = http::Request::get("/x").body(()).unwrap();
        let mut tracked = RequestContext::start_plain(&state, &request);
        let (head, ()) = http::Response::new(()).into_parts();
        let t = tracked.get_mut().unwrap();
        let start = |t: &mut crate::stream::tracked::Tracked| {
            crate::stream::meter::StreamMeter::start_in(
                &mut t.meter,
                &mut t.context,
                &t.scope,
                &head,
                None,
            )
        };
        start(t);
        assert!(t.context.is_none() && t.meter.is_some());
        let meter = t.meter.take();
        start(t);
        assert!(t.meter.is_none(), "no context, no meter");
        if let Some(meter) = meter {
            meter.finish(crate::stream::meter::StreamEnd::Complete, &t.scope, None);
        }
        assert_eq!(monitor.recorded(Outcome::Ok), 1);
        tracked.give_back();
    }

    /// A body whose last data frame leaves its inner body at its end is recorded with that
    /// frame, and the next poll ends it without polling the inner body again.
    #[tokio::test]
    async fn inner_body_at_its_end_is_not_polled_again() {
        type Answer = Result<http::Response<OneFrame>, Infallible>;
        let monitor = crate::Monitor::builder().build().unwrap();
        let state = ServiceState::new(Recorder::new(monitor.clone()));
        let request = http::Request::get("/x").body(()).unwrap();
        let tracked = RequestContext::start_plain(&state, &request);
        let polls = Arc::new(AtomicUsize::new(0));
        let body = OneFrame {
            data: Some(Bytes::from_static(b"small")),
            polls: polls.clone(),
        };
        let ready = std::future::ready::<Answer>(Ok(http::Response::new(body)));
        let mut future = Box::pin(ResponseFuture::new(ready, tracked));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let Poll::Ready(Ok(response)) = future.as_mut().poll(&mut cx) else {
            panic!("the response is ready");
        };
        let mut body = Box::pin(response.into_body());
        assert!(!body.is_end_stream());
        let Poll::Ready(Some(Ok(frame))) = body.as_mut().poll_frame(&mut cx) else {
            panic!("a data frame");
        };
        assert_eq!(frame.into_data().ok(), Some(Bytes::from_static(b"small")));
        assert_eq!(
            monitor.recorded(Outcome::Ok),
            1,
            "recorded with its last frame"
        );
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        assert!(matches!(
            body.as_mut().poll_frame(&mut cx),
            Poll::Ready(None)
        ));
        assert_eq!(
            polls.load(Ordering::Relaxed),
            1,
            "the inner body is polled once"
        );
        drop(body);
        assert_eq!(monitor.recorded(Outcome::Ok), 1);
        assert_eq!(monitor.recorded(Outcome::Cancelled), 0);
    }
}
