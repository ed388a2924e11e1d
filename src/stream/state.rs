//! What a service and its clones share: the recorder, the monitor's endpoints and the route
//! label, resolved once.

use std::sync::{Arc, OnceLock};

use crate::endpoints::MonitoringEndpoints;
use crate::label::Label;
use crate::monitor::Recorder;

/// What a service and its clones share, and each request it measures holds until recorded:
/// one reference count per request, on the line the service's own clone already wrote, where a
/// handle of its own would be a second line every core writes.
pub(crate) struct ServiceState {
    /// Measuring: the settings and the hand-over of records.
    pub(crate) recorder: Recorder,
    /// Serving: the monitor's own endpoints under its prefix.
    pub(super) endpoints: MonitoringEndpoints,
    /// The route label, resolved once for this service and its clones.
    pub(crate) routes: RouteCache,
}

impl ServiceState {
    pub(crate) fn new(recorder: Recorder) -> Arc<Self> {
        let endpoints = recorder.monitor().endpoints();
        Arc::new(Self {
            recorder,
            endpoints,
            routes: RouteCache::default(),
        })
    }
}

/// The route label a service last resolved, shared by its clones (in the service's state).
/// axum applies a layer to each route apart, so a service sees one route: this spares interning
/// it again (validate, hash, look up) on every request. Only a label that is the route itself is
/// kept, never `other`: the interner keeps such a label for its life, so the kept one is what it
/// would return.
#[derive(Default)]
pub(crate) struct RouteCache {
    label: OnceLock<Label>,
    /// axum's `MatchedPath` and its label. axum hands each request of a route the same shared
    /// string, and the one kept here stays alive: a path at its address and of its length is
    /// that path, found without comparing the text.
    #[cfg(feature = "axum")]
    matched: OnceLock<(axum::extract::MatchedPath, Label)>,
}

impl RouteCache {
    pub(super) fn label(&self, recorder: &Recorder, route: &str) -> Label {
        if let Some(label) = self.label.get().filter(|l| ***l == *route) {
            return *label;
        }
        let label = recorder.route_label(route);
        if *label == *route {
            // Another route's label may be kept already; then this one is looked up each time.
            let _ = self.label.set(label);
        }
        label
    }

    #[cfg(feature = "axum")]
    #[inline]
    pub(super) fn label_matched(
        &self,
        recorder: &Recorder,
        matched: &axum::extract::MatchedPath,
    ) -> Label {
        if let Some((kept, label)) = self.matched.get() {
            if std::ptr::eq(kept.as_str(), matched.as_str()) {
                return *label;
            }
        }
        let label = self.label(recorder, matched.as_str());
        if *label == *matched.as_str() {
            let _ = self.matched.set((matched.clone(), label));
        }
        label
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    /// The label kept for axum's shared path string is the one the text gives: for the same
    /// string again, for an equal string elsewhere, and not for another route.
    #[cfg(feature = "axum")]
    #[tokio::test]
    async fn matched_path_label_is_the_routes() {
        use axum::extract::MatchedPath;
        use std::sync::Mutex;
        use tower::ServiceExt as _;

        let seen = Arc::new(Mutex::new(Vec::new()));
        let keep = |seen: Arc<Mutex<Vec<MatchedPath>>>| {
            move |path: MatchedPath| async move {
                seen.lock().unwrap().push(path);
            }
        };
        let app = |seen: &Arc<Mutex<Vec<MatchedPath>>>| {
            axum::Router::new()
                .route("/a/{id}", axum::routing::get(keep(seen.clone())))
                .route("/b", axum::routing::get(keep(seen.clone())))
        };
        // Two routers: equal route strings at different addresses.
        let (first, second) = (app(&seen), app(&seen));
        for (router, uri) in [(&first, "/a/1"), (&first, "/a/2"), (&second, "/a/3")] {
            let request = Request::get(uri).body(axum::body::Body::empty()).unwrap();
            router.clone().oneshot(request).await.unwrap();
        }
        let request = Request::get("/b").body(axum::body::Body::empty()).unwrap();
        first.clone().oneshot(request).await.unwrap();
        let paths = seen.lock().unwrap().clone();
        assert!(std::ptr::eq(paths[0].as_str(), paths[1].as_str()));
        assert!(!std::ptr::eq(paths[0].as_str(), paths[2].as_str()));

        let recorder = Recorder::new(crate::Monitor::builder().build().unwrap());
        let routes = RouteCache::default();
        let labels: Vec<Label> = paths
            .iter()
            .map(|p| routes.label_matched(&recorder, p))
            .collect();
        let texts: Vec<&str> = labels.iter().map(|l| &**l).collect();
        assert_eq!(texts, ["/a/{id}", "/a/{id}", "/a/{id}", "/b"]);
        // The first path is the one kept; its label is returned as kept.
        assert!(labels[0].is(labels[1]));
    }
}
