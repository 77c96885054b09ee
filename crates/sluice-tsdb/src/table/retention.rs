//! Retention and settings: whole chunks dropped past the retention, settings committed in the manifest, and
//! replaced files deleted after their grace period.

use super::*;

impl Table {
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
    pub(super) fn commit_settings(&self, new: Manifest) -> Result<(), StoreError> {
        new.write(&self.dir, || self.fail("settings:manifest_written"))?;
        self.state.lock().manifest = Arc::new(new);
        Ok(())
    }

    /// Deletes replaced files whose grace period is over (all of them with `all`).
    pub(super) fn purge_graveyard(&self, all: bool) {
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
}
