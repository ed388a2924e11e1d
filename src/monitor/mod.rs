//! The [`Monitor`]: label resolution, the hand-over of finished records, and what it serves.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::errors::{ErrorLayer, ErrorPage, ErrorQuery, ErrorStore, ErrorSummary};
use crate::facade;
use crate::health::{HealthReport, HealthTracker};
use crate::in_flight::{InFlight, InFlightBy};
use crate::label::Label;
use crate::labels::{
    LabelInterner, LabelSource, SeriesBudget, is_valid_label, is_valid_trusted_label,
};
use crate::prometheus::{Format, PrometheusExposition, SeriesShard};
use crate::record::{Outcome, StreamRecord};
use crate::snapshot::{MetricsSnapshot, ProviderWindows};
use crate::system::SystemSampler;
use crate::window::{WindowStore, WindowTime};

mod builder;
mod recorder;

pub(crate) use builder::Config;
pub use builder::{ConfigError, MonitorBuilder, OnRecord, RequestLabeler};
pub(crate) use recorder::{Recorder, StreamSettings};

pub(crate) struct Shared {
    pub(crate) config: Config,
    /// With the Prometheus series and the spend of each thread shard beside its windows.
    windows: WindowStore<RecordShard>,
    errors: Arc<ErrorStore>,
    health: HealthTracker,
    /// The anomaly series last set through the `metrics` facade (README, Use).
    facade_anomalies: std::sync::Mutex<facade::AnomalySeries>,
    /// Window second of the last health evaluation done on the recording path.
    last_health_check: AtomicU64,
    window_time: WindowTime,
    /// The window second of the system clock, when that is the monitor's clock.
    system_secs: Option<crate::window::SystemSecs>,
    prometheus: PrometheusExposition,
    system: SystemSampler,
    /// Streams in progress per provider (known from the response on).
    in_flight: InFlight,
    providers: LabelInterner,
    models: LabelInterner,
    routes: LabelInterner,
    series: SeriesBudget,
    unrouted: AtomicU64,
    /// The window second the in-flight count was last sampled in.
    in_flight_sampled: AtomicU64,
    spend: crate::spend::Spend,
    budgets: crate::spend::BudgetMeter,
    /// Trends and anomalies per provider, worked out at most once a minute (their data is
    /// per minute): the minute they are for, and them.
    predictions: std::sync::Mutex<(u64, Arc<crate::predict::Predictions>)>,
    id_base: u64,
    /// Tells this monitor's price table from other monitors' in the per-thread price cache.
    prices_id: u64,
    unknown: Label,
    unmatched: Label,
    /// A response named its provider by `StreamLabels`: a request that ends before its
    /// response is then not recorded under a provider its headers name (README, Security).
    app_names_providers: std::sync::atomic::AtomicBool,
}

/// The model an LLM call is priced by: the one that answered, else the one asked for.
fn priced_as(record: &StreamRecord) -> Label {
    record.response_model.unwrap_or(record.model)
}

/// The price a thread looked up last, and for which monitor's table (see [`Monitor::cost`]).
struct LastPrice {
    prices_id: u64,
    model: Label,
    rates: Option<crate::cost::Rates>,
}

thread_local! {
    static LAST_PRICE: std::cell::RefCell<Option<LastPrice>> = const { std::cell::RefCell::new(None) };
}

/// What a record adds beside its thread's windows, under their lock (see
/// `WindowStore::record_with`): one lock per record for all three.
#[derive(Default)]
struct RecordShard {
    series: SeriesShard,
    spend: crate::spend::SpendShard,
}

/// A fresh id per monitor built: price tables are fixed once built, so the id and a model name
/// determine a price.
pub(crate) fn next_prices_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The in-process monitor: configuration, label state and the records of finished requests.
///
/// Cheap to clone (one `Arc`); nothing global is installed, so several monitors in one process
/// never interfere. `monitor.layer()` gives the tower layer that measures responses.
///
/// ```
/// use tower_stream_monitor::Monitor;
///
/// let monitor = Monitor::builder().prefix("/api/v1/monitoring").build()?;
/// let app: axum::Router = axum::Router::new()
///     .route("/", axum::routing::get(|| async { "hi" }))
///     .layer(monitor.layer());
/// # let _ = app;
/// # Ok::<(), tower_stream_monitor::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct Monitor {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor")
            .field("config", &self.shared.config)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl Monitor {
    /// A builder with every default.
    pub fn builder() -> MonitorBuilder {
        MonitorBuilder::default()
    }

    /// A monitor configured from the environment ([`MonitorBuilder::with_env`]).
    ///
    /// # Errors
    /// A [`ConfigError::InvalidVar`] naming the variable whose value cannot be used; a
    /// [`ConfigError::InvalidSetting`] with `setting` `MONITOR_PRICES` when the price file it
    /// names cannot be read or used (the reason names the file and the entry).
    pub fn from_env() -> Result<Monitor, ConfigError> {
        Self::builder().with_env()?.build()
    }

    /// The tracing-subscriber layer that records WARN and ERROR events into this monitor
    /// (layer 2). It filters per layer, so it works beside fmt, JSON or OpenTelemetry layers
    /// without changing what they see.
    ///
    /// ```
    /// use tracing_subscriber::layer::SubscriberExt;
    /// use tower_stream_monitor::Monitor;
    ///
    /// let monitor = Monitor::builder().build()?;
    /// let subscriber = tracing_subscriber::registry().with(monitor.error_layer());
    /// # let _ = subscriber;
    /// # Ok::<(), tower_stream_monitor::ConfigError>(())
    /// ```
    pub fn error_layer<S>(&self) -> impl tracing_subscriber::Layer<S> + Send + Sync + 'static
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        use tracing_subscriber::Layer as _;
        let c = &self.shared.config;
        ErrorLayer::new(
            self.shared.errors.clone(),
            c.clock.clone(),
            self.shared.window_time,
            c.max_error_field_bytes,
        )
        .with_filter(ErrorLayer::filter(self.shared.config.error_level))
    }

    /// Stored error records matching `query`, newest first, and how many matched in all.
    pub fn errors(&self, query: &ErrorQuery) -> ErrorPage {
        let (errors, total) = self.shared.errors.query(query);
        ErrorPage { errors, total }
    }

    /// Error totals, recent counts and per-callsite groups.
    pub fn error_summary(&self) -> ErrorSummary {
        self.shared.errors.summary(self.window_secs())
    }

    /// The endpoint prefix.
    pub fn prefix(&self) -> &str {
        &self.shared.config.prefix
    }

    /// The stream deadline, if any.
    pub fn stream_timeout(&self) -> Option<Duration> {
        self.shared.config.stream.stream_timeout
    }

    /// The idle timeout, if any.
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.shared.config.stream.idle_timeout
    }

    /// Requests started and not yet recorded.
    pub fn in_flight(&self) -> u64 {
        self.shared.in_flight.total(InFlightBy::Route).max(0) as u64
    }

    /// Requests recorded with `outcome` since the monitor was built.
    pub fn recorded(&self, outcome: Outcome) -> u64 {
        self.shared.windows.recorded()[outcome]
    }

    /// Label values folded into `other` by the cardinality caps (per label, and the budget of
    /// label combinations), over all labels.
    pub fn label_overflows(&self) -> u64 {
        self.shared.providers.overflowed()
            + self.shared.models.overflowed()
            + self.shared.routes.overflowed()
            + self.shared.series.overflowed()
    }

    /// Requests that matched no route (a router 404 or a 405) since the monitor was built:
    /// counted apart, see [`StreamRecord::is_unrouted`].
    pub fn unrouted(&self) -> u64 {
        self.shared.unrouted.load(Ordering::Relaxed)
    }

    pub(crate) fn config(&self) -> &Config {
        &self.shared.config
    }

    fn next_request_number(&self) -> u64 {
        self.shared.id_base.wrapping_add(request_number())
    }

    /// The `gen_ai.operation.name` of a request, `None` when it is no LLM call: the stream's
    /// format names it; else a stream, or a request the app named a provider for, is a `chat`
    /// (README, OpenTelemetry GenAI conventions).
    fn operation_name(
        &self,
        format: crate::parse::ProviderFormat,
        streaming: bool,
        provider: Label,
    ) -> Option<&'static str> {
        format.operation_name().or_else(|| {
            (streaming || !provider.is(self.shared.unknown))
                .then_some(crate::parse::DEFAULT_OPERATION_NAME)
        })
    }

    /// The provider label for `value` (see [`LabelInterner`]); `None` when a client's value
    /// is no valid label. A provider is at most 64 bytes from any source, which bounds the
    /// answers that list providers (README, Endpoints).
    fn provider_label(&self, value: &str, source: LabelSource) -> Option<Label> {
        let valid = is_valid_label(value);
        self.intern_label(&self.shared.providers, value, valid, source, "provider")
    }

    /// The model label for `value`.
    fn model_label(&self, value: &str, source: LabelSource) -> Option<Label> {
        let valid = match source {
            LabelSource::Trusted => is_valid_trusted_label(value),
            LabelSource::Header => is_valid_label(value),
        };
        self.intern_label(&self.shared.models, value, valid, source, "model")
    }

    fn route_label(&self, value: &str) -> Label {
        let valid = is_valid_trusted_label(value);
        self.intern_label(
            &self.shared.routes,
            value,
            valid,
            LabelSource::Trusted,
            "route",
        )
        .unwrap_or(self.shared.unmatched)
    }

    /// Interns a label value, `valid` as a label. A client's value that is not valid is
    /// `None` (the next source is asked); the app's or upstream's is folded into `other`,
    /// counted, as one past its budget is, so that it shows (README, Configuration).
    fn intern_label(
        &self,
        interner: &LabelInterner,
        value: &str,
        valid: bool,
        source: LabelSource,
        label: &'static str,
    ) -> Option<Label> {
        if let Some(shared) = valid.then(|| interner.intern(value, source)).flatten() {
            return Some(shared);
        }
        if !valid && source == LabelSource::Header {
            return None;
        }
        if self.facade_active() {
            facade::label_overflow(label);
        }
        self.shared.prometheus.label_overflow(label);
        Some(interner.fold())
    }

    /// Counts a request in flight. Returns whether the facade's gauge was raised, so that only
    /// then is it lowered (a recorder installed meanwhile must not see it go negative).
    #[inline]
    fn request_started(&self, route: Label) -> bool {
        let facade = self.facade_active();
        if facade {
            facade::in_flight(route, 1.0);
        }
        self.shared.in_flight.add(InFlightBy::Route, route, 1);
        facade
    }

    /// A response arrived from `provider` (an interned label): it is in flight for that
    /// provider until the request is recorded with `provider_in_flight` set.
    fn provider_started(&self, provider: Label) {
        self.shared.in_flight.add(InFlightBy::Provider, provider, 1);
    }

    /// Whether to emit to the `metrics` facade: as the app said, else while a recorder other
    /// than the no-op one is installed (globally, or locally on this thread).
    fn facade_active(&self) -> bool {
        self.shared
            .config
            .metrics_facade
            .unwrap_or_else(facade::recorder_installed)
    }

    pub(crate) fn now(&self) -> SystemTime {
        // The system clock read directly, not through the `Clock` object: once per record.
        match self.shared.system_secs {
            Some(_) => SystemTime::now(),
            None => self.shared.config.clock.now(),
        }
    }

    /// The window second now (monotonic; see [`Clock`](crate::window::Clock)). Inlined: it is
    /// read on every request's record, and a call costs as much as its body.
    #[inline(always)]
    pub(crate) fn window_secs(&self) -> u64 {
        match &self.shared.system_secs {
            Some(system) => system.secs(),
            None => self.shared.window_time.secs(&*self.shared.config.clock),
        }
    }

    /// The first request to end in each second samples how many are in flight, for the
    /// windows' peaks: one relaxed read per request of a line written once a second, and the
    /// in-flight shards summed once a second.
    fn sample_in_flight(&self, secs: u64, ended_in_flight: i64) {
        let last = &self.shared.in_flight_sampled;
        if last.load(Ordering::Relaxed) != secs && last.swap(secs, Ordering::Relaxed) != secs {
            let n = self.shared.in_flight.total(InFlightBy::Route) + ended_in_flight;
            self.shared.windows.note_in_flight(secs, n.max(0) as u64);
        }
    }

    /// The one hand-over point of a finished request: every started request reaches it once.
    /// `source` says whether a label came from a request header (see `max_label_sets`).
    /// `provider_in_flight`: whether [`Monitor::provider_started`] counted the record's provider.
    /// Inlined into the meter always, as `Recorder::record` is: the record is not moved again.
    #[inline(always)]
    fn record(
        &self,
        mut record: StreamRecord,
        facade_in_flight: bool,
        provider_in_flight: bool,
        source: LabelSource,
    ) {
        if facade_in_flight {
            facade::in_flight(record.route, -1.0);
        }
        let provider = provider_in_flight.then_some(record.provider);
        self.shared.in_flight.finished(record.route, provider);
        // By reference: the record is not copied once more on its way. The facade is emitted
        // to if it was when the request started (its in-flight gauge was): asked once, not
        // twice, per request.
        self.ingest_from(&mut record, source, 1, facade_in_flight);
    }

    /// Records a stream measured elsewhere (a job that is not an HTTP request, a replay): into
    /// the windows, the Prometheus endpoint, the `metrics` facade and `on_record`, as if the
    /// layer had measured it. Its `finished_at` is set from the monitor's clock; labels are taken
    /// as given by the per-label caps, but a label combination past the series budget
    /// (`max_label_sets`) is recorded as `other`, like any other. Usage figures are capped as
    /// the layer caps them, and a `tokens_per_second` that is not a positive number (0, NaN,
    /// infinite) is taken as none: the windows' tokens/s figures stay numbers.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_stream_monitor::{Monitor, Outcome, StreamRecord};
    ///
    /// let monitor = Monitor::builder().build()?;
    /// let mut record = StreamRecord::new("openai", "gpt-4o-mini", "batch-job", Outcome::Ok);
    /// record.streaming = true;
    /// record.time_to_first_token = Some(Duration::from_millis(420));
    /// record.output_tokens = 128;
    /// monitor.ingest(record);
    /// assert_eq!(monitor.snapshot().streaming_5min.total_tokens, 128);
    /// # Ok::<(), tower_stream_monitor::ConfigError>(())
    /// ```
    pub fn ingest(&self, mut record: StreamRecord) {
        record.clamp_usage();
        // The layer's rates are positive by construction (`StreamRecord::derived_rates`).
        record.tokens_per_second = record
            .tokens_per_second
            .filter(|t| t.is_finite() && *t > 0.0);
        self.ingest_from(&mut record, LabelSource::Trusted, 0, self.facade_active());
    }

    /// What `usage` cost on `model`, through this thread's last price: consecutive records
    /// mostly name the same model, and a hit skips the table's search (a string comparison at
    /// each level of it).
    fn cost(&self, model: Label, usage: &crate::cost::TokenUsage) -> Option<crate::cost::Cost> {
        LAST_PRICE.with(|last| {
            let mut last = last.borrow_mut();
            let hit = last
                .as_ref()
                .is_some_and(|l| l.prices_id == self.shared.prices_id && l.model == model);
            if !hit {
                *last = Some(LastPrice {
                    prices_id: self.shared.prices_id,
                    model,
                    rates: self.shared.config.prices.price(&model).map(|p| p.rates()),
                });
            }
            last.as_ref()?.rates.as_ref().map(|rates| rates.cost(usage))
        })
    }

    /// `record`'s usage figures are capped already (`StreamRecord::clamp_usage`): by `ingest`,
    /// and by the layer for a body it parsed, the only kind with any. `ended_in_flight`: 1 when
    /// the request was counted in flight until just now. `facade`: whether to emit to the
    /// `metrics` facade (see `facade_active`).
    fn ingest_from(
        &self,
        record: &mut StreamRecord,
        source: LabelSource,
        ended_in_flight: i64,
        facade: bool,
    ) {
        // The wall clock is read only where the time is shown: `on_record`, and the Prometheus
        // exemplar of a record with a trace id. Nothing else reads it, and the record ends here.
        if record.trace.is_some() || self.shared.config.on_record.is_some() {
            record.finished_at = self.now();
        }
        let excluded = &self.shared.config.gen_ai_excluded_routes;
        if !excluded.is_empty() && excluded.iter().any(|r| **r == *record.route) {
            record.operation_name = None;
        }
        let llm = record.operation_name.is_some();
        if llm {
            let usage = crate::cost::TokenUsage {
                input_tokens: record.input_tokens.unwrap_or(0),
                output_tokens: record.output_tokens,
                cache_read_input_tokens: record.cache_read_input_tokens.unwrap_or(0),
                cache_creation_input_tokens: record.cache_creation_input_tokens.unwrap_or(0),
                cache_creation_1h_input_tokens: record.cache_creation_1h_input_tokens.unwrap_or(0),
                reasoning_output_tokens: record.reasoning_output_tokens.unwrap_or(0),
            };
            // A call that used no token (refused before any) cost nothing, whatever its model.
            let used_nothing = record.output_tokens == 0 && record.input_tokens.is_none();
            record.cost = if used_nothing {
                Some(crate::cost::Cost::ZERO)
            } else {
                self.cost(priced_as(record), &usage)
            };
            record.cost_estimated = !used_nothing
                && record.cost.is_some()
                && (record.token_source == crate::parse::TokenSource::Counted
                    || record.input_tokens.is_none());
        }
        let secs = self.window_secs();
        self.sample_in_flight(secs, ended_in_flight);
        if record.is_unrouted() {
            // Counted apart: no labelled series, no window but its unrouted count, no health.
            self.shared.unrouted.fetch_add(1, Ordering::Relaxed);
            // Unrouted: the windows call no companion (no label set to record by).
            self.shared.windows.record_with(secs, record, false, |_| {});
            self.shared.prometheus.unrouted();
            if facade {
                facade::unrouted();
            }
            if let Some(cb) = &self.shared.config.on_record {
                builder::notify(&**cb, record);
            }
            return;
        }
        // A pair named by a request header takes room of its own in the windows.
        let from_header = source == LabelSource::Header;
        // Spend stays by the model priced, folded or not.
        let priced = priced_as(record);
        // Built once, for the budget and the series.
        let mut set = record.label_set();
        let admitted = self.shared.series.admit(&set, source);
        if !admitted {
            // Budgets name a provider or route as the app does: judged before the fold, as
            // spend is kept by the model priced.
            if llm {
                self.shared.budgets.record(secs, record);
            }
            record.fold_labels(self.shared.series.other());
            set = record.label_set();
            if facade {
                facade::label_overflow("series");
            }
            self.shared.prometheus.label_overflow("series");
        }
        if llm {
            self.shared
                .windows
                .record_with(secs, record, from_header, |shard| {
                    PrometheusExposition::record(&mut shard.series, record, &set);
                    self.shared.spend.record(&mut shard.spend, record, priced);
                });
            if admitted {
                self.shared.budgets.record(secs, record);
            }
        } else {
            self.shared
                .windows
                .record_with(secs, record, from_header, |shard| {
                    PrometheusExposition::record(&mut shard.series, record, &set)
                });
        }
        if facade {
            facade::emit(record);
        }
        #[cfg(feature = "otlp")]
        if let Some(exporter) = &self.shared.config.otlp {
            exporter.record(record);
        }
        // Once a second on the recording path (no thread of our own, not on every request):
        // re-judge health so alerts fire. Its cost is bounded by the shards and slots, not by
        // traffic or labels.
        let last = self.shared.last_health_check.load(Ordering::Relaxed);
        if last != secs
            && self
                .shared
                .last_health_check
                .compare_exchange(last, secs, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.health();
        }
        // Last: a panic in the app's callback leaves nothing of the record undone.
        if let Some(cb) = &self.shared.config.on_record {
            builder::notify(&**cb, record);
        }
    }

    /// Judges health now (5-minute window), alerting if the state changed.
    pub fn health(&self) -> HealthReport {
        let (five, triggers) = self.shared.windows.collect_health(self.window_secs());
        self.judge(&five, &triggers)
    }

    /// Health of the 5-minute window and trigger counts given, with the budgets and anomalies,
    /// alerting if the state changed.
    fn judge(&self, five: &crate::window::SlotStats, triggers: &[(u64, u64)]) -> HealthReport {
        let c = &self.shared.config;
        let report = crate::health::evaluate(
            &c.baselines,
            &c.triggers,
            c.min_samples,
            five,
            triggers,
            self.shared.budgets.judge(self.window_secs()),
            self.anomaly_states(),
        );
        self.observe_health(&report);
        report
    }

    fn observe_health(&self, report: &HealthReport) {
        if self.facade_active() {
            let mut anomalies = self
                .shared
                .facade_anomalies
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            facade::health(report, &mut anomalies);
        }
        // The service's alerts, judged on whichever request's path came first: logged with no
        // request's context (an error record of the health target names no request).
        crate::errors::scope::detached(|| {
            if let Some(alert) = self.shared.health.observe(report) {
                if let Some(cb) = &self.shared.config.on_alert {
                    cb.on_alert(&alert);
                }
            }
        });
    }

    /// The figures of `GET {prefix}/metrics`.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let c = &self.shared.config;
        let now = self.now();
        let collected = self.shared.windows.collect(self.window_secs());
        let in_flight = self.in_flight();
        let health = self.judge(&collected.five_minutes, &collected.triggers);
        let by_provider = self.shared.in_flight.by_label(InFlightBy::Provider);
        let provider_in_flight =
            |p: &Label| -> u64 { by_provider.get(p).map_or(0, |n| (*n).max(0) as u64) };
        let streaming_by_provider = collected
            .providers
            .iter()
            .map(|(p, (five, hour))| {
                let n = Some(provider_in_flight(p));
                (
                    p.to_string(),
                    ProviderWindows {
                        five_minutes: five.summary(n),
                        one_hour: hour.summary(n),
                    },
                )
            })
            .collect();
        let streaming_by_model = collected
            .models
            .iter()
            .filter(|(_, five)| five.streaming > 0)
            .map(|((p, m), five)| crate::snapshot::ModelWindow::new(p, m, &five.summary(None)))
            .collect();
        MetricsSnapshot {
            timestamp: crate::window::rfc3339(now).to_string(),
            uptime_seconds: self
                .shared
                .config
                .clock
                .monotonic()
                .saturating_sub(self.shared.window_time.mono_origin())
                .as_secs_f64(),
            baselines: c.baselines,
            streaming_5min: collected.five_minutes.summary(Some(in_flight)),
            streaming_1hour: collected.one_hour.summary(Some(in_flight)),
            streaming_by_provider,
            streaming_by_model,
            requests_5min: collected.five_minutes.requests(),
            current_system: self.shared.system.sample(),
            health_status: health.status,
            predictions: self.predictions(),
            spend: {
                let (unpriced_models, unpriced_requests) = self.shared.spend.unpriced();
                crate::snapshot::SpendSnapshot {
                    prices_taken: c.prices.taken().map(str::to_owned),
                    by_model: self
                        .shared
                        .spend
                        .by_model(|f| self.shared.windows.companions(&mut |shard| f(&shard.spend))),
                    top_users: self.shared.spend.top_users(|f| {
                        self.shared.windows.companions(&mut |shard| f(&shard.spend))
                    }),
                    unpriced_models,
                    unpriced_requests,
                }
            },
        }
    }

    /// Trends and anomalies per provider (README, Trends and anomalies): the `predictions` of
    /// `/metrics`. Trends and the capacity figure read the last hour's minutes; anomalies are
    /// judged on the hour's one-minute slots, or with `AnomalySlot::TenSeconds` on the
    /// 5-minute window's 10 s slots. Worked out at most once a slot (a minute by default,
    /// 10 s with `AnomalySlot::TenSeconds`).
    pub fn predictions(&self) -> Arc<crate::predict::Predictions> {
        let secs = self.window_secs();
        let settings = &self.shared.config.anomaly_detection;
        let slot = secs / settings.slot.secs();
        let mut cached = self
            .shared
            .predictions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if cached.0 != slot {
            let history = self
                .shared
                .windows
                .history(secs, Some(settings.slot.span()));
            let warning = self.shared.config.baselines.streaming_first_token.warning;
            let previous = cached.1.clone();
            let mut by_provider: crate::predict::Predictions = history
                .providers
                .iter()
                .map(|(p, minutes)| (p.to_string(), crate::predict::predict(minutes, warning)))
                .collect();
            for ((provider, model), slots) in &history.models {
                let was = |signal: &str| {
                    previous.get(&**provider).is_some_and(|p| {
                        p.anomalies.iter().any(|a| {
                            a.anomalous && a.signal == signal && a.model.as_str() == &**model
                        })
                    })
                };
                let judged = crate::predict::anomalies(model, slots, settings, was);
                if let Some(p) = by_provider.get_mut(&**provider) {
                    p.anomalies.extend(judged);
                }
            }
            *cached = (slot, Arc::new(by_provider));
        }
        cached.1.clone()
    }

    fn anomaly_states(&self) -> Vec<crate::health::AnomalyState> {
        self.predictions()
            .iter()
            .flat_map(|(provider, p)| {
                p.anomalies.iter().map(|a| crate::health::AnomalyState {
                    provider: provider.clone(),
                    model: a.model.clone(),
                    signal: a.signal,
                    value: a.value,
                    baseline_median: a.baseline_median,
                    score: a.score,
                    anomalous: a.anomalous,
                    rollback: self.shared.config.anomaly_detection.rollback,
                })
            })
            .collect()
    }

    /// The windows slot by slot, for charts: what `GET {prefix}/metrics/history` serves.
    pub fn history(&self) -> crate::snapshot::MetricsHistory {
        use crate::snapshot::{HistoryPoint, HistorySeries, MetricsHistory, ProviderHistoryPoint};
        use crate::window::SlotStats;
        let h = self.shared.windows.history(self.window_secs(), None);
        let start = |last_start: u64, secs: u64, n: usize, i: usize| {
            last_start.saturating_sub((n - 1 - i) as u64 * secs)
        };
        let points = |slots: &[SlotStats], last_start: u64, secs: u64| -> Vec<HistoryPoint> {
            slots
                .iter()
                .enumerate()
                .map(|(i, s)| HistoryPoint {
                    start_unix: start(last_start, secs, slots.len(), i),
                    streaming: s.summary(None),
                    requests: s.requests(),
                    avg_in_flight: s.busy_secs / secs as f64,
                    arrival_rate_per_second: (s.requests + s.unrouted) as f64 / secs as f64,
                    peak_in_flight: s.peak_in_flight,
                })
                .collect()
        };
        let provider_points = |providers: &std::collections::BTreeMap<Label, Vec<SlotStats>>,
                               last_start: u64,
                               secs: u64| {
            providers
                .iter()
                .map(|(p, slots)| {
                    let points = slots
                        .iter()
                        .enumerate()
                        // Only the figures a provider's point carries: not the whole summary.
                        .map(|(i, s)| ProviderHistoryPoint {
                            start_unix: start(last_start, secs, slots.len(), i),
                            requests_by_outcome: s.by_outcome,
                            total_streaming_requests: s.streaming,
                            first_token_p50_ms: s.first_token_ms(0.50),
                            first_token_p95_ms: s.first_token_ms(0.95),
                            first_token_p99_ms: s.first_token_ms(0.99),
                            avg_tokens_per_second: s.avg_tokens_per_second(),
                            time_per_output_token_p95_ms: s.time_per_output_token_ms(0.95),
                            cost_usd: s.cost_usd(),
                            avg_in_flight: s.busy_secs / secs as f64,
                        })
                        .collect();
                    (p.to_string(), points)
                })
                .collect()
        };
        MetricsHistory {
            five_minutes: HistorySeries {
                slot_seconds: 10,
                points: points(&h.five_minutes, h.last_starts.0, 10),
                by_provider: provider_points(&h.five_minutes_providers, h.last_starts.0, 10),
            },
            one_hour: HistorySeries {
                slot_seconds: 60,
                points: points(&h.one_hour, h.last_starts.1, 60),
                by_provider: provider_points(&h.providers, h.last_starts.1, 60),
            },
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of this monitor's metrics.
    pub fn render_prometheus(&self) -> String {
        self.render(Format::Text)
    }

    /// The OpenMetrics 1.0 exposition of this monitor's metrics: the same samples as
    /// [`render_prometheus`](Self::render_prometheus), and on the buckets of first token, time
    /// per output token and request duration an exemplar, the trace of the latest request that
    /// fell in each (README, Tracing). `/metrics/prometheus` serves it to a scraper that asks
    /// for it (`Accept: application/openmetrics-text`).
    pub fn render_openmetrics(&self) -> String {
        self.render(Format::OpenMetrics)
    }

    fn render(&self, format: Format) -> String {
        let in_flight = self.shared.in_flight.by_label(InFlightBy::Route);
        let health = self.health();
        let version = self.shared.config.service_version.as_deref();
        self.shared.prometheus.render(
            |f| {
                self.shared
                    .windows
                    .companions(&mut |shard| f(&shard.series))
            },
            &in_flight,
            &health,
            version,
            format,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    /// The wall clock stamps a record wherever its time is shown: `on_record` (with or without
    /// a trace), and the OpenMetrics exemplar of a record with a trace id.
    #[test]
    fn finished_at_is_stamped_where_shown() {
        use crate::window::ManualClock;
        use std::sync::Mutex;
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_250);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = seen.clone();
        let monitor = Monitor::builder()
            .clock(ManualClock::new(at))
            .on_record(move |r: &StreamRecord| kept.lock().unwrap().push(r.finished_at))
            .build()
            .unwrap();
        let mut plain = StreamRecord::new("openai", "gpt-4o-mini", "/v1/chat", Outcome::Ok);
        plain.operation_name = None;
        monitor.ingest(plain);
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut traced = StreamRecord::new("openai", "gpt-4o-mini", "/v1/chat", Outcome::Ok);
        traced.trace = crate::trace::TraceContext::from_traceparent(parent, None);
        traced.streaming = true;
        traced.time_to_first_token = Some(Duration::from_millis(300));
        monitor.ingest(traced);
        assert_eq!(*seen.lock().unwrap(), [at, at]);

        let monitor = Monitor::builder()
            .clock(ManualClock::new(at))
            .build()
            .unwrap();
        let mut traced = StreamRecord::new("openai", "gpt-4o-mini", "/v1/chat", Outcome::Ok);
        traced.trace = crate::trace::TraceContext::from_traceparent(parent, None);
        traced.streaming = true;
        traced.time_to_first_token = Some(Duration::from_millis(300));
        monitor.ingest(traced);
        let om = monitor.render_openmetrics();
        assert!(
            om.lines().any(
                |l| l.starts_with("gen_ai_server_time_to_first_token_seconds_bucket{")
                    && l.ends_with(" 0.3 1800000000.250")
            ),
            "{om}"
        );
    }

    #[test]
    fn env_defaults_to_sixty_seconds() {
        let m = Monitor::builder()
            .with_vars(vars(&[]))
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(m.stream_timeout(), Some(Duration::from_secs(60)));
    }

    /// A timeout chosen on the builder before `with_env` stands when the variable is unset;
    /// the variable, when set, overrides it.
    #[test]
    fn env_keeps_a_timeout_the_builder_chose() {
        let timeout = |builder: MonitorBuilder, env: &[(&str, &str)]| {
            builder
                .with_vars(vars(env))
                .unwrap()
                .build()
                .unwrap()
                .stream_timeout()
        };
        let ten = Duration::from_secs(10);
        assert_eq!(
            timeout(Monitor::builder().stream_timeout(ten), &[]),
            Some(ten)
        );
        assert_eq!(timeout(Monitor::builder().no_timeouts(), &[]), None);
        assert_eq!(
            timeout(
                Monitor::builder().stream_timeout(ten),
                &[("STREAMING_TIMEOUT", "5")]
            ),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            timeout(
                Monitor::builder().no_timeouts(),
                &[("STREAMING_TIMEOUT", "5")]
            ),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn env_values_apply() {
        let m = Monitor::builder()
            .with_vars(vars(&[
                ("STREAMING_TIMEOUT", "2.5"),
                ("MONITOR_PREFIX", "/api/v1/monitoring"),
                ("MONITOR_MIN_SAMPLES", "5"),
                ("MONITOR_TOKEN", "s3cret"),
            ]))
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(m.stream_timeout(), Some(Duration::from_millis(2500)));
        assert_eq!(m.prefix(), "/api/v1/monitoring");
        assert_eq!(m.config().min_samples, 5);
        assert_eq!(m.config().endpoint_token.as_deref(), Some("s3cret"));
        let off = Monitor::builder()
            .with_vars(vars(&[("STREAMING_TIMEOUT", "0")]))
            .unwrap();
        assert_eq!(off.build().unwrap().stream_timeout(), None);
    }

    #[test]
    fn bad_env_values_name_the_variable() {
        for (var, value) in [
            ("STREAMING_TIMEOUT", "abc"),
            ("STREAMING_TIMEOUT", "-1"),
            ("STREAMING_TIMEOUT", "NaN"),
            // Past the range, and under a nanosecond (no timeout it could mean).
            ("STREAMING_TIMEOUT", "2e9"),
            ("STREAMING_TIMEOUT", "1e-10"),
            ("MONITOR_PREFIX", "no-slash"),
            ("MONITOR_MIN_SAMPLES", "0"),
            ("MONITOR_TOKEN", "has space"),
        ] {
            let err = Monitor::builder()
                .with_vars(vars(&[(var, value)]))
                .unwrap_err();
            assert!(
                matches!(&err, ConfigError::InvalidVar { var: v, .. } if *v == var),
                "{err}"
            );
        }
    }

    /// A thread keeps the last price it looked up, but for one monitor only: the same model on
    /// another monitor is priced by that one's table, and a model of another name afresh.
    #[test]
    fn a_repeated_model_is_priced_by_each_monitors_own_table() {
        let monitor = |usd: u32| {
            let json =
                format!(r#"{{"models": {{"my-model": {{"input": {usd}, "output": {usd}}}}}}}"#);
            Monitor::builder()
                .metrics_facade(false)
                .prices(crate::cost::PriceTable::from_native_json(&json).unwrap())
                .build()
                .unwrap()
        };
        let (cheap, dear) = (monitor(1), monitor(3));
        // A million output tokens: the table's figure in USD.
        let call = |model: &str| {
            let mut r = StreamRecord::new("p", model, "/r", Outcome::Ok);
            r.operation_name = Some("chat");
            r.streaming = true;
            r.output_tokens = 1_000_000;
            r
        };
        cheap.ingest(call("my-model"));
        dear.ingest(call("my-model"));
        cheap.ingest(call("my-model"));
        cheap.ingest(call("another-model"));
        let cheap = cheap.snapshot().streaming_5min;
        assert!((cheap.cost_usd - 2.0).abs() < 1e-9, "{}", cheap.cost_usd);
        assert_eq!(cheap.unpriced_requests, 1);
        let dear = dear.snapshot().streaming_5min;
        assert!((dear.cost_usd - 3.0).abs() < 1e-9, "{}", dear.cost_usd);
    }

    #[test]
    fn monitor_prices_adds_a_file_over_the_built_in_table() {
        let excerpt = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/litellm-prices-excerpt.json"
        );
        let monitor = Monitor::builder()
            .with_vars(vars(&[("MONITOR_PRICES", excerpt)]))
            .unwrap()
            .build()
            .unwrap();
        let prices = &monitor.config().prices;
        // From the file and from the built-in table alike.
        assert!(prices.price("o4-mini-2025-04-16").is_some());
        assert!(prices.price("gpt-4.1-nano").is_some());

        let dir = std::env::temp_dir().join(format!("prices-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.json");
        std::fs::write(
            &bad,
            r#"{"gpt-x": {"input_cost_per_token": "cheap", "output_cost_per_token": 1e-6}}"#,
        )
        .unwrap();
        let err = Monitor::builder()
            .with_vars(vars(&[("MONITOR_PRICES", bad.to_str().unwrap())]))
            .unwrap_err();
        // The variant `from_env` documents: the file's error is the reason.
        assert!(
            matches!(
                &err,
                ConfigError::InvalidSetting { setting: "MONITOR_PRICES", reason }
                    if reason.contains("bad.json")
            ),
            "{err:?}"
        );
        let err = err.to_string();
        assert!(
            err.contains("MONITOR_PRICES") && err.contains("bad.json") && err.contains("gpt-x"),
            "{err}"
        );
        let missing = Monitor::builder()
            .with_vars(vars(&[("MONITOR_PRICES", "/nonexistent/prices.json")]))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("/nonexistent/prices.json"), "{missing}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_settings_are_errors() {
        assert!(Monitor::builder().prefix("/x/").build().is_err());
        assert!(Monitor::builder().label_cardinality(0).build().is_err());
        assert!(
            Monitor::builder()
                .stream_timeout(Duration::ZERO)
                .build()
                .is_err()
        );
        assert!(Monitor::builder().route_patterns(["nope"]).build().is_err());
        assert!(Monitor::builder().build().is_ok());
    }

    /// A trigger's name is its series' `trigger` label: two of one name, or an empty one, is a
    /// setting error, not two series of one name.
    #[test]
    fn trigger_names_are_labels_and_unique() {
        use crate::health::RollbackTrigger;
        let trigger = |name: &str| RollbackTrigger::new(name, [Outcome::ServerError], 30.0);
        let setting = |builder: MonitorBuilder| match builder.build() {
            Err(crate::ConfigError::InvalidSetting { setting, .. }) => Some(setting),
            _ => None,
        };
        let built_in_again = Monitor::builder().rollback_trigger(trigger("auth_error_rate"));
        assert_eq!(setting(built_in_again), Some("rollback_trigger"));
        let twice = Monitor::builder()
            .clear_rollback_triggers()
            .rollback_trigger(trigger("tts"))
            .rollback_trigger(trigger("tts"));
        assert_eq!(setting(twice), Some("rollback_trigger"));
        for name in ["", "line\nbreak", &"x".repeat(65)] {
            let bad = Monitor::builder().rollback_trigger(trigger(name));
            assert_eq!(setting(bad), Some("rollback_trigger"), "{name:?}");
        }
        let replaced = Monitor::builder()
            .clear_rollback_triggers()
            .rollback_trigger(trigger("auth_error_rate"));
        assert!(replaced.build().is_ok());
    }
}

/// Request numbers are handed to threads in blocks of this many, so numbering a request writes
/// no memory another core writes.
const REQUEST_NUMBER_BLOCK: u64 = 1024;

static NEXT_NUMBER_BLOCK: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's next request number and the end of its block.
    static REQUEST_NUMBERS: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// A number no other request in this process gets.
fn request_number() -> u64 {
    REQUEST_NUMBERS.with(|numbers| {
        let (next, end) = numbers.get();
        let next = if next < end {
            next
        } else {
            NEXT_NUMBER_BLOCK.fetch_add(REQUEST_NUMBER_BLOCK, Ordering::Relaxed)
        };
        let end = if next < end {
            end
        } else {
            next + REQUEST_NUMBER_BLOCK
        };
        numbers.set((next + 1, end));
        next
    })
}
