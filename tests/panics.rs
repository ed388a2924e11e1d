//! Panics in the inner body's own methods (`is_end_stream`, `size_hint`), in a body behind an
//! error status and in the `request_labels` closure: each request is recorded once, as
//! `server_error`, and leaves the in-flight gauges.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service};
use tower_stream_monitor::{Monitor, MonitorBuilder, Outcome, StreamRecord};
#[derive(Clone, Default)]
struct Records(Arc<Mutex<Vec<StreamRecord>>>);

impl Records {
    fn build(&self, builder: MonitorBuilder) -> Monitor {
        let sink = self.clone();
        builder
            .on_record(move |r: &StreamRecord| sink.0.lock().unwrap().push(r.clone()))
            .build()
            .unwrap()
    }
    fn outcomes(&self) -> Vec<Outcome> {
        self.0.lock().unwrap().iter().map(|r| r.outcome).collect()
    }
}

/// These tests run one at a time. Tracing keeps each callsite's interest from when it is
/// first seen: a test that logs with no subscriber while another sets one (the tests of
/// logging below) can leave the callsite off for that one, and its panic never comes.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    // A test that failed holding it leaves nothing to repair.
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn cx() -> Context<'static> {
    Context::from_waker(Waker::noop())
}

/// An SSE body: `frames` data frames ready, then pending forever. `is_end_stream` panics from
/// its `end_panics_at`-th call on and `size_hint` from its `hint_panics_at`-th (counting from
/// 1; `None`: never).
struct Quirky {
    frames: usize,
    end_panics_at: Option<usize>,
    hint_panics_at: Option<usize>,
    ends: AtomicUsize,
    hints: AtomicUsize,
}

impl Quirky {
    fn new(frames: usize, end_panics_at: Option<usize>, hint_panics_at: Option<usize>) -> Self {
        Self {
            frames,
            end_panics_at,
            hint_panics_at,
            ends: AtomicUsize::new(0),
            hints: AtomicUsize::new(0),
        }
    }
}

/// Counts a call, and says whether it is one that panics.
fn nth_panics(calls: &AtomicUsize, panics_at: Option<usize>) -> bool {
    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
    panics_at.is_some_and(|at| n >= at)
}

impl Body for Quirky {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.frames == 0 {
            return Poll::Pending;
        }
        self.frames -= 1;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
        )))))
    }

    fn is_end_stream(&self) -> bool {
        if nth_panics(&self.ends, self.end_panics_at) {
            panic!("bug in the body's is_end_stream");
        }
        false
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = SizeHint::new();
        if nth_panics(&self.hints, self.hint_panics_at) {
            // As a hint built with `set_upper` below its lower bound does.
            hint.set_lower(10);
            hint.set_upper(5);
        }
        hint
    }
}

const SSE: &str = "text/event-stream";

/// The monitor's layer around a service that answers `content_type` with `body()`.
fn typed_service<B>(
    monitor: &Monitor,
    content_type: &'static str,
    body: impl Fn() -> B + Send + Clone + 'static,
) -> impl Service<
    Request<()>,
    Response = Response<tower_stream_monitor::stream::MonitoredBody<B>>,
    Error = Infallible,
    Future = impl Future<
        Output = Result<Response<tower_stream_monitor::stream::MonitoredBody<B>>, Infallible>,
    >,
>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    monitor
        .layer()
        .layer(tower::service_fn(move |_: Request<()>| {
            let mut response = Response::new(body());
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            std::future::ready(Ok::<_, Infallible>(response))
        }))
}

/// A panic in the inner body's `is_end_stream` when the response arrives (the layer asks it
/// there): the request is recorded once, as a panic (`server_error`), and leaves the in-flight
/// gauge.
#[test]
fn panic_in_is_end_stream_at_the_response_is_recorded() {
    let _one = one_at_a_time();
    let records = Records::default();
    let monitor = records.build(Monitor::builder());
    let mut service = typed_service(&monitor, SSE, || Quirky::new(1, Some(1), None));
    let mut future = Box::pin(service.call(Request::new(())));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = future.as_mut().poll(&mut cx());
    }));
    assert!(caught.is_err(), "the body's panic unwinds");
    drop(future);
    assert_eq!(
        (records.outcomes(), monitor.in_flight()),
        (vec![Outcome::ServerError], 0),
        "recorded once as a panic, and in flight back to 0"
    );
}

/// A panic in the inner body's `is_end_stream` right after a data frame: a panic of the body
/// is `server_error` (README, Outcomes), not the client's `cancelled`.
#[test]
fn panic_in_is_end_stream_after_a_frame_is_a_server_error() {
    let _one = one_at_a_time();
    let records = Records::default();
    let monitor = records.build(Monitor::builder());
    let mut service = typed_service(&monitor, SSE, || Quirky::new(3, Some(2), None));
    let mut future = Box::pin(service.call(Request::new(())));
    let Poll::Ready(Ok(response)) = future.as_mut().poll(&mut cx()) else {
        panic!("ready");
    };
    drop(future);
    let mut body = Box::pin(response.into_body());
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = body.as_mut().poll_frame(&mut cx());
    }));
    assert!(caught.is_err(), "the body's panic unwinds");
    // hyper drops the body of a task that panicked.
    drop(body);
    assert_eq!(records.outcomes(), vec![Outcome::ServerError]);
    assert_eq!(monitor.in_flight(), 0);
}

/// A panic in the `request_labels` closure (the app's own code, called by the layer's `call`):
fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Polls `f` once on the current task, whatever it returns.
async fn poll_once<T>(mut f: impl FnMut(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
    std::future::poll_fn(|cx| Poll::Ready(f(cx))).await
}

/// The layer's own deadline cuts an SSE stream, and the body's `size_hint` (asked then, to know
/// whether an error event may be added) panics: the request is recorded once and leaves the
/// in-flight gauge.
#[tokio::test(start_paused = true)]
// The test's own runtime, one thread: no other task of it takes the lock.
#[allow(clippy::await_holding_lock)]
async fn panic_in_size_hint_at_the_sse_timeout_is_recorded() {
    let _one = one_at_a_time();
    let records = Records::default();
    let monitor = records.build(Monitor::builder().stream_timeout(ms(1000)));
    let mut service = typed_service(&monitor, SSE, || Quirky::new(1, None, Some(2)));
    let response = service.call(Request::new(())).await.unwrap();
    let mut body = Box::pin(response.into_body());
    assert!(matches!(
        poll_once(|cx| body.as_mut().poll_frame(cx)).await,
        Poll::Ready(Some(Ok(_)))
    ));
    assert!(
        poll_once(|cx| body.as_mut().poll_frame(cx))
            .await
            .is_pending()
    );
    tokio::time::sleep(ms(1500)).await;
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut cx = cx();
        let _ = body.as_mut().poll_frame(&mut cx);
    }));
    assert!(caught.is_err(), "the body's size_hint panics");
    drop(body);
    assert_eq!(
        (records.outcomes(), monitor.in_flight()),
        (vec![Outcome::ServerError], 0),
        "recorded once, in flight back to 0"
    );
}

/// A body whose every poll panics with its message.
struct Panics(&'static str);

impl Body for Panics {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        panic!("{}", self.0)
    }
}

/// Calls `service`, takes its response (ready at once) and reads the body until it ends,
/// catching the panic that comes of it: returns its message.
fn panic_of_the_body<S, B>(mut service: S) -> String
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible>,
    B: Body,
{
    let mut future = Box::pin(service.call(Request::new(())));
    let Poll::Ready(Ok(response)) = future.as_mut().poll(&mut cx()) else {
        panic!("ready")
    };
    drop(future);
    let mut body = Box::pin(response.into_body());
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        while let Poll::Ready(Some(_)) = body.as_mut().poll_frame(&mut cx()) {}
    }));
    message_of(caught.expect_err("the panic reaches the caller"))
}

/// A caught panic's message.
fn message_of(panic: Box<dyn std::any::Any + Send>) -> String {
    match panic.downcast_ref::<&str>() {
        Some(message) => message.to_string(),
        None => panic.downcast_ref::<String>().cloned().unwrap_or_default(),
    }
}

/// A handler's body panics after a 404 (an "unknown model" answer streamed): README, Outcomes
/// has a panic as `server_error`, and `client_error` never counts in the error rate.
#[test]
fn panic_in_the_body_of_a_4xx_is_a_server_error() {
    let _one = one_at_a_time();
    let records = Records::default();
    let monitor = records.build(Monitor::builder());
    let service = monitor.layer().layer(tower::service_fn(|_: Request<()>| {
        let mut response = Response::new(Panics("bug while writing the error body"));
        *response.status_mut() = http::StatusCode::NOT_FOUND;
        std::future::ready(Ok::<_, Infallible>(response))
    }));
    assert_eq!(
        panic_of_the_body(service),
        "bug while writing the error body"
    );
    assert_eq!(records.outcomes(), vec![Outcome::ServerError]);
    assert_eq!(monitor.in_flight(), 0);
}

/// A panic in the `request_labels` closure (the app's own code, which the layer's `call` runs
/// before the request's context exists): the request is recorded once, as `server_error`, and
/// the panic goes on to the caller.
#[test]
fn panic_in_request_labels_is_recorded() {
    let _one = one_at_a_time();
    let records = Records::default();
    let monitor = records.build(Monitor::builder().request_labels(
        |_: &http::request::Parts| -> tower_stream_monitor::StreamLabels {
            panic!("bug in the labeler")
        },
    ));
    let mut service = typed_service(&monitor, SSE, || Quirky::new(1, None, None));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drop(service.call(Request::new(())));
    }));
    assert!(caught.is_err(), "the closure's panic reaches the caller");
    assert_eq!(records.outcomes(), vec![Outcome::ServerError]);
    assert_eq!(monitor.in_flight(), 0);
}

/// Records kept by an `on_record` callback that then panics, as a buggy callback does.
fn panicking_callback(records: &Records) -> Monitor {
    let sink = records.clone();
    Monitor::builder()
        .on_record(move |r: &StreamRecord| {
            sink.0.lock().unwrap().push(r.clone());
            panic!("bug in on_record")
        })
        .build()
        .unwrap()
}

/// A panicking `on_record` while the body's own panic unwinds (the request is recorded as
/// `server_error` then): the callback's panic is contained, the process goes on (a second
/// panic escaping a drop during unwinding aborts it) and the body's panic reaches the caller.
#[test]
fn panic_in_on_record_while_a_panic_unwinds_does_not_abort() {
    let _one = one_at_a_time();
    let records = Records::default();
    let monitor = panicking_callback(&records);
    let service = typed_service(&monitor, SSE, || Panics("bug while writing the body"));
    assert_eq!(panic_of_the_body(service), "bug while writing the body");
    assert_eq!(records.outcomes(), vec![Outcome::ServerError]);
    assert_eq!(monitor.in_flight(), 0);
}

/// A panicking `on_record` at a stream's normal end: the panic reaches the caller, and the
/// stream stays recorded once (dropping the body after it records nothing more).
#[test]
fn panic_in_on_record_at_the_end_records_once() {
    let _one = one_at_a_time();
    let records = Records::default();
    let monitor = panicking_callback(&records);
    let service = typed_service(&monitor, SSE, || {
        http_body_util::Full::new(Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n",
        ))
    });
    assert_eq!(panic_of_the_body(service), "bug in on_record");
    assert_eq!(records.outcomes(), vec![Outcome::Ok]);
    assert_eq!(monitor.in_flight(), 0);
}

/// An error whose `Display` panics (an app's bug), as the session log formats it.
#[derive(Debug)]
struct LoudError;

impl std::fmt::Display for LoudError {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        panic!("bug in the error's Display")
    }
}

impl std::error::Error for LoudError {}

/// A body that fails at once with a [`LoudError`].
struct FailsLoudly;

impl Body for FailsLoudly {
    type Data = Bytes;
    type Error = LoudError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, LoudError>>> {
        Poll::Ready(Some(Err(LoudError)))
    }
}

/// A panic while the end of a request is logged (the app's error formatted for its failure's
/// line, by the error layer): the request is handed over first, so it stays recorded once and
/// leaves the in-flight gauges; the panic reaches the caller.
#[test]
fn panic_while_logging_the_end_loses_no_record() {
    let _one = one_at_a_time();
    use tracing_subscriber::layer::SubscriberExt as _;
    let records = Records::default();
    let monitor = records.build(Monitor::builder());
    let _subscriber = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(monitor.error_layer()),
    );
    let service = typed_service(&monitor, SSE, || FailsLoudly);
    assert_eq!(panic_of_the_body(service), "bug in the error's Display");
    assert_eq!(records.outcomes(), vec![Outcome::StreamError]);
    assert_eq!(monitor.in_flight(), 0);
}

/// An error whose `Debug` panics, as `Debug` impls that unwrap the formatter's error do when
/// the writer stops early.
struct LoudDebug;

impl std::fmt::Debug for LoudDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoudDebug { detail: ").expect("writes");
        f.write_str("x }")
    }
}

impl std::fmt::Display for LoudDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upstream connection reset")
    }
}

impl std::error::Error for LoudDebug {}

/// A service error whose chain's `Debug` panics when the layer looks in it for a timeout: the
/// request is recorded once, as the service error it is (`server_error`), with no panic.
#[test]
fn a_service_error_whose_debug_panics_is_recorded() {
    let _one = one_at_a_time();
    let records = Records::default();
    let monitor = records.build(Monitor::builder());
    let mut service = monitor.layer().layer(tower::service_fn(|_: Request<()>| {
        let error: tower::BoxError = Box::new(LoudDebug);
        std::future::ready(Err::<Response<http_body_util::Empty<Bytes>>, _>(error))
    }));
    let mut future = Box::pin(service.call(Request::new(())));
    let Poll::Ready(Err(error)) = future.as_mut().poll(&mut cx()) else {
        panic!("the service's error")
    };
    assert_eq!(error.to_string(), "upstream connection reset");
    assert_eq!(records.outcomes(), vec![Outcome::ServerError]);
    assert_eq!(monitor.in_flight(), 0);
}

/// A subscriber layer that panics when a request's span is given the field it names (`model`
/// as the request ends, `provider` as its response starts): a bug of the app's, or of a layer
/// it installed.
struct PanicsOnField(&'static str);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PanicsOnField {
    fn on_record(
        &self,
        _: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct Field(&'static str);
        impl tracing::field::Visit for Field {
            fn record_debug(&mut self, field: &tracing::field::Field, _: &dyn std::fmt::Debug) {
                if field.name() == self.0 {
                    panic!("bug in a layer's on_record");
                }
            }
        }
        values.record(&mut Field(self.0));
    }
}

/// A layer's panic as the request's span is given its last fields: the request is handed over
/// first, recorded once, and leaves the in-flight gauges; the panic reaches the caller.
#[test]
fn panic_in_a_layer_as_the_span_ends_loses_no_record() {
    let _one = one_at_a_time();
    use tracing_subscriber::layer::SubscriberExt as _;
    let records = Records::default();
    let monitor = records.build(Monitor::builder());
    let _subscriber = tracing::subscriber::set_default(
        tracing_subscriber::registry()
            .with(PanicsOnField("model"))
            .with(monitor.error_layer()),
    );
    let service = typed_service(&monitor, SSE, || {
        http_body_util::Full::new(Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n",
        ))
    });
    assert_eq!(panic_of_the_body(service), "bug in a layer's on_record");
    assert_eq!(records.outcomes(), vec![Outcome::Ok]);
    assert_eq!(monitor.in_flight(), 0);
}

/// A subscriber layer that panics on every WARN event (a bug of the app's, or of a layer it
/// installed).
struct PanicsOnWarn;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PanicsOnWarn {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() == tracing::Level::WARN {
            panic!("bug in a layer's on_event");
        }
    }
}

/// A first token that the parser finds only as the body ends (an NDJSON body whose last line
/// has no newline after it), late enough to be logged at WARN: a layer's panic on that line
/// loses no record. The request is handed over first, recorded once with its first token, and leaves
/// the in-flight gauges; the panic reaches the caller.
#[tokio::test(start_paused = true)]
async fn panic_while_logging_a_first_token_found_at_the_end_loses_no_record() {
    let _one = one_at_a_time();
    use tracing_subscriber::layer::SubscriberExt as _;
    let records = Records::default();
    // Every first token is past the critical threshold, whatever its latency (the paused
    // clock makes it zero).
    let mut baselines = tower_stream_monitor::health::Baselines::default();
    baselines.streaming_first_token.warning = -2.0;
    baselines.streaming_first_token.critical = -1.0;
    let monitor = records.build(Monitor::builder().baselines(baselines));
    let _subscriber = tracing::subscriber::set_default(
        tracing_subscriber::registry()
            .with(PanicsOnWarn)
            .with(monitor.error_layer()),
    );
    let service = typed_service(&monitor, "application/x-ndjson", || {
        http_body_util::Full::new(Bytes::from_static(
            b"{\"model\":\"llama3\",\"response\":\"Hi\",\"done\":false}",
        ))
    });
    assert_eq!(panic_of_the_body(service), "bug in a layer's on_event");
    let recorded = records.0.lock().unwrap().clone();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].outcome, Outcome::Ok);
    assert!(recorded[0].streaming);
    assert!(recorded[0].time_to_first_token.is_some());
    assert_eq!(monitor.in_flight(), 0);
}

/// A layer's panic as the request's span is given its provider, when the response starts (the
/// request's context is then being turned into the body's meter): the request is recorded
/// once, as the server's (`server_error`), and leaves the in-flight gauges; the panic reaches
/// the caller.
#[test]
fn panic_in_a_layer_as_the_response_starts_loses_no_record() {
    let _one = one_at_a_time();
    use tracing_subscriber::layer::SubscriberExt as _;
    let records = Records::default();
    let monitor = records.build(Monitor::builder());
    let _subscriber = tracing::subscriber::set_default(
        tracing_subscriber::registry()
            .with(PanicsOnField("provider"))
            .with(monitor.error_layer()),
    );
    let mut service = typed_service(&monitor, SSE, || Quirky::new(1, None, None));
    let mut future = Box::pin(service.call(Request::new(())));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = future.as_mut().poll(&mut cx());
    }));
    assert_eq!(
        message_of(caught.expect_err("the panic reaches the caller")),
        "bug in a layer's on_record"
    );
    // As a server drops the task that panicked.
    drop(future);
    assert_eq!(records.outcomes(), vec![Outcome::ServerError]);
    assert_eq!(monitor.in_flight(), 0);
}

/// A subscriber layer that panics when the request's span is entered for the `n`-th time
/// (counting from 1): a bug of the app's, or of a layer it installed.
struct PanicsOnEnter {
    n: usize,
    entered: AtomicUsize,
}

impl<S> tracing_subscriber::Layer<S> for PanicsOnEnter
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_enter(&self, id: &tracing::span::Id, cx: tracing_subscriber::layer::Context<'_, S>) {
        let request = cx
            .metadata(id)
            .is_some_and(|m| m.name() == "stream_request");
        if request && self.entered.fetch_add(1, Ordering::SeqCst) + 1 == self.n {
            panic!("bug in a layer's on_enter");
        }
    }
}

/// A layer's panic as the request's span is entered: around the inner service's `call` (1st),
/// the response future's poll (2nd), the body's poll (3rd). Each time the request is recorded
/// once, as the server's (`server_error`, not a client's cancel), and leaves the in-flight
/// gauges; the panic reaches the caller.
#[test]
fn panic_in_a_layer_entering_the_span_loses_no_record() {
    let _one = one_at_a_time();
    use tracing_subscriber::layer::SubscriberExt as _;
    for n in 1..=3 {
        let records = Records::default();
        let monitor = records.build(Monitor::builder());
        let _subscriber = tracing::subscriber::set_default(
            tracing_subscriber::registry()
                .with(PanicsOnEnter {
                    n,
                    entered: AtomicUsize::new(0),
                })
                .with(monitor.error_layer()),
        );
        let mut service = typed_service(&monitor, SSE, || Quirky::new(1, None, None));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut future = Box::pin(service.call(Request::new(())));
            let Poll::Ready(Ok(response)) = future.as_mut().poll(&mut cx()) else {
                panic!("ready")
            };
            let mut body = Box::pin(response.into_body());
            let _ = body.as_mut().poll_frame(&mut cx());
        }));
        assert_eq!(
            message_of(caught.expect_err("the panic reaches the caller")),
            "bug in a layer's on_enter",
            "entry {n}"
        );
        assert_eq!(records.outcomes(), vec![Outcome::ServerError], "entry {n}");
        assert_eq!(monitor.in_flight(), 0, "entry {n}");
    }
}

/// A first token late enough to be logged at WARN, found in a frame mid-stream: a layer's
/// panic on that line is the server's (`server_error`), not a client's cancel, and the request
/// is recorded once; the panic reaches the caller.
#[tokio::test(start_paused = true)]
async fn panic_while_logging_a_first_token_mid_stream_is_the_servers() {
    let _one = one_at_a_time();
    use tracing_subscriber::layer::SubscriberExt as _;
    let records = Records::default();
    // Every first token is past the critical threshold (see the test above).
    let mut baselines = tower_stream_monitor::health::Baselines::default();
    baselines.streaming_first_token.warning = -2.0;
    baselines.streaming_first_token.critical = -1.0;
    let monitor = records.build(Monitor::builder().baselines(baselines));
    let _subscriber = tracing::subscriber::set_default(
        tracing_subscriber::registry()
            .with(PanicsOnWarn)
            .with(monitor.error_layer()),
    );
    // One event ready, then the upstream still generating.
    let service = typed_service(&monitor, SSE, || Quirky::new(1, None, None));
    assert_eq!(panic_of_the_body(service), "bug in a layer's on_event");
    assert_eq!(records.outcomes(), vec![Outcome::ServerError]);
    assert_eq!(monitor.in_flight(), 0);
}
