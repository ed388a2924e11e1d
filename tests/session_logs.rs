//! Session logs and the per-request span (crate docs, Session logs), captured from a real fmt subscriber.

mod common;

use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::routing::post;
use common::{Captured, Records, client, endless_sse, monitored, serve};
use tower_stream_monitor::{Monitor, StreamLabels};

// The default (current-thread) runtime: the thread-local subscriber sees every task.
#[tokio::test]
async fn handler_events_carry_request_context_and_timeouts_log_at_error() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (records, _monitor, addr) = monitored(
        Monitor::builder().stream_timeout(Duration::from_millis(200)),
        Router::new().route(
            "/v1/chat/completions",
            post(|| async {
                tracing::warn!(target: "app", "upstream slow");
                (
                    StreamLabels::new("openai"),
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    endless_sse(Duration::from_millis(20)),
                )
            }),
        ),
    )
    .await;
    client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("x-request-id", "req-77")
        .header("x-user-id", "user-42")
        .header("x-llm-provider", "openai")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    records.one().await;

    let logs = captured.text();
    let line = |needle: &str| {
        logs.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{logs}"))
            .to_owned()
    };
    let start = line("stream started");
    assert!(start.contains(" INFO "), "{start}");
    assert!(
        start.contains("request_id=req-77") && start.contains("user_id=user-42"),
        "{start}"
    );
    assert!(
        start.contains("route=/v1/chat/completions") && start.contains("provider=openai"),
        "{start}"
    );

    let handler = line("upstream slow");
    assert!(
        handler.contains("stream_request{"),
        "handler event inside the request span: {handler}"
    );
    assert!(
        handler.contains("request_id=req-77") && handler.contains("user_id=user-42"),
        "{handler}"
    );

    let first = line("first token");
    assert!(
        first.contains("DEBUG") && first.contains("latency_ms="),
        "{first}"
    );

    let timeout = line("Streaming timeout after 0.2s");
    assert!(timeout.contains("ERROR"), "{timeout}");
    assert!(
        timeout.contains("tower_stream_monitor::session"),
        "{timeout}"
    );
    assert!(timeout.contains("request_id=req-77"), "{timeout}");
}

/// The per-request alerting (crate docs, Session logs): a first token past the critical baseline logs WARN with the
/// provider, past warning INFO. Which line each request logs is judged on its own recorded
/// first token (the latency the line reports), so a busy machine that delays one moves its
/// line, not the test's result; the 600 ms one is always past critical.
#[tokio::test]
async fn slow_first_tokens_log_at_warn_and_info() {
    use tower_stream_monitor::health::{Baseline, Baselines};
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let records = Records::default();
    let baselines = Baselines {
        streaming_first_token: Baseline {
            target: 10.0,
            warning: 100.0,
            critical: 400.0,
            unit: "ms",
            higher_is_better: false,
        },
        ..Baselines::default()
    };
    let monitor = records
        .attach(Monitor::builder().baselines(baselines))
        .build()
        .unwrap();
    let addr = serve(common::provider_app(&monitor)).await;
    for ttft in ["600", "200", "0"] {
        client()
            .post(format!("http://{addr}/v1/chat/completions"))
            .header("x-provider", "anthropic")
            .header("x-ttft-ms", ttft)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    let first_tokens: Vec<f64> = records
        .wait_for(3)
        .await
        .iter()
        .map(|r| r.time_to_first_token.expect("a first token").as_secs_f64() * 1000.0)
        .collect();
    let past = |threshold: f64| first_tokens.iter().filter(|ms| **ms > threshold).count();
    let (expected_critical, expected_high) = (past(400.0), past(100.0) - past(400.0));
    assert!(expected_critical >= 1, "{first_tokens:?}");
    let logs = captured.text();
    let critical: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("Critical first token latency"))
        .collect();
    let high: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("High first token latency"))
        .collect();
    assert_eq!(
        (critical.len(), high.len()),
        (expected_critical, expected_high),
        "{first_tokens:?}\n{logs}"
    );
    assert!(
        critical[0].contains(" WARN ") && critical[0].contains("provider=anthropic"),
        "{}",
        critical[0]
    );
    assert!(
        high.iter()
            .all(|l| l.contains(" INFO ") && l.contains("provider=anthropic")),
        "{high:?}"
    );
}
