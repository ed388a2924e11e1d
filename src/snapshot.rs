//! The figures `GET {prefix}/metrics` serves, as a typed value: [`Monitor::snapshot`](crate::Monitor::snapshot).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::health::{Baselines, HealthStatus};
use crate::record::OutcomeMap;
pub use crate::spend::{ModelSpend, UserSpend};
pub use crate::system::SystemStats;
use crate::window::{RequestStats, WindowStats};

/// One provider's windows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderWindows {
    /// The last 5 minutes.
    #[serde(rename = "5min")]
    pub five_minutes: WindowStats,
    /// The last hour.
    #[serde(rename = "1hour")]
    pub one_hour: WindowStats,
}

/// The `data` of `GET {prefix}/metrics`; field names are fixed (existing clients read them; see the README).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricsSnapshot {
    /// RFC 3339, UTC, microseconds.
    pub timestamp: String,
    /// Seconds since the monitor was built.
    pub uptime_seconds: f64,
    /// The health baselines.
    pub baselines: Baselines,
    /// Streaming requests, last 5 minutes.
    pub streaming_5min: WindowStats,
    /// Streaming requests, last hour.
    pub streaming_1hour: WindowStats,
    /// The same windows per provider.
    pub streaming_by_provider: BTreeMap<String, ProviderWindows>,
    /// The last 5 minutes per provider and model, by provider then model: the pairs with
    /// streams in the window, at most as many as the windows keep (README, Endpoints).
    pub streaming_by_model: Vec<ModelWindow>,
    /// All requests, last 5 minutes.
    pub requests_5min: RequestStats,
    /// This process.
    pub current_system: SystemStats,
    /// The overall health status.
    pub health_status: HealthStatus,
    /// Spend since the monitor started.
    pub spend: SpendSnapshot,
    /// Trends and anomalies per provider over the last hour.
    pub predictions: std::sync::Arc<crate::predict::Predictions>,
}

/// One provider and model's streams over the last 5 minutes (`streaming_by_model` of
/// `/metrics`): the figures of its [`WindowStats`] that a table of pairs shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelWindow {
    /// The provider.
    pub provider: String,
    /// The model asked for (`other` for a provider's models past the windows' cap).
    pub model: String,
    /// Streaming requests.
    pub total_streaming_requests: u64,
    /// Streaming errors as a percent, as [`WindowStats::streaming_error_rate`].
    pub streaming_error_rate: f64,
    /// Streaming requests that failed on the service's or the upstream's side.
    pub streaming_errors: u64,
    /// Median time to first token.
    pub first_token_p50_ms: f64,
    /// 95th percentile time to first token.
    pub first_token_p95_ms: f64,
    /// Mean of the streams' tokens per second.
    pub avg_tokens_per_second: f64,
    /// Median of the streams' tokens per second, as [`WindowStats::tokens_per_second_p50`].
    pub tokens_per_second_p50: f64,
    /// 95th percentile time per output token.
    pub time_per_output_token_p95_ms: f64,
    /// What the streams cost, in USD.
    pub cost_usd: f64,
}

impl ModelWindow {
    pub(crate) fn new(provider: &str, model: &str, w: &WindowStats) -> Self {
        Self {
            provider: provider.to_owned(),
            model: model.to_owned(),
            total_streaming_requests: w.total_streaming_requests,
            streaming_error_rate: w.streaming_error_rate,
            streaming_errors: w.streaming_errors,
            first_token_p50_ms: w.first_token_p50_ms,
            first_token_p95_ms: w.first_token_p95_ms,
            avg_tokens_per_second: w.avg_tokens_per_second,
            tokens_per_second_p50: w.tokens_per_second_p50,
            time_per_output_token_p95_ms: w.time_per_output_token_p95_ms,
            cost_usd: w.cost_usd,
        }
    }
}

/// Spend since the monitor started (the `spend` object of `/metrics`; README, Cost).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpendSnapshot {
    /// When the prices were taken (`YYYY-MM-DD`, or a month: `YYYY-MM`, as the built-in table
    /// gives), if the table says.
    pub prices_taken: Option<String>,
    /// Spend per model, the per-model cost figure: by the model the call was priced as (the
    /// one that answered, else the one asked for), summed since the monitor started, never
    /// reset nor windowed. The windows' `cost_usd` are per provider, not per model; a model's
    /// spend over a window is `increase(stream_monitor_cost_usd_total[1h])` summed by
    /// `gen_ai_response_model` (README, Cost).
    pub by_model: BTreeMap<String, ModelSpend>,
    /// The heaviest users by spend, at most `top_users` of them.
    pub top_users: Vec<UserSpend>,
    /// Models of LLM calls that no price was found for (at most 64 listed): their calls are
    /// not in any cost, never counted as free.
    pub unpriced_models: Vec<String>,
    /// LLM calls of unpriced models.
    pub unpriced_requests: u64,
}

/// One slot of `GET {prefix}/metrics/history`: the window figures of the streams that ended in
/// it (flattened: `first_token_p95_ms`, `by_outcome`, `cost_usd`, ...; not `in_flight`, an
/// instant's count that a past slot has none of), all requests (`requests`), and capacity:
/// `avg_in_flight`, `arrival_rate_per_second` and `peak_in_flight`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryPoint {
    /// The slot's start, Unix seconds.
    pub start_unix: u64,
    /// The streaming figures of the slot (`in_flight` is `None`).
    #[serde(flatten)]
    pub streaming: WindowStats,
    /// All requests of the slot.
    pub requests: RequestStats,
    /// Time-averaged requests in flight over the slot: each finished request's time spread
    /// over the slots it overlapped (requests still running add theirs when they end). By
    /// Little's law it equals `arrival_rate_per_second` × the mean duration in steady state.
    pub avg_in_flight: f64,
    /// Requests that ended in the slot, per second.
    pub arrival_rate_per_second: f64,
    /// The most requests in flight at once in the slot, as sampled once a second when a
    /// request ends (so a slot where none ended has 0).
    pub peak_in_flight: u64,
}

/// One slot of one provider in `GET {prefix}/metrics/history`: only the figures the history
/// carries per provider, so that the series of many providers stay small (README, Endpoints).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderHistoryPoint {
    /// The slot's start, Unix seconds.
    pub start_unix: u64,
    /// All of the provider's requests (streaming or not) that ended in the slot, by outcome.
    pub requests_by_outcome: OutcomeMap<u64>,
    /// Streaming requests.
    pub total_streaming_requests: u64,
    /// Median time to first token.
    pub first_token_p50_ms: f64,
    /// 95th percentile time to first token.
    pub first_token_p95_ms: f64,
    /// 99th percentile time to first token.
    pub first_token_p99_ms: f64,
    /// Mean of the streams' tokens per second.
    pub avg_tokens_per_second: f64,
    /// 95th percentile time per output token.
    pub time_per_output_token_p95_ms: f64,
    /// What the streams cost, in USD.
    pub cost_usd: f64,
    /// Time-averaged requests of the provider in flight over the slot (its arrivals per
    /// second are the sum of `requests_by_outcome` over the slot's length).
    pub avg_in_flight: f64,
}

/// A window slot by slot, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistorySeries {
    /// The length of a slot: 10 s for the last 5 minutes, 60 s for the last hour.
    pub slot_seconds: u64,
    /// The slots, oldest first (30 or 60; empty slots are zeros).
    pub points: Vec<HistoryPoint>,
    /// The same slots per provider.
    pub by_provider: BTreeMap<String, Vec<ProviderHistoryPoint>>,
}

/// The `data` of `GET {prefix}/metrics/history`: [`Monitor::history`](crate::Monitor::history).
/// Bounded: 30 + 60 points, and as many per provider (providers are capped by
/// `label_cardinality` and `header_label_cardinality`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricsHistory {
    /// The last 5 minutes in 10 s slots, overall and per provider.
    pub five_minutes: HistorySeries,
    /// The last hour in 1 minute slots, overall and per provider.
    pub one_hour: HistorySeries,
}
