//! The stream deadline and idle timeout ([`StreamTimer`]): polls a body within them, with one
//! `Sleep` armed at the nearer of the two. It knows nothing of measuring; it lives in the
//! request's box beside the meter (`tracked.rs`), so that the body axum and hyper move about
//! stays small.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame};
use tokio::time::{Instant, Sleep};

use crate::classify::BoxError;
use crate::timeout::{StreamTimeoutError, TimeoutKind};

/// Watches a body's deadline and idle gap, with one tokio `Sleep` armed at the nearer of the
/// two.
///
/// The sleep is armed when the body first waits, or gives a frame with more to come
/// (`is_end_stream` false), not for every response: most bodies are ready at once (a small
/// response is one frame), and arming a tokio sleep takes a place in the timer wheel under its
/// driver's lock, and the same again to leave it. With a deadline alone (the usual setting),
/// the timer itself is made only then, by the measured body (`measured.rs`); with an idle gap,
/// which runs from the response, or when the response future armed a sleep while it waited
/// for the response, it is made with the response.
///
/// The idle deadline moves with every frame, but the sleep is only re-armed when it fires
/// early: a frame costs one clock read, not a timer update.
pub(crate) struct StreamTimer {
    /// `None` until armed (or the response future's own sleep, handed over).
    sleep: Option<Pin<Box<Sleep>>>,
    /// When the request started, and the total time it may take (its deadline is their sum).
    started: Instant,
    deadline: Option<Duration>,
    idle: Option<Idle>,
    /// A limit passed: the body ended with its error.
    timed_out: bool,
}

/// The idle gap, and when the last frame came.
struct Idle {
    after: Duration,
    last_activity: Instant,
}

impl StreamTimer {
    /// A timer for the limits set, if any: `deadline` after `started`, and `idle` from now.
    /// `sleep` is the response future's, armed at the deadline while it waited for the
    /// response; it is reused rather than dropped.
    pub(crate) fn new(
        sleep: Option<Pin<Box<Sleep>>>,
        started: Instant,
        deadline: Option<Duration>,
        idle: Option<Duration>,
    ) -> Option<Self> {
        if deadline.is_none() && idle.is_none() {
            return None;
        }
        let mut timer = Self::with_limits(sleep, started, deadline, idle);
        // A handed-over sleep is armed at the deadline; an idle gap may end before it.
        if timer.idle.is_some() {
            if let (Some(next), Some(sleep)) = (timer.next_deadline(), timer.sleep.as_mut()) {
                sleep.as_mut().reset(next);
            }
        }
        Some(timer)
    }

    /// A timer for a total deadline alone, `after` from `started`, made by a body that waits
    /// (its first wait arms it).
    #[cold]
    pub(crate) fn new_deadline((started, after): (Instant, Duration)) -> Self {
        Self::with_limits(None, started, Some(after), None)
    }

    /// The timer's state, the idle gap counted from now.
    fn with_limits(
        sleep: Option<Pin<Box<Sleep>>>,
        started: Instant,
        deadline: Option<Duration>,
        idle: Option<Duration>,
    ) -> Self {
        Self {
            sleep,
            started,
            deadline,
            idle: idle.map(|after| Idle {
                after,
                last_activity: Instant::now(),
            }),
            timed_out: false,
        }
    }

    /// The same, armed: made by a body that gave a frame with more to come, which may never
    /// wait.
    #[cold]
    pub(crate) fn armed(deadline: (Instant, Duration)) -> Self {
        let mut timer = Self::new_deadline(deadline);
        timer.arm();
        timer
    }

    /// Polls `inner` for its next frame, within the limits: a [`StreamTimeoutError`] once the
    /// deadline passes or no frame came for the idle gap (and nothing after it).
    #[inline]
    pub(crate) fn poll_frame<B>(
        &mut self,
        mut inner: Pin<&mut B>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        if self.timed_out {
            return Poll::Ready(None);
        }
        // The limits are checked before the inner body (by the sleep's flag, no clock read),
        // so a body that is never pending is still cut (from its second frame when the timer
        // was made by its first). An idle timeout is only final if the
        // inner body has nothing either: a consumer that polls late must not turn a busy
        // upstream into an idle one.
        let mut idle_expired = None;
        if self.fired() {
            if let Poll::Ready(error) = self.poll_expired(cx) {
                if error.kind() == TimeoutKind::Deadline {
                    return self.expired(error);
                }
                idle_expired = Some(error);
            }
        }
        match inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if frame.is_data() {
                    if let Some(idle) = self.idle.as_mut() {
                        idle.last_activity = Instant::now();
                    }
                    // More to come: a body that never waits needs its sleep armed to be cut.
                    if self.sleep.is_none() && !inner.is_end_stream() {
                        self.arm();
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other.map(|r| r.map_err(Into::into))),
            Poll::Pending => match idle_expired {
                Some(error) => self.expired(error),
                None => self.waited(cx),
            },
        }
    }

    /// The body waits: its error if a limit has passed, else pending, with the sleep armed to
    /// wake the task at the nearer limit.
    #[inline]
    pub(crate) fn waited<D>(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<D>, BoxError>>> {
        match self.poll_expired(cx) {
            Poll::Ready(error) => self.expired(error),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Ends the body with `error`.
    #[cold]
    fn expired<D>(
        &mut self,
        error: StreamTimeoutError,
    ) -> Poll<Option<Result<Frame<D>, BoxError>>> {
        self.timed_out = true;
        Poll::Ready(Some(Err(Box::new(error) as BoxError)))
    }

    fn next_deadline(&self) -> Option<Instant> {
        let idle = self.idle.as_ref().map(|i| i.last_activity + i.after);
        match (self.deadline.map(|after| self.started + after), idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Arms the sleep at the nearer limit, registered with the timer so that [`Self::fired`]
    /// sees it pass even for a body that never waits.
    #[cold]
    #[inline(never)]
    fn arm(&mut self) {
        if let Some(next) = self.next_deadline() {
            let mut sleep = Box::pin(tokio::time::sleep_until(next));
            sleep.as_mut().reset(next);
            self.sleep = Some(sleep);
        }
    }

    /// Whether the sleep fired (no clock read): worth checking before a possibly busy inner
    /// body.
    #[inline]
    fn fired(&self) -> bool {
        self.sleep.as_ref().is_some_and(|sleep| sleep.is_elapsed())
    }

    /// Ready with the error once a limit has passed. Arms the sleep if it is not, and re-arms
    /// it when it fired early (the idle deadline moved on). The sleep is polled on every call,
    /// so it holds the waker of the task that polled last; when tokio declines to register it
    /// (the task has spent its budget, and tokio wakes the task again soon), the next call
    /// registers it.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<StreamTimeoutError> {
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

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Wake, Waker};

    use bytes::Bytes;

    use super::*;

    #[derive(Default)]
    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// A wait polled from another task hands that task's waker to the sleep, which wakes it
    /// (not the first) at the deadline; the next poll reports the deadline.
    #[tokio::test(start_paused = true)]
    async fn the_sleep_wakes_the_task_that_waited_last() {
        let mut timer = StreamTimer::new_deadline((Instant::now(), Duration::from_secs(2)));
        let (first, second) = (Arc::new(Flag::default()), Arc::new(Flag::default()));
        let (first_waker, second_waker) = (Waker::from(first.clone()), Waker::from(second.clone()));
        assert!(
            timer
                .poll_expired(&mut Context::from_waker(&first_waker))
                .is_pending()
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            timer
                .poll_expired(&mut Context::from_waker(&second_waker))
                .is_pending()
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(second.0.load(Ordering::SeqCst), "the last waker is woken");
        assert!(!first.0.load(Ordering::SeqCst), "the replaced waker is not");
        let Poll::Ready(error) = timer.poll_expired(&mut Context::from_waker(&second_waker)) else {
            panic!("the deadline passed");
        };
        assert_eq!(error.kind(), TimeoutKind::Deadline);
    }

    /// A stream that hangs right after its task spent tokio's budget (200 frames queued on a
    /// channel, read in one poll: the channel turns pending at 128 and tokio then declines to
    /// register the sleep's waker) is still cut at its deadline, with every frame handed on.
    #[tokio::test(start_paused = true)]
    async fn a_hung_stream_is_cut_after_its_task_spent_its_budget() {
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<Bytes>(256);
        for _ in 0..200 {
            sender
                .try_send(Bytes::from_static(b"x"))
                .expect("room for 200");
        }
        let frames = futures_util::stream::poll_fn(move |cx| {
            receiver
                .poll_recv(cx)
                .map(|b| b.map(|b| Ok::<_, Infallible>(Frame::data(b))))
        });
        let mut body = std::pin::pin!(http_body_util::StreamBody::new(frames));
        let started = Instant::now();
        let mut timer = StreamTimer::new_deadline((started, Duration::from_secs(2)));
        let mut received = 0;
        let cut = std::future::poll_fn(|cx| {
            loop {
                match timer.poll_frame(body.as_mut(), cx) {
                    Poll::Ready(Some(Ok(_))) => received += 1,
                    Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(error)),
                    Poll::Ready(None) => return Poll::Ready(None),
                    Poll::Pending => return Poll::Pending,
                }
            }
        });
        // A lost wakeup would leave the runtime idle with nothing to wake: this fails instead
        // of hanging.
        let error = tokio::time::timeout(Duration::from_secs(10), cut)
            .await
            .expect("cut within the deadline, not left hanging")
            .expect("ended by an error");
        assert_eq!(received, 200);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        let timeout = error
            .downcast_ref::<StreamTimeoutError>()
            .expect("a stream timeout");
        assert_eq!(timeout.kind(), TimeoutKind::Deadline);
        drop(sender);
    }
}
