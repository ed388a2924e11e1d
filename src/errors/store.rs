//! Bounded storage of error records: a ring of the latest records and per-callsite groups.
//!
//! Eviction is fair between callsites: see [`ErrorStore`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::Serialize;
use serde::ser::SerializeMap;

use crate::window::{RateRing, WindowSpan};

/// WARN or ERROR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorLevel {
    /// A `warn!` event.
    Warn,
    /// An `error!` event.
    Error,
}

impl ErrorLevel {
    /// `warn` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorLevel::Warn => "warn",
            ErrorLevel::Error => "error",
        }
    }
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&crate::window::rfc3339(*t))
}

/// Event fields in the order they were recorded, serialised as a JSON object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    pub(crate) fn new(fields: Vec<(String, String)>) -> Self {
        Self(fields)
    }

    /// Each field's name and value, in the order they were recorded.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How many fields there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of a field.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Serialize for Fields {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// One captured WARN or ERROR event, redacted and size-capped before it was stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ErrorRecord {
    /// When the event was recorded (RFC 3339 in JSON).
    #[serde(serialize_with = "rfc3339")]
    pub timestamp: SystemTime,
    /// Its level.
    pub level: ErrorLevel,
    /// Its target.
    pub target: String,
    /// Its message.
    pub message: String,
    /// Its other fields.
    pub fields: Fields,
    /// Names of the spans it happened in, outermost first.
    pub spans: Vec<String>,
    /// `request_id` of the nearest span that has one.
    pub request_id: Option<String>,
    /// `user_id` of the nearest span that has one.
    pub user_id: Option<String>,
    /// `provider` of the nearest span that has one.
    pub provider: Option<String>,
    /// `route` of the nearest span that has one.
    pub route: Option<String>,
    /// `trace_id` of the nearest span that has one: the W3C trace of the request the event
    /// happened in (README, Tracing).
    pub trace_id: Option<String>,
    /// `span_id` of the nearest span that has one (the request's own span).
    pub span_id: Option<String>,
    /// `file:line` of the callsite, when known.
    pub location: Option<String>,
    /// Identifies the callsite (16 hex digits): the same `error!` line always has the same one.
    pub fingerprint: String,
}

/// The events of one callsite.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorGroup {
    /// The callsite's fingerprint (`other` for the overflow group).
    pub fingerprint: String,
    /// The callsite's level.
    pub level: ErrorLevel,
    /// The callsite's target.
    pub target: String,
    /// `file:line`.
    pub location: Option<String>,
    /// The message of the latest event.
    pub sample_message: String,
    /// Events since the monitor was built.
    pub count: u64,
    /// First event.
    #[serde(serialize_with = "rfc3339")]
    pub first_seen: SystemTime,
    /// Latest event.
    #[serde(serialize_with = "rfc3339")]
    pub last_seen: SystemTime,
}

/// Counts by level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct LevelCounts {
    /// WARN events.
    pub warn: u64,
    /// ERROR events.
    pub error: u64,
}

/// The `data` of `GET {prefix}/errors/summary`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorSummary {
    /// Events since the monitor was built, by level.
    pub totals: LevelCounts,
    /// Events in the last 5 minutes, by level.
    pub last_5min: LevelCounts,
    /// Events in the last hour, by level.
    pub last_1hour: LevelCounts,
    /// Records held now (at most the ring's capacity).
    pub stored: usize,
    /// One group per callsite, most frequent first.
    pub groups: Vec<ErrorGroup>,
}

/// Which records `GET {prefix}/errors` returns. The default: the latest 50 of any level.
#[derive(Debug, Clone)]
pub struct ErrorQuery {
    /// At most this many, newest first.
    pub limit: usize,
    /// At least this level.
    pub level: Option<ErrorLevel>,
    /// At or after this time.
    pub since: Option<SystemTime>,
    /// Whose target starts with this.
    pub target: Option<String>,
}

impl Default for ErrorQuery {
    fn default() -> Self {
        Self {
            limit: 50,
            level: None,
            since: None,
            target: None,
        }
    }
}

struct Inner {
    /// Stored records, oldest first, each with its callsite's fingerprint.
    ring: VecDeque<(u64, Arc<ErrorRecord>)>,
    /// How many records of each callsite `ring` holds (callsites with none are absent).
    held: HashMap<u64, usize>,
    /// The callsites holding more than their share, in no order (at most three).
    over_share: Vec<u64>,
    groups: HashMap<u64, ErrorGroup>,
    other: Option<ErrorGroup>,
    totals: LevelCounts,
    /// Events per level (warn, error) over the last 5 minutes and the last hour.
    five_minutes: [RateRing; 2],
    one_hour: [RateRing; 2],
}

/// The bounded store: `capacity` latest records, `max_groups` groups (then `other`).
///
/// One callsite cannot crowd out the others. Its share is a quarter of the capacity (at least
/// one record). While the ring has room every record is kept, so a callsite alone can fill it.
/// Once the ring is full, a new record replaces:
///
/// 1. the oldest record of its own callsite, when that callsite holds its share or more;
/// 2. else the oldest record of any callsite holding more than its share;
/// 3. else the oldest record.
///
/// So a full ring's noisy callsite replaces only its own records, and gives way to the others'
/// one for one, down to its share; a callsite below its share loses records only to step 3.
/// Records stay in arrival order, so queries are newest first. An insert costs at most a scan
/// of the ring.
pub(crate) struct ErrorStore {
    capacity: usize,
    /// Records a callsite may keep once the ring is full and others need room.
    share: usize,
    max_groups: usize,
    inner: Mutex<Inner>,
}

impl ErrorStore {
    pub(crate) fn new(capacity: usize, max_groups: usize) -> Self {
        Self {
            capacity,
            share: (capacity / 4).max(1),
            max_groups,
            inner: Mutex::new(Inner {
                ring: VecDeque::with_capacity(capacity.min(1024)),
                held: HashMap::new(),
                over_share: Vec::new(),
                groups: HashMap::new(),
                other: None,
                totals: LevelCounts::default(),
                five_minutes: [
                    RateRing::new(WindowSpan::FiveMinutes),
                    RateRing::new(WindowSpan::FiveMinutes),
                ],
                one_hour: [
                    RateRing::new(WindowSpan::OneHour),
                    RateRing::new(WindowSpan::OneHour),
                ],
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores a record. `now` is the monitor's window second (monotonic; the record's own
    /// timestamp is wall time, for display), which places it in the recent counts.
    pub(crate) fn push(&self, fingerprint: u64, record: ErrorRecord, now: u64) {
        let level = record.level as usize;
        let mut inner = self.lock();
        match record.level {
            ErrorLevel::Warn => inner.totals.warn += 1,
            ErrorLevel::Error => inner.totals.error += 1,
        }
        inner.five_minutes[level].add(now, true);
        inner.one_hour[level].add(now, true);

        let known = inner.groups.len();
        let max_groups = self.max_groups;
        let group = match inner.groups.get_mut(&fingerprint) {
            Some(g) => Some(g),
            None if known < max_groups => Some(inner.groups.entry(fingerprint).or_insert_with(
                || ErrorGroup {
                    fingerprint: record.fingerprint.clone(),
                    level: record.level,
                    target: record.target.clone(),
                    location: record.location.clone(),
                    sample_message: String::new(),
                    count: 0,
                    first_seen: record.timestamp,
                    last_seen: record.timestamp,
                },
            )),
            None => None,
        };
        let group = match group {
            Some(g) => g,
            None => inner.other.get_or_insert_with(|| ErrorGroup {
                fingerprint: "other".into(),
                level: record.level,
                target: "other".into(),
                location: None,
                sample_message: String::new(),
                count: 0,
                first_seen: record.timestamp,
                last_seen: record.timestamp,
            }),
        };
        group.count += 1;
        group.last_seen = record.timestamp;
        group.level = group.level.max(record.level);
        group.sample_message.clone_from(&record.message);

        if self.capacity == 0 {
            return;
        }
        if inner.ring.len() >= self.capacity {
            self.evict_for(&mut inner, fingerprint);
        }
        inner.ring.push_back((fingerprint, Arc::new(record)));
        let held = inner.held.entry(fingerprint).or_insert(0);
        *held += 1;
        if *held == self.share + 1 {
            inner.over_share.push(fingerprint);
        }
    }

    /// Removes the record that a new one of callsite `incoming` replaces (see [`ErrorStore`]).
    fn evict_for(&self, inner: &mut Inner, incoming: u64) {
        let own = inner.held.get(&incoming).copied().unwrap_or(0);
        let victim = if own >= self.share {
            inner.ring.iter().position(|(k, _)| *k == incoming)
        } else if inner.over_share.is_empty() {
            None
        } else {
            let over = &inner.over_share;
            inner.ring.iter().position(|(k, _)| over.contains(k))
        };
        let Some((key, _)) = inner.ring.remove(victim.unwrap_or(0)) else {
            return;
        };
        if let Some(held) = inner.held.get_mut(&key) {
            *held -= 1;
            if *held == self.share {
                inner.over_share.retain(|k| *k != key);
            }
            if *held == 0 {
                inner.held.remove(&key);
            }
        }
    }

    /// Matching records, newest first, and how many matched before the limit.
    pub(crate) fn query(&self, q: &ErrorQuery) -> (Vec<Arc<ErrorRecord>>, usize) {
        let inner = self.lock();
        let matching = inner.ring.iter().rev().map(|(_, r)| r).filter(|r| {
            q.level.is_none_or(|l| r.level >= l)
                && q.since.is_none_or(|s| r.timestamp >= s)
                && q.target.as_deref().is_none_or(|t| r.target.starts_with(t))
        });
        let mut total = 0;
        let mut out = Vec::with_capacity(q.limit.min(inner.ring.len()));
        for r in matching {
            total += 1;
            if out.len() < q.limit {
                out.push(r.clone());
            }
        }
        (out, total)
    }

    /// Totals, recent counts at window second `secs`, and groups.
    pub(crate) fn summary(&self, secs: u64) -> ErrorSummary {
        let inner = self.lock();
        let five = |level: usize| inner.five_minutes[level].totals(secs).1;
        let hour = |level: usize| inner.one_hour[level].totals(secs).1;
        let mut groups: Vec<ErrorGroup> = inner
            .groups
            .values()
            .cloned()
            .chain(inner.other.clone())
            .collect();
        groups.sort_by(|a, b| b.count.cmp(&a.count).then(b.last_seen.cmp(&a.last_seen)));
        ErrorSummary {
            totals: inner.totals,
            last_5min: LevelCounts {
                warn: five(0),
                error: five(1),
            },
            last_1hour: LevelCounts {
                warn: hour(0),
                error: hour(1),
            },
            stored: inner.ring.len(),
            groups,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(message: String) -> ErrorRecord {
        ErrorRecord {
            timestamp: SystemTime::UNIX_EPOCH,
            level: ErrorLevel::Error,
            target: "app".into(),
            message,
            fields: Fields::default(),
            spans: Vec::new(),
            request_id: None,
            user_id: None,
            provider: None,
            route: None,
            trace_id: None,
            span_id: None,
            location: None,
            fingerprint: String::new(),
        }
    }

    fn push(store: &ErrorStore, callsite: u64, n: usize) {
        for i in 0..n {
            store.push(callsite, record(format!("{callsite}-{i}")), 0);
        }
    }

    /// Records held per callsite (by message prefix), and all messages newest first.
    fn held(store: &ErrorStore) -> (HashMap<String, usize>, Vec<String>) {
        let query = ErrorQuery {
            limit: usize::MAX,
            ..ErrorQuery::default()
        };
        let (records, total) = store.query(&query);
        assert_eq!(total, records.len());
        let mut per = HashMap::new();
        let messages: Vec<String> = records.iter().map(|r| r.message.clone()).collect();
        for m in &messages {
            let callsite = m.split('-').next().unwrap_or_default().to_owned();
            *per.entry(callsite).or_insert(0) += 1;
        }
        (per, messages)
    }

    #[test]
    fn one_callsite_alone_fills_the_ring() {
        let store = ErrorStore::new(100, 10);
        push(&store, 1, 10_000);
        let (per, messages) = held(&store);
        assert_eq!(per["1"], 100);
        assert_eq!(messages[0], "1-9999");
        assert_eq!(messages[99], "1-9900");
        assert_eq!(store.summary(0).stored, 100);
    }

    #[test]
    fn noisy_callsite_cannot_evict_the_others() {
        let store = ErrorStore::new(1000, 100);
        push(&store, 1, 10_000);
        push(&store, 2, 5);
        let (per, messages) = held(&store);
        assert_eq!(per["2"], 5);
        assert_eq!(per["1"], 995);
        assert_eq!(&messages[..2], ["2-4", "2-3"]);
        assert_eq!(messages[5], "1-9999");

        // The noisy callsite keeps logging while three others do: it shrinks to its share
        // (250) and every other callsite keeps its latest 250.
        for round in 0..300 {
            for callsite in 3..6 {
                store.push(callsite, record(format!("{callsite}-{round}")), 0);
            }
            push(&store, 1, 10);
        }
        let (per, messages) = held(&store);
        assert_eq!(per.get("1"), Some(&250));
        for callsite in ["3", "4", "5"] {
            assert_eq!(per.get(callsite), Some(&250), "{callsite}");
        }
        assert_eq!(
            per.get("2"),
            None,
            "evicted oldest first once nobody is over share"
        );
        assert_eq!(messages.len(), 1000);
        assert_eq!(messages[0], "1-9");
        assert_eq!(messages[10], "5-299");
        // Newest first: the rounds count down.
        let rounds: Vec<usize> = messages
            .iter()
            .filter(|m| m.starts_with("3-"))
            .filter_map(|m| m[2..].parse().ok())
            .collect();
        assert_eq!(rounds, (50..300).rev().collect::<Vec<_>>());
    }

    #[test]
    fn callsites_within_their_share_evict_oldest_first() {
        let store = ErrorStore::new(8, 10);
        for i in 0..8 {
            store.push(i % 4, record(format!("{}-{i}", i % 4)), 0);
        }
        store.push(7, record("7-0".into()), 0);
        let (_, messages) = held(&store);
        assert_eq!(messages.len(), 8);
        assert_eq!(messages[0], "7-0");
        assert_eq!(messages[7], "1-1", "the oldest record (0-0) went");
    }

    #[test]
    fn tiny_rings_keep_a_share_of_one() {
        let store = ErrorStore::new(1, 10);
        push(&store, 1, 3);
        push(&store, 2, 1);
        assert_eq!(held(&store).1, ["2-0"]);
        let store = ErrorStore::new(3, 10);
        push(&store, 1, 5);
        push(&store, 2, 2);
        let (per, _) = held(&store);
        assert_eq!((per["1"], per["2"]), (2, 1));
    }
}
