//! Ingest and API metrics. Labels are bounded: topic (existing topics only), API, status class, reason.

use std::sync::LazyLock;

use prometheus::{
    Histogram, HistogramVec, IntCounterVec, exponential_buckets, register_histogram, register_histogram_vec,
    register_int_counter_vec,
};

pub(crate) static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_http_requests_total",
        "HTTP requests by route and status code.",
        &["route", "status"]
    )
    .expect("metric registers once")
});

pub(crate) static REQUEST_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "sluice_http_request_duration_seconds",
        "HTTP request latency by route (for ingest: until the batch is durable).",
        &["route"],
        exponential_buckets(0.0001, 2.0, 18).expect("valid buckets")
    )
    .expect("metric registers once")
});

pub(crate) static INGEST_EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("sluice_ingest_events_total", "Events acknowledged by ingest, per topic.", &["topic"])
        .expect("metric registers once")
});

pub(crate) static INGEST_BUDGET_WAIT: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "sluice_ingest_budget_wait_seconds",
        "Time produce requests waited for room in limits.max_inflight_bytes (only waits over 1 ms).",
        exponential_buckets(0.001, 2.0, 14).expect("valid buckets")
    )
    .expect("metric registers once")
});

pub(crate) static INGEST_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_ingest_bytes_total",
        "Request body bytes of ingest requests, per topic.",
        &["topic"]
    )
    .expect("metric registers once")
});

pub(crate) static INGEST_REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_ingest_rejected_events_total",
        "Events rejected by ingest, per topic and reason (invalid_event, storage errors).",
        &["topic", "reason"]
    )
    .expect("metric registers once")
});

pub(crate) static INGEST_REJECTED_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_ingest_rejected_requests_total",
        "Whole ingest requests rejected, per topic (`_unknown` for a topic that does not exist) and reason (limit \
         hit, invalid JSON, unknown topic, ...).",
        &["topic", "reason"]
    )
    .expect("metric registers once")
});

pub(crate) static CACHE_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_cache_requests_total",
        "Reads of a cache by result: `hit` when the cache answered alone, `miss` when the store was read too. \
         Cache `job_results`: a job's hot results (GET /v1/jobs/{job}/results and .../latest).",
        &["cache", "result"]
    )
    .expect("metric registers once")
});
