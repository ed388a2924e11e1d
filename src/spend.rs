//! Spend since the monitor started: per model, per user for the heaviest users only, and the
//! models no price was found for (README, Cost).
//!
//! Per user, memory is bounded whatever the number of users: each thread shard keeps at most
//! 16 times `top_users` users (256 at least) by the Space-Saving algorithm (a new user past the
//! bound takes the place of the least-spending one, inheriting its figures as an over-estimate,
//! `error`), and a read merges the shards and keeps the top `top_users`. The room to spare keeps
//! users near the top from being pushed out by the churn of light ones: on a Zipf load
//! (s = 1.1) of 100,000 users the top 10 are found exactly (`tests/heavy_hitters.rs`). About
//! 380 bytes per entry, 256 of them a first-token histogram: some 120 KiB per shard with the
//! default 20. The heaviest users are exact as long as they stay in their shards' tables; the
//! order of the tail is approximate, and `error` says by how much a figure may be over. The same
//! entries count requests, tokens and errors, for whatever else wants a user's share, and keep
//! the user's first tokens in a [`FirstTokenHistogram`] for its first-token p95 (within about
//! 10%); a newcomer to a table inherits its predecessor's counts but never its latencies.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use crate::cost::Cost;
use crate::label::Label;
use crate::record::StreamRecord;
use crate::shard::RecentIndices;

/// Users a shard keeps at least: Space-Saving over-counts by at most the traffic over the
/// table's size, so the table is kept well above the users listed (README, Cost).
const MIN_CAPACITY: usize = 256;

/// Models without a price listed at most; later ones are counted, not listed.
const MAX_UNPRICED_LISTED: usize = 64;

/// One user's figures (the `top_users` of `/metrics`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserSpend {
    /// The user id.
    pub user_id: String,
    /// What the user's priced requests cost, in USD.
    pub cost_usd: f64,
    /// LLM calls, priced or not, a call refused before any token included.
    pub requests: u64,
    /// Input plus output tokens.
    pub tokens: u64,
    /// Requests that failed on the service's or the upstream's side.
    pub errors: u64,
    /// `errors` as a percent of `requests`.
    pub error_rate: f64,
    /// By how much `cost_usd` may be over the truth (0 while the user never left its table).
    pub error_usd: f64,
    /// Time to first token, 95th percentile, in ms, over the user's streaming LLM calls that
    /// had a first token since the user entered the table (its latencies are never
    /// inherited from the user it replaced): the geometric middle of a log bucket 20% wide, so
    /// within about 10% of the exact figure for first tokens from 1 ms to about 117 s. `None`
    /// when there was no such request.
    pub first_token_p95_ms: Option<f64>,
}

/// One model's spend since the monitor started, never reset nor windowed: an entry of
/// `spend.by_model` in `/metrics` (README, Cost).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSpend {
    /// What its priced requests cost, in USD.
    pub cost_usd: f64,
    /// Of which estimated (no usage reported: the output counted, the input unknown).
    pub estimated_cost_usd: f64,
    /// Priced requests.
    pub requests: u64,
}

#[derive(Debug, Clone, Default)]
struct UserEntry {
    cost: u64,
    requests: u64,
    tokens: u64,
    errors: u64,
    /// Over-estimate inherited when this user replaced another (pico-USD).
    error: u64,
    /// This user's own first tokens: never inherited.
    first_token: FirstTokenHistogram,
}

/// Buckets of a [`FirstTokenHistogram`].
const FIRST_TOKEN_BUCKETS: usize = 64;

/// The ratio of a [`FirstTokenHistogram`] bucket's upper bound to its lower one.
const FIRST_TOKEN_GROWTH: f64 = 1.2;

/// Times to first token, in ms, in 64 logarithmic buckets of fixed size (256 bytes, no
/// allocation): bucket `i` counts the values in [1.2^i, 1.2^(i+1)) ms, from 1 ms to about 117 s
/// (1.2^64 ms); values below 1 ms count in the first bucket, values past the top in the last.
///
/// Accuracy: [`quantile`](Self::quantile) answers the geometric middle of the bucket holding the
/// q-th value, 1.2^(i+0.5) ms, so within a factor of √1.2 ≈ 1.095 of the exact value (at most
/// 9.5% over, 8.7% under) for values between 1 ms and 1.2^64 ms; below 1 ms it answers about
/// 1.1 ms, and past the top about 107 s. Counts saturate at `u32::MAX` per bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FirstTokenHistogram([u32; FIRST_TOKEN_BUCKETS]);

impl Default for FirstTokenHistogram {
    fn default() -> Self {
        Self([0; FIRST_TOKEN_BUCKETS])
    }
}

impl FirstTokenHistogram {
    /// Counts one time to first token, in ms.
    fn add(&mut self, ms: f64) {
        // Below 1 ms (and NaN) in the first bucket; the float to integer cast saturates, so
        // past the top (and infinity) lands in the last.
        let i = if ms >= 1.0 {
            ((ms.ln() / FIRST_TOKEN_GROWTH.ln()) as usize).min(FIRST_TOKEN_BUCKETS - 1)
        } else {
            0
        };
        self.0[i] = self.0[i].saturating_add(1);
    }

    /// Adds `other`'s counts to these.
    fn merge(&mut self, other: &Self) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a = a.saturating_add(*b);
        }
    }

    /// The `q` quantile (0 to 1) in ms: the geometric middle of the bucket holding the value of
    /// rank ⌈q·n⌉ (at least 1) of the n counted, within about 10% of it (see the type's docs);
    /// `None` when nothing was counted.
    fn quantile(&self, q: f64) -> Option<f64> {
        let n: u64 = self.0.iter().map(|&c| u64::from(c)).sum();
        if n == 0 {
            return None;
        }
        let rank = crate::window::nearest_rank(q, n);
        let mut seen = 0u64;
        let i = self.0.iter().position(|&c| {
            seen += u64::from(c);
            seen >= rank
        })?;
        Some(FIRST_TOKEN_GROWTH.powf(i as f64 + 0.5))
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct ModelEntry {
    cost: u64,
    estimated: u64,
    requests: u64,
}

/// One thread shard's spend. Kept beside the windows' shard of the same thread, under its lock
/// (see `WindowStore::record_with`): a record takes one lock for the windows, the Prometheus
/// series and the spend.
#[derive(Debug, Default)]
pub(crate) struct SpendShard {
    users: Vec<(Arc<str>, UserEntry)>,
    /// Positions in `users`.
    index: HashMap<Arc<str>, usize, foldhash::fast::RandomState>,
    /// The users' costs, the least first: whom Space-Saving evicts.
    costs: CostHeap,
    /// Spend per model, in the order first seen.
    models: Vec<(Label, ModelEntry)>,
    /// Positions in `models` by name: one entry per model.
    model_index: HashMap<Label, usize, foldhash::fast::RandomState>,
    /// Positions in `models` found last, tried by address before hashing the name.
    recent_models: RecentIndices,
}

/// The users' costs as a binary min-heap, each with its position in the shard's `users`: the
/// least-spending user, whom Space-Saving evicts, is at the root, and a cost that grew moves
/// down in O(log n). A scan for the least would read every user's entry for each new user, and
/// the user id is the client's: a client sending a new id with each request would make every
/// record scan the whole table.
#[derive(Debug, Default)]
struct CostHeap {
    /// (cost, position in `users`), each no greater than its children's.
    heap: Vec<(u64, usize)>,
    /// For each position in `users`, its place in `heap`.
    place: Vec<usize>,
}

impl CostHeap {
    /// Room for `additional` more users, exactly.
    fn reserve_exact(&mut self, additional: usize) {
        self.heap.reserve_exact(additional);
        self.place.reserve_exact(additional);
    }

    /// The next position in `users`, at `cost`.
    fn push(&mut self, cost: u64) {
        let user = self.place.len();
        self.place.push(self.heap.len());
        self.heap.push((cost, user));
        self.sift_up(self.heap.len() - 1);
    }

    /// The position in `users` of a user of the least cost.
    fn least(&self) -> Option<usize> {
        self.heap.first().map(|&(_, user)| user)
    }

    /// The cost of the user at `user` grew to `cost` (costs never shrink).
    fn grew(&mut self, user: usize, cost: u64) {
        let Some(&at) = self.place.get(user) else {
            return;
        };
        self.heap[at].0 = cost;
        self.sift_down(at);
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.place[self.heap[a].1] = a;
        self.place[self.heap[b].1] = b;
    }

    fn sift_up(&mut self, mut at: usize) {
        while at > 0 {
            let parent = (at - 1) / 2;
            if self.heap[parent].0 <= self.heap[at].0 {
                return;
            }
            self.swap(parent, at);
            at = parent;
        }
    }

    fn sift_down(&mut self, mut at: usize) {
        loop {
            let (left, right) = (2 * at + 1, 2 * at + 2);
            let mut least = at;
            if left < self.heap.len() && self.heap[left].0 < self.heap[least].0 {
                least = left;
            }
            if right < self.heap.len() && self.heap[right].0 < self.heap[least].0 {
                least = right;
            }
            if least == at {
                return;
            }
            self.swap(at, least);
            at = least;
        }
    }
}

/// Spend per model and per heavy user, and the unpriced models, since the monitor started.
#[derive(Debug)]
pub(crate) struct Spend {
    top_users: usize,
    /// Users each shard keeps: room beyond `top_users` for the churn below the top.
    capacity: usize,
    unpriced: Mutex<(BTreeSet<String>, u64)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Spend {
    pub(crate) fn new(top_users: usize) -> Self {
        Self {
            top_users,
            capacity: top_users.saturating_mul(16).max(MIN_CAPACITY),
            unpriced: Mutex::new((BTreeSet::new(), 0)),
        }
    }

    /// Adds a finished LLM call. `model` is the model it was priced as (or looked up under).
    /// Every LLM call comes here, so each user's requests and errors are whole (a call refused
    /// before any token, which cost nothing, included); a model's figures count the priced
    /// calls that used tokens. `shard`: this thread's.
    pub(crate) fn record(&self, shard: &mut SpendShard, r: &StreamRecord, model: Label) {
        let pico = match r.cost {
            Some(cost) => cost.picodollars(),
            None => {
                let mut unpriced = lock(&self.unpriced);
                unpriced.1 += 1;
                if unpriced.0.len() < MAX_UNPRICED_LISTED && !unpriced.0.contains(model.as_str()) {
                    unpriced.0.insert(model.to_string());
                }
                0
            }
        };
        // A call that used no token was not priced as a call of its model.
        let priced = r.cost.is_some() && (r.output_tokens > 0 || r.input_tokens.is_some());
        let counts_for_user = r.user_id.is_some() && self.top_users > 0;
        if !priced && !counts_for_user {
            return;
        }
        if priced {
            let add = |entry: &mut ModelEntry| {
                entry.cost = entry.cost.saturating_add(pico);
                if r.cost_estimated {
                    entry.estimated = entry.estimated.saturating_add(pico);
                }
                entry.requests += 1;
            };
            let SpendShard {
                models,
                model_index,
                recent_models,
                ..
            } = &mut *shard;
            let i = match recent_models.find(models, |(m, _)| m.is(model)) {
                Some(i) => i,
                None => {
                    let i = match model_index.get(&model) {
                        Some(&i) => i,
                        // Models are label values, capped by the model label budget: the table
                        // is bounded.
                        None => {
                            models.push((model, ModelEntry::default()));
                            model_index.insert(model, models.len() - 1);
                            models.len() - 1
                        }
                    };
                    if models[i].0.is(model) {
                        recent_models.remember(i);
                    }
                    i
                }
            };
            add(&mut models[i].1);
        }
        if let (Some(user), true) = (&r.user_id, self.top_users > 0) {
            let tokens = r.output_tokens.saturating_add(r.input_tokens.unwrap_or(0));
            let failed = u64::from(r.outcome.is_error());
            let SpendShard {
                users,
                index,
                costs,
                ..
            } = &mut *shard;
            let i = match index.get(user) {
                Some(&i) => i,
                None if users.len() < self.capacity => {
                    if users.len() == users.capacity() {
                        // Doubling, but never past `capacity`: the table is never over-allocated.
                        let more = users.len().max(4).min(self.capacity - users.len());
                        users.reserve_exact(more);
                        costs.reserve_exact(more);
                    }
                    users.push((user.clone(), UserEntry::default()));
                    costs.push(0);
                    index.insert(user.clone(), users.len() - 1);
                    users.len() - 1
                }
                None => {
                    // Space-Saving: the least-spending user makes room, and the newcomer starts
                    // from its figures, which it may not have spent (its `error`).
                    // Its first tokens are not inherited: they would be another user's.
                    let Some(i) = costs.least() else {
                        return;
                    };
                    let (evicted, floor) = &users[i];
                    index.remove(evicted);
                    index.insert(user.clone(), i);
                    let entry = UserEntry {
                        cost: floor.cost,
                        requests: floor.requests,
                        tokens: floor.tokens,
                        errors: floor.errors,
                        error: floor.cost,
                        first_token: FirstTokenHistogram::default(),
                    };
                    users[i] = (user.clone(), entry);
                    i
                }
            };
            let e = &mut users[i].1;
            e.cost = e.cost.saturating_add(pico);
            costs.grew(i, e.cost);
            e.requests += 1;
            e.tokens = e.tokens.saturating_add(tokens);
            e.errors += failed;
            // A stream's, unless its client failed it, as the windows count them.
            if let (true, Some(ttft)) = (r.latencies_judged(), r.time_to_first_token) {
                e.first_token.add(ttft.as_secs_f64() * 1000.0);
            }
        }
    }

    /// The top users by spend, the heaviest first, over the shards (`shards` calls its argument
    /// with each, as it holds it).
    pub(crate) fn top_users(
        &self,
        shards: impl FnOnce(&mut dyn FnMut(&SpendShard)),
    ) -> Vec<UserSpend> {
        let mut merged: HashMap<Arc<str>, UserEntry> = HashMap::new();
        shards(&mut |shard| {
            for (user, e) in &shard.users {
                let m = merged.entry(user.clone()).or_default();
                m.cost = m.cost.saturating_add(e.cost);
                m.requests += e.requests;
                m.tokens = m.tokens.saturating_add(e.tokens);
                m.errors += e.errors;
                m.error = m.error.saturating_add(e.error);
                m.first_token.merge(&e.first_token);
            }
        });
        let mut users: Vec<(Arc<str>, UserEntry)> = merged.into_iter().collect();
        users.sort_by(|a, b| b.1.cost.cmp(&a.1.cost).then_with(|| a.0.cmp(&b.0)));
        users.truncate(self.top_users);
        users
            .into_iter()
            .map(|(user, e)| UserSpend {
                user_id: user.to_string(),
                cost_usd: Cost::from_picodollars(e.cost).usd(),
                requests: e.requests,
                tokens: e.tokens,
                errors: e.errors,
                error_rate: if e.requests > 0 {
                    e.errors as f64 * 100.0 / e.requests as f64
                } else {
                    0.0
                },
                error_usd: Cost::from_picodollars(e.error).usd(),
                first_token_p95_ms: e.first_token.quantile(0.95),
            })
            .collect()
    }

    /// Spend per model, over the shards (as [`top_users`](Self::top_users)).
    pub(crate) fn by_model(
        &self,
        shards: impl FnOnce(&mut dyn FnMut(&SpendShard)),
    ) -> BTreeMap<String, ModelSpend> {
        let mut merged: BTreeMap<String, ModelEntry> = BTreeMap::new();
        shards(&mut |shard| {
            for (model, e) in &shard.models {
                let m = merged.entry(model.to_string()).or_default();
                m.cost = m.cost.saturating_add(e.cost);
                m.estimated = m.estimated.saturating_add(e.estimated);
                m.requests += e.requests;
            }
        });
        merged
            .into_iter()
            .map(|(model, e)| {
                (
                    model,
                    ModelSpend {
                        cost_usd: Cost::from_picodollars(e.cost).usd(),
                        estimated_cost_usd: Cost::from_picodollars(e.estimated).usd(),
                        requests: e.requests,
                    },
                )
            })
            .collect()
    }

    /// The models no price was found for (at most 64 listed), and how many requests they made.
    pub(crate) fn unpriced(&self) -> (Vec<String>, u64) {
        let unpriced = lock(&self.unpriced);
        (unpriced.0.iter().cloned().collect(), unpriced.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Outcome;
    use std::time::Duration;

    /// The heap's root is always a user of the least cost, as a scan of every cost finds, and
    /// each user's place is where it sits, through pushes and growing costs in any order.
    #[test]
    fn the_cost_heap_keeps_the_least_at_its_root() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut heap = CostHeap::default();
        let mut costs: Vec<u64> = Vec::new();
        for _ in 0..5_000 {
            if costs.len() < 300 && rng.u8(..) < 40 {
                let cost = rng.u64(..1_000);
                heap.push(cost);
                costs.push(cost);
            } else if !costs.is_empty() {
                let user = rng.usize(..costs.len());
                costs[user] += rng.u64(..500);
                heap.grew(user, costs[user]);
            }
            if let Some(least) = heap.least() {
                assert_eq!(costs[least], *costs.iter().min().unwrap());
            }
            for (user, &at) in heap.place.iter().enumerate() {
                assert_eq!(heap.heap[at], (costs[user], user));
            }
        }
        assert_eq!(costs.len(), 300);
    }

    /// The monitor's arrangement in small: a `Spend` and two shards of its state, one picked
    /// per thread, read one at a time.
    struct Sharded {
        spend: Spend,
        shards: Vec<Mutex<SpendShard>>,
    }

    impl Sharded {
        fn new(top_users: usize) -> Self {
            Self {
                spend: Spend::new(top_users),
                shards: (0..2).map(|_| Mutex::default()).collect(),
            }
        }

        fn record(&self, r: &StreamRecord, model: Label) {
            let mut shard = lock(crate::shard::pick(&self.shards));
            self.spend.record(&mut shard, r, model);
        }

        fn top_users(&self) -> Vec<UserSpend> {
            self.spend
                .top_users(|f| self.shards.iter().for_each(|s| f(&lock(s))))
        }

        fn by_model(&self) -> BTreeMap<String, ModelSpend> {
            self.spend
                .by_model(|f| self.shards.iter().for_each(|s| f(&lock(s))))
        }

        fn unpriced(&self) -> (Vec<String>, u64) {
            self.spend.unpriced()
        }
    }

    fn record(user: &str, pico: u64) -> StreamRecord {
        let mut r = StreamRecord::new("openai", "m", "/r", Outcome::Ok);
        r.user_id = Some(Arc::from(user));
        r.cost = Some(Cost::from_picodollars(pico));
        r.output_tokens = 10;
        r
    }

    /// A call refused before any token cost nothing, yet is one of the user's requests and
    /// errors; it is no priced call of its model.
    #[test]
    fn a_call_refused_before_any_token_counts_for_its_user() {
        let spend = Sharded::new(3);
        let model: Label = Label::new("m");
        spend.record(&record("u", 1_000), model);
        let mut refused = StreamRecord::new("openai", "m", "/r", Outcome::RateLimited);
        refused.user_id = Some(Arc::from("u"));
        refused.cost = Some(Cost::ZERO);
        spend.record(&refused, model);
        let top = spend.top_users();
        assert_eq!((top[0].requests, top[0].errors), (2, 1));
        assert_eq!(top[0].error_rate, 50.0);
        assert_eq!(spend.by_model()["m"].requests, 1);
    }

    /// A model's spend is one entry, found by address or by name.
    #[test]
    fn a_model_is_one_entry() {
        let spend = Sharded::new(3);
        let names: Vec<Label> = (0..6)
            .map(|i| Label::new(if i % 2 == 0 { "m" } else { "n" }))
            .collect();
        for (i, model) in names.iter().enumerate() {
            for _ in 0..=i {
                spend.record(&record("u", 10), *model);
            }
        }
        let by_model = spend.by_model();
        assert_eq!(by_model.len(), 2);
        assert_eq!(by_model["m"].requests, 1 + 3 + 5);
        assert_eq!(by_model["n"].requests, 2 + 4 + 6);
        assert!((by_model["m"].cost_usd - 90e-12).abs() < 1e-18);
    }

    #[test]
    fn keeps_the_heaviest_users_within_its_bound() {
        let spend = Sharded::new(3);
        let model: Label = Label::new("m");
        for (user, pico, times) in [("a", 100, 5), ("b", 50, 4), ("c", 10, 3)] {
            for _ in 0..times {
                spend.record(&record(user, pico), model);
            }
        }
        // Many light users pass through the last place; the heavy ones stay exact.
        for i in 0..100 {
            spend.record(&record(&format!("light-{i}"), 1), model);
        }
        let top = spend.top_users();
        assert_eq!(top.len(), 3);
        assert_eq!(top[0].user_id, "a");
        assert_eq!(top[0].requests, 5);
        assert!((top[0].cost_usd - 500e-12).abs() < 1e-18);
        assert_eq!(top[0].error_usd, 0.0);
        assert_eq!(top[1].user_id, "b");
        assert_eq!(
            spend.by_model()["m"].requests,
            5 + 4 + 3 + 100,
            "every priced request counts for its model"
        );
    }

    /// Past its capacity (256 users for a `top_users` of 3), a shard holds no more users
    /// however many pass through, its index no more than its table, and the heavy users stay
    /// exact.
    #[test]
    fn a_shard_holds_at_most_its_capacity() {
        let spend = Sharded::new(3);
        let model: Label = Label::new("m");
        for _ in 0..5 {
            spend.record(&record("heavy", 1_000_000), model);
        }
        for i in 0..5_000 {
            spend.record(&record(&format!("light-{i}"), 1), model);
        }
        for shard in &spend.shards {
            let shard = lock(shard);
            assert!(shard.users.len() <= MIN_CAPACITY, "{}", shard.users.len());
            assert_eq!(shard.index.len(), shard.users.len());
            assert!(shard.users.capacity() <= MIN_CAPACITY);
        }
        // Every light user passed through one shard or the other: at least one is full.
        assert!(
            spend
                .shards
                .iter()
                .any(|s| lock(s).users.len() == MIN_CAPACITY)
        );
        let top = spend.top_users();
        assert_eq!(top[0].user_id, "heavy");
        assert_eq!(top[0].requests, 5);
        assert_eq!(top[0].error_usd, 0.0);
    }

    #[test]
    fn a_users_error_rate_is_its_failures_share() {
        let spend = Sharded::new(3);
        let model: Label = Label::new("m");
        for outcome in [Outcome::Ok, Outcome::Ok, Outcome::Ok, Outcome::Timeout] {
            let mut r = record("a", 10);
            r.outcome = outcome;
            spend.record(&r, model);
        }
        let top = spend.top_users();
        assert_eq!((top[0].requests, top[0].errors), (4, 1));
        assert!((top[0].error_rate - 25.0).abs() < 1e-9);
    }

    /// The exact `q` quantile by nearest rank: the value of rank ⌈q·n⌉ (at least 1).
    fn exact_quantile(values: &[f64], q: f64) -> f64 {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    /// A deterministic log-normal-ish sample: a median of 400 ms, spread by e^(0.6 z) with z
    /// roughly standard normal (the sum of 12 uniforms less 6).
    fn log_normal_sample(seed: u64, n: usize) -> Vec<f64> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..n)
            .map(|_| {
                let z = (0..12).map(|_| rng.f64()).sum::<f64>() - 6.0;
                400.0 * (0.6 * z).exp()
            })
            .collect()
    }

    #[test]
    fn the_first_token_histogram_is_within_ten_percent() {
        for seed in [1, 2, 3] {
            let values = log_normal_sample(seed, 5_000);
            let mut h = FirstTokenHistogram::default();
            for &v in &values {
                h.add(v);
            }
            for q in [0.0, 0.5, 0.9, 0.95, 0.99, 1.0] {
                let exact = exact_quantile(&values, q);
                let got = h.quantile(q).unwrap();
                assert!(
                    (got - exact).abs() <= 0.1 * exact,
                    "seed {seed}, q {q}: {got} against {exact}"
                );
            }
        }
    }

    #[test]
    fn the_first_token_histogram_clamps_its_range_and_answers_none_when_empty() {
        let mut h = FirstTokenHistogram::default();
        assert_eq!(h.quantile(0.95), None);
        h.add(0.2);
        h.add(f64::NAN);
        assert_eq!(h.0[0], 2, "below 1 ms in the first bucket");
        h.add(1e12);
        h.add(f64::INFINITY);
        assert_eq!(
            h.0[FIRST_TOKEN_BUCKETS - 1],
            2,
            "past the top in the last bucket"
        );
        let top = h.quantile(1.0).unwrap();
        assert!((100_000.0..120_000.0).contains(&top), "{top}");
        let bottom = h.quantile(0.0).unwrap();
        assert!((1.0..1.2).contains(&bottom), "{bottom}");
    }

    #[test]
    fn merged_first_token_histograms_count_both() {
        let (a, b) = (log_normal_sample(4, 2_000), log_normal_sample(5, 3_000));
        let mut ha = FirstTokenHistogram::default();
        let mut hb = FirstTokenHistogram::default();
        let mut both = FirstTokenHistogram::default();
        for &v in &a {
            ha.add(v);
            both.add(v);
        }
        for &v in &b {
            hb.add(v);
            both.add(v);
        }
        ha.merge(&hb);
        assert_eq!(ha, both);
        let all: Vec<f64> = a.iter().chain(&b).copied().collect();
        let exact = exact_quantile(&all, 0.95);
        let got = ha.quantile(0.95).unwrap();
        assert!((got - exact).abs() <= 0.1 * exact, "{got} against {exact}");
        // Saturating, never wrapping.
        let mut full = FirstTokenHistogram([u32::MAX; FIRST_TOKEN_BUCKETS]);
        full.merge(&both);
        full.add(5.0);
        assert_eq!(full, FirstTokenHistogram([u32::MAX; FIRST_TOKEN_BUCKETS]));
    }

    #[test]
    fn a_users_first_token_p95_is_its_own_and_merged_across_shards() {
        let spend = Sharded::new(3);
        let model: Label = Label::new("m");
        let mut latencies = Vec::new();
        for (i, ms) in log_normal_sample(6, 400).into_iter().enumerate() {
            let mut r = record("a", 10);
            r.streaming = true;
            r.time_to_first_token = Some(Duration::from_secs_f64(ms / 1000.0));
            latencies.push(ms);
            // Half from another thread: another shard, merged on read (when there are two).
            if i % 2 == 0 {
                spend.record(&r, model);
            } else {
                std::thread::scope(|s| {
                    s.spawn(|| spend.record(&r, model));
                });
            }
        }
        // Not streaming, or streaming with no first token: not counted.
        let mut r = record("b", 1);
        r.time_to_first_token = Some(Duration::from_secs(1));
        spend.record(&r, model);
        r.streaming = true;
        r.time_to_first_token = None;
        spend.record(&r, model);
        let top = spend.top_users();
        let exact = exact_quantile(&latencies, 0.95);
        let got = top[0].first_token_p95_ms.unwrap();
        assert_eq!((top[0].user_id.as_str(), top[0].requests), ("a", 400));
        assert_eq!((top[1].user_id.as_str(), top[1].requests), ("b", 2));
        assert!((got - exact).abs() <= 0.1 * exact, "{got} against {exact}");
        assert_eq!(top[1].first_token_p95_ms, None);
    }

    #[test]
    fn a_newcomer_inherits_counts_but_not_first_tokens() {
        let spend = Sharded::new(3);
        let model: Label = Label::new("m");
        // Fill the table (256 users) with slow first tokens.
        for i in 0..MIN_CAPACITY {
            let mut r = record(&format!("slow-{i}"), 1);
            r.streaming = true;
            r.time_to_first_token = Some(Duration::from_secs(30));
            spend.record(&r, model);
        }
        // A newcomer takes the place of one of them, with a fast first token of its own.
        let mut r = record("new", 1_000);
        r.streaming = true;
        r.time_to_first_token = Some(Duration::from_millis(50));
        spend.record(&r, model);
        let top = spend.top_users();
        assert_eq!(top[0].user_id, "new");
        assert_eq!(top[0].requests, 2, "the counts are inherited");
        assert!(top[0].error_usd > 0.0);
        let p95 = top[0].first_token_p95_ms.unwrap();
        assert!((45.0..55.0).contains(&p95), "the latencies are not: {p95}");
        // A newcomer with no first token of its own has none.
        spend.record(&record("newer", 2_000), model);
        let top = spend.top_users();
        assert_eq!(top[0].user_id, "newer");
        assert_eq!(top[0].first_token_p95_ms, None);
    }

    #[test]
    fn unpriced_models_are_listed_and_counted() {
        let spend = Sharded::new(3);
        let mut r = record("a", 0);
        r.cost = None;
        for i in 0..100 {
            spend.record(&r, Label::new(&format!("model-{i}")));
        }
        let (listed, requests) = spend.unpriced();
        assert_eq!(listed.len(), MAX_UNPRICED_LISTED);
        assert_eq!(requests, 100);
        assert!(spend.by_model().is_empty());
    }
}

/// Spend per budget over the last hour, by minute: a ring of 60 (minute, pico-USD) slots per
/// budget. Only configured budgets have one, and each record takes one lock per budget it
/// counts for.
/// (minute, pico-USD) per minute of the last hour.
type MinuteRing = [(u64, u64); BUDGET_MINUTES as usize];

#[derive(Debug)]
pub(crate) struct BudgetMeter {
    budgets: Vec<crate::health::Budget>,
    rings: Box<[Mutex<MinuteRing>]>,
}

/// Minutes a budget looks back.
const BUDGET_MINUTES: u64 = 60;

impl BudgetMeter {
    pub(crate) fn new(budgets: Vec<crate::health::Budget>) -> Self {
        let rings = budgets
            .iter()
            .map(|_| Mutex::new([(u64::MAX, 0); BUDGET_MINUTES as usize]))
            .collect();
        Self { budgets, rings }
    }

    /// Adds a priced record's cost, at `now_secs`, to the budgets it counts for.
    #[inline]
    pub(crate) fn record(&self, now_secs: u64, r: &StreamRecord) {
        // Most monitors have no budget: no call then.
        if !self.budgets.is_empty() {
            self.record_in(now_secs, r);
        }
    }

    fn record_in(&self, now_secs: u64, r: &StreamRecord) {
        let Some(cost) = r.cost else { return };
        let minute = now_secs / 60;
        for (budget, ring) in self.budgets.iter().zip(self.rings.iter()) {
            if budget.counts(r) {
                let mut ring = lock(ring);
                let slot = &mut ring[(minute % BUDGET_MINUTES) as usize];
                if slot.0 != minute {
                    *slot = (minute, 0);
                }
                slot.1 = slot.1.saturating_add(cost.picodollars());
            }
        }
    }

    /// Each budget judged on the spend of the last hour at `now_secs`.
    pub(crate) fn judge(&self, now_secs: u64) -> Vec<crate::health::BudgetState> {
        let minute = now_secs / 60;
        self.budgets
            .iter()
            .zip(self.rings.iter())
            .map(|(budget, ring)| {
                let spent = lock(ring)
                    .iter()
                    .filter(|(m, _)| *m != u64::MAX && *m + BUDGET_MINUTES > minute && *m <= minute)
                    .fold(0u64, |sum, (_, pico)| sum.saturating_add(*pico));
                crate::health::BudgetState::judge(budget, Cost::from_picodollars(spent).usd())
            })
            .collect()
    }
}
