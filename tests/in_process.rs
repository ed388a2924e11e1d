//! `MonitoredBody` and `StreamTimer` tested in process, in tower-http's style: a scripted mock
//! body, `tower::ServiceExt::oneshot`, and Tokio's paused clock (`start_paused = true`). No
//! sockets and no real sleeps: the runtime jumps from timer to timer in whole milliseconds, so
//! every figure below is exact, however busy the machine is.

use std::convert::Infallible;
use std::error::Error;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};
use tower_stream_monitor::parse::{FinishReason, ProviderFormat, TokenSource};
use tower_stream_monitor::stream::{MonitoredBody, StreamTimeoutError, TimeoutKind};
use tower_stream_monitor::{Monitor, MonitorBuilder, Outcome, StreamRecord};

const SSE: &str = "text/event-stream";
const ROLE: &str = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n";

type Mock = StreamBody<BoxStream<'static, Result<Frame<Bytes>, io::Error>>>;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One OpenAI chat chunk carrying `text`.
fn chunk(text: &str) -> String {
    format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{text}\"}}}}]}}\n\n")
}

/// What the mock body yields, after the delay it is scripted with.
enum Step {
    Data(Bytes),
    Trailers,
    Fail(&'static str),
}

/// A script step: after `delay` (measured from the previous frame), yield `step`.
fn data(delay: u64, text: impl Into<String>) -> (Duration, Step) {
    (ms(delay), Step::Data(Bytes::from(text.into())))
}

/// A body yielding frames from a script of `(delay, step)`, sleeping on Tokio's clock.
fn mock(script: Vec<(Duration, Step)>) -> Mock {
    let frames = stream::unfold(script.into_iter(), |mut steps| async move {
        let (delay, step) = steps.next()?;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let item = match step {
            Step::Data(bytes) => Ok(Frame::data(bytes)),
            Step::Trailers => {
                let mut trailers = HeaderMap::new();
                trailers.insert("x-checksum", HeaderValue::from_static("abc"));
                Ok(Frame::trailers(trailers))
            }
            Step::Fail(message) => Err(io::Error::other(message)),
        };
        Some((item, steps))
    });
    StreamBody::new(frames.boxed())
}

/// The `on_record` collector.
#[derive(Clone, Default)]
struct Records(Arc<Mutex<Vec<StreamRecord>>>);

impl Records {
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// After a few yields (nothing left to run), the one record there is: exactly once.
    async fn only(&self) -> StreamRecord {
        for _ in 0..5 {
            tokio::task::yield_now().await;
        }
        let got = self.0.lock().unwrap().clone();
        assert_eq!(got.len(), 1, "recorded exactly once: {got:#?}");
        got.into_iter().next().unwrap()
    }
}

/// Builds the monitor (recording into a new collector) and the monitored service: it answers
/// once, after `head_delay`, with `content_type` and the `script` body.
fn setup(
    builder: MonitorBuilder,
    head_delay: Duration,
    content_type: &'static str,
    script: Vec<(Duration, Step)>,
) -> (
    Records,
    Monitor,
    impl Service<Request<()>, Response = Response<MonitoredBody<Mock>>, Error = Infallible>,
) {
    let records = Records::default();
    let sink = records.clone();
    let monitor = builder
        .on_record(move |r: &StreamRecord| sink.0.lock().unwrap().push(r.clone()))
        .build()
        .unwrap();
    let mut body = Some(mock(script));
    let inner = tower::service_fn(move |_: Request<()>| {
        let mut response = Response::new(body.take().expect("called once"));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        async move {
            if !head_delay.is_zero() {
                tokio::time::sleep(head_delay).await;
            }
            Ok::<_, Infallible>(response)
        }
    });
    let service = monitor.layer().layer(inner);
    (records, monitor, service)
}

/// [`setup`], then one call with `oneshot`.
async fn run(
    builder: MonitorBuilder,
    head_delay: Duration,
    content_type: &'static str,
    script: Vec<(Duration, Step)>,
) -> (Records, Monitor, Response<MonitoredBody<Mock>>) {
    let (records, monitor, service) = setup(builder, head_delay, content_type, script);
    let response = service.oneshot(Request::new(())).await.unwrap();
    (records, monitor, response)
}

async fn text(body: MonitoredBody<Mock>) -> String {
    let bytes = body.collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The SSE event the monitor appends when it cuts a stream.
fn timeout_event(message: &str) -> String {
    format!(
        "event: error\ndata: {{\"error\":{{\"message\":\"{message}\",\"type\":\"timeout\"}}}}\n\n"
    )
}

/// TTFB is the role-only first chunk, TTFT the first content chunk, both from the call (not
/// from the headers); duration, gaps and rates follow exactly from the script.
#[tokio::test(start_paused = true)]
async fn role_chunk_is_first_byte_but_not_first_token() {
    let script = vec![
        data(50, ROLE),         // t=100 (headers at t=50)
        data(150, chunk("He")), // t=250
        data(50, chunk("ll")),  // t=300
        data(150, chunk("o")),  // t=450
        data(50, "data: [DONE]\n\n"),
    ];
    let expected: String = [
        ROLE,
        &chunk("He"),
        &chunk("ll"),
        &chunk("o"),
        "data: [DONE]\n\n",
    ]
    .concat();
    let (records, monitor, response) = run(Monitor::builder(), ms(50), SSE, script).await;
    assert_eq!(monitor.in_flight(), 1);
    assert_eq!(text(response.into_body()).await, expected);
    let r = records.only().await;
    assert_eq!(r.outcome, Outcome::Ok);
    assert_eq!(r.status, Some(StatusCode::OK));
    assert!(r.streaming);
    assert_eq!(r.format, ProviderFormat::OpenAiChat);
    assert_eq!(r.time_to_first_byte, Some(ms(100)));
    assert_eq!(r.time_to_first_token, Some(ms(250)));
    assert_eq!(r.duration, ms(500));
    assert_eq!((r.output_tokens, r.token_source), (3, TokenSource::Counted));
    assert_eq!(r.max_inter_token_gap, Some(ms(150)));
    assert_eq!(r.tokens_per_second, Some(12.0)); // 3 tokens / 250 ms
    assert_eq!(r.time_per_output_token, Some(ms(125))); // 250 ms / 2
    assert_eq!(r.bytes, expected.len() as u64);
    assert_eq!(monitor.in_flight(), 0);
}

/// An OpenAI chat chunk with one tool-call delta (`head` is the call's id, type and name, set on
/// the first delta only).
fn tool_delta(head: &str, arguments: &str) -> String {
    format!(
        "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":[{{\"index\":0,{head}\"function\":{{\"arguments\":\"{arguments}\"}}}}]}}}}]}}\n\n"
    )
}

/// A stream that only calls a tool: no content ever, so its first token is its first
/// tool-call delta (not the role chunk before it), its tokens are its deltas, and it finishes
/// as `tool_calls`.
#[tokio::test(start_paused = true)]
async fn a_tool_call_only_stream_starts_at_its_first_tool_call_delta() {
    let finish =
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n";
    let script = vec![
        data(20, ROLE), // t=20
        data(
            280,
            tool_delta(r#""id":"call_1","type":"function","#, r#"{\"city\":"#),
        ), // t=300
        data(40, tool_delta("", r#"\"Paris\""#)), // t=340
        data(40, tool_delta("", "}")), // t=380
        data(10, finish), // t=390
        data(10, "data: [DONE]\n\n"),
    ];
    let (records, _monitor, response) = run(Monitor::builder(), ms(0), SSE, script).await;
    let body = text(response.into_body()).await;
    assert!(body.contains("call_1") && body.ends_with("data: [DONE]\n\n"));
    let r = records.only().await;
    assert_eq!(r.outcome, Outcome::Ok);
    assert_eq!(r.format, ProviderFormat::OpenAiChat);
    assert_eq!(r.time_to_first_byte, Some(ms(20)));
    assert_eq!(r.time_to_first_token, Some(ms(300)));
    assert_eq!((r.output_tokens, r.token_source), (3, TokenSource::Counted));
    assert_eq!(r.max_inter_token_gap, Some(ms(40)));
    assert_eq!(r.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(r.duration, ms(400));
}

/// `stream_timeout(2s)` cuts an SSE stream at exactly 2 s: the six events sent by then pass
/// through, then one `event: error` naming the timeout; recorded once as `timeout`.
#[tokio::test(start_paused = true)]
async fn deadline_ends_sse_with_an_error_event() {
    let script = (0..10)
        .map(|i| data(300, chunk(&format!("t{i}"))))
        .collect();
    let builder = Monitor::builder().stream_timeout(Duration::from_secs(2));
    let (records, _monitor, response) = run(builder, ms(0), SSE, script).await;
    let start = Instant::now();
    let body = text(response.into_body()).await;
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    let sent: String = (0..6).map(|i| chunk(&format!("t{i}"))).collect();
    assert_eq!(body, sent + &timeout_event("Streaming timeout after 2s"));
    let r = records.only().await;
    assert_eq!(r.outcome, Outcome::Timeout);
    assert_eq!(r.duration, Duration::from_secs(2));
    assert_eq!(r.time_to_first_token, Some(ms(300)));
    assert_eq!(r.output_tokens, 6);
    assert_eq!(r.max_inter_token_gap, Some(ms(300)));
    assert_eq!(r.tokens_per_second, Some(6.0 / ms(1700).as_secs_f64()));
    assert_eq!(r.time_per_output_token, Some(ms(340))); // 1700 ms / 5
}

/// Cut in the middle of an event, the error event starts on a fresh line (`\n\n` first), so a
/// client's parser still sees it as an event of its own.
#[tokio::test(start_paused = true)]
async fn deadline_mid_event_starts_the_error_event_on_a_new_line() {
    let partial = "data: {\"choices\":[{\"delta\":{\"content\":\"cu";
    let script = vec![
        data(300, chunk("a")),
        data(300, partial),
        data(5000, "t\"}}]}\n\n"),
    ];
    let builder = Monitor::builder().stream_timeout(Duration::from_secs(1));
    let (records, _monitor, response) = run(builder, ms(0), SSE, script).await;
    let body = text(response.into_body()).await;
    let message = timeout_event("Streaming timeout after 1s");
    assert_eq!(body, format!("{}{partial}\n\n{message}", chunk("a")));
    let r = records.only().await;
    assert_eq!(
        (r.outcome, r.duration),
        (Outcome::Timeout, Duration::from_secs(1))
    );
    assert_eq!(r.output_tokens, 1);
}

/// The deadline passing before the inner service answers: the monitor answers 504 itself at
/// exactly 2 s, with a JSON timeout error, and records `timeout` with no first byte.
#[tokio::test(start_paused = true)]
async fn deadline_before_the_response_answers_504() {
    let start = Instant::now();
    let builder = Monitor::builder().stream_timeout(Duration::from_secs(2));
    let (records, monitor, response) = run(
        builder,
        Duration::from_secs(5),
        SSE,
        vec![data(0, chunk("late"))],
    )
    .await;
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(
        text(response.into_body()).await,
        "{\"error\":{\"message\":\"Streaming timeout after 2s\",\"type\":\"timeout\"}}"
    );
    let r = records.only().await;
    assert_eq!(r.outcome, Outcome::Timeout);
    assert_eq!(r.duration, Duration::from_secs(2));
    assert_eq!(
        (r.time_to_first_byte, r.bytes, r.output_tokens),
        (None, 0, 0)
    );
    assert_eq!(monitor.in_flight(), 0);
}

/// A 2 s stall after two frames 100 ms apart is cut 500 ms after the last frame (t=700 ms),
/// before the farther 10 s deadline, with the idle message; the stalled frame is never awaited.
#[tokio::test(start_paused = true)]
async fn idle_timeout_cuts_a_stalled_stream() {
    let script = vec![
        data(100, chunk("a")),
        data(100, chunk("b")),
        data(2000, chunk("late")),
    ];
    let builder = Monitor::builder()
        .idle_timeout(ms(500))
        .stream_timeout(Duration::from_secs(10));
    let (records, _monitor, response) = run(builder, ms(0), SSE, script).await;
    let start = Instant::now();
    let body = text(response.into_body()).await;
    assert_eq!(start.elapsed(), ms(700));
    let message = timeout_event("Streaming timeout after 0.5s without data");
    assert_eq!(body, chunk("a") + &chunk("b") + &message);
    let r = records.only().await;
    assert_eq!((r.outcome, r.duration), (Outcome::Timeout, ms(700)));
    assert_eq!((r.output_tokens, r.max_inter_token_gap), (2, Some(ms(100))));
}

/// The deadline runs from the call, across the wait for the response: a handler that answers
/// after 1.45 s leaves its body 550 ms of a 2 s deadline, so frames 100 ms apart (1.55 s to
/// 1.95 s) are cut after five, at exactly 2 s, while the body waits for its sixth (the sleep
/// armed while the response was awaited carries on into the body).
#[tokio::test(start_paused = true)]
async fn deadline_spans_the_wait_for_the_response() {
    let script = (0..10)
        .map(|i| data(100, chunk(&format!("t{i}"))))
        .collect();
    let builder = Monitor::builder().stream_timeout(Duration::from_secs(2));
    let start = Instant::now();
    let (records, _monitor, response) = run(builder, ms(1450), SSE, script).await;
    let body = text(response.into_body()).await;
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    let frames: String = (0..5).map(|i| chunk(&format!("t{i}"))).collect();
    assert_eq!(body, frames + &timeout_event("Streaming timeout after 2s"));
    let r = records.only().await;
    assert_eq!(
        (r.outcome, r.duration),
        (Outcome::Timeout, Duration::from_secs(2))
    );
    assert_eq!(r.output_tokens, 5);
}

/// A response ready at once with a one-frame body (`Full`: its end is known) arms no timer;
/// its frame read past the deadline (a consumer that reads late) is handed on and the request
/// is `ok`, at 3 s of a 2 s deadline as at 1 s: the lateness is the consumer's, and a client
/// that reads slowly must not turn a healthy answer into a `timeout` (README, Security).
#[tokio::test(start_paused = true)]
async fn a_one_frame_body_read_late_is_ok() {
    for (read_at, outcome) in [(3, Outcome::Ok), (1, Outcome::Ok)] {
        let records = Records::default();
        let sink = records.clone();
        let monitor = Monitor::builder()
            .stream_timeout(Duration::from_secs(2))
            .on_record(move |r: &StreamRecord| sink.0.lock().unwrap().push(r.clone()))
            .build()
            .unwrap();
        let inner = tower::service_fn(|_: Request<()>| async {
            let body = http_body_util::Full::new(Bytes::from_static(b"{}"));
            Ok::<_, Infallible>(Response::new(body))
        });
        let response = monitor
            .layer()
            .layer(inner)
            .oneshot(Request::new(()))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(read_at)).await;
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "{}");
        let r = records.only().await;
        assert_eq!(
            (r.outcome, r.duration),
            (outcome, Duration::from_secs(read_at))
        );
    }
}

/// An idle gap shorter than what is left of the deadline wins, though the sleep the body
/// starts with was armed at the deadline while the response was awaited: a 1 s wait for the
/// response, one frame 100 ms later, then a stall is cut 500 ms after that frame (t=1.6 s).
#[tokio::test(start_paused = true)]
async fn idle_timeout_after_a_slow_response_cuts_at_the_idle_gap() {
    let script = vec![data(100, chunk("a")), data(5000, chunk("late"))];
    let builder = Monitor::builder()
        .stream_timeout(Duration::from_secs(10))
        .idle_timeout(ms(500));
    let start = Instant::now();
    let (records, _monitor, response) = run(builder, ms(1000), SSE, script).await;
    let body = text(response.into_body()).await;
    assert_eq!(start.elapsed(), ms(1600));
    let message = timeout_event("Streaming timeout after 0.5s without data");
    assert_eq!(body, chunk("a") + &message);
    let r = records.only().await;
    assert_eq!((r.outcome, r.duration), (Outcome::Timeout, ms(1600)));
}

/// Frames every 450 ms for 4.5 s never trip a 500 ms idle timeout: its sleep, armed once,
/// fires early and is re-armed from the last frame each time, and the stream ends `ok`.
#[tokio::test(start_paused = true)]
async fn idle_timeout_spares_a_steady_stream() {
    let script = (0..10)
        .map(|i| data(450, chunk(&format!("t{i}"))))
        .collect();
    let builder = Monitor::builder().idle_timeout(ms(500));
    let (records, _monitor, response) = run(builder, ms(0), SSE, script).await;
    let body = text(response.into_body()).await;
    assert_eq!(
        body,
        (0..10).map(|i| chunk(&format!("t{i}"))).collect::<String>()
    );
    let r = records.only().await;
    assert_eq!((r.outcome, r.duration), (Outcome::Ok, ms(4500)));
    assert_eq!(
        (r.output_tokens, r.max_inter_token_gap),
        (10, Some(ms(450)))
    );
    assert_eq!(r.time_to_first_token, Some(ms(450)));
}

/// Timeouts too long for the clock to reach (`Duration::MAX`) never pass, and never panic: a
/// slow response and a stream that waits between its frames are recorded `ok`.
#[tokio::test(start_paused = true)]
async fn timeouts_past_the_clock_never_pass() {
    let script = vec![data(0, chunk("a")), data(3000, chunk("b"))];
    let builder = Monitor::builder()
        .stream_timeout(Duration::MAX)
        .idle_timeout(Duration::MAX);
    let (records, _monitor, response) = run(builder, ms(1000), SSE, script).await;
    let body = text(response.into_body()).await;
    assert_eq!(body, chunk("a") + &chunk("b"));
    let r = records.only().await;
    assert_eq!((r.outcome, r.duration), (Outcome::Ok, ms(4000)));
}

/// A body that is never pending (every frame ready at once) read by a consumer that takes
/// 100 ms over each frame, 100 s in all, is not cut by a 2 s deadline: its source never kept it
/// waiting, so the time is the consumer's, and the request is `ok` with every frame handed on
/// (README, Security). A body that waits past the deadline is cut (the tests above).
#[tokio::test(start_paused = true)]
async fn a_slow_reader_of_a_ready_body_is_not_cut_by_the_deadline() {
    let script = (0..1000).map(|_| data(0, chunk("x"))).collect();
    let builder = Monitor::builder().stream_timeout(Duration::from_secs(2));
    let (records, _monitor, response) = run(builder, ms(0), SSE, script).await;
    let mut body = response.into_body();
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        frames.push(frame.unwrap().into_data().unwrap());
        tokio::time::advance(ms(100)).await;
    }
    assert_eq!(frames.len(), 1000);
    assert!(frames.iter().all(|f| *f == chunk("x")));
    let r = records.only().await;
    assert_eq!(r.outcome, Outcome::Ok);
    assert_eq!(
        (r.output_tokens, r.time_to_first_token),
        (1000, Some(ms(0)))
    );
}

/// A non-SSE body cut by the deadline ends with an error whose source chain holds the crate's
/// `StreamTimeoutError` (deadline, 2 s); then the body is over.
#[tokio::test(start_paused = true)]
async fn deadline_cuts_other_bodies_with_a_stream_timeout_error() {
    let script = (0..10).map(|_| data(300, "part")).collect();
    let builder = Monitor::builder().stream_timeout(Duration::from_secs(2));
    let (records, _monitor, response) =
        run(builder, ms(0), "application/octet-stream", script).await;
    let mut body = response.into_body();
    let mut received = Vec::new();
    let error = loop {
        match body.frame().await.expect("ends with an error") {
            Ok(frame) => received.extend_from_slice(&frame.into_data().unwrap()),
            Err(error) => break error,
        }
    };
    assert_eq!(received, b"part".repeat(6));
    let timeout = std::iter::successors(Some(&*error as &(dyn Error + 'static)), |&e| e.source())
        .find_map(|e| e.downcast_ref::<StreamTimeoutError>())
        .expect("a StreamTimeoutError in the chain");
    assert_eq!(timeout.kind(), TimeoutKind::Deadline);
    assert_eq!(timeout.after(), Duration::from_secs(2));
    assert!(body.frame().await.is_none(), "nothing after the error");
    let r = records.only().await;
    assert_eq!(
        (r.outcome, r.duration),
        (Outcome::Timeout, Duration::from_secs(2))
    );
    assert!(!r.streaming);
    assert_eq!((r.bytes, r.output_tokens), (24, 0));
    // Not a provider format: the first byte is the first token.
    assert_eq!(r.time_to_first_byte, Some(ms(300)));
    assert_eq!(r.time_to_first_token, Some(ms(300)));
}

/// Dropping the body mid-stream (the client went away) records `cancelled` once, at the time of
/// the drop, with the tokens seen so far.
#[tokio::test(start_paused = true)]
async fn dropping_the_body_is_cancelled_once() {
    let script = (0..10)
        .map(|i| data(100, chunk(&format!("t{i}"))))
        .collect();
    let (records, monitor, response) = run(Monitor::builder(), ms(0), SSE, script).await;
    let mut body = response.into_body();
    for _ in 0..3 {
        body.frame().await.unwrap().unwrap();
    }
    tokio::time::sleep(ms(200)).await;
    assert_eq!((records.count(), monitor.in_flight()), (0, 1));
    drop(body);
    let r = records.only().await;
    assert_eq!((r.outcome, r.duration), (Outcome::Cancelled, ms(500)));
    assert_eq!((r.output_tokens, r.time_to_first_token), (3, Some(ms(100))));
    // Its reader held it 200 ms of the 400 from its first token before going away: its rate
    // and gaps are not timed (README, Security).
    assert_eq!((r.tokens_per_second, r.max_inter_token_gap), (None, None));
    assert_eq!(monitor.in_flight(), 0);
    assert_eq!(monitor.recorded(Outcome::Cancelled), 1);
}

/// Dropping the response future before the headers (the client left while the upstream was
/// still thinking) records `cancelled` once, at the time of the drop, with no status.
#[tokio::test(start_paused = true)]
async fn dropping_the_response_future_is_cancelled_once() {
    let script = vec![data(0, chunk("late"))];
    let (records, monitor, service) =
        setup(Monitor::builder(), Duration::from_secs(5), SSE, script);
    let call = tokio::time::timeout(Duration::from_secs(1), service.oneshot(Request::new(())));
    assert!(call.await.is_err(), "still waiting for the headers");
    let r = records.only().await;
    assert_eq!(
        (r.outcome, r.duration),
        (Outcome::Cancelled, Duration::from_secs(1))
    );
    assert_eq!((r.status, r.time_to_first_byte), (None, None));
    assert_eq!(monitor.in_flight(), 0);
}

/// A body error after two chunks is passed on and recorded once as `stream_error` at the time
/// of the error; the body is over after it, and dropping it records nothing more.
#[tokio::test(start_paused = true)]
async fn body_error_mid_stream_is_a_stream_error_once() {
    let script = vec![
        data(100, chunk("a")),
        data(100, chunk("b")),
        (ms(100), Step::Fail("upstream reset")),
        data(100, chunk("never")),
    ];
    let (records, monitor, response) = run(Monitor::builder(), ms(0), SSE, script).await;
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    body.frame().await.unwrap().unwrap();
    let error = body.frame().await.unwrap().unwrap_err();
    assert_eq!(error.to_string(), "upstream reset");
    assert!(body.frame().await.is_none(), "nothing after the error");
    drop(body);
    let r = records.only().await;
    assert_eq!((r.outcome, r.duration), (Outcome::StreamError, ms(300)));
    assert_eq!(r.output_tokens, 2);
    assert_eq!(monitor.in_flight(), 0);
}

/// Trailers end the record at once (t=300 ms), before the body is polled for its end; they
/// pass through untouched, and time spent after them is not counted.
#[tokio::test(start_paused = true)]
async fn trailers_end_the_record() {
    let script = vec![
        data(100, chunk("a")),
        data(100, chunk("b")),
        (ms(100), Step::Trailers),
    ];
    let (records, monitor, response) = run(Monitor::builder(), ms(0), SSE, script).await;
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    body.frame().await.unwrap().unwrap();
    let trailers = body
        .frame()
        .await
        .unwrap()
        .unwrap()
        .into_trailers()
        .unwrap();
    assert_eq!(trailers["x-checksum"], "abc");
    assert_eq!(records.count(), 1, "recorded on the trailers frame");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(body.frame().await.is_none());
    drop(body);
    let r = records.only().await;
    assert_eq!((r.outcome, r.duration), (Outcome::Ok, ms(300)));
    assert_eq!((r.output_tokens, r.max_inter_token_gap), (2, Some(ms(100))));
    assert_eq!(monitor.in_flight(), 0);
}

/// A consumer that polls late (a client that stops reading for a while) does not trip the idle
/// timeout while the upstream has frames ready: idleness is the upstream's, not the reader's,
/// so a slow client cannot turn a healthy stream into a `timeout` that moves `/health`.
#[tokio::test(start_paused = true)]
async fn a_slow_reader_is_not_an_idle_upstream() {
    let mut script = vec![data(100, chunk("t0"))];
    script.extend((1..4).map(|i| data(0, chunk(&format!("t{i}")))));
    let builder = Monitor::builder().idle_timeout(ms(500));
    let (records, _monitor, response) = run(builder, ms(0), SSE, script).await;
    let mut body = response.into_body();
    let mut text = String::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        if let Some(data) = frame.data_ref() {
            text.push_str(std::str::from_utf8(data).unwrap());
        }
        // Each frame was ready at once; the reader takes a second over each.
        tokio::time::sleep(ms(1000)).await;
    }
    assert_eq!(
        text,
        (0..4).map(|i| chunk(&format!("t{i}"))).collect::<String>()
    );
    let r = records.only().await;
    assert_eq!((r.outcome, r.output_tokens), (Outcome::Ok, 4));
}
