//! OTLP export (feature `otlp`) against a receiver that decodes what arrives with the official
//! OpenTelemetry protobuf types (`opentelemetry-proto`): the GenAI metrics have the
//! conventions' names, units, attributes and bucket boundaries, and the counts of the traffic
//! sent. Run with `cargo test --features otlp` (`.ci/run` tests every feature).

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use common::{client, fixture, serve};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric};
use prost::Message;
use tower_stream_monitor::names;
use tower_stream_monitor::otlp::OtlpExporter;
use tower_stream_monitor::{Monitor, StreamLabels};

/// A collector's OTLP/HTTP metrics endpoint: every request body decoded and kept.
async fn receiver() -> (String, Arc<Mutex<Vec<ExportMetricsServiceRequest>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let store = received.clone();
    let app = Router::new().route(
        "/v1/metrics",
        post(move |headers: axum::http::HeaderMap, body: Bytes| {
            let store = store.clone();
            async move {
                assert_eq!(
                    headers[header::CONTENT_TYPE],
                    "application/x-protobuf",
                    "OTLP/HTTP protobuf"
                );
                let request = ExportMetricsServiceRequest::decode(body)
                    .expect("an ExportMetricsServiceRequest");
                store.lock().unwrap().push(request);
                StatusCode::OK
            }
        }),
    );
    let addr = serve(app).await;
    (format!("http://{addr}"), received)
}

fn string(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

fn attributes(attrs: &[KeyValue]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = attrs
        .iter()
        .map(|kv| (kv.key.clone(), string(&kv.value)))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn genai_metrics_reach_a_collector_as_the_conventions_name_them() {
    let (endpoint, received) = receiver().await;
    // No periodic push during the test: everything goes at shutdown, once.
    let exporter =
        OtlpExporter::new(&endpoint, Some(std::time::Duration::from_secs(3600))).unwrap();
    let monitor = Monitor::builder().otlp(exporter.clone()).build().unwrap();
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            post(|headers: axum::http::HeaderMap| async move {
                if headers.contains_key("x-fail") {
                    return (
                        StatusCode::UNAUTHORIZED,
                        StreamLabels::new("openai"),
                        r#"{"error":{"type":"invalid_request_error","code":"invalid_api_key"}}"#,
                    )
                        .into_response();
                }
                (
                    StreamLabels::new("openai").with_model("gpt-4o-mini"),
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    Body::from(fixture("openai-chat.sse")),
                )
                    .into_response()
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .layer(monitor.layer());
    let addr = serve(app).await;
    let http = client();
    for _ in 0..3 {
        let body = http
            .post(format!("http://{addr}/v1/chat/completions"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(body.contains("[DONE]"));
    }
    let refused = http
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("x-fail", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    refused.bytes().await.unwrap();
    http.get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    // Every request is recorded before the flush.
    for _ in 0..100 {
        if monitor.snapshot().requests_5min.total_requests == 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(monitor.snapshot().requests_5min.total_requests, 5);
    let flushing = exporter.clone();
    tokio::task::spawn_blocking(move || flushing.shutdown())
        .await
        .unwrap()
        .expect("the export is flushed");

    let received = received.lock().unwrap();
    let metrics: Vec<&Metric> = received
        .iter()
        .flat_map(|r| &r.resource_metrics)
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .collect();
    let find = |name: &str| -> &Metric {
        metrics.iter().find(|m| m.name == name).unwrap_or_else(|| {
            panic!(
                "{name} exported; got {:?}",
                metrics.iter().map(|m| &m.name).collect::<Vec<_>>()
            )
        })
    };
    // Every exported name is one the table gives an OpenTelemetry name, with its unit.
    for m in &metrics {
        let entry = names::METRICS
            .iter()
            .find(|e| e.otel().map(|(n, _)| n) == Some(m.name.as_str()))
            .unwrap_or_else(|| panic!("{} is not in names::METRICS", m.name));
        assert_eq!(Some(m.unit.as_str()), entry.otel().map(|(_, u)| u));
    }

    let histogram = |m: &Metric| match &m.data {
        Some(metric::Data::Histogram(h)) => h.data_points.clone(),
        other => panic!("{} is a histogram: {other:?}", m.name),
    };
    let base = |extra: &[(&str, &str)]| {
        let mut v: Vec<(String, String)> = [
            ("gen_ai.provider.name", "openai"),
            ("gen_ai.request.model", "gpt-4o-mini"),
            ("http.route", "/v1/chat/completions"),
            ("gen_ai.operation.name", "chat"),
            ("gen_ai.response.model", "gpt-4o-mini-2024-07-18"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        v.sort();
        v
    };

    // First token: the three streams, with the table's bounds.
    let ttft = histogram(find("gen_ai.server.time_to_first_token"));
    assert_eq!(ttft.len(), 1);
    assert_eq!(attributes(&ttft[0].attributes), base(&[]));
    assert_eq!(ttft[0].count, 3);
    assert_eq!(ttft[0].explicit_bounds, names::TTFT_BUCKETS.to_vec());

    // Duration: three successes, and the refusal with `error.type` (no response model).
    let duration = histogram(find("gen_ai.server.request.duration"));
    assert_eq!(duration.len(), 2);
    let ok = duration
        .iter()
        .find(|p| !p.attributes.iter().any(|kv| kv.key == "error.type"))
        .unwrap();
    assert_eq!(attributes(&ok.attributes), base(&[]));
    assert_eq!(ok.count, 3);
    let failed = duration
        .iter()
        .find(|p| p.attributes.iter().any(|kv| kv.key == "error.type"))
        .unwrap();
    let failed_attrs = attributes(&failed.attributes);
    assert!(failed_attrs.contains(&("error.type".into(), "auth_error".into())));
    assert!(failed_attrs.contains(&("gen_ai.operation.name".into(), "chat".into())));
    assert_eq!(failed.count, 1);
    assert_eq!(failed.explicit_bounds, names::DURATION_BUCKETS.to_vec());

    // Token usage: 18 output and 24 input tokens per stream, as the fixture reports.
    let usage = histogram(find("gen_ai.client.token.usage"));
    let of_type = |t: &str| {
        usage
            .iter()
            .find(|p| attributes(&p.attributes) == base(&[("gen_ai.token.type", t)]))
            .unwrap_or_else(|| panic!("{t} tokens"))
            .clone()
    };
    assert_eq!(of_type("output").sum, Some(54.0));
    assert_eq!(of_type("input").sum, Some(72.0));
    assert_eq!(
        of_type("output").explicit_bounds,
        names::TOKEN_BUCKETS.to_vec()
    );

    let counter_total = |name: &str| -> i64 {
        match &find(name).data {
            Some(metric::Data::Sum(sum)) => {
                assert!(sum.is_monotonic, "{name} is a counter");
                sum.data_points
                    .iter()
                    .map(|p| match p.value {
                        Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(n)) => n,
                        other => panic!("{name}: {other:?}"),
                    })
                    .sum()
            }
            other => panic!("{name} is a sum: {other:?}"),
        }
    };
    assert_eq!(
        counter_total("gen_ai.client.inference.usage.detailed.output_tokens"),
        54
    );
    assert_eq!(
        counter_total("gen_ai.client.inference.usage.detailed.input_tokens"),
        72
    );
    assert_eq!(
        counter_total("gen_ai.client.inference.usage.detailed.cache_read.input_tokens"),
        0
    );

    // The plain request is no LLM call: in no exported series.
    let routes: BTreeSet<String> = metrics
        .iter()
        .filter_map(|m| match &m.data {
            Some(metric::Data::Histogram(h)) => Some(
                h.data_points
                    .iter()
                    .flat_map(|p| attributes(&p.attributes))
                    .collect::<Vec<_>>(),
            ),
            Some(metric::Data::Sum(s)) => Some(
                s.data_points
                    .iter()
                    .flat_map(|p| attributes(&p.attributes))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .filter(|(k, _)| k == "http.route")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(routes, ["/v1/chat/completions".to_owned()].into());
}
