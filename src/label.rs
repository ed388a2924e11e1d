//! [`Label`]: a label value interned for the life of the process.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

/// A label value (a provider, a model, a route), interned once for the life of the process.
///
/// A label is a `&'static str` underneath: copying one into a record, a metric key or an
/// in-flight count writes nothing, where a shared reference count would have every core
/// write the same cache line on every request (ARCHITECTURE.md, The flow, one way). One value
/// has one address, so two labels are compared by address first.
///
/// Values are kept in a process-wide pool that never shrinks, so it is capped: at most
/// [`Label::POOL_VALUES`] values and [`Label::POOL_BYTES`] bytes. Past either, a new value
/// becomes [`OTHER`](Label::OTHER)'s label (and the monitor counts it as folded, as past its
/// own caps), and the first such value logs a warning.
///
/// What the layer records reaches the pool only within a monitor's own caps on label values
/// ([`label_cardinality`](crate::MonitorBuilder::label_cardinality) and
/// [`header_label_cardinality`](crate::MonitorBuilder::header_label_cardinality)): request
/// headers past their budget never do. But every label built with [`Label::new`] or `From`
/// (as [`StreamRecord::new`](crate::StreamRecord::new) builds its labels) is kept for the life
/// of the process, whatever monitor it is for: build labels from the values your app names,
/// never from raw client input. Monitors built one after another (one per tenant, or per
/// configuration reload) share the pool.
///
/// No `Deserialize`: a label from untrusted text would be kept for good.
///
/// ```
/// use tower_stream_monitor::Label;
///
/// let provider = Label::new("openai");
/// assert_eq!(provider, "openai");
/// assert_eq!(provider.as_str(), "openai");
/// // The same value is the same label.
/// assert!(Label::new("openai").is(provider));
/// ```
#[derive(Clone, Copy)]
pub struct Label(&'static str);

/// The pool: the values, the bytes they hold, and its caps.
struct Pool {
    values: HashSet<&'static str, foldhash::fast::RandomState>,
    bytes: usize,
    max_values: usize,
    max_bytes: usize,
    /// The kept `other`: the one address every `other` label has.
    other: &'static str,
}

/// Values every monitor names, kept when the pool is made, so that no cap ever turns them into
/// `other`.
const RESERVED: [&str; 3] = [Label::OTHER, Label::UNKNOWN, Label::UNMATCHED];

impl Pool {
    fn new(max_values: usize, max_bytes: usize) -> Self {
        let mut pool = Self {
            values: HashSet::default(),
            bytes: 0,
            max_values,
            max_bytes,
            other: Label::OTHER,
        };
        for value in RESERVED {
            pool.values.insert(value);
            pool.bytes += value.len();
        }
        pool
    }

    /// The kept value, or `value` kept now; `None` once a cap is reached.
    fn intern(&mut self, value: &str) -> Option<&'static str> {
        if let Some(kept) = self.values.get(value) {
            return Some(kept);
        }
        if self.values.len() >= self.max_values || self.bytes + value.len() > self.max_bytes {
            return None;
        }
        // Leaked on purpose: a label lives as long as the process (its address is its
        // identity), and the caps bound what the pool can ever hold.
        let kept: &'static str = Box::leak(Box::from(value));
        self.values.insert(kept);
        self.bytes += kept.len();
        Some(kept)
    }
}

fn pool() -> &'static RwLock<Pool> {
    static POOL: OnceLock<RwLock<Pool>> = OnceLock::new();
    POOL.get_or_init(|| RwLock::new(Pool::new(Label::POOL_VALUES, Label::POOL_BYTES)))
}

/// Warns once, the first time the pool turns a new value away.
fn warn_full() {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            values = Label::POOL_VALUES,
            bytes = Label::POOL_BYTES,
            "the process-wide pool of label values is full: new values are recorded as `other`"
        );
    }
}

impl Label {
    /// Most values the process-wide pool keeps.
    pub const POOL_VALUES: usize = 65_536;

    /// Most bytes the process-wide pool keeps (4 MiB).
    pub const POOL_BYTES: usize = 4 << 20;

    /// The value a label takes past a cap: `other`.
    pub const OTHER: &'static str = "other";

    /// The provider or model of a request nothing named.
    pub(crate) const UNKNOWN: &'static str = "unknown";

    /// The route of a request that matched no route (never the raw path).
    pub(crate) const UNMATCHED: &'static str = "unmatched";

    /// The label of `value`: the one kept already, else `value` kept now, or
    /// [`other`](Label::OTHER)'s once the pool is full.
    ///
    /// A value kept is kept for the life of the process: build labels from values your app
    /// names (providers, models, routes), never from raw client input.
    pub fn new(value: &str) -> Self {
        Self::try_new(value).unwrap_or_else(Self::other)
    }

    /// The label of `value`, or `None` when the pool is full and does not keep it already.
    pub(crate) fn try_new(value: &str) -> Option<Self> {
        // A panic while holding the lock cannot leave the set half-written (an insert is
        // atomic from our side), so a poisoned lock is still safe to use.
        let pool = pool();
        if let Some(kept) = pool
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values
            .get(value)
        {
            return Some(Label(kept));
        }
        let kept = pool
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .intern(value);
        if kept.is_none() {
            warn_full();
        }
        kept.map(Label)
    }

    /// The label every value past a cap takes: `other`.
    pub(crate) fn other() -> Self {
        Label(pool().read().unwrap_or_else(|p| p.into_inner()).other)
    }

    /// Whether the pool keeps `value` (for tests of what may reach it).
    #[cfg(test)]
    pub(crate) fn is_kept(value: &str) -> bool {
        pool()
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values
            .contains(value)
    }

    /// The value.
    pub fn as_str(&self) -> &'static str {
        self.0
    }

    /// Whether `other` is this very label: the same as `==` (one value has one address), with
    /// no text to compare.
    #[inline]
    pub fn is(self, other: Label) -> bool {
        // The pool keeps one copy of each value, so its start address alone tells it: no
        // other kept value starts there (even the empty one, if kept, is one value).
        std::ptr::eq(self.0.as_ptr(), other.0.as_ptr())
    }
}

impl Deref for Label {
    type Target = str;

    #[inline]
    fn deref(&self) -> &str {
        self.0
    }
}

impl AsRef<str> for Label {
    fn as_ref(&self) -> &str {
        self.0
    }
}

impl Borrow<str> for Label {
    fn borrow(&self) -> &str {
        self.0
    }
}

impl PartialEq for Label {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        // One value has one address in the pool: the text is compared only for labels that
        // differ, where it differs at once or in length.
        self.is(*other) || self.0 == other.0
    }
}

impl Eq for Label {}

impl PartialEq<str> for Label {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Label {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<Label> for str {
    fn eq(&self, other: &Label) -> bool {
        self == other.0
    }
}

impl PartialEq<Label> for &str {
    fn eq(&self, other: &Label) -> bool {
        *self == other.0
    }
}

impl PartialEq<String> for Label {
    fn eq(&self, other: &String) -> bool {
        self.0 == other
    }
}

impl PartialEq<Label> for String {
    fn eq(&self, other: &Label) -> bool {
        self == other.0
    }
}

// Hashed and ordered as its text, so that a `&str` finds it in a map.
impl Hash for Label {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl PartialOrd for Label {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Label {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(other.0)
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

impl From<&str> for Label {
    fn from(value: &str) -> Self {
        Label::new(value)
    }
}

impl From<String> for Label {
    fn from(value: String) -> Self {
        Label::new(&value)
    }
}

impl From<&String> for Label {
    fn from(value: &String) -> Self {
        Label::new(value)
    }
}

impl From<Box<str>> for Label {
    fn from(value: Box<str>) -> Self {
        Label::new(&value)
    }
}

impl From<Arc<str>> for Label {
    fn from(value: Arc<str>) -> Self {
        Label::new(&value)
    }
}

impl From<std::borrow::Cow<'_, str>> for Label {
    fn from(value: std::borrow::Cow<'_, str>) -> Self {
        Label::new(&value)
    }
}

impl From<Label> for String {
    fn from(value: Label) -> Self {
        value.0.to_owned()
    }
}

impl From<Label> for Arc<str> {
    fn from(value: Label) -> Self {
        Arc::from(value.0)
    }
}

impl From<Label> for std::borrow::Cow<'static, str> {
    fn from(value: Label) -> Self {
        std::borrow::Cow::Borrowed(value.0)
    }
}

impl serde::Serialize for Label {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_value_is_one_label() {
        let a = Label::new("label-test-one-value");
        let b = Label::from(String::from("label-test-one-value"));
        assert!(a.is(b));
        assert_eq!(a, b);
        assert_ne!(a, Label::new("label-test-another"));
        assert_eq!(a.as_str(), "label-test-one-value");
        assert!(Label::new(Label::OTHER).is(Label::other()));
        assert_eq!(Label::from(Arc::<str>::from("label-test-one-value")), a);
        assert_eq!(Arc::<str>::from(a).as_ref(), "label-test-one-value");
        let text = String::from("label-test-one-value");
        assert!(a == text);
        assert_eq!(text, a);
    }

    /// Past either cap, a new value is `other`; values kept stay themselves.
    #[test]
    fn the_pool_is_capped() {
        let reserved = RESERVED.len();
        let reserved_bytes: usize = RESERVED.iter().map(|v| v.len()).sum();
        let mut by_count = Pool::new(reserved + 2, 1 << 10);
        assert_eq!(by_count.intern("a"), Some("a"));
        assert_eq!(by_count.intern("b"), Some("b"));
        assert_eq!(by_count.intern("c"), None);
        assert_eq!(by_count.intern("a"), Some("a"));
        // The reserved values are kept whatever the caps.
        assert_eq!(by_count.intern(Label::UNMATCHED), Some(Label::UNMATCHED));
        let mut by_bytes = Pool::new(100, reserved_bytes + 4);
        assert_eq!(by_bytes.intern("abc"), Some("abc"));
        assert_eq!(by_bytes.intern("de"), None);
        assert_eq!(by_bytes.intern("d"), Some("d"));
        assert_eq!(by_bytes.bytes, reserved_bytes + 4);
        assert!(by_bytes.other == Label::OTHER);
    }

    #[test]
    fn labels_hash_and_order_as_their_text() {
        use std::collections::{BTreeSet, HashMap};
        let mut map = HashMap::new();
        map.insert(Label::new("label-test-b"), 1);
        assert_eq!(map.get("label-test-b"), Some(&1));
        let ordered: Vec<&str> = [Label::new("label-test-z"), Label::new("label-test-a")]
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|l| l.as_str())
            .collect();
        assert_eq!(ordered, ["label-test-a", "label-test-z"]);
        assert_eq!(
            format!("{} {:?}", map.keys().next().unwrap(), Label::new("x\"y")),
            "label-test-b \"x\\\"y\""
        );
    }
}
