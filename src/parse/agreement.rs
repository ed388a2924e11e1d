//! The template fast path agrees with the serde_json path, event by event: streams of events in
//! the providers' shapes, with generated text (quotes, escapes, the words `usage`, `error` and
//! `model`, unicode, invalid bytes, JSON injected unescaped) and generated numbers, some events
//! broken byte by byte, are fed to a parser that learns templates and to one that never does.
//! Both must report the same content events after every frame and the same summary at the end.
//!
//! Templates are shared by the streams of a thread, so the learning parser of each case reads
//! with what earlier cases (and earlier streams of the same case) taught: streams in a row, with
//! their own ids, models and usage, check that no stream's templates answer wrongly for another.

use proptest::prelude::*;

use super::{StreamParser, WireFormat};

/// Event shapes: SSE event type and JSON, where `{T}` and `{U}` take generated text (inside
/// quotes) and `{N}` a generated number; `{I}`, `{M}` and `{C}` take the stream's id, model and
/// creation time (the same in all its events, mostly).
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
    // Per-stream values: ids, creation times and models that differ from stream to stream.
    (
        "",
        r#"{"id":"{I}","object":"chat.completion.chunk","created":{C},"model":"{M}","system_fingerprint":"fp_{I}","choices":[{"index":0,"delta":{"role":"assistant","content":"{T}","refusal":null},"logprobs":null,"finish_reason":null}]}"#,
    ),
    (
        "",
        r#"{"id":"{I}","object":"chat.completion.chunk","created":{C},"model":"{M}","choices":[{"index":0,"delta":{"content":"{T}"},"logprobs":null,"finish_reason":null}],"obfuscation":"{U}"}"#,
    ),
    (
        "",
        r#"{"id":"{I}","object":"chat.completion.chunk","created":{C},"model":"{M}","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}"#,
    ),
    (
        "",
        r#"{"id":"{I}","object":"chat.completion.chunk","created":{C},"model":"{M}","choices":[],"usage":{"prompt_tokens":{N},"completion_tokens":{N}}}"#,
    ),
    (
        "",
        r#"{"id":"{I}","created":{C},"model":"{M}","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_{I}","function":{"arguments":"{T}"}}]}}]}"#,
    ),
    (
        "response.created",
        r#"{"type":"response.created","sequence_number":{N},"response":{"id":"resp_{I}","object":"response","created_at":{C},"status":"in_progress","model":"{M}","output":[],"usage":null}}"#,
    ),
    (
        "response.output_text.delta",
        r#"{"type":"response.output_text.delta","sequence_number":{N},"item_id":"msg_{I}","output_index":0,"content_index":0,"delta":"{T}","logprobs":[]}"#,
    ),
    (
        "message_start",
        r#"{"type":"message_start","message":{"id":"msg_{I}","type":"message","role":"assistant","model":"{M}","content":[],"usage":{"input_tokens":{N},"output_tokens":1}}}"#,
    ),
    (
        "",
        r#"{"candidates":[{"content":{"parts":[{"text":"{T}"}],"role":"model"},"index":0}],"modelVersion":"{M}","responseId":"{I}"}"#,
    ),
    (
        "",
        r#"{"model":"{M}","created_at":"2024-05-01T10:00:{N}Z","message":{"role":"assistant","content":"{T}"},"done":false}"#,
    ),
    (
        "",
        r#"{"id":"{I}","model":"{M}","error":{"type":"{T}","message":"{U}"}}"#,
    ),
    // Cohere v2 chat, with its `event:` lines and without.
    (
        "content-delta",
        r#"{"type":"content-delta","index":0,"delta":{"message":{"content":{"text":"{T}"}}}}"#,
    ),
    (
        "",
        r#"{"type":"content-delta","index":0,"delta":{"message":{"content":{"text":"{T}"}}}}"#,
    ),
    (
        "content-delta",
        r#"{"type":"content-delta","index":0,"delta":{"message":{"content":{"thinking":"{T}"}}},"logprobs":{"token_ids":[{N}],"logprobs":[-0.5]}}"#,
    ),
    (
        "tool-plan-delta",
        r#"{"type":"tool-plan-delta","delta":{"message":{"tool_plan":"{T}"}}}"#,
    ),
    (
        "tool-call-start",
        r#"{"type":"tool-call-start","index":0,"delta":{"message":{"tool_calls":{"id":"get_weather_{I}","type":"function","function":{"name":"{U}","arguments":"{T}"}}}}}"#,
    ),
    (
        "tool-call-delta",
        r#"{"type":"tool-call-delta","index":0,"delta":{"message":{"tool_calls":{"function":{"arguments":"{T}"}}}}}"#,
    ),
    (
        "message-start",
        r#"{"id":"{I}","type":"message-start","delta":{"message":{"role":"assistant","content":[],"tool_plan":"","tool_calls":[],"citations":[]}}}"#,
    ),
    (
        "message-end",
        r#"{"type":"message-end","delta":{"finish_reason":"COMPLETE","usage":{"billed_units":{"input_tokens":{N},"output_tokens":{N}},"tokens":{"input_tokens":{N},"output_tokens":{N}},"cached_tokens":{N}}}}"#,
    ),
    (
        "",
        r#"{"type":"message-end","delta":{"error":"{T}","finish_reason":"ERROR"}}"#,
    ),
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

/// What a stream repeats in its events.
#[derive(Debug, Clone)]
struct PerStream {
    id: Vec<u8>,
    model: Vec<u8>,
    created: Vec<u8>,
}

impl Default for PerStream {
    fn default() -> Self {
        Self {
            id: b"c1".to_vec(),
            model: b"gpt-4o".to_vec(),
            created: b"1".to_vec(),
        }
    }
}

#[derive(Debug, Clone)]
struct Event {
    shape: usize,
    text: Vec<u8>,
    other: Vec<u8>,
    number: Vec<u8>,
    damage: Damage,
    /// The event type given on an `event:` line: the shape's (`message` when it has none), or
    /// another one, so that the same data comes under several types.
    event_type: EventType,
    lead: Lead,
    stream: PerStream,
}

/// What comes before an event's data line, or how the line is cut.
#[derive(Debug, Clone, Copy)]
enum Lead {
    None,
    /// A comment line first.
    Comment,
    /// An `id:` line first.
    Id,
    /// The data line is a comment: no event.
    CommentedOut,
    /// The data on two `data:` lines (joined by a line break, still the same JSON).
    TwoLines,
}

fn lead() -> impl Strategy<Value = Lead> {
    prop_oneof![
        40 => Just(Lead::None),
        1 => Just(Lead::Comment),
        1 => Just(Lead::Id),
        1 => Just(Lead::CommentedOut),
        1 => Just(Lead::TwoLines),
    ]
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
            } else if after.starts_with(b"{I}") {
                out.extend_from_slice(&self.stream.id);
                rest = &after[3..];
            } else if after.starts_with(b"{M}") {
                out.extend_from_slice(&self.stream.model);
                rest = &after[3..];
            } else if after.starts_with(b"{C}") {
                out.extend_from_slice(&self.stream.created);
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
        let (shape_type, _) = SHAPES[self.shape % SHAPES.len()];
        let event_type = match self.event_type {
            EventType::Shape if shape_type.is_empty() => None,
            EventType::Shape => Some(shape_type),
            EventType::Explicit if shape_type.is_empty() => Some("message"),
            EventType::Explicit => Some(shape_type),
            EventType::Other(other) => Some(other),
        };
        let mut out = Vec::new();
        match self.lead {
            Lead::Comment => out.extend_from_slice(b": keep-alive"),
            Lead::Id => out.extend_from_slice(b"id: 7"),
            _ => {}
        }
        if matches!(self.lead, Lead::Comment | Lead::Id) {
            out.extend_from_slice(eol);
        }
        if let Some(event_type) = event_type {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(event_type.as_bytes());
            out.extend_from_slice(eol);
        }
        let json = self.json();
        match self.lead {
            Lead::CommentedOut => out.extend_from_slice(b": "),
            Lead::TwoLines if json.len() > 1 => {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(&json[..1]);
                out.extend_from_slice(eol);
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(&json[1..]);
                out.extend_from_slice(eol);
                out.extend_from_slice(eol);
                return out;
            }
            _ => {}
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&json);
        out.extend_from_slice(eol);
        out.extend_from_slice(eol);
        out
    }
}

#[derive(Debug, Clone, Copy)]
enum EventType {
    /// The shape's, given only when it is not the default.
    Shape,
    /// The shape's, always given.
    Explicit,
    Other(&'static str),
}

fn event_type() -> impl Strategy<Value = EventType> {
    prop_oneof![
        40 => Just(EventType::Shape),
        4 => Just(EventType::Explicit),
        1 => Just(EventType::Other("error")),
        1 => Just(EventType::Other("message")),
        1 => Just(EventType::Other("content_block_delta")),
        1 => Just(EventType::Other("response.output_text.delta")),
        1 => Just(EventType::Other("ping")),
        1 => Just(EventType::Other("")),
        1 => Just(EventType::Other(
            "a-type-name-longer-than-the-sixty-four-bytes-that-the-decoder-keeps"
        )),
    ]
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
                event_type(),
                lead(),
            ),
            1..40,
        ),
    )
        .prop_map(|(shapes, events)| {
            events
                .into_iter()
                .map(
                    |(pick, text, other, number, damage, event_type, lead)| Event {
                        shape: shapes[pick.index(shapes.len())],
                        text,
                        other,
                        number,
                        damage,
                        event_type,
                        lead,
                        stream: PerStream::default(),
                    },
                )
                .collect()
        })
}

/// A stream's id, model or creation time: a few values, so that streams share them or not.
fn per_stream() -> impl Strategy<Value = PerStream> {
    let id = prop_oneof![
        3 => "[a-zA-Z0-9]{1,24}".prop_map(String::into_bytes),
        1 => Just(b"c1".to_vec()),
        1 => Just(br#"x\"y"#.to_vec()),
        1 => Just(b"\xff".to_vec()),
    ];
    let model = prop_oneof![
        2 => Just(b"gpt-4o".to_vec()),
        2 => Just(b"gpt-4o-mini".to_vec()),
        1 => Just(b"claude-sonnet-4".to_vec()),
        1 => Just(b"gemini-2.5-flash".to_vec()),
        1 => Just(Vec::new()),
        1 => Just(b"bad\tname".to_vec()),
        1 => "[a-z0-9.-]{1,12}".prop_map(String::into_bytes),
    ];
    let created = prop_oneof![
        2 => (1_700_000_000u64..1_700_000_010).prop_map(|n| n.to_string().into_bytes()),
        1 => Just(b"0".to_vec()),
        1 => Just(b"-5".to_vec()),
        1 => Just(b"\"7\"".to_vec()),
    ];
    (id, model, created).prop_map(|(id, model, created)| PerStream { id, model, created })
}

/// Streams in a row, each of the per-stream shapes (and a few others) with its own ids, model
/// and creation time; now and then an event has another stream's values.
fn streams() -> impl Strategy<Value = Vec<Vec<Event>>> {
    let first = SHAPES
        .iter()
        .position(|(_, json)| json.contains("{I}") || json.contains("{M}"))
        .unwrap_or(0);
    let per_stream_shapes = (first..SHAPES.len()).collect::<Vec<_>>();
    let one = (
        per_stream(),
        per_stream(),
        proptest::collection::vec(prop::sample::select(per_stream_shapes), 1..4),
        proptest::collection::vec(0..SHAPES.len(), 0..2),
        proptest::collection::vec(
            (
                any::<prop::sample::Index>(),
                text(),
                text(),
                number(),
                damage(),
                (event_type(), lead()),
                prop::bool::weighted(0.05),
            ),
            1..30,
        ),
    )
        .prop_map(|(values, stray, mut shapes, others, events)| {
            shapes.extend(others);
            events
                .into_iter()
                .map(
                    |(pick, text, other, number, damage, (event_type, lead), strayed)| Event {
                        shape: shapes[pick.index(shapes.len())],
                        text,
                        other,
                        number,
                        damage,
                        event_type,
                        lead,
                        stream: if strayed {
                            stray.clone()
                        } else {
                            values.clone()
                        },
                    },
                )
                .collect()
        });
    proptest::collection::vec(one, 1..8)
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

/// Cases per property: proptest's default (256, or `PROPTEST_CASES` when set, for a deeper run)
/// divided by `share`. The suite runs the default on every `cargo test`; these two properties are
/// the slowest tests of the library in a debug build.
fn cases(share: u32) -> ProptestConfig {
    let default = ProptestConfig::default();
    ProptestConfig::with_cases((default.cases / share).max(1))
}

proptest! {
    #![proptest_config(cases(1))]

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

        // An event's last line and blank line in a frame of their own: often a whole event in
        // one frame, of the type named before, or what looks like one (the rest of a comment,
        // the second data line of an event).
        let mut apart = Vec::new();
        for event in &per_event {
            let body = event.trim_ascii_end();
            let cut = if event.starts_with(b": data") {
                Some(2)
            } else {
                body.iter().rposition(|&b| b == b'\n').map(|i| i + 1)
            };
            match cut {
                Some(i) if i < event.len() => {
                    apart.push(&event[..i]);
                    apart.push(&event[i..]);
                }
                _ => apart.push(event),
            }
        }
        assert_same(WireFormat::Sse, max_event_bytes, &apart);

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

proptest! {
    // Each case runs up to eight streams: a quarter of the cases is about the same work.
    #![proptest_config(cases(4))]

    /// Many streams through one thread, each with its own ids, model and usage, some events
    /// broken: every stream agrees with a parser that uses no templates.
    #[test]
    fn streams_in_a_row_agree(streams in streams(), crlf in prop::bool::weighted(0.2)) {
        for events in &streams {
            let per_event: Vec<Vec<u8>> = events.iter().map(|e| e.sse(crlf)).collect();
            let frames: Vec<&[u8]> = per_event.iter().map(Vec::as_slice).collect();
            assert_same(WireFormat::Sse, super::DEFAULT_MAX_EVENT_BYTES, &frames);
            let body: Vec<u8> = per_event.concat();
            let lines: Vec<&[u8]> = body.split_inclusive(|&b| b == b'\n').collect();
            assert_same(WireFormat::Sse, super::DEFAULT_MAX_EVENT_BYTES, &lines);
            let ndjson: Vec<u8> = events
                .iter()
                .flat_map(|e| {
                    let mut line = e.json();
                    line.push(b'\n');
                    line
                })
                .collect();
            assert_same(WireFormat::Ndjson, super::DEFAULT_MAX_EVENT_BYTES, &[&ndjson]);
        }
    }
}

/// The shapes the fast path is for do take it, in every framing. (A chat stream with no model
/// changes view at its fifth event and learns its template again: hits since then are counted.)
#[test]
fn provider_deltas_are_answered_by_templates() {
    for shape in [0, 1, 5, 6, 12, 13, 17, 20, 21, 34, 35, 39] {
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
                event_type: EventType::Shape,
                lead: Lead::None,
                stream: PerStream::default(),
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

/// A chat stream as OpenAI sends it: a first chunk naming the role, content chunks, a last
/// chunk with the finish reason, usage, `[DONE]`.
fn chat_stream(id: &str, created: u64, model: &str, output: u64) -> Vec<String> {
    let chunk = |id: &str, delta: &str, finish: &str| {
        format!(
            "data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":{created},\"model\":\"{model}\",\"system_fingerprint\":\"fp_{id}\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish}}}]}}\n\n"
        )
    };
    let mut frames = vec![chunk(
        id,
        r#"{"role":"assistant","content":"","refusal":null}"#,
        "null",
    )];
    for i in 0..10 {
        frames.push(chunk(id, &format!(r#"{{"content":" tok{i}"}}"#), "null"));
    }
    frames.push(chunk(id, "{}", "\"stop\""));
    frames.push(format!(
        "data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":{created},\"model\":\"{model}\",\"choices\":[],\"usage\":{{\"prompt_tokens\":7,\"completion_tokens\":{output}}}}}\n\n"
    ));
    frames.push("data: [DONE]\n\n".to_owned());
    frames
}

/// Feeds `frames` to a learning parser and to one that learns nothing; they must agree. Returns
/// the summary, the events answered by templates, and the templates the thread learnt.
fn run(frames: &[String]) -> (super::StreamSummary, u64, u64) {
    let before = super::template::shared_learnt();
    let frames: Vec<&[u8]> = frames.iter().map(|f| f.as_bytes()).collect();
    assert_same(WireFormat::Sse, super::DEFAULT_MAX_EVENT_BYTES, &frames);
    let mut parser = StreamParser::new(WireFormat::Sse);
    let learnt_in_check = super::template::shared_learnt() - before;
    for frame in &frames {
        parser.feed(frame);
    }
    let learnt = super::template::shared_learnt() - before - learnt_in_check;
    (
        parser.summary().clone(),
        parser.template_answers(),
        learnt_in_check + learnt,
    )
}

/// A stream reads with the templates earlier streams of its thread learnt, whatever its ids
/// and creation time; never with those of another model, and its own figures are its own.
#[test]
fn streams_share_templates_but_not_their_figures() {
    std::thread::spawn(|| {
        // The first stream learns: its content chunks, then (seen a second time, by the check
        // that runs it twice) its first and last chunks.
        let (a, _, learnt) = run(&chat_stream("chatcmpl-a", 1_700_000_001, "gpt-4o", 21));
        assert!(learnt >= 1, "{learnt}");
        assert_eq!(a.model(), Some("gpt-4o"));
        assert_eq!(a.output_tokens(), 21);

        // Another stream of the model, with its own ids: nothing to learn, and every event but
        // the finish reason, usage and [DONE] answered by a template.
        let (b, answered, learnt) = run(&chat_stream("chatcmpl-bb", 1_700_000_002, "gpt-4o", 9));
        assert_eq!(learnt, 0);
        assert_eq!(answered, 11);
        assert_eq!(b.finish_reason(), Some(super::FinishReason::Stop));
        assert_eq!(b.model(), Some("gpt-4o"));
        assert_eq!(b.format(), super::ProviderFormat::OpenAiChat);
        assert_eq!((b.content_events(), b.output_tokens()), (10, 9));
        assert_eq!(b.input_tokens(), Some(7));

        // Another model: the templates of the first do not stand for its events.
        let (c, _, learnt) = run(&chat_stream("chatcmpl-c", 1_700_000_003, "o3-mini", 4));
        assert!(learnt >= 1, "{learnt}");
        assert_eq!(c.model(), Some("o3-mini"));
        assert_eq!((c.content_events(), c.output_tokens()), (10, 4));

        // Back to the first model, now with content that is no event of the first stream's.
        let mut d = chat_stream("chatcmpl-d", 1_700_000_004, "gpt-4o", 3);
        d[3] = d[3].replace(" tok2", "");
        let (d, answered, learnt) = run(&d);
        assert_eq!(learnt, 0);
        assert_eq!(answered, 11);
        assert_eq!((d.content_events(), d.output_tokens()), (9, 3));
    })
    .join()
    .expect("the checks pass");
}

/// A stream whose "per-stream" values change from event to event still agrees, and is still
/// answered by templates (its copy keeps those values as holes).
#[test]
fn values_that_change_within_a_stream_stay_holes() {
    std::thread::spawn(|| {
        let mut frames = Vec::new();
        for i in 0..20 {
            let stream = chat_stream(&format!("chatcmpl-{i}"), 1_700_000_000 + i, "gpt-4o", 5);
            frames.push(stream[1 + (i as usize % 10)].clone());
        }
        let (summary, answered, _) = run(&frames);
        assert_eq!(summary.content_events(), 20);
        assert!(answered >= 17, "{answered}");
    })
    .join()
    .expect("the checks pass");
}
