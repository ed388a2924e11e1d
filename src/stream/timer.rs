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
        if self.timer.is_none() {
            // No limit to watch (the default): the inner body's frames as they come.
            return self.project().inner.poll_frame(cx).map_err(Into::into);
        }
        self.poll_timed(cx)
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
    /// [`poll_frame`](Body::poll_frame) with a timer.
    #[inline(never)]
    fn poll_timed(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = self.project();
        if *this.timed_out {
            return Poll::Ready(None);
        }
        let mut expired = |error: StreamTimeoutError| {
            *this.timed_out = true;
            Poll::Ready(Some(Err(Box::new(error) as BoxError)))
        };
        // The deadline is checked before the inner body, so a body that is never pending is
        // still cut. An idle timeout is only final if the inner body has nothing either: a
        // consumer that polls late must not turn a busy upstream into an idle one.
        let mut idle_expired = None;
        if let Some(timer) = this.timer.as_mut() {
            if timer.fired() {
                if let Poll::Ready(error) = timer.poll_expired(cx) {
                    if error.kind() == TimeoutKind::Deadline {
                        return expired(error);
                    }
                    idle_expired = Some(error);
                }
            }
        }
        match this.inner.poll_frame(cx) {
            Poll::Pending => {
                if let Some(error) = idle_expired {
                    return expired(error);
                }
                if let Some(timer) = this.timer.as_mut() {
                    if let Poll::Ready(error) = timer.poll_expired(cx) {
                        return expired(error);
                    }
                }
                Poll::Pending
            }
            Poll::Ready(Some(Ok(frame))) => {
                if frame.is_data() {
                    if let Some(timer) = this.timer.as_mut() {
                        timer.touch();
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other.map(|r| r.map_err(Into::into))),
        }
    }
}

/// Watches a stream's deadline and idle gap. The idle deadline moves with every frame, but the
/// sleep is only re-armed when it fires early: a frame costs one clock read, not a timer update.
pub(crate) struct StreamTimer {
    sleep: Pin<Box<Sleep>>,
    deadline: Option<(Instant, Duration)>,
    idle: Option<Duration>,
    last_activity: Instant,
}

impl StreamTimer {
    /// `sleep` is the deadline sleep the response future already armed (if any).
    #[inline]
    pub(crate) fn new(
        sleep: Option<Pin<Box<Sleep>>>,
        deadline: Option<(Instant, Duration)>,
        idle: Option<Duration>,
    ) -> Option<Self> {
        if deadline.is_none() && idle.is_none() {
            return None;
        }
        let now = Instant::now();
        let mut timer = Self {
            sleep: sleep.unwrap_or_else(|| Box::pin(tokio::time::sleep_until(now))),
            deadline,
            idle,
            last_activity: now,
        };
        let next = timer.next_deadline()?;
        timer.sleep.as_mut().reset(next);
        Some(timer)
    }

    fn next_deadline(&self) -> Option<Instant> {
        let idle = self.idle.map(|d| self.last_activity + d);
        match (self.deadline.map(|(at, _)| at), idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A frame arrived.
    pub(crate) fn touch(&mut self) {
        if self.idle.is_some() {
            self.last_activity = Instant::now();
        }
    }

    /// Whether the sleep fired (no clock read): worth checking before a possibly busy inner body.
    pub(crate) fn fired(&self) -> bool {
        self.sleep.is_elapsed()
    }

    /// Ready with the error once a limit has passed; re-arms when an idle deadline moved on.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<StreamTimeoutError> {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            if let Some((at, after)) = self.deadline {
                if now >= at {
                    return Poll::Ready(StreamTimeoutError::new(after));
                }
            }
            if let Some(idle) = self.idle {
                if now >= self.last_activity + idle {
                    return Poll::Ready(StreamTimeoutError::idle(idle));
                }
            }
            match self.next_deadline() {
                Some(next) => self.sleep.as_mut().reset(next),
                None => return Poll::Pending,
            }
        }
    }
}
