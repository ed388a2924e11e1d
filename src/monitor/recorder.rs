//! The stream layer's handle on the monitor (ARCHITECTURE.md, The parts): the settings a request
//! is measured with, and the few things measuring does with the monitor: intern labels, count
//! requests in flight, hand over the finished record. Nothing more: the stream layer cannot
//! reach the windows, health, spend or the exposition.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::HeaderName;

use super::{Monitor, RequestLabeler};
use crate::health::Baselines;
use crate::label::Label;
use crate::labels::{LabelSource, RoutePattern};
use crate::parse::ProviderFormat;
use crate::record::StreamRecord;

/// What the stream layer measures with: the part of the monitor's settings it reads.
#[derive(Clone)]
pub(crate) struct StreamSettings {
    pub(crate) stream_timeout: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) provider_header: Option<HeaderName>,
    pub(crate) model_header: Option<HeaderName>,
    pub(crate) user_id_header: Option<HeaderName>,
    pub(crate) request_id_header: Option<HeaderName>,
    pub(crate) labeler: Option<Arc<dyn RequestLabeler>>,
    pub(crate) route_patterns: Vec<RoutePattern>,
    pub(crate) streaming_routes: Vec<String>,
    pub(crate) max_event_bytes: usize,
    /// From the first-token baseline, set when the monitor is built.
    pub(crate) first_token: FirstTokenThresholds,
}

/// What the stream layer reads of the first-token baseline: how late a first token must be to
/// log above DEBUG (WARN past the critical threshold, INFO past the warning one: README,
/// Session logs), and how long a stream left without a token must have waited for its wait to
/// count as a lower bound of its first token (past the critical threshold: README, Security).
/// Worked out from the baseline when the monitor is built, so measuring knows no health rules.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FirstTokenThresholds {
    warn_past_ms: f64,
    info_past_ms: f64,
    /// Whether "past" means below (a baseline where higher is better).
    below: bool,
}

impl FirstTokenThresholds {
    pub(crate) fn from_baselines(baselines: &Baselines) -> Self {
        let b = &baselines.streaming_first_token;
        Self {
            warn_past_ms: b.critical,
            info_past_ms: b.warning,
            below: b.higher_is_better,
        }
    }

    pub(crate) fn log_level(&self, latency_ms: f64) -> tracing::Level {
        let past = |threshold: f64| {
            if self.below {
                latency_ms < threshold
            } else {
                latency_ms > threshold
            }
        };
        if past(self.warn_past_ms) {
            tracing::Level::WARN
        } else if past(self.info_past_ms) {
            tracing::Level::INFO
        } else {
            tracing::Level::DEBUG
        }
    }

    /// Whether a stream that waited `waited_ms` for a first token that never came counts that
    /// wait as a lower bound of its first token: only past the critical threshold, where it
    /// tells the check only what is so (the first token, had it come, was past it too). A
    /// shorter wait says nothing of where the first token lies, and as a figure it would pull
    /// the percentiles down: clients leaving at once would hide a slow upstream.
    pub(crate) fn lower_bound_counts(&self, waited_ms: f64) -> bool {
        !self.below && waited_ms > self.warn_past_ms
    }
}

/// The stream layer's handle: cheap to clone (one `Arc`).
#[derive(Clone)]
pub(crate) struct Recorder {
    monitor: Monitor,
}

impl Recorder {
    pub(crate) fn new(monitor: Monitor) -> Self {
        Self { monitor }
    }

    /// The monitor behind the handle, for the layer's public accessor.
    pub(crate) fn monitor(&self) -> &Monitor {
        &self.monitor
    }

    pub(crate) fn settings(&self) -> &StreamSettings {
        &self.monitor.shared.config.stream
    }

    /// A number for a request that brought no id of its own.
    pub(crate) fn next_request_number(&self) -> u64 {
        self.monitor.next_request_number()
    }

    /// Whether a response named its provider by `StreamLabels` (see
    /// [`note_app_names_providers`](Self::note_app_names_providers)).
    pub(crate) fn app_names_providers(&self) -> bool {
        self.monitor
            .shared
            .app_names_providers
            .load(Ordering::Relaxed)
    }

    /// A response named its provider by `StreamLabels`: from now on a request that ends before
    /// its response is not recorded under a provider its headers name (README, Security). Read
    /// first, so that the line is written once.
    pub(crate) fn note_app_names_providers(&self) {
        let flag = &self.monitor.shared.app_names_providers;
        if !flag.load(Ordering::Relaxed) {
            flag.store(true, Ordering::Relaxed);
        }
    }

    /// The label of a provider or model nothing named.
    pub(crate) fn unknown(&self) -> Label {
        self.monitor.shared.unknown
    }

    /// The route label of a request no route matched.
    pub(crate) fn unmatched(&self) -> Label {
        self.monitor.shared.unmatched
    }

    /// The provider label for `value` (see `LabelInterner`); `None` when a client's value is
    /// no valid label.
    pub(crate) fn provider_label(&self, value: &str, source: LabelSource) -> Option<Label> {
        self.monitor.provider_label(value, source)
    }

    /// The model label for `value`.
    pub(crate) fn model_label(&self, value: &str, source: LabelSource) -> Option<Label> {
        self.monitor.model_label(value, source)
    }

    /// The route label for a route pattern.
    pub(crate) fn route_label(&self, value: &str) -> Label {
        self.monitor.route_label(value)
    }

    /// The `gen_ai.operation.name` of a request, `None` when it is no LLM call.
    pub(crate) fn operation_name(
        &self,
        format: ProviderFormat,
        streaming: bool,
        provider: Label,
    ) -> Option<&'static str> {
        self.monitor.operation_name(format, streaming, provider)
    }

    /// Counts a request in flight; whether the facade's gauge was raised (lower it only then).
    /// Inlined, with the monitor's, where a request starts: once per request.
    #[inline]
    pub(crate) fn request_started(&self, route: Label) -> bool {
        self.monitor.request_started(route)
    }

    /// A response arrived from `provider`: in flight for it until recorded.
    pub(crate) fn provider_started(&self, provider: Label) {
        self.monitor.provider_started(provider)
    }

    /// Hands over a finished request, once (see `Monitor::record`). Inlined into the meter,
    /// so the record is not copied once more on its way (always: past the few instructions of
    /// the call, a copy of the record's 430 bytes, which the inliner does not weigh).
    #[inline(always)]
    pub(crate) fn record(
        &self,
        record: StreamRecord,
        facade_in_flight: bool,
        provider_in_flight: bool,
        source: LabelSource,
    ) {
        self.monitor
            .record(record, facade_in_flight, provider_in_flight, source)
    }
}
