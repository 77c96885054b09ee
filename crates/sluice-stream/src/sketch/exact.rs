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

/// `sum(double)` with Neumaier compensation: the error stays ~1 ulp of the result instead of growing with the
/// number of inputs, so partial sums merged in any order agree to rounding (not bit-for-bit). NaN and
/// infinities propagate as in SQL/IEEE.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct FloatSum {
    sum: f64,
    compensation: f64,
    count: u64,
}

impl FloatSum {
    pub fn insert(&mut self, v: f64) {
        self.add(v);
        self.count = self.count.saturating_add(1);
    }

    fn add(&mut self, v: f64) {
        let t = self.sum + v;
        if t.is_finite() {
            self.compensation += if self.sum.abs() >= v.abs() { (self.sum - t) + v } else { (v - t) + self.sum };
        }
        self.sum = t;
    }

    pub fn merge(&mut self, other: &FloatSum) {
        self.add(other.sum);
        self.compensation += other.compensation;
        self.count = self.count.saturating_add(other.count);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn value(&self) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        Some(if self.sum.is_finite() { self.sum + self.compensation } else { self.sum })
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

/// `avg(double)` as (compensated sum, count).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
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
