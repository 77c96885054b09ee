//! Search metrics: latency of searches by outcome, commits (refreshes) and their duration, documents indexed.

use std::sync::LazyLock;

use prometheus::{HistogramVec, IntCounterVec, exponential_buckets, register_histogram_vec, register_int_counter_vec};

pub static SEARCH_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "sluice_search_seconds",
        "Time to answer a search, by outcome (ok or an error code).",
        &["outcome"],
        exponential_buckets(0.0005, 2.0, 16).expect("valid buckets")
    )
    .expect("metric registers once")
});

pub static COMMIT_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "sluice_search_commit_seconds",
        "Time of one index commit (a refresh: documents become searchable and durable), per topic.",
        &["topic"],
        exponential_buckets(0.001, 2.0, 14).expect("valid buckets")
    )
    .expect("metric registers once")
});

pub static DOCUMENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_search_documents_total",
        "Documents added to search indexes, per topic.",
        &["topic"]
    )
    .expect("metric registers once")
});

pub static SKIPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_search_skipped_records_total",
        "Records the indexer could not decode or index (skipped and counted, never retried forever), per topic.",
        &["topic"]
    )
    .expect("metric registers once")
});
