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
