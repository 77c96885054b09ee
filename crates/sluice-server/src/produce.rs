//! The produce path every listener shares (the `/v1` API and the REST Proxy today; the Kafka listener next):
//! which topics may be written, the topic itself (created on first use when allowed), and appending a request's
//! events, partitioned as Kafka partitions them, acknowledged only once durable. Parsing the request and shaping
//! the answer stay in each listener.

use std::sync::Arc;

use axum::http::StatusCode;
use sluice_log::{LogError, LogStore, Record, TopicInfo, TopicSpec, partitioner};
use tracing::Instrument;

use crate::error::ApiError;
use crate::{AppState, metrics};

type ApiResult<T> = Result<T, ApiError>;

/// Internal topics (`_schemas`, ...) are written by Sluice only.
pub(crate) fn ensure_not_internal(topic: &str) -> ApiResult<()> {
    if topic.starts_with('_') {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "internal_topic",
            format!("topic `{topic}` is internal to sluice and cannot be written or deleted over the API"),
        ));
    }
    Ok(())
}

/// The topic, created on first use when `log.auto_create_topics` is set.
pub(crate) async fn resolve_topic(state: &AppState, topic: &str) -> ApiResult<TopicInfo> {
    let log = state.log()?;
    match log.topic(topic).await {
        Ok(info) => Ok(info),
        Err(LogError::TopicNotFound(_)) if state.auto_create_topics => {
            match log.create_topic(TopicSpec::new(topic, state.default_partitions)).await {
                Ok(info) => Ok(info),
                Err(LogError::TopicExists(_)) => Ok(log.topic(topic).await?),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Where each event of a request ended up.
pub(crate) struct Outcome {
    pub results: Vec<Result<(u32, u64), ApiError>>,
    /// The first storage failure, which decides the response status.
    pub storage_error: Option<ApiError>,
}

/// Partitions the accepted events (explicit partition, else Kafka's murmur2 of the key, else round-robin),
/// appends each partition's share as one batch, all partitions concurrently, and waits until all are durable.
pub(crate) async fn append_events(
    state: &AppState,
    info: &TopicInfo,
    items: Vec<Result<(Record, Option<u32>), ApiError>>,
) -> ApiResult<Outcome> {
    let log = state.log()?;
    let n = info.partitions;
    let keyless = items.iter().filter(|i| matches!(i, Ok((r, None)) if r.key.is_none())).count() as u64;
    let mut rr = state.next_round_robin(keyless);
    let mut groups: Vec<(Vec<usize>, Vec<Record>)> = (0..n).map(|_| (Vec::new(), Vec::new())).collect();
    // `None` until the event's partition has answered.
    let mut results: Vec<Option<Result<(u32, u64), ApiError>>> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        match item {
            Err(e) => results.push(Some(Err(e))),
            Ok((record, partition)) => {
                let p = match (partition, &record.key) {
                    (Some(p), _) if p >= n => {
                        results.push(Some(Err(ApiError::not_found(
                            "partition_not_found",
                            format!("event {i}: partition {p} not found: topic `{}` has {n} partitions", info.name),
                        ))));
                        continue;
                    }
                    (Some(p), _) => p,
                    (None, Some(k)) => partitioner::partition_for_key(k, n),
                    (None, None) => {
                        rr += 1;
                        ((rr - 1) % n as u64) as u32
                    }
                };
                results.push(None);
                groups[p as usize].0.push(i);
                groups[p as usize].1.push(record);
            }
        }
    }
    let appends = groups.into_iter().enumerate().filter(|(_, (idx, _))| !idx.is_empty()).map(|(p, (idx, recs))| {
        let log: &Arc<dyn LogStore> = log;
        let span = tracing::info_span!("log.append", topic = %info.name, partition = p, records = recs.len());
        async move { (p as u32, idx, log.append(&info.name, p as u32, recs).await) }.instrument(span)
    });
    let mut storage_error = None;
    let mut accepted = 0u64;
    for (p, idx, result) in futures::future::join_all(appends).await {
        match result {
            Ok(ack) => {
                accepted += idx.len() as u64;
                for (k, i) in idx.into_iter().enumerate() {
                    results[i] = Some(Ok((p, ack.base_offset + k as u64)));
                }
            }
            Err(e) => {
                metrics::INGEST_REJECTED.with_label_values(&[info.name.as_str(), e.code()]).inc_by(idx.len() as u64);
                sluice_telemetry::record_error("ingest", e.code(), idx.len() as u64, &info.name, &e);
                let err = ApiError::from(e);
                for i in idx {
                    results[i] = Some(Err(err.clone()));
                }
                storage_error.get_or_insert(err);
            }
        }
    }
    metrics::INGEST_EVENTS.with_label_values(&[&info.name]).inc_by(accepted);
    let results = results.into_iter().map(|r| r.expect("every accepted event was in one partition's batch")).collect();
    Ok(Outcome { results, storage_error })
}
