//! Per-request state from the service call on: labels known from the request, ids, the span,
//! and the session logs (crate docs, Session logs).

use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

// Tokio's clock: a paused test runtime moves first-token and duration figures too.
use tokio::time::Instant;

use http::{HeaderMap, HeaderValue, Request};
use tracing::Span;
use tracing::field::Empty;

use super::request_body::{RequestBodyWatch, RequestHints};
use super::service::ServiceState;
use super::tracked::{EmptyBox, Tracked, TrackedBox};
use crate::SESSION_TARGET;
use crate::StreamLabels;
use crate::errors::scope::{RequestTags, ShownProvider};
use crate::label::Label;
use crate::labels::{LabelSource, UserId, is_valid_label};
use crate::monitor::{Recorder, StreamSettings};
use crate::parse::UpstreamError;
use crate::record::{Outcome, RequestId, StreamRecord};
use crate::trace::{MAX_TRACESTATE, TraceContext};
use std::borrow::Cow;
use std::cell::OnceCell;
use std::sync::OnceLock;

/// What the request alone tells; moves from the response future into the body.
///
/// Provider and model values from request headers are kept raw here and interned only when
/// the request is recorded, and only if nothing better names them (the handler's
/// [`StreamLabels`]) and the request matched a route: a header can then never spend a label
/// budget for a request that did not need it.
pub(crate) struct RequestContext {
    /// The service's state: its recorder and route cache.
    pub(crate) state: Arc<ServiceState>,
    pub(crate) started: Instant,
    /// What the request names, when it names anything (boxed: most requests name nothing, and
    /// the context moves with every request's future and body).
    names: Option<Box<RequestNames>>,
    /// The request's route is one the app named in `streaming_routes`.
    pub(crate) streaming_route: bool,
    /// Whether the request asked for a stream, and whether the handler waits for its body.
    pub(crate) hints: RequestHints,
    /// A HEAD request: its response has no body to measure.
    pub(crate) head: bool,
    /// The request's HTTP version: on HTTP/1.x a response body is framed by a length, if it
    /// has one (see `StreamMeter::announced`).
    pub(crate) version: http::Version,
    /// Whether the facade's in-flight gauge was raised for this request.
    pub(crate) facade_in_flight: bool,
}

/// The provider and model a request names: by header (raw), or by the `request_labels`
/// closure.
struct RequestNames {
    provider_header: Option<HeaderValue>,
    model_header: Option<HeaderValue>,
    labeled: StreamLabels,
}

/// Where a request's logs and error records find its context: its span, which exists only
/// when a subscriber layer wants it (a `fmt` layer at INFO for the session logs), and its
/// context fields, marked current on the thread while the request runs (`errors::scope`).
///
/// Kept apart from [`RequestContext`] and the meter, which a panic guard holds mutably while
/// the request runs.
pub(crate) struct RequestScope {
    /// `None` for a disabled span once a subscriber is set: dropping such a span does nothing
    /// (no subscriber to tell, and tracing's `log` fallback is off for good), so it is not kept
    /// to be dropped.
    span: Option<Span>,
    pub(crate) tags: RequestTags,
}

/// What a request without a kept span shows as its span: disabled, as the one it had.
static NO_SPAN: Span = Span::none();

impl RequestScope {
    #[cfg(test)]
    pub(crate) fn new(span: Span, tags: RequestTags) -> Self {
        Self {
            span: Self::kept(span),
            tags,
        }
    }

    /// The span as kept: `None` for a disabled one once a subscriber is set (see `span`).
    #[inline]
    fn kept(span: Span) -> Option<Span> {
        if span.is_disabled() && tracing::dispatcher::has_been_set() {
            std::mem::forget(span);
            None
        } else {
            Some(span)
        }
    }

    /// The request's span (disabled unless a subscriber layer wants it).
    #[inline]
    pub(crate) fn span(&self) -> &Span {
        self.span.as_ref().unwrap_or(&NO_SPAN)
    }

    /// Runs `f` inside the request: its span entered (if any layer wants it), its context
    /// current for the error layer.
    /// Records a field on the span, if it exists (building the value set costs even for a
    /// disabled span).
    #[inline]
    pub(crate) fn record(&self, field: &'static str, value: &dyn std::fmt::Display) {
        if let Some(span) = self.span.as_ref().filter(|s| !s.is_disabled()) {
            span.record(field, tracing::field::display(value));
        }
    }

    #[inline]
    pub(crate) fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        self.enter_known(true, f)
    }

    /// [`enter`](Self::enter), for a caller that knows already whether a span is kept
    /// (`spanned`, from [`has_span`](Self::has_span)): a body's frame then leaves the span's
    /// cache line alone (ARCHITECTURE.md, The request's memory).
    #[inline]
    pub(crate) fn enter_known<R>(&self, spanned: bool, f: impl FnOnce() -> R) -> R {
        let _entered = if spanned { self.enter_span() } else { None };
        self.tags.within(f)
    }

    /// Whether a span is kept (see `span`).
    pub(crate) fn has_span(&self) -> bool {
        self.span.is_some()
    }

    /// The span entered, if any layer wants it. A disabled span is not entered: with tracing's
    /// `log` feature on, entering one still costs a log-level check.
    #[inline]
    pub(crate) fn enter_span(&self) -> Option<tracing::span::Entered<'_>> {
        self.span
            .as_ref()
            .filter(|s| !s.is_disabled())
            .map(Span::enter)
    }
}

/// The labels a finished request is recorded under.
pub(crate) struct ResolvedLabels {
    pub(crate) provider: Label,
    pub(crate) model: Option<Label>,
    /// `Header` when the provider or the model came from a request header.
    pub(crate) source: LabelSource,
}

/// The request headers the layer reads: the configured ones (each its first value, as
/// `HeaderMap::get` gives it), `Accept` and `traceparent`.
#[derive(Default)]
struct RequestHeaders<'a> {
    provider: Option<&'a HeaderValue>,
    model: Option<&'a HeaderValue>,
    user_id: Option<&'a HeaderValue>,
    request_id: Option<&'a HeaderValue>,
    accepts_sse: bool,
    /// The `traceparent` line, when there is exactly one (see [`trace_context`]).
    traceparent: Option<&'a HeaderValue>,
}

impl<'a> RequestHeaders<'a> {
    /// A request has a dozen headers or so: one pass over them, comparing names, costs less
    /// than six hashed lookups. Past a few dozen, the lookups cost less.
    fn read(headers: &'a HeaderMap, config: &StreamSettings) -> Self {
        const FEW: usize = 24;
        if headers.len() > FEW {
            return Self::look_up(headers, config);
        }
        let mut found = Self::default();
        let mut traceparents = 0;
        let is = |name: &http::HeaderName, configured: &Option<http::HeaderName>| {
            configured.as_ref() == Some(name)
        };
        for (name, value) in headers {
            if *name == http::header::ACCEPT {
                found.accepts_sse |= accepts_sse(value);
            }
            if *name == TRACEPARENT {
                traceparents += 1;
                found.traceparent.get_or_insert(value);
            }
            if is(name, &config.provider_header) {
                found.provider.get_or_insert(value);
            }
            if is(name, &config.model_header) {
                found.model.get_or_insert(value);
            }
            if is(name, &config.user_id_header) {
                found.user_id.get_or_insert(value);
            }
            if is(name, &config.request_id_header) {
                found.request_id.get_or_insert(value);
            }
        }
        if traceparents > 1 {
            found.traceparent = None;
        }
        found
    }

    fn look_up(headers: &'a HeaderMap, config: &StreamSettings) -> Self {
        let get = |name: &Option<http::HeaderName>| headers.get(name.as_ref()?);
        let mut parents = headers.get_all(TRACEPARENT).iter();
        let first_parent = parents.next();
        Self {
            provider: get(&config.provider_header),
            model: get(&config.model_header),
            user_id: get(&config.user_id_header),
            request_id: get(&config.request_id_header),
            accepts_sse: headers
                .get_all(http::header::ACCEPT)
                .iter()
                .any(accepts_sse),
            traceparent: first_parent.filter(|_| parents.next().is_none()),
        }
    }
}

fn accepts_sse(value: &HeaderValue) -> bool {
    value
        .to_str()
        .is_ok_and(|v| v.contains("text/event-stream"))
}

fn header_value(value: Option<&HeaderValue>) -> Option<HeaderValue> {
    value
        .filter(|v| v.to_str().is_ok_and(is_valid_label))
        .cloned()
}

/// The caller's trace context (`traceparent`, `tracestate`), when valid. A malformed header is
/// ignored, never an error (README, Tracing); so are several `traceparent` lines, which W3C
/// Trace Context counts as invalid (which one would be the parent?): `parent` is the one line.
fn trace_context(parent: Option<&HeaderValue>, headers: &HeaderMap) -> Option<TraceContext> {
    let parent = parent?.to_str().ok()?;
    TraceContext::from_traceparent(parent, tracestate(headers).as_deref())
}

/// The caller's `tracestate`: several header lines are one list, joined with `,` (W3C Trace
/// Context). `None` when a line is not visible ASCII (the list is then invalid as a whole) or the
/// list outgrows what [`TraceContext`] keeps; one line is borrowed, not copied.
fn tracestate(headers: &HeaderMap) -> Option<Cow<'_, str>> {
    let mut lines = headers.get_all(TRACESTATE).iter();
    let first = lines.next()?.to_str().ok()?;
    let Some(second) = lines.next() else {
        return Some(Cow::Borrowed(first));
    };
    let mut joined = String::from(first);
    for line in std::iter::once(second).chain(lines) {
        joined.push(',');
        joined.push_str(line.to_str().ok()?);
        if joined.len() > MAX_TRACESTATE {
            return None;
        }
    }
    Some(Cow::Owned(joined))
}

/// The trace of the app's current span when the app runs tracing-opentelemetry (feature
/// `tracing-opentelemetry`): the request is part of it, and its `traceparent` was the app's to
/// read.
#[cfg(feature = "tracing-opentelemetry")]
fn app_trace_context() -> Option<TraceContext> {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let span = tracing::Span::current();
    if span.is_none() {
        return None;
    }
    let context = span.context();
    let otel_span = context.span();
    let ids = otel_span.span_context();
    if !ids.is_valid() {
        return None;
    }
    TraceContext::from_ids(
        u128::from_be_bytes(ids.trace_id().to_bytes()),
        u64::from_be_bytes(ids.span_id().to_bytes()),
        ids.is_sampled(),
    )
}

#[cfg(not(feature = "tracing-opentelemetry"))]
fn app_trace_context() -> Option<TraceContext> {
    None
}

/// The trace id for the session log, once something made one; `-` before.
struct TraceIdShown<'a>(Option<&'a TraceContext>);

impl Display for TraceIdShown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(trace) => Display::fmt(&trace.trace_id(), f),
            None => f.write_str("-"),
        }
    }
}

const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

impl RequestContext {
    /// The recorder of the service that took the request.
    #[inline]
    pub(crate) fn recorder(&self) -> &Recorder {
        &self.state.recorder
    }

    /// Starts measuring a request: resolves what the request tells, opens its span, logs the
    /// start and counts it in flight. `body` is the body watcher's, if one was set up.
    ///
    /// Boxed here, once: the response future and then the body carry the box.
    pub(crate) fn start(
        state: &Arc<ServiceState>,
        request: RequestHead<'_>,
        labeled: StreamLabels,
        body: Option<RequestBodyWatch>,
    ) -> TrackedBox {
        // Taken first: what follows is written straight into it.
        let boxed = EmptyBox::take();
        let started = Instant::now();
        let (recorder, routes) = (&state.recorder, &state.routes);
        let config = recorder.settings();

        let route = route_of(recorder, routes, request);
        let headers = RequestHeaders::read(request.headers(), config);
        let provider_header = header_value(headers.provider);
        let model_header = header_value(headers.model);
        // The app's word (its auth's `UserId`) before the header, which a client may set.
        let app_user_id = request
            .extensions()
            .get::<UserId>()
            .filter(|u| is_valid_label(&u.0))
            .map(|u| Arc::from(&*u.0));
        let user_id_from_header = app_user_id.is_none() && headers.user_id.is_some();
        let user_id = app_user_id.or_else(|| {
            (headers.user_id)
                .and_then(|v| v.to_str().ok())
                .filter(|v| is_valid_label(v))
                .map(Arc::from)
        });
        let request_id = (headers.request_id)
            .and_then(|v| v.to_str().ok())
            .filter(|v| is_valid_label(v))
            .map(|v| RequestId::Header(Arc::from(v)))
            .unwrap_or_else(|| RequestId::Generated(recorder.next_request_number()));
        let streaming_route = config.streaming_routes.iter().any(|r| **r == *route);
        let head = request.method() == http::Method::HEAD;
        let mut trace =
            app_trace_context().or_else(|| trace_context(headers.traceparent, request.headers()));

        // Shown as the request names them; what is recorded is decided at the end.
        let provider_shown = match (&labeled.provider, &provider_header) {
            (Some(p), _) => ShownProvider::Labeled(p.clone()),
            (None, Some(h)) => ShownProvider::Header(h.clone()),
            (None, None) => ShownProvider::Unknown,
        };
        // Enabled only when a subscriber layer asks for it (see `RequestScope`); the error
        // layer does not.
        let span = tracing::info_span!(
            target: SESSION_TARGET,
            "stream_request",
            request_id = %request_id,
            user_id = Empty,
            provider = Empty,
            model = Empty,
            route = %route,
            outcome = Empty,
            trace_id = Empty,
            span_id = Empty,
        );
        if !span.is_disabled() {
            let trace = trace.get_or_insert_with(TraceContext::new_root);
            span.record("trace_id", tracing::field::display(trace.trace_id()));
            span.record("span_id", tracing::field::display(trace.span_id()));
            if let Some(user) = &user_id {
                span.record("user_id", tracing::field::display(&**user));
            }
            if let Some(p) = provider_shown.as_str() {
                span.record("provider", tracing::field::display(p));
            }
        }
        tracing::info!(
            target: SESSION_TARGET,
            parent: &span,
            request_id = %request_id,
            user_id = %user_id.as_deref().unwrap_or("-"),
            provider = %provider_shown.as_str().unwrap_or("unknown"),
            route = %route,
            trace_id = %TraceIdShown(trace.as_ref()),
            "stream started"
        );
        // Decided before the state is built, so the state is written straight into the box.
        let span = RequestScope::kept(span);
        let facade_in_flight = recorder.request_started(route);
        // A branch, not `bool::then` with a closure: a request that names nothing moves nothing
        // into a closure only to drop it.
        let names = if provider_header.is_some()
            || model_header.is_some()
            || labeled.provider.is_some()
            || labeled.model.is_some()
        {
            Some(Box::new(RequestNames {
                provider_header,
                model_header,
                labeled,
            }))
        } else {
            None
        };
        let context = Self {
            state: state.clone(),
            started,
            names,
            streaming_route,
            hints: RequestHints {
                accepts_sse: headers.accepts_sse,
                body,
            },
            head,
            version: request.version(),
            facade_in_flight,
        };
        let mut tracked = boxed.fill(Tracked {
            context: Some(context),
            meter: None,
            timer: None,
            scope: RequestScope {
                span,
                tags: RequestTags {
                    request_id,
                    user_id,
                    user_id_from_header,
                    route,
                    provider: provider_shown,
                    trace: OnceCell::new(),
                },
            },
        });
        // Set in place once the box is filled: a request without a trace context (most) moves
        // none through the state built above.
        if let Some(trace) = trace {
            if let Some(t) = tracked.get_mut() {
                let _ = t.scope.tags.trace.set(trace);
            }
        }
        tracked
    }

    /// Whether a request that ended with `outcome` and no response counts as a streaming one
    /// (README, Outcomes): its route is one the app named in `streaming_routes`; or it failed
    /// (`Outcome::is_error`) having asked for a stream. What a client asks for can so only add
    /// a failure of the app's or its upstream's to the streaming window, never a success nor
    /// its own doing.
    pub(crate) fn streaming_for(&self, outcome: Outcome) -> bool {
        self.streaming_route || outcome.is_error() && self.hints.asked_for_stream()
    }

    /// The provider and model to record: the response's [`StreamLabels`], then the
    /// `request_labels` closure (both the app's), then the request headers (their own budget),
    /// read only when the app names no provider. A request that matched no route takes none of
    /// them: it is recorded as `unknown`.
    #[inline]
    pub(crate) fn resolve_labels(
        &self,
        response: Option<&StreamLabels>,
        unrouted: bool,
    ) -> ResolvedLabels {
        // Most requests name nothing: no lookups to try (and no call made to find that out).
        let unnamed = self.names.is_none()
            && response.is_none_or(|l| l.provider.is_none() && l.model.is_none());
        if unrouted || unnamed {
            return ResolvedLabels {
                provider: self.recorder().unknown(),
                model: None,
                source: LabelSource::Trusted,
            };
        }
        self.resolve_named(response)
    }

    /// [`resolve_labels`](Self::resolve_labels) for a request or response that names something.
    #[inline(never)]
    fn resolve_named(&self, response: Option<&StreamLabels>) -> ResolvedLabels {
        let recorder = self.recorder();
        type Lookup<'m> = dyn Fn(&str, LabelSource) -> Option<Label> + 'm;
        let trusted = |v: Option<&str>, f: &Lookup<'_>| {
            let label = f(v?, LabelSource::Trusted)?;
            Some((label, LabelSource::Trusted))
        };
        // A value a client sent counts as a header's even when the app names it too (the
        // interner then shares the app's value): the combination is the client's choice.
        let header = |v: &HeaderValue, f: &Lookup<'_>| {
            let label = f(v.to_str().ok()?, LabelSource::Header)?;
            Some((label, LabelSource::Header))
        };
        let provider_of = |v: &str, s| recorder.provider_label(v, s);
        let model_of = |v: &str, s| recorder.model_label(v, s);
        let names = self.names.as_deref();
        // Headers name nothing once the app names the provider, by the response's labels or
        // by the `request_labels` closure (README, Security): a client's header would otherwise
        // move the upstream's failures to another provider, or win over the model the upstream
        // reports.
        let named = response.and_then(|l| l.provider.as_deref());
        let labeled = names.and_then(|n| n.labeled.provider.as_deref());
        let headers = names.filter(|_| named.is_none() && labeled.is_none());
        let provider = trusted(named, &provider_of)
            .or_else(|| trusted(labeled, &provider_of))
            .or_else(|| header(headers?.provider_header.as_ref()?, &provider_of));
        let model = trusted(response.and_then(|l| l.model.as_deref()), &model_of)
            .or_else(|| trusted(names?.labeled.model.as_deref(), &model_of))
            .or_else(|| header(headers?.model_header.as_ref()?, &model_of));
        // A label set with a value a client sent spends the headers' budget (README, Security).
        let source = if [&provider, &model]
            .into_iter()
            .flatten()
            .any(|(_, s)| *s == LabelSource::Header)
        {
            LabelSource::Header
        } else {
            LabelSource::Trusted
        };
        let provider = provider.map_or_else(|| recorder.unknown(), |(v, _)| v);
        let model = model.map(|(v, _)| v);
        ResolvedLabels {
            provider,
            model,
            source,
        }
    }

    /// The stream deadline, on tokio's clock (so tests can pause and advance it), counted from
    /// the request's start or, once the client sent the rest of its body later, from then
    /// (`RequestHints::upstream_origin`); `None` past the clock's range (a timeout so long it
    /// never passes).
    pub(crate) fn deadline(&self, after: Duration) -> Option<tokio::time::Instant> {
        self.hints.upstream_origin(self.started).checked_add(after)
    }

    /// Records a request that produced no response body to measure: an inner service error, a
    /// panic, a timeout or a cancel before the response headers.
    pub(crate) fn finish_without_body(
        self,
        scope: &RequestScope,
        outcome: Outcome,
        error: Option<&dyn Display>,
    ) {
        let duration = self.started.elapsed();
        let labels = self.resolve_labels(None, false);
        let model = labels.model.unwrap_or_else(|| self.recorder().unknown());
        log_end(scope, outcome, || End {
            outcome,
            status: None,
            provider: labels.provider,
            duration,
            output_tokens: 0,
            tokens_per_second: None,
            error,
            upstream: None,
        });
        let streaming = self.streaming_for(outcome);
        let tags = &scope.tags;
        let mut record = StreamRecord::new(labels.provider, model, tags.route, outcome);
        record.request_id = tags.request_id.clone();
        record.user_id = tags.user_id.clone();
        record.user_id_from_header = tags.user_id_from_header;
        record.streaming = streaming;
        record.duration = duration;
        // Decided before the trace: `StreamRecord::new` names every record an LLM call.
        record.operation_name = self.recorder().operation_name(
            crate::parse::ProviderFormat::Unknown,
            streaming,
            record.provider,
        );
        // A trace id for LLM calls (their exemplars); others keep one only if something
        // already made it.
        record.trace = match record.operation_name {
            Some(_) => Some(tags.trace().clone()),
            None => tags.trace.get().cloned(),
        };
        self.recorder()
            .record(record, self.facade_in_flight, false, labels.source);
    }
}

/// `MatchedPath` (axum), then the configured patterns, else `unmatched`: never the raw path.
fn route_of(recorder: &Recorder, routes: &RouteCache, request: RequestHead<'_>) -> Label {
    #[cfg(feature = "axum")]
    if let Some(matched) = request.extensions().get::<axum::extract::MatchedPath>() {
        return routes.label_matched(recorder, matched);
    }
    let path = request.uri().path();
    match recorder
        .settings()
        .route_patterns
        .iter()
        .find(|p| p.matches(path))
    {
        Some(p) => routes.label(recorder, &p.pattern()),
        None => recorder.unmatched(),
    }
}

/// What the layer reads of a request, borrowed from it in place.
#[derive(Clone, Copy)]
pub(crate) struct RequestHead<'a> {
    method: &'a http::Method,
    version: http::Version,
    uri: &'a http::Uri,
    headers: &'a HeaderMap,
    extensions: &'a http::Extensions,
}

impl<'a> RequestHead<'a> {
    pub(crate) fn of<B>(request: &'a Request<B>) -> Self {
        Self {
            method: request.method(),
            version: request.version(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: request.extensions(),
        }
    }

    fn method(&self) -> &'a http::Method {
        self.method
    }

    fn version(&self) -> http::Version {
        self.version
    }

    fn uri(&self) -> &'a http::Uri {
        self.uri
    }

    fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    fn extensions(&self) -> &'a http::Extensions {
        self.extensions
    }
}

/// The route label a service last resolved, shared by its clones (in the service's state).
/// axum applies a layer to each route apart, so a service sees one route: this spares interning
/// it again (validate, hash, look up) on every request. Only a label that is the route itself is
/// kept, never `other`: the interner keeps such a label for its life, so the kept one is what it
/// would return.
#[derive(Default)]
pub(crate) struct RouteCache {
    label: OnceLock<Label>,
    /// axum's `MatchedPath` and its label. axum hands each request of a route the same shared
    /// string, and the one kept here stays alive: a path at its address and of its length is
    /// that path, found without comparing the text.
    #[cfg(feature = "axum")]
    matched: OnceLock<(axum::extract::MatchedPath, Label)>,
}

impl RouteCache {
    fn label(&self, recorder: &Recorder, route: &str) -> Label {
        if let Some(label) = self.label.get().filter(|l| ***l == *route) {
            return *label;
        }
        let label = recorder.route_label(route);
        if *label == *route {
            // Another route's label may be kept already; then this one is looked up each time.
            let _ = self.label.set(label);
        }
        label
    }

    #[cfg(feature = "axum")]
    fn label_matched(&self, recorder: &Recorder, matched: &axum::extract::MatchedPath) -> Label {
        if let Some((kept, label)) = self.matched.get() {
            if std::ptr::eq(kept.as_str(), matched.as_str()) {
                return *label;
            }
        }
        let label = self.label(recorder, matched.as_str());
        if *label == *matched.as_str() {
            let _ = self.matched.set((matched.clone(), label));
        }
        label
    }
}

/// How a request ended, for its session log line.
pub(crate) struct End<'a> {
    pub(crate) outcome: Outcome,
    pub(crate) status: Option<http::StatusCode>,
    pub(crate) provider: Label,
    pub(crate) duration: Duration,
    pub(crate) output_tokens: u64,
    pub(crate) tokens_per_second: Option<f64>,
    /// A local error: the body's or the inner service's, a panic, this layer's timeout.
    pub(crate) error: Option<&'a dyn Display>,
    /// What the upstream said: its error body or in-stream error event.
    pub(crate) upstream: Option<&'a UpstreamError>,
}

/// The session log line for the end of a request. Every failure logs once, at the level of its
/// outcome ([`Outcome`]'s table in the README): ERROR for `server_error`, `stream_error`,
/// `timeout` and `auth_error`, WARN for `rate_limited`; `client_error` and `cancelled` are the
/// client's doing and log at INFO, like a success.
///
/// `end` is worked out only when the line is logged: most requests end logging nothing.
#[inline]
pub(crate) fn log_end<'a>(scope: &RequestScope, outcome: Outcome, end: impl FnOnce() -> End<'a>) {
    scope.record("outcome", &outcome);
    if outcome.is_error() && !outcome.is_client_caused() {
        log_failure(scope, &end());
    } else if tracing::enabled!(target: SESSION_TARGET, tracing::Level::INFO) {
        // Logged at INFO, below any level the error layer records: no need to mark the request
        // current for it. Asked first: when no layer wants the session's INFO lines (a `fmt`
        // layer at WARN), their fields need not be worked out.
        log_end_event(scope.span(), &end());
    }
}

#[inline(never)]
fn log_failure(scope: &RequestScope, end: &End<'_>) {
    // A failure's record names the provider it was recorded under, which the request alone
    // may not have named.
    let tags = RequestTags {
        provider: ShownProvider::Resolved(end.provider),
        ..scope.tags.clone()
    };
    tags.within(|| log_end_event(scope.span(), end));
    // A trace the error layer started for its record is the request's: its own record and
    // exemplars name the same one (README, Tracing).
    if let Some(trace) = tags.trace.get() {
        let _ = scope.tags.trace.set(trace.clone());
    }
}

#[inline(never)]
fn log_end_event(span: &Span, end: &End<'_>) {
    let outcome = end.outcome;
    let duration_ms = end.duration.as_secs_f64() * 1000.0;
    let status = end.status.map_or(0, |s| s.as_u16());
    let provider = end.provider.as_str();
    let output_tokens = end.output_tokens;
    // The timeout's own message keeps its documented wording, `Streaming timeout after {n}s`.
    if let (Outcome::Timeout, Some(error)) = (outcome, end.error) {
        tracing::error!(target: SESSION_TARGET, parent: span, outcome = outcome.as_str(), provider, duration_ms, "{error}");
        return;
    }
    let error_type = end.upstream.and_then(|u| u.kind.as_deref()).unwrap_or("");
    let detail = FailureDetail(end);
    match outcome {
        Outcome::Ok => tracing::info!(
            target: SESSION_TARGET,
            parent: span,
            outcome = outcome.as_str(),
            duration_ms,
            output_tokens,
            tokens_per_second = end.tokens_per_second.unwrap_or(0.0),
            "stream completed"
        ),
        Outcome::Cancelled => tracing::info!(
            target: SESSION_TARGET,
            parent: span,
            outcome = outcome.as_str(),
            duration_ms,
            output_tokens,
            "stream cancelled by the client"
        ),
        Outcome::ClientError => tracing::info!(
            target: SESSION_TARGET,
            parent: span,
            outcome = outcome.as_str(),
            status,
            duration_ms,
            "request refused as a client error{detail}"
        ),
        Outcome::RateLimited => tracing::warn!(
            target: SESSION_TARGET,
            parent: span,
            outcome = outcome.as_str(),
            provider,
            status,
            error_type,
            duration_ms,
            output_tokens,
            "stream failed: rate_limited{detail}"
        ),
        _ => tracing::error!(
            target: SESSION_TARGET,
            parent: span,
            outcome = outcome.as_str(),
            provider,
            status,
            error_type,
            duration_ms,
            output_tokens,
            "stream failed: {outcome}{detail}"
        ),
    }
}

/// ` (upstream: overloaded_error: Overloaded)`, ` (error: connection reset)`, or nothing.
struct FailureDetail<'a, 'b>(&'b End<'a>);

impl Display for FailureDetail<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(status) = self.0.status.filter(|s| !s.is_success()) {
            write!(f, " (HTTP {}", status.as_u16())?;
        } else {
            f.write_str(" (")?;
        }
        let mut wrote = self.0.status.is_some_and(|s| !s.is_success());
        if let Some(upstream) = self.0.upstream {
            write!(f, "{}upstream: {upstream}", if wrote { "; " } else { "" })?;
            wrote = true;
        }
        if let Some(error) = self.0.error {
            write!(f, "{}error: {error}", if wrote { "; " } else { "" })?;
            wrote = true;
        }
        if !wrote {
            f.write_str("no detail")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
impl RequestContext {
    /// [`start`](Self::start) for a request with no labels and no body watched: the stream
    /// types' tests start their requests so.
    pub(crate) fn start_plain<B>(state: &Arc<ServiceState>, request: &Request<B>) -> TrackedBox {
        Self::start(
            state,
            RequestHead::of(request),
            StreamLabels::default(),
            None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(states: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static(PARENT));
        for state in states {
            headers.append(TRACESTATE, HeaderValue::from_bytes(state).unwrap());
        }
        headers
    }

    fn trace_of(headers: &HeaderMap) -> Option<TraceContext> {
        let settings = crate::Monitor::builder()
            .build()
            .unwrap()
            .shared
            .config
            .stream
            .clone();
        trace_context(
            RequestHeaders::read(headers, &settings).traceparent,
            headers,
        )
    }

    fn state_of(states: &[&[u8]]) -> Option<String> {
        let trace = trace_of(&headers(states)).expect("the traceparent is valid");
        trace.tracestate().map(str::to_owned)
    }

    #[test]
    fn tracestate_lines_are_one_list() {
        assert_eq!(state_of(&[]), None);
        assert_eq!(
            state_of(&[b"congo=t61rcWkgMzE"]).as_deref(),
            Some("congo=t61rcWkgMzE")
        );
        assert_eq!(
            state_of(&[b"congo=t61rcWkgMzE", b"rojo=00f067aa0ba902b7", b"a=1,b=2"]).as_deref(),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7,a=1,b=2")
        );
    }

    #[test]
    fn tracestate_limit_holds_for_the_joined_list() {
        let half = format!("a={}", "x".repeat(253));
        assert_eq!(half.len(), 255);
        // 255 + 1 + 255 = 511 bytes: kept whole.
        let joined = state_of(&[half.as_bytes(), half.as_bytes()]).unwrap();
        assert_eq!(joined.len(), 511);
        // 3 lines, 767 bytes: dropped, the trace kept.
        assert_eq!(
            state_of(&[half.as_bytes(), half.as_bytes(), half.as_bytes()]),
            None
        );
        // One line over the limit: dropped too.
        let long = format!("a={}", "x".repeat(600));
        assert_eq!(state_of(&[long.as_bytes()]), None);
    }

    #[test]
    fn several_traceparent_lines_are_no_parent() {
        let mut two = headers(&[]);
        assert!(trace_of(&two).is_some());
        two.append(
            TRACEPARENT,
            HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );
        assert!(trace_of(&two).is_none());
    }

    /// The one pass over a few headers and the lookups past them read the same values.
    #[test]
    fn header_scan_reads_what_the_lookups_read() {
        let settings = crate::Monitor::builder()
            .build()
            .unwrap()
            .shared
            .config
            .stream
            .clone();
        let mut few = headers(&[]);
        few.append("x-llm-provider", HeaderValue::from_static("openai"));
        few.append("x-llm-provider", HeaderValue::from_static("anthropic"));
        few.append("x-request-id", HeaderValue::from_static("req-1"));
        few.append(
            http::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        few.append(
            http::header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        let mut many = few.clone();
        for i in 0..30 {
            let name = http::HeaderName::try_from(format!("x-filler-{i}")).unwrap();
            many.append(name, HeaderValue::from_static("1"));
        }
        for map in [&few, &many] {
            let read = RequestHeaders::read(map, &settings);
            assert_eq!(read.provider.unwrap(), "openai");
            assert_eq!(read.request_id.unwrap(), "req-1");
            assert!(read.model.is_none() && read.user_id.is_none());
            assert!(read.accepts_sse);
            assert_eq!(read.traceparent.unwrap(), PARENT);
        }
        let scanned = RequestHeaders::read(&few, &settings);
        let looked_up = RequestHeaders::look_up(&few, &settings);
        assert_eq!(scanned.provider, looked_up.provider);
        assert_eq!(scanned.traceparent, looked_up.traceparent);
        many.append(TRACEPARENT, HeaderValue::from_static(PARENT));
        assert!(RequestHeaders::read(&many, &settings).traceparent.is_none());
    }

    /// The label kept for axum's shared path string is the one the text gives: for the same
    /// string again, for an equal string elsewhere, and not for another route.
    #[cfg(feature = "axum")]
    #[tokio::test]
    async fn matched_path_label_is_the_routes() {
        use axum::extract::MatchedPath;
        use std::sync::Mutex;
        use tower::ServiceExt as _;

        let seen = Arc::new(Mutex::new(Vec::new()));
        let keep = |seen: Arc<Mutex<Vec<MatchedPath>>>| {
            move |path: MatchedPath| async move {
                seen.lock().unwrap().push(path);
            }
        };
        let app = |seen: &Arc<Mutex<Vec<MatchedPath>>>| {
            axum::Router::new()
                .route("/a/{id}", axum::routing::get(keep(seen.clone())))
                .route("/b", axum::routing::get(keep(seen.clone())))
        };
        // Two routers: equal route strings at different addresses.
        let (first, second) = (app(&seen), app(&seen));
        for (router, uri) in [(&first, "/a/1"), (&first, "/a/2"), (&second, "/a/3")] {
            let request = Request::get(uri).body(axum::body::Body::empty()).unwrap();
            router.clone().oneshot(request).await.unwrap();
        }
        let request = Request::get("/b").body(axum::body::Body::empty()).unwrap();
        first.clone().oneshot(request).await.unwrap();
        let paths = seen.lock().unwrap().clone();
        assert!(std::ptr::eq(paths[0].as_str(), paths[1].as_str()));
        assert!(!std::ptr::eq(paths[0].as_str(), paths[2].as_str()));

        let recorder = Recorder::new(crate::Monitor::builder().build().unwrap());
        let routes = RouteCache::default();
        let labels: Vec<Label> = paths
            .iter()
            .map(|p| routes.label_matched(&recorder, p))
            .collect();
        let texts: Vec<&str> = labels.iter().map(|l| &**l).collect();
        assert_eq!(texts, ["/a/{id}", "/a/{id}", "/a/{id}", "/b"]);
        // The first path is the one kept; its label is returned as kept.
        assert!(labels[0].is(labels[1]));
    }

    /// A disabled span is not kept once a subscriber is set, and the scope then shows a
    /// disabled span as before; an enabled span is kept as it is.
    #[test]
    fn disabled_span_is_not_kept() {
        let tags = || RequestTags {
            request_id: RequestId::Generated(1),
            user_id: None,
            user_id_from_header: false,
            route: Label::new("/x"),
            provider: ShownProvider::Unknown,
            trace: OnceCell::new(),
        };
        let subscriber = tracing_subscriber::registry();
        tracing::subscriber::with_default(subscriber, || {
            assert!(tracing::dispatcher::has_been_set());
            let enabled = RequestScope::new(tracing::info_span!("stream_request"), tags());
            assert!(enabled.span.is_some());
            assert!(!enabled.span().is_disabled());
            assert!(enabled.enter_span().is_some());
            let disabled = RequestScope::new(Span::none(), tags());
            assert!(disabled.span.is_none());
            assert!(disabled.span().is_disabled());
            assert!(disabled.enter_span().is_none());
            assert_eq!(disabled.span().id(), Span::none().id());
        });
    }

    /// The caller's trace context lands in the request's tags (set once the box is filled);
    /// a request without one has none until something makes one.
    #[test]
    fn started_request_keeps_the_callers_trace() {
        let state = ServiceState::new(Recorder::new(crate::Monitor::builder().build().unwrap()));
        let start = |request: &Request<()>| RequestContext::start_plain(&state, request);
        let traced = Request::get("/x")
            .header(TRACEPARENT, PARENT)
            .body(())
            .unwrap();
        let tracked = start(&traced);
        let trace = tracked.get().and_then(|t| t.scope.tags.trace.get());
        assert_eq!(
            trace.map(|t| t.trace_id().to_string()).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        tracked.give_back();
        let plain = Request::get("/x").body(()).unwrap();
        let tracked = start(&plain);
        assert!(
            tracked
                .get()
                .is_some_and(|t| t.scope.tags.trace.get().is_none())
        );
        tracked.give_back();
    }

    #[test]
    fn one_bad_tracestate_line_drops_the_list() {
        assert_eq!(state_of(&[b"congo=t61rcWkgMzE", b"rojo=\xff"]), None);
        let trace = trace_of(&headers(&[b"a=1", b"b=\xc3\xa9"])).unwrap();
        assert_eq!(
            trace.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(trace.tracestate(), None);
    }
}
