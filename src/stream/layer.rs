use tower_layer::Layer;

use super::StreamMonitorService;
use crate::Monitor;
use crate::monitor::Recorder;

impl Monitor {
    /// The tower layer that measures every response of the service it wraps (layer 1).
    pub fn layer(&self) -> StreamMonitorLayer {
        StreamMonitorLayer {
            recorder: Recorder::new(self.clone()),
        }
    }
}

/// The tower [`Layer`] that measures every response of the service it wraps.
///
/// Made by [`Monitor::layer`]; cheap to clone.
#[derive(Clone)]
pub struct StreamMonitorLayer {
    recorder: Recorder,
}

impl std::fmt::Debug for StreamMonitorLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamMonitorLayer")
            .field("monitor", self.recorder.monitor())
            .finish()
    }
}

impl StreamMonitorLayer {
    /// The monitor records go to.
    pub fn monitor(&self) -> &Monitor {
        self.recorder.monitor()
    }
}

impl<S> Layer<S> for StreamMonitorLayer {
    type Service = StreamMonitorService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StreamMonitorService::with_recorder(inner, self.recorder.clone())
    }
}
