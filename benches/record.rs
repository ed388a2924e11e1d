//! Recording a finished stream (1 and 2 threads), rendering `/metrics` with 10 providers,
//! Prometheus text with 64 label sets, and `/metrics/history` and the dashboard's data (its five
//! requests, error records present) with 64 label sets. Targets (README, Performance): `/metrics` JSON render <= 1 ms; history and the
//! dashboard's data <= 50 ms; recording must not serialise cores on one lock.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use tower_stream_monitor::errors::ErrorQuery;
use tower_stream_monitor::window::ManualClock;
use tower_stream_monitor::{Monitor, Outcome, StreamRecord};

fn record(provider: &str, model: &str, i: u64) -> StreamRecord {
    let mut r = StreamRecord::new(provider, model, "/v1/chat/completions", Outcome::Ok);
    r.streaming = true;
    r.time_to_first_byte = Some(Duration::from_micros(150_000 + (i % 97) * 1_000));
    r.time_to_first_token = Some(Duration::from_micros(200_000 + (i % 89) * 1_000));
    r.duration = Duration::from_millis(1_250 + i % 300);
    r.output_tokens = 64 + i % 50;
    r.input_tokens = Some(24);
    r.tokens_per_second = Some(60.0 + (i % 30) as f64);
    r.time_per_output_token = Some(Duration::from_micros(16_000 + (i % 40) * 100));
    r.max_inter_token_gap = Some(Duration::from_millis(30 + i % 20));
    r.bytes = 20_000;
    r
}

/// The time `threads` threads, started together, each take to ingest `iters` copies of
/// `template` into `monitor`: the slowest thread's.
fn recording_threads(
    monitor: &Monitor,
    template: &StreamRecord,
    threads: usize,
    iters: u64,
) -> Duration {
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        monitor.ingest(black_box(template.clone()));
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .max()
            .unwrap()
    })
}

fn bench_record(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    let template = record("openai", "gpt-4o-mini", 7);
    // With the facade on and no recorder installed: the cost of building its keys.
    let with_facade = Monitor::builder().build().unwrap();
    group.bench_function("1_thread_with_noop_facade", |b| {
        b.iter(|| with_facade.ingest(black_box(template.clone())))
    });
    let monitor = Monitor::builder().metrics_facade(false).build().unwrap();
    group.bench_function("1_thread", |b| {
        b.iter(|| monitor.ingest(black_box(template.clone())))
    });
    // One and two threads recording at once, each spawned and timed alike: the time per record
    // as each thread sees it (the slower of the two), so the two figures differ only by the
    // second thread.
    for (name, threads) in [("1_thread_spawned", 1), ("2_threads", 2)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| recording_threads(&monitor, &template, threads, iters))
        });
    }
    // Spend per user: the same user each time, or a new one each time once the table is full
    // (a client choosing ids): Space-Saving evicts the least-spending user, found at the root
    // of a heap rather than by a scan of the table.
    let users = Monitor::builder()
        .metrics_facade(false)
        .top_users(20)
        .build()
        .unwrap();
    let mut n = 0u64;
    for (name, new_each_time) in [("same_user", false), ("new_user_each_record", true)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut r = template.clone();
                n += u64::from(new_each_time);
                r.user_id = Some(format!("user-{n}").into());
                users.ingest(black_box(r))
            })
        });
    }
    group.finish();
}

/// A monitor holding an hour of traffic: 10 providers, a record every 100 ms of clock time.
fn busy_monitor(providers: usize, models: usize) -> Monitor {
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let monitor = Monitor::builder().clock(clock.clone()).build().unwrap();
    let providers: Vec<String> = (0..providers).map(|i| format!("provider-{i}")).collect();
    let models: Vec<String> = (0..models).map(|i| format!("model-{i}")).collect();
    for i in 0..36_000u64 {
        let p = &providers[i as usize % providers.len()];
        let m = &models[(i as usize / providers.len()) % models.len()];
        monitor.ingest(record(p, m, i));
        clock.advance(Duration::from_millis(100));
    }
    monitor
}

fn bench_render(c: &mut Criterion) {
    let mut group = c.benchmark_group("render");
    let monitor = busy_monitor(10, 1);
    group.bench_function("metrics_json_10_providers", |b| {
        b.iter(|| black_box(serde_json::to_vec(&monitor.snapshot()).unwrap()))
    });
    let monitor = busy_monitor(8, 8);
    group.bench_function("prometheus_64_label_sets", |b| {
        b.iter(|| black_box(monitor.render_prometheus()))
    });
    // 64 label sets over 64 providers: the worst case of the history's per-provider series.
    let monitor = busy_monitor(64, 1);
    group.bench_function("history_json_64_providers", |b| {
        b.iter(|| black_box(serde_json::to_vec(&monitor.history()).unwrap()))
    });
    // Error records for the page's error list and groups: 2,000 records over four callsites.
    {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry().with(monitor.error_layer());
        let _guard = tracing::subscriber::set_default(subscriber);
        for i in 0..500u64 {
            tracing::error!(target: "app::upstream", provider = "openai", attempt = i, "upstream failed: 502 Bad Gateway");
            tracing::error!(target: "app::upstream", provider = "anthropic", "stream cut after {i} events");
            tracing::warn!(target: "app::retry", delay_ms = i % 300, "retrying");
            tracing::warn!(target: "app::budget", user = "u-17", "budget at {}%", 80 + i % 20);
        }
    }
    let errors = ErrorQuery {
        limit: 20,
        ..ErrorQuery::default()
    };
    assert!(
        monitor.errors(&errors).errors.len() == 20,
        "error records are stored"
    );
    // One dashboard refresh: its five data requests.
    group.bench_function("dashboard_refresh_64_providers", |b| {
        b.iter(|| {
            black_box(serde_json::to_vec(&monitor.snapshot()).unwrap());
            black_box(serde_json::to_vec(&monitor.health()).unwrap());
            black_box(serde_json::to_vec(&monitor.history()).unwrap());
            black_box(serde_json::to_vec(&monitor.errors(&errors)).unwrap());
            black_box(serde_json::to_vec(&monitor.error_summary()).unwrap());
        })
    });
    group.finish();
}

criterion_group!(benches, bench_record, bench_render);
criterion_main!(benches);
