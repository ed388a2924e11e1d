//! Whole-stack overhead, side by side in one run: the stacks of `stack_bench::STACKS` (bare
//! axum; `body_wrapper`, a layer that only wraps the response body, the floor any
//! body-measuring layer pays on an axum `Router`; tower-http's `TraceLayer`; axum-prometheus;
//! and tower-stream-monitor with both layers as the README installs them), each with the same
//! `fmt` layer filtered at WARN. Each serves in its own process (axum-prometheus installs a
//! global recorder), driven by `wrk` over loopback.
//!
//! ```text
//! apt-get install -y wrk
//! cd benches/stack
//! cargo run --release --bin overhead                                   # small requests
//! cargo run --release --bin overhead -- --scenario stream --connections 1000
//! # options: --seconds 5 --rounds 3 --connections 64 --pin --calibrate
//! ```
//!
//! `--pin` (needs `taskset`, from util-linux) runs each server on core 0 with one tokio worker
//! and `wrk` on core 1, so that the two never share a core: the server's CPU per request is then
//! measured without `wrk` preempting it, and its throughput is what one core gives. Without it,
//! both take any core, as in the default run of most apps.
//!
//! `--calibrate` adds a `cold_lines` stack beside `body_wrapper`: the same wrapper, writing to 13
//! cache lines of the stream's own (in four allocations) per data frame, about as many as this
//! crate's events read over the floor. With `--scenario stream` it prices cold memory on this
//! machine, apart from instructions; besides the writes it costs four allocations of 1 KiB,
//! zeroed, per response (on small requests that is all it measures: their lines are still warm).
//!
//! `small`: `GET /hello`, a 5-byte body. `stream`: `GET /stream`, an SSE body of 20 OpenAI-style
//! chunks 50 ms apart (1 s per stream), so each connection keeps one stream going.
//! `stream_raw`: `GET /stream_raw`, the same bytes as `application/octet-stream`, which this
//! crate measures (first byte, bytes, duration, timeout) without parsing. For each
//! variant it prints requests per second and the server's CPU time per request (from
//! /proc/PID/stat; per stream, divide by 20 for per event), as medians over the rounds, and both
//! as ratios to bare axum; and the median of each round's CPU over bare axum's in the same
//! round, with the middle half of those ratios (paired: drift between rounds cancels). Variants
//! run interleaved round by round, each round starting one variant later, so machine drift
//! hits them alike. Loopback CPU figures are noisy (about ±10% on streams); this package's
//! `benches/instructions.rs` gives the stable in-process counts.

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const VARIANTS: [&str; 5] = stack_bench::STACKS;

/// Lines the `cold_lines` stack touches per data frame: about as many as this crate's
/// events read over the `body_wrapper` floor (README, Performance: Cache misses).
const COLD_LINES: usize = 13;
/// Cache lines per region of the `cold_lines` stack, of which it touches every fifth.
const REGION_LINES: usize = 16;

pin_project_lite::pin_project! {
    /// The `cold_lines` stack's body: the inner body's frames passed through, and for each data
    /// frame a write to [`COLD_LINES`] cache lines of the stream's own, spread over four
    /// allocations (made and zeroed with the response) as a request's state is. With a thousand
    /// streams live, each event finds them cold: what memory alone costs per event, apart from
    /// any instructions.
    struct ColdLines {
        #[pin]
        body: Body,
        regions: [Box<[[u64; 8]; REGION_LINES]>; 4],
    }
}

impl ColdLines {
    fn new(body: Body) -> Self {
        Self {
            body,
            regions: std::array::from_fn(|_| Box::new([[0; 8]; REGION_LINES])),
        }
    }
}

impl http_body::Body for ColdLines {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled {
            if frame.is_data() {
                let lines = (0..COLD_LINES).map(|n| (n % 4, (n / 4) * 5));
                for (region, line) in lines {
                    let word = &mut this.regions[region][line][0];
                    *word = std::hint::black_box(*word + 1);
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

async fn hello() -> &'static str {
    "hello"
}

async fn stream() -> impl IntoResponse {
    chunks("text/event-stream")
}

/// The same bytes under a type this crate does not parse: what measuring a stream costs
/// without reading its events.
async fn stream_raw() -> impl IntoResponse {
    chunks("application/octet-stream")
}

/// 20 OpenAI-style chunks 50 ms apart, as `content_type`.
fn chunks(content_type: &'static str) -> impl IntoResponse {
    let chunks = futures_util::stream::unfold(0u32, |i| async move {
        if i == 20 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let data = format!(
            "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} \"}}}}]}}\n\n"
        );
        Some((Ok::<_, Infallible>(Bytes::from(data)), i + 1))
    });
    (
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(chunks),
    )
}

/// The variant's app (one of `stack_bench::STACKS`, or `cold_lines`), with its subscriber
/// installed.
fn app(variant: &str) -> Router {
    let routes = Router::new()
        .route("/hello", get(hello))
        .route("/stream", get(stream))
        .route("/stream_raw", get(stream_raw));
    let (app, subscriber) = match variant {
        "cold_lines" => {
            let (routes, subscriber) = stack_bench::stack("bare", routes);
            let app = routes.layer(tower::util::MapResponseLayer::new(
                |response: axum::http::Response<Body>| response.map(ColdLines::new),
            ));
            (app, subscriber)
        }
        stack => stack_bench::stack(stack, routes),
    };
    tracing::dispatcher::set_global_default(subscriber).expect("one subscriber");
    app
}

/// Child mode: serve one variant and print the port.
fn serve(variant: &str) {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("listening {}", listener.local_addr().expect("addr").port());
        axum::serve(listener, app(variant)).await.expect("serve");
    });
}

/// The process's user and system CPU so far, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some((fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?))
}

struct Run {
    rps: f64,
    cpu_us_per_request: f64,
    /// The user-space part of it: the server's own code, apart from the kernel's work for its
    /// sockets (on loopback, that includes waking the client on the other core).
    user_us_per_request: f64,
}

/// `program` run as is, or pinned to `core` with `taskset` when `pin` is set.
fn command(program: impl AsRef<std::ffi::OsStr>, pin: bool, core: &str) -> Command {
    if pin {
        let mut command = Command::new("taskset");
        command.args(["-c", core]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run_once(
    variant: &str,
    path: &str,
    seconds: u64,
    connections: u32,
    pin: bool,
) -> Result<Run, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut server = command(exe, pin, "0");
    if pin {
        // What tokio would choose under `taskset -c 0` anyway, said outright.
        server.env("TOKIO_WORKER_THREADS", "1");
    }
    let mut child = server
        .args(["--serve", variant])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let port = line
        .trim()
        .strip_prefix("listening ")
        .ok_or("child did not start")?
        .to_owned();
    let url = format!("http://127.0.0.1:{port}{path}");
    // Warm up, then measure.
    let _ = command("wrk", pin, "1")
        .args(["-t1", "-c8", "-d1s", &url])
        .output();
    let before = cpu_ticks(child.id()).ok_or("no /proc stat")?;
    let out = command("wrk", pin, "1")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--timeout",
            "10s",
            &url,
        ])
        .output()
        .map_err(|e| format!("wrk: {e} (apt-get install -y wrk)"))?;
    let after = cpu_ticks(child.id()).ok_or("no /proc stat")?;
    let _ = child.kill();
    let _ = child.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    let requests: f64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("unexpected wrk output: {text}"))?;
    let rps: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("unexpected wrk output: {text}"))?;
    // Clock ticks are 1/100 s on Linux.
    let user_us = after.0.saturating_sub(before.0) as f64 * 10_000.0;
    let cpu_us = user_us + after.1.saturating_sub(before.1) as f64 * 10_000.0;
    Ok(Run {
        user_us_per_request: user_us / requests.max(1.0),
        rps,
        cpu_us_per_request: cpu_us / requests.max(1.0),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, variant] = args.as_slice() {
        if flag == "--serve" {
            serve(variant);
            return;
        }
    }
    let mut seconds = 5;
    let mut rounds = 3;
    let mut connections = 64;
    let mut scenario = "small".to_owned();
    let mut pin = false;
    let mut calibrate = false;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_default();
        match arg.as_str() {
            "--seconds" => seconds = value().parse().unwrap_or(seconds),
            "--rounds" => rounds = value().parse().unwrap_or(rounds).max(1),
            "--connections" => connections = value().parse().unwrap_or(connections),
            "--scenario" => scenario = value(),
            "--pin" => pin = true,
            "--calibrate" => calibrate = true,
            other => {
                eprintln!("unknown argument {other:?}");
                std::process::exit(2);
            }
        }
    }
    if pin {
        // Fail early and plainly rather than as a server that never starts.
        let pinned = Command::new("taskset").args(["-c", "1", "true"]).status();
        if !pinned.is_ok_and(|s| s.success()) {
            eprintln!("--pin needs `taskset` (util-linux) and a second core (core 1)");
            std::process::exit(2);
        }
    }
    let path = match scenario.as_str() {
        "small" => "/hello",
        "stream" => "/stream",
        "stream_raw" => "/stream_raw",
        other => {
            eprintln!("unknown scenario {other:?}: small, stream or stream_raw");
            std::process::exit(2);
        }
    };
    println!(
        "scenario {scenario}: GET {path}, {connections} connections, {seconds} s x {rounds} rounds per variant"
    );
    let mut variants = VARIANTS.to_vec();
    if calibrate {
        // Beside the floor it adds to.
        variants.insert(2, "cold_lines");
    }
    // Per variant: throughput, CPU and user CPU per request, one of each per round.
    let mut results: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> =
        vec![(Vec::new(), Vec::new(), Vec::new()); variants.len()];
    for round in 1..=rounds {
        // Each round starts one variant later than the one before, so that each variant takes
        // every place in a round in turn (a machine slowing down within a round weighs on
        // each alike).
        let start = (round - 1) % variants.len();
        for i in (0..variants.len()).map(|k| (start + k) % variants.len()) {
            let variant = variants[i];
            match run_once(variant, path, seconds, connections, pin) {
                Ok(run) => {
                    println!(
                        "round {round} {variant:<26} {:>10.0} req/s {:>8.1} us CPU/req ({:.1} user)",
                        run.rps, run.cpu_us_per_request, run.user_us_per_request
                    );
                    results[i].0.push(run.rps);
                    results[i].1.push(run.cpu_us_per_request);
                    results[i].2.push(run.user_us_per_request);
                }
                Err(e) => {
                    eprintln!("{variant}: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
    let (bare_rps, bare_cpu) = (median(results[0].0.clone()), median(results[0].1.clone()));
    println!(
        "\n{:<26}{:>12}{:>10}{:>14}{:>10}{:>18}  {:<26}  {:<26}",
        "variant",
        "req/s",
        "vs bare",
        "us CPU/req",
        "vs bare",
        "CPU/req, rounds",
        "CPU vs bare, paired",
        "user CPU vs bare, paired"
    );
    for (i, variant) in variants.iter().enumerate() {
        let (rps, cpu) = (median(results[i].0.clone()), median(results[i].1.clone()));
        // The spread over the rounds: how far one round can be from the median on this machine.
        let least = results[i].1.iter().copied().fold(f64::INFINITY, f64::min);
        let most = results[i].1.iter().copied().fold(0.0, f64::max);
        // Each round's CPU over bare axum's in the same round: the machine's drift from round to
        // round cancels out. Their median, and the middle half of them.
        let paired = |ours: &[f64], bare: &[f64]| {
            let ratios = ours.iter().zip(bare).map(|(c, b)| c / b).collect();
            paired_summary(ratios)
        };
        println!(
            "{variant:<26}{rps:>12.0}{:>9.3}x{cpu:>14.2}{:>9.3}x{:>18}  {:<26}  {:<26}",
            rps / bare_rps,
            cpu / bare_cpu,
            format!("{least:.2} to {most:.2}"),
            paired(&results[i].1, &results[0].1),
            paired(&results[i].2, &results[0].2),
        );
    }
}

/// The median of `ratios`, and their middle half (lower to upper quartile).
fn paired_summary(mut ratios: Vec<f64>) -> String {
    ratios.sort_by(f64::total_cmp);
    let at = |q: f64| ratios[((ratios.len() - 1) as f64 * q).round() as usize];
    format!("{:.3}x ({:.3} to {:.3})", at(0.5), at(0.25), at(0.75))
}
