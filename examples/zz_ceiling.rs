use std::time::Instant;
fn main() {
    let body = std::fs::read("tests/fixtures/openai-chat.sse")
        .unwrap()
        .repeat(64);
    let events: Vec<&[u8]> = body
        .split(|b| *b == b'\n')
        .filter(|l| l.starts_with(b"data: {"))
        .map(|l| &l[6..])
        .collect();
    let total: usize = body.len();
    for _ in 0..3 {
        let t = Instant::now();
        let iters = 2000;
        for _ in 0..iters {
            for e in &events {
                let v: serde::de::IgnoredAny = serde_json::from_slice(e).unwrap();
                std::hint::black_box(v);
            }
        }
        let el = t.elapsed().as_secs_f64();
        println!("ignored_any {:.0} MB/s", (total * iters) as f64 / el / 1e6);
        let t = Instant::now();
        for _ in 0..iters {
            let mut p = tower_stream_monitor::parse::StreamParser::new(
                tower_stream_monitor::parse::WireFormat::Sse,
            );
            p.feed(std::hint::black_box(&body));
        }
        let el = t.elapsed().as_secs_f64();
        println!("parser {:.0} MB/s", (total * iters) as f64 / el / 1e6);
    }
}
