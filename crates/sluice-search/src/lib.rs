//! Embedded full-text search over events (the Elasticsearch part of the pipeline), built on tantivy.
//!
//! - [`service::EmbeddedSearch`] is the adapter of the search port ([`sluice_sink::search::SearchService`]): it
//!   keeps one [`index::TopicIndex`] per topic with an index definition, feeds each from the log with a sink
//!   ([`sink::IndexSink`] under the shared sink runner) and answers searches ([`query`]).
//! - [`index::TopicIndex`] is one tantivy index per time partition (a day by default), so retention drops whole
//!   partitions. Each refresh is a commit that carries the topic offsets it covers: exactly-once (ADR 0008).
//! - [`schema`] maps an index definition to a tantivy schema and events to documents, and picks default fields
//!   from an Avro schema or from sample JSON events.

pub mod error;
pub mod index;
mod metrics;
pub mod query;
pub mod schema;
pub mod service;
pub mod sink;

pub use error::SearchError;
pub use service::{EmbeddedSearch, SearchParts};
