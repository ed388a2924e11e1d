//! Trends and anomalies over the last hour, from the slots the windows already keep (README,
//! Trends and anomalies).
//!
//! Each signal (first-token p95, median tokens/s, error rate) is read per slot. A **trend** is
//! the least-squares slope, per provider, of the minutes that have data, with its standard
//! error and r². An **anomaly** compares a provider and model's last complete slot (a minute by
//! default, [`AnomalyDetection`]) with a baseline learnt from the slots before it: their median
//! and median absolute deviation (MAD). Median and MAD rather than mean and
//! variance (or an EWMA) because the baseline must not be dragged by the very outliers it is
//! meant to catch, nor by a handful of slow minutes: one bad minute moves a mean and a variance
//! a lot, a median not at all. A flat baseline (an error rate of 0) has no spread, so each
//! signal has a floor on it: a small change is never an anomaly. Baselines are per provider and
//! model, so a model that is always slow is not anomalous, nor is a shift of traffic to it.

use serde::Serialize;

use crate::window::SlotStats;

/// Streams a minute needs before its value counts (trends and the capacity figure).
pub(crate) const MIN_STREAMS_PER_MINUTE: u64 = 5;

/// The slots anomalies are judged on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnomalySlot {
    /// The hour's 60 one-minute slots (the default): a change is caught in 2 to 3 minutes.
    OneMinute,
    /// The 5 minutes' 30 slots of 10 s: caught in 20 to 30 s, from a baseline of at most
    /// 27 slots (the one filling and the two judged left out). For demos and short-lived
    /// processes; noisier, since a slot holds fewer streams.
    TenSeconds,
}

impl AnomalySlot {
    pub(crate) fn span(self) -> crate::window::WindowSpan {
        match self {
            AnomalySlot::OneMinute => crate::window::WindowSpan::OneHour,
            AnomalySlot::TenSeconds => crate::window::WindowSpan::FiveMinutes,
        }
    }

    pub(crate) fn secs(self) -> u64 {
        self.span().slot_secs()
    }
}

/// How anomalies are judged ([`MonitorBuilder::anomaly_detection`](crate::MonitorBuilder::anomaly_detection);
/// README, Trends and anomalies). The defaults suit a service: one-minute slots, 5 streams
/// a slot, 10 baseline slots, raised past 4 robust deviations two slots in a row, cleared under 2.
///
/// ```
/// use tower_stream_monitor::Monitor;
/// use tower_stream_monitor::predict::{AnomalyDetection, AnomalySlot};
///
/// // A demo that must show an anomaly within two minutes of starting.
/// let monitor = Monitor::builder()
///     .anomaly_detection(
///         AnomalyDetection::default()
///             .slot(AnomalySlot::TenSeconds)
///             .min_baseline_slots(6),
///     )
///     .build()
///     .unwrap();
/// # drop(monitor);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyDetection {
    pub(crate) slot: AnomalySlot,
    pub(crate) min_streams_per_slot: u64,
    pub(crate) min_baseline_slots: usize,
    pub(crate) raise_score: f64,
    pub(crate) clear_score: f64,
    pub(crate) rollback: bool,
}

impl Default for AnomalyDetection {
    fn default() -> Self {
        Self {
            slot: AnomalySlot::OneMinute,
            min_streams_per_slot: MIN_STREAMS_PER_MINUTE,
            min_baseline_slots: 10,
            raise_score: 4.0,
            clear_score: 2.0,
            rollback: false,
        }
    }
}

impl AnomalyDetection {
    /// The slots judged (default [`AnomalySlot::OneMinute`]).
    pub fn slot(mut self, slot: AnomalySlot) -> Self {
        self.slot = slot;
        self
    }

    /// Streams a slot needs before a signal's value counts (default 5; at least 1): streams
    /// with a first token (or a first-token lower bound) for the first-token p95, with a rate
    /// for tokens per second, and those the error rate is over (not `client_error` nor
    /// `cancelled`) for the error rate.
    pub fn min_streams_per_slot(mut self, n: u64) -> Self {
        self.min_streams_per_slot = n;
        self
    }

    /// Slots with data the baseline needs before an anomaly may be judged (default 10; from
    /// 3 to the complete slots a window holds, the one still filling left out, minus the two
    /// judged: 57 for minutes, 27 for 10 s).
    pub fn min_baseline_slots(mut self, n: usize) -> Self {
        self.min_baseline_slots = n;
        self
    }

    /// The score (robust standard deviations, 1.4826 × MAD, from the baseline's median) past
    /// which two slots in a row raise an anomaly (default 4), and under which a raised one
    /// clears (default 2): hysteresis, so a noisy slot inside a change does not clear it and
    /// raise it again. `clear` must be below `raise`, both positive.
    pub fn scores(mut self, raise: f64, clear: f64) -> Self {
        self.raise_score = raise;
        self.clear_score = clear;
        self
    }

    /// Whether an anomaly is a rollback trigger: `/health` critical with `rollback: true` while
    /// it holds (default `false`: an anomaly degrades health, a provider off its own usual is a
    /// warning).
    pub fn rollback(mut self, rollback: bool) -> Self {
        self.rollback = rollback;
        self
    }

    /// Why the settings cannot be used, if they cannot.
    pub(crate) fn invalid(&self) -> Option<String> {
        // The slot still filling is no baseline, nor are the two judged.
        let most = self.slot.span().slots() - 3;
        if self.min_streams_per_slot == 0 {
            return Some("min_streams_per_slot must be at least 1".into());
        }
        if !(3..=most).contains(&self.min_baseline_slots) {
            return Some(format!("min_baseline_slots must be from 3 to {most}"));
        }
        let finite = self.raise_score.is_finite() && self.clear_score.is_finite();
        if !finite || self.clear_score <= 0.0 || self.clear_score >= self.raise_score {
            return Some("scores: 0 < clear < raise, both finite".into());
        }
        None
    }
}

/// The least-squares line through a signal's minutes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Trend {
    /// Change per minute, in the signal's unit.
    pub slope_per_minute: f64,
    /// Standard error of the slope: the slope is within about two of these of the truth.
    pub slope_stderr: f64,
    /// How much of the variation the line explains (0-1).
    pub r2: f64,
    /// Minutes with data.
    pub minutes: usize,
}

/// A signal's last complete slot against its baseline, for one provider and model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Anomaly {
    /// The request model (`gen_ai_request_model`): baselines are per provider and model, so a
    /// model that is always slow is not an anomaly.
    pub model: String,
    /// `first_token_p95_ms`, `tokens_per_second` or `error_rate`.
    pub signal: &'static str,
    /// The last complete slot's value.
    pub value: f64,
    /// The baseline's median.
    pub baseline_median: f64,
    /// The spread used: 1.4826 × MAD, or the signal's floor when larger.
    pub baseline_spread: f64,
    /// Robust standard deviations in the bad direction (negative: better than usual).
    pub score: f64,
    /// Whether the score passed the raise score (4) in each of the last two complete slots, or,
    /// once raised, stays above the clear score (2).
    pub anomalous: bool,
    /// Baseline slots with data.
    pub baseline_slots: usize,
    /// The slot's length in seconds (60 by default).
    pub slot_secs: u64,
}

/// Trends and anomalies by provider ([`Monitor::predictions`](crate::Monitor::predictions)).
pub type Predictions = std::collections::BTreeMap<String, ProviderPrediction>;

/// One provider's trends and anomalies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderPrediction {
    /// Trend of the first-token p95 (ms per minute), when 3 minutes or more have data.
    pub first_token_p95_trend: Option<Trend>,
    /// Trend of the error rate (percentage points per minute).
    pub error_rate_trend: Option<Trend>,
    /// The signals judged (those with enough data), per model.
    pub anomalies: Vec<Anomaly>,
    /// Capacity: the lowest time-averaged in-flight count of the minutes (with enough streams)
    /// whose first-token p95 was past the baseline's warning, in the last hour; `None` if none
    /// was. The level above which the provider slowed: what planning replicas needs.
    pub in_flight_at_first_token_warning: Option<f64>,
}

/// A signal: its name, whether higher is worse, the floor on its spread, its value for a slot
/// (`None` when the slot has no such value), and the streams that value is of (the gate of
/// `min_streams_per_slot`).
struct Signal {
    name: &'static str,
    higher_is_worse: bool,
    floor: fn(median: f64) -> f64,
    value: fn(&SlotStats) -> Option<f64>,
    streams: fn(&SlotStats) -> u64,
}

const SIGNALS: [Signal; 3] = [
    Signal {
        name: "first_token_p95_ms",
        higher_is_worse: true,
        // 10% of the usual, at least 20 ms: jitter is not an anomaly.
        floor: |median| (median * 0.10).max(20.0),
        // A slot whose streams all failed before a first token has no first token: not 0 ms.
        value: |s| (s.ttft_ms.count() > 0).then(|| s.summary(None).first_token_p95_ms),
        // Streams with a first token, or one its client left waiting for past the critical
        // threshold (a lower bound, README, Security): a slot of an upstream so slow that every
        // client leaves is judged.
        streams: |s| s.ttft_ms.count(),
    },
    Signal {
        name: "tokens_per_second",
        higher_is_worse: false,
        floor: |median| (median * 0.10).max(1.0),
        // The figure the health check reads (`tokens_per_second_p50`).
        value: |s| (s.tps_count > 0).then(|| s.tokens_per_second_p50()),
        streams: |s| s.tps_count,
    },
    Signal {
        name: "error_rate",
        higher_is_worse: true,
        // An error rate of 0 has no spread: 2 percentage points is the least that counts.
        floor: |_| 2.0,
        value: |s| Some(s.summary(None).streaming_error_rate),
        // The error rate's own population: streams the client ended (`client_error`,
        // `cancelled`) are not in it.
        streams: |s| s.streaming_judged,
    },
];

/// A signal's value per complete slot (the last slot, still filling, is left out), `None` where
/// a slot has fewer than `min_streams` streams the value is of (`Signal::streams`): a client's
/// own cancels, which the error rate leaves out, can neither open a quiet slot to judgement
/// nor seed a baseline.
fn series(signal: &Signal, slots: &[SlotStats], min_streams: u64) -> Vec<Option<f64>> {
    let complete = &slots[..slots.len().saturating_sub(1)];
    complete
        .iter()
        .map(|s| {
            if (signal.streams)(s) >= min_streams {
                (signal.value)(s)
            } else {
                None
            }
        })
        .collect()
}

/// A provider's trends and capacity figure from its minutes (oldest first, the last one still
/// filling); its anomalies are added per model by [`anomalies`].
pub(crate) fn predict(minutes: &[SlotStats], first_token_warning_ms: f64) -> ProviderPrediction {
    let ttft = series(&SIGNALS[0], minutes, MIN_STREAMS_PER_MINUTE);
    let errors = series(&SIGNALS[2], minutes, MIN_STREAMS_PER_MINUTE);
    let in_flight_at_first_token_warning = minutes
        .iter()
        .zip(&ttft)
        .filter(|(_, p95)| p95.is_some_and(|p95| p95 > first_token_warning_ms))
        .map(|(minute, _)| minute.busy_secs / 60.0)
        .min_by(f64::total_cmp);
    ProviderPrediction {
        first_token_p95_trend: trend(&ttft),
        error_rate_trend: trend(&errors),
        anomalies: Vec::new(),
        in_flight_at_first_token_warning,
    }
}

/// One provider and model's signals judged on its slots (oldest first, the last one still
/// filling); `was` tells whether a signal was anomalous at the last judgement (hysteresis).
pub(crate) fn anomalies(
    model: &str,
    slots: &[SlotStats],
    settings: &AnomalyDetection,
    was: impl Fn(&str) -> bool,
) -> Vec<Anomaly> {
    SIGNALS
        .iter()
        .filter_map(|signal| {
            let values = series(signal, slots, settings.min_streams_per_slot);
            let mut a = anomaly(signal, &values, was(signal.name), settings)?;
            a.model = model.to_owned();
            a.slot_secs = settings.slot.secs();
            Some(a)
        })
        .collect()
}

/// The least-squares line through the points that have a value (x in minutes).
pub(crate) fn trend(values: &[Option<f64>]) -> Option<Trend> {
    let points: Vec<(f64, f64)> = values
        .iter()
        .enumerate()
        .filter_map(|(x, y)| y.map(|y| (x as f64, y)))
        .collect();
    let n = points.len();
    if n < 3 {
        return None;
    }
    let nf = n as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / nf;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / nf;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - mean_y).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let residual: f64 = points
        .iter()
        .map(|p| (p.1 - (mean_y + slope * (p.0 - mean_x))).powi(2))
        .sum();
    let stderr = (residual / (nf - 2.0) / sxx).sqrt();
    let r2 = if syy > 0.0 { 1.0 - residual / syy } else { 1.0 };
    Some(Trend {
        slope_per_minute: finite(slope),
        slope_stderr: finite(stderr),
        r2: finite(r2).clamp(0.0, 1.0),
        minutes: n,
    })
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// The last two complete slots against the slots before them: an anomaly when both are past
/// the raise score. One odd slot is noise (a p95 of a few dozen streams has a long tail); two
/// in a row are a change, caught a slot later. Once raised (`was`), it holds while the last
/// slot stays past the clear score.
fn anomaly(
    signal: &Signal,
    values: &[Option<f64>],
    was: bool,
    settings: &AnomalyDetection,
) -> Option<Anomaly> {
    let (last, before) = values.split_last()?;
    let (previous, before) = before.split_last()?;
    let value = (*last)?;
    let mut baseline: Vec<f64> = before.iter().flatten().copied().collect();
    if baseline.len() < settings.min_baseline_slots {
        return None;
    }
    baseline.sort_by(f64::total_cmp);
    let med = median(&baseline);
    let mut deviations: Vec<f64> = baseline.iter().map(|v| (v - med).abs()).collect();
    deviations.sort_by(f64::total_cmp);
    let spread = (1.4826 * median(&deviations)).max((signal.floor)(med));
    let direction = if signal.higher_is_worse { 1.0 } else { -1.0 };
    let score_of = |v: f64| finite(direction * (v - med) / spread);
    let score = score_of(value);
    let sustained = previous.is_some_and(|p| score_of(p) > settings.raise_score);
    Some(Anomaly {
        model: String::new(),
        signal: signal.name,
        value,
        baseline_median: med,
        baseline_spread: spread,
        score,
        anomalous: if was {
            score > settings.clear_score
        } else {
            score > settings.raise_score && sustained
        },
        baseline_slots: baseline.len(),
        slot_secs: settings.slot.secs(),
    })
}

fn finite(v: f64) -> f64 {
    if v.is_finite() { v } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: AnomalyDetection = AnomalyDetection {
        slot: AnomalySlot::OneMinute,
        min_streams_per_slot: 5,
        min_baseline_slots: 10,
        raise_score: 4.0,
        clear_score: 2.0,
        rollback: false,
    };

    #[test]
    fn a_line_has_its_slope_and_r2() {
        let values: Vec<Option<f64>> = (0..30).map(|x| Some(100.0 + 5.0 * x as f64)).collect();
        let t = trend(&values).unwrap();
        assert!((t.slope_per_minute - 5.0).abs() < 1e-9);
        assert!(t.slope_stderr < 1e-9);
        assert!((t.r2 - 1.0).abs() < 1e-9);
        // Gaps are skipped, not read as zeros.
        let mut gappy = values.clone();
        gappy[3] = None;
        gappy[10] = None;
        assert!((trend(&gappy).unwrap().slope_per_minute - 5.0).abs() < 1e-9);
        assert_eq!(trend(&[Some(1.0), None, Some(2.0)]), None);
    }

    #[test]
    fn noise_has_a_flat_slope_with_an_honest_error() {
        let values: Vec<Option<f64>> = (0..60)
            .map(|x| Some(if x % 2 == 0 { 300.0 } else { 320.0 }))
            .collect();
        let t = trend(&values).unwrap();
        assert!(
            t.slope_per_minute.abs() < 2.0 * t.slope_stderr + 1e-9,
            "{t:?}"
        );
        assert!(t.r2 < 0.1);
    }

    /// The baseline, then two minutes at `last` (an anomaly must hold two minutes).
    fn minutes(values: &[f64], last: f64) -> Vec<Option<f64>> {
        values
            .iter()
            .copied()
            .map(Some)
            .chain([Some(last), Some(last)])
            .collect()
    }

    #[test]
    fn a_doubled_first_token_is_an_anomaly_and_jitter_is_not() {
        let baseline: Vec<f64> = (0..30).map(|i| 300.0 + (i % 5) as f64 * 4.0).collect();
        let ttft = &SIGNALS[0];
        let a = anomaly(ttft, &minutes(&baseline, 600.0), false, &D).unwrap();
        assert!(a.anomalous && a.score > 4.0, "{a:?}");
        let a = anomaly(ttft, &minutes(&baseline, 320.0), false, &D).unwrap();
        assert!(!a.anomalous, "{a:?}");
        // Faster than usual is not an anomaly.
        assert!(
            !anomaly(ttft, &minutes(&baseline, 100.0), false, &D)
                .unwrap()
                .anomalous
        );
    }

    #[test]
    fn an_error_rate_of_zero_has_a_floor() {
        let zeros = vec![0.0; 30];
        let errors = &SIGNALS[2];
        assert!(
            !anomaly(errors, &minutes(&zeros, 1.5), false, &D)
                .unwrap()
                .anomalous
        );
        assert!(
            anomaly(errors, &minutes(&zeros, 20.0), false, &D)
                .unwrap()
                .anomalous
        );
        // Tokens/s: lower is worse.
        let tps = &SIGNALS[1];
        let steady = vec![60.0; 30];
        assert!(
            anomaly(tps, &minutes(&steady, 20.0), false, &D)
                .unwrap()
                .anomalous
        );
        assert!(
            !anomaly(tps, &minutes(&steady, 90.0), false, &D)
                .unwrap()
                .anomalous
        );
    }

    #[test]
    fn a_raised_anomaly_holds_until_the_score_falls_under_two() {
        let baseline: Vec<f64> = (0..30).map(|i| 300.0 + (i % 5) as f64 * 4.0).collect();
        let ttft = &SIGNALS[0];
        // 3 robust deviations: not enough to raise one, enough to keep one.
        let three = 300.0 + 8.0 + 3.0 * 30.0;
        assert!(
            !anomaly(ttft, &minutes(&baseline, three), false, &D)
                .unwrap()
                .anomalous
        );
        assert!(
            anomaly(ttft, &minutes(&baseline, three), true, &D)
                .unwrap()
                .anomalous
        );
        assert!(
            !anomaly(ttft, &minutes(&baseline, 310.0), true, &D)
                .unwrap()
                .anomalous
        );
    }

    /// A slot's streams the client ended (`cancelled`, `client_error`) do not open it to the
    /// error rate's judgement: one upstream error among them is no 100% error rate, nor are
    /// they alone a baseline of 0%. Their first-token lower bounds open it to the first
    /// token's.
    #[test]
    fn streams_the_client_ended_open_no_slot() {
        use crate::record::{Outcome, StreamRecord};
        let slot = |outcomes: &[Outcome]| {
            let mut s = SlotStats::default();
            for outcome in outcomes {
                let mut r = StreamRecord::new("openai", "gpt-4o", "/v1/chat", *outcome);
                r.streaming = true;
                s.add(&r, false);
            }
            s
        };
        let left = [Outcome::Cancelled; 4];
        let slots = [
            slot(&[&left[..], &[Outcome::RateLimited]].concat()),
            slot(&[Outcome::Cancelled, Outcome::ClientError, Outcome::Cancelled].repeat(2)),
            slot(&[
                Outcome::Ok,
                Outcome::Ok,
                Outcome::Ok,
                Outcome::Ok,
                Outcome::RateLimited,
            ]),
            // The last slot, still filling, is never judged.
            slot(&[]),
        ];
        assert_eq!(slots[0].streaming, 5);
        let errors = series(&SIGNALS[2], &slots, 5);
        assert_eq!(errors, [None, None, Some(20.0)]);
        // Streams every client left, each after waiting 6 s for its first token (a lower
        // bound): no error rate, but the first token's slot is judged.
        let mut left = SlotStats::default();
        for _ in 0..5 {
            let mut r = StreamRecord::new("openai", "gpt-4o", "/v1/chat", Outcome::Cancelled);
            r.streaming = true;
            r.time_to_first_token = Some(std::time::Duration::from_secs(6));
            r.first_token_lower_bound = true;
            left.add(&r, false);
        }
        let slots = [left, SlotStats::default()];
        assert_eq!(series(&SIGNALS[2], &slots, 5), [None]);
        let ttft = series(&SIGNALS[0], &slots, 5);
        assert!(ttft[0].is_some_and(|p95| p95 > 5_900.0), "{ttft:?}");
    }

    #[test]
    fn a_short_baseline_judges_nothing() {
        let ttft = &SIGNALS[0];
        assert!(anomaly(ttft, &minutes(&[300.0; 5], 900.0), false, &D).is_none());
        assert!(anomaly(ttft, &[Some(300.0), None], false, &D).is_none());
    }
}
