//! W3C trace context: the trace a request belongs to, read from its `traceparent` header or
//! started here, so that a record, an error record and a Prometheus exemplar lead to the same
//! trace (README, Tracing).
//!
//! ```
//! use tower_stream_monitor::trace::TraceContext;
//!
//! let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
//! let context = TraceContext::from_traceparent(parent, None).expect("a valid traceparent");
//! assert_eq!(context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
//! assert_eq!(context.parent_span_id().map(|s| s.to_string()).as_deref(), Some("00f067aa0ba902b7"));
//! assert!(context.sampled());
//! // The request's own span is a child of the caller's: what to send upstream.
//! assert!(context.traceparent().starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
//!
//! assert!(TraceContext::from_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None).is_none());
//! ```

use std::fmt;
use std::sync::Arc;

/// A 16-byte trace id, never all zeros; shown as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TraceId(u128);

/// An 8-byte span id, never all zeros; shown as 16 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpanId(u64);

impl TraceId {
    /// The id as a number.
    pub fn to_u128(self) -> u128 {
        self.0
    }

    /// The id from a number; `None` for zero (invalid in W3C trace context).
    pub fn from_u128(id: u128) -> Option<Self> {
        (id != 0).then_some(Self(id))
    }
}

impl SpanId {
    /// The id as a number.
    pub fn to_u64(self) -> u64 {
        self.0
    }

    /// The id from a number; `None` for zero (invalid in W3C trace context).
    pub fn from_u64(id: u64) -> Option<Self> {
        (id != 0).then_some(Self(id))
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Longest `tracestate` kept (bytes): the W3C limit of 32 entries fits in 512 in practice.
pub(crate) const MAX_TRACESTATE: usize = 512;

/// The trace context of one request: its trace, its own span (a child of the caller's span
/// when the request carried a valid `traceparent`), the caller's span and sampling flag, and
/// the caller's `tracestate`, kept for the app to pass on.
///
/// When the request has one as it enters the stream layer (the caller sent a valid
/// `traceparent`, the app's OpenTelemetry span gave it, or the session span made it), the layer
/// puts it in the request's extensions, so a handler can propagate it to its upstream provider
/// (`traceparent()` is the header value to send). A request without one has none there: no
/// trace is started for every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: TraceId,
    span_id: SpanId,
    parent_span_id: Option<SpanId>,
    sampled: bool,
    tracestate: Option<Arc<str>>,
}

impl TraceContext {
    /// A new trace, started here (no caller context): random ids, sampled.
    pub fn new_root() -> Self {
        Self {
            trace_id: random_trace_id(),
            span_id: random_span_id(),
            parent_span_id: None,
            sampled: true,
            tracestate: None,
        }
    }

    /// A context the app already has (its tracing system's current span): that trace and that
    /// span, as the request's own. `None` for all-zero ids.
    pub fn from_ids(trace_id: u128, span_id: u64, sampled: bool) -> Option<Self> {
        Some(Self {
            trace_id: TraceId::from_u128(trace_id)?,
            span_id: SpanId::from_u64(span_id)?,
            parent_span_id: None,
            sampled,
            tracestate: None,
        })
    }

    /// The context of a request whose caller sent `traceparent` (and `tracestate`, its header
    /// lines joined with `,`): the caller's trace, a new span of its own. `None` when the value
    /// is not a valid W3C `traceparent` (version `00` exactly, or a later version's first four
    /// fields; ids not all zeros; lowercase hex). An invalid `tracestate` is dropped, never an
    /// error.
    pub fn from_traceparent(traceparent: &str, tracestate: Option<&str>) -> Option<Self> {
        let value = traceparent.trim_matches([' ', '\t']).as_bytes();
        if value.len() < 55 {
            return None;
        }
        let version = hex(&value[0..2])? as u8;
        // Version ff is invalid; version 00 is exactly 55 bytes; later versions may append
        // fields after a dash, which are ignored.
        if version == 0xff
            || (version == 0 && value.len() != 55)
            || (version != 0 && value.len() > 55 && value[55] != b'-')
        {
            return None;
        }
        if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let trace_id = TraceId::from_u128(hex(&value[3..35])?)?;
        let parent = SpanId::from_u64(u64::try_from(hex(&value[36..52])?).ok()?)?;
        let flags = hex(&value[53..55])? as u8;
        let tracestate = tracestate
            .filter(|s| {
                !s.is_empty()
                    && s.len() <= MAX_TRACESTATE
                    && s.bytes().all(|b| (0x20..0x7f).contains(&b))
            })
            .map(Arc::from);
        Some(Self {
            trace_id,
            span_id: random_span_id(),
            parent_span_id: Some(parent),
            sampled: flags & 1 == 1,
            tracestate,
        })
    }

    /// The trace.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// This request's own span.
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// The caller's span, when the request carried a valid `traceparent`.
    pub fn parent_span_id(&self) -> Option<SpanId> {
        self.parent_span_id
    }

    /// The caller's sampling decision (`true` for a trace started here).
    pub fn sampled(&self) -> bool {
        self.sampled
    }

    /// The caller's `tracestate`, when valid.
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// The `traceparent` header value for a call made on this request's behalf (its span as
    /// the parent).
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }
}

/// The value of 1 to 32 lowercase hex digits; `None` for anything else (W3C trace context
/// allows lowercase only).
fn hex(digits: &[u8]) -> Option<u128> {
    if digits.is_empty() || digits.len() > 32 {
        return None;
    }
    digits.iter().try_fold(0u128, |n, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some(n << 4 | u128::from(v))
    })
}

fn random_trace_id() -> TraceId {
    loop {
        if let Some(id) = TraceId::from_u128(fastrand::u128(..)) {
            return id;
        }
    }
}

fn random_span_id() -> SpanId {
    loop {
        if let Some(id) = SpanId::from_u64(fastrand::u64(..)) {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_a_valid_traceparent_as_a_child() {
        let c = TraceContext::from_traceparent(VALID, Some("congo=t61rcWkgMzE")).unwrap();
        assert_eq!(c.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(c.parent_span_id().unwrap().to_string(), "00f067aa0ba902b7");
        assert_ne!(Some(c.span_id()), c.parent_span_id());
        assert!(c.sampled());
        assert_eq!(c.tracestate(), Some("congo=t61rcWkgMzE"));
        let unsampled = VALID.replace("-01", "-00");
        assert!(
            !TraceContext::from_traceparent(&unsampled, None)
                .unwrap()
                .sampled()
        );
        let header = c.traceparent();
        let again = TraceContext::from_traceparent(&header, None).unwrap();
        assert_eq!(again.trace_id(), c.trace_id());
        assert_eq!(again.parent_span_id(), Some(c.span_id()));
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47é6-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::from_traceparent(bad, None), None, "{bad:?}");
        }
        // A later version may append fields.
        let future =
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds";
        assert!(TraceContext::from_traceparent(future, None).is_some());
        // A bad tracestate is dropped, the context kept.
        let c = TraceContext::from_traceparent(VALID, Some("a=\u{7}")).unwrap();
        assert_eq!(c.tracestate(), None);
    }

    #[test]
    fn new_roots_are_distinct_and_valid() {
        let a = TraceContext::new_root();
        let b = TraceContext::new_root();
        assert_ne!(a.trace_id(), b.trace_id());
        assert_eq!(a.parent_span_id(), None);
        let parsed = TraceContext::from_traceparent(&a.traceparent(), None).unwrap();
        assert_eq!(parsed.trace_id(), a.trace_id());
    }
}
