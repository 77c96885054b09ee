//! Aggregate states merge exactly: any split of the input into partitions, merged in any order (with checkpoint
//! round trips in between), finishes like one pass. Plus `Datum`'s total `Eq`/`Hash` and its serde round trip.

use std::collections::HashSet;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice_stream::{AggFunc, AggState, AggregateCall, Datum, Expr};

/// Floats across magnitudes and signs, with zeros of both signs.
fn magnitude() -> impl Strategy<Value = f64> {
    prop_oneof![
        1 => Just(0.0),
        1 => Just(-0.0),
        8 => (any::<bool>(), -6.0f64..9.0).prop_map(|(neg, e)| if neg { -(10f64.powf(e)) } else { 10f64.powf(e) }),
        2 => (-5i32..5).prop_map(f64::from),
    ]
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        12 => magnitude(),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
    ]
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        (0i64..3).prop_map(|i| serde_json::json!({"a": i, "b": [i, "x"]})),
        (0i64..3).prop_map(|i| serde_json::json!([i, -0.0, null])),
    ]
}

/// Any datum, edge cases included.
fn datum() -> impl Strategy<Value = Datum> {
    prop_oneof![
        1 => Just(Datum::Null),
        1 => any::<bool>().prop_map(Datum::Bool),
        3 => prop_oneof![-5i64..5, any::<i64>(), Just(i64::MAX), Just(i64::MIN)].prop_map(Datum::Int),
        3 => float().prop_map(Datum::Float),
        2 => "[a-cé]{0,3}".prop_map(|s| Datum::Str(Arc::from(s))),
        1 => prop_oneof![-3i64..3, any::<i64>()].prop_map(Datum::Time),
        1 => json_value().prop_map(|v| Datum::Json(Arc::new(v))),
    ]
}

/// Numbers only (and NULLs and a few unusable values, which numeric aggregates skip).
fn number() -> impl Strategy<Value = Datum> {
    prop_oneof![
        1 => Just(Datum::Null),
        1 => Just(Datum::Str(Arc::from("7"))),
        4 => prop_oneof![-1000i64..1000, any::<i64>(), Just(i64::MAX), Just(i64::MIN)].prop_map(Datum::Int),
        6 => float().prop_map(Datum::Float),
    ]
}

/// At most 38 distinct values (so `count(DISTINCT)` stays exact), with `2` and `2.0` and `0` and `-0.0` equal.
fn few_distinct() -> impl Strategy<Value = Datum> {
    prop_oneof![
        1 => Just(Datum::Null),
        1 => any::<bool>().prop_map(Datum::Bool),
        4 => (-10i64..=10).prop_map(Datum::Int),
        2 => prop_oneof![Just(0.5), Just(1.5), Just(-2.5), Just(3.0), Just(-0.0)].prop_map(Datum::Float),
        2 => "[ab]{0,2}".prop_map(|s| Datum::Str(Arc::from(s))),
        1 => (0i64..5).prop_map(Datum::Time),
    ]
}

fn finite_number() -> impl Strategy<Value = Datum> {
    prop_oneof![magnitude().prop_map(Datum::Float), (-1000i64..1000).prop_map(Datum::Int)]
}

fn call(func: AggFunc, percentile: Option<f64>) -> AggregateCall {
    AggregateCall { func, arg: Some(Expr::Column(0)), percentile }
}

fn one_pass(call: &AggregateCall, values: &[Datum]) -> AggState {
    let mut state = AggState::new(call);
    for v in values {
        state.update(call, std::slice::from_ref(v));
    }
    state
}

/// Splits `values` into up to `parts` random partitions, checkpoints some partial states (postcard round
/// trip), and merges them pairwise in a random order and tree shape.
fn split_and_merge(call: &AggregateCall, values: &[Datum], parts: usize, seed: u64) -> AggState {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut states: Vec<AggState> = (0..parts).map(|_| AggState::new(call)).collect();
    for v in values {
        let p = rng.random_range(0..parts);
        states[p].update(call, std::slice::from_ref(v));
    }
    while states.len() > 1 {
        let from = states.swap_remove(rng.random_range(0..states.len()));
        let from = if rng.random_bool(0.5) { restore(&from) } else { from };
        let into = rng.random_range(0..states.len());
        states[into].merge(&from);
    }
    restore(&states[0])
}

fn restore(state: &AggState) -> AggState {
    postcard::from_bytes(&postcard::to_stdvec(state).expect("serializes")).expect("round trips")
}

/// The same datum, including the sign of zero (which `Datum`'s `Eq` deliberately ignores).
fn identical(a: &Datum, b: &Datum) -> bool {
    match (a, b) {
        (Datum::Float(x), Datum::Float(y)) => x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
        _ => a == b,
    }
}

fn abs_total(values: &[Datum]) -> f64 {
    values
        .iter()
        .map(|v| match v {
            Datum::Int(i) => (*i as f64).abs(),
            Datum::Float(f) if f.is_finite() => f.abs(),
            _ => 0.0,
        })
        .sum()
}

/// Float results agree up to FloatSum's rounding: a few ulps of the sum of magnitudes.
fn close(a: &Datum, b: &Datum, scale: f64) -> bool {
    match (a, b) {
        (Datum::Float(x), Datum::Float(y)) => {
            (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= 1e-12 * scale.max(f64::MIN_POSITIVE)
        }
        _ => a == b,
    }
}

fn std_hash(d: &Datum) -> u64 {
    let mut h = DefaultHasher::new();
    d.hash(&mut h);
    h.finish()
}

/// An independent notion of SQL-distinct values, for the exact `count(DISTINCT)` check.
#[derive(Hash, PartialEq, Eq)]
enum DistinctKey {
    Number(i64),
    Fraction(u64),
    Text(String),
    Time(i64),
    Bool(bool),
}

fn distinct_key(d: &Datum) -> Option<DistinctKey> {
    Some(match d {
        Datum::Null | Datum::Json(_) => return None,
        Datum::Int(i) => DistinctKey::Number(*i),
        Datum::Float(f) if f.fract() == 0.0 => DistinctKey::Number(*f as i64),
        Datum::Float(f) => DistinctKey::Fraction(f.to_bits()),
        Datum::Str(s) => DistinctKey::Text(s.to_string()),
        Datum::Time(t) => DistinctKey::Time(*t),
        Datum::Bool(b) => DistinctKey::Bool(*b),
    })
}

/// The nearest-rank quantile DDSketch approximates: element `ceil(q * n) - 1` of the sorted values.
fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((q * sorted.len() as f64).ceil() as usize).max(1) - 1]
}

const QUANTILES: [f64; 7] = [0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 1.0];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn counts_merge_exactly(values in prop::collection::vec(datum(), 0..200), parts in 1usize..6, seed: u64) {
        let star = AggregateCall { func: AggFunc::Count, arg: None, percentile: None };
        prop_assert_eq!(split_and_merge(&star, &values, parts, seed).finish(), Datum::Int(values.len() as i64));
        let count = call(AggFunc::Count, None);
        let non_null = values.iter().filter(|v| !v.is_null()).count() as i64;
        prop_assert_eq!(split_and_merge(&count, &values, parts, seed).finish(), Datum::Int(non_null));
        prop_assert_eq!(one_pass(&count, &values).finish(), Datum::Int(non_null));
    }

    #[test]
    fn count_distinct_is_exact_below_the_limit(
        values in prop::collection::vec(few_distinct(), 0..300),
        parts in 1usize..6,
        seed: u64,
    ) {
        let c = call(AggFunc::CountDistinct, None);
        let exact: HashSet<DistinctKey> = values.iter().filter_map(distinct_key).collect();
        prop_assert_eq!(one_pass(&c, &values).finish(), Datum::Int(exact.len() as i64));
        prop_assert_eq!(split_and_merge(&c, &values, parts, seed).finish(), Datum::Int(exact.len() as i64));
    }

    #[test]
    fn count_distinct_merges_exactly_beyond_the_limit(
        distinct in 40usize..3000,
        repeats in 1usize..3,
        parts in 1usize..6,
        seed: u64,
    ) {
        let c = call(AggFunc::CountDistinct, None);
        let values: Vec<Datum> = (0..repeats).flat_map(|_| (0..distinct as i64).map(Datum::Int)).collect();
        let whole = one_pass(&c, &values).finish();
        prop_assert_eq!(split_and_merge(&c, &values, parts, seed).finish(), whole.clone());
        let Datum::Int(estimate) = whole else { return Err(TestCaseError::fail("not an int")) };
        let error = (estimate as f64 - distinct as f64).abs() / distinct as f64;
        prop_assert!(error < 0.08, "estimate {} for {} distinct", estimate, distinct);
    }

    #[test]
    fn sums_and_averages_merge_to_the_one_pass_result(
        values in prop::collection::vec(number(), 0..200),
        parts in 1usize..6,
        seed: u64,
    ) {
        let scale = abs_total(&values);
        for func in [AggFunc::Sum, AggFunc::Avg] {
            let c = call(func, None);
            let whole = one_pass(&c, &values).finish();
            let merged = split_and_merge(&c, &values, parts, seed).finish();
            prop_assert!(close(&merged, &whole, scale), "{:?}: merged {:?} vs one pass {:?}", func, merged, whole);
        }
        // Integers only: exact, and `Int` while the total fits.
        let ints: Vec<Datum> = values.iter().filter(|v| matches!(v, Datum::Int(_))).cloned().collect();
        let total: i128 = ints.iter().map(|v| if let Datum::Int(i) = v { i128::from(*i) } else { 0 }).sum();
        let merged = split_and_merge(&call(AggFunc::Sum, None), &ints, parts, seed).finish();
        let expected = match i64::try_from(total) {
            _ if ints.is_empty() => Datum::Null,
            Ok(t) => Datum::Int(t),
            Err(_) => Datum::Float(total as f64),
        };
        prop_assert_eq!(merged, expected);
    }

    #[test]
    fn min_max_merge_to_the_one_pass_result(
        values in prop::collection::vec(datum(), 0..100),
        parts in 1usize..6,
        seed: u64,
    ) {
        for func in [AggFunc::Min, AggFunc::Max] {
            let c = call(func, None);
            let whole = one_pass(&c, &values).finish();
            let merged = split_and_merge(&c, &values, parts, seed).finish();
            prop_assert!(identical(&merged, &whole), "{:?}: merged {:?} vs one pass {:?}", func, merged, whole);
            // Whatever wins is an input, and no input of its kind beats it.
            if !whole.is_null() {
                prop_assert!(values.iter().any(|v| identical(v, &whole)));
                let want = if func == AggFunc::Min { std::cmp::Ordering::Less } else { std::cmp::Ordering::Greater };
                prop_assert!(!values.iter().any(|v| v.sql_cmp(&whole) == Some(want)
                    && std::mem::discriminant(v) == std::mem::discriminant(&whole)));
            }
        }
    }

    #[test]
    fn percentiles_merge_exactly_and_keep_the_accuracy(
        values in prop::collection::vec(finite_number(), 1..300),
        parts in 1usize..6,
        seed: u64,
    ) {
        let mut sorted: Vec<f64> = values
            .iter()
            .map(|v| match v {
                Datum::Int(i) => *i as f64,
                Datum::Float(f) => *f,
                _ => unreachable!(),
            })
            .collect();
        sorted.sort_by(f64::total_cmp);
        for q in QUANTILES {
            let c = call(AggFunc::ApproxPercentile, Some(q));
            let whole = one_pass(&c, &values).finish();
            let merged = split_and_merge(&c, &values, parts, seed).finish();
            prop_assert!(identical(&merged, &whole), "q {}: merged {:?} vs one pass {:?}", q, merged, whole);
            let Datum::Float(estimate) = merged else { return Err(TestCaseError::fail("not a float")) };
            let exact = exact_quantile(&sorted, q);
            let tolerance = 0.01 * exact.abs() * (1.0 + 1e-9) + 1e-300;
            prop_assert!((estimate - exact).abs() <= tolerance, "q {}: {} vs exact {}", q, estimate, exact);
        }
    }

    #[test]
    fn equal_datums_hash_equally(a in datum(), b in datum()) {
        prop_assert_eq!(&a, &a.clone());
        if a == b {
            prop_assert_eq!(std_hash(&a), std_hash(&b));
            prop_assert_eq!(a.fingerprint(), b.fingerprint());
        }
        // An equal twin: the other zero, another NaN, a JSON object built in another key order.
        let twin = match &a {
            Datum::Float(f) if *f == 0.0 => Datum::Float(-f),
            Datum::Float(f) if f.is_nan() => Datum::Float(-f64::NAN),
            Datum::Json(j) => Datum::Json(Arc::new(serde_json::from_str(&j.to_string()).unwrap())),
            other => other.clone(),
        };
        prop_assert_eq!(&a, &twin);
        prop_assert_eq!(std_hash(&a), std_hash(&twin));
        prop_assert_eq!(a.fingerprint(), twin.fingerprint());
    }

    #[test]
    fn datums_round_trip_through_postcard(d in datum()) {
        let bytes = postcard::to_stdvec(&d).unwrap();
        let back: Datum = postcard::from_bytes(&bytes).unwrap();
        prop_assert!(identical(&back, &d), "{:?} -> {:?}", d, back);
        prop_assert_eq!(back.fingerprint(), d.fingerprint());
    }

    #[test]
    fn garbage_snapshots_are_errors_not_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = postcard::from_bytes::<AggState>(&bytes);
        let _ = postcard::from_bytes::<Datum>(&bytes);
    }
}
