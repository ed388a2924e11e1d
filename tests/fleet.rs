//! The fleet view on a real Prometheus: three demo replicas (in process, each its own monitor, on
//! its own port), a `prometheus` server scraping them every second with the shipped rules from
//! `deploy/prometheus/`, and known load. Then Prometheus's HTTP API is asked what an operator
//! would ask, and its answers are compared with what the replicas and the client saw.
//!
//! Needs Debian's `prometheus` (installed by `.ci/install`). No assertion here is about time:
//! the test waits for scrapes that happened after the load ended, then compares counts and
//! quantiles with the client's own measurement of the same requests.

mod common;

#[allow(dead_code)]
#[path = "../examples/fleet.rs"]
mod fleet;

use fleet::demo;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tower_stream_monitor::{Monitor, Outcome};

const PREFIX: &str = "/api/v1/monitoring";

/// A `prometheus` server scraping `targets` every second, with the shipped rules evaluated every
/// second (their `for:` durations cut to 0 s so alerts fire within the test), killed on drop.
struct Prometheus {
    child: Child,
    url: String,
    dir: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn shipped_rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/rules.yml")
}

/// The shipped rules with every `for:` set to 0s (the test cannot wait minutes).
fn fast_rules() -> String {
    let rules = std::fs::read_to_string(shipped_rules()).expect("deploy/prometheus/rules.yml");
    rules
        .lines()
        .map(|line| match line.trim_start().strip_prefix("for:") {
            Some(_) => format!("{}for: 0s", &line[..line.len() - line.trim_start().len()]),
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Prometheus {
    async fn start(targets: &[SocketAddr]) -> Self {
        let which = Command::new("prometheus").arg("--version").output();
        assert!(
            which.is_ok_and(|o| o.status.success()),
            "the `prometheus` server is missing: run `bash .ci/install`"
        );
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("stream-monitor-fleet-{nanos}"));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        std::fs::write(dir.join("rules.yml"), fast_rules()).expect("write rules");
        let port = free_port();
        let child = fleet::spawn_prometheus(&dir, targets, &dir.join("rules.yml"), "1s", port)
            .expect("start prometheus");
        let prometheus = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let ready = format!("{}/-/ready", prometheus.url);
        for _ in 0..600 {
            if let Ok(r) = reqwest::get(&ready).await {
                if r.status().is_success() {
                    return prometheus;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("prometheus did not become ready");
    }

    /// An instant query's result vector.
    async fn query(&self, promql: &str) -> Vec<Value> {
        let encoded: String = form_urlencoded::byte_serialize(promql.as_bytes()).collect();
        let body: Value = reqwest::Client::new()
            .get(format!("{}/api/v1/query?query={encoded}", self.url))
            .send()
            .await
            .expect("query prometheus")
            .json()
            .await
            .expect("a JSON answer");
        assert_eq!(body["status"], "success", "{promql}: {body}");
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The single value of an instant query.
    async fn value(&self, promql: &str) -> f64 {
        let result = self.query(promql).await;
        assert_eq!(result.len(), 1, "{promql}: {result:?}");
        result[0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{promql}: {result:?}"))
    }

    /// Waits until every target has been scraped after `since` (a Unix time in seconds), so
    /// instant queries see everything that happened before it.
    async fn scraped_after(&self, since: f64, targets: usize) {
        for _ in 0..600 {
            let fresh = self
                .query("timestamp(up == 1)")
                .await
                .iter()
                .filter(|s| {
                    s["value"][1]
                        .as_str()
                        .and_then(|v| v.parse::<f64>().ok())
                        .is_some_and(|t| t > since)
                })
                .count();
            if fresh == targets {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("prometheus did not scrape every target after the load");
    }

    /// Waits until `alert` is firing (the rules run every second); fails after a minute.
    async fn wait_firing(&self, alert: &str) {
        for _ in 0..300 {
            if self.firing().await.iter().any(|a| a == alert) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("{alert} did not fire; firing: {:?}", self.firing().await);
    }

    /// The alerts in state `firing`, by name.
    async fn firing(&self) -> Vec<String> {
        self.alerts()
            .await
            .into_iter()
            .filter(|(_, state)| state == "firing")
            .map(|(name, _)| name)
            .collect()
    }

    /// Every active alert (pending or firing): its name and state.
    async fn alerts(&self) -> Vec<(String, String)> {
        let body: Value = reqwest::get(format!("{}/api/v1/alerts", self.url))
            .await
            .expect("alerts")
            .json()
            .await
            .expect("a JSON answer");
        body["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| {
                let name = a["labels"]["alertname"].as_str()?;
                Some((name.to_owned(), a["state"].as_str()?.to_owned()))
            })
            .collect()
    }

    /// When each rule group last ran (Unix seconds), from Prometheus's own metrics.
    async fn group_evaluations(&self) -> Vec<f64> {
        let text = reqwest::get(format!("{}/metrics", self.url))
            .await
            .expect("prometheus's metrics")
            .text()
            .await
            .expect("a text answer");
        text.lines()
            .filter(|l| l.starts_with("prometheus_rule_group_last_evaluation_timestamp_seconds{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse().ok())
            .collect()
    }

    /// Waits until every rule group has run twice since the call: by the second run, the
    /// recording rules have read everything scraped before the call, and the alerts have read
    /// what they recorded.
    async fn rules_evaluated(&self) {
        for _ in 0..2 {
            let since = now_secs();
            let mut done = false;
            for _ in 0..300 {
                let runs = self.group_evaluations().await;
                if !runs.is_empty() && runs.iter().all(|t| *t > since) {
                    done = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            assert!(
                done,
                "the rule groups did not run: {:?}",
                self.group_evaluations().await
            );
        }
    }
}

/// A demo replica: its monitor and address. Its budget of label sets is 4, of which 3 for labels
/// the app sets: the test's traffic uses those (a stream, a refused request, a stream reporting
/// usage), so records ingested with other models overflow and the dashboard's overflow panel
/// can be shown data.
async fn replica(version: Option<&str>) -> (Monitor, SocketAddr) {
    let mut builder = Monitor::builder().prefix(PREFIX).max_label_sets(4);
    if let Some(v) = version {
        builder = builder.service_version(v);
    }
    let monitor = builder.build().expect("valid settings");
    let addr = common::serve(demo::app(&monitor)).await;
    (monitor, addr)
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Content tokens of every simulated stream.
const TOKENS: u64 = 3;
/// The model of the streams that report their usage; the others name `gpt-4o-mini` and report
/// none.
const USAGE_MODEL: &str = "o4-mini";
/// Prompt tokens read from the cache in each usage-reporting stream, beside the simulator's 12
/// uncached ones.
const CACHED_TOKENS: u64 = 188;
/// Reasoning tokens in each usage-reporting stream, beside its `TOKENS` content tokens.
const REASONING_TOKENS: u64 = 7;

/// What the client saw of one stream, in seconds: the time to its first content token, and the
/// longest wait between two content tokens after it.
#[derive(Debug, Clone, Copy)]
struct Timing {
    ttft: f64,
    max_gap: f64,
}

/// One streaming chat completion on `gpt-4o-mini`, without usage; returns what the client saw
/// of it, or `None` for a failure.
async fn stream(
    client: &reqwest::Client,
    addr: SocketAddr,
    ttft_ms: u64,
    fail: Option<&str>,
) -> Option<Timing> {
    let mut request = client
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&json!({"model": "gpt-4o-mini", "stream": true}));
    if let Some(fail) = fail {
        request = request.header("x-sim-fail", fail);
    }
    timed(request, ttft_ms).await
}

/// One streaming chat completion on `USAGE_MODEL` that reports its usage, with
/// `CACHED_TOKENS` cached prompt tokens and `REASONING_TOKENS` reasoning tokens.
async fn stream_with_usage(
    client: &reqwest::Client,
    addr: SocketAddr,
    ttft_ms: u64,
) -> Option<Timing> {
    let request = client
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("x-sim-cached-tokens", CACHED_TOKENS.to_string())
        .header("x-sim-reasoning-tokens", REASONING_TOKENS.to_string())
        .json(&json!({"model": USAGE_MODEL, "stream": true,
                      "stream_options": {"include_usage": true}}));
    timed(request, ttft_ms).await
}

/// Sends a simulated stream of `TOKENS` tokens, the first after `ttft_ms`; returns what the
/// client saw of it, or `None` for a failure.
async fn timed(request: reqwest::RequestBuilder, ttft_ms: u64) -> Option<Timing> {
    let request = request
        .header("x-sim-ttft-ms", ttft_ms.to_string())
        .header("x-sim-tokens", TOKENS.to_string())
        .header("x-sim-token-interval-ms", "1");
    let started = Instant::now();
    let response = request.send().await.expect("the demo answers");
    let ok = response.status().is_success();
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let (mut tokens, mut first_token, mut last_token, mut max_gap) = (0, None, None, 0.0f64);
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else { break };
        text.push_str(&String::from_utf8_lossy(&chunk));
        // Content deltas; the role chunk's empty content is none.
        let seen =
            text.matches("\"content\":\"").count() - text.matches("\"content\":\"\"").count();
        if seen > tokens {
            tokens = seen;
            let now = started.elapsed().as_secs_f64();
            first_token.get_or_insert(now);
            if let Some(last) = last_token {
                max_gap = max_gap.max(now - last);
            }
            last_token = Some(now);
        }
    }
    first_token
        .filter(|_| ok)
        .map(|ttft| Timing { ttft, max_gap })
}

/// The exact `q` quantile of `values` (nearest rank).
fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// The bucket `(lower, upper]` of the first-token histogram that holds `seconds`.
fn bucket_of(seconds: f64) -> (f64, f64) {
    bucket_in(&tower_stream_monitor::names::TTFT_BUCKETS, seconds)
}

/// The bucket `(lower, upper]` of `bounds` that holds `value`.
fn bucket_in(bounds: &[f64], value: f64) -> (f64, f64) {
    let upper = bounds.iter().position(|b| value <= *b);
    match upper {
        Some(0) => (0.0, bounds[0]),
        Some(i) => (bounds[i - 1], bounds[i]),
        None => (bounds[bounds.len() - 1], f64::INFINITY),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_counts_quantiles_and_rollback_alert_on_a_real_prometheus() {
    let replicas = [
        replica(None).await,
        replica(None).await,
        replica(None).await,
    ];
    let addrs: Vec<SocketAddr> = replicas.iter().map(|(_, a)| *a).collect();
    let prometheus = Prometheus::start(&addrs).await;
    // A first stream on each replica, scraped, so every series exists before the load and
    // rates over the load see all of it.
    let client = reqwest::Client::new();
    let mut client_ttft = Vec::new();
    for addr in &addrs {
        client_ttft.extend(stream(&client, *addr, 150, None).await.map(|t| t.ttft));
    }
    stream(&client, addrs[2], 150, Some("auth")).await;
    prometheus
        .scraped_after(now_secs() + 1.0, addrs.len())
        .await;

    // First-token delays spread over several buckets, each far from a bucket boundary; the
    // third replica answers one request in three with an upstream 401.
    let delays_ms = [150u64, 350, 600, 850, 1400, 3500];
    let mut calls = Vec::new();
    for (i, delay) in delays_ms.iter().enumerate() {
        let copies = if *delay == 3500 { 10 } else { 20 };
        for k in 0..copies {
            let replica = (i * 7 + k) % 3;
            let fail = (replica == 2 && k % 3 == 0).then_some("auth");
            let (client, addr, delay) = (client.clone(), addrs[replica], *delay);
            calls.push(tokio::spawn(async move {
                stream(&client, addr, delay, fail).await
            }));
        }
    }
    for call in calls {
        if let Some(t) = call.await.expect("the request task") {
            client_ttft.push(t.ttft);
        }
    }
    let load_end = now_secs();
    prometheus.scraped_after(load_end + 1.0, addrs.len()).await;

    // The fleet counter is the sum of the replicas' own counts of the same population.
    let own: u64 = replicas
        .iter()
        .map(|(m, _)| Outcome::ALL.iter().map(|o| m.recorded(*o)).sum::<u64>())
        .sum();
    assert_eq!(own, 114);
    let fleet = prometheus.value("sum(stream_monitor_requests_total)").await;
    assert_eq!(fleet as u64, own);
    let own_auth: u64 = replicas
        .iter()
        .map(|(m, _)| m.recorded(Outcome::AuthError))
        .sum();
    let fleet_auth = prometheus
        .value(r#"sum(stream_monitor_requests_total{outcome="auth_error"})"#)
        .await;
    assert!(own_auth > 0);
    assert_eq!(fleet_auth as u64, own_auth);

    // Fleet first-token p95 from the histograms lands in the bucket of the clients' exact p95.
    let exact = quantile(&mut client_ttft, 0.95);
    let fleet_p95 = prometheus
        .value("histogram_quantile(0.95, sum by (le) (gen_ai_server_time_to_first_token_seconds_bucket))")
        .await;
    let (lower, upper) = bucket_of(exact);
    assert!(
        fleet_p95 > lower && fleet_p95 <= upper,
        "fleet p95 {fleet_p95} s outside ({lower}, {upper}], the bucket of the clients' p95 {exact} s"
    );

    // Auth errors are about a third of one replica's requests: above the trigger's 5% of the
    // fleet, so the fleet-wide rollback alert fires.
    prometheus
        .wait_firing("StreamMonitorAuthErrorRateRollback")
        .await;
}

/// Every query of the shipped Grafana dashboard, by panel title, with the template variables
/// as "All" (`.*`) and the rate interval at 1 m.
fn dashboard_queries() -> Vec<(String, String)> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/dashboards/stream-monitor.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("the dashboard")).expect("JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or("?").to_owned();
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("an expr");
            let expr = ["$provider", "$model", "$route", "$version"]
                .iter()
                .fold(expr.to_owned(), |e, v| e.replace(v, ".*"))
                .replace("$__rate_interval", "1m");
            assert!(!expr.contains('$'), "{title}: a variable left in {expr}");
            queries.push((title.clone(), expr));
        }
    }
    queries
}

/// The dashboard panel of cached input and reasoning output shares.
const SHARE_PANEL: &str = "Cached input and reasoning output share";

/// Waits (up to 10 s) until `monitor` has recorded `n` requests.
async fn recorded(monitor: &Monitor, n: u64) {
    for _ in 0..200 {
        if Outcome::ALL
            .iter()
            .map(|o| monitor.recorded(*o))
            .sum::<u64>()
            >= n
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{n} requests not recorded");
}

/// The values of `label` over a query's result.
fn label_values(result: &[Value], label: &str) -> std::collections::BTreeSet<String> {
    result
        .iter()
        .filter_map(|s| s["metric"][label].as_str().map(str::to_owned))
        .collect()
}

/// What the dashboard's hygiene panel shows: a request no route matched, label sets past the
/// budget, and streams with malformed events (ingested as a job would).
async fn hygiene_events(
    client: &reqwest::Client,
    replicas: &[(Monitor, SocketAddr)],
    models: &[&str],
) {
    let unrouted = client
        .get(format!("http://{}/no/such/route", replicas[0].1))
        .send()
        .await
        .expect("the demo answers");
    assert_eq!(unrouted.status(), 404);
    for model in models {
        let mut record =
            tower_stream_monitor::StreamRecord::new("openai", *model, "/jobs", Outcome::Ok);
        record.malformed_events = 1;
        replicas[1].0.ingest(record);
    }
}

/// A sample's value.
fn number(series: &Value) -> f64 {
    series["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number: {series}"))
}

/// A result's values by the value of `label` (each must be there, once).
fn by_label(result: &[Value], label: &str) -> std::collections::BTreeMap<String, f64> {
    let mut values = std::collections::BTreeMap::new();
    for series in result {
        let key = series["metric"][label]
            .as_str()
            .unwrap_or_else(|| panic!("no {label}: {series}"));
        assert!(
            values.insert(key.to_owned(), number(series)).is_none(),
            "two series with {label}={key}: {result:?}"
        );
    }
    values
}

/// The values of a query's series, one per value of `label`, after checking those values are
/// exactly `expected` (in order).
fn values_by(result: &[Value], label: &str, expected: &[&str], context: &str) -> Vec<f64> {
    let values = by_label(result, label);
    assert_eq!(
        values.keys().map(String::as_str).collect::<Vec<_>>(),
        expected,
        "{context}"
    );
    values.into_values().collect()
}

/// A result's values by `instance` and the value of `label`.
fn by_instance(result: &[Value], label: &str) -> std::collections::BTreeMap<(String, String), f64> {
    result
        .iter()
        .map(|s| {
            let key = |l: &str| {
                s["metric"][l]
                    .as_str()
                    .unwrap_or_else(|| panic!("no {l}: {s}"))
                    .to_owned()
            };
            ((key("instance"), key(label)), number(s))
        })
        .collect()
}

/// The dashboard's panels, each shown traffic it knows and asked to show that: every panel has
/// an expectation tied to what was sent, and a panel without one fails the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_shows_the_traffic_it_is_meant_to_show() {
    let replicas = [
        replica(None).await,
        replica(None).await,
        replica(None).await,
    ];
    let addrs: Vec<SocketAddr> = replicas.iter().map(|(_, a)| *a).collect();
    let prometheus = Prometheus::start(&addrs).await;

    // A first stream, refusal and stream reporting usage on each replica, scraped, so every
    // series exists before the load and rates over the load are increases Prometheus saw. They
    // are the replica's label sets: only then come the ones past its budget.
    let client = reqwest::Client::new();
    let mut sent_ms = vec![10u64];
    let mut timings = Vec::new();
    for (monitor, addr) in &replicas {
        timings.extend(stream(&client, *addr, 10, None).await);
        stream(&client, *addr, 10, Some("auth")).await;
        timings.extend(stream_with_usage(&client, *addr, 10).await);
        // Cut halfway and ended cleanly: `ok`, finish reason `unfinished`.
        timings.extend(stream(&client, *addr, 10, Some("cut")).await);
        recorded(monitor, 4).await;
    }
    hygiene_events(&client, &replicas, &["m-a", "m-b", "m-c", "m-d", "m-e"]).await;
    prometheus
        .scraped_after(now_secs() + 1.0, addrs.len())
        .await;

    // Streams on every replica, some refused upstream (auth), some reporting cached and
    // reasoning tokens; first tokens from 20 to 240 ms.
    let mut calls = Vec::new();
    for k in 0..45u64 {
        let fail = match k % 9 {
            0 => Some("auth"),
            4 => Some("cut"),
            _ => None,
        };
        let usage = fail.is_none() && k % 5 == 1;
        let (client, addr) = (client.clone(), addrs[(k % 3) as usize]);
        sent_ms.push(20 + k * 5);
        calls.push(tokio::spawn(async move {
            if usage {
                stream_with_usage(&client, addr, 20 + k * 5).await
            } else {
                stream(&client, addr, 20 + k * 5, fail).await
            }
        }));
    }
    for call in calls {
        timings.extend(call.await.expect("the request task"));
    }
    hygiene_events(&client, &replicas, &["m-f", "m-g"]).await;
    let load_end = now_secs();
    prometheus.scraped_after(load_end + 1.0, addrs.len()).await;

    // What the traffic bounds. A first token comes no sooner than its simulated delay and no
    // later than the client saw it, so every first-token quantile lies between the bucket of
    // the shortest delay sent and the bucket of the longest wait a client saw. Tokens follow
    // each other 1 ms apart, so time per token lies at most in the bucket of the longest gap a
    // client saw (the first bucket, 10 ms, on an idle machine).
    let shortest = *sent_ms.iter().min().expect("delays") as f64 / 1000.0;
    let longest = timings.iter().map(|t| t.ttft).fold(0.0, f64::max);
    let ttft_span = (bucket_of(shortest).0, bucket_of(longest).1);
    let in_ttft_span = |title: &str, v: f64| {
        assert!(
            v > ttft_span.0 && v <= ttft_span.1,
            "{title}: {v} s outside {ttft_span:?}, the span of the delays sent ({shortest} s) \
             and the clients' longest first token ({longest} s)"
        );
    };
    let widest_gap = timings.iter().map(|t| t.max_gap).fold(0.0, f64::max);
    let tpot_bound = bucket_in(&tower_stream_monitor::names::TPOT_BUCKETS, widest_gap).1;
    // Each replica's own judgement, by the instance Prometheus scrapes it as. Nothing was
    // recorded since the last scrape, so its gauges say the same.
    let health: std::collections::BTreeMap<String, tower_stream_monitor::health::HealthReport> =
        replicas
            .iter()
            .map(|(m, a)| (a.to_string(), m.health()))
            .collect();
    let instances: std::collections::BTreeSet<String> = health.keys().cloned().collect();

    let queries = dashboard_queries();
    assert!(queries.len() >= 10, "{} queries", queries.len());
    assert_eq!(
        queries
            .iter()
            .filter(|(title, _)| title == SHARE_PANEL)
            .count(),
        2,
        "the cache-read and reasoning queries of {SHARE_PANEL:?}"
    );
    let mut ttft_quantiles = Vec::new();
    for (title, expr) in &queries {
        let result = prometheus.query(expr).await;
        assert!(!result.is_empty(), "panel {title:?} shows nothing: {expr}");
        for series in &result {
            assert!(number(series).is_finite(), "{title}: {expr}: {series}");
        }
        let context = format!("{title}: {expr}: {result:?}");
        match title.as_str() {
            "Time to first token (p50 / p95 / p99)" => {
                assert_eq!(result.len(), 1, "{context}");
                let v = number(&result[0]);
                in_ttft_span(title, v);
                ttft_quantiles.push(v);
            }
            "Time to first token p95 by provider" => {
                values_by(&result, "gen_ai_provider_name", &["openai"], &context)
                    .into_iter()
                    .for_each(|v| in_ttft_span(title, v));
            }
            "Time per output token (p50 / p95)" => {
                assert_eq!(result.len(), 1, "{context}");
                let v = number(&result[0]);
                assert!(
                    v > 0.0 && v <= tpot_bound,
                    "{context}: {v} s past {tpot_bound} s, the bucket of the widest gap a client \
                     saw ({widest_gap} s)"
                );
            }
            "Output tokens per second, fleet total (approximation)" => {
                let values = values_by(&result, "gen_ai_provider_name", &["openai"], &context);
                assert!(values.iter().all(|v| *v > 0.0), "{context}");
            }
            "Request rate by outcome" => {
                let values = values_by(&result, "outcome", &["auth_error", "ok"], &context);
                assert!(values.iter().all(|v| *v > 0.0), "{context}");
            }
            "Streaming error ratio" => {
                // Auth refusals were one request in nine: a share above 0, below 1.
                let values: Vec<f64> = if expr.contains("sum by (gen_ai_provider_name)") {
                    values_by(&result, "gen_ai_provider_name", &["openai"], &context)
                } else {
                    assert_eq!(result.len(), 1, "{context}");
                    vec![number(&result[0])]
                };
                assert!(values.iter().all(|v| *v > 0.0 && *v < 1.0), "{context}");
            }
            "Token usage: input vs output tokens per second" => {
                let values =
                    values_by(&result, "gen_ai_token_type", &["input", "output"], &context);
                assert!(values.iter().all(|v| *v > 0.0), "{context}");
            }
            "In flight by route" => {
                // The routes requests were sent to (the request to no route as `unmatched`),
                // none of them in flight any more.
                let values = by_label(&result, "http_route");
                assert_eq!(
                    values.into_iter().collect::<Vec<_>>(),
                    [
                        ("/v1/chat/completions".to_owned(), 0.0),
                        ("unmatched".to_owned(), 0.0)
                    ],
                    "{context}"
                );
            }
            "Health status per replica" => {
                let shown = by_instance(&result, "status");
                let judged: std::collections::BTreeMap<(String, String), f64> = health
                    .iter()
                    .map(|(i, h)| ((i.clone(), h.status.as_str().to_owned()), 1.0))
                    .collect();
                assert_eq!(shown, judged, "{context}");
            }
            "Rollback triggers per replica" | "Rollback trigger rates per replica (%)" => {
                let shown = by_instance(&result, "trigger");
                let fired = title.starts_with("Rollback triggers");
                let judged: std::collections::BTreeMap<(String, String), f64> = health
                    .iter()
                    .flat_map(|(i, h)| {
                        h.triggers.iter().map(move |t| {
                            let v = if fired {
                                f64::from(u8::from(t.fired))
                            } else {
                                t.value
                            };
                            ((i.clone(), t.name.clone()), v)
                        })
                    })
                    .collect();
                assert_eq!(shown, judged, "{context}");
                assert_eq!(
                    label_values(&result, "trigger"),
                    ["auth_error_rate".to_owned(), "timeout_rate".to_owned()].into()
                );
            }
            "Health check: first token p95 (ms)"
            | "Health check: tokens per second"
            | "Health check: streaming error rate (%)" => {
                let check = expr
                    .split("check=\"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .expect("the panel's check");
                let shown = by_instance(&result, "check");
                let judged: std::collections::BTreeMap<(String, String), f64> = health
                    .iter()
                    .map(|(i, h)| {
                        let c = h
                            .checks
                            .iter()
                            .find(|c| c.name == check)
                            .expect("the check");
                        ((i.clone(), check.to_owned()), c.value)
                    })
                    .collect();
                assert_eq!(shown, judged, "{context}");
            }
            "Monitor hygiene: unrouted, label overflow, skipped events" => {
                if expr.contains("unrouted") {
                    // One request to no route on the first replica during the load.
                    assert_eq!(result.len(), 1, "{context}");
                    assert!(number(&result[0]) > 0.0, "{context}");
                } else if expr.contains("label_overflow") {
                    assert!(
                        by_label(&result, "label")
                            .get("series")
                            .is_some_and(|v| *v > 0.0),
                        "{context}"
                    );
                } else {
                    let values = by_label(&result, "reason");
                    assert_eq!(
                        values.keys().map(String::as_str).collect::<Vec<_>>(),
                        ["malformed"],
                        "{context}"
                    );
                    assert!(values.values().all(|v| *v > 0.0), "{context}");
                }
            }
            "By provider / model / route (now)" => {
                let rows: std::collections::BTreeMap<(String, String), f64> = result
                    .iter()
                    .filter(|s| s["metric"]["http_route"] == "/v1/chat/completions")
                    .map(|s| {
                        let label = |l: &str| s["metric"][l].as_str().unwrap_or("").to_owned();
                        (
                            (label("gen_ai_provider_name"), label("gen_ai_request_model")),
                            number(s),
                        )
                    })
                    .collect();
                let model = |m: &str| rows.get(&("openai".to_owned(), m.to_owned())).copied();
                // The simulator refuses before it reads the model, so the refusals are a row of
                // their own, `unknown`.
                let (plain, usage, refused) =
                    (model("gpt-4o-mini"), model(USAGE_MODEL), model("unknown"));
                if expr.contains("histogram_quantile") {
                    in_ttft_span(title, plain.expect(&context));
                    in_ttft_span(title, usage.expect(&context));
                } else if expr.contains("auth_error") {
                    assert_eq!(
                        (plain, usage, refused),
                        (Some(0.0), Some(0.0), Some(1.0)),
                        "{context}"
                    );
                } else {
                    for rate in [plain, usage, refused] {
                        assert!(rate.is_some_and(|v| v > 0.0), "{context}");
                    }
                }
            }
            SHARE_PANEL => {
                // Every stream of the usage model reports the same parts, so its shares are
                // exact whatever the rate window; the other model reports no usage, so it has
                // no line.
                let expected = if expr.contains("cache_read") {
                    CACHED_TOKENS as f64 / (12 + CACHED_TOKENS) as f64
                } else {
                    REASONING_TOKENS as f64 / (TOKENS + REASONING_TOKENS) as f64
                };
                assert_eq!(result.len(), 1, "{context}");
                let series = &result[0];
                assert_eq!(
                    (
                        &series["metric"]["gen_ai_provider_name"],
                        &series["metric"]["gen_ai_request_model"]
                    ),
                    (&json!("openai"), &json!(USAGE_MODEL)),
                    "{context}"
                );
                let share = number(series);
                assert!(
                    (share - expected).abs() < 1e-9,
                    "{context}: share {share}, the traffic sent {expected}"
                );
            }
            "Finish reasons by provider" => {
                // The simulator's streams stop; those cut halfway are unfinished.
                let reasons: std::collections::BTreeMap<String, f64> = result
                    .iter()
                    .map(|series| {
                        let m = &series["metric"];
                        assert_eq!(m["gen_ai_provider_name"], "openai", "{context}");
                        (
                            m["finish_reason"].as_str().unwrap_or("").to_owned(),
                            number(series),
                        )
                    })
                    .collect();
                assert_eq!(
                    reasons.keys().map(String::as_str).collect::<Vec<_>>(),
                    ["stop", "unfinished"],
                    "{context}"
                );
                assert!(reasons.values().all(|v| *v > 0.0), "{context}");
            }
            _ => panic!("panel {title:?} has no expectation here: add one for {expr}"),
        }
        if title.contains("per replica") || title.starts_with("Health check") {
            assert_eq!(label_values(&result, "instance"), instances, "{context}");
        }
    }
    assert_eq!(ttft_quantiles.len(), 3);
    assert!(
        ttft_quantiles.windows(2).all(|w| w[0] <= w[1]),
        "p50, p95, p99 in order: {ttft_quantiles:?}"
    );
}

/// Sends one stream per `(replica, failure)` of `plan`, 32 at a time, and waits for them all.
async fn send_all(client: &reqwest::Client, plan: Vec<(SocketAddr, Option<&'static str>)>) {
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
    let mut calls = Vec::new();
    for (addr, fail) in plan {
        let (client, semaphore) = (client.clone(), semaphore.clone());
        calls.push(tokio::spawn(async move {
            let _permit = semaphore.acquire().await.expect("open");
            stream(&client, addr, 1, fail).await
        }));
    }
    for call in calls {
        call.await.expect("the request task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_fires_the_canary_alert_and_not_the_fleet_one() {
    let replicas = [
        replica(Some("v1")).await,
        replica(Some("v1")).await,
        replica(Some("v2")).await,
    ];
    let addrs: Vec<SocketAddr> = replicas.iter().map(|(_, a)| *a).collect();
    let prometheus = Prometheus::start(&addrs).await;
    let client = reqwest::Client::new();
    // Every series exists and is scraped before the load, so rates see all of it.
    for addr in &addrs {
        stream(&client, *addr, 1, None).await;
        stream(&client, *addr, 1, Some("auth")).await;
    }
    prometheus
        .scraped_after(now_secs() + 1.0, addrs.len())
        .await;

    // 380 clean streams on each stable replica; then 40 on the canary, 12 of them refused
    // upstream: 30% of the canary's requests, 1.5% of the fleet's (under the fleet trigger's
    // 5%). The canary's requests come after the stable ones, so that no scrape during the load
    // sees the fleet's share above its final 1.5% (Prometheus scrapes every second, whatever the
    // pace).
    let mut stable = Vec::new();
    for _ in 0..380 {
        stable.push((addrs[0], None));
        stable.push((addrs[1], None));
    }
    send_all(&client, stable).await;

    // The clean traffic, scraped and judged by the rules: the auth-error rollback alert reads a
    // 0% share over enough requests and stays silent.
    prometheus
        .scraped_after(now_secs() + 1.0, addrs.len())
        .await;
    prometheus.rules_evaluated().await;
    let judged = prometheus
        .value("job:stream_monitor_requests_judged:rate5m * 300")
        .await;
    assert!(judged >= 20.0, "{judged} requests judged: too few to fire");
    assert_eq!(
        prometheus
            .value("job:stream_monitor_requests_auth_error:ratio_rate5m")
            .await,
        0.0
    );
    let alerts = prometheus.alerts().await;
    assert!(
        !alerts
            .iter()
            .any(|(name, _)| name == "StreamMonitorAuthErrorRateRollback"),
        "the auth-error rollback is active on clean traffic: {alerts:?}"
    );
    let series = prometheus
        .query(r#"ALERTS{alertname="StreamMonitorAuthErrorRateRollback"}"#)
        .await;
    assert!(series.is_empty(), "{series:?}");

    let canary = (0..40)
        .map(|k| (addrs[2], (k % 10 < 3).then_some("auth")))
        .collect();
    send_all(&client, canary).await;
    let auth: Vec<u64> = replicas
        .iter()
        .map(|(m, _)| m.recorded(Outcome::AuthError))
        .collect();
    assert_eq!(auth, [1, 1, 13]);
    prometheus
        .scraped_after(now_secs() + 1.0, addrs.len())
        .await;

    prometheus
        .wait_firing("StreamMonitorCanaryAuthErrors")
        .await;
    let canary = prometheus
        .query(r#"ALERTS{alertname="StreamMonitorCanaryAuthErrors", alertstate="firing"}"#)
        .await;
    assert_eq!(
        label_values(&canary, "service_version"),
        ["v2".to_owned()].into()
    );
    // The rules that fired the canary alert ran on the same data: the fleet-wide one is quiet.
    let firing = prometheus.firing().await;
    assert!(
        !firing
            .iter()
            .any(|a| a == "StreamMonitorAuthErrorRateRollback"),
        "fleet-wide rollback fired for a canary: {firing:?}"
    );
}

/// From a bucket to the request: Prometheus scrapes OpenMetrics with exemplars, and
/// `/api/v1/query_exemplars` gives back the trace id a request was sent with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exemplars_lead_from_a_bucket_to_the_request() {
    let (_monitor, addr) = replica(None).await;
    let prometheus = Prometheus::start(&[addr]).await;
    let client = reqwest::Client::new();
    let trace_ids = [
        "0af7651916cd43dd8448eb211c80319c",
        "4bf92f3577b34da6a3ce929d0e0e4736",
    ];
    let started = now_secs();
    for (i, trace_id) in trace_ids.iter().enumerate() {
        let request = client
            .post(format!("http://{addr}/v1/chat/completions"))
            .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
            .json(&json!({"model": "gpt-4o-mini", "stream": true}));
        // First tokens 0.3 s and 1.5 s apart: each request is the exemplar of its own bucket.
        assert!(timed(request, [300, 1500][i]).await.is_some());
    }
    prometheus.scraped_after(now_secs() + 1.0, 1).await;

    let query: String =
        form_urlencoded::byte_serialize(b"gen_ai_server_time_to_first_token_seconds_bucket")
            .collect();
    let body: Value = client
        .get(format!(
            "{}/api/v1/query_exemplars?query={query}&start={}&end={}",
            prometheus.url,
            started - 60.0,
            now_secs() + 60.0
        ))
        .send()
        .await
        .expect("query exemplars")
        .json()
        .await
        .expect("a JSON answer");
    assert_eq!(body["status"], "success", "{body}");
    let mut found = std::collections::BTreeMap::new();
    for series in body["data"].as_array().into_iter().flatten() {
        let le: f64 = series["seriesLabels"]["le"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::INFINITY);
        for exemplar in series["exemplars"].as_array().into_iter().flatten() {
            if let Some(id) = exemplar["labels"]["trace_id"].as_str() {
                let value: f64 = exemplar["value"]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .expect("an exemplar value");
                assert!(value <= le, "{id}: {value} in the bucket le={le}");
                found.insert(id.to_owned(), value);
            }
        }
    }
    for (trace_id, ttft) in trace_ids.iter().zip([0.3, 1.5]) {
        let value = found
            .get(*trace_id)
            .unwrap_or_else(|| panic!("{trace_id} among the exemplars: {body}"));
        // The exemplar's value is that request's first token as the monitor measured it: at
        // least the simulated delay.
        assert!(*value >= ttft, "{trace_id}: {value} < {ttft}");
    }
}
