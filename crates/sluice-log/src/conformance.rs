//! The conformance suite of the log port: what every [`LogStore`] adapter must do.
//!
//! An adapter's tests call [`log_conformance_suite!`](crate::log_conformance_suite) with an async function that
//! returns a [`Fresh`] log; the macro expands to one test per check, each on its own fresh instance, so a failure
//! names the check and no check sees another's topics. No check depends on timing an external broker could
//! break: a deleted topic's name may take a while to become free again (Kafka deletes asynchronously), and
//! waits are bounded by generous deadlines, never asserted to be fast.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::{ErrorKind, LogError, LogStore, Record, TopicSpec};

/// How long a check waits for something an adapter may do asynchronously (a deleted name becoming free).
const EVENTUALLY: Duration = Duration::from_secs(60);

type Reopen = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Arc<dyn LogStore>> + Send>> + Send + Sync>;

/// A log made for one check, with what keeps it alive (a temporary directory, a broker's namespace) and,
/// where the adapter can, a way to lose power and open the same log again.
pub struct Fresh {
    pub log: Arc<dyn LogStore>,
    restart: Option<(Box<dyn Fn() + Send + Sync>, Reopen)>,
    _guard: Box<dyn Send + Sync>,
}

impl Fresh {
    pub fn new(log: Arc<dyn LogStore>, guard: impl Send + Sync + 'static) -> Self {
        Fresh { log, restart: None, _guard: Box::new(guard) }
    }

    /// `power_loss` drops whatever is not durable yet (called while the old instance still lives, so nothing it
    /// does when dropped counts); `reopen` then opens the same log again and recovers it.
    pub fn with_restart<P, F, Fut>(mut self, power_loss: P, reopen: F) -> Self
    where
        P: Fn() + Send + Sync + 'static,
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Arc<dyn LogStore>> + Send + 'static,
    {
        self.restart = Some((Box::new(power_loss), Box::new(move || Box::pin(reopen()))));
        self
    }
}

/// Expands to one `#[tokio::test]` per check, each calling `$make().await` for a fresh [`Fresh`] log.
#[macro_export]
macro_rules! log_conformance_suite {
    ($make:path) => {
        $crate::log_conformance_suite!(@checks $make;
            create_and_describe_a_topic,
            bad_topic_specs_are_refused,
            delete_removes_a_topic,
            a_recreated_topic_starts_empty,
            appends_get_contiguous_offsets,
            records_read_back_as_written,
            partitions_are_independent,
            unknown_topics_and_partitions_are_errors,
            reads_honour_their_start_and_limits,
            following_next_offset_visits_every_record_once,
            reads_at_and_past_the_high_watermark,
            offset_for_time_finds_the_first_at_or_after,
            concurrent_appends_keep_each_producers_order,
            wait_for_times_out_without_data,
            wait_for_wakes_on_append,
            close_keeps_what_was_acknowledged,
        );
    };
    (@checks $make:path; $($check:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                $crate::conformance::$check($make().await).await;
            }
        )*
    };
}

fn rec(ts: i64, key: Option<&str>, value: String) -> Record {
    Record {
        timestamp: ts,
        key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
        headers: vec![("h".into(), Bytes::from_static(b"v"))],
        value: Bytes::from(value),
    }
}

fn numbered(n: u64) -> Record {
    rec(n as i64, None, format!("{{\"n\":{n}}}"))
}

async fn topic(log: &dyn LogStore, name: &str, partitions: u32) {
    log.create_topic(TopicSpec::new(name, partitions)).await.unwrap_or_else(|e| panic!("create {name}: {e}"));
}

async fn read_all(log: &dyn LogStore, name: &str, partition: u32) -> Vec<crate::StoredRecord> {
    let (mut next, mut out) = (0, Vec::new());
    loop {
        let r = log.read(name, partition, next, 1000, 1 << 24).await.unwrap();
        if r.records.is_empty() {
            return out;
        }
        next = r.next_offset;
        out.extend(r.records);
    }
}

pub async fn create_and_describe_a_topic(f: Fresh) {
    let log = &*f.log;
    let info = log.create_topic(TopicSpec::new("lifecycle", 3)).await.unwrap();
    assert_eq!((info.name.as_str(), info.partitions), ("lifecycle", 3));
    assert_eq!(log.topic("lifecycle").await.unwrap().partitions, 3);
    assert!(log.list_topics().await.unwrap().iter().any(|t| t.name == "lifecycle"));
    let d = log.describe_topic("lifecycle").await.unwrap();
    assert_eq!(d.partition_details.iter().map(|p| p.partition).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert!(d.partition_details.iter().all(|p| p.high_watermark == 0 && p.log_start_offset == 0 && p.writable));
}

pub async fn bad_topic_specs_are_refused(f: Fresh) {
    let log = &*f.log;
    topic(log, "taken", 1).await;
    let taken = log.create_topic(TopicSpec::new("taken", 1)).await.unwrap_err();
    assert!(matches!(taken, LogError::TopicExists(_)), "{taken:?}");
    assert_eq!(taken.kind(), ErrorKind::AlreadyExists);
    let bad = log.create_topic(TopicSpec::new("bad/name", 1)).await;
    assert!(matches!(bad, Err(LogError::InvalidTopicName { .. })), "{bad:?}");
    let zero = log.create_topic(TopicSpec::new("zero", 0)).await;
    assert!(matches!(zero, Err(LogError::InvalidTopic { .. })), "{zero:?}");
    assert_eq!(zero.unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert!(matches!(log.topic("zero").await, Err(LogError::TopicNotFound(_))), "a refused topic is not created");
}

pub async fn delete_removes_a_topic(f: Fresh) {
    let log = &*f.log;
    topic(log, "doomed", 2).await;
    log.delete_topic("doomed").await.unwrap();
    assert!(matches!(log.topic("doomed").await, Err(LogError::TopicNotFound(_))));
    assert!(!log.list_topics().await.unwrap().iter().any(|t| t.name == "doomed"));
    assert!(matches!(log.delete_topic("doomed").await, Err(LogError::TopicNotFound(_))));
}

pub async fn a_recreated_topic_starts_empty(f: Fresh) {
    let log = &*f.log;
    topic(log, "again", 1).await;
    log.append("again", 0, vec![numbered(0), numbered(1)]).await.unwrap();
    log.delete_topic("again").await.unwrap();
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        match log.create_topic(TopicSpec::new("again", 1)).await {
            Ok(_) => break,
            // Kafka frees a deleted topic's name asynchronously.
            Err(LogError::TopicExists(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("recreate a deleted topic: {e}"),
        }
    }
    assert_eq!(log.describe_topic("again").await.unwrap().partition_details[0].high_watermark, 0);
    assert!(read_all(log, "again", 0).await.is_empty());
}

pub async fn appends_get_contiguous_offsets(f: Fresh) {
    let log = &*f.log;
    topic(log, "offsets", 1).await;
    let ack = log.append("offsets", 0, (0..10).map(numbered).collect()).await.unwrap();
    assert_eq!((ack.base_offset, ack.record_count), (0, 10));
    let ack = log.append("offsets", 0, vec![numbered(10)]).await.unwrap();
    assert_eq!((ack.base_offset, ack.record_count), (10, 1));
    let d = log.describe_topic("offsets").await.unwrap();
    assert_eq!(d.partition_details[0].high_watermark, 11);
}

pub async fn records_read_back_as_written(f: Fresh) {
    let log = &*f.log;
    topic(log, "rw", 1).await;
    let batch = (0..10).map(|i| rec(1000 + i, Some("k"), format!("{{\"i\":{i}}}"))).collect();
    log.append("rw", 0, batch).await.unwrap();
    let unkeyed = Record { headers: vec![], ..rec(5, None, "{}".into()) };
    log.append("rw", 0, vec![unkeyed]).await.unwrap();
    let r = log.read("rw", 0, 0, 100, 1 << 20).await.unwrap();
    assert_eq!((r.records.len(), r.next_offset, r.high_watermark), (11, 11, 11));
    assert_eq!(r.records.iter().map(|r| r.offset).collect::<Vec<_>>(), (0..11).collect::<Vec<_>>());
    let third = &r.records[3];
    assert_eq!(third.value, Bytes::from("{\"i\":3}"));
    assert_eq!(third.timestamp, 1003);
    assert_eq!(third.key.as_deref(), Some(&b"k"[..]));
    assert_eq!(third.headers, vec![("h".to_string(), Bytes::from_static(b"v"))]);
    let last = &r.records[10];
    assert_eq!((last.key.as_deref(), last.headers.len(), last.timestamp), (None, 0, 5));
}

pub async fn partitions_are_independent(f: Fresh) {
    let log = &*f.log;
    topic(log, "parts", 3).await;
    log.append("parts", 1, vec![numbered(0), numbered(1)]).await.unwrap();
    let ack = log.append("parts", 2, vec![numbered(7)]).await.unwrap();
    assert_eq!(ack.base_offset, 0, "each partition numbers its own records");
    assert!(read_all(log, "parts", 0).await.is_empty());
    assert_eq!(read_all(log, "parts", 1).await.len(), 2);
    assert_eq!(read_all(log, "parts", 2).await[0].value, numbered(7).value);
}

pub async fn unknown_topics_and_partitions_are_errors(f: Fresh) {
    let log = &*f.log;
    topic(log, "known", 2).await;
    let e = log.append("known", 2, vec![numbered(0)]).await.unwrap_err();
    assert!(matches!(e, LogError::PartitionNotFound { partition: 2, partitions: 2, .. }), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(matches!(log.read("known", 5, 0, 1, 1).await, Err(LogError::PartitionNotFound { .. })));
    assert!(matches!(log.read("nope", 0, 0, 1, 1).await, Err(LogError::TopicNotFound(_))));
    assert!(matches!(log.append("nope", 0, vec![numbered(0)]).await, Err(LogError::TopicNotFound(_))));
    assert!(matches!(log.describe_topic("nope").await, Err(LogError::TopicNotFound(_))));
    let e = log.read("nope", 0, 0, 1, 1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(!e.kind().is_transient());
}

pub async fn reads_honour_their_start_and_limits(f: Fresh) {
    let log = &*f.log;
    topic(log, "bounds", 1).await;
    for b in 0..5 {
        log.append("bounds", 0, (b * 4..b * 4 + 4).map(numbered).collect()).await.unwrap();
    }
    // From the middle of a batch, limited by count.
    let r = log.read("bounds", 0, 6, 5, 1 << 20).await.unwrap();
    assert_eq!(r.records.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![6, 7, 8, 9, 10]);
    assert_eq!(r.next_offset, 11);
    // A byte limit smaller than one record still makes progress.
    let r = log.read("bounds", 0, 3, 100, 1).await.unwrap();
    assert_eq!(r.records.first().map(|r| r.offset), Some(3));
    assert_eq!(r.next_offset, 3 + r.records.len() as u64);
}

pub async fn following_next_offset_visits_every_record_once(f: Fresh) {
    let log = &*f.log;
    topic(log, "follow", 1).await;
    for b in 0..5 {
        log.append("follow", 0, (b * 4..b * 4 + 4).map(numbered).collect()).await.unwrap();
    }
    let (mut next, mut seen) = (0, Vec::new());
    loop {
        let r = log.read("follow", 0, next, 3, 1 << 20).await.unwrap();
        if r.records.is_empty() {
            break;
        }
        seen.extend(r.records.iter().map(|r| r.offset));
        next = r.next_offset;
    }
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
}

pub async fn reads_at_and_past_the_high_watermark(f: Fresh) {
    let log = &*f.log;
    topic(log, "edge", 1).await;
    log.append("edge", 0, (0..20).map(numbered).collect()).await.unwrap();
    let r = log.read("edge", 0, 20, 10, 1 << 20).await.unwrap();
    assert!(r.records.is_empty());
    assert_eq!((r.next_offset, r.high_watermark, r.log_start_offset), (20, 20, 0));
    let e = log.read("edge", 0, 21, 10, 1 << 20).await.unwrap_err();
    assert!(matches!(e, LogError::OffsetOutOfRange { start: 0, end: 20, .. }), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::OutOfRange);
}

pub async fn offset_for_time_finds_the_first_at_or_after(f: Fresh) {
    let log = &*f.log;
    topic(log, "time", 1).await;
    // Event times are not monotonic: a late event (ts 15) arrives after ts 40.
    for ts in [10, 20, 30, 40, 15, 50] {
        log.append("time", 0, vec![rec(ts, None, "{}".into())]).await.unwrap();
    }
    for (ts, offset) in [(0, 0), (10, 0), (11, 1), (35, 3), (45, 5), (51, 6)] {
        assert_eq!(log.offset_for_time("time", 0, ts).await.unwrap(), offset, "first offset at or after {ts}");
    }
}

pub async fn concurrent_appends_keep_each_producers_order(f: Fresh) {
    topic(&*f.log, "concurrent", 1).await;
    let mut tasks = Vec::new();
    for producer in 0..8 {
        let log = f.log.clone();
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for seq in 0..25 {
                let recs = vec![rec(0, None, format!("{{\"p\":{producer},\"s\":{seq}}}"))];
                acks.push(log.append("concurrent", 0, recs).await.unwrap().base_offset);
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
    assert_eq!(read_all(&*f.log, "concurrent", 0).await.len(), 200);
}

pub async fn wait_for_times_out_without_data(f: Fresh) {
    let log = &*f.log;
    topic(log, "quiet", 1).await;
    log.append("quiet", 0, vec![numbered(0)]).await.unwrap();
    assert_eq!(log.wait_for("quiet", 0, 1, Duration::from_millis(50)).await.unwrap(), 1);
    // Data already past the offset answers at once.
    let started = Instant::now();
    assert_eq!(log.wait_for("quiet", 0, 0, EVENTUALLY).await.unwrap(), 1);
    assert!(started.elapsed() < EVENTUALLY);
}

pub async fn wait_for_wakes_on_append(f: Fresh) {
    topic(&*f.log, "wake", 1).await;
    let waiter = {
        let log = f.log.clone();
        tokio::spawn(async move { log.wait_for("wake", 0, 0, EVENTUALLY).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = Instant::now();
    f.log.append("wake", 0, vec![numbered(0)]).await.unwrap();
    assert_eq!(waiter.await.unwrap(), 1);
    assert!(started.elapsed() < EVENTUALLY, "woken by the append, not by the timeout");
}

pub async fn close_keeps_what_was_acknowledged(f: Fresh) {
    topic(&*f.log, "closing", 2).await;
    f.log.append("closing", 0, (0..10).map(numbered).collect()).await.unwrap();
    f.log.append("closing", 1, vec![numbered(10)]).await.unwrap();
    f.log.close().await;
    let e = f.log.append("closing", 0, vec![numbered(11)]).await.unwrap_err();
    assert!(matches!(e, LogError::Closed), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    let Fresh { log, restart, _guard } = f;
    let Some((power_loss, reopen)) = restart else { return };
    power_loss();
    drop(log);
    let log = reopen().await;
    let values: Vec<Bytes> = read_all(&*log, "closing", 0).await.into_iter().map(|r| r.value).collect();
    assert_eq!(values, (0..10).map(|n| numbered(n).value).collect::<Vec<_>>());
    assert_eq!(read_all(&*log, "closing", 1).await.len(), 1);
}
