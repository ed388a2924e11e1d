//! The demo: an axum server with simulated LLM providers (OpenAI chat and Responses, Anthropic
//! Messages, Gemini), monitored by both layers of tower-stream-monitor. No keys, no network.
//!
//! ```text
//! cargo run --release --example demo                              # serve on 127.0.0.1:3000
//! cargo run --release --example demo -- --addr 127.0.0.1:8080
//! cargo run --release --example demo -- --load 100 --duration 20  # drive load, report, exit
//! cargo run --release --example demo -- --load 20                 # drive load and keep serving
//! STREAMING_TIMEOUT=2 cargo run --release --example demo          # cut streams at 2 s
//! ```
//!
//! Options: `--addr HOST:PORT`, `--load N`, `--duration SECONDS`,
//! `--mix openai=50,anthropic=30,gemini=20`, `--fail-rate 0.02`. The monitor is configured from
//! the environment (`STREAMING_TIMEOUT`, `MONITOR_PREFIX`, `MONITOR_TOKEN`,
//! `MONITOR_MIN_SAMPLES`); its endpoints are under `/api/v1/monitoring`.

pub mod load;
pub mod sim;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use tower_stream_monitor::{ConfigError, Monitor, Outcome};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use load::{LoadOptions, Mix, Sample};

/// The demo's command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub addr: String,
    pub load: Option<usize>,
    pub duration: Option<Duration>,
    pub mix: Mix,
    pub fail_rate: f64,
}

impl Options {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut o = Options {
            addr: "127.0.0.1:3000".into(),
            load: None,
            duration: None,
            mix: Mix::default(),
            fail_rate: 0.0,
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
            match arg.as_str() {
                "--addr" => o.addr = value("--addr")?,
                "--load" => {
                    let n: usize = value("--load")?
                        .parse()
                        .map_err(|_| "--load must be a number of users")?;
                    if n == 0 || n > 10_000 {
                        return Err("--load must be from 1 to 10000".into());
                    }
                    o.load = Some(n);
                }
                "--duration" => {
                    let s: f64 = value("--duration")?
                        .parse()
                        .map_err(|_| "--duration must be seconds")?;
                    if !(s > 0.0 && s <= 86_400.0) {
                        return Err("--duration must be from 0 to 86400 seconds".into());
                    }
                    o.duration = Some(Duration::from_secs_f64(s));
                }
                "--mix" => o.mix = Mix::parse(&value("--mix")?)?,
                "--fail-rate" => {
                    let r: f64 = value("--fail-rate")?
                        .parse()
                        .map_err(|_| "--fail-rate must be a fraction")?;
                    if !(0.0..=1.0).contains(&r) {
                        return Err("--fail-rate must be from 0 to 1".into());
                    }
                    o.fail_rate = r;
                }
                "-h" | "--help" => return Err(USAGE.into()),
                other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
            }
        }
        if o.duration.is_some() && o.load.is_none() {
            return Err("--duration goes with --load".into());
        }
        Ok(o)
    }
}

const USAGE: &str = "usage: demo [--addr HOST:PORT] [--load USERS [--duration SECONDS] [--mix openai=50,anthropic=30,gemini=20] [--fail-rate 0.02]]";

/// The demo's monitor: from the environment, endpoints under `/api/v1/monitoring` by default.
pub fn monitor_from_env() -> Result<Monitor, ConfigError> {
    Monitor::builder()
        .prefix("/api/v1/monitoring")
        .with_env()?
        .build()
}

/// The simulated providers behind layer 1.
pub fn app(monitor: &Monitor) -> Router {
    sim::routes().layer(monitor.layer())
}

/// Serves the demo on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, monitor: Monitor) -> std::io::Result<()> {
    axum::serve(listener, app(&monitor)).await
}

fn ms(d: Option<Duration>) -> f64 {
    d.map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// The report: what the load saw, beside what the monitor's `/metrics` says.
pub fn report(samples: &[Sample], metrics: &serde_json::Value, elapsed: Duration) -> String {
    let mut ttft: Vec<f64> = samples
        .iter()
        .filter_map(|s| s.ttft)
        .map(|d| ms(Some(d)))
        .collect();
    let tps: Vec<f64> = samples.iter().filter_map(|s| s.tokens_per_second).collect();
    let avg_tps = if tps.is_empty() {
        0.0
    } else {
        tps.iter().sum::<f64>() / tps.len() as f64
    };
    let failed = samples
        .iter()
        .filter(|s| s.status != 200 || s.transport_error || s.injected.is_some())
        .count();
    let w = &metrics["streaming_5min"];
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let mut out = String::new();
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "\n{} requests in {:.1} s ({:.1}/s)",
        samples.len(),
        elapsed.as_secs_f64(),
        samples.len() as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    let _ = writeln!(out, "{:<28}{:>14}{:>14}", "", "load (client)", "monitor");
    let rows = [
        (
            "streaming requests",
            samples.len() as f64,
            f(&w["total_streaming_requests"]),
        ),
        (
            "TTFT p50 (ms)",
            load::quantile(&mut ttft, 0.50),
            f(&w["first_token_p50_ms"]),
        ),
        (
            "TTFT p95 (ms)",
            load::quantile(&mut ttft, 0.95),
            f(&w["first_token_p95_ms"]),
        ),
        (
            "TTFT p99 (ms)",
            load::quantile(&mut ttft, 0.99),
            f(&w["first_token_p99_ms"]),
        ),
        (
            "tokens/s (mean per stream)",
            avg_tps,
            f(&w["avg_tokens_per_second"]),
        ),
        (
            "output tokens",
            samples.iter().map(|s| s.tokens).sum::<u64>() as f64,
            f(&w["total_tokens"]),
        ),
        (
            "failed / streaming errors",
            failed as f64,
            f(&w["streaming_errors"]),
        ),
        (
            "error rate (%)",
            failed as f64 * 100.0 / samples.len().max(1) as f64,
            f(&w["streaming_error_rate"]),
        ),
    ];
    for (name, client, monitor) in rows {
        let _ = writeln!(out, "{name:<28}{client:>14.1}{monitor:>14.1}");
    }
    let _ = writeln!(out, "\nby outcome (monitor):");
    for o in Outcome::ALL {
        let n = w["by_outcome"][o.as_str()].as_u64().unwrap_or(0);
        if n > 0 {
            let _ = writeln!(out, "  {:<14}{n:>8}", o.as_str());
        }
    }
    let mut injected: Vec<(&str, usize)> = Vec::new();
    for s in samples.iter().filter_map(|s| s.injected) {
        match injected.iter_mut().find(|(k, _)| *k == s) {
            Some(e) => e.1 += 1,
            None => injected.push((s, 1)),
        }
    }
    if !injected.is_empty() {
        let list: Vec<String> = injected.iter().map(|(k, n)| format!("{k}={n}")).collect();
        let _ = writeln!(out, "injected failures: {}", list.join(", "));
    }
    let _ = writeln!(
        out,
        "demo process: {:.1} MB RSS, {:.1}% CPU; health: {}",
        f(&metrics["current_system"]["memory_mb"]),
        f(&metrics["current_system"]["cpu_percent"]),
        metrics["health_status"].as_str().unwrap_or("?")
    );
    out
}

async fn fetch_metrics(base: &str, monitor: &Monitor) -> serde_json::Value {
    let url = format!("{base}{}/metrics", monitor.prefix());
    let mut request = reqwest::Client::new().get(url);
    if let Ok(token) = std::env::var("MONITOR_TOKEN") {
        request = request.bearer_auth(token);
    }
    match request.send().await {
        Ok(r) => r
            .json::<serde_json::Value>()
            .await
            .map(|v| v["data"].clone())
            .unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

#[tokio::main]
async fn main() {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let monitor = match monitor_from_env() {
        Ok(m) => m,
        Err(error) => {
            eprintln!("demo: {error}");
            std::process::exit(2);
        }
    };
    // Layer 2 beside the usual fmt layer. RUST_LOG narrows what is printed (default: warnings).
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_filter(filter))
        .with(monitor.error_layer())
        .init();

    let listener = match tokio::net::TcpListener::bind(&options.addr).await {
        Ok(l) => l,
        Err(error) => {
            eprintln!("demo: cannot listen on {}: {error}", options.addr);
            std::process::exit(1);
        }
    };
    let addr: SocketAddr = listener
        .local_addr()
        .expect("a bound socket has an address");
    let base = format!("http://{addr}");
    let prefix = monitor.prefix().to_owned();
    println!("tower-stream-monitor demo on {base}");
    println!("  simulated providers: POST /v1/chat/completions, /v1/responses, /v1/messages,");
    println!(
        "                       /v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    println!(
        "  monitoring: {base}{prefix}/metrics  {prefix}/metrics/prometheus  {prefix}/health  {prefix}/errors  {prefix}/errors/summary"
    );
    println!("  stream timeout: {:?}", monitor.stream_timeout());
    println!(
        "  try: curl -N {base}/v1/chat/completions -H 'x-sim-tokens: 20' -d '{{\"model\":\"gpt-4o-mini\",\"stream\":true,\"stream_options\":{{\"include_usage\":true}}}}'"
    );
    let server = tokio::spawn(serve(listener, monitor.clone()));

    let Some(users) = options.load else {
        if let Ok(Err(error)) = server.await {
            eprintln!("demo: server error: {error}");
        }
        return;
    };

    let stop = Arc::new(AtomicBool::new(false));
    let bar = match options.duration {
        Some(d) => indicatif::ProgressBar::new(d.as_millis() as u64),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let progress = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let seen = progress.clone();
    let load_options = LoadOptions {
        base: base.clone(),
        users,
        duration: options.duration,
        requests_per_user: None,
        mix: options.mix.clone(),
        fail_rate: options.fail_rate,
        headers: Vec::new(),
    };
    let started = std::time::Instant::now();
    let load = tokio::spawn(load::run(load_options, stop.clone(), move |s| {
        seen.0.fetch_add(1, Ordering::Relaxed);
        if s.status != 200 || s.transport_error || s.injected.is_some() {
            seen.1.fetch_add(1, Ordering::Relaxed);
        }
    }));
    let ticker_bar = bar.clone();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let elapsed = started.elapsed();
            ticker_bar.set_position(elapsed.as_millis() as u64);
            ticker_bar.set_message(format!(
                "{users} users, {} requests, {} failed",
                progress.0.load(Ordering::Relaxed),
                progress.1.load(Ordering::Relaxed)
            ));
        }
    });
    let samples = load.await.unwrap_or_default();
    ticker.abort();
    bar.finish_and_clear();
    let metrics = fetch_metrics(&base, &monitor).await;
    println!("{}", report(&samples, &metrics, started.elapsed()));
    println!(
        "GET {prefix}/metrics:\n{}",
        serde_json::to_string_pretty(&metrics).unwrap_or_default()
    );
    if options.duration.is_none() {
        let _ = server.await;
    }
}
