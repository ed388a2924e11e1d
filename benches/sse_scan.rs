//! SSE scanning throughput: the provider fixtures parsed as body frames.
//! Target: >= 1 GB/s on the OpenAI chat fixture.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use tower_stream_monitor::parse::{StreamParser, WireFormat};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `body` cut after each blank line: one whole event per frame.
fn events(body: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < body.len() {
        let end = if body[i..].starts_with(b"\r\n\r\n") {
            i + 4
        } else if body[i..].starts_with(b"\n\n") {
            i + 2
        } else {
            i += 1;
            continue;
        };
        out.push(&body[start..end]);
        (start, i) = (end, end);
    }
    out.push(&body[start..]);
    out
}

/// The fixture's events repeated into a long stream, cut into frames of one event each (as
/// providers flush them), of one line each (an event and the blank line that ends it arrive
/// apart), and of 4 KiB that split events anywhere.
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
        let per_event = events(&body);
        let per_line: Vec<&[u8]> = body.split_inclusive(|b| *b == b'\n').collect();
        group.throughput(Throughput::Bytes(body.len() as u64));
        for (frames_name, frames) in [("event_frames", &per_event), ("line_frames", &per_line)] {
            group.bench_function(format!("{name}/{frames_name}"), |b| {
                b.iter(|| {
                    let mut p = StreamParser::new(WireFormat::Sse);
                    let mut n = 0;
                    for frame in frames {
                        n += p.feed(black_box(frame));
                    }
                    black_box(n)
                })
            });
        }
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
