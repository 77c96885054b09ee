//! One topic's index: a tantivy index per time partition, written by the topic's sink and searched by readers.
//!
//! Exactly-once (ADR 0008): `manifest.json` holds the definition and the topic offsets every partition has
//! everything below. A commit round commits each partition written since the last round with those offsets as its
//! commit payload, then replaces the manifest. Indexing resumes from the manifest's offsets; a record is added to
//! a partition only if its offset is at or past that partition's own committed payload, so a round cut short by a
//! crash (some partitions committed, the manifest not yet) never adds a document twice. Uncommitted documents die
//! with the process, as they must: they were never acknowledged by a commit.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use sluice_config::IndexDefinition;
use tantivy::directory::MmapDirectory;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument};

use crate::error::SearchError;
use crate::schema::IndexSchema;

/// Writers kept open at once per topic (late events can touch old partitions; each writer holds memory).
const MAX_OPEN_WRITERS: usize = 3;
/// A clean writer idle this long is closed.
const WRITER_IDLE: Duration = Duration::from_secs(60);

/// How a topic's index is written.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    pub refresh_interval: Duration,
    pub partition_ms: i64,
    pub retention_ms: Option<i64>,
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
    /// Width of the time partitions, fixed at creation (partitions must never overlap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    partition_ms: Option<i64>,
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
        let m = Manifest {
            version: 1,
            topic: topic.to_string(),
            definition,
            offsets: BTreeMap::new(),
            partition_ms: Some(opts.partition_ms),
        };
        write_manifest(dir, &m)?;
        Self::open(dir, opts)
    }

    /// The definition stored in `dir`'s manifest.
    pub fn read_definition(dir: &Path) -> Result<(String, IndexDefinition), SearchError> {
        let m = read_manifest(dir)?;
        Ok((m.topic, m.definition))
    }

    /// Opens an index: partitions that were created but never committed are removed.
    pub fn open(dir: &Path, mut opts: IndexOptions) -> Result<Self, SearchError> {
        let m = read_manifest(dir)?;
        if let Some(w) = m.partition_ms.filter(|w| *w > 0) {
            opts.partition_ms = w;
        }
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
            let committed = payload_offsets(&index)?;
            let reader = reader(&index)?;
            let part = Arc::new(Segmented { start, end: start.saturating_add(opts.partition_ms), index, reader });
            parts.insert(start, Writable { part, writer: None, committed, dirty: false, last_used: Instant::now() });
        }
        let readers = parts.iter().map(|(s, w)| (*s, w.part.clone())).collect();
        Ok(TopicIndex {
            topic: m.topic,
            dir: dir.to_path_buf(),
            definition: m.definition,
            schema,
            opts,
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
        let cutoff = self.opts.retention_ms.map(|r| sluice_log::now_ms().saturating_sub(r));
        for (p, offset, ts, doc) in docs {
            let start = ts.div_euclid(self.opts.partition_ms).saturating_mul(self.opts.partition_ms);
            if cutoff.is_some_and(|c| start.saturating_add(self.opts.partition_ms) <= c) {
                continue; // older than the retention: its partition would be dropped at once
            }
            self.ensure_partition(st, start)?;
            let w = st.parts.get_mut(&start).expect("partition just ensured");
            if offset < w.committed.get(&p).copied().unwrap_or(0) {
                continue;
            }
            w.writer.as_ref().expect("writer just ensured").add_document(doc)?;
            w.dirty = true;
            w.last_used = Instant::now();
            added += 1;
        }
        for (p, o) in next {
            let e = st.applied.entry(*p).or_insert(0);
            *e = (*e).max(*o);
        }
        st.uncommitted_docs += added;
        Ok(added)
    }

    fn ensure_partition(&self, st: &mut WriteState, start: i64) -> Result<(), SearchError> {
        if let std::collections::btree_map::Entry::Vacant(slot) = st.parts.entry(start) {
            let path = self.dir.join("partitions").join(start.to_string());
            std::fs::create_dir_all(&path).map_err(|e| SearchError::io(&path, e))?;
            let dir = MmapDirectory::open(&path).map_err(|e| SearchError::Internal(e.to_string()))?;
            let index = Index::create(dir, self.schema.schema.clone(), Default::default())?;
            let reader = reader(&index)?;
            let part = Arc::new(Segmented { start, end: start.saturating_add(self.opts.partition_ms), index, reader });
            self.readers.write().insert(start, part.clone());
            slot.insert(Writable {
                part,
                writer: None,
                committed: BTreeMap::new(),
                dirty: false,
                last_used: Instant::now(),
            });
        }
        if st.parts[&start].writer.is_none() {
            let open = st.parts.values().filter(|w| w.writer.is_some()).count();
            if open >= MAX_OPEN_WRITERS {
                // Only a clean writer may close here: committing mid-batch would record offsets the batch has not
                // reached. With every writer dirty the cap is exceeded until the next commit round.
                let lru = st
                    .parts
                    .iter()
                    .filter(|(_, w)| w.writer.is_some() && !w.dirty)
                    .min_by_key(|(_, w)| w.last_used)
                    .map(|(s, _)| *s);
                if let Some(s) = lru
                    && let Some(w) = st.parts.get_mut(&s).and_then(|w| w.writer.take())
                {
                    w.wait_merging_threads()?;
                }
            }
            let w = st.parts.get_mut(&start).expect("partition exists");
            let threads = self.opts.indexing_threads.max(1);
            let options = tantivy::indexer::IndexWriterOptions::builder()
                .memory_budget_per_thread((self.opts.writer_memory / threads).max(15_000_000))
                .num_worker_threads(threads)
                .num_merge_threads(self.opts.merge_threads.max(1))
                .build();
            w.writer = Some(w.part.index.writer_with_options(options)?);
        }
        Ok(())
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
        let payload = serde_json::to_string(&offsets).map_err(|e| SearchError::Internal(e.to_string()))?;
        for (n, w) in st.parts.values_mut().filter(|w| w.dirty).enumerate() {
            if crash_after.is_some_and(|c| n >= c) {
                break;
            }
            let writer = w.writer.as_mut().expect("a dirty partition has a writer");
            let mut prepared = writer.prepare_commit()?;
            prepared.set_payload(&payload);
            prepared.commit()?;
            w.committed = offsets.clone();
            w.dirty = false;
            w.part.reader.reload()?;
        }
        if crash_after.is_some() {
            return Ok(());
        }
        let m = Manifest {
            version: 1,
            topic: self.topic.clone(),
            definition: self.definition.clone(),
            offsets: offsets.clone(),
            partition_ms: Some(self.opts.partition_ms),
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

fn reader(index: &Index) -> Result<IndexReader, SearchError> {
    Ok(index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?)
}

fn payload_offsets(index: &Index) -> Result<BTreeMap<u32, u64>, SearchError> {
    let metas = index.load_metas()?;
    match metas.payload {
        None => Ok(BTreeMap::new()),
        Some(p) => {
            serde_json::from_str(&p).map_err(|e| SearchError::Internal(format!("bad commit payload `{p}`: {e}")))
        }
    }
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
