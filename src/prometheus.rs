//! The in-process Prometheus exposition: metrics-exporter-prometheus's recorder, built locally
//! (never installed globally) and fed by the same emission code as the `metrics` facade, so the
//! endpoint and a user's own recorder see the same names and labels. Each monitor renders its own.

use std::sync::Arc;

use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::facade;
use crate::names;
use crate::record::StreamRecord;

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

pub(crate) struct PrometheusExposition {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
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
        Self { recorder, handle }
    }

    pub(crate) fn record(&self, record: &StreamRecord) {
        metrics::with_local_recorder(&self.recorder, || facade::emit(record));
    }

    pub(crate) fn in_flight(&self, route: &Arc<str>, delta: f64) {
        metrics::with_local_recorder(&self.recorder, || facade::in_flight(route, delta));
    }

    pub(crate) fn label_overflow(&self, label: &'static str) {
        metrics::with_local_recorder(&self.recorder, || facade::label_overflow(label));
    }

    /// Text exposition format 0.0.4.
    pub(crate) fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }
}
