//! The exact SQL aggregates, as mergeable partial states (serde, for checkpoints).

use serde::{Deserialize, Serialize};

/// `count(*)` / `count(x)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count(pub u64);

impl Count {
    pub fn insert(&mut self) {
        self.0 = self.0.saturating_add(1);
    }

    pub fn merge(&mut self, other: &Count) {
        self.0 = self.0.saturating_add(other.0);
    }
}

/// The result of an integer sum: `Int` when it fits in `i64`, else the nearest `f64` (Postgres returns
/// `numeric` there; we have no decimal type, and an error would fail the whole window).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum SumValue {
    Int(i64),
    Float(f64),
}

/// `sum(bigint)`: accumulated in `i128`, so intermediate overflow never matters (`MAX + 1 - 1` is exact)
/// and the result is independent of order and merging. `i128` cannot overflow before 2^64 inputs; it
/// saturates beyond. `None` when nothing was summed (SQL `NULL`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntSum {
    sum: i128,
    count: u64,
}

impl IntSum {
    pub fn insert(&mut self, v: i64) {
        self.sum = self.sum.saturating_add(i128::from(v));
        self.count = self.count.saturating_add(1);
    }

    pub fn merge(&mut self, other: &IntSum) {
        self.sum = self.sum.saturating_add(other.sum);
        self.count = self.count.saturating_add(other.count);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn value(&self) -> Option<SumValue> {
        if self.count == 0 {
            return None;
        }
        Some(match i64::try_from(self.sum) {
            Ok(v) => SumValue::Int(v),
            Err(_) => SumValue::Float(self.sum as f64),
        })
    }
}

/// `sum(double)`, exact: the state is the exact sum of the inputs, kept as Shewchuk's nonoverlapping partials
/// (the algorithm behind Python's `math.fsum`), and [`value`](Self::value) is that sum rounded once, to the
/// nearest double (ties to even). So any split, merge order or input order of the same values gives a
/// bit-identical result, and checkpoints or rescaling never change it.
///
/// Partials could overflow where the exact sum would not (`MAX + MAX - MAX`), so inputs of magnitude
/// `>= 2^900` are kept apart, scaled by `2^-128` (exact there): neither list can then overflow within 2^64
/// inputs. NaN and infinities go to a separate IEEE accumulator (`inf + -inf` is NaN) whose result wins over
/// any finite sum; a finite sum whose exact value rounds beyond `f64::MAX` is `±inf`; an exact zero is `+0.0`
/// (as `0.0 + -0.0`). The state stays small for checkpoints: the partials are nonoverlapping, typically 1 to 3
/// doubles.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FloatSum {
    /// Partials of the inputs below [`SPLIT`], increasing in magnitude, nonoverlapping, no zeros.
    low: Vec<f64>,
    /// Partials of the inputs at or above [`SPLIT`], each scaled by `2^-SCALE`.
    high: Vec<f64>,
    /// The IEEE sum of the NaN and infinite inputs (NaN canonical), `None` while there was none.
    special: Option<f64>,
    count: u64,
}

/// Inputs at least this large go to [`FloatSum::high`]: 2^64 inputs below it sum to less than 2^964.
const SPLIT: f64 = f64::from_bits((1023 + 900) << 52);
/// `high` holds `x * 2^-SCALE`: exact (inputs there are multiples of 2^848) and below 2^896.
const SCALE: u32 = 128;
const UNSCALE: f64 = f64::from_bits((1023 - SCALE as u64) << 52);

impl FloatSum {
    pub fn insert(&mut self, v: f64) {
        self.count = self.count.saturating_add(1);
        if !v.is_finite() {
            self.add_special(v);
        } else if v.abs() >= SPLIT {
            self.grow_high(v * UNSCALE);
        } else if v != 0.0 {
            self.grow_low(v);
        }
    }

    /// Adds the other's partials: the exact sums add, so the result is as if every input had been inserted here.
    pub fn merge(&mut self, other: &FloatSum) {
        for &p in &other.low {
            self.grow_low(p);
        }
        for &p in &other.high {
            self.grow_high(p);
        }
        if let Some(s) = other.special {
            self.add_special(s);
        }
        self.count = self.count.saturating_add(other.count);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The exact sum rounded to the nearest double; `None` when nothing was summed (SQL `NULL`).
    pub fn value(&self) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        // `inf + x = inf` for every real `x`, however large: the finite inputs' sum is real even when it
        // rounds beyond MAX, so it cannot cancel an infinity (sequential IEEE addition could, order-dependently).
        Some(self.special.unwrap_or_else(|| Fixed::of(self).round()))
    }

    fn add_special(&mut self, v: f64) {
        self.special = Some(canonical(self.special.map_or(v, |s| s + v)));
    }

    fn grow_low(&mut self, x: f64) {
        if let Err(overflow) = grow(&mut self.low, x) {
            self.add_special(overflow);
        }
    }

    fn grow_high(&mut self, x: f64) {
        if let Err(overflow) = grow(&mut self.high, x) {
            self.add_special(overflow);
        }
    }
}

/// Equal when the counts, the special values and the exact sums are equal, whatever the partials look like.
impl PartialEq for FloatSum {
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count
            && self.special.map(f64::to_bits) == other.special.map(f64::to_bits)
            && Fixed::of(self) == Fixed::of(other)
    }
}

/// One NaN bit pattern, so NaN payloads (which depend on operand order) never make results differ.
fn canonical(v: f64) -> f64 {
    if v.is_nan() { f64::NAN } else { v }
}

/// Knuth's branch-free two-sum: `hi = fl(a + b)` and `lo` with `hi + lo == a + b` exactly (absent overflow).
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let hi = a + b;
    let b_virtual = hi - a;
    let a_virtual = hi - b_virtual;
    (hi, (a - a_virtual) + (b - b_virtual))
}

/// Shewchuk's grow-expansion: adds `x` to the partials, keeping them exact, nonoverlapping, increasing in
/// magnitude and free of zeros. Overflow cannot happen within [`FloatSum`]'s bounds; should a damaged state
/// (non-finite or huge partials from a bad checkpoint) cause it, the non-finite sum is returned for the caller
/// to keep as a special value, which decides the result from then on.
fn grow(partials: &mut Vec<f64>, mut x: f64) -> Result<(), f64> {
    let mut kept = 0;
    for i in 0..partials.len() {
        let (hi, lo) = two_sum(x, partials[i]);
        if !hi.is_finite() {
            partials.truncate(kept);
            return Err(hi);
        }
        if lo != 0.0 {
            partials[kept] = lo;
            kept += 1;
        }
        x = hi;
    }
    partials.truncate(kept);
    if x != 0.0 {
        partials.push(x);
    }
    Ok(())
}

/// Limbs of [`Fixed`]: bit 0 weighs 2^-1074 (the smallest subnormal); 2304 bits hold every finite double
/// scaled by up to 2^128 (below 2^2227) plus the carries of the partials, and a sign bit.
const LIMBS: usize = 36;

/// The exact sum of a [`FloatSum`]'s partials as a two's complement fixed-point integer, used once per
/// `value()` to round correctly (and to compare states) without the overflow or double rounding that summing
/// the partials in floating point would risk.
#[derive(PartialEq, Eq)]
struct Fixed([u64; LIMBS]);

impl Fixed {
    fn of(sum: &FloatSum) -> Self {
        let mut fixed = Fixed([0; LIMBS]);
        for &p in &sum.low {
            fixed.add(p, 0);
        }
        for &p in &sum.high {
            fixed.add(p, SCALE);
        }
        fixed
    }

    /// Adds `x * 2^scale`. Any bit pattern is accepted (a NaN reads as some large number), so a damaged state
    /// gives a wrong sum, never a panic.
    fn add(&mut self, x: f64, scale: u32) {
        let bits = x.to_bits();
        let exponent = ((bits >> 52) & 0x7ff) as u32;
        let fraction = bits & ((1 << 52) - 1);
        // x = mantissa * 2^(shift - 1074), subnormals included.
        let (mantissa, shift) =
            if exponent == 0 { (fraction, scale) } else { (fraction | 1 << 52, exponent - 1 + scale) };
        let wide = u128::from(mantissa) << (shift % 64);
        let parts = [wide as u64, (wide >> 64) as u64];
        let start = (shift / 64) as usize;
        let negative = bits >> 63 == 1;
        let mut carry = false;
        for (i, limb) in self.0.iter_mut().enumerate().skip(start) {
            let part = parts.get(i - start).copied().unwrap_or(0);
            let (r, c1) = if negative { limb.overflowing_sub(part) } else { limb.overflowing_add(part) };
            let (r, c2) =
                if negative { r.overflowing_sub(u64::from(carry)) } else { r.overflowing_add(u64::from(carry)) };
            *limb = r;
            carry = c1 || c2;
            if !carry && i > start {
                break;
            }
        }
    }

    /// Rounds to the nearest double, ties to even; beyond `f64::MAX` (by half an ulp or more) is `±inf`.
    fn round(mut self) -> f64 {
        let negative = self.0[LIMBS - 1] >> 63 == 1;
        if negative {
            self.negate();
        }
        let Some(top) = self.0.iter().rposition(|&l| l != 0).map(|i| i * 64 + 63 - self.0[i].leading_zeros() as usize)
        else {
            return 0.0;
        };
        let magnitude = if top <= 52 {
            // Below 2^-1021 every bit is representable: the bits are the double's (subnormal or smallest normal).
            f64::from_bits(self.0[0])
        } else {
            // Keep bits [lsb, top]; with lsb >= 1 the double is normal: exponent lsb + 1 (biased), implicit bit
            // in the mantissa, so its bits are (lsb << 52) + mantissa, a round-up carry included.
            let lsb = top - 52;
            let mut mantissa = self.bits(lsb);
            if self.bit(lsb - 1) && (mantissa & 1 == 1 || self.any_below(lsb - 1)) {
                mantissa += 1;
            }
            if lsb > 2046 {
                f64::INFINITY
            } else {
                let bits = ((lsb as u64) << 52) + mantissa;
                if bits >= f64::INFINITY.to_bits() { f64::INFINITY } else { f64::from_bits(bits) }
            }
        };
        if negative { -magnitude } else { magnitude }
    }

    fn negate(&mut self) {
        let mut carry = true;
        for limb in &mut self.0 {
            let (r, c) = (!*limb).overflowing_add(u64::from(carry));
            *limb = r;
            carry = c;
        }
    }

    fn bit(&self, i: usize) -> bool {
        self.0[i / 64] >> (i % 64) & 1 == 1
    }

    /// The 53 bits from `lsb` up (the caller knows bit `lsb + 52` is the top one, so `lsb + 52` is in range).
    fn bits(&self, lsb: usize) -> u64 {
        let (i, offset) = (lsb / 64, lsb % 64);
        let low = u128::from(self.0[i]);
        let high = self.0.get(i + 1).map_or(0, |&l| u128::from(l));
        (((high << 64) | low) >> offset) as u64 & ((1 << 53) - 1)
    }

    fn any_below(&self, i: usize) -> bool {
        let (limb, offset) = (i / 64, i % 64);
        self.0[..limb].iter().any(|&l| l != 0) || self.0[limb] & ((1u64 << offset) - 1) != 0
    }
}

/// `min(x)` for any ordered type; values not comparable with themselves (NaN) are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Min<T>(pub Option<T>);

impl<T> Default for Min<T> {
    fn default() -> Self {
        Min(None)
    }
}

impl<T: PartialOrd + Clone> Min<T> {
    pub fn insert(&mut self, v: T) {
        if v.partial_cmp(&v).is_none() {
            return;
        }
        if self.0.as_ref().is_none_or(|m| v < *m) {
            self.0 = Some(v);
        }
    }

    pub fn merge(&mut self, other: &Min<T>) {
        if let Some(v) = &other.0 {
            self.insert(v.clone());
        }
    }

    pub fn value(&self) -> Option<&T> {
        self.0.as_ref()
    }
}

/// `max(x)` for any ordered type; values not comparable with themselves (NaN) are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Max<T>(pub Option<T>);

impl<T> Default for Max<T> {
    fn default() -> Self {
        Max(None)
    }
}

impl<T: PartialOrd + Clone> Max<T> {
    pub fn insert(&mut self, v: T) {
        if v.partial_cmp(&v).is_none() {
            return;
        }
        if self.0.as_ref().is_none_or(|m| v > *m) {
            self.0 = Some(v);
        }
    }

    pub fn merge(&mut self, other: &Max<T>) {
        if let Some(v) = &other.0 {
            self.insert(v.clone());
        }
    }

    pub fn value(&self) -> Option<&T> {
        self.0.as_ref()
    }
}

/// `avg(bigint)` as (exact `i128` sum, count); merges exactly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntAvg(IntSum);

impl IntAvg {
    pub fn insert(&mut self, v: i64) {
        self.0.insert(v);
    }

    pub fn merge(&mut self, other: &IntAvg) {
        self.0.merge(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.count
    }

    pub fn value(&self) -> Option<f64> {
        (self.0.count > 0).then(|| self.0.sum as f64 / self.0.count as f64)
    }
}

/// `avg(double)` as (exact sum, count): the sum rounded once, then divided, so the average is as
/// order-independent as [`FloatSum`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FloatAvg(FloatSum);

impl FloatAvg {
    pub fn insert(&mut self, v: f64) {
        self.0.insert(v);
    }

    pub fn merge(&mut self, other: &FloatAvg) {
        self.0.merge(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.count
    }

    pub fn value(&self) -> Option<f64> {
        self.0.value().map(|s| s / self.0.count as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(values: &[f64]) -> Option<f64> {
        let mut s = FloatSum::default();
        values.iter().for_each(|&v| s.insert(v));
        s.value()
    }

    /// `2^e` exactly, subnormals included (`powi` underflows through `1 / 2^-e`).
    fn pow2(e: i32) -> f64 {
        if e >= -1022 { f64::from_bits(((e + 1023) as u64) << 52) } else { f64::from_bits(1 << (e + 1074)) }
    }

    #[test]
    fn float_sum_is_exact() {
        assert_eq!(sum(&[]), None);
        assert_eq!(sum(&[0.1; 10]), Some(1.0));
        assert_eq!(sum(&[1e100, 1.0, -1e100]), Some(1.0));
        assert_eq!(sum(&[1e16, 1.0, 1.0, -1e16]), Some(2.0));
        assert_eq!(sum(&[0.1, 0.2, -0.3]), Some(2.7755575615628914e-17));
        // The exact sum, not the sequential one: 1 + 2^-53 + 2^-53 is 1 + 2^-52.
        assert_eq!(sum(&[1.0, pow2(-53), pow2(-53)]), Some(1.0 + pow2(-52)));
    }

    #[test]
    fn float_sum_rounds_to_nearest_even() {
        // Ties go to the even mantissa; anything beyond the tie rounds away.
        assert_eq!(sum(&[1.0, pow2(-53)]), Some(1.0));
        assert_eq!(sum(&[1.0 + pow2(-52), pow2(-53)]), Some(1.0 + pow2(-51)));
        assert_eq!(sum(&[1.0, pow2(-53), pow2(-200)]), Some(1.0 + pow2(-52)));
        assert_eq!(sum(&[1.0, pow2(-53), -pow2(-200)]), Some(1.0));
        assert_eq!(sum(&[-1.0, -pow2(-53), -pow2(-1074)]), Some(-1.0 - pow2(-52)));
    }

    #[test]
    fn float_sum_survives_intermediate_overflow() {
        let max = f64::MAX;
        assert_eq!(sum(&[max, max, -max]), Some(max));
        assert_eq!(sum(&[-max, -max, max, max, max, -max, -max]), Some(-max));
        assert_eq!(sum(&[max, max]), Some(f64::INFINITY));
        assert_eq!(sum(&[-max, -max]), Some(f64::NEG_INFINITY));
        // MAX plus half an ulp is a tie, and MAX's mantissa is odd: it rounds up, to infinity.
        assert_eq!(sum(&[max, pow2(970)]), Some(f64::INFINITY));
        assert_eq!(sum(&[max, pow2(970), -pow2(-1074)]), Some(max));
        // Huge and small inputs cancel exactly across the two partial lists.
        assert_eq!(sum(&[pow2(950), -pow2(949), -pow2(949), pow2(-1074)]), Some(pow2(-1074)));
        assert_eq!(sum(&[pow2(900), 1.0, -pow2(899), -pow2(899)]), Some(1.0));
        assert_eq!(sum(&[pow2(1023), pow2(1023), -pow2(1023), -pow2(899), pow2(899)]), Some(pow2(1023)));
    }

    #[test]
    fn float_sum_of_subnormals_is_exact() {
        let tiny = pow2(-1074);
        assert_eq!(sum(&[tiny, tiny, tiny]), Some(3.0 * tiny));
        assert_eq!(sum(&[f64::MIN_POSITIVE, -tiny]), Some(f64::from_bits(f64::MIN_POSITIVE.to_bits() - 1)));
        assert_eq!(sum(&[tiny, -tiny]).map(f64::to_bits), Some(0));
    }

    #[test]
    fn float_sum_specials_follow_ieee() {
        assert_eq!(sum(&[f64::INFINITY, 1.0, -f64::MAX]), Some(f64::INFINITY));
        assert_eq!(sum(&[f64::NEG_INFINITY, f64::MAX, f64::MAX]), Some(f64::NEG_INFINITY));
        assert_eq!(sum(&[f64::INFINITY, f64::INFINITY]), Some(f64::INFINITY));
        // A finite sum beyond MAX is real, so it cannot cancel an infinity, in any order.
        assert_eq!(sum(&[f64::MAX, f64::MAX, f64::NEG_INFINITY]), Some(f64::NEG_INFINITY));
        for values in [&[f64::INFINITY, f64::NEG_INFINITY][..], &[1.0, -f64::NAN], &[f64::NAN, f64::INFINITY]] {
            // Always the one canonical NaN, whatever the payloads and order.
            assert_eq!(sum(values).map(f64::to_bits), Some(f64::NAN.to_bits()));
            let reversed: Vec<f64> = values.iter().rev().copied().collect();
            assert_eq!(sum(&reversed).map(f64::to_bits), Some(f64::NAN.to_bits()));
        }
    }

    #[test]
    fn float_sum_zero_is_positive() {
        assert_eq!(sum(&[-0.0]).map(f64::to_bits), Some(0));
        assert_eq!(sum(&[-0.0, -0.0, 0.0]).map(f64::to_bits), Some(0));
        assert_eq!(sum(&[-1.5, 1.5]).map(f64::to_bits), Some(0));
    }

    #[test]
    fn float_sum_merges_exactly_in_any_order() {
        let values = [1e300, 3.5, -1e-300, f64::MAX, 0.1, -1e300, -f64::MAX, 7e-320, 1e20, -0.3];
        let mut whole = FloatSum::default();
        values.iter().for_each(|&v| whole.insert(v));
        for split in 0..=values.len() {
            let (mut a, mut b) = (FloatSum::default(), FloatSum::default());
            values[..split].iter().for_each(|&v| a.insert(v));
            values[split..].iter().rev().for_each(|&v| b.insert(v));
            let mut ba = b.clone();
            ba.merge(&a);
            a.merge(&b);
            assert_eq!(a.value().map(f64::to_bits), whole.value().map(f64::to_bits));
            assert_eq!(ba.value().map(f64::to_bits), whole.value().map(f64::to_bits));
            // States compare by exact sum, whatever their partials.
            assert_eq!(a, whole);
            assert_eq!(ba, whole);
        }
        let mut other = whole.clone();
        other.insert(pow2(-1074));
        other.insert(-pow2(-1074));
        assert_ne!(other, whole);
        // Through a `Value`, which keeps doubles exact (parsing JSON text is not correctly rounded).
        let state = serde_json::to_value(&whole).unwrap();
        assert_eq!(serde_json::from_value::<FloatSum>(state).unwrap(), whole);
    }

    #[test]
    fn float_sum_state_stays_small() {
        let mut s = FloatSum::default();
        for i in 0..100_000 {
            s.insert(((i * 7919) % 1000) as f64 * 0.001 - 0.4);
        }
        assert!(s.low.len() <= 4 && s.high.is_empty(), "{} partials", s.low.len());
        assert_eq!(s.count(), 100_000);
    }

    #[test]
    fn damaged_float_sum_never_panics() {
        let bad = [f64::NAN, f64::INFINITY, f64::MAX, -f64::MAX, 0.0, -0.0, pow2(-1074), 1.0, f64::from_bits(u64::MAX)];
        let mut damaged = FloatSum { low: bad.to_vec(), high: bad.to_vec(), special: Some(1.0), count: 1 };
        let _ = damaged.value();
        let mut fresh = FloatSum::default();
        fresh.merge(&damaged);
        let _ = fresh.value();
        damaged.insert(f64::MAX);
        damaged.merge(&fresh.clone());
        let _ = damaged.value();
        let _ = damaged == fresh;
        let huge = FloatSum { low: vec![f64::MAX; 5000], high: vec![f64::MAX; 5000], special: None, count: 7 };
        let _ = huge.value();
        let mut grown = FloatSum::default();
        grown.merge(&huge);
        assert!(grown.value().unwrap().is_infinite());
    }

    #[test]
    fn float_avg_divides_the_exact_sum() {
        let mut avg = FloatAvg::default();
        assert_eq!(avg.value(), None);
        for v in [1e100, 1.0, 2.0, -1e100] {
            avg.insert(v);
        }
        assert_eq!(avg.value(), Some(0.75));
        assert_eq!(avg.count(), 4);
    }
}
