//! The schema registry of Sluice: Confluent Schema Registry semantics (subjects, versions, global ids,
//! compatibility levels, soft and hard deletes) for Avro schemas, durable in Sluice's own log.
//!
//! Main items:
//! - [`Registry`]: opens on a [`sluice_log::LogStore`], replays the `_schemas` topic ([`SCHEMAS_TOPIC`]) and
//!   serves reads from memory; every change is appended to that topic before it is applied and acknowledged.
//!   Hot-path reads for ingest: [`Registry::schema_by_id`], [`Registry::latest`], [`Registry::version`], and
//!   [`Registry::subscribe`] to learn when cached encoders are stale.
//! - [`RegisteredSchema`]: a schema with its global id, its text, the parsed `apache_avro::Schema` and its
//!   canonical form; [`SubjectVersion`] is one version of a subject; [`VersionRef`] names a version (`latest`).
//! - [`CompatibilityLevel`] and the [`compat`] module: the Avro reader/writer check ([`compat::can_read`]) and
//!   the levels applied to a subject's history ([`compat::check`]); refusals name the field and why.
//! - [`SchemaError`]: every failure, with [`SchemaError::error_code`] (Confluent's `error_code`) and
//!   [`SchemaError::http_status`] for the REST API (`sluice-server`'s `schema_api`).
//! - [`canonical_form`]: what makes two schema texts the same schema.
//! - [`reader`]: schema-aware reading for every consumer of the log: [`reader::ValueDecoder`] (stored value ->
//!   JSON of a reader schema) and [`reader::DeadLetters`] (undecodable records -> `{topic}.dlq`).

mod avro;
pub mod compat;
mod error;
mod metrics;
pub mod reader;
mod registry;

pub use avro::canonical_form;
pub use compat::CompatibilityLevel;
pub use error::SchemaError;
pub use registry::{
    CompatibilityReport, RegisteredSchema, Registration, Registry, RegistryDump, SCHEMAS_TOPIC, SubjectDump,
    SubjectVersion, VersionRef,
};
