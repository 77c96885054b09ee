//! Schema-bound topics on the ingest and read paths.
//!
//! A topic is bound when its value subject `{topic}-value` (Confluent's TopicNameStrategy) has a live version.
//! JSON posted to a bound topic is validated against the subject's latest schema (or the version or id the
//! request names) and stored as Confluent-framed Avro; readers decode any stored version into the latest
//! schema. Encoders are compiled once per schema id and cached; nothing here calls the registry per event.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::StatusCode;
use parking_lot::RwLock;
use sluice_avro::{Encoder, wire};
use sluice_log::LogStore;
use sluice_schema::reader::{DeadLetters, ValueDecoder, value_subject};
use sluice_schema::{RegisteredSchema, Registry};

use crate::error::ApiError;

/// Which schema a request's JSON is encoded with.
#[derive(Debug, Clone, Copy, Default)]
pub enum SchemaPick {
    #[default]
    Latest,
    Version(u32),
    Id(u32),
}

/// The schema a request's events are encoded with, and its compiled encoder.
pub struct Binding {
    pub schema: Arc<RegisteredSchema>,
    pub encoder: Arc<Encoder>,
}

impl Binding {
    /// Appends the framed Avro of one JSON value to `out`; the error names the field.
    pub fn encode(&self, json: &[u8], out: &mut Vec<u8>) -> Result<(), sluice_avro::EncodeError> {
        let start = out.len();
        wire::frame(self.schema.id, &[], out);
        self.encoder.encode_json(json, out).inspect_err(|_| out.truncate(start))
    }
}

/// The registry with the codec caches built on it.
pub struct Codecs {
    pub registry: Arc<Registry>,
    pub values: ValueDecoder,
    pub dead_letters: DeadLetters,
    encoders: RwLock<HashMap<u32, Arc<Encoder>>>,
}

impl Codecs {
    pub fn new(registry: Arc<Registry>, log: Arc<dyn LogStore>) -> Self {
        Codecs {
            values: ValueDecoder::new(registry.clone()),
            dead_letters: DeadLetters::new(log),
            registry,
            encoders: RwLock::new(HashMap::new()),
        }
    }

    /// The binding of `topic`, or `None` when the topic has no value schema and the request named none.
    ///
    /// A named version or id must be readable into the subject's latest schema, so that readers can decode
    /// what it writes.
    pub fn binding(&self, topic: &str, pick: SchemaPick) -> Result<Option<Binding>, ApiError> {
        let subject = value_subject(topic);
        let latest = self.registry.latest(&subject);
        let schema = match pick {
            SchemaPick::Latest => match &latest {
                Some(s) => s.clone(),
                None => return Ok(None),
            },
            SchemaPick::Version(v) => self.registry.version(&subject, v).ok_or_else(|| {
                ApiError::not_found("schema_not_found", format!("subject `{subject}` has no version {v}"))
            })?,
            SchemaPick::Id(id) => self.schema_by_id(id)?,
        };
        if let Some(latest) = latest.filter(|l| l.id != schema.id) {
            self.values.check_readable(schema.id, &latest).map_err(|e| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "schema_not_readable",
                    format!("schema id {} cannot be read as the latest `{subject}` (id {}): {e}", schema.id, latest.id),
                )
            })?;
        }
        Ok(Some(Binding { encoder: self.encoder(&schema)?, schema }))
    }

    pub fn schema_by_id(&self, id: u32) -> Result<Arc<RegisteredSchema>, ApiError> {
        self.registry
            .schema_by_id(id)
            .ok_or_else(|| ApiError::not_found("schema_not_found", format!("schema id {id} is not in the registry")))
    }

    pub fn encoder(&self, schema: &Arc<RegisteredSchema>) -> Result<Arc<Encoder>, ApiError> {
        if let Some(e) = self.encoders.read().get(&schema.id) {
            return Ok(e.clone());
        }
        let encoder = Encoder::new(&schema.schema).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_schema",
                format!("schema id {} cannot encode JSON: {e}", schema.id),
            )
        })?;
        let encoder = Arc::new(encoder);
        self.encoders.write().insert(schema.id, encoder.clone());
        Ok(encoder)
    }
}
