//! Rolling windows: 5 minutes and 1 hour, overall and per provider, with mergeable quantile
//! sketches (log-linear bins, 0.78% relative accuracy: see `sketch`). Windows know nothing of SSE
//! or HTTP: they take finished [`StreamRecord`]s.
//!
//! Recording takes one of several shard locks (picked per thread), so cores do not queue on one
//! lock; reading merges the shards. A record is added once, to its provider and model's windows
//! (or, for a request that matched no route, to the unrouted windows): a provider's windows are
//! the merge of its models', and the overall windows the merge of all, made when read. Memory
//! is fixed by the number of slots and labels, not by traffic: a shard keeps at most
//! 128 (`MAX_MODEL_PAIRS`) provider and model pairs the app names, and 32 (`MAX_HEADER_PAIRS`)
//! apart for pairs a request header named; later models of a provider share its `other` pair
//! (one per provider, providers being capped labels).

mod clock;
mod ring;
mod sketch;
mod stats;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub use clock::{Clock, ManualClock, SystemClock};
pub(crate) use clock::{SystemSecs, WindowTime, rfc3339};
pub(crate) use ring::WindowSpan;
pub use stats::{FinishReasons, RequestStats, WindowStats};

pub(crate) use ring::{RateRing, Ring};
pub(crate) use sketch::nearest_rank;
pub(crate) use stats::SlotStats;
use stats::Sums;

use crate::label::Label;
use crate::record::{Outcome, OutcomeMap, StreamRecord};
use crate::shard::{Padded, RecentIndices};

/// Provider and model pairs a shard keeps windows for; past it, a provider's new models share
/// one `other` pair, made for it then (the provider's figures stay whole). Twice the default label cap: room for
/// every provider with a few models each.
pub(crate) const MAX_MODEL_PAIRS: usize = 128;

/// Provider and model pairs named by a request header (`x-llm-provider`, `x-llm-model`) a shard
/// keeps windows for, apart from [`MAX_MODEL_PAIRS`]: a client's headers can never take the
/// room of the pairs the app names (README, Security).
pub(crate) const MAX_HEADER_PAIRS: usize = 32;

/// Pairs the shards' windows merge into, at most: a shard's two shares, with room for the
/// `other` pairs of the providers a header named (fewer than the header share: header labels
/// have a budget of their own), so that a shard's own pairs merge whole.
const MERGED_PAIRS: usize = MAX_MODEL_PAIRS + 2 * MAX_HEADER_PAIRS;

/// Windows are kept per provider and model.
type PairKey = (Label, Label);

/// A population of records and the hits within it, whose rate the windows count over 5 minutes
/// (a rollback trigger implements it). The windows know the counting, not what is counted.
pub(crate) trait RatePopulation: Send + Sync {
    /// Whether `record` belongs to the population (`Some`), and if so whether it is a hit: one
    /// call per record and population.
    fn classify(&self, record: &StreamRecord) -> Option<bool>;

    /// Whether [`classify`](Self::classify) depends on nothing but whether a (routed) record
    /// streamed and its outcome: the windows then ask once per kind of record, when built, and
    /// work its counts out of their counts by outcome when read (none per record).
    fn by_kind_only(&self) -> bool {
        false
    }
}

/// A population's answers per kind of routed record: by whether it streamed, then by outcome.
type KindTable = [OutcomeMap<Option<bool>>; 2];

/// How the windows classify a record for a population.
enum Classifier {
    /// Looked up (see [`RatePopulation::by_kind_only`]).
    Table(KindTable),
    Ask(Box<dyn RatePopulation>),
}

impl Classifier {
    fn new(population: Box<dyn RatePopulation>) -> Self {
        if !population.by_kind_only() {
            return Classifier::Ask(population);
        }
        let table = [false, true].map(|streaming| {
            OutcomeMap::from_fn(|outcome| {
                let mut record = StreamRecord::new("", "", "", outcome);
                record.streaming = streaming;
                population.classify(&record)
            })
        });
        Classifier::Table(table)
    }

    #[inline]
    fn classify(&self, record: &StreamRecord) -> Option<bool> {
        match self {
            Classifier::Table(table) => table[usize::from(record.streaming)][record.outcome],
            Classifier::Ask(population) => population.classify(record),
        }
    }
}

/// A looked-up population's (records, hits) in `five`, windows merged: what counting its
/// records one by one over the same slots gives. A slot counts every routed record by outcome,
/// and streams apart; the records that did not stream are the difference.
fn table_totals(table: &KindTable, five: &SlotStats) -> (u64, u64) {
    let (mut n, mut hits) = (0, 0);
    for outcome in Outcome::ALL {
        let streams = five.streaming_by_outcome[outcome];
        let others = five.by_outcome[outcome].saturating_sub(streams);
        for (count, answer) in [(others, table[0][outcome]), (streams, table[1][outcome])] {
            if let Some(hit) = answer {
                n += count;
                if hit {
                    hits += count;
                }
            }
        }
    }
    (n, hits)
}

/// A provider and model's two windows. A record goes into its 10-second slot only: the slot
/// hands its figures to its minute of the hour once the next 10 seconds begin (a slot lies
/// within one minute), and reads of the hour take the slot still open from the 5-minute ring.
/// So a record touches one ring, not two: counts, maxima and quantile sketches merge to the
/// same figures (merging bins gives the same bins). Float sums do not (their rounding follows
/// the order of the additions): the minute's own running sums go on in `carry` meanwhile, so
/// every value is the one adding each record to both rings would give.
struct Pair {
    five_minutes: Ring,
    one_hour: Ring,
    /// The latest 10-second slot recorded in (its `epoch`).
    latest: u64,
    /// Whether that slot's figures are still to hand to the hour. Never again once handed: a
    /// record for an earlier slot (the clock stepped back) hands it over first, and from then
    /// on records go into both rings.
    pending: bool,
    /// While `pending`, the hour's float sums for the minute of `latest` (that slot's own are
    /// replaced by these at the hand-over).
    carry: Sums,
}

const FIVE: WindowSpan = WindowSpan::FiveMinutes;
const HOUR: WindowSpan = WindowSpan::OneHour;

/// The minute (hour ring epoch) a 10-second slot lies in.
fn minute_of(epoch: u64) -> u64 {
    HOUR.epoch(epoch * FIVE.slot_secs())
}

impl Pair {
    fn new() -> Self {
        Self {
            five_minutes: Ring::new(FIVE),
            one_hour: Ring::new(HOUR),
            latest: 0,
            pending: false,
            carry: Sums::default(),
        }
    }

    /// `unrouted`: `record.is_unrouted()`, worked out once per record.
    fn add(&mut self, now: u64, record: &StreamRecord, unrouted: bool) {
        let open = self.advance(FIVE.epoch(now));
        let within_slot = self.five_minutes.add_in(FIVE, now, record, unrouted);
        if !open {
            self.one_hour.add(now, record, unrouted);
            return;
        }
        // The hour's share: the counts wait in the 10-second slot, the sums go on in `carry`
        // as the hour's slot would add them (see `Ring::add`; within the 10-second slot is
        // within its minute).
        self.carry.add(record, unrouted);
        if within_slot
            || record.duration <= Duration::from_secs(now + 1 - HOUR.epoch(now) * HOUR.slot_secs())
        {
            self.carry.busy_secs += record.duration.as_secs_f64();
        } else if let Some(overlap) = self
            .one_hour
            .add_busy_before(now, record.duration.as_secs_f64())
        {
            self.carry.busy_secs += overlap;
        }
    }

    /// Moves to the 10-second slot `epoch` (before either ring touches a slot, as that may
    /// clear one): hands the pending slot to the hour when `epoch` is another. Whether a record
    /// in `epoch` leaves the hour's share to the 10-second slot.
    #[inline]
    fn advance(&mut self, epoch: u64) -> bool {
        if epoch == self.latest {
            return self.pending;
        }
        self.hand_over();
        if epoch > self.latest {
            self.latest = epoch;
            self.pending = true;
            self.carry = self
                .one_hour
                .stats(minute_of(epoch))
                .map_or_else(Sums::default, SlotStats::sums);
        }
        self.pending
    }

    /// The pending 10-second slot into its minute of the hour.
    #[inline(never)]
    fn hand_over(&mut self) {
        if !self.pending {
            return;
        }
        self.pending = false;
        let to = self.one_hour.slot_stats(minute_of(self.latest));
        if let Some(from) = self.five_minutes.stats(self.latest) {
            to.merge_counts(from);
        }
        to.set_sums(self.carry);
    }

    fn note_in_flight(&mut self, now: u64, n: u64) {
        let open = self.advance(FIVE.epoch(now));
        self.five_minutes.note_in_flight(now, n);
        if !open {
            self.one_hour.note_in_flight(now, n);
        }
    }

    /// The minute of the 10-second slot not yet handed to the hour, if the hour at `now` holds
    /// it.
    fn pending_minute(&self, now: u64) -> Option<u64> {
        let minute = minute_of(self.latest);
        (self.pending && HOUR.holds(minute, now)).then_some(minute)
    }

    /// The hour's figures for the pending minute into `into`: the ring's slot for it (`held`,
    /// if any), the open 10-second slot's figures, and the minute's sums, as the hand-over
    /// would leave them.
    fn merge_pending(&self, held: Option<&SlotStats>, into: &mut SlotStats) {
        if let Some(held) = held {
            into.merge_counts(held);
        }
        if let Some(open) = self.five_minutes.stats(self.latest) {
            into.merge_counts(open);
        }
        into.add_sums(&self.carry);
    }

    /// The hour's slots still inside it at `now`, merged into `into`.
    fn merge_hour_into(&self, now: u64, into: &mut SlotStats) {
        let merge = |held: Option<&SlotStats>, into: &mut SlotStats| self.merge_pending(held, into);
        let open = self.pending_minute(now).map(|minute| (minute, &merge as _));
        self.one_hour.merge_into_with(now, into, open);
    }

    /// The hour slot by slot (see [`Ring::merge_slots_into`]).
    fn merge_hour_slots_into(&self, now: u64, into: &mut [SlotStats]) {
        let merge = |held: Option<&SlotStats>, into: &mut SlotStats| self.merge_pending(held, into);
        let open = self.pending_minute(now).map(|minute| (minute, &merge as _));
        self.one_hour.merge_slots_into_with(now, into, open);
    }
}

struct Shard<C> {
    /// Requests that matched no route, and the in-flight peaks (a figure of the whole
    /// process): part of the overall windows only.
    unrouted: Pair,
    /// Every record since the store was built, by outcome.
    recorded: OutcomeMap<u64>,
    /// Windows per provider and model.
    pairs: Vec<(PairKey, Pair)>,
    /// How many of `pairs` a request header named (see [`MAX_HEADER_PAIRS`]).
    header_pairs: usize,
    /// Positions in `pairs`.
    index: HashMap<PairKey, usize, foldhash::fast::RandomState>,
    recent: RecentIndices,
    triggers: Vec<RateRing>,
    /// What the store's owner records beside the windows, under the same lock.
    companion: C,
}

impl<C> Shard<C> {
    /// Every pair of windows: together, the overall windows.
    fn pairs(&self) -> impl Iterator<Item = &Pair> {
        std::iter::once(&self.unrouted).chain(self.pairs.iter().map(|(_, pair)| pair))
    }
}

/// The windows slot by slot, oldest first: what `/metrics/history` draws.
pub(crate) struct History {
    /// The 30 slots of 10 s of the last 5 minutes, overall.
    pub(crate) five_minutes: Vec<SlotStats>,
    /// The 60 slots of 1 minute of the last hour, overall.
    pub(crate) one_hour: Vec<SlotStats>,
    /// The same 5 minutes per provider.
    pub(crate) five_minutes_providers: BTreeMap<Label, Vec<SlotStats>>,
    /// The same hour per provider.
    pub(crate) providers: BTreeMap<Label, Vec<SlotStats>>,
    /// Per provider and model, slot by slot, in the span asked for.
    pub(crate) models: BTreeMap<PairKey, Vec<SlotStats>>,
    /// The start of the last slot of each window (Unix seconds): the 5-minute one, the hour one.
    pub(crate) last_starts: (u64, u64),
}

/// Merged windows at one instant.
pub(crate) struct Collected {
    pub(crate) five_minutes: SlotStats,
    pub(crate) one_hour: SlotStats,
    pub(crate) providers: BTreeMap<Label, (SlotStats, SlotStats)>,
    /// The last 5 minutes per provider and model: at most [`MAX_MODEL_PAIRS`] and
    /// [`MAX_HEADER_PAIRS`] pairs, then a provider's further models in its `other` pair, as a
    /// shard keeps them.
    pub(crate) models: BTreeMap<PairKey, SlotStats>,
    /// (population, hits) per rollback trigger over 5 minutes.
    pub(crate) triggers: Vec<(u64, u64)>,
}

/// `C`: state the owner records beside each thread's windows, under the same lock (see
/// [`record_with`](Self::record_with)): a record then takes one lock, not one per store.
pub(crate) struct WindowStore<C = ()> {
    shards: Box<[Padded<Mutex<Shard<C>>>]>,
    /// The model of the pair a provider's models share past [`MAX_MODEL_PAIRS`].
    other: Label,
    triggers: Box<[Classifier]>,
    /// The triggers asked per record ([`Classifier::Ask`]), by position: only they count
    /// records as they come (in the shard's ring of the same position). A looked-up one's
    /// counts are worked out from the windows' counts by outcome when read (`table_totals`),
    /// so a record costs the default triggers nothing.
    asked: Box<[usize]>,
}

fn lock<C>(shard: &Mutex<Shard<C>>) -> MutexGuard<'_, Shard<C>> {
    // A panic mid-update leaves at worst one slot partly counted; keep serving.
    shard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<C: Default> WindowStore<C> {
    pub(crate) fn new(triggers: Vec<Box<dyn RatePopulation>>) -> Self {
        let shards = (0..crate::shard::count())
            .map(|_| {
                Padded(Mutex::new(Shard {
                    unrouted: Pair::new(),
                    recorded: OutcomeMap::default(),
                    pairs: Vec::new(),
                    header_pairs: 0,
                    index: HashMap::default(),
                    recent: RecentIndices::default(),
                    triggers: triggers.iter().map(|_| RateRing::new(FIVE)).collect(),
                    companion: C::default(),
                }))
            })
            .collect();
        let triggers: Box<[Classifier]> = triggers.into_iter().map(Classifier::new).collect();
        Self {
            shards,
            other: Label::other(),
            asked: (0..triggers.len())
                .filter(|&i| matches!(triggers[i], Classifier::Ask(_)))
                .collect(),
            triggers,
        }
    }

    #[cfg(test)]
    pub(crate) fn record(&self, now_secs: u64, record: &StreamRecord) {
        self.record_with(now_secs, record, false, |_| {});
    }

    /// Adds a record to this thread's shard, and calls `companion` with the shard's companion
    /// state (for a routed record: an unrouted one has no labels to record by), under the
    /// same lock. `from_header`: a label of the record came from a request header (its pair
    /// takes room of [`MAX_HEADER_PAIRS`], not of [`MAX_MODEL_PAIRS`]).
    pub(crate) fn record_with(
        &self,
        now_secs: u64,
        record: &StreamRecord,
        from_header: bool,
        companion: impl FnOnce(&mut C),
    ) {
        let mut shard = lock(&crate::shard::pick(&self.shards).0);
        shard.recorded[record.outcome] += 1;
        if record.is_unrouted() {
            // Counted in the overall windows only: no provider entry, no trigger.
            shard.unrouted.add(now_secs, record, true);
            return;
        }
        let shard = &mut *shard;
        companion(&mut shard.companion);
        let (provider, model) = (&record.provider, &record.model);
        let i = match shard
            .recent
            .find(&shard.pairs, |((p, m), _)| p.is(*provider) && m.is(*model))
        {
            Some(i) => i,
            None => {
                let full = if from_header {
                    shard.header_pairs >= MAX_HEADER_PAIRS
                } else {
                    shard.pairs.len() - shard.header_pairs >= MAX_MODEL_PAIRS
                };
                let key = (*provider, *model);
                let key = match shard.index.get(&key) {
                    Some(_) => key,
                    None if full => (*provider, self.other),
                    None => key,
                };
                let i = *shard.index.entry(key).or_insert_with(|| {
                    shard.pairs.push((key, Pair::new()));
                    shard.header_pairs += usize::from(from_header);
                    shard.pairs.len() - 1
                });
                let (p, m) = &shard.pairs[i].0;
                if p.is(*provider) && m.is(*model) {
                    shard.recent.remember(i);
                }
                i
            }
        };
        shard.pairs[i].1.add(now_secs, record, false);
        for &t in self.asked.iter() {
            if let (Some(trigger), Some(rate)) = (self.triggers.get(t), shard.triggers.get_mut(t)) {
                if let Some(hit) = trigger.classify(record) {
                    rate.add_in(FIVE, now_secs, hit);
                }
            }
        }
    }

    /// Calls `f` with each shard's companion state, one shard locked at a time.
    pub(crate) fn companions(&self, f: &mut dyn FnMut(&C)) {
        for shard in self.shards.iter() {
            f(&lock(shard).companion);
        }
    }

    /// Notes `n` requests in flight at `now_secs`: the slot's peak (README, Trends and anomalies).
    pub(crate) fn note_in_flight(&self, now_secs: u64, n: u64) {
        let mut shard = lock(&crate::shard::pick(&self.shards).0);
        shard.unrouted.note_in_flight(now_secs, n);
    }

    /// Every window, merged over the shards.
    pub(crate) fn collect(&self, now_secs: u64) -> Collected {
        let mut out = Collected {
            five_minutes: SlotStats::default(),
            one_hour: SlotStats::default(),
            providers: BTreeMap::new(),
            models: BTreeMap::new(),
            triggers: vec![(0, 0); self.triggers.len()],
        };
        for shard in self.shards.iter() {
            let shard = lock(shard);
            for pair in shard.pairs() {
                pair.five_minutes
                    .merge_into(now_secs, &mut out.five_minutes);
                pair.merge_hour_into(now_secs, &mut out.one_hour);
            }
            for ((provider, model), pair) in &shard.pairs {
                let entry = out.providers.entry(*provider).or_default();
                pair.five_minutes.merge_into(now_secs, &mut entry.0);
                pair.merge_hour_into(now_secs, &mut entry.1);
                // Shards may hold different pairs: the merge is capped as each shard is.
                let key = (*provider, *model);
                let full = out.models.len() >= MERGED_PAIRS;
                let key = if full && !out.models.contains_key(&key) {
                    (*provider, self.other)
                } else {
                    key
                };
                pair.five_minutes
                    .merge_into(now_secs, out.models.entry(key).or_default());
            }
            self.add_asked_totals(&shard, now_secs, &mut out.triggers);
        }
        self.add_table_totals(&out.five_minutes, &mut out.triggers);
        out
    }

    /// Every window slot by slot, merged over the shards; per provider and model too in the
    /// span `models`, when asked (the slots anomalies are judged on).
    pub(crate) fn history(&self, now_secs: u64, models: Option<WindowSpan>) -> History {
        let five = WindowSpan::FiveMinutes;
        let hour = WindowSpan::OneHour;
        let slots = |span: WindowSpan| vec![SlotStats::default(); span.slots()];
        let mut out = History {
            five_minutes: slots(five),
            one_hour: slots(hour),
            five_minutes_providers: BTreeMap::new(),
            providers: BTreeMap::new(),
            models: BTreeMap::new(),
            last_starts: (
                now_secs / five.slot_secs() * five.slot_secs(),
                now_secs / hour.slot_secs() * hour.slot_secs(),
            ),
        };
        for shard in self.shards.iter() {
            let shard = lock(shard);
            for pair in shard.pairs() {
                pair.five_minutes
                    .merge_slots_into(now_secs, &mut out.five_minutes);
                pair.merge_hour_slots_into(now_secs, &mut out.one_hour);
            }
            for ((provider, model), pair) in &shard.pairs {
                let entry = out
                    .five_minutes_providers
                    .entry(*provider)
                    .or_insert_with(|| slots(five));
                pair.five_minutes.merge_slots_into(now_secs, entry);
                let entry = out
                    .providers
                    .entry(*provider)
                    .or_insert_with(|| slots(hour));
                pair.merge_hour_slots_into(now_secs, entry);
                if let Some(span) = models {
                    let entry = out
                        .models
                        .entry((*provider, *model))
                        .or_insert_with(|| slots(span));
                    match span {
                        WindowSpan::FiveMinutes => {
                            pair.five_minutes.merge_slots_into(now_secs, entry)
                        }
                        WindowSpan::OneHour => pair.merge_hour_slots_into(now_secs, entry),
                    }
                }
            }
        }
        out
    }

    /// Records since the store was built, by outcome, over the shards.
    pub(crate) fn recorded(&self) -> OutcomeMap<u64> {
        let mut out = OutcomeMap::<u64>::default();
        for shard in self.shards.iter() {
            let shard = lock(shard);
            for outcome in Outcome::ALL {
                out[outcome] += shard.recorded[outcome];
            }
        }
        out
    }

    /// Only what health needs: the overall 5-minute window and the trigger rates.
    pub(crate) fn collect_health(&self, now_secs: u64) -> (SlotStats, Vec<(u64, u64)>) {
        let mut five = SlotStats::default();
        let mut triggers = vec![(0, 0); self.triggers.len()];
        for shard in self.shards.iter() {
            let shard = lock(shard);
            for pair in shard.pairs() {
                pair.five_minutes.merge_into(now_secs, &mut five);
            }
            self.add_asked_totals(&shard, now_secs, &mut triggers);
        }
        self.add_table_totals(&five, &mut triggers);
        (five, triggers)
    }

    /// A shard's counts of the triggers asked per record, into their places in `into`.
    fn add_asked_totals(&self, shard: &Shard<C>, now_secs: u64, into: &mut [(u64, u64)]) {
        for &t in self.asked.iter() {
            if let (Some(rate), Some(total)) = (shard.triggers.get(t), into.get_mut(t)) {
                let (n, h) = rate.totals(now_secs);
                total.0 += n;
                total.1 += h;
            }
        }
    }

    /// The looked-up triggers' counts, from `five`, the 5-minute window merged over the shards.
    fn add_table_totals(&self, five: &SlotStats, into: &mut [(u64, u64)]) {
        for (trigger, total) in self.triggers.iter().zip(into.iter_mut()) {
            if let Classifier::Table(table) = trigger {
                *total = table_totals(table, five);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::stats::quantile;
    use super::*;
    use crate::record::Outcome;

    /// A trigger's table answers as the trigger does, for every kind of routed record; a
    /// trigger that filters by route or provider is asked per record.
    #[test]
    fn trigger_tables_answer_as_the_triggers() {
        use crate::health::RollbackTrigger;
        let errors = [Outcome::ServerError, Outcome::Timeout];
        let triggers = [
            RollbackTrigger::new("a", errors, 5.0),
            RollbackTrigger::new("b", [Outcome::Ok, Outcome::ClientError], 5.0).streaming_only(),
            RollbackTrigger::new("c", errors, 5.0).route("/r"),
            RollbackTrigger::new("d", errors, 5.0).provider("p"),
        ];
        for trigger in triggers {
            let classifier = Classifier::new(Box::new(trigger.clone()));
            let table = matches!(classifier, Classifier::Table(_));
            assert_eq!(table, trigger.by_kind_only(), "{}", trigger.name());
            for outcome in Outcome::ALL {
                for streaming in [false, true] {
                    for (provider, route) in [("p", "/r"), ("q", "/s")] {
                        let mut r = StreamRecord::new(provider, "m", route, outcome);
                        r.streaming = streaming;
                        assert_eq!(
                            classifier.classify(&r),
                            RatePopulation::classify(&trigger, &r),
                            "{} {outcome:?} {streaming}",
                            trigger.name()
                        );
                    }
                }
            }
        }
    }

    /// Looked-up triggers counted from the windows' counts by outcome give what counting each
    /// record as it comes gives (the same triggers asked per record), over records of every
    /// kind, several pairs and shards' worth of time, unrouted ones among them.
    #[test]
    fn looked_up_triggers_count_as_asked_ones() {
        use crate::health::RollbackTrigger;
        struct Asked(RollbackTrigger);
        impl RatePopulation for Asked {
            fn classify(&self, record: &StreamRecord) -> Option<bool> {
                RatePopulation::classify(&self.0, record)
            }
        }
        let triggers = || {
            [
                RollbackTrigger::auth_error_rate(),
                RollbackTrigger::timeout_rate(),
                RollbackTrigger::new("errors", [Outcome::ServerError, Outcome::Ok], 5.0),
                RollbackTrigger::new("route", [Outcome::Timeout], 5.0).route("/r"),
            ]
        };
        let looked_up = WindowStore::<()>::new(
            triggers()
                .into_iter()
                .map(|t| Box::new(t) as Box<dyn RatePopulation>)
                .collect(),
        );
        assert_eq!(looked_up.asked.len(), 1);
        let asked = WindowStore::<()>::new(
            triggers()
                .into_iter()
                .map(|t| Box::new(Asked(t)) as Box<dyn RatePopulation>)
                .collect(),
        );
        assert_eq!(asked.asked.len(), 4);
        let start: u64 = 1_800_000_000;
        let mut t = start;
        for i in 0..900usize {
            t += (i % 3) as u64;
            let outcome = Outcome::ALL[i % Outcome::ALL.len()];
            let (provider, route) = [("p", "/r"), ("q", "/s"), ("p", "/s")][i % 3];
            let mut r = StreamRecord::new(provider, ["m", "n"][i % 2], route, outcome);
            r.streaming = i % 4 != 0;
            r.status = match i % 11 {
                0 => Some(http::StatusCode::METHOD_NOT_ALLOWED),
                _ => Some(http::StatusCode::OK),
            };
            looked_up.record(t, &r);
            asked.record(t, &r);
            if i % 50 == 0 {
                for now in [t, t + 5, t + 200, t + 400] {
                    assert_eq!(
                        looked_up.collect_health(now).1,
                        asked.collect_health(now).1,
                        "{i} {now}"
                    );
                    assert_eq!(looked_up.collect(now).triggers, asked.collect(now).triggers);
                }
            }
        }
        assert!(looked_up.collect_health(t).1.iter().all(|(n, _)| *n > 0));
    }

    fn streaming(provider: &str, ttft_ms: f64) -> StreamRecord {
        let mut r = StreamRecord::new(provider, "m", "/r", Outcome::Ok);
        r.streaming = true;
        r.time_to_first_token = Some(Duration::from_secs_f64(ttft_ms / 1000.0));
        r.duration = Duration::from_secs_f64(ttft_ms / 500.0);
        r
    }

    /// xorshift64*: a fixed-seed random sample without a dependency.
    fn random_latencies(n: usize) -> Vec<f64> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..n)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                let u = (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
                // Log-uniform from 5 ms to 20 s, as first-token latencies spread.
                5.0 * (4000.0f64).powf(u)
            })
            .collect()
    }

    fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
        sorted[nearest_rank(q, sorted.len() as u64) as usize - 1]
    }

    /// The hour's sketches hold each record once, whether its 10-second slot is still open
    /// (read from the 5-minute ring), was handed over, or was recorded after the clock stepped
    /// back: the same bins as sketching every record in the hour directly.
    #[test]
    fn the_hour_sketches_each_record_once() {
        let store = WindowStore::<()>::new(Vec::new());
        // The start of a minute.
        let start: u64 = 1_800_000_000;
        let mut direct = SlotStats::default();
        let mut per_minute = BTreeMap::<u64, usize>::new();
        let mut t = start;
        let mut end = start;
        // Steps of 3 s over 20 minutes, with a step back of 7 minutes and one of 25 s; the last
        // record is the latest, its slot still open.
        for (i, ttft) in random_latencies(400).into_iter().enumerate() {
            t = match i {
                100 => t - 420,
                250 => t - 25,
                _ => t + 3,
            };
            end = end.max(t);
            let r = streaming("p", ttft);
            store.record(t, &r);
            direct.add(&r, r.is_unrouted());
            *per_minute.entry(t / 60).or_default() += 1;
        }
        assert_eq!(end, t);
        let hour = store.collect(end).one_hour;
        assert_eq!(hour.ttft_ms.count(), 400);
        for q in [0.0, 0.25, 0.5, 0.95, 0.99, 1.0] {
            assert_eq!(
                quantile(&hour.duration_ms, q),
                quantile(&direct.duration_ms, q)
            );
            assert_eq!(hour.first_token_ms(q), direct.first_token_ms(q), "q {q}");
        }
        let history = store.history(end, Some(WindowSpan::OneHour));
        for slots in [
            &history.one_hour,
            &history.models[&(Label::new("p"), Label::new("m"))],
        ] {
            for (minute, n) in &per_minute {
                let place = 59 - (end / 60 - minute) as usize;
                assert_eq!(slots[place].ttft_ms.count(), *n as u64, "minute {minute}");
                assert_eq!(slots[place].requests as usize, *n, "minute {minute}");
            }
        }
    }

    /// Every figure of a slot: float sums to the bit.
    fn figures(s: &SlotStats) -> String {
        let sketches = [
            &s.ttft_ms,
            &s.duration_ms,
            &s.tpot_ms,
            &s.tps,
            &s.output_tokens_dist,
            &s.input_tokens_dist,
        ]
        .map(|k| {
            (
                k.count(),
                quantile(k, 0.0),
                quantile(k, 0.5),
                quantile(k, 1.0),
            )
        });
        format!(
            "{:?}",
            (
                s.summary(None),
                s.requests(),
                [
                    s.busy_secs,
                    s.ttft_ms_sum,
                    s.tps_sum,
                    s.duration_ms_sum,
                    s.max_stall_ms
                ]
                .map(f64::to_bits),
                (
                    s.peak_in_flight,
                    s.tps_count,
                    s.cost,
                    s.estimated_cost,
                    s.unpriced
                ),
                sketches,
            )
        )
    }

    /// A record touching one ring (the hour's share handed over from its 10-second slot) reads
    /// the same as adding every record to both rings, through every read of both windows: over
    /// slot and minute boundaries, requests longer than a slot, a minute or the hour, unrouted
    /// ones, peaks in flight, and the clock stepping back and jumping ahead.
    #[test]
    fn one_ring_per_record_reads_as_both_rings() {
        let mut pair = Pair::new();
        let (mut five, mut hour) = (Ring::new(FIVE), Ring::new(HOUR));
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move |n: u64| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) % n
        };
        let durations_ms = [
            0, 3, 420, 1_700, 9_500, 14_000, 61_000, 95_000, 700_000, 7_200_000,
        ];
        let mut t: u64 = 1_800_000_000 - 7;
        for step in 0..3_000 {
            t = match next(40) {
                0 => t - 420,
                1 => t - 25,
                2 => t - 3,
                3 => t + 3_700,
                4 => t + 47,
                5..=12 => t,
                _ => t + next(12),
            };
            if next(6) == 0 {
                let n = next(50);
                pair.note_in_flight(t, n);
                five.note_in_flight(t, n);
                hour.note_in_flight(t, n);
            } else {
                let kind = next(4);
                let mut r = StreamRecord::new("p", "m", "/r", Outcome::ALL[next(8) as usize]);
                if kind == 0 {
                    r.status = Some(http::StatusCode::METHOD_NOT_ALLOWED);
                }
                r.streaming = kind >= 2;
                r.duration = Duration::from_millis(durations_ms[next(10) as usize])
                    + Duration::from_nanos(next(1_000_000_000));
                if kind == 3 {
                    r.time_to_first_token = Some(Duration::from_nanos(1 + next(3_000_000_000)));
                    r.tokens_per_second = Some(next(10_000) as f64 / 7.0);
                    r.time_per_output_token = Some(Duration::from_micros(1 + next(90_000)));
                    r.max_inter_token_gap = Some(Duration::from_micros(next(900_000)));
                    r.output_tokens = next(2_000);
                    r.input_tokens = Some(next(9_000));
                }
                let unrouted = r.is_unrouted();
                pair.add(t, &r, unrouted);
                five.add(t, &r, unrouted);
                hour.add(t, &r, unrouted);
            }
            for at in [t, t + 9, t + 61, t + 3_599] {
                let (mut got, mut want) = (SlotStats::default(), SlotStats::default());
                pair.merge_hour_into(at, &mut got);
                hour.merge_into(at, &mut want);
                assert_eq!(figures(&got), figures(&want), "hour at {at}, step {step}");
                let (mut got, mut want) = (SlotStats::default(), SlotStats::default());
                pair.five_minutes.merge_into(at, &mut got);
                five.merge_into(at, &mut want);
                assert_eq!(figures(&got), figures(&want), "5 min at {at}, step {step}");
                if step % 10 == 0 {
                    for (span, n) in [(FIVE, 30), (HOUR, 60)] {
                        let mut got = vec![SlotStats::default(); n];
                        let mut want = vec![SlotStats::default(); n];
                        match span {
                            WindowSpan::FiveMinutes => {
                                pair.five_minutes.merge_slots_into(at, &mut got);
                                five.merge_slots_into(at, &mut want);
                            }
                            WindowSpan::OneHour => {
                                pair.merge_hour_slots_into(at, &mut got);
                                hour.merge_slots_into(at, &mut want);
                            }
                        }
                        let (got, want): (Vec<_>, Vec<_>) = got
                            .iter()
                            .zip(&want)
                            .map(|(g, w)| (figures(g), figures(w)))
                            .unzip();
                        assert_eq!(got, want, "{span:?} slots at {at}, step {step}");
                    }
                }
            }
        }
    }

    #[test]
    fn quantiles_within_one_percent_over_shards_and_slots() {
        let store = WindowStore::<()>::new(Vec::new());
        let latencies = random_latencies(10_000);
        let start = 1_800_000_000;
        // Spread over 4 minutes (24 slots) and several threads (shards).
        std::thread::scope(|scope| {
            for (t, chunk) in latencies.chunks(2_500).enumerate() {
                let store = &store;
                scope.spawn(move || {
                    for (i, ms) in chunk.iter().enumerate() {
                        store.record(
                            start + ((t * 2_500 + i) as u64 * 240 / 10_000),
                            &streaming("p", *ms),
                        );
                    }
                });
            }
        });
        let mut sorted = latencies.clone();
        sorted.sort_by(f64::total_cmp);
        let collected = store.collect(start + 240);
        let w = collected.five_minutes.summary(None);
        assert_eq!(w.total_streaming_requests, 10_000);
        for (q, got) in [
            (0.5, w.first_token_p50_ms),
            (0.95, w.first_token_p95_ms),
            (0.99, w.first_token_p99_ms),
        ] {
            let exact = exact_quantile(&sorted, q);
            let error = (got - exact).abs() / exact;
            assert!(
                error <= 0.01,
                "p{q}: {got} vs exact {exact} ({:.3}%)",
                error * 100.0
            );
        }
        let mean: f64 = latencies.iter().sum::<f64>() / latencies.len() as f64;
        assert!((w.avg_first_token_latency_ms - mean).abs() < 1e-6 * mean);
    }

    /// Past `MAX_MODEL_PAIRS`, a provider's new models share its `other` pair: memory stays
    /// bounded and the provider's figures stay whole.
    #[test]
    fn model_pairs_are_capped_and_the_provider_stays_whole() {
        let store = WindowStore::<()>::new(Vec::new());
        let now = 1_800_000_000;
        for i in 0..MAX_MODEL_PAIRS + 50 {
            let mut r = streaming("p", 100.0);
            r.model = Label::new(&format!("model-{i}"));
            store.record(now, &r);
        }
        let h = store.history(now, Some(WindowSpan::OneHour));
        // The pairs, and the provider's `other`.
        assert_eq!(h.models.len(), MAX_MODEL_PAIRS + 1);
        let other = h
            .models
            .iter()
            .find(|((_, m), _)| &**m == Label::OTHER)
            .map(|(_, slots)| slots.iter().map(|s| s.streaming).sum::<u64>());
        assert!(other.is_some_and(|n| n >= 50), "{other:?}");
        let collected = store.collect(now);
        assert_eq!(
            collected.providers[&Label::new("p")].1.streaming,
            MAX_MODEL_PAIRS as u64 + 50
        );
        assert_eq!(collected.models.len(), MAX_MODEL_PAIRS + 1);
    }

    /// Pairs a request header named take room of their own: however many a client sends, the
    /// app's pairs still get all of theirs, and the header ones past their share fold into
    /// their provider's `other`.
    #[test]
    fn header_pairs_never_take_the_room_of_the_apps_pairs() {
        let store = WindowStore::<()>::new(Vec::new());
        let now = 1_800_000_000;
        let record = |provider: &str, model: &str| {
            let mut r = streaming(provider, 100.0);
            r.model = Label::new(model);
            r
        };
        for i in 0..MAX_HEADER_PAIRS + 40 {
            store.record_with(now, &record("junk", &format!("junk-{i}")), true, |_| {});
        }
        for i in 0..MAX_MODEL_PAIRS {
            store.record_with(now, &record("app", &format!("model-{i}")), false, |_| {});
        }
        let collected = store.collect(now);
        let app: Vec<_> = collected
            .models
            .keys()
            .filter(|(p, _)| &**p == "app")
            .collect();
        assert_eq!(app.len(), MAX_MODEL_PAIRS, "every app pair whole");
        assert!(app.iter().all(|(_, m)| &**m != Label::OTHER));
        let junk = collected.models.keys().filter(|(p, _)| &**p == "junk");
        // The header share, and the junk provider's `other`.
        assert_eq!(junk.count(), MAX_HEADER_PAIRS + 1);
    }

    /// Shards holding different pairs merge into no more pairs than one shard keeps, and every
    /// stream stays counted.
    #[test]
    fn merged_model_windows_are_capped_too() {
        let store = WindowStore::<()>::new(Vec::new());
        let now = 1_800_000_000;
        std::thread::scope(|scope| {
            for t in 0..4 {
                let store = &store;
                scope.spawn(move || {
                    for i in 0..100 {
                        let mut r = streaming("p", 100.0);
                        r.model = Label::new(&format!("model-{t}-{i}"));
                        store.record(now, &r);
                    }
                });
            }
        });
        let collected = store.collect(now);
        assert!(
            collected.models.len() <= MERGED_PAIRS + 1,
            "{}",
            collected.models.len()
        );
        let streams: u64 = collected.models.values().map(|s| s.streaming).sum();
        assert_eq!(streams, 400);
    }

    #[test]
    fn slots_expire_and_recycle() {
        let store = WindowStore::<()>::new(Vec::new());
        let t0 = 1_800_000_000;
        store.record(t0, &streaming("a", 10.0));
        store.record(t0 + 290, &streaming("a", 10.0));
        let five = |t| store.collect(t).five_minutes.streaming;
        let hour = |t| store.collect(t).one_hour.streaming;
        assert_eq!(five(t0 + 290), 2);
        assert_eq!(five(t0 + 300), 1, "the first record's slot left the window");
        assert_eq!(five(t0 + 600), 0);
        assert_eq!(hour(t0 + 600), 2);
        assert_eq!(hour(t0 + 3600 + 290), 0);
        // A slot reused an hour later holds only the new record.
        store.record(t0 + 3600, &streaming("a", 10.0));
        assert_eq!(five(t0 + 3600), 1);
        assert_eq!(
            hour(t0 + 3600),
            2,
            "t0+290 is still within the hour, t0 is not"
        );
    }
}
