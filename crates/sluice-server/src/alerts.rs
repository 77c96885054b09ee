//! The four alerts, evaluated inside Sluice so a user without Prometheus still sees them, and the samples that
//! `GET /v1/status` is computed from.
//!
//! A [`Sampler`] task reads every metric registry (the same series `/metrics` shows) every
//! `alerts.eval_interval`, reduces them to a [`Sample`], keeps a ring of samples spanning `alerts.window`, and
//! evaluates the rules of `deploy/prometheus/alerts.yml` over it: consumer lag (instant, worst job or sink),
//! end-to-end P99 (per sink, from the histogram's bucket increase over the window, interpolated like PromQL's
//! `histogram_quantile`), error rate (`sluice_errors_total` increase / `sluice_ingest_events_total` increase) and
//! disk utilisation (the data directory's filesystem, `used / (used + available)` as `df` computes it). Each
//! [`AlertState`] is `ok`, `pending` (condition true for less than `alerts.for`) or `firing`.
//!
//! The sampler also keeps the data-directory gauges current: the filesystem's size, free and used bytes on
//! every evaluation (one `statvfs`), and the directory's bytes per top-level area on every
//! `alerts.disk_scan_interval` (a walk of the tree, off the async workers). `GET /v1/status` walks it again
//! when the last walk is old for what it cost ([`Monitor::current_disk`]), so its sizes are current from the
//! first request on.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus::proto::MetricFamily;
use prometheus::{IntGaugeVec, register_int_gauge_vec};
use serde::Serialize;
use sluice_config::AlertsConfig;

/// The alerts' names, in the order they are reported.
pub const ALERTS: [&str; 4] = ["consumer_lag", "e2e_p99", "error_rate", "disk_usage"];

/// Top-level areas of the data directory measured separately; more are summed into `other`.
const MAX_AREAS: usize = 16;

static ALERT_STATE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "sluice_alert_state",
        "State of each in-process alert: 0 ok, 1 pending, 2 firing.",
        &["alert"]
    )
    .expect("metric registers once")
});

static FS_SIZE: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    prometheus::register_int_gauge!(
        "sluice_data_dir_filesystem_size_bytes",
        "Size of the filesystem that holds the data directory."
    )
    .expect("metric registers once")
});

static FS_FREE: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    prometheus::register_int_gauge!(
        "sluice_data_dir_filesystem_free_bytes",
        "Bytes of the data directory's filesystem available to Sluice (statvfs f_bavail)."
    )
    .expect("metric registers once")
});

static FS_USED: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    prometheus::register_int_gauge!(
        "sluice_data_dir_filesystem_used_bytes",
        "Bytes used on the data directory's filesystem (by anything, not only Sluice)."
    )
    .expect("metric registers once")
});

static DIR_BYTES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "sluice_data_dir_bytes",
        "Bytes of files under the data directory, per top-level area (log, jobs, store, ...), measured periodically.",
        &["area"]
    )
    .expect("metric registers once")
});

/// The filesystem holding the data directory.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FsStats {
    pub size_bytes: u64,
    pub free_bytes: u64,
    pub used_bytes: u64,
}

impl FsStats {
    /// `used / (used + available)`, as `df` shows it.
    pub fn used_ratio(&self) -> f64 {
        let total = self.used_bytes + self.free_bytes;
        if total == 0 { 0.0 } else { self.used_bytes as f64 / total as f64 }
    }
}

/// `statvfs` of `path`.
pub fn fs_stats(path: &Path) -> std::io::Result<FsStats> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `s` points to writable memory for one statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), s.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `s`.
    let s = unsafe { s.assume_init() };
    // The statvfs field types differ between platforms (u32 on some 32-bit targets).
    #[allow(clippy::unnecessary_cast)]
    let frsize = s.f_frsize as u64;
    #[allow(clippy::unnecessary_cast)]
    let (blocks, bfree, bavail) = (s.f_blocks as u64, s.f_bfree as u64, s.f_bavail as u64);
    Ok(FsStats {
        size_bytes: blocks * frsize,
        free_bytes: bavail * frsize,
        used_bytes: blocks.saturating_sub(bfree) * frsize,
    })
}

/// Bytes of the files under `dir` by top-level entry (directories by name, loose files as `other`).
pub fn dir_bytes(dir: &Path) -> BTreeMap<String, u64> {
    fn walk(p: &Path) -> u64 {
        let Ok(meta) = std::fs::symlink_metadata(p) else { return 0 };
        if !meta.is_dir() {
            return meta.len();
        }
        let Ok(entries) = std::fs::read_dir(p) else { return 0 };
        entries.flatten().map(|e| walk(&e.path())).sum()
    }
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        let name = e.file_name().to_string_lossy().into_owned();
        let area = if is_dir && (out.len() < MAX_AREAS || out.contains_key(&name)) { name } else { "other".into() };
        *out.entry(area).or_insert(0) += walk(&e.path());
    }
    out
}

/// A cumulative histogram: (upper bound, cumulative count) per bucket, `+Inf` last.
pub type Buckets = Vec<(f64, f64)>;

/// What one evaluation read from the registries.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub at: Option<Instant>,
    pub at_ms: i64,
    /// `job/NAME` or `sink/SINK/TOPIC` -> records behind.
    pub lag: BTreeMap<String, f64>,
    /// Sink -> end-to-end histogram.
    pub e2e: BTreeMap<String, Buckets>,
    pub errors: f64,
    /// Topic -> events acknowledged by ingest.
    pub ingest_events: BTreeMap<String, f64>,
    pub ingest_bytes: BTreeMap<String, f64>,
    pub job_records_in: BTreeMap<String, f64>,
    pub job_running: BTreeMap<String, f64>,
    pub job_watermark_delay: BTreeMap<String, f64>,
    pub job_checkpoint_age: BTreeMap<String, f64>,
    pub job_backpressure_seconds: BTreeMap<String, f64>,
    /// `sink/topic` -> records applied.
    pub sink_records: BTreeMap<String, f64>,
    /// Stage -> (seconds spent, batches) from the stages' duration histograms.
    pub stage_time: BTreeMap<String, (f64, f64)>,
    pub fs: Option<FsStats>,
}

fn label<'a>(m: &'a prometheus::proto::Metric, name: &str) -> &'a str {
    m.get_label().iter().find(|l| l.name() == name).map_or("", |l| l.value())
}

impl Sample {
    /// Reduces gathered metric families to what the alerts and the status need.
    pub fn from_families(families: &[MetricFamily], fs: Option<FsStats>) -> Sample {
        let mut s = Sample { at: Some(Instant::now()), at_ms: sluice_log::now_ms(), fs, ..Sample::default() };
        for f in families {
            let metrics = f.get_metric();
            let counter = |m: &prometheus::proto::Metric| m.get_counter().value();
            let gauge = |m: &prometheus::proto::Metric| m.get_gauge().value();
            match f.name() {
                "sluice_job_lag_records" => {
                    for m in metrics {
                        s.lag.insert(format!("job/{}", label(m, "job")), gauge(m));
                    }
                }
                "sluice_sink_lag_records" => {
                    for m in metrics {
                        s.lag.insert(format!("sink/{}/{}", label(m, "sink"), label(m, "topic")), gauge(m));
                    }
                }
                "sluice_sink_end_to_end_seconds" => {
                    // Search is searchable after its refresh interval (1 s by default, like Elasticsearch's): its
                    // latency is by design above the threshold and is not part of this alert.
                    for m in metrics.iter().filter(|m| label(m, "sink") != "search") {
                        let h = m.get_histogram();
                        let mut b: Buckets =
                            h.get_bucket().iter().map(|b| (b.upper_bound(), b.cumulative_count() as f64)).collect();
                        b.push((f64::INFINITY, h.sample_count() as f64));
                        s.e2e.insert(label(m, "sink").to_string(), b);
                    }
                }
                "sluice_errors_total" => s.errors = metrics.iter().map(counter).sum(),
                "sluice_ingest_events_total" => {
                    for m in metrics {
                        s.ingest_events.insert(label(m, "topic").to_string(), counter(m));
                    }
                }
                "sluice_ingest_bytes_total" => {
                    for m in metrics {
                        s.ingest_bytes.insert(label(m, "topic").to_string(), counter(m));
                    }
                }
                "sluice_job_records_in_total" => {
                    for m in metrics {
                        s.job_records_in.insert(label(m, "job").to_string(), counter(m));
                    }
                }
                "sluice_job_running" => {
                    for m in metrics {
                        s.job_running.insert(label(m, "job").to_string(), gauge(m));
                    }
                }
                "sluice_job_watermark_delay_seconds" => {
                    for m in metrics {
                        s.job_watermark_delay.insert(label(m, "job").to_string(), gauge(m));
                    }
                }
                "sluice_job_checkpoint_age_seconds" => {
                    for m in metrics {
                        s.job_checkpoint_age.insert(label(m, "job").to_string(), gauge(m));
                    }
                }
                "sluice_job_backpressure_seconds_total" => {
                    for m in metrics {
                        s.job_backpressure_seconds.insert(label(m, "job").to_string(), counter(m));
                    }
                }
                "sluice_sink_records_total" => {
                    for m in metrics {
                        s.sink_records.insert(format!("{}/{}", label(m, "sink"), label(m, "topic")), counter(m));
                    }
                }
                name @ ("sluice_http_request_duration_seconds"
                | "sluice_log_fsync_duration_seconds"
                | "sluice_job_operator_seconds"
                | "sluice_sink_write_seconds") => {
                    for m in metrics {
                        let stage = match name {
                            "sluice_http_request_duration_seconds" => {
                                let route = label(m, "route");
                                if route != "POST /v1/topics/{topic}/events" && route != "POST /topics/{topic}" {
                                    continue;
                                }
                                "ingest".to_string()
                            }
                            "sluice_log_fsync_duration_seconds" => "log fsync".to_string(),
                            "sluice_job_operator_seconds" => {
                                format!("job {} {}", label(m, "job"), label(m, "operator"))
                            }
                            _ => format!("sink {}", label(m, "sink")),
                        };
                        let h = m.get_histogram();
                        let e = s.stage_time.entry(stage).or_insert((0.0, 0.0));
                        e.0 += h.sample_sum();
                        e.1 += h.sample_count() as f64;
                    }
                }
                _ => {}
            }
        }
        s
    }

    fn secs_since(&self, earlier: &Sample) -> f64 {
        match (self.at, earlier.at) {
            (Some(a), Some(b)) => a.saturating_duration_since(b).as_secs_f64(),
            _ => (self.at_ms - earlier.at_ms).max(0) as f64 / 1000.0,
        }
    }
}

/// The `q` quantile of the observations between two cumulative histograms, interpolated linearly inside the
/// bucket like PromQL's `histogram_quantile`; `None` without observations. A quantile in the `+Inf` bucket is
/// the highest finite bound.
pub fn quantile(q: f64, now: &Buckets, before: Option<&Buckets>) -> Option<f64> {
    let delta: Vec<(f64, f64)> = now
        .iter()
        .enumerate()
        .map(|(i, &(le, c))| {
            let prev = before.and_then(|b| b.get(i)).filter(|(ple, _)| *ple == le).map_or(0.0, |(_, pc)| *pc);
            // A counter reset (restart) counts from zero, like rate().
            (le, if c >= prev { c - prev } else { c })
        })
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev_le = 0.0;
    let mut prev_count = 0.0;
    for &(le, count) in &delta {
        if count >= rank {
            if le.is_infinite() {
                return Some(prev_le);
            }
            let in_bucket = count - prev_count;
            if in_bucket <= 0.0 {
                return Some(le);
            }
            return Some(prev_le + (le - prev_le) * (rank - prev_count) / in_bucket);
        }
        prev_le = le;
        prev_count = count;
    }
    Some(prev_le)
}

/// Increase of a counter between two samples (a reset counts from zero).
fn increase(now: f64, before: f64) -> f64 {
    if now >= before { now - before } else { now }
}

fn increase_map(now: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    now.iter().map(|(k, v)| (k.clone(), increase(*v, before.get(k).copied().unwrap_or(0.0)))).collect()
}

/// One alert's state, as `GET /v1/alerts` answers it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertState {
    pub name: &'static str,
    /// `ok`, `pending` or `firing`.
    pub state: &'static str,
    /// The current value (`null` when there is nothing to measure, e.g. no events in the window).
    pub value: Option<f64>,
    pub threshold: f64,
    /// `events`, `seconds` or `ratio`.
    pub unit: &'static str,
    /// When the alert entered its current state (RFC 3339).
    pub since: String,
    /// How long the condition must hold before firing, in seconds.
    pub for_seconds: f64,
    /// What is measured.
    pub summary: &'static str,
    /// The worst consumer or sink, when the value is the worst of several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip)]
    since_ms: i64,
    #[serde(skip)]
    condition_since_ms: Option<i64>,
}

/// Evaluates the four alerts over a ring of samples.
pub struct AlertEngine {
    cfg: AlertsConfig,
    samples: VecDeque<Arc<Sample>>,
    states: Vec<AlertState>,
}

impl AlertEngine {
    pub fn new(cfg: AlertsConfig) -> Self {
        let now = sluice_log::now_ms();
        let spec: [(&'static str, f64, &'static str, &'static str); 4] = [
            (
                "consumer_lag",
                cfg.lag_records as f64,
                "events",
                "records the furthest-behind job or sink has to catch up",
            ),
            (
                "e2e_p99",
                cfg.e2e_p99.0.as_secs_f64(),
                "seconds",
                "P99 from ingest acknowledgement to committed in a sink",
            ),
            ("error_rate", cfg.error_rate, "ratio", "errors of every stage per event ingested"),
            ("disk_usage", cfg.disk_used_ratio, "ratio", "used share of the data directory's filesystem"),
        ];
        let states = spec
            .into_iter()
            .map(|(name, threshold, unit, summary)| AlertState {
                name,
                state: "ok",
                value: None,
                threshold,
                unit,
                since: crate::http::format_time(now),
                for_seconds: cfg.for_.0.as_secs_f64(),
                summary,
                source: None,
                since_ms: now,
                condition_since_ms: None,
            })
            .collect();
        AlertEngine { cfg, samples: VecDeque::new(), states }
    }

    /// Adds a sample, drops those older than the window (keeping one at or before its start), and re-evaluates.
    pub fn push(&mut self, sample: Sample) {
        let window = self.cfg.window.0;
        let sample = Arc::new(sample);
        self.samples.push_back(sample.clone());
        while self.samples.len() > 2 && sample.secs_since(&self.samples[1]) >= window.as_secs_f64() {
            self.samples.pop_front();
        }
        self.evaluate(&sample);
    }

    /// The sample at the start of the window (or the oldest kept), for increases over the window.
    fn window_start(&self, span: Duration) -> Option<&Arc<Sample>> {
        let latest = self.samples.back()?;
        self.samples.iter().find(|s| latest.secs_since(s) <= span.as_secs_f64() + 0.001).or(self.samples.front())
    }

    fn evaluate(&mut self, latest: &Sample) {
        let start = self.window_start(self.cfg.window.0).cloned();
        let before = start.as_deref().filter(|s| !std::ptr::eq(*s, latest));
        let lag = latest.lag.iter().max_by(|a, b| a.1.total_cmp(b.1)).map(|(k, v)| (*v, k.clone()));
        let p99 = latest
            .e2e
            .iter()
            .filter_map(|(sink, b)| {
                let prev = before.map(|s| s.e2e.get(sink));
                // With no earlier sample, nothing has been observed within the window yet.
                let q = match prev {
                    Some(prev) => quantile(0.99, b, prev),
                    None => None,
                };
                q.map(|q| (q, sink.clone()))
            })
            .max_by(|a, b| a.0.total_cmp(&b.0));
        let error_rate = before.and_then(|b| {
            let errors = increase(latest.errors, b.errors);
            let events: f64 = increase_map(&latest.ingest_events, &b.ingest_events).values().sum();
            match (errors > 0.0, events > 0.0) {
                (_, true) => Some(errors / events),
                // Errors without a single event: as bad as it gets.
                (true, false) => Some(1.0),
                (false, false) => None,
            }
        });
        let disk = latest.fs.map(|f| f.used_ratio());
        let values: [(Option<f64>, Option<String>); 4] = [
            (lag.as_ref().map(|l| l.0), lag.map(|l| l.1)),
            (p99.as_ref().map(|p| p.0), p99.map(|p| p.1)),
            (error_rate, None),
            (disk, None),
        ];
        let now = latest.at_ms;
        let for_ms = self.cfg.for_.0.as_millis() as i64;
        for (st, (value, source)) in self.states.iter_mut().zip(values) {
            st.value = value;
            st.source = source;
            let holds = value.is_some_and(|v| v > st.threshold);
            let next = if holds {
                let since = *st.condition_since_ms.get_or_insert(now);
                if now - since >= for_ms { "firing" } else { "pending" }
            } else {
                st.condition_since_ms = None;
                "ok"
            };
            if next != st.state {
                match next {
                    "firing" => tracing::warn!(alert = st.name, value = ?st.value, threshold = st.threshold,
                        source = ?st.source, "alert firing"),
                    "ok" if st.state == "firing" => {
                        tracing::info!(alert = st.name, value = ?st.value, "alert resolved")
                    }
                    _ => {}
                }
                st.state = next;
                st.since_ms = now;
                st.since = crate::http::format_time(now);
            }
            ALERT_STATE.with_label_values(&[st.name]).set(match st.state {
                "firing" => 2,
                "pending" => 1,
                _ => 0,
            });
        }
    }

    pub fn alerts(&self) -> Vec<AlertState> {
        self.states.clone()
    }

    /// The newest sample and the one `span` before it (or the oldest kept), for rates.
    pub fn span(&self, span: Duration) -> Option<(Arc<Sample>, Option<Arc<Sample>>)> {
        let latest = self.samples.back()?.clone();
        let start = self.window_start(span).filter(|s| !Arc::ptr_eq(s, &latest)).cloned();
        Some((latest, start))
    }

    pub fn config(&self) -> &AlertsConfig {
        &self.cfg
    }
}

/// One walk of the data directory.
#[derive(Debug, Clone)]
pub struct DiskScan {
    /// Bytes per top-level area (see [`dir_bytes`]).
    pub areas: BTreeMap<String, u64>,
    /// When the walk started.
    pub at: Instant,
    /// How long it took.
    pub took: Duration,
}

/// A request walks the data directory again once this many times the last walk's duration has passed since it:
/// a small directory is measured at every request, a large one costs requests at most 1% of one thread.
const ON_DEMAND_WALK_SPACING: u32 = 100;

/// The alert engine and what the sampler last measured, shared with the handlers.
pub struct Monitor {
    pub engine: Mutex<AlertEngine>,
    disk: Mutex<Option<DiskScan>>,
    /// Held while walking, so that walks do not run side by side.
    walking: Mutex<()>,
}

impl Monitor {
    pub fn new(cfg: AlertsConfig) -> Self {
        Monitor { engine: Mutex::new(AlertEngine::new(cfg)), disk: Mutex::new(None), walking: Mutex::new(()) }
    }

    /// The last walk of the data directory, if any.
    pub fn disk(&self) -> Option<DiskScan> {
        self.disk.lock().clone()
    }

    /// Walks `dir` (blocking: call off the async workers), publishes `sluice_data_dir_bytes` and keeps the result.
    pub fn scan_disk(&self, dir: &Path) -> DiskScan {
        let _walking = self.walking.lock();
        self.walk(dir)
    }

    /// The data directory's bytes as of now: walked again unless the last walk is recent for its cost (see
    /// [`ON_DEMAND_WALK_SPACING`]), so `GET /v1/status` is right from the first request, not only after the next
    /// periodic scan. Blocking: call off the async workers.
    pub fn current_disk(&self, dir: &Path) -> DiskScan {
        let fresh = |s: &DiskScan| s.at.elapsed() < s.took * ON_DEMAND_WALK_SPACING;
        if let Some(s) = self.disk().filter(fresh) {
            return s;
        }
        let _walking = self.walking.lock();
        // A walk that ran while this one waited for the lock is as good.
        match self.disk().filter(fresh) {
            Some(s) => s,
            None => self.walk(dir),
        }
    }

    fn walk(&self, dir: &Path) -> DiskScan {
        let at = Instant::now();
        let areas = dir_bytes(dir);
        let scan = DiskScan { areas, at, took: at.elapsed() };
        DIR_BYTES.reset();
        for (area, bytes) in &scan.areas {
            DIR_BYTES.with_label_values(&[area]).set(*bytes as i64);
        }
        *self.disk.lock() = Some(scan.clone());
        scan
    }
}

/// Aborts the sampler task when dropped.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Samples the registries every `alerts.eval_interval` until the returned task is aborted.
pub fn spawn_sampler(
    monitor: Arc<Monitor>,
    registry: prometheus::Registry,
    data_dir: PathBuf,
) -> tokio::task::JoinHandle<()> {
    let (eval, scan) = {
        let e = monitor.engine.lock();
        (e.config().eval_interval.0, e.config().disk_scan_interval.0)
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(eval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (dir, reg, m) = (data_dir.clone(), registry.clone(), monitor.clone());
            // Gathering runs the scrape-time collectors and the walk reads the disk: off the async workers.
            let measured = tokio::task::spawn_blocking(move || {
                let fs = match fs_stats(&dir) {
                    Ok(fs) => {
                        FS_SIZE.set(fs.size_bytes as i64);
                        FS_FREE.set(fs.free_bytes as i64);
                        FS_USED.set(fs.used_bytes as i64);
                        Some(fs)
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, dir = %dir.display(), "statvfs of the data directory failed");
                        None
                    }
                };
                // Requests walk too (see `Monitor::current_disk`): the interval counts from the latest walk.
                if m.disk().is_none_or(|d| d.at.elapsed() >= scan) {
                    m.scan_disk(&dir);
                }
                let mut families = prometheus::gather();
                families.extend(reg.gather());
                Sample::from_families(&families, fs)
            })
            .await;
            let Ok(sample) = measured else { continue };
            monitor.engine.lock().push(sample);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AlertsConfig {
        AlertsConfig {
            lag_records: 100,
            for_: sluice_config::HumanDuration(Duration::from_millis(2000)),
            window: sluice_config::HumanDuration(Duration::from_secs(10)),
            ..AlertsConfig::default()
        }
    }

    fn sample(at_ms: i64) -> Sample {
        Sample { at_ms, ..Sample::default() }
    }

    fn state<'a>(e: &'a AlertEngine, name: &str) -> &'a AlertState {
        e.states.iter().find(|s| s.name == name).unwrap()
    }

    #[test]
    fn quantile_interpolates_like_promql() {
        let before: Buckets = vec![(0.1, 0.0), (0.5, 0.0), (1.0, 0.0), (f64::INFINITY, 0.0)];
        let slow: Buckets = vec![(0.1, 0.0), (0.5, 0.0), (1.0, 100.0), (f64::INFINITY, 100.0)];
        let q = quantile(0.99, &slow, Some(&before)).unwrap();
        assert!((q - 0.995).abs() < 1e-9, "{q}");
        assert_eq!(quantile(0.99, &slow, Some(&slow)), None, "no observations in the window");
        let inf: Buckets = vec![(0.1, 0.0), (f64::INFINITY, 10.0)];
        assert_eq!(quantile(0.5, &inf, None), Some(0.1));
        let fast: Buckets = vec![(0.1, 100.0), (0.5, 100.0), (f64::INFINITY, 100.0)];
        assert!(quantile(0.99, &fast, None).unwrap() <= 0.1);
    }

    #[test]
    fn lag_goes_pending_then_firing_then_ok() {
        let mut e = AlertEngine::new(cfg());
        let mut s = sample(1_000);
        s.lag.insert("job/j".into(), 50.0);
        e.push(s);
        assert_eq!(state(&e, "consumer_lag").state, "ok");
        let mut s = sample(2_000);
        s.lag.insert("job/j".into(), 500.0);
        s.lag.insert("sink/store/t".into(), 10.0);
        e.push(s);
        let st = state(&e, "consumer_lag");
        assert_eq!((st.state, st.value, st.source.as_deref()), ("pending", Some(500.0), Some("job/j")));
        let mut s = sample(4_000);
        s.lag.insert("job/j".into(), 500.0);
        e.push(s);
        assert_eq!(state(&e, "consumer_lag").state, "firing");
        let mut s = sample(5_000);
        s.lag.insert("job/j".into(), 0.0);
        e.push(s);
        assert_eq!(state(&e, "consumer_lag").state, "ok");
    }

    #[test]
    fn error_rate_is_errors_per_ingested_event_over_the_window() {
        let mut e = AlertEngine::new(AlertsConfig { for_: sluice_config::HumanDuration(Duration::ZERO), ..cfg() });
        let mut s = sample(0);
        s.ingest_events.insert("t".into(), 1000.0);
        s.errors = 5.0;
        e.push(s);
        assert_eq!(state(&e, "error_rate").value, None, "one sample has no increase");
        let mut s = sample(1_000);
        s.ingest_events.insert("t".into(), 2000.0);
        s.errors = 7.0;
        e.push(s);
        let st = state(&e, "error_rate");
        assert_eq!((st.value, st.state), (Some(0.002), "firing"));
        // The window moves past the errors: ok again.
        for t in 2..14 {
            let mut s = sample(t * 1_000);
            s.ingest_events.insert("t".into(), 2000.0 + t as f64 * 100_000.0);
            s.errors = 7.0;
            e.push(s);
        }
        assert_eq!(state(&e, "error_rate").state, "ok");
        assert_eq!(state(&e, "error_rate").value, Some(0.0));
    }

    #[test]
    fn disk_uses_the_df_ratio() {
        let mut e = AlertEngine::new(AlertsConfig { for_: sluice_config::HumanDuration(Duration::ZERO), ..cfg() });
        let mut s = sample(0);
        s.fs = Some(FsStats { size_bytes: 1000, free_bytes: 100, used_bytes: 850 });
        e.push(s);
        let st = state(&e, "disk_usage");
        assert_eq!(st.state, "firing");
        assert!((st.value.unwrap() - 850.0 / 950.0).abs() < 1e-12);
    }

    #[test]
    fn statvfs_and_walk_measure_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("log")).unwrap();
        std::fs::write(dir.path().join("log").join("a"), vec![0u8; 1000]).unwrap();
        std::fs::write(dir.path().join("loose"), vec![0u8; 10]).unwrap();
        let areas = dir_bytes(dir.path());
        assert_eq!(areas.get("log"), Some(&1000));
        assert_eq!(areas.get("other"), Some(&10));
        let fs = fs_stats(dir.path()).unwrap();
        assert!(fs.size_bytes > 0 && fs.used_ratio() > 0.0 && fs.used_ratio() <= 1.0, "{fs:?}");
    }

    #[test]
    fn requests_walk_again_once_the_last_walk_is_old_for_its_cost() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("log")).unwrap();
        let m = Monitor::new(cfg());
        assert!(m.disk().is_none());
        let first = m.current_disk(dir.path());
        assert_eq!(first.areas.get("log"), Some(&0), "no walk yet: the first request walks");
        std::fs::write(dir.path().join("log").join("a"), vec![0u8; 1000]).unwrap();
        std::thread::sleep(first.took * ON_DEMAND_WALK_SPACING + Duration::from_millis(1));
        let second = m.current_disk(dir.path());
        assert_eq!(second.areas.get("log"), Some(&1000), "a cheap walk is redone");
        assert!(second.at > first.at);
        // A walk that took long is kept until as many times its duration has passed.
        let slow = DiskScan { areas: BTreeMap::new(), at: Instant::now(), took: Duration::from_secs(60) };
        *m.disk.lock() = Some(slow.clone());
        let kept = m.current_disk(dir.path());
        assert_eq!((kept.at, kept.areas.get("log")), (slow.at, None));
    }
}
