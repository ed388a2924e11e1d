//! Every fixture stream gives its `.expected.json` whole, byte by byte and at random split points.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde_json::Value;
use tower_stream_monitor::parse::{StreamParser, StreamSummary, WireFormat};

fn fixtures() -> Vec<(String, Vec<u8>, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/fixtures exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sse"))
        .collect();
    paths.sort();
    for path in paths {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let body = std::fs::read(&path).unwrap();
        let expected: Value = serde_json::from_slice(
            &std::fs::read(dir.join(format!("{name}.expected.json"))).unwrap(),
        )
        .unwrap();
        out.push((name, body, expected));
    }
    assert_eq!(out.len(), 14, "all fixtures present");
    out
}

fn actual(s: &StreamSummary, content_seen: u64) -> Value {
    assert_eq!(
        content_seen,
        s.content_events(),
        "feed() return values add up to content_events"
    );
    let outcome = match s.error() {
        None => "ok",
        Some(_) => "stream_error",
    };
    serde_json::json!({
        "format": s.format().as_str(),
        "content_events": s.content_events(),
        "output_tokens": s.output_tokens(),
        "input_tokens": s.input_tokens(),
        "cache_read_input_tokens": s.cache_read_input_tokens(),
        "cache_creation_input_tokens": s.cache_creation_input_tokens(),
        "cache_creation_1h_input_tokens": s.cache_creation_1h_input_tokens(),
        "reasoning_output_tokens": s.reasoning_output_tokens(),
        "token_source": s.token_source().as_str(),
        "model": s.model(),
        "finish_reason": s.finish_reason().map(|f| f.as_str()),
        "operation": s.format().operation_name(),
        "outcome": outcome,
    })
}

fn parse_split(body: &[u8], cuts: &[usize]) -> Value {
    let mut parser = StreamParser::new(WireFormat::Sse);
    let mut seen = 0;
    let mut start = 0;
    for &cut in cuts {
        seen += parser.feed(&body[start..cut]);
        start = cut;
    }
    seen += parser.feed(&body[start..]);
    seen += parser.finish();
    actual(parser.summary(), seen)
}

fn expected_subset(expected: &Value) -> Value {
    let mut e = expected.clone();
    e.as_object_mut().unwrap().remove("note");
    e
}

#[test]
fn whole_stream_matches_expected() {
    for (name, body, expected) in fixtures() {
        assert_eq!(
            parse_split(&body, &[]),
            expected_subset(&expected),
            "{name}"
        );
    }
}

#[test]
fn byte_by_byte_matches_expected() {
    for (name, body, expected) in fixtures() {
        let cuts: Vec<usize> = (1..body.len()).collect();
        assert_eq!(
            parse_split(&body, &cuts),
            expected_subset(&expected),
            "{name}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn random_split_points_match_expected(seeds in proptest::collection::vec(any::<u16>(), 0..40)) {
        for (name, body, expected) in fixtures() {
            let mut cuts: Vec<usize> = seeds.iter().map(|s| *s as usize % body.len()).collect();
            cuts.sort_unstable();
            cuts.dedup();
            prop_assert_eq!(parse_split(&body, &cuts), expected_subset(&expected), "{}", name);
        }
    }
}

/// Pieces of SSE-like text, valid and not, that random streams are made of.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}".to_vec()),
        Just(b"data: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}".to_vec()),
        Just(b"data: {\"usage\":{\"completion_tokens\":7,\"prompt_tokens\":3},\"choices\":[]}".to_vec()),
        Just(b"data: {\"error\":{\"type\":\"rate_limit_error\"}}".to_vec()),
        Just(b"data: [DONE]".to_vec()),
        Just(b"event: message_delta".to_vec()),
        Just(b"event: error".to_vec()),
        Just(b": keep-alive".to_vec()),
        Just(b"data:".to_vec()),
        Just(b"id: 1".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..24),
    ]
}

fn summarise(parser: &StreamParser) -> String {
    format!("{:?}", parser.summary())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    /// On any input at all, valid or not: no panic, and the same summary whatever the split.
    #[test]
    fn any_input_any_split_same_summary(
        pieces in proptest::collection::vec(piece(), 0..60),
        seeds in proptest::collection::vec(any::<u16>(), 0..30),
        max_event in 8usize..4096,
    ) {
        let body: Vec<u8> = pieces.concat();
        for wire in [WireFormat::Sse, WireFormat::Ndjson] {
            let mut whole = StreamParser::with_max_event_bytes(wire, max_event);
            let whole_content = whole.feed(&body) + whole.finish();
            let mut cuts: Vec<usize> = seeds.iter().map(|s| *s as usize % (body.len() + 1)).collect();
            cuts.sort_unstable();
            let mut split = StreamParser::with_max_event_bytes(wire, max_event);
            let mut split_content = 0;
            let mut start = 0;
            for cut in cuts {
                split_content += split.feed(&body[start..cut]);
                start = cut;
            }
            split_content += split.feed(&body[start..]) + split.finish();
            prop_assert_eq!(whole_content, split_content);
            prop_assert_eq!(summarise(&whole), summarise(&split));
        }
    }
}
