//! Pure building blocks of Sluice's stream jobs (SQL over event-time windows): no I/O, no clocks, no async.
//! The job runner feeds them event times, processing times and values; they answer with compiled plans, windows,
//! watermarks and aggregate state that merges exactly, so checkpoints and rescaling never change a result.
//!
//! Main items:
//! - [`sql`]: [`parse_job`] compiles `CREATE JOB name [WITH (...)] AS [INSERT INTO topic] SELECT ...` into a
//!   [`JobPlan`] ([`plan`]), or a [`SqlError`] with line and column.
//! - [`plan`]: [`JobPlan`] (source, [`JobOptions`], input [`Column`]s, filter, and a [`StatelessPlan`] or a
//!   [`WindowedPlan`]), with the per-event calls: [`JobPlan::extract`] from a JSON value and [`RecordMeta`],
//!   [`StatelessPlan::project`], [`WindowedPlan::result_row`].
//! - [`datum`]: [`Datum`], a SQL value with total `Eq`/`Hash` (usable as a group key) and JSON conversions.
//! - [`expr`]: [`Expr`], a compiled expression whose evaluation never fails (errors are NULL, as events are
//!   schemaless).
//! - [`agg`]: [`AggregateCall`] and [`AggState`], mergeable, compactly serializable aggregate states.
//! - [`window`]: [`Window`] (half-open `[start, end)` in event-time milliseconds), [`WindowSpec`] (tumble, hop,
//!   session) with [`WindowSpec::assign`] (every window containing a timestamp, aligned to the epoch), and
//!   [`SessionSet`], the per-key session merger that reports which sessions merged into which
//!   ([`SessionChange`]).
//! - [`watermark`]: [`WatermarkTracker`] (bounded out-of-orderness over N input partitions, idle partitions
//!   stop holding it back, never regresses) and [`Lateness`] (on time / late but updatable / too late).
//! - [`sketch`]: mergeable aggregates. [`DDSketch`] for `approx_percentile` (relative-error guarantee),
//!   [`HyperLogLog`] for `count(DISTINCT)`, [`hash64`] (the fixed hash they rely on), and the exact SQL
//!   aggregates [`Count`], [`IntSum`], [`FloatSum`], [`Min`], [`Max`], [`IntAvg`], [`FloatAvg`].
//! - [`types`]: [`ValueKind`], the static kind of each result column of a windowed plan
//!   ([`JobPlan::result_kinds`]), for readers that need columns before the first result.
//! - [`StreamError`]: every failure, with [`StreamError::kind`].
//!
//! Conventions shared by every module: times are `i64` milliseconds (event time since the Unix epoch, or the
//! caller's processing-time clock); a watermark `w` means "every event with time `< w` has arrived", so an event
//! with `ts < w` is late and a window with `end <= w` is complete.

pub mod agg;
pub mod datum;
mod error;
pub mod expr;
pub mod plan;
pub mod sketch;
pub mod sql;
pub mod types;
pub mod watermark;
pub mod window;

pub use agg::{AggFunc, AggState, AggregateCall};
pub use datum::Datum;
pub use error::{ErrorKind, StreamError};
pub use expr::Expr;
pub use plan::{Column, JobOptions, JobPlan, Meta, PlanBody, Projection, RecordMeta, StatelessPlan, WindowedPlan};
pub use sketch::{
    Count, DDSketch, FloatAvg, FloatSum, HyperLogLog, IntAvg, IntSum, Max, Min, SumValue, hash_u64, hash64,
};
pub use sql::{SqlError, parse_job};
pub use types::ValueKind;
pub use watermark::{Lateness, WatermarkTracker};
pub use window::{SessionChange, SessionSet, Window, WindowIter, WindowSpec};
