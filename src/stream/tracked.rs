//! A measured request's state, boxed once when the request starts.
//!
//! The response future and then the body carry a pointer to it instead of its few hundred
//! bytes: tower and axum move both several times per request (mapping futures, boxing the
//! body), and each move copied them whole.
//!
//! The box itself is kept when the request ends, emptied, for the thread's next request: taking
//! it from a short per-thread list and putting it back costs less than an allocation and a free.

use std::cell::RefCell;

use super::context::{RequestContext, RequestScope};
use super::meter::StreamMeter;
use super::timer::StreamTimer;

/// A measured request's state: its context until the response, then its meter, its timer and
/// its scope.
///
/// In the order given (`repr(C)`), from a cache-line boundary: what each frame of a stream
/// reads (the meter's first 64 bytes, the timer's first 24) takes two lines of the box, and a
/// wait three; the
/// body knows without reading the box whether the scope keeps a span (ARCHITECTURE.md, The
/// request's memory).
#[repr(C, align(64))]
pub(crate) struct Tracked {
    /// From the response on, until the body ends.
    pub(crate) meter: Option<StreamMeter>,
    /// When a stream or idle timeout is set: the body's limits, polled with it (kept here, not
    /// in the body, for the reason above). Made with the response when there is an idle gap or
    /// the handler's future waited; else, for a deadline alone, when the body first waits (see
    /// `StreamTimer`).
    pub(crate) timer: Option<StreamTimer>,
    pub(crate) scope: RequestScope,
    /// Until the response arrives (or the request ends without one).
    pub(crate) context: Option<RequestContext>,
}

/// Boxes kept per thread, at most. A request's box goes back to the thread that drops its body
/// (or its future): a thread that only ever drops keeps at most this many, about 580 bytes
/// each, and frees the rest.
const SPARE_BOXES: usize = 32;

/// The spare boxes of a thread: a fixed array, so that keeping them allocates nothing itself.
struct Spares {
    boxes: [Option<Box<Option<Tracked>>>; SPARE_BOXES],
    len: usize,
}

impl Spares {
    fn pop(&mut self) -> Option<Box<Option<Tracked>>> {
        self.len = self.len.checked_sub(1)?;
        self.boxes.get_mut(self.len)?.take()
    }

    fn push(&mut self, boxed: Box<Option<Tracked>>) {
        if let Some(slot) = self.boxes.get_mut(self.len) {
            *slot = Some(boxed);
            self.len += 1;
        }
    }
}

thread_local! {
    /// Emptied boxes (`None`), for the next requests started on this thread.
    static SPARE: RefCell<Spares> = const {
        RefCell::new(Spares {
            boxes: [const { None }; SPARE_BOXES],
            len: 0,
        })
    };
}

/// A measured request's box: `Some` from the request's start until it is given back.
pub(crate) struct TrackedBox(Box<Option<Tracked>>);

/// A box for a request about to start, empty: taken before the request's state is worked out,
/// so that the state is written straight into it rather than built apart and copied in.
pub(crate) struct EmptyBox(Box<Option<Tracked>>);

impl EmptyBox {
    /// A spare box of this thread's if there is one, else a new one.
    #[inline]
    pub(crate) fn take() -> Self {
        // A thread being torn down has no spares left: allocate.
        let spare = SPARE
            .try_with(|spare| spare.try_borrow_mut().ok()?.pop())
            .ok()
            .flatten();
        Self(spare.unwrap_or_else(|| Box::new(None)))
    }

    #[inline]
    pub(crate) fn fill(self, tracked: Tracked) -> TrackedBox {
        let mut boxed = self.0;
        // Empty (a box is emptied before it is kept, and only `take` makes an `EmptyBox`):
        // nothing there to drop, and no drop glue called to find that out.
        let empty = boxed.replace(tracked);
        debug_assert!(empty.is_none());
        std::mem::forget(empty);
        TrackedBox(boxed)
    }
}

impl TrackedBox {
    /// The request's state; `None` only once given back (never seen: giving back consumes).
    #[inline]
    pub(crate) fn get(&self) -> Option<&Tracked> {
        (*self.0).as_ref()
    }

    #[inline]
    pub(crate) fn get_mut(&mut self) -> Option<&mut Tracked> {
        (*self.0).as_mut()
    }

    /// Drops the request's state now (its span closes here, as it would with the box) and
    /// keeps the box for this thread's next request, unless the thread has enough.
    pub(crate) fn give_back(self) {
        let mut boxed = self.0;
        *boxed = None;
        let _ = SPARE.try_with(|spare| {
            if let Ok(mut spare) = spare.try_borrow_mut() {
                spare.push(boxed);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::Recorder;
    use crate::stream::state::ServiceState;

    /// What each frame reads of the box (the meter's first line, the timer's first bytes) is
    /// two of its cache lines, and a wait, which follows a frame of a served stream, three:
    /// the timer starts on a line (ARCHITECTURE.md, The request's memory).
    #[test]
    fn a_frame_reads_two_lines_of_the_box() {
        use std::collections::BTreeSet;
        use std::mem::{align_of, offset_of};
        assert_eq!(align_of::<Tracked>(), 64);
        let lines = |spans: &[(usize, usize)]| {
            let lines: BTreeSet<usize> = spans
                .iter()
                .flat_map(|&(start, len)| start / 64..(start + len).div_ceil(64))
                .collect();
            lines.len()
        };
        let meter = (offset_of!(Tracked, meter), super::super::meter::FRAME_BYTES);
        let timer = offset_of!(Tracked, timer);
        let frame = [meter, (timer, super::super::timer::FRAME_BYTES)];
        assert_eq!(lines(&frame), 2);
        let wait = [meter, (timer, super::super::timer::WAIT_BYTES)];
        assert_eq!(lines(&wait), 3);
    }

    fn spare_count() -> usize {
        SPARE.with(|spare| spare.borrow().len)
    }

    /// A response future dropped before its response, and a body dropped before its end,
    /// each record their request once (`cancelled`) and give their box back.
    #[tokio::test]
    async fn dropped_future_and_body_record_and_give_back() {
        use crate::record::Outcome;
        use std::convert::Infallible;
        use std::future::Future as _;
        type Answer = Result<http::Response<http_body_util::Full<bytes::Bytes>>, Infallible>;

        let monitor = crate::Monitor::builder().build().unwrap();
        let state = ServiceState::new(Recorder::new(monitor.clone()));
        let request = http::Request::get("/x").body(()).unwrap();
        let start = || super::super::context::RequestContext::start_plain(&state, &request);
        let before = spare_count();
        let pending = std::future::pending::<Answer>();
        drop(super::super::ResponseFuture::new(pending, start()));
        assert_eq!(monitor.recorded(Outcome::Cancelled), 1);
        assert_eq!(spare_count(), before + 1, "the future's box is given back");

        let body = http_body_util::Full::new(bytes::Bytes::from_static(b"data"));
        let ready = std::future::ready::<Answer>(Ok(http::Response::new(body)));
        let mut future = Box::pin(super::super::ResponseFuture::new(ready, start()));
        let waker = std::task::Waker::noop();
        let std::task::Poll::Ready(Ok(response)) = future
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
        else {
            panic!("the response is ready");
        };
        drop(future);
        assert_eq!(
            monitor.recorded(Outcome::Cancelled),
            1,
            "the body holds it now"
        );
        drop(response);
        assert_eq!(monitor.recorded(Outcome::Cancelled), 2);
        assert_eq!(spare_count(), before + 1, "the body's box is given back");
    }

    /// Boxes given back are reused, and a thread keeps no more than its cap.
    #[test]
    fn spare_boxes_are_reused_and_bounded() {
        let monitor = crate::Monitor::builder().build().unwrap();
        let state = ServiceState::new(Recorder::new(monitor));
        let request = http::Request::get("/x").body(()).unwrap();
        let start = || super::super::context::RequestContext::start_plain(&state, &request);
        let count = SPARE_BOXES + spare_count() + 8;
        let boxes: Vec<TrackedBox> = (0..count).map(|_| start()).collect();
        assert_eq!(spare_count(), 0, "spares are taken before allocating");
        let mut last_kept = None;
        for (i, mut tracked) in boxes.into_iter().enumerate() {
            // Its in-flight count is left as it is: the monitor is the test's own.
            if let Some(t) = tracked.get_mut() {
                t.context.take();
            }
            if i == SPARE_BOXES - 1 {
                last_kept = Some(&*tracked.0 as *const Option<Tracked>);
            }
            tracked.give_back();
        }
        assert_eq!(spare_count(), SPARE_BOXES, "no more than the cap are kept");
        let reused = start();
        assert!(reused.get().is_some());
        assert_eq!(Some(&*reused.0 as *const Option<Tracked>), last_kept);
        assert_eq!(spare_count(), SPARE_BOXES - 1);
        reused.give_back();
        assert_eq!(spare_count(), SPARE_BOXES);
    }
}
