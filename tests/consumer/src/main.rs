//! The consumer check: tower-stream-monitor built as a downstream user builds it —
//! default features, none of its dev-dependencies — then redaction and the layer exercised.
//! Prints one line per check and exits non-zero if any failed.

use std::convert::Infallible;
use std::process::ExitCode;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt, service_fn};
use tower_stream_monitor::Monitor;
use tower_stream_monitor::errors::{ErrorQuery, ErrorRecord, redact};
use tracing_subscriber::layer::SubscriberExt;

const EVENT: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";

/// The outcome of every check so far.
#[derive(Default)]
struct Checks {
    failed: Vec<String>,
}

impl Checks {
    fn check(&mut self, name: &str, ok: bool, detail: impl FnOnce() -> String) {
        if ok {
            println!("ok    {name}");
        } else {
            let line = format!("{name}: {}", detail());
            println!("FAIL  {line}");
            self.failed.push(line);
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut checks = Checks::default();
    redaction(&mut checks);
    if let Err(e) = layer(&mut checks).await {
        checks.check("layer", false, || e);
    }
    if checks.failed.is_empty() {
        println!("consumer check passed");
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "consumer check FAILED ({} of the checks above); tower-stream-monitor misbehaves when \
         built with only its own features:",
        checks.failed.len()
    );
    for line in &checks.failed {
        eprintln!("  - {line}");
    }
    ExitCode::FAILURE
}

/// (a) `redact` directly, then through the error layer.
fn redaction(checks: &mut Checks) {
    for (input, secret) in [
        ("Authorization: Bearer abc.def", "abc.def"),
        ("PASSWORD=hunter2", "hunter2"),
        ("api_key=s3cr3t", "s3cr3t"),
        ("used sk-proj-AbCdEfGh12345678 today", "AbCdEfGh12345678"),
        (
            "Config { api_key: Some(\"s3cr3t-wrapped\") }",
            "s3cr3t-wrapped",
        ),
        ("next=%3Fapi_key%3Ds3cr3t-encoded", "s3cr3t-encoded"),
        ("groq gsk_AbCdEfGh1234567890AbCdEfGh", "AbCdEfGh1234567890"),
    ] {
        let out = redact(input);
        checks.check(
            &format!("redact({input:?}) hides {secret:?}"),
            !out.contains(secret),
            || format!("got {out:?}"),
        );
    }

    let monitor = match Monitor::builder().build() {
        Ok(m) => m,
        Err(e) => return checks.check("Monitor::builder().build()", false, || e.to_string()),
    };
    let subscriber = tracing_subscriber::registry().with(monitor.error_layer());
    tracing::subscriber::with_default(subscriber, || {
        tracing::error!(
            api_key = "s3cr3t-key-123",
            "upstream said Bearer abc.def-xyz"
        );
    });
    let page = monitor.errors(&ErrorQuery::default());
    let (records, total) = (page.errors, page.total);
    checks.check("error layer stored the event", total == 1, || {
        format!("{total} records")
    });
    let records: Vec<&ErrorRecord> = records.iter().map(|r| &**r).collect();
    let json = serde_json::to_string(&records).unwrap_or_else(|e| format!("<serde: {e}>"));
    checks.check(
        "error record keeps the message",
        json.contains("upstream said"),
        || json.clone(),
    );
    for secret in ["s3cr3t-key-123", "abc.def-xyz"] {
        checks.check(
            &format!("error record hides {secret:?}"),
            !json.contains(secret),
            || json.clone(),
        );
    }
}

/// (b) `monitor.layer()` around a plain tower service: one SSE stream, then the health endpoint.
async fn layer(checks: &mut Checks) -> Result<(), String> {
    let monitor = Monitor::builder().build().map_err(|e| e.to_string())?;
    let service = monitor.layer().layer(service_fn(|_: Request<()>| async {
        let body = format!("{EVENT}{EVENT}data: [DONE]\n\n");
        let mut response = Response::new(Full::new(Bytes::from(body)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
        Ok::<_, Infallible>(response)
    }));

    let request = Request::post("/v1/chat/completions")
        .body(())
        .map_err(|e| e.to_string())?;
    let Ok(response) = service.clone().oneshot(request).await;
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the stream: {e}"))?
        .to_bytes();
    checks.check(
        "the stream passes through whole",
        body.starts_with(EVENT.as_bytes()) && body.ends_with(b"data: [DONE]\n\n"),
        || format!("got {body:?}"),
    );

    let window = monitor.snapshot().streaming_5min;
    checks.check(
        "streaming_5min.total_streaming_requests == 1",
        window.total_streaming_requests == 1,
        || format!("got {}", window.total_streaming_requests),
    );
    checks.check("2 output tokens counted", window.total_tokens == 2, || {
        format!("got {}", window.total_tokens)
    });
    let prometheus = monitor.render_prometheus();
    checks.check(
        "render_prometheus has stream_monitor_requests_total",
        prometheus.contains("stream_monitor_requests_total"),
        || format!("got {prometheus:?}"),
    );

    let request = Request::get("/monitoring/health")
        .body(())
        .map_err(|e| e.to_string())?;
    let Ok(response) = service.oneshot(request).await;
    let status = response.status();
    checks.check(
        "GET /monitoring/health is 200",
        status == StatusCode::OK,
        || format!("got {status}"),
    );
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading /monitoring/health: {e}"))?
        .to_bytes();
    let health: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    checks.check(
        "GET /monitoring/health is JSON with a status",
        health.as_ref().is_some_and(|h| h.get("status").is_some()),
        || format!("got {:?}", String::from_utf8_lossy(&body)),
    );
    Ok(())
}
