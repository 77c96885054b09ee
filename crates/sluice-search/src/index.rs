//! One topic's index: a tantivy index per time partition, written by the topic's sink and searched by readers.
//!
//! Exactly-once (ADR 0008): `manifest.json` holds the definition and the topic offsets every partition has
//! everything below. A commit round commits each partition written since the last round with those offsets as its
//! commit payload, then replaces the manifest. Indexing resumes from the manifest's offsets; a record is added to
//! a partition only if its offset is at or past that partition's own committed payload, so a round cut short by a
//! crash (some partitions committed, the manifest not yet) never adds a document twice. Uncommitted documents die
//! with the process, as they must: they were never acknowledged by a commit.
//!
//! Partitions follow `sluice_sink::partitioning` (ADR 0011): a new one is as wide as the widest allowed slot,
//! clipped to its neighbours; one that holds `partition_docs` documents is sealed at a commit (its end moves down
//! to its newest document and is written in that commit's payload). At most [`MAX_OPEN_WRITERS`] writers are
//! open; a batch that needs another commits and closes the least recently used one, with offsets exact to the
//! record being added, so memory stays bounded whatever the spread of event times.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use sluice_config::IndexDefinition;
use sluice_sink::partitioning::PartitionPolicy;
use tantivy::directory::MmapDirectory;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument};

use crate::error::SearchError;
use crate::schema::IndexSchema;

/// Writers open at once per topic (late or spread events touch several partitions; each writer holds memory).
pub const MAX_OPEN_WRITERS: usize = 3;
/// A clean writer idle this long is closed.
const WRITER_IDLE: Duration = Duration::from_secs(60);
/// Tantivy's smallest memory budget per indexing thread.
const MIN_THREAD_MEMORY: usize = 15_000_000;
/// Niceness of tantivy's indexing and merge threads: indexing history takes the CPU ingest, jobs and queries
/// leave, and gives it back at once (a nice-10 thread gets ~10% of a core that a nice-0 thread also wants).
const INDEXING_NICE: i32 = 10;

/// How a topic's index is written.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    pub refresh_interval: Duration,
    /// Widest partition.
    pub partition_ms: i64,
    /// Documents after which a partition is sealed.
    pub partition_docs: u64,
    pub retention_ms: Option<i64>,
    /// Indexing memory of the topic, shared by its open writers.
    pub writer_memory: usize,
    pub indexing_threads: usize,
    pub merge_threads: usize,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    version: u32,
    topic: String,
    definition: IndexDefinition,
    /// Next offset per partition of the topic that every index partition has everything below.
    offsets: BTreeMap<u32, u64>,
    /// Width of the partitions of indexes made before partitions were sealed (then every partition was this
    /// wide); newer partitions carry their end in their commit payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    partition_ms: Option<i64>,
}

/// A partition's commit payload: the topic offsets it has everything below, and its end.
#[derive(Serialize, Deserialize)]
struct Payload {
    offsets: BTreeMap<u32, u64>,
    end: i64,
}

/// A searchable partition: its time range and a reader reloaded after every commit.
pub struct Segmented {
    pub start: i64,
    pub end: i64,
    pub index: Index,
    pub reader: IndexReader,
}

struct Writable {
    part: Arc<Segmented>,
    writer: Option<IndexWriter>,
    /// The commit payload: offsets this partition has everything below.
    committed: BTreeMap<u32, u64>,
    dirty: bool,
    last_used: Instant,
    /// Documents (committed or not) and their time range, for sealing.
    docs: u64,
    min_ts: i64,
    max_ts: i64,
}

struct WriteState {
    parts: BTreeMap<i64, Writable>,
    /// Offsets of everything added (committed or not).
    applied: BTreeMap<u32, u64>,
    /// Offsets in the manifest.
    committed: BTreeMap<u32, u64>,
    last_commit: Instant,
    uncommitted_docs: u64,
}

/// One topic's index.
pub struct TopicIndex {
    pub topic: String,
    pub dir: PathBuf,
    pub definition: IndexDefinition,
    pub schema: IndexSchema,
    pub opts: IndexOptions,
    /// The fixed partition width of an index made before partitions were sealed (kept in its manifest).
    legacy_width: Option<i64>,
    state: Mutex<WriteState>,
    readers: RwLock<BTreeMap<i64, Arc<Segmented>>>,
}

impl TopicIndex {
    /// Creates a new, empty index in `dir` (which must not hold one).
    pub fn create(
        dir: &Path,
        topic: &str,
        definition: IndexDefinition,
        opts: IndexOptions,
    ) -> Result<Self, SearchError> {
        std::fs::create_dir_all(dir.join("partitions")).map_err(|e| SearchError::io(dir, e))?;
        let m =
            Manifest { version: 1, topic: topic.to_string(), definition, offsets: BTreeMap::new(), partition_ms: None };
        write_manifest(dir, &m)?;
        Self::open(dir, opts)
    }

    /// The definition stored in `dir`'s manifest.
    pub fn read_definition(dir: &Path) -> Result<(String, IndexDefinition), SearchError> {
        let m = read_manifest(dir)?;
        Ok((m.topic, m.definition))
    }

    /// Opens an index: partitions that were created but never committed are removed.
    pub fn open(dir: &Path, opts: IndexOptions) -> Result<Self, SearchError> {
        let m = read_manifest(dir)?;
        let legacy_width = m.partition_ms.filter(|w| *w > 0).unwrap_or(opts.partition_ms);
        let schema = IndexSchema::build(&m.definition);
        let pdir = dir.join("partitions");
        std::fs::create_dir_all(&pdir).map_err(|e| SearchError::io(&pdir, e))?;
        let mut parts = BTreeMap::new();
        let entries = std::fs::read_dir(&pdir).map_err(|e| SearchError::io(&pdir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| SearchError::io(&pdir, e))?;
            let path = entry.path();
            let Some(start) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<i64>().ok()) else {
                continue;
            };
            if !path.join("meta.json").exists() {
                // Created but never written by tantivy: nothing was committed in it.
                let _ = std::fs::remove_dir_all(&path);
                continue;
            }
            let index = Index::open_in_dir(&path)?;
            let Some(payload) = read_payload(&index, start.saturating_add(legacy_width))? else {
                // Created (tantivy wrote its empty meta.json) but never committed.
                drop(index);
                let _ = std::fs::remove_dir_all(&path);
                continue;
            };
            let reader = reader(&index)?;
            let (docs, min_ts, max_ts) = time_stats(&reader)?;
            let part = Arc::new(Segmented { start, end: payload.end, index, reader });
            parts.insert(
                start,
                Writable {
                    part,
                    writer: None,
                    committed: payload.offsets,
                    dirty: false,
                    last_used: Instant::now(),
                    docs,
                    min_ts,
                    max_ts,
                },
            );
        }
        let readers = parts.iter().map(|(s, w)| (*s, w.part.clone())).collect();
        Ok(TopicIndex {
            topic: m.topic,
            dir: dir.to_path_buf(),
            definition: m.definition,
            schema,
            opts,
            legacy_width: m.partition_ms,
            state: Mutex::new(WriteState {
                parts,
                applied: m.offsets.clone(),
                committed: m.offsets,
                last_commit: Instant::now(),
                uncommitted_docs: 0,
            }),
            readers: RwLock::new(readers),
        })
    }

    fn policy(&self) -> PartitionPolicy {
        PartitionPolicy::for_retention(self.opts.partition_ms, self.opts.partition_docs, self.opts.retention_ms)
    }

    /// Offsets in the manifest: indexing resumes there.
    pub fn committed_offsets(&self) -> BTreeMap<u32, u64> {
        self.state.lock().committed.clone()
    }

    /// The partitions overlapping `[from, to)`, newest first.
    pub fn partitions(&self, from: Option<i64>, to: Option<i64>) -> Vec<Arc<Segmented>> {
        let r = self.readers.read();
        r.values().rev().filter(|p| from.is_none_or(|f| p.end > f) && to.is_none_or(|t| p.start < t)).cloned().collect()
    }

    /// Adds documents (`(partition, offset, timestamp, doc)`) and notes `next` as the applied offsets. A document
    /// its partition already committed is skipped. Returns how many were added.
    pub fn add(
        &self,
        docs: impl IntoIterator<Item = (u32, u64, i64, TantivyDocument)>,
        next: &BTreeMap<u32, u64>,
    ) -> Result<u64, SearchError> {
        let mut st = self.state.lock();
        match self.add_locked(&mut st, docs, next) {
            Ok(n) => Ok(n),
            Err(e) => {
                // Part of the batch may be in the writers: it must never be committed under the old offsets.
                self.reset_locked(&mut st)?;
                Err(e)
            }
        }
    }

    fn add_locked(
        &self,
        st: &mut WriteState,
        docs: impl IntoIterator<Item = (u32, u64, i64, TantivyDocument)>,
        next: &BTreeMap<u32, u64>,
    ) -> Result<u64, SearchError> {
        let mut added = 0;
        let policy = self.policy();
        let cutoff = self.opts.retention_ms.map(|r| sluice_log::now_ms().saturating_sub(r));
        // Where this batch has got to: everything below is added to whichever partition it belongs in. A writer
        // closed mid-batch commits with these offsets, which is exact for it.
        let mut progress = st.applied.clone();
        for (p, offset, ts, doc) in docs {
            let (start, end) = policy.locate(&st.parts, |w| w.part.end, ts);
            if cutoff.is_some_and(|c| end <= c) {
                // Older than the retention: its partition would be dropped at once.
                progress.insert(p, offset + 1);
                continue;
            }
            self.ensure_partition(st, start, end, &progress)?;
            let w = st.parts.get_mut(&start).expect("partition just ensured");
            if offset >= w.committed.get(&p).copied().unwrap_or(0) {
                w.writer.as_ref().expect("writer just ensured").add_document(doc)?;
                w.dirty = true;
                w.last_used = Instant::now();
                w.docs += 1;
                w.min_ts = w.min_ts.min(ts);
                w.max_ts = w.max_ts.max(ts);
                added += 1;
            }
            let e = progress.entry(p).or_insert(0);
            *e = (*e).max(offset + 1);
        }
        for (p, o) in next {
            let e = st.applied.entry(*p).or_insert(0);
            *e = (*e).max(*o);
        }
        st.uncommitted_docs += added;
        Ok(added)
    }

    fn ensure_partition(
        &self,
        st: &mut WriteState,
        start: i64,
        end: i64,
        progress: &BTreeMap<u32, u64>,
    ) -> Result<(), SearchError> {
        if let std::collections::btree_map::Entry::Vacant(slot) = st.parts.entry(start) {
            let path = self.dir.join("partitions").join(start.to_string());
            std::fs::create_dir_all(&path).map_err(|e| SearchError::io(&path, e))?;
            let dir = MmapDirectory::open(&path).map_err(|e| SearchError::Internal(e.to_string()))?;
            let index = Index::create(dir, self.schema.schema.clone(), Default::default())?;
            let reader = reader(&index)?;
            let part = Arc::new(Segmented { start, end, index, reader });
            self.readers.write().insert(start, part.clone());
            slot.insert(Writable {
                part,
                writer: None,
                committed: BTreeMap::new(),
                dirty: false,
                last_used: Instant::now(),
                docs: 0,
                min_ts: i64::MAX,
                max_ts: i64::MIN,
            });
        }
        if st.parts[&start].writer.is_none() {
            let open = st.parts.values().filter(|w| w.writer.is_some()).count();
            if open >= MAX_OPEN_WRITERS {
                let lru = st
                    .parts
                    .iter()
                    .filter(|(_, w)| w.writer.is_some())
                    .min_by_key(|(_, w)| (w.dirty, w.last_used))
                    .map(|(s, _)| *s);
                if let Some(s) = lru {
                    let policy = self.policy();
                    let w = st.parts.get_mut(&s).expect("listed above");
                    if w.dirty
                        && let Some(part) = self.commit_partition(w, progress, &policy)?
                    {
                        self.readers.write().insert(s, part);
                    }
                    if let Some(wr) = w.writer.take() {
                        wr.wait_merging_threads()?;
                    }
                }
            }
            let w = st.parts.get_mut(&start).expect("partition exists");
            // The topic's budget is shared by the writers it may have open at once, and a writer's by its threads
            // (tantivy wants at least 15 MB each: fewer threads rather than less memory).
            let per_writer = self.opts.writer_memory / MAX_OPEN_WRITERS;
            let threads = self.opts.indexing_threads.clamp(1, (per_writer / MIN_THREAD_MEMORY).max(1));
            let options = tantivy::indexer::IndexWriterOptions::builder()
                .memory_budget_per_thread((per_writer / threads).max(MIN_THREAD_MEMORY))
                .num_worker_threads(threads)
                .num_merge_threads(self.opts.merge_threads.max(1))
                .build();
            w.writer = Some(w.part.index.writer_with_options(options)?);
            lower_indexing_priority();
        }
        Ok(())
    }

    /// Commits one dirty partition with `offsets` as its payload, sealing it if it is full. Returns its new
    /// searchable handle when its end moved (the caller swaps it into `readers`).
    fn commit_partition(
        &self,
        w: &mut Writable,
        offsets: &BTreeMap<u32, u64>,
        policy: &PartitionPolicy,
    ) -> Result<Option<Arc<Segmented>>, SearchError> {
        let part = &w.part;
        let end = policy.sealed_end(part.start, part.end, w.docs, w.min_ts, w.max_ts);
        // A partition committed ahead of the manifest (a round cut short, a writer closed mid-batch) stays ahead:
        // forgetting how far it got would add its documents again on the replay.
        let mut offsets = offsets.clone();
        for (p, o) in &w.committed {
            let e = offsets.entry(*p).or_insert(0);
            *e = (*e).max(*o);
        }
        let payload = serde_json::to_string(&Payload { offsets: offsets.clone(), end })
            .map_err(|e| SearchError::Internal(e.to_string()))?;
        let writer = w.writer.as_mut().expect("a dirty partition has a writer");
        let mut prepared = writer.prepare_commit()?;
        prepared.set_payload(&payload);
        prepared.commit()?;
        w.committed = offsets;
        w.dirty = false;
        w.part.reader.reload()?;
        if end == w.part.end {
            return Ok(None);
        }
        tracing::debug!(topic = %self.topic, partition_start = part.start, end, documents = w.docs, "search partition sealed");
        let sealed = Arc::new(Segmented {
            start: w.part.start,
            end,
            index: w.part.index.clone(),
            reader: w.part.reader.clone(),
        });
        w.part = sealed.clone();
        Ok(Some(sealed))
    }

    /// Commits when documents are waiting and the refresh interval has passed; closes idle writers.
    pub fn maybe_commit(&self) -> Result<bool, SearchError> {
        let mut st = self.state.lock();
        let due = st.last_commit.elapsed() >= self.opts.refresh_interval;
        let pending = st.applied != st.committed;
        let committed = if due && pending {
            self.commit_locked(&mut st)?;
            true
        } else {
            false
        };
        for w in st.parts.values_mut() {
            if !w.dirty
                && w.last_used.elapsed() >= WRITER_IDLE
                && let Some(wr) = w.writer.take()
            {
                wr.wait_merging_threads()?;
            }
        }
        Ok(committed)
    }

    /// Commits everything added (graceful shutdown, tests).
    pub fn commit(&self) -> Result<(), SearchError> {
        let mut st = self.state.lock();
        if st.applied != st.committed || st.parts.values().any(|w| w.dirty) {
            self.commit_locked(&mut st)?;
        }
        Ok(())
    }

    /// Fault injection for tests: commits only the first `partitions` partitions written since the last commit,
    /// then stops as a crash would, before the manifest (drop the index without `close` afterwards).
    #[doc(hidden)]
    pub fn crash_mid_commit(&self, partitions: usize) -> Result<(), SearchError> {
        let mut st = self.state.lock();
        self.commit_round(&mut st, Some(partitions))
    }

    fn commit_locked(&self, st: &mut WriteState) -> Result<(), SearchError> {
        self.commit_round(st, None)
    }

    fn commit_round(&self, st: &mut WriteState, crash_after: Option<usize>) -> Result<(), SearchError> {
        let started = Instant::now();
        let offsets = st.applied.clone();
        let policy = self.policy();
        let mut moved = Vec::new();
        for (n, w) in st.parts.values_mut().filter(|w| w.dirty).enumerate() {
            if crash_after.is_some_and(|c| n >= c) {
                break;
            }
            if let Some(part) = self.commit_partition(w, &offsets, &policy)? {
                moved.push(part);
            }
        }
        if !moved.is_empty() {
            let mut readers = self.readers.write();
            for part in moved {
                readers.insert(part.start, part);
            }
        }
        if crash_after.is_some() {
            return Ok(());
        }
        let m = Manifest {
            version: 1,
            topic: self.topic.clone(),
            definition: self.definition.clone(),
            offsets: offsets.clone(),
            partition_ms: self.legacy_width,
        };
        write_manifest(&self.dir, &m)?;
        st.committed = offsets;
        st.last_commit = Instant::now();
        crate::metrics::DOCUMENTS.with_label_values(&[&self.topic]).inc_by(st.uncommitted_docs);
        st.uncommitted_docs = 0;
        crate::metrics::COMMIT_SECONDS.with_label_values(&[&self.topic]).observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Drops everything added since the last commit (after a failed write; indexing resumes from the manifest).
    pub fn reset(&self) -> Result<(), SearchError> {
        let mut st = self.state.lock();
        self.reset_locked(&mut st)
    }

    fn reset_locked(&self, st: &mut WriteState) -> Result<(), SearchError> {
        for w in st.parts.values_mut() {
            if let Some(wr) = w.writer.as_mut()
                && w.dirty
            {
                wr.rollback()?;
                w.docs = w.part.reader.searcher().num_docs();
            }
            w.dirty = false;
        }
        st.applied = st.committed.clone();
        st.uncommitted_docs = 0;
        Ok(())
    }

    /// Drops whole partitions that ended before `now - retention`; returns how many.
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize, SearchError> {
        let Some(r) = self.opts.retention_ms else { return Ok(0) };
        let cutoff = now_ms.saturating_sub(r);
        let mut st = self.state.lock();
        let old: Vec<i64> = st.parts.iter().filter(|(_, w)| w.part.end <= cutoff).map(|(s, _)| *s).collect();
        for s in &old {
            let w = st.parts.remove(s).expect("listed above");
            self.readers.write().remove(s);
            if let Some(wr) = w.writer {
                // Its documents are past retention: nothing to keep, commit or not.
                let _ = wr.wait_merging_threads();
            }
            let path = self.dir.join("partitions").join(s.to_string());
            std::fs::remove_dir_all(&path).map_err(|e| SearchError::io(&path, e))?;
            tracing::info!(topic = %self.topic, partition_start = s, "search partition dropped by retention");
        }
        Ok(old.len())
    }

    /// Closes the writers (their merges finish) after a last commit.
    pub fn close(&self) -> Result<(), SearchError> {
        self.commit()?;
        let mut st = self.state.lock();
        for w in st.parts.values_mut() {
            if let Some(wr) = w.writer.take() {
                wr.wait_merging_threads()?;
            }
        }
        Ok(())
    }

    /// Documents, bytes and time range of each partition, oldest first.
    pub fn partition_info(&self) -> Vec<PartitionInfo> {
        let r = self.readers.read();
        r.values()
            .map(|p| {
                let searcher = p.reader.searcher();
                let bytes = dir_bytes(&self.dir.join("partitions").join(p.start.to_string()));
                PartitionInfo { start_ms: p.start, end_ms: p.end, documents: searcher.num_docs(), bytes }
            })
            .collect()
    }

    /// Documents searchable now.
    pub fn documents(&self) -> u64 {
        self.readers.read().values().map(|p| p.reader.searcher().num_docs()).sum()
    }
}

/// One partition as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionInfo {
    pub start_ms: i64,
    pub end_ms: i64,
    pub documents: u64,
    pub bytes: u64,
}

/// Lowers tantivy's threads (indexing workers, segment updater, merges) to [`INDEXING_NICE`]. Tantivy starts them
/// without a hook, so they are found by name; threads they start later inherit the priority. Best effort: where
/// the OS refuses (not Linux, a restricted container) indexing keeps normal priority.
fn lower_indexing_priority() {
    #[cfg(target_os = "linux")]
    {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return };
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<libc::id_t>().ok()) else { continue };
            let Ok(comm) = std::fs::read_to_string(task.path().join("comm")) else { continue };
            if ["thrd-tantivy", "merge_thread", "segment_updater"].iter().any(|p| comm.starts_with(p)) {
                // SAFETY: plain syscalls on a thread of this process (Linux keeps the nice value per thread); one
                // that has exited just makes them fail.
                unsafe {
                    if libc::getpriority(libc::PRIO_PROCESS, tid) < INDEXING_NICE {
                        libc::setpriority(libc::PRIO_PROCESS, tid, INDEXING_NICE);
                    }
                }
            }
        }
    }
}

fn reader(index: &Index) -> Result<IndexReader, SearchError> {
    Ok(index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?)
}

/// A partition's last commit payload; none if it was never committed. Payloads of indexes made before
/// partitions were sealed hold only the offsets: their end is `legacy_end`.
fn read_payload(index: &Index, legacy_end: i64) -> Result<Option<Payload>, SearchError> {
    let Some(p) = index.load_metas()?.payload else { return Ok(None) };
    let bad = |e: serde_json::Error| SearchError::Internal(format!("bad commit payload `{p}`: {e}"));
    if p.trim_start().starts_with("{\"offsets\"") {
        return serde_json::from_str(&p).map(Some).map_err(bad);
    }
    let offsets = serde_json::from_str(&p).map_err(bad)?;
    Ok(Some(Payload { offsets, end: legacy_end }))
}

/// Documents and the smallest and largest `_ts` of a partition's committed documents.
fn time_stats(reader: &IndexReader) -> Result<(u64, i64, i64), SearchError> {
    let searcher = reader.searcher();
    let (mut min, mut max) = (i64::MAX, i64::MIN);
    for seg in searcher.segment_readers() {
        let ts = seg.fast_fields().i64(crate::schema::TS)?;
        if seg.num_docs() > 0 {
            min = min.min(ts.min_value());
            max = max.max(ts.max_value());
        }
    }
    Ok((searcher.num_docs(), min, max))
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|it| it.filter_map(|e| e.ok()).filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

fn read_manifest(dir: &Path) -> Result<Manifest, SearchError> {
    let path = dir.join("manifest.json");
    let bytes = std::fs::read(&path).map_err(|e| SearchError::io(&path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| SearchError::CorruptManifest { path, message: e.to_string() })
}

fn write_manifest(dir: &Path, m: &Manifest) -> Result<(), SearchError> {
    let bytes = serde_json::to_vec_pretty(m).map_err(|e| SearchError::Internal(e.to_string()))?;
    sluice_log::replace_file(dir, "manifest.json", &bytes).map_err(|e| SearchError::io(dir.join("manifest.json"), e))
}

/// Topic name -> index directory name (topic names are valid file names; see `validate_topic_name`).
pub fn topic_dir(root: &Path, topic: &str) -> PathBuf {
    root.join(topic)
}

/// Every index directory under `root` with the topic its manifest names.
pub fn list_dirs(root: &Path) -> Result<HashMap<String, PathBuf>, SearchError> {
    let mut out = HashMap::new();
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(SearchError::io(root, e)),
    };
    for entry in entries {
        let path = entry.map_err(|e| SearchError::io(root, e))?.path();
        if path.join("manifest.json").exists() {
            let (topic, _) = TopicIndex::read_definition(&path)?;
            out.insert(topic, path);
        }
    }
    Ok(out)
}
