//! A DataFusion [`TableProvider`] over a [`TableSnapshot`]: committed Parquet files plus buffered batches.
//!
//! Each scan takes a fresh snapshot, drops the files whose `[min_time, max_time]` cannot match the time-range
//! predicates of the query, and plans a Parquet scan of the rest (with the filters as a pruning predicate so
//! row-group statistics and the page index skip more) unioned with an in-memory scan of the buffered rows.
//! The Parquet scan reads every file against the table schema, so DataFusion's default physical expression
//! adapter fills columns a file lacks with nulls and casts Int64 file columns to a Float64 table column.
//! Filters are `Inexact`: DataFusion re-applies them above the scan, pruning only has to be conservative.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::object_store::ObjectStoreUrl;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::object_store::ObjectMeta;
use datafusion::object_store::path::Path as ObjectPath;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;

use crate::snapshot::{FileRef, TableSnapshot, adapt_batch};

/// Where a table's rows come from; the storage engine's table handle implements it.
pub trait SnapshotSource: Send + Sync + 'static {
    /// A consistent, cheap view of the table right now.
    fn snapshot(&self) -> TableSnapshot;
}

/// A fixed snapshot is its own source (handy for tests and one-off tables).
impl SnapshotSource for TableSnapshot {
    fn snapshot(&self) -> TableSnapshot {
        self.clone()
    }
}

/// How many files the scans of a query saw and read; shared by the providers of one query.
#[derive(Debug, Default)]
pub struct ScanCounters {
    files_total: AtomicU64,
    files_scanned: AtomicU64,
}

impl ScanCounters {
    /// Files in the scanned tables' snapshots, summed over scans (a self-join counts its table twice).
    pub fn files_total(&self) -> u64 {
        self.files_total.load(Ordering::Relaxed)
    }

    /// Files left after time-range pruning, summed over scans.
    pub fn files_scanned(&self) -> u64 {
        self.files_scanned.load(Ordering::Relaxed)
    }
}

/// An inclusive range of milliseconds since the epoch; `None` is unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeRange {
    pub min: Option<i64>,
    pub max: Option<i64>,
}

impl TimeRange {
    const ALL: TimeRange = TimeRange { min: None, max: None };

    /// Whether a file holding times in `[min, max]` may hold rows in this range.
    pub fn overlaps(&self, min: i64, max: i64) -> bool {
        self.min.is_none_or(|lo| max >= lo) && self.max.is_none_or(|hi| min <= hi)
    }

    fn intersect(self, other: TimeRange) -> TimeRange {
        TimeRange {
            min: match (self.min, other.min) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
            max: match (self.max, other.max) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }

    fn hull(self, other: TimeRange) -> TimeRange {
        TimeRange {
            min: self.min.zip(other.min).map(|(a, b)| a.min(b)),
            max: self.max.zip(other.max).map(|(a, b)| a.max(b)),
        }
    }
}

/// The bounds the conjunction of `filters` puts on `time_column`. Conservative: anything not understood is
/// unbounded, and bounds from other units are rounded outwards.
pub fn time_range(filters: &[Expr], time_column: &str) -> TimeRange {
    filters.iter().fold(TimeRange::ALL, |acc, f| acc.intersect(expr_range(f, time_column)))
}

fn expr_range(expr: &Expr, time_column: &str) -> TimeRange {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => {
            expr_range(left, time_column).intersect(expr_range(right, time_column))
        }
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Or, right }) => {
            expr_range(left, time_column).hull(expr_range(right, time_column))
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            if is_time_column(left, time_column)
                && let Some(v) = literal_ms(right)
            {
                comparison_range(*op, v)
            } else if is_time_column(right, time_column)
                && let Some(v) = literal_ms(left)
                && let Some(op) = op.swap()
            {
                comparison_range(op, v)
            } else {
                TimeRange::ALL
            }
        }
        Expr::Between(Between { expr, negated: false, low, high }) if is_time_column(expr, time_column) => {
            TimeRange { min: literal_ms(low).map(|t| t.floor), max: literal_ms(high).map(|t| t.floor) }
        }
        _ => TimeRange::ALL,
    }
}

/// A literal time in ms: `floor` of the exact value, and whether it was exact (sub-ms parts lost or not).
#[derive(Debug, Clone, Copy)]
struct LiteralMs {
    floor: i64,
    exact: bool,
}

fn comparison_range(op: Operator, v: LiteralMs) -> TimeRange {
    // With t in whole ms and v = floor + fraction: t > v <=> t > floor when exact, t >= floor + 1 otherwise too,
    // so `>` is floor + 1 either way; t >= v is floor (+1 when inexact); t <= v and t < v (inexact) is floor.
    match op {
        Operator::Gt => TimeRange { min: Some(v.floor.saturating_add(1)), max: None },
        Operator::GtEq => TimeRange { min: Some(if v.exact { v.floor } else { v.floor.saturating_add(1) }), max: None },
        Operator::Lt => TimeRange { min: None, max: Some(if v.exact { v.floor.saturating_sub(1) } else { v.floor }) },
        Operator::LtEq => TimeRange { min: None, max: Some(v.floor) },
        Operator::Eq => {
            if v.exact {
                TimeRange { min: Some(v.floor), max: Some(v.floor) }
            } else {
                // No whole millisecond equals a sub-millisecond instant; keep it simple and conservative.
                TimeRange { min: Some(v.floor), max: Some(v.floor.saturating_add(1)) }
            }
        }
        _ => TimeRange::ALL,
    }
}

fn is_time_column(expr: &Expr, time_column: &str) -> bool {
    match expr {
        Expr::Column(c) => c.name == time_column,
        // Type coercion may cast the column to a finer timestamp unit; such casts keep order and values.
        Expr::Cast(c) if matches!(c.field.data_type(), DataType::Timestamp(..)) => is_time_column(&c.expr, time_column),
        Expr::TryCast(c) if matches!(c.field.data_type(), DataType::Timestamp(..)) => {
            is_time_column(&c.expr, time_column)
        }
        _ => false,
    }
}

fn literal_ms(expr: &Expr) -> Option<LiteralMs> {
    let value = match expr {
        Expr::Literal(value, _) => value,
        Expr::Cast(c) if matches!(c.field.data_type(), DataType::Timestamp(..)) => {
            // A cast left over by the planner (e.g. a string literal): evaluate it the same way the query will.
            let Expr::Literal(value, _) = c.expr.as_ref() else { return None };
            return literal_ms(&Expr::Literal(value.cast_to(c.field.data_type()).ok()?, None));
        }
        _ => return None,
    };
    let (v, per_ms_num, per_ms_den) = match value {
        ScalarValue::TimestampSecond(Some(v), _) => (*v, 1, 1000),
        ScalarValue::TimestampMillisecond(Some(v), _) => (*v, 1, 1),
        ScalarValue::TimestampMicrosecond(Some(v), _) => (*v, 1000, 1),
        ScalarValue::TimestampNanosecond(Some(v), _) => (*v, 1_000_000, 1),
        ScalarValue::Date32(Some(days)) => (i64::from(*days), 1, 86_400_000),
        ScalarValue::Date64(Some(ms)) => (*ms, 1, 1),
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
            let nanos = arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(s).ok()?;
            (nanos, 1_000_000, 1)
        }
        _ => return None,
    };
    if per_ms_den > 1 {
        return Some(LiteralMs { floor: v.saturating_mul(per_ms_den), exact: true });
    }
    Some(LiteralMs { floor: v.div_euclid(per_ms_num), exact: v.rem_euclid(per_ms_num) == 0 })
}

/// The [`TableProvider`] of one table in one query.
pub struct SnapshotTable {
    name: String,
    source: Arc<dyn SnapshotSource>,
    schema: SchemaRef,
    time_column: String,
    counters: Arc<ScanCounters>,
}

impl fmt::Debug for SnapshotTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotTable").field("name", &self.name).field("time_column", &self.time_column).finish()
    }
}

impl SnapshotTable {
    /// A provider over `source`. The schema is fixed now (planning needs one stable schema); later snapshots
    /// are read against it, so columns added meanwhile are simply not visible to this query.
    pub fn new(source: Arc<dyn SnapshotSource>) -> Self {
        let snapshot = source.snapshot();
        SnapshotTable {
            name: snapshot.name,
            source,
            schema: snapshot.schema,
            time_column: snapshot.time_column,
            counters: Arc::default(),
        }
    }

    /// Count this table's scans in `counters` (shared with the other tables of the query).
    pub fn with_counters(mut self, counters: Arc<ScanCounters>) -> Self {
        self.counters = counters;
        self
    }

    pub fn counters(&self) -> &Arc<ScanCounters> {
        &self.counters
    }

    fn parquet_scan(
        &self,
        state: &dyn Session,
        files: &[&FileRef],
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut source = ParquetSource::new(self.schema.clone())
            .with_table_parquet_options(state.table_options().parquet.clone())
            .with_enable_page_index(true);
        if let Some(filter) = conjunction(filters.iter().cloned()) {
            let df_schema = DFSchema::try_from(self.schema.clone())?;
            source = source.with_predicate(state.create_physical_expr(filter, &df_schema)?);
        }
        let partitioned = files.iter().map(|f| partitioned_file(f)).collect::<Result<Vec<_>>>()?;
        // Contiguous groups keep each partition's files in time order.
        let groups = partitioned.len().div_ceil(state.config().target_partitions().max(1)).max(1);
        let file_groups = partitioned.chunks(groups).map(|chunk| FileGroup::new(chunk.to_vec())).collect();
        let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), Arc::new(source))
            .with_file_groups(file_groups)
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

fn partitioned_file(file: &FileRef) -> Result<datafusion::datasource::listing::PartitionedFile> {
    let absolute = std::path::absolute(&file.path)?;
    let location = ObjectPath::from_absolute_path(&absolute)
        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
    // The real size and mtime, when the file is there, keep DataFusion's metadata cache honest should a path
    // ever be rewritten; a missing file fails on read with a clear error anyway.
    let (size, last_modified) = match std::fs::metadata(&absolute) {
        Ok(meta) => (meta.len(), meta.modified().map(chrono::DateTime::<chrono::Utc>::from).unwrap_or_default()),
        Err(_) => (file.size, chrono::DateTime::<chrono::Utc>::default()),
    };
    Ok(datafusion::datasource::listing::PartitionedFile::new_from_meta(ObjectMeta {
        location,
        last_modified,
        size,
        e_tag: None,
        version: None,
    }))
}

#[async_trait]
impl TableProvider for SnapshotTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let snapshot = self.source.snapshot();
        let range = time_range(filters, &self.time_column);
        let files: Vec<&FileRef> = snapshot.files.iter().filter(|f| range.overlaps(f.min_time, f.max_time)).collect();
        self.counters.files_total.fetch_add(snapshot.files.len() as u64, Ordering::Relaxed);
        self.counters.files_scanned.fetch_add(files.len() as u64, Ordering::Relaxed);

        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !files.is_empty() {
            inputs.push(self.parquet_scan(state, &files, projection, filters, limit)?);
        }
        let buffered = snapshot
            .buffered
            .iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| adapt_batch(b, &self.schema))
            .collect::<Result<Vec<_>, _>>()?;
        if !buffered.is_empty() {
            let memory =
                MemorySourceConfig::try_new(&[buffered], self.schema.clone(), projection.cloned())?.with_limit(limit);
            inputs.push(DataSourceExec::from_data_source(memory));
        }
        if inputs.is_empty() {
            let projected = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        UnionExec::try_new(inputs)
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    fn ts(ms: i64) -> Expr {
        lit(ScalarValue::TimestampMillisecond(Some(ms), Some("UTC".into())))
    }

    #[test]
    fn bounds_from_comparisons_between_and_or() {
        let t = || col("event_time");
        assert_eq!(
            time_range(&[t().gt_eq(ts(100)), t().lt(ts(200))], "event_time"),
            TimeRange { min: Some(100), max: Some(199) }
        );
        assert_eq!(time_range(&[ts(100).lt(t())], "event_time"), TimeRange { min: Some(101), max: None });
        assert_eq!(time_range(&[t().eq(ts(5))], "event_time"), TimeRange { min: Some(5), max: Some(5) });
        assert_eq!(
            time_range(&[t().between(ts(10), ts(20))], "event_time"),
            TimeRange { min: Some(10), max: Some(20) }
        );
        let either = t().lt_eq(ts(10)).and(t().gt_eq(ts(0))).or(t().eq(ts(50)));
        assert_eq!(time_range(&[either], "event_time"), TimeRange { min: Some(0), max: Some(50) });
        // Other columns and unknown shapes do not bound.
        assert_eq!(time_range(&[col("x").gt(ts(1)), t().not_eq(ts(3))], "event_time"), TimeRange::ALL);
        assert_eq!(time_range(&[t().gt(ts(1)).or(col("x").eq(lit(1)))], "event_time"), TimeRange::ALL);
    }

    #[test]
    fn other_units_round_outwards() {
        let t = col("event_time");
        let ns = |v: i64| lit(ScalarValue::TimestampNanosecond(Some(v), None));
        // t >= 1.5 ms -> t >= 2 ms; t < 2.5 ms -> t <= 2 ms; t < 2 ms exactly -> t <= 1 ms.
        assert_eq!(
            time_range(&[t.clone().gt_eq(ns(1_500_000)), t.clone().lt(ns(2_500_000))], "event_time"),
            TimeRange { min: Some(2), max: Some(2) }
        );
        assert_eq!(time_range(&[t.clone().lt(ns(2_000_000))], "event_time").max, Some(1));
        assert_eq!(time_range(&[t.clone().gt_eq(ns(-1_500_000))], "event_time").min, Some(-1));
        let s = lit(ScalarValue::TimestampSecond(Some(3), None));
        assert_eq!(time_range(&[t.clone().lt_eq(s)], "event_time").max, Some(3000));
        let text = lit("1970-01-01T00:00:01Z");
        assert_eq!(time_range(&[t.gt_eq(text)], "event_time").min, Some(1000));
    }

    #[test]
    fn overlap() {
        let r = TimeRange { min: Some(10), max: Some(20) };
        assert!(r.overlaps(0, 10) && r.overlaps(20, 30) && r.overlaps(12, 13) && r.overlaps(0, 100));
        assert!(!r.overlaps(0, 9) && !r.overlaps(21, 30));
        assert!(TimeRange::ALL.overlaps(i64::MIN, i64::MIN));
    }
}
