//! SSE scanning throughput: the provider fixtures parsed as body frames, as one long stream and
//! as many short ones. Target: >= 1 GB/s on the OpenAI chat fixture.

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

/// `body` as the stream numbered `n` of a server: ids and creation times its own, the same in
/// all its events.
fn as_stream(body: &[u8], n: usize) -> Vec<u8> {
    let text = String::from_utf8_lossy(body);
    let mut out = text.into_owned();
    for (from, to) in [
        ("chatcmpl-", format!("chatcmpl-{n:04}")),
        ("msg_", format!("msg_{n:04}")),
        ("resp_", format!("resp_{n:04}")),
        ("\"responseId\":\"", format!("\"responseId\":\"{n:04}")),
        ("\"created\":17", format!("\"created\":{}", 17 + n % 10)),
        (
            "\"created_at\":17",
            format!("\"created_at\":{}", 17 + n % 10),
        ),
    ] {
        out = out.replace(from, &to);
    }
    out.into_bytes()
}

/// Short streams, each the fixture once with its own ids, one parser each, one event per frame:
/// what a new stream costs, templates learnt by earlier streams of the thread included.
fn bench_streams(c: &mut Criterion) {
    let mut group = c.benchmark_group("sse_streams");
    for name in [
        "openai-chat.sse",
        "anthropic-messages.sse",
        "openai-responses.sse",
        "gemini.sse",
    ] {
        let one = fixture(name);
        let streams: Vec<Vec<u8>> = (0..64).map(|n| as_stream(&one, n)).collect();
        let frames: Vec<Vec<&[u8]>> = streams.iter().map(|s| events(s)).collect();
        let bytes: usize = streams.iter().map(Vec::len).sum();
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(format!("{name}/event_frames"), |b| {
            b.iter(|| {
                let mut n = 0;
                for stream in &frames {
                    let mut p = StreamParser::new(WireFormat::Sse);
                    for frame in stream {
                        n += p.feed(black_box(frame));
                    }
                    n += p.summary().output_tokens();
                }
                black_box(n)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_scan, bench_streams);
criterion_main!(benches);
