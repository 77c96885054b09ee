//! Compaction: chunks with many small files (or that stopped receiving rows) merged into few large ones.

use super::*;

impl Table {
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

    pub(super) fn compact_chunk(&self, start: i64, inputs: &[u64]) -> Result<(), StoreError> {
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
    pub(super) fn merge_files(
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
}
