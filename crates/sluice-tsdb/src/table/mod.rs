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
//!
//! Here: opening, writing into the buffer, snapshots for queries. Beside it: [`flush`] (buffer -> Parquet),
//! [`compact`] (small files -> large), [`retention`] (dropping old chunks, settings), [`files`] (readers,
//! writers, garbage) and [`evolve`] (batches of an older column mapping).

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

mod compact;
mod evolve;
mod files;
mod flush;
mod retention;

use evolve::reconcile;
use files::{FileWriter, collect_garbage, file_refs, keyed_mask, open_reader, read_key_hashes, remove_files};

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
}

impl Table {
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
