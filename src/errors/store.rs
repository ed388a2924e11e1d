//! Bounded storage of error records: a ring of the latest records and per-callsite groups.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::Serialize;
use serde::ser::SerializeMap;

use crate::window::{RateRing, WindowSpan, unix_secs};

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
    s.collect_str(&humantime::format_rfc3339_micros(*t))
}

/// Event fields in the order they were recorded, serialised as a JSON object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(pub Vec<(String, String)>);

impl Fields {
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
    ring: VecDeque<Arc<ErrorRecord>>,
    groups: HashMap<u64, ErrorGroup>,
    other: Option<ErrorGroup>,
    totals: LevelCounts,
    /// Events per level (warn, error) over the last 5 minutes and the last hour.
    five_minutes: [RateRing; 2],
    one_hour: [RateRing; 2],
}

/// The bounded store: `capacity` latest records, `max_groups` groups (then `other`).
pub(crate) struct ErrorStore {
    capacity: usize,
    max_groups: usize,
    inner: Mutex<Inner>,
}

impl ErrorStore {
    pub(crate) fn new(capacity: usize, max_groups: usize) -> Self {
        Self {
            capacity,
            max_groups,
            inner: Mutex::new(Inner {
                ring: VecDeque::with_capacity(capacity.min(1024)),
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

    pub(crate) fn push(&self, fingerprint: u64, record: ErrorRecord) {
        let now = unix_secs(record.timestamp);
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
            inner.ring.pop_front();
        }
        inner.ring.push_back(Arc::new(record));
    }

    /// Matching records, newest first, and how many matched before the limit.
    pub(crate) fn query(&self, q: &ErrorQuery) -> (Vec<Arc<ErrorRecord>>, usize) {
        let inner = self.lock();
        let matching = inner.ring.iter().rev().filter(|r| {
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

    pub(crate) fn summary(&self, now: SystemTime) -> ErrorSummary {
        let inner = self.lock();
        let secs = unix_secs(now);
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
