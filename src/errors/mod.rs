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

/// Displays an error with its `source()` chain: `outer: inner: root`.
pub(crate) struct ErrorChain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}
