//! The embedded time-series store: tables of time-partitioned Apache Parquet chunks, queried with SQL through
//! Apache DataFusion (the TimescaleDB part of the pipeline).
//!
//! Main types:
//! - storage: [`store::Store`] (every table of a data directory, background maintenance), [`table::Table`] (a
//!   buffer of recent rows in front of Parquet files, tied together by the [`manifest`]), [`rows::RowsBuilder`]
//!   (JSON events and job results to typed columns, like Elasticsearch's dynamic mapping);
//! - queries: [`query::QueryEngine`] (DataFusion on its own runtime, read-only, with a timeout and a memory
//!   limit), [`provider::SnapshotTable`] (a table as a DataFusion source, pruned by time), [`udf`] (`time_bucket`);
//! - the pipeline side: [`sink::TableSink`] (the sink writer) and [`port::EmbeddedStore`] (the
//!   `sluice_sink::store::TimeSeriesStore` adapter that starts one sink per topic and job).
//!
//! [`snapshot::TableSnapshot`] is the contract between storage and queries.

pub mod bench;
pub mod metrics;
pub mod port;
pub mod sink;
pub mod snapshot;

// Storage engine.
pub mod error;
pub mod manifest;
pub mod rows;
pub mod store;
pub mod table;

// Query layer.
pub mod provider;
pub mod query;
pub mod udf;
