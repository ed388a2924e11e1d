//! The stream deadline and idle timeout ([`StreamTimer`]): polls a body within them, with one
//! `Sleep` armed at the nearer of the two. It knows nothing of measuring; it lives in the
//! request's box beside the meter (`tracked.rs`), so that the body axum and hyper move about
//! stays small.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http_body::{Body, Frame};
use tokio::time::{Instant, Sleep};

use crate::classify::BoxError;
use crate::timeout::{StreamTimeoutError, TimeoutKind};

impl StreamTimer {
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
        // A busy body (frames ready poll after poll) is checked before each frame, so that one
        // that never waits is still cut. An idle timeout is only final if the inner body has
        // nothing either: a consumer that polls late must not turn a busy upstream into an
        // idle one.
        let mut idle_expired = None;
        if self.busy() {
            if let Some(error) = self.fired() {
                if error.kind() == TimeoutKind::Deadline {
                    return self.expired(error);
                }
                idle_expired = Some(error);
            }
        }
        match inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if frame.is_data() {
                    self.on_frame(|| inner.is_end_stream());
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

    /// The body waits: its error if a limit has passed, else pending, with the sleep left to
    /// wake the task at the nearer limit.
    #[inline]
    pub(crate) fn waited<D>(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<D>, BoxError>>> {
        match self.on_wait(cx) {
            Some(error) => self.expired(error),
            None => Poll::Pending,
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
}

/// Frames ready in a row after which a body counts as busy, and is checked against its limits
/// before each frame (see [`StreamTimer::busy`]).
const BUSY_AFTER: u8 = 4;

/// Watches a stream's deadline and idle gap, with one tokio `Sleep` armed at the nearer of the
/// two.
///
/// A monitored stream is cold between its events (many are live at once), and each part of its
/// state that an event touches costs a cache miss. So the sleep is touched only when it has
/// to be:
///
/// - It is armed when the body first waits, or gives a frame with more to come: most bodies
///   are ready at once (a small response is one frame), and arming a tokio sleep takes a place
///   in the timer wheel under its driver's lock, and the same again to leave it. With a
///   deadline alone (the usual setting), the timer itself is made only then, by the measured
///   body (`measured.rs`); an idle gap runs from the response, so its timer is made with it.
/// - When the body waits, the clock says whether a limit passed, and the sleep is polled only
///   to give it a new waker or to re-arm it once it has fired: the usual wait of a stream
///   (same task, sleep still ahead) reads one clock and nothing of the sleep.
/// - A body that waits is never checked before a frame; a busy one (ready [`BUSY_AFTER`]
///   times in a row) is, by the sleep's own elapsed flag (no clock read per frame).
///
/// The idle deadline moves with every frame, but the sleep is only re-armed when it fires
/// early: a frame costs one clock read, not a timer update.
pub(crate) struct StreamTimer {
    /// `None` until armed (or the response future's own sleep, handed over).
    sleep: Option<Pin<Box<Sleep>>>,
    /// When the sleep is set to fire.
    sleep_at: Instant,
    /// The waker the sleep was last polled with.
    waker: Option<Waker>,
    /// When the request started, and the total time it may take (its deadline is their sum).
    started: Instant,
    deadline: Option<Duration>,
    idle: Option<Idle>,
    /// Frames ready in a row since the body last waited.
    ready_streak: u8,
    /// A limit passed: the body ended with its error.
    timed_out: bool,
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
            sleep: None,
            sleep_at: started,
            waker: None,
            started,
            deadline,
            idle: idle.map(|after| Idle {
                after,
                last_activity: Instant::now(),
            }),
            ready_streak: 0,
            timed_out: false,
        };
        if let Some(mut sleep) = sleep {
            // Armed at the deadline; an idle gap may end before it.
            if let Some(next) = timer.next_deadline() {
                if next != sleep.deadline() {
                    sleep.as_mut().reset(next);
                }
            }
            timer.sleep_at = sleep.deadline();
            timer.sleep = Some(sleep);
        }
        Some(timer)
    }

    /// A timer for a total deadline alone, `after` from `started`, not yet armed: for a body
    /// that waits (its first wait arms it).
    #[cold]
    pub(crate) fn new_deadline((started, after): (Instant, Duration)) -> Self {
        Self {
            sleep: None,
            sleep_at: started,
            waker: None,
            started,
            deadline: Some(after),
            idle: None,
            ready_streak: 0,
            timed_out: false,
        }
    }

    /// The same, armed: for a body that gave a frame with more to come, which may never wait.
    #[cold]
    pub(crate) fn armed(deadline: (Instant, Duration)) -> Self {
        let mut timer = Self::new_deadline(deadline);
        timer.arm();
        timer
    }

    fn next_deadline(&self) -> Option<Instant> {
        let idle = self.idle.as_ref().map(|i| i.last_activity + i.after);
        match (self.deadline.map(|after| self.started + after), idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the body has been ready [`BUSY_AFTER`] times in a row: it may never wait, so
    /// its limits are checked before each frame.
    #[inline]
    fn busy(&self) -> bool {
        self.ready_streak >= BUSY_AFTER
    }

    /// A busy body's check before a frame: the limit passed if the sleep fired (read from the
    /// sleep, which a busy body keeps warm, rather than from the clock).
    fn fired(&self) -> Option<StreamTimeoutError> {
        if self.sleep.as_ref().is_some_and(|s| s.is_elapsed()) {
            self.expired_at(Instant::now())
        } else {
            None
        }
    }

    /// The limit passed at `now`, if any (the deadline first).
    fn expired_at(&self, now: Instant) -> Option<StreamTimeoutError> {
        if let Some(after) = self.deadline {
            if now >= self.started + after {
                return Some(StreamTimeoutError::new(after));
            }
        }
        match &self.idle {
            Some(idle) if now >= idle.last_activity + idle.after => {
                Some(StreamTimeoutError::idle(idle.after))
            }
            _ => None,
        }
    }

    /// A data frame came; `at_end` says whether the body has nothing more.
    #[inline]
    fn on_frame(&mut self, at_end: impl FnOnce() -> bool) {
        self.ready_streak = self.ready_streak.saturating_add(1);
        if let Some(idle) = self.idle.as_mut() {
            idle.last_activity = Instant::now();
        }
        // More to come: a body that never waits needs its sleep armed to be cut.
        if self.sleep.is_none() && !at_end() {
            self.arm();
        }
    }

    /// Arms the sleep at the nearer limit, registered with the timer so that a busy body
    /// sees it fire.
    #[cold]
    #[inline(never)]
    fn arm(&mut self) {
        if let Some(next) = self.next_deadline() {
            let mut sleep = Box::pin(tokio::time::sleep_until(next));
            sleep.as_mut().reset(next);
            self.sleep = Some(sleep);
            self.sleep_at = next;
        }
    }

    /// The body waits: the error if a limit has passed, else the sleep is left to wake the
    /// task at the nearer limit.
    #[inline]
    fn on_wait(&mut self, cx: &mut Context<'_>) -> Option<StreamTimeoutError> {
        self.ready_streak = 0;
        let now = Instant::now();
        if let Some(error) = self.expired_at(now) {
            return Some(error);
        }
        let waker_held = self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
        if self.sleep.is_none() || now >= self.sleep_at || !waker_held {
            self.poll_sleep(now, cx);
        }
        None
    }

    /// Arms the sleep at the nearer limit (again, if it fired early: the idle deadline moved
    /// on), and polls it so that it wakes this task.
    #[cold]
    #[inline(never)]
    fn poll_sleep(&mut self, now: Instant, cx: &mut Context<'_>) {
        let Some(next) = self.next_deadline() else {
            return;
        };
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(next)));
        if now >= self.sleep_at || sleep.deadline() != next {
            sleep.as_mut().reset(next);
        }
        self.sleep_at = next;
        // Pending: `next` is past `now` (the limits were checked).
        let _ = sleep.as_mut().poll(cx);
        self.waker = Some(cx.waker().clone());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::Wake;

    use super::*;

    #[derive(Default)]
    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// A wait with the same waker leaves the sleep alone; a wait with another task's waker
    /// gives it to the sleep, which then wakes that task at the deadline, and the next wait
    /// reports the deadline.
    #[tokio::test(start_paused = true)]
    async fn the_sleep_wakes_the_task_that_waited_last() {
        let mut timer = StreamTimer::new(None, Instant::now(), Some(Duration::from_secs(2)), None)
            .expect("a deadline is set");
        let (first, second) = (Arc::new(Flag::default()), Arc::new(Flag::default()));
        let (first_waker, second_waker) = (Waker::from(first.clone()), Waker::from(second.clone()));
        assert!(
            timer
                .on_wait(&mut Context::from_waker(&first_waker))
                .is_none()
        );
        assert!(
            timer
                .on_wait(&mut Context::from_waker(&first_waker))
                .is_none()
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            timer
                .on_wait(&mut Context::from_waker(&second_waker))
                .is_none()
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(second.0.load(Ordering::SeqCst), "the last waker is woken");
        assert!(!first.0.load(Ordering::SeqCst), "the replaced waker is not");
        let error = timer
            .on_wait(&mut Context::from_waker(&second_waker))
            .expect("the deadline passed");
        assert_eq!(error.kind(), TimeoutKind::Deadline);
    }
}
