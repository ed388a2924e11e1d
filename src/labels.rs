//! Label sources and their guards: [`StreamLabels`] set by handlers, header validation, route
//! patterns, and the per-label cardinality cap.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Longest value accepted as a label (bytes).
pub const MAX_LABEL_LEN: usize = 64;

/// Labels a handler knows best: the upstream provider and model it actually used.
///
/// Insert it into the response extensions; it wins over every other label source.
///
/// ```
/// use tower_stream_monitor::StreamLabels;
///
/// let mut response = http::Response::new(());
/// response.extensions_mut().insert(StreamLabels::new("openai").with_model("gpt-4o-mini"));
/// ```
///
/// With axum, return it as a response part: `(StreamLabels::new("openai"), Sse::new(stream))`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamLabels {
    /// The provider (`openai`, `anthropic`, ...).
    pub provider: Option<Cow<'static, str>>,
    /// The model (`gpt-4o-mini`, ...).
    pub model: Option<Cow<'static, str>>,
}

impl StreamLabels {
    /// Labels naming the provider.
    pub fn new(provider: impl Into<Cow<'static, str>>) -> Self {
        Self {
            provider: Some(provider.into()),
            model: None,
        }
    }

    /// Adds the model.
    pub fn with_model(mut self, model: impl Into<Cow<'static, str>>) -> Self {
        self.model = Some(model.into());
        self
    }
}

#[cfg(feature = "axum")]
impl axum::response::IntoResponseParts for StreamLabels {
    type Error = std::convert::Infallible;

    fn into_response_parts(
        self,
        mut res: axum::response::ResponseParts,
    ) -> Result<axum::response::ResponseParts, Self::Error> {
        res.extensions_mut().insert(self);
        Ok(res)
    }
}

/// The user a request is made for, as a request extension (set by an auth middleware). Used when
/// the configured user id header is absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserId(pub Cow<'static, str>);

/// Whether `value` may become a label: 1 to 64 bytes of printable ASCII (space allowed, no
/// control characters).
///
/// ```
/// use tower_stream_monitor::labels::is_valid_label;
/// assert!(is_valid_label("openai"));
/// assert!(!is_valid_label("bad\nvalue"));
/// assert!(!is_valid_label(&"x".repeat(65)));
/// ```
pub fn is_valid_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_LABEL_LEN
        && value.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
}

/// Interns the values of one label up to a cap of distinct values; later new values fold into
/// `other`. Values are shared `Arc<str>`s, so records and metric keys clone them for free.
#[derive(Debug)]
pub(crate) struct LabelInterner {
    cap: usize,
    values: RwLock<HashMap<Box<str>, Arc<str>>>,
    other: Arc<str>,
    overflowed: AtomicU64,
}

impl LabelInterner {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            values: RwLock::new(HashMap::new()),
            other: Arc::from("other"),
            overflowed: AtomicU64::new(0),
        }
    }

    /// The shared value for `value`, or `other` once `cap` distinct values are known.
    pub(crate) fn intern(&self, value: &str) -> Arc<str> {
        if let Some(v) = self.read().get(value) {
            return v.clone();
        }
        let mut values = match self.values.write() {
            Ok(v) => v,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(v) = values.get(value) {
            return v.clone();
        }
        if values.len() >= self.cap {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            return self.other.clone();
        }
        let shared: Arc<str> = Arc::from(value);
        values.insert(Box::from(value), shared.clone());
        shared
    }

    /// How many times a value was folded into `other`.
    pub(crate) fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Box<str>, Arc<str>>> {
        // A panic while holding the lock cannot leave the map half-written (insert is atomic
        // from our side), so a poisoned lock is still safe to read.
        match self.values.read() {
            Ok(v) => v,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// A route pattern such as `/v1/chat/completions` or `/v1beta/models/{model}:streamGenerateContent`.
///
/// A segment is a literal, or contains one `{name}` (any non-empty text, with the literal prefix
/// and suffix around it), or is `{*rest}` (all remaining segments).
#[derive(Debug, Clone)]
pub(crate) struct RoutePattern {
    pattern: Arc<str>,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    Param { prefix: String, suffix: String },
    Rest,
}

impl RoutePattern {
    pub(crate) fn parse(pattern: &str) -> Result<Self, String> {
        if !pattern.starts_with('/') {
            return Err(format!("route pattern {pattern:?} must start with '/'"));
        }
        let mut segments = Vec::new();
        let parts: Vec<&str> = pattern[1..].split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            let segment = match (part.find('{'), part.find('}')) {
                (None, None) => Segment::Literal((*part).to_owned()),
                (Some(open), Some(close))
                    if open < close && part[close + 1..].find('{').is_none() =>
                {
                    let name = &part[open + 1..close];
                    if let Some(rest) = name.strip_prefix('*') {
                        if i + 1 != parts.len()
                            || open != 0
                            || close + 1 != part.len()
                            || rest.is_empty()
                        {
                            return Err(format!(
                                "route pattern {pattern:?}: {{*rest}} must be a whole last segment"
                            ));
                        }
                        Segment::Rest
                    } else if name.is_empty() {
                        return Err(format!("route pattern {pattern:?}: empty parameter name"));
                    } else {
                        Segment::Param {
                            prefix: part[..open].to_owned(),
                            suffix: part[close + 1..].to_owned(),
                        }
                    }
                }
                _ => {
                    return Err(format!(
                        "route pattern {pattern:?}: unbalanced braces in {part:?}"
                    ));
                }
            };
            segments.push(segment);
        }
        Ok(Self {
            pattern: Arc::from(pattern),
            segments,
        })
    }

    pub(crate) fn matches(&self, path: &str) -> bool {
        let Some(path) = path.strip_prefix('/') else {
            return false;
        };
        let mut parts = path.split('/');
        for segment in &self.segments {
            let Some(part) = parts.next() else {
                return false;
            };
            match segment {
                Segment::Literal(l) => {
                    if part != l {
                        return false;
                    }
                }
                Segment::Param { prefix, suffix } => {
                    if part.len() <= prefix.len() + suffix.len()
                        || !part.starts_with(prefix.as_str())
                        || !part.ends_with(suffix.as_str())
                    {
                        return false;
                    }
                }
                Segment::Rest => return true,
            }
        }
        parts.next().is_none()
    }

    pub(crate) fn pattern(&self) -> &Arc<str> {
        &self.pattern
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interner_caps_distinct_values() {
        let interner = LabelInterner::new(2);
        assert_eq!(&*interner.intern("a"), "a");
        assert_eq!(&*interner.intern("b"), "b");
        assert_eq!(&*interner.intern("c"), "other");
        assert_eq!(&*interner.intern("a"), "a");
        assert_eq!(interner.overflowed(), 1);
    }

    #[test]
    fn route_patterns_match_segments() {
        let p = RoutePattern::parse("/v1beta/models/{model}:streamGenerateContent").unwrap();
        assert!(p.matches("/v1beta/models/gemini-2.5-flash:streamGenerateContent"));
        assert!(!p.matches("/v1beta/models/:streamGenerateContent"));
        assert!(!p.matches("/v1beta/models/x:generateContent"));
        let p = RoutePattern::parse("/files/{*path}").unwrap();
        assert!(p.matches("/files/a/b/c"));
        assert!(!p.matches("/other/a"));
        let p = RoutePattern::parse("/v1/chat/completions").unwrap();
        assert!(p.matches("/v1/chat/completions"));
        assert!(!p.matches("/v1/chat/completions/x"));
        assert!(RoutePattern::parse("v1").is_err());
        assert!(RoutePattern::parse("/a/{x").is_err());
        assert!(RoutePattern::parse("/{*r}/x").is_err());
    }
}
