//! The log port's conformance suite against the embedded adapter, on real files and on simulated storage.

use std::sync::Arc;

use sluice_log::conformance::run_all;
use sluice_log::{EmbeddedLog, LogOptions, SimStorage, StdStorage, Storage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_std_storage() {
    let dir = tempfile::tempdir().unwrap();
    let (log, reports) = EmbeddedLog::open(dir.path(), Arc::new(StdStorage) as Arc<dyn Storage>, LogOptions::default())
        .expect("open log on a fresh directory");
    assert!(reports.is_empty(), "a fresh log has no partitions to recover");
    run_all(Arc::new(log)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_sim_storage() {
    let storage = SimStorage::new();
    let (log, reports) = EmbeddedLog::open("/data/log", Arc::new(storage) as Arc<dyn Storage>, LogOptions::default())
        .expect("open log on empty simulated storage");
    assert!(reports.is_empty(), "a fresh log has no partitions to recover");
    run_all(Arc::new(log)).await;
}

/// The suite again with tiny segments and a dense index, so every check also crosses segment boundaries and
/// index entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_sim_storage_with_tiny_segments() {
    let opts = LogOptions { segment_bytes: 300, index_interval_bytes: 64, ..LogOptions::default() };
    let (log, _) = EmbeddedLog::open("/data/log", Arc::new(SimStorage::new()) as Arc<dyn Storage>, opts)
        .expect("open log on empty simulated storage");
    run_all(Arc::new(log)).await;
}
