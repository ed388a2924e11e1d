//! Measurement of one response body: first byte, first token, gaps, bytes, tokens, outcome.

use std::fmt::Display;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::context::{End, RequestContext, RequestScope, caught, log_end, record_caught, resume};
use super::request_body::RequestHints;
use super::state::ServiceState;
use super::timer::StreamTimer;
use crate::SESSION_TARGET;
use crate::classify::{classify_status, classify_stream_error};
use crate::label::Label;
use crate::labels::LabelSource;
use crate::parse::{
    PooledParser, ProviderFormat, StreamParser, StreamSummary, TokenSource, UpstreamError,
    WireFormat,
};
use crate::record::{Outcome, StreamRecord};

/// Bytes of a failed response's body kept to read the upstream's error from (JSON error bodies
/// are small; a longer one is read up to its last whole member before this).
const MAX_ERROR_BODY: usize = 4096;

/// The response's `Content-Type`, `Content-Encoding` (each its first value, as
/// `HeaderMap::get` gives it) and `Content-Length` (a value of it). A response has few headers
/// as a rule: one pass over them costs less than two hashed lookups.
fn content_headers(headers: &HeaderMap) -> ContentHeaders<'_> {
    const FEW: usize = 6;
    if headers.len() > FEW {
        let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
        return ContentHeaders {
            content_type: headers.get(header::CONTENT_TYPE),
            encoding: headers.get(header::CONTENT_ENCODING),
            length: lengths.next(),
            framed_otherwise: lengths.next().is_some()
                || headers.contains_key(header::TRANSFER_ENCODING),
        };
    }
    let mut found = ContentHeaders::default();
    for (name, value) in headers {
        if *name == header::CONTENT_TYPE {
            found.content_type = found.content_type.or(Some(value));
        } else if *name == header::CONTENT_ENCODING {
            found.encoding = found.encoding.or(Some(value));
        } else if *name == header::CONTENT_LENGTH {
            found.framed_otherwise |= found.length.is_some();
            found.length = Some(value);
        } else if *name == header::TRANSFER_ENCODING {
            found.framed_otherwise = true;
        }
    }
    found
}

/// The response headers that say what its body is (see [`content_headers`]).
#[derive(Default)]
struct ContentHeaders<'a> {
    content_type: Option<&'a HeaderValue>,
    encoding: Option<&'a HeaderValue>,
    length: Option<&'a HeaderValue>,
    /// A second `Content-Length` or a `Transfer-Encoding`: whether the length still frames the
    /// body is for [`framed_by_length_still`] to say (rare heads, read again apart).
    framed_otherwise: bool,
}

/// Whether a head with a second `Content-Length` or a `Transfer-Encoding` still has its body
/// framed by its length, as hyper writes it: the same length twice is written once and frames
/// the body (another length makes hyper refuse the head); a `Transfer-Encoding` beside a length
/// makes hyper refuse the head on HTTP/1.1, and is left out on HTTP/1.0, which has no chunked
/// coding.
#[cold]
fn framed_by_length_still(headers: &HeaderMap, version: http::Version) -> bool {
    let mut lengths = headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .map(announced_length);
    let first = lengths.next().flatten();
    first.is_some()
        && lengths.all(|other| other == first)
        && (version == http::Version::HTTP_10 || !headers.contains_key(header::TRANSFER_ENCODING))
}

/// The body's length a `Content-Length` value announces, if it is one plain decimal number
/// (what hyper frames an HTTP/1.x body of unknown size by).
fn announced_length(value: &HeaderValue) -> Option<u64> {
    let digits = value.as_bytes();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A body that ended after `sent` bytes where the length that frames it (its exact size hint,
/// else its `Content-Length` header) announced more: the
/// server cannot finish the response (hyper closes the connection), and the client is left a
/// cut one.
struct ShortBody {
    sent: u64,
    announced: u64,
}

impl Display for ShortBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the response body ended after {} of the {} bytes its length announced",
            self.sent, self.announced
        )
    }
}

/// How a body ended.
pub(crate) enum StreamEnd<'a> {
    /// End of stream, trailers, or `is_end_stream`.
    Complete,
    /// A body error, a timeout, or a panic, with its outcome.
    Failed(Outcome, &'a dyn Display),
    /// Dropped before its end.
    Dropped,
}

/// The per-body measurement. Everything here is owned by one body: no atomics, no locks.
///
/// In the order given (`repr(C)`): what each data frame reads and writes comes first, in the
/// first 64 bytes, one cache line (ARCHITECTURE.md, The request's memory). A frame knows
/// whether it is the first from `bytes`, and a token whether it is the first from `last_token`,
/// so that `first_byte` and `first_token` are written once and read when the request ends.
#[repr(C)]
pub(crate) struct StreamMeter {
    // Boxed: only streaming bodies have one, and it would make every response body larger.
    parser: Option<PooledParser>,
    bytes: u64,
    /// The start of a failed response's body, to read the upstream's error from (boxed: a
    /// pointer on the frame's line, for the few responses that fail).
    #[allow(
        clippy::box_collection,
        reason = "8 bytes on the line every frame reads, where a `Vec` takes 24"
    )]
    error_body: Option<Box<Vec<u8>>>,
    last_token: Option<Instant>,
    max_gap: Option<Duration>,
    first_byte: Option<Instant>,
    first_token: Option<Instant>,
    // What the meter keeps of the request's context (the rest is read when it starts): the
    // service's state, for its recorder.
    state: Arc<ServiceState>,
    started: Instant,
    provider: Label,
    model: Option<Label>,
    max_event_bytes: usize,
    status: StatusCode,
    /// Whether the facade's in-flight gauge was raised for this request.
    facade_in_flight: bool,
    label_source: LabelSource,
    /// The response carries a stream (or its route is a configured streaming route).
    streaming: bool,
    /// The request may count as streaming by what it asked, if it fails: not a HEAD, routed.
    may_stream: bool,
    /// What the request asked for, and whether the handler waits for its body (see
    /// `RequestHints`).
    hints: RequestHints,
    /// The response matched no route: recorded apart (see `StreamRecord::is_unrouted`).
    unrouted: bool,
    /// The body has a `Content-Encoding`: measured for time and bytes, never parsed.
    encoded: bool,
    /// The body has no content type: decide on SSE from its first bytes.
    sniff: bool,
    /// The length the body is framed by, where it is (HTTP/1.x): its exact size hint, else its
    /// `Content-Length` header
    /// (`u64::MAX` for none, which no body reaches: 8 bytes where an `Option` takes 16, and the
    /// box keeps its lines): an HTTP/1.x server that wrote that many bytes has sent the whole
    /// response and drops the body without asking it for its end; one that ends short of it
    /// cannot finish the response.
    announced: u64,
}

impl StreamMeter {
    /// Starts measuring the response into `slot` (the request's box), taking the request's
    /// context from beside it: written where it stays, not built apart and copied in. Nothing
    /// when the context was taken already.
    pub(crate) fn start_in(
        slot: &mut Option<Self>,
        context: &mut Option<RequestContext>,
        scope: &RequestScope,
        head: &http::response::Parts,
        exact_size: Option<u64>,
    ) {
        let Some(context) = context.take() else {
            return;
        };
        let status = head.status;
        let headers = &head.headers;
        let found = content_headers(headers);
        // Bytes, not text: a value checked whole first cost more than the check that uses it.
        let content_type = found.content_type.map(HeaderValue::as_bytes);
        let encoded = found
            .encoding
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
        // Only where a server frames the body by a length: HTTP/1.x, a body to send (not a HEAD
        // answer, a 204 or a 304). hyper frames a body of known size (an exact size hint) by
        // that size, whatever the header says, and another by its `Content-Length` header when
        // nothing else frames it. `MeasuredBody::measured` drops it for an empty body.
        let framed_by_length = matches!(
            context.version,
            http::Version::HTTP_10 | http::Version::HTTP_11
        ) && !context.head
            && status != StatusCode::NO_CONTENT
            && status != StatusCode::NOT_MODIFIED;
        let announced = match (exact_size, found.length) {
            _ if !framed_by_length => u64::MAX,
            (Some(size), _) => size,
            (None, Some(length))
                if !found.framed_otherwise || framed_by_length_still(headers, context.version) =>
            {
                announced_length(length).unwrap_or(u64::MAX)
            }
            (None, _) => u64::MAX,
        };
        let unrouted = crate::record::is_unrouted(status, &scope.tags.route);
        let recorder = context.recorder();
        let labels = context.resolve_labels(head.extensions.get::<crate::StreamLabels>(), unrouted);
        let (provider, model, label_source) = (labels.provider, labels.model, labels.source);
        // A subscriber's panic on the span's field would drop the context unrecorded: it is
        // caught, the request recorded (`server_error`), and the panic goes on.
        if scope.has_span() && record_caught(scope, "provider", &provider) {
            context.finish_without_body(
                scope,
                Outcome::ServerError,
                Some(&"panic in a tracing subscriber as the response started"),
            );
            resume(true);
            return;
        }
        recorder.provider_started(provider);
        let max_event_bytes = recorder.settings().max_event_bytes;
        let wire = content_type.and_then(WireFormat::from_content_type_bytes);
        // A compressed body is not the events it carries: measure it, do not parse it.
        let parser = wire
            .filter(|_| !encoded && !context.head)
            .map(|w| PooledParser::new(w, max_event_bytes));
        let failed = status.is_client_error() || status.is_server_error();
        // A HEAD answer carries no body, so no stream, whatever its headers say. The response
        // decides when it carries a stream; what the request asked for counts only if it fails
        // (see `record`).
        let may_stream = !context.head && !unrouted;
        let streaming = may_stream && (wire.is_some() || context.streaming_route);
        let RequestContext {
            state,
            started,
            facade_in_flight,
            hints,
            ..
        } = context;
        *slot = Some(Self {
            streaming,
            may_stream,
            hints,
            unrouted,
            encoded,
            error_body: (failed && !encoded).then(Box::default),
            state,
            started,
            facade_in_flight,
            status,
            provider,
            model,
            label_source,
            sniff: content_type.is_none() && !encoded,
            parser,
            max_event_bytes,
            first_byte: None,
            first_token: None,
            last_token: None,
            max_gap: None,
            bytes: 0,
            announced,
        });
    }

    /// Where the total deadline counts from (the request's start, or its body's end when the
    /// client sent that later) and its length, if one is set (`stream_timeout`).
    pub(crate) fn stream_deadline(&self) -> Option<(Instant, Duration)> {
        let after = self.state.recorder.settings().stream_timeout?;
        Some((self.hints.upstream_origin(self.started), after))
    }

    /// When the body's first byte was handed on, if it was.
    pub(crate) fn first_byte(&self) -> Option<Instant> {
        self.first_byte
    }

    /// Whether the handler has waited for the rest of the request's body since `t` or before,
    /// with nothing come since: a limit passing then is the client's doing (README, Security;
    /// see `RequestHints::client_silent_since`).
    pub(crate) fn client_silent_since(&self, t: Instant) -> bool {
        self.hints.client_silent_since(t)
    }

    /// Whether the request's body failed as the handler read it (the client broke or held its
    /// upload past a limit of the app's).
    pub(crate) fn upload_failed(&self) -> bool {
        self.hints.upload_failed()
    }

    /// Whether the body is framed by a length (its exact size hint, or its `Content-Length`
    /// header): no bytes may be added to it.
    pub(crate) fn announced_length(&self) -> bool {
        self.announced != u64::MAX
    }

    /// The body is not framed by a length after all: it is empty already (hyper sends no
    /// body), or polled past its last frame (a layer outside re-frames it).
    pub(crate) fn not_framed_by_length(&mut self) {
        self.announced = u64::MAX;
    }

    /// Whether the body is being parsed as server-sent events.
    pub(crate) fn is_sse(&self) -> bool {
        self.parser
            .as_ref()
            .is_some_and(|p| p.wire() == WireFormat::Sse)
    }

    /// Whether the bytes so far end on an event boundary (so a new event can be appended).
    pub(crate) fn at_event_boundary(&self) -> bool {
        self.parser.as_ref().is_none_or(|p| p.at_event_boundary())
    }

    /// The hot path: one data frame. Reads the clock only on the first byte and on frames that
    /// complete a content event; returns the time read, if any, for an end in the same poll.
    /// `timer`: the request's, if it has one, which counts the consumer's time: past
    /// [`timed`]'s share of it, the first byte and first token are not timed.
    #[inline(always)]
    pub(crate) fn on_data<D: Buf + From<Bytes>>(
        &mut self,
        data: &mut D,
        scope: &RequestScope,
        timer: Option<&StreamTimer>,
    ) -> Option<Instant> {
        let len = data.remaining();
        if len == 0 {
            return None;
        }
        self.bytes += len as u64;
        // `u64::MAX` when no length was announced: one comparison for other bodies.
        if self.bytes > self.announced {
            return self.on_data_past_announced(data, len, scope, timer);
        }
        if let Some(kept) = self.error_body.as_mut() {
            // A failed response: keep its start to read the upstream's error from.
            let room = MAX_ERROR_BODY
                .saturating_sub(kept.len())
                .min(data.chunk().len());
            kept.extend_from_slice(&data.chunk()[..room]);
        }
        let mut now = None;
        // No bytes before these: the first byte (read from the frame's own line, not from
        // `first_byte`'s).
        if self.bytes == len as u64 {
            let t = Instant::now();
            self.first_byte = Some(t).filter(|&t| self.timed_up_to(t, timer));
            now = Some(t);
            if self.sniff && self.parser.is_none() {
                if let Some(wire) = WireFormat::sniff(data.chunk()) {
                    self.parser = Some(PooledParser::new(wire, self.max_event_bytes));
                    self.streaming = true;
                }
            }
        }
        let Some(parser) = self.parser.as_mut() else {
            return now;
        };
        // `Bytes` (what axum and hyper use) is one contiguous chunk. A `Buf` in several pieces
        // is made one, so the parser sees every byte: one copy, for such bodies only.
        if data.chunk().len() != len {
            let whole = data.copy_to_bytes(len);
            *data = D::from(whole);
        }
        let content = parser.feed(data.chunk());
        if content > 0 {
            let t = now.unwrap_or_else(Instant::now);
            self.on_content(t, scope, timer);
            now = Some(t);
        }
        now
    }

    /// A frame of `len` bytes took the body past its announced length: hyper sends up to that
    /// length and no further, so only the frame's bytes within it are counted and parsed (what
    /// the client got). A frame polled once the length is reached shows the body re-framed by
    /// a layer outside (hyper stops asking at the length): every byte goes out after all, and
    /// counts from that frame on (the part past the length of a frame that crossed it is not
    /// counted: a body of one event per frame loses none).
    #[cold]
    #[inline(never)]
    fn on_data_past_announced<D: Buf + From<Bytes>>(
        &mut self,
        data: &mut D,
        len: usize,
        scope: &RequestScope,
        timer: Option<&StreamTimer>,
    ) -> Option<Instant> {
        // Counted again below.
        self.bytes -= len as u64;
        if self.bytes >= self.announced {
            self.not_framed_by_length();
            return self.on_data(data, scope, timer);
        }
        let within = usize::try_from(self.announced - self.bytes).unwrap_or(usize::MAX);
        // Without a copy for `Bytes`; the frame handed on stays whole.
        let whole = data.copy_to_bytes(len);
        *data = D::from(whole.clone());
        self.on_data(&mut D::from(whole.slice(..within)), scope, timer)
    }

    /// Whether the body is timed as a stream: parsed, to be sniffed from its first bytes, or on
    /// a streaming route (`streaming_routes`, whose first byte is its first token). Its timer is
    /// made with the response, to count the consumer's time from there.
    pub(crate) fn timed_as_stream(&self) -> bool {
        self.parser.is_some() || self.sniff || self.streaming
    }

    #[inline(always)]
    fn on_content(&mut self, now: Instant, scope: &RequestScope, timer: Option<&StreamTimer>) {
        // Set with the first token, as `first_token` is; before it is logged, so that a panic
        // in logging it (a subscriber's) leaves the meter as it would be after the token.
        let first = self.last_token.is_none();
        widen_gap(&mut self.last_token, &mut self.max_gap, now);
        if first {
            self.on_first_token(now, scope, timer);
        }
    }

    /// [`on_content`](Self::on_content) for content the parser found only as the body ended
    /// (an NDJSON body's last line, with no newline after it), while the body is recorded: a
    /// panic in logging a late first token is kept until the record is handed over (as in
    /// `context::log_end`), so that it loses no record. `true` when one was caught.
    #[cold]
    #[inline(never)]
    fn on_last_content(
        &mut self,
        now: Instant,
        scope: &RequestScope,
        timer: Option<&StreamTimer>,
    ) -> bool {
        caught(|| self.on_content(now, scope, timer))
    }

    #[cold]
    #[inline(never)]
    fn on_first_token(&mut self, now: Instant, scope: &RequestScope, timer: Option<&StreamTimer>) {
        if !self.timed_up_to(now, timer) {
            // Not timed: when the source gave it is not known (README, Security).
            return;
        }
        self.first_token = Some(now);
        let latency = now - self.origin(now);
        self.log_first_token(latency.as_secs_f64() * 1000.0, scope);
    }

    /// Whether a latency at `t` (a first byte, a first token) is the source's, within
    /// [`timed`]'s bounds of the consumer's time until then.
    #[inline(always)]
    fn timed_up_to(&self, t: Instant, timer: Option<&StreamTimer>) -> bool {
        match timer {
            // Not a stream: nothing to weigh (most responses).
            None => true,
            Some(timer) => self.timed_by(timer, t),
        }
    }

    #[inline(never)]
    fn timed_by(&self, timer: &StreamTimer, t: Instant) -> bool {
        timed(timer.consumer_time_at(t), t - self.origin(t))
    }

    /// For a stream dropped at `t` with no token: if it had been waiting on its source for its
    /// first one (a stream by its response, not only by the client's ask; the request's upload
    /// over, its time being the client's; its reader's time within the bound of [`timed`], a
    /// reader holding the stream back may have kept a token from being seen) for longer than
    /// the first-token baseline's critical threshold (`FirstTokenThresholds::lower_bound_counts`),
    /// that wait, from the same origin as a first token's, and `true`.
    #[cold]
    #[inline(never)]
    fn first_token_wait(
        &self,
        t: Instant,
        timer: Option<&StreamTimer>,
    ) -> (Option<Duration>, bool) {
        let waited = self.streaming
            && self.last_token.is_none()
            && self.hints.upload_over()
            && timer.is_some_and(|timer| self.timed_by(timer, t));
        let wait = t - self.origin(t);
        let counts = waited
            && (self.state.recorder.settings().first_token)
                .lower_bound_counts(wait.as_secs_f64() * 1000.0);
        match counts {
            true => (Some(wait), true),
            false => (None, false),
        }
    }

    /// Where the latency of something at `t` counts from: the request's start, or for `t` after
    /// its body's end, that start moved later by the time the handler waited for the client's
    /// bytes (`RequestHints::upstream_origin`). The time a client takes over its upload is its
    /// own, not the upstream's (README, Security).
    fn origin(&self, t: Instant) -> Instant {
        match self.hints.body_end() {
            Some(end) if t >= end => self.hints.upstream_origin(self.started),
            _ => self.started,
        }
    }

    /// Per-request first-token alerting: past the critical baseline WARN, past warning INFO.
    fn log_first_token(&self, latency_ms: f64, scope: &RequestScope) {
        let span = scope.span();
        let levels = &self.state.recorder.settings().first_token;
        let provider = &*self.provider;
        match levels.log_level(latency_ms) {
            tracing::Level::WARN => scope.tags.within(|| {
                tracing::warn!(
                target: SESSION_TARGET,
                parent: span,
                latency_ms,
                provider,
                "Critical first token latency: {latency_ms:.2}ms"
                )
            }),
            tracing::Level::INFO => tracing::info!(
                target: SESSION_TARGET,
                parent: span,
                latency_ms,
                provider,
                "High first token latency: {latency_ms:.2}ms"
            ),
            _ => tracing::debug!(target: SESSION_TARGET, parent: span, latency_ms, "first token"),
        }
    }

    /// Builds the record, logs the end, and hands the record to the monitor. `timer`: the
    /// request's, for the consumer's time (see [`timed`]).
    pub(crate) fn finish(
        mut self,
        end: StreamEnd<'_>,
        scope: &RequestScope,
        timer: Option<&StreamTimer>,
    ) {
        self.record(Instant::now(), end, scope, timer);
    }

    /// [`finish`](Self::finish) for the meter in `slot`, at `finished` if the clock was read in
    /// the same poll (the frame that ended the body). The meter is recorded where it is, not
    /// moved out first (a few hundred bytes), and the slot is emptied even if recording panics,
    /// so the request is never recorded twice.
    pub(crate) fn finish_in(
        slot: &mut Option<Self>,
        finished: Option<Instant>,
        end: StreamEnd<'_>,
        scope: &RequestScope,
        timer: Option<&StreamTimer>,
    ) {
        struct Empty<'a>(&'a mut Option<StreamMeter>);
        impl Drop for Empty<'_> {
            fn drop(&mut self) {
                *self.0 = None;
            }
        }
        let slot = Empty(slot);
        if let Some(meter) = slot.0.as_mut() {
            meter.record(finished.unwrap_or_else(Instant::now), end, scope, timer);
        }
    }

    /// [`record`](Self::record) for a body framed by its `Content-Length` header (see
    /// `announced`), whose end is judged by that length: dropped once it all went out, the
    /// client has the whole response (the server ends it there without asking the body for its
    /// end); ended short of it, the server cannot finish the response and the client is left
    /// a cut one. Apart, so that other bodies pay one comparison for it.
    #[cold]
    #[inline(never)]
    fn record_framed(
        &mut self,
        finished: Instant,
        end: StreamEnd<'_>,
        scope: &RequestScope,
        timer: Option<&StreamTimer>,
    ) {
        let announced = std::mem::replace(&mut self.announced, u64::MAX);
        let short = ShortBody {
            sent: self.bytes,
            announced,
        };
        let end = match end {
            StreamEnd::Dropped if self.bytes >= announced => StreamEnd::Complete,
            StreamEnd::Complete if self.bytes < announced => {
                StreamEnd::Failed(Outcome::StreamError, &short)
            }
            end => end,
        };
        self.record(finished, end, scope, timer);
    }

    /// Builds the record at `finished` and hands it over. Called once: the meter is dropped
    /// after it.
    fn record(
        &mut self,
        finished: Instant,
        end: StreamEnd<'_>,
        scope: &RequestScope,
        timer: Option<&StreamTimer>,
    ) {
        // A body that ended at its length needs nothing from it (most bodies of known size).
        if self.announced != u64::MAX
            && !(matches!(end, StreamEnd::Complete) && self.bytes >= self.announced)
        {
            return self.record_framed(finished, end, scope, timer);
        }
        let started = self.started;
        // A body dropped before its end ends when its client chose: its rates are timed to its
        // last token, never to the drop (README, Security).
        let dropped = matches!(end, StreamEnd::Dropped);
        let by_status = classify_status(self.status);
        let mut flush_panicked = false;
        if matches!(end, StreamEnd::Complete) {
            if let Some(parser) = self.parser.as_mut() {
                parser.end(by_status == Outcome::Ok);
                if parser.finish() > 0 {
                    flush_panicked = self.on_last_content(finished, scope, timer);
                }
            }
        }
        let summary = self.parser.as_deref().map(StreamParser::summary);
        let in_stream = summary.and_then(|s| s.error()).map(classify_stream_error);
        // `finished - started` (tokio's saturating subtraction) without tokio's wrapper call.
        let duration = finished
            .into_std()
            .saturating_duration_since(started.into_std());
        // A body that ended on its own is `ok` whatever the time: past the deadline, its frames
        // were ready whenever asked for (a body that waits past it is cut), so any lateness was
        // the consumer's (README, Security).
        // A response body that failed after the client broke its upload is the client's
        // (`judge`); a status, a panic or a service error is never taken for it.
        let (outcome, error) = match end {
            // A panic (or another server fault) in the body: the server's, whatever the status.
            StreamEnd::Failed(Outcome::ServerError, error) => (Outcome::ServerError, Some(error)),
            _ if by_status != Outcome::Ok => (self.hints.judge_timeout(by_status), None),
            StreamEnd::Failed(outcome, error) => (self.hints.judge(outcome), Some(error)),
            StreamEnd::Complete => (in_stream.unwrap_or(Outcome::Ok), None),
            StreamEnd::Dropped => (in_stream.unwrap_or(Outcome::Cancelled), None),
        };
        // The client's word counts for a failure only (README, Outcomes), known only now: a
        // 200 whose body is cut or carries an upstream error is one.
        let streaming = self.streaming
            || self.may_stream && outcome.is_error() && self.hints.asked_for_stream();
        let format = summary
            .map(|s| s.format())
            .unwrap_or(ProviderFormat::Unknown);
        // Latencies count from `origin`. A body whose one frame came in the poll that ended it
        // read the clock once: its latency from the start is the duration.
        let since_start = |t: Instant| {
            let origin = self.origin(t);
            if t == finished && origin == started {
                duration
            } else {
                t - origin
            }
        };
        let ttfb = self.first_byte.map(since_start);
        // For bodies that are not a known provider format, the first byte is the first token;
        // an error response (a 401's JSON) has no first token, nor has an answer that is a
        // streaming request only because it asked for a stream and failed: its first byte is
        // no token of a stream (a non-streaming answer's comes when the whole answer is done).
        let asked_only = streaming && !self.streaming;
        let ttft = match (self.first_token, format) {
            (Some(t), _) => Some(since_start(t)),
            (None, ProviderFormat::Unknown) if by_status == Outcome::Ok && !asked_only => ttfb,
            (None, _) => None,
        };
        // A stream its client left while it waited on its source for its first token, past the
        // critical threshold: the wait is a lower bound of that time, and counts as it (README,
        // Security). Left out, clients that give up would take exactly the slow first tokens
        // out of the percentiles.
        let (ttft, first_token_lower_bound) = match ttft {
            None if outcome == Outcome::Cancelled => self.first_token_wait(finished, timer),
            ttft => (ttft, false),
        };
        let output_tokens = summary.map_or(0, |s| s.output_tokens());
        // From the same origin as the first token's: a slow upload is the client's time, not
        // generation time (the duration is computed only for a stream with rates to derive).
        // A stream its consumer kept waiting times nothing of its source's: no rate, no gap. A
        // body without a token has neither to time (most responses: nothing more is asked).
        let timed = self.last_token.is_some()
            && match (timer, ttft) {
                (Some(timer), Some(ttft)) => timed(
                    timer.consumer_time_at(finished),
                    since_start(finished).saturating_sub(ttft),
                ),
                // Its first token was not timed (nor are the gaps after it).
                (Some(_), None) => false,
                (None, _) => true,
            };
        let (tokens_per_second, time_per_output_token) = if timed {
            let rates_end = match self.last_token {
                Some(last) if dropped => last,
                _ => finished,
            };
            StreamRecord::derived_rates(output_tokens, || since_start(rates_end), ttft)
        } else {
            (None, None)
        };
        let recorder = &self.state.recorder;
        let response_model = summary
            .filter(|_| !self.unrouted)
            .and_then(|s| s.model())
            .and_then(|m| recorder.model_label(m, LabelSource::Trusted));
        let model = self
            .model
            .take()
            .or(response_model)
            .unwrap_or_else(|| recorder.unknown());
        let operation_name = recorder.operation_name(format, streaming, self.provider);
        // On the span, as the end is logged: a subscriber's panic loses no record.
        let model_panicked = scope.has_span() && record_caught(scope, "model", &model);
        let upstream = match (&self.error_body, summary) {
            _ if !outcome.is_error() => None,
            // A body cut at the cap is read up to its last whole member.
            (Some(body), _) if body.len() == MAX_ERROR_BODY => {
                UpstreamError::from_json(body).or_else(|| UpstreamError::from_cut_json(body))
            }
            (Some(body), _) => UpstreamError::from_json(body),
            (None, Some(summary)) => summary.error_detail(),
            (None, None) => None,
        };
        let panicked = flush_panicked
            | model_panicked
            | log_end(scope, outcome, || End {
                outcome,
                status: Some(self.status),
                provider: self.provider,
                duration,
                output_tokens,
                tokens_per_second,
                error,
                upstream: upstream.as_ref(),
            });
        let mut record = StreamRecord {
            provider: self.provider,
            model,
            route: scope.tags.route,
            operation_name,
            response_model,
            request_id: scope.tags.request_id.clone(),
            // A trace id for LLM calls (their exemplars); others keep one only if something
            // already made it.
            trace: match operation_name {
                Some(_) => Some(scope.tags.trace().clone()),
                None => scope.tags.trace.get().cloned(),
            },
            user_id: scope.tags.user_id.clone(),
            user_id_from_header: scope.tags.user_id_from_header,
            status: Some(self.status),
            outcome,
            streaming,
            format,
            content_encoded: self.encoded,
            // Set from the monitor's clock when recorded.
            finished_at: SystemTime::UNIX_EPOCH,
            time_to_first_byte: ttfb,
            time_to_first_token: ttft,
            first_token_lower_bound,
            duration,
            output_tokens,
            input_tokens: summary.and_then(|s| s.input_tokens()),
            cache_read_input_tokens: summary.and_then(|s| s.cache_read_input_tokens()),
            cache_creation_input_tokens: summary.and_then(|s| s.cache_creation_input_tokens()),
            cache_creation_1h_input_tokens: summary
                .and_then(|s| s.cache_creation_1h_input_tokens()),
            reasoning_output_tokens: summary.and_then(|s| s.reasoning_output_tokens()),
            finish_reason: summary.and_then(StreamSummary::finish_reason_at_end),
            // Priced when the monitor records it.
            cost: None,
            cost_estimated: false,
            token_source: summary.map_or(TokenSource::Counted, |s| s.token_source()),
            tokens_per_second,
            time_per_output_token,
            max_inter_token_gap: self.max_gap.filter(|_| timed),
            bytes: self.bytes,
            oversized_events: summary.map_or(0, |s| s.oversized_events()),
            malformed_events: summary.map_or(0, |s| s.malformed_events()),
        };
        if summary.is_some() {
            // Usage is read from the body, which only a parsed body has.
            record.clamp_usage();
        }
        recorder.record(record, self.facade_in_flight, true, self.label_source);
        resume(panicked);
    }
}

/// Whether an interval of a stream (to its first byte or token, or from its first token to its
/// end) is the source's, its consumer's time in it being `consumer`: at most a twentieth of
/// it, or 50 ms. The consumer's time runs from each frame handed on (or the response) until the
/// body is asked for the next one. A prompt consumer (hyper writing a frame, then asking for
/// the next) takes microseconds of it. A client that holds a stream back (an HTTP/2 window it
/// keeps shut, a pause before it reads) takes more, and then the interval is not known: a
/// source that makes its frames whether asked or not (an upstream connection) may have made
/// them meanwhile, one that makes them when asked (a stream that sleeps when polled) did not.
/// Past the bound, the figures are not recorded rather than wrong either way: a client's pace
/// can neither make an upstream look slow nor fast (README, Security).
#[inline]
fn timed(consumer: Duration, interval: Duration) -> bool {
    const FLOOR: Duration = Duration::from_millis(50);
    consumer <= FLOOR.max(interval / 20)
}

/// The widest gap between tokens, after a token at `now` following one at `last`: as
/// `max_gap.max(now - last)` (a clock that went back giving a gap of zero), with the gap worked
/// out only when it is a new widest one. `now - last > max_gap` is `now > last + max_gap`,
/// exactly, and adding a duration to an instant costs less than subtracting two; a sum past
/// the clock's range is no new widest gap.
#[inline(always)]
fn widen_gap(last: &mut Option<Instant>, max_gap: &mut Option<Duration>, now: Instant) {
    if let Some(last) = *last {
        let widest = match *max_gap {
            Some(m) => last.checked_add(m).is_some_and(|edge| now > edge),
            None => true,
        };
        if widest {
            *max_gap = Some(now - last);
        }
    }
    *last = Some(now);
}

/// The bytes at the start of a meter that each data frame reads and writes (see `StreamMeter`).
#[cfg(test)]
pub(crate) const FRAME_BYTES: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    /// What each data frame reads and writes of the meter is its first `FRAME_BYTES`
    /// (ARCHITECTURE.md, The request's memory).
    #[test]
    fn a_frame_reads_the_first_bytes_of_the_meter() {
        use std::mem::{offset_of, size_of};
        // No tag before the meter in the request's box: `None` is a value of a field.
        assert_eq!(size_of::<Option<StreamMeter>>(), size_of::<StreamMeter>());
        let ends = [
            offset_of!(StreamMeter, parser) + size_of::<Option<PooledParser>>(),
            offset_of!(StreamMeter, bytes) + size_of::<u64>(),
            offset_of!(StreamMeter, error_body) + size_of::<Option<Box<Vec<u8>>>>(),
            offset_of!(StreamMeter, last_token) + size_of::<Option<Instant>>(),
            offset_of!(StreamMeter, max_gap) + size_of::<Option<Duration>>(),
        ];
        assert_eq!(ends.into_iter().max(), Some(FRAME_BYTES));
    }

    /// The widest gap is the one the plain subtraction of every pair gives, to the nanosecond.
    #[test]
    fn widest_gap_is_the_largest_subtraction() {
        let start = Instant::now();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for round in 0..200 {
            let (mut last, mut max_gap) = (None, None);
            let (mut plain_last, mut plain_max): (Option<Instant>, Option<Duration>) = (None, None);
            let mut at = start + Duration::from_secs(round);
            for _ in 0..50 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Steps of a few nanoseconds to a few seconds, some zero, some back in time.
                let step = Duration::from_nanos((state % 4_000_000_007) >> (state % 31));
                at = match state % 11 {
                    0 => at,
                    1 => at.checked_sub(step).unwrap_or(at),
                    _ => at + step,
                };
                widen_gap(&mut last, &mut max_gap, at);
                if let Some(l) = plain_last {
                    let gap = at - l;
                    if plain_max.is_none_or(|m| gap > m) {
                        plain_max = Some(gap);
                    }
                }
                plain_last = Some(at);
                assert_eq!(max_gap, plain_max);
                assert_eq!(last, plain_last);
            }
        }
    }
}
