//! Incremental parsing of streamed LLM responses: SSE and NDJSON framing, then the provider's
//! event format (OpenAI chat, OpenAI Responses, Anthropic Messages, Gemini, Ollama, Cohere).
//!
//! This module knows nothing of HTTP. [`StreamParser`] takes body bytes split at any points and
//! gives the same [`StreamSummary`] whatever the split: it is what the stream layer runs on every
//! data frame, and it can be used alone to check a recorded stream.
//!
//! ```
//! use tower_stream_monitor::parse::{ProviderFormat, StreamParser, TokenSource, WireFormat};
//!
//! let mut parser = StreamParser::new(WireFormat::Sse);
//! let mut content = 0;
//! content += parser.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"Hel");
//! content += parser.feed(b"lo\"}}]}\n\ndata: [DONE]\n\n");
//! parser.finish();
//! let summary = parser.summary();
//! assert_eq!(content, 1);
//! assert_eq!(summary.format(), ProviderFormat::OpenAiChat);
//! assert_eq!(summary.output_tokens(), 1);
//! assert_eq!(summary.token_source(), TokenSource::Counted);
//! ```

#[cfg(test)]
mod agreement;
mod buffers;
mod event;
pub(crate) use buffers::PooledParser;
mod ndjson;
mod provider;
mod sse;
mod template;

use std::fmt;

use ndjson::NdjsonDecoder;
use serde_json::value::RawValue;
use sse::{EventSink, SseDecoder};
use template::Templates;

/// Default cap on the bytes buffered for one event (1 MiB); larger events are skipped and counted.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Every `gen_ai.operation.name` a record can carry ([`ProviderFormat::operation_name`]).
pub(crate) const OPERATION_NAMES: [&str; 3] = ["chat", "generate_content", "text_completion"];

/// The `gen_ai.operation.name` of an LLM call whose stream names no format of its own.
pub(crate) const DEFAULT_OPERATION_NAME: &str = OPERATION_NAMES[0];

/// How events are framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireFormat {
    /// `text/event-stream`: `data:` lines, events ended by a blank line.
    Sse,
    /// `application/x-ndjson`: one JSON value per line.
    Ndjson,
}

impl WireFormat {
    /// The wire format a `Content-Type` value names, if it is a streaming one.
    ///
    /// ```
    /// use tower_stream_monitor::parse::WireFormat;
    /// assert_eq!(WireFormat::from_content_type("text/event-stream; charset=utf-8"), Some(WireFormat::Sse));
    /// assert_eq!(WireFormat::from_content_type("application/json"), None);
    /// ```
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        Self::from_content_type_bytes(content_type.as_bytes())
    }

    /// [`from_content_type`](Self::from_content_type) on a header value's bytes, which need not
    /// be text: asked for every response, so the value is not checked whole first (the types
    /// matched are ASCII, and a byte past them changes nothing).
    pub(crate) fn from_content_type_bytes(content_type: &[u8]) -> Option<Self> {
        // Two bytes rule most types out (`text/plain`, `text/html`, `image/png`) before the
        // value is scanned; then the essence's length rules out most of the rest before any
        // comparison.
        let start = content_type.trim_ascii_start();
        // A byte in lowercase if it is a letter (`| 0x20` takes an uppercase letter to its
        // lowercase; compared with lowercase letters only, no other byte can pass for one).
        let lower = |at: usize| start.get(at).map(|b| b | 0x20);
        // `text/event-stream`; `application/x-ndjson`, `/ndjson`, `/jsonl`, `/x-jsonlines`.
        let maybe = match lower(0) {
            Some(b't') => lower(5) == Some(b'e'),
            Some(b'a') => matches!(lower(12), Some(b'x' | b'n' | b'j')),
            _ => false,
        };
        if !maybe {
            return None;
        }
        let essence = match content_type.iter().position(|b| *b == b';') {
            Some(end) => &content_type[..end],
            None => content_type,
        }
        .trim_ascii();
        const SSE: &[u8] = b"text/event-stream";
        const NDJSON: [&[u8]; 4] = [
            b"application/x-ndjson",
            b"application/ndjson",
            b"application/jsonl",
            b"application/x-jsonlines",
        ];
        if essence.len() == SSE.len() && essence.eq_ignore_ascii_case(SSE) {
            Some(Self::Sse)
        } else if NDJSON
            .iter()
            .any(|t| t.len() == essence.len() && essence.eq_ignore_ascii_case(t))
        {
            Some(Self::Ndjson)
        } else {
            None
        }
    }

    /// Guesses the framing from the first bytes of a body that has no telling content type.
    pub fn sniff(first_bytes: &[u8]) -> Option<Self> {
        let start = first_bytes.trim_ascii_start();
        let start = start.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(start);
        // Any of SSE's fields, or a comment. Decided on the first frame: one too short to name
        // a field (`da`) leaves the body unparsed (README, Outcomes).
        let fields: [&[u8]; 5] = [b"data:", b"event:", b"id:", b"retry:", b":"];
        fields
            .iter()
            .any(|field| start.starts_with(field))
            .then_some(Self::Sse)
    }
}

/// The provider event format recognised in a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ProviderFormat {
    /// No known provider event was seen.
    #[default]
    Unknown,
    /// OpenAI chat completions chunks (`choices[].delta`), also used by most OpenAI-compatible servers.
    OpenAiChat,
    /// OpenAI Responses API events (`response.*`).
    OpenAiResponses,
    /// Anthropic Messages events (`message_start`, `content_block_delta`, ...).
    AnthropicMessages,
    /// Gemini `streamGenerateContent` chunks (`candidates`, `usageMetadata`).
    Gemini,
    /// OpenAI legacy completions chunks (`choices[].text`), also served by OpenAI-compatible
    /// servers (vLLM's `/v1/completions`).
    OpenAiCompletions,
    /// Ollama NDJSON chunks (`response` or `message.content`, `done`, `eval_count`).
    Ollama,
    /// Cohere v2 chat events (`message-start`, `content-delta`, `message-end`, ...).
    CohereChat,
}

impl ProviderFormat {
    /// The snake_case name used in records and fixtures.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::OpenAiChat => "openai_chat",
            Self::OpenAiResponses => "openai_responses",
            Self::AnthropicMessages => "anthropic_messages",
            Self::Gemini => "gemini",
            Self::Ollama => "ollama",
            Self::OpenAiCompletions => "openai_completions",
            Self::CohereChat => "cohere_chat",
        }
    }

    /// The OpenTelemetry `gen_ai.operation.name` of a stream in this format: `chat` (OpenAI
    /// chat and Responses, Anthropic Messages, Ollama, Cohere), `generate_content` (Gemini) or
    /// `text_completion` (OpenAI legacy completions); `None` when no format was recognised.
    pub fn operation_name(self) -> Option<&'static str> {
        match self {
            Self::Unknown => None,
            Self::OpenAiChat
            | Self::OpenAiResponses
            | Self::AnthropicMessages
            | Self::Ollama
            | Self::CohereChat => Some(OPERATION_NAMES[0]),
            Self::Gemini => Some(OPERATION_NAMES[1]),
            Self::OpenAiCompletions => Some(OPERATION_NAMES[2]),
        }
    }
}

impl fmt::Display for ProviderFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a stream's output token count came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenSource {
    /// The provider reported usage in the stream; its figure is used.
    Reported,
    /// No usage was reported: one token per content-carrying event.
    Counted,
}

impl TokenSource {
    /// `"reported"` or `"counted"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reported => "reported",
            Self::Counted => "counted",
        }
    }
}

/// Why the model stopped generating, as the provider said it, in one vocabulary for all
/// providers (the README's finish reason table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FinishReason {
    /// The answer ended naturally or at a stop sequence: OpenAI `stop`, Anthropic `end_turn`
    /// and `stop_sequence`, Gemini `STOP`, a Responses `response.completed`, Ollama `stop`,
    /// Cohere `COMPLETE` and `STOP_SEQUENCE`.
    Stop,
    /// Cut by the output token limit: OpenAI and Ollama `length`, Anthropic `max_tokens`,
    /// Gemini and Cohere `MAX_TOKENS`, Responses incomplete for `max_output_tokens`.
    Length,
    /// Withheld or cut by a filter: OpenAI `content_filter`, Anthropic `refusal`, Gemini
    /// `SAFETY`, `RECITATION`, `BLOCKLIST`, `PROHIBITED_CONTENT`, `SPII`, `IMAGE_SAFETY` and any
    /// `promptFeedback.blockReason` (a blocked prompt), Responses incomplete for
    /// `content_filter`.
    ContentFilter,
    /// The model asked for tool calls: OpenAI `tool_calls` and `function_call`, Anthropic
    /// `tool_use`, Cohere `TOOL_CALL`.
    ToolCalls,
    /// Any other reason a provider gave (Anthropic `pause_turn`, Gemini `OTHER`,
    /// `MALFORMED_FUNCTION_CALL`, Cohere `ERROR`, `TIMEOUT`, ...).
    Other,
    /// None given: a stream of a known format ended normally without the event that says
    /// why the model stopped and before its end sentinel, most often because it was cut
    /// upstream and the app ended its body cleanly (README, Outcomes). Set when the stream ends
    /// ([`StreamSummary::finish_reason_at_end`]), never read from the stream.
    Unfinished,
}

impl FinishReason {
    /// Every finish reason, in label order.
    pub const ALL: [FinishReason; 6] = [
        FinishReason::Stop,
        FinishReason::Length,
        FinishReason::ContentFilter,
        FinishReason::ToolCalls,
        FinishReason::Other,
        FinishReason::Unfinished,
    ];

    /// `stop`, `length`, `content_filter`, `tool_calls`, `other` or `unfinished`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::ContentFilter => "content_filter",
            Self::ToolCalls => "tool_calls",
            Self::Other => "other",
            Self::Unfinished => "unfinished",
        }
    }

    /// The reason a provider's own value names (see each variant).
    pub fn from_provider(value: &str) -> Self {
        match value {
            "stop" | "end_turn" | "stop_sequence" | "STOP" | "completed" | "COMPLETE"
            | "STOP_SEQUENCE" => Self::Stop,
            "length" | "max_tokens" | "MAX_TOKENS" | "max_output_tokens" => Self::Length,
            "content_filter" | "refusal" | "SAFETY" | "RECITATION" | "BLOCKLIST"
            | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => Self::ContentFilter,
            "tool_calls" | "function_call" | "tool_use" | "TOOL_CALL" => Self::ToolCalls,
            _ => Self::Other,
        }
    }
}

impl fmt::Display for FinishReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a stream's provider reported about its answer, each figure the latest value seen
/// (providers repeat usage cumulatively: it is assigned, never added), as the provider spelt
/// it: the totals are made comparable across providers only when read (see
/// [`StreamSummary::input_tokens`] and [`StreamSummary::output_tokens`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Reported {
    pub(crate) output: Option<u64>,
    pub(crate) input: Option<u64>,
    pub(crate) cache_read: Option<u64>,
    pub(crate) cache_creation: Option<u64>,
    /// Anthropic's 1-hour cache writes, part of `cache_creation`.
    pub(crate) cache_creation_1h: Option<u64>,
    pub(crate) reasoning: Option<u64>,
    pub(crate) finish: Option<FinishReason>,
}

impl Reported {
    /// Takes every figure `newer` has.
    pub(crate) fn assign(&mut self, newer: Reported) {
        fn take<T>(slot: &mut Option<T>, newer: Option<T>) {
            if newer.is_some() {
                *slot = newer;
            }
        }
        take(&mut self.output, newer.output);
        take(&mut self.input, newer.input);
        take(&mut self.cache_read, newer.cache_read);
        take(&mut self.cache_creation, newer.cache_creation);
        take(&mut self.cache_creation_1h, newer.cache_creation_1h);
        take(&mut self.reasoning, newer.reasoning);
        take(&mut self.finish, newer.finish);
    }

    /// Whether anything was reported.
    pub(crate) fn any(&self) -> bool {
        *self != Self::default()
    }
}

/// What an upstream said of a failure, read from an error body or event in any of the known
/// shapes: OpenAI `{"error":{"type","code","message"}}`, Anthropic
/// `{"type":"error","error":{"type","message"}}`, OpenAI Responses
/// `{"type":"response.failed","response":{"error":{"code","message"}}}`, Gemini
/// `{"error":{"code","status","message"}}`, Ollama `{"error":"..."}`, Cohere
/// `{"type":"message-end","delta":{"error":"..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct UpstreamError {
    /// The error's type, code or status (`overloaded_error`, `rate_limit_exceeded`, ...).
    pub(crate) kind: Option<String>,
    /// Its message.
    pub(crate) message: Option<String>,
}

impl UpstreamError {
    /// Longest kind or message kept (bytes).
    const MAX_TEXT: usize = 512;

    /// Reads an error from a JSON body or event; `None` when it names no error.
    pub(crate) fn from_json(data: &[u8]) -> Option<Self> {
        use serde_json::Value;
        let value: Value = serde_json::from_slice(data.trim_ascii()).ok()?;
        let nested = |outer: &str| value.get(outer).and_then(|o| o.get("error"));
        // The OpenAI Responses `error` event is the error itself, its kind in `code`:
        // `{"type":"error","code":"rate_limit_exceeded","message":".."}`.
        let is_error_event = value.get("type").and_then(Value::as_str) == Some("error");
        let error = match nested("response").or_else(|| nested("delta")) {
            Some(e) if !e.is_null() => e,
            _ => match value.get("error") {
                Some(e) => e,
                None if is_error_event => &value,
                None => return None,
            },
        };
        let text = |v: Option<&Value>| -> Option<String> {
            let s = match v? {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return None,
            };
            // Nothing left of it (empty, or one long token cut away) is no text: the kind
            // falls back to the status or code, and no empty part is logged.
            let kept = cut_between_words(&s, Self::MAX_TEXT);
            (!kept.is_empty()).then(|| kept.to_owned())
        };
        let found = match error {
            Value::String(_) => Self {
                kind: None,
                message: text(Some(error)),
            },
            Value::Object(o) if std::ptr::eq(error, &value) => Self {
                kind: text(o.get("code")),
                message: text(o.get("message")),
            },
            Value::Object(o) => Self {
                kind: text(o.get("type"))
                    .or_else(|| text(o.get("status")))
                    .or_else(|| text(o.get("code"))),
                message: text(o.get("message")),
            },
            _ => return None,
        };
        (found.kind.is_some() || found.message.is_some()).then_some(found)
    }

    /// Reads an error from the start of a JSON body kept only up to a cap (a long error body,
    /// a quota error with its details): the object closed after its last whole member before
    /// the cut, `{"error":{"code":429,"message":"..","details":[{"@ty` read as
    /// `{"error":{"code":429,"message":".."}}`. `None` when that names no error either.
    pub(crate) fn from_cut_json(data: &[u8]) -> Option<Self> {
        let data = data.trim_ascii_start();
        if data.first() != Some(&b'{') {
            return None;
        }
        // The closers each open object or array awaits, and the last comma outside a string
        // with the closers awaited there: the object ends whole if cut at that comma.
        let mut awaited: Vec<u8> = Vec::new();
        let mut last_comma: Option<(usize, Vec<u8>)> = None;
        let (mut in_string, mut escaped) = (false, false);
        for (i, &byte) in data.iter().enumerate() {
            if in_string {
                match byte {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            match byte {
                b'"' => in_string = true,
                b'{' => awaited.push(b'}'),
                b'[' => awaited.push(b']'),
                b'}' | b']' => {
                    awaited.pop();
                    if awaited.is_empty() {
                        // The body ended before the cut: what `from_json` read, or not JSON.
                        return None;
                    }
                }
                b',' => last_comma = Some((i, awaited.clone())),
                _ => {}
            }
        }
        let (at, awaited) = last_comma?;
        let mut closed = data[..at].to_vec();
        closed.extend(awaited.iter().rev());
        Self::from_json(&closed)
    }
}

/// `text` cut to at most `max` bytes where a token ends: a run the cut would split of
/// characters other than whitespace, quotes and brackets (what keys, passwords and URLs with
/// their userinfo are made of) is dropped whole, back to the character before it. The error
/// layer redacts the text later (README, Error records) and recognises a key or a URL's
/// password by its whole shape, so the start of one cut short could pass it. A text that is
/// one such run past `max` bytes is dropped.
fn cut_between_words(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let in_token = |c: char| !c.is_whitespace() && !"\"'`<>()[]{}".contains(c);
    if !text[end..].starts_with(in_token) {
        return text[..end].trim_end();
    }
    text[..end]
        .rfind(|c: char| !in_token(c))
        .map_or("", |at| text[..at].trim_end())
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.kind, &self.message) {
            (Some(k), Some(m)) => write!(f, "{k}: {m}"),
            (Some(k), None) => f.write_str(k),
            (None, Some(m)) => f.write_str(m),
            (None, None) => f.write_str("unknown error"),
        }
    }
}

/// The kind of an error event seen inside a stream after a successful status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamErrorKind {
    /// `authentication_error`, `permission_error`, `invalid_api_key`, `UNAUTHENTICATED`, ...
    Auth,
    /// `rate_limit_error`, `rate_limit_exceeded`, `RESOURCE_EXHAUSTED`.
    RateLimited,
    /// Any other error event (`overloaded_error`, `server_error`, `response.failed`, ...).
    Other,
}

/// A model name kept inline (no allocation); only names that are valid label values
/// (printable ASCII, at most 64 bytes) are kept.
#[derive(Clone, Copy)]
pub(crate) struct ModelName {
    bytes: [u8; 64],
    len: u8,
}

impl ModelName {
    /// Validates `name` as a label value.
    pub(crate) fn new(name: &str) -> Option<Self> {
        if name.is_empty()
            || name.len() > 64
            || !name.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        {
            return None;
        }
        let mut bytes = [0; 64];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Some(Self {
            bytes,
            len: name.len() as u8,
        })
    }

    /// The name.
    pub(crate) fn as_str(&self) -> &str {
        // Only printable ASCII is ever stored.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

impl fmt::Debug for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// What a parser has learnt from a stream so far.
// In the order given: what each event reads first, right after the decoder's (ARCHITECTURE.md,
// The parser's memory).
#[derive(Debug, Clone, Default)]
#[repr(C)]
pub struct StreamSummary {
    events: u64,
    content_events: u64,
    format: ProviderFormat,
    done: bool,
    error: Option<StreamErrorKind>,
    model: Option<ModelName>,
    reported: Reported,
    /// What the first error event said, read from its whole data when it came (its texts
    /// capped), for the log line: boxed, so the summary keeps a pointer for a rare event.
    error_detail: Option<Box<UpstreamError>>,
    malformed_events: u64,
    oversized_events: u64,
    /// The body ended on its own with a success status ([`StreamParser::end`]).
    ended_normally: bool,
}

impl StreamSummary {
    /// The provider format recognised (the first one seen).
    pub fn format(&self) -> ProviderFormat {
        self.format
    }
    /// Events that carried output content (text, tool-call arguments, reasoning).
    pub fn content_events(&self) -> u64 {
        self.content_events
    }
    /// Output tokens: every generated token, reasoning included, as the provider reported
    /// them (Gemini's `candidatesTokenCount` plus its `thoughtsTokenCount`, which it counts
    /// apart); the content events when no usage was reported.
    pub fn output_tokens(&self) -> u64 {
        match (self.reported.output, self.format) {
            (Some(output), ProviderFormat::Gemini) => {
                output.saturating_add(self.reported.reasoning.unwrap_or(0))
            }
            (Some(output), _) => output,
            (None, _) => self.content_events,
        }
    }
    /// Input tokens, when the provider reported them: every prompt token, cached ones included
    /// (Anthropic's `input_tokens` plus its `cache_creation_input_tokens` and
    /// `cache_read_input_tokens`, which it counts apart). Cohere's are its `usage.tokens`, not its
    /// `billed_units`, which leave out the prompt template it adds.
    pub fn input_tokens(&self) -> Option<u64> {
        let input = self.reported.input?;
        Some(match self.format {
            ProviderFormat::AnthropicMessages => input
                .saturating_add(self.reported.cache_creation.unwrap_or(0))
                .saturating_add(self.reported.cache_read.unwrap_or(0)),
            _ => input,
        })
    }
    /// Input tokens read from the provider's prompt cache (part of
    /// [`input_tokens`](Self::input_tokens)), when reported: OpenAI `cached_tokens`,
    /// Anthropic `cache_read_input_tokens`, Gemini `cachedContentTokenCount`, Cohere
    /// `cached_tokens`.
    pub fn cache_read_input_tokens(&self) -> Option<u64> {
        self.reported.cache_read
    }
    /// Input tokens written to the provider's prompt cache (part of
    /// [`input_tokens`](Self::input_tokens)), when reported: Anthropic
    /// `cache_creation_input_tokens`, OpenAI `cache_write_tokens`.
    pub fn cache_creation_input_tokens(&self) -> Option<u64> {
        self.reported.cache_creation
    }
    /// Input tokens written to Anthropic's 1-hour prompt cache (part of
    /// [`cache_creation_input_tokens`](Self::cache_creation_input_tokens)), when reported:
    /// `cache_creation.ephemeral_1h_input_tokens`. The other writes went to the 5-minute cache.
    pub fn cache_creation_1h_input_tokens(&self) -> Option<u64> {
        self.reported.cache_creation_1h
    }
    /// Reasoning tokens (part of [`output_tokens`](Self::output_tokens)), when reported: OpenAI
    /// `reasoning_tokens`, Gemini `thoughtsTokenCount`, Anthropic `thinking_tokens`.
    pub fn reasoning_output_tokens(&self) -> Option<u64> {
        self.reported.reasoning
    }
    /// Why the model stopped, when the stream said so (the latest reason seen).
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.reported.finish
    }
    /// Why the model stopped, once the stream ended: the reason it gave, or
    /// [`FinishReason::Unfinished`] when its body ended normally ([`StreamParser::end`]) in a
    /// known format, with no error event, without giving one, before its end sentinel and with
    /// no event skipped. A body that failed or was dropped has its outcome instead, and a body
    /// in no known format has no finish reason to miss.
    ///
    /// ```
    /// use tower_stream_monitor::parse::{FinishReason, StreamParser, WireFormat};
    ///
    /// let mut parser = StreamParser::new(WireFormat::Sse);
    /// parser.feed(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n");
    /// parser.finish();
    /// assert_eq!(parser.summary().finish_reason_at_end(), None); // not ended yet
    /// // The body ended, cut before the chunk with `finish_reason` and `[DONE]`.
    /// parser.end(true);
    /// assert_eq!(parser.summary().finish_reason_at_end(), Some(FinishReason::Unfinished));
    /// ```
    pub fn finish_reason_at_end(&self) -> Option<FinishReason> {
        // Not cut: the stream reached its end sentinel (`[DONE]`, `message_stop`; a relay may
        // forward it without the chunk with the reason), or an event was skipped (too large,
        // or malformed), which may have been the one with the reason.
        let cut = self.ended_normally
            && self.error.is_none()
            && self.format != ProviderFormat::Unknown
            && !self.done
            && self.oversized_events == 0
            && self.malformed_events == 0;
        self.reported
            .finish
            .or_else(|| cut.then_some(FinishReason::Unfinished))
    }
    /// Whether [`output_tokens`](Self::output_tokens) was reported or counted.
    pub fn token_source(&self) -> TokenSource {
        if self.reported.output.is_some() {
            TokenSource::Reported
        } else {
            TokenSource::Counted
        }
    }
    /// The model named in the stream, if any (and if valid as a label).
    pub fn model(&self) -> Option<&str> {
        self.model.as_ref().map(ModelName::as_str)
    }
    /// The first in-stream error event, if any.
    pub fn error(&self) -> Option<StreamErrorKind> {
        self.error
    }
    /// All events decoded (content or not).
    pub fn events(&self) -> u64 {
        self.events
    }
    /// Events whose data looked like JSON but did not parse; they are skipped.
    pub fn malformed_events(&self) -> u64 {
        self.malformed_events
    }
    /// Events larger than the buffer cap; they are skipped.
    pub fn oversized_events(&self) -> u64 {
        self.oversized_events
    }
    /// Whether the stream's end sentinel (OpenAI's `[DONE]`, Anthropic's `message_stop`) was
    /// seen.
    pub fn done(&self) -> bool {
        self.done
    }

    fn detect(&mut self, format: ProviderFormat) {
        if self.format == ProviderFormat::Unknown {
            self.format = format;
        }
    }

    /// Reported usage is the running total so far (Anthropic and Gemini repeat it cumulatively):
    /// the latest value is assigned, never added.
    fn assign(&mut self, reported: Reported) {
        self.reported.assign(reported);
    }

    fn set_finish(&mut self, finish: Option<FinishReason>) {
        if finish.is_some() {
            self.reported.finish = finish;
        }
    }

    fn set_error(&mut self, data: &[u8], kind: StreamErrorKind) {
        if self.error.is_none() {
            self.error = Some(kind);
            // Read now, whole: a prefix of a long event (a quota error with its details) is
            // not JSON, and would lose the error's type and message.
            self.error_detail = UpstreamError::from_json(data).map(Box::new);
        }
    }

    /// The provider's own words for the first in-stream error: its type or code and message.
    pub(crate) fn error_detail(&self) -> Option<UpstreamError> {
        self.error_detail.as_deref().cloned()
    }

    /// Whether two summaries hold the same figures.
    fn same_as(&self, other: &Self) -> bool {
        self.format == other.format
            && self.content_events == other.content_events
            && self.reported == other.reported
            && self.model() == other.model()
            && self.error == other.error
            && self.error_detail == other.error_detail
            && self.events == other.events
            && self.malformed_events == other.malformed_events
            && self.oversized_events == other.oversized_events
            && self.done == other.done
    }

    fn set_model(&mut self, raw: Option<&RawValue>) {
        if self.model.is_none() {
            if let Some(raw) = raw {
                if let Some(name) = raw
                    .get()
                    .strip_prefix('"')
                    .and_then(|s| s.strip_suffix('"'))
                {
                    // JSON may escape any character (`openai\/gpt-4o`, as PHP writes a slash):
                    // the name is the decoded string, else one model would be two.
                    self.model = if name.contains('\\') {
                        serde_json::from_str::<String>(raw.get())
                            .ok()
                            .and_then(|decoded| ModelName::new(&decoded))
                    } else {
                        ModelName::new(name)
                    };
                }
            }
        }
    }
}

/// The bytes at the end of an SSE decoder that a frame holding one whole event reads: its event
/// buffer (whose capacity holds the decoder enum's tag), eight flags, the event type's length
/// and the event cap (ARCHITECTURE.md, The parser's memory).
#[cfg(test)]
const WHOLE_FRAME_BYTES: usize =
    std::mem::size_of::<Vec<u8>>() + 8 + 2 * std::mem::size_of::<usize>();

#[derive(Debug)]
enum Decoder {
    Sse(SseDecoder),
    Ndjson(NdjsonDecoder),
}

/// An incremental, chunk-split invariant parser for one streamed response.
///
/// Feeding it allocates nothing once its event buffer has grown to the largest event seen
/// (at most [`DEFAULT_MAX_EVENT_BYTES`] or the configured cap).
// Its memory is laid out by hand (`repr(C)`, on cache lines): the usual event, one whole event
// in a frame answered by the stream's first template, reads three lines of it, where the
// compiler's own order spread the same fields over about nine (ARCHITECTURE.md, The parser's
// memory).
#[derive(Debug)]
#[repr(C, align(64))]
pub struct StreamParser {
    decoder: Decoder,
    /// Whether a template of the stream can answer a whole frame (`Templates::one_line`),
    /// copied here, between the lines the frame reads anyway, after each event that may change
    /// it, so that the frame does not read the templates' head for it.
    answerable: bool,
    summary: StreamSummary,
    templates: Templates,
    /// Whether every frame goes through the decoder's state machine (the reference parser
    /// that tests compare with).
    #[cfg(test)]
    plain: bool,
}

impl StreamParser {
    /// A parser with the default event size cap.
    pub fn new(wire: WireFormat) -> Self {
        Self::with_max_event_bytes(wire, DEFAULT_MAX_EVENT_BYTES)
    }

    /// A parser that skips (and counts) events larger than `max_event_bytes`.
    pub fn with_max_event_bytes(wire: WireFormat, max_event_bytes: usize) -> Self {
        let decoder = match wire {
            WireFormat::Sse => Decoder::Sse(SseDecoder::new(max_event_bytes)),
            WireFormat::Ndjson => Decoder::Ndjson(NdjsonDecoder::new(max_event_bytes)),
        };
        Self {
            decoder,
            answerable: false,
            summary: StreamSummary::default(),
            templates: Templates::new(),
            #[cfg(test)]
            plain: false,
        }
    }

    /// A parser that owns no buffer, for a pooled box between streams.
    pub(crate) fn placeholder() -> Self {
        Self {
            decoder: Decoder::Ndjson(NdjsonDecoder::new(0)),
            answerable: false,
            summary: StreamSummary::default(),
            templates: Templates::placeholder(),
            #[cfg(test)]
            plain: false,
        }
    }

    /// Feeds the next bytes of the body. Returns how many content events they completed.
    pub fn feed(&mut self, chunk: &[u8]) -> u64 {
        // A frame that is one whole event, as providers flush them: if its data holds no line
        // break, the state machine would dispatch just that event and end between events. A
        // template of the stream answers for it (a template never matches a line break), else
        // it is read in full, without going through the state machine.
        #[cfg(test)]
        let plain = self.plain;
        #[cfg(not(test))]
        let plain = false;
        if let (Decoder::Sse(d), false) = (&mut self.decoder, plain) {
            if let Some((event_type, data)) = d.whole_frame(chunk) {
                let chat = provider::chat_view(&self.summary, self.summary.events + 1);
                let answer = if self.answerable {
                    self.templates
                        .answer(&mut self.summary, event_type, data, chat)
                } else {
                    None
                };
                let content = match answer {
                    Some(content) => Some(content),
                    None if memchr::memchr2(b'\n', b'\r', data).is_none() => {
                        let content =
                            event::apply(&mut self.summary, &mut self.templates, event_type, data);
                        self.answerable = self.templates.one_line();
                        Some(content)
                    }
                    None => None,
                };
                if let Some(content) = content {
                    d.whole_frame_taken();
                    self.summary.content_events += u64::from(content);
                    return u64::from(content);
                }
            }
        }
        let before = self.summary.content_events;
        let mut sink = Sink {
            summary: &mut self.summary,
            templates: &mut self.templates,
        };
        match &mut self.decoder {
            Decoder::Sse(d) => {
                d.feed(chunk, &mut sink);
                self.summary.oversized_events = d.oversized_events();
            }
            Decoder::Ndjson(d) => {
                d.feed(chunk, &mut |event_type: &[u8], data: &[u8]| {
                    sink.event(event_type, data)
                });
                self.summary.oversized_events = d.oversized_events();
            }
        }
        self.answerable = self.templates.one_line();
        self.summary.content_events - before
    }

    /// Tells the parser how the body ended: `normally` when it ended on its own (not cut by
    /// an error, a timeout or the client) with a success status; the finish reason then says
    /// whether the stream was cut upstream ([`StreamSummary::finish_reason_at_end`]).
    pub fn end(&mut self, normally: bool) {
        self.summary.ended_normally = normally;
    }

    /// Marks the end of the body. An unterminated SSE event is discarded (as browsers do); a
    /// last NDJSON line without a newline is still parsed. Returns the content events it completed.
    pub fn finish(&mut self) -> u64 {
        let before = self.summary.content_events;
        if let Decoder::Ndjson(d) = &mut self.decoder {
            let mut sink = Sink {
                summary: &mut self.summary,
                templates: &mut self.templates,
            };
            d.finish(&mut |event_type: &[u8], data: &[u8]| sink.event(event_type, data));
            self.summary.oversized_events = d.oversized_events();
        }
        self.summary.content_events - before
    }

    /// The framing this parser decodes.
    pub fn wire(&self) -> WireFormat {
        match self.decoder {
            Decoder::Sse(_) => WireFormat::Sse,
            Decoder::Ndjson(_) => WireFormat::Ndjson,
        }
    }

    /// Whether the bytes fed so far end between two events, so that new bytes appended to the
    /// stream start a fresh event (or line).
    pub fn at_event_boundary(&self) -> bool {
        match &self.decoder {
            Decoder::Sse(d) => d.at_event_boundary(),
            Decoder::Ndjson(d) => d.at_line_start(),
        }
    }

    /// What has been learnt so far.
    pub fn summary(&self) -> &StreamSummary {
        &self.summary
    }
}

#[cfg(test)]
impl StreamParser {
    /// A parser that never learns a template, nor takes a whole frame as an event: every event
    /// is decoded by the state machine and read by serde_json.
    pub(crate) fn without_templates(wire: WireFormat, max_event_bytes: usize) -> Self {
        let mut parser = Self::with_max_event_bytes(wire, max_event_bytes);
        parser.templates.disable();
        parser.plain = true;
        parser
    }

    /// Events answered by a template so far.
    pub(crate) fn template_hits(&self) -> u64 {
        self.templates.hits()
    }

    /// Events answered by a template, the stream's own or one shared by the thread's streams.
    pub(crate) fn template_answers(&self) -> u64 {
        self.templates.answered()
    }
}

/// Where decoded events go: the provider reading, with the templates' shortcut.
struct Sink<'a> {
    summary: &'a mut StreamSummary,
    templates: &'a mut Templates,
}

impl EventSink for Sink<'_> {
    fn event(&mut self, event_type: &[u8], data: &[u8]) {
        if event::apply(self.summary, self.templates, event_type, data) {
            self.summary.content_events += 1;
        }
    }

    fn recognise(&mut self, event_type: &[u8], rest: &[u8]) -> Option<usize> {
        event::recognise(self.summary, self.templates, event_type, rest)
    }

    fn accept(&mut self) {
        if event::accept(self.summary, self.templates) {
            self.summary.content_events += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{
        FinishReason, ProviderFormat, StreamErrorKind, StreamParser, UpstreamError, WireFormat,
    };

    /// An event that a template answers reads two cache lines of the decoder and the summary:
    /// the decoder's tail, whether a template may answer (`answerable`), and the summary's
    /// head, which follow it (ARCHITECTURE.md, The parser's memory).
    #[test]
    fn the_decoders_tail_and_the_summarys_head_share_two_lines() {
        use super::{Decoder, StreamSummary, WHOLE_FRAME_BYTES, sse::SseDecoder};
        use std::mem::{align_of, offset_of, size_of};
        assert_eq!(align_of::<StreamParser>(), 64);
        assert_eq!(offset_of!(StreamParser, decoder), 0);
        // The SSE decoder fills the enum: it sits at its start.
        assert_eq!(size_of::<Decoder>(), size_of::<SseDecoder>());
        let first = size_of::<SseDecoder>() - WHOLE_FRAME_BYTES;
        let answerable = offset_of!(StreamParser, answerable);
        assert!(first < answerable, "after the decoder");
        let summary = offset_of!(StreamParser, summary);
        // `model`'s first byte: where `Option<ModelName>` keeps its tag today (the compiler
        // does not promise it; a layout that moved it would only cost a line, not be wrong).
        let last = summary
            + [
                offset_of!(StreamSummary, events) + size_of::<u64>(),
                offset_of!(StreamSummary, content_events) + size_of::<u64>(),
                offset_of!(StreamSummary, format) + 1,
                offset_of!(StreamSummary, model) + 1,
            ]
            .into_iter()
            .max()
            .unwrap_or(0);
        assert!(
            (last - 1) / 64 - first / 64 <= 1,
            "at most two lines: {first}..{last}"
        );
    }

    fn parsed(format: WireFormat, body: &str) -> StreamParser {
        let mut parser = StreamParser::new(format);
        parser.feed(body.as_bytes());
        parser.finish();
        parser
    }

    fn chat_chunk(delta: &str, finish: &str) -> String {
        format!(
            "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\
             \"model\":\"gpt-4o\",\"choices\":[{{\"index\":0,\"delta\":{delta},\
             \"finish_reason\":{finish}}}]}}\n\n"
        )
    }

    /// An `event: error` is an error however late it comes: the chat view, which reads an
    /// OpenAI chat stream's chunks from its first few on, passes it to the full one.
    #[test]
    fn an_error_event_is_an_error_after_chat_chunks_too() {
        let chunks = (0..6)
            .map(|i| chat_chunk(&format!(r#"{{"content":"tok{i}"}}"#), "null"))
            .collect::<String>();
        for (error, kind) in [
            (
                r#"{"message":"upstream connection reset"}"#,
                StreamErrorKind::Other,
            ),
            (
                r#"{"type":"error","code":"rate_limit_exceeded","message":"Rate limit reached"}"#,
                StreamErrorKind::RateLimited,
            ),
        ] {
            let alone = parsed(WireFormat::Sse, &format!("event: error\ndata: {error}\n\n"));
            let late = parsed(
                WireFormat::Sse,
                &format!("{chunks}event: error\ndata: {error}\n\n"),
            );
            assert_eq!(alone.summary().error(), Some(kind), "{error} alone");
            assert_eq!(late.summary().error(), Some(kind), "{error} after chunks");
            assert_eq!(late.summary().content_events(), 6);
        }
    }

    /// The OpenAI Responses `error` event has its message as a string and its kind in `code`.
    #[test]
    fn a_responses_error_event_says_its_kind() {
        let head = concat!(
            "event: response.created\n",
            r#"data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","created_at":1,"status":"in_progress","model":"gpt-4.1","output":[],"usage":null}}"#,
            "\n\nevent: response.output_text.delta\n",
            r#"data: {"type":"response.output_text.delta","sequence_number":1,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi","logprobs":[]}"#,
            "\n\n",
        );
        for (code, kind) in [
            ("rate_limit_exceeded", StreamErrorKind::RateLimited),
            ("invalid_api_key", StreamErrorKind::Auth),
            ("server_error", StreamErrorKind::Other),
        ] {
            let error = format!(
                r#"{{"type":"error","code":"{code}","message":"boom","param":null,"sequence_number":2}}"#
            );
            let parser = parsed(
                WireFormat::Sse,
                &format!("{head}event: error\ndata: {error}\n\n"),
            );
            assert_eq!(parser.summary().error(), Some(kind), "{code}");
            assert_eq!(parser.summary().malformed_events(), 0, "{code}");
            let upstream = UpstreamError::from_json(error.as_bytes()).map(|e| e.to_string());
            assert_eq!(upstream, Some(format!("{code}: boom")));
        }
    }

    /// Tool calls and reasoning are content, whichever way a provider sends them: the legacy
    /// OpenAI `function_call`, Ollama's `tool_calls` and `thinking`.
    #[test]
    fn legacy_function_calls_and_ollama_tools_and_thinking_are_content() {
        let body = [
            chat_chunk(
                r#"{"role":"assistant","content":null,"function_call":{"name":"get_weather","arguments":""}}"#,
                "null",
            ),
            chat_chunk(r#"{"function_call":{"arguments":"{\"city\":"}}"#, "null"),
            chat_chunk("{}", r#""function_call""#),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat();
        let legacy = parsed(WireFormat::Sse, &body);
        assert_eq!(legacy.summary().content_events(), 2);
        assert_eq!(
            legacy.summary().finish_reason(),
            Some(FinishReason::ToolCalls)
        );

        let ollama = concat!(
            r#"{"model":"qwen3","created_at":"2025-01-01T00:00:00Z","message":{"role":"assistant","content":"","thinking":"Let me think"},"done":false}"#,
            "\n",
            r#"{"model":"qwen3","created_at":"2025-01-01T00:00:01Z","message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"get_weather","arguments":{"city":"Paris"}}}]},"done":false}"#,
            "\n",
            r#"{"model":"qwen3","created_at":"2025-01-01T00:00:01Z","thinking":"Generate view","response":"","done":false}"#,
            "\n",
            r#"{"model":"qwen3","created_at":"2025-01-01T00:00:02Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","prompt_eval_count":20,"eval_count":30}"#,
            "\n",
        );
        let ollama = parsed(WireFormat::Ndjson, ollama);
        assert_eq!(ollama.summary().format(), ProviderFormat::Ollama);
        assert_eq!(ollama.summary().content_events(), 3);
        assert_eq!(ollama.summary().finish_reason(), Some(FinishReason::Stop));
    }

    /// The finish reason of a parser whose body ended, `normally` or not.
    fn at_end(mut parser: StreamParser, normally: bool) -> Option<FinishReason> {
        parser.end(normally);
        parser.summary().finish_reason_at_end()
    }

    /// A stream that ended normally without a finish reason is `unfinished`; Ollama servers
    /// older than `done_reason` end with `done: true` alone, which is a finish, not a cut.
    #[test]
    fn a_stream_without_its_finish_reason_is_unfinished() {
        let cut = || parsed(WireFormat::Sse, &chat_chunk(r#"{"content":"Hi"}"#, "null"));
        assert_eq!(cut().summary().finish_reason(), None);
        assert_eq!(cut().summary().finish_reason_at_end(), None, "not ended");
        assert_eq!(at_end(cut(), true), Some(FinishReason::Unfinished));
        assert_eq!(at_end(cut(), false), None);
        assert_eq!(
            at_end(parsed(WireFormat::Sse, "data: hello\n\n"), true),
            None
        );
        // An error event: the outcome says it.
        let errored = [
            chat_chunk(r#"{"content":"Hi"}"#, "null"),
            "data: {\"error\":{\"type\":\"server_error\",\"message\":\"boom\"}}\n\n".to_owned(),
        ]
        .concat();
        assert_eq!(at_end(parsed(WireFormat::Sse, &errored), true), None);

        let old_ollama = parsed(
            WireFormat::Ndjson,
            concat!(
                r#"{"model":"llama2","response":"Hi","done":false}"#,
                "\n",
                r#"{"model":"llama2","response":"","done":true,"eval_count":1}"#,
                "\n",
            ),
        );
        assert_eq!(old_ollama.summary().format(), ProviderFormat::Ollama);
        assert_eq!(at_end(old_ollama, true), Some(FinishReason::Other));
        let cut_ollama = parsed(
            WireFormat::Ndjson,
            concat!(r#"{"model":"llama2","response":"Hi","done":false}"#, "\n"),
        );
        assert_eq!(at_end(cut_ollama, true), Some(FinishReason::Unfinished));
    }

    /// Streams that finished without a reason in their events are not `unfinished`: one that
    /// reached its end sentinel (a relay forwarding content and `[DONE]` or `message_stop`
    /// alone), one whose skipped event may have held the reason, and a prompt Gemini blocked
    /// (`content_filter`).
    #[test]
    fn finished_streams_without_a_reason_are_not_unfinished() {
        let at_end = |parser: StreamParser| at_end(parser, true);
        let relayed = [
            chat_chunk(r#"{"content":"Hi"}"#, "null"),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat();
        assert_eq!(at_end(parsed(WireFormat::Sse, &relayed)), None);
        let anthropic = concat!(
            "event: content_block_delta\n",
            r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            "\n\nevent: message_stop\n",
            r#"data: {"type":"message_stop"}"#,
            "\n\n",
        );
        assert_eq!(at_end(parsed(WireFormat::Sse, anthropic)), None);
        // The same without `event:` lines.
        let untyped = concat!(
            r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            "\n\n",
            r#"data: {"type":"message_stop"}"#,
            "\n\n",
        );
        assert_eq!(at_end(parsed(WireFormat::Sse, untyped)), None);

        let mut small = StreamParser::with_max_event_bytes(WireFormat::Sse, 600);
        small.feed(
            format!(
                "event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}}\n\n\
                 event: response.completed\ndata: {{\"type\":\"response.completed\",\"response\":{{\"instructions\":\"{}\"}}}}\n\n",
                "x".repeat(1_000)
            )
            .as_bytes(),
        );
        small.finish();
        assert_eq!(small.summary().oversized_events(), 1);
        assert_eq!(at_end(small), None);

        let blocked = concat!(
            r#"data: {"promptFeedback":{"blockReason":"SAFETY","safetyRatings":[]},"usageMetadata":{"promptTokenCount":8,"totalTokenCount":8},"modelVersion":"gemini-2.5-flash"}"#,
            "\r\n\r\n",
        );
        let blocked = parsed(WireFormat::Sse, blocked);
        assert_eq!(blocked.summary().format(), ProviderFormat::Gemini);
        assert_eq!(at_end(blocked), Some(FinishReason::ContentFilter));
    }

    /// An untyped body is SSE when its first frame starts with any SSE field or a comment.
    #[test]
    fn sniffing_knows_every_sse_field() {
        for start in [
            &b"id: 1\ndata: {}\n\n"[..],
            b"retry: 3000\n\ndata: {}\n\n",
            b"\xEF\xBB\xBFdata: {}\n\n",
            b"  event: x\n",
            b": ping\n\n",
        ] {
            assert_eq!(WireFormat::sniff(start), Some(WireFormat::Sse), "{start:?}");
        }
        for start in [&b"{\"id\":1}"[..], b"hello", b""] {
            assert_eq!(WireFormat::sniff(start), None, "{start:?}");
        }
    }

    #[test]
    fn upstream_errors_read_every_provider_shape() {
        let read = |s: &str| UpstreamError::from_json(s.as_bytes()).map(|e| e.to_string());
        assert_eq!(
            read(r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#).as_deref(),
            Some("requests: Rate limit reached")
        );
        assert_eq!(
            read(r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#)
                .as_deref(),
            Some("overloaded_error: Overloaded")
        );
        assert_eq!(
            read(r#"{"type":"response.failed","response":{"error":{"code":"server_error","message":"boom"}}}"#).as_deref(),
            Some("server_error: boom")
        );
        assert_eq!(
            read(r#"{"error":{"code":429,"message":"Quota","status":"RESOURCE_EXHAUSTED"}}"#)
                .as_deref(),
            Some("RESOURCE_EXHAUSTED: Quota")
        );
        assert_eq!(
            read(r#"{"error":"model not found"}"#).as_deref(),
            Some("model not found")
        );
        assert_eq!(
            read(r#"{"type":"message-end","delta":{"error":"internal error","finish_reason":"ERROR"}}"#).as_deref(),
            Some("internal error")
        );
        // A token the cut would split is dropped whole, not kept in part.
        let long = format!("{} sk-proj-AbCdEfGh12345678", "word ".repeat(100));
        let message = format!(r#"{{"error":{{"message":"{long}"}}}}"#);
        assert_eq!(
            read(&message),
            Some("word ".repeat(100).trim_end().to_owned())
        );
        // With no space to cut at, the token the cut would split is dropped back to the
        // character before it (a URL with its userinfo is one); a text that is one long token
        // is dropped.
        let key = format!("hf_{}", "Z".repeat(40));
        let unbroken = format!("{}({key}", "a".repeat(500));
        let message = format!(r#"{{"error":{{"message":"{unbroken}"}}}}"#);
        assert_eq!(read(&message), Some("a".repeat(500)));
        for host in ["hostname.example/x", ""] {
            let password = "p".repeat(20);
            let url = format!("{} https://user:{password}@{host}", "/".repeat(478));
            let message = format!(r#"{{"error":{{"message":"{url}"}}}}"#);
            assert_eq!(read(&message), Some("/".repeat(478)), "{url}");
        }
        let message = format!(
            r#"{{"error":{{"type":"{}","code":"invalid_key","message":"{}"}}}}"#,
            "y".repeat(600),
            "x".repeat(600)
        );
        let error = UpstreamError::from_json(message.as_bytes()).expect("an error");
        assert_eq!(
            (error.kind.as_deref(), error.message.as_deref()),
            (Some("invalid_key"), None)
        );
        assert_eq!(read(r#"{"choices":[]}"#), None);
        assert_eq!(read("not json"), None);
        assert_eq!(read(r#"{"error":null}"#), None);
    }

    fn parse(body: &str) -> (StreamParser, u64) {
        let mut parser = StreamParser::new(WireFormat::Sse);
        let content = parser.feed(body.as_bytes()) + parser.finish();
        (parser, content)
    }

    /// Without `event:` lines a Cohere stream reads the same, through the full view.
    #[test]
    fn cohere_reads_the_same_without_event_lines() {
        let with = include_str!("../../tests/fixtures/cohere-chat.sse");
        let without: String = with
            .lines()
            .filter(|l| !l.starts_with("event:"))
            .map(|l| format!("{l}\n"))
            .collect();
        let (a, content_a) = parse(with);
        let (b, content_b) = parse(&without);
        assert_eq!(content_a, content_b);
        assert_eq!(format!("{:?}", a.summary()), format!("{:?}", b.summary()));
        assert_eq!(b.summary().format(), ProviderFormat::CohereChat);
    }

    /// The tool plan and tool calls are content; counts Cohere's schema types as floats read.
    #[test]
    fn cohere_tool_calls_and_float_counts() {
        let body = concat!(
            "event: tool-plan-delta\n",
            r#"data: {"type":"tool-plan-delta","delta":{"message":{"tool_plan":"I will"}}}"#,
            "\n\nevent: tool-call-start\n",
            r#"data: {"type":"tool-call-start","index":0,"delta":{"message":{"tool_calls":{"id":"get_weather_1","type":"function","function":{"name":"get_weather","arguments":""}}}}}"#,
            "\n\nevent: tool-call-delta\n",
            r#"data: {"type":"tool-call-delta","index":0,"delta":{"message":{"tool_calls":{"function":{"arguments":"{\"city\":"}}}}}"#,
            "\n\nevent: tool-call-delta\n",
            r#"data: {"type":"tool-call-delta","index":0,"delta":{"message":{"tool_calls":{"function":{"arguments":""}}}}}"#,
            "\n\nevent: tool-call-end\n",
            r#"data: {"type":"tool-call-end","index":0}"#,
            "\n\nevent: message-end\n",
            r#"data: {"type":"message-end","delta":{"finish_reason":"TOOL_CALL","usage":{"billed_units":{"input_tokens":30.0,"output_tokens":21.0},"tokens":{"input_tokens":1040.0,"output_tokens":21.0},"cached_tokens":512}}}"#,
            "\n\n",
        );
        let (parser, content) = parse(body);
        let s = parser.summary();
        assert_eq!(content, 3);
        assert_eq!(s.finish_reason(), Some(FinishReason::ToolCalls));
        assert_eq!(s.input_tokens(), Some(1040));
        assert_eq!(s.output_tokens(), 21);
        assert_eq!(s.cache_read_input_tokens(), Some(512));
        assert_eq!(s.error(), None);
    }

    /// An error body cut at a cap is read up to its last whole member: the kind and message
    /// before the cut are kept; a body whole, not JSON or naming no error reads nothing more.
    #[test]
    fn a_cut_error_body_keeps_what_came_before_the_cut() {
        let message = "Quota exceeded. ".repeat(20);
        let body = format!(
            "{{\"error\":{{\"code\":429,\"message\":\"{message}\",\"status\":\"RESOURCE_EXHAUSTED\",\"details\":[{{\"@type\":\"type.googleapis.com/google.rpc.QuotaFailure\",\"violations\":[{{\"subject\":\"a, b\"}}]}}]}}}}"
        );
        let whole = UpstreamError::from_json(body.as_bytes()).expect("the whole body");
        for cut in (body.find("details").expect("details"))..body.len() - 1 {
            let prefix = &body.as_bytes()[..cut];
            assert_eq!(UpstreamError::from_json(prefix), None);
            assert_eq!(
                UpstreamError::from_cut_json(prefix).as_ref(),
                Some(&whole),
                "{cut}"
            );
        }
        let before_message = &body.as_bytes()[..body.find("Quota").expect("message")];
        let code_only = UpstreamError::from_cut_json(before_message).expect("the code");
        assert_eq!(code_only.kind.as_deref(), Some("429"));
        assert_eq!(code_only.message, None);
        assert_eq!(UpstreamError::from_cut_json(body.as_bytes()), None);
        assert_eq!(UpstreamError::from_cut_json(b"<html><body>502, bad"), None);
        assert_eq!(
            UpstreamError::from_cut_json(b"{\"ok\":1,\"data\":[1,2"),
            None
        );
    }

    /// A model name with a JSON escape is the decoded name: `openai\/gpt-4o` is the
    /// `openai/gpt-4o` of the events that do not escape the slash.
    #[test]
    fn an_escaped_model_name_is_decoded() {
        let escaped = concat!(
            r#"data: {"model":"openai\/gpt-4o","choices":[{"delta":{"content":"hi"}}]}"#,
            "\n\n"
        );
        let plain = concat!(
            r#"data: {"model":"openai/gpt-4o","choices":[{"delta":{"content":"hi"}}]}"#,
            "\n\n"
        );
        assert_eq!(parse(escaped).0.summary().model(), Some("openai/gpt-4o"));
        assert_eq!(parse(plain).0.summary().model(), Some("openai/gpt-4o"));
        let unicode = "data: {\"model\":\"gpt\\u002d4o\",\"choices\":[]}\n\n";
        assert_eq!(parse(unicode).0.summary().model(), Some("gpt-4o"));
    }

    /// An error event of a few kilobytes (a quota error with its details) keeps its type and
    /// message: it is read whole, not from a prefix that is no longer JSON.
    #[test]
    fn a_long_error_event_keeps_its_detail() {
        let message = "Quota exceeded for metric generate_content_requests. ".repeat(50);
        let body = format!(
            "data: {{\"error\":{{\"code\":429,\"status\":\"RESOURCE_EXHAUSTED\",\"message\":\"{message}\"}}}}\n\n"
        );
        let (parser, _) = parse(&body);
        let s = parser.summary();
        assert!(s.error().is_some());
        let detail = s.error_detail().expect("the error's detail");
        assert_eq!(detail.kind.as_deref(), Some("RESOURCE_EXHAUSTED"));
        assert!(
            detail
                .message
                .is_some_and(|m| m.starts_with("Quota exceeded"))
        );
    }

    /// `billed_units` stand in when `tokens` is absent; an `ERROR` finish is a stream error.
    #[test]
    fn cohere_error_finish_and_billed_fallback() {
        let body = concat!(
            "event: content-delta\n",
            r#"data: {"type":"content-delta","index":0,"delta":{"message":{"content":{"text":"Hi"}}}}"#,
            "\n\nevent: message-end\n",
            r#"data: {"type":"message-end","delta":{"error":"internal server error","finish_reason":"ERROR","usage":{"billed_units":{"input_tokens":7,"output_tokens":1}}}}"#,
            "\n\n",
        );
        let (parser, content) = parse(body);
        let s = parser.summary();
        assert_eq!(content, 1);
        assert_eq!(s.finish_reason(), Some(FinishReason::Other));
        assert_eq!(s.error(), Some(StreamErrorKind::Other));
        assert_eq!(
            s.error_detail().map(|e| e.to_string()).as_deref(),
            Some("internal server error")
        );
        assert_eq!((s.input_tokens(), s.output_tokens()), (Some(7), 1));
    }

    /// The two-byte check before the scan rules out no streaming type, in any case or spacing.
    #[test]
    fn content_types_read_past_the_quick_check() {
        use super::WireFormat::{self, Ndjson, Sse};
        for (value, wire) in [
            ("text/event-stream", Some(Sse)),
            ("  Text/Event-Stream ; charset=utf-8", Some(Sse)),
            ("TEXT/EVENT-STREAM", Some(Sse)),
            ("application/x-ndjson", Some(Ndjson)),
            ("Application/NDJSON;charset=utf-8", Some(Ndjson)),
            ("application/jsonl", Some(Ndjson)),
            ("application/X-JSONLINES", Some(Ndjson)),
            ("application/json", None),
            ("application/jsonlines", None),
            ("text/plain; charset=utf-8", None),
            ("text/event-streams", None),
            ("text/html", None),
            ("t", None),
            ("", None),
            ("image/png", None),
        ] {
            assert_eq!(WireFormat::from_content_type(value), wire, "{value:?}");
        }
        // A header value need not be text: bytes past the essence change nothing, and bytes
        // in it match no type.
        for (value, wire) in [
            (&b"text/event-stream; charset=\xff"[..], Some(Sse)),
            (b"application/x-ndjson;\x80", Some(Ndjson)),
            (b"text/event-strea\xed", None),
            (b"\xfftext/event-stream", None),
            (b"text/\xe9vent-stream", None),
        ] {
            assert_eq!(
                WireFormat::from_content_type_bytes(value),
                wire,
                "{value:?}"
            );
        }
    }
}
