//! Windows, the monitoring endpoints and health, on a real server with a real client and a
//! moved clock.

mod common;

#[allow(dead_code)]
#[path = "../examples/verify.rs"]
mod verify;

use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use common::{Records, client, provider_app, serve};
use serde_json::Value;
use tower_stream_monitor::health::{Alert, Baseline, Baselines, HealthStatus, RollbackTrigger};
use tower_stream_monitor::window::ManualClock;
use tower_stream_monitor::{Monitor, Outcome};

const PREFIX: &str = "/api/v1/monitoring";

fn clock() -> ManualClock {
    ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
}

struct Server {
    addr: std::net::SocketAddr,
    http: reqwest::Client,
}

impl Server {
    async fn start(monitor: &Monitor) -> Self {
        Self {
            addr: serve(provider_app(monitor)).await,
            http: client(),
        }
    }

    async fn chat(&self, headers: &[(&str, &str)]) -> reqwest::StatusCode {
        let mut req = self
            .http
            .post(format!("http://{}/v1/chat/completions", self.addr));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        res.bytes().await.unwrap();
        status
    }

    async fn get(&self, path: &str) -> (reqwest::StatusCode, reqwest::header::HeaderMap, String) {
        let res = self
            .http
            .get(format!("http://{}{path}", self.addr))
            .send()
            .await
            .unwrap();
        let (status, headers) = (res.status(), res.headers().clone());
        (status, headers, res.text().await.unwrap())
    }

    async fn json(&self, path: &str) -> (reqwest::StatusCode, Value) {
        let (status, _, body) = self.get(path).await;
        (
            status,
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")),
        )
    }

    async fn metrics(&self) -> Value {
        let (status, body) = self.json(&format!("{PREFIX}/metrics")).await;
        assert_eq!(status, 200);
        assert_eq!(body["status"], "success");
        body["data"].clone()
    }
}

/// Every field of a WINDOW with its type: the same checks `examples/verify.rs` makes.
fn assert_window(w: &Value, what: &str) {
    let problems = verify::window_problems(w);
    assert!(problems.is_empty(), "{what}: {problems:?}: {w}");
}

fn assert_shape(data: &Value) {
    assert!(
        data["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.contains('T'))
    );
    assert!(data["uptime_seconds"].is_number());
    for (name, unit) in [
        ("streaming_first_token", "ms"),
        ("streaming_tokens_per_second", "tokens/s"),
        ("streaming_error_rate", "%"),
    ] {
        let b = &data["baselines"][name];
        for f in ["target", "warning", "critical"] {
            assert!(b[f].is_f64(), "baselines.{name}.{f}");
        }
        assert_eq!(b["unit"], unit);
    }
    assert_eq!(
        data["baselines"]["streaming_tokens_per_second"]["higher_is_better"],
        true
    );
    assert_window(&data["streaming_5min"], "streaming_5min");
    assert_window(&data["streaming_1hour"], "streaming_1hour");
    for (p, w) in data["streaming_by_provider"].as_object().unwrap() {
        assert_window(&w["5min"], p);
        assert_window(&w["1hour"], p);
    }
    let r = &data["requests_5min"];
    assert!(
        r["total_requests"].is_u64()
            && r["auth_errors"].is_u64()
            && r["auth_error_rate"].is_number()
    );
    assert!(r["by_outcome"].is_object());
    let s = &data["current_system"];
    // Numbers on Linux; a figure another platform cannot give is null, never a false 0. The
    // CPU figure is null on a monitor's first sample too, which has no interval yet.
    let linux = cfg!(target_os = "linux");
    assert!(
        s["cpu_percent"].is_number() || s["cpu_percent"].is_null(),
        "current_system.cpu_percent"
    );
    for f in ["memory_mb", "memory_percent"] {
        assert!(
            s[f].is_number() || (!linux && s[f].is_null()),
            "current_system.{f}"
        );
    }
    for f in ["num_threads", "num_fds"] {
        assert!(
            s[f].is_u64() || (!linux && s[f].is_null()),
            "current_system.{f}"
        );
    }
    assert!(
        ["unknown", "healthy", "degraded", "critical"]
            .contains(&data["health_status"].as_str().unwrap())
    );
}

#[tokio::test]
async fn empty_windows_are_zeros_never_nan() {
    let monitor = Monitor::builder().prefix(PREFIX).build().unwrap();
    let server = Server::start(&monitor).await;
    // Before the first answer, so before its CPU sample.
    let first = std::time::Instant::now();
    let data = server.metrics().await;
    assert_shape(&data);
    assert_eq!(data["streaming_5min"]["first_token_p95_ms"], 0.0);
    assert_eq!(data["streaming_5min"]["streaming_error_rate"], 0.0);
    assert_eq!(data["requests_5min"]["auth_error_rate"], 0.0);
    assert_eq!(data["health_status"], "unknown");
    assert_eq!(data["streaming_by_provider"], serde_json::json!({}));
    assert_eq!(data["streaming_by_model"], serde_json::json!([]));
    // The monitor's first CPU sample has no interval to measure over: null, not a false 0; so
    // is an answer too soon after it (a 10 ms tick over a moment would read as many cores); an
    // answer 200 ms after it samples again and has one.
    if cfg!(target_os = "linux") {
        assert!(data["current_system"]["cpu_percent"].is_null(), "{data}");
        let data = server.metrics().await;
        if first.elapsed() < Duration::from_millis(200) {
            assert!(data["current_system"]["cpu_percent"].is_null(), "{data}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        let data = server.metrics().await;
        assert!(data["current_system"]["cpu_percent"].is_f64(), "{data}");
    }
}

#[tokio::test]
async fn known_traffic_gives_exact_counts_and_slots_expire() {
    let clock = clock();
    let records = Records::default();
    let monitor = records
        .attach(Monitor::builder().prefix(PREFIX).clock(clock.clone()))
        .build()
        .unwrap();
    let server = Server::start(&monitor).await;
    for _ in 0..6 {
        server
            .chat(&[("x-provider", "openai"), ("x-tokens", "3")])
            .await;
    }
    for _ in 0..2 {
        server
            .chat(&[("x-provider", "anthropic"), ("x-tokens", "5")])
            .await;
    }
    server
        .chat(&[("x-provider", "anthropic"), ("x-status", "401")])
        .await;
    server
        .chat(&[("x-provider", "openai"), ("x-status", "429")])
        .await;
    for _ in 0..2 {
        server.get("/plain").await;
    }
    records.wait_for(12).await;

    let data = server.metrics().await;
    assert_shape(&data);
    let w = &data["streaming_5min"];
    assert_eq!(w["total_streaming_requests"], 10);
    assert_eq!(w["streaming_errors"], 2);
    assert_eq!(w["streaming_error_rate"], 20.0);
    assert_eq!(w["total_tokens"], 6 * 3 + 2 * 5);
    assert_eq!(w["input_tokens"], 8 * 2);
    assert_eq!(w["auth_errors"], 1);
    assert_eq!(w["timeouts"], 0);
    assert_eq!(w["by_outcome"]["ok"], 8);
    assert_eq!(w["by_outcome"]["auth_error"], 1);
    assert_eq!(w["by_outcome"]["rate_limited"], 1);
    assert_eq!(w["in_flight"], 0);
    assert!(w["first_token_p95_ms"].as_f64().unwrap() > 0.0);
    assert!(w["avg_tokens_per_second"].as_f64().unwrap() > 0.0);
    let r = &data["requests_5min"];
    assert_eq!(
        r["total_requests"], 12,
        "the monitor's own endpoints are not counted"
    );
    assert_eq!(r["auth_errors"], 1);
    assert!((r["auth_error_rate"].as_f64().unwrap() - 100.0 / 12.0).abs() < 1e-9);
    assert_eq!(r["by_outcome"]["ok"], 10);
    let p = &data["streaming_by_provider"];
    assert_eq!(p["openai"]["5min"]["total_streaming_requests"], 7);
    assert_eq!(p["openai"]["5min"]["total_tokens"], 18);
    assert_eq!(p["anthropic"]["5min"]["total_streaming_requests"], 3);
    assert_eq!(p["anthropic"]["1hour"]["auth_errors"], 1);

    // 5 minutes and a slot later the 5-minute window is empty; the hour still holds everything.
    clock.advance(Duration::from_secs(311));
    let data = server.metrics().await;
    assert_eq!(data["streaming_5min"]["total_streaming_requests"], 0);
    assert_eq!(data["requests_5min"]["total_requests"], 0);
    assert_eq!(data["streaming_1hour"]["total_streaming_requests"], 10);
    assert_eq!(
        data["streaming_by_provider"]["openai"]["1hour"]["total_tokens"],
        18
    );
    assert!(data["uptime_seconds"].as_f64().unwrap() >= 311.0);

    // New traffic lands in the 5-minute window again, beside the old hour.
    server
        .chat(&[("x-provider", "openai"), ("x-tokens", "4")])
        .await;
    records.wait_for(13).await;
    let data = server.metrics().await;
    assert_eq!(data["streaming_5min"]["total_tokens"], 4);
    assert_eq!(data["streaming_1hour"]["total_tokens"], 32);

    clock.advance(Duration::from_secs(3600));
    let data = server.metrics().await;
    assert_eq!(data["streaming_1hour"]["total_streaming_requests"], 0);
    assert_eq!(
        data["streaming_by_provider"]["openai"]["1hour"]["total_tokens"],
        0
    );
}

fn quick_baselines() -> Baselines {
    Baselines {
        streaming_first_token: Baseline {
            target: 50.0,
            warning: 150.0,
            critical: 600.0,
            unit: "ms",
            higher_is_better: false,
        },
        // Wide enough that only first-token latency moves the status in this test.
        streaming_tokens_per_second: Baseline {
            target: 1.0,
            warning: 0.0,
            critical: 0.0,
            unit: "tokens/s",
            higher_is_better: true,
        },
        ..Baselines::default()
    }
}

/// `/health` moves through its states as the first-token p95 crosses the baselines, with one
/// alert per change. The first tokens are handed to the monitor exactly (`Monitor::ingest`),
/// so that no phase depends on how fast this machine serves a stream; the layer's own timing
/// of first tokens is tested against its clients elsewhere.
#[tokio::test]
async fn health_moves_through_its_states_with_one_alert_per_change() {
    let clock = clock();
    let alerts: Arc<Mutex<Vec<Alert>>> = Arc::default();
    let sink = alerts.clone();
    let monitor = Monitor::builder()
        .prefix(PREFIX)
        .clock(clock.clone())
        .min_samples(3)
        .baselines(quick_baselines())
        .on_alert(move |a: &Alert| sink.lock().unwrap().push(a.clone()))
        .build()
        .unwrap();
    let server = Server::start(&monitor).await;
    let health_path = format!("{PREFIX}/health");
    let (status, body) = server.json(&health_path).await;
    assert_eq!(
        (status.as_u16(), body["status"].as_str()),
        (200, Some("unknown"))
    );
    assert_eq!(body["rollback"], false);
    assert_eq!(body["checks"].as_array().unwrap().len(), 3);

    let phase = |ttft_ms: &'static str| {
        let server = &server;
        let monitor = &monitor;
        let clock = &clock;
        async move {
            // Each phase starts in a fresh 5-minute window.
            clock.advance(Duration::from_secs(311));
            let ttft = Duration::from_millis(ttft_ms.parse().unwrap());
            for _ in 0..3 {
                let mut record = tower_stream_monitor::StreamRecord::new(
                    "openai",
                    "gpt-4o-mini",
                    "/v1/chat/completions",
                    Outcome::Ok,
                );
                record.streaming = true;
                record.time_to_first_token = Some(ttft);
                record.output_tokens = 2;
                record.duration = ttft + Duration::from_millis(20);
                monitor.ingest(record);
            }
            server.json(&format!("{PREFIX}/health")).await
        }
    };
    let (status, body) = phase("0").await;
    assert_eq!(
        (status.as_u16(), body["status"].as_str()),
        (200, Some("healthy")),
        "{body}"
    );
    let (status, body) = phase("300").await;
    assert_eq!(
        (status.as_u16(), body["status"].as_str()),
        (200, Some("degraded")),
        "{body}"
    );
    let (status, body) = phase("900").await;
    assert_eq!(
        (status.as_u16(), body["status"].as_str()),
        (503, Some("critical")),
        "{body}"
    );
    assert_eq!(
        body["rollback"], false,
        "critical by a baseline, not by a trigger"
    );
    // Asking again changes nothing and alerts nothing.
    server.json(&health_path).await;
    server.metrics().await;
    let (status, body) = phase("0").await;
    assert_eq!(
        (status.as_u16(), body["status"].as_str()),
        (200, Some("healthy")),
        "{body}"
    );

    // Each phase starts with an empty window: its first record (judged on the recording path,
    // once per clock second) finds too few samples, so the status passes through `unknown`.
    use HealthStatus::*;
    let seen: Vec<(HealthStatus, HealthStatus)> = alerts
        .lock()
        .unwrap()
        .iter()
        .map(|a| (a.previous, a.status))
        .collect();
    assert_eq!(
        seen,
        [
            (Unknown, Healthy),
            (Healthy, Unknown),
            (Unknown, Degraded),
            (Degraded, Unknown),
            (Unknown, Critical),
            (Critical, Unknown),
            (Unknown, Healthy),
        ]
    );
}

#[tokio::test]
async fn auth_errors_fire_the_rollback_trigger() {
    let clock = clock();
    let records = Records::default();
    let alerts: Arc<Mutex<Vec<Alert>>> = Arc::default();
    let sink = alerts.clone();
    let monitor = records
        .attach(
            Monitor::builder()
                .prefix(PREFIX)
                .clock(clock.clone())
                .min_samples(10)
                .on_alert(move |a: &Alert| sink.lock().unwrap().push(a.clone())),
        )
        .build()
        .unwrap();
    let server = Server::start(&monitor).await;
    // 19 good requests and 1 auth error: 5% is not more than 5%.
    for _ in 0..19 {
        server.chat(&[]).await;
    }
    server.chat(&[("x-status", "401")]).await;
    records.wait_for(20).await;
    let (status, body) = server.json(&format!("{PREFIX}/health")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rollback"], false);
    let auth = &body["triggers"][0];
    assert_eq!(
        (auth["name"].as_str(), auth["samples"].as_u64()),
        (Some("auth_error_rate"), Some(20))
    );
    assert_eq!(auth["value"], 5.0);

    // One more: 2 of 21 is 9.5% of all requests.
    server.chat(&[("x-status", "403")]).await;
    records.wait_for(21).await;
    let (status, body) = server.json(&format!("{PREFIX}/health")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "critical");
    assert_eq!(body["rollback"], true);
    assert_eq!(body["triggers"][0]["fired"], true);
    assert_eq!(body["triggers"][1]["fired"], false, "timeout_rate");
    let last = alerts.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.status, HealthStatus::Critical);
    assert_eq!(last.fired, ["auth_error_rate"]);
    assert_eq!(server.metrics().await["health_status"], "critical");

    // When the window moves on, the trigger stops firing (too few samples: unknown).
    clock.advance(Duration::from_secs(311));
    let (status, body) = server.json(&format!("{PREFIX}/health")).await;
    assert_eq!(
        (status.as_u16(), body["rollback"].as_bool()),
        (200, Some(false))
    );
}

#[tokio::test]
async fn user_trigger_with_route_and_provider_filters() {
    let records = Records::default();
    let monitor = records
        .attach(
            Monitor::builder()
                .prefix(PREFIX)
                .min_samples(4)
                .clear_rollback_triggers()
                .rollback_trigger(
                    RollbackTrigger::new(
                        "openai_server_errors",
                        [Outcome::ServerError, Outcome::Timeout],
                        30.0,
                    )
                    .route("/v1/chat/completions")
                    .provider("openai"),
                ),
        )
        .build()
        .unwrap();
    let server = Server::start(&monitor).await;
    // Anthropic's failures are outside the trigger's population.
    for _ in 0..6 {
        server
            .chat(&[("x-provider", "anthropic"), ("x-status", "500")])
            .await;
    }
    for _ in 0..3 {
        server.chat(&[("x-provider", "openai")]).await;
    }
    server
        .chat(&[("x-provider", "openai"), ("x-status", "504")])
        .await;
    records.wait_for(10).await;
    let (_, body) = server.json(&format!("{PREFIX}/health")).await;
    let t = &body["triggers"][0];
    assert_eq!(body["triggers"].as_array().unwrap().len(), 1);
    assert_eq!(
        (t["samples"].as_u64(), t["value"].as_f64()),
        (Some(4), Some(25.0))
    );
    assert_eq!(t["fired"], false);
    assert_eq!(
        (t["route"].as_str(), t["provider"].as_str()),
        (Some("/v1/chat/completions"), Some("openai"))
    );
    server
        .chat(&[("x-provider", "openai"), ("x-status", "500")])
        .await;
    records.wait_for(11).await;
    let (status, body) = server.json(&format!("{PREFIX}/health")).await;
    assert_eq!(body["triggers"][0]["value"], 40.0);
    assert_eq!(
        (status.as_u16(), body["rollback"].as_bool()),
        (503, Some(true))
    );
}

#[tokio::test]
async fn endpoint_hygiene() {
    let records = Records::default();
    let monitor = records
        .attach(
            Monitor::builder()
                .prefix(PREFIX)
                .endpoint_token("s3cret-token"),
        )
        .build()
        .unwrap();
    let server = Server::start(&monitor).await;
    let url = |p: &str| format!("http://{}{PREFIX}{p}", server.addr);
    let http = client();
    let bearer = "Bearer s3cret-token";

    // Unknown path under the prefix: 404 JSON listing the endpoints.
    let res = http
        .get(url("/nope"))
        .header("authorization", bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    assert!(body["error"]["endpoints"].as_array().unwrap().len() >= 3);

    // Wrong method: 405 with Allow.
    let res = http
        .post(url("/metrics"))
        .header("authorization", bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "GET, HEAD");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "error");

    // Unknown query parameter: 400 naming it.
    let res = http
        .get(url("/metrics?window=5m"))
        .header("authorization", bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["parameter"], "window");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("window")
    );

    // The token guard: 401 without or with a wrong token, no data; /health stays open.
    for auth in [
        None,
        Some("Bearer wrong-token!"),
        Some("Bearer s3cret-toke"),
        Some("Basic czNjcmV0"),
        Some("Bearers3cret-token"),
        Some("Bearer s3cret-token x"),
    ] {
        let mut req = http.get(url("/metrics"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401, "{auth:?}");
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
        let body: Value = res.json().await.unwrap();
        assert!(body.get("data").is_none());
    }
    let res = http.get(url("/metrics/prometheus")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    // The scheme in any case, and spaces after it (RFC 9110, section 11).
    for auth in [bearer, "bearer s3cret-token", "BEARER  s3cret-token"] {
        let res = http
            .get(url("/metrics"))
            .header("authorization", auth)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{auth}");
    }
    let res = http.get(url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let res = http
        .get(url("/metrics/prometheus"))
        .header("authorization", bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );

    // None of that was measured.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(records.snapshot().is_empty(), "{:?}", records.snapshot());
    assert_eq!(monitor.in_flight(), 0);
}

/// With `endpoint_token` set, `/health` without the token shows statuses and rates only: no
/// budget (its user, provider, spend) and no trigger filter; with the token, the whole report.
#[tokio::test]
async fn open_health_shows_statuses_and_rates_only() {
    use tower_stream_monitor::health::Budget;
    let monitor = Monitor::builder()
        .prefix(PREFIX)
        .endpoint_token("s3cret-token")
        .rollback_trigger(
            RollbackTrigger::new("vip_errors", [Outcome::ServerError], 30.0)
                .provider("anthropic-vip"),
        )
        .budget(
            Budget::per_hour("vip", 5.0)
                .user("alice@example.com")
                .provider("anthropic-vip"),
        )
        .build()
        .unwrap();
    let server = Server::start(&monitor).await;
    let url = format!("http://{}{PREFIX}/health", server.addr);
    let http = client();
    let open = http.get(&url).send().await.unwrap();
    assert_eq!(open.status(), 200);
    let open = open.text().await.unwrap();
    for hidden in [
        "alice@example.com",
        "anthropic-vip",
        "spent_usd",
        "budgets",
        "anomalies",
    ] {
        assert!(!open.contains(hidden), "{hidden} in {open}");
    }
    let open: Value = serde_json::from_str(&open).unwrap();
    assert_eq!(open["status"], "unknown");
    assert_eq!(open["rollback"], false);
    assert!(open["checks"].as_array().is_some_and(|c| !c.is_empty()));
    let trigger = open["triggers"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "vip_errors"))
        .expect("the trigger's state");
    assert_eq!(trigger["threshold"], 30.0);
    assert_eq!(trigger["fired"], false);

    let full: Value = http
        .get(&url)
        .header("authorization", "Bearer s3cret-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(full["budgets"][0]["user"], "alice@example.com");
    assert_eq!(full["budgets"][0]["spent_usd"], 0.0);
    let trigger = full["triggers"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "vip_errors"))
        .expect("the trigger's state");
    assert_eq!(trigger["provider"], "anthropic-vip");
}

fn promtool() -> std::path::PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("promtool"))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("promtool not found on PATH: install Debian's `prometheus` package (apt-get install -y prometheus), as .ci/run does")
    })
}

#[tokio::test]
async fn promtool_accepts_a_live_scrape() {
    let promtool = promtool();
    let records = Records::default();
    let monitor = records
        .attach(Monitor::builder().prefix(PREFIX).label_cardinality(2))
        .build()
        .unwrap();
    let server = Server::start(&monitor).await;
    for provider in ["openai", "anthropic", "gemini"] {
        server
            .chat(&[("x-provider", provider), ("x-tokens", "4")])
            .await;
    }
    server.chat(&[("x-status", "401")]).await;
    server.get("/plain").await;
    records.wait_for(5).await;
    let (status, headers, text) = server.get(&format!("{PREFIX}/metrics/prometheus")).await;
    if std::env::var_os("SHOW_SCRAPE").is_some() {
        eprintln!("{text}");
    }
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .contains("version=0.0.4")
    );
    for name in [
        "gen_ai_server_time_to_first_token_seconds_bucket{",
        "gen_ai_server_time_per_output_token_seconds_bucket{",
        "gen_ai_server_request_duration_seconds_bucket{",
        "gen_ai_client_token_usage_bucket{",
        "stream_monitor_requests_total{",
        "stream_monitor_in_flight{",
        "stream_monitor_time_to_first_byte_seconds_bucket{",
        "stream_monitor_response_bytes_bucket{",
        "stream_monitor_label_overflow_total{",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    assert!(
        !text.contains("quantile="),
        "histograms, never summaries:\n{text}"
    );
    assert!(
        text.contains("le=\"0.001\"") && text.contains("le=\"327.68\""),
        "spec buckets"
    );
    assert!(
        text.contains("gen_ai_provider_name=\"other\""),
        "cardinality cap applies"
    );
    assert!(text.contains("outcome=\"auth_error\""));
    assert!(text.contains("gen_ai_token_type=\"input\""));

    let mut child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- scrape ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn each_monitor_renders_its_own_prometheus() {
    let (a_records, b_records) = (Records::default(), Records::default());
    let a = a_records
        .attach(Monitor::builder().prefix(PREFIX))
        .build()
        .unwrap();
    let b = b_records
        .attach(Monitor::builder().prefix(PREFIX))
        .build()
        .unwrap();
    let server_a = Server::start(&a).await;
    let server_b = Server::start(&b).await;
    server_a.chat(&[("x-provider", "only-a")]).await;
    server_b.chat(&[("x-provider", "only-b")]).await;
    server_b.chat(&[("x-provider", "only-b")]).await;
    a_records.wait_for(1).await;
    b_records.wait_for(2).await;
    let (_, _, text_a) = server_a.get(&format!("{PREFIX}/metrics/prometheus")).await;
    let (_, _, text_b) = server_b.get(&format!("{PREFIX}/metrics/prometheus")).await;
    assert!(text_a.contains("only-a") && !text_a.contains("only-b"));
    assert!(text_b.contains("only-b") && !text_b.contains("only-a"));
    assert!(text_b.contains("outcome=\"ok\"} 2"), "{text_b}");
}

/// The gauges of one scrape: `name{labels}` (labels as the exposition writes them) to value.
fn gauges(scrape: &str, names: &[&str]) -> std::collections::BTreeMap<String, f64> {
    scrape
        .lines()
        .filter(|line| names.iter().any(|n| line.starts_with(&format!("{n}{{"))))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            (series.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

#[tokio::test]
async fn health_gauges_say_what_health_says() {
    let clock = clock();
    let records = Records::default();
    let monitor = records
        .attach(Monitor::builder().prefix(PREFIX).clock(clock.clone()))
        .build()
        .unwrap();
    let server = Server::start(&monitor).await;
    // Past the 20 samples health needs: 4 upstream refusals in 24, 16.7% (the trigger is 5%).
    for _ in 0..20 {
        server.chat(&[]).await;
    }
    for _ in 0..4 {
        server.chat(&[("x-status", "401")]).await;
    }
    records.wait_for(24).await;

    // The clock stands still: the scrape, /health and health() judge the same window.
    let (status, _, scrape) = server.get(&format!("{PREFIX}/metrics/prometheus")).await;
    assert_eq!(status, 200);
    let (status, body) = server.json(&format!("{PREFIX}/health")).await;
    assert_eq!(
        (status.as_u16(), &body["status"]),
        (503, &"critical".into())
    );
    let report = monitor.health();
    assert_eq!(report.status, HealthStatus::Critical);

    let status_gauges = gauges(&scrape, &["stream_monitor_health_status"]);
    let expected: std::collections::BTreeMap<String, f64> = HealthStatus::ALL
        .iter()
        .map(|s| {
            (
                format!("stream_monitor_health_status{{status=\"{s}\"}}"),
                f64::from(u8::from(*s == HealthStatus::Critical)),
            )
        })
        .collect();
    assert_eq!(status_gauges, expected, "{scrape}");

    let trigger_gauges = gauges(
        &scrape,
        &[
            "stream_monitor_rollback_trigger_fired",
            "stream_monitor_rollback_trigger_rate_percent",
            "stream_monitor_rollback_trigger_samples",
        ],
    );
    let auth = |metric: &str| trigger_gauges[&format!("{metric}{{trigger=\"auth_error_rate\"}}")];
    assert_eq!(auth("stream_monitor_rollback_trigger_fired"), 1.0);
    assert_eq!(auth("stream_monitor_rollback_trigger_samples"), 24.0);
    assert!((auth("stream_monitor_rollback_trigger_rate_percent") - 400.0 / 24.0).abs() < 1e-9);
    let mut expected = std::collections::BTreeMap::new();
    for (trigger, json) in report
        .triggers
        .iter()
        .zip(body["triggers"].as_array().unwrap())
    {
        assert_eq!(json["fired"], trigger.fired, "{}", trigger.name);
        let series = |metric: &str| format!("{metric}{{trigger=\"{}\"}}", trigger.name);
        expected.insert(
            series("stream_monitor_rollback_trigger_fired"),
            f64::from(u8::from(trigger.fired)),
        );
        expected.insert(
            series("stream_monitor_rollback_trigger_rate_percent"),
            trigger.value,
        );
        expected.insert(
            series("stream_monitor_rollback_trigger_samples"),
            trigger.samples as f64,
        );
    }
    assert_eq!(trigger_gauges, expected, "{scrape}");
    assert_eq!(
        trigger_gauges["stream_monitor_rollback_trigger_fired{trigger=\"timeout_rate\"}"],
        0.0
    );

    // Each check's status one-hot and its value, as health() and /health give them.
    let check_gauges = gauges(
        &scrape,
        &[
            "stream_monitor_health_check_status",
            "stream_monitor_health_check_value",
        ],
    );
    let mut expected = std::collections::BTreeMap::new();
    assert_eq!(report.checks.len(), 3);
    for (check, json) in report.checks.iter().zip(body["checks"].as_array().unwrap()) {
        assert_eq!(
            (json["name"].as_str(), json["status"].as_str()),
            (Some(check.name), Some(check.status.as_str()))
        );
        for status in HealthStatus::ALL {
            expected.insert(
                format!(
                    "stream_monitor_health_check_status{{check=\"{}\",status=\"{status}\"}}",
                    check.name
                ),
                f64::from(u8::from(check.status == status)),
            );
        }
        expected.insert(
            format!(
                "stream_monitor_health_check_value{{check=\"{}\"}}",
                check.name
            ),
            check.value,
        );
    }
    assert_eq!(check_gauges, expected, "{scrape}");
    // 4 errors in 24 streams: the error-rate check is past its 10% critical line.
    assert_eq!(
        check_gauges["stream_monitor_health_check_status{check=\"streaming_error_rate\",status=\"critical\"}"],
        1.0
    );
    let error_rate =
        check_gauges["stream_monitor_health_check_value{check=\"streaming_error_rate\"}"];
    assert!((error_rate - 400.0 / 24.0).abs() < 1e-9, "{error_rate}");
}

/// `verify` passes a right server whose health calls for a rollback without any trigger: a
/// passed budget marked `rollback()`.
#[tokio::test]
async fn verify_passes_a_rollback_called_by_a_budget() {
    use tower_stream_monitor::StreamRecord;
    use tower_stream_monitor::health::Budget;
    let monitor = Monitor::builder()
        .prefix(PREFIX)
        .budget(Budget::per_hour("all", 0.01).rollback())
        .build()
        .unwrap();
    let mut record =
        StreamRecord::new("openai", "gpt-4o-mini", "/v1/chat/completions", Outcome::Ok);
    record.streaming = true;
    record.input_tokens = Some(1_000_000);
    record.output_tokens = 1_000_000;
    monitor.ingest(record);
    let health = monitor.health();
    assert!(
        health.rollback,
        "the budget calls for a rollback: {health:#?}"
    );
    assert!(health.triggers.iter().all(|t| !t.fired), "no trigger fired");
    let addr = serve(axum::Router::new().layer(monitor.layer())).await;
    let checks = verify::verify(&format!("http://{addr}"), PREFIX, None).await;
    let failed: Vec<_> = checks.iter().filter(|c| !c.passed).collect();
    assert!(failed.is_empty(), "{failed:#?}");
}

/// `verify` finds every documented field of a window missing.
#[test]
fn verify_names_each_missing_window_field() {
    let monitor = Monitor::builder().build().unwrap();
    let window = serde_json::to_value(monitor.snapshot()).unwrap()["streaming_5min"].clone();
    assert!(verify::window_problems(&window).is_empty());
    let Value::Object(fields) = &window else {
        panic!("a window is an object: {window}");
    };
    for name in fields.keys() {
        let mut without = window.clone();
        without.as_object_mut().unwrap().remove(name);
        assert!(
            !verify::window_problems(&without).is_empty(),
            "{name} missing, and no problem found"
        );
    }
}
