//! [`EmbeddedLog`]: the log port on local segment files.
//!
//! Layout below the log's root directory:
//!
//! ```text
//! topics/{topic}/topic.json                   name, partitions, retention, creation time
//! topics/{topic}/{partition}/{base}.log       segments, base offset zero-padded to 20 digits
//! topics/{topic}/{partition}/{base}.index     sparse index of a sealed segment
//! tmp/{topic}/                                a topic being created (renamed into topics/ when complete)
//! trash/{topic}-{ms}/                         a deleted topic being removed
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::error::{LogError, io_err};
use crate::format::{self, Record};
use crate::metrics::LogCollector;
use crate::options::{FsyncPolicy, LogOptions};
use crate::partition::{Partition, PartitionCore, RecoveryReport};
use crate::storage::Storage;
use crate::{
    AppendAck, LogStore, MAX_PARTITIONS, PartitionInfo, ReadResult, TopicDescription, TopicInfo, TopicSpec, now_ms,
    validate_topic_name,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicMeta {
    name: String,
    partitions: u32,
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    created_at_ms: i64,
}

pub(crate) struct Topic {
    meta: TopicMeta,
    partitions: Vec<Partition>,
}

impl Topic {
    fn partition(&self, id: u32) -> Result<&Partition, LogError> {
        self.partitions.get(id as usize).ok_or_else(|| LogError::PartitionNotFound {
            topic: self.meta.name.clone(),
            partition: id,
            partitions: self.meta.partitions,
        })
    }

    fn core(&self, id: u32) -> Result<Arc<PartitionCore>, LogError> {
        Ok(self.partition(id)?.core.clone())
    }
}

pub struct LogInner {
    root: PathBuf,
    storage: Arc<dyn Storage>,
    opts: Arc<LogOptions>,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serializes topic creation and deletion.
    admin: Mutex<()>,
    /// Set by [`LogStore::close`]: appends and topic changes answer [`LogError::Closed`].
    closed: AtomicBool,
}

/// The embedded log adapter. Cheap to clone; background housekeeping (retention, interval fsync) stops when the
/// last clone is dropped.
#[derive(Clone)]
pub struct EmbeddedLog {
    inner: Arc<LogInner>,
    _housekeeping: Arc<Housekeeping>,
}

impl EmbeddedLog {
    /// Opens (or creates) the log under `root`, recovering every partition. Blocking: call it off the async
    /// runtime. Returns what recovery did per partition.
    #[allow(clippy::type_complexity)]
    pub fn open(
        root: impl Into<PathBuf>,
        storage: Arc<dyn Storage>,
        opts: LogOptions,
    ) -> Result<(Self, Vec<(String, u32, RecoveryReport)>), LogError> {
        let root = root.into();
        let opts = Arc::new(opts);
        for d in ["topics", "tmp", "trash"] {
            let p = root.join(d);
            storage.create_dir_all(&p).map_err(io_err(&p))?;
        }
        // Leftovers of an interrupted create or delete.
        for d in ["tmp", "trash"] {
            let p = root.join(d);
            for name in storage.list_dir(&p).map_err(io_err(&p))? {
                storage.remove_dir_all(&p.join(&name)).map_err(io_err(&p.join(&name)))?;
            }
        }
        let topics_dir = root.join("topics");
        let mut names = storage.list_dir(&topics_dir).map_err(io_err(&topics_dir))?;
        names.sort();
        let mut topics = BTreeMap::new();
        let mut reports = Vec::new();
        for name in names {
            let dir = topics_dir.join(&name);
            let meta = read_meta(&*storage, &dir)?;
            let mut partitions = Vec::with_capacity(meta.partitions as usize);
            for id in 0..meta.partitions {
                let (p, report) =
                    Partition::open(storage.clone(), opts.clone(), &meta.name, id, dir.join(id.to_string()))?;
                reports.push((meta.name.clone(), id, report));
                partitions.push(p);
            }
            topics.insert(meta.name.clone(), Arc::new(Topic { meta, partitions }));
        }
        let inner = Arc::new(LogInner {
            root,
            storage,
            opts,
            topics: RwLock::new(topics),
            admin: Mutex::new(()),
            closed: AtomicBool::new(false),
        });
        let housekeeping = Housekeeping::start(Arc::downgrade(&inner));
        Ok((EmbeddedLog { inner, _housekeeping: Arc::new(housekeeping) }, reports))
    }

    /// Waits until every acknowledged append is durable (part of [`LogStore::close`]).
    async fn sync_all(&self) {
        let topics: Vec<Arc<Topic>> = self.inner.topics.read().values().cloned().collect();
        for t in topics {
            for p in &t.partitions {
                if let Err(e) = p.sync().await {
                    tracing::error!(topic = %t.meta.name, partition = p.core.id, error = %e, "final sync failed");
                }
            }
        }
    }

    /// Runs retention on every partition now (it also runs in the background every minute).
    pub fn apply_retention(&self) -> Result<usize, LogError> {
        self.inner.apply_retention(now_ms())
    }

    /// Runs retention as if the time were `now_ms` (for tests and tools).
    pub fn apply_retention_at(&self, now_ms: i64) -> Result<usize, LogError> {
        self.inner.apply_retention(now_ms)
    }

    fn check_open(&self) -> Result<(), LogError> {
        if self.inner.closed.load(Ordering::Acquire) { Err(LogError::Closed) } else { Ok(()) }
    }

    fn topic_arc(&self, name: &str) -> Result<Arc<Topic>, LogError> {
        self.inner.topics.read().get(name).cloned().ok_or_else(|| LogError::TopicNotFound(name.to_string()))
    }

    fn core(&self, topic: &str, partition: u32) -> Result<Arc<PartitionCore>, LogError> {
        self.topic_arc(topic)?.core(partition)
    }

    fn create_topic_blocking(&self, spec: TopicSpec) -> Result<TopicInfo, LogError> {
        self.check_open()?;
        validate_topic_name(&spec.name)?;
        if spec.partitions == 0 || spec.partitions > MAX_PARTITIONS {
            return Err(LogError::InvalidTopic {
                topic: spec.name,
                reason: format!("partitions must be between 1 and {MAX_PARTITIONS}"),
            });
        }
        let inner = &self.inner;
        let _admin = inner.admin.lock();
        if inner.topics.read().contains_key(&spec.name) {
            return Err(LogError::TopicExists(spec.name));
        }
        let storage = &*inner.storage;
        let meta = TopicMeta {
            name: spec.name.clone(),
            partitions: spec.partitions,
            retention_ms: spec.retention.map(|d| d.as_millis().min(u64::MAX as u128) as u64),
            retention_bytes: spec.retention_bytes,
            created_at_ms: now_ms(),
        };
        // Build the whole topic in tmp/, then rename it into place: a crash leaves either nothing or all of it.
        let tmp = inner.root.join("tmp").join(&spec.name);
        if storage.exists(&tmp) {
            storage.remove_dir_all(&tmp).map_err(io_err(&tmp))?;
        }
        storage.create_dir_all(&tmp).map_err(io_err(&tmp))?;
        let meta_path = tmp.join("topic.json");
        let f = storage.open(&meta_path, true).map_err(io_err(&meta_path))?;
        let json = serde_json::to_vec_pretty(&meta).expect("topic meta serializes");
        f.write_all_at(&json, 0).map_err(io_err(&meta_path))?;
        f.sync_data().map_err(io_err(&meta_path))?;
        for id in 0..spec.partitions {
            Partition::create_files(storage, &tmp.join(id.to_string()))?;
        }
        storage.sync_dir(&tmp).map_err(io_err(&tmp))?;
        let dest = inner.root.join("topics").join(&spec.name);
        storage.rename(&tmp, &dest).map_err(io_err(&dest))?;
        let topics_dir = inner.root.join("topics");
        storage.sync_dir(&topics_dir).map_err(io_err(&topics_dir))?;
        storage.sync_dir(&inner.root.join("tmp")).map_err(io_err(&tmp))?;

        let mut partitions = Vec::with_capacity(spec.partitions as usize);
        for id in 0..spec.partitions {
            let (p, _) =
                Partition::open(inner.storage.clone(), inner.opts.clone(), &spec.name, id, dest.join(id.to_string()))?;
            partitions.push(p);
        }
        let topic = Arc::new(Topic { meta, partitions });
        let info = inner.info(&topic.meta);
        inner.topics.write().insert(spec.name.clone(), topic);
        tracing::info!(topic = %spec.name, partitions = spec.partitions, "topic created");
        Ok(info)
    }

    fn delete_topic_blocking(&self, name: &str) -> Result<(), LogError> {
        self.check_open()?;
        let inner = &self.inner;
        let _admin = inner.admin.lock();
        let topic = inner.topics.write().remove(name).ok_or_else(|| LogError::TopicNotFound(name.to_string()))?;
        let src = inner.root.join("topics").join(name);
        let trash = inner.root.join("trash").join(format!("{name}-{}", now_ms()));
        let storage = &*inner.storage;
        storage.rename(&src, &trash).map_err(io_err(&src))?;
        storage.sync_dir(&inner.root.join("topics")).map_err(io_err(&src))?;
        // Writers finish what is queued before the files go.
        drop(topic);
        storage.remove_dir_all(&trash).map_err(io_err(&trash))?;
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }
}

impl LogInner {
    fn info(&self, meta: &TopicMeta) -> TopicInfo {
        TopicInfo {
            name: meta.name.clone(),
            partitions: meta.partitions,
            retention_ms: match meta.retention_ms {
                Some(u64::MAX) => None,
                Some(ms) => Some(ms),
                None => self.opts.retention.map(|d| d.as_millis().min(u64::MAX as u128) as u64),
            },
            retention_bytes: meta.retention_bytes.or(self.opts.retention_bytes),
            created_at_ms: meta.created_at_ms,
        }
    }

    pub(crate) fn partition_infos(&self) -> Vec<(String, Vec<PartitionInfo>)> {
        let topics: Vec<Arc<Topic>> = self.topics.read().values().cloned().collect();
        topics.iter().map(|t| (t.meta.name.clone(), t.partitions.iter().map(|p| p.core.info()).collect())).collect()
    }

    fn apply_retention(&self, now: i64) -> Result<usize, LogError> {
        let topics: Vec<Arc<Topic>> = self.topics.read().values().cloned().collect();
        let mut deleted = 0;
        for t in topics {
            let info = self.info(&t.meta);
            for p in &t.partitions {
                deleted +=
                    p.core.apply_retention(now, info.retention_ms.map(Duration::from_millis), info.retention_bytes)?;
            }
        }
        Ok(deleted)
    }

    fn flush_all(&self) {
        for t in self.topics.read().values() {
            for p in &t.partitions {
                p.request_flush();
            }
        }
    }
}

fn read_meta(storage: &dyn Storage, dir: &Path) -> Result<TopicMeta, LogError> {
    let path = dir.join("topic.json");
    let f = storage.open(&path, false).map_err(io_err(&path))?;
    let len = f.len().map_err(io_err(&path))?;
    if len > 1 << 20 {
        return Err(LogError::Corrupt { path: path.display().to_string(), position: 0, reason: "too large".into() });
    }
    let mut buf = vec![0; len as usize];
    f.read_exact_at(&mut buf, 0).map_err(io_err(&path))?;
    serde_json::from_slice(&buf).map_err(|e| LogError::Corrupt {
        path: path.display().to_string(),
        position: 0,
        reason: e.to_string(),
    })
}

/// Background thread: retention every minute and, under an fsync interval, periodic flushes.
struct Housekeeping {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Housekeeping {
    fn start(log: std::sync::Weak<LogInner>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("log-housekeeping".into())
            .spawn(move || {
                let tick = match log.upgrade().map(|l| l.opts.fsync) {
                    Some(FsyncPolicy::Interval(d)) => d.min(Duration::from_secs(1)),
                    _ => Duration::from_secs(1),
                };
                let mut since_retention = Duration::ZERO;
                while !stop2.load(Ordering::Acquire) {
                    std::thread::park_timeout(tick);
                    let Some(inner) = log.upgrade() else { break };
                    if matches!(inner.opts.fsync, FsyncPolicy::Interval(_)) {
                        inner.flush_all();
                    }
                    since_retention += tick;
                    if since_retention >= Duration::from_secs(60) {
                        since_retention = Duration::ZERO;
                        if let Err(e) = inner.apply_retention(now_ms()) {
                            tracing::error!(error = %e, "retention failed");
                        }
                    }
                }
            })
            .expect("spawn housekeeping thread");
        Housekeeping { stop, thread: Some(thread) }
    }
}

impl Drop for Housekeeping {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Takes an exclusive lock on `dir/LOCK` so two processes never open one data directory. Held while the
/// returned file lives.
pub fn lock_data_dir(dir: &Path) -> std::io::Result<File> {
    use std::os::unix::io::AsRawFd;
    std::fs::create_dir_all(dir)?;
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("LOCK"))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            format!("data directory {} is in use by another sluice process", dir.display()),
        ));
    }
    Ok(f)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, LogError> + Send + 'static) -> Result<T, LogError> {
    tokio::task::spawn_blocking(f).await.map_err(|_| LogError::Closed)?
}

#[async_trait]
impl LogStore for EmbeddedLog {
    async fn create_topic(&self, spec: TopicSpec) -> Result<TopicInfo, LogError> {
        let log = self.clone();
        blocking(move || log.create_topic_blocking(spec)).await
    }

    async fn delete_topic(&self, name: &str) -> Result<(), LogError> {
        let (log, name) = (self.clone(), name.to_string());
        blocking(move || log.delete_topic_blocking(&name)).await
    }

    async fn list_topics(&self) -> Result<Vec<TopicInfo>, LogError> {
        Ok(self.inner.topics.read().values().map(|t| self.inner.info(&t.meta)).collect())
    }

    async fn topic(&self, name: &str) -> Result<TopicInfo, LogError> {
        Ok(self.inner.info(&self.topic_arc(name)?.meta))
    }

    async fn describe_topic(&self, name: &str) -> Result<TopicDescription, LogError> {
        let t = self.topic_arc(name)?;
        Ok(TopicDescription {
            info: self.inner.info(&t.meta),
            partition_details: t.partitions.iter().map(|p| p.core.info()).collect(),
        })
    }

    async fn append(&self, topic: &str, partition: u32, records: Vec<Record>) -> Result<AppendAck, LogError> {
        self.check_open()?;
        let t = self.topic_arc(topic)?;
        let p = t.partition(partition)?;
        if records.is_empty() {
            return Ok(AppendAck { base_offset: *p.core.high_watermark.borrow(), record_count: 0 });
        }
        let batch = format::encode_batch(&records, now_ms());
        p.append(batch).await
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<ReadResult, LogError> {
        let core = self.core(topic, partition)?;
        blocking(move || core.read(from, max_records, max_bytes)).await
    }

    async fn offset_for_time(&self, topic: &str, partition: u32, ts_ms: i64) -> Result<u64, LogError> {
        let core = self.core(topic, partition)?;
        blocking(move || core.offset_for_time(ts_ms)).await
    }

    async fn flush(&self, topic: &str, partition: u32) -> Result<(), LogError> {
        let t = self.topic_arc(topic)?;
        t.partition(partition)?.sync().await
    }

    async fn wait_for(&self, topic: &str, partition: u32, offset: u64, timeout: Duration) -> Result<u64, LogError> {
        let core = self.core(topic, partition)?;
        let mut rx = core.high_watermark.subscribe();
        drop(core);
        let _ = tokio::time::timeout(timeout, rx.wait_for(|hw| *hw > offset)).await;
        Ok(*rx.borrow())
    }

    async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.sync_all().await;
    }

    fn collector(&self) -> Option<Box<dyn prometheus::core::Collector>> {
        Some(Box::new(LogCollector::new(Arc::downgrade(&self.inner))))
    }
}
