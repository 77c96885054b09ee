//! The table's files: Parquet readers and writers, the file list of a manifest, and garbage a crash left.

use super::*;

/// `f(window_start, window_end, key)` for every row, as a filter mask.
pub(super) fn keyed_mask(
    batch: &RecordBatch,
    mut f: impl FnMut(i64, i64, &str) -> bool,
) -> Result<BooleanArray, StoreError> {
    let (ws, we, keys) = key_columns(batch)?;
    Ok((0..batch.num_rows()).map(|i| Some(f(ws[i], we[i], keys.value(i)))).collect())
}

pub(super) fn read_key_hashes(path: &Path, set: &mut HashSet<u64>) -> Result<(), StoreError> {
    for batch in open_reader(path, Some(3))? {
        keyed_mask(&batch?, |ws, we, k| set.insert(key_hash(ws, we, k)))?;
    }
    Ok(())
}

/// Reads a file in batches; `first_columns` limits it to the leading columns.
pub(super) fn open_reader(path: &Path, first_columns: Option<usize>) -> Result<ParquetRecordBatchReader, StoreError> {
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
pub(super) struct FileWriter {
    path: PathBuf,
    seq: u64,
    writer: ArrowWriter<File>,
    rows: u64,
    min_time: i64,
    max_time: i64,
}

impl FileWriter {
    pub(super) fn create(
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

    pub(super) fn write(&mut self, batch: &RecordBatch) -> Result<(), StoreError> {
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

    pub(super) fn size(&self) -> u64 {
        (self.writer.bytes_written() + self.writer.in_progress_size()) as u64
    }

    pub(super) fn finish(self) -> Result<FileEntry, StoreError> {
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

pub(super) fn file_refs(dir: &Path, manifest: &Manifest) -> Vec<FileRef> {
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

pub(super) fn remove_files(paths: &[PathBuf]) {
    for p in paths {
        let _ = fs::remove_file(p);
    }
}

/// Deletes what a crash may have left: the temporary manifest and files (and chunk directories) the manifest
/// does not list.
pub(super) fn collect_garbage(dir: &Path, manifest: &Manifest) -> Result<(), StoreError> {
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
