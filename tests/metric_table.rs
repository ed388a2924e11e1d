//! The metric table (`names::METRICS`) against what documents and exposes it: the README's
//! metric table, a live Prometheus scrape, and the `metrics` facade emission.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use http_body_util::BodyExt;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tower::ServiceExt;
use tower_stream_monitor::names::{self, METRICS, Metric};
use tower_stream_monitor::window::ManualClock;
use tower_stream_monitor::{Monitor, Outcome, StreamLabels, StreamRecord};

/// (name, kind, labels) as the README's table under "## Use" lists them, in order.
fn readme_rows() -> Vec<(String, String, Vec<String>)> {
    let readme = include_str!("../README.md");
    let rows: Vec<&str> = readme
        .lines()
        .skip_while(|l| !l.starts_with("| metric | kind | labels |"))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // the header and its `|---|` line
        .collect();
    assert!(
        !rows.is_empty(),
        "README.md has no `| metric | kind | labels |` table"
    );
    rows.iter()
        .map(|row| {
            let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
            assert_eq!(cells.len(), 3, "README metric row {row:?}");
            (
                cells[0].trim_matches('`').to_owned(),
                cells[1].to_owned(),
                label_names(cells[2]),
            )
        })
        .collect()
}

/// The backquoted names of a labels cell, leaving out the values in parentheses; `none` is none.
fn label_names(cell: &str) -> Vec<String> {
    let mut outside = String::new();
    let mut depth = 0;
    for c in cell.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            c if depth == 0 => outside.push(c),
            _ => {}
        }
    }
    outside
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn row(m: &Metric) -> (String, String, Vec<String>) {
    (
        m.name().to_owned(),
        m.kind().as_str().to_owned(),
        m.labels().iter().map(|l| l.to_string()).collect(),
    )
}

fn table(metric: &str) -> &'static Metric {
    METRICS
        .iter()
        .find(|m| m.name() == metric)
        .unwrap_or_else(|| panic!("{metric} is not in names::METRICS"))
}

/// The label names of a sample's `{k="v",...}`, but `le`.
fn label_keys(mut labels: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    while let Some((key, value)) = labels.split_once("=\"") {
        let key = key.trim_start_matches(',');
        if key != "le" {
            keys.insert(key.to_owned());
        }
        let mut escaped = false;
        let end = value
            .char_indices()
            .find(|&(_, c)| {
                let close = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                close
            })
            .map_or(value.len(), |(i, _)| i + 1);
        labels = &value[end..];
    }
    keys
}

fn sorted(labels: &[&str]) -> BTreeSet<String> {
    labels.iter().map(|l| l.to_string()).collect()
}

/// Labels a series carries only when they apply: the operation (LLM calls), the response model
/// (reported by the stream) and `error_type` (failures).
const CONDITIONAL: [&str; 3] = [names::OPERATION, names::RESPONSE_MODEL, names::ERROR_TYPE];

/// Each series carries the table's labels, the conditional ones only where they apply, and
/// every one of them shows on some series.
fn check_label_sets(metric: &Metric, label_sets: &BTreeSet<BTreeSet<String>>) {
    let table = sorted(metric.labels());
    let required: BTreeSet<String> = table
        .iter()
        .filter(|l| !CONDITIONAL.contains(&l.as_str()))
        .cloned()
        .collect();
    for labels in label_sets {
        assert!(
            labels.is_subset(&table) && labels.is_superset(&required),
            "{}: series labels {labels:?} against the table {table:?}",
            metric.name()
        );
    }
    let seen: BTreeSet<String> = label_sets.iter().flatten().cloned().collect();
    assert_eq!(seen, table, "{}: every label shows", metric.name());
}

#[test]
fn readme_table_lists_the_metrics_of_the_table() {
    let expected: Vec<_> = METRICS.iter().map(row).collect();
    assert_eq!(
        readme_rows(),
        expected,
        "README.md's metric table must list names::METRICS in order, with kind and labels"
    );
}

#[test]
fn table_is_consistent() {
    let mut seen = BTreeSet::new();
    for m in METRICS {
        assert!(seen.insert(m.name()), "{} twice", m.name());
        assert_eq!(
            m.buckets().is_empty(),
            m.kind() != names::MetricKind::Histogram,
            "{}: histograms, and only they, have buckets",
            m.name()
        );
        assert!(
            m.buckets().windows(2).all(|w| w[0] < w[1]),
            "{}: buckets must rise",
            m.name()
        );
        assert!(!m.help().is_empty(), "{} has no help", m.name());
    }
    assert_eq!(
        table(names::TIME_TO_FIRST_TOKEN).buckets(),
        names::TTFT_BUCKETS
    );
    assert_eq!(
        table(names::TIME_TO_FIRST_BYTE).buckets(),
        names::TTFT_BUCKETS
    );
    assert_eq!(
        table(names::REQUEST_DURATION).buckets(),
        names::DURATION_BUCKETS
    );
    assert_eq!(
        table(names::TIME_PER_OUTPUT_TOKEN).buckets(),
        names::TPOT_BUCKETS
    );
    assert_eq!(table(names::TOKEN_USAGE).buckets(), names::TOKEN_BUCKETS);
    assert_eq!(table(names::RESPONSE_BYTES).buckets(), names::BYTES_BUCKETS);
    assert_eq!(table(names::REQUEST_DURATION).unit(), Some("seconds"));
    assert_eq!(table(names::RESPONSE_BYTES).unit(), Some("bytes"));
}

/// A record that makes every per-request observation.
fn full_record(provider: &str) -> StreamRecord {
    let mut r = StreamRecord::new(provider, "gpt-4o-mini", "batch-job", Outcome::Ok);
    r.streaming = true;
    r.time_to_first_byte = Some(Duration::from_millis(90));
    r.time_to_first_token = Some(Duration::from_millis(120));
    r.time_per_output_token = Some(Duration::from_millis(15));
    r.duration = Duration::from_millis(900);
    r.output_tokens = 40;
    r.input_tokens = Some(12);
    r.bytes = 4_096;
    r.oversized_events = 1;
    r.malformed_events = 2;
    r.response_model = Some("gpt-4o-mini-2024-07-18".into());
    r.cache_read_input_tokens = Some(8);
    r.cache_creation_input_tokens = Some(2);
    r.reasoning_output_tokens = Some(30);
    r.finish_reason = Some(tower_stream_monitor::parse::FinishReason::Stop);
    r
}

/// Records covering every metric: a full one, a second label set past `max_label_sets(1)`
/// (a series overflow) and one that matched no route; before them, twelve minutes of the full
/// one, so the anomaly scores have a baseline (the monitor runs on `clock`).
fn ingest_all(monitor: &Monitor, clock: &ManualClock) {
    for _ in 0..12 {
        for _ in 0..5 {
            monitor.ingest(full_record("openai"));
        }
        clock.advance(Duration::from_secs(60));
    }
    monitor.health();
    monitor.ingest(full_record("openai"));
    let mut failed = full_record("anthropic");
    failed.outcome = Outcome::Timeout;
    monitor.ingest(failed);
    let mut unrouted = StreamRecord::new("unknown", "unknown", "unmatched", Outcome::ClientError);
    unrouted.status = Some(http::StatusCode::NOT_FOUND);
    monitor.ingest(unrouted);
}

#[tokio::test]
async fn live_scrape_exposes_exactly_the_table() {
    let clock = ManualClock::new(std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let monitor = Monitor::builder()
        .max_label_sets(1)
        .clock(clock.clone())
        .build()
        .unwrap();
    // One request through the layer, for the in-flight gauge.
    let app = Router::new()
        .route(
            "/v1/chat",
            post(|| async { (StreamLabels::new("openai"), "hello") }),
        )
        .layer(monitor.layer());
    let response = app
        .oneshot(http::Request::post("/v1/chat").body(Body::empty()).unwrap())
        .await
        .unwrap();
    response.into_body().collect().await.unwrap();
    ingest_all(&monitor, &clock);
    let scrape = monitor.render_prometheus();

    let mut types = BTreeMap::new();
    let mut helps = BTreeMap::new();
    let mut series: BTreeMap<String, BTreeSet<BTreeSet<String>>> = BTreeMap::new();
    for line in scrape.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            types.insert(name.to_owned(), kind.to_owned());
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            helps.insert(name.to_owned(), help.to_owned());
        } else if !line.starts_with('#') {
            let name_end = line.find(['{', ' ']).unwrap();
            let mut name = &line[..name_end];
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(base) = name.strip_suffix(suffix).filter(|b| types.contains_key(*b)) {
                    name = base;
                }
            }
            let labels = match (line.find('{'), line.rfind('}')) {
                (Some(open), Some(close)) => label_keys(&line[open + 1..close]),
                _ => BTreeSet::new(),
            };
            series.entry(name.to_owned()).or_default().insert(labels);
        }
    }

    let expected: BTreeMap<String, String> = METRICS
        .iter()
        .map(|m| (m.name().to_owned(), m.kind().as_str().to_owned()))
        .collect();
    assert_eq!(
        types, expected,
        "# TYPE lines against names::METRICS\n{scrape}"
    );
    for m in METRICS {
        assert_eq!(
            helps.get(m.name()).map(String::as_str),
            Some(m.help()),
            "{}",
            m.name()
        );
        check_label_sets(m, &series[m.name()]);
    }
    assert!(scrape.contains("stream_monitor_label_overflow_total{label=\"series\"}"));
    assert!(scrape.contains("stream_monitor_unrouted_requests_total 1"));
}

#[test]
fn facade_emits_with_the_table_kind_and_labels() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let clock = ManualClock::new(std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let monitor = Monitor::builder()
            .max_label_sets(1)
            .clock(clock.clone())
            .build()
            .unwrap();
        ingest_all(&monitor, &clock);
    });
    let mut emitted: BTreeMap<&str, BTreeSet<BTreeSet<String>>> = BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let (_, key) = key.into_parts();
        let m = table(key.name());
        let kind = match value {
            DebugValue::Counter(_) => "counter",
            DebugValue::Gauge(_) => "gauge",
            DebugValue::Histogram(_) => "histogram",
        };
        // The facade has no fractional counters: a counter kept in a smaller unit (the cost)
        // rises a gauge.
        let expected = if m.scale() == 1.0 {
            m.kind().as_str()
        } else {
            "gauge"
        };
        assert_eq!(kind, expected, "{}", m.name());
        let labels: BTreeSet<String> = key.labels().map(|l| l.key().to_owned()).collect();
        emitted.entry(m.name()).or_default().insert(labels);
    }
    for (name, label_sets) in &emitted {
        check_label_sets(table(name), label_sets);
    }
    // Ingesting moves no in-flight gauge (only the layer does).
    let expected: BTreeSet<&str> = METRICS
        .iter()
        .map(Metric::name)
        .filter(|n| *n != names::IN_FLIGHT)
        .collect();
    assert_eq!(emitted.keys().copied().collect::<BTreeSet<_>>(), expected);
}

/// The README's outcome table lists every outcome, once: dashboards and alerts
/// match on these values.
#[test]
fn readme_outcome_table_lists_every_outcome() {
    let readme = include_str!("../README.md");
    let listed: Vec<String> = readme
        .lines()
        .skip_while(|l| !l.starts_with("| outcome | when |"))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|row| {
            let first = row.trim_matches('|').split('|').next().unwrap_or("");
            first.trim().trim_matches('`').to_owned()
        })
        .collect();
    let expected: Vec<String> = Outcome::ALL.iter().map(|o| o.as_str().to_owned()).collect();
    let mut sorted_listed = listed.clone();
    sorted_listed.sort();
    let mut sorted_expected = expected.clone();
    sorted_expected.sort();
    assert_eq!(
        sorted_listed, sorted_expected,
        "README.md's outcome table must list exactly Outcome::ALL"
    );
}

/// `gen_ai_*` series count LLM calls only: a plain JSON route and a route excluded by
/// `exclude_gen_ai_routes` are in `stream_monitor_requests_total` but in no `gen_ai_*` series.
#[tokio::test]
async fn gen_ai_series_count_llm_calls_only() {
    let monitor = Monitor::builder()
        .exclude_gen_ai_routes(["/v1/replay"])
        .build()
        .unwrap();
    let sse = || async {
        (
            StreamLabels::new("openai"),
            [(http::header::CONTENT_TYPE, "text/event-stream")],
            "data: {\"model\":\"gpt-4o-mini\",\"choices\":[{\"delta\":{\"content\":\"hi\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
        )
    };
    let app = Router::new()
        .route("/v1/chat", post(sse))
        .route("/v1/replay", post(sse))
        .route("/healthz", post(|| async { "{\"ok\":true}" }))
        .layer(monitor.layer());
    for path in ["/v1/chat", "/v1/replay", "/healthz"] {
        let response = app
            .clone()
            .oneshot(http::Request::post(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        response.into_body().collect().await.unwrap();
    }
    let scrape = monitor.render_prometheus();
    let routes = |metric: &str| -> BTreeSet<String> {
        scrape
            .lines()
            .filter(|l| l.starts_with(metric))
            .filter_map(|l| l.split("http_route=\"").nth(1))
            .filter_map(|rest| rest.split('"').next())
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        routes("stream_monitor_requests_total{"),
        ["/healthz", "/v1/chat", "/v1/replay"]
            .map(String::from)
            .into()
    );
    for metric in [
        "gen_ai_server_request_duration_seconds_count{",
        "gen_ai_server_time_to_first_token_seconds_count{",
        "gen_ai_client_token_usage_count{",
        "stream_monitor_finish_reasons_total{",
    ] {
        assert_eq!(routes(metric), ["/v1/chat".to_owned()].into(), "{metric}");
    }
    // The LLM call carries its operation and the model its stream reported.
    assert!(
        scrape
            .lines()
            .any(|l| l.starts_with("stream_monitor_requests_total{")
                && l.contains("http_route=\"/v1/chat\"")
                && l.contains("gen_ai_operation_name=\"chat\"")
                && l.contains("gen_ai_response_model=\"gpt-4o-mini\""))
    );
    assert!(
        !scrape
            .lines()
            .any(|l| l.contains("http_route=\"/healthz\"") && l.contains("gen_ai_operation_name"))
    );
}
