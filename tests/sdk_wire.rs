//! Wire fidelity with clients nobody here wrote: the official OpenAI and Anthropic Python SDKs
//! stream from the demo, and the monitor counts those streams and their tokens, and prices them
//! as `GET {prefix}/metrics` serves it. Needs python3 with the `openai` and `anthropic` packages
//! (`.ci/install` installs them).

mod common;

#[allow(dead_code)]
#[path = "../examples/demo/main.rs"]
mod demo;

use std::time::Duration;

use common::{Records, client, serve};
use serde_json::Value;
use tower_stream_monitor::parse::{ProviderFormat, TokenSource};
use tower_stream_monitor::{Monitor, Outcome};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_parse_the_demo_and_the_monitor_counts_them() {
    let records = Records::default();
    let monitor = records
        .attach(Monitor::builder().prefix("/api/v1/monitoring"))
        .build()
        .unwrap();
    let addr = serve(demo::app(&monitor)).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/check_sdks.py");
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("python3")
            .arg(script)
            .arg(format!("http://{addr}"))
            .output(),
    )
    .await
    .expect("the SDK script finishes within 2 minutes")
    .unwrap_or_else(|e| panic!("cannot run python3 ({e}): install Python 3 and `pip install openai anthropic` (see .ci/install)"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "the openai and anthropic Python packages are missing: `pip install openai anthropic` (see .ci/install)\n{stderr}"
    );
    assert!(output.status.success(), "SDK check failed:\n{stderr}");
    let parsed: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON line");
    assert_eq!(parsed["anthropic_auth_error"], 401);

    assert_eq!(
        parsed["stream_failures"],
        serde_json::json!({"openai_server": 500, "openai_rate_limit": 429, "openai_timeout": 504, "anthropic_server": 500})
    );

    let got = records.wait_for(8).await;
    // The SDKs' failed streaming requests (JSON Accept, "stream": true in the body) count as
    // streaming requests with their outcome, so the windows and triggers see them.
    for outcome in [Outcome::ServerError, Outcome::RateLimited, Outcome::Timeout] {
        assert!(
            got.iter().any(|r| r.outcome == outcome && r.streaming),
            "a streaming {outcome} in {got:#?}"
        );
    }
    assert_eq!(
        got.iter()
            .filter(|r| r.outcome == Outcome::ServerError && r.streaming)
            .count(),
        2
    );
    let by_format = |f: ProviderFormat| {
        got.iter()
            .find(|r| r.format == f)
            .unwrap_or_else(|| panic!("{f:?} in {got:#?}"))
    };
    let chat = by_format(ProviderFormat::OpenAiChat);
    assert_eq!(
        (&*chat.provider, &*chat.model, chat.output_tokens),
        ("openai", "gpt-4o-mini", 12)
    );
    // The streams that read part of their prompt from the cache (x-sim-cached-tokens).
    assert_eq!(
        (chat.input_tokens, chat.cache_read_input_tokens),
        (Some(12 + 1024), Some(1024))
    );
    assert_eq!(
        (chat.token_source, chat.outcome),
        (TokenSource::Reported, Outcome::Ok)
    );
    assert_eq!(by_format(ProviderFormat::OpenAiResponses).output_tokens, 7);
    let claude = by_format(ProviderFormat::AnthropicMessages);
    assert_eq!(
        (&*claude.provider, claude.output_tokens, claude.input_tokens),
        ("anthropic", 9, Some(12 + 2048))
    );
    assert_eq!(claude.cache_read_input_tokens, Some(2048));
    assert!(
        got.iter()
            .any(|r| r.outcome == Outcome::AuthError && &*r.provider == "anthropic")
    );
    // The figures as served over HTTP, not read in process.
    let body: Value = client()
        .get(format!("http://{addr}/api/v1/monitoring/metrics"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .expect("/metrics is JSON");
    assert_eq!(body["status"], "success", "{body}");
    let metrics = &body["data"];
    let usd = |v: &Value| {
        v.as_f64()
            .unwrap_or_else(|| panic!("a number of USD: {v} in {metrics}"))
    };
    // Each stream's cost: the usage the SDK parsed, times prices written here (USD per million
    // tokens: input, output, cache read, cache write), to the pico-dollar; beside it the cost
    // of its model in /metrics (spend.by_model: the other calls of these models used no token,
    // so cost nothing).
    let priced = [
        (
            ProviderFormat::OpenAiChat,
            "openai_chat",
            (0.15, 0.60, 0.075, 0.15),
        ),
        (
            ProviderFormat::OpenAiResponses,
            "openai_responses",
            (2.0, 8.0, 0.50, 2.0),
        ),
        (
            ProviderFormat::AnthropicMessages,
            "anthropic",
            (3.0, 15.0, 0.30, 3.75),
        ),
    ];
    let mut total = 0;
    for (format, key, (input, output, read, write)) in priced {
        let usage: Vec<u64> = parsed["stream_usage"][key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} usage in {parsed}"))
            .iter()
            .map(|n| n.as_u64().expect("a token count"))
            .collect();
        let per_token = |usd_per_million: f64| (usd_per_million * 1e6).round() as u64;
        let expected = (usage[0] - usage[2] - usage[3]) * per_token(input)
            + usage[2] * per_token(read)
            + usage[3] * per_token(write)
            + usage[1] * per_token(output);
        let record = by_format(format);
        let model = record.response_model.as_deref().unwrap_or(&record.model);
        let served = usd(&metrics["spend"]["by_model"][model]["cost_usd"]);
        assert!(
            (served - expected as f64 * 1e-12).abs() <= 1e-15,
            "{key} ({model}): /metrics says ${served}, the SDK's usage {usage:?} ${}",
            expected as f64 * 1e-12
        );
        total += expected;
    }
    // The cached tokens were priced at the cache-read rate: without them the chat stream would
    // cost 1024 × (0.15 - 0.075) and the Anthropic one 2048 × (3 - 0.30) micro-dollars more.
    assert!(
        parsed["stream_usage"]["openai_chat"][2] == 1024
            && parsed["stream_usage"]["anthropic"][2] == 2048,
        "{parsed}"
    );
    let streams = &metrics["streaming_5min"];
    let served = usd(&streams["cost_usd"]);
    assert!(
        (served - total as f64 * 1e-12).abs() <= 1e-15,
        "/metrics streaming_5min.cost_usd ${served}, the SDKs' usage ${}",
        total as f64 * 1e-12
    );
    assert_eq!(streams["total_tokens"], 12 + 7 + 9);
    assert_eq!(metrics["requests_5min"]["auth_errors"], 1);
    assert_eq!(streams["streaming_errors"], 4);
    assert_eq!(streams["timeouts"], 1);
}
