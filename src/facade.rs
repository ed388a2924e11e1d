//! Emission of each finished request to the `metrics` facade, under the names of [`crate::names`].
//!
//! Whatever recorder the application installed (Prometheus, StatsD, OpenTelemetry) receives them;
//! with none installed these calls are no-ops.

use metrics::Label;

use crate::names::{self, LabelValue, Metric, Sink};
use crate::record::StreamRecord;

/// Whether a recorder other than `metrics`' no-op recorder is current. The no-op recorder is the
/// only zero-sized one in practice (a recorder keeps state), and skipping the facade when it is
/// current saves building keys nobody will read: about a microsecond per request.
pub(crate) fn recorder_installed() -> bool {
    metrics::with_recorder(|recorder| std::mem::size_of_val(recorder) != 0)
}

/// The labels every per-request metric carries: those of [`names::REQUEST_LABELS`] that apply
/// (an operation and a response model only when the record has them).
pub(crate) fn base_labels(record: &StreamRecord) -> Vec<Label> {
    let mut labels = Vec::with_capacity(names::REQUEST_LABELS.len() + 2);
    labels.push(Label::new(names::PROVIDER, record.provider.as_str()));
    labels.push(Label::new(names::MODEL, record.model.as_str()));
    labels.push(Label::new(names::ROUTE, record.route.as_str()));
    if let Some(operation) = record.operation_name {
        labels.push(Label::new(names::OPERATION, operation));
    }
    if let Some(model) = &record.response_model {
        labels.push(Label::new(names::RESPONSE_MODEL, model.as_str()));
    }
    labels
}

/// The labels of one observation: the record's (`base`) when the metric has them, then `extra`
/// under the label name that follows them, then `error_type` for a failure's outcome.
pub(crate) fn labels(metric: &Metric, base: &[Label], extra: Option<LabelValue>) -> Vec<Label> {
    let (mut labels, at) = if metric.per_label_set() {
        (base.to_vec(), names::REQUEST_LABELS.len())
    } else {
        (Vec::with_capacity(1), 0)
    };
    if let (Some(value), Some(&key)) = (extra, metric.labels.get(at)) {
        labels.push(Label::new(key, value.value));
    }
    if let Some((key, value)) = metric.error_type(extra) {
        labels.push(Label::new(key, value));
    }
    labels
}

/// Observations sent to the current recorder, a key built for each.
struct Facade {
    base: Vec<Label>,
}

impl Sink for Facade {
    fn counter(&mut self, metric: &'static Metric, extra: Option<LabelValue>, n: u64) {
        let labels = labels(metric, &self.base, extra);
        if metric.scale() == 1.0 {
            metrics::counter!(metric.name, labels).increment(n);
        } else {
            // The facade's counters count whole units: a fractional amount rises a gauge.
            metrics::gauge!(metric.name, labels).increment(n as f64 * metric.scale());
        }
    }

    fn histogram(&mut self, metric: &'static Metric, extra: Option<LabelValue>, value: f64) {
        metrics::histogram!(metric.name, labels(metric, &self.base, extra)).record(value);
    }
}

/// A request that matched no route (counted without labels).
pub(crate) fn unrouted() {
    metrics::counter!(names::UNROUTED_REQUESTS_TOTAL).increment(1);
}

pub(crate) fn emit(record: &StreamRecord) {
    let mut facade = Facade {
        base: base_labels(record),
    };
    names::observe(record, &mut facade);
}

pub(crate) fn in_flight(route: crate::label::Label, delta: f64) {
    metrics::gauge!(names::IN_FLIGHT, names::ROUTE => route.as_str()).increment(delta);
}

pub(crate) fn label_overflow(label: &'static str) {
    metrics::counter!(names::LABEL_OVERFLOW_TOTAL, names::CAPPED_LABEL => label).increment(1);
}

/// The health gauges of a report (see [`names::observe_health`]).
pub(crate) fn health(report: &crate::health::HealthReport, anomalies: &mut AnomalySeries) {
    let set = |metric: &Metric, values: &[&str], value: f64| {
        let labels: Vec<Label> = metric
            .labels()
            .iter()
            .zip(values)
            .map(|(key, value)| Label::new(*key, value.to_string()))
            .collect();
        metrics::gauge!(metric.name(), labels).set(value);
    };
    names::observe_health(report, set);
    // A recorder keeps a gauge at its last value, where the exposition drops a series no
    // longer judged: a signal that stopped being judged reads 0 (no anomaly), not the score it
    // had (README, Use).
    let judged: AnomalySeries = report
        .anomalies
        .iter()
        .map(|a| (a.provider.clone(), a.model.clone(), a.signal))
        .collect();
    for (provider, model, signal) in anomalies.iter().filter(|a| !judged.contains(a)) {
        names::observe_unjudged_anomaly(provider, model, signal, set);
    }
    *anomalies = judged;
}

/// The (provider, model, signal) of the anomaly scores set through the facade.
pub(crate) type AnomalySeries = Vec<(String, String, &'static str)>;
