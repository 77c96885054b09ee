//! Durable checkpoints of one job, for exactly-once recovery: a job restores the newest checkpoint that
//! verifies and replays the log from the offsets recorded in it.
//!
//! One file per epoch, `{epoch:020}.ckpt` (zero-padded so names sort like epochs):
//!
//! | bytes | field |
//! |-------|-------|
//! | 8 | magic `SLCKPT01` |
//! | 4 | format version, u32 little-endian ([`FORMAT_VERSION`]) |
//! | 8 | epoch, u64 little-endian (must match the file name) |
//! | 8 | payload length, u64 little-endian (must match the file size) |
//! | n | payload |
//! | 4 | CRC-32C of every byte before it, u32 little-endian |
//!
//! A write goes to `{epoch:020}.ckpt.tmp`, is fsynced, renamed into place and the directory fsynced, so a
//! crash leaves either the whole new checkpoint or none of it. Reads verify every field; a file that fails
//! (torn by a disk that lied about fsync, bit rot, edited by hand) is skipped with a warning and the next
//! older one is used, so keep more than one.

use std::fs::{self, File};
use std::io::{self, BufWriter, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

/// The file magic: the format's name and major version, so any other file is rejected at the first bytes.
pub const MAGIC: &[u8; 8] = b"SLCKPT01";
/// The layout version after the magic; readers skip files of any other version.
pub const FORMAT_VERSION: u32 = 1;

const HEADER_LEN: u64 = 8 + 4 + 8 + 8;
const TRAILER_LEN: u64 = 4;
const SUFFIX: &str = ".ckpt";
const TMP_SUFFIX: &str = ".tmp";
/// Big enough that the header and CRC trailer cost no extra syscalls; large payloads bypass it.
const WRITE_BUFFER: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint keep count must be at least 1, got {0}")]
    InvalidKeep(usize),
    #[error("checkpoint i/o on {path}: {source}")]
    Io { path: String, source: io::Error },
}

impl CheckpointError {
    fn io(path: &Path, source: io::Error) -> Self {
        CheckpointError::Io { path: path.display().to_string(), source }
    }
}

/// The checkpoint directory of one job. Writes, pruning and `clear` are serialized by a lock, so the store
/// can be shared (`Arc`) between the job and the API; reads need no lock (a file pruned under a reader is
/// just skipped).
#[derive(Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
    keep: usize,
    write_lock: Mutex<()>,
}

impl CheckpointStore {
    /// Opens (creating) `dir`, keeping the newest `keep` checkpoints on every write. Leftover `*.tmp` files
    /// (writes a crash interrupted) are removed: they were never complete.
    pub fn open(dir: impl Into<PathBuf>, keep: usize) -> Result<Self, CheckpointError> {
        let dir = dir.into();
        if keep == 0 {
            return Err(CheckpointError::InvalidKeep(keep));
        }
        fs::create_dir_all(&dir).map_err(|e| CheckpointError::io(&dir, e))?;
        for entry in fs::read_dir(&dir).map_err(|e| CheckpointError::io(&dir, e))? {
            let path = entry.map_err(|e| CheckpointError::io(&dir, e))?.path();
            if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(TMP_SUFFIX)) {
                tracing::debug!(path = %path.display(), "removing an incomplete checkpoint write");
                remove_if_exists(&path)?;
            }
        }
        Ok(CheckpointStore { dir, keep, write_lock: Mutex::new(()) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of epoch's checkpoint file (which may not exist).
    pub fn path(&self, epoch: u64) -> PathBuf {
        self.dir.join(format!("{epoch:020}{SUFFIX}"))
    }

    /// Writes epoch's checkpoint atomically and durably, then makes it the newest: files of later epochs (a
    /// history the job abandoned when it restored an older checkpoint, such as corrupt ones `latest` skipped)
    /// are deleted, and of the rest only the newest `keep` stay. The payload is streamed, never copied.
    pub fn write(&self, epoch: u64, payload: &[u8]) -> Result<PathBuf, CheckpointError> {
        let _guard = self.write_lock.lock();
        let path = self.path(epoch);
        let tmp = self.dir.join(format!("{epoch:020}{SUFFIX}{TMP_SUFFIX}"));
        if let Err(e) = write_file(&tmp, epoch, payload) {
            let _ = fs::remove_file(&tmp);
            return Err(CheckpointError::io(&tmp, e));
        }
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(CheckpointError::io(&path, e));
        }
        self.sync_dir()?;
        let epochs = self.list()?;
        let newer: Vec<u64> = epochs.iter().copied().filter(|&e| e > epoch).collect();
        for &e in &newer {
            remove_if_exists(&self.path(e))?;
        }
        if !newer.is_empty() {
            // Durably: an abandoned newer checkpoint coming back after a crash would be restored.
            self.sync_dir()?;
        }
        // Old ones only cost space: failing to delete them does not fail the checkpoint.
        let older: Vec<u64> = epochs.iter().copied().filter(|&e| e < epoch).collect();
        for &e in &older[..older.len().saturating_sub(self.keep - 1)] {
            if let Err(error) = remove_if_exists(&self.path(e)) {
                tracing::warn!(%error, "cannot delete an old checkpoint");
            }
        }
        Ok(path)
    }

    /// The newest checkpoint that verifies, as `(epoch, payload)`; `None` when there is none. Corrupt or
    /// partial files are skipped with a warning naming the file and the reason. I/O errors other than a
    /// file vanishing fail the call instead: falling back to an older checkpoint is for damaged files, not
    /// for a disk that is failing right now.
    pub fn latest(&self) -> Result<Option<(u64, Vec<u8>)>, CheckpointError> {
        for epoch in self.list()?.into_iter().rev() {
            let path = self.path(epoch);
            match read_file(&path, epoch) {
                Ok(Ok(payload)) => return Ok(Some((epoch, payload))),
                Ok(Err(reason)) => {
                    tracing::warn!(path = %path.display(), %reason, "skipping corrupt checkpoint");
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(CheckpointError::io(&path, e)),
            }
        }
        Ok(None)
    }

    /// The epochs of the complete checkpoint files (verified or not), oldest first.
    pub fn list(&self) -> Result<Vec<u64>, CheckpointError> {
        let mut epochs = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| CheckpointError::io(&self.dir, e))? {
            let entry = entry.map_err(|e| CheckpointError::io(&self.dir, e))?;
            if let Some(epoch) = entry.file_name().to_str().and_then(parse_name) {
                epochs.push(epoch);
            }
        }
        epochs.sort_unstable();
        Ok(epochs)
    }

    /// Deletes every checkpoint (and interrupted write), for a replay from scratch.
    pub fn clear(&self) -> Result<(), CheckpointError> {
        let _guard = self.write_lock.lock();
        for entry in fs::read_dir(&self.dir).map_err(|e| CheckpointError::io(&self.dir, e))? {
            let entry = entry.map_err(|e| CheckpointError::io(&self.dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let ours = parse_name(name).is_some() || name.strip_suffix(TMP_SUFFIX).and_then(parse_name).is_some();
            if ours {
                remove_if_exists(&entry.path())?;
            }
        }
        self.sync_dir()
    }

    /// Makes renames and deletions in the directory durable.
    fn sync_dir(&self) -> Result<(), CheckpointError> {
        #[cfg(unix)]
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| CheckpointError::io(&self.dir, e))?;
        Ok(())
    }
}

/// `{epoch:020}.ckpt` -> epoch; anything else (other files, other widths) is not a checkpoint.
fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn remove_if_exists(path: &Path) -> Result<(), CheckpointError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(CheckpointError::io(path, e)),
        _ => Ok(()),
    }
}

fn header(epoch: u64, payload_len: u64) -> [u8; HEADER_LEN as usize] {
    let mut header = [0u8; HEADER_LEN as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..20].copy_from_slice(&epoch.to_le_bytes());
    header[20..28].copy_from_slice(&payload_len.to_le_bytes());
    header
}

fn write_file(path: &Path, epoch: u64, payload: &[u8]) -> io::Result<()> {
    let header = header(epoch, payload.len() as u64);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header), payload);
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, File::create(path)?);
    out.write_all(&header)?;
    out.write_all(payload)?;
    out.write_all(&crc.to_le_bytes())?;
    let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.sync_all()
}

/// Reads and verifies epoch's file: `Err` for I/O errors, `Ok(Err(reason))` for a damaged file.
fn read_file(path: &Path, epoch: u64) -> io::Result<Result<Vec<u8>, String>> {
    let mut file = File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(Err("not a regular file".to_string()));
    }
    let size = meta.len();
    if size < HEADER_LEN + TRAILER_LEN {
        return Ok(Err(format!(
            "truncated: {size} bytes, less than the {} of header and checksum",
            HEADER_LEN + TRAILER_LEN
        )));
    }
    let mut head = [0u8; HEADER_LEN as usize];
    if let Err(reason) = read_exact(&mut file, &mut head)? {
        return Ok(Err(reason));
    }
    if &head[..8] != MAGIC {
        return Ok(Err("bad magic: not a checkpoint file".to_string()));
    }
    let field = |range: std::ops::Range<usize>| head[range].iter().rev().fold(0u64, |v, &b| v << 8 | u64::from(b));
    let version = field(8..12);
    if version != u64::from(FORMAT_VERSION) {
        return Ok(Err(format!("unsupported format version {version}, expected {FORMAT_VERSION}")));
    }
    let header_epoch = field(12..20);
    if header_epoch != epoch {
        return Ok(Err(format!("header epoch {header_epoch} does not match the file name's epoch {epoch}")));
    }
    let len = field(20..28);
    // Checked against the size before allocating, so a damaged length cannot ask for more memory than the file.
    if size - HEADER_LEN - TRAILER_LEN != len {
        return Ok(Err(format!(
            "length mismatch: header says {len} payload bytes, the file holds {}",
            size - HEADER_LEN - TRAILER_LEN
        )));
    }
    let Ok(capacity) = usize::try_from(len) else {
        return Ok(Err(format!("payload of {len} bytes does not fit in memory")));
    };
    let mut payload = Vec::with_capacity(capacity);
    (&mut file).take(len).read_to_end(&mut payload)?;
    let mut trailer = [0u8; TRAILER_LEN as usize];
    if payload.len() != capacity {
        return Ok(Err("truncated while reading".to_string()));
    }
    if let Err(reason) = read_exact(&mut file, &mut trailer)? {
        return Ok(Err(reason));
    }
    let stored = u32::from_le_bytes(trailer);
    let computed = crc32c::crc32c_append(crc32c::crc32c(&head), &payload);
    if stored != computed {
        return Ok(Err(format!("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")));
    }
    Ok(Ok(payload))
}

/// `read_exact`, with a file that shrank while being read reported as damage rather than an I/O error.
fn read_exact(file: &mut File, buf: &mut [u8]) -> io::Result<Result<(), String>> {
    match file.read_exact(buf) {
        Ok(()) => Ok(Ok(())),
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(Err("truncated while reading".to_string())),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(keep: usize) -> (tempfile::TempDir, CheckpointStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path().join("ckpt"), keep).unwrap();
        (dir, store)
    }

    #[test]
    fn round_trips_the_newest() {
        let (_dir, store) = store(3);
        assert_eq!(store.latest().unwrap(), None);
        assert_eq!(store.list().unwrap(), Vec::<u64>::new());
        let path = store.write(1, b"one").unwrap();
        assert_eq!(path.file_name().unwrap(), "00000000000000000001.ckpt");
        store.write(2, b"").unwrap();
        assert_eq!(store.latest().unwrap(), Some((2, Vec::new())));
        store.write(u64::MAX, b"max").unwrap();
        assert_eq!(store.latest().unwrap(), Some((u64::MAX, b"max".to_vec())));
        assert_eq!(store.list().unwrap(), vec![1, 2, u64::MAX]);
    }

    #[test]
    fn file_layout() {
        let (_dir, store) = store(1);
        let bytes = fs::read(store.write(0x0102, b"xyz").unwrap()).unwrap();
        assert_eq!(&bytes[..8], b"SLCKPT01");
        assert_eq!(bytes[8..12], 1u32.to_le_bytes());
        assert_eq!(bytes[12..20], 0x0102u64.to_le_bytes());
        assert_eq!(bytes[20..28], 3u64.to_le_bytes());
        assert_eq!(&bytes[28..31], b"xyz");
        assert_eq!(bytes[31..], crc32c::crc32c(&bytes[..31]).to_le_bytes());
        assert_eq!(bytes.len(), 35);
    }

    #[test]
    fn keeps_the_newest_n() {
        let (_dir, store) = store(3);
        for epoch in 1..=10 {
            store.write(epoch, &epoch.to_le_bytes()).unwrap();
            assert_eq!(store.list().unwrap(), (epoch.saturating_sub(2).max(1)..=epoch).collect::<Vec<_>>());
        }
        assert!(matches!(CheckpointStore::open(store.dir(), 0), Err(CheckpointError::InvalidKeep(0))));
        assert_eq!(
            CheckpointStore::open(store.dir(), 0).unwrap_err().to_string(),
            "checkpoint keep count must be at least 1, got 0"
        );
    }

    #[test]
    fn writing_an_older_epoch_abandons_newer_ones() {
        let (_dir, store) = store(3);
        for epoch in [3, 4, 5] {
            store.write(epoch, b"x").unwrap();
        }
        // Restored from 3 (say 4 and 5 were corrupt), the job checkpoints 4 again.
        store.write(4, b"again").unwrap();
        assert_eq!(store.list().unwrap(), vec![3, 4]);
        assert_eq!(store.latest().unwrap(), Some((4, b"again".to_vec())));
    }

    #[test]
    fn skips_damaged_and_foreign_files() {
        let (_dir, store) = store(5);
        store.write(1, b"good").unwrap();
        store.write(2, b"bad").unwrap();
        let mut bytes = fs::read(store.path(2)).unwrap();
        bytes[8] = 2; // version 2, with a checksum that matches: still skipped
        let crc = crc32c::crc32c(&bytes[..bytes.len() - 4]).to_le_bytes();
        let at = bytes.len() - 4;
        bytes[at..].copy_from_slice(&crc);
        fs::write(store.path(2), &bytes).unwrap();
        // Epoch 1's file under epoch 3's name: the header disagrees.
        fs::copy(store.path(1), store.path(3)).unwrap();
        fs::create_dir(store.path(4)).unwrap();
        for name in ["notes.txt", "123.ckpt", "0000000000000000000x.ckpt", "99999999999999999999.ckpt"] {
            fs::write(store.dir().join(name), b"junk").unwrap();
        }
        assert_eq!(store.list().unwrap(), vec![1, 2, 3, 4]);
        assert_eq!(store.latest().unwrap(), Some((1, b"good".to_vec())));
        assert_eq!(read_file(&store.path(4), 4).unwrap(), Err("not a regular file".into()));
        assert_eq!(read_file(&store.path(2), 2).unwrap(), Err("unsupported format version 2, expected 1".into()));
        assert_eq!(
            read_file(&store.path(3), 3).unwrap(),
            Err("header epoch 1 does not match the file name's epoch 3".into())
        );
    }

    #[test]
    fn clear_removes_only_checkpoints() {
        let (_dir, store) = store(3);
        store.write(1, b"a").unwrap();
        store.write(2, b"b").unwrap();
        fs::write(store.dir().join("00000000000000000003.ckpt.tmp"), b"partial").unwrap();
        fs::write(store.dir().join("keep.me"), b"other").unwrap();
        store.clear().unwrap();
        assert_eq!(store.latest().unwrap(), None);
        let left: Vec<_> = fs::read_dir(store.dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec!["keep.me"]);
    }
}
