//! Metric and label names, shared by the `metrics` facade emission and the Prometheus endpoint.
//!
//! They follow the OpenTelemetry GenAI semantic conventions as Prometheus spells them
//! (dots become underscores, the unit becomes a suffix). [`METRICS`] describes every metric:
//! kind, unit, labels, histogram buckets and help text.

use metrics::Unit;

use crate::health::{HealthReport, HealthStatus};
use crate::parse::FinishReason;
use crate::record::{Outcome, StreamRecord};

/// Histogram (seconds): service call to first output token.
pub const TIME_TO_FIRST_TOKEN: &str = "gen_ai_server_time_to_first_token_seconds";
/// Histogram (seconds): time per output token after the first.
pub const TIME_PER_OUTPUT_TOKEN: &str = "gen_ai_server_time_per_output_token_seconds";
/// Histogram (seconds): service call to end of body; has the `outcome` label, and
/// `error_type` on failures.
pub const REQUEST_DURATION: &str = "gen_ai_server_request_duration_seconds";
/// Histogram (tokens): tokens per request, with `gen_ai_token_type` = `input` | `output`.
pub const TOKEN_USAGE: &str = "gen_ai_client_token_usage";
/// Counter (tokens): input tokens, every prompt token (cached ones included).
pub const INPUT_TOKENS_TOTAL: &str = "gen_ai_client_inference_usage_detailed_input_tokens_total";
/// Counter (tokens): output tokens, every generated token (reasoning included).
pub const OUTPUT_TOKENS_TOTAL: &str = "gen_ai_client_inference_usage_detailed_output_tokens_total";
/// Counter (tokens): input tokens read from the provider's prompt cache (part of
/// [`INPUT_TOKENS_TOTAL`]).
pub const CACHE_READ_INPUT_TOKENS_TOTAL: &str =
    "gen_ai_client_inference_usage_detailed_cache_read_input_tokens_total";
/// Counter (tokens): input tokens written to the provider's prompt cache (part of
/// [`INPUT_TOKENS_TOTAL`]).
pub const CACHE_WRITE_INPUT_TOKENS_TOTAL: &str =
    "gen_ai_client_inference_usage_detailed_cache_write_input_tokens_total";
/// Counter (tokens): reasoning tokens (part of [`OUTPUT_TOKENS_TOTAL`]).
pub const REASONING_OUTPUT_TOKENS_TOTAL: &str =
    "gen_ai_client_inference_usage_detailed_reasoning_output_tokens_total";
/// Counter: finished LLM calls whose stream gave a finish reason, or ended normally without
/// one (`unfinished`), by `finish_reason`.
pub const FINISH_REASONS_TOTAL: &str = "stream_monitor_finish_reasons_total";
/// Gauge: each provider and model's signal against its own recent past, in robust standard
/// deviations in the bad direction (README, Trends and anomalies); above 4 (by default) is an
/// anomaly.
pub const ANOMALY_SCORE: &str = "stream_monitor_anomaly_score";
/// Label: the signal on [`ANOMALY_SCORE`] (`first_token_p95_ms`, `tokens_per_second`,
/// `error_rate`).
pub const SIGNAL: &str = "signal";
/// Counter (USD): what priced LLM calls cost (README, Cost). Kept in pico-USD, exact, and
/// written in USD; to the `metrics` facade, which has no fractional counters, it goes as a
/// gauge that only rises.
pub const COST_USD_TOTAL: &str = "stream_monitor_cost_usd_total";
/// Counter: finished requests; has the `outcome` label, and `error_type` on failures.
pub const REQUESTS_TOTAL: &str = "stream_monitor_requests_total";
/// Counter: finished streaming requests (the population health judges); has the `outcome` label,
/// and `error_type` on failures.
pub const STREAMING_REQUESTS_TOTAL: &str = "stream_monitor_streaming_requests_total";
/// Gauge: requests started and not yet recorded; labelled by `http_route` only (the provider
/// may not be known until the response).
pub const IN_FLIGHT: &str = "stream_monitor_in_flight";
/// Histogram (seconds): service call to first non-empty body frame.
pub const TIME_TO_FIRST_BYTE: &str = "stream_monitor_time_to_first_byte_seconds";
/// Histogram (bytes): response body bytes per request.
pub const RESPONSE_BYTES: &str = "stream_monitor_response_bytes";
/// Counter: events skipped, with `reason` = `oversized` | `malformed`.
pub const SKIPPED_EVENTS_TOTAL: &str = "stream_monitor_skipped_events_total";
/// Counter: requests that matched no route (a router 404 or a 405); no labels.
pub const UNROUTED_REQUESTS_TOTAL: &str = "stream_monitor_unrouted_requests_total";
/// Counter: label values folded into `other` by the cardinality caps, with `label` =
/// `provider` | `model` | `route` | `series` (the budget of label combinations).
pub const LABEL_OVERFLOW_TOTAL: &str = "stream_monitor_label_overflow_total";

/// Gauge: the `/health` status, one series per status, 1 on the current one.
pub const HEALTH_STATUS: &str = "stream_monitor_health_status";
/// Gauge: each health check's status, one series per check and status, 1 on the current one.
pub const HEALTH_CHECK_STATUS: &str = "stream_monitor_health_check_status";
/// Gauge: each health check's value in its unit (first token P95 in ms, tokens/s, error %).
pub const HEALTH_CHECK_VALUE: &str = "stream_monitor_health_check_value";
/// Gauge: 1 while the rollback trigger is fired, else 0.
pub const ROLLBACK_TRIGGER_FIRED: &str = "stream_monitor_rollback_trigger_fired";
/// Gauge: the rollback trigger's rate over 5 minutes, in percent.
pub const ROLLBACK_TRIGGER_RATE: &str = "stream_monitor_rollback_trigger_rate_percent";
/// Gauge: the requests in the rollback trigger's population over 5 minutes.
pub const ROLLBACK_TRIGGER_SAMPLES: &str = "stream_monitor_rollback_trigger_samples";

/// Label: the provider (`openai`, `anthropic`, ...).
pub const PROVIDER: &str = "gen_ai_provider_name";
/// Label: the model the request named (or, when it named none, the one the stream reported).
pub const MODEL: &str = "gen_ai_request_model";
/// Label: the route pattern.
pub const ROUTE: &str = "http_route";
/// Label: the OpenTelemetry operation (`chat`, `text_completion`, `generate_content`); absent
/// on requests that are not LLM calls.
pub const OPERATION: &str = "gen_ai_operation_name";
/// Label: the model the stream reported; absent when it reported none.
pub const RESPONSE_MODEL: &str = "gen_ai_response_model";
/// Label: the [`Outcome`].
pub const OUTCOME: &str = "outcome";
/// Label: the OpenTelemetry `error.type` of a failed request, its [`Outcome`] (`timeout`,
/// `auth_error`, ...); absent when the outcome is `ok`.
pub const ERROR_TYPE: &str = "error_type";
/// Label: the token modality on the detailed token counters; always `unknown`, as the
/// conventions ask when a provider's usage is not broken down by modality.
pub const TOKEN_MODALITY: &str = "gen_ai_token_modality";
/// Label: the [`FinishReason`] on [`FINISH_REASONS_TOTAL`].
pub const FINISH_REASON: &str = "finish_reason";
/// Label: `input` or `output` on [`TOKEN_USAGE`].
pub const TOKEN_TYPE: &str = "gen_ai_token_type";
/// Label: `oversized` or `malformed` on [`SKIPPED_EVENTS_TOTAL`].
pub(crate) const SKIP_REASON: &str = "reason";
/// Label: the capped label (or `series`) on [`LABEL_OVERFLOW_TOTAL`].
pub(crate) const CAPPED_LABEL: &str = "label";
/// Label: a health status (`unknown`, `healthy`, `degraded`, `critical`).
pub const STATUS: &str = "status";
/// Label: a health check's name.
pub const CHECK: &str = "check";
/// Label: a rollback trigger's name.
pub const TRIGGER: &str = "trigger";
/// Label on every series when [`MonitorBuilder::service_version`](crate::MonitorBuilder::service_version)
/// is set: the app's version, so a canary can be told from the stable fleet.
pub const SERVICE_VERSION: &str = "service_version";

/// Time to first token histogram buckets (seconds): the OpenTelemetry GenAI conventions'
/// advisory list, plus 2 (the default first-token baseline's warning threshold, so fleet rules
/// can count requests past it exactly) and 20, 40, 80 (long reasoning streams).
pub const TTFT_BUCKETS: [f64; 20] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0,
];
/// Request duration buckets (seconds): 0.01 doubling to 81.92, then 163.84 and 327.68.
pub const DURATION_BUCKETS: [f64; 16] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92, 163.84,
    327.68,
];
/// Time per output token buckets (seconds), as the OpenTelemetry GenAI conventions advise.
pub const TPOT_BUCKETS: [f64; 13] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];
/// Token usage buckets (tokens): powers of 4 from 1 to 4^13, as the OpenTelemetry GenAI
/// conventions advise.
pub const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
/// Response bytes buckets: powers of 4 from 64 B to 64 MiB.
pub const BYTES_BUCKETS: [f64; 11] = [
    64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
    67108864.0,
];

/// What a metric is, as Prometheus' `# TYPE` line spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Bucketed observations.
    Histogram,
}

impl MetricKind {
    /// `counter`, `gauge` or `histogram`.
    pub const fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// One metric the monitor exposes: an entry of [`METRICS`].
///
/// The same definitions configure the monitor's own Prometheus endpoint; a recorder the
/// application installs for the `metrics` facade can take its buckets from them:
///
/// ```
/// use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
/// use tower_stream_monitor::names;
///
/// let mut builder = PrometheusBuilder::new();
/// for metric in names::METRICS.iter().filter(|m| !m.buckets().is_empty()) {
///     let matcher = Matcher::Full(metric.name().to_owned());
///     builder = builder.set_buckets_for_metric(matcher, metric.buckets())?;
/// }
/// # Ok::<(), metrics_exporter_prometheus::BuildError>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Position in [`METRICS`]: the Prometheus exposition keeps its handles by it.
    pub(crate) index: usize,
    pub(crate) name: &'static str,
    pub(crate) kind: MetricKind,
    pub(crate) unit: Option<Unit>,
    pub(crate) labels: &'static [&'static str],
    pub(crate) buckets: &'static [f64],
    pub(crate) help: &'static str,
    /// Whether `labels` starts with [`REQUEST_LABELS`], worked out once: it is asked for every
    /// observation.
    request_labels: bool,
    /// Whether its last label is [`ERROR_TYPE`], derived from the outcome label before it.
    error_type: bool,
    /// Whether its buckets carry an exemplar (a recent request's trace) in OpenMetrics.
    exemplars: bool,
    /// Its OpenTelemetry name and unit (UCUM), for the metrics the GenAI conventions define:
    /// what OTLP export pushes.
    otel: Option<(&'static str, &'static str)>,
    /// For a counter kept in a smaller integer unit than it is written in: the size of that
    /// unit (1e-12 for the cost, kept in pico-USD); 1 otherwise.
    scale: f64,
}

impl Metric {
    /// The metric's name, one of the constants of this module.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// Counter, gauge or histogram.
    pub const fn kind(&self) -> MetricKind {
        self.kind
    }

    /// The unit (`seconds`, `bytes`), if it has one.
    pub fn unit(&self) -> Option<&'static str> {
        self.unit.map(|u| u.as_str())
    }

    /// Its label names, in the order they are emitted.
    pub const fn labels(&self) -> &'static [&'static str] {
        self.labels
    }

    /// Histogram bucket bounds; empty for counters and gauges.
    pub const fn buckets(&self) -> &'static [f64] {
        self.buckets
    }

    /// The help text.
    pub const fn help(&self) -> &'static str {
        self.help
    }

    /// Whether its buckets carry exemplars in the OpenMetrics exposition: the trace of a recent
    /// request that fell in each bucket (README, Tracing).
    pub const fn exemplars(&self) -> bool {
        self.exemplars
    }

    const fn with_exemplars(mut self) -> Self {
        self.exemplars = true;
        self
    }

    /// The OpenTelemetry name and UCUM unit of a metric the GenAI conventions define (the
    /// `gen_ai_*` ones), as OTLP export pushes it; `None` for this crate's own metrics.
    pub const fn otel(&self) -> Option<(&'static str, &'static str)> {
        self.otel
    }

    /// The size of the integer unit a counter's observations are in, relative to the unit it
    /// is written in (1e-12 for [`COST_USD_TOTAL`]); 1 for every other metric.
    pub const fn scale(&self) -> f64 {
        self.scale
    }

    const fn with_scale(mut self, scale: f64) -> Self {
        self.scale = scale;
        self
    }

    const fn with_otel(mut self, name: &'static str, unit: &'static str) -> Self {
        self.otel = Some((name, unit));
        self
    }

    /// Whether the metric carries a record's label set ([`REQUEST_LABELS`]).
    pub(crate) const fn per_label_set(&self) -> bool {
        self.request_labels
    }

    /// The `error_type` label of an observation whose last label value is `extra`: the outcome,
    /// when the metric has the label and the outcome is a failure.
    pub(crate) fn error_type(
        &self,
        extra: Option<LabelValue>,
    ) -> Option<(&'static str, &'static str)> {
        let outcome = extra?.value;
        (self.error_type && outcome != Outcome::Ok.as_str()).then_some((ERROR_TYPE, outcome))
    }

    const fn new(
        index: usize,
        name: &'static str,
        kind: MetricKind,
        unit: Option<Unit>,
        labels: &'static [&'static str],
        buckets: &'static [f64],
        help: &'static str,
    ) -> Self {
        let mut request_labels = labels.len() >= REQUEST_LABELS.len();
        let mut i = 0;
        while request_labels && i < REQUEST_LABELS.len() {
            request_labels = str_eq(labels[i], REQUEST_LABELS[i]);
            i += 1;
        }
        let error_type = !labels.is_empty() && str_eq(labels[labels.len() - 1], ERROR_TYPE);
        Metric {
            index,
            name,
            kind,
            unit,
            labels,
            buckets,
            help,
            request_labels,
            error_type,
            exemplars: false,
            otel: None,
            scale: 1.0,
        }
    }
}

/// `a == b`, for const evaluation.
const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The labels of every per-request metric: its label set. Operation and response model are
/// absent (empty) when they do not apply.
pub(crate) const REQUEST_LABELS: &[&str] = &[PROVIDER, MODEL, ROUTE, OPERATION, RESPONSE_MODEL];

/// Every metric the monitor exposes, to the `metrics` facade and on its Prometheus endpoint.
pub const METRICS: &[Metric] = &[
    def::TIME_TO_FIRST_TOKEN,
    def::TIME_PER_OUTPUT_TOKEN,
    def::REQUEST_DURATION,
    def::TOKEN_USAGE,
    def::REQUESTS_TOTAL,
    def::IN_FLIGHT,
    def::TIME_TO_FIRST_BYTE,
    def::RESPONSE_BYTES,
    def::SKIPPED_EVENTS_TOTAL,
    def::LABEL_OVERFLOW_TOTAL,
    def::UNROUTED_REQUESTS_TOTAL,
    def::STREAMING_REQUESTS_TOTAL,
    def::HEALTH_STATUS,
    def::HEALTH_CHECK_STATUS,
    def::HEALTH_CHECK_VALUE,
    def::ROLLBACK_TRIGGER_FIRED,
    def::ROLLBACK_TRIGGER_RATE,
    def::ROLLBACK_TRIGGER_SAMPLES,
    def::INPUT_TOKENS_TOTAL,
    def::OUTPUT_TOKENS_TOTAL,
    def::CACHE_READ_INPUT_TOKENS_TOTAL,
    def::CACHE_WRITE_INPUT_TOKENS_TOTAL,
    def::REASONING_OUTPUT_TOKENS_TOTAL,
    def::FINISH_REASONS_TOTAL,
    def::COST_USD_TOTAL,
    def::ANOMALY_SCORE,
];

/// The entries of [`METRICS`] by name, for the code that observes them.
pub(crate) mod def {
    use super::*;

    const WITH_OUTCOME: &[&str] = &[
        PROVIDER,
        MODEL,
        ROUTE,
        OPERATION,
        RESPONSE_MODEL,
        OUTCOME,
        ERROR_TYPE,
    ];
    const WITH_TOKEN_TYPE: &[&str] = &[
        PROVIDER,
        MODEL,
        ROUTE,
        OPERATION,
        RESPONSE_MODEL,
        TOKEN_TYPE,
    ];
    const WITH_MODALITY: &[&str] = &[
        PROVIDER,
        MODEL,
        ROUTE,
        OPERATION,
        RESPONSE_MODEL,
        TOKEN_MODALITY,
    ];
    const WITH_FINISH_REASON: &[&str] = &[
        PROVIDER,
        MODEL,
        ROUTE,
        OPERATION,
        RESPONSE_MODEL,
        FINISH_REASON,
    ];

    const fn histogram(
        index: usize,
        name: &'static str,
        unit: Option<Unit>,
        labels: &'static [&'static str],
        buckets: &'static [f64],
        help: &'static str,
    ) -> Metric {
        Metric::new(
            index,
            name,
            MetricKind::Histogram,
            unit,
            labels,
            buckets,
            help,
        )
    }

    const fn counter(
        index: usize,
        name: &'static str,
        labels: &'static [&'static str],
        help: &'static str,
    ) -> Metric {
        Metric::new(index, name, MetricKind::Counter, None, labels, &[], help)
    }

    pub(crate) const TIME_TO_FIRST_TOKEN: Metric = histogram(
        0,
        super::TIME_TO_FIRST_TOKEN,
        Some(Unit::Seconds),
        REQUEST_LABELS,
        &TTFT_BUCKETS,
        "Time from the request to the first output token.",
    )
    .with_exemplars()
    .with_otel("gen_ai.server.time_to_first_token", "s");
    pub(crate) const TIME_PER_OUTPUT_TOKEN: Metric = histogram(
        1,
        super::TIME_PER_OUTPUT_TOKEN,
        Some(Unit::Seconds),
        REQUEST_LABELS,
        &TPOT_BUCKETS,
        "Time per output token after the first.",
    )
    .with_exemplars()
    .with_otel("gen_ai.server.time_per_output_token", "s");
    pub(crate) const REQUEST_DURATION: Metric = histogram(
        2,
        super::REQUEST_DURATION,
        Some(Unit::Seconds),
        WITH_OUTCOME,
        &DURATION_BUCKETS,
        "Time from the request to the end of the response body.",
    )
    .with_exemplars()
    .with_otel("gen_ai.server.request.duration", "s");
    pub(crate) const TOKEN_USAGE: Metric = histogram(
        3,
        super::TOKEN_USAGE,
        None,
        WITH_TOKEN_TYPE,
        &TOKEN_BUCKETS,
        "Tokens per request, by token type.",
    )
    .with_otel("gen_ai.client.token.usage", "{token}");
    pub(crate) const REQUESTS_TOTAL: Metric = counter(
        4,
        super::REQUESTS_TOTAL,
        WITH_OUTCOME,
        "Finished requests, by outcome.",
    );
    pub(crate) const IN_FLIGHT: Metric = Metric::new(
        5,
        super::IN_FLIGHT,
        MetricKind::Gauge,
        None,
        &[ROUTE],
        &[],
        "Requests started and not yet finished.",
    );
    pub(crate) const TIME_TO_FIRST_BYTE: Metric = histogram(
        6,
        super::TIME_TO_FIRST_BYTE,
        Some(Unit::Seconds),
        REQUEST_LABELS,
        &TTFT_BUCKETS,
        "Time from the request to the first body byte.",
    );
    pub(crate) const RESPONSE_BYTES: Metric = histogram(
        7,
        super::RESPONSE_BYTES,
        Some(Unit::Bytes),
        REQUEST_LABELS,
        &BYTES_BUCKETS,
        "Response body bytes per request.",
    );
    pub(crate) const SKIPPED_EVENTS_TOTAL: Metric = counter(
        8,
        super::SKIPPED_EVENTS_TOTAL,
        &[SKIP_REASON],
        "Stream events skipped as oversized or malformed.",
    );
    pub(crate) const LABEL_OVERFLOW_TOTAL: Metric = counter(
        9,
        super::LABEL_OVERFLOW_TOTAL,
        &[CAPPED_LABEL],
        "Label values folded into other by the cardinality caps.",
    );
    pub(crate) const UNROUTED_REQUESTS_TOTAL: Metric = counter(
        10,
        super::UNROUTED_REQUESTS_TOTAL,
        &[],
        "Requests that matched no route (a router 404 or a 405).",
    );
    pub(crate) const STREAMING_REQUESTS_TOTAL: Metric = counter(
        11,
        super::STREAMING_REQUESTS_TOTAL,
        WITH_OUTCOME,
        "Finished streaming requests, by outcome.",
    );

    const fn gauge(
        index: usize,
        name: &'static str,
        labels: &'static [&'static str],
        help: &'static str,
    ) -> Metric {
        Metric::new(index, name, MetricKind::Gauge, None, labels, &[], help)
    }

    pub(crate) const HEALTH_STATUS: Metric = gauge(
        12,
        super::HEALTH_STATUS,
        &[STATUS],
        "The /health status: 1 on the current status, 0 on the others.",
    );
    pub(crate) const HEALTH_CHECK_STATUS: Metric = gauge(
        13,
        super::HEALTH_CHECK_STATUS,
        &[CHECK, STATUS],
        "Each health check's status: 1 on the current status, 0 on the others.",
    );
    pub(crate) const HEALTH_CHECK_VALUE: Metric = gauge(
        14,
        super::HEALTH_CHECK_VALUE,
        &[CHECK],
        "Each health check's value over 5 minutes, in its unit (ms, tokens/s, %).",
    );
    pub(crate) const ROLLBACK_TRIGGER_FIRED: Metric = gauge(
        15,
        super::ROLLBACK_TRIGGER_FIRED,
        &[TRIGGER],
        "1 while the rollback trigger is fired, else 0.",
    );
    pub(crate) const ROLLBACK_TRIGGER_RATE: Metric = gauge(
        16,
        super::ROLLBACK_TRIGGER_RATE,
        &[TRIGGER],
        "The rollback trigger's rate over 5 minutes, in percent.",
    );
    pub(crate) const ROLLBACK_TRIGGER_SAMPLES: Metric = gauge(
        17,
        super::ROLLBACK_TRIGGER_SAMPLES,
        &[TRIGGER],
        "Requests in the rollback trigger's population over 5 minutes.",
    );
    pub(crate) const INPUT_TOKENS_TOTAL: Metric = counter(
        18,
        super::INPUT_TOKENS_TOTAL,
        WITH_MODALITY,
        "Input tokens, every prompt token (cached ones included).",
    )
    .with_otel(
        "gen_ai.client.inference.usage.detailed.input_tokens",
        "{token}",
    );
    pub(crate) const OUTPUT_TOKENS_TOTAL: Metric = counter(
        19,
        super::OUTPUT_TOKENS_TOTAL,
        WITH_MODALITY,
        "Output tokens, every generated token (reasoning included).",
    )
    .with_otel(
        "gen_ai.client.inference.usage.detailed.output_tokens",
        "{token}",
    );
    pub(crate) const CACHE_READ_INPUT_TOKENS_TOTAL: Metric = counter(
        20,
        super::CACHE_READ_INPUT_TOKENS_TOTAL,
        WITH_MODALITY,
        "Input tokens read from the provider's prompt cache (part of the input tokens).",
    )
    .with_otel(
        "gen_ai.client.inference.usage.detailed.cache_read.input_tokens",
        "{token}",
    );
    pub(crate) const CACHE_WRITE_INPUT_TOKENS_TOTAL: Metric = counter(
        21,
        super::CACHE_WRITE_INPUT_TOKENS_TOTAL,
        WITH_MODALITY,
        "Input tokens written to the provider's prompt cache (part of the input tokens).",
    )
    .with_otel(
        "gen_ai.client.inference.usage.detailed.cache_write.input_tokens",
        "{token}",
    );
    pub(crate) const REASONING_OUTPUT_TOKENS_TOTAL: Metric = counter(
        22,
        super::REASONING_OUTPUT_TOKENS_TOTAL,
        WITH_MODALITY,
        "Reasoning tokens (part of the output tokens).",
    )
    .with_otel(
        "gen_ai.client.inference.usage.detailed.reasoning.output_tokens",
        "{token}",
    );
    pub(crate) const ANOMALY_SCORE: Metric = gauge(
        25,
        super::ANOMALY_SCORE,
        &[PROVIDER, MODEL, SIGNAL],
        "Each provider and model's signal against its own recent past, in robust standard deviations; above 4 (by default) is an anomaly.",
    );
    pub(crate) const COST_USD_TOTAL: Metric = Metric::new(
        24,
        super::COST_USD_TOTAL,
        MetricKind::Counter,
        None,
        REQUEST_LABELS,
        &[],
        "What priced LLM calls cost, in USD.",
    )
    .with_scale(1e-12);
    pub(crate) const FINISH_REASONS_TOTAL: Metric = counter(
        23,
        super::FINISH_REASONS_TOTAL,
        WITH_FINISH_REASON,
        "Finished LLM calls by the finish reason their stream gave (unfinished: ended without one).",
    );
}

/// Most bucket bounds a histogram may have: the exposition finds a value's bucket in five
/// halving steps.
pub(crate) const MAX_BUCKETS: usize = 31;

// Checked when compiling: each entry's index is its position (the exposition's handle cache
// relies on it), exactly the histograms have buckets, and bounds strictly increase, at most
// `MAX_BUCKETS` of them (the exposition's bucket search relies on both).
const _: () = {
    let mut i = 0;
    while i < METRICS.len() {
        let m = &METRICS[i];
        assert!(
            m.index == i,
            "a metric's index must be its position in METRICS"
        );
        assert!(
            matches!(m.kind, MetricKind::Histogram) == !m.buckets.is_empty(),
            "histograms, and only they, have buckets"
        );
        assert!(m.buckets.len() <= MAX_BUCKETS, "at most MAX_BUCKETS bounds");
        let mut j = 1;
        while j < m.buckets.len() {
            assert!(
                m.buckets[j - 1] < m.buckets[j],
                "bucket bounds strictly increase"
            );
            j += 1;
        }
        i += 1;
    }
};

/// The value of a metric's last label (outcome, token type, reason), with its position among
/// that label's values: the exposition caches one handle per position, so it never compares
/// strings on the recording path.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LabelValue {
    pub(crate) value: &'static str,
    pub(crate) index: usize,
}

/// The OpenTelemetry attribute of each label an exported metric carries; labels not listed
/// (`outcome`: `error.type` says it for failures) are not exported.
#[cfg_attr(not(feature = "otlp"), allow(dead_code))]
pub(crate) const OTEL_ATTRIBUTES: [(&str, &str); 8] = [
    (PROVIDER, "gen_ai.provider.name"),
    (MODEL, "gen_ai.request.model"),
    (ROUTE, "http.route"),
    (OPERATION, "gen_ai.operation.name"),
    (RESPONSE_MODEL, "gen_ai.response.model"),
    (ERROR_TYPE, "error.type"),
    (TOKEN_TYPE, "gen_ai.token.type"),
    (TOKEN_MODALITY, "gen_ai.token.modality"),
];

/// The values of [`CAPPED_LABEL`] on [`LABEL_OVERFLOW_TOTAL`]: the capped labels, and `series`
/// for the budget of label combinations.
pub(crate) const OVERFLOW_LABELS: [&str; 4] = ["provider", "model", "route", "series"];

/// Values per label beyond a record's label set: the outcomes are the most.
pub(crate) const MAX_LABEL_VALUES: usize = Outcome::COUNT;
const _: () = assert!(FinishReason::ALL.len() <= MAX_LABEL_VALUES);

const OUTPUT: LabelValue = LabelValue {
    value: "output",
    index: 0,
};
const INPUT: LabelValue = LabelValue {
    value: "input",
    index: 1,
};
const OVERSIZED: LabelValue = LabelValue {
    value: "oversized",
    index: 0,
};
const MALFORMED: LabelValue = LabelValue {
    value: "malformed",
    index: 1,
};

/// Where a record's observations go: the `metrics` facade or the Prometheus exposition.
/// A metric's labels are the record's provider, model and route when it has them
/// ([`Metric::per_label_set`]), then `extra` for its last label.
pub(crate) trait Sink {
    fn counter(&mut self, metric: &'static Metric, extra: Option<LabelValue>, n: u64);
    fn histogram(&mut self, metric: &'static Metric, extra: Option<LabelValue>, value: f64);
}

/// The one value of [`TOKEN_MODALITY`]: no provider stream breaks usage down by modality.
const UNKNOWN_MODALITY: LabelValue = LabelValue {
    value: "unknown",
    index: 0,
};

/// Every observation a finished request makes, the one place that says which. The `gen_ai_*`
/// metrics are for LLM calls only (a record with an operation name); `stream_monitor_*` for
/// every request. Inlined into each sink's caller: the sink's fields then stay in registers
/// rather than being read through a reference at every observation.
#[inline(always)]
pub(crate) fn observe(r: &StreamRecord, sink: &mut impl Sink) {
    let outcome = Some(LabelValue {
        value: r.outcome.as_str(),
        index: r.outcome as usize,
    });
    sink.counter(&def::REQUESTS_TOTAL, outcome, 1);
    if let Some(ttfb) = r.time_to_first_byte {
        sink.histogram(&def::TIME_TO_FIRST_BYTE, None, ttfb.as_secs_f64());
    }
    // The population health judges: streams only, as the windows count them, so fleet rules
    // over these series mirror `/health`.
    if r.streaming {
        sink.counter(&def::STREAMING_REQUESTS_TOTAL, outcome, 1);
    }
    sink.histogram(&def::RESPONSE_BYTES, None, r.bytes as f64);
    if r.oversized_events > 0 {
        sink.counter(
            &def::SKIPPED_EVENTS_TOTAL,
            Some(OVERSIZED),
            r.oversized_events,
        );
    }
    if r.malformed_events > 0 {
        sink.counter(
            &def::SKIPPED_EVENTS_TOTAL,
            Some(MALFORMED),
            r.malformed_events,
        );
    }
    if r.operation_name.is_none() {
        return;
    }
    sink.histogram(&def::REQUEST_DURATION, outcome, r.duration.as_secs_f64());
    // First token and time per token of streams only, not of those their client failed: the
    // figures health judges.
    if r.latencies_judged() {
        if let Some(ttft) = r.time_to_first_token {
            sink.histogram(&def::TIME_TO_FIRST_TOKEN, None, ttft.as_secs_f64());
        }
        if let Some(tpot) = r.time_per_output_token {
            sink.histogram(&def::TIME_PER_OUTPUT_TOKEN, None, tpot.as_secs_f64());
        }
    }
    // A stream that reported no usage at all (an error, a provider without counts) would
    // otherwise fill the lowest bucket with zeros.
    if r.output_tokens > 0 || r.input_tokens.is_some() {
        sink.histogram(&def::TOKEN_USAGE, Some(OUTPUT), r.output_tokens as f64);
        sink.counter(
            &def::OUTPUT_TOKENS_TOTAL,
            Some(UNKNOWN_MODALITY),
            r.output_tokens,
        );
        if let Some(input) = r.input_tokens {
            sink.histogram(&def::TOKEN_USAGE, Some(INPUT), input as f64);
            sink.counter(&def::INPUT_TOKENS_TOTAL, Some(UNKNOWN_MODALITY), input);
        }
    }
    for (metric, part) in [
        (
            &def::CACHE_READ_INPUT_TOKENS_TOTAL,
            r.cache_read_input_tokens,
        ),
        (
            &def::CACHE_WRITE_INPUT_TOKENS_TOTAL,
            r.cache_creation_input_tokens,
        ),
        (
            &def::REASONING_OUTPUT_TOKENS_TOTAL,
            r.reasoning_output_tokens,
        ),
    ] {
        if let Some(n) = part {
            sink.counter(metric, Some(UNKNOWN_MODALITY), n);
        }
    }
    if let Some(cost) = r.cost {
        sink.counter(&def::COST_USD_TOTAL, None, cost.picodollars());
    }
    if let Some(reason) = r.finish_reason {
        let index = FinishReason::ALL
            .iter()
            .position(|f| *f == reason)
            .unwrap_or(0);
        sink.counter(
            &def::FINISH_REASONS_TOTAL,
            Some(LabelValue {
                value: reason.as_str(),
                index,
            }),
            1,
        );
    }
}

/// Every gauge a health report gives, the one place that says which: `gauge(metric, labels,
/// value)` for each series, labels in the metric's order.
pub(crate) fn observe_health(
    report: &HealthReport,
    mut gauge: impl FnMut(&'static Metric, &[&str], f64),
) {
    let one_hot =
        |current: HealthStatus, status: HealthStatus| f64::from(u8::from(current == status));
    for status in HealthStatus::ALL {
        gauge(
            &def::HEALTH_STATUS,
            &[status.as_str()],
            one_hot(report.status, status),
        );
    }
    for check in &report.checks {
        for status in HealthStatus::ALL {
            gauge(
                &def::HEALTH_CHECK_STATUS,
                &[check.name, status.as_str()],
                one_hot(check.status, status),
            );
        }
        gauge(&def::HEALTH_CHECK_VALUE, &[check.name], check.value);
    }
    for anomaly in &report.anomalies {
        gauge(
            &def::ANOMALY_SCORE,
            &[&anomaly.provider, &anomaly.model, anomaly.signal],
            anomaly.score,
        );
    }
    for trigger in &report.triggers {
        let name = trigger.name.as_str();
        gauge(
            &def::ROLLBACK_TRIGGER_FIRED,
            &[name],
            f64::from(u8::from(trigger.fired)),
        );
        gauge(&def::ROLLBACK_TRIGGER_RATE, &[name], trigger.value);
        gauge(
            &def::ROLLBACK_TRIGGER_SAMPLES,
            &[name],
            trigger.samples as f64,
        );
    }
}

/// The anomaly score of a signal no longer judged, for sinks that keep a series once set (the
/// `metrics` facade): 0, no anomaly.
pub(crate) fn observe_unjudged_anomaly(
    provider: &str,
    model: &str,
    signal: &str,
    mut gauge: impl FnMut(&'static Metric, &[&str], f64),
) {
    gauge(&def::ANOMALY_SCORE, &[provider, model, signal], 0.0);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Checks each observation against the metric's table entry.
    #[derive(Default)]
    struct Check(Vec<&'static str>);

    impl Check {
        fn check(&mut self, metric: &Metric, extra: Option<LabelValue>, kind: MetricKind) {
            assert_eq!(metric.kind, kind, "{}", metric.name);
            assert_eq!(METRICS[metric.index].name, metric.name);
            let base = if metric.per_label_set() {
                REQUEST_LABELS.len()
            } else {
                0
            };
            assert_eq!(
                base + usize::from(extra.is_some()) + usize::from(metric.error_type),
                metric.labels.len(),
                "{}",
                metric.name
            );
            assert!(extra.is_none_or(|e| e.index < MAX_LABEL_VALUES));
            self.0.push(metric.name);
        }
    }

    impl Sink for Check {
        fn counter(&mut self, metric: &'static Metric, extra: Option<LabelValue>, _: u64) {
            self.check(metric, extra, MetricKind::Counter);
        }
        fn histogram(&mut self, metric: &'static Metric, extra: Option<LabelValue>, _: f64) {
            self.check(metric, extra, MetricKind::Histogram);
        }
    }

    #[test]
    fn observations_match_the_table() {
        for outcome in Outcome::ALL {
            let mut r = StreamRecord::new("openai", "gpt-4o-mini", "/v1/chat", outcome);
            r.time_to_first_byte = Some(Duration::from_millis(90));
            r.time_to_first_token = Some(Duration::from_millis(100));
            r.time_per_output_token = Some(Duration::from_millis(20));
            r.output_tokens = 10;
            r.input_tokens = Some(5);
            r.oversized_events = 1;
            r.malformed_events = 1;
            r.cache_read_input_tokens = Some(2);
            r.cache_creation_input_tokens = Some(1);
            r.reasoning_output_tokens = Some(4);
            r.finish_reason = Some(FinishReason::Length);
            // Not an LLM call: no `gen_ai_*` series at all.
            r.operation_name = None;
            let mut check = Check::default();
            observe(&r, &mut check);
            assert_eq!(check.0.len(), 5);
            assert!(check.0.iter().all(|n| !n.starts_with("gen_ai_")));
            r.operation_name = Some("chat");
            let mut check = Check::default();
            observe(&r, &mut check);
            // First token, time per token and the streaming counter are for streams only.
            assert_eq!(check.0.len(), 14);
            r.streaming = true;
            let mut check = Check::default();
            observe(&r, &mut check);
            // Not a stream's latencies when its client failed it (`latencies_judged`).
            let latencies = if outcome == Outcome::ClientError {
                0
            } else {
                2
            };
            assert_eq!(check.0.len(), 15 + latencies, "{outcome:?}");
        }
    }

    #[test]
    fn error_type_only_on_failures() {
        let outcome = |o: Outcome| {
            Some(LabelValue {
                value: o.as_str(),
                index: o as usize,
            })
        };
        assert_eq!(def::REQUESTS_TOTAL.error_type(outcome(Outcome::Ok)), None);
        assert_eq!(
            def::REQUESTS_TOTAL.error_type(outcome(Outcome::Timeout)),
            Some((ERROR_TYPE, "timeout"))
        );
        assert_eq!(def::TOKEN_USAGE.error_type(Some(OUTPUT)), None);
    }

    #[test]
    fn per_label_set_is_worked_out_right() {
        for m in METRICS {
            assert_eq!(
                m.per_label_set(),
                m.labels.starts_with(REQUEST_LABELS),
                "{}",
                m.name
            );
        }
    }

    #[test]
    fn token_usage_only_when_reported() {
        let names = |output_tokens, input_tokens| {
            let mut r = StreamRecord::new("openai", "gpt-4o-mini", "/v1/chat", Outcome::Ok);
            r.output_tokens = output_tokens;
            r.input_tokens = input_tokens;
            r.operation_name = Some("chat");
            let mut check = Check::default();
            observe(&r, &mut check);
            check.0.iter().filter(|n| **n == TOKEN_USAGE).count()
        };
        assert_eq!(names(0, None), 0);
        assert_eq!(names(3, None), 1);
        assert_eq!(names(0, Some(4)), 2);
    }
}
