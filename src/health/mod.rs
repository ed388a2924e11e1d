//! Health: baselines, checks, rollback triggers and alerts (README, Health and rollback triggers).
//!
//! Health is judged over the 5-minute window. Each baseline gives a check (healthy within
//! `warning`, degraded past it, critical past `critical`; reversed when higher is better); each
//! rollback trigger watches the rate of some outcomes in a population of requests. A fired trigger
//! makes the status critical and `rollback: true`, and so do a budget and an anomaly made
//! rollback triggers; any other anomaly makes the status at least degraded. Every change of
//! status or trigger state emits one tracing event and calls the `on_alert` callback, once.

use std::fmt;
use std::sync::Mutex;

use serde::Serialize;

use crate::record::{Outcome, OutcomeMap, StreamRecord};
use crate::window::SlotStats;

/// Overall or per-check health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum HealthStatus {
    /// Fewer than `min_samples` requests in the window.
    Unknown,
    /// Within the warning thresholds.
    Healthy,
    /// Past a warning threshold; overall, also while an anomaly holds.
    Degraded,
    /// Past a critical threshold; overall, also while `rollback` is set (HTTP 503 on
    /// `/health`).
    Critical,
}

impl HealthStatus {
    /// Every status, from best known to worst.
    pub const ALL: [HealthStatus; 4] = [
        HealthStatus::Unknown,
        HealthStatus::Healthy,
        HealthStatus::Degraded,
        HealthStatus::Critical,
    ];

    /// `unknown`, `healthy`, `degraded` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Unknown => "unknown",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Critical => "critical",
        }
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Thresholds for one measured figure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Baseline {
    /// The figure aimed for.
    pub target: f64,
    /// Past this, the check is degraded.
    pub warning: f64,
    /// Past this, the check is critical.
    pub critical: f64,
    /// The unit, as shown in `/metrics`.
    pub unit: &'static str,
    /// Whether larger values are better (tokens per second): then "past" means below.
    #[serde(skip_serializing_if = "is_false")]
    pub higher_is_better: bool,
}

impl Baseline {
    /// The status `value` has against these thresholds.
    ///
    /// ```
    /// use tower_stream_monitor::health::{Baselines, HealthStatus};
    /// let b = Baselines::default();
    /// assert_eq!(b.streaming_first_token.status(1500.0), HealthStatus::Healthy);
    /// assert_eq!(b.streaming_first_token.status(2500.0), HealthStatus::Degraded);
    /// assert_eq!(b.streaming_tokens_per_second.status(5.0), HealthStatus::Critical);
    /// ```
    pub fn status(&self, value: f64) -> HealthStatus {
        let (past_warning, past_critical) = if self.higher_is_better {
            (value < self.warning, value < self.critical)
        } else {
            (value > self.warning, value > self.critical)
        };
        if past_critical {
            HealthStatus::Critical
        } else if past_warning {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        }
    }
}

/// The three default baselines, serialised under their `/metrics` names.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Baselines {
    /// P95 time to first token (ms). Default 1000 / 2000 / 5000.
    pub streaming_first_token: Baseline,
    /// The median stream's tokens per second, higher is better. Default 50 / 30 / 10.
    pub streaming_tokens_per_second: Baseline,
    /// Streaming error rate (%). Default 1 / 5 / 10.
    pub streaming_error_rate: Baseline,
}

impl Default for Baselines {
    fn default() -> Self {
        Self {
            streaming_first_token: Baseline {
                target: 1000.0,
                warning: 2000.0,
                critical: 5000.0,
                unit: "ms",
                higher_is_better: false,
            },
            streaming_tokens_per_second: Baseline {
                target: 50.0,
                warning: 30.0,
                critical: 10.0,
                unit: "tokens/s",
                higher_is_better: true,
            },
            streaming_error_rate: Baseline {
                target: 1.0,
                warning: 5.0,
                critical: 10.0,
                unit: "%",
                higher_is_better: false,
            },
        }
    }
}

/// A rollback trigger: fires when the rate of some outcomes in a population of requests passes
/// a threshold over the last 5 minutes, once the population holds `min_samples` requests.
///
/// ```
/// use tower_stream_monitor::{Outcome, health::RollbackTrigger};
/// // A "TTS failure > 30%" trigger: server errors and timeouts on one route.
/// let tts = RollbackTrigger::new("tts_failure_rate", [Outcome::ServerError, Outcome::Timeout], 30.0)
///     .route("/v1/tts");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackTrigger {
    name: String,
    outcomes: OutcomeMap<bool>,
    threshold_percent: f64,
    route: Option<String>,
    provider: Option<String>,
    streaming_only: bool,
}

impl RollbackTrigger {
    /// Fires when `outcomes` exceed `threshold_percent` of all requests.
    pub fn new(
        name: impl Into<String>,
        outcomes: impl IntoIterator<Item = Outcome>,
        threshold_percent: f64,
    ) -> Self {
        Self {
            name: name.into(),
            outcomes: {
                let mut hit = OutcomeMap::default();
                outcomes.into_iter().for_each(|o| hit[o] = true);
                hit
            },
            threshold_percent,
            route: None,
            provider: None,
            streaming_only: false,
        }
    }

    /// The built-in `auth_error_rate` trigger: auth errors > 5% of all requests.
    pub fn auth_error_rate() -> Self {
        Self::new("auth_error_rate", [Outcome::AuthError], 5.0)
    }

    /// The built-in `timeout_rate` trigger: timeouts > 10% of streaming requests.
    pub fn timeout_rate() -> Self {
        Self::new("timeout_rate", [Outcome::Timeout], 10.0).streaming_only()
    }

    /// Only requests on this route (as labelled) count.
    pub fn route(mut self, route: impl Into<String>) -> Self {
        self.route = Some(route.into());
        self
    }

    /// Only requests to this provider count.
    pub fn provider(mut self, provider: impl Into<String>) -> Self {
        self.provider = Some(provider.into());
        self
    }

    /// Only streaming requests count.
    pub fn streaming_only(mut self) -> Self {
        self.streaming_only = true;
        self
    }

    pub(crate) fn threshold_valid(&self) -> bool {
        (0.0..=100.0).contains(&self.threshold_percent)
    }

    /// The trigger's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl crate::window::RatePopulation for RollbackTrigger {
    /// Whether `record` belongs to the population this trigger watches, and is a hit.
    fn classify(&self, record: &StreamRecord) -> Option<bool> {
        // What a client alone causes never moves a trigger, neither way. The cheapest test
        // first: most requests are not streams, which a streaming trigger skips at once.
        let counts = (!self.streaming_only || record.streaming)
            && !record.outcome.is_client_caused()
            && !record.is_unrouted()
            && self.route.as_deref().is_none_or(|r| r == &*record.route)
            && self
                .provider
                .as_deref()
                .is_none_or(|p| p == &*record.provider);
        counts.then(|| self.outcomes[record.outcome])
    }

    fn by_kind_only(&self) -> bool {
        self.route.is_none() && self.provider.is_none()
    }
}

/// One baseline judged over the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// `streaming_first_token`, `streaming_tokens_per_second` or `streaming_error_rate`.
    pub name: &'static str,
    /// Always `5min`.
    pub window: &'static str,
    /// P95 first-token latency (ms), the median stream's tokens/s, or error rate (%).
    pub value: f64,
    /// The baseline.
    pub thresholds: Baseline,
    /// The check's status (`unknown` below `min_samples`).
    pub status: HealthStatus,
}

/// One rollback trigger judged over the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TriggerState {
    /// The trigger's name.
    pub name: String,
    /// Always `5min`.
    pub window: &'static str,
    /// The rate (%) of the watched outcomes.
    pub value: f64,
    /// Fires above this rate (%).
    pub threshold: f64,
    /// Requests in the watched population.
    pub samples: u64,
    /// Whether it fired (only once `samples` >= `min_samples`).
    pub fired: bool,
    /// The route filter, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The provider filter, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

/// A spend-rate budget (README, Cost): the last hour's spend, overall or of one provider,
/// route or user, against a limit in USD. Passing it is an alert (through `on_alert` and a
/// tracing WARN on target `tower_stream_monitor::health`), and so is falling back under it; it
/// moves `/health` only when made a rollback trigger with [`rollback`](Self::rollback).
///
/// Budgets are judged with health, with no timer of their own: on a record (the first of each
/// second) and on every read of `/health`, `/metrics` or `/metrics/prometheus`
/// ([`Monitor::health`](crate::Monitor::health), [`snapshot`](crate::Monitor::snapshot),
/// [`render_prometheus`](crate::Monitor::render_prometheus)). So a budget's clear, when its
/// rate falls back under the limit as spend slides out of the hour, is judged (and its alert
/// sent) on the next record or read after the rate falls.
///
/// ```
/// use tower_stream_monitor::Monitor;
/// use tower_stream_monitor::health::Budget;
///
/// let monitor = Monitor::builder()
///     .budget(Budget::per_hour("all", 50.0))
///     .budget(Budget::per_hour("anthropic", 20.0).provider("anthropic"))
///     .build()?;
/// # Ok::<(), tower_stream_monitor::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub(crate) name: String,
    pub(crate) usd_per_hour: f64,
    pub(crate) provider: Option<String>,
    pub(crate) route: Option<String>,
    pub(crate) user: Option<String>,
    pub(crate) rollback: bool,
}

impl Budget {
    /// A budget of `usd_per_hour` over the last hour of every priced LLM call.
    pub fn per_hour(name: impl Into<String>, usd_per_hour: f64) -> Self {
        Self {
            name: name.into(),
            usd_per_hour,
            provider: None,
            route: None,
            user: None,
            rollback: false,
        }
    }

    /// Only the calls on this route (as the `route` label shows it) count.
    pub fn route(mut self, route: impl Into<String>) -> Self {
        self.route = Some(route.into());
        self
    }

    /// Only the calls of this user id count: those the app names the user of (the
    /// [`UserId`](crate::UserId) request extension, or `user_id` on records it
    /// [`ingest`](crate::Monitor::ingest)s), never a user id a request header gave, which a
    /// client may set.
    pub fn user(mut self, user_id: impl Into<String>) -> Self {
        self.user = Some(user_id.into());
        self
    }

    /// Only the calls recorded under this provider count.
    pub fn provider(mut self, provider: impl Into<String>) -> Self {
        self.provider = Some(provider.into());
        self
    }

    /// Passing the budget also makes `/health` critical with `rollback: true`.
    pub fn rollback(mut self) -> Self {
        self.rollback = true;
        self
    }

    /// The budget's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether a record's cost counts against this budget.
    pub(crate) fn counts(&self, r: &StreamRecord) -> bool {
        self.provider.as_deref().is_none_or(|p| *r.provider == *p)
            && self.route.as_deref().is_none_or(|p| *r.route == *p)
            && self
                .user
                .as_deref()
                .is_none_or(|u| !r.user_id_from_header && r.user_id.as_deref() == Some(u))
    }

    pub(crate) fn valid(&self) -> bool {
        self.usd_per_hour.is_finite() && self.usd_per_hour > 0.0 && !self.name.is_empty()
    }
}

/// One budget judged over the last hour.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetState {
    /// The budget's name.
    pub name: String,
    /// Always `1hour`.
    pub window: &'static str,
    /// The spend of the last hour, in USD.
    pub spent_usd: f64,
    /// The limit, in USD per hour.
    pub usd_per_hour: f64,
    /// Whether the spend passed the limit.
    pub exceeded: bool,
    /// Whether passing it is a rollback trigger.
    pub rollback: bool,
    /// The provider filter, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The route filter, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The user filter, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl BudgetState {
    pub(crate) fn judge(budget: &Budget, spent_usd: f64) -> Self {
        Self {
            name: budget.name.clone(),
            window: "1hour",
            spent_usd,
            usd_per_hour: budget.usd_per_hour,
            exceeded: spent_usd > budget.usd_per_hour,
            rollback: budget.rollback,
            provider: budget.provider.clone(),
            route: budget.route.clone(),
            user: budget.user.clone(),
        }
    }
}

/// One provider and model's signal judged against its own recent past (README, Trends and
/// anomalies).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnomalyState {
    /// The provider.
    pub provider: String,
    /// The request model.
    pub model: String,
    /// `first_token_p95_ms`, `tokens_per_second` or `error_rate`.
    pub signal: &'static str,
    /// The last complete slot's value (a minute by default).
    pub value: f64,
    /// The baseline's median (the slots before).
    pub baseline_median: f64,
    /// Robust standard deviations in the bad direction.
    pub score: f64,
    /// Whether it is an anomaly (score past the raise score, 4 by default): health is then at
    /// least degraded.
    pub anomalous: bool,
    /// Whether an anomaly is a rollback trigger (`AnomalyDetection::rollback`; default no).
    pub rollback: bool,
}

impl AnomalyState {
    /// `provider:model:signal`, as alerts list it.
    pub fn name(&self) -> String {
        format!("{}:{}:{}", self.provider, self.model, self.signal)
    }
}

/// The body of `GET {prefix}/health`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    /// Critical when `rollback` is set; else the worst check, at least degraded while an
    /// anomaly holds. Unknown when no check has `min_samples` to judge and nothing else
    /// raised it.
    pub status: HealthStatus,
    /// The baseline checks.
    pub checks: Vec<Check>,
    /// The rollback triggers.
    pub triggers: Vec<TriggerState>,
    /// The spend budgets (README, Cost).
    pub budgets: Vec<BudgetState>,
    /// Each provider's signals against their baselines; an anomaly degrades health.
    pub anomalies: Vec<AnomalyState>,
    /// Whether a rollback trigger fired, a budget made one (`Budget::rollback`) was passed, or
    /// an anomaly made one (`AnomalyDetection::rollback(true)`) holds; the status is then
    /// critical.
    pub rollback: bool,
}

/// A change of health state, handed to `on_alert` once per change.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// The status before.
    pub previous: HealthStatus,
    /// The status now.
    pub status: HealthStatus,
    /// Names of the triggers firing now.
    pub fired: Vec<String>,
    /// Names of the budgets passed now.
    pub budgets_exceeded: Vec<String>,
    /// The anomalies now, as `provider:model:signal`.
    pub anomalies: Vec<String>,
    /// The report that showed the change.
    pub report: HealthReport,
}

/// A callback for health changes. Implemented for closures `Fn(&Alert)`.
pub trait OnAlert: Send + Sync + 'static {
    /// Called once per change of status or trigger state.
    fn on_alert(&self, alert: &Alert);
}

impl<F: Fn(&Alert) + Send + Sync + 'static> OnAlert for F {
    fn on_alert(&self, alert: &Alert) {
        self(alert)
    }
}

/// Judges the 5-minute window against the baselines and the triggers.
pub(crate) fn evaluate(
    baselines: &Baselines,
    triggers: &[RollbackTrigger],
    min_samples: u64,
    five: &SlotStats,
    trigger_totals: &[(u64, u64)],
    budgets: Vec<BudgetState>,
    anomalies: Vec<AnomalyState>,
) -> HealthReport {
    let summary = five.summary(None);
    let enough = five.streaming_judged >= min_samples;
    let check = |name, value: f64, judged: bool, b: &Baseline| Check {
        name,
        window: "5min",
        value,
        thresholds: *b,
        status: if judged {
            b.status(value)
        } else {
            HealthStatus::Unknown
        },
    };
    // The first token is judged on its own samples too: streams every client left waiting
    // past the critical threshold (their lower bounds, README, Security) show a hung upstream
    // even when no stream was judged otherwise.
    let first_tokens = five.ttft_ms.count();
    let checks = vec![
        check(
            "streaming_first_token",
            summary.first_token_p95_ms,
            first_tokens > 0 && (enough || first_tokens >= min_samples),
            &baselines.streaming_first_token,
        ),
        check(
            "streaming_tokens_per_second",
            summary.tokens_per_second_p50,
            enough && five.tps_count > 0,
            &baselines.streaming_tokens_per_second,
        ),
        check(
            "streaming_error_rate",
            summary.streaming_error_rate,
            enough,
            &baselines.streaming_error_rate,
        ),
    ];
    let triggers: Vec<TriggerState> = triggers
        .iter()
        .zip(trigger_totals)
        .map(|(t, &(samples, hits))| {
            let value = if samples > 0 {
                hits as f64 * 100.0 / samples as f64
            } else {
                0.0
            };
            TriggerState {
                name: t.name.clone(),
                window: "5min",
                value,
                threshold: t.threshold_percent,
                samples,
                fired: samples >= min_samples && value > t.threshold_percent,
                route: t.route.clone(),
                provider: t.provider.clone(),
            }
        })
        .collect();
    let rollback = triggers.iter().any(|t| t.fired)
        || budgets.iter().any(|b| b.exceeded && b.rollback)
        || anomalies.iter().any(|a| a.anomalous && a.rollback);
    let worst_check = checks
        .iter()
        .map(|c| c.status)
        .max()
        .unwrap_or(HealthStatus::Unknown);
    let status = if rollback {
        HealthStatus::Critical
    } else if anomalies.iter().any(|a| a.anomalous) {
        // An anomaly is a warning, not a rollback unless configured: a provider off its own
        // usual.
        worst_check.max(HealthStatus::Degraded)
    } else {
        worst_check
    };
    HealthReport {
        status,
        checks,
        triggers,
        budgets,
        anomalies,
        rollback,
    }
}

/// The state alerts compare with: status, fired triggers, passed budgets, anomalies.
type LastState = (HealthStatus, Vec<String>, Vec<String>, Vec<String>);

/// Remembers the last health state, to alert on changes only.
pub(crate) struct HealthTracker {
    last: Mutex<LastState>,
}

impl HealthTracker {
    pub(crate) fn new() -> Self {
        Self {
            last: Mutex::new((HealthStatus::Unknown, Vec::new(), Vec::new(), Vec::new())),
        }
    }

    /// Compares `report` with the last state; on a change logs one event and returns the alert.
    /// Its events have no parent span: they are the service's, not those of the request on
    /// whose path health was judged.
    pub(crate) fn observe(&self, report: &HealthReport) -> Option<Alert> {
        let fired: Vec<String> = report
            .triggers
            .iter()
            .filter(|t| t.fired)
            .map(|t| t.name.clone())
            .collect();
        let exceeded: Vec<String> = report
            .budgets
            .iter()
            .filter(|b| b.exceeded)
            .map(|b| b.name.clone())
            .collect();
        let anomalies: Vec<String> = report
            .anomalies
            .iter()
            .filter(|a| a.anomalous)
            .map(AnomalyState::name)
            .collect();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.0 == report.status && last.1 == fired && last.2 == exceeded && last.3 == anomalies {
            return None;
        }
        let (previous, was_fired, was_exceeded, was_anomalous) = std::mem::replace(
            &mut *last,
            (
                report.status,
                fired.clone(),
                exceeded.clone(),
                anomalies.clone(),
            ),
        );
        drop(last);
        for anomaly in report.anomalies.iter().filter(|a| a.anomalous) {
            let name = anomaly.name();
            if !was_anomalous.contains(&name) {
                tracing::warn!(
                    target: crate::HEALTH_TARGET,
                    parent: None,
                    provider = %anomaly.provider,
                    model = %anomaly.model,
                    signal = anomaly.signal,
                    value = anomaly.value,
                    baseline = anomaly.baseline_median,
                    score = anomaly.score,
                    "anomaly"
                );
            }
        }
        for budget in &report.budgets {
            match (budget.exceeded, was_exceeded.contains(&budget.name)) {
                (true, false) => tracing::warn!(
                    target: crate::HEALTH_TARGET,
                    parent: None,
                    budget = %budget.name,
                    spent_usd = budget.spent_usd,
                    usd_per_hour = budget.usd_per_hour,
                    "spend budget exceeded"
                ),
                (false, true) => tracing::info!(
                    target: crate::HEALTH_TARGET,
                    parent: None,
                    budget = %budget.name,
                    spent_usd = budget.spent_usd,
                    usd_per_hour = budget.usd_per_hour,
                    "spend budget back under its limit"
                ),
                _ => {}
            }
        }
        let alert = Alert {
            previous,
            status: report.status,
            fired,
            budgets_exceeded: exceeded,
            anomalies,
            report: report.clone(),
        };
        if previous == alert.status && was_fired == alert.fired {
            // Only a budget or an anomaly changed: its own event above says so.
            return Some(alert);
        }
        let fired_list = alert.fired.join(",");
        match alert.status {
            HealthStatus::Critical => tracing::warn!(
                target: crate::HEALTH_TARGET,
                parent: None,
                previous = %previous,
                status = %alert.status,
                rollback = report.rollback,
                fired = %fired_list,
                "health critical"
            ),
            HealthStatus::Degraded => tracing::info!(
                target: crate::HEALTH_TARGET,
                parent: None,
                previous = %previous,
                status = %alert.status,
                "health degraded"
            ),
            _ => tracing::info!(
                target: crate::HEALTH_TARGET,
                parent: None,
                previous = %previous,
                status = %alert.status,
                "health recovered"
            ),
        }
        Some(alert)
    }
}
