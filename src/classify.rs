//! What counts as which [`Outcome`]: small pure functions, apart from what is done about it.

use std::any::Any;
use std::error::Error as StdError;

use http::StatusCode;

use crate::parse::StreamErrorKind;
use crate::record::Outcome;
use crate::timeout::StreamTimeoutError;

/// A boxed error, as tower and hyper pass them around.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The outcome a status code implies: `Ok` for 101, 2xx and 3xx. Any other 1xx is no final
/// answer (hyper sends a 500 in its place on HTTP/1.1 and resets the stream on HTTP/2), so it
/// is a `ServerError`.
///
/// ```
/// use http::StatusCode;
/// use tower_stream_monitor::{Outcome, classify::classify_status};
/// assert_eq!(classify_status(StatusCode::UNAUTHORIZED), Outcome::AuthError);
/// assert_eq!(classify_status(StatusCode::GATEWAY_TIMEOUT), Outcome::Timeout);
/// assert_eq!(classify_status(StatusCode::from_u16(529).unwrap()), Outcome::ServerError);
/// ```
pub fn classify_status(status: StatusCode) -> Outcome {
    let code = status.as_u16();
    // Most answers: one range check rather than the errors' comparisons in turn.
    if status.is_success() {
        return Outcome::Ok;
    }
    match code {
        401 | 403 => Outcome::AuthError,
        429 => Outcome::RateLimited,
        408 | 504 => Outcome::Timeout,
        400..=499 => Outcome::ClientError,
        500..=599 => Outcome::ServerError,
        100 | 102..=199 => Outcome::ServerError,
        _ => Outcome::Ok,
    }
}

/// The outcome an in-stream error event implies.
pub fn classify_stream_error(kind: StreamErrorKind) -> Outcome {
    match kind {
        StreamErrorKind::Auth => Outcome::AuthError,
        StreamErrorKind::RateLimited => Outcome::RateLimited,
        StreamErrorKind::Other => Outcome::StreamError,
    }
}

/// The outcome of an error returned by the inner service: `Timeout` when it is (or wraps)
/// a timeout [`is_timeout`] knows (tower's `Elapsed`, tower-http's `TimeoutError`, this
/// crate's [`StreamTimeoutError`], an `io::Error` of kind `TimedOut`); otherwise
/// `ServerError`.
///
/// It takes `&dyn Any` so that any `'static` error type can be inspected without bounds on it:
/// a [`BoxError`] (or a `Box<dyn Error>`) and an `io::Error` are looked into, down their source
/// chain; other types are matched directly.
///
/// ```
/// use tower_stream_monitor::{Outcome, classify::classify_service_error};
/// let timed_out = std::io::Error::new(std::io::ErrorKind::TimedOut, "upstream");
/// assert_eq!(classify_service_error(&timed_out), Outcome::Timeout);
/// let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
/// assert_eq!(classify_service_error(&refused), Outcome::ServerError);
/// ```
pub fn classify_service_error(error: &(dyn Any + 'static)) -> Outcome {
    let chain: Option<&(dyn StdError + 'static)> =
        if let Some(boxed) = error.downcast_ref::<BoxError>() {
            Some(boxed.as_ref())
        } else if let Some(boxed) = error.downcast_ref::<Box<dyn StdError>>() {
            Some(boxed.as_ref())
        } else if let Some(io) = error.downcast_ref::<std::io::Error>() {
            Some(io)
        } else {
            None
        };
    if let Some(chain) = chain {
        return if is_timeout(chain) {
            Outcome::Timeout
        } else {
            Outcome::ServerError
        };
    }
    if error.is::<tower::timeout::error::Elapsed>() || error.is::<StreamTimeoutError>() {
        return Outcome::Timeout;
    }
    #[cfg(feature = "tower-http")]
    if error.is::<tower_http::timeout::TimeoutError>() {
        return Outcome::Timeout;
    }
    Outcome::ServerError
}

/// The outcome of a body error mid-stream: `Timeout` for the timeout errors above, else
/// `StreamError`.
pub fn classify_body_error(error: &(dyn StdError + 'static)) -> Outcome {
    if is_timeout(error) {
        Outcome::Timeout
    } else {
        Outcome::StreamError
    }
}

/// Whether `error` or any error in its `source()` chain is a timeout we know: tower's
/// `Elapsed`, tower-http's `TimeoutError`, this crate's [`StreamTimeoutError`], an
/// `io::Error` of kind `TimedOut`, or an error whose `Debug` is `TimedOut` (the private type
/// reqwest ends its chain with when its `timeout` or `read_timeout` passes: a gateway that
/// relays its upstream's body sees that one).
///
/// ```
/// use std::time::Duration;
/// use tower_stream_monitor::{classify::is_timeout, stream::StreamTimeoutError};
/// let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "upstream");
/// assert!(is_timeout(&io));
/// assert!(is_timeout(&StreamTimeoutError::new(Duration::from_secs(60))));
/// assert!(!is_timeout(&std::fmt::Error));
/// ```
pub fn is_timeout(error: &(dyn StdError + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<tower::timeout::error::Elapsed>()
            || e.is::<StreamTimeoutError>()
            || debug_is(e, "TimedOut")
        {
            return true;
        }
        #[cfg(feature = "tower-http")]
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
            // `io::Error::source` skips the error it wraps; look at that error itself.
            if let Some(inner) = io.get_ref() {
                current = Some(inner as &(dyn StdError + 'static));
                continue;
            }
        }
        current = e.source();
    }
    false
}

/// Whether `value`'s `Debug` output is `expected`, written no further than it matches (no
/// allocation, and a long `Debug` stops at its first byte past `expected`'s). An app's `Debug`
/// that panics (on the early stop, unwrapping the write's error, or for a bug of its own) is no
/// match: classifying a failure never panics, so the request is still recorded as it failed.
fn debug_is(value: &dyn std::fmt::Debug, expected: &str) -> bool {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        debug_starts(value, expected)
    }))
    .unwrap_or(false)
}

fn debug_starts(value: &dyn std::fmt::Debug, expected: &str) -> bool {
    use std::fmt::Write as _;
    /// Compares what is written with what is left of `expected`; an error stops the writing.
    struct Matches<'a>(&'a str);
    impl std::fmt::Write for Matches<'_> {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            match self.0.strip_prefix(s) {
                Some(rest) => {
                    self.0 = rest;
                    Ok(())
                }
                None => Err(std::fmt::Error),
            }
        }
    }
    let mut left = Matches(expected);
    write!(left, "{value:?}").is_ok() && left.0.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let c = |n| classify_status(StatusCode::from_u16(n).unwrap());
        assert_eq!(c(200), Outcome::Ok);
        assert_eq!(c(304), Outcome::Ok);
        assert_eq!(c(403), Outcome::AuthError);
        assert_eq!(c(408), Outcome::Timeout);
        assert_eq!(c(404), Outcome::ClientError);
        assert_eq!(c(500), Outcome::ServerError);
        assert_eq!(c(101), Outcome::Ok);
        assert_eq!(c(100), Outcome::ServerError);
        assert_eq!(c(103), Outcome::ServerError);
    }

    /// Errors named `TimedOut` (reqwest's) are timeouts, other names and longer `Debug`s not.
    #[test]
    fn errors_named_timed_out() {
        #[derive(Debug)]
        struct TimedOut;
        #[derive(Debug)]
        struct TimedOutLater;
        #[derive(Debug)]
        struct Outer(TimedOut);
        for (value, expected) in [
            (&TimedOut as &dyn std::fmt::Debug, true),
            (&TimedOutLater, false),
            (&Outer(TimedOut), false),
            (&"TimedOut", false),
        ] {
            assert_eq!(debug_is(value, "TimedOut"), expected, "{value:?}");
        }
    }

    #[test]
    fn service_errors() {
        let elapsed: BoxError = Box::new(tower::timeout::error::Elapsed::new());
        assert_eq!(classify_service_error(&elapsed), Outcome::Timeout);
        let other: BoxError = "boom".into();
        assert_eq!(classify_service_error(&other), Outcome::ServerError);
        assert_eq!(
            classify_service_error(&std::io::Error::other("x")),
            Outcome::ServerError
        );
        assert_eq!(
            classify_service_error(&tower::timeout::error::Elapsed::new()),
            Outcome::Timeout
        );
        // Unboxed and non-`Send` errors are looked into too, down their source chain.
        let wrapped = std::io::Error::other(tower::timeout::error::Elapsed::new());
        assert_eq!(classify_service_error(&wrapped), Outcome::Timeout);
        let local: Box<dyn std::error::Error> =
            Box::new(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert_eq!(classify_service_error(&local), Outcome::Timeout);
    }

    #[test]
    fn body_errors_look_through_sources() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow");
        assert_eq!(classify_body_error(&io), Outcome::Timeout);
        let wrapped =
            std::io::Error::other(StreamTimeoutError::new(std::time::Duration::from_secs(1)));
        assert_eq!(classify_body_error(&wrapped), Outcome::Timeout);
        assert_eq!(
            classify_body_error(&std::io::Error::other("reset")),
            Outcome::StreamError
        );
    }
}
