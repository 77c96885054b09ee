//! Metrics of the registry: registrations, lookups, refusals, and live schemas and subjects. No per-subject
//! labels; the hot-path lookup counters are resolved once so a lookup costs one atomic add.

use std::sync::LazyLock;

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, register_int_counter_vec, register_int_gauge_vec};

pub(crate) static REGISTRATIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_schema_registrations_total",
        "Schema registrations accepted: `new` created a version, `existing` found the schema already registered.",
        &["result"]
    )
    .expect("metric registers once")
});

pub(crate) static LOOKUPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_schema_lookups_total",
        "Schema lookups by what was looked up: `id`, `subject_version` (latest or a number), `schema` (by text).",
        &["by"]
    )
    .expect("metric registers once")
});

pub(crate) static REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_schema_rejected_total",
        "Schemas refused at registration, by reason (incompatible, invalid).",
        &["reason"]
    )
    .expect("metric registers once")
});

pub(crate) static STORE_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        "sluice_schema_store_errors_total",
        "Registry changes refused because appending them to the `_schemas` log topic failed."
    )
    .expect("metric registers once")
});

static LIVE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "sluice_schema_live",
        "Live (not deleted) registry objects: `schemas` (distinct ids in use), `subjects`.",
        &["kind"]
    )
    .expect("metric registers once")
});

pub(crate) static LOOKUPS_BY_ID: LazyLock<IntCounter> = LazyLock::new(|| LOOKUPS.with_label_values(&["id"]));
pub(crate) static LOOKUPS_BY_SUBJECT_VERSION: LazyLock<IntCounter> =
    LazyLock::new(|| LOOKUPS.with_label_values(&["subject_version"]));
pub(crate) static LOOKUPS_BY_SCHEMA: LazyLock<IntCounter> = LazyLock::new(|| LOOKUPS.with_label_values(&["schema"]));
pub(crate) static LIVE_SCHEMAS: LazyLock<IntGauge> = LazyLock::new(|| LIVE.with_label_values(&["schemas"]));
pub(crate) static LIVE_SUBJECTS: LazyLock<IntGauge> = LazyLock::new(|| LIVE.with_label_values(&["subjects"]));

pub(crate) static DEAD_LETTERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_dead_letters_total",
        "Records a reader could not decode, sent to their topic's dead-letter topic, by reason code.",
        &["reason"]
    )
    .expect("metric registers once")
});
