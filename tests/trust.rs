//! What a client alone controls (path, method, headers, query, its own credentials to the app)
//! never moves health nor grows memory; what the upstream does always shows. Each test
//! reproduces one way the numbers could be moved, blinded or grown, and shows it closed.

mod common;

use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use common::{Records, client, monitored, recorded, serve};
use serde_json::Value;
use tower_stream_monitor::window::ManualClock;
use tower_stream_monitor::{Monitor, Outcome, StreamLabels, StreamRecord};

const PREFIX: &str = "/monitoring";

fn chat_sse(tokens: usize) -> String {
    let mut body = String::new();
    for i in 0..tokens {
        body.push_str(&format!(
            "data: {{\"model\":\"gpt-4o-mini\",\"choices\":[{{\"delta\":{{\"content\":\"t{i}\"}}}}]}}\n\n"
        ));
    }
    body.push_str("data: [DONE]\n\n");
    body
}

/// A handler that names its upstream, as the README says handlers should.
async fn real_stream() -> axum::response::Response {
    (
        StreamLabels::new("openai").with_model("gpt-4o-mini"),
        [(header::CONTENT_TYPE, "text/event-stream")],
        chat_sse(3),
    )
        .into_response()
}

/// Sends a request and reads its whole answer.
async fn drain(request: reqwest::RequestBuilder) {
    request
        .send()
        .await
        .expect("the server answers")
        .bytes()
        .await
        .expect("the body arrives");
}

/// A connection on which `request` (a head, and a body that may stop short) has been sent.
async fn send_raw(addr: std::net::SocketAddr, request: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket.write_all(request).await.unwrap();
    socket
}

/// `router` served with the stream timeout set to `ms` milliseconds.
async fn with_deadline(ms: u64, router: Router) -> (Records, Monitor, std::net::SocketAddr) {
    monitored(
        Monitor::builder().stream_timeout(Duration::from_millis(ms)),
        router,
    )
    .await
}

async fn health(addr: std::net::SocketAddr) -> (u16, Value) {
    let res = client()
        .get(format!("http://{addr}{PREFIX}/health"))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

async fn metrics(addr: std::net::SocketAddr) -> Value {
    client()
        .get(format!("http://{addr}{PREFIX}/metrics"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Item 4: anonymous requests to paths that do not exist (or with a wrong method), even asking
/// for a stream, are counted apart and never feed health.
#[tokio::test]
async fn unrouted_requests_never_move_health() {
    let (records, monitor, addr) = monitored(
        Monitor::builder().min_samples(5),
        Router::new().route("/v1/chat/completions", post(real_stream)),
    )
    .await;
    for i in 0..40 {
        let req = if i % 2 == 0 {
            client().get(format!("http://{addr}/does-not-exist/{i}"))
        } else {
            // 405: the route exists, the method does not.
            client().get(format!("http://{addr}/v1/chat/completions"))
        };
        let res = req
            .header(header::ACCEPT, "text/event-stream")
            .header("x-llm-provider", format!("junk-{i}"))
            .send()
            .await
            .unwrap();
        assert!(matches!(res.status().as_u16(), 404 | 405));
        res.bytes().await.unwrap();
    }
    let got = records.wait_for(40).await;
    assert!(got.iter().all(StreamRecord::is_unrouted), "{got:#?}");
    assert!(got.iter().all(|r| &*r.provider == "unknown"));
    assert_eq!(monitor.unrouted(), 40);
    let (status, body) = health(addr).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("unknown")));
    let m = metrics(addr).await;
    assert_eq!(m["data"]["requests_5min"]["unrouted_requests"], 40);
    assert_eq!(m["data"]["requests_5min"]["total_requests"], 0);
    assert_eq!(m["data"]["streaming_5min"]["total_streaming_requests"], 0);
    assert!(
        m["data"]["streaming_by_provider"]
            .as_object()
            .unwrap()
            .is_empty()
    );
    let scrape = monitor.render_prometheus();
    assert!(scrape.contains("stream_monitor_unrouted_requests_total 40"));
    assert!(!scrape.contains("junk-"), "no series for junk labels");
}

/// Client-caused outcomes (a 400 for a bad body, a cancel) never push the error rate.
#[tokio::test]
async fn client_errors_never_move_the_error_rate() {
    let (records, _monitor, addr) = monitored(
        Monitor::builder().min_samples(5),
        Router::new().route(
            "/v1/chat/completions",
            post(|body: String| async move {
                if body.starts_with('{') {
                    real_stream().await
                } else {
                    (
                        StatusCode::BAD_REQUEST,
                        StreamLabels::new("openai"),
                        [(header::CONTENT_TYPE, "text/event-stream")],
                        "",
                    )
                        .into_response()
                }
            }),
        ),
    )
    .await;
    for i in 0..30 {
        let body = if i < 25 { "garbage" } else { "{}" };
        drain(
            client()
                .post(format!("http://{addr}/v1/chat/completions"))
                .header(header::ACCEPT, "text/event-stream")
                .body(body),
        )
        .await;
    }
    records.wait_for(30).await;
    let (_, body) = health(addr).await;
    // Only the 5 real streams are judged, and they are fine.
    assert_eq!(body["status"], "healthy", "{body:#}");
    let m = metrics(addr).await;
    let w = &m["data"]["streaming_5min"];
    assert_eq!(w["total_streaming_requests"], 30);
    assert_eq!(w["by_outcome"]["client_error"], 25);
    assert_eq!(w["streaming_errors"], 0);
    assert_eq!(w["streaming_error_rate"], 0.0);
}

/// The README's advice: the app's own auth goes outside the monitor layer, so its rejections
/// of clients never look like the upstream rejecting the app's key.
#[tokio::test]
async fn app_auth_outside_the_layer_keeps_rejections_out() {
    use axum::middleware::{Next, from_fn};
    async fn app_auth(req: axum::extract::Request, next: Next) -> axum::response::Response {
        if req
            .headers()
            .get("x-app-key")
            .is_some_and(|v| v == "let-me-in")
        {
            next.run(req).await
        } else {
            StatusCode::UNAUTHORIZED.into_response()
        }
    }
    let records = Records::default();
    let monitor = records
        .attach(Monitor::builder().min_samples(5))
        .build()
        .unwrap();
    let app = Router::new()
        .route("/v1/chat/completions", post(real_stream))
        .layer(monitor.layer())
        // `route_layer` after `layer`: auth runs first on the app's routes only, so the
        // monitoring endpoints (served by the monitor layer on unmatched paths) stay reachable.
        .route_layer(from_fn(app_auth));
    let addr = serve(app).await;
    for _ in 0..30 {
        let res = client()
            .post(format!("http://{addr}/v1/chat/completions"))
            .header(header::ACCEPT, "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
    }
    let res = client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("x-app-key", "let-me-in")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.bytes().await.unwrap();
    let r = records.one().await;
    assert_eq!((r.outcome, &*r.provider), (Outcome::Ok, "openai"));
    assert_eq!(monitor.recorded(Outcome::AuthError), 0);
    let (status, body) = health(addr).await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["triggers"][0]["samples"], 1);
}

/// Items 2 and 3: distinct header values cannot grow the series past the budget, and junk
/// headers cannot push a provider or model the handler names into `other`.
#[tokio::test]
async fn junk_headers_neither_explode_nor_poison_labels() {
    let (records, monitor, addr) = monitored(
        Monitor::builder().max_label_sets(10),
        Router::new()
            .route("/v1/chat/completions", post(real_stream))
            .route("/echo", post(|| async { "ok" })),
    )
    .await;
    for i in 0..200 {
        drain(
            client()
                .post(format!("http://{addr}/echo"))
                .header("x-llm-provider", format!("p{i}"))
                .header("x-llm-model", format!("m{i}")),
        )
        .await;
    }
    // The handler names its upstream: the header values (junk) are never interned.
    for i in 0..70 {
        drain(
            client()
                .post(format!("http://{addr}/v1/chat/completions"))
                .header("x-llm-provider", format!("junk{i}"))
                .header("x-llm-model", format!("junk{i}")),
        )
        .await;
    }
    let got = records.wait_for(270).await;
    let last = got.last().unwrap();
    assert_eq!((&*last.provider, &*last.model), ("openai", "gpt-4o-mini"));
    assert!(
        got[200..]
            .iter()
            .all(|r| &*r.provider == "openai" && &*r.model == "gpt-4o-mini")
    );
    // A header naming the real provider makes a label set of the client's choosing: the junk
    // spent the headers' quarter of the label sets, so it folds into `other` too, and the
    // app's own sets keep their room.
    drain(
        client()
            .post(format!("http://{addr}/echo"))
            .header("x-llm-provider", "openai"),
    )
    .await;
    let got = records.wait_for(271).await;
    assert_eq!(&*got[270].provider, "other");

    let scrape = monitor.render_prometheus();
    let label_sets: std::collections::HashSet<&str> = scrape
        .lines()
        .filter(|l| l.starts_with("stream_monitor_response_bytes_count{"))
        .collect();
    assert!(
        label_sets.len() <= 11,
        "{} label sets: {scrape}",
        label_sets.len()
    );
    assert!(scrape.contains("stream_monitor_label_overflow_total{label=\"series\"}"));
    assert!(monitor.label_overflows() > 0);
}

/// Item 5: the official SDKs ask for a stream in the JSON body with `Accept: application/json`.
/// Failures before the first byte still count as streaming, in the window and the triggers.
#[tokio::test]
async fn sdk_shaped_streaming_failures_count() {
    let (records, _monitor, addr) = monitored(
        Monitor::builder().min_samples(10),
        Router::new().route(
            "/v1/chat/completions",
            post(|headers: axum::http::HeaderMap, _body: String| async move {
                let status = headers
                    .get("x-upstream-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u16>().ok())
                    .unwrap_or(200);
                if status == 200 {
                    return real_stream().await;
                }
                let error = serde_json::json!({"error": {"type": "server_error", "message": "upstream says no"}});
                (
                    StatusCode::from_u16(status).unwrap(),
                    StreamLabels::new("openai"),
                    axum::Json(error),
                )
                    .into_response()
            }),
        ),
    )
    .await;
    let sdk_body =
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    for (status, n) in [(200, 30), (500, 30), (429, 30), (504, 10)] {
        for _ in 0..n {
            drain(
                client()
                    .post(format!("http://{addr}/v1/chat/completions"))
                    .header(header::ACCEPT, "application/json")
                    .header(header::CONTENT_TYPE, "application/json")
                    .header("x-upstream-status", status.to_string())
                    .body(sdk_body),
            )
            .await;
        }
    }
    let got = records.wait_for(100).await;
    assert!(got.iter().all(|r| r.streaming), "every SDK request streams");
    let m = metrics(addr).await;
    let w = &m["data"]["streaming_5min"];
    assert_eq!(w["total_streaming_requests"], 100);
    assert_eq!(w["streaming_errors"], 70);
    assert_eq!(w["timeouts"], 10);
    let (status, body) = health(addr).await;
    assert_eq!(status, 503, "{body:#}");
    let timeout_trigger = body["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "timeout_rate")
        .unwrap();
    assert_eq!(timeout_trigger["samples"], 100);
    assert_eq!(timeout_trigger["value"], 10.0);

    // The same request with `"stream": false` is not a streaming request.
    drain(
        client()
            .post(format!("http://{addr}/v1/chat/completions"))
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-upstream-status", "500")
            .body(r#"{"model":"gpt-4o-mini","stream":false}"#),
    )
    .await;
    let got = records.wait_for(101).await;
    assert!(!got[100].streaming);
}

/// Item 8: the windows place records by a monotonic clock; stepping the wall clock back
/// neither empties them nor destroys slots.
#[test]
fn wall_clock_steps_do_not_move_the_windows() {
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let monitor = Monitor::builder().clock(clock.clone()).build().unwrap();
    let streaming = |n: u64| {
        let mut r = StreamRecord::new("openai", "m", "/r", Outcome::Ok);
        r.streaming = true;
        r.output_tokens = n;
        r
    };
    monitor.ingest(streaming(1));
    clock.advance(Duration::from_secs(20));
    clock.set(UNIX_EPOCH + Duration::from_secs(1_800_000_000 - 60));
    monitor.ingest(streaming(2));
    let s = monitor.snapshot();
    assert_eq!(s.streaming_5min.total_streaming_requests, 2);
    clock.set(UNIX_EPOCH + Duration::from_secs(1_800_000_000 - 300));
    monitor.ingest(streaming(4));
    let s = monitor.snapshot();
    assert_eq!(s.streaming_5min.total_streaming_requests, 3);
    assert_eq!(s.streaming_5min.total_tokens, 7);
    assert_eq!(s.streaming_1hour.total_streaming_requests, 3);
    // Time itself still moves the windows on.
    clock.advance(Duration::from_secs(301));
    assert_eq!(
        monitor.snapshot().streaming_5min.total_streaming_requests,
        0
    );
    assert_eq!(monitor.snapshot().streaming_1hour.total_tokens, 7);
}

/// Token totals never wrap on hostile usage figures: each figure is capped (at 2^50) before
/// it is counted, so four of `u64::MAX` sum to exactly four caps, where wrapping sums would
/// read `u64::MAX - 3`.
#[test]
fn hostile_usage_figures_do_not_wrap() {
    let monitor = Monitor::builder().build().unwrap();
    for _ in 0..4 {
        let mut r = StreamRecord::new("openai", "m", "/r", Outcome::Ok);
        r.streaming = true;
        r.output_tokens = u64::MAX;
        r.input_tokens = Some(u64::MAX);
        monitor.ingest(r);
    }
    let w = monitor.snapshot().streaming_5min;
    assert_eq!(w.total_tokens, 4 << 50);
    assert_eq!(w.input_tokens, 4 << 50);
    assert!(
        monitor
            .render_prometheus()
            .contains("gen_ai_client_token_usage")
    );
}

/// A monitor given 21 streaming `ok` records that `fill` completes: the first odd (`true`),
/// twenty usual.
fn one_odd_of_21(fill: impl Fn(&mut StreamRecord, bool)) -> Monitor {
    let monitor = Monitor::builder().build().unwrap();
    for i in 0..21 {
        let mut r = StreamRecord::new("openai", "m", "/r", Outcome::Ok);
        r.streaming = true;
        fill(&mut r, i == 0);
        monitor.ingest(r);
    }
    monitor
}

/// The tokens/s check of `monitor`'s `/health`.
fn tokens_per_second_check(monitor: &Monitor) -> tower_stream_monitor::health::Check {
    monitor
        .health()
        .checks
        .into_iter()
        .find(|c| c.name == "streaming_tokens_per_second")
        .unwrap()
}

/// Streams their clients failed (`client_error`) add no latency sample: a thousand fast first
/// tokens of such streams (an app that streams an upload back, the uploads cut) leave a slow
/// upstream's first-token p95, its check, the tokens/s figures and the first-token histogram
/// as they were; the streams themselves are counted.
#[test]
fn streams_their_clients_failed_add_no_latency_sample() {
    use tower_stream_monitor::health::HealthStatus;
    let monitor = Monitor::builder().min_samples(5).build().unwrap();
    let stream = |outcome, ttft_ms: u64, tps: f64| {
        let mut r = StreamRecord::new("openai", "m", "/r", outcome);
        r.streaming = true;
        r.time_to_first_token = Some(Duration::from_millis(ttft_ms));
        r.tokens_per_second = Some(tps);
        r.output_tokens = 10;
        r
    };
    let first_token_histogram_count = |monitor: &Monitor| -> u64 {
        monitor
            .render_prometheus()
            .lines()
            .filter(|l| l.starts_with("gen_ai_server_time_to_first_token_seconds_count{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
            .sum()
    };
    for _ in 0..10 {
        monitor.ingest(stream(Outcome::Ok, 8_000, 5.0));
    }
    for _ in 0..1_000 {
        monitor.ingest(stream(Outcome::ClientError, 1, 5_000.0));
    }
    let w = monitor.snapshot().streaming_5min;
    assert_eq!(w.total_streaming_requests, 1_010);
    assert_eq!(w.avg_first_token_latency_ms, 8_000.0, "{w:?}");
    // The sketch's quantiles are within 1%.
    assert!((w.first_token_p95_ms - 8_000.0).abs() <= 80.0, "{w:?}");
    assert_eq!(w.avg_tokens_per_second, 5.0, "{w:?}");
    let check = monitor
        .health()
        .checks
        .into_iter()
        .find(|c| c.name == "streaming_first_token")
        .unwrap();
    assert_eq!(check.status, HealthStatus::Critical, "{check:?}");
    assert_eq!(first_token_histogram_count(&monitor), 10);
}

/// One absurd figure (an upstream's usage of 2^50 tokens, so a rate of 10^15 tokens a second,
/// or a time of `Duration::MAX` in a record built by hand) moves no median: the quantiles of
/// every other stream stay theirs.
#[test]
fn one_absurd_figure_moves_no_median() {
    let monitor = one_odd_of_21(|r, odd| {
        let pick = |odd_one: Duration, usual: Duration| if odd { odd_one } else { usual };
        r.output_tokens = if odd { 1 << 50 } else { 100 };
        r.tokens_per_second = Some(if odd { 1e15 } else { 5.6 });
        r.time_to_first_token = Some(pick(Duration::MAX, Duration::from_millis(50)));
        r.time_per_output_token = Some(pick(Duration::MAX, Duration::from_millis(20)));
        r.duration = pick(Duration::MAX, Duration::from_secs(1));
    });
    let w = monitor.snapshot().streaming_5min;
    assert!((w.tokens_per_second_p50 - 5.6).abs() < 0.06, "{w:?}");
    assert!((w.output_tokens_p50 - 100.0).abs() < 1.0, "{w:?}");
    assert!((w.first_token_p50_ms - 50.0).abs() < 0.5, "{w:?}");
    let check = tokens_per_second_check(&monitor);
    assert_eq!(
        check.status,
        tower_stream_monitor::health::HealthStatus::Critical,
        "{check:?}"
    );
}

/// A rate that is no positive number, in a record built by hand, is taken as none: the
/// windows' tokens/s figures and the check stay those of the other streams.
#[test]
fn records_with_absurd_rates_do_not_poison_tokens_per_second() {
    for absurd in [0.0, -3.0, f64::NAN, f64::INFINITY] {
        let monitor = one_odd_of_21(|r, odd| {
            r.output_tokens = 10;
            r.tokens_per_second = Some(if odd { absurd } else { 40.0 });
        });
        let w = monitor.snapshot().streaming_5min;
        // The quantiles are within 1% (README, Memory).
        let near = |x: f64| (x - 40.0).abs() < 0.4;
        assert!(
            (w.avg_tokens_per_second - 40.0).abs() < 1e-9,
            "{absurd}: {w:?}"
        );
        assert!(near(w.tokens_per_second_p50), "{absurd}: {w:?}");
        let check = tokens_per_second_check(&monitor);
        assert!(near(check.value), "{absurd}: {check:?}");
    }
}

/// Item 9: hostile usage figures in an upstream's stream are capped as the layer records them,
/// as they are for records given to `ingest` (above).
#[tokio::test]
async fn hostile_usage_in_a_stream_is_capped() {
    async fn hostile() -> axum::response::Response {
        let usage = format!(
            "data: {{\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{{\"prompt_tokens\":{max},\"completion_tokens\":{max},\"total_tokens\":{max}}}}}\n\ndata: [DONE]\n\n",
            max = u64::MAX
        );
        // The tokens, then the usage later: time to generate in between, so that there is a rate.
        let frames = futures_util::stream::unfold(0, move |i| {
            let usage = usage.clone();
            async move {
                let frame = match i {
                    0 => chat_sse(2).replace("data: [DONE]\n\n", ""),
                    1 => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        usage
                    }
                    _ => return None,
                };
                Some((Ok::<_, std::convert::Infallible>(frame), i + 1))
            }
        });
        openai_sse(frames)
    }
    let app = Router::new().route("/v1/chat/completions", post(hostile));
    let (records, _monitor, addr) = monitored(Monitor::builder(), app).await;
    drain(client().post(format!("http://{addr}/v1/chat/completions"))).await;
    let record = records.wait_for(1).await.remove(0);
    assert_eq!(record.output_tokens, 1 << 50);
    assert_eq!(record.input_tokens, Some(1 << 50));
    // The rates are worked out from the capped figure, as the record shows it: over a time to
    // generate of at least the upstream's 20 ms pause (the reader's time left out, at most the
    // wall time after the first token), never from u64::MAX.
    let wall = record.duration - record.time_to_first_token.expect("a first token");
    let rate = record.tokens_per_second.expect("a rate");
    let capped = |over: Duration| (1u64 << 50) as f64 / over.as_secs_f64();
    assert!(
        capped(wall) * 0.99 <= rate && rate <= capped(Duration::from_millis(20)) * 1.01,
        "{rate} against {} to {}",
        capped(wall),
        capped(Duration::from_millis(20))
    );
}

/// Item 9: a HEAD request is an `ok`, non-streaming request with no first token.
#[tokio::test]
async fn head_requests_are_ok() {
    let (records, _monitor, addr) = monitored(
        Monitor::builder(),
        Router::new().route("/v1/stream", get(real_stream)),
    )
    .await;
    let res = client()
        .head(format!("http://{addr}/v1/stream"))
        .header(header::ACCEPT, "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let r = records.one().await;
    assert_eq!(r.outcome, Outcome::Ok);
    assert!(!r.streaming);
    assert_eq!(r.time_to_first_token, None);
}

/// A 204 or a 304 carries no body whatever its handler gave it (hyper drops the body unread):
/// the request is `ok` when its headers are sent, not `cancelled` when the body is dropped.
#[tokio::test]
async fn no_content_and_not_modified_with_a_body_are_ok() {
    async fn bodied(
        axum::extract::Path(code): axum::extract::Path<u16>,
    ) -> axum::response::Response {
        let status = StatusCode::from_u16(code).unwrap();
        (
            status,
            [(header::ETAG, "\"v1\"")],
            "a body the status forbids",
        )
            .into_response()
    }
    let (records, _monitor, addr) = monitored(
        Monitor::builder(),
        Router::new().route("/v1/status/{code}", get(bodied)),
    )
    .await;
    for code in [204u16, 304] {
        let res = client()
            .get(format!("http://{addr}/v1/status/{code}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), code);
        assert!(res.bytes().await.unwrap().is_empty());
    }
    let records = records.wait_for(2).await;
    for r in &records {
        assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.status);
        assert!(!r.streaming);
    }
}

/// A compressed body is never parsed as SSE: with compression inside the monitor layer the
/// stream is measured for time and bytes and marked; with compression outside (the README's
/// order) every token is counted.
#[tokio::test]
async fn compression_inside_is_measured_not_parsed() {
    use tower_http::compression::CompressionLayer;
    use tower_http::compression::predicate::SizeAbove;
    // tower-http's default predicate leaves `text/event-stream` alone; an app may not.
    let compression = || CompressionLayer::new().compress_when(SizeAbove::new(0));
    let route = || Router::new().route("/v1/chat/completions", post(real_stream));
    for inside in [true, false] {
        let records = Records::default();
        let monitor = records.attach(Monitor::builder()).build().unwrap();
        let app = if inside {
            route().layer(compression()).layer(monitor.layer())
        } else {
            route().layer(monitor.layer()).layer(compression())
        };
        let addr = serve(app).await;
        let res = client()
            .post(format!("http://{addr}/v1/chat/completions"))
            .header(header::ACCEPT_ENCODING, "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.headers()
                .get(header::CONTENT_ENCODING)
                .map(|v| v.as_bytes()),
            Some(&b"gzip"[..])
        );
        res.bytes().await.unwrap();
        let r = records.one().await;
        assert_eq!(r.outcome, Outcome::Ok);
        assert!(r.streaming);
        assert!(r.bytes > 0);
        if inside {
            assert!(r.content_encoded);
            assert_eq!(r.output_tokens, 0, "compressed bytes are not parsed");
            assert_eq!(r.malformed_events, 0);
        } else {
            assert!(!r.content_encoded);
            assert_eq!(r.output_tokens, 3);
            assert_eq!(&*r.model, "gpt-4o-mini");
        }
    }
}

/// A client that never finishes sending its request body, to a handler that reads it, keeps the
/// handler waiting past the stream timeout: that is the client's doing, however late its last
/// bytes came. The monitor answers
/// 408 and records `client_error`, which never counts in `/health`. A handler that waits past
/// the timeout for anything else (its upstream) is still a `timeout` and fires the trigger.
#[tokio::test]
async fn a_request_body_that_never_arrives_is_not_an_upstream_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (records, _monitor, addr) = monitored(
        Monitor::builder()
            .min_samples(5)
            .stream_timeout(Duration::from_millis(600)),
        Router::new()
            .route(
                "/v1/chat/completions",
                post(|body: String| async move {
                    let _ = body;
                    real_stream().await
                }),
            )
            .route(
                "/v1/hung",
                post(|body: String| async move {
                    let _ = body;
                    // The upstream never answers.
                    std::future::pending::<()>().await;
                    real_stream().await
                }),
            ),
    )
    .await;
    let status_line = |answer: &[u8]| {
        String::from_utf8_lossy(answer)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    for i in 0..6 {
        // `Content-Length: 100`, and 15 bytes of it: the rest never comes.
        let mut socket = send_raw(
            addr,
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\
              content-type: application/json\r\ncontent-length: 100\r\n\r\n{\"stream\": true",
        )
        .await;
        if i % 2 == 1 {
            // Two more bytes late in the request, then nothing: held all the same. (On a
            // machine so busy that the deadline passed first, the server may have closed the
            // connection: the answer is the same.)
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = socket.write_all(b", ").await;
        }
        let mut answer = vec![0; 1024];
        let n = socket.read(&mut answer).await.unwrap();
        assert_eq!(
            status_line(&answer[..n]),
            "HTTP/1.1 408 Request Timeout",
            "{}",
            String::from_utf8_lossy(&answer[..n])
        );
    }
    let got = records.wait_for(6).await;
    assert!(
        got.iter().all(|r| r.outcome == Outcome::ClientError),
        "{got:#?}"
    );
    let (status, body) = health(addr).await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["status"], "unknown", "client-caused: no samples");

    // The same timeout while the handler waits for its upstream, the body read whole.
    for _ in 0..6 {
        let answer = client()
            .post(format!("http://{addr}/v1/hung"))
            .header(header::ACCEPT, "text/event-stream")
            .header(header::CONTENT_TYPE, "application/json")
            .body(r#"{"stream": true}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::GATEWAY_TIMEOUT);
    }
    let got = records.wait_for(12).await;
    assert!(
        got[6..]
            .iter()
            .all(|r| r.outcome == Outcome::Timeout && r.streaming)
    );
    let (status, body) = health(addr).await;
    assert_eq!(status, 503, "{body:#}");
    let timeout_trigger = body["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "timeout_rate")
        .unwrap();
    assert_eq!(timeout_trigger["fired"], true);
}

/// A client's `Accept: text/event-stream` does not choose which requests are streaming ones:
/// the response does. Sent with 200 requests to a plain route, it no longer thins out an
/// upstream outage's error rate (the requests stay out of the streaming window); sent with a
/// non-streaming completion (`"stream": false`, a JSON answer), it no longer passes the whole
/// answer off as a first token. A request that asked for a stream and failed still counts.
#[tokio::test]
async fn a_clients_accept_header_does_not_choose_the_streaming_window() {
    let (records, _monitor, addr) = monitored(
        Monitor::builder().min_samples(5),
        Router::new()
            .route(
                "/v1/chat/completions",
                post(|| async {
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        StreamLabels::new("openai").with_model("gpt-4o-mini"),
                        axum::Json(serde_json::json!({"error": {"type": "server_error"}})),
                    )
                        .into_response()
                }),
            )
            .route(
                "/v1/completions",
                post(|| async {
                    (
                        StreamLabels::new("openai").with_model("gpt-4o-mini"),
                        axum::Json(serde_json::json!({"choices": [{"text": "hi"}]})),
                    )
                        .into_response()
                }),
            )
            .route("/version", get(|| async { "1.2.3" })),
    )
    .await;
    let sse =
        |request: reqwest::RequestBuilder| request.header(header::ACCEPT, "text/event-stream");
    for _ in 0..20 {
        drain(sse(
            client().post(format!("http://{addr}/v1/chat/completions"))
        ))
        .await;
    }
    let got = records.wait_for(20).await;
    assert!(
        got.iter().all(|r| r.streaming),
        "failed, and asked for a stream"
    );
    let (status, body) = health(addr).await;
    assert_eq!((status, &body["status"]), (503, &Value::from("critical")));

    for _ in 0..200 {
        drain(sse(client().get(format!("http://{addr}/version")))).await;
    }
    for _ in 0..5 {
        drain(sse(client().post(format!("http://{addr}/v1/completions")))).await;
    }
    let got = records.wait_for(225).await;
    assert!(
        got[20..].iter().all(|r| !r.streaming),
        "answered without a stream"
    );
    let m = metrics(addr).await;
    let window = &m["data"]["streaming_5min"];
    assert_eq!(window["total_streaming_requests"], 20);
    assert_eq!(window["streaming_errors"], 20);
    let (status, body) = health(addr).await;
    assert_eq!((status, &body["status"]), (503, &Value::from("critical")));
}

/// A client that reads slowly a long answer its upstream produced at once (a small receive
/// buffer, a pause past the stream timeout): the body's frames were ready whenever asked for,
/// so the time past the deadline is the client's. The stream is handed on whole and recorded
/// `ok`, not cut as an upstream `timeout` that would move `/health`.
#[tokio::test]
async fn a_slow_reader_is_not_an_upstream_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const EVENTS: usize = 100_000;
    let (records, _monitor, addr) = monitored(
        Monitor::builder()
            .min_samples(1)
            .stream_timeout(Duration::from_millis(500)),
        Router::new().route(
            "/v1/chat/completions",
            post(|| async {
                // About 10 MB, all of it ready at once: more than the socket buffers hold.
                let events = (0..EVENTS).map(|i| {
                    Ok::<_, std::convert::Infallible>(bytes::Bytes::from(format!(
                        "data: {{\"choices\":[{{\"delta\":{{\"content\":\"token {i:06} ........\"}}}}]}}\n\n"
                    )))
                });
                (
                    StreamLabels::new("openai").with_model("gpt-4o-mini"),
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    axum::body::Body::from_stream(futures_util::stream::iter(events)),
                )
                    .into_response()
            }),
        ),
    )
    .await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
              content-length: 0\r\n\r\n",
        )
        .await
        .unwrap();
    // The client looks away for longer than the timeout, then reads it all.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(!text.contains("Streaming timeout"), "not cut");
    assert_eq!(text.matches("data: ").count(), EVENTS);
    let r = records.one().await;
    assert_eq!((r.outcome, r.output_tokens), (Outcome::Ok, EVENTS as u64));
    let (status, body) = health(addr).await;
    assert_eq!((status, &body["status"]), (200, &Value::from("healthy")));
}

/// A handler that looked at its request body once and then waits for its upstream, while the
/// client sends the rest: the deadline passing then is the upstream's (504, `timeout`), though
/// the handler's last look at the body found nothing. Had the client sent nothing more, it
/// would be the client's (408): see the test above.
#[tokio::test]
async fn a_handler_that_stopped_reading_its_body_is_waiting_for_its_upstream() {
    use futures_util::FutureExt as _;
    use http_body_util::BodyExt as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (records, _monitor, addr) = with_deadline(
        500,
        Router::new().route(
            "/v1/chat/completions",
            post(|body: axum::body::Body| async move {
                let mut body = body;
                // The body read as far as it has come, one look more that finds nothing,
                // then the upstream, which never answers.
                while let Some(Some(_)) = body.frame().now_or_never() {}
                std::future::pending::<()>().await;
                drop(body);
                real_stream().await
            }),
        ),
    )
    .await;
    let mut socket = send_raw(
        addr,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
          content-length: 16\r\n\r\n{\"stream\":",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    socket.write_all(b" true}").await.unwrap();
    let mut answer = vec![0; 1024];
    let n = socket.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    let r = records.one().await;
    assert_eq!(r.outcome, Outcome::Timeout);
}

/// A response body fed by the request's (an upload streamed back as it comes) that waits past
/// the deadline for the client's next bytes is cut, and recorded as the client's doing
/// (`client_error`), not as an upstream `timeout`.
#[tokio::test]
async fn a_stream_waiting_for_the_clients_upload_is_not_an_upstream_timeout() {
    let (records, _monitor, addr) = with_deadline(
        300,
        Router::new().route(
            "/v1/echo",
            post(|body: axum::body::Body| async move {
                (
                    [(header::CONTENT_TYPE, "application/octet-stream")],
                    axum::body::Body::from_stream(body.into_data_stream()),
                )
            }),
        ),
    )
    .await;
    let socket = send_raw(
        addr,
        b"POST /v1/echo HTTP/1.1\r\nhost: x\r\ncontent-type: application/octet-stream\r\n\
          content-length: 100\r\n\r\nfirst part",
    )
    .await;
    // The rest never comes; the socket stays open until the record is in.
    let r = records.one().await;
    assert_eq!(r.outcome, Outcome::ClientError, "{r:#?}");
    assert_eq!(r.bytes, 10);
    drop(socket);
}

/// What the client asked for counts for the request's failures only, as known when it ends: a
/// 200 JSON answer cut by the deadline is a failed streaming request when the client asked for
/// a stream; a 400 refused as the client's own error is not one, whatever it asked.
#[tokio::test]
async fn the_clients_word_counts_for_failures_known_at_the_end() {
    let (records, _monitor, addr) = with_deadline(
        300,
        Router::new()
            .route(
                "/v1/completions",
                post(|| async {
                    let stalls = futures_util::stream::once(async {
                        Ok::<_, std::convert::Infallible>(bytes::Bytes::from_static(b"{\"c"))
                    })
                    .chain(futures_util::stream::pending());
                    (
                        StreamLabels::new("openai"),
                        [(header::CONTENT_TYPE, "application/json")],
                        axum::body::Body::from_stream(stalls),
                    )
                }),
            )
            .route(
                "/v1/refused",
                post(|| async { (StatusCode::BAD_REQUEST, StreamLabels::new("openai"), "no") }),
            ),
    )
    .await;
    use futures_util::StreamExt as _;
    for accept in ["text/event-stream", "application/json"] {
        let _ = client()
            .post(format!("http://{addr}/v1/completions"))
            .header(header::ACCEPT, accept)
            .send()
            .await
            .unwrap()
            .bytes()
            .await;
    }
    drain(
        client()
            .post(format!("http://{addr}/v1/refused"))
            .header(header::ACCEPT, "text/event-stream"),
    )
    .await;
    let got = records.wait_for(3).await;
    assert!(got[0].time_to_first_byte.is_some());
    assert_eq!(
        got[0].time_to_first_token, None,
        "a JSON answer's first byte is no stream's first token"
    );
    let seen: Vec<_> = got.iter().map(|r| (r.outcome, r.streaming)).collect();
    assert_eq!(
        seen,
        [
            (Outcome::Timeout, true),
            (Outcome::Timeout, false),
            (Outcome::ClientError, false)
        ]
    );
}

/// A client that pauses while it uploads its request body: the handler answers as soon as the
/// body is in, so the pause is the client's, not the upstream's. First byte and first token
/// count from the body's end: a client cannot pass its own pause off as first-token latency,
/// which `/health` judges. The duration still spans the whole request.
#[tokio::test]
async fn a_slow_upload_is_not_first_token_latency() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Told when the request has reached the handler's side of the monitor (its measuring has
    // begun), so that the client's pause starts after that, however busy the machine.
    let called = std::sync::Arc::new(tokio::sync::Notify::new());
    let calling = called.clone();
    let (records, _monitor, addr) = with_deadline(
        60_000,
        Router::new()
            .route(
                "/v1/chat/completions",
                post(|axum::Json(_): axum::Json<Value>| real_stream()),
            )
            .layer(axum::middleware::map_request(
                move |request: axum::extract::Request| {
                    let calling = calling.clone();
                    async move {
                        calling.notify_one();
                        request
                    }
                },
            )),
    )
    .await;
    let body = br#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let mut socket = send_raw(addr, &[head.as_bytes(), &body[..10]].concat()).await;
    called.notified().await;
    let pause = Duration::from_millis(1500);
    tokio::time::sleep(pause).await;
    socket.write_all(&body[10..]).await.unwrap();
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    let r = records.one().await;
    let first_token = r.time_to_first_token.expect("a first token");
    // The whole pause lies between the request's start and its body's end, where the first
    // token's time begins.
    assert!(
        first_token + pause <= r.duration,
        "first token {first_token:?} of a {:?} request",
        r.duration
    );
}

/// A handler that names its provider has its model from its own labels or the stream, never
/// from the client's `x-llm-model` header: a client cannot move its requests out of the model
/// the upstream reports (its windows, its anomaly baseline).
#[tokio::test]
async fn a_model_header_names_nothing_once_the_handler_names_the_provider() {
    let (records, _monitor, addr) = monitored(
        Monitor::builder(),
        Router::new().route(
            "/v1/chat/completions",
            post(|| async {
                (
                    StreamLabels::new("openai"),
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    chat_sse(2),
                )
                    .into_response()
            }),
        ),
    )
    .await;
    drain(
        client()
            .post(format!("http://{addr}/v1/chat/completions"))
            .header("x-llm-model", "client-picked"),
    )
    .await;
    let r = records.one().await;
    assert_eq!((&*r.provider, &*r.model), ("openai", "gpt-4o-mini"));
}

/// Upstream failures on a route whose provider the app names in its `request_labels` closure,
/// 30 without a header and 30 with a client's `x-llm-provider: openai`.
async fn closure_named_failures(header: Option<&'static str>) -> (StreamRecord, bool) {
    use tower_stream_monitor::health::RollbackTrigger;
    let (records, monitor, addr) = monitored(
        Monitor::builder()
            .request_labels(|parts: &http::request::Parts| {
                if parts.uri.path().starts_with("/v1/messages") {
                    StreamLabels::new("anthropic")
                } else {
                    StreamLabels::default()
                }
            })
            .rollback_trigger(
                RollbackTrigger::new("anthropic_down", [Outcome::ServerError], 30.0)
                    .provider("anthropic"),
            ),
        Router::new().route(
            "/v1/messages",
            post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "upstream down") }),
        ),
    )
    .await;
    for _ in 0..30 {
        let mut request = client().post(format!("http://{addr}/v1/messages"));
        if let Some(h) = header {
            request = request.header("x-llm-provider", h);
        }
        drain(request).await;
    }
    let got = records.wait_for(30).await;
    let fired = monitor
        .health()
        .triggers
        .iter()
        .any(|t| t.name == "anthropic_down" && t.fired);
    (got[29].clone(), fired)
}

/// A provider the app names in its `request_labels` closure is the app's: a client's provider
/// header cannot move that upstream's failures to another provider, and so blind its trigger.
#[tokio::test]
async fn a_provider_header_cannot_move_a_provider_the_closure_names() {
    for header in [None, Some("openai")] {
        let (last, fired) = closure_named_failures(header).await;
        assert_eq!(&*last.provider, "anthropic", "header {header:?}");
        assert!(
            fired,
            "the upstream's failures fire its trigger, header {header:?}"
        );
    }
}

/// Label sets a client makes with header values the app names too (known providers x known
/// models) spend the headers' quarter of `max_label_sets`, never the app's own share: the
/// app's next combination keeps its labels.
#[tokio::test]
async fn known_header_values_cannot_crowd_out_the_apps_label_sets() {
    const PROVIDERS: [&str; 2] = ["openai", "anthropic"];
    const MODELS: [&str; 3] = ["m0", "m1", "m2"];
    async fn named(
        axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, usize>>,
    ) -> axum::response::Response {
        let i = q.get("i").copied().unwrap_or(0);
        (
            StreamLabels::new(PROVIDERS[i % 2]).with_model(MODELS[i % 3]),
            [(header::CONTENT_TYPE, "text/event-stream")],
            chat_sse(1),
        )
            .into_response()
    }
    let (records, _monitor, addr) = monitored(
        Monitor::builder().max_label_sets(8),
        Router::new().route("/v1/chat", post(named)).route(
            "/v1/gateway",
            post(|| async { ([(header::CONTENT_TYPE, "text/event-stream")], chat_sse(1)) }),
        ),
    )
    .await;
    for i in 0..3 {
        drain(client().post(format!("http://{addr}/v1/chat?i={i}"))).await;
    }
    for (p, m) in [
        ("openai", "m1"),
        ("anthropic", "m0"),
        ("anthropic", "m2"),
        ("openai", "m0"),
    ] {
        drain(
            client()
                .post(format!("http://{addr}/v1/gateway"))
                .header("x-llm-provider", p)
                .header("x-llm-model", m),
        )
        .await;
    }
    drain(client().post(format!("http://{addr}/v1/chat?i=3"))).await;
    let got = records.wait_for(8).await;
    let labels = |r: &StreamRecord| (r.provider.to_string(), r.model.to_string());
    // Two of the header sets fill the headers' quarter (8 / 4); the other two fold.
    let gateway: Vec<_> = got[3..7].iter().map(labels).collect();
    assert_eq!(
        gateway.iter().filter(|(p, _)| p == "other").count(),
        2,
        "{gateway:?}"
    );
    let last = &got[7];
    assert_eq!(
        (&*last.provider, &*last.model, &*last.route),
        ("anthropic", "m0", "/v1/chat"),
        "the app's own combination keeps its labels"
    );
}

/// A route longer than a header's 64 bytes (Vertex AI's) is its own `route` label, and its
/// upstream's failures fire a trigger on it.
#[tokio::test]
async fn a_long_route_is_its_own_label() {
    use tower_stream_monitor::health::RollbackTrigger;
    const ROUTE: &str =
        "/v1/projects/{project}/locations/{location}/publishers/{publisher}/models/{model}";
    assert!(ROUTE.len() > 64);
    let (records, monitor, addr) = monitored(
        Monitor::builder().rollback_trigger(
            RollbackTrigger::new("vertex_down", [Outcome::ServerError], 30.0).route(ROUTE),
        ),
        Router::new().route(
            ROUTE,
            post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "upstream down") }),
        ),
    )
    .await;
    for _ in 0..30 {
        drain(client().post(format!(
            "http://{addr}/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-flash"
        )))
        .await;
    }
    let got = records.wait_for(30).await;
    assert_eq!(&*got[0].route, ROUTE);
    assert_eq!(monitor.label_overflows(), 0);
    let health = monitor.health();
    assert!(
        health
            .triggers
            .iter()
            .any(|t| t.name == "vertex_down" && t.fired),
        "{health:#?}"
    );
    // A route pattern past 256 bytes is a configuration error, named.
    let long = format!("/{}", "x".repeat(256));
    let error = Monitor::builder()
        .route_patterns([long])
        .build()
        .expect_err("a route pattern past 256 bytes");
    assert!(error.to_string().contains("route_patterns"), "{error}");
}

/// An OpenAI chat event carrying `text`.
fn chat_event(text: &str) -> bytes::Bytes {
    bytes::Bytes::from(format!(
        "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{text}\"}}}}]}}\n\n"
    ))
}

/// An SSE response of `frames`, labelled as OpenAI's `gpt-4o-mini`.
fn openai_sse<D: Into<bytes::Bytes> + 'static>(
    frames: impl futures_util::Stream<Item = Result<D, std::convert::Infallible>> + Send + 'static,
) -> axum::response::Response {
    (
        StreamLabels::new("openai").with_model("gpt-4o-mini"),
        [(header::CONTENT_TYPE, "text/event-stream")],
        axum::body::Body::from_stream(frames),
    )
        .into_response()
}

/// An app whose handler answers at once with an OpenAI chat stream fed from another task (a
/// channel, as an upstream connection feeds a proxied body): a role event, then `events`
/// content events, each sent as soon as the channel has room.
fn channel_fed_app(monitor: &Monitor, events: usize) -> Router {
    Router::new()
        .route(
            "/v1/chat/completions",
            post(move || async move {
                let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
                tokio::spawn(async move {
                    let role = bytes::Bytes::from_static(
                        b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n",
                    );
                    let events = (0..events).map(|i| chat_event(&format!("t{i}")));
                    for event in std::iter::once(role).chain(events) {
                        if tx.send(event).await.is_err() {
                            return;
                        }
                    }
                });
                let frames = futures_util::stream::poll_fn(move |cx| {
                    rx.poll_recv(cx)
                        .map(|b| b.map(Ok::<_, std::convert::Infallible>))
                });
                openai_sse(frames)
            }),
        )
        .layer(monitor.layer())
}

/// The body of a chat request to `app`, its response's headers read.
async fn chat_body(app: Router) -> axum::body::Body {
    use tower::ServiceExt as _;
    let request = http::Request::post("/v1/chat/completions")
        .body(axum::body::Body::empty())
        .unwrap();
    app.oneshot(request).await.unwrap().into_body()
}

/// A reader that comes back after the deadline to a body fed from another task finds the
/// channel empty for a moment after each drain: the source is handing on what it holds, not
/// late. Whether the reader looks away after the first frame or before it (its headers read),
/// the pause is the reader's: the stream is `ok`, whole.
#[tokio::test(start_paused = true)]
async fn a_slow_reader_of_a_channel_fed_body_is_not_an_upstream_timeout() {
    use http_body_util::BodyExt as _;
    const EVENTS: usize = 50;
    for frames_first in [1, 0] {
        let (records, monitor) =
            recorded(Monitor::builder().stream_timeout(Duration::from_secs(2)));
        let mut body = chat_body(channel_fed_app(&monitor, EVENTS)).await;
        for _ in 0..frames_first {
            assert!(body.frame().await.unwrap().unwrap().is_data());
        }
        // The reader looks away past the deadline; the producer fills the channel meanwhile.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rest = body.collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&rest);
        assert!(
            !text.contains("Streaming timeout"),
            "{frames_first}: cut: {text}"
        );
        let r = records.one().await;
        assert_eq!((r.outcome, r.output_tokens), (Outcome::Ok, EVENTS as u64));
    }
}

/// A reader's pause is no first-token latency, before the first frame or after it (an HTTP/2
/// client that grants no window after the role event holds hyper back just so), with no stream
/// timeout set or with one: a client alone cannot make `/health`'s first-token check fail.
#[tokio::test(start_paused = true)]
async fn a_reader_that_pauses_is_no_first_token_latency() {
    use http_body_util::BodyExt as _;
    for (timeout, frames_first) in [(None, 0), (None, 1), (Some(60), 0), (Some(60), 1)] {
        let mut builder = Monitor::builder();
        if let Some(secs) = timeout {
            builder = builder.stream_timeout(Duration::from_secs(secs));
        }
        let (records, monitor) = recorded(builder);
        let mut body = chat_body(channel_fed_app(&monitor, 5)).await;
        for _ in 0..frames_first {
            body.frame().await.unwrap().unwrap();
        }
        tokio::time::sleep(Duration::from_secs(6)).await;
        body.collect().await.unwrap();
        let r = records.one().await;
        assert_eq!((r.outcome, r.output_tokens), (Outcome::Ok, 5));
        // Held by its reader, ready: when the upstream gave it is not known, so not timed.
        assert_eq!(
            r.time_to_first_token, None,
            "{timeout:?}, {frames_first} frames read first"
        );
    }
}

/// On a configured streaming route, a plain body's first byte is its first token: a reader's
/// pause before it is no first-token latency either.
#[tokio::test(start_paused = true)]
async fn a_reader_that_pauses_on_a_streaming_route_is_no_first_token_latency() {
    use http_body_util::BodyExt as _;
    let (records, monitor) = recorded(Monitor::builder().streaming_routes(["/v1/plain"]));
    let app = Router::new()
        .route(
            "/v1/plain",
            post(|| async {
                let chunks = futures_util::stream::iter(["one ", "two ", "three"].map(|c| {
                    Ok::<_, std::convert::Infallible>(bytes::Bytes::from_static(c.as_bytes()))
                }));
                (
                    StreamLabels::new("openai"),
                    [(header::CONTENT_TYPE, "text/plain")],
                    axum::body::Body::from_stream(chunks),
                )
            }),
        )
        .layer(monitor.layer());
    let request = http::Request::post("/v1/plain")
        .body(axum::body::Body::empty())
        .unwrap();
    let body = tower::ServiceExt::oneshot(app, request)
        .await
        .unwrap()
        .into_body();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(body.collect().await.unwrap().to_bytes(), "one two three");
    let r = records.one().await;
    assert!(r.streaming);
    assert_eq!((r.time_to_first_byte, r.time_to_first_token), (None, None));
}

/// The same over the network: an HTTP/2 client that grants no flow-control window until it
/// has held the stream back for 2 s (hyper hands the first event on, then waits for room) sees
/// its first token after its pause. The monitor never shows the pause as the upstream's, nor an
/// upstream's first token at 1 s as earlier: the held stream's first token is not timed.
#[tokio::test]
async fn an_http2_client_keeping_its_window_shut_moves_no_first_token() {
    const PAUSE: Duration = Duration::from_secs(2);
    for first_token_after in [Duration::from_millis(10), Duration::from_secs(1)] {
        let handler = move || async move {
            let frames = futures_util::stream::unfold(0usize, move |i| async move {
                let frame = match i {
                    0 => bytes::Bytes::from_static(
                        b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n",
                    ),
                    1..=5 => {
                        let wait = if i == 1 {
                            first_token_after
                        } else {
                            Duration::from_millis(10)
                        };
                        tokio::time::sleep(wait).await;
                        chat_event(&format!("t{i}"))
                    }
                    _ => return None,
                };
                Some((Ok::<_, std::convert::Infallible>(frame), i + 1))
            });
            openai_sse(frames)
        };
        let (records, _monitor, addr) = monitored(
            Monitor::builder(),
            Router::new().route("/v1/chat/completions", post(handler)),
        )
        .await;
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (client, mut connection) = h2::client::Builder::new()
            .initial_window_size(0)
            .handshake::<_, bytes::Bytes>(tcp)
            .await
            .unwrap();
        let (open, opened) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            tokio::select! {
                ended = &mut connection => return ended.unwrap(),
                _ = opened => {}
            }
            connection.set_initial_window_size(1 << 20).unwrap();
            connection.await.unwrap();
        });
        let sent = std::time::Instant::now();
        let request = http::Request::post(format!("http://{addr}/v1/chat/completions"))
            .body(())
            .unwrap();
        let (response, _) = client
            .ready()
            .await
            .unwrap()
            .send_request(request, true)
            .unwrap();
        let mut body = response.await.unwrap().into_body();
        tokio::time::sleep(PAUSE).await;
        let _ = open.send(());
        let mut text = Vec::new();
        let mut client_first_token = None;
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            text.extend_from_slice(&chunk);
            if client_first_token.is_none() && String::from_utf8_lossy(&text).contains("content") {
                client_first_token = Some(sent.elapsed());
            }
        }
        assert!(
            String::from_utf8_lossy(&text)
                .ends_with("data: {\"choices\":[{\"delta\":{\"content\":\"t5\"}}]}\n\n")
        );
        let client_first_token = client_first_token.expect("a first token");
        assert!(client_first_token >= PAUSE, "{client_first_token:?}");
        let r = records.one().await;
        assert_eq!((r.outcome, r.output_tokens), (Outcome::Ok, 5));
        // Not the client's pause, and not earlier than the upstream gave it: not timed.
        assert_eq!(
            r.time_to_first_token, None,
            "upstream's first token after {first_token_after:?}; the client's at {client_first_token:?}"
        );
        assert_eq!((r.tokens_per_second, r.max_inter_token_gap), (None, None));
    }
}

/// An app whose upstream (a task feeding a channel as fast as it makes them) sends the role
/// event at once, then a content event after each delay of `delays`.
fn planned_app(monitor: &Monitor, delays: Vec<Duration>) -> Router {
    Router::new()
        .route(
            "/v1/chat/completions",
            post(move || async move {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<bytes::Bytes>();
                tokio::spawn(async move {
                    let _ = tx.send(bytes::Bytes::from_static(
                        b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n",
                    ));
                    for (i, delay) in delays.into_iter().enumerate() {
                        tokio::time::sleep(delay).await;
                        let _ = tx.send(chat_event(&format!("t{i}")));
                    }
                });
                let frames = futures_util::stream::poll_fn(move |cx| {
                    rx.poll_recv(cx)
                        .map(|b| b.map(Ok::<_, std::convert::Infallible>))
                });
                openai_sse(frames)
            }),
        )
        .layer(monitor.layer())
}

/// What an upstream does while a reader holds its stream back is not seen, so a reader cannot
/// make a slow upstream look fast either: a first token at 3 s, a 5 s stall, 2 tokens a second,
/// each behind a reader's pauses, are never recorded as faster than they were. On the paused
/// clock the figures are exact: what came while the reader held the stream is not recorded,
/// what came before is (the stall's first token, read at once, at 100 ms).
#[tokio::test(start_paused = true)]
async fn a_reader_holding_a_stream_back_hides_no_upstream_slowness() {
    use http_body_util::BodyExt as _;
    let ms = Duration::from_millis;
    // (the upstream's delays, frames the reader takes at once, its pause, then its pace; the
    // first token recorded)
    let cases = [
        (
            "first token at 3 s",
            vec![ms(3000), ms(50), ms(50)],
            1,
            ms(10_000),
            ms(0),
            None,
        ),
        (
            "a 5 s stall",
            vec![ms(100), ms(5000), ms(100), ms(100)],
            2,
            ms(10_000),
            ms(0),
            Some(ms(100)),
        ),
        (
            "2 tokens a second",
            vec![ms(500); 20],
            0,
            ms(0),
            ms(1000),
            None,
        ),
    ];
    for (case, delays, frames_first, pause, pace, first_token) in cases {
        let (records, monitor) = recorded(Monitor::builder());
        let tokens = delays.len() as u64;
        let mut body = chat_body(planned_app(&monitor, delays)).await;
        for _ in 0..frames_first {
            body.frame().await.unwrap().unwrap();
        }
        tokio::time::sleep(pause).await;
        while let Some(frame) = body.frame().await {
            frame.unwrap();
            tokio::time::sleep(pace).await;
        }
        let r = records.one().await;
        assert_eq!(
            (r.outcome, r.output_tokens),
            (Outcome::Ok, tokens),
            "{case}"
        );
        assert_eq!(r.time_to_first_token, first_token, "{case}");
        // Every case's reader held the stream after its first token: no rate, no gap.
        assert_eq!(
            (r.tokens_per_second, r.max_inter_token_gap),
            (None, None),
            "{case}"
        );
    }
}

/// Readers that take a second over each event of an answer the upstream had ready move neither
/// the streams' rates and widest gaps nor `/health`: a client's reading pace is its own.
#[tokio::test(start_paused = true)]
async fn slow_readers_move_no_rate_and_no_health_check() {
    use http_body_util::BodyExt as _;
    use tower_stream_monitor::health::HealthStatus;
    let (records, monitor) = recorded(Monitor::builder());
    for _ in 0..20 {
        let mut body = chat_body(channel_fed_app(&monitor, 20)).await;
        while let Some(frame) = body.frame().await {
            frame.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let all = records.wait_for(20).await;
    for r in &all {
        assert_eq!((r.outcome, r.output_tokens), (Outcome::Ok, 20));
        // The reader took a second before each frame, its first token's too: none of the
        // stream's latencies is its upstream's, none is recorded.
        assert_eq!(
            (
                r.time_to_first_token,
                r.tokens_per_second,
                r.max_inter_token_gap
            ),
            (None, None, None)
        );
    }
    let health = monitor.health();
    let checks: Vec<(&str, HealthStatus)> =
        health.checks.iter().map(|c| (c.name, c.status)).collect();
    assert_eq!(
        checks,
        [
            ("streaming_first_token", HealthStatus::Unknown),
            ("streaming_tokens_per_second", HealthStatus::Unknown),
            ("streaming_error_rate", HealthStatus::Healthy),
        ]
    );
    assert_eq!(health.status, HealthStatus::Healthy);
}

/// Twenty streams of an upstream that sends its tokens `usual` apart, read promptly, then one
/// odd stream sent `odd` apart, read after `hold` and `pace` after each frame: the records, and
/// the tokens/s check of `/health` after them.
async fn beside_twenty(
    usual: Vec<Duration>,
    odd: Vec<Duration>,
    hold: Duration,
    pace: Duration,
) -> (Vec<StreamRecord>, tower_stream_monitor::health::Check) {
    use http_body_util::BodyExt as _;
    let (records, monitor) = recorded(Monitor::builder());
    for _ in 0..20 {
        let mut body = chat_body(planned_app(&monitor, usual.clone())).await;
        while let Some(frame) = body.frame().await {
            frame.unwrap();
        }
    }
    let mut body = chat_body(planned_app(&monitor, odd)).await;
    tokio::time::sleep(hold).await;
    while let Some(frame) = body.frame().await {
        frame.unwrap();
        tokio::time::sleep(pace).await;
    }
    let all = records.wait_for(21).await;
    (all, tokens_per_second_check(&monitor))
}

/// What a reader's pace can still do within its bounds (README, Security) is give a stream
/// whose whole generation fits in 50 ms any rate: held back 40 ms, then read at once, a
/// two-token answer reads 1,000 tokens a second. One such stream must not hide an upstream
/// that gives everyone else 5.6 tokens a second (10 tokens 200 ms apart): the check reads the
/// streams' median, which one fast stream does not move.
#[tokio::test(start_paused = true)]
async fn one_stream_read_at_once_hides_no_slow_upstream() {
    use tower_stream_monitor::health::HealthStatus;
    let ms = Duration::from_millis;
    let (all, check) = beside_twenty(vec![ms(200); 10], vec![ms(0), ms(10)], ms(40), ms(1)).await;
    let slow = all[..20].iter().map(|r| r.tokens_per_second);
    assert!(slow.clone().all(|t| t.is_some_and(|t| t < 6.0)), "{all:?}");
    let odd = all[20].tokens_per_second;
    assert!(odd.is_some_and(|t| t >= 1000.0), "{odd:?}");
    assert_eq!(check.status, HealthStatus::Critical, "{check:?}");
    assert!(check.value < 6.0, "{check:?}");
}

/// Nor does one slow stream among fast ones make the check critical: a two-token answer whose
/// second token came 4 s after its first (a stall the widest gap shows) reads 0.5 tokens a
/// second, beside twenty at 55.6 (10 tokens 20 ms apart). The check reads the streams' median,
/// which neither one fast nor one slow stream moves.
#[tokio::test(start_paused = true)]
async fn one_stalled_stream_among_fast_ones_is_no_slow_upstream() {
    use tower_stream_monitor::health::HealthStatus;
    let ms = Duration::from_millis;
    let zero = Duration::ZERO;
    let (all, check) = beside_twenty(vec![ms(20); 10], vec![ms(20), ms(4000)], zero, zero).await;
    let odd = all[20].tokens_per_second;
    assert!(odd.is_some_and(|t| t < 1.0), "{odd:?}");
    assert_eq!(check.status, HealthStatus::Healthy, "{check:?}");
    assert!(check.value > 50.0, "{check:?}");
}

/// The same over the network: an upstream's stream relayed by a monitored proxy to a client
/// that reads nothing until past the deadline, its receive buffer small, so the relay is held
/// back by the client and then waits on the upstream connection (which reads only when asked)
/// at each of its chunks. The relay's own waits, about a thousand, stay far under the
/// deadline; the client's pause is over it.
#[tokio::test]
async fn a_slow_reader_of_a_proxied_stream_is_not_an_upstream_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const EVENTS: usize = 100_000;
    const EVENTS_A_CHUNK: usize = 100;
    let upstream = serve(Router::new().route(
        "/v1/chat/completions",
        post(|| async {
            let chunks = (0..EVENTS / EVENTS_A_CHUNK).map(|c| {
                let events: Vec<u8> = (c * EVENTS_A_CHUNK..(c + 1) * EVENTS_A_CHUNK)
                    .flat_map(|i| chat_event(&format!("token {i:06}")))
                    .collect();
                Ok::<_, std::convert::Infallible>(bytes::Bytes::from(events))
            });
            (
                [(header::CONTENT_TYPE, "text/event-stream")],
                axum::body::Body::from_stream(futures_util::stream::iter(chunks)),
            )
        }),
    ))
    .await;
    let (records, _monitor, addr) = monitored(
        Monitor::builder().stream_timeout(Duration::from_secs(1)),
        Router::new().route(
            "/v1/chat/completions",
            post(move || async move {
                let answer = client()
                    .post(format!("http://{upstream}/v1/chat/completions"))
                    .send()
                    .await
                    .unwrap();
                (
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    axum::body::Body::from_stream(answer.bytes_stream()),
                )
            }),
        ),
    )
    .await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(!text.contains("Streaming timeout"), "cut");
    let r = records.one().await;
    assert_eq!((r.outcome, r.output_tokens), (Outcome::Ok, EVENTS as u64));
}

/// A JSON request whose client sends the rest of its body after `upload`, to a handler that
/// reads it, then answers 11 tokens 100 ms apart after 200 ms.
async fn after_a_slow_upload(upload: Duration, timeout: Duration) -> StreamRecord {
    use futures_util::StreamExt as _;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let (records, monitor) = recorded(Monitor::builder().stream_timeout(timeout));
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            post(|axum::Json(_): axum::Json<Value>| async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let frames = futures_util::stream::unfold(0u32, |i| async move {
                    if i == 11 {
                        return None;
                    }
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    let event = chat_event(&format!("t{i}"));
                    Some((Ok::<_, std::convert::Infallible>(event), i + 1))
                });
                (
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    axum::body::Body::from_stream(frames),
                )
            }),
        )
        .layer(monitor.layer());
    let json = br#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#;
    let (head, tail) = json.split_at(10);
    let pieces = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
        bytes::Bytes::from_static(head),
    )])
    .chain(futures_util::stream::once(async move {
        tokio::time::sleep(upload).await;
        Ok(bytes::Bytes::from_static(tail))
    }));
    let request = http::Request::post("/v1/chat/completions")
        .header(header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from_stream(pieces))
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    let _ = response.into_body().collect().await;
    records.one().await
}

/// A client that takes 9.5 s of a 10 s deadline to send its body leaves the upstream its whole
/// deadline from then: a healthy upstream is `ok`, not `timeout`. Its tokens per second are
/// the upstream's, as for a fast upload.
#[tokio::test(start_paused = true)]
async fn a_slow_upload_neither_times_the_upstream_out_nor_slows_its_tokens() {
    let timeout = Duration::from_secs(10);
    let fast = after_a_slow_upload(Duration::ZERO, timeout).await;
    let slow = after_a_slow_upload(Duration::from_millis(9_500), timeout).await;
    assert_eq!((fast.outcome, slow.outcome), (Outcome::Ok, Outcome::Ok));
    assert_eq!((fast.output_tokens, slow.output_tokens), (11, 11));
    assert_eq!(fast.time_to_first_token, slow.time_to_first_token);
    assert_eq!(fast.tokens_per_second, slow.tokens_per_second);
    assert_eq!(fast.time_per_output_token, slow.time_per_output_token);
    assert!(slow.duration > fast.duration + Duration::from_secs(9));
}

/// The upload streamed back as SSE events, one per piece the handler reads: a response body
/// fed by the request's.
fn upload_echo() -> axum::routing::MethodRouter {
    use futures_util::TryStreamExt as _;
    post(|body: axum::body::Body| async move {
        let events = body
            .into_data_stream()
            .map_ok(|piece| bytes::Bytes::from(format!("data: {{\"bytes\":{}}}\n\n", piece.len())));
        (
            [(header::CONTENT_TYPE, "text/event-stream")],
            axum::body::Body::from_stream(events),
        )
    })
}

/// `POST path` over a new connection, announcing 100 bytes and sending 10. `give_up`: the
/// client then shuts its side (the upload broken); else it holds the other 90, its connection
/// open. Returns the connection (hold it to keep the upload held) and what the server answered
/// first.
async fn partial_upload(
    addr: std::net::SocketAddr,
    path: &str,
    give_up: bool,
) -> (tokio::net::TcpStream, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ncontent-length: 100\r\n\r\nfirst part"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    if give_up {
        socket.shutdown().await.unwrap();
    }
    let mut answer = vec![0; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut answer))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    (socket, String::from_utf8_lossy(&answer[..n]).into_owned())
}

/// The first `n` records are all the client's (`client_error`), and `/health` did not move:
/// with nothing but the client's requests, it has no sample to judge (`unknown`).
async fn all_the_clients(records: &Records, n: usize, addr: std::net::SocketAddr) {
    let got = records.wait_for(n).await;
    let outcomes: Vec<_> = got.iter().take(n).map(|r| r.outcome).collect();
    assert!(
        outcomes.iter().all(|o| *o == Outcome::ClientError),
        "{outcomes:?}"
    );
    let (_, health) = health(addr).await;
    assert_eq!(health["status"], "unknown", "{health:#}");
}

/// An upload the client gives up halfway, streamed back by the handler: the body's error is
/// the client's doing (`client_error`), never a `stream_error` that moves `/health`.
#[tokio::test]
async fn an_upload_cut_short_by_its_client_is_not_a_stream_error() {
    let (records, _monitor, addr) = monitored(
        Monitor::builder().min_samples(5),
        Router::new().route("/v1/transcribe", upload_echo()),
    )
    .await;
    for _ in 0..5 {
        partial_upload(addr, "/v1/transcribe", true).await;
    }
    all_the_clients(&records, 5, addr).await;
}

/// An upload the client holds, cut by tower-http's `RequestBodyTimeoutLayer` before the
/// monitor (as README, Security advises for bodies the layer cannot watch), its error relayed
/// by a body fed by the upload: the client's doing (`client_error`), not the upstream's
/// `timeout`, and `/health` does not move.
#[tokio::test]
async fn an_upload_held_past_a_request_body_timeout_is_not_an_upstream_timeout() {
    let (records, monitor) = recorded(Monitor::builder().min_samples(5));
    let app = Router::new()
        .route("/v1/transcribe", upload_echo())
        .layer(monitor.layer())
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            Duration::from_millis(100),
        ));
    let addr = serve(app).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(partial_upload(addr, "/v1/transcribe", false).await);
    }
    all_the_clients(&records, 5, addr).await;
}

/// An app's own timeout inside the monitor (tower-http's `TimeoutLayer`, answering 408, and
/// tower's, failing the service with `Elapsed`) that passes while the handler waits for a
/// client's upload, held or kept going: the client's doing (`client_error`), as this layer's
/// own deadline judges it; `/health` does not move. The same timeout passing while the handler
/// waits on something of the server's own, the whole body in hand, stays a `timeout`.
#[tokio::test]
async fn an_inner_timeout_while_the_handler_waits_for_the_upload_is_the_clients() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (records, monitor) = recorded(Monitor::builder().min_samples(5));
    let http_408 = || {
        tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(100),
        )
    };
    let app = Router::new()
        .route(
            "/v1/408",
            post(|body: String| async move { body.len().to_string() }).layer(http_408()),
        )
        .route(
            "/v1/elapsed",
            post(|body: String| async move { body.len().to_string() }).layer(
                tower::ServiceBuilder::new()
                    .layer(axum::error_handling::HandleErrorLayer::new(
                        |_: tower::BoxError| async { StatusCode::GATEWAY_TIMEOUT },
                    ))
                    .layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(
                        100,
                    ))),
            ),
        )
        .route(
            "/v1/relay",
            post(|body: axum::body::Body| async move {
                use futures_util::StreamExt as _;
                // Reads the upload as it comes (as a relay hands it on), then its upstream
                // never answers.
                let mut upload = body.into_data_stream();
                while upload.next().await.is_some() {}
                std::future::pending::<&str>().await
            })
            .layer(http_408()),
        )
        .route(
            "/v1/slow",
            post(|body: String| async move {
                // The server's own wait, the whole body in hand.
                tokio::time::sleep(Duration::from_secs(10)).await;
                body.len().to_string()
            })
            .layer(http_408()),
        )
        .layer(monitor.layer());
    let addr = serve(app).await;
    let mut held = Vec::new();
    for path in [
        "/v1/408",
        "/v1/elapsed",
        "/v1/408",
        "/v1/elapsed",
        "/v1/408",
    ] {
        let (socket, answer) = partial_upload(addr, path, false).await;
        assert!(
            answer.starts_with("HTTP/1.1 408") || answer.starts_with("HTTP/1.1 504"),
            "{answer}"
        );
        held.push(socket);
    }
    all_the_clients(&records, 5, addr).await;
    // An upload kept going, 4 bytes every 20 ms, read by a relay as it comes: when the limit
    // passes, the request has not reached the server whole (400 bytes of 100,000), and the
    // handler waits for the client's next bytes. The client's doing, however recent its last
    // chunk: a client that sends one more chunk late in the request, then holds, moves
    // `/health` no more than one that held from the start.
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(b"POST /v1/relay HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n")
        .await
        .unwrap();
    let (mut read, mut write) = socket.into_split();
    let trickle = tokio::spawn(async move {
        while write.write_all(b"abcd").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let mut answer = vec![0; 1024];
    let n = read.read(&mut answer).await.unwrap();
    trickle.abort();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 408"),
        "{:?}",
        &answer[..n]
    );
    let got = records.wait_for(6).await;
    assert_eq!(got[5].outcome, Outcome::ClientError, "{:#?}", got[5]);
    // The whole body sent: the timeout is the server's.
    let res = client()
        .post(format!("http://{addr}/v1/slow"))
        .body("all of it")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::REQUEST_TIMEOUT);
    let got = records.wait_for(7).await;
    assert_eq!(got[6].outcome, Outcome::Timeout, "{:#?}", got[6]);
}

/// A body the client sent whole with its headers, read late by a handler that first waited on
/// something of the server's own (a semaphore for an upstream slot): that wait is the
/// server's, and the deadline counts from the call.
#[tokio::test(start_paused = true)]
async fn a_body_read_late_by_the_server_does_not_move_the_deadline() {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let (records, monitor) = recorded(Monitor::builder().stream_timeout(Duration::from_secs(2)));
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            post(|body: axum::body::Body| async move {
                // Its turn for an upstream slot comes after 1.5 s.
                tokio::time::sleep(Duration::from_millis(1500)).await;
                let _ = body.collect().await;
                // Then the upstream hangs.
                std::future::pending::<()>().await;
                "never"
            }),
        )
        .layer(monitor.layer());
    let request = http::Request::post("/v1/chat/completions")
        .header(header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(
            r#"{"model":"gpt-4o-mini","stream":true}"#,
        ))
        .unwrap();
    let started = tokio::time::Instant::now();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    let r = records.one().await;
    assert_eq!(r.outcome, Outcome::Timeout);
}

/// A client that breaks its upload cannot hide what the app answers: the handler reads the
/// broken body, then passes on its upstream's 503, a `server_error` as any other.
#[tokio::test]
async fn a_broken_upload_hides_no_status_the_handler_answers() {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let (records, monitor) = recorded(Monitor::builder());
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            post(|body: axum::body::Body| async move {
                let _ = body.collect().await;
                (StatusCode::SERVICE_UNAVAILABLE, "upstream unavailable")
            }),
        )
        .layer(monitor.layer());
    let pieces = futures_util::stream::iter([
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{\"model\":")),
        Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the client went away",
        )),
    ]);
    let request = http::Request::post("/v1/chat/completions")
        .header(header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from_stream(pieces))
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let _ = response.into_body().collect().await;
    assert_eq!(records.one().await.outcome, Outcome::ServerError);
}

/// A chat stream that costs about $0.075 on `gpt-4o-mini` (its usage: 100,000 tokens each way).
async fn costly_stream() -> axum::response::Response {
    (
        StreamLabels::new("openai").with_model("gpt-4o-mini"),
        [(header::CONTENT_TYPE, "text/event-stream")],
        "data: {\"model\":\"gpt-4o-mini\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n\
         data: {\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":100000,\"completion_tokens\":100000}}\n\n\
         data: [DONE]\n\n",
    )
        .into_response()
}

/// The costly stream's app with a rollback budget on alice's spend; its auth, outside the
/// monitor layer, names `user` as the request's (`UserId`), when there is one.
async fn budgeted_app(user: Option<&'static str>) -> (Records, std::net::SocketAddr) {
    use tower_stream_monitor::UserId;
    use tower_stream_monitor::health::Budget;
    let (records, monitor) = recorded(
        Monitor::builder().budget(Budget::per_hour("alice", 0.01).user("alice").rollback()),
    );
    let app = Router::new()
        .route("/v1/chat/completions", post(costly_stream))
        .layer(monitor.layer());
    let app = match user {
        Some(user) => app.layer(axum::middleware::from_fn(
            move |mut request: axum::extract::Request, next: axum::middleware::Next| async move {
                request
                    .extensions_mut()
                    .insert(UserId(std::borrow::Cow::Borrowed(user)));
                next.run(request).await
            },
        )),
        None => app,
    };
    (records, serve(app).await)
}

/// A user's rollback budget counts the calls the app says are that user's (the `UserId`
/// extension its auth sets), never a client's `x-user-id`: a client naming another user
/// spends no budget of theirs, and cannot override the user the app named.
#[tokio::test]
async fn a_client_header_spends_no_users_budget() {
    let chat =
        |addr: std::net::SocketAddr| client().post(format!("http://{addr}/v1/chat/completions"));
    // A client that says it is alice, on an app that names no user.
    let (records, addr) = budgeted_app(None).await;
    drain(chat(addr).header("x-user-id", "alice")).await;
    let r = records.one().await;
    assert!(r.cost.is_some(), "{r:#?}");
    assert_eq!(
        r.user_id.as_deref(),
        Some("alice"),
        "shown as the client said"
    );
    assert!(r.user_id_from_header);
    let (_, h) = health(addr).await;
    assert_eq!(h["rollback"], false, "{}", h["budgets"]);

    // The app names bob; the client says alice: bob's, and alice's budget is untouched.
    let (records, addr) = budgeted_app(Some("bob")).await;
    drain(chat(addr).header("x-user-id", "alice")).await;
    assert_eq!(records.one().await.user_id.as_deref(), Some("bob"));
    let (_, h) = health(addr).await;
    assert_eq!(h["rollback"], false, "{}", h["budgets"]);

    // The app names alice: her budget passes, and rolls back.
    let (records, addr) = budgeted_app(Some("alice")).await;
    drain(chat(addr)).await;
    assert_eq!(records.one().await.user_id.as_deref(), Some("alice"));
    let (_, h) = health(addr).await;
    assert_eq!(h["rollback"], true, "{}", h["budgets"]);
}

/// A stream whose role event comes at once and whose first token comes after `first` (a slow
/// upstream), then one more token and `[DONE]`.
fn slow_first_token(first: Duration) -> axum::response::Response {
    let frames = futures_util::stream::unfold(0usize, move |i| async move {
        let frame = match i {
            0 => "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n",
            1 => {
                tokio::time::sleep(first).await;
                "data: {\"choices\":[{\"delta\":{\"content\":\"t1\"}}]}\n\n"
            }
            2 => "data: {\"choices\":[{\"delta\":{\"content\":\"t2\"}}]}\n\n",
            3 => "data: [DONE]\n\n",
            _ => return None,
        };
        Some((Ok::<_, std::convert::Infallible>(frame), i + 1))
    });
    (
        StreamLabels::new("openai").with_model("gpt-4o-mini"),
        [(header::CONTENT_TYPE, "text/event-stream")],
        axum::body::Body::from_stream(frames),
    )
        .into_response()
}

/// An upstream whose first token takes 30 s, served under a first-token baseline critical
/// past 250 ms (warning past 100).
async fn first_token_past_critical(
    builder: tower_stream_monitor::MonitorBuilder,
) -> (Records, std::net::SocketAddr) {
    let mut baselines = tower_stream_monitor::health::Baselines::default();
    baselines.streaming_first_token.warning = 100.0;
    baselines.streaming_first_token.critical = 250.0;
    let (records, _monitor, addr) = monitored(
        builder.baselines(baselines),
        Router::new().route(
            "/v1/chat/completions",
            post(|| async { slow_first_token(Duration::from_secs(30)) }),
        ),
    )
    .await;
    (records, addr)
}

/// One client per wait, all at once, each reading its stream for that long, then leaving.
async fn leave_before_the_first_token(
    addr: std::net::SocketAddr,
    waits: impl IntoIterator<Item = Duration>,
) {
    let tasks: Vec<_> = waits
        .into_iter()
        .map(|wait| {
            tokio::spawn(async move {
                let mut res = client()
                    .post(format!("http://{addr}/v1/chat/completions"))
                    .send()
                    .await
                    .unwrap();
                let _ = tokio::time::timeout(wait, async {
                    while let Some(_chunk) = res.chunk().await.unwrap() {}
                })
                .await;
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// Clients that leave a stream still waiting for its first token past the first-token check's
/// critical threshold (impatient ones, or ones that mean to hide a slow upstream) leave their
/// wait as its first token's time, a lower bound: a slow upstream's first tokens show in the
/// percentiles even when no client waits them out. Each such record's wait is at least the
/// client's own patience. Clients that leave sooner leave no first-token time: their waits,
/// however many, cannot pull the percentiles down.
#[tokio::test]
async fn leaving_before_the_first_token_hides_no_slow_upstream() {
    let (records, addr) = first_token_past_critical(Monitor::builder()).await;
    let patience = Duration::from_millis(400);
    let hasty = Duration::from_millis(20);
    // Twenty hasty clients to each patient one: as figures, their waits would be the p95.
    leave_before_the_first_token(addr, [patience; 3].into_iter().chain([hasty; 60])).await;
    let got = records.wait_for(63).await;
    let mut lower_bounds = 0;
    for r in &got {
        assert_eq!(r.outcome, Outcome::Cancelled, "{r:#?}");
        assert_eq!(r.output_tokens, 0);
        assert_eq!(r.first_token_lower_bound, r.time_to_first_token.is_some());
        // A wait that counts is past the threshold; a hasty client's (unless a busy machine
        // saw it leave late) is no figure.
        if let Some(waited) = r.time_to_first_token {
            lower_bounds += 1;
            assert!(waited > Duration::from_millis(250), "{r:#?}");
        }
    }
    // The patient clients' waits, each at least their 400 ms, all count.
    assert!(lower_bounds >= 3, "{got:#?}");
    let m = metrics(addr).await;
    let p95 = m["data"]["streaming_5min"]["first_token_p95_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("no first-token sample: {m:#}"));
    // The percentile is read from a sketch, within a few percent of the waits: the hasty
    // clients, twenty to one, left it where the patient ones put it.
    assert!(p95 > 0.9 * 250.0, "p95 {p95} ms");
}

/// An upstream so slow that every client gives up on it, past the first-token check's
/// critical threshold: no stream is judged (all `cancelled`), yet their lower bounds make the
/// first-token check, and `/health`, critical rather than `unknown`.
#[tokio::test]
async fn an_upstream_every_client_gives_up_on_is_critical() {
    let (records, addr) = first_token_past_critical(Monitor::builder().min_samples(3)).await;
    leave_before_the_first_token(addr, [Duration::from_millis(400); 3]).await;
    let got = records.wait_for(3).await;
    assert!(
        got.iter()
            .all(|r| r.outcome == Outcome::Cancelled && r.first_token_lower_bound),
        "{got:#?}"
    );
    let (status, h) = health(addr).await;
    let first_token = h["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "streaming_first_token"))
        .unwrap_or_else(|| panic!("{h:#}"));
    assert_eq!(first_token["status"], "critical", "{h:#}");
    assert_eq!(
        (status, &h["status"]),
        (503, &Value::from("critical")),
        "{h:#}"
    );
}

/// A client that leaves a JSON answer it waited for (no stream) leaves no first-token time, even
/// one that asked for a stream: a slow non-streaming route is no first-token latency.
#[tokio::test]
async fn leaving_a_slow_json_answer_is_no_first_token() {
    let (records, _monitor, addr) = monitored(
        Monitor::builder(),
        Router::new().route(
            "/v1/chat/completions",
            post(|| async {
                let body = futures_util::stream::unfold(0, |i| async move {
                    match i {
                        0 => {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            Some((Ok::<_, std::convert::Infallible>("{\"id\":1}"), 1))
                        }
                        _ => None,
                    }
                });
                (
                    StreamLabels::new("openai"),
                    [(header::CONTENT_TYPE, "application/json")],
                    axum::body::Body::from_stream(body),
                )
            }),
        ),
    )
    .await;
    let mut res = client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .header(header::ACCEPT, "text/event-stream")
        .body(r#"{"stream":true}"#)
        .send()
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_millis(300), async {
        while let Some(_chunk) = res.chunk().await.unwrap() {}
    })
    .await;
    drop(res);
    let r = records.one().await;
    assert_eq!(r.outcome, Outcome::Cancelled);
    assert!(!r.streaming, "{r:#?}");
    assert_eq!(r.time_to_first_token, None, "{r:#?}");
    assert!(!r.first_token_lower_bound);
}

/// The same judgement where the app's timeout fails the service itself (tower's `Timeout`
/// returning `Elapsed`, no handler turning it into a status, as in a tower stack without
/// axum's routing): a held upload is the client's, a wait on anything else the server's.
#[tokio::test(start_paused = true)]
async fn an_inner_timeout_error_is_judged_as_its_status_is() {
    use tower::{Layer as _, ServiceExt as _};
    let (records, monitor) = recorded(Monitor::builder());
    let reads_the_upload = |read: bool| {
        monitor.layer().layer(
            tower::ServiceBuilder::new()
                .timeout(Duration::from_millis(100))
                .service_fn(move |request: http::Request<axum::body::Body>| async move {
                    use futures_util::StreamExt as _;
                    if read {
                        let mut upload = request.into_body().into_data_stream();
                        while upload.next().await.is_some() {}
                    }
                    std::future::pending::<()>().await;
                    Ok::<_, tower::BoxError>(http::Response::new(axum::body::Body::empty()))
                }),
        )
    };
    for read in [true, false] {
        // 10 bytes, then the client holds the rest.
        let first = futures_util::stream::iter([Ok::<_, std::io::Error>(
            bytes::Bytes::from_static(b"first part"),
        )]);
        let held = futures_util::StreamExt::chain(first, futures_util::stream::pending());
        let request = http::Request::post("/v1/upload")
            .body(axum::body::Body::from_stream(held))
            .unwrap();
        let Err(error) = reads_the_upload(read).oneshot(request).await else {
            panic!("the service fails with the timeout's error")
        };
        assert!(error.is::<tower::timeout::error::Elapsed>(), "{error}");
    }
    let got = records.wait_for(2).await;
    let outcomes: Vec<_> = got.iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, [Outcome::ClientError, Outcome::Timeout]);
}

/// A route whose handler names its upstream (`StreamLabels`, as the README says) and that
/// failed before its response (this layer's deadline, here): a client's `x-llm-provider`
/// does not choose the provider its failure is recorded under, nor fire that provider's
/// trigger.
#[tokio::test]
async fn a_provider_header_cannot_move_a_labelled_upstreams_failures_before_its_response() {
    use tower_stream_monitor::health::RollbackTrigger;
    async fn anthropic() -> axum::response::Response {
        (
            StreamLabels::new("anthropic").with_model("claude-sonnet-4"),
            [(header::CONTENT_TYPE, "text/event-stream")],
            chat_sse(3),
        )
            .into_response()
    }
    // An upstream that never answers: the deadline answers 504 for it.
    async fn openai_hangs() -> axum::response::Response {
        std::future::pending::<()>().await;
        real_stream().await
    }
    let (records, monitor, addr) = monitored(
        Monitor::builder()
            .stream_timeout(Duration::from_millis(100))
            .min_samples(5)
            .rollback_trigger(
                RollbackTrigger::new("anthropic_timeouts", [Outcome::Timeout], 10.0)
                    .provider("anthropic"),
            ),
        Router::new()
            .route("/v1/messages", post(anthropic))
            .route("/v1/chat/completions", post(openai_hangs)),
    )
    .await;
    // One answer from each route first: each names its provider.
    for _ in 0..20 {
        drain(client().post(format!("http://{addr}/v1/messages"))).await;
    }
    for _ in 0..5 {
        let response = client()
            .post(format!("http://{addr}/v1/chat/completions"))
            .header(header::ACCEPT, "text/event-stream")
            .header("x-llm-provider", "anthropic")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        response.bytes().await.unwrap();
    }
    let got = records.wait_for(25).await;
    let timeouts: Vec<_> = got[20..]
        .iter()
        .map(|r| (r.outcome, r.provider.to_string()))
        .collect();
    assert_eq!(
        timeouts,
        vec![(Outcome::Timeout, "unknown".to_owned()); 5],
        "the client's header named the provider"
    );
    let health = monitor.health();
    let fired: Vec<_> = health
        .triggers
        .iter()
        .filter(|t| t.fired)
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(fired, ["timeout_rate"], "{health:?}");
}

/// A Gemini chunk: four more tokens, its usage counting all so far, as Gemini reports it.
fn gemini_chunk(i: usize, last: bool) -> bytes::Bytes {
    let finish = if last {
        ",\"finishReason\":\"STOP\""
    } else {
        ""
    };
    bytes::Bytes::from(format!(
        "data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"four tokens here {i}\"}}],\"role\":\"model\"}},\"index\":0{finish}}}],\"usageMetadata\":{{\"promptTokenCount\":11,\"candidatesTokenCount\":{},\"totalTokenCount\":{}}},\"modelVersion\":\"gemini-2.5-flash\"}}\n\n",
        4 * (i + 1),
        11 + 4 * (i + 1)
    ))
}

/// A slow upstream: five chunks of four tokens, the first after 300 ms, then one a second
/// (4 tokens/s, critical).
fn slow_gemini(monitor: &Monitor) -> Router {
    Router::new()
        .route(
            "/v1/chat",
            post(|| async {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<bytes::Bytes>();
                tokio::spawn(async move {
                    for i in 0..5 {
                        let delay = if i == 0 { 300 } else { 1000 };
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                        if tx.send(gemini_chunk(i, i == 4)).is_err() {
                            return;
                        }
                    }
                });
                let frames = futures_util::stream::poll_fn(move |cx| {
                    rx.poll_recv(cx)
                        .map(|b| b.map(Ok::<_, std::convert::Infallible>))
                });
                (
                    StreamLabels::new("gemini").with_model("gemini-2.5-flash"),
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    axum::body::Body::from_stream(frames),
                )
                    .into_response()
            }),
        )
        .layer(monitor.layer())
}

/// The body of a request to [`slow_gemini`].
async fn slow_gemini_body(monitor: &Monitor) -> axum::body::Body {
    use tower::ServiceExt as _;
    let request = http::Request::post("/v1/chat")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = slow_gemini(monitor).oneshot(request).await.unwrap();
    response.into_body()
}

/// Clients that read a first chunk of several tokens and leave at once: their streams' rates
/// are timed to their last token, not to the moment the client chose, so they neither read
/// thousands of tokens a second nor turn a slow upstream's tokens/s check healthy.
#[tokio::test(start_paused = true)]
async fn leaving_after_the_first_chunk_does_not_make_a_slow_upstream_fast() {
    use http_body_util::BodyExt as _;
    use tower_stream_monitor::health::HealthStatus;
    let (records, monitor) = recorded(Monitor::builder());
    for _ in 0..20 {
        let mut body = slow_gemini_body(&monitor).await;
        while let Some(frame) = body.frame().await {
            frame.unwrap();
        }
    }
    for _ in 0..21 {
        let mut body = slow_gemini_body(&monitor).await;
        body.frame().await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        drop(body);
    }
    let got = records.wait_for(41).await;
    // 20 tokens, the last 4 s after the first: 5 a second.
    let read: Vec<_> = got[..20].iter().map(|r| r.tokens_per_second).collect();
    assert_eq!(read, vec![Some(5.0); 20]);
    let left: Vec<_> = got[20..]
        .iter()
        .map(|r| (r.outcome, r.output_tokens, r.tokens_per_second))
        .collect();
    // One frame: no time between its tokens to time them by.
    assert_eq!(left, vec![(Outcome::Cancelled, 4, None); 21]);
    let check = tokens_per_second_check(&monitor);
    assert_eq!(check.status, HealthStatus::Critical, "{check:?}");
}
