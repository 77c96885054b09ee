//! Turning pipeline rows (JSON values with record metadata, or keyed job results) into Arrow batches, with the
//! dynamic column mapping of the store plan: JSON types pick column types on first sight, nested objects flatten
//! to dotted names, arrays are kept as JSON text, Int64 widens to Float64, and anything that does not fit goes to
//! the catch-all `_extra` column as JSON (and is counted).
//!
//! The JSON is walked with a serde visitor that appends straight into per-column Arrow builders, so a row costs
//! one hash lookup per field and no intermediate `serde_json::Value` tree.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Array, Int64Builder, RecordBatch,
    RecordBatchOptions, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::StoreError;
use crate::manifest::TableKind;
use crate::snapshot::time_type;

/// At most this many columns per table (metadata columns and `_extra` included).
pub const MAX_COLUMNS: usize = 1000;
/// The catch-all column for values that do not fit their column (one JSON object per row).
pub const EXTRA_COLUMN: &str = "_extra";
/// Name of the column a non-object value is stored in.
pub const VALUE_COLUMN: &str = "value";

/// Metadata columns of raw tables, in order; the first four are NOT NULL.
pub const RAW_COLUMNS: [&str; 6] = ["event_time", "ingest_time", "partition", "offset", "key", "schema_id"];
/// Key columns of results tables, in order; all NOT NULL.
pub const RESULT_COLUMNS: [&str; 3] = ["window_start", "window_end", "_key"];

/// The column types the store uses. Declared columns of other Arrow types are mapped onto these
/// ([`ColumnType::from_data_type`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    Boolean,
    Int32,
    Int64,
    Float64,
    Utf8,
    /// `Timestamp(Millisecond, Some("UTC"))`.
    Timestamp,
}

impl ColumnType {
    /// Stable text used in manifests and `TableInfo`.
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::Boolean => "boolean",
            ColumnType::Int32 => "int32",
            ColumnType::Int64 => "int64",
            ColumnType::Float64 => "float64",
            ColumnType::Utf8 => "utf8",
            ColumnType::Timestamp => "timestamp",
        }
    }

    pub fn parse(s: &str) -> Option<ColumnType> {
        Some(match s {
            "boolean" => ColumnType::Boolean,
            "int32" => ColumnType::Int32,
            "int64" => ColumnType::Int64,
            "float64" => ColumnType::Float64,
            "utf8" => ColumnType::Utf8,
            "timestamp" => ColumnType::Timestamp,
            _ => return None,
        })
    }

    pub fn data_type(self) -> DataType {
        match self {
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Int32 => DataType::Int32,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Utf8 => DataType::Utf8,
            ColumnType::Timestamp => time_type(),
        }
    }

    /// The store type for a declared Arrow type: all integers become Int64 (JSON numbers do not carry a width),
    /// floats and decimals Float64, timestamps and dates the UTC millisecond timestamp, everything else Utf8
    /// (the value arrives as JSON; text keeps it whole).
    pub fn from_data_type(dt: &DataType) -> ColumnType {
        match dt {
            DataType::Boolean => ColumnType::Boolean,
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64 => ColumnType::Int64,
            DataType::Float16
            | DataType::Float32
            | DataType::Float64
            | DataType::Decimal32(..)
            | DataType::Decimal64(..)
            | DataType::Decimal128(..)
            | DataType::Decimal256(..) => ColumnType::Float64,
            DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => ColumnType::Timestamp,
            _ => ColumnType::Utf8,
        }
    }
}

/// One column of a table's mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    pub name: String,
    pub ty: ColumnType,
}

/// A table's columns in order, with a name index. Immutable once shared; a change makes a new one with a higher
/// `version`, so a builder can tell whether the table moved on while it was filling.
#[derive(Debug, Clone)]
pub(crate) struct Mapping {
    pub kind: TableKind,
    pub columns: Vec<ColumnDef>,
    pub index: HashMap<String, usize>,
    pub version: u64,
}

impl Mapping {
    /// The metadata columns of `kind` only.
    pub fn new(kind: TableKind) -> Mapping {
        let columns = match kind {
            TableKind::Raw => vec![
                def("event_time", ColumnType::Timestamp),
                def("ingest_time", ColumnType::Timestamp),
                def("partition", ColumnType::Int32),
                def("offset", ColumnType::Int64),
                def("key", ColumnType::Utf8),
                def("schema_id", ColumnType::Int32),
            ],
            TableKind::Results => vec![
                def("window_start", ColumnType::Timestamp),
                def("window_end", ColumnType::Timestamp),
                def("_key", ColumnType::Utf8),
            ],
        };
        Mapping::from_columns(kind, columns, 0)
    }

    pub fn from_columns(kind: TableKind, columns: Vec<ColumnDef>, version: u64) -> Mapping {
        let index = columns.iter().enumerate().map(|(i, c)| (c.name.clone(), i)).collect();
        Mapping { kind, columns, index, version }
    }

    pub fn meta_len(&self) -> usize {
        meta_len(self.kind)
    }

    /// Whether the column at `idx` is NOT NULL.
    pub fn required(&self, idx: usize) -> bool {
        required(self.kind, idx)
    }

    pub fn schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| Field::new(c.name.clone(), c.ty.data_type(), !self.required(i)))
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// Adds declared value columns (names already mapped with [`value_name`]). An existing column keeps its type,
    /// except Int64 which widens to a declared Float64; a clash is left as it is (such values become conflicts).
    /// Returns whether anything changed.
    pub fn add_declared(&mut self, declared: &[(String, DataType)]) -> bool {
        let mut changed = false;
        for (name, dt) in declared {
            let name = value_name(self.kind, name);
            let ty = ColumnType::from_data_type(dt);
            match self.index.get(name.as_ref()) {
                Some(&i) => {
                    if self.columns[i].ty == ColumnType::Int64 && ty == ColumnType::Float64 && i >= self.meta_len() {
                        self.columns[i].ty = ColumnType::Float64;
                        changed = true;
                    } else if self.columns[i].ty != ty {
                        tracing::warn!(column = %name, existing = self.columns[i].ty.as_str(), declared = ty.as_str(),
                            "declared column type differs from the existing one; keeping the existing type");
                    }
                }
                None if self.columns.len() < MAX_COLUMNS - 1 => {
                    self.index.insert(name.to_string(), self.columns.len());
                    self.columns.push(ColumnDef { name: name.into_owned(), ty });
                    changed = true;
                }
                None => tracing::warn!(column = %name, "declared column dropped: table has {MAX_COLUMNS} columns"),
            }
        }
        if changed {
            self.version += 1;
        }
        changed
    }
}

fn def(name: &str, ty: ColumnType) -> ColumnDef {
    ColumnDef { name: name.to_string(), ty }
}

pub(crate) fn meta_len(kind: TableKind) -> usize {
    match kind {
        TableKind::Raw => RAW_COLUMNS.len(),
        TableKind::Results => RESULT_COLUMNS.len(),
    }
}

pub(crate) fn required(kind: TableKind, idx: usize) -> bool {
    match kind {
        TableKind::Raw => idx < 4,
        TableKind::Results => idx < 3,
    }
}

fn is_reserved(kind: TableKind, name: &str) -> bool {
    name == EXTRA_COLUMN
        || match kind {
            TableKind::Raw => RAW_COLUMNS.contains(&name),
            TableKind::Results => RESULT_COLUMNS.contains(&name),
        }
}

/// The column name for value field `name`: itself, or `value.{name}` when it collides with a reserved column.
pub fn value_name(kind: TableKind, name: &str) -> std::borrow::Cow<'_, str> {
    if is_reserved(kind, name) { format!("{VALUE_COLUMN}.{name}").into() } else { name.into() }
}

/// Reads a time from text: RFC 3339 (`T` or space between date and time), a date and time without zone, or a bare
/// date (both taken as UTC); the same forms the stream jobs accept. Sub-millisecond digits are truncated.
pub fn parse_time(s: &str) -> Option<i64> {
    // Cheap shape check first: most strings are not times and chrono's parsers are not free.
    let b = s.as_bytes();
    if b.len() < 10 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    for format in
        ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S%.f%:z"]
    {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    if b.len() == 10 {
        return NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc().timestamp_millis());
    }
    None
}

/// An Arrow builder for one column of a batch under construction.
enum ColBuf {
    Bool(BooleanBuilder),
    I32(Int32Builder),
    I64(Int64Builder),
    F64(Float64Builder),
    Str(StringBuilder),
    Ts(TimestampMillisecondBuilder),
}

impl ColBuf {
    fn new(ty: ColumnType, capacity: usize) -> ColBuf {
        match ty {
            ColumnType::Boolean => ColBuf::Bool(BooleanBuilder::with_capacity(capacity)),
            ColumnType::Int32 => ColBuf::I32(Int32Builder::with_capacity(capacity)),
            ColumnType::Int64 => ColBuf::I64(Int64Builder::with_capacity(capacity)),
            ColumnType::Float64 => ColBuf::F64(Float64Builder::with_capacity(capacity)),
            ColumnType::Utf8 => ColBuf::Str(StringBuilder::with_capacity(capacity, capacity * 8)),
            ColumnType::Timestamp => ColBuf::Ts(TimestampMillisecondBuilder::with_capacity(capacity)),
        }
    }

    fn len(&self) -> usize {
        match self {
            ColBuf::Bool(b) => b.len(),
            ColBuf::I32(b) => b.len(),
            ColBuf::I64(b) => b.len(),
            ColBuf::F64(b) => b.len(),
            ColBuf::Str(b) => b.len(),
            ColBuf::Ts(b) => b.len(),
        }
    }

    fn append_nulls(&mut self, n: usize) {
        match self {
            ColBuf::Bool(b) => b.append_nulls(n),
            ColBuf::I32(b) => b.append_nulls(n),
            ColBuf::I64(b) => b.append_nulls(n),
            ColBuf::F64(b) => b.append_nulls(n),
            ColBuf::Str(b) => b.append_nulls(n),
            ColBuf::Ts(b) => b.append_nulls(n),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColBuf::Bool(b) => Arc::new(b.finish()),
            ColBuf::I32(b) => Arc::new(b.finish()),
            ColBuf::I64(b) => Arc::new(b.finish()),
            ColBuf::F64(b) => Arc::new(b.finish()),
            ColBuf::Str(b) => Arc::new(b.finish()),
            ColBuf::Ts(b) => Arc::new(b.finish().with_timezone("UTC")),
        }
    }
}

/// One JSON leaf on its way into a column.
#[derive(Clone, Copy)]
enum Scalar<'a> {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    /// An array, as JSON text.
    Json(&'a str),
}

impl Scalar<'_> {
    fn to_json(self) -> serde_json::Value {
        match self {
            Scalar::Bool(b) => b.into(),
            Scalar::Int(i) => i.into(),
            Scalar::Float(f) => serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, Into::into),
            Scalar::Str(s) => s.into(),
            Scalar::Json(s) => serde_json::from_str(s).unwrap_or_else(|_| s.into()),
        }
    }

    fn inferred_type(self) -> ColumnType {
        match self {
            Scalar::Bool(_) => ColumnType::Boolean,
            Scalar::Int(_) => ColumnType::Int64,
            Scalar::Float(_) => ColumnType::Float64,
            Scalar::Str(s) if parse_time(s).is_some() => ColumnType::Timestamp,
            Scalar::Str(_) | Scalar::Json(_) => ColumnType::Utf8,
        }
    }
}

/// Rows on their way into one table: obtained from [`crate::table::Table::builder`], filled with
/// [`raw_row`](Self::raw_row) or [`result_row`](Self::result_row), handed back to
/// [`crate::table::Table::write`]. Carries the table's column mapping as of its creation plus whatever the rows
/// added.
pub struct RowsBuilder {
    /// For error messages.
    table: String,
    kind: TableKind,
    base: Arc<Mapping>,
    /// Columns added by these rows (beyond `base`), by name.
    added: HashMap<String, usize>,
    columns: Vec<ColumnDef>,
    /// One builder per column, created when the column first gets a value.
    bufs: Vec<Option<ColBuf>>,
    rows: usize,
    /// Results tables: whether each row is a tombstone.
    tombstones: Vec<bool>,
    conflicts: u64,
    changed: bool,
    /// Scratch: dotted path of the field being read.
    path: String,
    /// Scratch: this row's values that did not fit their column.
    row_extra: Vec<(String, serde_json::Value)>,
    /// Scratch: an array field rendered as JSON text.
    json_text: String,
}

/// The finished rows of a [`RowsBuilder`].
pub(crate) struct Rows {
    pub batch: RecordBatch,
    pub columns: Vec<ColumnDef>,
    pub base_version: u64,
    pub changed: bool,
    pub conflicts: u64,
    pub tombstones: Vec<bool>,
}

const INITIAL_CAPACITY: usize = 1024;

impl RowsBuilder {
    pub(crate) fn new(table: &str, base: Arc<Mapping>) -> RowsBuilder {
        let columns = base.columns.clone();
        let mut bufs: Vec<Option<ColBuf>> = columns.iter().map(|_| None).collect();
        // Metadata columns get a value in every row.
        for (i, buf) in bufs.iter_mut().enumerate().take(base.meta_len()) {
            *buf = Some(ColBuf::new(columns[i].ty, INITIAL_CAPACITY));
        }
        RowsBuilder {
            table: table.to_string(),
            kind: base.kind,
            base,
            added: HashMap::new(),
            columns,
            bufs,
            rows: 0,
            tombstones: Vec::new(),
            conflicts: 0,
            changed: false,
            path: String::new(),
            row_extra: Vec::new(),
            json_text: String::new(),
        }
    }

    /// Rows added so far.
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Values that did not fit their column so far (they went to `_extra`).
    pub fn conflicts(&self) -> u64 {
        self.conflicts
    }

    /// Adds one record of a raw table. `value_json` is the record value as JSON text; a value that is not an
    /// object is stored in the column `value`. On error (invalid JSON) the row is not added.
    #[allow(clippy::too_many_arguments)]
    pub fn raw_row(
        &mut self,
        event_time_ms: i64,
        ingest_time_ms: i64,
        partition: u32,
        offset: u64,
        key: Option<&[u8]>,
        schema_id: Option<u32>,
        value_json: &[u8],
    ) -> Result<(), StoreError> {
        if self.kind != TableKind::Raw {
            return Err(self.wrong_kind(TableKind::Raw));
        }
        let (row, ncols) = (self.rows, self.columns.len());
        if let Err(e) = self.read_value(value_json) {
            self.rollback_row(row, ncols);
            return Err(StoreError::InvalidJson { partition, offset, reason: e.to_string() });
        }
        let [
            Some(ColBuf::Ts(et)),
            Some(ColBuf::Ts(it)),
            Some(ColBuf::I32(p)),
            Some(ColBuf::I64(o)),
            Some(ColBuf::Str(kb)),
            Some(ColBuf::I32(sb)),
        ] = &mut self.bufs[..6]
        else {
            unreachable!("raw metadata columns are created with the builder")
        };
        et.append_value(event_time_ms);
        it.append_value(ingest_time_ms);
        // Partitions and schema ids are small in practice; the Int32 columns follow the plan.
        p.append_value(partition as i32);
        o.append_value(offset as i64);
        match key.map(|k| (k, std::str::from_utf8(k))) {
            Some((_, Ok(text))) => kb.append_value(text),
            // Keys are bytes; the column is text, so invalid UTF-8 is replaced rather than refused.
            Some((k, Err(_))) => kb.append_value(String::from_utf8_lossy(k)),
            None => kb.append_null(),
        }
        sb.append_option(schema_id.map(|s| s as i32));
        self.end_row();
        Ok(())
    }

    /// Adds one row of a results table: the upsert of `(window_start, window_end, key)` with the changelog row
    /// `row_json`, or its deletion when `row_json` is `None`. The row's own `window_start`/`window_end` fields
    /// are the two key columns and are not stored again.
    pub fn result_row(
        &mut self,
        window_start_ms: i64,
        window_end_ms: i64,
        key: &str,
        row_json: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        if self.kind != TableKind::Results {
            return Err(self.wrong_kind(TableKind::Results));
        }
        let (row, ncols) = (self.rows, self.columns.len());
        if let Some(json) = row_json
            && let Err(e) = self.read_value(json)
        {
            self.rollback_row(row, ncols);
            return Err(StoreError::InvalidResultRow { key: key.to_string(), reason: e.to_string() });
        }
        let [Some(ColBuf::Ts(ws)), Some(ColBuf::Ts(we)), Some(ColBuf::Str(k))] = &mut self.bufs[..3] else {
            unreachable!("results key columns are created with the builder")
        };
        ws.append_value(window_start_ms);
        we.append_value(window_end_ms);
        k.append_value(key);
        self.tombstones.push(row_json.is_none());
        self.end_row();
        Ok(())
    }

    fn wrong_kind(&self, expected: TableKind) -> StoreError {
        StoreError::WrongKind { table: self.table.clone(), actual: self.kind.as_str(), expected: expected.as_str() }
    }

    /// Undoes the value columns of a row that failed half way (the metadata columns are appended last).
    fn rollback_row(&mut self, row: usize, ncols: usize) {
        for def in self.columns.drain(ncols..) {
            self.added.remove(&def.name);
        }
        self.bufs.truncate(ncols);
        for buf in self.bufs.iter_mut().flatten() {
            if buf.len() > row {
                // Builders cannot pop; rebuild the column from its first `row` values. Only on invalid input.
                let array = buf.finish();
                let kept = array.slice(0, row);
                *buf = rebuild(&kept);
            }
        }
        self.row_extra.clear();
        self.path.clear();
    }

    fn read_value(&mut self, json: &[u8]) -> Result<(), serde_json::Error> {
        self.path.clear();
        let mut de = serde_json::Deserializer::from_slice(json);
        FieldValue { b: self, top: true }.deserialize(&mut de)?;
        de.end()
    }

    fn end_row(&mut self) {
        if !self.row_extra.is_empty() {
            self.conflicts += self.row_extra.len() as u64;
            let object: serde_json::Map<String, serde_json::Value> = self.row_extra.drain(..).collect();
            let text = serde_json::Value::Object(object).to_string();
            let idx = match self.lookup(EXTRA_COLUMN) {
                Some(i) => i,
                None => self.add_column(EXTRA_COLUMN, ColumnType::Utf8),
            };
            if let Some(ColBuf::Str(b)) = self.buf_at_row(idx) {
                b.append_value(text);
            }
        }
        self.rows += 1;
    }

    fn lookup(&self, name: &str) -> Option<usize> {
        self.base.index.get(name).or_else(|| self.added.get(name)).copied()
    }

    fn add_column(&mut self, name: &str, ty: ColumnType) -> usize {
        let idx = self.columns.len();
        self.columns.push(ColumnDef { name: name.to_string(), ty });
        self.bufs.push(None);
        self.added.insert(name.to_string(), idx);
        self.changed = true;
        idx
    }

    /// The builder of column `idx` padded with nulls up to the current row, or `None` if the column already has
    /// a value in this row (a repeated field: the first one wins).
    fn buf_at_row(&mut self, idx: usize) -> Option<&mut ColBuf> {
        let row = self.rows;
        let ty = self.columns[idx].ty;
        let buf = self.bufs[idx].get_or_insert_with(|| ColBuf::new(ty, INITIAL_CAPACITY.max(row + 1)));
        let len = buf.len();
        if len > row {
            return None;
        }
        if len < row {
            buf.append_nulls(row - len);
        }
        Some(buf)
    }

    /// Stores one leaf value under the field path in `self.path`.
    fn put(&mut self, value: Scalar<'_>) {
        let path = std::mem::take(&mut self.path);
        let name = value_name(self.kind, if path.is_empty() { VALUE_COLUMN } else { &path });
        self.put_named(&name, value);
        drop(name);
        self.path = path;
    }

    fn put_named(&mut self, name: &str, value: Scalar<'_>) {
        let idx = match self.lookup(name) {
            Some(i) => i,
            None => {
                let has_extra = self.lookup(EXTRA_COLUMN).is_some();
                let limit = if has_extra { MAX_COLUMNS } else { MAX_COLUMNS - 1 };
                if self.columns.len() >= limit {
                    self.row_extra.push((name.to_string(), value.to_json()));
                    return;
                }
                self.add_column(name, value.inferred_type())
            }
        };
        let ty = self.columns[idx].ty;
        if ty == ColumnType::Int64 && matches!(value, Scalar::Float(_)) && idx >= meta_len(self.kind) {
            self.widen(idx);
        }
        let ty = self.columns[idx].ty;
        // Parse before borrowing the builder; a failed parse is a conflict like any other mismatch.
        let time = match (ty, value) {
            (ColumnType::Timestamp, Scalar::Str(s)) => match parse_time(s) {
                Some(t) => Some(t),
                None => return self.conflict(idx, name, value),
            },
            _ => None,
        };
        let Some(buf) = self.buf_at_row(idx) else { return };
        match (buf, value) {
            (ColBuf::Bool(b), Scalar::Bool(v)) => b.append_value(v),
            (ColBuf::I64(b), Scalar::Int(v)) => b.append_value(v),
            (ColBuf::F64(b), Scalar::Int(v)) => b.append_value(v as f64),
            (ColBuf::F64(b), Scalar::Float(v)) => b.append_value(v),
            (ColBuf::Str(b), Scalar::Str(v) | Scalar::Json(v)) => b.append_value(v),
            (ColBuf::Ts(b), Scalar::Str(_)) => b.append_option(time),
            (ColBuf::Ts(b), Scalar::Int(v)) => b.append_value(v),
            _ => self.conflict(idx, name, value),
        }
    }

    /// Records a value that does not fit column `idx`, which `buf_at_row` may already have padded to this row:
    /// pad one more null so the column stays aligned.
    fn conflict(&mut self, idx: usize, name: &str, value: Scalar<'_>) {
        let row = self.rows;
        if let Some(buf) = &mut self.bufs[idx]
            && buf.len() == row
        {
            buf.append_nulls(1);
        }
        self.row_extra.push((name.to_string(), value.to_json()));
    }

    /// Int64 -> Float64: the column's type and the values built so far.
    fn widen(&mut self, idx: usize) {
        self.columns[idx].ty = ColumnType::Float64;
        self.changed = true;
        if let Some(ColBuf::I64(b)) = &mut self.bufs[idx] {
            let ints: Int64Array = b.finish();
            let mut floats = Float64Builder::with_capacity(ints.len().max(INITIAL_CAPACITY));
            for v in ints.iter() {
                floats.append_option(v.map(|v| v as f64));
            }
            self.bufs[idx] = Some(ColBuf::F64(floats));
        }
    }

    /// The batch (only the columns that got a value, in table order), the mapping, and bookkeeping.
    pub(crate) fn finish(mut self) -> Result<Rows, StoreError> {
        let rows = self.rows;
        let mut fields = Vec::new();
        let mut arrays = Vec::new();
        for (i, buf) in self.bufs.iter_mut().enumerate() {
            let Some(buf) = buf else { continue };
            let len = buf.len();
            if len < rows {
                buf.append_nulls(rows - len);
            }
            let c = &self.columns[i];
            fields.push(Field::new(c.name.clone(), c.ty.data_type(), !required(self.kind, i)));
            arrays.push(buf.finish());
        }
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        let batch = RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), arrays, &options)?;
        Ok(Rows {
            batch,
            columns: self.columns,
            base_version: self.base.version,
            changed: self.changed,
            conflicts: self.conflicts,
            tombstones: self.tombstones,
        })
    }
}

/// A builder holding the values of `array` (one of the store's column types).
fn rebuild(array: &ArrayRef) -> ColBuf {
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, Int32Type, Int64Type, TimestampMillisecondType};
    match array.data_type() {
        DataType::Boolean => {
            let mut b = BooleanBuilder::new();
            b.extend(array.as_boolean().iter());
            ColBuf::Bool(b)
        }
        DataType::Int32 => {
            let mut b = Int32Builder::new();
            b.extend(array.as_primitive::<Int32Type>().iter());
            ColBuf::I32(b)
        }
        DataType::Int64 => {
            let mut b = Int64Builder::new();
            b.extend(array.as_primitive::<Int64Type>().iter());
            ColBuf::I64(b)
        }
        DataType::Float64 => {
            let mut b = Float64Builder::new();
            b.extend(array.as_primitive::<Float64Type>().iter());
            ColBuf::F64(b)
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            let mut b = TimestampMillisecondBuilder::new();
            b.extend(array.as_primitive::<TimestampMillisecondType>().iter());
            ColBuf::Ts(b)
        }
        _ => {
            let mut b = StringBuilder::new();
            b.extend(array.as_string::<i32>().iter());
            ColBuf::Str(b)
        }
    }
}

/// Visits one JSON value at the builder's current path.
struct FieldValue<'a> {
    b: &'a mut RowsBuilder,
    /// The record value itself (its object fields are columns; anything else is the column `value`).
    top: bool,
}

impl<'de> DeserializeSeed<'de> for FieldValue<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldValue<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.b.put(Scalar::Bool(v));
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.b.put(Scalar::Int(v));
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        // Beyond i64 a JSON integer is only representable as a float.
        self.b.put(i64::try_from(v).map_or(Scalar::Float(v as f64), Scalar::Int));
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.b.put(Scalar::Float(v));
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.b.put(Scalar::Str(v));
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<serde_json::Value>()? {
            items.push(item);
        }
        let mut text = std::mem::take(&mut self.b.json_text);
        text.clear();
        text.push_str(&serde_json::Value::Array(items).to_string());
        self.b.put(Scalar::Json(&text));
        self.b.json_text = text;
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let b = self.b;
        let base = b.path.len();
        while map.next_key_seed(KeySeed(&mut b.path))?.is_some() {
            // A results row repeats its window bounds, which are already the key columns.
            let skip = self.top
                && b.kind == TableKind::Results
                && (b.path == RESULT_COLUMNS[0] || b.path == RESULT_COLUMNS[1]);
            if skip {
                map.next_value::<serde::de::IgnoredAny>()?;
            } else {
                map.next_value_seed(FieldValue { b: &mut *b, top: false })?;
            }
            b.path.truncate(base);
        }
        Ok(())
    }
}

/// Appends an object key to the dotted path (with a `.` unless it is the first segment).
struct KeySeed<'a>(&'a mut String);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        if !self.0.is_empty() {
            self.0.push('.');
        }
        self.0.push_str(v);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{AsArray, BooleanArray};
    use arrow::datatypes::{Float64Type, Int64Type, TimestampMillisecondType};

    use super::*;

    fn raw(values: &[&str]) -> Rows {
        raw_on(Arc::new(Mapping::new(TableKind::Raw)), values)
    }

    fn raw_on(mapping: Arc<Mapping>, values: &[&str]) -> Rows {
        let mut b = RowsBuilder::new("t", mapping);
        for (i, v) in values.iter().enumerate() {
            b.raw_row(1000 + i as i64, 2000, 0, i as u64, Some(b"k"), None, v.as_bytes()).unwrap();
        }
        b.finish().unwrap()
    }

    fn ty(rows: &Rows, name: &str) -> ColumnType {
        rows.columns.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no column {name}")).ty
    }

    fn strings(rows: &Rows, name: &str) -> Vec<Option<String>> {
        let col = rows.batch.column_by_name(name).unwrap().as_string::<i32>();
        col.iter().map(|v| v.map(str::to_string)).collect()
    }

    #[test]
    fn infers_types_and_metadata() {
        let rows = raw(&[r#"{"b":true,"i":3,"f":1.5,"s":"x","t":"2024-05-01T10:00:00.250Z","n":null}"#]);
        let names: Vec<&str> = rows.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["event_time", "ingest_time", "partition", "offset", "key", "schema_id", "b", "i", "f", "s", "t"]
        );
        assert_eq!(ty(&rows, "b"), ColumnType::Boolean);
        assert_eq!(ty(&rows, "i"), ColumnType::Int64);
        assert_eq!(ty(&rows, "f"), ColumnType::Float64);
        assert_eq!(ty(&rows, "s"), ColumnType::Utf8);
        assert_eq!(ty(&rows, "t"), ColumnType::Timestamp);
        let t = rows.batch.column_by_name("t").unwrap().as_primitive::<TimestampMillisecondType>();
        assert_eq!(t.value(0), 1_714_557_600_250);
        assert_eq!(rows.batch.schema().field_with_name("t").unwrap().data_type(), &time_type());
        assert_eq!(strings(&rows, "key"), [Some("k".to_string())]);
        assert!(rows.batch.schema().field_with_name("event_time").unwrap().is_nullable().eq(&false));
        assert_eq!(rows.conflicts, 0);
    }

    #[test]
    fn missing_fields_are_null_and_new_fields_add_columns() {
        let rows = raw(&[r#"{"a":1}"#, r#"{"b":"x"}"#, r#"{"a":2,"b":"y"}"#]);
        let a = rows.batch.column_by_name("a").unwrap().as_primitive::<Int64Type>();
        assert_eq!(a.iter().collect::<Vec<_>>(), [Some(1), None, Some(2)]);
        assert_eq!(strings(&rows, "b"), [None, Some("x".into()), Some("y".into())]);
        assert!(rows.changed);
    }

    #[test]
    fn flattens_objects_and_keeps_arrays_as_json() {
        let rows = raw(&[r#"{"a":{"b":{"c":1},"d":"x"},"arr":[1,{"z":2}],"e":{}}"#]);
        assert_eq!(ty(&rows, "a.b.c"), ColumnType::Int64);
        assert_eq!(ty(&rows, "a.d"), ColumnType::Utf8);
        assert_eq!(strings(&rows, "arr"), [Some(r#"[1,{"z":2}]"#.to_string())]);
        assert!(rows.columns.iter().all(|c| c.name != "e" && c.name != "a"));
    }

    #[test]
    fn widens_int_to_float_within_and_across_builders() {
        let rows = raw(&[r#"{"x":1}"#, r#"{"x":2.5}"#, r#"{"x":3}"#]);
        assert_eq!(ty(&rows, "x"), ColumnType::Float64);
        let x = rows.batch.column_by_name("x").unwrap().as_primitive::<Float64Type>();
        assert_eq!(x.iter().collect::<Vec<_>>(), [Some(1.0), Some(2.5), Some(3.0)]);
        // A table that already has Int64 widens when a builder sees a float.
        let mapping = Mapping::from_columns(TableKind::Raw, raw(&[r#"{"x":1}"#]).columns, 1);
        let rows = raw_on(Arc::new(mapping), &[r#"{"x":1.25}"#]);
        assert_eq!(ty(&rows, "x"), ColumnType::Float64);
        assert_eq!(rows.conflicts, 0);
    }

    #[test]
    fn conflicts_go_to_extra_and_are_counted() {
        let rows = raw(&[
            r#"{"n":1,"s":"a","t":"2024-01-01T00:00:00Z","b":true}"#,
            r#"{"n":"text","s":5,"t":"not a time","b":1,"ok":1}"#,
            r#"{"n":2}"#,
        ]);
        assert_eq!(rows.conflicts, 4);
        let extra = strings(&rows, EXTRA_COLUMN);
        assert_eq!(extra[0], None);
        let e1: serde_json::Value = serde_json::from_str(extra[1].as_deref().unwrap()).unwrap();
        assert_eq!(e1, serde_json::json!({"n":"text","s":5,"t":"not a time","b":1}));
        assert_eq!(extra[2], None);
        let n = rows.batch.column_by_name("n").unwrap().as_primitive::<Int64Type>();
        assert_eq!(n.iter().collect::<Vec<_>>(), [Some(1), None, Some(2)]);
        assert_eq!(rows.batch.column_by_name("ok").unwrap().null_count(), 2);
    }

    #[test]
    fn reserved_names_and_non_objects() {
        let rows = raw(&[r#"{"offset":7,"key":"k2","_extra":1,"value":"v"}"#]);
        for name in ["value.offset", "value.key", "value._extra", "value"] {
            assert!(rows.columns.iter().any(|c| c.name == name), "{name}");
        }
        let o = rows.batch.column_by_name("offset").unwrap().as_primitive::<Int64Type>();
        assert_eq!(o.value(0), 0);
        let rows = raw(&["42", r#""hello""#, "[1,2]", "null"]);
        assert_eq!(ty(&rows, VALUE_COLUMN), ColumnType::Int64);
        assert_eq!(rows.conflicts, 2);
        assert_eq!(rows.batch.num_rows(), 4);
    }

    #[test]
    fn column_limit_sends_the_rest_to_extra() {
        let mut fields = serde_json::Map::new();
        for i in 0..1200 {
            fields.insert(format!("f{i}"), i.into());
        }
        let json = serde_json::Value::Object(fields).to_string();
        let rows = raw(&[&json]);
        assert_eq!(rows.columns.len(), MAX_COLUMNS);
        assert_eq!(rows.columns.last().unwrap().name, EXTRA_COLUMN);
        let overflow = MAX_COLUMNS - 1 - RAW_COLUMNS.len();
        assert_eq!(rows.conflicts, (1200 - overflow) as u64);
        assert_eq!(rows.batch.num_columns(), MAX_COLUMNS);
    }

    #[test]
    fn invalid_json_is_an_error_and_adds_nothing() {
        let mut b = RowsBuilder::new("t", Arc::new(Mapping::new(TableKind::Raw)));
        b.raw_row(1, 1, 0, 0, None, None, br#"{"a":1}"#).unwrap();
        let err = b.raw_row(1, 1, 0, 1, None, None, br#"{"a":2,"zz":3,"#).unwrap_err();
        assert_eq!(err.code(), "invalid_row");
        b.raw_row(1, 1, 0, 2, None, Some(9), br#"{"a":3}"#).unwrap();
        let rows = b.finish().unwrap();
        assert_eq!(rows.batch.num_rows(), 2);
        assert!(rows.columns.iter().all(|c| c.name != "zz"));
        let a = rows.batch.column_by_name("a").unwrap().as_primitive::<Int64Type>();
        assert_eq!(a.iter().collect::<Vec<_>>(), [Some(1), Some(3)]);
        assert!(b_kind_checks());
    }

    fn b_kind_checks() -> bool {
        let mut b = RowsBuilder::new("t", Arc::new(Mapping::new(TableKind::Raw)));
        b.result_row(0, 1, "k", None).is_err()
    }

    #[test]
    fn result_rows_and_tombstones() {
        let mut b = RowsBuilder::new("t", Arc::new(Mapping::new(TableKind::Results)));
        let row =
            br#"{"window_start":"1970-01-01T00:00:00.000Z","window_end":"1970-01-01T00:01:00.000Z","n":3,"_key":"x"}"#;
        b.result_row(0, 60_000, "a", Some(row)).unwrap();
        b.result_row(0, 60_000, "b", None).unwrap();
        let rows = b.finish().unwrap();
        let names: Vec<&str> = rows.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["window_start", "window_end", "_key", "n", "value._key"]);
        assert_eq!(rows.tombstones, [false, true]);
        assert_eq!(rows.batch.column_by_name("n").unwrap().null_count(), 1);
        let _ = BooleanArray::from(vec![true]);
    }

    #[test]
    fn declared_columns_exist_up_front_and_are_normalized() {
        let mut m = Mapping::new(TableKind::Raw);
        let changed = m.add_declared(&[
            ("small".into(), DataType::Int32),
            ("ratio".into(), DataType::Float32),
            ("when".into(), DataType::Timestamp(TimeUnit::Microsecond, None)),
            ("offset".into(), DataType::Utf8),
            ("blob".into(), DataType::Binary),
        ]);
        assert!(changed);
        let got: Vec<(String, ColumnType)> = m.columns[6..].iter().map(|c| (c.name.clone(), c.ty)).collect();
        assert_eq!(
            got,
            [
                ("small".to_string(), ColumnType::Int64),
                ("ratio".to_string(), ColumnType::Float64),
                ("when".to_string(), ColumnType::Timestamp),
                ("value.offset".to_string(), ColumnType::Utf8),
                ("blob".to_string(), ColumnType::Utf8),
            ]
        );
        assert!(!m.add_declared(&[("small".into(), DataType::Int64)]));
        // A never-seen declared field reads as null; a time string fills the declared timestamp column.
        let rows = raw_on(Arc::new(m), &[r#"{"when":"2024-05-01 10:00:00"}"#]);
        assert_eq!(ty(&rows, "when"), ColumnType::Timestamp);
        assert!(rows.batch.column_by_name("small").is_none());
    }

    #[test]
    fn time_parsing() {
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(parse_time("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_time("1970-01-01 00:00:00.5"), Some(500));
        assert_eq!(parse_time("1970-01-02"), Some(86_400_000));
        assert_eq!(parse_time("hello"), None);
        assert_eq!(parse_time("2024-13-45T00:00:00Z"), None);
        assert_eq!(parse_time("12345678901"), None);
    }
}
