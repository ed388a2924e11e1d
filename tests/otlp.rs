//! OTLP export (feature `otlp`) against a receiver that decodes what arrives with the official
//! OpenTelemetry protobuf types (`opentelemetry-proto`): the GenAI metrics have the names, units
//! and bucket boundaries the conventions state (written out here, not taken from the crate's
//! table), the conventions' attributes, and the counts of the traffic sent; the standard
//! `OTEL_*` variables configure the export. Run with `cargo test --features otlp` (`.ci/run`
//! tests every feature).

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::OriginalUri;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use common::{Records, client, fixture, paced_body, serve, split_events};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{HistogramDataPoint, Metric, metric};
use prost::Message;
use tower_stream_monitor::otlp::OtlpExporter;
use tower_stream_monitor::{Monitor, StreamLabels};

/// The units of the GenAI semantic conventions (`docs/gen-ai/gen-ai-metrics.md` and
/// `docs/gen-ai/gen-ai-inference-usage-metrics.md`) for every metric the export may send.
const CONVENTION_UNITS: [(&str, &str); 9] = [
    ("gen_ai.server.time_to_first_token", "s"),
    ("gen_ai.server.time_per_output_token", "s"),
    ("gen_ai.server.request.duration", "s"),
    ("gen_ai.client.token.usage", "{token}"),
    (
        "gen_ai.client.inference.usage.detailed.input_tokens",
        "{token}",
    ),
    (
        "gen_ai.client.inference.usage.detailed.output_tokens",
        "{token}",
    ),
    (
        "gen_ai.client.inference.usage.detailed.cache_read.input_tokens",
        "{token}",
    ),
    (
        "gen_ai.client.inference.usage.detailed.cache_write.input_tokens",
        "{token}",
    ),
    (
        "gen_ai.client.inference.usage.detailed.reasoning.output_tokens",
        "{token}",
    ),
];

/// The conventions' advisory bucket boundaries (`ExplicitBucketBoundaries`).
const ADVISED_TIME_TO_FIRST_TOKEN: [f64; 16] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
const ADVISED_REQUEST_DURATION: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
const ADVISED_TIME_PER_OUTPUT_TOKEN: [f64; 13] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];
const ADVISED_TOKEN_USAGE: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// `bounds` ascending, holding every advised boundary, and beyond them exactly `extras` (the
/// boundaries the README documents as the crate's own).
fn advised_plus(bounds: &[f64], advised: &[f64], extras: &[f64]) {
    assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{bounds:?}");
    for b in advised {
        assert!(bounds.contains(b), "advised bound {b} in {bounds:?}");
    }
    let added: Vec<f64> = bounds
        .iter()
        .copied()
        .filter(|b| !advised.contains(b))
        .collect();
    assert_eq!(added, extras, "bounds beyond the advised list");
}

/// What a collector received: the path each request was sent to, its headers, its body.
type Received = Arc<Mutex<Vec<(String, HeaderMap, ExportMetricsServiceRequest)>>>;

/// A collector's OTLP/HTTP metrics endpoint, at the standard `/v1/metrics` and at a path of its
/// own, `/collector/metrics`: every request body decoded and kept.
async fn receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let store = received.clone();
    let handler = post(
        move |OriginalUri(uri): OriginalUri, headers: HeaderMap, body: Bytes| {
            let store = store.clone();
            async move {
                assert_eq!(
                    headers[header::CONTENT_TYPE],
                    "application/x-protobuf",
                    "OTLP/HTTP protobuf"
                );
                let request = ExportMetricsServiceRequest::decode(body)
                    .expect("an ExportMetricsServiceRequest");
                store
                    .lock()
                    .unwrap()
                    .push((uri.path().to_owned(), headers, request));
                StatusCode::OK
            }
        },
    );
    let app = Router::new()
        .route("/v1/metrics", handler.clone())
        .route("/collector/metrics", handler);
    let addr = serve(app).await;
    (format!("http://{addr}"), received)
}

/// The metrics of every request received.
fn metrics_of(received: &[(String, HeaderMap, ExportMetricsServiceRequest)]) -> Vec<&Metric> {
    received
        .iter()
        .flat_map(|(_, _, r)| &r.resource_metrics)
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .collect()
}

fn histogram(m: &Metric) -> Vec<HistogramDataPoint> {
    match &m.data {
        Some(metric::Data::Histogram(h)) => h.data_points.clone(),
        other => panic!("{} is a histogram: {other:?}", m.name),
    }
}

/// The OpenAI chat fixture, one event every 2 ms: every stream has a time per output token.
fn openai_stream() -> axum::body::Body {
    paced_body(
        split_events(&fixture("openai-chat.sse")),
        Duration::from_millis(1),
        Duration::from_millis(2),
    )
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
    let exporter = OtlpExporter::new(&endpoint, Some(Duration::from_secs(3600))).unwrap();
    let records = Records::default();
    let monitor = records
        .attach(Monitor::builder())
        .otlp(exporter.clone())
        .build()
        .unwrap();
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
                    openai_stream(),
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
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(monitor.snapshot().requests_5min.total_requests, 5);
    let flushing = exporter.clone();
    tokio::task::spawn_blocking(move || flushing.shutdown())
        .await
        .unwrap()
        .expect("the export is flushed");

    let received = received.lock().unwrap();
    assert!(received.iter().all(|(path, _, _)| path == "/v1/metrics"));
    let metrics = metrics_of(&received);
    let find = |name: &str| -> &Metric {
        metrics.iter().find(|m| m.name == name).unwrap_or_else(|| {
            panic!(
                "{name} exported; got {:?}",
                metrics.iter().map(|m| &m.name).collect::<Vec<_>>()
            )
        })
    };
    // Every exported name is one the conventions define, in their unit.
    for m in &metrics {
        let (_, unit) = CONVENTION_UNITS
            .iter()
            .find(|(name, _)| *name == m.name)
            .unwrap_or_else(|| panic!("{} is not a GenAI convention metric", m.name));
        assert_eq!(m.unit, *unit, "{}", m.name);
    }
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

    // First token: the three streams; the advised bounds, plus the README's 2, 20, 40, 80 s.
    let ttft = histogram(find("gen_ai.server.time_to_first_token"));
    assert_eq!(ttft.len(), 1);
    assert_eq!(attributes(&ttft[0].attributes), base(&[]));
    assert_eq!(ttft[0].count, 3);
    advised_plus(
        &ttft[0].explicit_bounds,
        &ADVISED_TIME_TO_FIRST_TOKEN,
        &[2.0, 20.0, 40.0, 80.0],
    );

    // Time per output token: the three streams, each its own figure, the advised bounds exactly.
    let tpot = find("gen_ai.server.time_per_output_token");
    assert_eq!(tpot.unit, "s");
    let tpot = histogram(tpot);
    assert_eq!(tpot.len(), 1);
    assert_eq!(attributes(&tpot[0].attributes), base(&[]));
    assert_eq!(tpot[0].count, 3);
    assert_eq!(
        tpot[0].explicit_bounds,
        ADVISED_TIME_PER_OUTPUT_TOKEN.to_vec()
    );
    let recorded: f64 = records
        .snapshot()
        .iter()
        .filter_map(|r| r.time_per_output_token)
        .map(|d| d.as_secs_f64())
        .sum();
    let exported = tpot[0].sum.expect("a sum");
    assert!(
        recorded > 0.0 && (exported - recorded).abs() < 1e-9,
        "{exported} vs the records' {recorded}"
    );

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
    // The advised bounds, plus the README's 163.84 and 327.68 s.
    advised_plus(
        &failed.explicit_bounds,
        &ADVISED_REQUEST_DURATION,
        &[163.84, 327.68],
    );
    assert_eq!(ok.explicit_bounds, failed.explicit_bounds);

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
    for t in ["output", "input"] {
        assert_eq!(of_type(t).explicit_bounds, ADVISED_TOKEN_USAGE.to_vec());
    }

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

/// Set only in the child processes the tests below start, which run
/// [`otel_variables_configure_the_export`] again: as [`export_one_stream_from_env`] when it is
/// [`EXPORTS`], as [`a_failed_export_reaches_the_error_layer`] when it is [`FAILS`].
const CHILD: &str = "OTLP_TEST_CHILD";
const EXPORTS: &str = "exports";
const FAILS: &str = "fails";

/// Runs the child `mode` with only the `OTEL_*` variables in `vars` (none of the environment's
/// own) and the others in `vars`, and no periodic push (the child's shutdown sends everything,
/// once); fails unless it succeeds. Returns its standard output.
async fn run_child(mode: &str, vars: &[(&str, &str)]) -> String {
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap());
    child.args([
        "--exact",
        "otel_variables_configure_the_export",
        "--nocapture",
    ]);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OTEL_") {
            child.env_remove(name);
        }
    }
    child
        .env(CHILD, mode)
        .env("OTEL_METRIC_EXPORT_INTERVAL", "3600000")
        .envs(vars.iter().copied());
    let output = child.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{mode} {vars:?}: the child failed\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// `OtlpExporter::from_env` in a child process (the variables are the process's own): the
/// endpoint with `/v1/metrics` appended, or the metrics endpoint as is; the headers; the
/// service name and resource attributes on what arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_variables_configure_the_export() {
    match std::env::var(CHILD).as_deref() {
        Ok(EXPORTS) => return export_one_stream_from_env().await,
        Ok(FAILS) => return a_failed_export_reaches_the_error_layer().await,
        _ => {}
    }
    let (endpoint, received) = receiver().await;
    for (variable, value, path) in [
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            endpoint.clone(),
            "/v1/metrics",
        ),
        (
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            format!("{endpoint}/collector/metrics"),
            "/collector/metrics",
        ),
    ] {
        run_child(
            EXPORTS,
            &[
                (variable, &value),
                ("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-key=k-123"),
                ("OTEL_SERVICE_NAME", "checkout-api"),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "deployment.environment.name=staging,service.version=1.4.2",
                ),
            ],
        )
        .await;

        let mut received = received.lock().unwrap();
        assert!(!received.is_empty(), "{variable}: nothing arrived");
        for (at, headers, request) in received.iter() {
            assert_eq!(at, path, "{variable}");
            assert_eq!(headers["x-collector-key"], "k-123", "{variable}");
            for resource_metrics in &request.resource_metrics {
                let resource = attributes(
                    &resource_metrics
                        .resource
                        .as_ref()
                        .expect("a resource")
                        .attributes,
                );
                for expected in [
                    ("service.name", "checkout-api"),
                    ("deployment.environment.name", "staging"),
                    ("service.version", "1.4.2"),
                ] {
                    let expected = (expected.0.to_owned(), expected.1.to_owned());
                    assert!(resource.contains(&expected), "{expected:?} in {resource:?}");
                }
            }
        }
        // The child's one stream arrived.
        let metrics = metrics_of(&received);
        let ttft = metrics
            .iter()
            .find(|m| m.name == "gen_ai.server.time_to_first_token")
            .unwrap_or_else(|| panic!("{variable}: first token exported"));
        assert_eq!(histogram(ttft)[0].count, 1, "{variable}");
        received.clear();
    }
}

/// One OpenAI chat stream through `monitor`'s layer, served and read whole.
async fn stream_once(monitor: &Monitor) {
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            post(|| async {
                (
                    StreamLabels::new("openai").with_model("gpt-4o-mini"),
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    openai_stream(),
                )
                    .into_response()
            }),
        )
        .layer(monitor.layer());
    let addr = serve(app).await;
    let body = client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("[DONE]"));
}

/// The child's part of [`otel_variables_configure_the_export`]: one stream through a monitor
/// whose exporter the `OTEL_*` variables configure, then the flush.
async fn export_one_stream_from_env() {
    let exporter = OtlpExporter::from_env().expect("an exporter from the OTEL_* variables");
    let records = Records::default();
    let monitor = records
        .attach(Monitor::builder())
        .otlp(exporter.clone())
        .build()
        .unwrap();
    stream_once(&monitor).await;
    records.wait_for(1).await;
    tokio::task::spawn_blocking(move || exporter.shutdown())
        .await
        .unwrap()
        .expect("the export is flushed");
}

/// A certificate authority of the test's own, its certificate written to `file` (PEM).
fn new_ca(file: &std::path::Path) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(file, ca.pem()).unwrap();
    ca
}

/// A collector's OTLP/HTTP endpoint over TLS, as hosted collectors serve it: a certificate for
/// `127.0.0.1` from a CA of the test's own, written to `ca_file` for the client to trust.
async fn tls_receiver(ca_file: &std::path::Path) -> (String, Received) {
    use rcgen::{CertificateParams, KeyPair};
    use tokio_rustls::rustls::ServerConfig;
    use tokio_rustls::rustls::pki_types::PrivateKeyDer;

    let ca = new_ca(ca_file);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    // The plain receiver's app, behind TLS.
    let (plain, received) = receiver().await;
    let plain = plain.trim_start_matches("http://").to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let plain = plain.clone();
            tokio::spawn(async move {
                // A handshake the client refuses ends here; the test then finds nothing arrived.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut upstream = tokio::net::TcpStream::connect(&plain).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    (format!("https://127.0.0.1:{port}"), received)
}

/// Hosted collectors are `https://`: the export reaches one, trusting the CA that
/// `SSL_CERT_FILE` names (the platform's store otherwise), and reaches nothing when the
/// collector's certificate is not trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_reaches_an_https_collector() {
    let dir = std::env::temp_dir().join(format!("otlp-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    let (endpoint, received) = tls_receiver(&ca_file).await;
    run_child(
        EXPORTS,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("SSL_CERT_FILE", ca_file.to_str().unwrap()),
        ],
    )
    .await;
    {
        let received = received.lock().unwrap();
        let metrics = metrics_of(&received);
        let ttft = metrics
            .iter()
            .find(|m| m.name == "gen_ai.server.time_to_first_token")
            .expect("first token exported over TLS");
        assert_eq!(histogram(ttft)[0].count, 1);
    }

    // Another CA, which the collector's certificate was not issued by: nothing arrives, and the
    // child's shutdown says so.
    received.lock().unwrap().clear();
    let other_ca = dir.join("other-ca.pem");
    new_ca(&other_ca);
    let output = run_child(
        FAILS,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("SSL_CERT_FILE", other_ca.to_str().unwrap()),
        ],
    )
    .await;
    assert!(received.lock().unwrap().is_empty());
    assert!(output.contains("shutdown: Err"), "{output}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An export that fails (no collector listening) is logged by the OpenTelemetry SDK at WARN or
/// ERROR, so it reaches the app's logs and the monitor's own error records (`/errors`), and
/// `shutdown` returns the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_export_is_logged() {
    // A port nothing listens on: bound, then closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let output = run_child(FAILS, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]).await;
    assert!(output.contains("shutdown: Err"), "{output}");
}

/// The child's part of [`a_failed_export_is_logged`] and of the untrusted collector in
/// [`the_export_reaches_an_https_collector`]: one record through a monitor whose error layer is
/// the process's subscriber, then the shutdown; the SDK's WARN or ERROR events about the failed
/// export must be in the monitor's error records.
async fn a_failed_export_reaches_the_error_layer() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let exporter = OtlpExporter::from_env().expect("an exporter from the OTEL_* variables");
    let monitor = Monitor::builder().otlp(exporter.clone()).build().unwrap();
    tracing_subscriber::registry()
        .with(monitor.error_layer())
        .init();
    stream_once(&monitor).await;
    let shutdown = tokio::task::spawn_blocking(move || exporter.shutdown())
        .await
        .unwrap();
    println!("shutdown: {shutdown:?}");
    assert!(shutdown.is_err());
    let page = monitor.errors(&tower_stream_monitor::errors::ErrorQuery {
        target: Some("opentelemetry".to_owned()),
        ..Default::default()
    });
    for record in &page.errors {
        println!("{}: {} {:?}", record.target, record.message, record.fields);
    }
    assert!(
        page.total > 0,
        "no OpenTelemetry event in the error records"
    );
}

/// Every attribute set is its own OTLP data point: 300 models, each with every outcome (so
/// `error.type` takes each failure's value), are 2,400 attribute sets for the request duration,
/// more than the SDK's default of 2,000 an instrument keeps; under caps that keep every model,
/// all arrive apart, none folded into the SDK's `otel.metric.overflow` point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attribute_set_is_its_own_data_point() {
    use tower_stream_monitor::{Outcome, StreamRecord};
    const MODELS: usize = 300;
    let (endpoint, received) = receiver().await;
    let exporter = OtlpExporter::new(&endpoint, Some(Duration::from_secs(3600))).unwrap();
    let monitor = Monitor::builder()
        .label_cardinality(MODELS + 10)
        // A quarter of the label sets is kept for those that request headers name.
        .max_label_sets(2 * MODELS)
        .otlp(exporter.clone())
        .build()
        .unwrap();
    for i in 0..MODELS {
        for outcome in Outcome::ALL {
            let mut r = StreamRecord::new("openai", format!("model-{i}"), "/v1/chat", outcome);
            r.duration = Duration::from_millis(200);
            monitor.ingest(r);
        }
    }
    tokio::task::spawn_blocking(move || exporter.shutdown())
        .await
        .unwrap()
        .expect("the export is flushed");
    let received = received.lock().unwrap();
    let metrics = metrics_of(&received);
    let duration = metrics
        .iter()
        .find(|m| m.name == "gen_ai.server.request.duration")
        .expect("durations exported");
    let sets: BTreeSet<Vec<(String, String)>> = histogram(duration)
        .iter()
        .map(|p| attributes(&p.attributes))
        .collect();
    assert!(
        sets.iter()
            .all(|set| !set.iter().any(|(k, _)| k == "otel.metric.overflow")),
        "folded into the overflow point"
    );
    let pairs: BTreeSet<(String, String)> = sets
        .iter()
        .map(|set| {
            let get = |key: &str| {
                set.iter()
                    .find(|(k, _)| k == key)
                    .map_or("ok".to_owned(), |(_, v)| v.clone())
            };
            (get("gen_ai.request.model"), get("error.type"))
        })
        .collect();
    assert_eq!(pairs.len(), MODELS * Outcome::ALL.len());
    assert!(histogram(duration).iter().all(|p| p.count == 1));
}

/// Past `max_label_sets` the rest fold into `other`, but each folded set keeps its operation
/// (a known one, or `other` for any of the app's own) and whether it has a response model:
/// eight sets, all kept apart, none in the SDK's `otel.metric.overflow` point, and as many
/// points as the Prometheus exposition has series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_sets_folded_into_other_are_their_own_data_points() {
    use tower_stream_monitor::{Outcome, StreamRecord};
    let (endpoint, received) = receiver().await;
    let exporter = OtlpExporter::new(&endpoint, Some(Duration::from_secs(3600))).unwrap();
    let monitor = Monitor::builder()
        .max_label_sets(1)
        .otlp(exporter.clone())
        .build()
        .unwrap();
    let ingest = |model: &str, operation: &'static str, response_model: bool| {
        for outcome in Outcome::ALL {
            let mut r = StreamRecord::new("openai", model, "/v1/chat", outcome);
            r.operation_name = Some(operation);
            if response_model {
                r.response_model = Some(r.model);
            }
            r.duration = Duration::from_millis(200);
            monitor.ingest(r);
        }
    };
    // The one set kept, then every set the rest fold into.
    ingest("kept", "chat", false);
    // Two operations of the app's own: both fold into `other`.
    let operations = [
        "chat",
        "text_completion",
        "generate_content",
        "embeddings",
        "rerank",
    ];
    let mut streams = Outcome::ALL.len() as u64;
    for (i, operation) in operations.into_iter().enumerate() {
        for response_model in [false, true] {
            ingest(
                &format!("folded-{i}-{response_model}"),
                operation,
                response_model,
            );
            streams += Outcome::ALL.len() as u64;
        }
    }
    let series = monitor
        .render_prometheus()
        .lines()
        .filter(|l| l.starts_with("gen_ai_server_request_duration_seconds_count"))
        .count();
    assert_eq!(series, 9 * Outcome::ALL.len());
    tokio::task::spawn_blocking(move || exporter.shutdown())
        .await
        .unwrap()
        .expect("the export is flushed");
    let received = received.lock().unwrap();
    // Cumulative: the last export holds every point.
    let last = received.last().expect("an export");
    let points: Vec<HistogramDataPoint> = metrics_of(std::slice::from_ref(last))
        .into_iter()
        .filter(|m| m.name == "gen_ai.server.request.duration")
        .flat_map(histogram)
        .collect();
    assert!(
        points.iter().all(|p| !p
            .attributes
            .iter()
            .any(|kv| kv.key == "otel.metric.overflow")),
        "folded into the overflow point"
    );
    assert_eq!(points.len(), series);
    assert_eq!(points.iter().map(|p| p.count).sum::<u64>(), streams);
}
