//! Crash consistency of the embedded log on fault-injecting storage: torn tails, bit flips, failed fsyncs,
//! power loss under concurrent appends, a full disk and crashes across segment rolls.

mod common;

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice_log::{
    EmbeddedLog, FsyncPolicy, LogError, LogOptions, LogStore, Record, SimStorage, Storage, StorageFile, TopicSpec,
};

/// A log with acknowledged batches, dropped cleanly, plus where its last batch sits.
struct Built {
    storage: SimStorage,
    expected: Vec<Record>,
    /// Records before the last batch.
    before_last: usize,
    /// The segment file holding the last batch and the batch's byte range in it.
    last_path: PathBuf,
    last_start: u64,
    last_end: u64,
}

/// Appends one batch per entry of `batch_sizes` (records per batch) to partition 0 of a new topic.
async fn build(opts: &LogOptions, batch_sizes: &[usize]) -> Built {
    let storage = SimStorage::new();
    let (log, _) = open(&storage, opts);
    log.create_topic(TopicSpec::new(TOPIC, 1)).await.unwrap();
    let mut expected = Vec::new();
    let mut built = None;
    for &n in batch_sizes {
        let lens: HashMap<PathBuf, u64> = segment_files(&storage, 0)
            .into_iter()
            .map(|(_, p)| (p.clone(), storage.contents(&p).unwrap().len() as u64))
            .collect();
        let recs: Vec<Record> = (0..n).map(|i| record((expected.len() + i) as u64)).collect();
        let ack = log.append(TOPIC, 0, recs.clone()).await.unwrap();
        assert_eq!(ack.base_offset, expected.len() as u64);
        let before_last = expected.len();
        expected.extend(recs);
        let (_, path) = segment_files(&storage, 0).pop().unwrap();
        let end = storage.contents(&path).unwrap().len() as u64;
        let start = lens.get(&path).copied().unwrap_or(0);
        built = Some((before_last, path, start, end));
    }
    drop(log);
    let (before_last, last_path, last_start, last_end) = built.expect("at least one batch");
    Built { storage, expected, before_last, last_path, last_start, last_end }
}

/// Reopens a copy of `b` whose last batch was damaged by `damage`, and checks that recovery cut exactly that
/// batch, kept everything before it, and that the log goes on from there (also across another reopen).
async fn check_last_batch_dropped(b: &Built, opts: &LogOptions, damage: impl FnOnce(&SimStorage)) {
    let storage = clone_storage(&b.storage);
    let file_len_before = storage.contents(&b.last_path).unwrap().len() as u64;
    damage(&storage);
    let damaged_len = storage.contents(&b.last_path).unwrap().len() as u64;
    let (log, truncated) = open(&storage, opts);
    assert_eq!(truncated, damaged_len - b.last_start, "recovery reports exactly the bytes of the bad batch");
    assert_eq!(storage.contents(&b.last_path).unwrap().len() as u64, b.last_start, "the file is cut at the batch");
    assert!(file_len_before >= damaged_len);
    let survivors = &b.expected[..b.before_last];
    assert_log_is(&log, 0, survivors).await;
    assert!(log.describe_topic(TOPIC).await.unwrap().partition_details[0].writable);

    // Appends continue right after the last good batch...
    let more: Vec<Record> = (0..3).map(|i| record(10_000 + i)).collect();
    let ack = log.append(TOPIC, 0, more.clone()).await.unwrap();
    assert_eq!(ack.base_offset, b.before_last as u64);
    let mut now: Vec<Record> = survivors.to_vec();
    now.extend(more);
    assert_log_is(&log, 0, &now).await;
    drop(log);
    // ...and survive another reopen untouched.
    let (log, truncated) = open(&storage, opts);
    assert_eq!(truncated, 0, "a clean log is not cut again");
    assert_log_is(&log, 0, &now).await;
}

fn big_segments() -> LogOptions {
    LogOptions { segment_bytes: 1 << 20, index_interval_bytes: 100, ..LogOptions::default() }
}

/// Segments so small that the last batch of [`LAYOUT`] starts a segment of its own.
fn tiny_segments() -> LogOptions {
    LogOptions { segment_bytes: 400, index_interval_bytes: 100, ..LogOptions::default() }
}

const LAYOUT: &[usize] = &[3, 1, 4, 2, 5, 1, 6];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_at_every_byte_of_the_last_batch() {
    for opts in [big_segments(), tiny_segments()] {
        let b = build(&opts, LAYOUT).await;
        assert!(b.last_end - b.last_start > 100, "the last batch is big enough to be torn in many places");
        if opts.segment_bytes < 1000 {
            assert_eq!(b.last_start, 0, "with tiny segments the last batch opens a new segment");
            assert!(segment_files(&b.storage, 0).len() > 2);
        }
        for cut in b.last_start..b.last_end {
            check_last_batch_dropped(&b, &opts, |s| s.mutate(&b.last_path, |d| d.truncate(cut as usize)).unwrap())
                .await;
        }
        // Control: the untouched log keeps every batch.
        let (log, truncated) = open(&clone_storage(&b.storage), &opts);
        assert_eq!(truncated, 0);
        assert_log_is(&log, 0, &b.expected).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bit_flip_in_the_last_batch_drops_only_that_batch() {
    let mut rng = StdRng::seed_from_u64(0x5eed_0001);
    for opts in [big_segments(), tiny_segments()] {
        let b = build(&opts, LAYOUT).await;
        for _ in 0..150 {
            let byte = rng.random_range(b.last_start..b.last_end);
            let bit = rng.random_range(0..8u8);
            check_last_batch_dropped(&b, &opts, |s| flip_bit(s, &b.last_path, byte, bit)).await;
        }
        // Every bit of the header (base offset and length included, which the CRC does not cover).
        for byte in b.last_start..b.last_start + 48 {
            for bit in 0..8 {
                check_last_batch_dropped(&b, &opts, |s| flip_bit(s, &b.last_path, byte, bit)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeroed_length_field_of_the_last_batch_is_cut() {
    for opts in [big_segments(), tiny_segments()] {
        let b = build(&opts, LAYOUT).await;
        let at = b.last_start as usize;
        check_last_batch_dropped(&b, &opts, |s| s.mutate(&b.last_path, |d| d[at + 8..at + 12].fill(0)).unwrap()).await;
    }
}

/// A log rolled into several segments; all but the last are sealed (with an index file).
struct SealedLog {
    storage: SimStorage,
    expected: Vec<Record>,
    /// Sealed segments: (base offset, path, file length).
    sealed: Vec<(u64, PathBuf, u64)>,
}

async fn build_sealed(opts: &LogOptions) -> SealedLog {
    let sizes: Vec<usize> = (0..40).map(|i| 1 + (i * 7) % 3).collect();
    let b = build(opts, &sizes).await;
    let files = segment_files(&b.storage, 0);
    assert!(files.len() >= 5, "the log rolled into several segments ({})", files.len());
    let sealed = files[..files.len() - 1]
        .iter()
        .map(|(base, p)| {
            assert!(b.storage.exists(&index_path(0, *base)), "a sealed segment has an index file");
            (*base, p.clone(), b.storage.contents(p).unwrap().len() as u64)
        })
        .collect();
    SealedLog { storage: b.storage, expected: b.expected, sealed }
}

/// Reads from every offset below the high watermark: a read either fails with `Corrupt` or returns records
/// contiguous from where it started, each exactly as appended. Returns how many reads reported corruption.
async fn check_never_serves_wrong_data(log: &sluice_log::EmbeddedLog, expected: &[Record]) -> usize {
    let hw = log.describe_topic(TOPIC).await.unwrap().partition_details[0].high_watermark;
    assert_eq!(hw, expected.len() as u64);
    let mut corrupt = 0;
    for from in 0..hw {
        match log.read(TOPIC, 0, from, 1000, 1 << 20).await {
            Ok(r) => {
                assert!(!r.records.is_empty(), "a read below the high watermark returns records or an error");
                for (i, rec) in r.records.iter().enumerate() {
                    assert_eq!(rec.offset, from + i as u64, "read from {from} skipped or invented offsets");
                    assert_record(rec, &expected[rec.offset as usize]);
                }
            }
            Err(LogError::Corrupt { .. }) => corrupt += 1,
            Err(e) => panic!("read from {from}: unexpected error {e}"),
        }
    }
    corrupt
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bit_flip_in_a_sealed_segment_is_never_served() {
    let opts = tiny_segments();
    let s = build_sealed(&opts).await;
    let mut rng = StdRng::seed_from_u64(0x5eed_0002);
    // On the running log: flip, check every read, flip back.
    let (log, _) = open(&s.storage, &opts);
    assert_eq!(check_never_serves_wrong_data(&log, &s.expected).await, 0);
    for _ in 0..200 {
        let (_, path, len) = &s.sealed[rng.random_range(0..s.sealed.len())];
        let (byte, bit) = (rng.random_range(0..*len), rng.random_range(0..8u8));
        flip_bit(&s.storage, path, byte, bit);
        let corrupt = check_never_serves_wrong_data(&log, &s.expected).await;
        assert!(corrupt > 0, "flip of bit {bit} at byte {byte} of {} went unnoticed", path.display());
        flip_bit(&s.storage, path, byte, bit);
    }
    // Every bit of the first batch's header in the second segment (its base offset is not CRC-covered).
    let (_, path, _) = &s.sealed[1];
    for byte in 0..48 {
        for bit in 0..8 {
            flip_bit(&s.storage, path, byte, bit);
            let corrupt = check_never_serves_wrong_data(&log, &s.expected).await;
            assert!(corrupt > 0, "flip of bit {bit} at byte {byte} of {} went unnoticed", path.display());
            flip_bit(&s.storage, path, byte, bit);
        }
    }
    drop(log);

    // After a restart: the sealed segment is opened from its index (its data is not scanned, so nothing is
    // cut), and reads report the damage. Without the index it is scanned, and still nothing wrong is served.
    for _ in 0..30 {
        let storage = clone_storage(&s.storage);
        let i = rng.random_range(0..s.sealed.len());
        let (base, path, len) = &s.sealed[i];
        let (byte, bit) = (rng.random_range(0..*len), rng.random_range(0..8u8));
        flip_bit(&storage, path, byte, bit);
        let (log, truncated) = open(&storage, &opts);
        assert_eq!(truncated, 0, "a sealed segment with an index is not scanned at open");
        assert!(
            check_never_serves_wrong_data(&log, &s.expected).await > 0,
            "flip of bit {bit} at byte {byte} of {} went unnoticed after a restart",
            path.display()
        );
        drop(log);
        storage.remove_file(&index_path(0, *base)).unwrap();
        let (log, _) = open(&storage, &opts);
        assert!(
            check_never_serves_wrong_data(&log, &s.expected).await > 0,
            "flip of bit {bit} at byte {byte} of unindexed {} went unnoticed",
            path.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_fsync_fences_the_partition_until_restart() {
    let storage = SimStorage::new();
    let opts = big_segments();
    let (log, _) = open(&storage, &opts);
    log.create_topic(TopicSpec::new(TOPIC, 1)).await.unwrap();
    let mut acked: Vec<Record> = Vec::new();
    for b in 0..4u64 {
        let recs: Vec<Record> = (0..3).map(|i| record(b * 3 + i)).collect();
        log.append(TOPIC, 0, recs.clone()).await.unwrap();
        acked.extend(recs);
    }

    storage.set_fail_sync(true);
    let failed = log.append(TOPIC, 0, vec![record(900), record(901)]).await;
    assert!(
        matches!(failed, Err(LogError::SyncFailed { .. }) | Err(LogError::Fenced { .. })),
        "an append whose fsync fails is not acknowledged: {failed:?}"
    );
    assert!(matches!(log.append(TOPIC, 0, vec![record(902)]).await, Err(LogError::Fenced { .. })));
    // Still fenced once fsync works again: only a restart re-runs recovery.
    storage.set_fail_sync(false);
    let err = log.append(TOPIC, 0, vec![record(903)]).await.unwrap_err();
    assert!(matches!(err, LogError::Fenced { .. }), "{err}");
    assert_eq!(err.kind(), sluice_log::ErrorKind::Unavailable);

    let p = &log.describe_topic(TOPIC).await.unwrap().partition_details[0];
    assert!(!p.writable);
    assert_eq!(p.high_watermark, acked.len() as u64);
    // Reads serve what was acknowledged, never the failed batch.
    assert_log_is(&log, 0, &acked).await;
    assert!(log.read(TOPIC, 0, acked.len() as u64, 100, 1 << 20).await.unwrap().records.is_empty());
    assert!(matches!(
        log.read(TOPIC, 0, acked.len() as u64 + 1, 100, 1 << 20).await,
        Err(LogError::OffsetOutOfRange { .. })
    ));
    let hw = log.wait_for(TOPIC, 0, acked.len() as u64, Duration::from_millis(10)).await.unwrap();
    assert_eq!(hw, acked.len() as u64, "the failed batch never moves the high watermark");
    drop(log);

    storage.crash();
    let (log, truncated) = open(&storage, &opts);
    assert_eq!(truncated, 0, "the failed batch never became durable");
    assert!(log.describe_topic(TOPIC).await.unwrap().partition_details[0].writable);
    assert_log_is(&log, 0, &acked).await;
    let ack = log.append(TOPIC, 0, vec![record(12)]).await.unwrap();
    assert_eq!(ack.base_offset, 12);
    acked.push(record(12));
    assert_log_is(&log, 0, &acked).await;
}

/// While fsync fails nothing is acknowledged, whether or not the append would roll a segment; what was
/// acknowledged before survives a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_acknowledged_while_fsync_fails() {
    for first_failing in 0..12u64 {
        let storage = SimStorage::new();
        let opts = tiny_segments();
        let (log, _) = open(&storage, &opts);
        log.create_topic(TopicSpec::new(TOPIC, 1)).await.unwrap();
        let mut acked = Vec::new();
        for n in 0..first_failing {
            log.append(TOPIC, 0, vec![record(n), record(100 + n)]).await.unwrap();
            acked.extend([record(n), record(100 + n)]);
        }
        storage.set_fail_sync(true);
        for n in 0..6 {
            let r = log.append(TOPIC, 0, vec![record(1000 + n)]).await;
            assert!(r.is_err(), "append acknowledged while fsync fails: {r:?}");
        }
        assert_log_is(&log, 0, &acked).await;
        drop(log);
        storage.crash();
        storage.set_fail_sync(false);
        let (log, _) = open(&storage, &opts);
        assert_log_is(&log, 0, &acked).await;
        assert_eq!(log.append(TOPIC, 0, vec![record(5000)]).await.unwrap().base_offset, acked.len() as u64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_under_concurrent_appends_keeps_every_acknowledged_record() {
    const PARTITIONS: u32 = 2;
    const PRODUCERS: u64 = 4;
    let mut rng = StdRng::seed_from_u64(0x5eed_0003);
    for round in 0..10 {
        // Mostly `always`, which must keep every acknowledged record. Under an fsync interval a crash may lose
        // the newest acknowledged records, but what survives is still exactly what was acknowledged there.
        let always = round % 5 != 4;
        let storage = SimStorage::new();
        let opts = LogOptions {
            fsync: if always { FsyncPolicy::Always } else { FsyncPolicy::Interval(Duration::from_millis(3)) },
            segment_bytes: rng.random_range(500..5000),
            index_interval_bytes: rng.random_range(50..500),
            ..LogOptions::default()
        };
        let (log, _) = open(&storage, &opts);
        let log = Arc::new(log);
        log.create_topic(TopicSpec::new(TOPIC, PARTITIONS)).await.unwrap();

        // Every acknowledged record as (partition, offset, value).
        let acked: Arc<Mutex<Vec<(u32, u64, Bytes)>>> = Arc::default();
        let mut tasks = Vec::new();
        for producer in 0..PRODUCERS {
            let (log, acked) = (log.clone(), acked.clone());
            let seed = rng.random::<u64>();
            tasks.push(tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed);
                for seq in 0u64.. {
                    let partition = rng.random_range(0..PARTITIONS);
                    let recs: Vec<Record> = (0..rng.random_range(1..4u64))
                        .map(|i| Record {
                            value: Bytes::from(format!("{{\"p\":{producer},\"s\":{seq},\"i\":{i}}}")),
                            ..record(seq)
                        })
                        .collect();
                    match log.append(TOPIC, partition, recs.clone()).await {
                        Ok(ack) => {
                            assert_eq!(ack.record_count as usize, recs.len());
                            let mut a = acked.lock();
                            for (i, r) in recs.into_iter().enumerate() {
                                a.push((partition, ack.base_offset + i as u64, r.value));
                            }
                        }
                        Err(_) => tokio::task::yield_now().await,
                    }
                }
            }));
        }
        // Let some appends through, then cut the power while producers keep appending: from the moment
        // fsync fails nothing more becomes durable, and whatever is written but unsynced is lost below.
        // (The pause between the two keeps a sync that began before the cut from finishing after `crash`.)
        let target = rng.random_range(0..300);
        let progress = async {
            while acked.lock().len() < target {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), progress).await.expect("producers make progress");
        storage.set_fail_sync(true);
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..15))).await;
        storage.crash();
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            match t.await {
                Err(e) if e.is_cancelled() => {}
                Err(e) => std::panic::resume_unwind(e.into_panic()),
                Ok(()) => unreachable!("producers append until aborted"),
            }
        }
        let log = Arc::into_inner(log).expect("every producer is gone");
        drop(log);
        // Anything the dying process wrote after the cut was never synced: drop it too.
        storage.crash();
        storage.set_fail_sync(false);

        let (log, _) = open(&storage, &opts);
        let acked = acked.lock().clone();
        for partition in 0..PARTITIONS {
            let records = read_from(&log, partition, 0).await.expect("nothing unreadable is served");
            let hw = log.describe_topic(TOPIC).await.unwrap().partition_details[partition as usize].high_watermark;
            assert_eq!(records.len() as u64, hw, "offsets are contiguous from 0 to the high watermark");
            let mut seen = HashSet::new();
            for r in &records {
                let v = std::str::from_utf8(&r.value).unwrap();
                assert!(v.starts_with("{\"p\":"), "record {} holds a value nobody appended: {v}", r.offset);
                assert!(seen.insert(r.value.clone()), "value {v} appears twice");
            }
            let mine: Vec<_> = acked.iter().filter(|(p, _, _)| *p == partition).collect();
            for (_, offset, value) in &mine {
                if !always && *offset >= hw {
                    continue;
                }
                let r = records.get(*offset as usize).unwrap_or_else(|| {
                    panic!("round {round}: acknowledged offset {offset} of partition {partition} is lost (hw {hw})")
                });
                assert_eq!(&r.value, value, "round {round}: acknowledged offset {offset} changed");
            }
            // The partition is writable again and continues at the high watermark.
            let ack = log.append(TOPIC, partition, vec![record(0)]).await.unwrap();
            assert_eq!(ack.base_offset, hw);
            if round < 2 {
                // Spot-check reads from every offset on a couple of rounds (segment and index boundaries).
                let expected: Vec<Record> = records
                    .iter()
                    .map(|r| Record {
                        timestamp: r.timestamp,
                        key: r.key.clone(),
                        headers: r.headers.clone(),
                        value: r.value.clone(),
                    })
                    .chain([record(0)])
                    .collect();
                assert_every_offset_readable(&log, partition, &expected).await;
            }
        }
        assert!(!acked.is_empty() || target == 0);
    }
}

/// Bytes of all segment data files of partition 0.
fn log_bytes(storage: &SimStorage) -> u64 {
    segment_files(storage, 0).iter().map(|(_, p)| storage.contents(p).unwrap().len() as u64).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_fails_the_append_without_fencing() {
    let mut rng = StdRng::seed_from_u64(0x5eed_0004);
    for opts in [big_segments(), tiny_segments()] {
        let storage = SimStorage::new();
        let (log, _) = open(&storage, &opts);
        log.create_topic(TopicSpec::new(TOPIC, 1)).await.unwrap();
        let mut acked: Vec<Record> = Vec::new();
        let used = |s: &SimStorage| s.files().iter().map(|p| s.contents(p).unwrap().len() as u64).sum::<u64>();
        for round in 0..25 {
            // A few appends with room to spare.
            for _ in 0..rng.random_range(0..4) {
                let r = record(acked.len() as u64);
                assert_eq!(log.append(TOPIC, 0, vec![r.clone()]).await.unwrap().base_offset, acked.len() as u64);
                acked.push(r);
            }
            // Then fill the disk: somewhere within the next batches there is no more room.
            storage.set_space_limit(Some(used(&storage) + rng.random_range(0..400)));
            let err = loop {
                let recs: Vec<Record> = (0..4).map(|i| record(acked.len() as u64 + i)).collect();
                match log.append(TOPIC, 0, recs.clone()).await {
                    Ok(ack) => {
                        assert_eq!(ack.base_offset, acked.len() as u64);
                        acked.extend(recs);
                    }
                    Err(e) => break e,
                }
            };
            assert!(matches!(err, LogError::DiskFull { .. }), "round {round}: {err}");
            assert_eq!(err.kind(), sluice_log::ErrorKind::ResourceExhausted);
            let p = &log.describe_topic(TOPIC).await.unwrap().partition_details[0];
            assert!(p.writable, "a full disk does not fence the partition");
            assert_eq!(p.high_watermark, acked.len() as u64);
            assert_log_is(&log, 0, &acked).await;
            assert_eq!(
                log_bytes(&storage),
                p.size_bytes,
                "the torn part of the failed write is cut from the file, the acknowledged part kept"
            );
            // Still full: fails again the same way, still not fenced.
            let again = log.append(TOPIC, 0, (0..20).map(|i| record(7000 + i)).collect()).await.unwrap_err();
            assert!(matches!(again, LogError::DiskFull { .. }), "{again}");
            assert!(log.describe_topic(TOPIC).await.unwrap().partition_details[0].writable);
            assert_eq!(log_bytes(&storage), p.size_bytes);

            storage.set_space_limit(None);
            let r = record(acked.len() as u64);
            let ack = log.append(TOPIC, 0, vec![r.clone()]).await.unwrap();
            assert_eq!(ack.base_offset, acked.len() as u64, "appends continue at the next offset");
            acked.push(r);
            assert_log_is(&log, 0, &acked).await;
        }
        drop(log);
        storage.crash();
        let (log, truncated) = open(&storage, &opts);
        assert_eq!(truncated, 0, "no torn write survived");
        assert_log_is(&log, 0, &acked).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_roll_and_survive_a_crash() {
    let storage = SimStorage::new();
    let opts = LogOptions { segment_bytes: 600, index_interval_bytes: 128, ..LogOptions::default() };
    let (log, _) = open(&storage, &opts);
    log.create_topic(TopicSpec::new(TOPIC, 1)).await.unwrap();
    let mut acked: Vec<Record> = Vec::new();
    for b in 0..80 {
        let recs: Vec<Record> = (0..1 + b % 4).map(|i| record(acked.len() as u64 + i)).collect();
        assert_eq!(log.append(TOPIC, 0, recs.clone()).await.unwrap().base_offset, acked.len() as u64);
        acked.extend(recs);
    }
    let files = segment_files(&storage, 0);
    assert!(files.len() >= 10, "{} segments", files.len());
    assert_eq!(log.describe_topic(TOPIC).await.unwrap().partition_details[0].segments, files.len());
    // Crash with the log still running: every append was acknowledged after its fsync.
    storage.crash();
    drop(log);
    storage.crash();

    let (log, reports) =
        sluice_log::EmbeddedLog::open(ROOT, Arc::new(storage.clone()) as Arc<dyn Storage>, opts.clone()).unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].2.segments, files.len());
    assert_eq!(reports[0].2.truncated_bytes, 0);
    assert_log_is(&log, 0, &acked).await;
    assert_every_offset_readable(&log, 0, &acked).await;
    check_time_lookups(&log, &acked).await;
    for (base, path) in &files[..files.len() - 1] {
        assert!(storage.exists(&index_path(0, *base)), "sealed segment {} has an index", path.display());
        // Each segment starts with the offset in its name.
        assert_eq!(u64::from_le_bytes(storage.contents(path).unwrap()[..8].try_into().unwrap()), *base);
    }
    assert!(!storage.exists(&index_path(0, files.last().unwrap().0)), "the active segment has no index yet");
    drop(log);

    // Sealed segments open from their index: damage the data of one, and recovery does not notice (it does not
    // read it), while a read of the damaged batch does.
    let (base, path) = &files[2];
    let len = storage.contents(path).unwrap().len() as u64;
    flip_bit(&storage, path, len - 3, 4);
    let (log, truncated) = open(&storage, &opts);
    assert_eq!(truncated, 0);
    let last_of_segment = files[3].0 - 1;
    assert!(matches!(log.read(TOPIC, 0, last_of_segment, 10, 1 << 20).await, Err(LogError::Corrupt { .. })));
    assert!(log.read(TOPIC, 0, *base, 1, 1 << 20).await.is_ok(), "the first batch of the segment is intact");
    drop(log);
    flip_bit(&storage, path, len - 3, 4);

    // Without (or with a damaged) index, a sealed segment is scanned instead: all data stays readable.
    storage.remove_file(&index_path(0, files[1].0)).unwrap();
    storage.mutate(&index_path(0, files[3].0), |d| d[20] ^= 0x10).unwrap();
    storage.mutate(&index_path(0, files[4].0), |d| d.truncate(d.len() - 5)).unwrap();
    storage.mutate(&index_path(0, files[5].0), |d| d.clear()).unwrap();
    storage.sync_dir(&partition_dir(0)).unwrap();
    let (log, truncated) = open(&storage, &opts);
    assert_eq!(truncated, 0);
    assert_log_is(&log, 0, &acked).await;
    assert_every_offset_readable(&log, 0, &acked).await;
    check_time_lookups(&log, &acked).await;
    // And the log goes on rolling and surviving crashes.
    for b in 0..30 {
        let recs: Vec<Record> = (0..1 + b % 3).map(|i| record(acked.len() as u64 + i)).collect();
        assert_eq!(log.append(TOPIC, 0, recs.clone()).await.unwrap().base_offset, acked.len() as u64);
        acked.extend(recs);
    }
    storage.crash();
    drop(log);
    storage.crash();
    let (log, truncated) = open(&storage, &opts);
    assert_eq!(truncated, 0);
    assert_log_is(&log, 0, &acked).await;
    check_time_lookups(&log, &acked).await;
}

/// `offset_for_time` against brute force over every timestamp in the log, and just around it.
async fn check_time_lookups(log: &sluice_log::EmbeddedLog, expected: &[Record]) {
    let mut probes: Vec<i64> = expected.iter().flat_map(|r| [r.timestamp - 1, r.timestamp, r.timestamp + 1]).collect();
    probes.extend([i64::MIN, 0, i64::MAX]);
    probes.sort_unstable();
    probes.dedup();
    for t in probes {
        let want = expected.iter().position(|r| r.timestamp >= t).unwrap_or(expected.len()) as u64;
        assert_eq!(log.offset_for_time(TOPIC, 0, t).await.unwrap(), want, "offset_for_time({t})");
    }
}

/// Simulated storage whose directory fsyncs can be made to fail on their own (`SimStorage::set_fail_sync` fails
/// file and directory syncs alike).
struct FailDirSync {
    inner: SimStorage,
    fail: AtomicBool,
}

impl Storage for FailDirSync {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(path)
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        self.inner.open(path, create)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_dir_all(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.inner.sync_dir(dir)
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
}

/// A segment roll whose directory fsync fails leaves the new (empty) segment file behind. Whatever the log does
/// next, a restart must find every acknowledged record at its offset and must not hand out an offset twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_directory_fsync_during_a_roll_loses_nothing() {
    let big = |n: u64| Record { value: Bytes::from(vec![b'a' + (n % 26) as u8; 550]), ..record(n) };
    for (later_roll, power_loss) in [(false, false), (false, true), (true, false), (true, true)] {
        let sim = SimStorage::new();
        let storage = Arc::new(FailDirSync { inner: sim.clone(), fail: AtomicBool::new(false) });
        let opts = LogOptions { segment_bytes: 1000, ..LogOptions::default() };
        let (log, _) = EmbeddedLog::open(ROOT, storage.clone() as Arc<dyn Storage>, opts.clone()).unwrap();
        log.create_topic(TopicSpec::new(TOPIC, 1)).await.unwrap();
        let mut acked = vec![big(0)];
        log.append(TOPIC, 0, acked.clone()).await.unwrap();

        // This batch does not fit: the roll creates segment 1 but cannot make its directory entry durable.
        storage.fail.store(true, Ordering::SeqCst);
        assert!(log.append(TOPIC, 0, vec![big(1)]).await.is_err());
        storage.fail.store(false, Ordering::SeqCst);
        assert!(sim.exists(&partition_dir(0).join(format!("{:020}.log", 1))), "the new segment file was left behind");

        // A small batch that still fits the old segment, then (maybe) a big one that rolls again.
        let mut attempts = vec![vec![record(1)]];
        if later_roll {
            attempts.push(vec![big(2)]);
        }
        for recs in attempts {
            if let Ok(ack) = log.append(TOPIC, 0, recs.clone()).await {
                assert_eq!(ack.base_offset, acked.len() as u64);
                acked.extend(recs);
            }
        }
        assert_log_is(&log, 0, &acked).await;
        drop(log);

        // A restart, with or without a power cut (which may or may not take the new file's entry with it).
        if power_loss {
            sim.crash();
        }
        let (log, _) = open(&sim, &opts);
        assert_log_is(&log, 0, &acked).await;
        assert_every_offset_readable(&log, 0, &acked).await;
        let ack = log.append(TOPIC, 0, vec![record(99)]).await.unwrap();
        assert_eq!(ack.base_offset, acked.len() as u64, "offsets are never reused");
        acked.push(record(99));
        drop(log);
        let (log, _) = open(&sim, &opts);
        assert_every_offset_readable(&log, 0, &acked).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_and_flush_make_interval_acknowledgements_durable() {
    let opts = LogOptions { fsync: FsyncPolicy::Interval(Duration::from_secs(3600)), ..LogOptions::default() };
    for (durable_before_crash, use_flush) in [(false, false), (true, false), (true, true)] {
        let storage = SimStorage::new();
        let (log, _) = open(&storage, &opts);
        log.create_topic(TopicSpec::new(TOPIC, 1)).await.unwrap();
        let records: Vec<Record> = (0..20).map(record).collect();
        log.append(TOPIC, 0, records.clone()).await.unwrap();
        if use_flush {
            log.flush(TOPIC, 0).await.unwrap();
        } else if durable_before_crash {
            log.close().await;
            assert!(matches!(log.append(TOPIC, 0, vec![record(20)]).await, Err(sluice_log::LogError::Closed)));
        }
        storage.crash();
        drop(log);
        storage.crash();
        let (log, _) = open(&storage, &opts);
        let hw = log.describe_topic(TOPIC).await.unwrap().partition_details[0].high_watermark;
        // Under an interval nothing forces the data down before the crash; close (run at shutdown) does.
        assert_eq!(hw, if durable_before_crash { 20 } else { 0 }, "durable before crash: {durable_before_crash}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_too_long_to_compute_deletes_nothing() {
    let opts = tiny_segments();
    let storage = SimStorage::new();
    let (log, _) = open(&storage, &opts);
    let spec = TopicSpec { retention: Some(Duration::from_secs(u64::MAX / 1000)), ..TopicSpec::new(TOPIC, 1) };
    log.create_topic(spec).await.unwrap();
    for n in 0..50 {
        log.append(TOPIC, 0, vec![record(n)]).await.unwrap();
    }
    let before = log.describe_topic(TOPIC).await.unwrap().partition_details[0].segments;
    assert!(before > 1);
    assert_eq!(log.apply_retention_at(sluice_log::now_ms()).unwrap(), 0);
    assert_eq!(log.describe_topic(TOPIC).await.unwrap().partition_details[0].segments, before);
}
