//! Metrics of the store and its queries (per table, never per key).

use std::sync::LazyLock;

use prometheus::{HistogramVec, IntCounterVec, exponential_buckets, register_histogram_vec, register_int_counter_vec};

pub static SKIPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_store_skipped_records_total",
        "Records a store sink could not decode or store (skipped; the log keeps them).",
        &["table"]
    )
    .expect("metric registers once")
});

pub static CONFLICTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_store_type_conflicts_total",
        "Values whose type conflicted with their column, kept as JSON text in `_extra`.",
        &["table"]
    )
    .expect("metric registers once")
});

pub static QUERY_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "sluice_query_seconds",
        "SQL query time, by outcome (ok or the error code).",
        &["outcome"],
        exponential_buckets(0.0005, 2.0, 18).expect("valid buckets")
    )
    .expect("metric registers once")
});
