//! Soak: the demo server under mixed traffic from many clients for a while: real streams,
//! client cancels, upstream failures, garbage bodies, random paths and methods with junk label
//! headers. The demo's providers name themselves and random paths take no labels, so the junk
//! headers are never read: the header budgets are checked by `tests/trust.rs`, not here.
//! Prints requests answered vs recorded, RSS before the traffic, after its first tenth (warm)
//! and at its end (growth past warm-up is what a leak would show), and what one scrape costs.
//!
//! ```text
//! cargo run --release --example soak                           # 60 s, 200 clients
//! cargo run --release --example soak -- --duration 10 --clients 50
//! ```
//!
//! Everything runs on 127.0.0.1 and stops by itself.

#[allow(dead_code)]
#[path = "demo/main.rs"]
mod demo;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use demo::load::Rng;
use tower_stream_monitor::{Monitor, Outcome};

const PREFIX: &str = "/api/v1/monitoring";

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// One client request; returns whether the monitor measures it (the endpoints are not).
async fn one(client: &reqwest::Client, base: &str, rng: &mut Rng) -> bool {
    let n = rng.next_u64();
    let chat = format!("{base}/v1/chat/completions");
    let stream_body =
        r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let quick = |r: reqwest::RequestBuilder| {
        r.header("x-sim-ttft-ms", "5")
            .header("x-sim-token-interval-ms", "1")
            .header("x-sim-tokens", "8")
    };
    let (req, cancel) = match rng.below(10) {
        // A real stream, read to its end.
        0..=3 => (quick(client.post(&chat)).body(stream_body), false),
        // A client that goes away after the first bytes.
        4 => (quick(client.post(&chat)).body(stream_body), true),
        // An upstream failure.
        5 => {
            let fail = ["auth", "rate_limit", "timeout", "server", "stream_error"][n as usize % 5];
            (
                quick(client.post(&chat))
                    .header("x-sim-fail", fail)
                    .body(stream_body),
                false,
            )
        }
        // Garbage bodies.
        6 => (client.post(&chat).body(&b"\xff\xfe{not json"[..]), false),
        // Random paths and methods with junk label headers.
        7 | 8 => {
            let method = [
                reqwest::Method::GET,
                reqwest::Method::DELETE,
                reqwest::Method::PUT,
            ][n as usize % 3]
                .clone();
            (
                client
                    .request(method, format!("{base}/x/{n:x}?q={n}"))
                    .header("x-llm-provider", format!("p{n}"))
                    .header("x-llm-model", format!("m{}", n >> 7))
                    .header("accept", "text/event-stream"),
                false,
            )
        }
        // A monitoring read (not measured).
        _ => {
            let res = client.get(format!("{base}{PREFIX}/health")).send().await;
            if let Ok(res) = res {
                let _ = res.bytes().await;
            }
            return false;
        }
    };
    match req.send().await {
        Ok(mut res) => {
            if cancel {
                let _ = res.chunk().await;
                drop(res);
            } else {
                let _ = res.bytes().await;
            }
        }
        Err(e) => {
            // Not counted: whether the server saw it cannot be told from here.
            eprintln!("request failed: {e}");
            return false;
        }
    }
    true
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut duration = Duration::from_secs(60);
    let mut clients = 200usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or("every option takes a value")?;
        match arg.as_str() {
            "--duration" => {
                duration = Duration::try_from_secs_f64(value.parse()?)
                    .map_err(|_| format!("--duration {value}: a number of seconds, 0 or more"))?
            }
            "--clients" => clients = value.parse()?,
            _ => return Err(format!("unknown option {arg}").into()),
        }
    }
    let monitor = Monitor::builder().prefix(PREFIX).build()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(demo::serve(listener, monitor.clone()));
    let base = format!("http://{addr}");
    let rss_start = rss_mb();
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let warm = tokio::spawn(async move {
        tokio::time::sleep(duration / 10).await;
        rss_mb()
    });
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (base, sent) = (base.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut rng =
                Rng(0x9E37_79B9_7F4A_7C15 ^ (c as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407));
            while started.elapsed() < duration {
                if one(&client, &base, &mut rng).await {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    // Let the server finish recording what the clients dropped.
    let deadline = Instant::now() + Duration::from_secs(10);
    while monitor.in_flight() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recorded: u64 = Outcome::ALL.iter().map(|o| monitor.recorded(*o)).sum();
    let sent = sent.load(Ordering::Relaxed);
    let scrape_started = Instant::now();
    let scrape = monitor.render_prometheus();
    let scrape_time = scrape_started.elapsed();
    let series = scrape
        .lines()
        .filter(|l| l.starts_with("stream_monitor_response_bytes_count{"))
        .count();
    println!(
        "soak: {clients} clients for {:.0} s",
        duration.as_secs_f64()
    );
    println!("  requests answered (measured):    {sent}");
    println!(
        "  requests recorded:               {recorded}  (in flight: {})",
        monitor.in_flight()
    );
    for o in Outcome::ALL {
        println!("    {:<13} {}", o.as_str(), monitor.recorded(o));
    }
    println!("  unrouted (counted apart):        {}", monitor.unrouted());
    println!(
        "  label overflows:                 {}",
        monitor.label_overflows()
    );
    println!(
        "  RSS: {rss_start:.1} MB at start, {:.1} MB warm (after a tenth), {:.1} MB at end",
        warm.await?,
        rss_mb()
    );
    println!(
        "  one scrape: {} bytes, {} lines, {series} label sets, {:.2} ms",
        scrape.len(),
        scrape.lines().count(),
        scrape_time.as_secs_f64() * 1000.0
    );
    println!("  health: {}", monitor.health().status);
    if sent != recorded {
        return Err(format!("{sent} sent but {recorded} recorded").into());
    }
    Ok(())
}
