//! DDSketch quantiles (Masson, Rim, Lee: "DDSketch: A Fast and Fully-Mergeable Quantile Sketch with
//! Relative-Error Guarantees", VLDB 2019).

use crate::error::StreamError;
use crate::sketch::bytes::Reader;

const MAGIC: &[u8; 4] = b"SDDS";
const VERSION: u8 = 1;

/// A quantile sketch with relative accuracy `alpha`, for `approx_percentile`.
///
/// - Values are grouped in logarithmic buckets: bucket `k` holds `(gamma^(k-1), gamma^k]` with
///   `gamma = (1 + alpha) / (1 - alpha)`, one store for positive values and one for the magnitudes of negative
///   values. Values with `|x| < f64::MIN_POSITIVE` (0, -0 and subnormals) are counted as 0.
/// - **Guarantee**: [`DDSketch::quantile`]`(q)` returns `v` with `|v - x| <= alpha * |x|` (plus float rounding,
///   ~1e-12 relative), where `x` is the exact nearest-rank quantile (SQL's `percentile_disc`): the element at
///   position `ceil(q * n) - 1` of the sorted input, so the 0.99 quantile of three values is the largest. This holds as long as no bucket was collapsed (below). Results are also clamped to the
///   exact min and max, which are tracked.
/// - **Bounded memory**: each store keeps at most `max_buckets` consecutive buckets. Beyond, the lowest buckets
///   (the smallest magnitudes: the values nearest zero) are collapsed into the lowest kept one, so quantiles of
///   large magnitudes (tail latencies) keep the guarantee and those of the collapsed values lose it. With the
///   defaults (1%, 2048 buckets, 16 KiB per store at most) a store spans a ratio of `gamma^2048 ~ 6e17` between
///   its smallest and largest magnitudes before anything collapses.
/// - Non-finite values are refused ([`StreamError::NonFiniteValue`]) and leave the sketch unchanged, as SQL
///   aggregates skip `NULL`s.
/// - **Merge is exact**: collapsing is defined from the largest bucket ever seen, so the merge of the sketches
///   of two streams equals (`==`) the sketch of their concatenation, in any order.
/// - Snapshot: [`DDSketch::to_bytes`] / [`DDSketch::from_bytes`]; decoding validates everything and never
///   panics.
#[derive(Debug, Clone, PartialEq)]
pub struct DDSketch {
    alpha: f64,
    max_buckets: usize,
    gamma: f64,
    /// `1 / ln(gamma)`.
    multiplier: f64,
    positive: Store,
    negative: Store,
    zero_count: u64,
    count: u64,
    min: f64,
    max: f64,
}

impl Default for DDSketch {
    /// 1% relative accuracy, 2048 buckets per store.
    fn default() -> Self {
        DDSketch::new(0.01, 2048).expect("default parameters are valid")
    }
}

impl DDSketch {
    pub const MIN_ALPHA: f64 = 1e-6;
    pub const MAX_ALPHA: f64 = 0.5;
    pub const MIN_BUCKETS: usize = 16;
    pub const MAX_BUCKETS: usize = 1 << 16;

    pub fn new(alpha: f64, max_buckets: usize) -> Result<Self, StreamError> {
        // `contains` is false for NaN too.
        if !(Self::MIN_ALPHA..=Self::MAX_ALPHA).contains(&alpha) {
            return Err(StreamError::InvalidAccuracy { alpha, min: Self::MIN_ALPHA, max: Self::MAX_ALPHA });
        }
        if !(Self::MIN_BUCKETS..=Self::MAX_BUCKETS).contains(&max_buckets) {
            return Err(StreamError::InvalidMaxBuckets { max_buckets, min: Self::MIN_BUCKETS, max: Self::MAX_BUCKETS });
        }
        let gamma = (1.0 + alpha) / (1.0 - alpha);
        Ok(DDSketch {
            alpha,
            max_buckets,
            gamma,
            multiplier: 1.0 / gamma.ln(),
            positive: Store::default(),
            negative: Store::default(),
            zero_count: 0,
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        })
    }

    pub fn relative_accuracy(&self) -> f64 {
        self.alpha
    }

    pub fn max_buckets(&self) -> usize {
        self.max_buckets
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Exact minimum, `None` when empty.
    pub fn min(&self) -> Option<f64> {
        (self.count > 0).then_some(self.min)
    }

    /// Exact maximum, `None` when empty.
    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }

    /// Number of buckets in use (memory is about 8 bytes each).
    pub fn bucket_count(&self) -> usize {
        self.positive.counts.len() + self.negative.counts.len()
    }

    #[inline]
    fn key(&self, magnitude: f64) -> i64 {
        (magnitude.ln() * self.multiplier).ceil() as i64
    }

    /// The bucket's representative, within `alpha` of every value in `(gamma^(k-1), gamma^k]`.
    fn value(&self, key: i64) -> f64 {
        2.0 / (1.0 + self.gamma) * (key as f64 / self.multiplier).exp()
    }

    pub fn insert(&mut self, x: f64) -> Result<(), StreamError> {
        if !x.is_finite() {
            return Err(StreamError::NonFiniteValue { value: x });
        }
        if x.abs() < f64::MIN_POSITIVE {
            self.zero_count = self.zero_count.saturating_add(1);
        } else if x > 0.0 {
            let key = self.key(x);
            self.positive.add(key, 1, self.max_buckets);
        } else {
            let key = self.key(-x);
            self.negative.add(key, 1, self.max_buckets);
        }
        self.count = self.count.saturating_add(1);
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        Ok(())
    }

    /// Adds `other`'s values. Errors if the accuracy or bucket limit differ.
    pub fn merge(&mut self, other: &DDSketch) -> Result<(), StreamError> {
        if self.alpha != other.alpha || self.max_buckets != other.max_buckets {
            return Err(StreamError::IncompatibleMerge {
                what: "ddsketch",
                ours: format!("alpha {} max_buckets {}", self.alpha, self.max_buckets),
                theirs: format!("alpha {} max_buckets {}", other.alpha, other.max_buckets),
            });
        }
        self.positive.merge(&other.positive, self.max_buckets);
        self.negative.merge(&other.negative, self.max_buckets);
        self.zero_count = self.zero_count.saturating_add(other.zero_count);
        self.count = self.count.saturating_add(other.count);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        Ok(())
    }

    /// The approximate nearest-rank `q`-quantile (see the type docs for the guarantee); `Ok(None)` when empty.
    /// `q = 0` is the minimum and `q = 1` the maximum, both exact.
    pub fn quantile(&self, q: f64) -> Result<Option<f64>, StreamError> {
        if !(0.0..=1.0).contains(&q) {
            return Err(StreamError::InvalidQuantile { q });
        }
        if self.count == 0 {
            return Ok(None);
        }
        if q == 0.0 {
            return Ok(Some(self.min));
        }
        if q == 1.0 {
            return Ok(Some(self.max));
        }
        // Index of the nearest-rank element: the first whose cumulative count reaches ceil(q * n).
        let rank = ((q * self.count as f64).ceil() - 1.0).max(0.0);
        let mut seen = 0u64;
        // Ascending order: most negative first, then zeros, then positives.
        for (key, n) in self.negative.iter().rev() {
            seen = seen.saturating_add(n);
            if seen as f64 > rank {
                return Ok(Some(self.clamp(-self.value(key))));
            }
        }
        seen = seen.saturating_add(self.zero_count);
        if seen as f64 > rank {
            return Ok(Some(self.clamp(0.0)));
        }
        for (key, n) in self.positive.iter() {
            seen = seen.saturating_add(n);
            if seen as f64 > rank {
                return Ok(Some(self.clamp(self.value(key))));
            }
        }
        Ok(Some(self.max))
    }

    fn clamp(&self, v: f64) -> f64 {
        v.clamp(self.min, self.max)
    }

    /// Lowest and highest bucket keys any finite value can have: the bounds checked on decode.
    fn key_range(&self) -> (i64, i64) {
        (self.key(f64::MIN_POSITIVE), self.key(f64::MAX))
    }

    /// `SDDS`, version, alpha (f64), max_buckets (u32), min, max (f64), zero count (u64), then the negative and
    /// the positive store, each as first key (i64), bucket count (u32) and counts (u64 each). Little-endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        let stores = self.bucket_count() * 8 + 24;
        let mut out = Vec::with_capacity(4 + 1 + 8 + 4 + 8 + 8 + 8 + stores);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.alpha.to_le_bytes());
        out.extend_from_slice(&(self.max_buckets as u32).to_le_bytes());
        out.extend_from_slice(&self.min.to_le_bytes());
        out.extend_from_slice(&self.max.to_le_bytes());
        out.extend_from_slice(&self.zero_count.to_le_bytes());
        for store in [&self.negative, &self.positive] {
            out.extend_from_slice(&store.offset.to_le_bytes());
            out.extend_from_slice(&(store.counts.len() as u32).to_le_bytes());
            for c in &store.counts {
                out.extend_from_slice(&c.to_le_bytes());
            }
        }
        out
    }

    /// Decodes [`DDSketch::to_bytes`]. Checks magic, version, parameters, bucket limits and key range, that no
    /// count is lost (first and last bucket non-zero, total without overflow) and min/max consistency.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StreamError> {
        let mut r = Reader::new(bytes, "ddsketch");
        if r.take(4)? != MAGIC {
            return Err(r.corrupt("bad magic"));
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(r.corrupt(format!("unsupported version {version}")));
        }
        let alpha = r.f64()?;
        let max_buckets = r.u32()? as usize;
        let mut sketch = DDSketch::new(alpha, max_buckets).map_err(|e| r.corrupt(e.to_string()))?;
        let (min, max) = (r.f64()?, r.f64()?);
        let zero_count = r.u64()?;
        let (lowest_key, highest_key) = sketch.key_range();
        let mut count = zero_count;
        let mut stores = [Store::default(), Store::default()];
        for store in &mut stores {
            let offset = r.i64()?;
            let len = r.u32()? as usize;
            if len > max_buckets {
                return Err(r.corrupt(format!("{len} buckets exceed the limit {max_buckets}")));
            }
            if len.saturating_mul(8) > r.remaining() {
                return Err(r.corrupt(format!("truncated: {len} buckets announced")));
            }
            if len > 0 && (offset < lowest_key || offset > highest_key - (len as i64 - 1)) {
                return Err(r.corrupt(format!("bucket keys from {offset} ({len} buckets) out of range")));
            }
            let mut counts = Vec::with_capacity(len);
            for _ in 0..len {
                let c = r.u64()?;
                count = count.checked_add(c).ok_or_else(|| r.corrupt("total count overflows"))?;
                counts.push(c);
            }
            if counts.first().is_some_and(|&c| c == 0) || counts.last().is_some_and(|&c| c == 0) {
                return Err(r.corrupt("empty bucket at the edge of a store"));
            }
            *store = Store { offset: if len == 0 { 0 } else { offset }, counts };
        }
        r.finish()?;
        let consistent = if count == 0 {
            min == f64::INFINITY && max == f64::NEG_INFINITY
        } else {
            min.is_finite() && max.is_finite() && min <= max
        };
        if !consistent {
            return Err(StreamError::CorruptSnapshot {
                what: "ddsketch",
                reason: format!("min {min} and max {max} do not fit count {count}"),
            });
        }
        let [negative, positive] = stores;
        sketch.negative = negative;
        sketch.positive = positive;
        sketch.zero_count = zero_count;
        sketch.count = count;
        sketch.min = min;
        sketch.max = max;
        Ok(sketch)
    }
}

/// Dense counts for consecutive keys `offset..offset + counts.len()`. Invariants: empty, or first and last
/// count non-zero (so equal contents mean equal representations); at most `max_buckets` long.
#[derive(Debug, Clone, Default, PartialEq)]
struct Store {
    offset: i64,
    counts: Vec<u64>,
}

impl Store {
    fn iter(&self) -> impl DoubleEndedIterator<Item = (i64, u64)> + '_ {
        self.counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(i, &c)| (self.offset + i as i64, c))
    }

    fn top(&self) -> i64 {
        self.offset + self.counts.len() as i64 - 1
    }

    fn add(&mut self, key: i64, n: u64, max_buckets: usize) {
        if self.counts.is_empty() {
            self.offset = key;
            self.counts.push(n);
            return;
        }
        let top = self.top().max(key);
        let floor = top - (max_buckets as i64 - 1);
        let key = key.max(floor);
        if floor > self.offset {
            self.collapse_below(floor);
        }
        if key < self.offset {
            let grow = (self.offset - key) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = key;
        } else if key > self.top() {
            self.counts.resize((key - self.offset) as usize + 1, 0);
        }
        let slot = &mut self.counts[(key - self.offset) as usize];
        *slot = slot.saturating_add(n);
    }

    /// Folds every count below `floor` into `floor`'s bucket.
    fn collapse_below(&mut self, floor: i64) {
        let cut = (floor - self.offset) as usize;
        if cut >= self.counts.len() {
            let total = self.counts.iter().fold(0u64, |a, &c| a.saturating_add(c));
            self.counts.clear();
            self.counts.push(total);
        } else {
            let folded = self.counts.drain(..cut).fold(0u64, |a, c| a.saturating_add(c));
            self.counts[0] = self.counts[0].saturating_add(folded);
        }
        self.offset = floor;
    }

    fn merge(&mut self, other: &Store, max_buckets: usize) {
        if other.counts.is_empty() {
            return;
        }
        if self.counts.is_empty() {
            self.clone_from(other);
            return;
        }
        let top = self.top().max(other.top());
        let floor = top - (max_buckets as i64 - 1);
        let low = self.offset.min(other.offset).max(floor);
        let mut counts = vec![0u64; (top - low) as usize + 1];
        for store in [&*self, other] {
            for (i, &c) in store.counts.iter().enumerate() {
                let key = (store.offset + i as i64).max(low);
                let slot = &mut counts[(key - low) as usize];
                *slot = slot.saturating_add(c);
            }
        }
        self.offset = low;
        self.counts = counts;
    }
}
