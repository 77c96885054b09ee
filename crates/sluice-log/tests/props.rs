//! Property tests of the embedded log against a simple model: a vector of appended records.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use sluice_log::{EmbeddedLog, LogError, LogOptions, LogStore, Record, SimStorage, Storage, TopicSpec, now_ms};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Event times: mostly a narrow, shuffled range (many ties and late events), sometimes anything at all.
fn timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![
        8 => -50i64..200,
        1 => Just(i64::MIN),
        1 => Just(i64::MAX),
        1 => any::<i64>(),
    ]
}

fn a_record() -> impl Strategy<Value = Record> {
    (
        timestamp(),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..12)),
        prop::collection::vec(("[a-z]{1,6}", prop::collection::vec(any::<u8>(), 0..8)), 0..3),
        prop::collection::vec(any::<u8>(), 0..120),
    )
        .prop_map(|(timestamp, key, headers, value)| Record {
            timestamp,
            key: key.map(Bytes::from),
            headers: headers.into_iter().map(|(k, v)| (k, Bytes::from(v))).collect(),
            value: Bytes::from(value),
        })
}

fn batches() -> impl Strategy<Value = Vec<Vec<Record>>> {
    prop::collection::vec(prop::collection::vec(a_record(), 1..8), 1..25)
}

fn check_record(got: &sluice_log::StoredRecord, want: &Record) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.timestamp, want.timestamp, "timestamp of {}", got.offset);
    prop_assert_eq!(&got.key, &want.key, "key of {}", got.offset);
    prop_assert_eq!(&got.headers, &want.headers, "headers of {}", got.offset);
    prop_assert_eq!(&got.value, &want.value, "value of {}", got.offset);
    Ok(())
}

/// Every read, from every offset, returns exactly the model's suffix (paged by `page`), and every time lookup
/// agrees with brute force.
async fn check_against_model(
    log: &EmbeddedLog,
    model: &[Record],
    page: usize,
    probes: &[i64],
) -> Result<(), TestCaseError> {
    let hw = model.len() as u64;
    let p = &log.describe_topic(TOPIC).await.unwrap().partition_details[0];
    prop_assert_eq!(p.high_watermark, hw);
    prop_assert_eq!(p.log_start_offset, 0);
    for from in 0..=hw {
        // One big read: the whole suffix.
        let r = log.read(TOPIC, 0, from, usize::MAX, usize::MAX).await.unwrap();
        prop_assert_eq!(r.records.len() as u64, hw - from, "read from {} returns the whole suffix", from);
        prop_assert_eq!(r.next_offset, hw);
        for (i, rec) in r.records.iter().enumerate() {
            prop_assert_eq!(rec.offset, from + i as u64);
            check_record(rec, &model[rec.offset as usize])?;
        }
        // Paged reads: at most `page` records each, never skipping or repeating one.
        let r = log.read(TOPIC, 0, from, page, usize::MAX).await.unwrap();
        prop_assert_eq!(r.records.len() as u64, (hw - from).min(page as u64));
        prop_assert_eq!(r.next_offset, from + r.records.len() as u64);
    }
    // Byte-limited reads still make progress (at least one batch) and stay contiguous.
    let (mut next, mut seen) = (0, 0);
    while next < hw {
        let r = log.read(TOPIC, 0, next, usize::MAX, 1).await.unwrap();
        prop_assert!(!r.records.is_empty());
        prop_assert_eq!(r.records[0].offset, next);
        seen += r.records.len() as u64;
        next = r.next_offset;
    }
    prop_assert_eq!(seen, hw);
    let past = log.read(TOPIC, 0, hw + 1, 10, 1 << 20).await;
    prop_assert!(matches!(past, Err(LogError::OffsetOutOfRange { .. })), "read past the high watermark: {:?}", past);

    let mut all: Vec<i64> = model
        .iter()
        .flat_map(|r| [r.timestamp.saturating_sub(1), r.timestamp, r.timestamp.saturating_add(1)])
        .collect();
    all.extend_from_slice(probes);
    all.extend([i64::MIN, i64::MAX]);
    for t in all {
        let want = model.iter().position(|r| r.timestamp >= t).map_or(hw, |i| i as u64);
        prop_assert_eq!(log.offset_for_time(TOPIC, 0, t).await.unwrap(), want, "offset_for_time({})", t);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn reads_and_time_lookups_match_the_model(
        batches in batches(),
        segment_bytes in 64u64..2048,
        index_interval_bytes in 1u64..1024,
        page in 1usize..10,
        probes in prop::collection::vec(timestamp(), 0..10),
    ) {
        runtime().block_on(async {
            let storage = SimStorage::new();
            let opts = LogOptions { segment_bytes, index_interval_bytes, ..LogOptions::default() };
            let (log, _) = open(&storage, &opts);
            log.create_topic(TopicSpec::new(TOPIC, 1)).await.unwrap();
            let mut model: Vec<Record> = Vec::new();
            for batch in batches {
                let ack = log.append(TOPIC, 0, batch.clone()).await.unwrap();
                prop_assert_eq!(ack.base_offset, model.len() as u64);
                prop_assert_eq!(ack.record_count as usize, batch.len());
                model.extend(batch);
            }
            check_against_model(&log, &model, page, &probes).await?;
            drop(log);

            // A clean restart (sealed segments from their index, the active one scanned) changes nothing.
            let (log, truncated) = open(&storage, &opts);
            prop_assert_eq!(truncated, 0);
            check_against_model(&log, &model, page, &probes).await?;
            drop(log);

            // Nor does a crash: every append was acknowledged after its fsync.
            storage.crash();
            let (log, truncated) = open(&storage, &opts);
            prop_assert_eq!(truncated, 0);
            check_against_model(&log, &model, page, &probes).await?;
            Ok(())
        })?;
    }

    #[test]
    fn retention_by_size_follows_the_kafka_rule(
        batch_sizes in prop::collection::vec(1usize..6, 1..40),
        segment_bytes in 100u64..1500,
        on_boundary in any::<bool>(),
        boundary in any::<prop::sample::Index>(),
        delta in -1i64..=1,
        random_retention in 0u64..6000,
    ) {
        runtime().block_on(async {
            let opts = LogOptions { segment_bytes, retention: None, ..LogOptions::default() };
            // Segment sizes depend only on the records and segment_bytes: measure them on a scratch log, so that
            // retention_bytes can sit exactly on (or next to) the size of a suffix of segments.
            let scratch = SimStorage::new();
            let (log, _) = open(&scratch, &opts);
            fill(&log, TopicSpec::new(TOPIC, 1), &batch_sizes).await;
            drop(log);
            let sizes = segment_sizes(&scratch);
            let retention_bytes = if on_boundary {
                let k = boundary.index(sizes.len() + 1);
                sizes[k..].iter().map(|s| s.1).sum::<u64>().saturating_add_signed(delta)
            } else {
                random_retention
            };

            let storage = SimStorage::new();
            let (log, _) = open(&storage, &opts);
            let spec = TopicSpec { retention_bytes: Some(retention_bytes), ..TopicSpec::new(TOPIC, 1) };
            let model = fill(&log, spec, &batch_sizes).await;
            let before = segment_sizes(&storage);
            prop_assert_eq!(&before, &sizes);
            // The Kafka rule: delete the oldest segment while what remains still holds retention_bytes.
            let mut total: u64 = before.iter().map(|s| s.1).sum();
            let mut expect_deleted = 0;
            while expect_deleted + 1 < before.len() && total - before[expect_deleted].1 >= retention_bytes {
                total -= before[expect_deleted].1;
                expect_deleted += 1;
            }

            let deleted = log.apply_retention_at(now_ms()).unwrap();
            prop_assert_eq!(deleted, expect_deleted);
            let after = segment_sizes(&storage);
            prop_assert_eq!(&after[..], &before[deleted..], "the oldest segments go, the rest is untouched");
            let remaining: u64 = after.iter().map(|s| s.1).sum();
            prop_assert_eq!(after.last(), before.last(), "the active segment is never deleted");
            if deleted > 0 {
                prop_assert!(remaining >= retention_bytes, "deleting never goes below retention_bytes");
            }
            if after.len() > 1 {
                prop_assert!(remaining - after[0].1 < retention_bytes, "deleting stops only when it must");
            }

            let start = after[0].0;
            let p = &log.describe_topic(TOPIC).await.unwrap().partition_details[0];
            prop_assert_eq!(p.log_start_offset, start, "the log starts at a segment base");
            prop_assert_eq!(p.high_watermark, model.len() as u64);
            prop_assert_eq!(p.size_bytes, remaining);
            prop_assert_eq!(p.segments, after.len());
            check_after_retention(&log, &model, start).await?;
            // A second pass finds nothing more to delete.
            prop_assert_eq!(log.apply_retention_at(now_ms()).unwrap(), 0);
            drop(log);

            // Deletions are durable: a crash does not bring segments back.
            storage.crash();
            let (log, _) = open(&storage, &opts);
            check_after_retention(&log, &model, start).await?;
            // And the log goes on at the high watermark.
            let ack = log.append(TOPIC, 0, vec![record(0)]).await.unwrap();
            prop_assert_eq!(ack.base_offset, model.len() as u64);
            Ok(())
        })?;
    }
}

/// Appends one batch of deterministic records per entry of `batch_sizes` to a new topic; returns them.
async fn fill(log: &EmbeddedLog, spec: TopicSpec, batch_sizes: &[usize]) -> Vec<Record> {
    log.create_topic(spec).await.unwrap();
    let mut model: Vec<Record> = Vec::new();
    for &n in batch_sizes {
        let recs: Vec<Record> = (0..n).map(|i| record((model.len() + i) as u64)).collect();
        assert_eq!(log.append(TOPIC, 0, recs.clone()).await.unwrap().base_offset, model.len() as u64);
        model.extend(recs);
    }
    model
}

/// `(base offset, bytes)` of every segment of partition 0, oldest first.
fn segment_sizes(storage: &SimStorage) -> Vec<(u64, u64)> {
    segment_files(storage, 0).into_iter().map(|(base, p)| (base, storage.contents(&p).unwrap().len() as u64)).collect()
}

/// The log starts at `start`: below it reads are out of range, from it everything is there.
async fn check_after_retention(log: &EmbeddedLog, model: &[Record], start: u64) -> Result<(), TestCaseError> {
    let p = &log.describe_topic(TOPIC).await.unwrap().partition_details[0];
    prop_assert_eq!(p.log_start_offset, start);
    for below in [0, start / 2, start.saturating_sub(1)] {
        if below < start {
            let r = log.read(TOPIC, 0, below, 10, 1 << 20).await;
            prop_assert!(
                matches!(r, Err(LogError::OffsetOutOfRange { offset, start: s, .. }) if offset == below && s == start),
                "read below the log start: {:?}",
                r
            );
        }
    }
    let r = log.read(TOPIC, 0, start, usize::MAX, usize::MAX).await.unwrap();
    prop_assert_eq!(r.log_start_offset, start);
    prop_assert_eq!(r.records.len(), model.len() - start as usize);
    for rec in &r.records {
        check_record(rec, &model[rec.offset as usize])?;
    }
    // Time lookups only see what is left.
    for t in [i64::MIN, 0, 1_000_000, i64::MAX] {
        let want = model[start as usize..]
            .iter()
            .position(|r| r.timestamp >= t)
            .map_or(model.len() as u64, |i| start + i as u64);
        prop_assert_eq!(log.offset_for_time(TOPIC, 0, t).await.unwrap(), want);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn retention_by_age_keeps_only_the_active_segment(
        batch_sizes in prop::collection::vec(1usize..6, 1..30),
        segment_bytes in 100u64..1500,
    ) {
        runtime().block_on(async {
            let storage = SimStorage::new();
            let opts = LogOptions { segment_bytes, retention_bytes: None, ..LogOptions::default() };
            let (log, _) = open(&storage, &opts);
            let spec = TopicSpec { retention: Some(Duration::from_secs(3600)), ..TopicSpec::new(TOPIC, 1) };
            let model = fill(&log, spec, &batch_sizes).await;
            let before = segment_files(&storage, 0);
            // Nothing is old yet.
            prop_assert_eq!(log.apply_retention_at(now_ms()).unwrap(), 0);
            prop_assert_eq!(segment_files(&storage, 0).len(), before.len());
            // Far in the future everything is, but the active segment stays.
            let future = now_ms() + 10 * 365 * 24 * 3600 * 1000;
            prop_assert_eq!(log.apply_retention_at(future).unwrap(), before.len() - 1);
            let after = segment_files(&storage, 0);
            prop_assert_eq!(&after[..], &before[before.len() - 1..]);
            for (base, _) in &before[..before.len() - 1] {
                prop_assert!(!storage.exists(&index_path(0, *base)), "the index goes with its segment");
            }
            check_after_retention(&log, &model, after[0].0).await?;
            prop_assert_eq!(log.apply_retention_at(future).unwrap(), 0);
            Ok(())
        })?;
    }
}

/// Regression: event times further apart than `i64::MAX` in one batch (found by the model test above; encoding
/// the time delta overflowed).
#[test]
fn extreme_event_times_in_one_batch() {
    runtime().block_on(async {
        let storage = SimStorage::new();
        let (log, _) = open(&storage, &LogOptions::default());
        log.create_topic(TopicSpec::new(TOPIC, 1)).await.unwrap();
        let model: Vec<Record> =
            [i64::MAX, i64::MIN, 0, -1, i64::MAX - 1].iter().map(|&ts| Record { timestamp: ts, ..record(0) }).collect();
        log.append(TOPIC, 0, model.clone()).await.unwrap();
        check_against_model(&log, &model, 2, &[i64::MIN + 1, 1]).await.unwrap();
        drop(log);
        let (log, _) = open(&storage, &LogOptions::default());
        check_against_model(&log, &model, 2, &[]).await.unwrap();
    });
}

/// A read never returns records at or past the high watermark it reports (readers see only published data,
/// and `next_offset <= high_watermark` always holds), even while appends are being published concurrently.
#[test]
fn reads_stay_below_their_high_watermark_during_appends() {
    runtime().block_on(async {
        let storage = SimStorage::new();
        let opts = LogOptions { segment_bytes: 4096, ..LogOptions::default() };
        let (log, _) = open(&storage, &opts);
        let log = std::sync::Arc::new(log);
        log.create_topic(TopicSpec::new(TOPIC, 1)).await.unwrap();
        let writer = {
            let log = log.clone();
            tokio::spawn(async move {
                for n in 0..1500u64 {
                    log.append(TOPIC, 0, vec![record(n)]).await.unwrap();
                }
            })
        };
        let mut reads = 0;
        while !writer.is_finished() {
            let hw = log.describe_topic(TOPIC).await.unwrap().partition_details[0].high_watermark;
            let from = hw.saturating_sub(2);
            let r = log.read(TOPIC, 0, from, 100, 1 << 20).await.unwrap();
            reads += 1;
            assert!(
                r.next_offset <= r.high_watermark,
                "read from {from} returned up to {} but reported high watermark {}",
                r.next_offset,
                r.high_watermark
            );
            assert!(r.records.iter().all(|rec| rec.offset < r.high_watermark));
        }
        writer.await.unwrap();
        assert!(reads > 10);
    });
}
