//! One segment: a `.log` file of batches plus its sparse index, held in memory and written to a `.index` file
//! when the segment is sealed. The index serves lookups by offset and by event time alike: every entry records
//! a batch's base offset, its file position and the largest event time of all records *before* it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::RwLock;

use crate::error::{LogError, io_err};
use crate::format::{self, BatchHeader, FormatError, HEADER_LEN};
use crate::storage::{Storage, StorageFile};

const INDEX_MAGIC: &[u8; 8] = b"SLIDX001";
const INDEX_ENTRY_LEN: usize = 24;
const INDEX_TRAILER_LEN: usize = 8 + 8 + 8 + 8 + 8 + 8 + 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub offset: u64,
    pub pos: u64,
    pub max_ts_before: i64,
}

/// What readers may see of a segment: only committed (acknowledged) batches are counted here.
#[derive(Debug, Clone)]
pub(crate) struct SegmentState {
    pub index: Vec<IndexEntry>,
    pub len: u64,
    pub next_offset: u64,
    pub max_ts: i64,
    pub first_append_time: Option<i64>,
    pub max_append_time: i64,
    bytes_since_index: u64,
}

pub(crate) struct Segment {
    pub base_offset: u64,
    pub log_path: PathBuf,
    pub index_path: PathBuf,
    pub file: Arc<dyn StorageFile>,
    pub state: RwLock<SegmentState>,
}

/// A batch and where it starts in its segment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScannedBatch {
    pub header: BatchHeader,
    pub pos: u64,
}

pub(crate) fn segment_paths(dir: &Path, base_offset: u64) -> (PathBuf, PathBuf) {
    (dir.join(format!("{base_offset:020}.log")), dir.join(format!("{base_offset:020}.index")))
}

/// Parses `00000000000000001234.log` into 1234.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 {
        return None;
    }
    stem.parse().ok()
}

impl Segment {
    fn with_state(base_offset: u64, dir: &Path, file: Arc<dyn StorageFile>, state: SegmentState) -> Self {
        let (log_path, index_path) = segment_paths(dir, base_offset);
        Segment { base_offset, log_path, index_path, file, state: RwLock::new(state) }
    }

    fn empty_state(base_offset: u64) -> SegmentState {
        SegmentState {
            index: Vec::new(),
            len: 0,
            next_offset: base_offset,
            max_ts: i64::MIN,
            first_append_time: None,
            max_append_time: i64::MIN,
            bytes_since_index: 0,
        }
    }

    /// Creates a new, empty segment file. The caller makes the directory entry durable.
    pub fn create(storage: &dyn Storage, dir: &Path, base_offset: u64) -> Result<Self, LogError> {
        let (log_path, _) = segment_paths(dir, base_offset);
        let file = storage.open(&log_path, true).map_err(io_err(&log_path))?;
        file.set_len(0).map_err(io_err(&log_path))?;
        Ok(Self::with_state(base_offset, dir, file, Self::empty_state(base_offset)))
    }

    /// Opens an existing segment. A sealed segment with a valid index file is opened without reading its data;
    /// otherwise every batch is scanned and checked. With `truncate_tail`, a torn or corrupt tail is cut off
    /// (returned as the number of bytes dropped); without it the segment simply ends before the bad batch.
    pub fn open(
        storage: &dyn Storage,
        dir: &Path,
        base_offset: u64,
        index_interval: u64,
        truncate_tail: bool,
    ) -> Result<(Self, u64), LogError> {
        let (log_path, index_path) = segment_paths(dir, base_offset);
        let file = storage.open(&log_path, false).map_err(io_err(&log_path))?;
        let file_len = file.len().map_err(io_err(&log_path))?;
        if !truncate_tail && let Some(state) = load_index(storage, &index_path, base_offset, file_len) {
            return Ok((Self::with_state(base_offset, dir, file, state), 0));
        }
        let mut state = Self::empty_state(base_offset);
        let mut pos = 0;
        let mut expected = base_offset;
        let mut bad = None;
        while pos < file_len {
            match read_batch(&*file, pos, file_len) {
                Ok((h, _)) if h.base_offset != expected => {
                    bad = Some(format!("batch at {pos} has base offset {}, expected {expected}", h.base_offset));
                    break;
                }
                Ok((h, _)) => {
                    state.push(&h, pos, index_interval);
                    pos += h.total_len();
                    expected = h.next_offset();
                }
                Err(e) => {
                    bad = Some(e.to_string());
                    break;
                }
            }
        }
        let dropped = file_len - pos;
        if let Some(reason) = bad {
            tracing::warn!(path = %log_path.display(), position = pos, dropped_bytes = dropped, %reason,
                "segment ends in a torn or corrupt batch");
            if truncate_tail {
                file.set_len(pos).map_err(io_err(&log_path))?;
                file.sync_data().map_err(io_err(&log_path))?;
            }
        }
        Ok((Self::with_state(base_offset, dir, file, state), dropped))
    }

    pub fn len(&self) -> u64 {
        self.state.read().len
    }

    /// Publishes batches the writer has written (and, under `fsync = "always"`, synced).
    pub fn commit(&self, batches: &[ScannedBatch], index_interval: u64) {
        let mut st = self.state.write();
        for b in batches {
            st.push(&b.header, b.pos, index_interval);
        }
    }

    /// Position to start scanning for `offset`, the base offset of the batch there, and the committed length.
    pub fn seek_offset(&self, offset: u64) -> (u64, u64, u64) {
        let st = self.state.read();
        let i = st.index.partition_point(|e| e.offset <= offset);
        self.seek_result(&st, i)
    }

    /// Position to start scanning for the first record with event time `>= ts`, the base offset of the batch
    /// there, and the committed length.
    pub fn seek_time(&self, ts: i64) -> (u64, u64, u64) {
        let st = self.state.read();
        let i = st.index.partition_point(|e| e.max_ts_before < ts);
        self.seek_result(&st, i)
    }

    fn seek_result(&self, st: &SegmentState, i: usize) -> (u64, u64, u64) {
        match i {
            0 => (0, self.base_offset, st.len),
            i => (st.index[i - 1].pos, st.index[i - 1].offset, st.len),
        }
    }

    /// Reads and CRC-checks the batch at `pos`, which must lie below the committed length and start at offset
    /// `expected_base`. The base offset is not covered by the CRC, so it is checked against where the batch sits.
    pub fn read_batch(&self, pos: u64, expected_base: u64, limit: u64) -> Result<(BatchHeader, Bytes), LogError> {
        let corrupt =
            |reason: String| LogError::Corrupt { path: self.log_path.display().to_string(), position: pos, reason };
        let (h, batch) = read_batch(&*self.file, pos, limit).map_err(|e| match e {
            ReadBatchError::Io(source) => LogError::Io { path: self.log_path.display().to_string(), source },
            other => corrupt(other.to_string()),
        })?;
        if h.base_offset != expected_base {
            return Err(corrupt(format!("batch has base offset {}, expected {expected_base}", h.base_offset)));
        }
        Ok((h, batch))
    }

    /// Writes the index file and makes it durable; called once the segment is full and synced.
    pub fn write_index(&self, storage: &dyn Storage) -> Result<(), LogError> {
        let st = self.state.read();
        let mut buf = Vec::with_capacity(8 + st.index.len() * INDEX_ENTRY_LEN + INDEX_TRAILER_LEN);
        buf.extend_from_slice(INDEX_MAGIC);
        for e in &st.index {
            buf.extend_from_slice(&e.offset.to_le_bytes());
            buf.extend_from_slice(&e.pos.to_le_bytes());
            buf.extend_from_slice(&e.max_ts_before.to_le_bytes());
        }
        buf.extend_from_slice(&st.len.to_le_bytes());
        buf.extend_from_slice(&st.next_offset.to_le_bytes());
        buf.extend_from_slice(&st.max_ts.to_le_bytes());
        buf.extend_from_slice(&st.first_append_time.unwrap_or(i64::MIN).to_le_bytes());
        buf.extend_from_slice(&st.max_append_time.to_le_bytes());
        buf.extend_from_slice(&(st.index.len() as u64).to_le_bytes());
        let crc = crc32c::crc32c(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        drop(st);
        let f = storage.open(&self.index_path, true).map_err(io_err(&self.index_path))?;
        f.set_len(0).map_err(io_err(&self.index_path))?;
        f.write_all_at(&buf, 0).map_err(io_err(&self.index_path))?;
        f.sync_data().map_err(io_err(&self.index_path))
    }
}

impl SegmentState {
    fn push(&mut self, h: &BatchHeader, pos: u64, index_interval: u64) {
        if self.index.is_empty() || self.bytes_since_index >= index_interval {
            self.index.push(IndexEntry { offset: h.base_offset, pos, max_ts_before: self.max_ts });
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += h.total_len();
        self.len = pos + h.total_len();
        self.next_offset = h.next_offset();
        self.max_ts = self.max_ts.max(h.max_timestamp);
        self.first_append_time.get_or_insert(h.append_time);
        self.max_append_time = self.max_append_time.max(h.append_time);
    }
}

#[derive(Debug, thiserror::Error)]
enum ReadBatchError {
    #[error("batch header runs past the end of the segment")]
    TruncatedHeader,
    #[error("batch of {0} bytes runs past the end of the segment")]
    TruncatedBody(u64),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Io(std::io::Error),
}

/// Reads the batch at `pos`. Its length field is only trusted up to `limit` (the end of the readable data), so a
/// corrupt length never makes us allocate or read past real data, whatever the configured batch limit.
fn read_batch(file: &dyn StorageFile, pos: u64, limit: u64) -> Result<(BatchHeader, Bytes), ReadBatchError> {
    if pos + HEADER_LEN as u64 > limit {
        return Err(ReadBatchError::TruncatedHeader);
    }
    let mut hdr = [0u8; HEADER_LEN];
    file.read_exact_at(&mut hdr, pos).map_err(ReadBatchError::Io)?;
    let h = format::parse_header(&hdr)?;
    if pos + h.total_len() > limit {
        return Err(ReadBatchError::TruncatedBody(h.total_len()));
    }
    let mut buf = BytesMut::zeroed(h.total_len() as usize);
    buf[..HEADER_LEN].copy_from_slice(&hdr);
    file.read_exact_at(&mut buf[HEADER_LEN..], pos + HEADER_LEN as u64).map_err(ReadBatchError::Io)?;
    format::verify_crc(&h, &buf)?;
    Ok((h, buf.freeze()))
}

/// Loads a sealed segment's index file; `None` when it is missing, damaged or does not match the data file.
fn load_index(storage: &dyn Storage, path: &Path, base_offset: u64, file_len: u64) -> Option<SegmentState> {
    let f = storage.open(path, false).ok()?;
    let len = f.len().ok()? as usize;
    if len < 8 + INDEX_TRAILER_LEN || !(len - 8 - INDEX_TRAILER_LEN).is_multiple_of(INDEX_ENTRY_LEN) {
        return None;
    }
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, 0).ok()?;
    let (body, crc) = buf.split_at(len - 4);
    if &body[..8] != INDEX_MAGIC || crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let u = |i: usize| u64::from_le_bytes(body[i..i + 8].try_into().expect("8 bytes"));
    let t = body.len() - (INDEX_TRAILER_LEN - 4);
    let (seg_len, next_offset, max_ts, first_append, max_append, count) =
        (u(t), u(t + 8), u(t + 16) as i64, u(t + 24) as i64, u(t + 32) as i64, u(t + 40));
    if seg_len != file_len || count as usize != (t - 8) / INDEX_ENTRY_LEN || next_offset < base_offset {
        return None;
    }
    let index = (0..count as usize)
        .map(|i| {
            let o = 8 + i * INDEX_ENTRY_LEN;
            IndexEntry { offset: u(o), pos: u(o + 8), max_ts_before: u(o + 16) as i64 }
        })
        .collect();
    Some(SegmentState {
        index,
        len: seg_len,
        next_offset,
        max_ts,
        first_append_time: (first_append != i64::MIN).then_some(first_append),
        max_append_time: max_append,
        bytes_since_index: 0,
    })
}
