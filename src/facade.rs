//! Emission of each finished request to the `metrics` facade, under the names of [`crate::names`].
//!
//! Whatever recorder the application installed (Prometheus, StatsD, OpenTelemetry) receives them;
//! with none installed these calls are no-ops.

use std::sync::Arc;

use metrics::Label;

use crate::names;
use crate::record::StreamRecord;

/// Whether a recorder other than `metrics`' no-op recorder is current. The no-op recorder is the
/// only zero-sized one in practice (a recorder keeps state), and skipping the facade when it is
/// current saves building keys nobody will read: about a microsecond per request.
pub(crate) fn recorder_installed() -> bool {
    metrics::with_recorder(|recorder| std::mem::size_of_val(recorder) != 0)
}

/// The labels every per-request metric carries.
pub(crate) fn base_labels(record: &StreamRecord) -> Vec<Label> {
    let mut labels = Vec::with_capacity(4);
    labels.push(Label::new(names::PROVIDER, record.provider.clone()));
    labels.push(Label::new(names::MODEL, record.model.clone()));
    labels.push(Label::new(names::ROUTE, record.route.clone()));
    labels
}

/// A request that matched no route (counted without labels).
pub(crate) fn unrouted() {
    metrics::counter!(names::UNROUTED_REQUESTS_TOTAL).increment(1);
}

pub(crate) fn emit(record: &StreamRecord) {
    let labels = base_labels(record);

    let mut with_outcome = labels.clone();
    with_outcome.push(Label::new(names::OUTCOME, record.outcome.as_str()));
    metrics::counter!(names::REQUESTS_TOTAL, with_outcome.clone()).increment(1);
    metrics::histogram!(names::REQUEST_DURATION, with_outcome)
        .record(record.duration.as_secs_f64());

    if let Some(ttfb) = record.time_to_first_byte {
        metrics::histogram!(names::TIME_TO_FIRST_BYTE, labels.clone()).record(ttfb.as_secs_f64());
    }
    if let Some(ttft) = record.time_to_first_token {
        metrics::histogram!(names::TIME_TO_FIRST_TOKEN, labels.clone()).record(ttft.as_secs_f64());
    }
    if let Some(tpot) = record.time_per_output_token {
        metrics::histogram!(names::TIME_PER_OUTPUT_TOKEN, labels.clone())
            .record(tpot.as_secs_f64());
    }
    metrics::histogram!(names::RESPONSE_BYTES, labels.clone()).record(record.bytes as f64);
    if record.output_tokens > 0 || record.input_tokens.is_some() {
        let mut output = labels.clone();
        output.push(Label::new(names::TOKEN_TYPE, "output"));
        metrics::histogram!(names::TOKEN_USAGE, output).record(record.output_tokens as f64);
        if let Some(input) = record.input_tokens {
            let mut input_labels = labels.clone();
            input_labels.push(Label::new(names::TOKEN_TYPE, "input"));
            metrics::histogram!(names::TOKEN_USAGE, input_labels).record(input as f64);
        }
    }
    emit_skipped(record);
}

pub(crate) fn emit_skipped(record: &StreamRecord) {
    if record.oversized_events > 0 {
        metrics::counter!(names::SKIPPED_EVENTS_TOTAL, "reason" => "oversized")
            .increment(record.oversized_events);
    }
    if record.malformed_events > 0 {
        metrics::counter!(names::SKIPPED_EVENTS_TOTAL, "reason" => "malformed")
            .increment(record.malformed_events);
    }
}

pub(crate) fn in_flight(route: &Arc<str>, delta: f64) {
    metrics::gauge!(names::IN_FLIGHT, names::ROUTE => route.clone()).increment(delta);
}

pub(crate) fn label_overflow(label: &'static str) {
    metrics::counter!(names::LABEL_OVERFLOW_TOTAL, "label" => label).increment(1);
}

/// HELP text and units, once per recorder.
pub(crate) fn describe() {
    use metrics::Unit;
    metrics::describe_histogram!(
        names::TIME_TO_FIRST_TOKEN,
        Unit::Seconds,
        "Time from the request to the first output token."
    );
    metrics::describe_histogram!(
        names::TIME_PER_OUTPUT_TOKEN,
        Unit::Seconds,
        "Time per output token after the first."
    );
    metrics::describe_histogram!(
        names::REQUEST_DURATION,
        Unit::Seconds,
        "Time from the request to the end of the response body."
    );
    metrics::describe_histogram!(names::TOKEN_USAGE, "Tokens per request, by token type.");
    metrics::describe_counter!(names::REQUESTS_TOTAL, "Finished requests, by outcome.");
    metrics::describe_gauge!(names::IN_FLIGHT, "Requests started and not yet finished.");
    metrics::describe_histogram!(
        names::TIME_TO_FIRST_BYTE,
        Unit::Seconds,
        "Time from the request to the first body byte."
    );
    metrics::describe_histogram!(
        names::RESPONSE_BYTES,
        Unit::Bytes,
        "Response body bytes per request."
    );
    metrics::describe_counter!(
        names::SKIPPED_EVENTS_TOTAL,
        "Stream events skipped as oversized or malformed."
    );
    metrics::describe_counter!(
        names::LABEL_OVERFLOW_TOTAL,
        "Label values folded into other by the cardinality caps."
    );
    metrics::describe_counter!(
        names::UNROUTED_REQUESTS_TOTAL,
        "Requests that matched no route (a router 404 or a 405)."
    );
}
