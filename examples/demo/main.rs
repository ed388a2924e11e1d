//! The demo: an axum server with simulated LLM providers (OpenAI chat and Responses, Anthropic
//! Messages, Gemini), monitored by both layers of tower-stream-monitor. No keys, no network.
//!
//! ```text
//! cargo run --release --example demo                              # serve on 127.0.0.1:3000
//! cargo run --release --example demo -- --addr 127.0.0.1:8080
//! cargo run --release --example demo -- --load 100 --duration 20  # drive load, report, exit
//! cargo run --release --example demo -- --load 20                 # drive load and keep serving
//! cargo run --release --example demo -- --load 40 --duration 110 --slow-down openai=800@70
//!                                                                 # an anomaly caught mid-run
//! STREAMING_TIMEOUT=2 cargo run --release --example demo          # cut streams at 2 s
//! ```
//!
//! Options: `--addr HOST:PORT`, `--load N`, `--duration SECONDS`,
//! `--mix openai=50,anthropic=30,gemini=20`, `--fail-rate 0.02`, `--slow-down PROVIDER=MS@SECONDS`
//! (from SECONDS into the run, PROVIDER's first token comes after MS; anomalies are then judged
//! on 10 s slots, so one shows within the run). The monitor is configured from
//! the environment (`STREAMING_TIMEOUT`, `MONITOR_PREFIX`, `MONITOR_TOKEN`,
//! `MONITOR_MIN_SAMPLES`); its endpoints are under `/api/v1/monitoring`. Listening beyond
//! loopback without `MONITOR_TOKEN` prints a warning: those endpoints would be open to anyone.

pub mod load;
pub mod sim;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use tower_stream_monitor::predict::{AnomalyDetection, AnomalySlot};
use tower_stream_monitor::{Monitor, Outcome};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use load::{LoadOptions, Mix, Sample, SlowDown};

/// The demo's command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub addr: String,
    pub load: Option<usize>,
    pub duration: Option<Duration>,
    pub mix: Mix,
    pub fail_rate: f64,
    /// An OTLP/HTTP collector to push the GenAI metrics to (feature `otlp`).
    pub otlp: Option<String>,
    /// One provider made slower mid-run, to show an anomaly being caught.
    pub slow_down: Option<SlowDown>,
}

impl Options {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut o = Options {
            addr: "127.0.0.1:3000".into(),
            load: None,
            duration: None,
            mix: Mix::default(),
            fail_rate: 0.0,
            otlp: None,
            slow_down: None,
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
                "--slow-down" => o.slow_down = Some(SlowDown::parse(&value("--slow-down")?)?),
                "--fail-rate" => {
                    let r: f64 = value("--fail-rate")?
                        .parse()
                        .map_err(|_| "--fail-rate must be a fraction")?;
                    if !(0.0..=1.0).contains(&r) {
                        return Err("--fail-rate must be from 0 to 1".into());
                    }
                    o.fail_rate = r;
                }
                "--otlp" => {
                    let url = value("--otlp")?;
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(
                            "--otlp must be an http(s) URL, e.g. http://localhost:4318".into()
                        );
                    }
                    o.otlp = Some(url);
                }
                "-h" | "--help" => return Err(USAGE.into()),
                other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
            }
        }
        if o.duration.is_some() && o.load.is_none() {
            return Err("--duration goes with --load".into());
        }
        if o.slow_down.is_some() && o.load.is_none() {
            return Err("--slow-down goes with --load".into());
        }
        Ok(o)
    }
}

const USAGE: &str = "usage: demo [--addr HOST:PORT] [--otlp URL] [--load USERS [--duration SECONDS] [--mix openai=50,anthropic=30,gemini=20] [--fail-rate 0.02] [--slow-down openai=800@70]]";

/// Pushes the GenAI metrics to an OTLP collector, flushed when the demo stops.
#[cfg(feature = "otlp")]
pub type Export = Option<tower_stream_monitor::otlp::OtlpExporter>;
/// Built without the `otlp` feature: nothing to push.
#[cfg(not(feature = "otlp"))]
pub type Export = ();

/// The demo's monitor: from the environment, endpoints under `/api/v1/monitoring` by default,
/// pushing to the `--otlp` collector if one is given; with `quick_anomalies`
/// (`--slow-down`), anomalies are judged on 10 s slots from a baseline of 6 (a minute), so a
/// demo run shows one within two minutes, where a service's defaults need over ten.
pub fn monitor_with(
    otlp: Option<&str>,
    quick_anomalies: bool,
) -> Result<(Monitor, Export), String> {
    let mut builder = Monitor::builder()
        .prefix("/api/v1/monitoring")
        .with_env()
        .map_err(|e| e.to_string())?;
    if quick_anomalies {
        builder = builder.anomaly_detection(
            AnomalyDetection::default()
                .slot(AnomalySlot::TenSeconds)
                .min_baseline_slots(6),
        );
    }
    #[cfg(feature = "otlp")]
    {
        let exporter = otlp
            .map(|url| tower_stream_monitor::otlp::OtlpExporter::new(url, None))
            .transpose()
            .map_err(|e| e.to_string())?;
        let builder = match &exporter {
            Some(e) => builder.otlp(e.clone()),
            None => builder,
        };
        Ok((builder.build().map_err(|e| e.to_string())?, exporter))
    }
    #[cfg(not(feature = "otlp"))]
    {
        if otlp.is_some() {
            return Err("--otlp needs the `otlp` feature: cargo run --example demo --features otlp -- --otlp URL".into());
        }
        Ok((builder.build().map_err(|e| e.to_string())?, ()))
    }
}

/// Sends what the OTLP export holds (at the demo's end).
fn flush(export: &Export) {
    #[cfg(feature = "otlp")]
    if let Some(exporter) = export {
        if let Err(error) = exporter.shutdown() {
            eprintln!("demo: {error}");
        }
    }
    #[cfg(not(feature = "otlp"))]
    let () = export;
}

/// The simulated providers behind layer 1.
pub fn app(monitor: &Monitor) -> Router {
    sim::routes().layer(monitor.layer())
}

/// Serves the demo on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, monitor: Monitor) -> std::io::Result<()> {
    axum::serve(listener, app(&monitor)).await
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The warning printed when the demo listens beyond loopback while its monitoring endpoints have
/// no token: they serve metrics and the error log (user ids, error text) to whoever connects.
pub fn exposure_warning(addr: &SocketAddr, prefix: &str, token_set: bool) -> Option<String> {
    if token_set || addr.ip().to_canonical().is_loopback() {
        return None;
    }
    Some(format!(
        "warning: listening on {addr}, beyond loopback, and MONITOR_TOKEN is not set: the \
         monitoring endpoints under {prefix} (metrics, and the error log with user ids and error \
         text) are open to anyone who can reach this address. Set MONITOR_TOKEN=<secret> to \
         demand `Authorization: Bearer <secret>` on them (all but {prefix}/health), or listen on \
         127.0.0.1."
    ))
}

/// The load run a report describes.
#[derive(Debug, Clone)]
pub struct Run {
    pub users: usize,
    /// When the load began, on the wall clock the samples' `finished` is read from.
    pub started: SystemTime,
    pub elapsed: Duration,
    /// CPU time (user + system) this process used over the run, where it can be read.
    pub cpu: Option<Duration>,
}

/// User plus system CPU time this process has used, from `/proc/self/stat`.
#[cfg(target_os = "linux")]
pub fn process_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces or parentheses: count from after its ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    // utime and stime (fields 14 and 15), in clock ticks: sysconf(_SC_CLK_TCK) is 100 on every
    // Linux architecture in use, and this example has no libc binding to ask.
    let ticks = ticks(11)?.checked_add(ticks(12)?)?;
    Some(Duration::from_millis(ticks.saturating_mul(10)))
}

/// Not readable here.
#[cfg(not(target_os = "linux"))]
pub fn process_cpu_time() -> Option<Duration> {
    None
}

/// The monitor's window time, read from a `/metrics` snapshot, to tell which of the client's
/// samples a window holds. The monitor places a request at a whole "window second": the Unix
/// second it was built at plus whole seconds of monotonic time since. A window is a ring of whole
/// slots on that scale (5 min: 30 of 10 s; 1 hour: 60 of 1 min), so it begins at a slot boundary
/// and covers up to one slot less than its name says.
#[derive(Debug, Clone, Copy)]
struct WindowClock {
    /// The wall-clock time the monitor was built at.
    built: SystemTime,
    /// The window second at `built`.
    origin: u64,
    /// The window second of the snapshot.
    now: u64,
}

impl WindowClock {
    fn from_metrics(metrics: &serde_json::Value) -> Option<Self> {
        let at = humantime::parse_rfc3339_weak(metrics["timestamp"].as_str()?).ok()?;
        let uptime = Duration::try_from_secs_f64(metrics["uptime_seconds"].as_f64()?).ok()?;
        let built = at.checked_sub(uptime)?;
        let origin = built.duration_since(UNIX_EPOCH).ok()?.as_secs();
        Some(Self {
            built,
            origin,
            now: origin + uptime.as_secs(),
        })
    }

    fn second_of(&self, t: SystemTime) -> u64 {
        self.origin + t.duration_since(self.built).map_or(0, |d| d.as_secs())
    }

    /// The first second inside a window of `slots` slots of `slot_secs` seconds.
    fn window_start(&self, slot_secs: u64, slots: u64) -> u64 {
        (self.now / slot_secs).saturating_sub(slots - 1) * slot_secs
    }
}

/// The client's samples the latency and token rows compare, and the monitor window they are
/// compared with: the 5-minute window if the whole run lies in it, else the hour if the run lies
/// in that, else the 5-minute window beside the client's requests that ended inside it.
#[derive(Debug)]
pub struct Population<'a> {
    /// The window's key in `/metrics` (`streaming_5min`, `streaming_1hour`).
    pub window: &'static str,
    pub samples: Vec<&'a Sample>,
    /// What the rows compare, for the report.
    pub label: String,
}

pub fn population<'a>(
    samples: &'a [Sample],
    started: SystemTime,
    metrics: &serde_json::Value,
) -> Population<'a> {
    let Some(clock) = WindowClock::from_metrics(metrics) else {
        return Population {
            window: "streaming_5min",
            samples: samples.iter().collect(),
            label: "whole run; monitor: 5-min window".into(),
        };
    };
    let first = clock.second_of(started);
    let five = clock.window_start(10, 30);
    let hour = clock.window_start(60, 60);
    let (window, name, start) = if first < five && first >= hour {
        ("streaming_1hour", "1-hour", hour)
    } else {
        ("streaming_5min", "5-min", five)
    };
    let held: Vec<&Sample> = samples
        .iter()
        .filter(|s| clock.second_of(s.finished) >= start)
        .collect();
    let label = if held.len() == samples.len() {
        format!("whole run; monitor: {name} window")
    } else {
        format!(
            "requests that ended in the last {} s; monitor: {name} window",
            clock.now + 1 - start
        )
    };
    Population {
        window,
        samples: held,
        label,
    }
}

/// Whether the client counts a request as failed.
fn failed(s: &Sample) -> bool {
    s.status != 200 || s.transport_error || s.stream_error || s.injected.is_some()
}

/// The report: what the load saw beside what the monitor says, each row over one population.
/// Counts compare the whole run with the monitor's counts since it was built (the demo builds it
/// just before the load); latencies and tokens compare the requests a window holds with that
/// window, as the monitor keeps no quantiles beyond its windows.
pub fn report(
    samples: &[Sample],
    run: &Run,
    metrics: &serde_json::Value,
    recorded: &[(Outcome, u64)],
) -> String {
    use std::fmt::Write;
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let secs = run.elapsed.as_secs_f64().max(1e-9);
    let mut out = String::new();
    let row = |out: &mut String, name: &str, client: f64, monitor: f64, decimals: usize| {
        let _ = writeln!(
            out,
            "{name:<28}{client:>14.decimals$}{monitor:>14.decimals$}"
        );
    };
    let _ = writeln!(
        out,
        "\n{} requests from {} users in {:.1} s ({:.1}/s)",
        samples.len(),
        run.users,
        secs,
        samples.len() as f64 / secs
    );
    let _ = writeln!(out, "{:<28}{:>14}{:>14}", "", "load (client)", "monitor");

    let _ = writeln!(out, "counts: whole run; monitor: since it started");
    let total: u64 = recorded.iter().map(|(_, n)| n).sum();
    let errors: u64 = recorded
        .iter()
        .filter(|(o, _)| !matches!(o, Outcome::Ok | Outcome::Cancelled))
        .map(|(_, n)| n)
        .sum();
    let client_failed = samples.iter().filter(|s| failed(s)).count();
    row(
        &mut out,
        "  requests",
        samples.len() as f64,
        total as f64,
        0,
    );
    row(
        &mut out,
        "  failed / errors",
        client_failed as f64,
        errors as f64,
        0,
    );
    row(
        &mut out,
        "  error rate (%)",
        client_failed as f64 * 100.0 / samples.len().max(1) as f64,
        errors as f64 * 100.0 / total.max(1) as f64,
        1,
    );

    let held = population(samples, run.started, metrics);
    let w = &metrics[held.window];
    let _ = writeln!(out, "TTFT, tokens: {}", held.label);
    let mut ttft: Vec<f64> = held.samples.iter().filter_map(|s| s.ttft).map(ms).collect();
    let mut tps: Vec<f64> = held
        .samples
        .iter()
        .filter_map(|s| s.tokens_per_second)
        .collect();
    let avg_tps = tps.iter().sum::<f64>() / tps.len().max(1) as f64;
    row(
        &mut out,
        "  requests",
        held.samples.len() as f64,
        f(&w["total_streaming_requests"]),
        0,
    );
    for (name, q, key) in [
        ("  TTFT p50 (ms)", 0.50, "first_token_p50_ms"),
        ("  TTFT p95 (ms)", 0.95, "first_token_p95_ms"),
        ("  TTFT p99 (ms)", 0.99, "first_token_p99_ms"),
    ] {
        row(&mut out, name, load::quantile(&mut ttft, q), f(&w[key]), 1);
    }
    row(
        &mut out,
        "  tokens/s (mean per stream)",
        avg_tps,
        f(&w["avg_tokens_per_second"]),
        1,
    );
    // What the tokens/s check reads (README, Health and rollback triggers).
    row(
        &mut out,
        "  tokens/s (median stream)",
        load::quantile(&mut tps, 0.50),
        f(&w["tokens_per_second_p50"]),
        1,
    );
    row(
        &mut out,
        "  output tokens",
        held.samples.iter().map(|s| s.tokens).sum::<u64>() as f64,
        f(&w["total_tokens"]),
        0,
    );
    // Cost beside tokens: the monitor prices each stream from its usage and the price table.
    let _ = writeln!(
        out,
        "  {:<26}{:>14}{:>14.6}",
        "cost (USD)",
        "",
        f(&w["cost_usd"])
    );
    if f(&w["unpriced_requests"]) > 0.0 {
        let _ = writeln!(
            out,
            "  {:<26}{:>14}{:>14}",
            "unpriced streams",
            "",
            f(&w["unpriced_requests"])
        );
    }

    let _ = writeln!(out, "\nby outcome (monitor, since it started):");
    for (o, n) in recorded {
        if *n > 0 {
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
    let cpu = run.cpu.map_or_else(
        || "n/a".to_owned(),
        |c| format!("{:.1}% of one core", c.as_secs_f64() * 100.0 / secs),
    );
    let _ = writeln!(
        out,
        "demo process (server and load clients): CPU over the run {cpu}, {:.1} MB RSS now; health: {}",
        f(&metrics["current_system"]["memory_mb"]),
        metrics["health_status"].as_str().unwrap_or("?")
    );
    out
}

/// The capacity figures of a run, the client's beside the monitor's (README, Capacity). Little's
/// law: in flight (time-averaged) = arrivals per second × mean duration.
#[derive(Debug, Clone, PartialEq)]
pub struct Capacity {
    /// Time-averaged requests in flight over the run: the client's from its own send-to-end
    /// times, the monitor's from its history (`avg_in_flight` of each slot).
    pub client_in_flight: f64,
    pub monitor_in_flight: f64,
    /// The most in flight at once: the client's users (a closed loop), the monitor's sampled
    /// peak (`peak_in_flight`).
    pub client_peak: usize,
    pub monitor_peak: u64,
    /// Requests per second over the run.
    pub client_arrivals: f64,
    pub monitor_arrivals: f64,
    /// Mean request duration, seconds.
    pub client_duration: f64,
    pub monitor_duration: f64,
}

/// The run's capacity figures, from the client's samples and the monitor's `/metrics/history`
/// (the 5-minute series for a run that fits in it, else the hour), summed over every slot: the
/// demo's monitor sees only the load.
pub fn capacity(samples: &[Sample], run: &Run, history: &serde_json::Value) -> Option<Capacity> {
    let secs = run.elapsed.as_secs_f64();
    if samples.is_empty() || secs <= 0.0 {
        return None;
    }
    let series = if secs <= 280.0 {
        &history["five_minutes"]
    } else {
        &history["one_hour"]
    };
    let slot = series["slot_seconds"].as_f64()?;
    let points = series["points"].as_array()?;
    // A run longer than the hour: the monitor's figures cover its last hour only, and so do
    // the client's below.
    let span = secs.min(points.len() as f64 * slot);
    let end = run.started + run.elapsed;
    let samples: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            end.duration_since(s.finished)
                .is_ok_and(|ago| ago.as_secs_f64() <= span)
                || s.finished >= end
        })
        .collect();
    if samples.is_empty() {
        return None;
    }
    let secs = span;
    let f = |p: &serde_json::Value, k: &str| p[k].as_f64().unwrap_or(0.0);
    let busy: f64 = points.iter().map(|p| f(p, "avg_in_flight") * slot).sum();
    let arrivals: f64 = points
        .iter()
        .map(|p| f(p, "arrival_rate_per_second") * slot)
        .sum();
    let streams: f64 = points
        .iter()
        .map(|p| f(p, "total_streaming_requests"))
        .sum();
    let duration_ms: f64 = points
        .iter()
        .map(|p| f(p, "avg_duration_ms") * f(p, "total_streaming_requests"))
        .sum();
    let peak = points
        .iter()
        .filter_map(|p| p["peak_in_flight"].as_u64())
        .max()
        .unwrap_or(0);
    let client_busy: f64 = samples.iter().map(|s| s.duration.as_secs_f64()).sum();
    Some(Capacity {
        client_in_flight: client_busy / secs,
        monitor_in_flight: busy / secs,
        client_peak: run.users,
        monitor_peak: peak,
        client_arrivals: samples.len() as f64 / secs,
        monitor_arrivals: arrivals / secs,
        client_duration: client_busy / samples.len() as f64,
        monitor_duration: duration_ms / 1000.0 / streams.max(1.0),
    })
}

impl std::fmt::Display for Capacity {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let row = |out: &mut std::fmt::Formatter<'_>, name: &str, c: f64, m: f64, d: usize| {
            writeln!(out, "{name:<28}{c:>14.d$}{m:>14.d$}")
        };
        writeln!(
            out,
            "capacity: whole run, or its last hour (Little's law: in flight = arrivals/s x mean duration)"
        )?;
        writeln!(out, "{:<28}{:>14}{:>14}", "", "load (client)", "monitor")?;
        row(
            out,
            "  in flight (time-averaged)",
            self.client_in_flight,
            self.monitor_in_flight,
            1,
        )?;
        row(
            out,
            "  in flight (peak)",
            self.client_peak as f64,
            self.monitor_peak as f64,
            0,
        )?;
        row(
            out,
            "  arrivals (/s)",
            self.client_arrivals,
            self.monitor_arrivals,
            1,
        )?;
        row(
            out,
            "  mean duration (s)",
            self.client_duration,
            self.monitor_duration,
            3,
        )?;
        row(
            out,
            "  arrivals x mean duration",
            self.client_arrivals * self.client_duration,
            self.monitor_arrivals * self.monitor_duration,
            1,
        )
    }
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
    let (monitor, export) = match monitor_with(options.otlp.as_deref(), options.slow_down.is_some())
    {
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
    // The monitor's token comes from MONITOR_TOKEN (monitor_with); set, it is valid, or the
    // monitor would not have been built.
    let token_set = std::env::var_os("MONITOR_TOKEN").is_some();
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
    println!("  dashboard:  {base}{prefix}/dashboard");
    println!("  stream timeout: {:?}", monitor.stream_timeout());
    println!(
        "  try: curl -N {base}/v1/chat/completions -H 'x-sim-tokens: 20' -d '{{\"model\":\"gpt-4o-mini\",\"stream\":true,\"stream_options\":{{\"include_usage\":true}}}}'"
    );
    if let Some(warning) = exposure_warning(&addr, monitor.prefix(), token_set) {
        eprintln!("\n{warning}\n");
        tracing::warn!(
            %addr,
            prefix = monitor.prefix(),
            "monitoring endpoints open beyond loopback: MONITOR_TOKEN is not set"
        );
    }
    if let Some(url) = &options.otlp {
        println!("  OTLP: pushing the GenAI metrics to {url} (flushed on Ctrl-C)");
    }
    let server = tokio::spawn(serve(listener, monitor.clone()));

    let Some(users) = options.load else {
        tokio::select! {
            result = server => {
                if let Ok(Err(error)) = result {
                    eprintln!("demo: server error: {error}");
                }
            }
            _ = tokio::signal::ctrl_c() => {}
        }
        tokio::task::spawn_blocking(move || flush(&export))
            .await
            .ok();
        return;
    };

    // Ctrl-C ends the load (without --duration, the only end): the report still prints and
    // the OTLP export is still flushed.
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.store(true, Ordering::Relaxed);
            }
        });
    }
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
        slow_down: options.slow_down,
    };
    let started = std::time::Instant::now();
    let started_at = SystemTime::now();
    let cpu_before = process_cpu_time();
    let load = tokio::spawn(load::run(load_options, stop.clone(), move |s| {
        seen.0.fetch_add(1, Ordering::Relaxed);
        if failed(s) {
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
    // With --slow-down, judge health each second (as a scrape or a dashboard would) and print
    // each change of anomalies as it comes; the crate also logs it as a WARN event.
    let anomaly_log: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let watcher = options.slow_down.map(|slow| {
        let (monitor, log, bar) = (monitor.clone(), anomaly_log.clone(), bar.clone());
        println!(
            "{} will answer its first token after {} ms from {:.0} s on; anomalies are judged on 10 s slots",
            slow.provider.name(),
            slow.ttft_ms,
            slow.after.as_secs_f64()
        );
        tokio::spawn(async move {
            let mut last: Vec<String> = Vec::new();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let report = monitor.health();
                let now: Vec<String> = report
                    .anomalies
                    .iter()
                    .filter(|a| a.anomalous)
                    .map(|a| {
                        format!(
                            "{} at {:.0} (usual {:.0}, score {:.1})",
                            a.name(),
                            a.value,
                            a.baseline_median,
                            a.score
                        )
                    })
                    .collect();
                let names = |v: &[String]| -> Vec<String> {
                    v.iter().filter_map(|l| l.split(' ').next()).map(str::to_owned).collect()
                };
                if names(&now) != names(&last) {
                    let line = format!(
                        "[{:>5.1} s] anomalies: {} (health {})",
                        started.elapsed().as_secs_f64(),
                        if now.is_empty() { "none".to_owned() } else { now.join("; ") },
                        report.status.as_str()
                    );
                    // Above the bar, and printed even when stdout is no terminal (the bar is
                    // hidden then, and `println` on it would drop the line).
                    bar.suspend(|| println!("{line}"));
                    log.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                    last = now;
                }
            }
        })
    });
    let samples = load.await.unwrap_or_default();
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    let run = Run {
        users,
        started: started_at,
        elapsed: started.elapsed(),
        cpu: process_cpu_time()
            .zip(cpu_before)
            .and_then(|(after, before)| after.checked_sub(before)),
    };
    ticker.abort();
    bar.finish_and_clear();
    // A client can see a body end a moment before the monitor has recorded it: wait (briefly)
    // so the counts are complete.
    let settle = std::time::Instant::now();
    while monitor.in_flight() > 0 && settle.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let metrics = fetch_metrics(&base, &monitor).await;
    let recorded: Vec<(Outcome, u64)> = Outcome::ALL
        .iter()
        .map(|&o| (o, monitor.recorded(o)))
        .collect();
    println!("{}", report(&samples, &run, &metrics, &recorded));
    let history = serde_json::to_value(monitor.history()).unwrap_or_default();
    if let Some(capacity) = capacity(&samples, &run, &history) {
        println!("{capacity}");
    }
    let anomaly_log = std::mem::take(&mut *anomaly_log.lock().unwrap_or_else(|p| p.into_inner()));
    if !anomaly_log.is_empty() {
        println!(
            "anomalies as they were judged:\n  {}\n",
            anomaly_log.join("\n  ")
        );
    }
    println!(
        "GET {prefix}/metrics:\n{}",
        serde_json::to_string_pretty(&metrics).unwrap_or_default()
    );
    server.abort();
    tokio::task::spawn_blocking(move || flush(&export))
        .await
        .ok();
}
