//! The conformance suite of the log port: what every [`LogStore`] adapter must do. The embedded adapter runs it
//! in its tests (on real files and on simulated storage); a Kafka adapter will run the same functions.
//!
//! Each check uses its own topic names, so all of them can share one store.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::{LogError, LogStore, Record, TopicSpec};

fn rec(ts: i64, key: Option<&str>, value: String) -> Record {
    Record {
        timestamp: ts,
        key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
        headers: vec![("h".into(), Bytes::from_static(b"v"))],
        value: Bytes::from(value),
    }
}

/// Runs every check against `log`.
pub async fn run_all<L: LogStore>(log: Arc<L>) {
    topic_lifecycle(&*log).await;
    append_and_read(&*log).await;
    read_bounds(&*log).await;
    offset_for_time(&*log).await;
    concurrent_appends_are_ordered(log.clone()).await;
    wait_for_wakes_on_append(log.clone()).await;
}

pub async fn topic_lifecycle<L: LogStore>(log: &L) {
    let info = log.create_topic(TopicSpec::new("conf-lifecycle", 3)).await.unwrap();
    assert_eq!(info.partitions, 3);
    assert!(matches!(log.create_topic(TopicSpec::new("conf-lifecycle", 1)).await, Err(LogError::TopicExists(_))));
    assert!(matches!(log.create_topic(TopicSpec::new("bad/name", 1)).await, Err(LogError::InvalidTopicName { .. })));
    assert!(matches!(log.create_topic(TopicSpec::new("conf-zero", 0)).await, Err(LogError::InvalidTopic { .. })));
    assert!(log.list_topics().await.unwrap().iter().any(|t| t.name == "conf-lifecycle"));
    let d = log.describe_topic("conf-lifecycle").await.unwrap();
    assert_eq!(d.partition_details.len(), 3);
    assert!(d.partition_details.iter().all(|p| p.high_watermark == 0 && p.writable));
    log.delete_topic("conf-lifecycle").await.unwrap();
    assert!(matches!(log.topic("conf-lifecycle").await, Err(LogError::TopicNotFound(_))));
    assert!(matches!(log.delete_topic("conf-lifecycle").await, Err(LogError::TopicNotFound(_))));
    // The name is free again, and the new topic starts empty.
    log.create_topic(TopicSpec::new("conf-lifecycle", 1)).await.unwrap();
    assert_eq!(log.describe_topic("conf-lifecycle").await.unwrap().partition_details[0].high_watermark, 0);
}

pub async fn append_and_read<L: LogStore>(log: &L) {
    log.create_topic(TopicSpec::new("conf-rw", 2)).await.unwrap();
    let a = log.append("conf-rw", 1, (0..10).map(|i| rec(1000 + i, Some("k"), format!("{{\"i\":{i}}}"))).collect());
    let ack = a.await.unwrap();
    assert_eq!((ack.base_offset, ack.record_count), (0, 10));
    let ack = log.append("conf-rw", 1, vec![rec(5, None, "{}".into())]).await.unwrap();
    assert_eq!(ack.base_offset, 10);
    let r = log.read("conf-rw", 1, 0, 100, 1 << 20).await.unwrap();
    assert_eq!(r.records.len(), 11);
    assert_eq!(r.next_offset, 11);
    assert_eq!(r.high_watermark, 11);
    for (i, record) in r.records.iter().enumerate() {
        assert_eq!(record.offset, i as u64);
    }
    assert_eq!(r.records[3].value, Bytes::from("{\"i\":3}"));
    assert_eq!(r.records[3].timestamp, 1003);
    assert_eq!(r.records[3].key.as_deref(), Some(&b"k"[..]));
    assert_eq!(r.records[3].headers, vec![("h".to_string(), Bytes::from_static(b"v"))]);
    assert_eq!(r.records[10].key, None);
    // Partition 0 is untouched.
    assert_eq!(log.read("conf-rw", 0, 0, 100, 1 << 20).await.unwrap().records.len(), 0);
    assert!(matches!(
        log.append("conf-rw", 2, vec![rec(0, None, "{}".into())]).await,
        Err(LogError::PartitionNotFound { .. })
    ));
    assert!(matches!(log.read("conf-nope", 0, 0, 1, 1).await, Err(LogError::TopicNotFound(_))));
}

pub async fn read_bounds<L: LogStore>(log: &L) {
    log.create_topic(TopicSpec::new("conf-bounds", 1)).await.unwrap();
    for b in 0..5 {
        let recs = (0..4).map(|i| rec(b * 4 + i, None, format!("{{\"n\":{}}}", b * 4 + i))).collect();
        log.append("conf-bounds", 0, recs).await.unwrap();
    }
    // From the middle of a batch, limited by count.
    let r = log.read("conf-bounds", 0, 6, 5, 1 << 20).await.unwrap();
    assert_eq!(r.records.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![6, 7, 8, 9, 10]);
    assert_eq!(r.next_offset, 11);
    // Following next_offset visits every record once.
    let (mut next, mut seen) = (0, Vec::new());
    loop {
        let r = log.read("conf-bounds", 0, next, 3, 1 << 20).await.unwrap();
        if r.records.is_empty() {
            break;
        }
        seen.extend(r.records.iter().map(|r| r.offset));
        next = r.next_offset;
    }
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
    // At the high watermark: empty. Past it: out of range.
    assert!(log.read("conf-bounds", 0, 20, 10, 1 << 20).await.unwrap().records.is_empty());
    assert!(matches!(
        log.read("conf-bounds", 0, 21, 10, 1 << 20).await,
        Err(LogError::OffsetOutOfRange { start: 0, end: 20, .. })
    ));
}

pub async fn offset_for_time<L: LogStore>(log: &L) {
    log.create_topic(TopicSpec::new("conf-time", 1)).await.unwrap();
    // Event times are not monotonic: a late event (ts 15) arrives after ts 40.
    for ts in [10, 20, 30, 40, 15, 50] {
        log.append("conf-time", 0, vec![rec(ts, None, "{}".into())]).await.unwrap();
    }
    assert_eq!(log.offset_for_time("conf-time", 0, 0).await.unwrap(), 0);
    assert_eq!(log.offset_for_time("conf-time", 0, 10).await.unwrap(), 0);
    assert_eq!(log.offset_for_time("conf-time", 0, 11).await.unwrap(), 1);
    assert_eq!(log.offset_for_time("conf-time", 0, 35).await.unwrap(), 3);
    assert_eq!(log.offset_for_time("conf-time", 0, 45).await.unwrap(), 5);
    assert_eq!(log.offset_for_time("conf-time", 0, 51).await.unwrap(), 6, "none: the high watermark");
}

pub async fn concurrent_appends_are_ordered<L: LogStore>(log: Arc<L>) {
    log.create_topic(TopicSpec::new("conf-concurrent", 1)).await.unwrap();
    let mut tasks = Vec::new();
    for producer in 0..8 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for seq in 0..25 {
                let recs = vec![rec(0, None, format!("{{\"p\":{producer},\"s\":{seq}}}"))];
                acks.push(log.append("conf-concurrent", 0, recs).await.unwrap().base_offset);
            }
            acks
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let acks = t.await.unwrap();
        assert!(acks.windows(2).all(|w| w[0] < w[1]), "one producer's appends keep their order");
        all.extend(acks);
    }
    all.sort_unstable();
    assert_eq!(all, (0..200).collect::<Vec<_>>(), "offsets are unique and contiguous");
    let r = log.read("conf-concurrent", 0, 0, 1000, 1 << 24).await.unwrap();
    assert_eq!(r.records.len(), 200);
}

pub async fn wait_for_wakes_on_append<L: LogStore>(log: Arc<L>) {
    log.create_topic(TopicSpec::new("conf-wait", 1)).await.unwrap();
    let hw = log.wait_for("conf-wait", 0, 0, Duration::from_millis(20)).await.unwrap();
    assert_eq!(hw, 0, "times out with nothing new");
    let waiter = {
        let log = log.clone();
        tokio::spawn(async move { log.wait_for("conf-wait", 0, 0, Duration::from_secs(30)).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    log.append("conf-wait", 0, vec![rec(0, None, "{}".into())]).await.unwrap();
    assert_eq!(waiter.await.unwrap(), 1);
}
