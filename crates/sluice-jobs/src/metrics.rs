//! Metrics of stream jobs, labelled by job. Counted per batch, never per event.

use std::sync::LazyLock;

use prometheus::{
    CounterVec, GaugeVec, HistogramVec, IntCounterVec, IntGaugeVec, exponential_buckets, register_counter_vec,
    register_gauge_vec, register_histogram_vec, register_int_counter_vec, register_int_gauge_vec,
};

pub(crate) static RECORDS_IN: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("sluice_job_records_in_total", "Records a job read from its source topic.", &["job"])
        .expect("metric registers once")
});

pub(crate) static HOT_REFILLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_job_hot_refills_total",
        "Times a job refilled its hot results from its changelog after the backend lost them (Redis restarted empty \
         or was unreachable).",
        &["job"]
    )
    .expect("metric registers once")
});

pub(crate) static RECORDS_FILTERED_OUT: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("sluice_job_records_filtered_total", "Records a job's WHERE clause dropped.", &["job"])
        .expect("metric registers once")
});

pub(crate) static LATE_EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_job_late_events_total",
        "Events later than the allowed lateness, sent to the job's late-events topic.",
        &["job"]
    )
    .expect("metric registers once")
});

pub(crate) static DECODE_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_job_decode_errors_total",
        "Source records a job could not decode (skipped and dead-lettered).",
        &["job"]
    )
    .expect("metric registers once")
});

pub(crate) static RESULTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_job_results_total",
        "Result rows written to a job's output topic, by kind (partial, final, deleted, row).",
        &["job", "kind"]
    )
    .expect("metric registers once")
});

pub(crate) static LAG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "sluice_job_lag_records",
        "Records in the source topic not yet processed by the job (sum over partitions).",
        &["job"]
    )
    .expect("metric registers once")
});

pub(crate) static WATERMARK: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec!(
        "sluice_job_watermark_timestamp_seconds",
        "The job's event-time watermark, seconds since the epoch.",
        &["job"]
    )
    .expect("metric registers once")
});

pub(crate) static STATE_ENTRIES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!("sluice_job_state_entries", "Open (window, key) aggregates held by the job.", &["job"])
        .expect("metric registers once")
});

pub(crate) static RUNNING: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!("sluice_job_running", "1 while the job runs, 0 when paused or failed.", &["job"])
        .expect("metric registers once")
});

pub(crate) static RESTARTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("sluice_job_failures_total", "Times the job failed and was restarted.", &["job"])
        .expect("metric registers once")
});

pub(crate) static CHECKPOINT_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "sluice_job_checkpoint_duration_seconds",
        "Time from a checkpoint's barrier to its file being durable.",
        &["job"],
        exponential_buckets(0.001, 2.0, 16).expect("valid buckets")
    )
    .expect("metric registers once")
});

pub(crate) static CHECKPOINT_PAUSE_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "sluice_job_checkpoint_pause_seconds",
        "Longest time one state shard stopped processing for a checkpoint snapshot.",
        &["job"],
        exponential_buckets(0.0001, 2.0, 16).expect("valid buckets")
    )
    .expect("metric registers once")
});

pub(crate) static CHECKPOINT_BYTES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!("sluice_job_checkpoint_bytes", "Size of the job's last checkpoint.", &["job"])
        .expect("metric registers once")
});

pub(crate) static CHECKPOINT_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_job_checkpoint_failures_total",
        "Checkpoints that failed to be written.",
        &["job"]
    )
    .expect("metric registers once")
});

pub(crate) static LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "sluice_job_result_latency_seconds",
        "From an event's ingest acknowledgement to its effect being visible in the job's hot results.",
        &["job"],
        exponential_buckets(0.0005, 2.0, 16).expect("valid buckets")
    )
    .expect("metric registers once")
});

/// The operators a job's time is split into (the `operator` label): `read` (log reads of the source), `process`
/// (decode, filter, window assignment and partial aggregation of one page), `merge` (a state shard merging a
/// batch of partial aggregates), `emit` (changelog, hot results and output appends).
pub(crate) const OPERATORS: [&str; 4] = ["read", "process", "merge", "emit"];

pub(crate) static OPERATOR_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "sluice_job_operator_seconds",
        "Time one batch spent in an operator of the job (read, process, merge, emit).",
        &["job", "operator"],
        exponential_buckets(0.00001, 2.0, 20).expect("valid buckets")
    )
    .expect("metric registers once")
});

pub(crate) static BACKPRESSURE_SECONDS: LazyLock<CounterVec> = LazyLock::new(|| {
    register_counter_vec!(
        "sluice_job_backpressure_seconds_total",
        "Time the job's source tasks waited because the next stage (state shards, log appends) was full.",
        &["job"]
    )
    .expect("metric registers once")
});

pub(crate) static WATERMARK_DELAY: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec!(
        "sluice_job_watermark_delay_seconds",
        "Now minus the job's event-time watermark (updated every second; absent until the first watermark).",
        &["job"]
    )
    .expect("metric registers once")
});

pub(crate) static CHECKPOINT_AGE: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec!(
        "sluice_job_checkpoint_age_seconds",
        "Time since the job's last complete checkpoint (updated every second; absent until the first one).",
        &["job"]
    )
    .expect("metric registers once")
});

/// Drops every series of a dropped job, so `/metrics` does not report ghosts.
pub(crate) fn forget(job: &str) {
    for c in [
        &*RECORDS_IN,
        &*RECORDS_FILTERED_OUT,
        &*LATE_EVENTS,
        &*DECODE_ERRORS,
        &*RESTARTS,
        &*CHECKPOINT_FAILURES,
        &*HOT_REFILLS,
    ] {
        let _ = c.remove_label_values(&[job]);
    }
    for kind in ["partial", "final", "deleted", "row"] {
        let _ = RESULTS.remove_label_values(&[job, kind]);
    }
    for g in [&*LAG, &*STATE_ENTRIES, &*RUNNING, &*CHECKPOINT_BYTES] {
        let _ = g.remove_label_values(&[job]);
    }
    for h in [&*CHECKPOINT_SECONDS, &*CHECKPOINT_PAUSE_SECONDS, &*LATENCY] {
        let _ = h.remove_label_values(&[job]);
    }
    for op in OPERATORS {
        let _ = OPERATOR_SECONDS.remove_label_values(&[job, op]);
    }
    let _ = BACKPRESSURE_SECONDS.remove_label_values(&[job]);
    for g in [&*WATERMARK, &*WATERMARK_DELAY, &*CHECKPOINT_AGE] {
        let _ = g.remove_label_values(&[job]);
    }
}
