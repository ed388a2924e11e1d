//! The template fast path agrees with the serde_json path, event by event: streams of events in
//! the providers' shapes, with generated text (quotes, escapes, the words `usage`, `error` and
//! `model`, unicode, invalid bytes, JSON injected unescaped) and generated numbers, some events
//! broken byte by byte, are fed to a parser that learns templates and to one that never does.
//! Both must report the same content events after every frame and the same summary at the end.

use proptest::prelude::*;

use super::{StreamParser, WireFormat};

/// Event shapes: SSE event type and JSON, where `{T}` and `{U}` take generated text (inside
/// quotes) and `{N}` a generated number.
const SHAPES: &[(&str, &str)] = &[
    (
        "",
        r#"{"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_06737a9306","choices":[{"index":0,"delta":{"content":"{T}"},"logprobs":null,"finish_reason":null}]}"#,
    ),
    (
        "",
        r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"{T}"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"{U}"}"#,
    ),
    (
        "",
        r#"{"id":"c1","model":"gpt-4o","choices":[{"index":{N},"delta":{"role":"assistant","content":"{T}","refusal":null},"finish_reason":null}]}"#,
    ),
    (
        "",
        r#"{"id":"c1","model":"gpt-4o","choices":[{"index":0,"delta":{"content":null,"refusal":"{T}"}}]}"#,
    ),
    (
        "",
        r#"{"id":"c1","choices":[{"index":0,"delta":{"reasoning_content":"{T}","content":"{U}"}}]}"#,
    ),
    (
        "",
        r#"{"id":"c1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{T}"}}]}}]}"#,
    ),
    ("", r#"{"choices":[{"delta":{"content":"{T}"}}]}"#),
    // Read differently by the chat view and the full one (which also sees the `.delta` type).
    (
        "",
        r#"{"choices":[{"delta":{}}],"type":"response.output_text.delta","delta":"{T}"}"#,
    ),
    (
        "",
        r#"{"choices":[{"text":"{T}","index":0}],"model":"{U}"}"#,
    ),
    (
        "",
        r#"{"id":"c1","choices":[],"usage":{"completion_tokens":{N},"prompt_tokens":3}}"#,
    ),
    ("", r#"{"error":{"type":"{T}","message":"{U}"}}"#),
    (
        "",
        r#"{"text":"{T}","content":"{U}","sequence_number":{N}}"#,
    ),
    (
        "content_block_delta",
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"{T}"}}"#,
    ),
    (
        "content_block_delta",
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{T}"}}"#,
    ),
    (
        "message_delta",
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":{N}}}"#,
    ),
    (
        "message_start",
        r#"{"type":"message_start","message":{"model":"{U}","content":[],"usage":{"input_tokens":{N},"output_tokens":1}}}"#,
    ),
    (
        "error",
        r#"{"type":"error","error":{"type":"{T}","message":"Overloaded"}}"#,
    ),
    (
        "response.output_text.delta",
        r#"{"type":"response.output_text.delta","sequence_number":{N},"item_id":"msg_1","output_index":0,"content_index":0,"delta":"{T}","logprobs":[],"obfuscation":"{U}"}"#,
    ),
    (
        "response.completed",
        r#"{"type":"response.completed","sequence_number":{N},"response":{"model":"gpt-4.1","usage":{"input_tokens":3,"output_tokens":{N}},"error":null}}"#,
    ),
    (
        "",
        r#"{"candidates":[{"content":{"parts":[{"text":"{T}"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":11,"candidatesTokenCount":{N}},"modelVersion":"gemini-2.5-flash"}"#,
    ),
    (
        "",
        r#"{"candidates":[{"content":{"parts":[{"text":"{T}"}],"role":"model"},"index":0}],"modelVersion":"{U}"}"#,
    ),
    (
        "",
        r#"{"model":"llama3","message":{"role":"assistant","content":"{T}"},"done":false}"#,
    ),
    ("", r#"{"model":"llama3","response":"{T}","done":false}"#),
];

/// Text put between quotes: valid JSON string contents and not.
fn text() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => "[ a-zA-Z0-9.,!?]{0,12}".prop_map(String::into_bytes),
        2 => Just(Vec::new()),
        1 => Just(br#"\"usage\":{\"completion_tokens\":5}"#.to_vec()),
        1 => Just(br#"","usage":{"completion_tokens":5},"x":""#.to_vec()),
        1 => Just(br#"","error":{"type":"rate_limit_error"},"x":""#.to_vec()),
        1 => Just(br#"","model":"other","x":""#.to_vec()),
        1 => Just(b"usage error model content delta".to_vec()),
        1 => Just(br"\\".to_vec()),
        1 => Just(br"a\\\\".to_vec()),
        1 => Just(br#"say \"hi\"\n\ttab\/slash\b\f\r"#.to_vec()),
        1 => Just(br"\u00e9\u0000\uFFFF".to_vec()),
        1 => Just(br"\ud83d\ude00".to_vec()),
        1 => Just(br"\ud800 lone".to_vec()),
        1 => Just(br"\u12".to_vec()),
        1 => Just(br"\u12G4".to_vec()),
        1 => Just(br"\x".to_vec()),
        1 => Just(br"\".to_vec()),
        1 => Just("caf\u{e9} \u{1F600} \u{4e2d}\u{6587} long enough to span words".as_bytes().to_vec()),
        1 => Just(b"ctl\x01\x1f".to_vec()),
        1 => Just(b"\xff\xfe bad utf-8".to_vec()),
        1 => Just(b"\xe4\xb8".to_vec()),
        1 => Just(b"null".to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..12),
        1 => "\\PC{0,10}".prop_map(String::into_bytes),
    ]
}

fn number() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Few values, so that usage figures repeat and change back.
        4 => (0u64..3).prop_map(|n| n.to_string().into_bytes()),
        2 => (0u64..100_000).prop_map(|n| n.to_string().into_bytes()),
        1 => Just(b"0".to_vec()),
        1 => Just(b"01".to_vec()),
        1 => Just(b"-1".to_vec()),
        1 => Just(b"1.5".to_vec()),
        1 => Just(b"1e3".to_vec()),
        1 => Just(b"18446744073709551616".to_vec()),
        1 => Just(b"\"7\"".to_vec()),
    ]
}

/// How an event is broken, if it is.
#[derive(Debug, Clone)]
enum Damage {
    None,
    Replace(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    let byte = prop_oneof![
        Just(b'"'),
        Just(b'\\'),
        Just(b'{'),
        Just(b'}'),
        Just(b','),
        Just(b':'),
        Just(b' '),
        Just(b'\n'),
        Just(b'\r'),
        Just(b'0'),
        Just(b'x'),
        Just(0xFF),
        any::<u8>(),
    ];
    prop_oneof![
        12 => Just(Damage::None),
        1 => (any::<usize>(), byte.clone()).prop_map(|(i, b)| Damage::Replace(i, b)),
        1 => (any::<usize>(), byte).prop_map(|(i, b)| Damage::Insert(i, b)),
        1 => any::<usize>().prop_map(Damage::Remove),
        1 => any::<usize>().prop_map(Damage::Truncate),
    ]
}

#[derive(Debug, Clone)]
struct Event {
    shape: usize,
    text: Vec<u8>,
    other: Vec<u8>,
    number: Vec<u8>,
    damage: Damage,
    /// Give the event type on an `event:` line even when it is the default.
    explicit_type: bool,
}

impl Event {
    fn json(&self) -> Vec<u8> {
        let (_, template) = SHAPES[self.shape % SHAPES.len()];
        let mut out = Vec::new();
        let mut rest = template.as_bytes();
        while let Some(i) = rest.iter().position(|&b| b == b'{') {
            out.extend_from_slice(&rest[..i]);
            let after = &rest[i..];
            if after.starts_with(b"{T}") {
                out.extend_from_slice(&self.text);
                rest = &after[3..];
            } else if after.starts_with(b"{U}") {
                out.extend_from_slice(&self.other);
                rest = &after[3..];
            } else if after.starts_with(b"{N}") {
                out.extend_from_slice(&self.number);
                rest = &after[3..];
            } else {
                out.push(b'{');
                rest = &after[1..];
            }
        }
        out.extend_from_slice(rest);
        match self.damage {
            Damage::None => {}
            Damage::Replace(i, b) => {
                let i = i % out.len();
                out[i] = b;
            }
            Damage::Insert(i, b) => out.insert(i % (out.len() + 1), b),
            Damage::Remove(i) => {
                out.remove(i % out.len());
            }
            Damage::Truncate(i) => out.truncate(i % out.len()),
        }
        out
    }

    fn sse(&self, crlf: bool) -> Vec<u8> {
        let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
        let (event_type, _) = SHAPES[self.shape % SHAPES.len()];
        let mut out = Vec::new();
        if !event_type.is_empty() || self.explicit_type {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(if event_type.is_empty() {
                b"message"
            } else {
                event_type.as_bytes()
            });
            out.extend_from_slice(eol);
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&self.json());
        out.extend_from_slice(eol);
        out.extend_from_slice(eol);
        out
    }
}

/// A stream: mostly a few shapes repeated (so that templates are learnt and used), with
/// generated text in each event.
fn stream() -> impl Strategy<Value = Vec<Event>> {
    (
        proptest::collection::vec(0..SHAPES.len(), 1..4),
        proptest::collection::vec(
            (
                any::<prop::sample::Index>(),
                text(),
                text(),
                number(),
                damage(),
                prop::bool::weighted(0.1),
            ),
            1..40,
        ),
    )
        .prop_map(|(shapes, events)| {
            events
                .into_iter()
                .map(|(pick, text, other, number, damage, explicit_type)| Event {
                    shape: shapes[pick.index(shapes.len())],
                    text,
                    other,
                    number,
                    damage,
                    explicit_type,
                })
                .collect()
        })
}

/// Feeds `frames` to both parsers; the content events each frame completes and the final
/// summaries must be the same.
fn assert_same(wire: WireFormat, max_event_bytes: usize, frames: &[&[u8]]) -> u64 {
    let mut fast = StreamParser::with_max_event_bytes(wire, max_event_bytes);
    let mut full = StreamParser::without_templates(wire, max_event_bytes);
    for (i, frame) in frames.iter().enumerate() {
        let got = fast.feed(frame);
        let want = full.feed(frame);
        assert_eq!(
            got,
            want,
            "frame {i}: {:?}\n{:?}\n{:?}",
            String::from_utf8_lossy(frame),
            fast.summary(),
            full.summary()
        );
    }
    assert_eq!(fast.finish(), full.finish());
    assert_eq!(
        format!("{:?}", fast.summary()),
        format!("{:?}", full.summary())
    );
    fast.template_hits()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn templates_agree_with_serde_json(
        events in stream(),
        crlf in prop::bool::weighted(0.2),
        seeds in proptest::collection::vec(any::<u16>(), 0..12),
        small_cap in prop::bool::weighted(0.1),
    ) {
        let max_event_bytes = if small_cap { 200 } else { super::DEFAULT_MAX_EVENT_BYTES };
        let body: Vec<u8> = events.iter().flat_map(|e| e.sse(crlf)).collect();

        // One event per frame, as providers flush them.
        let per_event: Vec<Vec<u8>> = events.iter().map(|e| e.sse(crlf)).collect();
        let frames: Vec<&[u8]> = per_event.iter().map(Vec::as_slice).collect();
        assert_same(WireFormat::Sse, max_event_bytes, &frames);

        // One line per frame.
        let lines: Vec<&[u8]> = body.split_inclusive(|&b| b == b'\n').collect();
        assert_same(WireFormat::Sse, max_event_bytes, &lines);

        // Split anywhere.
        let mut cuts: Vec<usize> = seeds.iter().map(|&s| s as usize % (body.len() + 1)).collect();
        cuts.sort_unstable();
        let mut frames = Vec::new();
        let mut start = 0;
        for cut in cuts {
            frames.push(&body[start..cut]);
            start = cut;
        }
        frames.push(&body[start..]);
        assert_same(WireFormat::Sse, max_event_bytes, &frames);

        // The same events as NDJSON lines.
        let ndjson: Vec<u8> = events
            .iter()
            .flat_map(|e| {
                let mut line = e.json();
                line.push(b'\n');
                line
            })
            .collect();
        assert_same(WireFormat::Ndjson, max_event_bytes, &[&ndjson]);
    }
}

/// The shapes the fast path is for do take it, in every framing. (A chat stream with no model
/// changes view at its fifth event and learns its template again: hits since then are counted.)
#[test]
fn provider_deltas_are_answered_by_templates() {
    for shape in [0, 1, 5, 6, 12, 13, 17, 20, 21] {
        let events: Vec<Event> = (0..20)
            .map(|i| Event {
                shape,
                text: format!("tok {i} \\\"q\\\" \u{e9}").into_bytes(),
                // An obfuscation string changes with every chunk; a model does not.
                other: if [1, 17].contains(&shape) {
                    format!("o{i}").into_bytes()
                } else {
                    b"m-1".to_vec()
                },
                number: (i + 4).to_string().into_bytes(),
                damage: Damage::None,
                explicit_type: false,
            })
            .collect();
        for crlf in [false, true] {
            let frames: Vec<Vec<u8>> = events.iter().map(|e| e.sse(crlf)).collect();
            let frames: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
            let hits = assert_same(WireFormat::Sse, super::DEFAULT_MAX_EVENT_BYTES, &frames);
            assert!(
                hits >= 14,
                "shape {shape}, crlf {crlf}: {hits} template hits"
            );
        }
        let body: Vec<u8> = events.iter().flat_map(|e| e.sse(false)).collect();
        let lines: Vec<&[u8]> = body.split_inclusive(|&b| b == b'\n').collect();
        let hits = assert_same(WireFormat::Sse, super::DEFAULT_MAX_EVENT_BYTES, &lines);
        assert!(
            hits >= 14,
            "shape {shape}, line frames: {hits} template hits"
        );
    }
}

/// Events that carry anything but content keep the full path, and a template never stands for
/// a different event.
#[test]
fn usage_error_and_model_events_are_read_in_full() {
    let chat = |content: &str, tail: &str| {
        format!(
            "data: {{\"id\":\"c\",\"model\":\"gpt-4o\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{content}\"}}}}]{tail}}}\n\n"
        )
    };
    let frames = [
        chat("a", ""),
        chat("b", ""),
        chat("c", ",\"usage\":{\"completion_tokens\":9,\"prompt_tokens\":2}"),
        chat("d", ""),
        chat("\\\"usage\\\":{\\\"completion_tokens\\\":1}", ""),
        chat("", ""),
        chat("e", ",\"error\":{\"type\":\"rate_limit_error\"}"),
        chat("f", ""),
        "data: {\"id\":\"c\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"g\"}}]}\n\n".to_owned(),
        chat("h\u{1}", ""),
        chat("i", "x"),
    ];
    let frames: Vec<&[u8]> = frames.iter().map(|f| f.as_bytes()).collect();
    assert_same(WireFormat::Sse, super::DEFAULT_MAX_EVENT_BYTES, &frames);
    let mut parser = StreamParser::new(WireFormat::Sse);
    for frame in &frames {
        parser.feed(frame);
    }
    let summary = parser.summary();
    assert_eq!(summary.output_tokens(), 9);
    assert_eq!(summary.input_tokens(), Some(2));
    assert_eq!(summary.content_events(), 8);
    assert_eq!(summary.malformed_events(), 2);
    assert_eq!(summary.error(), Some(super::StreamErrorKind::RateLimited));
}

/// Usage repeated by a content event (Gemini repeats it in every chunk) looks like no change;
/// such an event must not become a template, or usage changed back later would be missed.
#[test]
fn repeated_usage_is_never_taken_for_no_usage() {
    let gemini = |text: &str, output: u64| {
        format!(
            "data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"{text}\"}}],\"role\":\"model\"}}}}],\"usageMetadata\":{{\"promptTokenCount\":11,\"candidatesTokenCount\":{output}}},\"modelVersion\":\"gemini-2.5-flash\"}}\r\n\r\n"
        )
    };
    let frames = [
        gemini("a", 4),
        gemini("b", 4),
        gemini("c", 4),
        gemini("d", 9),
        gemini("e", 4),
    ];
    let frames: Vec<&[u8]> = frames.iter().map(|f| f.as_bytes()).collect();
    assert_same(WireFormat::Sse, super::DEFAULT_MAX_EVENT_BYTES, &frames);
    let mut parser = StreamParser::new(WireFormat::Sse);
    for frame in &frames {
        parser.feed(frame);
    }
    assert_eq!(parser.summary().output_tokens(), 4);
    assert_eq!(parser.summary().content_events(), 5);
}
