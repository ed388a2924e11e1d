//! The in-process Prometheus exposition: every metric of [`names::METRICS`], summed per thread
//! and merged when scraped.
//!
//! Records are written constantly and scraped rarely, so each thread adds its observations to a
//! shard of its own ([`SeriesShard`]; counts no other core writes), which the monitor keeps
//! beside the thread's windows, under their lock: a record costs a label-set lookup and a few
//! additions, and no lock of its own. A scrape locks each shard in turn, merges them and
//! writes the text format 0.0.4 (or OpenMetrics 1.0, with exemplars) from the table: names,
//! kinds, help, buckets and label names all come from [`names::METRICS`], so this file knows no
//! metric by name. Series appear on their first observation, as Prometheus client libraries do;
//! the in-flight gauge is the sum of the shards' starts and ends per route, worked out at render
//! time.
//!
//! Exemplars: each bucket of a histogram whose table entry asks for them keeps the trace of the
//! latest request that fell in it (40 bytes, allocated with the series, never per request); a
//! scrape keeps the latest of the shards'.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use foldhash::fast::RandomState;

use crate::health::HealthReport;
use crate::label::Label;
use crate::labels::LabelSet;
use crate::names::{self, LabelValue, MAX_LABEL_VALUES, METRICS, Metric, Sink};
use crate::record::StreamRecord;
use crate::shard::RecentIndices;
use crate::trace::{SpanId, TraceId};

/// The text formats the exposition writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Prometheus text format 0.0.4 (the default).
    Text,
    /// OpenMetrics 1.0: the same samples, with exemplars on the histograms that keep them.
    OpenMetrics,
}

/// A recent request's trace on a histogram bucket.
#[derive(Debug, Clone, Copy)]
struct Exemplar {
    trace_id: TraceId,
    span_id: SpanId,
    value: f64,
    /// Seconds since the Unix epoch.
    timestamp: f64,
}

/// Series slots per label set (or for the unlabelled metrics): one per metric and value of its
/// last label.
const SLOTS: usize = METRICS.len() * MAX_LABEL_VALUES;

fn slot(metric: &Metric, extra: Option<LabelValue>) -> usize {
    let value = extra.map_or(0, |e| e.index);
    debug_assert!(value < MAX_LABEL_VALUES, "{}", metric.name());
    metric.index * MAX_LABEL_VALUES + value
}

/// One series: a counter's total, or a histogram's bucket counts (not cumulative; the last is
/// above every bound) and sum. Its count is the buckets' total, added up when rendered: an
/// observation adds to one bucket, and nothing more per record.
#[derive(Clone)]
enum Series {
    Counter(u64),
    Histogram {
        buckets: Box<[u64]>,
        sum: f64,
        /// Per bucket, the latest exemplar; for the metrics that keep them.
        exemplars: Option<Box<[Option<Exemplar>]>>,
    },
}

impl Series {
    fn histogram(metric: &Metric) -> Self {
        let n = metric.buckets().len() + 1;
        Series::Histogram {
            buckets: vec![0; n].into_boxed_slice(),
            sum: 0.0,
            exemplars: metric.exemplars().then(|| vec![None; n].into_boxed_slice()),
        }
    }

    fn merge(&mut self, other: &Series) {
        match (self, other) {
            (Series::Counter(a), Series::Counter(b)) => *a += b,
            (
                Series::Histogram {
                    buckets,
                    sum,
                    exemplars,
                },
                Series::Histogram {
                    buckets: b,
                    sum: s,
                    exemplars: e,
                },
            ) => {
                buckets.iter_mut().zip(b.iter()).for_each(|(a, b)| *a += b);
                *sum += s;
                if let (Some(mine), Some(theirs)) = (exemplars, e) {
                    for (a, b) in mine.iter_mut().zip(theirs.iter()) {
                        if let Some(b) = b {
                            if a.is_none_or(|a| a.timestamp < b.timestamp) {
                                *a = Some(*b);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// A series, with the value of its metric's last label (outcome, token type), once observed.
type Slot = Option<(Option<&'static str>, Series)>;

/// The series of one label set, by [`slot`].
#[derive(Clone)]
struct LabelSetSeries {
    /// A fixed length: a metric's slot, a constant, needs no bounds check.
    slots: Box<[Slot; SLOTS]>,
}

impl LabelSetSeries {
    /// Out of line: the array is built on the stack, which the recording path should not pay
    /// for on every record.
    #[cold]
    #[inline(never)]
    fn new() -> Self {
        Self {
            slots: Box::new(std::array::from_fn(|_| None)),
        }
    }
}

impl Sink for LabelSetSeries {
    #[inline]
    fn counter(&mut self, metric: &'static Metric, extra: Option<LabelValue>, n: u64) {
        let (_, series) = self.slots[slot(metric, extra)]
            .get_or_insert((extra.map(|e| e.value), Series::Counter(0)));
        if let Series::Counter(total) = series {
            *total += n;
        }
    }

    #[inline]
    fn histogram(&mut self, metric: &'static Metric, extra: Option<LabelValue>, value: f64) {
        self.observe(metric, extra, value, None);
    }
}

/// Room for any metric's bounds, a power of two past [`names::MAX_BUCKETS`].
const PADDED: usize = (names::MAX_BUCKETS + 1).next_power_of_two();

/// A metric's bucket bounds, then `+Inf` up to [`PADDED`]: no value is above a padding bound
/// (`+Inf` neither), so the search finds the same bucket as in the bounds alone, without a
/// bounds check per step.
type Padded = [f64; PADDED];

const fn padded(bounds: &[f64]) -> Padded {
    let mut out = [f64::INFINITY; PADDED];
    let mut i = 0;
    while i < bounds.len() {
        out[i] = bounds[i];
        i += 1;
    }
    out
}

/// Every metric's padded bounds, by [`Metric::index`] (all `+Inf` for those without buckets).
static PADDED_BOUNDS: [Padded; METRICS.len()] = {
    let mut out = [[f64::INFINITY; PADDED]; METRICS.len()];
    let mut i = 0;
    while i < METRICS.len() {
        out[i] = padded(METRICS[i].buckets());
        i += 1;
    }
    out
};

/// The `le` bucket of `value`: the first bound at or above it, so the count of bounds below it,
/// which is `bounds.partition_point(|b| *b < value)` for bounds that strictly increase (checked
/// when compiling, as is their count, at most [`names::MAX_BUCKETS`]), padded (see [`Padded`]).
/// A NaN, below no bound, lands in the first bucket. Five halving steps of fixed sizes, which
/// the compiler unrolls; a value in the first bucket (a quick answer's duration) is found by
/// one comparison first.
#[inline(always)]
fn bucket(bounds: &Padded, value: f64) -> usize {
    // Not below the first bound, or a NaN (incomparable).
    if bounds[0].partial_cmp(&value) != Some(std::cmp::Ordering::Less) {
        return 0;
    }
    let mut below = 0;
    // Steps of 16, 8, 4, 2, 1: together they reach every count up to `MAX_BUCKETS`.
    let mut step = PADDED / 2;
    while step > 0 {
        // The bounds before `below + step` are all below the value when the last of them is.
        // Always within the array (at most 30): the mask only lets the compiler see it.
        if bounds[(below + step - 1) & (PADDED - 1)] < value {
            below += step;
        }
        step /= 2;
    }
    below
}

impl LabelSetSeries {
    /// A histogram observation, with the trace (ids and time) of the request it came from.
    /// Inlined into each observation, where the metric, so its buckets and slot, are constants.
    #[inline(always)]
    fn observe(
        &mut self,
        metric: &'static Metric,
        extra: Option<LabelValue>,
        value: f64,
        trace: Option<(TraceId, SpanId, f64)>,
    ) {
        let (_, series) = self.slots[slot(metric, extra)]
            .get_or_insert_with(|| (extra.map(|e| e.value), Series::histogram(metric)));
        if let Series::Histogram {
            buckets,
            sum,
            exemplars,
        } = series
        {
            // Values are durations and counts from the record, never NaN.
            let i = bucket(&PADDED_BOUNDS[metric.index], value);
            buckets[i] += 1;
            *sum += value;
            if let (Some(exemplars), Some((trace_id, span_id, timestamp))) = (exemplars, trace) {
                exemplars[i] = Some(Exemplar {
                    trace_id,
                    span_id,
                    value,
                    timestamp,
                });
            }
        }
    }
}

/// One thread shard's series. Kept beside the windows' shard of the same thread, under its lock
/// (see `WindowStore::record_with`): a record takes one lock, not two.
#[derive(Default)]
pub(crate) struct SeriesShard {
    sets: Vec<(LabelSet, LabelSetSeries)>,
    /// Positions in `sets`.
    index: HashMap<LabelSet, usize, RandomState>,
    recent: RecentIndices,
    unlabelled: Option<LabelSetSeries>,
}

/// Routes a record's observations: those of per-label-set metrics to its label set, the
/// others to the shard's unlabelled series.
struct Feed<'a> {
    set: &'a mut LabelSetSeries,
    unlabelled: &'a mut Option<LabelSetSeries>,
    /// The record's trace and end time, for exemplars.
    trace: Option<(TraceId, SpanId, f64)>,
}

impl Sink for Feed<'_> {
    #[inline]
    fn counter(&mut self, metric: &'static Metric, extra: Option<LabelValue>, n: u64) {
        if metric.per_label_set() {
            self.set.counter(metric, extra, n);
        } else {
            let unlabelled = self.unlabelled.get_or_insert_with(LabelSetSeries::new);
            unlabelled.counter(metric, extra, n);
        }
    }

    #[inline(always)]
    fn histogram(&mut self, metric: &'static Metric, extra: Option<LabelValue>, value: f64) {
        if metric.per_label_set() {
            let trace = self.trace.filter(|_| metric.exemplars());
            self.set.observe(metric, extra, value, trace);
        } else {
            let unlabelled = self.unlabelled.get_or_insert_with(LabelSetSeries::new);
            unlabelled.histogram(metric, extra, value);
        }
    }
}

pub(crate) struct PrometheusExposition {
    /// `stream_monitor_unrouted_requests_total`: rare, so one shared counter.
    unrouted: AtomicU64,
    /// `stream_monitor_label_overflow_total`, by [`names::OVERFLOW_LABELS`]: rare too.
    overflow: [AtomicU64; names::OVERFLOW_LABELS.len()],
}

impl PrometheusExposition {
    pub(crate) fn new() -> Self {
        Self {
            unrouted: AtomicU64::new(0),
            overflow: Default::default(),
        }
    }

    /// Adds a finished record's observations to `shard`, this thread's, under `set` (the
    /// record's label set, after the series budget).
    pub(crate) fn record(shard: &mut SeriesShard, r: &StreamRecord, set: &LabelSet) {
        let i = match shard.recent.find(&shard.sets, |(key, _)| key.is(set)) {
            Some(i) => i,
            None => {
                let i = match shard.index.get(set) {
                    Some(&i) => i,
                    None => {
                        // Label sets are capped by the series budget (`max_label_sets`), so
                        // this shard's are too.
                        shard.sets.push((*set, LabelSetSeries::new()));
                        shard.index.insert(*set, shard.sets.len() - 1);
                        shard.sets.len() - 1
                    }
                };
                if shard.sets[i].0.is(set) {
                    shard.recent.remember(i);
                }
                i
            }
        };
        let trace = r.trace.as_ref().map(|t| {
            let at = r
                .finished_at
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            (t.trace_id(), t.span_id(), at.as_secs_f64())
        });
        let mut feed = Feed {
            set: &mut shard.sets[i].1,
            unlabelled: &mut shard.unlabelled,
            trace,
        };
        names::observe(r, &mut feed);
    }

    /// Counts a request that matched no route (no labels: such requests never make series).
    pub(crate) fn unrouted(&self) {
        self.unrouted.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a label value folded into `other`; `label` is one of [`names::OVERFLOW_LABELS`].
    pub(crate) fn label_overflow(&self, label: &'static str) {
        if let Some(i) = names::OVERFLOW_LABELS.iter().position(|l| *l == label) {
            self.overflow[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The exposition in `format`: the shards merged (`shards` calls its argument with each, as
    /// it holds it), metrics in table order, label sets sorted. `in_flight` is the in-flight
    /// count by route, `health` the current report, and `version` the `service_version` every
    /// series carries, if set.
    pub(crate) fn render(
        &self,
        shards: impl FnOnce(&mut dyn FnMut(&SeriesShard)),
        in_flight: &BTreeMap<Label, i64>,
        health: &HealthReport,
        version: Option<&str>,
        format: Format,
    ) -> String {
        let constant = version.map(|v| (names::SERVICE_VERSION, v));
        let mut gauges: BTreeMap<&'static str, Lines<'_>> = BTreeMap::new();
        names::observe_health(health, |metric, values, value| {
            let labels: Vec<(&str, &str)> = metric
                .labels()
                .iter()
                .copied()
                .zip(values.iter().copied())
                .collect();
            let lines = gauges.entry(metric.name()).or_insert_with(|| Lines {
                text: String::new(),
                constant,
                format,
            });
            sample(lines, metric.name(), "", &labels, value);
        });
        type SortKey = (Label, Label, Label, &'static str, Option<Label>);
        let mut sets: BTreeMap<SortKey, LabelSetSeries> = BTreeMap::new();
        let mut unlabelled = LabelSetSeries::new();
        shards(&mut |shard| {
            for (key, series) in &shard.sets {
                let sort_key = (
                    key.provider,
                    key.model,
                    key.route,
                    key.operation.unwrap_or(""),
                    key.response_model,
                );
                let merged = sets.entry(sort_key).or_insert_with(LabelSetSeries::new);
                merge_into(merged, series);
            }
            if let Some(series) = &shard.unlabelled {
                merge_into(&mut unlabelled, series);
            }
        });
        let mut out = String::new();
        for metric in METRICS {
            let mut lines = Lines {
                text: String::new(),
                constant,
                format,
            };
            match metric.name() {
                name if gauges.contains_key(name) => {
                    if let Some(health) = gauges.remove(name) {
                        lines = health;
                    }
                }
                names::IN_FLIGHT => {
                    for (route, n) in in_flight {
                        sample(
                            &mut lines,
                            metric.name(),
                            "",
                            &[(metric.labels()[0], route)],
                            *n as f64,
                        );
                    }
                }
                names::UNROUTED_REQUESTS_TOTAL => {
                    let n = self.unrouted.load(Ordering::Relaxed);
                    if n > 0 {
                        sample(&mut lines, metric.name(), "", &[], n as f64);
                    }
                }
                names::LABEL_OVERFLOW_TOTAL => {
                    for (label, n) in names::OVERFLOW_LABELS.iter().zip(&self.overflow) {
                        let n = n.load(Ordering::Relaxed);
                        if n > 0 {
                            sample(
                                &mut lines,
                                metric.name(),
                                "",
                                &[(metric.labels()[0], label)],
                                n as f64,
                            );
                        }
                    }
                }
                _ if metric.per_label_set() => {
                    for ((provider, model, route, operation, response_model), series) in &sets {
                        let base = [
                            &**provider,
                            &**model,
                            &**route,
                            operation,
                            response_model.as_deref().unwrap_or(""),
                        ];
                        render_slots(&mut lines, metric, &base, series);
                    }
                }
                _ => render_slots(&mut lines, metric, &[], &unlabelled),
            }
            if lines.text.is_empty() {
                continue;
            }
            // OpenMetrics names a counter's family without its `_total`.
            let family = match (format, metric.kind()) {
                (Format::OpenMetrics, names::MetricKind::Counter) => metric
                    .name()
                    .strip_suffix("_total")
                    .unwrap_or(metric.name()),
                _ => metric.name(),
            };
            let _ = writeln!(out, "# HELP {family} {}", metric.help());
            let _ = writeln!(out, "# TYPE {family} {}", metric.kind().as_str());
            out.push_str(&lines.text);
            if format == Format::Text {
                out.push('\n');
            }
        }
        if format == Format::OpenMetrics {
            out.push_str("# EOF\n");
        }
        out
    }
}

fn merge_into(into: &mut LabelSetSeries, from: &LabelSetSeries) {
    for (a, b) in into.slots.iter_mut().zip(from.slots.iter()) {
        match (a, b) {
            (Some((_, a)), Some((_, b))) => a.merge(b),
            (a @ None, Some(b)) => *a = Some(b.clone()),
            _ => {}
        }
    }
}

/// The series of `metric` in one label set, `base` being its values in [`names::REQUEST_LABELS`]
/// order (or nothing).
fn render_slots(out: &mut Lines<'_>, metric: &Metric, base: &[&str], series: &LabelSetSeries) {
    let start = metric.index * MAX_LABEL_VALUES;
    let bounds: Vec<String> = metric
        .buckets()
        .iter()
        .map(|b| format_value(*b))
        .chain(["+Inf".to_owned()])
        .collect();
    for (extra, series) in series.slots[start..start + MAX_LABEL_VALUES]
        .iter()
        .flatten()
    {
        let mut labels: Vec<(&str, &str)> = metric
            .labels()
            .iter()
            .copied()
            .zip(base.iter().copied())
            .collect();
        if let (Some(extra), Some(name)) = (extra, metric.labels().get(base.len())) {
            labels.push((name, extra));
            if let Some(error_type) = metric.error_type(Some(LabelValue {
                value: extra,
                index: 0,
            })) {
                labels.push(error_type);
            }
        }
        match series {
            Series::Counter(n) => {
                sample(out, metric.name(), "", &labels, *n as f64 * metric.scale())
            }
            Series::Histogram {
                buckets,
                sum,
                exemplars,
            } => {
                let mut cumulative = 0;
                for (i, (n, le)) in buckets.iter().zip(&bounds).enumerate() {
                    cumulative += n;
                    labels.push(("le", le));
                    let exemplar = exemplars.as_ref().and_then(|e| e[i].as_ref());
                    sample_with(
                        out,
                        metric.name(),
                        "_bucket",
                        &labels,
                        cumulative as f64,
                        exemplar,
                    );
                    labels.pop();
                }
                sample(out, metric.name(), "_sum", &labels, *sum);
                // The last cumulative count, +Inf's: every observation.
                sample(out, metric.name(), "_count", &labels, cumulative as f64);
            }
        }
    }
}

/// Sample lines being written, the label every series carries (`service_version`), if any, and
/// the format.
struct Lines<'a> {
    text: String,
    constant: Option<(&'static str, &'a str)>,
    format: Format,
}

/// One sample line: `name{label="value",...} value`. A label with an empty value is left out:
/// to Prometheus it is the same as no label, and the line is shorter.
fn sample(out: &mut Lines<'_>, name: &str, suffix: &str, labels: &[(&str, &str)], value: f64) {
    sample_with(out, name, suffix, labels, value, None);
}

/// A sample line with, in OpenMetrics, its exemplar:
/// `name{...} value # {trace_id="...",span_id="..."} value timestamp`.
fn sample_with(
    out: &mut Lines<'_>,
    name: &str,
    suffix: &str,
    labels: &[(&str, &str)],
    value: f64,
    exemplar: Option<&Exemplar>,
) {
    let openmetrics = out.format == Format::OpenMetrics;
    let text = &mut out.text;
    text.push_str(name);
    text.push_str(suffix);
    let mut labels = labels
        .iter()
        .copied()
        .chain(out.constant)
        .filter(|(_, value)| !value.is_empty())
        .peekable();
    if labels.peek().is_some() {
        text.push('{');
        for (i, (name, value)) in labels.enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(name);
            text.push_str("=\"");
            escape_label_value(text, value);
            text.push('"');
        }
        text.push('}');
    }
    text.push(' ');
    text.push_str(&format_value(value));
    if let (true, Some(e)) = (openmetrics, exemplar) {
        let _ = write!(
            text,
            " # {{trace_id=\"{}\",span_id=\"{}\"}} {} {:.3}",
            e.trace_id,
            e.span_id,
            format_value(e.value),
            e.timestamp
        );
    }
    text.push('\n');
}

/// Backslash, double quote and line feed escaped, as the text format requires.
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A sample value as the text format spells it: `+Inf`, `-Inf`, `NaN`, else the shortest
/// decimal that reads back the same (`1`, `0.25`).
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::record::Outcome;

    fn no_health() -> HealthReport {
        HealthReport {
            status: crate::health::HealthStatus::Unknown,
            checks: Vec::new(),
            triggers: Vec::new(),
            budgets: Vec::new(),
            anomalies: Vec::new(),
            rollback: false,
        }
    }

    fn record(outcome: Outcome, ttft_ms: u64) -> StreamRecord {
        let mut r = StreamRecord::new("openai", "gpt-4o-mini", "/v1/chat", outcome);
        r.streaming = true;
        r.operation_name = Some("chat");
        r.response_model = Some(Label::new("gpt-4o-mini-2024-07-18"));
        r.time_to_first_token = Some(Duration::from_millis(ttft_ms));
        r.output_tokens = 10;
        r.malformed_events = 2;
        r
    }

    /// Records `r` under its own labels.
    fn observe(shard: &mut SeriesShard, r: &StreamRecord) {
        PrometheusExposition::record(shard, r, &r.label_set());
    }

    #[test]
    fn merges_shards_and_renders_cumulative_buckets() {
        let exposition = PrometheusExposition::new();
        let mut shards = [SeriesShard::default(), SeriesShard::default()];
        observe(&mut shards[0], &record(Outcome::Ok, 100));
        observe(&mut shards[1], &record(Outcome::ServerError, 300));
        observe(&mut shards[0], &record(Outcome::Ok, 3));
        let text = exposition.render(
            |f| shards.iter().for_each(f),
            &BTreeMap::new(),
            &no_health(),
            None,
            Format::Text,
        );
        let labels = r#"gen_ai_provider_name="openai",gen_ai_request_model="gpt-4o-mini",http_route="/v1/chat",gen_ai_operation_name="chat",gen_ai_response_model="gpt-4o-mini-2024-07-18""#;
        for line in [
            format!(r#"stream_monitor_requests_total{{{labels},outcome="ok"}} 2"#),
            format!(
                r#"stream_monitor_requests_total{{{labels},outcome="server_error",error_type="server_error"}} 1"#
            ),
            format!(
                r#"gen_ai_client_inference_usage_detailed_output_tokens_total{{{labels},gen_ai_token_modality="unknown"}} 30"#
            ),
            format!(r#"gen_ai_server_time_to_first_token_seconds_bucket{{{labels},le="0.001"}} 0"#),
            format!(r#"gen_ai_server_time_to_first_token_seconds_bucket{{{labels},le="0.005"}} 1"#),
            format!(r#"gen_ai_server_time_to_first_token_seconds_bucket{{{labels},le="0.1"}} 2"#),
            format!(r#"gen_ai_server_time_to_first_token_seconds_bucket{{{labels},le="0.25"}} 2"#),
            format!(r#"gen_ai_server_time_to_first_token_seconds_bucket{{{labels},le="0.5"}} 3"#),
            format!(r#"gen_ai_server_time_to_first_token_seconds_bucket{{{labels},le="+Inf"}} 3"#),
            format!(r#"gen_ai_server_time_to_first_token_seconds_count{{{labels}}} 3"#),
            format!(r#"gen_ai_client_token_usage_sum{{{labels},gen_ai_token_type="output"}} 30"#),
            r#"stream_monitor_skipped_events_total{reason="malformed"} 6"#.to_owned(),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(text.contains("# TYPE gen_ai_server_time_to_first_token_seconds histogram\n"));
        // Nothing observed, nothing shown.
        assert!(!text.contains(names::UNROUTED_REQUESTS_TOTAL));
        assert!(!text.contains(names::TIME_PER_OUTPUT_TOKEN));
    }

    #[test]
    fn in_flight_is_rendered_by_route() {
        let exposition = PrometheusExposition::new();
        let in_flight = BTreeMap::from([(Label::new("/v1/chat"), 1)]);
        assert!(
            exposition
                .render(|_| {}, &in_flight, &no_health(), Some("v2"), Format::Text)
                .contains(
                    "stream_monitor_in_flight{http_route=\"/v1/chat\",service_version=\"v2\"} 1\n"
                )
        );
    }

    #[test]
    fn openmetrics_carries_exemplars_and_ends_with_eof() {
        let exposition = PrometheusExposition::new();
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let trace = crate::trace::TraceContext::from_traceparent(parent, None).unwrap();
        let mut r = record(Outcome::Ok, 300);
        r.finished_at = std::time::UNIX_EPOCH + Duration::from_millis(1_800_000_000_250);
        r.trace = Some(trace.clone());
        // Ten tokens, the first at 300 ms, then one every 45 ms.
        r.duration = Duration::from_millis(705);
        r.time_per_output_token = Some(Duration::from_millis(45));
        let mut shard = SeriesShard::default();
        observe(&mut shard, &r);
        let render =
            |format| exposition.render(|f| f(&shard), &BTreeMap::new(), &no_health(), None, format);
        let text = render(Format::Text);
        assert!(!text.contains(" # {"), "no exemplars in text 0.0.4");
        let om = render(Format::OpenMetrics);
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert!(!om.contains("\n\n"), "no blank lines in OpenMetrics");
        // The 0.5 s bucket holds the 300 ms first token; its exemplar is the request's trace.
        let bucket = om
            .lines()
            .find(|l| {
                l.starts_with("gen_ai_server_time_to_first_token_seconds_bucket{")
                    && l.contains("le=\"0.5\"")
            })
            .unwrap();
        let expected = format!(
            " 1 # {{trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\",span_id=\"{}\"}} 0.3 1800000000.250",
            trace.span_id()
        );
        assert!(bucket.ends_with(&expected), "{bucket}");
        // Each timing histogram's exemplar sits in the one bucket its value falls in.
        let exemplar = format!(
            " # {{trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\",span_id=\"{}\"}} ",
            trace.span_id()
        );
        for (metric, value) in [
            (names::TIME_TO_FIRST_TOKEN, 0.3),
            (names::TIME_PER_OUTPUT_TOKEN, 0.045),
            (names::REQUEST_DURATION, 0.705),
        ] {
            let buckets: Vec<&str> = om
                .lines()
                .filter(|l| l.starts_with(&format!("{metric}_bucket{{")))
                .collect();
            let le = |line: &str| -> f64 {
                let v = line
                    .split("le=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap();
                if v == "+Inf" {
                    f64::INFINITY
                } else {
                    v.parse().unwrap()
                }
            };
            let with: Vec<usize> = (0..buckets.len())
                .filter(|&i| buckets[i].contains(&exemplar))
                .collect();
            assert_eq!(with.len(), 1, "one exemplar for {metric} in\n{om}");
            let i = with[0];
            let shown = buckets[i].split(&exemplar).nth(1).unwrap();
            assert_eq!(shown, format!("{value} 1800000000.250"), "{metric}");
            assert!(
                i > 0 && le(buckets[i - 1]) < value && value <= le(buckets[i]),
                "{metric}: {value} in\n{buckets:#?}"
            );
        }
        // Buckets the request did not fall in have none; counters are named without `_total`.
        assert!(
            om.lines()
                .any(|l| l.contains("le=\"0.25\"} 0") && !l.contains('#'))
        );
        assert!(om.contains("# TYPE stream_monitor_requests counter\n"));
        assert!(om.contains("\nstream_monitor_requests_total{"));
    }

    #[test]
    fn bucket_search_is_partition_point() {
        let mut values = vec![
            f64::NAN,
            f64::NEG_INFINITY,
            -1.0,
            -0.0,
            0.0,
            f64::MIN_POSITIVE,
            f64::INFINITY,
            f64::MAX,
        ];
        for metric in METRICS.iter().filter(|m| !m.buckets().is_empty()) {
            for b in metric.buckets() {
                // The bounds are positive: their neighbours are one bit pattern away.
                let (down, up) = (b.to_bits() - 1, b.to_bits() + 1);
                values.extend([
                    *b,
                    f64::from_bits(down),
                    f64::from_bits(up),
                    b / 2.0,
                    b * 1.5,
                ]);
            }
        }
        let lists: Vec<Vec<f64>> = (0..=names::MAX_BUCKETS)
            .map(|n| (1..=n).map(|i| i as f64 * 0.5).collect())
            .chain(METRICS.iter().map(|m| m.buckets().to_vec()))
            .collect();
        for bounds in &lists {
            for v in values
                .iter()
                .chain(&[0.25, 0.5, 0.75, 8.0, 15.5, 15.75, 16.0])
            {
                assert_eq!(
                    bucket(&padded(bounds), *v),
                    bounds.partition_point(|b| b < v),
                    "{v} in {bounds:?}"
                );
            }
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = Lines {
            text: String::new(),
            constant: None,
            format: Format::Text,
        };
        sample(&mut out, "m", "", &[("l", "a\"b\\c\nd")], 1.0);
        assert_eq!(out.text, "m{l=\"a\\\"b\\\\c\\nd\"} 1\n");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(0.25), "0.25");
    }
}
