//! The demo, in-process on a free port: `verify` passes against it, 100 concurrent users are
//! recorded exactly, each simulated provider speaks its own wire and error format, and the load
//! report compares like with like.
//!
//! No test here asserts how long anything took: a loaded machine makes every wall-clock figure
//! longer. Latencies are checked against the client's own measurement of the same requests, or
//! against a floor the simulator's sleeps guarantee.

mod common;

#[allow(dead_code)]
#[path = "../examples/demo/main.rs"]
mod demo;

#[allow(dead_code)]
#[path = "../examples/verify.rs"]
mod verify;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, UNIX_EPOCH};

use common::{Records, client, get_json, serve};
use serde_json::{Value, json};
use tower_stream_monitor::parse::ProviderFormat;
use tower_stream_monitor::{Monitor, Outcome};

const PREFIX: &str = "/api/v1/monitoring";

/// A valid streaming request body for a simulated endpoint (Anthropic demands `max_tokens`).
fn streaming_body(path: &str) -> Value {
    if path.starts_with("/v1/messages") {
        json!({"stream": true, "max_tokens": 256})
    } else {
        json!({"stream": true})
    }
}

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
        .json(&streaming_body("/v1/messages"))
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

/// 100 concurrent streaming users, mixed providers, 2% injected failures.
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
        slow_down: None,
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
    for provider in ["openai", "anthropic", "gcp.gemini"] {
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
    // The monitor times first tokens server-side, inside the client's own timing of the same
    // requests, so per request it can only be shorter; its sketch is within 1% and ranks like
    // `load::quantile`. Nor can it undercut the simulator's 200 ms sleep before the first token.
    // Neither bound depends on how loaded the machine is.
    let mut client_ttft: Vec<f64> = samples
        .iter()
        .filter_map(|s| s.ttft)
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    assert_eq!(
        client_ttft.len(),
        300 - 4,
        "every stream but the 4 refused up front"
    );
    for (q, key) in [(0.50, "first_token_p50_ms"), (0.95, "first_token_p95_ms")] {
        let client = demo::load::quantile(&mut client_ttft, q);
        let monitor = w[key].as_f64().unwrap();
        assert!(
            monitor <= client * 1.05 + 5.0,
            "{key}: monitor {monitor} ms, client {client} ms for the same requests"
        );
        assert!(
            monitor >= 200.0 * 0.99,
            "{key}: monitor {monitor} ms under the simulated 200 ms"
        );
    }
    let by = &w["by_outcome"];
    assert_eq!(by["ok"].as_u64().unwrap() + 6, 300);
}

/// A run longer than the monitor's hour: its capacity figures are those of the last hour, on
/// both sides. Two hours of one request a second, each a second long: 1 in flight and 1
/// arrival a second, as the monitor's 60 one-minute slots say (before: the hour's totals over
/// the two hours' length, half of it).
#[test]
fn a_run_past_the_hour_is_compared_over_its_last_hour() {
    let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let samples: Vec<_> = (1..=7_200u64)
        .map(|i| demo::load::Sample {
            duration: Duration::from_secs(1),
            finished: start + Duration::from_secs(i),
            ..sample(0.0, 200)
        })
        .collect();
    let point = json!({"avg_in_flight": 1.0, "arrival_rate_per_second": 1.0,
                       "total_streaming_requests": 60, "avg_duration_ms": 1000.0,
                       "peak_in_flight": 1});
    let history = json!({
        "five_minutes": {"slot_seconds": 10, "points": vec![point.clone(); 30]},
        "one_hour": {"slot_seconds": 60, "points": vec![point; 60]},
    });
    let run = demo::Run {
        users: 1,
        started: start,
        elapsed: Duration::from_secs(7_200),
        cpu: None,
    };
    let c = demo::capacity(&samples, &run, &history).expect("figures");
    for (client, monitor) in [
        (c.client_arrivals, c.monitor_arrivals),
        (c.client_in_flight, c.monitor_in_flight),
    ] {
        assert!(
            (client - 1.0).abs() < 0.01 && (monitor - 1.0).abs() < 0.01,
            "{c:?}"
        );
    }
}

/// Little's law on the demo's load: the monitor's time-averaged in-flight count agrees with its
/// arrival rate times its mean duration, and with the client's own concurrency, measured from
/// its own send-to-end times; its sampled peak is at most the users the client ran. Figures are
/// compared with each other, never with a wall-clock bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn littles_law_holds_on_the_demo_load() {
    let records = Records::default();
    let (monitor, base) = start(&records, Monitor::builder()).await;
    let users = 30;
    let options = demo::load::LoadOptions {
        base: base.clone(),
        users,
        duration: None,
        requests_per_user: Some(4),
        mix: demo::load::Mix::default(),
        fail_rate: 0.0,
        // About 0.5 s a stream (200 ms to the first token, then 10 ms a token): long beside
        // what the client spends between requests.
        headers: vec![("x-sim-tokens".into(), "30".into())],
        slow_down: None,
    };
    let started = std::time::Instant::now();
    let started_at = std::time::SystemTime::now();
    let samples = demo::load::run(options, Arc::new(AtomicBool::new(false)), |_| {}).await;
    let run = demo::Run {
        users,
        started: started_at,
        elapsed: started.elapsed(),
        cpu: None,
    };
    assert_eq!(samples.len(), 120);
    records.wait_for(120).await;
    let history = serde_json::to_value(monitor.history()).unwrap();
    let c = demo::capacity(&samples, &run, &history).expect("figures");
    let near = |a: f64, b: f64| (a - b).abs() <= 0.10 * b;
    assert!(
        near(c.monitor_in_flight, c.monitor_arrivals * c.monitor_duration),
        "Little's law on the monitor's figures: {c:?}"
    );
    // Each request's time in the monitor lies within the client's own time for it (which adds
    // the network and the client's scheduling, more on a busy machine): the monitor's figures
    // are at most the client's (the in-flight average by at most its sampling's error), and
    // most of them.
    let within = |monitor: f64, client: f64| monitor <= 1.05 * client && monitor >= 0.75 * client;
    assert!(
        within(c.monitor_in_flight, c.client_in_flight),
        "the monitor's in-flight average against the client's: {c:?}"
    );
    assert!(near(c.monitor_arrivals, c.client_arrivals), "{c:?}");
    assert!(within(c.monitor_duration, c.client_duration), "{c:?}");
    assert!(
        c.monitor_peak as usize <= users && c.monitor_peak as usize >= users / 2,
        "a closed loop of {users} users: {c:?}"
    );
    // The report prints the same figures.
    let text = c.to_string();
    assert!(
        text.contains("in flight (time-averaged)") && text.contains("arrivals x mean duration")
    );
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
            json!({"model": "claude-sonnet-4-5", "stream": true, "max_tokens": 256}),
            ProviderFormat::AnthropicMessages,
            "anthropic",
        ),
        (
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            json!({}),
            ProviderFormat::Gemini,
            "gcp.gemini",
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
    // And Anthropic's, for `"stream": false`.
    let answer: Value = http
        .post(format!("{base}/v1/messages"))
        .header("x-sim-tokens", "4")
        .header("x-sim-ttft-ms", "0")
        .json(&json!({"model": "claude-sonnet-4-5", "stream": false, "max_tokens": 256}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["type"], "message");
    assert_eq!(answer["usage"]["output_tokens"], 4);
}

/// The sum of every sample of `name` whose labels include `provider`, in a Prometheus text
/// exposition; 0 when there is none.
fn prometheus_sum(text: &str, name: &str, provider: &str) -> f64 {
    let provider = format!("gen_ai_provider_name=\"{provider}\"");
    text.lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix('{'))
        .filter(|rest| rest.contains(&provider))
        .map(|rest| {
            let value = rest.rsplit_once(' ').unwrap().1;
            value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("{name}: {rest}"))
        })
        .sum()
}

/// Cached prompt tokens and reasoning tokens, as each provider reports them: every record has
/// the normalised totals and the parts, and so do the `/metrics` window and the Prometheus
/// counters.
#[tokio::test]
async fn cached_and_reasoning_tokens_are_reported_per_provider() {
    use tower_stream_monitor::names;
    use tower_stream_monitor::parse::FinishReason;

    const CACHED: u64 = 2048;
    const REASONING: u64 = 120;
    const TOKENS: u64 = 5;
    let records = Records::default();
    let (_monitor, base) = start(&records, Monitor::builder()).await;
    let http = client();
    // Path, body, provider, operation, whether reasoning is simulated there.
    let cases = [
        (
            "/v1/chat/completions",
            json!({"model": "gpt-5-mini", "stream": true, "stream_options": {"include_usage": true}}),
            "openai",
            "chat",
            true,
        ),
        (
            "/v1/responses",
            json!({"model": "o4-mini", "stream": true}),
            "openai",
            "chat",
            true,
        ),
        (
            "/v1/messages",
            json!({"model": "claude-sonnet-4-5", "stream": true, "max_tokens": 256}),
            "anthropic",
            "chat",
            false,
        ),
        (
            "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
            json!({}),
            "gcp.gemini",
            "generate_content",
            true,
        ),
    ];
    for (i, (path, body, provider, operation, reasoning)) in cases.iter().enumerate() {
        let text = http
            .post(format!("{base}{path}"))
            .header("x-sim-tokens", TOKENS.to_string())
            .header("x-sim-ttft-ms", "1")
            .header("x-sim-token-interval-ms", "1")
            .header("x-sim-cached-tokens", CACHED.to_string())
            .header("x-sim-reasoning-tokens", REASONING.to_string())
            .json(body)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.contains("data: "), "{path}: {text}");
        let r = records.wait_for(i + 1).await.pop().unwrap();
        assert_eq!(
            (&*r.provider, r.outcome),
            (*provider, Outcome::Ok),
            "{path}"
        );
        assert_eq!(r.input_tokens, Some(12 + CACHED), "{path}: cached included");
        assert_eq!(r.cache_read_input_tokens, Some(CACHED), "{path}");
        let (output, reasoning_part) = if *reasoning {
            (TOKENS + REASONING, Some(REASONING))
        } else {
            (TOKENS, None)
        };
        assert_eq!(r.output_tokens, output, "{path}: reasoning included");
        assert_eq!(r.reasoning_output_tokens, reasoning_part, "{path}");
        assert_eq!(r.finish_reason, Some(FinishReason::Stop), "{path}");
        assert_eq!(r.operation_name, Some(*operation), "{path}");
    }

    // The 5-minute window sums the parts over the four streams.
    let metrics = get_json(&http, &format!("{base}{PREFIX}/metrics")).await;
    let w = &metrics["data"]["streaming_5min"];
    assert_eq!(w["total_streaming_requests"], 4);
    assert_eq!(w["input_tokens"], 4 * (12 + CACHED));
    assert_eq!(w["cache_read_input_tokens"], 4 * CACHED);
    assert_eq!(w["total_tokens"], 4 * TOKENS + 3 * REASONING);
    assert_eq!(w["reasoning_output_tokens"], 3 * REASONING);
    assert_eq!(w["finish_reasons"]["stop"], 4);

    // The Prometheus counters, per provider (OpenAI's two APIs are two series). A record
    // reaches the exposition just after `on_record`: wait until all four did.
    let url = format!("{base}{PREFIX}/metrics/prometheus");
    let mut text = String::new();
    for _ in 0..100 {
        text = http.get(&url).send().await.unwrap().text().await.unwrap();
        let stops: f64 = ["openai", "anthropic", "gcp.gemini"]
            .iter()
            .map(|p| prometheus_sum(&text, names::FINISH_REASONS_TOTAL, p))
            .sum();
        if stops == 4.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (provider, streams, reasoning_streams) in [
        ("openai", 2.0, 2.0),
        ("anthropic", 1.0, 0.0),
        ("gcp.gemini", 1.0, 1.0),
    ] {
        let sum = |name| prometheus_sum(&text, name, provider);
        assert_eq!(
            sum(names::CACHE_READ_INPUT_TOKENS_TOTAL),
            streams * CACHED as f64,
            "{provider}\n{text}"
        );
        assert_eq!(
            sum(names::REASONING_OUTPUT_TOKENS_TOTAL),
            reasoning_streams * REASONING as f64,
            "{provider}\n{text}"
        );
        assert_eq!(
            sum(names::INPUT_TOKENS_TOTAL),
            streams * (12 + CACHED) as f64,
            "{provider}"
        );
        assert_eq!(
            sum(names::OUTPUT_TOKENS_TOTAL),
            streams * TOKENS as f64 + reasoning_streams * REASONING as f64,
            "{provider}"
        );
        assert_eq!(sum(names::FINISH_REASONS_TOTAL), streams, "{provider}");
    }
    for line in text
        .lines()
        .filter(|l| l.starts_with(names::CACHE_READ_INPUT_TOKENS_TOTAL))
    {
        assert!(
            line.contains(r#"gen_ai_token_modality="unknown""#),
            "{line}"
        );
    }
    assert!(
        text.contains(r#"finish_reason="stop""#),
        "finish reasons by label\n{text}"
    );
}

/// A stream the simulator cuts halfway (`x-sim-fail: cut`), ending its body cleanly as a relay
/// whose upstream dropped does: the client gets half the tokens and no error, and each provider's
/// stream is recorded `ok` with the finish reason `unfinished`, counted in the window.
#[tokio::test]
async fn a_stream_cut_halfway_is_ok_and_unfinished_in_every_format() {
    use tower_stream_monitor::parse::FinishReason;

    const TOKENS: u64 = 8;
    let records = Records::default();
    let (_monitor, base) = start(&records, Monitor::builder()).await;
    let http = client();
    let cases = [
        (
            "/v1/chat/completions",
            json!({"model": "gpt-5-mini", "stream": true}),
        ),
        ("/v1/responses", json!({"model": "o4-mini", "stream": true})),
        (
            "/v1/messages",
            json!({"model": "claude-sonnet-4-5", "stream": true, "max_tokens": 256}),
        ),
        (
            "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
            json!({}),
        ),
    ];
    for (i, (path, body)) in cases.iter().enumerate() {
        let response = http
            .post(format!("{base}{path}"))
            .header("x-sim-fail", "cut")
            .header("x-sim-tokens", TOKENS.to_string())
            .header("x-sim-ttft-ms", "1")
            .header("x-sim-token-interval-ms", "1")
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let text = response.text().await.unwrap();
        assert!(
            !text.contains("[DONE]") && !text.contains("error"),
            "{path}: {text}"
        );
        let r = records.wait_for(i + 1).await.pop().unwrap();
        assert_eq!(r.outcome, Outcome::Ok, "{path}");
        assert_eq!(
            r.output_tokens,
            TOKENS / 2,
            "{path}: the first half streamed"
        );
        assert_eq!(r.finish_reason, Some(FinishReason::Unfinished), "{path}");
    }
    let metrics = get_json(&http, &format!("{base}{PREFIX}/metrics")).await;
    let reasons = &metrics["data"]["streaming_5min"]["finish_reasons"];
    assert_eq!(reasons["unfinished"], cases.len(), "{reasons}");
    assert_eq!(reasons["stop"], 0, "{reasons}");
}

/// The usage parts in each provider's plain JSON answer, in its own shape.
#[tokio::test]
async fn non_streaming_answers_report_cached_and_reasoning_tokens() {
    let records = Records::default();
    let (_monitor, base) = start(&records, Monitor::builder()).await;
    let ask = |path: &'static str, body: Value| {
        let url = format!("{base}{path}");
        async move {
            client()
                .post(url)
                .header("x-sim-tokens", "4")
                .header("x-sim-ttft-ms", "0")
                .header("x-sim-token-interval-ms", "0")
                .header("x-sim-cached-tokens", "300")
                .header("x-sim-reasoning-tokens", "50")
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let chat = ask("/v1/chat/completions", json!({"model": "o3"})).await;
    assert_eq!(
        chat["usage"],
        json!({"prompt_tokens": 312, "completion_tokens": 54, "total_tokens": 366,
               "prompt_tokens_details": {"cached_tokens": 300, "audio_tokens": 0},
               "completion_tokens_details": {"reasoning_tokens": 50, "audio_tokens": 0,
                                             "accepted_prediction_tokens": 0,
                                             "rejected_prediction_tokens": 0}})
    );
    let message = ask(
        "/v1/messages",
        json!({"model": "claude-sonnet-4-5", "stream": false, "max_tokens": 256}),
    )
    .await;
    assert_eq!(
        message["usage"],
        json!({"input_tokens": 12, "cache_creation_input_tokens": 0,
               "cache_read_input_tokens": 300, "output_tokens": 4})
    );
    let gemini = ask("/v1beta/models/gemini-2.5-pro:generateContent", json!({})).await;
    assert_eq!(
        gemini["usageMetadata"],
        json!({"promptTokenCount": 312, "cachedContentTokenCount": 300,
               "candidatesTokenCount": 4, "thoughtsTokenCount": 50, "totalTokenCount": 366})
    );
    // Gemini leaves zero counts out.
    let plain: Value = client()
        .post(format!(
            "{base}/v1beta/models/gemini-2.5-pro:generateContent"
        ))
        .header("x-sim-tokens", "4")
        .header("x-sim-ttft-ms", "0")
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        plain["usageMetadata"],
        json!({"promptTokenCount": 12, "candidatesTokenCount": 4, "totalTokenCount": 16})
    );
}

#[tokio::test]
async fn bad_knobs_get_a_400_in_the_providers_own_format() {
    let records = Records::default();
    let (_monitor, base) = start(&records, Monitor::builder()).await;
    let http = client();
    let ask = |path: &'static str, header: &'static str, value: &'static str| {
        let http = http.clone();
        let url = format!("{base}{path}");
        let body = streaming_body(path);
        async move {
            let res = http
                .post(url)
                .header(header, value)
                .json(&body)
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
    for knob in ["x-sim-cached-tokens", "x-sim-reasoning-tokens"] {
        let (status, body) = ask("/v1/chat/completions", knob, "1000001").await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_header")),
            "{knob}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(knob) && message.contains("1000000"),
            "{message}"
        );
    }
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
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
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
                .json(&streaming_body(path))
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
    // Uncut, the stall would last 120 s and the stream end normally: the error event shows the
    // cut, so no upper bound on the time taken is needed.
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
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "not cut before the timeout"
    );
    assert!(
        text.contains("event: error\ndata: {\"error\":{\"message\":\"Streaming timeout after 1s\""),
        "{text}"
    );
    let r = records.one().await;
    assert_eq!(r.outcome, Outcome::Timeout);
    assert_eq!(r.output_tokens, 5, "the tokens before the stall");
}

const GEMINI_STREAM: &str = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse";

/// Posts `body` as JSON (whatever it holds) and returns the status and the parsed answer.
async fn post_raw(base: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let res = client()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .header("x-sim-ttft-ms", "0")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let parsed = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{path}: answer is not JSON ({e}): {text}"));
    (status, parsed)
}

/// The error shape each provider's API answers a bad request with.
fn assert_error_shape(path: &str, body: &Value) {
    let message = |v: &Value| v.as_str().is_some_and(|m| !m.is_empty());
    if path.starts_with("/v1/messages") {
        assert_eq!(body["type"], "error", "{path}: {body}");
        assert_eq!(
            body["error"]["type"], "invalid_request_error",
            "{path}: {body}"
        );
        assert!(message(&body["error"]["message"]), "{path}: {body}");
    } else if path.starts_with("/v1beta/") {
        assert_eq!(body["error"]["code"], 400, "{path}: {body}");
        assert_eq!(
            body["error"]["status"], "INVALID_ARGUMENT",
            "{path}: {body}"
        );
        assert!(message(&body["error"]["message"]), "{path}: {body}");
    } else {
        let error = &body["error"];
        assert_eq!(error["type"], "invalid_request_error", "{path}: {body}");
        assert!(message(&error["message"]), "{path}: {body}");
        for key in ["param", "code"] {
            assert!(error.get(key).is_some(), "{path}: `{key}` present: {body}");
        }
    }
}

#[tokio::test]
async fn garbage_bodies_get_a_400_in_the_providers_own_format() {
    let records = Records::default();
    let (_monitor, base) = start(&records, Monitor::builder()).await;
    let paths = [
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/messages",
        GEMINI_STREAM,
        "/v1beta/models/gemini-2.5-flash:generateContent",
    ];
    for path in paths {
        for body in [
            &b"\xff\xfe{not json"[..],
            b"",
            b"[1, 2]",
            b"\"stream\"",
            b"null",
            b"{\"stream\": true",
        ] {
            let (status, answer) = post_raw(&base, path, body).await;
            let shown = String::from_utf8_lossy(body);
            assert_eq!(status, 400, "{path} with {shown:?}: {answer}");
            assert_error_shape(path, &answer);
        }
    }
    // Not JSON at all: OpenAI names no parameter and no code.
    let (_, answer) = post_raw(&base, "/v1/chat/completions", b"\xff\xfe{not json").await;
    assert_eq!(
        (&answer["error"]["param"], &answer["error"]["code"]),
        (&Value::Null, &Value::Null)
    );
    let (_, answer) = post_raw(&base, GEMINI_STREAM, b"\xff\xfe{not json").await;
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Invalid JSON payload received.")
    );
}

#[tokio::test]
async fn fields_of_the_wrong_type_get_a_400_naming_the_field() {
    let records = Records::default();
    let (_monitor, base) = start(&records, Monitor::builder()).await;
    let cases: [(&str, Value, &str); 8] = [
        ("/v1/chat/completions", json!({"stream": "yes"}), "stream"),
        ("/v1/chat/completions", json!({"model": 4}), "model"),
        (
            "/v1/chat/completions",
            json!({"stream": true, "stream_options": true}),
            "stream_options",
        ),
        (
            "/v1/chat/completions",
            json!({"stream": true, "stream_options": {"include_usage": "yes"}}),
            "stream_options.include_usage",
        ),
        ("/v1/responses", json!({"stream": 1}), "stream"),
        (
            "/v1/messages",
            json!({"stream": "yes", "max_tokens": 256}),
            "stream",
        ),
        (
            "/v1/messages",
            json!({"stream": true, "max_tokens": 0}),
            "max_tokens",
        ),
        (
            "/v1/messages",
            json!({"stream": true, "max_tokens": "256"}),
            "max_tokens",
        ),
    ];
    for (path, body, field) in cases {
        let (status, answer) = post_raw(&base, path, body.to_string().as_bytes()).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        assert_error_shape(path, &answer);
        if path.starts_with("/v1/messages") {
            let message = answer["error"]["message"].as_str().unwrap();
            assert!(message.starts_with(&format!("{field}: ")), "{message}");
        } else {
            assert_eq!(
                (
                    answer["error"]["param"].as_str(),
                    answer["error"]["code"].as_str()
                ),
                (Some(field), Some("invalid_type")),
                "{path} {body}"
            );
        }
    }
    // Anthropic demands max_tokens, as its API does.
    let (status, answer) = post_raw(&base, "/v1/messages", br#"{"stream": true}"#).await;
    assert_eq!(status, 400);
    assert_eq!(answer["error"]["message"], "max_tokens: Field required");
    // `null` is an optional field left out.
    let (status, answer) = post_raw(
        &base,
        "/v1/chat/completions",
        br#"{"model": null, "stream": null, "stream_options": null}"#,
    )
    .await;
    assert_eq!(
        (status, &answer["object"]),
        (200, &json!("chat.completion"))
    );
}

#[test]
fn exposure_warning_only_beyond_loopback_without_a_token() {
    let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
    for loopback in [
        "127.0.0.1:3000",
        "127.8.0.1:80",
        "[::1]:3000",
        "[::ffff:127.0.0.1]:3000",
    ] {
        assert_eq!(
            demo::exposure_warning(&addr(loopback), PREFIX, false),
            None,
            "{loopback}"
        );
    }
    for open in [
        "0.0.0.0:3000",
        "[::]:3000",
        "192.168.1.20:8080",
        "[2001:db8::1]:3000",
    ] {
        let warning = demo::exposure_warning(&addr(open), PREFIX, false)
            .unwrap_or_else(|| panic!("{open} warns"));
        for part in [open, PREFIX, "MONITOR_TOKEN", "user ids", "error text"] {
            assert!(warning.contains(part), "{part:?} in {warning}");
        }
        assert_eq!(demo::exposure_warning(&addr(open), PREFIX, true), None);
    }
}

/// A client sample that ended at `finished` (Unix seconds), with a TTFT of `ttft_ms`.
fn sample(finished: f64, ttft_ms: u64) -> demo::load::Sample {
    demo::load::Sample {
        provider: demo::load::Provider::OpenAi,
        status: 200,
        ttft: Some(Duration::from_millis(ttft_ms)),
        tokens: 10,
        tokens_per_second: Some(50.0),
        injected: None,
        transport_error: false,
        stream_error: false,
        duration: Duration::from_millis(ttft_ms + 200),
        finished: UNIX_EPOCH + Duration::from_secs_f64(finished),
    }
}

/// `/metrics` data as the monitor serves it, taken at `at` (Unix seconds) by a monitor built
/// `uptime` seconds before.
fn metrics_at(at: f64, uptime: f64, five: Value, hour: Value) -> Value {
    let timestamp = humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_secs_f64(at));
    json!({
        "timestamp": timestamp.to_string(),
        "uptime_seconds": uptime,
        "streaming_5min": five,
        "streaming_1hour": hour,
        "current_system": {"memory_mb": 20.0, "cpu_percent": 0.0},
        "health_status": "healthy",
    })
}

fn window(requests: u64, p50: f64, tokens: u64) -> Value {
    json!({"total_streaming_requests": requests, "first_token_p50_ms": p50,
           "first_token_p95_ms": p50, "first_token_p99_ms": p50,
           "avg_tokens_per_second": 50.0, "tokens_per_second_p50": 50.0,
           "total_tokens": tokens})
}

#[test]
fn the_load_report_compares_like_with_like() {
    // Built at 1000.25 (window second 1000); a 2-hour run from 1000.5, one request ending every
    // second, the last 300 slower; the snapshot at 8201.0 is window second 8200.
    let built = 1_000.25;
    let samples: Vec<_> = (1..=7200)
        .map(|i| sample(built + 0.25 + i as f64, if i > 6900 { 300 } else { 100 }))
        .collect();
    let started = UNIX_EPOCH + Duration::from_secs_f64(built + 0.25);
    // Each window priced apart: the report's cost is the held window's, never the other's.
    let priced = |mut w: Value, cost_usd: f64, unpriced: u64| {
        w["cost_usd"] = json!(cost_usd);
        w["unpriced_requests"] = json!(unpriced);
        w
    };
    let metrics = metrics_at(
        8_201.0,
        8_201.0 - built,
        priced(window(291, 300.0, 2910), 0.001746, 3),
        priced(window(3540, 100.0, 35_400), 0.02124, 0),
    );
    // Longer than an hour: the 5-minute window, whose slots at second 8200 are 7910..=8200,
    // beside the 291 requests that ended in them.
    let held = demo::population(&samples, started, &metrics);
    assert_eq!(held.window, "streaming_5min");
    assert_eq!(held.samples.len(), 291, "{}", held.label);
    assert!(held.label.contains("last 291 s"), "{}", held.label);
    let run = demo::Run {
        users: 1,
        started,
        elapsed: Duration::from_secs(7200),
        cpu: Some(Duration::from_secs(360)),
    };
    let recorded: Vec<(Outcome, u64)> = Outcome::ALL
        .iter()
        .map(|&o| (o, if o == Outcome::Ok { 7200 } else { 0 }))
        .collect();
    let report = demo::report(&samples, &run, &metrics, &recorded);
    let rows = |name: &str| -> Vec<Vec<String>> {
        report
            .lines()
            .filter(|l| l.trim_start().starts_with(name))
            .map(|l| l[28..].split_whitespace().map(str::to_owned).collect())
            .collect()
    };
    assert_eq!(
        rows("requests"),
        [["7200", "7200"], ["291", "291"]],
        "counts over the whole run, then the window's population\n{report}"
    );
    assert_eq!(rows("TTFT p50"), [["300.0", "300.0"]], "{report}");
    assert_eq!(rows("output tokens"), [["2910", "2910"]], "{report}");
    // Cost has the monitor's column only (the client has no prices), to the micro-dollar.
    assert_eq!(rows("cost (USD)"), [["0.001746"]], "{report}");
    assert_eq!(rows("unpriced streams"), [["3"]], "{report}");
    assert!(report.contains("counts: whole run"), "{report}");
    assert!(
        report.contains("CPU over the run 5.0% of one core"),
        "{report}"
    );

    // A 20-minute run fits the hour: all of it, beside the 1-hour window.
    let metrics = metrics_at(
        built + 1_201.0,
        1_201.0,
        window(0, 0.0, 0),
        window(0, 0.0, 0),
    );
    let held = demo::population(&samples[..1200], started, &metrics);
    assert_eq!((held.window, held.samples.len()), ("streaming_1hour", 1200));
    assert!(held.label.starts_with("whole run"), "{}", held.label);
    // A 5-second run: the 5-minute window, all of it.
    let metrics = metrics_at(built + 6.0, 6.0, window(0, 0.0, 0), window(0, 0.0, 0));
    let held = demo::population(&samples[..5], started, &metrics);
    assert_eq!((held.window, held.samples.len()), ("streaming_5min", 5));
}
