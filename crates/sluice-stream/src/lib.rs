//! Pure building blocks of Sluice's stream jobs (SQL over event-time windows): no I/O, no clocks, no async.
//! The job runner feeds them event times, processing times and values; they answer with windows, watermarks and
//! aggregate state that merges exactly, so checkpoints and rescaling never change a result.
//!
//! Main items:
//! - [`window`]: [`Window`] (half-open `[start, end)` in event-time milliseconds), [`WindowSpec`] (tumble, hop,
//!   session) with [`WindowSpec::assign`] (every window containing a timestamp, aligned to the epoch), and
//!   [`SessionSet`], the per-key session merger that reports which sessions merged into which
//!   ([`SessionChange`]).
//! - [`watermark`]: [`WatermarkTracker`] (bounded out-of-orderness over N input partitions, idle partitions
//!   stop holding it back, never regresses) and [`Lateness`] (on time / late but updatable / too late).
//! - [`sketch`]: mergeable aggregates. [`DDSketch`] for `approx_percentile` (relative-error guarantee),
//!   [`HyperLogLog`] for `count(DISTINCT)`, [`hash64`] (the fixed hash they rely on), and the exact SQL
//!   aggregates [`Count`], [`IntSum`], [`FloatSum`], [`Min`], [`Max`], [`IntAvg`], [`FloatAvg`].
//! - [`StreamError`]: every failure, with [`StreamError::kind`].
//!
//! Conventions shared by every module: times are `i64` milliseconds (event time since the Unix epoch, or the
//! caller's processing-time clock); a watermark `w` means "every event with time `< w` has arrived", so an event
//! with `ts < w` is late and a window with `end <= w` is complete.

mod error;
pub mod sketch;
pub mod watermark;
pub mod window;

pub use error::{ErrorKind, StreamError};
pub use sketch::{
    Count, DDSketch, FloatAvg, FloatSum, HyperLogLog, IntAvg, IntSum, Max, Min, SumValue, hash_u64, hash64,
};
pub use watermark::{Lateness, WatermarkTracker};
pub use window::{SessionChange, SessionSet, Window, WindowIter, WindowSpec};
