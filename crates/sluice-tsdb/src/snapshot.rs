//! What the storage engine hands the query layer: a consistent, cheap view of one table.

use std::path::PathBuf;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};

/// The type of every time column (`event_time`, `ingest_time`, `window_start`, detected timestamps).
pub fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// One table as of one instant: its committed files plus the rows still buffered in memory.
#[derive(Debug, Clone)]
pub struct TableSnapshot {
    pub name: String,
    /// The current table schema: a superset of every file's and buffered batch's schema. A column missing from
    /// a file or batch reads as null; a column stored as Int64 where the schema says Float64 is cast.
    pub schema: SchemaRef,
    /// The column chunks are partitioned by; always of [`time_type`].
    pub time_column: String,
    /// Committed Parquet files, sorted by `(chunk_start, path)`.
    pub files: Vec<FileRef>,
    /// Visible in-memory rows.
    pub buffered: Vec<RecordBatch>,
}

/// One committed Parquet file of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    pub path: PathBuf,
    pub size: u64,
    pub rows: u64,
    /// Start of the chunk the file belongs to (ms since the epoch).
    pub chunk_start: i64,
    /// Smallest and largest value of the time column in the file, inclusive (ms since the epoch).
    pub min_time: i64,
    pub max_time: i64,
}

/// Reshapes `batch` to `schema`: columns in schema order, missing ones as nulls, differing types cast (the only
/// widening tables allow is Int64 -> Float64).
pub fn adapt_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, arrow::error::ArrowError> {
    if batch.schema().as_ref() == schema.as_ref() {
        return Ok(batch.clone());
    }
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(col) if col.data_type() == field.data_type() => Ok(col.clone()),
            Some(col) => arrow::compute::cast(col, field.data_type()),
            None => Ok(arrow::array::new_null_array(field.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(schema.clone(), columns, &options)
}
