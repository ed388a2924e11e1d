//! The demo: an axum server with a simulated streaming LLM provider, monitored by
//! tower-stream-monitor. No API keys, no network.
//!
//! ```text
//! cargo run --release --example demo            # serves on 127.0.0.1:3000
//! cargo run --release --example demo -- --addr 127.0.0.1:8080
//! STREAMING_TIMEOUT=2 cargo run --release --example demo   # cut streams at 2 s
//! ```
//!
//! Then stream a chat completion in the OpenAI wire format:
//!
//! ```text
//! curl -N http://127.0.0.1:3000/v1/chat/completions -H 'content-type: application/json' \
//!   -H 'x-sim-tokens: 20' -d '{"model":"sim-gpt","stream":true,"stream_options":{"include_usage":true}}'
//! ```
//!
//! Simulation knobs (request headers): `x-sim-tokens` (default 64), `x-sim-ttft-ms` (200),
//! `x-sim-token-interval-ms` (10), `x-sim-fail` = `auth` | `rate_limit` | `server` | `stream_error`.
//! Each finished request is printed as one line.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use serde_json::{Value, json};
use tower_stream_monitor::{Monitor, StreamLabels, StreamRecord};

/// Simulation settings read from the request headers.
struct Simulation {
    tokens: u32,
    ttft: Duration,
    interval: Duration,
    fail: Option<String>,
}

impl Simulation {
    fn from_headers(headers: &HeaderMap) -> Result<Self, String> {
        fn number(headers: &HeaderMap, name: &str, default: u64, max: u64) -> Result<u64, String> {
            match headers.get(name) {
                None => Ok(default),
                Some(v) => v
                    .to_str()
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .filter(|n| *n <= max)
                    .ok_or_else(|| format!("{name} must be a whole number from 0 to {max}")),
            }
        }
        let fail = match headers.get("x-sim-fail").map(|v| v.to_str()) {
            None => None,
            Some(Ok(v @ ("auth" | "rate_limit" | "server" | "stream_error"))) => Some(v.to_owned()),
            Some(_) => {
                return Err("x-sim-fail must be auth, rate_limit, server or stream_error".into());
            }
        };
        Ok(Self {
            tokens: number(headers, "x-sim-tokens", 64, 100_000)? as u32,
            ttft: Duration::from_millis(number(headers, "x-sim-ttft-ms", 200, 600_000)?),
            interval: Duration::from_millis(number(
                headers,
                "x-sim-token-interval-ms",
                10,
                60_000,
            )?),
            fail,
        })
    }
}

/// An OpenAI-style error body.
fn openai_error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    (status, StreamLabels::new("openai"), Json(body)).into_response()
}

/// `POST /v1/chat/completions`, streaming in the OpenAI chat wire format.
async fn chat_completions(headers: HeaderMap, body: Bytes) -> Response {
    let sim = match Simulation::from_headers(&headers) {
        Ok(sim) => sim,
        Err(message) => {
            return openai_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_header",
                &message,
            );
        }
    };
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = request["model"].as_str().unwrap_or("sim-gpt").to_owned();
    let include_usage = request["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    match sim.fail.as_deref() {
        Some("auth") => {
            return openai_error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key",
                "Incorrect API key provided",
            );
        }
        Some("rate_limit") => {
            return openai_error(
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                "rate_limit_exceeded",
                "Rate limit reached",
            );
        }
        Some("server") => {
            return openai_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "server_error",
                "The server had an error",
            );
        }
        _ => {}
    }
    let fail_mid_stream = sim.fail.as_deref() == Some("stream_error");
    let chunk = move |delta: Value, usage: Value| {
        let c = json!({
            "id": "chatcmpl-sim", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": if delta.is_null() { json!([]) } else { json!([{"index": 0, "delta": delta, "finish_reason": null}]) },
            "usage": usage,
        });
        Bytes::from(format!("data: {c}\n\n"))
    };
    let tokens = sim.tokens;
    let stream = futures_util::stream::unfold(0u32, move |i| {
        let chunk = chunk.clone();
        let (ttft, interval) = (sim.ttft, sim.interval);
        async move {
            let frame = match i {
                0 => {
                    tokio::time::sleep(ttft).await;
                    chunk(json!({"role": "assistant", "content": ""}), Value::Null)
                }
                i if i <= tokens => {
                    if i > 1 {
                        tokio::time::sleep(interval).await;
                    }
                    if fail_mid_stream && i == tokens / 2 + 1 {
                        let error = json!({"error": {"message": "The server had an error while processing your request.", "type": "server_error", "param": null, "code": null}});
                        Bytes::from(format!("data: {error}\n\n"))
                    } else {
                        chunk(json!({"content": format!("tok{i} ")}), Value::Null)
                    }
                }
                i if i == tokens + 1 && include_usage => chunk(
                    Value::Null,
                    json!({"prompt_tokens": 12, "completion_tokens": tokens, "total_tokens": tokens + 12}),
                ),
                i if i <= tokens + 2 => Bytes::from_static(b"data: [DONE]\n\n"),
                _ => return None,
            };
            let next = if i == tokens + 1 && !include_usage {
                i + 2
            } else {
                i + 1
            };
            let next = if fail_mid_stream && i == tokens / 2 + 1 {
                u32::MAX
            } else {
                next
            };
            Some((Ok::<_, Infallible>(frame), next))
        }
    });
    (
        StreamLabels::new("openai"),
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

fn print_record(r: &StreamRecord) {
    let ms = |d: Option<Duration>| {
        d.map_or("-".to_owned(), |d| {
            format!("{:.1}ms", d.as_secs_f64() * 1000.0)
        })
    };
    println!(
        "{} {} {} outcome={} ttft={} duration={} tokens={} ({}) tokens/s={}",
        r.route,
        r.provider,
        r.model,
        r.outcome,
        ms(r.time_to_first_token),
        ms(Some(r.duration)),
        r.output_tokens,
        r.token_source.as_str(),
        r.tokens_per_second
            .map_or("-".to_owned(), |t| format!("{t:.1}")),
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr = "127.0.0.1:3000".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.next().ok_or("--addr needs HOST:PORT")?,
            other => {
                return Err(
                    format!("unknown argument {other:?}; usage: demo [--addr HOST:PORT]").into(),
                );
            }
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,tower_stream_monitor=warn".into()),
        )
        .init();
    let monitor = Monitor::builder()
        .prefix("/api/v1/monitoring")
        .with_env()?
        .on_record(print_record)
        .build()?;
    let app = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .layer(monitor.layer());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "demo listening on http://{addr} (stream timeout: {:?})",
        monitor.stream_timeout()
    );
    println!(
        "try: curl -N http://{addr}/v1/chat/completions -H 'x-sim-tokens: 20' -d '{{\"model\":\"sim-gpt\",\"stream\":true,\"stream_options\":{{\"include_usage\":true}}}}'"
    );
    axum::serve(listener, app).await?;
    Ok(())
}
