//! Storage engine tests: writes, flushes, compaction, retention, schema evolution, keyed upserts, crashes at every
//! failpoint, corrupt manifests, and a property test over random operation sequences.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type, TimestampMillisecondType};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use sluice_tsdb::error::StoreError;
use sluice_tsdb::manifest::TableKind;
use sluice_tsdb::snapshot::{TableSnapshot, adapt_batch};
use sluice_tsdb::store::{Store, StoreOptions};
use sluice_tsdb::table::{Table, TableOptions, TableSpec};

const HOUR: i64 = 3_600_000;

fn opts() -> TableOptions {
    TableOptions { delete_grace: Duration::ZERO, ..TableOptions::default() }
}

/// Writes raw rows `offsets` of `partition` with event time `time(offset)` and the given JSON value.
fn write_raw(table: &Table, partition: u32, offsets: std::ops::Range<u64>, time: impl Fn(u64) -> i64, value: &str) {
    let mut b = table.builder();
    for o in offsets.clone() {
        b.raw_row(time(o), 0, partition, o, Some(b"key"), None, value.as_bytes()).unwrap();
    }
    table.write(b, BTreeMap::from([(partition, offsets.end)])).unwrap();
}

fn read_file(path: &Path) -> Vec<RecordBatch> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap().build().unwrap();
    reader.map(|b| b.unwrap()).collect()
}

/// Every visible row of a snapshot, adapted to its schema.
fn all_rows(snap: &TableSnapshot) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for f in &snap.files {
        for b in read_file(&f.path) {
            out.push(adapt_batch(&b, &snap.schema).unwrap());
        }
    }
    for b in &snap.buffered {
        out.push(adapt_batch(b, &snap.schema).unwrap());
    }
    out
}

/// (partition, offset) of every visible row; panics on duplicates.
fn raw_ids(table: &Table) -> BTreeSet<(i32, i64)> {
    let mut ids = BTreeSet::new();
    for b in all_rows(&table.snapshot()) {
        let p = b.column_by_name("partition").unwrap().as_primitive::<Int32Type>();
        let o = b.column_by_name("offset").unwrap().as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            assert!(ids.insert((p.value(i), o.value(i))), "duplicate row {:?}", (p.value(i), o.value(i)));
        }
    }
    ids
}

fn expected_ids(offsets: &BTreeMap<u32, u64>) -> BTreeSet<(i32, i64)> {
    offsets.iter().flat_map(|(&p, &n)| (0..n).map(move |o| (p as i32, o as i64))).collect()
}

/// All `.parquet` files under a table directory, and whether anything else (tmp files) is there.
fn parquet_files(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let chunks = dir.join("chunks");
    if let Ok(entries) = std::fs::read_dir(&chunks) {
        for c in entries {
            for f in std::fs::read_dir(c.unwrap().path()).unwrap() {
                out.insert(f.unwrap().path());
            }
        }
    }
    out
}

fn assert_no_leftovers(table: &Table) {
    let listed: BTreeSet<PathBuf> = table.snapshot().files.into_iter().map(|f| f.path).collect();
    assert_eq!(parquet_files(table.dir()), listed);
    assert!(!table.dir().join("manifest.json.tmp").exists());
}

#[test]
fn write_is_visible_at_once_and_flush_writes_standard_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let table = Table::create_or_open(dir.path(), "events", TableSpec::raw(), opts()).unwrap();
    // Out of time order on purpose: files must come out sorted.
    write_raw(&table, 0, 0..100, |o| 1_000_000 - o as i64 * 10, r#"{"user":"u1","n":5}"#);
    assert_eq!(table.snapshot().buffered.iter().map(|b| b.num_rows()).sum::<usize>(), 100);
    assert!(table.committed_offsets().is_empty());
    assert_eq!(table.flush().unwrap(), 100);
    assert_eq!(table.committed_offsets(), BTreeMap::from([(0, 100)]));
    let snap = table.snapshot();
    assert!(snap.buffered.is_empty());
    assert_eq!(snap.files.len(), 1);
    let f = &snap.files[0];
    assert_eq!((f.rows, f.min_time, f.max_time, f.chunk_start), (100, 1_000_000 - 990, 1_000_000, 0));
    let meta = ParquetRecordBatchReaderBuilder::try_new(File::open(&f.path).unwrap()).unwrap().metadata().clone();
    let col = meta.row_group(0).column(0);
    assert!(matches!(col.compression(), Compression::ZSTD(_)));
    assert!(col.statistics().is_some());
    let batches = read_file(&f.path);
    let t: Vec<i64> =
        batches.iter().flat_map(|b| b.column(0).as_primitive::<TimestampMillisecondType>().values().to_vec()).collect();
    assert!(t.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(batches[0].schema().field(0).data_type(), &sluice_tsdb::snapshot::time_type());
    assert_eq!(raw_ids(&table), expected_ids(&BTreeMap::from([(0, 100)])));
    let info = table.info();
    assert_eq!((info.rows, info.buffered_rows, info.kind), (100, 0, TableKind::Raw));
    assert_eq!(info.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>()[6..], ["user", "n"]);
    serde_json::to_string(&info).unwrap();
    // Reopen: same rows, same offsets.
    drop(table);
    let table = Table::open(dir.path(), "events", opts()).unwrap();
    assert_eq!(table.committed_offsets(), BTreeMap::from([(0, 100)]));
    assert_eq!(raw_ids(&table).len(), 100);
}

#[test]
fn flush_by_rows_and_by_age_and_one_file_per_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let options = TableOptions { flush_rows: 50, flush_interval: Duration::from_millis(1), ..opts() };
    let table = Table::create_or_open(dir.path(), "t", TableSpec::raw(), options).unwrap();
    let mut b = table.builder();
    for o in 0..60u64 {
        b.raw_row((o as i64 % 3) * HOUR + 5, 0, 1, o, None, None, b"{}").unwrap();
    }
    assert!(table.write(b, BTreeMap::from([(1, 60)])).unwrap().flushed);
    let snap = table.snapshot();
    assert_eq!(snap.files.len(), 3);
    assert_eq!(snap.files.iter().map(|f| f.chunk_start).collect::<Vec<_>>(), [0, HOUR, 2 * HOUR]);
    write_raw(&table, 1, 60..61, |_| 7, "{}");
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(table.flush_if_older(Instant::now()).unwrap(), 1);
    assert_eq!(table.flush_if_older(Instant::now()).unwrap(), 0);
    assert_eq!(table.committed_offsets(), BTreeMap::from([(1, 61)]));
    assert_no_leftovers(&table);
}

#[test]
fn schema_evolution_across_flushed_files() {
    let dir = tempfile::tempdir().unwrap();
    let table = Table::create_or_open(dir.path(), "evo", TableSpec::raw(), opts()).unwrap();
    write_raw(&table, 0, 0..3, |o| o as i64, r#"{"a":1}"#);
    table.flush().unwrap();
    write_raw(&table, 0, 3..6, |o| o as i64, r#"{"a":1.5,"b":"new"}"#);
    table.flush().unwrap();
    let snap = table.snapshot();
    let a_type = snap.schema.field_with_name("a").unwrap().data_type().clone();
    assert_eq!(a_type, DataType::Float64);
    // The old file still has Int64 and no `b`; adapt_batch makes it fit.
    let old = read_file(&snap.files[0].path).remove(0);
    assert_eq!(old.schema().field_with_name("a").unwrap().data_type(), &DataType::Int64);
    assert!(old.column_by_name("b").is_none());
    let adapted = adapt_batch(&old, &snap.schema).unwrap();
    assert_eq!(adapted.column_by_name("b").unwrap().null_count(), 3);
    assert_eq!(adapted.column_by_name("a").unwrap().as_primitive::<Float64Type>().value(0), 1.0);
    // After a reopen the widened type and the new column are still there.
    drop(table);
    let table = Table::open(dir.path(), "evo", opts()).unwrap();
    assert_eq!(table.snapshot().schema, snap.schema);
    // And compaction merges old and new files into the current schema.
    assert_eq!(table.compact().unwrap(), 0, "a chunk with 2 files that is still open is not compacted");
    let options = TableOptions { compact_min_files: 2, ..opts() };
    drop(table);
    let table = Table::open(dir.path(), "evo", options).unwrap();
    assert_eq!(table.compact().unwrap(), 1);
    let snap = table.snapshot();
    assert_eq!(snap.files.len(), 1);
    let merged = read_file(&snap.files[0].path).remove(0);
    assert_eq!(merged.schema(), snap.schema);
    let b = merged.column_by_name("b").unwrap().as_string::<i32>();
    assert_eq!(b.iter().filter(|v| *v == Some("new")).count(), 3);
    assert_no_leftovers(&table);
}

#[test]
fn compaction_merges_small_files_streaming_and_sorted() {
    let dir = tempfile::tempdir().unwrap();
    let options = TableOptions { compact_min_files: 4, ..opts() };
    let table = Table::create_or_open(dir.path(), "c", TableSpec::raw(), options).unwrap();
    for i in 0..5u64 {
        // Interleaved times across files.
        write_raw(&table, 0, i * 1000..(i + 1) * 1000, |o| ((o * 7919) % 5000) as i64, r#"{"x":1}"#);
        table.flush().unwrap();
    }
    assert_eq!(table.snapshot().files.len(), 5);
    assert_eq!(table.compact().unwrap(), 1);
    let snap = table.snapshot();
    assert_eq!(snap.files.len(), 1);
    assert_eq!(snap.files[0].rows, 5000);
    let t: Vec<i64> = read_file(&snap.files[0].path)
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<TimestampMillisecondType>().values().to_vec())
        .collect();
    assert_eq!(t.len(), 5000);
    assert!(t.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(raw_ids(&table), expected_ids(&BTreeMap::from([(0, 5000)])));
    assert_eq!(table.compact().unwrap(), 0);
    assert_no_leftovers(&table);

    // Closed chunks: an old chunk with 2 files is compacted once the table's newest row is past its end.
    write_raw(&table, 0, 5000..5010, |_| 10, "{}");
    table.flush().unwrap();
    assert_eq!(table.compact().unwrap(), 0);
    write_raw(&table, 0, 5010..5011, |_| 5 * HOUR, "{}");
    table.flush().unwrap();
    assert_eq!(table.compact().unwrap(), 1);
    assert_eq!(table.info().chunks[0].files, 1);
}

#[test]
fn compaction_splits_by_target_size() {
    let dir = tempfile::tempdir().unwrap();
    let options = TableOptions { compact_min_files: 3, target_file_bytes: 100_000, row_group_rows: 1000, ..opts() };
    let table = Table::create_or_open(dir.path(), "s", TableSpec::raw(), options).unwrap();
    for i in 0..3u64 {
        let mut b = table.builder();
        for o in i * 4000..(i + 1) * 4000 {
            let v = format!(r#"{{"r":"{:x}"}}"#, o.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            b.raw_row(o as i64, 0, 0, o, None, None, v.as_bytes()).unwrap();
        }
        table.write(b, BTreeMap::from([(0, (i + 1) * 4000)])).unwrap();
        table.flush().unwrap();
    }
    let before: Vec<u64> = table.snapshot().files.iter().map(|f| f.size).collect();
    assert!(before.iter().all(|&s| s < 75_000), "{before:?}");
    assert_eq!(table.compact().unwrap(), 1);
    let files = table.snapshot().files;
    assert!(files.len() >= 2, "{files:?}");
    assert_eq!(files.iter().map(|f| f.rows).sum::<u64>(), 12_000);
    assert_eq!(raw_ids(&table).len(), 12_000);
}

#[test]
fn retention_drops_whole_old_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let table = Table::create_or_open(dir.path(), "r", TableSpec::raw(), opts()).unwrap();
    for h in 0..4 {
        write_raw(&table, 0, h as u64..h as u64 + 1, |_| h * HOUR + 1, "{}");
    }
    table.flush().unwrap();
    assert_eq!(table.apply_retention(10 * HOUR).unwrap(), 0, "no retention set");
    table.set_retention(Some(2 * HOUR)).unwrap();
    assert!(table.set_retention(Some(0)).is_err());
    // now - retention = 3h: chunks [0,1h), [1h,2h), [2h,3h) are gone; [3h,4h) stays.
    assert_eq!(table.apply_retention(5 * HOUR).unwrap(), 3);
    let snap = table.snapshot();
    assert_eq!(snap.files.iter().map(|f| f.chunk_start).collect::<Vec<_>>(), [3 * HOUR]);
    assert_no_leftovers(&table);
    assert_eq!(table.committed_offsets(), BTreeMap::from([(0, 4)]));
    drop(table);
    let table = Table::open(dir.path(), "r", opts()).unwrap();
    assert_eq!(table.info().retention_ms, Some(2 * HOUR));
    assert_eq!(table.info().chunks.len(), 1);
}

#[test]
fn chunk_width_change_is_durable_and_keeps_old_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let table = Table::create_or_open(dir.path(), "w", TableSpec::raw(), opts()).unwrap();
    write_raw(&table, 0, 0..1, |_| 30 * 60_000, "{}");
    table.flush().unwrap();
    table.set_chunk_width(24 * HOUR).unwrap();
    assert!(table.set_chunk_width(0).is_err());
    write_raw(&table, 0, 1..3, |o| if o == 1 { 40 * 60_000 } else { 5 * HOUR }, "{}");
    table.flush().unwrap();
    let chunks: Vec<(i64, i64)> = table.info().chunks.iter().map(|c| (c.start_ms, c.end_ms)).collect();
    // The old 1 h chunk keeps its bounds and takes the row inside it; the new day chunk starts after it.
    assert_eq!(chunks, [(0, HOUR), (HOUR, 24 * HOUR)]);
    drop(table);
    let table = Table::open(dir.path(), "w", opts()).unwrap();
    assert_eq!(table.info().chunk_width_ms, 24 * HOUR);
}

fn write_result(table: &Table, ws: i64, key: &str, n: Option<i64>, offset: u64) {
    let mut b = table.builder();
    let json = n.map(|n| format!(r#"{{"window_start":"x","window_end":"y","n":{n}}}"#));
    b.result_row(ws, ws + 60_000, key, json.as_deref().map(str::as_bytes)).unwrap();
    table.write(b, BTreeMap::from([(0, offset)])).unwrap();
}

/// (window_start, key) -> n of every visible results row; panics on two rows for one key.
fn results(table: &Table) -> BTreeMap<(i64, String), i64> {
    let mut out = BTreeMap::new();
    for b in all_rows(&table.snapshot()) {
        let ws = b.column(0).as_primitive::<TimestampMillisecondType>();
        let k = b.column(2).as_string::<i32>();
        let n = b.column_by_name("n").unwrap().as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let prev = out.insert((ws.value(i), k.value(i).to_string()), n.value(i));
            assert!(prev.is_none(), "two rows for key {:?}", (ws.value(i), k.value(i)));
        }
    }
    out
}

#[test]
fn keyed_upserts_and_deletes_across_flushes_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let table = Table::create_or_open(dir.path(), "job", TableSpec::results(), opts()).unwrap();
    write_result(&table, 0, "a", Some(1), 1);
    write_result(&table, 0, "a", Some(2), 2);
    write_result(&table, 0, "b", Some(5), 3);
    write_result(&table, 0, "c", Some(7), 4);
    write_result(&table, 0, "c", None, 5);
    assert_eq!(results(&table), BTreeMap::from([((0, "a".into()), 2), ((0, "b".into()), 5)]));
    table.flush().unwrap();
    assert_eq!(table.snapshot().files.len(), 1);
    assert_eq!(results(&table), BTreeMap::from([((0, "a".into()), 2), ((0, "b".into()), 5)]));
    // An update of a flushed key stays hidden (old row shown) until the flush; a new key shows at once.
    write_result(&table, 0, "a", Some(3), 6);
    write_result(&table, 0, "d", Some(9), 7);
    write_result(&table, 0, "b", None, 8);
    assert_eq!(results(&table), BTreeMap::from([((0, "a".into()), 2), ((0, "b".into()), 5), ((0, "d".into()), 9)]));
    table.flush().unwrap();
    let expect = BTreeMap::from([((0, "a".into()), 3), ((0, "d".into()), 9)]);
    assert_eq!(results(&table), expect);
    assert_eq!(table.snapshot().files.len(), 1, "one file per chunk after a keyed flush");
    assert_no_leftovers(&table);
    // Duplicate `final` rows after a replay are absorbed.
    write_result(&table, 0, "a", Some(3), 9);
    table.flush().unwrap();
    assert_eq!(results(&table), expect);
    drop(table);
    let table = Table::open(dir.path(), "job", opts()).unwrap();
    assert_eq!(results(&table), expect);
    assert_eq!(table.committed_offsets(), BTreeMap::from([(0, 9)]));
    // After reopen the committed keys are known again: an update is hidden until flushed.
    write_result(&table, 0, "d", Some(10), 10);
    assert_eq!(results(&table), expect);
    // Deleting everything in a chunk removes its file.
    write_result(&table, 0, "a", None, 11);
    write_result(&table, 0, "d", None, 12);
    table.flush().unwrap();
    assert!(results(&table).is_empty());
    assert!(table.snapshot().files.is_empty());
    assert_no_leftovers(&table);
}

/// A failpoint that fails at `step` (once armed).
fn failing_at(step: &'static str) -> (TableOptions, Arc<Mutex<bool>>) {
    let armed = Arc::new(Mutex::new(false));
    let a = armed.clone();
    let failpoint: sluice_tsdb::table::Failpoint =
        Arc::new(
            move |s: &str| {
                if s == step && *a.lock().unwrap() { Err(std::io::Error::other("injected")) } else { Ok(()) }
            },
        );
    (TableOptions { failpoint: Some(failpoint), compact_min_files: 3, ..opts() }, armed)
}

#[test]
fn crash_at_every_raw_flush_and_compaction_step() {
    let steps = [
        "flush:files_written",
        "flush:manifest_written",
        "flush:committed",
        "compact:files_written",
        "compact:manifest_written",
        "compact:committed",
    ];
    for step in steps {
        let dir = tempfile::tempdir().unwrap();
        let (options, armed) = failing_at(step);
        let table = Table::create_or_open(dir.path(), "t", TableSpec::raw(), options).unwrap();
        for i in 0..3u64 {
            write_raw(&table, 0, i * 10..i * 10 + 10, |o| o as i64, r#"{"v":1}"#);
            write_raw(&table, 1, i * 10..i * 10 + 10, |o| o as i64, r#"{"v":2}"#);
            table.flush().unwrap();
        }
        write_raw(&table, 0, 30..35, |o| o as i64, r#"{"v":3}"#);
        *armed.lock().unwrap() = true;
        let err = if step.starts_with("flush") { table.flush() } else { table.compact() }.unwrap_err();
        assert!(matches!(err, StoreError::Injected { .. }), "{step}: {err}");
        drop(table);
        let (options, _) = failing_at(step);
        let table = Table::open(dir.path(), "t", options).unwrap();
        let offsets = table.committed_offsets();
        assert_eq!(raw_ids(&table), expected_ids(&offsets), "{step}");
        let expect_p0 = if step == "flush:committed" { 35 } else { 30 };
        assert_eq!(offsets, BTreeMap::from([(0, expect_p0), (1, 30)]), "{step}");
        assert_no_leftovers(&table);
        // The table works normally afterwards.
        let resume = offsets[&0];
        write_raw(&table, 0, resume..40, |o| o as i64, r#"{"v":4}"#);
        table.flush().unwrap();
        table.compact().unwrap();
        assert_eq!(raw_ids(&table), expected_ids(&BTreeMap::from([(0, 40), (1, 30)])), "{step}");
        assert_no_leftovers(&table);
    }
}

#[test]
fn crash_at_every_keyed_flush_step() {
    for step in ["flush:files_written", "flush:manifest_written", "flush:committed"] {
        let dir = tempfile::tempdir().unwrap();
        let (options, armed) = failing_at(step);
        let table = Table::create_or_open(dir.path(), "j", TableSpec::results(), options).unwrap();
        write_result(&table, 0, "a", Some(1), 1);
        write_result(&table, 0, "b", Some(1), 2);
        table.flush().unwrap();
        write_result(&table, 0, "a", Some(2), 3);
        write_result(&table, 0, "b", None, 4);
        *armed.lock().unwrap() = true;
        assert!(table.flush().unwrap_err().to_string().contains(step));
        drop(table);
        let table = Table::open(dir.path(), "j", opts()).unwrap();
        let committed = step == "flush:committed";
        let expect: BTreeMap<(i64, String), i64> = if committed {
            BTreeMap::from([((0, "a".into()), 2)])
        } else {
            BTreeMap::from([((0, "a".into()), 1), ((0, "b".into()), 1)])
        };
        assert_eq!(results(&table), expect, "{step}");
        assert_eq!(table.committed_offsets(), BTreeMap::from([(0, if committed { 4 } else { 2 })]));
        assert_no_leftovers(&table);
    }
}

#[test]
fn failed_flush_keeps_rows_buffered_and_retries() {
    let dir = tempfile::tempdir().unwrap();
    let (options, armed) = failing_at("flush:manifest_written");
    let table = Table::create_or_open(dir.path(), "t", TableSpec::raw(), options).unwrap();
    write_raw(&table, 0, 0..10, |o| o as i64, "{}");
    *armed.lock().unwrap() = true;
    assert!(table.flush().is_err());
    // Still visible, still buffered; a later write lands behind them.
    assert_eq!(raw_ids(&table).len(), 10);
    write_raw(&table, 0, 10..12, |o| o as i64, "{}");
    *armed.lock().unwrap() = false;
    assert_eq!(table.flush().unwrap(), 12);
    assert_eq!(table.committed_offsets(), BTreeMap::from([(0, 12)]));
    assert_eq!(raw_ids(&table), expected_ids(&BTreeMap::from([(0, 12)])));
    assert_no_leftovers(&table);
}

#[test]
fn corrupt_or_truncated_manifest_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let table = Table::create_or_open(dir.path(), "t", TableSpec::raw(), opts()).unwrap();
    write_raw(&table, 0, 0..10, |o| o as i64, "{}");
    table.flush().unwrap();
    drop(table);
    let path = dir.path().join("t").join("manifest.json");
    let good = std::fs::read(&path).unwrap();
    for bad in [&good[..good.len() / 3], &b""[..], &b"{}"[..], &b"not json"[..]] {
        std::fs::write(&path, bad).unwrap();
        let err = Table::open(dir.path(), "t", opts()).unwrap_err();
        assert_eq!(err.code(), "data_corrupt", "{err}");
        let err = Store::open(dir.path(), StoreOptions::default()).unwrap_err();
        assert_eq!(err.code(), "data_corrupt", "{err}");
    }
    // A committed file that vanished is an error too.
    std::fs::write(&path, &good).unwrap();
    let table = Table::open(dir.path(), "t", opts()).unwrap();
    let file = table.snapshot().files[0].path.clone();
    drop(table);
    std::fs::remove_file(&file).unwrap();
    assert!(matches!(Table::open(dir.path(), "t", opts()), Err(StoreError::MissingFile { .. })));
}

#[test]
fn stray_files_are_deleted_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let table = Table::create_or_open(dir.path(), "t", TableSpec::raw(), opts()).unwrap();
    write_raw(&table, 0, 0..10, |o| o as i64, "{}");
    table.flush().unwrap();
    let tdir = table.dir().to_path_buf();
    drop(table);
    std::fs::write(tdir.join("chunks/0/0000000000000099.parquet"), b"junk").unwrap();
    std::fs::create_dir_all(tdir.join("chunks/7200000")).unwrap();
    std::fs::write(tdir.join("chunks/7200000/0000000000000100.parquet"), b"junk").unwrap();
    std::fs::write(tdir.join("manifest.json.tmp"), b"junk").unwrap();
    let table = Table::open(dir.path(), "t", opts()).unwrap();
    assert_no_leftovers(&table);
    assert!(!tdir.join("chunks/7200000").exists());
    assert_eq!(raw_ids(&table).len(), 10);
}

#[test]
fn store_tables_names_declared_columns_and_drop() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions { table: opts() }).unwrap();
    for bad in ["", ".hidden", "a/b", "sp ace", &"x".repeat(250)] {
        let err = store.ensure_table(bad, TableSpec::raw()).unwrap_err();
        assert_eq!(err.code(), "invalid_table_name", "{bad:?}");
    }
    let spec = TableSpec { declared: vec![("amount".into(), DataType::Float64)], ..TableSpec::raw() };
    let t = store.ensure_table("orders.v1-x_y", spec.clone()).unwrap();
    assert!(Arc::ptr_eq(&t, &store.ensure_table("orders.v1-x_y", spec).unwrap()));
    let spec2 = TableSpec { declared: vec![("country".into(), DataType::Utf8)], ..TableSpec::raw() };
    store.ensure_table("orders.v1-x_y", spec2).unwrap();
    let cols: Vec<String> = t.info().columns.into_iter().map(|c| c.name).collect();
    assert_eq!(cols[6..], ["amount", "country"]);
    assert_eq!(store.ensure_table("orders.v1-x_y", TableSpec::results()).unwrap_err().code(), "wrong_table_kind");
    store.ensure_table("job1", TableSpec::results()).unwrap();
    write_raw(&t, 0, 0..5, |o| o as i64, r#"{"amount":3}"#);
    t.flush().unwrap();
    drop(t);
    drop(store);
    let store = Store::open(dir.path(), StoreOptions { table: opts() }).unwrap();
    let names: Vec<String> = store.list().into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["job1", "orders.v1-x_y"]);
    let t = store.table("orders.v1-x_y").unwrap();
    assert_eq!(t.snapshot().schema.field_with_name("amount").unwrap().data_type(), &DataType::Float64);
    assert_eq!(raw_ids(&t).len(), 5);
    store.drop_table("orders.v1-x_y").unwrap();
    assert!(store.table("orders.v1-x_y").is_none());
    assert_eq!(store.drop_table("orders.v1-x_y").unwrap_err().code(), "unknown_table");
    assert!(!dir.path().join("orders.v1-x_y").exists());
    drop(store);
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.list().len(), 1);
}

#[test]
fn maintenance_thread_flushes_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let options = TableOptions { flush_interval: Duration::from_millis(10), ..opts() };
    let store = Store::open(dir.path(), StoreOptions { table: options }).unwrap();
    let t = store.ensure_table("t", TableSpec::raw()).unwrap();
    write_raw(&t, 0, 0..3, |o| o as i64, "{}");
    let handle = store.start_maintenance(Duration::from_millis(5));
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.committed_offsets().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    handle.stop();
    assert_eq!(t.committed_offsets(), BTreeMap::from([(0, 3)]));
}

#[test]
fn concurrent_writers_and_readers_see_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let options = TableOptions { flush_rows: 500, ..opts() };
    let table = Arc::new(Table::create_or_open(dir.path(), "t", TableSpec::raw(), options).unwrap());
    let writers: Vec<_> = (0..2u32)
        .map(|p| {
            let table = table.clone();
            std::thread::spawn(move || {
                for i in 0..20u64 {
                    // Different fields per partition: the builders race on adding columns.
                    let value = if p == 0 { r#"{"a":1,"x":1}"# } else { r#"{"b":"s","x":"text"}"# };
                    write_raw(&table, p, i * 100..(i + 1) * 100, |o| o as i64, value);
                }
            })
        })
        .collect();
    let reader = {
        let table = table.clone();
        std::thread::spawn(move || {
            for _ in 0..20 {
                let _ = raw_ids(&table);
            }
        })
    };
    for w in writers {
        w.join().unwrap();
    }
    reader.join().unwrap();
    table.flush().unwrap();
    assert_eq!(raw_ids(&table), expected_ids(&BTreeMap::from([(0, 2000), (1, 2000)])));
    // `x` got one type; the other writer's values of `x` went to `_extra` and were counted.
    assert_eq!(table.info().conflicts, 2000);
}

mod prop {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Write { partition: u32, rows: u64, hour: i64, with_field: bool },
        Flush,
        Compact,
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u32..3, 1u64..40, 0i64..3, any::<bool>())
                .prop_map(|(partition, rows, hour, with_field)| Op::Write { partition, rows, hour, with_field }),
            2 => Just(Op::Flush),
            1 => Just(Op::Compact),
            1 => Just(Op::Reopen),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        #[test]
        fn random_operations_keep_exactly_the_rows_written(ops in proptest::collection::vec(op(), 1..25)) {
            let dir = tempfile::tempdir().unwrap();
            let options = TableOptions { compact_min_files: 3, flush_rows: 60, ..opts() };
            let mut table = Table::create_or_open(dir.path(), "p", TableSpec::raw(), options.clone()).unwrap();
            // The source position per partition: a reopen loses the buffer, and the "sink" resumes at the
            // committed offsets like the real one.
            let mut next: BTreeMap<u32, u64> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Write { partition, rows, hour, with_field } => {
                        let start = next.get(&partition).copied().unwrap_or(0);
                        let value = if with_field { r#"{"f":1.5,"s":"x"}"# } else { r#"{"f":2}"# };
                        write_raw(&table, partition, start..start + rows, |o| hour * HOUR + (o as i64 % 977), value);
                        next.insert(partition, start + rows);
                    }
                    Op::Flush => { table.flush().unwrap(); }
                    Op::Compact => { table.compact().unwrap(); }
                    Op::Reopen => {
                        drop(table);
                        table = Table::open(dir.path(), "p", options.clone()).unwrap();
                        next = table.committed_offsets();
                        assert_no_leftovers(&table);
                    }
                }
                prop_assert_eq!(raw_ids(&table), expected_ids(&next));
            }
            table.flush().unwrap();
            prop_assert_eq!(table.committed_offsets(), next.clone());
            drop(table);
            let table = Table::open(dir.path(), "p", options).unwrap();
            prop_assert_eq!(raw_ids(&table), expected_ids(&next));
            assert_no_leftovers(&table);
        }
    }
}

/// Throughput of building and flushing ~10-field events. Ignored: meaningful only in an optimized build
/// (`cargo test -p sluice-tsdb --release --test storage -- --ignored --nocapture throughput`).
#[test]
#[ignore]
fn throughput_of_raw_rows() {
    let dir = tempfile::tempdir().unwrap();
    let options = TableOptions { flush_rows: usize::MAX, ..opts() };
    let table = Table::create_or_open(dir.path(), "perf", TableSpec::raw(), options).unwrap();
    let rows = 200_000u64;
    let values: Vec<String> = (0..rows)
        .map(|i| {
            format!(
                r#"{{"user":"user-{}","country":"c{}","amount":{}.5,"qty":{},"ok":{},"ts":"2024-05-01T10:00:00Z","device":{{"os":"linux","ver":{}}},"tags":["a","b"],"note":"n{}"}}"#,
                i % 1000,
                i % 50,
                i % 300,
                i % 7,
                i % 2 == 0,
                i % 9,
                i
            )
        })
        .collect();
    let start = Instant::now();
    for chunk in 0..(rows / 1000) {
        let mut b = table.builder();
        for o in chunk * 1000..(chunk + 1) * 1000 {
            b.raw_row(o as i64, o as i64, 0, o, Some(b"k"), None, values[o as usize].as_bytes()).unwrap();
        }
        table.write(b, BTreeMap::from([(0, (chunk + 1) * 1000)])).unwrap();
    }
    let built = start.elapsed();
    table.flush().unwrap();
    let total = start.elapsed();
    println!(
        "{rows} rows: build {:.0} rows/s, build+flush {:.0} rows/s",
        rows as f64 / built.as_secs_f64(),
        rows as f64 / total.as_secs_f64()
    );
}

#[test]
fn chunks_follow_the_data_sparse_history_wide_dense_data_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let day = 24 * HOUR;
    let spec = TableSpec { chunk_width_ms: 28 * day, chunk_rows: Some(100), ..TableSpec::raw() };
    let table = Table::create_or_open(dir.path(), "b", spec, opts()).unwrap();
    let t0 = 1_795_824_000_000i64;
    // A year of sparse history, in order, flushed every 20 rows: four-week chunks, not 8,760 hourly ones.
    for from in (0..200u64).step_by(20) {
        write_raw(&table, 0, from..from + 20, |o| t0 + o as i64 * 365 * day / 200, "{}");
        table.flush().unwrap();
    }
    let chunks = |t: &Table| t.info().chunks.iter().map(|c| (c.start_ms, c.end_ms, c.rows)).collect::<Vec<_>>();
    let sparse = chunks(&table);
    assert!((13..=15).contains(&sparse.len()), "{sparse:?}");
    // Dense data: 10 rows a minute for 5 hours. Sealed past 100 rows but never narrower than an hour.
    let live0 = t0 + 400 * day;
    for from in (200..3200u64).step_by(150) {
        write_raw(&table, 0, from..from + 150, |o| live0 + (o as i64 - 200) * 6_000, "{}");
        table.flush().unwrap();
    }
    let all = chunks(&table);
    assert!(all.windows(2).all(|w| w[0].1 <= w[1].0), "overlap: {all:?}");
    let dense: Vec<_> = all.iter().filter(|c| c.1 > live0).collect();
    assert!((5..=6).contains(&dense.len()), "{dense:?}");
    assert!(dense.iter().all(|c| c.2 <= 750), "{dense:?}");
    // A late row goes to the sealed chunk covering it; sealed ends are durable; every row is there once.
    write_raw(&table, 0, 3200..3201, |_| live0 + 1_000, "{}");
    table.flush().unwrap();
    assert_eq!(chunks(&table).len(), all.len());
    let before = chunks(&table);
    drop(table);
    let table = Table::open(dir.path(), "b", opts()).unwrap();
    assert_eq!(chunks(&table), before);
    assert_eq!(raw_ids(&table), expected_ids(&BTreeMap::from([(0, 3201)])));
}

#[test]
fn results_chunks_are_sealed_by_rows() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TableSpec { chunk_width_ms: 28 * 24 * HOUR, chunk_rows: Some(30), ..TableSpec::results() };
    let table = Table::create_or_open(dir.path(), "j", spec, opts()).unwrap();
    // One window a minute for 3 hours: chunks sealed at the hour floor, each window once.
    for w in 0..180i64 {
        write_result(&table, w * 60_000, "k", Some(w), w as u64 + 1);
        if w % 10 == 9 {
            table.flush().unwrap();
        }
    }
    table.flush().unwrap();
    let info = table.info();
    assert!((3..=4).contains(&info.chunks.len()), "{:?}", info.chunks);
    assert!(info.chunks.windows(2).all(|w| w[0].end_ms <= w[1].start_ms));
    // An upsert of an old window replaces its row in the sealed chunk.
    write_result(&table, 5 * 60_000, "k", Some(-1), 181);
    table.flush().unwrap();
    let rows = results(&table);
    assert_eq!(rows.len(), 180);
    assert_eq!(rows[&(5 * 60_000, "k".to_string())], -1);
}
