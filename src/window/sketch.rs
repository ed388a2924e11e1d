//! The windows' quantile sketch: counts in log-linear bins whose key is read off the value's
//! bits, so adding a value costs a shift and an increment, with no logarithm.
//!
//! Each power of two is cut into 2^[`SUB_BITS`] bins of equal width: a value's key is its
//! `f64` exponent and top [`SUB_BITS`] mantissa bits, which order as the values do. A bin spans
//! at most 1/64 of its lower bound, and a quantile answers the bin's harmonic middle, so it is
//! within 0.78% of the value at its rank (the README promises 1%). Bins are kept in one
//! contiguous run from the lowest key seen to the highest, grown by chunks, and capped at
//! [`MAX_BINS`]: past the cap the lowest bins fold into the lowest kept (short values lose
//! accuracy first; tail quantiles keep theirs). Merging adds bins key by key, so a merge of
//! sketches equals one sketch of all their values.
//!
//! Why not a crate: `sketches-ddsketch` takes a natural logarithm and a `floor` per value (about
//! 130 instructions: most of a recorded stream's sketch cost), and the log-linear crates
//! (`histogram`) keep every bin up to the largest value densely (13 KB a sketch at this
//! accuracy, five per window slot).

/// Bins per power of two: 2^6 = 64.
const SUB_BITS: u32 = 6;
/// Bits below a key's in an `f64`.
const SHIFT: u32 = f64::MANTISSA_DIGITS - 1 - SUB_BITS;
/// Values below this count as zero (a quantile among them answers 0).
const MIN_VALUE: f64 = 1.0e-6;
/// Values above this count as this (keeps keys and bin bounds finite).
const MAX_VALUE: f64 = 1.0e300;
/// Bins per sketch at most (8 bytes each): 32 powers of two, 1 µs to 71 minutes in ms.
const MAX_BINS: u32 = 2048;
/// Bins are added this many at a time, so a sketch grows rarely.
const CHUNK: u32 = 64;

/// The nearest rank (from 1) of the `q` quantile (0 to 1) among `n` values (`n` > 0):
/// ⌈q·n⌉, at least 1, so that at least a q share of the values are at or below the value of
/// that rank (with 50 values the 0.99 quantile is the largest). The product is taken a few
/// units of its last place down first, so that a product meant whole (0.07 × 100, which `f64`
/// makes 7.000000000000001) does not round up a rank.
pub(crate) fn nearest_rank(q: f64, n: u64) -> u64 {
    let x = q.clamp(0.0, 1.0) * n as f64;
    // The float to integer cast saturates (and takes NaN to 0): the rank stays in 1..=n.
    ((x - x * 4.0 * f64::EPSILON).ceil() as u64).clamp(1, n)
}

/// A mergeable quantile sketch of positive values; see the module docs for its accuracy.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Sketch {
    /// Counts by key, from key `offset` up.
    bins: Vec<u64>,
    offset: u32,
    /// Values below [`MIN_VALUE`] (and NaN).
    zeros: u64,
    count: u64,
}

/// The key of a value at least [`MIN_VALUE`].
#[inline(always)]
fn key(v: f64) -> u32 {
    // Positive floats order as their bits do; the exponent and top mantissa bits fit in 32.
    (v.min(MAX_VALUE).to_bits() >> SHIFT) as u32
}

/// The value a key answers: the harmonic middle of its bin, whose relative distance to either
/// bound is the least possible for the bin.
fn value(key: u32) -> f64 {
    let lo = f64::from_bits(u64::from(key) << SHIFT);
    let hi = f64::from_bits(u64::from(key + 1) << SHIFT);
    // 2·lo·hi/(lo+hi), without overflowing for the largest keys.
    lo * (2.0 / (1.0 + lo / hi))
}

impl Sketch {
    /// Counts one value.
    #[inline]
    pub(crate) fn add(&mut self, v: f64) {
        self.count += 1;
        // NaN too.
        if v < MIN_VALUE || v.is_nan() {
            self.zeros += 1;
            return;
        }
        let k = key(v);
        match self.bins.get_mut(k.wrapping_sub(self.offset) as usize) {
            Some(bin) => *bin += 1,
            None => self.add_outside(k, 1),
        }
    }

    /// Adds `n` at key `k`, outside the bins kept so far: they grow to cover it (or it folds
    /// into the lowest, past the cap).
    #[inline(never)]
    fn add_outside(&mut self, k: u32, n: u64) {
        self.cover(k, k);
        let i = k.saturating_sub(self.offset) as usize;
        if let Some(bin) = self.bins.get_mut(i) {
            *bin += n;
        }
    }

    /// Grows the bins to cover keys `lo..=hi` (the highest [`MAX_BINS`] of them, with what they
    /// had), keys below the kept ones folding into the lowest.
    fn cover(&mut self, lo: u32, hi: u32) {
        let (mut lo, mut hi) = (lo, hi);
        if !self.bins.is_empty() {
            lo = lo.min(self.offset);
            hi = hi.max(self.offset + self.bins.len() as u32 - 1);
        }
        let lo = (lo - lo % CHUNK).max(hi.saturating_sub(MAX_BINS - 1));
        let hi = (hi - hi % CHUNK + CHUNK - 1).min(lo + MAX_BINS - 1);
        if lo == self.offset && (hi - lo + 1) as usize == self.bins.len() {
            return;
        }
        let mut bins = vec![0; (hi - lo + 1) as usize];
        for (i, n) in self.bins.iter().enumerate() {
            let k = self.offset + i as u32;
            bins[(k.max(lo) - lo) as usize] += n;
        }
        self.bins = bins;
        self.offset = lo;
    }

    /// Adds `other`'s values to these.
    pub(crate) fn merge(&mut self, other: &Sketch) {
        self.count += other.count;
        self.zeros += other.zeros;
        if other.bins.is_empty() {
            return;
        }
        if self.bins.is_empty() {
            self.bins.clone_from(&other.bins);
            self.offset = other.offset;
            return;
        }
        // Mostly both runs fit within the cap together: grown to their union, then added bin to
        // bin as slices (which the compiler vectorises), with no search for the counted bins.
        let end = |s: &Sketch| s.offset + s.bins.len() as u32;
        if end(self).max(end(other)) - self.offset.min(other.offset) <= MAX_BINS {
            self.cover(other.offset, end(other) - 1);
            let start = other.offset.checked_sub(self.offset).map(|i| i as usize);
            if let Some(to) = start.and_then(|i| self.bins.get_mut(i..i + other.bins.len())) {
                for (to, n) in to.iter_mut().zip(&other.bins) {
                    *to += n;
                }
                return;
            }
        }
        // Past the cap: only the counted bins, the lowest folding.
        let Some(last) = other.bins.iter().rposition(|&n| n > 0) else {
            return;
        };
        let first = other.bins.iter().position(|&n| n > 0).unwrap_or(last);
        self.cover(other.offset + first as u32, other.offset + last as u32);
        for (i, &n) in other.bins.iter().enumerate().take(last + 1).skip(first) {
            let k = other.offset + i as u32;
            if let Some(bin) = self.bins.get_mut(k.saturating_sub(self.offset) as usize) {
                *bin += n;
            }
        }
    }

    /// Values counted.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// The `q` quantile (0 to 1): the value of nearest rank ⌈q·n⌉ (from 1: the least value
    /// that at least a q share of the values are at or below) within 0.78%; `None` when empty.
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = nearest_rank(q, self.count) - 1;
        if rank < self.zeros {
            return Some(0.0);
        }
        let mut seen = self.zeros;
        for (i, &n) in self.bins.iter().enumerate() {
            seen += n;
            if seen > rank {
                return Some(value(self.offset + i as u32));
            }
        }
        // Unreachable: the bins and zeros hold `count` values.
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The value of nearest rank ⌈q·n⌉ (from 1, at least 1) of `sorted`, counted out: the
    /// least value that at least a q share of `sorted` is at or below.
    fn at_rank(sorted: &[f64], q: f64) -> f64 {
        let n = sorted.len();
        // The same few units of the product's last place as `nearest_rank` allows.
        let x = q * n as f64;
        let below_or_at = |i: usize| (i + 1) as f64 >= x - x * 4.0 * f64::EPSILON;
        sorted[(0..n).find(|&i| below_or_at(i)).unwrap_or(n - 1)]
    }

    #[test]
    fn the_tail_quantile_of_few_values_is_their_largest() {
        let mut s = Sketch::default();
        for _ in 0..49 {
            s.add(1.0);
        }
        s.add(1500.0);
        // 49 of 50 values are 98%: the 0.99 quantile is the one slow value.
        assert!(within(s.quantile(0.99).unwrap(), 1500.0, 0.0078));
        assert!(within(s.quantile(0.98).unwrap(), 1.0, 0.0078));
        assert_eq!(nearest_rank(0.95, 20), 19);
        assert_eq!(nearest_rank(0.07, 100), 7);
        assert_eq!(nearest_rank(0.0, 5), 1);
        assert_eq!(nearest_rank(f64::NAN, 5), 1);
        assert_eq!(nearest_rank(1.0, 5), 5);
    }

    fn within(got: f64, want: f64, relative: f64) -> bool {
        (got - want).abs() <= want.abs() * relative
    }

    proptest! {
        /// Every quantile within 0.78% of the value at its rank, whatever the values' spread
        /// (up to the cap's 32 powers of two).
        #[test]
        fn quantiles_within_their_accuracy(
            values in prop::collection::vec(1.0e-3f64..4.0e6, 1..400),
            q in 0.0f64..=1.0,
        ) {
            let mut s = Sketch::default();
            for &v in &values {
                s.add(v);
            }
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let got = s.quantile(q).unwrap();
            prop_assert!(within(got, at_rank(&sorted, q), 0.0078), "{got} vs {}", at_rank(&sorted, q));
            prop_assert_eq!(s.count(), values.len() as u64);
        }

        /// A merge of sketches is one sketch of all their values, in any split.
        #[test]
        fn merged_equals_one_sketch_of_all(
            a in prop::collection::vec(prop_oneof![Just(0.0), 1.0e-3f64..1.0e9], 0..200),
            b in prop::collection::vec(prop_oneof![Just(0.0), 1.0e-3f64..1.0e9], 0..200),
        ) {
            let (mut sa, mut sb, mut all) = (Sketch::default(), Sketch::default(), Sketch::default());
            for &v in &a {
                sa.add(v);
                all.add(v);
            }
            for &v in &b {
                sb.add(v);
                all.add(v);
            }
            sa.merge(&sb);
            for q in [0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0] {
                prop_assert_eq!(sa.quantile(q), all.quantile(q));
            }
            prop_assert_eq!(sa.count(), all.count());
        }
    }

    #[test]
    fn keys_order_as_values_and_bins_are_a_64th_of_a_power_of_two() {
        assert!(key(1.0) < key(1.0 + 1.0 / 64.0));
        assert_eq!(key(1.0), key(1.0 + 1.0 / 65.0));
        assert_eq!(key(2.0) - key(1.0), 64);
        let v = value(key(1.0));
        assert!(v > 1.0 && v < 1.0 + 1.0 / 64.0);
    }

    #[test]
    fn empty_zero_nan_and_huge_values() {
        let mut s = Sketch::default();
        assert_eq!(s.quantile(0.5), None);
        for v in [0.0, f64::NAN, 5.0, 5.0, 5.0] {
            s.add(v);
        }
        assert_eq!(s.quantile(0.25), Some(0.0));
        assert!(within(s.quantile(0.75).unwrap(), 5.0, 0.0078));
        s.add(f64::INFINITY);
        assert!(s.quantile(0.9).unwrap().is_finite());
        assert_eq!(s.count(), 6);
    }

    /// Bins stay within the cap whatever the spread: the lowest fold, the top stays accurate.
    #[test]
    fn bins_are_capped_and_the_lowest_fold() {
        let mut s = Sketch::default();
        let mut values = vec![1.0e-6];
        while values[values.len() - 1] < 1.0e290 {
            values.push(values[values.len() - 1] * 1.3);
        }
        for &v in &values {
            s.add(v);
        }
        assert!(s.bins.len() <= MAX_BINS as usize);
        assert_eq!(s.bins.iter().sum::<u64>() + s.zeros, s.count());
        for q in [0.99, 0.999] {
            assert!(within(s.quantile(q).unwrap(), at_rank(&values, q), 0.0078));
        }
        // The lowest values folded: a low quantile answers the lowest kept bin, well above.
        assert!(s.quantile(0.01).unwrap() > 1.0e6 * at_rank(&values, 0.01));
    }
}
