//! The simulated providers: OpenAI chat and Responses, Anthropic Messages and Gemini, speaking
//! their real wire formats, steered by `x-sim-*` request headers:
//!
//! - `x-sim-tokens` (default 64, up to 100000): content tokens streamed.
//! - `x-sim-ttft-ms` (200): delay before the first token.
//! - `x-sim-token-interval-ms` (10): delay between tokens.
//! - `x-sim-fail`: `auth` | `rate_limit` | `timeout` | `server` (refused before the stream),
//!   `stream_error` (an error event halfway), `stall` (a pause of `x-sim-stall-ms` halfway),
//!   `cut` (the stream ends cleanly halfway, with no finish reason: an upstream connection
//!   dropped under a relay that ends its body; recorded `ok`, finish reason `unfinished`).
//! - `x-sim-stall-ms` (120000): how long a `stall` lasts.
//! - `x-sim-cached-tokens` (0, up to 1000000): prompt tokens read from the prompt cache, reported
//!   in each provider's usage shape (OpenAI `cached_tokens` within `prompt_tokens` /
//!   `input_tokens`, Anthropic `cache_read_input_tokens` beside `input_tokens`, Gemini
//!   `cachedContentTokenCount` within `promptTokenCount`).
//! - `x-sim-reasoning-tokens` (0, up to 1000000): reasoning tokens reported on top of the
//!   streamed ones (OpenAI `reasoning_tokens` within `completion_tokens` / `output_tokens`,
//!   Gemini `thoughtsTokenCount` beside `candidatesTokenCount`). No reasoning text is streamed.
//!   Anthropic's reasoning is not simulated: there the knob has no effect.
//!
//! The prompt is always 12 uncached tokens, plus the cached ones.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tower_stream_monitor::StreamLabels;

/// Default knobs.
pub const DEFAULT_TOKENS: u64 = 64;
pub const DEFAULT_TTFT_MS: u64 = 200;
pub const DEFAULT_INTERVAL_MS: u64 = 10;
pub const DEFAULT_STALL_MS: u64 = 120_000;
/// The prompt tokens not read from the cache.
const PROMPT_TOKENS: u64 = 12;
/// The most cached or reasoning tokens a request can ask for.
const MAX_USAGE_PART: u64 = 1_000_000;

const WORDS: [&str; 16] = [
    " The",
    " tower",
    " falls,",
    " and",
    " a",
    " new",
    " road",
    " opens",
    " through",
    " the",
    " wasteland",
    " of",
    " cards",
    " that",
    " speak",
    ".",
];

/// How a simulated request fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fail {
    Auth,
    RateLimit,
    Timeout,
    Server,
    StreamError,
    Stall,
    Cut,
}

impl Fail {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "auth" => Fail::Auth,
            "rate_limit" => Fail::RateLimit,
            "timeout" => Fail::Timeout,
            "server" => Fail::Server,
            "stream_error" => Fail::StreamError,
            "stall" => Fail::Stall,
            "cut" => Fail::Cut,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Fail::Auth => "auth",
            Fail::RateLimit => "rate_limit",
            Fail::Timeout => "timeout",
            Fail::Server => "server",
            Fail::StreamError => "stream_error",
            Fail::Stall => "stall",
            Fail::Cut => "cut",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Fail::Auth => StatusCode::UNAUTHORIZED,
            Fail::RateLimit => StatusCode::TOO_MANY_REQUESTS,
            Fail::Timeout => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The knobs of one request.
#[derive(Debug, Clone, Copy)]
pub struct Sim {
    pub tokens: u64,
    pub ttft: Duration,
    pub interval: Duration,
    pub fail: Option<Fail>,
    pub stall: Duration,
    /// Prompt tokens read from the prompt cache, on top of the 12 uncached ones.
    pub cached_tokens: u64,
    /// Reasoning tokens reported on top of the streamed ones (not on Anthropic).
    pub reasoning_tokens: u64,
}

impl Sim {
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, String> {
        fn number(headers: &HeaderMap, name: &str, default: u64, max: u64) -> Result<u64, String> {
            match headers.get(name) {
                None => Ok(default),
                Some(v) => v
                    .to_str()
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .filter(|n| *n <= max)
                    .ok_or_else(|| format!("{name} must be a whole number from 0 to {max}")),
            }
        }
        let fail = match headers.get("x-sim-fail") {
            None => None,
            Some(v) => Some(v.to_str().ok().and_then(Fail::parse).ok_or(
                "x-sim-fail must be one of auth, rate_limit, timeout, server, stream_error, stall, cut",
            )?),
        };
        Ok(Self {
            tokens: number(headers, "x-sim-tokens", DEFAULT_TOKENS, 100_000)?,
            ttft: Duration::from_millis(number(
                headers,
                "x-sim-ttft-ms",
                DEFAULT_TTFT_MS,
                600_000,
            )?),
            interval: Duration::from_millis(number(
                headers,
                "x-sim-token-interval-ms",
                DEFAULT_INTERVAL_MS,
                60_000,
            )?),
            fail,
            stall: Duration::from_millis(number(
                headers,
                "x-sim-stall-ms",
                DEFAULT_STALL_MS,
                3_600_000,
            )?),
            cached_tokens: number(headers, "x-sim-cached-tokens", 0, MAX_USAGE_PART)?,
            reasoning_tokens: number(headers, "x-sim-reasoning-tokens", 0, MAX_USAGE_PART)?,
        })
    }

    /// Every prompt token, cached ones included (OpenAI `prompt_tokens` / `input_tokens`,
    /// Gemini `promptTokenCount`).
    fn prompt_tokens(&self) -> u64 {
        PROMPT_TOKENS + self.cached_tokens
    }

    /// OpenAI chat's `usage`, as its API sends it, details objects included.
    fn openai_chat_usage(&self) -> Value {
        let completion = self.tokens + self.reasoning_tokens;
        json!({"prompt_tokens": self.prompt_tokens(), "completion_tokens": completion,
               "total_tokens": self.prompt_tokens() + completion,
               "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
               "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens, "audio_tokens": 0,
                                             "accepted_prediction_tokens": 0,
                                             "rejected_prediction_tokens": 0}})
    }

    /// The Responses API's `usage`.
    fn openai_responses_usage(&self) -> Value {
        let output = self.tokens + self.reasoning_tokens;
        json!({"input_tokens": self.prompt_tokens(), "input_tokens_details": {"cached_tokens": self.cached_tokens},
               "output_tokens": output, "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
               "total_tokens": self.prompt_tokens() + output})
    }

    /// Gemini's `usageMetadata` after `candidates` content tokens. Thinking comes before the
    /// answer, so every chunk carries the whole `thoughtsTokenCount`; like Gemini, zero counts
    /// of cached and thought tokens are left out.
    fn gemini_usage(&self, candidates: u64) -> Value {
        let mut usage = json!({"promptTokenCount": self.prompt_tokens(), "candidatesTokenCount": candidates,
                               "totalTokenCount": self.prompt_tokens() + candidates + self.reasoning_tokens});
        if self.cached_tokens > 0 {
            usage["cachedContentTokenCount"] = json!(self.cached_tokens);
        }
        if self.reasoning_tokens > 0 {
            usage["thoughtsTokenCount"] = json!(self.reasoning_tokens);
        }
        usage
    }
}

/// How a provider answers before any stream starts: a bad knob, a body it refuses, an injected
/// failure.
struct Dialect {
    bad_request: fn(&str) -> Response,
    bad_body: fn(&BodyError) -> Response,
    failure: fn(Fail) -> Option<Response>,
}

const OPENAI: Dialect = Dialect {
    bad_request: |m| {
        openai_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            Some("invalid_header"),
            m,
        )
    },
    bad_body: openai_bad_body,
    failure: openai_failure,
};
const ANTHROPIC: Dialect = Dialect {
    bad_request: |m| anthropic_error(StatusCode::BAD_REQUEST, "invalid_request_error", m),
    bad_body: anthropic_bad_body,
    failure: anthropic_failure,
};
const GEMINI: Dialect = Dialect {
    bad_request: |m| gemini_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", m),
    bad_body: gemini_bad_body,
    failure: gemini_failure,
};

impl Sim {
    /// The request's knobs and its JSON body, or the provider's own answer: a 400 for a bad
    /// knob, the failure injected before the stream starts, or a 400 for a body it refuses.
    /// The body comes last because the real APIs check the key (and the rate limit) first.
    fn accept(
        headers: &HeaderMap,
        body: &Bytes,
        dialect: &Dialect,
        fields: &[Field],
    ) -> Result<(Sim, Value), Box<Response>> {
        let sim = Sim::from_headers(headers).map_err(|m| Box::new((dialect.bad_request)(&m)))?;
        if let Some(response) = sim.fail.and_then(dialect.failure) {
            return Err(Box::new(response));
        }
        let request = check_body(body, fields).map_err(|e| Box::new((dialect.bad_body)(&e)))?;
        Ok((sim, request))
    }
}

// ---------------------------------------------------------------------------------------------
// Request bodies

/// What a field the simulator reads must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Str,
    Object,
    /// A whole number of at least 1 (`max_tokens`).
    Count,
}

impl Kind {
    fn holds(self, v: &Value) -> bool {
        match self {
            Kind::Bool => v.is_boolean(),
            Kind::Str => v.is_string(),
            Kind::Object => v.is_object(),
            Kind::Count => v.as_u64().is_some_and(|n| n >= 1),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Kind::Bool => "a boolean",
            Kind::Str => "a string",
            Kind::Object => "an object",
            Kind::Count => "an integer of at least 1",
        }
    }
}

/// A field the simulator reads: its dotted path, what it holds, whether it must be there.
/// `null` counts as absent, as the real APIs take it for an optional field.
struct Field {
    path: &'static str,
    kind: Kind,
    required: bool,
}

const fn optional(path: &'static str, kind: Kind) -> Field {
    Field {
        path,
        kind,
        required: false,
    }
}

const OPENAI_CHAT_FIELDS: &[Field] = &[
    optional("model", Kind::Str),
    optional("stream", Kind::Bool),
    optional("stream_options", Kind::Object),
    optional("stream_options.include_usage", Kind::Bool),
];
const OPENAI_RESPONSES_FIELDS: &[Field] =
    &[optional("model", Kind::Str), optional("stream", Kind::Bool)];
const ANTHROPIC_FIELDS: &[Field] = &[
    optional("model", Kind::Str),
    optional("stream", Kind::Bool),
    Field {
        path: "max_tokens",
        kind: Kind::Count,
        required: true,
    },
];

/// Why a request body is refused.
#[derive(Debug)]
enum BodyError {
    /// Not JSON at all; serde's reason.
    NotJson(String),
    /// JSON, but not an object; what it is.
    NotObject(&'static str),
    Missing(&'static str),
    WrongType {
        field: &'static str,
        expected: Kind,
        got: &'static str,
    },
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The body as a JSON object whose `fields` hold what they should. Fields are checked in
/// order, so a parent (`stream_options`) is checked before its children.
fn check_body(body: &Bytes, fields: &[Field]) -> Result<Value, BodyError> {
    let request: Value =
        serde_json::from_slice(body).map_err(|e| BodyError::NotJson(e.to_string()))?;
    if !request.is_object() {
        return Err(BodyError::NotObject(json_type(&request)));
    }
    for field in fields {
        let value = field
            .path
            .split('.')
            .try_fold(&request, |v, key| v.get(key))
            .filter(|v| !v.is_null());
        match value {
            None if field.required => return Err(BodyError::Missing(field.path)),
            None => {}
            Some(v) if field.kind.holds(v) => {}
            Some(v) => {
                return Err(BodyError::WrongType {
                    field: field.path,
                    expected: field.kind,
                    got: json_type(v),
                });
            }
        }
    }
    Ok(request)
}

fn word(i: u64) -> &'static str {
    WORDS[(i % WORDS.len() as u64) as usize]
}

/// One stream, in the provider's framing: events sent at once, one event per token, and what
/// follows the last token. A failing stream sends `error_event` halfway instead.
struct Script {
    prelude: Vec<Bytes>,
    tokens: Vec<Bytes>,
    epilogue: Vec<Bytes>,
    error_event: Bytes,
}

fn sse(event: Option<&str>, data: &Value) -> Bytes {
    match event {
        Some(e) => Bytes::from(format!("event: {e}\ndata: {data}\n\n")),
        None => Bytes::from(format!("data: {data}\n\n")),
    }
}

/// Plays a script: prelude at once, first token after `ttft`, then one every `interval`.
fn play(script: Script, sim: Sim) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        for frame in script.prelude {
            if tx.send(frame).await.is_err() {
                return;
            }
        }
        // A wait ends early when the client went away: the script is dropped then, not
        // held for the whole delay a client asked for.
        let wait = |delay: Duration| {
            let tx = tx.clone();
            async move {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => true,
                    _ = tx.closed() => false,
                }
            }
        };
        let half = script.tokens.len() / 2;
        if script.tokens.is_empty() && sim.fail == Some(Fail::StreamError) {
            let _ = tx.send(script.error_event).await;
            return;
        }
        for (i, frame) in script.tokens.into_iter().enumerate() {
            if !wait(if i == 0 { sim.ttft } else { sim.interval }).await {
                return;
            }
            if i == half {
                match sim.fail {
                    Some(Fail::StreamError) => {
                        let _ = tx.send(script.error_event).await;
                        return;
                    }
                    Some(Fail::Stall) if !wait(sim.stall).await => return,
                    // Dropping the sender ends the body cleanly.
                    Some(Fail::Cut) => return,
                    _ => {}
                }
            }
            if tx.send(frame).await.is_err() {
                return;
            }
        }
        for frame in script.epilogue {
            if tx.send(frame).await.is_err() {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Body::from_stream(stream)
}

impl Script {
    /// The script played as a `text/event-stream` response.
    fn respond(self, labels: StreamLabels, sim: Sim) -> Response {
        event_stream(labels, play(self, sim))
    }
}

fn event_stream(labels: StreamLabels, body: Body) -> Response {
    (
        labels,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// OpenAI chat completions

fn openai_error(
    status: StatusCode,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
    message: &str,
) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": param, "code": code}});
    (status, StreamLabels::new("openai"), Json(body)).into_response()
}

/// OpenAI's 400 for a body it refuses: its wording for a body that is not JSON (no `param`,
/// no `code`), and `param` and `code` naming a field of the wrong type, as its API does.
fn openai_bad_body(error: &BodyError) -> Response {
    let (param, code, message) = match error {
        BodyError::NotJson(_) => (
            None,
            None,
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)".to_owned(),
        ),
        BodyError::NotObject(got) => (
            None,
            None,
            format!("Invalid type for request body: expected an object, but got {got} instead."),
        ),
        BodyError::Missing(field) => (
            Some(*field),
            Some("missing_required_parameter"),
            format!("Missing required parameter: '{field}'."),
        ),
        BodyError::WrongType {
            field,
            expected,
            got,
        } => (
            Some(*field),
            Some("invalid_type"),
            format!(
                "Invalid type for '{field}': expected {}, but got {got} instead.",
                expected.describe()
            ),
        ),
    };
    openai_error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        param,
        code,
        &message,
    )
}

/// OpenAI's answer to a failure injected before the stream starts.
fn openai_failure(fail: Fail) -> Option<Response> {
    let (kind, code, message) = match fail {
        Fail::Auth => (
            "invalid_request_error",
            "invalid_api_key",
            "Incorrect API key provided.",
        ),
        Fail::RateLimit => (
            "requests",
            "rate_limit_exceeded",
            "Rate limit reached for requests.",
        ),
        Fail::Timeout => ("timeout", "timeout", "The upstream timed out."),
        Fail::Server => (
            "server_error",
            "server_error",
            "The server had an error while processing your request.",
        ),
        Fail::StreamError | Fail::Stall | Fail::Cut => return None,
    };
    Some(openai_error(fail.status(), kind, None, Some(code), message))
}

/// The models each simulated provider serves. Like the real APIs, an unknown model is a 404, and
/// labels name only served models: a client cannot mint label values through the body.
const OPENAI_MODELS: &[&str] = &[
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "gpt-5",
    "gpt-5-mini",
    "o3",
    "o4-mini",
];
const ANTHROPIC_MODELS: &[&str] = &[
    "claude-sonnet-4-5",
    "claude-opus-4-1",
    "claude-haiku-4-5",
    "claude-3-5-haiku-latest",
];
const GEMINI_MODELS: &[&str] = &[
    "gemini-2.5-flash",
    "gemini-2.5-pro",
    "gemini-2.5-flash-lite",
    "gemini-2.0-flash",
];

/// The served model the request names (or the default), as a `'static` label; else the
/// provider's own 404.
fn served_model(
    requested: Option<&str>,
    default: &'static str,
    catalog: &[&'static str],
    not_found: impl FnOnce(&str) -> Response,
) -> Result<&'static str, Box<Response>> {
    let name = requested.unwrap_or(default);
    catalog
        .iter()
        .find(|m| **m == name)
        .copied()
        .ok_or_else(|| Box::new(not_found(name)))
}

fn openai_model_not_found(name: &str) -> Response {
    let shown: String = name.chars().take(64).collect();
    openai_error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        None,
        Some("model_not_found"),
        &format!("The model `{shown}` does not exist or you do not have access to it."),
    )
}

async fn openai_chat(headers: HeaderMap, body: Bytes) -> Response {
    let (sim, request) = match Sim::accept(&headers, &body, &OPENAI, OPENAI_CHAT_FIELDS) {
        Ok(accepted) => accepted,
        Err(response) => return *response,
    };
    let model = match served_model(
        request["model"].as_str(),
        "gpt-4o-mini",
        OPENAI_MODELS,
        openai_model_not_found,
    ) {
        Ok(model) => model,
        Err(response) => return *response,
    };
    let labels = StreamLabels::new("openai").with_model(model);
    let created = 1_731_506_198;
    if !request["stream"].as_bool().unwrap_or(false) {
        tokio::time::sleep(sim.ttft + sim.interval * sim.tokens.saturating_sub(1) as u32).await;
        let text: String = (0..sim.tokens).map(word).collect();
        let body = json!({
            "id": "chatcmpl-sim", "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": null},
                         "logprobs": null, "finish_reason": "stop"}],
            "usage": sim.openai_chat_usage(),
        });
        return (labels, Json(body)).into_response();
    }
    let include_usage = request["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-sim", "object": "chat.completion.chunk", "created": created, "model": model,
               "system_fingerprint": "fp_sim", "choices": [{"index": 0, "delta": delta, "logprobs": null,
               "finish_reason": finish}], "usage": null})
    };
    let mut epilogue = vec![sse(None, &chunk(json!({}), json!("stop")))];
    if include_usage {
        epilogue.push(sse(
            None,
            &json!({"id": "chatcmpl-sim", "object": "chat.completion.chunk", "created": created, "model": model,
                    "system_fingerprint": "fp_sim", "choices": [],
                    "usage": sim.openai_chat_usage()}),
        ));
    }
    epilogue.push(Bytes::from_static(b"data: [DONE]\n\n"));
    let script = Script {
        prelude: vec![sse(
            None,
            &chunk(
                json!({"role": "assistant", "content": "", "refusal": null}),
                Value::Null,
            ),
        )],
        tokens: (0..sim.tokens)
            .map(|i| sse(None, &chunk(json!({"content": word(i)}), Value::Null)))
            .collect(),
        epilogue,
        error_event: sse(
            None,
            &json!({"error": {"message": "The server had an error while processing your request.",
                              "type": "server_error", "param": null, "code": null}}),
        ),
    };
    script.respond(labels, sim)
}

// ---------------------------------------------------------------------------------------------
// OpenAI Responses

async fn openai_responses(headers: HeaderMap, body: Bytes) -> Response {
    let (sim, request) = match Sim::accept(&headers, &body, &OPENAI, OPENAI_RESPONSES_FIELDS) {
        Ok(accepted) => accepted,
        Err(response) => return *response,
    };
    let model = match served_model(
        request["model"].as_str(),
        "gpt-4.1",
        OPENAI_MODELS,
        openai_model_not_found,
    ) {
        Ok(model) => model,
        Err(response) => return *response,
    };
    let labels = StreamLabels::new("openai").with_model(model);
    let text: String = (0..sim.tokens).map(word).collect();
    let (resp_id, item_id) = ("resp_sim", "msg_sim");
    let response = |status: &str, output: Value, usage: Value| {
        json!({"id": resp_id, "object": "response", "created_at": 1_741_290_958, "status": status,
               "model": model, "output": output, "usage": usage})
    };
    let mut seq = 0u64;
    let mut event = |kind: &str, mut data: Value| {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(seq);
        seq += 1;
        sse(Some(kind), &data)
    };
    let part = |text: &str| json!({"type": "output_text", "text": text, "annotations": []});
    let item = |status: &str, content: Value| json!({"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content});
    let prelude = vec![
        event(
            "response.created",
            json!({"response": response("in_progress", json!([]), Value::Null)}),
        ),
        event(
            "response.in_progress",
            json!({"response": response("in_progress", json!([]), Value::Null)}),
        ),
        event(
            "response.output_item.added",
            json!({"output_index": 0, "item": item("in_progress", json!([]))}),
        ),
        event(
            "response.content_part.added",
            json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": part("")}),
        ),
    ];
    let tokens: Vec<Bytes> = (0..sim.tokens)
        .map(|i| {
            event(
                "response.output_text.delta",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "delta": word(i), "logprobs": []}),
            )
        })
        .collect();
    let usage = sim.openai_responses_usage();
    let epilogue = vec![
        event(
            "response.output_text.done",
            json!({"item_id": item_id, "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
        ),
        event(
            "response.content_part.done",
            json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": part(&text)}),
        ),
        event(
            "response.output_item.done",
            json!({"output_index": 0, "item": item("completed", json!([part(&text)]))}),
        ),
        event(
            "response.completed",
            json!({"response": response("completed", json!([item("completed", json!([part(&text)]))]), usage)}),
        ),
    ];
    let error_event = event(
        "error",
        json!({"code": "server_error", "message": "The server had an error while processing your request.", "param": null}),
    );
    Script {
        prelude,
        tokens,
        epilogue,
        error_event,
    }
    .respond(labels, sim)
}

// ---------------------------------------------------------------------------------------------
// Anthropic Messages

fn anthropic_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    (status, StreamLabels::new("anthropic"), Json(body)).into_response()
}

/// Anthropic's 400 for a body it refuses, worded as its validation errors are
/// (`field: what is wrong`).
fn anthropic_bad_body(error: &BodyError) -> Response {
    let message = match error {
        BodyError::NotJson(reason) => format!("The request body is not valid JSON: {reason}"),
        BodyError::NotObject(got) => {
            format!("The request body must be a JSON object, not {got}")
        }
        BodyError::Missing(field) => format!("{field}: Field required"),
        BodyError::WrongType {
            field, expected, ..
        } => format!("{field}: Input should be {}", expected.describe()),
    };
    anthropic_error(StatusCode::BAD_REQUEST, "invalid_request_error", &message)
}

/// Anthropic's answer to a failure injected before the stream starts.
fn anthropic_failure(fail: Fail) -> Option<Response> {
    let (kind, message) = match fail {
        Fail::Auth => ("authentication_error", "invalid x-api-key"),
        Fail::RateLimit => (
            "rate_limit_error",
            "Number of requests has exceeded your rate limit",
        ),
        Fail::Timeout => ("timeout_error", "Request timed out"),
        Fail::Server => ("api_error", "Internal server error"),
        Fail::StreamError | Fail::Stall | Fail::Cut => return None,
    };
    Some(anthropic_error(fail.status(), kind, message))
}

async fn anthropic_messages(headers: HeaderMap, body: Bytes) -> Response {
    let (sim, request) = match Sim::accept(&headers, &body, &ANTHROPIC, ANTHROPIC_FIELDS) {
        Ok(accepted) => accepted,
        Err(response) => return *response,
    };
    let model = match served_model(
        request["model"].as_str(),
        "claude-sonnet-4-5",
        ANTHROPIC_MODELS,
        |name| {
            let shown: String = name.chars().take(64).collect();
            anthropic_error(
                StatusCode::NOT_FOUND,
                "not_found_error",
                &format!("model: {shown}"),
            )
        },
    ) {
        Ok(model) => model,
        Err(response) => return *response,
    };
    let labels = StreamLabels::new("anthropic").with_model(model);
    // Anthropic counts cached prompt tokens apart from `input_tokens`. Its reasoning is not
    // simulated: `x-sim-reasoning-tokens` has no effect here.
    let message = |content: Value, stop: Value, output: u64| {
        json!({"id": "msg_sim", "type": "message", "role": "assistant", "content": content, "model": model,
               "stop_reason": stop, "stop_sequence": null,
               "usage": {"input_tokens": PROMPT_TOKENS, "cache_creation_input_tokens": 0,
                         "cache_read_input_tokens": sim.cached_tokens, "output_tokens": output}})
    };
    if !request["stream"].as_bool().unwrap_or(false) {
        tokio::time::sleep(sim.ttft + sim.interval * sim.tokens.saturating_sub(1) as u32).await;
        let text: String = (0..sim.tokens).map(word).collect();
        let body = message(
            json!([{"type": "text", "text": text}]),
            json!("end_turn"),
            sim.tokens,
        );
        return (labels, Json(body)).into_response();
    }
    let prelude = vec![
        sse(
            Some("message_start"),
            &json!({"type": "message_start", "message": message(json!([]), Value::Null, 1)}),
        ),
        sse(
            Some("content_block_start"),
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        sse(Some("ping"), &json!({"type": "ping"})),
    ];
    let tokens = (0..sim.tokens)
        .map(|i| {
            sse(
                Some("content_block_delta"),
                &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word(i)}}),
            )
        })
        .collect();
    let epilogue = vec![
        sse(
            Some("content_block_stop"),
            &json!({"type": "content_block_stop", "index": 0}),
        ),
        sse(
            Some("message_delta"),
            &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                    "usage": {"output_tokens": sim.tokens}}),
        ),
        sse(Some("message_stop"), &json!({"type": "message_stop"})),
    ];
    let error_event = sse(
        Some("error"),
        &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    );
    Script {
        prelude,
        tokens,
        epilogue,
        error_event,
    }
    .respond(labels, sim)
}

// ---------------------------------------------------------------------------------------------
// Gemini

fn gemini_error(status: StatusCode, grpc_status: &str, message: &str) -> Response {
    let body =
        json!({"error": {"code": status.as_u16(), "message": message, "status": grpc_status}});
    (status, StreamLabels::new("gcp.gemini"), Json(body)).into_response()
}

/// Gemini's 400 for a body it refuses ("Invalid JSON payload received. ...").
fn gemini_bad_body(error: &BodyError) -> Response {
    let message = match error {
        BodyError::NotJson(reason) => format!("Invalid JSON payload received. {reason}"),
        BodyError::NotObject(got) => {
            format!("Invalid JSON payload received. Expected an object, got {got}.")
        }
        BodyError::Missing(field) => format!("{field} is not specified"),
        BodyError::WrongType {
            field,
            expected,
            got,
        } => format!(
            "Invalid value at '{field}': expected {}, got {got}",
            expected.describe()
        ),
    };
    gemini_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", &message)
}

/// Gemini's answer to a failure injected before the stream starts.
fn gemini_failure(fail: Fail) -> Option<Response> {
    let (grpc_status, message) = match fail {
        Fail::Auth => ("UNAUTHENTICATED", "API key not valid."),
        Fail::RateLimit => ("RESOURCE_EXHAUSTED", "Quota exceeded."),
        Fail::Timeout => ("DEADLINE_EXCEEDED", "Deadline exceeded."),
        Fail::Server => ("INTERNAL", "Internal error."),
        Fail::StreamError | Fail::Stall | Fail::Cut => return None,
    };
    Some(gemini_error(fail.status(), grpc_status, message))
}

/// Google's front end ends SSE lines with CRLF.
fn gemini_sse(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\r\n\r\n"))
}

async fn gemini(
    Path(model_action): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((model, action)) = model_action.split_once(':') else {
        return gemini_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "expected models/{model}:streamGenerateContent",
        );
    };
    let streaming = match action {
        "generateContent" => false,
        "streamGenerateContent" if query.get("alt").map(String::as_str) == Some("sse") => true,
        "streamGenerateContent" => {
            return gemini_error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "this simulator streams with alt=sse only",
            );
        }
        _ => return gemini_error(StatusCode::NOT_FOUND, "NOT_FOUND", "unknown method"),
    };
    // The simulator reads no field of a Gemini request, but the body must still be an object.
    let (sim, _) = match Sim::accept(&headers, &body, &GEMINI, &[]) {
        Ok(accepted) => accepted,
        Err(response) => return *response,
    };
    let model = match served_model(Some(model), "gemini-2.5-flash", GEMINI_MODELS, |name| {
        let shown: String = name.chars().take(64).collect();
        gemini_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("models/{shown} is not found for API version v1beta"),
        )
    }) {
        Ok(model) => model,
        Err(response) => return *response,
    };
    let labels = StreamLabels::new("gcp.gemini").with_model(model);
    let chunk = |text: &str, k: u64, finish: bool| {
        let mut candidate =
            json!({"content": {"parts": [{"text": text}], "role": "model"}, "index": 0});
        if finish {
            candidate["finishReason"] = json!("STOP");
        }
        json!({"candidates": [candidate], "usageMetadata": sim.gemini_usage(k),
               "modelVersion": model, "responseId": "sim"})
    };
    if !streaming {
        tokio::time::sleep(sim.ttft + sim.interval * sim.tokens.saturating_sub(1) as u32).await;
        let text: String = (0..sim.tokens).map(word).collect();
        return (labels, Json(chunk(&text, sim.tokens, true))).into_response();
    }
    let n = sim.tokens;
    let tokens = (0..n)
        .map(|i| gemini_sse(&chunk(word(i), i + 1, i + 1 == n)))
        .collect();
    let error_event = gemini_sse(
        &json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}),
    );
    Script {
        prelude: vec![],
        tokens,
        epilogue: vec![],
        error_event,
    }
    .respond(labels, sim)
}

/// The simulated provider routes.
pub fn routes() -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai_chat))
        .route("/v1/responses", post(openai_responses))
        .route("/v1/messages", post(anthropic_messages))
        .route("/v1beta/models/{model_action}", post(gemini))
}
