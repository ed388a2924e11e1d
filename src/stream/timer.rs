//! The stream deadline and idle timeout: a body that enforces them ([`TimeoutBody`]), with one
//! `Sleep` armed at the nearer of the two ([`StreamTimer`]). It knows nothing of measuring.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::classify::BoxError;
use crate::timeout::{StreamTimeoutError, TimeoutKind};

pin_project! {
    /// The inner body, ended with a [`StreamTimeoutError`] once the deadline passes or no frame
    /// came for the idle gap. Without a timer it passes everything through.
    pub(crate) struct TimeoutBody<B> {
        #[pin]
        inner: B,
        timer: Option<StreamTimer>,
        timed_out: bool,
    }
}

impl<B> TimeoutBody<B> {
    pub(crate) fn new(inner: B, timer: Option<StreamTimer>) -> Self {
        Self {
            inner,
            timer,
            timed_out: false,
        }
    }
}

impl<B> Body for TimeoutBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let mut this = self.project();
        let quiet = match this.timer.as_mut() {
            // No limit to watch (the default): the inner body's frames as they come.
            None => return this.inner.poll_frame(cx).map_err(Into::into),
            Some(timer) => !*this.timed_out && timer.quiet(),
        };
        if !quiet {
            return Self::poll_timed(this.inner, this.timer, this.timed_out, cx);
        }
        // Nothing to check before this frame (see `StreamTimer::quiet`).
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                // More to come: from now on the deadline needs its sleep to be checked.
                if !this.inner.is_end_stream() {
                    if let Some(timer) = this.timer.as_mut() {
                        timer.arm();
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other.map(|r| r.map_err(Into::into))),
            Poll::Pending => Self::first_wait(this.timer, this.timed_out, cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.timed_out {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}

impl<B> TimeoutBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    /// [`poll_frame`](Body::poll_frame) with a timer to check.
    #[inline]
    fn poll_timed(
        mut inner: Pin<&mut B>,
        timer: &mut Option<StreamTimer>,
        timed_out: &mut bool,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        if *timed_out {
            return Poll::Ready(None);
        }
        let mut expired = |error: StreamTimeoutError| {
            *timed_out = true;
            Poll::Ready(Some(Err(Box::new(error) as BoxError)))
        };
        // The deadline is checked before the inner body, so a body that is never pending is
        // still cut. An idle timeout is only final if the inner body has nothing either: a
        // consumer that polls late must not turn a busy upstream into an idle one.
        let mut idle_expired = None;
        if let Some(timer) = timer.as_mut() {
            if timer.fired() {
                if let Poll::Ready(error) = timer.poll_expired(cx) {
                    if error.kind() == TimeoutKind::Deadline {
                        return expired(error);
                    }
                    idle_expired = Some(error);
                }
            }
        }
        match inner.as_mut().poll_frame(cx) {
            Poll::Pending => {
                if let Some(error) = idle_expired {
                    return expired(error);
                }
                if let Some(timer) = timer.as_mut() {
                    if let Poll::Ready(error) = timer.poll_expired(cx) {
                        return expired(error);
                    }
                }
                Poll::Pending
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(timer) = timer.as_mut() {
                    if frame.is_data() {
                        timer.touch();
                    }
                    if !timer.armed() && !inner.is_end_stream() {
                        timer.arm();
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other.map(|r| r.map_err(Into::into))),
        }
    }

    /// The body waits for the first time: arm the sleep, which may find a limit passed already.
    #[cold]
    #[inline(never)]
    fn first_wait(
        timer: &mut Option<StreamTimer>,
        timed_out: &mut bool,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        match timer.as_mut().map(|t| t.poll_expired(cx)) {
            Some(Poll::Ready(error)) => {
                *timed_out = true;
                Poll::Ready(Some(Err(Box::new(error) as BoxError)))
            }
            _ => Poll::Pending,
        }
    }
}

/// Watches a stream's deadline and idle gap. The idle deadline moves with every frame, but the
/// sleep is only re-armed when it fires early: a frame costs one clock read, not a timer update.
///
/// The sleep is armed at the first poll that finds the body pending, not when the timer is
/// made: most bodies are ready at once (a small response is one frame), and arming a tokio
/// timer takes its driver's lock and a place in its wheel, then the same again to leave it.
/// A body that never waits is never waited for, so it needs no timer; a busy body that never
/// waits is still ended at its deadline by the clock check in [`TimeoutBody`].
pub(crate) struct StreamTimer {
    /// `None` until the body first waits (or the response future's own sleep, handed over).
    sleep: Option<Pin<Box<Sleep>>>,
    /// When the request started, and the total time it may take (its deadline is their sum,
    /// added up only when the sleep is armed).
    started: Instant,
    deadline: Option<Duration>,
    idle: Option<Idle>,
}

/// The idle gap, and when the last frame came.
struct Idle {
    after: Duration,
    last_activity: Instant,
}

impl StreamTimer {
    /// A timer for the limits set, if any: `deadline` after `started`, and `idle`. `sleep` is
    /// the response future's, armed at the deadline while it waited for the response; it is
    /// reused rather than dropped.
    #[inline]
    pub(crate) fn new(
        sleep: Option<Pin<Box<Sleep>>>,
        started: Instant,
        deadline: Option<Duration>,
        idle: Option<Duration>,
    ) -> Option<Self> {
        if deadline.is_none() && idle.is_none() {
            return None;
        }
        let mut timer = Self {
            sleep,
            started,
            deadline,
            idle: idle.map(|after| Idle {
                after,
                last_activity: Instant::now(),
            }),
        };
        // A handed-over sleep is armed at the deadline; an idle gap may end before it.
        if timer.idle.is_some() {
            if let (Some(next), Some(sleep)) = (timer.next_deadline(), timer.sleep.as_mut()) {
                sleep.as_mut().reset(next);
            }
        }
        Some(timer)
    }

    fn next_deadline(&self) -> Option<Instant> {
        let idle = self.idle.as_ref().map(|i| i.last_activity + i.after);
        match (self.deadline.map(|after| self.started + after), idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A frame arrived.
    pub(crate) fn touch(&mut self) {
        if let Some(idle) = self.idle.as_mut() {
            idle.last_activity = Instant::now();
        }
    }

    /// Whether this poll of the body has nothing to check first: no sleep is armed yet (the
    /// body has neither waited nor given a frame with more to come), and no idle gap is kept.
    #[inline]
    pub(crate) fn quiet(&self) -> bool {
        self.sleep.is_none() && self.idle.is_none()
    }

    /// Whether the sleep is armed.
    #[inline]
    pub(crate) fn armed(&self) -> bool {
        self.sleep.is_some()
    }

    /// Arms the sleep at the nearer limit, if it is not armed: registered with the timer, so
    /// that [`Self::fired`] sees it pass even for a body that never waits.
    #[cold]
    #[inline(never)]
    pub(crate) fn arm(&mut self) {
        if let (None, Some(next)) = (&self.sleep, self.next_deadline()) {
            let mut sleep = Box::pin(tokio::time::sleep_until(next));
            sleep.as_mut().reset(next);
            self.sleep = Some(sleep);
        }
    }

    /// Whether the sleep fired (no clock read): worth checking before a possibly busy inner
    /// body.
    pub(crate) fn fired(&self) -> bool {
        self.sleep.as_ref().is_some_and(|sleep| sleep.is_elapsed())
    }

    /// Ready with the error once a limit has passed; arms the sleep on the first call, and
    /// re-arms it when an idle deadline moved on.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<StreamTimeoutError> {
        loop {
            let Some(next) = self.next_deadline() else {
                return Poll::Pending;
            };
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(next)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            if let Some(after) = self.deadline {
                if now >= self.started + after {
                    return Poll::Ready(StreamTimeoutError::new(after));
                }
            }
            if let Some(idle) = &self.idle {
                if now >= idle.last_activity + idle.after {
                    return Poll::Ready(StreamTimeoutError::idle(idle.after));
                }
            }
            // Fired early: the idle deadline moved on since the sleep was armed.
            let moved_on = self.next_deadline();
            if let (Some(next), Some(sleep)) = (moved_on, self.sleep.as_mut()) {
                sleep.as_mut().reset(next);
            }
        }
    }
}
