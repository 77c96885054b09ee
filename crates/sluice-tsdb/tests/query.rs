//! The query layer end to end: Parquet files written here with `ArrowWriter` (zstd, several row groups,
//! page statistics) plus buffered batches, queried through `QueryEngine`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde_json::json;
use sluice_sink::PortErrorKind;
use sluice_sink::output::QueryOutput;
use sluice_tsdb::provider::SnapshotSource;
use sluice_tsdb::query::{QueryEngine, QueryError, QueryOptions};
use sluice_tsdb::snapshot::{FileRef, TableSnapshot, time_type};

const HOUR: i64 = 3_600_000;
/// 2026-11-28T00:00:00Z.
const DAY0: i64 = 1_795_824_000_000;

fn engine() -> QueryEngine {
    engine_with(|_| {})
}

fn engine_with(tweak: impl FnOnce(&mut QueryOptions)) -> QueryEngine {
    let mut options =
        QueryOptions { timeout: Duration::from_secs(30), memory_limit_bytes: 256 << 20, max_rows: 10_000, threads: 2 };
    tweak(&mut options);
    QueryEngine::new(options).unwrap()
}

/// Writes `batches` to `path` as the storage engine does and describes the file.
fn write_parquet(path: &Path, batches: &[RecordBatch], row_group_rows: usize, chunk_start: i64) -> FileRef {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap()))
        .set_max_row_group_row_count(Some(row_group_rows))
        .set_statistics_enabled(EnabledStatistics::Page)
        .build();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = ArrowWriter::try_new(file, batches[0].schema(), Some(props)).unwrap();
    let (mut min, mut max, mut rows) = (i64::MAX, i64::MIN, 0u64);
    for batch in batches {
        writer.write(batch).unwrap();
        let times = batch.column(0).as_primitive::<arrow::datatypes::TimestampMillisecondType>();
        for t in times.iter().flatten() {
            min = min.min(t);
            max = max.max(t);
        }
        rows += batch.num_rows() as u64;
    }
    writer.close().unwrap();
    FileRef {
        path: path.to_path_buf(),
        size: std::fs::metadata(path).unwrap().len(),
        rows,
        chunk_start,
        min_time: min,
        max_time: max,
    }
}

fn ts_array(values: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from(values).with_timezone("UTC"))
}

/// `event_time`, `host` (text), `value` (double).
fn metrics_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("event_time", time_type(), false),
        Field::new("host", DataType::Utf8, true),
        Field::new("value", DataType::Float64, true),
    ]))
}

fn metrics_batch(times: Vec<i64>, hosts: Vec<&str>, values: Vec<f64>) -> RecordBatch {
    RecordBatch::try_new(
        metrics_schema(),
        vec![ts_array(times), Arc::new(StringArray::from(hosts)), Arc::new(Float64Array::from(values))],
    )
    .unwrap()
}

fn table(name: &str, schema: SchemaRef, files: Vec<FileRef>, buffered: Vec<RecordBatch>) -> Arc<dyn SnapshotSource> {
    Arc::new(TableSnapshot { name: name.into(), schema, time_column: "event_time".into(), files, buffered })
}

/// 24 one-hour files of `rows_per_hour` rows each (value = hour index), plus one buffered row in hour 24.
fn day_table(dir: &Path, rows_per_hour: i64) -> Arc<dyn SnapshotSource> {
    let mut files = Vec::new();
    for hour in 0..24 {
        let start = DAY0 + hour * HOUR;
        let times: Vec<i64> = (0..rows_per_hour).map(|i| start + i * (HOUR / rows_per_hour)).collect();
        let hosts: Vec<&str> = (0..rows_per_hour).map(|i| if i % 2 == 0 { "a" } else { "b" }).collect();
        let values: Vec<f64> = (0..rows_per_hour).map(|_| hour as f64).collect();
        let path = dir.join(format!("metrics/chunks/{start}/{:016}.parquet", 0));
        files.push(write_parquet(&path, &[metrics_batch(times, hosts, values)], 16, start));
    }
    let buffered = vec![metrics_batch(vec![DAY0 + 24 * HOUR + 5], vec!["c"], vec![24.0])];
    table("metrics", metrics_schema(), files, buffered)
}

fn json(out: &QueryOutput) -> serde_json::Value {
    out.to_json()
}

#[tokio::test]
async fn group_by_time_bucket_over_files_and_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = day_table(dir.path(), 60);
    let out = engine()
        .query(
            "SELECT time_bucket('6 hours', event_time) AS bucket, count(*) AS n, avg(value) AS v \
             FROM metrics GROUP BY 1 ORDER BY 1",
            vec![("metrics".into(), metrics)],
        )
        .await
        .unwrap();
    let rows = json(&out)["rows"].clone();
    // 2026-11-28 00:00, 06:00, 12:00, 18:00 (files) and 2026-11-29 00:00 (the buffered row).
    assert_eq!(rows.as_array().unwrap().len(), 5, "{rows}");
    assert_eq!(rows[0], json!({"bucket": "2026-11-28T00:00:00.000Z", "n": 360, "v": 2.5}));
    assert_eq!(rows[3], json!({"bucket": "2026-11-28T18:00:00.000Z", "n": 360, "v": 20.5}));
    assert_eq!(rows[4], json!({"bucket": "2026-11-29T00:00:00.000Z", "n": 1, "v": 24.0}));
    assert_eq!(json(&out)["columns"][0], json!({"name": "bucket", "type": "timestamp"}));
    assert_eq!(out.stats.files_total, 24);
    assert_eq!(out.stats.files_scanned, 24);
    assert_eq!(out.stats.rows, 5);

    // The INTERVAL form and date_bin agree with the string form.
    let out = engine()
        .query(
            "SELECT count(*) AS n FROM metrics \
             WHERE time_bucket(INTERVAL '1 minute', event_time) <> date_bin(INTERVAL '1 minute', event_time)",
            vec![("metrics".into(), day_table(dir.path(), 60))],
        )
        .await
        .unwrap();
    assert_eq!(json(&out)["rows"][0]["n"], 0);
}

#[tokio::test]
async fn one_hour_query_scans_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = day_table(dir.path(), 60);
    let engine = engine();
    let hour5 = "2026-11-28T05:00:00Z";
    let hour6 = "2026-11-28T06:00:00Z";
    for sql in [
        format!(
            "SELECT count(*) AS n, min(value) AS v FROM metrics WHERE event_time >= '{hour5}' AND event_time < '{hour6}'"
        ),
        format!(
            "SELECT count(*) AS n, min(value) AS v FROM metrics \
             WHERE event_time >= TIMESTAMP '{hour5}' AND event_time < TIMESTAMP '{hour5}' + INTERVAL '1 hour'"
        ),
        format!(
            "SELECT count(*) AS n, min(value) AS v FROM metrics \
             WHERE event_time BETWEEN '{hour5}' AND '2026-11-28T05:59:59.999Z'"
        ),
    ] {
        let out = engine.query(&sql, vec![("metrics".into(), metrics.clone())]).await.unwrap();
        assert_eq!(json(&out)["rows"][0], json!({"n": 60, "v": 5.0}), "{sql}");
        assert_eq!((out.stats.files_total, out.stats.files_scanned), (24, 1), "{sql}");
    }
    // A relative range (folded to a literal before the scan) beyond all data prunes every file.
    let out = engine
        .query(
            "SELECT count(*) AS n FROM metrics WHERE event_time > now() + INTERVAL '3650 days'",
            vec![("metrics".into(), metrics.clone())],
        )
        .await
        .unwrap();
    assert_eq!(json(&out)["rows"][0]["n"], 0);
    assert_eq!(out.stats.files_scanned, 0);
    // Without a time predicate every file is read.
    let out =
        engine.query("SELECT count(*) AS n FROM metrics", vec![("metrics".into(), metrics.clone())]).await.unwrap();
    assert_eq!(json(&out)["rows"][0]["n"], 24 * 60 + 1);
    assert_eq!(out.stats.files_scanned, 24);
}

#[tokio::test]
async fn row_groups_are_pruned_by_statistics() {
    let dir = tempfile::tempdir().unwrap();
    // One file, 4 row groups of 16 rows, one minute apart each.
    let times: Vec<i64> = (0..64).map(|i| DAY0 + i * 60_000).collect();
    let batch = metrics_batch(times, vec!["a"; 64], (0..64).map(f64::from).collect());
    let file = write_parquet(&dir.path().join("one.parquet"), &[batch], 16, DAY0);
    let metrics = table("metrics", metrics_schema(), vec![file], vec![]);
    let out = engine()
        .query(
            "EXPLAIN ANALYZE SELECT count(*) FROM metrics \
             WHERE event_time >= '2026-11-28T00:20:00Z' AND event_time < '2026-11-28T00:30:00Z'",
            vec![("metrics".into(), metrics)],
        )
        .await
        .unwrap();
    let text = out.to_table_text();
    assert!(text.contains("row_groups_pruned_statistics=4 total → 1 matched"), "{text}");
}

#[tokio::test]
async fn aggregates_distinct_percentiles_and_joins() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = day_table(dir.path(), 60);
    let hosts_schema = Arc::new(Schema::new(vec![
        Field::new("event_time", time_type(), false),
        Field::new("host", DataType::Utf8, true),
        Field::new("region", DataType::Utf8, true),
    ]));
    let hosts_batch = RecordBatch::try_new(
        hosts_schema.clone(),
        vec![
            ts_array(vec![DAY0, DAY0]),
            Arc::new(StringArray::from(vec!["a", "b"])),
            Arc::new(StringArray::from(vec!["eu", "us"])),
        ],
    )
    .unwrap();
    let hosts_file = write_parquet(&dir.path().join("hosts.parquet"), &[hosts_batch], 16, DAY0);
    let hosts = table("hosts.v1-prod", hosts_schema, vec![hosts_file], vec![]);
    let engine = engine();
    let tables = || vec![("orders.late".to_string(), metrics.clone()), ("hosts.v1-prod".to_string(), hosts.clone())];

    let out = engine
        .query(
            "SELECT count(DISTINCT host) AS hosts, approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY value) AS p50, \
             approx_distinct(host) AS distinct_hosts FROM \"orders.late\"",
            tables(),
        )
        .await
        .unwrap();
    let row = &json(&out)["rows"][0];
    assert_eq!(row["hosts"], 3);
    assert_eq!(row["distinct_hosts"], 3);
    let p50 = row["p50"].as_f64().unwrap();
    assert!((11.0..=12.5).contains(&p50), "{row}");

    let out = engine
        .query(
            "SELECT h.region, count(*) AS n FROM \"orders.late\" m JOIN \"hosts.v1-prod\" h ON m.host = h.host \
             GROUP BY h.region ORDER BY h.region",
            tables(),
        )
        .await
        .unwrap();
    assert_eq!(json(&out)["rows"], json!([{"region": "eu", "n": 720}, {"region": "us", "n": 720}]));

    let out = engine.query("SHOW TABLES", tables()).await.unwrap();
    let names: Vec<String> =
        out.batches.iter().flat_map(|b| strings(b.column_by_name("table_name").unwrap())).collect();
    assert!(names.contains(&"orders.late".to_string()) && names.contains(&"hosts.v1-prod".to_string()), "{names:?}");
    let out = engine.query("DESCRIBE \"hosts.v1-prod\"", tables()).await.unwrap();
    assert_eq!(out.num_rows(), 3);
}

fn strings(array: &ArrayRef) -> Vec<String> {
    let array = arrow::compute::cast(array, &DataType::Utf8).unwrap();
    array.as_string::<i32>().iter().map(|s| s.unwrap_or_default().to_string()).collect()
}

#[tokio::test]
async fn schema_evolution_reads_nulls_and_casts() {
    let dir = tempfile::tempdir().unwrap();
    // File A: no `x`, `n` is Int64. File B: `x` Float64, `n` Int64. Buffered: `x` Int64. Table: x Float64,
    // n Float64 (widened after both files were written).
    let schema_a = Arc::new(Schema::new(vec![
        Field::new("event_time", time_type(), false),
        Field::new("n", DataType::Int64, true),
    ]));
    let a = RecordBatch::try_new(schema_a, vec![ts_array(vec![DAY0]), Arc::new(Int64Array::from(vec![1]))]).unwrap();
    let schema_b = Arc::new(Schema::new(vec![
        Field::new("event_time", time_type(), false),
        Field::new("n", DataType::Int64, true),
        Field::new("x", DataType::Float64, true),
    ]));
    let b = RecordBatch::try_new(
        schema_b,
        vec![ts_array(vec![DAY0 + HOUR]), Arc::new(Int64Array::from(vec![2])), Arc::new(Float64Array::from(vec![2.5]))],
    )
    .unwrap();
    let schema_buf = Arc::new(Schema::new(vec![
        Field::new("event_time", time_type(), false),
        Field::new("x", DataType::Int64, true),
    ]));
    let buf =
        RecordBatch::try_new(schema_buf, vec![ts_array(vec![DAY0 + 2 * HOUR]), Arc::new(Int64Array::from(vec![7]))])
            .unwrap();
    let table_schema = Arc::new(Schema::new(vec![
        Field::new("event_time", time_type(), false),
        Field::new("n", DataType::Float64, true),
        Field::new("x", DataType::Float64, true),
    ]));
    let files = vec![
        write_parquet(&dir.path().join("a.parquet"), &[a], 16, DAY0),
        write_parquet(&dir.path().join("b.parquet"), &[b], 16, DAY0 + HOUR),
    ];
    let t = table("evolving", table_schema, files, vec![buf]);
    let engine = engine();
    let out = engine
        .query("SELECT n, x FROM evolving ORDER BY event_time", vec![("evolving".into(), t.clone())])
        .await
        .unwrap();
    assert_eq!(out.schema.field(0).data_type(), &DataType::Float64);
    assert_eq!(json(&out)["rows"], json!([{"n": 1.0, "x": null}, {"n": 2.0, "x": 2.5}, {"n": null, "x": 7.0}]));
    // Predicates on evolved columns work too (and are used for pruning without errors).
    let out = engine
        .query("SELECT count(*) AS c FROM evolving WHERE x > 2 AND n IS NULL", vec![("evolving".into(), t)])
        .await
        .unwrap();
    assert_eq!(json(&out)["rows"][0]["c"], 1);
}

#[tokio::test]
async fn bad_sql_and_writes_are_refused() {
    let engine = engine();
    let err = engine.query("SELEC 1", vec![]).await.unwrap_err();
    assert!(matches!(err, QueryError::BadQuery { .. }), "{err:?}");
    assert!(err.to_string().contains("Line: 1, Column: 1"), "{err}");
    assert_eq!((err.kind(), err.code()), (PortErrorKind::InvalidArgument, "bad_query"));

    let err = engine.query("SELECT nope FROM missing", vec![]).await.unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");

    for sql in [
        "CREATE TABLE t AS SELECT 1",
        "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/etc'",
        "INSERT INTO metrics VALUES (now(), 'a', 1.0)",
        "DROP TABLE metrics",
        "COPY (SELECT 1) TO '/tmp/sluice-should-not-exist.csv'",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let err = engine.query(sql, vec![("metrics".into(), day_table(dir.path(), 2))]).await.unwrap_err();
        assert!(matches!(err, QueryError::BadQuery { .. }), "{sql}: {err:?}");
    }
    assert!(!Path::new("/tmp/sluice-should-not-exist.csv").exists());
    // EXPLAIN is fine.
    let out = engine.query("EXPLAIN SELECT 1", vec![]).await.unwrap();
    assert!(out.num_rows() > 0);
}

#[tokio::test]
async fn timeout_cancels_and_the_engine_keeps_working() {
    let engine = engine_with(|o| o.timeout = Duration::from_millis(200));
    let started = Instant::now();
    let err = engine
        .query(
            // Cheap batches (100 x 8192 pairs) but 10^10 pairs in all: slow, yet it yields between batches.
            "SELECT count(*) FROM generate_series(1, 100) a(x) CROSS JOIN generate_series(1, 100000000) b(y) \
             WHERE x + y = 3",
            vec![],
        )
        .await
        .unwrap_err();
    eprintln!("timeout after {:?}", started.elapsed());
    assert!(matches!(err, QueryError::Timeout { .. }), "{err:?}");
    assert_eq!(err.to_string(), "query exceeded the 200ms timeout");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    let out = engine.query("SELECT 1 AS one", vec![]).await.unwrap();
    assert_eq!(json(&out)["rows"], json!([{"one": 1}]));
}

#[tokio::test]
async fn memory_limit_fails_the_query_and_the_next_one_works() {
    let engine = engine_with(|o| o.memory_limit_bytes = 1 << 20);
    let err = engine
        .query("SELECT x, count(*) FROM generate_series(1, 3000000) t(x) GROUP BY x ORDER BY 2 DESC, 1 LIMIT 3", vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::ResourcesExhausted { .. }), "{err:?}");
    assert_eq!(err.to_string(), "query exceeded the 1 MiB memory limit");
    assert_eq!(err.kind(), PortErrorKind::ResourceExhausted);
    let out = engine.query("SELECT count(*) AS n FROM generate_series(1, 1000)", vec![]).await.unwrap();
    assert_eq!(json(&out)["rows"][0]["n"], 1000);
}

#[tokio::test]
async fn max_rows_truncates() {
    let engine = engine_with(|o| o.max_rows = 10);
    let out = engine.query("SELECT value AS v FROM generate_series(1, 100)", vec![]).await.unwrap();
    assert_eq!(out.num_rows(), 10);
    assert!(out.truncated);
    assert_eq!(json(&out)["truncated"], true);
    let out = engine.query("SELECT value AS v FROM generate_series(1, 10)", vec![]).await.unwrap();
    assert_eq!(out.num_rows(), 10);
    assert!(!out.truncated);
    assert!(json(&out).get("truncated").is_none());
}

#[tokio::test]
async fn output_formats() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = day_table(dir.path(), 4);
    let out = engine()
        .query(
            "SELECT event_time, host, value FROM metrics WHERE event_time < '2026-11-28T01:00:00Z' ORDER BY event_time",
            vec![("metrics".into(), metrics)],
        )
        .await
        .unwrap();
    assert_eq!(
        json(&out),
        json!({
            "columns": [{"name": "event_time", "type": "timestamp"}, {"name": "host", "type": "text"},
                        {"name": "value", "type": "double"}],
            "rows": [
                {"event_time": "2026-11-28T00:00:00.000Z", "host": "a", "value": 0.0},
                {"event_time": "2026-11-28T00:15:00.000Z", "host": "b", "value": 0.0},
                {"event_time": "2026-11-28T00:30:00.000Z", "host": "a", "value": 0.0},
                {"event_time": "2026-11-28T00:45:00.000Z", "host": "b", "value": 0.0},
            ]
        })
    );
    let csv = String::from_utf8(out.to_csv().unwrap()).unwrap();
    assert_eq!(csv.lines().next(), Some("event_time,host,value"));
    assert_eq!(csv.lines().nth(1), Some("2026-11-28T00:00:00.000Z,a,0.0"));
    assert_eq!(csv.lines().count(), 5);

    let ipc = out.to_arrow_ipc().unwrap();
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None).unwrap();
    assert_eq!(reader.schema(), out.schema);
    let batches = reader.collect::<Result<Vec<_>, _>>().unwrap();
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 4);
    let times = batches[0].column(0);
    assert_eq!(times.data_type(), &time_type());
    assert!(!times.is_null(0));

    let text = out.to_table_text();
    assert!(text.contains("| event_time "), "{text}");
    assert!(text.contains("2026-11-28T00:45:00Z"), "{text}");
}

#[test]
fn callable_from_another_runtime_and_droppable_anywhere() {
    // A current-thread runtime without a time driver: timeouts live on the engine's own runtime.
    let caller = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let engine = engine();
    let out = caller.block_on(engine.query("SELECT 41 + 1 AS answer", vec![])).unwrap();
    assert_eq!(json(&out)["rows"], json!([{"answer": 42}]));
    caller.block_on(async move { drop(engine) });
}
