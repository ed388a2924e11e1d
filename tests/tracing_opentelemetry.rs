//! Feature `tracing-opentelemetry`: in an app whose spans are OpenTelemetry spans, a request's
//! record takes the trace of the app's span around it, not a second one read from the
//! request's `traceparent`.

mod common;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;
use common::{Records, client, serve};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use tower_stream_monitor::{Monitor, StreamLabels};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt;

// Current-thread runtime: the thread-local subscriber sees the server's tasks.
#[tokio::test]
async fn the_apps_opentelemetry_trace_is_the_records() {
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("app")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let records = Records::default();
    let monitor = records.attach(Monitor::builder()).build().unwrap();
    // The span id of the app's request span, as OpenTelemetry gave it.
    let app_span = Arc::new(Mutex::new(None));
    let seen = app_span.clone();
    let app =
        Router::new()
            .route(
                "/v1/chat/completions",
                post(|| async {
                    // The trace the app's own spans are in, as its handler sees it.
                    let context = tracing::Span::current().context();
                    let trace_id = context.span().span_context().trace_id().to_string();
                    (
                    StreamLabels::new("openai"),
                    [
                        (header::CONTENT_TYPE.as_str(), "text/event-stream".to_owned()),
                        ("x-app-trace", trace_id),
                    ],
                    "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n",
                )
                    .into_response()
                }),
            )
            .layer(monitor.layer())
            // The app's request span, an OpenTelemetry span through the layer above.
            .layer(tower_http::trace::TraceLayer::new_for_http().on_request(
                move |_: &axum::http::Request<_>, span: &tracing::Span| {
                    let id = span.context().span().span_context().span_id();
                    *seen.lock().unwrap() = Some(id.to_string());
                },
            ));
    let addr = serve(app).await;

    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let res = client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("traceparent", caller)
        .send()
        .await
        .unwrap();
    let app_trace = res.headers()["x-app-trace"].to_str().unwrap().to_owned();
    res.bytes().await.unwrap();
    let record = records.one().await;
    let trace = record.trace.expect("an LLM call's record has a trace");

    assert_eq!(app_trace.len(), 32);
    assert_eq!(trace.trace_id().to_string(), app_trace);
    // The request's span is the app's, not one the monitor made up.
    let app_span = app_span.lock().unwrap().clone().expect("the app's span");
    assert_eq!(app_span.len(), 16);
    assert_eq!(trace.span_id().to_string(), app_span);
    assert_eq!(trace.parent_span_id(), None);
    // The app did not extract the caller's context: neither does the monitor behind its back.
    assert_ne!(
        trace.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    provider.shutdown().ok();
}
