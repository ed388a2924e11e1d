//! What one window slot accumulates, and the merge of slots into a window's figures.

use serde::Serialize;

use crate::cost::Cost;
use crate::parse::FinishReason;
use crate::record::{Outcome, OutcomeMap, StreamRecord};

use super::sketch::Sketch;

/// Counts and sketches of the records that fell in one slot of one window.
#[derive(Clone)]
pub(crate) struct SlotStats {
    pub(crate) requests: u64,
    pub(crate) by_outcome: OutcomeMap<u64>,
    /// Requests that matched no route: counted, nothing else.
    pub(crate) unrouted: u64,
    /// Seconds requests spent in flight within the slot (each request's time spread over the
    /// slots it overlapped): divided by the slot's length, the time-averaged in-flight count.
    pub(crate) busy_secs: f64,
    /// The most requests in flight seen in the slot: sampled once a second, as a request ends
    /// (itself counted). Merged by the maximum; kept in the overall windows only.
    pub(crate) peak_in_flight: u64,
    pub(crate) streaming: u64,
    /// Streaming requests whose outcome the client did not cause alone: the population health
    /// judges (error rate and its sample count).
    pub(crate) streaming_judged: u64,
    pub(crate) streaming_by_outcome: OutcomeMap<u64>,
    pub(crate) output_tokens: u64,
    pub(crate) input_tokens: u64,
    pub(crate) cache_read_input_tokens: u64,
    pub(crate) cache_creation_input_tokens: u64,
    pub(crate) reasoning_output_tokens: u64,
    pub(crate) finish_reasons: FinishReasons,
    /// What the priced streams cost, and of which estimated (pico-USD).
    pub(crate) cost: u64,
    pub(crate) estimated_cost: u64,
    /// LLM streams whose model has no price.
    pub(crate) unpriced: u64,
    pub(crate) ttft_ms_sum: f64,
    pub(crate) tps_sum: f64,
    pub(crate) tps_count: u64,
    pub(crate) duration_ms_sum: f64,
    pub(crate) max_stall_ms: f64,
    pub(crate) ttft_ms: Sketch,
    pub(crate) duration_ms: Sketch,
    pub(crate) tpot_ms: Sketch,
    /// The streams' tokens per second: its median is what the tokens/s check reads.
    pub(crate) tps: Sketch,
    /// Tokens per stream: output (every stream), input (streams that reported it).
    pub(crate) output_tokens_dist: Sketch,
    pub(crate) input_tokens_dist: Sketch,
}

impl Default for SlotStats {
    fn default() -> Self {
        Self {
            requests: 0,
            by_outcome: OutcomeMap::default(),
            unrouted: 0,
            busy_secs: 0.0,
            peak_in_flight: 0,
            streaming: 0,
            streaming_judged: 0,
            streaming_by_outcome: OutcomeMap::default(),
            output_tokens: 0,
            input_tokens: 0,
            cache_read_input_tokens: 0,
            cache_creation_input_tokens: 0,
            reasoning_output_tokens: 0,
            finish_reasons: FinishReasons::default(),
            cost: 0,
            estimated_cost: 0,
            unpriced: 0,
            ttft_ms_sum: 0.0,
            tps_sum: 0.0,
            tps_count: 0,
            duration_ms_sum: 0.0,
            max_stall_ms: 0.0,
            ttft_ms: Sketch::default(),
            duration_ms: Sketch::default(),
            tpot_ms: Sketch::default(),
            tps: Sketch::default(),
            output_tokens_dist: Sketch::default(),
            input_tokens_dist: Sketch::default(),
        }
    }
}

/// The most tokens a stream counts for in the token quantiles, the highest rate in the
/// tokens/s quantiles, and the longest time in the time quantiles (ms, about 12 days). A
/// sketch keeps 32 powers of two and folds the lowest into its range past them (`Sketch`): one
/// absurd figure (an upstream's usage of 2^50 tokens, a rate of 10^15 tokens a second, a
/// `Duration::MAX` in a record given to `ingest`) would lift every other stream's to its range
/// and move the median. Under these caps the kept range reaches down to 1 token, about a token
/// an hour, and a quarter of a millisecond.
const MAX_SKETCHED_TOKENS: f64 = (1u64 << 31) as f64;
const MAX_SKETCHED_RATE: f64 = 1.0e6;
const MAX_SKETCHED_MS: f64 = (1u64 << 30) as f64;

/// A time for the time quantiles: in ms, at most [`MAX_SKETCHED_MS`].
fn sketched_ms(d: std::time::Duration) -> f64 {
    ms(d).min(MAX_SKETCHED_MS)
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The float sums of a slot: unlike the counts, their rounding depends on the order of the
/// additions, so a slot's sums are kept as one running sum per slot (see `Pair` in the module).
#[derive(Clone, Copy, Default)]
pub(crate) struct Sums {
    pub(crate) busy_secs: f64,
    pub(crate) ttft_ms_sum: f64,
    pub(crate) tps_sum: f64,
    pub(crate) duration_ms_sum: f64,
}

impl Sums {
    /// What [`SlotStats::add`] adds to the sums (all but `busy_secs`, which the ring adds).
    /// `unrouted`: `r.is_unrouted()`, worked out once per record.
    #[inline]
    pub(crate) fn add(&mut self, r: &StreamRecord, unrouted: bool) {
        if !r.streaming || unrouted {
            return;
        }
        add_sums(
            r,
            r.latencies_judged(),
            &mut self.ttft_ms_sum,
            &mut self.tps_sum,
            &mut self.duration_ms_sum,
        );
    }
}

/// A streaming record's values into the float sums: one place, so a slot and a `Sums` add
/// alike. Its first token and rate only if `judged` (`StreamRecord::latencies_judged`).
#[inline(always)]
fn add_sums(
    r: &StreamRecord,
    judged: bool,
    ttft_ms_sum: &mut f64,
    tps_sum: &mut f64,
    duration_ms_sum: &mut f64,
) {
    if judged {
        if let Some(ttft) = r.time_to_first_token {
            *ttft_ms_sum += ms(ttft);
        }
        if let Some(tps) = r.tokens_per_second {
            *tps_sum += tps;
        }
    }
    *duration_ms_sum += ms(r.duration);
}

impl SlotStats {
    pub(crate) fn clear(&mut self) {
        *self = Self::default();
    }

    /// Adds a record; `unrouted`: `r.is_unrouted()`, worked out once per record. Inlined up to
    /// the streaming figures: most requests stop there.
    #[inline]
    pub(crate) fn add(&mut self, r: &StreamRecord, unrouted: bool) {
        debug_assert_eq!(unrouted, r.is_unrouted());
        if unrouted {
            self.unrouted += 1;
            return;
        }
        self.requests += 1;
        self.by_outcome[r.outcome] += 1;
        if r.streaming {
            self.add_streaming(r);
        }
    }

    #[inline(never)]
    fn add_streaming(&mut self, r: &StreamRecord) {
        self.streaming += 1;
        if !r.outcome.is_client_caused() {
            self.streaming_judged += 1;
        }
        self.streaming_by_outcome[r.outcome] += 1;
        // Saturating: usage figures come from the upstream and may be hostile.
        self.output_tokens = self.output_tokens.saturating_add(r.output_tokens);
        self.input_tokens = self
            .input_tokens
            .saturating_add(r.input_tokens.unwrap_or(0));
        for (sum, part) in [
            (&mut self.cache_read_input_tokens, r.cache_read_input_tokens),
            (
                &mut self.cache_creation_input_tokens,
                r.cache_creation_input_tokens,
            ),
            (&mut self.reasoning_output_tokens, r.reasoning_output_tokens),
        ] {
            *sum = sum.saturating_add(part.unwrap_or(0));
        }
        if let Some(reason) = r.finish_reason {
            self.finish_reasons.add(reason, 1);
        }
        match r.cost {
            Some(cost) => {
                self.cost = self.cost.saturating_add(cost.picodollars());
                if r.cost_estimated {
                    self.estimated_cost = self.estimated_cost.saturating_add(cost.picodollars());
                }
            }
            None if r.operation_name.is_some() => self.unpriced += 1,
            None => {}
        }
        let judged = r.latencies_judged();
        add_sums(
            r,
            judged,
            &mut self.ttft_ms_sum,
            &mut self.tps_sum,
            &mut self.duration_ms_sum,
        );
        if judged {
            if r.tokens_per_second.is_some() {
                self.tps_count += 1;
            }
            if let Some(gap) = r.max_inter_token_gap {
                self.max_stall_ms = self.max_stall_ms.max(ms(gap));
            }
        }
        self.add_sketches(r, judged);
    }

    /// A streaming record's values into the quantile sketches; its latencies only if `judged`.
    fn add_sketches(&mut self, r: &StreamRecord, judged: bool) {
        // A stream of no token (cut before its first) is a zero, which the sketches count apart.
        self.output_tokens_dist
            .add((r.output_tokens as f64).min(MAX_SKETCHED_TOKENS));
        if let Some(input) = r.input_tokens {
            self.input_tokens_dist
                .add((input as f64).min(MAX_SKETCHED_TOKENS));
        }
        if judged {
            if let Some(ttft) = r.time_to_first_token {
                self.ttft_ms.add(sketched_ms(ttft));
            }
            if let Some(tpot) = r.time_per_output_token {
                self.tpot_ms.add(sketched_ms(tpot));
            }
            if let Some(tps) = r.tokens_per_second {
                self.tps.add(tps.min(MAX_SKETCHED_RATE));
            }
        }
        self.duration_ms.add(sketched_ms(r.duration));
    }

    /// Another slot's quantile sketches into this one's.
    fn merge_sketches(&mut self, o: &SlotStats) {
        self.ttft_ms.merge(&o.ttft_ms);
        self.duration_ms.merge(&o.duration_ms);
        self.tpot_ms.merge(&o.tpot_ms);
        self.tps.merge(&o.tps);
        self.output_tokens_dist.merge(&o.output_tokens_dist);
        self.input_tokens_dist.merge(&o.input_tokens_dist);
    }

    pub(crate) fn merge(&mut self, o: &SlotStats) {
        self.merge_counts(o);
        self.add_sums(&o.sums());
    }

    /// The float sums.
    pub(crate) fn sums(&self) -> Sums {
        Sums {
            busy_secs: self.busy_secs,
            ttft_ms_sum: self.ttft_ms_sum,
            tps_sum: self.tps_sum,
            duration_ms_sum: self.duration_ms_sum,
        }
    }

    /// Replaces the float sums.
    pub(crate) fn set_sums(&mut self, s: Sums) {
        self.busy_secs = s.busy_secs;
        self.ttft_ms_sum = s.ttft_ms_sum;
        self.tps_sum = s.tps_sum;
        self.duration_ms_sum = s.duration_ms_sum;
    }

    /// Adds float sums in (the float part of [`merge`](Self::merge)).
    pub(crate) fn add_sums(&mut self, s: &Sums) {
        self.busy_secs += s.busy_secs;
        self.ttft_ms_sum += s.ttft_ms_sum;
        self.tps_sum += s.tps_sum;
        self.duration_ms_sum += s.duration_ms_sum;
    }

    /// Another slot's figures but its float sums into this one's (the rest of
    /// [`merge`](Self::merge): counts, maxima and sketches, whose order does not matter).
    pub(crate) fn merge_counts(&mut self, o: &SlotStats) {
        self.requests += o.requests;
        self.unrouted += o.unrouted;
        self.peak_in_flight = self.peak_in_flight.max(o.peak_in_flight);
        self.streaming += o.streaming;
        self.streaming_judged += o.streaming_judged;
        for outcome in Outcome::ALL {
            self.by_outcome[outcome] += o.by_outcome[outcome];
            self.streaming_by_outcome[outcome] += o.streaming_by_outcome[outcome];
        }
        self.output_tokens = self.output_tokens.saturating_add(o.output_tokens);
        self.input_tokens = self.input_tokens.saturating_add(o.input_tokens);
        self.cache_read_input_tokens = self
            .cache_read_input_tokens
            .saturating_add(o.cache_read_input_tokens);
        self.cache_creation_input_tokens = self
            .cache_creation_input_tokens
            .saturating_add(o.cache_creation_input_tokens);
        self.reasoning_output_tokens = self
            .reasoning_output_tokens
            .saturating_add(o.reasoning_output_tokens);
        self.finish_reasons.merge(&o.finish_reasons);
        self.cost = self.cost.saturating_add(o.cost);
        self.estimated_cost = self.estimated_cost.saturating_add(o.estimated_cost);
        self.unpriced += o.unpriced;
        self.tps_count += o.tps_count;
        self.max_stall_ms = self.max_stall_ms.max(o.max_stall_ms);
        self.merge_sketches(o);
    }

    /// A quantile of the time to first token (ms); 0 when there is none.
    pub(crate) fn first_token_ms(&self, q: f64) -> f64 {
        quantile(&self.ttft_ms, q)
    }

    /// A quantile of the time per output token (ms); 0 when there is none.
    pub(crate) fn time_per_output_token_ms(&self, q: f64) -> f64 {
        quantile(&self.tpot_ms, q)
    }

    /// The mean of the streams' tokens per second; 0 when there is none.
    pub(crate) fn avg_tokens_per_second(&self) -> f64 {
        ratio(self.tps_sum, self.tps_count as f64)
    }

    /// The median of the streams' tokens per second; 0 when there is none. What the tokens/s
    /// check reads: neither one stream read at once (thousands of tokens a second) nor one
    /// that stalled moves it (README, Health and rollback triggers).
    pub(crate) fn tokens_per_second_p50(&self) -> f64 {
        quantile(&self.tps, 0.50)
    }

    /// What the priced streams cost, in USD.
    pub(crate) fn cost_usd(&self) -> f64 {
        Cost::from_picodollars(self.cost).usd()
    }

    /// The window's figures, as the `/metrics` JSON names them (`in_flight`: now, for a window
    /// that ends now).
    pub(crate) fn summary(&self, in_flight: Option<u64>) -> WindowStats {
        let ttft_n = self.ttft_ms.count() as f64;
        let errors: u64 = self
            .streaming_by_outcome
            .iter()
            .filter(|(o, _)| o.is_error())
            .map(|(_, n)| n)
            .sum();
        WindowStats {
            total_streaming_requests: self.streaming,
            avg_first_token_latency_ms: ratio(self.ttft_ms_sum, ttft_n),
            first_token_p50_ms: self.first_token_ms(0.50),
            first_token_p95_ms: self.first_token_ms(0.95),
            first_token_p99_ms: self.first_token_ms(0.99),
            avg_tokens_per_second: self.avg_tokens_per_second(),
            tokens_per_second_p50: self.tokens_per_second_p50(),
            total_tokens: self.output_tokens,
            input_tokens: self.input_tokens,
            cache_read_input_tokens: self.cache_read_input_tokens,
            cache_creation_input_tokens: self.cache_creation_input_tokens,
            reasoning_output_tokens: self.reasoning_output_tokens,
            finish_reasons: self.finish_reasons,
            output_tokens_p50: quantile(&self.output_tokens_dist, 0.50),
            output_tokens_p95: quantile(&self.output_tokens_dist, 0.95),
            output_tokens_p99: quantile(&self.output_tokens_dist, 0.99),
            input_tokens_p50: quantile(&self.input_tokens_dist, 0.50),
            input_tokens_p95: quantile(&self.input_tokens_dist, 0.95),
            input_tokens_p99: quantile(&self.input_tokens_dist, 0.99),
            cost_usd: self.cost_usd(),
            estimated_cost_usd: Cost::from_picodollars(self.estimated_cost).usd(),
            unpriced_requests: self.unpriced,
            streaming_error_rate: ratio(errors as f64 * 100.0, self.streaming_judged as f64),
            streaming_errors: errors,
            by_outcome: self.streaming_by_outcome,
            timeouts: self.streaming_by_outcome[Outcome::Timeout],
            auth_errors: self.streaming_by_outcome[Outcome::AuthError],
            cancelled: self.streaming_by_outcome[Outcome::Cancelled],
            avg_duration_ms: ratio(self.duration_ms_sum, self.streaming as f64),
            duration_p95_ms: quantile(&self.duration_ms, 0.95),
            time_per_output_token_p95_ms: self.time_per_output_token_ms(0.95),
            max_stall_ms: finite(self.max_stall_ms),
            in_flight,
        }
    }

    /// All requests of the window (streaming or not): the `requests_5min` block.
    pub(crate) fn requests(&self) -> RequestStats {
        let auth = self.by_outcome[Outcome::AuthError];
        RequestStats {
            total_requests: self.requests,
            auth_errors: auth,
            auth_error_rate: ratio(auth as f64 * 100.0, self.requests as f64),
            by_outcome: self.by_outcome,
            unrouted_requests: self.unrouted,
        }
    }
}

/// A quantile of a sketch, or 0 for an empty one.
pub(crate) fn quantile(s: &Sketch, q: f64) -> f64 {
    finite(s.quantile(q).unwrap_or(0.0))
}

fn finite(v: f64) -> f64 {
    if v.is_finite() { v } else { 0.0 }
}

/// `a / b`, or 0 for an empty window: never NaN.
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { finite(a / b) } else { 0.0 }
}

/// One window's figures over streaming requests (the `WINDOW` object of `/metrics`). Rates are
/// percent (0-100), times milliseconds; an empty window is all zeros.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowStats {
    /// Streaming requests recorded in the window.
    pub total_streaming_requests: u64,
    /// Mean time to first token.
    pub avg_first_token_latency_ms: f64,
    /// Median time to first token.
    pub first_token_p50_ms: f64,
    /// 95th percentile time to first token.
    pub first_token_p95_ms: f64,
    /// 99th percentile time to first token.
    pub first_token_p99_ms: f64,
    /// Mean of the streams' tokens per second.
    pub avg_tokens_per_second: f64,
    /// Median of the streams' tokens per second: what the `streaming_tokens_per_second` check
    /// reads. Unlike the mean, one stream read at once (thousands of tokens a second) or one
    /// that stalled does not move it.
    pub tokens_per_second_p50: f64,
    /// Output tokens: every generated token, reasoning included (the README's token table).
    pub total_tokens: u64,
    /// Input tokens (reported): every prompt token, cached ones included.
    pub input_tokens: u64,
    /// Input tokens read from a provider's prompt cache (part of `input_tokens`).
    pub cache_read_input_tokens: u64,
    /// Input tokens written to a provider's prompt cache (part of `input_tokens`).
    pub cache_creation_input_tokens: u64,
    /// Reasoning tokens (part of `total_tokens`).
    pub reasoning_output_tokens: u64,
    /// Streams by the finish reason they gave (streams that gave none are not counted).
    pub finish_reasons: FinishReasons,
    /// Output tokens per stream: median (within 1%, as every quantile here).
    pub output_tokens_p50: f64,
    /// Output tokens per stream: 95th percentile.
    pub output_tokens_p95: f64,
    /// Output tokens per stream: 99th percentile.
    pub output_tokens_p99: f64,
    /// Input tokens per stream (of the streams that reported them): median.
    pub input_tokens_p50: f64,
    /// Input tokens per stream: 95th percentile.
    pub input_tokens_p95: f64,
    /// Input tokens per stream: 99th percentile.
    pub input_tokens_p99: f64,
    /// What the streams cost, in USD, summed exactly (pico-USD) before conversion (README,
    /// Cost).
    pub cost_usd: f64,
    /// Of `cost_usd`, what was estimated (streams without reported usage).
    pub estimated_cost_usd: f64,
    /// LLM streams whose model has no price: not in `cost_usd`, never counted as free.
    pub unpriced_requests: u64,
    /// Streaming errors as a percent of the streaming requests the client did not end alone
    /// (client-caused outcomes, `client_error` and `cancelled`, are left out of both sides).
    pub streaming_error_rate: f64,
    /// Streaming requests that failed on the service's or the upstream's side
    /// ([`Outcome::is_error`]): `auth_error`, `rate_limited`, `timeout`, `server_error`,
    /// `stream_error`.
    pub streaming_errors: u64,
    /// Streaming requests by outcome.
    pub by_outcome: OutcomeMap<u64>,
    /// Streaming requests that timed out.
    pub timeouts: u64,
    /// Streaming requests that failed authentication.
    pub auth_errors: u64,
    /// Streaming requests the client cancelled.
    pub cancelled: u64,
    /// Mean stream duration.
    pub avg_duration_ms: f64,
    /// 95th percentile stream duration.
    pub duration_p95_ms: f64,
    /// 95th percentile time per output token.
    pub time_per_output_token_p95_ms: f64,
    /// The longest gap between content events of any stream in the window.
    pub max_stall_ms: f64,
    /// Requests in flight now; `None` (and left out of the JSON) in a `/metrics/history`
    /// point, since a past slot has no count of now (its `avg_in_flight` is the slot's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<u64>,
}

/// All requests of a window, streaming or not (the `requests_5min` object).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestStats {
    /// Requests recorded.
    pub total_requests: u64,
    /// Requests with outcome `auth_error`.
    pub auth_errors: u64,
    /// `auth_errors` as a percent of `total_requests`.
    pub auth_error_rate: f64,
    /// Requests by outcome.
    pub by_outcome: OutcomeMap<u64>,
    /// Requests that matched no route (a router 404 or a 405), counted apart from everything
    /// above ([`StreamRecord::is_unrouted`]).
    pub unrouted_requests: u64,
}

/// Streams counted by [`FinishReason`], one field per reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct FinishReasons {
    /// [`FinishReason::Stop`].
    pub stop: u64,
    /// [`FinishReason::Length`]: cut by the token limit.
    pub length: u64,
    /// [`FinishReason::ContentFilter`].
    pub content_filter: u64,
    /// [`FinishReason::ToolCalls`].
    pub tool_calls: u64,
    /// [`FinishReason::Other`].
    pub other: u64,
    /// [`FinishReason::Unfinished`]: ended without a reason, most often cut upstream.
    pub unfinished: u64,
}

impl FinishReasons {
    /// The count of one reason.
    pub fn get(&self, reason: FinishReason) -> u64 {
        match reason {
            FinishReason::Stop => self.stop,
            FinishReason::Length => self.length,
            FinishReason::ContentFilter => self.content_filter,
            FinishReason::ToolCalls => self.tool_calls,
            FinishReason::Unfinished => self.unfinished,
            _ => self.other,
        }
    }

    fn add(&mut self, reason: FinishReason, n: u64) {
        let count = match reason {
            FinishReason::Stop => &mut self.stop,
            FinishReason::Length => &mut self.length,
            FinishReason::ContentFilter => &mut self.content_filter,
            FinishReason::ToolCalls => &mut self.tool_calls,
            FinishReason::Unfinished => &mut self.unfinished,
            _ => &mut self.other,
        };
        *count = count.saturating_add(n);
    }

    fn merge(&mut self, other: &FinishReasons) {
        for reason in FinishReason::ALL {
            self.add(reason, other.get(reason));
        }
    }
}
