//! Schema-aware reading of stored values, shared by every reader of the log (HTTP reads, `sluice tail`, stream
//! jobs, sinks).
//!
//! - [`ValueDecoder`] turns a stored value into JSON: Confluent-framed Avro written with any registered version
//!   is decoded into the reader schema (Avro schema resolution); JSON values pass through as they are.
//!   Decoders are compiled once per (writer id, reader id) and cached.
//! - [`DeadLetters`] sends a value that cannot be decoded to the topic's dead-letter topic `{topic}.dlq`, with
//!   the raw bytes, the source topic/partition/offset and the reason, and counts it; a reader then moves on.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use sluice_avro::{Decoder, wire};
use sluice_log::topics::{self, TopicRole};
use sluice_log::{LogError, LogStore, Record, StoredRecord, TopicSpec};

use crate::metrics;
use crate::registry::{RegisteredSchema, Registry};

/// The subject holding a topic's value schemas (Confluent's TopicNameStrategy).
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// How a stored value is encoded, told by its first byte: JSON text never starts with 0x00.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueFormat {
    Json,
    /// Confluent wire format (magic byte 0).
    Avro,
    /// Anything else (dead-letter payloads, foreign producers).
    Raw,
}

pub fn value_format(value: &[u8]) -> ValueFormat {
    match value.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(0) if value.first() == Some(&0) => ValueFormat::Avro,
        Some(b'{' | b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => ValueFormat::Json,
        _ => ValueFormat::Raw,
    }
}

/// Why a value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeFailure {
    #[error("{0}")]
    Wire(#[from] sluice_avro::WireError),
    #[error("schema id {0} is not in the registry")]
    UnknownSchema(u32),
    #[error("schema id {writer} cannot be read as schema id {reader}: {reason}")]
    Unresolvable { writer: u32, reader: u32, reason: String },
    #[error("avro body does not match schema id {id}: {reason}")]
    Corrupt { id: u32, reason: String },
    #[error("value is not valid JSON")]
    NotDecodable,
}

impl DecodeFailure {
    /// A bounded label for metrics and the dead-letter record.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeFailure::Wire(_) => "bad_framing",
            DecodeFailure::UnknownSchema(_) => "unknown_schema",
            DecodeFailure::Unresolvable { .. } => "unresolvable_schema",
            DecodeFailure::Corrupt { .. } => "corrupt_body",
            DecodeFailure::NotDecodable => "invalid_json",
        }
    }
}

/// What a decoded value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// Stored as JSON; the JSON was copied as is.
    Json,
    /// Stored as Avro with this writer schema id.
    Avro { schema_id: u32 },
}

/// Decodes stored values into JSON of a reader schema. Cheap to share; decoders are cached.
pub struct ValueDecoder {
    registry: Arc<Registry>,
    decoders: RwLock<HashMap<(u32, u32), Arc<Decoder>>>,
}

impl ValueDecoder {
    pub fn new(registry: Arc<Registry>) -> Self {
        ValueDecoder { registry, decoders: RwLock::new(HashMap::new()) }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The reader schema of `topic`: the latest version of its value subject, if it has one.
    pub fn reader_schema(&self, topic: &str) -> Option<Arc<RegisteredSchema>> {
        self.registry.latest(&value_subject(topic))
    }

    /// Appends the JSON of `value` to `out`. Avro is read into `reader` (or into its own writer schema when
    /// there is no reader schema). On error `out` is left as it was.
    pub fn decode(
        &self,
        value: &[u8],
        reader: Option<&RegisteredSchema>,
        out: &mut Vec<u8>,
    ) -> Result<Decoded, DecodeFailure> {
        if value_format(value) == ValueFormat::Json {
            // Stored JSON was checked at ingest; check again so a reader never passes on garbage.
            serde_json::from_slice::<serde::de::IgnoredAny>(value).map_err(|_| DecodeFailure::NotDecodable)?;
            out.extend_from_slice(value);
            return Ok(Decoded::Json);
        }
        self.decode_avro(value, reader, out).map(|schema_id| Decoded::Avro { schema_id })
    }

    /// Like [`ValueDecoder::decode`] for a value that must be Confluent-framed Avro; returns the writer id.
    pub fn decode_avro(
        &self,
        value: &[u8],
        reader: Option<&RegisteredSchema>,
        out: &mut Vec<u8>,
    ) -> Result<u32, DecodeFailure> {
        let (id, body) = wire::parse(value)?;
        let decoder = self.decoder(id, reader)?;
        let start = out.len();
        decoder.decode_to_json(body, out).map_err(|e| {
            out.truncate(start);
            DecodeFailure::Corrupt { id, reason: e.to_string() }
        })?;
        Ok(id)
    }

    /// Checks that data written with `writer_id` can be read into `reader` (compiling and caching the decoder).
    pub fn check_readable(&self, writer_id: u32, reader: &RegisteredSchema) -> Result<(), DecodeFailure> {
        self.decoder(writer_id, Some(reader)).map(|_| ())
    }

    fn decoder(&self, writer_id: u32, reader: Option<&RegisteredSchema>) -> Result<Arc<Decoder>, DecodeFailure> {
        let reader_id = reader.map_or(writer_id, |r| r.id);
        if let Some(d) = self.decoders.read().get(&(writer_id, reader_id)) {
            return Ok(d.clone());
        }
        let writer = self.registry.schema_by_id(writer_id).ok_or(DecodeFailure::UnknownSchema(writer_id))?;
        let reader_schema = reader.map_or(&writer.schema, |r| &r.schema);
        let decoder = Decoder::new(&writer.schema, reader_schema).map_err(|e| DecodeFailure::Unresolvable {
            writer: writer_id,
            reader: reader_id,
            reason: e.to_string(),
        })?;
        let decoder = Arc::new(decoder);
        self.decoders.write().insert((writer_id, reader_id), decoder.clone());
        Ok(decoder)
    }
}

/// How many recently dead-lettered records are remembered, so a reader that reads the same bad record again
/// (an HTTP client re-reading, a job replaying) does not dead-letter it twice in one process lifetime (two
/// concurrent first reads of the same record can still both send it; the key tells the copies apart).
const REMEMBERED: usize = 100_000;

/// Sends undecodable records to `{topic}.dlq`.
///
/// A dead-letter record keeps the raw value and the original key and timestamp, with headers
/// `sluice.dlq.topic`, `sluice.dlq.partition`, `sluice.dlq.offset`, `sluice.dlq.reason` and `sluice.dlq.code`;
/// its key is `topic/partition/offset`, so consumers of the dead-letter topic can drop the rare duplicate that a
/// restart between a reader's retries can cause.
pub struct DeadLetters {
    log: Arc<dyn LogStore>,
    recent: Mutex<Recent>,
}

/// Source coordinates of a record: topic, partition, offset.
type Coordinates = (String, u32, u64);

/// The last [`REMEMBERED`] dead-lettered records: a set to look up, a queue to forget the oldest.
#[derive(Default)]
struct Recent {
    seen: HashSet<Coordinates>,
    order: VecDeque<Coordinates>,
}

impl DeadLetters {
    pub fn new(log: Arc<dyn LogStore>) -> Self {
        DeadLetters { log, recent: Mutex::new(Recent::default()) }
    }

    /// Dead-letters the undecodable records of one read of `topic`/`partition` as one batch (records already
    /// dead-lettered by this process are left out). The dead-letter topic is created with one partition when
    /// missing; dead-letter topics themselves are never dead-lettered. The append runs in its own task, so a
    /// caller that goes away (a disconnected HTTP client) cannot cut it short; records count as sent only once
    /// it succeeded. Returns how many were written.
    pub async fn send(
        &self,
        topic: &str,
        partition: u32,
        failed: Vec<(StoredRecord, DecodeFailure)>,
    ) -> Result<usize, LogError> {
        if matches!(topics::role(topic), TopicRole::DeadLetters { .. }) || failed.is_empty() {
            return Ok(0);
        }
        let fresh: Vec<(StoredRecord, DecodeFailure)> = {
            let recent = self.recent.lock();
            failed
                .into_iter()
                .filter(|(r, _)| !recent.seen.contains(&(topic.to_string(), partition, r.offset)))
                .collect()
        };
        if fresh.is_empty() {
            return Ok(0);
        }
        let h = |k: &str, v: String| (k.to_string(), Bytes::from(v));
        let dead: Vec<Record> = fresh
            .iter()
            .map(|(r, failure)| Record {
                timestamp: r.timestamp,
                key: Some(Bytes::from(format!("{topic}/{partition}/{}", r.offset))),
                headers: vec![
                    h("sluice.dlq.topic", topic.to_string()),
                    h("sluice.dlq.partition", partition.to_string()),
                    h("sluice.dlq.offset", r.offset.to_string()),
                    h("sluice.dlq.code", failure.code().to_string()),
                    h("sluice.dlq.reason", failure.to_string()),
                ],
                value: r.value.clone(),
            })
            .collect();
        let (log, dlq) = (self.log.clone(), topics::dead_letters(topic));
        let task = tokio::spawn(async move {
            match log.topic(&dlq).await {
                Ok(_) => {}
                Err(LogError::TopicNotFound(_)) => match log.create_topic(TopicSpec::new(&dlq, 1)).await {
                    Ok(_) | Err(LogError::TopicExists(_)) => {}
                    Err(e) => return Err(e),
                },
                Err(e) => return Err(e),
            }
            log.append(&dlq, 0, dead).await
        });
        task.await.map_err(|_| LogError::Closed)??;
        let mut recent = self.recent.lock();
        for (r, failure) in &fresh {
            metrics::DEAD_LETTERS.with_label_values(&[failure.code()]).inc();
            tracing::warn!(topic, partition, offset = r.offset, reason = %failure, "record sent to the dead-letter topic");
            let id = (topic.to_string(), partition, r.offset);
            if recent.seen.insert(id.clone()) {
                recent.order.push_back(id);
            }
        }
        while recent.order.len() > REMEMBERED {
            if let Some(old) = recent.order.pop_front() {
                recent.seen.remove(&old);
            }
        }
        Ok(fresh.len())
    }
}

/// The leaf fields of a record schema, as the store's columns and the search index's fields are derived from it:
/// nested records become dotted paths, a union of null and one type is that type, and any other schema (arrays,
/// maps, wider unions, scalars) is a leaf as it is. Null fields are left out.
pub fn flatten_fields(schema: &apache_avro::Schema) -> Vec<(String, &apache_avro::Schema)> {
    fn walk<'a>(prefix: &str, s: &'a apache_avro::Schema, out: &mut Vec<(String, &'a apache_avro::Schema)>) {
        use apache_avro::Schema as S;
        match s {
            S::Record(r) => {
                for f in &r.fields {
                    let name = if prefix.is_empty() { f.name.clone() } else { format!("{prefix}.{}", f.name) };
                    walk(&name, &f.schema, out);
                }
            }
            S::Union(u) => {
                let non_null: Vec<&S> = u.variants().iter().filter(|v| !matches!(v, S::Null)).collect();
                match non_null.as_slice() {
                    [one] => walk(prefix, one, out),
                    _ if !prefix.is_empty() => out.push((prefix.to_string(), s)),
                    _ => {}
                }
            }
            S::Null => {}
            _ if !prefix.is_empty() => out.push((prefix.to_string(), s)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", schema, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_apart_by_the_first_byte() {
        assert_eq!(value_format(b"{\"a\":1}"), ValueFormat::Json);
        assert_eq!(value_format(b" [1]"), ValueFormat::Json);
        assert_eq!(value_format(b"\"s\""), ValueFormat::Json);
        assert_eq!(value_format(&[0, 0, 0, 0, 1, 2]), ValueFormat::Avro);
        assert_eq!(value_format(&[7, 1, 2]), ValueFormat::Raw);
        assert_eq!(value_format(b""), ValueFormat::Raw);
    }
}
