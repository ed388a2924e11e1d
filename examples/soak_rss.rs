//! Memory soak: one million requests through the stream layer (no network: the service is
//! called directly and its SSE bodies polled to the end), with fixed labels and a clock that
//! moves 4 ms per request, so both windows turn over fully. Prints RSS as it goes; the
//! target (README, Performance) is <= 1 MB of growth over 1M requests.
//!
//! ```text
//! cargo run --release --example soak_rss [-- REQUESTS]
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use tower::{Layer, Service};
use tower_stream_monitor::Monitor;
use tower_stream_monitor::window::ManualClock;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

const STREAM: &[u8] =
    b"data: {\"model\":\"gpt-4o-mini\",\"choices\":[{\"delta\":{\"content\":\"Hello\"}}]}\n\n\
data: {\"choices\":[{\"delta\":{\"content\":\" world\"}}]}\n\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";

/// One request through the layer, its body polled to the end.
fn request<S>(service: &mut S, clock: &ManualClock)
where
    S: Service<
            Request<()>,
            Response = Response<tower_stream_monitor::stream::MonitoredBody<Full<Bytes>>>,
            Error = Infallible,
        >,
{
    let mut cx = Context::from_waker(Waker::noop());
    let request = Request::builder()
        .uri("/v1/chat/completions")
        .header("x-llm-provider", "openai")
        .body(())
        .expect("valid request");
    let mut future = std::pin::pin!(service.call(request));
    let Poll::Ready(Ok(response)) = future.as_mut().poll(&mut cx) else {
        panic!("the service answers at once");
    };
    let mut body = response.into_body();
    while let Poll::Ready(Some(frame)) = Pin::new(&mut body).poll_frame(&mut cx) {
        frame.expect("no body error");
    }
    clock.advance(Duration::from_millis(1));
}

// The measured requests advance the clock 4 ms each in all (1 + 3 below): 1M requests span
// 67 minutes, a full turn of both windows.

fn main() {
    let requests: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let monitor = Monitor::builder()
        .clock(clock.clone())
        .route_patterns(["/v1/chat/completions"])
        .build()
        .expect("valid settings");
    let mut service = monitor
        .layer()
        .layer(tower::service_fn(|_: Request<()>| async {
            let mut response = Response::new(Full::new(Bytes::from_static(STREAM)));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/event-stream"),
            );
            Ok::<_, Infallible>(response)
        }));
    let one = |service: &mut _| request(service, &clock);
    // Warm-up: 200k requests over 67 minutes of clock, so every slot of both windows has
    // been filled once (sketch bins grow to the spread of the values they see, then stay).
    for _ in 0..200_000 {
        one(&mut service);
        clock.advance(Duration::from_millis(19));
    }
    let _ = monitor.snapshot();
    let _ = monitor.render_prometheus();
    let baseline = rss_kib();
    println!("after warm-up (200k requests over 67 min of clock): RSS {baseline} KiB");
    let step = (requests / 10).max(1);
    let start = std::time::Instant::now();
    for i in 1..=requests {
        one(&mut service);
        clock.advance(Duration::from_millis(3));
        if i % step == 0 {
            let _ = monitor.snapshot();
            let _ = monitor.render_prometheus();
            let rss = rss_kib();
            println!(
                "{i:>8} requests: RSS {rss} KiB ({:+} KiB), {:.2} µs/request",
                rss as i64 - baseline as i64,
                start.elapsed().as_secs_f64() * 1e6 / i as f64
            );
        }
    }
    let snapshot = monitor.snapshot();
    println!(
        "recorded ok: {} (incl. warm-up), 1-hour window: {} streams, {} tokens",
        monitor.recorded(tower_stream_monitor::Outcome::Ok),
        snapshot.streaming_1hour.total_streaming_requests,
        snapshot.streaming_1hour.total_tokens
    );
}
