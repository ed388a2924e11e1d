//! Layer 2: the tracing-subscriber layer that turns WARN and ERROR events into error records.

use std::fmt::{self, Write as _};
use std::hash::{Hash, Hasher};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::redact::{REDACTED, cut, is_secret_field, redact};
use super::store::{ErrorLevel, ErrorRecord, Fields};
use std::sync::Arc;

use super::scope;
use super::store::ErrorStore;
use crate::window::{Clock, WindowTime};

/// The span fields copied into error records, nearest span first.
const CONTEXT_FIELDS: [&str; 6] = [
    "request_id",
    "user_id",
    "provider",
    "route",
    "trace_id",
    "span_id",
];
/// Fields kept per event; more are dropped (the record says how many in `fields_dropped`).
const MAX_FIELDS: usize = 32;
/// Span names kept per record (innermost ones when the scope is deeper).
const MAX_SPANS: usize = 16;
/// Bytes kept of each context field.
const MAX_CONTEXT_BYTES: usize = 256;
/// Longest field value taken for the name of a secret held by the next field.
const MAX_SECRET_NAME: usize = 64;

/// Which callsites the error layer sees: events at or above its level, and the spans at INFO and
/// above that can give them context, except the stream layer's own request span (its context
/// reaches the layer without a span: see `scope.rs`). Interest is decided once per callsite, and
/// the layer's level hint is INFO, so a `debug!` costs nothing more than it did without the layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorFilter {
    level: Level,
}

impl ErrorFilter {
    fn wants(&self, meta: &Metadata<'_>) -> bool {
        if meta.is_span() {
            *meta.level() <= Level::INFO && meta.target() != crate::SESSION_TARGET
        } else {
            *meta.level() <= self.level
        }
    }
}

impl<S> Filter<S> for ErrorFilter {
    fn enabled(&self, meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        self.wants(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.wants(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<tracing_subscriber::filter::LevelFilter> {
        Some(tracing_subscriber::filter::LevelFilter::INFO)
    }
}

/// Context fields of one span, kept in its extensions. Values that fit are kept as given:
/// they are redacted only if an event copies them into a record, so a span costs no regex
/// search. Longer ones are redacted, then cut: a cut first could keep the start of a secret
/// too short for `redact` to recognise.
#[derive(Default, Clone)]
struct SpanContext([Option<String>; 6]);

impl Visit for SpanContext {
    fn record_str(&mut self, field: &Field, value: &str) {
        if let Some(i) = CONTEXT_FIELDS.iter().position(|f| *f == field.name()) {
            self.0[i] = Some(if value.len() <= MAX_CONTEXT_BYTES {
                value.to_owned()
            } else {
                // Only the start of a long value is kept, so only a window past the cut is
                // read: enough for a secret that starts before it, and a span made with a huge
                // value (a client's header) costs no more than a small one. Redaction can
                // shrink the window (`password=<800 bytes>` becomes 19), which would bring its
                // edge, and a secret cut short there, into what is kept: the window is widened
                // until the redacted text keeps that edge as far past the cut.
                let mut max = MAX_CONTEXT_BYTES * 4;
                let redacted = loop {
                    let window = prefix(value, max);
                    let redacted = redact(window);
                    if window.len() == value.len() || redacted.len() >= MAX_CONTEXT_BYTES * 4 {
                        break redacted.into_owned();
                    }
                    max = max.saturating_mul(2);
                };
                cut(redacted, MAX_CONTEXT_BYTES)
            });
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if CONTEXT_FIELDS.contains(&field.name()) {
            // `write!`, not `format!`: a Debug that fails is no panic.
            let mut text = String::new();
            let _ = write!(text, "{value:?}");
            self.record_str(field, &text);
        }
    }
}

/// `text`'s first `max` bytes or fewer, on a character boundary.
fn prefix(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Whether a field's value is the name of a secret (`x-api-key`, `password`, also quoted as
/// Debug writes it): a name's characters only, and a name [`is_secret_field`] knows.
fn is_secret_name(value: &str) -> bool {
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    value.len() <= MAX_SECRET_NAME
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && is_secret_field(value)
}

/// Collects an event's message and fields (names too) as redacted, capped strings: each text
/// is redacted before it is cut.
struct EventVisitor {
    message: String,
    fields: Vec<(String, String)>,
    dropped: usize,
    max_bytes: usize,
    /// The last field's value names a secret (`header = "x-api-key"`): the next field's value
    /// is taken for that secret's (`value = "…"`) and redacted whole.
    names_secret: bool,
}

impl EventVisitor {
    fn push(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.message = cut(redact(&value).into_owned(), self.max_bytes);
            return;
        }
        if self.fields.len() >= MAX_FIELDS {
            self.dropped += 1;
            return;
        }
        let named_by_previous = std::mem::replace(&mut self.names_secret, is_secret_name(&value));
        let value = if named_by_previous || is_secret_field(field.name()) {
            REDACTED.to_owned()
        } else {
            cut(redact(&value).into_owned(), self.max_bytes)
        };
        // A name can be any string (`error!("sk-…" = 1)`), so it is redacted like a value.
        let name = cut(redact(field.name()).into_owned(), self.max_bytes);
        self.fields.push((name, value));
    }
}

impl Visit for EventVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, value.to_owned());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut text = String::new();
        let _ = write!(text, "{}", super::ErrorChain(value));
        self.push(field, text);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.push(field, text);
    }

    /// Bytes are kept as text (invalid UTF-8 replaced), so that redaction reads them: as hex,
    /// tracing's default, a body's `"api_key":"…"` would pass unseen.
    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.push(field, String::from_utf8_lossy(value).into_owned());
    }
}

/// The tracing-subscriber layer made by [`Monitor::error_layer`](crate::Monitor::error_layer): captures WARN and ERROR
/// events (configurable) with their span scope and request context into the monitor's bounded,
/// redacted error store, which `GET {prefix}/errors` and `/errors/summary` serve.
///
/// It holds only what it needs: the store, the clock and its size cap, not the monitor.
#[derive(Clone)]
pub(crate) struct ErrorLayer {
    store: Arc<ErrorStore>,
    clock: Arc<dyn Clock>,
    window_time: WindowTime,
    max_field_bytes: usize,
}

impl std::fmt::Debug for ErrorLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErrorLayer")
            .field("max_field_bytes", &self.max_field_bytes)
            .finish_non_exhaustive()
    }
}

impl ErrorLayer {
    pub(crate) fn new(
        store: Arc<ErrorStore>,
        clock: Arc<dyn Clock>,
        window_time: WindowTime,
        max_field_bytes: usize,
    ) -> Self {
        Self {
            store,
            clock,
            window_time,
            max_field_bytes,
        }
    }

    pub(crate) fn filter(level: Level) -> ErrorFilter {
        ErrorFilter { level }
    }
}

/// A fingerprint stable across runs: the callsite's target, file, line and level.
fn fingerprint(meta: &Metadata<'_>) -> u64 {
    // `DefaultHasher::new()` uses fixed keys, so the value does not change between processes.
    let mut h = std::hash::DefaultHasher::new();
    meta.target().hash(&mut h);
    meta.file().hash(&mut h);
    meta.line().hash(&mut h);
    meta.name().hash(&mut h);
    meta.level().as_str().hash(&mut h);
    h.finish()
}

impl<S> Layer<S> for ErrorLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let fields = attrs.metadata().fields();
        if !CONTEXT_FIELDS.iter().any(|f| fields.field(f).is_some()) {
            return;
        }
        let mut context = SpanContext::default();
        attrs.record(&mut context);
        if let Some(span) = ctx.span(id) {
            // Replaced, not inserted: the error layers of several monitors on one subscriber
            // each keep this context, alike (inserting twice panics).
            span.extensions_mut().replace(context);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        // Formatted before the extensions are locked: a value's Debug may log, and that
        // event reads them.
        let mut update = SpanContext::default();
        values.record(&mut update);
        if update.0.iter().all(Option::is_none) {
            return;
        }
        if let Some(context) = span.extensions_mut().get_mut::<SpanContext>() {
            for (slot, value) in context.0.iter_mut().zip(update.0) {
                if value.is_some() {
                    *slot = value;
                }
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let level = if *meta.level() == Level::ERROR {
            ErrorLevel::Error
        } else {
            ErrorLevel::Warn
        };
        let mut visitor = EventVisitor {
            message: String::new(),
            fields: Vec::new(),
            dropped: 0,
            max_bytes: self.max_field_bytes,
            names_secret: false,
        };
        event.record(&mut visitor);
        if visitor.dropped > 0 {
            visitor
                .fields
                .push(("fields_dropped".into(), visitor.dropped.to_string()));
        }

        let mut spans = Vec::new();
        let mut context: [Option<String>; 6] = Default::default();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                if spans.len() < MAX_SPANS {
                    spans.push(redact(span.name()).into_owned());
                }
                if let Some(found) = span.extensions().get::<SpanContext>() {
                    for (slot, value) in context.iter_mut().zip(&found.0) {
                        if slot.is_none() {
                            slot.clone_from(value);
                        }
                    }
                }
            }
        }
        // The stream layer's request, marked current on this thread (see `scope.rs`): the
        // outermost scope, filling what no span gave.
        scope::with_current(|tags| {
            let Some(tags) = tags else { return };
            if spans.len() < MAX_SPANS {
                spans.push(scope::REQUEST_SCOPE_NAME.to_owned());
            }
            let values = [
                Some(tags.request_id.to_string()),
                tags.user_id.as_deref().map(str::to_owned),
                tags.provider.as_str().map(str::to_owned),
                Some(tags.route.to_string()),
                Some(tags.trace().trace_id().to_string()),
                Some(tags.trace().span_id().to_string()),
            ];
            for (slot, value) in context.iter_mut().zip(values) {
                if slot.is_none() {
                    // Cut below, after redaction.
                    *slot = value;
                }
            }
        });
        spans.reverse();
        let [request_id, user_id, provider, route, trace_id, span_id] =
            context.map(|v| v.map(|v| cut(redact(&v).into_owned(), MAX_CONTEXT_BYTES)));
        let print = fingerprint(meta);
        let record = ErrorRecord {
            timestamp: self.clock.now(),
            level,
            target: cut(redact(meta.target()).into_owned(), 256),
            message: visitor.message,
            fields: Fields::new(visitor.fields),
            spans,
            request_id,
            user_id,
            provider,
            route,
            trace_id,
            span_id,
            location: meta.file().map(|f| match meta.line() {
                Some(line) => format!("{f}:{line}"),
                None => f.to_owned(),
            }),
            fingerprint: format!("{print:016x}"),
        };
        self.store
            .push(print, record, self.window_time.secs(&*self.clock));
    }
}
