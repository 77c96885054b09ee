//! Metrics of sinks, labelled by sink kind (`store`, `search`, ...) and source topic. Counted per batch.

use std::sync::LazyLock;

use prometheus::{
    HistogramVec, IntCounterVec, IntGaugeVec, exponential_buckets, register_histogram_vec, register_int_counter_vec,
    register_int_gauge_vec,
};

pub static RECORDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("sluice_sink_records_total", "Records a sink applied.", &["sink", "topic"])
        .expect("metric registers once")
});

pub static ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_sink_errors_total",
        "Failed sink writes (retried with backoff), by kind.",
        &["sink", "kind"]
    )
    .expect("metric registers once")
});

pub static LAG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "sluice_sink_lag_records",
        "Records in the source topic that the sink has not applied yet.",
        &["sink", "topic"]
    )
    .expect("metric registers once")
});

pub static WRITE_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "sluice_sink_write_seconds",
        "Time a sink took to apply one batch (includes any flush it did inline).",
        &["sink"],
        exponential_buckets(0.0001, 2.0, 18).expect("valid buckets")
    )
    .expect("metric registers once")
});

pub static END_TO_END_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "sluice_sink_end_to_end_seconds",
        "Ingest acknowledgement to visible in the sink (queryable, searchable), per record.",
        &["sink"],
        exponential_buckets(0.0005, 2.0, 18).expect("valid buckets")
    )
    .expect("metric registers once")
});

/// Observes ingest -> visible for records appended at `append_times_ms`, now.
pub fn observe_end_to_end(sink: &str, append_times_ms: impl Iterator<Item = i64>) {
    let now = sluice_log::now_ms();
    let h = END_TO_END_SECONDS.with_label_values(&[sink]);
    for t in append_times_ms {
        h.observe((now - t).max(0) as f64 / 1000.0);
    }
}
