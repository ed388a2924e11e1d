//! A request's context from its start on (read from the request in `start.rs`): what its
//! labels resolve to when it is recorded, its scope (span and tags for the error layer), and
//! its session logs (crate docs, Session logs).

use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

// Tokio's clock: a paused test runtime moves first-token and duration figures too.
use tokio::time::Instant;

use http::HeaderValue;
use tracing::Span;

use super::request_body::RequestHints;
use super::state::ServiceState;
use crate::SESSION_TARGET;
use crate::StreamLabels;
use crate::errors::scope::{RequestTags, ShownProvider};
use crate::label::Label;
use crate::labels::LabelSource;
use crate::monitor::Recorder;
use crate::parse::UpstreamError;
use crate::record::{Outcome, StreamRecord};

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
    pub(super) names: Option<Box<RequestNames>>,
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
pub(super) struct RequestNames {
    pub(super) provider_header: Option<HeaderValue>,
    pub(super) model_header: Option<HeaderValue>,
    pub(super) labeled: StreamLabels,
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
    pub(super) span: Option<Span>,
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
    pub(super) fn kept(span: Span) -> Option<Span> {
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

impl RequestContext {
    /// The recorder of the service that took the request.
    #[inline]
    pub(crate) fn recorder(&self) -> &Recorder {
        &self.state.recorder
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
        self.resolve_named(response, true)
    }

    /// [`resolve_labels`](Self::resolve_labels) for a request that ends with no response (a
    /// deadline, a panic, a service error, a cancel): its headers are not read once a response
    /// named its provider by `StreamLabels` (the app names its upstreams so), since the labels
    /// the handler would have given are not known (README, Security).
    fn resolve_labels_without_response(&self) -> ResolvedLabels {
        if self.names.is_none() {
            return self.resolve_labels(None, false);
        }
        self.resolve_named(None, !self.recorder().app_names_providers())
    }

    /// [`resolve_labels`](Self::resolve_labels) for a request or response that names something;
    /// the request's headers are read only if `headers`.
    #[inline(never)]
    fn resolve_named(&self, response: Option<&StreamLabels>, headers: bool) -> ResolvedLabels {
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
        if named.is_some() {
            recorder.note_app_names_providers();
        }
        let labeled = names.and_then(|n| n.labeled.provider.as_deref());
        let headers = names.filter(|_| headers && named.is_none() && labeled.is_none());
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
        let labels = self.resolve_labels_without_response();
        let model = labels.model.unwrap_or_else(|| self.recorder().unknown());
        let panicked = log_end(scope, outcome, || End {
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
        resume(panicked);
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

/// Whether a request that ended with `outcome` logs a failure (see [`log_end`]).
#[inline]
fn logs_failure(outcome: Outcome) -> bool {
    outcome.is_error() && !outcome.is_client_caused()
}

/// The session log line for the end of a request. Every failure logs once, at the level of its
/// outcome ([`Outcome`]'s table in the README): ERROR for `server_error`, `stream_error`,
/// `timeout` and `auth_error`, WARN for `rate_limited`; `client_error` and `cancelled` are the
/// client's doing and log at INFO, like a success.
///
/// `end` is worked out only when the line is logged: most requests end logging nothing.
///
/// Logged before the request's record is handed over (a failure's error record may start the
/// trace the record names), and the line runs the app's code (its error's `Display`, its
/// subscriber's layers): a panic there is caught and kept (per thread) for [`resume`], called
/// once the record is handed over, so that it loses no record. Returns whether a panic was
/// caught. The catching is in the cold functions that log: a request that logs nothing pays
/// nothing for it.
#[inline]
#[must_use]
pub(crate) fn log_end<'a>(
    scope: &RequestScope,
    outcome: Outcome,
    end: impl FnOnce() -> End<'a>,
) -> bool {
    let mut panicked = scope.has_span() && record_caught(scope, "outcome", &outcome);
    if logs_failure(outcome) {
        panicked |= log_failure(scope, &end());
    } else if tracing::enabled!(target: SESSION_TARGET, tracing::Level::INFO) {
        // Logged at INFO, below any level the error layer records: no need to mark the request
        // current for it. Asked first: when no layer wants the session's INFO lines (a `fmt`
        // layer at WARN), their fields need not be worked out.
        panicked |= log_end_event_caught(scope.span(), &end());
    }
    panicked
}

/// `field` on the request's span, for a scope that keeps one (asked first: `has_span`), as
/// the request ends; `true` when the subscriber panicked, the panic kept for [`resume`] (see
/// [`log_end`]).
#[cold]
#[inline(never)]
pub(crate) fn record_caught(
    scope: &RequestScope,
    field: &'static str,
    value: &dyn Display,
) -> bool {
    caught(|| scope.record(field, value))
}

thread_local! {
    /// A panic [`log_end`] caught on this thread, until [`resume`] goes on with it.
    static LOG_PANIC: std::cell::Cell<Option<Box<dyn std::any::Any + Send>>> =
        const { std::cell::Cell::new(None) };
}

/// Runs `log`; a panic in it is kept for [`resume`]: `true` then.
pub(crate) fn caught(log: impl FnOnce()) -> bool {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(log)) {
        Ok(()) => false,
        Err(panic) => {
            let _ = LOG_PANIC.try_with(|slot| slot.set(Some(panic)));
            true
        }
    }
}

/// Goes on with a panic [`log_end`] caught (`panicked`: what it returned), now that the
/// record is handed over; unless another panic unwinds already (the request recorded from a drop),
/// where a second one escaping the drop would abort the process: then it is dropped, its
/// message printed already.
#[inline]
pub(crate) fn resume(panicked: bool) {
    if panicked {
        resume_caught();
    }
}

#[cold]
#[inline(never)]
fn resume_caught() {
    let panic = LOG_PANIC.try_with(std::cell::Cell::take).ok().flatten();
    if let Some(panic) = panic {
        if !std::thread::panicking() {
            std::panic::resume_unwind(panic);
        }
    }
}

/// A failure's line, marked with the request for the error layer; `true` when something in it
/// panicked (see [`log_end`]).
#[inline(never)]
fn log_failure(scope: &RequestScope, end: &End<'_>) -> bool {
    // A failure's record names the provider it was recorded under, which the request alone
    // may not have named.
    let tags = RequestTags {
        provider: ShownProvider::Resolved(end.provider),
        ..scope.tags.clone()
    };
    let panicked = caught(|| tags.within(|| log_end_event(scope.span(), end)));
    // A trace the error layer started for its record is the request's: its own record and
    // exemplars name the same one (README, Tracing).
    if let Some(trace) = tags.trace.get() {
        let _ = scope.tags.trace.set(trace.clone());
    }
    panicked
}

/// [`log_end_event`], a panic in it caught (see [`log_end`]).
#[cold]
#[inline(never)]
fn log_end_event_caught(span: &Span, end: &End<'_>) -> bool {
    caught(|| log_end_event(span, end))
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
mod tests {
    use std::cell::OnceCell;

    use super::*;
    use crate::record::RequestId;

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
}
