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
use crate::names;
use crate::record::{OutcomeMap, StreamRecord};

/// OpenTelemetry GenAI advice for time per output token (seconds).
const TPOT_BUCKETS: [f64; 13] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];
/// OpenTelemetry GenAI advice for token usage.
const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
/// Response bytes: powers of 4 from 64 B to 64 MiB.
const BYTES_BUCKETS: [f64; 11] = [
    64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
    67108864.0,
];
/// Records a shard holds before they are fed to the recorder.
const BATCH: usize = 512;

/// Label sets whose handles are cached; beyond, handles are registered per record (still correct,
/// only slower). Labels are capped, so this is rarely reached.
const MAX_CACHED_LABEL_SETS: usize = 4096;

static METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// The handles of one (provider, model, route) label set.
struct LabelSetHandles {
    labels: Vec<Label>,
    ttft: Histogram,
    ttfb: Histogram,
    tpot: Histogram,
    bytes: Histogram,
    output_tokens: Histogram,
    input_tokens: Histogram,
    /// Per outcome, registered on first use so absent outcomes add no empty series.
    by_outcome: OutcomeMap<OnceLock<(Counter, Histogram)>>,
}

pub(crate) struct PrometheusExposition {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    handles: RwLock<HashMap<LabelKey, Arc<LabelSetHandles>>>,
    pending: Box<[Mutex<Vec<StreamRecord>>]>,
    in_flight: RwLock<HashMap<Arc<str>, metrics::Gauge>>,
}

fn build_recorder() -> Result<PrometheusRecorder, metrics_exporter_prometheus::BuildError> {
    let buckets = |name: &str| Matcher::Full(name.to_owned());
    Ok(PrometheusBuilder::new()
        .set_buckets_for_metric(buckets(names::TIME_TO_FIRST_TOKEN), &names::TTFT_BUCKETS)?
        .set_buckets_for_metric(buckets(names::TIME_TO_FIRST_BYTE), &names::TTFT_BUCKETS)?
        .set_buckets_for_metric(buckets(names::REQUEST_DURATION), &names::DURATION_BUCKETS)?
        .set_buckets_for_metric(buckets(names::TIME_PER_OUTPUT_TOKEN), &TPOT_BUCKETS)?
        .set_buckets_for_metric(buckets(names::TOKEN_USAGE), &TOKEN_BUCKETS)?
        .set_buckets_for_metric(buckets(names::RESPONSE_BYTES), &BYTES_BUCKETS)?
        .build_recorder())
}

impl PrometheusExposition {
    pub(crate) fn new() -> Self {
        // Only an empty bucket list is refused, and ours are non-empty constants.
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

    fn histogram(&self, name: &'static str, labels: Vec<Label>) -> Histogram {
        self.recorder
            .register_histogram(&Key::from_parts(name, labels), &METADATA)
    }

    fn register(&self, r: &StreamRecord) -> LabelSetHandles {
        let labels = facade::base_labels(r);
        let with = |k: &'static str, v: &'static str| {
            let mut l = labels.clone();
            l.push(Label::new(k, v));
            l
        };
        LabelSetHandles {
            ttft: self.histogram(names::TIME_TO_FIRST_TOKEN, labels.clone()),
            ttfb: self.histogram(names::TIME_TO_FIRST_BYTE, labels.clone()),
            tpot: self.histogram(names::TIME_PER_OUTPUT_TOKEN, labels.clone()),
            bytes: self.histogram(names::RESPONSE_BYTES, labels.clone()),
            output_tokens: self.histogram(names::TOKEN_USAGE, with(names::TOKEN_TYPE, "output")),
            input_tokens: self.histogram(names::TOKEN_USAGE, with(names::TOKEN_TYPE, "input")),
            by_outcome: Default::default(),
            labels,
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
        let handles = Arc::new(self.register(r));
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
        let h = self.handles(r);
        let (requests, duration) = h.by_outcome[r.outcome].get_or_init(|| {
            let mut labels = h.labels.clone();
            labels.push(Label::new(names::OUTCOME, r.outcome.as_str()));
            let key = Key::from_parts(names::REQUESTS_TOTAL, labels.clone());
            (
                self.recorder.register_counter(&key, &METADATA),
                self.histogram(names::REQUEST_DURATION, labels),
            )
        });
        requests.increment(1);
        duration.record(r.duration.as_secs_f64());
        if let Some(ttfb) = r.time_to_first_byte {
            h.ttfb.record(ttfb.as_secs_f64());
        }
        if let Some(ttft) = r.time_to_first_token {
            h.ttft.record(ttft.as_secs_f64());
        }
        if let Some(tpot) = r.time_per_output_token {
            h.tpot.record(tpot.as_secs_f64());
        }
        h.bytes.record(r.bytes as f64);
        if r.output_tokens > 0 || r.input_tokens.is_some() {
            h.output_tokens.record(r.output_tokens as f64);
            if let Some(input) = r.input_tokens {
                h.input_tokens.record(input as f64);
            }
        }
        if r.oversized_events > 0 || r.malformed_events > 0 {
            metrics::with_local_recorder(&self.recorder, || facade::emit_skipped(r));
        }
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
