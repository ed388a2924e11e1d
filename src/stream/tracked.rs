//! A measured request's state, boxed once when the request starts.
//!
//! The response future and then the body carry a pointer to it instead of its few hundred
//! bytes: tower and axum move both several times per request (mapping futures, boxing the
//! body), and each move copied them whole.

use super::context::{RequestContext, RequestScope};
use super::meter::StreamMeter;

pub(crate) struct Tracked {
    /// Until the response arrives (or the request ends without one).
    pub(crate) context: Option<RequestContext>,
    /// From the response on, until the body ends.
    pub(crate) meter: Option<StreamMeter>,
    pub(crate) scope: RequestScope,
}
