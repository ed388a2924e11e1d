//! OTLP export (feature `otlp`): the OpenTelemetry GenAI metrics of every LLM call, pushed over
//! OTLP/HTTP (protobuf) to a collector, with the conventions' names, units and attributes and
//! the bucket boundaries of [`names::METRICS`] (README, Tracing and OTLP).
//!
//! Built on the `opentelemetry` SDK and `opentelemetry-otlp`: a periodic reader on a thread of
//! its own sends what accumulated every `OTEL_METRIC_EXPORT_INTERVAL` (60 s by default), and
//! [`OtlpExporter::shutdown`] (or dropping the last monitor holding the exporter) sends the rest.
//! The standard variables apply: `OTEL_EXPORTER_OTLP_ENDPOINT` (default
//! `http://localhost:4318`; `/v1/metrics` is appended), `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`
//! (used as is), `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`,
//! `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`. `https://` collectors are reached over
//! TLS (rustls, the platform's certificates or the PEM file `SSL_CERT_FILE` names). A failed
//! export is logged by the SDK at WARN or ERROR (targets `opentelemetry_sdk` and
//! `opentelemetry-otlp`), so the error layer keeps it.
//!
//! ```no_run
//! use tower_stream_monitor::Monitor;
//! use tower_stream_monitor::otlp::OtlpExporter;
//!
//! let exporter = OtlpExporter::from_env()?;
//! let monitor = Monitor::builder().otlp(exporter.clone()).build()?;
//! // ... serve; at shutdown, send what is left:
//! exporter.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, MeterProvider as _};
use opentelemetry_otlp::{MetricExporter, WithExportConfig};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Stream};

use crate::names::{self, LabelValue, METRICS, Metric, MetricKind, Sink};
use crate::record::StreamRecord;

/// Why OTLP export could not be set up or flushed.
#[derive(Debug)]
pub struct OtlpError(String);

impl fmt::Display for OtlpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OTLP export: {}", self.0)
    }
}

impl std::error::Error for OtlpError {}

enum Instrument {
    Histogram(Histogram<f64>),
    Counter(Counter<u64>),
}

struct Inner {
    /// The exporter and its interval, until the first monitor built with them starts the
    /// export (it knows how many label sets to size each instrument for).
    pending: Mutex<Option<(MetricExporter, Option<Duration>)>>,
    started: OnceLock<Started>,
}

struct Started {
    provider: SdkMeterProvider,
    /// By [`Metric`] index: the instruments of the metrics with an OpenTelemetry name.
    instruments: Vec<Option<Instrument>>,
}

/// The most attribute sets an instrument keeps apart before the SDK folds the rest into one
/// `otel.metric.overflow` point: it reserves room for them all when the instrument is made.
pub(crate) const MAX_ATTRIBUTE_SETS: usize = 1 << 16;

impl Started {
    fn new(exporter: MetricExporter, interval: Option<Duration>, max_label_sets: usize) -> Self {
        let mut reader = PeriodicReader::builder(exporter);
        if let Some(interval) = interval {
            reader = reader.with_interval(interval);
        }
        let limit = attribute_sets(max_label_sets);
        let provider = SdkMeterProvider::builder()
            .with_reader(reader.build())
            // Every instrument: its name, unit and boundaries stay the instrument's own.
            .with_view(move |_: &opentelemetry_sdk::metrics::Instrument| {
                Stream::builder().with_cardinality_limit(limit).build().ok()
            })
            .build();
        let meter = provider.meter(env!("CARGO_PKG_NAME"));
        let instruments = METRICS
            .iter()
            .map(|metric| {
                let (name, unit) = metric.otel()?;
                let description = metric.help();
                Some(match metric.kind() {
                    MetricKind::Histogram => Instrument::Histogram(
                        meter
                            .f64_histogram(name)
                            .with_unit(unit)
                            .with_description(description)
                            .with_boundaries(metric.buckets().to_vec())
                            .build(),
                    ),
                    _ => Instrument::Counter(
                        meter
                            .u64_counter(name)
                            .with_unit(unit)
                            .with_description(description)
                            .build(),
                    ),
                })
            })
            .collect();
        Self {
            provider,
            instruments,
        }
    }
}

/// The label sets where the rest fold past `max_label_sets`: provider, model and route are
/// `other`, but each keeps its operation (a known one, or `other`), and whether it has a
/// response model.
const FOLDED_LABEL_SETS: usize = (crate::parse::OPERATION_NAMES.len() + 1) * 2;

/// The attribute sets an instrument may need: each label set the monitor keeps (and the
/// folded ones), times the values of a metric's own last label (`error.type`,
/// `gen_ai.token.type`); at most [`MAX_ATTRIBUTE_SETS`].
fn attribute_sets(max_label_sets: usize) -> usize {
    max_label_sets
        .saturating_add(FOLDED_LABEL_SETS)
        .saturating_mul(names::MAX_LABEL_VALUES)
        .min(MAX_ATTRIBUTE_SETS)
}

/// Pushes the GenAI metrics of the records of the monitors it is given to
/// ([`MonitorBuilder::otlp`](crate::MonitorBuilder::otlp)). Cheap to clone. The export starts
/// when the first monitor given it is built, sized by that monitor's `max_label_sets` (README,
/// Tracing and OTLP), and stops when [`shutdown`](Self::shutdown) is called or the last clone
/// is dropped. Give each monitor an exporter of its own: monitors sharing one add their label
/// sets into instruments sized for the first.
#[derive(Clone)]
pub struct OtlpExporter {
    inner: Arc<Inner>,
}

impl fmt::Debug for OtlpExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpExporter").finish_non_exhaustive()
    }
}

impl OtlpExporter {
    /// An exporter configured by the standard `OTEL_*` variables (see the module docs).
    pub fn from_env() -> Result<Self, OtlpError> {
        let exporter = MetricExporter::builder()
            .with_http()
            .build()
            .map_err(|e| OtlpError(e.to_string()))?;
        Ok(Self::with_exporter(exporter, None))
    }

    /// An exporter to the collector at `endpoint`, an OTLP/HTTP base URL such as
    /// `http://localhost:4318` (`/v1/metrics` is appended), pushing every `interval` (`None`:
    /// `OTEL_METRIC_EXPORT_INTERVAL`, else 60 s). The other `OTEL_*` variables still apply.
    pub fn new(endpoint: &str, interval: Option<Duration>) -> Result<Self, OtlpError> {
        let url = format!("{}/v1/metrics", endpoint.trim_end_matches('/'));
        let exporter = MetricExporter::builder()
            .with_http()
            .with_endpoint(url)
            .build()
            .map_err(|e| OtlpError(e.to_string()))?;
        Ok(Self::with_exporter(exporter, interval))
    }

    fn with_exporter(exporter: MetricExporter, interval: Option<Duration>) -> Self {
        Self {
            inner: Arc::new(Inner {
                pending: Mutex::new(Some((exporter, interval))),
                started: OnceLock::new(),
            }),
        }
    }

    /// Starts the export, with room in each instrument for `max_label_sets` (the monitor's
    /// cap), unless a monitor started it already or it was shut down.
    pub(crate) fn start(&self, max_label_sets: usize) {
        // Held until the export is started: a `shutdown` meanwhile waits, then stops it.
        let mut pending = self
            .inner
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((exporter, interval)) = pending.take() {
            // `take` leaves `None`: only this call reaches `set`.
            let _ = self
                .inner
                .started
                .set(Started::new(exporter, interval, max_label_sets));
        }
    }

    /// Sends what has accumulated now, and stops exporting (later records are dropped), even
    /// when that last send fails: its error is returned.
    pub fn shutdown(&self) -> Result<(), OtlpError> {
        // Not started: nothing was recorded, and no monitor may start it now. Under the lock
        // a `start` under way holds, so a started export is seen.
        let started = {
            let mut pending = self
                .inner
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            drop(pending.take());
            self.inner.started.get()
        };
        let Some(started) = started else {
            return Ok(());
        };
        let flushed = started.provider.force_flush();
        let stopped = started.provider.shutdown();
        flushed.and(stopped).map_err(|e| OtlpError(e.to_string()))
    }

    /// Adds a finished LLM call's observations (other requests have no GenAI metrics).
    pub(crate) fn record(&self, r: &StreamRecord) {
        let Some(started) = self.inner.started.get() else {
            return;
        };
        if r.operation_name.is_none() {
            return;
        }
        let mut base = Vec::with_capacity(names::REQUEST_LABELS.len());
        // The label set's values in `REQUEST_LABELS` order, `""` for an absent one.
        let set = r.label_set();
        for (label, value) in names::REQUEST_LABELS.iter().zip(set.parts()) {
            if let (Some(key), false) = (attribute(label), value.is_empty()) {
                base.push(KeyValue::new(key, value.to_owned()));
            }
        }
        names::observe(
            r,
            &mut Feed {
                instruments: &started.instruments,
                base,
            },
        );
    }
}

/// The OpenTelemetry attribute of a label, if it is exported.
fn attribute(label: &str) -> Option<&'static str> {
    names::OTEL_ATTRIBUTES
        .iter()
        .find(|(l, _)| *l == label)
        .map(|(_, a)| *a)
}

/// Observations on their way to the SDK's instruments.
struct Feed<'a> {
    instruments: &'a [Option<Instrument>],
    base: Vec<KeyValue>,
}

impl Feed<'_> {
    /// The record's attributes, then the metric's last label (token type, modality) and
    /// `error.type` for a failure's outcome, when the conventions name them.
    fn attributes(&self, metric: &Metric, extra: Option<LabelValue>) -> Vec<KeyValue> {
        let mut attributes = self.base.clone();
        let last = metric.labels().get(names::REQUEST_LABELS.len());
        if let (Some(extra), Some(key)) = (extra, last.and_then(|l| attribute(l))) {
            attributes.push(KeyValue::new(key, extra.value));
        }
        if let Some((label, value)) = metric.error_type(extra) {
            if let Some(key) = attribute(label) {
                attributes.push(KeyValue::new(key, value));
            }
        }
        attributes
    }
}

impl Sink for Feed<'_> {
    fn counter(&mut self, metric: &'static Metric, extra: Option<LabelValue>, n: u64) {
        if let Some(Some(Instrument::Counter(counter))) = self.instruments.get(metric.index) {
            counter.add(n, &self.attributes(metric, extra));
        }
    }

    fn histogram(&mut self, metric: &'static Metric, extra: Option<LabelValue>, value: f64) {
        if let Some(Some(Instrument::Histogram(histogram))) = self.instruments.get(metric.index) {
            histogram.record(value, &self.attributes(metric, extra));
        }
    }
}
