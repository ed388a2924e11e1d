//! The stream deadline and idle timeout ([`StreamTimer`]): polls a body within them, with one
//! `Sleep` armed at the nearer of the two; the consumer's time it counts also tells the meter
//! whether it can time a stream. It knows nothing of measuring; it lives in the
//! request's box beside the meter (`tracked.rs`), so that the body axum and hyper move about
//! stays small.

use std::cell::Cell;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http_body::{Body, Frame};
use tokio::time::{Instant, Sleep};

use crate::classify::BoxError;
use crate::timeout::StreamTimeoutError;

thread_local! {
    /// Set on a thread where tokio had no timer to give (see [`sleep_until`]): not asked again
    /// there, so that tokio's panic message shows once per thread, not once per request.
    static NO_TIMER: Cell<bool> = const { Cell::new(false) };
    /// Set once this thread has said that a stream timeout was not enforced.
    static WARNED: Cell<bool> = const { Cell::new(false) };
}

/// A sleep until `at` from the current runtime's timer; `None` where there is none: outside a
/// tokio runtime (a body polled by another executor), or in one built without `enable_time`,
/// where tokio panics: the panic is caught (its hook has printed it). The stream's limits are
/// then not enforced (README, Configuration), and a WARN event says so, once per thread.
#[cold]
#[inline(never)]
pub(crate) fn sleep_until(at: Instant) -> Option<Pin<Box<Sleep>>> {
    if NO_TIMER.get() {
        return None;
    }
    // Outside any runtime nothing is asked, nor kept: the thread's next runtime is asked
    // afresh.
    if tokio::runtime::Handle::try_current().is_err() {
        warn_not_enforced("there is no tokio runtime");
        return None;
    }
    match std::panic::catch_unwind(|| Box::pin(tokio::time::sleep_until(at))) {
        Ok(sleep) => Some(sleep),
        Err(_) => {
            NO_TIMER.set(true);
            warn_not_enforced(
                "the tokio runtime has no timer (build it with `enable_time` or `enable_all`)",
            );
            None
        }
    }
}

fn warn_not_enforced(why: &str) {
    if !WARNED.replace(true) {
        tracing::warn!("stream timeout not enforced: {why}");
    }
}

/// Resets `sleep` to `at` (if some) and polls it; `None` if the runtime that armed it has
/// shut down (a future or body polled on in another runtime), where tokio panics. The caller
/// drops that sleep and takes one from the current runtime.
#[inline]
pub(crate) fn poll_sleep(
    sleep: &mut Pin<Box<Sleep>>,
    reset: Option<Instant>,
    cx: &mut Context<'_>,
) -> Option<Poll<()>> {
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        if let Some(at) = reset {
            sleep.as_mut().reset(at);
        }
        sleep.as_mut().poll(cx)
    }))
    .ok()
}

/// Watches a body's deadline and idle gap, counting the time the body waits for its source,
/// never its consumer's (README, Security): the clock is read when the body waits; after a
/// data frame that ended a wait the caller hands over the time the frame came. One tokio
/// `Sleep`, armed at the nearer limit when the body first waits, wakes the task if no frame
/// comes before.
///
/// - The deadline passes `stream_timeout` after its origin, plus the consumer's time: from
///   the end of each wait (a frame came) to the start of the next, the body's frames were
///   ready and the time was the reader's. A reader that comes back late to a stream whose
///   source (an upstream connection, a channel fed by another task) hands on what it holds a
///   moment later is so never cut for it.
/// - The idle gap is the longest a single wait may last.
///
/// A served stream's sleep is left alone between its events. Polling it, or asking it whether
/// it fired, reads the sleep's timer state in its own allocation: a cache line every event
/// found cold, which cost more than the rest of the timer together
/// (docs/performance-history.md, Cache misses). The sleep is polled only when that can change
/// something:
///
/// - when it is first armed, or fired early (a limit moved on since it was armed: the idle
///   gap with each wait, the deadline with the consumer's time): it is reset to the nearer
///   limit;
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
/// body first waits, by the measured body (`measured.rs`); with an idle gap, or when the
/// response future armed a sleep while it waited for the response, or for a body that may
/// carry tokens (limits or none: [`for_stream`](Self::for_stream)), it is made with the
/// response.
///
/// In the order given (`repr(C)`): what each frame reads first, then what a wait reads, then
/// what only a limit's end reads (ARCHITECTURE.md, The request's memory).
#[repr(C)]
pub(crate) struct StreamTimer {
    /// A limit passed: the body ended with its error.
    timed_out: bool,
    /// The body waits for its source: it found nothing ready at `wait_started`, and no frame
    /// came since.
    waiting: bool,
    /// When the last wait ended (a frame came), or the time the body was first handed on
    /// frames (its response, for a stream's timer): until the next wait, the time is the
    /// consumer's.
    wait_ended: Instant,
    /// The consumer's time so far: the deadline passes this much later.
    reader_time: Duration,
    /// When the current wait began (while `waiting`).
    wait_started: Instant,
    /// The longest a wait may last (`idle_timeout`).
    idle: Option<Duration>,
    /// When the deadline passes, the consumer's time aside; `None` without a deadline or past
    /// the clock's range (it never passes).
    deadline_at: Option<Instant>,
    /// When the sleep is set to fire.
    armed_at: Option<Instant>,
    /// The waker the sleep holds, once a poll registered it.
    registered: Option<Waker>,
    /// The total time the request may take, for its error.
    deadline_after: Duration,
    /// `None` until the body first waits (or the response future's own sleep, handed over).
    sleep: Option<Pin<Box<Sleep>>>,
}

impl StreamTimer {
    /// A timer for the limits set, if any: `deadline` after `origin`, and `idle` for each wait,
    /// the body handed on from now. `sleep` is the response future's, armed at the deadline
    /// while it waited for the response; it is reused rather than dropped.
    pub(crate) fn new(
        sleep: Option<Pin<Box<Sleep>>>,
        origin: Instant,
        deadline: Option<Duration>,
        idle: Option<Duration>,
    ) -> Option<Self> {
        if deadline.is_none() && idle.is_none() {
            return None;
        }
        let mut timer = Self::with_limits(origin, deadline, idle, Instant::now());
        if let Some(sleep) = sleep {
            // Armed at the deadline, and polled by the future with a waker it may or may not
            // have registered: the first wait polls it again.
            timer.armed_at = Some(sleep.deadline());
            timer.sleep = Some(sleep);
        }
        Some(timer)
    }

    /// A timer for a total deadline alone, `after` from `origin`, made by a body that waits
    /// for the first time; its frames were handed on from `handed_since` (its first byte) with
    /// no wait, in the consumer's time.
    #[cold]
    pub(crate) fn new_deadline(
        (origin, after): (Instant, Duration),
        handed_since: Instant,
    ) -> Self {
        Self::with_limits(origin, Some(after), None, handed_since)
    }

    /// The timer of a body timed as a stream (`StreamMeter::timed_as_stream`), made with its
    /// response at `handed_since`, whether or not a limit is set: the consumer's time from there
    /// decides whether the meter can time the stream
    /// ([`consumer_time_at`](Self::consumer_time_at)).
    /// `deadline`: where the total deadline counts from and its length, if one is set.
    pub(crate) fn for_stream(deadline: Option<(Instant, Duration)>, handed_since: Instant) -> Self {
        let (origin, after) = deadline.map_or((handed_since, None), |(o, a)| (o, Some(a)));
        Self::with_limits(origin, after, None, handed_since)
    }

    fn with_limits(
        origin: Instant,
        deadline: Option<Duration>,
        idle: Option<Duration>,
        handed_since: Instant,
    ) -> Self {
        Self {
            timed_out: false,
            waiting: false,
            wait_ended: handed_since,
            reader_time: Duration::ZERO,
            wait_started: handed_since,
            idle,
            deadline_at: deadline.and_then(|after| origin.checked_add(after)),
            armed_at: None,
            registered: None,
            deadline_after: deadline.unwrap_or_default(),
            sleep: None,
        }
    }

    /// Polls `inner` for its next frame, within the limits: a [`StreamTimeoutError`] once the
    /// deadline passed or a wait lasted the idle gap (and nothing after it). The clock is read
    /// when the body waits; after a data frame the caller hands the time it came to
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
                self.begin_wait(now);
                self.wait(cx, now)
            }
        }
    }

    /// A data frame came, at `read` if the caller read the clock for it (else now): if it
    /// ended a wait, the consumer's time starts again. A frame past the deadline is handed on
    /// like any other: the deadline ends a body only while it waits for its source.
    #[inline]
    pub(crate) fn on_data(&mut self, read: Option<Instant>) {
        if self.waiting {
            self.waiting = false;
            self.wait_ended = read.unwrap_or_else(Instant::now);
        }
    }

    /// The consumer's time up to a frame that has just come at `t` (before
    /// [`on_data`](Self::on_data) is told of it): the time from each frame handed on (or the
    /// response) to the next wait, and, when this frame ended no wait, since the last one ended.
    /// A source that makes its frames whether or not it is asked (an upstream connection) may
    /// have made them meanwhile; one that makes them when asked (a stream that sleeps when
    /// polled) did not: the meter cannot tell, and times a stream only while this stays small
    /// (README, Security).
    #[inline]
    pub(crate) fn consumer_time_at(&self, t: Instant) -> Duration {
        if self.waiting {
            self.reader_time
        } else {
            self.reader_time
                .saturating_add(t.saturating_duration_since(self.wait_ended))
        }
    }

    /// The body waits, with no timer polled before: its error if a limit has passed, else
    /// pending, with the sleep armed to wake the task at the nearer limit.
    #[inline]
    pub(crate) fn waited<D>(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<D>, BoxError>>> {
        self.begin_wait(Instant::now());
        match self.poll_expired(cx) {
            Poll::Ready(error) => self.expired(error),
            Poll::Pending => Poll::Pending,
        }
    }

    /// The body found nothing ready at `now`: a wait begins, unless one goes on; the time
    /// since the last one ended was the consumer's.
    #[inline]
    fn begin_wait(&mut self, now: Instant) {
        if !self.waiting {
            self.waiting = true;
            self.reader_time = self
                .reader_time
                .saturating_add(now.saturating_duration_since(self.wait_ended));
            self.wait_started = now;
        }
    }

    /// The body waits: the clock read at `now`, once the inner body said so.
    #[inline]
    fn wait<D>(
        &mut self,
        cx: &mut Context<'_>,
        now: Instant,
    ) -> Poll<Option<Result<Frame<D>, BoxError>>> {
        // The usual wait: the sleep holds this task's waker and has not fired yet. It is not
        // armed past the nearer limit, which only moves later (the deadline with the
        // consumer's time, the idle gap with each wait), so no limit has passed either (a
        // sleep handed over by the response future, armed at the deadline before an idle gap
        // began, has no waker registered here: the first wait polls it, and resets it).
        if self.deadline_at.is_none() && self.idle.is_none() {
            // No limit (a stream's timer, counting the consumer's time only): nothing to arm.
            return Poll::Pending;
        }
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

    /// When the body's current wait for its source began, if it waits.
    pub(crate) fn wait_started(&self) -> Option<Instant> {
        self.waiting.then_some(self.wait_started)
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

    /// When the deadline passes, the consumer's time so far added; `None` if never.
    #[inline]
    fn deadline_end(&self) -> Option<Instant> {
        self.deadline_at?.checked_add(self.reader_time)
    }

    /// When the current wait lasts the idle gap; `None` if never.
    #[inline]
    fn idle_end(&self) -> Option<Instant> {
        self.wait_started.checked_add(self.idle?)
    }

    /// The limit that passed by `now` for the body, waiting: the deadline first.
    #[inline]
    fn passed(&self, now: Instant) -> Option<StreamTimeoutError> {
        if self.deadline_end().is_some_and(|at| now >= at) {
            return Some(StreamTimeoutError::new(self.deadline_after));
        }
        let idle = self.idle?;
        (now >= self.idle_end()?).then(|| StreamTimeoutError::idle(idle))
    }

    fn next_deadline(&self) -> Option<Instant> {
        match (self.deadline_end(), self.idle_end()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// No timer to keep the limits with (see [`sleep_until`]): the body goes on without them,
    /// its consumer's time still counted.
    #[cold]
    fn no_timer(&mut self) -> Poll<StreamTimeoutError> {
        self.sleep = None;
        self.armed_at = None;
        self.deadline_at = None;
        self.idle = None;
        Poll::Pending
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
            let (sleep, fresh) = match self.sleep.as_mut() {
                Some(sleep) => (sleep, false),
                None => match sleep_until(next) {
                    Some(sleep) => {
                        self.armed_at = Some(next);
                        (self.sleep.insert(sleep), true)
                    }
                    None => return self.no_timer(),
                },
            };
            let reset = (self.armed_at != Some(next)).then_some(next);
            self.armed_at = Some(next);
            // Registered only if the task had budget left (see the type's docs).
            let budget = tokio::task::coop::has_budget_remaining();
            self.registered = None;
            match poll_sleep(sleep, reset, cx) {
                Some(Poll::Pending) => {
                    if budget {
                        self.registered = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
                // Fired: a limit passed (the loop's check says which), or moved on since it
                // was armed (the loop resets it).
                Some(Poll::Ready(())) => self.armed_at = None,
                // Its runtime is gone: the loop takes a sleep from the current one, once.
                None if !fresh => {
                    self.sleep = None;
                    self.armed_at = None;
                }
                None => return self.no_timer(),
            }
        }
    }
}

/// The bytes at the start of a timer that each frame reads, and that a wait reads (see
/// `StreamTimer`).
#[cfg(test)]
pub(crate) const FRAME_BYTES: usize = 24;
#[cfg(test)]
pub(crate) const WAIT_BYTES: usize = 120;

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
            offset_of!(StreamTimer, waiting) + 1,
            offset_of!(StreamTimer, wait_ended) + size_of::<Instant>(),
        ];
        assert_eq!(frame.into_iter().max(), Some(FRAME_BYTES));
        let wait = [
            offset_of!(StreamTimer, reader_time) + size_of::<Duration>(),
            offset_of!(StreamTimer, wait_started) + size_of::<Instant>(),
            offset_of!(StreamTimer, idle) + size_of::<Option<Duration>>(),
            offset_of!(StreamTimer, deadline_at) + size_of::<Option<Instant>>(),
            offset_of!(StreamTimer, armed_at) + size_of::<Option<Instant>>(),
            offset_of!(StreamTimer, registered) + size_of::<Option<Waker>>(),
        ];
        assert_eq!(wait.into_iter().max(), Some(WAIT_BYTES));
    }

    /// A body with `frames` frames ready, then none ever.
    fn ready_then_hung(frames: usize) -> impl Body<Data = Bytes, Error = Infallible> {
        use futures_util::StreamExt as _;
        let ready = (0..frames).map(|_| Ok(Frame::data(Bytes::from_static(b"x"))));
        http_body_util::StreamBody::new(
            futures_util::stream::iter(ready).chain(futures_util::stream::pending()),
        )
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
        let mut timer =
            StreamTimer::new_deadline((Instant::now(), Duration::from_secs(2)), Instant::now());
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
        let mut timer =
            StreamTimer::new_deadline((Instant::now(), Duration::from_secs(2)), Instant::now());
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
        let started = Instant::now();
        let mut timer = StreamTimer::new_deadline((started, Duration::from_secs(2)), started);
        let mut body = std::pin::pin!(ready_then_hung(3));
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
        // The wait begins past the deadline: the 2 s the reader held its ready frames were
        // its own, so the source has the deadline's whole length of waiting, to 4 s.
        assert!(timer.poll_frame(body.as_mut(), &mut cx).is_pending());
        tokio::time::advance(Duration::from_millis(1999)).await;
        assert!(timer.poll_frame(body.as_mut(), &mut cx).is_pending());
        tokio::time::advance(Duration::from_millis(1)).await;
        let kind = ended_by(timer.poll_frame(body.as_mut(), &mut cx));
        assert_eq!(kind, TimeoutKind::Deadline);
        assert_eq!(started.elapsed(), Duration::from_secs(4));
        assert!(matches!(
            timer.poll_frame(body.as_mut(), &mut cx),
            Poll::Ready(None)
        ));
    }

    /// The idle gap is the longest single wait: a reader away for longer than the gap, its
    /// frames ready, is no idle source; a wait that lasts the gap after it comes back is.
    #[tokio::test(start_paused = true)]
    async fn the_idle_gap_counts_waits_not_the_readers_absence() {
        let started = Instant::now();
        let mut timer = StreamTimer::new(None, started, None, Some(Duration::from_secs(1)))
            .expect("an idle gap");
        let mut body = std::pin::pin!(ready_then_hung(2));
        let waker = Waker::from(Arc::new(Flag::default()));
        let mut cx = Context::from_waker(&waker);
        for _ in 0..2 {
            // The reader takes a frame, then looks away for three idle gaps.
            assert!(matches!(
                timer.poll_frame(body.as_mut(), &mut cx),
                Poll::Ready(Some(Ok(_)))
            ));
            timer.on_data(Some(Instant::now()));
            tokio::time::advance(Duration::from_secs(3)).await;
        }
        assert!(timer.poll_frame(body.as_mut(), &mut cx).is_pending());
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(timer.poll_frame(body.as_mut(), &mut cx).is_pending());
        tokio::time::advance(Duration::from_millis(1)).await;
        let kind = ended_by(timer.poll_frame(body.as_mut(), &mut cx));
        assert_eq!(kind, TimeoutKind::Idle);
        assert_eq!(started.elapsed(), Duration::from_secs(7));
    }

    /// A source that waited since before the deadline is cut at the deadline, however late
    /// its reader polls again: the time it waited was the source's.
    #[tokio::test(start_paused = true)]
    async fn a_wait_begun_before_the_deadline_ends_at_it() {
        let started = Instant::now();
        let mut timer = StreamTimer::new_deadline((started, Duration::from_secs(2)), started);
        let mut body = std::pin::pin!(hung());
        let flag = Arc::new(Flag::default());
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(timer.poll_frame(body.as_mut(), &mut cx).is_pending());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(flag.0.load(Ordering::SeqCst), "woken at the deadline");
        let kind = ended_by(timer.poll_frame(body.as_mut(), &mut cx));
        assert_eq!(kind, TimeoutKind::Deadline);
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
        let mut timer = StreamTimer::new_deadline((started, Duration::from_secs(2)), started);
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
