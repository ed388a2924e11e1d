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
use crate::timeout::StreamTimeoutError;

/// Watches a body's deadline and idle gap: the clock tells whether a limit passed (read when
/// the body waits; after a data frame the caller hands over the time the frame came); one tokio
/// `Sleep`, armed at the nearer limit when the body first waits, wakes the task if no frame
/// comes before.
///
/// A served stream's sleep is left alone between its events. Polling it, or asking it whether
/// it fired, reads the sleep's timer state in its own allocation: a cache line every event
/// found cold, which cost more than the rest of the timer together (README, Performance). The
/// sleep is polled only when that can change something:
///
/// - when it is first armed, or fired early (the idle gap moved on since it was armed): it is
///   reset to the nearer limit;
/// - when the task that waits is not the one it will wake (`Waker::will_wake`);
/// - after a poll that may not have registered the task: tokio declines to register a waker
///   when the task has spent its budget (and wakes the task soon instead), so the sleep is
///   polled again at the next wait.
///
/// This relies on tokio registering the waker whenever a sleep polled with budget left is
/// pending, as tokio 1.x does. Its unstable task dumps (`tokio_unstable` with `taskdump`) are
/// the exception: a sleep polled while a dump is taken only wakes the task once, so a stream
/// that hangs across a dump is not cut.
///
/// Most bodies are ready at once (a small response is one frame): they never arm a sleep,
/// which takes a place in the timer wheel under its driver's lock, and the same again to
/// leave it. With a deadline alone (the usual setting) the timer itself is made only when the
/// body first waits, by the measured body (`measured.rs`); with an idle gap, which runs from the response, or when the response
/// future armed a sleep while it waited for the response, it is made with the response.
///
/// In the order given (`repr(C)`): what each frame reads first, then what a wait reads
/// (ARCHITECTURE.md, The request's memory).
#[repr(C)]
pub(crate) struct StreamTimer {
    /// A limit passed: the body ended with its error.
    timed_out: bool,
    /// When the deadline passes, and the total time the request may take (for its error).
    /// `None` also for a deadline past the clock's range: it never passes.
    deadline: Option<(Instant, Duration)>,
    idle: Option<Idle>,
    /// When the sleep is set to fire.
    armed_at: Option<Instant>,
    /// The waker the sleep holds, once a poll registered it.
    registered: Option<Waker>,
    /// `None` until the body first waits (or the response future's own sleep, handed over).
    sleep: Option<Pin<Box<Sleep>>>,
}

/// The idle gap, and when the last frame came.
struct Idle {
    after: Duration,
    last_activity: Instant,
}

impl Idle {
    /// When the gap ends; `None` past the clock's range (it never does).
    fn end(&self) -> Option<Instant> {
        self.last_activity.checked_add(self.after)
    }
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
        let mut timer = Self::with_limits(started, deadline, idle);
        if let Some(sleep) = sleep {
            // Armed at the deadline, and polled by the future with a waker it may or may not
            // have registered: the first wait polls it again.
            timer.armed_at = Some(sleep.deadline());
            timer.sleep = Some(sleep);
        }
        Some(timer)
    }

    /// A timer for a total deadline alone, `after` from `started`, made by a body that waits.
    #[cold]
    pub(crate) fn new_deadline((started, after): (Instant, Duration)) -> Self {
        Self::with_limits(started, Some(after), None)
    }

    /// The timer's state, the idle gap counted from now.
    fn with_limits(started: Instant, deadline: Option<Duration>, idle: Option<Duration>) -> Self {
        Self {
            sleep: None,
            armed_at: None,
            registered: None,
            deadline: deadline.and_then(|after| Some((started.checked_add(after)?, after))),
            idle: idle.map(|after| Idle {
                after,
                last_activity: Instant::now(),
            }),
            timed_out: false,
        }
    }

    /// Polls `inner` for its next frame, within the limits: a [`StreamTimeoutError`] once the
    /// deadline passed or no frame came for the idle gap (and nothing after it). The clock is
    /// read when the body waits; after a data frame the caller hands the time it came to
    /// [`on_data`](Self::on_data).
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
        match inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(other) => Poll::Ready(other.map(|r| r.map_err(Into::into))),
            // A limit is only final when the inner body has nothing: a consumer that polls
            // late (a client reading slowly) must not turn a busy upstream into a late or an
            // idle one (README, Security).
            Poll::Pending => {
                let now = Instant::now();
                match self.passed(now) {
                    Some(error) => self.expired(error),
                    None => self.wait(cx, now),
                }
            }
        }
    }

    /// A data frame came, at `read` if the caller read the clock for it (else now): the idle
    /// gap starts again. A frame past the deadline is handed on like any other: the deadline
    /// ends a body only while it waits for its source.
    #[inline]
    pub(crate) fn on_data(&mut self, read: Option<Instant>) {
        if let Some(idle) = self.idle.as_mut() {
            idle.last_activity = read.unwrap_or_else(Instant::now);
        }
    }

    /// The body waits, with no timer polled before: its error if a limit has passed, else
    /// pending, with the sleep armed to wake the task at the nearer limit.
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

    /// The body waits: the clock read at `now`, once the inner body said so, and no limit had
    /// passed then.
    #[inline]
    fn wait<D>(
        &mut self,
        cx: &mut Context<'_>,
        now: Instant,
    ) -> Poll<Option<Result<Frame<D>, BoxError>>> {
        // The usual wait: the sleep holds this task's waker and has not fired yet. It is not
        // armed past the nearer limit, which only moves later (a sleep handed over by the
        // response future, armed at the deadline before an idle gap began, has no waker
        // registered here: the first wait polls it, and resets it).
        let armed = self.armed_at.is_some_and(|at| at > now);
        let registered = self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        if armed && registered {
            return Poll::Pending;
        }
        self.waited(cx)
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

    /// The limit that passed by `now`, if any: the deadline first.
    #[inline]
    fn passed(&self, now: Instant) -> Option<StreamTimeoutError> {
        if let Some((at, after)) = self.deadline {
            if now >= at {
                return Some(StreamTimeoutError::new(after));
            }
        }
        let idle = self.idle.as_ref()?;
        (now >= idle.end()?).then(|| StreamTimeoutError::idle(idle.after))
    }

    fn next_deadline(&self) -> Option<Instant> {
        let idle = self.idle.as_ref().and_then(Idle::end);
        match (self.deadline.map(|(at, _)| at), idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Ready with the error once a limit has passed; else pending, with the sleep armed at the
    /// nearer limit (reset if it fired early) and polled, so that it wakes this task.
    #[cold]
    #[inline(never)]
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<StreamTimeoutError> {
        loop {
            if let Some(error) = self.passed(Instant::now()) {
                return Poll::Ready(error);
            }
            let Some(next) = self.next_deadline() else {
                return Poll::Pending;
            };
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(next)));
            if self.armed_at != Some(next) {
                sleep.as_mut().reset(next);
                self.armed_at = Some(next);
            }
            // Registered only if the task had budget left (see the type's docs).
            let budget = tokio::task::coop::has_budget_remaining();
            self.registered = None;
            if sleep.as_mut().poll(cx).is_pending() {
                if budget {
                    self.registered = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
            // Fired: a limit passed (the loop's check says which), or the idle gap moved on
            // since it was armed (the loop resets it).
            self.armed_at = None;
        }
    }
}

/// The bytes at the start of a timer that each frame reads, and that a wait reads (see
/// `StreamTimer`).
#[cfg(test)]
pub(crate) const FRAME_BYTES: usize = 72;
#[cfg(test)]
pub(crate) const WAIT_BYTES: usize = 104;

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Wake, Waker};

    use bytes::Bytes;

    use super::*;
    use crate::timeout::TimeoutKind;

    #[derive(Default)]
    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// What each frame reads of the timer is its first `FRAME_BYTES`, and a wait its first
    /// `WAIT_BYTES` (ARCHITECTURE.md, The request's memory).
    #[test]
    fn a_frame_reads_the_first_bytes_of_the_timer() {
        use std::mem::{offset_of, size_of};
        assert_eq!(size_of::<Option<StreamTimer>>(), size_of::<StreamTimer>());
        let frame = [
            offset_of!(StreamTimer, timed_out) + 1,
            offset_of!(StreamTimer, deadline) + size_of::<Option<(Instant, Duration)>>(),
            offset_of!(StreamTimer, idle) + size_of::<Option<Idle>>(),
        ];
        assert_eq!(frame.into_iter().max(), Some(FRAME_BYTES));
        let wait = [
            offset_of!(StreamTimer, armed_at) + size_of::<Option<Instant>>(),
            offset_of!(StreamTimer, registered) + size_of::<Option<Waker>>(),
        ];
        assert_eq!(wait.into_iter().max(), Some(WAIT_BYTES));
    }

    /// A body that never gives a frame.
    fn hung() -> impl Body<Data = Bytes, Error = Infallible> {
        http_body_util::StreamBody::new(futures_util::stream::pending::<
            Result<Frame<Bytes>, Infallible>,
        >())
    }

    /// The body's error, once the timer ends it.
    fn ended_by<D>(polled: Poll<Option<Result<Frame<D>, BoxError>>>) -> TimeoutKind {
        let Poll::Ready(Some(Err(error))) = polled else {
            panic!("the body ends with an error");
        };
        error
            .downcast_ref::<StreamTimeoutError>()
            .expect("a stream timeout")
            .kind()
    }

    /// A wait polled from another task hands that task's waker to the sleep, which wakes it
    /// (not the first) at the deadline; the next poll reports the deadline.
    #[tokio::test(start_paused = true)]
    async fn the_sleep_wakes_the_task_that_waited_last() {
        let mut timer = StreamTimer::new_deadline((Instant::now(), Duration::from_secs(2)));
        let mut body = std::pin::pin!(hung());
        let (first, second) = (Arc::new(Flag::default()), Arc::new(Flag::default()));
        let (first_waker, second_waker) = (Waker::from(first.clone()), Waker::from(second.clone()));
        let mut first_cx = Context::from_waker(&first_waker);
        let mut second_cx = Context::from_waker(&second_waker);
        assert!(timer.poll_frame(body.as_mut(), &mut first_cx).is_pending());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(timer.poll_frame(body.as_mut(), &mut second_cx).is_pending());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(second.0.load(Ordering::SeqCst), "the last waker is woken");
        assert!(!first.0.load(Ordering::SeqCst), "the replaced waker is not");
        let kind = ended_by(timer.poll_frame(body.as_mut(), &mut second_cx));
        assert_eq!(kind, TimeoutKind::Deadline);
    }

    /// The same task waiting again (the sleep holds its waker already, so the wait takes the
    /// path that leaves the sleep alone) is still woken at the deadline, not before.
    #[tokio::test(start_paused = true)]
    async fn a_task_that_waits_again_is_still_woken() {
        let mut timer = StreamTimer::new_deadline((Instant::now(), Duration::from_secs(2)));
        let mut body = std::pin::pin!(hung());
        let flag = Arc::new(Flag::default());
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        for _ in 0..3 {
            assert!(timer.poll_frame(body.as_mut(), &mut cx).is_pending());
            tokio::time::advance(Duration::from_millis(500)).await;
            assert!(
                !flag.0.load(Ordering::SeqCst),
                "not woken before the deadline"
            );
        }
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(flag.0.load(Ordering::SeqCst), "woken at the deadline");
        let kind = ended_by(timer.poll_frame(body.as_mut(), &mut cx));
        assert_eq!(kind, TimeoutKind::Deadline);
    }

    /// An idle gap moves on with each frame; the sleep, armed at the gap's first end, fires
    /// early, is set again at the new end, and cuts the body there.
    #[tokio::test(start_paused = true)]
    async fn an_idle_gap_that_moved_on_is_cut_at_its_new_end() {
        let started = Instant::now();
        let mut timer = StreamTimer::new(None, started, None, Some(Duration::from_secs(1)))
            .expect("an idle gap");
        let mut body = std::pin::pin!(hung());
        let flag = Arc::new(Flag::default());
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(timer.poll_frame(body.as_mut(), &mut cx).is_pending());
        tokio::time::advance(Duration::from_millis(600)).await;
        // A frame came (handed over by the caller): the gap now ends at 1.6 s.
        timer.on_data(Some(Instant::now()));
        assert!(timer.poll_frame(body.as_mut(), &mut cx).is_pending());
        tokio::time::advance(Duration::from_millis(400)).await;
        assert!(
            flag.0.swap(false, Ordering::SeqCst),
            "the sleep fired early, at 1 s"
        );
        assert!(timer.poll_frame(body.as_mut(), &mut cx).is_pending());
        // Set again at 1.6 s: nothing wakes the task before.
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!flag.0.load(Ordering::SeqCst), "not woken again at once");
        tokio::time::advance(Duration::from_millis(598)).await;
        assert!(
            !flag.0.load(Ordering::SeqCst),
            "not woken before the gap's new end"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(flag.0.load(Ordering::SeqCst), "woken at the gap's new end");
        let kind = ended_by(timer.poll_frame(body.as_mut(), &mut cx));
        assert_eq!(kind, TimeoutKind::Idle);
        assert_eq!(started.elapsed(), Duration::from_millis(1600));
    }

    /// Frames ready past the deadline are handed on, however late they are asked for (a
    /// consumer reading slowly): the deadline ends the body only once it waits for its source.
    #[tokio::test(start_paused = true)]
    async fn frames_ready_past_the_deadline_pass_and_a_wait_ends_the_body() {
        use futures_util::StreamExt as _;
        let started = Instant::now();
        let mut timer = StreamTimer::new_deadline((started, Duration::from_secs(2)));
        let frames = futures_util::stream::iter(
            (0..3).map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"x")))),
        )
        .chain(futures_util::stream::pending::<
            Result<Frame<Bytes>, Infallible>,
        >());
        let mut body = std::pin::pin!(http_body_util::StreamBody::new(frames));
        let waker = Waker::from(Arc::new(Flag::default()));
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(
            timer.poll_frame(body.as_mut(), &mut cx),
            Poll::Ready(Some(Ok(_)))
        ));
        tokio::time::advance(Duration::from_secs(2)).await;
        for _ in 0..2 {
            assert!(matches!(
                timer.poll_frame(body.as_mut(), &mut cx),
                Poll::Ready(Some(Ok(_)))
            ));
            timer.on_data(Some(Instant::now()));
        }
        let kind = ended_by(timer.poll_frame(body.as_mut(), &mut cx));
        assert_eq!(kind, TimeoutKind::Deadline);
        assert!(matches!(
            timer.poll_frame(body.as_mut(), &mut cx),
            Poll::Ready(None)
        ));
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
