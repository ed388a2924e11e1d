//! A request's start: what the request tells (its route, the configured headers, the caller's
//! trace context) read once, its span opened and its start logged, all written into the box
//! that carries the request's state (`tracked.rs`).

use std::borrow::Cow;
use std::cell::OnceCell;
use std::fmt::Display;
use std::sync::Arc;

// Tokio's clock: a paused test runtime moves first-token and duration figures too.
use tokio::time::Instant;

use http::{HeaderMap, HeaderValue, Request};
use tracing::field::Empty;

use super::context::{RequestContext, RequestNames, RequestScope};
use super::request_body::{RequestBodyWatch, RequestHints};
use super::state::{RouteCache, ServiceState};
use super::tracked::{EmptyBox, Tracked, TrackedBox};
use crate::SESSION_TARGET;
use crate::StreamLabels;
use crate::errors::scope::{RequestTags, ShownProvider};
use crate::label::Label;
use crate::labels::{UserId, is_valid_label};
use crate::monitor::{Recorder, StreamSettings};
use crate::record::RequestId;
use crate::trace::{MAX_TRACESTATE, TraceContext};

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
    #[inline]
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
#[inline]
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
}

/// `MatchedPath` (axum), then the configured patterns, else `unmatched`: never the raw path.
#[inline]
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

    /// The stream settings of a monitor built with the defaults.
    fn default_settings() -> StreamSettings {
        crate::Monitor::builder()
            .build()
            .unwrap()
            .shared
            .config
            .stream
            .clone()
    }

    fn trace_of(headers: &HeaderMap) -> Option<TraceContext> {
        let settings = default_settings();
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
        let settings = default_settings();
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
