//! Cache misses per streamed SSE event, counted by valgrind's cache simulation (`cachegrind
//! --cache-sim=yes`) on an in-process app with many streams live on one thread, polled in turn:
//! each event finds its stream's state gone cold, as a served stream's does when its next event
//! comes tens of milliseconds later. Stable to the miss where wall time is not (README,
//! Performance).
//!
//! ```text
//! cd benches/stack
//! cargo run --release --bin cache_misses             # needs valgrind
//! cargo run --release --bin cache_misses -- --timed  # wall time, no valgrind
//! ```
//!
//! Each stack runs in its own process: `body_wrapper`, a layer that only wraps the response
//! body (the floor any body-measuring layer pays on an axum `Router`), and `monitor`, this
//! crate as the README installs it (60 s stream timeout, error layer on the registry, `fmt` at
//! WARN). 500 streams start together; then one frame of each is read in turn until all end.
//! Per event = (count with 100 events a stream − count with 20) / (500 × 80), so starting and
//! ending the streams cancels out. The events are the OpenAI chat fixture's, a fresh copy per
//! frame, as a served stream's bytes come fresh from its handler. The simulated caches:
//! valgrind's first level (32 KiB here) and a 2 MiB last level.
//!
//! `--timed` prices those misses on this machine instead: the same runs, natively, each round of
//! frames (one per stream) after a sweep through `--evict` MiB of memory (320 by default, more
//! than this VM's 260 MiB last level; `--evict 0` for none), so that each event finds its
//! stream's state in main memory, as a served stream's often is after the kernel's and the
//! other connections' work.
//! Only the rounds are timed, not the sweeps. Per event = (time with 100 events a stream − time
//! with 20) / (500 × 80); stacks alternate, `--rounds` times (3 by default), medians. Wall time
//! on a shared machine: compare stacks of one run, not runs.

use std::process::Command;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Request, header};
use axum::response::IntoResponse;
use axum::routing::post;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use tower::ServiceExt;

const STACKS: [&str; 2] = ["body_wrapper", "monitor"];
const STREAMS: usize = 500;
/// Events per stream in the two runs whose difference is counted.
const FEW: usize = 20;
const MANY: usize = 100;
const LAST_LEVEL: &str = "--LL=2097152,16,64";

/// The fixture's content events, each a whole frame.
fn fixture_events() -> Vec<Vec<u8>> {
    let fixture = include_str!("../../../../tests/fixtures/openai-chat.sse");
    fixture
        .split("\n\n")
        .filter(|e| e.starts_with("data: {") && e.contains("\"content\":\""))
        .map(|e| format!("{e}\n\n").into_bytes())
        .collect()
}

/// Runs `streams` streams of `events` events on `stack`, read in turn, on a current-thread
/// runtime.
fn child(stack: &str, streams: usize, events: usize, evict: Option<usize>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    // One copy every stream reads from, as a served stream's bytes come from one handler.
    let fixture = std::sync::Arc::new(fixture_events());
    let stream = move || {
        let fixture = std::sync::Arc::clone(&fixture);
        async move {
            // Copied when the frame is read: fresh bytes, not a buffer every stream shares.
            let frames = futures_util::stream::iter(0..=events).map(move |i| {
                Ok::<_, std::convert::Infallible>(match i {
                    i if i < events => Bytes::copy_from_slice(&fixture[i % fixture.len()]),
                    _ => Bytes::from_static(b"data: [DONE]\n\n"),
                })
            });
            (
                [(header::CONTENT_TYPE, "text/event-stream")],
                Body::from_stream(frames),
            )
                .into_response()
        }
    };
    let routes = Router::new().route("/v1/chat/completions", post(stream));
    let (app, subscriber) = stack_bench::stack(stack, routes);
    // As `axum::serve` prepares it (see this package's `benches/instructions.rs`).
    let app: Router = app.with_state(());
    tracing::dispatcher::set_global_default(subscriber).expect("one subscriber");
    runtime.block_on(async {
        let mut bodies = Vec::with_capacity(streams);
        for _ in 0..streams {
            let request = Request::post("/v1/chat/completions")
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::ACCEPT, "text/event-stream")
                .body(Body::from(r#"{"model":"gpt-4o-mini","stream":true}"#))
                .expect("a request");
            let response = app.clone().oneshot(request).await.expect("infallible");
            bodies.push(Some(response.into_body()));
        }
        let mut live = streams;
        // Timed runs (`evict`: the bytes to sweep, maybe none): what the rounds of frames
        // took, the sweeps between them left out.
        let mut sweep = vec![0u8; evict.unwrap_or(0)];
        let mut polled = std::time::Duration::ZERO;
        while live > 0 {
            if !sweep.is_empty() {
                // Other work between two events of a stream (the kernel's, the other
                // connections'): the streams' state leaves the caches.
                for line in sweep.chunks_mut(64) {
                    line[0] = line[0].wrapping_add(1);
                }
                std::hint::black_box(&mut sweep);
            }
            let round = std::time::Instant::now();
            for slot in &mut bodies {
                let Some(body) = slot else { continue };
                match body.frame().await {
                    Some(frame) => {
                        std::hint::black_box(frame.expect("a frame"));
                    }
                    None => {
                        *slot = None;
                        live -= 1;
                    }
                }
            }
            polled += round.elapsed();
        }
        if evict.is_some() {
            println!("polled_ns {}", polled.as_nanos());
        }
    });
}

/// The nanoseconds the rounds of one child run took, natively, with `evict` bytes swept
/// before each round.
fn polled_ns(stack: &str, events: usize, evict: usize) -> Result<f64, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let output = Command::new(exe)
        .args(["--child", stack, &STREAMS.to_string(), &events.to_string()])
        .arg(evict.to_string())
        .output()
        .map_err(|e| e.to_string())?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("{stack}: child failed\n{stderr}"));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("polled_ns "))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| format!("{stack}: no timing in {stdout:?}"))
}

/// `--timed`: nanoseconds per event of each stack, medians of `rounds` alternating runs.
fn timed(evict_mib: usize, rounds: usize) -> Result<(), String> {
    let events = (STREAMS * (MANY - FEW)) as f64;
    let evict = evict_mib
        .checked_mul(1 << 20)
        .ok_or_else(|| format!("--evict {evict_mib} MiB is more than this machine can address"))?;
    let mut samples = vec![Vec::new(); STACKS.len()];
    for _ in 0..rounds {
        for (stack, samples) in STACKS.iter().zip(&mut samples) {
            let few = polled_ns(stack, FEW, evict)?;
            let many = polled_ns(stack, MANY, evict)?;
            samples.push((many - few) / events);
        }
    }
    let medians: Vec<f64> = samples
        .into_iter()
        .map(|mut v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect();
    println!(
        "| stack ({STREAMS} streams live, {evict_mib} MiB swept between rounds) | ns per event (median of {rounds}) |"
    );
    println!("|---|---|");
    for (stack, ns) in STACKS.iter().zip(&medians) {
        println!("| {stack} | {ns:.0} ({:+.0}) |", ns - medians[0]);
    }
    Ok(())
}

/// Instructions, first-level data misses and last-level data misses of one child run.
fn counts(stack: &str, events: usize) -> Result<[f64; 3], String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let output = Command::new("valgrind")
        .args([
            "--tool=cachegrind",
            "--cache-sim=yes",
            LAST_LEVEL,
            "--cachegrind-out-file=/dev/null",
        ])
        .arg(exe)
        .args(["--child", stack, &STREAMS.to_string(), &events.to_string()])
        .output()
        .map_err(|e| format!("valgrind: {e} (is it installed?)"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!("{stack}: child failed\n{stderr}"));
    }
    let total = |name: &str| -> Result<f64, String> {
        let line = stderr
            .lines()
            .find(|l| l.contains(name))
            .ok_or_else(|| format!("no `{name}` in valgrind's summary:\n{stderr}"))?;
        let figure = line
            .split(':')
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .ok_or_else(|| format!("unreadable line: {line}"))?;
        figure
            .replace(',', "")
            .parse()
            .map_err(|e| format!("{line}: {e}"))
    };
    Ok([
        total("I   refs:")?,
        total("D1  misses:")?,
        total("LLd misses:")?,
    ])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let number = |k: usize| args[i + k].parse().expect("a count");
        let evict = args.get(i + 4).and_then(|a| a.parse().ok());
        child(&args[i + 1], number(2), number(3), evict);
        return;
    }
    if args.iter().any(|a| a == "--timed") {
        let option = |name: &str, default: usize| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1)?.parse().ok())
                .unwrap_or(default)
        };
        if let Err(e) = timed(option("--evict", 320), option("--rounds", 3).max(1)) {
            eprintln!("{e}");
            std::process::exit(2);
        }
        return;
    }
    let events = (STREAMS * (MANY - FEW)) as f64;
    let mut rows = Vec::new();
    for stack in STACKS {
        let per_event = counts(stack, FEW).and_then(|few| {
            let many = counts(stack, MANY)?;
            Ok([0, 1, 2].map(|k| (many[k] - few[k]) / events))
        });
        match per_event {
            Ok(row) => rows.push((stack, row)),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
        }
    }
    println!(
        "| stack ({STREAMS} streams live) | instructions per event | first-level data misses per event | last-level data misses per event |"
    );
    println!("|---|---|---|---|");
    let floor = rows[0].1;
    for (stack, [instructions, first, last]) in &rows {
        println!(
            "| {stack} | {instructions:.0} ({:+.0}) | {first:.2} ({:+.2}) | {last:.2} ({:+.2}) |",
            instructions - floor[0],
            first - floor[1],
            last - floor[2],
        );
    }
}
