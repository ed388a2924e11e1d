//! The request an event happens in, for error records, without a tracing span.
//!
//! The stream layer's per-request span exists only when a subscriber layer asks for it (a `fmt`
//! layer at INFO for the session logs, say): creating one costs more than the rest of the
//! request's measuring together. The error layer does not ask for it. Instead the stream layer
//! marks the request as current on this thread while it polls the handler's future and body and
//! while it logs the request's end, and the error layer reads that mark when a WARN or ERROR
//! event arrives: a thread-local read on a path that is rare by nature.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::sync::Arc;

use http::HeaderValue;

use crate::label::Label;
use crate::record::RequestId;
use crate::trace::TraceContext;

scoped_tls::scoped_thread_local!(static CURRENT: RequestTags);

thread_local! {
    /// Set while the service logs something of its own on a request's path (a health alert):
    /// the request marked current is not its context.
    static DETACHED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The name error records show for the request's scope, as the span is named when it exists.
pub(crate) const REQUEST_SCOPE_NAME: &str = "stream_request";

/// A request's context fields: what its span would carry.
#[derive(Clone)]
pub(crate) struct RequestTags {
    pub(crate) request_id: RequestId,
    pub(crate) user_id: Option<Arc<str>>,
    /// The user id is a request header's, which a client may set (see
    /// `StreamRecord::user_id_from_header`).
    pub(crate) user_id_from_header: bool,
    pub(crate) route: Label,
    pub(crate) provider: ShownProvider,
    /// The caller's trace context when it sent a valid one; else started when first asked for
    /// (README, Tracing: a trace id is made only where something uses it).
    pub(crate) trace: OnceCell<TraceContext>,
}

/// The provider as the request names it so far; resolved when its response arrives.
#[derive(Clone, Default)]
pub(crate) enum ShownProvider {
    #[default]
    Unknown,
    /// From the `request_labels` closure.
    Labeled(Cow<'static, str>),
    /// From the provider request header (a valid label, checked when read).
    Header(HeaderValue),
    /// The label the request is recorded under.
    Resolved(Label),
}

impl ShownProvider {
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            ShownProvider::Unknown => None,
            ShownProvider::Labeled(p) => Some(p),
            ShownProvider::Header(p) => p.to_str().ok(),
            ShownProvider::Resolved(p) => Some(p),
        }
    }
}

impl RequestTags {
    /// The request's trace context, started now if the caller sent none.
    pub(crate) fn trace(&self) -> &TraceContext {
        self.trace.get_or_init(TraceContext::new_root)
    }

    /// Runs `f` with this request marked current on this thread.
    #[inline]
    pub(crate) fn within<R>(&self, f: impl FnOnce() -> R) -> R {
        CURRENT.set(self, f)
    }
}

/// Runs `f` with no request current on this thread, for what the service logs of its own.
pub(crate) fn detached<R>(f: impl FnOnce() -> R) -> R {
    /// Puts the flag back, even if `f` panics.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = DETACHED.try_with(|d| d.set(self.0));
        }
    }
    let _restore = Restore(DETACHED.try_with(|d| d.replace(true)).unwrap_or(false));
    f()
}

/// The request current on this thread, if any.
pub(crate) fn with_current<R>(f: impl FnOnce(Option<&RequestTags>) -> R) -> R {
    if CURRENT.is_set() && !DETACHED.try_with(|d| d.get()).unwrap_or(false) {
        CURRENT.with(|tags| f(Some(tags)))
    } else {
        f(None)
    }
}
