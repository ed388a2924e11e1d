//! The stream layer against a real axum server on 127.0.0.1 and a real HTTP client. The body and
//! its timers are tested exactly, on a paused clock, in `tests/in_process.rs`; here what crosses
//! the network: real clients, disconnects, panics, other middleware.

mod common;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use common::{
    Records, client, endless_sse, expected, fixture, get_json, get_text, monitored, paced_body,
    recorded, serve, split_events, stalling_sse,
};
use tower_stream_monitor::parse::{FinishReason, ProviderFormat, TokenSource};
use tower_stream_monitor::{Monitor, Outcome, StreamLabels};

const FIRST_DELAY: Duration = Duration::from_millis(120);
const INTERVAL: Duration = Duration::from_millis(15);

fn sse_response(frames: Vec<Bytes>, provider: &'static str) -> Response {
    (
        StreamLabels::new(provider),
        [(header::CONTENT_TYPE, "text/event-stream")],
        paced_body(frames, FIRST_DELAY, INTERVAL),
    )
        .into_response()
}

/// Each fixture streamed event by event with delays: tokens, usage, model, outcome and TTFT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_stream_with_right_ttft_and_tokens() {
    // Side by side: the test takes as long as the longest fixture, not their sum.
    futures_util::future::join_all(
        [
            "openai-chat",
            "openai-chat-no-usage",
            "openai-chat-error",
            "openai-responses",
            "anthropic-messages",
            "anthropic-overloaded",
            "gemini",
        ]
        .map(stream_fixture),
    )
    .await;
}

async fn stream_fixture(name: &'static str) {
    let records = Records::default();
    let monitor = records.attach(Monitor::builder()).build().unwrap();
    let body = fixture(&format!("{name}.sse"));
    let frames = split_events(&body);
    let handler_frames = frames.clone();
    let app = Router::new()
        .route(
            "/v1/stream",
            post(move || async move { sse_response(handler_frames, "fixture") }),
        )
        .layer(monitor.layer());
    let addr = serve(app).await;

    // The first frame in which a content event completes decides TTFT.
    let first_content_frame = frames
        .iter()
        .position(|f| {
            let mut p = tower_stream_monitor::parse::StreamParser::new(
                tower_stream_monitor::parse::WireFormat::Sse,
            );
            p.feed(f) > 0
        })
        .expect("a content frame");
    let content_end: usize = frames[..=first_content_frame].iter().map(Bytes::len).sum();

    // The client's own clock: from before sending to the arrival of that frame's last byte.
    let sent = std::time::Instant::now();
    let mut response = client()
        .post(format!("http://{addr}/v1/stream"))
        .send()
        .await
        .unwrap();
    let mut received = Vec::new();
    let mut client_first_token = None;
    while let Some(chunk) = response.chunk().await.unwrap() {
        received.extend_from_slice(&chunk);
        if client_first_token.is_none() && received.len() >= content_end {
            client_first_token = Some(sent.elapsed());
        }
    }
    assert_eq!(
        received.as_slice(),
        body.as_slice(),
        "{name}: body passes through untouched"
    );

    let r = records.one().await;
    let e = expected(name);
    assert_eq!(r.format.as_str(), e["format"], "{name}");
    assert_eq!(
        serde_json::json!(r.output_tokens),
        e["output_tokens"],
        "{name}"
    );
    assert_eq!(
        serde_json::json!(r.input_tokens),
        e["input_tokens"],
        "{name}"
    );
    assert_eq!(r.token_source.as_str(), e["token_source"], "{name}");
    assert_eq!(&*r.model, e["model"].as_str().unwrap(), "{name}");
    assert_eq!(r.outcome.as_str(), e["outcome"], "{name}");
    assert_eq!(&*r.provider, "fixture");
    assert_eq!(&*r.route, "/v1/stream");
    assert_eq!(r.bytes, body.len() as u64);
    assert!(r.streaming);

    let ttfb = r.time_to_first_byte.unwrap();
    let ttft = r.time_to_first_token.unwrap();
    let earliest = FIRST_DELAY + INTERVAL * first_content_frame as u32;
    assert!(ttfb >= FIRST_DELAY, "{name}: ttfb {ttfb:?}");
    assert!(ttft >= earliest, "{name}: ttft {ttft:?} < {earliest:?}");
    // The monitor sees the frame before the client does: never later than the client's clock.
    let client_first_token = client_first_token.expect("the whole body arrived");
    assert!(
        ttft <= client_first_token,
        "{name}: ttft {ttft:?} after the client saw it at {client_first_token:?}"
    );
    assert!(ttfb <= ttft && ttft <= r.duration, "{name}");
    if first_content_frame == 0 {
        assert_eq!(ttfb, ttft, "{name}: content in the first frame");
    }
    if r.output_tokens >= 2 {
        // The time to generate leaves the reader's time out (README, Security): at most the
        // wall time after the first token, at least the upstream's own pauses after it; the
        // time per output token is the same time over one token fewer.
        let tokens = r.output_tokens as f64;
        let generating = tokens / r.tokens_per_second.unwrap();
        let wall = (r.duration - ttft).as_secs_f64();
        let paced = (INTERVAL * (frames.len() - 1 - first_content_frame) as u32).as_secs_f64();
        assert!(
            paced * (1.0 - 1e-9) <= generating && generating <= wall * (1.0 + 1e-9),
            "{name}: {generating} s to generate, paced {paced} s, {wall} s after the first token"
        );
        let tpot = r.time_per_output_token.unwrap().as_secs_f64();
        assert!(
            (tpot * (tokens - 1.0) - generating).abs() <= 1e-9 * tokens,
            "{name}: {tpot} s a token over {generating} s"
        );
        let gap = r.max_inter_token_gap.unwrap();
        assert!(gap >= INTERVAL / 2, "{name}: max gap {gap:?}");
    }
}

async fn status_app(status: StatusCode) -> (Records, std::net::SocketAddr) {
    let records = Records::default();
    let monitor = records.attach(Monitor::builder()).build().unwrap();
    let app = Router::new()
        .route(
            "/v1/chat",
            post(move || async move { (status, "upstream said no") }),
        )
        .layer(monitor.layer());
    (records, serve(app).await)
}

#[tokio::test]
async fn status_codes_classify() {
    for (status, outcome) in [
        (StatusCode::UNAUTHORIZED, Outcome::AuthError),
        (StatusCode::FORBIDDEN, Outcome::AuthError),
        (StatusCode::TOO_MANY_REQUESTS, Outcome::RateLimited),
        (StatusCode::GATEWAY_TIMEOUT, Outcome::Timeout),
        (StatusCode::REQUEST_TIMEOUT, Outcome::Timeout),
        (StatusCode::INTERNAL_SERVER_ERROR, Outcome::ServerError),
        (StatusCode::from_u16(529).unwrap(), Outcome::ServerError),
        (StatusCode::NOT_FOUND, Outcome::ClientError),
        (StatusCode::OK, Outcome::Ok),
    ] {
        let (records, addr) = status_app(status).await;
        let res = client()
            .post(format!("http://{addr}/v1/chat"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), status.as_u16());
        let _ = res.bytes().await.unwrap();
        let r = records.one().await;
        assert_eq!(r.outcome, outcome, "{status}");
        assert_eq!(r.status, Some(status));
        assert!(!r.streaming);
    }
}

#[tokio::test]
async fn empty_error_body_is_recorded_once() {
    let (records, monitor, addr) = monitored(
        Monitor::builder(),
        Router::new().route("/v1/chat", post(|| async { StatusCode::UNAUTHORIZED })),
    )
    .await;
    let res = client()
        .post(format!("http://{addr}/v1/chat"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let r = records.one().await;
    assert_eq!(r.outcome, Outcome::AuthError);
    assert_eq!(monitor.in_flight(), 0);
}

#[tokio::test]
async fn inner_tower_timeout_is_a_timeout() {
    use axum::error_handling::HandleErrorLayer;
    use tower::ServiceBuilder;

    let records = Records::default();
    let monitor = records.attach(Monitor::builder()).build().unwrap();
    let app = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late"
        }),
    );
    let app = app.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                StatusCode::REQUEST_TIMEOUT
            }))
            .layer(monitor.layer())
            .layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(
                100,
            ))),
    );
    let addr = serve(app).await;
    let res = client()
        .get(format!("http://{addr}/slow"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 408);
    let r = records.one().await;
    assert_eq!(r.outcome, Outcome::Timeout);
    assert_eq!(
        r.status, None,
        "the inner service failed: no response was measured"
    );
}

#[tokio::test]
async fn panicking_handler_is_a_server_error() {
    let records = Records::default();
    let monitor = records.attach(Monitor::builder()).build().unwrap();
    async fn boom() -> &'static str {
        panic!("handler bug")
    }
    let app = Router::new()
        .route("/boom", get(boom))
        .layer(monitor.layer());
    let addr = serve(app).await;
    let res = client().get(format!("http://{addr}/boom")).send().await;
    assert!(res.is_err(), "the connection dies with the panicking task");
    let r = records.one().await;
    assert_eq!(r.outcome, Outcome::ServerError);
    assert_eq!(monitor.in_flight(), 0);
}

#[tokio::test]
async fn panicking_stream_is_a_server_error() {
    let records = Records::default();
    let monitor = records.attach(Monitor::builder()).build().unwrap();
    let app = Router::new()
        .route(
            "/boom",
            get(|| async {
                let stream = futures_util::stream::unfold(0, |n| async move {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    if n == 2 {
                        panic!("stream bug");
                    }
                    Some((
                        Ok::<_, std::convert::Infallible>(Bytes::from("data: {}\n\n")),
                        n + 1,
                    ))
                });
                (
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    Body::from_stream(stream),
                )
            }),
        )
        .layer(monitor.layer());
    let addr = serve(app).await;
    if let Ok(res) = client().get(format!("http://{addr}/boom")).send().await {
        let _ = res.bytes().await;
    }
    let r = records.one().await;
    assert_eq!(r.outcome, Outcome::ServerError);
}

#[tokio::test]
async fn client_disconnect_mid_stream_is_cancelled_once() {
    let (records, monitor, addr) = monitored(
        Monitor::builder(),
        Router::new().route(
            "/stream",
            get(|| async {
                (
                    StreamLabels::new("openai"),
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    endless_sse(Duration::from_millis(10)),
                )
            }),
        ),
    )
    .await;
    let mut res = client()
        .get(format!("http://{addr}/stream"))
        .send()
        .await
        .unwrap();
    let first = res.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"data:"));
    assert_eq!(monitor.in_flight(), 1);
    drop(res);
    let r = records.one().await;
    assert_eq!(r.outcome, Outcome::Cancelled);
    assert!(r.output_tokens >= 1);
    assert_eq!(monitor.in_flight(), 0);
    assert_eq!(monitor.recorded(Outcome::Cancelled), 1);
}

#[tokio::test]
async fn stream_deadline_ends_sse_with_an_error_event() {
    let (records, _monitor, addr) = monitored(
        Monitor::builder().stream_timeout(Duration::from_millis(300)),
        Router::new().route(
            "/stream",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    endless_sse(Duration::from_millis(20)),
                )
            }),
        ),
    )
    .await;
    let text = client()
        .get(format!("http://{addr}/stream"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .expect("the stream ends cleanly");
    assert!(
        text.ends_with(
            "event: error\ndata: {\"error\":{\"message\":\"Streaming timeout after 0.3s\",\"type\":\"timeout\"}}\n\n"
        ),
        "{text}"
    );
    let r = records.one().await;
    assert_eq!(r.outcome, Outcome::Timeout);
    assert!(r.duration >= Duration::from_millis(300));
    assert!(r.output_tokens >= 3);
}

#[tokio::test]
async fn cardinality_cap_folds_into_other() {
    let (records, monitor, addr) = monitored(
        Monitor::builder().header_label_cardinality(2),
        Router::new().route("/v1/chat", post(|| async { "ok" })),
    )
    .await;
    for p in ["openai", "anthropic", "gemini", "mistral", "openai"] {
        client()
            .post(format!("http://{addr}/v1/chat"))
            .header("x-llm-provider", p)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    let got: Vec<String> = records
        .wait_for(5)
        .await
        .iter()
        .map(|r| r.provider.to_string())
        .collect();
    assert_eq!(got, ["openai", "anthropic", "other", "other", "openai"]);
    assert_eq!(monitor.label_overflows(), 2);
}

#[tokio::test]
async fn hostile_header_values_never_become_labels() {
    let (records, _monitor, addr) = monitored(
        Monitor::builder(),
        Router::new().route("/v1/chat", post(|| async { "ok" })),
    )
    .await;
    let long = "x".repeat(65);
    let hostile: Vec<reqwest::header::HeaderValue> = vec![
        reqwest::header::HeaderValue::from_str(&long).unwrap(),
        reqwest::header::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        reqwest::header::HeaderValue::from_bytes(b"tab\there").unwrap(),
        reqwest::header::HeaderValue::from_static(""),
    ];
    for value in &hostile {
        client()
            .post(format!("http://{addr}/v1/chat"))
            .header("x-llm-provider", value.clone())
            .header("x-user-id", value.clone())
            .send()
            .await
            .unwrap();
    }
    for r in records.wait_for(hostile.len()).await {
        assert_eq!(&*r.provider, "unknown");
        assert_eq!(r.user_id, None);
    }
}

#[tokio::test]
async fn routes_are_patterns_never_raw_paths() {
    let (records, _monitor, addr) = monitored(
        Monitor::builder(),
        Router::new().route("/v1/models/{model}", get(|| async { "m" })),
    )
    .await;
    for path in ["/v1/models/gpt-4o", "/v1/models/claude", "/nowhere/123"] {
        client()
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .unwrap();
    }
    let routes: Vec<String> = records
        .wait_for(3)
        .await
        .iter()
        .map(|r| r.route.to_string())
        .collect();
    assert_eq!(
        routes,
        ["/v1/models/{model}", "/v1/models/{model}", "unmatched"]
    );
}

#[tokio::test]
async fn labels_come_from_extension_then_closure_then_header() {
    let (records, _monitor, addr) = monitored(
        Monitor::builder().request_labels(|parts: &http::request::Parts| {
            if parts.uri.path() == "/by-closure" {
                StreamLabels::new("closure-provider").with_model("closure-model")
            } else {
                StreamLabels::default()
            }
        }),
        Router::new()
            .route(
                "/by-extension",
                get(|| async { (StreamLabels::new("ext").with_model("ext-model"), "x") }),
            )
            .route("/by-closure", get(|| async { "x" }))
            .route("/by-header", get(|| async { "x" })),
    )
    .await;
    let c = client();
    c.get(format!("http://{addr}/by-extension"))
        .header("x-llm-provider", "hdr")
        .send()
        .await
        .unwrap();
    records.wait_for(1).await;
    c.get(format!("http://{addr}/by-closure"))
        .header("x-llm-provider", "hdr")
        .send()
        .await
        .unwrap();
    records.wait_for(2).await;
    c.get(format!("http://{addr}/by-closure"))
        .send()
        .await
        .unwrap();
    records.wait_for(3).await;
    c.get(format!("http://{addr}/by-header"))
        .header("x-llm-provider", "hdr")
        .header("x-llm-model", "hdr-model")
        .send()
        .await
        .unwrap();
    let got: Vec<(String, String)> = records
        .wait_for(4)
        .await
        .iter()
        .map(|r| (r.provider.to_string(), r.model.to_string()))
        .collect();
    assert_eq!(
        got,
        [
            ("ext".into(), "ext-model".into()),
            // The closure names the provider: the client's header is not read.
            ("closure-provider".into(), "closure-model".into()),
            ("closure-provider".into(), "closure-model".into()),
            // Nothing the app names: the headers are read.
            ("hdr".into(), "hdr-model".into()),
        ]
    );
}

/// `Accept: text/event-stream` does not make a plain answer a streaming request: the response
/// decides (README, Outcomes). An NDJSON answer is one, and is parsed.
#[tokio::test]
async fn the_response_not_the_accept_header_marks_streaming_and_ndjson_is_parsed() {
    let records = Records::default();
    let monitor = records.attach(Monitor::builder()).build().unwrap();
    let app = Router::new()
        .route("/plain", get(|| async { "x" }))
        .route(
            "/ollama",
            get(|| async {
                let body = "{\"model\":\"llama3\",\"response\":\"Hi\",\"done\":false}\n{\"model\":\"llama3\",\"response\":\" there\",\"done\":false}\n{\"model\":\"llama3\",\"response\":\"\",\"done\":true,\"eval_count\":7,\"prompt_eval_count\":3}\n";
                ([(header::CONTENT_TYPE, "application/x-ndjson")], body)
            }),
        )
        .layer(monitor.layer());
    let addr = serve(app).await;
    client()
        .get(format!("http://{addr}/plain"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    records.wait_for(1).await;
    client()
        .get(format!("http://{addr}/ollama"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let got = records.wait_for(2).await;
    assert!(
        !got[0].streaming,
        "a plain answer, whatever the client accepts"
    );
    assert_eq!(got[0].format, ProviderFormat::Unknown);
    assert_eq!(
        got[0].time_to_first_token, got[0].time_to_first_byte,
        "unknown format: TTFT is TTFB"
    );
    assert!(got[1].streaming);
    assert_eq!(got[1].format, ProviderFormat::Ollama);
    assert_eq!((got[1].output_tokens, got[1].input_tokens), (7, Some(3)));
    assert_eq!(got[1].token_source, TokenSource::Reported);
    assert_eq!(&*got[1].model, "llama3");
}

#[tokio::test]
async fn malformed_and_oversized_events_are_counted_and_skipped() {
    let records = Records::default();
    let monitor = records
        .attach(Monitor::builder().max_event_bytes(256))
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/bad",
            get(|| async {
                let mut body = String::new();
                body.push_str("data: {\"choices\":[{\"delta\":{\"content\":\"ok\"}}]}\n\n");
                body.push_str("data: {not json\n\n");
                body.push_str(&format!(
                    "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{}\"}}}}]}}\n\n",
                    "x".repeat(1000)
                ));
                body.push_str("data: \u{fffd}\u{0}\n\n");
                body.push_str("data: {\"choices\":[{\"delta\":{\"content\":\"ok\"}}]}\n\n");
                let mut bytes = body.into_bytes();
                bytes.extend_from_slice(
                    b"data: {\"choices\":[{\"delta\":{\"content\":\"\xff\xfe\"}}]}\n\n",
                );
                ([(header::CONTENT_TYPE, "text/event-stream")], bytes)
            }),
        )
        .layer(monitor.layer());
    let addr = serve(app).await;
    client()
        .get(format!("http://{addr}/bad"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let r = records.one().await;
    assert_eq!(r.outcome, Outcome::Ok);
    assert_eq!(r.output_tokens, 2);
    assert_eq!(r.oversized_events, 1);
    assert_eq!(
        r.malformed_events, 2,
        "the broken JSON and the content with invalid UTF-8"
    );
}

/// tower-http's `TimeoutBody` inside the monitor: its `TimeoutError` mid-stream is a `timeout`.
#[tokio::test]
async fn tower_http_body_timeout_is_a_timeout() {
    let records = Records::default();
    let monitor = records.attach(Monitor::builder()).build().unwrap();
    let app = Router::new()
        .route(
            "/stall",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    stalling_sse(1),
                )
            }),
        )
        .layer(tower::ServiceBuilder::new().layer(monitor.layer()).layer(
            tower_http::timeout::ResponseBodyTimeoutLayer::new(Duration::from_millis(150)),
        ));
    let addr = serve(app).await;
    let res = client()
        .get(format!("http://{addr}/stall"))
        .send()
        .await
        .unwrap();
    assert!(res.bytes().await.is_err(), "the body errors out");
    let r = records.one().await;
    assert_eq!(r.outcome, Outcome::Timeout);
    assert_eq!(r.output_tokens, 1);
}

/// The user id comes from the `UserId` request extension the app's auth sets, whatever header
/// the client sends (its `x-user-id` is the client's word, not the app's).
#[tokio::test]
async fn user_id_from_request_extension() {
    let records = Records::default();
    let monitor = records.attach(Monitor::builder()).build().unwrap();
    let app = Router::new()
        .route("/v1/chat", post(|| async { "ok" }))
        .layer(monitor.layer())
        .layer(axum::middleware::from_fn(
            |mut req: axum::extract::Request, next: axum::middleware::Next| async move {
                req.extensions_mut()
                    .insert(tower_stream_monitor::UserId("user-from-auth".into()));
                next.run(req).await
            },
        ));
    let addr = serve(app).await;
    client()
        .post(format!("http://{addr}/v1/chat"))
        .send()
        .await
        .unwrap();
    client()
        .post(format!("http://{addr}/v1/chat"))
        .header("x-user-id", "user-from-header")
        .send()
        .await
        .unwrap();
    let got = records.wait_for(2).await;
    for r in &got {
        assert_eq!(r.user_id.as_deref(), Some("user-from-auth"));
        assert!(!r.user_id_from_header);
    }
}

/// A service whose `call` itself panics (before any future exists) is still recorded once.
#[test]
fn panic_in_call_is_recorded() {
    use tower::{Layer, Service};
    let records = Records::default();
    let monitor = records.attach(Monitor::builder()).build().unwrap();
    let mut service =
        monitor.layer().layer(
            tower::service_fn(
                |_: http::Request<()>| -> std::future::Ready<
                    Result<http::Response<String>, std::convert::Infallible>,
                > { panic!("bug in call") },
            ),
        );
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drop(service.call(http::Request::new(())));
    }));
    assert!(result.is_err());
    let got = records.snapshot();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].outcome, Outcome::ServerError);
    assert_eq!(monitor.in_flight(), 0);
}

/// A `Buf` in two pieces (not `Bytes`): the parser still sees every byte.
#[test]
fn non_contiguous_data_is_parsed_whole() {
    use bytes::Buf;
    use http_body::Body as _;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};
    use tower::{Layer, Service};

    struct TwoPieces(Bytes, Bytes);
    impl Buf for TwoPieces {
        fn remaining(&self) -> usize {
            self.0.len() + self.1.len()
        }
        fn chunk(&self) -> &[u8] {
            if self.0.is_empty() { &self.1 } else { &self.0 }
        }
        fn advance(&mut self, mut n: usize) {
            let first = n.min(self.0.len());
            self.0.advance(first);
            n -= first;
            self.1.advance(n);
        }
    }
    impl From<Bytes> for TwoPieces {
        fn from(b: Bytes) -> Self {
            TwoPieces(b, Bytes::new())
        }
    }
    let event = b"data: {\"choices\":[{\"delta\":{\"content\":\"split\"}}]}\n\n";
    let frames: Vec<Result<http_body::Frame<TwoPieces>, std::convert::Infallible>> = (0..3)
        .map(|_| {
            let (a, b) = event.split_at(17);
            Ok(http_body::Frame::data(TwoPieces(
                Bytes::from_static(a),
                Bytes::from_static(b),
            )))
        })
        .collect();
    let records = Records::default();
    let monitor = records.attach(Monitor::builder()).build().unwrap();
    let mut slot = Some(http_body_util::StreamBody::new(futures_util::stream::iter(
        frames,
    )));
    let mut service = monitor
        .layer()
        .layer(tower::service_fn(move |_: http::Request<()>| {
            let mut response = http::Response::new(slot.take().expect("called once"));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/event-stream"),
            );
            std::future::ready(Ok::<_, std::convert::Infallible>(response))
        }));
    let mut cx = Context::from_waker(Waker::noop());
    let mut future = Box::pin(service.call(http::Request::new(())));
    let Poll::Ready(Ok(response)) = future.as_mut().poll(&mut cx) else {
        panic!("ready at once")
    };
    let mut body = response.into_body();
    let mut received = Vec::new();
    while let Poll::Ready(Some(frame)) = Pin::new(&mut body).poll_frame(&mut cx) {
        let mut data = frame.unwrap().into_data().ok().unwrap();
        while data.has_remaining() {
            let chunk = data.chunk().to_vec();
            data.advance(chunk.len());
            received.extend(chunk);
        }
    }
    assert_eq!(received, event.repeat(3), "the body passes through whole");
    let r = &records.snapshot()[0];
    assert_eq!(
        (r.output_tokens, r.outcome, r.bytes),
        (3, Outcome::Ok, 3 * event.len() as u64)
    );
}

/// A stream cut upstream that the app ends cleanly (a proxy that stops relaying when its
/// provider connection drops) is `ok` but `unfinished`, in every provider format; the whole
/// stream keeps the finish reason it gave, and a body in no known format has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ended_before_its_finish_reason_is_unfinished() {
    let cases = [
        ("openai-chat", FinishReason::Stop),
        ("openai-responses", FinishReason::Stop),
        ("anthropic-messages", FinishReason::Stop),
        ("gemini", FinishReason::Stop),
        ("cohere-chat", FinishReason::Stop),
        ("openai-chat-tool-calls", FinishReason::ToolCalls),
    ];
    let records = Records::default();
    let monitor = records.attach(Monitor::builder()).build().unwrap();
    let app = Router::new()
        .route(
            "/{name}/{part}",
            get(
                |axum::extract::Path((name, part)): axum::extract::Path<(String, String)>| async move {
                    let body = fixture(&format!("{name}.sse"));
                    let events = split_events(&body);
                    // The first half of the events: content, but no finish reason yet.
                    let keep = if part == "cut" { events.len() / 2 } else { events.len() };
                    (
                        StreamLabels::new("sim"),
                        [(header::CONTENT_TYPE, "text/event-stream")],
                        Body::from(events[..keep].concat()),
                    )
                },
            ),
        )
        .route(
            "/text",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    "data: plain words, no provider\n\n",
                )
            }),
        );
    let addr = serve(app.layer(monitor.layer())).await;
    let client = client();
    let fetch = |path: String| {
        let client = client.clone();
        async move {
            let res = client
                .get(format!("http://{addr}{path}"))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::OK, "{path}");
            res.bytes().await.unwrap();
        }
    };
    let mut fetched = 0;
    for (name, whole) in cases {
        for (part, finish) in [("cut", FinishReason::Unfinished), ("whole", whole)] {
            fetch(format!("/{name}/{part}")).await;
            fetched += 1;
            let r = records.wait_for(fetched).await.pop().unwrap();
            assert_eq!(r.outcome, Outcome::Ok, "{name} {part}");
            assert_ne!(r.format, ProviderFormat::Unknown, "{name} {part}");
            assert!(r.output_tokens > 0, "{name} {part}: cut after content");
            assert_eq!(r.finish_reason, Some(finish), "{name} {part}");
        }
    }
    fetch("/text".into()).await;
    let r = records.wait_for(fetched + 1).await.pop().unwrap();
    assert_eq!(
        (r.outcome, r.format, r.finish_reason),
        (Outcome::Ok, ProviderFormat::Unknown, None)
    );

    // Counted where operators look: the windows and the Prometheus series.
    let metrics = get_json(&client, &format!("http://{addr}/monitoring/metrics")).await;
    let reasons = &metrics["data"]["streaming_5min"]["finish_reasons"];
    assert_eq!(reasons["unfinished"], cases.len(), "{reasons}");
    assert_eq!(reasons["stop"], cases.len() - 1, "{reasons}");
    let scrape = get_text(
        &client,
        &format!("http://{addr}/monitoring/metrics/prometheus"),
    )
    .await;
    let unfinished: u64 = scrape
        .lines()
        .filter(|l| {
            l.starts_with("stream_monitor_finish_reasons_total{")
                && l.contains("finish_reason=\"unfinished\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(unfinished, cases.len() as u64, "{scrape}");
}

/// A body that ended takes its stream deadline's sleep out of the timer wheel: a consumer
/// that keeps the ended body is not woken at the deadline.
#[tokio::test(start_paused = true)]
async fn an_ended_body_is_not_woken_at_its_deadline() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake, Waker};

    use http_body::Body as _;
    use tower::{Layer, ServiceExt};

    struct Wakes(AtomicUsize);
    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let (records, monitor) = recorded(Monitor::builder().stream_timeout(Duration::from_secs(2)));
    let inner = tower::service_fn(|_: http::Request<()>| async {
        let frames = futures_util::stream::once(async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from_static(b"hello")))
        });
        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::StreamBody::new(
            frames,
        )))
    });
    let response = monitor
        .layer()
        .layer(inner)
        .oneshot(http::Request::new(()))
        .await
        .unwrap();
    let mut body = std::pin::pin!(response.into_body());
    let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
    let waker = Waker::from(wakes.clone());
    let mut cx = Context::from_waker(&waker);
    // The body waits (its deadline's sleep armed), then gives its frame, then ends.
    assert!(body.as_mut().poll_frame(&mut cx).is_pending());
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(matches!(
        body.as_mut().poll_frame(&mut cx),
        Poll::Ready(Some(Ok(_)))
    ));
    assert!(matches!(
        body.as_mut().poll_frame(&mut cx),
        Poll::Ready(None)
    ));
    assert_eq!(records.wait_for(1).await[0].outcome, Outcome::Ok);
    let before = wakes.0.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        wakes.0.load(Ordering::SeqCst),
        before,
        "woken after its end"
    );
}

/// A stream whose length was announced (an exact size hint, as a `Content-Length` gives) is
/// cut by the deadline without the closing `event: error`, whose bytes would overrun that
/// length: the body ends with the timeout's error alone.
#[tokio::test(start_paused = true)]
async fn a_stream_of_announced_length_is_cut_without_an_error_event() {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use http_body::{Body as _, Frame, SizeHint};
    use http_body_util::BodyExt as _;
    use tower::{Layer, ServiceExt};

    /// One event, then nothing, its length said to be 1,000 bytes.
    struct Announced(bool);
    impl http_body::Body for Announced {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if std::mem::replace(&mut self.0, true) {
                return Poll::Pending;
            }
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n",
            )))))
        }
        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(1000)
        }
    }
    let (records, monitor) = recorded(Monitor::builder().stream_timeout(Duration::from_secs(1)));
    let inner = tower::service_fn(|_: http::Request<()>| async {
        let mut response = http::Response::new(Announced(false));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
        Ok::<_, std::convert::Infallible>(response)
    });
    let response = monitor
        .layer()
        .layer(inner)
        .oneshot(http::Request::new(()))
        .await
        .unwrap();
    let mut body = response.into_body();
    assert!(body.size_hint().exact().is_some());
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    let end = body.frame().await.expect("the body ends with its error");
    assert!(end.is_err(), "no appended event: {end:?}");
    assert_eq!(records.wait_for(1).await[0].outcome, Outcome::Timeout);
}
