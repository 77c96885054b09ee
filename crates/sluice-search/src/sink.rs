//! The indexing sink: decodes a batch of a topic's records (JSON as is, Avro through the registry) into documents
//! and adds them to the topic's index; refreshes (commits) by age.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use sluice_schema::reader::{ValueDecoder, ValueFormat, value_format};
use sluice_sink::{SinkBatch, SinkError, SinkWriter, metrics};

use crate::error::SearchError;
use crate::index::TopicIndex;

/// Ingest times kept per refresh for the end-to-end histogram (beyond this, later ones are not observed).
const MAX_PENDING_TIMES: usize = 1 << 20;
const RETENTION_EVERY: Duration = Duration::from_secs(10);

pub struct IndexSink {
    index: Arc<TopicIndex>,
    decoder: Arc<ValueDecoder>,
    /// Ingest times of records added since the last commit: observed once they are searchable.
    pending: Vec<i64>,
    last_retention: Instant,
}

impl IndexSink {
    pub fn new(index: Arc<TopicIndex>, decoder: Arc<ValueDecoder>) -> Self {
        IndexSink { index, decoder, pending: Vec::new(), last_retention: Instant::now() - RETENTION_EVERY }
    }

    async fn maintain(&mut self, force: bool) -> Result<(), SinkError> {
        let index = self.index.clone();
        let retention = self.last_retention.elapsed() >= RETENTION_EVERY;
        if retention {
            self.last_retention = Instant::now();
        }
        let committed = tokio::task::spawn_blocking(move || -> Result<bool, SearchError> {
            let committed = if force {
                index.commit()?;
                true
            } else {
                index.maybe_commit()?
            };
            if retention {
                index.apply_retention(sluice_log::now_ms())?;
            }
            Ok(committed)
        })
        .await
        .map_err(|e| SinkError::new("internal", format!("index commit task failed: {e}")))?
        .map_err(sink_error)?;
        if committed {
            metrics::observe_end_to_end("search", self.pending.drain(..));
        }
        Ok(())
    }
}

fn sink_error(e: SearchError) -> SinkError {
    SinkError::new(if matches!(e, SearchError::Io { .. }) { "io" } else { "index" }, e.to_string())
}

#[async_trait]
impl SinkWriter for IndexSink {
    async fn committed(&mut self) -> Result<BTreeMap<u32, u64>, SinkError> {
        Ok(self.index.committed_offsets())
    }

    async fn write(&mut self, batch: SinkBatch) -> Result<(), SinkError> {
        let index = self.index.clone();
        let decoder = self.decoder.clone();
        let times = tokio::task::spawn_blocking(move || -> Result<Vec<i64>, SearchError> {
            let reader = decoder.reader_schema(&batch.topic);
            let mut buf = Vec::with_capacity(1024);
            let mut failed = 0u64;
            let mut times = Vec::with_capacity(batch.len());
            let mut docs = Vec::with_capacity(batch.len());
            for part in &batch.parts {
                for rec in &part.records {
                    let raw: &[u8] = if value_format(&rec.value) == ValueFormat::Json {
                        &rec.value
                    } else {
                        buf.clear();
                        if decoder.decode_avro(&rec.value, reader.as_deref(), &mut buf).is_err() {
                            failed += 1;
                            continue;
                        }
                        &buf
                    };
                    let Ok(value) = serde_json::from_slice::<Value>(raw) else {
                        failed += 1;
                        continue;
                    };
                    let doc = index.schema.document(
                        rec.timestamp,
                        part.partition,
                        rec.offset,
                        rec.key.as_deref(),
                        &value,
                        raw,
                    );
                    docs.push((part.partition, rec.offset, rec.timestamp, doc));
                    times.push(rec.append_time);
                }
            }
            if failed > 0 {
                crate::metrics::SKIPPED.with_label_values(&[&batch.topic]).inc_by(failed);
                tracing::warn!(topic = %batch.topic, records = failed, "search skipped records it cannot decode");
            }
            index.add(docs, &batch.next_offsets())?;
            Ok(times)
        })
        .await
        .map_err(|e| SinkError::new("internal", format!("index write task failed: {e}")))?
        .map_err(sink_error)?;
        let room = MAX_PENDING_TIMES.saturating_sub(self.pending.len());
        self.pending.extend(times.into_iter().take(room));
        self.maintain(false).await
    }

    async fn tick(&mut self) -> Result<(), SinkError> {
        self.maintain(false).await
    }

    async fn reset(&mut self) -> Result<(), SinkError> {
        self.pending.clear();
        let index = self.index.clone();
        tokio::task::spawn_blocking(move || index.reset())
            .await
            .map_err(|e| SinkError::new("internal", format!("index reset task failed: {e}")))?
            .map_err(sink_error)
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        self.maintain(true).await
    }
}
