//! Column evolution: batches built against an older column mapping merged into the current one.

use super::*;

/// Merges a batch built against an older mapping into the table's current one: new columns are added, Int64
/// widens to Float64, and values whose column now has another type (or that would pass the column limit) move to
/// `_extra`. Returns the batch, the new mapping and the number of values moved.
pub(super) fn reconcile(current: &Mapping, batch: RecordBatch) -> Result<(RecordBatch, Mapping, u64), StoreError> {
    let mut mapping = current.clone();
    let mut changed = false;
    let mut moved = Vec::new();
    let schema = batch.schema();
    for (i, field) in schema.fields().iter().enumerate() {
        // A batch column's own type, exactly: `from_data_type` maps declared types, and would turn the Int32 meta
        // columns (`partition`, `schema_id`) into Int64 and so into a false conflict.
        let ty = match field.data_type() {
            DataType::Int32 => ColumnType::Int32,
            dt => ColumnType::from_data_type(dt),
        };
        match mapping.index.get(field.name()).copied() {
            Some(j) => {
                let have = mapping.columns[j].ty;
                if have == ty || (have == ColumnType::Float64 && ty == ColumnType::Int64) {
                } else if have == ColumnType::Int64 && ty == ColumnType::Float64 && j >= mapping.meta_len() {
                    mapping.columns[j].ty = ColumnType::Float64;
                    changed = true;
                } else {
                    moved.push(i);
                }
            }
            None => {
                let limit = if mapping.index.contains_key(EXTRA_COLUMN) { MAX_COLUMNS } else { MAX_COLUMNS - 1 };
                if field.name() == EXTRA_COLUMN || mapping.columns.len() < limit {
                    mapping.index.insert(field.name().clone(), mapping.columns.len());
                    mapping.columns.push(ColumnDef { name: field.name().clone(), ty });
                    changed = true;
                } else {
                    moved.push(i);
                }
            }
        }
    }
    let mut count = 0;
    let batch = if moved.is_empty() {
        batch
    } else {
        let (b, c) = move_to_extra(&batch, &moved)?;
        count = c;
        if !mapping.index.contains_key(EXTRA_COLUMN) {
            mapping.index.insert(EXTRA_COLUMN.to_string(), mapping.columns.len());
            mapping.columns.push(ColumnDef { name: EXTRA_COLUMN.to_string(), ty: ColumnType::Utf8 });
            changed = true;
        }
        b
    };
    if changed || current.version != mapping.version {
        mapping.version = current.version + 1;
    }
    Ok((batch, mapping, count))
}

/// Moves the columns at `moved` into `_extra` as JSON (rare: only when two writers disagree on a column).
pub(super) fn move_to_extra(batch: &RecordBatch, moved: &[usize]) -> Result<(RecordBatch, u64), StoreError> {
    let schema = batch.schema();
    let extra = batch.column_by_name(EXTRA_COLUMN).and_then(|c| c.as_string_opt::<i32>().cloned());
    let mut count = 0u64;
    let mut texts: Vec<Option<String>> = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let mut object: serde_json::Map<String, serde_json::Value> = match &extra {
            Some(e) if e.is_valid(row) => serde_json::from_str(e.value(row)).unwrap_or_default(),
            _ => serde_json::Map::new(),
        };
        for &i in moved {
            let col = batch.column(i);
            if col.is_valid(row) {
                object.insert(schema.field(i).name().clone(), json_of(col, row));
                count += 1;
            }
        }
        texts.push((!object.is_empty()).then(|| serde_json::Value::Object(object).to_string()));
    }
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (i, f) in schema.fields().iter().enumerate() {
        if !moved.contains(&i) && f.name() != EXTRA_COLUMN {
            fields.push(f.as_ref().clone());
            columns.push(batch.column(i).clone());
        }
    }
    fields.push(arrow::datatypes::Field::new(EXTRA_COLUMN, DataType::Utf8, true));
    columns.push(Arc::new(StringArray::from(texts)) as ArrayRef);
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    let batch = RecordBatch::try_new_with_options(Arc::new(arrow::datatypes::Schema::new(fields)), columns, &options)?;
    Ok((batch, count))
}

pub(super) fn json_of(col: &ArrayRef, row: usize) -> serde_json::Value {
    use arrow::datatypes::{Float64Type, Int32Type, Int64Type};
    match col.data_type() {
        DataType::Boolean => col.as_boolean().value(row).into(),
        DataType::Int32 => col.as_primitive::<Int32Type>().value(row).into(),
        DataType::Int64 => col.as_primitive::<Int64Type>().value(row).into(),
        DataType::Float64 => serde_json::Number::from_f64(col.as_primitive::<Float64Type>().value(row))
            .map_or(serde_json::Value::Null, Into::into),
        DataType::Timestamp(..) => {
            let ms = col.as_primitive::<TimestampMillisecondType>().value(row);
            chrono::DateTime::from_timestamp_millis(ms)
                .map_or(ms.into(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true).into())
        }
        _ => col.as_string_opt::<i32>().map_or(serde_json::Value::Null, |s| s.value(row).into()),
    }
}
