use std::any::Any;
use std::fmt::Display;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::MonitoredBody;
use super::meter::StreamMeter;
use super::panic_guard::PanicGuard;
use super::timer::StreamTimer;
use super::tracked::{Tracked, TrackedBox};
use crate::classify::classify_service_error;
use crate::record::Outcome;
use crate::timeout::{RequestBodyTimeout, StreamTimeoutError};

pin_project! {
    /// The response future of [`StreamMonitorService`](super::StreamMonitorService).
    ///
    /// Dropped before the response is ready, it records the request as `cancelled`; if the
    /// inner future panics, as `server_error`.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        // A response the monitor gives itself (its endpoints), ready at once. Boxed: it is
        // rare, and every request's future would otherwise carry its size.
        //
        // These three are emptied in `drop` (not left to drop glue, a call each for a field
        // that is `None` by then on the common path).
        own: ManuallyDrop<Option<Box<Response<Bytes>>>>,
        deadline: ManuallyDrop<Option<Pin<Box<Sleep>>>>,
        // A measured request's state; moves into the body with its meter.
        tracked: ManuallyDrop<Option<TrackedBox>>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(own) = this.own.take() {
                drop(own);
            }
            if let Some(sleep) = this.deadline.take() {
                drop(sleep);
            }
            // A local from here: dropped even if recording panics.
            let Some(mut tracked) = this.tracked.take() else {
                return;
            };
            if let Some(tracked) = tracked.get_mut() {
                if let Some(context) = tracked.context.take() {
                    context.finish_without_body(&tracked.scope, Outcome::Cancelled, None);
                }
            }
            tracked.give_back();
        }
    }
}

impl<F> ResponseFuture<F> {
    #[inline]
    pub(crate) fn new(inner: F, tracked: TrackedBox) -> Self {
        Self {
            inner: Some(inner),
            own: ManuallyDrop::new(None),
            deadline: ManuallyDrop::new(None),
            tracked: ManuallyDrop::new(Some(tracked)),
        }
    }

    /// The inner future, its response passed through unmeasured.
    pub(crate) fn new_unmeasured(inner: F) -> Self {
        Self {
            inner: Some(inner),
            own: ManuallyDrop::new(None),
            deadline: ManuallyDrop::new(None),
            tracked: ManuallyDrop::new(None),
        }
    }

    /// A future for a response the monitor answers itself; nothing is measured.
    pub(crate) fn own(response: Response<Bytes>) -> Self {
        Self {
            inner: None,
            own: ManuallyDrop::new(Some(Box::new(response))),
            deadline: ManuallyDrop::new(None),
            tracked: ManuallyDrop::new(None),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
    B::Data: From<Bytes>,
    B::Error: Into<crate::classify::BoxError>,
    E: Display + Any,
{
    type Output = Result<Response<MonitoredBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return match this.own.take() {
                Some(response) => Poll::Ready(Ok((*response).map(MonitoredBody::full))),
                None => Poll::Pending,
            };
        };
        let polled = match this.tracked.as_mut().and_then(TrackedBox::get_mut) {
            // The guard outside the span: a subscriber's panic as it is entered or left is
            // recorded too (`server_error`), not left for the drop to take for a cancel.
            Some(Tracked { context, scope, .. }) => {
                let _guard = PanicGuard::new(context, scope);
                scope.enter(|| inner.poll(cx))
            }
            None => inner.poll(cx),
        };
        let result = match polled {
            Poll::Ready(result) => result,
            Poll::Pending => {
                // Armed only now: a handler that answers on its first poll needs none, and a
                // tokio sleep costs a place in the timer wheel to take and to leave (see
                // `StreamTimer`).
                let mut fresh = this.deadline.is_none();
                if fresh {
                    **this.deadline = arm_deadline(this.tracked);
                }
                while let Some(sleep) = this.deadline.as_mut() {
                    match super::timer::poll_sleep(sleep, None, cx) {
                        Some(Poll::Ready(())) if deadline_passed(sleep, this.tracked, cx) => {
                            return Poll::Ready(Ok(deadline_response(this.tracked)));
                        }
                        Some(_) => break,
                        // The runtime that armed it has shut down: one from the current
                        // runtime, once.
                        None if !fresh => {
                            **this.deadline = arm_deadline(this.tracked);
                            fresh = true;
                        }
                        // Not even that one (a runtime shutting down): not kept for this poll.
                        None => **this.deadline = None,
                    }
                }
                return Poll::Pending;
            }
        };
        let Some(mut boxed) = this.tracked.take() else {
            return Poll::Ready(result.map(|r| r.map(|b| MonitoredBody::unmeasured(b))));
        };
        // The context stays in the box until the meter takes it there (not moved out and in).
        let Some(tracked) = boxed.get_mut().filter(|t| t.context.is_some()) else {
            // Polled again after a panic was recorded: pass the result through unmeasured.
            return Poll::Ready(result.map(|r| r.map(|b| MonitoredBody::unmeasured(b))));
        };
        match result {
            Ok(response) => {
                let (parts, body) = response.into_parts();
                // `None` is not reached (the context is there, checked above). A HEAD answer,
                // a 204 and a 304 carry no body, whatever their headers or handler say (hyper
                // drops it unread).
                let bodiless = tracked.context.as_ref().is_some_and(|c| c.head)
                    || parts.status == http::StatusCode::NO_CONTENT
                    || parts.status == http::StatusCode::NOT_MODIFIED;
                if let (Some(context), false) = (&tracked.context, bodiless) {
                    // With a deadline alone, the body makes its timer if it needs one (see
                    // `StreamTimer`); an idle gap runs from the response, and a sleep armed
                    // while the response was awaited carries on.
                    let settings = context.recorder().settings();
                    if settings.idle_timeout.is_some() || this.deadline.is_some() {
                        tracked.timer = timer_with_response(this.deadline.take(), context);
                    }
                }
                // The body's own answers, asked while a panic in them is still the request's
                // (recorded once, as `server_error`).
                let (exact_size, at_end) = {
                    let _guard = PanicGuard::new(&mut tracked.context, &tracked.scope);
                    (body.size_hint().exact(), body.is_end_stream())
                };
                StreamMeter::start_in(
                    &mut tracked.meter,
                    &mut tracked.context,
                    &tracked.scope,
                    &parts,
                    exact_size,
                );
                if !bodiless && tracked.timer.is_none() {
                    // A stream counts the consumer's time from now, limits or none
                    // (`StreamTimer::for_stream`); other bodies make a timer at their first
                    // wait, if a deadline needs one.
                    if let Some(meter) = tracked.meter.as_ref().filter(|m| m.timed_as_stream()) {
                        let timer =
                            StreamTimer::for_stream(meter.stream_deadline(), Instant::now());
                        tracked.timer = Some(timer);
                    }
                }
                let body = if bodiless {
                    // No body to measure: the request ends with its headers.
                    if let Some(meter) = tracked.meter.take() {
                        meter.finish(super::meter::StreamEnd::Complete, &tracked.scope, None);
                    }
                    boxed.give_back();
                    MonitoredBody::unmeasured(body)
                } else {
                    MonitoredBody::measured(body, boxed, at_end)
                };
                Poll::Ready(Ok(Response::from_parts(parts, body)))
            }
            Err(error) => {
                let outcome = classify_service_error(&error as &dyn Any);
                if let Some(context) = tracked.context.take() {
                    let outcome = context.hints.judge_timeout(outcome);
                    context.finish_without_body(&tracked.scope, outcome, Some(&error));
                }
                boxed.give_back();
                Poll::Ready(Err(error))
            }
        }
    }
}

/// The timer a response starts with: an idle gap runs from it, and a sleep armed while the
/// response was awaited carries on (apart: most responses start with none).
#[cold]
#[inline(never)]
fn timer_with_response(
    sleep: Option<Pin<Box<Sleep>>>,
    context: &super::context::RequestContext,
) -> Option<StreamTimer> {
    let settings = context.recorder().settings();
    StreamTimer::new(
        sleep,
        context.hints.upstream_origin(context.started),
        settings.stream_timeout,
        settings.idle_timeout,
    )
}

/// Whether the deadline whose sleep fired has passed: it counts from the end of the request's
/// body when the client sent that late (README, Security), so a sleep armed before the body
/// ended is set again at the deadline as it stands now (and polled, to wake the task then).
#[cold]
#[inline(never)]
fn deadline_passed(
    sleep: &mut Pin<Box<Sleep>>,
    tracked: &Option<TrackedBox>,
    cx: &mut Context<'_>,
) -> bool {
    let due = || {
        let context = tracked
            .as_ref()
            .and_then(TrackedBox::get)?
            .context
            .as_ref()?;
        let after = context.recorder().settings().stream_timeout?;
        context.deadline(after)
    };
    while let Some(at) = due().filter(|at| *at > sleep.deadline()) {
        match super::timer::poll_sleep(sleep, Some(at), cx) {
            Some(Poll::Ready(())) => {}
            // Pending, or its runtime gone (the next poll finds that again and re-arms).
            _ => return false,
        }
    }
    true
}

/// A sleep at the request's deadline, if it has one and the runtime a timer (see
/// `timer::sleep_until`).
fn arm_deadline(tracked: &Option<TrackedBox>) -> Option<Pin<Box<Sleep>>> {
    let context = tracked.as_ref()?.get()?.context.as_ref()?;
    let after = context.recorder().settings().stream_timeout?;
    super::timer::sleep_until(context.deadline(after)?)
}

/// The deadline passed before the inner service produced a response: answer ourselves. 504 and
/// `timeout` when the handler was waiting on anything but the client; 408 and `client_error`
/// when it was waiting for the rest of the request's body, which only the client can send
/// (README, Security).
fn deadline_response<B>(tracked: &mut Option<TrackedBox>) -> Response<MonitoredBody<B>> {
    let context = tracked
        .as_mut()
        .and_then(TrackedBox::get_mut)
        .and_then(|t| t.context.take());
    let after = context
        .as_ref()
        .and_then(|c| c.recorder().settings().stream_timeout)
        .unwrap_or_default();
    let client = context
        .as_ref()
        .is_some_and(|c| c.hints.client_holds_upload());
    let (status, kind, outcome, message) = if client {
        let error = RequestBodyTimeout { after };
        let message = error.to_string();
        (
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            Outcome::ClientError,
            message,
        )
    } else {
        let error = StreamTimeoutError::new(after);
        (
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            Outcome::Timeout,
            error.to_string(),
        )
    };
    if let (Some(context), Some(tracked)) = (context, tracked.as_ref().and_then(TrackedBox::get)) {
        context.finish_without_body(&tracked.scope, outcome, Some(&message));
    }
    let payload = serde_json::json!({"error": {"type": kind, "message": message}});
    let mut response = Response::new(MonitoredBody::full(Bytes::from(payload.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
