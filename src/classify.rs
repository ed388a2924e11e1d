//! What counts as which [`Outcome`]: small pure functions, apart from what is done about it.

use std::any::Any;
use std::error::Error as StdError;

use http::StatusCode;

use crate::parse::StreamErrorKind;
use crate::record::Outcome;
use crate::timeout::StreamTimeoutError;

/// A boxed error, as tower and hyper pass them around.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The outcome a status code implies; `Ok` for 1xx-3xx.
///
/// ```
/// use http::StatusCode;
/// use tower_stream_monitor::{Outcome, classify::classify_status};
/// assert_eq!(classify_status(StatusCode::UNAUTHORIZED), Outcome::AuthError);
/// assert_eq!(classify_status(StatusCode::GATEWAY_TIMEOUT), Outcome::Timeout);
/// assert_eq!(classify_status(StatusCode::from_u16(529).unwrap()), Outcome::ServerError);
/// ```
pub fn classify_status(status: StatusCode) -> Outcome {
    match status.as_u16() {
        401 | 403 => Outcome::AuthError,
        429 => Outcome::RateLimited,
        408 | 504 => Outcome::Timeout,
        400..=499 => Outcome::ClientError,
        500..=599 => Outcome::ServerError,
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
/// tower's `Elapsed`, tower-http's `TimeoutError` or this crate's [`StreamTimeoutError`];
/// otherwise `ServerError`.
///
/// It takes `&dyn Any` so that any `'static` error type can be inspected without bounds on it:
/// a [`BoxError`] is looked into, other types are matched directly.
pub fn classify_service_error(error: &(dyn Any + 'static)) -> Outcome {
    if let Some(boxed) = error.downcast_ref::<BoxError>() {
        return if is_timeout(boxed.as_ref()) {
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

/// Whether `error` or any error in its `source()` chain is a timeout we know.
pub fn is_timeout(error: &(dyn StdError + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<tower::timeout::error::Elapsed>() || e.is::<StreamTimeoutError>() {
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
