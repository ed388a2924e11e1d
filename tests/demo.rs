//! The demo, in-process on a free port: `verify` passes against it, the seed's 100-user scenario
//! is recorded exactly, and each simulated provider speaks its own wire and error format.

mod common;

#[allow(dead_code)]
#[path = "../examples/demo/main.rs"]
mod demo;

#[allow(dead_code)]
#[path = "../examples/verify.rs"]
mod verify;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::{Records, client, serve};
use serde_json::{Value, json};
use tower_stream_monitor::parse::ProviderFormat;
use tower_stream_monitor::{Monitor, Outcome};

const PREFIX: &str = "/api/v1/monitoring";

async fn start(
    records: &Records,
    builder: tower_stream_monitor::MonitorBuilder,
) -> (Monitor, String) {
    let monitor = records.attach(builder.prefix(PREFIX)).build().unwrap();
    let addr = serve(demo::app(&monitor)).await;
    (monitor, format!("http://{addr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_against_the_demo() {
    let records = Records::default();
    let (_monitor, base) = start(&records, Monitor::builder()).await;
    // Some traffic first, so every section has data.
    client()
        .post(format!("{base}/v1/messages"))
        .header("x-sim-tokens", "5")
        .header("x-sim-ttft-ms", "5")
        .json(&json!({"stream": true}))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    records.wait_for(1).await;
    let checks = verify::verify(&base, PREFIX, None).await;
    let failed: Vec<_> = checks.iter().filter(|c| !c.passed).collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert!(checks.len() >= 25);
}

/// The seed's scenario: 100 concurrent streaming users, mixed providers, 2% injected failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_users_are_recorded_exactly() {
    let records = Records::default();
    let (monitor, base) = start(&records, Monitor::builder()).await;
    let options = demo::load::LoadOptions {
        base: base.clone(),
        users: 100,
        duration: None,
        requests_per_user: Some(3),
        mix: demo::load::Mix::default(),
        fail_rate: 0.02,
        headers: vec![("x-sim-tokens".into(), "16".into())],
    };
    let samples = demo::load::run(options, Arc::new(AtomicBool::new(false)), |_| {}).await;
    assert_eq!(samples.len(), 300);
    assert!(samples.iter().all(|s| !s.transport_error));
    let injected = samples.iter().filter(|s| s.injected.is_some()).count();
    assert_eq!(injected, 6, "2% of 300");
    let got = records.wait_for(300).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        records.snapshot().len(),
        300,
        "every request recorded exactly once"
    );
    assert_eq!(monitor.in_flight(), 0);
    for provider in ["openai", "anthropic", "gemini"] {
        assert!(
            got.iter().any(|r| &*r.provider == provider),
            "{provider} in the mix"
        );
    }

    let metrics: Value = client()
        .get(format!("{base}{PREFIX}/metrics"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let w = &metrics["data"]["streaming_5min"];
    assert_eq!(w["total_streaming_requests"], 300);
    assert_eq!(w["streaming_errors"], 6);
    let client_tokens: u64 = samples.iter().map(|s| s.tokens).sum();
    assert_eq!(w["total_tokens"], client_tokens);
    let cut_short = samples
        .iter()
        .filter(|s| s.injected == Some("stream_error"))
        .count() as u64;
    assert_eq!(
        cut_short, 2,
        "injected in turn: server, stream_error, rate_limit, auth, ..."
    );
    assert_eq!(
        client_tokens,
        294 * 16 + cut_short * 8,
        "16 per good stream, 8 before a mid-stream error"
    );
    let p95 = w["first_token_p95_ms"].as_f64().unwrap();
    assert!(
        (p95 - 200.0).abs() <= 20.0,
        "TTFT p95 {p95} ms within 10% of the simulated 200 ms"
    );
    let by = &w["by_outcome"];
    assert_eq!(by["ok"].as_u64().unwrap() + 6, 300);
}

#[tokio::test]
async fn each_provider_speaks_its_wire_format() {
    let records = Records::default();
    let (_monitor, base) = start(&records, Monitor::builder()).await;
    let http = client();
    let cases = [
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true}}),
            ProviderFormat::OpenAiChat,
            "openai",
        ),
        (
            "/v1/responses",
            json!({"model": "gpt-4.1", "stream": true}),
            ProviderFormat::OpenAiResponses,
            "openai",
        ),
        (
            "/v1/messages",
            json!({"model": "claude-sonnet-4-5", "stream": true}),
            ProviderFormat::AnthropicMessages,
            "anthropic",
        ),
        (
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            json!({}),
            ProviderFormat::Gemini,
            "gemini",
        ),
    ];
    for (i, (path, body, format, provider)) in cases.iter().enumerate() {
        let text = http
            .post(format!("{base}{path}"))
            .header("x-sim-tokens", "7")
            .header("x-sim-ttft-ms", "20")
            .json(body)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.contains("data: "), "{path}: {text}");
        let r = records.wait_for(i + 1).await.pop().unwrap();
        assert_eq!(r.format, *format, "{path}");
        assert_eq!(
            (&*r.provider, r.outcome, r.output_tokens),
            (*provider, Outcome::Ok, 7),
            "{path}"
        );
        assert_eq!(r.input_tokens, Some(12), "{path}: reported usage");
        assert!(r.time_to_first_token.unwrap() >= Duration::from_millis(20));
    }
    // The non-streaming OpenAI answer.
    let answer: Value = http
        .post(format!("{base}/v1/chat/completions"))
        .header("x-sim-tokens", "4")
        .header("x-sim-ttft-ms", "0")
        .json(&json!({"model": "gpt-4o-mini"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["usage"]["completion_tokens"], 4);
}

#[tokio::test]
async fn bad_knobs_get_a_400_in_the_providers_own_format() {
    let records = Records::default();
    let (_monitor, base) = start(&records, Monitor::builder()).await;
    let http = client();
    let ask = |path: &'static str, header: &'static str, value: &'static str| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move {
            let res = http
                .post(url)
                .header(header, value)
                .json(&json!({"stream": true}))
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = ask("/v1/chat/completions", "x-sim-tokens", "many").await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (400, Some("invalid_request_error"))
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-sim-tokens")
    );
    let (status, body) = ask("/v1/messages", "x-sim-fail", "sometimes").await;
    assert_eq!(
        (
            status,
            body["type"].as_str(),
            body["error"]["type"].as_str()
        ),
        (400, Some("error"), Some("invalid_request_error"))
    );
    let (status, body) = ask(
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        "x-sim-ttft-ms",
        "-5",
    )
    .await;
    assert_eq!(
        (status, body["error"]["status"].as_str()),
        (400, Some("INVALID_ARGUMENT"))
    );
    let (status, body) = ask("/v1/responses", "x-sim-stall-ms", "9999999999").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_header"))
    );
}

#[tokio::test]
async fn injected_failures_classify_per_provider() {
    let records = Records::default();
    let (_monitor, base) = start(&records, Monitor::builder()).await;
    let http = client();
    let mut n = 0;
    for path in [
        "/v1/chat/completions",
        "/v1/messages",
        "/v1beta/models/g:streamGenerateContent?alt=sse",
        "/v1/responses",
    ] {
        for (fail, outcome) in [
            ("auth", Outcome::AuthError),
            ("rate_limit", Outcome::RateLimited),
            ("timeout", Outcome::Timeout),
            ("server", Outcome::ServerError),
            ("stream_error", Outcome::StreamError),
        ] {
            http.post(format!("{base}{path}"))
                .header("x-sim-fail", fail)
                .header("x-sim-tokens", "4")
                .header("x-sim-ttft-ms", "1")
                .json(&json!({"stream": true}))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            n += 1;
            let r = records.wait_for(n).await.pop().unwrap();
            assert_eq!(r.outcome, outcome, "{path} x-sim-fail: {fail}");
        }
    }
}

/// `STREAMING_TIMEOUT` (here 1 s) cuts a stalled stream with a final SSE error event.
#[tokio::test]
async fn streaming_timeout_from_the_environment_cuts_a_stall() {
    let records = Records::default();
    let builder = Monitor::builder()
        .with_vars(|name| (name == "STREAMING_TIMEOUT").then(|| "1".to_owned()))
        .unwrap();
    let (_monitor, base) = start(&records, builder).await;
    let started = std::time::Instant::now();
    let text = client()
        .post(format!("{base}/v1/chat/completions"))
        .header("x-sim-fail", "stall")
        .header("x-sim-tokens", "10")
        .header("x-sim-ttft-ms", "10")
        .json(&json!({"stream": true}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        text.contains("event: error\ndata: {\"error\":{\"message\":\"Streaming timeout after 1s\""),
        "{text}"
    );
    let r = records.one().await;
    assert_eq!(r.outcome, Outcome::Timeout);
    assert_eq!(r.output_tokens, 5, "the tokens before the stall");
}
