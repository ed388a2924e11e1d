//! Layer 2: error records from tracing events, served at /errors and /errors/summary.

mod common;

use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use common::{Captured, Records, client, endless_sse, monitored, recorded, serve, subscriber};
use serde_json::Value;
use tower_stream_monitor::errors::ErrorQuery;
use tower_stream_monitor::{Monitor, StreamLabels};
use tracing_subscriber::layer::SubscriberExt;

const PREFIX: &str = "/api/v1/monitoring";
const SECRET_KEY: &str = "sk-ant-api03-Zx9Yw8Vu7Ts6Rq5Po4";
const SECRET_BEARER: &str = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0.sig";

async fn get_json(addr: std::net::SocketAddr, path: &str) -> (u16, Value, String) {
    let res = client()
        .get(format!("http://{addr}{PREFIX}{path}"))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, json, text)
}

// Current-thread runtime: the thread-local subscriber sees the server's tasks.
#[tokio::test]
async fn handler_error_has_request_context_and_no_secret() {
    let records = Records::default();
    let monitor = records
        .attach(Monitor::builder().prefix(PREFIX))
        .build()
        .unwrap();
    let fmt_out = Captured::default();
    let _guard = tracing::subscriber::set_default(subscriber(&monitor, &fmt_out));

    let app = Router::new()
        .route(
            "/v1/chat/completions",
            post(|| async {
                tracing::info!(target: "app", "calling upstream");
                tracing::debug!(target: "app", "debug detail the error layer never sees");
                tracing::error!(
                    target: "app::upstream",
                    api_key = SECRET_KEY,
                    attempt = 2,
                    url = "https://api.example/v1?api_key=abc123&stream=true",
                    "upstream rejected Authorization: Bearer {SECRET_BEARER} with key {SECRET_KEY}"
                );
                (StreamLabels::new("anthropic"), "failed")
            }),
        )
        .layer(monitor.layer());
    let addr = serve(app).await;
    client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("x-request-id", "req-4242")
        .header("x-user-id", "user-7")
        .header("x-llm-provider", "anthropic")
        .send()
        .await
        .unwrap();
    records.wait_for(1).await;

    let (status, body, text) = get_json(addr, "/errors").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(body["status"], "success");
    assert_eq!(body["data"]["total"], 1);
    let e = &body["data"]["errors"][0];
    assert_eq!(e["level"], "error");
    assert_eq!(e["target"], "app::upstream");
    assert_eq!(e["request_id"], "req-4242");
    assert_eq!(e["user_id"], "user-7");
    assert_eq!(e["provider"], "anthropic");
    assert_eq!(e["route"], "/v1/chat/completions");
    assert_eq!(e["fields"]["api_key"], "[REDACTED]");
    assert_eq!(e["fields"]["attempt"], "2");
    assert_eq!(
        e["fields"]["url"],
        "https://api.example/v1?api_key=[REDACTED]&stream=true"
    );
    assert_eq!(
        e["message"],
        "upstream rejected Authorization: Bearer [REDACTED] with key [REDACTED]"
    );
    assert!(
        e["spans"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "stream_request"),
        "{e}"
    );
    assert!(
        e["location"]
            .as_str()
            .unwrap()
            .starts_with("tests/errors.rs:"),
        "{e}"
    );
    assert_eq!(e["fingerprint"].as_str().unwrap().len(), 16);
    assert!(e["timestamp"].as_str().unwrap().ends_with('Z'));

    // The secret is nowhere: not in either endpoint, not in a clone of a stored record.
    let (_, _, summary_text) = get_json(addr, "/errors/summary").await;
    for haystack in [&text, &summary_text] {
        assert!(
            !haystack.contains(SECRET_KEY)
                && !haystack.contains(SECRET_BEARER)
                && !haystack.contains("abc123")
        );
    }
    let stored = monitor.errors(&ErrorQuery::default()).errors;
    let copy = (*stored[0]).clone();
    assert!(!format!("{copy:?}").contains(SECRET_KEY));

    // The fmt layer beside it still sees INFO events; DEBUG went nowhere.
    let logs = fmt_out.text();
    assert!(logs.contains("calling upstream"), "{logs}");
    assert!(!logs.contains("debug detail"));
    assert_eq!(
        monitor.error_summary().totals.warn + monitor.error_summary().totals.error,
        1
    );
}

#[tokio::test]
async fn stream_timeout_lands_in_errors_with_its_context() {
    let records = Records::default();
    let monitor = records
        .attach(
            Monitor::builder()
                .prefix(PREFIX)
                .stream_timeout(Duration::from_millis(200)),
        )
        .build()
        .unwrap();
    let fmt_out = Captured::default();
    let _guard = tracing::subscriber::set_default(subscriber(&monitor, &fmt_out));
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            post(|| async {
                (
                    StreamLabels::new("openai"),
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    endless_sse(Duration::from_millis(20)),
                )
            }),
        )
        .layer(monitor.layer());
    let addr = serve(app).await;
    client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("x-request-id", "req-timeout")
        .header("x-user-id", "user-9")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    records.wait_for(1).await;
    let (status, body, _) = get_json(addr, "/errors?level=error&target=tower_stream_monitor").await;
    assert_eq!(status, 200);
    let e = &body["data"]["errors"][0];
    assert_eq!(e["message"], "Streaming timeout after 0.2s");
    assert_eq!(e["target"], "tower_stream_monitor::session");
    assert_eq!(
        (e["request_id"].as_str(), e["user_id"].as_str()),
        (Some("req-timeout"), Some("user-9"))
    );
    assert_eq!(
        (e["provider"].as_str(), e["route"].as_str()),
        (Some("openai"), Some("/v1/chat/completions"))
    );
    assert_eq!(e["fields"]["outcome"], "timeout");
}

/// Ten callsites, each on its own line (a fingerprint is the callsite's target, file, line and
/// level, so it stays the same across restarts).
fn ten_callsites(i: u64) {
    match i % 10 {
        0 => tracing::warn!(target: "bulk", n = i, "callsite 0"),
        1 => tracing::warn!(target: "bulk", n = i, "callsite 1"),
        2 => tracing::warn!(target: "bulk", n = i, "callsite 2"),
        3 => tracing::warn!(target: "bulk", n = i, "callsite 3"),
        4 => tracing::warn!(target: "bulk", n = i, "callsite 4"),
        5 => tracing::error!(target: "bulk", n = i, "callsite 5"),
        6 => tracing::error!(target: "bulk", n = i, "callsite 6"),
        7 => tracing::error!(target: "bulk", n = i, "callsite 7"),
        8 => tracing::error!(target: "bulk", n = i, "callsite 8"),
        _ => tracing::error!(target: "bulk", n = i, "callsite 9 {}", "x".repeat(5000)),
    }
}

#[test]
fn one_callsite_is_one_group_and_a_flood_of_events_stays_bounded() {
    // Twenty times the ring's 1000 records and ten callsites against 6 groups: both caps are
    // passed many times over.
    const FLOOD: u64 = 20_000;
    let monitor = Monitor::builder()
        .prefix(PREFIX)
        .max_error_groups(6)
        .build()
        .unwrap();
    let subscriber = tracing_subscriber::registry().with(monitor.error_layer());
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..1000 {
            tracing::error!(target: "grouped", i, "same callsite, message {i}");
        }
    });
    let summary = monitor.error_summary();
    assert_eq!(summary.groups.len(), 1);
    assert_eq!(summary.groups[0].count, 1000);
    assert_eq!(
        summary.groups[0].sample_message,
        "same callsite, message 999"
    );
    assert!(summary.groups[0].first_seen <= summary.groups[0].last_seen);
    assert_eq!(
        (
            summary.totals.error,
            summary.last_5min.error,
            summary.last_1hour.error
        ),
        (1000, 1000, 1000)
    );

    let subscriber = tracing_subscriber::registry().with(monitor.error_layer());
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..FLOOD {
            ten_callsites(i);
        }
    });
    let summary = monitor.error_summary();
    assert_eq!(summary.stored, 1000, "the ring holds the latest 1000");
    assert_eq!(summary.totals.warn + summary.totals.error, 1000 + FLOOD);
    // 6 groups: the first callsite and 5 of the ten, then `other` for the other five.
    assert_eq!(summary.groups.len(), 7);
    let other = summary
        .groups
        .iter()
        .find(|g| g.fingerprint == "other")
        .unwrap();
    assert_eq!(other.count, FLOOD / 2);
    assert_eq!(summary.groups[0].count, other.count, "most frequent first");
    let tower_stream_monitor::errors::ErrorPage {
        errors: latest,
        total,
        ..
    } = monitor.errors(&ErrorQuery {
        limit: 1000,
        ..Default::default()
    });
    assert_eq!((latest.len(), total), (1000, 1000));
    assert_eq!(
        latest[0].fields.get("n"),
        Some((FLOOD - 1).to_string().as_str()),
        "newest first"
    );
    let long = latest
        .iter()
        .find(|r| r.message.starts_with("callsite 9"))
        .unwrap();
    assert!(long.message.len() <= 1024, "values are cut to 1 KiB");
}

#[tokio::test]
async fn bad_query_parameters_are_named_and_filters_apply() {
    let monitor = Monitor::builder().prefix(PREFIX).build().unwrap();
    let subscriber = tracing_subscriber::registry().with(monitor.error_layer());
    tracing::subscriber::with_default(subscriber, || {
        tracing::warn!(target: "alpha", "a warning");
        tracing::error!(target: "beta::inner", "an error");
    });
    let app = Router::new().layer(monitor.layer());
    let addr = serve(app).await;
    for (query, parameter) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("level=info", "level"),
        ("since=yesterday", "since"),
        ("target=", "target"),
        ("colour=red", "colour"),
        ("limit=1&limit=2", "limit"),
    ] {
        let (status, body, text) = get_json(addr, &format!("/errors?{query}")).await;
        assert_eq!(status, 400, "{query}: {text}");
        assert_eq!(body["error"]["parameter"], parameter, "{query}");
    }
    let (status, body, _) = get_json(addr, "/errors/summary?limit=1").await;
    assert_eq!(
        (status, body["error"]["parameter"].as_str()),
        (400, Some("limit"))
    );

    let count = |body: &Value| body["data"]["errors"].as_array().unwrap().len();
    let (_, body, _) = get_json(addr, "/errors").await;
    assert_eq!((count(&body), body["data"]["total"].as_u64()), (2, Some(2)));
    assert_eq!(
        body["data"]["errors"][0]["target"], "beta::inner",
        "newest first"
    );
    let (_, body, _) = get_json(addr, "/errors?level=error").await;
    assert_eq!(count(&body), 1);
    let (_, body, _) = get_json(addr, "/errors?level=warn&target=alpha").await;
    assert_eq!(body["data"]["errors"][0]["message"], "a warning");
    let (_, body, _) = get_json(addr, "/errors?limit=1").await;
    assert_eq!((count(&body), body["data"]["total"].as_u64()), (1, Some(2)));
    let (_, body, _) = get_json(addr, "/errors?since=2999-01-01T00:00:00Z").await;
    assert_eq!(count(&body), 0);
    let (_, body, _) = get_json(addr, "/errors?since=2000-01-01T00%3A00%3A00Z").await;
    assert_eq!(count(&body), 2);
    // Offsets and lower case are RFC 3339 too. An hour from now (UTC) written with `+12:00`
    // is eleven hours ago: both records; with `-12:00`, thirteen hours on: none. Lower case
    // `t` and `z`: an hour on, none.
    let in_an_hour = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    let utc = humantime::format_rfc3339_seconds(in_an_hour).to_string();
    let written = utc.trim_end_matches('Z');
    for (since, want) in [
        (format!("{written}%2B12:00"), 2),
        (format!("{written}-12:00"), 0),
        (utc.to_lowercase(), 0),
        ("2000-01-01T01:00:00%2B01:00".to_owned(), 2),
    ] {
        let (status, body, text) = get_json(addr, &format!("/errors?since={since}")).await;
        assert_eq!(status, 200, "{since}: {text}");
        assert_eq!(count(&body), want, "{since}");
    }
    for bad in [
        "2025-11-13T14:56:38%2B24:00",
        "2025-11-13T14:56:38%2B1:00",
        "2025-11-13T14:56:38%2Bab:cd",
    ] {
        let (status, _, text) = get_json(addr, &format!("/errors?since={bad}")).await;
        assert_eq!(status, 400, "{bad}: {text}");
    }
    let (status, body, _) = get_json(addr, "/errors/summary").await;
    assert_eq!(status, 200);
    let data = &body["data"];
    assert_eq!(
        (
            data["totals"]["warn"].as_u64(),
            data["totals"]["error"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(data["last_5min"]["error"], 1);
    assert_eq!(data["groups"].as_array().unwrap().len(), 2);
    for field in [
        "fingerprint",
        "level",
        "target",
        "location",
        "sample_message",
        "count",
        "first_seen",
        "last_seen",
    ] {
        assert!(!data["groups"][0][field].is_null(), "groups[].{field}");
    }
}

/// Every failed stream logs once with the upstream's own error, so `/errors` shows it
/// with the request's context.
#[tokio::test]
async fn failures_reach_the_error_records() {
    let (records, monitor) = recorded(Monitor::builder());
    let _guard = errors_recorded(&monitor);
    let app = Router::new()
        .route(
            "/v1/messages",
            post(|| async {
                let error = serde_json::json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
                (
                    StatusCode::from_u16(529).unwrap(),
                    StreamLabels::new("anthropic"),
                    axum::Json(error),
                )
                    .into_response()
            }),
        )
        .route(
            "/v1/chat/completions",
            post(|| async {
                let body = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n\
                            data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}\n\n";
                (
                    StreamLabels::new("openai"),
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    body,
                )
                    .into_response()
            }),
        )
        .route(
            "/v1/rate",
            post(|| async {
                let error = serde_json::json!({"error": {"type": "requests", "code": "rate_limit_exceeded", "message": "Rate limit reached"}});
                (StatusCode::TOO_MANY_REQUESTS, StreamLabels::new("openai"), axum::Json(error)).into_response()
            }),
        )
        .route(
            "/v1/bad",
            post(|| async { (StatusCode::BAD_REQUEST, "bad body").into_response() }),
        )
        .layer(monitor.layer());
    let addr = serve(app).await;
    for path in [
        "/v1/messages",
        "/v1/chat/completions",
        "/v1/rate",
        "/v1/bad",
    ] {
        client()
            .post(format!("http://{addr}{path}"))
            .header("x-user-id", "user-7")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    records.wait_for(4).await;
    let page = monitor.errors(&ErrorQuery::default());
    let (errors, total) = (page.errors, page.total);
    assert_eq!(total, 3, "{errors:#?}");
    let find = |needle: &str| {
        errors
            .iter()
            .find(|e| e.message.contains(needle))
            .unwrap_or_else(|| panic!("no record with {needle:?}: {errors:#?}"))
    };
    let overloaded = find("overloaded_error: Overloaded");
    assert_eq!(
        overloaded.level,
        tower_stream_monitor::errors::ErrorLevel::Error
    );
    assert!(overloaded.message.contains("server_error"));
    assert_eq!(overloaded.user_id.as_deref(), Some("user-7"));
    assert_eq!(overloaded.route.as_deref(), Some("/v1/messages"));
    let in_stream = find("The server had an error");
    assert!(in_stream.message.contains("stream_error"));
    let rate = find("Rate limit reached");
    assert_eq!(rate.level, tower_stream_monitor::errors::ErrorLevel::Warn);
    assert!(!errors.iter().any(|e| e.message.contains("client error")));
}

/// A failed response's error body longer than the part kept (a quota error with its details)
/// is read up to the cut: its record names the upstream's status and message.
#[tokio::test]
async fn a_long_error_body_keeps_its_kind_and_message() {
    let app = Router::new().route(
        "/v1beta/models/gemini:streamGenerateContent",
        post(|| async {
            // In Gemini's own order: the details last.
            let violations: Vec<String> = (0..200)
                .map(|n| format!(r#"{{"subject":"project:{n}","description":"Quota exceeded"}}"#))
                .collect();
            let error = format!(
                r#"{{"error":{{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED","details":[{{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{}]}}]}}}}"#,
                violations.join(",")
            );
            assert!(error.len() > 8_000);
            (
                StatusCode::TOO_MANY_REQUESTS,
                StreamLabels::new("gemini"),
                [(header::CONTENT_TYPE, "application/json")],
                error,
            )
                .into_response()
        }),
    );
    let (records, monitor, addr) = monitored(Monitor::builder(), app).await;
    let _guard = errors_recorded(&monitor);
    client()
        .post(format!(
            "http://{addr}/v1beta/models/gemini:streamGenerateContent"
        ))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    records.wait_for(1).await;
    let errors = monitor.errors(&ErrorQuery::default()).errors;
    assert!(
        errors.iter().any(|e| e
            .message
            .contains("RESOURCE_EXHAUSTED: Resource has been exhausted")),
        "{errors:#?}"
    );
}

/// `monitor`'s error layer as this thread's subscriber, alone, until the guard is dropped.
fn errors_recorded(monitor: &Monitor) -> tracing::subscriber::DefaultGuard {
    tracing::subscriber::set_default(tracing_subscriber::registry().with(monitor.error_layer()))
}

fn every_record() -> ErrorQuery {
    ErrorQuery {
        limit: 1000,
        ..ErrorQuery::default()
    }
}

/// The error layers of two monitors on one subscriber each keep their records: a span with a
/// context field is no panic.
#[test]
fn two_monitors_error_layers_share_a_subscriber() {
    let a = Monitor::builder().build().unwrap();
    let b = Monitor::builder().build().unwrap();
    let subscriber = tracing_subscriber::registry()
        .with(a.error_layer())
        .with(b.error_layer());
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("request", request_id = "r-1");
        let _entered = span.enter();
        tracing::error!("failed");
    });
    for monitor in [&a, &b] {
        let page = monitor.errors(&every_record());
        assert_eq!(page.total, 1);
        assert_eq!(page.errors[0].request_id.as_deref(), Some("r-1"));
    }
}

/// Anthropic's failure with `status` (a 529: overloaded), served through the monitor layer.
async fn an_upstream_failure(monitor: &Monitor, request: http::Request<()>, status: u16) {
    use http_body_util::BodyExt as _;
    use tower::{Layer, ServiceExt};
    let inner = tower::service_fn(move |_: http::Request<()>| async move {
        let body = bytes::Bytes::from_static(
            b"{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}",
        );
        let mut response = http::Response::new(http_body_util::Full::new(body));
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
        response
            .extensions_mut()
            .insert(StreamLabels::new("anthropic"));
        Ok::<_, std::convert::Infallible>(response)
    });
    let response = monitor.layer().layer(inner).oneshot(request).await.unwrap();
    let _ = response.into_body().collect().await.unwrap();
}

/// A failure's error record names the trace its request's record and exemplars name, though
/// the caller sent none and no span was kept.
#[tokio::test]
async fn a_failures_error_record_names_its_requests_trace() {
    let (records, monitor) = recorded(Monitor::builder());
    let _guard = errors_recorded(&monitor);
    let request = http::Request::post("/v1/messages").body(()).unwrap();
    an_upstream_failure(&monitor, request, 529).await;
    let record = records.one().await;
    let trace = record.trace.as_ref().expect("a failure's trace");
    let page = monitor.errors(&every_record());
    let failure = page
        .errors
        .iter()
        .find(|e| e.target == tower_stream_monitor::SESSION_TARGET)
        .expect("the failure's error record");
    assert_eq!(
        failure.trace_id.as_deref(),
        Some(trace.trace_id().to_string().as_str())
    );
    assert_eq!(
        failure.span_id.as_deref(),
        Some(trace.span_id().to_string().as_str())
    );
}

/// A health alert judged on a request's path is the service's: its error record names no
/// request, user, route nor trace.
#[tokio::test]
async fn a_health_alert_names_no_request() {
    let monitor = Monitor::builder().min_samples(1).build().unwrap();
    let _guard = errors_recorded(&monitor);
    let request = http::Request::post("/v1/messages")
        .header("x-request-id", "req-unlucky")
        .header("x-user-id", "alice")
        .body(())
        .unwrap();
    // One rejection of the app's key fires `auth_error_rate`: health turns critical.
    an_upstream_failure(&monitor, request, 401).await;
    let page = monitor.errors(&every_record());
    let alert = page
        .errors
        .iter()
        .find(|e| e.target == tower_stream_monitor::HEALTH_TARGET)
        .unwrap_or_else(|| panic!("no health record: {page:#?}"));
    assert_eq!(
        (
            alert.request_id.as_deref(),
            alert.user_id.as_deref(),
            alert.route.as_deref(),
            alert.trace_id.as_deref()
        ),
        (None, None, None, None),
        "{alert:#?}"
    );
    assert!(alert.spans.is_empty(), "{alert:#?}");
    // The failure's own record keeps its request.
    let failure = page
        .errors
        .iter()
        .find(|e| e.target == tower_stream_monitor::SESSION_TARGET)
        .expect("the failure's error record");
    assert_eq!(failure.request_id.as_deref(), Some("req-unlucky"));
}

/// A clock of the app's own may read before 1970 (or past 9999): the answers stamp the
/// nearest time their format writes, never a panic.
#[test]
fn a_clock_out_of_the_formats_range_stamps_the_nearest_time() {
    use std::time::{SystemTime, UNIX_EPOCH};
    /// A clock stopped at a time of the app's choosing.
    struct Stopped(SystemTime);
    impl tower_stream_monitor::window::Clock for Stopped {
        fn now(&self) -> SystemTime {
            self.0
        }
        fn monotonic(&self) -> Duration {
            Duration::ZERO
        }
    }
    for now in [
        UNIX_EPOCH - Duration::from_secs(86_400),
        UNIX_EPOCH + Duration::from_secs(400_000_000_000),
    ] {
        let monitor = Monitor::builder().clock(Stopped(now)).build().unwrap();
        let subscriber = tracing_subscriber::registry().with(monitor.error_layer());
        tracing::subscriber::with_default(subscriber, || tracing::error!("failed"));
        let errors = serde_json::to_value(monitor.errors(&every_record())).unwrap();
        let stamp = errors["errors"][0]["timestamp"]
            .as_str()
            .unwrap()
            .to_owned();
        let metrics = serde_json::to_value(monitor.snapshot()).unwrap();
        let expected = if now < UNIX_EPOCH {
            "1970-01-01T00:00:00"
        } else {
            "9999-12-31T23:59:59"
        };
        assert!(stamp.starts_with(expected), "{stamp}");
        assert!(
            metrics["timestamp"]
                .as_str()
                .is_some_and(|t| t.starts_with(expected)),
            "{metrics}"
        );
    }
}

/// Runs `emit` with `monitor`'s error layer as this thread's subscriber: the panic it caused,
/// if any, as its message.
fn without_panic(monitor: &Monitor, emit: impl FnOnce()) -> Result<(), String> {
    let _recorded = errors_recorded(monitor);
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(emit)).map_err(|panic| {
        panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default()
    })
}

/// A span's context value past its size cap is read through a window past the cut; redaction
/// that shrinks the window (a long `password=` value) must not bring a secret cut short at
/// the window's edge into what is kept.
#[test]
fn a_long_span_value_keeps_no_secret_cut_at_the_window() {
    let password = "Hunter2Hunter2Hunter2";
    let (head, url) = ("password=", " postgres://admin:");
    let filler = "x".repeat(1024 - head.len() - url.len() - password.len());
    let value = format!("{head}{filler}{url}{password}@db.internal:5432/app");
    // The URL's `@` lies just past a 1 KiB window: the whole value hides the password.
    assert_eq!(value.find('@'), Some(1024));
    assert!(!tower_stream_monitor::errors::redact(&value).contains(password));
    let monitor = Monitor::builder().build().unwrap();
    without_panic(&monitor, || {
        let span = tracing::info_span!("request", request_id = value.as_str());
        span.in_scope(|| tracing::error!(detail = value.as_str(), "failed"));
    })
    .unwrap();
    let page = monitor.errors(&every_record());
    let record = &page.errors[0];
    assert!(!record.fields.get("detail").unwrap().contains(password));
    let request_id = record.request_id.as_deref().unwrap();
    assert!(
        request_id.starts_with("password=[REDACTED]"),
        "{request_id}"
    );
    assert!(!request_id.contains(password), "{request_id}");
}

/// A value whose `Debug` fails.
struct FailingDebug;

impl std::fmt::Debug for FailingDebug {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Err(std::fmt::Error)
    }
}

/// An error whose `Display` fails.
#[derive(Debug)]
struct FailingDisplay;

impl std::fmt::Display for FailingDisplay {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Err(std::fmt::Error)
    }
}

impl std::error::Error for FailingDisplay {}

/// A formatting trait that returns an error (in a span's context field, in an event's error
/// field) is no panic of the error layer's: the event is recorded.
#[test]
fn a_value_whose_formatting_fails_is_no_panic() {
    let monitor = Monitor::builder().build().unwrap();
    let outcome = without_panic(&monitor, || {
        let span = tracing::info_span!("request", request_id = ?FailingDebug);
        span.in_scope(|| tracing::error!("failed"));
    });
    assert_eq!(outcome, Ok(()));
    let outcome = without_panic(&monitor, || {
        let e = FailingDisplay;
        tracing::error!(error = &e as &(dyn std::error::Error + 'static), "failed");
    });
    assert_eq!(outcome, Ok(()));
    assert_eq!(monitor.errors(&every_record()).total, 2);
}

/// An error whose `source()` is itself, until `0` has counted 100,000 levels (so that the
/// test ends either way).
#[derive(Debug)]
struct OwnSource(std::sync::atomic::AtomicUsize);

impl std::fmt::Display for OwnSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("loop")
    }
}

impl std::error::Error for OwnSource {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (n < 100_000).then_some(self as _)
    }
}

/// An error's source chain is read to a bound: one that is a cycle would hang the thread that
/// logged it.
#[test]
fn an_error_source_chain_is_read_to_a_bound() {
    let monitor = Monitor::builder().build().unwrap();
    let e = OwnSource(std::sync::atomic::AtomicUsize::new(0));
    without_panic(&monitor, || {
        tracing::error!(error = &e as &(dyn std::error::Error + 'static), "failed");
    })
    .unwrap();
    assert_eq!(e.0.load(std::sync::atomic::Ordering::Relaxed), 33);
    let page = monitor.errors(&every_record());
    let error = page.errors[0].fields.get("error").unwrap();
    assert!(error.ends_with(": …"), "{error}");
}

/// A context value whose `Debug` logs a WARN (it runs as the span records the value).
struct LogsWhenFormatted;

impl std::fmt::Debug for LogsWhenFormatted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        tracing::warn!("formatting a request id");
        f.write_str("r-1")
    }
}

/// A span given a context value whose `Debug` logs, inside that span: the event's record reads
/// the span's context while the value is recorded, which must not wait on itself. On a thread
/// of its own; the minute only tells a deadlock from a slow machine, the work takes
/// microseconds.
#[test]
fn a_context_value_that_logs_as_it_is_recorded_is_no_deadlock() {
    let monitor = Monitor::builder().build().unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    let inner = monitor.clone();
    std::thread::spawn(move || {
        let outcome = without_panic(&inner, || {
            let span = tracing::info_span!("request", request_id = tracing::field::Empty);
            let _entered = span.enter();
            span.record("request_id", tracing::field::debug(&LogsWhenFormatted));
            tracing::error!("failed");
        });
        let _ = done.send(outcome);
    });
    let outcome = finished.recv_timeout(Duration::from_secs(60));
    assert_eq!(outcome, Ok(Ok(())), "deadlocked or panicked");
    let page = monitor.errors(&every_record());
    assert_eq!(page.total, 2);
    assert!(
        page.errors
            .iter()
            .any(|r| r.request_id.as_deref() == Some("r-1"))
    );
}
