//! Flushes: the buffer taken under `state`, encoded to Parquet with only `maint` held, committed in the
//! manifest, swapped back in; on failure the rows go back into the buffer.

use super::*;

impl Table {
    pub(super) fn fail(&self, step: &'static str) -> Result<(), StoreError> {
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
    pub(super) fn flush_locked(&self, _maint: &parking_lot::MutexGuard<'_, ()>) -> Result<usize, StoreError> {
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
    pub(super) fn restore(&self, taken: Buffer) {
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
    pub(super) fn flush_raw(
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
    pub(super) fn flush_keyed(
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
    pub(super) fn write_file(
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
}

/// New files done: the manifest takes the current columns and the offsets of the flushed rows.
pub(super) fn finish_manifest(new: &mut Manifest, mapping: &Mapping, offsets: &BTreeMap<u32, u64>) {
    new.columns = column_entries(&mapping.columns);
    for (&p, &o) in offsets {
        let e = new.source_offsets.entry(p).or_insert(o);
        *e = (*e).max(o);
    }
    new.generation += 1;
}
