//! Query results and their wire formats: JSON (the HTTP API), CSV, Arrow IPC stream and an aligned text table.
//!
//! JSON conventions (shared with the job-results read path through [`batches_to_json_rows`]): timestamps are
//! RFC 3339 in UTC with milliseconds (`2026-11-28T10:00:00.000Z`), dates `YYYY-MM-DD`, floats JSON numbers
//! with NaN and infinities as null (JSON has no spelling for them), binary base64, lists arrays, structs objects.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::*;
use arrow::error::ArrowError;
use base64::Engine;
use serde_json::{Map, Number, Value};

/// Numbers describing one query run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueryStats {
    /// Files in the snapshots of the scanned tables (summed over scans).
    pub files_total: u64,
    /// Files read after time-range pruning (summed over scans).
    pub files_scanned: u64,
    /// Rows returned.
    pub rows: u64,
    pub elapsed_ms: u64,
}

/// The result of a query.
#[derive(Debug, Clone)]
pub struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// True when the result was cut at the engine's row limit.
    pub truncated: bool,
    pub stats: QueryStats,
}

impl QueryOutput {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// `{"columns":[{"name","type"}],"rows":[{col: value}], "truncated": true}` (`truncated` only when set).
    pub fn to_json(&self) -> Value {
        let names = unique_names(&self.schema);
        let columns = self
            .schema
            .fields()
            .iter()
            .zip(&names)
            .map(|(field, name)| serde_json::json!({"name": name, "type": sql_type_name(field.data_type())}))
            .collect::<Vec<_>>();
        let rows = batches_to_json_rows(&self.batches, &[]).into_iter().map(Value::Object).collect::<Vec<_>>();
        let mut out = Map::new();
        out.insert("columns".into(), Value::Array(columns));
        out.insert("rows".into(), Value::Array(rows));
        if self.truncated {
            out.insert("truncated".into(), Value::Bool(true));
        }
        Value::Object(out)
    }

    /// CSV with a header row; cells formatted like the JSON values (nested values as JSON text).
    pub fn to_csv(&self) -> Result<Vec<u8>, ArrowError> {
        let names = unique_names(&self.schema);
        let mut writer = arrow::csv::WriterBuilder::new().with_header(true).build(Vec::new());
        let csv_schema = Arc::new(Schema::new(
            self.schema
                .fields()
                .iter()
                .zip(&names)
                .map(|(f, name)| {
                    let data_type = if csv_native(f.data_type()) { f.data_type().clone() } else { DataType::Utf8 };
                    Field::new(name, data_type, true)
                })
                .collect::<Vec<_>>(),
        ));
        if self.batches.is_empty() {
            // The writer only emits the header with the first batch.
            writer.write(&RecordBatch::new_empty(csv_schema.clone()))?;
        }
        for batch in &self.batches {
            let columns = batch
                .columns()
                .iter()
                .map(|c| if csv_native(c.data_type()) { c.clone() } else { text_column(c) })
                .collect::<Vec<_>>();
            writer.write(&RecordBatch::try_new(csv_schema.clone(), columns)?)?;
        }
        Ok(writer.into_inner())
    }

    /// The Arrow IPC stream format (read it with `arrow::ipc::reader::StreamReader`).
    pub fn to_arrow_ipc(&self) -> Result<Vec<u8>, ArrowError> {
        let mut writer = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &self.schema)?;
        for batch in &self.batches {
            writer.write(batch)?;
        }
        writer.finish()?;
        writer.into_inner()
    }

    /// An aligned text table for the CLI, with a note when the result was truncated.
    pub fn to_table_text(&self) -> String {
        let mut text = match arrow::util::pretty::pretty_format_batches_with_schema(self.schema.clone(), &self.batches)
        {
            Ok(table) => table.to_string(),
            Err(e) => format!("cannot format the result: {e}"),
        };
        let rows = self.num_rows();
        text.push_str(&format!("\n{rows} row{}", if rows == 1 { "" } else { "s" }));
        if self.truncated {
            text.push_str(" (truncated)");
        }
        text
    }
}

/// Whether arrow's CSV writer formats this type the way we want as is.
fn csv_native(data_type: &DataType) -> bool {
    data_type.is_numeric() || matches!(data_type, DataType::Boolean | DataType::Utf8 | DataType::LargeUtf8)
}

/// A Utf8 column holding the JSON formatting of `column` (strings unquoted, nested values as JSON text).
fn text_column(column: &ArrayRef) -> ArrayRef {
    let values = column_values(column);
    Arc::new(
        values
            .into_iter()
            .map(|v| match v {
                Value::Null => None,
                Value::String(s) => Some(s),
                other => Some(other.to_string()),
            })
            .collect::<StringArray>(),
    )
}

/// Column names made unique (a join can return two `x`): later ones get `_2`, `_3`, ... appended.
fn unique_names(schema: &Schema) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    schema
        .fields()
        .iter()
        .map(|f| {
            let mut name = f.name().clone();
            let mut n = 2;
            while !seen.insert(name.clone()) {
                name = format!("{}_{n}", f.name());
                n += 1;
            }
            name
        })
        .collect()
}

/// Rows as JSON objects keyed by column name, without the columns in `skip_columns`.
pub fn batches_to_json_rows(batches: &[RecordBatch], skip_columns: &[&str]) -> Vec<Map<String, Value>> {
    let mut rows = Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
    for batch in batches {
        let schema = batch.schema();
        let names = unique_names(&schema);
        let columns: Vec<(&String, Vec<Value>)> = names
            .iter()
            .zip(batch.columns())
            .filter(|(name, _)| !skip_columns.contains(&name.as_str()))
            .map(|(name, column)| (name, column_values(column)))
            .collect();
        for i in 0..batch.num_rows() {
            let mut row = Map::new();
            for (name, values) in &columns {
                row.insert((*name).clone(), values[i].clone());
            }
            rows.push(row);
        }
    }
    rows
}

/// The SQL-ish name of a column type, as shown to API users.
pub fn sql_type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Null => "null".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Int8 => "tinyint".into(),
        DataType::Int16 => "smallint".into(),
        DataType::Int32 => "integer".into(),
        DataType::Int64 => "bigint".into(),
        DataType::UInt8 => "utinyint".into(),
        DataType::UInt16 => "usmallint".into(),
        DataType::UInt32 => "uinteger".into(),
        DataType::UInt64 => "ubigint".into(),
        DataType::Float16 | DataType::Float32 => "real".into(),
        DataType::Float64 => "double".into(),
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) => format!("decimal({p},{s})"),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("decimal({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
            "binary".into()
        }
        DataType::Timestamp(..) => "timestamp".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Time32(_) | DataType::Time64(_) => "time".into(),
        DataType::Interval(_) => "interval".into(),
        DataType::Duration(_) => "duration".into(),
        DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) | DataType::LargeListView(f) => {
            format!("{}[]", sql_type_name(f.data_type()))
        }
        DataType::FixedSizeList(f, _) => format!("{}[]", sql_type_name(f.data_type())),
        DataType::Struct(_) => "struct".into(),
        DataType::Map(..) => "map".into(),
        DataType::Dictionary(_, value) => sql_type_name(value),
        DataType::RunEndEncoded(_, value) => sql_type_name(value.data_type()),
        other => other.to_string().to_lowercase(),
    }
}

fn float(v: f64) -> Value {
    Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// RFC 3339, UTC, milliseconds: `2026-11-28T10:00:00.000Z`.
pub fn format_timestamp_nanos(nanos: i128) -> Option<String> {
    let secs = i64::try_from(nanos.div_euclid(1_000_000_000)).ok()?;
    let sub = u32::try_from(nanos.rem_euclid(1_000_000_000)).ok()?;
    chrono::DateTime::from_timestamp(secs, sub).map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

fn timestamps(values: impl Iterator<Item = Option<i64>>, nanos_per_unit: i128) -> Vec<Value> {
    values
        .map(|v| match v.and_then(|v| format_timestamp_nanos(i128::from(v) * nanos_per_unit)) {
            Some(s) => Value::String(s),
            None => Value::Null,
        })
        .collect()
}

fn dates(values: impl Iterator<Item = Option<i64>>, ms_per_unit: i64) -> Vec<Value> {
    values
        .map(|v| {
            v.and_then(|v| chrono::DateTime::from_timestamp_millis(v.checked_mul(ms_per_unit)?))
                .map_or(Value::Null, |t| Value::String(t.format("%Y-%m-%d").to_string()))
        })
        .collect()
}

fn primitive<T: ArrowPrimitiveType>(column: &ArrayRef, f: impl Fn(T::Native) -> Value) -> Vec<Value> {
    column.as_primitive::<T>().iter().map(|v| v.map_or(Value::Null, &f)).collect()
}

/// Display strings from arrow's formatter, for the types without a better JSON form.
fn displayed(column: &ArrayRef) -> Vec<Value> {
    let options = arrow::util::display::FormatOptions::default();
    match arrow::util::display::ArrayFormatter::try_new(column.as_ref(), &options) {
        Ok(formatter) => (0..column.len())
            .map(|i| if column.is_null(i) { Value::Null } else { Value::String(formatter.value(i).to_string()) })
            .collect(),
        Err(_) => vec![Value::Null; column.len()],
    }
}

/// Every value of `column` as JSON.
fn column_values(column: &ArrayRef) -> Vec<Value> {
    let b64 = |bytes: &[u8]| Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    match column.data_type() {
        DataType::Null => vec![Value::Null; column.len()],
        DataType::Boolean => column.as_boolean().iter().map(|v| v.map_or(Value::Null, Value::Bool)).collect(),
        DataType::Int8 => primitive::<Int8Type>(column, Value::from),
        DataType::Int16 => primitive::<Int16Type>(column, Value::from),
        DataType::Int32 => primitive::<Int32Type>(column, Value::from),
        DataType::Int64 => primitive::<Int64Type>(column, Value::from),
        DataType::UInt8 => primitive::<UInt8Type>(column, Value::from),
        DataType::UInt16 => primitive::<UInt16Type>(column, Value::from),
        DataType::UInt32 => primitive::<UInt32Type>(column, Value::from),
        DataType::UInt64 => primitive::<UInt64Type>(column, Value::from),
        DataType::Float16 => primitive::<Float16Type>(column, |v| float(v.to_f64())),
        DataType::Float32 => primitive::<Float32Type>(column, |v| float(f64::from(v))),
        DataType::Float64 => primitive::<Float64Type>(column, float),
        DataType::Utf8 => column.as_string::<i32>().iter().map(|v| v.map_or(Value::Null, Value::from)).collect(),
        DataType::LargeUtf8 => column.as_string::<i64>().iter().map(|v| v.map_or(Value::Null, Value::from)).collect(),
        DataType::Utf8View => column.as_string_view().iter().map(|v| v.map_or(Value::Null, Value::from)).collect(),
        DataType::Binary => column.as_binary::<i32>().iter().map(|v| v.map_or(Value::Null, b64)).collect(),
        DataType::LargeBinary => column.as_binary::<i64>().iter().map(|v| v.map_or(Value::Null, b64)).collect(),
        DataType::BinaryView => column.as_binary_view().iter().map(|v| v.map_or(Value::Null, b64)).collect(),
        DataType::FixedSizeBinary(_) => {
            column.as_fixed_size_binary().iter().map(|v| v.map_or(Value::Null, b64)).collect()
        }
        DataType::Timestamp(TimeUnit::Second, _) => {
            timestamps(column.as_primitive::<TimestampSecondType>().iter(), 1_000_000_000)
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            timestamps(column.as_primitive::<TimestampMillisecondType>().iter(), 1_000_000)
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            timestamps(column.as_primitive::<TimestampMicrosecondType>().iter(), 1_000)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            timestamps(column.as_primitive::<TimestampNanosecondType>().iter(), 1)
        }
        DataType::Date32 => dates(column.as_primitive::<Date32Type>().iter().map(|v| v.map(i64::from)), 86_400_000),
        DataType::Date64 => dates(column.as_primitive::<Date64Type>().iter(), 1),
        DataType::Decimal32(..) | DataType::Decimal64(..) | DataType::Decimal128(..) | DataType::Decimal256(..) => {
            // JSON numbers (f64) are what clients expect; exactness beyond 15 digits is not promised.
            displayed(column)
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => s.parse::<f64>().map_or(Value::String(s), float),
                    other => other,
                })
                .collect()
        }
        DataType::List(_) => nested_lists(column, |i| column.as_list::<i32>().value(i)),
        DataType::LargeList(_) => nested_lists(column, |i| column.as_list::<i64>().value(i)),
        DataType::FixedSizeList(..) => nested_lists(column, |i| column.as_fixed_size_list().value(i)),
        DataType::Struct(fields) => {
            let array = column.as_struct();
            let children: Vec<Vec<Value>> = array.columns().iter().map(column_values).collect();
            (0..column.len())
                .map(|i| {
                    if column.is_null(i) {
                        return Value::Null;
                    }
                    let object =
                        fields.iter().zip(&children).map(|(f, values)| (f.name().clone(), values[i].clone())).collect();
                    Value::Object(object)
                })
                .collect()
        }
        DataType::Dictionary(_, value_type) => match arrow::compute::cast(column, value_type) {
            Ok(plain) => column_values(&plain),
            Err(_) => displayed(column),
        },
        _ => displayed(column),
    }
}

fn nested_lists(column: &ArrayRef, value: impl Fn(usize) -> ArrayRef) -> Vec<Value> {
    (0..column.len())
        .map(|i| if column.is_null(i) { Value::Null } else { Value::Array(column_values(&value(i))) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        BinaryArray, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, ListArray,
        TimestampMillisecondArray,
    };
    use serde_json::json;

    fn sample() -> QueryOutput {
        let schema = Arc::new(Schema::new(vec![
            Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), true),
            Field::new("n", DataType::Int64, true),
            Field::new("x", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new("d", DataType::Date32, true),
            Field::new("b", DataType::Binary, true),
            Field::new_list("l", Field::new_list_field(DataType::Int32, true), true),
        ]));
        let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(vec![Some(1), None]), None]);
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(TimestampMillisecondArray::from(vec![Some(1_795_860_000_000), Some(-1)]).with_timezone("UTC")),
                Arc::new(Int64Array::from(vec![Some(42), None])),
                Arc::new(Float64Array::from(vec![Some(1.5), Some(f64::NAN)])),
                Arc::new(StringArray::from(vec![Some("a,\"b\""), None])),
                Arc::new(BooleanArray::from(vec![Some(true), Some(false)])),
                Arc::new(Date32Array::from(vec![Some(20_000), Some(-1)])),
                Arc::new(BinaryArray::from(vec![Some(&b"hi"[..]), None])),
                Arc::new(list),
            ],
        )
        .unwrap();
        QueryOutput { schema, batches: vec![batch], truncated: true, stats: QueryStats::default() }
    }

    #[test]
    fn json_shape_and_formats() {
        let out = sample().to_json();
        assert_eq!(out["columns"][0], json!({"name": "t", "type": "timestamp"}));
        assert_eq!(out["columns"][1]["type"], "bigint");
        assert_eq!(out["columns"][2]["type"], "double");
        assert_eq!(out["columns"][3]["type"], "text");
        assert_eq!(out["columns"][7]["type"], "integer[]");
        assert_eq!(out["truncated"], true);
        assert_eq!(
            out["rows"][0],
            json!({"t": "2026-11-28T10:00:00.000Z", "n": 42, "x": 1.5, "s": "a,\"b\"",
                   "ok": true, "d": "2024-10-04", "b": "aGk=", "l": [1, null]})
        );
        assert_eq!(
            out["rows"][1],
            json!({"t": "1969-12-31T23:59:59.999Z", "n": null, "x": null, "s": null, "ok": false,
                   "d": "1969-12-31", "b": null, "l": null})
        );
    }

    #[test]
    fn json_rows_skip_columns_and_dedupe_names() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("x", DataType::Int32, false),
            Field::new("x", DataType::Int32, false),
            Field::new("_key", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(vec![1])),
                Arc::new(Int32Array::from(vec![2])),
                Arc::new(StringArray::from(vec!["k"])),
            ],
        )
        .unwrap();
        assert_eq!(
            batches_to_json_rows(&[batch], &["_key"]),
            vec![json!({"x": 1, "x_2": 2}).as_object().unwrap().clone()]
        );
    }

    #[test]
    fn csv_has_a_header_and_quotes() {
        let csv = String::from_utf8(sample().to_csv().unwrap()).unwrap();
        let mut lines = csv.lines();
        assert_eq!(lines.next(), Some("t,n,x,s,ok,d,b,l"));
        assert_eq!(
            lines.next(),
            Some("2026-11-28T10:00:00.000Z,42,1.5,\"a,\"\"b\"\"\",true,2024-10-04,aGk=,\"[1,null]\"")
        );
        let empty = QueryOutput { batches: vec![], ..sample() };
        assert_eq!(String::from_utf8(empty.to_csv().unwrap()).unwrap(), "t,n,x,s,ok,d,b,l\n");
    }

    #[test]
    fn ipc_round_trips() {
        let out = sample();
        let bytes = out.to_arrow_ipc().unwrap();
        let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
        let batches = reader.collect::<Result<Vec<_>, _>>().unwrap();
        assert_eq!(batches, out.batches);
    }

    #[test]
    fn table_text() {
        let text = sample().to_table_text();
        assert!(text.contains("| t "), "{text}");
        assert!(text.ends_with("2 rows (truncated)"), "{text}");
    }
}
