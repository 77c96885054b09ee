//! One table: an in-memory buffer of recent rows in front of time-partitioned Parquet files, tied together by the
//! manifest.
//!
//! Locking: `state` (short critical sections only: append a batch, take a snapshot, swap in a new manifest) and
//! `maint` (held for a whole flush, compaction, retention pass or settings change, so those never interleave). A
//! flush takes the buffer under `state`, encodes Parquet with only `maint` held while the taken rows stay visible
//! as "flushing", then commits the manifest and swaps under `state` again: writers and readers never wait for an
//! encode.
//!
//! Crash safety: files are written and fsynced before the manifest that lists them is committed; replaced files
//! are deleted only after the commit; anything the manifest does not list is deleted on open.

use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::fs::{self, File};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray, UInt32Array};
use arrow::compute::{concat_batches, filter_record_batch, interleave, lexsort_to_indices, take_record_batch};
use arrow::datatypes::{DataType, SchemaRef, TimestampMillisecondType};
use parking_lot::Mutex;
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde::Serialize;

use crate::error::StoreError;
use crate::manifest::{
    ChunkEntry, FileEntry, MANIFEST_TMP, Manifest, TableKind, chunk_dir, column_entries, file_path, sync_dir,
};
use crate::rows::{ColumnDef, ColumnType, EXTRA_COLUMN, MAX_COLUMNS, Mapping, RowsBuilder, value_name};
use crate::snapshot::{FileRef, TableSnapshot, adapt_batch};

/// What a flush produced before its commit: the new manifest, the files it replaces, and (results tables) the
/// committed key hashes of each rewritten chunk.
type FlushPlan = (Manifest, Vec<PathBuf>, Vec<(i64, Option<HashSet<u64>>)>);

/// Chunk widths of [`TableSpec::raw`] and [`TableSpec::results`].
pub const RAW_CHUNK_WIDTH_MS: i64 = 3_600_000;
pub const RESULTS_CHUNK_WIDTH_MS: i64 = 86_400_000;
/// Rows per batch when reading files back (compaction, keyed merges).
const READ_BATCH_ROWS: usize = 8192;

/// What a table is, fixed at creation (chunk width and retention can be changed later).
#[derive(Debug, Clone, PartialEq)]
pub struct TableSpec {
    pub kind: TableKind,
    /// Widest a chunk may be.
    pub chunk_width_ms: i64,
    /// Rows after which a chunk is sealed (ADR 0011); none: every chunk is `chunk_width_ms` wide.
    pub chunk_rows: Option<u64>,
    pub retention_ms: Option<i64>,
    /// Value columns that exist up front (e.g. from an Avro reader schema); dotted names for nested fields.
    pub declared: Vec<(String, DataType)>,
}

impl TableSpec {
    /// A raw table of fixed one-hour chunks (the server's tables follow `[store]` instead).
    pub fn raw() -> TableSpec {
        TableSpec {
            kind: TableKind::Raw,
            chunk_width_ms: RAW_CHUNK_WIDTH_MS,
            chunk_rows: None,
            retention_ms: None,
            declared: vec![],
        }
    }

    /// A results table of fixed one-day chunks.
    pub fn results() -> TableSpec {
        TableSpec {
            kind: TableKind::Results,
            chunk_width_ms: RESULTS_CHUNK_WIDTH_MS,
            chunk_rows: None,
            retention_ms: None,
            declared: vec![],
        }
    }
}

/// A test hook called at named steps of flush, compaction and retention; an error stops the operation right
/// there as if the process had crashed (nothing is cleaned up).
pub type Failpoint = Arc<dyn Fn(&str) -> std::io::Result<()> + Send + Sync>;

/// Tuning of a table's buffering, file layout and maintenance.
#[derive(Clone)]
pub struct TableOptions {
    /// Flush when this many rows are buffered.
    pub flush_rows: usize,
    /// Flush when the buffered rows take this much memory (Arrow buffers); writers wait for the flush past twice
    /// this, so a table's buffer stays within about 3x (buffer, the rows being flushed, and the next batch).
    pub flush_bytes: usize,
    /// Flush rows buffered for longer than this (see [`Table::flush_if_older`]); also how long after a chunk's
    /// end (relative to the newest row) it counts as closed for compaction.
    pub flush_interval: Duration,
    /// Compact a chunk once it has this many files.
    pub compact_min_files: usize,
    /// Compaction writes files of about this size.
    pub target_file_bytes: u64,
    /// Parquet row group size (rows).
    pub row_group_rows: usize,
    pub zstd_level: i32,
    /// Files replaced by compaction or a keyed flush are deleted this long after the commit, so a query that
    /// took its snapshot just before can still read them.
    pub delete_grace: Duration,
    pub failpoint: Option<Failpoint>,
}

impl Default for TableOptions {
    fn default() -> TableOptions {
        TableOptions {
            flush_rows: 100_000,
            flush_bytes: 64 << 20,
            flush_interval: Duration::from_secs(10),
            compact_min_files: 32,
            target_file_bytes: 128 << 20,
            row_group_rows: 128 * 1024,
            zstd_level: 1,
            delete_grace: Duration::from_secs(60),
            failpoint: None,
        }
    }
}

impl std::fmt::Debug for TableOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableOptions")
            .field("flush_rows", &self.flush_rows)
            .field("flush_bytes", &self.flush_bytes)
            .field("flush_interval", &self.flush_interval)
            .field("compact_min_files", &self.compact_min_files)
            .field("target_file_bytes", &self.target_file_bytes)
            .field("row_group_rows", &self.row_group_rows)
            .field("zstd_level", &self.zstd_level)
            .field("delete_grace", &self.delete_grace)
            .field("failpoint", &self.failpoint.is_some())
            .finish()
    }
}

/// What one [`Table::write`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteOutcome {
    pub rows: usize,
    /// Values that went to `_extra`.
    pub conflicts: u64,
    /// Whether the write triggered a flush.
    pub flushed: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ColumnInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChunkInfo {
    pub start_ms: i64,
    pub end_ms: i64,
    pub files: usize,
    pub rows: u64,
    pub bytes: u64,
}

/// Description of a table for the admin API.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TableInfo {
    pub name: String,
    pub kind: TableKind,
    pub time_column: String,
    pub chunk_width_ms: i64,
    pub chunk_rows: Option<u64>,
    pub retention_ms: Option<i64>,
    pub columns: Vec<ColumnInfo>,
    pub chunks: Vec<ChunkInfo>,
    /// Rows in committed files.
    pub rows: u64,
    pub bytes: u64,
    /// Rows in memory (for results tables: upserts and deletes not yet flushed, superseded ones included).
    pub buffered_rows: u64,
    pub conflicts: u64,
    pub source_offsets: BTreeMap<u32, u64>,
    /// Smallest and largest time of committed rows.
    pub min_time: Option<i64>,
    pub max_time: Option<i64>,
}

/// Primary key of a results row.
type Pk = (i64, i64, String);

/// Where the latest buffered version of a key is.
#[derive(Debug, Clone, Copy)]
struct Slot {
    batch: usize,
    row: usize,
    tombstone: bool,
}

/// Rows written since the last flush.
#[derive(Default)]
struct Buffer {
    batches: Vec<RecordBatch>,
    /// Results tables: per batch, which rows are tombstones, which rows are visible, and the visible rows.
    tombstones: Vec<Vec<bool>>,
    masks: Vec<Vec<bool>>,
    visible: Vec<RecordBatch>,
    keys: HashMap<Pk, Slot>,
    rows: usize,
    /// Memory of the buffered batches.
    bytes: usize,
    offsets: BTreeMap<u32, u64>,
    since: Option<Instant>,
}

impl Buffer {
    fn is_empty(&self) -> bool {
        self.rows == 0 && self.offsets.is_empty()
    }
}

/// Rows taken by a running flush, still visible to readers until it commits.
#[derive(Default)]
struct Flushing {
    visible: Vec<RecordBatch>,
    keys: HashSet<Pk>,
}

struct State {
    manifest: Arc<Manifest>,
    mapping: Arc<Mapping>,
    schema: SchemaRef,
    files: Vec<FileRef>,
    conflicts: u64,
    buffer: Buffer,
    flushing: Flushing,
    /// Results tables: hashes of the primary keys in committed files, per chunk. A collision only delays a row's
    /// visibility until the next flush; it never shows two rows for one key.
    committed_keys: HashMap<i64, HashSet<u64>>,
    /// Replaced files and when they may be deleted.
    graveyard: Vec<(Instant, PathBuf)>,
    /// Columns a writer announced before any row has them (a job's result columns, from its plan): queries see
    /// them as NULL until the first value creates the real column, whose type then comes from the data.
    expected: Vec<(String, ColumnType)>,
}

/// One table of the store.
pub struct Table {
    name: String,
    dir: PathBuf,
    kind: TableKind,
    options: TableOptions,
    state: Mutex<State>,
    maint: Mutex<()>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("name", &self.name).field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// Checks a table name: non-empty, at most 249 characters of `[A-Za-z0-9._-]`, not starting with `.`.
pub fn validate_name(name: &str) -> Result<(), StoreError> {
    let reason = if name.is_empty() {
        "must not be empty"
    } else if name.len() > 249 {
        "longer than 249 characters"
    } else if name.starts_with('.') {
        "must not start with '.'"
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        "only letters, digits, '.', '_' and '-' are allowed"
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidName { name: name.to_string(), reason })
}

/// The table schema plus the expected columns no row has created yet (nullable, at the end).
fn with_expected(schema: &SchemaRef, expected: &[(String, ColumnType)]) -> SchemaRef {
    let missing: Vec<_> = expected.iter().filter(|(n, _)| schema.field_with_name(n).is_err()).collect();
    if missing.is_empty() {
        return schema.clone();
    }
    let fields = schema
        .fields()
        .iter()
        .cloned()
        .chain(missing.into_iter().map(|(n, ty)| Arc::new(arrow::datatypes::Field::new(n, ty.data_type(), true))));
    Arc::new(arrow::datatypes::Schema::new(fields.collect::<Vec<_>>()))
}

fn validate_width(ms: i64) -> Result<(), StoreError> {
    if ms <= 0 {
        return Err(StoreError::InvalidSetting { name: "chunk_width_ms", reason: format!("{ms} is not positive") });
    }
    Ok(())
}

fn validate_retention(ms: Option<i64>) -> Result<(), StoreError> {
    match ms {
        Some(ms) if ms <= 0 => {
            Err(StoreError::InvalidSetting { name: "retention_ms", reason: format!("{ms} is not positive") })
        }
        _ => Ok(()),
    }
}

fn key_hash(ws: i64, we: i64, key: &str) -> u64 {
    // DefaultHasher::new() has fixed keys: the hashes are only compared within this process anyway.
    let mut h = DefaultHasher::new();
    (ws, we, key).hash(&mut h);
    h.finish()
}

fn time_values(batch: &RecordBatch) -> Result<&[i64], StoreError> {
    // The time column is always the first one (event_time or window_start) and NOT NULL.
    let col = batch.column(0);
    col.as_primitive_opt::<TimestampMillisecondType>().map(|a| a.values().as_ref()).ok_or_else(|| {
        StoreError::Arrow(arrow::error::ArrowError::SchemaError(format!(
            "time column has type {}, expected a millisecond timestamp",
            col.data_type()
        )))
    })
}

impl Table {
    /// Opens the table `{root}/{name}`, creating it from `spec` if it does not exist. An existing table must be of
    /// `spec.kind`; its chunk width and retention stay as they are; newly declared columns are added.
    pub fn create_or_open(
        root: &Path,
        name: &str,
        spec: TableSpec,
        options: TableOptions,
    ) -> Result<Table, StoreError> {
        validate_name(name)?;
        validate_width(spec.chunk_width_ms)?;
        validate_retention(spec.retention_ms)?;
        let dir = root.join(name);
        fs::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
        let table = match Manifest::read(&dir)? {
            Some(manifest) => {
                if manifest.kind != spec.kind {
                    return Err(StoreError::WrongKind {
                        table: name.to_string(),
                        actual: manifest.kind.as_str(),
                        expected: spec.kind.as_str(),
                    });
                }
                Table::load(name, dir, manifest, options)?
            }
            None => {
                let mapping = Mapping::new(spec.kind);
                let manifest =
                    Manifest::new(spec.kind, spec.chunk_width_ms, spec.chunk_rows, spec.retention_ms, &mapping.columns);
                // Garbage from an earlier attempt (crash before the first commit) is removed by load.
                manifest.write(&dir, || Ok(()))?;
                sync_dir(root)?;
                Table::load(name, dir, manifest, options)?
            }
        };
        table.declare(&spec.declared)?;
        Ok(table)
    }

    /// Opens an existing table.
    pub fn open(root: &Path, name: &str, options: TableOptions) -> Result<Table, StoreError> {
        validate_name(name)?;
        let dir = root.join(name);
        let manifest = Manifest::read(&dir)?.ok_or_else(|| StoreError::UnknownTable(name.to_string()))?;
        Table::load(name, dir, manifest, options)
    }

    fn load(name: &str, dir: PathBuf, manifest: Manifest, options: TableOptions) -> Result<Table, StoreError> {
        let columns = manifest.column_defs(&dir.join(crate::manifest::MANIFEST_FILE))?;
        let kind = manifest.kind;
        let mapping = Mapping::from_columns(kind, columns, 0);
        if mapping.columns.len() < mapping.meta_len()
            || mapping.columns.iter().zip(Mapping::new(kind).columns.iter()).any(|(a, b)| a != b)
        {
            return Err(StoreError::CorruptManifest {
                path: dir.join(crate::manifest::MANIFEST_FILE),
                reason: format!("metadata columns of a {} table are missing or changed", kind.as_str()),
            });
        }
        collect_garbage(&dir, &manifest)?;
        let files = file_refs(&dir, &manifest);
        for f in &files {
            if !f.path.is_file() {
                return Err(StoreError::MissingFile { table: name.to_string(), path: f.path.clone() });
            }
        }
        let mut committed_keys = HashMap::new();
        if kind == TableKind::Results {
            for f in &files {
                let set: &mut HashSet<u64> = committed_keys.entry(f.chunk_start).or_default();
                read_key_hashes(&f.path, set)?;
            }
        }
        let schema = mapping.schema();
        let state = State {
            conflicts: manifest.conflicts,
            manifest: Arc::new(manifest),
            mapping: Arc::new(mapping),
            schema,
            files,
            buffer: Buffer::default(),
            flushing: Flushing::default(),
            committed_keys,
            graveyard: Vec::new(),
            expected: Vec::new(),
        };
        Ok(Table { name: name.to_string(), dir, kind, options, state: Mutex::new(state), maint: Mutex::new(()) })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> TableKind {
        self.kind
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn options(&self) -> &TableOptions {
        &self.options
    }

    /// Adds declared value columns (durably, if any is new).
    pub fn declare(&self, declared: &[(String, DataType)]) -> Result<(), StoreError> {
        if declared.is_empty() {
            return Ok(());
        }
        let _m = self.maint.lock();
        let mut st = self.state.lock();
        let mut mapping = (*st.mapping).clone();
        if !mapping.add_declared(declared) {
            return Ok(());
        }
        mapping.version = st.mapping.version + 1;
        st.schema = mapping.schema();
        st.mapping = Arc::new(mapping);
        let mut manifest = (*st.manifest).clone();
        manifest.columns = column_entries(&st.mapping.columns);
        manifest.generation += 1;
        drop(st);
        self.commit_settings(manifest)
    }

    /// Announces the value columns rows will have (names as the writer emits them), so queries can name them
    /// before any row exists. Not durable: the writer announces them again whenever it opens the table.
    pub fn expect(&self, columns: &[(String, DataType)]) {
        let expected = columns
            .iter()
            .map(|(n, dt)| (value_name(self.kind, n).into_owned(), ColumnType::from_data_type(dt)))
            .collect();
        self.state.lock().expected = expected;
    }

    /// The source offsets committed with the flushed rows: where a sink resumes reading.
    pub fn committed_offsets(&self) -> BTreeMap<u32, u64> {
        self.state.lock().manifest.source_offsets.clone()
    }

    /// A builder for rows of this table, carrying its current columns.
    pub fn builder(&self) -> RowsBuilder {
        RowsBuilder::new(&self.name, self.state.lock().mapping.clone())
    }

    /// Adds the builder's rows to the buffer (visible to [`snapshot`](Self::snapshot) at once) together with the
    /// source offsets after them, and flushes if the buffer reached `flush_rows`.
    pub fn write(&self, builder: RowsBuilder, offsets: BTreeMap<u32, u64>) -> Result<WriteOutcome, StoreError> {
        let rows = builder.finish()?;
        let n = rows.batch.num_rows();
        let mut conflicts = rows.conflicts;
        let mut st = self.state.lock();
        let batch = if rows.base_version == st.mapping.version {
            if rows.changed {
                let mapping = Mapping::from_columns(self.kind, rows.columns, st.mapping.version + 1);
                st.schema = mapping.schema();
                st.mapping = Arc::new(mapping);
            }
            rows.batch
        } else {
            // The table's columns changed since the builder was made (another writer): merge column by column.
            let (batch, mapping, moved) = reconcile(&st.mapping, rows.batch)?;
            conflicts += moved;
            st.schema = mapping.schema();
            st.mapping = Arc::new(mapping);
            batch
        };
        st.conflicts += conflicts;
        let (full, over) = {
            let st = &mut *st;
            st.buffer.bytes += batch.get_array_memory_size();
            if n > 0 {
                match self.kind {
                    TableKind::Raw => st.buffer.batches.push(batch),
                    TableKind::Results => add_keyed(st, batch, rows.tombstones)?,
                }
            }
            st.buffer.rows += n;
            for (p, o) in offsets {
                let e = st.buffer.offsets.entry(p).or_insert(o);
                *e = (*e).max(o);
            }
            if !st.buffer.is_empty() && st.buffer.since.is_none() {
                st.buffer.since = Some(Instant::now());
            }
            let (rows, bytes) = (st.buffer.rows, st.buffer.bytes);
            let full = rows >= self.options.flush_rows || bytes >= self.options.flush_bytes;
            let over = rows >= self.options.flush_rows.saturating_mul(4)
                || bytes >= self.options.flush_bytes.saturating_mul(2);
            (full, over)
        };
        drop(st);
        let mut outcome = WriteOutcome { rows: n, conflicts, flushed: false };
        if full {
            // Writers do not queue behind a running flush or compaction: the rows wait for the next write or
            // the maintenance round, unless the buffer is far over its limit (backpressure).
            let guard = if over { Some(self.maint.lock()) } else { self.maint.try_lock() };
            if let Some(guard) = guard {
                self.flush_locked(&guard)?;
                outcome.flushed = true;
            }
        }
        Ok(outcome)
    }

    /// A consistent view: committed files plus visible buffered rows.
    pub fn snapshot(&self) -> TableSnapshot {
        let st = self.state.lock();
        let mut buffered = st.flushing.visible.clone();
        match self.kind {
            TableKind::Raw => buffered.extend(st.buffer.batches.iter().cloned()),
            TableKind::Results => buffered.extend(st.buffer.visible.iter().filter(|b| b.num_rows() > 0).cloned()),
        }
        TableSnapshot {
            name: self.name.clone(),
            schema: with_expected(&st.schema, &st.expected),
            time_column: self.kind.time_column().to_string(),
            files: st.files.clone(),
            buffered,
        }
    }

    pub fn info(&self) -> TableInfo {
        let st = self.state.lock();
        let m = &st.manifest;
        let chunks: Vec<ChunkInfo> = m
            .chunks
            .iter()
            .map(|(&start, c)| ChunkInfo {
                start_ms: start,
                end_ms: c.end,
                files: c.files.len(),
                rows: c.files.iter().map(|f| f.rows).sum(),
                bytes: c.files.iter().map(|f| f.bytes).sum(),
            })
            .collect();
        let all = || m.chunks.values().flat_map(|c| c.files.iter());
        TableInfo {
            name: self.name.clone(),
            kind: self.kind,
            time_column: m.time_column.clone(),
            chunk_width_ms: m.chunk_width_ms,
            chunk_rows: m.chunk_rows,
            retention_ms: m.retention_ms,
            columns: st
                .mapping
                .columns
                .iter()
                .map(|c| ColumnInfo { name: c.name.clone(), ty: c.ty.as_str().to_string() })
                .chain(
                    st.expected
                        .iter()
                        .filter(|(n, _)| !st.mapping.index.contains_key(n))
                        .map(|(n, ty)| ColumnInfo { name: n.clone(), ty: ty.as_str().to_string() }),
                )
                .collect(),
            rows: chunks.iter().map(|c| c.rows).sum(),
            bytes: chunks.iter().map(|c| c.bytes).sum(),
            chunks,
            buffered_rows: (st.buffer.rows + st.flushing.visible.iter().map(|b| b.num_rows()).sum::<usize>()) as u64,
            conflicts: st.conflicts,
            source_offsets: m.source_offsets.clone(),
            min_time: all().map(|f| f.min_time).min(),
            max_time: all().map(|f| f.max_time).max(),
        }
    }

    fn fail(&self, step: &'static str) -> Result<(), StoreError> {
        match &self.options.failpoint {
            Some(f) => f(step).map_err(|source| StoreError::Injected { step, source }),
            None => Ok(()),
        }
    }

    /// Drops every buffered row and offset not yet committed (after a failed write: the sink rereads from
    /// [`committed_offsets`](Self::committed_offsets), so keeping them would store those rows twice).
    pub fn discard_buffer(&self) {
        let _maint = self.maint.lock();
        let mut st = self.state.lock();
        st.buffer = Buffer::default();
        st.flushing = Flushing::default();
        st.conflicts = st.manifest.conflicts;
    }

    /// Flushes if the oldest buffered row was written `flush_interval` or longer before `now`.
    pub fn flush_if_older(&self, now: Instant) -> Result<usize, StoreError> {
        let due = self
            .state
            .lock()
            .buffer
            .since
            .is_some_and(|since| now.saturating_duration_since(since) >= self.options.flush_interval);
        if due { self.flush() } else { Ok(0) }
    }

    /// Writes the buffered rows to Parquet and commits them with their source offsets. Returns the rows flushed.
    pub fn flush(&self) -> Result<usize, StoreError> {
        let guard = self.maint.lock();
        self.flush_locked(&guard)
    }

    /// `flush` with `maint` held (the guard proves it).
    fn flush_locked(&self, _maint: &parking_lot::MutexGuard<'_, ()>) -> Result<usize, StoreError> {
        self.purge_graveyard(false);
        let (taken, manifest, mapping) = {
            let mut st = self.state.lock();
            if st.buffer.is_empty() {
                return Ok(0);
            }
            let taken = std::mem::take(&mut st.buffer);
            st.flushing = match self.kind {
                TableKind::Raw => Flushing { visible: taken.batches.clone(), keys: HashSet::new() },
                TableKind::Results => Flushing {
                    visible: taken.visible.iter().filter(|b| b.num_rows() > 0).cloned().collect(),
                    keys: taken.keys.keys().cloned().collect(),
                },
            };
            (taken, st.manifest.clone(), st.mapping.clone())
        };
        let mut written = Vec::new();
        let result = match self.kind {
            TableKind::Raw => self.flush_raw(&taken, &manifest, &mapping, &mut written),
            TableKind::Results => self.flush_keyed(&taken, &manifest, &mapping, &mut written),
        };
        let result = result.and_then(|(mut new, replaced, keys)| {
            new.conflicts = self.state.lock().conflicts;
            new.write(&self.dir, || self.fail("flush:manifest_written"))?;
            Ok((new, replaced, keys))
        });
        let (new, replaced, keys) = match result {
            Ok(r) => r,
            Err(e) => {
                self.restore(taken);
                if !e.is_injected() {
                    remove_files(&written);
                }
                return Err(e);
            }
        };
        let rows = taken.rows;
        {
            let mut st = self.state.lock();
            st.files = file_refs(&self.dir, &new);
            st.manifest = Arc::new(new);
            st.flushing = Flushing::default();
            for (chunk, set) in keys {
                match set {
                    Some(set) => st.committed_keys.insert(chunk, set),
                    None => st.committed_keys.remove(&chunk),
                };
            }
            let at = Instant::now() + self.options.delete_grace;
            st.graveyard.extend(replaced.into_iter().map(|p| (at, p)));
        }
        tracing::debug!(table = %self.name, rows, files = written.len(), "flushed");
        self.fail("flush:committed")?;
        self.purge_graveyard(false);
        Ok(rows)
    }

    /// Puts rows of a failed flush back in front of the buffer.
    fn restore(&self, taken: Buffer) {
        let mut st = self.state.lock();
        st.flushing = Flushing::default();
        let newer = std::mem::take(&mut st.buffer);
        let mut offsets = taken.offsets;
        for (p, o) in newer.offsets {
            let e = offsets.entry(p).or_insert(o);
            *e = (*e).max(o);
        }
        let since = taken.since.or(newer.since);
        let rows = taken.rows + newer.rows;
        let bytes = taken.bytes + newer.bytes;
        match self.kind {
            TableKind::Raw => {
                let mut batches = taken.batches;
                batches.extend(newer.batches);
                st.buffer = Buffer { batches, rows, bytes, offsets, since, ..Buffer::default() };
            }
            TableKind::Results => {
                // Replay both in order so the newer versions of a key win again.
                st.buffer = Buffer { rows, bytes, offsets, since, ..Buffer::default() };
                let st = &mut *st;
                for (batch, tombstones) in taken
                    .batches
                    .into_iter()
                    .zip(taken.tombstones)
                    .chain(newer.batches.into_iter().zip(newer.tombstones))
                {
                    if let Err(e) = add_keyed(st, batch, tombstones) {
                        tracing::error!(table = %self.name, error = %e, "cannot restore buffered rows after a failed flush");
                    }
                }
            }
        }
    }

    /// Raw flush: one new file per chunk touched, rows sorted by time.
    fn flush_raw(
        &self,
        taken: &Buffer,
        manifest: &Manifest,
        mapping: &Mapping,
        written: &mut Vec<PathBuf>,
    ) -> Result<FlushPlan, StoreError> {
        let schema = mapping.schema();
        let mut new = manifest.clone();
        if taken.rows > 0 {
            let adapted = taken.batches.iter().map(|b| adapt_batch(b, &schema)).collect::<Result<Vec<_>, _>>()?;
            let all = concat_batches(&schema, &adapted)?;
            let times = time_values(&all)?;
            let mut by_chunk: BTreeMap<i64, (i64, Vec<u32>)> = BTreeMap::new();
            let mut current = (i64::MAX, i64::MIN);
            for (i, &t) in times.iter().enumerate() {
                if !(current.0 <= t && t < current.1) {
                    current = manifest.chunk_for(t);
                }
                by_chunk.entry(current.0).or_insert_with(|| (current.1, Vec::new())).1.push(i as u32);
            }
            for (start, (end, mut indices)) in by_chunk {
                indices.sort_by_key(|&i| times[i as usize]);
                let batch = take_record_batch(&all, &UInt32Array::from(indices))?;
                let seq = new.next_file_seq;
                new.next_file_seq += 1;
                let entry = self.write_file(start, seq, std::slice::from_ref(&batch), written)?;
                let chunk =
                    new.chunks.entry(start).or_insert_with(|| ChunkEntry { end, files: vec![], compacted: false });
                chunk.files.push(entry);
                chunk.compacted = false;
                new.seal_chunk(start);
            }
            self.fail("flush:files_written")?;
        }
        finish_manifest(&mut new, mapping, &taken.offsets);
        Ok((new, Vec::new(), Vec::new()))
    }

    /// Keyed flush: each affected chunk's files merged with the buffered upserts and deletes into one new file.
    fn flush_keyed(
        &self,
        taken: &Buffer,
        manifest: &Manifest,
        mapping: &Mapping,
        written: &mut Vec<PathBuf>,
    ) -> Result<FlushPlan, StoreError> {
        let schema = mapping.schema();
        let mut new = manifest.clone();
        let mut replaced = Vec::new();
        let mut key_sets = Vec::new();
        // Keys by chunk: start -> (end, keys).
        #[allow(clippy::type_complexity)]
        let mut by_chunk: BTreeMap<i64, (i64, Vec<(&Pk, Slot)>)> = BTreeMap::new();
        for (pk, &slot) in &taken.keys {
            let (start, end) = manifest.chunk_for(pk.0);
            by_chunk.entry(start).or_insert_with(|| (end, Vec::new())).1.push((pk, slot));
        }
        for (start, (end, entries)) in by_chunk {
            let touched: HashSet<(i64, i64, &str)> =
                entries.iter().map(|(pk, _)| (pk.0, pk.1, pk.2.as_str())).collect();
            let mut parts = Vec::new();
            let old_files = manifest.chunks.get(&start).map(|c| c.files.clone()).unwrap_or_default();
            for f in &old_files {
                let path = file_path(&self.dir, start, f.seq);
                for batch in open_reader(&path, None)? {
                    let batch = adapt_batch(&batch?, &schema)?;
                    let mask = keyed_mask(&batch, |ws, we, k| !touched.contains(&(ws, we, k)))?;
                    parts.push(filter_record_batch(&batch, &mask)?);
                }
                replaced.push(path);
            }
            // The latest buffered version of each upserted key, batch by batch.
            let mut rows_by_batch: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
            for (_, slot) in entries.iter().filter(|(_, s)| !s.tombstone) {
                rows_by_batch.entry(slot.batch).or_default().push(slot.row as u32);
            }
            for (b, rows) in rows_by_batch {
                let batch = adapt_batch(&taken.batches[b], &schema)?;
                parts.push(take_record_batch(&batch, &UInt32Array::from(rows))?);
            }
            let merged = concat_batches(&schema, &parts)?;
            let mut chunk_entry = ChunkEntry { end, files: vec![], compacted: true };
            if let Some(existing) = manifest.chunks.get(&start) {
                chunk_entry.end = existing.end;
            }
            if merged.num_rows() > 0 {
                let columns: Vec<arrow::compute::SortColumn> = (0..3)
                    .map(|i| arrow::compute::SortColumn { values: merged.column(i).clone(), options: None })
                    .collect();
                let sorted = take_record_batch(&merged, &lexsort_to_indices(&columns, None)?)?;
                let mut set = HashSet::with_capacity(sorted.num_rows());
                keyed_mask(&sorted, |ws, we, k| set.insert(key_hash(ws, we, k)))?;
                let seq = new.next_file_seq;
                new.next_file_seq += 1;
                chunk_entry.files.push(self.write_file(start, seq, &[sorted], written)?);
                new.chunks.insert(start, chunk_entry);
                new.seal_chunk(start);
                key_sets.push((start, Some(set)));
            } else {
                new.chunks.remove(&start);
                key_sets.push((start, None));
            }
        }
        if !written.is_empty() {
            self.fail("flush:files_written")?;
        }
        finish_manifest(&mut new, mapping, &taken.offsets);
        Ok((new, replaced, key_sets))
    }

    /// Writes `batches` (one chunk, already sorted) as `{chunk}/{seq}.parquet`, durably.
    fn write_file(
        &self,
        chunk_start: i64,
        seq: u64,
        batches: &[RecordBatch],
        written: &mut Vec<PathBuf>,
    ) -> Result<FileEntry, StoreError> {
        let mut w = FileWriter::create(&self.dir, chunk_start, seq, batches[0].schema(), &self.options, written)?;
        for b in batches {
            w.write(b)?;
        }
        w.finish()
    }

    /// Merges the files of chunks that have many (`compact_min_files`) or that stopped receiving rows (2 or
    /// more) into files of about `target_file_bytes`. Raw tables only: a results flush already leaves one file
    /// per chunk. Returns the number of chunks compacted.
    pub fn compact(&self) -> Result<usize, StoreError> {
        if self.kind != TableKind::Raw {
            return Ok(0);
        }
        let _m = self.maint.lock();
        self.purge_graveyard(false);
        let manifest = self.state.lock().manifest.clone();
        let newest = manifest.chunks.values().flat_map(|c| c.files.iter().map(|f| f.max_time)).max();
        let Some(newest) = newest else { return Ok(0) };
        let closed_before = newest.saturating_sub(self.options.flush_interval.as_millis() as i64);
        let small = self.options.target_file_bytes.saturating_mul(3) / 4;
        let candidates: Vec<(i64, Vec<u64>)> = manifest
            .chunks
            .iter()
            .filter_map(|(&start, c)| {
                let inputs: Vec<u64> = c.files.iter().filter(|f| f.bytes < small).map(|f| f.seq).collect();
                let due = c.files.len() >= self.options.compact_min_files || (!c.compacted && c.end <= closed_before);
                (inputs.len() >= 2 && due).then_some((start, inputs))
            })
            .collect();
        let mut done = 0;
        for (start, inputs) in candidates {
            self.compact_chunk(start, &inputs)?;
            done += 1;
        }
        Ok(done)
    }

    fn compact_chunk(&self, start: i64, inputs: &[u64]) -> Result<(), StoreError> {
        let manifest = self.state.lock().manifest.clone();
        // The committed columns, not the live mapping: the new manifest keeps the committed columns, and every
        // input file's columns are among them.
        let columns = manifest.column_defs(&self.dir)?;
        let schema = Mapping::from_columns(self.kind, columns, 0).schema();
        let mut new = (*manifest).clone();
        let mut written = Vec::new();
        let result = self.merge_files(start, inputs, &schema, &mut new, &mut written);
        let result = result.and_then(|outputs| {
            self.fail("compact:files_written")?;
            let Some(chunk) = new.chunks.get_mut(&start) else {
                return Err(StoreError::CorruptManifest {
                    path: self.dir.clone(),
                    reason: format!("chunk {start} vanished"),
                });
            };
            chunk.files.retain(|f| !inputs.contains(&f.seq));
            chunk.files.extend(outputs);
            chunk.files.sort_by_key(|f| f.seq);
            chunk.compacted = true;
            new.generation += 1;
            new.write(&self.dir, || self.fail("compact:manifest_written"))
        });
        if let Err(e) = result {
            if !e.is_injected() {
                remove_files(&written);
            }
            return Err(e);
        }
        {
            let mut st = self.state.lock();
            st.files = file_refs(&self.dir, &new);
            st.manifest = Arc::new(new);
            let at = Instant::now() + self.options.delete_grace;
            st.graveyard.extend(inputs.iter().map(|&seq| (at, file_path(&self.dir, start, seq))));
        }
        tracing::info!(table = %self.name, chunk = start, inputs = inputs.len(), outputs = written.len(), "compacted chunk");
        self.fail("compact:committed")?;
        self.purge_graveyard(false);
        Ok(())
    }

    /// Streams a k-way merge by time of the input files into new files of about `target_file_bytes`: one record
    /// batch per input in memory at a time.
    fn merge_files(
        &self,
        start: i64,
        inputs: &[u64],
        schema: &SchemaRef,
        new: &mut Manifest,
        written: &mut Vec<PathBuf>,
    ) -> Result<Vec<FileEntry>, StoreError> {
        struct Input {
            reader: ParquetRecordBatchReader,
            batch: RecordBatch,
            pos: usize,
        }
        let next_batch = |reader: &mut ParquetRecordBatchReader| -> Result<Option<RecordBatch>, StoreError> {
            for batch in reader.by_ref() {
                let batch = batch?;
                if batch.num_rows() > 0 {
                    return Ok(Some(adapt_batch(&batch, schema)?));
                }
            }
            Ok(None)
        };
        let mut sources = Vec::new();
        let mut heap = BinaryHeap::new();
        for &seq in inputs {
            let mut reader = open_reader(&file_path(&self.dir, start, seq), None)?;
            if let Some(batch) = next_batch(&mut reader)? {
                let t = time_values(&batch)?[0];
                heap.push(std::cmp::Reverse((t, sources.len())));
                sources.push(Input { reader, batch, pos: 0 });
            }
        }
        let mut outputs = Vec::new();
        let mut writer: Option<FileWriter> = None;
        let mut picks: Vec<(usize, usize)> = Vec::with_capacity(READ_BATCH_ROWS);
        let mut emit =
            |picks: &mut Vec<(usize, usize)>, sources: &[Input], new: &mut Manifest, written: &mut Vec<PathBuf>| {
                if picks.is_empty() {
                    return Ok::<(), StoreError>(());
                }
                let columns = (0..schema.fields().len())
                    .map(|c| {
                        let arrays: Vec<&dyn Array> = sources.iter().map(|s| s.batch.column(c).as_ref()).collect();
                        interleave(&arrays, picks)
                    })
                    .collect::<Result<Vec<ArrayRef>, _>>()?;
                picks.clear();
                let batch = RecordBatch::try_new(schema.clone(), columns)?;
                if writer.is_none() {
                    let seq = new.next_file_seq;
                    new.next_file_seq += 1;
                    writer = Some(FileWriter::create(&self.dir, start, seq, schema.clone(), &self.options, written)?);
                }
                if let Some(w) = writer.as_mut() {
                    w.write(&batch)?;
                    if w.size() >= self.options.target_file_bytes
                        && let Some(w) = writer.take()
                    {
                        outputs.push(w.finish()?);
                    }
                }
                Ok(())
            };
        while let Some(std::cmp::Reverse((_, i))) = heap.pop() {
            let pos = sources[i].pos;
            picks.push((i, pos));
            sources[i].pos += 1;
            if sources[i].pos == sources[i].batch.num_rows() {
                // The batch is used up: emit what refers to it before replacing it.
                emit(&mut picks, &sources, new, written)?;
                if let Some(batch) = next_batch(&mut sources[i].reader)? {
                    let t = time_values(&batch)?[0];
                    sources[i].batch = batch;
                    sources[i].pos = 0;
                    heap.push(std::cmp::Reverse((t, i)));
                }
            } else {
                let t = time_values(&sources[i].batch)?[sources[i].pos];
                heap.push(std::cmp::Reverse((t, i)));
                if picks.len() >= READ_BATCH_ROWS {
                    emit(&mut picks, &sources, new, written)?;
                }
            }
        }
        emit(&mut picks, &sources, new, written)?;
        if let Some(w) = writer.take() {
            outputs.push(w.finish()?);
        }
        Ok(outputs)
    }

    /// Drops whole chunks that ended before `now_ms - retention` (manifest first, then files). Returns the number
    /// of chunks dropped.
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize, StoreError> {
        let _m = self.maint.lock();
        self.purge_graveyard(false);
        let manifest = self.state.lock().manifest.clone();
        let Some(retention) = manifest.retention_ms else { return Ok(0) };
        let cutoff = now_ms.saturating_sub(retention);
        let expired: Vec<i64> = manifest.chunks.iter().filter(|(_, c)| c.end <= cutoff).map(|(&s, _)| s).collect();
        if expired.is_empty() {
            return Ok(0);
        }
        let mut new = (*manifest).clone();
        for s in &expired {
            new.chunks.remove(s);
        }
        new.generation += 1;
        new.write(&self.dir, || self.fail("retention:manifest_written"))?;
        {
            let mut st = self.state.lock();
            st.files = file_refs(&self.dir, &new);
            st.manifest = Arc::new(new);
            let at = Instant::now() + self.options.delete_grace;
            for s in &expired {
                st.committed_keys.remove(s);
                if let Some(c) = manifest.chunks.get(s) {
                    st.graveyard.extend(c.files.iter().map(|f| (at, file_path(&self.dir, *s, f.seq))));
                }
            }
        }
        tracing::info!(table = %self.name, chunks = expired.len(), cutoff_ms = cutoff, "dropped expired chunks");
        self.fail("retention:committed")?;
        self.purge_graveyard(false);
        Ok(expired.len())
    }

    /// Sets (durably) how long chunks are kept; `None` keeps them forever.
    pub fn set_retention(&self, retention_ms: Option<i64>) -> Result<(), StoreError> {
        validate_retention(retention_ms)?;
        let _m = self.maint.lock();
        let mut new = (*self.state.lock().manifest).clone();
        new.retention_ms = retention_ms;
        new.generation += 1;
        self.commit_settings(new)
    }

    /// Sets (durably) the width of chunks created from now on; existing chunks keep their bounds.
    pub fn set_chunk_width(&self, chunk_width_ms: i64) -> Result<(), StoreError> {
        validate_width(chunk_width_ms)?;
        let _m = self.maint.lock();
        let mut new = (*self.state.lock().manifest).clone();
        new.chunk_width_ms = chunk_width_ms;
        new.generation += 1;
        self.commit_settings(new)
    }

    /// Commits a manifest that changes no files (caller holds `maint`).
    fn commit_settings(&self, new: Manifest) -> Result<(), StoreError> {
        new.write(&self.dir, || self.fail("settings:manifest_written"))?;
        self.state.lock().manifest = Arc::new(new);
        Ok(())
    }

    /// Deletes replaced files whose grace period is over (all of them with `all`).
    fn purge_graveyard(&self, all: bool) {
        let now = Instant::now();
        let due: Vec<PathBuf> = {
            let mut st = self.state.lock();
            let (due, keep): (Vec<_>, Vec<_>) = st.graveyard.drain(..).partition(|(at, _)| all || *at <= now);
            st.graveyard = keep;
            due.into_iter().map(|(_, p)| p).collect()
        };
        for path in due {
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(table = %self.name, path = %path.display(), error = %e, "cannot delete replaced file");
                continue;
            }
            // An emptied chunk directory goes too (fails harmlessly if it still has files).
            if let Some(parent) = path.parent() {
                let _ = fs::remove_dir(parent);
            }
        }
    }

    /// Deletes all replaced files now, grace period or not (tests, shutdown).
    pub fn purge_replaced_files(&self) {
        let _m = self.maint.lock();
        self.purge_graveyard(true);
    }

    /// Held while the table's files change (flush, compaction, retention); the store holds it to drop a table.
    pub(crate) fn maintenance_lock(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.maint.lock()
    }

    /// Rows currently buffered (not yet in files).
    pub fn buffered_rows(&self) -> usize {
        let st = self.state.lock();
        st.buffer.rows + st.flushing.visible.iter().map(|b| b.num_rows()).sum::<usize>()
    }
}

/// New files done: the manifest takes the current columns and the offsets of the flushed rows.
fn finish_manifest(new: &mut Manifest, mapping: &Mapping, offsets: &BTreeMap<u32, u64>) {
    new.columns = column_entries(&mapping.columns);
    for (&p, &o) in offsets {
        let e = new.source_offsets.entry(p).or_insert(o);
        *e = (*e).max(o);
    }
    new.generation += 1;
}

/// Adds a results batch to the buffer: newer versions of a key hide older ones; a row whose key is in a
/// committed file or in a running flush stays hidden until the next flush.
fn add_keyed(st: &mut State, batch: RecordBatch, tombstones: Vec<bool>) -> Result<(), StoreError> {
    let b = st.buffer.batches.len();
    let mut mask = vec![false; batch.num_rows()];
    let mut dirty = std::collections::BTreeSet::new();
    let (ws, we, keys) = key_columns(&batch)?;
    for row in 0..batch.num_rows() {
        let (s, e, k) = (ws[row], we[row], keys.value(row));
        let tombstone = tombstones.get(row).copied().unwrap_or(false);
        let hidden =
            st.committed_keys.get(&chunk_start_of(&st.manifest, s)).is_some_and(|set| set.contains(&key_hash(s, e, k)))
                || (!st.flushing.keys.is_empty() && st.flushing.keys.contains(&(s, e, k.to_string())));
        mask[row] = !tombstone && !hidden;
        if let Some(old) = st.buffer.keys.insert((s, e, k.to_string()), Slot { batch: b, row, tombstone }) {
            if old.batch == b {
                mask[old.row] = false;
            } else {
                st.buffer.masks[old.batch][old.row] = false;
                dirty.insert(old.batch);
            }
        }
    }
    for &d in &dirty {
        let m = BooleanArray::from(st.buffer.masks[d].clone());
        st.buffer.visible[d] = filter_record_batch(&st.buffer.batches[d], &m)?;
    }
    let visible = filter_record_batch(&batch, &BooleanArray::from(mask.clone()))?;
    st.buffer.batches.push(batch);
    st.buffer.tombstones.push(tombstones);
    st.buffer.masks.push(mask);
    st.buffer.visible.push(visible);
    Ok(())
}

fn chunk_start_of(manifest: &Manifest, t: i64) -> i64 {
    manifest.chunk_for(t).0
}

fn key_columns(batch: &RecordBatch) -> Result<(&[i64], &[i64], &StringArray), StoreError> {
    let bad = || {
        StoreError::Arrow(arrow::error::ArrowError::SchemaError(
            "results batch lacks window_start, window_end, _key".to_string(),
        ))
    };
    if batch.num_columns() < 3 {
        return Err(bad());
    }
    let ws = batch.column(0).as_primitive_opt::<TimestampMillisecondType>().ok_or_else(bad)?;
    let we = batch.column(1).as_primitive_opt::<TimestampMillisecondType>().ok_or_else(bad)?;
    let keys = batch.column(2).as_string_opt::<i32>().ok_or_else(bad)?;
    Ok((ws.values().as_ref(), we.values().as_ref(), keys))
}

/// `f(window_start, window_end, key)` for every row, as a filter mask.
fn keyed_mask(batch: &RecordBatch, mut f: impl FnMut(i64, i64, &str) -> bool) -> Result<BooleanArray, StoreError> {
    let (ws, we, keys) = key_columns(batch)?;
    Ok((0..batch.num_rows()).map(|i| Some(f(ws[i], we[i], keys.value(i)))).collect())
}

fn read_key_hashes(path: &Path, set: &mut HashSet<u64>) -> Result<(), StoreError> {
    for batch in open_reader(path, Some(3))? {
        keyed_mask(&batch?, |ws, we, k| set.insert(key_hash(ws, we, k)))?;
    }
    Ok(())
}

/// Reads a file in batches; `first_columns` limits it to the leading columns.
fn open_reader(path: &Path, first_columns: Option<usize>) -> Result<ParquetRecordBatchReader, StoreError> {
    let file = File::open(path).map_err(StoreError::io(path))?;
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(StoreError::parquet(path))?
        .with_batch_size(READ_BATCH_ROWS);
    if let Some(n) = first_columns {
        let mask = ProjectionMask::roots(builder.parquet_schema(), 0..n);
        builder = builder.with_projection(mask);
    }
    builder.build().map_err(StoreError::parquet(path))
}

/// A Parquet file being written; tracks the time range of its rows.
struct FileWriter {
    path: PathBuf,
    seq: u64,
    writer: ArrowWriter<File>,
    rows: u64,
    min_time: i64,
    max_time: i64,
}

impl FileWriter {
    fn create(
        dir: &Path,
        chunk_start: i64,
        seq: u64,
        schema: SchemaRef,
        options: &TableOptions,
        written: &mut Vec<PathBuf>,
    ) -> Result<FileWriter, StoreError> {
        let cdir = chunk_dir(dir, chunk_start);
        if !cdir.is_dir() {
            fs::create_dir_all(&cdir).map_err(StoreError::io(&cdir))?;
            if let Some(parent) = cdir.parent() {
                sync_dir(parent)?;
            }
        }
        let path = file_path(dir, chunk_start, seq);
        let file = File::create(&path).map_err(StoreError::io(&path))?;
        written.push(path.clone());
        let level = ZstdLevel::try_new(options.zstd_level).map_err(StoreError::parquet(&path))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_row_count(Some(options.row_group_rows.max(1)))
            .set_statistics_enabled(EnabledStatistics::Page)
            .build();
        let writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(StoreError::parquet(&path))?;
        Ok(FileWriter { path, seq, writer, rows: 0, min_time: i64::MAX, max_time: i64::MIN })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), StoreError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        for &t in time_values(batch)? {
            self.min_time = self.min_time.min(t);
            self.max_time = self.max_time.max(t);
        }
        self.rows += batch.num_rows() as u64;
        self.writer.write(batch).map_err(StoreError::parquet(&self.path))
    }

    fn size(&self) -> u64 {
        (self.writer.bytes_written() + self.writer.in_progress_size()) as u64
    }

    fn finish(self) -> Result<FileEntry, StoreError> {
        let path = self.path;
        let file = self.writer.into_inner().map_err(StoreError::parquet(&path))?;
        file.sync_all().map_err(StoreError::io(&path))?;
        let bytes = file.metadata().map_err(StoreError::io(&path))?.len();
        if let Some(parent) = path.parent() {
            sync_dir(parent)?;
        }
        Ok(FileEntry { seq: self.seq, rows: self.rows, bytes, min_time: self.min_time, max_time: self.max_time })
    }
}

fn file_refs(dir: &Path, manifest: &Manifest) -> Vec<FileRef> {
    let mut files: Vec<FileRef> = manifest
        .chunks
        .iter()
        .flat_map(|(&start, c)| {
            c.files.iter().map(move |f| FileRef {
                path: file_path(dir, start, f.seq),
                size: f.bytes,
                rows: f.rows,
                chunk_start: start,
                min_time: f.min_time,
                max_time: f.max_time,
            })
        })
        .collect();
    files.sort_by(|a, b| (a.chunk_start, &a.path).cmp(&(b.chunk_start, &b.path)));
    files
}

fn remove_files(paths: &[PathBuf]) {
    for p in paths {
        let _ = fs::remove_file(p);
    }
}

/// Deletes what a crash may have left: the temporary manifest and files (and chunk directories) the manifest
/// does not list.
fn collect_garbage(dir: &Path, manifest: &Manifest) -> Result<(), StoreError> {
    let tmp = dir.join(MANIFEST_TMP);
    if tmp.exists() {
        fs::remove_file(&tmp).map_err(StoreError::io(&tmp))?;
    }
    let chunks = dir.join("chunks");
    let entries = match fs::read_dir(&chunks) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::Io { path: chunks, source: e }),
    };
    let listed: HashSet<PathBuf> = file_refs(dir, manifest).into_iter().map(|f| f.path).collect();
    let mut removed = 0usize;
    for entry in entries {
        let entry = entry.map_err(StoreError::io(&chunks))?;
        let cdir = entry.path();
        if !cdir.is_dir() {
            continue;
        }
        let files = fs::read_dir(&cdir).map_err(StoreError::io(&cdir))?;
        let mut kept = 0usize;
        for file in files {
            let path = file.map_err(StoreError::io(&cdir))?.path();
            if listed.contains(&path) {
                kept += 1;
            } else {
                fs::remove_file(&path).map_err(StoreError::io(&path))?;
                removed += 1;
            }
        }
        if kept == 0 {
            fs::remove_dir(&cdir).map_err(StoreError::io(&cdir))?;
        }
    }
    if removed > 0 {
        tracing::info!(dir = %dir.display(), files = removed, "deleted files not in the manifest (left by a crash)");
        sync_dir(&chunks)?;
    }
    Ok(())
}

/// Merges a batch built against an older mapping into the table's current one: new columns are added, Int64
/// widens to Float64, and values whose column now has another type (or that would pass the column limit) move to
/// `_extra`. Returns the batch, the new mapping and the number of values moved.
fn reconcile(current: &Mapping, batch: RecordBatch) -> Result<(RecordBatch, Mapping, u64), StoreError> {
    let mut mapping = current.clone();
    let mut changed = false;
    let mut moved = Vec::new();
    let schema = batch.schema();
    for (i, field) in schema.fields().iter().enumerate() {
        // A batch column's own type, exactly: `from_data_type` maps declared types, and would turn the Int32 meta
        // columns (`partition`, `schema_id`) into Int64 and so into a false conflict.
        let ty = match field.data_type() {
            DataType::Int32 => ColumnType::Int32,
            dt => ColumnType::from_data_type(dt),
        };
        match mapping.index.get(field.name()).copied() {
            Some(j) => {
                let have = mapping.columns[j].ty;
                if have == ty || (have == ColumnType::Float64 && ty == ColumnType::Int64) {
                } else if have == ColumnType::Int64 && ty == ColumnType::Float64 && j >= mapping.meta_len() {
                    mapping.columns[j].ty = ColumnType::Float64;
                    changed = true;
                } else {
                    moved.push(i);
                }
            }
            None => {
                let limit = if mapping.index.contains_key(EXTRA_COLUMN) { MAX_COLUMNS } else { MAX_COLUMNS - 1 };
                if field.name() == EXTRA_COLUMN || mapping.columns.len() < limit {
                    mapping.index.insert(field.name().clone(), mapping.columns.len());
                    mapping.columns.push(ColumnDef { name: field.name().clone(), ty });
                    changed = true;
                } else {
                    moved.push(i);
                }
            }
        }
    }
    let mut count = 0;
    let batch = if moved.is_empty() {
        batch
    } else {
        let (b, c) = move_to_extra(&batch, &moved)?;
        count = c;
        if !mapping.index.contains_key(EXTRA_COLUMN) {
            mapping.index.insert(EXTRA_COLUMN.to_string(), mapping.columns.len());
            mapping.columns.push(ColumnDef { name: EXTRA_COLUMN.to_string(), ty: ColumnType::Utf8 });
            changed = true;
        }
        b
    };
    if changed || current.version != mapping.version {
        mapping.version = current.version + 1;
    }
    Ok((batch, mapping, count))
}

/// Moves the columns at `moved` into `_extra` as JSON (rare: only when two writers disagree on a column).
fn move_to_extra(batch: &RecordBatch, moved: &[usize]) -> Result<(RecordBatch, u64), StoreError> {
    let schema = batch.schema();
    let extra = batch.column_by_name(EXTRA_COLUMN).and_then(|c| c.as_string_opt::<i32>().cloned());
    let mut count = 0u64;
    let mut texts: Vec<Option<String>> = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let mut object: serde_json::Map<String, serde_json::Value> = match &extra {
            Some(e) if e.is_valid(row) => serde_json::from_str(e.value(row)).unwrap_or_default(),
            _ => serde_json::Map::new(),
        };
        for &i in moved {
            let col = batch.column(i);
            if col.is_valid(row) {
                object.insert(schema.field(i).name().clone(), json_of(col, row));
                count += 1;
            }
        }
        texts.push((!object.is_empty()).then(|| serde_json::Value::Object(object).to_string()));
    }
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (i, f) in schema.fields().iter().enumerate() {
        if !moved.contains(&i) && f.name() != EXTRA_COLUMN {
            fields.push(f.as_ref().clone());
            columns.push(batch.column(i).clone());
        }
    }
    fields.push(arrow::datatypes::Field::new(EXTRA_COLUMN, DataType::Utf8, true));
    columns.push(Arc::new(StringArray::from(texts)) as ArrayRef);
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    let batch = RecordBatch::try_new_with_options(Arc::new(arrow::datatypes::Schema::new(fields)), columns, &options)?;
    Ok((batch, count))
}

fn json_of(col: &ArrayRef, row: usize) -> serde_json::Value {
    use arrow::datatypes::{Float64Type, Int32Type, Int64Type};
    match col.data_type() {
        DataType::Boolean => col.as_boolean().value(row).into(),
        DataType::Int32 => col.as_primitive::<Int32Type>().value(row).into(),
        DataType::Int64 => col.as_primitive::<Int64Type>().value(row).into(),
        DataType::Float64 => serde_json::Number::from_f64(col.as_primitive::<Float64Type>().value(row))
            .map_or(serde_json::Value::Null, Into::into),
        DataType::Timestamp(..) => {
            let ms = col.as_primitive::<TimestampMillisecondType>().value(row);
            chrono::DateTime::from_timestamp_millis(ms)
                .map_or(ms.into(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true).into())
        }
        _ => col.as_string_opt::<i32>().map_or(serde_json::Value::Null, |s| s.value(row).into()),
    }
}
