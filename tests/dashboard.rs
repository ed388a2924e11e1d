//! The dashboard as a person sees it: headless Chromium (Debian's, driven by Python Playwright
//! through `tests/browser/check_dashboard.py`) opens `{prefix}/dashboard` on the demo, types the
//! endpoint token into the page's own form, and reads the figures the page shows. They must be
//! exactly the monitor's own `/metrics` and `/health` answers (the status both of `/health` and
//! of `/metrics`, each row of the provider and model table); an error message carrying HTML
//! must show as text and run nothing; a process figure that is `null` shows as `n/a`. Then injected auth failures fire the rollback trigger and
//! the page must say `critical`. The last screenshot is saved to `docs/dashboard.png` for the
//! README; no assertion reads it.
//!
//! Needs Debian's `chromium` and the Python `playwright` package: `bash .ci/install`. No
//! wall-clock assertion: the timeouts are failure guards only.

mod common;

#[allow(dead_code)]
#[path = "../examples/demo/main.rs"]
mod demo;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Records, client, serve};
use futures_util::future::join_all;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tower_stream_monitor::Monitor;
use tracing_subscriber::layer::SubscriberExt;

const PREFIX: &str = "/monitoring";
const TOKEN: &str = "s3cret-token";
/// An error message that would run script if the page ever put it into the DOM as HTML.
const PLANTED: &str = "<img src=x onerror=alert(1)>";
/// Where Debian's `chromium` package puts the browser and its launcher script.
const CHROMIUM: [&str; 2] = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"];

/// The script's answer: what the page showed.
#[derive(Debug, serde::Deserialize)]
struct Seen {
    page_status: Option<u16>,
    token_prompt: bool,
    /// The budgets', anomalies' and triggers' tables before the token was entered, and after.
    before_token: BTreeMap<String, String>,
    after_token: BTreeMap<String, String>,
    auth: Option<String>,
    status: String,
    requests_5min: String,
    ttft_p95: String,
    streaming_5min: String,
    error_messages: Vec<String>,
    injected_images: u64,
    providers: Vec<String>,
    model_rows: Vec<Vec<String>>,
    system: BTreeMap<String, String>,
    apply_ms: Option<f64>,
    anomalies: Vec<String>,
    users_header: Vec<String>,
    charts: u64,
    /// The time-to-first-token chart's tooltips over the last 5 minutes, a 10 s slot each.
    ttft_tips: Vec<String>,
    notice: String,
    refreshes: u64,
    token_in_url: bool,
    dialogs: Vec<Value>,
    console_errors: Vec<ConsoleError>,
    page_errors: Vec<String>,
    failed_responses: Vec<FailedResponse>,
}

#[derive(Debug, serde::Deserialize)]
struct FailedResponse {
    url: String,
    status: u16,
    after_token: bool,
}

#[derive(Debug, serde::Deserialize)]
struct ConsoleError {
    text: String,
    url: String,
    after_token: bool,
}

/// The figures the page must show, as `/metrics` and `/health` give them.
#[derive(Debug, PartialEq)]
struct Expected {
    /// `/health`'s status.
    status: String,
    /// `/metrics`' `health_status`.
    metrics_status: String,
    requests_5min: String,
    streaming_5min: String,
    ttft_p95: String,
    /// `streaming_by_model`, each row as the page formats it.
    model_rows: Vec<Vec<String>>,
}

/// `/metrics` with the p95 as its exact JSON text: parsed here as correctly as the browser's
/// `JSON.parse` does (serde_json's default float parsing may land one ulp away).
#[derive(serde::Deserialize)]
struct RawMetrics<'a> {
    #[serde(borrow)]
    data: RawData<'a>,
}
#[derive(serde::Deserialize)]
struct RawData<'a> {
    #[serde(borrow)]
    streaming_5min: RawWindow<'a>,
    #[serde(borrow)]
    streaming_by_model: Vec<BTreeMap<&'a str, &'a RawValue>>,
}
#[derive(serde::Deserialize)]
struct RawWindow<'a> {
    #[serde(borrow)]
    first_token_p95_ms: &'a RawValue,
}

/// JavaScript's `x.toFixed(digits)` for a finite `x >= 0`: the exact binary value rounded half
/// up (Rust's `{:.1}` breaks exact ties to even instead).
fn js_to_fixed(x: f64, digits: usize) -> String {
    assert!(x.is_finite() && x >= 0.0, "{x}");
    // Every finite f64 has a finite decimal expansion; 1100 places hold all of it.
    let exact = format!("{x:.1100}");
    let (int, frac) = exact.split_once('.').unwrap();
    let scaled: u128 = format!("{int}{}", &frac[..digits]).parse().unwrap();
    let scaled = if frac.as_bytes()[digits] >= b'5' {
        scaled + 1
    } else {
        scaled
    };
    let unit = 10u128.pow(digits as u32);
    if digits == 0 {
        return scaled.to_string();
    }
    format!("{}.{:0>digits$}", scaled / unit, scaled % unit)
}

fn js_to_fixed_1(x: f64) -> String {
    js_to_fixed(x, 1)
}

/// The page's `fusd`: a cost in USD as it shows it.
fn js_usd(v: f64) -> String {
    if v == 0.0 {
        "$0".to_owned()
    } else if v < 0.0001 {
        "<$0.0001".to_owned()
    } else {
        format!("${}", js_to_fixed(v, if v >= 1.0 { 2 } else { 4 }))
    }
}

/// One `streaming_by_model` row as the page's provider and model table shows it, cell by cell.
fn model_row(row: &BTreeMap<&str, &RawValue>, text: &str) -> Vec<String> {
    let raw = |key: &str| {
        row.get(key)
            .unwrap_or_else(|| panic!("streaming_by_model rows have {key}: {text}"))
            .get()
    };
    let num = |key: &str| -> f64 {
        raw(key)
            .parse()
            .unwrap_or_else(|e| panic!("{key} is a number ({e}): {text}"))
    };
    let name = |key: &str| -> String {
        serde_json::from_str(raw(key)).unwrap_or_else(|e| panic!("{key} is a string ({e})"))
    };
    vec![
        name("provider"),
        name("model"),
        raw("total_streaming_requests").to_owned(),
        js_to_fixed(num("first_token_p50_ms"), 1),
        js_to_fixed(num("first_token_p95_ms"), 1),
        js_to_fixed(num("tokens_per_second_p50"), 1),
        js_to_fixed(num("time_per_output_token_p95_ms"), 1),
        js_to_fixed(num("streaming_error_rate"), 2),
        raw("streaming_errors").to_owned(),
        js_usd(num("cost_usd")),
    ]
}

async fn get_json(base: &str, path: &str) -> (u16, String) {
    let res = client()
        .get(format!("{base}{PREFIX}{path}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = res.status().as_u16();
    (status, res.text().await.unwrap())
}

/// What the page must show now, from the monitor's own endpoints.
async fn expected(base: &str) -> (Expected, Value) {
    let (code, text) = get_json(base, "/metrics").await;
    assert_eq!(code, 200, "{text}");
    let metrics: Value = serde_json::from_str(&text).unwrap();
    let raw: RawMetrics = serde_json::from_str(&text).unwrap();
    let p95: f64 = raw
        .data
        .streaming_5min
        .first_token_p95_ms
        .get()
        .parse()
        .unwrap_or_else(|e| panic!("first_token_p95_ms is a number ({e}): {text}"));
    let (_, health) = get_json(base, "/health").await;
    let health: Value = serde_json::from_str(&health).unwrap();
    let count = |v: &Value| {
        v.as_u64()
            .unwrap_or_else(|| panic!("a count, not {v}: {metrics}"))
            .to_string()
    };
    let expected = Expected {
        status: health["status"].as_str().expect("health status").to_owned(),
        metrics_status: metrics["data"]["health_status"]
            .as_str()
            .expect("health_status in /metrics")
            .to_owned(),
        requests_5min: count(&metrics["data"]["requests_5min"]["total_requests"]),
        streaming_5min: count(&metrics["data"]["streaming_5min"]["total_streaming_requests"]),
        ttft_p95: js_to_fixed_1(p95),
        model_rows: raw
            .data
            .streaming_by_model
            .iter()
            .map(|row| model_row(row, &text))
            .collect(),
    };
    (expected, metrics)
}

/// How many signals `/health` judged.
async fn after_health_anomalies(base: &str) -> usize {
    let (_, health) = get_json(base, "/health").await;
    let health: Value = serde_json::from_str(&health).unwrap();
    health["anomalies"].as_array().map_or(0, Vec::len)
}

/// Debian's Chromium, or a clear failure.
fn require_chromium() {
    assert!(
        CHROMIUM.iter().any(|p| Path::new(p).exists()),
        "Debian's Chromium is missing (none of {CHROMIUM:?}): run bash .ci/install"
    );
}

/// Runs the browser script against the dashboard and returns what the page showed; with
/// `null_system`, the page gets `current_system` as all `null`.
async fn look(addr: SocketAddr, screenshot: &Path, null_system: bool) -> Seen {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/browser/check_dashboard.py"
    );
    let output = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new("python3")
            .arg(script)
            .arg(format!("http://{addr}{PREFIX}/dashboard"))
            .arg(TOKEN)
            .arg(screenshot)
            .args(null_system.then_some("null-system"))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser script finishes within 5 minutes")
    .unwrap_or_else(|e| {
        panic!("cannot run python3 ({e}): install Python 3, then run bash .ci/install")
    });
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "the Python package playwright is missing: run bash .ci/install\n{stderr}"
    );
    assert!(
        !stderr.contains("Chromium not found")
            && !stderr.to_lowercase().contains("executable doesn't exist"),
        "Debian's Chromium is missing: run bash .ci/install\n{stderr}"
    );
    assert!(
        output.status.success(),
        "the browser script failed ({}):\n{stderr}",
        output.status
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or("");
    let seen: Seen = serde_json::from_str(line).unwrap_or_else(|e| {
        panic!("one JSON line from the browser script ({e}):\n{stdout}\n{stderr}")
    });
    // Printed, never asserted: a figure of this machine's load.
    eprintln!(
        "the page showed one refresh in {} ms (performance.now())",
        seen.apply_ms
            .map_or_else(|| "an unknown number of".to_owned(), |ms| ms.to_string())
    );
    seen
}

/// What holds on every look: the token flow, no script from data, no console or page errors.
fn assert_clean(seen: &Seen, critical: bool) {
    assert_eq!(seen.page_status, Some(200), "{seen:#?}");
    assert!(
        seen.token_prompt,
        "the page asked for the token (its data endpoints answer 401 without it): {seen:#?}"
    );
    assert_eq!(
        seen.auth.as_deref(),
        Some("ok"),
        "the token was accepted: {seen:#?}"
    );
    assert!(!seen.token_in_url, "the token never goes into the URL");
    // Before the token, `/health` shows statuses and rates only: the page says what needs the
    // token rather than show those tables as empty; after it, the whole report.
    for table in ["budgets", "anomalies", "triggers"] {
        let (before, after) = (&seen.before_token[table], &seen.after_token[table]);
        assert!(
            before.contains("Needs the token."),
            "{table} before: {before}"
        );
        assert!(
            !after.contains("Needs the token."),
            "{table} after: {after}"
        );
    }
    assert!(seen.refreshes >= 1, "{seen:#?}");
    assert!(
        seen.dialogs.is_empty(),
        "no dialog may open: {:?}",
        seen.dialogs
    );
    assert!(
        seen.page_errors.is_empty(),
        "uncaught exceptions: {:?}",
        seen.page_errors
    );
    // Chromium logs every answer >= 400 as a failed load. Those the design causes are expected:
    // the data endpoints' 401 before the token (the prompt's cause), `/health`'s 503 while
    // critical (its body is still the report). Nothing else may reach the console.
    let expected_failure = |url: &str, status: u16, after_token: bool| {
        let path = url
            .strip_prefix("http://")
            .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
            .unwrap_or("");
        let data = path.starts_with(&format!("{PREFIX}/")) && path != format!("{PREFIX}/dashboard");
        (status == 401 && !after_token && data)
            || (status == 503 && path == format!("{PREFIX}/health") && critical)
    };
    let unexpected: Vec<&ConsoleError> = seen
        .console_errors
        .iter()
        .filter(|e| {
            let status = e
                .text
                .strip_prefix("Failed to load resource: the server responded with a status of ")
                .and_then(|rest| rest.get(..3))
                .and_then(|code| code.parse().ok());
            !status.is_some_and(|code| expected_failure(&e.url, code, e.after_token))
        })
        .collect();
    assert!(unexpected.is_empty(), "console errors: {unexpected:#?}");
    let unexpected: Vec<&FailedResponse> = seen
        .failed_responses
        .iter()
        .filter(|r| !expected_failure(&r.url, r.status, r.after_token))
        .collect();
    assert!(unexpected.is_empty(), "failed requests: {unexpected:#?}");
    assert_eq!(
        seen.notice, "",
        "the page reports no failed request: {seen:#?}"
    );
    assert!(
        seen.error_messages.iter().any(|m| m == PLANTED),
        "the planted message shows literally, as text: {:?}",
        seen.error_messages
    );
    assert_eq!(
        seen.injected_images, 0,
        "the planted <img> never becomes an element"
    );
    assert!(seen.charts >= 1, "the history charts are drawn: {seen:#?}");
    for provider in ["openai", "anthropic", "gcp.gemini"] {
        assert!(
            seen.providers.iter().any(|p| p == provider),
            "{provider} in the providers table: {:?}",
            seen.providers
        );
    }
}

/// The figures the page showed must be the monitor's, and the monitor's must not have moved
/// while the page read them (no traffic runs meanwhile).
fn assert_shows(seen: &Seen, before: &Expected, after: &Expected) {
    assert_eq!(
        before, after,
        "the monitor's figures held still while the page read them"
    );
    let shown = Expected {
        // One status shown: it must be /health's and /metrics' alike.
        status: seen.status.clone(),
        metrics_status: seen.status.clone(),
        requests_5min: seen.requests_5min.clone(),
        streaming_5min: seen.streaming_5min.clone(),
        ttft_p95: seen.ttft_p95.clone(),
        model_rows: seen.model_rows.clone(),
    };
    assert_eq!(&shown, after, "the page against /metrics and /health");
    assert!(!after.model_rows.is_empty(), "{after:#?}");
}

/// `n` simulated streams at `path`, all at once, each with its own first-token delay; each must
/// answer `expect`. Returns how many were sent.
async fn streams(
    base: &str,
    path: &str,
    body: Value,
    n: u64,
    extra: &[(&str, &str)],
    expect: u16,
) -> usize {
    let http = client();
    let requests = (0..n).map(|i| {
        let mut req = http
            .post(format!("{base}{path}"))
            .header("x-sim-tokens", "6")
            .header("x-sim-token-interval-ms", "2")
            // Spread between 20 and 200 ms, so the percentiles differ.
            .header("x-sim-ttft-ms", (20 + i * 180 / n.max(1)).to_string())
            .json(&body);
        for (name, value) in extra {
            req = req.header(*name, *value);
        }
        async move {
            let res = req.send().await.expect("the demo answers");
            let status = res.status().as_u16();
            let body = res.bytes().await.expect("the whole body");
            assert_eq!(status, expect, "{path}: {}", String::from_utf8_lossy(&body));
        }
    });
    join_all(requests).await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_what_the_endpoints_say() {
    require_chromium();
    let records = Records::default();
    let monitor = records
        .attach(Monitor::builder().prefix(PREFIX).endpoint_token(TOKEN))
        .build()
        .unwrap();
    let addr = serve(demo::app(&monitor)).await;
    let base = format!("http://{addr}");

    // The error layer records any WARN or ERROR event: plant one whose message is HTML.
    {
        let subscriber = tracing_subscriber::registry().with(monitor.error_layer());
        let _guard = tracing::subscriber::set_default(subscriber);
        tracing::warn!(target: "app::upstream", provider = "openai", "upstream slow: retrying");
        tracing::error!(target: "app::render", "{}", PLANTED);
    }
    let (code, errors) = get_json(&base, "/errors").await;
    assert_eq!(code, 200, "{errors}");
    let errors: Value = serde_json::from_str(&errors).unwrap();
    assert!(
        errors["data"]["errors"]
            .as_array()
            .is_some_and(|list| list.iter().any(|e| e["message"] == PLANTED)),
        "the planted error is stored verbatim: {errors}"
    );
    // Without the token the data is refused, the page itself is not.
    let refused = client()
        .get(format!("{base}{PREFIX}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let page = client()
        .get(format!("{base}{PREFIX}/dashboard"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);

    // Known traffic, then none.
    let mut sent = 0;
    sent += streams(
        &base,
        "/v1/chat/completions",
        json!({"model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true}}),
        30,
        &[],
        200,
    )
    .await;
    sent += streams(
        &base,
        "/v1/messages",
        json!({"model": "claude-sonnet-4-5", "stream": true, "max_tokens": 256}),
        6,
        &[],
        200,
    )
    .await;
    sent += streams(
        &base,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        json!({}),
        6,
        &[],
        200,
    )
    .await;
    records.wait_for(sent).await;

    let (before, metrics) = expected(&base).await;
    assert_eq!(
        metrics["data"]["streaming_5min"]["total_streaming_requests"], 42,
        "{metrics}"
    );
    let first = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-first.png");
    // This look gets the process figures as `null`, as a platform that cannot give them does.
    let seen = look(addr, &first, true).await;
    let (after, _) = expected(&base).await;
    eprintln!("page (first look): {seen:#?}\nmonitor: {after:#?}");
    assert_clean(&seen, false);
    assert_shows(&seen, &before, &after);
    assert_eq!(after.model_rows.len(), 3, "a row per provider and model");
    for (figure, shown) in &seen.system {
        assert_eq!(shown, "n/a", "{figure}: an unknown figure is not a number");
    }
    assert_eq!(seen.system.len(), 5, "{seen:#?}");
    assert_ne!(seen.status, "critical", "{seen:#?}");
    // A minute of streams judges no anomaly yet, and the page says why; the top users show
    // their first-token p95.
    assert_eq!(after_health_anomalies(&base).await, 0);
    assert_eq!(seen.anomalies.len(), 1, "{seen:#?}");
    assert!(
        seen.anomalies[0].starts_with("Nothing judged yet"),
        "{seen:#?}"
    );
    assert!(
        // Headers are upper-cased by the page's style, which `innerText` follows.
        seen.users_header
            .iter()
            .any(|h| h.eq_ignore_ascii_case("TTFT p95 ms")),
        "{seen:#?}"
    );

    // Auth failures: 40 of 82 requests, far past the auth_error_rate trigger's 5%. Sent at the
    // start of a 10 s slot of their own: a slot of streams and no first token.
    let (_, history) = get_json(&base, "/metrics/history").await;
    let history: Value = serde_json::from_str(&history).unwrap();
    let five = &history["data"]["five_minutes"];
    let last_start = five["points"]
        .as_array()
        .and_then(|p| p.last())
        .and_then(|p| p["start_unix"].as_f64())
        .expect("a last slot");
    let slot = five["slot_seconds"].as_f64().expect("slot seconds");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let next_slot = last_start + slot * ((now - last_start) / slot).floor().max(0.0) + slot;
    // The monitor's seconds count from the whole wall second it was built in: they lag the
    // wall clock by up to a second (and the label is the whole second).
    tokio::time::sleep(Duration::from_secs_f64(next_slot - now + 2.5)).await;
    sent += streams(
        &base,
        "/v1/chat/completions",
        json!({"model": "gpt-4o-mini", "stream": true}),
        40,
        &[("x-sim-fail", "auth")],
        401,
    )
    .await;
    records.wait_for(sent).await;
    let (before, _) = expected(&base).await;
    assert_eq!(before.status, "critical", "/health after the auth failures");

    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let screenshot = docs.join("dashboard.png");
    let seen = look(addr, &screenshot, false).await;
    let (after, _) = expected(&base).await;
    eprintln!("page (after failures): {seen:#?}\nmonitor: {after:#?}");
    assert_clean(&seen, true);
    assert_shows(&seen, &before, &after);
    assert_eq!(seen.status, "critical");
    // The failures' slot has streams and no first token: its tooltip says so, and the chart
    // draws no point for it (no 0 ms). On a busy machine the 40 may run into the next slot,
    // which then has only failures too: the slots without a first token count them all.
    let without_first_token: u64 = seen
        .ttft_tips
        .iter()
        .filter_map(|tip| tip.split_once("no first token\n"))
        .filter_map(|(_, streams)| streams.strip_suffix(" streams")?.parse::<u64>().ok())
        .sum();
    assert_eq!(without_first_token, 40, "{:#?}", seen.ttft_tips);
    // The auth failures are in openai's row of the provider and model table.
    assert!(
        seen.model_rows
            .iter()
            .any(|row| row[0] == "openai" && row[8] != "0"),
        "{seen:#?}"
    );
    if cfg!(target_os = "linux") {
        // The real figures, as numbers (they move between reads: their values are not compared).
        for (figure, shown) in &seen.system {
            assert!(shown.parse::<f64>().is_ok(), "{figure}: {shown}");
        }
    }
}

#[test]
fn to_fixed_with_other_digits_and_usd_like_the_page() {
    // As Node prints them.
    for (x, d, js) in [
        (0.0, 2, "0.00"),
        (33.335, 2, "33.34"),
        (1.005, 2, "1.00"),
        (0.00281075, 4, "0.0028"),
        (12.5, 0, "13"),
        (7.0, 3, "7.000"),
    ] {
        assert_eq!(js_to_fixed(x, d), js, "{x} to {d}");
    }
    assert_eq!(js_usd(0.0), "$0");
    assert_eq!(js_usd(0.00004), "<$0.0001");
    assert_eq!(js_usd(0.0028107), "$0.0028");
    assert_eq!(js_usd(12.345), "$12.35");
}

#[test]
fn to_fixed_rounds_like_javascript() {
    // As Node prints `x.toFixed(1)`: exact ties up, the rest by their exact binary value.
    for (x, js) in [
        (0.25, "0.3"),
        (2.25, "2.3"),
        (123.45, "123.5"),
        (0.05, "0.1"),
        (1.45, "1.4"),
        (2.45, "2.5"),
        (0.35, "0.3"),
        (199.96, "200.0"),
        (7.0, "7.0"),
        (1e-7, "0.0"),
        (150.05, "150.1"),
        (33.35, "33.4"),
    ] {
        assert_eq!(js_to_fixed_1(x), js, "{x}");
    }
}
