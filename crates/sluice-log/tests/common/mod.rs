//! Helpers shared by the crash and property tests: a log on simulated storage, deterministic records, and
//! readers that check what the log serves against what was appended.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use sluice_log::{
    EmbeddedLog, LogError, LogOptions, LogStore, Record, RecoveryReport, SimStorage, Storage, StoredRecord,
};

pub const ROOT: &str = "/data/log";
pub const TOPIC: &str = "events";

/// Opens the log under [`ROOT`] on `storage`; returns it with the total bytes recovery truncated.
pub fn open(storage: &SimStorage, opts: &LogOptions) -> (EmbeddedLog, u64) {
    let (log, reports) =
        EmbeddedLog::open(ROOT, Arc::new(storage.clone()) as Arc<dyn Storage>, opts.clone()).expect("the log opens");
    (log, truncated(&reports))
}

pub fn truncated(reports: &[(String, u32, RecoveryReport)]) -> u64 {
    reports.iter().map(|(_, _, r)| r.truncated_bytes).sum()
}

pub fn partition_dir(partition: u32) -> PathBuf {
    Path::new(ROOT).join("topics").join(TOPIC).join(partition.to_string())
}

pub fn index_path(partition: u32, base: u64) -> PathBuf {
    partition_dir(partition).join(format!("{base:020}.index"))
}

/// The segment data files of a partition as `(base offset, path)`, oldest first.
pub fn segment_files(storage: &SimStorage, partition: u32) -> Vec<(u64, PathBuf)> {
    let dir = partition_dir(partition);
    let mut v: Vec<(u64, PathBuf)> = storage
        .files()
        .into_iter()
        .filter(|p| p.parent() == Some(dir.as_path()) && p.extension().is_some_and(|e| e == "log"))
        .map(|p| {
            let base = p.file_stem().unwrap().to_str().unwrap().parse().unwrap();
            (base, p)
        })
        .collect();
    v.sort();
    v
}

/// A fresh `SimStorage` holding a durable copy of every file of `src` (a snapshot to run one scenario on).
pub fn clone_storage(src: &SimStorage) -> SimStorage {
    let dst = SimStorage::new();
    for path in src.files() {
        let parent = path.parent().unwrap();
        dst.create_dir_all(parent).unwrap();
        let f = dst.open(&path, true).unwrap();
        f.write_all_at(&src.contents(&path).unwrap(), 0).unwrap();
        f.sync_data().unwrap();
        dst.sync_dir(parent).unwrap();
    }
    dst
}

/// Flips one bit of a file, as media corruption would.
pub fn flip_bit(storage: &SimStorage, path: &Path, byte: u64, bit: u8) {
    storage.mutate(path, |b| b[byte as usize] ^= 1 << bit).unwrap();
}

/// A deterministic record whose contents encode `n`. Event times are deliberately not monotonic.
pub fn record(n: u64) -> Record {
    Record {
        timestamp: 1_000_000 + ((n * 7919) % 1000) as i64 - 500,
        key: (!n.is_multiple_of(3)).then(|| Bytes::from(format!("key-{}", n % 17))),
        headers: if n.is_multiple_of(2) { vec![("trace".to_string(), Bytes::from(format!("t{n}")))] } else { vec![] },
        value: Bytes::from(format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat((n % 23) as usize))),
    }
}

/// Asserts that a stored record is exactly `want`.
pub fn assert_record(got: &StoredRecord, want: &Record) {
    assert_eq!(got.timestamp, want.timestamp, "timestamp of offset {}", got.offset);
    assert_eq!(got.key, want.key, "key of offset {}", got.offset);
    assert_eq!(got.headers, want.headers, "headers of offset {}", got.offset);
    assert_eq!(got.value, want.value, "value of offset {}", got.offset);
}

/// Asserts that the partition holds exactly `expected` (offset `i` is `expected[i]`), from the log start on.
pub async fn assert_log_is(log: &EmbeddedLog, partition: u32, expected: &[Record]) {
    let d = log.describe_topic(TOPIC).await.unwrap();
    let p = &d.partition_details[partition as usize];
    assert_eq!(p.high_watermark, expected.len() as u64, "high watermark");
    let got = read_from(log, partition, p.log_start_offset).await.expect("every acknowledged record is readable");
    assert_eq!(got.len() as u64, expected.len() as u64 - p.log_start_offset, "number of records");
    for r in &got {
        assert_record(r, &expected[r.offset as usize]);
    }
}

/// Reads everything from `from` to the high watermark, in small pages, checking that offsets are contiguous.
pub async fn read_from(log: &EmbeddedLog, partition: u32, from: u64) -> Result<Vec<StoredRecord>, LogError> {
    let mut out: Vec<StoredRecord> = Vec::new();
    let mut next = from;
    loop {
        let r = log.read(TOPIC, partition, next, 7, 1 << 20).await?;
        if r.records.is_empty() {
            assert_eq!(next, r.high_watermark, "an empty read happens only at the high watermark");
            return Ok(out);
        }
        for (i, rec) in r.records.iter().enumerate() {
            assert_eq!(rec.offset, next + i as u64, "offsets of a read are contiguous from where it started");
        }
        next = r.next_offset;
        assert_eq!(next, r.records.last().unwrap().offset + 1, "next_offset follows the last record");
        out.extend(r.records);
    }
}

/// Asserts that a read from every offset of the partition starts exactly there and returns what was appended.
pub async fn assert_every_offset_readable(log: &EmbeddedLog, partition: u32, expected: &[Record]) {
    let d = log.describe_topic(TOPIC).await.unwrap();
    let p = &d.partition_details[partition as usize];
    assert_eq!(p.high_watermark, expected.len() as u64, "high watermark");
    for from in p.log_start_offset..p.high_watermark {
        let r = log.read(TOPIC, partition, from, 3, 1 << 20).await.unwrap_or_else(|e| panic!("read from {from}: {e}"));
        assert!(!r.records.is_empty(), "read from {from} below the high watermark is empty");
        for (i, rec) in r.records.iter().enumerate() {
            assert_eq!(rec.offset, from + i as u64, "read from {from} does not start there");
            assert_record(rec, &expected[rec.offset as usize]);
        }
    }
}
