//! SSE scanning throughput: the OpenAI chat fixture parsed as body frames.
//! Target (SPEC section 11): >= 500 MB/s.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use tower_stream_monitor::parse::{StreamParser, WireFormat};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The fixture's events repeated into a long stream, cut into frames of one event each (as
/// providers flush them) and into 4 KiB frames that split events anywhere.
fn bench_scan(c: &mut Criterion) {
    let mut group = c.benchmark_group("sse_scan");
    for name in [
        "openai-chat.sse",
        "anthropic-messages.sse",
        "openai-responses.sse",
        "gemini.sse",
    ] {
        let one = fixture(name);
        let body: Vec<u8> = one.repeat(64);
        let per_event: Vec<&[u8]> = body.split_inclusive(|b| *b == b'\n').collect();
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(format!("{name}/line_frames"), |b| {
            b.iter(|| {
                let mut p = StreamParser::new(WireFormat::Sse);
                let mut n = 0;
                for frame in &per_event {
                    n += p.feed(black_box(frame));
                }
                black_box(n)
            })
        });
        group.bench_function(format!("{name}/4k_frames"), |b| {
            b.iter(|| {
                let mut p = StreamParser::new(WireFormat::Sse);
                let mut n = 0;
                for frame in body.chunks(4096) {
                    n += p.feed(black_box(frame));
                }
                black_box(n)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_scan);
criterion_main!(benches);
