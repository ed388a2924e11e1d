//! Label sources and their guards: [`StreamLabels`] set by handlers, header validation, route
//! patterns, and the per-label cardinality cap.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::label::Label;

/// Longest value a client may send as a label (bytes): a provider or model header, a user id,
/// a request id.
pub(crate) const MAX_LABEL_LEN: usize = 64;

/// Longest value the app or its upstream may name as a label (bytes): a route, a provider or
/// model from `StreamLabels`, the `request_labels` closure or the stream. Longer than a
/// client's, for real routes and model names such as Vertex AI's and Bedrock's.
pub(crate) const MAX_TRUSTED_LABEL_LEN: usize = 256;

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
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
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
pub(crate) fn is_valid_label(value: &str) -> bool {
    is_printable_ascii(value, MAX_LABEL_LEN)
}

/// Whether a value the app or its upstream names may become a label: 1 to 256 bytes of
/// printable ASCII.
pub(crate) fn is_valid_trusted_label(value: &str) -> bool {
    is_printable_ascii(value, MAX_TRUSTED_LABEL_LEN)
}

fn is_printable_ascii(value: &str, max_len: usize) -> bool {
    !value.is_empty()
        && value.len() <= max_len
        && value.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
}

/// Where a label value came from, which decides the budget it is interned under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LabelSource {
    /// The application or the upstream: the handler's [`StreamLabels`], the `request_labels`
    /// closure, a route, the model a provider reported in its stream.
    Trusted,
    /// A request header: the client alone chose it.
    Header,
}

/// Trusted values a thread found last, with the interner they belong to: a request's route (and
/// provider, model) is found again here without the interner's lock, whose reader count every
/// core would otherwise write per request. Trusted values are never removed, so an entry stays
/// right for its interner's life.
const RECENT_VALUES: usize = 16;

thread_local! {
    static RECENT: std::cell::RefCell<Vec<(u64, Label)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Interners get distinct ids, so one thread's cache serves several monitors.
static INTERNER_IDS: AtomicU64 = AtomicU64::new(0);

fn recent_value(interner: u64, value: &str) -> Option<Label> {
    RECENT
        .try_with(|recent| {
            recent
                .try_borrow()
                .ok()?
                .iter()
                .rev()
                .find(|(id, v)| *id == interner && **v == *value)
                .map(|&(_, v)| v)
        })
        .ok()
        .flatten()
}

fn remember_value(interner: u64, value: Label) {
    let _ = RECENT.try_with(|recent| {
        if let Ok(mut recent) = recent.try_borrow_mut() {
            if recent.len() == RECENT_VALUES {
                // The oldest makes room; the newest is found first.
                recent.remove(0);
            }
            recent.push((interner, value));
        }
    });
}

/// Interns the values of one label under two budgets: trusted values (the app's and the
/// upstream's) up to `cap`, header values up to `header_cap` of their own. A new value past its
/// budget folds into `other`. A header value the trusted side already knows is that value, so
/// junk headers can never push a real provider or model into `other`. Values are [`Label`]s, so
/// records and metric keys copy them for free.
#[derive(Debug)]
pub(crate) struct LabelInterner {
    /// Its key in the threads' caches of recent values.
    id: u64,
    trusted: Tier,
    header: Tier,
    other: Label,
    overflowed: AtomicU64,
}

#[derive(Debug)]
struct Tier {
    cap: usize,
    values: RwLock<HashSet<Label, foldhash::fast::RandomState>>,
}

impl Tier {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            values: RwLock::new(HashSet::default()),
        }
    }

    fn get(&self, value: &str) -> Option<Label> {
        // A panic while holding the lock cannot leave the map half-written (insert is atomic
        // from our side), so a poisoned lock is still safe to read.
        self.values
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(value)
            .copied()
    }

    /// The shared value, or `None` once the tier is full.
    fn insert(&self, value: &str) -> Option<Label> {
        let mut values = self.values.write().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = values.get(value) {
            return Some(*v);
        }
        if values.len() >= self.cap {
            return None;
        }
        // `None` too when the process-wide pool is full: then the value folds into `other`,
        // counted, as past this tier's own cap.
        let label = Label::try_new(value)?;
        values.insert(label);
        Some(label)
    }
}

impl LabelInterner {
    pub(crate) fn new(cap: usize, header_cap: usize) -> Self {
        Self {
            id: INTERNER_IDS.fetch_add(1, Ordering::Relaxed),
            trusted: Tier::new(cap),
            header: Tier::new(header_cap),
            other: Label::other(),
            overflowed: AtomicU64::new(0),
        }
    }

    /// The shared value for `value`, or `None` once its source's budget is spent (the caller
    /// records `other`, counted by [`fold`](Self::fold)).
    pub(crate) fn intern(&self, value: &str, source: LabelSource) -> Option<Label> {
        if let Some(v) = recent_value(self.id, value) {
            return Some(v);
        }
        if let Some(v) = self.trusted.get(value) {
            remember_value(self.id, v);
            return Some(v);
        }
        match source {
            LabelSource::Trusted => self.trusted.insert(value),
            LabelSource::Header => self.header.get(value).or_else(|| self.header.insert(value)),
        }
    }

    /// [`intern`](Self::intern), folded into `other` past the budget.
    #[cfg(test)]
    pub(crate) fn interned(&self, value: &str, source: LabelSource) -> Label {
        self.intern(value, source).unwrap_or_else(|| self.fold())
    }

    /// A value folded into `other` (past its budget, or no valid label): counted, and `other`.
    pub(crate) fn fold(&self) -> Label {
        self.overflowed.fetch_add(1, Ordering::Relaxed);
        self.other
    }

    /// How many times a value was folded into `other`.
    pub(crate) fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }
}

/// A record's series labels: the label set one set of series is kept for. Labels are copied
/// for free, so the set is its own map key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct LabelSet {
    pub(crate) provider: Label,
    pub(crate) model: Label,
    pub(crate) route: Label,
    /// `None` for a request that is not an LLM call.
    pub(crate) operation: Option<&'static str>,
    pub(crate) response_model: Option<Label>,
}

impl LabelSet {
    /// Whether these are the very labels of `set` (their addresses, not only their text), and
    /// the same operation.
    #[inline]
    pub(crate) fn is(&self, set: &LabelSet) -> bool {
        self.provider.is(set.provider)
            && self.model.is(set.model)
            && self.route.is(set.route)
            && match (self.operation, set.operation) {
                (None, None) => true,
                // Mostly the same constant: its address first, its text only if they differ.
                (Some(a), Some(b)) => std::ptr::eq(a, b) || a == b,
                _ => false,
            }
            && match (self.response_model, set.response_model) {
                (None, None) => true,
                (Some(a), Some(b)) => a.is(b),
                _ => false,
            }
    }

    /// The values in label order (provider, model, route, operation, response model), `""`
    /// for an absent one.
    #[cfg(feature = "otlp")]
    pub(crate) fn parts(&self) -> [&'static str; 5] {
        [
            self.provider.as_str(),
            self.model.as_str(),
            self.route.as_str(),
            self.operation.unwrap_or(""),
            self.response_model.map_or("", |m| m.as_str()),
        ]
    }
}

/// Caps the distinct label sets (provider, model, route, operation, response model) that reach the windows, the
/// Prometheus exposition and the `metrics` facade: each combination is a set of series. Past
/// the budget a new combination is recorded as `other`/`other`/`other`, so the number of series
/// and the cost of a scrape stay bounded whatever clients send. Combinations with a label taken
/// from a request header spend a quarter of the budget of their own, so they can never crowd
/// out the combinations the app and its upstreams name.
#[derive(Debug)]
pub(crate) struct SeriesBudget {
    /// Its key in the threads' lists of recently admitted label sets.
    id: u64,
    cap: usize,
    header_cap: usize,
    known: RwLock<HashSet<LabelSet, foldhash::fast::RandomState>>,
    /// How many of `known` came with a header label.
    from_headers: AtomicU64,
    other: Label,
    overflowed: AtomicU64,
}

impl SeriesBudget {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            id: BUDGET_IDS.fetch_add(1, Ordering::Relaxed),
            cap,
            header_cap: (cap / 4).max(1),
            known: RwLock::new(HashSet::default()),
            from_headers: AtomicU64::new(0),
            other: Label::other(),
            overflowed: AtomicU64::new(0),
        }
    }

    /// Admits a record's label set. Returns `false` when it is past the budget: the record's
    /// labels must then be folded into [`other`](Self::other).
    #[inline]
    pub(crate) fn admit(&self, set: &LabelSet, source: LabelSource) -> bool {
        self.recently_admitted(set) || self.admit_known(set, source)
    }

    /// Whether this thread admitted `set` lately, found by address: no lock, no hashing.
    #[inline]
    fn recently_admitted(&self, set: &LabelSet) -> bool {
        ADMITTED
            .try_with(|admitted| {
                admitted
                    .try_borrow()
                    .is_ok_and(|a| a.iter().any(|(id, k)| *id == self.id && k.is(set)))
            })
            .unwrap_or(false)
    }

    /// Remembers `set` as this thread's latest admitted, forgetting its oldest.
    fn remember(&self, set: &LabelSet) {
        let _ = ADMITTED.try_with(|admitted| {
            if let Ok(mut admitted) = admitted.try_borrow_mut() {
                if admitted.len() == RECENT_SETS {
                    admitted.pop();
                }
                admitted.insert(0, (self.id, *set));
            }
        });
    }

    /// [`admit`](Self::admit), past this thread's recent sets: the shared set of known ones.
    #[inline(never)]
    fn admit_known(&self, set: &LabelSet, source: LabelSource) -> bool {
        if self
            .known
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(set)
        {
            self.remember(set);
            return true;
        }
        let key = *set;
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        if known.contains(&key) {
            drop(known);
            self.remember(set);
            return true;
        }
        // The budgets are exclusive: `cap` for all, of which at most `header_cap` from headers,
        // while the rest stays for the trusted ones.
        let headers = self.from_headers.load(Ordering::Relaxed) as usize;
        let room = match source {
            LabelSource::Trusted => {
                known.len() - headers < self.cap - self.header_cap.min(self.cap - 1)
            }
            LabelSource::Header => headers < self.header_cap && known.len() < self.cap,
        };
        if room {
            known.insert(key);
            if source == LabelSource::Header {
                self.from_headers.fetch_add(1, Ordering::Relaxed);
            }
            drop(known);
            self.remember(set);
            return true;
        }
        self.overflowed.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// The value every label of a folded record takes.
    pub(crate) fn other(&self) -> Label {
        self.other
    }

    /// How many records were folded into `other`.
    pub(crate) fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }
}

/// Admitted label sets each thread remembers.
const RECENT_SETS: usize = 4;

thread_local! {
    /// The label sets this thread's records were admitted with last, newest first, with the
    /// budget that admitted them: a record's set is found again by the addresses of its interned
    /// values, without the budget's lock (whose count every core would otherwise write per
    /// request). An admitted set stays admitted, so an entry stays right for its budget's life;
    /// a label's address is its value's for the life of the process.
    static ADMITTED: std::cell::RefCell<Vec<(u64, LabelSet)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Budgets get distinct ids, so one thread's list serves several monitors.
static BUDGET_IDS: AtomicU64 = AtomicU64::new(0);

/// A route pattern such as `/v1/chat/completions` or `/v1beta/models/{model}:streamGenerateContent`.
///
/// A segment is a literal, or contains one `{name}` (any non-empty text, with the literal prefix
/// and suffix around it), or is `{*rest}` (all remaining segments).
#[derive(Debug, Clone)]
pub(crate) struct RoutePattern {
    pattern: Label,
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
        // The pattern is the `route` label of the paths it matches.
        if !is_valid_trusted_label(pattern) {
            return Err(format!(
                "route pattern {pattern:?} must be at most {MAX_TRUSTED_LABEL_LEN} bytes of printable ASCII"
            ));
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
            pattern: Label::try_new(pattern).ok_or_else(|| {
                format!("route pattern {pattern:?}: the process-wide pool of labels is full")
            })?,
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

    pub(crate) fn pattern(&self) -> Label {
        self.pattern
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_short_printable_ascii() {
        assert!(is_valid_label("openai"));
        assert!(is_valid_label("gpt 4"));
        assert!(!is_valid_label("bad\nvalue"));
        assert!(!is_valid_label(""));
        assert!(!is_valid_label(&"x".repeat(65)));
        assert!(!is_valid_label("caf\u{e9}"));
    }

    #[test]
    fn a_threads_recent_values_belong_to_their_interner() {
        let a = LabelInterner::new(4, 1);
        let b = LabelInterner::new(4, 1);
        let first = a.interned("/v1/chat", LabelSource::Trusted);
        // Found once through the lock, then from this thread's cache: the same value.
        let again = a.interned("/v1/chat", LabelSource::Trusted);
        let cached = a.interned("/v1/chat", LabelSource::Header);
        assert!(first.is(again) && first.is(cached));
        // Another interner finds the value in its own budget, never in a's list.
        assert_eq!(b.trusted.values.read().unwrap().len(), 0);
        let other = b.interned("/v1/chat", LabelSource::Trusted);
        assert!(first.is(other));
        assert_eq!(b.trusted.values.read().unwrap().len(), 1);
        // The cache stays bounded.
        for i in 0..100 {
            let v = format!("/r{i}");
            a.interned(&v, LabelSource::Trusted);
            a.interned(&v, LabelSource::Trusted);
        }
        RECENT.with(|r| assert!(r.borrow().len() <= RECENT_VALUES));
    }

    #[test]
    fn interner_caps_distinct_values() {
        let t = LabelSource::Trusted;
        let interner = LabelInterner::new(2, 1);
        assert_eq!(&*interner.interned("a", t), "a");
        assert_eq!(&*interner.interned("b", t), "b");
        assert_eq!(&*interner.interned("c", t), "other");
        assert_eq!(&*interner.interned("a", t), "a");
        assert_eq!(interner.overflowed(), 1);
    }

    /// Header values past their budget never reach the process-wide pool of labels, which
    /// never shrinks: what clients send cannot grow it past the budget.
    #[test]
    fn header_values_past_their_budget_are_never_kept() {
        let interner = LabelInterner::new(64, 4);
        let values: Vec<String> = (0..100).map(|i| format!("header-junk-{i}")).collect();
        for v in &values {
            interner.interned(v, LabelSource::Header);
        }
        let kept: Vec<bool> = values.iter().map(|v| Label::is_kept(v)).collect();
        assert!(kept[..4].iter().all(|k| *k));
        assert!(!kept[4..].iter().any(|k| *k));
        assert_eq!(interner.overflowed(), 96);
    }

    #[test]
    fn header_values_have_their_own_budget() {
        let interner = LabelInterner::new(2, 1);
        let h = LabelSource::Header;
        assert_eq!(&*interner.interned("junk1", h), "junk1");
        assert_eq!(&*interner.interned("junk2", h), "other");
        assert_eq!(&*interner.interned("junk3", h), "other");
        // The trusted budget is untouched by headers...
        assert_eq!(
            &*interner.interned("openai", LabelSource::Trusted),
            "openai"
        );
        // ...and a header naming a trusted value gets that value, whatever the header budget.
        assert_eq!(&*interner.interned("openai", h), "openai");
        assert_eq!(interner.overflowed(), 2);
    }

    #[test]
    fn series_budget_folds_new_combinations() {
        let (t, h) = (LabelSource::Trusted, LabelSource::Header);
        let budget = SeriesBudget::new(4);
        let admit = |m: &str, source| {
            let (p, m, r) = (Label::new("p"), Label::new(m), Label::new("/r"));
            let set = LabelSet {
                provider: p,
                model: m,
                route: r,
                operation: Some("chat"),
                response_model: Some(m),
            };
            !budget.admit(&set, source)
        };
        // One of the four is for header-sourced combinations.
        assert!(!admit("h1", h));
        assert!(admit("h2", h));
        assert!(!admit("m1", t));
        assert!(!admit("m2", t));
        assert!(!admit("m3", t));
        assert!(admit("m4", t));
        assert!(!admit("m1", t));
        assert!(!admit("h1", h));
        assert_eq!(budget.overflowed(), 2);
    }

    #[test]
    fn a_threads_admitted_sets_belong_to_their_budget() {
        let t = LabelSource::Trusted;
        let (p, r) = (Label::new("p"), Label::new("/r"));
        let models: Vec<Label> = (0..8).map(|i| Label::new(&format!("m{i}"))).collect();
        let set = |m| LabelSet {
            provider: p,
            model: models[m],
            route: r,
            operation: Some("chat"),
            response_model: None,
        };
        // Room for one trusted combination in each.
        let (a, b) = (SeriesBudget::new(2), SeriesBudget::new(2));
        assert!(a.admit(&set(0), t));
        // Found again in this thread's list, as often as asked.
        assert!(a.admit(&set(0), t) && a.admit(&set(0), t));
        // `b` never takes `a`'s admission for its own: its one combination is another.
        assert!(b.admit(&set(1), t));
        assert!(!b.admit(&set(0), t));
        assert!(!a.admit(&set(1), t));
        // Other threads, whose lists are empty, get the same answers.
        std::thread::scope(|s| {
            s.spawn(|| {
                assert!(a.admit(&set(0), t) && !a.admit(&set(1), t));
                assert!(b.admit(&set(1), t) && !b.admit(&set(0), t));
            });
        });
        assert_eq!((a.overflowed(), b.overflowed()), (2, 2));
        // The list stays bounded.
        let many = SeriesBudget::new(64);
        for m in 0..models.len() {
            assert!(many.admit(&set(m), t) && many.admit(&set(m), t));
        }
        ADMITTED.with(|a| assert!(a.borrow().len() <= RECENT_SETS));
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
