//! The store's sink writers: raw events of a topic into its table, and a windowed job's changelog into its results
//! table. Both hand the shared runner's batches to [`Table::write`] with the batch's next offsets, which the table
//! commits together with the rows at flush: that is the whole exactly-once story (see ADR 0007).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use sluice_jobs::changelog::{self, ResultKind};
use sluice_schema::reader::{ValueDecoder, ValueFormat, value_format};
use sluice_sink::{SinkBatch, SinkError, SinkWriter, metrics};

use crate::table::Table;

/// What a table is fed from.
#[derive(Clone)]
pub enum Feed {
    /// Raw events of a topic, decoded (any schema version) into the topic's reader schema.
    Raw { decoder: Arc<ValueDecoder> },
    /// The changelog of a windowed job whose group keys have these names: `final` rows are upserted by window and
    /// key, deletions remove them, `partial` rows are skipped (the hot path serves open windows).
    Results { key_names: Arc<Vec<String>> },
}

pub struct TableSink {
    table: Arc<Table>,
    feed: Feed,
}

impl TableSink {
    pub fn new(table: Arc<Table>, feed: Feed) -> Self {
        TableSink { table, feed }
    }
}

fn sink_err(kind: &'static str) -> impl Fn(crate::error::StoreError) -> SinkError {
    move |e| SinkError::new(kind, e.to_string())
}

#[async_trait]
impl SinkWriter for TableSink {
    async fn committed(&mut self) -> Result<BTreeMap<u32, u64>, SinkError> {
        Ok(self.table.committed_offsets())
    }

    async fn write(&mut self, batch: SinkBatch) -> Result<(), SinkError> {
        let table = self.table.clone();
        let feed = self.feed.clone();
        let appended = tokio::task::spawn_blocking(move || -> Result<Vec<i64>, SinkError> {
            let mut rows = table.builder();
            let mut appended = Vec::with_capacity(batch.len());
            match &feed {
                Feed::Raw { decoder } => {
                    let reader = decoder.reader_schema(&batch.topic);
                    let mut buf = Vec::with_capacity(1024);
                    let mut failed = 0u64;
                    for part in &batch.parts {
                        for rec in &part.records {
                            // JSON values go straight to the rows builder, which parses (and so checks) them once.
                            let json = value_format(&rec.value) == ValueFormat::Json;
                            let schema_id = if json {
                                None
                            } else {
                                buf.clear();
                                match decoder.decode_avro(&rec.value, reader.as_deref(), &mut buf) {
                                    Ok(id) => Some(id),
                                    Err(_) => {
                                        failed += 1;
                                        continue;
                                    }
                                }
                            };
                            let value: &[u8] = if json { &rec.value } else { &buf };
                            // A row the store cannot take is skipped and counted, never retried forever.
                            match rows.raw_row(
                                rec.timestamp,
                                rec.append_time,
                                part.partition,
                                rec.offset,
                                rec.key.as_deref(),
                                schema_id,
                                value,
                            ) {
                                Ok(()) => appended.push(rec.append_time),
                                Err(_) => failed += 1,
                            }
                        }
                    }
                    if failed > 0 {
                        crate::metrics::SKIPPED.with_label_values(&[table.name()]).inc_by(failed);
                        tracing::warn!(topic = %batch.topic, records = failed, "store skipped records it cannot decode or store");
                        sluice_telemetry::record_error(
                            "sink",
                            "skipped",
                            failed,
                            &format!("store/{}", batch.topic),
                            &format_args!("{failed} records skipped: they do not decode or fit the table"),
                        );
                    }
                }
                Feed::Results { key_names } => {
                    let names: Vec<&str> = key_names.iter().map(String::as_str).collect();
                    for part in &batch.parts {
                        for rec in &part.records {
                            let row = match ResultKind::of(rec) {
                                Some(ResultKind::Final) => Some(rec.value.as_ref()),
                                Some(ResultKind::Deleted) => None,
                                _ => continue,
                            };
                            let Some((start, end, key)) =
                                rec.key.as_deref().and_then(|k| changelog::identity(&names, k))
                            else {
                                continue;
                            };
                            match rows.result_row(start, end, &key, row) {
                                Ok(()) => appended.push(rec.append_time),
                                Err(e) => {
                                    crate::metrics::SKIPPED.with_label_values(&[table.name()]).inc();
                                    tracing::warn!(topic = %batch.topic, key = %key, error = %e, "store skipped a result row");
                                }
                            }
                        }
                    }
                }
            }
            let outcome = table.write(rows, batch.next_offsets()).map_err(sink_err("io"))?;
            if outcome.conflicts > 0 {
                crate::metrics::CONFLICTS.with_label_values(&[table.name()]).inc_by(outcome.conflicts);
            }
            Ok(appended)
        })
        .await
        .map_err(|e| SinkError::new("internal", format!("store write task failed: {e}")))??;
        metrics::observe_end_to_end("store", appended.into_iter());
        Ok(())
    }

    async fn tick(&mut self) -> Result<(), SinkError> {
        let table = self.table.clone();
        tokio::task::spawn_blocking(move || table.flush_if_older(std::time::Instant::now()))
            .await
            .map_err(|e| SinkError::new("internal", format!("store flush task failed: {e}")))?
            .map(|_| ())
            .map_err(sink_err("io"))
    }

    async fn reset(&mut self) -> Result<(), SinkError> {
        // Waits for a running flush or compaction: off the async workers.
        let table = self.table.clone();
        tokio::task::spawn_blocking(move || table.discard_buffer())
            .await
            .map_err(|e| SinkError::new("internal", format!("store reset task failed: {e}")))
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        let table = self.table.clone();
        tokio::task::spawn_blocking(move || table.flush())
            .await
            .map_err(|e| SinkError::new("internal", format!("store flush task failed: {e}")))?
            .map(|_| ())
            .map_err(sink_err("io"))
    }
}
