//! The stream job runner: SQL jobs (compiled by `sluice-stream`) running over the log with event-time windows,
//! keyed state, barrier-aligned checkpoints, exactly-once results, bounded queues everywhere, replay, and the
//! in-memory hot read path of recent results.
//!
//! Main types:
//! - [`JobManager`]: durable job definitions and one supervised runner per job; the API's and CLI's entry point
//!   (create, list, describe, pause, resume, drop, replay, results).
//! - [`runner`]: one running job (source tasks -> keyed state shards -> hot results + results writer), its
//!   checkpoints and its exactly-once rules; [`JobStats`] are its live numbers.
//! - [`changelog`]: the format of a windowed job's `{job}.results` topic, which the store and the hot results read.
//! - Hot results: each windowed job writes its changed rows to a [`sluice_hot::HotResults`] from the
//!   [`sluice_hot::HotStore`] in [`ManagerOptions`], and refills it from its changelog after a (re)start or a loss.
//! - [`CheckpointStore`]: atomic, checksummed checkpoint files with fallback to the previous good one.
//! - [`JobError`]: every failure, with a stable [`JobError::code`].

pub mod changelog;
pub mod checkpoint;
mod error;
mod manager;
mod metrics;
pub mod runner;

pub use checkpoint::CheckpointStore;
pub use error::JobError;
pub use manager::{JobDefinition, JobManager, JobStatus, LatencySummary, ManagerOptions, ReplayFrom};
pub use runner::{JobStats, StartPosition};
pub use sluice_hot::{HotResults, HotStore, ResultRow};
