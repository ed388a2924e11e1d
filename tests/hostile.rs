//! Hostile traffic against the demo app: 50,000 anonymous requests with random paths, methods,
//! headers, label values and bodies (no `x-sim-*`: those stand for the upstream). Afterwards
//! the series stay within the budget, `/health` is as it was, and a real stream is labelled
//! correctly. Run in-process (`oneshot`): what is checked is labels and health, not the network.
//! Memory and scrape time under such traffic are figures of `examples/soak.rs`.

#[allow(dead_code)]
#[path = "../examples/demo/main.rs"]
mod demo;

use std::collections::HashSet;

use axum::body::Body;
use demo::load::Rng;
use http::{Method, Request, header};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_stream_monitor::{Monitor, Outcome, StreamRecord};

const PREFIX: &str = "/api/v1/monitoring";
const REQUESTS: u64 = 50_000;

/// 1 to 70 printable ASCII characters.
fn word(rng: &mut Rng) -> String {
    let len = 1 + rng.below(70) as usize;
    (0..len)
        .map(|_| (rng.below(95) as u8 + 32) as char)
        .collect()
}

fn hostile_request(rng: &mut Rng) -> Request<Body> {
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::PATCH,
    ];
    let method = methods[rng.below(methods.len() as u64) as usize].clone();
    let n = rng.next_u64();
    let path = match rng.below(6) {
        0 => "/v1/chat/completions".to_owned(),
        1 => "/v1/messages".to_owned(),
        2 => format!("/v1beta/models/m{n}:streamGenerateContent?alt=sse"),
        3 => format!("{PREFIX}/nope{}?limit=x{n}", n % 7),
        _ => format!("/random/{n:x}/{}?q={}", n % 1000, rng.below(1000)),
    };
    let mut req = Request::builder().method(method).uri(path);
    if rng.below(2) == 0 {
        req = req.header("x-llm-provider", format!("p{}", rng.next_u64()));
    }
    if rng.below(2) == 0 {
        req = req.header("x-llm-model", format!("m{}", rng.next_u64()));
    }
    if rng.below(3) == 0 {
        req = req.header(header::ACCEPT, "text/event-stream");
    }
    if rng.below(3) == 0 {
        req = req.header("x-user-id", word(rng));
    }
    if rng.below(4) == 0 {
        req = req.header("x-request-id", word(rng));
    }
    let body = match rng.below(4) {
        0 => Body::from(format!(
            r#"{{"model":"m{}","stream":true,"max_tokens":5,"messages":[]}}"#,
            rng.next_u64()
        )),
        1 => Body::from(&b"\xff\xfe{not json"[..]),
        2 => Body::from(word(rng)),
        _ => Body::empty(),
    };
    if rng.below(2) == 0 {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    req.body(body).expect("a valid request")
}

fn label_sets(scrape: &str) -> HashSet<&str> {
    scrape
        .lines()
        .filter(|l| l.starts_with("stream_monitor_response_bytes_count{"))
        .filter_map(|l| l.rsplit_once(' ').map(|(labels, _)| labels))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_thousand_hostile_requests_move_nothing() {
    let records = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Outcome>::new()));
    let sink = records.clone();
    let monitor = Monitor::builder()
        .prefix(PREFIX)
        .on_record(move |r: &StreamRecord| sink.lock().unwrap().push(r.outcome))
        .build()
        .unwrap();
    let app = demo::app(&monitor);
    let health_before = monitor.health();

    let rng = &mut Rng(0x9E37_79B9_7F4A_7C15);
    let mut measured = 0;
    for _ in 0..REQUESTS {
        let req = hostile_request(rng);
        // The monitor's own endpoints answer without being measured.
        if !req.uri().path().starts_with(PREFIX) {
            measured += 1;
        }
        let res = app.clone().oneshot(req).await.expect("infallible");
        let is_stream = res
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if is_stream {
            // A simulated stream takes a while: the client goes away instead (a cancel).
            drop(res);
        } else {
            res.into_body().collect().await.expect("body");
        }
    }
    assert_eq!(
        records.lock().unwrap().len() as u64,
        measured,
        "every request recorded exactly once"
    );
    assert_eq!(monitor.in_flight(), 0);

    let health_after = monitor.health();
    assert_eq!(health_after.status, health_before.status);
    assert!(!health_after.rollback);
    assert!(health_after.triggers.iter().all(|t| t.samples == 0));

    let scrape = monitor.render_prometheus();
    let sets = label_sets(&scrape);
    assert!(
        sets.len() <= 257,
        "{} label sets past the budget of 256",
        sets.len()
    );

    // A real stream afterwards, named by its handler, keeps its labels.
    let real = Request::post("/v1/chat/completions")
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-sim-tokens", "4")
        .header("x-sim-ttft-ms", "0")
        .header("x-sim-token-interval-ms", "0")
        .body(Body::from(
            r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        ))
        .unwrap();
    let res = app.clone().oneshot(real).await.unwrap();
    assert_eq!(res.status(), 200);
    res.into_body().collect().await.unwrap();
    let snapshot = monitor.snapshot();
    let openai = &snapshot.streaming_by_provider["openai"].five_minutes;
    assert!(openai.total_streaming_requests >= 1);
    let scrape = monitor.render_prometheus();
    assert!(
        scrape.contains(
            r#"gen_ai_server_time_to_first_token_seconds_count{gen_ai_provider_name="openai",gen_ai_request_model="gpt-4o-mini",http_route="/v1/chat/completions",gen_ai_operation_name="chat",gen_ai_response_model="gpt-4o-mini"} 1"#
        ),
        "the real stream keeps its labels"
    );
}
