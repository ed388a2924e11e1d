//! Metric and label names, shared by the `metrics` facade emission and the Prometheus endpoint.
//!
//! They follow the OpenTelemetry GenAI semantic conventions as Prometheus spells them
//! (dots become underscores, the unit becomes a suffix).

/// Histogram (seconds): service call to first output token.
pub const TIME_TO_FIRST_TOKEN: &str = "gen_ai_server_time_to_first_token_seconds";
/// Histogram (seconds): time per output token after the first.
pub const TIME_PER_OUTPUT_TOKEN: &str = "gen_ai_server_time_per_output_token_seconds";
/// Histogram (seconds): service call to end of body; has the `outcome` label.
pub const REQUEST_DURATION: &str = "gen_ai_server_request_duration_seconds";
/// Histogram (tokens): tokens per request, with `gen_ai_token_type` = `input` | `output`.
pub const TOKEN_USAGE: &str = "gen_ai_client_token_usage";
/// Counter: finished requests; has the `outcome` label.
pub const REQUESTS_TOTAL: &str = "stream_monitor_requests_total";
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

/// Label: the provider (`openai`, `anthropic`, ...).
pub const PROVIDER: &str = "gen_ai_provider_name";
/// Label: the model.
pub const MODEL: &str = "gen_ai_request_model";
/// Label: the route pattern.
pub const ROUTE: &str = "http_route";
/// Label: the [`Outcome`](crate::Outcome).
pub const OUTCOME: &str = "outcome";
/// Label: `input` or `output` on [`TOKEN_USAGE`].
pub const TOKEN_TYPE: &str = "gen_ai_token_type";

/// Time to first token histogram buckets (seconds), as the OpenTelemetry GenAI conventions advise.
pub const TTFT_BUCKETS: [f64; 19] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
];
/// Request duration buckets (seconds): 0.01 doubling to 81.92, then 163.84 and 327.68.
pub const DURATION_BUCKETS: [f64; 16] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92, 163.84,
    327.68,
];
