//! [`Label`]: a label value interned for the life of the process.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::{OnceLock, RwLock};

/// A label value (a provider, a model, a route), interned once for the life of the process.
///
/// A label is a `&'static str` underneath: copying one into a record, a metric key or an
/// in-flight count writes nothing, where a shared reference count would have every core
/// write the same cache line on every request (ARCHITECTURE.md, The flow, one way). One value
/// has one address, so two labels are compared by address first.
///
/// Values are kept in a process-wide pool that never shrinks, so it is capped: at most
/// [`Label::POOL_VALUES`] values and [`Label::POOL_BYTES`] bytes. A monitor's own caps on
/// label values
/// ([`label_cardinality`](crate::MonitorBuilder::label_cardinality) and
/// [`header_label_cardinality`](crate::MonitorBuilder::header_label_cardinality), far below
/// these) decide what reaches the pool; past the pool's caps, a new value becomes
/// [`OTHER`](Label::OTHER)'s label.
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
}

impl Pool {
    fn new(max_values: usize, max_bytes: usize) -> Self {
        let mut values = HashSet::default();
        values.insert(Label::OTHER);
        Self {
            values,
            bytes: Label::OTHER.len(),
            max_values,
            max_bytes,
        }
    }

    /// The kept value, `value` kept now, or `other` once a cap is reached.
    fn intern(&mut self, value: &str) -> &'static str {
        if let Some(kept) = self.values.get(value) {
            return kept;
        }
        if self.values.len() >= self.max_values || self.bytes + value.len() > self.max_bytes {
            return Label::OTHER;
        }
        // Leaked on purpose: a label lives as long as the process (its address is its
        // identity), and the caps bound what the pool can ever hold.
        let kept: &'static str = Box::leak(Box::from(value));
        self.values.insert(kept);
        self.bytes += kept.len();
        kept
    }
}

fn pool() -> &'static RwLock<Pool> {
    static POOL: OnceLock<RwLock<Pool>> = OnceLock::new();
    POOL.get_or_init(|| RwLock::new(Pool::new(Label::POOL_VALUES, Label::POOL_BYTES)))
}

impl Label {
    /// Most values the process-wide pool keeps.
    pub const POOL_VALUES: usize = 65_536;

    /// Most bytes the process-wide pool keeps (4 MiB).
    pub const POOL_BYTES: usize = 4 << 20;

    /// The value a label takes past a cap: `other`.
    pub const OTHER: &'static str = "other";

    /// The label of `value`: the one interned already, else `value` interned now, or `other`'s
    /// once the pool is full.
    pub fn new(value: &str) -> Self {
        // A panic while holding the lock cannot leave the set half-written (an insert is
        // atomic from our side), so a poisoned lock is still safe to use.
        let pool = pool();
        if let Some(kept) = pool
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values
            .get(value)
        {
            return Label(kept);
        }
        Label(
            pool.write()
                .unwrap_or_else(|p| p.into_inner())
                .intern(value),
        )
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

    /// Whether `other` is this very label: its address, not only its text.
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

impl From<Label> for String {
    fn from(value: Label) -> Self {
        value.0.to_owned()
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
        assert!(Label::new(Label::OTHER).is(Label::new("other")));
    }

    /// Past either cap, a new value is `other`; values kept stay themselves.
    #[test]
    fn the_pool_is_capped() {
        let mut by_count = Pool::new(3, 1 << 10);
        assert_eq!(by_count.intern("a"), "a");
        assert_eq!(by_count.intern("b"), "b");
        assert_eq!(by_count.intern("c"), Label::OTHER);
        assert_eq!(by_count.intern("a"), "a");
        let mut by_bytes = Pool::new(100, Label::OTHER.len() + 4);
        assert_eq!(by_bytes.intern("abc"), "abc");
        assert_eq!(by_bytes.intern("de"), Label::OTHER);
        assert_eq!(by_bytes.intern("d"), "d");
        assert_eq!(by_bytes.bytes, Label::OTHER.len() + 4);
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
