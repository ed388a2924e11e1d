//! W3C trace context over a real server and client: a request's `traceparent` reaches its
//! record, its error record, its session log and the exemplar of its first-token bucket; a
//! malformed one is ignored (a new trace), never an error.

mod common;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;
use bytes::Bytes;
use common::{Captured, Records, client, paced_body, serve, subscriber};
use tower_stream_monitor::errors::ErrorQuery;
use tower_stream_monitor::{Monitor, StreamLabels};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{TRACE_ID}-{PARENT_SPAN}-01")
}

/// A handler that logs an error, then streams three OpenAI chat chunks.
fn app(monitor: &Monitor) -> Router {
    Router::new()
        .route(
            "/v1/chat/completions",
            post(|| async {
                tracing::error!(target: "app::upstream", "upstream retried once");
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
                    [(header::CONTENT_TYPE, "text/event-stream")],
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

    let body = client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("traceparent", traceparent())
        .header("tracestate", "congo=t61rcWkgMzE")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
    assert_eq!(trace.tracestate(), Some("congo=t61rcWkgMzE"));
    let span_id = trace.span_id().to_string();
    assert_ne!(span_id, PARENT_SPAN, "the request's own span is new");

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
        logs.lines()
            .any(|l| l.contains("stream started") && l.contains(TRACE_ID)),
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
    let exemplar = format!("# {{trace_id=\"{TRACE_ID}\",span_id=\"{span_id}\"}}");
    let ttft = record.time_to_first_token.unwrap().as_secs_f64();
    let line = scrape
        .lines()
        .find(|l| {
            l.starts_with("gen_ai_server_time_to_first_token_seconds_bucket{")
                && l.contains(&exemplar)
        })
        .unwrap_or_else(|| panic!("a first-token bucket with the request's exemplar in\n{scrape}"));
    // The exemplar's value is the request's own first token, in a bucket whose bound holds it.
    let value: f64 = line
        .split(&exemplar)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!((value - ttft).abs() < 1e-9, "{value} vs {ttft}");
    let le: f64 = line
        .split("le=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|v| {
            if v == "+Inf" {
                Some(f64::INFINITY)
            } else {
                v.parse().ok()
            }
        })
        .unwrap();
    assert!(ttft <= le, "{ttft} in the bucket le={le}");

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
