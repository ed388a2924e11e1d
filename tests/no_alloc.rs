//! Polling a data frame through the monitored body allocates nothing: checked with a counting
//! global allocator, for a parsed SSE body and for a plain body.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::StreamBody;
use tower::{Service, ServiceExt};
use tower_stream_monitor::Monitor;

struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|a| a.set(a.get() + 1));
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|a| a.set(a.get() + 1));
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

type Frames = futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>;

fn respond(content_type: &'static str, frames: Vec<Bytes>) -> Response<StreamBody<Frames>> {
    let frames: Vec<Result<Frame<Bytes>, Infallible>> =
        frames.into_iter().map(|b| Ok(Frame::data(b))).collect();
    let mut response = Response::new(StreamBody::new(futures_util::stream::iter(frames)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

/// Polls `warm_up` frames, then counts allocations while polling `measured` more.
fn allocations_per_frames(
    content_type: &'static str,
    frames: Vec<Bytes>,
    warm_up: usize,
    measured: usize,
) -> u64 {
    let monitor = Monitor::builder().build().unwrap();
    let mut service = monitor
        .layer()
        .layer(tower::service_fn(move |_req: Request<()>| {
            let frames = frames.clone();
            async move { Ok::<_, Infallible>(respond(content_type, frames)) }
        }));
    let mut cx = Context::from_waker(Waker::noop());
    let ready = Pin::new(&mut service.ready()).poll(&mut cx);
    assert!(matches!(ready, Poll::Ready(Ok(_))));
    let mut future = Box::pin(service.call(Request::new(())));
    let Poll::Ready(Ok(response)) = future.as_mut().poll(&mut cx) else {
        panic!("service_fn is ready at once")
    };
    drop(future);
    let mut body = response.into_body();
    let mut poll_one = |body: &mut tower_stream_monitor::stream::MonitoredBody<
        StreamBody<Frames>,
    >| match Pin::new(body).poll_frame(&mut cx) {
        Poll::Ready(Some(Ok(frame))) => frame,
        other => panic!(
            "expected a frame, got {:?}",
            other.map(|o| o.map(|r| r.is_ok()))
        ),
    };
    for _ in 0..warm_up {
        drop(poll_one(&mut body));
    }
    let mut kept = Vec::with_capacity(measured);
    let debug = std::env::var("DEBUG_ALLOC").is_ok();
    COUNTING.with(|c| c.set(true));
    for i in 0..measured {
        // Frames are kept, not dropped, so only allocation by the poll itself is seen.
        let before = ALLOCATIONS.with(Cell::get);
        kept.push(poll_one(&mut body));
        if debug && ALLOCATIONS.with(Cell::get) != before {
            COUNTING.with(|c| c.set(false));
            eprintln!(
                "frame {} allocated: {:?}",
                warm_up + i,
                kept.last().and_then(|f| f.data_ref())
            );
            COUNTING.with(|c| c.set(true));
        }
    }
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(|a| a.replace(0))
}

use std::future::Future;
use tower::Layer;

#[test]
fn sse_frames_allocate_nothing() {
    let fixture = common::fixture("openai-chat.sse");
    let events = common::split_events(&fixture);
    // 10 copies of the stream's events (usage chunk and [DONE] only at the end do not matter:
    // every event goes through the same parser path).
    let frames: Vec<Bytes> = (0..10).flat_map(|_| events.iter().cloned()).collect();
    let n = frames.len();
    assert_eq!(
        allocations_per_frames("text/event-stream", frames, 5, n - 10),
        0
    );
}

#[test]
fn sse_frames_split_mid_event_allocate_nothing() {
    let fixture = common::fixture("anthropic-messages.sse").repeat(4);
    let whole = Bytes::from(fixture);
    let frames: Vec<Bytes> = (0..whole.len())
        .step_by(37)
        .map(|i| whole.slice(i..(i + 37).min(whole.len())))
        .collect();
    let n = frames.len();
    assert_eq!(
        allocations_per_frames("text/event-stream", frames, 20, n - 30),
        0
    );
}

#[test]
fn plain_frames_allocate_nothing() {
    let frames = vec![Bytes::from_static(b"0123456789abcdef"); 1000];
    assert_eq!(
        allocations_per_frames("application/octet-stream", frames, 1, 900),
        0
    );
}

/// OpenAI Responses streams. One event per stream, `response.completed`, carries the whole
/// response (output text included) nested several levels deep; serde_json allocates a small
/// scratch stack to skip it. Every other frame, every delta among them, allocates nothing.
#[test]
fn responses_frames_allocate_nothing_but_one_scratch_per_completion() {
    let fixture = common::fixture("openai-responses.sse");
    let events = common::split_events(&fixture);
    let (completed, others): (Vec<Bytes>, Vec<Bytes>) = events
        .iter()
        .cloned()
        .partition(|e| e.starts_with(b"event: response.completed"));
    assert_eq!(completed.len(), 1);
    let frames: Vec<Bytes> = (0..10).flat_map(|_| others.iter().cloned()).collect();
    let n = frames.len();
    assert_eq!(
        allocations_per_frames("text/event-stream", frames, 1, n - 2),
        0
    );

    let frames: Vec<Bytes> = (0..10).flat_map(|_| events.iter().cloned()).collect();
    let n = frames.len();
    let allocations = allocations_per_frames("text/event-stream", frames, 1, n - 2);
    assert!(
        allocations <= 10,
        "{allocations} allocations for 10 completions"
    );
}

/// Allocations while a fixture's frames pass ten times over, past its first and last frame.
fn fixture_repeated_allocations(name: &str) -> u64 {
    let fixture = common::fixture(name);
    let events = common::split_events(&fixture);
    let frames: Vec<Bytes> = (0..10).flat_map(|_| events.iter().cloned()).collect();
    let n = frames.len();
    allocations_per_frames("text/event-stream", frames, 1, n - 2)
}

#[test]
fn gemini_crlf_frames_allocate_nothing() {
    assert_eq!(fixture_repeated_allocations("gemini.sse"), 0);
}

/// Anthropic's usage with its cache writes broken down by lifetime (`cache_creation`) is read
/// without allocating.
#[test]
fn anthropic_cache_usage_allocates_nothing() {
    assert_eq!(fixture_repeated_allocations("anthropic-cache-1h.sse"), 0);
}

/// Cohere's events nest their text and usage three objects deep: read in place, no scratch.
#[test]
fn cohere_frames_allocate_nothing() {
    assert_eq!(fixture_repeated_allocations("cohere-chat.sse"), 0);
}

/// Text with JSON escapes (newlines, quotes, unicode) is tested for emptiness, never unescaped.
#[test]
fn escaped_text_allocates_nothing() {
    let mut frames = Vec::new();
    for i in 0..200 {
        frames.push(Bytes::from(format!(
            "data: {{\"choices\":[{{\"delta\":{{\"content\":\"line {i}\\n\\\"quoted\\\" \\u00e9\"}}}}]}}\n\n"
        )));
        frames.push(Bytes::from(format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"a\\nb{i}\"}}}}\n\n"
        )));
        frames.push(Bytes::from(format!(
            "event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"delta\":\"x\\ty{i}\"}}\n\n"
        )));
    }
    let n = frames.len();
    assert_eq!(
        allocations_per_frames("text/event-stream", frames, 3, n - 3),
        0
    );
}
