//! What one decoded event means: content or not, usage, model, in-stream error.
//!
//! One borrowed, allocation-free view ([`Payload`]) covers the event shapes of OpenAI chat
//! completions, OpenAI Responses, Anthropic Messages, Gemini and Ollama (Cohere's deeper events
//! have their own, [`CohereEvent`]): serde skips every field not named here, nested values we
//! only test for emptiness stay as borrowed `RawValue`s, and arrays are walked by visitors that
//! keep one bool instead of building a `Vec`. Most events of a stream never get here: a template
//! learnt from an earlier one answers for them (`template.rs`).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::{FinishReason, ProviderFormat, Reported, StreamErrorKind, StreamSummary};

type Raw<'a> = Option<&'a RawValue>;

#[derive(serde::Deserialize)]
struct Payload<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Raw<'a>,
    #[serde(borrow, default)]
    model: Raw<'a>,
    #[serde(rename = "modelVersion", borrow, default)]
    model_version: Raw<'a>,
    #[serde(default)]
    choices: Option<AnyContent<Choice<'a>>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(borrow, default)]
    error: Raw<'a>,
    #[serde(borrow, default)]
    code: Raw<'a>,
    // Kept raw: a delta string is tested for emptiness without unescaping it (which would make
    // serde_json allocate), and Anthropic's small delta object is parsed from it when needed.
    #[serde(borrow, default)]
    delta: Raw<'a>,
    // Parsed in place rather than captured raw: skipping a nested value makes serde_json
    // allocate a scratch stack, which the hot path avoids.
    // A string in an OpenAI Responses `error` event (`{"type":"error","code":..,"message":".."}`)
    // or a bare `{"message":".."}` error: taken as such, not as a malformed event.
    #[serde(borrow, default)]
    message: Option<TextOr<MessageObject<'a>>>,
    #[serde(borrow, default)]
    response: Option<TextOr<ResponseObject<'a>>>,
    #[serde(default)]
    candidates: Option<AnyContent<Candidate<'a>>>,
    #[serde(rename = "usageMetadata", default)]
    usage_metadata: Option<GeminiUsage>,
    /// Gemini's answer to a prompt it blocked: no candidates, a `blockReason`.
    #[serde(rename = "promptFeedback", borrow, default)]
    prompt_feedback: Option<PromptFeedback<'a>>,
    #[serde(default)]
    done: Option<bool>,
    #[serde(default)]
    eval_count: Option<u64>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(borrow, default)]
    done_reason: Raw<'a>,
    #[serde(borrow, default)]
    thinking: Raw<'a>,
}

/// The fast path for OpenAI chat streams once the format and model are known: the same fields
/// minus those only the first chunk needs, so fewer values are validated per chunk.
#[derive(serde::Deserialize)]
struct ChatChunk<'a> {
    #[serde(borrow, default)]
    choices: Option<AnyContent<Choice<'a>>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(borrow, default)]
    error: Raw<'a>,
}

/// Token usage in the OpenAI chat (`prompt_tokens`/`completion_tokens`, with
/// `*_tokens_details`), Responses (`input_tokens`/`output_tokens`, with `*_tokens_details`) or
/// Anthropic (`input_tokens`/`output_tokens`, with `cache_*_input_tokens`) spelling.
#[derive(serde::Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<TokenDetails>,
    #[serde(default)]
    input_tokens_details: Option<TokenDetails>,
    #[serde(default)]
    completion_tokens_details: Option<TokenDetails>,
    #[serde(default)]
    output_tokens_details: Option<TokenDetails>,
    #[serde(default)]
    cache_creation: Option<CacheCreation>,
    // Anthropic's nested objects, named so that serde walks them without allocating (see
    // [`Skip`]).
    #[serde(rename = "server_tool_use", default)]
    _server_tool_use: Option<Skip>,
}

/// Anthropic's `usage.cache_creation`: the cache writes by time to live. Its 5-minute figure is
/// the rest of `cache_creation_input_tokens`, so only the 1-hour one is kept.
#[derive(serde::Deserialize)]
struct CacheCreation {
    #[serde(default)]
    ephemeral_1h_input_tokens: Option<u64>,
}

/// OpenAI's `prompt_tokens_details` / `completion_tokens_details` (and the Responses
/// `input_tokens_details` / `output_tokens_details`).
#[derive(serde::Deserialize)]
struct TokenDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    cache_write_tokens: Option<u64>,
    #[serde(default)]
    reasoning_tokens: Option<u64>,
    /// Anthropic's `output_tokens_details.thinking_tokens`.
    #[serde(default)]
    thinking_tokens: Option<u64>,
}

impl Usage {
    /// The figures as spelt: Anthropic's `input_tokens` stays without its cache parts here
    /// ([`StreamSummary::input_tokens`] adds them).
    fn reported(&self) -> Reported {
        let detail =
            |d: &Option<TokenDetails>, f: fn(&TokenDetails) -> Option<u64>| d.as_ref().and_then(f);
        let input_detail = |f: fn(&TokenDetails) -> Option<u64>| {
            detail(&self.prompt_tokens_details, f).or(detail(&self.input_tokens_details, f))
        };
        let output_detail = |f: fn(&TokenDetails) -> Option<u64>| {
            detail(&self.completion_tokens_details, f).or(detail(&self.output_tokens_details, f))
        };
        Reported {
            output: self.completion_tokens.or(self.output_tokens),
            input: self.prompt_tokens.or(self.input_tokens),
            cache_read: input_detail(|d| d.cached_tokens).or(self.cache_read_input_tokens),
            cache_creation: self
                .cache_creation_input_tokens
                .or(input_detail(|d| d.cache_write_tokens)),
            cache_creation_1h: self
                .cache_creation
                .as_ref()
                .and_then(|c| c.ephemeral_1h_input_tokens),
            reasoning: output_detail(|d| d.reasoning_tokens)
                .or(output_detail(|d| d.thinking_tokens)),
            finish: None,
        }
    }
}

/// Gemini's `promptFeedback`: why the prompt was blocked, when it was.
#[derive(serde::Deserialize)]
struct PromptFeedback<'a> {
    #[serde(rename = "blockReason", borrow, default)]
    block_reason: Raw<'a>,
}

#[derive(serde::Deserialize)]
struct GeminiUsage {
    #[serde(rename = "candidatesTokenCount", default)]
    candidates: Option<u64>,
    #[serde(rename = "promptTokenCount", default)]
    prompt: Option<u64>,
    #[serde(rename = "cachedContentTokenCount", default)]
    cached: Option<u64>,
    #[serde(rename = "thoughtsTokenCount", default)]
    thoughts: Option<u64>,
    // Arrays of objects: named so that serde walks them without allocating (see [`Skip`]).
    #[serde(rename = "promptTokensDetails", default)]
    _prompt_details: Option<Skip>,
    #[serde(rename = "cacheTokensDetails", default)]
    _cache_details: Option<Skip>,
    #[serde(rename = "candidatesTokensDetails", default)]
    _candidates_details: Option<Skip>,
    #[serde(rename = "toolUsePromptTokensDetails", default)]
    _tool_use_details: Option<Skip>,
}

impl GeminiUsage {
    /// As spelt: `candidatesTokenCount` stays without the thoughts here
    /// ([`StreamSummary::output_tokens`] adds them).
    fn reported(&self) -> Reported {
        Reported {
            // Gemini leaves a zero count out (proto3 JSON): thoughts without a candidates
            // count are a model cut while still thinking, with no answer tokens.
            output: self.candidates.or(self.thoughts.map(|_| 0)),
            input: self.prompt,
            cache_read: self.cached,
            cache_creation: None,
            cache_creation_1h: None,
            reasoning: self.thoughts,
            finish: None,
        }
    }
}

/// A Cohere v2 chat event. Its `delta` is three objects deep, which capturing raw (as
/// [`Payload`] does) would make serde_json allocate for: parsed in place instead.
#[derive(serde::Deserialize)]
struct CohereEvent<'a> {
    #[serde(borrow, default)]
    delta: Option<CohereDelta<'a>>,
    #[serde(rename = "logprobs", default)]
    _logprobs: Option<Skip>,
}

#[derive(serde::Deserialize)]
struct CohereDelta<'a> {
    #[serde(borrow, default)]
    message: Option<CohereMessage<'a>>,
    #[serde(borrow, default)]
    finish_reason: Raw<'a>,
    #[serde(borrow, default)]
    error: Raw<'a>,
    #[serde(default)]
    usage: Option<CohereUsage>,
}

#[derive(serde::Deserialize)]
struct CohereMessage<'a> {
    // An object in content and tool-call events, `[]` in `message-start`.
    #[serde(borrow, default)]
    content: Option<ObjectOrArray<CohereContent<'a>>>,
    #[serde(borrow, default)]
    tool_plan: Raw<'a>,
    #[serde(borrow, default)]
    tool_calls: Option<ObjectOrArray<CohereToolCall<'a>>>,
    #[serde(rename = "citations", default)]
    _citations: Option<Skip>,
}

#[derive(serde::Deserialize)]
struct CohereContent<'a> {
    #[serde(borrow, default)]
    text: Raw<'a>,
    #[serde(borrow, default)]
    thinking: Raw<'a>,
}

/// Its `id` is not read: templates leave `id` values out of what they compare.
#[derive(serde::Deserialize)]
struct CohereToolCall<'a> {
    #[serde(borrow, default)]
    function: Option<CohereFunction<'a>>,
}

#[derive(serde::Deserialize)]
struct CohereFunction<'a> {
    #[serde(borrow, default)]
    name: Raw<'a>,
    #[serde(borrow, default)]
    arguments: Raw<'a>,
}

/// Cohere's `usage`: `tokens` counts what the model read and wrote, `billed_units` what was
/// charged (without the prompt template Cohere adds); the totals are the former.
#[derive(serde::Deserialize)]
struct CohereUsage {
    #[serde(default)]
    tokens: Option<CohereTokens>,
    #[serde(default)]
    billed_units: Option<CohereTokens>,
    #[serde(default)]
    cached_tokens: Count,
}

#[derive(serde::Deserialize)]
struct CohereTokens {
    #[serde(default)]
    input_tokens: Count,
    #[serde(default)]
    output_tokens: Count,
}

impl CohereUsage {
    fn reported(&self) -> Reported {
        let figure = |f: fn(&CohereTokens) -> Count| {
            let count = |t: &Option<CohereTokens>| t.as_ref().and_then(|t| f(t).0);
            count(&self.tokens).or(count(&self.billed_units))
        };
        Reported {
            output: figure(|t| t.output_tokens),
            input: figure(|t| t.input_tokens),
            cache_read: self.cached_tokens.0,
            ..Reported::default()
        }
    }
}

/// A token count, which Cohere's schema types as any number: an integer or a whole float; a
/// negative or fractional number is dropped rather than failing the event.
#[derive(Clone, Copy, Default)]
struct Count(Option<u64>);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountVisitor;
        impl Visitor<'_> for CountVisitor {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a count")
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Count(Some(v)))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Count(None))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                let whole = v >= 0.0 && v.fract() == 0.0 && v < u64::MAX as f64;
                Ok(Count(whole.then_some(v as u64)))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Count(None))
            }
        }
        deserializer.deserialize_any(CountVisitor)
    }
}

/// An object parsed in place, or an array walked and dropped (`None`).
struct ObjectOrArray<T>(Option<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOrArray<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for FieldVisitor<T> {
            type Value = ObjectOrArray<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object or an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(ObjectOrArray(None))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|t| ObjectOrArray(Some(t)))
            }
        }
        deserializer.deserialize_any(FieldVisitor(PhantomData))
    }
}

/// Any JSON value, walked and dropped. serde_json skips a value it is not asked for by keeping
/// a heap stack of the arrays and objects it is inside; walking it through this visitor keeps
/// that stack on the call stack instead, so reading an event allocates nothing.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SkipVisitor;
        impl<'de> Visitor<'de> for SkipVisitor {
            type Value = Skip;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_unit<E>(self) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(Skip)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
                while map.next_entry::<Skip, Skip>()?.is_some() {}
                Ok(Skip)
            }
        }
        deserializer.deserialize_any(SkipVisitor)
    }
}

/// OpenAI chat `choices[i]`: a streamed `delta`, or `text` for legacy completions.
#[derive(serde::Deserialize)]
struct Choice<'a> {
    #[serde(borrow, default)]
    delta: Option<ChatDelta<'a>>,
    #[serde(borrow, default)]
    text: Raw<'a>,
    #[serde(borrow, default)]
    finish_reason: Raw<'a>,
}

#[derive(serde::Deserialize)]
struct ChatDelta<'a> {
    #[serde(borrow, default)]
    content: Raw<'a>,
    #[serde(borrow, default)]
    refusal: Raw<'a>,
    #[serde(borrow, default)]
    reasoning_content: Raw<'a>,
    #[serde(borrow, default)]
    reasoning: Raw<'a>,
    #[serde(borrow, default)]
    tool_calls: Raw<'a>,
    /// The legacy function calling's single call (`finish_reason: "function_call"`).
    #[serde(borrow, default)]
    function_call: Raw<'a>,
}

/// Gemini `candidates[i]`.
#[derive(serde::Deserialize)]
struct Candidate<'a> {
    #[serde(borrow, default)]
    content: Option<CandidateContent<'a>>,
    #[serde(rename = "finishReason", borrow, default)]
    finish_reason: Raw<'a>,
}

#[derive(serde::Deserialize)]
struct CandidateContent<'a> {
    #[serde(borrow, default)]
    parts: Option<AnyContent<Part<'a>>>,
}

#[derive(serde::Deserialize)]
struct Part<'a> {
    #[serde(borrow, default)]
    text: Raw<'a>,
    #[serde(rename = "functionCall", borrow, default)]
    function_call: Raw<'a>,
}

/// Anthropic `message_delta.delta`.
#[derive(serde::Deserialize)]
struct MessageDelta<'a> {
    #[serde(borrow, default)]
    stop_reason: Raw<'a>,
}

/// Anthropic `content_block_delta.delta`.
#[derive(serde::Deserialize)]
struct BlockDelta<'a> {
    #[serde(borrow, default)]
    text: Raw<'a>,
    #[serde(borrow, default)]
    partial_json: Raw<'a>,
    #[serde(borrow, default)]
    thinking: Raw<'a>,
}

/// Anthropic `message_start.message`, or an Ollama chat `message`.
#[derive(serde::Deserialize)]
struct MessageObject<'a> {
    #[serde(borrow, default)]
    model: Raw<'a>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(borrow, default)]
    content: Raw<'a>,
    // Ollama chat: its reasoning, and the tool calls of a stream that calls tools.
    #[serde(borrow, default)]
    thinking: Raw<'a>,
    #[serde(borrow, default)]
    tool_calls: Raw<'a>,
}

/// `response`: the OpenAI Responses object, or Ollama's generated text. Parsed in one pass (the
/// object is deep: captured raw and parsed again, skipping it would allocate); of the text only
/// its emptiness is kept.
enum TextOr<T> {
    Text(bool),
    Object(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for TextOr<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for FieldVisitor<T> {
            type Value = TextOr<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an object")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TextOr::Text(!v.is_empty()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(TextOr::Object)
            }
        }
        deserializer.deserialize_any(FieldVisitor(PhantomData))
    }
}

/// OpenAI Responses `response` object.
#[derive(serde::Deserialize)]
struct ResponseObject<'a> {
    #[serde(borrow, default)]
    model: Raw<'a>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(borrow, default)]
    error: Raw<'a>,
    #[serde(borrow, default)]
    incomplete_details: Option<IncompleteDetails<'a>>,
}

/// OpenAI Responses `response.incomplete_details`.
#[derive(serde::Deserialize)]
struct IncompleteDetails<'a> {
    #[serde(borrow, default)]
    reason: Raw<'a>,
}

#[derive(serde::Deserialize)]
struct ErrorObject<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Raw<'a>,
    #[serde(borrow, default)]
    code: Raw<'a>,
    #[serde(borrow, default)]
    status: Raw<'a>,
}

trait HasContent {
    fn has_content(&self) -> bool;
    /// The element's finish reason, as the provider spelt it.
    fn finish_reason(&self) -> Raw<'_> {
        None
    }
    /// Whether the element is a legacy completions choice (`text`, no `delta`).
    fn completion_text(&self) -> bool {
        false
    }
}

impl HasContent for Choice<'_> {
    fn finish_reason(&self) -> Raw<'_> {
        self.finish_reason
    }
    fn completion_text(&self) -> bool {
        self.delta.is_none() && is_string(self.text)
    }

    fn has_content(&self) -> bool {
        self.delta.as_ref().is_some_and(|d| {
            non_empty(d.content)
                || non_empty(d.refusal)
                || non_empty(d.reasoning_content)
                || non_empty(d.reasoning)
                || non_empty(d.tool_calls)
                || non_empty(d.function_call)
        }) || non_empty(self.text)
    }
}

impl HasContent for Candidate<'_> {
    fn finish_reason(&self) -> Raw<'_> {
        self.finish_reason
    }

    fn has_content(&self) -> bool {
        self.content
            .as_ref()
            .and_then(|c| c.parts.as_ref())
            .is_some_and(|p| p.any)
    }
}

impl HasContent for Part<'_> {
    fn has_content(&self) -> bool {
        non_empty(self.text) || non_empty(self.function_call)
    }
}

/// A JSON array walked element by element, keeping only whether any element carries content,
/// the last finish reason an element gave, and whether any is a legacy completions choice.
struct AnyContent<T> {
    /// The array has elements: an empty one (a filter's chunk) names no format.
    elements: bool,
    any: bool,
    finish: Option<FinishReason>,
    completion_text: bool,
    element: PhantomData<T>,
}

impl<'de, T: Deserialize<'de> + HasContent> Deserialize<'de> for AnyContent<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SeqVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + HasContent> Visitor<'de> for SeqVisitor<T> {
            type Value = AnyContent<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut any = false;
                let mut finish = None;
                let mut completion_text = false;
                let mut elements = false;
                while let Some(element) = seq.next_element::<T>()? {
                    elements = true;
                    any |= element.has_content();
                    finish = finish_reason(element.finish_reason()).or(finish);
                    completion_text |= element.completion_text();
                }
                Ok(AnyContent {
                    elements,
                    any,
                    finish,
                    completion_text,
                    element: PhantomData,
                })
            }
        }
        deserializer.deserialize_seq(SeqVisitor(PhantomData))
    }
}

/// The finish reason a JSON string names; `None` for `null` or anything but a plain string.
fn finish_reason(value: Raw<'_>) -> Option<FinishReason> {
    plain_str(value).map(FinishReason::from_provider)
}

/// Content is present unless the value is absent, `null`, `""`, `[]` or `{}`.
fn non_empty(value: Raw<'_>) -> bool {
    value.is_some_and(|v| !matches!(v.get(), "\"\"" | "null" | "[]" | "{}"))
}

/// The text of a JSON string with no escapes; `None` for anything else.
fn plain_str(value: Raw<'_>) -> Option<&str> {
    let s = value?.get();
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('\\')).then_some(inner)
}

fn is_string(value: Raw<'_>) -> bool {
    value.is_some_and(|v| v.get().starts_with('"'))
}

fn is_object(value: Raw<'_>) -> bool {
    value.is_some_and(|v| v.get().starts_with('{'))
}

fn parse<'a, T: Deserialize<'a>>(value: Raw<'a>) -> Option<T> {
    serde_json::from_str(value?.get()).ok()
}

/// Maps provider error codes to the kind of failure: auth, rate limit, or anything else.
fn error_kind(values: &[Raw<'_>]) -> StreamErrorKind {
    for value in values.iter().copied().flatten() {
        let v = value.get().trim_matches('"');
        match v {
            "authentication_error"
            | "permission_error"
            | "invalid_api_key"
            | "UNAUTHENTICATED"
            | "PERMISSION_DENIED"
            | "401"
            | "403" => return StreamErrorKind::Auth,
            "rate_limit_error" | "rate_limit_exceeded" | "RESOURCE_EXHAUSTED" | "429" => {
                return StreamErrorKind::RateLimited;
            }
            _ => {}
        }
    }
    StreamErrorKind::Other
}

fn error_object_kind(error: Raw<'_>, extra_code: Raw<'_>) -> StreamErrorKind {
    match parse::<ErrorObject<'_>>(error) {
        Some(e) => error_kind(&[e.kind, e.code, e.status, extra_code]),
        None => error_kind(&[extra_code]),
    }
}

/// SSE event types that carry no tokens, usage, model or error: their JSON is not parsed.
pub(super) fn uninformative_event(event_type: &[u8]) -> Option<ProviderFormat> {
    match event_type {
        // A keep-alive: Anthropic sends `ping`, and so do gateways and SSE libraries before
        // any provider's stream.
        b"ping" => Some(ProviderFormat::Unknown),
        b"content_block_start" | b"content_block_stop" | b"message_stop" => {
            Some(ProviderFormat::AnthropicMessages)
        }
        b"response.in_progress"
        | b"response.output_item.added"
        | b"response.output_item.done"
        | b"response.content_part.added"
        | b"response.content_part.done"
        | b"response.output_text.done" => Some(ProviderFormat::OpenAiResponses),
        b"content-end" | b"tool-call-end" | b"citation-start" | b"citation-end" => {
            Some(ProviderFormat::CohereChat)
        }
        _ => None,
    }
}

/// Whether the event numbered `event` is read by the OpenAI chat view. Once a stream is known
/// to be OpenAI chat, the lighter view serves; the first few chunks still go through the full
/// one to pick up the model. Which view reads an event is part of what a template stands for:
/// the choice, once made, holds for the rest of the stream.
pub(super) fn chat_view(summary: &StreamSummary, event: u64) -> bool {
    summary.format == ProviderFormat::OpenAiChat && (summary.model.is_some() || event > 4)
}

/// Reads an event's JSON (`data` starts with `{`) with serde_json, by the OpenAI chat view when
/// `chat`, else by the full one, and records what it says. Returns whether it carried content.
pub(super) fn interpret(
    summary: &mut StreamSummary,
    event_type: &[u8],
    data: &[u8],
    chat: bool,
) -> bool {
    // An `event: error` is read by the full view, which takes any such event for an error,
    // whatever its data says; the chat view reads chunks.
    if chat && event_type != b"error" {
        return apply_chat_chunk(summary, data);
    }
    if is_cohere_event(event_type) {
        return apply_cohere(summary, data);
    }
    let Ok(p) = serde_json::from_slice::<Payload<'_>>(data) else {
        summary.malformed_events += 1;
        if event_type == b"error" {
            summary.set_error(data, StreamErrorKind::Other);
        }
        return false;
    };
    let mut content = false;
    let kind = plain_str(p.kind).unwrap_or("");

    if let Some(choices) = p.choices.as_ref().filter(|c| c.elements) {
        summary.detect(if choices.completion_text {
            ProviderFormat::OpenAiCompletions
        } else {
            ProviderFormat::OpenAiChat
        });
        content |= choices.any;
        summary.set_finish(choices.finish);
    }
    if let Some(usage) = &p.usage {
        // OpenAI chat's final usage chunk, or Anthropic's cumulative `message_delta` usage.
        summary.assign(usage.reported());
    }
    match kind {
        "message_start" => {
            summary.detect(ProviderFormat::AnthropicMessages);
            if let Some(TextOr::Object(m)) = &p.message {
                summary.set_model(m.model);
                // The `output_tokens` here is a placeholder count, not the answer's usage.
                if let Some(usage) = &m.usage {
                    summary.assign(Reported {
                        output: None,
                        ..usage.reported()
                    });
                }
            }
        }
        "message_delta" => {
            summary.detect(ProviderFormat::AnthropicMessages);
            if let Some(d) = parse::<MessageDelta<'_>>(p.delta) {
                summary.set_finish(finish_reason(d.stop_reason));
            }
        }
        "content_block_delta" => {
            summary.detect(ProviderFormat::AnthropicMessages);
            if let Some(d) = parse::<BlockDelta<'_>>(p.delta) {
                content |= non_empty(d.text) || non_empty(d.partial_json) || non_empty(d.thinking);
            }
        }
        "message_stop" | "content_block_start" | "content_block_stop" | "ping" => {
            summary.detect(ProviderFormat::AnthropicMessages);
            summary.done |= kind == "message_stop";
        }
        "error" => summary.set_error(data, error_object_kind(p.error, p.code)),
        // A Cohere stream sent without `event:` lines.
        k if is_cohere_event(k.as_bytes()) => return apply_cohere(summary, data),
        k if k.starts_with("response.") => {
            summary.detect(ProviderFormat::OpenAiResponses);
            if k.ends_with(".delta") && is_string(p.delta) {
                content |= non_empty(p.delta);
            }
            if let Some(TextOr::Object(r)) = &p.response {
                summary.set_model(r.model);
                if let Some(usage) = &r.usage {
                    summary.assign(usage.reported());
                }
                match k {
                    "response.completed" => summary.set_finish(Some(FinishReason::Stop)),
                    "response.incomplete" => summary.set_finish(Some(
                        r.incomplete_details
                            .as_ref()
                            .and_then(|d| finish_reason(d.reason))
                            .unwrap_or(FinishReason::Other),
                    )),
                    _ => {}
                }
                if k == "response.failed" {
                    summary.set_error(data, error_object_kind(r.error, None));
                }
            } else if k == "response.failed" {
                summary.set_error(data, StreamErrorKind::Other);
            }
        }
        _ => {}
    }
    if p.candidates.is_some() || p.usage_metadata.is_some() || p.prompt_feedback.is_some() {
        summary.detect(ProviderFormat::Gemini);
        if let Some(feedback) = &p.prompt_feedback {
            // A blocked prompt, whatever the reason (`SAFETY`, `BLOCKLIST`, `OTHER`, ...):
            // filtered, not cut.
            summary.set_finish(
                finish_reason(feedback.block_reason).map(|_| FinishReason::ContentFilter),
            );
        }
        if let Some(candidates) = &p.candidates {
            content |= candidates.any;
            summary.set_finish(candidates.finish);
        }
        if let Some(u) = &p.usage_metadata {
            summary.assign(u.reported());
        }
    }
    if p.done.is_some() || p.eval_count.is_some() {
        summary.detect(ProviderFormat::Ollama);
        if let Some(TextOr::Text(text)) = &p.response {
            content |= *text;
        } else if let Some(TextOr::Object(m)) = &p.message {
            content |= is_string(m.content) && non_empty(m.content)
                || non_empty(m.thinking)
                || non_empty(m.tool_calls);
        }
        // Ollama's generate view: its reasoning, beside `response`.
        content |= non_empty(p.thinking);
        summary.assign(Reported {
            output: p.eval_count,
            input: p.prompt_eval_count,
            // Servers before `done_reason` end with `done: true` alone: a stream that
            // finished, for a reason not given.
            finish: finish_reason(p.done_reason)
                .or((p.done == Some(true)).then_some(FinishReason::Other)),
            ..Reported::default()
        });
    }
    if kind != "error" && (is_object(p.error) || is_string(p.error)) {
        // OpenAI's `{"error":{..}}` chunk, Gemini's error object, Ollama's error string.
        summary.set_error(data, error_object_kind(p.error, p.code));
    } else if event_type == b"error" && kind != "error" {
        summary.set_error(data, StreamErrorKind::Other);
    }
    summary.set_model(p.model.or(p.model_version));
    content
}

fn apply_chat_chunk(summary: &mut StreamSummary, data: &[u8]) -> bool {
    let Ok(chunk) = serde_json::from_slice::<ChatChunk<'_>>(data) else {
        summary.malformed_events += 1;
        return false;
    };
    if let Some(usage) = &chunk.usage {
        summary.assign(usage.reported());
    }
    if is_object(chunk.error) || is_string(chunk.error) {
        summary.set_error(data, error_object_kind(chunk.error, None));
    }
    let Some(choices) = chunk.choices else {
        return false;
    };
    summary.set_finish(choices.finish);
    choices.any
}

/// Cohere v2 chat's event types, as its SSE `event:` lines and its `type` fields name them.
fn is_cohere_event(event_type: &[u8]) -> bool {
    matches!(
        event_type,
        b"message-start"
            | b"content-start"
            | b"content-delta"
            | b"content-end"
            | b"tool-plan-delta"
            | b"tool-call-start"
            | b"tool-call-delta"
            | b"tool-call-end"
            | b"citation-start"
            | b"citation-end"
            | b"message-end"
    )
}

/// Reads a Cohere v2 chat event. Returns whether it carried content (text, thinking, the tool
/// plan or a tool call).
fn apply_cohere(summary: &mut StreamSummary, data: &[u8]) -> bool {
    let Ok(event) = serde_json::from_slice::<CohereEvent<'_>>(data) else {
        summary.malformed_events += 1;
        return false;
    };
    summary.detect(ProviderFormat::CohereChat);
    let Some(delta) = &event.delta else {
        return false;
    };
    if let Some(usage) = &delta.usage {
        // `message-end` states the whole usage once.
        summary.assign(usage.reported());
    }
    let finish = plain_str(delta.finish_reason);
    summary.set_finish(finish.map(FinishReason::from_provider));
    if finish == Some("ERROR") || non_empty(delta.error) {
        summary.set_error(data, StreamErrorKind::Other);
    }
    let Some(message) = &delta.message else {
        return false;
    };
    let text = message
        .content
        .as_ref()
        .and_then(|c| c.0.as_ref())
        .is_some_and(|c| non_empty(c.text) || non_empty(c.thinking));
    let tool_call = message
        .tool_calls
        .as_ref()
        .and_then(|t| t.0.as_ref())
        .and_then(|t| t.function.as_ref())
        .is_some_and(|f| non_empty(f.name) || non_empty(f.arguments));
    text || tool_call || non_empty(message.tool_plan)
}
