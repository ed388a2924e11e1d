//! Per-request state from the service call on: labels known from the request, ids, the span,
//! and the session logs of SPEC section 8.

use std::fmt::Display;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;
use http::request::Parts;
use tracing::Span;
use tracing::field::Empty;

use crate::labels::{UserId, is_valid_label};
use crate::record::{Outcome, RequestId, StreamRecord};
use crate::{Monitor, SESSION_TARGET};

/// What the request alone tells; moves from the response future into the body.
pub(crate) struct RequestContext {
    pub(crate) monitor: Monitor,
    pub(crate) started: Instant,
    pub(crate) request_id: RequestId,
    pub(crate) user_id: Option<Arc<str>>,
    pub(crate) route: Arc<str>,
    pub(crate) provider: Option<Arc<str>>,
    pub(crate) model: Option<Arc<str>>,
    /// `Accept: text/event-stream` or a configured streaming route.
    pub(crate) streaming_hint: bool,
    /// Whether the facade's in-flight gauge was raised for this request.
    pub(crate) facade_in_flight: bool,
}

fn header_str<'a>(headers: &'a HeaderMap, name: Option<&http::HeaderName>) -> Option<&'a str> {
    headers.get(name?)?.to_str().ok()
}

impl RequestContext {
    /// Starts measuring a request: resolves what the request tells, opens its span, logs the
    /// start and counts it in flight.
    pub(crate) fn start(monitor: &Monitor, parts: &Parts) -> (Self, Span) {
        let started = Instant::now();
        let config = monitor.config();

        let route = route_of(monitor, parts);
        let from_labeler = config
            .labeler
            .as_ref()
            .map(|l| l.labels(parts))
            .unwrap_or_default();
        let provider = header_str(&parts.headers, config.provider_header.as_ref())
            .and_then(|v| monitor.provider_label(v))
            .or_else(|| {
                from_labeler
                    .provider
                    .as_deref()
                    .and_then(|v| monitor.provider_label(v))
            });
        let model = header_str(&parts.headers, config.model_header.as_ref())
            .and_then(|v| monitor.model_label(v))
            .or_else(|| {
                from_labeler
                    .model
                    .as_deref()
                    .and_then(|v| monitor.model_label(v))
            });
        let user_id = header_str(&parts.headers, config.user_id_header.as_ref())
            .filter(|v| is_valid_label(v))
            .map(Arc::from)
            .or_else(|| {
                parts
                    .extensions
                    .get::<UserId>()
                    .filter(|u| is_valid_label(&u.0))
                    .map(|u| Arc::from(&*u.0))
            });
        let request_id = header_str(&parts.headers, config.request_id_header.as_ref())
            .filter(|v| is_valid_label(v))
            .map(|v| RequestId::Header(Arc::from(v)))
            .unwrap_or_else(|| RequestId::Generated(monitor.next_request_number()));
        let accepts_sse = parts
            .headers
            .get_all(http::header::ACCEPT)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.contains("text/event-stream")));
        let streaming_hint = accepts_sse || config.streaming_routes.iter().any(|r| **r == *route);

        let span = tracing::info_span!(
            target: SESSION_TARGET,
            "stream_request",
            request_id = %request_id,
            user_id = Empty,
            provider = Empty,
            model = Empty,
            route = %route,
            outcome = Empty,
        );
        if let Some(user) = &user_id {
            span.record("user_id", tracing::field::display(&**user));
        }
        if let Some(p) = &provider {
            span.record("provider", tracing::field::display(&**p));
        }
        tracing::info!(
            target: SESSION_TARGET,
            parent: &span,
            request_id = %request_id,
            user_id = %user_id.as_deref().unwrap_or("-"),
            provider = %provider.as_deref().unwrap_or("unknown"),
            route = %route,
            "stream started"
        );
        let facade_in_flight = monitor.request_started(&route);
        let context = Self {
            monitor: monitor.clone(),
            started,
            request_id,
            user_id,
            route,
            provider,
            model,
            streaming_hint,
            facade_in_flight,
        };
        (context, span)
    }

    /// The stream deadline, on tokio's clock (so tests can pause and advance it).
    pub(crate) fn deadline(&self, after: Duration) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.started) + after
    }

    /// Records a request that produced no response body to measure: an inner service error, a
    /// panic, a timeout or a cancel before the response headers.
    pub(crate) fn finish_without_body(
        self,
        span: &Span,
        outcome: Outcome,
        error: Option<&dyn Display>,
    ) {
        let duration = self.started.elapsed();
        let provider = self
            .provider
            .clone()
            .unwrap_or_else(|| self.monitor.unknown());
        let model = self.model.clone().unwrap_or_else(|| self.monitor.unknown());
        log_end(span, outcome, duration, 0, None, error);
        let mut record = StreamRecord::new(provider, model, self.route, outcome);
        record.request_id = self.request_id;
        record.user_id = self.user_id;
        record.streaming = self.streaming_hint;
        record.duration = duration;
        self.monitor.record(record, self.facade_in_flight);
    }
}

/// `MatchedPath` (axum), then the configured patterns, else `unmatched`: never the raw path.
fn route_of(monitor: &Monitor, parts: &Parts) -> Arc<str> {
    #[cfg(feature = "axum")]
    if let Some(matched) = parts.extensions.get::<axum::extract::MatchedPath>() {
        return monitor.route_label(matched.as_str());
    }
    let path = parts.uri.path();
    match monitor
        .config()
        .route_patterns
        .iter()
        .find(|p| p.matches(path))
    {
        Some(p) => monitor.route_label(p.pattern()),
        None => monitor.unmatched(),
    }
}

/// `60s`, `2.5s`, `0.3s`: the seed's `Streaming timeout after {n}s` wording.
pub(crate) fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        let s = format!("{:.3}", d.as_secs_f64());
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// The session log line for the end of a request, at the level SPEC section 8 gives.
pub(crate) fn log_end(
    span: &Span,
    outcome: Outcome,
    duration: Duration,
    output_tokens: u64,
    tokens_per_second: Option<f64>,
    error: Option<&dyn Display>,
) {
    span.record("outcome", tracing::field::display(outcome));
    let duration_ms = duration.as_secs_f64() * 1000.0;
    match (outcome, error) {
        (Outcome::Timeout, Some(error)) => tracing::error!(
            target: SESSION_TARGET,
            parent: span,
            outcome = outcome.as_str(),
            duration_ms,
            "{error}"
        ),
        (Outcome::Cancelled, _) => tracing::info!(
            target: SESSION_TARGET,
            parent: span,
            outcome = outcome.as_str(),
            duration_ms,
            output_tokens,
            "stream cancelled by the client"
        ),
        (_, Some(error)) => tracing::error!(
            target: SESSION_TARGET,
            parent: span,
            outcome = outcome.as_str(),
            duration_ms,
            output_tokens,
            error = %error,
            "stream failed"
        ),
        (_, None) => tracing::info!(
            target: SESSION_TARGET,
            parent: span,
            outcome = outcome.as_str(),
            duration_ms,
            output_tokens,
            tokens_per_second = tokens_per_second.unwrap_or(0.0),
            "stream completed"
        ),
    }
}

/// Displays an error with its `source()` chain: `outer: inner: root`.
pub(crate) struct ErrorChain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}
