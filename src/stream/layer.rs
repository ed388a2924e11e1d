use tower_layer::Layer;

use super::StreamMonitorService;
use crate::Monitor;

/// The tower [`Layer`] that measures every response of the service it wraps.
///
/// Made by [`Monitor::layer`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct StreamMonitorLayer {
    monitor: Monitor,
}

impl StreamMonitorLayer {
    pub(crate) fn new(monitor: Monitor) -> Self {
        Self { monitor }
    }

    /// The monitor records go to.
    pub fn monitor(&self) -> &Monitor {
        &self.monitor
    }
}

impl<S> Layer<S> for StreamMonitorLayer {
    type Service = StreamMonitorService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StreamMonitorService::new(inner, self.monitor.clone())
    }
}
