//! What one finished request produced: a [`StreamRecord`] with its [`Outcome`].

use std::fmt;
use std::sync::Arc;

use crate::label::Label;
use std::time::{Duration, SystemTime};

use http::StatusCode;

use crate::parse::{FinishReason, ProviderFormat, TokenSource};

/// How a request ended. Also the OpenTelemetry `error.type` of the request (the README's outcome table).
///
/// New outcomes may be added: match with a wildcard arm, and keep counts in an [`OutcomeMap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Outcome {
    /// A 101, 2xx or 3xx status and a body that ended normally with no in-stream error (or,
    /// on HTTP/1.x, was dropped once the length its `Content-Length` header announced went
    /// out: the server ends the response there).
    Ok,
    /// 401, 403, or an in-stream `authentication_error` / `permission_error`.
    AuthError,
    /// 429, or an in-stream rate-limit error.
    RateLimited,
    /// 408 or 504 from the inner service, an inner timeout error (a body's as
    /// `classify::is_timeout` knows them, a service's as `classify::classify_service_error`
    /// does), or this layer's stream or idle timeout passing while the request waits for its
    /// source.
    Timeout,
    /// Any other 4xx; or this layer's timeout passing while the request waits for the client's
    /// body (answered 408 before the response).
    ClientError,
    /// 5xx, a final 1xx other than 101 (no answer a client gets: hyper sends a 500 or resets
    /// the stream), an inner service error, or
    /// a panic in the inner service or its body.
    ServerError,
    /// A body error mid-stream, an in-stream error event after a successful status, or, on
    /// HTTP/1.x, a body that ended short of the length its `Content-Length` header announced.
    StreamError,
    /// The body (or the response future) was dropped before its end: the client went away.
    Cancelled,
}

impl Outcome {
    /// How many outcomes there are.
    pub const COUNT: usize = 8;

    /// Every outcome, in label order.
    pub const ALL: [Outcome; Outcome::COUNT] = [
        Outcome::Ok,
        Outcome::AuthError,
        Outcome::RateLimited,
        Outcome::Timeout,
        Outcome::ClientError,
        Outcome::ServerError,
        Outcome::StreamError,
        Outcome::Cancelled,
    ];

    /// The label value: `ok`, `auth_error`, `rate_limited`, `timeout`, `client_error`,
    /// `server_error`, `stream_error` or `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::AuthError => "auth_error",
            Outcome::RateLimited => "rate_limited",
            Outcome::Timeout => "timeout",
            Outcome::ClientError => "client_error",
            Outcome::ServerError => "server_error",
            Outcome::StreamError => "stream_error",
            Outcome::Cancelled => "cancelled",
        }
    }

    /// Whether this outcome is a failure of the service or its upstream, counted in
    /// `streaming_errors`, the error-rate check and rollback triggers: `auth_error`,
    /// `rate_limited`, `timeout`, `server_error` and `stream_error`. Neither `ok` nor the
    /// [client-caused](Self::is_client_caused) outcomes are.
    pub fn is_error(self) -> bool {
        !matches!(self, Outcome::Ok) && !self.is_client_caused()
    }

    /// Whether the client alone caused this outcome: `client_error` (a 4xx other than 401, 403,
    /// 408 and 429: a bad body, an unknown model) and `cancelled` (the client went away). Such
    /// requests are counted and shown, but never move health: they are left out of the
    /// error-rate check, its sample count and every rollback trigger.
    pub fn is_client_caused(self) -> bool {
        matches!(self, Outcome::ClientError | Outcome::Cancelled)
    }
}

/// One value per [`Outcome`], indexed by outcome: counts, handles, flags. The one place that
/// knows how many outcomes there are; serialised as a map from every outcome's name (zeros
/// included) in label order.
///
/// ```
/// use tower_stream_monitor::{Outcome, OutcomeMap};
/// let mut counts = OutcomeMap::<u64>::default();
/// counts[Outcome::Timeout] += 2;
/// assert_eq!(counts[Outcome::Timeout], 2);
/// assert_eq!(counts.iter().map(|(_, n)| n).sum::<u64>(), 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct OutcomeMap<T>([T; Outcome::COUNT]);

impl<T> OutcomeMap<T> {
    /// A map holding `f(outcome)` for every outcome.
    pub fn from_fn(mut f: impl FnMut(Outcome) -> T) -> Self {
        Self(Outcome::ALL.map(&mut f))
    }

    /// Every outcome with its value, in label order.
    pub fn iter(&self) -> impl Iterator<Item = (Outcome, &T)> {
        Outcome::ALL.into_iter().zip(self.0.iter())
    }

    /// Every outcome with its value, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Outcome, &mut T)> {
        Outcome::ALL.into_iter().zip(self.0.iter_mut())
    }
}

impl<T> std::ops::Index<Outcome> for OutcomeMap<T> {
    type Output = T;
    fn index(&self, outcome: Outcome) -> &T {
        &self.0[outcome as usize]
    }
}

impl<T> std::ops::IndexMut<Outcome> for OutcomeMap<T> {
    fn index_mut(&mut self, outcome: Outcome) -> &mut T {
        &mut self.0[outcome as usize]
    }
}

impl<T: serde::Serialize> serde::Serialize for OutcomeMap<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(Outcome::COUNT))?;
        for (outcome, value) in self.iter() {
            map.serialize_entry(outcome.as_str(), value)?;
        }
        map.end()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The request id of a record: the caller's `x-request-id` (validated) or one generated here.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RequestId {
    /// Taken from the configured request header.
    Header(Arc<str>),
    /// Generated: unique within the process, printed as 16 hex digits.
    Generated(u64),
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestId::Header(id) => f.write_str(id),
            RequestId::Generated(n) => write!(f, "{n:016x}"),
        }
    }
}

/// Everything measured for one request, handed to the [`Monitor`](crate::Monitor) and to the
/// `on_record` callback exactly once, when the request ends.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StreamRecord {
    /// Provider label (after validation and the cardinality cap).
    pub provider: Label,
    /// Model label.
    pub model: Label,
    /// Route label: a route pattern, never the raw path.
    pub route: Label,
    /// The OpenTelemetry `gen_ai.operation.name` (`chat`, `text_completion`,
    /// `generate_content`): from the stream's format, else `chat` for a request the app named
    /// a provider for or that streamed. `None` for a request that is not an LLM call (or on a
    /// route excluded by
    /// [`MonitorBuilder::exclude_gen_ai_routes`](crate::MonitorBuilder::exclude_gen_ai_routes)):
    /// it stays out of the `gen_ai_*` series.
    pub operation_name: Option<&'static str>,
    /// The model the stream itself reported (`gen_ai_response_model`), after the model cap;
    /// [`model`](Self::model) is the one the request named, or this when it named none.
    pub response_model: Option<Label>,
    /// The request id.
    pub request_id: RequestId,
    /// The request's W3C trace context (its caller's trace, or one started here), when it
    /// was measured by the layer.
    pub trace: Option<crate::trace::TraceContext>,
    /// The user id, when the request carried one: the app's [`UserId`](crate::UserId)
    /// request extension, else the `user_id_header` (`x-user-id` by default).
    pub user_id: Option<Arc<str>>,
    /// The user id is the request header's, which a client may set, not the app's: it is
    /// shown (records, error records, top users) but counts in no user's budget (README,
    /// Security).
    pub user_id_from_header: bool,
    /// The response status; `None` when no response was produced (inner error, panic, cancel).
    pub status: Option<StatusCode>,
    /// How the request ended.
    pub outcome: Outcome,
    /// Whether this was a streaming request: its response had a stream content type, or its
    /// route is a configured streaming route, or it failed ([`Outcome::is_error`]) having asked
    /// for a stream (`Accept: text/event-stream`, `"stream": true`; README, Outcomes).
    pub streaming: bool,
    /// The provider event format recognised in the body.
    pub format: ProviderFormat,
    /// The body had a `Content-Encoding` (it was compressed inside this layer): it was measured
    /// for time and bytes but not parsed, so its tokens are not counted and its first token is
    /// its first byte.
    pub content_encoded: bool,
    /// When the request ended (wall clock).
    pub finished_at: SystemTime,
    /// From the service call to the first non-empty data frame. The call's time is moved later
    /// by any time the handler waited for the client's request body: a slow upload is the
    /// client's time, not the upstream's (README, Configuration). `None` for a stream whose
    /// reader held it back before it (README, Security).
    pub time_to_first_byte: Option<Duration>,
    /// From the service call (moved as for `time_to_first_byte`) to the first frame carrying an
    /// output token (equals `time_to_first_byte` for bodies that are not a known provider
    /// format). `None` for a stream whose reader held it back before it (README, Security).
    pub time_to_first_token: Option<Duration>,
    /// [`time_to_first_token`](Self::time_to_first_token) is a lower bound: the client left
    /// (`cancelled`) a stream that was still waiting on its source for its first token, past
    /// the first-token baseline's critical threshold, and this is how long it had waited. It
    /// counts in the first-token percentiles and histograms as a first token's time, so that
    /// clients giving up after that long never take a slow upstream's first tokens out of them;
    /// a shorter wait records none (README, Security).
    pub first_token_lower_bound: bool,
    /// From the service call to the end of the body (or of the failed call), the reader's time
    /// included.
    pub duration: Duration,
    /// Output tokens: reported usage when the provider sent it (every generated token, reasoning
    /// included, for every provider), else counted content events.
    pub output_tokens: u64,
    /// Input tokens, when the provider reported them: every prompt token, cached ones included,
    /// for every provider (the README's token table).
    pub input_tokens: Option<u64>,
    /// Input tokens read from the provider's prompt cache (part of `input_tokens`), when
    /// reported.
    pub cache_read_input_tokens: Option<u64>,
    /// Input tokens written to the provider's prompt cache (part of `input_tokens`), when
    /// reported (Anthropic).
    pub cache_creation_input_tokens: Option<u64>,
    /// The part of `cache_creation_input_tokens` written to Anthropic's 1-hour cache (its
    /// `cache_creation.ephemeral_1h_input_tokens`), when reported; priced at the 1-hour rate.
    pub cache_creation_1h_input_tokens: Option<u64>,
    /// Reasoning tokens (part of `output_tokens`), when reported.
    pub reasoning_output_tokens: Option<u64>,
    /// Why the model stopped, when the stream said so.
    pub finish_reason: Option<FinishReason>,
    /// What the request cost, from its usage and the monitor's price table (README, Cost);
    /// `None` when it is no LLM call or its model has no price (counted as unpriced, never as
    /// free). Set when the monitor records it.
    pub cost: Option<crate::cost::Cost>,
    /// Whether `cost` is an estimate: the stream reported no usage, so its counted output is
    /// priced and its input, unknown, is not (a lower bound).
    pub cost_estimated: bool,
    /// Where `output_tokens` came from.
    pub token_source: TokenSource,
    /// `output_tokens / generation time`, when there are >= 2 tokens and the stream's reader did
    /// not hold it back (README, Security). The generation time runs from the first token to
    /// the end: `duration - time_to_first_token`, but for a request whose handler waited for the
    /// client's body, which `time_to_first_token` leaves out and `duration` does not (a slow
    /// upload is no generation time).
    pub tokens_per_second: Option<f64>,
    /// `generation time / (output_tokens - 1)` (see `tokens_per_second`), when there are >= 2
    /// tokens.
    pub time_per_output_token: Option<Duration>,
    /// The longest gap between two frames carrying content (a stall); `None` when
    /// `tokens_per_second` is for a stream its reader held back.
    pub max_inter_token_gap: Option<Duration>,
    /// Response body bytes.
    pub bytes: u64,
    /// Events skipped because they exceeded the event size cap.
    pub oversized_events: u64,
    /// Events whose JSON did not parse (skipped).
    pub malformed_events: u64,
}

/// Whether a response with `status` on `route` matched no route: a 405, or a 404 on the
/// `unmatched` route. The one definition, for [`StreamRecord::is_unrouted`] and the meter.
pub(crate) fn is_unrouted(status: StatusCode, route: &str) -> bool {
    match status.as_u16() {
        405 => true,
        404 => route == Label::UNMATCHED,
        _ => false,
    }
}

/// Token counts above this are taken as this (about 10^15): a hostile usage figure cannot wrap
/// a sum or poison a mean.
const MAX_TOKENS: u64 = 1 << 50;

/// A usage figure capped at [`MAX_TOKENS`].
#[inline(always)]
fn clamp_tokens(part: &mut Option<u64>) {
    if let Some(n) = part {
        *n = (*n).min(MAX_TOKENS);
    }
}

impl StreamRecord {
    /// Whether this record's latencies (first token, time per token, tokens per second, widest
    /// gap) are its source's to judge, for the windows, `/health` and the latency histograms:
    /// a stream's, unless its client failed it (`client_error`). Such a stream's first token
    /// may have come of the client's own bytes (an upload streamed back, then cut), and what a
    /// client alone does never moves `/health` (README, Security). A `cancelled` stream's are
    /// kept: its tokens came from its source before its client left.
    pub(crate) fn latencies_judged(&self) -> bool {
        self.streaming && self.outcome != Outcome::ClientError
    }

    /// Caps every usage figure at [`MAX_TOKENS`], before the record is counted.
    pub(crate) fn clamp_usage(&mut self) {
        self.output_tokens = self.output_tokens.min(MAX_TOKENS);
        // One at a time, not through an array of references: no loop, no pointers kept.
        clamp_tokens(&mut self.input_tokens);
        clamp_tokens(&mut self.cache_read_input_tokens);
        clamp_tokens(&mut self.cache_creation_input_tokens);
        clamp_tokens(&mut self.cache_creation_1h_input_tokens);
        clamp_tokens(&mut self.reasoning_output_tokens);
    }

    /// A record with the given labels and outcome, an LLM call (`operation_name` `chat`), and
    /// everything else empty (zero, `None`, not streaming); set the public fields that apply.
    /// Its `token_source` is [`TokenSource::Counted`]: when its tokens are the provider's
    /// reported usage, set [`TokenSource::Reported`], or its cost is taken for an estimate
    /// (`cost_estimated`).
    pub fn new(
        provider: impl Into<Label>,
        model: impl Into<Label>,
        route: impl Into<Label>,
        outcome: Outcome,
    ) -> Self {
        Self {
            provider: provider.into(),
            model: model.into(),
            route: route.into(),
            operation_name: Some(crate::parse::DEFAULT_OPERATION_NAME),
            response_model: None,
            request_id: RequestId::Generated(0),
            trace: None,
            user_id: None,
            user_id_from_header: false,
            status: None,
            outcome,
            streaming: false,
            format: ProviderFormat::Unknown,
            content_encoded: false,
            finished_at: SystemTime::UNIX_EPOCH,
            time_to_first_byte: None,
            time_to_first_token: None,
            first_token_lower_bound: false,
            duration: Duration::ZERO,
            output_tokens: 0,
            input_tokens: None,
            cache_read_input_tokens: None,
            cache_creation_input_tokens: None,
            cache_creation_1h_input_tokens: None,
            reasoning_output_tokens: None,
            finish_reason: None,
            cost: None,
            cost_estimated: false,
            token_source: TokenSource::Counted,
            tokens_per_second: None,
            time_per_output_token: None,
            max_inter_token_gap: None,
            bytes: 0,
            oversized_events: 0,
            malformed_events: 0,
        }
    }

    /// Whether the request matched no route: a 405, or a 404 on the `unmatched` route (the
    /// router's own answer to an unknown path). Such requests are counted apart
    /// (`requests_5min.unrouted_requests`, `stream_monitor_unrouted_requests_total`) and
    /// reach neither the windows, nor health, nor any labelled series.
    pub fn is_unrouted(&self) -> bool {
        self.status.is_some_and(|s| is_unrouted(s, &self.route))
    }

    /// The label set of this record's series.
    pub(crate) fn label_set(&self) -> crate::labels::LabelSet {
        crate::labels::LabelSet {
            provider: self.provider,
            model: self.model,
            route: self.route,
            operation: self.operation_name,
            response_model: self.response_model,
        }
    }

    /// Puts every label that names something into `other` (past the series budget).
    pub(crate) fn fold_labels(&mut self, other: Label) {
        self.provider = other;
        self.model = other;
        self.route = other;
        // An operation of the app's own (a record handed to `ingest`) is `other` too: the
        // folded sets stay as few as the known operations allow (the OTLP instruments are
        // sized for them).
        if let Some(operation) = self.operation_name {
            if !crate::parse::OPERATION_NAMES.contains(&operation) {
                self.operation_name = Some(other.as_str());
            }
        }
        if self.response_model.is_some() {
            self.response_model = Some(other);
        }
    }

    /// Tokens per second and time per output token, from the output tokens, the duration
    /// (asked for only when there are rates: two tokens or more, and a first token) and the
    /// first token's time. Inlined: most records (a JSON answer, a stream of fewer than two
    /// tokens) have no rates, told apart by a compare where they are built.
    #[inline]
    pub(crate) fn derived_rates(
        output_tokens: u64,
        duration: impl FnOnce() -> Duration,
        ttft: Option<Duration>,
    ) -> (Option<f64>, Option<Duration>) {
        let Some(ttft) = ttft.filter(|_| output_tokens >= 2) else {
            return (None, None);
        };
        let generating = duration().saturating_sub(ttft);
        if generating.is_zero() {
            return (None, None);
        }
        // From the figure as the record will show it (`clamp_usage`).
        let output_tokens = output_tokens.min(MAX_TOKENS);
        let tps = output_tokens as f64 / generating.as_secs_f64();
        let tpot = generating / (output_tokens - 1).min(u32::MAX as u64) as u32;
        (Some(tps), Some(tpot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_need_two_tokens_and_time() {
        let s = Duration::from_secs;
        assert_eq!(
            StreamRecord::derived_rates(1, || s(3), Some(s(1))),
            (None, None)
        );
        assert_eq!(
            StreamRecord::derived_rates(5, || s(1), Some(s(1))),
            (None, None)
        );
        assert_eq!(StreamRecord::derived_rates(5, || s(3), None), (None, None));
        assert_eq!(
            StreamRecord::derived_rates(5, || s(3), Some(s(1))),
            (Some(2.5), Some(Duration::from_millis(500)))
        );
    }
}
