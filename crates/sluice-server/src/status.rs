//! `GET /v1/alerts` (the four in-process alerts) and `GET /v1/status` (the one screen of `sluice status`): rates,
//! lag, watermark delay, the slowest stage, backpressure, alerts, the last errors and disk usage, all computed
//! from the samples of [`crate::alerts`] so that they agree with each other and with `/metrics`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;

use crate::AppState;
use crate::alerts::{AlertState, Monitor, Sample};
use crate::error::ApiError;

/// Rates in the status are over the last this long (or what has been sampled).
const RATE_SPAN: Duration = Duration::from_secs(30);

/// Share of wall time a job's source tasks waited on a full next stage above which backpressure is "active".
const BACKPRESSURE_ACTIVE: f64 = 0.05;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/alerts", get(alerts)).route("/v1/status", get(status))
}

async fn alerts(State(state): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    let alerts: Vec<AlertState> = state.monitor.engine.lock().alerts();
    Ok(Json(json!({ "alerts": alerts })))
}

#[derive(Serialize)]
struct TopicStatus {
    topic: String,
    events_per_second: f64,
    bytes_per_second: f64,
    events_total: f64,
}

#[derive(Serialize)]
struct JobStatus {
    job: String,
    running: bool,
    lag: f64,
    records_per_second: f64,
    watermark_delay_seconds: Option<f64>,
    checkpoint_age_seconds: Option<f64>,
    /// Share of wall time the job waited on a full next stage.
    backpressure: f64,
    backpressure_active: bool,
}

#[derive(Serialize)]
struct SinkStatus {
    sink: String,
    topic: String,
    lag: f64,
    records_per_second: f64,
}

#[derive(Serialize)]
struct StageStatus {
    stage: String,
    /// Mean seconds per batch.
    mean_seconds: f64,
    /// Seconds spent per second of wall time (1.0 = one core's worth, busy all the time).
    busy: f64,
    batches_per_second: f64,
}

#[derive(Serialize)]
struct DiskStatus {
    data_dir: String,
    data_dir_bytes: Option<u64>,
    areas: Option<BTreeMap<String, u64>>,
    filesystem: Option<crate::alerts::FsStats>,
    used_ratio: Option<f64>,
}

fn rate(now: f64, before: Option<f64>, secs: f64) -> f64 {
    match before {
        Some(b) if secs > 0.0 => (if now >= b { now - b } else { now }) / secs,
        _ => 0.0,
    }
}

/// The status document of one instant, from the newest sample and one up to [`RATE_SPAN`] older.
fn compute(latest: &Sample, before: Option<&Sample>, alerts: Vec<AlertState>, disk: DiskStatus) -> serde_json::Value {
    let secs = before.map_or(0.0, |b| {
        let ms = (latest.at_ms - b.at_ms).max(0) as f64 / 1000.0;
        match (latest.at, b.at) {
            (Some(a), Some(o)) => a.saturating_duration_since(o).as_secs_f64(),
            _ => ms,
        }
    });
    let topics: Vec<TopicStatus> = latest
        .ingest_events
        .iter()
        .map(|(t, &n)| TopicStatus {
            topic: t.clone(),
            events_per_second: rate(n, before.map(|b| b.ingest_events.get(t).copied().unwrap_or(0.0)), secs),
            bytes_per_second: rate(
                latest.ingest_bytes.get(t).copied().unwrap_or(0.0),
                before.map(|b| b.ingest_bytes.get(t).copied().unwrap_or(0.0)),
                secs,
            ),
            events_total: n,
        })
        .collect();
    let mut job_names: Vec<&String> = latest.job_running.keys().chain(latest.job_records_in.keys()).collect();
    job_names.sort();
    job_names.dedup();
    let jobs: Vec<JobStatus> = job_names
        .into_iter()
        .map(|j| {
            let bp = rate(
                latest.job_backpressure_seconds.get(j).copied().unwrap_or(0.0),
                before.map(|b| b.job_backpressure_seconds.get(j).copied().unwrap_or(0.0)),
                secs,
            );
            JobStatus {
                job: j.clone(),
                running: latest.job_running.get(j).is_some_and(|r| *r > 0.0),
                lag: latest.lag.get(&format!("job/{j}")).copied().unwrap_or(0.0),
                records_per_second: rate(
                    latest.job_records_in.get(j).copied().unwrap_or(0.0),
                    before.map(|b| b.job_records_in.get(j).copied().unwrap_or(0.0)),
                    secs,
                ),
                watermark_delay_seconds: latest.job_watermark_delay.get(j).copied(),
                checkpoint_age_seconds: latest.job_checkpoint_age.get(j).copied(),
                backpressure: bp,
                backpressure_active: bp >= BACKPRESSURE_ACTIVE,
            }
        })
        .collect();
    let sinks: Vec<SinkStatus> = latest
        .sink_records
        .iter()
        .map(|(k, &n)| {
            let (sink, topic) = k.split_once('/').unwrap_or((k.as_str(), ""));
            SinkStatus {
                sink: sink.to_string(),
                topic: topic.to_string(),
                lag: latest.lag.get(&format!("sink/{k}")).copied().unwrap_or(0.0),
                records_per_second: rate(n, before.map(|b| b.sink_records.get(k).copied().unwrap_or(0.0)), secs),
            }
        })
        .collect();
    let mut stages: Vec<StageStatus> = latest
        .stage_time
        .iter()
        .filter_map(|(stage, &(sum, count))| {
            let (bsum, bcount) = before.and_then(|b| b.stage_time.get(stage).copied()).unwrap_or((0.0, 0.0));
            let (dsum, dcount) = if count >= bcount { (sum - bsum, count - bcount) } else { (sum, count) };
            (dcount > 0.0 && secs > 0.0).then(|| StageStatus {
                stage: stage.clone(),
                mean_seconds: dsum / dcount,
                busy: dsum / secs,
                batches_per_second: dcount / secs,
            })
        })
        .collect();
    // The bottleneck is the stage busy the most of the time; the mean per batch breaks ties.
    stages.sort_by(|a, b| b.busy.total_cmp(&a.busy).then(b.mean_seconds.total_cmp(&a.mean_seconds)));
    let slowest = stages.first().map(|s| s.stage.clone());
    let backpressure_active = jobs.iter().any(|j| j.backpressure_active);
    json!({
        "at": crate::http::format_time(latest.at_ms),
        "rate_span_seconds": secs,
        "topics": topics,
        "jobs": jobs,
        "sinks": sinks,
        "slowest_stage": slowest,
        "stages": stages,
        "backpressure_active": backpressure_active,
        "alerts": alerts,
        "recent_errors": sluice_telemetry::recent_errors(),
        "disk": disk,
    })
}

async fn status(State(state): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    let m: &Arc<Monitor> = &state.monitor;
    let (span, alerts) = {
        let engine = m.engine.lock();
        (engine.span(RATE_SPAN), engine.alerts())
    };
    let Some((latest, before)) = span else {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "no metrics sampled yet"));
    };
    let (monitor, dir) = (m.clone(), state.data_dir.clone());
    // Walking the directory reads the disk: off the async workers.
    let areas = tokio::task::spawn_blocking(move || monitor.current_disk(&dir).areas).await.ok();
    let disk = DiskStatus {
        data_dir: state.data_dir.display().to_string(),
        data_dir_bytes: areas.as_ref().map(|a| a.values().sum()),
        areas,
        filesystem: latest.fs,
        used_ratio: latest.fs.map(|f| f.used_ratio()),
    };
    Ok(Json(compute(&latest, before.as_deref(), alerts, disk)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_slowest_stage_and_backpressure() {
        let mut before = Sample { at_ms: 0, ..Sample::default() };
        before.ingest_events.insert("t".into(), 100.0);
        before.job_records_in.insert("j".into(), 0.0);
        before.job_backpressure_seconds.insert("j".into(), 0.0);
        before.stage_time.insert("ingest".into(), (1.0, 10.0));
        before.stage_time.insert("job j merge".into(), (0.0, 0.0));
        let mut latest = Sample { at_ms: 10_000, ..Sample::default() };
        latest.ingest_events.insert("t".into(), 1100.0);
        latest.job_records_in.insert("j".into(), 500.0);
        latest.job_running.insert("j".into(), 1.0);
        latest.job_backpressure_seconds.insert("j".into(), 2.0);
        latest.lag.insert("job/j".into(), 42.0);
        latest.stage_time.insert("ingest".into(), (1.5, 20.0));
        latest.stage_time.insert("job j merge".into(), (5.0, 10.0));
        let disk =
            DiskStatus { data_dir: "d".into(), data_dir_bytes: None, areas: None, filesystem: None, used_ratio: None };
        let v = compute(&latest, Some(&before), Vec::new(), disk);
        assert_eq!(v["topics"][0]["events_per_second"], 100.0);
        assert_eq!(v["jobs"][0]["records_per_second"], 50.0);
        assert_eq!(v["jobs"][0]["lag"], 42.0);
        assert_eq!(v["jobs"][0]["backpressure"], 0.2);
        assert_eq!(v["backpressure_active"], true);
        assert_eq!(v["slowest_stage"], "job j merge");
        assert_eq!(v["stages"][1]["mean_seconds"], 0.05);
    }
}
