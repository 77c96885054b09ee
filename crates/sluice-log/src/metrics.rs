//! Metrics of the log. Counted per batch or per group commit, never per record; per-partition gauges are read
//! at scrape time by [`LogCollector`], so the write path pays nothing for them.

use std::sync::{LazyLock, Weak};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Histogram, IntCounter, IntCounterVec, IntGaugeVec, Opts, exponential_buckets, register_histogram,
    register_int_counter, register_int_counter_vec,
};

use crate::embedded::LogInner;

pub(crate) static FSYNC_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "sluice_log_fsync_duration_seconds",
        "Time one fsync of a log segment took.",
        exponential_buckets(0.0001, 2.0, 16).expect("valid buckets")
    )
    .expect("metric registers once")
});

pub(crate) static GROUP_COMMIT_BATCHES: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "sluice_log_group_commit_batches",
        "Append batches made durable by one fsync.",
        exponential_buckets(1.0, 2.0, 10).expect("valid buckets")
    )
    .expect("metric registers once")
});

pub(crate) static APPENDED_RECORDS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!("sluice_log_appended_records_total", "Records appended to the log and acknowledged.")
        .expect("metric registers once")
});

pub(crate) static APPENDED_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!("sluice_log_appended_bytes_total", "Bytes of batches appended to the log and acknowledged.")
        .expect("metric registers once")
});

pub(crate) static WRITE_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("sluice_log_write_errors_total", "Failed log writes by kind.", &["kind"])
        .expect("metric registers once")
});

pub(crate) static RECOVERY_TRUNCATED_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "sluice_log_recovery_truncated_bytes_total",
        "Bytes of torn or corrupt tails cut off by recovery at open."
    )
    .expect("metric registers once")
});

pub(crate) static SEGMENTS_ROLLED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!("sluice_log_segments_rolled_total", "Log segments sealed and replaced by a new one.")
        .expect("metric registers once")
});

pub(crate) static SEGMENTS_DELETED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_log_segments_deleted_total",
        "Log segments deleted by retention, by reason (age, size).",
        &["reason"]
    )
    .expect("metric registers once")
});

/// Per-partition gauges (size, segments, offsets, writability), read from the log at scrape time.
pub struct LogCollector {
    log: Weak<LogInner>,
    size: IntGaugeVec,
    segments: IntGaugeVec,
    high_watermark: IntGaugeVec,
    start_offset: IntGaugeVec,
    writable: IntGaugeVec,
}

impl LogCollector {
    pub(crate) fn new(log: Weak<LogInner>) -> Self {
        let g = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), &["topic", "partition"]).expect("valid metric")
        };
        LogCollector {
            log,
            size: g("sluice_log_partition_size_bytes", "Bytes held by a partition's segments."),
            segments: g("sluice_log_partition_segments", "Segments of a partition."),
            high_watermark: g("sluice_log_partition_high_watermark", "Next offset of a partition (acknowledged end)."),
            start_offset: g("sluice_log_partition_start_offset", "First offset still held by a partition."),
            writable: g("sluice_log_partition_writable", "1 when a partition accepts writes, 0 when fenced."),
        }
    }

    fn all(&self) -> [&IntGaugeVec; 5] {
        [&self.size, &self.segments, &self.high_watermark, &self.start_offset, &self.writable]
    }
}

impl Collector for LogCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.all().iter().flat_map(|g| g.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        for g in self.all() {
            g.reset();
        }
        if let Some(log) = self.log.upgrade() {
            for (topic, infos) in log.partition_infos() {
                for p in infos {
                    let part = p.partition.to_string();
                    let labels = [topic.as_str(), part.as_str()];
                    self.size.with_label_values(&labels).set(p.size_bytes as i64);
                    self.segments.with_label_values(&labels).set(p.segments as i64);
                    self.high_watermark.with_label_values(&labels).set(p.high_watermark as i64);
                    self.start_offset.with_label_values(&labels).set(p.log_start_offset as i64);
                    self.writable.with_label_values(&labels).set(p.writable as i64);
                }
            }
        }
        self.all().iter().flat_map(|g| g.collect()).collect()
    }
}
