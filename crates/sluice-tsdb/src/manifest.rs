//! The table manifest: the one file that says which Parquet files make up a table, its columns, and the source
//! offsets those files hold. Replacing it (tmp file, fsync, rename, fsync of the directory) is the commit point of
//! every flush, compaction and retention pass; anything on disk it does not list is garbage from a crash.
//!
//! On disk: `{"checksum":<crc32c of body>,"manifest":<body>}`, the checksum taken over the exact body bytes so a
//! torn or edited file is reported as corrupt instead of being half-trusted.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sluice_sink::partitioning::PartitionPolicy;

use crate::error::StoreError;
use crate::rows::{ColumnDef, ColumnType};

/// Format version written by this code.
pub const MANIFEST_VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "manifest.json";
pub(crate) const MANIFEST_TMP: &str = "manifest.json.tmp";

/// Raw tables hold topic records (append only, unique by partition and offset); results tables hold job results
/// (upserted by `(window_start, window_end, _key)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableKind {
    Raw,
    Results,
}

impl TableKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TableKind::Raw => "raw",
            TableKind::Results => "results",
        }
    }

    /// `event_time` or `window_start`.
    pub fn time_column(self) -> &'static str {
        match self {
            TableKind::Raw => "event_time",
            TableKind::Results => "window_start",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ColumnEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
}

/// One committed Parquet file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileEntry {
    pub seq: u64,
    pub rows: u64,
    pub bytes: u64,
    pub min_time: i64,
    pub max_time: i64,
}

/// One chunk: a time range `[start, end)` and its files. Chunks never overlap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChunkEntry {
    pub end: i64,
    pub files: Vec<FileEntry>,
    /// Set by compaction, cleared when a flush adds a file: a compacted chunk is not compacted again for age.
    #[serde(default)]
    pub compacted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub version: u32,
    /// Incremented on every commit.
    pub generation: u64,
    pub kind: TableKind,
    pub time_column: String,
    /// Widest a chunk may be (`sluice_sink::partitioning`).
    pub chunk_width_ms: i64,
    /// Rows after which a chunk is sealed; none: chunks keep their full width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_rows: Option<u64>,
    pub retention_ms: Option<i64>,
    pub columns: Vec<ColumnEntry>,
    /// By chunk start (ms since the epoch).
    pub chunks: BTreeMap<i64, ChunkEntry>,
    /// The source topic's next offset per partition, after the rows the files hold.
    pub source_offsets: BTreeMap<u32, u64>,
    pub conflicts: u64,
    pub next_file_seq: u64,
}

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    checksum: u32,
    manifest: &'a serde_json::value::RawValue,
}

#[derive(Deserialize)]
struct EnvelopeIn<'a> {
    checksum: u32,
    #[serde(borrow)]
    manifest: &'a serde_json::value::RawValue,
}

impl Manifest {
    pub fn new(
        kind: TableKind,
        chunk_width_ms: i64,
        chunk_rows: Option<u64>,
        retention_ms: Option<i64>,
        columns: &[ColumnDef],
    ) -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            generation: 0,
            kind,
            time_column: kind.time_column().to_string(),
            chunk_width_ms,
            chunk_rows,
            retention_ms,
            columns: column_entries(columns),
            chunks: BTreeMap::new(),
            source_offsets: BTreeMap::new(),
            conflicts: 0,
            next_file_seq: 1,
        }
    }

    /// How chunks are placed and sealed.
    pub fn partition_policy(&self) -> PartitionPolicy {
        PartitionPolicy::for_retention(self.chunk_width_ms, self.chunk_rows.unwrap_or(u64::MAX), self.retention_ms)
    }

    /// The chunk `[start, end)` holding time `t` (an existing one, or where a new one would go).
    pub fn chunk_for(&self, t: i64) -> (i64, i64) {
        self.partition_policy().locate(&self.chunks, |c| c.end, t)
    }

    /// Seals the chunk starting at `start` if it reached `chunk_rows` (its end moves down to its newest row).
    pub fn seal_chunk(&mut self, start: i64) {
        let policy = self.partition_policy();
        if let Some(c) = self.chunks.get_mut(&start)
            && let (Some(min), Some(max)) =
                (c.files.iter().map(|f| f.min_time).min(), c.files.iter().map(|f| f.max_time).max())
        {
            let rows = c.files.iter().map(|f| f.rows).sum();
            c.end = policy.sealed_end(start, c.end, rows, min, max);
        }
    }

    /// The columns with parsed types.
    pub fn column_defs(&self, path: &Path) -> Result<Vec<ColumnDef>, StoreError> {
        self.columns
            .iter()
            .map(|c| {
                ColumnType::parse(&c.ty)
                    .map(|ty| ColumnDef { name: c.name.clone(), ty })
                    .ok_or_else(|| corrupt(path, format!("unknown column type {:?} of column {:?}", c.ty, c.name)))
            })
            .collect()
    }

    /// Reads and validates `{dir}/manifest.json`; `Ok(None)` if there is none.
    pub fn read(dir: &Path) -> Result<Option<Manifest>, StoreError> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::Io { path, source: e }),
        };
        let envelope: EnvelopeIn<'_> =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(&path, format!("not a manifest: {e}")))?;
        let body = envelope.manifest.get();
        let actual = crc32c::crc32c(body.as_bytes());
        if actual != envelope.checksum {
            return Err(corrupt(&path, format!("checksum mismatch (stored {}, computed {actual})", envelope.checksum)));
        }
        let manifest: Manifest =
            serde_json::from_str(body).map_err(|e| corrupt(&path, format!("invalid manifest body: {e}")))?;
        manifest.validate(&path)?;
        Ok(Some(manifest))
    }

    fn validate(&self, path: &Path) -> Result<(), StoreError> {
        if self.version != MANIFEST_VERSION {
            return Err(corrupt(
                path,
                format!("unsupported version {} (this build reads {MANIFEST_VERSION})", self.version),
            ));
        }
        if self.chunk_width_ms <= 0 {
            return Err(corrupt(path, format!("chunk width {} is not positive", self.chunk_width_ms)));
        }
        let mut prev_end = i64::MIN;
        for (&start, chunk) in &self.chunks {
            if chunk.end <= start || start < prev_end {
                return Err(corrupt(
                    path,
                    format!("chunk {start}..{} is empty or overlaps the previous one", chunk.end),
                ));
            }
            prev_end = chunk.end;
            for f in &chunk.files {
                if f.seq >= self.next_file_seq {
                    return Err(corrupt(
                        path,
                        format!("file {} is not below next_file_seq {}", f.seq, self.next_file_seq),
                    ));
                }
            }
        }
        self.column_defs(path).map(|_| ())
    }

    /// Writes the manifest atomically into `dir`. `failpoint` is called after the temporary file is durable and
    /// before it replaces the manifest.
    pub fn write(&self, dir: &Path, failpoint: impl FnOnce() -> Result<(), StoreError>) -> Result<(), StoreError> {
        let body = serde_json::to_string(self).map_err(|e| corrupt(dir, format!("cannot serialize: {e}")))?;
        let raw = serde_json::value::RawValue::from_string(body)
            .map_err(|e| corrupt(dir, format!("cannot serialize: {e}")))?;
        let checksum = crc32c::crc32c(raw.get().as_bytes());
        let text = serde_json::to_vec(&EnvelopeOut { checksum, manifest: &raw })
            .map_err(|e| corrupt(dir, format!("cannot serialize: {e}")))?;
        let tmp = dir.join(MANIFEST_TMP);
        let mut file = File::create(&tmp).map_err(StoreError::io(&tmp))?;
        file.write_all(&text).map_err(StoreError::io(&tmp))?;
        file.sync_all().map_err(StoreError::io(&tmp))?;
        drop(file);
        failpoint()?;
        let path = dir.join(MANIFEST_FILE);
        fs::rename(&tmp, &path).map_err(StoreError::io(&path))?;
        sync_dir(dir)
    }
}

pub(crate) fn column_entries(columns: &[ColumnDef]) -> Vec<ColumnEntry> {
    columns.iter().map(|c| ColumnEntry { name: c.name.clone(), ty: c.ty.as_str().to_string() }).collect()
}

fn corrupt(path: &Path, reason: String) -> StoreError {
    StoreError::CorruptManifest { path: path.to_path_buf(), reason }
}

/// Makes a directory's entries (new, renamed or removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(StoreError::io(dir))
}

/// `{dir}/chunks/{chunk_start}`.
pub(crate) fn chunk_dir(dir: &Path, chunk_start: i64) -> PathBuf {
    dir.join("chunks").join(chunk_start.to_string())
}

/// `{dir}/chunks/{chunk_start}/{seq:016}.parquet`.
pub(crate) fn file_path(dir: &Path, chunk_start: i64, seq: u64) -> PathBuf {
    chunk_dir(dir, chunk_start).join(format!("{seq:016}.parquet"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::Mapping;

    fn sample() -> Manifest {
        let mut m =
            Manifest::new(TableKind::Raw, 3_600_000, None, Some(86_400_000), &Mapping::new(TableKind::Raw).columns);
        m.chunks.insert(
            0,
            ChunkEntry {
                end: 3_600_000,
                files: vec![FileEntry { seq: 1, rows: 10, bytes: 100, min_time: 5, max_time: 50 }],
                compacted: false,
            },
        );
        m.next_file_seq = 2;
        m.source_offsets.insert(0, 10);
        m
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let m = sample();
        m.write(dir.path(), || Ok(())).unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap(), Some(m));
        assert!(!dir.path().join(MANIFEST_TMP).exists());
    }

    #[test]
    fn missing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap(), None);
    }

    #[test]
    fn corrupt_or_truncated_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        sample().write(dir.path(), || Ok(())).unwrap();
        let path = dir.path().join(MANIFEST_FILE);
        let good = fs::read(&path).unwrap();
        for len in [0, 1, good.len() / 2, good.len() - 1] {
            fs::write(&path, &good[..len]).unwrap();
            let err = Manifest::read(dir.path()).unwrap_err();
            assert!(matches!(err, StoreError::CorruptManifest { .. }), "{err}");
            assert_eq!(err.code(), "data_corrupt");
        }
        // A flipped digit inside the body: still valid JSON, caught by the checksum.
        let text = String::from_utf8(good.clone()).unwrap().replace("\"rows\":10", "\"rows\":11");
        fs::write(&path, text).unwrap();
        let err = Manifest::read(dir.path()).unwrap_err();
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
        fs::write(&path, b"\xff\xfe garbage").unwrap();
        assert!(matches!(Manifest::read(dir.path()), Err(StoreError::CorruptManifest { .. })));
    }

    #[test]
    fn failpoint_before_rename_keeps_the_old_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let old = sample();
        old.write(dir.path(), || Ok(())).unwrap();
        let mut new = old.clone();
        new.generation += 1;
        let err = new
            .write(dir.path(), || Err(StoreError::Injected { step: "test", source: std::io::Error::other("x") }))
            .unwrap_err();
        assert!(err.is_injected());
        assert_eq!(Manifest::read(dir.path()).unwrap(), Some(old));
    }
}
