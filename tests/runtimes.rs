//! The stream timeout where tokio has no timer to give: a runtime built without one, and a
//! body polled on in another runtime after the one that armed its deadline shut down. tokio
//! panics in both; the layer does not: the stream goes on, is recorded once, and a WARN event
//! (collected by the monitor's error layer) says why its timeout was not kept.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tower::{Layer, ServiceExt};
use tower_stream_monitor::errors::ErrorQuery;
use tower_stream_monitor::{Monitor, Outcome, StreamRecord};
use tracing_subscriber::layer::SubscriberExt;

const EVENT: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";

#[derive(Clone, Default)]
struct Records(Arc<Mutex<Vec<StreamRecord>>>);

impl Records {
    fn monitor(&self) -> Monitor {
        let sink = self.clone();
        Monitor::builder()
            .stream_timeout(Duration::from_secs(60))
            .on_record(move |r: &StreamRecord| sink.0.lock().unwrap().push(r.clone()))
            .build()
            .unwrap()
    }
    fn outcomes(&self) -> Vec<Outcome> {
        self.0.lock().unwrap().iter().map(|r| r.outcome).collect()
    }
}

/// These tests run one at a time. Tracing keeps each callsite's interest from when it is
/// first seen: the test outside any runtime logs the same WARN with no subscriber set while
/// another sets one, and can leave that callsite off for the other, whose WARN then never
/// reaches its error layer.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    // A test that failed holding it leaves nothing to repair.
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A stream of `events` events, each after the body waited once (as an upstream's are), then
/// waiting for ever if `then_hang`. Its handler waits once too, so the response future arms
/// the deadline before the response starts.
async fn stream(
    events: usize,
    then_hang: bool,
) -> Result<
    Response<StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>>>>,
    Infallible,
> {
    tokio::task::yield_now().await;
    let frames = futures_util::stream::unfold(0, move |i| async move {
        tokio::task::yield_now().await;
        if i == events {
            if then_hang {
                std::future::pending::<()>().await;
            }
            return None;
        }
        Some((Ok(Frame::data(Bytes::from_static(EVENT))), i + 1))
    });
    let mut response = Response::new(StreamBody::new(frames));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    Ok(response)
}

/// A runtime built without `enable_time`: the stream is served whole, recorded once as `ok`,
/// and the monitor's error records say the timeout was not enforced.
#[test]
fn a_runtime_without_a_timer_serves_the_stream_and_says_so() {
    let _one = one_at_a_time();
    let records = Records::default();
    let monitor = records.monitor();
    let subscriber = tracing_subscriber::registry().with(monitor.error_layer());
    let _default = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let body = runtime.block_on(async {
        let service = monitor
            .layer()
            .layer(tower::service_fn(|_: Request<()>| stream(3, false)));
        let response = service.oneshot(Request::new(())).await.unwrap();
        response.into_body().collect().await.unwrap().to_bytes()
    });
    assert_eq!(body.len(), 3 * EVENT.len());
    assert_eq!(records.outcomes(), vec![Outcome::Ok]);
    assert_eq!(monitor.in_flight(), 0);
    let warned = monitor
        .errors(&ErrorQuery::default())
        .errors
        .iter()
        .filter(|e| e.message.contains("stream timeout not enforced"))
        .count();
    assert_eq!(warned, 1, "said once, however often the timer was asked");
}

/// A body whose deadline was armed in a runtime that has since shut down, polled on in
/// another: its deadline is kept with the new runtime's timer, and the stream that then
/// hangs is cut at it (its last event the timeout's), recorded once as `timeout`.
#[test]
fn a_body_moved_to_another_runtime_keeps_its_deadline() {
    let _one = one_at_a_time();
    let records = Records::default();
    let monitor = records.monitor();
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut body = first.block_on(async {
        let service = monitor
            .layer()
            .layer(tower::service_fn(|_: Request<()>| stream(1, true)));
        let response = service.oneshot(Request::new(())).await.unwrap();
        let mut body = Box::pin(response.into_body());
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), EVENT);
        body
    });
    drop(first);
    // Paused: the runtime's clock moves to its next timer when it has nothing else to do.
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let rest = second.block_on(async { body.as_mut().collect().await });
    // An SSE stream cut at its deadline ends with an error event its client can read.
    let rest = rest.expect("the stream ends").to_bytes();
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.starts_with("event: error\n") && rest.contains("\"type\":\"timeout\""),
        "the stream is cut at its deadline: {rest}"
    );
    drop(body);
    assert_eq!(records.outcomes(), vec![Outcome::Timeout]);
    assert_eq!(monitor.in_flight(), 0);
}

/// Outside any runtime (the layer's future and body polled by hand, as another executor
/// would): the handler that waits once and the body that waits before its frame are served
/// whole, without the timeout, and recorded once as `ok`; the same thread's next runtime
/// keeps the timeout.
#[test]
fn outside_any_runtime_the_stream_is_served_without_its_timeout() {
    let _one = one_at_a_time();
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let records = Records::default();
    let monitor = records.monitor();
    let mut service = monitor.layer().layer(tower::service_fn(|_: Request<()>| {
        let mut waited = false;
        std::future::poll_fn(move |cx| {
            // Pending once, as a handler waiting on its upstream is.
            if !std::mem::replace(&mut waited, true) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let mut waits = 0;
            let frames = futures_util::stream::poll_fn(move |cx| {
                waits += 1;
                match waits {
                    1 | 3 => {
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                    2 => Poll::Ready(Some(Ok::<_, Infallible>(Frame::data(Bytes::from_static(
                        EVENT,
                    ))))),
                    _ => Poll::Ready(None),
                }
            });
            let mut response = Response::new(StreamBody::new(frames));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/event-stream"),
            );
            Poll::Ready(Ok::<_, Infallible>(response))
        })
    }));
    let mut cx = Context::from_waker(Waker::noop());
    let mut future = Box::pin(tower::Service::call(&mut service, Request::new(())));
    let response = loop {
        if let Poll::Ready(response) = future.as_mut().poll(&mut cx) {
            break response.unwrap();
        }
    };
    let mut body = Box::pin(response.into_body());
    let mut got = Vec::new();
    loop {
        match http_body::Body::poll_frame(body.as_mut(), &mut cx) {
            Poll::Ready(Some(frame)) => got.extend_from_slice(&frame.unwrap().into_data().unwrap()),
            Poll::Ready(None) => break,
            Poll::Pending => {}
        }
    }
    assert_eq!(got, EVENT);
    drop((future, body));
    assert_eq!(records.outcomes(), vec![Outcome::Ok]);
    // The same thread in a runtime with a timer: the timeout holds again (nothing was kept of
    // the runtime that was not there).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let service = monitor
        .layer()
        .layer(tower::service_fn(|_: Request<()>| stream(1, true)));
    let served = async {
        let response = service.oneshot(Request::new(())).await.unwrap();
        let _ = response.into_body().collect().await;
    };
    // Bounded past the 60 s deadline, so that a timeout not kept fails rather than hangs.
    let _ =
        runtime.block_on(async { tokio::time::timeout(Duration::from_secs(120), served).await });
    assert_eq!(records.outcomes(), vec![Outcome::Ok, Outcome::Timeout]);
    assert_eq!(monitor.in_flight(), 0);
}
