//! Settings: [`MonitorBuilder`], the environment, and [`ConfigError`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderName;
use http::request::Parts;

use super::recorder::{FirstTokenThresholds, StreamSettings};
use super::{Monitor, Shared};
use crate::errors::ErrorStore;
use crate::health::{Baselines, HealthTracker, OnAlert, RollbackTrigger};
use crate::label::Label;
use crate::labels::{LabelInterner, RoutePattern, SeriesBudget, StreamLabels};
use crate::parse::DEFAULT_MAX_EVENT_BYTES;
use crate::prometheus::PrometheusExposition;
use crate::record::StreamRecord;
use crate::system::SystemSampler;
use crate::window::{Clock, RatePopulation, SystemClock, SystemSecs, WindowStore, WindowTime};

/// Default prefix under which the monitoring endpoints are served.
pub(crate) const DEFAULT_PREFIX: &str = "/monitoring";
/// Default number of distinct values kept per label before new ones fold into `other`.
pub(crate) const DEFAULT_LABEL_CARDINALITY: usize = 64;
/// Default number of distinct provider and model values taken from request headers, apart
/// from [`DEFAULT_LABEL_CARDINALITY`].
pub(crate) const DEFAULT_HEADER_LABEL_CARDINALITY: usize = 16;
/// Default number of distinct (provider, model, route) combinations recorded before new ones
/// fold into `other`.
pub(crate) const DEFAULT_MAX_LABEL_SETS: usize = 256;
/// Default stream timeout of [`Monitor::from_env`] when `STREAMING_TIMEOUT` is unset and the
/// builder chose none (README, Configuration).
pub(crate) const DEFAULT_ENV_STREAM_TIMEOUT: Duration = Duration::from_secs(60);
/// Default minimum of requests in a window before health is judged.
pub(crate) const DEFAULT_MIN_SAMPLES: u64 = 20;
/// Default number of error records kept (the latest ones).
pub(crate) const DEFAULT_MAX_ERROR_RECORDS: usize = 1000;
/// Default number of error groups (callsites) kept; later callsites count into `other`.
pub(crate) const DEFAULT_MAX_ERROR_GROUPS: usize = 1000;
/// Default number of users whose spend is kept (the heaviest).
pub(crate) const DEFAULT_TOP_USERS: usize = 20;
/// Default cap on each stored message and field value (bytes).
pub(crate) const DEFAULT_MAX_ERROR_FIELD_BYTES: usize = 1024;

/// A callback run once for every finished request, with its record.
///
/// Implemented for closures `Fn(&StreamRecord)`; keep it quick, it runs on the request's task.
/// It runs last, once the record is in the windows, the exposition, the `metrics` facade and
/// the OTLP export, so a panic in it loses no count. That panic goes on to the caller (the request's task), except while another panic
/// unwinds (a handler or body that panicked, its request recorded as `server_error` as the
/// stack unwinds): then it is caught and dropped, as a second panic escaping there would
/// abort the process.
pub trait OnRecord: Send + Sync + 'static {
    /// Called once per request when it ends.
    fn on_record(&self, record: &StreamRecord);
}

/// Runs `callback` for `record`. While a panic unwinds, the callback's own panic is caught:
/// escaping a drop during unwinding, it would abort the process (see [`OnRecord`]).
#[inline]
pub(crate) fn notify(callback: &dyn OnRecord, record: &StreamRecord) {
    if std::thread::panicking() {
        notify_unwinding(callback, record);
    } else {
        callback.on_record(record);
    }
}

#[cold]
#[inline(never)]
fn notify_unwinding(callback: &dyn OnRecord, record: &StreamRecord) {
    // The hook has reported the panic; what the callback did before it stays done.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback.on_record(record)));
}

impl<F> OnRecord for F
where
    F: Fn(&StreamRecord) + Send + Sync + 'static,
{
    fn on_record(&self, record: &StreamRecord) {
        self(record)
    }
}

/// Labels derived from the request alone, for apps whose provider follows from the path or a
/// header of their own. Implemented for closures `Fn(&http::request::Parts) -> StreamLabels`.
pub trait RequestLabeler: Send + Sync + 'static {
    /// The labels for a request; empty fields fall through to the next source.
    fn labels(&self, request: &Parts) -> StreamLabels;
}

impl<F> RequestLabeler for F
where
    F: Fn(&Parts) -> StreamLabels + Send + Sync + 'static,
{
    fn labels(&self, request: &Parts) -> StreamLabels {
        self(request)
    }
}

/// An invalid setting, from the builder or from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// An environment variable held a value that cannot be used.
    InvalidVar {
        /// The variable's name.
        var: &'static str,
        /// Its value (cut to 64 characters; `<redacted>` for `MONITOR_TOKEN`).
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A builder setting cannot be used.
    InvalidSetting {
        /// The builder method; `MONITOR_PRICES` for the price file
        /// [`with_env`](MonitorBuilder::with_env) reads.
        setting: &'static str,
        /// Why.
        reason: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::InvalidVar {
                var,
                value,
                expected,
            } => {
                write!(
                    f,
                    "invalid environment variable {var}={value:?}: expected {expected}"
                )
            }
            ConfigError::InvalidSetting { setting, reason } => {
                write!(f, "invalid {setting}: {reason}")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) prefix: String,
    /// What the stream layer measures with: all it reads of the settings.
    pub(crate) stream: StreamSettings,
    pub(crate) service_version: Option<String>,
    pub(crate) gen_ai_excluded_routes: Vec<String>,
    pub(crate) prices: crate::cost::PriceTable,
    pub(crate) top_users: usize,
    pub(crate) budgets: Vec<crate::health::Budget>,
    pub(crate) anomaly_detection: crate::predict::AnomalyDetection,
    #[cfg(feature = "otlp")]
    pub(crate) otlp: Option<crate::otlp::OtlpExporter>,
    pub(crate) label_cardinality: usize,
    pub(crate) header_label_cardinality: usize,
    pub(crate) max_label_sets: usize,
    pub(crate) endpoint_token: Option<String>,
    pub(crate) serve_endpoints: bool,
    pub(crate) min_samples: u64,
    pub(crate) on_record: Option<Arc<dyn OnRecord>>,
    pub(crate) baselines: Baselines,
    pub(crate) triggers: Vec<RollbackTrigger>,
    pub(crate) on_alert: Option<Arc<dyn OnAlert>>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Whether `clock` is the default [`SystemClock`]: the window second is then read faster
    /// (see [`SystemSecs`](crate::window::SystemSecs)).
    pub(crate) system_clock: bool,
    /// `None` (the default): emit while a recorder other than `metrics`' no-op one is current;
    /// `Some(enabled)`: as the app said.
    pub(crate) metrics_facade: Option<bool>,
    pub(crate) error_level: tracing::Level,
    pub(crate) max_error_records: usize,
    pub(crate) max_error_groups: usize,
    pub(crate) max_error_field_bytes: usize,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("prefix", &self.prefix)
            .field("stream_timeout", &self.stream.stream_timeout)
            .field("idle_timeout", &self.stream.idle_timeout)
            .field("provider_header", &self.stream.provider_header)
            .field("model_header", &self.stream.model_header)
            .field("user_id_header", &self.stream.user_id_header)
            .field("request_id_header", &self.stream.request_id_header)
            .field("route_patterns", &self.stream.route_patterns.len())
            .field("streaming_routes", &self.stream.streaming_routes)
            .field("gen_ai_excluded_routes", &self.gen_ai_excluded_routes)
            .field("prices", &self.prices.len())
            .field("top_users", &self.top_users)
            .field("budgets", &self.budgets)
            .field("anomaly_detection", &self.anomaly_detection)
            .field("label_cardinality", &self.label_cardinality)
            .field("header_label_cardinality", &self.header_label_cardinality)
            .field("max_label_sets", &self.max_label_sets)
            .field("max_event_bytes", &self.stream.max_event_bytes)
            .field(
                "endpoint_token",
                &self.endpoint_token.as_ref().map(|_| "<redacted>"),
            )
            .field("min_samples", &self.min_samples)
            .field("baselines", &self.baselines)
            .field("triggers", &self.triggers)
            .finish_non_exhaustive()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
            service_version: None,
            stream: StreamSettings {
                stream_timeout: None,
                idle_timeout: None,
                provider_header: Some(HeaderName::from_static("x-llm-provider")),
                model_header: Some(HeaderName::from_static("x-llm-model")),
                user_id_header: Some(HeaderName::from_static("x-user-id")),
                request_id_header: Some(HeaderName::from_static("x-request-id")),
                labeler: None,
                route_patterns: Vec::new(),
                streaming_routes: Vec::new(),
                max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
                first_token: FirstTokenThresholds::from_baselines(&Baselines::default()),
            },
            gen_ai_excluded_routes: Vec::new(),
            prices: crate::cost::PriceTable::builtin(),
            top_users: DEFAULT_TOP_USERS,
            budgets: Vec::new(),
            anomaly_detection: crate::predict::AnomalyDetection::default(),
            #[cfg(feature = "otlp")]
            otlp: None,
            label_cardinality: DEFAULT_LABEL_CARDINALITY,
            header_label_cardinality: DEFAULT_HEADER_LABEL_CARDINALITY,
            max_label_sets: DEFAULT_MAX_LABEL_SETS,
            endpoint_token: None,
            serve_endpoints: true,
            min_samples: DEFAULT_MIN_SAMPLES,
            on_record: None,
            baselines: Baselines::default(),
            triggers: vec![
                RollbackTrigger::auth_error_rate(),
                RollbackTrigger::timeout_rate(),
            ],
            on_alert: None,
            clock: Arc::new(SystemClock),
            system_clock: true,
            metrics_facade: None,
            error_level: tracing::Level::WARN,
            max_error_records: DEFAULT_MAX_ERROR_RECORDS,
            max_error_groups: DEFAULT_MAX_ERROR_GROUPS,
            max_error_field_bytes: DEFAULT_MAX_ERROR_FIELD_BYTES,
        }
    }
}

/// Builds a [`Monitor`]. Every setting has a default; see each method.
///
/// ```
/// use std::time::Duration;
/// use tower_stream_monitor::Monitor;
///
/// let monitor = Monitor::builder()
///     .prefix("/api/v1/monitoring")
///     .stream_timeout(Duration::from_secs(60))
///     .idle_timeout(Duration::from_secs(20))
///     .route_patterns(["/v1/chat/completions"])
///     .build()?;
/// # Ok::<(), tower_stream_monitor::ConfigError>(())
/// ```
#[derive(Debug, Default)]
#[must_use]
pub struct MonitorBuilder {
    config: Config,
    errors: Vec<ConfigError>,
    /// [`stream_timeout`](Self::stream_timeout) or [`no_timeouts`](Self::no_timeouts) was
    /// called: [`with_env`](Self::with_env) keeps that choice when `STREAMING_TIMEOUT` is unset.
    timeout_chosen: bool,
}

impl MonitorBuilder {
    /// Where the monitoring endpoints are served. Default `/monitoring`. Must start with `/`
    /// and not end with one.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.prefix = prefix.into();
        self
    }

    /// The app's version, as the label `service_version` on every series of the Prometheus
    /// exposition, so fleet rules can compare a canary with the stable version. Default: none
    /// (no such label); [`Monitor::from_env`] reads `MONITOR_SERVICE_VERSION`. A label value:
    /// 1 to 64 bytes of printable ASCII.
    pub fn service_version(mut self, version: impl Into<String>) -> Self {
        self.config.service_version = Some(version.into());
        self
    }

    /// Total deadline for a request, from the service call to the end of its response body,
    /// counting the time the request waits for its source, never the client's (README,
    /// Security): once the request's body ended, the time the handler waited for the client's
    /// bytes moves it later. Default: none (60 s with [`Monitor::from_env`]).
    ///
    /// - Before the response: answered 504 and recorded as `timeout`; but 408 and
    ///   `client_error` while the handler waits for the rest of the request's body (an axum
    ///   request body that has not come).
    /// - After it: the body ends at its first wait for its next frame past the deadline,
    ///   recorded as `timeout` and logged at ERROR (or `client_error`, at INFO, if it waits for
    ///   the client's upload): with a final SSE `event: error` for `text/event-stream`, else
    ///   with a `stream::StreamTimeoutError`. Frames ready whenever they are asked for are handed on
    ///   past it however late a slow reader asks, and a body that ends on its own is `ok`: a
    ///   body that never waits is never cut. The reader's time (from a frame that ended a wait
    ///   to the next wait) moves the deadline later by as much.
    ///
    /// One tokio sleep per request wakes a waiting handler or body at the deadline, armed only
    /// once one of them first waits: a response whose frames are all ready when polled arms
    /// none. It needs Tokio's timer (a runtime with time enabled) where the request runs and
    /// its body is polled. Where there is none (a runtime built without `enable_time`, where
    /// tokio panics when asked for one and the layer catches that, or no runtime at all), the
    /// layer serves the request without the deadline (and the idle timeout) and says so in a
    /// WARN event, once per thread. A thread that met a runtime without a timer does not ask
    /// tokio again for its life (its next runtime, if it has a timer, keeps no timeout there):
    /// build every runtime that serves requests with `enable_time`. A body polled on after the runtime that armed its deadline shut down takes a
    /// timer from the runtime it is polled in.
    pub fn stream_timeout(mut self, timeout: Duration) -> Self {
        self.config.stream.stream_timeout = Some(timeout);
        self.timeout_chosen = true;
        self
    }

    /// Longest a body may wait for its next frame after the response headers: a wait begins
    /// when the body finds nothing ready, so the reader's time is never counted. Default: none.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.stream.idle_timeout = Some(timeout);
        self
    }

    /// Removes any stream or idle timeout.
    pub fn no_timeouts(mut self) -> Self {
        self.config.stream.stream_timeout = None;
        self.config.stream.idle_timeout = None;
        self.timeout_chosen = true;
        self
    }

    /// Request header naming the provider when neither the handler's [`StreamLabels`] nor the
    /// [`request_labels`](Self::request_labels) closure names one. Default `x-llm-provider`;
    /// `None` disables it. Its values are 1 to 64 bytes of printable ASCII (others are
    /// ignored) and have a budget of their own (README, Security).
    pub fn provider_header(mut self, header: Option<HeaderName>) -> Self {
        self.config.stream.provider_header = header;
        self
    }

    /// Request header naming the model. Default `x-llm-model`; `None` disables it.
    pub fn model_header(mut self, header: Option<HeaderName>) -> Self {
        self.config.stream.model_header = header;
        self
    }

    /// Request header carrying the user id, when the app sets no [`UserId`](crate::UserId)
    /// request extension (which comes first). Default `x-user-id`. A client may set it: a user
    /// id it gives is shown but counts in no user's budget
    /// ([`Budget::user`](crate::health::Budget::user)).
    pub fn user_id_header(mut self, header: Option<HeaderName>) -> Self {
        self.config.stream.user_id_header = header;
        self
    }

    /// Request header carrying the caller's request id (else one is generated). Default `x-request-id`.
    pub fn request_id_header(mut self, header: Option<HeaderName>) -> Self {
        self.config.stream.request_id_header = header;
        self
    }

    /// Labels from the request, consulted after the response's [`StreamLabels`] and before the
    /// provider and model headers. A provider named here is the app's: the headers are then not
    /// read, so a client cannot move this provider's requests to another (README, Security).
    ///
    /// ```
    /// use tower_stream_monitor::{Monitor, StreamLabels};
    /// let monitor = Monitor::builder()
    ///     .request_labels(|parts: &http::request::Parts| {
    ///         if parts.uri.path().starts_with("/v1/messages") {
    ///             StreamLabels::new("anthropic")
    ///         } else {
    ///             StreamLabels::default()
    ///         }
    ///     })
    ///     .build()
    ///     .unwrap();
    /// ```
    pub fn request_labels(mut self, labeler: impl RequestLabeler) -> Self {
        self.config.stream.labeler = Some(Arc::new(labeler));
        self
    }

    /// Route patterns used for the `route` label when axum's `MatchedPath` is absent
    /// (`/v1/chat/completions`, `/v1beta/models/{model}:streamGenerateContent`, `/files/{*rest}`).
    /// A path matching none is labelled `unmatched`: the raw path never becomes a label.
    pub fn route_patterns<I, S>(mut self, patterns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for p in patterns {
            match RoutePattern::parse(p.as_ref()) {
                Ok(p) => self.config.stream.route_patterns.push(p),
                Err(reason) => self.errors.push(ConfigError::InvalidSetting {
                    setting: "route_patterns",
                    reason,
                }),
            }
        }
        self
    }

    /// Routes (as they appear in the `route` label) whose requests count as streaming even when
    /// the response is not a stream content type.
    pub fn streaming_routes<I, S>(mut self, routes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config
            .stream
            .streaming_routes
            .extend(routes.into_iter().map(Into::into));
        self
    }

    /// Routes (as they appear in the `route` label) whose requests are not LLM calls, whatever
    /// they answer: they are counted in the `stream_monitor_*` series, the windows and health
    /// as any request, but stay out of the OpenTelemetry `gen_ai_*` series (a proxied health
    /// check that streams, a replay endpoint). Default: none. Requests no provider was named for
    /// and that did not stream are left out of `gen_ai_*` without being listed here.
    ///
    /// ```
    /// use tower_stream_monitor::Monitor;
    /// let monitor = Monitor::builder().exclude_gen_ai_routes(["/v1/replay"]).build()?;
    /// # Ok::<(), tower_stream_monitor::ConfigError>(())
    /// ```
    pub fn exclude_gen_ai_routes<I, S>(mut self, routes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config
            .gen_ai_excluded_routes
            .extend(routes.into_iter().map(Into::into));
        self
    }

    /// Pushes the OpenTelemetry GenAI metrics of every LLM call this monitor records to a
    /// collector over OTLP/HTTP (feature `otlp`; README, Tracing and OTLP). Default: none.
    #[cfg(feature = "otlp")]
    #[cfg_attr(docsrs, doc(cfg(feature = "otlp")))]
    pub fn otlp(mut self, exporter: crate::otlp::OtlpExporter) -> Self {
        self.config.otlp = Some(exporter);
        self
    }

    /// The prices requests are costed with (README, Cost). Default: the built-in table
    /// ([`PriceTable::builtin`](crate::cost::PriceTable::builtin)); to add to it rather than
    /// replace it, pass `PriceTable::builtin().merged(yours)`. [`Monitor::from_env`] merges the
    /// file `MONITOR_PRICES` names over the built-in table.
    pub fn prices(mut self, prices: crate::cost::PriceTable) -> Self {
        self.config.prices = prices;
        self
    }

    /// Users whose spend `/metrics` lists (`top_users`), the heaviest first. Default 20; 0 keeps
    /// none. Memory is bounded by it whatever the number of users (README, Cost).
    pub fn top_users(mut self, n: usize) -> Self {
        self.config.top_users = n;
        self
    }

    /// How anomalies are judged: the slot length, the streams a slot needs, the baseline slots
    /// needed, the raise and clear scores (defaults: one minute, 5, 10, 4 and 2; README, Trends
    /// and anomalies). `build` fails with [`ConfigError::InvalidSetting`] on settings it cannot
    /// use.
    pub fn anomaly_detection(mut self, settings: crate::predict::AnomalyDetection) -> Self {
        self.config.anomaly_detection = settings;
        self
    }

    /// Adds a spend-rate budget: an alert (through `on_alert` and a tracing event, as health
    /// changes) when the last hour's spend passes it, and again when it no longer does.
    /// Default: none.
    pub fn budget(mut self, budget: crate::health::Budget) -> Self {
        self.config.budgets.push(budget);
        self
    }

    /// Distinct values kept per label (provider, model, route) from the application and the
    /// upstream: the handler's [`StreamLabels`], the `request_labels` closure, routes, the model
    /// a stream reports. Later values become `other`. Default 64.
    pub fn label_cardinality(mut self, cap: usize) -> Self {
        self.config.label_cardinality = cap;
        self
    }

    /// Distinct provider and model values taken from request headers (`provider_header`,
    /// `model_header`), a budget apart from [`label_cardinality`](Self::label_cardinality): a
    /// client choosing header values can spend only this one, never push a provider or model
    /// the app names into `other`. A header naming a value the app already uses gets that
    /// value. Default 16; `0` takes no new value from headers.
    pub fn header_label_cardinality(mut self, cap: usize) -> Self {
        self.config.header_label_cardinality = cap;
        self
    }

    /// Distinct label sets recorded (provider, model, route, operation and response model);
    /// later sets are recorded as `other`/`other`/`other` and counted in
    /// `stream_monitor_label_overflow_total{label="series"}`.
    /// Each combination is one set of Prometheus series, so this bounds the memory of the
    /// windows and the exposition and the time a scrape takes. Default 256.
    pub fn max_label_sets(mut self, cap: usize) -> Self {
        self.config.max_label_sets = cap;
        self
    }

    /// Largest SSE event or NDJSON line buffered for parsing; larger ones are skipped and
    /// counted. Default 1 MiB.
    pub fn max_event_bytes(mut self, bytes: usize) -> Self {
        self.config.stream.max_event_bytes = bytes;
        self
    }

    /// Demands `Authorization: Bearer <token>` on the monitoring endpoints: all but the
    /// `/dashboard` page, which carries no data, and `/health`, which answers without it with
    /// statuses and rates only. Default: none.
    pub fn endpoint_token(mut self, token: impl Into<String>) -> Self {
        self.config.endpoint_token = Some(token.into());
        self
    }

    /// Whether the stream layer answers the monitoring endpoints under its prefix. Default
    /// `true`. With `false`, requests under the prefix pass through to the app (unmeasured),
    /// which mounts [`Monitor::endpoints`] where it wants them: behind its own auth, or on a
    /// separate port.
    pub fn serve_endpoints(mut self, serve: bool) -> Self {
        self.config.serve_endpoints = serve;
        self
    }

    /// Requests a window must hold before health is judged. Default 20.
    pub fn min_samples(mut self, n: u64) -> Self {
        self.config.min_samples = n;
        self
    }

    /// Runs `callback` once for every finished request.
    ///
    /// ```
    /// use tower_stream_monitor::{Monitor, StreamRecord};
    /// let monitor = Monitor::builder()
    ///     .on_record(|r: &StreamRecord| println!("{} {} {:?}", r.provider, r.outcome, r.time_to_first_token))
    ///     .build()
    ///     .unwrap();
    /// ```
    pub fn on_record(mut self, callback: impl OnRecord) -> Self {
        self.config.on_record = Some(Arc::new(callback));
        self
    }

    /// Health baselines (first-token latency, tokens/s, error rate). Default:
    /// 1000/2000/5000 ms, 50/30/10 tokens/s, 1/5/10 %.
    pub fn baselines(mut self, baselines: Baselines) -> Self {
        self.config.baselines = baselines;
        self
    }

    /// Adds a rollback trigger. The built-in `auth_error_rate` (> 5% of all requests) and
    /// `timeout_rate` (> 10% of streaming requests) are present unless removed with
    /// [`clear_rollback_triggers`](Self::clear_rollback_triggers). Each trigger's name must be
    /// 1 to 64 bytes of printable ASCII, and differ from every other's (it is the `trigger`
    /// label of its series): `build` fails with [`ConfigError::InvalidSetting`]
    /// (`rollback_trigger`) otherwise.
    pub fn rollback_trigger(mut self, trigger: RollbackTrigger) -> Self {
        self.config.triggers.push(trigger);
        self
    }

    /// Removes every rollback trigger, the built-in ones included.
    pub fn clear_rollback_triggers(mut self) -> Self {
        self.config.triggers.clear();
        self
    }

    /// Runs `callback` once on each change of health status or trigger state.
    pub fn on_alert(mut self, callback: impl OnAlert) -> Self {
        self.config.on_alert = Some(Arc::new(callback));
        self
    }

    /// The clock that places records in window slots. Default: the system clock. Tests use a
    /// [`ManualClock`](crate::window::ManualClock) to move time.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.config.clock = Arc::new(clock);
        self.config.system_clock = false;
        self
    }

    /// Whether each request is also emitted to the `metrics` facade (for a recorder the app
    /// installed, globally or with `metrics::with_local_recorder`).
    ///
    /// Unset (the default), each request is emitted while a recorder is installed, and not
    /// while `metrics`' no-op recorder is current, which saves building keys nobody reads: the
    /// no-op recorder is recognised as the current recorder of zero size, so a recorder of the
    /// app's own that is itself zero-sized (a unit struct keeping its state in statics) would
    /// be taken for it. `true` emits every request whatever the recorder (such a recorder then
    /// receives them); `false` never emits. The in-process endpoints do not depend on this
    /// setting.
    ///
    /// ```
    /// // A recorder that is a unit struct: ask for the facade outright.
    /// let monitor = tower_stream_monitor::Monitor::builder()
    ///     .metrics_facade(true)
    ///     .build()
    ///     .expect("valid settings");
    /// # drop(monitor);
    /// ```
    pub fn metrics_facade(mut self, enabled: bool) -> Self {
        self.config.metrics_facade = Some(enabled);
        self
    }

    /// The least severe level the error layer records: `WARN` (default) or `ERROR`. A more
    /// verbose level is taken as `WARN`.
    pub fn error_level(mut self, level: tracing::Level) -> Self {
        self.config.error_level = if level == tracing::Level::ERROR {
            tracing::Level::ERROR
        } else {
            tracing::Level::WARN
        };
        self
    }

    /// Error records kept, the latest ones. Default 1000. Once the store is full, a callsite
    /// holding a quarter of it (at least 1) replaces its own oldest record, and another's record
    /// replaces the oldest of a callsite over its quarter, so a noisy callsite cannot evict the
    /// others.
    pub fn max_error_records(mut self, n: usize) -> Self {
        self.config.max_error_records = n;
        self
    }

    /// Error groups (one per callsite) kept; events of further callsites count into `other`.
    /// Default 1000.
    pub fn max_error_groups(mut self, n: usize) -> Self {
        self.config.max_error_groups = n;
        self
    }

    /// Longest stored message or field value, in bytes (longer ones are cut). Default 1024.
    pub fn max_error_field_bytes(mut self, n: usize) -> Self {
        self.config.max_error_field_bytes = n;
        self
    }

    /// Applies the environment variables (README, Configuration) over the current settings:
    ///
    /// | variable | meaning | default |
    /// |---|---|---|
    /// | `STREAMING_TIMEOUT` | stream deadline in seconds, fractions allowed, up to 1e9 (`0` disables) | the builder's, if [`stream_timeout`](Self::stream_timeout) or [`no_timeouts`](Self::no_timeouts) was called before; else 60 |
    /// | `MONITOR_PREFIX` | endpoint prefix | builder's |
    /// | `MONITOR_TOKEN` | endpoint bearer token | none |
    /// | `MONITOR_MIN_SAMPLES` | health minimum samples | builder's (20) |
    /// | `MONITOR_SERVICE_VERSION` | the `service_version` label on every series | none |
    /// | `MONITOR_PRICES` | a price file (LiteLLM's or the native format), merged over the built-in table ([`prices`](Self::prices)) | the built-in table |
    ///
    /// # Errors
    /// [`ConfigError::InvalidVar`] naming the variable whose value cannot be used;
    /// [`ConfigError::InvalidSetting`] with `setting` `MONITOR_PRICES` when the price file cannot
    /// be read or used, its reason naming the file and the entry (a
    /// [`PriceError`](crate::cost::PriceError)).
    pub fn with_env(self) -> Result<Self, ConfigError> {
        self.with_vars(|name| std::env::var(name).ok())
    }

    /// [`with_env`](Self::with_env) reading variables through `lookup` instead of the process
    /// environment (for configuration systems and tests).
    pub fn with_vars(
        mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let invalid =
            |var: &'static str, value: &str, expected: &'static str| ConfigError::InvalidVar {
                var,
                value: value.chars().take(64).collect(),
                expected,
            };
        const SECONDS: &str = "a number of seconds: 0 (none), or from 1e-9 to 1e9";
        self.config.stream.stream_timeout = match lookup("STREAMING_TIMEOUT") {
            // The builder's own choice, if it made one, stands.
            None if self.timeout_chosen => self.config.stream.stream_timeout,
            None => Some(DEFAULT_ENV_STREAM_TIMEOUT),
            Some(v) => {
                let secs: f64 = v
                    .trim()
                    .parse()
                    .map_err(|_| invalid("STREAMING_TIMEOUT", &v, SECONDS))?;
                if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
                    return Err(invalid("STREAMING_TIMEOUT", &v, SECONDS));
                }
                match Duration::from_secs_f64(secs) {
                    _ if secs == 0.0 => None,
                    // Under a nanosecond: no timeout the variable could mean.
                    d if d.is_zero() => return Err(invalid("STREAMING_TIMEOUT", &v, SECONDS)),
                    d => Some(d),
                }
            }
        };
        if let Some(v) = lookup("MONITOR_PREFIX") {
            validate_prefix(&v)
                .map_err(|_| invalid("MONITOR_PREFIX", &v, "a path like /monitoring"))?;
            self.config.prefix = v;
        }
        if let Some(v) = lookup("MONITOR_TOKEN") {
            validate_token(&v)
                .map_err(|_| invalid("MONITOR_TOKEN", "<redacted>", "visible ASCII"))?;
            self.config.endpoint_token = Some(v);
        }
        if let Some(v) = lookup("MONITOR_SERVICE_VERSION") {
            if !crate::labels::is_valid_label(&v) {
                return Err(invalid(
                    "MONITOR_SERVICE_VERSION",
                    &v,
                    "1 to 64 bytes of printable ASCII",
                ));
            }
            self.config.service_version = Some(v);
        }
        if let Some(path) = lookup("MONITOR_PRICES") {
            let file = crate::cost::PriceTable::load(std::path::Path::new(&path)).map_err(|e| {
                ConfigError::InvalidSetting {
                    setting: "MONITOR_PRICES",
                    reason: e.to_string(),
                }
            })?;
            self.config.prices = crate::cost::PriceTable::builtin().merged(file);
        }
        if let Some(v) = lookup("MONITOR_MIN_SAMPLES") {
            let n: u64 = v
                .trim()
                .parse()
                .map_err(|_| invalid("MONITOR_MIN_SAMPLES", &v, "a whole number >= 1"))?;
            if n == 0 {
                return Err(invalid("MONITOR_MIN_SAMPLES", &v, "a whole number >= 1"));
            }
            self.config.min_samples = n;
        }
        Ok(self)
    }

    /// Checks the settings and builds the monitor.
    ///
    /// # Errors
    /// [`ConfigError::InvalidSetting`] naming the setting for: a bad prefix, route pattern or
    /// endpoint token; a zero stream or idle timeout, event size cap or minimum of samples;
    /// `label_cardinality` outside 1 to 100,000, `header_label_cardinality` over 100,000,
    /// `max_label_sets` outside 1 to 1,000,000, `top_users` over 10,000; `max_error_records`
    /// outside 1 to 1,000,000, `max_error_groups` outside 1 to 100,000,
    /// `max_error_field_bytes` under 16; an invalid `budget`, `anomaly_detection`,
    /// `service_version` or `rollback_trigger` (a bad threshold or name, or a name taken).
    pub fn build(self) -> Result<Monitor, ConfigError> {
        if let Some(e) = self.errors.into_iter().next() {
            return Err(e);
        }
        let mut c = self.config;
        c.stream.first_token = FirstTokenThresholds::from_baselines(&c.baselines);
        let bad = |setting: &'static str, reason: &str| ConfigError::InvalidSetting {
            setting,
            reason: reason.to_owned(),
        };
        validate_prefix(&c.prefix).map_err(|r| bad("prefix", r))?;
        if let Some(token) = &c.endpoint_token {
            validate_token(token).map_err(|r| bad("endpoint_token", r))?;
        }
        if c.stream.stream_timeout.is_some_and(|d| d.is_zero()) {
            return Err(bad("stream_timeout", "must be greater than zero"));
        }
        if c.stream.idle_timeout.is_some_and(|d| d.is_zero()) {
            return Err(bad("idle_timeout", "must be greater than zero"));
        }
        if let Some(b) = c.budgets.iter().find(|b| !b.valid()) {
            return Err(bad(
                "budget",
                &format!(
                    "budget {:?}: a name and a positive, finite USD per hour",
                    b.name()
                ),
            ));
        }
        if let Some(reason) = c.anomaly_detection.invalid() {
            return Err(bad("anomaly_detection", &reason));
        }
        if c.top_users > 10_000 {
            return Err(bad("top_users", "must be at most 10000"));
        }
        if c.label_cardinality == 0 || c.label_cardinality > 100_000 {
            return Err(bad("label_cardinality", "must be from 1 to 100000"));
        }
        if c.header_label_cardinality > 100_000 {
            return Err(bad("header_label_cardinality", "must be at most 100000"));
        }
        if c.max_label_sets == 0 || c.max_label_sets > 1_000_000 {
            return Err(bad("max_label_sets", "must be from 1 to 1000000"));
        }
        if c.stream.max_event_bytes == 0 {
            return Err(bad("max_event_bytes", "must be at least 1"));
        }
        if c.min_samples == 0 {
            return Err(bad("min_samples", "must be at least 1"));
        }
        if c.max_error_records == 0 || c.max_error_records > 1_000_000 {
            return Err(bad("max_error_records", "must be from 1 to 1000000"));
        }
        if c.max_error_groups == 0 || c.max_error_groups > 100_000 {
            return Err(bad("max_error_groups", "must be from 1 to 100000"));
        }
        if c.service_version
            .as_deref()
            .is_some_and(|v| !crate::labels::is_valid_label(v))
        {
            return Err(bad(
                "service_version",
                "must be 1 to 64 bytes of printable ASCII",
            ));
        }
        if c.max_error_field_bytes < 16 {
            return Err(bad("max_error_field_bytes", "must be at least 16"));
        }
        for (i, t) in c.triggers.iter().enumerate() {
            if !t.threshold_valid() {
                return Err(bad(
                    "rollback_trigger",
                    "threshold must be a percent from 0 to 100",
                ));
            }
            // The name is the `trigger` label of its series and its key in `/health`: two of
            // one name would make two series of one name, of which Prometheus keeps one.
            if !crate::labels::is_valid_label(t.name()) {
                return Err(bad(
                    "rollback_trigger",
                    "name must be 1 to 64 bytes of printable ASCII",
                ));
            }
            if c.triggers[..i].iter().any(|u| u.name() == t.name()) {
                return Err(bad(
                    "rollback_trigger",
                    "names must differ: a built-in one is replaced only after \
                     clear_rollback_triggers",
                ));
            }
        }
        let cap = c.label_cardinality;
        let header_cap = c.header_label_cardinality;
        let max_label_sets = c.max_label_sets;
        #[cfg(feature = "otlp")]
        if let Some(exporter) = &c.otlp {
            exporter.start(max_label_sets);
        }
        let window_time = WindowTime::new(&*c.clock);
        let triggers: Vec<Box<dyn RatePopulation>> = c
            .triggers
            .iter()
            .map(|t| Box::new(t.clone()) as Box<dyn RatePopulation>)
            .collect();
        let id_base = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let top_users = c.top_users;
        let budgets = c.budgets.clone();
        let monitor = Monitor {
            shared: Arc::new(Shared {
                windows: WindowStore::new(triggers),
                errors: Arc::new(ErrorStore::new(c.max_error_records, c.max_error_groups)),
                health: HealthTracker::new(),
                facade_anomalies: std::sync::Mutex::default(),
                last_health_check: AtomicU64::new(0),
                window_time,
                system_secs: c.system_clock.then(|| SystemSecs::new(window_time)),
                prometheus: PrometheusExposition::new(),
                system: SystemSampler::new(),
                in_flight: crate::in_flight::InFlight::new(),
                config: c,
                providers: LabelInterner::new(cap, header_cap),
                models: LabelInterner::new(cap, header_cap),
                routes: LabelInterner::new(cap, 0),
                series: SeriesBudget::new(max_label_sets),
                unrouted: AtomicU64::new(0),
                in_flight_sampled: AtomicU64::new(u64::MAX),
                spend: crate::spend::Spend::new(top_users),
                budgets: crate::spend::BudgetMeter::new(budgets),
                predictions: std::sync::Mutex::new((u64::MAX, Arc::default())),
                id_base,
                prices_id: super::next_prices_id(),
                unknown: Label::new(Label::UNKNOWN),
                unmatched: Label::new(Label::UNMATCHED),
                app_names_providers: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        Ok(monitor)
    }
}

fn validate_prefix(prefix: &str) -> Result<(), &'static str> {
    if !prefix.starts_with('/') || prefix.len() < 2 {
        return Err("must start with '/' and name a path");
    }
    if prefix.ends_with('/') {
        return Err("must not end with '/'");
    }
    if !prefix.bytes().all(|b| b.is_ascii_graphic()) || prefix.contains(['?', '#']) {
        return Err("must be a plain path of visible ASCII");
    }
    Ok(())
}

fn validate_token(token: &str) -> Result<(), &'static str> {
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be non-empty visible ASCII");
    }
    Ok(())
}
