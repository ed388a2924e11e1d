//! Layer 2: error records from tracing events (README, Error records).
//!
//! [`Monitor::error_layer`](crate::Monitor::error_layer) gives a tracing-subscriber layer that
//! captures WARN and ERROR events (configurable) with their fields, span scope, request context
//! (`request_id`, `user_id`, `provider`, `route` from the nearest span that has them), callsite
//! location and a per-callsite fingerprint. Secrets are redacted before anything is stored; the
//! store holds the latest 1000 records and at most 1000 callsite groups (then `other`), each
//! value cut to 1 KiB. `GET {prefix}/errors` and `/errors/summary` serve them.
//!
//! ```
//! use tracing_subscriber::layer::SubscriberExt;
//! use tower_stream_monitor::Monitor;
//!
//! let monitor = Monitor::builder().build()?;
//! let subscriber = tracing_subscriber::registry().with(monitor.error_layer());
//! tracing::subscriber::with_default(subscriber, || {
//!     tracing::error!(api_key = "sk-live-123456789", "upstream refused Bearer abc.def");
//! });
//! let summary = monitor.error_summary();
//! assert_eq!(summary.totals.error, 1);
//! let page = monitor.errors(&Default::default());
//! assert_eq!(page.total, 1);
//! assert_eq!(page.errors[0].message, "upstream refused Bearer [REDACTED]");
//! assert_eq!(page.errors[0].fields.get("api_key"), Some("[REDACTED]"));
//! # Ok::<(), tower_stream_monitor::ConfigError>(())
//! ```

mod layer;
mod redact;
pub(crate) mod scope;
mod store;

/// One answer of `GET {prefix}/errors`: the matching records, newest first (as many as the
/// query's `limit`), and how many matched in all.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct ErrorPage {
    /// The records, newest first.
    pub errors: Vec<std::sync::Arc<ErrorRecord>>,
    /// How many stored records matched the query.
    pub total: usize,
}

pub(crate) use layer::ErrorLayer;
pub use redact::{REDACTED, is_secret_field, redact};
pub use store::{
    ErrorGroup, ErrorLevel, ErrorQuery, ErrorRecord, ErrorSummary, Fields, LevelCounts,
};

pub(crate) use store::ErrorStore;

/// Displays an error with its `source()` chain: `outer: inner: root`. A source whose text its
/// wrapper shows already (axum's and hyper's errors show their source in their own text) is not
/// shown again.
pub(crate) struct ErrorChain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

/// Sources shown at most: a chain may be a cycle (a `source()` returning itself), or grow
/// without end.
const MAX_SOURCES: usize = 32;

/// An error's text; a `Display` that fails gives what it wrote, no panic (`to_string` panics).
fn error_text(e: &dyn std::error::Error) -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    let _ = write!(text, "{e}");
    text
}

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Rendered level by level to compare each with its wrapper's: error paths only.
        let mut shown = error_text(self.0);
        f.write_str(&shown)?;
        let mut source = self.0.source();
        let mut depth = 0;
        while let Some(e) = source {
            depth += 1;
            if depth > MAX_SOURCES {
                return f.write_str(": …");
            }
            let text = error_text(e);
            if !shown.contains(&text) {
                write!(f, ": {text}")?;
            }
            shown = text;
            source = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorChain;

    /// An error showing `text`, with `source` behind it.
    #[derive(Debug)]
    struct Level(String, Option<Box<Level>>);

    impl std::fmt::Display for Level {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for Level {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn each_level_is_shown_once() {
        let root = Level("connection reset".into(), None);
        let io = Level("connection reset".into(), Some(Box::new(root)));
        // A wrapper that shows its source (as axum's body error does), around one that does
        // not.
        let wrapped = Level("body error: connection reset".into(), Some(Box::new(io)));
        let outer = Level("stream failed".into(), Some(Box::new(wrapped)));
        assert_eq!(
            ErrorChain(&outer).to_string(),
            "stream failed: body error: connection reset"
        );
        let plain = Level(
            "outer".into(),
            Some(Box::new(Level(
                "inner".into(),
                Some(Box::new(Level("root".into(), None))),
            ))),
        );
        assert_eq!(ErrorChain(&plain).to_string(), "outer: inner: root");
    }
}
