//! Emissions to the `metrics` facade, checked with metrics-util's `DebuggingRecorder` installed
//! as a thread-local recorder (no global recorder), on a real server and client.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use common::{Records, client, fixture, paced_body, serve, split_events};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tower_stream_monitor::{Monitor, StreamLabels, names};

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    let mut v: Labels = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    v.sort();
    v
}

#[test]
fn facade_receives_spec_names_and_labels() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let body = fixture("openai-chat.sse");
    let body_len = body.len();
    metrics::with_local_recorder(&recorder, || {
        // A current-thread runtime: server, client and body all run on this thread, where the
        // local recorder is installed.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let records = Records::default();
            let monitor = records.attach(Monitor::builder()).build().unwrap();
            let frames = split_events(&body);
            let app = Router::new()
                .route(
                    "/v1/chat/completions",
                    post(move |headers: axum::http::HeaderMap| {
                        let frames = frames.clone();
                        async move {
                            if headers.contains_key("x-fail") {
                                return (StreamLabels::new("openai"), StatusCode::UNAUTHORIZED)
                                    .into_response();
                            }
                            (
                                StreamLabels::new("openai"),
                                [(header::CONTENT_TYPE, "text/event-stream")],
                                paced_body(
                                    frames,
                                    Duration::from_millis(50),
                                    Duration::from_millis(5),
                                ),
                            )
                                .into_response()
                        }
                    }),
                )
                .layer(monitor.layer());
            let addr = serve(app).await;
            let c = client();
            c.post(format!("http://{addr}/v1/chat/completions"))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            c.post(format!("http://{addr}/v1/chat/completions"))
                .header("x-fail", "1")
                .send()
                .await
                .unwrap();
            records.wait_for(2).await;
        });
    });

    let mut counters: HashMap<(String, Labels), u64> = HashMap::new();
    let mut gauges: HashMap<(String, Labels), f64> = HashMap::new();
    let mut histograms: HashMap<(String, Labels), Vec<f64>> = HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let (_, key) = key.into_parts();
        let mut l: Labels = key
            .labels()
            .map(|l| (l.key().to_string(), l.value().to_string()))
            .collect();
        l.sort();
        let id = (key.name().to_string(), l);
        match value {
            DebugValue::Counter(v) => {
                counters.insert(id, v);
            }
            DebugValue::Gauge(v) => {
                gauges.insert(id, v.into_inner());
            }
            DebugValue::Histogram(v) => {
                histograms.insert(id, v.into_iter().map(|x| x.into_inner()).collect());
            }
        }
    }

    // No model named by the handler: the request model is the one the stream reported.
    let base = [
        (names::PROVIDER, "openai"),
        (names::MODEL, "gpt-4o-mini-2024-07-18"),
        (names::ROUTE, "/v1/chat/completions"),
        (names::OPERATION, "chat"),
        (names::RESPONSE_MODEL, "gpt-4o-mini-2024-07-18"),
    ];
    let with = |extra: (&'static str, &'static str)| {
        let mut v = base.to_vec();
        v.push(extra);
        labels(&v)
    };
    assert_eq!(
        counters[&(names::REQUESTS_TOTAL.into(), with((names::OUTCOME, "ok")))],
        1
    );
    let auth = labels(&[
        (names::PROVIDER, "openai"),
        (names::MODEL, "unknown"),
        (names::ROUTE, "/v1/chat/completions"),
        (names::OPERATION, "chat"),
        (names::OUTCOME, "auth_error"),
        (names::ERROR_TYPE, "auth_error"),
    ]);
    assert_eq!(counters[&(names::REQUESTS_TOTAL.into(), auth.clone())], 1);
    assert_eq!(histograms[&(names::REQUEST_DURATION.into(), auth)].len(), 1);

    let ttft = &histograms[&(names::TIME_TO_FIRST_TOKEN.into(), labels(&base))];
    assert_eq!(ttft.len(), 1);
    assert!(ttft[0] >= 0.05, "ttft {ttft:?}");
    let ttfb = &histograms[&(names::TIME_TO_FIRST_BYTE.into(), labels(&base))];
    assert!(ttfb[0] >= 0.05 && ttfb[0] <= ttft[0]);
    assert_eq!(
        histograms[&(names::TIME_PER_OUTPUT_TOKEN.into(), labels(&base))].len(),
        1
    );
    assert_eq!(
        histograms[&(names::REQUEST_DURATION.into(), with((names::OUTCOME, "ok")))].len(),
        1
    );
    assert_eq!(
        histograms[&(
            names::TOKEN_USAGE.into(),
            with((names::TOKEN_TYPE, "output"))
        )],
        vec![18.0]
    );
    assert_eq!(
        histograms[&(
            names::TOKEN_USAGE.into(),
            with((names::TOKEN_TYPE, "input"))
        )],
        vec![24.0]
    );
    assert_eq!(
        histograms[&(names::RESPONSE_BYTES.into(), labels(&base))],
        vec![body_len as f64]
    );
    assert_eq!(
        gauges[&(
            names::IN_FLIGHT.into(),
            labels(&[(names::ROUTE, "/v1/chat/completions")])
        )],
        0.0
    );
}

#[tokio::test]
async fn two_monitors_never_interfere() {
    let (a_records, b_records) = (Records::default(), Records::default());
    let a = a_records.attach(Monitor::builder()).build().unwrap();
    let b = b_records.attach(Monitor::builder()).build().unwrap();
    let addr_a = serve(
        Router::new()
            .route("/x", post(|| async { "a" }))
            .layer(a.layer()),
    )
    .await;
    let _addr_b = serve(
        Router::new()
            .route("/x", post(|| async { "b" }))
            .layer(b.layer()),
    )
    .await;
    for _ in 0..3 {
        client()
            .post(format!("http://{addr_a}/x"))
            .send()
            .await
            .unwrap();
    }
    assert_eq!(a_records.wait_for(3).await.len(), 3);
    assert!(b_records.snapshot().is_empty());
    assert_eq!(b.recorded(tower_stream_monitor::Outcome::Ok), 0);
}

/// An anomaly score set through the facade goes back to 0 once its signal is no longer judged
/// (its provider went quiet), as the exposition drops the series: a recorder would otherwise
/// keep the anomalous score, and an alert on it, for ever.
#[test]
fn an_anomaly_score_no_longer_judged_reads_zero() {
    use tower_stream_monitor::predict::{AnomalyDetection, AnomalySlot};
    use tower_stream_monitor::window::ManualClock;
    use tower_stream_monitor::{Outcome, StreamRecord};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let score = || {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .find_map(|(key, _, _, value)| {
                let (_, key) = key.into_parts();
                let first_token = key.name() == names::ANOMALY_SCORE
                    && key
                        .labels()
                        .any(|l| l.key() == "signal" && l.value() == "first_token_p95_ms");
                match value {
                    DebugValue::Gauge(v) if first_token => Some(v.into_inner()),
                    _ => None,
                }
            })
    };
    let stream = |ttft_ms: u64| {
        let mut r = StreamRecord::new("openai", "m", "/v1/chat", Outcome::Ok);
        r.streaming = true;
        r.time_to_first_token = Some(Duration::from_millis(ttft_ms));
        r.duration = Duration::from_millis(ttft_ms + 500);
        r.output_tokens = 50;
        r.tokens_per_second = Some(100.0);
        r
    };
    metrics::with_local_recorder(&recorder, || {
        let clock = ManualClock::new(std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let monitor = Monitor::builder()
            .clock(clock.clone())
            .anomaly_detection(
                AnomalyDetection::default()
                    .slot(AnomalySlot::TenSeconds)
                    .min_baseline_slots(6),
            )
            .build()
            .unwrap();
        // A steady baseline, then a doubled first token: an anomaly.
        for slot in 0..11u64 {
            for i in 0..10 {
                monitor.ingest(stream(if slot < 8 { 300 + (slot + i) % 10 } else { 600 }));
            }
            clock.advance(Duration::from_secs(10));
        }
        assert!(monitor.health().anomalies.iter().any(|a| a.anomalous));
        // A snapshot takes the gauges' values (and leaves 0): judged again, the score is set
        // again, and stays until something sets it.
        assert!(score().is_some_and(|s| s >= 4.0), "{:?}", score());
        assert!(monitor.health().anomalies.iter().any(|a| a.anomalous));
        // Quiet for ten minutes: nothing is judged, in the report nor in the exposition.
        clock.advance(Duration::from_secs(600));
        assert!(monitor.health().anomalies.is_empty());
        assert!(!monitor.render_prometheus().contains(names::ANOMALY_SCORE));
        assert_eq!(score(), Some(0.0));
    });
}

/// A recorder that is a unit struct (its state in statics, as `metrics`' own `PrintRecorder`
/// example is) cannot be told from `metrics`' no-op recorder, which is zero-sized too: left
/// to the default the monitor skips it; with `metrics_facade(true)` it receives every record.
#[test]
fn a_zero_sized_recorder_receives_records_when_asked_for() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use metrics::{
        Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };
    use tower_stream_monitor::{Outcome, StreamRecord};

    static INCREMENTS: AtomicU64 = AtomicU64::new(0);
    struct Count;
    impl CounterFn for Count {
        fn increment(&self, _: u64) {
            INCREMENTS.fetch_add(1, Ordering::Relaxed);
        }
        fn absolute(&self, _: u64) {}
    }
    struct UnitRecorder;
    impl Recorder for UnitRecorder {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(Arc::new(Count))
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }
    let record = || StreamRecord::new("openai", "gpt-4o-mini", "/v1/chat", Outcome::Ok);
    metrics::with_local_recorder(&UnitRecorder, || {
        Monitor::builder().build().unwrap().ingest(record());
    });
    assert_eq!(
        INCREMENTS.load(Ordering::Relaxed),
        0,
        "taken for the no-op one"
    );
    metrics::with_local_recorder(&UnitRecorder, || {
        let monitor = Monitor::builder().metrics_facade(true).build().unwrap();
        monitor.ingest(record());
    });
    assert!(INCREMENTS.load(Ordering::Relaxed) > 0, "received nothing");
}
