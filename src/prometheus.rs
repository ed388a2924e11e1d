//! The in-process Prometheus exposition: metrics-exporter-prometheus's recorder, built locally
//! (never installed globally), so each monitor renders its own. It is fed through cached metric
//! handles, one set per label set, registered with the same names and labels the `metrics`
//! facade emission uses.
//!
//! Finished records are not fed one by one on the request's path: the exporter's histograms
//! queue each observation on a structure all cores share, which made two cores recording at
//! once four times slower each. Records wait instead in a per-thread shard (a lock no other
//! core takes) and are fed in batches: when a shard holds [`BATCH`] records, and before every
//! render, so a scrape is always current.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use metrics::{Counter, Histogram, Key, Label, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::facade;
use crate::labels::{LabelKey, LabelView};
use crate::names::{self, LabelValue, MAX_LABEL_VALUES, METRICS, Metric, Sink};
use crate::record::StreamRecord;

/// Records a shard holds before they are fed to the recorder.
const BATCH: usize = 512;

/// Label sets whose handles are cached; beyond, handles are registered per record (still correct,
/// only slower). Labels are capped, so this is rarely reached.
const MAX_CACHED_LABEL_SETS: usize = 4096;

/// Handle slots per label set: one per value of each metric's last label.
const SLOTS: usize = METRICS.len() * MAX_LABEL_VALUES;

static METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

enum Handle {
    Counter(Counter),
    Histogram(Histogram),
}

/// The handles of one (provider, model, route) label set, by metric and value of its last label
/// ([`slot`]). Each is registered on first use, so absent outcomes (or a metric a label set never
/// observes) add no empty series.
struct LabelSetHandles {
    labels: Vec<Label>,
    slots: Box<[OnceLock<Handle>; SLOTS]>,
}

fn slot(metric: &Metric, extra: Option<LabelValue>) -> usize {
    let value = extra.map_or(0, |e| e.index);
    debug_assert!(value < MAX_LABEL_VALUES, "{}", metric.name);
    metric.index * MAX_LABEL_VALUES + value
}

pub(crate) struct PrometheusExposition {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    handles: RwLock<HashMap<LabelKey, Arc<LabelSetHandles>>>,
    pending: Box<[Mutex<Vec<StreamRecord>>]>,
    in_flight: RwLock<HashMap<Arc<str>, metrics::Gauge>>,
}

fn build_recorder() -> Result<PrometheusRecorder, metrics_exporter_prometheus::BuildError> {
    let mut builder = PrometheusBuilder::new();
    for m in METRICS.iter().filter(|m| !m.buckets.is_empty()) {
        builder = builder.set_buckets_for_metric(Matcher::Full(m.name.to_owned()), m.buckets)?;
    }
    Ok(builder.build_recorder())
}

/// Feeds one record's observations to the exposition through the cached handles of its label set.
struct Feed<'a> {
    recorder: &'a PrometheusRecorder,
    handles: &'a LabelSetHandles,
}

impl Feed<'_> {
    /// The cached handle of the series, registered by `register` on first use; metrics without
    /// the record's labels (skipped events: rare) are registered each time instead.
    #[inline(always)]
    fn with_handle(
        &self,
        metric: &'static Metric,
        extra: Option<LabelValue>,
        register: impl FnOnce(&PrometheusRecorder, &Key) -> Handle,
        observe: impl FnOnce(&Handle),
    ) {
        let register = || {
            let labels = facade::labels(metric, &self.handles.labels, extra);
            register(self.recorder, &Key::from_parts(metric.name, labels))
        };
        if metric.per_label_set() {
            observe(self.handles.slots[slot(metric, extra)].get_or_init(register));
        } else {
            observe(&register());
        }
    }
}

// Inlined into `names::observe`: a call per observation made feeding measurably slower.
impl Sink for Feed<'_> {
    #[inline(always)]
    fn counter(&mut self, metric: &'static Metric, extra: Option<LabelValue>, n: u64) {
        let register =
            |r: &PrometheusRecorder, key: &Key| Handle::Counter(r.register_counter(key, &METADATA));
        self.with_handle(metric, extra, register, |h| {
            if let Handle::Counter(c) = h {
                c.increment(n);
            }
        });
    }

    #[inline(always)]
    fn histogram(&mut self, metric: &'static Metric, extra: Option<LabelValue>, value: f64) {
        let register = |r: &PrometheusRecorder, key: &Key| {
            Handle::Histogram(r.register_histogram(key, &METADATA))
        };
        self.with_handle(metric, extra, register, |h| {
            if let Handle::Histogram(h) = h {
                h.record(value);
            }
        });
    }
}

impl PrometheusExposition {
    pub(crate) fn new() -> Self {
        // Only an empty bucket list is refused, and the table's histograms all have buckets.
        let recorder =
            build_recorder().unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, facade::describe);
        Self {
            recorder,
            handle,
            handles: RwLock::new(HashMap::new()),
            pending: (0..crate::shard::count())
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            in_flight: RwLock::new(HashMap::new()),
        }
    }

    fn handles(&self, r: &StreamRecord) -> Arc<LabelSetHandles> {
        let view: (&str, &str, &str) = (&r.provider, &r.model, &r.route);
        let read = self.handles.read().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = read.get(&view as &dyn LabelView) {
            return h.clone();
        }
        let cached = read.len();
        drop(read);
        let handles = Arc::new(LabelSetHandles {
            labels: facade::base_labels(r),
            slots: Box::new(std::array::from_fn(|_| OnceLock::new())),
        });
        if cached < MAX_CACHED_LABEL_SETS {
            let key = LabelKey(r.provider.clone(), r.model.clone(), r.route.clone());
            let mut write = self.handles.write().unwrap_or_else(|p| p.into_inner());
            return write.entry(key).or_insert(handles).clone();
        }
        handles
    }

    /// Queues a finished record on this thread's shard; feeds the shard when it is full.
    pub(crate) fn record(&self, record: StreamRecord) {
        let shard = &self.pending[crate::shard::index(self.pending.len())];
        let full = {
            let mut pending = shard.lock().unwrap_or_else(|p| p.into_inner());
            pending.push(record);
            (pending.len() >= BATCH).then(|| std::mem::take(&mut *pending))
        };
        if let Some(batch) = full {
            batch.iter().for_each(|r| self.feed(r));
        }
    }

    /// Feeds every queued record to the recorder.
    fn flush(&self) {
        for shard in self.pending.iter() {
            let batch = std::mem::take(&mut *shard.lock().unwrap_or_else(|p| p.into_inner()));
            batch.iter().for_each(|r| self.feed(r));
        }
    }

    fn feed(&self, r: &StreamRecord) {
        let handles = self.handles(r);
        let mut feed = Feed {
            recorder: &self.recorder,
            handles: &handles,
        };
        names::observe(r, &mut feed);
    }

    /// Moves the route's in-flight gauge; its handle is registered once per route.
    pub(crate) fn in_flight(&self, route: &Arc<str>, delta: f64) {
        if let Some(g) = self
            .in_flight
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(route)
        {
            g.increment(delta);
            return;
        }
        let key = Key::from_parts(
            names::IN_FLIGHT,
            vec![Label::new(names::ROUTE, route.clone())],
        );
        let gauge = self.recorder.register_gauge(&key, &METADATA);
        gauge.increment(delta);
        // Routes are capped labels, so this map stays small.
        self.in_flight
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(route.clone())
            .or_insert(gauge);
    }

    /// Counts a request that matched no route (no labels: such requests never make series).
    pub(crate) fn unrouted(&self) {
        metrics::with_local_recorder(&self.recorder, facade::unrouted);
    }

    pub(crate) fn label_overflow(&self, label: &'static str) {
        metrics::with_local_recorder(&self.recorder, || facade::label_overflow(label));
    }

    /// Folds pending histogram observations into their buckets (the recorder queues them).
    /// Runs on the upkeep thread ([`spawn_upkeep`]), never on a request's path.
    pub(crate) fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Text exposition format 0.0.4.
    pub(crate) fn render(&self) -> String {
        self.flush();
        self.handle.run_upkeep();
        self.handle.render()
    }
}

/// How often the upkeep thread folds queued histogram observations.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Starts the thread that folds queued histogram observations every [`UPKEEP_EVERY`], so they
/// neither pile up between scrapes nor cost a request anything. It holds only a weak reference
/// to the monitor and ends at its first tick after the last clone of the monitor is dropped.
/// Should the thread fail to start, observations are still folded before every render.
pub(crate) fn spawn_upkeep<T, F>(owner: std::sync::Weak<T>, exposition: F)
where
    T: Send + Sync + 'static,
    F: Fn(&T) -> &PrometheusExposition + Send + 'static,
{
    let _ = std::thread::Builder::new()
        .name("stream-monitor-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                match owner.upgrade() {
                    Some(owner) => exposition(&owner).upkeep(),
                    None => return,
                }
            }
        });
}
