//! W3C trace context over a real server and client: a request's `traceparent` reaches its
//! handler, its record, its error record, its session log and the exemplars of its timing
//! buckets; a malformed one is ignored (a new trace), never an error. A trace is started only
//! where something uses it.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Extension, Router};
use bytes::Bytes;
use common::{Captured, Records, client, paced_body, serve, subscriber};
use tower_stream_monitor::errors::ErrorQuery;
use tower_stream_monitor::trace::TraceContext;
use tower_stream_monitor::{Monitor, StreamLabels};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{TRACE_ID}-{PARENT_SPAN}-01")
}

/// A handler that logs an error, then streams three OpenAI chat chunks; it answers the
/// `traceparent` it would send upstream in `x-upstream-traceparent`.
fn app(monitor: &Monitor) -> Router {
    Router::new()
        .route(
            "/v1/chat/completions",
            post(|trace: Option<Extension<TraceContext>>| async move {
                tracing::error!(target: "app::upstream", "upstream retried once");
                let upstream = trace.map_or_else(|| "none".to_owned(), |t| t.traceparent());
                let frames = [" The", " tower", " falls"]
                    .iter()
                    .map(|t| {
                        Bytes::from(format!(
                            "data: {{\"model\":\"gpt-4o-mini\",\"choices\":[{{\"delta\":{{\"content\":\"{t}\"}}}}]}}\n\n"
                        ))
                    })
                    .chain([Bytes::from_static(b"data: [DONE]\n\n")])
                    .collect();
                let body: Body = paced_body(frames, Duration::from_millis(5), Duration::from_millis(1));
                (
                    StreamLabels::new("openai"),
                    [
                        (header::CONTENT_TYPE.as_str(), "text/event-stream".to_owned()),
                        ("x-upstream-traceparent", upstream),
                    ],
                    body,
                )
                    .into_response()
            }),
        )
        .layer(monitor.layer())
}

// Current-thread runtime: the thread-local subscriber sees the server's tasks.
#[tokio::test]
async fn traceparent_reaches_record_error_record_log_and_exemplar() {
    let records = Records::default();
    let monitor = records.attach(Monitor::builder()).build().unwrap();
    let fmt_out = Captured::default();
    let _guard = tracing::subscriber::set_default(subscriber(&monitor, &fmt_out));
    let addr = serve(app(&monitor)).await;

    // Two `tracestate` lines: one list.
    let res = client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("traceparent", traceparent())
        .header("tracestate", "congo=t61rcWkgMzE")
        .header("tracestate", "rojo=00f067aa0ba902b7")
        .send()
        .await
        .unwrap();
    let upstream = res.headers()["x-upstream-traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = res.text().await.unwrap();
    assert!(body.contains("[DONE]"));
    let record = records.one().await;

    let trace = record
        .trace
        .as_ref()
        .expect("a measured request has a trace");
    assert_eq!(trace.trace_id().to_string(), TRACE_ID);
    assert_eq!(
        trace.parent_span_id().map(|s| s.to_string()).as_deref(),
        Some(PARENT_SPAN)
    );
    assert_eq!(
        trace.tracestate(),
        Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
    );
    let span_id = trace.span_id().to_string();
    assert_ne!(span_id, PARENT_SPAN, "the request's own span is new");
    // The handler had the same context in its request's extensions: the caller's trace, the
    // request's own span as the upstream call's parent.
    assert_eq!(upstream, format!("00-{TRACE_ID}-{span_id}-01"));

    let errors = monitor.errors(&ErrorQuery::default()).errors;
    let error = errors
        .iter()
        .find(|e| e.target == "app::upstream")
        .expect("the handler's error is recorded");
    assert_eq!(error.trace_id.as_deref(), Some(TRACE_ID));
    assert_eq!(error.span_id.as_deref(), Some(span_id.as_str()));
    let served = client()
        .get(format!("http://{addr}/monitoring/errors"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        served.contains(&format!("\"trace_id\":\"{TRACE_ID}\"")),
        "{served}"
    );

    let logs = fmt_out.text();
    assert!(
        logs.lines().any(|l| l.contains("stream started")
            && l.contains(&format!("trace_id={TRACE_ID}"))
            && l.contains(&format!("span_id={span_id}"))),
        "{logs}"
    );

    // Prometheus asks for OpenMetrics first; the first-token bucket of this request carries
    // its trace.
    let res = client()
        .get(format!("http://{addr}/monitoring/metrics/prometheus"))
        .header(
            header::ACCEPT,
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        )
        .send()
        .await
        .unwrap();
    assert!(
        res.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text; version=1.0.0")
    );
    let scrape = res.text().await.unwrap();
    assert!(scrape.ends_with("# EOF\n"));
    // Each timing histogram carries the request's trace in the bucket its own figure fell in.
    let exemplar = format!("# {{trace_id=\"{TRACE_ID}\",span_id=\"{span_id}\"}}");
    assert!(record.output_tokens > 1, "{record:?}");
    for (metric, figure) in [
        (
            "gen_ai_server_time_to_first_token_seconds",
            record.time_to_first_token,
        ),
        (
            "gen_ai_server_time_per_output_token_seconds",
            record.time_per_output_token,
        ),
        (
            "gen_ai_server_request_duration_seconds",
            Some(record.duration),
        ),
    ] {
        let figure = figure
            .unwrap_or_else(|| panic!("{metric}: the record has the figure: {record:?}"))
            .as_secs_f64();
        exemplar_in_its_bucket(&scrape, metric, &exemplar, figure);
    }

    // Plain text stays the default, without exemplars.
    let plain = client()
        .get(format!("http://{addr}/monitoring/metrics/prometheus"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!plain.contains(TRACE_ID) && !plain.contains("# EOF"));
}

/// The one bucket line of `metric` that carries `exemplar`: its value is `figure`, and the
/// bucket is the one `figure` falls in (above the previous bound, at most its own).
fn exemplar_in_its_bucket(scrape: &str, metric: &str, exemplar: &str, figure: f64) {
    let buckets: Vec<&str> = scrape
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}_bucket{{")))
        .collect();
    let le = |line: &str| -> f64 {
        let v = line
            .split("le=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap();
        if v == "+Inf" {
            f64::INFINITY
        } else {
            v.parse().unwrap()
        }
    };
    let carrying: Vec<usize> = (0..buckets.len())
        .filter(|&i| buckets[i].contains(exemplar))
        .collect();
    assert_eq!(
        carrying.len(),
        1,
        "one {metric} bucket with the request's exemplar in\n{scrape}"
    );
    let i = carrying[0];
    let value: f64 = buckets[i]
        .split(exemplar)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        (value - figure).abs() < 1e-9,
        "{metric}: {value} vs {figure}"
    );
    let below = if i == 0 {
        f64::NEG_INFINITY
    } else {
        le(buckets[i - 1])
    };
    assert!(
        below < figure && figure <= le(buckets[i]),
        "{metric}: {figure} in the bucket of\n{}",
        buckets[i]
    );
}

#[tokio::test]
async fn malformed_traceparent_starts_a_new_trace() {
    let records = Records::default();
    let monitor = records.attach(Monitor::builder()).build().unwrap();
    // The same subscriber as the other test: the handler's `error!` callsite is shared, and its
    // interest is decided for every thread's subscriber at once.
    let fmt_out = Captured::default();
    let _guard = tracing::subscriber::set_default(subscriber(&monitor, &fmt_out));
    let addr = serve(app(&monitor)).await;
    let bad = [
        "garbage",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
    ];
    for value in bad {
        let res = client()
            .post(format!("http://{addr}/v1/chat/completions"))
            .header("traceparent", value)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{value}");
        res.bytes().await.unwrap();
    }
    let got = records.wait_for(bad.len()).await;
    let mut seen = std::collections::BTreeSet::new();
    for record in &got {
        let trace = record.trace.as_ref().unwrap();
        assert_ne!(trace.trace_id().to_string(), TRACE_ID);
        assert_eq!(trace.parent_span_id(), None, "a new trace has no parent");
        assert!(seen.insert(trace.trace_id()), "each new trace is its own");
    }
}

/// Requests that fail before any response, measured in process with no subscriber (so no span
/// makes a trace): an LLM call gets a trace for its exemplars, a plain request none unless its
/// caller sent one. The handler finds in its extensions only a trace that already exists.
#[test]
fn a_trace_is_started_for_llm_calls_only() {
    use tower::{Layer as _, Service as _};

    let records = Records::default();
    let monitor = records.attach(Monitor::builder()).build().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let handler_saw = seen.clone();
    let mut service = monitor
        .layer()
        .layer(tower::service_fn(move |request: http::Request<()>| {
            let trace = request.extensions().get::<TraceContext>().cloned();
            handler_saw.lock().unwrap().push(trace);
            std::future::ready(Err::<http::Response<String>, _>("upstream unreachable"))
        }));
    let mut send = |request: http::Request<()>| {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut future = std::pin::pin!(service.call(request));
        assert!(matches!(
            future.as_mut().poll(&mut cx),
            std::task::Poll::Ready(Err("upstream unreachable"))
        ));
    };
    let request = |headers: &[(&str, &str)]| {
        let mut builder = http::Request::post("/v1/chat/completions");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    };
    // A plain request: no LLM call (no stream asked for, no provider named).
    send(request(&[]));
    // A streaming request: an LLM call.
    send(request(&[("accept", "text/event-stream")]));
    // A plain request whose caller sent a trace: it keeps that one.
    let parent = traceparent();
    send(request(&[("traceparent", &parent)]));

    let got = records.snapshot();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].operation_name, None);
    assert_eq!(got[0].trace, None, "no trace started for a plain request");
    assert_eq!(got[1].operation_name, Some("chat"));
    let llm = got[1]
        .trace
        .as_ref()
        .expect("an LLM call's record has a trace");
    assert_eq!(llm.parent_span_id(), None, "a trace started here");
    let kept = got[2].trace.as_ref().expect("the caller's trace is kept");
    assert_eq!(kept.trace_id().to_string(), TRACE_ID);

    let seen = seen.lock().unwrap();
    assert_eq!(seen[0], None);
    assert_eq!(seen[1], None, "started after the handler, for the record");
    assert_eq!(
        seen[2].as_ref(),
        Some(kept),
        "the handler had the record's trace"
    );
}
