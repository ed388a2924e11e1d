//! Cost of the error layer: a disabled `debug!` with and without it installed (target: no
//! measurable difference), and one recorded `error!`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tower_stream_monitor::Monitor;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

fn fmt_layer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::sink)
        .with_filter(LevelFilter::INFO)
}

fn bench_error_layer(c: &mut Criterion) {
    let mut group = c.benchmark_group("error_layer");
    let monitor = Monitor::builder().build().unwrap();

    let without = tracing_subscriber::registry().with(fmt_layer());
    tracing::subscriber::with_default(without, || {
        group.bench_function("disabled_debug/fmt_only", |b| {
            b.iter(|| tracing::debug!(value = black_box(7), "not recorded"))
        });
    });
    let with = tracing_subscriber::registry()
        .with(fmt_layer())
        .with(monitor.error_layer());
    tracing::subscriber::with_default(with, || {
        group.bench_function("disabled_debug/fmt_and_error_layer", |b| {
            b.iter(|| tracing::debug!(value = black_box(7), "not recorded"))
        });
    });
    let only = tracing_subscriber::registry().with(monitor.error_layer());
    tracing::subscriber::with_default(only, || {
        let span = tracing::info_span!("stream_request", request_id = "req-1", provider = "openai");
        let _entered = span.enter();
        group.bench_function("recorded_error", |b| {
            b.iter(|| {
                tracing::error!(
                    attempt = black_box(2),
                    api_key = "sk-abcdefghijklmnop",
                    "upstream failed: status 500"
                )
            })
        });
    });
    group.finish();
}

criterion_group!(benches, bench_error_layer);
criterion_main!(benches);
