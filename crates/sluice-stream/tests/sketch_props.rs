//! Sketches and exact aggregates: exact merges, accuracy against exact answers, snapshots and garbage.

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sluice_stream::{Count, DDSketch, FloatAvg, FloatSum, HyperLogLog, IntAvg, IntSum, Max, Min, SumValue, hash_u64};

/// Values across many magnitudes and both signs, with zeros: `sign * 10^exp`.
fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        1 => Just(0.0),
        1 => Just(-0.0),
        12 => (any::<bool>(), -6.0f64..9.0).prop_map(|(neg, e)| if neg { -(10f64.powf(e)) } else { 10f64.powf(e) }),
    ]
}

fn sketch_of(values: &[f64], alpha: f64, max_buckets: usize) -> DDSketch {
    let mut s = DDSketch::new(alpha, max_buckets).unwrap();
    for &v in values {
        s.insert(v).unwrap();
    }
    s
}

/// The nearest-rank quantile the sketch promises to approximate.
fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((q * sorted.len() as f64).ceil() as usize).max(1) - 1]
}

fn assert_within(est: f64, exact: f64, alpha: f64) -> Result<(), TestCaseError> {
    let tolerance = alpha * exact.abs() * (1.0 + 1e-9) + 1e-300;
    prop_assert!((est - exact).abs() <= tolerance, "estimate {est} vs exact {exact} (alpha {alpha})");
    Ok(())
}

/// Exact-sum inputs as `(scale, [(n, shift)])`: the values are `n * 2^(scale + shift)` with `|n| < 2^53`, so
/// exact doubles. Scales span subnormals (only 2^-1074, where rounding an i128 then scaling is exact), tiny,
/// ordinary and huge values (up to 2^1022, past the split of [`FloatSum`]'s partial lists, and sums that overflow).
fn fixed_point_inputs() -> impl Strategy<Value = (i32, Vec<(i64, u32)>)> {
    let n = prop_oneof![-1000i64..1000, (1i64 << 53) - 8..1i64 << 53, -(1i64 << 53) + 1..1i64 << 53];
    let scale = prop_oneof![Just(-1074), -1000i32..-900, -80i32..80, 840i32..=910];
    let terms = prop_oneof![
        3 => prop::collection::vec((n, prop_oneof![Just(0u32), 0u32..60]), 1..80),
        // Exact ties and near-ties: a 53-bit mantissa at 2^shift, half its ulp, maybe a sticky bit or two below.
        1 => ((1i64 << 52)..(1i64 << 53), 1u32..60, any::<bool>(), prop::collection::vec((-1i64..=1, 0u32..59), 0..3))
            .prop_map(|(m, shift, negative, sticky)| {
                let sign = if negative { -1 } else { 1 };
                let mut terms = vec![(sign * m, shift), (sign, shift - 1)];
                terms.extend(sticky.into_iter().map(|(n, s)| (n, s.min(shift - 1))));
                terms
            }),
    ];
    (scale, terms)
}

/// Any double, weighted toward the cases that matter to sums: cancellation, huge, tiny and special values.
fn any_double() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => value(),
        4 => any::<f64>().prop_filter("finite", |v| v.is_finite()),
        2 => prop_oneof![Just(f64::MAX), Just(-f64::MAX), Just(f64::MIN_POSITIVE), Just(5e-324), Just(-5e-324)],
        2 => (1u32..1023).prop_map(|e| pow2(e as i32)),
        1 => prop_oneof![Just(f64::INFINITY), Just(f64::NEG_INFINITY), Just(f64::NAN), Just(-f64::NAN)],
    ]
}

/// `2^e` exactly, subnormals included.
fn pow2(e: i32) -> f64 {
    if e >= -1022 { f64::from_bits(((e + 1023) as u64) << 52) } else { f64::from_bits(1 << (e + 1074)) }
}

fn float_sum(values: &[f64]) -> FloatSum {
    let mut s = FloatSum::default();
    values.iter().for_each(|&v| s.insert(v));
    s
}

/// Sums `values` shuffled, cut into random chunks, merged pairwise in a random order and tree shape: what
/// tasks, checkpoints and panes do to a window's inputs.
fn split_float_sum(values: &[f64], seed: u64) -> FloatSum {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut values = values.to_vec();
    values.shuffle(&mut rng);
    let mut parts = Vec::new();
    let mut rest = &values[..];
    while !rest.is_empty() {
        let n = rng.random_range(1..=rest.len());
        parts.push(float_sum(&rest[..n]));
        rest = &rest[n..];
    }
    while parts.len() > 1 {
        let a = parts.swap_remove(rng.random_range(0..parts.len()));
        let j = rng.random_range(0..parts.len());
        parts[j].merge(&a);
    }
    parts.pop().unwrap_or_default()
}

const QUANTILES: [f64; 9] = [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0];

proptest! {
    #[test]
    fn ddsketch_merge_equals_sketch_of_concatenation(
        a in prop::collection::vec(value(), 0..300),
        b in prop::collection::vec(value(), 0..300),
        small in any::<bool>(),
    ) {
        // 16 buckets collapses constantly: merges must stay exact then too.
        let max_buckets = if small { 16 } else { 2048 };
        let whole: Vec<f64> = a.iter().chain(&b).copied().collect();
        let expected = sketch_of(&whole, 0.01, max_buckets);
        let mut ab = sketch_of(&a, 0.01, max_buckets);
        ab.merge(&sketch_of(&b, 0.01, max_buckets)).unwrap();
        prop_assert_eq!(&ab, &expected);
        let mut ba = sketch_of(&b, 0.01, max_buckets);
        ba.merge(&sketch_of(&a, 0.01, max_buckets)).unwrap();
        prop_assert_eq!(&ba, &expected);
        prop_assert!(expected.bucket_count() <= 2 * max_buckets);
        prop_assert_eq!(expected.count(), whole.len() as u64);
    }

    #[test]
    fn ddsketch_quantiles_within_relative_error(
        values in prop::collection::vec(value(), 1..400),
        alpha in prop::sample::select(vec![0.001, 0.01, 0.05]),
    ) {
        // 15 decades both sides stays below the bucket limit: no collapse, so the guarantee applies.
        let sketch = sketch_of(&values, alpha, 1 << 16);
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        for q in QUANTILES {
            let est = sketch.quantile(q).unwrap().unwrap();
            assert_within(est, exact_quantile(&sorted, q), alpha)?;
        }
    }

    #[test]
    fn ddsketch_round_trips(values in prop::collection::vec(value(), 0..200), small in any::<bool>()) {
        let sketch = sketch_of(&values, 0.02, if small { 16 } else { 512 });
        let bytes = sketch.to_bytes();
        prop_assert_eq!(DDSketch::from_bytes(&bytes).unwrap(), sketch);
        // Every short prefix, then a sample of longer ones (all of them is quadratic).
        let step = bytes.len() / 64 + 1;
        for cut in (0..bytes.len()).filter(|c| *c < 64 || c % step == 0).chain([bytes.len() - 1]) {
            prop_assert!(DDSketch::from_bytes(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn ddsketch_damaged_bytes_never_panic(
        values in prop::collection::vec(value(), 0..100),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = sketch_of(&values, 0.01, 64).to_bytes();
        for (index, byte) in flips {
            let i = index.index(bytes.len());
            bytes[i] ^= byte;
        }
        if let Ok(sketch) = DDSketch::from_bytes(&bytes) {
            // Whatever decodes is usable.
            for q in QUANTILES {
                sketch.quantile(q).unwrap();
            }
            let mut merged = sketch.clone();
            let _ = merged.merge(&sketch);
            let _ = merged.insert(1.0);
        }
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300), magic in 0usize..3) {
        let mut bytes = bytes;
        // Give some inputs a valid prefix so decoding gets past the magic.
        let prefix: &[u8] = [&b""[..], b"SDDS\x01", b"SHLL\x01\x04"][magic];
        bytes.splice(0..0, prefix.iter().copied());
        let _ = DDSketch::from_bytes(&bytes);
        let _ = HyperLogLog::from_bytes(&bytes);
    }

    #[test]
    fn hll_merge_equals_sketch_of_concatenation(
        a in prop::collection::vec(any::<u64>(), 0..500),
        b in prop::collection::vec(any::<u64>(), 0..500),
        p in 4u8..=14,
    ) {
        let of = |values: &[u64]| {
            let mut h = HyperLogLog::new(p).unwrap();
            values.iter().for_each(|&v| h.insert_u64(v));
            h
        };
        let whole: Vec<u64> = a.iter().chain(&b).copied().collect();
        let mut merged = of(&a);
        merged.merge(&of(&b)).unwrap();
        let expected = of(&whole);
        prop_assert_eq!(merged.registers(), expected.registers());
        let bytes = merged.to_bytes();
        prop_assert_eq!(HyperLogLog::from_bytes(&bytes).unwrap(), merged.clone());
        prop_assert!(HyperLogLog::from_bytes(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn exact_aggregates_merge(
        ints in prop::collection::vec(any::<i64>(), 0..50),
        split in any::<prop::sample::Index>(),
    ) {
        let k = if ints.is_empty() { 0 } else { split.index(ints.len() + 1) };
        let (a, b) = ints.split_at(k);
        let sum = |xs: &[i64]| { let mut s = IntSum::default(); xs.iter().for_each(|&x| s.insert(x)); s };
        let mut merged = sum(a);
        merged.merge(&sum(b));
        prop_assert_eq!(merged, sum(&ints));
        let exact: i128 = ints.iter().map(|&x| i128::from(x)).sum();
        let expected = if ints.is_empty() {
            None
        } else {
            Some(i64::try_from(exact).map_or(SumValue::Float(exact as f64), SumValue::Int))
        };
        prop_assert_eq!(merged.value(), expected);

        let (mut min, mut max, mut count) = (Min::default(), Max::default(), Count::default());
        let (mut min_b, mut max_b, mut count_b) = (Min::default(), Max::default(), Count::default());
        for &x in a { min.insert(x); max.insert(x); count.insert(); }
        for &x in b { min_b.insert(x); max_b.insert(x); count_b.insert(); }
        min.merge(&min_b);
        max.merge(&max_b);
        count.merge(&count_b);
        prop_assert_eq!(min.value(), ints.iter().min());
        prop_assert_eq!(max.value(), ints.iter().max());
        prop_assert_eq!(count, Count(ints.len() as u64));

        let mut avg = IntAvg::default();
        let mut avg_b = IntAvg::default();
        a.iter().for_each(|&x| avg.insert(x));
        b.iter().for_each(|&x| avg_b.insert(x));
        avg.merge(&avg_b);
        prop_assert_eq!(avg.value(), (!ints.is_empty()).then(|| exact as f64 / ints.len() as f64));
    }

    #[test]
    fn float_sum_is_exactly_rounded_in_any_split_and_merge_order(
        (scale, terms) in fixed_point_inputs(),
        seeds in prop::collection::vec(any::<u64>(), 3),
    ) {
        // Every input is `n * 2^(scale + shift)`, so the exact sum is an i128 times 2^scale; `as f64` rounds
        // that to nearest even, and scaling by a power of two is exact (the scales avoid double rounding in
        // the subnormal range) or overflows exactly when the correctly rounded sum does.
        let values: Vec<f64> = terms.iter().map(|&(n, shift)| n as f64 * pow2(scale + shift as i32)).collect();
        let exact: i128 = terms.iter().map(|&(n, shift)| i128::from(n) << shift).sum();
        let expected = exact as f64 * pow2(scale);
        let whole = float_sum(&values);
        let got = whole.value().unwrap();
        prop_assert_eq!(got.to_bits(), expected.to_bits(), "{} vs {}", got, expected);
        prop_assert_eq!(whole.count(), values.len() as u64);
        for seed in seeds {
            let split = split_float_sum(&values, seed);
            prop_assert_eq!(split.value().map(f64::to_bits), Some(expected.to_bits()));
            prop_assert_eq!(&split, &whole);
        }
        // Through a `Value`, which keeps doubles exact (parsing JSON text is not correctly rounded).
        let state = serde_json::to_value(&whole).unwrap();
        prop_assert_eq!(serde_json::from_value::<FloatSum>(state).unwrap(), whole);

        let k = values.len() / 2;
        let mut avg = FloatAvg::default();
        let mut avg_b = FloatAvg::default();
        values[..k].iter().for_each(|&v| avg.insert(v));
        values[k..].iter().rev().for_each(|&v| avg_b.insert(v));
        avg.merge(&avg_b);
        prop_assert_eq!(avg.value().map(f64::to_bits), Some((expected / values.len() as f64).to_bits()));
        prop_assert_eq!(avg.count(), values.len() as u64);
    }

    #[test]
    fn float_sum_of_any_doubles_is_order_independent(
        values in prop::collection::vec(any_double(), 0..60),
        seeds in prop::collection::vec(any::<u64>(), 3),
    ) {
        let whole = float_sum(&values);
        let expected = whole.value().map(f64::to_bits);
        for seed in seeds {
            prop_assert_eq!(split_float_sum(&values, seed).value().map(f64::to_bits), expected);
        }
        let nan = values.iter().any(|v| v.is_nan())
            || (values.contains(&f64::INFINITY) && values.contains(&f64::NEG_INFINITY));
        match whole.value() {
            None => prop_assert!(values.is_empty()),
            Some(v) if nan => prop_assert_eq!(v.to_bits(), f64::NAN.to_bits()),
            Some(v) if values.contains(&f64::INFINITY) => prop_assert_eq!(v, f64::INFINITY),
            Some(v) if values.contains(&f64::NEG_INFINITY) => prop_assert_eq!(v, f64::NEG_INFINITY),
            Some(v) if v.is_finite() => {
                // Consistency (the fixed-point test above is the independent one): the exact residual
                // sum - v is at most half an ulp of v, and at an exact tie v is even.
                let mut residual = whole.clone();
                residual.insert(-v);
                let r = residual.value().unwrap();
                let half_ulp = (f64::from_bits(v.abs().to_bits() + 1) - v.abs()) / 2.0;
                prop_assert!(r.abs() <= half_ulp, "residual {r} above half an ulp {half_ulp} of {v}");
                if r != 0.0 && r.abs() == half_ulp {
                    // Rounded to half an ulp: exactly a tie, or just inside it.
                    residual.insert(-r);
                    let rest = residual.value().unwrap();
                    prop_assert!(rest == 0.0 || rest.signum() != r.signum(), "residual beyond half an ulp of {v}");
                    if rest == 0.0 {
                        prop_assert_eq!(v.to_bits() & 1, 0, "a tie rounds to even");
                    }
                }
            }
            Some(v) => {
                // Beyond MAX: the exact sum is at least MAX plus half an ulp.
                let mut beyond = whole.clone();
                beyond.insert(-v.signum() * f64::MAX);
                let excess = beyond.value().unwrap() * v.signum();
                prop_assert!(excess >= 2f64.powi(970), "excess {excess}");
            }
        }
    }

}

#[test]
fn ddsketch_accuracy_on_a_large_skewed_stream() {
    let mut rng = StdRng::seed_from_u64(7);
    for alpha in [0.01, 0.001] {
        // Log-normal-ish latencies (0.1 ms .. minutes) plus a few negatives and zeros.
        let values: Vec<f64> = (0..100_000)
            .map(|i| match i % 100 {
                0 => 0.0,
                1 => -rng.random_range(1.0..1000.0),
                _ => (rng.random_range(-2.0f64..2.0) + rng.random_range(-2.0f64..2.0)).exp() * 20.0,
            })
            .collect();
        let sketch = sketch_of(&values, alpha, 4096);
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        for q in [0.0, 0.001, 0.005, 0.01, 0.015, 0.05, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let est = sketch.quantile(q).unwrap().unwrap();
            assert_within(est, exact_quantile(&sorted, q), alpha).unwrap();
        }
    }
}

#[test]
fn ddsketch_edges() {
    let mut s = DDSketch::default();
    assert_eq!(s.quantile(0.5).unwrap(), None);
    assert!(s.insert(f64::NAN).is_err());
    assert!(s.insert(f64::INFINITY).is_err());
    assert!(s.is_empty());
    assert!(s.quantile(1.5).is_err());
    assert!(s.quantile(f64::NAN).is_err());
    s.insert(f64::MAX).unwrap();
    s.insert(-f64::MAX).unwrap();
    s.insert(f64::MIN_POSITIVE).unwrap();
    s.insert(5e-324).unwrap();
    assert_eq!(s.quantile(1.0).unwrap(), Some(f64::MAX));
    assert_eq!(s.quantile(0.0).unwrap(), Some(-f64::MAX));
    assert_eq!(s.quantile(0.4).unwrap(), Some(0.0));
    assert_eq!(DDSketch::from_bytes(&s.to_bytes()).unwrap(), s);
    assert!(DDSketch::new(0.0, 100).is_err());
    assert!(DDSketch::new(f64::NAN, 100).is_err());
    assert!(DDSketch::new(0.01, 1).is_err());
    let mut other = DDSketch::new(0.02, 2048).unwrap();
    assert!(other.merge(&s).is_err());
}

#[test]
fn ddsketch_collapse_keeps_memory_bounded_and_the_tail_accurate() {
    let mut s = DDSketch::new(0.01, 100).unwrap();
    // 1e-6 .. 1e6 needs ~1400 buckets at 1%; only the top 100 (a ratio of ~7.4) are kept.
    let values: Vec<f64> = (0..12_000).map(|i| 10f64.powf(-6.0 + i as f64 / 1000.0)).collect();
    for &v in &values {
        s.insert(v).unwrap();
    }
    assert!(s.bucket_count() <= 100);
    assert_eq!(s.count(), values.len() as u64);
    for q in [0.95, 0.99, 0.999] {
        let exact = exact_quantile(&values, q);
        assert_within(s.quantile(q).unwrap().unwrap(), exact, 0.01).unwrap();
    }
}

#[test]
fn hll_estimates_within_three_standard_errors() {
    for p in [12u8, 14] {
        for (seed, n) in
            [1u64, 10, 100, 1_000, 10_000, 30_000, 50_000, 70_000, 200_000, 1_000_000].into_iter().enumerate()
        {
            let mut h = HyperLogLog::new(p).unwrap();
            let base = (seed as u64 + 1) << 40;
            for i in 0..n {
                // Through hash64 of bytes, so the test also covers the byte hash.
                h.insert_bytes(&(base + i).to_le_bytes());
            }
            let estimate = h.estimate();
            let error = (estimate - n as f64).abs() / n as f64;
            assert!(error <= 3.0 * h.standard_error(), "p {p} n {n}: estimate {estimate} error {error:.4}");
        }
    }
    let empty = HyperLogLog::new(14).unwrap();
    assert_eq!(empty.count(), 0);
    assert!(empty.is_empty());
}

#[test]
fn hll_duplicates_do_not_count() {
    let mut h = HyperLogLog::new(12).unwrap();
    for i in 0..100_000u64 {
        h.insert_hash(hash_u64(i % 1000));
    }
    assert!((h.estimate() - 1000.0).abs() <= 3.0 * h.standard_error() * 1000.0);
}

#[test]
fn hll_validation() {
    assert!(HyperLogLog::new(3).is_err());
    assert_eq!(HyperLogLog::new(19).unwrap_err().to_string(), "hyperloglog precision must be in [4, 18], got 19");
    let mut a = HyperLogLog::new(12).unwrap();
    assert!(a.merge(&HyperLogLog::new(13).unwrap()).is_err());
    let mut bytes = a.to_bytes();
    bytes[10] = 64 - 12 + 2;
    assert!(HyperLogLog::from_bytes(&bytes).is_err());
    bytes[10] = 64 - 12 + 1;
    assert!(HyperLogLog::from_bytes(&bytes).is_ok());
    bytes.push(0);
    assert!(HyperLogLog::from_bytes(&bytes).is_err());
}

#[test]
fn int_sum_overflow_falls_back_to_float() {
    let mut s = IntSum::default();
    assert_eq!(s.value(), None);
    s.insert(i64::MAX);
    s.insert(1);
    assert_eq!(s.value(), Some(SumValue::Float(i64::MAX as f64 + 1.0)));
    s.insert(-1);
    assert_eq!(s.value(), Some(SumValue::Int(i64::MAX)));
    let mut m = Min::default();
    m.insert(f64::NAN);
    assert_eq!(m.value(), None);
    m.insert(2.0);
    m.insert(f64::NAN);
    m.insert(1.0);
    assert_eq!(m.value(), Some(&1.0));
    let mut x = Max::default();
    x.insert("b".to_string());
    x.insert("a".to_string());
    assert_eq!(x.value().map(String::as_str), Some("b"));
}
