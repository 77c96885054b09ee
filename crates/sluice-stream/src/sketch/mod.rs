//! Mergeable aggregates: every state here merges exactly (floating-point sums too: exact partial sums, rounded
//! once), so partial aggregates from different tasks, checkpoints or panes combine into the same result.
//!
//! - [`DDSketch`]: quantiles (`approx_percentile`) with a relative-error guarantee.
//! - [`HyperLogLog`]: distinct counts (`count(DISTINCT)`), fed with [`hash64`] / [`hash_u64`].
//! - [`Count`], [`IntSum`], [`FloatSum`], [`Min`], [`Max`], [`IntAvg`], [`FloatAvg`]: the exact SQL aggregates.

mod bytes;
mod ddsketch;
mod exact;
mod hash;
mod hll;

pub use ddsketch::DDSketch;
pub use exact::{Count, FloatAvg, FloatSum, IntAvg, IntSum, Max, Min, SumValue};
pub use hash::{hash_u64, hash64};
pub use hll::HyperLogLog;
