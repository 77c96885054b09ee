//! SQL aggregate calls ([`AggregateCall`]) and their partial states ([`AggState`]), which merge exactly: any
//! split of the input into partitions, merged in any order, finishes with bit-for-bit the same result as one
//! pass (float sums are exact until [`FloatSum::value`] rounds once). That is what lets the runner aggregate per task and
//! per pane, checkpoint partial states and rescale without changing a result.
//!
//! Results: `count` is `Int`; `sum` is `Int` over integers only and `Float` once any float is summed; `avg` and
//! `approx_percentile` are `Float`; `min`/`max` return the extreme datum itself. Everything but `count` is NULL
//! over no (non-NULL) input. NULL arguments are ignored, as SQL; so are values an aggregate cannot use (text
//! in `sum`, booleans and JSON in `min`), since events are schemaless and one bad event must not fail a window.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::datum::Datum;
use crate::expr::Expr;
use crate::sketch::{DDSketch, FloatSum, HyperLogLog, IntSum, SumValue};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggFunc {
    Count,
    CountDistinct,
    Sum,
    Min,
    Max,
    Avg,
    ApproxPercentile,
}

impl AggFunc {
    /// The SQL name (`count` for both counts).
    pub fn name(self) -> &'static str {
        match self {
            AggFunc::Count | AggFunc::CountDistinct => "count",
            AggFunc::Sum => "sum",
            AggFunc::Min => "min",
            AggFunc::Max => "max",
            AggFunc::Avg => "avg",
            AggFunc::ApproxPercentile => "approx_percentile",
        }
    }
}

/// One aggregate call of a job, e.g. `approx_percentile(latency_ms, 0.99)`.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateCall {
    pub func: AggFunc,
    /// The argument, over input rows; `None` for `count(*)`.
    pub arg: Option<Expr>,
    /// The quantile of `approx_percentile`, in `[0, 1]`.
    pub percentile: Option<f64>,
}

/// Values up to which `count(DISTINCT)` is exact.
pub const DISTINCT_EXACT_LIMIT: usize = 64;
/// HyperLogLog precision of `count(DISTINCT)` beyond [`DISTINCT_EXACT_LIMIT`]: 4 KiB, ~1.6% standard error.
pub const DISTINCT_PRECISION: u8 = 12;
/// Relative accuracy of `approx_percentile`.
pub const PERCENTILE_ACCURACY: f64 = 0.01;
const PERCENTILE_MAX_BUCKETS: usize = 2048;

/// The partial state of one [`AggregateCall`]. Serialized compactly (sketches as their binary snapshots), since
/// checkpoints hold one per aggregate, key and window.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub enum AggState {
    /// `count(*)`, `count(x)`.
    Count(u64),
    CountDistinct(DistinctState),
    Sum(NumSum),
    Avg(NumSum),
    Min(Option<Datum>),
    Max(Option<Datum>),
    ApproxPercentile(Box<PercentileState>),
}

/// `count(DISTINCT x)`: exact (the sorted [`Datum::fingerprint`]s) up to [`DISTINCT_EXACT_LIMIT`] values, then a
/// HyperLogLog of the same fingerprints. Which form a state has depends only on the set of distinct
/// fingerprints seen, so merging is order-independent. Exact up to the limit but for fingerprint collisions
/// (~n²/2⁶⁵).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DistinctState(Distinct);

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
enum Distinct {
    Exact(Vec<u64>),
    Sketch(#[serde(with = "snapshot")] HyperLogLog),
}

/// `sum`/`avg` over numbers: integers exactly ([`IntSum`], `i128`), floats apart ([`FloatSum`], allocated only
/// once a float is seen), so int and float partials merge in any order to the same totals.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct NumSum {
    ints: IntSum,
    floats: Option<Box<FloatSum>>,
}

/// `approx_percentile(x, q)`: a [`DDSketch`] with 1% relative accuracy, and `q` (the state finishes alone). The
/// result approximates the nearest-rank quantile (SQL's `percentile_disc`), the element at `ceil(q * n) - 1` of
/// the sorted values (so the 0.99 percentile of two values is the larger one), within 1% of its magnitude.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PercentileState {
    q: f64,
    #[serde(with = "snapshot")]
    sketch: DDSketch,
}

impl AggState {
    pub fn new(call: &AggregateCall) -> AggState {
        match call.func {
            AggFunc::Count => AggState::Count(0),
            AggFunc::CountDistinct => AggState::CountDistinct(DistinctState(Distinct::Exact(Vec::new()))),
            AggFunc::Sum => AggState::Sum(NumSum::default()),
            AggFunc::Avg => AggState::Avg(NumSum::default()),
            AggFunc::Min => AggState::Min(None),
            AggFunc::Max => AggState::Max(None),
            AggFunc::ApproxPercentile => AggState::ApproxPercentile(Box::new(PercentileState {
                q: call.percentile.unwrap_or(0.5),
                sketch: DDSketch::new(PERCENTILE_ACCURACY, PERCENTILE_MAX_BUCKETS)
                    .expect("constant sketch parameters are valid"),
            })),
        }
    }

    /// Adds one input row: evaluates `call.arg` on it (`count(*)` counts the row). NULLs and unusable values are
    /// ignored. `call` must be the call the state was made for; a mismatch is ignored, never a panic.
    pub fn update(&mut self, call: &AggregateCall, row: &[Datum]) {
        let Some(arg) = &call.arg else {
            if let AggState::Count(n) = self {
                *n = n.saturating_add(1);
            }
            return;
        };
        let value = arg.eval_cow(row);
        let value: &Datum = &value;
        if value.is_null() {
            return;
        }
        match self {
            AggState::Count(n) => *n = n.saturating_add(1),
            AggState::CountDistinct(d) => d.insert(value.fingerprint()),
            AggState::Sum(s) | AggState::Avg(s) => s.insert(value),
            AggState::Min(m) => keep_extreme(m, value, Ordering::Less),
            AggState::Max(m) => keep_extreme(m, value, Ordering::Greater),
            AggState::ApproxPercentile(p) => {
                if let Some(x) = number(value) {
                    // Non-finite values are refused by the sketch and skipped like NULLs.
                    let _ = p.sketch.insert(x);
                }
            }
        }
    }

    /// Adds `other`'s input. States of different calls do not merge: `other` is then ignored.
    pub fn merge(&mut self, other: &AggState) {
        match (self, other) {
            (AggState::Count(a), AggState::Count(b)) => *a = a.saturating_add(*b),
            (AggState::CountDistinct(a), AggState::CountDistinct(b)) => a.merge(b),
            (AggState::Sum(a), AggState::Sum(b)) | (AggState::Avg(a), AggState::Avg(b)) => a.merge(b),
            (AggState::Min(a), AggState::Min(Some(b))) => keep_extreme(a, b, Ordering::Less),
            (AggState::Max(a), AggState::Max(Some(b))) => keep_extreme(a, b, Ordering::Greater),
            (AggState::ApproxPercentile(a), AggState::ApproxPercentile(b)) => {
                // Same parameters by construction; a damaged state with others is ignored.
                let _ = a.sketch.merge(&b.sketch);
            }
            _ => {}
        }
    }

    /// The aggregate's value so far.
    pub fn finish(&self) -> Datum {
        match self {
            AggState::Count(n) => Datum::Int(i64::try_from(*n).unwrap_or(i64::MAX)),
            AggState::CountDistinct(d) => Datum::Int(i64::try_from(d.count()).unwrap_or(i64::MAX)),
            AggState::Sum(s) => s.sum(),
            AggState::Avg(s) => s.avg(),
            AggState::Min(m) | AggState::Max(m) => m.clone().unwrap_or(Datum::Null),
            AggState::ApproxPercentile(p) => match p.sketch.quantile(p.q) {
                Ok(Some(v)) => Datum::Float(v),
                _ => Datum::Null,
            },
        }
    }
}

fn number(d: &Datum) -> Option<f64> {
    match d {
        Datum::Int(i) => Some(*i as f64),
        Datum::Float(f) => Some(*f),
        _ => None,
    }
}

/// The order of `min`/`max`: total over the values they accept (numbers, text, times; not NULL, NaN, booleans or
/// JSON), so the extreme of a set does not depend on arrival order. Numbers compare by value (ties: `Int`
/// before `Float`; floats by `total_cmp`, so `-0.0 < 0.0`), then all numbers < all text < all times.
fn extreme_cmp(a: &Datum, b: &Datum) -> Ordering {
    fn class(d: &Datum) -> u8 {
        match d {
            Datum::Int(_) | Datum::Float(_) => 0,
            Datum::Str(_) => 1,
            _ => 2,
        }
    }
    match (a, b) {
        (Datum::Float(x), Datum::Float(y)) => x.total_cmp(y),
        (Datum::Int(_), Datum::Float(_)) => a.sql_cmp(b).unwrap_or(Ordering::Equal).then(Ordering::Less),
        (Datum::Float(_), Datum::Int(_)) => a.sql_cmp(b).unwrap_or(Ordering::Equal).then(Ordering::Greater),
        _ => class(a).cmp(&class(b)).then_with(|| a.sql_cmp(b).unwrap_or(Ordering::Equal)),
    }
}

fn orderable(d: &Datum) -> bool {
    match d {
        Datum::Int(_) | Datum::Str(_) | Datum::Time(_) => true,
        Datum::Float(f) => !f.is_nan(),
        _ => false,
    }
}

fn keep_extreme(current: &mut Option<Datum>, candidate: &Datum, want: Ordering) {
    if !orderable(candidate) {
        return;
    }
    if current.as_ref().is_none_or(|c| extreme_cmp(candidate, c) == want) {
        *current = Some(candidate.clone());
    }
}

impl DistinctState {
    fn insert(&mut self, hash: u64) {
        match &mut self.0 {
            Distinct::Exact(hashes) => match hashes.binary_search(&hash) {
                Ok(_) => {}
                Err(pos) if hashes.len() < DISTINCT_EXACT_LIMIT => hashes.insert(pos, hash),
                Err(_) => {
                    let mut hll = sketch_of(hashes);
                    hll.insert_hash(hash);
                    self.0 = Distinct::Sketch(hll);
                }
            },
            Distinct::Sketch(hll) => hll.insert_hash(hash),
        }
    }

    fn merge(&mut self, other: &DistinctState) {
        match &other.0 {
            Distinct::Exact(hashes) => hashes.iter().for_each(|&h| self.insert(h)),
            Distinct::Sketch(theirs) => {
                if let Distinct::Exact(hashes) = &self.0 {
                    self.0 = Distinct::Sketch(sketch_of(hashes));
                }
                if let Distinct::Sketch(ours) = &mut self.0 {
                    // Same precision by construction; a damaged state with another is ignored.
                    let _ = ours.merge(theirs);
                }
            }
        }
    }

    /// Distinct values seen: exact below the limit, else the HyperLogLog estimate.
    pub fn count(&self) -> u64 {
        match &self.0 {
            Distinct::Exact(hashes) => hashes.len() as u64,
            Distinct::Sketch(hll) => hll.count(),
        }
    }

    /// Whether the state is still exact.
    pub fn is_exact(&self) -> bool {
        matches!(self.0, Distinct::Exact(_))
    }
}

fn sketch_of(hashes: &[u64]) -> HyperLogLog {
    let mut hll = HyperLogLog::new(DISTINCT_PRECISION).expect("constant precision is valid");
    hashes.iter().for_each(|&h| hll.insert_hash(h));
    hll
}

impl NumSum {
    fn insert(&mut self, value: &Datum) {
        match value {
            Datum::Int(i) => self.ints.insert(*i),
            Datum::Float(f) => self.floats.get_or_insert_with(Box::default).insert(*f),
            _ => {}
        }
    }

    fn merge(&mut self, other: &NumSum) {
        self.ints.merge(&other.ints);
        if let Some(theirs) = &other.floats {
            self.floats.get_or_insert_with(Box::default).merge(theirs);
        }
    }

    fn count(&self) -> u64 {
        self.ints.count().saturating_add(self.floats.as_ref().map_or(0, |f| f.count()))
    }

    fn int_total(&self) -> f64 {
        match self.ints.value() {
            Some(SumValue::Int(i)) => i as f64,
            Some(SumValue::Float(f)) => f,
            None => 0.0,
        }
    }

    fn float_total(&self) -> Option<f64> {
        self.floats.as_ref().and_then(|f| f.value())
    }

    fn sum(&self) -> Datum {
        match self.float_total() {
            Some(f) => Datum::Float(f + self.int_total()),
            None => match self.ints.value() {
                Some(SumValue::Int(i)) => Datum::Int(i),
                Some(SumValue::Float(f)) => Datum::Float(f),
                None => Datum::Null,
            },
        }
    }

    fn avg(&self) -> Datum {
        let count = self.count();
        if count == 0 {
            return Datum::Null;
        }
        Datum::Float((self.int_total() + self.float_total().unwrap_or(0.0)) / count as f64)
    }
}

/// Serde for sketches through their validated binary snapshots (bytes; a sequence of numbers also accepted, for
/// formats like JSON that write bytes that way).
mod snapshot {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    use crate::error::StreamError;
    use crate::sketch::{DDSketch, HyperLogLog};

    pub(super) trait Snapshot: Sized {
        fn to_bytes(&self) -> Vec<u8>;
        fn from_bytes(bytes: &[u8]) -> Result<Self, StreamError>;
    }

    impl Snapshot for DDSketch {
        fn to_bytes(&self) -> Vec<u8> {
            DDSketch::to_bytes(self)
        }
        fn from_bytes(bytes: &[u8]) -> Result<Self, StreamError> {
            DDSketch::from_bytes(bytes)
        }
    }

    impl Snapshot for HyperLogLog {
        fn to_bytes(&self) -> Vec<u8> {
            HyperLogLog::to_bytes(self)
        }
        fn from_bytes(bytes: &[u8]) -> Result<Self, StreamError> {
            HyperLogLog::from_bytes(bytes)
        }
    }

    pub(super) fn serialize<T: Snapshot, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&value.to_bytes())
    }

    pub(super) fn deserialize<'de, T: Snapshot, D: Deserializer<'de>>(deserializer: D) -> Result<T, D::Error> {
        let bytes = deserializer.deserialize_bytes(BytesVisitor)?;
        T::from_bytes(&bytes).map_err(D::Error::custom)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a sketch snapshot as bytes")
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            // Capped: the size hint comes from the input.
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(func: AggFunc) -> AggregateCall {
        AggregateCall { func, arg: Some(Expr::Column(0)), percentile: None }
    }

    fn run(call: &AggregateCall, values: &[Datum]) -> AggState {
        let mut state = AggState::new(call);
        for v in values {
            state.update(call, std::slice::from_ref(v));
        }
        state
    }

    fn ints(values: &[i64]) -> Vec<Datum> {
        values.iter().map(|&i| Datum::Int(i)).collect()
    }

    #[test]
    fn counts_ignore_nulls_except_star() {
        let values = vec![Datum::Int(1), Datum::Null, Datum::from("x")];
        assert_eq!(run(&call(AggFunc::Count), &values).finish(), Datum::Int(2));
        let star = AggregateCall { func: AggFunc::Count, arg: None, percentile: None };
        assert_eq!(run(&star, &values).finish(), Datum::Int(3));
        assert_eq!(run(&star, &[]).finish(), Datum::Int(0));
    }

    #[test]
    fn empty_results_are_null() {
        for func in [AggFunc::Sum, AggFunc::Min, AggFunc::Max, AggFunc::Avg, AggFunc::ApproxPercentile] {
            let c = AggregateCall { percentile: Some(0.5), ..call(func) };
            assert_eq!(run(&c, &[Datum::Null]).finish(), Datum::Null, "{func:?}");
        }
        assert_eq!(run(&call(AggFunc::CountDistinct), &[]).finish(), Datum::Int(0));
    }

    #[test]
    fn sums_and_averages() {
        let sum = call(AggFunc::Sum);
        assert_eq!(run(&sum, &ints(&[1, 2, 3])).finish(), Datum::Int(6));
        assert_eq!(run(&sum, &ints(&[i64::MAX, 1, -1])).finish(), Datum::Int(i64::MAX));
        assert_eq!(run(&sum, &ints(&[i64::MAX, 1])).finish(), Datum::Float(i64::MAX as f64 + 1.0));
        let mixed = [Datum::Int(1), Datum::Float(0.5), Datum::from("7"), Datum::Bool(true)];
        assert_eq!(run(&sum, &mixed).finish(), Datum::Float(1.5));
        let avg = call(AggFunc::Avg);
        assert_eq!(run(&avg, &ints(&[1, 2])).finish(), Datum::Float(1.5));
        assert_eq!(run(&avg, &mixed).finish(), Datum::Float(0.75));
        // Int and float partials merge either way round.
        let (mut a, b) = (run(&sum, &ints(&[2])), run(&sum, &[Datum::Float(0.25)]));
        let mut b2 = b.clone();
        a.merge(&b);
        b2.merge(&run(&sum, &ints(&[2])));
        assert_eq!(a.finish(), Datum::Float(2.25));
        assert_eq!(b2.finish(), Datum::Float(2.25));
    }

    #[test]
    fn min_max_total_order() {
        let values = vec![
            Datum::from("b"),
            Datum::Int(3),
            Datum::Float(f64::NAN),
            Datum::Float(-1.5),
            Datum::Bool(false),
            Datum::Time(5),
            Datum::Null,
        ];
        assert_eq!(run(&call(AggFunc::Min), &values).finish(), Datum::Float(-1.5));
        assert_eq!(run(&call(AggFunc::Max), &values).finish(), Datum::Time(5));
        let strings = [Datum::from("b"), Datum::from("a"), Datum::from("c")];
        assert_eq!(run(&call(AggFunc::Min), &strings).finish(), Datum::from("a"));
        assert_eq!(run(&call(AggFunc::Max), &strings).finish(), Datum::from("c"));
        // Ties between equal numbers of different types are broken the same way in any order.
        let tie = [Datum::Float(1.0), Datum::Int(1)];
        let rev = [Datum::Int(1), Datum::Float(1.0)];
        assert_eq!(run(&call(AggFunc::Min), &tie).finish(), Datum::Int(1));
        assert_eq!(run(&call(AggFunc::Min), &rev).finish(), Datum::Int(1));
        assert_eq!(run(&call(AggFunc::Max), &tie).finish(), Datum::Float(1.0));
        assert_eq!(run(&call(AggFunc::Max), &rev).finish(), Datum::Float(1.0));
    }

    #[test]
    fn distinct_switches_to_sketch() {
        let c = call(AggFunc::CountDistinct);
        let values: Vec<Datum> = (0..64).chain(0..64).map(Datum::Int).collect();
        let state = run(&c, &values);
        assert_eq!(state.finish(), Datum::Int(64));
        let AggState::CountDistinct(d) = &state else { panic!("{state:?}") };
        assert!(d.is_exact());
        // 1 and 1.0 are the same value.
        let mut state = state;
        state.update(&c, &[Datum::Float(1.0)]);
        assert_eq!(state.finish(), Datum::Int(64));
        state.update(&c, &[Datum::from("new")]);
        let AggState::CountDistinct(d) = &state else { panic!("{state:?}") };
        assert!(!d.is_exact());
        let Datum::Int(n) = state.finish() else { panic!() };
        assert!((62..=68).contains(&n), "{n}");
        let big = run(&c, &(0..10_000).map(Datum::Int).collect::<Vec<_>>()).finish();
        let Datum::Int(n) = big else { panic!() };
        assert!((n - 10_000).abs() < 500, "{n}");
    }

    #[test]
    fn percentile() {
        let c = AggregateCall { percentile: Some(0.9), ..call(AggFunc::ApproxPercentile) };
        let values: Vec<Datum> = (1..=1000).map(Datum::Int).collect();
        let Datum::Float(p) = run(&c, &values).finish() else { panic!() };
        assert!((p - 900.0).abs() <= 9.0 + 1e-9, "{p}");
        let state = run(&c, &[Datum::Float(f64::INFINITY), Datum::from("x"), Datum::Float(2.0)]);
        assert_eq!(state.finish(), Datum::Float(2.0));
    }

    #[test]
    fn mismatched_merge_is_ignored() {
        let mut a = run(&call(AggFunc::Sum), &ints(&[1]));
        a.merge(&run(&call(AggFunc::Min), &ints(&[5])));
        assert_eq!(a.finish(), Datum::Int(1));
        let mut count = AggState::new(&call(AggFunc::Sum));
        count.update(&AggregateCall { func: AggFunc::Count, arg: None, percentile: None }, &[]);
        assert_eq!(count.finish(), Datum::Null);
    }

    #[test]
    fn serde_round_trips_and_is_compact() {
        let p = AggregateCall { percentile: Some(0.5), ..call(AggFunc::ApproxPercentile) };
        let many: Vec<Datum> = (0..200).map(Datum::Int).collect();
        let states = [
            run(&call(AggFunc::Count), &ints(&[1, 2])),
            run(&call(AggFunc::CountDistinct), &ints(&[1, 2])),
            run(&call(AggFunc::CountDistinct), &many),
            run(&call(AggFunc::Sum), &[Datum::Int(1), Datum::Float(0.5)]),
            run(&call(AggFunc::Avg), &ints(&[1])),
            run(&call(AggFunc::Min), &[Datum::from("a")]),
            run(&call(AggFunc::Max), &[]),
            run(&p, &many),
        ];
        for state in &states {
            let bytes = postcard::to_stdvec(state).unwrap();
            let back: AggState = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(back.finish(), state.finish());
            let text = serde_json::to_string(state).unwrap();
            let back: AggState = serde_json::from_str(&text).unwrap();
            assert_eq!(back.finish(), state.finish());
        }
        assert!(postcard::to_stdvec(&states[0]).unwrap().len() <= 3);
        assert!(postcard::to_stdvec(&states[4]).unwrap().len() <= 8);
        // A damaged sketch snapshot is an error, not a panic.
        let mut bytes = postcard::to_stdvec(&states[7]).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xFF;
        bytes.truncate(last - 3);
        assert!(postcard::from_bytes::<AggState>(&bytes).is_err());
    }
}
