//! A fleet on one machine: N demo replicas, a Prometheus server scraping them with the shipped
//! rules (`deploy/prometheus/rules.yml`), and load on every replica, so the fleet view (recording
//! rules, `/health` mirrored fleet-wide, burn-rate and canary alerts, the Grafana dashboard in
//! `deploy/grafana/`) can be watched on real data.
//!
//! ```text
//! apt-get install -y prometheus            # or: bash .ci/install
//! cargo run --release --example fleet      # 3 replicas, Prometheus on 127.0.0.1:9090
//! cargo run --release --example fleet -- --replicas 4 --canary --duration 600
//! ```
//!
//! Options: `--replicas N` (3), `--users N` per replica (10), `--fail-rate F` (0.02, injected
//! upstream failures on every replica), `--canary` (the last replica runs `service_version` v2
//! and meets upstream auth failures on 30% of its requests, while the others run v1),
//! `--prometheus-port P` (9090), `--duration SECONDS` (run until Ctrl-C without it). Replicas
//! listen on free loopback ports, printed at start; their endpoints are under
//! `/api/v1/monitoring`. Without a `prometheus` binary the replicas and the load still run.
//!
//! Every simulated answer reports prompt-cache reads and, on OpenAI and Gemini, reasoning
//! tokens (`x-sim-cached-tokens`, `x-sim-reasoning-tokens`), so the dashboard's cached input and
//! reasoning output share panel has lines to show: a cache-read share of 75% (36 cached of 48
//! prompt tokens) and a reasoning share of about a third (32 of 96 output tokens; an OpenAI
//! stream cut by an injected error reports no usage, so only its content is counted).

#[allow(dead_code)]
#[path = "demo/main.rs"]
pub mod demo;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tower_stream_monitor::Monitor;

const PREFIX: &str = "/api/v1/monitoring";
/// Prompt tokens read from the cache per request, beside the simulator's 12 uncached ones.
const CACHED_TOKENS: &str = "36";
/// Reasoning tokens per request, beside the simulator's 64 content tokens.
const REASONING_TOKENS: &str = "32";

struct Options {
    replicas: usize,
    users: usize,
    fail_rate: f64,
    canary: bool,
    prometheus_port: u16,
    duration: Option<Duration>,
}

fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut o = Options {
        replicas: 3,
        users: 10,
        fail_rate: 0.02,
        canary: false,
        prometheus_port: 9090,
        duration: None,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let number = |name: &str, v: String| {
            v.parse::<f64>()
                .map_err(|_| format!("{name}: not a number: {v}"))
        };
        match arg.as_str() {
            "--replicas" => o.replicas = number("--replicas", value("--replicas")?)? as usize,
            "--users" => o.users = number("--users", value("--users")?)? as usize,
            "--fail-rate" => o.fail_rate = number("--fail-rate", value("--fail-rate")?)?,
            "--prometheus-port" => {
                o.prometheus_port = number("--prometheus-port", value("--prometheus-port")?)? as u16
            }
            "--duration" => {
                o.duration = Some(Duration::from_secs_f64(number(
                    "--duration",
                    value("--duration")?,
                )?))
            }
            "--canary" => o.canary = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if o.replicas == 0 || o.replicas > 64 || o.users == 0 || !(0.0..=1.0).contains(&o.fail_rate) {
        return Err("--replicas 1..=64, --users >= 1, --fail-rate 0..=1".into());
    }
    Ok(o)
}

/// Writes a Prometheus config into `dir` (scrape and rule evaluation every `interval`, the
/// rules at `rules`, the replicas' monitoring endpoints as targets) and starts `prometheus` on
/// `port` with its data under `dir`, storing exemplars (each request's trace on the first-token,
/// duration and time-per-token buckets; README, Tracing). Also used by `tests/fleet.rs`.
pub fn spawn_prometheus(
    dir: &Path,
    replicas: &[SocketAddr],
    rules: &Path,
    interval: &str,
    port: u16,
) -> std::io::Result<Child> {
    std::fs::create_dir_all(dir)?;
    let targets: Vec<String> = replicas.iter().map(|a| format!("'{a}'")).collect();
    let config = format!(
        "global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n\
         rule_files: ['{rules}']\n\
         scrape_configs:\n  - job_name: stream-monitor-demo\n    metrics_path: {PREFIX}/metrics/prometheus\n    \
         static_configs:\n      - targets: [{targets}]\n",
        rules = rules.display(),
        targets = targets.join(", "),
    );
    std::fs::write(dir.join("prometheus.yml"), config)?;
    Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--enable-feature=exemplar-storage")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

#[tokio::main]
async fn main() {
    let options = match parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("fleet: {e}");
            std::process::exit(2);
        }
    };
    let mut replicas = Vec::new();
    for i in 0..options.replicas {
        let canary = options.canary && i + 1 == options.replicas;
        let version = if canary { "v2" } else { "v1" };
        let monitor = Monitor::builder()
            .prefix(PREFIX)
            .service_version(version)
            .build()
            .expect("valid settings");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let app = demo::app(&monitor);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        println!("replica {i} ({version}): http://{addr}{PREFIX}/health");
        replicas.push((addr, canary));
    }
    let addrs: Vec<SocketAddr> = replicas.iter().map(|(a, _)| *a).collect();
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/rules.yml");
    let dir = std::env::temp_dir().join(format!("stream-monitor-fleet-{}", std::process::id()));
    let mut prometheus = spawn_prometheus(&dir, &addrs, &rules, "5s", options.prometheus_port).ok();
    match &prometheus {
        Some(_) => println!(
            "prometheus: http://127.0.0.1:{}/alerts (rules: deploy/prometheus/rules.yml)",
            options.prometheus_port
        ),
        None => {
            println!("prometheus not found (apt-get install -y prometheus): replicas and load only")
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut loads = Vec::new();
    for (addr, canary) in replicas {
        let load = demo::load::LoadOptions {
            base: format!("http://{addr}"),
            users: options.users,
            duration: options.duration,
            requests_per_user: None,
            mix: demo::load::Mix::default(),
            fail_rate: options.fail_rate,
            headers: vec![
                ("x-sim-cached-tokens".into(), CACHED_TOKENS.into()),
                ("x-sim-reasoning-tokens".into(), REASONING_TOKENS.into()),
            ],
            slow_down: None,
        };
        let (stop, load) = (stop.clone(), load);
        loads.push(tokio::spawn(async move {
            if canary {
                // The canary's upstream also refuses its credentials: about 30% of its
                // requests. A refusal is answered at once, so these are paced to a share of the
                // clean requests' rate (a default simulated stream takes about 0.85 s).
                let clean_per_sec = load.users as f64 / 0.85;
                let every = Duration::from_secs_f64(1.0 / (clean_per_sec * 0.43));
                let base = load.base.clone();
                let auth_stop = stop.clone();
                let refused = tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    let mut tick = tokio::time::interval(every);
                    let mut n = 0;
                    while !auth_stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        let _ = client
                            .post(format!("{base}/v1/chat/completions"))
                            .header("x-sim-fail", "auth")
                            .json(&serde_json::json!({"model": "gpt-4o-mini", "stream": true}))
                            .send()
                            .await;
                        n += 1;
                    }
                    n
                });
                let served = demo::load::run(load, stop.clone(), |_| {}).await.len();
                stop.store(true, Ordering::Relaxed);
                served + refused.await.unwrap_or(0)
            } else {
                demo::load::run(load, stop, |_| {}).await.len()
            }
        }));
    }
    println!(
        "load running{}; Ctrl-C to stop",
        match options.duration {
            Some(d) => format!(" for {} s", d.as_secs()),
            None => String::new(),
        }
    );
    let all_done = async {
        let mut total = 0;
        for load in loads {
            total += load.await.unwrap_or(0);
        }
        total
    };
    let total = tokio::select! {
        total = all_done => total,
        _ = tokio::signal::ctrl_c() => {
            stop.store(true, Ordering::Relaxed);
            0
        }
    };
    if total > 0 {
        println!("{total} requests");
    }
    if let Some(child) = prometheus.as_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
}
