//! Recording a panic that unwinds through the inner service or body, so a started request is
//! still recorded once (as `server_error`).
//!
//! A guard on the stack sees the unwinding in its `Drop` (`std::thread::panicking()`); by the
//! time the runtime drops the task, the panic has been caught and that is no longer visible.

use super::context::{RequestContext, RequestScope};
use super::meter::{StreamEnd, StreamMeter};
use crate::record::Outcome;

/// What a panic ends: the request before its response, or the measured body.
pub(crate) trait RecordPanic {
    fn record_panic(self, scope: &RequestScope);
}

impl RecordPanic for RequestContext {
    fn record_panic(self, scope: &RequestScope) {
        self.finish_without_body(
            scope,
            Outcome::ServerError,
            Some(&"panic in the inner service"),
        );
    }
}

impl RecordPanic for StreamMeter {
    fn record_panic(self, scope: &RequestScope) {
        self.finish(
            StreamEnd::Failed(
                Outcome::ServerError,
                &"panic while producing the response body",
            ),
            scope,
            // A panic's rates are no measure of anything: the timer, being polled, stays out.
            None,
        );
    }
}

/// While alive, a panic unwinding past it takes the slot's value and records it.
pub(crate) struct PanicGuard<'a, T: RecordPanic> {
    slot: &'a mut Option<T>,
    scope: &'a RequestScope,
}

impl<'a, T: RecordPanic> PanicGuard<'a, T> {
    pub(crate) fn new(slot: &'a mut Option<T>, scope: &'a RequestScope) -> Self {
        Self { slot, scope }
    }

    /// The slot guarded, for the code the guard watches over to use.
    #[inline]
    pub(crate) fn slot(&mut self) -> &mut Option<T> {
        self.slot
    }
}

impl<T: RecordPanic> Drop for PanicGuard<'_, T> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(value) = self.slot.take() {
                value.record_panic(self.scope);
            }
        }
    }
}
