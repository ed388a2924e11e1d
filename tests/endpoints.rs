//! Windows, the monitoring endpoints and health, on a real server with a real client and a
//! moved clock.

mod common;

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

const WINDOW_NUMBERS: [&str; 19] = [
    "total_streaming_requests",
    "avg_first_token_latency_ms",
    "first_token_p50_ms",
    "first_token_p95_ms",
    "first_token_p99_ms",
    "avg_tokens_per_second",
    "total_tokens",
    "input_tokens",
    "streaming_error_rate",
    "streaming_errors",
    "timeouts",
    "auth_errors",
    "cancelled",
    "avg_duration_ms",
    "duration_p95_ms",
    "time_per_output_token_p95_ms",
    "max_stall_ms",
    "in_flight",
    "total_streaming_requests",
];

fn assert_window(w: &Value, what: &str) {
    for field in WINDOW_NUMBERS {
        assert!(w[field].is_number(), "{what}.{field} is a number: {w}");
    }
    let by = w["by_outcome"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}.by_outcome"));
    for o in Outcome::ALL {
        assert!(by[o.as_str()].is_u64(), "{what}.by_outcome.{o}");
    }
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
    for f in ["cpu_percent", "memory_mb", "memory_percent"] {
        assert!(s[f].is_number(), "current_system.{f}");
    }
    for f in ["num_threads", "num_fds"] {
        assert!(s[f].is_u64(), "current_system.{f}");
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
    let data = server.metrics().await;
    assert_shape(&data);
    assert_eq!(data["streaming_5min"]["first_token_p95_ms"], 0.0);
    assert_eq!(data["streaming_5min"]["streaming_error_rate"], 0.0);
    assert_eq!(data["requests_5min"]["auth_error_rate"], 0.0);
    assert_eq!(data["health_status"], "unknown");
    assert_eq!(data["streaming_by_provider"], serde_json::json!({}));
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
            target: 20.0,
            warning: 60.0,
            critical: 200.0,
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

#[tokio::test]
async fn health_moves_through_its_states_with_one_alert_per_change() {
    let clock = clock();
    let records = Records::default();
    let alerts: Arc<Mutex<Vec<Alert>>> = Arc::default();
    let sink = alerts.clone();
    let monitor = records
        .attach(
            Monitor::builder()
                .prefix(PREFIX)
                .clock(clock.clone())
                .min_samples(3)
                .baselines(quick_baselines())
                .on_alert(move |a: &Alert| sink.lock().unwrap().push(a.clone())),
        )
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

    let mut expected_records = 0;
    let mut phase = |ttft_ms: &'static str| {
        expected_records += 3;
        let n = expected_records;
        let server = &server;
        let records = &records;
        let clock = &clock;
        async move {
            // Each phase starts in a fresh 5-minute window.
            clock.advance(Duration::from_secs(311));
            for _ in 0..3 {
                server
                    .chat(&[("x-ttft-ms", ttft_ms), ("x-tokens", "2")])
                    .await;
            }
            records.wait_for(n).await;
            server.json(&format!("{PREFIX}/health")).await
        }
    };
    let (status, body) = phase("0").await;
    assert_eq!(
        (status.as_u16(), body["status"].as_str()),
        (200, Some("healthy")),
        "{body}"
    );
    let (status, body) = phase("100").await;
    assert_eq!(
        (status.as_u16(), body["status"].as_str()),
        (200, Some("degraded")),
        "{body}"
    );
    let (status, body) = phase("300").await;
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
