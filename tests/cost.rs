//! Cost over the network: known load through the demo, priced by the monitor, against the
//! same requests priced here from the usage the client read off the wire and prices written in
//! this file (not the crate's table). Budgets: one alert when passed, one when clear again.

mod common;

#[allow(dead_code)]
#[path = "../examples/demo/main.rs"]
mod demo;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use common::{Records, client, serve};
use serde_json::{Value, json};
use tower_stream_monitor::health::Budget;
use tower_stream_monitor::window::ManualClock;
use tower_stream_monitor::{Monitor, Outcome, StreamRecord};

/// Published prices in USD per million tokens: (input, output, cache read, cache write).
fn price(model: &str) -> (f64, f64, f64, f64) {
    match model {
        "gpt-4o-mini" => (0.15, 0.60, 0.075, 0.15),
        "o4-mini" => (1.10, 4.40, 0.275, 1.10),
        "claude-sonnet-4-5" => (3.0, 15.0, 0.30, 3.75),
        "gemini-2.5-flash" => (0.30, 2.50, 0.03, 0.30),
        other => panic!("no price written for {other}"),
    }
}

/// Usage as the client read it from a stream's own usage block: (input, output, cache read,
/// cache write), normalised as the README says (every prompt token; every generated token).
fn usage_on_the_wire(body: &str) -> Option<(u64, u64, u64, u64)> {
    let mut found = None;
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(data.trim()) else {
            continue;
        };
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        if v["type"] == "message_start" {
            // Anthropic counts cache tokens apart from input_tokens.
            let u = &v["message"]["usage"];
            let (input, read, write) = (
                n(&u["input_tokens"]),
                n(&u["cache_read_input_tokens"]),
                n(&u["cache_creation_input_tokens"]),
            );
            found = Some((input + read + write, 0, read, write));
        } else if v["type"] == "message_delta" {
            if let Some((i, _, r, w)) = found {
                found = Some((i, n(&v["usage"]["output_tokens"]), r, w));
            }
        } else if v["usage"].is_object() {
            // OpenAI chat.
            let u = &v["usage"];
            found = Some((
                n(&u["prompt_tokens"]),
                n(&u["completion_tokens"]),
                n(&u["prompt_tokens_details"]["cached_tokens"]),
                0,
            ));
        } else if v["usageMetadata"].is_object() {
            // Gemini counts thoughts apart from candidates.
            let u = &v["usageMetadata"];
            found = Some((
                n(&u["promptTokenCount"]),
                n(&u["candidatesTokenCount"]) + n(&u["thoughtsTokenCount"]),
                n(&u["cachedContentTokenCount"]),
                0,
            ));
        }
    }
    found
}

/// The cost in pico-USD: uncached input, cache reads, cache writes and output, each at its
/// price (USD per million tokens = pico-USD per token / 1e6).
fn pico(model: &str, (input, output, read, write): (u64, u64, u64, u64)) -> u64 {
    let (i, o, r, w) = price(model);
    let per_token = |usd_per_million: f64| (usd_per_million * 1e6).round() as u64;
    (input - read - write) * per_token(i)
        + read * per_token(r)
        + write * per_token(w)
        + output * per_token(o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_in_metrics_is_the_sum_of_the_requests_priced_independently() {
    let records = Records::default();
    let monitor = records
        .attach(Monitor::builder().prefix("/monitoring").top_users(2))
        .build()
        .unwrap();
    let base = format!("http://{}", serve(demo::app(&monitor)).await);
    let http = client();
    // (path, body, model, user, tokens, cached, reasoning)
    let plan = [
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true}}),
            "gpt-4o-mini",
            "user-a",
            20,
            1024,
            0,
        ),
        (
            "/v1/chat/completions",
            json!({"model": "o4-mini", "stream": true, "stream_options": {"include_usage": true}}),
            "o4-mini",
            "user-b",
            10,
            0,
            50,
        ),
        (
            "/v1/messages",
            json!({"model": "claude-sonnet-4-5", "stream": true, "max_tokens": 256}),
            "claude-sonnet-4-5",
            "user-a",
            8,
            2048,
            0,
        ),
        (
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            json!({}),
            "gemini-2.5-flash",
            "user-c",
            6,
            100,
            30,
        ),
    ];
    let mut expected_total = 0u64;
    let mut expected_by_model: BTreeMap<&str, u64> = BTreeMap::new();
    let mut expected_by_user: BTreeMap<&str, u64> = BTreeMap::new();
    for (path, body, model, user, tokens, cached, reasoning) in &plan {
        let text = http
            .post(format!("{base}{path}"))
            .header("x-sim-tokens", tokens.to_string())
            .header("x-sim-ttft-ms", "1")
            .header("x-sim-token-interval-ms", "1")
            .header("x-sim-cached-tokens", cached.to_string())
            .header("x-sim-reasoning-tokens", reasoning.to_string())
            .header("x-user-id", *user)
            .json(body)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let usage = usage_on_the_wire(&text).unwrap_or_else(|| panic!("usage in {text}"));
        let cost = pico(model, usage);

        expected_total += cost;
        *expected_by_model.entry(*model).or_default() += cost;
        *expected_by_user.entry(*user).or_default() += cost;
    }
    // A stream without usage (the OpenAI SDK's default): its counted output is priced, its
    // unknown input is not, and the cost is marked estimated.
    let no_usage = http
        .post(format!("{base}/v1/chat/completions"))
        .header("x-sim-tokens", "5")
        .header("x-sim-ttft-ms", "1")
        .header("x-sim-token-interval-ms", "1")
        .json(&json!({"model": "gpt-4o-mini", "stream": true}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(usage_on_the_wire(&no_usage).is_none());
    let estimated = pico("gpt-4o-mini", (0, 5, 0, 0));
    expected_total += estimated;
    *expected_by_model.entry("gpt-4o-mini").or_default() += estimated;
    let got = records.wait_for(plan.len() + 1).await;

    let sum: u64 = got
        .iter()
        .filter_map(|r: &StreamRecord| r.cost)
        .map(|c| c.picodollars())
        .sum();
    assert_eq!(sum, expected_total, "per-request costs, to the pico-dollar");
    let estimates: Vec<&StreamRecord> = got.iter().filter(|r| r.cost_estimated).collect();
    assert_eq!(estimates.len(), 1);
    assert_eq!(estimates[0].cost.map(|c| c.picodollars()), Some(estimated));

    // A model with no price (a fine-tune the table cannot know): unpriced, listed, never free.
    let mut fine_tune = StreamRecord::new(
        "openai",
        "ft:gpt-4o-mini:acme",
        "/v1/chat/completions",
        Outcome::Ok,
    );
    fine_tune.streaming = true;
    fine_tune.output_tokens = 40;
    fine_tune.input_tokens = Some(10);
    monitor.ingest(fine_tune);

    let metrics: Value = http
        .get(format!("{base}/monitoring/metrics"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let data = &metrics["data"];
    let usd = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let close = |got: f64, pico: u64| (got - pico as f64 * 1e-12).abs() < 1e-12;
    assert!(
        close(usd(&data["streaming_5min"]["cost_usd"]), expected_total),
        "{}",
        data["streaming_5min"]
    );
    assert!(close(
        usd(&data["streaming_5min"]["estimated_cost_usd"]),
        estimated
    ));
    assert_eq!(data["streaming_5min"]["unpriced_requests"], 1);
    let openai = &data["streaming_by_provider"]["openai"]["5min"];
    let openai_expected = expected_by_model["gpt-4o-mini"] + expected_by_model["o4-mini"];
    assert!(close(usd(&openai["cost_usd"]), openai_expected), "{openai}");
    let spend = &data["spend"];
    // Spend per model is by the model that answered.
    let by_model = spend["by_model"].as_object().unwrap();
    let answered = |prefix: &str| -> f64 {
        by_model
            .iter()
            .filter(|(m, _)| m.starts_with(prefix))
            .map(|(_, v)| usd(&v["cost_usd"]))
            .sum()
    };
    for (model, pico) in &expected_by_model {
        assert!(close(answered(model), *pico), "{model}: {spend}");
    }
    assert_eq!(spend["unpriced_models"], json!(["ft:gpt-4o-mini:acme"]));
    assert_eq!(spend["unpriced_requests"], 1);
    assert!(spend["prices_taken"].is_string());
    // The two heaviest users, in order, exact.
    let mut users: Vec<(&str, u64)> = expected_by_user.into_iter().collect();
    users.sort_by_key(|u| std::cmp::Reverse(u.1));
    let top = spend["top_users"].as_array().unwrap();
    assert_eq!(top.len(), 2, "{spend}");
    for (listed, (user, pico)) in top.iter().zip(&users) {
        assert_eq!(listed["user_id"], *user);
        assert!(close(usd(&listed["cost_usd"]), *pico), "{listed}");
    }

    // Prometheus: the cost counter, in USD, by provider.
    let scrape = http
        .get(format!("{base}/monitoring/metrics/prometheus"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prometheus_total: f64 = scrape
        .lines()
        .filter(|l| l.starts_with("stream_monitor_cost_usd_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        (prometheus_total - expected_total as f64 * 1e-12).abs() < 1e-12,
        "{prometheus_total}"
    );
}

/// An Anthropic stream whose cache writes are partly for an hour: the 1-hour part comes through
/// the layer into the record and is priced at the 1-hour write rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hour_cache_writes_are_priced_at_their_own_rate() {
    let body = common::fixture("anthropic-cache-1h.sse");
    let app = axum::Router::new().route(
        "/v1/messages",
        axum::routing::post(move || {
            let body = body.clone();
            async move { ([("content-type", "text/event-stream")], body) }
        }),
    );
    let (records, _monitor, addr) = common::monitored(Monitor::builder(), app).await;
    let text = client()
        .post(format!("http://{addr}/v1/messages"))
        .header("x-llm-provider", "anthropic")
        .body(r#"{"model":"claude-sonnet-4-5","stream":true}"#)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let record = records.one().await;
    // What the client read: 3072 writes, of which 2048 for an hour (cache_creation).
    let start = text
        .lines()
        .find_map(|line| line.strip_prefix("data: "))
        .and_then(|data| serde_json::from_str::<Value>(data).ok())
        .expect("message_start");
    let usage = &start["message"]["usage"];
    let written_1h = usage["cache_creation"]["ephemeral_1h_input_tokens"]
        .as_u64()
        .expect("1-hour writes on the wire");
    let written = usage["cache_creation_input_tokens"].as_u64().unwrap();
    assert_eq!(record.cache_creation_input_tokens, Some(written));
    assert_eq!(record.cache_creation_1h_input_tokens, Some(written_1h));
    // $3 in, $3.75 5-minute writes, $6 1-hour writes, $15 out, per million tokens.
    let input = usage["input_tokens"].as_u64().unwrap();
    let expected = input * 3_000_000
        + (written - written_1h) * 3_750_000
        + written_1h * 6_000_000
        + record.output_tokens * 15_000_000;
    assert_eq!(expected, 16_305_000_000);
    assert_eq!(record.cost.map(|c| c.picodollars()), Some(expected));
}

#[test]
fn a_budget_alerts_once_when_passed_and_once_when_clear() {
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let alerts: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let seen = alerts.clone();
    let monitor = Monitor::builder()
        .clock(clock.clone())
        .budget(Budget::per_hour("openai-hourly", 0.001).provider("openai"))
        .budget(Budget::per_hour("anthropic-hourly", 0.001).provider("anthropic"))
        .budget(Budget::per_hour("user-z", 0.001).user("user-z"))
        .budget(Budget::per_hour("other-route", 0.001).route("/v1/other"))
        .on_alert(move |a: &tower_stream_monitor::health::Alert| {
            seen.lock().unwrap().push(a.budgets_exceeded.clone());
        })
        .build()
        .unwrap();
    // 1,000 output tokens of gpt-4o-mini at $0.60 per million: $0.0006 each.
    let stream = || {
        let mut r = StreamRecord::new("openai", "gpt-4o-mini", "/v1/chat", Outcome::Ok);
        r.streaming = true;
        r.output_tokens = 1_000;
        r.input_tokens = Some(0);
        r
    };
    monitor.ingest(stream());
    let report = monitor.health();
    assert!(!report.budgets[0].exceeded);
    assert!(alerts.lock().unwrap().is_empty(), "nothing passed yet");
    // The second passes the budget ($0.0012 > $0.001): one alert.
    monitor.ingest(stream());
    let report = monitor.health();
    assert!(report.budgets[0].exceeded, "{:?}", report.budgets);
    // Other providers, users and routes spent nothing.
    assert!(report.budgets[1..].iter().all(|b| !b.exceeded));
    assert!(!report.rollback, "a budget is an alert, not a rollback");
    monitor.health();
    clock.advance(Duration::from_secs(30));
    monitor.ingest(stream());
    monitor.health();
    assert_eq!(
        *alerts.lock().unwrap(),
        vec![vec!["openai-hourly".to_owned()]],
        "one alert while it holds"
    );
    // An hour later the spend has left the window: one alert that it cleared, sent when
    // something judges health again (a record or a read), as nothing runs on a timer.
    clock.advance(Duration::from_secs(3600));
    assert_eq!(alerts.lock().unwrap().len(), 1, "not judged yet");
    let report = monitor.health();
    assert!(!report.budgets[0].exceeded);
    assert_eq!(alerts.lock().unwrap().len(), 2);
    assert!(alerts.lock().unwrap()[1].is_empty());

    // Each budget's filters are in its JSON, as /health serves it.
    let json = serde_json::to_value(&report.budgets).unwrap();
    let filters = |i: usize| {
        ["provider", "route", "user"].map(|key| json[i].get(key).and_then(Value::as_str))
    };
    assert_eq!(filters(0), [Some("openai"), None, None]);
    assert_eq!(filters(2), [None, None, Some("user-z")]);
    assert_eq!(filters(3), [None, Some("/v1/other"), None]);
    assert_eq!(json[3]["name"], "other-route");
}

/// `spend.by_model` is the per-model figure since the monitor started: it keeps a call the
/// windows have let go.
#[test]
fn spend_by_model_covers_the_time_since_start_not_a_window() {
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let monitor = Monitor::builder().clock(clock.clone()).build().unwrap();
    let mut r = StreamRecord::new("openai", "gpt-4o-mini", "/v1/chat", Outcome::Ok);
    r.streaming = true;
    r.output_tokens = 1_000;
    r.input_tokens = Some(0);
    monitor.ingest(r);
    // 1,000 output tokens at $0.60 per million.
    let cost = 1_000.0 * 0.60 / 1e6;
    let snapshot = monitor.snapshot();
    assert!((snapshot.streaming_1hour.cost_usd - cost).abs() < 1e-15);
    assert!((snapshot.spend.by_model["gpt-4o-mini"].cost_usd - cost).abs() < 1e-15);
    clock.advance(Duration::from_secs(2 * 3600));
    let snapshot = monitor.snapshot();
    assert_eq!(snapshot.streaming_1hour.cost_usd, 0.0, "out of the hour");
    let model = &snapshot.spend.by_model["gpt-4o-mini"];
    assert!((model.cost_usd - cost).abs() < 1e-15, "{model:?}");
    assert_eq!(model.requests, 1);
}

#[test]
fn a_budget_made_a_rollback_trigger_moves_health() {
    let monitor = Monitor::builder()
        .budget(Budget::per_hour("all", 0.0001).rollback())
        .build()
        .unwrap();
    let mut r = StreamRecord::new("openai", "gpt-4o-mini", "/v1/chat", Outcome::Ok);
    r.streaming = true;
    r.output_tokens = 1_000;
    monitor.ingest(r);
    let report = monitor.health();
    assert!(report.rollback);
    assert_eq!(
        report.status,
        tower_stream_monitor::health::HealthStatus::Critical
    );
    assert!(
        Monitor::builder()
            .budget(Budget::per_hour("bad", -1.0))
            .build()
            .is_err()
    );
}

#[test]
fn a_budget_counts_only_its_provider_route_and_user() {
    let monitor = Monitor::builder()
        .budget(Budget::per_hour("user-z", 0.001).user("user-z"))
        .budget(Budget::per_hour("chat-route", 0.001).route("/v1/chat"))
        .budget(
            Budget::per_hour("anthropic-user-z", 0.001)
                .provider("anthropic")
                .user("user-z"),
        )
        .build()
        .unwrap();
    // $0.0012 each: 2,000 output tokens of gpt-4o-mini.
    let call = |user: &str, route: &str| {
        let mut r = StreamRecord::new("openai", "gpt-4o-mini", route, Outcome::Ok);
        r.streaming = true;
        r.output_tokens = 2_000;
        r.user_id = Some(user.into());
        r
    };
    monitor.ingest(call("user-y", "/v1/chat"));
    monitor.ingest(call("user-z", "/v1/embed"));
    let exceeded: Vec<String> = monitor
        .health()
        .budgets
        .iter()
        .filter(|b| b.exceeded)
        .map(|b| b.name.clone())
        .collect();
    assert_eq!(exceeded, ["user-z", "chat-route"]);
}

/// A budget on a provider counts every call of that provider, also those whose label set came
/// past `max_label_sets` and was folded into `other` for the series: the budget, like spend
/// per model, is judged on the labels the app gave.
#[test]
fn a_budget_counts_calls_past_the_label_set_cap() {
    let monitor = Monitor::builder()
        .max_label_sets(4)
        .budget(Budget::per_hour("anthropic-hourly", 100.0).provider("anthropic"))
        .build()
        .unwrap();
    // Ten routes: ten label sets, most of them past the cap. $0.0012 each (2,000 output tokens
    // of gpt-4o-mini, priced as such whatever the provider label).
    for i in 0..10 {
        let mut r = StreamRecord::new("anthropic", "gpt-4o-mini", format!("/r{i}"), Outcome::Ok);
        r.streaming = true;
        r.output_tokens = 2_000;
        monitor.ingest(r);
    }
    assert!(monitor.label_overflows() > 0, "some label sets were folded");
    let budget = &monitor.health().budgets[0];
    assert!(
        (budget.spent_usd - 10.0 * 0.0012).abs() < 1e-9,
        "spent {}",
        budget.spent_usd
    );
}
