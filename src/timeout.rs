//! The error of this layer's own stream deadline and idle timeout. Its own module so that
//! the outcome classifier can recognise it without depending on the stream layer.

use std::fmt;
use std::time::Duration;

/// Which limit a stream ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeoutKind {
    /// The total deadline (`stream_timeout`) passed.
    Deadline,
    /// No frame arrived for `idle_timeout`.
    Idle,
}

/// The error that ends a non-SSE body cut by the stream or idle timeout. It is also what
/// the outcome classifier recognises as a timeout when found in an error chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamTimeoutError {
    kind: TimeoutKind,
    after: Duration,
}

impl StreamTimeoutError {
    /// A deadline timeout after `after`.
    pub fn new(after: Duration) -> Self {
        Self {
            kind: TimeoutKind::Deadline,
            after,
        }
    }

    pub(crate) fn idle(after: Duration) -> Self {
        Self {
            kind: TimeoutKind::Idle,
            after,
        }
    }

    /// Which limit was hit.
    pub fn kind(&self) -> TimeoutKind {
        self.kind
    }

    /// The limit's length.
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for StreamTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            TimeoutKind::Deadline => write!(f, "Streaming timeout after {}", seconds(self.after)),
            TimeoutKind::Idle => write!(
                f,
                "Streaming timeout after {} without data",
                seconds(self.after)
            ),
        }
    }
}

impl std::error::Error for StreamTimeoutError {}

/// The stream deadline passed while the handler was still waiting for the request's body: the
/// client's doing, answered 408 and recorded `client_error` (README, Security). Not a
/// [`StreamTimeoutError`], which the outcome classifier takes for an upstream's timeout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestBodyTimeout {
    pub(crate) after: Duration,
}

impl fmt::Display for RequestBodyTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Request body not received within {}",
            seconds(self.after)
        )
    }
}

/// `60s`, `2.5s`, `0.3s`: the `Streaming timeout after {n}s` wording (README).
fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        let s = format!("{:.3}", d.as_secs_f64());
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    }
}
