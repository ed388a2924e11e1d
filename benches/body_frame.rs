//! Per-frame overhead of the monitored body over the bare body, side by side in one run.
//! Target (README, Performance): <= 25 ns per frame for a body that is not parsed.

use std::convert::Infallible;
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::StreamBody;
use tower::{Layer, Service};
use tower_stream_monitor::Monitor;

const FRAMES: usize = 1000;

type Frames = futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>;

fn bare(frames: &[Bytes]) -> StreamBody<Frames> {
    let frames: Vec<_> = frames.iter().cloned().map(|b| Ok(Frame::data(b))).collect();
    StreamBody::new(futures_util::stream::iter(frames))
}

fn monitored(
    monitor: &Monitor,
    content_type: &'static str,
    frames: &[Bytes],
) -> tower_stream_monitor::stream::MonitoredBody<StreamBody<Frames>> {
    let mut slot = Some(bare(frames));
    let mut service = monitor
        .layer()
        .layer(tower::service_fn(move |_: Request<()>| {
            let mut response = Response::new(slot.take().expect("called once"));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(content_type),
            );
            std::future::ready(Ok::<_, Infallible>(response))
        }));
    let mut cx = Context::from_waker(Waker::noop());
    let mut future = Box::pin(service.call(Request::new(())));
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(response)) => response.into_body(),
        _ => panic!("service_fn is ready at once"),
    }
}

/// Polls `n` frames and returns the body (so it is dropped outside the timing).
fn poll_frames<B: Body + Unpin>(mut body: B, n: usize) -> B {
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..n {
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => {
                black_box(frame);
            }
            _ => panic!("expected a frame"),
        }
    }
    body
}

use std::future::Future;

fn bench_frames(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _runtime = rt.enter();
    // As the README installs it: with a 60 s stream timeout.
    let monitor = Monitor::builder()
        .stream_timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap();
    let idle_monitor = Monitor::builder()
        .idle_timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap();

    let plain: Vec<Bytes> = vec![Bytes::from_static(&[b'x'; 1024]); FRAMES];
    let fixture = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/openai-chat.sse"
    ))
    .unwrap();
    let events: Vec<Bytes> = fixture
        .split_inclusive(|b| *b == b'\n')
        .filter(|l| l.starts_with(b"data: {"))
        .map(|l| {
            let mut e = l.to_vec();
            e.push(b'\n');
            Bytes::from(e)
        })
        .collect();
    let sse: Vec<Bytes> = events.iter().cycle().take(FRAMES).cloned().collect();

    let mut group = c.benchmark_group("body_frame");
    group.throughput(Throughput::Elements(FRAMES as u64));
    group.bench_function("plain/bare", |b| {
        b.iter_batched(
            || bare(&plain),
            |body| poll_frames(body, FRAMES),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("plain/monitored", |b| {
        b.iter_batched(
            || monitored(&monitor, "application/octet-stream", &plain),
            |body| poll_frames(body, FRAMES),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("plain/monitored_idle_timeout", |b| {
        b.iter_batched(
            || monitored(&idle_monitor, "application/octet-stream", &plain),
            |body| poll_frames(body, FRAMES),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("sse_openai/bare", |b| {
        b.iter_batched(
            || bare(&sse),
            |body| poll_frames(body, FRAMES),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("sse_openai/monitored", |b| {
        b.iter_batched(
            || monitored(&monitor, "text/event-stream", &sse),
            |body| poll_frames(body, FRAMES),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_frames);
criterion_main!(benches);
